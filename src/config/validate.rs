//! `Config::validate()`: everything parsing alone cannot check, reported as `file:line: reason`
//! diagnostics located in the TOML text.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::ops::Range;
use std::path::PathBuf;

use super::{Allow, Config, Impact, TargetConfig, TargetKind, parse_expiry};
use crate::types::TargetName;

/// One problem found in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub file: PathBuf,
    pub line: usize,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.file.display(), self.line, self.message)
    }
}

/// A place in the TOML document: keys and array indexes from the root.
#[derive(Debug, Clone)]
pub enum Seg {
    Key(&'static str),
    Index(usize),
}

/// Maps locations in the document to line numbers.
pub(super) struct Locator<'a> {
    text: &'a str,
    root: Option<toml::Spanned<toml::de::DeTable<'a>>>,
}

impl<'a> Locator<'a> {
    pub(super) fn new(text: &'a str) -> Self {
        Self {
            text,
            root: toml::de::DeTable::parse(text).ok(),
        }
    }

    pub(super) fn line_of_offset(&self, offset: usize) -> usize {
        self.text[..offset.min(self.text.len())]
            .bytes()
            .filter(|&b| b == b'\n')
            .count()
            + 1
    }

    /// Line of the deepest part of `path` that exists in the document.
    pub(super) fn line(&self, path: &[Seg]) -> usize {
        let Some(root) = &self.root else { return 1 };
        let mut span: Range<usize> = 0..0;
        let mut table = Some(root.get_ref());
        let mut value: Option<&toml::Spanned<toml::de::DeValue<'a>>> = None;
        for seg in path {
            let next = match (seg, table, value) {
                (Seg::Key(k), Some(t), _) => t
                    .iter()
                    .find(|(key, _)| key.get_ref().as_ref() == *k)
                    .map(|(_, v)| v),
                (Seg::Key(k), None, Some(v)) => v.get_ref().get(*k),
                (Seg::Index(i), _, Some(v)) => v.get_ref().get(*i),
                _ => None,
            };
            let Some(next) = next else { break };
            span = next.span();
            table = None;
            value = Some(next);
        }
        if span.start == 0 && span.end == 0 {
            return 1;
        }
        self.line_of_offset(span.start)
    }
}

