//! One client connection's SSH protocol handler: admission by grant token (and public key
//! where the user has registered keys) and the channel-open decisions. The connection's life
//! from accept to the recorded end is in [`super::server`].

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use russh::server::{self, Auth, Msg, Session};
use russh::{Channel, ChannelId, MethodKind, MethodSet};
use tokio::sync::Notify;

use super::active::Active;
use super::server::Gateway;
use super::{Want, allowed, bridge, tcpip};
use crate::config::{Allow, TargetKind};
use crate::grant::Admission;
use crate::grant::admission::AdmitRequest;
use crate::session::NewSession;

/// Wrong tokens accepted per connection before it is refused.
const MAX_TOKEN_FAILURES: u32 = 3;

/// State shared between a connection's handler and its supervising task.
#[derive(Default)]
pub(super) struct Shared {
    pub(super) active: OnceLock<Arc<Active>>,
    pub(super) authed: Notify,
    pub(super) is_authed: AtomicBool,
    /// Why an admitted token did not let the client in (audited if the client gives up).
    pub(super) incomplete:
        std::sync::Mutex<Option<(String, String, Option<crate::types::GrantId>)>>,
}

/// One connection's russh handler.
pub(super) struct Conn {
    pub(super) gw: Arc<Gateway>,
    pub(super) peer: SocketAddr,
    pub(super) shared: Arc<Shared>,
    pub(super) pubkey_ok: bool,
    pub(super) admission: Option<Admission>,
    pub(super) failures: u32,
}

fn token_methods() -> MethodSet {
    MethodSet::from(&[MethodKind::KeyboardInteractive, MethodKind::Password][..])
}

impl Conn {
    fn needs_pubkey(&self, user: &str) -> bool {
        self.gw
            .grants
            .config()
            .users
            .iter()
            .any(|u| u.name.as_str() == user && !u.ssh_keys.is_empty())
    }

    fn key_registered(&self, user: &str, key: &russh::keys::ssh_key::PublicKey) -> bool {
        self.gw.grants.config().users.iter().any(|u| {
            u.name.as_str() == user
                && u.ssh_keys.iter().any(|k| {
                    russh::keys::ssh_key::PublicKey::from_openssh(k)
                        .is_ok_and(|pk| pk.key_data() == key.key_data())
                })
        })
    }

    /// Check a presented token; on success open the session. `Err` is the refusal text.
    async fn check_token(&mut self, user: &str, token: &str) -> Result<(), String> {
        if self.admission.is_some() {
            return Ok(());
        }
        let admission = self
            .gw
            .grants
            .admit(AdmitRequest {
                token,
                user: Some(user),
                protocol: TargetKind::Ssh,
                source: self.peer.ip(),
            })
            .await
            .map_err(|d| {
                self.gw.metrics.admission("ssh", "denied");
                d.message
            })?;
        self.gw.metrics.admission("ssh", "admitted");
        self.admission = Some(admission);
        Ok(())
    }

    /// Both factors present: open the session and let the client in. When the session cannot
    /// be opened (its recording cannot be created), the refusal is audited and, at a
    /// keyboard-interactive prompt, shown with its reason.
    async fn complete(&mut self, interactive: bool) -> Result<Auth, russh::Error> {
        let Some(admission) = self.admission.clone() else {
            return Ok(Auth::reject());
        };
        let guard = match self
            .gw
            .registry
            .open(
                &admission,
                NewSession {
                    protocol: "ssh",
                    source: self.peer.to_string(),
                },
            )
            .await
        {
            Ok(g) => g,
            Err(e) => {
                tracing::error!(error = %e, "cannot open a session");
                let reason = e.to_string();
                let _ = self
                    .gw
                    .grants
                    .audit()
                    .record(
                        "system",
                        crate::audit::AuditEvent::AdmissionDenied {
                            user: admission.user().name.to_string(),
                            protocol: "ssh".into(),
                            source: self.peer.ip().to_string(),
                            grant: Some(admission.grant().clone()),
                            reason: reason.clone(),
                        },
                    )
                    .await;
                self.failures = MAX_TOKEN_FAILURES;
                if interactive {
                    // The reason, then one last prompt whose answer is refused.
                    return Ok(Auth::Partial {
                        name: "jitgate".into(),
                        instructions: format!("[jitgate] refused: {reason}").into(),
                        prompts: vec![("Press Enter to close: ".into(), true)].into(),
                    });
                }
                return Ok(Auth::reject());
            }
        };
        let active = Arc::new(Active::new(guard, admission, self.gw.clone()));
        // Start reaching the target while the client opens its channels.
        {
            let a = active.clone();
            tokio::spawn(async move {
                let _ = a.upstream().await;
            });
        }
        let _ = self.shared.active.set(active);
        self.shared
            .incomplete
            .lock()
            .expect("incomplete lock")
            .take();
        self.shared.is_authed.store(true, Ordering::Release);
        self.shared.authed.notify_waiters();
        Ok(Auth::Accept)
    }

