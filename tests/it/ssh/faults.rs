//! Faults: a recordings disk that fills or turns read-only, a target that accepts TCP and never
//! speaks, a database locked by another process, and kill -9 right after a revocation. Each
//! ends in a clear refusal or a recorded end within a bound, never in an unrecorded session,
//! a hang or a resurrected grant.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::{Env, ended_session, grant, ssh_exec};
use crate::flows::open_ticket;

/// A small tmpfs mounted over `dir` for one test; unmounted when dropped.
struct SmallDisk(PathBuf);

impl SmallDisk {
    fn mount(dir: &Path, size: &str) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .expect("mount (the tests run as root)");
        assert!(ok.success(), "mount a tmpfs on {}", dir.display());
        Self(dir.to_path_buf())
    }

    fn read_only(&self) {
        let ok = Command::new("mount")
            .args(["-o", "remount,ro"])
            .arg(&self.0)
            .status()
            .unwrap();
        assert!(ok.success(), "remount {} read-only", self.0.display());
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[tokio::test]
async fn a_full_recordings_disk_ends_the_session_with_a_message_never_unrecorded() {
    let env = Env::start();
    let _disk = SmallDisk::mount(&env.gw.path("recordings"), "256k");
    let g = grant(&env.gw, "alice", "ops", "INC-70", "10m");
    // Far more output than the disk holds.
    let started = Instant::now();
    let (code, out, err) = ssh_exec(
        &env.gw,
        &g.token,
        "alice",
        "head -c 4000000 /dev/zero | od -v",
    );
    assert_ne!(code, 0, "the session ran on unrecorded: {err}");
    assert!(
        out.len() < 4_000_000,
        "the whole output reached the client although it could not be recorded"
    );
    assert!(
        err.contains("recording"),
        "the client was not told why: {err}"
    );
    assert!(started.elapsed() < Duration::from_secs(30));
    let s = ended_session(&env.gw, &g.grant).await;
    assert_eq!(s["end_cause"], "recording", "{s}");
}

#[tokio::test]
async fn a_read_only_recordings_directory_refuses_the_session_with_a_message() {
    let env = Env::start();
    let disk = SmallDisk::mount(&env.gw.path("recordings"), "1m");
    disk.read_only();
    let g = grant(&env.gw, "alice", "ops", "INC-71", "10m");
    let (code, out, err) = ssh_exec(&env.gw, &g.token, "alice", "echo should-not-run");
    assert_ne!(code, 0, "{out}");
    assert!(
        !out.contains("should-not-run"),
        "the command ran unrecorded: {err}"
    );
    // The refusal is audited with its reason, and shown at the token prompt.
    let denied = env.gw.audit("admission.denied").await;
    assert!(
        denied.iter().any(|r| r["grant"] == g.grant.as_str()
            && r["reason"]
                .as_str()
                .is_some_and(|m| m.contains("recording"))),
        "{denied:?}"
    );
    let mut t = super::Term::ssh(&env.gw, "alice");
    t.expect("Grant token:", Duration::from_secs(10));
    t.send(&format!("{}\r", g.token));
    t.expect("[jitgate] refused:", Duration::from_secs(10));
    t.expect("could not be recorded", Duration::from_secs(5));
    t.send("\r");
    assert_eq!(t.wait(Duration::from_secs(10)).code(), Some(255));
    // Writable again: the next session is recorded.
    drop(disk);
    let (code, out, err) = ssh_exec(&env.gw, &g.token, "alice", "echo recorded");
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), "recorded");
}

#[tokio::test]
async fn a_target_that_accepts_tcp_and_never_speaks_is_refused_within_a_bound() {
    // Accepts connections (the backlog does) and never answers.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap();
    let key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPLS/fN5CcMLkyFXgymTgElYtx/VQk33mhW2ohI88KzN";
    let env = Env::with(
        None,
        &format!(
            "[[targets]]\nname = \"mute\"\nkind = \"ssh\"\naddress = \"{addr}\"\nhost_key = \"{key}\"\n\n[[tasks]]\nname = \"mute-ops\"\ntargets = [\"mute\"]\nprincipal = \"jitgate-it\"\nallow = [\"exec\"]\nmax_ttl = \"1h\"\n"
        ),
    );
    open_ticket(&env.gw, "INC-72", "alice");
    let (code, v, err) = crate::flows::request(
        &env.gw,
        "alice",
        "mute-ops",
        "mute",
        "INC-72",
        "10m",
        "a target that hangs",
    );
    assert_eq!(code, 0, "{v} {err}");
    let g = crate::flows::approved_token(&env.gw, "alice", v["id"].as_str().unwrap().into());
    let started = Instant::now();
    let (code, _, err) = ssh_exec(&env.gw, &g.token, "alice", "true");
    let took = started.elapsed();
    assert_ne!(code, 0);
    assert!(
        err.contains("mute") && err.contains(&addr.to_string()),
        "the refusal does not name the target: {err}"
    );
    assert!(
        took < Duration::from_secs(40),
        "refused only after {took:?}"
    );
    drop(silent);
}

/// Hold an exclusive lock on the SQLite database at `db` for `secs` seconds (another process).
fn lock_database(db: &Path, secs: u32) -> std::process::Child {
    Command::new("python3")
        .arg("-c")
        .arg(format!(
            "import sqlite3, sys, time\nc = sqlite3.connect({:?}, isolation_level=None)\nc.execute('BEGIN EXCLUSIVE')\nprint('locked', flush=True)\ntime.sleep({secs})\nc.execute('COMMIT')\n",
            db.display().to_string()
        ))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3")
}

