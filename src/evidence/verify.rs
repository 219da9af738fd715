//! Checking a bundle offline: archive shape, the manifest's signature, every member's digest,
//! the recording's own digests, every audit record's hash and signature, and the link between
//! the recording and the signed `session.ended` record.

use std::collections::BTreeMap;
use std::io::Read;

use base64::Engine;
use serde::Serialize;
use serde_json::Value;

use super::{
    AUDIT, EvidenceError, FORMAT, MANIFEST, MANIFEST_SIG, Manifest, PUBLIC_KEY, RECORDING,
    check_record, concerns,
};
use crate::crypto::{VerifyingKey, sha256_hex};
use crate::recording::SessionManifest;
use crate::recording::manifest::MANIFEST_FILE;

/// A bundle that passed every check.
#[derive(Debug, Clone, Serialize)]
pub struct Verified {
    pub manifest: Manifest,
    /// The bundled `session.json`.
    pub recording: SessionManifest,
    /// Whether the signature was checked against a key given by the caller (`--key`) rather than
    /// the key inside the bundle.
    pub key_pinned: bool,
    /// SHA-256 (hex) of the bundled `audit_public_key.pem`.
    pub key_sha256: String,
    /// `(seq, event)` of every bundled audit record.
    pub audit: Vec<(u64, String)>,
    /// The signed `session.ended` record lists the recording files with the digests they have.
    pub recording_in_audit: bool,
}

fn rejected(member: impl Into<String>, reason: impl Into<String>) -> EvidenceError {
    EvidenceError::rejected(member, reason)
}

/// Verify the bundle read from `archive`. With `pinned`, the manifest must be signed by that key
/// (and the bundled key must be it); without, the bundled key is used, which proves integrity
/// only if the reviewer compares its fingerprint ([`Verified::key_sha256`]) with the gateway's.
pub fn verify(
    archive: impl Read,
    pinned: Option<&VerifyingKey>,
) -> Result<Verified, EvidenceError> {
    let members = read_members(archive)?;
    let get = |name: &str| {
        members.get(name).ok_or_else(|| {
            rejected(
                name,
                "missing from the bundle: it was removed, or this is not a jitgate evidence bundle",
            )
        })
    };
    let manifest_bytes = get(MANIFEST)?;
    let sig_bytes = get(MANIFEST_SIG)?;
    let pem = get(PUBLIC_KEY)?;

    // 1. The signature over the exact manifest bytes, before anything in it is believed.
    let key_sha256 = sha256_hex(pem);
    let bundled = std::str::from_utf8(pem)
        .ok()
        .and_then(|t| VerifyingKey::from_pem(t).ok());
    let (key, which) = match pinned {
        Some(k) => (*k, "the key given with --key"),
        None => (
            bundled.ok_or_else(|| rejected(PUBLIC_KEY, "not an audit public key (PEM)"))?,
            "the bundled key audit_public_key.pem",
        ),
    };
    let sig = std::str::from_utf8(sig_bytes)
        .ok()
        .and_then(|s| {
            base64::engine::general_purpose::STANDARD
                .decode(s.trim())
                .ok()
        })
        .filter(|s| s.len() == 64)
        .ok_or_else(|| rejected(MANIFEST_SIG, "not a base64 Ed25519 signature"))?;
    if !key.verify(manifest_bytes, &sig) {
        return Err(rejected(
            MANIFEST_SIG,
            format!(
                "the signature over manifest.json is not valid for {which}: manifest.json or \
                 manifest.sig was altered, or another key signed the bundle"
            ),
        ));
    }
    let manifest: Manifest = serde_json::from_slice(manifest_bytes)
        .map_err(|e| rejected(MANIFEST, format!("not a valid evidence manifest: {e}")))?;
    if manifest.format != FORMAT {
        return Err(rejected(
            MANIFEST,
            format!(
                "format {:?} is not {FORMAT:?}; use the jitgate version that wrote it",
                manifest.format
            ),
        ));
    }

    // 2. Every member is listed with its digest; nothing is missing or extra.
    let mut listed = BTreeMap::new();
    for m in &manifest.members {
        if m.path == MANIFEST || m.path == MANIFEST_SIG || listed.insert(&m.path, m).is_some() {
            return Err(rejected(
                MANIFEST,
                format!("lists {} twice or lists itself", m.path),
            ));
        }
        let bytes = members.get(&m.path).ok_or_else(|| {
            rejected(
                &m.path,
                "listed in the signed manifest but missing from the bundle: it was removed",
            )
        })?;
        let sha = sha256_hex(bytes);
        if sha != m.sha256.to_ascii_lowercase() || bytes.len() as u64 != m.bytes {
            return Err(rejected(
                &m.path,
                format!(
                    "SHA-256 mismatch: the signed manifest says {} ({} bytes), the member has {sha} \
                     ({} bytes); it was altered",
                    m.sha256,
                    m.bytes,
                    bytes.len()
                ),
            ));
        }
    }
    if let Some(extra) = members
        .keys()
        .find(|p| *p != MANIFEST && *p != MANIFEST_SIG && !listed.contains_key(p))
    {
        return Err(rejected(
            extra,
            "not listed in the signed manifest: it was added to the bundle",
        ));
    }
    if manifest.audit_public_key_sha256.to_ascii_lowercase() != key_sha256 {
        return Err(rejected(
            PUBLIC_KEY,
            "its SHA-256 differs from the manifest's audit_public_key_sha256",
        ));
    }
    if pinned.is_some() && bundled != Some(key) {
        return Err(rejected(
            PUBLIC_KEY,
            "the bundled key is not the key given with --key",
        ));
    }

    // 3. The recording's own manifest and digests.
    let recording = check_recording(&members, &manifest)?;

    // 4. Every audit record verifies on its own, concerns this session and chains where
    //    consecutive; the signed session.ended record lists the recording as bundled.
    let (audit, recording_in_audit) = check_audit(&members, &manifest, &key)?;

    Ok(Verified {
        manifest,
        recording,
        key_pinned: pinned.is_some(),
        key_sha256,
        audit,
        recording_in_audit,
    })
}

