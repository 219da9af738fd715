//! The end of a grant's life and everything after approval: the one-time token, `done`,
//! `revoke`, expiry, and ticket changes.

use std::time::Instant;

use super::{
    GrantError, GrantEvent, GrantEventKind, IssuedToken, Revoker, Service, can_see_all, check_text,
};
use crate::audit::AuditEvent;
use crate::config::{Role, UserConfig};
use crate::store::{Grant, GrantFilter, GrantState, RequestFilter, RequestState};
use crate::ticket::TicketChange;
use crate::types::{GrantId, GrantToken, RequestId, now};

impl Service {
    /// Find a grant by grant id or by the id of the request it was issued for.
    pub(super) async fn load_grant(&self, id: &str) -> Result<Grant, GrantError> {
        let missing = || GrantError::NotFound(format!("no grant or request {id}"));
        if let Some(gid) = GrantId::parse(id) {
            return self.store.grant(&gid).await?.ok_or_else(missing);
        }
        if let Some(rid) = RequestId::parse(id) {
            let req = self.store.request(&rid).await?.ok_or_else(missing)?;
            let Some(gid) = req.grant else {
                return Err(GrantError::Conflict(format!(
                    "request {id} is {} and has no grant{}",
                    req.state.as_str(),
                    if req.state == RequestState::Pending {
                        "; wait for approval (jitgate request --wait)"
                    } else {
                        ""
                    }
                )));
            };
            return self.store.grant(&gid).await?.ok_or_else(missing);
        }
        Err(GrantError::NotFound(format!(
            "{id} is neither a grant id (gr_...) nor a request id (req_...)"
        )))
    }

    /// Grants the caller may see.
    pub async fn grants(
        &self,
        caller: &UserConfig,
        state: Option<GrantState>,
    ) -> Result<Vec<Grant>, GrantError> {
        Ok(self
            .store
            .grants(&GrantFilter {
                requester: (!can_see_all(caller)).then(|| caller.name.clone()),
                state,
                ticket: None,
                limit: Some(500),
            })
            .await?)
    }

    /// Hand the grant token to its requester, exactly once.
    pub async fn fetch_token(
        &self,
        caller: &UserConfig,
        id: &str,
    ) -> Result<IssuedToken, GrantError> {
        if let Ok(g) = self.load_grant(id).await {
            self.refresh_or_refuse(&g.ticket, "token fetch").await?;
        }
        let _guard = self.lock.lock().await;
        let mut grant = self.load_grant(id).await?;
        if grant.requester != caller.name {
            return Err(GrantError::Forbidden(format!(
                "only the requester of {} may fetch its token",
                grant.id
            )));
        }
        self.active_or_conflict(&mut grant).await?;
        if grant.token_fetched {
            return Err(GrantError::Conflict(format!(
                "the token for grant {} was already fetched; tokens are handed out once. If it was lost, end the grant with `jitgate done {}` and request again",
                grant.id, grant.id
            )));
        }
        let token = GrantToken::generate();
        grant.token_hash = token.hash();
        grant.token_fetched = true;
        self.store.put_grant(&grant).await?;
        self.audit
            .record(
                caller.name.as_str(),
                AuditEvent::GrantTokenFetched {
                    grant: grant.id.clone(),
                    request: grant.request.clone(),
                },
            )
            .await?;
        Ok(IssuedToken { token, grant })
    }

    /// Fail unless the grant is active (expiring it first when its time is up).
    async fn active_or_conflict(&self, grant: &mut Grant) -> Result<(), GrantError> {
        if grant.state == GrantState::Active && now() >= grant.expires_at {
            self.end(
                grant,
                GrantEventKind::Expired,
                "system",
                "ttl elapsed".into(),
            )
            .await?;
        }
        if grant.state != GrantState::Active {
            return Err(GrantError::Conflict(format!(
                "grant {} is {}{}",
                grant.id,
                grant.state.as_str(),
                grant
                    .end_reason
                    .as_ref()
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default()
            )));
        }
        Ok(())
    }

    /// The requester ends its own grant early.
    pub async fn done(&self, caller: &UserConfig, id: &str) -> Result<Grant, GrantError> {
        let _guard = self.lock.lock().await;
        let mut grant = self.load_grant(id).await?;
        if grant.requester != caller.name {
            return Err(GrantError::Forbidden(format!(
                "only the requester of {} may mark it done; approvers and admins use `jitgate revoke`",
                grant.id
            )));
        }
        self.active_or_conflict(&mut grant).await?;
        self.end(
            &mut grant,
            GrantEventKind::Completed,
            caller.name.as_str(),
            "completed by the requester".into(),
        )
        .await?;
        Ok(grant)
    }

