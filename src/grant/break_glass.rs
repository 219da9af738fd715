//! Break-glass: an emergency grant without approval, but narrower than a normal one — only the
//! tasks under `[break_glass]`, a short TTL, recording with input forced on, an alert, and a
//! review by someone else before the same user may break glass again.

use std::time::Instant;

use serde::Deserialize;
use serde_json::json;

use super::{GrantError, GrantEvent, GrantEventKind, IssuedToken, Service, check_text, parse_name};
use crate::audit::AuditEvent;
use crate::config::{Role, UserConfig};
use crate::policy;
use crate::store::{
    Grant, GrantState, Request, RequestKind, RequestState, Review, Ticket, TicketState,
};
use crate::types::{GrantId, GrantToken, RequestId, TargetName, TicketRef, Ttl, now, random_id};

/// What a break-glass caller asks for.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreakGlassRequest {
    pub target: String,
    pub reason: String,
    pub ticket: Option<String>,
    pub task: Option<String>,
    pub ttl: Option<String>,
}

/// A break-glass grant, its token (shown once) and the review it opened.
#[derive(Debug)]
pub struct BreakGlassGrant {
    pub issued: IssuedToken,
    pub request: Request,
    pub review: Review,
}

impl Service {
    /// The caller's open break-glass review, if any.
    pub async fn open_review_of(&self, user: &UserConfig) -> Result<Option<Review>, GrantError> {
        Ok(self
            .store
            .reviews(true, Some(&user.name))
            .await?
            .into_iter()
            .next())
    }

    async fn refuse_break_glass(
        &self,
        caller: &UserConfig,
        target: &str,
        reason: String,
    ) -> Result<GrantError, GrantError> {
        self.audit
            .record(
                caller.name.as_str(),
                AuditEvent::BreakGlassDenied {
                    user: caller.name.clone(),
                    target: target.chars().take(64).collect(),
                    reason: reason.clone(),
                },
            )
            .await?;
        tracing::warn!(user = %caller.name, %reason, "break-glass refused");
        Ok(GrantError::Forbidden(reason))
    }

