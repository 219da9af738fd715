//! `/` (home, by role), `/reviews` (break-glass uses awaiting sign-off) and `/audit` (the log,
//! searchable, with the result of verifying its chain and signatures).

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;

use super::layout::{Person, badge, failed, forbidden, frame, q, rows, when};
use crate::api::AppState;
use crate::config::Role;
use crate::https::pages::esc;
use crate::store::{
    AuditFilter, GrantFilter, GrantState, RequestFilter, RequestState, SessionFilter, TicketFilter,
    TicketState,
};

/// `GET /`: what each role needs first.
pub(super) async fn home(State(state): State<AppState>, who: Person) -> Response {
    let store = state.grants.store();
    let mut cards = String::new();
    let me = &who.user.name;
    if who.has(Role::Technician) {
        let tickets = store
            .tickets(&TicketFilter {
                assignee: Some(me.clone()),
                state: Some(TicketState::Open),
                limit: Some(50),
            })
            .await
            .unwrap_or_default();
        let tickets: String = tickets
            .iter()
            .map(|t| {
                format!(
                    "<li>{} “{}” <a href=\"/requests/new?ticket={}\">Request access for it</a></li>",
                    esc(t.id.as_str()),
                    esc(&t.title),
                    q(t.id.as_str())
                )
            })
            .collect();
        let grants = store
            .grants(&GrantFilter {
                requester: Some(me.clone()),
                state: Some(GrantState::Active),
                ticket: None,
                limit: Some(50),
            })
            .await
            .unwrap_or_default();
        let grants: String = grants
            .iter()
            .map(|g| {
                format!(
                    "<li><a href=\"/requests/{}\">{}</a> on {} for {} until {}</li>",
                    esc(g.request.as_str()),
                    esc(g.task.as_str()),
                    esc(g.target.as_str()),
                    esc(g.ticket.as_str()),
                    when(g.expires_at)
                )
            })
            .collect();
        let open = store
            .requests(&RequestFilter {
                requester: Some(me.clone()),
                state: Some(RequestState::Pending),
                ticket: None,
                limit: Some(50),
            })
            .await
            .unwrap_or_default();
        let open: String = open
            .iter()
            .map(|r| {
                format!(
                    "<li><a href=\"/requests/{0}\">{0}</a> {1} on {2} {3}</li>",
                    esc(r.id.as_str()),
                    esc(r.task.as_str()),
                    esc(r.target.as_str()),
                    badge(r.state.as_str())
                )
            })
            .collect();
        cards.push_str(&format!(
            "<div class=\"card\" id=\"my-work\"><h2>My open tickets</h2><ul>{}</ul><h2>My access now</h2><ul>{}</ul><h2>My requests waiting</h2><ul>{}</ul>\
<p><a class=\"button\" href=\"/requests/new\">Request access</a></p></div>",
            or_none(tickets), or_none(grants), or_none(open)
        ));
    }
    if who.has(Role::Approver) {
        let waiting = state
            .grants
            .requests(&who.user, Some(RequestState::Pending))
            .await
            .unwrap_or_default();
        let waiting: String = waiting
            .iter()
            .filter(|r| &r.requester != me && !r.approvals.iter().any(|a| &a.approver == me))
            .map(|r| {
                format!(
                    "<li><a href=\"/requests/{0}\">{0}</a>: {1} asks for {2} on {3} ({4})</li>",
                    esc(r.id.as_str()),
                    esc(r.requester.as_str()),
                    esc(r.task.as_str()),
                    esc(r.target.as_str()),
                    esc(r.ticket.as_str())
                )
            })
            .collect();
        cards.push_str(&format!(
            "<div class=\"card\" id=\"waiting\"><h2>Waiting for my approval</h2><ul>{}</ul><p><a href=\"/approvals\">The approval queue</a></p></div>",
            or_none(waiting)
        ));
    }
    if who.has(Role::Reviewer) || who.has(Role::Admin) {
        let live = store
            .sessions(&SessionFilter {
                live: Some(true),
                limit: Some(50),
                ..Default::default()
            })
            .await
            .unwrap_or_default();
        let live: String = live
            .iter()
            .map(|s| {
                format!(
                    "<li><a href=\"/sessions/{0}\">{0}</a> {1} on {2} ({3}) since {4}</li>",
                    esc(s.id.as_str()),
                    esc(s.user.as_str()),
                    esc(s.target.as_str()),
                    esc(s.task.as_str()),
                    when(s.started_at)
                )
            })
            .collect();
        let reviews = store.reviews(true, None).await.unwrap_or_default();
        let reviews: String = reviews
            .iter()
            .map(|r| {
                format!(
                    "<li>{} broke glass on {} at {}: {}</li>",
                    esc(r.user.as_str()),
                    esc(r.target.as_str()),
                    when(r.created_at),
                    esc(&r.reason)
                )
            })
            .collect();
        cards.push_str(&format!(
            "<div class=\"card\" id=\"oversight\"><h2>Live sessions</h2><ul>{}</ul><h2>Break-glass uses awaiting review</h2><ul>{}</ul><p><a href=\"/reviews\">Reviews</a></p></div>",
            or_none(live),
            or_none(reviews)
        ));
    }
    let roles: Vec<&str> = who.user.roles.iter().map(|r| r.as_str()).collect();
    let how = match &who.sign_in.issuer {
        Some(i) => format!("through {}", esc(i)),
        None => "with a one-time link".to_string(),
    };
    let idle = who
        .sign_in
        .idle_timeout
        .map(|i| format!(", or after {} unused", crate::types::Ttl::from_secs(i)))
        .unwrap_or_default();
    let body = format!(
        "<h1>Signed in as <span id=\"user\">{}</span></h1><p class=\"hint\">Roles: <span id=\"roles\">{}</span>; groups: <span id=\"groups\">{}</span>. \
Signed in {how} at {}; the session ends at the latest {}{idle}. From a terminal, <code>jitgate login</code> signs the CLI in the same way.</p>{cards}",
        esc(who.user.name.as_str()),
        esc(&roles.join(", ")),
        if who.user.groups.is_empty() {
            "none".to_string()
        } else {
            esc(&who.user.groups.join(", "))
        },
        crate::types::rfc3339(who.sign_in.auth_time),
        crate::types::rfc3339(who.sign_in.expires_at),
    );
    frame(StatusCode::OK, "Home", &who, "/", &body)
}

