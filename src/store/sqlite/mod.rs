//! The embedded SQLite store (WAL mode). Records are kept as JSON next to the columns queries
//! filter on; schema changes are numbered migrations applied at open.

use std::path::Path;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{
    AuditEntry, AuditFilter, Grant, GrantFilter, Person, Request, RequestFilter, Review,
    SessionFilter, SessionRecord, SignIn, Store, StoreError, Ticket, TicketFilter,
};
use crate::types::{GrantId, RequestId, SessionId, TicketRef, UnixTime};

mod held;
mod index;
#[cfg(test)]
mod people_tests;
mod schema;
#[cfg(test)]
mod tests;

use schema::MIGRATIONS;

/// SQLite behind a mutex; calls run on the blocking thread pool.
#[derive(Clone)]
pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
}

fn db<E: std::error::Error + 'static>(e: E) -> StoreError {
    use rusqlite::ErrorCode::{DatabaseBusy, DatabaseLocked};
    let busy = (&e as &dyn std::error::Error)
        .downcast_ref::<rusqlite::Error>()
        .and_then(rusqlite::Error::sqlite_error_code)
        .is_some_and(|c| matches!(c, DatabaseBusy | DatabaseLocked));
    if busy {
        StoreError::Busy(e.to_string())
    } else {
        StoreError::Db(e.to_string())
    }
}

fn to_json<T: Serialize>(v: &T) -> Result<String, StoreError> {
    serde_json::to_string(v).map_err(db)
}

fn from_json<T: DeserializeOwned>(s: &str) -> Result<T, StoreError> {
    serde_json::from_str(s).map_err(|e| StoreError::Corrupt(e.to_string()))
}

impl SqliteStore {
    /// Open (creating if needed) the database at `path` and apply pending migrations.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let open_err = |reason: String| StoreError::Open {
            path: path.display().to_string(),
            reason,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| open_err(e.to_string()))?;
        }
        let conn = Connection::open(path).map_err(|e| open_err(e.to_string()))?;
        Self::setup(conn).map_err(|e| open_err(e.to_string()))
    }

    /// Open an existing database read-only (for offline verification); `None` when it is absent.
    pub fn open_read_only(path: &Path) -> Result<Option<Self>, StoreError> {
        if !path.exists() {
            return Ok(None);
        }
        let conn = Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .map_err(|e| StoreError::Open {
                path: path.display().to_string(),
                reason: e.to_string(),
            })?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(db)?;
        Ok(Some(Self {
            conn: Arc::new(Mutex::new(conn)),
        }))
    }

    /// An in-memory database (tests).
    pub fn in_memory() -> Result<Self, StoreError> {
        Self::setup(Connection::open_in_memory().map_err(db)?)
    }

    fn setup(mut conn: Connection) -> Result<Self, StoreError> {
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(db)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(db)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(db)?;
        conn.pragma_update(None, "foreign_keys", "ON").map_err(db)?;
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(db)?;
        if version as usize > MIGRATIONS.len() {
            return Err(StoreError::Db(format!(
                "the database has schema version {version}, newer than this jitgate ({}); upgrade jitgate",
                MIGRATIONS.len()
            )));
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            let tx = conn.transaction().map_err(db)?;
            tx.execute_batch(sql).map_err(db)?;
            tx.pragma_update(None, "user_version", (i + 1) as i64)
                .map_err(db)?;
            tx.commit().map_err(db)?;
        }
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    async fn with<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            let mut guard = conn
                .lock()
                .map_err(|_| StoreError::Db("database lock poisoned".into()))?;
            f(&mut guard)
        })
        .await
        .map_err(|e| StoreError::Db(format!("database task failed: {e}")))?
    }
}

fn rows<T: DeserializeOwned>(
    conn: &Connection,
    sql: &str,
    args: &[&dyn rusqlite::ToSql],
) -> Result<Vec<T>, StoreError> {
    let mut stmt = conn.prepare(sql).map_err(db)?;
    let datas = stmt
        .query_map(args, |r| r.get::<_, String>(0))
        .map_err(db)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(db)?;
    datas.iter().map(|d| from_json(d)).collect()
}

/// Builds `WHERE a = ? AND b = ?` clauses with their arguments: the SQL is made of constant
/// text only, every value is a `?` parameter.
#[derive(Default)]
struct Where {
    clauses: Vec<&'static str>,
    args: Vec<Box<dyn rusqlite::ToSql + Send>>,
}

impl Where {
    /// `clause` with one `?` for `v`, when there is a `v`.
    fn add(&mut self, clause: &'static str, v: Option<impl rusqlite::ToSql + Send + 'static>) {
        if let Some(v) = v {
            self.clauses.push(clause);
            self.args.push(Box::new(v));
        }
    }

