//! The control-plane REST API under `/api/v1` (JSON over HTTPS), its OpenAPI document and the
//! Prometheus metrics endpoint. Roles are checked per route; errors are
//! `{ "error": code, "message": what to do }`.

pub mod auth;
pub mod error;
pub mod metrics;
pub mod openapi;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::rejection::{BytesRejection, JsonRejection, QueryRejection};
use axum::extract::{ConnectInfo, DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::audit::AuditEvent;
use crate::config::{Role, TargetKind};
use crate::grant::admission::AdmitRequest;
use crate::grant::{NewRequest, Service};
use crate::store::{AuditFilter, GrantState, RequestState};
use crate::ticket::webhook::{self, Provider};
use crate::types::{Secret, TicketRef, UserName};
use auth::{AuthLimiter, Caller};
use error::ApiError;

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
    pub auth_limiter: Arc<AuthLimiter>,
    pub sessions: Arc<crate::session::Registry>,
}

type ApiResult = Result<Response, ApiError>;

fn ok(v: impl serde::Serialize) -> ApiResult {
    Ok(Json(v).into_response())
}

/// All routes.
pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .route("/health", get(health))
        .route("/openapi.json", get(openapi_doc))
        .route("/whoami", get(whoami))
        .route("/tickets", post(open_ticket))
        .route("/tickets/{id}", get(get_ticket))
        .route("/tickets/{id}/close", post(close_ticket))
        .route("/tickets/{id}/assign", post(assign_ticket))
        .route(
            "/tickets/webhook/{provider}",
            post(ticket_webhook).layer(DefaultBodyLimit::max(MAX_WEBHOOK_BODY)),
        )
        .route("/requests", post(create_request).get(list_requests))
        .route("/requests/{id}", get(get_request))
        .route("/requests/{id}/approve", post(approve))
        .route("/requests/{id}/deny", post(deny))
        .route("/requests/{id}/token", post(token))
        .route("/grants", get(list_grants))
        .route("/grants/{id}", get(get_grant))
        .route("/grants/{id}/done", post(done))
        .route("/grants/{id}/revoke", post(revoke))
        .route("/admission", post(admission))
        .route("/break-glass", post(break_glass))
        .route("/reviews", get(list_reviews))
        .route("/reviews/{id}", post(complete_review))
        .route("/sessions", get(list_sessions))
        .route("/sessions/{id}", get(get_session))
        .route("/sessions/{id}/kill", post(kill_session))
        .route("/audit", get(audit));
    Router::new()
        .nest("/api/v1", api)
        .route("/metrics", get(metrics::scrape))
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

