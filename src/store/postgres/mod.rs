//! The PostgreSQL store, for several gateway nodes sharing one database. Records are kept as
//! JSON next to the columns queries filter on, as in SQLite; every query is a constant string
//! with `$n` parameters (optional filters are `($n IS NULL OR column = $n)`), never SQL built
//! from values. Connections come from a pool; TLS to the database is used when the server
//! offers it (`sslmode=prefer`, the default) or demanded with `sslmode=require` in the URL.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio_postgres::types::ToSql;

use super::{
    AuditEntry, AuditFilter, Grant, GrantFilter, Person, Request, RequestFilter, Review,
    SessionFilter, SessionRecord, SignIn, Store, StoreError, Ticket, TicketFilter, redact_url,
};
use crate::types::{GrantId, RequestId, SessionId, TicketRef, UnixTime, UserName};

mod pgpass;
mod schema;

use schema::{MIGRATION_LOCK, MIGRATIONS};

/// The notification channel nodes tell each other of events on (`pg_notify(CHANNEL, ...)`).
pub const CHANNEL: &str = "jitgate_events";

/// Connections a node keeps to the database.
const POOL_SIZE: usize = 16;
/// How long a query waits for a connection, and a connection attempt for the server.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// PostgreSQL through a pool of connections.
#[derive(Clone)]
pub struct PgStore {
    pool: Pool,
    config: tokio_postgres::Config,
    tls: tokio_postgres_rustls::MakeRustlsConnect,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore").finish_non_exhaustive()
    }
}

/// A database error with the server's own message when there is one.
fn db(e: tokio_postgres::Error) -> StoreError {
    if let Some(d) = e.as_db_error() {
        return StoreError::Db(format!("{}: {}", d.code().code(), d.message()));
    }
    if e.is_closed() || e.to_string().contains("connect") {
        return StoreError::Unreachable(e.to_string());
    }
    StoreError::Db(e.to_string())
}

fn pool_err(e: deadpool_postgres::PoolError) -> StoreError {
    match e {
        deadpool_postgres::PoolError::Backend(e) => match db(e) {
            StoreError::Db(m) if m.contains("password") || m.contains("28P01") => StoreError::Db(m),
            StoreError::Db(m) => StoreError::Unreachable(m),
            other => other,
        },
        other => StoreError::Unreachable(other.to_string()),
    }
}

fn to_json<T: Serialize>(v: &T) -> Result<String, StoreError> {
    serde_json::to_string(v).map_err(|e| StoreError::Db(e.to_string()))
}

fn from_json<T: DeserializeOwned>(s: &str) -> Result<T, StoreError> {
    serde_json::from_str(s).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn limit(l: Option<u32>) -> i64 {
    i64::from(l.unwrap_or(1000).min(10_000))
}

/// The TLS the store offers the server: the PEM roots in `ca`, else the system's.
fn tls(ca: Option<&Path>) -> Result<tokio_postgres_rustls::MakeRustlsConnect, String> {
    let mut roots = rustls::RootCertStore::empty();
    match ca {
        Some(p) => {
            let pem = std::fs::read(p).map_err(|e| format!("store.ca {}: {e}", p.display()))?;
            for c in rustls_pemfile::certs(&mut pem.as_slice()) {
                let c = c.map_err(|e| format!("store.ca {}: {e}", p.display()))?;
                roots
                    .add(c)
                    .map_err(|e| format!("store.ca {}: {e}", p.display()))?;
            }
        }
        None => {
            for c in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(c);
            }
        }
    }
    let cfg = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(cfg))
}

