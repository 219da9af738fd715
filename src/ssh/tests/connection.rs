//! The connection's task, driven by hand, with paused time.

use super::*;

/// A gateway over fakes, and what the tests look at.
struct Rig {
    gw: Arc<Gateway>,
    store: Arc<dyn Store>,
    registry: Arc<Registry>,
    _dir: tempfile::TempDir,
}

async fn rig(alice_keys: &[String]) -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), alice_keys);
    let store: Arc<dyn Store> = Arc::new(SqliteStore::in_memory().unwrap());
    let (signing, _) = SigningKey::generate();
    let audit = Arc::new(
        Log::open(dir.path(), Arc::new(signing), store.clone())
            .await
            .unwrap(),
    );
    let metrics = Arc::new(Metrics::new());
    let registry = Registry::new(
        CancellationToken::new(),
        store.clone(),
        audit.clone(),
        metrics.clone(),
        dir.path().join("recordings"),
        Duration::from_secs(60),
    );
    let certs = dir.path().join("certs");
    crate::pki::init(&certs, "gw").unwrap();
    let parts = Parts {
        admit: Arc::new(fake(&cfg)),
        sessions: registry.clone(),
        keys: Arc::new(crate::pki::Keys::load(&certs).unwrap()),
        audit,
        metrics,
        settings: Arc::new(cfg.gateway.clone()),
    };
    Rig {
        gw: Gateway::new(parts, &cfg.users),
        store,
        registry,
        _dir: dir,
    }
}

/// A connection's task running on its own, fed by hand.
struct Driven {
    events: mpsc::Sender<Box<Event>>,
    /// Finishes russh's side (the client left).
    leave: Option<oneshot::Sender<()>>,
    client: Arc<FakeClient>,
    kill: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
}

fn drive(rig: &Rig) -> Driven {
    let (events_tx, events) = mpsc::channel(1);
    let (leave, left) = oneshot::channel::<()>();
    let running: Running = Box::pin(async move {
        let _ = left.await;
        Ok(())
    });
    let client = Arc::new(FakeClient::default());
    let kill = CancellationToken::new();
    let socket = Socket {
        kill: kill.clone(),
        close_mark: Default::default(),
    };
    let conn = Connection::new(
        rig.gw.clone(),
        "127.0.0.1:40000".parse().unwrap(),
        client.clone(),
        socket,
        None,
    );
    let task = tokio::spawn(conn.run(running, events, CancellationToken::new()));
    Driven {
        events: events_tx,
        leave: Some(leave),
        client,
        kill,
        task: Some(task),
    }
}

impl Driven {
    async fn password(&self, user: &str, password: &str) -> Auth {
        let (reply, answer) = oneshot::channel();
        self.events
            .send(Box::new(Event::Password {
                user: user.into(),
                password: password.into(),
                reply,
            }))
            .await
            .unwrap();
        answer.await.unwrap()
    }

    /// Until the connection's task returns.
    async fn ended(&mut self) {
        self.task.take().expect("once").await.unwrap();
    }

    fn said(&self) -> Vec<String> {
        self.client.disconnects.lock().unwrap().clone()
    }
}

