//! Wires the control plane together and serves it on the listeners it is handed, with bounded
//! shutdown: stop accepting, cancel, wait with a timeout.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::TryFutureExt as _;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use crate::api::{self, AppState, metrics::Metrics};
use crate::audit::{AuditEvent, Log};
use crate::cluster::{Cluster, ClusterAdmit, ClusterBus};
use crate::config::Config;
use crate::grant::{self, GrantBus, LocalBus};
use crate::pki::Keys;
use crate::policy::Engine;
use crate::session::Registry;
use crate::store::Store;
use crate::store::lock::DataDirLock;
use crate::store::postgres::PgStore;
use crate::store::sqlite::SqliteStore;

/// Most simultaneous API connections.
const MAX_API_CONNECTIONS: usize = 1024;
/// Time allowed for a TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Time allowed for one API request, body included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How long shutdown waits for connections to finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Why the gateway could not start or run.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Keys(#[from] crate::pki::PkiError),
    #[error("{}", .0.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("\n"))]
    Policy(Vec<crate::policy::PolicyProblem>),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Audit(#[from] crate::audit::AuditError),
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Locked(#[from] crate::store::lock::LockError),
    #[error("cannot listen: {0}")]
    Io(#[from] std::io::Error),
}

/// The running control plane's parts.
pub struct Runtime {
    pub cfg: Arc<Config>,
    pub keys: Arc<Keys>,
    pub grants: Arc<grant::Service>,
    pub metrics: Arc<Metrics>,
    pub sessions: Arc<Registry>,
    pub identity: Arc<crate::identity::Identity>,
    /// Cancelled on shutdown; every session's token is a child of it.
    pub root: CancellationToken,
    webhook_secret: Option<crate::types::Secret>,
    metrics_token: Option<crate::types::Secret>,
    /// This node's part among several on PostgreSQL.
    pub cluster: Option<Arc<Cluster>>,
    /// Held while the runtime lives: no second process works on the same data.
    _locks: Vec<DataDirLock>,
}

/// The listeners the runtime serves on (bound by the caller, so port 0 works).
pub struct Listeners {
    pub api: TcpListener,
    pub ssh: Option<TcpListener>,
    pub https: Option<TcpListener>,
    /// Plain-HTTP `/metrics` for Prometheus.
    pub metrics: Option<TcpListener>,
}

impl Runtime {
    /// Load keys and policies, open the store and the audit log, and record `config.loaded`.
    pub async fn open(cfg: Config, config_text: &str) -> Result<Self, ServerError> {
        // Before anything reads or writes the data: a second process must not recover the
        // first one's live sessions or fork its audit chain.
        let mut locks = vec![DataDirLock::acquire(&cfg.gateway.data_dir)?];
        let db = cfg.sqlite_path();
        if let Some(db_dir) = db.as_deref().and_then(std::path::Path::parent)
            && !same_dir(db_dir, &cfg.gateway.data_dir)
        {
            locks.push(DataDirLock::acquire(db_dir)?);
        }
        let keys = Arc::new(Keys::load(&cfg.gateway.certs_dir)?);
        if !cfg.gateway.record_terminal {
            tracing::warn!(
                "gateway.record_terminal = false: terminal sessions are not recorded (break-glass sessions still are)"
            );
        }
        if let Some(why) = cfg.example_keys_exposed() {
            return Err(ServerError::Config(why));
        }
        let example = cfg.users_with_example_keys();
        if !example.is_empty() {
            let names: Vec<&str> = example.iter().map(|u| u.as_str()).collect();
            tracing::warn!(
                users = %names.join(", "),
                "these users have the published example API keys (allowed while every listener is on loopback); replace them (jitgate api-key new) before real use"
            );
        }
        if let Some(why) = cfg.nobody_can_sign_in() {
            tracing::warn!("{why}");
        }
        let policy = Arc::new(Engine::load(&cfg).map_err(ServerError::Policy)?);
        let webhook_secret = cfg.webhook_secret().map_err(ServerError::Config)?;
        let metrics_token = cfg.metrics_token().map_err(ServerError::Config)?;
        if let Some(why) = cfg.metrics_exposed() {
            return Err(ServerError::Config(why));
        }
        if webhook_secret.is_none() {
            tracing::warn!(
                "no webhook secret is set ([tickets] webhook_secret); ticket webhooks will be refused"
            );
        }
        // One node on SQLite, or one of several on PostgreSQL (migrated here, under a lock).
        let (store, pg): (Arc<dyn Store>, Option<PgStore>) = match &db {
            Some(db) => (Arc::new(SqliteStore::open(db)?), None),
            None => {
                let pg = PgStore::for_config(&cfg)?;
                let applied = pg.migrate().await?;
                if applied > 0 {
                    tracing::info!(applied, "database migrated");
                }
                pg.warm().await;
                (Arc::new(pg.clone()), Some(pg))
            }
        };
        let node = pg.as_ref().map(|_| cfg.cluster.node_name());
        let audit_key = Arc::new(keys.audit_key().clone());
        let audit = Arc::new(match &node {
            Some(node) => Log::open_shared(
                &cfg.gateway.data_dir,
                audit_key,
                store.clone(),
                node.clone(),
            ),
            None => Log::open(&cfg.gateway.data_dir, audit_key, store.clone()).await?,
        });
        audit
            .record(
                "system",
                AuditEvent::ConfigLoaded {
                    file: cfg.source.display().to_string(),
                    sha256: crate::crypto::sha256_hex(config_text.as_bytes()),
                    users: cfg.users.len(),
                    targets: cfg.targets.len(),
                    tasks: cfg.tasks.len(),
                    policies: policy.len(),
                    record_terminal: cfg.gateway.record_terminal,
                },
            )
            .await?;
        let cfg = Arc::new(cfg);
        let bus: Arc<dyn GrantBus> = match (&pg, &node) {
            (Some(pg), Some(node)) => Arc::new(ClusterBus::new(pg.clone(), node.clone())),
            _ => Arc::new(LocalBus::default()),
        };
        let metrics = Arc::new(Metrics::new());
        let root = CancellationToken::new();
        let sessions = Registry::new(
            root.clone(),
            store.clone(),
            audit.clone(),
            metrics.clone(),
            cfg.gateway.recordings_dir.clone(),
            cfg.gateway.expiry_warning.duration(),
        );
        if let Some(node) = &node {
            sessions.set_node(node.clone());
        }
        let cluster = match (pg, node) {
            (Some(pg), Some(node)) => Some(Cluster::new(
                node,
                pg,
                cfg.cluster.clone(),
                sessions.clone(),
            )),
            _ => None,
        };
        if let Some(c) = &cluster {
            c.claim().await.map_err(ServerError::Config)?;
        }
        sessions.watch_grants(bus.as_ref());
        sessions.recover().await?;
        let identity = Arc::new(
            crate::identity::Identity::new(cfg.clone(), store.clone(), audit.clone())
                .map_err(ServerError::Config)?,
        );
        let systems =
            Arc::new(crate::ticket::systems::Systems::new(&cfg).map_err(ServerError::Config)?);
        let grants = Arc::new(
            grant::Service::new(cfg.clone(), store, audit, policy, bus)
                .with_ticket_systems(systems),
        );
        Ok(Self {
            identity,
            cfg,
            keys,
            grants,
            metrics,
            sessions,
            root,
            webhook_secret,
            metrics_token,
            cluster,
            _locks: locks,
        })
    }

    /// Serve until `shutdown` is cancelled: the API (and console) on `listeners.api`, the SSH
    /// and HTTPS gateways and the metrics listener where they are given, and the expiry sweep.
    /// On shutdown, live sessions are cut and their ends recorded before it returns.
    pub async fn serve(
        self,
        listeners: Listeners,
        shutdown: CancellationToken,
    ) -> Result<(), ServerError> {
        let tracker = TaskTracker::new();
        let addrs = api::Addresses {
            ssh: listeners.ssh.as_ref().and_then(|l| l.local_addr().ok()),
            https: listeners.https.as_ref().and_then(|l| l.local_addr().ok()),
        };
        let admit: Arc<dyn crate::gateway::Admit> = match &self.cluster {
            Some(cluster) => {
                cluster.start(&tracker, &shutdown);
                Arc::new(ClusterAdmit {
                    inner: self.grants.clone(),
                    cluster: cluster.clone(),
                })
            }
            None => self.grants.clone(),
        };
        let parts = crate::gateway::Parts {
            admit,
            sessions: self.sessions.clone(),
            keys: self.keys.clone(),
            audit: self.grants.audit().clone(),
            metrics: self.metrics.clone(),
            settings: Arc::new(self.cfg.gateway.clone()),
        };
        if let Some(ssh) = listeners.ssh {
            let gw = crate::ssh::server::Gateway::new(parts.clone(), &self.cfg.users);
            let stop = shutdown.clone();
            let t = tracker.clone();
            tracker.spawn(async move { gw.serve(ssh, stop, t).await });
        }
        if let Some(https) = listeners.https {
            let gw = crate::https::Gateway::new(parts);
            let tls = self.keys.server_tls(&[b"h2", b"http/1.1"])?;
            // One event loop per core, each with its own reactor, as nginx runs its workers:
            // a request's reads, writes and wake-ups stay on one thread (README, HTTPS bench).
            let n = std::thread::available_parallelism().map_or(1, |n| n.get());
            let cores = crate::net::cores::Cores::start(n, "jitgate-https").map_err(|e| {
                ServerError::Config(format!("cannot start the HTTPS gateway's threads: {e}"))
            })?;
            let stop = shutdown.clone();
            let t = tracker.clone();
            tracker.spawn(async move { gw.serve(https, tls, cores, stop, t).await });
        }
        // Expire requests and grants on time (one node at a time, among several).
        {
            let grants = self.grants.clone();
            let cluster = self.cluster.clone();
            let stop = shutdown.clone();
            tracker.spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(1));
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        _ = tick.tick() => {
                            let swept = match &cluster {
                                Some(c) => c
                                    .exclusive(crate::cluster::EXPIRY_LOCK, grants.expire_due())
                                    .await
                                    .unwrap_or(Ok(0)),
                                None => grants.expire_due().await,
                            };
                            if let Err(e) = swept {
                                tracing::error!(error = %e, "expiry sweep failed");
                            }
                            // Summaries of refusal floods whose window has closed.
                            if let Err(e) = grants.audit().flush_suppressed().await {
                                tracing::error!(error = %e, "cannot audit suppressed refusals");
                            }
                        }
                    }
                }
            });
        }
        // Re-read the tickets of each ticket system that have live grants or pending requests.
        if !self.grants.ticket_systems().is_empty() {
            let grants = self.grants.clone();
            let stop = shutdown.clone();
            tracker.spawn(async move { grants.reconcile_forever(stop).await });
            let grants = self.grants.clone();
            let stop = shutdown.clone();
            tracker.spawn(async move { grants.write_back_forever(stop).await });
        }
        // Count grant events.
        {
            let mut rx = self.grants.bus().subscribe();
            let metrics = self.metrics.clone();
            let stop = shutdown.clone();
            tracker.spawn(async move {
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        ev = rx.recv() => match ev {
                            Ok(ev) => metrics.grant_event(ev.kind),
                            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                            Err(_) => break,
                        }
                    }
                }
            });
        }
        if let Some(listener) = listeners.metrics {
            let router =
                api::metrics::listener_router(self.metrics.clone(), self.metrics_token.clone());
            let stop = shutdown.clone();
            let t = tracker.clone();
            tracker.spawn(
                async move { serve_http(listener, None, router, stop, &t, "metrics").await },
            );
        }
        let tls = self.keys.server_tls(&[b"h2", b"http/1.1"])?;
        let state = AppState {
            grants: self.grants.clone(),
            metrics: self.metrics.clone(),
            webhook_secret: self.webhook_secret.clone(),
            metrics_token: self.metrics_token.clone(),
            auth_limiter: Arc::default(),
            sessions: self.sessions.clone(),
            identity: self.identity.clone(),
            keys: self.keys.clone(),
            addrs,
            cluster: self.cluster.clone(),
        };
        let router = api::router(state).layer(axum::middleware::from_fn(request_timeout));
        serve_http(
            listeners.api,
            Some(TlsAcceptor::from(Arc::new(tls))),
            router,
            shutdown.clone(),
            &tracker,
            "API",
        )
        .await;
        // Cut live sessions (recording their end), then stop everything else.
        self.sessions.shutdown(SHUTDOWN_GRACE).await;
        if let Some(c) = &self.cluster {
            c.release().await;
        }
        if let Err(e) = self.grants.audit().close_suppressed().await {
            tracing::error!(error = %e, "cannot audit suppressed refusals");
        }
        self.root.cancel();
        tracker.close();
        if tokio::time::timeout(SHUTDOWN_GRACE, tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!("some connections did not finish within the shutdown grace period");
        }
        Ok(())
    }
}

