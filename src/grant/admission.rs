//! Admission: the check both gateways call with a presented token. An [`Admission`] is the only
//! value a gateway can dial a target with; failures are audited and throttled per source.

use std::net::IpAddr;

use super::{GrantError, Service};
use crate::audit::AuditEvent;
use crate::config::{TargetConfig, TargetKind, TaskConfig, UserConfig};
use crate::store::{GrantState, RequestKind, TicketState};
use crate::types::{GrantId, GrantToken, RequestId, TicketRef, UnixTime, UserName, now};

/// Proof that a connection may proceed: who, which grant, which task on which target, until when.
#[derive(Debug, Clone)]
pub struct Admission {
    grant: GrantId,
    request: RequestId,
    kind: RequestKind,
    user: UserConfig,
    task: TaskConfig,
    target: TargetConfig,
    ticket: TicketRef,
    approvers: Vec<UserName>,
    expires_at: UnixTime,
}

impl Admission {
    pub fn grant(&self) -> &GrantId {
        &self.grant
    }
    pub fn request(&self) -> &RequestId {
        &self.request
    }
    pub fn kind(&self) -> RequestKind {
        self.kind
    }
    pub fn user(&self) -> &UserConfig {
        &self.user
    }
    pub fn task(&self) -> &TaskConfig {
        &self.task
    }
    pub fn target(&self) -> &TargetConfig {
        &self.target
    }
    /// Login name on an SSH target.
    pub fn principal(&self) -> Option<&str> {
        self.task.principal.as_deref()
    }
    pub fn ticket(&self) -> &TicketRef {
        &self.ticket
    }
    pub fn approvers(&self) -> &[UserName] {
        &self.approvers
    }
    pub fn expires_at(&self) -> UnixTime {
        self.expires_at
    }
}

#[cfg(test)]
impl Admission {
    /// An admission of `cfg`'s first user, task and target, for unit tests of the code that
    /// runs sessions (outside tests only [`Service::admit`] makes one).
    pub(crate) fn for_test(cfg: &crate::config::Config) -> Self {
        Self {
            grant: GrantId::generate(),
            request: RequestId::generate(),
            kind: RequestKind::Normal,
            user: cfg.users[0].clone(),
            task: cfg.tasks[0].clone(),
            target: cfg.targets[0].clone(),
            ticket: "INC-1".parse().expect("valid ticket id"),
            approvers: Vec::new(),
            expires_at: now() + 600,
        }
    }
}

/// Why a connection was refused; `message` is safe to show the client.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct AdmissionDenied {
    pub message: String,
    pub grant: Option<GrantId>,
}

/// What a gateway presents.
#[derive(Debug, Clone, Copy)]
pub struct AdmitRequest<'a> {
    pub token: &'a str,
    /// The user name the client presented (SSH); `None` where the token alone identifies the
    /// user (HTTPS bearer or login).
    pub user: Option<&'a str>,
    pub protocol: TargetKind,
    pub source: IpAddr,
}

impl Service {
    /// Check a presented token for `user` over `protocol`; audits and counts every refusal.
    pub async fn admit(&self, r: AdmitRequest<'_>) -> Result<Admission, AdmissionDenied> {
        let (message, grant) = match self.evaluate_admission(&r).await {
            Ok(a) => return Ok(a),
            Err(e) => e,
        };
        let throttled = self.limiter.fail(r.source);
        let user: String = r.user.unwrap_or("").chars().take(64).collect();
        // Anyone can cause these: audited within the flood budget.
        if let Err(e) = self
            .audit
            .refusal(
                "system",
                r.source,
                AuditEvent::AdmissionDenied {
                    user,
                    protocol: r.protocol.as_str().into(),
                    source: r.source.to_string(),
                    grant: grant.clone(),
                    reason: message.clone(),
                },
            )
            .await
        {
            tracing::error!(error = %e, "cannot audit an admission denial");
        }
        tracing::info!(source = %r.source, protocol = r.protocol.as_str(), reason = %message, throttled, "admission denied");
        if throttled {
            tokio::time::sleep(super::throttle::DELAY).await;
        }
        Err(AdmissionDenied { message, grant })
    }

    async fn evaluate_admission(
        &self,
        r: &AdmitRequest<'_>,
    ) -> Result<Admission, (String, Option<GrantId>)> {
        let internal = |e: GrantError| {
            tracing::error!(error = %e, "admission check failed");
            (
                "the gateway cannot check grants right now; try again".to_string(),
                None,
            )
        };
        let token = GrantToken::parse(r.token).map_err(|e| (e.to_string(), None))?;
        let grant = self
            .store
            .grant_by_token_hash(&token.hash())
            .await
            .map_err(|e| internal(e.into()))?
            .ok_or_else(|| {
                (
                    "unknown grant token; fetch it with `jitgate token REQUEST`".to_string(),
                    None,
                )
            })?;
        let gid = Some(grant.id.clone());
        let deny = |m: String| (m, gid.clone());
        // Compare names without revealing whose grant it is.
        if let Some(user) = r.user
            && grant.requester.as_str() != user
        {
            return Err(deny(format!(
                "grant {} was not issued to {}; connect as the user who requested it",
                grant.id,
                user.chars().take(64).collect::<String>()
            )));
        }
        if grant.state != GrantState::Active {
            return Err(deny(format!(
                "grant {} is {}{}",
                grant.id,
                grant.state.as_str(),
                grant
                    .end_reason
                    .as_ref()
                    .map(|r| format!(": {r}"))
                    .unwrap_or_default()
            )));
        }
        if now() >= grant.expires_at {
            return Err(deny(format!(
                "grant {} expired at {}",
                grant.id,
                crate::types::rfc3339(grant.expires_at)
            )));
        }
        let user = self.person(&grant.requester).await.map_err(internal)?;
        let (Some(task), Some(target), Some(user)) = (
            self.cfg.task(&grant.task),
            self.cfg.target(&grant.target),
            user.as_ref(),
        ) else {
            return Err(deny(format!(
                "grant {}'s user, task or target is no longer configured",
                grant.id
            )));
        };
        if target.kind != r.protocol {
            return Err(deny(format!(
                "grant {} is for {} target {}; use the {} gateway",
                grant.id,
                target.kind,
                target.name,
                target.kind.as_str().to_uppercase()
            )));
        }
        if !task.covers(target) {
            return Err(deny(format!(
                "task {} no longer covers target {}",
                task.name, target.name
            )));
        }
        let ticket = self
            .store
            .ticket(&grant.ticket)
            .await
            .map_err(|e| internal(e.into()))?;
        match ticket {
            Some(t) if t.state == TicketState::Open => {
                if self.cfg.tickets.require_assignee && t.assignee.as_ref() != Some(&user.name) {
                    return Err(deny(format!(
                        "ticket {} is no longer assigned to {}",
                        t.id, user.name
                    )));
                }
            }
            _ => {
                return Err(deny(format!("ticket {} is closed", grant.ticket)));
            }
        }
        Ok(Admission {
            grant: grant.id.clone(),
            request: grant.request.clone(),
            kind: grant.kind,
            user: user.clone(),
            task: task.clone(),
            target: target.clone(),
            ticket: grant.ticket.clone(),
            approvers: grant.approvers.clone(),
            expires_at: grant.expires_at,
        })
    }
}
