//! The registry of live gateway sessions. Each session has a cancellation token (a child of the
//! gateway's root token); the registry cancels it when the grant is revoked, expires or
//! completes, when the ticket closes, or on `jitgate kill`, and it is the registry — not the
//! session loop — that records the end: store, `session.json`, `session.ended` audit event and
//! the kill-latency histogram.

mod cuts;
mod finish;
mod guard;
#[cfg(test)]
mod tests;

use cuts::Cuts;
pub use guard::{SessionGuard, SessionHandle};

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::audit::{AuditEvent, Log};
use crate::config::TargetKind;
use crate::grant::{Admission, GrantBus, GrantEventKind, Revoker};
use crate::metrics::Metrics;
use crate::store::{SessionRecord, Store};
use crate::types::{GrantId, SessionId};

/// How long the registry waits for a cut session to close its client socket before recording
/// the end anyway.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// The longest a session's end record waits for other sessions' cuts to land (see [`Cuts`]).
const CUTS_FIRST_MAX: Duration = Duration::from_secs(2);

/// Why a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    Expired,
    Revoked,
    Completed,
    Ticket,
    /// The ticket's system could not confirm the ticket within its grace period.
    TicketUnverifiable,
    Killed,
    Client,
    Target,
    Recording,
    Shutdown,
    Error,
    /// This node could not reach the shared database for longer than `cluster.max_staleness`.
    Stale,
}

impl Cause {
    /// Machine name stored and audited.
    pub fn as_str(self) -> &'static str {
        match self {
            Cause::Expired => "expired",
            Cause::Revoked => "revoked",
            Cause::Completed => "completed",
            Cause::Ticket => "ticket",
            Cause::TicketUnverifiable => "ticket-unverifiable",
            Cause::Killed => "killed",
            Cause::Client => "client",
            Cause::Target => "target",
            Cause::Recording => "recording",
            Cause::Shutdown => "shutdown",
            Cause::Error => "error",
            Cause::Stale => "stale",
        }
    }

    /// Whether the gateway cut the session (so kill latency applies).
    pub fn is_cut(self) -> bool {
        !matches!(self, Cause::Client | Cause::Target)
    }
}

/// The first reason a session was ended for.
#[derive(Debug, Clone)]
pub struct Ending {
    pub cause: Cause,
    pub reason: String,
    pub trigger: Instant,
}

/// A file a session records, registered when it is opened.
#[derive(Debug, Clone)]
pub struct FileInfo {
    pub name: String,
    pub channel: u32,
    pub kind: String,
    pub command: Option<String>,
    /// What the recorder counted, once the file is finished.
    pub summary: Option<crate::recording::CastSummary>,
}

pub(crate) struct Live {
    record: Mutex<SessionRecord>,
    cancel: CancellationToken,
    ending: Mutex<Option<Ending>>,
    closed: Notify,
    closed_at: Mutex<Option<Instant>>,
    /// Set by the one [`Registry::finish`] call that records the end.
    finished: Mutex<bool>,
    /// True once that call has recorded it: the others wait for this.
    recorded: watch::Sender<bool>,
    warning: watch::Sender<Option<String>>,
    /// Counted in [`Registry::cuts`]: cut, and the client's socket is not closed yet.
    cut_pending: AtomicBool,
    files: Mutex<Vec<FileInfo>>,
    events: Mutex<Vec<serde_json::Value>>,
    dir: PathBuf,
    started: Instant,
}

/// Live sessions by id, with their grants.
pub struct Registry {
    live: Mutex<HashMap<SessionId, Arc<Live>>>,
    cuts: Cuts,
    root: CancellationToken,
    store: Arc<dyn Store>,
    audit: Arc<Log>,
    metrics: Arc<Metrics>,
    recordings: PathBuf,
    expiry_warning: Duration,
    tracker: TaskTracker,
    /// This node's name, when several nodes share the database.
    node: std::sync::OnceLock<String>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry").finish_non_exhaustive()
    }
}

/// Errors opening a session.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error(
        "cannot create the recording folder {0}: {1}; the session is refused because it could not be recorded"
    )]
    Recording(PathBuf, std::io::Error),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Audit(#[from] crate::audit::AuditError),
    #[error("the gateway is shutting down")]
    ShuttingDown,
}

/// What a gateway knows about a new session.
#[derive(Debug, Clone)]
pub struct NewSession {
    pub protocol: TargetKind,
    pub source: String,
}

