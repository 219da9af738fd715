//! The control-plane REST API under `/api/v1` (JSON over HTTPS), its OpenAPI document and the
//! Prometheus metrics endpoint. Roles are checked per route; errors are
//! `{ "error": code, "message": what to do }`.

pub mod auth;
pub mod error;
pub mod metrics;
pub mod openapi;
mod sessions;
pub use sessions::{PAGE as SESSIONS_PAGE, PAGE_MAX as SESSIONS_PAGE_MAX};
mod signin;
mod tickets;
mod watch;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::rejection::{BytesRejection, JsonRejection, QueryRejection};
use axum::extract::{ConnectInfo, DefaultBodyLimit, FromRequestParts, Path, Query, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::config::{Role, TargetKind};
use crate::grant::admission::AdmitRequest;
use crate::grant::{NewRequest, Service};
use crate::store::{AuditFilter, GrantState, RequestState};
use crate::types::Secret;
use auth::{AuthLimiter, Caller};
use error::ApiError;
use sessions::{get_session, kill_session, list_sessions};
use tickets::{assign_ticket, close_ticket, get_ticket, open_ticket, ticket_webhook};

/// Largest JSON body the API reads.
pub const MAX_BODY: usize = 64 * 1024;
/// Largest webhook body read.
pub const MAX_WEBHOOK_BODY: usize = 256 * 1024;

/// Shared state of the API handlers.
#[derive(Clone)]
pub struct AppState {
    pub grants: Arc<Service>,
    pub metrics: Arc<metrics::Metrics>,
    pub webhook_secret: Option<Secret>,
    /// When set, `/metrics` accepts it as a bearer token (besides admins' and reviewers' keys).
    pub metrics_token: Option<Secret>,
    pub auth_limiter: Arc<AuthLimiter>,
    pub sessions: Arc<crate::session::Registry>,
    pub identity: Arc<crate::identity::Identity>,
    /// The gateway's keys (evidence bundles are signed with the audit key).
    pub keys: Arc<crate::pki::Keys>,
    /// Where the gateways listen (bound, so port 0 is resolved).
    pub addrs: Addresses,
    /// This node's part among several on PostgreSQL.
    pub cluster: Option<Arc<crate::cluster::Cluster>>,
}

/// The gateways' listening addresses, as people reach them: the host is
/// `gateway.public_name`, the port the bound one.
#[derive(Debug, Clone, Copy, Default)]
pub struct Addresses {
    pub ssh: Option<SocketAddr>,
    pub https: Option<SocketAddr>,
}

type ApiResult = Result<Response, ApiError>;

fn ok(v: impl serde::Serialize) -> ApiResult {
    Ok(Json(v).into_response())
}

/// The one variable segment of a route's path (`{id}`, `{provider}`), percent-decoded; one that
/// does not decode to UTF-8 is refused with the JSON 400 every other bad input gets.
pub(super) struct Segment(pub String);

impl<S: Send + Sync> FromRequestParts<S> for Segment {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path(s) = Path::<String>::from_request_parts(parts, state).await?;
        Ok(Self(s))
    }
}

/// All routes.
pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .route("/health", get(health))
        .route("/openapi.json", get(openapi_doc))
        .route("/whoami", get(signin::whoami))
        .route("/auth/cli-token", post(signin::cli_token))
        .route("/auth/logout", post(signin::logout))
        .route("/auth/links", post(signin::sign_in_link))
        .route("/tickets", post(open_ticket).get(tickets::list_tickets))
        .route("/tickets/{id}", get(get_ticket))
        .route("/tickets/{id}/close", post(close_ticket))
        .route("/tickets/{id}/assign", post(assign_ticket))
        .route(
            "/tickets/webhook/{provider}",
            post(ticket_webhook).layer(DefaultBodyLimit::max(MAX_WEBHOOK_BODY)),
        )
        .route("/requests", post(create_request).get(list_requests))
        .route("/requests/preview", post(preview_request))
        .route("/requests/{id}", get(get_request))
        .route("/requests/{id}/events", get(watch::request_events))
        .route("/requests/{id}/approve", post(approve))
        .route("/requests/{id}/deny", post(deny))
        .route("/requests/{id}/token", post(token))
        .route("/grants", get(list_grants))
        .route("/grants/{id}", get(get_grant))
        .route("/grants/{id}/done", post(done))
        .route("/grants/{id}/open", post(open_console))
        .route("/grants/{id}/revoke", post(revoke))
        .route("/admission", post(admission))
        .route("/break-glass", post(break_glass))
        .route("/reviews", get(list_reviews))
        .route("/reviews/{id}", post(complete_review))
        .route("/sessions", get(list_sessions))
        .route("/sessions/{id}", get(get_session))
        .route("/sessions/{id}/kill", post(kill_session))
        .route("/nodes", get(sessions::nodes))
        .route("/sessions/{id}/files/{name}", get(watch::session_file))
        .route("/sessions/{id}/live", get(watch::session_live))
        .route("/sessions/{id}/evidence", get(watch::evidence))
        .route("/audit", get(audit));
    Router::new()
        .nest("/api/v1", api)
        .route("/metrics", get(metrics::scrape))
        .merge(crate::console::routes())
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            metrics::track,
        ))
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such API route; see /api/v1/openapi.json")
}

