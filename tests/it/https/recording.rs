//! What a reviewer gets after an HTTPS session: `http.jsonl` as it happened, in
//! `recordings/YYYY/MM/DD/<session>/`, and `session.json` and the audit record whose digests
//! match it.

use std::fs;

use serde_json::Value;

use super::{Env, done, ended_session, http_log, session_dir, session_ended_record};
use crate::nginx::{HOME, UNLOCKED, sha256_file};

#[tokio::test]
async fn http_jsonl_and_session_json_match_what_happened() {
    let env = Env::start();
    let g = env.grant("alice", "console-admin", "INC-9");
    env.bearer(&g.token, "/index.html?token=abc123&page=2", &[])
        .expect(200);
    let body = "why=locked+out";
    env.bearer(
        &g.token,
        "/users/dave/unlock",
        &["--http1.1", "-X", "POST", "--data-binary", body],
    )
    .expect(200);
    env.bearer(&g.token, "/users/dave", &["--http1.1", "-X", "DELETE"])
        .expect(403);
    done(&env, "alice", &g);

    let s = ended_session(&env.gw, &g.grant).await;
    let sid = s["id"].as_str().expect("session id").to_string();
    assert_eq!(s["end_cause"], "completed", "{s}");
    assert_eq!(s["protocol"], "https", "{s}");

    // recordings/YYYY/MM/DD/<session id>/
    let dir = session_dir(&s);
    let started =
        time::OffsetDateTime::from_unix_timestamp(s["started_at"].as_i64().expect("started_at"))
            .expect("a time");
    let day = format!(
        "{:04}/{:02}/{:02}",
        started.year(),
        started.month() as u8,
        started.day()
    );
    assert_eq!(
        dir.canonicalize().expect("the recording folder"),
        env.gw
            .path("recordings")
            .join(day)
            .join(&sid)
            .canonicalize()
            .expect("recordings/YYYY/MM/DD/<id>")
    );

    // http.jsonl: one line per exchange, in order.
    let log = http_log(&s);
    assert_eq!(log.len(), 3, "{log:?}");
    let text = fs::read_to_string(dir.join("http.jsonl")).expect("http.jsonl");
    assert!(
        !text.contains("abc123"),
        "a secret query value was recorded:\n{text}"
    );
    let (get, post, delete) = (&log[0], &log[1], &log[2]);
    assert_eq!(get["method"], "GET");
    assert_eq!(get["path"], "/index.html");
    assert_eq!(get["query"], "token=***&page=2");
    assert_eq!(get["status"], 200);
    assert_eq!(get["bytes_out"], HOME.len());
    assert_eq!(get["bytes_in"], 0);
    assert!(
        get["upgrade"].is_null() && get["refused"].is_null(),
        "{get}"
    );
    assert_eq!(get["aborted"], false);
    for e in &log {
        let ts = e["ts"].as_str().unwrap_or_default();
        assert!(
            time::OffsetDateTime::parse(ts, &time::format_description::well_known::Rfc3339).is_ok(),
            "ts {ts:?} is not RFC 3339: {e}"
        );
        assert!(e["duration_ms"].is_u64(), "{e}");
    }
    assert_eq!(post["method"], "POST");
    assert_eq!(post["path"], "/users/dave/unlock");
    assert!(post["query"].is_null(), "{post}");
    assert_eq!(post["status"], 200);
    assert_eq!(post["bytes_in"], body.len());
    assert_eq!(post["bytes_out"], UNLOCKED.len());
    assert_eq!(delete["method"], "DELETE");
    assert_eq!(delete["status"], 403);
    assert_eq!(
        delete["refused"],
        "task console-admin does not allow DELETE /users/dave"
    );

    // session.json: who, what, when, and the digest of http.jsonl as it is on disk.
    let m: Value =
        serde_json::from_str(&fs::read_to_string(dir.join("session.json")).expect("session.json"))
            .expect("session.json is JSON");
    assert_eq!(m["session"], sid.as_str(), "{m}");
    assert_eq!(m["protocol"], "https", "{m}");
    assert_eq!(m["user"], "alice");
    assert_eq!(m["grant"], g.grant.as_str());
    assert_eq!(m["ticket"], "INC-9");
    assert_eq!(m["task"], "console-admin");
    assert_eq!(m["target"], "console");
    assert_eq!(m["approvers"], serde_json::json!(["bob"]));
    assert!(!m["ended_at"].is_null(), "{m}");
    assert!(!m["end_reason"].is_null(), "{m}");
    let files = m["files"].as_array().expect("files");
    assert_eq!(files.len(), 1, "{m}");
    let path = dir.join("http.jsonl");
    let digest = sha256_file(&path);
    assert_eq!(files[0]["name"], "http.jsonl");
    assert_eq!(files[0]["sha256"], digest.as_str(), "session.json digest");
    assert_eq!(files[0]["bytes"], fs::metadata(&path).expect("size").len());

    // The audit record carries the same digest and the bytes moved each way.
    let r = session_ended_record(&env.gw, &sid).await;
    assert_eq!(r["cause"], "completed", "{r}");
    let rec = r["recording"].as_array().expect("recording");
    assert_eq!(rec.len(), 1, "{r}");
    assert_eq!(rec[0]["sha256"], digest.as_str(), "audited digest");
    assert_eq!(r["bytes_in"], body.len(), "{r}");
    assert_eq!(r["bytes_out"], HOME.len() + UNLOCKED.len(), "{r}");
}
