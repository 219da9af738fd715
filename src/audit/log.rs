//! The append side: [`Log`] signs, chains and writes records, then indexes them in the store.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine;
use serde_json::{Map, Value};
use tokio::sync::{Mutex, mpsc, oneshot};

use super::flood::{Budget, Suppressed, Verdict};
use super::{AuditError, AuditEvent, GENESIS, LOG_FILE, canonical, str_field};
use crate::crypto::SigningKey;
use crate::store::{AuditEntry, Store};

/// Records the log holds ahead of the store's index before further appends are refused.
const MAX_UNINDEXED: usize = 10_000;

struct Tail {
    file: Arc<File>,
    seq: u64,
    hash: String,
    /// Records in the file that the store has not indexed yet (it was busy or failing);
    /// indexed, in order, before the next record.
    unindexed: Vec<AuditEntry>,
}

/// The append side of the audit log. One writer per data directory.
pub struct Log {
    path: PathBuf,
    key: Arc<SigningKey>,
    store: Arc<dyn Store>,
    /// The file's tail; `None` when several nodes share the chain in the database.
    tail: Option<Arc<Mutex<Tail>>>,
    /// Several nodes share the chain in the database ([`Log::open_shared`]): this node's name.
    shared: Option<String>,
    /// The queue of this node's appends to the database's chain ([`Log::open_shared`]).
    writer: Option<mpsc::Sender<Queued>>,
    budget: Budget,
    /// Every record once it is appended, for those who act on them (ticket write-back).
    appended: tokio::sync::broadcast::Sender<Appended>,
}

/// A record just appended: who did what.
#[derive(Debug, Clone)]
pub struct Appended {
    pub actor: String,
    pub event: AuditEvent,
}

/// Records a slow subscriber may fall behind by before it misses some.
const APPENDED_BUFFER: usize = 4096;

impl std::fmt::Debug for Log {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Log").field("path", &self.path).finish()
    }
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
            tail: Some(Arc::new(Mutex::new(Tail {
                file: Arc::new(file),
                seq,
                hash,
                unindexed: Vec::new(),
            }))),
            shared: None,
            writer: None,
            budget: Budget::default(),
            appended: tokio::sync::broadcast::channel(APPENDED_BUFFER).0,
        })
    }

    /// The log of node `node` among several that share one chain in the database (PostgreSQL):
    /// the database orders the records (one sequence across nodes, each record chained to the
    /// one before it, whoever wrote it), each is signed by the node that wrote it and names it,
    /// and a record exists once its transaction commits. `data_dir` keeps no file of it;
    /// `jitgate audit export` writes the chain out.
    ///
    /// One writer task per node appends whatever is queued in one transaction, so a burst
    /// (hundreds of sessions ending at once) takes the chain's lock, and a pooled connection,
    /// once per batch rather than once per record. Call within a Tokio runtime.
    pub fn open_shared(
        data_dir: &Path,
        key: Arc<SigningKey>,
        store: Arc<dyn Store>,
        node: String,
    ) -> Self {
        let (tx, rx) = mpsc::channel(QUEUED_MAX);
        tokio::spawn(write_shared(store.clone(), key.clone(), node.clone(), rx));
        Self {
            tail: None,
            path: data_dir.join(LOG_FILE),
            key,
            store,
            shared: Some(node),
            writer: Some(tx),
            budget: Budget::default(),
            appended: tokio::sync::broadcast::channel(APPENDED_BUFFER).0,
        }
    }

    /// The node that writes this log, when several share its chain.
    pub fn node(&self) -> Option<&str> {
        self.shared.as_deref()
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
        let gone = |what: String| AuditError::Io {
            path: self.path.clone(),
            source: std::io::Error::other(format!("the audit writer failed: {what}")),
        };
        let r = match (&self.tail, &self.writer) {
            (Some(tail), _) => {
                let append = Append {
                    key: self.key.clone(),
                    store: self.store.clone(),
                    path: self.path.clone(),
                };
                tokio::spawn(append.run(tail.clone(), actor.to_string(), fields))
                    .await
                    .unwrap_or_else(|e| Err(gone(e.to_string())))
            }
            (None, Some(writer)) => {
                let (done, answer) = oneshot::channel();
                let queued = Queued {
                    actor: actor.to_string(),
                    fields,
                    done,
                };
                match writer.send(queued).await {
                    Ok(()) => answer
                        .await
                        .unwrap_or_else(|_| Err(gone("it stopped".into()))),
                    Err(_) => Err(gone("it stopped".into())),
                }
            }
            (None, None) => unreachable!("a log has a file or a shared chain"),
        };
        if r.is_ok() {
            // Nobody listening is fine.
            let _ = self.appended.send(Appended {
                actor: actor.to_string(),
                event,
            });
        }
        r
    }

    /// Records appended from now on (a subscriber that falls more than 4096 behind misses
    /// some, and is told how many).
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Appended> {
        self.appended.subscribe()
    }
}

