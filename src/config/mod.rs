//! The TOML configuration: model (`deny_unknown_fields` everywhere), loading, and `validate()`
//! with `file:line: reason` diagnostics.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::types::{TargetName, TaskName, Ttl, UserName};

mod cluster;
mod exposure;
mod oidc;
mod target;
mod ticket_systems;
mod validate;

use exposure::resolve_secret;

pub use oidc::{ConsoleConfig, OidcConfig, RoleMapping, TokenAuth, host_for_url};

pub use cluster::{ClusterConfig, StoreConfig, is_postgres};
pub use target::{HostTrust, TargetSpec};
pub use ticket_systems::{TicketSystemConfig, TicketSystemKind};
use validate::Locator;
pub use validate::{Problem, Seg, check_http_rule};

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub gateway: GatewayConfig,
    #[serde(default)]
    pub store: StoreConfig,
    /// Several nodes on one PostgreSQL database.
    #[serde(default)]
    pub cluster: ClusterConfig,
    #[serde(default)]
    pub tickets: TicketsConfig,
    /// Jira, ServiceNow and Request Tracker instances whose tickets are checked live.
    #[serde(default)]
    pub ticket_systems: Vec<TicketSystemConfig>,
    #[serde(default)]
    pub requests: RequestsConfig,
    pub policy: Option<PolicyConfig>,
    pub break_glass: Option<BreakGlassConfig>,
    /// People sign in through this OpenID provider.
    pub oidc: Option<OidcConfig>,
    #[serde(default)]
    pub console: ConsoleConfig,
    #[serde(default)]
    pub users: Vec<UserConfig>,
    #[serde(default)]
    pub targets: Vec<TargetConfig>,
    #[serde(default)]
    pub tasks: Vec<TaskConfig>,
    /// Where the file was read from (set by [`Config::load`]).
    #[serde(skip)]
    pub source: PathBuf,
}

/// `[gateway]`: listeners and directories.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    /// Name clients use to reach the gateway; goes into the server certificate's SANs.
    pub public_name: String,
    #[serde(default = "default_api_listen")]
    pub api_listen: SocketAddr,
    #[serde(default = "default_ssh_listen")]
    pub ssh_listen: SocketAddr,
    #[serde(default = "default_https_listen")]
    pub https_listen: SocketAddr,
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    #[serde(default = "default_certs_dir")]
    pub certs_dir: PathBuf,
    #[serde(default = "default_recordings_dir")]
    pub recordings_dir: PathBuf,
    #[serde(default = "default_expiry_warning")]
    pub expiry_warning: Ttl,
    /// Write terminal recordings (asciicast). `false` keeps only `session.json` and the audit
    /// trail — for benchmarks, or where law forbids recording; break-glass sessions are always
    /// recorded. `serve` warns when it is off.
    #[serde(default = "yes")]
    pub record_terminal: bool,
    /// Failed admissions per source address per minute answered at once; each further
    /// failure in that minute is answered after a delay. Valid tokens are never refused for it.
    #[serde(default = "default_admission_failures")]
    pub admission_failures_per_minute: u32,
    /// Time an SSH client has, from its identification line, to authenticate (like sshd's
    /// `LoginGraceTime`); then the connection is closed.
    #[serde(default = "default_login_timeout")]
    pub login_timeout: Ttl,
    /// How long a target may stay silent: an HTTPS target must begin its answer within it
    /// (else 504), and an SSH target that answers none of three keepalive probes, sent every
    /// third of it, is cut.
    #[serde(default = "default_target_timeout")]
    pub target_timeout: Ttl,
    /// Plain-HTTP listener for Prometheus (`GET /metrics`); loopback by default.
    #[serde(default = "default_metrics_listen")]
    pub metrics_listen: SocketAddr,
    /// Bearer token that scrapers send (`env:VAR`, `file:PATH` or the literal, at least 16
    /// characters). Required when `metrics_listen` is not on loopback; when set, both
    /// `/metrics` endpoints demand it.
    #[serde(default)]
    pub metrics_token: Option<String>,
    /// Load balancers that pass client addresses with the PROXY protocol (v1 or v2) to the SSH
    /// and HTTPS gateways: a connection from these address blocks must begin with a PROXY
    /// header; any other is a direct client, and a header from it is refused. Empty: off.
    #[serde(default, deserialize_with = "crate::net::proxy::deserialize_balancers")]
    pub proxy_protocol_from: Vec<crate::net::Cidr>,
}

