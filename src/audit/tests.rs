use std::path::Path;
use std::sync::Arc;

use super::*;
use crate::crypto::SigningKey;
use crate::store::Store;
use crate::store::sqlite::SqliteStore;

async fn log_with(n: usize) -> (tempfile::TempDir, VerifyingKey, Arc<dyn Store>) {
    let dir = tempfile::tempdir().unwrap();
    let (key, _) = SigningKey::generate();
    let pubk = key.public();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::in_memory().unwrap());
    let log = Log::open(dir.path(), Arc::new(key), store.clone())
        .await
        .unwrap();
    for i in 0..n {
        log.record(
            "alice",
            AuditEvent::TicketOpened {
                ticket: format!("INC-{i}").parse().unwrap(),
                assignee: None,
                source: "local".into(),
            },
        )
        .await
        .unwrap();
    }
    (dir, pubk, store)
}

fn lines(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join(LOG_FILE))
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

fn write(dir: &Path, lines: &[String]) {
    std::fs::write(dir.join(LOG_FILE), lines.join("\n") + "\n").unwrap();
}

#[tokio::test]
async fn intact_log_verifies_with_head() {
    let (dir, key, store) = log_with(5).await;
    let head = store.audit_head().await.unwrap();
    let v = verify(&dir.path().join(LOG_FILE), &key, head).unwrap();
    assert!(v.ok, "{v:?}");
    assert_eq!(v.records, 5);
    assert!(v.head_checked);
}

#[tokio::test]
async fn tampering_is_caught_at_the_first_bad_record() {
    let (dir, key, store) = log_with(5).await;
    let head = store.audit_head().await.unwrap();
    let orig = lines(dir.path());
    let path = dir.path().join(LOG_FILE);

    let mut edited = orig.clone();
    edited[2] = edited[2].replace("INC-2", "INC-9");
    write(dir.path(), &edited);
    let v = verify(&path, &key, head.clone()).unwrap();
    assert_eq!(v.first_bad.unwrap().seq, Some(3));

    let mut deleted = orig.clone();
    deleted.remove(1);
    write(dir.path(), &deleted);
    let v = verify(&path, &key, head.clone()).unwrap();
    assert_eq!(v.first_bad.as_ref().unwrap().line, 2);
    assert!(!v.ok);

    let mut swapped = orig.clone();
    swapped.swap(1, 2);
    write(dir.path(), &swapped);
    let v = verify(&path, &key, head.clone()).unwrap();
    assert_eq!(v.first_bad.unwrap().line, 2);

    write(dir.path(), &orig[..4]);
    let v = verify(&path, &key, head.clone()).unwrap();
    let bad = v.first_bad.unwrap();
    assert_eq!(bad.seq, Some(5));
    assert!(bad.reason.contains("cut from the end"), "{bad:?}");

    let (other, _) = SigningKey::generate();
    write(dir.path(), &orig);
    let v = verify(&path, &other.public(), head).unwrap();
    assert!(v.first_bad.unwrap().reason.contains("signature"));
}

#[tokio::test]
async fn reopening_continues_the_chain_and_refuses_a_cut_log() {
    let (dir, key, store) = log_with(3).await;
    let (signer, _) = SigningKey::generate();
    // Re-open with the same store: continues at seq 4.
    let orig = lines(dir.path());
    write(dir.path(), &orig[..2]);
    let err = Log::open(dir.path(), Arc::new(signer), store.clone())
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            AuditError::HeadMismatch {
                log_seq: 2,
                db_seq: 3,
                ..
            }
        ),
        "{err}"
    );
    write(dir.path(), &orig);
    let _ = key;
}

#[tokio::test]
async fn the_stores_copy_verifies_and_a_head_behind_the_log_is_checked_where_it_points() {
    let (dir, key, store) = log_with(5).await;
    let v = verify_store(store.as_ref(), &key).await.unwrap();
    assert!(v.ok && v.head_checked, "{v:?}");
    assert_eq!(v.records, 5);
    // A head read before the last two records were appended (another node was writing).
    let third: serde_json::Value = serde_json::from_str(&lines(dir.path())[2]).unwrap();
    let hash = third["hash"].as_str().unwrap().to_string();
    let path = dir.path().join(LOG_FILE);
    let v = verify(&path, &key, Some((3, hash))).unwrap();
    assert!(v.ok && v.head_checked, "{v:?}");
    let v = verify(&path, &key, Some((3, "00".repeat(32)))).unwrap();
    let bad = v.first_bad.unwrap();
    assert_eq!(bad.seq, Some(3));
    assert!(bad.reason.contains("differs"), "{bad:?}");
}
