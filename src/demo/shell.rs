//! The demo target's session channels: a real shell on a PTY (or a command on pipes, or
//! `sftp-server`), with window changes, exit status or signal, and EOF and close in order.

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use russh::server::{Handle, Msg};
use russh::{Channel, ChannelMsg, ChannelWriteHalf, Sig};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::process::Child;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::cert::Permits;
use super::target::TargetSettings;

/// How long output may keep draining after the process exits (a background job can hold the
/// terminal open).
const DRAIN_GRACE: Duration = Duration::from_secs(1);
/// How long a shell has to exit after its terminal hangs up before it is killed.
const HANGUP_GRACE: Duration = Duration::from_secs(1);

/// Whether the `name` subsystem can run here.
pub fn subsystem_available(settings: &TargetSettings, name: &str) -> bool {
    name == "sftp" && settings.sftp_server.is_some()
}

/// What one channel needs from its connection.
pub struct ChannelCtx {
    pub settings: Arc<TargetSettings>,
    pub permits: Arc<Permits>,
    pub handle: Handle,
}

struct PtyReq {
    term: String,
    cols: u16,
    rows: u16,
}

/// What the client asked the channel to run.
enum Start {
    Shell,
    Exec(String),
    Sftp,
}

/// Bytes and requests for the process's input side.
enum Input {
    Data(Bytes),
    Resize(u16, u16),
    Eof,
}

type Tx = Arc<ChannelWriteHalf<Msg>>;

/// A started process: the child, its input writer and its output readers.
struct Running {
    child: Child,
    input: mpsc::Sender<Input>,
    readers: Vec<JoinHandle<()>>,
    pty: bool,
}

/// A terminal dimension; 0 (a client without a terminal, `ssh -tt` from a pipe) stays 0, as
/// with sshd, and programs fall back to their defaults.
fn dim(v: u32) -> u16 {
    v.min(u16::MAX as u32) as u16
}

/// Serve one session channel until it closes, its process ends, or `stop`.
pub async fn run(channel: Channel<Msg>, ctx: ChannelCtx, stop: CancellationToken) {
    let id = channel.id();
    let (mut rx, tx) = channel.split();
    let tx: Tx = Arc::new(tx);
    let mut pty: Option<PtyReq> = None;
    let mut env: Vec<(String, String)> = Vec::new();
    let mut early: Vec<Input> = Vec::new();
    // Requests until the shell, command or subsystem (replies are sent by the handler).
    let start = loop {
        let msg = tokio::select! {
            _ = stop.cancelled() => return,
            m = rx.wait() => m,
        };
        match msg {
            None | Some(ChannelMsg::Close) => return,
            Some(ChannelMsg::RequestPty {
                term,
                col_width,
                row_height,
                ..
            }) if ctx.permits.permit_pty => {
                pty = Some(PtyReq {
                    term,
                    cols: dim(col_width),
                    rows: dim(row_height),
                });
            }
            Some(ChannelMsg::SetEnv {
                variable_name,
                variable_value,
                ..
            }) if crate::ssh::env_allowed(&variable_name) && env.len() < 32 => {
                env.push((variable_name, variable_value));
            }
            Some(ChannelMsg::WindowChange {
                col_width,
                row_height,
                ..
            }) => {
                if let Some(p) = &mut pty {
                    p.cols = dim(col_width);
                    p.rows = dim(row_height);
                }
            }
            Some(ChannelMsg::RequestShell { .. }) => break Start::Shell,
            Some(ChannelMsg::Exec { command, .. }) => {
                break Start::Exec(String::from_utf8_lossy(&command).into_owned());
            }
            Some(ChannelMsg::RequestSubsystem { name, .. })
                if subsystem_available(&ctx.settings, &name) =>
            {
                break Start::Sftp;
            }
            Some(ChannelMsg::Data { data }) => early.push(Input::Data(data)),
            Some(ChannelMsg::Eof) => early.push(Input::Eof),
            Some(_) => {}
        }
    };
    if matches!(start, Start::Shell) && pty.is_some() {
        let banner = format!(
            "demo-box: logged in as {} with a certificate from the jitgate gateway\r\n  key id: {}\r\n",
            ctx.settings.principal, ctx.permits.key_id
        );
        let _ = tx.data_bytes(banner.into_bytes()).await;
    }
    let mut running = match spawn(&ctx, &start, pty.as_ref(), &env, &tx) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "demo-box could not start a process");
            let _ = tx
                .extended_data_bytes(1, format!("demo-box: cannot start: {e}\r\n").into_bytes())
                .await;
            let _ = tx.exit_status(127).await;
            let _ = tx.eof().await;
            let _ = tx.close().await;
            return;
        }
    };
    for input in early {
        let _ = running.input.send(input).await;
    }
    let status = loop {
        tokio::select! {
            _ = stop.cancelled() => {
                running.hang_up().await;
                let _ = tx.close().await;
                return;
            }
            s = running.child.wait() => break s.ok(),
            msg = rx.wait() => match msg {
                Some(ChannelMsg::Data { data }) => {
                    let _ = running.input.send(Input::Data(data)).await;
                }
                Some(ChannelMsg::Eof) => {
                    // A terminal cannot be half-closed; a pipe can (like sshd).
                    if !running.pty {
                        let _ = running.input.send(Input::Eof).await;
                    }
                }
                Some(ChannelMsg::WindowChange { col_width, row_height, .. }) => {
                    let _ = running.input.send(Input::Resize(dim(row_height), dim(col_width))).await;
                }
                None | Some(ChannelMsg::Close) => {
                    running.hang_up().await;
                    return;
                }
                Some(_) => {}
            }
        }
    };
    // The process ended: let its last output through, then exit status, EOF, close.
    for r in std::mem::take(&mut running.readers) {
        let abort = r.abort_handle();
        if tokio::time::timeout(DRAIN_GRACE, r).await.is_err() {
            abort.abort();
        }
    }
    match status {
        Some(s) => report_exit(&tx, &ctx.handle, id, s).await,
        None => {
            let _ = tx.exit_status(255).await;
        }
    }
    let _ = tx.eof().await;
    let _ = tx.close().await;
}

