//! What a technician can do once admitted: commands, an interactive terminal, file transfer and
//! port forwards where the task allows them; agent forwarding never; a forced command always.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{
    Background, Env, QUIET, Term, client_opts, grant, sessions_of, sha256_file, ssh_askpass_cmd,
    ssh_cmd, ssh_exec, with_token,
};
use crate::harness::{Out, output};
use crate::sshd::free_port;

#[tokio::test]
async fn exec_returns_exit_code_stdout_and_stderr() {
    let env = Env::start();
    let g = grant(&env.gw, "alice", "ops", "INC-1", "15m");
    let (code, out, err) = ssh_exec(
        &env.gw,
        &g.token,
        "alice",
        "echo to-stdout; echo to-stderr >&2; whoami; exit 3",
    );
    assert_eq!(code, 3, "exit code; stdout {out:?}, stderr {err:?}");
    assert_eq!(out, "to-stdout\njitgate-it\n", "stdout (stderr {err:?})");
    assert_eq!(err, "to-stderr\n", "stderr");
    // The grant is good for more than one connection until it ends.
    let (code, out, err) = ssh_exec(&env.gw, &g.token, "alice", "true");
    assert_eq!((code, out.as_str()), (0, ""), "second connection: {err}");
}

#[tokio::test]
async fn pty_shell_follows_a_terminal_resize() {
    let env = Env::start();
    let g = grant(&env.gw, "alice", "ops", "INC-1", "15m");
    let mut t = Term::ssh_login(&env.gw, "alice", &g.token);
    t.expect("$ ", Duration::from_secs(10));
    // The typed line reads `size=$(stty size)`; only the target's answer reads `size=24 80`.
    t.send("echo \"size=$(stty size) tty=$(tty)\"\r");
    t.expect("size=24 80 tty=/dev/pts/", Duration::from_secs(10));
    t.resize(40, 100);
    t.send("echo \"size=$(stty size)\"\r");
    t.expect("size=40 100", Duration::from_secs(5));
    t.send("exit 7\r");
    let status = t.wait(Duration::from_secs(5));
    assert_eq!(
        status.code(),
        Some(7),
        "the shell's exit status reaches ssh; terminal:\n{}",
        t.transcript()
    );
}

/// A file of `len` random bytes.
fn random_file(path: &Path, len: u64) {
    let mut src = std::fs::File::open("/dev/urandom").expect("open /dev/urandom");
    let mut data = Vec::with_capacity(len as usize);
    (&mut src)
        .take(len)
        .read_to_end(&mut data)
        .expect("read /dev/urandom");
    std::fs::write(path, data).expect("write a random file");
}

/// `prog` (scp or sftp) with the token as password and `-P PORT` before `args`.
fn transfer(env: &Env, token: &str, prog: &str, args: &[String]) -> Out {
    let mut a = client_opts();
    a.extend(
        ["-o", "PreferredAuthentications=password", "-P"]
            .iter()
            .map(|s| s.to_string()),
    );
    a.push(env.gw.ssh_port().to_string());
    a.extend(QUIET.map(String::from));
    a.extend(args.iter().cloned());
    output(with_token(token, prog, &a))
}

/// `rsync -e "ssh ..." from to` with the token as password.
fn rsync(env: &Env, token: &str, from: &str, to: &str) -> Out {
    let mut e = vec!["ssh".to_string()];
    e.extend(client_opts());
    e.extend(["-o", "PreferredAuthentications=password", "-p"].map(String::from));
    e.push(env.gw.ssh_port().to_string());
    e.extend(QUIET.map(String::from));
    let args = ["-e".to_string(), e.join(" "), from.into(), to.into()];
    output(with_token(token, "rsync", &args))
}

/// `sftp -b` running `script` (BatchMode off first: sftp -b turns it on, which stops sshpass).
fn sftp(env: &Env, token: &str, dir: &Path, script: &str) -> Out {
    let batch = dir.join("batch.sftp");
    std::fs::write(&batch, script).expect("write the sftp batch");
    transfer(
        env,
        token,
        "sftp",
        &[
            "-o".into(),
            "BatchMode=no".into(),
            "-b".into(),
            batch.display().to_string(),
            "alice@127.0.0.1".into(),
        ],
    )
}

