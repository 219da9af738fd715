//! The audit log: typed [`AuditEvent`]s appended to a hash-chained, Ed25519-signed JSONL file and
//! indexed in the store, and [`verify`] which checks a log offline.
//!
//! Each line is one JSON object with `seq`, `ts`, `event`, `actor`, the event's fields, `prev`
//! (the previous record's hash), `hash` (SHA-256 over the canonical JSON of every other field) and
//! `sig` (Ed25519 over the hash bytes, base64). The store keeps the last `(seq, hash)` so that a
//! cut tail is caught too.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine;
use serde::Serialize;
use serde_json::{Map, Value};
use tokio::sync::Mutex;

use crate::crypto::{SigningKey, VerifyingKey};
use crate::store::{AuditEntry, Store, StoreError};
use crate::types::{
    GrantId, RequestId, SessionId, TargetName, TaskName, TicketRef, Ttl, UnixTime, UserName,
};

/// File name of the log inside the data directory.
pub const LOG_FILE: &str = "audit.jsonl";
/// `prev` of the first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Everything the audit log records. Field names are part of the contract.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event")]
pub enum AuditEvent {
    #[serde(rename = "config.loaded")]
    ConfigLoaded {
        file: String,
        sha256: String,
        users: usize,
        targets: usize,
        tasks: usize,
        policies: usize,
        record_terminal: bool,
    },
    #[serde(rename = "request.created")]
    RequestCreated {
        request: RequestId,
        task: TaskName,
        target: TargetName,
        ticket: TicketRef,
        ttl: Ttl,
        reason: String,
        required_approvals: u32,
    },
    #[serde(rename = "request.denied")]
    RequestDenied {
        request: RequestId,
        task: String,
        target: String,
        ticket: String,
        reason: String,
    },
    #[serde(rename = "request.approved")]
    RequestApproved {
        request: RequestId,
        approvals: u32,
        required_approvals: u32,
        comment: Option<String>,
    },
    #[serde(rename = "approval.refused")]
    ApprovalRefused { request: RequestId, reason: String },
    #[serde(rename = "request.rejected")]
    RequestRejected { request: RequestId, reason: String },
    #[serde(rename = "request.expired")]
    RequestExpired { request: RequestId, reason: String },
    #[serde(rename = "grant.issued")]
    GrantIssued {
        grant: GrantId,
        request: RequestId,
        requester: UserName,
        task: TaskName,
        target: TargetName,
        ticket: TicketRef,
        approvers: Vec<UserName>,
        expires_at: String,
    },
    #[serde(rename = "grant.token_fetched")]
    GrantTokenFetched { grant: GrantId, request: RequestId },
    #[serde(rename = "grant.revoked")]
    GrantRevoked {
        grant: GrantId,
        request: RequestId,
        reason: String,
    },
    #[serde(rename = "grant.expired")]
    GrantExpired { grant: GrantId, request: RequestId },
    #[serde(rename = "grant.completed")]
    GrantCompleted { grant: GrantId, request: RequestId },
    #[serde(rename = "ticket.opened")]
    TicketOpened {
        ticket: TicketRef,
        assignee: Option<UserName>,
        source: String,
    },
    #[serde(rename = "ticket.reassigned")]
    TicketReassigned {
        ticket: TicketRef,
        from: Option<UserName>,
        to: Option<UserName>,
        source: String,
    },
    #[serde(rename = "ticket.closed")]
    TicketClosed { ticket: TicketRef, source: String },
    #[serde(rename = "webhook.rejected")]
    WebhookRejected {
        provider: String,
        source: String,
        reason: String,
    },
    #[serde(rename = "api.auth_denied")]
    ApiAuthDenied {
        source: String,
        path: String,
        reason: String,
    },
    #[serde(rename = "session.started")]
    SessionStarted {
        session: SessionId,
        grant: GrantId,
        request: RequestId,
        protocol: String,
        user: UserName,
        vendor: Option<String>,
        task: TaskName,
        target: TargetName,
        ticket: TicketRef,
        principal: Option<String>,
        source: String,
    },
    #[serde(rename = "session.ended")]
    SessionEnded {
        session: SessionId,
        grant: GrantId,
        request: RequestId,
        cause: String,
        reason: String,
        duration_ms: u64,
        bytes_in: u64,
        bytes_out: u64,
        recording: Vec<crate::store::RecordedFile>,
        kill_latency_ms: Option<u64>,
    },
    #[serde(rename = "target.refused")]
    TargetRefused {
        session: SessionId,
        target: TargetName,
        reason: String,
    },
    #[serde(rename = "break_glass.activated")]
    BreakGlassActivated {
        request: RequestId,
        grant: GrantId,
        user: UserName,
        target: TargetName,
        task: TaskName,
        ticket: TicketRef,
        reason: String,
        review: String,
        expires_at: String,
    },
    #[serde(rename = "break_glass.denied")]
    BreakGlassDenied {
        user: UserName,
        target: String,
        reason: String,
    },
    #[serde(rename = "break_glass.alert_failed")]
    BreakGlassAlertFailed { review: String, reason: String },
    #[serde(rename = "review.completed")]
    ReviewCompleted {
        review: String,
        user: UserName,
        grant: GrantId,
        notes: String,
    },
    #[serde(rename = "admission.denied")]
    AdmissionDenied {
        user: String,
        protocol: String,
        source: String,
        grant: Option<GrantId>,
        reason: String,
    },
}