fn or_none(items: String) -> String {
    if items.is_empty() {
        "<li class=\"hint\">none</li>".into()
    } else {
        items
    }
}

/// `GET /reviews`.
pub(super) async fn reviews(State(state): State<AppState>, who: Person) -> Response {
    if !(who.has(Role::Reviewer) || who.has(Role::Admin)) {
        return forbidden(&who, "break-glass reviews are for reviewers and admins");
    }
    let open = match state.grants.reviews(&who.user, false).await {
        Ok(r) => r,
        Err(e) => return failed(&who, e),
    };
    let cards: String = open
        .iter()
        .map(|r| {
            let form = if r.reviewed_at.is_some() {
                format!(
                    "<p>Signed off by {} at {}: {}</p>",
                    esc(r.reviewed_by.as_ref().map_or("", |u| u.as_str())),
                    r.reviewed_at.map(when).unwrap_or_default(),
                    esc(r.notes.as_deref().unwrap_or(""))
                )
            } else if r.user == who.user.name {
                "<p class=\"hint\">Your own break-glass use; another reviewer signs it off.</p>".into()
            } else {
                format!(
                    "<form data-api=\"/api/v1/reviews/{id}\" data-then=\"reload\"><label for=\"notes-{id}\">Notes</label>\
<textarea id=\"notes-{id}\" name=\"notes\" required maxlength=\"1000\" rows=\"2\"></textarea><p class=\"error\" role=\"alert\"></p>\
<button type=\"submit\">Sign off</button></form>",
                    id = esc(&r.id)
                )
            };
            format!(
                "<article class=\"card\"><h2>{} broke glass on {} {}</h2>{}{form}</article>",
                esc(r.user.as_str()),
                esc(r.target.as_str()),
                if r.reviewed_at.is_some() { badge("reviewed") } else { badge("open") },
                rows(&[
                    ("Task", esc(r.task.as_str())),
                    ("Ticket", esc(r.ticket.as_str())),
                    ("Why", esc(&r.reason)),
                    ("When", when(r.created_at)),
                    ("Grant", format!("{} (<a href=\"/sessions?ticket={}\">sessions</a>)", esc(r.grant.as_str()), q(r.ticket.as_str()))),
                ])
            )
        })
        .collect();
    let body = format!(
        "<h1>Break-glass reviews</h1>{}",
        if cards.is_empty() {
            "<div class=\"card\"><p>No break-glass use awaits review.</p></div>".to_string()
        } else {
            cards
        }
    );
    frame(StatusCode::OK, "Reviews", &who, "/reviews", &body)
}

#[derive(Deserialize, Default)]
pub(super) struct AuditQuery {
    event: Option<String>,
    request: Option<String>,
    grant: Option<String>,
    after: Option<u64>,
}

