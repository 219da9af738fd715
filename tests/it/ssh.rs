//! The SSH gateway end to end: the real `jitgate serve`, a real OpenSSH `sshd` as the target
//! (trusting only the gateway's user CA) and real OpenSSH clients (`ssh`, `scp`, `sftp`, `rsync`
//! through `sshpass`, and `ssh` on a real pseudo-terminal for interactive shells).
//!
//! Each test starts its own sshd and gateway; the tests live in the submodules by theme.

mod channels;
mod cuts;
mod faults;
mod recording;
mod refusals;

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

pub use crate::flows::{Granted, session_ended_record};
use crate::flows::{approved_token, open_ticket, request};
use crate::harness::{Gateway, Opts, Out, Policy, output};
use crate::sshd::Sshd;

/// The tasks every SSH test gateway offers on the target `box`.
pub const TASKS: &str = r#"
[[tasks]]
name = "ops"
description = "Operate the test box: shell, commands, file transfer and port forwards"
targets = ["box"]
principal = "jitgate-it"
allow = ["pty", "shell", "exec", "sftp", "port-forward"]
max_ttl = "1h"

[[tasks]]
name = "shell-only"
description = "Shell and commands, no file transfer or port forwards"
targets = ["box"]
principal = "jitgate-it"
allow = ["pty", "shell", "exec"]
max_ttl = "1h"

[[tasks]]
name = "forced"
description = "Runs one fixed command whatever is asked"
targets = ["box"]
principal = "jitgate-it"
force_command = "/bin/echo forced"
allow = ["pty", "shell", "exec"]
max_ttl = "1h"
"#;

/// A gateway in front of its own sshd. The gateway is declared first so it stops first.
pub struct Env {
    pub gw: Gateway,
    pub sshd: Sshd,
}

impl Env {
    /// sshd, then a gateway pinning sshd's real host key.
    pub fn start() -> Self {
        Self::with(None, "")
    }

    /// sshd, then a gateway pinning `pin` (default: sshd's real host key) with `extra` TOML.
    pub fn with(pin: Option<&str>, extra: &str) -> Self {
        Self::build(pin, |o| o.extra(extra))
    }

    /// sshd, then a gateway pinning `pin` (default: sshd's real host key), its options as
    /// `more` makes them.
    pub fn build(pin: Option<&str>, more: impl FnOnce(Opts) -> Opts) -> Self {
        let sshd = Sshd::start();
        let key = pin
            .map(str::to_string)
            .unwrap_or_else(|| sshd.host_key.clone());
        let opts = more(
            Opts::default()
                .policy(Policy::None)
                .extra(&sshd.target_toml("box", &key))
                .extra(TASKS),
        );
        let mut gw = Gateway::prepare(opts);
        gw.init();
        // As an admin would: the target trusts the user CA that `init` made.
        sshd.trust(&gw.path("certs/ssh_user_ca.pub"));
        gw.serve();
        Self { gw, sshd }
    }
}

/// Open `ticket` for `user`, request `task` on `box` for `ttl`, approve as bob, fetch the token.
pub fn grant(gw: &Gateway, user: &str, task: &str, ticket: &str, ttl: &str) -> Granted {
    open_ticket(gw, ticket, user);
    let (code, v, err) = request(gw, user, task, "box", ticket, ttl, "integration test");
    assert_eq!(code, 0, "request {task} as {user}: {v} {err}");
    assert_eq!(v["state"], "pending", "{v}");
    let id = v["id"].as_str().expect("request id").to_string();
    approved_token(gw, user, id)
}

/// Quiet clients: only errors on stderr. ssh takes the first value it is given for an option,
/// so this goes after a test's own options (which may ask for `LogLevel=INFO`).
pub const QUIET: [&str; 2] = ["-o", "LogLevel=ERROR"];

/// Options every client gets: no user config, no host-key prompts.
pub fn client_opts() -> Vec<String> {
    [
        "-F",
        "/dev/null",
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-o",
        "ConnectTimeout=10",
    ]
    .map(String::from)
    .to_vec()
}

/// `sshpass` typing `token` at the password prompt of `prog args`.
pub fn with_token(token: &str, prog: &str, args: &[String]) -> Command {
    let mut cmd = Command::new("sshpass");
    cmd.arg("-e").arg(prog).args(args).env("SSHPASS", token);
    cmd.env_remove("SSH_AUTH_SOCK");
    cmd
}

