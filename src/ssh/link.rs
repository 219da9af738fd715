//! What an admitted connection's channel pumps share: the session, the admission, the client's
//! handle, the target leg as the connection's task publishes it, and how a cut disconnects both
//! sides. The connection's task owns the state; a [`Link`] is its read-mostly view for pumps.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use russh::server;
use russh::{ChannelId, Sig};
use tokio::sync::watch;
use tokio_util::task::TaskTracker;

use super::timing;
use super::upstream::{Upstream, UpstreamError};
use crate::grant::Admission;
use crate::net::killable::CloseMark;
use crate::session::SessionHandle;

/// The client's connection, as the connection's task and its pumps use it.
#[async_trait::async_trait]
pub(super) trait Client: Send + Sync + 'static {
    /// Queue a disconnect with `reason` (the client prints it).
    async fn disconnect(&self, reason: String);
    /// Pass on a target's exit signal for `channel`.
    async fn exit_signal(
        &self,
        channel: ChannelId,
        signal: Sig,
        core_dumped: bool,
        message: String,
    );
}

#[async_trait::async_trait]
impl Client for server::Handle {
    async fn disconnect(&self, reason: String) {
        let _ =
            server::Handle::disconnect(self, russh::Disconnect::ByApplication, reason, "en".into())
                .await;
    }

    async fn exit_signal(
        &self,
        channel: ChannelId,
        signal: Sig,
        core_dumped: bool,
        message: String,
    ) {
        let _ = self
            .exit_signal_request(channel, signal, core_dumped, message, "en".into())
            .await;
    }
}

/// Where the target leg is.
#[derive(Debug, Clone)]
pub(super) enum Target {
    /// Connecting, exchanging keys and authenticating with the session's certificate.
    Connecting,
    Ready(Arc<Upstream>),
    /// The reason reaches every channel waiting for the target, and every later one.
    Failed(UpstreamError),
}

/// What every channel pump of an admitted connection shares.
pub(super) struct Link {
    pub session: SessionHandle,
    pub admission: Admission,
    pub client: Arc<dyn Client>,
    /// Whether shells and commands are recorded (`gateway.record_terminal`; break-glass always).
    pub record_terminal: bool,
    target: watch::Receiver<Target>,
    /// The channel pumps.
    pub pumps: TaskTracker,
    /// Held by each session-channel pump until its cut notice and channel closes are queued.
    pub notices: TaskTracker,
    /// Set once a cut's disconnect of the client is queued.
    client_disconnected: AtomicBool,
    /// Set once a cut's disconnect of the target is under way.
    target_disconnected: AtomicBool,
    /// When the gateway closed the client's socket: a cut disconnects the target after it.
    client_closed: CloseMark,
    next_file: AtomicU32,
}

impl Link {
    pub fn new(
        session: SessionHandle,
        admission: Admission,
        client: Arc<dyn Client>,
        record_terminal: bool,
        target: watch::Receiver<Target>,
        client_closed: CloseMark,
    ) -> Self {
        Self {
            session,
            admission,
            client,
            record_terminal,
            target,
            pumps: TaskTracker::new(),
            notices: TaskTracker::new(),
            client_disconnected: AtomicBool::new(false),
            target_disconnected: AtomicBool::new(false),
            client_closed,
            next_file: AtomicU32::new(1),
        }
    }

    /// The target connection once the connection's task has it, or why it could not be had.
    pub async fn target(&self) -> Result<Arc<Upstream>, UpstreamError> {
        let mut rx = self.target.clone();
        let settled = rx
            .wait_for(|t| !matches!(t, Target::Connecting))
            .await
            .map(|t| t.clone());
        match settled {
            Ok(Target::Ready(up)) => Ok(up),
            Ok(Target::Failed(e)) => Err(e),
            // The connection's task is gone: the session is over.
            Ok(Target::Connecting) | Err(_) => Err(UpstreamError::Gone),
        }
    }

    /// The number of the next recording file (`1.cast`, `2.cast`, ...).
    pub fn next_file(&self) -> u32 {
        self.next_file.fetch_add(1, Ordering::Relaxed)
    }

    /// Disconnect the target, if connected (processes there get SIGHUP).
    pub async fn disconnect_target(&self, reason: &str) {
        let up = match &*self.target.borrow() {
            Target::Ready(up) => up.clone(),
            _ => return,
        };
        let _ = up
            .handle
            .disconnect(
                russh::Disconnect::ByApplication,
                &format!("jitgate: {reason}"),
                "en",
            )
            .await;
    }

    /// A cut's last step: the client's disconnect with the reason, then the target's once the
    /// client's socket is closed and no other session's cut is pending.
    ///
    /// The clients go first: a client's socket is the technician's access, and when a ticket
    /// close cuts hundreds of sessions at once, the target legs' work (each disconnect, the
    /// target's replies, the close, the freeing of the session's keys) would otherwise run
    /// among the cuts and hold back the last clients' sockets. A target leg carries nothing
    /// meanwhile: the pumps stopped before this is called.
    pub async fn disconnect_both(&self, reason: &str) {
        self.disconnect_client(reason).await;
        self.disconnect_target_after_client(reason).await;
    }

    /// Queue the client's disconnect with the reason (the client prints it), once; nothing
    /// waits for the client longer than [`timing::PEER_WRITE`].
    pub async fn disconnect_client(&self, reason: &str) {
        if self.client_disconnected.swap(true, Ordering::AcqRel) {
            return;
        }
        let _ = tokio::time::timeout(
            timing::PEER_WRITE,
            self.client
                .disconnect(format!("[jitgate] session terminated: {reason}")),
        )
        .await;
    }

    /// Disconnect the target once the client's socket is closed and no other session's cut
    /// is pending, waiting at most [`timing::PEER_WRITE`] for each; once.
    pub async fn disconnect_target_after_client(&self, reason: &str) {
        if self.target_disconnected.swap(true, Ordering::AcqRel) {
            return;
        }
        let _ = tokio::time::timeout(timing::PEER_WRITE, self.client_closed.closed()).await;
        self.session.after_pending_cuts(timing::PEER_WRITE).await;
        let _ = tokio::time::timeout(timing::PEER_WRITE, self.disconnect_target(reason)).await;
    }
}
