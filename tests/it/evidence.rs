//! Evidence bundles end to end: a real SSH session through the gateway to a real `sshd`,
//! exported with `jitgate evidence export` (refused while a session is live), verified with
//! `jitgate evidence verify` in a fresh folder with no configuration, database or gateway, and
//! rejected — naming what failed — after one byte of any member is flipped, a member is removed
//! or added, or with another key.

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::flows::{approve, open_ticket, request, token};
use crate::harness::{BIN, Gateway, Opts, Out, Policy, output};
use crate::sshd::{LOGIN, Sshd};

/// How long a session may take to show up as live, or as ended.
const SESSION_WAIT: Duration = Duration::from_secs(20);

fn task() -> String {
    format!(
        r#"
[[tasks]]
name = "ops"
description = "Operate the test box"
targets = ["box"]
principal = "{LOGIN}"
allow = ["pty", "shell", "exec"]
max_ttl = "1h"
"#
    )
}

/// `ssh` through the gateway as alice with `token`, running `remote`.
fn ssh(gw: &Gateway, token: &str, remote: &str) -> Command {
    let mut cmd = Command::new("sshpass");
    cmd.arg("-e")
        .arg("ssh")
        .args(["-F", "/dev/null", "-o", "StrictHostKeyChecking=no"])
        .args(["-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR"])
        .args(["-o", "ConnectTimeout=10"])
        .args(["-o", "PreferredAuthentications=password", "-p"])
        .arg(gw.ssh_port().to_string())
        .arg("alice@127.0.0.1")
        .arg(remote)
        .env("SSHPASS", token)
        .env_remove("SSH_AUTH_SOCK");
    cmd
}

/// The sessions of `grant`, as admin sees them.
fn sessions(gw: &Gateway, grant: &str) -> Vec<Value> {
    let (code, v, err) = gw.cli_json("admin", &["sessions", "--grant", grant]);
    assert_eq!(code, 0, "sessions --grant {grant}: {v} {err}");
    v.as_array().cloned().unwrap_or_default()
}