/// `ssh` arguments: `-p PORT [opts] user@127.0.0.1 args...`, password authentication, quiet.
fn ssh_args(gw: &Gateway, user: &str, opts: &[&str], args: &[&str]) -> Vec<String> {
    let mut a = client_opts();
    a.extend(["-o", "PreferredAuthentications=password", "-p"].map(String::from));
    a.push(gw.ssh_port().to_string());
    a.extend(opts.iter().map(|s| s.to_string()));
    a.extend(QUIET.map(String::from));
    a.push(format!("{user}@127.0.0.1"));
    a.extend(args.iter().map(|s| s.to_string()));
    a
}

/// `ssh -p PORT [opts] user@127.0.0.1 args...` with the token as the password (sshpass).
pub fn ssh_cmd(gw: &Gateway, token: &str, user: &str, opts: &[&str], args: &[&str]) -> Command {
    with_token(token, "ssh", &ssh_args(gw, user, opts, args))
}

/// The same as [`ssh_cmd`], but ssh asks an askpass helper (written into `dir`) for the token, so
/// that ssh itself is the child process (for clients run in the background).
pub fn ssh_askpass_cmd(
    gw: &Gateway,
    token: &str,
    user: &str,
    opts: &[&str],
    dir: &Path,
) -> Command {
    use std::os::unix::fs::PermissionsExt;
    let askpass = dir.join("askpass.sh");
    std::fs::write(
        &askpass,
        "#!/bin/sh\nprintf '%s\\n' \"$JITGATE_IT_TOKEN\"\n",
    )
    .expect("write the askpass helper");
    std::fs::set_permissions(&askpass, std::fs::Permissions::from_mode(0o700))
        .expect("chmod the askpass helper");
    let mut cmd = Command::new("ssh");
    cmd.args(ssh_args(gw, user, opts, &[]))
        .env("SSH_ASKPASS", &askpass)
        .env("SSH_ASKPASS_REQUIRE", "force")
        .env("JITGATE_IT_TOKEN", token)
        .env_remove("SSH_AUTH_SOCK");
    cmd
}

/// Run `cmd` on the target through the gateway as `user` with `token`.
pub fn ssh_exec(gw: &Gateway, token: &str, user: &str, cmd: &str) -> Out {
    output(ssh_cmd(gw, token, user, &[], &[cmd]))
}

/// Hex SHA-256 of a file.
pub fn sha256_file(p: &Path) -> String {
    let bytes = std::fs::read(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()));
    jitgate::crypto::sha256_hex(&bytes)
}

/// Sessions of `grant`, as admin sees them through the API.
pub async fn sessions_of(gw: &Gateway, grant: &str) -> Vec<Value> {
    let a = gw
        .api("admin")
        .get(&format!("/api/v1/sessions?grant={grant}"))
        .await
        .expect("GET /api/v1/sessions");
    assert_eq!(a.status, 200, "GET /api/v1/sessions: {:?}", a.body);
    a.body.as_array().cloned().unwrap_or_default()
}

