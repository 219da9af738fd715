//! API-key authentication: `Authorization: Bearer jgk_...`, compared by SHA-256 in constant
//! time against every configured user; failures are audited and rate-limited per source.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::StatusCode;
use axum::http::request::Parts;

use super::AppState;
use super::error::ApiError;
use crate::audit::AuditEvent;
use crate::config::{Role, UserConfig};
use crate::crypto;

/// The authenticated caller.
#[derive(Debug, Clone)]
pub struct Caller(pub UserConfig);

impl Caller {
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

/// Failed API authentications per source in one-minute windows.
#[derive(Default)]
pub struct AuthLimiter {
    map: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

const WINDOW: Duration = Duration::from_secs(60);
const MAX_FAILURES: u32 = 20;

impl AuthLimiter {
    fn blocked(&self, ip: IpAddr) -> bool {
        let map = self.map.lock().expect("limiter lock");
        map.get(&ip)
            .is_some_and(|(s, n)| s.elapsed() < WINDOW && *n >= MAX_FAILURES)
    }

    fn fail(&self, ip: IpAddr) -> u32 {
        let mut map = self.map.lock().expect("limiter lock");
        if map.len() > 100_000 {
            map.retain(|_, (s, _)| s.elapsed() < WINDOW);
        }
        let e = map.entry(ip).or_insert((Instant::now(), 0));
        if e.0.elapsed() >= WINDOW {
            *e = (Instant::now(), 0);
        }
        e.1 += 1;
        e.1
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
        if state.auth_limiter.blocked(ip) {
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "too many failed API authentications from this address; wait a minute",
            ));
        }
        let result = authenticate(parts, state);
        match result {
            Ok(u) => Ok(Caller(u)),
            Err(reason) => {
                let n = state.auth_limiter.fail(ip);
                if n <= MAX_FAILURES {
                    let path: String = parts.uri.path().chars().take(200).collect();
                    if let Err(e) = state
                        .grants
                        .audit()
                        .record(
                            "anonymous",
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
                Err(ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    reason,
                ))
            }
        }
    }
}

fn authenticate(parts: &Parts, state: &AppState) -> Result<UserConfig, &'static str> {
    let header = parts.headers.get(axum::http::header::AUTHORIZATION).ok_or(
        "missing API key; send Authorization: Bearer jgk_... (set JITGATE_API_KEY for the CLI)",
    )?;
    let value = header
        .to_str()
        .map_err(|_| "the Authorization header is not text")?;
    let key = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .ok_or("the Authorization header must be Bearer jgk_...")?
        .trim();
    if !key.starts_with("jgk_") || key.len() > 200 {
        return Err("that is not a jitgate API key (they start with jgk_)");
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