impl PgStore {
    /// A pool for `url` (`postgres://USER@HOST:PORT/DB`). The password is the URL's, else
    /// `password`, else the matching line of `PGPASSFILE` (default `~/.pgpass`). Nothing is
    /// contacted until the first query; [`PgStore::migrate`] is the first.
    pub fn connect(
        url: &str,
        password: Option<&crate::types::Secret>,
        ca: Option<&Path>,
    ) -> Result<Self, StoreError> {
        let open = |reason: String| StoreError::Open {
            path: redact_url(url),
            reason,
        };
        let mut config = tokio_postgres::Config::from_str(url).map_err(|e| open(e.to_string()))?;
        if config.get_password().is_none() {
            if let Some(p) = password {
                config.password(p.expose());
            } else if let Some(p) = pgpass::lookup(&config) {
                config.password(p);
            }
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        config.application_name("jitgate");
        let tls = tls(ca).map_err(open)?;
        let manager = Manager::from_config(
            config.clone(),
            tls.clone(),
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .wait_timeout(Some(CONNECT_TIMEOUT))
            .create_timeout(Some(CONNECT_TIMEOUT))
            .recycle_timeout(Some(CONNECT_TIMEOUT))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()
            .map_err(|e| open(e.to_string()))?;
        Ok(Self { pool, config, tls })
    }

    /// The pool `cfg` names: `store.url`, `store.password`, `store.ca`.
    pub fn for_config(cfg: &crate::config::Config) -> Result<Self, StoreError> {
        let password = cfg.store_password().map_err(|reason| StoreError::Open {
            path: redact_url(&cfg.store.url),
            reason,
        })?;
        Self::connect(&cfg.store.url, password.as_ref(), cfg.store.ca.as_deref())
    }

    /// A connection of its own, outside the pool, that listens on [`CHANNEL`]: the client
    /// (keep it; dropping it closes the connection) and the notifications as they come. The
    /// receiver ends when the connection is gone.
    pub async fn listen(
        &self,
    ) -> Result<
        (
            tokio_postgres::Client,
            tokio::sync::mpsc::Receiver<tokio_postgres::Notification>,
        ),
        StoreError,
    > {
        let (client, mut conn) = self
            .config
            .connect(self.tls.clone())
            .await
            .map_err(|e| StoreError::Unreachable(e.to_string()))?;
        let (tx, rx) = tokio::sync::mpsc::channel(1024);
        tokio::spawn(async move {
            loop {
                let m = std::future::poll_fn(|cx| conn.poll_message(cx)).await;
                match m {
                    Some(Ok(tokio_postgres::AsyncMessage::Notification(n))) => {
                        if tx.send(n).await.is_err() {
                            break;
                        }
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "the database connection for notifications failed");
                        break;
                    }
                    None => break,
                }
            }
        });
        client
            .batch_execute("LISTEN jitgate_events")
            .await
            .map_err(db)?;
        Ok((client, rx))
    }

    /// A connection of its own, outside the pool (closed when the client is dropped).
    pub async fn connection(&self) -> Result<tokio_postgres::Client, StoreError> {
        let (client, conn) = self
            .config
            .connect(self.tls.clone())
            .await
            .map_err(|e| StoreError::Unreachable(e.to_string()))?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "a database connection ended");
            }
        });
        Ok(client)
    }

    /// A pooled connection.
    pub async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        self.pool.get().await.map_err(pool_err)
    }

    /// Apply the migrations this database lacks; how many. Holds an advisory lock for the
    /// whole transaction, so that nodes starting at once apply each migration exactly once.
    pub async fn migrate(&self) -> Result<usize, StoreError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(db)?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .await
            .map_err(db)?;
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS jitgate_schema (
                 id INTEGER PRIMARY KEY CHECK (id = 1),
                 version INTEGER NOT NULL
             )",
        )
        .await
        .map_err(db)?;
        let version: i32 = tx
            .query_opt("SELECT version FROM jitgate_schema WHERE id = 1", &[])
            .await
            .map_err(db)?
            .map_or(0, |r| r.get(0));
        let version = version as usize;
        if version > MIGRATIONS.len() {
            return Err(StoreError::Db(format!(
                "the database has schema version {version}, newer than this jitgate ({}); upgrade jitgate",
                MIGRATIONS.len()
            )));
        }
        for sql in &MIGRATIONS[version..] {
            tx.batch_execute(sql).await.map_err(db)?;
        }
        let now = MIGRATIONS.len() as i32;
        tx.execute(
            "INSERT INTO jitgate_schema (id, version) VALUES (1, $1)
             ON CONFLICT (id) DO UPDATE SET version = $1",
            &[&now],
        )
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)?;
        Ok(MIGRATIONS.len() - version)
    }

    /// The `data` of every row `sql` selects with `args`.
    async fn rows<T: DeserializeOwned>(
        &self,
        sql: &str,
        args: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<T>, StoreError> {
        let c = self.client().await?;
        let rows = c.query(sql, args).await.map_err(db)?;
        rows.iter()
            .map(|r| from_json(r.get::<_, &str>(0)))
            .collect()
    }

    /// The record `sql` selects with `arg` as `$1`, if any.
    async fn one<T: DeserializeOwned>(
        &self,
        sql: &str,
        arg: &str,
    ) -> Result<Option<T>, StoreError> {
        let c = self.client().await?;
        let row = c.query_opt(sql, &[&arg]).await.map_err(db)?;
        row.map(|r| from_json(r.get::<_, &str>(0))).transpose()
    }

    async fn exec(&self, sql: &str, args: &[&(dyn ToSql + Sync)]) -> Result<u64, StoreError> {
        let c = self.client().await?;
        c.execute(sql, args).await.map_err(db)
    }
}

