//! Client commands: tickets, requests, approvals, tokens, grants.

use std::time::Duration;

use anyhow::Result;
use clap::Args;
use serde_json::{Value, json};

use super::{Cli, TicketCmd, client, emit, expect_ok, seg};

/// `jitgate request`.
#[derive(Debug, Args)]
pub struct RequestArgs {
    #[arg(long)]
    pub task: String,
    #[arg(long)]
    pub target: String,
    #[arg(long)]
    pub ticket: String,
    /// How long the grant should last, e.g. 15m (at most the task's max_ttl).
    #[arg(long)]
    pub ttl: String,
    /// What you will do and why.
    #[arg(long)]
    pub reason: String,
    /// Wait for the decision; print the token once approved.
    #[arg(long)]
    pub wait: bool,
    /// Give up waiting after this long.
    #[arg(long, default_value = "1h")]
    pub wait_timeout: crate::types::Ttl,
}

fn s<'a>(v: &'a Value, k: &str) -> &'a str {
    v.get(k).and_then(Value::as_str).unwrap_or("")
}

fn request_line(r: &Value) -> String {
    let approvals = r
        .get("approvals")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    let mut line = format!(
        "{}  {:<8}  {} -> {} on {}  ticket {}  ttl {}  by {}  approvals {}/{}",
        s(r, "id"),
        s(r, "state"),
        s(r, "task"),
        s(r, "target"),
        s(r, "target"),
        s(r, "ticket"),
        s(r, "ttl"),
        s(r, "requester"),
        approvals,
        r.get("required_approvals")
            .and_then(Value::as_u64)
            .unwrap_or(0),
    );
    line = line.replacen(&format!(" -> {} on ", s(r, "target")), " on ", 1);
    if let Some(g) = r.get("grant").and_then(Value::as_str) {
        line.push_str(&format!("  grant {g}"));
    }
    if let Some(why) = r.get("decision_reason").and_then(Value::as_str) {
        line.push_str(&format!("\n    {why}"));
    }
    line
}

/// `jitgate ticket ...`.
pub async fn ticket(cli: &Cli, cmd: &TicketCmd) -> Result<i32> {
    let c = client(cli)?;
    let v = match cmd {
        TicketCmd::Open {
            id,
            assignee,
            title,
        } => expect_ok(
            c.post(
                "/api/v1/tickets",
                json!({ "id": id, "assignee": assignee, "title": title }),
            )
            .await?,
        )?,
        TicketCmd::Close { id } => expect_ok(
            c.post(&format!("/api/v1/tickets/{}/close", seg(id)), json!({}))
                .await?,
        )?,
        TicketCmd::Assign { id, assignee } => expect_ok(
            c.post(
                &format!("/api/v1/tickets/{}/assign", seg(id)),
                json!({ "assignee": assignee }),
            )
            .await?,
        )?,
        TicketCmd::Show { id } => expect_ok(c.get(&format!("/api/v1/tickets/{}", seg(id))).await?)?,
    };
    emit(cli, &v, || {
        let mut line = format!(
            "ticket {} {} (assignee: {})",
            s(&v, "id"),
            s(&v, "state"),
            v.get("assignee")
                .and_then(Value::as_str)
                .unwrap_or("nobody")
        );
        if let Some(n) = v.get("revoked").and_then(Value::as_u64).filter(|n| *n > 0) {
            line.push_str(&format!("; {n} grant(s) or pending request(s) ended"));
        }
        line
    });
    Ok(0)
}

