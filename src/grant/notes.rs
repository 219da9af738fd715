//! What jitgate writes back to a ticket's system (where its `[[ticket_systems]]` entry has
//! `comment` on): a comment, or a ServiceNow work note, when a request is made, approved or
//! denied, when a grant is issued or revoked, and when a session starts and ends. The notes
//! follow the audit log; each system has its own queue and worker, which retries with backoff,
//! so a slow or absent system delays nothing else and never a cut.

use std::collections::HashMap;
use std::time::Duration;

use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;

use super::Service;
use crate::audit::{Appended, AuditEvent};
use crate::ticket::systems::SystemError;
use crate::types::TicketRef;

/// Notes waiting per system; past that, new ones are dropped with a warning (the audit log
/// keeps the record).
const QUEUE: usize = 1000;
/// Tries per note.
const TRIES: u32 = 6;
/// The first retry's wait; each next one doubles (1, 2, 4, 8, 16 s).
const FIRST_RETRY: Duration = Duration::from_secs(1);
/// Longest a system's `Retry-After` is obeyed for one note.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);

/// One comment for one ticket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    pub ticket: TicketRef,
    pub text: String,
}

impl Service {
    /// Follow the audit log and write notes to the tickets' systems until `stop`.
    pub async fn write_back_forever(&self, stop: CancellationToken) {
        let mut records = self.audit.subscribe();
        let mut queues: HashMap<String, mpsc::Sender<Note>> = HashMap::new();
        let workers = tokio_util::task::TaskTracker::new();
        for s in self.systems.all().iter().filter(|s| s.cfg.comment) {
            let (tx, rx) = mpsc::channel(QUEUE);
            queues.insert(s.cfg.name.clone(), tx);
            let me = self.systems.clone();
            let stop = stop.clone();
            workers.spawn(async move { deliver(&me, rx, stop).await });
        }
        workers.close();
        if queues.is_empty() {
            return;
        }
        loop {
            let record = tokio::select! {
                _ = stop.cancelled() => break,
                r = records.recv() => r,
            };
            let record = match record {
                Ok(r) => r,
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(
                        missed = n,
                        "ticket write-back fell behind the audit log; some notes were not written"
                    );
                    continue;
                }
                Err(broadcast::error::RecvError::Closed) => break,
            };
            let note = match self.note_for(&record).await {
                Ok(Some(n)) => n,
                Ok(None) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot prepare a ticket note");
                    continue;
                }
            };
            let Some(queue) = note.ticket.system().and_then(|s| queues.get(s)) else {
                continue;
            };
            if queue.try_send(note).is_err() {
                tracing::warn!(
                    "ticket write-back queue is full; a note was dropped (the audit log has the record)"
                );
            }
        }
        drop(queues);
        workers.wait().await;
    }

    /// The note an audit record means for its ticket, if any.
    pub async fn note_for(&self, r: &Appended) -> Result<Option<Note>, super::GrantError> {
        let actor = &r.actor;
        let (ticket, text) = match &r.event {
            AuditEvent::RequestCreated {
                request,
                task,
                target,
                ticket,
                ttl,
                reason,
                required_approvals,
            } => (
                ticket.clone(),
                format!(
                    "jitgate: {actor} requested task {task} on {target} for {ttl} (request {request}; {required_approvals} approval(s) needed).\nReason: {reason}"
                ),
            ),
            AuditEvent::RequestDenied {
                request,
                task,
                target,
                ticket,
                reason,
            } => {
                let Ok(ticket) = ticket.parse::<TicketRef>() else {
                    return Ok(None);
                };
                (
                    ticket,
                    format!(
                        "jitgate: request {request} for task {task} on {target} was denied: {reason}"
                    ),
                )
            }
            AuditEvent::RequestApproved {
                request,
                approvals,
                required_approvals,
                comment,
            } => {
                let Some(req) = self.store.request(request).await? else {
                    return Ok(None);
                };
                let comment = comment
                    .as_deref()
                    .map(|c| format!("\nComment: {c}"))
                    .unwrap_or_default();
                (
                    req.ticket,
                    format!(
                        "jitgate: {actor} approved request {request} ({approvals} of {required_approvals}).{comment}"
                    ),
                )
            }
            AuditEvent::GrantIssued {
                grant,
                requester,
                task,
                target,
                ticket,
                ..
            } => (
                ticket.clone(),
                format!(
                    "jitgate: grant {grant} issued to {requester} for task {task} on {target}."
                ),
            ),
            AuditEvent::GrantRevoked { grant, reason, .. } => {
                let Some(g) = self.store.grant(grant).await? else {
                    return Ok(None);
                };
                (
                    g.ticket,
                    format!("jitgate: grant {grant} was revoked: {reason}"),
                )
            }
            AuditEvent::SessionStarted {
                session,
                protocol,
                user,
                task,
                target,
                ticket,
                source,
                ..
            } => (
                ticket.clone(),
                format!(
                    "jitgate: session {session} started: {user} on {target} ({protocol}), task {task}, from {source}."
                ),
            ),
            AuditEvent::SessionEnded {
                session,
                cause,
                reason,
                duration_ms,
                ..
            } => {
                let Some(s) = self.store.session(session).await? else {
                    return Ok(None);
                };
                (
                    s.ticket.clone(),
                    format!(
                        "jitgate: session {session} ended ({cause}: {reason}) after {}: {} on {}, task {}.\nEvidence bundle: jitgate evidence export {session} -o {session}.tar",
                        duration_text(*duration_ms),
                        s.user,
                        s.target,
                        s.task
                    ),
                )
            }
            _ => return Ok(None),
        };
        Ok(Some(Note { ticket, text }))
    }
}

/// `125_000` ms as `2 min 5 s`.
fn duration_text(ms: u64) -> String {
    let s = ms / 1000;
    match (s / 3600, s % 3600 / 60, s % 60) {
        (0, 0, s) => format!("{s} s"),
        (0, m, s) => format!("{m} min {s} s"),
        (h, m, _) => format!("{h} h {m} min"),
    }
}

/// Write each note from `rx` to its ticket, retrying with backoff; gives up on a note after
/// [`TRIES`] (or at once when the system says the ticket is gone or refuses jitgate).
async fn deliver(
    systems: &crate::ticket::systems::Systems,
    mut rx: mpsc::Receiver<Note>,
    stop: CancellationToken,
) {
    loop {
        let note = tokio::select! {
            _ = stop.cancelled() => return,
            n = rx.recv() => match n { Some(n) => n, None => return },
        };
        let mut wait = FIRST_RETRY;
        for attempt in 1..=TRIES {
            let pause = match systems.comment(&note.ticket, &note.text).await {
                Ok(_) => break,
                Err(SystemError::RateLimited { retry_after, .. }) if attempt < TRIES => {
                    Duration::from_secs(retry_after).min(MAX_RETRY_AFTER)
                }
                Err(e @ SystemError::Unreachable { .. }) if attempt < TRIES => {
                    tracing::debug!(ticket = %note.ticket, error = %e, attempt, "ticket note not written yet");
                    wait
                }
                Err(e) => {
                    tracing::warn!(ticket = %note.ticket, error = %e, attempt, "ticket note not written; giving up on it");
                    break;
                }
            };
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(pause) => {}
            }
            wait *= 2;
        }
    }
}
