//! Who a person is: sign-in through the OpenID provider (browser and `jitgate login`), one-time
//! sign-in links where there is no provider, and the sign-ins that follow (console sessions and
//! `jgs_` CLI credentials), with roles mapped from the provider's groups on every use.
//!
//! In flight (minutes long): sign-ins between `/login` and `/auth/callback`, the one-time codes
//! a CLI redeems, and sign-in links, held in the store ([`held`]) so that any gateway node can
//! finish what another began. Kept in the store too: people and sign-ins. Everything by the
//! SHA-256 of its secret.

mod held;
pub mod http;
pub mod oidc;
mod signins;
#[cfg(test)]
mod tests;

#[cfg(test)]
use signins::touch_every;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use base64::Engine;

use crate::audit::{AuditEvent, Log};
use crate::config::{Config, UserConfig};
use crate::crypto;
use crate::store::{Person, SignIn, SignInKind, SignInMethod, Store};
use crate::types::{UnixTime, UserName, now, random_id};

/// Prefix of CLI credentials.
pub const CLI_PREFIX: &str = "jgs_";
/// Time from `/login` to `/auth/callback`.
const LOGIN_WINDOW: Duration = Duration::from_secs(10 * 60);
/// Time a CLI has to redeem its one-time code.
const CODE_WINDOW: Duration = Duration::from_secs(60);
/// How long a sign-in link works.
pub const LINK_WINDOW: Duration = Duration::from_secs(30 * 60);
/// Sign-ins in flight, codes and links held at once: the bound on what unauthenticated
/// callers can make jitgate remember.
const MAX_IN_FLIGHT: usize = 10_000;
/// A sign-in's last use is written back at most this often.
const TOUCH_EVERY: i64 = 60;

/// A refused sign-in: what to tell the person (also what the audit log records).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal(pub String);

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where a CLI waits for its one-time code (`jitgate login`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CliReturn {
    /// `http://127.0.0.1:PORT/callback` (loopback only).
    pub redirect: String,
    /// S256 of the CLI's verifier.
    pub challenge: String,
    /// The CLI's own state, echoed back.
    pub state: String,
}

/// What `/login` was asked for.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Begin {
    /// Console path to return to (starts with one `/`).
    pub return_to: String,
    pub cli: Option<CliReturn>,
    /// Make the provider check the person again (`max_age`): for high-impact actions.
    pub step_up: bool,
}

/// The provider's answer at `/auth/callback`.
#[derive(Debug, Clone, Default)]
pub struct Callback {
    pub code: Option<String>,
    pub state: Option<String>,
    pub error: Option<String>,
    pub error_description: Option<String>,
}

/// A finished browser round trip.
pub enum Finished {
    /// Set the console cookie to `handle` and go to `return_to`.
    Browser { handle: String, return_to: String },
    /// Send the browser to the CLI's loopback address (which carries the one-time code).
    Cli { redirect: String },
}

/// A person authenticated by a sign-in.
#[derive(Debug, Clone)]
pub struct Authed {
    pub user: UserConfig,
    pub sign_in: SignIn,
}

#[derive(Serialize, Deserialize)]
struct Pending {
    nonce: String,
    verifier: String,
    binding_sha256: [u8; 32],
    begin: Begin,
    max_age: Option<u64>,
    at: UnixTime,
}

#[derive(Serialize, Deserialize)]
struct CliCode {
    sign_in: SignIn,
    challenge: String,
    at: UnixTime,
}

#[derive(Serialize, Deserialize)]
struct Link {
    user: UserName,
    at: UnixTime,
}

/// Whether something made at `at` is older than `window`.
fn older_than(at: UnixTime, window: Duration) -> bool {
    now() - at >= window.as_secs() as i64
}

/// The identity service.
pub struct Identity {
    cfg: Arc<Config>,
    store: Arc<dyn Store>,
    audit: Arc<Log>,
    provider: Option<oidc::Provider>,
}

