//! A request before it is made: the draft built from what the caller typed, the verdict of the
//! built-in rules and the policy, and [`Service::preview`], which tells the console what the
//! rules would say without storing or auditing anything.

use serde::Serialize;

use super::{GrantError, NewRequest, Service, check_text, parse_name};
use crate::config::{Impact, TaskConfig, UserConfig};
use crate::policy;
use crate::store::{Request, RequestKind, RequestState};
use crate::types::{RequestId, TargetName, TaskName, TicketRef, Ttl, now};

/// What the rules would say about a request.
#[derive(Debug, Clone, Serialize)]
pub struct Preview {
    /// Whether the request would be accepted (as pending, waiting for approvals).
    pub allowed: bool,
    /// Why it would be refused, in the words the refusal would use.
    pub refusal: Option<String>,
    pub required_approvals: u32,
    pub high_impact: bool,
    /// Why it needs the approvals it needs.
    pub approvals_why: String,
    pub max_ttl: Option<Ttl>,
}

/// Why a task needs its approvals, in a sentence.
pub fn approvals_why(task: &TaskConfig) -> String {
    let n = task.required_approvals();
    match task.impact {
        Impact::High if task.approvals < 2 => format!(
            "{n} approvals: task {} is high impact, and high-impact tasks always need two distinct approvers",
            task.name
        ),
        Impact::High => format!(
            "{n} approvals: task {} is high impact and asks for {n}",
            task.name
        ),
        Impact::Normal => format!(
            "{n} approval{}: task {} asks for {n}",
            if n == 1 { "" } else { "s" },
            task.name
        ),
    }
}

impl Service {
    /// A pending request from what the caller typed (not stored).
    pub(super) fn draft(
        &self,
        caller: &UserConfig,
        new: NewRequest,
    ) -> Result<Request, GrantError> {
        let task: TaskName = parse_name("task", &new.task)?;
        let target: TargetName = parse_name("target", &new.target)?;
        let ticket = self.canonical_ticket(parse_name::<TicketRef>("ticket", &new.ticket)?);
        let ttl: Ttl = new
            .ttl
            .parse()
            .map_err(|e: String| GrantError::Invalid(format!("ttl: {e}")))?;
        let reason = check_text("reason", &new.reason, false)?;
        let now = now();
        let required = self
            .cfg
            .task(&task)
            .map(|t| t.required_approvals())
            .unwrap_or(1);
        Ok(Request {
            id: RequestId::generate(),
            kind: RequestKind::Normal,
            requester: caller.name.clone(),
            task,
            target,
            ticket,
            ttl,
            reason,
            state: RequestState::Pending,
            created_at: now,
            expires_at: now + self.cfg.requests.pending_ttl.as_secs() as i64,
            approvals: Vec::new(),
            required_approvals: required,
            decided_at: None,
            decided_by: None,
            decision_reason: None,
            grant: None,
        })
    }

    /// Why the caller may not request anything now (an unreviewed break-glass use, when the
    /// configuration blocks requests until it is reviewed).
    pub(super) async fn blocked_by_review(
        &self,
        caller: &UserConfig,
    ) -> Result<Option<String>, GrantError> {
        if !self
            .cfg
            .break_glass
            .as_ref()
            .is_some_and(|b| b.block_requests_until_reviewed)
        {
            return Ok(None);
        }
        Ok(self.open_review_of(caller).await?.map(|open| {
            format!(
                "{} has an unreviewed break-glass use ({}); requests are blocked until a reviewer signs it off with `jitgate review {} --notes ...`",
                caller.name, open.id, open.id
            )
        }))
    }

    /// The built-in rules, then the policy; the inner `Err` is the refusal.
    pub(super) async fn verdict(
        &self,
        req: &Request,
        caller: &UserConfig,
    ) -> Result<Result<(), String>, GrantError> {
        match self.check_request(req, caller, RequestKind::Normal).await? {
            Err(why) => Ok(Err(why)),
            Ok(()) => {
                self.policy_check(req, policy::Action::Request, caller, &[])
                    .await
            }
        }
    }

    /// What the rules would say about `new` from `caller`, without storing or auditing it.
    pub async fn preview(
        &self,
        caller: &UserConfig,
        new: NewRequest,
    ) -> Result<Preview, GrantError> {
        let task = parse_name::<TaskName>("task", &new.task)
            .ok()
            .and_then(|t| self.cfg.task(&t).cloned());
        if new.reason.trim().is_empty() {
            return Err(GrantError::Invalid(
                "reason: say what you will do and why".into(),
            ));
        }
        let req = self.draft(caller, new)?;
        let refusal = match self.blocked_by_review(caller).await? {
            Some(why) => Some(why),
            None => self.verdict(&req, caller).await?.err(),
        };
        Ok(Preview {
            allowed: refusal.is_none(),
            refusal,
            required_approvals: req.required_approvals,
            high_impact: task.as_ref().is_some_and(|t| t.impact == Impact::High),
            approvals_why: task.as_ref().map(approvals_why).unwrap_or_default(),
            max_ttl: task.map(|t| t.max_ttl),
        })
    }

    /// The tasks `caller` could ask for on `target`: those covering it (only vendor-allowed
    /// ones for a vendor's technician), break-glass-only tasks aside.
    pub fn tasks_for(&self, caller: &UserConfig, target: &TargetName) -> Vec<&TaskConfig> {
        let Some(t) = self.cfg.target(target) else {
            return Vec::new();
        };
        self.cfg
            .tasks
            .iter()
            .filter(|task| task.covers(t))
            .filter(|task| caller.vendor.is_none() || task.vendor_allowed)
            .collect()
    }
}
