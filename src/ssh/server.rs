//! The client leg's listener: the SSH gateway's settings, and each accepted connection's
//! handshake before its task ([`super::conn`]) takes over.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use russh::server;
use russh::{MethodKind, MethodSet};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::conn::{Connection, Socket};
use super::handler::Handler;
use super::timing::{self, HELLO_TIMEOUT};
use crate::config::TargetKind;
use crate::gateway::Door;
use crate::metrics::Metrics;
use crate::pki::Keys;
use crate::session::Registry;

/// Simultaneous SSH connections.
const MAX_CONNECTIONS: usize = 4096;

/// Everything the SSH gateway needs, shared by all connections.
pub struct Gateway {
    pub(super) admit: Arc<dyn crate::gateway::Admit>,
    pub(super) registry: Arc<Registry>,
    pub(super) keys: Arc<Keys>,
    pub(super) audit: Arc<crate::audit::Log>,
    pub(super) metrics: Arc<Metrics>,
    pub(super) settings: Arc<crate::config::GatewayConfig>,
    /// Users' registered public keys (a second factor beside the token).
    pub(super) user_keys: super::UserKeys,
    config: Arc<server::Config>,
    /// The PROXY protocol and the caps on connections that have not authenticated yet.
    door: Door,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ssh::Gateway")
    }
}

impl Gateway {
    /// The gateway, built from `parts`, with its host key from `parts.keys` and the public keys
    /// `users` registered.
    pub fn new(parts: crate::gateway::Parts, users: &[crate::config::UserConfig]) -> Arc<Self> {
        let door = Door::new(TargetKind::Ssh, &parts);
        let keys = parts.keys;
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
            preferred: super::algorithms::gateway_server(),
            ..Default::default()
        };
        Arc::new(Self {
            admit: parts.admit,
            registry: parts.sessions,
            keys,
            audit: parts.audit,
            metrics: parts.metrics,
            settings: parts.settings,
            user_keys: super::UserKeys::new(users),
            config: Arc::new(config),
            door,
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

    /// One connection: its PROXY header where it comes through a balancer, the SSH handshake,
    /// then its task ([`Connection::run`]) until the end. From here on `peer` is the client's
    /// address (the balancer's header's), in the audit records, the admission throttle and the
    /// logs alike.
    async fn connection(
        self: Arc<Self>,
        tcp: TcpStream,
        peer: SocketAddr,
        shutdown: CancellationToken,
    ) {
        // Boxed, as the refusal below: the task keeps room for what it awaits for its whole
        // life, and the door's checks are large and brief.
        let Some(entered) = Box::pin(self.door.enter(tcp, peer)).await else {
            return;
        };
        let (origin, pass) = (entered.origin, entered.pass);
        let peer = origin.client;
        let kill = CancellationToken::new();
        let tcp = crate::net::killable::Killable::new(entered.stream, kill.clone());
        let close_mark = tcp.close_mark();
        // russh runs the connection on a task of its own: however this function returns, the
        // socket is cut, so no path leaves a connection open behind it.
        let _cut_on_return = kill.clone().drop_guard();
        // The handler asks one question at a time and waits for the answer.
        let (events_tx, events) = mpsc::channel(1);
        let running = match tokio::time::timeout(
            HELLO_TIMEOUT,
            server::run_stream(self.config.clone(), tcp, Handler::new(events_tx)),
        )
        .await
        {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                if !Box::pin(self.door.refused_header(&origin)).await {
                    tracing::debug!(%peer, error = %e, "SSH handshake failed");
                }
                return;
            }
            Err(_) => {
                tracing::debug!(%peer, "SSH client sent no identification in time");
                return;
            }
        };
        let client = Arc::new(running.handle());
        let socket = Socket { kill, close_mark };
        Connection::new(self, peer, client, socket, Some(pass))
            .run(Box::pin(running), events, shutdown)
            .await;
    }
}
