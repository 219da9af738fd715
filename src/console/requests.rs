//! Requesting and approving in the browser: `/requests/new` (with what the rules would say),
//! `/requests/{id}` (live; token reveal, the `ssh` command, "Open console", "Done") and
//! `/approvals` (the approver's queue with the ticket, the exact scope and the requester's
//! history). Actions are `data-api` forms that console.js sends to the API.

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;

use super::layout::{Person, badge, failed, forbidden, frame, rows, tags, when};
use crate::api::AppState;
use crate::config::{Config, Impact, Role, TargetKind, TaskConfig};
use crate::grant::preview::approvals_why;
use crate::https::pages::esc;
use crate::store::{GrantState, Request, RequestState, SessionFilter, TicketState};
use crate::types::{TargetName, UserName};

#[derive(Deserialize, Default)]
pub(super) struct NewQuery {
    ticket: Option<String>,
    target: Option<String>,
    task: Option<String>,
}

/// A channel's name as the configuration writes it (`port-forward`).
fn allow_name(a: &crate::config::Allow) -> String {
    serde_json::to_value(a)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// What a task allows, in a line.
fn allows(t: &TaskConfig) -> String {
    let mut parts: Vec<String> = t.allow.iter().map(allow_name).collect();
    if let Some(p) = &t.principal {
        parts.insert(0, format!("as {p}"));
    }
    if let Some(f) = &t.force_command {
        parts.push(format!("only the command {f}"));
    }
    if !t.http_allow.is_empty() {
        parts.push(format!("HTTP {}", t.http_allow.join(", ")));
    }
    parts.push(format!("at most {}", t.max_ttl));
    parts.join("; ")
}

/// `GET /requests/new`: the request form, prefilled from the query (deep links from tickets).
pub(super) async fn new_request(
    State(state): State<AppState>,
    who: Person,
    q: Result<Query<NewQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    if !who.has(Role::Technician) {
        return forbidden(&who, "requesting access needs the technician role");
    }
    let q = q.map(|Query(q)| q).unwrap_or_default();
    let cfg = state.grants.config();
    let target = q
        .target
        .as_deref()
        .and_then(|t| t.parse::<TargetName>().ok())
        .filter(|t| cfg.target(t).is_some());
    let tasks = target
        .as_ref()
        .map(|t| state.grants.tasks_for(&who.user, t))
        .unwrap_or_default();
    let chosen = q
        .task
        .as_deref()
        .and_then(|t| tasks.iter().find(|x| x.name.as_str() == t))
        .or(tasks.first())
        .copied();
    let mine = state
        .grants
        .store()
        .tickets(&crate::store::TicketFilter {
            assignee: Some(who.user.name.clone()),
            state: Some(TicketState::Open),
            limit: Some(200),
        })
        .await
        .unwrap_or_default();
    let ticket_options: String = mine
        .iter()
        .map(|t| {
            format!(
                "<option value=\"{}\">{}</option>",
                esc(t.id.as_str()),
                esc(&t.title)
            )
        })
        .collect();
    let target_options: String = cfg
        .targets
        .iter()
        .map(|t| {
            let sel = if target.as_ref() == Some(&t.name) {
                " selected"
            } else {
                ""
            };
            format!(
                "<option value=\"{0}\"{sel}>{0} ({1})</option>",
                esc(t.name.as_str()),
                t.kind.as_str()
            )
        })
        .collect();
    let task_options: String = tasks
        .iter()
        .map(|t| {
            let sel = if Some(t.name.as_str()) == chosen.map(|c| c.name.as_str()) {
                " selected"
            } else {
                ""
            };
            format!(
                "<option value=\"{0}\"{sel} data-max-ttl=\"{1}\">{0}: {2}</option>",
                esc(t.name.as_str()),
                t.max_ttl,
                esc(&t.description)
            )
        })
        .collect();
    let task_list: String = tasks
        .iter()
        .map(|t| {
            format!(
                "<li><strong>{}</strong>{}: {}. <span class=\"hint\">Allows {}.</span></li>",
                esc(t.name.as_str()),
                if t.impact == Impact::High {
                    " <span class=\"badge state-high\">high impact</span>"
                } else {
                    ""
                },
                esc(&t.description),
                esc(&allows(t))
            )
        })
        .collect();
    let ticket_value = esc(q.ticket.as_deref().unwrap_or(""));
    let ttl = chosen.map(|t| t.max_ttl.to_string()).unwrap_or_default();
    let task_block = if target.is_none() {
        "<p class=\"hint\">Choose a target to see the tasks you may request on it.</p>".to_string()
    } else if tasks.is_empty() {
        "<p class=\"why\">No task you may request covers this target.</p>".to_string()
    } else {
        format!(
            "<label for=\"task\">Task</label><select id=\"task\" name=\"task\" required>{task_options}</select>\
<ul class=\"tasks\">{task_list}</ul>\
<label for=\"ttl\">TTL</label><input id=\"ttl\" name=\"ttl\" value=\"{ttl}\" required pattern=\"[0-9smhd]+\" aria-describedby=\"ttl-hint\">\
<p class=\"hint\" id=\"ttl-hint\">How long the access lasts once approved, at most the task's limit: 15m, 1h, ...</p>\
<label for=\"reason\">Reason</label><textarea id=\"reason\" name=\"reason\" required maxlength=\"1000\" rows=\"3\"></textarea>\
<section id=\"preview\" aria-live=\"polite\" class=\"preview\"></section>\
<p class=\"error\" role=\"alert\"></p>\
<button type=\"submit\">Request access</button>"
        )
    };
    let body = format!(
        "<div class=\"card\"><h1>Request access</h1>\
<form id=\"choose\" method=\"get\" action=\"/requests/new\" data-autosubmit>\
<input type=\"hidden\" name=\"ticket\" value=\"{ticket_value}\">\
<label for=\"target-choice\">Target</label><select id=\"target-choice\" name=\"target\"><option value=\"\">Choose…</option>{target_options}</select>\
<noscript><button type=\"submit\">Show tasks</button></noscript></form>\
<form id=\"request\" data-api=\"/api/v1/requests\" data-then=\"goto:/requests/{{id}}\" data-preview=\"/api/v1/requests/preview\">\
<label for=\"ticket\">Ticket</label><input id=\"ticket\" name=\"ticket\" value=\"{ticket_value}\" list=\"my-tickets\" required autocomplete=\"off\">\
<datalist id=\"my-tickets\">{ticket_options}</datalist>\
<input type=\"hidden\" name=\"target\" value=\"{target_value}\">\
{task_block}</form></div>",
        target_value = esc(target.as_ref().map_or("", |t| t.as_str())),
    );
    frame(
        StatusCode::OK,
        "Request access",
        &who,
        "/requests/new",
        &body,
    )
}

/// The scope a request would grant, for approvers and for the requester.
fn scope(cfg: &Config, r: &Request) -> String {
    let task = cfg.task(&r.task);
    let target = cfg.target(&r.target);
    let mut items = vec![
        (
            "Task",
            format!(
                "{} <span class=\"hint\">{}</span>",
                esc(r.task.as_str()),
                esc(task.map_or("", |t| t.description.as_str()))
            ),
        ),
        (
            "Target",
            format!(
                "{} <span class=\"hint\">{}</span>",
                esc(r.target.as_str()),
                target.map_or("", |t| t.kind.as_str())
            ),
        ),
        ("TTL", esc(&r.ttl.to_string())),
    ];
    if let Some(t) = task {
        if let Some(p) = &t.principal {
            items.push(("Principal", format!("<code>{}</code>", esc(p))));
        }
        let channels: Vec<String> = t.allow.iter().map(allow_name).collect();
        items.push(("Allowed", tags(&channels)));
        if let Some(f) = &t.force_command {
            items.push(("Force command", format!("<code>{}</code>", esc(f))));
        }
        if !t.http_allow.is_empty() {
            items.push(("HTTP allow-list", tags(&t.http_allow)));
        }
        items.push((
            "Impact",
            if t.impact == Impact::High {
                "<span class=\"badge state-high\">high</span>".into()
            } else {
                "normal".into()
            },
        ));
        items.push(("Approvals", esc(&approvals_why(t))));
    }
    rows(&items)
}

fn approvals_list(r: &Request) -> String {
    if r.approvals.is_empty() {
        return "<span class=\"hint\">none yet</span>".into();
    }
    let items: String = r
        .approvals
        .iter()
        .map(|a| {
            format!(
                "<li><strong>{}</strong> at {}{}</li>",
                esc(a.approver.as_str()),
                when(a.at),
                a.comment
                    .as_ref()
                    .map(|c| format!(": “{}”", esc(c)))
                    .unwrap_or_default()
            )
        })
        .collect();
    format!("<ul>{items}</ul>")
}

/// `GET /requests/{id}`: one request, live.
pub(super) async fn one_request(
    State(state): State<AppState>,
    who: Person,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Response {
    let r = match state.grants.request(&who.user, &id).await {
        Ok(r) => r,
        Err(e) => return failed(&who, e),
    };
    let cfg = state.grants.config();
    let ticket = state.grants.tickets().get(&r.ticket).await.ok();
    let grant = match &r.grant {
        Some(g) => state.grants.store().grant(g).await.ok().flatten(),
        None => None,
    };
    let mine = r.requester == who.user.name;
    let mut items = vec![
        ("State", badge(r.state.as_str())),
        ("Requester", esc(r.requester.as_str())),
        (
            "Ticket",
            ticket.as_ref().map_or_else(
                || esc(r.ticket.as_str()),
                |t| {
                    format!(
                        "{} {} ({})",
                        esc(t.id.as_str()),
                        esc(&t.title),
                        if t.state == TicketState::Open {
                            "open"
                        } else {
                            "closed"
                        }
                    )
                },
            ),
        ),
        ("Reason", esc(&r.reason)),
        ("Requested", when(r.created_at)),
        (
            "Approvals",
            format!(
                "{} of {}{}",
                r.approvals.len(),
                r.required_approvals,
                approvals_list(&r)
            ),
        ),
    ];
    if let Some(why) = &r.decision_reason {
        items.push(("Decision", esc(why)));
    }
    let mut actions = String::new();
    if let Some(g) = &grant {
        items.push((
            "Grant",
            format!(
                "{} {} until {}",
                esc(g.id.as_str()),
                badge(g.state.as_str()),
                when(g.expires_at)
            ),
        ));
        if let Some(why) = &g.end_reason {
            items.push(("Ended", esc(why)));
        }
        if mine && g.state == GrantState::Active {
            actions = grant_actions(&state, &r, g);
        }
    }
    if r.state == RequestState::Pending && !mine && who.has(Role::Approver) {
        actions.push_str(&decide_forms(&r));
    }
    let body = format!(
        "<div class=\"card\" id=\"request\" data-request=\"{id}\" data-state=\"{st}\" data-watch=\"/api/v1/requests/{id}/events\">\
<h1>Request {id} <span id=\"state\">{badge}</span></h1>{rows}</div>\
<div class=\"card\"><h2>Scope</h2>{scope}</div>{actions}",
        id = esc(r.id.as_str()),
        st = r.state.as_str(),
        badge = badge(r.state.as_str()),
        rows = rows(&items),
        scope = scope(cfg, &r),
    );
    frame(
        StatusCode::OK,
        &format!("Request {}", r.id),
        &who,
        "",
        &body,
    )
}

/// For the requester of an active grant: the token (once), how to connect, and "Done".
fn grant_actions(state: &AppState, r: &Request, g: &crate::store::Grant) -> String {
    let cfg = state.grants.config();
    let kind = cfg.target(&g.target).map(|t| t.kind);
    let host = crate::config::host_for_url(&cfg.gateway.public_name);
    let connect = match kind {
        Some(TargetKind::Ssh) => {
            let port = state
                .addrs
                .ssh
                .map_or(cfg.gateway.ssh_listen.port(), |a| a.port());
            let cmd = format!("ssh -p {port} {}@{host}", r.requester);
            format!(
                "<p>Connect with <code id=\"ssh-command\">{}</code> <button type=\"button\" class=\"quiet small\" data-copy=\"#ssh-command\">Copy command</button> and paste the token at the <code>Grant token:</code> prompt.</p>",
                esc(&cmd)
            )
        }
        Some(TargetKind::Https) => format!(
            "<form data-api=\"/api/v1/grants/{}/open\" data-then=\"follow:url\"><p class=\"error\" role=\"alert\"></p>\
<button type=\"submit\">Open console</button> <span class=\"hint\">opens {} through the gateway in this browser, without the token</span></form>",
            esc(g.id.as_str()),
            esc(g.target.as_str())
        ),
        None => String::new(),
    };
    let reveal = if g.token_fetched {
        "<p class=\"hint\" id=\"token-gone\">The token was revealed once already; it is never shown again.</p>".to_string()
    } else {
        format!(
            "<form data-api=\"/api/v1/requests/{}/token\" data-then=\"token\"><p class=\"error\" role=\"alert\"></p>\
<button type=\"submit\">Reveal token</button> <span class=\"hint\">shown once, then never again</span></form>\
<div id=\"token-box\" hidden><p>Your grant token (copy it now; it is not shown again):</p>\
<p><code id=\"token\"></code> <button type=\"button\" class=\"quiet small\" data-copy=\"#token\">Copy token</button></p></div>",
            esc(r.id.as_str())
        )
    };
    format!(
        "<div class=\"card\" id=\"connect\"><h2>Connect</h2>{reveal}{connect}\
<form data-api=\"/api/v1/grants/{}/done\" data-then=\"reload\"><p class=\"error\" role=\"alert\"></p>\
<button type=\"submit\" class=\"quiet\">Done</button> <span class=\"hint\">ends the access now</span></form></div>",
        esc(g.id.as_str())
    )
}

/// Approve and deny forms with a comment (the server refuses a requester's own anyway).
fn decide_forms(r: &Request) -> String {
    let id = esc(r.id.as_str());
    format!(
        "<div class=\"card decide\"><h2>Decide</h2>\
<form data-api=\"/api/v1/requests/{id}/approve\" data-then=\"reload\">\
<label for=\"comment-{id}\">Comment</label><input id=\"comment-{id}\" name=\"comment\" maxlength=\"1000\">\
<p class=\"error\" role=\"alert\"></p>\
<button type=\"submit\">Approve</button>\
<button type=\"submit\" class=\"quiet\" formaction=\"/api/v1/requests/{id}/deny\" data-field-rename=\"comment:reason\">Deny</button></form></div>"
    )
}

/// `GET /approvals`: requests waiting for this approver.
pub(super) async fn approvals(State(state): State<AppState>, who: Person) -> Response {
    if !who.has(Role::Approver) {
        return forbidden(&who, "the approval queue is for approvers");
    }
    let pending = match state
        .grants
        .requests(&who.user, Some(RequestState::Pending))
        .await
    {
        Ok(p) => p,
        Err(e) => return failed(&who, e),
    };
    let cfg = state.grants.config();
    let mut cards = String::new();
    for r in pending
        .iter()
        .filter(|r| !r.approvals.iter().any(|a| a.approver == who.user.name))
    {
        cards.push_str(&approval_card(&state, cfg, &who.user.name, r).await);
    }
    if cards.is_empty() {
        cards = "<div class=\"card\"><p id=\"queue-empty\">Nothing is waiting for you.</p></div>"
            .into();
    }
    let body = format!("<h1>Approvals</h1>{cards}");
    frame(StatusCode::OK, "Approvals", &who, "/approvals", &body)
}

async fn approval_card(state: &AppState, cfg: &Config, me: &UserName, r: &Request) -> String {
    let ticket = state.grants.tickets().get(&r.ticket).await.ok();
    let ticket_html = match &ticket {
        Some(t) => format!(
            "{} “{}” ({}, assigned to {})",
            esc(t.id.as_str()),
            esc(&t.title),
            if t.state == TicketState::Open {
                "open"
            } else {
                "closed"
            },
            esc(t.assignee.as_ref().map_or("nobody", |a| a.as_str()))
        ),
        None => format!("{} (unknown to jitgate)", esc(r.ticket.as_str())),
    };
    let history = state
        .grants
        .store()
        .requests(&crate::store::RequestFilter {
            requester: Some(r.requester.clone()),
            state: None,
            ticket: None,
            limit: Some(6),
        })
        .await
        .unwrap_or_default();
    let history: String = history
        .iter()
        .filter(|h| h.id != r.id)
        .take(5)
        .map(|h| {
            format!(
                "<li><a href=\"/requests/{0}\">{0}</a> {1} on {2} for {3} {4}</li>",
                esc(h.id.as_str()),
                esc(h.task.as_str()),
                esc(h.target.as_str()),
                esc(h.ticket.as_str()),
                badge(h.state.as_str())
            )
        })
        .collect();
    let sessions = state
        .grants
        .store()
        .sessions(&SessionFilter {
            user: Some(r.requester.clone()),
            limit: Some(5),
            ..Default::default()
        })
        .await
        .unwrap_or_default();
    let sessions: String = sessions
        .iter()
        .map(|s| {
            format!(
                "<li><a href=\"/sessions/{0}\">{0}</a> {1} on {2}, {3}</li>",
                esc(s.id.as_str()),
                esc(s.task.as_str()),
                esc(s.target.as_str()),
                s.end_cause
                    .as_deref()
                    .map_or("live".to_string(), |c| format!("ended: {}", esc(c)))
            )
        })
        .collect();
    let own = &r.requester == me;
    let decide = if own {
        "<p class=\"hint\">This is your own request; another approver must decide it.</p>"
            .to_string()
    } else {
        decide_forms(r)
    };
    format!(
        "<article class=\"card\" data-request=\"{id}\"><h2><a href=\"/requests/{id}\">{id}</a>: {who} asks for {task} on {target}</h2>\
{rows}<h3>Scope</h3>{scope}<h3>{who}'s recent requests</h3><ul>{history}</ul><h3>{who}'s recent sessions</h3><ul>{sessions}</ul>{decide}</article>",
        history = if history.is_empty() {
            "<li class=\"hint\">none</li>".to_string()
        } else {
            history
        },
        sessions = if sessions.is_empty() {
            "<li class=\"hint\">none</li>".to_string()
        } else {
            sessions
        },
        id = esc(r.id.as_str()),
        who = esc(r.requester.as_str()),
        task = esc(r.task.as_str()),
        target = esc(r.target.as_str()),
        rows = rows(&[
            ("Ticket", ticket_html),
            ("Reason", esc(&r.reason)),
            ("Requested", when(r.created_at)),
            (
                "Approvals",
                format!("{} of {}", r.approvals.len(), r.required_approvals)
            ),
        ]),
        scope = scope(cfg, r),
    )
}
