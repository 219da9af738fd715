//! One client connection of the HTTPS gateway: the task that owns it ([`serve`]: TLS handshake,
//! HTTP/1.1 or HTTP/2 with upgrades, its own target connections, shutdown and idle close), and
//! what its requests share ([`ClientConn`]), among it its hold on the sessions it carries.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use futures_util::StreamExt as _;
use http::HeaderValue;
use http_body_util::BodyExt as _;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use super::admission::LastBearer;
use super::forward::{Driver, TargetRouter};
use super::{Gateway, HttpSession, timing};
use crate::gateway::Entered;
use crate::net::idle::{Activity, Guarded};
use crate::net::killable::{Killable, Watch};
use crate::net::read_ahead::{Gather, ReadAhead};

/// What a client connection's requests share: its kill switch and its hold on the sessions it
/// carries (here), the last bearer token it presented, and its own target connections.
///
/// Each session gets the connection's kill switch once, and the connection gets a child of the
/// session's cancellation token: requests check and wait on the child, so concurrent
/// connections of one session do not all contend on the session token's lock.
pub(super) struct ClientConn {
    id: u64,
    kill: CancellationToken,
    /// The sessions this connection carried, each with this connection's view of its cut.
    carried: Mutex<Vec<(Weak<HttpSession>, CancellationToken)>>,
    /// The last bearer token presented on this connection, and its session.
    pub(super) last_bearer: LastBearer,
    /// Which target connection each request goes out on.
    pub(super) targets: TargetRouter,
    /// The client's address as `X-Forwarded-For` names it, formatted once per connection.
    pub(super) client_ip: HeaderValue,
}

impl ClientConn {
    /// A connection from `client` cut by `kill`, whose own target connections' I/O goes to
    /// `drivers`.
    fn new(
        client: IpAddr,
        kill: CancellationToken,
        drivers: mpsc::UnboundedSender<Driver>,
    ) -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        Self {
            id: NEXT.fetch_add(1, Ordering::Relaxed),
            kill,
            carried: Mutex::new(Vec::new()),
            last_bearer: LastBearer::default(),
            targets: TargetRouter::new(drivers),
            client_ip: HeaderValue::from_str(&client.to_string())
                .expect("an IP address is a header value"),
        }
    }

    /// Register with `s` (once) and return this connection's view of the session's cut.
    pub(super) fn carry(&self, s: &Arc<HttpSession>) -> CancellationToken {
        let mut carried = self.carried.lock().expect("carried lock");
        if let Some((_, cut)) = carried
            .iter()
            .find(|(w, _)| std::ptr::eq(w.as_ptr(), Arc::as_ptr(s)))
        {
            return cut.clone();
        }
        s.conns
            .lock()
            .expect("conns lock")
            .insert(self.id, self.kill.clone());
        let cut = s.guard.token().child_token();
        carried.push((Arc::downgrade(s), cut.clone()));
        cut
    }
}

impl Drop for ClientConn {
    fn drop(&mut self) {
        // The connection is gone (an upgraded websocket watches the session token itself).
        let carried = std::mem::take(self.carried.get_mut().expect("carried lock"));
        for (w, _) in carried {
            if let Some(s) = w.upgrade() {
                s.conns.lock().expect("conns lock").remove(&self.id);
            }
        }
    }
}

/// Serve one connection let in through the gateway's door until it closes, `stop` (then a
/// grace), or it is idle: TLS, then HTTP/1.1 or HTTP/2, each request handed to
/// [`Gateway::handle`] with the client's address (the balancer's header's, behind one). Its
/// pass (its place among unauthenticated connections) is given back at its first request.
pub(super) async fn serve(
    gateway: Arc<Gateway>,
    acceptor: TlsAcceptor,
    entered: Entered,
    stop: CancellationToken,
) {
    let Entered {
        stream,
        origin,
        pass,
    } = entered;
    let peer = origin.client;
    let kill = CancellationToken::new();
    let tcp = Killable::new(ReadAhead::new(stream), kill.clone());
    let (drivers_tx, mut drivers_rx) = mpsc::unbounded_channel();
    let conn = Arc::new(ClientConn::new(peer.ip(), kill, drivers_tx));
    let tls = match tokio::time::timeout(timing::HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(s)) => s,
        Ok(Err(_)) => {
            gateway.door.refused_header(&origin).await;
            return;
        }
        Err(_) => return,
    };
    let activity = Activity::new(Some(pass));
    let svc = {
        let activity = activity.clone();
        hyper::service::service_fn(move |req| {
            let gateway = gateway.clone();
            let conn = conn.clone();
            let inflight = activity.request();
            async move {
                let resp = gateway.handle(req, peer, conn).await;
                Ok::<_, std::convert::Infallible>(resp.map(|b| Guarded::new(b, inflight).boxed()))
            }
        })
    };
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(timing::HEADER_READ_TIMEOUT)
        .max_buf_size(64 * 1024);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(128)
        .max_header_list_size(64 * 1024);
    let http = builder.serve_connection_with_upgrades(TokioIo::new(Gather::new(tls)), svc);
    tokio::pin!(http);
    // This connection's own target connections run here too, next to it.
    let mut drivers = futures_util::stream::FuturesUnordered::new();
    let grace = tokio::time::sleep(timing::NEVER);
    tokio::pin!(grace);
    // Polled on every wake of this task: a token of this connection's own, so that
    // connections do not contend on the gateway-wide token's lock, watched without taking
    // its lock at each poll.
    let mut stop = Watch::new(stop.child_token());
    let stopped = std::future::poll_fn(|cx| stop.poll_cancelled(cx));
    tokio::pin!(stopped);
    let mut stopping = false;
    let idle = activity.idle();
    tokio::pin!(idle);
    loop {
        tokio::select! {
            _ = http.as_mut() => break,
            Some(d) = drivers_rx.recv() => drivers.push(d),
            Some(()) = drivers.next(), if !drivers.is_empty() => {}
            _ = stopped.as_mut(), if !stopping => {
                stopping = true;
                http.as_mut().graceful_shutdown();
                grace
                    .as_mut()
                    .reset(tokio::time::Instant::now() + timing::SHUTDOWN_GRACE);
            }
            _ = grace.as_mut(), if stopping => break,
            _ = idle.as_mut(), if !stopping => {
                tracing::debug!(%peer, "closing an idle HTTPS connection");
                stopping = true;
                http.as_mut().graceful_shutdown();
                grace
                    .as_mut()
                    .reset(tokio::time::Instant::now() + timing::IDLE_CLOSE_GRACE);
            }
        }
    }
}
