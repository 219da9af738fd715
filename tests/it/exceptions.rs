//! Evidence and exceptions end to end, against a real `sshd` and real `ssh` clients: the session
//! index and its filters; crash recovery after `kill -9` with live sessions; break-glass (alert
//! webhook, forced input recording, TTL cut, review by someone else, the block until reviewed);
//! and vendor access under the example policy (sponsor approvals, the vendor in the certificate
//! key id and the audit trail).

use std::collections::BTreeSet;
use std::fs;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::flows::{
    approve, approved_token, audited, grant_state, open_ticket, request, request_state, token,
};
use crate::harness::{Gateway, Opts, Policy, api_key, now, output};
use crate::ssh::{
    Background, Env, Granted, Term, ended_session, grant, live_session, session_ended_record,
    sessions_of, sha256_file, ssh_askpass_cmd, ssh_exec,
};
use crate::sshd::{LOGIN, Sshd};

/// A `[[users]]` entry whose API key is [`api_key`]`(name)`, as the fixture's users have.
fn user_toml(name: &str, body: &str) -> String {
    let hash = jitgate::crypto::sha256_hex(api_key(name).as_bytes());
    format!("\n[[users]]\nname = \"{name}\"\n{body}\napi_key_sha256 = \"{hash}\"\n")
}

/// A break-glass task on `box` whose own setting would not record input.
fn bg_task() -> String {
    format!(
        r#"
[[tasks]]
name = "bg"
description = "Emergency access to the test box"
targets = ["box"]
principal = "{LOGIN}"
allow = ["pty", "shell", "exec"]
max_ttl = "1h"
record_input = false
"#
    )
}

/// Tasks of the gateways built by [`env`]: `ops` on both names of the target, `patch` (vendors
/// may do it) and the break-glass task `bg`.
fn tasks() -> String {
    format!(
        r#"
[[tasks]]
name = "ops"
description = "Operate the test box"
targets = ["box", "box2"]
principal = "{LOGIN}"
allow = ["pty", "shell", "exec"]
max_ttl = "1h"

[[tasks]]
name = "patch"
description = "Patch the vendor's agent on the test box"
targets = ["box"]
principal = "{LOGIN}"
allow = ["pty", "shell", "exec"]
max_ttl = "1h"
vendor_allowed = true
{}"#,
        bg_task()
    )
}

/// sshd, then a gateway under `policy` reaching it as `box` and as `box2`, with [`tasks`] and
/// `extra` TOML. (`Env::with` has no policy and one target name.)
fn env(policy: Policy, extra: &str) -> Env {
    let sshd = Sshd::start();
    let opts = Opts::default()
        .policy(policy)
        .extra(&sshd.target_toml("box", &sshd.host_key))
        .extra(&sshd.target_toml("box2", &sshd.host_key))
        .extra(&tasks())
        .extra(extra);
    let mut gw = Gateway::prepare(opts);
    gw.init();
    sshd.trust(&gw.path("certs/ssh_user_ca.pub"));
    gw.serve();
    Env { gw, sshd }
}

/// Open `ticket` for `user`, request `task` on `target`, approve as bob, fetch the token.
fn grant_on(gw: &Gateway, user: &str, task: &str, target: &str, ticket: &str) -> Granted {
    open_ticket(gw, ticket, user);
    let (code, v, err) = request(gw, user, task, target, ticket, "30m", "integration test");
    assert_eq!(code, 0, "request {task} on {target} as {user}: {v} {err}");
    let id = v["id"].as_str().expect("request id").to_string();
    approved_token(gw, user, id)
}

/// `jitgate break-glass --json` as `user` on `box`; must succeed.
fn break_glass(gw: &Gateway, user: &str, reason: &str) -> Value {
    let (code, v, err) = gw.cli_json(
        user,
        &["break-glass", "--target", "box", "--reason", reason],
    );
    assert_eq!(code, 0, "break-glass as {user}: {v} {err}");
    for k in [
        "token",
        "grant",
        "request",
        "review",
        "ticket",
        "expires_at",
    ] {
        assert!(v[k].is_string(), "break-glass output lacks {k}: {v}");
    }
    assert!(v["token"].as_str().is_some_and(|t| t.starts_with("jgt_")));
    v
}

