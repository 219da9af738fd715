//! The fakes themselves, asked with `curl` as the vendors' documentation shows: the shapes of
//! issues, records and searches, pagination (`startAt`/`maxResults`/`total`; `Link` and
//! `X-Total-Count`), error bodies, queued faults, and stopping and listening again.

use std::process::Command;

use serde_json::{Value, json};

use super::{ALICE_JIRA, ALICE_SN, JIRA_TOKEN, JIRA_USER, SN_PASSWORD, SN_USER};
use crate::peers::{Auth, Category, Fault, Jira, ServiceNow};

/// An answer `curl` got.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Value,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// `curl -X method url` with an optional `Authorization` and a body of `content_type`.
/// `Err(exit code)` when curl got no answer.
fn curl(
    method: &str,
    url: &str,
    auth: Option<&str>,
    body: Option<(&str, &str)>,
) -> Result<Answer, i32> {
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "-i", "-X", method, "-H", "Accept: application/json"]);
    if let Some(a) = auth {
        cmd.args(["-H", &format!("Authorization: {a}")]);
    }
    if let Some((ct, b)) = body {
        cmd.args(["-H", &format!("Content-Type: {ct}"), "--data-binary", b]);
    }
    let out = cmd.arg(url).output().expect("run curl");
    if !out.status.success() {
        return Err(out.status.code().unwrap_or(-1));
    }
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP answer");
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let body = serde_json::from_str(body).unwrap_or(Value::String(body.to_string()));
    Ok(Answer {
        status,
        headers,
        body,
    })
}

fn keys(v: &Value) -> Vec<&str> {
    v.as_array()
        .expect("a list")
        .iter()
        .map(|i| i["key"].as_str().expect("a key"))
        .collect()
}

