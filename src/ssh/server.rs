//! The client leg: the russh server's listener and each connection's life from accept to the
//! recorded end. What a connection's SSH handler decides (admission, channel opens) is in
//! [`super::conn`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use russh::server;
use russh::{MethodKind, MethodSet};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::conn::{Conn, Shared};
use super::timing::{self, HELLO_TIMEOUT};
use crate::metrics::Metrics;
use crate::pki::Keys;
use crate::session::Registry;

/// Simultaneous SSH connections.
const MAX_CONNECTIONS: usize = 4096;

/// Everything the SSH gateway needs, shared by all connections.
pub struct Gateway {
    pub grants: Arc<crate::grant::Service>,
    pub registry: Arc<Registry>,
    pub keys: Arc<Keys>,
    pub metrics: Arc<Metrics>,
    config: Arc<server::Config>,
    /// Caps on connections that have not authenticated yet.
    gate: crate::net::gate::Gate,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ssh::Gateway")
    }
}

impl Gateway {
    /// The gateway with its host key from `keys`.
    pub fn new(
        grants: Arc<crate::grant::Service>,
        registry: Arc<Registry>,
        keys: Arc<Keys>,
        metrics: Arc<Metrics>,
    ) -> Arc<Self> {
        // OpenSSH clients take the first cipher of their own list that the server offers; AES-GCM
        // is far cheaper than ChaCha20 on CPUs with AES instructions. No compression: plain
        // `zlib` would start before authentication (OpenSSH stopped offering it in 7.4), and
        // a gateway has no use for it. No 2048-bit DH group, and MACs only in
        // encrypt-then-MAC mode (the AEAD ciphers use none).
        let kex: Vec<russh::kex::Name> = super::upstream::KEX_ORDER
            .iter()
            .copied()
            .filter(|k| *k != russh::kex::DH_G14_SHA256)
            .collect();
        let preferred = russh::Preferred {
            kex: std::borrow::Cow::Owned(kex),
            cipher: std::borrow::Cow::Borrowed(&[
                russh::cipher::AES_128_GCM,
                russh::cipher::AES_256_GCM,
            ]),
            mac: std::borrow::Cow::Borrowed(&[
                russh::mac::HMAC_SHA512_ETM,
                russh::mac::HMAC_SHA256_ETM,
            ]),
            compression: std::borrow::Cow::Borrowed(&[russh::compression::NONE]),
            ..Default::default()
        };
        let config = server::Config {
            server_id: russh::SshId::Standard("SSH-2.0-jitgate".into()),
            methods: MethodSet::from(
                &[
                    MethodKind::KeyboardInteractive,
                    MethodKind::Password,
                    MethodKind::PublicKey,
                ][..],
            ),
            auth_rejection_time: timing::AUTH_REJECTION_DELAY,
            auth_rejection_time_initial: Some(Duration::ZERO),
            keys: vec![keys.ssh_host_key().clone()],
            max_auth_attempts: 8,
            inactivity_timeout: None,
            // No keepalives: OpenSSH clients treat a global request during authentication as an
            // error. Sessions end at their grant's expiry at the latest.
            keepalive_interval: None,
            nodelay: true,
            preferred,
            ..Default::default()
        };
        Arc::new(Self {
            grants,
            registry,
            keys,
            metrics,
            config: Arc::new(config),
            gate: crate::net::gate::Gate::default(),
        })
    }

