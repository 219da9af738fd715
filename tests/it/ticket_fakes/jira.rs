//! Jira (`kind = "jira"`, Basic credentials of an email and an API token) through the gateway:
//! issues never announced, `pattern`, status categories, reassignment, comments, 429s and
//! refusals.

use std::time::Duration;

use serde_json::{Value, json};

use super::{
    ALICE_JIRA, JIRA_TOKEN, JIRA_USER, POLL, RETRY_AFTER, all_carried, cut, gateway, granted,
    jira_system, life_texts, matching, pending, refused, shell, ticket_view, waited_out,
    written_back,
};
use crate::flows::approved_token;
use crate::peers::{Auth, Category, Fault, Jira};

#[tokio::test]
async fn a_jira_issue_never_announced_is_requested_against_and_moving_it_to_done_cuts_the_session()
{
    let jira = Jira::start(Auth::basic(JIRA_USER, JIRA_TOKEN));
    jira.create_issue("OPS-1", "printer on fire", Some(ALICE_JIRA));
    let env = gateway(&jira_system(&jira, ""), &format!("jira:{ALICE_JIRA}"));
    let g = granted(&env.gw, "jira:OPS-1");
    // jitgate fetched it: Jira's assignee is alice, the source is Jira.
    let t = ticket_view(&env.gw, "jira:OPS-1").await;
    assert_eq!(
        (&t["source"], &t["assignee"], &t["state"], &t["title"]),
        (
            &json!("jira"),
            &json!("alice"),
            &json!("open"),
            &json!("printer on fire")
        ),
        "{t}"
    );
    let mut term = shell(&env.gw, &g.token);
    // In progress is still open: the session runs on through a poll.
    jira.set_category("OPS-1", Category::Indeterminate);
    tokio::time::sleep(POLL + Duration::from_secs(1)).await;
    term.send("echo still-$((1+1))\r");
    term.expect("still-2", Duration::from_secs(5));
    // No webhook: only the reconcile pass can learn of this.
    jira.close("OPS-1");
    let sid = cut(
        &mut term,
        &env,
        &g,
        "session terminated: ticket jira:OPS-1 closed",
    )
    .await;
    let comments = written_back(
        "the comments on Jira issue OPS-1",
        || jira.comment_bodies("OPS-1"),
        &life_texts(&g, &sid),
        &env.gw,
    )
    .await;
    assert!(
        comments.iter().all(|c| c.starts_with("jitgate: ")),
        "{comments:?}"
    );
    // As documented: the issue read with the three fields, comments posted as {"body": ...},
    // every request with Basic credentials of the configured account.
    let seen = jira.requests();
    all_carried(&seen, &Auth::basic(JIRA_USER, JIRA_TOKEN));
    let reads = matching(&seen, "GET /rest/api/2/issue/OPS-1?");
    assert!(reads.len() >= 3, "{reads:?}");
    for r in &reads {
        assert_eq!(
            r.uri, "/rest/api/2/issue/OPS-1?fields=status,assignee,summary",
            "{r:?}"
        );
    }
    for p in matching(&seen, "POST /rest/api/2/issue/OPS-1/comment") {
        let doc: Value = serde_json::from_str(&p.body).expect("a JSON comment");
        assert!(doc["body"].is_string(), "{doc}");
        assert_eq!(p.status, 201, "{p:?}");
    }
    for c in jira.comments("OPS-1") {
        assert_eq!(
            c.authorization,
            Some(Auth::basic(JIRA_USER, JIRA_TOKEN).header())
        );
    }
}

#[tokio::test]
async fn a_bare_key_the_jira_pattern_claims_is_that_jiras_issue() {
    let jira = Jira::start(Auth::basic(JIRA_USER, JIRA_TOKEN));
    jira.create_issue("OPS-2", "unlock a mailbox", Some(ALICE_JIRA));
    let env = gateway(
        &jira_system(&jira, "pattern = \"^OPS-[0-9]+$\""),
        &format!("jira:{ALICE_JIRA}"),
    );
    let v = pending(&env.gw, "OPS-2");
    assert_eq!(v["ticket"], "jira:OPS-2", "{v}");
    let g = approved_token(&env.gw, "alice", v["id"].as_str().expect("id").to_string());
    let mut term = shell(&env.gw, &g.token);
    // Given to someone else in Jira: the session is cut.
    jira.assign("OPS-2", Some("712020:0e3c5d8f-carl"));
    let sid = cut(
        &mut term,
        &env,
        &g,
        "session terminated: ticket jira:OPS-2 unassigned from alice",
    )
    .await;
    assert!(sid.starts_with("ses_"), "{sid}");
    assert!(
        !matching(&jira.requests(), "GET /rest/api/2/issue/OPS-2?").is_empty(),
        "{:?}",
        jira.requests()
    );
    // A bare id the pattern does not claim stays the local provider's: Jira is not asked.
    let why = refused(&env.gw, "CHG-7");
    assert!(
        why.contains("ticket CHG-7 does not exist; open it in the ticket system first"),
        "{why}"
    );
    assert!(
        matching(&jira.requests(), "GET /rest/api/2/issue/CHG-7").is_empty(),
        "{:?}",
        jira.requests()
    );
}

