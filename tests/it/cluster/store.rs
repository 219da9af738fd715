//! The PostgreSQL store against the SQLite one: the same records written into both, every
//! listing the gateway uses asked of both, the answers compared (SQLite's are the reference,
//! which its own unit tests pin down). Covers each session filter alone and in pairs, keyset
//! pages, tickets, grants, requests-free lookups, audit filters, webhook replays and people's
//! ticket-system identities.

use jitgate::store::postgres::PgStore;
use jitgate::store::sqlite::SqliteStore;
use jitgate::store::{
    AuditEntry, AuditFilter, Grant, GrantFilter, GrantState, Person, RecordedFile, RequestKind,
    SessionFilter, SessionRecord, Store, Ticket, TicketFilter, TicketState,
};
use jitgate::types::{GrantId, RequestId, Secret, SessionId};

use crate::peers::{POSTGRES_PASSWORD, postgres};

const USERS: &[&str] = &["alice", "dave", "vic"];
const TARGETS: &[&str] = &["dc-01", "web-01", "idp-admin"];
const CAUSES: &[&str] = &["killed", "expired", "client", "ticket"];

fn session(i: usize) -> SessionRecord {
    let started_at = 1_700_000_000 + (i as i64 / 4) * 3_600;
    let target = TARGETS[i % 3];
    let live = i.is_multiple_of(5);
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
        kind: if i.is_multiple_of(10) {
            RequestKind::BreakGlass
        } else {
            RequestKind::Normal
        },
        ticket: format!("INC-{}", i % 7).parse().unwrap(),
        task: if i.is_multiple_of(2) {
            "ops"
        } else {
            "reset-credential"
        }
        .parse()
        .unwrap(),
        target: target.parse().unwrap(),
        principal: None,
        approvers: vec!["bob".parse().unwrap()],
        source: "127.0.0.1".into(),
        started_at,
        expires_at: started_at + 900,
        ended_at: (!live).then_some(started_at + 120),
        end_cause: (!live).then(|| CAUSES[(i / 2) % 4].to_string()),
        end_reason: None,
        kill_latency_ms: None,
        dir: "recordings/none".into(),
        files: vec![RecordedFile {
            name: "0.cast".into(),
            sha256: "0".repeat(64),
            bytes: 10,
        }],
        bytes_in: 1,
        bytes_out: 2,
        node: Some(["gw-a", "gw-b"][i % 2].into()),
    }
}

/// Both stores, empty.
async fn stores() -> (SqliteStore, PgStore, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = SqliteStore::open(&dir.path().join("j.db")).unwrap();
    let pg = PgStore::connect(
        &postgres().database(),
        Some(&Secret::new(POSTGRES_PASSWORD.to_string())),
        None,
    )
    .unwrap();
    pg.migrate().await.unwrap();
    (sqlite, pg, dir)
}

fn ids(list: &[SessionRecord]) -> Vec<String> {
    list.iter().map(|s| s.id.to_string()).collect()
}

