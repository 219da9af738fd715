//! Jira (`kind = "jira"`, Basic credentials of an email and an API token) through the gateway:
//! issues never announced, `pattern`, status categories, reassignment, comments, 429s and
//! refusals.

use std::time::Duration;

use serde_json::{Value, json};

use super::{
    ALICE_JIRA, JIRA_TOKEN, JIRA_USER, POLL, RETRY_AFTER, all_carried, cut, decided, gateway,
    granted, jira_system, life_texts, matching, pending, refused, shell, ticket_view, waited_out,
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
    // As documented: the issue read with the three fields (alone when a request needs it,
    // by JQL in the reconcile pass), comments posted as {"body": ...}, every request with Basic
    // credentials of the configured account.
    let seen = jira.requests();
    all_carried(&seen, &Auth::basic(JIRA_USER, JIRA_TOKEN));
    let reads = matching(&seen, "GET /rest/api/2/issue/OPS-1?");
    assert!(!reads.is_empty(), "{seen:?}");
    for r in &reads {
        assert_eq!(
            r.uri, "/rest/api/2/issue/OPS-1?fields=status,assignee,summary",
            "{r:?}"
        );
    }
    let searches = matching(&seen, "POST /rest/api/2/search");
    assert!(!searches.is_empty(), "{seen:?}");
    for p in searches {
        let doc: Value = serde_json::from_str(&p.body).expect("a JSON search");
        assert_eq!(doc["jql"], "key in (OPS-1) ORDER BY key ASC", "{doc}");
        assert_eq!(
            doc["fields"],
            json!(["status", "assignee", "summary"]),
            "{doc}"
        );
        assert_eq!(p.status, 200, "{p:?}");
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

#[tokio::test]
async fn the_reconcile_pass_reads_every_jira_issue_in_searches_following_every_page() {
    let (seen, pages) = paged_searches(false).await;
    let searches = matching(&seen, "POST /rest/api/2/search");
    assert!(searches.iter().all(|s| s.status == 200), "{searches:?}");
    // One pass is three pages of the same JQL, at startAt 0, 2 and 4.
    let starts: Vec<u64> = pages
        .iter()
        .take(3)
        .map(|p| p["startAt"].as_u64().expect("startAt"))
        .collect();
    assert_eq!(starts, [0, 2, 4], "{pages:?}");
}

#[tokio::test]
async fn on_jira_cloud_the_reconcile_pass_moves_to_enhanced_search_and_follows_its_page_tokens() {
    let (seen, pages) = paged_searches(true).await;
    // The legacy search answered 410 once; every page after is enhanced search.
    let legacy: Vec<_> = seen
        .iter()
        .filter(|s| s.line().starts_with("POST /rest/api/2/search") && !s.uri.contains("/jql"))
        .collect();
    assert!(legacy.len() <= 1, "{legacy:?}");
    assert!(legacy.iter().all(|s| s.status == 410), "{legacy:?}");
    let enhanced = matching(&seen, "POST /rest/api/2/search/jql");
    assert!(enhanced.len() >= 3, "{seen:?}");
    assert!(enhanced.iter().all(|s| s.status == 200), "{enhanced:?}");
    let docs: Vec<&Value> = pages
        .iter()
        .filter(|p| p.get("startAt").is_none())
        .collect();
    let tokens: Vec<Option<&str>> = docs
        .iter()
        .take(3)
        .map(|p| p.get("nextPageToken").and_then(Value::as_str))
        .collect();
    assert_eq!(tokens, [None, Some("page-2"), Some("page-4")], "{docs:?}");
}

/// Five issues with pending requests in a Jira that pages by two (as Cloud when `cloud`);
/// closing the one on the last page must reject its request through the searches alone.
/// Returns the requests Jira saw meanwhile and the search bodies.
async fn paged_searches(cloud: bool) -> (Vec<crate::peers::Seen>, Vec<Value>) {
    let jira = Jira::start(Auth::basic(JIRA_USER, JIRA_TOKEN));
    let keys: Vec<String> = (21..=25).map(|n| format!("OPS-{n}")).collect();
    for k in &keys {
        jira.create_issue(k, "printer queue", Some(ALICE_JIRA));
    }
    // Jira answers fewer issues per page than asked for: jitgate must follow the pages.
    jira.cap_pages(2);
    if cloud {
        jira.as_cloud();
    }
    let env = gateway(&jira_system(&jira, ""), &format!("jira:{ALICE_JIRA}"));
    let requests: Vec<String> = keys
        .iter()
        .map(|k| {
            pending(&env.gw, &format!("jira:{k}"))["id"]
                .as_str()
                .expect("id")
                .to_string()
        })
        .collect();
    // Each request's note (and the read that finds where to write it) is written back by a
    // queue of its own; once all are in, what follows is the reconcile pass alone.
    for (k, id) in keys.iter().zip(&requests) {
        written_back(
            &format!("the comments on Jira issue {k}"),
            || jira.comment_bodies(k),
            &[format!("request {id}")],
            &env.gw,
        )
        .await;
    }
    let before = jira.requests().len();
    // No webhook: only a search can tell the pass that OPS-25, on the last page, is done.
    jira.close("OPS-25");
    let r = decided(&env.gw, &requests[4]).await;
    assert_eq!(r["state"], "rejected", "{r}");
    let seen = jira.requests()[before..].to_vec();
    let pages: Vec<Value> = matching(&seen, "POST /rest/api/2/search")
        .iter()
        .map(|s| serde_json::from_str(&s.body).expect("a JSON search"))
        .collect();
    assert!(!pages.is_empty(), "no search: {seen:?}");
    for p in &pages {
        for k in &keys {
            assert!(p["jql"].as_str().unwrap().contains(k.as_str()), "{p}");
        }
        assert_eq!(p["fields"], json!(["status", "assignee", "summary"]), "{p}");
    }
    // The pass reads no issue on its own.
    let reads = matching(&seen, "GET /rest/api/2/issue/");
    assert!(reads.is_empty(), "{reads:?}");
    // The others are untouched.
    for id in &requests[..4] {
        let r = crate::flows::request_state(&env.gw, id).await;
        assert_eq!(r["state"], "pending", "{r}");
    }
    (seen, pages)
}
