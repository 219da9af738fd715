//! Bad input gets a 4xx with JSON `{error, message}`, changes nothing, and is audited where it
//! is a security event; the server keeps serving.

use serde_json::{Value, json};

use crate::flows::{audited, msg, open_ticket, pending, request_state};
use crate::harness::{Gateway, Opts, error_message};

/// Nothing about requests changed: no request stored, none audited.
async fn assert_no_requests(gw: &Gateway) {
    let a = gw.api("admin").get("/api/v1/requests").await.unwrap();
    assert_eq!(a.status, 200);
    assert_eq!(a.body, json!([]), "bad input created a request");
    assert!(gw.audit("request.created").await.is_empty());
    assert!(gw.audit("request.denied").await.is_empty());
}

fn new_request(reason: &str) -> Value {
    json!({"task": "reset-credential", "target": "dc-01", "ticket": "INC-40", "ttl": "10m", "reason": reason})
}

#[tokio::test]
async fn malformed_unknown_and_oversized_bodies_are_refused_without_effect() {
    let gw = Gateway::start(Opts::default());
    open_ticket(&gw, "INC-40", "alice");
    let post = |body: &[u8]| gw.raw_json("POST", "/api/v1/requests", "alice", body);

    // Over the 64 KiB body limit (the 1 MB case has its own test below).
    let big = "x".repeat(80 * 1024);
    let a = gw
        .api("alice")
        .post("/api/v1/requests", new_request(&big))
        .await;
    let a = a.expect("an oversized body gets an answer");
    assert_eq!(a.status, 413, "{:?}", a.body);
    assert!(
        error_message(a.status, &a.body).contains("too large"),
        "{:?}",
        a.body
    );

    let (s, v) = post(br#"{"task": "reset-credential", "target":"#);
    error_message(s, &v);
    assert_eq!(s, 400, "{v}");

    let mut extra = new_request("fine");
    extra["please"] = json!("now");
    let (s, v) = post(&serde_json::to_vec(&extra).unwrap());
    let m = error_message(s, &v);
    assert!(m.contains("please"), "the unknown field is not named: {m}");

    let (s, v) = post(b"[1, 2, 3]");
    error_message(s, &v);
    let (s, v) = post(b"");
    error_message(s, &v);
    let (s, v) = gw.raw(
        "POST",
        "/api/v1/requests",
        Some(&crate::harness::api_key("alice")),
        &[("Content-Type", "text/plain")],
        Some(&serde_json::to_vec(&new_request("fine")).unwrap()),
    );
    error_message(s, &v);

    let long = "y".repeat(1001);
    let (s, v) = post(&serde_json::to_vec(&new_request(&long)).unwrap());
    let m = error_message(s, &v);
    assert!(m.contains("1000"), "{m}");

    let (s, v) = post(&serde_json::to_vec(&new_request("\u{1b}[2Jgotcha")).unwrap());
    let m = error_message(s, &v);
    assert!(m.contains("control characters"), "{m}");

    let mut bad_ttl = new_request("fine");
    bad_ttl["ttl"] = json!("forever");
    let (s, v) = post(&serde_json::to_vec(&bad_ttl).unwrap());
    let m = error_message(s, &v);
    assert!(m.contains("ttl"), "{m}");

    let mut bad_name = new_request("fine");
    bad_name["target"] = json!("../../etc/passwd");
    let (s, v) = post(&serde_json::to_vec(&bad_name).unwrap());
    error_message(s, &v);

    assert_no_requests(&gw).await;

    // Tickets: a title over 200 characters, an unknown assignee.
    let body = json!({"id": "INC-41", "assignee": "alice", "title": "t".repeat(201)});
    let (s, v) = gw.raw_json(
        "POST",
        "/api/v1/tickets",
        "admin",
        &serde_json::to_vec(&body).unwrap(),
    );
    error_message(s, &v);
    let body = json!({"id": "INC-41", "assignee": "mallory"});
    let (s, v) = gw.raw_json(
        "POST",
        "/api/v1/tickets",
        "admin",
        &serde_json::to_vec(&body).unwrap(),
    );
    assert!(error_message(s, &v).contains("mallory"), "{v}");
    let a = gw.api("admin").get("/api/v1/tickets/INC-41").await.unwrap();
    assert_eq!(a.status, 404, "a refused ticket was stored: {:?}", a.body);
    assert_eq!(gw.audit("ticket.opened").await.len(), 1);

    // Decisions with broken bodies leave the request pending.
    let id = pending(&gw, "alice", "reset-credential", "dc-01", "INC-40");
    let (s, v) = gw.raw_json(
        "POST",
        &format!("/api/v1/requests/{id}/approve"),
        "bob",
        b"{not json",
    );
    error_message(s, &v);
    let (s, v) = gw.raw_json(
        "POST",
        &format!("/api/v1/requests/{id}/approve"),
        "bob",
        br#"{"comment": "ok", "approvals": 99}"#,
    );
    error_message(s, &v);
    let (s, v) = gw.raw_json("POST", &format!("/api/v1/requests/{id}/deny"), "bob", b"{}");
    error_message(s, &v);
    let (s, v) = gw.raw_json(
        "POST",
        &format!("/api/v1/requests/{id}/deny"),
        "bob",
        br#"{"reason": "   "}"#,
    );
    error_message(s, &v);
    let (s, v) = gw.raw_json(
        "POST",
        "/api/v1/admission",
        "admin",
        br#"{"token": "jgt_x", "user": "alice", "protocol": "telnet"}"#,
    );
    error_message(s, &v);
    let r = request_state(&gw, &id).await;
    assert_eq!(r["state"], "pending", "{r}");
    assert_eq!(r["approvals"], json!([]), "{r}");

    // Still serving, and nothing panicked.
    let h = gw.client(None).get("/api/v1/health").await.unwrap();
    assert_eq!(h.status, 200);
    assert!(!gw.logs().contains("panicked"), "{}", gw.logs());
}

/// A 1 MB string in a JSON body must come back as 413 with the JSON message, every time, both
/// to the API client the CLI uses and to plain `curl`: the answer must not be lost to a reset
/// connection because the gateway stopped reading the body.
#[tokio::test]
async fn one_megabyte_bodies_get_a_413_json_answer_every_time() {
    let gw = Gateway::start(Opts::default());
    open_ticket(&gw, "INC-40", "alice");
    let huge = "x".repeat(1024 * 1024);
    let request_body = new_request(&huge);
    let ticket_body = json!({"id": "INC-41", "assignee": "alice", "title": huge});
    let mut lost = Vec::new();
    for i in 0..5 {
        for (user, path, body) in [
            ("alice", "/api/v1/requests", &request_body),
            ("admin", "/api/v1/tickets", &ticket_body),
        ] {
            match gw.api(user).post(path, body.clone()).await {
                Ok(a) if a.status == 413 && a.body["error"] == "too_large" => {}
                Ok(a) => lost.push(format!("client #{i} {path}: {} {:?}", a.status, a.body)),
                Err(e) => lost.push(format!("client #{i} {path}: {e}")),
            }
            let bytes = serde_json::to_vec(body).unwrap();
            match gw.try_raw(
                "POST",
                path,
                Some(&crate::harness::api_key(user)),
                &[("Content-Type", "application/json")],
                Some(&bytes),
            ) {
                Ok((413, v)) if v["error"] == "too_large" => {}
                Ok((s, v)) => lost.push(format!("curl #{i} {path}: {s} {v}")),
                Err(e) => lost.push(format!("curl #{i} {path}: {e}")),
            }
        }
    }
    assert!(
        lost.is_empty(),
        "{} of 20 one-megabyte posts did not get the 413 JSON answer:\n{}",
        lost.len(),
        lost.join("\n")
    );
    assert_no_requests(&gw).await;
    let a = gw.api("admin").get("/api/v1/tickets/INC-41").await.unwrap();
    assert_eq!(a.status, 404, "{:?}", a.body);
    let h = gw.client(None).get("/api/v1/health").await.unwrap();
    assert_eq!(h.status, 200);
}

#[tokio::test]
async fn missing_unknown_and_expired_api_keys_are_refused_and_audited() {
    let gw = Gateway::start(Opts::default());
    open_ticket(&gw, "INC-42", "eve");
    let body = serde_json::to_vec(&json!({
        "task": "reset-credential", "target": "dc-01", "ticket": "INC-42", "ttl": "10m", "reason": "x"
    }))
    .unwrap();
    let unknown = "jgk_it_nobody_k3y_0123456789abcdefghijklmnop";
    let expired = crate::harness::api_key("eve");
    let cases = [
        (None, "missing API key"),
        (Some(unknown), "unknown API key"),
        (Some(expired.as_str()), "expired"),
        (Some("not-a-jitgate-key"), "jgk_"),
    ];
    for (key, expect) in cases {
        let h = [("Content-Type", "application/json")];
        let (s, v) = gw.raw("POST", "/api/v1/requests", key, &h, Some(&body));
        assert_eq!(s, 401, "{expect}: {v}");
        assert_eq!(v["error"], "unauthorized", "{v}");
        assert!(error_message(s, &v).contains(expect), "{expect}: {v}");
    }
    let (s, v) = gw.raw(
        "GET",
        "/api/v1/whoami",
        None,
        &[("Authorization", "Basic YWxpY2U6cGFzcw==")],
        None,
    );
    assert_eq!(s, 401, "{v}");

    // The CLI says the same.
    let (code, _, err) = gw.cli("eve", &["requests"]);
    assert_eq!(code, 1);
    assert!(err.contains("expired"), "{err}");
    let (code, _, err) = gw.cli("", &["requests"]);
    assert_eq!(code, 1);
    assert!(err.contains("missing API key"), "{err}");

    assert_no_requests(&gw).await;
    let denied = gw.audit("api.auth_denied").await;
    assert!(
        denied.len() >= 7,
        "failed authentications not audited: {denied:?}"
    );
    for expect in ["missing API key", "unknown API key", "expired"] {
        assert!(
            denied
                .iter()
                .any(|r| r["reason"].as_str().unwrap_or("").contains(expect)),
            "no api.auth_denied with {expect:?}: {denied:?}"
        );
    }
    assert!(
        denied
            .iter()
            .all(|r| r["path"].is_string() && r["source"] == "127.0.0.1")
    );
    let log = std::fs::read_to_string(gw.audit_log()).unwrap();
    assert!(
        !log.contains(unknown) && !log.contains(&expired),
        "a presented key was audited"
    );
    assert!(
        !gw.logs().contains(unknown) && !gw.logs().contains(&expired),
        "a key was logged"
    );

    // A valid key still works.
    let a = gw.api("alice").get("/api/v1/whoami").await.unwrap();
    assert_eq!(a.status, 200);
    assert_eq!(a.body["name"], "alice");
}

#[tokio::test]
async fn wrong_roles_and_unknown_ids_get_json_errors() {
    let gw = Gateway::start(Opts::default());
    open_ticket(&gw, "INC-43", "alice");
    let id = pending(&gw, "alice", "reset-credential", "dc-01", "INC-43");
    let alice = gw.api("alice");

    let a = alice.get("/api/v1/audit").await.unwrap();
    assert_eq!(a.status, 403, "{:?}", a.body);
    assert!(
        error_message(a.status, &a.body).contains("reviewer"),
        "{:?}",
        a.body
    );
    let a = alice
        .post(
            "/api/v1/tickets",
            json!({"id": "INC-44", "assignee": "alice"}),
        )
        .await
        .unwrap();
    assert_eq!(a.status, 403, "{:?}", a.body);
    error_message(a.status, &a.body);
    let a = alice
        .post("/api/v1/tickets/INC-43/close", json!({}))
        .await
        .unwrap();
    assert_eq!(a.status, 403, "a technician closed a ticket: {:?}", a.body);
    let a = alice
        .post(
            "/api/v1/admission",
            json!({"token": "jgt_x", "user": "alice", "protocol": "ssh"}),
        )
        .await
        .unwrap();
    assert_eq!(a.status, 403, "{:?}", a.body);

    let a = gw
        .api("rita")
        .post(&format!("/api/v1/requests/{id}/approve"), json!({}))
        .await
        .unwrap();
    assert_eq!(a.status, 403, "a reviewer approved: {:?}", a.body);
    assert!(msg(&a.body).contains("approver role"), "{:?}", a.body);
    assert_eq!(
        audited(&gw, "approval.refused", "request", &id).await.len(),
        1
    );

    // Another technician cannot see or use alice's request.
    let dave = gw.api("dave");
    let a = dave.get(&format!("/api/v1/requests/{id}")).await.unwrap();
    assert_eq!(a.status, 404, "{:?}", a.body);
    let a = dave.get("/api/v1/requests").await.unwrap();
    assert_eq!(a.body, json!([]), "dave sees alice's requests");

    for (method, path) in [
        ("GET", "/api/v1/requests/req_aaaaaaaaaaaaaaaa".to_string()),
        ("GET", "/api/v1/requests/nonsense".to_string()),
        (
            "POST",
            "/api/v1/requests/req_aaaaaaaaaaaaaaaa/approve".to_string(),
        ),
        (
            "POST",
            "/api/v1/requests/req_aaaaaaaaaaaaaaaa/token".to_string(),
        ),
        ("GET", "/api/v1/grants/gr_aaaaaaaaaaaaaaaa".to_string()),
        ("GET", "/api/v1/tickets/NOPE-1".to_string()),
        ("POST", "/api/v1/tickets/NOPE-1/close".to_string()),
    ] {
        let body = (method == "POST").then(|| json!({}));
        let a = gw.api("bob").call(method, &path, body).await.unwrap();
        assert_eq!(a.status, 404, "{method} {path}: {:?}", a.body);
        error_message(a.status, &a.body);
    }
    let (code, _, err) = gw.cli("bob", &["approve", "req_aaaaaaaaaaaaaaaa"]);
    assert_eq!(code, 1);
    assert!(err.contains("does not exist"), "{err}");

    let r = request_state(&gw, &id).await;
    assert_eq!(r["state"], "pending", "{r}");
    assert_eq!(r["approvals"], json!([]), "{r}");
}
