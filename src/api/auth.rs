//! Who calls the API: an API key (`Authorization: Bearer jgk_...`, compared by SHA-256 in
//! constant time against every configured user), a CLI credential from `jitgate login`
//! (`Bearer jgs_...`), or a console session (cookie [`CONSOLE_COOKIE`], whose state-changing
//! requests must also carry a same-origin `Origin` and the session's CSRF token). Failures are
//! audited and rate-limited per source.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::StatusCode;
use axum::http::request::Parts;

use super::AppState;
use super::error::ApiError;
use crate::audit::AuditEvent;
use crate::config::{Role, UserConfig};
use crate::crypto;
use crate::grant::throttle::Throttle;
use crate::identity::CLI_PREFIX;
use crate::store::{SignIn, SignInKind};

/// The console's session cookie: `__Host-` binds it to this host (any port), so it is a
/// different cookie from the HTTPS gateway's `__Host-jitgate`, which the same browser sends to
/// the same host.
pub const CONSOLE_COOKIE: &str = "__Host-jitgate-console";
/// The header a console page sends its CSRF token in.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// The authenticated caller and how they proved it.
#[derive(Debug, Clone)]
pub struct Caller(pub UserConfig, pub Via);

/// How a caller authenticated.
#[derive(Debug, Clone)]
pub enum Via {
    /// An API key (automation).
    ApiKey,
    /// A person's sign-in: console session or CLI credential.
    SignIn(Box<SignIn>),
}

impl Caller {
    /// Where the provider decides (`[oidc]`), refuse unless the caller is a person who signed
    /// in within `step_up_max_age`: for high-impact approvals, break-glass and its review.
    pub fn require_recent_sign_in(&self, state: &AppState, what: &str) -> Result<(), ApiError> {
        let Some(o) = &state.grants.config().oidc else {
            return Ok(());
        };
        match &self.1 {
            Via::ApiKey => Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "person_required",
                format!(
                    "to {what} a person must sign in (the console, or jitgate login); an API key cannot do it"
                ),
            )),
            Via::SignIn(s)
                if crate::types::now() - s.auth_time > o.step_up_max_age.as_secs() as i64 =>
            {
                let (message, extra) = match s.kind {
                    SignInKind::Cli => (
                        format!(
                            "sign in again with jitgate login to {what}: your sign-in is older than {}",
                            o.step_up_max_age
                        ),
                        None,
                    ),
                    SignInKind::Browser => (
                        format!(
                            "sign in again to {what}: your sign-in is older than {}",
                            o.step_up_max_age
                        ),
                        Some(serde_json::json!({ "login_url": "/login?step_up=1" })),
                    ),
                };
                let mut e = ApiError::new(StatusCode::FORBIDDEN, "step_up_required", message);
                e.extra = extra;
                Err(e)
            }
            Via::SignIn(_) => Ok(()),
        }
    }

    /// Refuse unless the caller holds one of `roles`.
    pub fn require(&self, roles: &[Role], what: &str) -> Result<(), ApiError> {
        if roles.iter().any(|r| self.0.has_role(*r)) {
            return Ok(());
        }
        let names: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
        Err(ApiError::forbidden(format!(
            "{} may not {what}: it needs the {} role",
            self.0.name,
            names.join(" or ")
        )))
    }
}

/// Failed API authentications per source: past [`MAX_FAILURES`] a minute, each further
/// failure is answered with 429 after [`crate::grant::throttle::DELAY`]; a valid key is always
/// checked and accepted.
#[derive(Debug)]
pub struct AuthLimiter(Throttle);

/// Failures per source and minute answered at once.
const MAX_FAILURES: u32 = 20;

impl AuthLimiter {
    /// Count a failure from `ip`; `true` when it should be answered slowly.
    pub fn fail(&self, ip: IpAddr) -> bool {
        self.0.fail(ip)
    }
}

impl Default for AuthLimiter {
    fn default() -> Self {
        Self(Throttle::new(MAX_FAILURES))
    }
}

/// The remote address of the connection (set by the server for every request).
pub fn source(parts: &Parts) -> IpAddr {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
        .unwrap_or(IpAddr::from([0, 0, 0, 0]))
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let ip = source(parts);
        let (reason, presented) = match authenticate(parts, state).await {
            Ok(c) => return Ok(c),
            Err(Failure::Csrf(why)) => {
                audit_denied(parts, state, ip, &why).await;
                return Err(ApiError::new(StatusCode::FORBIDDEN, "csrf", why));
            }
            Err(Failure::Bad(reason)) => (reason, true),
            Err(Failure::Missing(reason)) => (reason.to_string(), false),
        };
        // Only a credential that was presented and wrong counts towards the throttle: a call
        // without one guesses nothing.
        let throttled = presented && state.auth_limiter.0.fail(ip);
        audit_denied(parts, state, ip, &reason).await;
        if throttled {
            tokio::time::sleep(crate::grant::throttle::DELAY).await;
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!(
                    "{reason}; too many failed API authentications from this address, so each failure is answered slowly (a valid key is still accepted at once)"
                ),
            ));
        }
        Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            reason,
        ))
    }
}