impl Running {
    /// The client went away: hang up the terminal (the shell gets SIGHUP), then kill what is left.
    async fn hang_up(&mut self) {
        for r in self.readers.drain(..) {
            r.abort();
        }
        // Closing the input side drops the PTY master once the writer task ends.
        let (closed, _) = mpsc::channel(1);
        drop(std::mem::replace(&mut self.input, closed));
        if self.pty
            && tokio::time::timeout(HANGUP_GRACE, self.child.wait())
                .await
                .is_ok()
        {
            return;
        }
        let _ = self.child.kill().await;
    }
}

async fn report_exit(tx: &Tx, handle: &Handle, id: russh::ChannelId, s: ExitStatus) {
    if let Some(code) = s.code() {
        let _ = tx.exit_status(code as u32).await;
    } else if let Some(sig) = s.signal() {
        let _ = handle
            .exit_signal_request(id, signal(sig), s.core_dumped(), String::new(), "en".into())
            .await;
    }
}

fn signal(n: i32) -> Sig {
    match n {
        1 => Sig::HUP,
        2 => Sig::INT,
        3 => Sig::QUIT,
        4 => Sig::ILL,
        6 => Sig::ABRT,
        8 => Sig::FPE,
        9 => Sig::KILL,
        10 => Sig::USR1,
        11 => Sig::SEGV,
        13 => Sig::PIPE,
        14 => Sig::ALRM,
        15 => Sig::TERM,
        other => Sig::Custom(other.to_string()),
    }
}

/// The environment a login on the demo target gets (nothing inherited but `PATH` and `USER`).
fn base_env(
    s: &TargetSettings,
    pty: Option<&PtyReq>,
    env: &[(String, String)],
) -> Vec<(String, String)> {
    let user = std::env::var("USER").unwrap_or_else(|_| s.principal.clone());
    let mut v = vec![
        ("HOME".to_string(), s.home.display().to_string()),
        ("USER".to_string(), user.clone()),
        ("LOGNAME".to_string(), user),
        ("SHELL".to_string(), s.shell.display().to_string()),
        (
            "PATH".to_string(),
            std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".into()),
        ),
        ("PS1".to_string(), s.prompt.clone()),
    ];
    v.extend(env.iter().cloned());
    if let Some(p) = pty {
        v.retain(|(k, _)| k != "TERM");
        v.push(("TERM".to_string(), p.term.clone()));
    }
    v
}

