//! Several gateway nodes on one PostgreSQL database (the notices between them are in [`bus`]).
//! The database is the truth; a node tells the others what it changed with `NOTIFY`, and never
//! trusts its own view longer than it can check it:
//!
//! - [`ClusterBus`]: grant events go to this node's sessions at once and, for the ends of
//!   grants, to every other node (`pg_notify`). A node that hears of an end re-reads the grant
//!   and cuts its sessions of it when the database shows it ended.
//! - The listener ([`Cluster::listen`]): on every (re)connect, and after any gap, the node
//!   re-reads the grant of every live session it holds before it trusts its view again.
//! - The heartbeat ([`Cluster::beat`]): every `heartbeat`, the node writes its row in `nodes`
//!   and re-reads its live sessions' grants. A node that cannot for longer than
//!   `max_staleness` refuses admissions and cuts its live sessions (cause `stale`); once the
//!   database answers again it records their ends.
//! - Dead nodes: a node whose heartbeat is older than `dead_after` has its sessions ended by
//!   one of the others (cause `node-lost`), with digests of the recordings on the shared
//!   recordings directory.
//! - A kill for a session another node serves is sent to it (`kill` notification).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::ClusterConfig;

mod bus;

use crate::grant::Admission;
use crate::grant::admission::{AdmissionDenied, AdmitRequest};
use crate::session::{Cause, Registry};
use crate::store::postgres::PgStore;
use crate::store::{GrantState, StoreError};
use crate::types::{GrantId, SessionId};
pub use bus::ClusterBus;
use bus::{Notice, cause_of, clip, instant_of, notify, now_ms};

/// The advisory lock one node holds while it ends a dead node's sessions.
const DEAD_SWEEP_LOCK: i64 = 0x6a69_7467_6174_6502;
/// The advisory lock one node holds while it expires requests and grants.
pub const EXPIRY_LOCK: i64 = 0x6a69_7467_6174_6503;
/// The longest wait between attempts to reconnect the listener.
const LISTEN_BACKOFF_MAX: Duration = Duration::from_secs(5);

/// The state of grant `id` as the database holds it, read on `conn`.
async fn grant_state(
    conn: &tokio_postgres::Client,
    id: &GrantId,
) -> Result<Option<GrantState>, StoreError> {
    let row = conn
        .query_opt("SELECT data FROM grants WHERE id = $1", &[&id.as_str()])
        .await
        .map_err(|e| StoreError::Unreachable(e.to_string()))?;
    row.map(|r| {
        serde_json::from_str::<crate::store::Grant>(r.get::<_, &str>(0))
            .map(|g| g.state)
            .map_err(|e| StoreError::Corrupt(e.to_string()))
    })
    .transpose()
}

/// One node as `jitgate nodes` shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct NodeView {
    pub name: String,
    pub alive: bool,
    /// RFC 3339.
    pub last_heartbeat: String,
    pub live_sessions: i64,
    pub started_at: String,
}

/// This node's part in the cluster.
pub struct Cluster {
    node: String,
    pg: PgStore,
    cfg: ClusterConfig,
    sessions: Arc<Registry>,
    /// When the database last answered, Unix milliseconds.
    last_ok: AtomicI64,
    /// Past `max_staleness` without the database: admissions refused, sessions cut.
    stale: AtomicBool,
    started_at: i64,
    /// This process among all that ever ran as this node (random).
    instance: String,
    /// Held while the node's row is written; `true` once the name is let go (no more beats).
    row: tokio::sync::Mutex<bool>,
}

impl Cluster {
    pub fn new(
        node: String,
        pg: PgStore,
        cfg: ClusterConfig,
        sessions: Arc<Registry>,
    ) -> Arc<Self> {
        Arc::new(Self {
            node,
            pg,
            cfg,
            sessions,
            last_ok: AtomicI64::new(now_ms()),
            stale: AtomicBool::new(false),
            started_at: crate::types::now(),
            instance: crate::types::random_id(16),
            row: tokio::sync::Mutex::new(false),
        })
    }

