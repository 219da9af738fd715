//! The reconcile benchmark that `bench/tickets.sh` runs (ignored in the test suite: it prints
//! figures and asserts only that the passes did what they should). 1,000 tickets with live
//! grants (`BENCH_TICKETS`) are reconciled against the real Request Tracker: the time of one full
//! pass, and the requests it made, when nothing changed and when some tickets were resolved.

use std::sync::Arc;
use std::time::{Duration, Instant};

use jitgate::config::Config;
use jitgate::store::{Grant, GrantState, RequestKind, Store, Ticket, TicketState};
use jitgate::types::{GrantId, RequestId, TicketRef, now};

use crate::peers::rt;

#[tokio::test]
#[ignore = "a benchmark: bench/tickets.sh runs it and prints its figures"]
async fn bench_reconcile_a_thousand_tickets_against_rt() {
    let n: usize = std::env::var("BENCH_TICKETS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let rt = rt();
    let owner = rt.create_user("bench");
    let created = Instant::now();
    let ids: Vec<u64> = (0..n)
        .map(|i| rt.create_ticket(&format!("bench ticket {i}"), &owner))
        .collect();
    println!(
        "created {n} tickets in RT in {:.1} s",
        created.elapsed().as_secs_f64()
    );

    let dir = tempfile::tempdir().expect("temp dir");
    let text = format!(
        r#"
[gateway]
public_name = "gw"
[[users]]
name = "alice"
roles = ["technician"]
external_ids = ["rt:{owner}"]
[[targets]]
name = "box"
kind = "ssh"
address = "127.0.0.1:1"
host_key = "{key}"
[[tasks]]
name = "ops"
targets = ["box"]
principal = "ops"
allow = ["shell"]
max_ttl = "1h"
[[ticket_systems]]
name = "rt"
kind = "rt"
url = "{url}"
token = "{token}"
comment = false
"#,
        key = crate::fixture::HOST_KEY,
        url = rt.url(),
        token = rt.token(),
    );
    let cfg = Arc::new(Config::from_text(&text, &dir.path().join("jitgate.toml")).expect("config"));
    let store: Arc<dyn Store> =
        Arc::new(jitgate::store::sqlite::SqliteStore::in_memory().expect("store"));
    let (key, _) = jitgate::crypto::SigningKey::generate();
    let audit = Arc::new(
        jitgate::audit::Log::open(dir.path(), Arc::new(key), store.clone())
            .await
            .expect("audit log"),
    );
    let policy = Arc::new(jitgate::policy::Engine::load(&cfg).expect("policy"));
    let bus: Arc<dyn jitgate::grant::GrantBus> = Arc::new(jitgate::grant::LocalBus::default());
    let systems = Arc::new(jitgate::ticket::systems::Systems::new(&cfg).expect("systems"));
    let grants = jitgate::grant::Service::new(cfg.clone(), store.clone(), audit, policy, bus)
        .with_ticket_systems(systems.clone());
    for id in &ids {
        let ticket: TicketRef = format!("rt:{id}").parse().expect("ticket id");
        store
            .put_ticket(&Ticket {
                id: ticket.clone(),
                title: format!("bench ticket {id}"),
                assignee: Some("alice".parse().expect("name")),
                state: TicketState::Open,
                source: "rt".into(),
                opened_at: now(),
                updated_at: now(),
            })
            .await
            .expect("put ticket");
        store
            .put_grant(&Grant {
                id: GrantId::generate(),
                request: RequestId::generate(),
                kind: RequestKind::Normal,
                requester: "alice".parse().expect("name"),
                task: "ops".parse().expect("name"),
                target: "box".parse().expect("name"),
                ticket,
                approvers: vec!["bob".parse().expect("name")],
                token_hash: format!("{id:064x}"),
                token_fetched: true,
                issued_at: now(),
                expires_at: now() + 3600,
                state: GrantState::Active,
                ended_at: None,
                ended_by: None,
                end_reason: None,
            })
            .await
            .expect("put grant");
    }

    let pass = |label: &'static str| {
        let grants = &grants;
        let systems = systems.clone();
        async move {
            let before = systems.requests_made("rt");
            let started = Instant::now();
            let r = grants.reconcile("rt").await.expect("reconcile");
            let took = started.elapsed();
            let requests = systems.requests_made("rt") - before;
            println!(
                "reconcile pass ({label}): {n} tickets in {:.2} s, {requests} requests to RT ({:.1} ms each on average), checked {}, changed {}, failed {}",
                took.as_secs_f64(),
                took.as_secs_f64() * 1000.0 / requests.max(1) as f64,
                r.checked,
                r.changed,
                r.failed
            );
            (r, took)
        }
    };
    let (first, _) = pass("first, titles learned").await;
    assert_eq!(first.failed, 0, "{first:?}");
    let (same, _) = pass("nothing changed").await;
    assert_eq!((same.checked, same.changed), (n, 0), "{same:?}");
    let resolved = n.min(10);
    for id in &ids[..resolved] {
        rt.set_status(*id, "resolved");
    }
    let (some, _) = pass("10 resolved in RT").await;
    assert_eq!(some.changed, resolved, "{some:?}");
    let ended = store
        .grants(&jitgate::store::GrantFilter {
            state: Some(GrantState::Revoked),
            limit: Some(100_000),
            ..Default::default()
        })
        .await
        .expect("grants");
    assert_eq!(ended.len(), resolved);
    // Keep the figures on screen for the script.
    tokio::time::sleep(Duration::from_millis(10)).await;
}
