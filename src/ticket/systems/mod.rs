//! Ticket systems as the live source of truth (`[[ticket_systems]]`): jitgate asks Jira,
//! ServiceNow or Request Tracker about a ticket whenever its own view is older than the
//! system's `max_staleness`, and remembers when each ticket was last confirmed, so that live
//! grants run on only while that is younger than `grace` when the system cannot be reached.
//! A ticket id names its system (`rt:42`); bare ids a system's `pattern` claims are that
//! system's too. What the system says becomes a [`TicketUpdate`] that [`super::Tickets::apply`]
//! applies like a webhook's.

mod clients;
pub mod http;

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use regex::Regex;

use super::TicketUpdate;
use crate::config::{Config, TicketSystemConfig, UserConfig};
use crate::types::{TicketRef, UserName};
use clients::Client;

/// What a ticket system says about a ticket, in its own words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remote {
    /// RT status, Jira status category key, ServiceNow state value.
    pub state: String,
    /// RT owner name, Jira account id (or user name on Data Center), ServiceNow user name.
    pub assignee: Option<String>,
    pub title: Option<String>,
}

/// Why a ticket system gave no answer about a ticket.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SystemError {
    #[error("ticket system {system} is unreachable: {reason}")]
    Unreachable { system: String, reason: String },
    #[error("ticket {id} does not exist in ticket system {system}")]
    NotFound { system: String, id: String },
    #[error(
        "ticket system {system} refused jitgate's credentials ({status}); check token, or user and password, in its [[ticket_systems]] entry"
    )]
    Credentials { system: String, status: u16 },
    #[error("ticket system {system} asked jitgate to slow down (try again in {retry_after} s)")]
    RateLimited { system: String, retry_after: u64 },
    #[error("ticket system {system} answered {status}: {detail}")]
    Answer {
        system: String,
        status: u16,
        detail: String,
    },
}

impl SystemError {
    /// Whether the answer says nothing about the ticket (retry later) rather than about it.
    pub fn is_outage(&self) -> bool {
        !matches!(self, SystemError::NotFound { .. })
    }
}

/// One configured system.
pub(crate) struct System {
    pub cfg: TicketSystemConfig,
    client: Client,
    pattern: Option<Regex>,
}

/// The configured ticket systems and when each of their tickets was last confirmed.
pub struct Systems {
    systems: Vec<System>,
    users: Vec<UserConfig>,
    confirmed: Mutex<HashMap<TicketRef, Instant>>,
}

impl std::fmt::Debug for Systems {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.systems.iter().map(|s| s.cfg.name.as_str()).collect();
        write!(f, "Systems({names:?})")
    }
}

impl Systems {
    /// The systems of `cfg` (credentials resolved, CAs read). `Err` says which entry is wrong.
    pub fn new(cfg: &Config) -> Result<Self, String> {
        let mut systems = Vec::new();
        for s in &cfg.ticket_systems {
            let what = format!("ticket system {}", s.name);
            let ca = match &s.ca {
                Some(p) => Some(
                    std::fs::read(p)
                        .map_err(|e| format!("{what}: cannot read ca {}: {e}", p.display()))?,
                ),
                None => None,
            };
            let auth = credentials(s).map_err(|e| format!("{what}: {e}"))?;
            let http =
                http::Http::new(&s.url, ca.as_deref(), auth).map_err(|e| format!("{what}: {e}"))?;
            let pattern = s
                .pattern
                .as_deref()
                .map(Regex::new)
                .transpose()
                .map_err(|e| format!("{what}: pattern: {e}"))?;
            systems.push(System {
                client: Client::new(s, http),
                cfg: s.clone(),
                pattern,
            });
        }
        Ok(Self {
            systems,
            users: cfg.users.clone(),
            confirmed: Mutex::new(HashMap::new()),
        })
    }

    /// No ticket systems: every ticket is the local provider's or a webhook's.
    pub fn empty() -> Self {
        Self {
            systems: Vec::new(),
            users: Vec::new(),
            confirmed: Mutex::new(HashMap::new()),
        }
    }

    /// Whether any system is configured.
    pub fn is_empty(&self) -> bool {
        self.systems.is_empty()
    }

    /// The systems.
    pub(crate) fn all(&self) -> &[System] {
        &self.systems
    }

    /// `id` as jitgate keeps it: a bare id that a system's `pattern` claims becomes
    /// `<system>:<id>`; anything else is kept.
    pub fn canonical(&self, id: TicketRef) -> TicketRef {
        if id.system().is_some() {
            return id;
        }
        self.systems
            .iter()
            .find(|s| s.pattern.as_ref().is_some_and(|p| p.is_match(id.as_str())))
            .and_then(|s| TicketRef::in_system(&s.cfg.name, id.as_str()).ok())
            .unwrap_or(id)
    }

    /// The system a ticket belongs to (`None`: the local provider's, or a webhook's without a
    /// configured system).
    pub(crate) fn system(&self, id: &TicketRef) -> Option<&System> {
        let name = id.system()?;
        self.systems.iter().find(|s| s.cfg.name == name)
    }

    /// Whether `id` is a configured ticket system's ticket.
    pub fn owns(&self, id: &TicketRef) -> bool {
        self.system(id).is_some()
    }

    /// How long ago the ticket's system last confirmed it (`None`: never, since this start).
    pub fn confirmed_age(&self, id: &TicketRef) -> Option<Duration> {
        self.confirmed
            .lock()
            .expect("confirmed lock")
            .get(id)
            .map(Instant::elapsed)
    }

    /// Whether `id` belongs to a system and jitgate's view of it is older than its
    /// `max_staleness`.
    pub fn is_stale(&self, id: &TicketRef) -> bool {
        self.system(id).is_some_and(|s| {
            self.confirmed_age(id)
                .is_none_or(|age| age > s.cfg.max_staleness.duration())
        })
    }

