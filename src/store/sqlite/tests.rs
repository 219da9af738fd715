use super::*;
use crate::store::TicketState;

fn ticket(id: &str) -> Ticket {
    Ticket {
        id: id.parse().unwrap(),
        title: "t".into(),
        assignee: Some("alice".parse().unwrap()),
        state: TicketState::Open,
        source: "local".into(),
        opened_at: 1,
        updated_at: 1,
    }
}

#[tokio::test]
async fn state_survives_reopening_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j.db");
    {
        let s = SqliteStore::open(&path).unwrap();
        s.put_ticket(&ticket("INC-1")).await.unwrap();
        assert!(s.record_delivery("d1", 100).await.unwrap());
        assert!(!s.record_delivery("d1", 101).await.unwrap());
    }
    let s = SqliteStore::open(&path).unwrap();
    let t = s.ticket(&"INC-1".parse().unwrap()).await.unwrap().unwrap();
    assert_eq!(t, ticket("INC-1"));
    assert!(!s.record_delivery("d1", 102).await.unwrap());
}

#[tokio::test]
async fn concurrent_writers_do_not_lose_updates() {
    let dir = tempfile::tempdir().unwrap();
    let s = SqliteStore::open(&dir.path().join("j.db")).unwrap();
    let mut tasks = Vec::new();
    for i in 0..50 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            s.put_ticket(&ticket(&format!("INC-{i}"))).await.unwrap();
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    for i in 0..50 {
        assert!(
            s.ticket(&format!("INC-{i}").parse().unwrap())
                .await
                .unwrap()
                .is_some()
        );
    }
}

#[tokio::test]
async fn grant_lookup_by_token_hash_follows_updates() {
    use crate::store::{Grant, GrantState, RequestKind};
    let s = SqliteStore::in_memory().unwrap();
    let mut g = Grant {
        id: GrantId::generate(),
        request: RequestId::generate(),
        kind: RequestKind::Normal,
        requester: "alice".parse().unwrap(),
        task: "t".parse().unwrap(),
        target: "x".parse().unwrap(),
        ticket: "INC-1".parse().unwrap(),
        approvers: vec![],
        token_hash: "unfetched:1".into(),
        token_fetched: false,
        issued_at: 0,
        expires_at: 10,
        state: GrantState::Active,
        ended_at: None,
        ended_by: None,
        end_reason: None,
    };
    s.put_grant(&g).await.unwrap();
    g.token_hash = "abc".into();
    g.token_fetched = true;
    s.put_grant(&g).await.unwrap();
    assert_eq!(s.grant_by_token_hash("abc").await.unwrap(), Some(g));
    assert_eq!(s.grant_by_token_hash("unfetched:1").await.unwrap(), None);
}

#[tokio::test]
async fn audit_head_follows_appends() {
    let s = SqliteStore::in_memory().unwrap();
    assert_eq!(s.audit_head().await.unwrap(), None);
    for seq in 1..=3 {
        s.append_audit(&AuditEntry {
            seq,
            ts: "t".into(),
            event: "config.loaded".into(),
            hash: format!("h{seq}"),
            request: None,
            grant: Some("gr_x".into()),
            session: None,
            record: "{}".into(),
        })
        .await
        .unwrap();
    }
    assert_eq!(s.audit_head().await.unwrap(), Some((3, "h3".into())));
    let after = s
        .audit(&AuditFilter {
            after_seq: Some(1),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(after.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![2, 3]);
}
