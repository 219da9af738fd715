//! A person's identity in a ticket system from the provider's claims (`oidc_claim` in
//! `[[ticket_systems]]`): the Jira issue's assignee is whoever signed in claiming that account,
//! with no `external_ids` entry, and reassigning the issue in Jira ends their grant.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::json;

use super::{PASSWORD, SEQ, browser, cli_as_person, cli_login, idp, sso};
use crate::peers::{Auth, Jira};

const JIRA_USER: &str = "jitgate@example.test";
const JIRA_TOKEN: &str = "ATATT3xFfGF0-jitgate-test-token";

/// A fresh helpdesk account at the provider whose `jira_account_id` claim is `jira` (if any).
fn technician(name: &str, jira: Option<&str>) -> String {
    let id = format!("{name}{}", SEQ.fetch_add(1, Ordering::Relaxed));
    let mut claims = json!({
        "preferred_username": id,
        "name": name,
        "email": format!("{id}@example.test"),
        "groups": ["it-helpdesk"],
    });
    if let Some(j) = jira {
        claims["jira_account_id"] = json!(j);
    }
    idp().set_account(&id, PASSWORD, claims);
    id
}

fn request_args(ticket: &str) -> Vec<&str> {
    vec![
        "request",
        "--task",
        "reset-credential",
        "--target",
        "dc-01",
        "--ticket",
        ticket,
        "--ttl",
        "10m",
        "--reason",
        "printer queue",
    ]
}

#[tokio::test]
async fn the_jira_account_a_person_signs_in_with_is_that_issues_assignee_until_jira_reassigns_it() {
    let jira = Jira::start(Auth::basic(JIRA_USER, JIRA_TOKEN));
    let account = "712020:0f5c1e2d-olga";
    jira.create_issue("OPS-9", "printer queue stuck", Some(account));
    let system = format!(
        r#"
[[ticket_systems]]
name = "jira"
kind = "jira"
url = "{}"
user = "{JIRA_USER}"
password = "{JIRA_TOKEN}"
max_staleness = "2s"
poll_interval = "2s"
oidc_claim = "jira_account_id"
"#,
        jira.url()
    );
    let s = sso(
        r#"scopes = ["openid", "profile", "email", "groups", "tickets"]"#,
        &system,
    );
    // Someone whose sign-in claims another account is not the issue's assignee.
    let other = technician("pia", Some("712020:someone-else"));
    let xdg_other = tempfile::tempdir().unwrap();
    let (code, out, err) = cli_login(&s.gw, xdg_other.path(), &browser().context(), &other);
    assert_eq!(code, 0, "{out}\n{err}");
    let (code, out, err) = cli_as_person(&s.gw, xdg_other.path(), &request_args("jira:OPS-9"));
    assert_ne!(code, 0, "{other} was let request on olga's issue: {out}");
    assert!(err.contains("assigned"), "{out}\n{err}");

    // The person whose sign-in claims the account is.
    let who = technician("olga", Some(account));
    let xdg = tempfile::tempdir().unwrap();
    let (code, out, err) = cli_login(&s.gw, xdg.path(), &browser().context(), &who);
    assert_eq!(code, 0, "{out}\n{err}");
    let (code, out, err) = cli_as_person(&s.gw, xdg.path(), &request_args("jira:OPS-9"));
    assert_eq!(code, 0, "{out}\n{err}\n{}", s.gw.logs());
    let req = out.lines().next().unwrap().trim().to_string();
    let t =
        s.gw.api("admin")
            .get("/api/v1/tickets/jira:OPS-9")
            .await
            .unwrap();
    assert_eq!(t.body["assignee"], who.as_str(), "{:?}", t.body);
    let (code, out, err) = s.gw.cli("carol", &["approve", &req]);
    assert_eq!(code, 0, "{out}\n{err}");
    let (code, out, err) = cli_as_person(&s.gw, xdg.path(), &["token", &req]);
    assert_eq!(code, 0, "{out}\n{err}");
    let token = out.lines().next().unwrap().trim().to_string();
    let admitted = s.gw.admit(&token, &who, "ssh").await;
    assert!(admitted.ok(), "{:?}", admitted.body);

    // Jira gives the issue to the other account; no webhook, the reconcile pass learns it.
    jira.assign("OPS-9", Some("712020:someone-else"));
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let a = s.gw.admit(&token, &who, "ssh").await;
        if !a.ok() {
            let text = a.body.to_string();
            assert!(text.contains("OPS-9"), "{text}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the grant outlived the reassignment: {}",
            s.gw.logs()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let t =
        s.gw.api("admin")
            .get("/api/v1/tickets/jira:OPS-9")
            .await
            .unwrap();
    assert_eq!(t.body["assignee"], other.as_str(), "{:?}", t.body);
}
