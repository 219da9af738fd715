//! What happens to a sign-in after the provider's answer: the CLI redeems its code, a link is
//! made and used, a cookie handle or `jgs_` credential is checked on every request, a sign-in
//! ends.

use std::net::IpAddr;

use super::{
    Authed, CLI_PREFIX, CODE_WINDOW, CliCode, Identity, LINK_WINDOW, Link, Refusal, Seen,
    TOUCH_EVERY, challenge, held, older_than, via,
};
use crate::audit::AuditEvent;
use crate::config::UserConfig;
use crate::crypto;
use crate::store::{SignIn, SignInKind, SignInMethod};
use crate::types::{UserName, now, random_id};

impl Identity {
    /// Redeem a CLI's one-time code with its PKCE verifier: the `jgs_` credential.
    pub async fn redeem(&self, code: &str, verifier: &str) -> Result<(String, Authed), Refusal> {
        let entry: Option<CliCode> =
            held::take(self.store.as_ref(), held::Kind::CliCode, code).await?;
        let bad = || {
            Refusal("that sign-in code is unknown, used or expired; run jitgate login again".into())
        };
        let entry = entry.ok_or_else(bad)?;
        if older_than(entry.at, CODE_WINDOW)
            || !crypto::ct_eq(challenge(verifier).as_bytes(), entry.challenge.as_bytes())
        {
            return Err(bad());
        }
        // A fresh secret: the one hashed at the callback never left the gateway.
        let secret = format!("{CLI_PREFIX}{}", random_id(52));
        let sign_in = SignIn {
            secret_sha256: crypto::sha256_hex(secret.as_bytes()),
            ..entry.sign_in
        };
        self.store
            .put_sign_in(&sign_in)
            .await
            .map_err(|e| Refusal(e.to_string()))?;
        let user = self.user_of(&sign_in).ok_or_else(bad)?;
        Ok((secret, Authed { user, sign_in }))
    }

    /// A one-time sign-in link for `user` (no provider configured): the secret of its URL.
    pub async fn link(&self, user: &UserName) -> Result<String, Refusal> {
        if self.cfg.effective_user(user, None).is_none() {
            return Err(Refusal(format!(
                "{user} is not a configured user with a role"
            )));
        }
        let token = random_id(40);
        let link = Link {
            user: user.clone(),
            at: now(),
        };
        held::put(
            self.store.as_ref(),
            held::Kind::Link,
            &token,
            &link,
            LINK_WINDOW.as_secs(),
        )
        .await?;
        Ok(token)
    }

    /// Use a sign-in link (once): the console cookie's handle.
    pub async fn use_link(&self, token: &str, source: IpAddr) -> Result<String, Refusal> {
        let link: Option<Link> = held::take(self.store.as_ref(), held::Kind::Link, token).await?;
        let link = match link {
            Some(l) if !older_than(l.at, LINK_WINDOW) => l,
            _ => {
                let r = Refusal(
                    "this sign-in link is unknown, was already used or is older than 30 minutes; ask for a new one".into(),
                );
                self.refused("link", &Seen::default(), source, &r.0).await;
                return Err(r);
            }
        };
        let user = self
            .cfg
            .effective_user(&link.user, None)
            .ok_or_else(|| Refusal(format!("{} no longer has a role", link.user)))?;
        let (secret, sign_in) = self.new_sign_in(
            SignInKind::Browser,
            SignInMethod::Link,
            &link.user,
            None,
            Vec::new(),
            now(),
        );
        self.store
            .put_sign_in(&sign_in)
            .await
            .map_err(|e| Refusal(e.to_string()))?;
        self.signed_in(&user, &sign_in, source, "link").await;
        Ok(secret)
    }

    /// The person behind a console cookie handle or a `jgs_` credential, if it still works;
    /// otherwise why not.
    pub async fn authenticate(&self, secret: &str, kind: SignInKind) -> Result<Authed, String> {
        if secret.len() > 200 {
            return Err("that sign-in is not one jitgate issued".into());
        }
        let hash = crypto::sha256_hex(secret.as_bytes());
        let mut s = self
            .store
            .sign_in(&hash)
            .await
            .map_err(|e| e.to_string())?
            .filter(|s| s.kind == kind)
            .ok_or_else(|| match kind {
                SignInKind::Cli => "unknown CLI credential; run jitgate login".to_string(),
                SignInKind::Browser => "your console session is unknown; sign in again".to_string(),
            })?;
        let at = now();
        if let Some(why) = s.over(at) {
            return Err(match kind {
                SignInKind::Cli => format!("{why}; run jitgate login"),
                SignInKind::Browser => format!("{why}; sign in again"),
            });
        }
        let user = self.user_of(&s).ok_or_else(|| {
            format!(
                "{} no longer has a jitgate role (the role mappings changed); ask an admin",
                s.user
            )
        })?;
        if at - s.last_seen >= touch_every(s.idle_timeout) {
            s.last_seen = at;
            self.store
                .put_sign_in(&s)
                .await
                .map_err(|e| e.to_string())?;
        }
        Ok(Authed { user, sign_in: s })
    }

    fn user_of(&self, s: &SignIn) -> Option<UserConfig> {
        let groups = (s.method == SignInMethod::Oidc).then_some(s.groups.as_slice());
        self.cfg.effective_user(&s.user, groups)
    }

    /// End a sign-in now (sign-out, `jitgate logout`).
    pub async fn sign_out(&self, s: &SignIn, reason: &str) -> Result<(), String> {
        let mut s = s.clone();
        if s.ended_at.is_some() {
            return Ok(());
        }
        s.ended_at = Some(now());
        s.ended_reason = Some(reason.to_string());
        self.store
            .put_sign_in(&s)
            .await
            .map_err(|e| e.to_string())?;
        self.audit
            .record(
                s.user.as_str(),
                AuditEvent::AuthSignedOut {
                    user: s.user.clone(),
                    sign_in: s.id.clone(),
                    via: via(s.kind).into(),
                    reason: reason.into(),
                },
            )
            .await
            .map_err(|e| e.to_string())?;
        Ok(())
    }
}

/// How often a sign-in's last use is written back: every [`TOUCH_EVERY`] seconds, or every half
/// idle timeout when that is shorter, so that a session in use never looks idle.
pub(super) fn touch_every(idle_timeout: Option<u64>) -> i64 {
    idle_timeout.map_or(TOUCH_EVERY, |i| (i as i64 / 2).clamp(1, TOUCH_EVERY))
}