    /// This node's name.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Take this node's name, before anything of the node's is touched: while another
    /// process's heartbeat under the name is younger than two heartbeats it waits (a node that
    /// crashed stops beating), and is refused when that process keeps beating (two processes
    /// as one node would each take the other's live sessions for orphans of its own).
    pub async fn claim(&self) -> Result<(), String> {
        let busy = 2 * self.cfg.heartbeat.as_secs() as i64 * 1000;
        let deadline = Instant::now() + Duration::from_millis(busy as u64 + 1000);
        loop {
            let c = self.pg.client().await.map_err(|e| e.to_string())?;
            let row = c
                .query_opt(
                    "SELECT instance, last_heartbeat FROM nodes WHERE name = $1",
                    &[&self.node],
                )
                .await
                .map_err(|e| e.to_string())?;
            drop(c);
            // An empty instance: the node stopped cleanly and let its name go.
            let held = row.map(|r| (r.get::<_, String>(0), now_ms() - r.get::<_, i64>(1)));
            match held {
                Some((instance, ago))
                    if !instance.is_empty() && instance != self.instance && ago < busy =>
                {
                    if Instant::now() >= deadline {
                        return Err(format!(
                            "gateway node name {} is in use: a node under it beat {} ms ago and goes on beating; give this one another [cluster] node name",
                            self.node,
                            ago.max(0)
                        ));
                    }
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                _ => return self.write_heartbeat().await.map_err(|e| e.to_string()),
            }
        }
    }

    /// Let this node's name go (a clean stop, its sessions ended): it may start again at once.
    pub async fn release(&self) {
        // No beat after this one, and none in flight while the name is let go.
        let mut released = self.row.lock().await;
        *released = true;
        let Ok(c) = self.pg.client().await else {
            return;
        };
        let _ = c
            .execute(
                "UPDATE nodes SET instance = '' WHERE name = $1 AND instance = $2",
                &[&self.node, &self.instance],
            )
            .await;
    }

    /// Run the listener, the heartbeat and the dead-node sweep until `shutdown`.
    pub fn start(self: &Arc<Self>, tracker: &TaskTracker, shutdown: &CancellationToken) {
        let me = self.clone();
        let stop = shutdown.clone();
        tracker.spawn(async move { me.listen(stop).await });
        let me = self.clone();
        let stop = shutdown.clone();
        tracker.spawn(async move {
            let mut tick = tokio::time::interval(me.cfg.heartbeat.duration());
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tick.tick() => me.beat().await,
                }
            }
        });
    }

    /// Why an admission must be refused now, if it must.
    pub fn refusal(&self) -> Option<String> {
        let silent = now_ms() - self.last_ok.load(Ordering::Acquire);
        (self.stale.load(Ordering::Acquire) || silent > self.cfg.max_staleness.as_secs() as i64 * 1000)
            .then(|| {
                format!(
                    "gateway node {} cannot reach its database (for {} s): it admits no session until it can check grants again; try another node",
                    self.node,
                    silent / 1000
                )
            })
    }

    /// Listen for the other nodes' notices; reconnect with backoff; re-read the live
    /// sessions' grants after every (re)connect.
    async fn listen(self: Arc<Self>, stop: CancellationToken) {
        let mut backoff = Duration::from_millis(200);
        loop {
            let (client, mut rx) = tokio::select! {
                _ = stop.cancelled() => return,
                r = self.pg.listen() => match r {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot listen for the other nodes; retrying");
                        tokio::select! {
                            _ = stop.cancelled() => return,
                            _ = tokio::time::sleep(backoff) => {}
                        }
                        backoff = (backoff * 2).min(LISTEN_BACKOFF_MAX);
                        continue;
                    }
                }
            };
            backoff = Duration::from_millis(200);
            // Whatever was said while nobody listened: the database knows.
            self.sessions.recheck_all().await;
            loop {
                let n = tokio::select! {
                    _ = stop.cancelled() => return,
                    n = rx.recv() => n,
                };
                let Some(n) = n else {
                    tracing::warn!(
                        "the connection for the other nodes' notices is gone; reconnecting"
                    );
                    break;
                };
                match serde_json::from_str::<Notice>(n.payload()) {
                    Ok(notice) => self.heard(notice, &client).await,
                    Err(e) => {
                        tracing::warn!(error = %e, "an unreadable notice on the cluster channel")
                    }
                }
            }
            drop(client);
        }
    }

    /// Act on another node's notice; `conn` is the listener's own connection, so that the
    /// re-read never waits for the pool while this node is busy.
    async fn heard(&self, notice: Notice, conn: &tokio_postgres::Client) {
        match notice {
            Notice::GrantEnded {
                node,
                grant,
                how,
                reason,
                at_ms,
            } => {
                if node == self.node {
                    return;
                }
                // The database is the truth: cut only for a grant it shows ended.
                match grant_state(conn, &grant).await {
                    Ok(Some(GrantState::Active)) => {
                        tracing::warn!(%grant, from = %node, "a notice of a grant's end that the database does not show; ignored");
                    }
                    Ok(_) => {
                        let n = self.sessions.terminate_grant(
                            &grant,
                            cause_of(&how),
                            &reason,
                            instant_of(at_ms),
                        );
                        if n > 0 {
                            tracing::info!(%grant, from = %node, sessions = n, "cut sessions of a grant another node ended");
                        }
                    }
                    Err(e) => {
                        // Cannot check: fail closed for this grant.
                        tracing::warn!(%grant, error = %e, "cannot re-read a grant another node ended; cutting its sessions");
                        self.sessions.terminate_grant(
                            &grant,
                            cause_of(&how),
                            &reason,
                            instant_of(at_ms),
                        );
                    }
                }
            }
            Notice::Kill {
                to,
                session,
                reason,
                at_ms,
                ..
            } => {
                if to == self.node {
                    self.sessions
                        .terminate(&session, Cause::Killed, &reason, instant_of(at_ms));
                }
            }
        }
    }

    /// One heartbeat: the node's row, its live sessions' grants, and the dead-node sweep; or,
    /// without the database for longer than `max_staleness`, the fail-closed cut.
    async fn beat(&self) {
        match self.write_heartbeat().await {
            Ok(()) => {
                self.last_ok.store(now_ms(), Ordering::Release);
                if self.stale.swap(false, Ordering::AcqRel) {
                    tracing::warn!(node = %self.node, "the database answers again; recording the sessions cut meanwhile");
                    if let Err(e) = self
                        .sessions
                        .close_orphans(
                            Some(&self.node),
                            "stale",
                            "the gateway node could not reach its database, so it could not check the grant",
                        )
                        .await
                    {
                        tracing::error!(error = %e, "cannot record the sessions cut while the database was away");
                    }
                }
                self.sessions.recheck_all().await;
                if let Err(e) = self.sweep_dead().await {
                    tracing::warn!(error = %e, "cannot end dead nodes' sessions");
                }
            }
            Err(e) => {
                let silent = now_ms() - self.last_ok.load(Ordering::Acquire);
                tracing::warn!(error = %e, silent_ms = silent, "heartbeat failed: the database cannot be reached");
                if silent > self.cfg.max_staleness.as_secs() as i64 * 1000
                    && !self.stale.swap(true, Ordering::AcqRel)
                {
                    let n = self.sessions.terminate_all(
                        Cause::Stale,
                        "session terminated: the gateway lost its database and cannot check your grant",
                    );
                    tracing::error!(node = %self.node, sessions = n, "no database for longer than max_staleness: admissions refused, live sessions cut");
                }
            }
        }
    }

    async fn write_heartbeat(&self) -> Result<(), StoreError> {
        let released = self.row.lock().await;
        if *released {
            return Ok(());
        }
        let c = self.pg.client().await?;
        let live = self.sessions.live().len() as i64;
        c.execute(
            "INSERT INTO nodes (name, started_at, last_heartbeat, live_sessions, instance)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (name) DO UPDATE SET last_heartbeat = $3, live_sessions = $4,
                 started_at = $2, instance = $5",
            &[
                &self.node,
                &self.started_at,
                &now_ms(),
                &live,
                &self.instance,
            ],
        )
        .await
        .map_err(|e| StoreError::Unreachable(e.to_string()))?;
        Ok(())
    }

    /// End the live sessions of nodes silent for longer than `dead_after` (one node at a
    /// time does it, under an advisory lock).
    async fn sweep_dead(&self) -> Result<(), StoreError> {
        let c = self.pg.client().await?;
        let cutoff = now_ms() - self.cfg.dead_after.as_secs() as i64 * 1000;
        let rows = c
            .query(
                "SELECT DISTINCT s.node FROM sessions s JOIN nodes n ON n.name = s.node
                 WHERE s.ended_at IS NULL AND n.last_heartbeat < $1 AND n.name <> $2",
                &[&cutoff, &self.node],
            )
            .await
            .map_err(|e| StoreError::Db(e.to_string()))?;
        if rows.is_empty() {
            return Ok(());
        }
        let locked: bool = c
            .query_one("SELECT pg_try_advisory_lock($1)", &[&DEAD_SWEEP_LOCK])
            .await
            .map_err(|e| StoreError::Db(e.to_string()))?
            .get(0);
        if !locked {
            return Ok(());
        }
        let mut result = Ok(());
        for r in rows {
            let dead: String = r.get(0);
            tracing::warn!(node = %dead, "node silent for longer than dead_after: ending its sessions");
            let reason = format!(
                "gateway node {dead} stopped answering; its sessions were ended by {}",
                self.node
            );
            if let Err(e) = self
                .sessions
                .close_orphans(Some(&dead), "node-lost", &reason)
                .await
            {
                result = Err(e);
                break;
            }
        }
        let _ = c
            .execute("SELECT pg_advisory_unlock($1)", &[&DEAD_SWEEP_LOCK])
            .await;
        result
    }

    /// Run `work` unless another node runs work under `key` now (an advisory lock held on one
    /// connection while it runs): `None` when another node does, or the database cannot say.
    pub async fn exclusive<T>(&self, key: i64, work: impl Future<Output = T>) -> Option<T> {
        let c = self.pg.client().await.ok()?;
        let got: bool = c
            .query_one("SELECT pg_try_advisory_lock($1)", &[&key])
            .await
            .ok()?
            .get(0);
        if !got {
            return None;
        }
        let out = work.await;
        let _ = c.execute("SELECT pg_advisory_unlock($1)", &[&key]).await;
        Some(out)
    }

    /// Send a kill for `session`, which node `to` serves.
    pub async fn kill_elsewhere(
        &self,
        to: &str,
        session: &SessionId,
        reason: &str,
    ) -> Result<(), StoreError> {
        notify(
            &self.pg,
            &Notice::Kill {
                node: self.node.clone(),
                to: to.to_string(),
                session: session.clone(),
                reason: clip(reason),
                at_ms: now_ms(),
            },
        )
        .await
    }

    /// Every node the database knows.
    pub async fn nodes(&self) -> Result<Vec<NodeView>, StoreError> {
        let c = self.pg.client().await?;
        let rows = c
            .query(
                "SELECT n.name, n.started_at, n.last_heartbeat,
                     (SELECT count(*) FROM sessions s WHERE s.node = n.name AND s.ended_at IS NULL)
                 FROM nodes n ORDER BY n.name",
                &[],
            )
            .await
            .map_err(|e| StoreError::Db(e.to_string()))?;
        let cutoff = now_ms() - self.cfg.dead_after.as_secs() as i64 * 1000;
        Ok(rows
            .iter()
            .map(|r| {
                let beat: i64 = r.get(2);
                NodeView {
                    name: r.get(0),
                    alive: beat >= cutoff,
                    last_heartbeat: crate::types::rfc3339_millis(
                        time::OffsetDateTime::from_unix_timestamp_nanos(
                            i128::from(beat) * 1_000_000,
                        )
                        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH),
                    ),
                    live_sessions: r.get(3),
                    started_at: crate::audit::at(r.get(1)),
                }
            })
            .collect())
    }
}

/// The admission check of a node among several: refused while the node cannot check grants.
pub struct ClusterAdmit {
    pub inner: Arc<dyn crate::gateway::Admit>,
    pub cluster: Arc<Cluster>,
}

#[async_trait::async_trait]
impl crate::gateway::Admit for ClusterAdmit {
    async fn admit(&self, request: AdmitRequest<'_>) -> Result<Admission, AdmissionDenied> {
        if let Some(message) = self.cluster.refusal() {
            return Err(AdmissionDenied {
                message,
                grant: None,
            });
        }
        self.inner.admit(request).await
    }
}
