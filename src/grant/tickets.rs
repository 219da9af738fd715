//! Keeping grants true to the ticket systems their tickets live in: the live check before a
//! request, an approval, a token fetch or an admission ([`Service::refresh_ticket`]), and the
//! background pass that re-reads every ticket with live grants or pending requests
//! ([`Service::reconcile`]), ending grants whose ticket closed, moved to someone else, or could
//! not be verified for longer than the system's `grace`.

use std::collections::BTreeSet;
use std::time::Instant;

use std::sync::Arc;

use futures_util::StreamExt as _;

use super::{GrantError, GrantEventKind, Revoker, Service};
use crate::audit::AuditEvent;
use crate::store::{GrantFilter, GrantState, RequestFilter, RequestState, TicketState};
use crate::ticket::TicketUpdate;
use crate::ticket::systems::{SystemError, Systems};
use crate::types::TicketRef;

/// Tickets read at once in a reconcile pass.
const RECONCILE_CONCURRENCY: usize = 8;

/// What one reconcile pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Reconciled {
    /// Tickets read from the system.
    pub checked: usize,
    /// Tickets whose state or assignee changed (their grants were ended where needed).
    pub changed: usize,
    /// Tickets the system gave no answer about.
    pub failed: usize,
    /// Grants ended because their ticket could not be verified within `grace`.
    pub unverifiable: usize,
    /// The first failure, for the log.
    pub error: Option<String>,
    /// The longest wait a rate-limited answer asked for, in seconds.
    pub retry_after: Option<u64>,
}

impl Service {
    /// The service with the ticket systems tickets are checked against.
    pub fn with_ticket_systems(mut self, systems: Arc<Systems>) -> Self {
        self.systems = systems;
        self
    }

    /// The ticket systems.
    pub fn ticket_systems(&self) -> &Arc<Systems> {
        &self.systems
    }

    /// `id` as jitgate keeps it (a bare id a ticket system's `pattern` claims gets its prefix).
    pub fn canonical_ticket(&self, id: TicketRef) -> TicketRef {
        self.systems.canonical(id)
    }

    /// Ask the ticket's system when jitgate's view is older than `max_staleness`, and apply
    /// what it says (ending grants it invalidates). Tickets of no system are left as they are.
    /// `Err(GrantError::TicketSystem)` when the system gave no answer.
    pub async fn refresh_ticket(&self, id: &TicketRef) -> Result<(), GrantError> {
        if !self.systems.is_stale(id) {
            return Ok(());
        }
        self.fetch_ticket(id).await
    }

    /// Ask the ticket's system now, whatever the age of jitgate's view.
    async fn fetch_ticket(&self, id: &TicketRef) -> Result<(), GrantError> {
        match self.systems.fetch(id).await {
            Ok(Some(update)) => self.apply_remote(update).await.map(|_| ()),
            Ok(None) => Ok(()),
            Err(SystemError::NotFound { system, .. }) => self.gone(id, system).await,
            Err(e) => Err(GrantError::TicketSystem(e)),
        }
    }

    /// [`Service::refresh_ticket`] for something `what` (a request, an approval, a token
    /// fetch) that is refused when the system gives no answer; the refusal is audited.
    pub(super) async fn refresh_or_refuse(
        &self,
        id: &TicketRef,
        what: &str,
    ) -> Result<(), GrantError> {
        self.checked_with(id, what, self.refresh_ticket(id).await)
            .await
    }

    /// A new request by `requester` on `id`: as [`Service::refresh_or_refuse`], and a fresh
    /// view that gives the ticket to someone else is asked again before the request is refused
    /// (the ticket may have moved to them since, or they signed in claiming its assignee).
    pub(super) async fn refresh_for_request(
        &self,
        id: &TicketRef,
        requester: &crate::types::UserName,
    ) -> Result<(), GrantError> {
        let mine = !self.systems.is_stale(id)
            && self
                .store
                .ticket(id)
                .await?
                .is_some_and(|t| t.assignee.as_ref() == Some(requester));
        // A stale view is never `mine`.
        let answer = if !mine && self.systems.owns(id) {
            self.fetch_ticket(id).await
        } else {
            Ok(())
        };
        self.checked_with(id, "request", answer).await
    }