/// Read every member into memory, refusing anything but plain files with safe relative paths.
fn read_members(archive: impl Read) -> Result<BTreeMap<String, Vec<u8>>, EvidenceError> {
    const ARCHIVE: &str = "archive";
    let bad = |e: std::io::Error| rejected(ARCHIVE, format!("not a readable tar archive: {e}"));
    let mut tar = tar::Archive::new(archive);
    let mut members = BTreeMap::new();
    for entry in tar.entries().map_err(bad)? {
        let mut entry = entry.map_err(bad)?;
        let raw = entry.path_bytes().into_owned();
        let path = String::from_utf8(raw)
            .map_err(|_| rejected(ARCHIVE, "holds a member whose path is not UTF-8"))?;
        let safe = !path.is_empty()
            && !path.starts_with('/')
            && path
                .split('/')
                .all(|c| !c.is_empty() && c != "." && c != ".." && !c.contains(['\\', '\0']));
        if !safe {
            return Err(rejected(
                &path,
                "not a plain relative path; bundles hold only such members",
            ));
        }
        if entry.header().entry_type() != tar::EntryType::Regular {
            return Err(rejected(
                &path,
                "not a regular file; bundles hold only files (it was added)",
            ));
        }
        let mut bytes = Vec::with_capacity(entry.size().min(1 << 24) as usize);
        entry
            .read_to_end(&mut bytes)
            .map_err(|e| rejected(&path, format!("cannot be read: {e}")))?;
        if members.insert(path.clone(), bytes).is_some() {
            return Err(rejected(&path, "appears twice in the archive"));
        }
    }
    Ok(members)
}

/// `recording/session.json` names this session and every file it lists has its digest.
fn check_recording(
    members: &BTreeMap<String, Vec<u8>>,
    manifest: &Manifest,
) -> Result<SessionManifest, EvidenceError> {
    let path = format!("{RECORDING}/{MANIFEST_FILE}");
    let bytes = members
        .get(&path)
        .ok_or_else(|| rejected(&path, "missing: the session's manifest was not bundled"))?;
    let rec: SessionManifest = serde_json::from_slice(bytes)
        .map_err(|e| rejected(&path, format!("not a valid session manifest: {e}")))?;
    for (what, said, expected) in [
        ("session", &rec.session, manifest.session.as_str()),
        ("grant", &rec.grant, manifest.grant.as_str()),
        ("request", &rec.request, manifest.request.as_str()),
    ] {
        if said != expected {
            return Err(rejected(
                &path,
                format!("names {what} {said}, the bundle is for {expected}"),
            ));
        }
    }
    // The same check as `recording::verify_files`, on the bundled bytes rather than a folder.
    for f in &rec.files {
        let plain = !f.name.is_empty()
            && f.name != "."
            && f.name != ".."
            && !f.name.contains(['/', '\\', '\0']);
        if !plain {
            return Err(rejected(
                &path,
                format!("file name {:?} is not a plain file name", f.name),
            ));
        }
        let member = format!("{RECORDING}/{}", f.name);
        let data = members.get(&member).ok_or_else(|| {
            rejected(
                &member,
                "listed in session.json but missing from the bundle",
            )
        })?;
        let sha = sha256_hex(data);
        if sha != f.sha256.to_ascii_lowercase() || data.len() as u64 != f.bytes {
            return Err(rejected(
                &member,
                format!(
                    "session.json says SHA-256 {} ({} bytes), the file has {sha} ({} bytes); the \
                     recording was altered or truncated",
                    f.sha256,
                    f.bytes,
                    data.len()
                ),
            ));
        }
    }
    Ok(rec)
}

