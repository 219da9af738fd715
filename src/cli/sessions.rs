//! `jitgate sessions`, `jitgate kill` and `jitgate replay`.

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use super::{Cli, client, emit, expect_ok, seg};
use crate::config::Config;

fn s<'a>(v: &'a Value, k: &str) -> &'a str {
    v.get(k).and_then(Value::as_str).unwrap_or("")
}

/// `jitgate sessions [--live]`.
pub async fn list(cli: &Cli, live: bool) -> Result<i32> {
    let c = client(cli)?;
    let path = if live {
        "/api/v1/sessions?live=true"
    } else {
        "/api/v1/sessions"
    };
    let v = expect_ok(c.get(path).await?)?;
    emit(cli, &v, || {
        let list = v.as_array().cloned().unwrap_or_default();
        if list.is_empty() {
            return "no sessions".into();
        }
        list.iter()
            .map(|x| {
                let state = if x.get("ended_at").is_some_and(|e| !e.is_null()) {
                    format!("ended ({})", s(x, "end_reason"))
                } else {
                    "live".to_string()
                };
                format!(
                    "{}  {}  {}@{}  task {}  ticket {}  grant {}  started {}  {}",
                    s(x, "id"),
                    s(x, "protocol"),
                    s(x, "user"),
                    s(x, "target"),
                    s(x, "task"),
                    s(x, "ticket"),
                    s(x, "grant"),
                    crate::types::rfc3339(x.get("started_at").and_then(Value::as_i64).unwrap_or(0)),
                    state
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    });
    Ok(0)
}

/// `jitgate kill SESSION --reason R`.
pub async fn kill(cli: &Cli, id: &str, reason: &str) -> Result<i32> {
    let c = client(cli)?;
    let v = expect_ok(
        c.post(
            &format!("/api/v1/sessions/{}/kill", seg(id)),
            json!({ "reason": reason }),
        )
        .await?,
    )?;
    emit(cli, &v, || {
        format!(
            "session {} is being terminated: {}",
            s(&v, "id"),
            s(&v, "reason")
        )
    });
    Ok(0)
}

/// `jitgate replay SESSION [--speed X]`.
pub async fn replay(cli: &Cli, id: &str, speed: f64, max_idle: Option<f64>) -> Result<i32> {
    let cfg = Config::load(&cli.config)
        .with_context(|| "replay reads recordings from the configured recordings_dir")?;
    let sid = crate::types::SessionId::parse(id)
        .with_context(|| format!("{id} is not a session id (they look like ses_...)"))?;
    let Some(dir) = crate::recording::find_session_dir(&cfg.gateway.recordings_dir, &sid)? else {
        bail!(
            "no recording of session {id} under {}; list sessions with `jitgate sessions`",
            cfg.gateway.recordings_dir.display()
        );
    };
    let casts = crate::recording::replay::session_casts(&dir)?;
    if casts.is_empty() {
        bail!("session {id} has no terminal recording (HTTPS sessions are in http.jsonl)");
    }
    let mut out = tokio::io::stdout();
    for cast in casts {
        crate::recording::replay::replay(&cast, speed, max_idle, &mut out)
            .await
            .with_context(|| format!("cannot replay {}", cast.display()))?;
    }
    Ok(0)
}