#[tokio::test]
async fn file_transfer_both_ways_when_the_task_allows_sftp() {
    let env = Env::start();
    let g = grant(&env.gw, "alice", "ops", "INC-1", "15m");
    let local = tempfile::tempdir().expect("temp dir");
    let src = local.path().join("src.bin");
    random_file(&src, 10 * 1024 * 1024);
    let want = sha256_file(&src);
    let remote = env.sshd.files();
    let at = |name: &str| format!("alice@127.0.0.1:{}", remote.join(name).display());
    let here = |name: &str| local.path().join(name).display().to_string();
    let src_s = src.display().to_string();

    // scp (SFTP protocol, the default since OpenSSH 9) and legacy scp (-O) both ways.
    for (flag, up, down) in [
        (None, "scp-up.bin", "scp-down.bin"),
        (Some("-O"), "scp-legacy-up.bin", "scp-legacy-down.bin"),
    ] {
        let mut args: Vec<String> = flag.iter().map(|f| f.to_string()).collect();
        args.extend([src_s.clone(), at(up)]);
        let (code, out, err) = transfer(&env, &g.token, "scp", &args);
        assert_eq!(code, 0, "scp {flag:?} upload: {out} {err}");
        assert_eq!(sha256_file(&remote.join(up)), want, "scp {flag:?} upload");
        let mut args: Vec<String> = flag.iter().map(|f| f.to_string()).collect();
        args.extend([at(up), here(down)]);
        let (code, out, err) = transfer(&env, &g.token, "scp", &args);
        assert_eq!(code, 0, "scp {flag:?} download: {out} {err}");
        assert_eq!(
            sha256_file(&local.path().join(down)),
            want,
            "scp {flag:?} download"
        );
    }

    // sftp both ways.
    let script = format!(
        "put {src_s} {}\nget {} {}\n",
        remote.join("sftp-up.bin").display(),
        remote.join("sftp-up.bin").display(),
        here("sftp-down.bin")
    );
    let (code, out, err) = sftp(&env, &g.token, local.path(), &script);
    assert_eq!(code, 0, "sftp: {out} {err}");
    assert_eq!(sha256_file(&remote.join("sftp-up.bin")), want, "sftp put");
    assert_eq!(
        sha256_file(&local.path().join("sftp-down.bin")),
        want,
        "sftp get"
    );

    // rsync over ssh both ways.
    let (code, out, err) = rsync(&env, &g.token, &src_s, &at("rsync-up.bin"));
    assert_eq!(code, 0, "rsync upload: {out} {err}");
    assert_eq!(sha256_file(&remote.join("rsync-up.bin")), want, "rsync up");
    let (code, out, err) = rsync(&env, &g.token, &at("rsync-up.bin"), &here("rsync-down.bin"));
    assert_eq!(code, 0, "rsync download: {out} {err}");
    assert_eq!(
        sha256_file(&local.path().join("rsync-down.bin")),
        want,
        "rsync down"
    );

    // 70 MB went through; the recordings hold sizes and digests, not the bytes as JSON.
    let sessions = all_ended(&env, &g.grant).await;
    assert_eq!(sessions.len(), 7, "one session per client run");
    let recorded: u64 = sessions
        .iter()
        .flat_map(|s| s["files"].as_array().cloned().unwrap_or_default())
        .map(|f| f["bytes"].as_u64().unwrap_or(0))
        .sum();
    assert!(
        recorded < 1024 * 1024,
        "recordings of binary transfers take {recorded} bytes"
    );
    let moved: u64 = sessions
        .iter()
        .map(|s| s["bytes_in"].as_u64().unwrap_or(0) + s["bytes_out"].as_u64().unwrap_or(0))
        .sum();
    assert!(moved >= 70 * 1024 * 1024, "bytes counted: {moved}");
    // SFTP use is recorded as an event with its byte counts.
    let sftp_events: Vec<Value> = sessions
        .iter()
        .filter_map(|s| s["dir"].as_str())
        .filter_map(|d| std::fs::read_to_string(Path::new(d).join("session.json")).ok())
        .filter_map(|t| serde_json::from_str::<Value>(&t).ok())
        .flat_map(|m| m["events"].as_array().cloned().unwrap_or_default())
        .filter(|e| e["type"] == "sftp")
        .collect();
    let big = |k: &str| {
        sftp_events
            .iter()
            .any(|e| e[k].as_u64().is_some_and(|n| n >= 10 * 1024 * 1024))
    };
    assert!(
        big("bytes_to_target") && big("bytes_to_client"),
        "no SFTP event with 10 MiB each way: {sftp_events:?}"
    );
}

