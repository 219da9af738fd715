//! `demo-box`, the demo's built-in SSH target: a small russh server that trusts only the
//! gateway's user CA, the way an OpenSSH target does with `TrustedUserCAKeys` and an
//! `AuthorizedPrincipalsFile`, and runs a real shell on a PTY.
//!
//! This file holds its settings, its listener and each connection's life (handshake, the
//! authentication timer, shutdown) with the russh handler that answers authentication and
//! channel requests. What a certificate must be to be accepted is in [`super::cert`]; what runs
//! on a session channel is in [`super::shell`].
//!
//! It accepts nothing but an OpenSSH user certificate signed by that CA, inside its validity
//! window, naming the demo principal, for the login name of that principal; it logs the
//! certificate's key id, which names the jitgate session, grant, user and ticket. It listens on
//! loopback only and runs every shell as the user running `jitgate demo`: it is a demo, not a
//! hardened server.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use russh::keys::PrivateKey;
use russh::keys::ssh_key::{Certificate, Fingerprint, HashAlg, PublicKey};
use russh::server::{self, Auth, Msg, Session};
use russh::{Channel, ChannelId, Disconnect, MethodKind, MethodSet, Preferred};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::cert::{Permits, check_certificate};
use super::shell::{self, ChannelCtx};
use crate::ssh::algorithms::{CIPHERS, KEX_ORDER};

/// Time a client has to send its SSH identification line.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// Time a client has to authenticate.
pub const AUTH_TIMEOUT: Duration = Duration::from_secs(30);
/// Connections open at once: one per gateway session, each with a shell on a PTY; far more than
/// a demo needs, and well inside the kernel's default limit of 4096 PTYs.
const MAX_CONNECTIONS: usize = 256;

/// How the demo target is set up.
pub struct TargetSettings {
    /// The target's own host key (pinned in the gateway's configuration).
    pub host_key: PrivateKey,
    /// The only CA whose user certificates are accepted: the gateway's user CA.
    pub user_ca: PublicKey,
    /// The login name, which the certificate must list as a principal.
    pub principal: String,
    /// Home directory for shells.
    pub home: PathBuf,
    /// The shell (`/bin/bash` where present).
    pub shell: PathBuf,
    /// The prompt shells show.
    pub prompt: String,
    /// OpenSSH's `sftp-server`, when installed: enables the `sftp` subsystem.
    pub sftp_server: Option<PathBuf>,
    /// Time a client has to authenticate ([`AUTH_TIMEOUT`]).
    pub auth_timeout: Duration,
}

impl std::fmt::Debug for TargetSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TargetSettings")
            .field("user_ca", &self.user_ca.fingerprint(HashAlg::Sha256))
            .field("principal", &self.principal)
            .field("home", &self.home)
            .finish_non_exhaustive()
    }
}

/// The running demo target.
pub struct DemoTarget {
    settings: Arc<TargetSettings>,
    ca: Fingerprint,
    config: Arc<server::Config>,
}

