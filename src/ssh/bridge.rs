//! The channel pumps: each client channel is bridged to a target channel message by message
//! (pty, env, shell/exec/subsystem, data, resize, signals, exit status, EOF, close), recorded,
//! and ended with a visible reason when the session is cut.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use russh::server::Msg;
use russh::{Channel, ChannelMsg, ChannelReadHalf, ChannelWriteHalf};
use tokio::sync::mpsc;
use tokio_util::task::task_tracker::TaskTrackerToken;

use super::handler::PtyReq;
use super::link::Link;
use super::timing;
use crate::recording::cast::{CastOptions, CastRecorder, StampedMarker};
use crate::session::{Cause, FileInfo, SessionEvent};
use crate::store::RequestKind;

/// What the connection's task tells a session channel's pump, once it has allowed it. The
/// client's own requests also reach the pump on the channel; it acts only on these.
#[derive(Debug)]
pub(super) enum Command {
    Pty(PtyReq),
    Env(String, String),
    Start(Kind),
}

/// What runs on the channel.
#[derive(Debug)]
pub(super) enum Kind {
    Shell,
    Exec(Vec<u8>),
    Subsystem(String),
}

impl Kind {
    fn label(&self) -> &'static str {
        match self {
            Kind::Shell => "shell",
            Kind::Exec(_) => "exec",
            Kind::Subsystem(_) => "subsystem",
        }
    }
}

type UpWrite = ChannelWriteHalf<russh::client::Msg>;
type ClientTx = Arc<ChannelWriteHalf<Msg>>;

/// Bridge one session channel until it closes or the session is cut.
///
/// The two directions run as two loops so that a full window one way never stops the other
/// way from draining (an SFTP upload needs the target's acknowledgements to keep flowing).
///
/// `commands` are what the connection's task allowed, in the client's order. `ready` is held
/// until a cut's notice and channel closes are queued, so the connection sends its disconnect
/// after them.
pub(super) async fn session_channel(
    link: Arc<Link>,
    client: Channel<Msg>,
    commands: mpsc::UnboundedReceiver<Box<Command>>,
    ready: TaskTrackerToken,
) {
    let mut p = Pump::new(link);
    p.ready = Some(ready);
    let (c_rx, c_tx) = client.split();
    p.run(c_rx, commands, Arc::new(c_tx)).await;
}

/// Byte counters shared by both directions.
#[derive(Default)]
struct Counters {
    to_target: AtomicU64,
    to_client: AtomicU64,
}

struct Pump {
    link: Arc<Link>,
    env: Vec<(String, String)>,
    pty: Option<PtyReq>,
    buffered: Vec<Bytes>,
    eof_pending: bool,
    started: bool,
    up: Option<UpWrite>,
    down: Option<tokio::task::JoinHandle<()>>,
    cast: Option<CastRecorder>,
    /// A cut's reason for the recording, written just before it is finished.
    cut_marker: Option<StampedMarker>,
    file_no: u32,
    kind_label: &'static str,
    counters: Arc<Counters>,
    ready: Option<TaskTrackerToken>,
}

async fn down_done(down: &mut Option<tokio::task::JoinHandle<()>>) {
    match down {
        Some(h) => {
            let _ = h.await;
        }
        None => std::future::pending().await,
    }
}

impl Pump {
    fn new(link: Arc<Link>) -> Self {
        Self {
            link,
            env: Vec::new(),
            pty: None,
            buffered: Vec::new(),
            eof_pending: false,
            started: false,
            up: None,
            down: None,
            cast: None,
            cut_marker: None,
            file_no: 0,
            kind_label: "",
            counters: Arc::default(),
            ready: None,
        }
    }