async fn live_session(store: &Arc<dyn Store>) -> crate::store::SessionRecord {
    let mut live = store
        .sessions(&SessionFilter {
            live: Some(true),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(live.len(), 1, "{live:?}");
    live.remove(0)
}

#[tokio::test(start_paused = true)]
async fn a_login_not_finished_in_time_is_disconnected_with_the_reason() {
    let rig = rig(&[]).await;
    let mut d = drive(&rig);
    let started = tokio::time::Instant::now();
    d.ended().await;
    assert_eq!(d.said(), ["authentication timed out"]);
    // The configured 20 s, then the time russh gets to finish on its own.
    assert_eq!(
        started.elapsed().as_secs(),
        (Duration::from_secs(20) + timing::SOCKET_CUT_WAIT).as_secs()
    );
}

#[tokio::test(start_paused = true)]
async fn a_client_that_leaves_with_a_valid_token_but_without_its_key_is_audited() {
    let k = key();
    let rig = rig(&[line(&k)]).await;
    let mut d = drive(&rig);
    let answer = d.password("alice", GOOD).await;
    assert!(
        matches!(
            answer,
            Auth::Reject {
                partial_success: true,
                ..
            }
        ),
        "{answer:?}"
    );
    d.leave.take().unwrap().send(()).unwrap();
    d.ended().await;
    let denied = rig
        .store
        .audit(&AuditFilter {
            event: Some("admission.denied".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(denied.len(), 1, "{denied:?}");
    assert!(
        denied[0]
            .record
            .contains("requires public-key authentication"),
        "{}",
        denied[0].record
    );
    assert!(d.said().is_empty(), "{:?}", d.said());
}

#[tokio::test(start_paused = true)]
async fn an_admitted_client_that_leaves_ends_its_session_once_with_cause_client() {
    let rig = rig(&[]).await;
    let mut d = drive(&rig);
    assert!(matches!(d.password("alice", GOOD).await, Auth::Accept));
    let live = live_session(&rig.store).await;
    assert_eq!(live.protocol, "ssh");
    assert_eq!(live.source, "127.0.0.1:40000");
    d.leave.take().unwrap().send(()).unwrap();
    d.ended().await;
    let s = rig.store.session(&live.id).await.unwrap().unwrap();
    assert_eq!(s.end_cause.as_deref(), Some("client"), "{s:?}");
    assert!(d.said().is_empty(), "nobody disconnects a client that left");
    assert!(!d.kill.is_cancelled());
}

#[tokio::test(start_paused = true)]
async fn a_cut_disconnects_the_client_with_the_reason_and_cuts_a_socket_it_does_not_release() {
    let rig = rig(&[]).await;
    let mut d = drive(&rig);
    assert!(matches!(d.password("alice", GOOD).await, Auth::Accept));
    let live = live_session(&rig.store).await;
    let started = tokio::time::Instant::now();
    rig.registry.terminate(
        &live.id,
        Cause::Killed,
        "killed by bob: wrong box",
        std::time::Instant::now(),
    );
    // The client never closes its side (`leave` is kept): the socket is cut under it.
    d.ended().await;
    assert_eq!(
        d.said(),
        ["[jitgate] session terminated: killed by bob: wrong box"]
    );
    assert!(d.kill.is_cancelled(), "the socket was not cut");
    let waited = started.elapsed();
    assert!(
        waited >= timing::CLIENT_CLOSE_WAIT + timing::SOCKET_CUT_WAIT,
        "{waited:?}"
    );
    let s = rig.store.session(&live.id).await.unwrap().unwrap();
    assert_eq!(s.end_cause.as_deref(), Some("killed"), "{s:?}");
    assert!(s.kill_latency_ms.is_some(), "{s:?}");
    drop(d.leave);
}

#[tokio::test(start_paused = true)]
async fn a_refused_token_keeps_the_connection_authenticating_and_opens_nothing() {
    let rig = rig(&[]).await;
    let mut d = drive(&rig);
    assert!(is_reject(&d.password("alice", "jgt_wrong").await));
    assert!(is_reject(&d.password("bob", GOOD).await));
    let live = rig.store.sessions(&SessionFilter::default()).await.unwrap();
    assert!(live.is_empty(), "{live:?}");
    // Still authenticating: the right token as the right user gets in.
    assert!(matches!(d.password("alice", GOOD).await, Auth::Accept));
    assert_eq!(live_session(&rig.store).await.user.as_str(), "alice");
    d.leave.take().unwrap().send(()).unwrap();
    d.ended().await;
}

#[tokio::test]
async fn a_target_failure_reaches_every_channel_waiting_for_it_with_its_reason() {
    use crate::ssh::link::{Link, Target};
    use crate::ssh::upstream::UpstreamError;
    let rig = rig(&[]).await;
    let dir = tempfile::tempdir().unwrap();
    let admission = alice_admission(&config(dir.path(), &[]));
    let guard = rig
        .registry
        .open(
            &admission,
            crate::session::NewSession {
                protocol: crate::config::TargetKind::Ssh,
                source: "127.0.0.1:40000".into(),
            },
        )
        .await
        .unwrap();
    let (target, watched) = tokio::sync::watch::channel(Target::Connecting);
    let link = Arc::new(Link::new(
        guard.handle(),
        admission,
        Arc::new(FakeClient::default()),
        true,
        watched,
        Default::default(),
    ));
    let waiting: Vec<_> = (0..2)
        .map(|_| {
            let l = link.clone();
            tokio::spawn(async move { l.target().await })
        })
        .collect();
    tokio::task::yield_now().await;
    let refused = UpstreamError::Auth {
        target: "dc-01".into(),
        principal: "helpdesk".into(),
    };
    target.send(Target::Failed(refused.clone())).unwrap();
    for w in waiting {
        let e = w.await.unwrap().unwrap_err();
        assert_eq!(e.to_string(), refused.to_string());
    }
    // A channel opened later gets the same reason at once.
    assert!(
        link.target()
            .await
            .unwrap_err()
            .to_string()
            .contains("refused the session certificate")
    );
    // When the connection's task is gone, a waiting channel is not left hanging.
    let (gone, watched) = tokio::sync::watch::channel(Target::Connecting);
    let link = Link::new(
        guard.handle(),
        alice_admission(&config(dir.path(), &[])),
        Arc::new(FakeClient::default()),
        true,
        watched,
        Default::default(),
    );
    drop(gone);
    assert!(matches!(link.target().await, Err(UpstreamError::Gone)));
    guard.close(None).await;
}
