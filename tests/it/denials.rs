//! Every way a request is refused: the caller sees the reason, the request is stored as denied
//! (or expired) with that reason, and the audit log records it.

use std::time::Duration;

use crate::flows::{approve, audited, msg, open_ticket, pending, request, request_state};
use crate::harness::{Gateway, Opts};

/// Run `jitgate request` as `user` and check the denial end to end; returns the request id.
/// `ask` is `[user, task, target, ticket, ttl, reason]`.
async fn assert_denied(gw: &Gateway, ask: [&str; 6], expect: &str) -> String {
    let [user, task, target, ticket, ttl, reason] = ask;
    let (code, v, err) = request(gw, user, task, target, ticket, ttl, reason);
    assert_eq!(code, 1, "request was not refused: {v} {err}");
    assert_eq!(v["error"], "denied", "{v}");
    assert_eq!(v["state"], "denied", "{v}");
    assert!(
        msg(&v).contains(expect),
        "message {:?} lacks {expect:?}",
        msg(&v)
    );
    assert!(err.contains(expect), "stderr {err:?} lacks {expect:?}");
    let id = v["id"]
        .as_str()
        .expect("a denied request keeps its id")
        .to_string();

    let r = request_state(gw, &id).await;
    assert_eq!(r["state"], "denied", "{r}");
    assert_eq!(r["requester"], user, "{r}");
    let why = r["decision_reason"].as_str().unwrap_or_default();
    assert!(
        why.contains(expect),
        "stored reason {why:?} lacks {expect:?}"
    );
    assert!(r["grant"].is_null(), "{r}");

    let recs = audited(gw, "request.denied", "request", &id).await;
    assert_eq!(recs.len(), 1, "request.denied for {id}: {recs:?}");
    assert_eq!(recs[0]["actor"], user, "{}", recs[0]);
    let why = recs[0]["reason"].as_str().unwrap_or_default();
    assert!(
        why.contains(expect),
        "audited reason {why:?} lacks {expect:?}"
    );
    assert!(
        audited(gw, "request.created", "request", &id)
            .await
            .is_empty(),
        "a denied request was also audited as created"
    );
    // Nobody can approve it.
    let (code, _, err) = approve(gw, "bob", &id);
    assert_eq!(code, 1, "a denied request was approved");
    assert!(err.contains("denied"), "{err}");
    id
}

#[tokio::test]
async fn denied_when_the_requester_is_not_a_technician() {
    let gw = Gateway::start(Opts::default());
    open_ticket(&gw, "INC-20", "bob");
    assert_denied(
        &gw,
        [
            "bob",
            "reset-credential",
            "dc-01",
            "INC-20",
            "10m",
            "just curious",
        ],
        "bob lacks the technician role",
    )
    .await;
}

#[tokio::test]
async fn denied_when_the_task_does_not_cover_the_target() {
    let gw = Gateway::start(Opts::default());
    open_ticket(&gw, "INC-21", "alice");
    assert_denied(
        &gw,
        [
            "alice",
            "reset-credential",
            "web-01",
            "INC-21",
            "10m",
            "reset on web",
        ],
        "task reset-credential does not cover target web-01",
    )
    .await;
}

#[tokio::test]
async fn denied_when_the_ttl_exceeds_the_task_max_ttl() {
    let gw = Gateway::start(Opts::default());
    open_ticket(&gw, "INC-22", "alice");
    assert_denied(
        &gw,
        [
            "alice",
            "reset-credential",
            "dc-01",
            "INC-22",
            "45m",
            "long job",
        ],
        "max_ttl 30m",
    )
    .await;
}

#[tokio::test]
async fn denied_when_the_ticket_does_not_exist() {
    let gw = Gateway::start(Opts::default());
    assert_denied(
        &gw,
        [
            "alice",
            "reset-credential",
            "dc-01",
            "INC-404",
            "10m",
            "no ticket",
        ],
        "ticket INC-404 does not exist",
    )
    .await;
}