    /// Whether a live grant on `id` may go on without a fresh answer: its last confirmed view is
    /// younger than the system's `grace`. Tickets of no system always may.
    pub fn within_grace(&self, id: &TicketRef) -> bool {
        match self.system(id) {
            None => true,
            Some(s) => self
                .confirmed_age(id)
                .is_some_and(|age| age <= s.cfg.grace.duration()),
        }
    }

    /// Ask the ticket's system about it now. `Ok(None)`: not a system's ticket.
    pub async fn fetch(&self, id: &TicketRef) -> Result<Option<TicketUpdate>, SystemError> {
        let Some(system) = self.system(id) else {
            return Ok(None);
        };
        let remote = system.client.fetch(id.local_id()).await?;
        self.confirmed
            .lock()
            .expect("confirmed lock")
            .insert(id.clone(), Instant::now());
        Ok(Some(self.update(system, id, &remote)))
    }

    /// Ask system `name` about all of `ids` (its tickets): in searches of many tickets where
    /// the system allows (RT), otherwise `None` and the caller asks one by one.
    pub async fn fetch_many(
        &self,
        name: &str,
        ids: &[TicketRef],
    ) -> Option<Vec<(TicketRef, Result<TicketUpdate, SystemError>)>> {
        let system = self.systems.iter().find(|s| s.cfg.name == name)?;
        let local: Vec<&str> = ids.iter().map(TicketRef::local_id).collect();
        let found = system.client.fetch_many(&local).await?;
        let now = Instant::now();
        Some(match found {
            Ok(found) => {
                let mut confirmed = self.confirmed.lock().expect("confirmed lock");
                ids.iter()
                    .map(|id| match found.get(id.local_id()) {
                        Some(remote) => {
                            confirmed.insert(id.clone(), now);
                            (id.clone(), Ok(self.update(system, id, remote)))
                        }
                        None => (
                            id.clone(),
                            Err(SystemError::NotFound {
                                system: name.to_string(),
                                id: id.local_id().to_string(),
                            }),
                        ),
                    })
                    .collect()
            }
            Err(e) => ids.iter().map(|id| (id.clone(), Err(e.clone()))).collect(),
        })
    }

    /// Requests sent to system `name` since the start.
    pub fn requests_made(&self, name: &str) -> u64 {
        self.systems
            .iter()
            .find(|s| s.cfg.name == name)
            .map_or(0, |s| s.client.calls())
    }

    /// Forget a ticket's confirmation (it no longer has grants or requests).
    pub fn forget(&self, id: &TicketRef) {
        self.confirmed.lock().expect("confirmed lock").remove(id);
    }

    /// What `remote` means for jitgate.
    fn update(&self, system: &System, id: &TicketRef, remote: &Remote) -> TicketUpdate {
        let named = remote.assignee.as_deref().filter(|a| !a.is_empty());
        let assignee = named.and_then(|a| self.user_for(&system.cfg.name, a));
        let assignee_as = match (&assignee, named) {
            (None, Some(a)) => Some(format!("{}:{a}", system.cfg.name)),
            _ => None,
        };
        TicketUpdate {
            id: id.clone(),
            title: remote.title.clone(),
            open: system.cfg.is_open_state(&remote.state),
            assignee,
            assignee_as,
            source: system.cfg.name.clone(),
            answer: Some(format!(
                "state {:?}, assignee {}",
                remote.state,
                remote.assignee.as_deref().unwrap_or("none")
            )),
        }
    }

    /// The jitgate user whose `external_ids` hold `<system>:<identity>`.
    pub fn user_for(&self, system: &str, identity: &str) -> Option<UserName> {
        let want = format!("{system}:{identity}");
        self.users
            .iter()
            .find(|u| u.external_ids.iter().any(|x| x == &want))
            .map(|u| u.name.clone())
    }

    /// Add `text` to ticket `id` as a comment or work note, where its system has `comment` on.
    /// `Ok(false)`: nothing to write to.
    pub async fn comment(&self, id: &TicketRef, text: &str) -> Result<bool, SystemError> {
        match self.system(id) {
            Some(s) if s.cfg.comment => {
                s.client.comment(id.local_id(), text).await?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }
}

/// The `Authorization` header for `s`: RT `token`, Jira Data Center `Bearer`, or Basic for
/// user and password (Jira Cloud's email and API token, ServiceNow, RT).
fn credentials(s: &TicketSystemConfig) -> Result<Option<String>, String> {
    use base64::Engine as _;
    let resolve = |spec: &str, what: &str| -> Result<String, String> {
        if let Some(var) = spec.strip_prefix("env:") {
            std::env::var(var)
                .ok()
                .filter(|v| !v.is_empty())
                .ok_or_else(|| format!("{what}: environment variable {var} is not set"))
        } else if let Some(file) = spec.strip_prefix("file:") {
            std::fs::read_to_string(file)
                .map(|t| t.trim().to_string())
                .map_err(|e| format!("{what}: cannot read {file}: {e}"))
        } else {
            Ok(spec.to_string())
        }
    };
    match (&s.token, &s.user, &s.password) {
        (Some(t), None, None) => {
            let t = resolve(t, "token")?;
            Ok(Some(match s.kind {
                crate::config::TicketSystemKind::Rt => format!("token {t}"),
                _ => format!("Bearer {t}"),
            }))
        }
        (None, Some(u), Some(p)) => {
            let p = resolve(p, "password")?;
            let basic = base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"));
            Ok(Some(format!("Basic {basic}")))
        }
        (None, None, None) => Err("set token, or user and password".into()),
        _ => Err("set either token, or user and password, not both".into()),
    }
}