fn default_api_listen() -> SocketAddr {
    "127.0.0.1:8440".parse().expect("valid literal")
}
fn default_ssh_listen() -> SocketAddr {
    "0.0.0.0:2222".parse().expect("valid literal")
}
fn default_https_listen() -> SocketAddr {
    "0.0.0.0:8443".parse().expect("valid literal")
}
fn default_data_dir() -> PathBuf {
    "data".into()
}
fn default_certs_dir() -> PathBuf {
    "certs".into()
}
fn default_recordings_dir() -> PathBuf {
    "recordings".into()
}
fn default_expiry_warning() -> Ttl {
    Ttl::from_secs(60)
}
fn default_admission_failures() -> u32 {
    10
}
fn default_login_timeout() -> Ttl {
    Ttl::from_secs(60)
}
fn default_target_timeout() -> Ttl {
    Ttl::from_secs(60)
}
fn default_metrics_listen() -> SocketAddr {
    "127.0.0.1:9464".parse().expect("valid literal")
}

/// `[tickets]`: ticket rules and webhook ingestion.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TicketsConfig {
    /// Requests need a ticket assigned to the requester.
    #[serde(default = "yes")]
    pub require_assignee: bool,
    /// Shared secret for webhook HMACs: `env:VAR`, `file:PATH` or the literal secret.
    pub webhook_secret: Option<String>,
    /// How far a webhook's timestamp may be from now.
    #[serde(default = "default_webhook_window")]
    pub webhook_window: Ttl,
}

fn yes() -> bool {
    true
}
fn default_webhook_window() -> Ttl {
    Ttl::from_secs(300)
}

impl Default for TicketsConfig {
    fn default() -> Self {
        Self {
            require_assignee: true,
            webhook_secret: None,
            webhook_window: default_webhook_window(),
        }
    }
}

/// `[requests]`: request lifecycle.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestsConfig {
    /// A pending request not decided within this time expires.
    #[serde(default = "default_pending_ttl")]
    pub pending_ttl: Ttl,
}

fn default_pending_ttl() -> Ttl {
    Ttl::from_secs(3600)
}

impl Default for RequestsConfig {
    fn default() -> Self {
        Self {
            pending_ttl: default_pending_ttl(),
        }
    }
}

/// `[policy]`: Cedar policy files that must also permit each action.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    pub files: Vec<PathBuf>,
}

/// `[break_glass]`: the emergency path.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreakGlassConfig {
    pub tasks: Vec<TaskName>,
    #[serde(default = "default_break_glass_ttl")]
    pub max_ttl: Ttl,
    /// URL that receives a JSON POST for every break-glass use (`http://` or `https://`).
    pub alert_webhook: Option<String>,
    /// PEM CA that signs the alert webhook's certificate (for `https://` URLs).
    pub alert_ca: Option<PathBuf>,
    /// Also refuse normal requests while the user has an unreviewed break-glass use.
    #[serde(default)]
    pub block_requests_until_reviewed: bool,
}

fn default_break_glass_ttl() -> Ttl {
    Ttl::from_secs(900)
}

/// What a user may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    Technician,
    Approver,
    Reviewer,
    Admin,
    BreakGlass,
}

impl Role {
    /// The role's name as written in the configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Technician => "technician",
            Role::Approver => "approver",
            Role::Reviewer => "reviewer",
            Role::Admin => "admin",
            Role::BreakGlass => "break-glass",
        }
    }
}