/// Wait until a session of `grant` other than `except` satisfies `ended`; returns its id.
fn wait_session(gw: &Gateway, grant: &str, except: Option<&str>, ended: bool) -> String {
    let deadline = Instant::now() + SESSION_WAIT;
    loop {
        let found = sessions(gw, grant).into_iter().find(|s| {
            Some(s["id"].as_str().unwrap_or_default()) != except && s["ended_at"].is_null() != ended
        });
        if let Some(s) = found {
            return s["id"].as_str().expect("session id").to_string();
        }
        assert!(
            Instant::now() < deadline,
            "no {} session of grant {grant} within {SESSION_WAIT:?}: {:?}\n{}",
            if ended { "ended" } else { "live" },
            sessions(gw, grant),
            gw.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `jitgate evidence verify ARGS` run in `dir` with no jitgate environment (so no configuration:
/// the default `config/jitgate.toml` does not exist there).
fn verify_in(dir: &Path, args: &[&str]) -> Out {
    let mut cmd = Command::new(BIN);
    cmd.current_dir(dir).args(args);
    for var in [
        "JITGATE_URL",
        "JITGATE_API_KEY",
        "JITGATE_CA",
        "JITGATE_CONFIG",
        "JITGATE_LOG",
    ] {
        cmd.env_remove(var);
    }
    output(cmd)
}

/// `(path, offset of its data in the archive, size)` of every member.
fn layout(archive: &[u8]) -> Vec<(String, usize, usize)> {
    let mut tar = tar::Archive::new(archive);
    tar.entries()
        .expect("a tar archive")
        .map(|e| {
            let e = e.expect("a tar member");
            (
                e.path().expect("a path").display().to_string(),
                e.raw_file_position() as usize,
                e.size() as usize,
            )
        })
        .collect()
}

/// The archive rebuilt from `members`.
fn pack(members: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut tar = tar::Builder::new(Vec::new());
    for (path, bytes) in members {
        let mut h = tar::Header::new_gnu();
        h.set_size(bytes.len() as u64);
        h.set_mode(0o640);
        tar.append_data(&mut h, path, bytes.as_slice())
            .expect("append");
    }
    tar.into_inner().expect("finish the archive")
}

fn unpack(archive: &[u8]) -> Vec<(String, Vec<u8>)> {
    layout(archive)
        .into_iter()
        .map(|(p, at, n)| (p, archive[at..at + n].to_vec()))
        .collect()
}

/// Write `archive` as `dir/name`, verify it against `key`, and expect exit 1 naming `member`
/// (human output and `--json`).
fn assert_rejected(dir: &Path, name: &str, archive: &[u8], what: &str, member: &str) {
    fs::write(dir.join(name), archive).expect("write the tampered copy");
    let (code, out, err) = verify_in(dir, &["evidence", "verify", name, "--key", "audit.pub.pem"]);
    assert_eq!(code, 1, "{what} was not caught:\n{out}\n{err}");
    assert!(
        err.contains("NOT valid") && err.contains(member),
        "{what}: expected {member} to be named, got: {err}"
    );
    let (code, out, err) = verify_in(
        dir,
        &[
            "--json",
            "evidence",
            "verify",
            name,
            "--key",
            "audit.pub.pem",
        ],
    );
    assert_eq!(code, 1, "{what} (--json): {out}\n{err}");
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(v["ok"], false, "{v}");
    let said = format!("{}: {}", v["member"].as_str().unwrap_or(""), v["reason"]);
    assert!(said.contains(member), "{what} (--json): {v}");
}

#[test]
fn evidence_bundle_verifies_offline_and_names_each_tampered_removed_or_added_member() {
    let sshd = Sshd::start();
    let opts = Opts::default()
        .policy(Policy::None)
        .extra(&sshd.target_toml("box", &sshd.host_key))
        .extra(&task());
    let mut gw = Gateway::prepare(opts);
    gw.init();
    sshd.trust(&gw.path("certs/ssh_user_ca.pub"));
    gw.serve();

    open_ticket(&gw, "INC-90", "alice");
    let (code, v, err) = request(&gw, "alice", "ops", "box", "INC-90", "30m", "collect logs");
    assert_eq!(code, 0, "request: {v} {err}");
    let req = v["id"].as_str().expect("request id").to_string();
    let (code, v, err) = approve(&gw, "bob", &req);
    assert_eq!(code, 0, "approve: {v} {err}");
    let grant = v["grant"].as_str().expect("grant id").to_string();
    let (tok, _) = token(&gw, "alice", &req);

    // One recorded command through the gateway.
    let (code, out, err) = output(ssh(&gw, &tok, "echo evidence"));
    assert_eq!((code, out.as_str()), (0, "evidence\n"), "ssh: {err}");
    let session = wait_session(&gw, &grant, None, true);

    // A live session is refused: its recording is not final.
    let mut live = ssh(&gw, &tok, "sleep 60")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn ssh");
    let live_id = wait_session(&gw, &grant, Some(&session), false);
    let work = tempfile::tempdir().expect("temp dir");
    let live_bundle = work.path().join("live.tar");
    let (code, out, err) = gw.run(
        &[
            "evidence",
            "export",
            &live_id,
            "-o",
            &live_bundle.display().to_string(),
        ],
        &[],
    );
    let _ = live.kill();
    let _ = live.wait();
    assert_eq!(code, 1, "a live session was exported: {out} {err}");
    assert!(
        err.contains("still live") && err.contains("--allow-live"),
        "{err}"
    );
    assert!(!live_bundle.exists());

    // Export with the gateway running (the database is opened read-only).
    let bundle = work.path().join("evidence.tar");
    let (code, out, err) = gw.run(
        &[
            "--json",
            "evidence",
            "export",
            &session,
            "-o",
            &bundle.display().to_string(),
        ],
        &[],
    );
    assert_eq!(code, 0, "export: {out}\n{err}");
    let exported: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(exported["session"], session.as_str(), "{exported}");
    assert_eq!(exported["grant"], grant.as_str(), "{exported}");
    assert_eq!(exported["request"], req.as_str(), "{exported}");
    assert_eq!(exported["live"], false, "{exported}");

    // A standard tar archive.
    let mut tar_tf = Command::new("tar");
    tar_tf.arg("-tf").arg(&bundle);
    let (code, listing, err) = output(tar_tf);
    assert_eq!(code, 0, "tar -tf: {err}");
    for m in [
        "manifest.json",
        "manifest.sig",
        "audit_public_key.pem",
        "audit.jsonl",
        "recording/session.json",
    ] {
        assert!(listing.lines().any(|l| l == m), "{m} missing: {listing}");
    }
    let cast = listing
        .lines()
        .find(|l| l.starts_with("recording/") && l.ends_with(".cast"))
        .unwrap_or_else(|| panic!("no .cast in the bundle: {listing}"))
        .to_string();

    // A reviewer's machine: the bundle and the audit key obtained separately; nothing else.
    let review = tempfile::tempdir().expect("temp dir");
    let dir = review.path();
    fs::copy(&bundle, dir.join("evidence.tar")).expect("copy the bundle");
    let pub_pem = gw.path("certs/audit_ed25519.pub.pem");
    fs::copy(&pub_pem, dir.join("audit.pub.pem")).expect("copy the key");
    assert!(!dir.join("config").exists());

    let (code, out, err) = verify_in(
        dir,
        &[
            "evidence",
            "verify",
            "evidence.tar",
            "--key",
            "audit.pub.pem",
        ],
    );
    assert_eq!(code, 0, "verify: {out}\n{err}");
    assert!(out.contains(" ok") && out.contains(&session), "{out}");
    assert!(out.contains("pinned (audit.pub.pem)"), "{out}");
    for want in ["alice", "box", "ops", "INC-90", "ended "] {
        assert!(out.contains(want), "summary lacks {want}: {out}");
    }

    let (code, out, err) = verify_in(
        dir,
        &[
            "--json",
            "evidence",
            "verify",
            "evidence.tar",
            "--key",
            "audit.pub.pem",
        ],
    );
    assert_eq!(code, 0, "verify --json: {out}\n{err}");
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["session"], session.as_str(), "{v}");
    assert_eq!(v["user"], "alice", "{v}");
    assert_eq!(v["target"], "box", "{v}");
    assert_eq!(v["task"], "ops", "{v}");
    assert_eq!(v["ticket"], "INC-90", "{v}");
    assert_eq!(v["key_pinned"], true, "{v}");
    assert_eq!(v["recording_in_audit"], true, "{v}");
    assert!(
        v["ended_at"].is_string() && v["started_at"].is_string(),
        "{v}"
    );
    let events: Vec<&str> = v["audit_events"]
        .as_array()
        .expect("audit_events")
        .iter()
        .filter_map(|e| e["event"].as_str())
        .collect();
    for e in [
        "request.created",
        "request.approved",
        "grant.issued",
        "grant.token_fetched",
        "session.started",
        "session.ended",
    ] {
        assert!(events.contains(&e), "{e} not bundled: {events:?}");
    }
    // Exactly the log's records about this request, grant or session (the other session on the
    // same grant included), byte for byte, in seq order.
    let bundled = unpack(&fs::read(&bundle).unwrap())
        .into_iter()
        .find(|(p, _)| p == "audit.jsonl")
        .expect("audit.jsonl")
        .1;
    let bundled = String::from_utf8(bundled).expect("UTF-8");
    let last_seq = v["audit_events"]
        .as_array()
        .and_then(|a| a.last())
        .and_then(|e| e["seq"].as_u64())
        .expect("a last seq");
    let log = fs::read_to_string(gw.audit_log()).expect("the audit log");
    let about: Vec<&str> = log
        .lines()
        .filter(|l| {
            let r: Value = serde_json::from_str(l).expect("a JSON record");
            r["seq"].as_u64().is_some_and(|s| s <= last_seq)
                && (r["request"] == req.as_str()
                    || r["grant"] == grant.as_str()
                    || r["session"] == session.as_str())
        })
        .collect();
    assert_eq!(bundled.lines().collect::<Vec<_>>(), about);

    // Without --key: verified with the bundled key, and the output says so with its fingerprint.
    let fingerprint = jitgate::crypto::sha256_hex(&fs::read(&pub_pem).unwrap());
    let (code, out, err) = verify_in(dir, &["evidence", "verify", "evidence.tar"]);
    assert_eq!(code, 0, "verify unpinned: {out}\n{err}");
    assert!(
        out.contains("NOT pinned") && out.contains(&fingerprint),
        "{out}"
    );

    // One flipped byte in each kind of member.
    let pristine = fs::read(dir.join("evidence.tar")).unwrap();
    for (member, named) in [
        (cast.as_str(), cast.as_str()),
        ("recording/session.json", "recording/session.json"),
        ("audit.jsonl", "audit.jsonl"),
        ("manifest.json", "manifest.json"),
        ("manifest.sig", "manifest.sig"),
        ("audit_public_key.pem", "audit_public_key.pem"),
    ] {
        let (_, at, size) = layout(&pristine)
            .into_iter()
            .find(|(p, _, _)| p == member)
            .unwrap_or_else(|| panic!("{member} not in the bundle"));
        let mut bad = pristine.clone();
        bad[at + size / 2] ^= 0x01;
        assert_rejected(
            dir,
            "tampered.tar",
            &bad,
            &format!("a flipped byte in {member}"),
            named,
        );
    }

    // A member removed; a member added.
    let mut fewer = unpack(&pristine);
    fewer.retain(|(p, _)| p != "recording/session.json");
    assert_rejected(
        dir,
        "removed.tar",
        &pack(&fewer),
        "a removed member",
        "recording/session.json",
    );
    let mut more = unpack(&pristine);
    more.push(("recording/9.cast".into(), b"{\"version\":2}\n".to_vec()));
    assert_rejected(
        dir,
        "added.tar",
        &pack(&more),
        "an added member",
        "recording/9.cast",
    );

    // Another key.
    let (other, _) = jitgate::crypto::SigningKey::generate();
    fs::write(dir.join("other.pub.pem"), other.public().to_pem()).unwrap();
    let (code, out, err) = verify_in(
        dir,
        &[
            "evidence",
            "verify",
            "evidence.tar",
            "--key",
            "other.pub.pem",
        ],
    );
    assert_eq!(code, 1, "another key was accepted: {out}\n{err}");
    assert!(
        err.contains("manifest.sig") && err.contains("--key"),
        "{err}"
    );

    // With the gateway stopped, export still works and verifies.
    assert!(gw.stop(), "the gateway did not stop on SIGTERM");
    let again = work.path().join("again.tar");
    let (code, out, err) = gw.run(
        &[
            "evidence",
            "export",
            &session,
            "-o",
            &again.display().to_string(),
        ],
        &[],
    );
    assert_eq!(code, 0, "export with the gateway stopped: {out}\n{err}");
    assert!(out.contains(&session), "{out}");
    fs::copy(&again, dir.join("again.tar")).unwrap();
    let (code, out, err) = verify_in(
        dir,
        &["evidence", "verify", "again.tar", "--key", "audit.pub.pem"],
    );
    assert_eq!(code, 0, "verify the second export: {out}\n{err}");
}