#[tokio::test]
async fn a_429_from_jira_is_waited_out_and_the_comment_still_arrives() {
    let jira = Jira::start(Auth::basic(JIRA_USER, JIRA_TOKEN));
    jira.create_issue("OPS-1", "rotate a key", Some(ALICE_JIRA));
    jira.create_issue("OPS-3", "rotate another key", Some(ALICE_JIRA));
    let env = gateway(&jira_system(&jira, ""), &format!("jira:{ALICE_JIRA}"));
    let comment = "POST /rest/api/2/issue/OPS-1/comment";
    jira.fail_next(
        1,
        Fault::RateLimited {
            retry_after: RETRY_AFTER,
        },
        comment,
    );
    let v = pending(&env.gw, "jira:OPS-1");
    let want = vec![format!("request {}", v["id"].as_str().expect("id"))];
    let texts = written_back(
        "the comments on Jira issue OPS-1",
        || jira.comment_bodies("OPS-1"),
        &want,
        &env.gw,
    )
    .await;
    assert_eq!(texts.len(), 1, "the note arrives once: {texts:?}");
    let gap = waited_out(&jira.requests(), comment);
    assert!(
        gap >= Duration::from_secs(RETRY_AFTER),
        "retried {gap:?} after a 429 with Retry-After: {RETRY_AFTER}"
    );
    assert!(
        gap < Duration::from_secs(RETRY_AFTER + 5),
        "retried only {gap:?} later"
    );
    // A 429 on the live check of a new request: refused, saying when to try again.
    jira.fail_next(
        1,
        Fault::RateLimited { retry_after: 7 },
        "GET /rest/api/2/issue/OPS-3?",
    );
    let why = refused(&env.gw, "jira:OPS-3");
    assert!(
        why.contains("ticket system jira asked jitgate to slow down (try again in 7 s)"),
        "{why}"
    );
    pending(&env.gw, "jira:OPS-3");
}

#[tokio::test]
async fn jira_refusals_say_whether_the_issue_the_credentials_or_jira_is_wrong() {
    let mut jira = Jira::start(Auth::basic(JIRA_USER, JIRA_TOKEN));
    jira.create_issue("OPS-5", "renew a certificate", Some(ALICE_JIRA));
    let env = gateway(&jira_system(&jira, ""), &format!("jira:{ALICE_JIRA}"));
    // Jira has no such issue (404 with its ErrorCollection).
    let why = refused(&env.gw, "jira:OPS-404");
    assert!(
        why.contains("ticket jira:OPS-404 does not exist; open it in the ticket system first"),
        "{why}"
    );
    let asked = matching(&jira.requests(), "GET /rest/api/2/issue/OPS-404?")
        .iter()
        .map(|s| s.status)
        .collect::<Vec<_>>();
    assert_eq!(asked, vec![404]);
    // The API token was rotated in Jira: 401.
    jira.set_auth(Auth::basic(JIRA_USER, "a-newer-token"));
    let why = refused(&env.gw, "jira:OPS-5");
    assert!(
        why.contains(
            "ticket system jira refused jitgate's credentials (401); check token, or user and password, in its [[ticket_systems]] entry"
        ),
        "{why}"
    );
    jira.set_auth(Auth::basic(JIRA_USER, JIRA_TOKEN));
    // Jira fails (503).
    jira.fail_next(1, Fault::Status(503), "GET /rest/api/2/issue/OPS-5?");
    let why = refused(&env.gw, "jira:OPS-5");
    assert!(
        why.contains("ticket system jira is unreachable: it answered 503"),
        "{why}"
    );
    // Jira is down.
    jira.stop();
    let why = refused(&env.gw, "jira:OPS-5");
    assert!(
        why.contains(&format!(
            "ticket system jira is unreachable: cannot connect to 127.0.0.1:{}",
            jira.port()
        )),
        "{why}"
    );
    // Back: the same request goes through.
    jira.resume();
    pending(&env.gw, "jira:OPS-5");
}
