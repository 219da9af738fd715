//! Ticket-system webhooks (generic, Jira, ServiceNow): a valid signature applies the change and
//! revokes grants; a bad or missing signature, or a stale timestamp, is refused with 401 and
//! audited; a replayed delivery is acknowledged as a duplicate and changes nothing.

use serde_json::{Value, json};

use crate::flows::{audited, granted, msg, pending};
use crate::harness::{Gateway, Opts, now};

const SECRET: &str = "it-webhook-secret-0123456789abcdef";
const WRONG: &str = "not-the-webhook-secret-0123456789";

pub fn sig(secret: &str, data: &[u8]) -> String {
    format!(
        "sha256={}",
        hex::encode(jitgate::crypto::hmac_sha256(secret.as_bytes(), data))
    )
}

/// POST a generic/ServiceNow delivery signed over `"<ts>.<body>"` with `secret`.
pub fn send_signed(
    gw: &Gateway,
    provider: &str,
    body: &Value,
    ts: i64,
    secret: &str,
    delivery: &str,
) -> (u16, Value) {
    let bytes = serde_json::to_vec(body).unwrap();
    let mut signed = format!("{ts}.").into_bytes();
    signed.extend_from_slice(&bytes);
    let ts = ts.to_string();
    let s = sig(secret, &signed);
    gw.raw(
        "POST",
        &format!("/api/v1/tickets/webhook/{provider}"),
        None,
        &[
            ("Content-Type", "application/json"),
            ("X-Jitgate-Timestamp", &ts),
            ("X-Jitgate-Signature", &s),
            ("X-Jitgate-Delivery", delivery),
        ],
        Some(&bytes),
    )
}

/// POST a Jira delivery signed over the raw body.
fn send_jira(gw: &Gateway, body: &Value, secret: Option<&str>, id: &str) -> (u16, Value) {
    let bytes = serde_json::to_vec(body).unwrap();
    let s = secret.map(|k| sig(k, &bytes));
    let mut headers = vec![
        ("Content-Type", "application/json"),
        ("X-Atlassian-Webhook-Identifier", id),
    ];
    if let Some(s) = &s {
        headers.push(("X-Hub-Signature", s));
    }
    gw.raw(
        "POST",
        "/api/v1/tickets/webhook/jira",
        None,
        &headers,
        Some(&bytes),
    )
}

async fn ticket(gw: &Gateway, id: &str) -> Value {
    let a = gw
        .api("admin")
        .get(&format!("/api/v1/tickets/{id}"))
        .await
        .unwrap();
    assert_eq!(a.status, 200, "{:?}", a.body);
    a.body
}

async fn rejected(gw: &Gateway, provider: &str) -> Vec<Value> {
    audited(gw, "webhook.rejected", "provider", provider).await
}

/// A refusal: 401, JSON error, one more `webhook.rejected`, ticket unchanged, grant still admits.
async fn assert_refused(
    gw: &Gateway,
    provider: &str,
    answer: (u16, Value),
    expect: &str,
    before: usize,
    ticket_id: &str,
    token: &str,
) -> usize {
    let (status, body) = answer;
    assert_eq!(status, 401, "{provider} webhook was not refused: {body}");
    assert!(
        body["error"].is_string() && msg(&body).contains(expect),
        "{body}"
    );
    let recs = rejected(gw, provider).await;
    assert_eq!(
        recs.len(),
        before + 1,
        "webhook.rejected not audited: {recs:?}"
    );
    assert!(
        recs.last().unwrap()["reason"]
            .as_str()
            .is_some_and(|r| r.contains(expect)),
        "{:?}",
        recs.last()
    );
    let t = ticket(gw, ticket_id).await;
    assert_eq!(
        t["state"], "open",
        "a refused webhook changed the ticket: {t}"
    );
    assert_eq!(
        t["assignee"], "alice",
        "a refused webhook changed the ticket: {t}"
    );
    let a = gw.admit(token, "alice", "ssh").await;
    assert_eq!(
        a.status, 200,
        "a refused webhook ended the grant: {:?}",
        a.body
    );
    before + 1
}