    /// End a grant now (approvers and admins), or reject a pending request given by id.
    pub async fn revoke(
        &self,
        caller: &UserConfig,
        id: &str,
        reason: &str,
    ) -> Result<Grant, GrantError> {
        let reason = check_text("reason", reason, true)?;
        if !caller.has_role(Role::Approver) && !caller.has_role(Role::Admin) {
            return Err(GrantError::Forbidden(format!(
                "{} lacks the approver or admin role needed to revoke; the requester can use `jitgate done`",
                caller.name
            )));
        }
        let _guard = self.lock.lock().await;
        let mut grant = self.load_grant(id).await?;
        self.active_or_conflict(&mut grant).await?;
        self.end(
            &mut grant,
            GrantEventKind::Revoked(Revoker::Person),
            caller.name.as_str(),
            format!("revoked by {}: {reason}", caller.name),
        )
        .await?;
        Ok(grant)
    }

    /// Move a grant to the final state of `kind`: store, audit, publish. Lock held by the caller.
    pub(super) async fn end(
        &self,
        grant: &mut Grant,
        kind: GrantEventKind,
        actor: &str,
        reason: String,
    ) -> Result<(), GrantError> {
        let at = Instant::now();
        let state = match kind {
            GrantEventKind::Revoked(_) => GrantState::Revoked,
            GrantEventKind::Expired => GrantState::Expired,
            GrantEventKind::Completed => GrantState::Completed,
            GrantEventKind::Issued => unreachable!("end() moves to a final state"),
        };
        grant.state = state;
        grant.ended_at = Some(now());
        grant.ended_by = Some(actor.to_string());
        grant.end_reason = Some(reason.clone());
        self.store.put_grant(grant).await?;
        let event = match state {
            GrantState::Revoked => AuditEvent::GrantRevoked {
                grant: grant.id.clone(),
                request: grant.request.clone(),
                reason: reason.clone(),
            },
            GrantState::Expired => AuditEvent::GrantExpired {
                grant: grant.id.clone(),
                request: grant.request.clone(),
            },
            _ => AuditEvent::GrantCompleted {
                grant: grant.id.clone(),
                request: grant.request.clone(),
            },
        };
        self.bus.publish(GrantEvent {
            kind,
            grant: grant.id.clone(),
            ticket: grant.ticket.clone(),
            user: grant.requester.clone(),
            reason,
            at,
        });
        self.audit.record(actor, event).await?;
        tracing::info!(grant = %grant.id, state = state.as_str(), "grant ended");
        Ok(())
    }

    /// Expire pending requests and active grants whose time is up. Returns how many changed.
    pub async fn expire_due(&self) -> Result<usize, GrantError> {
        let _guard = self.lock.lock().await;
        let now = now();
        let mut n = 0;
        for mut req in self
            .store
            .requests(&RequestFilter {
                state: Some(RequestState::Pending),
                limit: Some(10_000),
                ..Default::default()
            })
            .await?
        {
            if now >= req.expires_at {
                self.expire_request(&mut req, "not decided in time".into())
                    .await?;
                n += 1;
            }
        }
        for mut grant in self
            .store
            .grants(&GrantFilter {
                state: Some(GrantState::Active),
                limit: Some(10_000),
                ..Default::default()
            })
            .await?
        {
            if now >= grant.expires_at {
                self.end(
                    &mut grant,
                    GrantEventKind::Expired,
                    "system",
                    "ttl elapsed".into(),
                )
                .await?;
                n += 1;
            }
        }
        Ok(n)
    }

    /// Apply a ticket change: closing the ticket, or reassigning it away from a requester,
    /// revokes that requester's grants and ends their pending requests on it.
    pub async fn ticket_changed(&self, change: &TicketChange) -> Result<usize, GrantError> {
        if !change.closed && !change.reassigned {
            return Ok(0);
        }
        let _guard = self.lock.lock().await;
        let t = &change.ticket;
        let actor = format!("ticket:{}", t.source);
        let why = |user: &str| {
            if change.closed {
                format!("ticket {} closed", t.id)
            } else {
                match &t.assignee {
                    Some(a) => format!("ticket {} reassigned from {user} to {a}", t.id),
                    None => format!("ticket {} unassigned from {user}", t.id),
                }
            }
        };
        let mut n = 0;
        for mut grant in self
            .store
            .grants(&GrantFilter {
                state: Some(GrantState::Active),
                ticket: Some(t.id.clone()),
                limit: Some(10_000),
                ..Default::default()
            })
            .await?
        {
            if change.closed || t.assignee.as_ref() != Some(&grant.requester) {
                let reason = why(grant.requester.as_str());
                self.end(
                    &mut grant,
                    GrantEventKind::Revoked(Revoker::Ticket),
                    &actor,
                    reason,
                )
                .await?;
                n += 1;
            }
        }
        for mut req in self
            .store
            .requests(&RequestFilter {
                state: Some(RequestState::Pending),
                ticket: Some(t.id.clone()),
                limit: Some(10_000),
                ..Default::default()
            })
            .await?
        {
            if change.closed || t.assignee.as_ref() != Some(&req.requester) {
                let reason = why(req.requester.as_str());
                self.reject(&mut req, &actor, reason).await?;
                n += 1;
            }
        }
        Ok(n)
    }
}
