//! Authorization policy: Cedar policies evaluated against jitgate's schema, on top of built-in
//! rules that no policy can loosen (the built-in rules live in [`crate::grant`], which calls
//! [`Engine::evaluate`] only after they pass).
//!
//! Actions: `request`, `approve` (principal = the approver), `grant` (principal = the requester,
//! evaluated when the task's approval count is reached; a forbid keeps the request pending for
//! more approvals) and `break-glass`. Without `[policy]` the built-in rules decide alone.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use cedar_policy::{
    Authorizer, Context, Decision, Entities, EntityUid, PolicySet, Request, Schema, ValidationMode,
    Validator,
};
use serde_json::{Value, json};

use crate::config::{Config, TargetConfig, TaskConfig, UserConfig};
use crate::store::Ticket;
use crate::types::Ttl;

/// The schema every policy is validated against. Part of the contract for policy authors.
pub const SCHEMA: &str = r#"
entity Group;
entity User in [Group] {
  roles: Set<String>,
  is_vendor: Bool,
  vendor: String,
};
entity Task {
  impact: String,
  vendor_allowed: Bool,
  approvals: Long,
  max_ttl: Long,
};
entity Target {
  kind: String,
  tags: Set<String>,
};
type Ticket = {
  id: String,
  state: String,
  assignee: String,
  source: String,
};
type Ctx = {
  target: Target,
  ticket: Ticket,
  ttl: Long,
  reason: String,
  requester: User,
  approvals: Long,
  approvers: Set<User>,
  hour_utc: Long,
  weekday: Long,
};
action "request", "approve", "grant", "break-glass" appliesTo {
  principal: [User],
  resource: [Task],
  context: Ctx,
};
"#;

/// The actions policies decide.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Request,
    Approve,
    Grant,
    BreakGlass,
}

impl Action {
    /// The Cedar action id.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Request => "request",
            Action::Approve => "approve",
            Action::Grant => "grant",
            Action::BreakGlass => "break-glass",
        }
    }
}

/// One question for the policy.
pub struct Query<'a> {
    pub action: Action,
    pub principal: &'a UserConfig,
    pub requester: &'a UserConfig,
    pub task: &'a TaskConfig,
    pub target: &'a TargetConfig,
    pub ticket: &'a Ticket,
    pub ttl: Ttl,
    pub reason: &'a str,
    /// Approvers so far, including the principal for `approve`, as they are now.
    pub approvers: &'a [UserConfig],
}

/// A problem in a policy file, with its line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyProblem {
    pub file: PathBuf,
    pub line: usize,
    pub message: String,
}

impl std::fmt::Display for PolicyProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}: {}", self.file.display(), self.line, self.message)
    }
}

/// Loaded, validated policies (or none).
pub struct Engine {
    schema: Schema,
    policies: Option<PolicySet>,
    count: usize,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Engine({} policies)", self.count)
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

fn diag_line(text: &str, d: &dyn miette::Diagnostic) -> usize {
    d.labels()
        .and_then(|mut l| l.next())
        .map(|l| line_of(text, l.offset()))
        .unwrap_or(1)
}

fn diag_message(d: &dyn miette::Diagnostic) -> String {
    let mut msg = d.to_string();
    if let Some(help) = d.help() {
        msg.push_str(&format!(" ({help})"));
    }
    msg
}

fn schema() -> Schema {
    Schema::from_cedarschema_str(SCHEMA)
        .expect("the built-in schema is valid")
        .0
}

impl Engine {
    /// No policies: the built-in rules decide alone.
    pub fn builtin_only() -> Self {
        Self {
            schema: schema(),
            policies: None,
            count: 0,
        }
    }

    /// Load the policy files named in the configuration, parsing and validating each.
    pub fn load(cfg: &Config) -> Result<Self, Vec<PolicyProblem>> {
        match &cfg.policy {
            None => Ok(Self::builtin_only()),
            Some(p) => Self::load_files(&p.files),
        }
    }

