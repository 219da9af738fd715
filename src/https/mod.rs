//! The HTTPS gateway: browsers and `curl` reach admin web consoles through jitgate. A request
//! is admitted by `Authorization: Bearer jgt_...` or by the cookie that the login page or the
//! console's Open console sets (a random handle, never the token), checked against the task's
//! HTTP allow-list, and forwarded over mutual TLS with a client certificate minted for the
//! session. Every exchange goes to `http.jsonl`; the session is cut (in-flight streams aborted,
//! websockets closed, later requests refused) when its grant ends.
//!
//! A request's way to the target: `conn::serve` owns each client connection and hands every
//! request to `Gateway::handle` (here), which finds its session (`admission`: the bearer token,
//! or the cookie) and forwards it in three steps (`exchange`: prepare, send, answer) on a
//! target connection (`forward`: `TargetRouter`, `Upstream`).

pub(crate) mod admission;
mod allow;
mod conn;
mod exchange;
pub mod forward;
pub(crate) mod pages;
pub mod record;
mod timing;
mod websocket;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use http_body_util::combinators::BoxBody;
use hyper::body::Incoming;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::grant::Admission;
use crate::metrics::Metrics;
use crate::net::cores::Cores;
use crate::pki::Keys;
use crate::session::{Registry, SessionGuard};
use admission::{bearer, cookie_handle};
pub(crate) use allow::percent_decode_lossy;
pub use allow::{http_allowed, path_matches};
use conn::ClientConn;
use forward::Upstream;
use record::{BoxError, HttpLog};

/// Response bodies sent to clients.
pub type RespBody = BoxBody<Bytes, BoxError>;

/// The session cookie: `__Host-` binds it to this host, Secure, path `/`.
pub const COOKIE: &str = "__Host-jitgate";
/// Largest request body forwarded.
pub const MAX_REQUEST_BODY: u64 = 256 * 1024 * 1024;
/// Client connections served at once; more are closed as they are accepted.
const MAX_CONNECTIONS: usize = 4096;

/// Requests in flight for a session, and bytes moved.
#[derive(Default)]
pub struct Inflight {
    count: AtomicUsize,
    zero: Notify,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
}

impl Inflight {
    /// One exchange began.
    fn enter(&self) {
        self.count.fetch_add(1, Ordering::AcqRel);
    }

    /// One exchange finished, with its byte counts.
    pub fn leave(&self, bytes_out: u64, bytes_in: u64) {
        self.bytes_out.fetch_add(bytes_out, Ordering::Relaxed);
        self.bytes_in.fetch_add(bytes_in, Ordering::Relaxed);
        if self.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.zero.notify_waiters();
        }
    }

    /// Until no exchange is in flight.
    async fn drained(&self) {
        loop {
            let wait = self.zero.notified();
            if self.count.load(Ordering::Acquire) == 0 {
                return;
            }
            wait.await;
        }
    }
}

/// One admitted HTTPS session: a bearer token's, or a browser's after the login page or Open
/// console.
pub struct HttpSession {
    admission: Admission,
    guard: SessionGuard,
    log: HttpLog,
    upstream: Upstream,
    inflight: Arc<Inflight>,
    /// Kill switches of the live client connections that carried this session's requests, by
    /// connection id (see [`ClientConn`]).
    conns: Mutex<HashMap<u64, CancellationToken>>,
    /// Set on every forwarded request: `X-Jitgate-User`, `-Grant`, `-Ticket` and `Host`.
    headers: Vec<(HeaderName, HeaderValue)>,
}

impl HttpSession {
    /// The headers every forwarded request of `admission` carries (a value that is not valid
    /// header text is left out).
    fn headers(admission: &Admission, upstream: &Upstream) -> Vec<(HeaderName, HeaderValue)> {
        [
            ("x-jitgate-user", admission.user().name.as_str().to_string()),
            ("x-jitgate-grant", admission.grant().as_str().to_string()),
            ("x-jitgate-ticket", admission.ticket().as_str().to_string()),
            ("host", upstream.authority()),
        ]
        .into_iter()
        .filter_map(|(k, v)| Some((HeaderName::from_static(k), HeaderValue::from_str(&v).ok()?)))
        .collect()
    }
}