impl Log {
    /// Append a refusal that anyone on the network can cause (`admission.denied`,
    /// `api.auth_denied`, `webhook.rejected`, `auth.refused`, `proxy.refused`) within the
    /// flood budget (see [`super::flood`]): returns its seq, or `None` when it was only
    /// counted. Other events are always recorded.
    pub async fn refusal(
        &self,
        actor: &str,
        source: std::net::IpAddr,
        event: AuditEvent,
    ) -> Result<Option<u64>, AuditError> {
        let kind = match &event {
            AuditEvent::AdmissionDenied { .. } => "admission.denied",
            AuditEvent::ApiAuthDenied { .. } => "api.auth_denied",
            AuditEvent::WebhookRejected { .. } => "webhook.rejected",
            AuditEvent::AuthRefused { .. } => "auth.refused",
            AuditEvent::ProxyRefused { .. } => "proxy.refused",
            _ => return self.record(actor, event).await.map(Some),
        };
        let (verdict, closed) = self.budget.check(kind, source);
        self.write_suppressed(closed).await?;
        match verdict {
            Verdict::Record => self.record(actor, event).await.map(Some),
            Verdict::Suppress => Ok(None),
        }
    }

    /// Write the summaries of counting windows that have closed (called periodically).
    pub async fn flush_suppressed(&self) -> Result<(), AuditError> {
        self.write_suppressed(self.budget.closed()).await
    }

    /// Close every counting window and write its summary (at shutdown).
    pub async fn close_suppressed(&self) -> Result<(), AuditError> {
        self.write_suppressed(self.budget.close_all()).await
    }

    async fn write_suppressed(&self, closed: Vec<Suppressed>) -> Result<(), AuditError> {
        for s in closed {
            tracing::warn!(
                kind = s.event,
                count = s.count,
                sources = s.sources,
                "refusals left out of the audit log (flood)"
            );
            self.record(
                "system",
                AuditEvent::RefusalsSuppressed {
                    kind: s.event.into(),
                    count: s.count,
                    sources: s.sources,
                    top: s.top,
                    from: s.from,
                    to: s.to,
                },
            )
            .await?;
        }
        Ok(())
    }
}

/// One append, owning what it needs so it can finish on its own.
struct Append {
    key: Arc<SigningKey>,
    store: Arc<dyn Store>,
    path: PathBuf,
}