/// Something that happened in a session, kept in `session.json`'s `events`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum SessionEvent {
    /// An SFTP channel closed, with what it moved.
    Sftp {
        channel: u32,
        bytes_to_target: u64,
        bytes_to_client: u64,
        at: String,
    },
    /// A port forward (`ssh -L`, `ssh -W`) to the target closed, with what it moved.
    PortForward {
        host: String,
        port: u32,
        bytes_to_target: u64,
        bytes_to_client: u64,
        at: String,
    },
    /// A port forward to somewhere other than the target was refused.
    PortForwardRefused { host: String, port: u32, at: String },
}

impl Registry {
    /// A registry recording into `recordings`, cancelling from `root`.
    pub fn new(
        root: CancellationToken,
        store: Arc<dyn Store>,
        audit: Arc<Log>,
        metrics: Arc<Metrics>,
        recordings: PathBuf,
        expiry_warning: Duration,
    ) -> Arc<Self> {
        Arc::new(Self {
            live: Mutex::new(HashMap::new()),
            cuts: Cuts::default(),
            root,
            store,
            audit,
            metrics,
            recordings,
            expiry_warning,
            tracker: TaskTracker::new(),
            node: std::sync::OnceLock::new(),
        })
    }

    /// Name this node in every session it opens from now on (several nodes on one database).
    pub fn set_node(&self, name: String) {
        let _ = self.node.set(name);
    }

    /// This node's name, when set.
    pub fn node(&self) -> Option<&str> {
        self.node.get().map(String::as_str)
    }

    /// Cut sessions when their grants end. Runs until the root token is cancelled.
    pub fn watch_grants(self: &Arc<Self>, bus: &dyn GrantBus) {
        let mut rx = bus.subscribe();
        let me = self.clone();
        self.tracker.spawn(async move {
            loop {
                let ev = tokio::select! {
                    _ = me.root.cancelled() => break,
                    ev = rx.recv() => ev,
                };
                match ev {
                    Ok(ev) => {
                        let cause = match ev.kind {
                            GrantEventKind::Issued => continue,
                            GrantEventKind::Expired => Cause::Expired,
                            GrantEventKind::Completed => Cause::Completed,
                            GrantEventKind::Revoked(Revoker::Ticket) => Cause::Ticket,
                            GrantEventKind::Revoked(Revoker::Unverifiable) => {
                                Cause::TicketUnverifiable
                            }
                            GrantEventKind::Revoked(Revoker::Person) => Cause::Revoked,
                        };
                        let reason = match ev.kind {
                            GrantEventKind::Expired => format!("grant {} expired", ev.grant),
                            GrantEventKind::Completed => {
                                format!("grant {} completed by its requester", ev.grant)
                            }
                            _ => ev.reason.clone(),
                        };
                        me.terminate_grant(&ev.grant, cause, &reason, ev.at);
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        // Missed events: re-check every live session's grant against the store.
                        tracing::warn!(
                            missed = n,
                            "session registry lagged behind grant events; re-checking live sessions"
                        );
                        me.recheck_all().await;
                    }
                    Err(_) => break,
                }
            }
        });
    }

    /// The ids of the live sessions.
    fn live_ids(&self) -> Vec<SessionId> {
        self.live
            .lock()
            .expect("registry lock")
            .keys()
            .cloned()
            .collect()
    }

    /// Cut every live session (this node lost what it checks grants against).
    pub fn terminate_all(self: &Arc<Self>, cause: Cause, reason: &str) -> usize {
        let ids = self.live_ids();
        let at = Instant::now();
        if !ids.is_empty() {
            // One line for all: a ticket close can cut hundreds of sessions, and each line is a
            // write before the next session's cut begins. Each session's end is logged with
            // its cause once its socket is closed.
            tracing::info!(sessions = ids.len(), cause = cause.as_str(), %reason, "terminating every live session");
        }
        for id in &ids {
            self.end_live(id, cause, reason, at, false);
        }
        ids.len()
    }

