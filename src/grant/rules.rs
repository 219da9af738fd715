//! The built-in rules, checked at request time and again at every approval and admission. No
//! policy can loosen them.

use super::{GrantError, Service};
use crate::config::{Role, UserConfig};
use crate::store::{Request, RequestKind, TicketState};

impl Service {
    /// The floor every request must clear; the inner `Err` is the denial reason.
    pub(super) async fn check_request(
        &self,
        req: &Request,
        requester: &UserConfig,
        kind: RequestKind,
    ) -> Result<Result<(), String>, GrantError> {
        let role = match kind {
            RequestKind::Normal => Role::Technician,
            RequestKind::BreakGlass => Role::BreakGlass,
        };
        if !requester.has_role(role) {
            return Ok(Err(format!(
                "{} lacks the {} role",
                requester.name,
                role.as_str()
            )));
        }
        let Some(task) = self.cfg.task(&req.task) else {
            return Ok(Err(format!(
                "no task is named {}; ask an admin which tasks exist",
                req.task
            )));
        };
        let Some(target) = self.cfg.target(&req.target) else {
            return Ok(Err(format!("no target is named {}", req.target)));
        };
        if !task.covers(target) {
            return Ok(Err(format!(
                "task {} does not cover target {}",
                task.name, target.name
            )));
        }
        if req.ttl > task.max_ttl {
            return Ok(Err(format!(
                "ttl {} is longer than task {}'s max_ttl {}; ask for {} or less",
                req.ttl, task.name, task.max_ttl, task.max_ttl
            )));
        }
        if req.reason.trim().is_empty() {
            return Ok(Err(
                "the justification is empty; say what you will do and why".into(),
            ));
        }
        let Some(ticket) = self.store.ticket(&req.ticket).await? else {
            return Ok(Err(format!(
                "ticket {} does not exist; open it in the ticket system first",
                req.ticket
            )));
        };
        if ticket.state != TicketState::Open {
            return Ok(Err(format!(
                "ticket {} is closed; open a new ticket or ask its owner to reopen it",
                ticket.id
            )));
        }
        if self.cfg.tickets.require_assignee && ticket.assignee.as_ref() != Some(&requester.name) {
            return Ok(Err(format!(
                "ticket {} is not assigned to {}; have it assigned to you first",
                ticket.id, requester.name
            )));
        }
        Ok(Ok(()))
    }
}
