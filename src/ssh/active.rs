//! An admitted SSH connection: its session, its target connection (opened once, on first use)
//! and the client's handle, and how a cut disconnects both sides.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use russh::server;
use tokio::sync::OnceCell;
use tokio_util::task::TaskTracker;

use super::server::Gateway;
use super::upstream::{self, Upstream, UpstreamError};
use crate::config::Allow;
use crate::grant::Admission;
use crate::pki::SshCertSpec;
use crate::session::SessionGuard;

/// An admitted connection: its session and its target connection.
pub(crate) struct Active {
    pub(crate) guard: SessionGuard,
    pub(crate) admission: Admission,
    upstream: OnceCell<Result<Arc<Upstream>, UpstreamError>>,
    pub(crate) gw: Arc<Gateway>,
    pub(crate) pumps: TaskTracker,
    /// Held by each session-channel pump until its cut notice and channel closes are queued.
    pub(crate) notices: TaskTracker,
    /// Set once a cut's disconnects are queued.
    disconnected: AtomicBool,
    pub(crate) next_file: std::sync::atomic::AtomicU32,
    client: OnceLock<server::Handle>,
}

impl Active {
    pub(crate) fn new(guard: SessionGuard, admission: Admission, gw: Arc<Gateway>) -> Self {
        Self {
            guard,
            admission,
            upstream: OnceCell::new(),
            gw,
            pumps: TaskTracker::new(),
            notices: TaskTracker::new(),
            disconnected: AtomicBool::new(false),
            next_file: std::sync::atomic::AtomicU32::new(1),
            client: OnceLock::new(),
        }
    }

    /// Note the client connection's handle (the first one set stays).
    pub(crate) fn set_client(&self, handle: server::Handle) {
        let _ = self.client.set(handle);
    }

    /// The client connection's handle (set once authenticated).
    pub(crate) fn client_handle(&self) -> &server::Handle {
        self.client.get().expect("set when authentication succeeds")
    }

    /// The target connection, connecting on first use.
    pub(crate) async fn upstream(&self) -> Result<Arc<Upstream>, UpstreamError> {
        self.upstream
            .get_or_init(|| async {
                // Boxed: the connect future is large and needed once, while every pump that
                // awaits `upstream()` would otherwise carry its space for the session's life.
                let r = Box::pin(self.connect_upstream()).await;
                if let Err(e) = &r {
                    tracing::warn!(session = %self.guard.id(), error = %e, "target connection failed");
                    if matches!(e, UpstreamError::HostKey { .. }) {
                        let _ = self
                            .gw
                            .grants
                            .audit()
                            .record(
                                "system",
                                crate::audit::AuditEvent::TargetRefused {
                                    session: self.guard.id().clone(),
                                    target: self.admission.target().name.clone(),
                                    reason: e.to_string(),
                                },
                            )
                            .await;
                    }
                }
                r.map(Arc::new)
            })
            .await
            .clone()
    }

    async fn connect_upstream(&self) -> Result<Upstream, UpstreamError> {
        let a = &self.admission;
        let principal = a.principal().unwrap_or_default().to_string();
        let mut key_id = format!(
            "jitgate session={} grant={} user={} ticket={}",
            self.guard.id(),
            a.grant(),
            a.user().name,
            a.ticket()
        );
        if let Some(v) = &a.user().vendor {
            key_id.push_str(&format!(" vendor={v}"));
        }
        let task = a.task();
        let cert = self
            .gw
            .keys
            .mint_ssh_cert(&SshCertSpec {
                principal: &principal,
                key_id,
                valid_before: a.expires_at().max(0) as u64,
                permit_pty: task.allow.contains(&Allow::Pty),
                permit_port_forwarding: task.allow.contains(&Allow::PortForward),
                force_command: task.force_command.as_deref(),
                source_address: task.source_address.as_deref(),
            })
            .map_err(|e| UpstreamError::Connect {
                target: a.target().name.to_string(),
                address: a.target().address.clone().unwrap_or_default(),
                reason: e.to_string(),
            })?;
        let silence = self.gw.grants.config().gateway.target_timeout.duration();
        upstream::connect(a.target(), &principal, cert, silence).await
    }

    pub(crate) async fn disconnect_upstream(&self, reason: &str) {
        if let Some(Ok(up)) = self.upstream.get() {
            let _ = up
                .handle
                .disconnect(
                    russh::Disconnect::ByApplication,
                    &format!("jitgate: {reason}"),
                    "en",
                )
                .await;
        }
    }

    /// A cut's last step, once: the target's disconnect (processes there get SIGHUP), then
    /// the client's with the reason. Queued only; nothing waits for the peers. `client` is for
    /// a connection that never opened a channel (the handle is recorded at the first one).
    pub(crate) async fn disconnect_both(&self, reason: &str, client: Option<&server::Handle>) {
        if self.disconnected.swap(true, Ordering::AcqRel) {
            return;
        }
        let _ =
            tokio::time::timeout(super::timing::PEER_WRITE, self.disconnect_upstream(reason)).await;
        if let Some(h) = client.or(self.client.get()) {
            let _ = tokio::time::timeout(
                super::timing::PEER_WRITE,
                h.disconnect(
                    russh::Disconnect::ByApplication,
                    format!("[jitgate] session terminated: {reason}"),
                    "en".into(),
                ),
            )
            .await;
        }
    }
}
