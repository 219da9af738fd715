//! Requests, decisions, approvals and grants: the rules no policy can loosen, Cedar on top, grant
//! tokens handed out once, and the events that end grants. Publishes [`bus::GrantEvent`]s; knows
//! nothing about sessions.

pub mod admission;
mod alert;
pub mod break_glass;
pub mod bus;
mod input;
mod lifecycle;
mod notes;
pub mod preview;
mod rules;
pub mod throttle;
mod tickets;

use std::sync::Arc;
use std::time::Instant;

use serde::Deserialize;

use crate::audit::{AuditEvent, Log};
use crate::config::{Config, Role, UserConfig};
use crate::policy::{self, Engine};
use crate::store::{Approval, Grant, GrantState, Request, RequestFilter, RequestState, Store};
use crate::ticket::Tickets;
use crate::ticket::systems::Systems;
use crate::types::{GrantId, RequestId, UserName, now};

pub use admission::{Admission, AdmissionDenied};
pub use bus::{GrantBus, GrantEvent, GrantEventKind, LocalBus, Revoker};
use input::{check_text, parse_name};
pub use notes::Note;
pub use tickets::Reconciled;

/// Longest accepted justification or comment, in characters.
pub const MAX_TEXT: usize = 1000;

/// Errors from grant operations; each maps to one HTTP status in the API.
#[derive(Debug, thiserror::Error)]
pub enum GrantError {
    /// The rules or policy refused; the request was recorded as denied or rejected.
    #[error("{reason}")]
    Denied {
        request: Option<RequestId>,
        reason: String,
    },
    /// The caller may not do this.
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    /// The object is in the wrong state for this operation.
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Audit(#[from] crate::audit::AuditError),
    #[error(transparent)]
    Ticket(#[from] crate::ticket::TicketError),
    /// The ticket's system gave no answer (unreachable, refused jitgate's credentials).
    #[error(transparent)]
    TicketSystem(#[from] crate::ticket::systems::SystemError),
}

/// What a technician asks for.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewRequest {
    pub task: String,
    pub target: String,
    pub ticket: String,
    pub ttl: String,
    pub reason: String,
}

/// A token handed to the requester, with what it opens.
#[derive(Debug)]
pub struct IssuedToken {
    pub token: crate::types::GrantToken,
    pub grant: Grant,
}

/// The grant service.
pub struct Service {
    cfg: Arc<Config>,
    store: Arc<dyn Store>,
    audit: Arc<Log>,
    policy: Arc<Engine>,
    tickets: Tickets,
    /// Where tickets live: asked live, re-read in the background.
    systems: Arc<Systems>,
    bus: Arc<dyn GrantBus>,
    /// Serializes state transitions (one node; a shared store will need row locks instead).
    lock: tokio::sync::Mutex<()>,
    /// Failed tokens per source: past the limit, refusals are slowed.
    limiter: throttle::Throttle,
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("grant::Service")
    }
}

impl Service {
    /// Wire the service.
    pub fn new(
        cfg: Arc<Config>,
        store: Arc<dyn Store>,
        audit: Arc<Log>,
        policy: Arc<Engine>,
        bus: Arc<dyn GrantBus>,
    ) -> Self {
        let tickets = Tickets::new(store.clone(), audit.clone());
        let limiter = throttle::Throttle::new(cfg.gateway.admission_failures_per_minute);
        Self {
            cfg,
            store,
            audit,
            policy,
            tickets,
            systems: Arc::new(Systems::empty()),
            bus,
            lock: tokio::sync::Mutex::new(()),
            limiter,
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> &Arc<Config> {
        &self.cfg
    }

    /// The ticket service.
    pub fn tickets(&self) -> &Tickets {
        &self.tickets
    }

    /// The audit log.
    pub fn audit(&self) -> &Arc<Log> {
        &self.audit
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The event bus.
    pub fn bus(&self) -> &Arc<dyn GrantBus> {
        &self.bus
    }

    /// Who `name` is now: their `[[users]]` entry combined with what the identity provider
    /// said at their last sign-in (see [`crate::config::Config::effective_user`]).
    pub async fn person(&self, name: &UserName) -> Result<Option<UserConfig>, GrantError> {
        let groups = match &self.cfg.oidc {
            Some(_) => self.store.person(name).await?.map(|p| p.groups),
            None => None,
        };
        Ok(self.cfg.effective_user(name, groups.as_deref()))
    }

    async fn user(&self, name: &UserName) -> Result<UserConfig, GrantError> {
        self.person(name).await?.ok_or_else(|| {
            GrantError::Forbidden(format!(
                "user {name} is not configured and has no role from the identity provider"
            ))
        })
    }

    /// Create a request. Denials are recorded (request stored as denied, audited) and returned.
    pub async fn create_request(
        &self,
        caller: &UserConfig,
        new: NewRequest,
    ) -> Result<Request, GrantError> {
        let mut req = self.draft(caller, new)?;
        // The ticket as its system says now (a ticket never announced to jitgate is fetched).
        self.refresh_for_request(&req.ticket, &req.requester)
            .await?;
        let _guard = self.lock.lock().await;
        if let Some(why) = self.blocked_by_review(caller).await? {
            return Err(GrantError::Forbidden(why));
        }
        let now = now();
        let id = req.id.clone();
        let required = req.required_approvals;
        let verdict = self.verdict(&req, caller).await?;
        if let Err(reason) = verdict {
            req.state = RequestState::Denied;
            req.decided_at = Some(now);
            req.decision_reason = Some(reason.clone());
            self.store.put_request(&req).await?;
            self.audit
                .record(
                    caller.name.as_str(),
                    AuditEvent::RequestDenied {
                        request: id.clone(),
                        task: req.task.to_string(),
                        target: req.target.to_string(),
                        ticket: req.ticket.to_string(),
                        reason: reason.clone(),
                    },
                )
                .await?;
            tracing::info!(request = %id, user = %caller.name, %reason, "request denied");
            return Err(GrantError::Denied {
                request: Some(id),
                reason,
            });
        }
        self.store.put_request(&req).await?;
        self.audit
            .record(
                caller.name.as_str(),
                AuditEvent::RequestCreated {
                    request: id.clone(),
                    task: req.task.clone(),
                    target: req.target.clone(),
                    ticket: req.ticket.clone(),
                    ttl: req.ttl,
                    reason: req.reason.clone(),
                    required_approvals: required,
                },
            )
            .await?;
        tracing::info!(request = %id, user = %caller.name, task = %req.task, target = %req.target, "request created");
        Ok(req)
    }

    /// Evaluate the policy for `req` with `principal`; the inner `Err` is a denial reason.
    async fn policy_check(
        &self,
        req: &Request,
        action: policy::Action,
        principal: &UserConfig,
        approvers: &[UserName],
    ) -> Result<Result<(), String>, GrantError> {
        let Some(requester) = self.person(&req.requester).await? else {
            return Ok(Err(format!(
                "user {} is no longer configured and has no role from the identity provider",
                req.requester
            )));
        };
        let requester = &requester;
        // Approvers as they are now; one who has left still counts, with nothing but a name.
        let mut known = Vec::with_capacity(approvers.len());
        for a in approvers {
            known.push(
                self.person(a)
                    .await?
                    .unwrap_or_else(|| UserConfig::named(a.clone())),
            );
        }
        let (Some(task), Some(target)) = (self.cfg.task(&req.task), self.cfg.target(&req.target))
        else {
            return Ok(Err("task or target is no longer configured".into()));
        };
        let Some(ticket) = self.store.ticket(&req.ticket).await? else {
            return Ok(Err(format!("ticket {} does not exist", req.ticket)));
        };
        Ok(self.policy.evaluate(&policy::Query {
            action,
            principal,
            requester,
            task,
            target,
            ticket: &ticket,
            ttl: req.ttl,
            reason: &req.reason,
            approvers: &known,
        }))
    }

    /// One request, visible to its requester and to approvers, reviewers and admins.
    pub async fn request(&self, caller: &UserConfig, id: &str) -> Result<Request, GrantError> {
        let req = self.load_request(id).await?;
        if req.requester != caller.name && !can_see_all(caller) {
            return Err(GrantError::NotFound(format!("request {id} does not exist")));
        }
        Ok(req)
    }

    async fn load_request(&self, id: &str) -> Result<Request, GrantError> {
        let rid = RequestId::parse(id).ok_or_else(|| {
            GrantError::NotFound(format!(
                "request {id} does not exist; ids look like req_..."
            ))
        })?;
        self.store
            .request(&rid)
            .await?
            .ok_or_else(|| GrantError::NotFound(format!("request {id} does not exist")))
    }

    /// Requests the caller may see.
    pub async fn requests(
        &self,
        caller: &UserConfig,
        state: Option<RequestState>,
    ) -> Result<Vec<Request>, GrantError> {
        let filter = RequestFilter {
            requester: (!can_see_all(caller)).then(|| caller.name.clone()),
            state,
            ticket: None,
            limit: Some(500),
        };
        Ok(self.store.requests(&filter).await?)
    }

    /// Approve a pending request; issues the grant on the final approval.
    pub async fn approve(
        &self,
        caller: &UserConfig,
        id: &str,
        comment: Option<String>,
    ) -> Result<Request, GrantError> {
        let comment = match comment {
            Some(c) => Some(check_text("comment", &c, false)?).filter(|c| !c.is_empty()),
            None => None,
        };
        if let Ok(req) = self.load_request(id).await {
            self.refresh_or_refuse(&req.ticket, "approval").await?;
        }
        let _guard = self.lock.lock().await;
        let mut req = self.load_request(id).await?;
        self.pending_or_conflict(&mut req).await?;
        if !caller.has_role(Role::Approver) {
            return Err(self
                .refuse_approval(
                    &req,
                    caller,
                    format!("{} lacks the approver role", caller.name),
                )
                .await?);
        }
        if req.requester == caller.name {
            return Err(self
                .refuse_approval(
                    &req,
                    caller,
                    format!(
                        "{} requested {}: a requester never approves their own request; ask another approver",
                        caller.name, req.id
                    ),
                )
                .await?);
        }
        if req.approvals.iter().any(|a| a.approver == caller.name) {
            return Err(GrantError::Conflict(format!(
                "{} already approved {}; approvals must come from distinct approvers",
                caller.name, req.id
            )));
        }
        // Re-check everything the request depended on: the world may have changed.
        let requester = self.user(&req.requester).await?;
        if let Err(why) = self.check_request(&req, &requester, req.kind).await? {
            self.reject(&mut req, "system", format!("no longer allowed: {why}"))
                .await?;
            return Err(GrantError::Denied {
                request: Some(req.id.clone()),
                reason: req.decision_reason.clone().unwrap_or_default(),
            });
        }
        if let Err(why) = self
            .policy_check(&req, policy::Action::Request, &requester, &[])
            .await?
        {
            self.reject(&mut req, "system", format!("no longer allowed: {why}"))
                .await?;
            return Err(GrantError::Denied {
                request: Some(req.id.clone()),
                reason: req.decision_reason.clone().unwrap_or_default(),
            });
        }
        let mut approvers: Vec<UserName> =
            req.approvals.iter().map(|a| a.approver.clone()).collect();
        approvers.push(caller.name.clone());
        if let Err(why) = self
            .policy_check(&req, policy::Action::Approve, caller, &approvers)
            .await?
        {
            return Err(self.refuse_approval(&req, caller, why).await?);
        }
        let now = now();
        req.approvals.push(Approval {
            approver: caller.name.clone(),
            comment: comment.clone(),
            at: now,
        });
        let count = req.approvals.len() as u32;
        self.audit
            .record(
                caller.name.as_str(),
                AuditEvent::RequestApproved {
                    request: req.id.clone(),
                    approvals: count,
                    required_approvals: req.required_approvals,
                    comment,
                },
            )
            .await?;
        if count >= req.required_approvals {
            match self
                .policy_check(&req, policy::Action::Grant, &requester, &approvers)
                .await?
            {
                Ok(()) => {
                    self.issue(&mut req, approvers, now).await?;
                }
                Err(why) => {
                    req.decision_reason = Some(format!("waiting for more approvals: {why}"));
                    self.store.put_request(&req).await?;
                }
            }
        } else {
            self.store.put_request(&req).await?;
        }
        Ok(req)
    }

    async fn refuse_approval(
        &self,
        req: &Request,
        caller: &UserConfig,
        reason: String,
    ) -> Result<GrantError, GrantError> {
        self.audit
            .record(
                caller.name.as_str(),
                AuditEvent::ApprovalRefused {
                    request: req.id.clone(),
                    reason: reason.clone(),
                },
            )
            .await?;
        tracing::info!(request = %req.id, approver = %caller.name, %reason, "approval refused");
        Ok(GrantError::Forbidden(reason))
    }

    /// Fail unless `req` is pending and not past its deadline (expiring it if it is).
    async fn pending_or_conflict(&self, req: &mut Request) -> Result<(), GrantError> {
        if req.state == RequestState::Pending && now() >= req.expires_at {
            self.expire_request(req, "not decided in time".into())
                .await?;
        }
        if req.state != RequestState::Pending {
            return Err(GrantError::Conflict(format!(
                "request {} is {}{}; only pending requests can be decided",
                req.id,
                req.state.as_str(),
                req.decision_reason
                    .as_ref()
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default()
            )));
        }
        Ok(())
    }

    /// Reject a pending request (approver decision).
    pub async fn deny(
        &self,
        caller: &UserConfig,
        id: &str,
        reason: &str,
    ) -> Result<Request, GrantError> {
        let reason = check_text("reason", reason, true)?;
        let _guard = self.lock.lock().await;
        let mut req = self.load_request(id).await?;
        if !caller.has_role(Role::Approver) && !caller.has_role(Role::Admin) {
            return Err(GrantError::Forbidden(format!(
                "{} lacks the approver role",
                caller.name
            )));
        }
        self.pending_or_conflict(&mut req).await?;
        self.reject(&mut req, caller.name.as_str(), reason).await?;
        Ok(req)
    }

    async fn reject(
        &self,
        req: &mut Request,
        actor: &str,
        reason: String,
    ) -> Result<(), GrantError> {
        req.state = RequestState::Rejected;
        req.decided_at = Some(now());
        req.decided_by = actor.parse().ok();
        req.decision_reason = Some(reason.clone());
        self.store.put_request(req).await?;
        self.audit
            .record(
                actor,
                AuditEvent::RequestRejected {
                    request: req.id.clone(),
                    reason,
                },
            )
            .await?;
        Ok(())
    }

    async fn expire_request(&self, req: &mut Request, reason: String) -> Result<(), GrantError> {
        req.state = RequestState::Expired;
        req.decided_at = Some(now());
        req.decision_reason = Some(reason.clone());
        self.store.put_request(req).await?;
        self.audit
            .record(
                "system",
                AuditEvent::RequestExpired {
                    request: req.id.clone(),
                    reason,
                },
            )
            .await?;
        Ok(())
    }

    /// Issue the grant for a fully approved request (lock held by the caller).
    async fn issue(
        &self,
        req: &mut Request,
        approvers: Vec<UserName>,
        now: i64,
    ) -> Result<Grant, GrantError> {
        let id = GrantId::generate();
        let grant = Grant {
            id: id.clone(),
            request: req.id.clone(),
            kind: req.kind,
            requester: req.requester.clone(),
            task: req.task.clone(),
            target: req.target.clone(),
            ticket: req.ticket.clone(),
            approvers: approvers.clone(),
            // The token is made when the requester fetches it; until then nothing can match.
            token_hash: format!("unfetched:{id}"),
            token_fetched: false,
            issued_at: now,
            expires_at: now + req.ttl.as_secs() as i64,
            state: GrantState::Active,
            ended_at: None,
            ended_by: None,
            end_reason: None,
        };
        self.store.put_grant(&grant).await?;
        req.state = RequestState::Approved;
        req.decided_at = Some(now);
        req.decision_reason = None;
        req.grant = Some(id.clone());
        self.store.put_request(req).await?;
        self.audit
            .record(
                "system",
                AuditEvent::GrantIssued {
                    grant: id.clone(),
                    request: req.id.clone(),
                    requester: req.requester.clone(),
                    task: req.task.clone(),
                    target: req.target.clone(),
                    ticket: req.ticket.clone(),
                    approvers,
                    expires_at: crate::audit::at(grant.expires_at),
                },
            )
            .await?;
        self.bus.publish(GrantEvent {
            kind: GrantEventKind::Issued,
            grant: id.clone(),
            ticket: grant.ticket.clone(),
            user: grant.requester.clone(),
            reason: "issued".into(),
            at: Instant::now(),
        });
        tracing::info!(grant = %id, request = %req.id, user = %req.requester, expires_at = grant.expires_at, "grant issued");
        Ok(grant)
    }
}

/// Approvers, reviewers and admins see every request and grant.
pub fn can_see_all(u: &UserConfig) -> bool {
    u.has_role(Role::Approver) || u.has_role(Role::Reviewer) || u.has_role(Role::Admin)
}
