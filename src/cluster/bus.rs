//! Notices between nodes: [`ClusterBus`] (grant ends to this node's sessions at once and to
//! the other nodes by `pg_notify`, from a task with a connection of its own) and the
//! [`Notice`]s they exchange.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use crate::grant::{GrantBus, GrantEvent, GrantEventKind, LocalBus, Revoker};
use crate::session::Cause;
use crate::store::StoreError;
use crate::store::postgres::{CHANNEL, PgStore};
use crate::types::{GrantId, SessionId};

pub(super) fn now_ms() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

/// What one node tells the others (the payload of a notification, JSON).
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub(super) enum Notice {
    /// Grant `grant` ended (`how`: revoked, ticket, unverifiable, expired, completed).
    GrantEnded {
        node: String,
        grant: GrantId,
        how: String,
        reason: String,
        /// When it ended, Unix milliseconds (for the cut's latency).
        at_ms: i64,
    },
    /// Cut session `session`, which node `to` serves.
    Kill {
        node: String,
        to: String,
        session: SessionId,
        reason: String,
        at_ms: i64,
    },
}

fn how(kind: GrantEventKind) -> Option<&'static str> {
    match kind {
        GrantEventKind::Issued => None,
        GrantEventKind::Revoked(Revoker::Person) => Some("revoked"),
        GrantEventKind::Revoked(Revoker::Ticket) => Some("ticket"),
        GrantEventKind::Revoked(Revoker::Unverifiable) => Some("unverifiable"),
        GrantEventKind::Expired => Some("expired"),
        GrantEventKind::Completed => Some("completed"),
    }
}

pub(super) fn cause_of(how: &str) -> Cause {
    match how {
        "ticket" => Cause::Ticket,
        "unverifiable" => Cause::TicketUnverifiable,
        "expired" => Cause::Expired,
        "completed" => Cause::Completed,
        _ => Cause::Revoked,
    }
}

/// The instant `at_ms` (Unix milliseconds) was, on this machine's monotonic clock.
pub(super) fn instant_of(at_ms: i64) -> Instant {
    let ago = now_ms().saturating_sub(at_ms).clamp(0, 60_000) as u64;
    Instant::now()
        .checked_sub(Duration::from_millis(ago))
        .unwrap_or_else(Instant::now)
}

/// Reasons are for people; a notification carries at most this many bytes of one.
const MAX_REASON: usize = 1000;

pub(super) fn clip(s: &str) -> String {
    let mut end = s.len().min(MAX_REASON);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

/// How long this node's own cuts for a grant's end wait for the notice to the other nodes to
/// be sent. Sent first, the notice leaves while this node is quiet; sent while this node cuts
/// hundreds of sessions, its round trip to the database queues behind every one of those cuts
/// (seen: 200 ms on two cores). A database that does not answer within it delays no cut more.
const NOTICE_FIRST_MAX: Duration = Duration::from_millis(25);

/// A notice to send, and who waits for its first attempt.
type Outgoing = (Notice, tokio::sync::oneshot::Sender<()>);

/// The grant bus of a node among several: the other nodes through the database, then local
/// subscribers.
pub struct ClusterBus {
    local: std::sync::Arc<LocalBus>,
    /// To [`notifier`]: what the other nodes must hear, in order.
    notices: tokio::sync::mpsc::UnboundedSender<Outgoing>,
    node: String,
}

impl ClusterBus {
    /// The bus of `node`; starts the task that sends its notices (on a connection of its own,
    /// so that a notice never waits for the pool while this node is busy cutting).
    pub fn new(pg: PgStore, node: String) -> Self {
        let (notices, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(notifier(pg, rx));
        Self {
            local: std::sync::Arc::new(LocalBus::default()),
            notices,
            node,
        }
    }
}

impl GrantBus for ClusterBus {
    fn publish(&self, event: GrantEvent) {
        let Some(how) = how(event.kind) else {
            self.local.publish(event);
            return;
        };
        // The grant's end is in the database already; a notice that cannot be sent is made
        // up for by the other nodes' heartbeats.
        let notice = Notice::GrantEnded {
            node: self.node.clone(),
            grant: event.grant.clone(),
            how: how.into(),
            reason: clip(&event.reason),
            at_ms: now_ms() - event.at.elapsed().as_millis() as i64,
        };
        let (sent, first_attempt) = tokio::sync::oneshot::channel();
        if self.notices.send((notice, sent)).is_err() {
            self.local.publish(event);
            return;
        }
        // The other nodes first, then this node's own cuts, which wait at most
        // NOTICE_FIRST_MAX for it.
        let local = self.local.clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(NOTICE_FIRST_MAX, first_attempt).await;
            local.publish(event);
        });
    }

    fn subscribe(&self) -> broadcast::Receiver<GrantEvent> {
        self.local.subscribe()
    }
}

/// The notifier's connection. A notice is a prompt, not a record (the grant's end is committed
/// already): its commit need not wait for the WAL to reach the disk behind other writes.
/// The notice statement is prepared once, so that a notice is one round trip.
async fn notice_connection(
    pg: &PgStore,
) -> Option<(tokio_postgres::Client, tokio_postgres::Statement)> {
    let c = pg.connection().await.ok()?;
    c.batch_execute("SET synchronous_commit TO off")
        .await
        .ok()?;
    let st = c.prepare("SELECT pg_notify($1, $2)").await.ok()?;
    Some((c, st))
}

/// Send each notice on a connection of its own, (re)connecting as needed; a notice that fails
/// twice is dropped with a warning (the other nodes' heartbeats re-read their grants).
async fn notifier(pg: PgStore, mut rx: tokio::sync::mpsc::UnboundedReceiver<Outgoing>) {
    // Connected before the first notice: a connection made when a grant ends would put its
    // set-up (TCP, TLS, SCRAM) in front of every other node's cut.
    let mut conn = notice_connection(&pg).await;
    while let Some((notice, first_attempt)) = rx.recv().await {
        let payload = serde_json::to_string(&notice).expect("notices serialize");
        let mut sent = false;
        let mut first_attempt = Some(first_attempt);
        for _ in 0..2 {
            if conn.as_ref().is_none_or(|(c, _)| c.is_closed()) {
                conn = notice_connection(&pg).await;
            }
            let Some((c, st)) = &conn else { break };
            let r = c.execute(st, &[&CHANNEL, &payload]).await;
            // Whatever came of it, this node's own cuts wait no longer.
            if let Some(tx) = first_attempt.take() {
                let _ = tx.send(());
            }
            match r {
                Ok(_) => {
                    sent = true;
                    break;
                }
                Err(_) => conn = None,
            }
        }
        if !sent {
            tracing::warn!(
                "cannot tell the other nodes of a grant's end; their next heartbeat will find it"
            );
        }
    }
}

pub(super) async fn notify(pg: &PgStore, notice: &Notice) -> Result<(), StoreError> {
    let payload = serde_json::to_string(notice).expect("notices serialize");
    let c = pg.client().await?;
    c.execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &payload])
        .await
        .map_err(|e| StoreError::Unreachable(e.to_string()))?;
    Ok(())
}
