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

/// The grant bus of a node among several: local subscribers at once, the other nodes through
/// the database.
pub struct ClusterBus {
    local: LocalBus,
    /// To [`notifier`]: what the other nodes must hear, in order.
    notices: tokio::sync::mpsc::UnboundedSender<Notice>,
    node: String,
}

impl ClusterBus {
    /// The bus of `node`; starts the task that sends its notices (on a connection of its own,
    /// so that a notice never waits for the pool while this node is busy cutting).
    pub fn new(pg: PgStore, node: String) -> Self {
        let (notices, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(notifier(pg, rx));
        Self {
            local: LocalBus::default(),
            notices,
            node,
        }
    }
}

impl GrantBus for ClusterBus {
    fn publish(&self, event: GrantEvent) {
        if let Some(how) = how(event.kind) {
            // The other nodes first: this node's own cuts follow at once, and theirs should
            // not wait behind them. The grant's end is in the database already; a notice that
            // cannot be sent is made up for by the other nodes' heartbeats.
            let _ = self.notices.send(Notice::GrantEnded {
                node: self.node.clone(),
                grant: event.grant.clone(),
                how: how.into(),
                reason: clip(&event.reason),
                at_ms: now_ms() - event.at.elapsed().as_millis() as i64,
            });
        }
        self.local.publish(event);
    }

    fn subscribe(&self) -> broadcast::Receiver<GrantEvent> {
        self.local.subscribe()
    }
}

/// The notifier's connection. A notice is a prompt, not a record (the grant's end is committed
/// already): its commit need not wait for the WAL to reach the disk behind other writes.
async fn notice_connection(pg: &PgStore) -> Option<tokio_postgres::Client> {
    let c = pg.connection().await.ok()?;
    c.batch_execute("SET synchronous_commit TO off")
        .await
        .ok()?;
    Some(c)
}

/// Send each notice on a connection of its own, (re)connecting as needed; a notice that fails
/// twice is dropped with a warning (the other nodes' heartbeats re-read their grants).
async fn notifier(pg: PgStore, mut rx: tokio::sync::mpsc::UnboundedReceiver<Notice>) {
    // Connected before the first notice: a connection made when a grant ends would put its
    // set-up (TCP, TLS, SCRAM) in front of every other node's cut.
    let mut conn = notice_connection(&pg).await;
    while let Some(notice) = rx.recv().await {
        let payload = serde_json::to_string(&notice).expect("notices serialize");
        let mut sent = false;
        for _ in 0..2 {
            if conn.as_ref().is_none_or(tokio_postgres::Client::is_closed) {
                conn = notice_connection(&pg).await;
            }
            let Some(c) = &conn else { break };
            match c
                .execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &payload])
                .await
            {
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