    /// A clause without parameters.
    fn push(&mut self, clause: &'static str) {
        self.clauses.push(clause);
    }

    /// The records of `table` this selects, in the order `tail` gives; `tail` ends with the
    /// `LIMIT ?` that `lim` fills.
    fn select<T: DeserializeOwned>(
        mut self,
        c: &Connection,
        table: &'static str,
        tail: &'static str,
        lim: u32,
    ) -> Result<Vec<T>, StoreError> {
        let sql = format!("SELECT data FROM {table}{} {tail}", self.sql());
        self.args.push(Box::new(lim));
        rows(c, &sql, &self.refs())
    }

    fn sql(&self) -> String {
        if self.clauses.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", self.clauses.join(" AND "))
        }
    }

    fn refs(&self) -> Vec<&dyn rusqlite::ToSql> {
        self.args
            .iter()
            .map(|b| b.as_ref() as &dyn rusqlite::ToSql)
            .collect()
    }
}

impl SqliteStore {
    /// The records of `table` that `w` selects, in the order `tail` gives (ending in `LIMIT ?`),
    /// at most `lim`.
    async fn many<T: DeserializeOwned + Send + 'static>(
        &self,
        table: &'static str,
        w: Where,
        tail: &'static str,
        lim: u32,
    ) -> Result<Vec<T>, StoreError> {
        self.with(move |c| w.select(c, table, tail, lim)).await
    }

    /// The record `sql` selects with `arg` as `?1`, if any.
    async fn one<T: DeserializeOwned + Send + 'static>(
        &self,
        sql: &'static str,
        arg: String,
    ) -> Result<Option<T>, StoreError> {
        self.with(move |c| Ok(rows::<T>(c, sql, &[&arg])?.into_iter().next()))
            .await
    }
}

fn limit(l: Option<u32>) -> u32 {
    l.unwrap_or(1000).min(10_000)
}

#[async_trait]
impl Store for SqliteStore {
    async fn put_ticket(&self, t: &Ticket) -> Result<(), StoreError> {
        let t = t.clone();
        self.with(move |c| index::put_ticket(c, &t)).await
    }

    async fn ticket(&self, id: &TicketRef) -> Result<Option<Ticket>, StoreError> {
        self.one("SELECT data FROM tickets WHERE id = ?1", id.to_string())
            .await
    }

    async fn tickets(&self, f: &TicketFilter) -> Result<Vec<Ticket>, StoreError> {
        let f = f.clone();
        self.with(move |c| index::tickets(c, &f)).await
    }

    async fn put_request(&self, r: &Request) -> Result<(), StoreError> {
        let data = to_json(r)?;
        let (id, requester, state, ticket, created) = (
            r.id.to_string(),
            r.requester.to_string(),
            r.state.as_str(),
            r.ticket.to_string(),
            r.created_at,
        );
        self.with(move |c| {
            c.execute(
                "INSERT INTO requests (id, requester, state, ticket, created_at, data)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT(id) DO UPDATE SET state = ?3, data = ?6",
                params![id, requester, state, ticket, created, data],
            )
            .map_err(db)?;
            Ok(())
        })
        .await
    }

    async fn request(&self, id: &RequestId) -> Result<Option<Request>, StoreError> {
        self.one("SELECT data FROM requests WHERE id = ?1", id.to_string())
            .await
    }

    async fn requests(&self, f: &RequestFilter) -> Result<Vec<Request>, StoreError> {
        let mut w = Where::default();
        w.add("requester = ?", f.requester.as_ref().map(|u| u.to_string()));
        w.add("state = ?", f.state.map(|s| s.as_str()));
        w.add("ticket = ?", f.ticket.as_ref().map(|t| t.to_string()));
        self.many(
            "requests",
            w,
            "ORDER BY created_at DESC, id LIMIT ?",
            limit(f.limit),
        )
        .await
    }

    async fn put_grant(&self, g: &Grant) -> Result<(), StoreError> {
        let data = to_json(g)?;
        let (id, req, requester, hash, ticket, state, exp) = (
            g.id.to_string(),
            g.request.to_string(),
            g.requester.to_string(),
            g.token_hash.clone(),
            g.ticket.to_string(),
            g.state.as_str(),
            g.expires_at,
        );
        self.with(move |c| {
            c.execute(
                "INSERT INTO grants (id, request, requester, token_hash, ticket, state, expires_at, data)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                 ON CONFLICT(id) DO UPDATE SET token_hash = ?4, state = ?6, expires_at = ?7, data = ?8",
                params![id, req, requester, hash, ticket, state, exp, data],
            )
            .map_err(db)?;
            Ok(())
        })
        .await
    }