impl std::fmt::Debug for DemoTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DemoTarget")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl DemoTarget {
    /// A target with `settings`; nothing listens until [`DemoTarget::serve`].
    pub fn new(settings: TargetSettings) -> Arc<Self> {
        let config = server::Config {
            server_id: russh::SshId::Standard("SSH-2.0-jitgate_demo_box".into()),
            methods: MethodSet::from(&[MethodKind::PublicKey][..]),
            auth_rejection_time: Duration::from_millis(100),
            auth_rejection_time_initial: Some(Duration::ZERO),
            keys: vec![settings.host_key.clone()],
            max_auth_attempts: 6,
            inactivity_timeout: None,
            keepalive_interval: Some(Duration::from_secs(60)),
            nodelay: true,
            // The gateway's own lists, so the demo negotiates what a jitgate target would.
            preferred: Preferred {
                kex: Cow::Borrowed(KEX_ORDER),
                cipher: Cow::Borrowed(CIPHERS),
                ..Default::default()
            },
            ..Default::default()
        };
        Arc::new(Self {
            ca: settings.user_ca.fingerprint(HashAlg::Sha256),
            settings: Arc::new(settings),
            config: Arc::new(config),
        })
    }

    /// Accept connections on `listener` until `stop` (the gateway's accept loop, at most
    /// [`MAX_CONNECTIONS`] at a time); every task goes into `tracker`.
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        stop: CancellationToken,
        tracker: TaskTracker,
    ) {
        crate::net::accept_loop(
            listener,
            MAX_CONNECTIONS,
            "demo-box",
            &stop,
            &tracker,
            |tcp, peer| {
                self.clone()
                    .connection(tcp, peer, stop.clone(), tracker.clone())
            },
        )
        .await;
    }

    async fn connection(
        self: Arc<Self>,
        tcp: TcpStream,
        peer: SocketAddr,
        stop: CancellationToken,
        tracker: TaskTracker,
    ) {
        let authed = CancellationToken::new();
        let handler = Conn {
            target: self.clone(),
            peer,
            permits: None,
            authed: authed.clone(),
            stop: stop.clone(),
            tracker,
        };
        let running = match tokio::time::timeout(
            HELLO_TIMEOUT,
            server::run_stream(self.config.clone(), tcp, handler),
        )
        .await
        {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                tracing::debug!(%peer, error = %e, "demo-box: SSH handshake failed");
                return;
            }
            Err(_) => return,
        };
        let handle = running.handle();
        tokio::pin!(running);
        // Ends when authentication times out; never once the client has authenticated.
        let auth_timer = async {
            tokio::select! {
                _ = tokio::time::sleep(self.settings.auth_timeout) => {}
                _ = authed.cancelled() => std::future::pending::<()>().await,
            }
        };
        let reason = tokio::select! {
            r = &mut running => {
                if let Err(e) = r {
                    tracing::debug!(%peer, error = %e, "demo-box: connection ended with an error");
                }
                return;
            }
            _ = auth_timer => "authentication timed out",
            _ = stop.cancelled() => "demo-box is shutting down",
        };
        let _ = handle
            .disconnect(Disconnect::ByApplication, reason.into(), "en".into())
            .await;
        let _ = tokio::time::timeout(Duration::from_secs(2), running).await;
    }
}

/// One connection's handler.
struct Conn {
    target: Arc<DemoTarget>,
    peer: SocketAddr,
    permits: Option<Arc<Permits>>,
    /// Cancelled once authenticated (ends the authentication timer).
    authed: CancellationToken,
    stop: CancellationToken,
    tracker: TaskTracker,
}

impl Conn {
    fn settings(&self) -> &TargetSettings {
        &self.target.settings
    }

    /// Answer a channel request in its callback (russh keeps one reply flag per channel).
    fn reply(
        &self,
        channel: ChannelId,
        ok: bool,
        session: &mut Session,
    ) -> Result<(), russh::Error> {
        if ok {
            session.channel_success(channel)
        } else {
            session.channel_failure(channel)
        }
    }
}

impl server::Handler for Conn {
    type Error = russh::Error;

    async fn auth_publickey(
        &mut self,
        user: &str,
        key: server::VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        tracing::info!(
            peer = %self.peer,
            %user,
            key = %key.public_key.fingerprint(HashAlg::Sha256),
            "demo-box refused a plain public key: only certificates from the gateway's user CA are accepted"
        );
        Ok(Auth::reject())
    }

