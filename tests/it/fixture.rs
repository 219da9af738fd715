//! What a test gateway is made of: users with known API keys, targets, tasks, the Cedar policy
//! choice and the configuration file text.

use std::path::PathBuf;

/// A valid, pinned SSH host key for the test targets (nothing dials them in these tests).
pub const HOST_KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPLS/fN5CcMLkyFXgymTgElYtx/VQk33mhW2ohI88KzN";

/// Environment variable the configuration names for the webhook secret.
pub const WEBHOOK_ENV: &str = "JITGATE_IT_WEBHOOK_SECRET";

/// Users every test gateway knows, with their `[[users]]` body (minus name and key).
pub const USERS: &[(&str, &str)] = &[
    (
        "alice",
        "roles = [\"technician\"]\ngroups = [\"helpdesk\"]\nexternal_ids = [\"jira:557058:c9ebf848\", \"servicenow:alice.smith\"]",
    ),
    (
        "dave",
        "roles = [\"technician\"]\ngroups = [\"helpdesk\"]\nexternal_ids = [\"servicenow:dave.jones\"]",
    ),
    ("vic", "roles = [\"technician\"]\nvendor = \"acme\""),
    (
        "sam",
        "roles = [\"technician\", \"approver\"]\ngroups = [\"helpdesk\"]",
    ),
    (
        "bob",
        "roles = [\"approver\"]\ngroups = [\"helpdesk-leads\", \"vendor-sponsors\"]",
    ),
    ("carol", "roles = [\"approver\"]\ngroups = [\"security\"]"),
    ("rita", "roles = [\"reviewer\"]\ngroups = [\"security\"]"),
    ("admin", "roles = [\"admin\"]"),
    (
        "eve",
        "roles = [\"technician\"]\napi_key_expires = \"2020-01-01\"",
    ),
];

/// The API key of a test user.
pub fn api_key(user: &str) -> String {
    format!("jgk_it_{user}_k3y_0123456789abcdefghijklmnop")
}

/// Which Cedar policy the gateway runs with.
#[derive(Debug, Clone)]
pub enum Policy {
    /// No `[policy]` section: the built-in rules decide alone.
    None,
    /// A policy file that permits every action.
    PermitAll,
    /// A copy of the example `config/policy.cedar`.
    Example,
}

/// What a test gateway looks like.
#[derive(Debug, Clone)]
pub struct Opts {
    pub policy: Policy,
    /// Passed to `serve` in [`WEBHOOK_ENV`]; `None` leaves webhooks unconfigured.
    pub webhook_secret: Option<String>,
    pub pending_ttl: String,
    pub require_assignee: bool,
    /// TOML appended to the configuration (targets, tasks, users of one test).
    pub extra: String,
    /// Keys added to `[gateway]` (one per line).
    pub gateway: String,
    /// A fixed API port (for a redirect URI registered at the identity provider); 0 = any.
    pub api_port: u16,
    /// More `external_ids` for the fixed users: (user, `system:identity`).
    pub external_ids: Vec<(String, String)>,
    /// The `[store]` section's body (default: SQLite in the data directory).
    pub store: String,
    /// Environment variables for `serve` and the binary's other runs.
    pub env: Vec<(String, String)>,
}

impl Default for Opts {
    fn default() -> Self {
        Self {
            policy: Policy::Example,
            webhook_secret: None,
            pending_ttl: "1h".into(),
            require_assignee: true,
            extra: String::new(),
            gateway: String::new(),
            api_port: 0,
            store: "url = \"sqlite://data/jitgate.db\"\n".into(),
            env: Vec::new(),
            external_ids: Vec::new(),
        }
    }
}

impl Opts {
    pub fn policy(mut self, p: Policy) -> Self {
        self.policy = p;
        self
    }

    pub fn webhook_secret(mut self, s: &str) -> Self {
        self.webhook_secret = Some(s.into());
        self
    }

    pub fn pending_ttl(mut self, t: &str) -> Self {
        self.pending_ttl = t.into();
        self
    }

    /// Add `toml` (`key = value` lines) to the `[gateway]` section.
    pub fn gateway(mut self, toml: &str) -> Self {
        self.gateway.push_str(toml);
        self.gateway.push('\n');
        self
    }