    /// Issue an emergency grant at once.
    pub async fn break_glass(
        &self,
        caller: &UserConfig,
        req: BreakGlassRequest,
    ) -> Result<BreakGlassGrant, GrantError> {
        let reason = check_text("reason", &req.reason, true)?;
        let target_name: TargetName = parse_name("target", &req.target)?;
        let Some(bg) = self.cfg.break_glass.clone() else {
            return Err(GrantError::Forbidden(
                "break-glass is not configured on this gateway ([break_glass] in the configuration)".into(),
            ));
        };
        if !caller.has_role(Role::BreakGlass) {
            return Err(self
                .refuse_break_glass(
                    caller,
                    &req.target,
                    format!("{} lacks the break-glass role", caller.name),
                )
                .await?);
        }
        let _guard = self.lock.lock().await;
        if let Some(open) = self.open_review_of(caller).await? {
            return Err(self
                .refuse_break_glass(
                    caller,
                    &req.target,
                    format!(
                        "{} has an unreviewed break-glass use ({}, {}); a reviewer must sign it off with `jitgate review {} --notes ...` before {} may break glass again",
                        caller.name,
                        open.id,
                        crate::types::rfc3339(open.created_at),
                        open.id,
                        caller.name
                    ),
                )
                .await?);
        }
        let Some(target) = self.cfg.target(&target_name) else {
            return Err(GrantError::NotFound(format!(
                "no target is named {target_name}"
            )));
        };
        let task = match &req.task {
            Some(t) => {
                let name = parse_name("task", t)?;
                if !bg.tasks.contains(&name) {
                    return Err(self
                        .refuse_break_glass(
                            caller,
                            &req.target,
                            format!(
                                "task {name} is not a break-glass task; allowed: {}",
                                bg.tasks
                                    .iter()
                                    .map(|t| t.as_str())
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            ),
                        )
                        .await?);
                }
                self.cfg.task(&name)
            }
            None => bg
                .tasks
                .iter()
                .filter_map(|t| self.cfg.task(t))
                .find(|t| t.covers(target)),
        };
        let Some(task) = task.filter(|t| t.covers(target)) else {
            return Err(self
                .refuse_break_glass(
                    caller,
                    &req.target,
                    format!("no break-glass task covers target {target_name}"),
                )
                .await?);
        };
        let ttl: Ttl = match &req.ttl {
            Some(t) => t
                .parse()
                .map_err(|e: String| GrantError::Invalid(format!("ttl: {e}")))?,
            None => bg.max_ttl,
        };
        if ttl > bg.max_ttl {
            return Err(GrantError::Invalid(format!(
                "ttl {ttl} is longer than break_glass.max_ttl {}; ask for {} or less",
                bg.max_ttl, bg.max_ttl
            )));
        }
        let now = now();
        // An emergency may come before a ticket; then jitgate opens one so that closing it
        // still ends everything.
        let ticket: Ticket = match &req.ticket {
            Some(t) => {
                let id: TicketRef = parse_name("ticket", t)?;
                match self.store.ticket(&id).await? {
                    Some(t) if t.state == TicketState::Open => t,
                    Some(_) => {
                        return Err(self
                            .refuse_break_glass(
                                caller,
                                &req.target,
                                format!("ticket {id} is closed"),
                            )
                            .await?);
                    }
                    None => {
                        return Err(GrantError::NotFound(format!(
                            "ticket {id} does not exist; omit --ticket and jitgate opens one"
                        )));
                    }
                }
            }
            None => {
                let id: TicketRef = format!("BG-{}", random_id(8).to_uppercase())
                    .parse()
                    .expect("generated ticket ids are valid");
                self.tickets
                    .apply(
                        caller.name.as_str(),
                        crate::ticket::TicketUpdate {
                            id,
                            title: Some(
                                format!("break-glass on {target_name}: {reason}")
                                    .chars()
                                    .take(200)
                                    .collect(),
                            ),
                            open: true,
                            assignee: Some(caller.name.clone()),
                            source: "break-glass".into(),
                            answer: None,
                            assignee_as: None,
                        },
                    )
                    .await?
                    .ticket
            }
        };
        let request = Request {
            id: RequestId::generate(),
            kind: RequestKind::BreakGlass,
            requester: caller.name.clone(),
            task: task.name.clone(),
            target: target_name.clone(),
            ticket: ticket.id.clone(),
            ttl,
            reason: reason.clone(),
            state: RequestState::Approved,
            created_at: now,
            expires_at: now,
            approvals: Vec::new(),
            required_approvals: 0,
            decided_at: Some(now),
            decided_by: None,
            decision_reason: Some("break-glass".into()),
            grant: None,
        };
        if let Err(why) = self
            .policy_check(&request, policy::Action::BreakGlass, caller, &[])
            .await?
        {
            return Err(self.refuse_break_glass(caller, &req.target, why).await?);
        }
        let token = GrantToken::generate();
        let grant = Grant {
            id: GrantId::generate(),
            request: request.id.clone(),
            kind: RequestKind::BreakGlass,
            requester: caller.name.clone(),
            task: task.name.clone(),
            target: target_name.clone(),
            ticket: ticket.id.clone(),
            approvers: Vec::new(),
            token_hash: token.hash(),
            token_fetched: true,
            issued_at: now,
            expires_at: now + ttl.as_secs() as i64,
            state: GrantState::Active,
            ended_at: None,
            ended_by: None,
            end_reason: None,
        };
        let mut request = request;
        request.grant = Some(grant.id.clone());
        let review = Review {
            id: format!("bgr_{}", random_id(16)),
            user: caller.name.clone(),
            grant: grant.id.clone(),
            request: request.id.clone(),
            target: target_name.clone(),
            task: task.name.clone(),
            ticket: ticket.id.clone(),
            reason: reason.clone(),
            created_at: now,
            reviewed_by: None,
            reviewed_at: None,
            notes: None,
        };
        self.store.put_grant(&grant).await?;
        self.store.put_request(&request).await?;
        self.store.put_review(&review).await?;
        self.audit
            .record(
                caller.name.as_str(),
                AuditEvent::BreakGlassActivated {
                    request: request.id.clone(),
                    grant: grant.id.clone(),
                    user: caller.name.clone(),
                    target: target_name.clone(),
                    task: task.name.clone(),
                    ticket: ticket.id.clone(),
                    reason: reason.clone(),
                    review: review.id.clone(),
                    expires_at: crate::types::rfc3339(grant.expires_at),
                },
            )
            .await?;
        self.bus.publish(GrantEvent {
            kind: GrantEventKind::Issued,
            grant: grant.id.clone(),
            ticket: grant.ticket.clone(),
            user: grant.requester.clone(),
            reason: "break-glass".into(),
            at: Instant::now(),
        });
        tracing::warn!(
            user = %caller.name,
            target = %target_name,
            task = %task.name,
            grant = %grant.id,
            review = %review.id,
            %reason,
            "BREAK-GLASS: emergency grant issued without approval; a review is due"
        );
        if let Some(url) = bg.alert_webhook.clone() {
            let body = json!({
                "event": "break_glass.activated",
                "user": caller.name,
                "vendor": caller.vendor,
                "target": target_name,
                "task": task.name,
                "ticket": ticket.id,
                "reason": reason,
                "grant": grant.id,
                "request": request.id,
                "review": review.id,
                "expires_at": crate::types::rfc3339(grant.expires_at),
            });
            let ca = bg
                .alert_ca
                .as_ref()
                .and_then(|p| std::fs::read_to_string(p).ok());
            let audit = self.audit.clone();
            let review_id = review.id.clone();
            tokio::spawn(async move {
                if let Err(why) = super::alert::deliver(&url, ca.as_deref(), &body).await {
                    tracing::error!(review = %review_id, error = %why, "break-glass alert could not be delivered");
                    let _ = audit
                        .record(
                            "system",
                            AuditEvent::BreakGlassAlertFailed {
                                review: review_id,
                                reason: why,
                            },
                        )
                        .await;
                }
            });
        }
        Ok(BreakGlassGrant {
            issued: IssuedToken { token, grant },
            request,
            review,
        })
    }

