//! The `/metrics` endpoint and the middleware counting API requests.

use std::sync::Arc;

use axum::Router;
use axum::extract::{FromRequestParts, MatchedPath, Request, State};
use axum::http::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::AppState;
use super::auth::Caller;
use super::error::ApiError;
use crate::config::Role;
pub use crate::metrics::Metrics;
use crate::types::Secret;

/// `GET /metrics` on the API listener: for a scraper with the metrics token, or an admin's or
/// reviewer's API key. The format follows the `Accept` header.
pub async fn scrape(State(state): State<AppState>, req: Request) -> Result<Response, ApiError> {
    let (mut parts, _) = req.into_parts();
    if !has_token(&parts.headers, state.metrics_token.as_ref()) {
        let caller = Caller::from_request_parts(&mut parts, &state).await?;
        caller.require(&[Role::Admin, Role::Reviewer], "read the metrics")?;
    }
    Ok(exposition(&state.metrics, &parts.headers))
}

/// The router of the plain-HTTP metrics listener (`gateway.metrics_listen`): `GET /metrics`,
/// guarded by the metrics token when one is configured.
pub fn listener_router(metrics: Arc<Metrics>, token: Option<Secret>) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(move |headers: HeaderMap| {
                let metrics = metrics.clone();
                let token = token.clone();
                async move {
                    if token.is_some() && !has_token(&headers, token.as_ref()) {
                        return ApiError::new(
                            StatusCode::UNAUTHORIZED,
                            "unauthorized",
                            "send Authorization: Bearer <gateway.metrics_token>",
                        )
                        .into_response();
                    }
                    exposition(&metrics, &headers)
                }
            }),
        )
        .fallback(|| async { ApiError::not_found("only GET /metrics is served here") })
}

/// Whether the request carries `token` as its bearer credential (constant-time compare).
fn has_token(headers: &HeaderMap, token: Option<&Secret>) -> bool {
    let (Some(token), Some(value)) = (token, headers.get(AUTHORIZATION)) else {
        return false;
    };
    let presented = value.as_bytes().strip_prefix(b"Bearer ").unwrap_or(b"");
    crate::crypto::ct_eq(
        &crate::crypto::sha256(presented),
        &crate::crypto::sha256(token.expose().as_bytes()),
    )
}

fn exposition(metrics: &Metrics, headers: &HeaderMap) -> Response {
    let accept = headers.get(ACCEPT).and_then(|v| v.to_str().ok());
    let (content_type, body) = metrics.encode_for(accept);
    ([(CONTENT_TYPE, content_type)], body).into_response()
}

/// Middleware counting API requests by matched route (never the raw path: ids would explode
/// the label set).
pub async fn track(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let method = req.method().as_str().to_string();
    let resp = next.run(req).await;
    state
        .metrics
        .api_request(method, route, resp.status().as_u16());
    resp
}
