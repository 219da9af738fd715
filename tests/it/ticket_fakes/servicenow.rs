//! ServiceNow (`kind = "servicenow"`, an OAuth token or a user and password) through the
//! gateway: incidents never announced, states, work notes, 429s and refusals.

use std::time::Duration;

use serde_json::{Value, json};

use super::{
    ALICE_SN, POLL, RETRY_AFTER, SN_PASSWORD, SN_TOKEN, SN_USER, all_carried, cut, decided,
    gateway, granted, life_texts, matching, pending, refused, servicenow_basic, shell, system,
    ticket_view, waited_out, written_back,
};
use crate::peers::{Auth, Fault, ServiceNow};

#[tokio::test]
async fn a_servicenow_incident_never_announced_is_requested_against_and_resolving_it_cuts_the_session()
 {
    let sn = ServiceNow::start(Auth::Bearer(SN_TOKEN.into()));
    let sys_id = sn.create_incident("INC0010001", "printer on fire", Some(ALICE_SN));
    let env = gateway(
        &system(
            "servicenow",
            &sn.url(),
            &format!("token = \"{SN_TOKEN}\""),
            "",
        ),
        &format!("servicenow:{ALICE_SN}"),
    );
    let g = granted(&env.gw, "servicenow:INC0010001");
    let t = ticket_view(&env.gw, "servicenow:INC0010001").await;
    assert_eq!(
        (&t["source"], &t["assignee"], &t["state"], &t["title"]),
        (
            &json!("servicenow"),
            &json!("alice"),
            &json!("open"),
            &json!("printer on fire")
        ),
        "{t}"
    );
    let mut term = shell(&env.gw, &g.token);
    // On hold is still open (state 3).
    sn.set_state("INC0010001", "3");
    tokio::time::sleep(POLL + Duration::from_secs(1)).await;
    term.send("echo still-$((1+1))\r");
    term.expect("still-2", Duration::from_secs(5));
    sn.resolve("INC0010001");
    let sid = cut(
        &mut term,
        &env,
        &g,
        "session terminated: ticket servicenow:INC0010001 closed",
    )
    .await;
    written_back(
        "the work notes on ServiceNow incident INC0010001",
        || sn.work_note_texts("INC0010001"),
        &life_texts(&g, &sid),
        &env.gw,
    )
    .await;
    // As documented: the record looked up by number, the note PATCHed to its sys_id, every
    // request with the OAuth token as a Bearer.
    let seen = sn.requests();
    all_carried(&seen, &Auth::Bearer(SN_TOKEN.into()));
    let lookups = matching(
        &seen,
        "GET /api/now/table/incident?sysparm_query=number%3DINC0010001&",
    );
    assert!(lookups.len() >= 3, "{seen:?}");
    let patches = matching(&seen, "PATCH ");
    assert!(!patches.is_empty(), "{seen:?}");
    for p in patches {
        assert_eq!(p.uri, format!("/api/now/table/incident/{sys_id}"), "{p:?}");
        assert_eq!(p.status, 200, "{p:?}");
        let doc: Value = serde_json::from_str(&p.body).expect("a JSON record");
        assert!(doc["work_notes"].is_string(), "{doc}");
    }
}

#[tokio::test]
async fn a_429_from_servicenow_is_waited_out_and_the_work_note_still_arrives() {
    let sn = ServiceNow::start(Auth::basic(SN_USER, SN_PASSWORD));
    sn.create_incident("INC0010002", "reset a token", Some(ALICE_SN));
    sn.create_incident("INC0010003", "reset another token", Some(ALICE_SN));
    let env = gateway(&servicenow_basic(&sn), &format!("servicenow:{ALICE_SN}"));
    sn.fail_next(
        1,
        Fault::RateLimited {
            retry_after: RETRY_AFTER,
        },
        "PATCH ",
    );
    let v = pending(&env.gw, "servicenow:INC0010002");
    let want = vec![format!("request {}", v["id"].as_str().expect("id"))];
    let notes = written_back(
        "the work notes on ServiceNow incident INC0010002",
        || sn.work_note_texts("INC0010002"),
        &want,
        &env.gw,
    )
    .await;
    assert_eq!(notes.len(), 1, "the note arrives once: {notes:?}");
    let gap = waited_out(&sn.requests(), "PATCH ");
    assert!(
        gap >= Duration::from_secs(RETRY_AFTER),
        "retried {gap:?} after a 429 with Retry-After: {RETRY_AFTER}"
    );
    assert!(
        gap < Duration::from_secs(RETRY_AFTER + 5),
        "retried only {gap:?} later"
    );
    all_carried(&sn.requests(), &Auth::basic(SN_USER, SN_PASSWORD));
    // A 429 on the live check of a new request: refused, saying when to try again.
    sn.fail_next(
        1,
        Fault::RateLimited { retry_after: 6 },
        "GET /api/now/table/incident?sysparm_query=number%3DINC0010003&",
    );
    let why = refused(&env.gw, "servicenow:INC0010003");
    assert!(
        why.contains("ticket system servicenow asked jitgate to slow down (try again in 6 s)"),
        "{why}"
    );
    pending(&env.gw, "servicenow:INC0010003");
}

