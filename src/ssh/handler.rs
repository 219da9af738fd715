//! The russh side of a client connection, as a thin adapter: every callback that needs a
//! decision becomes an [`Event`] for the connection's task ([`super::conn`]), and the callback
//! answers russh with what comes back. It keeps no state; when the connection's task is gone,
//! every question is answered with a refusal.

use russh::keys::ssh_key::PublicKey;
use russh::server::{self, Auth, Msg, Session};
use russh::{Channel, ChannelId, Pty};
use tokio::sync::{mpsc, oneshot};

use super::Want;

/// A terminal as the client asked for it.
#[derive(Debug, Clone)]
pub(super) struct PtyReq {
    pub term: String,
    pub cols: u32,
    pub rows: u32,
    pub pw: u32,
    pub ph: u32,
    pub modes: Vec<(Pty, u32)>,
}

/// A channel request that needs the task's decision.
#[derive(Debug, Clone)]
pub(super) enum Request {
    Pty(PtyReq),
    Env { name: String, value: String },
    Shell,
    Exec(Vec<u8>),
    Subsystem(String),
    X11,
}

impl Request {
    /// What the task's allow-list sees.
    pub fn want(&self) -> Want<'_> {
        match self {
            Request::Pty(_) => Want::Pty,
            Request::Env { name, .. } => Want::Env(name),
            Request::Shell => Want::Shell,
            Request::Exec(cmd) => Want::Exec(cmd),
            Request::Subsystem(name) => Want::Subsystem(name),
            Request::X11 => Want::X11,
        }
    }
}

/// The task's answer to a channel request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Verdict {
    Allow,
    /// A failure reply, with the reason on the channel's stderr (none for `env`, which clients
    /// send unasked).
    Refuse {
        why: String,
        quiet: bool,
    },
    /// For a shell, command or subsystem: OpenSSH drops stderr that comes with a failure reply,
    /// so the request is accepted, the reason shown, and the channel ended with exit status 1.
    RefuseAndEnd(String),
}

/// What the handler asks the connection's task, each with the channel for the answer.
pub(super) enum Event {
    /// A token typed at the password prompt.
    Password {
        user: String,
        password: String,
        reply: oneshot::Sender<Auth>,
    },
    /// Keyboard-interactive: `None` when the client starts it, then each answer.
    KeyboardInteractive {
        user: String,
        answer: Option<String>,
        reply: oneshot::Sender<Auth>,
    },
    /// A public key offered (not yet proven).
    KeyOffered {
        user: String,
        key: PublicKey,
        reply: oneshot::Sender<Auth>,
    },
    /// A public key whose signature russh verified.
    KeyVerified {
        user: String,
        key: PublicKey,
        reply: oneshot::Sender<Auth>,
    },
    OpenSession {
        channel: Channel<Msg>,
        reply: oneshot::Sender<bool>,
    },
    OpenDirectTcpip {
        channel: Channel<Msg>,
        host: String,
        port: u32,
        originator: String,
        originator_port: u32,
        reply: oneshot::Sender<bool>,
    },
    Request {
        channel: ChannelId,
        request: Request,
        reply: oneshot::Sender<Verdict>,
    },
    /// A request jitgate never grants (agent or remote forwarding), for the log.
    Refused { what: &'static str },
}

/// The queue of events to the connection's task. Events go boxed: a tokio channel keeps room
/// for 32 messages per block whatever its capacity, and an event (with its channel) is a few
/// hundred bytes, which every idle connection would carry.
pub(super) type Events = mpsc::Sender<Box<Event>>;

/// One connection's russh handler.
pub(super) struct Handler {
    events: Events,
}

impl Handler {
    /// A handler whose events go to `events`.
    pub fn new(events: Events) -> Self {
        Self { events }
    }

    /// Ask the task; `None` when it is gone.
    async fn ask<T>(&self, event: impl FnOnce(oneshot::Sender<T>) -> Event) -> Option<T> {
        let (tx, rx) = oneshot::channel();
        self.events.send(Box::new(event(tx))).await.ok()?;
        rx.await.ok()
    }

    async fn auth(&self, event: impl FnOnce(oneshot::Sender<Auth>) -> Event) -> Auth {
        self.ask(event).await.unwrap_or_else(Auth::reject)
    }

