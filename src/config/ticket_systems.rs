//! `[[ticket_systems]]`: the Jira, ServiceNow and Request Tracker instances whose tickets grants
//! hang on. jitgate asks them about a ticket when its view is older than `max_staleness`,
//! re-reads every ticket with live grants or pending requests each `poll_interval`, keeps live
//! grants only while its last confirmed view is younger than `grace`, and writes what happened
//! back to the ticket as comments (`comment`).

use std::path::PathBuf;

use serde::Deserialize;

use crate::types::Ttl;

/// Which REST API a ticket system speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TicketSystemKind {
    /// Jira Cloud or Data Center REST (issue key, status category, assignee account id).
    Jira,
    /// ServiceNow Table API (incident or task by number, `state`, `assigned_to`).
    Servicenow,
    /// Request Tracker 5 REST2 (ticket id, `Status`, `Owner`).
    Rt,
}

impl TicketSystemKind {
    /// Lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Jira => "jira",
            Self::Servicenow => "servicenow",
            Self::Rt => "rt",
        }
    }

    /// The states that count as open when `open_states` is not set: Jira status categories,
    /// ServiceNow `state` values (1 New, 2 In Progress, 3 On Hold), RT statuses.
    pub fn default_open_states(self) -> &'static [&'static str] {
        match self {
            Self::Jira => &["new", "indeterminate"],
            Self::Servicenow => &["1", "2", "3"],
            Self::Rt => &["new", "open", "stalled"],
        }
    }
}

/// One `[[ticket_systems]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TicketSystemConfig {
    /// Names the system in ticket ids (`rt:42`), `external_ids` (`rt:alice`) and messages.
    pub name: String,
    pub kind: TicketSystemKind,
    /// Base URL (`https://jira.example.com`, `https://example.service-now.com`,
    /// `https://rt.example.com`). Plain `http://` only on loopback.
    pub url: String,
    /// API token (`env:VAR`, `file:PATH` or literal): Jira Data Center personal access token,
    /// RT auth token; for Jira Cloud give `user` (the account's email) and `password` (its API
    /// token) instead.
    pub token: Option<String>,
    pub user: Option<String>,
    /// `env:VAR`, `file:PATH` or literal.
    pub password: Option<String>,
    /// PEM file with the CA that signs the system's certificate (default: the system's roots).
    pub ca: Option<PathBuf>,
    /// How old jitgate's view of a ticket may be before a request, approval, token fetch or
    /// admission asks the system again.
    #[serde(default = "default_max_staleness")]
    pub max_staleness: Ttl,
    /// How often every ticket with live grants or pending requests is re-read (jittered).
    #[serde(default = "default_poll_interval")]
    pub poll_interval: Ttl,
    /// While the system cannot be reached, live grants run on only while the last confirmed
    /// view is younger than this; then they end and their sessions are cut.
    #[serde(default = "default_grace")]
    pub grace: Ttl,
    /// Write what happens (requests, approvals, sessions, revocations) back as comments.
    #[serde(default = "yes")]
    pub comment: bool,
    /// Bare ticket ids that match this regular expression belong to this system too.
    pub pattern: Option<String>,
    /// The states that count as open (default: per kind, see
    /// [`TicketSystemKind::default_open_states`]).
    pub open_states: Option<Vec<String>>,
    /// ServiceNow: the table tickets are read from (default `incident`).
    pub table: Option<String>,
    /// The claim of the identity provider's ID token (or userinfo) that holds a person's
    /// identity in this system (e.g. `jira_account_id`): a person who signs in with it set is
    /// this system's assignee of that name, without an `external_ids` entry. Needs `[oidc]`.
    pub oidc_claim: Option<String>,
}

fn default_max_staleness() -> Ttl {
    Ttl::from_secs(30)
}
fn default_poll_interval() -> Ttl {
    Ttl::from_secs(30)
}
fn default_grace() -> Ttl {
    Ttl::from_secs(300)
}
fn yes() -> bool {
    true
}

