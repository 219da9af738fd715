//! API-key authentication: `Authorization: Bearer jgk_...`, compared by SHA-256 in constant
//! time against every configured user; failures are audited and rate-limited per source.

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

/// Failed API authentications per source: past [`MAX_FAILURES`] a minute, each further
/// failure is answered with 429 after [`crate::grant::throttle::DELAY`]; a valid key is always
/// checked and accepted.
#[derive(Debug)]
pub struct AuthLimiter(Throttle);

/// Failures per source and minute answered at once.
const MAX_FAILURES: u32 = 20;

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
        let reason = match authenticate(parts, state) {
            Ok(u) => return Ok(Caller(u)),
            Err(reason) => reason,
        };
        // Only a credential that was presented and wrong counts towards the throttle: a call
        // without one guesses nothing.
        let presented = parts
            .headers
            .contains_key(axum::http::header::AUTHORIZATION);
        let throttled = presented && state.auth_limiter.0.fail(ip);
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
