//! A connection before it is admitted: the grant token (password or keyboard-interactive
//! `Grant token:` prompt) and, for a user with registered keys, one of those keys. [`Login`]
//! decides each authentication attempt; the connection's task opens the session when both
//! factors are in.

use std::net::IpAddr;

use russh::keys::ssh_key::PublicKey;
use russh::server::Auth;
use russh::{MethodKind, MethodSet};

use super::UserKeys;
use crate::config::TargetKind;
use crate::gateway::Admit;
use crate::grant::Admission;
use crate::grant::admission::AdmitRequest;
use crate::types::GrantId;

/// Wrong tokens accepted per connection before it is refused.
pub(super) const MAX_TOKEN_FAILURES: u32 = 3;

/// The prompt of keyboard-interactive authentication.
const PROMPT: &str = "Grant token: ";

/// Why an admitted token has not let the client in yet: audited if the client gives up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Incomplete {
    pub user: String,
    pub reason: String,
    pub grant: Option<GrantId>,
}

/// What the connection does after an attempt.
#[derive(Debug)]
pub(super) enum Step {
    /// Answer the client.
    Answer(Auth),
    /// Both factors are in: open the session, then answer `Accept`.
    Open(Box<Admission>),
}

/// The authentication state of one connection.
#[derive(Debug, Default)]
pub(super) struct Login {
    /// The token's admission, once one was presented and admitted.
    admission: Option<Admission>,
    /// The user whose registered key the client proved it holds.
    key_of: Option<String>,
    failures: u32,
    pub incomplete: Option<Incomplete>,
}

fn token_methods() -> MethodSet {
    MethodSet::from(&[MethodKind::KeyboardInteractive, MethodKind::Password][..])
}

fn key_method() -> MethodSet {
    MethodSet::from(&[MethodKind::PublicKey][..])
}

/// The keyboard-interactive prompt, with `instructions` above it.
fn prompt(instructions: String, text: &'static str, echo: bool) -> Auth {
    Auth::Partial {
        name: "jitgate".into(),
        instructions: instructions.into(),
        prompts: vec![(text.into(), echo)].into(),
    }
}

impl Login {
    /// Whether the connection has used up its tries.
    fn exhausted(&self) -> bool {
        self.failures >= MAX_TOKEN_FAILURES
    }

    /// Keyboard-interactive begins: ask for the token.
    pub fn start_prompt(&self) -> Auth {
        if self.exhausted() {
            return Auth::reject();
        }
        prompt(String::new(), PROMPT, false)
    }

    /// A token was presented as `user`; `true` with the step when it admitted the connection
    /// just now (it is checked once per connection).
    pub async fn token(
        &mut self,
        admit: &dyn Admit,
        keys: &UserKeys,
        source: IpAddr,
        user: &str,
        token: &str,
    ) -> Result<(bool, Step), String> {
        if self.exhausted() {
            return Ok((false, Step::Answer(Auth::reject())));
        }
        let admitted_now = self.admission.is_none();
        if admitted_now {
            let admitted = admit
                .admit(AdmitRequest {
                    token,
                    user: Some(user),
                    protocol: TargetKind::Ssh,
                    source,
                })
                .await;
            match admitted {
                Ok(a) => self.admission = Some(a),
                Err(denied) => {
                    self.failures += 1;
                    return Err(denied.message);
                }
            }
        }
        Ok((admitted_now, self.after_token(keys, user)))
    }

    /// The answer to a refused token.
    pub fn refused(&self, why: &str, interactive: bool) -> Auth {
        if interactive && !self.exhausted() {
            prompt(format!("[jitgate] refused: {why}"), PROMPT, false)
        } else {
            Auth::reject()
        }
    }

    fn after_token(&mut self, keys: &UserKeys, user: &str) -> Step {
        let admission = self.admission.clone().expect("set by token()");
        if keys.has_keys(user) && self.key_of.as_deref() != Some(user) {
            self.incomplete = Some(Incomplete {
                user: user.chars().take(64).collect(),
                reason: format!(
                    "{user} has registered SSH keys: the gateway requires public-key authentication with one of them as well as the grant token"
                ),
                grant: Some(admission.grant().clone()),
            });
            return Step::Answer(Auth::Reject {
                proceed_with_methods: Some(key_method()),
                partial_success: true,
            });
        }
        Step::Open(Box::new(admission))
    }

    /// A key was offered for `user`: accepted (to be proven) only if it is one of theirs.
    pub fn key_offered(&self, keys: &UserKeys, user: &str, key: &PublicKey) -> Auth {
        if keys.is_registered(user, key) {
            return Auth::Accept;
        }
        Auth::Reject {
            proceed_with_methods: Some(if keys.has_keys(user) {
                key_method()
            } else {
                token_methods()
            }),
            partial_success: false,
        }
    }

    /// The client proved it holds `key` as `user`.
    pub fn key_verified(&mut self, keys: &UserKeys, user: &str, key: &PublicKey) -> Step {
        if !keys.is_registered(user, key) {
            return Step::Answer(Auth::reject());
        }
        self.key_of = Some(user.to_string());
        match &self.admission {
            Some(a) if a.user().name.as_str() == user => Step::Open(Box::new(a.clone())),
            _ => Step::Answer(Auth::Reject {
                proceed_with_methods: Some(token_methods()),
                partial_success: true,
            }),
        }
    }

    /// The session could not be opened (`reason`, already audited): no more tries. At the
    /// keyboard-interactive prompt the reason is shown, with one last prompt whose answer is
    /// refused.
    pub fn open_failed(&mut self, reason: &str, interactive: bool) -> Auth {
        self.failures = MAX_TOKEN_FAILURES;
        if interactive {
            prompt(
                format!("[jitgate] refused: {reason}"),
                "Press Enter to close: ",
                true,
            )
        } else {
            Auth::reject()
        }
    }
}
