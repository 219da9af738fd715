//! The PROXY protocol on the SSH and HTTPS listeners, behind a real HAProxy (being written).