fn b64url(b: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

/// The PKCE S256 challenge of `verifier`.
pub fn challenge(verifier: &str) -> String {
    b64url(&crypto::sha256(verifier.as_bytes()))
}

impl Identity {
    /// The service for `cfg`; the provider is not contacted until the first sign-in.
    pub fn new(cfg: Arc<Config>, store: Arc<dyn Store>, audit: Arc<Log>) -> Result<Self, String> {
        let provider = match (&cfg.oidc, cfg.oidc_redirect_url()) {
            (Some(o), Some(redirect)) => {
                let claims = cfg
                    .ticket_systems
                    .iter()
                    .filter_map(|t| Some((t.name.clone(), t.oidc_claim.clone()?)))
                    .collect();
                Some(oidc::Provider::new(o, redirect, claims)?)
            }
            _ => None,
        };
        Ok(Self {
            cfg,
            store,
            audit,
            provider,
        })
    }

    /// Whether people sign in through an OpenID provider.
    pub fn oidc(&self) -> bool {
        self.provider.is_some()
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Start a browser sign-in: the provider's URL to send the browser to, and the value of the
    /// cookie that ties the round trip to this browser.
    pub async fn begin(&self, begin: Begin) -> Result<(String, String), Refusal> {
        let p = self.provider.as_ref().ok_or_else(|| {
            Refusal(
                "this gateway has no identity provider ([oidc]); ask an admin for a sign-in link"
                    .into(),
            )
        })?;
        let state = random_id(32);
        let nonce = random_id(32);
        let verifier = random_id(64);
        let binding = random_id(32);
        let max_age = begin
            .step_up
            .then(|| self.cfg.oidc.as_ref().map(|o| o.step_up_max_age.as_secs()))
            .flatten();
        let url = p
            .authorize_url(&state, &nonce, &challenge(&verifier), max_age)
            .await
            .map_err(Refusal)?;
        let pending = Pending {
            nonce,
            verifier,
            binding_sha256: crypto::sha256(binding.as_bytes()),
            begin,
            max_age,
            at: now(),
        };
        held::put(
            self.store.as_ref(),
            held::Kind::Login,
            &state,
            &pending,
            LOGIN_WINDOW.as_secs(),
        )
        .await?;
        Ok((url, binding))
    }

    /// Finish a browser sign-in at `/auth/callback`. Every refusal is audited.
    pub async fn finish(
        &self,
        cb: Callback,
        binding: Option<&str>,
        source: IpAddr,
    ) -> Result<Finished, Refusal> {
        let issuer = self
            .provider
            .as_ref()
            .map_or("", |p| p.issuer())
            .to_string();
        let mut seen = Seen::default();
        let result = self.finish_inner(cb, binding, source, &mut seen).await;
        if let Err(r) = &result {
            self.refused(&issuer, &seen, source, &r.0).await;
        }
        result
    }

    async fn finish_inner(
        &self,
        cb: Callback,
        binding: Option<&str>,
        source: IpAddr,
        seen: &mut Seen,
    ) -> Result<Finished, Refusal> {
        let p = self
            .provider
            .as_ref()
            .ok_or_else(|| Refusal("this gateway has no identity provider ([oidc])".into()))?;
        if let Some(e) = &cb.error {
            let d = cb.error_description.as_deref().unwrap_or("");
            return Err(Refusal(format!(
                "the identity provider did not sign you in ({}{}{}); try again, or ask your identity team",
                clip(e, 100),
                if d.is_empty() { "" } else { ": " },
                clip(d, 300)
            )));
        }
        let (Some(code), Some(state)) = (cb.code, cb.state) else {
            return Err(Refusal(
                "the identity provider's answer lacks code or state; start again at /login".into(),
            ));
        };
        let pending: Pending = held::take(self.store.as_ref(), held::Kind::Login, &state)
            .await?
            .ok_or_else(|| {
                Refusal("this sign-in is unknown or was already used (its state does not match one in progress); start again at /login".into())
            })?;
        let bound = binding
            .is_some_and(|b| crypto::ct_eq(&crypto::sha256(b.as_bytes()), &pending.binding_sha256));
        if !bound {
            return Err(Refusal(
                "this sign-in was started in another browser (or its cookie was lost); start again at /login in this browser".into(),
            ));
        }
        if older_than(pending.at, LOGIN_WINDOW) {
            return Err(Refusal(
                "this sign-in took longer than 10 minutes; start again at /login".into(),
            ));
        }
        let tokens = p
            .exchange(&code, &pending.verifier)
            .await
            .map_err(Refusal)?;
        let v = p
            .verify(&tokens, &pending.nonce, pending.max_age)
            .await
            .map_err(Refusal)?;
        seen.subject = Some(v.subject.clone());
        seen.groups = v.groups.clone();
        let claim = &self
            .cfg
            .oidc
            .as_ref()
            .expect("provider means [oidc]")
            .username_claim;
        let raw = v.username.clone().ok_or_else(|| {
            Refusal(format!(
                "the identity provider sent no {claim} claim, which names the jitgate user; an admin must release it to jitgate or change [oidc] username_claim"
            ))
        })?;
        seen.user = Some(clip(&raw, 64));
        let name: UserName = raw.parse().map_err(|e: String| {
            Refusal(format!(
                "the identity provider's {claim} {:?} cannot be a jitgate user name: {e}",
                clip(&raw, 64)
            ))
        })?;
        let user = self.admit_person(p.issuer(), &name, &v).await?;
        let kind = if pending.begin.cli.is_some() {
            SignInKind::Cli
        } else {
            SignInKind::Browser
        };
        let (secret, sign_in) = self.new_sign_in(
            kind,
            SignInMethod::Oidc,
            &name,
            Some((p.issuer(), &v.subject)),
            v.groups.clone(),
            v.auth_time,
        );
        self.signed_in(&user, &sign_in, source, p.issuer()).await;
        match pending.begin.cli {
            None => {
                self.store
                    .put_sign_in(&sign_in)
                    .await
                    .map_err(|e| Refusal(e.to_string()))?;
                Ok(Finished::Browser {
                    handle: secret,
                    return_to: pending.begin.return_to,
                })
            }
            Some(cli) => {
                // The CLI gets the credential only by redeeming this code with its verifier.
                let code = random_id(32);
                let held_code = CliCode {
                    sign_in: SignIn {
                        secret_sha256: crypto::sha256_hex(secret.as_bytes()),
                        ..sign_in
                    },
                    challenge: cli.challenge,
                    at: now(),
                };
                held::put(
                    self.store.as_ref(),
                    held::Kind::CliCode,
                    &code,
                    &held_code,
                    CODE_WINDOW.as_secs(),
                )
                .await?;
                // The secret itself is made again at redemption; this one is dropped.
                Ok(Finished::Cli {
                    redirect: format!(
                        "{}{}code={}&state={}",
                        cli.redirect,
                        if cli.redirect.contains('?') { '&' } else { '?' },
                        code,
                        http::url_encode(&cli.state)
                    ),
                })
            }
        }
    }

    /// Check that `name` may sign in with what the provider said, and remember the person.
    async fn admit_person(
        &self,
        issuer: &str,
        name: &UserName,
        v: &oidc::Verified,
    ) -> Result<UserConfig, Refusal> {
        let known = self
            .store
            .person(name)
            .await
            .map_err(|e| Refusal(e.to_string()))?;
        if let Some(k) = &known
            && (k.issuer != issuer || k.subject != v.subject)
        {
            return Err(Refusal(format!(
                "the user name {name} already belongs to another account at the identity provider; an admin must find out why the name moved before it can sign in"
            )));
        }
        let user = self
            .cfg
            .effective_user(name, Some(&v.groups))
            .ok_or_else(|| {
                Refusal(format!(
                    "{name} signed in, but none of their groups ({}) is mapped to a jitgate role; an admin must map one in [[oidc.role_mappings]]",
                    if v.groups.is_empty() {
                        "none were sent".to_string()
                    } else {
                        v.groups.iter().map(|g| clip(g, 80)).collect::<Vec<_>>().join(", ")
                    }
                ))
            })?;
        let at = now();
        let person = Person {
            name: name.clone(),
            issuer: issuer.to_string(),
            subject: v.subject.clone(),
            groups: v.groups.clone(),
            external_ids: v.external_ids.clone(),
            first_sign_in: known.map_or(at, |k| k.first_sign_in),
            last_sign_in: at,
        };
        self.store
            .put_person(&person)
            .await
            .map_err(|e| Refusal(e.to_string()))?;
        Ok(user)
    }

    fn new_sign_in(
        &self,
        kind: SignInKind,
        method: SignInMethod,
        name: &UserName,
        who: Option<(&str, &str)>,
        groups: Vec<String>,
        auth_time: UnixTime,
    ) -> (String, SignIn) {
        let at = now();
        let (secret, ttl, idle, csrf) = match kind {
            SignInKind::Browser => (
                random_id(52),
                self.cfg.console.absolute_timeout.as_secs(),
                Some(self.cfg.console.idle_timeout.as_secs()),
                Some(random_id(32)),
            ),
            SignInKind::Cli => (
                format!("{CLI_PREFIX}{}", random_id(52)),
                self.cfg
                    .oidc
                    .as_ref()
                    .map_or(12 * 3600, |o| o.cli_credential_ttl.as_secs()),
                None,
                None,
            ),
        };
        let sign_in = SignIn {
            id: format!("si_{}", random_id(16)),
            secret_sha256: crypto::sha256_hex(secret.as_bytes()),
            kind,
            method,
            user: name.clone(),
            issuer: who.map(|w| w.0.to_string()),
            subject: who.map(|w| w.1.to_string()),
            groups,
            auth_time,
            created_at: at,
            last_seen: at,
            expires_at: at + ttl as i64,
            idle_timeout: idle,
            csrf,
            ended_at: None,
            ended_reason: None,
        };
        (secret, sign_in)
    }

    /// Where to send the browser after sign-out so the provider signs the person out too.
    pub async fn end_session_url(&self) -> Option<String> {
        let p = self.provider.as_ref()?;
        let end = p.metadata().await.ok()?.end_session_endpoint?;
        let client = &self.cfg.oidc.as_ref()?.client_id;
        let sep = if end.contains('?') { '&' } else { '?' };
        Some(format!("{end}{sep}client_id={}", http::url_encode(client)))
    }

    /// The origins of the provider's authorization and sign-out endpoints (for the console's
    /// form-action), from metadata already fetched: a page never waits on the provider.
    pub async fn provider_origins(&self) -> Vec<String> {
        let Some(m) = self.provider.as_ref().and_then(|p| p.cached()) else {
            return Vec::new();
        };
        [Some(m.authorization_endpoint), m.end_session_endpoint]
            .into_iter()
            .flatten()
            .filter_map(|u| origin(&u))
            .collect()
    }

    async fn signed_in(&self, user: &UserConfig, s: &SignIn, source: IpAddr, issuer: &str) {
        let ev = AuditEvent::AuthSignedIn {
            user: user.name.clone(),
            issuer: issuer.to_string(),
            subject: s.subject.clone(),
            groups: s.groups.clone(),
            source: source.to_string(),
            method: s.method.as_str().into(),
            via: via(s.kind).into(),
            sign_in: s.id.clone(),
        };
        if let Err(e) = self.audit.record(user.name.as_str(), ev).await {
            tracing::error!(error = %e, "cannot audit a sign-in");
        }
    }

    async fn refused(&self, issuer: &str, seen: &Seen, source: IpAddr, reason: &str) {
        let ev = AuditEvent::AuthRefused {
            user: seen.user.clone(),
            issuer: issuer.to_string(),
            subject: seen.subject.clone(),
            groups: seen.groups.clone(),
            source: source.to_string(),
            reason: reason.to_string(),
        };
        let actor = seen.user.clone().unwrap_or_else(|| "anonymous".into());
        if let Err(e) = self.audit.refusal(&actor, source, ev).await {
            tracing::error!(error = %e, "cannot audit a refused sign-in");
        }
    }
}

/// What the provider said before a sign-in was refused (for the audit record).
#[derive(Default)]
struct Seen {
    user: Option<String>,
    subject: Option<String>,
    groups: Vec<String>,
}

fn via(k: SignInKind) -> &'static str {
    match k {
        SignInKind::Browser => "browser",
        SignInKind::Cli => "cli",
    }
}

/// At most `n` characters of `s`.
fn clip(s: &str, n: usize) -> String {
    crate::types::first_chars(s, n).to_owned()
}

/// `scheme://host[:port]` of a URL.
fn origin(u: &str) -> Option<String> {
    let uri: ::http::Uri = u.parse().ok()?;
    Some(format!("{}://{}", uri.scheme_str()?, uri.authority()?))
}

/// Whether `url` is where a CLI on this machine can wait: `http://` to a loopback address with
/// an explicit port.
pub fn loopback_redirect(url: &str) -> bool {
    let Ok(uri) = url.parse::<::http::Uri>() else {
        return false;
    };
    let host = uri.host().unwrap_or("");
    uri.scheme_str() == Some("http")
        && uri.port_u16().is_some()
        && matches!(host, "127.0.0.1" | "[::1]" | "localhost")
        && url.len() <= 200
        && !url.contains('#')
}

/// Whether `path` is a console path safe to return to (no scheme, no host, no `//`).
pub fn safe_return(path: &str) -> bool {
    path.starts_with('/')
        && !path.starts_with("//")
        && !path.contains('\\')
        && path.len() <= 512
        && path.bytes().all(|b| (0x21..0x7f).contains(&b))
}