/// Audit a refused authentication (within the flood budget), with the path as sent.
pub(super) async fn audit_denied(parts: &Parts, state: &AppState, ip: IpAddr, reason: &str) {
    {
        // The path as the caller sent it (inside the nested router, `uri` lacks `/api/v1`).
        let path: String = parts
            .extensions
            .get::<axum::extract::OriginalUri>()
            .map_or(parts.uri.path(), |u| u.0.path())
            .chars()
            .take(200)
            .collect();
        if let Err(e) = state
            .grants
            .audit()
            .refusal(
                "anonymous",
                ip,
                AuditEvent::ApiAuthDenied {
                    source: ip.to_string(),
                    path,
                    reason: reason.to_string(),
                },
            )
            .await
        {
            tracing::error!(error = %e, "cannot audit an API authentication failure");
        }
    }
}

/// Why a caller is not authenticated.
enum Failure {
    /// No credential at all (does not count towards the throttle).
    Missing(&'static str),
    /// A credential that is wrong, expired or ended.
    Bad(String),
    /// A console session without a same-origin `Origin` or the right CSRF token.
    Csrf(String),
}

async fn authenticate(parts: &Parts, state: &AppState) -> Result<Caller, Failure> {
    if let Some(header) = parts.headers.get(axum::http::header::AUTHORIZATION) {
        let value = header
            .to_str()
            .map_err(|_| Failure::Bad("the Authorization header is not text".into()))?;
        let key = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
            .ok_or_else(|| {
                Failure::Bad(
                    "the Authorization header must be Bearer jgk_... or Bearer jgs_...".into(),
                )
            })?
            .trim();
        if key.starts_with(CLI_PREFIX) {
            let a = state
                .identity
                .authenticate(key, SignInKind::Cli)
                .await
                .map_err(Failure::Bad)?;
            return Ok(Caller(a.user, Via::SignIn(Box::new(a.sign_in))));
        }
        return api_key(key, state)
            .map(|u| Caller(u, Via::ApiKey))
            .map_err(|m| Failure::Bad(m.into()));
    }
    let Some(handle) = cookie(&parts.headers, CONSOLE_COOKIE) else {
        return Err(Failure::Missing(
            "missing API key; send Authorization: Bearer jgk_... (set JITGATE_API_KEY for the CLI), or sign in with jitgate login",
        ));
    };
    let a = state
        .identity
        .authenticate(&handle, SignInKind::Browser)
        .await
        .map_err(Failure::Bad)?;
    if !parts.method.is_safe() {
        check_csrf(parts, &a.sign_in)?;
    }
    Ok(Caller(a.user, Via::SignIn(Box::new(a.sign_in))))
}

/// A state-changing request with the console cookie must come from the console's own origin
/// and carry its session's CSRF token: another site (even one on this host, such as a target
/// behind the HTTPS gateway) cannot act in a signed-in browser.
fn check_csrf(parts: &Parts, s: &SignIn) -> Result<(), Failure> {
    origin_matches(parts).map_err(Failure::Csrf)?;
    let sent = parts
        .headers
        .get(CSRF_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let expected = s.csrf.as_deref().unwrap_or("");
    if expected.is_empty() || !crypto::ct_eq(sent.as_bytes(), expected.as_bytes()) {
        return Err(Failure::Csrf(
            "missing or wrong CSRF token (X-CSRF-Token); reload the console page and try again"
                .into(),
        ));
    }
    Ok(())
}

/// Whether the request came from this listener's own pages: `Origin` is `https://` + the host
/// it was sent to, or (browsers send `Origin: null` under `Referrer-Policy: no-referrer`) the
/// browser says `Sec-Fetch-Site: same-origin`. Otherwise why not.
pub fn origin_matches(parts: &Parts) -> Result<(), String> {
    let header = |name: axum::http::HeaderName| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let host = parts
        .uri
        .authority()
        .map(|a| a.as_str().to_string())
        .unwrap_or_else(|| header(axum::http::header::HOST));
    let origin = header(axum::http::header::ORIGIN);
    let site = header(axum::http::HeaderName::from_static("sec-fetch-site"));
    let own = !host.is_empty() && origin == format!("https://{host}");
    let same = (origin.is_empty() || origin == "null") && site == "same-origin";
    if own || same {
        return Ok(());
    }
    let from = match (origin.as_str(), site.as_str()) {
        ("", "") => "no Origin header".to_string(),
        ("" | "null", s) => format!("Sec-Fetch-Site: {s}"),
        (o, _) => o.to_string(),
    };
    Err(format!(
        "this request came from another site ({from}); the console acts only on requests from its own pages"
    ))
}

/// The value of the cookie `name` (exact name: `__Host-jitgate` is not `__Host-jitgate-console`).
pub fn cookie(headers: &axum::http::HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim().to_string())
}

fn api_key(key: &str, state: &AppState) -> Result<UserConfig, &'static str> {
    if !key.starts_with("jgk_") || key.len() > 200 {
        return Err(
            "that is not a jitgate API key (they start with jgk_) or CLI credential (jgs_)",
        );
    }
    let digest = crypto::sha256(key.as_bytes());
    let mut found: Option<&UserConfig> = None;
    // Check every user so timing does not reveal which one matched.
    for u in &state.grants.config().users {
        if let Some(h) = &u.api_key_sha256
            && let Ok(expected) = hex::decode(h)
            && crypto::ct_eq(&expected, &digest)
        {
            found = Some(u);
        }
    }
    let user = found.ok_or("unknown API key; ask an admin for a key (jitgate api-key new)")?;
    if let Some(exp) = user.api_key_expiry()
        && crate::types::now() >= exp
    {
        return Err("this API key has expired; ask an admin for a new one");
    }
    Ok(user.clone())
}