/// Whether two paths name one directory (after resolving links, where they exist).
fn same_dir(a: &std::path::Path, b: &std::path::Path) -> bool {
    let real = |p: &std::path::Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    real(a) == real(b)
}

/// Largest request body the API reads at all; bodies over the per-route limit but under this are
/// read to the end before the 413 answer, so that clients still sending see the answer instead
/// of a broken pipe (and HTTP/2 streams end cleanly).
const MAX_DRAIN: usize = 8 * 1024 * 1024;

async fn request_timeout(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    use http_body_util::BodyExt;
    let too_large = |close: bool| {
        let mut r = api::error::ApiError::new(
            axum::http::StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            "the request body is too large; keep fields short (reasons up to 1000 characters)",
        )
        .into_response();
        if close {
            r.headers_mut().insert(
                axum::http::header::CONNECTION,
                axum::http::HeaderValue::from_static("close"),
            );
        }
        r
    };
    let declared = req
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_DRAIN as u64) {
        return too_large(true);
    }
    let work = async move {
        // Read the whole (bounded) body first: API bodies are small.
        let (parts, body) = req.into_parts();
        let bytes = match http_body_util::Limited::new(body, MAX_DRAIN)
            .collect()
            .await
        {
            Ok(c) => c.to_bytes(),
            Err(_) => return too_large(true),
        };
        if bytes.len() > api::MAX_WEBHOOK_BODY {
            return too_large(false);
        }
        let req = axum::extract::Request::from_parts(parts, axum::body::Body::from(bytes));
        next.run(req).await
    };
    match tokio::time::timeout(REQUEST_TIMEOUT, work).await {
        Ok(r) => r,
        Err(_) => api::error::ApiError::new(
            axum::http::StatusCode::REQUEST_TIMEOUT,
            "timeout",
            "the request took too long; send the body promptly",
        )
        .into_response(),
    }
}

