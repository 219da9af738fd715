//! A gateway's hold on a live session ([`SessionGuard`], one per session, whose drop ends it)
//! and the view its other tasks get ([`SessionHandle`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::{Cause, Ending, FileInfo, Live, Registry, SessionEvent};
use crate::types::SessionId;

/// A gateway's hold on one live session; one per session, owned by the task that serves it.
/// Dropping it ends the session: whatever path leaves a session (an error return, a panic, a
/// cancelled task), its end is recorded exactly once, with the reason given earlier or, where
/// none was, as an error. [`SessionGuard::close`] is the orderly way out. What the session's
/// other tasks (channel pumps, response bodies) need is a [`SessionHandle`], reached through
/// this guard.
pub struct SessionGuard {
    handle: SessionHandle,
}

/// A view of a live session for the tasks that serve it: its id, folder, cancellation, and the
/// counts and files it records. Holding one does not keep the session open.
#[derive(Clone)]
pub struct SessionHandle {
    id: SessionId,
    live: Arc<Live>,
    registry: Arc<Registry>,
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        let SessionHandle { id, live, registry } = &self.handle;
        if *live.finished.lock().expect("finished lock") {
            return;
        }
        // The first reason wins: a session already ending keeps its own.
        registry.terminate(
            id,
            Cause::Error,
            "the gateway stopped serving the session",
            Instant::now(),
        );
        let (registry, live) = (registry.clone(), live.clone());
        if tokio::runtime::Handle::try_current().is_ok() {
            self.handle
                .registry
                .tracker
                .spawn(async move { registry.finish(&live).await });
        }
    }
}

impl std::ops::Deref for SessionGuard {
    type Target = SessionHandle;

    fn deref(&self) -> &SessionHandle {
        &self.handle
    }
}

impl std::fmt::Debug for SessionGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SessionGuard({})", self.handle.id)
    }
}

impl std::fmt::Debug for SessionHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SessionHandle({})", self.id)
    }
}

impl SessionGuard {
    pub(super) fn new(id: SessionId, live: Arc<Live>, registry: Arc<Registry>) -> Self {
        Self {
            handle: SessionHandle { id, live, registry },
        }
    }

    /// A handle for the session's other tasks.
    pub fn handle(&self) -> SessionHandle {
        self.handle.clone()
    }

    /// What the client socket's close mark calls when the gateway closes that socket: the
    /// session's cut has landed, so end records held back for it may go ahead.
    pub fn on_client_closed(&self) -> impl FnOnce() + Send + 'static {
        let live = self.handle.live.clone();
        let registry = self.handle.registry.clone();
        move || registry.cut_landed(&live)
    }

    /// The client's socket closed at `at` (for a cut, the end of its kill latency; `None`:
    /// now), with the recordings finished: the end is recorded (cause `client` unless the
    /// session was ending already) before this returns.
    pub async fn close(&self, at: Option<Instant>) {
        let SessionHandle { id, live, registry } = self.handle.clone();
        *live.closed_at.lock().expect("closed lock") = Some(at.unwrap_or_else(Instant::now));
        registry.cut_landed(&live);
        let has_ending = live.ending.lock().expect("ending lock").is_some();
        if !has_ending {
            registry.terminate(
                &id,
                Cause::Client,
                "the client disconnected",
                Instant::now(),
            );
        }
        live.closed.notify_waiters();
        // Wait for the record so callers (and tests) see a finished session; the drop that
        // follows finds it finished.
        registry.finish(&live).await;
    }
}

impl SessionHandle {
    /// The session id.
    pub fn id(&self) -> &SessionId {
        &self.id
    }

    /// The recording folder.
    pub fn dir(&self) -> &std::path::Path {
        &self.live.dir
    }

    /// Cancelled when the session must end.
    pub fn token(&self) -> CancellationToken {
        self.live.cancel.clone()
    }

    /// Why the session is ending, once it is.
    pub fn ending(&self) -> Option<Ending> {
        self.live.ending.lock().expect("ending lock").clone()
    }

    /// Why the session is ending, as shown to the technician.
    pub fn ending_reason(&self) -> String {
        self.ending()
            .map(|e| e.reason)
            .unwrap_or_else(|| "session ended".into())
    }

    /// Receives the expiry warning text when it is due.
    pub fn warnings(&self) -> watch::Receiver<Option<String>> {
        self.live.warning.subscribe()
    }

    /// Register a recording file (digests are computed from disk at the end).
    pub fn add_file(&self, f: FileInfo) {
        let mut files = self.live.files.lock().expect("files lock");
        // Exactly: a session has one file per recorded channel, usually one.
        files.reserve_exact(1);
        files.push(f);
    }

    /// Attach the recorder's summary (byte counts, binary) to a registered file.
    pub fn file_finished(&self, summary: crate::recording::CastSummary) {
        let mut files = self.live.files.lock().expect("files lock");
        if let Some(f) = files.iter_mut().find(|f| f.name == summary.file) {
            f.summary = Some(summary);
        }
    }

    /// Note an event for `session.json`.
    pub fn add_event(&self, event: SessionEvent) {
        let v = serde_json::to_value(&event).expect("session events serialize");
        self.live.events.lock().expect("events lock").push(v);
    }

    /// Count bytes moved (client → target, target → client).
    pub fn add_bytes(&self, to_target: u64, to_client: u64) {
        let mut r = self.live.record.lock().expect("record lock");
        r.bytes_in += to_target;
        r.bytes_out += to_client;
    }

    /// End the session from inside (client left, target closed, recording failed); the first
    /// reason wins, so a cut already under way keeps its reason.
    pub fn end(&self, cause: Cause, reason: &str) {
        self.registry
            .terminate(&self.id, cause, reason, Instant::now());
    }

    /// Until no session's cut is pending, or `max` has passed: end-of-session file work
    /// (a recording's final fsync) goes after closing sockets.
    pub async fn after_pending_cuts(&self, max: Duration) {
        self.registry.cuts.landed(max).await;
    }
}
