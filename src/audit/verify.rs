//! Offline verification of a log file: every record's hash and signature, the chain, and the
//! store's head when it is available.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;

use serde::Serialize;
use serde_json::{Map, Value};

use super::{GENESIS, check_record, str_field};
use crate::crypto::VerifyingKey;

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