    /// Load and validate `files`.
    pub fn load_files(files: &[PathBuf]) -> Result<Self, Vec<PolicyProblem>> {
        let schema = schema();
        let validator = Validator::new(schema.clone());
        let mut all = PolicySet::new();
        let mut problems = Vec::new();
        for file in files {
            let text = match std::fs::read_to_string(file) {
                Ok(t) => t,
                Err(e) => {
                    problems.push(PolicyProblem {
                        file: file.clone(),
                        line: 1,
                        message: format!("cannot read the policy file: {e}"),
                    });
                    continue;
                }
            };
            match Self::parse_file(file, &text, &validator) {
                Ok(set) => {
                    for p in set.policies() {
                        if let Err(e) = all.add(p.clone()) {
                            problems.push(PolicyProblem {
                                file: file.clone(),
                                line: 1,
                                message: e.to_string(),
                            });
                        }
                    }
                }
                Err(mut p) => problems.append(&mut p),
            }
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        let count = all.policies().count();
        Ok(Self {
            schema,
            policies: Some(all),
            count,
        })
    }

    fn parse_file(
        file: &Path,
        text: &str,
        validator: &Validator,
    ) -> Result<PolicySet, Vec<PolicyProblem>> {
        let prob = |line, message| PolicyProblem {
            file: file.to_path_buf(),
            line,
            message,
        };
        let parsed = PolicySet::from_str(text).map_err(|e| {
            vec![prob(
                diag_line(text, &e),
                format!("policy does not parse: {}", diag_message(&e)),
            )]
        })?;
        // Name each policy after its file and position (or its @id) so denials can cite it.
        let stem = file
            .file_name()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut named = PolicySet::new();
        let mut policies: Vec<_> = parsed.policies().cloned().collect();
        policies.sort_by_key(|p| {
            p.id()
                .to_string()
                .trim_start_matches("policy")
                .parse::<usize>()
                .unwrap_or(0)
        });
        for (i, p) in policies.into_iter().enumerate() {
            let name = p
                .annotation("id")
                .map(str::to_string)
                .unwrap_or_else(|| format!("{stem}#{}", i + 1));
            let p = p.new_id(cedar_policy::PolicyId::new(name));
            named
                .add(p)
                .map_err(|e| vec![prob(1, format!("duplicate policy id: {e}"))])?;
        }
        let result = validator.validate(&parsed, ValidationMode::Strict);
        let errs: Vec<PolicyProblem> = result
            .validation_errors()
            .map(|e| {
                prob(
                    diag_line(text, e),
                    format!(
                        "policy does not match jitgate's schema: {}",
                        diag_message(e)
                    ),
                )
            })
            .collect();
        if errs.is_empty() {
            Ok(named)
        } else {
            Err(errs)
        }
    }

    /// Number of loaded policies.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether no policies are loaded.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Ask the policies; `Err` carries the reason for a denial.
    pub fn evaluate(&self, q: &Query<'_>) -> Result<(), String> {
        let Some(policies) = &self.policies else {
            return Ok(());
        };
        let entities = self.entities(q).map_err(|e| {
            format!("policy input could not be built ({e}); this is a jitgate bug, denying")
        })?;
        let action = EntityUid::from_str(&format!("Action::{:?}", q.action.as_str()))
            .expect("action ids parse");
        let now = time::OffsetDateTime::now_utc();
        let ctx = json!({
            "target": {"__entity": {"type": "Target", "id": q.target.name.as_str()}},
            "ticket": {
                "id": q.ticket.id.as_str(),
                "state": match q.ticket.state { crate::store::TicketState::Open => "open", _ => "closed" },
                "assignee": q.ticket.assignee.as_ref().map(|a| a.as_str()).unwrap_or(""),
                "source": q.ticket.source,
            },
            "ttl": q.ttl.as_secs() as i64,
            "reason": q.reason,
            "requester": {"__entity": {"type": "User", "id": q.requester.name.as_str()}},
            "approvals": q.approvers.len() as i64,
            "approvers": q.approvers.iter().map(|a| json!({"__entity": {"type": "User", "id": a.name.as_str()}})).collect::<Vec<_>>(),
            "hour_utc": now.hour() as i64,
            "weekday": now.weekday().number_from_monday() as i64,
        });
        let context = Context::from_json_value(ctx, Some((&self.schema, &action)))
            .map_err(|e| format!("policy context is invalid ({e}); denying"))?;
        let principal = user_uid(q.principal.name.as_str());
        let resource = EntityUid::from_str(&format!("Task::{:?}", q.task.name.as_str()))
            .map_err(|e| e.to_string())?;
        let request = Request::new(principal, action, resource, context, Some(&self.schema))
            .map_err(|e| format!("policy request is invalid ({e}); denying"))?;
        let response = Authorizer::new().is_authorized(&request, policies, &entities);
        let errors: Vec<String> = response
            .diagnostics()
            .errors()
            .map(|e| e.to_string())
            .collect();
        match response.decision() {
            Decision::Allow => Ok(()),
            Decision::Deny => {
                let forbids: Vec<String> = response
                    .diagnostics()
                    .reason()
                    .map(|id| id.to_string())
                    .collect();
                let mut why = if forbids.is_empty() {
                    format!(
                        "no policy permits {} {} for task {}",
                        q.principal.name,
                        q.action.as_str(),
                        q.task.name
                    )
                } else {
                    format!("forbidden by policy {}", forbids.join(", "))
                };
                if !errors.is_empty() {
                    why.push_str(&format!(" (policy errors: {})", errors.join("; ")));
                }
                Err(why)
            }
        }
    }

    fn entities(&self, q: &Query<'_>) -> Result<Entities, String> {
        let mut users: Vec<&UserConfig> = vec![q.principal, q.requester];
        users.extend(q.approvers.iter());
        users.sort_by(|a, b| a.name.cmp(&b.name));
        users.dedup_by(|a, b| a.name == b.name);
        let mut groups: Vec<&str> = users
            .iter()
            .flat_map(|u| u.groups.iter().map(String::as_str))
            .collect();
        groups.sort();
        groups.dedup();
        let mut list: Vec<Value> = users
            .iter()
            .map(|u| {
                json!({
                    "uid": {"type": "User", "id": u.name.as_str()},
                    "attrs": {
                        "roles": u.roles.iter().map(|r| r.as_str()).collect::<Vec<_>>(),
                        "is_vendor": u.vendor.is_some(),
                        "vendor": u.vendor.clone().unwrap_or_default(),
                    },
                    "parents": u.groups.iter().map(|g| json!({"type": "Group", "id": g})).collect::<Vec<_>>(),
                })
            })
            .collect();
        list.extend(
            groups
                .iter()
                .map(|g| json!({"uid": {"type": "Group", "id": g}, "attrs": {}, "parents": []})),
        );
        list.push(json!({
            "uid": {"type": "Task", "id": q.task.name.as_str()},
            "attrs": {
                "impact": match q.task.impact { crate::config::Impact::High => "high", _ => "normal" },
                "vendor_allowed": q.task.vendor_allowed,
                "approvals": q.task.required_approvals() as i64,
                "max_ttl": q.task.max_ttl.as_secs() as i64,
            },
            "parents": [],
        }));
        list.push(json!({
            "uid": {"type": "Target", "id": q.target.name.as_str()},
            "attrs": {"kind": q.target.kind.as_str(), "tags": q.target.tags},
            "parents": [],
        }));
        Entities::from_json_value(Value::Array(list), Some(&self.schema)).map_err(|e| e.to_string())
    }
}

fn user_uid(name: &str) -> EntityUid {
    EntityUid::from_str(&format!("User::{name:?}")).expect("user names are plain text")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::TicketState;

    fn cfg(policy: &str, dir: &Path) -> Config {
        std::fs::write(dir.join("p.cedar"), policy).unwrap();
        let text = r#"
[gateway]
public_name = "gw"
[policy]
files = ["p.cedar"]
[[users]]
name = "alice"
roles = ["technician"]
groups = ["helpdesk"]
[[users]]
name = "vic"
roles = ["technician"]
vendor = "acme"
[[users]]
name = "bob"
roles = ["approver"]
groups = ["sponsors"]
[[targets]]
name = "dc-01"
kind = "ssh"
address = "127.0.0.1:22"
host_key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"
[[tasks]]
name = "reset"
targets = ["dc-01"]
principal = "reset"
allow = ["shell"]
max_ttl = "30m"
"#;
        Config::from_text(text, &dir.join("j.toml")).unwrap()
    }

    fn ask(
        cfg: &Config,
        e: &Engine,
        action: Action,
        who: &str,
        requester: &str,
    ) -> Result<(), String> {
        let ticket = Ticket {
            id: "INC-1".parse().unwrap(),
            title: String::new(),
            assignee: Some(requester.parse().unwrap()),
            state: TicketState::Open,
            source: "local".into(),
            opened_at: 0,
            updated_at: 0,
        };
        let approvers: Vec<UserConfig> = if action == Action::Approve {
            vec![cfg.user(&who.parse().unwrap()).unwrap().clone()]
        } else {
            vec![]
        };
        e.evaluate(&Query {
            action,
            principal: cfg.user(&who.parse().unwrap()).unwrap(),
            requester: cfg.user(&requester.parse().unwrap()).unwrap(),
            task: &cfg.tasks[0],
            target: &cfg.targets[0],
            ticket: &ticket,
            ttl: Ttl::from_secs(600),
            reason: "fix",
            approvers: &approvers,
        })
    }

    #[test]
    fn vendor_rules_are_expressible_and_cited() {
        let dir = tempfile::tempdir().unwrap();
        let policy = r#"
permit (principal, action, resource);
@id("vendors-need-vendor-allowed-task")
forbid (principal, action == Action::"request", resource)
  when { principal.is_vendor && !resource.vendor_allowed };
forbid (principal, action == Action::"approve", resource)
  when { context.requester.is_vendor && !(principal in Group::"sponsors") };
"#;
        let cfg = cfg(policy, dir.path());
        let e = Engine::load(&cfg).unwrap();
        assert_eq!(e.len(), 3);
        assert!(ask(&cfg, &e, Action::Request, "alice", "alice").is_ok());
        let why = ask(&cfg, &e, Action::Request, "vic", "vic").unwrap_err();
        assert!(why.contains("vendors-need-vendor-allowed-task"), "{why}");
        assert!(ask(&cfg, &e, Action::Approve, "bob", "vic").is_ok());
        let why = ask(&cfg, &e, Action::Approve, "alice", "vic").unwrap_err();
        assert!(why.contains("p.cedar#3"), "{why}");
    }

    #[test]
    fn without_a_permit_everything_is_denied() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = cfg(
            "permit (principal, action == Action::\"approve\", resource);",
            dir.path(),
        );
        let e = Engine::load(&cfg).unwrap();
        let why = ask(&cfg, &e, Action::Request, "alice", "alice").unwrap_err();
        assert!(why.contains("no policy permits alice request"), "{why}");
    }

    #[test]
    fn syntax_and_schema_errors_name_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.cedar");
        std::fs::write(
            &path,
            "permit (principal, action, resource);\n\npermit (principal action, resource);\n",
        )
        .unwrap();
        let errs = Engine::load_files(std::slice::from_ref(&path)).unwrap_err();
        assert_eq!(errs[0].line, 3, "{errs:?}");
        std::fs::write(
            &path,
            "permit (principal, action, resource)\n  when { principal.nickname == \"x\" };\n",
        )
        .unwrap();
        let errs = Engine::load_files(&[path]).unwrap_err();
        assert_eq!(errs[0].line, 2, "{errs:?}");
        assert!(errs[0].message.contains("schema"), "{errs:?}");
    }
}