/// Audit log verifies running at once for the `/audit` page (see [`audit`]).
static VERIFYING: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(2);

/// `GET /audit`.
pub(super) async fn audit(
    State(state): State<AppState>,
    who: Person,
    query: Result<Query<AuditQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    if !(who.has(Role::Reviewer) || who.has(Role::Admin)) {
        return forbidden(&who, "the audit log is for reviewers and admins");
    }
    let f = query.map(|Query(q)| q).unwrap_or_default();
    let nonempty = |s: &Option<String>| s.clone().filter(|s| !s.trim().is_empty() && s.len() <= 64);
    let entries = state
        .grants
        .store()
        .audit(&AuditFilter {
            after_seq: f.after,
            event: nonempty(&f.event),
            request: nonempty(&f.request),
            grant: nonempty(&f.grant),
            limit: Some(200),
        })
        .await
        .unwrap_or_default();
    let cfg = state.grants.config();
    let key = state.keys.audit_key().public();
    let store = state.grants.store();
    // Several nodes write one chain to the database; one node's is its file.
    let verdict = if cfg.is_cluster() {
        crate::audit::verify_store(store.as_ref(), &key).await.ok()
    } else {
        let path = cfg.gateway.data_dir.join(crate::audit::LOG_FILE);
        let head = store.audit_head().await.ok().flatten();
        // A verify reads the whole log on a blocking thread: page views beyond these wait
        // for one to finish, so reloads cannot take the threads the sessions' end records,
        // the store and the audit appends need.
        let _turn = VERIFYING.acquire().await.ok();
        tokio::task::spawn_blocking(move || crate::audit::verify(&path, &key, head))
            .await
            .ok()
            .and_then(|r| r.ok())
    };
    let verdict = match verdict {
        Some(v) if v.ok => format!(
            "<p class=\"ok\" id=\"verified\">The chain and every signature verify: {} records{}.</p>",
            v.records,
            if v.head_checked {
                ", the end matches the database"
            } else {
                ""
            }
        ),
        Some(v) => format!(
            "<p class=\"why\" id=\"verified\">The log does not verify: {}</p>",
            esc(&v
                .first_bad
                .map(|b| match b.seq {
                    Some(seq) => format!("record {seq} (line {}): {}", b.line, b.reason),
                    None => format!("line {}: {}", b.line, b.reason),
                })
                .unwrap_or_default())
        ),
        None => {
            "<p class=\"why\" id=\"verified\">The log could not be read to verify it.</p>".into()
        }
    };
    let rows_html: String = entries
        .iter()
        .map(|e| {
            let v: serde_json::Value = serde_json::from_str(&e.record).unwrap_or_default();
            let mut detail = v.clone();
            if let Some(o) = detail.as_object_mut() {
                for k in ["seq", "ts", "event", "actor", "prev", "hash", "sig"] {
                    o.remove(k);
                }
            }
            format!(
                "<tr><td>{}</td><td>{}</td><td><code>{}</code></td><td>{}</td><td><code class=\"detail\">{}</code></td></tr>",
                e.seq,
                esc(&e.ts),
                esc(&e.event),
                esc(v.get("actor").and_then(|a| a.as_str()).unwrap_or("")),
                esc(&detail.to_string())
            )
        })
        .collect();
    let value = |s: &Option<String>| esc(s.as_deref().unwrap_or(""));
    let next = entries
        .last()
        .filter(|_| entries.len() == 200)
        .map(|e| format!("<p><a class=\"button quiet\" href=\"/audit?after={}&event={}&request={}&grant={}\">Later records</a></p>", e.seq, q(f.event.as_deref().unwrap_or("")), q(f.request.as_deref().unwrap_or("")), q(f.grant.as_deref().unwrap_or(""))))
        .unwrap_or_default();
    let body = format!(
        "<h1>Audit log</h1><div class=\"card\">{verdict}</div>\
<form class=\"filters card\" method=\"get\" action=\"/audit\">\
<label>Event<input name=\"event\" value=\"{}\" placeholder=\"grant.revoked\"></label>\
<label>Request<input name=\"request\" value=\"{}\"></label><label>Grant<input name=\"grant\" value=\"{}\"></label>\
<button type=\"submit\">Search</button></form>\
<div class=\"card\"><table id=\"audit\"><thead><tr><th>Seq</th><th>Time</th><th>Event</th><th>Actor</th><th>Details</th></tr></thead><tbody>{rows_html}</tbody></table>{next}</div>",
        value(&f.event),
        value(&f.request),
        value(&f.grant),
    );
    frame(StatusCode::OK, "Audit", &who, "/audit", &body)
}