/// `[[users]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    pub name: UserName,
    #[serde(default)]
    pub roles: Vec<Role>,
    #[serde(default)]
    pub groups: Vec<String>,
    pub vendor: Option<String>,
    /// Hex SHA-256 of the user's `jgk_` API key.
    pub api_key_sha256: Option<String>,
    /// When the API key stops working: `YYYY-MM-DD` (start of that day, UTC) or RFC 3339.
    pub api_key_expires: Option<String>,
    #[serde(default)]
    pub ssh_keys: Vec<String>,
    /// Identities in ticket systems, `system:id` (e.g. `jira:557058:c9eb`, `servicenow:alice`).
    #[serde(default)]
    pub external_ids: Vec<String>,
}

/// Parse `YYYY-MM-DD` (midnight UTC) or an RFC 3339 time to Unix seconds.
pub fn parse_expiry(s: &str) -> Option<i64> {
    use time::format_description::well_known::Rfc3339;
    if let Ok(t) = time::OffsetDateTime::parse(s, &Rfc3339) {
        return Some(t.unix_timestamp());
    }
    let fmt = time::macros::format_description!("[year]-[month]-[day]");
    time::Date::parse(s, &fmt)
        .ok()
        .map(|d| d.midnight().assume_utc().unix_timestamp())
}

impl UserConfig {
    /// A user with a name and nothing else (a person known only from the identity provider).
    pub fn named(name: UserName) -> Self {
        Self {
            name,
            roles: Vec::new(),
            groups: Vec::new(),
            vendor: None,
            api_key_sha256: None,
            api_key_expires: None,
            ssh_keys: Vec::new(),
            external_ids: Vec::new(),
        }
    }

    /// When the API key expires (Unix seconds), if it does.
    pub fn api_key_expiry(&self) -> Option<i64> {
        self.api_key_expires.as_deref().and_then(parse_expiry)
    }

    /// Whether the user holds `role`.
    pub fn has_role(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }
}

/// The protocol a target speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TargetKind {
    Ssh,
    Https,
}

impl TargetKind {
    /// Lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            TargetKind::Ssh => "ssh",
            TargetKind::Https => "https",
        }
    }
}

impl fmt::Display for TargetKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `[[targets]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetConfig {
    pub name: TargetName,
    pub kind: TargetKind,
    /// `host:port` of an SSH target.
    pub address: Option<String>,
    /// Pinned host key of an SSH target (OpenSSH public key line).
    pub host_key: Option<String>,
    /// CA that signs the SSH target's host certificate.
    pub host_ca: Option<String>,
    /// Base URL of an HTTPS target.
    pub url: Option<String>,
    /// PEM file with the CA that signs the HTTPS target's server certificate.
    pub server_ca: Option<PathBuf>,
    #[serde(default)]
    pub tags: Vec<String>,
}

/// What a session under a task may open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Allow {
    Pty,
    Shell,
    Exec,
    Sftp,
    PortForward,
    Websocket,
}

/// How much damage a task can do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Impact {
    #[default]
    Normal,
    High,
}

/// `[[tasks]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskConfig {
    pub name: TaskName,
    #[serde(default)]
    pub description: String,
    /// Target names or `tag:NAME` selectors.
    pub targets: Vec<String>,
    /// Login name on SSH targets.
    pub principal: Option<String>,
    pub force_command: Option<String>,
    /// `source-address` critical option for the per-session certificate.
    pub source_address: Option<String>,
    #[serde(default)]
    pub allow: Vec<Allow>,
    /// `METHOD /path` patterns (`*` matches one segment, a trailing `/*` any rest).
    #[serde(default)]
    pub http_allow: Vec<String>,
    pub max_ttl: Ttl,
    #[serde(default = "one")]
    pub approvals: u32,
    #[serde(default)]
    pub impact: Impact,
    #[serde(default = "yes")]
    pub record_input: bool,
    /// Whether users with a `vendor` attribute may request this task (policy may narrow further).
    #[serde(default)]
    pub vendor_allowed: bool,
}

fn one() -> u32 {
    1
}

impl TaskConfig {
    /// Approvals this task needs, with the built-in floor for high impact.
    pub fn required_approvals(&self) -> u32 {
        match self.impact {
            Impact::High => self.approvals.max(2),
            Impact::Normal => self.approvals.max(1),
        }
    }

    /// Whether the task covers `target`.
    pub fn covers(&self, target: &TargetConfig) -> bool {
        self.targets
            .iter()
            .any(|sel| match sel.strip_prefix("tag:") {
                Some(tag) => target.tags.iter().any(|t| t == tag),
                None => sel == target.name.as_str(),
            })
    }
}

/// Why a configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "cannot read {path}: {source}; pass --config PATH or create it (see config/jitgate.toml)"
    )]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}", .0.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<Problem>),
}