impl Config {
    /// Check everything that parsing alone cannot; returns every problem found.
    pub fn validate(&self, text: &str) -> Vec<Problem> {
        let loc = Locator::new(text);
        let mut problems = Vec::new();
        let mut err = |path: &[Seg], message: String| {
            problems.push(Problem {
                file: self.source.clone(),
                line: loc.line(path),
                message,
            })
        };
        use Seg::{Index as I, Key as K};

        if self.gateway.public_name.trim().is_empty() {
            err(
                &[K("gateway"), K("public_name")],
                "gateway.public_name must name the host clients connect to".into(),
            );
        }
        if let Some(s) = &self.tickets.webhook_secret
            && s.trim().is_empty()
        {
            err(
                &[K("tickets"), K("webhook_secret")],
                "tickets.webhook_secret is empty; use env:VAR, file:PATH or remove the key".into(),
            );
        }

        let mut users = HashSet::new();
        for (i, u) in self.users.iter().enumerate() {
            if !users.insert(u.name.clone()) {
                err(
                    &[K("users"), I(i), K("name")],
                    format!("user {} is defined twice", u.name),
                );
            }
            if u.roles.is_empty() && self.oidc.is_none() {
                err(
                    &[K("users"), I(i), K("roles")],
                    format!("user {} has no roles; give it at least one", u.name),
                );
            }
            if let Some(h) = &u.api_key_sha256
                && (h.len() != 64 || !h.bytes().all(|b| b.is_ascii_hexdigit()))
            {
                err(
                    &[K("users"), I(i), K("api_key_sha256")],
                    format!(
                        "user {}: api_key_sha256 must be 64 hex characters (sha256sum of the jgk_ key)",
                        u.name
                    ),
                );
            }
            if let Some(x) = &u.api_key_expires
                && parse_expiry(x).is_none()
            {
                err(
                    &[K("users"), I(i), K("api_key_expires")],
                    format!(
                        "user {}: api_key_expires {x:?} is not a date; write 2027-01-31 or an RFC 3339 time",
                        u.name
                    ),
                );
            }
            for (j, k) in u.ssh_keys.iter().enumerate() {
                if russh::keys::ssh_key::PublicKey::from_openssh(k).is_err() {
                    err(
                        &[K("users"), I(i), K("ssh_keys"), I(j)],
                        format!(
                            "user {}: ssh_keys[{j}] is not an OpenSSH public key line",
                            u.name
                        ),
                    );
                }
            }
            for (j, x) in u.external_ids.iter().enumerate() {
                if !x.contains(':') {
                    err(
                        &[K("users"), I(i), K("external_ids"), I(j)],
                        format!(
                            "user {}: external id {x:?} must be written system:id, e.g. jira:557058:c9eb",
                            u.name
                        ),
                    );
                }
            }
        }

        let mut targets: HashMap<&TargetName, &TargetConfig> = HashMap::new();
        for (i, t) in self.targets.iter().enumerate() {
            if targets.insert(&t.name, t).is_some() {
                err(
                    &[K("targets"), I(i), K("name")],
                    format!("target {} is defined twice", t.name),
                );
            }
            match t.kind {
                TargetKind::Ssh => {
                    match &t.address {
                        None => err(
                            &[K("targets"), I(i)],
                            format!("ssh target {} needs address = \"host:port\"", t.name),
                        ),
                        Some(a) if crate::net::HostPort::parse(a).is_none() => err(
                            &[K("targets"), I(i), K("address")],
                            format!("target {}: address {a:?} is not host:port", t.name),
                        ),
                        _ => {}
                    }
                    match (&t.host_key, &t.host_ca) {
                        (None, None) => err(
                            &[K("targets"), I(i)],
                            format!(
                                "ssh target {} needs host_key or host_ca: jitgate never trusts a host key on first use",
                                t.name
                            ),
                        ),
                        (Some(_), Some(_)) => err(
                            &[K("targets"), I(i), K("host_ca")],
                            format!("target {}: set host_key or host_ca, not both", t.name),
                        ),
                        (Some(k), None) | (None, Some(k)) => {
                            if russh::keys::ssh_key::PublicKey::from_openssh(k).is_err() {
                                let key = if t.host_key.is_some() {
                                    "host_key"
                                } else {
                                    "host_ca"
                                };
                                err(
                                    &[K("targets"), I(i), K(key)],
                                    format!(
                                        "target {}: {key} is not an OpenSSH public key line (ssh-ed25519 AAAA...)",
                                        t.name
                                    ),
                                );
                            }
                        }
                    }
                    if t.url.is_some() || t.server_ca.is_some() {
                        err(
                            &[K("targets"), I(i), K("url")],
                            format!("ssh target {} cannot have url or server_ca", t.name),
                        );
                    }
                }
                TargetKind::Https => {
                    match &t.url {
                        None => err(
                            &[K("targets"), I(i)],
                            format!("https target {} needs url = \"https://host:port\"", t.name),
                        ),
                        Some(u) if !u.starts_with("https://") || u.len() <= 8 => err(
                            &[K("targets"), I(i), K("url")],
                            format!("target {}: url {u:?} must start with https://", t.name),
                        ),
                        _ => {}
                    }
                    match &t.server_ca {
                        None => err(
                            &[K("targets"), I(i)],
                            format!(
                                "https target {} needs server_ca = PEM file of the CA that signs its certificate",
                                t.name
                            ),
                        ),
                        Some(p) if !p.exists() => err(
                            &[K("targets"), I(i), K("server_ca")],
                            format!(
                                "target {}: server_ca {} does not exist",
                                t.name,
                                p.display()
                            ),
                        ),
                        _ => {}
                    }
                    if t.address.is_some() || t.host_key.is_some() || t.host_ca.is_some() {
                        err(
                            &[K("targets"), I(i), K("address")],
                            format!(
                                "https target {} cannot have address, host_key or host_ca",
                                t.name
                            ),
                        );
                    }
                }
            }
        }

        let mut tasks = HashSet::new();
        for (i, task) in self.tasks.iter().enumerate() {
            if !tasks.insert(&task.name) {
                err(
                    &[K("tasks"), I(i), K("name")],
                    format!("task {} is defined twice", task.name),
                );
            }
            if task.targets.is_empty() {
                err(
                    &[K("tasks"), I(i), K("targets")],
                    format!("task {} names no targets", task.name),
                );
            }
            for (j, sel) in task.targets.iter().enumerate() {
                let matched = match sel.strip_prefix("tag:") {
                    Some(tag) => self.targets.iter().any(|t| t.tags.iter().any(|x| x == tag)),
                    None => self.targets.iter().any(|t| t.name.as_str() == sel),
                };
                if !matched {
                    let what = match sel.strip_prefix("tag:") {
                        Some(tag) => format!("no target has tag {tag:?}"),
                        None => format!("no target is named {sel:?}"),
                    };
                    err(
                        &[K("tasks"), I(i), K("targets"), I(j)],
                        format!("task {}: {what}", task.name),
                    );
                }
            }
            let covered: Vec<&TargetConfig> =
                self.targets.iter().filter(|t| task.covers(t)).collect();
            let has_ssh = covered.iter().any(|t| t.kind == TargetKind::Ssh);
            let has_https = covered.iter().any(|t| t.kind == TargetKind::Https);
            if has_ssh && task.principal.as_deref().is_none_or(str::is_empty) {
                err(
                    &[K("tasks"), I(i)],
                    format!(
                        "task {} covers SSH targets and needs principal = the login name on them",
                        task.name
                    ),
                );
            }
            if has_https && task.http_allow.is_empty() {
                err(
                    &[K("tasks"), I(i)],
                    format!(
                        "task {} covers HTTPS targets and needs http_allow, e.g. [\"GET /*\"]",
                        task.name
                    ),
                );
            }
            for (j, rule) in task.http_allow.iter().enumerate() {
                if let Err(why) = check_http_rule(rule) {
                    err(
                        &[K("tasks"), I(i), K("http_allow"), I(j)],
                        format!("task {}: http_allow {rule:?}: {why}", task.name),
                    );
                }
            }
            if task.approvals == 0 {
                err(
                    &[K("tasks"), I(i), K("approvals")],
                    format!(
                        "task {}: approvals must be at least 1 (break-glass is the only path without approval)",
                        task.name
                    ),
                );
            }
            if task.impact == Impact::High && task.approvals < 2 {
                err(
                    &[K("tasks"), I(i), K("approvals")],
                    format!(
                        "task {}: impact = \"high\" needs approvals = 2 or more",
                        task.name
                    ),
                );
            }
            if has_ssh
                && !task.allow.iter().any(|a| {
                    matches!(
                        a,
                        Allow::Shell | Allow::Exec | Allow::Sftp | Allow::PortForward
                    )
                })
            {
                err(
                    &[K("tasks"), I(i), K("allow")],
                    format!(
                        "task {} allows no SSH channel; add shell, exec, sftp or port-forward to allow",
                        task.name
                    ),
                );
            }
        }

        if let Some(bg) = &self.break_glass {
            if let Some(url) = &bg.alert_webhook
                && !(url.starts_with("http://") || url.starts_with("https://"))
            {
                err(
                    &[K("break_glass"), K("alert_webhook")],
                    format!("break_glass.alert_webhook {url:?} must be an http:// or https:// URL"),
                );
            }
            if bg
                .alert_webhook
                .as_deref()
                .is_some_and(|u| u.starts_with("https://"))
                && bg.alert_ca.as_ref().is_none_or(|p| !p.exists())
            {
                err(
                    &[K("break_glass"), K("alert_webhook")],
                    "break_glass.alert_webhook is https://: set alert_ca to the PEM CA that signs its certificate".into(),
                );
            }
            for (j, t) in bg.tasks.iter().enumerate() {
                if !self.tasks.iter().any(|x| &x.name == t) {
                    err(
                        &[K("break_glass"), K("tasks"), I(j)],
                        format!("break_glass: no task is named {t}"),
                    );
                }
            }
        }
        if let Some(p) = &self.policy {
            for (j, f) in p.files.iter().enumerate() {
                if !f.exists() {
                    err(
                        &[K("policy"), K("files"), I(j)],
                        format!("policy file {} does not exist", f.display()),
                    );
                }
            }
        }
        self.validate_identity(&loc, &mut problems);
        self.validate_ticket_systems(&loc, &mut problems);
        self.validate_cluster(&loc, &mut problems);
        problems
    }
}

/// Check one `METHOD /path` allow-list rule.
pub fn check_http_rule(rule: &str) -> Result<(), &'static str> {
    let mut parts = rule.split_whitespace();
    let (Some(method), Some(path), None) = (parts.next(), parts.next(), parts.next()) else {
        return Err("write it as METHOD /path, e.g. GET /users/*");
    };
    if method != "*" && !method.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err("the method must be upper case (GET, POST, ...) or *");
    }
    if !path.starts_with('/') {
        return Err("the path must start with /");
    }
    Ok(())
}
