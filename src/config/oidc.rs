//! `[oidc]` (people sign in with the company's OpenID provider) and `[console]` (how long a
//! browser sign-in lasts), and their checks.

use std::path::PathBuf;

use serde::Deserialize;

use super::validate::{Locator, Problem, Seg};
use super::{Config, Role, UserConfig, resolve_secret};
use crate::types::{Secret, Ttl, UserName};

/// `[oidc]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcConfig {
    /// The provider's issuer URL (`https://...`); its metadata is read from
    /// `{issuer}/.well-known/openid-configuration`.
    pub issuer: String,
    pub client_id: String,
    /// The literal, `env:VAR` or `file:PATH`.
    pub client_secret: String,
    /// PEM certificates to trust for the issuer instead of the system's roots.
    pub ca: Option<PathBuf>,
    #[serde(default = "default_scopes")]
    pub scopes: Vec<String>,
    #[serde(default = "default_username_claim")]
    pub username_claim: String,
    #[serde(default = "default_groups_claim")]
    pub groups_claim: String,
    /// Where the provider sends the browser back; default
    /// `https://{gateway.public_name}:{API port}/auth/callback`.
    pub redirect_url: Option<String>,
    /// How recent a sign-in must be to approve a high-impact request, break glass or sign off a
    /// break-glass review.
    #[serde(default = "default_step_up")]
    pub step_up_max_age: Ttl,
    /// Lifetime of the credential `jitgate login` gives the CLI.
    #[serde(default = "default_cli_ttl")]
    pub cli_credential_ttl: Ttl,
    /// How jitgate authenticates at the token endpoint; default `client_secret_basic`, or
    /// `client_secret_post` when that is the only one the provider lists.
    pub token_endpoint_auth: Option<TokenAuth>,
    #[serde(default)]
    pub role_mappings: Vec<RoleMapping>,
}

/// Client authentication at the token endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenAuth {
    /// HTTP Basic with the form-encoded id and secret.
    ClientSecretBasic,
    /// `client_id` and `client_secret` in the form body.
    ClientSecretPost,
}

/// `[[oidc.role_mappings]]`: members of `group` get `roles` (and `vendor`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleMapping {
    pub group: String,
    pub roles: Vec<Role>,
    pub vendor: Option<String>,
}

/// `[console]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleConfig {
    /// A browser sign-in unused for this long ends.
    #[serde(default = "default_idle")]
    pub idle_timeout: Ttl,
    /// A browser sign-in ends this long after it began, used or not.
    #[serde(default = "default_absolute")]
    pub absolute_timeout: Ttl,
}

impl Default for ConsoleConfig {
    fn default() -> Self {
        Self {
            idle_timeout: default_idle(),
            absolute_timeout: default_absolute(),
        }
    }
}

fn default_scopes() -> Vec<String> {
    ["openid", "profile", "email", "groups"]
        .map(String::from)
        .to_vec()
}
fn default_username_claim() -> String {
    "preferred_username".into()
}
fn default_groups_claim() -> String {
    "groups".into()
}
fn default_step_up() -> Ttl {
    Ttl::from_secs(10 * 60)
}
fn default_cli_ttl() -> Ttl {
    Ttl::from_secs(12 * 3600)
}
fn default_idle() -> Ttl {
    Ttl::from_secs(30 * 60)
}
fn default_absolute() -> Ttl {
    Ttl::from_secs(12 * 3600)
}

impl OidcConfig {
    /// The client secret, resolved from `env:` or `file:`.
    pub fn secret(&self) -> Result<Secret, String> {
        resolve_secret(Some(&self.client_secret), "OIDC client secret")?.ok_or_else(|| {
            format!(
                "the OIDC client secret {} is not set; export it or write it in [oidc] client_secret",
                self.client_secret
            )
        })
    }