/// The program and arguments for `start`, honouring the certificate's `force-command`.
fn argv(ctx: &ChannelCtx, start: &Start, env: &mut Vec<(String, String)>) -> Vec<String> {
    let s = &ctx.settings;
    let shell = s.shell.display().to_string();
    if let Some(forced) = &ctx.permits.force_command {
        match start {
            Start::Exec(cmd) => env.push(("SSH_ORIGINAL_COMMAND".into(), cmd.clone())),
            Start::Sftp => env.push(("SSH_ORIGINAL_COMMAND".into(), "sftp".into())),
            Start::Shell => {}
        }
        return vec![shell, "-c".into(), forced.clone()];
    }
    match start {
        Start::Exec(cmd) => vec![shell, "-c".into(), cmd.clone()],
        Start::Sftp => vec![
            s.sftp_server
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
        ],
        Start::Shell if is_bash(&s.shell) => vec![
            shell,
            "--noprofile".into(),
            "--rcfile".into(),
            s.home.join(".bashrc").display().to_string(),
            "-i".into(),
        ],
        Start::Shell => vec![shell, "-i".into()],
    }
}

fn is_bash(shell: &Path) -> bool {
    shell.file_name().is_some_and(|n| n == "bash")
}

/// Start the process: on a new PTY when one was requested (and permitted), on pipes otherwise.
fn spawn(
    ctx: &ChannelCtx,
    start: &Start,
    pty: Option<&PtyReq>,
    env: &[(String, String)],
    tx: &Tx,
) -> std::io::Result<Running> {
    let pty = pty.filter(|_| !matches!(start, Start::Sftp));
    let mut env = base_env(&ctx.settings, pty, env);
    let argv = argv(ctx, start, &mut env);
    let home = &ctx.settings.home;
    match pty {
        Some(p) => {
            let (master, pts) = pty_process::open().map_err(std::io::Error::other)?;
            master
                .resize(pty_process::Size::new(p.rows, p.cols))
                .map_err(std::io::Error::other)?;
            let child = pty_process::Command::new(&argv[0])
                .args(&argv[1..])
                .env_clear()
                .envs(env)
                .current_dir(home)
                .kill_on_drop(true)
                .spawn(pts)
                .map_err(std::io::Error::other)?;
            let (read, write) = master.into_split();
            let (input, rx) = mpsc::channel(64);
            tokio::spawn(write_input(write, rx, |w, rows, cols| {
                let _ = w.resize(pty_process::Size::new(rows, cols));
            }));
            Ok(Running {
                child,
                input,
                readers: vec![tokio::spawn(pump_output(read, tx.clone(), None))],
                pty: true,
            })
        }
        None => {
            let mut child = tokio::process::Command::new(&argv[0])
                .args(&argv[1..])
                .env_clear()
                .envs(env)
                .current_dir(home)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .kill_on_drop(true)
                .spawn()?;
            let stdin = child.stdin.take().expect("piped stdin");
            let stdout = child.stdout.take().expect("piped stdout");
            let stderr = child.stderr.take().expect("piped stderr");
            let (input, rx) = mpsc::channel(64);
            tokio::spawn(write_input(stdin, rx, |_, _, _| {}));
            Ok(Running {
                child,
                input,
                readers: vec![
                    tokio::spawn(pump_output(stdout, tx.clone(), None)),
                    tokio::spawn(pump_output(stderr, tx.clone(), Some(1))),
                ],
                pty: false,
            })
        }
    }
}

/// Feed the process's input until EOF or the channel ends.
async fn write_input<W: AsyncWrite + Unpin>(
    mut w: W,
    mut rx: mpsc::Receiver<Input>,
    resize: impl Fn(&W, u16, u16),
) {
    while let Some(input) = rx.recv().await {
        match input {
            Input::Data(data) => {
                if w.write_all(&data).await.is_err() {
                    break;
                }
            }
            Input::Resize(rows, cols) => resize(&w, rows, cols),
            Input::Eof => break,
        }
    }
    let _ = w.shutdown().await;
}

/// Copy the process's output to the channel (`ext` 1: stderr) until EOF or an error (a PTY
/// reports EIO once every process on it has closed it).
async fn pump_output<R: AsyncRead + Unpin>(mut r: R, tx: Tx, ext: Option<u32>) {
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        let n = match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let data = Bytes::copy_from_slice(&buf[..n]);
        let sent = match ext {
            None => tx.data_bytes(data).await,
            Some(code) => tx.extended_data_bytes(code, data).await,
        };
        if sent.is_err() {
            break;
        }
    }
}
