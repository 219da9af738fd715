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

/// A live, normal session of a user who is not a vendor's; the rest fixed.
fn session(started_at: i64, user: &str, target: &str, task: &str, protocol: &str) -> SessionRecord {
    SessionRecord {
        id: SessionId::generate(),
        protocol: protocol.into(),
        user: user.parse().unwrap(),
        vendor: None,
        grant: GrantId::generate(),
        request: RequestId::generate(),
        kind: crate::store::RequestKind::Normal,
        ticket: format!("INC-{}", started_at % 5).parse().unwrap(),
        task: task.parse().unwrap(),
        target: target.parse().unwrap(),
        principal: None,
        approvers: vec![],
        source: "127.0.0.1".into(),
        started_at,
        expires_at: started_at + 900,
        ended_at: None,
        end_cause: None,
        end_reason: None,
        kill_latency_ms: None,
        dir: "recordings/x".into(),
        files: vec![],
        bytes_in: 0,
        bytes_out: 0,
        node: None,
    }
}

/// `r` ended for `cause` (still live for `None`), of `kind`, by a user of `vendor`.
fn shaped(
    mut r: SessionRecord,
    cause: Option<&str>,
    kind: crate::store::RequestKind,
    vendor: Option<&str>,
) -> SessionRecord {
    r.ended_at = cause.map(|_| r.started_at + 60);
    r.end_cause = cause.map(str::to_string);
    r.end_reason = cause.map(|c| format!("ended: {c}"));
    r.kind = kind;
    r.vendor = vendor.map(str::to_string);
    r
}

/// What a filter means, said in Rust: the oracle the SQL is checked against.
fn matches(f: &SessionFilter, s: &SessionRecord) -> bool {
    use crate::store::RequestKind;
    f.user.as_ref().is_none_or(|u| &s.user == u)
        && f.grant.as_ref().is_none_or(|g| &s.grant == g)
        && f.ticket.as_ref().is_none_or(|t| &s.ticket == t)
        && f.live.is_none_or(|l| s.ended_at.is_none() == l)
        && f.target.as_ref().is_none_or(|t| &s.target == t)
        && f.task.as_ref().is_none_or(|t| &s.task == t)
        && f.protocol.as_ref().is_none_or(|p| &s.protocol == p)
        && f.since.is_none_or(|t| s.started_at >= t)
        && f.until.is_none_or(|t| s.started_at < t)
        && f.end_cause
            .as_ref()
            .is_none_or(|c| s.end_cause.as_ref() == Some(c))
        && f.break_glass
            .is_none_or(|b| (s.kind == RequestKind::BreakGlass) == b)
        && f.vendor.is_none_or(|v| s.vendor.is_some() == v)
        && f.vendor_name
            .as_ref()
            .is_none_or(|v| s.vendor.as_ref() == Some(v))
}

/// The index's order: newest first, ties by id, descending.
fn newest_first(list: &mut [SessionRecord]) {
    list.sort_by(|a, b| (b.started_at, &b.id).cmp(&(a.started_at, &a.id)));
}

/// A small deterministic generator (the test must not depend on luck).
struct Lcg(u64);

impl Lcg {
    fn pick<T: Clone>(&mut self, from: &[T]) -> T {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        from[((self.0 >> 33) as usize) % from.len()].clone()
    }
}

const USERS: &[&str] = &["alice", "dave", "vic"];
const TARGETS: &[&str] = &["dc-01", "web-01", "idp-admin"];
const TASKS: &[&str] = &["reset-credential", "endpoint-remediation"];
const PROTOCOLS: &[&str] = &["ssh", "https"];
const CAUSES: &[Option<&str>] = &[None, Some("killed"), Some("expired"), Some("client")];
const VENDORS: &[Option<&str>] = &[None, None, Some("acme"), Some("globex")];