async fn health() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

async fn openapi_doc() -> Json<Value> {
    Json(openapi::document())
}

async fn create_request(
    State(state): State<AppState>,
    caller: Caller,
    body: Result<Json<NewRequest>, JsonRejection>,
) -> ApiResult {
    let Json(b) = body?;
    let req = state.grants.create_request(&caller.0, b).await?;
    Ok((StatusCode::CREATED, Json(req)).into_response())
}

/// What the rules would say about a request, without making it (the console's form).
async fn preview_request(
    State(state): State<AppState>,
    caller: Caller,
    body: Result<Json<NewRequest>, JsonRejection>,
) -> ApiResult {
    let Json(b) = body?;
    ok(state.grants.preview(&caller.0, b).await?)
}

/// A one-time link that admits the requester's browser to the HTTPS gateway for their grant.
async fn open_console(
    State(state): State<AppState>,
    caller: Caller,
    Segment(id): Segment,
) -> ApiResult {
    let code = state.grants.open_code(&caller.0, &id).await?;
    let cfg = state.grants.config();
    let host = crate::config::host_for_url(&cfg.gateway.public_name);
    let port = state
        .addrs
        .https
        .map_or(cfg.gateway.https_listen.port(), |a| a.port());
    ok(json!({
        "url": format!("https://{host}:{port}/_jitgate/open?code={code}"),
        "expires_in": 60,
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    state: Option<String>,
}

async fn list_requests(
    State(state): State<AppState>,
    caller: Caller,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> ApiResult {
    let Query(q) = q?;
    let st = match q.state.as_deref() {
        None => None,
        Some(s) => Some(
            serde_json::from_value::<RequestState>(json!(s)).map_err(|_| {
                ApiError::bad_request(
                    "state must be pending, approved, denied, rejected or expired",
                )
            })?,
        ),
    };
    ok(state.grants.requests(&caller.0, st).await?)
}

async fn get_request(
    State(state): State<AppState>,
    caller: Caller,
    Segment(id): Segment,
) -> ApiResult {
    ok(state.grants.request(&caller.0, &id).await?)
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ApproveBody {
    comment: Option<String>,
}

async fn approve(
    State(state): State<AppState>,
    caller: Caller,
    Segment(id): Segment,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let body = body.map_err(|r| {
        ApiError::new(
            r.status(),
            "too_large",
            "the request body is too large; comments are up to 1000 characters",
        )
    })?;
    let comment = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        serde_json::from_slice::<ApproveBody>(&body)
            .map_err(|e| {
                ApiError::bad_request(format!("the body is not valid JSON for this call: {e}"))
            })?
            .comment
    };
    let req = state.grants.request(&caller.0, &id).await?;
    if state
        .grants
        .config()
        .task(&req.task)
        .is_some_and(|t| t.impact == crate::config::Impact::High)
    {
        caller.require_recent_sign_in(&state, "approve a high-impact request")?;
    }
    ok(state.grants.approve(&caller.0, &id, comment).await?)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReasonBody {
    reason: String,
}

async fn deny(
    State(state): State<AppState>,
    caller: Caller,
    Segment(id): Segment,
    body: Result<Json<ReasonBody>, JsonRejection>,
) -> ApiResult {
    let Json(b) = body?;
    ok(state.grants.deny(&caller.0, &id, &b.reason).await?)
}

async fn token(State(state): State<AppState>, caller: Caller, Segment(id): Segment) -> ApiResult {
    let issued = state.grants.fetch_token(&caller.0, &id).await?;
    let cfg = state.grants.config();
    let protocol = cfg
        .target(&issued.grant.target)
        .map(|t| t.kind.as_str())
        .unwrap_or("unknown");
    let mut r = Json(json!({
        "token": issued.token.expose(),
        "grant": issued.grant.id,
        "request": issued.grant.request,
        "task": issued.grant.task,
        "target": issued.grant.target,
        "protocol": protocol,
        "expires_at": crate::types::rfc3339(issued.grant.expires_at),
    }))
    .into_response();
    // Shown once: no cache keeps a copy.
    r.headers_mut().insert(
        axum::http::header::CACHE_CONTROL,
        axum::http::HeaderValue::from_static("no-store"),
    );
    Ok(r)
}

async fn list_grants(
    State(state): State<AppState>,
    caller: Caller,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> ApiResult {
    let Query(q) = q?;
    let st = match q.state.as_deref() {
        None => None,
        Some(s) => Some(serde_json::from_value::<GrantState>(json!(s)).map_err(|_| {
            ApiError::bad_request("state must be active, revoked, expired or completed")
        })?),
    };
    ok(state.grants.grants(&caller.0, st).await?)
}

async fn get_grant(
    State(state): State<AppState>,
    caller: Caller,
    Segment(id): Segment,
) -> ApiResult {
    let all = state.grants.grants(&caller.0, None).await?;
    let g = all
        .into_iter()
        .find(|g| g.id.as_str() == id || g.request.as_str() == id)
        .ok_or_else(|| ApiError::not_found(format!("no grant {id} visible to you")))?;
    ok(g)
}

async fn done(State(state): State<AppState>, caller: Caller, Segment(id): Segment) -> ApiResult {
    ok(state.grants.done(&caller.0, &id).await?)
}

async fn revoke(
    State(state): State<AppState>,
    caller: Caller,
    Segment(id): Segment,
    body: Result<Json<ReasonBody>, JsonRejection>,
) -> ApiResult {
    let Json(b) = body?;
    ok(state.grants.revoke(&caller.0, &id, &b.reason).await?)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AdmissionBody {
    token: String,
    user: String,
    protocol: TargetKind,
}

/// The admission check the gateways run, exposed to admins for diagnostics and integration.
async fn admission(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    caller: Caller,
    body: Result<Json<AdmissionBody>, JsonRejection>,
) -> ApiResult {
    caller.require(&[Role::Admin], "run admission checks")?;
    let Json(b) = body?;
    match state
        .grants
        .admit(AdmitRequest {
            token: &b.token,
            user: Some(&b.user),
            protocol: b.protocol,
            source: peer.ip(),
        })
        .await
    {
        Ok(a) => ok(json!({
            "admitted": true,
            "grant": a.grant(),
            "request": a.request(),
            "user": a.user().name,
            "task": a.task().name,
            "target": a.target().name,
            "principal": a.principal(),
            "ticket": a.ticket(),
            "expires_at": crate::types::rfc3339(a.expires_at()),
        })),
        Err(d) => {
            let mut e = ApiError::new(StatusCode::FORBIDDEN, "admission_denied", d.message);
            e.extra = Some(json!({ "admitted": false, "grant": d.grant }));
            Err(e)
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    after: Option<u64>,
    event: Option<String>,
    request: Option<String>,
    grant: Option<String>,
    limit: Option<u32>,
}

async fn audit(
    State(state): State<AppState>,
    caller: Caller,
    q: Result<Query<AuditQuery>, QueryRejection>,
) -> ApiResult {
    caller.require(&[Role::Reviewer, Role::Admin], "read the audit log")?;
    let Query(q) = q?;
    let entries = state
        .grants
        .store()
        .audit(&AuditFilter {
            after_seq: q.after,
            event: q.event,
            request: q.request,
            grant: q.grant,
            limit: Some(q.limit.unwrap_or(500).min(5000)),
        })
        .await
        .map_err(|e| ApiError::from(crate::grant::GrantError::from(e)))?;
    let records: Vec<Value> = entries
        .iter()
        .filter_map(|e| serde_json::from_str(&e.record).ok())
        .collect();
    ok(records)
}

async fn break_glass(
    State(state): State<AppState>,
    caller: Caller,
    body: Result<Json<crate::grant::break_glass::BreakGlassRequest>, JsonRejection>,
) -> ApiResult {
    let Json(b) = body?;
    caller.require_recent_sign_in(&state, "break glass")?;
    let bg = state.grants.break_glass(&caller.0, b).await?;
    let cfg = state.grants.config();
    let protocol = cfg
        .target(&bg.issued.grant.target)
        .map(|t| t.kind.as_str())
        .unwrap_or("unknown");
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "token": bg.issued.token.expose(),
            "grant": bg.issued.grant.id,
            "request": bg.request.id,
            "review": bg.review.id,
            "task": bg.issued.grant.task,
            "target": bg.issued.grant.target,
            "ticket": bg.issued.grant.ticket,
            "protocol": protocol,
            "expires_at": crate::types::rfc3339(bg.issued.grant.expires_at),
        })),
    )
        .into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReviewQuery {
    all: Option<bool>,
}

async fn list_reviews(
    State(state): State<AppState>,
    caller: Caller,
    q: Result<Query<ReviewQuery>, QueryRejection>,
) -> ApiResult {
    let Query(q) = q?;
    let list = state
        .grants
        .reviews(&caller.0, !q.all.unwrap_or(false))
        .await?;
    let now = crate::types::now();
    let out: Vec<Value> = list
        .iter()
        .map(|r| {
            let mut v = serde_json::to_value(r).expect("reviews serialize");
            v["age_secs"] = json!(now - r.created_at);
            v
        })
        .collect();
    ok(out)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NotesBody {
    notes: String,
}

async fn complete_review(
    State(state): State<AppState>,
    caller: Caller,
    Segment(id): Segment,
    body: Result<Json<NotesBody>, JsonRejection>,
) -> ApiResult {
    let Json(b) = body?;
    caller.require_recent_sign_in(&state, "sign off a break-glass review")?;
    ok(state
        .grants
        .complete_review(&caller.0, &id, &b.notes)
        .await?)
}
