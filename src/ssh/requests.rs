//! The one check of a client's channel request: the task's allow-list decides the answer, and
//! what is allowed becomes a command for the channel's pump. The connection's task calls
//! [`decide`] for every request; nothing else checks them.

use tokio::sync::mpsc;

use super::bridge::{Command, Kind};
use super::handler::{Request, Verdict};
use super::{allowed, env_allowed};
use crate::config::TaskConfig;

/// Environment variables passed on per channel; more are acknowledged and dropped.
const MAX_ENV: usize = 32;

/// What a session channel asked for so far, and its pump's command queue.
pub(super) struct ChannelState {
    /// Boxed, as the handler's events are (see [`super::handler::Events`]).
    commands: mpsc::UnboundedSender<Box<Command>>,
    env: usize,
    started: bool,
}

impl ChannelState {
    pub fn new(commands: mpsc::UnboundedSender<Box<Command>>) -> Self {
        Self {
            commands,
            env: 0,
            started: false,
        }
    }

    /// Whether the channel's pump still runs.
    pub fn is_open(&self) -> bool {
        !self.commands.is_closed()
    }
}

/// The one check of a channel request: the task's allow-list, then what the channel's pump is
/// told to do.
pub(super) fn decide(
    task: &TaskConfig,
    ch: Option<&mut ChannelState>,
    request: Request,
) -> Verdict {
    let want = request.want();
    if let Err(why) = allowed(task, want) {
        return match request {
            Request::Shell | Request::Exec(_) | Request::Subsystem(_) => Verdict::RefuseAndEnd(why),
            Request::Env { .. } => Verdict::Refuse { why, quiet: true },
            _ => Verdict::Refuse { why, quiet: false },
        };
    }
    let Some(ch) = ch else {
        return Verdict::Refuse {
            why: "no such channel".into(),
            quiet: false,
        };
    };
    let command = match request {
        Request::Pty(p) => Some(Command::Pty(p)),
        Request::Env { name, value } => {
            debug_assert!(env_allowed(&name));
            ch.env += 1;
            (ch.env <= MAX_ENV).then_some(Command::Env(name, value))
        }
        Request::Shell => Some(Command::Start(Kind::Shell)),
        Request::Exec(cmd) => Some(Command::Start(Kind::Exec(cmd))),
        Request::Subsystem(name) => Some(Command::Start(Kind::Subsystem(name))),
        Request::X11 => None,
    };
    if let Some(c) = command {
        if matches!(c, Command::Start(_)) {
            if ch.started {
                // One program per channel (RFC 4254 6.5); the first one runs.
                return Verdict::Refuse {
                    why: "this channel already runs a shell, command or subsystem".into(),
                    quiet: false,
                };
            }
            ch.started = true;
        }
        let _ = ch.commands.send(Box::new(c));
    }
    Verdict::Allow
}
