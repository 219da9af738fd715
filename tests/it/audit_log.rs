//! `jitgate audit verify` on a real log: an intact log passes; an edited, deleted, swapped or
//! cut record fails with exit 1 and names the first bad line and seq.

use std::fs;

use serde_json::Value;

use crate::flows::granted;
use crate::harness::{Gateway, Opts};

/// Write `lines` as the log, run `audit verify` (human and `--json`), expect it to name `line`
/// and `seq`; then restore `pristine`.
fn assert_caught(
    gw: &Gateway,
    what: &str,
    lines: &[String],
    line: usize,
    seq: u64,
    pristine: &str,
) {
    let mut text = lines.join("\n");
    text.push('\n');
    fs::write(gw.audit_log(), text).unwrap();

    let (code, out, err) = gw.run(&["audit", "verify"], &[]);
    assert_eq!(code, 1, "{what} record not caught: {out} {err}");
    let said = format!("{out}{err}");
    assert!(
        said.contains(&format!("line {line}")) && said.contains(&format!("seq {seq}")),
        "{what}: expected line {line} (seq {seq}) to be named, got: {said}"
    );
    assert!(said.contains("NOT intact"), "{what}: {said}");

    let (code, out, err) = gw.run(&["--json", "audit", "verify"], &[]);
    assert_eq!(code, 1, "{what} (--json): {out} {err}");
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|_| panic!("not JSON: {out}"));
    assert_eq!(v["ok"], false, "{v}");
    assert_eq!(v["first_bad"]["line"], line, "{what}: {v}");
    assert_eq!(v["first_bad"]["seq"], seq, "{what}: {v}");
    assert!(
        v["first_bad"]["reason"]
            .as_str()
            .is_some_and(|r| !r.is_empty()),
        "{v}"
    );

    fs::write(gw.audit_log(), pristine).unwrap();
}

#[tokio::test]
async fn audit_verify_catches_edited_deleted_swapped_and_truncated_records() {
    let mut gw = Gateway::start(Opts::default());
    granted(&gw, "alice", "INC-30");
    let (code, _, err) = gw.cli("admin", &["ticket", "close", "INC-30"]);
    assert_eq!(code, 0, "{err}");
    assert!(gw.stop(), "the gateway did not stop on SIGTERM");

    let pristine = fs::read_to_string(gw.audit_log()).expect("data/audit.jsonl");
    let lines: Vec<String> = pristine.lines().map(str::to_string).collect();
    // config.loaded, ticket.opened, request.created, request.approved, grant.issued,
    // grant.token_fetched, ticket.closed, grant.revoked.
    assert!(lines.len() >= 8, "too few records: {pristine}");
    for (i, l) in lines.iter().enumerate() {
        let v: Value = serde_json::from_str(l).expect("each line is JSON");
        assert_eq!(v["seq"], i as u64 + 1, "{l}");
        for k in ["ts", "event", "actor", "prev", "hash", "sig"] {
            assert!(!v[k].is_null(), "record {} lacks {k}: {l}", i + 1);
        }
    }

    let (code, out, err) = gw.run(&["audit", "verify"], &[]);
    assert_eq!(code, 0, "intact log refused: {out} {err}");
    assert!(out.contains("ok"), "{out}");
    let (code, out, _) = gw.run(&["--json", "audit", "verify"], &[]);
    assert_eq!(code, 0);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["records"], lines.len(), "{v}");
    assert_eq!(v["head_checked"], true, "{v}");

    // Edited: the ticket's assignee rewritten in place.
    let idx = lines
        .iter()
        .position(|l| l.contains("\"ticket.opened\""))
        .expect("ticket.opened record");
    let mut edited = lines.clone();
    assert!(edited[idx].contains("\"alice\""), "{}", edited[idx]);
    edited[idx] = edited[idx].replace("\"alice\"", "\"dave\"");
    assert_caught(&gw, "edited", &edited, idx + 1, idx as u64 + 1, &pristine);

    // Deleted: record 3 removed; line 3 now holds seq 4.
    let mut deleted = lines.clone();
    deleted.remove(2);
    assert_caught(&gw, "deleted", &deleted, 3, 4, &pristine);

    // Swapped: records 3 and 4 change places.
    let mut swapped = lines.clone();
    swapped.swap(2, 3);
    assert_caught(&gw, "swapped", &swapped, 3, 4, &pristine);

    // Truncated: the last record cut; only the database's head can tell.
    let n = lines.len();
    let truncated = lines[..n - 1].to_vec();
    assert_caught(&gw, "truncated", &truncated, n, n as u64, &pristine);
    let truncated = lines[..n - 3].to_vec();
    assert_caught(
        &gw,
        "truncated by three",
        &truncated,
        n - 2,
        n as u64 - 2,
        &pristine,
    );

    // Edited last record (no successor to break): the hash and the database's head catch it.
    let mut last = lines.clone();
    last[n - 1] = last[n - 1].replacen("\"actor\":\"", "\"actor\":\"x", 1);
    assert_ne!(
        last[n - 1],
        lines[n - 1],
        "nothing to edit in {}",
        lines[n - 1]
    );
    assert_caught(&gw, "edited last", &last, n, n as u64, &pristine);

    // Restored: intact again.
    let (code, out, err) = gw.run(&["audit", "verify"], &[]);
    assert_eq!(code, 0, "restored log refused: {out} {err}");
}