    async fn run(
        &mut self,
        mut c_rx: ChannelReadHalf,
        mut commands: mpsc::UnboundedReceiver<Box<Command>>,
        c_tx: ClientTx,
    ) {
        let token = self.link.session.token();
        let mut warnings = self.link.session.warnings();
        loop {
            tokio::select! {
                biased;
                _ = token.cancelled() => {
                    self.terminate(&mut c_rx, &c_tx).await;
                    break;
                }
                changed = warnings.changed() => {
                    if changed.is_err() {
                        continue;
                    }
                    let text = warnings.borrow().clone();
                    if let Some(text) = text {
                        notice(&c_tx, self.pty.is_some(), self.cast.as_ref(), &format!("warning: {text}")).await;
                    }
                }
                msg = c_rx.wait() => {
                    let Some(msg) = msg else { break };
                    // A cut does not wait for this message's work (room in the target's
                    // window). Boxed, as below: the pump keeps room for what it awaits for its
                    // whole life, and handling one message is the largest of it.
                    let handled = tokio::select! {
                        biased;
                        _ = token.cancelled() => None,
                        keep = Box::pin(self.on_client(msg, &c_tx)) => Some(keep),
                    };
                    match handled {
                        Some(true) => {}
                        Some(false) => break,
                        None => {
                            self.terminate(&mut c_rx, &c_tx).await;
                            break;
                        }
                    }
                }
                Some(command) = commands.recv() => {
                    // Nor for the target: connecting to it, or opening its channel.
                    let handled = tokio::select! {
                        biased;
                        _ = token.cancelled() => None,
                        keep = Box::pin(self.on_command(*command, &c_tx)) => Some(keep),
                    };
                    match handled {
                        Some(true) => {}
                        Some(false) => break,
                        None => {
                            self.terminate(&mut c_rx, &c_tx).await;
                            break;
                        }
                    }
                }
                _ = down_done(&mut self.down) => {
                    // The target closed the channel (and the client was told).
                    self.down = None;
                    break;
                }
            }
        }
        if let Some(down) = self.down.take() {
            // Let the target's last output (exit status, close) reach the client.
            let _ = tokio::time::timeout(timing::TARGET_DRAIN, down).await;
        }
        self.wrap_up().await;
    }

    /// Handle one message from the client; `false` ends the pump.
    async fn on_client(&mut self, msg: ChannelMsg, c_tx: &ClientTx) -> bool {
        match msg {
            ChannelMsg::Data { data } => {
                self.counters
                    .to_target
                    .fetch_add(data.len() as u64, Ordering::Relaxed);
                if let Some(cast) = &self.cast
                    && let Err(e) = cast.input(data.clone()).await
                {
                    recording_failed(&self.link, c_tx, &e.to_string()).await;
                    return false;
                }
                match &self.up {
                    Some(tx) => {
                        if tx.data_bytes(data).await.is_err() {
                            return false;
                        }
                    }
                    // Typed before the target is ready: delivered once it is.
                    None => self.buffered.push(data),
                }
            }
            ChannelMsg::ExtendedData { .. } => {}
            ChannelMsg::Eof => match &self.up {
                Some(tx) => {
                    let _ = tx.eof().await;
                }
                None => self.eof_pending = true,
            },
            ChannelMsg::Close => {
                if let Some(tx) = &self.up {
                    let _ = tx.close().await;
                }
                return false;
            }
            ChannelMsg::WindowChange {
                col_width,
                row_height,
                pix_width,
                pix_height,
            } => {
                if let Some(p) = &mut self.pty {
                    p.cols = col_width;
                    p.rows = row_height;
                }
                if let Some(tx) = &self.up {
                    let _ = tx
                        .window_change(col_width, row_height, pix_width, pix_height)
                        .await;
                }
                if let Some(cast) = &self.cast {
                    let _ = cast
                        .resize(
                            col_width.min(u16::MAX as u32) as u16,
                            row_height.min(u16::MAX as u32) as u16,
                        )
                        .await;
                }
            }
            ChannelMsg::Signal { signal } => {
                if let Some(tx) = &self.up {
                    let _ = tx.signal(signal).await;
                }
            }
            _ => {}
        }
        true
    }

    /// Do what the connection's task allowed; `false` ends the pump.
    async fn on_command(&mut self, command: Command, c_tx: &ClientTx) -> bool {
        match command {
            Command::Pty(p) => self.pty = Some(p),
            Command::Env(k, v) => self.env.push((k, v)),
            Command::Start(kind) => return self.start(kind, c_tx).await,
        }
        true
    }

