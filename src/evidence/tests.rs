//! Export a bundle from a real audit log and store, then tamper with it every way a reviewer
//! must catch.

use std::sync::Arc;

use base64::Engine;

use super::*;
use crate::audit::{AuditEvent, Log};
use crate::crypto::{SigningKey, sha256_hex};
use crate::recording::{FileEntry, SessionManifest};
use crate::store::sqlite::SqliteStore;
use crate::store::{RecordedFile, RequestKind, SessionRecord, Store};

const CAST: &[u8] = b"{\"version\":2,\"width\":80,\"height\":24}\n[0.5,\"o\",\"evidence\\r\\n\"]\n";

struct Fixture {
    _dir: tempfile::TempDir,
    root: std::path::PathBuf,
    key: SigningKey,
    store: Arc<dyn Store>,
    session: SessionId,
}

/// A store, a signed log and a recording folder for one ended (or `live`) SSH session, plus
/// records about another request that must stay out of the bundle.
async fn fixture(live: bool) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let (key, _) = SigningKey::generate();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::in_memory().unwrap());
    let log = Log::open(&root.join("data"), Arc::new(key.clone()), store.clone())
        .await
        .unwrap();
    let (session, grant, request) = (
        SessionId::generate(),
        GrantId::generate(),
        RequestId::generate(),
    );
    let rec_dir = crate::recording::session_dir(
        &root.join("recordings"),
        &session,
        time::OffsetDateTime::now_utc(),
    )
    .unwrap();
    std::fs::write(rec_dir.join("0.cast"), CAST).unwrap();
    let file = RecordedFile {
        name: "0.cast".into(),
        sha256: sha256_hex(CAST),
        bytes: CAST.len() as u64,
    };
    let mut m = SessionManifest {
        session: session.to_string(),
        protocol: "ssh".into(),
        user: "alice".into(),
        vendor: None,
        grant: grant.to_string(),
        request: request.to_string(),
        ticket: "INC-7".into(),
        task: "ops".into(),
        target: "box".into(),
        principal: Some("jitgate-it".into()),
        approvers: vec!["bob".into()],
        source: "127.0.0.1:5000".into(),
        started_at: "2026-03-01T10:00:00Z".into(),
        ended_at: None,
        end_reason: None,
        files: vec![],
        events: vec![],
        node: None,
    };
    if !live {
        m.ended_at = Some("2026-03-01T10:00:05Z".into());
        m.end_reason = Some("client disconnected".into());
        m.files = vec![FileEntry {
            name: file.name.clone(),
            sha256: file.sha256.clone(),
            bytes: file.bytes,
            channel: 0,
            kind: "exec".into(),
            command: Some("echo evidence".into()),
            binary: false,
            output_bytes: 10,
            input_bytes: 0,
        }];
    }
    m.write(&rec_dir).unwrap();

    let other = RequestId::generate();
    let ticket: crate::types::TicketRef = "INC-7".parse().unwrap();
    for (req, task) in [(&other, "ops"), (&request, "ops")] {
        log.record(
            "alice",
            AuditEvent::RequestCreated {
                request: req.clone(),
                task: task.parse().unwrap(),
                target: "box".parse().unwrap(),
                ticket: ticket.clone(),
                ttl: "15m".parse().unwrap(),
                reason: "test".into(),
                required_approvals: 1,
            },
        )
        .await
        .unwrap();
    }
    log.record(
        "system",
        AuditEvent::GrantTokenFetched {
            grant: grant.clone(),
            request: request.clone(),
        },
    )
    .await
    .unwrap();
    log.record(
        "system",
        AuditEvent::SessionStarted {
            session: session.clone(),
            grant: grant.clone(),
            request: request.clone(),
            protocol: crate::config::TargetKind::Ssh,
            user: "alice".parse().unwrap(),
            vendor: None,
            task: "ops".parse().unwrap(),
            target: "box".parse().unwrap(),
            ticket: ticket.clone(),
            principal: Some("jitgate-it".into()),
            source: "127.0.0.1:5000".into(),
        },
    )
    .await
    .unwrap();
    log.record(
        "system",
        AuditEvent::ApprovalRefused {
            request: other.clone(),
            reason: "unrelated".into(),
        },
    )
    .await
    .unwrap();
    if !live {
        log.record(
            "system",
            AuditEvent::SessionEnded {
                session: session.clone(),
                grant: grant.clone(),
                request: request.clone(),
                cause: "client".into(),
                reason: "client disconnected".into(),
                duration_ms: 5000,
                bytes_in: 0,
                bytes_out: 10,
                recording: vec![file.clone()],
                kill_latency_ms: None,
            },
        )
        .await
        .unwrap();
    }
    store
        .put_session(&SessionRecord {
            id: session.clone(),
            protocol: "ssh".into(),
            user: "alice".parse().unwrap(),
            vendor: None,
            grant,
            request,
            kind: RequestKind::Normal,
            ticket,
            task: "ops".parse().unwrap(),
            target: "box".parse().unwrap(),
            principal: Some("jitgate-it".into()),
            approvers: vec!["bob".parse().unwrap()],
            source: "127.0.0.1:5000".into(),
            started_at: 1,
            expires_at: 1000,
            ended_at: (!live).then_some(6),
            end_cause: (!live).then(|| "client".into()),
            end_reason: (!live).then(|| "client disconnected".into()),
            kill_latency_ms: None,
            dir: rec_dir.display().to_string(),
            files: if live { vec![] } else { vec![file] },
            bytes_in: 0,
            bytes_out: 10,
            node: None,
        })
        .await
        .unwrap();
    Fixture {
        _dir: dir,
        root,
        key,
        store,
        session,
    }
}