#[tokio::test]
async fn generic_webhook_signature_freshness_and_replay() {
    let gw = Gateway::start(Opts::default().webhook_secret(SECRET));
    let open =
        json!({"ticket": "WH-1", "state": "open", "assignee": "alice", "title": "disk full"});
    let (status, v) = send_signed(&gw, "generic", &open, now(), SECRET, "d-open-1");
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["status"], "applied", "{v}");
    assert_eq!(ticket(&gw, "WH-1").await["state"], "open");

    let id = pending(&gw, "alice", "reset-credential", "dc-01", "WH-1");
    let (code, v, err) = crate::flows::approve(&gw, "bob", &id);
    assert_eq!(code, 0, "{v} {err}");
    let grant = v["grant"].as_str().unwrap().to_string();
    let (tok, _) = crate::flows::token(&gw, "alice", &id);
    assert_eq!(gw.admit(&tok, "alice", "ssh").await.status, 200);

    let close = json!({"ticket": "WH-1", "state": "closed", "assignee": "alice"});
    let mut n = 0;
    let a = send_signed(&gw, "generic", &close, now(), WRONG, "d-bad-1");
    n = assert_refused(&gw, "generic", a, "signature", n, "WH-1", &tok).await;
    let a = send_signed(&gw, "generic", &close, now() - 400, SECRET, "d-stale-1");
    assert_eq!(a.1["error"], "stale", "{}", a.1);
    n = assert_refused(&gw, "generic", a, "window", n, "WH-1", &tok).await;
    let a = send_signed(&gw, "generic", &close, now() + 400, SECRET, "d-future-1");
    n = assert_refused(&gw, "generic", a, "window", n, "WH-1", &tok).await;
    // A signature moved onto another body does not verify.
    let body = serde_json::to_vec(&close).unwrap();
    let ts = now().to_string();
    let other = sig(SECRET, format!("{ts}.{{}}").as_bytes());
    let a = gw.raw(
        "POST",
        "/api/v1/tickets/webhook/generic",
        None,
        &[
            ("X-Jitgate-Timestamp", &ts),
            ("X-Jitgate-Signature", &other),
        ],
        Some(&body),
    );
    n = assert_refused(&gw, "generic", a, "signature", n, "WH-1", &tok).await;
    let a = gw.raw(
        "POST",
        "/api/v1/tickets/webhook/generic",
        None,
        &[("X-Jitgate-Timestamp", &ts)],
        Some(&body),
    );
    n = assert_refused(&gw, "generic", a, "X-Jitgate-Signature", n, "WH-1", &tok).await;
    let a = gw.raw(
        "POST",
        "/api/v1/tickets/webhook/generic",
        None,
        &[],
        Some(&body),
    );
    assert_refused(&gw, "generic", a, "X-Jitgate-", n, "WH-1", &tok).await;

    // The real close applies and revokes the grant.
    let ts = now();
    let (status, v) = send_signed(&gw, "generic", &close, ts, SECRET, "d-close-1");
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["status"], "applied", "{v}");
    assert_eq!(v["revoked"], 1, "{v}");
    assert_eq!(ticket(&gw, "WH-1").await["state"], "closed");
    let a = gw.admit(&tok, "alice", "ssh").await;
    assert_eq!(
        a.status, 403,
        "admitted after the webhook closed the ticket: {:?}",
        a.body
    );
    assert!(msg(&a.body).contains("WH-1"), "{:?}", a.body);
    let revoked = audited(&gw, "grant.revoked", "grant", &grant).await;
    assert_eq!(revoked.len(), 1, "{revoked:?}");
    assert_eq!(revoked[0]["reason"], "ticket WH-1 closed", "{}", revoked[0]);
    assert_eq!(revoked[0]["actor"], "ticket:generic", "{}", revoked[0]);

    // Replays: acknowledged, no second effect.
    let (status, v) = send_signed(&gw, "generic", &close, ts, SECRET, "d-close-1");
    assert_eq!(status, 200, "{v}");
    assert_eq!(v, json!({"status": "duplicate"}));
    let (status, v) = send_signed(&gw, "generic", &open, now(), SECRET, "d-open-1");
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["status"], "duplicate", "a replayed open was applied: {v}");
    assert_eq!(
        ticket(&gw, "WH-1").await["state"],
        "closed",
        "replay reopened the ticket"
    );
    assert_eq!(
        audited(&gw, "ticket.closed", "ticket", "WH-1").await.len(),
        1
    );
    assert_eq!(
        audited(&gw, "ticket.opened", "ticket", "WH-1").await.len(),
        1
    );
    assert_eq!(
        audited(&gw, "grant.revoked", "grant", &grant).await.len(),
        1
    );
    assert!(
        !gw.logs().contains(SECRET),
        "the webhook secret is in the logs"
    );
}

fn jira_body(key: &str, ts_ms: i64, category: &str) -> Value {
    json!({
        "timestamp": ts_ms,
        "webhookEvent": "jira:issue_updated",
        "issue": {"key": key, "fields": {
            "summary": "VPN broken",
            "status": {"name": "Done", "statusCategory": {"key": category}},
            "assignee": {"accountId": "557058:c9ebf848"}
        }}
    })
}