/// The one session of `grant` once it has ended (waits up to 10 s).
pub async fn ended_session(gw: &Gateway, grant: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let list = sessions_of(gw, grant).await;
        assert!(
            list.len() <= 1,
            "more than one session of {grant}: {list:?}"
        );
        if let Some(s) = list.first()
            && !s["ended_at"].is_null()
        {
            return s.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no ended session of {grant} within 10 s: {list:?}\ngateway log:\n{}",
            gw.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The one live session of `grant` (waits up to 10 s for it to appear).
pub async fn live_session(gw: &Gateway, grant: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let list = sessions_of(gw, grant).await;
        if let Some(s) = list.iter().find(|s| s["ended_at"].is_null()) {
            return s.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no live session of {grant} within 10 s: {list:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A program running on a real pseudo-terminal, with its output collected as it arrives.
pub struct Term {
    pty: Arc<pty_process::blocking::Pty>,
    out: Arc<Mutex<Vec<u8>>>,
    seen: usize,
    child: Child,
}

impl Term {
    /// Start `prog args` on a new pty of `rows` × `cols`.
    pub fn spawn(prog: &str, args: &[String], rows: u16, cols: u16) -> Self {
        let (pty, pts) = pty_process::blocking::open().expect("open a pty");
        pty.resize(pty_process::Size::new(rows, cols))
            .expect("size the pty");
        let child = pty_process::blocking::Command::new(prog)
            .args(args)
            .env("TERM", "xterm")
            .env_remove("SSH_AUTH_SOCK")
            .spawn(pts)
            .unwrap_or_else(|e| panic!("spawn {prog} on a pty: {e}"));
        let pty = Arc::new(pty);
        let out = Arc::new(Mutex::new(Vec::new()));
        {
            let (pty, out) = (pty.clone(), out.clone());
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                loop {
                    match (&*pty).read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => out.lock().expect("pty output").extend_from_slice(&buf[..n]),
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(_) => break,
                    }
                }
            });
        }
        Self {
            pty,
            out,
            seen: 0,
            child,
        }
    }

    /// `ssh` on a pty, logging in as `user` by typing `token` at the `Grant token:` prompt.
    pub fn ssh_login(gw: &Gateway, user: &str, token: &str) -> Self {
        let mut t = Self::ssh(gw, user);
        t.expect("Grant token:", Duration::from_secs(10));
        t.send(&format!("{token}\r"));
        t
    }

    /// `ssh` on a 24 × 80 pty with keyboard-interactive authentication, not yet logged in.
    pub fn ssh(gw: &Gateway, user: &str) -> Self {
        // Not quiet: the technician sees what ssh says on disconnect.
        let mut args = client_opts();
        args.extend(
            ["-o", "PreferredAuthentications=keyboard-interactive", "-p"].map(String::from),
        );
        args.push(gw.ssh_port().to_string());
        args.push(format!("{user}@127.0.0.1"));
        Self::spawn("ssh", &args, 24, 80)
    }

    /// The program's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the terminal showed so far.
    pub fn transcript(&self) -> String {
        String::from_utf8_lossy(&self.out.lock().expect("pty output")).into_owned()
    }

    /// Wait for `needle` in output not yet matched; returns the output up to and including it.
    pub fn expect(&mut self, needle: &str, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            {
                let out = self.out.lock().expect("pty output");
                let fresh = String::from_utf8_lossy(&out[self.seen..]).into_owned();
                if let Some(i) = fresh.find(needle) {
                    let upto = &fresh[..i + needle.len()];
                    self.seen += upto.len();
                    return upto.to_string();
                }
            }
            assert!(
                Instant::now() < deadline,
                "the terminal did not show {needle:?} within {within:?}; it showed:\n{}",
                self.transcript()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Type `text`.
    pub fn send(&self, text: &str) {
        (&*self.pty)
            .write_all(text.as_bytes())
            .expect("write to the pty");
    }

    /// Change the terminal size (the kernel sends SIGWINCH to the program).
    pub fn resize(&self, rows: u16, cols: u16) {
        self.pty
            .resize(pty_process::Size::new(rows, cols))
            .expect("resize the pty");
    }

    /// Wait for the program to exit.
    pub fn wait(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(s) = self.child.try_wait().expect("wait for the pty program") {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "the pty program did not exit within {within:?}; it showed:\n{}",
                self.transcript()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Term {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A background client (`ssh -N -L`, `ssh-agent`) with its stderr kept in a file; killed when
/// dropped. Run ssh here directly (see [`ssh_askpass_cmd`]), not under sshpass: killing sshpass
/// can leave its ssh running.
pub struct Background {
    child: Child,
    stderr: tempfile::NamedTempFile,
}

impl Background {
    pub fn spawn(mut cmd: Command) -> Self {
        let stderr = tempfile::NamedTempFile::new().expect("temp file");
        let file = stderr.reopen().expect("reopen the stderr file");
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(file));
        let child = cmd.spawn().expect("spawn a background client");
        Self { child, stderr }
    }

    /// Stop it and return what it wrote to stderr.
    pub fn stop(mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::fs::read_to_string(self.stderr.path()).unwrap_or_default()
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Check that no login reached the target.
pub fn assert_target_untouched(env: &Env) {
    let log = env.sshd.log();
    assert!(
        !log.contains("Accepted "),
        "a login reached the target:\n{log}"
    );
}
