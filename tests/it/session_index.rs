//! The session index through the API and the CLI: sessions written into the database while the
//! gateway is stopped (as a long-running gateway accumulates them) are paged with `before` in
//! the index's order, filtered and restricted to a technician's own; and the ticket list.

use std::process::Command;

use jitgate::store::{RecordedFile, RequestKind, SessionRecord};
use jitgate::types::{GrantId, RequestId, SessionId};
use serde_json::{Value, json};

use crate::flows::{msg, open_ticket};
use crate::harness::{Gateway, Opts, now};

const USERS: &[&str] = &["alice", "dave", "vic"];
const TARGETS: &[&str] = &["dc-01", "web-01", "idp-admin"];
const CAUSES: &[&str] = &["killed", "expired", "client", "ticket"];

/// `n` ended sessions, four to each start time (so that pages end inside runs of equal times),
/// newest first as the index orders them.
fn sessions(n: usize) -> Vec<SessionRecord> {
    let t0 = now() - 30 * 86_400;
    let mut all: Vec<SessionRecord> = (0..n)
        .map(|i| {
            let started_at = t0 + (i as i64 / 4) * 3_600;
            let target = TARGETS[i % 3];
            SessionRecord {
                id: SessionId::generate(),
                protocol: if target == "idp-admin" {
                    "https"
                } else {
                    "ssh"
                }
                .into(),
                user: USERS[(i / 3) % 3].parse().unwrap(),
                vendor: (USERS[(i / 3) % 3] == "vic").then(|| "acme".to_string()),
                grant: GrantId::generate(),
                request: RequestId::generate(),
                kind: if i % 10 == 0 {
                    RequestKind::BreakGlass
                } else {
                    RequestKind::Normal
                },
                ticket: format!("INC-{}", i % 7).parse().unwrap(),
                task: "reset-credential".parse().unwrap(),
                target: target.parse().unwrap(),
                principal: Some("helpdesk-reset".into()),
                approvers: vec!["bob".parse().unwrap()],
                source: "127.0.0.1".into(),
                started_at,
                expires_at: started_at + 900,
                ended_at: Some(started_at + 120),
                end_cause: Some(CAUSES[(i / 2) % 4].into()),
                end_reason: Some("ended".into()),
                kill_latency_ms: None,
                dir: "recordings/none".into(),
                files: vec![RecordedFile {
                    name: "0.cast".into(),
                    sha256: "0".repeat(64),
                    bytes: 10,
                }],
                bytes_in: 1,
                bytes_out: 2,
                node: None,
            }
        })
        .collect();
    all.sort_by(|a, b| (b.started_at, &b.id).cmp(&(a.started_at, &a.id)));
    all
}

/// Write `records` into the stopped gateway's database with python3's sqlite3, each with the
/// columns jitgate's `put_session` writes.
fn insert(gw: &Gateway, records: &[SessionRecord]) {
    let rows: Vec<Value> = records
        .iter()
        .map(|r| {
            json!([
                r.id,
                r.user,
                r.grant,
                r.ticket,
                r.started_at,
                r.ended_at,
                r.target,
                r.task,
                r.protocol,
                r.end_cause,
                r.kind == RequestKind::BreakGlass,
                r.vendor,
                serde_json::to_string(r).unwrap()
            ])
        })
        .collect();
    let file = gw.path("sessions.json");
    std::fs::write(&file, Value::Array(rows).to_string()).unwrap();
    let script = "import json, sqlite3, sys\n\
        c = sqlite3.connect(sys.argv[1])\n\
        c.executemany('INSERT INTO sessions (id, user, grant_id, ticket, started_at, ended_at, \
        target, task, protocol, end_cause, break_glass, vendor, data) \
        VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)', json.load(open(sys.argv[2])))\n\
        c.commit()\n";
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(gw.path("data/jitgate.db"))
        .arg(&file)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "python3 sqlite3 insert: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A gateway whose index holds `records` (migrated by a first start, filled while stopped).
fn gateway_with(records: &[SessionRecord]) -> Gateway {
    let mut gw = Gateway::start(Opts::default());
    assert!(gw.stop(), "serve did not stop on SIGTERM");
    insert(&gw, records);
    gw.serve();
    gw
}

/// Every page of `query` as `user`, `limit` at a time, each after the last id of the one before.
async fn pages(gw: &Gateway, user: &str, query: &str, limit: usize) -> Vec<Vec<String>> {
    let api = gw.api(user);
    let mut out: Vec<Vec<String>> = Vec::new();
    loop {
        let before = out
            .last()
            .and_then(|p| p.last())
            .map(|id| format!("&before={id}"))
            .unwrap_or_default();
        let a = api
            .get(&format!("/api/v1/sessions?limit={limit}{query}{before}"))
            .await
            .unwrap();
        assert_eq!(a.status, 200, "{query}{before}: {:?}", a.body);
        let page: Vec<String> = a
            .body
            .as_array()
            .expect("the answer is a JSON array")
            .iter()
            .map(|s| s["id"].as_str().unwrap().to_string())
            .collect();
        let short = page.len() < limit;
        out.push(page);
        if short {
            return out;
        }
        assert!(out.len() < 500, "paging does not end");
    }
}

fn ids<'a>(records: impl Iterator<Item = &'a SessionRecord>) -> Vec<String> {
    records.map(|r| r.id.to_string()).collect()
}

