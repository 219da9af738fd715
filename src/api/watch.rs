//! What the console reads besides JSON records: a request's changes as server-sent events, a
//! session's recorded files, the terminal of a live session as it is written (server-sent
//! events), and a session's evidence bundle. Same visibility rules as the records themselves.

use std::path::{Path, PathBuf};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{self, Stream};
use tokio::io::{AsyncBufReadExt, AsyncSeekExt};

use super::auth::Caller;
use super::error::ApiError;
use super::{ApiResult, AppState, Segment};
use crate::audit::AuditEvent;
use crate::config::Role;
use crate::grant::{GrantError, can_see_all};
use crate::store::SessionRecord;
use crate::types::SessionId;

/// How often a watched request or a live terminal is looked at again.
const POLL: Duration = Duration::from_millis(250);
/// A watch ends after this long; the page reconnects if it is still open.
const WATCH_FOR: Duration = Duration::from_secs(3600);
/// Longest line of a recording sent as one event (a line is one asciicast event).
const MAX_LINE: usize = 1024 * 1024;

/// `GET /api/v1/requests/{id}/events`: the request as JSON each time it changes (and at once).
pub(super) async fn request_events(
    State(state): State<AppState>,
    caller: Caller,
    Segment(id): Segment,
) -> Result<Sse<impl Stream<Item = Result<Event, std::convert::Infallible>>>, ApiError> {
    let first = state.grants.request(&caller.0, &id).await?;
    let started = tokio::time::Instant::now();
    let init = (state, caller, id, None::<String>, Some(first));
    let s = stream::unfold(
        init,
        move |(state, caller, id, last, mut next)| async move {
            loop {
                let req = match next.take() {
                    Some(r) => r,
                    None => {
                        if started.elapsed() > WATCH_FOR {
                            return None;
                        }
                        tokio::time::sleep(POLL).await;
                        state.grants.request(&caller.0, &id).await.ok()?
                    }
                };
                let json = serde_json::to_string(&req).ok()?;
                if last.as_deref() != Some(json.as_str()) {
                    let ev = Event::default().event("request").data(json.clone());
                    return Some((Ok(ev), (state, caller, id, Some(json), None)));
                }
            }
        },
    );
    Ok(Sse::new(s).keep_alive(KeepAlive::default()))
}

/// The session `id` if the caller may see it (their own, or everyone's for approvers,
/// reviewers and admins).
async fn visible_session(
    state: &AppState,
    caller: &Caller,
    id: &str,
) -> Result<SessionRecord, ApiError> {
    let missing = || ApiError::not_found(format!("session {id} does not exist"));
    let sid = SessionId::parse(id).ok_or_else(missing)?;
    state
        .grants
        .store()
        .session(&sid)
        .await
        .map_err(|e| ApiError::from(GrantError::from(e)))?
        .filter(|s| s.user == caller.0.name || can_see_all(&caller.0))
        .ok_or_else(missing)
}

/// The session's recording folder.
fn session_dir(state: &AppState, s: &SessionRecord) -> Result<PathBuf, ApiError> {
    crate::recording::recorded_dir(&state.grants.config().gateway.recordings_dir, s).ok_or_else(
        || ApiError::not_found(format!("the recording of {} is not on this gateway", s.id)),
    )
}

/// Whether `name` is a file a session folder holds: `N.cast`, `http.jsonl` or `session.json`.
fn recording_name(name: &str) -> bool {
    match name.strip_suffix(".cast") {
        Some(n) => !n.is_empty() && n.len() <= 6 && n.bytes().all(|b| b.is_ascii_digit()),
        None => matches!(name, "http.jsonl" | "session.json"),
    }
}