/// Run `remote` through the gateway and expect it to print `want`.
fn exec_ok(gw: &Gateway, token: &str, user: &str, remote: &str, want: &str) {
    let (code, out, err) = ssh_exec(gw, token, user, remote);
    assert_eq!((code, out.trim()), (0, want), "ssh as {user}: {err}");
}

/// The one session of `grant` once ended; its id.
async fn ended_id(gw: &Gateway, grant: &str) -> String {
    let s = ended_session(gw, grant).await;
    s["id"].as_str().expect("session id").to_string()
}

/// Session ids `jitgate --json sessions ARGS` lists for `user`.
fn listed(gw: &Gateway, user: &str, args: &[&str]) -> BTreeSet<String> {
    let mut all = vec!["sessions"];
    all.extend_from_slice(args);
    let (code, v, err) = gw.cli_json(user, &all);
    assert_eq!(code, 0, "sessions {args:?} as {user}: {v} {err}");
    ids_of(&v)
}

/// Session ids `GET /api/v1/sessions?QUERY` lists for admin.
async fn api_listed(gw: &Gateway, query: &str) -> BTreeSet<String> {
    let a = gw
        .api("admin")
        .get(&format!("/api/v1/sessions?{query}"))
        .await
        .expect("GET /api/v1/sessions");
    assert_eq!(a.status, 200, "GET /api/v1/sessions?{query}: {:?}", a.body);
    ids_of(&a.body)
}

fn ids_of(list: &Value) -> BTreeSet<String> {
    list.as_array()
        .unwrap_or_else(|| panic!("not a list: {list}"))
        .iter()
        .map(|s| s["id"].as_str().expect("session id").to_string())
        .collect()
}

fn set(ids: &[&String]) -> BTreeSet<String> {
    ids.iter().map(|s| s.to_string()).collect()
}

/// The `i` events of an asciicast v2 file, concatenated.
fn cast_input(path: &Path) -> String {
    let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .skip(1)
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|ev| ev[1] == "i")
        .filter_map(|ev| ev[2].as_str().map(str::to_string))
        .collect()
}

/// `asciinema cat FILE` on a terminal (it needs one): exit 0, and what it printed.
fn asciinema_cat(path: &Path) -> String {
    let mut cmd = Command::new("script");
    cmd.arg("-qec")
        .arg(format!("asciinema cat {}", path.display()))
        .arg("/dev/null");
    let (code, out, err) = output(cmd);
    assert_eq!(code, 0, "asciinema cat {}: {out} {err}", path.display());
    out
}

/// Every recorded file of an indexed session exists in its `dir` with the listed SHA-256 and
/// size; returns the paths.
fn assert_files_match(s: &Value) -> Vec<PathBuf> {
    let dir = PathBuf::from(s["dir"].as_str().unwrap_or_else(|| panic!("no dir: {s}")));
    assert!(dir.is_dir(), "the recording folder is missing: {s}");
    let files = s["files"]
        .as_array()
        .unwrap_or_else(|| panic!("no files: {s}"));
    assert!(!files.is_empty(), "no recorded files listed: {s}");
    files
        .iter()
        .map(|f| {
            let p = dir.join(f["name"].as_str().expect("file name"));
            assert_eq!(
                f["sha256"],
                sha256_file(&p).as_str(),
                "digest of {f} in {s}"
            );
            let len = fs::metadata(&p).expect("recorded file").len();
            assert_eq!(f["bytes"], len, "size of {f} in {s}");
            p
        })
        .collect()
}