    async fn after_token(
        &mut self,
        user: &str,
        token: &str,
        interactive: bool,
    ) -> Result<Auth, russh::Error> {
        match self.check_token(user, token).await {
            Ok(()) => {
                if self.needs_pubkey(user) && !self.pubkey_ok {
                    *self.shared.incomplete.lock().expect("incomplete lock") = Some((
                        user.chars().take(64).collect(),
                        format!(
                            "{user} has registered SSH keys: the gateway requires public-key authentication with one of them as well as the grant token"
                        ),
                        self.admission.as_ref().map(|a| a.grant().clone()),
                    ));
                    return Ok(Auth::Reject {
                        proceed_with_methods: Some(MethodSet::from(&[MethodKind::PublicKey][..])),
                        partial_success: true,
                    });
                }
                self.complete(interactive).await
            }
            Err(why) => {
                self.failures += 1;
                if interactive && self.failures < MAX_TOKEN_FAILURES {
                    Ok(Auth::Partial {
                        name: "jitgate".into(),
                        instructions: format!("[jitgate] refused: {why}").into(),
                        prompts: vec![("Grant token: ".into(), false)].into(),
                    })
                } else {
                    Ok(Auth::reject())
                }
            }
        }
    }

    fn active(&self) -> Option<Arc<Active>> {
        self.shared.active.get().cloned()
    }
}

impl server::Handler for Conn {
    type Error = russh::Error;

    async fn auth_none(&mut self, _user: &str) -> Result<Auth, Self::Error> {
        Ok(Auth::Reject {
            proceed_with_methods: None,
            partial_success: false,
        })
    }

    async fn auth_password(&mut self, user: &str, password: &str) -> Result<Auth, Self::Error> {
        if self.failures >= MAX_TOKEN_FAILURES {
            return Ok(Auth::reject());
        }
        // Authentication work is boxed: russh keeps room for every handler future inside the
        // connection's task for the connection's whole life, and this runs once.
        Box::pin(self.after_token(user, password, false)).await
    }