    /// Roles, groups and vendor that `groups` (as the provider names them) map to.
    pub fn map_groups(&self, groups: &[String]) -> (Vec<Role>, Vec<String>, Option<String>) {
        let mut roles: Vec<Role> = Vec::new();
        let mut mapped: Vec<String> = Vec::new();
        let mut vendor = None;
        for m in &self.role_mappings {
            if !groups.iter().any(|g| g == &m.group) {
                continue;
            }
            for r in &m.roles {
                if !roles.contains(r) {
                    roles.push(*r);
                }
            }
            if !mapped.contains(&m.group) {
                mapped.push(m.group.clone());
            }
            if vendor.is_none() {
                vendor.clone_from(&m.vendor);
            }
        }
        (roles, mapped, vendor)
    }
}

impl Config {
    /// The redirect URI registered at the provider.
    pub fn oidc_redirect_url(&self) -> Option<String> {
        let o = self.oidc.as_ref()?;
        Some(o.redirect_url.clone().unwrap_or_else(|| {
            format!(
                "https://{}:{}/auth/callback",
                host_for_url(&self.gateway.public_name),
                self.gateway.api_listen.port()
            )
        }))
    }

    /// Who `name` is now: their `[[users]]` entry, combined (when they signed in through the
    /// provider with `idp_groups`) with the roles, groups and vendor the role mappings give.
    /// `None` when that leaves them without a role.
    pub fn effective_user(
        &self,
        name: &UserName,
        idp_groups: Option<&[String]>,
    ) -> Option<UserConfig> {
        let entry = self.user(name);
        let (Some(groups), Some(o)) = (idp_groups, &self.oidc) else {
            return entry.filter(|u| !u.roles.is_empty()).cloned();
        };
        let (roles, _, vendor) = o.map_groups(groups);
        let mut u = entry
            .cloned()
            .unwrap_or_else(|| UserConfig::named(name.clone()));
        for r in roles {
            if !u.roles.contains(&r) {
                u.roles.push(r);
            }
        }
        for g in groups {
            if !u.groups.contains(g) {
                u.groups.push(g.clone());
            }
        }
        if u.vendor.is_none() {
            u.vendor = vendor;
        }
        (!u.roles.is_empty()).then_some(u)
    }