#[tokio::test]
async fn pages_with_before_visit_every_session_once_newest_first() {
    let all = sessions(130);
    let gw = gateway_with(&all);

    // Everything, 20 at a time: every session once, in the index's order.
    let got = pages(&gw, "admin", "", 20).await;
    assert_eq!(got.len(), 7, "130 sessions make 7 pages of 20");
    assert_eq!(got.concat(), ids(all.iter()));

    // A filtered index pages the same way, over the matching sessions only.
    let got = pages(&gw, "admin", "&target=dc-01&end_cause=killed", 3).await;
    let want = ids(all
        .iter()
        .filter(|r| r.target.as_str() == "dc-01" && r.end_cause.as_deref() == Some("killed")));
    assert!(want.len() > 6, "the filter selects {} sessions", want.len());
    assert_eq!(got.concat(), want);
    let got = pages(&gw, "bob", "&break_glass=true&protocol=ssh", 4).await;
    let want = ids(all
        .iter()
        .filter(|r| r.kind == RequestKind::BreakGlass && r.protocol == "ssh"));
    assert_eq!(got.concat(), want);

    // A technician pages through their own sessions, whatever user they ask for.
    let got = pages(&gw, "alice", "&user=dave", 10).await;
    let want = ids(all.iter().filter(|r| r.user.as_str() == "alice"));
    assert!(!want.is_empty());
    assert_eq!(got.concat(), want);

    // An id that names no session is a mistake worth saying; one that is not an id is bad input.
    let api = gw.api("admin");
    let unknown = SessionId::generate();
    let a = api
        .get(&format!("/api/v1/sessions?before={unknown}"))
        .await
        .unwrap();
    assert_eq!(a.status, 404, "{:?}", a.body);
    assert!(msg(&a.body).contains(unknown.as_str()), "{:?}", a.body);
    let a = api.get("/api/v1/sessions?before=nope").await.unwrap();
    assert_eq!(a.status, 400, "{:?}", a.body);
    assert!(msg(&a.body).contains("ses_"), "{:?}", a.body);
    // After the last session: an empty page, not an error.
    let last = all.last().unwrap().id.to_string();
    let a = api
        .get(&format!("/api/v1/sessions?before={last}"))
        .await
        .unwrap();
    assert_eq!((a.status, a.body.clone()), (200, json!([])));

    // The CLI pages the same way.
    let (code, v, err) = gw.cli_json(
        "admin",
        &[
            "sessions",
            "--before",
            all[19].id.as_str(),
            "--target",
            "web-01",
        ],
    );
    assert_eq!(code, 0, "{v} {err}");
    let got: Vec<String> = v
        .as_array()
        .expect("a JSON array")
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        got,
        ids(all[20..].iter().filter(|r| r.target.as_str() == "web-01"))
    );

    // A full page says how to get the next one (on stderr; stdout stays one JSON array), and
    // --limit sets the page's size.
    let (code, v, err) = gw.cli_json("admin", &["sessions", "--limit", "25"]);
    assert_eq!(code, 0, "{v} {err}");
    let got: Vec<&str> = v
        .as_array()
        .expect("a JSON array")
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(got, ids(all[..25].iter()));
    assert!(
        err.contains(&format!("there may be more: add --before {}", all[24].id)),
        "{err}"
    );
    // The last page, not full: no hint.
    let (code, v, err) = gw.cli_json(
        "admin",
        &[
            "sessions",
            "--limit",
            "25",
            "--before",
            all[124].id.as_str(),
        ],
    );
    assert_eq!(
        (code, v.as_array().map(Vec::len)),
        (0, Some(5)),
        "{v} {err}"
    );
    assert!(!err.contains("there may be more"), "{err}");
    let (code, _, err) = gw.cli_json("admin", &["sessions", "--limit", "5001"]);
    assert_ne!(code, 0);
    assert!(err.contains("5001"), "{err}");
}

#[tokio::test]
async fn tickets_list_shows_technicians_their_own_and_approvers_any() {
    let gw = Gateway::start(Opts::default());
    for (id, assignee) in [("INC-1", "alice"), ("INC-2", "dave"), ("INC-3", "alice")] {
        open_ticket(&gw, id, assignee);
        // Updates a second apart, so that "newest updated first" is one order.
        std::thread::sleep(std::time::Duration::from_millis(1_100));
    }
    let (code, _, err) = gw.cli("admin", &["ticket", "close", "INC-1"]);
    assert_eq!(code, 0, "{err}");
    let list = |user: &'static str, query: &'static str| {
        let api = gw.api(user);
        async move {
            let a = api.get(&format!("/api/v1/tickets{query}")).await.unwrap();
            assert_eq!(a.status, 200, "{user} {query}: {:?}", a.body);
            a.body
                .as_array()
                .expect("a JSON array")
                .iter()
                .map(|t| {
                    format!(
                        "{} {} {}",
                        t["id"].as_str().unwrap(),
                        t["assignee"].as_str().unwrap_or("-"),
                        t["state"].as_str().unwrap()
                    )
                })
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        list("bob", "").await,
        ["INC-1 alice closed", "INC-3 alice open", "INC-2 dave open"]
    );
    assert_eq!(
        list("rita", "?state=open").await,
        ["INC-3 alice open", "INC-2 dave open"]
    );
    assert_eq!(list("admin", "?assignee=dave").await, ["INC-2 dave open"]);
    assert_eq!(list("bob", "?limit=1").await, ["INC-1 alice closed"]);
    // A technician sees the tickets assigned to them, whoever they ask about.
    assert_eq!(
        list("alice", "?assignee=dave").await,
        ["INC-1 alice closed", "INC-3 alice open"]
    );
    assert_eq!(list("dave", "?state=closed").await, Vec::<String>::new());
    let a = gw
        .api("bob")
        .get("/api/v1/tickets?state=resolved")
        .await
        .unwrap();
    assert_eq!(a.status, 400, "{:?}", a.body);
    assert!(msg(&a.body).contains("open or closed"), "{:?}", a.body);
}
