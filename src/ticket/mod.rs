//! Tickets: the local provider (`jitgate ticket open|close`, reassignment via the API) and the
//! state changes that webhooks deliver. A ticket update is applied here and returned as a
//! [`TicketChange`] so that [`crate::grant`] can revoke the grants it invalidates.

pub mod systems;
pub mod webhook;

use std::sync::Arc;

use crate::audit::{AuditEvent, Log};
use crate::store::{Store, Ticket, TicketState};
use crate::types::{TicketRef, UserName, now};

/// Errors from ticket operations.
#[derive(Debug, thiserror::Error)]
pub enum TicketError {
    #[error(
        "ticket {0} does not exist; open it first with `jitgate ticket open {0} --assignee USER`"
    )]
    NotFound(TicketRef),
    #[error("ticket {0} is already open")]
    AlreadyOpen(TicketRef),
    #[error("user {0} is not configured; add it under [[users]]")]
    UnknownUser(UserName),
    #[error("title is longer than 200 characters")]
    TitleTooLong,
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Audit(#[from] crate::audit::AuditError),
}

/// What a ticket system says about a ticket now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TicketUpdate {
    pub id: TicketRef,
    pub title: Option<String>,
    pub open: bool,
    /// `None` when unassigned or assigned to someone jitgate does not know.
    pub assignee: Option<UserName>,
    /// The assignee as their ticket system names them (`jira:5b10ac8d...`) when `assignee`
    /// is `None` and the system named someone: [`Tickets::resolve`] looks for the person whose
    /// sign-in claimed that identity.
    pub assignee_as: Option<String>,
    pub source: String,
    /// What a ticket system answered (`Status resolved, Owner carl`), for the audit log when
    /// it changes a decision; `None` for webhooks and the local provider.
    pub answer: Option<String>,
}

/// The effect of an update.
#[derive(Debug, Clone)]
pub struct TicketChange {
    pub ticket: Ticket,
    pub opened: bool,
    pub closed: bool,
    pub reassigned: bool,
}

/// The ticket service.
#[derive(Clone)]
pub struct Tickets {
    store: Arc<dyn Store>,
    audit: Arc<Log>,
}

impl Tickets {
    /// A ticket service over `store`, auditing to `audit`.
    pub fn new(store: Arc<dyn Store>, audit: Arc<Log>) -> Self {
        Self { store, audit }
    }

    /// The ticket `id`.
    pub async fn get(&self, id: &TicketRef) -> Result<Ticket, TicketError> {
        self.store
            .ticket(id)
            .await?
            .ok_or_else(|| TicketError::NotFound(id.clone()))
    }

    /// Open a local ticket (or reopen a closed one).
    pub async fn open(
        &self,
        actor: &str,
        id: TicketRef,
        assignee: UserName,
        title: String,
    ) -> Result<TicketChange, TicketError> {
        if title.chars().count() > 200 {
            return Err(TicketError::TitleTooLong);
        }
        if let Some(t) = self.store.ticket(&id).await?
            && t.state == TicketState::Open
        {
            return Err(TicketError::AlreadyOpen(id));
        }
        self.apply(
            actor,
            TicketUpdate {
                id,
                title: Some(title),
                open: true,
                assignee: Some(assignee),
                source: "local".into(),
                answer: None,
                assignee_as: None,
            },
        )
        .await
    }

    /// Close a ticket.
    pub async fn close(&self, actor: &str, id: TicketRef) -> Result<TicketChange, TicketError> {
        let t = self.get(&id).await?;
        self.apply(
            actor,
            TicketUpdate {
                id,
                title: None,
                open: false,
                assignee: t.assignee,
                source: "local".into(),
                answer: None,
                assignee_as: None,
            },
        )
        .await
    }

    /// Reassign a ticket.
    pub async fn assign(
        &self,
        actor: &str,
        id: TicketRef,
        assignee: Option<UserName>,
    ) -> Result<TicketChange, TicketError> {
        let t = self.get(&id).await?;
        self.apply(
            actor,
            TicketUpdate {
                id,
                title: None,
                open: t.state == TicketState::Open,
                assignee,
                source: "local".into(),
                answer: None,
                assignee_as: None,
            },
        )
        .await
    }

    /// Fill in `u.assignee` from `u.assignee_as` (a ticket system's name for someone) with
    /// the person whose last sign-in claimed that identity, if there is one.
    pub async fn resolve(&self, mut u: TicketUpdate) -> Result<TicketUpdate, TicketError> {
        if u.assignee.is_none()
            && let Some(id) = u.assignee_as.take()
        {
            u.assignee = self.store.person_with_id(&id).await?;
        }
        Ok(u)
    }

    /// Apply what a ticket system reports; audits each change.
    pub async fn apply(&self, actor: &str, u: TicketUpdate) -> Result<TicketChange, TicketError> {
        let u = self.resolve(u).await?;
        let now = now();
        let old = self.store.ticket(&u.id).await?;
        let state = if u.open {
            TicketState::Open
        } else {
            TicketState::Closed
        };
        let ticket = Ticket {
            id: u.id.clone(),
            title: u
                .title
                .clone()
                .or_else(|| old.as_ref().map(|t| t.title.clone()))
                .unwrap_or_default(),
            assignee: u.assignee.clone(),
            state,
            source: u.source.clone(),
            opened_at: old
                .as_ref()
                .filter(|t| t.state == TicketState::Open || !u.open)
                .map_or(now, |t| t.opened_at),
            updated_at: now,
        };
        let was_open = old.as_ref().is_some_and(|t| t.state == TicketState::Open);
        let opened = u.open && !was_open;
        let closed = !u.open && was_open;
        let reassigned = !opened
            && old
                .as_ref()
                .is_some_and(|t| t.state == TicketState::Open && t.assignee != u.assignee);
        self.store.put_ticket(&ticket).await?;
        if opened {
            self.audit
                .record(
                    actor,
                    AuditEvent::TicketOpened {
                        ticket: u.id.clone(),
                        assignee: u.assignee.clone(),
                        source: u.source.clone(),
                    },
                )
                .await?;
        }
        if reassigned {
            self.audit
                .record(
                    actor,
                    AuditEvent::TicketReassigned {
                        ticket: u.id.clone(),
                        from: old.as_ref().and_then(|t| t.assignee.clone()),
                        to: u.assignee.clone(),
                        source: u.source.clone(),
                    },
                )
                .await?;
        }
        if closed {
            self.audit
                .record(
                    actor,
                    AuditEvent::TicketClosed {
                        ticket: u.id.clone(),
                        source: u.source.clone(),
                    },
                )
                .await?;
        }
        Ok(TicketChange {
            ticket,
            opened,
            closed,
            reassigned,
        })
    }
}
