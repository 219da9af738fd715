//! Several gateway nodes on one real PostgreSQL (being written).
