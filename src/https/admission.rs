//! Who a request belongs to: bearer tokens (and the last one each client connection presented),
//! the cookie of the login page and of Open console, admitting a token or code and opening its
//! session, and logging out.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, Weak};

use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use super::forward::Upstream;
use super::record::HttpLog;
use super::timing::{DRAIN_AFTER_CUT, TOMBSTONE};
use super::{COOKIE, Gateway, HttpSession, RespBody, full, pages};
use crate::config::{TargetKind, TargetSpec};
use crate::grant::admission::AdmitRequest;
use crate::session::{Cause, FileInfo, NewSession};

/// The last bearer token a client connection presented and its session, so that a client
/// repeating it on a kept-alive connection skips parsing, hashing and the gateway-wide map.
#[derive(Default)]
pub(super) struct LastBearer(Mutex<Option<(String, Weak<HttpSession>)>>);

impl LastBearer {
    /// The session of `token` if it was the last one presented and its session is still held.
    pub(super) fn get(&self, token: &str) -> Option<Arc<HttpSession>> {
        match &*self.0.lock().expect("bearer lock") {
            Some((t, s)) if t == token => s.upgrade(),
            _ => None,
        }
    }

    /// Remember `token` as the last one presented, `s` as its session.
    pub(super) fn set(&self, token: String, s: &Arc<HttpSession>) {
        *self.0.lock().expect("bearer lock") = Some((token, Arc::downgrade(s)));
    }
}

/// The session handle in `req`'s gateway cookie ([`COOKIE`]), if it carries one.
pub(super) fn cookie_handle(req: &Request<Incoming>) -> Option<String> {
    req.headers()
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.to_string())
}

/// The grant token of `req`'s `Authorization: Bearer jgt_...`, if it carries one.
pub(super) fn bearer(req: &Request<Incoming>) -> Option<String> {
    let v = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let t = v
        .strip_prefix("Bearer ")
        .or_else(|| v.strip_prefix("bearer "))?
        .trim();
    t.starts_with("jgt_").then(|| t.to_string())
}

impl Gateway {
    /// Find or create the session of a bearer token.
    pub(super) async fn session_for_token(
        self: &Arc<Self>,
        token: &str,
        peer: SocketAddr,
    ) -> Result<Arc<HttpSession>, String> {
        let hash = match crate::types::GrantToken::parse(token) {
            Ok(t) => t.hash(),
            Err(e) => return Err(e.to_string()),
        };
        if let Some(s) = self
            .by_token
            .lock()
            .expect("token lock")
            .get(&hash)
            .cloned()
        {
            return Ok(s);
        }
        // One admission per token even when its first requests arrive together.
        let gate = self
            .opening
            .lock()
            .expect("opening lock")
            .entry(hash.clone())
            .or_default()
            .clone();
        let _turn = gate.lock().await;
        let existing = self
            .by_token
            .lock()
            .expect("token lock")
            .get(&hash)
            .cloned();
        let result = match existing {
            Some(s) => Ok(s),
            None => match self.admit(token, peer).await {
                Ok(s) => {
                    self.by_token
                        .lock()
                        .expect("token lock")
                        .insert(hash.clone(), s.clone());
                    self.on_end(s.clone(), None, Some(hash.clone()));
                    Ok(s)
                }
                Err(e) => Err(e),
            },
        };
        self.opening.lock().expect("opening lock").remove(&hash);
        result
    }