    async fn auth_keyboard_interactive<'a>(
        &'a mut self,
        user: &str,
        _submethods: &str,
        response: Option<server::Response<'a>>,
    ) -> Result<Auth, Self::Error> {
        if self.failures >= MAX_TOKEN_FAILURES {
            return Ok(Auth::reject());
        }
        match response {
            None => Ok(Auth::Partial {
                name: "jitgate".into(),
                instructions: "".into(),
                prompts: vec![("Grant token: ".into(), false)].into(),
            }),
            Some(mut answers) => {
                let answer = answers.next().unwrap_or_default();
                let token = String::from_utf8_lossy(&answer).trim().to_string();
                Box::pin(self.after_token(user, &token, true)).await
            }
        }
    }

    async fn auth_publickey_offered(
        &mut self,
        user: &str,
        offer: server::PublicKeyOffer<'_>,
    ) -> Result<Auth, Self::Error> {
        if self.key_registered(user, offer.public_key) {
            Ok(Auth::Accept)
        } else {
            Ok(Auth::Reject {
                proceed_with_methods: Some(if self.needs_pubkey(user) {
                    MethodSet::from(&[MethodKind::PublicKey][..])
                } else {
                    token_methods()
                }),
                partial_success: false,
            })
        }
    }

    async fn auth_publickey(
        &mut self,
        user: &str,
        key: server::VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        if !self.key_registered(user, key.public_key) {
            return Ok(Auth::reject());
        }
        self.pubkey_ok = true;
        if self.admission.is_some() {
            return Box::pin(self.complete(false)).await;
        }
        Ok(Auth::Reject {
            proceed_with_methods: Some(token_methods()),
            partial_success: true,
        })
    }

    async fn auth_succeeded(&mut self, session: &mut Session) -> Result<(), Self::Error> {
        if let Some(a) = self.active() {
            a.set_client(session.handle());
        }
        Ok(())
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: server::ChannelOpenHandle,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let Some(active) = self.active() else {
            drop(reply);
            return Ok(());
        };
        active.set_client(session.handle());
        if active.guard.token().is_cancelled() {
            drop(reply);
            return Ok(());
        }
        reply.accept().await;
        let a = active.clone();
        let ready = active.notices.token();
        active.pumps.spawn(async move {
            bridge::session_channel(a, channel, ready).await;
        });
        Ok(())
    }

    async fn channel_open_direct_tcpip(
        &mut self,
        channel: Channel<Msg>,
        host: &str,
        port: u32,
        originator: &str,
        originator_port: u32,
        reply: server::ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        let Some(active) = self.active() else {
            drop(reply);
            return Ok(());
        };
        let task = active.admission.task();
        if !task.allow.contains(&Allow::PortForward)
            || !tcpip::is_target_host(&active.admission, host)
        {
            tracing::info!(session = %active.guard.id(), %host, port, "port forward refused");
            active.guard.add_event(serde_json::json!({
                "type": "port-forward-refused", "host": host, "port": port,
                "at": crate::types::rfc3339(crate::types::now()),
            }));
            drop(reply);
            return Ok(());
        }
        reply.accept().await;
        let a = active.clone();
        let (host, originator) = (host.to_string(), originator.to_string());
        active.pumps.spawn(async move {
            tcpip::direct_tcpip(a, channel, host, port, originator, originator_port).await;
        });
        Ok(())
    }

    async fn pty_request(
        &mut self,
        channel: ChannelId,
        _term: &str,
        _cols: u32,
        _rows: u32,
        _pw: u32,
        _ph: u32,
        _modes: &[(russh::Pty, u32)],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.reply(channel, Want::Pty, session)
    }

    async fn env_request(
        &mut self,
        channel: ChannelId,
        name: &str,
        _value: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.reply(channel, Want::Env(name), session)
    }

    async fn shell_request(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.reply(channel, Want::Shell, session)
    }

    async fn exec_request(
        &mut self,
        channel: ChannelId,
        data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.reply(channel, Want::Exec(data), session)
    }

    async fn subsystem_request(
        &mut self,
        channel: ChannelId,
        name: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.reply(channel, Want::Subsystem(name), session)
    }

    async fn x11_request(
        &mut self,
        channel: ChannelId,
        _single: bool,
        _proto: &str,
        _cookie: &str,
        _screen: u32,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.reply(channel, Want::X11, session)
    }

    async fn agent_request(
        &mut self,
        channel: ChannelId,
        _session: &mut Session,
    ) -> Result<bool, Self::Error> {
        if let Some(a) = self.active() {
            tracing::info!(session = %a.guard.id(), channel = ?channel, "agent forwarding refused");
        }
        Ok(false)
    }

    async fn tcpip_forward(
        &mut self,
        address: &str,
        port: &mut u32,
        _session: &mut Session,
    ) -> Result<bool, Self::Error> {
        if let Some(a) = self.active() {
            tracing::info!(session = %a.guard.id(), %address, port = *port, "remote forwarding refused");
        }
        Ok(false)
    }
}

impl Conn {
    /// Answer a channel request in the callback (russh keeps one reply flag per channel).
    fn reply(
        &self,
        channel: ChannelId,
        want: Want<'_>,
        session: &mut Session,
    ) -> Result<(), russh::Error> {
        let verdict = match self.active() {
            Some(a) => allowed(a.admission.task(), want),
            None => Err("not authenticated".into()),
        };
        match verdict {
            Ok(()) => session.channel_success(channel),
            Err(why) if matches!(want, Want::Shell | Want::Exec(_) | Want::Subsystem(_)) => {
                // OpenSSH drops stderr that arrives with a failure reply; accept the request,
                // say why, and end the channel with exit status 1 so the technician sees it.
                tracing::info!(reason = %why, "channel request refused");
                session.channel_success(channel)?;
                session.extended_data(
                    channel,
                    1,
                    format!("[jitgate] refused: {why}\r\n").into_bytes(),
                )?;
                session.exit_status_request(channel, 1)?;
                session.eof(channel)?;
                session.close(channel)
            }
            Err(why) => {
                if !matches!(want, Want::Env(_)) {
                    let _ = session.extended_data(
                        channel,
                        1,
                        format!("[jitgate] {why}\r\n").into_bytes(),
                    );
                }
                session.channel_failure(channel)
            }
        }
    }
}