    async fn grant(&self, id: &GrantId) -> Result<Option<Grant>, StoreError> {
        self.one("SELECT data FROM grants WHERE id = ?1", id.to_string())
            .await
    }

    async fn grant_by_token_hash(&self, hash: &str) -> Result<Option<Grant>, StoreError> {
        self.one(
            "SELECT data FROM grants WHERE token_hash = ?1",
            hash.to_string(),
        )
        .await
    }

    async fn grants(&self, f: &GrantFilter) -> Result<Vec<Grant>, StoreError> {
        let mut w = Where::default();
        w.add("requester = ?", f.requester.as_ref().map(|u| u.to_string()));
        w.add("state = ?", f.state.map(|s| s.as_str()));
        w.add("ticket = ?", f.ticket.as_ref().map(|t| t.to_string()));
        self.many(
            "grants",
            w,
            "ORDER BY expires_at DESC, id LIMIT ?",
            limit(f.limit),
        )
        .await
    }

    async fn put_session(&self, r: &SessionRecord) -> Result<(), StoreError> {
        let r = r.clone();
        self.with(move |c| index::put_session(c, &r)).await
    }

    async fn session(&self, id: &SessionId) -> Result<Option<SessionRecord>, StoreError> {
        self.one("SELECT data FROM sessions WHERE id = ?1", id.to_string())
            .await
    }

    async fn sessions(&self, f: &SessionFilter) -> Result<Vec<SessionRecord>, StoreError> {
        let f = f.clone();
        self.with(move |c| index::sessions(c, &f)).await
    }

    async fn put_review(&self, r: &Review) -> Result<(), StoreError> {
        let data = to_json(r)?;
        let (id, user, open, created) = (
            r.id.clone(),
            r.user.to_string(),
            r.reviewed_at.is_none() as i64,
            r.created_at,
        );
        self.with(move |c| {
            c.execute(
                "INSERT INTO reviews (id, user, open, created_at, data) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT(id) DO UPDATE SET open = ?3, data = ?5",
                params![id, user, open, created, data],
            )
            .map_err(db)?;
            Ok(())
        })
        .await
    }

    async fn review(&self, id: &str) -> Result<Option<Review>, StoreError> {
        self.one("SELECT data FROM reviews WHERE id = ?1", id.to_string())
            .await
    }

    async fn reviews(
        &self,
        open_only: bool,
        user: Option<&crate::types::UserName>,
    ) -> Result<Vec<Review>, StoreError> {
        let mut w = Where::default();
        w.add("open = ?", open_only.then_some(1i64));
        w.add("user = ?", user.map(|u| u.to_string()));
        self.many("reviews", w, "ORDER BY created_at DESC, id LIMIT ?", 1000)
            .await
    }

    async fn record_delivery(&self, key: &str, at: UnixTime) -> Result<bool, StoreError> {
        let key = key.to_string();
        self.with(move |c| {
            let n = c
                .execute(
                    "INSERT OR IGNORE INTO webhook_deliveries (key, received_at) VALUES (?1, ?2)",
                    params![key, at],
                )
                .map_err(db)?;
            // Keep the table bounded: deliveries older than a day cannot pass the freshness check.
            c.execute(
                "DELETE FROM webhook_deliveries WHERE received_at < ?1",
                params![at - 86_400],
            )
            .map_err(db)?;
            Ok(n == 1)
        })
        .await
    }

