//! Live sessions are cut when their ticket closes, their grant expires or someone kills them:
//! the technician sees why in the terminal, ssh exits, and `session.ended` records the cause,
//! the reason and a kill latency under a second.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use super::{Env, Term, ended_session, grant, live_session, session_ended_record};
use crate::flows::grant_state;

/// Log in on a pty and prove the shell works.
fn shell(env: &Env, token: &str) -> Term {
    let mut t = Term::ssh_login(&env.gw, "alice", token);
    t.expect("$ ", Duration::from_secs(10));
    t.send("echo up-$((40+2))\r");
    t.expect("up-42", Duration::from_secs(5));
    t
}

/// ssh exits 255 (disconnected by the gateway).
fn assert_exits_255(t: &mut Term) {
    let status = t.wait(Duration::from_secs(5));
    assert_eq!(
        status.code(),
        Some(255),
        "ssh exit status; terminal:\n{}",
        t.transcript()
    );
}

/// `session.ended` for the one session of `grant`: cause, reason, kill latency < 1 s; the
/// recording ends with a marker giving the reason.
async fn assert_ended(env: &Env, grant: &str, cause: &str, reason: &str) {
    let s = ended_session(&env.gw, grant).await;
    let sid = s["id"].as_str().expect("session id");
    assert_eq!(s["end_cause"], cause, "{s}");
    let r = session_ended_record(&env.gw, sid).await;
    assert_eq!(r["cause"], cause, "{r}");
    assert!(
        r["reason"].as_str().is_some_and(|x| x.contains(reason)),
        "reason {} lacks {reason:?}",
        r["reason"]
    );
    let latency = r["kill_latency_ms"]
        .as_u64()
        .unwrap_or_else(|| panic!("no kill_latency_ms in {r}"));
    assert!(latency < 1000, "kill latency {latency} ms: {r}");
    assert_eq!(s["kill_latency_ms"], r["kill_latency_ms"], "{s}");
    let cast = std::path::Path::new(s["dir"].as_str().expect("dir")).join("1.cast");
    let text = std::fs::read_to_string(&cast).expect("the shell's recording");
    let marked = text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .any(|ev| {
            ev[1] == "m"
                && ev[2]
                    .as_str()
                    .is_some_and(|m| m.contains("session terminated") && m.contains(reason))
        });
    assert!(
        marked,
        "no termination marker in {}:\n{text}",
        cast.display()
    );
}

#[tokio::test]
async fn ticket_close_cuts_a_live_shell_within_a_second() {
    let env = Env::start();
    let g = grant(&env.gw, "alice", "ops", "INC-1", "15m");
    let mut t = shell(&env, &g.token);
    // A process on the target that must not outlive the session.
    t.send("sleep 4201 & echo bg-$((1+1))\r");
    t.expect("bg-2", Duration::from_secs(5));
    assert!(running("sleep 4201"), "the background job did not start");
    let (code, out, err) = env.gw.cli("admin", &["ticket", "close", "INC-1"]);
    let closed = Instant::now();
    assert_eq!(code, 0, "ticket close: {out} {err}");
    t.expect(
        "[jitgate] session terminated: ticket INC-1 closed",
        Duration::from_secs(5),
    );
    let shown = closed.elapsed();
    assert_exits_255(&mut t);
    assert!(
        shown < Duration::from_secs(1),
        "the cut reached the terminal {shown:?} after the ticket closed"
    );
    assert_ended(&env, &g.grant, "ticket", "ticket INC-1 closed").await;
    // The target side was closed: its processes got SIGHUP.
    assert_gone("sleep 4201");
}