    /// Accept connections on `listener` until `shutdown`.
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        shutdown: CancellationToken,
        tracker: TaskTracker,
    ) {
        let stop = shutdown.clone();
        crate::net::accept_loop(
            listener,
            MAX_CONNECTIONS,
            "SSH",
            &shutdown,
            &tracker,
            |tcp, peer| {
                let me = self.clone();
                let stop = stop.clone();
                async move { me.connection(tcp, peer, stop).await }
            },
        )
        .await;
    }

    /// A client that presented a valid token but never completed the second factor.
    async fn audit_incomplete(&self, shared: &Shared, peer: SocketAddr) {
        let pending = shared.incomplete.lock().expect("incomplete lock").take();
        if let Some((user, reason, grant)) = pending {
            tracing::info!(%peer, %user, %reason, "SSH authentication incomplete");
            let _ = self
                .grants
                .audit()
                .record(
                    "system",
                    crate::audit::AuditEvent::AdmissionDenied {
                        user,
                        protocol: "ssh".into(),
                        source: peer.ip().to_string(),
                        grant,
                        reason,
                    },
                )
                .await;
        }
    }

    async fn connection(
        self: Arc<Self>,
        tcp: TcpStream,
        peer: SocketAddr,
        shutdown: CancellationToken,
    ) {
        let Ok(pass) = self.gate.enter(peer.ip()) else {
            tracing::debug!(%peer, "too many unauthenticated SSH connections from this source; closing one");
            return;
        };
        let shared = Arc::new(Shared::default());
        let handler = Conn {
            gw: self.clone(),
            peer,
            shared: shared.clone(),
            pubkey_ok: false,
            admission: None,
            failures: 0,
        };
        let kill = CancellationToken::new();
        let tcp = crate::net::killable::Killable::new(tcp, kill.clone());
        let close_mark = tcp.close_mark();
        // russh runs the connection on a task of its own: however this function returns, the
        // socket is cut, so no path leaves a connection open behind it.
        let _cut_on_return = kill.clone().drop_guard();
        let running = match tokio::time::timeout(
            HELLO_TIMEOUT,
            server::run_stream(self.config.clone(), tcp, handler),
        )
        .await
        {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                tracing::debug!(%peer, error = %e, "SSH handshake failed");
                return;
            }
            Err(_) => {
                tracing::debug!(%peer, "SSH client sent no identification in time");
                return;
            }
        };
        let handle = running.handle();
        tokio::pin!(running);
        // Phase 1: until authenticated.
        let authed = shared.authed.notified();
        tokio::pin!(authed);
        if !shared.is_authed.load(Ordering::Acquire) {
            tokio::select! {
                _ = &mut running => {
                    self.audit_incomplete(&shared, peer).await;
                    return;
                }
                _ = &mut authed => {}
                _ = tokio::time::sleep(self.grants.config().gateway.login_timeout.duration()) => {
                    tracing::info!(%peer, "SSH authentication timed out");
                    let _ = handle.disconnect(russh::Disconnect::ByApplication, "authentication timed out".into(), "en".into()).await;
                    let _ = tokio::time::timeout(timing::SOCKET_CUT_WAIT, &mut running).await;
                    return;
                }
                _ = shutdown.cancelled() => return,
            }
        }
        let Some(active) = shared.active.get().cloned() else {
            return;
        };
        drop(pass);
        close_mark.on_close(active.guard.on_client_closed());
        let token = active.guard.token();
        // Phase 2: the session runs until the client leaves or the registry cuts it.
        let mut cut = false;
        tokio::select! {
            r = &mut running => {
                if let Err(e) = r {
                    tracing::debug!(session = %active.guard.id(), error = %e, "SSH connection ended with an error");
                }
            }
            _ = token.cancelled() => cut = true,
        }
        if cut {
            let reason = active
                .guard
                .ending()
                .map(|e| e.reason)
                .unwrap_or_else(|| "session ended".into());
            // Nothing here waits on a peer's reply: the client is cut as soon as the reason,
            // the channel closes and the disconnects are on their way, in that order. The
            // last pump to queue its notice sends the disconnects itself (one hop less);
            // this covers a connection without channels.
            active.pumps.close();
            active.notices.close();
            let _ = tokio::time::timeout(timing::NOTICES_WAIT, active.notices.wait()).await;
            active.disconnect_both(&reason, Some(&handle)).await;
            // russh closes our side once the disconnect is written, then waits for the
            // client to close its side.
            if tokio::time::timeout(timing::CLIENT_CLOSE_WAIT, &mut running)
                .await
                .is_err()
            {
                // The client is not taking the disconnect (e.g. it stopped reading): cut the
                // socket.
                tracing::info!(session = %active.guard.id(), "client did not take the disconnect; cutting the socket");
                close_mark.set_now();
                kill.cancel();
                let _ = tokio::time::timeout(timing::SOCKET_CUT_WAIT, &mut running).await;
            }
            // The recordings get their final markers and are closed.
            let _ = tokio::time::timeout(timing::PUMPS_WAIT, active.pumps.wait()).await;
            let at = close_mark.get().unwrap_or_else(std::time::Instant::now);
            active.guard.closed_at(at).await;
        } else {
            token.cancel();
            active.pumps.close();
            let _ = tokio::time::timeout(timing::PUMPS_WAIT, active.pumps.wait()).await;
            active.disconnect_upstream("client disconnected").await;
            active.guard.closed().await;
        }
    }
}
