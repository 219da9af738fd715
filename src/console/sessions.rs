//! `/sessions` (the index with the API's filters, a page at a time) and `/sessions/{id}` (who,
//! grant, ticket, approvers, times, end cause and kill latency, the grant's audit trail, the
//! recordings with digests and a player for each terminal recording, HTTP exchanges as a
//! table, the evidence download; for live sessions "Watch live" and "Kill session").

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;

use super::layout::{Person, badge, failed, frame, q, rows, tags, when};
use crate::api::AppState;
use crate::config::Role;
use crate::https::pages::esc;
use crate::store::{AuditFilter, SessionFilter, SessionRecord};
use crate::types::SessionId;

/// Sessions per page of the index.
const PAGE: u32 = 50;
/// HTTP exchanges shown on a session's page.
const MAX_EXCHANGES: usize = 500;

#[derive(Deserialize, Default)]
pub(super) struct IndexQuery {
    user: Option<String>,
    target: Option<String>,
    task: Option<String>,
    ticket: Option<String>,
    protocol: Option<String>,
    since: Option<String>,
    until: Option<String>,
    end_cause: Option<String>,
    break_glass: Option<String>,
    vendor: Option<String>,
    live: Option<String>,
    before: Option<String>,
}

fn filled(s: &Option<String>) -> Option<&str> {
    s.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

fn time_of(s: Option<&str>) -> Option<i64> {
    s.and_then(|s| {
        s.parse::<i64>()
            .ok()
            .or_else(|| crate::config::parse_expiry(s))
    })
}

/// `GET /sessions`.
pub(super) async fn index(
    State(state): State<AppState>,
    who: Person,
    query: Result<Query<IndexQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let f = query.map(|Query(q)| q).unwrap_or_default();
    let mut problems: Vec<String> = Vec::new();
    let mut parse = |what: &str, v: Option<&str>| -> Option<String> {
        v.map(str::to_string).filter(|s| {
            let ok = s.len() <= 64;
            if !ok {
                problems.push(format!("{what} is too long"));
            }
            ok
        })
    };
    let user = parse("user", filled(&f.user));
    let filter = SessionFilter {
        user: if who.sees_all() {
            user.as_deref().and_then(|u| u.parse().ok())
        } else {
            Some(who.user.name.clone())
        },
        ticket: filled(&f.ticket).and_then(|t| t.parse().ok()),
        target: filled(&f.target).and_then(|t| t.parse().ok()),
        task: filled(&f.task).and_then(|t| t.parse().ok()),
        protocol: filled(&f.protocol).map(str::to_string),
        since: time_of(filled(&f.since)),
        until: time_of(filled(&f.until)),
        end_cause: filled(&f.end_cause).map(str::to_string),
        break_glass: filled(&f.break_glass).map(|b| b == "yes"),
        vendor: filled(&f.vendor).map(|_| true),
        vendor_name: filled(&f.vendor)
            .filter(|v| *v != "any")
            .map(str::to_string),
        live: filled(&f.live).map(|l| l == "yes"),
        before: filled(&f.before).and_then(SessionId::parse),
        limit: Some(PAGE + 1),
        ..Default::default()
    };
    let mut list = match state.grants.store().sessions(&filter).await {
        Ok(l) => l,
        Err(e) => return failed(&who, e.into()),
    };
    let more = list.len() > PAGE as usize;
    list.truncate(PAGE as usize);
    let rows_html: String = list.iter().map(index_row).collect();
    let input = |name: &str, label: &str, v: &Option<String>, hint: &str| {
        format!(
            "<label>{label}<input name=\"{name}\" value=\"{}\" placeholder=\"{hint}\"></label>",
            esc(v.as_deref().unwrap_or(""))
        )
    };
    let choice = |name: &str, label: &str, v: &Option<String>, opts: &[&str]| {
        let o: String = std::iter::once("")
            .chain(opts.iter().copied())
            .map(|x| {
                let sel = if v.as_deref().unwrap_or("") == x {
                    " selected"
                } else {
                    ""
                };
                format!(
                    "<option value=\"{x}\"{sel}>{}</option>",
                    if x.is_empty() { "any" } else { x }
                )
            })
            .collect();
        format!("<label>{label}<select name=\"{name}\">{o}</select></label>")
    };
    let mut filters = String::new();
    if who.sees_all() {
        filters.push_str(&input("user", "User", &f.user, "alice"));
    }
    filters.push_str(&input("target", "Target", &f.target, "dc-01"));
    filters.push_str(&input("task", "Task", &f.task, ""));
    filters.push_str(&input("ticket", "Ticket", &f.ticket, "INC-7"));
    filters.push_str(&choice(
        "protocol",
        "Protocol",
        &f.protocol,
        &["ssh", "https"],
    ));
    filters.push_str(&input("since", "Since", &f.since, "2026-11-30"));
    filters.push_str(&input("until", "Until", &f.until, ""));
    filters.push_str(&choice(
        "end_cause",
        "End cause",
        &f.end_cause,
        &[
            "expired",
            "revoked",
            "completed",
            "ticket",
            "killed",
            "client",
            "target",
            "recording",
            "shutdown",
            "error",
        ],
    ));
    filters.push_str(&choice("live", "Live", &f.live, &["yes", "no"]));
    filters.push_str(&choice(
        "break_glass",
        "Break-glass",
        &f.break_glass,
        &["yes", "no"],
    ));
    filters.push_str(&input("vendor", "Vendor", &f.vendor, "any or a name"));
    let next = if more {
        let last = list
            .last()
            .map(|s| s.id.as_str().to_string())
            .unwrap_or_default();
        let mut qs: Vec<String> = [
            ("user", &f.user),
            ("target", &f.target),
            ("task", &f.task),
            ("ticket", &f.ticket),
            ("protocol", &f.protocol),
            ("since", &f.since),
            ("until", &f.until),
            ("end_cause", &f.end_cause),
            ("live", &f.live),
            ("break_glass", &f.break_glass),
            ("vendor", &f.vendor),
        ]
        .iter()
        .filter_map(|(k, v)| filled(v).map(|v| format!("{k}={}", q(v))))
        .collect();
        qs.push(format!("before={}", q(&last)));
        format!(
            "<p><a class=\"button quiet\" id=\"next-page\" href=\"/sessions?{}\">Older sessions</a></p>",
            qs.join("&")
        )
    } else {
        String::new()
    };
    let problems = if problems.is_empty() {
        String::new()
    } else {
        format!("<p class=\"why\">{}</p>", esc(&problems.join("; ")))
    };
    let body = format!(
        "<h1>Sessions</h1><form class=\"filters card\" method=\"get\" action=\"/sessions\">{filters}<button type=\"submit\">Filter</button></form>{problems}\
<div class=\"card\"><table id=\"sessions\"><thead><tr><th>Session</th><th>User</th><th>Target</th><th>Task</th><th>Ticket</th><th>Started</th><th>Ended</th></tr></thead><tbody>{rows_html}</tbody></table>{empty}{next}</div>",
        empty = if list.is_empty() {
            "<p class=\"hint\" id=\"no-sessions\">No sessions match.</p>"
        } else {
            ""
        },
    );
    frame(StatusCode::OK, "Sessions", &who, "/sessions", &body)
}

fn index_row(s: &SessionRecord) -> String {
    let ended = match (&s.ended_at, &s.end_cause) {
        (Some(t), Some(c)) => format!("{} {}", badge(c), when(*t)),
        (Some(t), None) => when(*t),
        _ => badge("live"),
    };
    format!(
        "<tr><td><a href=\"/sessions/{id}\">{id}</a> <span class=\"hint\">{proto}</span>{bg}</td><td>{user}</td><td>{target}</td><td>{task}</td><td>{ticket}</td><td>{start}</td><td>{ended}</td></tr>",
        id = esc(s.id.as_str()),
        proto = esc(&s.protocol),
        bg = if s.kind == crate::store::RequestKind::BreakGlass {
            " <span class=\"badge state-high\">break-glass</span>"
        } else {
            ""
        },
        user = esc(s.user.as_str()),
        target = esc(s.target.as_str()),
        task = esc(s.task.as_str()),
        ticket = esc(s.ticket.as_str()),
        start = when(s.started_at),
    )
}

/// `GET /sessions/{id}`.
pub(super) async fn one(
    State(state): State<AppState>,
    who: Person,
    Path(id): Path<String>,
) -> Response {
    let not_found =
        || crate::grant::GrantError::NotFound(format!("no session {id} visible to you"));
    let Some(sid) = SessionId::parse(&id) else {
        return failed(&who, not_found());
    };
    let s = match state.grants.store().session(&sid).await {
        Ok(Some(s)) if s.user == who.user.name || who.sees_all() => s,
        Ok(_) => return failed(&who, not_found()),
        Err(e) => return failed(&who, e.into()),
    };
    let live = s.ended_at.is_none();
    let mut items = vec![
        (
            "State",
            if live {
                badge("live")
            } else {
                badge(s.end_cause.as_deref().unwrap_or("ended"))
            },
        ),
        (
            "User",
            format!(
                "{}{}",
                esc(s.user.as_str()),
                s.vendor
                    .as_ref()
                    .map(|v| format!(" <span class=\"hint\">vendor {}</span>", esc(v)))
                    .unwrap_or_default()
            ),
        ),
        (
            "Target",
            format!(
                "{} <span class=\"hint\">{}</span>",
                esc(s.target.as_str()),
                esc(&s.protocol)
            ),
        ),
        ("Task", esc(s.task.as_str())),
        ("Principal", esc(s.principal.as_deref().unwrap_or("—"))),
        ("Ticket", esc(s.ticket.as_str())),
        (
            "Grant",
            format!(
                "{} (<a href=\"/requests/{}\">request</a>)",
                esc(s.grant.as_str()),
                esc(s.request.as_str())
            ),
        ),
        (
            "Approvers",
            tags(&s.approvers.iter().map(|a| a.as_str()).collect::<Vec<_>>()),
        ),
        ("From", esc(&s.source)),
        ("Started", when(s.started_at)),
        ("Grant expires", when(s.expires_at)),
    ];
    if let Some(t) = s.ended_at {
        items.push(("Ended", format!("{} ({}s)", when(t), t - s.started_at)));
    }
    if let Some(r) = &s.end_reason {
        items.push((
            "End reason",
            format!("<span id=\"end-reason\">{}</span>", esc(r)),
        ));
    }
    if let Some(ms) = s.kill_latency_ms {
        items.push(("Kill latency", format!("{ms} ms")));
    }
    items.push(("Bytes", format!("{} in, {} out", s.bytes_in, s.bytes_out)));
    let trail = state
        .grants
        .store()
        .audit(&AuditFilter {
            grant: Some(s.grant.to_string()),
            limit: Some(200),
            ..Default::default()
        })
        .await
        .unwrap_or_default();
    let trail: String = trail
        .iter()
        .map(|e| {
            let v: serde_json::Value = serde_json::from_str(&e.record).unwrap_or_default();
            format!(
                "<tr><td>{}</td><td>{}</td><td><code>{}</code></td><td>{}</td></tr>",
                e.seq,
                esc(&e.ts),
                esc(&e.event),
                esc(v.get("actor").and_then(|a| a.as_str()).unwrap_or(""))
            )
        })
        .collect();
    let files: String = s
        .files
        .iter()
        .map(|f| {
            format!(
                "<li><a href=\"/api/v1/sessions/{id}/files/{name}\">{name}</a> {bytes} bytes, sha256 <code>{sha}</code></li>",
                id = esc(s.id.as_str()),
                name = esc(&f.name),
                bytes = f.bytes,
                sha = esc(&f.sha256)
            )
        })
        .collect();
    let mut players = String::new();
    for f in s.files.iter().filter(|f| f.name.ends_with(".cast")) {
        let chapters: String = chapters(&state, &s, &f.name)
            .await
            .iter()
            .enumerate()
            .map(|(i, (t, label))| {
                format!(
                    "<li><button type=\"button\" class=\"quiet small\" data-seek-marker=\"{i}\">{t:.1} s</button> {}</li>",
                    esc(label)
                )
            })
            .collect();
        players.push_str(&format!(
            "<figure><figcaption>{name}</figcaption><div class=\"player\" data-cast=\"/api/v1/sessions/{id}/files/{name}\"></div>\
<ol class=\"chapters\" aria-label=\"Chapters of {name}\">{chapters}</ol></figure>",
            id = esc(s.id.as_str()),
            name = esc(&f.name)
        ));
    }
    let http = if s.protocol == "https" {
        http_table(&state, &s).await
    } else {
        String::new()
    };
    let mut live_parts = String::new();
    if live && who.sees_all() {
        live_parts.push_str(&format!(
            "<div class=\"card\" id=\"live\"><h2>Live</h2>{watch}\
<form data-api=\"/api/v1/sessions/{id}/kill\" data-then=\"reload\">\
<label for=\"kill-reason\">Reason</label><input id=\"kill-reason\" name=\"reason\" required maxlength=\"1000\">\
<p class=\"error\" role=\"alert\"></p><button type=\"submit\" class=\"danger\">Kill session</button></form></div>",
            id = esc(s.id.as_str()),
            watch = if s.protocol == "ssh" {
                format!("<button type=\"button\" id=\"watch\" data-live=\"/api/v1/sessions/{}/live\">Watch live</button><div class=\"player\" id=\"live-player\" hidden></div>", esc(s.id.as_str()))
            } else {
                String::new()
            },
        ));
    }
    let evidence = if !live && (who.has(Role::Reviewer) || who.has(Role::Admin)) {
        format!(
            "<p><a class=\"button quiet\" href=\"/api/v1/sessions/{}/evidence\" download>Download evidence bundle</a></p>",
            esc(s.id.as_str())
        )
    } else {
        String::new()
    };
    let body = format!(
        "<div class=\"card\" id=\"session\" data-session=\"{id}\" data-state=\"{st}\"><h1>Session {id}</h1>{rows}</div>{live_parts}\
<div class=\"card\"><h2>Recording</h2><ul>{files}</ul>{players}{evidence}</div>{http}\
<div class=\"card\"><h2>Audit trail of the grant</h2><table><thead><tr><th>Seq</th><th>Time</th><th>Event</th><th>Actor</th></tr></thead><tbody>{trail}</tbody></table></div>\
<link rel=\"stylesheet\" href=\"/assets/asciinema-player.css\"><script src=\"/assets/asciinema-player.min.js\" defer></script>",
        id = esc(s.id.as_str()),
        st = if live { "live" } else { "ended" },
        rows = rows(&items),
    );
    frame(
        StatusCode::OK,
        &format!("Session {}", s.id),
        &who,
        "",
        &body,
    )
}

/// Largest recording whose markers are listed as chapters (the player still plays bigger ones).
const MAX_CHAPTER_SCAN: u64 = 64 * 1024 * 1024;

/// The markers (`[t, "m", label]` lines) of one recording: the gateway's expiry warnings and
/// the termination, as chapters.
async fn chapters(state: &AppState, s: &SessionRecord, name: &str) -> Vec<(f64, String)> {
    let Some(dir) =
        crate::recording::recorded_dir(&state.grants.config().gateway.recordings_dir, s)
    else {
        return Vec::new();
    };
    let path = dir.join(name);
    if tokio::fs::metadata(&path)
        .await
        .map_or(true, |m| m.len() > MAX_CHAPTER_SCAN)
    {
        return Vec::new();
    }
    let text = tokio::fs::read_to_string(&path).await.unwrap_or_default();
    text.lines()
        .filter(|l| l.contains("\"m\""))
        .filter_map(|l| serde_json::from_str::<(f64, String, String)>(l).ok())
        .filter(|(_, kind, _)| kind == "m")
        .map(|(t, _, label)| (t, label))
        .collect()
}

/// The HTTPS session's exchanges (`http.jsonl`) as a table.
async fn http_table(state: &AppState, s: &SessionRecord) -> String {
    let Some(dir) =
        crate::recording::recorded_dir(&state.grants.config().gateway.recordings_dir, s)
    else {
        return String::new();
    };
    let text = tokio::fs::read_to_string(dir.join("http.jsonl"))
        .await
        .unwrap_or_default();
    let rows: String = text
        .lines()
        .take(MAX_EXCHANGES)
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .map(|v| {
            let f = |k: &str| {
                v.get(k)
                    .map(|x| match x {
                        serde_json::Value::String(s) => s.clone(),
                        other => other.to_string(),
                    })
                    .unwrap_or_default()
            };
            let outcome = match (
                v.get("refused").and_then(|r| r.as_str()),
                v.get("aborted") == Some(&serde_json::Value::Bool(true)),
            ) {
                (Some(why), _) => format!("refused: {why}"),
                (None, true) => "cut".to_string(),
                _ => format!("{} ms, {} B", f("duration_ms"), f("bytes_out")),
            };
            let query = f("query");
            format!(
                "<tr><td>{}</td><td>{}</td><td><code>{}{}</code></td><td>{}</td><td>{}</td></tr>",
                esc(&f("ts")),
                esc(&f("method")),
                esc(&f("path")),
                if query.is_empty() || query == "null" {
                    String::new()
                } else {
                    format!("?{}", esc(&query))
                },
                esc(&f("status")),
                esc(&outcome)
            )
        })
        .collect();
    format!(
        "<div class=\"card\"><h2>HTTP exchanges</h2><table id=\"http\"><thead><tr><th>Time</th><th>Method</th><th>Path</th><th>Status</th><th>Outcome</th></tr></thead><tbody>{rows}</tbody></table></div>"
    )
}
