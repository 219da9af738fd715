//! WebSocket pass-through: after both sides switch protocols, frames flow both ways as bytes,
//! counted, until either side closes or the session is cut.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use http::Request;
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

use super::HttpSession;
use super::record::Exchange;

/// Whether the request asks for a WebSocket upgrade.
pub fn is_upgrade(req: &Request<Incoming>) -> bool {
    let has = |name: http::header::HeaderName, want: &str| {
        req.headers()
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(want))
    };
    has(http::header::UPGRADE, "websocket") && has(http::header::CONNECTION, "upgrade")
}

/// Join the client's and the target's upgraded connections (on a task of their own) until
/// either side closes or the session is cut, then record the exchange with its byte counts.
pub fn bridge(
    s: Arc<HttpSession>,
    client: OnUpgrade,
    upstream: OnUpgrade,
    mut exchange: Exchange,
    started: Instant,
) {
    tokio::spawn(async move {
        let token = s.guard.token();
        let (c, u) = match tokio::join!(client, upstream) {
            (Ok(c), Ok(u)) => (c, u),
            _ => {
                exchange.aborted = true;
                s.log.record(exchange).await;
                s.inflight.leave(0, 0);
                return;
            }
        };
        let (cr, cw) = tokio::io::split(TokioIo::new(c));
        let (ur, uw) = tokio::io::split(TokioIo::new(u));
        let up = Arc::new(AtomicU64::new(0));
        let down = Arc::new(AtomicU64::new(0));
        let aborted = tokio::select! {
            _ = async {
                tokio::join!(pipe(cr, uw, up.clone()), pipe(ur, cw, down.clone()))
            } => false,
            _ = token.cancelled() => true,
        };
        let (to_target, to_client) = (up.load(Ordering::Relaxed), down.load(Ordering::Relaxed));
        exchange.bytes_in = to_target;
        exchange.bytes_out = to_client;
        exchange.aborted = aborted;
        exchange.duration_ms = started.elapsed().as_millis() as u64;
        // Recorded before it counts as finished, so the session's end sees this line.
        s.log.record(exchange).await;
        s.inflight.leave(to_client, to_target);
    });
}

/// Copy one direction, counting bytes as they go (so a cut still knows how much passed).
async fn pipe<R, W>(mut r: R, mut w: W, count: Arc<AtomicU64>)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if w.write_all(&buf[..n]).await.is_err() {
                    break;
                }
                count.fetch_add(n as u64, Ordering::Relaxed);
            }
        }
    }
    let _ = w.shutdown().await;
}
