//! The SQLite schema, as numbered migrations.

/// Numbered schema migrations; each runs once, in order, inside a transaction.
pub(super) const MIGRATIONS: &[&str] = &[
    // 1: initial schema
    "CREATE TABLE tickets (
        id TEXT PRIMARY KEY,
        state TEXT NOT NULL,
        assignee TEXT,
        data TEXT NOT NULL
    );
    CREATE TABLE requests (
        id TEXT PRIMARY KEY,
        requester TEXT NOT NULL,
        state TEXT NOT NULL,
        ticket TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        data TEXT NOT NULL
    );
    CREATE INDEX requests_state ON requests(state);
    CREATE INDEX requests_ticket ON requests(ticket);
    CREATE TABLE grants (
        id TEXT PRIMARY KEY,
        request TEXT NOT NULL,
        requester TEXT NOT NULL,
        token_hash TEXT NOT NULL UNIQUE,
        ticket TEXT NOT NULL,
        state TEXT NOT NULL,
        expires_at INTEGER NOT NULL,
        data TEXT NOT NULL
    );
    CREATE INDEX grants_state ON grants(state);
    CREATE INDEX grants_ticket ON grants(ticket);
    CREATE TABLE webhook_deliveries (
        key TEXT PRIMARY KEY,
        received_at INTEGER NOT NULL
    );
    CREATE TABLE audit (
        seq INTEGER PRIMARY KEY,
        ts TEXT NOT NULL,
        event TEXT NOT NULL,
        hash TEXT NOT NULL,
        request TEXT,
        grant_id TEXT,
        session TEXT,
        record TEXT NOT NULL
    );
    CREATE INDEX audit_request ON audit(request);
    CREATE INDEX audit_grant ON audit(grant_id);
    CREATE TABLE audit_head (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        seq INTEGER NOT NULL,
        hash TEXT NOT NULL
    );",
    // 2: gateway sessions
    "CREATE TABLE sessions (
        id TEXT PRIMARY KEY,
        user TEXT NOT NULL,
        grant_id TEXT NOT NULL,
        ticket TEXT NOT NULL,
        started_at INTEGER NOT NULL,
        ended_at INTEGER,
        data TEXT NOT NULL
    );
    CREATE INDEX sessions_grant ON sessions(grant_id);
    CREATE INDEX sessions_live ON sessions(ended_at);",
    // 3: break-glass reviews
    "CREATE TABLE reviews (
        id TEXT PRIMARY KEY,
        user TEXT NOT NULL,
        open INTEGER NOT NULL,
        created_at INTEGER NOT NULL,
        data TEXT NOT NULL
    );
    CREATE INDEX reviews_open ON reviews(open, user);",
    // 4: people from the identity provider and their sign-ins
    "CREATE TABLE people (
        name TEXT PRIMARY KEY,
        data TEXT NOT NULL
    );
    CREATE TABLE sign_ins (
        secret_sha256 TEXT PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        user TEXT NOT NULL,
        expires_at INTEGER NOT NULL,
        data TEXT NOT NULL
    );
    CREATE INDEX sign_ins_user ON sign_ins(user);",
];