#[tokio::test]
async fn session_index_filters_by_user_target_task_ticket_time_state_cause_break_glass_and_vendor()
{
    let extra = format!(
        "\n[break_glass]\ntasks = [\"bg\"]\n{}{}",
        user_toml("brenda", "roles = [\"technician\", \"break-glass\"]"),
        user_toml("otto", "roles = [\"technician\"]\nvendor = \"globex\""),
    );
    let env = env(Policy::None, &extra);
    let gw = &env.gw;

    // Before the mark: alice on box, dave on box2.
    let g1 = grant(gw, "alice", "ops", "INC-11", "30m");
    exec_ok(gw, &g1.token, "alice", "echo s1", "s1");
    let s1 = ended_id(gw, &g1.grant).await;
    let g2 = grant_on(gw, "dave", "ops", "box2", "INC-12");
    exec_ok(gw, &g2.token, "dave", "echo s2", "s2");
    let s2 = ended_id(gw, &g2.grant).await;
    let mark = now() + 1;
    while now() < mark {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // After it: two vendors, a break-glass use, and a session cut by its ticket closing.
    let g3 = grant_on(gw, "vic", "patch", "box", "INC-13");
    exec_ok(gw, &g3.token, "vic", "echo s3", "s3");
    let s3 = ended_id(gw, &g3.grant).await;
    let g4 = grant_on(gw, "otto", "patch", "box", "INC-14");
    exec_ok(gw, &g4.token, "otto", "echo s4", "s4");
    let s4 = ended_id(gw, &g4.grant).await;
    let bg = break_glass(gw, "brenda", "database down");
    exec_ok(gw, bg["token"].as_str().unwrap(), "brenda", "echo s5", "s5");
    let s5 = ended_id(gw, bg["grant"].as_str().unwrap()).await;
    let g6 = grant(gw, "alice", "ops", "INC-16", "30m");
    let askpass = tempfile::tempdir().expect("temp dir");
    let mut cmd = ssh_askpass_cmd(gw, &g6.token, "alice", &[], askpass.path());
    cmd.arg("sleep 120");
    let client = Background::spawn(cmd);
    let live = live_session(gw, &g6.grant).await;
    let s6 = live["id"].as_str().expect("session id").to_string();
    // The session is live once authenticated; its command's channel (and recording) follow.
    let cast = PathBuf::from(live["dir"].as_str().expect("dir")).join("1.cast");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !cast.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "no {} within 10 s",
            cast.display()
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }

    let all = set(&[&s1, &s2, &s3, &s4, &s5, &s6]);
    let ended5 = set(&[&s1, &s2, &s3, &s4, &s5]);
    let mark_rfc3339 = jitgate::types::rfc3339(mark);
    let mark = mark.to_string();
    assert_eq!(listed(gw, "admin", &[]), all);
    assert_eq!(listed(gw, "admin", &["--live"]), set(&[&s6]));
    assert_eq!(listed(gw, "admin", &["--ended"]), ended5);
    assert_eq!(api_listed(gw, "live=true").await, set(&[&s6]));

    // The ticket closes: the live session is cut, and the index says so.
    let (code, out, err) = gw.cli("admin", &["ticket", "close", "INC-16"]);
    assert_eq!(code, 0, "ticket close: {out} {err}");
    let cut = ended_session(gw, &g6.grant).await;
    assert_eq!(cut["end_cause"], "ticket", "{cut}");
    let _ = client.stop();

    let cases: Vec<(Vec<&str>, BTreeSet<String>)> = vec![
        (vec![], all.clone()),
        (vec!["--live"], BTreeSet::new()),
        (vec!["--ended"], all.clone()),
        (vec!["--user", "alice"], set(&[&s1, &s6])),
        (vec!["--user", "vic"], set(&[&s3])),
        (vec!["--target", "box2"], set(&[&s2])),
        (vec!["--target", "box"], set(&[&s1, &s3, &s4, &s5, &s6])),
        (vec!["--task", "patch"], set(&[&s3, &s4])),
        (vec!["--task", "bg"], set(&[&s5])),
        (vec!["--ticket", "INC-12"], set(&[&s2])),
        (vec!["--grant", &g1.grant], set(&[&s1])),
        (vec!["--protocol", "ssh"], all.clone()),
        (vec!["--protocol", "https"], BTreeSet::new()),
        (vec!["--until", &mark], set(&[&s1, &s2])),
        (vec!["--since", &mark], set(&[&s3, &s4, &s5, &s6])),
        (vec!["--until", &mark_rfc3339], set(&[&s1, &s2])),
        (vec!["--since", &mark, "--user", "alice"], set(&[&s6])),
        (vec!["--end-cause", "ticket"], set(&[&s6])),
        (vec!["--end-cause", "client"], ended5.clone()),
        (vec!["--end-cause", "restart"], BTreeSet::new()),
        (vec!["--break-glass"], set(&[&s5])),
        (vec!["--vendor"], set(&[&s3, &s4])),
        (vec!["--vendor", "acme"], set(&[&s3])),
        (vec!["--vendor", "globex"], set(&[&s4])),
        (vec!["--vendor", "initech"], BTreeSet::new()),
        (
            vec!["--ended", "--task", "ops", "--target", "box"],
            set(&[&s1, &s6]),
        ),
    ];
    for (args, want) in &cases {
        assert_eq!(
            &listed(gw, "admin", args),
            want,
            "jitgate sessions {args:?}"
        );
    }
    // The same filters through the API.
    assert_eq!(api_listed(gw, "break_glass=true").await, set(&[&s5]));
    assert_eq!(api_listed(gw, "vendor=acme").await, set(&[&s3]));
    assert_eq!(api_listed(gw, "vendor=true").await, set(&[&s3, &s4]));
    assert_eq!(
        api_listed(gw, &format!("since={mark}&end_cause=client")).await,
        set(&[&s3, &s4, &s5])
    );
    assert_eq!(
        api_listed(gw, "ticket=INC-16&live=false").await,
        set(&[&s6])
    );
    assert_eq!(
        api_listed(gw, "target=box2&protocol=ssh&task=ops").await,
        set(&[&s2])
    );
    // A technician sees only their own sessions, whatever they ask for.
    assert_eq!(listed(gw, "alice", &[]), set(&[&s1, &s6]));
    assert_eq!(listed(gw, "alice", &["--user", "dave"]), set(&[&s1, &s6]));

    // Entries carry what they are filtered by, and their recordings with digests.
    let (code, v, err) = gw.cli_json("admin", &["sessions"]);
    assert_eq!(code, 0, "{err}");
    for s in v.as_array().expect("a list") {
        let id = s["id"].as_str().expect("id").to_string();
        assert_eq!(s["protocol"], "ssh", "{s}");
        let vendor = match () {
            _ if id == s3 => "acme",
            _ if id == s4 => "globex",
            _ => "",
        };
        assert_eq!(s["vendor"].as_str().unwrap_or(""), vendor, "{s}");
        let kind = if id == s5 { "break-glass" } else { "normal" };
        assert_eq!(s["kind"], kind, "{s}");
        let casts = assert_files_match(s);
        assert!(
            casts
                .iter()
                .all(|p| p.extension().is_some_and(|e| e == "cast")),
            "{s}"
        );
    }
    // `jitgate replay` plays any indexed SSH session.
    for (sid, want) in [(&s2, "s2"), (&s5, "s5"), (&s3, "s3")] {
        let (code, out, err) = gw.run(&["replay", sid, "--speed", "100"], &[]);
        assert_eq!(code, 0, "replay {sid}: {err}");
        assert!(out.contains(want), "replay {sid}: {out:?}");
    }
}