    async fn request(
        &self,
        channel: ChannelId,
        request: Request,
        session: &mut Session,
    ) -> Result<(), russh::Error> {
        let verdict = self
            .ask(|reply| Event::Request {
                channel,
                request,
                reply,
            })
            .await
            .unwrap_or(Verdict::Refuse {
                why: "the session is ending".into(),
                quiet: false,
            });
        // Answered here, in the callback: russh keeps one reply flag per channel, which the
        // next request would overwrite.
        match verdict {
            Verdict::Allow => session.channel_success(channel),
            Verdict::RefuseAndEnd(why) => {
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
            Verdict::Refuse { why, quiet } => {
                if !quiet {
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

impl server::Handler for Handler {
    type Error = russh::Error;

    async fn auth_none(&mut self, _user: &str) -> Result<Auth, Self::Error> {
        Ok(Auth::Reject {
            proceed_with_methods: None,
            partial_success: false,
        })
    }

    async fn auth_password(&mut self, user: &str, password: &str) -> Result<Auth, Self::Error> {
        let (user, password) = (user.to_string(), password.to_string());
        Ok(self
            .auth(|reply| Event::Password {
                user,
                password,
                reply,
            })
            .await)
    }

    async fn auth_keyboard_interactive<'a>(
        &'a mut self,
        user: &str,
        _submethods: &str,
        response: Option<server::Response<'a>>,
    ) -> Result<Auth, Self::Error> {
        let answer = response.map(|mut answers| {
            let answer = answers.next().unwrap_or_default();
            String::from_utf8_lossy(&answer).trim().to_string()
        });
        let user = user.to_string();
        Ok(self
            .auth(|reply| Event::KeyboardInteractive {
                user,
                answer,
                reply,
            })
            .await)
    }

    async fn auth_publickey_offered(
        &mut self,
        user: &str,
        offer: server::PublicKeyOffer<'_>,
    ) -> Result<Auth, Self::Error> {
        let (user, key) = (user.to_string(), offer.public_key.clone());
        Ok(self
            .auth(|reply| Event::KeyOffered { user, key, reply })
            .await)
    }

    async fn auth_publickey(
        &mut self,
        user: &str,
        key: server::VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        let (user, key) = (user.to_string(), key.public_key.clone());
        Ok(self
            .auth(|reply| Event::KeyVerified { user, key, reply })
            .await)
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: server::ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        if self
            .ask(|r| Event::OpenSession { channel, reply: r })
            .await
            .unwrap_or(false)
        {
            reply.accept().await;
        }
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
        let (host, originator) = (host.to_string(), originator.to_string());
        let open = self
            .ask(|r| Event::OpenDirectTcpip {
                channel,
                host,
                port,
                originator,
                originator_port,
                reply: r,
            })
            .await;
        if open.unwrap_or(false) {
            reply.accept().await;
        }
        Ok(())
    }

    async fn pty_request(
        &mut self,
        channel: ChannelId,
        term: &str,
        cols: u32,
        rows: u32,
        pw: u32,
        ph: u32,
        modes: &[(Pty, u32)],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let pty = PtyReq {
            term: term.to_string(),
            cols,
            rows,
            pw,
            ph,
            modes: modes.to_vec(),
        };
        self.request(channel, Request::Pty(pty), session).await
    }

    async fn env_request(
        &mut self,
        channel: ChannelId,
        name: &str,
        value: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let request = Request::Env {
            name: name.to_string(),
            value: value.to_string(),
        };
        self.request(channel, request, session).await
    }

    async fn shell_request(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.request(channel, Request::Shell, session).await
    }

    async fn exec_request(
        &mut self,
        channel: ChannelId,
        data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.request(channel, Request::Exec(data.to_vec()), session)
            .await
    }

    async fn subsystem_request(
        &mut self,
        channel: ChannelId,
        name: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.request(channel, Request::Subsystem(name.to_string()), session)
            .await
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
        self.request(channel, Request::X11, session).await
    }

    async fn agent_request(
        &mut self,
        _channel: ChannelId,
        _session: &mut Session,
    ) -> Result<bool, Self::Error> {
        let _ = self
            .events
            .send(Box::new(Event::Refused {
                what: "agent forwarding",
            }))
            .await;
        Ok(false)
    }

    async fn tcpip_forward(
        &mut self,
        _address: &str,
        _port: &mut u32,
        _session: &mut Session,
    ) -> Result<bool, Self::Error> {
        let _ = self
            .events
            .send(Box::new(Event::Refused {
                what: "remote forwarding",
            }))
            .await;
        Ok(false)
    }
}
