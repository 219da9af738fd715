use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::crypto::SigningKey;
use crate::store::sqlite::SqliteStore;

const CONFIG: &str = r#"
[gateway]
public_name = "gw"
[[users]]
name = "alice"
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
allow = ["shell"]
max_ttl = "30m"
"#;

/// A registry over an in-memory store and an audit log in `dir`.
async fn registry(dir: &std::path::Path) -> (Arc<Registry>, Arc<dyn Store>) {
    let store: Arc<dyn Store> = Arc::new(SqliteStore::in_memory().unwrap());
    let (key, _) = SigningKey::generate();
    let audit = Arc::new(Log::open(dir, Arc::new(key), store.clone()).await.unwrap());
    let reg = Registry::new(
        CancellationToken::new(),
        store.clone(),
        audit,
        Arc::new(Metrics::new()),
        dir.join("recordings"),
        Duration::from_secs(60),
    );
    (reg, store)
}

/// A registry (see [`registry`]) and an admission to open sessions with; `dir` holds the
/// audit log and recordings.
async fn fixture(dir: &std::path::Path) -> (Arc<Registry>, Arc<dyn Store>, Admission) {
    let (reg, store) = registry(dir).await;
    let cfg = crate::config::Config::from_text(CONFIG, &dir.join("j.toml")).unwrap();
    (reg, store, Admission::for_test(&cfg))
}

/// What a gateway tells the registry about a new session.
fn new_session(protocol: TargetKind, source: &str) -> NewSession {
    NewSession {
        protocol,
        source: source.into(),
    }
}

/// The stored session once its end is recorded (waits up to 5 s).
async fn ended(store: &Arc<dyn Store>, id: &SessionId) -> SessionRecord {
    for _ in 0..500 {
        if let Some(s) = store.session(id).await.unwrap()
            && s.ended_at.is_some()
        {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the end of {id} was not recorded within 5 s");
}

/// The `session.ended` records of `session` once there is one (waits up to 5 s; the store's
/// end and the audit record are written one after the other).
async fn ended_records(store: &Arc<dyn Store>, session: &SessionId) -> Vec<serde_json::Value> {
    for _ in 0..500 {
        let found: Vec<serde_json::Value> = store
            .audit(&crate::store::AuditFilter {
                event: Some("session.ended".into()),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_iter()
            .map(|e| serde_json::from_str::<serde_json::Value>(&e.record).unwrap())
            .filter(|r| r["session"] == session.as_str())
            .collect();
        if !found.is_empty() {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Vec::new()
}

#[tokio::test]
async fn a_session_whose_guard_is_dropped_on_an_error_path_ends_once_with_a_cause() {
    let dir = tempfile::tempdir().unwrap();
    let (reg, store, admission) = fixture(dir.path()).await;
    let open = |source: &str| new_session(TargetKind::Https, source);

    // An error path that returns without ending the session: the drop ends it.
    let guard = reg.open(&admission, open("127.0.0.1:1")).await.unwrap();
    let id = guard.id().clone();
    drop(guard);
    let s = ended(&store, &id).await;
    assert_eq!(s.end_cause.as_deref(), Some("error"), "{s:?}");
    assert_eq!(ended_records(&store, &id).await.len(), 1);

    // A reason given before the drop is the one recorded, still exactly once.
    let guard = reg.open(&admission, open("127.0.0.1:2")).await.unwrap();
    let id = guard.id().clone();
    guard.end(Cause::Recording, "recording failed: disk full");
    drop(guard);
    let s = ended(&store, &id).await;
    assert_eq!(s.end_cause.as_deref(), Some("recording"), "{s:?}");
    assert_eq!(
        s.end_reason.as_deref(),
        Some("recording failed: disk full"),
        "{s:?}"
    );
    let ended = ended_records(&store, &id).await;
    assert_eq!(ended.len(), 1, "{ended:?}");

    // A session ended the normal way is not ended again by its drop.
    let guard = reg.open(&admission, open("127.0.0.1:3")).await.unwrap();
    let id = guard.id().clone();
    guard.close(None).await;
    drop(guard);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let ended = ended_records(&store, &id).await;
    assert_eq!(ended.len(), 1, "{ended:?}");
    assert_eq!(ended[0]["cause"], "client", "{}", ended[0]);
}

#[tokio::test]
async fn a_session_whose_task_panics_or_is_cancelled_ends_once_with_a_cause() {
    let dir = tempfile::tempdir().unwrap();
    let (reg, store, admission) = fixture(dir.path()).await;
    let open = || new_session(TargetKind::Ssh, "127.0.0.1:1");

    // The task serving the session panics: unwinding drops the guard.
    let guard = reg.open(&admission, open()).await.unwrap();
    let id = guard.id().clone();
    let served = tokio::spawn(async move {
        let _held = guard;
        panic!("a bug in the code serving the session");
    });
    assert!(served.await.unwrap_err().is_panic());
    let s = ended(&store, &id).await;
    assert_eq!(s.end_cause.as_deref(), Some("error"), "{s:?}");
    assert_eq!(ended_records(&store, &id).await.len(), 1);

    // The task is cancelled (aborted) while it waits: the drop ends the session too, keeping a
    // reason given before.
    let guard = reg.open(&admission, open()).await.unwrap();
    let id = guard.id().clone();
    let served = tokio::spawn(async move {
        guard.end(Cause::Target, "the connection to target dc-01 was lost");
        std::future::pending::<()>().await;
        drop(guard);
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    served.abort();
    assert!(served.await.unwrap_err().is_cancelled());
    let s = ended(&store, &id).await;
    assert_eq!(s.end_cause.as_deref(), Some("target"), "{s:?}");
    assert_eq!(ended_records(&store, &id).await.len(), 1);
}

/// Shutdown waits for an end being recorded by a task it does not track (the HTTPS gateway's
/// cut watcher closes the guard from its own task): the record is stored before it returns.
#[tokio::test]
async fn shutdown_waits_for_an_end_another_task_is_recording() {
    let dir = tempfile::tempdir().unwrap();
    let (reg, store, admission) = fixture(dir.path()).await;
    let guard = reg
        .open(&admission, new_session(TargetKind::Https, "127.0.0.1:1"))
        .await
        .unwrap();
    let id = guard.id().clone();
    let closing = tokio::spawn(async move {
        guard.close(None).await;
        guard
    });
    // Let the close claim the end and reach its file work.
    tokio::task::yield_now().await;
    reg.shutdown(Duration::from_secs(10)).await;
    let s = store.session(&id).await.unwrap().unwrap();
    assert!(
        s.ended_at.is_some(),
        "shutdown returned before the end was stored: {s:?}"
    );
    drop(closing.await.unwrap());
}