    /// Problems with `[oidc]` and `[console]`, and the rule that makes nobody able to sign in.
    pub(super) fn validate_identity(&self, loc: &Locator, problems: &mut Vec<Problem>) {
        use Seg::{Index as I, Key as K};
        let mut err = |path: &[Seg], message: String| {
            problems.push(Problem {
                file: self.source.clone(),
                line: loc.line(path),
                message,
            })
        };
        if self.console.idle_timeout.as_secs() == 0
            || self.console.idle_timeout.as_secs() > self.console.absolute_timeout.as_secs()
        {
            err(
                &[K("console"), K("idle_timeout")],
                "console.idle_timeout must be above zero and at most console.absolute_timeout"
                    .into(),
            );
        }
        let Some(o) = &self.oidc else {
            return;
        };
        if let Err(why) = url_host(&o.issuer) {
            err(&[K("oidc"), K("issuer")], format!("oidc.issuer {why}"));
        }
        if o.client_id.trim().is_empty() {
            err(
                &[K("oidc"), K("client_id")],
                "oidc.client_id is empty; write the client id the provider gave jitgate".into(),
            );
        }
        if let Err(why) = o.secret() {
            err(&[K("oidc"), K("client_secret")], why);
        }
        if let Some(ca) = &o.ca {
            match std::fs::read(ca) {
                Err(e) => err(
                    &[K("oidc"), K("ca")],
                    format!("oidc.ca {}: {e}", ca.display()),
                ),
                Ok(pem) if !rustls_pemfile::certs(&mut pem.as_slice()).any(|c| c.is_ok()) => err(
                    &[K("oidc"), K("ca")],
                    format!("oidc.ca {} holds no PEM certificate", ca.display()),
                ),
                Ok(_) => {}
            }
        }
        if !o.scopes.iter().any(|s| s == "openid") {
            err(
                &[K("oidc"), K("scopes")],
                "oidc.scopes must include openid".into(),
            );
        }
        if let Some(u) = &o.redirect_url
            && url_host(u).is_err()
        {
            err(
                &[K("oidc"), K("redirect_url")],
                format!("oidc.redirect_url {u:?} must be an https:// URL ending in /auth/callback"),
            );
        }
        if let Some(u) = &o.redirect_url
            && !u.ends_with("/auth/callback")
        {
            err(
                &[K("oidc"), K("redirect_url")],
                format!(
                    "oidc.redirect_url {u:?} must end in /auth/callback, where jitgate answers the provider"
                ),
            );
        }
        if o.step_up_max_age.as_secs() == 0 {
            err(
                &[K("oidc"), K("step_up_max_age")],
                "oidc.step_up_max_age must be above zero".into(),
            );
        }
        if o.cli_credential_ttl.as_secs() == 0 || o.cli_credential_ttl.as_secs() > 7 * 86400 {
            err(
                &[K("oidc"), K("cli_credential_ttl")],
                "oidc.cli_credential_ttl must be between 1s and 7d".into(),
            );
        }
        if o.role_mappings.is_empty() && self.users.iter().all(|u| u.roles.is_empty()) {
            err(
                &[K("oidc")],
                "oidc has no role_mappings and no [[users]] entry gives roles, so everybody who signs in would be refused; map a group: [[oidc.role_mappings]] group = \"helpdesk\", roles = [\"technician\"]".into(),
            );
        }
        for (i, m) in o.role_mappings.iter().enumerate() {
            if m.group.trim().is_empty() {
                err(
                    &[K("oidc"), K("role_mappings"), I(i), K("group")],
                    "oidc.role_mappings: group is empty".into(),
                );
            }
            if m.roles.is_empty() {
                err(
                    &[K("oidc"), K("role_mappings"), I(i), K("roles")],
                    format!(
                        "oidc.role_mappings: group {:?} maps to no roles; list at least one",
                        m.group
                    ),
                );
            }
        }
    }

    /// Why nobody could sign in to this configuration: no `[oidc]` and no API key.
    pub fn nobody_can_sign_in(&self) -> Option<String> {
        if self.oidc.is_some() || self.users.iter().any(|u| u.api_key_sha256.is_some()) {
            return None;
        }
        Some(format!(
            "{}: nobody can sign in: there is no [oidc] section and no user has an api_key_sha256; configure the company's identity provider in [oidc], or give an admin an API key (jitgate api-key new)",
            self.source.display()
        ))
    }

    /// How a person's roles are found, for `jitgate check` to print.
    pub fn identity_rule(&self) -> String {
        match &self.oidc {
            None => "sign-in: API keys only; no [oidc] section, so people sign in to the console with one-time links".into(),
            Some(o) => format!(
                "sign-in: people through {} (user name from the {:?} claim, groups from {:?}); \
                 their roles are those of every [[oidc.role_mappings]] group they are in ({} mapped), \
                 plus the roles of a [[users]] entry of the same name, read again at each sign-in; \
                 a person with neither is refused. API keys (jgk_) still work for automation, \
                 but high-impact approvals, break-glass and its review need a person's sign-in \
                 from the last {}.",
                o.issuer,
                o.username_claim,
                o.groups_claim,
                o.role_mappings.len(),
                o.step_up_max_age
            ),
        }
    }
}

/// `host` as it goes into a URL (IPv6 in brackets).
pub fn host_for_url(host: &str) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_string()
    }
}

/// The host of an `https://` URL, or why it is not one.
fn url_host(u: &str) -> Result<&str, String> {
    let rest = u
        .strip_prefix("https://")
        .ok_or_else(|| format!("{u:?} must be an https:// URL"))?;
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    if host.is_empty() {
        return Err(format!("{u:?} has no host"));
    }
    Ok(host)
}
