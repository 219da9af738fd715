//! Jira and ServiceNow as the live source of truth (`[[ticket_systems]]`, kinds `jira` and
//! `servicenow`), against the test servers in `peers/jira.rs` and `peers/servicenow.rs` (built
//! from the vendors' documented REST shapes; neither product can run here), through the real
//! gateway and real OpenSSH as `ticket_systems.rs` does with a real Request Tracker: an issue or
//! incident never announced to jitgate is requested against (by `system:id`, or a bare id the
//! system's `pattern` claims); closing it in the system, with no webhook, cuts the live `ssh`
//! session within `poll_interval`; the request, approval and session are written back as
//! comments or work notes, with the configured credentials; a 429 with `Retry-After` delays a
//! note without losing it; an unknown ticket, refused credentials and a system that is down or
//! failing each refuse new requests with a message that says which.
//!
//! The tests are in `jira.rs` and `servicenow.rs`; `shapes.rs` checks the fakes themselves (the
//! shapes, pagination and errors they serve) with `curl`.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::flows::{Granted, approved_token, msg, request};
use crate::harness::Gateway;
use crate::peers::{Auth, Jira, Seen, ServiceNow};
use crate::ssh::{Env, Term, ended_session, session_ended_record};

mod jira;
mod servicenow;
mod shapes;

/// How often the gateway re-reads the systems in these tests.
const POLL: Duration = Duration::from_secs(3);
/// How long write-back may take to arrive (a note waits behind the ones before it).
const WRITE_BACK: Duration = Duration::from_secs(30);
/// The `Retry-After` the fakes send when a test asks for a 429 on a note.
const RETRY_AFTER: u64 = 4;

/// jitgate's account in the fake Jira (Jira Cloud: an email and an API token).
const JIRA_USER: &str = "jitgate@example.test";
const JIRA_TOKEN: &str = "ATATT3xFfGF0-jitgate-test-token";
/// Alice's Jira Cloud account id.
const ALICE_JIRA: &str = "5b10ac8d82e05b22cc7d4ef5";
/// jitgate's account in the fake ServiceNow, and its OAuth token.
const SN_USER: &str = "svc.jitgate";
const SN_PASSWORD: &str = "correct horse battery";
const SN_TOKEN: &str = "Yn3Z8k-jitgate-oauth-access-token";
/// Alice's ServiceNow `user_name`.
const ALICE_SN: &str = "alice.sn";

/// A `[[ticket_systems]]` entry for a system named as its kind.
fn system(kind: &str, url: &str, credentials: &str, more: &str) -> String {
    format!(
        r#"
[[ticket_systems]]
name = "{kind}"
kind = "{kind}"
url = "{url}"
{credentials}
max_staleness = "2s"
poll_interval = "{}s"
grace = "5m"
{more}
"#,
        POLL.as_secs()
    )
}

fn jira_system(jira: &Jira, more: &str) -> String {
    let creds = format!("user = \"{JIRA_USER}\"\npassword = \"{JIRA_TOKEN}\"");
    system("jira", &jira.url(), &creds, more)
}

fn servicenow_basic(sn: &ServiceNow) -> String {
    let creds = format!("user = \"{SN_USER}\"\npassword = \"{SN_PASSWORD}\"");
    system("servicenow", &sn.url(), &creds, "")
}

/// A gateway in front of its own sshd whose alice is `identity` (`jira:ACCOUNT`).
fn gateway(system: &str, identity: &str) -> Env {
    Env::build(None, |o| o.extra(system).external_id("alice", identity))
}

/// Request `ops` on `box` for `ticket` as alice; must be pending. Returns the request.
fn pending(gw: &Gateway, ticket: &str) -> Value {
    let (code, v, err) = request(
        gw,
        "alice",
        "ops",
        "box",
        ticket,
        "15m",
        "reset the printer",
    );
    assert_eq!(code, 0, "request on {ticket}: {v} {err}\n{}", gw.logs());
    assert_eq!(v["state"], "pending", "{v}");
    v
}

/// Pending, approved by bob, token fetched.
fn granted(gw: &Gateway, ticket: &str) -> Granted {
    let v = pending(gw, ticket);
    approved_token(gw, "alice", v["id"].as_str().expect("id").to_string())
}

/// A request on `ticket` that must be refused; what the user is told.
fn refused(gw: &Gateway, ticket: &str) -> String {
    let (code, v, err) = request(
        gw,
        "alice",
        "ops",
        "box",
        ticket,
        "15m",
        "reset the printer",
    );
    assert_ne!(code, 0, "the request on {ticket} was accepted: {v}");
    format!("{} {err}", msg(&v))
}