    /// Open the target channel for a shell, command or subsystem (once per channel).
    async fn start(&mut self, kind: Kind, c_tx: &ClientTx) -> bool {
        if self.started {
            return true;
        }
        self.started = true;
        self.kind_label = kind.label();
        let upstream = match self.link.target().await {
            Ok(u) => u,
            Err(e) => {
                fail(&self.link, c_tx, &e.to_string()).await;
                return false;
            }
        };
        let ch = match upstream.handle.channel_open_session().await {
            Ok(ch) => ch,
            Err(e) => {
                fail(
                    &self.link,
                    c_tx,
                    &format!("the target refused a session channel: {e}"),
                )
                .await;
                return false;
            }
        };
        let (up_rx, up_tx) = ch.split();
        self.file_no = self.link.next_file();
        // Record before anything reaches the target: no unrecorded privileged session.
        if self.link.record_terminal && !matches!(kind, Kind::Subsystem(_)) {
            let a = &self.link.admission;
            let name = format!("{}.cast", self.file_no);
            let (cols, rows) = self
                .pty
                .as_ref()
                .map(|p| (p.cols as u16, p.rows as u16))
                .unwrap_or((80, 24));
            let opts = CastOptions {
                width: cols.max(1),
                height: rows.max(1),
                term: self.pty.as_ref().map(|p| p.term.clone()),
                title: format!(
                    "jitgate {} {}@{} task {} ticket {}",
                    self.link.session.id(),
                    a.user().name,
                    a.target().name,
                    a.task().name,
                    a.ticket()
                ),
                record_input: a.task().record_input || a.kind() == RequestKind::BreakGlass,
                pty: self.pty.is_some(),
            };
            match CastRecorder::start(&self.link.session.dir().join(&name), opts) {
                Ok(r) => {
                    self.link.session.add_file(FileInfo {
                        name,
                        channel: self.file_no,
                        kind: kind.label().into(),
                        command: match &kind {
                            Kind::Exec(c) => {
                                Some(String::from_utf8_lossy(c).chars().take(1000).collect())
                            }
                            _ => None,
                        },
                        summary: None,
                    });
                    self.cast = Some(r);
                }
                Err(e) => {
                    let _ = up_tx.close().await;
                    recording_failed(&self.link, c_tx, &e.to_string()).await;
                    return false;
                }
            }
        }
        // Target → client runs on its own from here.
        self.down = Some(tokio::spawn(downstream(
            self.link.clone(),
            up_rx,
            c_tx.clone(),
            self.cast.clone(),
            self.counters.clone(),
        )));
        for (k, v) in std::mem::take(&mut self.env) {
            let _ = up_tx.set_env(false, k, v).await;
        }
        if let Some(p) = &self.pty {
            let _ = up_tx
                .request_pty(false, &p.term, p.cols, p.rows, p.pw, p.ph, &p.modes)
                .await;
        }
        let sent = match &kind {
            Kind::Shell => up_tx.request_shell(true).await,
            Kind::Exec(cmd) => up_tx.exec(true, cmd.clone()).await,
            Kind::Subsystem(name) => up_tx.request_subsystem(true, name.clone()).await,
        };
        if sent.is_err() {
            fail(&self.link, c_tx, "the target closed the channel").await;
            return false;
        }
        for data in std::mem::take(&mut self.buffered) {
            if up_tx.data_bytes(data).await.is_err() {
                return false;
            }
        }
        if self.eof_pending {
            let _ = up_tx.eof().await;
        }
        self.up = Some(up_tx);
        true
    }

    /// The session was cut: tell the technician, mark the recording, close the client's
    /// channel, and wait briefly for the client to confirm.
    async fn terminate(&mut self, c_rx: &mut ChannelReadHalf, c_tx: &ClientTx) {
        let reason = self.link.session.ending_reason();
        if let Some(down) = self.down.take() {
            down.abort();
        }
        // The recording's marker keeps this instant; the writer writes it after the sockets
        // of every session being cut are closed (`wrap_up`), not among them.
        let text = format!("session terminated: {reason}");
        tell(c_tx, self.pty.is_some(), &text).await;
        self.cut_marker = self.cast.as_ref().map(|cast| cast.stamp(&text));
        // The client's side only: the target's channels end with its disconnect, which
        // follows the client's (`Link::disconnect_both`).
        let closes = async {
            let _ = c_tx.eof().await;
            let _ = c_tx.close().await;
        };
        let _ = tokio::time::timeout(timing::PEER_WRITE, closes).await;
        // Queued: the connection may be disconnected now; the last pump here does it.
        self.link.notices.close();
        self.ready = None;
        if self.link.notices.is_empty() {
            self.link.disconnect_both(&reason).await;
        }
        let acknowledged = async {
            while let Some(m) = c_rx.wait().await {
                if matches!(m, ChannelMsg::Close) {
                    break;
                }
            }
        };
        let _ = tokio::time::timeout(timing::PEER_WRITE, acknowledged).await;
    }

    async fn wrap_up(&mut self) {
        let to_target = self.counters.to_target.load(Ordering::Relaxed);
        let to_client = self.counters.to_client.load(Ordering::Relaxed);
        let session = &self.link.session;
        session.add_bytes(to_target, to_client);
        if let Some(cast) = self.cast.take() {
            // Within the connection task's wait for its pumps (timing::PUMPS_WAIT).
            session.after_pending_cuts(timing::PENDING_CUTS_WAIT).await;
            if let Some(marker) = self.cut_marker.take() {
                let _ = cast.record(marker).await;
            }
            match cast.finish().await {
                Ok(summary) => session.file_finished(summary),
                Err(e) => {
                    tracing::error!(session = %session.id(), error = %e, "recording could not be finished")
                }
            }
        }
        if self.kind_label == "subsystem" {
            session.add_event(SessionEvent::Sftp {
                channel: self.file_no,
                bytes_to_target: to_target,
                bytes_to_client: to_client,
                at: crate::types::rfc3339(crate::types::now()),
            });
        }
    }
}