    /// Break-glass reviews visible to the caller (reviewers and admins: all; others: their own).
    pub async fn reviews(
        &self,
        caller: &UserConfig,
        open_only: bool,
    ) -> Result<Vec<Review>, GrantError> {
        let all = caller.has_role(Role::Reviewer) || caller.has_role(Role::Admin);
        Ok(self
            .store
            .reviews(open_only, (!all).then_some(&caller.name))
            .await?)
    }

    /// Sign off a break-glass use; never by the user who broke glass.
    pub async fn complete_review(
        &self,
        caller: &UserConfig,
        id: &str,
        notes: &str,
    ) -> Result<Review, GrantError> {
        let notes = check_text("notes", notes, true)?;
        if !caller.has_role(Role::Reviewer) && !caller.has_role(Role::Admin) {
            return Err(GrantError::Forbidden(format!(
                "{} lacks the reviewer role needed to sign off break-glass uses",
                caller.name
            )));
        }
        let _guard = self.lock.lock().await;
        let mut review = self.store.review(id).await?.ok_or_else(|| {
            GrantError::NotFound(format!("no review {id}; list them with `jitgate reviews`"))
        })?;
        if review.user == caller.name {
            return Err(GrantError::Forbidden(format!(
                "{} broke glass in {}; a break-glass use is reviewed by someone else",
                caller.name, review.id
            )));
        }
        if let Some(by) = &review.reviewed_by {
            return Err(GrantError::Conflict(format!(
                "review {} was already completed by {by}",
                review.id
            )));
        }
        review.reviewed_by = Some(caller.name.clone());
        review.reviewed_at = Some(now());
        review.notes = Some(notes.clone());
        self.store.put_review(&review).await?;
        self.audit
            .record(
                caller.name.as_str(),
                AuditEvent::ReviewCompleted {
                    review: review.id.clone(),
                    user: review.user.clone(),
                    grant: review.grant.clone(),
                    notes,
                },
            )
            .await?;
        Ok(review)
    }
}