    /// Re-read every live session's grant and cut those the store shows ended.
    pub async fn recheck_all(self: &Arc<Self>) {
        let lives: Vec<Arc<Live>> = self
            .live
            .lock()
            .expect("registry lock")
            .values()
            .cloned()
            .collect();
        for l in lives {
            let grant = l.record.lock().expect("record lock").grant.clone();
            match self.store.grant(&grant).await {
                Ok(Some(g)) if g.state == crate::store::GrantState::Active => {}
                Ok(g) => {
                    let by_ticket = g
                        .as_ref()
                        .and_then(|g| g.ended_by.as_deref())
                        .is_some_and(|b| b.starts_with("ticket:"));
                    let cause = match g.as_ref().map(|g| g.state) {
                        Some(crate::store::GrantState::Expired) => Cause::Expired,
                        Some(crate::store::GrantState::Completed) => Cause::Completed,
                        _ if by_ticket => Cause::Ticket,
                        _ => Cause::Revoked,
                    };
                    let reason = g
                        .and_then(|g| g.end_reason)
                        .unwrap_or_else(|| "grant is no longer active".into());
                    self.terminate_grant(&grant, cause, &reason, Instant::now());
                }
                Err(e) => tracing::error!(error = %e, "cannot re-check a grant"),
            }
        }
    }