    /// Audit a refusal of `what` for want of the system's answer.
    async fn checked_with(
        &self,
        id: &TicketRef,
        what: &str,
        answer: Result<(), GrantError>,
    ) -> Result<(), GrantError> {
        match answer {
            Err(GrantError::TicketSystem(e)) => {
                self.audit
                    .record(
                        "system",
                        AuditEvent::TicketUnanswered {
                            ticket: id.clone(),
                            system: id.system().unwrap_or_default().to_string(),
                            refused: what.to_string(),
                            reason: e.to_string(),
                        },
                    )
                    .await?;
                Err(GrantError::TicketSystem(e))
            }
            other => other,
        }
    }

    /// Ticket `id` is gone from `system`: one jitgate knew as open is closed now (the answer is
    /// the system's own: 404, or missing from a search).
    async fn gone(&self, id: &TicketRef, system: String) -> Result<(), GrantError> {
        if let Some(t) = self.store.ticket(id).await?
            && t.state == TicketState::Open
        {
            self.apply_remote(TicketUpdate {
                id: id.clone(),
                title: None,
                open: false,
                assignee: t.assignee,
                source: system,
                answer: Some("the ticket does not exist".into()),
                assignee_as: None,
            })
            .await?;
        }
        Ok(())
    }

    /// Apply a system's answer when it differs from jitgate's view; `true` when it did.
    async fn apply_remote(&self, u: TicketUpdate) -> Result<bool, GrantError> {
        let u = self.tickets.resolve(u).await?;
        if let Some(t) = self.store.ticket(&u.id).await?
            && (t.state == TicketState::Open) == u.open
            && t.assignee == u.assignee
            && u.title.as_ref().is_none_or(|title| *title == t.title)
        {
            return Ok(false);
        }
        let actor = format!("ticket:{}", u.source);
        let (system, answer) = (u.source.clone(), u.answer.clone());
        let change = self.tickets.apply(&actor, u).await?;
        if let Some(answer) = answer
            && (change.closed || change.reassigned)
        {
            self.audit
                .record(
                    &actor,
                    AuditEvent::TicketChecked {
                        ticket: change.ticket.id.clone(),
                        system,
                        answer,
                        effect: if change.closed {
                            "closed"
                        } else {
                            "reassigned"
                        }
                        .into(),
                    },
                )
                .await?;
        }
        if change.closed || change.reassigned {
            let ended = self.ticket_changed(&change).await?;
            tracing::info!(ticket = %change.ticket.id, ended, "ticket system changed a ticket with grants");
        }
        Ok(true)
    }

    /// Tickets of system `name` that have active grants or pending requests.
    async fn tickets_in_use(&self, name: &str) -> Result<BTreeSet<TicketRef>, GrantError> {
        let mut ids = BTreeSet::new();
        let grants = self
            .store
            .grants(&GrantFilter {
                state: Some(GrantState::Active),
                limit: Some(100_000),
                ..Default::default()
            })
            .await?;
        ids.extend(grants.into_iter().map(|g| g.ticket));
        let requests = self
            .store
            .requests(&RequestFilter {
                state: Some(RequestState::Pending),
                limit: Some(100_000),
                ..Default::default()
            })
            .await?;
        ids.extend(requests.into_iter().map(|r| r.ticket));
        ids.retain(|t| t.system() == Some(name));
        Ok(ids)
    }