impl AuditEvent {
    /// The `event` name.
    pub fn name(&self) -> String {
        match serde_json::to_value(self) {
            Ok(Value::Object(m)) => m
                .get("event")
                .and_then(Value::as_str)
                .unwrap_or("unknown")
                .to_string(),
            _ => "unknown".into(),
        }
    }
}

/// Failures writing or verifying the log.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("cannot write the audit log {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("audit index: {0}")]
    Store(#[from] StoreError),
    #[error(
        "the audit log {path} does not match the database (log ends at seq {log_seq}, database at seq {db_seq}); run `jitgate audit verify` and investigate before serving"
    )]
    HeadMismatch {
        path: PathBuf,
        log_seq: u64,
        db_seq: u64,
    },
    #[error("the audit log {path} is damaged at line {line}: {reason}; run `jitgate audit verify`")]
    Damaged {
        path: PathBuf,
        line: usize,
        reason: String,
    },
}

struct Tail {
    file: Arc<File>,
    seq: u64,
    hash: String,
}

/// The append side of the audit log. One writer per data directory.
pub struct Log {
    path: PathBuf,
    key: Arc<SigningKey>,
    store: Arc<dyn Store>,
    tail: Arc<Mutex<Tail>>,
}

impl std::fmt::Debug for Log {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Log").field("path", &self.path).finish()
    }
}

/// Check one record on its own: its `hash` is the SHA-256 of its canonical form and its `sig`
/// is `key`'s signature over those hash bytes. Returns the hash.
pub fn check_record(m: &Map<String, Value>, key: &VerifyingKey) -> Result<[u8; 32], &'static str> {
    let computed = crate::crypto::sha256(&canonical(m));
    if str_field(m, "hash").as_deref() != Some(hex::encode(computed).as_str()) {
        return Err("hash does not match the record's contents: the record was edited");
    }
    let sig_ok = str_field(m, "sig")
        .and_then(|s| base64::engine::general_purpose::STANDARD.decode(s).ok())
        .is_some_and(|sig| key.verify(&computed, &sig));
    if !sig_ok {
        return Err("signature is not valid for the audit public key");
    }
    Ok(computed)
}

/// Canonical bytes of a record for hashing: every field but `hash` and `sig`, keys sorted.
fn canonical(record: &Map<String, Value>) -> Vec<u8> {
    let mut m = record.clone();
    m.remove("hash");
    m.remove("sig");
    // serde_json's Map is ordered by key, so this is canonical.
    serde_json::to_vec(&Value::Object(m)).expect("JSON values serialize")
}

fn str_field(m: &Map<String, Value>, k: &str) -> Option<String> {
    m.get(k).and_then(Value::as_str).map(str::to_string)
}