#[tokio::test]
async fn postgres_answers_every_listing_as_sqlite_does() {
    let (lite, pg, _dir) = stores().await;
    let all: Vec<SessionRecord> = (0..90).map(session).collect();
    for s in &all {
        lite.put_session(s).await.unwrap();
        pg.put_session(s).await.unwrap();
    }
    // Filters alone and in pairs.
    let one = |f: &dyn Fn(&mut SessionFilter)| {
        let mut x = SessionFilter::default();
        f(&mut x);
        x
    };
    let filters: Vec<(&str, SessionFilter)> = vec![
        ("none", SessionFilter::default()),
        ("user", one(&|f| f.user = Some("dave".parse().unwrap()))),
        (
            "ticket",
            one(&|f| f.ticket = Some("INC-3".parse().unwrap())),
        ),
        (
            "target",
            one(&|f| f.target = Some("web-01".parse().unwrap())),
        ),
        ("task", one(&|f| f.task = Some("ops".parse().unwrap()))),
        ("protocol", one(&|f| f.protocol = Some("https".into()))),
        ("cause", one(&|f| f.end_cause = Some("ticket".into()))),
        ("live", one(&|f| f.live = Some(true))),
        ("ended", one(&|f| f.live = Some(false))),
        ("break-glass", one(&|f| f.break_glass = Some(true))),
        ("not break-glass", one(&|f| f.break_glass = Some(false))),
        ("vendors", one(&|f| f.vendor = Some(true))),
        ("staff", one(&|f| f.vendor = Some(false))),
        ("acme", one(&|f| f.vendor_name = Some("acme".into()))),
        ("since", one(&|f| f.since = Some(1_700_000_000 + 40_000))),
        ("until", one(&|f| f.until = Some(1_700_000_000 + 40_000))),
        ("grant", one(&|f| f.grant = Some(all[7].grant.clone()))),
        (
            "user and target",
            one(&|f| {
                f.user = Some("alice".parse().unwrap());
                f.target = Some("dc-01".parse().unwrap());
            }),
        ),
        (
            "live ssh",
            one(&|f| {
                f.live = Some(true);
                f.protocol = Some("ssh".into());
            }),
        ),
        (
            "window and cause",
            one(&|f| {
                f.since = Some(1_700_000_000 + 10_000);
                f.until = Some(1_700_000_000 + 60_000);
                f.end_cause = Some("killed".into());
            }),
        ),
        ("limit", one(&|f| f.limit = Some(7))),
        (
            "unknown before",
            one(&|f| f.before = Some(SessionId::generate())),
        ),
    ];
    for (what, f) in &filters {
        let (a, b) = (
            lite.sessions(f).await.unwrap(),
            pg.sessions(f).await.unwrap(),
        );
        assert_eq!(ids(&a), ids(&b), "sessions filtered by {what}");
        assert_eq!(a, b, "the records themselves, filtered by {what}");
    }
    // Keyset pages of 8 through equal start times visit every session once, in order.
    let mut before = None;
    let mut seen = Vec::new();
    loop {
        let f = SessionFilter {
            before: before.clone(),
            limit: Some(8),
            ..Default::default()
        };
        let (a, b) = (
            lite.sessions(&f).await.unwrap(),
            pg.sessions(&f).await.unwrap(),
        );
        assert_eq!(ids(&a), ids(&b), "page after {before:?}");
        let Some(last) = b.last() else { break };
        before = Some(last.id.clone());
        seen.extend(ids(&b));
    }
    assert_eq!(seen.len(), all.len());
    // The node is kept.
    let s = pg.session(&all[3].id).await.unwrap().unwrap();
    assert_eq!(s.node.as_deref(), Some("gw-b"));
}