/// `n` varied sessions over few start times (so that many share one), stored in `s`.
async fn fill(s: &SqliteStore, n: usize, times: i64, rng: &mut Lcg) -> Vec<SessionRecord> {
    use crate::store::RequestKind;
    let mut all = Vec::new();
    for i in 0..n {
        let kind = rng.pick(&[
            RequestKind::Normal,
            RequestKind::Normal,
            RequestKind::BreakGlass,
        ]);
        let rec = session(
            1_000 + (i as i64 % times) * 10,
            rng.pick(USERS),
            rng.pick(TARGETS),
            rng.pick(TASKS),
            rng.pick(PROTOCOLS),
        );
        let rec = shaped(rec, rng.pick(CAUSES), kind, rng.pick(VENDORS));
        s.put_session(&rec).await.unwrap();
        all.push(rec);
    }
    newest_first(&mut all);
    all
}

/// `Some` name.
fn some<T: std::str::FromStr<Err = String>>(v: &str) -> Option<T> {
    Some(v.parse().unwrap())
}

#[tokio::test]
async fn session_filters_combine_and_agree_with_their_meaning() {
    let s = SqliteStore::in_memory().unwrap();
    let mut rng = Lcg(7);
    let all = fill(&s, 400, 40, &mut rng).await;
    let mut non_empty = 0;
    for round in 0..300 {
        let f = SessionFilter {
            user: rng
                .pick(&[None, some("alice"), some("vic"), some("nobody")])
                .clone(),
            target: rng
                .pick(&[None, None, some("dc-01"), some("idp-admin")])
                .clone(),
            task: rng.pick(&[None, None, some("reset-credential")]),
            protocol: rng.pick(&[None, Some("ssh".to_string())]),
            end_cause: rng
                .pick(&[None, Some("killed".to_string()), Some("client".to_string())])
                .clone(),
            live: rng.pick(&[None, None, Some(true), Some(false)]),
            break_glass: rng.pick(&[None, None, Some(true), Some(false)]),
            vendor: rng.pick(&[None, None, Some(true), Some(false)]),
            vendor_name: rng.pick(&[None, None, Some("acme".to_string())]),
            since: rng.pick(&[None, Some(1_100)]),
            until: rng.pick(&[None, Some(1_300)]),
            ticket: rng.pick(&[None, None, some("INC-0")]),
            grant: if round % 50 == 0 {
                Some(all[round % all.len()].grant.clone())
            } else {
                None
            },
            before: None,
            limit: rng.pick(&[None, Some(5)]),
        };
        let want: Vec<&SessionRecord> = all
            .iter()
            .filter(|r| matches(&f, r))
            .take(f.limit.unwrap_or(1000) as usize)
            .collect();
        let got = s.sessions(&f).await.unwrap();
        assert_eq!(
            got.iter().map(|r| &r.id).collect::<Vec<_>>(),
            want.iter().map(|r| &r.id).collect::<Vec<_>>(),
            "filter {f:?}"
        );
        non_empty += usize::from(!got.is_empty());
    }
    // The comparison means something only if many filters select sessions.
    assert!(
        non_empty > 100,
        "only {non_empty} filters selected sessions"
    );
}

#[tokio::test]
async fn filter_values_are_parameters_not_sql() {
    let s = SqliteStore::in_memory().unwrap();
    let mut rng = Lcg(3);
    fill(&s, 20, 5, &mut rng).await;
    for evil in ["x' OR '1'='1", "killed' --", "\"; DROP TABLE sessions; --"] {
        let f = SessionFilter {
            end_cause: Some(evil.into()),
            vendor_name: Some(evil.into()),
            ..Default::default()
        };
        assert!(s.sessions(&f).await.unwrap().is_empty(), "{evil}");
    }
    assert_eq!(
        s.sessions(&SessionFilter::default()).await.unwrap().len(),
        20
    );
}

/// Pages of `f` (with `limit`), each after the last session of the one before, until one is
/// short.
async fn all_pages(s: &SqliteStore, f: &SessionFilter, limit: u32) -> Vec<Vec<SessionRecord>> {
    let mut pages: Vec<Vec<SessionRecord>> = Vec::new();
    loop {
        let page = s
            .sessions(&SessionFilter {
                before: pages.last().and_then(|p| p.last()).map(|r| r.id.clone()),
                limit: Some(limit),
                ..f.clone()
            })
            .await
            .unwrap();
        let short = page.len() < limit as usize;
        pages.push(page);
        if short {
            return pages;
        }
        assert!(pages.len() < 1000, "paging does not end");
    }
}