#[async_trait]
impl Store for PgStore {
    async fn put_ticket(&self, t: &Ticket) -> Result<(), StoreError> {
        let data = to_json(t)?;
        let assignee = t.assignee.as_ref().map(|a| a.as_str());
        self.exec(
            "INSERT INTO tickets (id, state, assignee, updated_at, data) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (id) DO UPDATE SET state = $2, assignee = $3, updated_at = $4, data = $5",
            &[
                &t.id.as_str(),
                &t.state.as_str(),
                &assignee,
                &t.updated_at,
                &data,
            ],
        )
        .await
        .map(|_| ())
    }

    async fn ticket(&self, id: &TicketRef) -> Result<Option<Ticket>, StoreError> {
        self.one("SELECT data FROM tickets WHERE id = $1", id.as_str())
            .await
    }

    async fn tickets(&self, f: &TicketFilter) -> Result<Vec<Ticket>, StoreError> {
        let assignee = f.assignee.as_ref().map(|a| a.as_str());
        let state = f.state.map(|s| s.as_str());
        self.rows(
            "SELECT data FROM tickets
             WHERE ($1::text IS NULL OR assignee = $1) AND ($2::text IS NULL OR state = $2)
             ORDER BY updated_at DESC, id DESC LIMIT $3",
            &[&assignee, &state, &limit(f.limit)],
        )
        .await
    }

    async fn put_request(&self, r: &Request) -> Result<(), StoreError> {
        let data = to_json(r)?;
        self.exec(
            "INSERT INTO requests (id, requester, state, ticket, created_at, data)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (id) DO UPDATE SET state = $3, data = $6",
            &[
                &r.id.as_str(),
                &r.requester.as_str(),
                &r.state.as_str(),
                &r.ticket.as_str(),
                &r.created_at,
                &data,
            ],
        )
        .await
        .map(|_| ())
    }

    async fn request(&self, id: &RequestId) -> Result<Option<Request>, StoreError> {
        self.one("SELECT data FROM requests WHERE id = $1", id.as_str())
            .await
    }

    async fn requests(&self, f: &RequestFilter) -> Result<Vec<Request>, StoreError> {
        let requester = f.requester.as_ref().map(|u| u.as_str());
        let state = f.state.map(|s| s.as_str());
        let ticket = f.ticket.as_ref().map(|t| t.as_str());
        self.rows(
            "SELECT data FROM requests
             WHERE ($1::text IS NULL OR requester = $1) AND ($2::text IS NULL OR state = $2)
               AND ($3::text IS NULL OR ticket = $3)
             ORDER BY created_at DESC, id LIMIT $4",
            &[&requester, &state, &ticket, &limit(f.limit)],
        )
        .await
    }

    async fn put_grant(&self, g: &Grant) -> Result<(), StoreError> {
        let data = to_json(g)?;
        self.exec(
            "INSERT INTO grants (id, request, requester, token_hash, ticket, state, expires_at, data)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
             ON CONFLICT (id) DO UPDATE SET token_hash = $4, state = $6, expires_at = $7, data = $8",
            &[
                &g.id.as_str(),
                &g.request.as_str(),
                &g.requester.as_str(),
                &g.token_hash,
                &g.ticket.as_str(),
                &g.state.as_str(),
                &g.expires_at,
                &data,
            ],
        )
        .await
        .map(|_| ())
    }

    async fn grant(&self, id: &GrantId) -> Result<Option<Grant>, StoreError> {
        self.one("SELECT data FROM grants WHERE id = $1", id.as_str())
            .await
    }