    /// Listen for the API on this port.
    pub fn api_port(mut self, port: u16) -> Self {
        self.api_port = port;
        self
    }

    /// Give `user` the ticket-system identity `id` (`rt:alice-3`).
    pub fn external_id(mut self, user: &str, id: &str) -> Self {
        self.external_ids.push((user.into(), id.into()));
        self
    }

    /// The `[store]` section's body.
    pub fn store(mut self, toml: &str) -> Self {
        self.store = toml.into();
        self
    }

    /// Set `key` to `value` in the environment of `serve` and the binary's other runs.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Append `toml` to the configuration.
    pub fn extra(mut self, toml: &str) -> Self {
        self.extra.push('\n');
        self.extra.push_str(toml);
        self
    }
}

/// The permit-everything policy.
pub const PERMIT_ALL: &str = "permit (principal, action, resource);\n";

/// The configuration file text for `opts`.
pub fn config_text(opts: &Opts) -> String {
    let mut s = String::new();
    s.push_str(
        &r#"# written by the jitgate integration tests
[gateway]
public_name = "localhost"
api_listen = "127.0.0.1:{api_port}"
ssh_listen = "127.0.0.1:0"
https_listen = "127.0.0.1:0"
metrics_listen = "127.0.0.1:0"
data_dir = "data"
certs_dir = "certs"
recordings_dir = "recordings"
expiry_warning = "60s"
"#
        .replace("{api_port}", &opts.api_port.to_string()),
    );
    s.push_str(&opts.gateway);
    s.push_str(&format!("\n[store]\n{}\n", opts.store));
    s.push_str(&format!(
        "[tickets]\nrequire_assignee = {}\nwebhook_secret = \"env:{WEBHOOK_ENV}\"\nwebhook_window = \"5m\"\n\n",
        opts.require_assignee
    ));
    s.push_str(&format!(
        "[requests]\npending_ttl = \"{}\"\n\n",
        opts.pending_ttl
    ));
    if !matches!(opts.policy, Policy::None) {
        s.push_str("[policy]\nfiles = [\"policy.cedar\"]\n\n");
    }
    for (name, body) in USERS {
        let mut body = body.to_string();
        for (_, id) in opts.external_ids.iter().filter(|(u, _)| u == name) {
            match body.find("external_ids = [") {
                Some(i) => body.insert_str(i + "external_ids = [".len(), &format!("{id:?}, ")),
                None => body.push_str(&format!("\nexternal_ids = [{id:?}]")),
            }
        }
        let hash = jitgate::crypto::sha256_hex(api_key(name).as_bytes());
        s.push_str(&format!(
            "[[users]]\nname = \"{name}\"\n{body}\napi_key_sha256 = \"{hash}\"\n\n"
        ));
    }
    s.push_str(&format!(
        r#"[[targets]]
name = "dc-01"
kind = "ssh"
address = "127.0.0.1:1"
host_key = "{HOST_KEY}"
tags = ["domain-controller"]

[[targets]]
name = "web-01"
kind = "ssh"
address = "127.0.0.1:1"
host_key = "{HOST_KEY}"
tags = ["web"]

[[targets]]
name = "idp-admin"
kind = "https"
url = "https://127.0.0.1:1"
server_ca = "targets/idp-ca.pem"

[[tasks]]
name = "reset-credential"
description = "Reset a user's password on a domain controller"
targets = ["tag:domain-controller"]
principal = "helpdesk-reset"
allow = ["pty", "shell", "exec"]
max_ttl = "30m"
approvals = 1
impact = "normal"

[[tasks]]
name = "endpoint-remediation"
description = "Fix a broken endpoint agent; vendors may do this"
targets = ["dc-01", "web-01"]
principal = "remediate"
allow = ["pty", "shell", "exec", "sftp"]
max_ttl = "1h"
approvals = 2
impact = "high"
vendor_allowed = true

[[tasks]]
name = "unlock-account"
description = "Unlock an account in the identity provider's admin console"
targets = ["idp-admin"]
allow = ["websocket"]
http_allow = ["GET /*", "POST /users/*/unlock"]
max_ttl = "15m"
"#
    ));
    s.push_str(&opts.extra);
    s
}

/// The repository's root (where `config/` lives).
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}
