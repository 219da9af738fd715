//! The connection's state machine without a network: the login's factors and refusals, the one
//! check of channel requests, and the connection's task driven by hand (events as the handler
//! sends them, russh's end as a future the test finishes), with paused time for its waits.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use russh::keys::ssh_key::{self, PrivateKey};
use russh::server::Auth;
use russh::{ChannelId, MethodKind, Sig};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::bridge::{Command, Kind};
use super::conn::{Connection, Running, Socket};
use super::handler::{Event, PtyReq, Request, Verdict};
use super::link::Client;
use super::login::{Login, Step};
use super::requests::{ChannelState, decide};
use super::server::Gateway;
use super::{UserKeys, env_allowed, is_transfer_command, timing};
use crate::audit::Log;
use crate::config::Config;
use crate::crypto::SigningKey;
use crate::gateway::{Admit, Parts};
use crate::grant::Admission;
use crate::grant::admission::{AdmissionDenied, AdmitRequest};
use crate::metrics::Metrics;
use crate::session::{Cause, Registry};
use crate::store::sqlite::SqliteStore;
use crate::store::{AuditFilter, SessionFilter, Store};

const GOOD: &str = "jgt_good";

fn config(dir: &std::path::Path, alice_keys: &[String]) -> Config {
    let keys = alice_keys
        .iter()
        .map(|k| format!("{k:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    let text = format!(
        r#"
[gateway]
public_name = "gw"
login_timeout = "20s"
[[users]]
name = "alice"
roles = ["technician"]
ssh_keys = [{keys}]
[[users]]
name = "bob"
roles = ["technician"]
[[targets]]
name = "dc-01"
kind = "ssh"
address = "127.0.0.1:1"
host_key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPLS/fN5CcMLkyFXgymTgElYtx/VQk33mhW2ohI88KzN"
[[tasks]]
name = "reset-credential"
targets = ["dc-01"]
principal = "helpdesk"
allow = ["shell", "pty"]
max_ttl = "30m"
"#
    );
    Config::from_text(&text, &dir.join("jitgate.toml")).unwrap()
}

/// Admits `GOOD` for alice; refuses anything else, counting every check.
struct FakeAdmit {
    admission: Admission,
    checks: AtomicUsize,
}

#[async_trait::async_trait]
impl Admit for FakeAdmit {
    async fn admit(&self, r: AdmitRequest<'_>) -> Result<Admission, AdmissionDenied> {
        self.checks.fetch_add(1, Ordering::Relaxed);
        if r.token == GOOD && r.user == Some("alice") {
            Ok(self.admission.clone())
        } else {
            Err(AdmissionDenied {
                message: "token not recognised".into(),
                grant: None,
            })
        }
    }
}

/// The client side: what the connection said to it.
#[derive(Default)]
struct FakeClient {
    disconnects: Mutex<Vec<String>>,
}

#[async_trait::async_trait]
impl Client for FakeClient {
    async fn disconnect(&self, reason: String) {
        self.disconnects.lock().unwrap().push(reason);
    }

    async fn exit_signal(&self, _: ChannelId, _: Sig, _: bool, _: String) {}
}

fn key() -> PrivateKey {
    PrivateKey::random(&mut rand::rng(), ssh_key::Algorithm::Ed25519).unwrap()
}

fn line(k: &PrivateKey) -> String {
    k.public_key().to_openssh().unwrap()
}

fn alice_admission(cfg: &Config) -> Admission {
    Admission::for_test(cfg)
}

fn fake(cfg: &Config) -> FakeAdmit {
    FakeAdmit {
        admission: alice_admission(cfg),
        checks: AtomicUsize::new(0),
    }
}

fn is_reject(a: &Auth) -> bool {
    matches!(
        a,
        Auth::Reject {
            partial_success: false,
            ..
        }
    )
}

fn instructions(a: &Auth) -> String {
    match a {
        Auth::Partial { instructions, .. } => instructions.to_string(),
        other => panic!("not a prompt: {other:?}"),
    }
}

fn source() -> std::net::IpAddr {
    "127.0.0.1".parse().unwrap()
}

#[tokio::test]
async fn a_wrong_token_is_refused_at_the_prompt_with_its_reason_until_the_third_try() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &[]);
    let (admit, keys) = (fake(&cfg), UserKeys::new(&cfg.users));
    let mut login = Login::default();
    assert!(matches!(login.start_prompt(), Auth::Partial { .. }));
    for attempt in 1..=3 {
        let why = login
            .token(&admit, &keys, source(), "alice", "jgt_wrong")
            .await
            .unwrap_err();
        assert_eq!(why, "token not recognised");
        let answer = login.refused(&why, true);
        if attempt < 3 {
            assert_eq!(
                instructions(&answer),
                "[jitgate] refused: token not recognised"
            );
        } else {
            assert!(is_reject(&answer), "try {attempt}: {answer:?}");
        }
    }
    // Used up: even the right token is not checked any more.
    let (_, step) = login
        .token(&admit, &keys, source(), "alice", GOOD)
        .await
        .unwrap();
    assert!(
        matches!(step, Step::Answer(ref a) if is_reject(a)),
        "{step:?}"
    );
    assert!(is_reject(&login.start_prompt()));
    assert_eq!(admit.checks.load(Ordering::Relaxed), 3);
    // At the password prompt a refusal shows nothing.
    let fresh = Login::default();
    assert!(is_reject(&fresh.refused("token not recognised", false)));
}

