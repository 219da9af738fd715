//! A real Request Tracker 5 as the live source of truth (`[[ticket_systems]]`, kind `rt`): a
//! ticket created and assigned in RT, never announced to jitgate, can be requested against;
//! resolving it or giving it to someone else in RT, with no webhook, cuts the live `ssh` session
//! within `poll_interval`; while RT is down new requests fail with a message that names it and
//! live grants end after `grace`; what happened is written back to the ticket as comments.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::flows::{approved_token, msg, request};
use crate::peers::{RtProcess, rt};
use crate::ssh::{Env, Term, ended_session, session_ended_record};

/// How often the gateway re-reads RT in these tests.
const POLL: Duration = Duration::from_secs(3);

/// The `[[ticket_systems]]` entry for an RT at `url`.
fn system(url: &str, token: &str, grace: &str) -> String {
    format!(
        r#"
[[ticket_systems]]
name = "rt"
kind = "rt"
url = "{url}"
token = "{token}"
max_staleness = "2s"
poll_interval = "{}s"
grace = "{grace}"
"#,
        POLL.as_secs()
    )
}

/// A gateway whose alice is `rt_user` in RT.
fn gateway(url: &str, rt_user: &str, grace: &str) -> Env {
    let token = rt().token().to_string();
    Env::build(None, |o| {
        o.extra(&system(url, &token, grace))
            .external_id("alice", &format!("rt:{rt_user}"))
    })
}

/// Request `ops` on `box` for `ticket` as alice, approve as bob, fetch the token.
fn granted(env: &Env, ticket: &str) -> crate::flows::Granted {
    let (code, v, err) = request(
        &env.gw,
        "alice",
        "ops",
        "box",
        ticket,
        "15m",
        "reset the printer",
    );
    assert_eq!(code, 0, "request on {ticket}: {v} {err}\n{}", env.gw.logs());
    assert_eq!(v["state"], "pending", "{v}");
    approved_token(&env.gw, "alice", v["id"].as_str().expect("id").to_string())
}

fn shell(env: &Env, token: &str) -> Term {
    let mut t = Term::ssh_login(&env.gw, "alice", token);
    t.expect("$ ", Duration::from_secs(10));
    t.send("echo up-$((40+2))\r");
    t.expect("up-42", Duration::from_secs(5));
    t
}

/// Wait until `t` shows `needle`, at most `within`; returns how long it took.
fn cut_within(t: &mut Term, needle: &str, within: Duration) -> Duration {
    let started = Instant::now();
    t.expect(needle, within);
    started.elapsed()
}