impl Append {
    async fn run(
        self,
        tail: Arc<Mutex<Tail>>,
        actor: String,
        mut m: Map<String, Value>,
    ) -> Result<u64, AuditError> {
        let mut tail = tail.lock().await;
        if tail.unindexed.len() >= MAX_UNINDEXED {
            // Fail closed: whatever needs this record waits for the store to recover.
            return Err(AuditError::Store(crate::store::StoreError::Db(format!(
                "{} audit records are waiting to be indexed; the database is not accepting writes",
                tail.unindexed.len()
            ))));
        }
        let seq = tail.seq + 1;
        let ts = crate::types::rfc3339_millis(time::OffsetDateTime::now_utc());
        m.insert("seq".into(), Value::from(seq));
        m.insert("ts".into(), Value::from(ts.clone()));
        m.insert("actor".into(), Value::from(actor));
        m.insert("prev".into(), Value::from(tail.hash.clone()));
        let entry = seal(&self.key, seq, ts, m);
        let line = entry.record.clone();
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
        tracing::debug!(seq, event = %entry.event, "audit record written");
        // The record is in the log: the chain moves on whatever happens to the index, so that
        // a store failure can never make two records share a seq.
        tail.seq = seq;
        tail.hash = entry.hash.clone();
        tail.unindexed.push(entry);
        while let Some(entry) = tail.unindexed.first() {
            if let Err(e) = self.store.append_audit(entry).await {
                // Kept for the next append; the store's head lags the log meanwhile, which
                // `Log::open` accepts (the log may be ahead, never behind).
                tracing::error!(error = %e, pending = tail.unindexed.len(), "cannot index audit records; will retry with the next one");
                break;
            }
            tail.unindexed.remove(0);
        }
        Ok(seq)
    }
}

/// Appends a writer task may have waiting before `record` waits for room.
const QUEUED_MAX: usize = 10_000;
/// Records appended in one transaction at most.
const BATCH_MAX: usize = 256;

/// One append waiting for the shared chain's writer.
struct Queued {
    actor: String,
    fields: Map<String, Value>,
    done: oneshot::Sender<Result<u64, AuditError>>,
}

/// The shared chain's writer: appends what is queued, up to [`BATCH_MAX`] records per
/// transaction, each built under the head's lock from the record before it, signed by this
/// node and naming it. Every record of a batch that fails gets the error (none was written).
async fn write_shared(
    store: Arc<dyn Store>,
    key: Arc<SigningKey>,
    node: String,
    mut queue: mpsc::Receiver<Queued>,
) {
    let mut batch = Vec::with_capacity(BATCH_MAX);
    while queue.recv_many(&mut batch, BATCH_MAX).await > 0 {
        let mut answers = Vec::with_capacity(batch.len());
        let links: Vec<crate::store::ChainLink> = batch
            .drain(..)
            .map(
                |Queued {
                     actor,
                     mut fields,
                     done,
                 }| {
                    answers.push(done);
                    let (key, node) = (key.clone(), node.clone());
                    Box::new(move |prev_seq: u64, prev_hash: &str| {
                        let seq = prev_seq + 1;
                        let ts = crate::types::rfc3339_millis(time::OffsetDateTime::now_utc());
                        fields.insert("seq".into(), Value::from(seq));
                        fields.insert("ts".into(), Value::from(ts.clone()));
                        fields.insert("actor".into(), Value::from(actor));
                        fields.insert("node".into(), Value::from(node));
                        fields.insert("prev".into(), Value::from(prev_hash.to_string()));
                        seal(&key, seq, ts, fields)
                    }) as crate::store::ChainLink
                },
            )
            .collect();
        match store.append_chained(links).await {
            Ok(entries) => {
                tracing::debug!(records = entries.len(), "audit records written");
                for (e, done) in entries.iter().zip(answers) {
                    let _ = done.send(Ok(e.seq));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, records = answers.len(), "cannot append audit records");
                for done in answers {
                    let _ = done.send(Err(AuditError::Store(e.clone())));
                }
            }
        }
    }
}

/// Hash and sign `m` (which holds every field but `hash` and `sig`): the finished record.
fn seal(key: &SigningKey, seq: u64, ts: String, mut m: Map<String, Value>) -> AuditEntry {
    let hash_bytes = crate::crypto::sha256(&canonical(&m));
    let hash = hex::encode(hash_bytes);
    let sig = base64::engine::general_purpose::STANDARD.encode(key.sign(&hash_bytes));
    m.insert("hash".into(), Value::from(hash.clone()));
    m.insert("sig".into(), Value::from(sig));
    AuditEntry {
        seq,
        ts,
        event: str_field(&m, "event").unwrap_or_default(),
        hash,
        request: str_field(&m, "request"),
        grant: str_field(&m, "grant"),
        session: str_field(&m, "session"),
        record: serde_json::to_string(&m).expect("serializes"),
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