    async fn append_audit(&self, e: &AuditEntry) -> Result<(), StoreError> {
        let e = e.clone();
        self.with(move |c| {
            let tx = c.transaction().map_err(db)?;
            tx.execute(
                "INSERT INTO audit (seq, ts, event, hash, request, grant_id, session, record)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    e.seq as i64,
                    e.ts,
                    e.event,
                    e.hash,
                    e.request,
                    e.grant,
                    e.session,
                    e.record
                ],
            )
            .map_err(db)?;
            tx.execute(
                "INSERT INTO audit_head (id, seq, hash) VALUES (1, ?1, ?2)
                 ON CONFLICT(id) DO UPDATE SET seq = ?1, hash = ?2",
                params![e.seq as i64, e.hash],
            )
            .map_err(db)?;
            tx.commit().map_err(db)
        })
        .await
    }

    async fn audit_head(&self) -> Result<Option<(u64, String)>, StoreError> {
        self.with(|c| {
            c.query_row("SELECT seq, hash FROM audit_head WHERE id = 1", [], |r| {
                Ok((r.get::<_, i64>(0)? as u64, r.get::<_, String>(1)?))
            })
            .optional()
            .map_err(db)
        })
        .await
    }

    async fn audit(&self, f: &AuditFilter) -> Result<Vec<AuditEntry>, StoreError> {
        let mut w = Where::default();
        w.add("seq > ?", f.after_seq.map(|s| s as i64));
        w.add("event = ?", f.event.clone());
        w.add("request = ?", f.request.clone());
        w.add("grant_id = ?", f.grant.clone());
        w.args.push(Box::new(limit(f.limit)));
        self.with(move |c| {
            let sql = format!(
                "SELECT seq, ts, event, hash, request, grant_id, session, record FROM audit{} ORDER BY seq LIMIT ?",
                w.sql()
            );
            let mut stmt = c.prepare(&sql).map_err(db)?;
            let out = stmt
                .query_map(w.refs().as_slice(), |r| {
                    Ok(AuditEntry {
                        seq: r.get::<_, i64>(0)? as u64,
                        ts: r.get(1)?,
                        event: r.get(2)?,
                        hash: r.get(3)?,
                        request: r.get(4)?,
                        grant: r.get(5)?,
                        session: r.get(6)?,
                        record: r.get(7)?,
                    })
                })
                .map_err(db)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(db)?;
            Ok(out)
        })
        .await
    }

    async fn put_person(&self, p: &Person) -> Result<(), StoreError> {
        let (name, data, ids) = (p.name.to_string(), to_json(p)?, p.external_ids.clone());
        self.with(move |c| {
            let tx = c.transaction().map_err(db)?;
            tx.execute(
                "INSERT INTO people (name, data) VALUES (?1, ?2)
                 ON CONFLICT(name) DO UPDATE SET data = ?2",
                params![name, data],
            )
            .map_err(db)?;
            tx.execute("DELETE FROM person_ids WHERE name = ?1", params![name])
                .map_err(db)?;
            for id in &ids {
                // The latest sign-in that claims an identity holds it.
                tx.execute(
                    "INSERT INTO person_ids (external_id, name) VALUES (?1, ?2)
                     ON CONFLICT(external_id) DO UPDATE SET name = ?2",
                    params![id, name],
                )
                .map_err(db)?;
            }
            tx.commit().map_err(db)?;
            Ok(())
        })
        .await
    }

    async fn person_with_id(
        &self,
        external_id: &str,
    ) -> Result<Option<crate::types::UserName>, StoreError> {
        let id = external_id.to_string();
        let name: Option<String> = self
            .with(move |c| {
                c.query_row(
                    "SELECT name FROM person_ids WHERE external_id = ?1",
                    params![id],
                    |r| r.get(0),
                )
                .optional()
                .map_err(db)
            })
            .await?;
        name.map(|n| {
            n.parse()
                .map_err(|e: String| StoreError::Db(format!("person_ids holds a bad name: {e}")))
        })
        .transpose()
    }

    async fn person(&self, name: &crate::types::UserName) -> Result<Option<Person>, StoreError> {
        self.one("SELECT data FROM people WHERE name = ?1", name.to_string())
            .await
    }

    async fn put_held(
        &self,
        kind: &str,
        key: &str,
        value: &str,
        expires_at: UnixTime,
        max: usize,
    ) -> Result<bool, StoreError> {
        let (kind, key, value) = (kind.to_string(), key.to_string(), value.to_string());
        self.with(move |c| held::put(c, &kind, &key, &value, expires_at, max))
            .await
    }

    async fn take_held(&self, kind: &str, key: &str) -> Result<Option<String>, StoreError> {
        let (kind, key) = (kind.to_string(), key.to_string());
        self.with(move |c| held::take(c, &kind, &key)).await
    }

    async fn put_sign_in(&self, s: &SignIn) -> Result<(), StoreError> {
        let data = to_json(s)?;
        let (hash, id, user, expires) = (
            s.secret_sha256.clone(),
            s.id.clone(),
            s.user.to_string(),
            s.expires_at,
        );
        self.with(move |c| {
            // Sign-ins over for a day are of no more use (the audit log keeps their story).
            c.execute(
                "DELETE FROM sign_ins WHERE expires_at < ?1",
                params![crate::types::now() - 86_400],
            )
            .map_err(db)?;
            c.execute(
                "INSERT INTO sign_ins (secret_sha256, id, user, expires_at, data)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT(secret_sha256) DO UPDATE SET data = ?5",
                params![hash, id, user, expires, data],
            )
            .map_err(db)?;
            Ok(())
        })
        .await
    }

    async fn sign_in(&self, sha256: &str) -> Result<Option<SignIn>, StoreError> {
        self.one(
            "SELECT data FROM sign_ins WHERE secret_sha256 = ?1",
            sha256.to_string(),
        )
        .await
    }
}