#[tokio::test]
async fn pages_visit_every_session_once_in_order_when_start_times_are_equal() {
    let s = SqliteStore::in_memory().unwrap();
    let mut rng = Lcg(11);
    // 250 sessions over 7 start times: every page boundary falls inside a run of equal times.
    let all = fill(&s, 250, 7, &mut rng).await;
    for (f, limit) in [
        (SessionFilter::default(), 17),
        (SessionFilter::default(), 1),
        (
            SessionFilter {
                target: Some("dc-01".parse().unwrap()),
                ..Default::default()
            },
            9,
        ),
        (
            SessionFilter {
                live: Some(false),
                break_glass: Some(false),
                ..Default::default()
            },
            13,
        ),
    ] {
        let pages = all_pages(&s, &f, limit).await;
        let seen: Vec<&SessionId> = pages.iter().flatten().map(|r| &r.id).collect();
        let want: Vec<&SessionId> = all
            .iter()
            .filter(|r| matches(&f, r))
            .map(|r| &r.id)
            .collect();
        assert!(want.len() > limit as usize * 3, "{f:?} selects too few");
        assert_eq!(seen, want, "pages of {limit} with {f:?}");
        assert!(pages.iter().all(|p| p.len() <= limit as usize));
    }
    // After the very last session there is nothing; after an unknown one, nothing either.
    let last = all.last().unwrap().id.clone();
    for before in [last, SessionId::generate()] {
        let f = SessionFilter {
            before: Some(before),
            ..Default::default()
        };
        assert!(s.sessions(&f).await.unwrap().is_empty());
    }
}

#[tokio::test]
async fn migration_indexes_sessions_and_tickets_stored_before_it() {
    use crate::store::{RequestKind, TicketFilter};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j.db");
    // A database as jitgate left it at schema 4, with rows written by that version's code.
    let bg = shaped(
        session(2_000, "vic", "web-01", "endpoint-remediation", "ssh"),
        Some("killed"),
        RequestKind::BreakGlass,
        Some("acme"),
    );
    let normal = session(1_000, "alice", "idp-admin", "unlock-account", "https");
    {
        let c = Connection::open(&path).unwrap();
        for sql in &MIGRATIONS[..4] {
            c.execute_batch(sql).unwrap();
        }
        c.pragma_update(None, "user_version", 4).unwrap();
        for r in [&bg, &normal] {
            let mut data = serde_json::to_value(r).unwrap();
            if r.kind == RequestKind::Normal {
                // Sessions from before break-glass have no `kind`.
                data.as_object_mut().unwrap().remove("kind");
            }
            c.execute(
                "INSERT INTO sessions (id, user, grant_id, ticket, started_at, ended_at, data)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    r.id.as_str(),
                    r.user.as_str(),
                    r.grant.as_str(),
                    r.ticket.as_str(),
                    r.started_at,
                    r.ended_at,
                    data.to_string()
                ],
            )
            .unwrap();
        }
        for (id, updated) in [("INC-1", 50), ("INC-2", 70)] {
            let t = Ticket {
                updated_at: updated,
                ..ticket(id)
            };
            c.execute(
                "INSERT INTO tickets (id, state, assignee, data) VALUES (?1, 'open', 'alice', ?2)",
                params![id, serde_json::to_string(&t).unwrap()],
            )
            .unwrap();
        }
    }
    let s = SqliteStore::open(&path).unwrap();
    let version: i64 = {
        let c = s.conn.lock().unwrap();
        c.pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap()
    };
    assert_eq!(version as usize, MIGRATIONS.len());
    let ids = |v: Vec<SessionRecord>| v.into_iter().map(|r| r.id).collect::<Vec<_>>();
    let only = |f: SessionFilter| {
        let s = s.clone();
        async move { ids(s.sessions(&f).await.unwrap()) }
    };
    let bg_only = vec![bg.id.clone()];
    let normal_only = vec![normal.id.clone()];
    assert_eq!(
        only(SessionFilter {
            target: Some("web-01".parse().unwrap()),
            end_cause: Some("killed".into()),
            protocol: Some("ssh".into()),
            task: Some("endpoint-remediation".parse().unwrap()),
            ..Default::default()
        })
        .await,
        bg_only
    );
    assert_eq!(
        only(SessionFilter {
            break_glass: Some(true),
            vendor_name: Some("acme".into()),
            ..Default::default()
        })
        .await,
        bg_only
    );
    assert_eq!(
        only(SessionFilter {
            break_glass: Some(false),
            vendor: Some(false),
            protocol: Some("https".into()),
            ..Default::default()
        })
        .await,
        normal_only
    );
    assert_eq!(
        only(SessionFilter {
            before: Some(bg.id.clone()),
            ..Default::default()
        })
        .await,
        normal_only
    );
    let tickets = s.tickets(&TicketFilter::default()).await.unwrap();
    assert_eq!(
        tickets.iter().map(|t| t.id.as_str()).collect::<Vec<_>>(),
        ["INC-2", "INC-1"]
    );
    // Rows written after the migration carry the columns too.
    let mut ended = normal.clone();
    ended.ended_at = Some(1_100);
    ended.end_cause = Some("client".into());
    s.put_session(&ended).await.unwrap();
    assert_eq!(
        only(SessionFilter {
            end_cause: Some("client".into()),
            ..Default::default()
        })
        .await,
        normal_only
    );
}

