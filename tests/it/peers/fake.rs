//! What the Jira and ServiceNow test servers (`jira.rs`, `servicenow.rs`) share: an HTTP server on
//! 127.0.0.1 with its own tokio runtime (a test that blocks its thread on `ssh` or the CLI does
//! not stall it) that can stop listening and listen again on the same port; a log of every
//! request it got, with the `Authorization` header it carried and the status it was answered;
//! the credentials it accepts; and faults a test queues for the next requests (429 with
//! `Retry-After`, 401, 403, 500, 503), which the vendor's module words in its own error shape.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use base64::Engine;
use http::Method;
use http::header::AUTHORIZATION;
use tokio_util::sync::CancellationToken;

/// Largest request body a fake reads.
const MAX_BODY: usize = 1 << 20;
/// How long stopping may take (jitgate makes one request per connection, so it is short).
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long listening again on the same port may be retried.
const REBIND_TIMEOUT: Duration = Duration::from_secs(5);

/// The one account a fake accepts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Auth {
    /// `Authorization: Basic base64(user:password)` (Jira Cloud's email and API token,
    /// ServiceNow's user and password).
    Basic { user: String, password: String },
    /// `Authorization: Bearer TOKEN` (a Jira Data Center personal access token, a ServiceNow
    /// OAuth access token).
    Bearer(String),
}

impl Auth {
    pub fn basic(user: &str, password: &str) -> Self {
        Self::Basic {
            user: user.into(),
            password: password.into(),
        }
    }

    /// The `Authorization` header value that proves this account.
    pub fn header(&self) -> String {
        match self {
            Self::Basic { user, password } => format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
            ),
            Self::Bearer(t) => format!("Bearer {t}"),
        }
    }

    /// The account's name (the author of what it writes).
    pub fn name(&self) -> &str {
        match self {
            Self::Basic { user, .. } => user,
            Self::Bearer(_) => "jitgate-integration",
        }
    }
}

/// One request a fake received.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: Method,
    /// Path and query, exactly as sent.
    pub uri: String,
    pub authorization: Option<String>,
    pub body: String,
    /// The status it was answered.
    pub status: u16,
    /// When it arrived.
    pub at: Instant,
}

impl Seen {
    /// `METHOD /path?query`, what [`Gate::fail_next`] matches.
    pub fn line(&self) -> String {
        format!("{} {}", self.method, self.uri)
    }
}

/// An answer a test makes a fake give instead of the real one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// 429 Too Many Requests with `Retry-After: retry_after` (seconds).
    RateLimited { retry_after: u64 },
    /// Any other status (401, 403, 500, 503, ...), with the vendor's error body.
    Status(u16),
}

struct Queued {
    fault: Fault,
    left: usize,
    /// Prefix of `METHOD /path?query` the fault applies to ("" for every request).
    on: String,
}

/// The vendor's error answer for a fault (its body shape, its rate-limit headers).
pub type Refusal = fn(Fault) -> Response;

/// What every request to a fake passes through: the log, queued faults, the credentials check.
pub struct Gate {
    seen: Mutex<Vec<Seen>>,
    faults: Mutex<VecDeque<Queued>>,
    auth: Mutex<Auth>,
    refusal: Refusal,
}

impl Gate {
    pub fn new(auth: Auth, refusal: Refusal) -> Arc<Self> {
        Arc::new(Self {
            seen: Mutex::new(Vec::new()),
            faults: Mutex::new(VecDeque::new()),
            auth: Mutex::new(auth),
            refusal,
        })
    }

    /// Every request so far, in order of arrival.
    pub fn requests(&self) -> Vec<Seen> {
        self.seen.lock().expect("request log").clone()
    }

    /// Answer the next `n` requests whose `METHOD /path?query` starts with `on` ("" for any,
    /// "POST " for every POST) with `fault`. Faults queued earlier are served first.
    pub fn fail_next(&self, n: usize, fault: Fault, on: &str) {
        self.faults.lock().expect("faults").push_back(Queued {
            fault,
            left: n,
            on: on.to_string(),
        });
    }

    /// Accept only `auth` from now on (a rotated token: the old one gets 401).
    pub fn set_auth(&self, auth: Auth) {
        *self.auth.lock().expect("auth") = auth;
    }

