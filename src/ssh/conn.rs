//! One client connection's task: it owns the connection's state ([`ConnState`]) from the first
//! authentication attempt to the recorded end, and makes every transition in [`Connection::step`].
//! The russh handler ([`super::handler`]) only forwards what the client does; channel pumps
//! ([`super::bridge`], [`super::tcpip`]) move the bytes.
//!
//! ```text
//! Authenticating --both factors, session opened--> Admitted --cut, or client gone--> Closing
//!       |  token refused 3 times, login timeout, client gone                          |
//!       +------------------------------------------------------------------------> (end)
//! ```

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use russh::ChannelId;
use russh::server::Auth;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;

use super::bridge;
use super::handler::{Event, Verdict};
use super::link::{Client, Link, Target};
use super::login::{Login, Step};
use super::requests::{ChannelState, decide};
use super::server::Gateway;
use super::tcpip;
use super::timing;
use super::upstream::{self, Upstream, UpstreamError};
use crate::audit::AuditEvent;
use crate::config::{Allow, TargetKind};
use crate::grant::Admission;
use crate::net::gate::Pass;
use crate::net::killable::CloseMark;
use crate::session::{NewSession, SessionEvent, SessionGuard};
use crate::store::RequestKind;

/// Where a connection is.
pub(super) enum ConnState {
    /// Until the token (and the user's key, where they registered keys) let the client in.
    /// Boxed: it holds the admission, which the admitted state keeps behind its link.
    Authenticating(Box<Login>),
    /// The session is open and its target leg under way or up.
    Admitted(Admitted),
    /// Cut, or the client left: the session's end is being recorded.
    Closing,
}

/// An admitted connection.
pub(super) struct Admitted {
    guard: SessionGuard,
    link: Arc<Link>,
    /// The session's token: cancelled when it must end.
    cut: CancellationToken,
    /// The target leg while it connects (on a task of its own, so that it goes on while this
    /// one answers the client; aborted with the connection); `None` once settled, the result
    /// is in `target`.
    connecting: Option<AbortOnDropHandle<Result<Upstream, UpstreamError>>>,
    target: watch::Sender<Target>,
    /// Each open session channel: its pump's command queue and what it asked for so far.
    channels: HashMap<ChannelId, ChannelState>,
}

/// What the task waits for next.
enum Input {
    Event(Event),
    /// russh's connection task ended (the client left, or the socket failed).
    ClientGone,
    LoginTimedOut,
    Shutdown,
    Cut,
    TargetSettled(Result<Upstream, UpstreamError>),
}

/// Whether the connection goes on.
enum Flow {
    Continue,
    Done,
}

/// The socket under russh, as the connection's task can cut it.
pub(super) struct Socket {
    pub kill: CancellationToken,
    pub close_mark: CloseMark,
}

/// russh's running connection (its own task), as this task waits for it.
pub(super) type Running = Pin<Box<dyn Future<Output = Result<(), russh::Error>> + Send>>;

/// One connection's task.
pub(super) struct Connection {
    gw: Arc<Gateway>,
    peer: SocketAddr,
    client: Arc<dyn Client>,
    socket: Socket,
    /// A place among unauthenticated connections, given up once admitted.
    pass: Option<Pass>,
    state: ConnState,
}

impl Connection {
    pub fn new(
        gw: Arc<Gateway>,
        peer: SocketAddr,
        client: Arc<dyn Client>,
        socket: Socket,
        pass: Option<Pass>,
    ) -> Self {
        Self {
            gw,
            peer,
            client,
            socket,
            pass,
            state: ConnState::Authenticating(Box::default()),
        }
    }

    /// Serve the connection until it ends. `shutdown` ends it while it authenticates (admitted
    /// sessions are cut by the registry).
    pub async fn run(
        mut self,
        mut running: Running,
        mut events: mpsc::Receiver<Box<Event>>,
        shutdown: CancellationToken,
    ) {
        let login_deadline = tokio::time::sleep(self.gw.settings.login_timeout.duration());
        tokio::pin!(login_deadline);
        loop {
            let input = match &mut self.state {
                ConnState::Authenticating(_) => tokio::select! {
                    _ = &mut running => Input::ClientGone,
                    ev = events.recv() => ev.map_or(Input::ClientGone, |e| Input::Event(*e)),
                    _ = &mut login_deadline => Input::LoginTimedOut,
                    _ = shutdown.cancelled() => Input::Shutdown,
                },
                ConnState::Admitted(a) => tokio::select! {
                    r = &mut running => {
                        if let Err(e) = r {
                            tracing::debug!(session = %a.guard.id(), error = %e, "SSH connection ended with an error");
                        }
                        Input::ClientGone
                    }
                    _ = a.cut.cancelled() => Input::Cut,
                    ev = events.recv() => ev.map_or(Input::ClientGone, |e| Input::Event(*e)),
                    r = async { a.connecting.as_mut().expect("polled while connecting").await },
                        if a.connecting.is_some() => Input::TargetSettled(
                            r.unwrap_or_else(|e| Err(UpstreamError::Connect {
                                target: a.link.admission.target().name.to_string(),
                                address: String::new(),
                                reason: format!("the connection attempt failed: {e}"),
                            })),
                        ),
                },
                ConnState::Closing => return,
            };
            // Boxed: the task keeps room for what it awaits for its whole life, and a step (the
            // admission check, opening the session, a cut) is large and brief.
            if let Flow::Done = Box::pin(self.step(input, &mut running)).await {
                return;
            }
        }
    }

