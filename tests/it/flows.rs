//! Steps many tests share, each driven through the CLI the way a user would type them, asserting
//! that the step worked.

use serde_json::Value;

use crate::harness::Gateway;

/// A fetched grant.
#[derive(Debug, Clone)]
pub struct Granted {
    pub request: String,
    pub grant: String,
    pub token: String,
}

/// `jitgate ticket open ID --assignee USER` as admin.
pub fn open_ticket(gw: &Gateway, id: &str, assignee: &str) {
    let (code, v, err) = gw.cli_json(
        "admin",
        &[
            "ticket",
            "open",
            id,
            "--assignee",
            assignee,
            "--title",
            "printer on fire",
        ],
    );
    assert_eq!(code, 0, "ticket open {id}: {v} {err}");
    assert_eq!(v["id"], id, "{v}");
    assert_eq!(v["state"], "open", "{v}");
    assert_eq!(v["assignee"], assignee, "{v}");
}

/// `jitgate request ...` as `user` with `--json`.
pub fn request(
    gw: &Gateway,
    user: &str,
    task: &str,
    target: &str,
    ticket: &str,
    ttl: &str,
    reason: &str,
) -> (i32, Value, String) {
    gw.cli_json(
        user,
        &[
            "request", "--task", task, "--target", target, "--ticket", ticket, "--ttl", ttl,
            "--reason", reason,
        ],
    )
}

/// A request that must be accepted as pending; returns its id.
pub fn pending(gw: &Gateway, user: &str, task: &str, target: &str, ticket: &str) -> String {
    let (code, v, err) = request(
        gw,
        user,
        task,
        target,
        ticket,
        "15m",
        "reset the locked service account",
    );
    assert_eq!(code, 0, "request as {user}: {v} {err}");
    assert_eq!(v["state"], "pending", "{v}");
    let id = v["id"].as_str().expect("request id").to_string();
    assert!(id.starts_with("req_"), "{id}");
    id
}

/// `jitgate approve ID` as `approver` with `--json`.
pub fn approve(gw: &Gateway, approver: &str, id: &str) -> (i32, Value, String) {
    gw.cli_json(approver, &["approve", id, "--comment", "ok"])
}

/// `jitgate token ID` as `user`; must hand out a `jgt_` token.
pub fn token(gw: &Gateway, user: &str, id: &str) -> (String, Value) {
    let (code, v, err) = gw.cli_json(user, &["token", id]);
    assert_eq!(code, 0, "token {id} as {user}: {v} {err}");
    let t = v["token"].as_str().expect("token field").to_string();
    assert!(
        t.starts_with("jgt_"),
        "token {t:?} does not start with jgt_"
    );
    (t, v)
}

/// Approve request `id` as bob and fetch its token as `user`.
pub fn approved_token(gw: &Gateway, user: &str, id: String) -> Granted {
    let (code, v, err) = approve(gw, "bob", &id);
    assert_eq!(code, 0, "approve {id}: {v} {err}");
    assert_eq!(v["state"], "approved", "{v}");
    let grant = v["grant"].as_str().expect("grant id").to_string();
    let (t, _) = token(gw, user, &id);
    Granted {
        request: id,
        grant,
        token: t,
    }
}

/// The `session.ended` audit record of `session` (waits up to 10 s).
pub async fn session_ended_record(gw: &Gateway, session: &str) -> Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let recs: Vec<Value> = gw
            .audit("session.ended")
            .await
            .into_iter()
            .filter(|r| r["session"] == session)
            .collect();
        assert!(
            recs.len() <= 1,
            "session.ended twice for {session}: {recs:?}"
        );
        if let Some(r) = recs.into_iter().next() {
            return r;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no session.ended for {session} within 10 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// alice on `ticket` (opened here): reset-credential on dc-01, approved by bob, token fetched.
pub fn granted(gw: &Gateway, user: &str, ticket: &str) -> Granted {
    open_ticket(gw, ticket, user);
    let id = pending(gw, user, "reset-credential", "dc-01", ticket);
    approved_token(gw, user, id)
}

/// The request `id` as admin sees it through the API.
pub async fn request_state(gw: &Gateway, id: &str) -> Value {
    let a = gw
        .api("admin")
        .get(&format!("/api/v1/requests/{id}"))
        .await
        .expect("GET request");
    assert_eq!(a.status, 200, "GET /api/v1/requests/{id}: {:?}", a.body);
    a.body
}

/// The grant `id` as admin sees it through the API.
pub async fn grant_state(gw: &Gateway, id: &str) -> Value {
    let a = gw
        .api("admin")
        .get(&format!("/api/v1/grants/{id}"))
        .await
        .expect("GET grant");
    assert_eq!(a.status, 200, "GET /api/v1/grants/{id}: {:?}", a.body);
    a.body
}

/// Records of `event` that mention `field == value`.
pub async fn audited(gw: &Gateway, event: &str, field: &str, value: &str) -> Vec<Value> {
    gw.audit(event)
        .await
        .into_iter()
        .filter(|r| r[field] == value)
        .collect()
}

/// The message of an answer, for assertions.
pub fn msg(v: &Value) -> String {
    v.get("message")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}