#[tokio::test]
async fn denied_when_the_ticket_is_closed() {
    let gw = Gateway::start(Opts::default());
    open_ticket(&gw, "INC-23", "alice");
    let (code, v, err) = gw.cli_json("admin", &["ticket", "close", "INC-23"]);
    assert_eq!(code, 0, "{v} {err}");
    assert_denied(
        &gw,
        [
            "alice",
            "reset-credential",
            "dc-01",
            "INC-23",
            "10m",
            "after close",
        ],
        "ticket INC-23 is closed",
    )
    .await;
}

#[tokio::test]
async fn denied_when_the_ticket_is_assigned_to_someone_else() {
    let gw = Gateway::start(Opts::default());
    open_ticket(&gw, "INC-24", "dave");
    assert_denied(
        &gw,
        [
            "alice",
            "reset-credential",
            "dc-01",
            "INC-24",
            "10m",
            "not mine",
        ],
        "ticket INC-24 is not assigned to alice",
    )
    .await;
}

#[tokio::test]
async fn denied_when_the_justification_is_blank() {
    let gw = Gateway::start(Opts::default());
    open_ticket(&gw, "INC-25", "alice");
    assert_denied(
        &gw,
        [
            "alice",
            "reset-credential",
            "dc-01",
            "INC-25",
            "10m",
            "   \t  ",
        ],
        "justification is empty",
    )
    .await;
}

#[tokio::test]
async fn denied_by_cedar_policy_vendor_on_a_non_vendor_task() {
    let gw = Gateway::start(Opts::default());
    open_ticket(&gw, "INC-26", "vic");
    assert_denied(
        &gw,
        [
            "vic",
            "reset-credential",
            "dc-01",
            "INC-26",
            "10m",
            "vendor fix",
        ],
        "forbidden by policy vendor-allowed-tasks-only",
    )
    .await;
    // The same vendor over 30 minutes on a vendor task is stopped by another policy.
    assert_denied(
        &gw,
        [
            "vic",
            "endpoint-remediation",
            "dc-01",
            "INC-26",
            "45m",
            "agent fix",
        ],
        "forbidden by policy vendor-max-30m",
    )
    .await;
}

#[tokio::test]
async fn vendor_requests_need_a_sponsor_approver() {
    let gw = Gateway::start(Opts::default());
    open_ticket(&gw, "INC-27", "vic");
    let id = pending(&gw, "vic", "endpoint-remediation", "dc-01", "INC-27");
    let (code, _, err) = approve(&gw, "carol", &id);
    assert_eq!(code, 1, "a non-sponsor approved a vendor request");
    assert!(err.contains("vendor-needs-sponsor-approver"), "{err}");
    let refused = audited(&gw, "approval.refused", "request", &id).await;
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(request_state(&gw, &id).await["state"], "pending");
}

#[tokio::test]
async fn a_pending_request_expires_and_cannot_be_approved() {
    let gw = Gateway::start(Opts::default().pending_ttl("2s"));
    open_ticket(&gw, "INC-28", "alice");
    let id = pending(&gw, "alice", "reset-credential", "dc-01", "INC-28");
    tokio::time::sleep(Duration::from_millis(2600)).await;

    let a = gw
        .api("bob")
        .post(
            &format!("/api/v1/requests/{id}/approve"),
            serde_json::json!({}),
        )
        .await
        .unwrap();
    assert_eq!(a.status, 409, "approved an expired request: {:?}", a.body);
    assert!(msg(&a.body).contains("expired"), "{:?}", a.body);

    let r = request_state(&gw, &id).await;
    assert_eq!(r["state"], "expired", "{r}");
    assert!(r["grant"].is_null(), "{r}");
    let recs = audited(&gw, "request.expired", "request", &id).await;
    assert_eq!(recs.len(), 1, "{recs:?}");
    assert!(
        recs[0]["reason"].as_str().is_some_and(|r| !r.is_empty()),
        "{}",
        recs[0]
    );
    let (code, v, _) = gw.cli_json("alice", &["token", &id]);
    assert_eq!(code, 1, "token for an expired request: {v}");
    assert!(v["token"].is_null(), "{v}");
}