impl Fixture {
    async fn export(&self, allow_live: bool) -> Result<(Exported, Vec<u8>), EvidenceError> {
        let out = self.root.join("bundle.tar");
        let pem = self.key.public().to_pem();
        let e = export(
            self.store.as_ref(),
            &self.root.join("recordings"),
            &self.key,
            Some(&pem),
            &self.session,
            allow_live,
            &out,
        )
        .await?;
        Ok((e, std::fs::read(&out).unwrap()))
    }
}

/// The archive's members in order.
fn members(archive: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut tar = tar::Archive::new(archive);
    tar.entries()
        .unwrap()
        .map(|e| {
            let mut e = e.unwrap();
            let path = e.path().unwrap().display().to_string();
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(&mut e, &mut bytes).unwrap();
            (path, bytes)
        })
        .collect()
}

fn pack(members: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut tar = tar::Builder::new(Vec::new());
    for (path, bytes) in members {
        let mut h = tar::Header::new_gnu();
        h.set_size(bytes.len() as u64);
        h.set_mode(0o640);
        tar.append_data(&mut h, path, bytes.as_slice()).unwrap();
    }
    tar.into_inner().unwrap()
}

/// The rejection's `(member, reason)`; panics when the bundle verified.
fn rejection(archive: &[u8], key: Option<&VerifyingKey>) -> (String, String) {
    match verify(archive, key) {
        Err(EvidenceError::Rejected { member, reason }) => (member, reason),
        Err(e) => panic!("expected a rejection, got {e}"),
        Ok(v) => panic!("a tampered bundle verified: {:?}", v.manifest),
    }
}

/// Replace member `name` by `f(bytes)`.
fn edit(archive: &[u8], name: &str, f: impl Fn(&mut Vec<u8>)) -> Vec<u8> {
    let mut all = members(archive);
    let m = all.iter_mut().find(|(p, _)| p == name).expect("member");
    f(&mut m.1);
    pack(&all)
}

/// Re-sign an edited manifest with `key`, as someone holding the audit key could.
fn resign(archive: &[u8], key: &SigningKey, f: impl Fn(&mut Manifest)) -> Vec<u8> {
    let mut all = members(archive);
    let mut manifest: Manifest =
        serde_json::from_slice(&all.iter().find(|(p, _)| p == MANIFEST).unwrap().1).unwrap();
    f(&mut manifest);
    let bytes = serde_json::to_vec_pretty(&manifest).unwrap();
    let sig = base64::engine::general_purpose::STANDARD.encode(key.sign(&bytes));
    for (p, b) in &mut all {
        if p == MANIFEST {
            *b = bytes.clone();
        } else if p == MANIFEST_SIG {
            *b = sig.clone().into_bytes();
        }
    }
    pack(&all)
}

/// Refresh the manifest's entry for `path` from the archive's bytes.
fn relist(archive: &[u8], path: &str) -> impl Fn(&mut Manifest) {
    let data = members(archive)
        .into_iter()
        .find(|(p, _)| p == path)
        .unwrap()
        .1;
    let path = path.to_string();
    move |m: &mut Manifest| {
        let e = m.members.iter_mut().find(|e| e.path == path).unwrap();
        e.sha256 = sha256_hex(&data);
        e.bytes = data.len() as u64;
    }
}

