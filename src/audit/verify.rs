//! Verification of a log: every record's hash and signature, the chain, and the store's head
//! when it is available. A file (offline) and the store's copy (several nodes) go through the
//! same `Chain`.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;

use serde::Serialize;
use serde_json::{Map, Value};

use super::{GENESIS, check_record, str_field};
use crate::crypto::VerifyingKey;
use crate::store::{AuditFilter, Store, StoreError};

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

/// A log read one record at a time, in order.
struct Chain<'k> {
    key: &'k VerifyingKey,
    /// The store's last `(seq, hash)`, read before the records: a log may have grown since,
    /// never shrunk.
    head: Option<(u64, String)>,
    prev: String,
    count: u64,
    line: usize,
    /// The hash of the record at the head's seq, once passed.
    at_head: Option<String>,
    bad: Option<BadRecord>,
}

impl<'k> Chain<'k> {
    fn new(key: &'k VerifyingKey, head: Option<(u64, String)>) -> Self {
        Self {
            key,
            head,
            prev: GENESIS.to_string(),
            count: 0,
            line: 0,
            at_head: None,
            bad: None,
        }
    }

    /// Check the next record; false once one is bad (the rest is not read).
    fn push(&mut self, text: &str) -> bool {
        if self.bad.is_some() {
            return false;
        }
        self.line += 1;
        let expect_seq = self.count + 1;
        let fail = |me: &mut Self, seq: Option<u64>, reason: String| {
            me.bad = Some(BadRecord {
                line: me.line,
                seq,
                reason,
            });
            false
        };
        if text.trim().is_empty() {
            return fail(self, None, "blank line".into());
        }
        let m: Map<String, Value> = match serde_json::from_str(text) {
            Ok(m) => m,
            Err(e) => return fail(self, None, format!("not a JSON object: {e}")),
        };
        let seq = m.get("seq").and_then(Value::as_u64);
        if seq != Some(expect_seq) {
            let found = seq.map_or("none".into(), |s| s.to_string());
            return fail(
                self,
                seq,
                format!(
                    "expected seq {expect_seq}, found {found}: a record was deleted, inserted or moved"
                ),
            );
        }
        if str_field(&m, "prev").as_deref() != Some(self.prev.as_str()) {
            return fail(
                self,
                seq,
                "prev does not match the previous record's hash: the chain is broken".into(),
            );
        }
        match check_record(&m, self.key) {
            Ok(hash) => self.prev = hex::encode(hash),
            Err(why) => return fail(self, seq, why.into()),
        }
        self.count += 1;
        if self.head.as_ref().is_some_and(|(s, _)| *s == self.count) {
            self.at_head = Some(self.prev.clone());
        }
        true
    }

    /// The verdict, once every record has been pushed.
    fn end(self) -> Verification {
        let (records, line) = (self.count, self.line);
        let bad = |line: usize, seq: Option<u64>, reason: String| Verification {
            ok: false,
            records,
            first_bad: Some(BadRecord { line, seq, reason }),
            head_checked: false,
        };
        if let Some(b) = self.bad {
            return bad(b.line, b.seq, b.reason);
        }
        let Some((head_seq, head_hash)) = self.head else {
            return Verification {
                ok: true,
                records,
                first_bad: None,
                head_checked: false,
            };
        };
        if records < head_seq {
            return bad(
                line + 1,
                Some(records + 1),
                format!(
                    "the log ends at seq {records} but the database recorded seq {head_seq}: records were cut from the end"
                ),
            );
        }
        if self.at_head.as_deref() != Some(head_hash.as_str()) {
            return bad(
                head_seq as usize,
                Some(head_seq),
                format!(
                    "the hash of record {head_seq} differs from the one the database recorded as the log's end"
                ),
            );
        }
        Verification {
            ok: true,
            records,
            first_bad: None,
            head_checked: true,
        }
    }
}

/// Verify the log at `path` with `key`; `head` is the store's last `(seq, hash)` when available,
/// which catches a cut tail.
pub fn verify(
    path: &Path,
    key: &VerifyingKey,
    head: Option<(u64, String)>,
) -> std::io::Result<Verification> {
    let mut chain = Chain::new(key, head);
    for line in BufReader::new(File::open(path)?).lines() {
        if !chain.push(&line?) {
            break;
        }
    }
    Ok(chain.end())
}

/// Records read from the store per query while verifying its copy.
const PAGE: u32 = 5_000;

/// Verify the chain the store holds (several nodes write one chain to the database), against
/// the head read first. A record's `line` is its place in the chain.
pub async fn verify_store(
    store: &dyn Store,
    key: &VerifyingKey,
) -> Result<Verification, StoreError> {
    let head = store.audit_head().await?;
    let mut chain = Chain::new(key, head);
    let mut after = 0u64;
    'pages: loop {
        let page = store
            .audit(&AuditFilter {
                after_seq: Some(after),
                limit: Some(PAGE),
                ..Default::default()
            })
            .await?;
        let Some(last) = page.last() else { break };
        after = last.seq;
        for e in &page {
            if !chain.push(&e.record) {
                break 'pages;
            }
        }
        if page.len() < PAGE as usize {
            break;
        }
    }
    Ok(chain.end())
}
