//! The control plane end to end: tickets, requests, approvals, grant tokens, admission, ticket
//! changes revoking grants, state across restarts, the documented routes and metrics.

use serde_json::{Value, json};

use crate::flows::{
    approve, audited, grant_state, granted, msg, open_ticket, pending, request_state, token,
};
use crate::harness::{Gateway, Opts, Policy};

#[tokio::test]
async fn happy_path_token_is_handed_out_once_and_admits() {
    let gw = Gateway::start(Opts::default());
    open_ticket(&gw, "INC-1", "alice");

    let id = pending(&gw, "alice", "reset-credential", "dc-01", "INC-1");
    let (code, list, _) = gw.cli_json("alice", &["requests", "--pending"]);
    assert_eq!(code, 0);
    assert!(
        list.as_array()
            .unwrap()
            .iter()
            .any(|r| r["id"] == id.as_str()),
        "alice's pending list lacks {id}: {list}"
    );

    let (code, v, err) = approve(&gw, "bob", &id);
    assert_eq!(code, 0, "{v} {err}");
    assert_eq!(v["state"], "approved", "{v}");
    let grant = v["grant"].as_str().expect("grant id").to_string();
    assert!(grant.starts_with("gr_"), "{grant}");

    let (tok, t) = token(&gw, "alice", &id);
    assert_eq!(t["grant"], grant.as_str(), "{t}");
    assert_eq!(t["target"], "dc-01", "{t}");
    assert_eq!(t["protocol"], "ssh", "{t}");
    // jgt_ + 256 bits (43 base64url characters) + checksum.
    assert!(
        tok.len() >= 4 + 43,
        "token too short: {} characters",
        tok.len()
    );

    let a = gw.admit(&tok, "alice", "ssh").await;
    assert_eq!(a.status, 200, "admission refused: {:?}", a.body);
    assert_eq!(a.body["admitted"], true);
    assert_eq!(a.body["grant"], grant.as_str());
    assert_eq!(a.body["user"], "alice");
    assert_eq!(a.body["target"], "dc-01");
    assert_eq!(a.body["task"], "reset-credential");
    assert_eq!(a.body["principal"], "helpdesk-reset");
    assert_eq!(a.body["ticket"], "INC-1");

    // The wrong user or the wrong gateway does not get in with the same token.
    let a = gw.admit(&tok, "dave", "ssh").await;
    assert_eq!(
        a.status, 403,
        "dave admitted with alice's token: {:?}",
        a.body
    );
    let a = gw.admit(&tok, "alice", "https").await;
    assert_eq!(a.status, 403, "ssh grant admitted over https: {:?}", a.body);

    // Second fetch: refused, saying why (human output and JSON).
    let (code, out, err) = gw.cli("alice", &["token", &id]);
    assert_eq!(code, 1, "second token fetch succeeded: {out}");
    assert!(err.contains("already fetched"), "stderr: {err}");
    assert!(
        !out.contains("jgt_") && !err.contains("jgt_"),
        "{out} {err}"
    );
    let (code, v, _) = gw.cli_json("alice", &["token", &id]);
    assert_eq!(code, 1);
    assert_eq!(v["error"], "conflict", "{v}");

    // The audit trail tells the story, as the reviewer sees it.
    for (event, field, value) in [
        ("ticket.opened", "ticket", "INC-1"),
        ("request.created", "request", id.as_str()),
        ("request.approved", "request", id.as_str()),
        ("grant.issued", "grant", grant.as_str()),
        ("grant.token_fetched", "grant", grant.as_str()),
    ] {
        let recs = audited(&gw, event, field, value).await;
        assert_eq!(
            recs.len(),
            1,
            "expected one {event} for {value}, got {recs:?}"
        );
    }
    let issued = &audited(&gw, "grant.issued", "grant", &grant).await[0];
    assert_eq!(issued["approvers"], json!(["bob"]), "{issued}");
    assert_eq!(issued["actor"], "system", "{issued}");
    let created = &audited(&gw, "request.created", "request", &id).await[0];
    assert_eq!(created["actor"], "alice", "{created}");

    // The token never lands in the audit log, the gateway's logs or the database.
    let log = std::fs::read_to_string(gw.audit_log()).expect("audit log");
    assert!(!log.contains(&tok), "the token is in data/audit.jsonl");
    assert!(
        !gw.logs().contains(&tok),
        "the token is in the gateway's stderr"
    );
    for db in ["data/jitgate.db", "data/jitgate.db-wal"] {
        if let Ok(bytes) = std::fs::read(gw.path(db)) {
            let hay = String::from_utf8_lossy(&bytes);
            assert!(!hay.contains(&tok), "the token is stored in {db}");
        }
    }
    // Neither do API keys.
    let key = crate::harness::api_key("alice");
    assert!(
        !log.contains(&key) && !gw.logs().contains(&key),
        "an API key was logged"
    );
}