/// The pid of this gateway's `jitgate serve` (the harness keeps the child to itself): the one
/// process whose command line names this test's own configuration file and `serve`.
fn serve_pid(gw: &Gateway) -> u32 {
    let config = gw.config.display().to_string();
    let mut found = Vec::new();
    for e in fs::read_dir("/proc").expect("read /proc").flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(raw) = fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<&[u8]> = raw.split(|b| *b == 0).collect();
        if args.contains(&config.as_bytes()) && args.contains(&b"serve".as_slice()) {
            found.push(pid);
        }
    }
    assert_eq!(
        found.len(),
        1,
        "jitgate serve processes for {config}: {found:?}"
    );
    found[0]
}

/// `kill -9` the gateway and wait until it is dead (a zombie until the harness reaps it).
fn kill_9(gw: &Gateway) {
    let pid = serve_pid(gw);
    let status = Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -KILL {pid}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = stat.rsplit_once(") ").map(|(_, r)| r.chars().next());
        if stat.is_empty() || state == Some(Some('Z')) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "jitgate serve {pid} survived SIGKILL"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Log in on a pty, type a command, and wait until its output is flushed to the session's cast.
async fn shell_with_flushed_output(gw: &Gateway, user: &str, g: &Granted, n: u32) -> (Term, Value) {
    let mut t = Term::ssh_login(gw, user, &g.token);
    t.expect("$ ", Duration::from_secs(10));
    t.send(&format!("echo pre-$(({n}+1000))\r"));
    let shown = format!("pre-{}", n + 1000);
    t.expect(&shown, Duration::from_secs(5));
    let s = live_session(gw, &g.grant).await;
    let cast = PathBuf::from(s["dir"].as_str().expect("dir")).join("1.cast");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !fs::read_to_string(&cast)
        .unwrap_or_default()
        .contains(&shown)
    {
        assert!(
            Instant::now() < deadline,
            "{shown} not flushed to {} within 5 s",
            cast.display()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (t, s)
}

#[tokio::test]
async fn kill_9_with_two_live_sessions_then_restart_ends_them_with_digests_and_a_verifying_chain() {
    let mut env = Env::start();
    // alice's grant expires while the gateway is down; dave's outlives the crash.
    let ga = grant(&env.gw, "alice", "ops", "INC-21", "12s");
    let gd = grant(&env.gw, "dave", "ops", "INC-22", "30m");
    let expires = grant_state(&env.gw, &ga.grant).await["expires_at"]
        .as_i64()
        .expect("expires_at");
    let (mut ta, sa) = shell_with_flushed_output(&env.gw, "alice", &ga, 1).await;
    let (mut td, sd) = shell_with_flushed_output(&env.gw, "dave", &gd, 2).await;
    assert!(
        now() < expires - 1,
        "the machine is too slow: alice's 12 s grant nearly expired before the crash"
    );

    kill_9(&env.gw);
    // The clients lose their connection.
    assert_eq!(ta.wait(Duration::from_secs(10)).code(), Some(255));
    assert_eq!(td.wait(Duration::from_secs(10)).code(), Some(255));
    // Let alice's grant expire while nothing runs.
    while now() <= expires {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    env.gw.restart();
    let gw = &env.gw;

    let (code, v, err) = gw.cli_json("admin", &["sessions", "--end-cause", "restart"]);
    assert_eq!(code, 0, "sessions --end-cause restart: {v} {err}");
    let sids: BTreeSet<String> = [&sa, &sd]
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids_of(&v), sids, "{v}");
    assert!(listed(gw, "admin", &["--live"]).is_empty());
    let audit_ended = gw.audit("session.ended").await;
    for s in v.as_array().unwrap() {
        let sid = s["id"].as_str().unwrap();
        assert!(!s["ended_at"].is_null(), "{s}");
        assert!(
            s["end_reason"]
                .as_str()
                .is_some_and(|r| r.contains("restart")),
            "{s}"
        );
        // Digests of the partial casts, equal to the files on disk; asciinema still reads them.
        let files = assert_files_match(s);
        let shown = if s["user"] == "alice" { 1001 } else { 1002 };
        for p in &files {
            let out = asciinema_cat(p);
            assert!(
                out.contains(&format!("pre-{shown}")),
                "asciinema cat {}: {out:?}",
                p.display()
            );
        }
        // `jitgate replay` plays the partial recording.
        let (code, out, err) = gw.run(&["replay", sid, "--speed", "100"], &[]);
        assert_eq!(code, 0, "replay {sid}: {err}");
        assert!(
            out.contains(&format!("pre-{shown}")),
            "replay {sid}: {out:?}"
        );
        // session.json is completed with the same digests.
        let dir = PathBuf::from(s["dir"].as_str().unwrap());
        let manifest: Value =
            serde_json::from_str(&fs::read_to_string(dir.join("session.json")).unwrap())
                .expect("session.json is JSON");
        assert!(!manifest["ended_at"].is_null(), "{manifest}");
        let listed_files: Vec<(&Value, &Value)> = manifest["files"]
            .as_array()
            .expect("files in session.json")
            .iter()
            .map(|f| (&f["name"], &f["sha256"]))
            .collect();
        let indexed: Vec<(&Value, &Value)> = s["files"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| (&f["name"], &f["sha256"]))
            .collect();
        assert_eq!(listed_files, indexed, "session.json vs the index");
        // Audited once, with cause restart and the same digests.
        let recs: Vec<&Value> = audit_ended.iter().filter(|r| r["session"] == sid).collect();
        assert_eq!(recs.len(), 1, "session.ended for {sid}: {recs:?}");
        assert_eq!(recs[0]["cause"], "restart", "{}", recs[0]);
        assert_eq!(recs[0]["recording"], s["files"], "{}", recs[0]);
    }

    let (code, out, err) = gw.run(&["audit", "verify"], &[]);
    assert_eq!(code, 0, "audit verify after the crash: {out} {err}");

    // alice's grant expired during the outage: not resurrected, not usable.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let g = grant_state(gw, &ga.grant).await;
        if g["state"] == "expired" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "grant expired meanwhile but is {g}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (code, out, _) = ssh_exec(gw, &ga.token, "alice", "echo resurrected");
    assert_ne!(code, 0, "an expired grant admitted a session: {out}");
    assert!(!out.contains("resurrected"));
    assert_eq!(sessions_of(gw, &ga.grant).await.len(), 1);
    // dave's grant is still good.
    exec_ok(gw, &gd.token, "dave", "echo still-good", "still-good");
}

/// A loopback HTTP receiver: answers each POST with the next of `statuses` (then 200) and
/// hands over what it received.
struct Hook {
    url: String,
    rx: mpsc::Receiver<(String, Value)>,
}

impl Hook {
    fn start(statuses: &'static [u16]) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the webhook receiver");
        let port = listener.local_addr().expect("local addr").port();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for (i, conn) in listener.incoming().enumerate() {
                let Ok(mut s) = conn else { continue };
                let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                let Some((head, body)) = read_request(&mut s) else {
                    continue;
                };
                let status = statuses.get(i).copied().unwrap_or(200);
                let _ = write!(
                    s,
                    "HTTP/1.1 {status} Test\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                );
                let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
                if tx.send((head, body)).is_err() {
                    break;
                }
            }
        });
        Self {
            url: format!("http://127.0.0.1:{port}/hooks/jitgate"),
            rx,
        }
    }

    fn next(&self) -> (String, Value) {
        self.rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the webhook receiver got a POST within 10 s")
    }
}

/// One HTTP/1.1 request: its head and body (by Content-Length).
fn read_request(s: &mut impl Read) -> Option<(String, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            let len: usize = head
                .lines()
                .filter_map(|l| l.split_once(':'))
                .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
                .and_then(|(_, v)| v.trim().parse().ok())
                .unwrap_or(0);
            while buf.len() < end + 4 + len {
                let n = s.read(&mut chunk).ok().filter(|n| *n > 0)?;
                buf.extend_from_slice(&chunk[..n]);
            }
            return Some((head, buf[end + 4..end + 4 + len].to_vec()));
        }
        let n = s.read(&mut chunk).ok().filter(|n| *n > 0)?;
        buf.extend_from_slice(&chunk[..n]);
    }
}