fn shell(gw: &Gateway, token: &str) -> Term {
    let mut t = Term::ssh_login(gw, "alice", token);
    t.expect("$ ", Duration::from_secs(10));
    t.send("echo up-$((40+2))\r");
    t.expect("up-42", Duration::from_secs(5));
    t
}

/// Wait until `texts()` holds every one of `want` (each somewhere in one text); returns them.
async fn written_back(
    what: &str,
    texts: impl Fn() -> Vec<String>,
    want: &[String],
    gw: &Gateway,
) -> Vec<String> {
    let deadline = Instant::now() + WRITE_BACK;
    loop {
        let have = texts();
        let missing: Vec<&String> = want
            .iter()
            .filter(|w| !have.iter().any(|t| t.contains(w.as_str())))
            .collect();
        if missing.is_empty() {
            return have;
        }
        assert!(
            Instant::now() < deadline,
            "{what} lack {missing:?}:\n{}\ngateway log:\n{}",
            have.join("\n---\n"),
            gw.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The ticket as admin sees it through the API.
async fn ticket_view(gw: &Gateway, id: &str) -> Value {
    let a = gw
        .api("admin")
        .get(&format!("/api/v1/tickets/{id}"))
        .await
        .expect("GET ticket");
    assert_eq!(a.status, 200, "GET /api/v1/tickets/{id}: {:?}", a.body);
    a.body
}

/// Every request `seen` carried exactly `auth`.
fn all_carried(seen: &[Seen], auth: &Auth) {
    assert!(!seen.is_empty(), "the system got no request");
    let want = auth.header();
    for s in seen {
        assert_eq!(
            s.authorization.as_deref(),
            Some(want.as_str()),
            "{} carried {:?}",
            s.line(),
            s.authorization
        );
    }
}

/// The requests whose `METHOD /path?query` starts with `prefix`.
fn matching<'a>(seen: &'a [Seen], prefix: &str) -> Vec<&'a Seen> {
    seen.iter()
        .filter(|s| s.line().starts_with(prefix))
        .collect()
}

/// The live session is cut with `needle` within three polls; checks the cut's record.
async fn cut(t: &mut Term, env: &Env, g: &Granted, needle: &str) -> String {
    let started = Instant::now();
    t.expect(needle, POLL * 3 + Duration::from_secs(5));
    let took = started.elapsed();
    assert!(
        took <= POLL * 3,
        "the cut took {took:?} (poll_interval {POLL:?})"
    );
    let s = ended_session(&env.gw, &g.grant).await;
    assert_eq!(s["end_cause"], "ticket", "{s}");
    let sid = s["id"].as_str().expect("session id").to_string();
    let ended = session_ended_record(&env.gw, &sid).await;
    assert_eq!(ended["cause"], "ticket", "{ended}");
    sid
}

/// What jitgate writes back over a request's life and its session `sid`.
fn life_texts(g: &Granted, sid: &str) -> Vec<String> {
    vec![
        "requested task ops on box".to_string(),
        format!("approved request {}", g.request),
        format!("grant {} issued to alice", g.grant),
        format!("session {sid} started"),
        format!("session {sid} ended"),
        format!("jitgate evidence export {sid}"),
    ]
}

/// The first request matching `prefix` that was answered `status`, and the first one after it
/// that was answered 2xx: the note a 429 held back went through only after `Retry-After`.
fn waited_out(seen: &[Seen], prefix: &str) -> Duration {
    let tries = matching(seen, prefix);
    let limited = tries
        .iter()
        .position(|s| s.status == 429)
        .unwrap_or_else(|| panic!("no {prefix} was answered 429: {tries:?}"));
    let ok = tries[limited + 1..]
        .iter()
        .find(|s| (200..300).contains(&s.status))
        .unwrap_or_else(|| panic!("no {prefix} succeeded after the 429: {tries:?}"));
    assert_eq!(
        ok.body, tries[limited].body,
        "the retry carries the held-back note"
    );
    ok.at - tries[limited].at
}

/// Wait (at most three polls) until request `id` is no longer pending; its state then.
async fn decided(gw: &Gateway, id: &str) -> Value {
    let deadline = Instant::now() + POLL * 3;
    loop {
        let r = crate::flows::request_state(gw, id).await;
        if r["state"] != "pending" {
            return r;
        }
        assert!(
            Instant::now() < deadline,
            "request {id} is still pending after three polls: {r}\n{}",
            gw.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