#[tokio::test]
async fn a_ticket_only_rt_knows_is_requested_against_and_resolving_it_in_rt_cuts_the_session() {
    let rt = rt();
    let alice = rt.create_user("alice");
    let id = rt.create_ticket("printer on fire", &alice);
    let env = gateway(rt.url(), &alice, "5m");
    let ticket = format!("rt:{id}");
    let g = granted(&env, &ticket);
    // jitgate fetched it: RT's owner is alice, the source is RT.
    let a = env
        .gw
        .api("admin")
        .get(&format!("/api/v1/tickets/{ticket}"))
        .await
        .expect("GET ticket");
    assert_eq!(a.status, 200, "{:?}", a.body);
    assert_eq!(a.body["source"], "rt", "{:?}", a.body);
    assert_eq!(a.body["assignee"], "alice", "{:?}", a.body);
    let mut t = shell(&env, &g.token);
    // No webhook: only the reconcile pass can learn of this.
    rt.set_status(id, "resolved");
    let took = cut_within(
        &mut t,
        &format!("session terminated: ticket {ticket} closed"),
        POLL * 3 + Duration::from_secs(5),
    );
    assert!(
        took <= POLL * 3,
        "the cut took {took:?} (poll_interval {POLL:?})"
    );
    let s = ended_session(&env.gw, &g.grant).await;
    assert_eq!(s["end_cause"], "ticket", "{s}");
    let sid = s["id"].as_str().expect("session id");
    let ended = session_ended_record(&env.gw, sid).await;
    assert_eq!(ended["cause"], "ticket", "{ended}");
    // The check that changed the decision is audited with RT's answer.
    let checked: Vec<Value> = env.gw.audit("ticket.checked").await;
    assert!(
        checked.iter().any(|r| r["ticket"] == ticket.as_str()
            && r["effect"] == "closed"
            && r["answer"].as_str().is_some_and(|a| a.contains("resolved"))),
        "{checked:?}"
    );
    // Written back: the request, its approval, the session's start and end.
    let deadline = Instant::now() + Duration::from_secs(30);
    let want = [
        "requested task ops on box",
        "approved request",
        &format!("session {sid} started"),
        &format!("session {sid} ended"),
        &format!("jitgate evidence export {sid}"),
    ];
    loop {
        let comments = rt.comments(id).join("\n---\n");
        let missing: Vec<&&str> = want.iter().filter(|w| !comments.contains(**w)).collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "comments on RT ticket {id} lack {missing:?}:\n{comments}\ngateway log:\n{}",
            env.gw.logs()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test]
async fn giving_the_ticket_to_someone_else_in_rt_cuts_the_session() {
    let rt = rt();
    let alice = rt.create_user("alice");
    let other = rt.create_user("carl");
    let id = rt.create_ticket("unlock a mailbox", &alice);
    let env = gateway(rt.url(), &alice, "5m");
    let ticket = format!("rt:{id}");
    let g = granted(&env, &ticket);
    let mut t = shell(&env, &g.token);
    rt.set_owner(id, &other);
    cut_within(
        &mut t,
        &format!("session terminated: ticket {ticket} unassigned from alice"),
        POLL * 3 + Duration::from_secs(5),
    );
    let s = ended_session(&env.gw, &g.grant).await;
    assert_eq!(s["end_cause"], "ticket", "{s}");
}

#[tokio::test]
async fn while_rt_is_down_requests_fail_naming_it_and_live_grants_end_after_grace() {
    let rt = rt();
    let mut own: RtProcess = rt.start_own();
    let alice = rt.create_user("alice");
    let live = rt.create_ticket("fix the vpn", &alice);
    let later = rt.create_ticket("fix the vpn again", &alice);
    let waiting = rt.create_ticket("fix the vpn for good", &alice);
    let unfetched = rt.create_ticket("fix the vpn once more", &alice);
    let env = gateway(&own.url(), &alice, "8s");
    let g = granted(&env, &format!("rt:{live}"));
    let mut t = shell(&env, &g.token);
    // A request made while RT answers, to be approved while it does not.
    let (code, v, err) = request(
        &env.gw,
        "alice",
        "ops",
        "box",
        &format!("rt:{waiting}"),
        "15m",
        "vpn",
    );
    assert_eq!(code, 0, "{v} {err}");
    let pending_id = v["id"].as_str().expect("request id").to_string();
    // And one approved while RT answers, whose token is fetched while it does not.
    let (code, v, err) = request(
        &env.gw,
        "alice",
        "ops",
        "box",
        &format!("rt:{unfetched}"),
        "15m",
        "vpn",
    );
    assert_eq!(code, 0, "{v} {err}");
    let approved_id = v["id"].as_str().expect("request id").to_string();
    let (code, v, err) = crate::flows::approve(&env.gw, "bob", &approved_id);
    assert_eq!(code, 0, "{v} {err}");
    own.stop();
    let stopped = Instant::now();
    // Past max_staleness (2 s) nothing on these tickets can be decided without RT.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (code, v, err) = crate::flows::approve(&env.gw, "bob", &pending_id);
    assert_ne!(code, 0, "approved while RT is down: {v} {err}");
    let why = format!("{} {err}", msg(&v));
    assert!(why.contains("ticket system rt is unreachable"), "{why}");
    assert_eq!(
        crate::flows::request_state(&env.gw, &pending_id).await["state"],
        "pending",
        "a request RT cannot answer for stays pending"
    );
    let (code, v, err) = env.gw.cli_json("alice", &["token", &approved_id]);
    assert_ne!(code, 0, "a token handed out while RT is down: {v}");
    let why = format!("{} {err}", msg(&v));
    assert!(why.contains("ticket system rt is unreachable"), "{why}");
    // A new request cannot be checked: refused, naming the system.
    let (code, v, err) = request(
        &env.gw,
        "alice",
        "ops",
        "box",
        &format!("rt:{later}"),
        "15m",
        "vpn",
    );
    assert_ne!(code, 0, "{v} {err}");
    let why = format!("{} {err}", msg(&v));
    assert!(why.contains("ticket system rt is unreachable"), "{why}");
    let unanswered: Vec<Value> = env.gw.audit("ticket.unanswered").await;
    assert!(
        unanswered
            .iter()
            .any(|r| r["ticket"] == format!("rt:{later}") && r["refused"] == "request"),
        "{unanswered:?}"
    );
    // The live session runs on within grace, then ends.
    t.expect(
        "could not be verified",
        Duration::from_secs(8) + POLL * 3 + Duration::from_secs(10),
    );
    let s = ended_session(&env.gw, &g.grant).await;
    assert_eq!(s["end_cause"], "ticket-unverifiable", "{s}");
    let after = stopped.elapsed();
    assert!(
        after >= Duration::from_secs(6),
        "the grant ended {after:?} after RT stopped, before its grace"
    );
    // Both active grants end: the live one, and the one whose token was never fetched (its
    // record may land a moment after the live session's end, in the same pass or the next).
    let mut want = [format!("rt:{live}"), format!("rt:{unfetched}")];
    want.sort();
    let until = Instant::now() + POLL * 2 + Duration::from_secs(5);
    let (tickets, audited) = loop {
        let audited: Vec<Value> = env.gw.audit("ticket.unverifiable").await;
        let mut tickets: Vec<String> = audited
            .iter()
            .filter_map(|r| r["ticket"].as_str().map(str::to_string))
            .collect();
        tickets.sort();
        if tickets.len() >= want.len() || Instant::now() > until {
            break (tickets, audited);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(tickets, want, "{audited:?}");
    own.start();
}

#[tokio::test]
async fn rts_scrip_posts_the_close_to_the_generic_webhook_which_cuts_at_once() {
    const SECRET: &str = "rt-webhook-secret-0123456789abcdef";
    let rt = rt();
    let alice = rt.create_user("alice");
    let id = rt.create_ticket("reset a password", &alice);
    let token = rt.token().to_string();
    // Polling so slow that only the webhook can end this session in time.
    let entry = system(rt.url(), &token, "5m").replace(
        &format!("poll_interval = \"{}s\"", POLL.as_secs()),
        "poll_interval = \"10m\"",
    );
    let env = Env::build(None, |o| {
        o.extra(&entry)
            .webhook_secret(SECRET)
            .external_id("alice", &format!("rt:{alice}"))
    });
    let hook = format!("{}/api/v1/tickets/webhook/generic", env.gw.url());
    rt.install_webhook_scrip_trusting(&hook, SECRET, &env.gw.ca());
    let ticket = format!("rt:{id}");
    let g = granted(&env, &ticket);
    let mut t = shell(&env, &g.token);
    rt.set_status(id, "resolved");
    let took = cut_within(
        &mut t,
        &format!("session terminated: ticket {ticket} closed"),
        Duration::from_secs(15),
    );
    rt.remove_webhook_scrip(&hook);
    assert!(
        took < Duration::from_secs(5),
        "the webhook's cut took {took:?}\n{}",
        rt.log()
    );
    let delivered: Vec<Value> = env.gw.audit("ticket.closed").await;
    assert!(
        delivered
            .iter()
            .any(|r| r["ticket"] == ticket.as_str() && r["actor"] == "ticket:generic"),
        "{delivered:?}"
    );
}