/// `GET /api/v1/sessions/{id}/files/{name}`: one recorded file, streamed.
pub(super) async fn session_file(
    State(state): State<AppState>,
    caller: Caller,
    UrlPath((id, name)): UrlPath<(String, String)>,
) -> Result<Response, ApiError> {
    if !recording_name(&name) {
        return Err(ApiError::not_found(format!(
            "a session has no file {name:?}; its files are N.cast, http.jsonl and session.json"
        )));
    }
    let s = visible_session(&state, &caller, &id).await?;
    let path = session_dir(&state, &s)?.join(&name);
    let missing = || ApiError::not_found(format!("session {id} has no file {name}"));
    if s.ended_at.is_none() && name.ends_with(".cast") {
        // Still being written: up to its last whole line (a player cannot read half a line).
        let mut bytes = tokio::fs::read(&path).await.map_err(|_| missing())?;
        let whole = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        bytes.truncate(whole);
        let mut r = Body::from(bytes).into_response();
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-asciicast"),
        );
        r.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        return Ok(r);
    }
    let file = tokio::fs::File::open(&path).await.map_err(|_| missing())?;
    let kind = if name.ends_with(".cast") {
        "application/x-asciicast"
    } else if name.ends_with(".jsonl") {
        "application/x-ndjson"
    } else {
        "application/json"
    };
    let mut r = Body::from_stream(tokio_util::io::ReaderStream::new(file)).into_response();
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(r)
}

/// The newest `N.cast` of a folder.
fn newest_cast(dir: &Path) -> Option<(u32, PathBuf)> {
    std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_str()?.to_string();
            let n: u32 = name.strip_suffix(".cast")?.parse().ok()?;
            Some((n, e.path()))
        })
        .max_by_key(|(n, _)| *n)
}

/// `GET /api/v1/sessions/{id}/live`: the terminal of a live session as it is recorded, as
/// server-sent events in the shape asciinema-player's `eventsource` driver reads: the asciicast
/// header of each file (with `time`, where the stream stands, so that a late watcher sees the
/// screen at once), then one event line each, and `{"state":"offline"}` when the session
/// has ended. Approvers, reviewers and admins; every watch is audited.
pub(super) async fn session_live(
    State(state): State<AppState>,
    caller: Caller,
    Segment(id): Segment,
) -> Result<Sse<impl Stream<Item = Result<Event, std::convert::Infallible>>>, ApiError> {
    caller.require(
        &[Role::Approver, Role::Reviewer, Role::Admin],
        "watch live sessions",
    )?;
    let s = visible_session(&state, &caller, &id).await?;
    if s.ended_at.is_some() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "ended",
            format!("session {id} has ended; play its recording instead"),
        ));
    }
    let dir = session_dir(&state, &s)?;
    state
        .grants
        .audit()
        .record(
            caller.0.name.as_str(),
            AuditEvent::SessionWatched {
                session: s.id.clone(),
                grant: s.grant.clone(),
                user: s.user.clone(),
            },
        )
        .await
        .map_err(|e| ApiError::from(GrantError::from(e)))?;
    let tail = Tail {
        state,
        id: s.id,
        dir,
        file: None,
        queue: std::collections::VecDeque::new(),
        started: tokio::time::Instant::now(),
        ended: false,
    };
    let s = stream::unfold(tail, |mut t| async move {
        let line = t.next().await?;
        Some((Ok(Event::default().data(line)), t))
    });
    Ok(Sse::new(s).keep_alive(KeepAlive::default()))
}

/// Follows the newest cast file of a live session.
struct Tail {
    state: AppState,
    id: SessionId,
    dir: PathBuf,
    file: Option<(u32, tokio::io::BufReader<tokio::fs::File>)>,
    /// Lines read and not yet sent.
    queue: std::collections::VecDeque<String>,
    started: tokio::time::Instant,
    ended: bool,
}

/// The time of an asciicast event line (`[t, "o", "..."]`).
fn event_time(line: &str) -> Option<f64> {
    serde_json::from_str::<serde_json::Value>(line)
        .ok()?
        .get(0)?
        .as_f64()
}