#[tokio::test]
async fn tickets_list_newest_updated_first_by_assignee_and_state() {
    use crate::store::TicketFilter;
    let s = SqliteStore::in_memory().unwrap();
    for (id, assignee, state, updated) in [
        ("INC-1", Some("alice"), TicketState::Open, 10),
        ("INC-2", Some("dave"), TicketState::Open, 30),
        ("INC-3", Some("alice"), TicketState::Closed, 20),
        ("INC-4", None, TicketState::Open, 40),
        ("INC-5", Some("alice"), TicketState::Open, 50),
    ] {
        s.put_ticket(&Ticket {
            assignee: assignee.map(|a| a.parse().unwrap()),
            state,
            updated_at: updated,
            ..ticket(id)
        })
        .await
        .unwrap();
    }
    // Reassigning INC-1 to dave and touching it makes it the newest.
    let mut t1 = s.ticket(&"INC-1".parse().unwrap()).await.unwrap().unwrap();
    t1.assignee = Some("dave".parse().unwrap());
    t1.updated_at = 60;
    s.put_ticket(&t1).await.unwrap();
    let list = |f: TicketFilter| {
        let s = s.clone();
        async move {
            s.tickets(&f)
                .await
                .unwrap()
                .into_iter()
                .map(|t| t.id.to_string())
                .collect::<Vec<_>>()
        }
    };
    let user = |u: &str| Some(u.parse().unwrap());
    assert_eq!(
        list(TicketFilter::default()).await,
        ["INC-1", "INC-5", "INC-4", "INC-2", "INC-3"]
    );
    assert_eq!(
        list(TicketFilter {
            assignee: user("alice"),
            ..Default::default()
        })
        .await,
        ["INC-5", "INC-3"]
    );
    assert_eq!(
        list(TicketFilter {
            assignee: user("dave"),
            state: Some(TicketState::Open),
            ..Default::default()
        })
        .await,
        ["INC-1", "INC-2"]
    );
    assert_eq!(
        list(TicketFilter {
            state: Some(TicketState::Closed),
            ..Default::default()
        })
        .await,
        ["INC-3"]
    );
    assert_eq!(
        list(TicketFilter {
            limit: Some(2),
            ..Default::default()
        })
        .await,
        ["INC-1", "INC-5"]
    );
}
