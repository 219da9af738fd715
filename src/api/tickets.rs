//! Ticket routes: open, list, show, close and assign tickets, and the ticket systems' webhooks.

use std::net::SocketAddr;

use axum::Json;
use axum::extract::rejection::{BytesRejection, JsonRejection, QueryRejection};
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::json;

use super::auth::Caller;
use super::error::ApiError;
use super::{ApiResult, AppState, Segment, ok};
use crate::audit::AuditEvent;
use crate::config::Role;
use crate::store::{TicketFilter, TicketState};
use crate::ticket::webhook::{self, Provider};
use crate::types::{TicketRef, UserName};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct OpenTicket {
    id: String,
    assignee: String,
    #[serde(default)]
    title: String,
}

pub(super) const TICKET_ROLES: &[Role] = &[Role::Admin, Role::Approver];

pub(super) fn ticket_id(s: &str) -> Result<TicketRef, ApiError> {
    s.parse()
        .map_err(|e: String| ApiError::bad_request(format!("ticket id: {e}")))
}

/// A well-formed name (else 400) of a configured user or a person who signed in through the
/// identity provider (else 404: the name is fine, the user does not exist).
async fn known_user(state: &AppState, s: &str) -> Result<UserName, ApiError> {
    let name: UserName = s
        .parse()
        .map_err(|e: String| ApiError::bad_request(format!("assignee: {e}")))?;
    if state.grants.config().user(&name).is_none() && state.grants.person(&name).await?.is_none() {
        let how = if state.grants.config().oidc.is_some() {
            "add it under [[users]], or have them sign in once"
        } else {
            "add it under [[users]]"
        };
        return Err(ApiError::not_found(format!(
            "user {name} is not configured; {how}"
        )));
    }
    Ok(name)
}

pub(super) async fn open_ticket(
    State(state): State<AppState>,
    caller: Caller,
    body: Result<Json<OpenTicket>, JsonRejection>,
) -> ApiResult {
    caller.require(TICKET_ROLES, "open tickets")?;
    let Json(b) = body?;
    let id = ticket_id(&b.id)?;
    let assignee = known_user(&state, &b.assignee).await?;
    let change = state
        .grants
        .tickets()
        .open(caller.0.name.as_str(), id, assignee, b.title)
        .await?;
    Ok((StatusCode::CREATED, Json(change.ticket)).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TicketQuery {
    assignee: Option<String>,
    state: Option<String>,
    limit: Option<u32>,
}

/// Tickets, newest updated first: technicians see those assigned to them, approvers, reviewers
/// and admins any (`assignee` and `state` narrow the list).
pub(super) async fn list_tickets(
    State(state): State<AppState>,
    caller: Caller,
    q: Result<Query<TicketQuery>, QueryRejection>,
) -> ApiResult {
    let Query(q) = q?;
    let assignee = super::sessions::narrowed_to(&caller, "assignee", q.assignee.as_deref())?;
    let ticket_state = match q.state.as_deref() {
        None => None,
        Some("open") => Some(TicketState::Open),
        Some("closed") => Some(TicketState::Closed),
        Some(_) => return Err(ApiError::bad_request("state must be open or closed")),
    };
    let list = state
        .grants
        .store()
        .tickets(&TicketFilter {
            assignee,
            state: ticket_state,
            limit: Some(q.limit.unwrap_or(500).min(5000)),
        })
        .await
        .map_err(|e| ApiError::from(crate::grant::GrantError::from(e)))?;
    ok(list)
}

pub(super) async fn get_ticket(
    State(state): State<AppState>,
    _caller: Caller,
    Segment(id): Segment,
) -> ApiResult {
    ok(state.grants.tickets().get(&ticket_id(&id)?).await?)
}

pub(super) async fn close_ticket(
    State(state): State<AppState>,
    caller: Caller,
    Segment(id): Segment,
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
pub(super) struct AssignTicket {
    /// Required: `null` unassigns, a missing field is refused (`deserialize_with` keeps serde
    /// from reading an absent `Option` as `None`).
    #[serde(deserialize_with = "Option::deserialize")]
    assignee: Option<String>,
}

pub(super) async fn assign_ticket(
    State(state): State<AppState>,
    caller: Caller,
    Segment(id): Segment,
    body: Result<Json<AssignTicket>, JsonRejection>,
) -> ApiResult {
    caller.require(TICKET_ROLES, "reassign tickets")?;
    let Json(b) = body?;
    let assignee = match b.assignee.as_deref() {
        None => None,
        Some(a) => Some(known_user(&state, a).await?),
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

pub(super) async fn ticket_webhook(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Segment(provider): Segment,
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
                // Anyone can send these: audited within the flood budget.
                state
                    .grants
                    .audit()
                    .refusal(
                        "anonymous",
                        peer.ip(),
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
    let Some(mut update) = delivery.update else {
        return Ok((StatusCode::ACCEPTED, Json(json!({ "status": "ignored" }))).into_response());
    };
    // A bare id a ticket system's pattern claims lands on that system's ticket.
    update.id = state.grants.canonical_ticket(update.id);
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