    /// Re-read every ticket of system `name` that has live grants or pending requests, at most
    /// [`RECONCILE_CONCURRENCY`] at a time, and apply what changed. Grants on a ticket the
    /// system gave no answer about run on while its last confirmed view is within `grace`,
    /// then end with cause `ticket-unverifiable`. Pending requests stay pending.
    pub async fn reconcile(&self, name: &str) -> Result<Reconciled, GrantError> {
        let ids: Vec<TicketRef> = self.tickets_in_use(name).await?.into_iter().collect();
        let mut done = Reconciled::default();
        // Searches of many tickets where the system answers them; else one by one, a few at once.
        let answers: Vec<(TicketRef, Result<Option<TicketUpdate>, SystemError>)> =
            match self.systems.fetch_many(name, &ids).await {
                Some(batch) => batch.into_iter().map(|(id, r)| (id, r.map(Some))).collect(),
                None => {
                    futures_util::stream::iter(ids)
                        .map(|id| async move {
                            let r = self.systems.fetch(&id).await;
                            (id, r)
                        })
                        .buffer_unordered(RECONCILE_CONCURRENCY)
                        .collect()
                        .await
                }
            };
        let mut answers = futures_util::stream::iter(answers);
        let mut unanswered = Vec::new();
        while let Some((id, answer)) = answers.next().await {
            match answer {
                Ok(Some(update)) => {
                    done.checked += 1;
                    if self.apply_remote(update).await? {
                        done.changed += 1;
                    }
                }
                Ok(None) => {}
                Err(SystemError::NotFound { system, .. }) => {
                    done.checked += 1;
                    self.gone(&id, system).await?;
                }
                Err(e) => {
                    done.failed += 1;
                    done.error.get_or_insert_with(|| e.to_string());
                    if let SystemError::RateLimited { retry_after, .. } = &e {
                        done.retry_after = done.retry_after.max(Some(*retry_after));
                    }
                    unanswered.push((id, e));
                }
            }
        }
        for (id, e) in unanswered {
            if !self.systems.within_grace(&id) {
                done.unverifiable += self.end_unverifiable(&id, &e).await?;
            }
        }
        Ok(done)
    }

    /// End the active grants on `id`: its system has not confirmed it within `grace`.
    async fn end_unverifiable(&self, id: &TicketRef, e: &SystemError) -> Result<usize, GrantError> {
        let _guard = self.lock.lock().await;
        let grants = self
            .store
            .grants(&GrantFilter {
                state: Some(GrantState::Active),
                ticket: Some(id.clone()),
                limit: Some(10_000),
                ..Default::default()
            })
            .await?;
        let n = grants.len();
        for mut grant in grants {
            let reason = format!(
                "ticket {id} could not be verified within its ticket system's grace period: {e}"
            );
            self.audit
                .record(
                    "system",
                    AuditEvent::TicketUnverifiable {
                        ticket: id.clone(),
                        grant: grant.id.clone(),
                        reason: e.to_string(),
                    },
                )
                .await?;
            self.end(
                &mut grant,
                GrantEventKind::Revoked(Revoker::Unverifiable),
                "system",
                reason,
            )
            .await?;
        }
        Ok(n)
    }

    /// Run [`Service::reconcile`] for every ticket system until `stop`, each every
    /// `poll_interval` (jittered by up to a tenth, so that nodes and systems do not beat in
    /// step), backing off while a system fails.
    pub async fn reconcile_forever(&self, stop: tokio_util::sync::CancellationToken) {
        let names: Vec<(String, std::time::Duration, std::time::Duration)> = self
            .systems
            .all()
            .iter()
            .map(|s| {
                let c = &s.cfg;
                (
                    c.name.clone(),
                    c.poll_interval.duration(),
                    c.grace.duration(),
                )
            })
            .collect();
        let loops = names.into_iter().map(|(name, every, grace)| {
            let stop = stop.clone();
            async move {
                let mut backoff = 1u32;
                let mut asked_to_wait = std::time::Duration::ZERO;
                loop {
                    let jitter = every.mul_f64(rand::random::<f64>() / 10.0);
                    // Backing off never stretches past a quarter of `grace`, so grants on
                    // tickets that cannot be verified still end about when `grace` runs out;
                    // a system that asked for a pause (429 Retry-After) gets it.
                    let wait = (every * backoff).min(every.max(grace / 4)).max(asked_to_wait)
                        + jitter;
                    asked_to_wait = std::time::Duration::ZERO;
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(wait) => {}
                    }
                    let started = Instant::now();
                    match self.reconcile(&name).await {
                        Ok(r) if r.failed > 0 => {
                            backoff = (backoff * 2).min(8);
                            asked_to_wait =
                                std::time::Duration::from_secs(r.retry_after.unwrap_or(0));
                            tracing::warn!(system = %name, checked = r.checked, failed = r.failed, unverifiable = r.unverifiable, error = r.error.as_deref().unwrap_or(""), "ticket system reconcile pass had failures");
                        }
                        Ok(r) => {
                            backoff = 1;
                            tracing::debug!(system = %name, checked = r.checked, changed = r.changed, ms = started.elapsed().as_millis() as u64, "ticket system reconciled");
                        }
                        Err(e) => tracing::error!(system = %name, error = %e, "ticket system reconcile pass failed"),
                    }
                }
            }
        });
        futures_util::future::join_all(loops).await;
    }
}