impl Tail {
    /// Every whole line the file holds now (a line still being written is read later).
    async fn read_lines(r: &mut tokio::io::BufReader<tokio::fs::File>) -> Vec<String> {
        let mut out = Vec::new();
        while let Ok(pos) = r.stream_position().await {
            let mut line = String::new();
            match r.read_line(&mut line).await {
                Ok(n) if n > 0 && line.ends_with('\n') => {
                    if line.len() <= MAX_LINE {
                        out.push(line.trim_end().to_string());
                    }
                }
                Ok(n) if n > 0 => {
                    let _ = r.seek(std::io::SeekFrom::Start(pos)).await;
                    break;
                }
                _ => break,
            }
        }
        out
    }

    async fn next(&mut self) -> Option<String> {
        loop {
            if let Some(l) = self.queue.pop_front() {
                return Some(l);
            }
            if self.ended || self.started.elapsed() > WATCH_FOR {
                return None;
            }
            // A newer file (the session's next channel) replaces the one followed.
            if let Some((n, path)) = newest_cast(&self.dir)
                && self.file.as_ref().is_none_or(|(cur, _)| n > *cur)
                && let Ok(f) = tokio::fs::File::open(&path).await
            {
                let mut r = tokio::io::BufReader::new(f);
                let mut lines = Self::read_lines(&mut r).await;
                // The header says where the stream stands: the time of the last event so far.
                let now = lines.iter().rev().find_map(|l| event_time(l));
                if let (Some(first), Some(t)) = (lines.first_mut(), now)
                    && let Ok(serde_json::Value::Object(mut h)) = serde_json::from_str(first)
                {
                    h.insert("time".into(), serde_json::json!(t));
                    *first = serde_json::Value::Object(h).to_string();
                }
                self.queue.extend(lines);
                self.file = Some((n, r));
                continue;
            }
            if let Some((_, r)) = self.file.as_mut() {
                let lines = Self::read_lines(r).await;
                if !lines.is_empty() {
                    self.queue.extend(lines);
                    continue;
                }
            }
            let live = self.state.sessions.live().iter().any(|s| s.id == self.id);
            if !live {
                self.ended = true;
                return Some(r#"{"state":"offline"}"#.to_string());
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

/// `GET /api/v1/sessions/{id}/evidence`: the session's signed evidence bundle (reviewers and
/// admins), as `jitgate evidence export` writes it.
pub(super) async fn evidence(
    State(state): State<AppState>,
    caller: Caller,
    Segment(id): Segment,
) -> ApiResult {
    caller.require(&[Role::Reviewer, Role::Admin], "export evidence")?;
    let s = visible_session(&state, &caller, &id).await?;
    let cfg = state.grants.config();
    let tmp = cfg
        .gateway
        .data_dir
        .join(format!(".evidence-{}.tar", crate::types::random_id(16)));
    let public = std::fs::read_to_string(cfg.gateway.certs_dir.join(crate::pki::AUDIT_PUB)).ok();
    let made = crate::evidence::export(
        state.grants.store().as_ref(),
        &cfg.gateway.recordings_dir,
        state.keys.audit_key(),
        public.as_deref(),
        &s.id,
        false,
        &tmp,
    )
    .await;
    let bytes = match made {
        Ok(_) => tokio::fs::read(&tmp).await.map_err(|e| {
            tracing::error!(error = %e, "cannot read the evidence bundle just written");
            ApiError::internal()
        }),
        Err(e) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "evidence",
            e.to_string(),
        )),
    };
    let _ = tokio::fs::remove_file(&tmp).await;
    let bytes = bytes?;
    let mut r = Body::from(bytes).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-tar"),
    );
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"evidence-{}.tar\"", s.id))
    {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::recording_name;

    #[test]
    fn only_a_sessions_own_file_names_are_served() {
        for ok in ["0.cast", "12.cast", "http.jsonl", "session.json"] {
            assert!(recording_name(ok), "{ok}");
        }
        for bad in [
            "../0.cast",
            ".cast",
            "a.cast",
            "0.cast/x",
            "/etc/passwd",
            "session.json.bak",
            "1234567.cast",
        ] {
            assert!(!recording_name(bad), "{bad}");
        }
    }
}