#[tokio::test]
async fn a_user_without_registered_keys_is_let_in_by_the_token_alone_and_checked_once() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &[]);
    let (admit, keys) = (fake(&cfg), UserKeys::new(&cfg.users));
    let mut login = Login::default();
    let (admitted_now, step) = login
        .token(&admit, &keys, source(), "alice", GOOD)
        .await
        .unwrap();
    assert!(admitted_now);
    assert!(matches!(step, Step::Open(ref a) if a.user().name.as_str() == "alice"));
    let (admitted_now, _) = login
        .token(&admit, &keys, source(), "alice", GOOD)
        .await
        .unwrap();
    assert!(!admitted_now, "the token is checked once per connection");
    assert_eq!(admit.checks.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn a_user_with_registered_keys_needs_the_key_and_the_token_in_either_order() {
    let dir = tempfile::tempdir().unwrap();
    let k = key();
    let cfg = config(dir.path(), &[line(&k)]);
    let (admit, keys) = (fake(&cfg), UserKeys::new(&cfg.users));

    // Token first: the key is asked for, and the missing factor is noted for the audit.
    let mut login = Login::default();
    let (_, step) = login
        .token(&admit, &keys, source(), "alice", GOOD)
        .await
        .unwrap();
    match step {
        Step::Answer(Auth::Reject {
            proceed_with_methods: Some(m),
            partial_success: true,
        }) => assert!(m.contains(&MethodKind::PublicKey)),
        other => panic!("{other:?}"),
    }
    let missing = login.incomplete.clone().expect("noted");
    assert!(
        missing
            .reason
            .contains("requires public-key authentication"),
        "{missing:?}"
    );
    assert!(matches!(
        login.key_offered(&keys, "alice", k.public_key()),
        Auth::Accept
    ));
    assert!(matches!(
        login.key_verified(&keys, "alice", k.public_key()),
        Step::Open(_)
    ));

    // Key first: then the token opens the session.
    let mut login = Login::default();
    match login.key_verified(&keys, "alice", k.public_key()) {
        Step::Answer(Auth::Reject {
            proceed_with_methods: Some(m),
            partial_success: true,
        }) => assert!(m.contains(&MethodKind::KeyboardInteractive)),
        other => panic!("{other:?}"),
    }
    let (_, step) = login
        .token(&admit, &keys, source(), "alice", GOOD)
        .await
        .unwrap();
    assert!(matches!(step, Step::Open(_)), "{step:?}");
}

#[tokio::test]
async fn a_key_counts_only_for_the_user_it_is_registered_to_and_was_proven_as() {
    let dir = tempfile::tempdir().unwrap();
    let (alices, strangers) = (key(), key());
    let cfg = config(dir.path(), &[line(&alices)]);
    let (admit, keys) = (fake(&cfg), UserKeys::new(&cfg.users));
    let mut login = Login::default();
    // Someone else's key, or alice's key offered as bob: refused, with what is left to try.
    match login.key_offered(&keys, "alice", strangers.public_key()) {
        Auth::Reject {
            proceed_with_methods: Some(m),
            partial_success: false,
        } => assert!(m.contains(&MethodKind::PublicKey)),
        other => panic!("{other:?}"),
    }
    match login.key_offered(&keys, "bob", alices.public_key()) {
        Auth::Reject {
            proceed_with_methods: Some(m),
            partial_success: false,
        } => assert!(m.contains(&MethodKind::Password)),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        login.key_verified(&keys, "bob", alices.public_key()),
        Step::Answer(ref a) if is_reject(a)
    ));
    // Proven as alice, the key does not stand in for a token presented as someone else.
    let _ = login.key_verified(&keys, "alice", alices.public_key());
    let why = login
        .token(&admit, &keys, source(), "bob", GOOD)
        .await
        .unwrap_err();
    assert_eq!(why, "token not recognised");
}

