//! Admission: the check both gateways call with a presented token. An [`Admission`] is the only
//! value a gateway can dial a target with; failures are audited and throttled per source.

use std::net::IpAddr;

use super::{GrantError, Service};
use crate::audit::AuditEvent;
use crate::config::{TargetConfig, TargetKind, TargetSpec, TaskConfig, UserConfig};
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
    spec: TargetSpec,
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
    /// How the gateway reaches the target.
    pub fn spec(&self) -> &TargetSpec {
        &self.spec
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
            spec: cfg.targets[0].spec().expect("a valid test target"),
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

/// Prefix of the one-time codes the console hands a browser to open an HTTPS grant.
pub const OPEN_CODE_PREFIX: &str = "jgo_";
/// How long such a code works.
const OPEN_CODE_WINDOW: std::time::Duration = std::time::Duration::from_secs(60);
/// Codes held at once (each needs an active HTTPS grant of its requester).
const MAX_OPEN_CODES: usize = 10_000;

/// Codes from [`Service::open_code`] are held in the store (kind `open-code`, by SHA-256) so
/// that the HTTPS gateway of any node can redeem one the console made on another.
const OPEN_CODE_KIND: &str = "open-code";

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
                    protocol: r.protocol,
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
        let grant = if r.token.starts_with(OPEN_CODE_PREFIX) && r.protocol == TargetKind::Https {
            // A code from the console's "Open console": used once, within a minute.
            let key = crate::crypto::sha256_hex(r.token.as_bytes());
            let held = self
                .store
                .take_held(OPEN_CODE_KIND, &key)
                .await
                .map_err(|e| internal(e.into()))?;
            // `grant id` and the time it was made, as `open_code` holds them.
            let id = held
                .and_then(|v| serde_json::from_str::<(GrantId, crate::types::UnixTime)>(&v).ok())
                .filter(|(_, at)| {
                    crate::types::now() - at < OPEN_CODE_WINDOW.as_secs() as i64
                })
                .map(|(id, _)| id)
                .ok_or_else(|| {
                    (
                        "this console link was already used or is older than a minute; press Open console again".to_string(),
                        None,
                    )
                })?;
            self.store
                .grant(&id)
                .await
                .map_err(|e| internal(e.into()))?
                .ok_or_else(|| (format!("grant {id} does not exist"), None))?
        } else {
            let token = GrantToken::parse(r.token).map_err(|e| (e.to_string(), None))?;
            self.store
                .grant_by_token_hash(&token.hash())
                .await
                .map_err(|e| internal(e.into()))?
                .ok_or_else(|| {
                    (
                        "unknown grant token; fetch it with `jitgate token REQUEST`".to_string(),
                        None,
                    )
                })?
        };
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
        // The ticket as its system says now. Without an answer the grant is used only while
        // the last confirmed view is within the system's grace; the answer may end the grant.
        let grant = if !self.systems.is_stale(&grant.ticket) {
            grant
        } else {
            match self.refresh_ticket(&grant.ticket).await {
                Ok(()) => self
                    .store
                    .grant(&grant.id)
                    .await
                    .map_err(|e| internal(e.into()))?
                    .unwrap_or(grant),
                Err(GrantError::TicketSystem(e)) if self.systems.within_grace(&grant.ticket) => {
                    tracing::warn!(ticket = %grant.ticket, error = %e, "ticket system gave no answer; admitting on the last confirmed view");
                    grant
                }
                Err(GrantError::TicketSystem(e)) => {
                    return Err(deny(format!(
                        "{e}; ticket {} could not be verified within that system's grace period, so its grants cannot be used",
                        grant.ticket
                    )));
                }
                Err(e) => return Err(internal(e)),
            }
        };
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
        // Checked by `jitgate check`; a target that fails here is refused, not half-dialled.
        let spec = target
            .spec()
            .map_err(|why| deny(format!("target {} is misconfigured: {why}", target.name)))?;
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
            spec,
            ticket: grant.ticket.clone(),
            approvers: grant.approvers.clone(),
            expires_at: grant.expires_at,
        })
    }
}

impl Service {
    /// A one-time code (one minute) that admits the browser of `caller` to the HTTPS gateway for
    /// their active grant `id` (request or grant id), without the token being shown.
    pub async fn open_code(&self, caller: &UserConfig, id: &str) -> Result<String, GrantError> {
        let grant = self
            .grants(caller, Some(crate::store::GrantState::Active))
            .await?
            .into_iter()
            .find(|g| g.id.as_str() == id || g.request.as_str() == id)
            .ok_or_else(|| GrantError::NotFound(format!("no active grant {id} of yours")))?;
        if grant.requester != caller.name {
            return Err(GrantError::Forbidden(format!(
                "grant {} is {}'s; only its requester opens it",
                grant.id, grant.requester
            )));
        }
        if self.cfg.target(&grant.target).map(|t| t.kind) != Some(TargetKind::Https) {
            return Err(GrantError::Invalid(format!(
                "grant {} is for SSH target {}; connect with ssh",
                grant.id, grant.target
            )));
        }
        let code = format!("{OPEN_CODE_PREFIX}{}", crate::types::random_id(40));
        let now = crate::types::now();
        let value = serde_json::to_string(&(&grant.id, now)).expect("serializes");
        let kept = self
            .store
            .put_held(
                OPEN_CODE_KIND,
                &crate::crypto::sha256_hex(code.as_bytes()),
                &value,
                now + OPEN_CODE_WINDOW.as_secs() as i64,
                MAX_OPEN_CODES,
            )
            .await?;
        if !kept {
            return Err(GrantError::Conflict(
                "too many console links are waiting to be used; try again in a minute".into(),
            ));
        }
        Ok(code)
    }
}
