//! WebSocket pass-through: after both sides switch protocols, frames flow both ways as bytes,
//! counted, until either side closes or the session is cut.

use std::sync::Arc;
use std::time::Instant;

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

/// Join the client's and the target's upgraded connections.
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
        let mut c = TokioIo::new(c);
        let mut u = TokioIo::new(u);
        let (to_target, to_client, aborted) = tokio::select! {
            r = tokio::io::copy_bidirectional(&mut c, &mut u) => {
                let (a, b) = r.unwrap_or((0, 0));
                (a, b, false)
            }
            _ = token.cancelled() => (0, 0, true),
        };
        exchange.bytes_in = to_target;
        exchange.bytes_out = to_client;
        exchange.aborted = aborted;
        exchange.duration_ms = started.elapsed().as_millis() as u64;
        // Recorded before it counts as finished, so the session's end sees this line.
        s.log.record(exchange).await;
        s.inflight.leave(to_client, to_target);
    });
}
