//! One exchange through the HTTPS gateway, once its session is found, in three steps:
//! [`prepare`] checks the request (the task's allow-list, the recording) and builds the one the
//! target gets, [`Gateway::send`] sends it on a target connection, raced against the session's
//! cut and `gateway.target_timeout`, and [`answer`] turns the target's response into the
//! client's, recorded in `http.jsonl` when it ends. jitgate's own credentials (its bearer tokens,
//! cookies and `X-Jitgate-*` headers) never reach a target, and a target cannot set its cookies.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use tokio_util::sync::CancellationToken;

use super::conn::ClientConn;
use super::forward::{self, ReqBody, TargetRouter, Upstream};
use super::record::{self, CountIn, Exchange, Pending, Tap};
use super::{Gateway, HttpSession, MAX_REQUEST_BODY, RespBody, http_allowed, pages, websocket};
use crate::config::Allow;
use crate::session::Cause;

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// An exchange under way: its record so far and what the answer needs of the request.
struct Underway {
    /// The line for `http.jsonl`, completed as the exchange goes on.
    exchange: Exchange,
    started: Instant,
    /// Bytes of the request body read so far.
    bytes_in: Arc<AtomicU64>,
    /// The client's side of a websocket upgrade (websocket requests only).
    client_upgrade: Option<OnUpgrade>,
    /// The gateway as the client named it (`Host`, visible ASCII), for `X-Forwarded-Host`
    /// and `Location`.
    gateway_host: HeaderValue,
}

impl Gateway {
    /// Forward `req` of session `s`, come on client connection `conn`, to the target and its
    /// answer back, cut on `cut` (this connection's view of the session's end).
    pub(super) async fn forward(
        self: &Arc<Self>,
        s: Arc<HttpSession>,
        req: Request<Incoming>,
        cut: CancellationToken,
        conn: &ClientConn,
    ) -> Response<RespBody> {
        let (up_req, mut underway) = match prepare(&s, req, &conn.client_ip).await {
            Ok(prepared) => prepared,
            Err(refusal) => return refusal,
        };
        s.inflight.enter();
        let websocket = underway.client_upgrade.is_some();
        match self.send(&s, up_req, websocket, &cut, &conn.targets).await {
            Ok(resp) => answer(&s, resp, underway, cut),
            Err((status, why)) => {
                let ex = &mut underway.exchange;
                ex.status = status.as_u16();
                ex.refused = Some(why.clone());
                ex.duration_ms = underway.started.elapsed().as_millis() as u64;
                s.log.record(underway.exchange).await;
                s.inflight
                    .leave(0, underway.bytes_in.load(Ordering::Relaxed));
                pages::refused(status, &why, None)
            }
        }
    }

    /// Step 2: send `req` to `s`'s target (a websocket on a connection of its own, any other
    /// request through this client connection's `targets`) and wait for the head of the answer,
    /// unless the session is cut first or the target stays silent past `gateway.target_timeout`.
    async fn send(
        &self,
        s: &Arc<HttpSession>,
        req: Request<ReqBody>,
        websocket: bool,
        cut: &CancellationToken,
        targets: &TargetRouter,
    ) -> Result<Response<Incoming>, (StatusCode, String)> {
        let silence = self.settings.target_timeout.duration();
        tokio::select! {
            r = async {
                if websocket {
                    s.upstream.send(req, true).await
                } else {
                    targets.send(s, req).await
                }
            } => r.map_err(|why| (StatusCode::BAD_GATEWAY, why)),
            _ = cut.cancelled() => Err((StatusCode::BAD_GATEWAY, "the session was terminated".into())),
            _ = tokio::time::sleep(silence) => Err((
                StatusCode::GATEWAY_TIMEOUT,
                format!(
                    "target {} did not begin to answer within {} (gateway.target_timeout); try again or ask its admins",
                    s.admission.target().name.as_str(),
                    crate::types::Ttl::from_secs(silence.as_secs())
                ),
            )),
        }
    }
}