#[tokio::test]
async fn request_wait_prints_the_token_once_approved() {
    let gw = Gateway::start(Opts::default());
    open_ticket(&gw, "INC-2", "alice");
    let child = gw.cli_spawn(
        "alice",
        &[
            "--json",
            "request",
            "--task",
            "reset-credential",
            "--target",
            "dc-01",
            "--ticket",
            "INC-2",
            "--ttl",
            "10m",
            "--reason",
            "unlock the svc account",
            "--wait",
            "--wait-timeout",
            "30s",
        ],
    );
    // Approve as soon as the request shows up.
    let mut id = None;
    for _ in 0..100 {
        let (_, list, _) = gw.cli_json("bob", &["requests", "--pending"]);
        if let Some(r) = list.as_array().and_then(|l| l.first()) {
            id = r["id"].as_str().map(str::to_string);
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let id = id.expect("the waiting request never appeared");
    let (code, v, err) = approve(&gw, "bob", &id);
    assert_eq!(code, 0, "{v} {err}");
    let out = child.wait_with_output().expect("request --wait");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "request --wait failed: {stdout}"
    );
    let v: Value = serde_json::from_str(&stdout).expect("request --wait --json prints JSON");
    assert_eq!(v["id"], id.as_str(), "{v}");
    assert_eq!(v["state"], "approved", "{v}");
    assert!(
        v["token"].as_str().is_some_and(|t| t.starts_with("jgt_")),
        "{v}"
    );
    // --wait fetched it, so a later fetch is refused.
    let (code, _, err) = gw.cli("alice", &["token", &id]);
    assert_eq!(code, 1);
    assert!(err.contains("already fetched"), "{err}");
}

#[tokio::test]
async fn high_impact_needs_two_distinct_approvers() {
    let gw = Gateway::start(Opts::default());
    open_ticket(&gw, "INC-3", "alice");
    let id = pending(&gw, "alice", "endpoint-remediation", "dc-01", "INC-3");

    let (code, v, err) = approve(&gw, "bob", &id);
    assert_eq!(code, 0, "{v} {err}");
    assert_eq!(
        v["state"], "pending",
        "one approval issued a high-impact grant: {v}"
    );
    assert_eq!(v["required_approvals"], 2, "{v}");
    assert_eq!(v["approvals"].as_array().map(Vec::len), Some(1), "{v}");
    assert!(v["grant"].is_null(), "{v}");

    let (code, v, err) = approve(&gw, "bob", &id);
    assert_eq!(code, 1, "bob approved twice: {v}");
    assert!(err.contains("distinct approvers"), "{err}");
    assert_eq!(request_state(&gw, &id).await["state"], "pending");

    let (code, v, err) = approve(&gw, "carol", &id);
    assert_eq!(code, 0, "{v} {err}");
    assert_eq!(v["state"], "approved", "{v}");
    let grant = v["grant"].as_str().expect("grant").to_string();
    let issued = audited(&gw, "grant.issued", "grant", &grant).await;
    assert_eq!(issued.len(), 1);
    assert_eq!(
        issued[0]["approvers"],
        json!(["bob", "carol"]),
        "{}",
        issued[0]
    );
    let approvals = audited(&gw, "request.approved", "request", &id).await;
    assert_eq!(approvals.len(), 2, "{approvals:?}");
}

#[tokio::test]
async fn self_approval_refused_even_when_policy_permits_everything() {
    let gw = Gateway::start(Opts::default().policy(Policy::PermitAll));
    open_ticket(&gw, "INC-4", "sam");
    let id = pending(&gw, "sam", "reset-credential", "dc-01", "INC-4");

    let a = gw
        .api("sam")
        .post(&format!("/api/v1/requests/{id}/approve"), json!({}))
        .await
        .unwrap();
    assert_eq!(a.status, 403, "self-approval: {:?}", a.body);
    assert!(
        msg(&a.body).contains("never approves their own request"),
        "{:?}",
        a.body
    );
    let (code, _, err) = approve(&gw, "sam", &id);
    assert_eq!(code, 1);
    assert!(err.contains("never approves"), "{err}");

    let r = request_state(&gw, &id).await;
    assert_eq!(r["state"], "pending", "{r}");
    assert!(r["grant"].is_null(), "{r}");
    let refused = audited(&gw, "approval.refused", "request", &id).await;
    assert_eq!(refused.len(), 2, "{refused:?}");
    assert_eq!(refused[0]["actor"], "sam", "{}", refused[0]);
    assert!(
        refused[0]["reason"]
            .as_str()
            .unwrap_or("")
            .contains("never approves"),
        "{}",
        refused[0]
    );

    // Someone else can still approve it.
    let (code, v, err) = approve(&gw, "bob", &id);
    assert_eq!(code, 0, "{v} {err}");
    assert_eq!(v["state"], "approved", "{v}");
}

#[tokio::test]
async fn closing_the_ticket_revokes_the_grant_and_admission_refuses_it() {
    let gw = Gateway::start(Opts::default());
    let g = granted(&gw, "alice", "INC-5");
    assert_eq!(gw.admit(&g.token, "alice", "ssh").await.status, 200);

    let (code, v, err) = gw.cli_json("admin", &["ticket", "close", "INC-5"]);
    assert_eq!(code, 0, "{v} {err}");
    assert_eq!(v["state"], "closed", "{v}");
    assert_eq!(v["revoked"], 1, "{v}");

    let a = gw.admit(&g.token, "alice", "ssh").await;
    assert_eq!(
        a.status, 403,
        "admitted after the ticket closed: {:?}",
        a.body
    );
    assert_eq!(a.body["admitted"], false, "{:?}", a.body);
    let m = msg(&a.body);
    assert!(m.contains("revoked") && m.contains("INC-5"), "{m}");

    let gr = grant_state(&gw, &g.grant).await;
    assert_eq!(gr["state"], "revoked", "{gr}");
    let revoked = audited(&gw, "grant.revoked", "grant", &g.grant).await;
    assert_eq!(revoked.len(), 1, "{revoked:?}");
    assert_eq!(
        revoked[0]["reason"], "ticket INC-5 closed",
        "{}",
        revoked[0]
    );
    assert_eq!(
        audited(&gw, "ticket.closed", "ticket", "INC-5").await.len(),
        1
    );
    let denied = audited(&gw, "admission.denied", "grant", &g.grant).await;
    assert_eq!(denied.len(), 1, "{denied:?}");
    assert!(
        !std::fs::read_to_string(gw.audit_log())
            .unwrap()
            .contains(&g.token)
    );

    // A new request on the closed ticket is denied.
    let (code, v, _) = crate::flows::request(
        &gw,
        "alice",
        "reset-credential",
        "dc-01",
        "INC-5",
        "10m",
        "again",
    );
    assert_eq!(code, 1, "{v}");
    assert!(msg(&v).contains("INC-5 is closed"), "{v}");
}

#[tokio::test]
async fn reassigning_the_ticket_revokes_grants_and_pending_requests() {
    let gw = Gateway::start(Opts::default());
    let g = granted(&gw, "alice", "INC-6");
    let second = pending(&gw, "alice", "endpoint-remediation", "dc-01", "INC-6");

    let (code, v, err) = gw.cli_json(
        "admin",
        &["ticket", "assign", "INC-6", "--assignee", "dave"],
    );
    assert_eq!(code, 0, "{v} {err}");
    assert_eq!(v["assignee"], "dave", "{v}");
    assert_eq!(v["state"], "open", "{v}");
    assert_eq!(
        v["revoked"], 2,
        "one grant and one pending request end: {v}"
    );

    let a = gw.admit(&g.token, "alice", "ssh").await;
    assert_eq!(a.status, 403, "admitted after reassignment: {:?}", a.body);
    assert!(msg(&a.body).contains("reassigned"), "{:?}", a.body);
    assert_eq!(grant_state(&gw, &g.grant).await["state"], "revoked");
    let revoked = audited(&gw, "grant.revoked", "grant", &g.grant).await;
    assert_eq!(revoked.len(), 1, "{revoked:?}");
    assert_eq!(
        revoked[0]["reason"], "ticket INC-6 reassigned from alice to dave",
        "{}",
        revoked[0]
    );
    assert_eq!(
        audited(&gw, "ticket.reassigned", "ticket", "INC-6")
            .await
            .len(),
        1
    );

    let r = request_state(&gw, &second).await;
    assert_ne!(
        r["state"], "pending",
        "pending request survived reassignment: {r}"
    );
    let (code, _, err) = approve(&gw, "bob", &second);
    assert_eq!(code, 1, "approved a request on a ticket reassigned away");
    assert!(err.contains("only pending requests"), "{err}");
}

#[tokio::test]
async fn done_and_revoke_end_grants() {
    // Without [policy] the built-in rules decide alone.
    let gw = Gateway::start(Opts::default().policy(Policy::None));
    let g1 = granted(&gw, "alice", "INC-7");
    let (code, v, err) = gw.cli_json("alice", &["done", &g1.request]);
    assert_eq!(code, 0, "{v} {err}");
    assert_eq!(v["state"], "completed", "{v}");
    assert_eq!(gw.admit(&g1.token, "alice", "ssh").await.status, 403);
    assert_eq!(
        audited(&gw, "grant.completed", "grant", &g1.grant)
            .await
            .len(),
        1
    );

    let g2 = granted(&gw, "dave", "INC-8");
    let (code, _, err) = gw.cli("dave", &["revoke", &g2.grant, "--reason", "mine"]);
    assert_eq!(code, 1, "a technician revoked a grant");
    assert!(err.contains("approver or admin"), "{err}");
    let (code, v, err) = gw.cli_json("bob", &["revoke", &g2.grant, "--reason", "wrong host"]);
    assert_eq!(code, 0, "{v} {err}");
    assert_eq!(v["state"], "revoked", "{v}");
    let a = gw.admit(&g2.token, "dave", "ssh").await;
    assert_eq!(a.status, 403);
    assert!(msg(&a.body).contains("wrong host"), "{:?}", a.body);
    let rec = audited(&gw, "grant.revoked", "grant", &g2.grant).await;
    assert_eq!(rec.len(), 1);
    assert!(
        rec[0]["reason"].as_str().unwrap().contains("wrong host"),
        "{}",
        rec[0]
    );
}

#[tokio::test]
async fn state_survives_a_restart() {
    let mut gw = Gateway::start(Opts::default());
    let g = granted(&gw, "alice", "INC-9");
    open_ticket(&gw, "INC-10", "dave");
    let waiting = pending(&gw, "dave", "reset-credential", "dc-01", "INC-10");

    gw.restart();

    let (code, list, err) = gw.cli_json("admin", &["requests"]);
    assert_eq!(code, 0, "{err}");
    let list = list.as_array().cloned().unwrap_or_default();
    let find = |id: &str| list.iter().find(|r| r["id"] == id).cloned();
    assert_eq!(
        find(&g.request).expect("approved request lost")["state"],
        "approved"
    );
    assert_eq!(
        find(&waiting).expect("pending request lost")["state"],
        "pending"
    );
    let (code, grants, _) = gw.cli_json("alice", &["grants", "--active"]);
    assert_eq!(code, 0);
    assert!(
        grants
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["id"] == g.grant.as_str()),
        "grant lost across restart: {grants}"
    );
    let (code, t, _) = gw.cli_json("admin", &["ticket", "show", "INC-9"]);
    assert_eq!(code, 0);
    assert_eq!(t["state"], "open", "{t}");

    let a = gw.admit(&g.token, "alice", "ssh").await;
    assert_eq!(a.status, 200, "token refused after restart: {:?}", a.body);
    let (code, _, err) = gw.cli("alice", &["token", &g.request]);
    assert_eq!(code, 1, "token handed out again after restart");
    assert!(err.contains("already fetched"), "{err}");
    // The pending request can still be decided.
    let (code, v, err) = approve(&gw, "bob", &waiting);
    assert_eq!(code, 0, "{v} {err}");
    assert_eq!(v["state"], "approved");

    // Two config.loaded records, and the chain still verifies.
    assert_eq!(gw.audit("config.loaded").await.len(), 2);
    gw.stop();
    let (code, out, err) = gw.run(&["audit", "verify"], &[]);
    assert_eq!(code, 0, "audit verify after restart: {out} {err}");
}