#[tokio::test]
async fn a_session_that_cannot_be_opened_shows_why_and_ends_the_tries() {
    let mut login = Login::default();
    let shown = login.open_failed("cannot create the recording folder", true);
    assert_eq!(
        instructions(&shown),
        "[jitgate] refused: cannot create the recording folder"
    );
    assert!(is_reject(&login.start_prompt()));
    assert!(is_reject(
        &Login::default().open_failed("cannot create the recording folder", false)
    ));
}

/// A channel's state and the commands its pump would get.
fn channel() -> (ChannelState, mpsc::UnboundedReceiver<Box<Command>>) {
    let (tx, rx) = mpsc::unbounded_channel();
    (ChannelState::new(tx), rx)
}

fn env(name: &str) -> Request {
    Request::Env {
        name: name.into(),
        value: "x".into(),
    }
}

#[test]
fn channel_requests_are_checked_once_and_become_the_pumps_commands() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &[]);
    let task = &cfg.tasks[0];
    let (mut ch, mut commands) = channel();
    let pty = PtyReq {
        term: "xterm".into(),
        cols: 80,
        rows: 24,
        pw: 0,
        ph: 0,
        modes: Vec::new(),
    };
    assert_eq!(
        decide(task, Some(&mut ch), Request::Pty(pty)),
        Verdict::Allow
    );
    assert_eq!(decide(task, Some(&mut ch), env("TERM")), Verdict::Allow);
    // Not passed through, and not worth a message: clients send these unasked.
    assert_eq!(
        decide(task, Some(&mut ch), env("LD_PRELOAD")),
        Verdict::Refuse {
            why: "environment variable LD_PRELOAD is not passed through".into(),
            quiet: true
        }
    );
    assert_eq!(decide(task, Some(&mut ch), Request::Shell), Verdict::Allow);
    // One program per channel.
    assert!(matches!(
        decide(task, Some(&mut ch), Request::Shell),
        Verdict::Refuse { quiet: false, .. }
    ));
    let mut next = || commands.try_recv().map(|c| *c);
    assert!(matches!(next(), Ok(Command::Pty(p)) if p.term == "xterm"));
    assert!(matches!(next(), Ok(Command::Env(k, _)) if k == "TERM"));
    assert!(matches!(next(), Ok(Command::Start(Kind::Shell))));
    assert!(next().is_err(), "refusals reach no pump");
}

#[test]
fn refused_programs_end_their_channel_with_the_reason_and_x11_is_never_passed() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &[]);
    let task = &cfg.tasks[0];
    let (mut ch, mut commands) = channel();
    assert_eq!(
        decide(task, Some(&mut ch), Request::Exec(b"ls".to_vec())),
        Verdict::RefuseAndEnd("task reset-credential does not allow running commands".into())
    );
    assert_eq!(
        decide(task, Some(&mut ch), Request::Subsystem("sftp".into())),
        Verdict::RefuseAndEnd(
            "task reset-credential does not allow file transfer (sftp, scp)".into()
        )
    );
    assert_eq!(
        decide(task, Some(&mut ch), Request::X11),
        Verdict::Refuse {
            why: "X11 forwarding is not available through jitgate".into(),
            quiet: false
        }
    );
    assert!(matches!(
        decide(task, None, Request::Shell),
        Verdict::Refuse { ref why, .. } if why == "no such channel"
    ));
    assert!(commands.try_recv().is_err());
}

#[test]
fn at_most_32_environment_variables_reach_the_target_per_channel() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &[]);
    let (mut ch, mut commands) = channel();
    for i in 0..40 {
        let v = decide(&cfg.tasks[0], Some(&mut ch), env(&format!("LC_{i}")));
        assert_eq!(v, Verdict::Allow, "acknowledged, as OpenSSH expects");
    }
    let mut passed = 0;
    while commands.try_recv().is_ok() {
        passed += 1;
    }
    assert_eq!(passed, 32);
}

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

#[test]
fn transfer_commands_are_recognised() {
    assert!(is_transfer_command(b"scp -t /tmp"));
    assert!(is_transfer_command(
        b"rsync --server -vlogDtpre.iLsfxCIvu . /tmp/x"
    ));
    assert!(is_transfer_command(b"/usr/bin/scp -f x"));
    assert!(!is_transfer_command(b"ls -l"));
    assert!(!is_transfer_command(b"echo scp"));
}

#[test]
fn env_allow_list() {
    assert!(env_allowed("TERM"));
    assert!(env_allowed("LC_ALL"));
    assert!(!env_allowed("LD_PRELOAD"));
    assert!(!env_allowed("PATH"));
}

#[tokio::test]
async fn a_target_failure_reaches_every_channel_waiting_for_it_with_its_reason() {
    use super::link::{Link, Target};
    use super::upstream::UpstreamError;
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
    );
    drop(gone);
    assert!(matches!(link.target().await, Err(UpstreamError::Gone)));
    guard.close(None).await;
}
