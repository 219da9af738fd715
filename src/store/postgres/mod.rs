//! The PostgreSQL store, for several gateway nodes sharing one database. Records are kept as
//! JSON next to the columns queries filter on, as in SQLite; every query is a constant string
//! with `$n` parameters (optional filters are `($n IS NULL OR column = $n)`), never SQL built
//! from values. Connections come from a pool; TLS to the database is used when the server
//! offers it (`sslmode=prefer`, the default) or demanded with `sslmode=require` in the URL.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio_postgres::types::ToSql;

use super::{StoreError, redact_url};

mod pgpass;
mod schema;
mod store;

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
    // With its causes: "error performing TLS handshake" alone does not say that the server's
    // certificate is not trusted (store.ca).
    let mut text = e.to_string();
    let mut cause = std::error::Error::source(&e);
    while let Some(c) = cause {
        text = format!("{text}: {c}");
        cause = c.source();
    }
    if e.is_closed() || text.contains("connect") || text.contains("TLS") {
        return StoreError::Unreachable(text);
    }
    StoreError::Db(text)
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

    /// Open the pool's connections now, so that a burst (hundreds of sessions ending at one
    /// ticket close) finds them ready instead of making the database start a backend and
    /// check a password for each while it also serves the other nodes' cuts. A connection
    /// that cannot be made now is made on demand later.
    pub async fn warm(&self) {
        let held = futures_util::future::join_all((0..POOL_SIZE).map(|_| self.pool.get())).await;
        let ready = held.iter().filter(|c| c.is_ok()).count();
        tracing::debug!(ready, "database connections opened");
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
        let st = c.prepare_cached(sql).await.map_err(db)?;
        let rows = c.query(&st, args).await.map_err(db)?;
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
        let st = c.prepare_cached(sql).await.map_err(db)?;
        let row = c.query_opt(&st, &[&arg]).await.map_err(db)?;
        row.map(|r| from_json(r.get::<_, &str>(0))).transpose()
    }

    async fn exec(&self, sql: &str, args: &[&(dyn ToSql + Sync)]) -> Result<u64, StoreError> {
        let c = self.client().await?;
        let st = c.prepare_cached(sql).await.map_err(db)?;
        c.execute(&st, args).await.map_err(db)
    }
}