#[tokio::test]
async fn an_exported_bundle_verifies_with_and_without_the_pinned_key() {
    let f = fixture(false).await;
    let (exported, archive) = f.export(false).await.unwrap();
    assert!(!exported.live);
    assert_eq!(exported.audit_records, 4, "unrelated records stay out");

    let names: Vec<String> = members(&archive).into_iter().map(|(p, _)| p).collect();
    assert_eq!(
        names,
        [
            MANIFEST,
            MANIFEST_SIG,
            AUDIT,
            PUBLIC_KEY,
            "recording/0.cast",
            "recording/session.json"
        ]
    );
    let m = &exported.manifest;
    assert_eq!(m.format, FORMAT);
    assert_eq!(m.session, f.session);
    let paths: Vec<&str> = m.members.iter().map(|e| e.path.as_str()).collect();
    assert!(paths.is_sorted(), "{paths:?}");

    let pinned = verify(archive.as_slice(), Some(&f.key.public())).unwrap();
    assert!(pinned.key_pinned);
    assert!(pinned.recording_in_audit);
    assert_eq!(pinned.recording.user, "alice");
    let events: Vec<&str> = pinned.audit.iter().map(|(_, e)| e.as_str()).collect();
    assert_eq!(
        events,
        [
            "request.created",
            "grant.token_fetched",
            "session.started",
            "session.ended"
        ]
    );
    assert_eq!(
        pinned.key_sha256,
        sha256_hex(f.key.public().to_pem().as_bytes())
    );
    let unpinned = verify(archive.as_slice(), None).unwrap();
    assert!(!unpinned.key_pinned);
    assert_eq!(unpinned.key_sha256, pinned.key_sha256);
}

#[tokio::test]
async fn one_flipped_byte_in_any_member_is_caught_and_named() {
    let f = fixture(false).await;
    let (_, archive) = f.export(false).await.unwrap();
    let key = f.key.public();
    for (name, _) in members(&archive) {
        for pinned in [Some(&key), None] {
            // Flip a byte in the middle of the member (base64 and PEM bodies stay ASCII).
            let bad = edit(&archive, &name, |b| {
                let i = b.len() / 2;
                b[i] ^= 0x01;
            });
            let (member, reason) = rejection(&bad, pinned);
            let said = format!("{member}: {reason}");
            assert!(
                said.contains(&name),
                "flipping a byte in {name} (pinned: {}) was blamed on: {said}",
                pinned.is_some()
            );
        }
    }
}

#[tokio::test]
async fn a_removed_or_added_member_is_caught() {
    let f = fixture(false).await;
    let (_, archive) = f.export(false).await.unwrap();
    let key = f.key.public();
    for (name, _) in members(&archive) {
        let mut all = members(&archive);
        all.retain(|(p, _)| *p != name);
        let (member, reason) = rejection(&pack(&all), Some(&key));
        assert_eq!(member, name, "{reason}");
        assert!(
            reason.contains("missing") || reason.contains("removed"),
            "{reason}"
        );
    }

    let mut all = members(&archive);
    all.push(("recording/1.cast".into(), CAST.to_vec()));
    let (member, reason) = rejection(&pack(&all), Some(&key));
    assert_eq!(member, "recording/1.cast");
    assert!(reason.contains("added"), "{reason}");

    // A path that would escape an extraction folder (the tar crate will not write one).
    let mut tar = tar::Builder::new(Vec::new());
    for (path, bytes) in members(&archive) {
        let mut h = tar::Header::new_gnu();
        h.set_size(bytes.len() as u64);
        tar.append_data(&mut h, path, bytes.as_slice()).unwrap();
    }
    let mut h = tar::Header::new_old();
    h.as_old_mut().name[..9].copy_from_slice(b"../escape");
    h.set_size(1);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_cksum();
    tar.append(&h, &b"x"[..]).unwrap();
    let (member, reason) = rejection(&tar.into_inner().unwrap(), Some(&key));
    assert_eq!(member, "../escape", "{reason}");
}

#[tokio::test]
async fn another_key_is_refused() {
    let f = fixture(false).await;
    let (_, archive) = f.export(false).await.unwrap();
    let (other, _) = SigningKey::generate();
    let (member, reason) = rejection(&archive, Some(&other.public()));
    assert_eq!(member, MANIFEST_SIG);
    assert!(reason.contains("--key"), "{reason}");

    // A bundle re-signed by another key, with that key bundled: refused against the real key.
    let mut all = members(&archive);
    let pem = other.public().to_pem();
    for (p, b) in &mut all {
        if p == PUBLIC_KEY {
            *b = pem.clone().into_bytes();
        }
    }
    let swapped = pack(&all);
    let swapped = resign(&swapped, &other, |m| {
        relist(&swapped, PUBLIC_KEY)(m);
        m.audit_public_key_sha256 = sha256_hex(pem.as_bytes());
    });
    let (member, _) = rejection(&swapped, Some(&f.key.public()));
    assert_eq!(member, MANIFEST_SIG);
    // Unpinned, this forgery is caught only because it left the records signed by the real
    // key; one that re-signed them too would pass, which is why verify prints the bundled key's
    // fingerprint and takes --key.
    let (member, reason) = rejection(&swapped, None);
    assert_eq!(member, AUDIT, "{reason}");
    assert!(reason.contains("signature"), "{reason}");
}