#[tokio::test]
async fn postgres_keeps_tickets_grants_audit_deliveries_and_identities_as_sqlite_does() {
    let (lite, pg, _dir) = stores().await;
    let both = [&lite as &dyn Store, &pg as &dyn Store];
    let grants: Vec<Grant> = (0..12u64)
        .map(|k| Grant {
            id: GrantId::generate(),
            request: RequestId::generate(),
            kind: RequestKind::Normal,
            requester: USERS[k as usize % 3].parse().unwrap(),
            task: "ops".parse().unwrap(),
            target: "box".parse().unwrap(),
            ticket: format!("INC-{}", k % 4).parse().unwrap(),
            approvers: vec![],
            token_hash: format!("{k:064x}"),
            token_fetched: false,
            issued_at: 1,
            expires_at: 1000 + (k as i64 % 5),
            state: if k % 3 == 0 {
                GrantState::Revoked
            } else {
                GrantState::Active
            },
            ended_at: None,
            ended_by: None,
            end_reason: None,
        })
        .collect();
    for (i, s) in both.iter().enumerate() {
        for k in 0..20i64 {
            s.put_ticket(&Ticket {
                id: format!("INC-{k}").parse().unwrap(),
                title: format!("t{k}"),
                assignee: Some(USERS[k as usize % 3].parse().unwrap()),
                state: if k % 4 == 0 {
                    TicketState::Closed
                } else {
                    TicketState::Open
                },
                source: "local".into(),
                opened_at: 1,
                updated_at: 100 + k % 6,
            })
            .await
            .unwrap();
        }
        for g in &grants {
            s.put_grant(g).await.unwrap();
        }
        for seq in 1..=30u64 {
            s.append_audit(&AuditEntry {
                seq,
                ts: "2026-12-02T00:00:00.000Z".into(),
                event: ["request.created", "grant.issued", "session.ended"][seq as usize % 3]
                    .into(),
                hash: format!("{seq:064x}"),
                request: Some(format!("req_{:016}", seq % 4)),
                grant: Some(format!("gr_{:016}", seq % 5)),
                session: None,
                record: format!("{{\"seq\":{seq}}}"),
            })
            .await
            .unwrap();
        }
        assert!(
            s.record_delivery("generic:d1", 1_000).await.unwrap(),
            "store {i}"
        );
        assert!(
            !s.record_delivery("generic:d1", 1_001).await.unwrap(),
            "store {i}"
        );
    }
    let tf = [
        TicketFilter::default(),
        TicketFilter {
            assignee: Some("dave".parse().unwrap()),
            ..Default::default()
        },
        TicketFilter {
            state: Some(TicketState::Closed),
            limit: Some(3),
            ..Default::default()
        },
    ];
    for f in &tf {
        assert_eq!(
            lite.tickets(f).await.unwrap(),
            pg.tickets(f).await.unwrap(),
            "{f:?}"
        );
    }
    let gf = [
        GrantFilter::default(),
        GrantFilter {
            state: Some(GrantState::Active),
            ticket: Some("INC-1".parse().unwrap()),
            ..Default::default()
        },
        GrantFilter {
            requester: Some("vic".parse().unwrap()),
            ..Default::default()
        },
    ];
    for f in &gf {
        assert_eq!(
            lite.grants(f).await.unwrap(),
            pg.grants(f).await.unwrap(),
            "{f:?}"
        );
    }
    let hash = format!("{:064x}", 5);
    assert_eq!(
        lite.grant_by_token_hash(&hash).await.unwrap(),
        pg.grant_by_token_hash(&hash).await.unwrap()
    );
    let af = [
        AuditFilter::default(),
        AuditFilter {
            after_seq: Some(12),
            event: Some("grant.issued".into()),
            ..Default::default()
        },
        AuditFilter {
            request: Some(format!("req_{:016}", 2)),
            grant: Some(format!("gr_{:016}", 3)),
            limit: Some(2),
            ..Default::default()
        },
    ];
    for f in &af {
        assert_eq!(
            lite.audit(f).await.unwrap(),
            pg.audit(f).await.unwrap(),
            "{f:?}"
        );
    }
    assert_eq!(
        lite.audit_head().await.unwrap(),
        pg.audit_head().await.unwrap()
    );
    // People and the identities their sign-ins claim.
    for s in both {
        let mut p = Person {
            name: "olga".parse().unwrap(),
            issuer: "https://idp".into(),
            subject: "s1".into(),
            groups: vec![],
            external_ids: vec!["jira:1".into(), "rt:olga".into()],
            first_sign_in: 1,
            last_sign_in: 1,
        };
        s.put_person(&p).await.unwrap();
        p.external_ids = vec!["rt:olga".into()];
        s.put_person(&p).await.unwrap();
        assert_eq!(s.person_with_id("jira:1").await.unwrap(), None);
        assert_eq!(
            s.person_with_id("rt:olga")
                .await
                .unwrap()
                .map(|n| n.to_string()),
            Some("olga".into())
        );
        assert_eq!(s.person(&p.name).await.unwrap(), Some(p.clone()));
    }
}