/// The HTTPS gateway.
pub struct Gateway {
    admit: Arc<dyn crate::gateway::Admit>,
    registry: Arc<Registry>,
    keys: Arc<Keys>,
    metrics: Arc<Metrics>,
    settings: Arc<crate::config::GatewayConfig>,
    /// The PROXY protocol and the caps on connections that have not sent a request yet.
    door: crate::gateway::Door,
    /// Browsers' sessions by cookie handle.
    by_cookie: Mutex<HashMap<String, Arc<HttpSession>>>,
    /// Bearer tokens' sessions by token hash.
    by_token: Mutex<HashMap<String, Arc<HttpSession>>>,
    /// Per-token gates so concurrent first requests open one session.
    opening: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("https::Gateway")
    }
}

/// A whole response of jitgate's own, never cached.
fn full(status: StatusCode, content_type: &str, body: String) -> Response<RespBody> {
    let mut r = Response::new(
        http_body_util::Full::new(Bytes::from(body))
            .map_err(|never| match never {})
            .boxed(),
    );
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(content_type).expect("static content type"),
    );
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

impl Gateway {
    /// The gateway, built from `parts`.
    pub fn new(parts: crate::gateway::Parts) -> Arc<Self> {
        let door = crate::gateway::Door::new(crate::config::TargetKind::Https, &parts);
        Arc::new(Self {
            door,
            admit: parts.admit,
            registry: parts.sessions,
            keys: parts.keys,
            metrics: parts.metrics,
            settings: parts.settings,
            by_cookie: Mutex::new(HashMap::new()),
            by_token: Mutex::new(HashMap::new()),
            opening: Mutex::new(HashMap::new()),
        })
    }

    /// Accept TLS connections on `listener` until `shutdown`, each served on one of `cores`.
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        tls: rustls::ServerConfig,
        cores: Cores,
        shutdown: CancellationToken,
        tracker: TaskTracker,
    ) {
        let acceptor = TlsAcceptor::from(Arc::new(tls));
        crate::net::accept_loop_on(
            listener,
            MAX_CONNECTIONS,
            "HTTPS",
            &shutdown,
            &tracker,
            &cores,
            |peer| {
                let me = self.clone();
                let acceptor = acceptor.clone();
                let stop = shutdown.clone();
                move |tcp| async move {
                    if let Some(entered) = me.door.enter(tcp, peer).await {
                        conn::serve(me, acceptor, entered, stop).await;
                    }
                }
            },
        )
        .await;
    }

    /// Answer one request of client connection `conn` from `peer`: jitgate's own pages, or the
    /// request's session found by its bearer token or cookie and the request forwarded.
    async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
        peer: SocketAddr,
        conn: Arc<ClientConn>,
    ) -> Response<RespBody> {
        match req.uri().path() {
            "/_jitgate/login" => return self.login(req, peer).await,
            "/_jitgate/open" => return self.open(req, peer).await,
            "/_jitgate/logout" => return self.logout(req),
            _ => {}
        }
        let session = if let Some(token) = bearer(&req) {
            match conn.last_bearer.get(&token) {
                Some(s) => s,
                None => match self.session_for_token(&token, peer).await {
                    Ok(s) => {
                        conn.last_bearer.set(token, &s);
                        s
                    }
                    Err(why) => return pages::refused(StatusCode::FORBIDDEN, &why, None),
                },
            }
        } else if let Some(handle) = cookie_handle(&req) {
            match self
                .by_cookie
                .lock()
                .expect("cookie lock")
                .get(&handle)
                .cloned()
            {
                Some(s) => s,
                None => return pages::login_needed(&req, "your jitgate login is no longer valid"),
            }
        } else {
            return pages::login_needed(&req, "no grant token");
        };
        let cut = conn.carry(&session);
        if cut.is_cancelled() {
            let why = session
                .guard
                .ending()
                .map(|e| e.reason)
                .unwrap_or_else(|| "the session ended".into());
            return pages::refused(
                StatusCode::FORBIDDEN,
                &format!("session terminated: {why}"),
                None,
            );
        }
        self.forward(session, req, cut, &conn).await
    }
}
