//! People who signed in through the identity provider, and their sign-ins (browser sessions and
//! CLI credentials), as the store keeps them.

use serde::{Deserialize, Serialize};

use crate::types::{UnixTime, UserName};

/// A person known from the identity provider: kept after they leave, so that grants, sessions
/// and audit records keep naming someone jitgate can describe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Person {
    pub name: UserName,
    pub issuer: String,
    /// The provider's stable id for the person (`sub`); a name stays bound to one subject.
    pub subject: String,
    /// Groups the provider sent at the last sign-in.
    pub groups: Vec<String>,
    /// Their identities in ticket systems (`jira:5b10ac8d...`) from the provider's claims at
    /// the last sign-in (see `oidc_claim` in `[[ticket_systems]]`).
    #[serde(default)]
    pub external_ids: Vec<String>,
    pub first_sign_in: UnixTime,
    pub last_sign_in: UnixTime,
}

/// Where a sign-in is used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SignInKind {
    /// A console session (cookie).
    Browser,
    /// A `jgs_` credential from `jitgate login`.
    Cli,
}

/// How the person proved who they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SignInMethod {
    /// Through the OpenID provider.
    Oidc,
    /// With a one-time sign-in link (no `[oidc]`).
    Link,
}

impl SignInMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            SignInMethod::Oidc => "oidc",
            SignInMethod::Link => "link",
        }
    }
}

/// One sign-in. The secret (cookie handle or `jgs_` credential) is kept only as its SHA-256.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignIn {
    /// Public id (`si_...`), for the audit log and for revoking; never a credential.
    pub id: String,
    pub secret_sha256: String,
    pub kind: SignInKind,
    pub method: SignInMethod,
    pub user: UserName,
    pub issuer: Option<String>,
    pub subject: Option<String>,
    /// The provider's groups at sign-in (roles are mapped from them on every use).
    pub groups: Vec<String>,
    /// When the person last authenticated at the provider.
    pub auth_time: UnixTime,
    pub created_at: UnixTime,
    pub last_seen: UnixTime,
    /// Hard end, whatever the use.
    pub expires_at: UnixTime,
    /// Ends after this many seconds unused (browser sessions).
    pub idle_timeout: Option<u64>,
    /// The per-session token state-changing browser requests must carry.
    pub csrf: Option<String>,
    pub ended_at: Option<UnixTime>,
    pub ended_reason: Option<String>,
}

impl SignIn {
    /// Why the sign-in no longer works at `now`, if it does not.
    pub fn over(&self, now: UnixTime) -> Option<&'static str> {
        if self.ended_at.is_some() {
            return Some("you signed out, or an admin ended this sign-in");
        }
        if now >= self.expires_at {
            return Some("this sign-in has expired");
        }
        if let Some(idle) = self.idle_timeout
            && now - self.last_seen >= idle as i64
        {
            return Some("this sign-in ended after a time without use");
        }
        None
    }
}