impl TicketSystemConfig {
    /// Whether `state` (as the system reports it) counts as open.
    pub fn is_open_state(&self, state: &str) -> bool {
        let state = state.to_ascii_lowercase();
        match &self.open_states {
            Some(open) => open.iter().any(|s| s.to_ascii_lowercase() == state),
            None => self.kind.default_open_states().contains(&state.as_str()),
        }
    }

    /// The ServiceNow table.
    pub fn table(&self) -> &str {
        self.table.as_deref().unwrap_or("incident")
    }
}

impl super::Config {
    /// Problems with `[[ticket_systems]]`.
    pub(super) fn validate_ticket_systems(
        &self,
        loc: &super::validate::Locator,
        problems: &mut Vec<super::Problem>,
    ) {
        use super::Seg::{Index as I, Key as K};
        let mut err = |path: &[super::Seg], message: String| {
            problems.push(super::Problem {
                file: self.source.clone(),
                line: loc.line(path),
                message,
            })
        };
        let mut names = std::collections::HashSet::new();
        for (i, s) in self.ticket_systems.iter().enumerate() {
            let at = |k: &'static str| [K("ticket_systems"), I(i), K(k)];
            if s.name.parse::<crate::types::UserName>().is_err() || s.name == "local" {
                err(
                    &at("name"),
                    format!(
                        "ticket system name {:?} must be letters, digits, '-', '_', '.' (it prefixes ticket ids: NAME:ID), and not \"local\"",
                        s.name
                    ),
                );
            } else if !names.insert(s.name.clone()) {
                err(
                    &at("name"),
                    format!("ticket system {} is configured twice", s.name),
                );
            }
            if let Err(why) = crate::ticket::systems::http::check_url(&s.url) {
                err(&at("url"), format!("ticket system {}: {why}", s.name));
            }
            match (&s.token, &s.user, &s.password) {
                (Some(_), None, None) | (None, Some(_), Some(_)) => {}
                _ => err(
                    &at("token"),
                    format!(
                        "ticket system {}: set token, or user and password (env:VAR or file:PATH for secrets)",
                        s.name
                    ),
                ),
            }
            if let Some(ca) = &s.ca
                && !ca.is_file()
            {
                err(
                    &at("ca"),
                    format!(
                        "ticket system {}: ca {} does not exist",
                        s.name,
                        ca.display()
                    ),
                );
            }
            if let Some(p) = &s.pattern
                && let Err(e) = regex::Regex::new(p)
            {
                err(
                    &at("pattern"),
                    format!(
                        "ticket system {}: pattern is not a regular expression: {e}",
                        s.name
                    ),
                );
            }
            if s.poll_interval.as_secs() < 1 {
                err(
                    &at("poll_interval"),
                    format!(
                        "ticket system {}: poll_interval must be at least 1s",
                        s.name
                    ),
                );
            }
            if s.grace.as_secs() < s.max_staleness.as_secs() {
                err(
                    &at("grace"),
                    format!(
                        "ticket system {}: grace must be at least max_staleness, or live grants end at the first missed answer",
                        s.name
                    ),
                );
            }
            if let Some(c) = &s.oidc_claim {
                if self.oidc.is_none() {
                    err(
                        &at("oidc_claim"),
                        format!(
                            "ticket system {}: oidc_claim needs [oidc] (people sign in through the identity provider)",
                            s.name
                        ),
                    );
                } else if c.is_empty() || c.len() > 100 {
                    err(
                        &at("oidc_claim"),
                        format!("ticket system {}: oidc_claim must name a claim", s.name),
                    );
                }
            }
            if s.table.is_some() && s.kind != TicketSystemKind::Servicenow {
                err(
                    &at("table"),
                    format!("ticket system {}: table applies to ServiceNow only", s.name),
                );
            }
        }
    }
}