    async fn auth_openssh_certificate(
        &mut self,
        user: &str,
        cert: &Certificate,
    ) -> Result<Auth, Self::Error> {
        let now = crate::types::now().max(0) as u64;
        match check_certificate(
            cert,
            user,
            &self.settings().principal,
            &self.target.ca,
            now,
            Some(self.peer.ip()),
        ) {
            Ok(p) => {
                tracing::info!(
                    peer = %self.peer,
                    %user,
                    key_id = %p.key_id,
                    serial = p.serial,
                    valid_before = %crate::types::rfc3339(cert.valid_before() as i64),
                    "demo-box accepted a certificate"
                );
                self.permits = Some(Arc::new(p));
                self.authed.cancel();
                Ok(Auth::Accept)
            }
            Err(why) => {
                tracing::warn!(
                    peer = %self.peer,
                    %user,
                    key_id = %cert.key_id(),
                    reason = %why,
                    "demo-box refused a certificate"
                );
                Ok(Auth::reject())
            }
        }
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: server::ChannelOpenHandle,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let Some(permits) = self.permits.clone() else {
            drop(reply);
            return Ok(());
        };
        reply.accept().await;
        let ctx = ChannelCtx {
            settings: self.target.settings.clone(),
            permits,
            handle: session.handle(),
        };
        let stop = self.stop.clone();
        self.tracker
            .spawn(async move { shell::run(channel, ctx, stop).await });
        Ok(())
    }

    async fn pty_request(
        &mut self,
        channel: ChannelId,
        _term: &str,
        _cols: u32,
        _rows: u32,
        _pw: u32,
        _ph: u32,
        _modes: &[(russh::Pty, u32)],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let ok = self.permits.as_ref().is_some_and(|p| p.permit_pty);
        if !ok {
            let _ = session.extended_data(
                channel,
                1,
                &b"demo-box: the certificate does not permit a terminal (no permit-pty)\r\n"[..],
            );
        }
        self.reply(channel, ok, session)
    }

    async fn env_request(
        &mut self,
        channel: ChannelId,
        name: &str,
        _value: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.reply(channel, crate::ssh::env_allowed(name), session)
    }

    async fn shell_request(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.reply(channel, true, session)
    }

    async fn exec_request(
        &mut self,
        channel: ChannelId,
        _data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.reply(channel, true, session)
    }

    async fn subsystem_request(
        &mut self,
        channel: ChannelId,
        name: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let ok = shell::subsystem_available(self.settings(), name);
        self.reply(channel, ok, session)
    }