    /// Start a session for an admission: recording folder, store, `session.started`, expiry and
    /// warning timers.
    pub async fn open(
        self: &Arc<Self>,
        admission: &Admission,
        new: NewSession,
    ) -> Result<SessionGuard, SessionError> {
        if self.root.is_cancelled() {
            return Err(SessionError::ShuttingDown);
        }
        let id = SessionId::generate();
        let started = time::OffsetDateTime::now_utc();
        let dir = crate::recording::session_dir(&self.recordings, &id, started)
            .map_err(|e| SessionError::Recording(self.recordings.clone(), e))?;
        let user = admission.user();
        let record = SessionRecord {
            id: id.clone(),
            protocol: new.protocol.as_str().into(),
            user: user.name.clone(),
            vendor: user.vendor.clone(),
            grant: admission.grant().clone(),
            request: admission.request().clone(),
            kind: admission.kind(),
            ticket: admission.ticket().clone(),
            task: admission.task().name.clone(),
            target: admission.target().name.clone(),
            principal: admission.principal().map(str::to_string),
            approvers: admission.approvers().to_vec(),
            source: new.source.clone(),
            started_at: started.unix_timestamp(),
            expires_at: admission.expires_at(),
            ended_at: None,
            end_cause: None,
            end_reason: None,
            kill_latency_ms: None,
            dir: dir.display().to_string(),
            files: Vec::new(),
            bytes_in: 0,
            bytes_out: 0,
            node: self.node.get().cloned(),
        };
        let live = Arc::new(Live {
            record: Mutex::new(record.clone()),
            cancel: self.root.child_token(),
            ending: Mutex::new(None),
            closed: Notify::new(),
            closed_at: Mutex::new(None),
            finished: Mutex::new(false),
            recorded: watch::channel(false).0,
            warning: watch::channel(None).0,
            cut_pending: AtomicBool::new(false),
            files: Mutex::new(Vec::new()),
            events: Mutex::new(Vec::new()),
            dir,
            started: Instant::now(),
        });
        let l = live.clone();
        tokio::task::spawn_blocking(move || finish::write_manifest(&l, None))
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())))
            .map_err(|e| SessionError::Recording(live.dir.clone(), e))?;
        self.store.put_session(&record).await?;
        self.audit
            .record(
                user.name.as_str(),
                AuditEvent::SessionStarted {
                    session: id.clone(),
                    grant: record.grant.clone(),
                    request: record.request.clone(),
                    protocol: new.protocol,
                    user: record.user.clone(),
                    vendor: record.vendor.clone(),
                    task: record.task.clone(),
                    target: record.target.clone(),
                    ticket: record.ticket.clone(),
                    principal: record.principal.clone(),
                    source: record.source.clone(),
                },
            )
            .await?;
        self.live
            .lock()
            .expect("registry lock")
            .insert(id.clone(), live.clone());
        self.spawn_timers(&live, admission.expires_at());
        // The grant may have ended between admission and now.
        if let Ok(Some(g)) = self.store.grant(admission.grant()).await
            && g.state != crate::store::GrantState::Active
        {
            self.terminate(
                &id,
                Cause::Revoked,
                &format!("grant {} is {}", g.id, g.state.as_str()),
                Instant::now(),
            );
        }
        tracing::info!(session = %id, grant = %record.grant, user = %record.user, target = %record.target, "session started");
        Ok(SessionGuard::new(id, live, self.clone()))
    }

    fn spawn_timers(self: &Arc<Self>, live: &Arc<Live>, expires_at: i64) {
        let me = self.clone();
        let live = live.clone();
        let warning = self.expiry_warning;
        self.tracker.spawn(async move {
            // To the millisecond: the grant ends at `expires_at` exactly.
            let end = std::time::UNIX_EPOCH + Duration::from_secs(expires_at.max(0) as u64);
            let left = end
                .duration_since(std::time::SystemTime::now())
                .unwrap_or(Duration::ZERO);
            let deadline = tokio::time::Instant::now() + left;
            let id = live.record.lock().expect("record lock").id.clone();
            if left > warning && !warning.is_zero() {
                tokio::select! {
                    _ = live.cancel.cancelled() => return,
                    _ = tokio::time::sleep_until(deadline - warning) => {
                        let msg = format!(
                            "grant expires in {} s; finish up or ask for a new grant",
                            warning.as_secs()
                        );
                        let _ = live.warning.send(Some(msg));
                    }
                }
            }
            tokio::select! {
                _ = live.cancel.cancelled() => {}
                _ = tokio::time::sleep_until(deadline) => {
                    let grant = live.record.lock().expect("record lock").grant.clone();
                    me.terminate(&id, Cause::Expired, &format!("grant {grant} expired"), Instant::now());
                }
            }
        });
    }

    /// Cut every live session of `grant`.
    pub fn terminate_grant(
        self: &Arc<Self>,
        grant: &GrantId,
        cause: Cause,
        reason: &str,
        at: Instant,
    ) -> usize {
        let ids: Vec<SessionId> = self
            .live
            .lock()
            .expect("registry lock")
            .iter()
            .filter(|(_, l)| &l.record.lock().expect("record lock").grant == grant)
            .map(|(id, _)| id.clone())
            .collect();
        if !ids.is_empty() {
            // One line for all, as in `terminate_all`.
            tracing::info!(%grant, sessions = ids.len(), cause = cause.as_str(), %reason, "terminating the grant's sessions");
        }
        for id in &ids {
            self.end_live(id, cause, reason, at, false);
        }
        ids.len()
    }

    /// Cut one session; the first reason wins. Returns whether the session was live.
    pub fn terminate(
        self: &Arc<Self>,
        id: &SessionId,
        cause: Cause,
        reason: &str,
        at: Instant,
    ) -> bool {
        self.end_live(id, cause, reason, at, true)
    }

    /// [`Self::terminate`], with its log line or without it (a grant's cut logs once).
    fn end_live(
        self: &Arc<Self>,
        id: &SessionId,
        cause: Cause,
        reason: &str,
        at: Instant,
        log: bool,
    ) -> bool {
        let Some(live) = self.live.lock().expect("registry lock").get(id).cloned() else {
            return false;
        };
        {
            let mut ending = live.ending.lock().expect("ending lock");
            if ending.is_some() {
                return true;
            }
            *ending = Some(Ending {
                cause,
                reason: reason.to_string(),
                trigger: at,
            });
        }
        if log {
            tracing::info!(session = %id, cause = cause.as_str(), %reason, "terminating session");
        }
        if cause.is_cut()
            && live.closed_at.lock().expect("closed lock").is_none()
            && !live.cut_pending.swap(true, Ordering::AcqRel)
        {
            self.cuts.begin();
        }
        live.cancel.cancel();
        let me = self.clone();
        // The end record's work is boxed: a ticket close spawns this for every session it
        // cuts, and each then holds only the wait until its end is recorded.
        self.tracker.spawn(async move {
            let closed = live.closed.notified();
            if live.closed_at.lock().expect("closed lock").is_none() {
                let _ = tokio::time::timeout(CLOSE_GRACE, closed).await;
            }
            Box::pin(me.finish(&live)).await;
        });
        true
    }

    /// `live`'s client socket is closed (or its end is being recorded): its cut, if any, has
    /// landed.
    fn cut_landed(&self, live: &Live) {
        if live.cut_pending.swap(false, Ordering::AcqRel) {
            self.cuts.end();
        }
    }

    /// Live sessions.
    pub fn live(&self) -> Vec<SessionRecord> {
        self.live
            .lock()
            .expect("registry lock")
            .values()
            .map(|l| l.record.lock().expect("record lock").clone())
            .collect()
    }

    /// Cancel every session (gateway shutdown) and wait up to `grace` for their ends to be
    /// recorded.
    pub async fn shutdown(self: &Arc<Self>, grace: Duration) {
        let ids = self.live_ids();
        for id in ids {
            self.terminate(
                &id,
                Cause::Shutdown,
                "the gateway is shutting down",
                Instant::now(),
            );
        }
        // Every live session has its reason now; stop the grant watcher and the timers.
        self.root.cancel();
        self.tracker.close();
        let _ = tokio::time::timeout(grace, self.tracker.wait()).await;
    }
}