/// Step 1: refuse what the task does not allow (recorded) or what cannot be recorded, then
/// build the request the target gets: its URI under the target's base path, the headers of
/// [`headers_for_target`], and a body counted and capped at [`MAX_REQUEST_BODY`].
async fn prepare(
    s: &HttpSession,
    mut req: Request<Incoming>,
    client_ip: &HeaderValue,
) -> Result<(Request<ReqBody>, Underway), Response<RespBody>> {
    let started = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path();
    let query = req.uri().query().map(record::redact_query);
    let is_ws = websocket::is_upgrade(&req);
    let mut exchange = Exchange {
        ts: crate::types::rfc3339_millis_now(),
        method: method.to_string(),
        path: crate::types::first_chars(path, 2048).to_owned(),
        query,
        status: 0,
        bytes_in: 0,
        bytes_out: 0,
        duration_ms: 0,
        upgrade: is_ws.then(|| "websocket".into()),
        refused: None,
        aborted: false,
    };
    let task = s.admission.task();
    let refusal = if !http_allowed(task, &method, path) {
        Some(format!("task {} does not allow {method} {path}", task.name))
    } else if is_ws && !task.allow.contains(&Allow::Websocket) {
        Some(format!("task {} does not allow websockets", task.name))
    } else {
        None
    };
    if let Some(why) = refusal {
        exchange.status = 403;
        exchange.refused = Some(why.clone());
        s.log.record(exchange).await;
        tracing::info!(session = %s.guard.id(), %method, %path, "request outside the task's allow-list refused");
        return Err(pages::refused(StatusCode::FORBIDDEN, &why, Some(task)));
    }
    if s.log.is_closed() {
        s.guard.end(
            Cause::Recording,
            "recording failed: http.jsonl cannot be written",
        );
        return Err(pages::refused(
            StatusCode::SERVICE_UNAVAILABLE,
            "recording failed: the session was ended because it cannot be recorded",
            None,
        ));
    }
    // When the disk falls far behind, requests wait rather than the buffer growing.
    s.log.room().await;
    let gateway_host = req
        .headers()
        .get(header::HOST)
        .filter(|h| h.to_str().is_ok())
        .cloned()
        .or_else(|| {
            let authority = req.uri().authority()?;
            HeaderValue::from_str(authority.as_str()).ok()
        })
        .unwrap_or_else(|| HeaderValue::from_static(""));
    // The upgrade lives in the request's extensions, which do not go to the target.
    let client_upgrade = is_ws.then(|| hyper::upgrade::on(&mut req));
    let (mut parts, body) = req.into_parts();
    let uri = match s.upstream.uri_for(&parts.uri) {
        Ok(u) => u,
        Err(why) => return Err(pages::refused(StatusCode::BAD_REQUEST, &why, None)),
    };
    headers_for_target(
        &mut parts.headers,
        is_ws,
        client_ip,
        &gateway_host,
        &s.headers,
    );
    parts.uri = uri;
    parts.version = http::Version::HTTP_11;
    let bytes_in = Arc::new(AtomicU64::new(0));
    let body = CountIn::new(body, bytes_in.clone(), MAX_REQUEST_BODY).boxed();
    let underway = Underway {
        exchange,
        started,
        bytes_in,
        client_upgrade,
        gateway_host,
    };
    Ok((Request::from_parts(parts, body), underway))
}

/// Step 3: the client's response from the target's `resp`. A websocket that switched protocols
/// is bridged (and recorded when it closes); any other answer gets the headers of
/// [`headers_for_client`] and a body cut on `cut` and recorded when it ends.
fn answer(
    s: &Arc<HttpSession>,
    mut resp: Response<Incoming>,
    underway: Underway,
    cut: CancellationToken,
) -> Response<RespBody> {
    let Underway {
        mut exchange,
        started,
        bytes_in,
        client_upgrade,
        gateway_host,
    } = underway;
    exchange.status = resp.status().as_u16();
    if let Some(client_upgrade) = client_upgrade
        && resp.status() == StatusCode::SWITCHING_PROTOCOLS
    {
        let upstream_upgrade = hyper::upgrade::on(&mut resp);
        let (parts, _) = resp.into_parts();
        let out = Response::from_parts(
            parts,
            http_body_util::Empty::new()
                .map_err(|never| match never {})
                .boxed(),
        );
        websocket::bridge(
            s.clone(),
            client_upgrade,
            upstream_upgrade,
            exchange,
            started,
        );
        return out;
    }
    let (mut parts, body) = resp.into_parts();
    headers_for_client(&mut parts.headers, &s.upstream, &gateway_host);
    let tap = Tap::new(
        body,
        cut,
        Pending {
            log: s.log.clone(),
            exchange,
            started,
            bytes_in,
            inflight: s.inflight.clone(),
        },
    );
    Response::from_parts(parts, tap.boxed())
}

/// The client's request headers as the target gets them: no hop-by-hop headers (but a
/// websocket's `Upgrade`), none of jitgate's credentials or `X-Jitgate-*` headers, then
/// `X-Forwarded-For`/`-Proto`/`-Host` and the session's own headers.
fn headers_for_target(
    h: &mut HeaderMap,
    websocket: bool,
    client_ip: &HeaderValue,
    gateway_host: &HeaderValue,
    session_headers: &[(HeaderName, HeaderValue)],
) {
    forward::strip_hop_by_hop(h, websocket);
    // jitgate's own credential never reaches the target; the target's own auth does.
    if let Some(v) = h.remove(header::AUTHORIZATION) {
        let ours =
            v.as_bytes().starts_with(b"Bearer jgt_") || v.as_bytes().starts_with(b"bearer jgt_");
        if !ours {
            h.insert(header::AUTHORIZATION, v);
        }
    }
    strip_our_cookie(h);
    let jitgate_headers: Vec<_> = h
        .keys()
        .filter(|k| k.as_str().starts_with("x-jitgate-"))
        .cloned()
        .collect();
    for k in jitgate_headers {
        h.remove(k);
    }
    let xff = match h.get(X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
        Some(prev) => {
            HeaderValue::from_bytes(&[prev.as_bytes(), b", ", client_ip.as_bytes()].concat())
        }
        None => Ok(client_ip.clone()),
    };
    if let Ok(v) = xff {
        h.insert(X_FORWARDED_FOR, v);
    }
    h.insert(X_FORWARDED_PROTO, HeaderValue::from_static("https"));
    h.insert(X_FORWARDED_HOST, gateway_host.clone());
    for (k, v) in session_headers {
        h.insert(k, v.clone());
    }
}

