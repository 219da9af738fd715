//! `jitgate sessions`, `jitgate kill` and `jitgate replay`.

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use super::{Cli, client, emit, expect_ok, seg};
use crate::config::Config;

fn s<'a>(v: &'a Value, k: &str) -> &'a str {
    v.get(k).and_then(Value::as_str).unwrap_or("")
}

/// Filters for `jitgate sessions`.
#[derive(Debug, clap::Args)]
pub struct SessionArgs {
    /// Only live sessions.
    #[arg(long, conflicts_with = "ended")]
    pub live: bool,
    /// Only ended sessions.
    #[arg(long)]
    pub ended: bool,
    #[arg(long)]
    pub user: Option<String>,
    #[arg(long)]
    pub target: Option<String>,
    #[arg(long)]
    pub task: Option<String>,
    #[arg(long)]
    pub ticket: Option<String>,
    #[arg(long)]
    pub grant: Option<String>,
    /// ssh or https.
    #[arg(long)]
    pub protocol: Option<String>,
    /// Started at or after (RFC 3339, YYYY-MM-DD or Unix seconds).
    #[arg(long)]
    pub since: Option<String>,
    /// Started before.
    #[arg(long)]
    pub until: Option<String>,
    /// End cause: expired, revoked, completed, ticket, killed, client, target, recording,
    /// shutdown, restart.
    #[arg(long)]
    pub end_cause: Option<String>,
    /// Only break-glass sessions.
    #[arg(long)]
    pub break_glass: bool,
    /// Only vendor sessions (`--vendor`), or one vendor's (`--vendor acme`).
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    pub vendor: Option<String>,
    /// The next page: sessions after this one (the last id the previous call printed).
    #[arg(long, value_name = "ID")]
    pub before: Option<String>,
    /// Sessions per page, newest first (the gateway's default is 500, its most 5000).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=i64::from(crate::api::SESSIONS_PAGE_MAX)))]
    pub limit: Option<u32>,
}

fn query_string(a: &SessionArgs) -> String {
    let mut q: Vec<String> = Vec::new();
    if a.live {
        q.push("live=true".into());
    }
    if a.ended {
        q.push("live=false".into());
    }
    if a.break_glass {
        q.push("break_glass=true".into());
    }
    for (k, v) in [
        ("user", &a.user),
        ("target", &a.target),
        ("task", &a.task),
        ("ticket", &a.ticket),
        ("grant", &a.grant),
        ("protocol", &a.protocol),
        ("since", &a.since),
        ("until", &a.until),
        ("end_cause", &a.end_cause),
        ("vendor", &a.vendor),
        ("before", &a.before),
    ] {
        if let Some(v) = v {
            q.push(format!("{k}={}", seg(v)));
        }
    }
    if let Some(n) = a.limit {
        q.push(format!("limit={n}"));
    }
    if q.is_empty() {
        String::new()
    } else {
        format!("?{}", q.join("&"))
    }
}

/// `jitgate sessions`.
pub async fn list(cli: &Cli, args: &SessionArgs) -> Result<i32> {
    let c = client(cli)?;
    let path = format!("/api/v1/sessions{}", query_string(args));
    let v = expect_ok(c.get(&path).await?)?;
    // A full page may not be all of them: say how to get the next one (on stderr, so that
    // `--json` output stays one array).
    let page = v.as_array().map_or(0, Vec::len);
    if page > 0 && page == args.limit.unwrap_or(crate::api::SESSIONS_PAGE) as usize {
        let last = v
            .as_array()
            .and_then(|l| l.last())
            .map_or("", |x| s(x, "id"));
        eprintln!("{page} sessions shown, newest first; there may be more: add --before {last}");
    }
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
                let node = x
                    .get("node")
                    .and_then(Value::as_str)
                    .map(|n| format!("  node {n}"))
                    .unwrap_or_default();
                format!(
                    "{}  {}  {}@{}  task {}  ticket {}  grant {}  started {}  {}{node}",
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

/// `jitgate nodes`.
pub async fn nodes(cli: &Cli) -> Result<i32> {
    let c = client(cli)?;
    let v = expect_ok(c.get("/api/v1/nodes").await?)?;
    emit(cli, &v, || {
        let list = v.as_array().cloned().unwrap_or_default();
        if list.is_empty() {
            return "no nodes (one gateway on SQLite)".into();
        }
        list.iter()
            .map(|x| {
                format!(
                    "{}  {}  last heartbeat {}  live sessions {}",
                    s(x, "name"),
                    if x["alive"] == true { "alive" } else { "DEAD" },
                    s(x, "last_heartbeat"),
                    x["live_sessions"]
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
        match crate::recording::replay::replay(&cast, speed, max_idle, &mut out).await {
            Ok(()) => {}
            // The reader has gone (`jitgate replay ID | head`): stop quietly.
            Err(crate::recording::RecordingError::Output(e))
                if e.kind() == std::io::ErrorKind::BrokenPipe =>
            {
                return Ok(0);
            }
            Err(e) => return Err(e).with_context(|| format!("cannot replay {}", cast.display())),
        }
    }
    Ok(0)
}