#[tokio::test]
async fn break_glass_is_alerted_recorded_with_input_cut_at_its_ttl_and_refused_until_someone_else_reviews_it()
 {
    // The receiver fails the first attempt: the alert is retried.
    let hook = Hook::start(&[503]);
    let extra = format!(
        "{}\n[break_glass]\ntasks = [\"bg\"]\nmax_ttl = \"5s\"\nalert_webhook = \"{}\"\nblock_requests_until_reviewed = true\n{}",
        bg_task(),
        hook.url,
        user_toml(
            "brenda",
            "roles = [\"technician\", \"break-glass\", \"reviewer\"]"
        ),
    );
    let env = Env::with(None, &extra);
    let gw = &env.gw;

    let bg = break_glass(gw, "brenda", "payroll database down");
    let (grant_id, review) = (
        bg["grant"].as_str().unwrap().to_string(),
        bg["review"].as_str().unwrap().to_string(),
    );
    assert_eq!(bg["task"], "bg", "{bg}");
    assert_eq!(bg["target"], "box", "{bg}");
    let g = grant_state(gw, &grant_id).await;
    let ttl = g["expires_at"].as_i64().unwrap() - g["issued_at"].as_i64().unwrap_or(now());
    assert!(ttl <= 5, "break-glass TTL {ttl} s beyond max_ttl 5s: {g}");

    // Alerted: a POST (retried after the 503) with who, where, why and the review.
    let (head1, first) = hook.next();
    let (head2, second) = hook.next();
    for (head, body) in [(&head1, &first), (&head2, &second)] {
        assert!(head.starts_with("POST /hooks/jitgate "), "{head}");
        assert!(
            head.to_ascii_lowercase()
                .contains("content-type: application/json"),
            "{head}"
        );
        assert_eq!(body["user"], "brenda", "{body}");
        assert_eq!(body["target"], "box", "{body}");
        assert_eq!(body["reason"], "payroll database down", "{body}");
        assert_eq!(body["review"], review.as_str(), "{body}");
        assert_eq!(body["grant"], grant_id.as_str(), "{body}");
    }
    assert!(gw.logs().contains("BREAK-GLASS"), "no WARN log line");
    let activated = audited(gw, "break_glass.activated", "grant", &grant_id).await;
    assert_eq!(activated.len(), 1, "{activated:?}");
    assert_eq!(activated[0]["review"], review.as_str());
    assert_eq!(activated[0]["user"], "brenda");

    // A shell: recorded with input although the task says record_input = false; cut at the TTL.
    let mut t = Term::ssh_login(gw, "brenda", bg["token"].as_str().unwrap());
    t.expect("$ ", Duration::from_secs(10));
    t.send("echo typed-$((6*7))\r");
    t.expect("typed-42", Duration::from_secs(5));
    t.expect(
        &format!("[jitgate] session terminated: grant {grant_id} expired"),
        Duration::from_secs(10),
    );
    assert_eq!(t.wait(Duration::from_secs(5)).code(), Some(255));
    let s = ended_session(gw, &grant_id).await;
    assert_eq!(s["end_cause"], "expired", "{s}");
    let sid = s["id"].as_str().unwrap();
    let ended = session_ended_record(gw, sid).await;
    assert_eq!(ended["cause"], "expired", "{ended}");
    let casts = assert_files_match(&s);
    let input: String = casts.iter().map(|p| cast_input(p)).collect();
    assert!(
        input.contains("echo typed-$((6*7))"),
        "break-glass input not recorded: {input:?}"
    );
    assert_eq!(
        listed(gw, "admin", &["--break-glass"]),
        set(&[&sid.to_string()])
    );

    // The review is open, with its age.
    let (code, v, err) = gw.cli_json("rita", &["reviews"]);
    assert_eq!(code, 0, "reviews: {err}");
    let open: Vec<&Value> = v.as_array().expect("a list").iter().collect();
    assert_eq!(open.len(), 1, "{v}");
    assert_eq!(open[0]["id"], review.as_str());
    assert_eq!(open[0]["user"], "brenda");
    assert!(open[0]["reviewed_by"].is_null(), "{v}");
    assert!(open[0]["age_secs"].as_i64().is_some_and(|a| a >= 0), "{v}");

    // Refused a second time, naming the open review.
    let (code, out, err) = gw.cli(
        "brenda",
        &["break-glass", "--target", "box", "--reason", "again"],
    );
    assert_eq!(code, 1, "a second break-glass before review: {out}");
    assert!(
        err.contains(&review),
        "the refusal does not name {review}: {err}"
    );
    let denied = audited(gw, "break_glass.denied", "user", "brenda").await;
    assert_eq!(denied.len(), 1, "{denied:?}");
    assert!(
        denied[0]["reason"]
            .as_str()
            .is_some_and(|r| r.contains(&review)),
        "{}",
        denied[0]
    );
    // block_requests_until_reviewed: a normal request is refused too.
    open_ticket(gw, "INC-31", "brenda");
    let (code, v, err) = request(gw, "brenda", "ops", "box", "INC-31", "15m", "routine");
    assert_eq!(code, 1, "a request while a review is open: {v}");
    assert!(err.contains(&review), "{err}");

    // Reviewable only by someone else: not by brenda (a reviewer herself), not by a technician.
    let (code, out, err) = gw.cli("brenda", &["review", &review, "--notes", "fine by me"]);
    assert_eq!(code, 1, "brenda reviewed her own break-glass: {out}");
    assert!(err.contains("someone else"), "{err}");
    let (code, out, err) = gw.cli("alice", &["review", &review, "--notes", "lgtm"]);
    assert_eq!(code, 1, "a technician reviewed: {out}");
    assert!(err.contains("reviewer role"), "{err}");
    assert!(
        audited(gw, "review.completed", "review", &review)
            .await
            .is_empty()
    );
    let (code, v, err) = gw.cli_json(
        "rita",
        &["review", &review, "--notes", "checked the recording"],
    );
    assert_eq!(code, 0, "review by rita: {v} {err}");
    assert_eq!(v["reviewed_by"], "rita", "{v}");
    let done = audited(gw, "review.completed", "review", &review).await;
    assert_eq!(done.len(), 1, "{done:?}");
    assert_eq!(done[0]["user"], "brenda");
    assert_eq!(done[0]["actor"], "rita");
    let (_, v, _) = gw.cli_json("rita", &["reviews"]);
    assert_eq!(v.as_array().map(Vec::len), Some(0), "{v}");
    let (_, v, _) = gw.cli_json("rita", &["reviews", "--all"]);
    assert!(
        v.as_array().is_some_and(|l| l
            .iter()
            .any(|r| r["id"] == review.as_str() && r["reviewed_by"] == "rita")),
        "{v}"
    );

    // Reviewed: brenda may request and break glass again.
    let (code, v, err) = request(gw, "brenda", "ops", "box", "INC-31", "15m", "routine");
    assert_eq!(code, 0, "a request after the review: {v} {err}");
    assert_eq!(v["state"], "pending", "{v}");
    let again = break_glass(gw, "brenda", "payroll database down again");
    assert_ne!(again["review"], review.as_str());
}