    async fn grant_by_token_hash(&self, hash: &str) -> Result<Option<Grant>, StoreError> {
        self.one("SELECT data FROM grants WHERE token_hash = $1", hash)
            .await
    }

    async fn grants(&self, f: &GrantFilter) -> Result<Vec<Grant>, StoreError> {
        let requester = f.requester.as_ref().map(|u| u.as_str());
        let state = f.state.map(|s| s.as_str());
        let ticket = f.ticket.as_ref().map(|t| t.as_str());
        self.rows(
            "SELECT data FROM grants
             WHERE ($1::text IS NULL OR requester = $1) AND ($2::text IS NULL OR state = $2)
               AND ($3::text IS NULL OR ticket = $3)
             ORDER BY expires_at DESC, id LIMIT $4",
            &[&requester, &state, &ticket, &limit(f.limit)],
        )
        .await
    }

    async fn put_session(&self, r: &SessionRecord) -> Result<(), StoreError> {
        let data = to_json(r)?;
        let break_glass = r.kind == super::RequestKind::BreakGlass;
        let node = r.node.as_deref();
        self.exec(
            "INSERT INTO sessions (id, user_name, grant_id, ticket, started_at, ended_at, target,
                 task, protocol, end_cause, break_glass, vendor, node, data)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
             ON CONFLICT (id) DO UPDATE SET user_name = $2, grant_id = $3, ticket = $4,
                 started_at = $5, ended_at = $6, target = $7, task = $8, protocol = $9,
                 end_cause = $10, break_glass = $11, vendor = $12, node = $13, data = $14",
            &[
                &r.id.as_str(),
                &r.user.as_str(),
                &r.grant.as_str(),
                &r.ticket.as_str(),
                &r.started_at,
                &r.ended_at,
                &r.target.as_str(),
                &r.task.as_str(),
                &r.protocol,
                &r.end_cause,
                &break_glass,
                &r.vendor,
                &node,
                &data,
            ],
        )
        .await
        .map(|_| ())
    }

    async fn session(&self, id: &SessionId) -> Result<Option<SessionRecord>, StoreError> {
        self.one("SELECT data FROM sessions WHERE id = $1", id.as_str())
            .await
    }

    async fn sessions(&self, f: &SessionFilter) -> Result<Vec<SessionRecord>, StoreError> {
        let user = f.user.as_ref().map(|v| v.as_str());
        let grant = f.grant.as_ref().map(|v| v.as_str());
        let ticket = f.ticket.as_ref().map(|v| v.as_str());
        let target = f.target.as_ref().map(|v| v.as_str());
        let task = f.task.as_ref().map(|v| v.as_str());
        let before = f.before.as_ref().map(|v| v.as_str());
        self.rows(
            "SELECT data FROM sessions
             WHERE ($1::text IS NULL OR user_name = $1)
               AND ($2::text IS NULL OR grant_id = $2)
               AND ($3::text IS NULL OR ticket = $3)
               AND ($4::text IS NULL OR target = $4)
               AND ($5::text IS NULL OR task = $5)
               AND ($6::text IS NULL OR protocol = $6)
               AND ($7::text IS NULL OR end_cause = $7)
               AND ($8::text IS NULL OR vendor = $8)
               AND ($9::bigint IS NULL OR started_at >= $9)
               AND ($10::bigint IS NULL OR started_at < $10)
               AND ($11::text IS NULL OR (started_at, id) <
                    (SELECT b.started_at, b.id FROM sessions AS b WHERE b.id = $11))
               AND ($12::boolean IS NULL OR (ended_at IS NULL) = $12)
               AND ($13::boolean IS NULL OR break_glass = $13)
               AND ($14::boolean IS NULL OR (vendor IS NOT NULL) = $14)
             ORDER BY started_at DESC, id DESC LIMIT $15",
            &[
                &user,
                &grant,
                &ticket,
                &target,
                &task,
                &f.protocol,
                &f.end_cause,
                &f.vendor_name,
                &f.since,
                &f.until,
                &before,
                &f.live,
                &f.break_glass,
                &f.vendor,
                &limit(f.limit),
            ],
        )
        .await
    }

    async fn put_review(&self, r: &Review) -> Result<(), StoreError> {
        let data = to_json(r)?;
        self.exec(
            "INSERT INTO reviews (id, user_name, open, created_at, data) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (id) DO UPDATE SET open = $3, data = $5",
            &[
                &r.id,
                &r.user.as_str(),
                &r.reviewed_at.is_none(),
                &r.created_at,
                &data,
            ],
        )
        .await
        .map(|_| ())
    }

    async fn review(&self, id: &str) -> Result<Option<Review>, StoreError> {
        self.one("SELECT data FROM reviews WHERE id = $1", id).await
    }

    async fn reviews(
        &self,
        open_only: bool,
        user: Option<&UserName>,
    ) -> Result<Vec<Review>, StoreError> {
        let user = user.map(|u| u.as_str());
        self.rows(
            "SELECT data FROM reviews
             WHERE (NOT $1 OR open) AND ($2::text IS NULL OR user_name = $2)
             ORDER BY created_at DESC, id LIMIT 1000",
            &[&open_only, &user],
        )
        .await
    }

    async fn record_delivery(&self, key: &str, at: UnixTime) -> Result<bool, StoreError> {
        let n = self
            .exec(
                "INSERT INTO webhook_deliveries (key, received_at) VALUES ($1, $2)
                 ON CONFLICT (key) DO NOTHING",
                &[&key, &at],
            )
            .await?;
        // Keep the table bounded: deliveries older than a day cannot pass the freshness check.
        self.exec(
            "DELETE FROM webhook_deliveries WHERE received_at < $1",
            &[&(at - 86_400)],
        )
        .await?;
        Ok(n == 1)
    }

    async fn append_audit(&self, e: &AuditEntry) -> Result<(), StoreError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(db)?;
        let seq = e.seq as i64;
        tx.execute(
            "INSERT INTO audit (seq, ts, event, hash, request, grant_id, session, record)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            &[
                &seq, &e.ts, &e.event, &e.hash, &e.request, &e.grant, &e.session, &e.record,
            ],
        )
        .await
        .map_err(db)?;
        tx.execute(
            "INSERT INTO audit_head (id, seq, hash) VALUES (1, $1, $2)
             ON CONFLICT (id) DO UPDATE SET seq = $1, hash = $2",
            &[&seq, &e.hash],
        )
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)
    }

    async fn audit_head(&self) -> Result<Option<(u64, String)>, StoreError> {
        let c = self.client().await?;
        let row = c
            .query_opt(
                "SELECT seq, hash FROM audit_head WHERE id = 1 AND seq > 0",
                &[],
            )
            .await
            .map_err(db)?;
        Ok(row.map(|r| (r.get::<_, i64>(0) as u64, r.get(1))))
    }

    async fn append_chained(&self, link: super::ChainLink) -> Result<AuditEntry, StoreError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(db)?;
        // The head row exists from the first migration on; this lock orders every node's
        // appends into one sequence.
        let head = tx
            .query_one(
                "SELECT seq, hash FROM audit_head WHERE id = 1 FOR UPDATE",
                &[],
            )
            .await
            .map_err(db)?;
        let (seq, hash): (i64, String) = (head.get(0), head.get(1));
        let e = link(seq as u64, &hash);
        if e.seq != seq as u64 + 1 {
            return Err(StoreError::Db(format!(
                "an audit record must follow seq {seq}, not be {}",
                e.seq
            )));
        }
        let next = e.seq as i64;
        tx.execute(
            "INSERT INTO audit (seq, ts, event, hash, request, grant_id, session, record)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            &[
                &next, &e.ts, &e.event, &e.hash, &e.request, &e.grant, &e.session, &e.record,
            ],
        )
        .await
        .map_err(db)?;
        tx.execute(
            "UPDATE audit_head SET seq = $1, hash = $2 WHERE id = 1",
            &[&next, &e.hash],
        )
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)?;
        Ok(e)
    }

    async fn audit(&self, f: &AuditFilter) -> Result<Vec<AuditEntry>, StoreError> {
        let after = f.after_seq.map(|s| s as i64);
        let c = self.client().await?;
        let rows = c
            .query(
                "SELECT seq, ts, event, hash, request, grant_id, session, record FROM audit
                 WHERE ($1::bigint IS NULL OR seq > $1) AND ($2::text IS NULL OR event = $2)
                   AND ($3::text IS NULL OR request = $3) AND ($4::text IS NULL OR grant_id = $4)
                 ORDER BY seq LIMIT $5",
                &[&after, &f.event, &f.request, &f.grant, &limit(f.limit)],
            )
            .await
            .map_err(db)?;
        Ok(rows
            .iter()
            .map(|r| AuditEntry {
                seq: r.get::<_, i64>(0) as u64,
                ts: r.get(1),
                event: r.get(2),
                hash: r.get(3),
                request: r.get(4),
                grant: r.get(5),
                session: r.get(6),
                record: r.get(7),
            })
            .collect())
    }

    async fn put_person(&self, p: &Person) -> Result<(), StoreError> {
        let data = to_json(p)?;
        let name = p.name.as_str();
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(db)?;
        tx.execute(
            "INSERT INTO people (name, data) VALUES ($1, $2)
             ON CONFLICT (name) DO UPDATE SET data = $2",
            &[&name, &data],
        )
        .await
        .map_err(db)?;
        tx.execute("DELETE FROM person_ids WHERE name = $1", &[&name])
            .await
            .map_err(db)?;
        for id in &p.external_ids {
            // The latest sign-in that claims an identity holds it.
            tx.execute(
                "INSERT INTO person_ids (external_id, name) VALUES ($1, $2)
                 ON CONFLICT (external_id) DO UPDATE SET name = $2",
                &[id, &name],
            )
            .await
            .map_err(db)?;
        }
        tx.commit().await.map_err(db)
    }

    async fn person(&self, name: &UserName) -> Result<Option<Person>, StoreError> {
        self.one("SELECT data FROM people WHERE name = $1", name.as_str())
            .await
    }

    async fn person_with_id(&self, external_id: &str) -> Result<Option<UserName>, StoreError> {
        let c = self.client().await?;
        let row = c
            .query_opt(
                "SELECT name FROM person_ids WHERE external_id = $1",
                &[&external_id],
            )
            .await
            .map_err(db)?;
        row.map(|r| {
            r.get::<_, &str>(0).parse().map_err(|e: String| {
                StoreError::Corrupt(format!("person_ids holds a bad name: {e}"))
            })
        })
        .transpose()
    }

    async fn put_held(
        &self,
        kind: &str,
        key: &str,
        value: &str,
        expires_at: UnixTime,
        max: usize,
    ) -> Result<bool, StoreError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(db)?;
        tx.execute(
            "DELETE FROM held WHERE expires_at < $1",
            &[&(crate::types::now() - 60)],
        )
        .await
        .map_err(db)?;
        let n: i64 = tx
            .query_one("SELECT count(*) FROM held WHERE kind = $1", &[&kind])
            .await
            .map_err(db)?
            .get(0);
        if n as usize >= max {
            return Ok(false);
        }
        tx.execute(
            "INSERT INTO held (kind, key, value, expires_at) VALUES ($1, $2, $3, $4)",
            &[&kind, &key, &value, &expires_at],
        )
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)?;
        Ok(true)
    }

    async fn take_held(&self, kind: &str, key: &str) -> Result<Option<String>, StoreError> {
        let c = self.client().await?;
        let row = c
            .query_opt(
                "DELETE FROM held WHERE kind = $1 AND key = $2 RETURNING value",
                &[&kind, &key],
            )
            .await
            .map_err(db)?;
        Ok(row.map(|r| r.get(0)))
    }

    async fn put_sign_in(&self, s: &SignIn) -> Result<(), StoreError> {
        let data = to_json(s)?;
        // Sign-ins over for a day are of no more use (the audit log keeps their story).
        self.exec(
            "DELETE FROM sign_ins WHERE expires_at < $1",
            &[&(crate::types::now() - 86_400)],
        )
        .await?;
        self.exec(
            "INSERT INTO sign_ins (secret_sha256, id, user_name, expires_at, data)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (secret_sha256) DO UPDATE SET data = $5",
            &[
                &s.secret_sha256,
                &s.id,
                &s.user.as_str(),
                &s.expires_at,
                &data,
            ],
        )
        .await
        .map(|_| ())
    }

    async fn sign_in(&self, sha256: &str) -> Result<Option<SignIn>, StoreError> {
        self.one("SELECT data FROM sign_ins WHERE secret_sha256 = $1", sha256)
            .await
    }
}