#[tokio::test]
async fn jira_webhook_signature_freshness_and_replay() {
    let gw = Gateway::start(Opts::default().webhook_secret(SECRET));
    let g = granted(&gw, "alice", "OPS-1");
    let ms = now() * 1000;
    let done = jira_body("OPS-1", ms, "done");

    let mut n = 0;
    let a = send_jira(&gw, &done, Some(WRONG), "jira-bad");
    n = assert_refused(&gw, "jira", a, "signature", n, "OPS-1", &g.token).await;
    let stale = jira_body("OPS-1", ms - 10 * 60 * 1000, "done");
    let a = send_jira(&gw, &stale, Some(SECRET), "jira-stale");
    n = assert_refused(&gw, "jira", a, "window", n, "OPS-1", &g.token).await;
    let a = send_jira(&gw, &done, None, "jira-unsigned");
    assert_refused(&gw, "jira", a, "X-Hub-Signature", n, "OPS-1", &g.token).await;

    // Still assigned and in progress: applied, nothing revoked.
    let (status, v) = send_jira(
        &gw,
        &jira_body("OPS-1", ms, "indeterminate"),
        Some(SECRET),
        "jira-0",
    );
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["revoked"], 0, "{v}");
    assert_eq!(gw.admit(&g.token, "alice", "ssh").await.status, 200);

    let (status, v) = send_jira(&gw, &done, Some(SECRET), "jira-1");
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["status"], "applied", "{v}");
    assert_eq!(v["revoked"], 1, "{v}");
    assert_eq!(ticket(&gw, "OPS-1").await["state"], "closed");
    let a = gw.admit(&g.token, "alice", "ssh").await;
    assert_eq!(a.status, 403, "{:?}", a.body);
    let revoked = audited(&gw, "grant.revoked", "grant", &g.grant).await;
    assert_eq!(revoked.len(), 1, "{revoked:?}");
    assert_eq!(
        revoked[0]["reason"], "ticket OPS-1 closed",
        "{}",
        revoked[0]
    );

    let (status, v) = send_jira(&gw, &done, Some(SECRET), "jira-1");
    assert_eq!(status, 200, "{v}");
    assert_eq!(v, json!({"status": "duplicate"}));
    assert_eq!(
        audited(&gw, "ticket.closed", "ticket", "OPS-1").await.len(),
        1
    );
}

#[tokio::test]
async fn servicenow_webhook_reassignment_revokes_and_replay_is_duplicate() {
    let gw = Gateway::start(Opts::default().webhook_secret(SECRET));
    let g = granted(&gw, "alice", "INC0010001");
    let moved = json!({
        "number": "INC0010001", "state": "2", "short_description": "mail down",
        "assigned_to": {"user_name": "dave.jones"}
    });

    let mut n = 0;
    let a = send_signed(&gw, "servicenow", &moved, now(), WRONG, "sn-bad");
    n = assert_refused(&gw, "servicenow", a, "signature", n, "INC0010001", &g.token).await;
    let a = send_signed(&gw, "servicenow", &moved, now() - 301, SECRET, "sn-stale");
    n = assert_refused(&gw, "servicenow", a, "window", n, "INC0010001", &g.token).await;
    let body = serde_json::to_vec(&moved).unwrap();
    let s = sig(SECRET, &body);
    let a = gw.raw(
        "POST",
        "/api/v1/tickets/webhook/servicenow",
        None,
        &[("X-Jitgate-Signature", &s)],
        Some(&body),
    );
    assert_refused(
        &gw,
        "servicenow",
        a,
        "X-Jitgate-Timestamp",
        n,
        "INC0010001",
        &g.token,
    )
    .await;

    let ts = now();
    let (status, v) = send_signed(&gw, "servicenow", &moved, ts, SECRET, "sn-1");
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["status"], "applied", "{v}");
    assert_eq!(v["assignee"], "dave", "{v}");
    assert_eq!(v["revoked"], 1, "{v}");
    let a = gw.admit(&g.token, "alice", "ssh").await;
    assert_eq!(a.status, 403, "admitted after reassignment: {:?}", a.body);
    let revoked = audited(&gw, "grant.revoked", "grant", &g.grant).await;
    assert_eq!(revoked.len(), 1, "{revoked:?}");
    assert_eq!(
        revoked[0]["reason"], "ticket INC0010001 reassigned from alice to dave",
        "{}",
        revoked[0]
    );

    let (status, v) = send_signed(&gw, "servicenow", &moved, ts, SECRET, "sn-1");
    assert_eq!(status, 200, "{v}");
    assert_eq!(v, json!({"status": "duplicate"}));
    assert_eq!(
        audited(&gw, "ticket.reassigned", "ticket", "INC0010001")
            .await
            .len(),
        1
    );

    // Resolved (state 6) closes it.
    let resolved = json!({"number": "INC0010001", "state": 6, "assigned_to": "dave.jones"});
    let (status, v) = send_signed(&gw, "servicenow", &resolved, now(), SECRET, "sn-2");
    assert_eq!(status, 200, "{v}");
    assert_eq!(ticket(&gw, "INC0010001").await["state"], "closed");
}