/// The target's response headers as the client gets them: no hop-by-hop headers, a `Location`
/// on the target moved to the gateway, and `Set-Cookie` without `Domain` and never one of
/// jitgate's cookies.
fn headers_for_client(h: &mut HeaderMap, upstream: &Upstream, gateway_host: &HeaderValue) {
    forward::strip_hop_by_hop(h, false);
    if let Some(loc) = h.get(header::LOCATION).and_then(|v| v.to_str().ok())
        && let Ok(host) = gateway_host.to_str()
        && let Some(new) = upstream.rewrite_location(loc, &format!("https://{host}"))
        && let Ok(v) = HeaderValue::from_str(&new)
    {
        h.insert(header::LOCATION, v);
    }
    let cookies: Vec<HeaderValue> = h
        .get_all(header::SET_COOKIE)
        .iter()
        .filter(|c| !sets_jitgate_cookie(c))
        .map(forward::rewrite_set_cookie)
        .collect();
    if h.contains_key(header::SET_COOKIE) {
        h.remove(header::SET_COOKIE);
        for c in cookies {
            h.append(header::SET_COOKIE, c);
        }
    }
}

/// Remove jitgate's own cookies from the `Cookie` headers, keeping the target's.
fn strip_our_cookie(h: &mut http::HeaderMap) {
    let values: Vec<String> = h
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .map(str::trim)
                // Neither the gateway's cookie nor the console's reaches a target.
                .filter(|c| {
                    let name = c.split('=').next().unwrap_or_default();
                    !is_jitgate_cookie(name.as_bytes())
                })
                .collect::<Vec<_>>()
                .join("; ")
        })
        .filter(|v| !v.is_empty())
        .collect();
    h.remove(header::COOKIE);
    for v in values {
        if let Ok(v) = HeaderValue::from_str(&v) {
            h.append(header::COOKIE, v);
        }
    }
}

/// Whether a cookie name is one of jitgate's own on this host: the gateway's `__Host-jitgate`
/// and the console's `__Host-jitgate-...` (browsers read the `__Host-` prefix in any case).
fn is_jitgate_cookie(name: &[u8]) -> bool {
    let name = name.trim_ascii();
    name.len() >= COOKIE_PREFIX.len()
        && name[..COOKIE_PREFIX.len()].eq_ignore_ascii_case(COOKIE_PREFIX)
        && (name.len() == COOKIE_PREFIX.len() || name[COOKIE_PREFIX.len()] == b'-')
}

const COOKIE_PREFIX: &[u8] = b"__Host-jitgate";

/// Whether a target's `Set-Cookie` would set one of jitgate's cookies (a target must not plant
/// or overwrite the gateway's or the console's session on this host).
fn sets_jitgate_cookie(v: &HeaderValue) -> bool {
    let b = v.as_bytes();
    let first = b.split(|c| *c == b';').next().unwrap_or_default();
    let name = first.split(|c| *c == b'=').next().unwrap_or_default();
    is_jitgate_cookie(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn neither_the_gateways_nor_the_consoles_cookie_reaches_a_target() {
        let mut h = http::HeaderMap::new();
        h.append(
            header::COOKIE,
            HeaderValue::from_static(
                "a=1; __Host-jitgate-console=secret; __Host-jitgate=grant; __Host-jitgate-login=x",
            ),
        );
        h.append(
            header::COOKIE,
            HeaderValue::from_static("__Host-jitgatey=2; b=3"),
        );
        strip_our_cookie(&mut h);
        let left: Vec<&str> = h
            .get_all(header::COOKIE)
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect();
        assert_eq!(left, ["a=1", "__Host-jitgatey=2; b=3"]);
    }

    #[test]
    fn targets_cannot_set_jitgate_cookies() {
        let sets = |s: &str| sets_jitgate_cookie(&HeaderValue::from_str(s).unwrap());
        assert!(sets("__Host-jitgate=x; Path=/; Secure"));
        assert!(sets("__Host-jitgate-console=x; Path=/; Secure"));
        assert!(sets(" __HOST-JITGATE-console=x"));
        assert!(!sets("__Host-jitgatex=1"));
        assert!(!sets("sid=__Host-jitgate"));
    }
}
