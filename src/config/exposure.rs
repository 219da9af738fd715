//! What the gateway would expose, checked before it serves: the published example API keys on
//! a listener other hosts can reach, a metrics listener without a token; and the secrets it
//! reads (`env:`, `file:` or literal).

use std::net::SocketAddr;

use super::Config;
use crate::types::UserName;

/// SHA-256 of the example API keys published in the README and `config/jitgate.toml`
/// (`jgk_example_<user>_do_not_use_in_production`); `serve` and `check` warn while any is used.
const EXAMPLE_KEY_SHA256: &[&str] = &[
    "9e9d8acbcc4f30afc7e9211f1afe80f749f5a94990a793c5d8f7b075399249c2",
    "4cba44335f99817b669cb77620472f685f1b2387195ecaf6962e93340115dba4",
    "abe292eea3888389302fc134d999b754981ec017757053b0ce0331b3ed6c048e",
    "893066b6d5ea9bc575b14623335a4adc1f9270ff28a07d8a3152b97e3f90c22d",
    "517a56744e764f45577ddf41f26c07d378b436f6fcc8dce9b39c4a57a95d448c",
    "73fb985ff6332521e4917f1cdc0056dfe9ada57b70147659388bc699da379874",
];

impl Config {
    /// Users still configured with one of the published example API keys.
    pub fn users_with_example_keys(&self) -> Vec<&UserName> {
        self.users
            .iter()
            .filter(|u| {
                u.api_key_sha256
                    .as_deref()
                    .is_some_and(|h| EXAMPLE_KEY_SHA256.contains(&h.to_ascii_lowercase().as_str()))
            })
            .map(|u| &u.name)
            .collect()
    }

    /// Every listener the gateway opens, with the key that configures it.
    pub fn listeners(&self) -> Vec<(&'static str, SocketAddr)> {
        vec![
            ("gateway.api_listen", self.gateway.api_listen),
            ("gateway.ssh_listen", self.gateway.ssh_listen),
            ("gateway.https_listen", self.gateway.https_listen),
            ("gateway.metrics_listen", self.gateway.metrics_listen),
        ]
    }

    /// Why the gateway must not serve this configuration: users still have the published
    /// example API keys while a listener is reachable from other hosts (anyone there would be
    /// those users, admin included). On loopback only, the example keys are allowed.
    pub fn example_keys_exposed(&self) -> Option<String> {
        let users = self.users_with_example_keys();
        if users.is_empty() {
            return None;
        }
        let open: Vec<String> = self
            .listeners()
            .into_iter()
            .filter(|(_, addr)| !addr.ip().is_loopback())
            .map(|(key, addr)| format!("{key} = \"{addr}\""))
            .collect();
        if open.is_empty() {
            return None;
        }
        let names: Vec<&str> = users.iter().map(|u| u.as_str()).collect();
        Some(format!(
            "{}: users {} have the published example API keys and {} can be reached from other hosts; \
             replace each key (`jitgate api-key new`, then set the user's api_key_sha256) or listen on loopback (127.0.0.1) only",
            self.source.display(),
            names.join(", "),
            open.join(", ")
        ))
    }

    /// The webhook secret, resolved from `env:` or `file:` when configured.
    pub fn webhook_secret(&self) -> Result<Option<crate::types::Secret>, String> {
        resolve_secret(self.tickets.webhook_secret.as_deref(), "webhook secret")
    }

    /// The metrics bearer token, if one is configured and available.
    pub fn metrics_token(&self) -> Result<Option<crate::types::Secret>, String> {
        resolve_secret(self.gateway.metrics_token.as_deref(), "metrics token")
    }

    /// Why the metrics listener must not serve: it can be reached from other hosts and no
    /// token guards it.
    pub fn metrics_exposed(&self) -> Option<String> {
        let addr = self.gateway.metrics_listen;
        if addr.ip().is_loopback() || matches!(self.metrics_token(), Ok(Some(_))) {
            return None;
        }
        Some(format!(
            "{}: gateway.metrics_listen = \"{addr}\" can be reached from other hosts but no gateway.metrics_token is set (or its variable is empty); set one, or listen on loopback",
            self.source.display()
        ))
    }
}

/// A secret given as `env:VAR`, `file:PATH` or literally; `None` when not configured or the
/// variable is unset or empty.
pub(super) fn resolve_secret(
    spec: Option<&str>,
    what: &str,
) -> Result<Option<crate::types::Secret>, String> {
    let Some(spec) = spec else {
        return Ok(None);
    };
    let value = if let Some(var) = spec.strip_prefix("env:") {
        match std::env::var(var) {
            Ok(v) if !v.is_empty() => v,
            _ => return Ok(None),
        }
    } else if let Some(file) = spec.strip_prefix("file:") {
        std::fs::read_to_string(file)
            .map_err(|e| format!("cannot read {what} file {file}: {e}"))?
            .trim()
            .to_string()
    } else {
        spec.to_string()
    };
    if value.len() < 16 {
        return Err(format!(
            "the {what} is shorter than 16 characters; use a long random secret"
        ));
    }
    Ok(Some(crate::types::Secret::new(value)))
}