/// Every session of `grant`, once all have ended (waits up to 10 s).
async fn all_ended(env: &Env, grant: &str) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let list = sessions_of(&env.gw, grant).await;
        if list.iter().all(|s| !s["ended_at"].is_null()) {
            return list;
        }
        assert!(
            Instant::now() < deadline,
            "sessions still live 10 s after their clients exited: {list:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn file_transfer_refused_when_the_task_does_not_allow_sftp() {
    let env = Env::start();
    let g = grant(&env.gw, "alice", "shell-only", "INC-1", "15m");
    let local = tempfile::tempdir().expect("temp dir");
    let src = local.path().join("src.bin");
    random_file(&src, 64 * 1024);
    let src_s = src.display().to_string();
    let remote = env.sshd.files();
    let at = |name: &str| format!("alice@127.0.0.1:{}", remote.join(name).display());

    let (code, out, err) = transfer(&env, &g.token, "scp", &[src_s.clone(), at("scp.bin")]);
    assert_ne!(code, 0, "scp was not refused: {out} {err}");
    // The technician sees why, not only OpenSSH's "subsystem request failed".
    assert!(
        err.contains("[jitgate] refused: task shell-only does not allow file transfer"),
        "scp stderr: {err:?}"
    );
    let (code, out, err) = transfer(
        &env,
        &g.token,
        "scp",
        &["-O".into(), src_s.clone(), at("scp-legacy.bin")],
    );
    assert_ne!(code, 0, "scp -O was not refused: {out} {err}");
    assert!(
        err.contains("does not allow file transfer"),
        "scp -O stderr: {err:?}"
    );
    let script = format!("put {src_s} {}\n", remote.join("sftp.bin").display());
    let (code, out, err) = sftp(&env, &g.token, local.path(), &script);
    assert_ne!(code, 0, "sftp was not refused: {out} {err}");
    let (code, out, err) = rsync(&env, &g.token, &src_s, &at("rsync.bin"));
    assert_ne!(code, 0, "rsync was not refused: {out} {err}");
    let left: Vec<_> = std::fs::read_dir(&remote)
        .expect("read the target folder")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert!(left.is_empty(), "files reached the target: {left:?}");
    // Commands still work under the same grant.
    let (code, out, _) = ssh_exec(&env.gw, &g.token, "alice", "echo still-here");
    assert_eq!((code, out.as_str()), (0, "still-here\n"));
}

/// A TCP echo service on loopback that counts its connections.
struct Echo {
    port: u16,
    conns: Arc<AtomicUsize>,
}

impl Echo {
    fn start() -> Self {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind the echo service");
        let port = l.local_addr().expect("echo address").port();
        let conns = Arc::new(AtomicUsize::new(0));
        let n = conns.clone();
        std::thread::spawn(move || {
            for s in l.incoming() {
                let Ok(mut s) = s else { continue };
                n.fetch_add(1, Ordering::SeqCst);
                std::thread::spawn(move || {
                    let mut buf = [0u8; 1024];
                    while let Ok(k) = s.read(&mut buf) {
                        if k == 0 || s.write_all(&buf[..k]).is_err() {
                            break;
                        }
                    }
                });
            }
        });
        Self { port, conns }
    }
}