    /// Every transition of the connection's state.
    async fn step(&mut self, input: Input, running: &mut Running) -> Flow {
        let state = std::mem::replace(&mut self.state, ConnState::Closing);
        match (state, input) {
            // The large and brief steps are boxed on their own, so that the box of every
            // step (`run`) is the size of the common ones: when a ticket close cuts a thousand
            // sessions at once, each allocates its cut, not the largest of all steps.
            (ConnState::Authenticating(mut login), Input::Event(ev)) => {
                self.state = match Box::pin(self.authenticate(&mut login, ev)).await {
                    Some(admitted) => {
                        self.pass = None;
                        ConnState::Admitted(admitted)
                    }
                    None => ConnState::Authenticating(login),
                };
                Flow::Continue
            }
            (ConnState::Authenticating(login), Input::ClientGone) => {
                self.audit_incomplete(*login).await;
                Flow::Done
            }
            (ConnState::Authenticating(_), Input::LoginTimedOut) => {
                tracing::info!(peer = %self.peer, "SSH authentication timed out");
                self.client
                    .disconnect("authentication timed out".into())
                    .await;
                let _ = tokio::time::timeout(timing::SOCKET_CUT_WAIT, running).await;
                Flow::Done
            }
            (ConnState::Authenticating(_), Input::Shutdown) => Flow::Done,
            // Only an admitted connection has a cut or a target leg.
            (ConnState::Authenticating(_), Input::Cut | Input::TargetSettled(_)) => Flow::Done,
            (ConnState::Admitted(mut a), Input::Event(ev)) => {
                self.admitted_event(&mut a, ev).await;
                self.state = ConnState::Admitted(a);
                Flow::Continue
            }
            (ConnState::Admitted(mut a), Input::TargetSettled(r)) => {
                a.connecting = None;
                self.target_settled(&mut a, r).await;
                self.state = ConnState::Admitted(a);
                Flow::Continue
            }
            (ConnState::Admitted(a), Input::Cut) => {
                Box::pin(self.cut(a, running)).await;
                Flow::Done
            }
            (ConnState::Admitted(a), Input::ClientGone) => {
                Box::pin(self.client_gone(a)).await;
                Flow::Done
            }
            // Once admitted, the registry cuts the session on shutdown; the login deadline is
            // over.
            (ConnState::Admitted(a), Input::LoginTimedOut | Input::Shutdown) => {
                self.state = ConnState::Admitted(a);
                Flow::Continue
            }
            (ConnState::Closing, _) => Flow::Done,
        }
    }

    /// An authentication attempt; `Some` once the session is open.
    async fn authenticate(&mut self, login: &mut Login, ev: Event) -> Option<Admitted> {
        let gw = self.gw.clone();
        let (step, interactive, reply) = match ev {
            Event::Password {
                user,
                password,
                reply,
            } => {
                let r = login
                    .token(&*gw.admit, &gw.user_keys, self.peer.ip(), &user, &password)
                    .await;
                (self.counted(r, login, false), false, reply)
            }
            Event::KeyboardInteractive {
                answer: None,
                reply,
                ..
            } => (Step::Answer(login.start_prompt()), true, reply),
            Event::KeyboardInteractive {
                user,
                answer: Some(token),
                reply,
            } => {
                let r = login
                    .token(&*gw.admit, &gw.user_keys, self.peer.ip(), &user, &token)
                    .await;
                (self.counted(r, login, true), true, reply)
            }
            Event::KeyOffered { user, key, reply } => (
                Step::Answer(login.key_offered(&gw.user_keys, &user, &key)),
                false,
                reply,
            ),
            Event::KeyVerified { user, key, reply } => {
                (login.key_verified(&gw.user_keys, &user, &key), false, reply)
            }
            // Channels open only after authentication; nothing else needs an answer yet.
            other => {
                refuse_unauthenticated(other);
                return None;
            }
        };
        match step {
            Step::Answer(auth) => {
                let _ = reply.send(auth);
                None
            }
            Step::Open(admission) => match self.open(*admission).await {
                Ok(admitted) => {
                    let _ = reply.send(Auth::Accept);
                    Some(admitted)
                }
                Err(reason) => {
                    let _ = reply.send(login.open_failed(&reason, interactive));
                    None
                }
            },
        }
    }