/// `jitgate request`.
pub async fn request(cli: &Cli, a: &RequestArgs) -> Result<i32> {
    let c = client(cli)?;
    let r = expect_ok(
        c.post(
            "/api/v1/requests",
            json!({
                "task": a.task, "target": a.target, "ticket": a.ticket,
                "ttl": a.ttl, "reason": a.reason,
            }),
        )
        .await?,
    )?;
    let id = s(&r, "id").to_string();
    if !a.wait {
        emit(cli, &r, || {
            format!(
                "{id}\nrequest {id} is pending: it needs {} approval(s). Approvers run `jitgate approve {id}`.",
                r.get("required_approvals")
                    .and_then(Value::as_u64)
                    .unwrap_or(1)
            )
        });
        return Ok(0);
    }
    if !cli.json {
        eprintln!("request {id} is pending; waiting for approval (Ctrl-C to stop waiting)...");
    }
    let deadline = tokio::time::Instant::now() + a.wait_timeout.duration();
    loop {
        let cur = expect_ok(c.get(&format!("/api/v1/requests/{id}")).await?)?;
        match s(&cur, "state") {
            "pending" => {}
            "approved" => {
                let t = expect_ok(
                    c.post(&format!("/api/v1/requests/{id}/token"), json!({}))
                        .await?,
                )?;
                let mut out = t.clone();
                out["id"] = json!(id);
                out["state"] = json!("approved");
                emit(cli, &out, || token_text(&t));
                return Ok(0);
            }
            other => {
                let why = cur
                    .get("decision_reason")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                emit(cli, &cur, || format!("request {id} was {other}: {why}"));
                return Ok(1);
            }
        }
        if tokio::time::Instant::now() >= deadline {
            emit(cli, &cur, || {
                format!(
                    "request {id} is still pending after {}; stopped waiting",
                    a.wait_timeout
                )
            });
            return Ok(1);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

fn token_text(t: &Value) -> String {
    format!(
        "{}\ngrant {} for task {} on {} ({}), expires {}.\nThis token is shown once: keep it safe; never paste it into tickets or chat.",
        s(t, "token"),
        s(t, "grant"),
        s(t, "task"),
        s(t, "target"),
        s(t, "protocol"),
        s(t, "expires_at"),
    )
}

/// `jitgate requests`.
pub async fn list(cli: &Cli, pending: bool) -> Result<i32> {
    let c = client(cli)?;
    let path = if pending {
        "/api/v1/requests?state=pending"
    } else {
        "/api/v1/requests"
    };
    let v = expect_ok(c.get(path).await?)?;
    emit(cli, &v, || {
        let list = v.as_array().cloned().unwrap_or_default();
        if list.is_empty() {
            "no requests".into()
        } else {
            list.iter().map(request_line).collect::<Vec<_>>().join("\n")
        }
    });
    Ok(0)
}

/// `jitgate approve`.
pub async fn approve(cli: &Cli, id: &str, comment: Option<String>) -> Result<i32> {
    let c = client(cli)?;
    let body = match comment {
        Some(c) => json!({ "comment": c }),
        None => json!({}),
    };
    let v = expect_ok(
        c.post(&format!("/api/v1/requests/{}/approve", seg(id)), body)
            .await?,
    )?;
    emit(cli, &v, || match s(&v, "state") {
        "approved" => format!(
            "request {} approved; grant {} issued. The requester fetches the token with `jitgate token {}`.",
            s(&v, "id"),
            s(&v, "grant"),
            s(&v, "id")
        ),
        _ => format!("approval recorded.\n{}", request_line(&v)),
    });
    Ok(0)
}

/// `jitgate deny`.
pub async fn deny(cli: &Cli, id: &str, reason: &str) -> Result<i32> {
    let c = client(cli)?;
    let v = expect_ok(
        c.post(
            &format!("/api/v1/requests/{}/deny", seg(id)),
            json!({ "reason": reason }),
        )
        .await?,
    )?;
    emit(cli, &v, || format!("request {} rejected", s(&v, "id")));
    Ok(0)
}

/// `jitgate token`.
pub async fn token(cli: &Cli, id: &str) -> Result<i32> {
    let c = client(cli)?;
    let v = expect_ok(
        c.post(&format!("/api/v1/requests/{}/token", seg(id)), json!({}))
            .await?,
    )?;
    emit(cli, &v, || token_text(&v));
    Ok(0)
}

/// `jitgate done`.
pub async fn done(cli: &Cli, id: &str) -> Result<i32> {
    let c = client(cli)?;
    let v = expect_ok(
        c.post(&format!("/api/v1/grants/{}/done", seg(id)), json!({}))
            .await?,
    )?;
    emit(cli, &v, || format!("grant {} completed", s(&v, "id")));
    Ok(0)
}

/// `jitgate revoke`.
pub async fn revoke(cli: &Cli, id: &str, reason: &str) -> Result<i32> {
    let c = client(cli)?;
    let v = expect_ok(
        c.post(
            &format!("/api/v1/grants/{}/revoke", seg(id)),
            json!({ "reason": reason }),
        )
        .await?,
    )?;
    emit(cli, &v, || format!("grant {} revoked", s(&v, "id")));
    Ok(0)
}

/// `jitgate grants`.
pub async fn grants(cli: &Cli, active: bool) -> Result<i32> {
    let c = client(cli)?;
    let path = if active {
        "/api/v1/grants?state=active"
    } else {
        "/api/v1/grants"
    };
    let v = expect_ok(c.get(path).await?)?;
    emit(cli, &v, || {
        let list = v.as_array().cloned().unwrap_or_default();
        if list.is_empty() {
            return "no grants".into();
        }
        list.iter()
            .map(|g| {
                format!(
                    "{}  {:<9}  {} on {}  ticket {}  user {}  expires {}",
                    s(g, "id"),
                    s(g, "state"),
                    s(g, "task"),
                    s(g, "target"),
                    s(g, "ticket"),
                    s(g, "requester"),
                    crate::types::rfc3339(g.get("expires_at").and_then(Value::as_i64).unwrap_or(0)),
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    });
    Ok(0)
}

/// `jitgate break-glass`.
pub async fn break_glass(
    cli: &Cli,
    target: &str,
    reason: &str,
    ticket: &Option<String>,
    task: &Option<String>,
    ttl: &Option<String>,
) -> Result<i32> {
    let c = client(cli)?;
    let v = expect_ok(
        c.post(
            "/api/v1/break-glass",
            json!({ "target": target, "reason": reason, "ticket": ticket, "task": task, "ttl": ttl }),
        )
        .await?,
    )?;
    emit(cli, &v, || {
        format!(
            "{}\nBREAK-GLASS grant {} for task {} on {} ({}), ticket {}, expires {}.\nThis use is recorded with input, alerted, and must be reviewed by someone else (review {}).\nThe token is shown once.",
            s(&v, "token"),
            s(&v, "grant"),
            s(&v, "task"),
            s(&v, "target"),
            s(&v, "protocol"),
            s(&v, "ticket"),
            s(&v, "expires_at"),
            s(&v, "review"),
        )
    });
    Ok(0)
}

/// `jitgate reviews`.
pub async fn reviews(cli: &Cli, all: bool) -> Result<i32> {
    let c = client(cli)?;
    let path = if all {
        "/api/v1/reviews?all=true"
    } else {
        "/api/v1/reviews"
    };
    let v = expect_ok(c.get(path).await?)?;
    emit(cli, &v, || {
        let list = v.as_array().cloned().unwrap_or_default();
        if list.is_empty() {
            return "no break-glass uses awaiting review".into();
        }
        list.iter()
            .map(|r| {
                let age = r.get("age_secs").and_then(Value::as_i64).unwrap_or(0);
                let state = match r.get("reviewed_by").and_then(Value::as_str) {
                    Some(by) => format!("reviewed by {by}"),
                    None => "OPEN".into(),
                };
                format!(
                    "{}  {}  {} on {} (task {}, ticket {})  age {}  {}\n    {}",
                    s(r, "id"),
                    s(r, "user"),
                    s(r, "grant"),
                    s(r, "target"),
                    s(r, "task"),
                    s(r, "ticket"),
                    crate::types::Ttl::from_secs(age.max(1) as u64),
                    state,
                    s(r, "reason"),
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    });
    Ok(0)
}

/// `jitgate review ID --notes N`.
pub async fn review(cli: &Cli, id: &str, notes: &str) -> Result<i32> {
    let c = client(cli)?;
    let v = expect_ok(
        c.post(
            &format!("/api/v1/reviews/{}", seg(id)),
            json!({ "notes": notes }),
        )
        .await?,
    )?;
    emit(cli, &v, || format!("review {} completed", s(&v, "id")));
    Ok(0)
}