/// Start `ssh -N -L LPORT:127.0.0.1:echo`, connect through it, send a line; returns what came
/// back (empty when the forward was refused) and ssh's stderr.
fn through_forward(env: &Env, token: &str, echo: &Echo) -> (String, String) {
    let lport = free_port();
    let spec = format!("{lport}:127.0.0.1:{}", echo.port);
    let dir = tempfile::tempdir().expect("temp dir");
    let fwd = Background::spawn(ssh_askpass_cmd(
        &env.gw,
        token,
        "alice",
        &[
            "-o",
            "LogLevel=INFO",
            "-N",
            "-o",
            "ExitOnForwardFailure=yes",
            "-L",
            &spec,
        ],
        dir.path(),
    ));
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut s = loop {
        match TcpStream::connect(("127.0.0.1", lport)) {
            Ok(s) => break s,
            Err(e) => {
                assert!(
                    Instant::now() < deadline,
                    "ssh -L never listened on {lport}: {e}"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    };
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("read timeout");
    let _ = s.write_all(b"ping through jitgate\n");
    let mut got = Vec::new();
    let mut buf = [0u8; 64];
    while got.len() < 21 {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    (String::from_utf8_lossy(&got).into_owned(), fwd.stop())
}

#[tokio::test]
async fn port_forward_reaches_a_loopback_service_only_when_the_task_allows_it() {
    let env = Env::start();
    let echo = Echo::start();
    let allowed = grant(&env.gw, "alice", "ops", "INC-1", "15m");
    let (got, err) = through_forward(&env, &allowed.token, &echo);
    assert_eq!(got, "ping through jitgate\n", "ssh -L stderr: {err}");
    assert_eq!(echo.conns.load(Ordering::SeqCst), 1);

    let refused = grant(&env.gw, "alice", "shell-only", "INC-2", "15m");
    let (got, err) = through_forward(&env, &refused.token, &echo);
    assert_eq!(got, "", "a forward the task does not allow carried data");
    assert!(
        err.contains("open failed: administratively prohibited"),
        "ssh -L stderr: {err:?}"
    );
    assert_eq!(
        echo.conns.load(Ordering::SeqCst),
        1,
        "the refused forward reached the service"
    );
}

#[tokio::test]
async fn agent_forwarding_is_refused() {
    let env = Env::start();
    let g = grant(&env.gw, "alice", "ops", "INC-1", "15m");
    let dir = tempfile::tempdir().expect("temp dir");
    let sock = dir.path().join("agent.sock");
    let _agent = Background::spawn({
        let mut c = Command::new("ssh-agent");
        c.arg("-D").arg("-a").arg(&sock);
        c
    });
    let deadline = Instant::now() + Duration::from_secs(5);
    while !sock.exists() {
        assert!(Instant::now() < deadline, "ssh-agent made no socket");
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut cmd = ssh_cmd(
        &env.gw,
        &g.token,
        "alice",
        &["-A"],
        &["echo \"agent=[$SSH_AUTH_SOCK]\""],
    );
    cmd.env("SSH_AUTH_SOCK", &sock);
    let (code, out, err) = output(cmd);
    assert_eq!(code, 0, "{out} {err}");
    assert_eq!(out, "agent=[]\n", "the agent reached the target");
    // The client did ask, and the gateway said no.
    assert!(
        env.gw.logs().contains("agent forwarding refused"),
        "no agent request was refused; gateway log:\n{}",
        env.gw.logs()
    );
}

#[tokio::test]
async fn force_command_runs_whatever_is_asked() {
    let env = Env::start();
    let g = grant(&env.gw, "alice", "forced", "INC-1", "15m");
    let (code, out, err) = ssh_exec(&env.gw, &g.token, "alice", "id -u; echo not-forced");
    assert_eq!(code, 0, "{out} {err}");
    assert_eq!(out, "forced\n", "stderr: {err}");
}