    /// Count a token check's outcome; a refusal becomes the answer.
    fn counted(&self, r: Result<(bool, Step), String>, login: &Login, interactive: bool) -> Step {
        let metrics = &self.gw.metrics;
        match r {
            Ok((admitted_now, step)) => {
                if admitted_now {
                    metrics.admission(TargetKind::Ssh, true);
                }
                step
            }
            Err(why) => {
                metrics.admission(TargetKind::Ssh, false);
                Step::Answer(login.refused(&why, interactive))
            }
        }
    }

    /// Open the session of `admission` and start reaching the target. `Err` is the reason
    /// (audited) when the session cannot be opened (its recording cannot be created).
    async fn open(&mut self, admission: Admission) -> Result<Admitted, String> {
        let opened = self
            .gw
            .registry
            .open(
                &admission,
                NewSession {
                    protocol: TargetKind::Ssh,
                    source: self.peer.to_string(),
                },
            )
            .await;
        let guard = match opened {
            Ok(g) => g,
            Err(e) => {
                tracing::error!(error = %e, "cannot open a session");
                let reason = e.to_string();
                self.audit_denied(&admission, reason.clone()).await;
                return Err(reason);
            }
        };
        self.socket.close_mark.on_close(guard.on_client_closed());
        let cut = guard.token();
        self.socket.close_mark.cork_on(cut.clone());
        let record_terminal =
            self.gw.settings.record_terminal || admission.kind() == RequestKind::BreakGlass;
        let (target, watch_target) = watch::channel(Target::Connecting);
        let connecting = upstream::connect_for(
            self.gw.keys.clone(),
            admission.clone(),
            guard.id().clone(),
            self.gw.settings.target_timeout.duration(),
        );
        let link = Arc::new(Link::new(
            guard.handle(),
            admission,
            self.client.clone(),
            record_terminal,
            watch_target,
            self.socket.close_mark.clone(),
        ));
        Ok(Admitted {
            guard,
            link,
            cut,
            connecting: Some(AbortOnDropHandle::new(tokio::spawn(connecting))),
            target,
            channels: HashMap::new(),
        })
    }

    /// A channel event of an admitted connection.
    async fn admitted_event(&self, a: &mut Admitted, ev: Event) {
        let session = a.guard.id().clone();
        match ev {
            Event::OpenSession { channel, reply } => {
                if a.cut.is_cancelled() {
                    let _ = reply.send(false);
                    return;
                }
                let id = channel.id();
                let (tx, rx) = mpsc::unbounded_channel();
                // Channels whose pump has ended are forgotten as new ones open.
                a.channels.retain(|_, c| c.is_open());
                a.channels.insert(id, ChannelState::new(tx));
                let _ = reply.send(true);
                let link = a.link.clone();
                let ready = link.notices.token();
                a.link
                    .pumps
                    .spawn(bridge::session_channel(link, channel, rx, ready));
            }
            Event::OpenDirectTcpip {
                channel,
                host,
                port,
                originator,
                originator_port,
                reply,
            } => {
                let task = a.link.admission.task();
                let to_target = tcpip::is_target_host(&a.link.admission, &host);
                if !task.allow.contains(&Allow::PortForward) || !to_target {
                    tracing::info!(%session, %host, port, "port forward refused");
                    a.guard.add_event(SessionEvent::PortForwardRefused {
                        host,
                        port,
                        at: crate::types::rfc3339(crate::types::now()),
                    });
                    let _ = reply.send(false);
                    return;
                }
                let _ = reply.send(true);
                let link = a.link.clone();
                a.link.pumps.spawn(tcpip::direct_tcpip(
                    link,
                    channel,
                    host,
                    port,
                    originator,
                    originator_port,
                ));
            }
            Event::Request {
                channel,
                request,
                reply,
            } => {
                let verdict = decide(
                    a.link.admission.task(),
                    a.channels.get_mut(&channel),
                    request,
                );
                if let Verdict::Refuse { why, .. } | Verdict::RefuseAndEnd(why) = &verdict {
                    tracing::info!(%session, reason = %why, "channel request refused");
                }
                let _ = reply.send(verdict);
            }
            Event::Refused { what } => {
                tracing::info!(%session, "{what} refused");
            }
            // Authentication is over; russh asks no more.
            Event::Password { reply, .. }
            | Event::KeyboardInteractive { reply, .. }
            | Event::KeyOffered { reply, .. }
            | Event::KeyVerified { reply, .. } => {
                let _ = reply.send(Auth::reject());
            }
        }
    }