/// Accept connections on `listener` (TLS when `tls` is given) and serve `router` on each until
/// `shutdown`. Each connection holds a place among the unauthenticated ones until its first
/// request, and is closed when idle (see [`crate::net::idle`]). `what` names it in logs.
pub async fn serve_http(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    router: axum::Router,
    shutdown: CancellationToken,
    tracker: &TaskTracker,
    what: &'static str,
) {
    let gate = crate::net::gate::Gate::default();
    crate::net::accept_loop(
        listener,
        MAX_API_CONNECTIONS,
        what,
        &shutdown,
        tracker,
        |tcp, peer| {
            let tls = tls.clone();
            let router = router.clone();
            let stop = shutdown.clone();
            let pass = gate.enter(peer.ip());
            async move {
                let Ok(pass) = pass else {
                    tracing::debug!(%peer, "too many unauthenticated {what} connections from this source; closing one");
                    return;
                };
                let activity = crate::net::idle::Activity::new(Some(pass));
                let Some(tls) = tls else {
                    serve_connection(tcp, peer, router, activity, stop).await;
                    return;
                };
                let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.accept(tcp)).await {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "TLS handshake timed out");
                        return;
                    }
                };
                serve_connection(stream, peer, router, activity, stop).await;
            }
        },
    )
    .await;
}

async fn serve_connection<S>(
    stream: S,
    peer: SocketAddr,
    router: axum::Router,
    activity: crate::net::idle::Activity,
    stop: CancellationToken,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let svc = {
        let activity = activity.clone();
        hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
            req.extensions_mut()
                .insert(axum::extract::ConnectInfo(peer));
            let inflight = activity.request();
            router
                .clone()
                .oneshot(req.map(axum::body::Body::new))
                .map_ok(move |resp| {
                    resp.map(|b| axum::body::Body::new(crate::net::idle::Guarded::new(b, inflight)))
                })
        })
    };
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(10))
        .max_buf_size(64 * 1024);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(64)
        .max_header_list_size(64 * 1024);
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), svc);
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(%peer, error = %e, "API connection ended with an error");
            }
        }
        _ = activity.idle() => {
            tracing::debug!(%peer, "closing an idle API connection");
            // Nothing is in flight: HTTP/2 clients get a GOAWAY, HTTP/1 ones a close.
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(Duration::from_secs(1), conn).await;
        }
        _ = stop.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(SHUTDOWN_GRACE, conn).await;
        }
    }
}