impl Log {
    /// Open the log in `data_dir`, checking that its last record agrees with the store's head.
    pub async fn open(
        data_dir: &Path,
        key: Arc<SigningKey>,
        store: Arc<dyn Store>,
    ) -> Result<Self, AuditError> {
        let path = data_dir.join(LOG_FILE);
        let io = |source| AuditError::Io {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(data_dir).map_err(io)?;
        let (seq, hash) = last_record(&path)?;
        let head = store.audit_head().await?;
        if let Some((db_seq, db_hash)) = &head {
            // The log may be one record ahead (crash between the file write and the index
            // write); it may never be behind or different.
            if seq < *db_seq || (seq == *db_seq && &hash != db_hash) {
                return Err(AuditError::HeadMismatch {
                    path,
                    log_seq: seq,
                    db_seq: *db_seq,
                });
            }
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io)?;
        Ok(Self {
            path,
            key,
            store,
            tail: Arc::new(Mutex::new(Tail {
                file: Arc::new(file),
                seq,
                hash,
            })),
        })
    }

    /// Path of the JSONL file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Append one event by `actor` (a user name, `system`, or a ticket source); returns its seq.
    ///
    /// The append runs as its own task, so a caller that gives up (a dropped request) never
    /// leaves a record half done: in the file but not the index, or the chain's tail behind.
    /// The file write and fsync run on the blocking pool, off the gateway's worker threads.
    pub async fn record(&self, actor: &str, event: AuditEvent) -> Result<u64, AuditError> {
        let Value::Object(fields) = serde_json::to_value(&event).expect("events serialize") else {
            unreachable!("events are structs")
        };
        let append = Append {
            tail: self.tail.clone(),
            key: self.key.clone(),
            store: self.store.clone(),
            path: self.path.clone(),
        };
        match tokio::spawn(append.run(actor.to_string(), fields)).await {
            Ok(r) => r,
            Err(e) => Err(AuditError::Io {
                path: self.path.clone(),
                source: std::io::Error::other(format!("the audit writer failed: {e}")),
            }),
        }
    }
}

/// One append, owning what it needs so it can finish on its own.
struct Append {
    tail: Arc<Mutex<Tail>>,
    key: Arc<SigningKey>,
    store: Arc<dyn Store>,
    path: PathBuf,
}

impl Append {
    async fn run(self, actor: String, mut m: Map<String, Value>) -> Result<u64, AuditError> {
        let mut tail = self.tail.lock().await;
        let seq = tail.seq + 1;
        let ts = crate::types::rfc3339_millis(time::OffsetDateTime::now_utc());
        m.insert("seq".into(), Value::from(seq));
        m.insert("ts".into(), Value::from(ts.clone()));
        m.insert("actor".into(), Value::from(actor));
        m.insert("prev".into(), Value::from(tail.hash.clone()));
        let hash_bytes = crate::crypto::sha256(&canonical(&m));
        let hash = hex::encode(hash_bytes);
        let sig = base64::engine::general_purpose::STANDARD.encode(self.key.sign(&hash_bytes));
        m.insert("hash".into(), Value::from(hash.clone()));
        m.insert("sig".into(), Value::from(sig));
        let line = serde_json::to_string(&m).expect("serializes");
        let file = tail.file.clone();
        let bytes = format!("{line}\n").into_bytes();
        tokio::task::spawn_blocking(move || {
            let mut f: &File = &file;
            f.write_all(&bytes)?;
            f.sync_data()
        })
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())))
        .map_err(|source| AuditError::Io {
            path: self.path.clone(),
            source,
        })?;
        let event = str_field(&m, "event").unwrap_or_default();
        tracing::debug!(seq, event = %event, "audit record written");
        self.store
            .append_audit(&AuditEntry {
                seq,
                ts,
                event,
                hash: hash.clone(),
                request: str_field(&m, "request"),
                grant: str_field(&m, "grant"),
                session: str_field(&m, "session"),
                record: line,
            })
            .await?;
        tail.seq = seq;
        tail.hash = hash;
        Ok(seq)
    }
}

