//! The SSH gateway: technicians connect with stock OpenSSH, authenticate with their grant token
//! (keyboard-interactive `Grant token:` or the password method, plus their registered public key
//! where they have one), and reach the grant's target over a second SSH connection that jitgate
//! opens with a certificate minted for this session only. Every channel is bridged message by
//! message, recorded, and cut when the grant ends.

pub mod algorithms;
mod bridge;
mod conn;
mod handler;
mod link;
mod login;
mod requests;
pub mod server;
pub mod tcpip;
pub mod timing;
pub mod upstream;

#[cfg(test)]
mod tests;

use std::collections::HashMap;

use russh::keys::ssh_key::PublicKey;

use crate::config::{Allow, TaskConfig, UserConfig};

/// The public keys users registered (`ssh_keys`), parsed once: a user with any must present one
/// of them as well as the grant token.
#[derive(Debug, Default)]
pub struct UserKeys(HashMap<String, Vec<PublicKey>>);

impl UserKeys {
    /// The keys of `users` (lines that do not parse are left out; `jitgate check` reports them).
    pub fn new(users: &[UserConfig]) -> Self {
        let mut m: HashMap<String, Vec<PublicKey>> = HashMap::new();
        for u in users.iter().filter(|u| !u.ssh_keys.is_empty()) {
            let keys = m.entry(u.name.to_string()).or_default();
            keys.extend(
                u.ssh_keys
                    .iter()
                    .filter_map(|k| PublicKey::from_openssh(k).ok()),
            );
        }
        Self(m)
    }

    /// Whether `user` registered keys (and so must present one).
    pub fn has_keys(&self, user: &str) -> bool {
        self.0.contains_key(user)
    }

    /// Whether `key` is one of `user`'s.
    pub fn is_registered(&self, user: &str, key: &PublicKey) -> bool {
        self.0
            .get(user)
            .is_some_and(|ks| ks.iter().any(|k| k.key_data() == key.key_data()))
    }
}

/// What a client asks for on a session channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want<'a> {
    Pty,
    Shell,
    Exec(&'a [u8]),
    Subsystem(&'a str),
    Env(&'a str),
    X11,
    Agent,
}

/// Whether `cmd` moves files (legacy scp, rsync): allowed only where the task allows transfers.
pub fn is_transfer_command(cmd: &[u8]) -> bool {
    let cmd = String::from_utf8_lossy(cmd);
    let first = cmd.split_whitespace().next().unwrap_or("");
    let prog = first.rsplit('/').next().unwrap_or(first);
    matches!(prog, "scp" | "rsync" | "sftp-server") || (prog == "rsync" && cmd.contains("--server"))
}

/// Environment variables passed through to the target.
pub fn env_allowed(name: &str) -> bool {
    matches!(name, "TERM" | "LANG" | "COLORTERM") || name.starts_with("LC_")
}

/// Whether `task` allows `want`; `Err` says why not (shown to the technician).
pub fn allowed(task: &TaskConfig, want: Want<'_>) -> Result<(), String> {
    let has = |a: Allow| task.allow.contains(&a);
    match want {
        Want::Pty if has(Allow::Pty) => Ok(()),
        Want::Pty => Err(format!(
            "task {} does not allow a terminal (pty)",
            task.name
        )),
        Want::Shell if has(Allow::Shell) => Ok(()),
        Want::Shell => Err(format!(
            "task {} does not allow an interactive shell",
            task.name
        )),
        Want::Exec(cmd) if is_transfer_command(cmd) => {
            if has(Allow::Sftp) {
                Ok(())
            } else {
                Err(format!("task {} does not allow file transfer", task.name))
            }
        }
        Want::Exec(_) if has(Allow::Exec) => Ok(()),
        // With a forced command the target runs it whatever was asked; let the request through.
        Want::Exec(_) if task.force_command.is_some() && has(Allow::Shell) => Ok(()),
        Want::Exec(_) => Err(format!(
            "task {} does not allow running commands",
            task.name
        )),
        Want::Subsystem("sftp") if has(Allow::Sftp) => Ok(()),
        Want::Subsystem("sftp") => Err(format!(
            "task {} does not allow file transfer (sftp, scp)",
            task.name
        )),
        Want::Subsystem(other) => Err(format!("subsystem {other} is not available")),
        Want::Env(name) if env_allowed(name) => Ok(()),
        Want::Env(name) => Err(format!("environment variable {name} is not passed through")),
        Want::X11 => Err("X11 forwarding is not available through jitgate".into()),
        Want::Agent => Err("agent forwarding is not available through jitgate".into()),
    }
}