#[tokio::test]
async fn a_database_locked_by_another_process_gets_a_clear_refusal_not_a_hang() {
    let env = Env::start();
    let g = grant(&env.gw, "alice", "ops", "INC-73", "10m");
    let mut locker = lock_database(&env.gw.path("data/jitgate.db"), 12);
    {
        use std::io::BufRead;
        let mut line = String::new();
        std::io::BufReader::new(locker.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "locked");
    }
    let started = Instant::now();
    let a = env
        .gw
        .api("admin")
        .post(
            "/api/v1/tickets",
            serde_json::json!({"id": "INC-74", "assignee": "alice"}),
        )
        .await
        .expect("an answer");
    let took = started.elapsed();
    assert_eq!(a.status, 503, "{:?}", a.body);
    assert!(crate::flows::msg(&a.body).contains("busy"), "{:?}", a.body);
    assert!(took < Duration::from_secs(15), "answered after {took:?}");
    let _ = locker.wait();
    // Released: the gateway works again, and its audit chain still verifies.
    let (code, out, err) = ssh_exec(&env.gw, &g.token, "alice", "echo after");
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), "after");
    let (code, out, err) = env.gw.run(&["audit", "verify"], &[]);
    assert_eq!(code, 0, "{out}{err}");
}

#[tokio::test]
async fn kill_9_right_after_a_revocation_never_resurrects_the_grant() {
    let mut env = Env::start();
    let g = grant(&env.gw, "alice", "ops", "INC-75", "10m");
    let (code, out, err) = env.gw.cli(
        "admin",
        &["revoke", &g.grant, "--reason", "left the company"],
    );
    assert_eq!(code, 0, "{out}{err}");
    let pid = env.gw.pid();
    let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
    std::thread::sleep(Duration::from_millis(200));
    env.gw.stop();
    env.gw.serve();
    let (code, _, err) = ssh_exec(&env.gw, &g.token, "alice", "true");
    assert_eq!(code, 255, "{err}");
    let a = env.gw.admit(&g.token, "alice", "ssh").await;
    assert_eq!(a.status, 403, "{:?}", a.body);
    assert!(
        crate::flows::msg(&a.body).contains("revoked"),
        "{:?}",
        a.body
    );
    let (code, out, err) = env.gw.run(&["audit", "verify"], &[]);
    assert_eq!(code, 0, "{out}{err}");
}

/// A TCP proxy to `to` that can be frozen: once frozen it moves no more bytes either way and
/// keeps its sockets open, like a target whose host hangs.
struct FreezingProxy {
    addr: std::net::SocketAddr,
    frozen: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl FreezingProxy {
    fn start(to: String) -> Self {
        use std::sync::atomic::{AtomicBool, Ordering};
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let frozen = std::sync::Arc::new(AtomicBool::new(false));
        let f = frozen.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let Ok(server) = std::net::TcpStream::connect(&to) else {
                    continue;
                };
                for (mut from, mut into) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    let f = f.clone();
                    std::thread::spawn(move || {
                        use std::io::{Read, Write};
                        let mut buf = [0u8; 16384];
                        loop {
                            let n = match from.read(&mut buf) {
                                Ok(0) | Err(_) => return,
                                Ok(n) => n,
                            };
                            while f.load(Ordering::SeqCst) {
                                std::thread::sleep(Duration::from_millis(50));
                            }
                            if into.write_all(&buf[..n]).is_err() {
                                return;
                            }
                        }
                    });
                }
            }
        });
        Self { addr, frozen }
    }

    fn freeze(&self) {
        self.frozen.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

#[tokio::test]
async fn a_target_that_stalls_mid_session_ends_it_with_a_clear_error_within_the_target_timeout() {
    let sshd = crate::sshd::Sshd::start();
    let proxy = FreezingProxy::start(sshd.address());
    let target = format!(
        "[[targets]]\nname = \"hangs\"\nkind = \"ssh\"\naddress = \"{}\"\nhost_key = \"{}\"\n\n[[tasks]]\nname = \"hangs-ops\"\ntargets = [\"hangs\"]\nprincipal = \"jitgate-it\"\nallow = [\"exec\"]\nmax_ttl = \"1h\"\n",
        proxy.addr, sshd.host_key
    );
    let opts = crate::harness::Opts::default()
        .policy(crate::harness::Policy::None)
        .gateway("target_timeout = \"3s\"")
        .extra(&target);
    let mut gw = crate::harness::Gateway::prepare(opts);
    gw.init();
    sshd.trust(&gw.path("certs/ssh_user_ca.pub"));
    gw.serve();
    open_ticket(&gw, "INC-76", "alice");
    let (code, v, err) =
        crate::flows::request(&gw, "alice", "hangs-ops", "hangs", "INC-76", "10m", "stall");
    assert_eq!(code, 0, "{v} {err}");
    let g = crate::flows::approved_token(&gw, "alice", v["id"].as_str().unwrap().into());
    let mut child = super::ssh_cmd(
        &gw,
        &g.token,
        "alice",
        &["-o", "LogLevel=INFO"],
        &["echo started; sleep 60; echo never"],
    )
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped())
    .spawn()
    .unwrap();
    {
        use std::io::BufRead;
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "started");
    }
    proxy.freeze();
    let frozen = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            frozen.elapsed() < Duration::from_secs(30),
            "the client still waits {:?} after its target hung",
            frozen.elapsed()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert!(!status.success(), "{err}");
    let s = ended_session(&gw, &g.grant).await;
    assert!(
        err.contains("hangs"),
        "the client was not told which target failed: {err}"
    );
    assert_eq!(s["end_cause"], "target", "{s}");
}