impl Config {
    /// Read, parse and validate the configuration at `path`; paths inside it become absolute.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_text(&text, path)
    }

    /// Parse and validate configuration text that was read from `path`.
    pub fn from_text(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let mut cfg: Config = toml::from_str(text).map_err(|e| {
            let line = e
                .span()
                .map(|s| Locator::new(text).line_of_offset(s.start))
                .unwrap_or(1);
            ConfigError::Invalid(vec![Problem {
                file: path.to_path_buf(),
                line,
                message: e.message().trim().to_string(),
            }])
        })?;
        cfg.source = path.to_path_buf();
        let base = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        cfg.resolve_paths(&base);
        let problems = cfg.validate(text);
        if problems.is_empty() {
            Ok(cfg)
        } else {
            Err(ConfigError::Invalid(problems))
        }
    }

    fn resolve_paths(&mut self, base: &Path) {
        let abs = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = normalize(&base.join(&*p));
            }
        };
        abs(&mut self.gateway.data_dir);
        abs(&mut self.gateway.certs_dir);
        abs(&mut self.gateway.recordings_dir);
        if let Some(rest) = self.store.url.strip_prefix("sqlite://")
            && !rest.starts_with('/')
            && !rest.starts_with(":memory:")
        {
            self.store.url = format!("sqlite://{}", normalize(&base.join(rest)).display());
        }
        if let Some(p) = &mut self.policy {
            p.files.iter_mut().for_each(abs);
        }
        if let Some(bg) = &mut self.break_glass
            && let Some(ca) = &mut bg.alert_ca
        {
            abs(ca);
        }
        if let Some(ca) = self.oidc.as_mut().and_then(|o| o.ca.as_mut()) {
            abs(ca);
        }
        if let Some(ca) = &mut self.store.ca {
            abs(ca);
        }
        for t in &mut self.targets {
            if let Some(ca) = &mut t.server_ca {
                abs(ca);
            }
        }
        let oidc_secret = self.oidc.as_mut().map(|o| &mut o.client_secret);
        if let Some(spec) = oidc_secret
            && let Some(rest) = spec.strip_prefix("file:")
            && !rest.starts_with('/')
        {
            *spec = format!("file:{}", base.join(rest).display());
        }
        for spec in [
            &mut self.tickets.webhook_secret,
            &mut self.gateway.metrics_token,
            &mut self.store.password,
        ] {
            if let Some(s) = spec.as_deref()
                && let Some(rest) = s.strip_prefix("file:")
                && !rest.starts_with('/')
            {
                *spec = Some(format!("file:{}", base.join(rest).display()));
            }
        }
    }

    /// The user called `name`.
    pub fn user(&self, name: &UserName) -> Option<&UserConfig> {
        self.users.iter().find(|u| &u.name == name)
    }

    /// The target called `name`.
    pub fn target(&self, name: &TargetName) -> Option<&TargetConfig> {
        self.targets.iter().find(|t| &t.name == name)
    }

    /// The task called `name`.
    pub fn task(&self, name: &TaskName) -> Option<&TaskConfig> {
        self.tasks.iter().find(|t| &t.name == name)
    }

    /// Path of the SQLite database named by `store.url`.
    pub fn sqlite_path(&self) -> Option<PathBuf> {
        self.store.url.strip_prefix("sqlite://").map(PathBuf::from)
    }
}

/// Remove `.` and `name/..` pairs without touching the file system (`config/../certs` → `certs`).
fn normalize(p: &Path) -> PathBuf {
    use std::path::Component;
    let mut out: Vec<Component> = Vec::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir if matches!(out.last(), Some(Component::Normal(_))) => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    if out.is_empty() {
        PathBuf::from(".")
    } else {
        out.iter().collect()
    }
}

#[cfg(test)]
mod tests;