#[test]
fn the_jira_fake_answers_in_jiras_documented_shapes() {
    let mut jira = Jira::start(Auth::basic(JIRA_USER, JIRA_TOKEN));
    let auth = Auth::basic(JIRA_USER, JIRA_TOKEN).header();
    let url = jira.url();
    for n in 1..=5 {
        let assignee = (n % 2 == 1).then_some(ALICE_JIRA);
        jira.create_issue(&format!("OPS-{n}"), &format!("issue {n}"), assignee);
    }
    jira.create_issue("WEB-1", "the website", None);
    jira.set_category("OPS-2", Category::Indeterminate);
    jira.close("OPS-3");
    let get = |path: &str| curl("GET", &format!("{url}{path}"), Some(&auth), None).unwrap();

    let a = get("/rest/api/2/issue/OPS-1?fields=status,assignee,summary");
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(a.body["key"], "OPS-1");
    assert_eq!(
        a.body["self"],
        format!("{url}/rest/api/2/issue/{}", a.body["id"].as_str().unwrap())
    );
    let f = &a.body["fields"];
    assert_eq!(f.as_object().unwrap().len(), 3, "{f}");
    assert_eq!(f["summary"], "issue 1");
    assert_eq!(f["status"]["name"], "To Do");
    assert_eq!(f["status"]["statusCategory"]["key"], "new");
    assert_eq!(f["assignee"]["accountId"], ALICE_JIRA);
    let a = get("/rest/api/2/issue/OPS-2?fields=status");
    assert_eq!(a.body["fields"].as_object().unwrap().len(), 1, "{a:?}");
    assert_eq!(
        a.body["fields"]["status"]["statusCategory"]["key"],
        "indeterminate"
    );
    let a = get("/rest/api/2/issue/OPS-3");
    assert_eq!(a.body["fields"]["status"]["statusCategory"]["key"], "done");
    let a = get("/rest/api/2/issue/OPS-4?fields=assignee");
    assert_eq!(a.body["fields"]["assignee"], Value::Null, "{a:?}");
    // By id too.
    let id = get("/rest/api/2/issue/OPS-5").body["id"].clone();
    assert_eq!(
        get(&format!("/rest/api/2/issue/{}", id.as_str().unwrap())).body["key"],
        "OPS-5"
    );

    // Errors: Jira's ErrorCollection.
    let a = get("/rest/api/2/issue/OPS-99");
    assert_eq!(a.status, 404);
    assert_eq!(
        a.body,
        json!({"errorMessages": ["Issue does not exist or you do not have permission to see it."], "errors": {}})
    );
    for creds in [None, Some(Auth::basic(JIRA_USER, "wrong").header())] {
        let a = curl(
            "GET",
            &format!("{url}/rest/api/2/issue/OPS-1"),
            creds.as_deref(),
            None,
        )
        .unwrap();
        assert_eq!(a.status, 401, "{a:?}");
        assert!(a.body["errorMessages"][0].is_string(), "{a:?}");
        assert_eq!(a.body["errors"], json!({}));
    }

    // Search, paged by startAt / maxResults / total.
    let mut pages = Vec::new();
    for start in [0, 2, 4] {
        let a = get(&format!(
            "/rest/api/2/search?jql=project%20%3D%20OPS%20ORDER%20BY%20key%20ASC&startAt={start}&maxResults=2&fields=summary"
        ));
        assert_eq!(a.status, 200, "{a:?}");
        assert_eq!(
            (&a.body["startAt"], &a.body["maxResults"], &a.body["total"]),
            (&json!(start), &json!(2), &json!(5))
        );
        pages.extend(keys(&a.body["issues"]).into_iter().map(String::from));
        assert_eq!(a.body["issues"][0]["fields"].as_object().unwrap().len(), 1);
    }
    assert_eq!(pages, ["OPS-1", "OPS-2", "OPS-3", "OPS-4", "OPS-5"]);
    let a = get("/rest/api/2/search?jql=&maxResults=1000");
    assert_eq!(
        (&a.body["maxResults"], &a.body["total"]),
        (&json!(100), &json!(6)),
        "{a:?}"
    );
    let jql = json!({
        "jql": format!("statusCategory != done AND assignee = \"{ALICE_JIRA}\" ORDER BY key DESC"),
        "startAt": 0, "maxResults": 10, "fields": ["status"],
    });
    let a = curl(
        "POST",
        &format!("{url}/rest/api/2/search"),
        Some(&auth),
        Some(("application/json", &jql.to_string())),
    )
    .unwrap();
    assert_eq!(keys(&a.body["issues"]), ["OPS-5", "OPS-1"], "{a:?}");
    let a = get("/rest/api/2/search?jql=assignee%20is%20EMPTY");
    assert_eq!(
        keys(&a.body["issues"]),
        ["OPS-2", "OPS-4", "WEB-1"],
        "{a:?}"
    );
    jira.assign("OPS-4", Some(ALICE_JIRA));
    jira.assign("OPS-5", None);
    let a = get(&format!(
        "/rest/api/2/search?jql=assignee%20%3D%20{ALICE_JIRA}"
    ));
    assert_eq!(
        keys(&a.body["issues"]),
        ["OPS-1", "OPS-3", "OPS-4"],
        "{a:?}"
    );
    let a = get(&format!(
        "/rest/api/2/search?jql=assignee%20!%3D%20{ALICE_JIRA}"
    ));
    assert!(
        keys(&a.body["issues"]).is_empty(),
        "!= never matches an empty field: {a:?}"
    );
    let a = get(
        "/rest/api/2/search?jql=key%20in%20(OPS-1%2C%20WEB-1)%20AND%20statusCategory%20%3D%20%22To%20Do%22",
    );
    assert_eq!(keys(&a.body["issues"]), ["OPS-1", "WEB-1"], "{a:?}");
    let a = get("/rest/api/2/search?jql=reporter%20%3D%20bob");
    assert_eq!(a.status, 400);
    assert!(
        a.body["errorMessages"][0]
            .as_str()
            .unwrap()
            .contains("Field 'reporter' does not exist"),
        "{a:?}"
    );
    let a = get("/rest/api/2/search?jql=project%20%3D");
    assert_eq!(a.status, 400);
    assert!(
        a.body["errorMessages"][0]
            .as_str()
            .unwrap()
            .starts_with("Error in the JQL Query"),
        "{a:?}"
    );

    // Comments: 201 with the comment; an empty body is refused; listed with paging fields.
    let c = format!("{url}/rest/api/2/issue/OPS-1/comment");
    let a = curl(
        "POST",
        &c,
        Some(&auth),
        Some(("application/json", r#"{"body": "first"}"#)),
    )
    .unwrap();
    assert_eq!(a.status, 201, "{a:?}");
    assert_eq!(
        (&a.body["body"], &a.body["author"]["displayName"]),
        (&json!("first"), &json!(JIRA_USER))
    );
    let a = curl(
        "POST",
        &c,
        Some(&auth),
        Some(("application/json", r#"{"body": ""}"#)),
    )
    .unwrap();
    assert_eq!(a.status, 400);
    assert_eq!(
        a.body["errors"]["comment"],
        "Comment body can not be empty!"
    );
    let a = curl("POST", &c, Some(&auth), Some(("text/plain", "first"))).unwrap();
    assert_eq!(a.status, 415);
    let a = get("/rest/api/2/issue/OPS-1/comment");
    assert_eq!(
        (&a.body["total"], &a.body["comments"][0]["body"]),
        (&json!(1), &json!("first")),
        "{a:?}"
    );
    assert_eq!(jira.comment_bodies("OPS-1"), ["first"]);
    assert_eq!(
        jira.comments("OPS-1")[0].authorization.as_deref(),
        Some(auth.as_str())
    );

    // Faults a test queues: 429 with Retry-After, then 503, each once, then normal again.
    jira.fail_next(
        1,
        Fault::RateLimited { retry_after: 7 },
        "GET /rest/api/2/issue/",
    );
    jira.fail_next(1, Fault::Status(503), "");
    let a = get("/rest/api/2/issue/OPS-1");
    assert_eq!(
        (a.status, a.header("retry-after")),
        (429, Some("7")),
        "{a:?}"
    );
    assert!(a.header("x-ratelimit-reset").is_some(), "{a:?}");
    assert!(a.body["errorMessages"][0].is_string(), "{a:?}");
    let a = get("/rest/api/2/issue/OPS-1");
    assert_eq!(a.status, 503, "{a:?}");
    assert!(a.body["errorMessages"][0].is_string(), "{a:?}");
    assert_eq!(get("/rest/api/2/issue/OPS-1").status, 200);
    let log = jira.requests();
    let last: Vec<u16> = log[log.len() - 3..].iter().map(|s| s.status).collect();
    assert_eq!(last, [429, 503, 200]);
    assert_eq!(log[0].authorization.as_deref(), Some(auth.as_str()));

    // Down, then back on the same port.
    jira.stop();
    assert_eq!(
        curl(
            "GET",
            &format!("{url}/rest/api/2/issue/OPS-1"),
            Some(&auth),
            None
        )
        .unwrap_err(),
        7
    );
    jira.resume();
    assert_eq!(get("/rest/api/2/issue/OPS-1").status, 200);
}

#[test]
fn the_servicenow_fake_answers_in_the_table_apis_documented_shapes() {
    let mut sn = ServiceNow::start(Auth::basic(SN_USER, SN_PASSWORD));
    let auth = Auth::basic(SN_USER, SN_PASSWORD).header();
    let url = sn.url();
    let mut ids = Vec::new();
    for n in 1..=5 {
        let who = if n % 2 == 1 { ALICE_SN } else { "bob.sn" };
        ids.push(sn.create_incident(
            &format!("INC001000{n}"),
            &format!("incident {n}"),
            Some(who),
        ));
    }
    sn.resolve("INC0010004");
    assert_eq!(sn.sys_id("INC0010001"), ids[0]);
    sn.assign("INC0010005", None);
    sn.assign("INC0010005", Some(ALICE_SN));
    let get = |path: &str| curl("GET", &format!("{url}{path}"), Some(&auth), None).unwrap();
    let numbers = |v: &Value| -> Vec<String> {
        v["result"]
            .as_array()
            .expect("result")
            .iter()
            .map(|r| r["number"].as_str().unwrap().to_string())
            .collect()
    };

    // jitgate's lookup, exactly as it asks.
    let a = get(
        "/api/now/table/incident?sysparm_query=number%3DINC0010002&sysparm_fields=sys_id,number,state,assigned_to.user_name,short_description&sysparm_limit=1&sysparm_exclude_reference_link=true",
    );
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(
        a.body,
        json!({"result": [{"sys_id": ids[1], "number": "INC0010002", "state": "1",
                            "assigned_to.user_name": "bob.sn", "short_description": "incident 2"}]})
    );
    assert_eq!(a.header("x-total-count"), Some("1"));
    // A reference field with its link, and with display values.
    let a = get(
        "/api/now/table/incident?sysparm_query=number%3DINC0010001&sysparm_fields=assigned_to,state",
    );
    let user = a.body["result"][0]["assigned_to"]["value"]
        .as_str()
        .expect("a sys_id")
        .to_string();
    assert_eq!(
        a.body["result"][0]["assigned_to"]["link"],
        format!("{url}/api/now/table/sys_user/{user}")
    );
    let a = get(&format!(
        "/api/now/table/sys_user/{user}?sysparm_fields=user_name"
    ));
    assert_eq!(a.body, json!({"result": {"user_name": ALICE_SN}}));
    let a = get(
        "/api/now/table/incident?sysparm_query=number%3DINC0010004&sysparm_fields=state&sysparm_display_value=true",
    );
    assert_eq!(a.body["result"][0]["state"], "Resolved", "{a:?}");
    // Nothing matches: 200 with an empty result.
    let a = get("/api/now/table/incident?sysparm_query=number%3DINC0099999");
    assert_eq!(
        (a.status, &a.body, a.header("x-total-count")),
        (200, &json!({"result": []}), Some("0"))
    );

    // Pages: X-Total-Count and a Link header to the first, previous, next and last pages.
    let first = "/api/now/table/incident?sysparm_query=assigned_to.user_name%3Dalice.sn%5EORDERBYnumber&sysparm_fields=number&sysparm_limit=2";
    let a = get(first);
    assert_eq!(numbers(&a.body), ["INC0010001", "INC0010003"]);
    assert_eq!(a.header("x-total-count"), Some("3"));
    let link = a.header("link").expect("a Link header").to_string();
    let rel = |link: &str, rel: &str| -> Option<String> {
        link.split(',')
            .find(|l| l.ends_with(&format!(";rel=\"{rel}\"")))
            .map(|l| l[l.find('<').unwrap() + 1..l.find('>').unwrap()].to_string())
    };
    assert_eq!(
        rel(&link, "first"),
        Some(format!("{url}{first}&sysparm_offset=0")),
        "{link}"
    );
    assert_eq!(rel(&link, "prev"), None, "{link}");
    let next = rel(&link, "next").expect("a next page");
    assert_eq!(rel(&link, "last").as_deref(), Some(next.as_str()), "{link}");
    let a = curl("GET", &next, Some(&auth), None).unwrap();
    assert_eq!(numbers(&a.body), ["INC0010005"]);
    let link = a.header("link").unwrap();
    assert!(
        rel(link, "prev").is_some_and(|p| p.ends_with("sysparm_offset=0")),
        "{link}"
    );
    assert_eq!(rel(link, "next"), None, "{link}");
    // ^OR, ORDERBYDESC, and a condition on a field the table lacks (left out, as ServiceNow does).
    let a = get(
        "/api/now/table/incident?sysparm_query=number%3DINC0010001%5eORnumber%3DINC0010004%5EORDERBYDESCnumber&sysparm_fields=number",
    );
    assert_eq!(numbers(&a.body), ["INC0010004", "INC0010001"]);
    let a = get("/api/now/table/incident?sysparm_query=no_such_field%3Dx&sysparm_fields=number");
    assert_eq!(a.header("x-total-count"), Some("5"), "{a:?}");
    sn.assign("INC0010003", None);
    let a = get(
        "/api/now/table/incident?sysparm_query=assigned_toISEMPTY&sysparm_fields=number,assigned_to",
    );
    assert_eq!(
        a.body,
        json!({"result": [{"number": "INC0010003", "assigned_to": ""}]})
    );

    // PATCH: a work note on the record, in its journal; state set.
    let a = curl(
        "PATCH",
        &format!("{url}/api/now/table/incident/{}", ids[0]),
        Some(&auth),
        Some((
            "application/json",
            r#"{"work_notes": "jitgate: a note", "state": "2"}"#,
        )),
    )
    .unwrap();
    assert_eq!(
        (a.status, &a.body["result"]["state"]),
        (200, &json!("2")),
        "{a:?}"
    );
    assert_eq!(sn.work_note_texts("INC0010001"), ["jitgate: a note"]);
    assert_eq!(
        sn.work_notes("INC0010001")[0].authorization.as_deref(),
        Some(auth.as_str())
    );

    // Errors in ServiceNow's shape.
    let a = get("/api/now/table/incident/0123456789abcdef0123456789abcdef");
    assert_eq!(a.status, 404);
    assert_eq!(
        a.body,
        json!({"error": {"message": "No Record found", "detail": "Record doesn't exist or ACL restricts the record retrieval"}, "status": "failure"})
    );
    let a = get("/api/now/table/no_such_table");
    assert_eq!(
        (a.status, a.body.clone()),
        (
            400,
            json!({"error": {"message": "Invalid table no_such_table", "detail": null}, "status": "failure"})
        )
    );
    let a = curl("GET", &format!("{url}/api/now/table/incident"), None, None).unwrap();
    assert_eq!(a.status, 401);
    assert_eq!(
        a.body,
        json!({"error": {"message": "User Not Authenticated", "detail": "Required to provide Auth information"}, "status": "failure"})
    );
    let bearer = curl(
        "GET",
        &format!("{url}/api/now/table/incident"),
        Some("Bearer nope"),
        None,
    )
    .unwrap();
    assert_eq!(bearer.status, 401);
    sn.fail_next(1, Fault::RateLimited { retry_after: 9 }, "GET ");
    let a = get("/api/now/table/incident");
    assert_eq!(
        (a.status, a.header("retry-after")),
        (429, Some("9")),
        "{a:?}"
    );
    for h in ["x-ratelimit-limit", "x-ratelimit-reset", "x-ratelimit-rule"] {
        assert!(a.header(h).is_some(), "no {h}: {a:?}");
    }
    assert_eq!(
        (&a.body["status"], &a.body["error"]["message"]),
        (&json!("failure"), &json!("Rate limit exceeded"))
    );
    sn.fail_next(1, Fault::Status(503), "");
    assert_eq!(get("/api/now/table/incident").status, 503);
    assert_eq!(get("/api/now/table/incident").status, 200);

    sn.stop();
    assert_eq!(
        curl(
            "GET",
            &format!("{url}/api/now/table/incident"),
            Some(&auth),
            None
        )
        .unwrap_err(),
        7
    );
    sn.resume();
    assert_eq!(get("/api/now/table/incident").status, 200);
}