    async fn x11_request(
        &mut self,
        channel: ChannelId,
        _single: bool,
        _proto: &str,
        _cookie: &str,
        _screen: u32,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.reply(channel, false, session)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::demo::cert::tests::{cert, key, now};
    use russh::client;
    use russh::keys::PrivateKeyWithHashAlg;

    struct Pinned(PublicKey);

    impl client::Handler for Pinned {
        type Error = russh::Error;
        async fn check_server_key(
            &mut self,
            key: &russh::keys::PublicKeyOrCertificate,
        ) -> Result<bool, Self::Error> {
            Ok(matches!(
                key,
                russh::keys::PublicKeyOrCertificate::PublicKey { key, .. }
                    if key.key_data() == self.0.key_data()
            ))
        }
    }

    /// A demo target on a loopback port trusting `ca`.
    async fn start(
        ca: &PrivateKey,
        auth_timeout: Duration,
    ) -> (SocketAddr, PublicKey, CancellationToken, tempfile::TempDir) {
        let home = tempfile::tempdir().unwrap();
        let host = key();
        let host_pub = host.public_key().clone();
        let target = DemoTarget::new(TargetSettings {
            host_key: host,
            user_ca: ca.public_key().clone(),
            principal: "demo".into(),
            home: home.path().to_path_buf(),
            shell: "/bin/sh".into(),
            prompt: "demo-box$ ".into(),
            sftp_server: None,
            auth_timeout,
        });
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        tokio::spawn(target.serve(listener, stop.clone(), TaskTracker::new()));
        (addr, host_pub, stop, home)
    }

    async fn connect(addr: SocketAddr, host: &PublicKey) -> client::Handle<Pinned> {
        client::connect(
            Arc::new(client::Config::default()),
            addr,
            Pinned(host.clone()),
        )
        .await
        .unwrap()
    }

    async fn login(
        addr: SocketAddr,
        host: &PublicKey,
        user: &str,
        (k, c): (Arc<PrivateKey>, Certificate),
    ) -> (bool, client::Handle<Pinned>) {
        let mut h = connect(addr, host).await;
        let ok = h
            .authenticate_openssh_cert(user, k, c)
            .await
            .unwrap()
            .success();
        (ok, h)
    }

    /// Run `cmd` on an authenticated connection: (stdout, exit status).
    async fn exec(h: &client::Handle<Pinned>, cmd: &str) -> (String, Option<u32>) {
        let mut ch = h.channel_open_session().await.unwrap();
        ch.exec(true, cmd).await.unwrap();
        let (mut out, mut code) = (Vec::new(), None);
        while let Some(msg) = ch.wait().await {
            match msg {
                russh::ChannelMsg::Data { data } => out.extend_from_slice(&data),
                russh::ChannelMsg::ExitStatus { exit_status } => code = Some(exit_status),
                russh::ChannelMsg::Close => break,
                _ => {}
            }
        }
        (String::from_utf8_lossy(&out).into_owned(), code)
    }

    #[tokio::test]
    async fn accepts_only_certificates_from_the_gateway_ca_for_the_demo_principal() {
        let ca = key();
        let (addr, host, stop, _home) = start(&ca, AUTH_TIMEOUT).await;
        let t = now();
        let valid = t - 60..t + 600;

        // The control: a certificate from the trusted CA for `demo` works, and so does exec.
        let (ok, h) = login(addr, &host, "demo", cert(&ca, "demo", valid.clone(), false)).await;
        assert!(
            ok,
            "a certificate from the gateway's CA for principal demo must be accepted"
        );
        let (out, code) = exec(&h, "echo hello from demo-box; exit 3").await;
        assert_eq!(out, "hello from demo-box\n");
        assert_eq!(code, Some(3));

        let other_ca = key();
        let (ok, _) = login(
            addr,
            &host,
            "demo",
            cert(&other_ca, "demo", valid.clone(), false),
        )
        .await;
        assert!(!ok, "a certificate from another CA must be refused");

        let (ok, _) = login(addr, &host, "demo", cert(&ca, "root", valid.clone(), false)).await;
        assert!(!ok, "a certificate without principal demo must be refused");

        let (ok, _) = login(addr, &host, "root", cert(&ca, "demo", valid.clone(), false)).await;
        assert!(!ok, "logging in as another account must be refused");

        let (ok, _) = login(
            addr,
            &host,
            "demo",
            cert(&ca, "demo", t - 600..t - 60, false),
        )
        .await;
        assert!(!ok, "an expired certificate must be refused");

        // A plain key, even the CA's own, is not a certificate.
        let mut h = connect(addr, &host).await;
        let plain = PrivateKeyWithHashAlg::new(Arc::new(ca.clone()), None);
        assert!(
            !h.authenticate_publickey("demo", plain)
                .await
                .unwrap()
                .success()
        );
        stop.cancel();
    }

    #[tokio::test]
    async fn the_authentication_timer_cuts_only_unauthenticated_connections() {
        let ca = key();
        let (addr, host, stop, _home) = start(&ca, Duration::from_millis(300)).await;
        let t = now();
        let (ok, h) = login(
            addr,
            &host,
            "demo",
            cert(&ca, "demo", t - 60..t + 600, false),
        )
        .await;
        assert!(ok);
        let idle = connect(addr, &host).await;
        tokio::time::sleep(Duration::from_millis(800)).await;
        assert!(
            idle.is_closed(),
            "an unauthenticated connection outlived the timer"
        );
        let (out, code) = exec(&h, "echo still here").await;
        assert_eq!((out.as_str(), code), ("still here\n", Some(0)));
        stop.cancel();
    }
}