#[tokio::test]
async fn vendor_request_needs_two_sponsor_approvals_and_is_marked_as_the_vendor() {
    let extra = user_toml(
        "vera",
        "roles = [\"approver\"]\ngroups = [\"vendor-sponsors\"]",
    );
    let env = env(Policy::Example, &extra);
    let gw = &env.gw;
    open_ticket(gw, "VEN-1", "vic");

    // Not a vendor task: refused outright.
    let (code, v, err) = request(gw, "vic", "ops", "box", "VEN-1", "20m", "agent upgrade");
    assert_eq!(code, 1, "a vendor got a non-vendor task: {v}");
    assert!(err.contains("vendor-allowed-tasks-only"), "{err}");

    // A vendor task: pending until two sponsors approved.
    let (code, v, err) = request(gw, "vic", "patch", "box", "VEN-1", "20m", "agent upgrade");
    assert_eq!(code, 0, "request: {v} {err}");
    assert_eq!(v["state"], "pending", "{v}");
    let id = v["id"].as_str().unwrap().to_string();
    let (code, v, err) = approve(gw, "carol", &id);
    assert_eq!(code, 1, "a non-sponsor approved a vendor request: {v}");
    assert!(err.contains("vendor-needs-sponsor-approver"), "{err}");
    assert_eq!(request_state(gw, &id).await["state"], "pending");
    let (code, v, err) = approve(gw, "bob", &id);
    assert_eq!(code, 0, "bob's approval: {v} {err}");
    assert_eq!(v["state"], "pending", "one sponsor approval granted: {v}");
    assert!(v["grant"].is_null(), "{v}");
    let (code, v, err) = approve(gw, "vera", &id);
    assert_eq!(code, 0, "vera's approval: {v} {err}");
    assert_eq!(v["state"], "approved", "{v}");
    let grant_id = v["grant"].as_str().expect("grant id").to_string();
    let (tok, _) = token(gw, "vic", &id);

    exec_ok(gw, &tok, "vic", "echo vendor-ok", "vendor-ok");
    let s = ended_session(gw, &grant_id).await;
    let sid = s["id"].as_str().unwrap().to_string();
    assert_eq!(s["vendor"], "acme", "{s}");
    let mut approvers: Vec<&str> = s["approvers"]
        .as_array()
        .expect("approvers")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    approvers.sort();
    assert_eq!(approvers, ["bob", "vera"], "{s}");
    assert_eq!(listed(gw, "admin", &["--vendor", "acme"]), set(&[&sid]));

    // The target's log names the vendor through the certificate key id.
    let key_id =
        format!("jitgate session={sid} grant={grant_id} user=vic ticket=VEN-1 vendor=acme");
    let log = env.sshd.log();
    assert!(log.contains(&key_id), "sshd log lacks {key_id:?}:\n{log}");
    // And so does the audit trail.
    let started = audited(gw, "session.started", "session", &sid).await;
    assert_eq!(started.len(), 1, "{started:?}");
    assert_eq!(started[0]["vendor"], "acme", "{}", started[0]);
    assert_eq!(started[0]["user"], "vic", "{}", started[0]);
}
