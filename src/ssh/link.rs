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
    /// Set once a cut's disconnects are queued.
    disconnected: AtomicBool,
    next_file: AtomicU32,
}

impl Link {
    pub fn new(
        session: SessionHandle,
        admission: Admission,
        client: Arc<dyn Client>,
        record_terminal: bool,
        target: watch::Receiver<Target>,
    ) -> Self {
        Self {
            session,
            admission,
            client,
            record_terminal,
            target,
            pumps: TaskTracker::new(),
            notices: TaskTracker::new(),
            disconnected: AtomicBool::new(false),
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

    /// A cut's last step, once: the target's disconnect, then the client's with the reason.
    /// Queued only; nothing waits for the peers longer than [`timing::PEER_WRITE`] each.
    pub async fn disconnect_both(&self, reason: &str) {
        if self.disconnected.swap(true, Ordering::AcqRel) {
            return;
        }
        let _ = tokio::time::timeout(timing::PEER_WRITE, self.disconnect_target(reason)).await;
        let _ = tokio::time::timeout(
            timing::PEER_WRITE,
            self.client
                .disconnect(format!("[jitgate] session terminated: {reason}")),
        )
        .await;
    }
}
