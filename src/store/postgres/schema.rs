//! The PostgreSQL schema, as numbered migrations. Each runs once, in order, in a transaction
//! that holds [`MIGRATION_LOCK`], so nodes starting at once apply each exactly once.

/// The advisory lock key migrations hold (any constant the database's other users do not use).
pub(super) const MIGRATION_LOCK: i64 = 0x6a69_7467_6174_6501;

pub(super) const MIGRATIONS: &[&str] = &[
    // 1: the schema of SQLite's migrations 1 to 7, with the node in sessions
    "CREATE TABLE tickets (
        id TEXT PRIMARY KEY,
        state TEXT NOT NULL,
        assignee TEXT,
        updated_at BIGINT NOT NULL,
        data TEXT NOT NULL
    );
    CREATE INDEX tickets_updated ON tickets(updated_at, id);
    CREATE INDEX tickets_assignee ON tickets(assignee, updated_at, id);
    CREATE INDEX tickets_state ON tickets(state, updated_at, id);
    CREATE TABLE requests (
        id TEXT PRIMARY KEY,
        requester TEXT NOT NULL,
        state TEXT NOT NULL,
        ticket TEXT NOT NULL,
        created_at BIGINT NOT NULL,
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
        expires_at BIGINT NOT NULL,
        data TEXT NOT NULL
    );
    CREATE INDEX grants_state ON grants(state);
    CREATE INDEX grants_ticket ON grants(ticket);
    CREATE TABLE sessions (
        id TEXT PRIMARY KEY,
        user_name TEXT NOT NULL,
        grant_id TEXT NOT NULL,
        ticket TEXT NOT NULL,
        started_at BIGINT NOT NULL,
        ended_at BIGINT,
        target TEXT,
        task TEXT,
        protocol TEXT,
        end_cause TEXT,
        break_glass BOOLEAN NOT NULL DEFAULT FALSE,
        vendor TEXT,
        node TEXT,
        data TEXT NOT NULL
    );
    CREATE INDEX sessions_grant ON sessions(grant_id);
    CREATE INDEX sessions_live ON sessions(ended_at);
    CREATE INDEX sessions_started ON sessions(started_at, id);
    CREATE INDEX sessions_user ON sessions(user_name, started_at, id);
    CREATE INDEX sessions_target ON sessions(target, started_at, id);
    CREATE INDEX sessions_end_cause ON sessions(end_cause, started_at, id);
    CREATE INDEX sessions_ticket ON sessions(ticket, started_at, id);
    CREATE INDEX sessions_node_live ON sessions(node) WHERE ended_at IS NULL;
    CREATE TABLE reviews (
        id TEXT PRIMARY KEY,
        user_name TEXT NOT NULL,
        open BOOLEAN NOT NULL,
        created_at BIGINT NOT NULL,
        data TEXT NOT NULL
    );
    CREATE INDEX reviews_open ON reviews(open, user_name);
    CREATE TABLE webhook_deliveries (
        key TEXT PRIMARY KEY,
        received_at BIGINT NOT NULL
    );
    CREATE TABLE audit (
        seq BIGINT PRIMARY KEY,
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
    CREATE INDEX audit_event ON audit(event, seq);
    CREATE TABLE audit_head (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        seq BIGINT NOT NULL,
        hash TEXT NOT NULL
    );
    INSERT INTO audit_head (id, seq, hash)
        VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000');
    CREATE TABLE people (
        name TEXT PRIMARY KEY,
        data TEXT NOT NULL
    );
    CREATE TABLE sign_ins (
        secret_sha256 TEXT PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        user_name TEXT NOT NULL,
        expires_at BIGINT NOT NULL,
        data TEXT NOT NULL
    );
    CREATE INDEX sign_ins_user ON sign_ins(user_name);
    CREATE TABLE person_ids (
        external_id TEXT PRIMARY KEY,
        name TEXT NOT NULL
    );
    CREATE INDEX person_ids_name ON person_ids(name);
    CREATE TABLE nodes (
        name TEXT PRIMARY KEY,
        started_at BIGINT NOT NULL,
        last_heartbeat BIGINT NOT NULL,
        live_sessions BIGINT NOT NULL DEFAULT 0
    );",
    // 2: what a sign-in holds between two requests (in flight, CLI codes, links), so that any
    // node can finish what another began
    "CREATE TABLE held (
        kind TEXT NOT NULL,
        key TEXT NOT NULL,
        value TEXT NOT NULL,
        expires_at BIGINT NOT NULL,
        PRIMARY KEY (kind, key)
    );
    CREATE INDEX held_expires ON held(expires_at);",
    // 3: which process holds a node's name (two nodes must not share one)
    "ALTER TABLE nodes ADD COLUMN instance TEXT NOT NULL DEFAULT '';",
];