#[tokio::test]
async fn a_resigned_manifest_does_not_launder_edited_records_or_recordings() {
    let f = fixture(false).await;
    let (_, archive) = f.export(false).await.unwrap();
    let key = f.key.public();

    // Edit an audit record and re-list it: the record's own hash gives it away.
    let edited = edit(&archive, AUDIT, |b| {
        let t = String::from_utf8(b.clone())
            .unwrap()
            .replacen("alice", "mallory", 1);
        *b = t.into_bytes();
    });
    let bad = resign(&edited, &f.key, relist(&edited, AUDIT));
    let (member, reason) = rejection(&bad, Some(&key));
    assert_eq!(member, AUDIT);
    assert!(reason.contains("hash does not match"), "{reason}");

    // Reorder two records: caught (a gap alone is normal: other requests' records are left out).
    let swapped = edit(&archive, AUDIT, |b| {
        let t = String::from_utf8(b.clone()).unwrap();
        let mut lines: Vec<&str> = t.lines().collect();
        lines.swap(1, 2);
        *b = (lines.join("\n") + "\n").into_bytes();
    });
    let bad = resign(&swapped, &f.key, relist(&swapped, AUDIT));
    let (member, reason) = rejection(&bad, Some(&key));
    assert_eq!(member, AUDIT);
    assert!(reason.contains("not in seq order"), "{reason}");

    // Replace the cast and fix session.json to match: the signed session.ended record holds
    // the original digest.
    let forged = b"{\"version\":2,\"width\":80,\"height\":24}\n[0.5,\"o\",\"nothing\\r\\n\"]\n";
    let mut all = members(&archive);
    for (p, b) in &mut all {
        if p == "recording/0.cast" {
            *b = forged.to_vec();
        } else if p == "recording/session.json" {
            let mut m: SessionManifest = serde_json::from_slice(b).unwrap();
            m.files[0].sha256 = sha256_hex(forged);
            m.files[0].bytes = forged.len() as u64;
            *b = serde_json::to_vec_pretty(&m).unwrap();
        }
    }
    let swapped = pack(&all);
    let bad = resign(&swapped, &f.key, |m| {
        relist(&swapped, "recording/0.cast")(m);
        relist(&swapped, "recording/session.json")(m);
    });
    let (member, reason) = rejection(&bad, Some(&key));
    assert_eq!(member, "recording/0.cast");
    assert!(reason.contains("session.ended"), "{reason}");

    // Only the cast replaced: session.json's own digest catches it.
    let only = edit(&archive, "recording/0.cast", |b| b[0] = b'[');
    let bad = resign(&only, &f.key, relist(&only, "recording/0.cast"));
    let (member, reason) = rejection(&bad, Some(&key));
    assert_eq!(member, "recording/0.cast");
    assert!(reason.contains("session.json says"), "{reason}");
}

#[tokio::test]
async fn a_live_session_is_refused_unless_allowed() {
    let f = fixture(true).await;
    let err = f.export(false).await.unwrap_err();
    assert!(matches!(err, EvidenceError::Live(_)), "{err}");
    assert!(err.to_string().contains("--allow-live"), "{err}");
    assert!(!f.root.join("bundle.tar").exists());

    let (exported, archive) = f.export(true).await.unwrap();
    assert!(exported.live);
    let v = verify(archive.as_slice(), Some(&f.key.public())).unwrap();
    assert!(!v.recording_in_audit);
    assert_eq!(v.recording.ended_at, None);
}

#[tokio::test]
async fn an_unknown_session_is_named() {
    let f = fixture(false).await;
    let other = SessionId::generate();
    let err = export(
        f.store.as_ref(),
        &f.root.join("recordings"),
        &f.key,
        None,
        &other,
        false,
        &f.root.join("x.tar"),
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains(other.as_str()), "{err}");
}

#[test]
fn garbage_is_not_a_bundle() {
    let (member, reason) = rejection(b"definitely not a tar archive, just some bytes", None);
    assert!(
        member == "archive" || member == MANIFEST,
        "{member}: {reason}"
    );
}