/// The target's processes matching `pattern` end within 3 s.
fn assert_gone(pattern: &str) {
    let deadline = Instant::now() + Duration::from_secs(3);
    while running(pattern) {
        assert!(
            Instant::now() < deadline,
            "a process of the cut session still runs on the target: {pattern}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test]
async fn a_client_that_stops_reading_is_still_cut_within_a_second() {
    let env = Env::start();
    let g = grant(&env.gw, "alice", "ops", "INC-1", "15m");
    let mut t = shell(&env, &g.token);
    t.send("sleep 4202 & echo bg-$((2+2))\r");
    t.expect("bg-4", Duration::from_secs(5));
    // The technician's ssh freezes: it reads nothing and acknowledges nothing from now on.
    let pid = t.pid().to_string();
    let signal = |sig: &str| {
        let ok = std::process::Command::new("kill")
            .args([sig, &pid])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill {sig} {pid}");
    };
    signal("-STOP");
    let (code, out, err) = env.gw.cli("admin", &["ticket", "close", "INC-1"]);
    assert_eq!(code, 0, "ticket close: {out} {err}");
    // The gateway does not wait for the frozen client: the target side is closed and the end
    // is recorded, with a kill latency taken when the gateway closed the connection.
    assert_gone("sleep 4202");
    let s = ended_session(&env.gw, &g.grant).await;
    assert_eq!(s["end_cause"], "ticket", "{s}");
    let latency = s["kill_latency_ms"].as_u64().expect("kill latency");
    assert!(latency < 1000, "kill latency {latency} ms: {s}");
    // Resumed, the client reads what the gateway sent before it closed: the reason, then the
    // disconnect.
    signal("-CONT");
    t.expect(
        "[jitgate] session terminated: ticket INC-1 closed",
        Duration::from_secs(5),
    );
    assert_exits_255(&mut t);
}

/// Whether a process of the target login matches `pattern`.
fn running(pattern: &str) -> bool {
    std::process::Command::new("pgrep")
        .args(["-u", crate::sshd::LOGIN, "-f", pattern])
        .stdout(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[tokio::test]
async fn grant_expiry_cuts_a_live_shell_within_a_second() {
    let env = Env::start();
    let g = grant(&env.gw, "alice", "ops", "INC-1", "5s");
    let expires = grant_state(&env.gw, &g.grant).await["expires_at"]
        .as_i64()
        .expect("expires_at");
    let mut t = shell(&env, &g.token);
    t.expect(
        &format!("[jitgate] session terminated: grant {} expired", g.grant),
        Duration::from_secs(10),
    );
    let at = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64();
    assert_exits_255(&mut t);
    let late = at - expires as f64;
    assert!(late > -0.05, "cut {:.3} s before the grant expired", -late);
    assert!(
        late < 1.0,
        "cut {late:.3} s after the grant expired at {expires}"
    );
    assert_ended(&env, &g.grant, "expired", "expired").await;
}

#[tokio::test]
async fn kill_cuts_a_live_session() {
    let env = Env::start();
    let g = grant(&env.gw, "alice", "ops", "INC-1", "15m");
    let mut t = shell(&env, &g.token);
    let s = live_session(&env.gw, &g.grant).await;
    let sid = s["id"].as_str().expect("session id");
    let (code, listed, err) = env.gw.cli_json("admin", &["sessions", "--live"]);
    assert_eq!(code, 0, "sessions --live: {err}");
    assert!(
        listed
            .as_array()
            .is_some_and(|l| l.iter().any(|x| x["id"] == sid && x["user"] == "alice")),
        "{listed}"
    );
    let (code, out, err) = env
        .gw
        .cli("admin", &["kill", sid, "--reason", "suspicious activity"]);
    assert_eq!(code, 0, "kill: {out} {err}");
    t.expect(
        "[jitgate] session terminated: killed by admin: suspicious activity",
        Duration::from_secs(5),
    );
    assert_exits_255(&mut t);
    assert_ended(&env, &g.grant, "killed", "suspicious activity").await;
    let (code, listed, _) = env.gw.cli_json("admin", &["sessions", "--live"]);
    assert_eq!(code, 0);
    assert!(
        listed
            .as_array()
            .is_some_and(|l| l.iter().all(|x| x["id"] != sid)),
        "a killed session is still listed as live: {listed}"
    );
}