    /// Admit a token (or an Open console code) and open its session: its recording, and its way
    /// to the target with a client certificate minted for it.
    pub(super) async fn admit(
        self: &Arc<Self>,
        token: &str,
        peer: SocketAddr,
    ) -> Result<Arc<HttpSession>, String> {
        let admission = self
            .admit
            .admit(AdmitRequest {
                token,
                user: None,
                protocol: TargetKind::Https,
                source: peer.ip(),
            })
            .await
            .map_err(|d| {
                self.metrics.admission(TargetKind::Https, false);
                d.message
            })?;
        self.metrics.admission(TargetKind::Https, true);
        let guard = self
            .registry
            .open(
                &admission,
                NewSession {
                    protocol: TargetKind::Https,
                    source: peer.to_string(),
                },
            )
            .await
            .map_err(|e| e.to_string())?;
        let log = match HttpLog::create(&guard.dir().join("http.jsonl")).await {
            Ok(l) => l,
            Err(e) => {
                let why = format!(
                    "recording failed (cannot create http.jsonl: {e}); the session was refused because it cannot be recorded"
                );
                guard.end(Cause::Recording, &why);
                guard.close(None).await;
                return Err(why);
            }
        };
        guard.add_file(FileInfo {
            name: "http.jsonl".into(),
            channel: 0,
            kind: "http".into(),
            command: None,
            summary: None,
        });
        // From here on, a failure ends the session with its reason first, so that the end
        // record says what failed.
        let upstream = self
            .keys
            .mint_client_cert(
                admission.user().name.as_str(),
                admission.grant().as_str(),
                admission.expires_at(),
            )
            .map_err(|e| format!("cannot mint the session's client certificate: {e}"))
            .and_then(|(cert, key)| match admission.spec() {
                TargetSpec::Https { url, server_ca } => Upstream::new(url, server_ca, &cert, &key),
                TargetSpec::Ssh { .. } => Err(format!(
                    "target {} is not an HTTPS target",
                    admission.target().name
                )),
            });
        let upstream = match upstream {
            Ok(u) => u,
            Err(why) => {
                guard.end(Cause::Error, &why);
                guard.close(None).await;
                return Err(why);
            }
        };
        Ok(Arc::new(HttpSession {
            headers: HttpSession::headers(&admission, &upstream),
            admission,
            guard,
            log,
            upstream,
            inflight: Arc::default(),
            conns: Mutex::new(HashMap::new()),
        }))
    }

    /// Once `s` is cut (a task waits for it): cut its client connections, give what is in
    /// flight [`DRAIN_AFTER_CUT`] to be logged, record the end, and keep its entry (`cookie` or
    /// `token_hash`) answering why for [`TOMBSTONE`].
    pub(super) fn on_end(
        self: &Arc<Self>,
        s: Arc<HttpSession>,
        cookie: Option<String>,
        token_hash: Option<String>,
    ) {
        let me = self.clone();
        tokio::spawn(async move {
            s.guard.token().cancelled().await;
            // Cut every client connection that carried the session at once, with a reset: a
            // download that is waiting for the client to read would otherwise see the token
            // only when the client reads again, and the client would read everything queued
            // for it before it saw the end.
            for c in s.conns.lock().expect("conns lock").values() {
                c.cancel();
            }
            let _ = tokio::time::timeout(DRAIN_AFTER_CUT, s.inflight.drained()).await;
            s.guard.add_bytes(
                s.inflight.bytes_in.load(Ordering::Relaxed),
                s.inflight.bytes_out.load(Ordering::Relaxed),
            );
            // Every exchange is on disk before session.json and session.ended digest the file.
            s.log.flush().await;
            s.guard.close(None).await;
            tokio::time::sleep(TOMBSTONE).await;
            if let Some(c) = cookie {
                me.by_cookie.lock().expect("cookie lock").remove(&c);
            }
            if let Some(h) = token_hash {
                me.by_token.lock().expect("token lock").remove(&h);
            }
        });
    }

    /// `/_jitgate/login`: the form, or (`POST`) the token posted from it admitted and the
    /// browser given a cookie for its session.
    pub(super) async fn login(
        self: &Arc<Self>,
        req: Request<Incoming>,
        peer: SocketAddr,
    ) -> Response<RespBody> {
        if req.method() != Method::POST {
            return pages::login_form(None);
        }
        let body = match http_body_util::Limited::new(req.into_body(), 4096)
            .collect()
            .await
        {
            Ok(b) => b.to_bytes(),
            Err(_) => return pages::login_form(Some("the form is too large")),
        };
        let token = form_value(&body, "token").unwrap_or_default();
        let next = form_value(&body, "next")
            .filter(|n| n.starts_with('/') && !n.starts_with("//") && !n.starts_with("/_jitgate"))
            .unwrap_or_else(|| "/".into());
        let session = match self.admit(token.trim(), peer).await {
            Ok(s) => s,
            Err(why) => return pages::login_form(Some(&why)),
        };
        self.start_cookie_session(session, &next)
    }

