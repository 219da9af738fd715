//! Session routes: the session index with its filters, one session, and `kill`.

use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Query, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::json;

use super::auth::Caller;
use super::error::ApiError;
use super::tickets::ticket_id;
use super::{ApiResult, AppState, ReasonBody, Segment, ok};
use crate::config::Role;
use crate::types::UserName;

/// Sessions per page of `GET /api/v1/sessions` without `limit`, and the most with it.
pub const PAGE: u32 = 500;
pub const PAGE_MAX: u32 = 5000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SessionQuery {
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
    /// A session id: the page after it (the last id of the previous page).
    before: Option<String>,
    limit: Option<u32>,
}

/// `2026-11-29T10:00:00Z`, `2026-11-29` or Unix seconds.
pub(super) fn parse_time(what: &str, s: &str) -> Result<i64, ApiError> {
    s.parse::<i64>()
        .ok()
        .or_else(|| crate::config::parse_expiry(s))
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "{what} {s:?} is not a time; use RFC 3339, YYYY-MM-DD or Unix seconds"
            ))
        })
}

/// The user a list is narrowed to: the one the `param` parameter names (400 when it is not a
/// name), but always the caller when they may see only their own (technicians).
pub(super) fn narrowed_to(
    caller: &Caller,
    param: &str,
    asked: Option<&str>,
) -> Result<Option<UserName>, ApiError> {
    let asked = asked
        .map(|u| {
            u.parse::<UserName>()
                .map_err(|e| ApiError::bad_request(format!("{param}: {e}")))
        })
        .transpose()?;
    if crate::grant::can_see_all(&caller.0) {
        Ok(asked)
    } else {
        Ok(Some(caller.0.name.clone()))
    }
}

/// Sessions visible to the caller, newest first: their own, or all for approvers, reviewers and
/// admins. Clients page with `before`, the last id of the previous page; the answer stays a
/// plain array.
pub(super) async fn list_sessions(
    State(state): State<AppState>,
    caller: Caller,
    q: Result<Query<SessionQuery>, QueryRejection>,
) -> ApiResult {
    let Query(q) = q?;
    let user = narrowed_to(&caller, "user", q.user.as_deref())?;
    let before = match q.before.as_deref() {
        Some(b) => Some(crate::types::SessionId::parse(b).ok_or_else(|| {
            ApiError::bad_request(format!(
                "before {b:?} is not a session id; pass the id (ses_...) of the last session of the previous page"
            ))
        })?),
        None => None,
    };
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
        before: before.clone(),
        limit: Some(q.limit.unwrap_or(PAGE).min(PAGE_MAX)),
    };
    let store = state.grants.store();
    let err = |e| ApiError::from(crate::grant::GrantError::from(e));
    let list = store.sessions(&filter).await.map_err(err)?;
    // An empty page after an unknown session is a typo, not the end of the index.
    if let Some(b) = before
        && list.is_empty()
        && store.session(&b).await.map_err(err)?.is_none()
    {
        return Err(ApiError::not_found(format!(
            "session {b} does not exist, so there is no page after it; pass the id of the last session of the previous page"
        )));
    }
    ok(list)
}

pub(super) async fn get_session(
    State(state): State<AppState>,
    caller: Caller,
    Segment(id): Segment,
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

/// `GET /api/v1/nodes`: the nodes sharing the database, alive or not; empty on one node.
pub(super) async fn nodes(State(state): State<AppState>, caller: Caller) -> ApiResult {
    caller.require(
        &[Role::Admin, Role::Approver, Role::Reviewer],
        "list gateway nodes",
    )?;
    let Some(cluster) = &state.cluster else {
        return ok(Vec::<crate::cluster::NodeView>::new());
    };
    let nodes = cluster
        .nodes()
        .await
        .map_err(|e| ApiError::from(crate::grant::GrantError::from(e)))?;
    ok(nodes)
}

pub(super) async fn kill_session(
    State(state): State<AppState>,
    caller: Caller,
    Segment(id): Segment,
    body: Result<Json<ReasonBody>, JsonRejection>,
) -> ApiResult {
    caller.require(&[Role::Admin, Role::Approver], "kill sessions")?;
    let Json(b) = body?;
    // The same rule as every other reason (`grant::check_text`): the text reaches the user's
    // terminal and the audit log, so control characters are refused.
    let reason = b.reason.trim();
    if reason.is_empty()
        || reason.chars().count() > crate::grant::MAX_TEXT
        || reason
            .chars()
            .any(|c| c.is_control() && c != '\n' && c != '\t')
    {
        return Err(ApiError::bad_request(
            "give a reason of 1 to 1000 characters, without control characters",
        ));
    }
    let sid = crate::types::SessionId::parse(&id).ok_or_else(|| {
        ApiError::not_found(format!(
            "session {id} does not exist; ids look like ses_..."
        ))
    })?;
    let text = format!("killed by {}: {reason}", caller.0.name);
    if state.sessions.terminate(
        &sid,
        crate::session::Cause::Killed,
        &text,
        std::time::Instant::now(),
    ) {
        return ok(json!({ "id": sid, "state": "terminating", "reason": text }));
    }
    // Several nodes: the session may be live on another one, which is told to cut it.
    if let Some(cluster) = &state.cluster {
        let rec = state
            .grants
            .store()
            .session(&sid)
            .await
            .map_err(|e| ApiError::from(crate::grant::GrantError::from(e)))?;
        if let Some(rec) = rec
            && rec.ended_at.is_none()
            && let Some(node) = rec.node.as_deref().filter(|n| *n != cluster.node())
        {
            cluster
                .kill_elsewhere(node, &sid, &text)
                .await
                .map_err(|e| ApiError::from(crate::grant::GrantError::from(e)))?;
            return ok(json!({ "id": sid, "state": "terminating", "reason": text, "node": node }));
        }
    }
    Err(ApiError::new(
        StatusCode::CONFLICT,
        "conflict",
        format!("session {id} is not live"),
    ))
}