#[tokio::test]
async fn documented_routes_exist_and_metrics_count_requests() {
    let gw = Gateway::start(Opts::default());
    for op in jitgate::api::openapi::OPS {
        let path = op
            .path
            .replace("{id}", "req_aaaaaaaaaaaaaaaa")
            .replace("{provider}", "generic");
        let method = op.method.to_uppercase();
        let (status, body) = if op.method == "post" {
            gw.raw_json(&method, &path, "", b"{}")
        } else {
            gw.raw(&method, &path, None, &[], None)
        };
        let fallback = status == 404 && msg(&body).contains("no such API route");
        assert!(
            !fallback && status != 405,
            "documented route {} {} is not served: {status} {body}",
            op.method,
            op.path,
        );
        if op.roles != "none" && op.roles != "HMAC signature" {
            assert_eq!(
                status, 401,
                "{} {} without a key: {body}",
                op.method, op.path
            );
            assert!(!msg(&body).is_empty(), "{body}");
        }
    }
    // Without a webhook secret, webhooks are refused, not missing.
    let (status, v) = gw.raw_json("POST", "/api/v1/tickets/webhook/generic", "", b"{}");
    assert_eq!(status, 503, "{v}");
    // An undocumented route is the JSON 404.
    let (status, v) = gw.raw("GET", "/api/v1/nope", None, &[], None);
    assert_eq!(status, 404);
    assert!(msg(&v).contains("no such API route"), "{v}");

    let anon = gw.client(None);
    let doc = anon.get("/api/v1/openapi.json").await.unwrap();
    assert_eq!(doc.status, 200);
    assert!(
        doc.body["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.")),
        "{:?}",
        doc.body
    );
    for op in jitgate::api::openapi::OPS {
        assert!(
            doc.body["paths"][op.path][op.method].is_object(),
            "{} {} missing from openapi.json",
            op.method,
            op.path
        );
    }
    let h = anon.get("/api/v1/health").await.unwrap();
    assert_eq!(h.status, 200);

    // A reviewer's key reads the metrics on the API listener, even after the anonymous
    // calls above used up this address's failures.
    let (status, text) = gw.raw(
        "GET",
        "/metrics",
        Some(&crate::harness::api_key("rita")),
        &[],
        None,
    );
    assert_eq!(status, 200, "{text}");
    let text = text.as_str().unwrap_or_default().to_string();
    assert!(text.contains("jitgate_api_requests_total"), "{text}");
    assert!(text.contains("route=\"/api/v1/health\""), "{text}");
}