/// Check `audit.jsonl`; returns `(seq, event)` per record and whether a `session.ended` record
/// vouches for the recording files.
fn check_audit(
    members: &BTreeMap<String, Vec<u8>>,
    manifest: &Manifest,
    key: &VerifyingKey,
) -> Result<(Vec<(u64, String)>, bool), EvidenceError> {
    let bytes = members.get(AUDIT).ok_or_else(|| {
        rejected(
            AUDIT,
            "missing: the session's audit records were not bundled",
        )
    })?;
    let text = std::str::from_utf8(bytes).map_err(|_| rejected(AUDIT, "not UTF-8 text"))?;
    let (sid, gid, rid) = (
        manifest.session.as_str(),
        manifest.grant.as_str(),
        manifest.request.as_str(),
    );
    let mut out = Vec::new();
    let mut prev: Option<(u64, String)> = None;
    let mut recording_in_audit = false;
    for (i, line) in text.lines().enumerate() {
        let at = |seq: Option<u64>| match seq {
            Some(s) => format!("line {} (seq {s})", i + 1),
            None => format!("line {}", i + 1),
        };
        let m =
            check_record(line, key).map_err(|r| rejected(AUDIT, format!("{}: {r}", at(None))))?;
        let seq = m.get("seq").and_then(Value::as_u64);
        let Some(seq) = seq else {
            return Err(rejected(AUDIT, format!("{}: no seq", at(None))));
        };
        let field = |k: &str| m.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        if let Some((p, hash)) = &prev {
            if seq <= *p {
                return Err(rejected(
                    AUDIT,
                    format!("{}: records are not in seq order", at(Some(seq))),
                ));
            }
            if seq == p + 1 && field("prev") != *hash {
                return Err(rejected(
                    AUDIT,
                    format!(
                        "{}: prev does not match the hash of seq {p}: the chain is broken",
                        at(Some(seq))
                    ),
                ));
            }
        }
        if !concerns(&m, sid, gid, rid) {
            return Err(rejected(
                AUDIT,
                format!("{}: the record is not about this session", at(Some(seq))),
            ));
        }
        let event = field("event");
        if event == "session.ended" && field("session") == sid {
            check_ended(members, &m, seq)?;
            recording_in_audit = true;
        }
        prev = Some((seq, field("hash")));
        out.push((seq, event));
    }
    Ok((out, recording_in_audit))
}

/// The `recording` list of a signed `session.ended` record matches the bundled files.
fn check_ended(
    members: &BTreeMap<String, Vec<u8>>,
    record: &serde_json::Map<String, Value>,
    seq: u64,
) -> Result<(), EvidenceError> {
    let files: Vec<crate::store::RecordedFile> = record
        .get("recording")
        .cloned()
        .map(serde_json::from_value)
        .transpose()
        .map_err(|e| {
            rejected(
                AUDIT,
                format!("seq {seq}: session.ended has an unreadable recording list: {e}"),
            )
        })?
        .unwrap_or_default();
    for f in files {
        let member = format!("{RECORDING}/{}", f.name);
        let matches = members
            .get(&member)
            .is_some_and(|d| sha256_hex(d) == f.sha256 && d.len() as u64 == f.bytes);
        if !matches {
            return Err(rejected(
                &member,
                format!(
                    "differs from the digest the signed session.ended record (seq {seq}) holds \
                     ({}, {} bytes), or is missing",
                    f.sha256, f.bytes
                ),
            ));
        }
    }
    Ok(())
}