#[tokio::test]
async fn servicenow_refusals_say_whether_the_incident_the_credentials_or_servicenow_is_wrong() {
    let mut sn = ServiceNow::start(Auth::basic(SN_USER, SN_PASSWORD));
    sn.create_incident("INC0010005", "renew a certificate", Some(ALICE_SN));
    let env = gateway(&servicenow_basic(&sn), &format!("servicenow:{ALICE_SN}"));
    // No such number: the Table API answers an empty result.
    let why = refused(&env.gw, "servicenow:INC0099999");
    assert!(
        why.contains(
            "ticket servicenow:INC0099999 does not exist; open it in the ticket system first"
        ),
        "{why}"
    );
    // The password was changed in ServiceNow: 401.
    sn.set_auth(Auth::basic(SN_USER, "a newer password"));
    let why = refused(&env.gw, "servicenow:INC0010005");
    assert!(
        why.contains(
            "ticket system servicenow refused jitgate's credentials (401); check token, or user and password, in its [[ticket_systems]] entry"
        ),
        "{why}"
    );
    sn.set_auth(Auth::basic(SN_USER, SN_PASSWORD));
    // ServiceNow fails (500).
    sn.fail_next(1, Fault::Status(500), "GET ");
    let why = refused(&env.gw, "servicenow:INC0010005");
    assert!(
        why.contains("ticket system servicenow is unreachable: it answered 500"),
        "{why}"
    );
    // ServiceNow is down.
    sn.stop();
    let why = refused(&env.gw, "servicenow:INC0010005");
    assert!(
        why.contains(&format!(
            "ticket system servicenow is unreachable: cannot connect to 127.0.0.1:{}",
            sn.port()
        )),
        "{why}"
    );
    sn.resume();
    pending(&env.gw, "servicenow:INC0010005");
}

#[tokio::test]
async fn the_reconcile_pass_reads_every_incident_in_table_queries_following_every_page() {
    let sn = ServiceNow::start(Auth::basic(SN_USER, SN_PASSWORD));
    let numbers: Vec<String> = (21..=25).map(|n| format!("INC00100{n}")).collect();
    for n in &numbers {
        sn.create_incident(n, "printer queue", Some(ALICE_SN));
    }
    // Pages shorter than sysparm_limit: jitgate must go on by sysparm_offset.
    sn.cap_pages(2);
    let env = gateway(&servicenow_basic(&sn), &format!("servicenow:{ALICE_SN}"));
    let requests: Vec<String> = numbers
        .iter()
        .map(|n| {
            pending(&env.gw, &format!("servicenow:{n}"))["id"]
                .as_str()
                .expect("id")
                .to_string()
        })
        .collect();
    // Each request's note (and the read that finds where to write it) is written back by a
    // queue of its own; once all are in, what follows is the reconcile pass alone.
    for (n, id) in numbers.iter().zip(&requests) {
        written_back(
            &format!("the work notes on ServiceNow incident {n}"),
            || sn.work_note_texts(n),
            &[format!("request {id}")],
            &env.gw,
        )
        .await;
    }
    let before = sn.requests().len();
    sn.resolve(&numbers[4]);
    let r = decided(&env.gw, &requests[4]).await;
    assert_eq!(r["state"], "rejected", "{r}");
    let seen = sn.requests()[before..].to_vec();
    let lists: Vec<&crate::peers::Seen> = matching(&seen, "GET /api/now/table/incident?")
        .into_iter()
        .filter(|s| s.uri.contains("numberIN"))
        .collect();
    assert!(lists.len() >= 3, "{seen:?}");
    let offsets: Vec<&str> = lists
        .iter()
        .take(3)
        .map(|s| {
            s.uri
                .split('&')
                .find_map(|p| p.strip_prefix("sysparm_offset="))
                .expect("sysparm_offset")
        })
        .collect();
    assert_eq!(offsets, ["0", "2", "4"], "{lists:?}");
    for n in &numbers {
        assert!(lists[0].uri.contains(n.as_str()), "{}", lists[0].uri);
    }
    // One query per page, none per incident.
    assert!(
        !seen.iter().any(|s| s.uri.contains("number%3DINC")),
        "{seen:?}"
    );
    for id in &requests[..4] {
        let r = crate::flows::request_state(&env.gw, id).await;
        assert_eq!(r["state"], "pending", "{r}");
    }
}
