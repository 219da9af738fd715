//! People's sign-in over the API: who am I, the CLI's code exchange (`jitgate login`),
//! sign-out of a CLI credential, and one-time sign-in links (admins, where there is no
//! identity provider).

use axum::Json;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::Deserialize;
use serde_json::json;

use super::auth::{Caller, Via, source};
use super::error::ApiError;
use super::{ApiResult, AppState, ok};
use crate::config::Role;
use crate::types::{UserName, rfc3339};

pub(super) async fn whoami(caller: Caller) -> ApiResult {
    let u = caller.0;
    let (method, signed_in_at, expires_at, sign_in) = match &caller.1 {
        Via::ApiKey => ("api_key", None, u.api_key_expiry().map(rfc3339), None),
        Via::SignIn(s) => (
            s.method.as_str(),
            Some(rfc3339(s.auth_time)),
            Some(rfc3339(s.expires_at)),
            Some(s.id.clone()),
        ),
    };
    ok(json!({
        "name": u.name,
        "user": u.name,
        "roles": u.roles,
        "groups": u.groups,
        "vendor": u.vendor,
        "method": method,
        "signed_in_at": signed_in_at,
        "expires_at": expires_at,
        "sign_in": sign_in,
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CodeBody {
    code: String,
    code_verifier: String,
}

/// `jitgate login`'s last step: its one-time code and PKCE verifier for a `jgs_` credential.
pub(super) async fn cli_token(
    State(state): State<AppState>,
    parts: Parts,
    body: Result<Json<CodeBody>, JsonRejection>,
) -> ApiResult {
    let Json(b) = body?;
    let ip = source(&parts);
    if b.code.len() > 100 || b.code_verifier.len() > 128 {
        return Err(ApiError::bad_request("code or code_verifier is too long"));
    }
    match state.identity.redeem(&b.code, &b.code_verifier).await {
        Ok((credential, a)) => ok(json!({
            "credential": credential,
            "user": a.user.name,
            "roles": a.user.roles,
            "groups": a.user.groups,
            "signed_in_at": rfc3339(a.sign_in.auth_time),
            "expires_at": rfc3339(a.sign_in.expires_at),
        })),
        Err(why) => {
            let throttled = state.auth_limiter.fail(ip);
            super::auth::audit_denied(&parts, &state, ip, &why.0).await;
            if throttled {
                tokio::time::sleep(crate::grant::throttle::DELAY).await;
            }
            Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                why.0,
            ))
        }
    }
}

/// End the caller's own sign-in (`jitgate logout`; the console's cookie too).
pub(super) async fn logout(State(state): State<AppState>, caller: Caller) -> ApiResult {
    let Via::SignIn(s) = &caller.1 else {
        return Err(ApiError::bad_request(
            "an API key cannot sign out; unset JITGATE_API_KEY, or ask an admin to remove the key",
        ));
    };
    state
        .identity
        .sign_out(s, "signed out")
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "cannot record a sign-out");
            ApiError::internal()
        })?;
    ok(json!({ "signed_out": true, "sign_in": s.id }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct LinkBody {
    user: String,
}

/// A one-time browser sign-in link for a configured user (admins; no identity provider).
pub(super) async fn sign_in_link(
    State(state): State<AppState>,
    parts: Parts,
    caller: Caller,
    body: Result<Json<LinkBody>, JsonRejection>,
) -> ApiResult {
    caller.require(&[Role::Admin], "make sign-in links")?;
    let Json(b) = body?;
    if state.identity.oidc() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "oidc_configured",
            "people sign in through the identity provider here ([oidc]); sign-in links are for gateways without one",
        ));
    }
    let user: UserName = b
        .user
        .parse()
        .map_err(|e: String| ApiError::bad_request(e))?;
    let token = state
        .identity
        .link(&user)
        .await
        .map_err(|r| ApiError::bad_request(r.0))?;
    let host = parts
        .uri
        .authority()
        .map(|a| a.to_string())
        .or_else(|| {
            parts
                .headers
                .get(axum::http::header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_string)
        })
        .unwrap_or_else(|| state.grants.config().gateway.api_listen.to_string());
    let expires = crate::types::now() + crate::identity::LINK_WINDOW.as_secs() as i64;
    // 200, not 201: a link is a credential to hand over, not a resource the API serves.
    ok(json!({
        "user": user,
        "url": format!("https://{host}/auth/link?token={token}"),
        "expires_at": rfc3339(expires),
    }))
}