    /// `GET /_jitgate/open?code=jgo_...`: the console's "Open console" for a grant, without the
    /// token (the code works once, for a minute).
    pub(super) async fn open(
        self: &Arc<Self>,
        req: Request<Incoming>,
        peer: SocketAddr,
    ) -> Response<RespBody> {
        let code = req
            .uri()
            .query()
            .and_then(|q| form_value(q.as_bytes(), "code"))
            .unwrap_or_default();
        if !code.starts_with(crate::grant::admission::OPEN_CODE_PREFIX) {
            return pages::login_form(Some("this link lacks its code; press Open console again"));
        }
        match self.admit(code.trim(), peer).await {
            Ok(s) => {
                // The browser arrives from the console, another site: a redirect would carry
                // that cross-site origin on, and the browser would withhold the SameSite=Strict
                // cookie from the next request. A page of this site moves it on instead.
                let mut r = self.start_cookie_session(s, "/");
                *r.status_mut() = StatusCode::OK;
                r.headers_mut().remove(header::LOCATION);
                *r.body_mut() = full(
                    StatusCode::OK,
                    "text/html; charset=utf-8",
                    pages::continue_page(),
                )
                .into_body();
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/html; charset=utf-8"),
                );
                // The target's first page must not see this address (its code) as a referrer.
                r.headers_mut().insert(
                    header::REFERRER_POLICY,
                    HeaderValue::from_static("no-referrer"),
                );
                r.headers_mut()
                    .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
                r
            }
            Err(why) => pages::login_form(Some(&why)),
        }
    }

    /// Bind `session` to a new cookie and send the browser to `next`.
    fn start_cookie_session(
        self: &Arc<Self>,
        session: Arc<HttpSession>,
        next: &str,
    ) -> Response<RespBody> {
        let handle = format!("c_{}", crate::types::random_id(52));
        self.by_cookie
            .lock()
            .expect("cookie lock")
            .insert(handle.clone(), session.clone());
        self.on_end(session.clone(), Some(handle.clone()), None);
        let mut r = full(
            StatusCode::SEE_OTHER,
            "text/plain; charset=utf-8",
            String::new(),
        );
        r.headers_mut().insert(
            header::SET_COOKIE,
            HeaderValue::from_str(&format!(
                "{COOKIE}={handle}; Path=/; Secure; HttpOnly; SameSite=Strict"
            ))
            .expect("cookie is ascii"),
        );
        r.headers_mut().insert(
            header::LOCATION,
            HeaderValue::from_str(next).unwrap_or(HeaderValue::from_static("/")),
        );
        r
    }

    /// `/_jitgate/logout`: end the browser's session and expire its cookie.
    pub(super) fn logout(self: &Arc<Self>, req: Request<Incoming>) -> Response<RespBody> {
        if let Some(handle) = cookie_handle(&req)
            && let Some(s) = self.by_cookie.lock().expect("cookie lock").remove(&handle)
        {
            s.guard.end(Cause::Client, "logged out");
        }
        let mut r = pages::login_form(Some("logged out"));
        r.headers_mut().insert(
            header::SET_COOKIE,
            HeaderValue::from_static(
                "__Host-jitgate=; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=0",
            ),
        );
        r
    }
}

/// A field of an `application/x-www-form-urlencoded` body.
pub(crate) fn form_value(body: &[u8], name: &str) -> Option<String> {
    let text = std::str::from_utf8(body).ok()?;
    text.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == name).then(|| percent_decode(v))
    })
}

pub(super) fn percent_decode(s: &str) -> String {
    // `+` is a space in a form; `%XX` needs two hex digits (`%+1` is not an escape).
    String::from_utf8_lossy(&super::percent_decode_lossy(&s.replace('+', " "))).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_values_are_decoded() {
        assert_eq!(
            form_value(b"a=1&token=jgt_ab%2Bc&next=%2Fx", "token").as_deref(),
            Some("jgt_ab+c")
        );
        assert_eq!(form_value(b"token=a+b", "token").as_deref(), Some("a b"));
        assert_eq!(form_value(b"x=%zz", "x").as_deref(), Some("%zz"));
    }
}
