//! What a security reviewer gets after a session: an asciicast v2 file that stock asciinema
//! plays, holding what was typed and shown; `session.json` whose digests match the files (and the
//! audit record); and the target's own log naming the session through the certificate key id.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

use super::{Env, Term, ended_session, grant, session_ended_record, sha256_file};
use crate::harness::output;

/// The `i` or `o` event data of an asciicast v2 file, concatenated; checks the header.
fn cast_streams(text: &str) -> (Value, String, String, Vec<String>) {
    let mut lines = text.lines();
    let header: Value = serde_json::from_str(lines.next().expect("a header line")).expect("JSON");
    let (mut input, mut out, mut resizes) = (String::new(), String::new(), Vec::new());
    let mut last = 0.0;
    for line in lines {
        let ev: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        let t = ev[0].as_f64().unwrap_or_else(|| panic!("no time: {line}"));
        assert!(t >= last, "events out of order: {line}");
        last = t;
        let data = ev[2].as_str().unwrap_or_else(|| panic!("no data: {line}"));
        match ev[1].as_str() {
            Some("i") => input.push_str(data),
            Some("o") => out.push_str(data),
            Some("r") => resizes.push(data.to_string()),
            Some("m") => {}
            other => panic!("unknown event code {other:?}: {line}"),
        }
    }
    (header, input, out, resizes)
}

#[tokio::test]
async fn recording_plays_in_asciinema_and_matches_its_digests() {
    let env = Env::start();
    let g = grant(&env.gw, "alice", "ops", "INC-1", "15m");
    let mut t = Term::ssh_login(&env.gw, "alice", &g.token);
    t.expect("$ ", Duration::from_secs(10));
    t.resize(30, 100);
    t.send("echo \"rec-$((6*7))\"\r");
    t.expect("rec-42", Duration::from_secs(5));
    t.send("exit\r");
    assert_eq!(t.wait(Duration::from_secs(5)).code(), Some(0));

    let s = ended_session(&env.gw, &g.grant).await;
    let sid = s["id"].as_str().expect("session id").to_string();
    assert_eq!(s["end_cause"], "client", "{s}");

    // recordings/YYYY/MM/DD/<session id>/
    let dir = PathBuf::from(s["dir"].as_str().expect("dir"));
    let started =
        time::OffsetDateTime::from_unix_timestamp(s["started_at"].as_i64().expect("started_at"))
            .expect("a time");
    let day = format!(
        "{:04}/{:02}/{:02}",
        started.year(),
        started.month() as u8,
        started.day()
    );
    let want = env.gw.path("recordings").join(&day).join(&sid);
    assert_eq!(
        dir.canonicalize().expect("the recording folder exists"),
        want.canonicalize().expect("recordings/YYYY/MM/DD/<id>"),
    );

    // The cast: v2, what was typed and what was shown, the resize.
    let cast = dir.join("1.cast");
    let text = std::fs::read_to_string(&cast).expect("1.cast");
    let (header, input, shown, resizes) = cast_streams(&text);
    assert_eq!(header["version"], 2, "{header}");
    assert_eq!(
        (header["width"].as_u64(), header["height"].as_u64()),
        (Some(80), Some(24))
    );
    assert!(
        input.contains("echo \"rec-$((6*7))\""),
        "typed input missing: {input:?}"
    );
    assert!(shown.contains("rec-42"), "output missing: {shown:?}");
    assert!(
        resizes.iter().any(|r| r == "100x30"),
        "resize missing: {resizes:?}"
    );

    // Debian's asciinema plays it (`cat` needs a terminal: give it one with script).
    let mut cmd = std::process::Command::new("script");
    cmd.arg("-qec")
        .arg(format!("asciinema cat {}", cast.display()))
        .arg("/dev/null");
    let (code, out, err) = output(cmd);
    assert_eq!(code, 0, "asciinema cat: {out} {err}");
    assert!(
        out.contains("rec-42"),
        "asciinema cat output: {out:?} {err}"
    );

    // session.json lists the cast with its digest; the audit record carries the same.
    let manifest: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("session.json")).expect("session.json"),
    )
    .expect("session.json is JSON");
    assert_eq!(manifest["session"], sid.as_str(), "{manifest}");
    assert_eq!(manifest["user"], "alice");
    assert_eq!(manifest["grant"], g.grant.as_str());
    assert_eq!(manifest["ticket"], "INC-1");
    assert_eq!(manifest["task"], "ops");
    assert_eq!(manifest["target"], "box");
    assert_eq!(manifest["approvers"], serde_json::json!(["bob"]));
    assert!(!manifest["ended_at"].is_null(), "{manifest}");
    assert!(!manifest["end_reason"].is_null(), "{manifest}");
    let files = manifest["files"].as_array().expect("files");
    assert_eq!(files.len(), 1, "{manifest}");
    let digest = sha256_file(&cast);
    let len = std::fs::metadata(&cast).expect("cast size").len();
    assert_eq!(files[0]["name"], "1.cast");
    assert_eq!(files[0]["sha256"], digest.as_str(), "session.json digest");
    assert_eq!(files[0]["bytes"], len);
    let ended = session_ended_record(&env.gw, &sid).await;
    let rec = ended["recording"]
        .as_array()
        .expect("recording in session.ended");
    assert_eq!(rec.len(), 1, "{ended}");
    assert_eq!(rec[0]["sha256"], digest.as_str(), "audited digest");

    // The target's log attributes the login to the session, grant, user and ticket.
    let key_id = format!(
        "ID jitgate session={sid} grant={} user=alice ticket=INC-1",
        g.grant
    );
    let log = env.sshd.log();
    assert!(log.contains(&key_id), "sshd log lacks {key_id:?}:\n{log}");

    // And `jitgate replay` plays it back.
    let (code, out, err) = env.gw.run(&["replay", &sid, "--speed", "100"], &[]);
    assert_eq!(code, 0, "replay: {err}");
    assert!(out.contains("rec-42"), "replay output: {out:?}");
}