/// The last record's `(seq, hash)`, or `(0, GENESIS)` for an empty or missing log.
fn last_record(path: &Path) -> Result<(u64, String), AuditError> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((0, GENESIS.into())),
        Err(source) => {
            return Err(AuditError::Io {
                path: path.into(),
                source,
            });
        }
    };
    let mut last = (0, GENESIS.to_string());
    for (i, line) in BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|source| AuditError::Io {
            path: path.into(),
            source,
        })?;
        if line.trim().is_empty() {
            continue;
        }
        let v: Map<String, Value> =
            serde_json::from_str(&line).map_err(|e| AuditError::Damaged {
                path: path.into(),
                line: i + 1,
                reason: e.to_string(),
            })?;
        last = (
            v.get("seq").and_then(Value::as_u64).unwrap_or(0),
            str_field(&v, "hash").unwrap_or_default(),
        );
    }
    Ok(last)
}

/// Outcome of verifying a log.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Verification {
    pub ok: bool,
    pub records: u64,
    /// The first bad record: its line and seq, and what is wrong.
    pub first_bad: Option<BadRecord>,
    pub head_checked: bool,
}

/// The first record that fails verification.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct BadRecord {
    pub line: usize,
    pub seq: Option<u64>,
    pub reason: String,
}

/// Verify the log at `path` with `key`; `head` is the store's last `(seq, hash)` when available,
/// which catches a cut tail.
pub fn verify(
    path: &Path,
    key: &VerifyingKey,
    head: Option<(u64, String)>,
) -> std::io::Result<Verification> {
    let file = File::open(path)?;
    let mut prev = GENESIS.to_string();
    let mut count = 0u64;
    let bad = |line: usize, seq: Option<u64>, reason: String, count: u64| Verification {
        ok: false,
        records: count,
        first_bad: Some(BadRecord { line, seq, reason }),
        head_checked: false,
    };
    let mut lineno = 0;
    for (expect_seq, line) in (1u64..).zip(BufReader::new(file).lines()) {
        let line = line?;
        lineno += 1;
        if line.trim().is_empty() {
            return Ok(bad(lineno, None, "blank line".into(), count));
        }
        let m: Map<String, Value> = match serde_json::from_str(&line) {
            Ok(m) => m,
            Err(e) => return Ok(bad(lineno, None, format!("not a JSON object: {e}"), count)),
        };
        let seq = m.get("seq").and_then(Value::as_u64);
        if seq != Some(expect_seq) {
            return Ok(bad(
                lineno,
                seq,
                format!(
                    "expected seq {expect_seq}, found {}: a record was deleted, inserted or moved",
                    seq.map_or("none".into(), |s| s.to_string())
                ),
                count,
            ));
        }
        if str_field(&m, "prev").as_deref() != Some(prev.as_str()) {
            return Ok(bad(
                lineno,
                seq,
                "prev does not match the previous record's hash: the chain is broken".into(),
                count,
            ));
        }
        let computed = match check_record(&m, key) {
            Ok(hash) => hex::encode(hash),
            Err(why) => return Ok(bad(lineno, seq, why.into(), count)),
        };
        prev = computed;
        count += 1;
    }
    let mut head_checked = false;
    if let Some((head_seq, head_hash)) = head {
        head_checked = true;
        if count < head_seq {
            return Ok(bad(
                lineno + 1,
                Some(count + 1),
                format!(
                    "the log ends at seq {count} but the database recorded seq {head_seq}: records were cut from the end"
                ),
                count,
            ));
        }
        if count == head_seq && prev != head_hash {
            return Ok(bad(
                lineno,
                Some(count),
                "the last record's hash differs from the one the database recorded".into(),
                count,
            ));
        }
    }
    Ok(Verification {
        ok: true,
        records: count,
        first_bad: None,
        head_checked,
    })
}

/// Convenience: the unix time of now as RFC 3339 for event fields.
pub fn at(t: UnixTime) -> String {
    crate::types::rfc3339(t)
}

#[cfg(test)]
mod tests {
    use super::*;
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
}
