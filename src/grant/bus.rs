//! The grant event bus: grant changes are published here, and the session registry subscribes.
//! Behind a trait so that several gateway nodes can later share one (e.g. PostgreSQL
//! LISTEN/NOTIFY) without touching publishers or subscribers.

use std::time::Instant;

use tokio::sync::broadcast;

use crate::types::{GrantId, TicketRef, UserName};

/// What happened to a grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrantEventKind {
    Issued,
    Revoked(Revoker),
    Expired,
    Completed,
}

/// Who revoked a grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revoker {
    /// An approver or admin (`jitgate revoke`, the console).
    Person,
    /// The ticket system: the ticket closed, or was reassigned away from the requester.
    Ticket,
    /// jitgate: the ticket's system could not confirm the ticket within its `grace`.
    Unverifiable,
}

impl GrantEventKind {
    /// Lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Issued => "issued",
            Self::Revoked(_) => "revoked",
            Self::Expired => "expired",
            Self::Completed => "completed",
        }
    }
}

/// One grant change.
#[derive(Debug, Clone)]
pub struct GrantEvent {
    pub kind: GrantEventKind,
    pub grant: GrantId,
    pub ticket: TicketRef,
    pub user: UserName,
    /// Human reason (`ticket INC-7 closed`, `revoked by bob: ...`).
    pub reason: String,
    /// When the triggering event happened, for kill-latency measurement.
    pub at: Instant,
}

/// Publishes grant events to every subscriber.
pub trait GrantBus: Send + Sync + 'static {
    /// Send `event` to current subscribers; never blocks.
    fn publish(&self, event: GrantEvent);
    /// A new subscription receiving events published from now on.
    fn subscribe(&self) -> broadcast::Receiver<GrantEvent>;
}

/// The in-process bus (one gateway node).
#[derive(Debug)]
pub struct LocalBus {
    tx: broadcast::Sender<GrantEvent>,
}

impl LocalBus {
    /// A bus buffering up to `capacity` events per slow subscriber.
    pub fn new(capacity: usize) -> Self {
        Self {
            tx: broadcast::channel(capacity).0,
        }
    }
}

impl Default for LocalBus {
    fn default() -> Self {
        Self::new(4096)
    }
}

impl GrantBus for LocalBus {
    fn publish(&self, event: GrantEvent) {
        // No subscribers is fine: nothing is live to cut.
        let _ = self.tx.send(event);
    }

    fn subscribe(&self) -> broadcast::Receiver<GrantEvent> {
        self.tx.subscribe()
    }
}