/// Target → client: output, exit status, EOF and close, recorded on the way.
async fn downstream(
    link: Arc<Link>,
    mut up_rx: ChannelReadHalf,
    c_tx: ClientTx,
    cast: Option<CastRecorder>,
    counters: Arc<Counters>,
) {
    // The rare endings (a failed recording, a refused request) are boxed: the task keeps room
    // for what it awaits for its whole life.
    while let Some(msg) = up_rx.wait().await {
        match msg {
            ChannelMsg::Data { data } => {
                counters
                    .to_client
                    .fetch_add(data.len() as u64, Ordering::Relaxed);
                if let Some(cast) = &cast
                    && let Err(e) = cast.output(data.clone()).await
                {
                    Box::pin(recording_failed(&link, &c_tx, &e.to_string())).await;
                    return;
                }
                if c_tx.data_bytes(data).await.is_err() {
                    return;
                }
            }
            ChannelMsg::ExtendedData { data, ext } => {
                counters
                    .to_client
                    .fetch_add(data.len() as u64, Ordering::Relaxed);
                if let Some(cast) = &cast
                    && let Err(e) = cast.output(data.clone()).await
                {
                    Box::pin(recording_failed(&link, &c_tx, &e.to_string())).await;
                    return;
                }
                if c_tx.extended_data_bytes(ext, data).await.is_err() {
                    return;
                }
            }
            ChannelMsg::Eof => {
                let _ = c_tx.eof().await;
            }
            ChannelMsg::ExitStatus { exit_status } => {
                let _ = c_tx.exit_status(exit_status).await;
            }
            ChannelMsg::ExitSignal {
                signal_name,
                core_dumped,
                error_message,
                ..
            } => {
                link.client
                    .exit_signal(c_tx.id(), signal_name, core_dumped, error_message)
                    .await;
            }
            ChannelMsg::Failure => {
                Box::pin(fail(&link, &c_tx, "the target refused the request")).await;
                return;
            }
            ChannelMsg::Close => {
                let _ = c_tx.close().await;
                return;
            }
            _ => {}
        }
    }
    // The target's connection ended without closing the channel: it stopped answering (no
    // reply to keepalives within gateway.target_timeout) or went away. Unless the gateway is
    // cutting the session itself, the technician is told, and the session ends with that cause.
    if link.session.ending().is_none() {
        let reason = format!(
            "the connection to target {} was lost (it stopped answering or closed); the session was ended",
            link.admission.target().name
        );
        fail(&link, &c_tx, &reason).await;
        link.session.end(Cause::Target, &reason);
        return;
    }
    let _ = c_tx.close().await;
}

/// Show a line to the technician (and mark it in the recording).
async fn notice(c_tx: &ClientTx, pty: bool, cast: Option<&CastRecorder>, text: &str) {
    tell(c_tx, pty, text).await;
    if let Some(cast) = cast {
        let _ = cast.marker(text).await;
    }
}

/// Tell the technician `text` on the terminal (with a PTY) or on stderr.
async fn tell(c_tx: &ClientTx, pty: bool, text: &str) {
    let line = format!("\r\n[jitgate] {text}\r\n");
    let write = async {
        if pty {
            c_tx.data_bytes(Bytes::from(line)).await
        } else {
            c_tx.extended_data_bytes(1, Bytes::from(line)).await
        }
    };
    let _ = tokio::time::timeout(timing::PEER_WRITE, write).await;
}

/// The request could not be served: say why, exit 1, close.
async fn fail(link: &Link, c_tx: &ClientTx, why: &str) {
    tracing::info!(session = %link.session.id(), reason = %why, "channel refused");
    let _ = c_tx
        .extended_data_bytes(1, Bytes::from(format!("[jitgate] {why}\r\n")))
        .await;
    let _ = c_tx.exit_status(1).await;
    let _ = c_tx.eof().await;
    let _ = c_tx.close().await;
}

/// A recording could not be written: end the channel and the session with a message.
async fn recording_failed(link: &Link, c_tx: &ClientTx, why: &str) {
    let reason = format!("{why}; the session was ended because it cannot be recorded");
    fail(link, c_tx, &reason).await;
    link.session.end(Cause::Recording, &reason);
}
