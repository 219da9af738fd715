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
    // 5: every session filter is a column, read back from the JSON of the sessions already
    // stored; the indexes serve pages in the index's order, `started_at DESC, id DESC`, alone or
    // after one equality filter (SQLite walks an index backwards for DESC).
    "ALTER TABLE sessions ADD COLUMN target TEXT;
    ALTER TABLE sessions ADD COLUMN task TEXT;
    ALTER TABLE sessions ADD COLUMN protocol TEXT;
    ALTER TABLE sessions ADD COLUMN end_cause TEXT;
    ALTER TABLE sessions ADD COLUMN break_glass INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE sessions ADD COLUMN vendor TEXT;
    UPDATE sessions SET
        target = json_extract(data, '$.target'),
        task = json_extract(data, '$.task'),
        protocol = json_extract(data, '$.protocol'),
        end_cause = json_extract(data, '$.end_cause'),
        break_glass = ifnull(json_extract(data, '$.kind') = 'break-glass', 0),
        vendor = json_extract(data, '$.vendor');
    CREATE INDEX sessions_started ON sessions(started_at, id);
    CREATE INDEX sessions_user ON sessions(user, started_at, id);
    CREATE INDEX sessions_target ON sessions(target, started_at, id);
    CREATE INDEX sessions_target_end ON sessions(target, end_cause, started_at, id);
    CREATE INDEX sessions_end_cause ON sessions(end_cause, started_at, id);
    CREATE INDEX sessions_protocol ON sessions(protocol, started_at, id);
    CREATE INDEX sessions_ticket ON sessions(ticket, started_at, id);
    CREATE INDEX sessions_task ON sessions(task, started_at, id);
    CREATE INDEX sessions_vendor ON sessions(vendor, started_at, id);
    CREATE INDEX sessions_break_glass ON sessions(started_at, id) WHERE break_glass = 1;",
    // 6: the ticket list, newest updated first, alone or by assignee or state
    "ALTER TABLE tickets ADD COLUMN updated_at INTEGER NOT NULL DEFAULT 0;
    UPDATE tickets SET updated_at = ifnull(json_extract(data, '$.updated_at'), 0);
    CREATE INDEX tickets_updated ON tickets(updated_at, id);
    CREATE INDEX tickets_assignee ON tickets(assignee, updated_at, id);
    CREATE INDEX tickets_state ON tickets(state, updated_at, id);",
    // 7: people's ticket-system identities from the provider's claims, one person each
    "CREATE TABLE person_ids (
        external_id TEXT PRIMARY KEY,
        name TEXT NOT NULL
    );
    CREATE INDEX person_ids_name ON person_ids(name);",
    // 8: what a sign-in holds between two requests (in flight, CLI codes, links)
    "CREATE TABLE held (
        kind TEXT NOT NULL,
        key TEXT NOT NULL,
        value TEXT NOT NULL,
        expires_at INTEGER NOT NULL,
        PRIMARY KEY (kind, key)
    );
    CREATE INDEX held_expires ON held(expires_at);",
];