async fn whoami(caller: Caller) -> ApiResult {
    let u = caller.0;
    ok(json!({
        "name": u.name,
        "roles": u.roles,
        "groups": u.groups,
        "vendor": u.vendor,
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OpenTicket {
    id: String,
    assignee: String,
    #[serde(default)]
    title: String,
}

const TICKET_ROLES: &[Role] = &[Role::Admin, Role::Approver];

fn ticket_id(s: &str) -> Result<TicketRef, ApiError> {
    s.parse()
        .map_err(|e: String| ApiError::bad_request(format!("ticket id: {e}")))
}

fn known_user(state: &AppState, s: &str) -> Result<UserName, ApiError> {
    let name: UserName = s
        .parse()
        .map_err(|e: String| ApiError::bad_request(format!("assignee: {e}")))?;
    if state.grants.config().user(&name).is_none() {
        return Err(ApiError::bad_request(format!(
            "user {name} is not configured; add it under [[users]]"
        )));
    }
    Ok(name)
}

async fn open_ticket(
    State(state): State<AppState>,
    caller: Caller,
    body: Result<Json<OpenTicket>, JsonRejection>,
) -> ApiResult {
    caller.require(TICKET_ROLES, "open tickets")?;
    let Json(b) = body?;
    let id = ticket_id(&b.id)?;
    let assignee = known_user(&state, &b.assignee)?;
    let change = state
        .grants
        .tickets()
        .open(caller.0.name.as_str(), id, assignee, b.title)
        .await?;
    Ok((StatusCode::CREATED, Json(change.ticket)).into_response())
}

async fn get_ticket(
    State(state): State<AppState>,
    _caller: Caller,
    Path(id): Path<String>,
) -> ApiResult {
    ok(state.grants.tickets().get(&ticket_id(&id)?).await?)
}

async fn close_ticket(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult {
    caller.require(TICKET_ROLES, "close tickets")?;
    let change = state
        .grants
        .tickets()
        .close(caller.0.name.as_str(), ticket_id(&id)?)
        .await?;
    let ended = state.grants.ticket_changed(&change).await?;
    let mut v = serde_json::to_value(&change.ticket).expect("serializes");
    v["revoked"] = json!(ended);
    ok(v)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AssignTicket {
    assignee: Option<String>,
}

async fn assign_ticket(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    body: Result<Json<AssignTicket>, JsonRejection>,
) -> ApiResult {
    caller.require(TICKET_ROLES, "reassign tickets")?;
    let Json(b) = body?;
    let assignee = match b.assignee.as_deref() {
        None | Some("") => None,
        Some(a) => Some(known_user(&state, a)?),
    };
    let change = state
        .grants
        .tickets()
        .assign(caller.0.name.as_str(), ticket_id(&id)?, assignee)
        .await?;
    let ended = state.grants.ticket_changed(&change).await?;
    let mut v = serde_json::to_value(&change.ticket).expect("serializes");
    v["revoked"] = json!(ended);
    ok(v)
}

async fn ticket_webhook(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(provider): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let body = body.map_err(|r| {
        ApiError::new(
            r.status(),
            "too_large",
            format!(
                "the webhook body could not be read ({}); bodies are limited to 256 KiB",
                r.body_text()
            ),
        )
    })?;
    let provider = Provider::from_path(&provider).ok_or_else(|| {
        ApiError::not_found("unknown ticket provider; use generic, jira or servicenow")
    })?;
    let Some(secret) = &state.webhook_secret else {
        return Err(webhook::WebhookError::NotConfigured.into());
    };
    let cfg = state.grants.config().clone();
    let delivery = match webhook::verify_and_parse(
        provider,
        &cfg,
        secret,
        &headers,
        &body,
        crate::types::now(),
    ) {
        Ok(d) => d,
        Err(e) => {
            if !matches!(e, webhook::WebhookError::BadPayload(..)) {
                state
                    .grants
                    .audit()
                    .record(
                        "anonymous",
                        AuditEvent::WebhookRejected {
                            provider: provider.as_str().into(),
                            source: peer.ip().to_string(),
                            reason: e.to_string(),
                        },
                    )
                    .await
                    .map_err(|e| {
                        tracing::error!(error = %e, "cannot audit a webhook rejection");
                        ApiError::internal()
                    })?;
            }
            tracing::warn!(provider = provider.as_str(), source = %peer.ip(), reason = %e, "webhook refused");
            return Err(e.into());
        }
    };
    if !state
        .grants
        .store()
        .record_delivery(&delivery.key, crate::types::now())
        .await
        .map_err(|e| ApiError::from(crate::grant::GrantError::from(e)))?
    {
        return ok(json!({ "status": "duplicate" }));
    }
    let Some(update) = delivery.update else {
        return Ok((StatusCode::ACCEPTED, Json(json!({ "status": "ignored" }))).into_response());
    };
    let actor = format!("ticket:{}", provider.as_str());
    let change = state.grants.tickets().apply(&actor, update).await?;
    let ended = state.grants.ticket_changed(&change).await?;
    ok(json!({
        "status": "applied",
        "ticket": change.ticket.id,
        "state": change.ticket.state,
        "assignee": change.ticket.assignee,
        "revoked": ended,
    }))
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
    Path(id): Path<String>,
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
    Path(id): Path<String>,
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
    Path(id): Path<String>,
    body: Result<Json<ReasonBody>, JsonRejection>,
) -> ApiResult {
    let Json(b) = body?;
    ok(state.grants.deny(&caller.0, &id, &b.reason).await?)
}

async fn token(State(state): State<AppState>, caller: Caller, Path(id): Path<String>) -> ApiResult {
    let issued = state.grants.fetch_token(&caller.0, &id).await?;
    let cfg = state.grants.config();
    let protocol = cfg
        .target(&issued.grant.target)
        .map(|t| t.kind.as_str())
        .unwrap_or("unknown");
    ok(json!({
        "token": issued.token.expose(),
        "grant": issued.grant.id,
        "request": issued.grant.request,
        "task": issued.grant.task,
        "target": issued.grant.target,
        "protocol": protocol,
        "expires_at": crate::types::rfc3339(issued.grant.expires_at),
    }))
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
    Path(id): Path<String>,
) -> ApiResult {
    let all = state.grants.grants(&caller.0, None).await?;
    let g = all
        .into_iter()
        .find(|g| g.id.as_str() == id || g.request.as_str() == id)
        .ok_or_else(|| ApiError::not_found(format!("no grant {id} visible to you")))?;
    ok(g)
}

async fn done(State(state): State<AppState>, caller: Caller, Path(id): Path<String>) -> ApiResult {
    ok(state.grants.done(&caller.0, &id).await?)
}

async fn revoke(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SessionQuery {
    live: Option<bool>,
    user: Option<String>,
    ticket: Option<String>,
    grant: Option<String>,
    target: Option<String>,
    task: Option<String>,
    protocol: Option<String>,
    /// RFC 3339 time or Unix seconds.
    since: Option<String>,
    until: Option<String>,
    end_cause: Option<String>,
    break_glass: Option<bool>,
    vendor: Option<String>,
    limit: Option<u32>,
}

/// `2026-11-29T10:00:00Z`, `2026-11-29` or Unix seconds.
fn parse_time(what: &str, s: &str) -> Result<i64, ApiError> {
    s.parse::<i64>()
        .ok()
        .or_else(|| crate::config::parse_expiry(s))
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "{what} {s:?} is not a time; use RFC 3339, YYYY-MM-DD or Unix seconds"
            ))
        })
}

/// Sessions visible to the caller: their own, or all for approvers, reviewers and admins.
async fn list_sessions(
    State(state): State<AppState>,
    caller: Caller,
    q: Result<Query<SessionQuery>, QueryRejection>,
) -> ApiResult {
    let Query(q) = q?;
    let mut user = match q.user.as_deref() {
        Some(u) => Some(
            u.parse::<UserName>()
                .map_err(|e| ApiError::bad_request(format!("user: {e}")))?,
        ),
        None => None,
    };
    if !crate::grant::can_see_all(&caller.0) {
        user = Some(caller.0.name.clone());
    }
    let filter = crate::store::SessionFilter {
        user,
        grant: match q.grant.as_deref() {
            Some(g) => Some(
                crate::types::GrantId::parse(g)
                    .ok_or_else(|| ApiError::bad_request("grant ids look like gr_..."))?,
            ),
            None => None,
        },
        ticket: match q.ticket.as_deref() {
            Some(t) => Some(ticket_id(t)?),
            None => None,
        },
        live: q.live,
        target: match q.target.as_deref() {
            Some(t) => Some(
                t.parse()
                    .map_err(|e: String| ApiError::bad_request(format!("target: {e}")))?,
            ),
            None => None,
        },
        task: match q.task.as_deref() {
            Some(t) => Some(
                t.parse()
                    .map_err(|e: String| ApiError::bad_request(format!("task: {e}")))?,
            ),
            None => None,
        },
        protocol: match q.protocol.as_deref() {
            None => None,
            Some(p @ ("ssh" | "https")) => Some(p.to_string()),
            Some(_) => return Err(ApiError::bad_request("protocol must be ssh or https")),
        },
        since: q
            .since
            .as_deref()
            .map(|s| parse_time("since", s))
            .transpose()?,
        until: q
            .until
            .as_deref()
            .map(|s| parse_time("until", s))
            .transpose()?,
        end_cause: q.end_cause.clone(),
        break_glass: q.break_glass,
        vendor: match q.vendor.as_deref() {
            Some("true") => Some(true),
            Some("false") => Some(false),
            _ => None,
        },
        vendor_name: q
            .vendor
            .as_deref()
            .filter(|v| *v != "true" && *v != "false")
            .map(str::to_string),
        limit: Some(q.limit.unwrap_or(500).min(5000)),
    };
    let list = state
        .grants
        .store()
        .sessions(&filter)
        .await
        .map_err(|e| ApiError::from(crate::grant::GrantError::from(e)))?;
    ok(list)
}

async fn get_session(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult {
    let sid = crate::types::SessionId::parse(&id).ok_or_else(|| {
        ApiError::not_found(format!(
            "session {id} does not exist; ids look like ses_..."
        ))
    })?;
    let s = state
        .grants
        .store()
        .session(&sid)
        .await
        .map_err(|e| ApiError::from(crate::grant::GrantError::from(e)))?
        .filter(|s| s.user == caller.0.name || crate::grant::can_see_all(&caller.0))
        .ok_or_else(|| ApiError::not_found(format!("session {id} does not exist")))?;
    ok(s)
}

async fn kill_session(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    body: Result<Json<ReasonBody>, JsonRejection>,
) -> ApiResult {
    caller.require(&[Role::Admin, Role::Approver], "kill sessions")?;
    let Json(b) = body?;
    let reason = b.reason.trim();
    if reason.is_empty() || reason.chars().count() > 1000 {
        return Err(ApiError::bad_request(
            "give a reason of 1 to 1000 characters",
        ));
    }
    let sid = crate::types::SessionId::parse(&id).ok_or_else(|| {
        ApiError::not_found(format!(
            "session {id} does not exist; ids look like ses_..."
        ))
    })?;
    let text = format!("killed by {}: {reason}", caller.0.name);
    if !state.sessions.terminate(
        &sid,
        crate::session::Cause::Killed,
        &text,
        std::time::Instant::now(),
    ) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            format!("session {id} is not live"),
        ));
    }
    ok(json!({ "id": sid, "state": "terminating", "reason": text }))
}

async fn break_glass(
    State(state): State<AppState>,
    caller: Caller,
    body: Result<Json<crate::grant::break_glass::BreakGlassRequest>, JsonRejection>,
) -> ApiResult {
    let Json(b) = body?;
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
    Path(id): Path<String>,
    body: Result<Json<NotesBody>, JsonRejection>,
) -> ApiResult {
    let Json(b) = body?;
    ok(state
        .grants
        .complete_review(&caller.0, &id, &b.notes)
        .await?)
}