    /// The target leg connected or failed: publish it to the pumps (a failure reaches every
    /// channel waiting for the target now, with its reason) and audit a refused host key.
    async fn target_settled(&self, a: &mut Admitted, r: Result<Upstream, UpstreamError>) {
        match r {
            Ok(up) => {
                let _ = a.target.send(Target::Ready(Arc::new(up)));
            }
            Err(e) => {
                tracing::warn!(session = %a.guard.id(), error = %e, "target connection failed");
                if matches!(e, UpstreamError::HostKey { .. }) {
                    let _ = self
                        .gw
                        .audit
                        .record(
                            "system",
                            AuditEvent::TargetRefused {
                                session: a.guard.id().clone(),
                                target: a.link.admission.target().name.clone(),
                                reason: e.to_string(),
                            },
                        )
                        .await;
                }
                let _ = a.target.send(Target::Failed(e));
            }
        }
    }

    /// The session was cut (expiry, revocation, ticket, kill, shutdown). Nothing here waits on
    /// a peer's reply: the client is cut as soon as the reason, the channel closes and the
    /// disconnects are on their way, in that order. The last pump to queue its notice sends
    /// the disconnects itself (one hop less); this covers a connection without channels.
    async fn cut(&mut self, a: Admitted, running: &mut Running) {
        let reason = a.guard.ending_reason();
        a.link.pumps.close();
        a.link.notices.close();
        let _ = tokio::time::timeout(timing::NOTICES_WAIT, a.link.notices.wait()).await;
        // The target follows once the client's socket is closed (`Link::disconnect_both`).
        a.link.disconnect_client(&reason).await;
        // russh closes our side once the disconnect is written, then waits for the client to
        // close its side.
        if tokio::time::timeout(timing::CLIENT_CLOSE_WAIT, &mut *running)
            .await
            .is_err()
        {
            tracing::info!(session = %a.guard.id(), "client did not take the disconnect; cutting the socket");
            self.socket.close_mark.set_now();
            self.socket.kill.cancel();
            let _ = tokio::time::timeout(timing::SOCKET_CUT_WAIT, &mut *running).await;
        }
        a.link.disconnect_target_after_client(&reason).await;
        // The recordings get their final markers and are closed.
        let _ = tokio::time::timeout(timing::PUMPS_WAIT, a.link.pumps.wait()).await;
        let at = self.socket.close_mark.get();
        // Boxed: the end record's work is allocated once the socket is closed.
        Box::pin(a.guard.close(at)).await;
    }

    /// The client left: the pumps finish their recordings, the target is disconnected.
    async fn client_gone(&mut self, a: Admitted) {
        a.cut.cancel();
        a.link.pumps.close();
        let _ = tokio::time::timeout(timing::PUMPS_WAIT, a.link.pumps.wait()).await;
        a.link.disconnect_target("client disconnected").await;
        Box::pin(a.guard.close(None)).await;
    }

    /// A client that presented a valid token but never completed the second factor.
    async fn audit_incomplete(&self, login: Login) {
        if let Some(i) = login.incomplete {
            tracing::info!(peer = %self.peer, user = %i.user, reason = %i.reason, "SSH authentication incomplete");
            self.record_denied(i.user, i.grant, i.reason).await;
        }
    }

    async fn audit_denied(&self, admission: &Admission, reason: String) {
        self.record_denied(
            admission.user().name.to_string(),
            Some(admission.grant().clone()),
            reason,
        )
        .await;
    }

    async fn record_denied(
        &self,
        user: String,
        grant: Option<crate::types::GrantId>,
        reason: String,
    ) {
        let _ = self
            .gw
            .audit
            .record(
                "system",
                AuditEvent::AdmissionDenied {
                    user,
                    protocol: TargetKind::Ssh,
                    source: self.peer.ip().to_string(),
                    grant,
                    reason,
                },
            )
            .await;
    }
}

/// Before authentication nothing but authentication gets an answer.
fn refuse_unauthenticated(ev: Event) {
    match ev {
        Event::OpenSession { reply, .. } | Event::OpenDirectTcpip { reply, .. } => {
            let _ = reply.send(false);
        }
        Event::Request { reply, .. } => {
            let _ = reply.send(Verdict::Refuse {
                why: "not authenticated".into(),
                quiet: false,
            });
        }
        _ => {}
    }
}