    /// The account accepted now.
    pub fn auth(&self) -> Auth {
        self.auth.lock().expect("auth").clone()
    }

    fn take_fault(&self, line: &str) -> Option<Fault> {
        let mut faults = self.faults.lock().expect("faults");
        let i = faults.iter().position(|q| line.starts_with(&q.on))?;
        let q = &mut faults[i];
        let fault = q.fault;
        q.left -= 1;
        if q.left == 0 {
            faults.remove(i);
        }
        Some(fault)
    }
}

/// The middleware every fake's router runs in: log, fault, credentials, then the route.
pub async fn through_gate(State(g): State<Arc<Gate>>, req: Request, next: Next) -> Response {
    let at = Instant::now();
    let (parts, body) = req.into_parts();
    let method = parts.method.clone();
    let uri = parts
        .uri
        .path_and_query()
        .map(|p| p.to_string())
        .unwrap_or_default();
    let authorization = parts
        .headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let bytes = axum::body::to_bytes(body, MAX_BODY)
        .await
        .unwrap_or_default();
    let line = format!("{method} {uri}");
    let expected = g.auth().header();
    let resp = match g.take_fault(&line) {
        Some(f) => (g.refusal)(f),
        None if authorization.as_deref() != Some(expected.as_str()) => {
            (g.refusal)(Fault::Status(401))
        }
        None => {
            next.run(Request::from_parts(parts, Body::from(bytes.clone())))
                .await
        }
    };
    g.seen.lock().expect("request log").push(Seen {
        method,
        uri,
        authorization,
        body: String::from_utf8_lossy(&bytes).into_owned(),
        status: resp.status().as_u16(),
        at,
    });
    resp
}

struct Listening {
    stop: CancellationToken,
    done: mpsc::Receiver<()>,
}

/// An HTTP server on 127.0.0.1 serving `app` from its own runtime; it keeps its port while
/// stopped, so a restarted fake is the same URL.
pub struct HttpPeer {
    rt: Option<tokio::runtime::Runtime>,
    port: u16,
    app: Router,
    listening: Option<Listening>,
}

impl HttpPeer {
    /// Listen on a free port.
    pub fn start(app: Router) -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("ticket-fake")
            .enable_all()
            .build()
            .expect("a runtime for a fake ticket system");
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a fake ticket system");
        let port = l.local_addr().expect("its address").port();
        let mut peer = Self {
            rt: Some(rt),
            port,
            app,
            listening: None,
        };
        peer.listen(l);
        peer
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    fn listen(&mut self, l: std::net::TcpListener) {
        l.set_nonblocking(true).expect("a non-blocking listener");
        let stop = CancellationToken::new();
        let (tx, done) = mpsc::channel();
        let (app, s) = (self.app.clone(), stop.clone());
        self.rt.as_ref().expect("runtime").spawn(async move {
            let l = tokio::net::TcpListener::from_std(l).expect("a tokio listener");
            let _ = axum::serve(l, app)
                .with_graceful_shutdown(s.cancelled_owned())
                .await;
            let _ = tx.send(());
        });
        self.listening = Some(Listening { stop, done });
    }

    /// Stop listening: connections to the port are refused until [`HttpPeer::resume`].
    pub fn stop(&mut self) {
        if let Some(l) = self.listening.take() {
            l.stop.cancel();
            l.done
                .recv_timeout(STOP_TIMEOUT)
                .expect("the fake ticket system stops within 10 s");
        }
    }

    /// Listen again on the same port.
    pub fn resume(&mut self) {
        if self.listening.is_some() {
            return;
        }
        let deadline = Instant::now() + REBIND_TIMEOUT;
        let l = loop {
            match std::net::TcpListener::bind(("127.0.0.1", self.port)) {
                Ok(l) => break l,
                Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50))
                }
                Err(e) => panic!("listen again on 127.0.0.1:{}: {e}", self.port),
            }
        };
        self.listen(l);
    }
}

impl Drop for HttpPeer {
    fn drop(&mut self) {
        if let Some(l) = self.listening.take() {
            l.stop.cancel();
        }
        // Not a blocking shutdown: a test's own runtime may be the caller.
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}
