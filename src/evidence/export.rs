//! Writing a bundle: gather the session's recording files and audit records, sign the manifest,
//! write the tar archive atomically.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine;
use serde::Serialize;

use super::{
    AUDIT, EvidenceError, FORMAT, MANIFEST, MANIFEST_SIG, Manifest, Member, PUBLIC_KEY, RECORDING,
    check_record,
};
use crate::crypto::{SigningKey, VerifyingKey, sha256_hex};
use crate::store::{AuditFilter, SessionRecord, Store};
use crate::types::SessionId;

/// Audit records read from the store per query.
const PAGE: u32 = 5000;
/// How long to wait for the `session.ended` record of a session the store already shows ended
/// (the gateway writes the store first, then the audit record).
const ENDED_RECORD_WAIT: Duration = Duration::from_secs(3);

/// What [`export`] wrote.
#[derive(Debug, Clone, Serialize)]
pub struct Exported {
    pub file: PathBuf,
    pub manifest: Manifest,
    /// The session was live at export (only with `allow_live`).
    pub live: bool,
    pub audit_records: usize,
}

/// Write the evidence bundle of `session` to `out`.
///
/// `key` signs the manifest; `public_pem` is the on-disk public key file
/// (`certs/audit_ed25519.pub.pem`), bundled verbatim when it holds `key`'s public half so that
/// its SHA-256 matches the file reviewers compare with. A live session is refused unless
/// `allow_live`.
pub async fn export(
    store: &dyn Store,
    recordings_dir: &Path,
    key: &SigningKey,
    public_pem: Option<&str>,
    session: &SessionId,
    allow_live: bool,
    out: &Path,
) -> Result<Exported, EvidenceError> {
    let rec = store
        .session(session)
        .await?
        .ok_or_else(|| EvidenceError::UnknownSession(session.clone()))?;
    let live = rec.ended_at.is_none();
    if live && !allow_live {
        return Err(EvidenceError::Live(session.clone()));
    }
    let dir = recording_dir(&rec, recordings_dir)?;
    let public = key.public();
    let mut members: Vec<(String, Vec<u8>)> = Vec::new();
    for (name, bytes) in recording_files(&dir)? {
        members.push((format!("{RECORDING}/{name}"), bytes));
    }
    let deadline = tokio::time::Instant::now() + ENDED_RECORD_WAIT;
    let lines = loop {
        let lines = audit_lines(store, &rec, &public).await?;
        let has_end = lines.iter().any(|(event, _)| event == "session.ended");
        if live || has_end || tokio::time::Instant::now() >= deadline {
            break lines;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let audit_records = lines.len();
    let mut audit = String::new();
    for (_, line) in lines {
        audit.push_str(&line);
        audit.push('\n');
    }
    members.push((AUDIT.into(), audit.into_bytes()));
    let pem = public_pem
        .filter(|text| VerifyingKey::from_pem(text).is_ok_and(|k| k == public))
        .map(str::to_string)
        .unwrap_or_else(|| public.to_pem());
    let audit_public_key_sha256 = sha256_hex(pem.as_bytes());
    members.push((PUBLIC_KEY.into(), pem.into_bytes()));
    members.sort_by(|a, b| a.0.cmp(&b.0));

    let now = time::OffsetDateTime::now_utc();
    let manifest = Manifest {
        format: FORMAT.into(),
        session: rec.id.clone(),
        grant: rec.grant.clone(),
        request: rec.request.clone(),
        created_at: crate::types::rfc3339_millis(now),
        members: members
            .iter()
            .map(|(path, bytes)| Member {
                path: path.clone(),
                sha256: sha256_hex(bytes),
                bytes: bytes.len() as u64,
            })
            .collect(),
        audit_public_key_sha256,
    };
    let mut manifest_bytes = serde_json::to_vec_pretty(&manifest).expect("manifests serialize");
    manifest_bytes.push(b'\n');
    let sig = base64::engine::general_purpose::STANDARD.encode(key.sign(&manifest_bytes)) + "\n";
    let mut all = vec![
        (MANIFEST.to_string(), manifest_bytes),
        (MANIFEST_SIG.to_string(), sig.into_bytes()),
    ];
    all.extend(members);
    write_archive(out, &all, now.unix_timestamp().max(0) as u64)?;
    Ok(Exported {
        file: out.to_path_buf(),
        manifest,
        live,
        audit_records,
    })
}

/// The session's recording folder: the one the store names, or its place under `recordings_dir`.
fn recording_dir(rec: &SessionRecord, recordings_dir: &Path) -> Result<PathBuf, EvidenceError> {
    let named = PathBuf::from(&rec.dir);
    if named.is_dir() {
        return Ok(named);
    }
    let found = crate::recording::find_session_dir(recordings_dir, &rec.id).map_err(|source| {
        EvidenceError::Io {
            action: "search",
            path: recordings_dir.to_path_buf(),
            source,
        }
    })?;
    found.ok_or_else(|| EvidenceError::NoRecording {
        session: rec.id.clone(),
        dir: named,
    })
}

/// Every regular file of the recording folder, by name.
fn recording_files(dir: &Path) -> Result<Vec<(String, Vec<u8>)>, EvidenceError> {
    let io = |action, path: &Path| {
        let path = path.to_path_buf();
        move |source| EvidenceError::Io {
            action,
            path,
            source,
        }
    };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io("read", dir))? {
        let entry = entry.map_err(io("read", dir))?;
        let path = entry.path();
        let kind = entry.file_type().map_err(io("inspect", &path))?;
        let Some(name) = entry.file_name().to_str().map(str::to_string) else {
            tracing::warn!(path = %path.display(), "skipping a recording file whose name is not UTF-8");
            continue;
        };
        if !kind.is_file() {
            tracing::warn!(path = %path.display(), "skipping a recording folder entry that is not a regular file");
            continue;
        }
        files.push((name, std::fs::read(&path).map_err(io("read", &path))?));
    }
    files.sort();
    Ok(files)
}

/// The audit records about the session's request, grant and session, in seq order, each checked
/// against its own hash and signature: `(event, line)`.
async fn audit_lines(
    store: &dyn Store,
    rec: &SessionRecord,
    key: &VerifyingKey,
) -> Result<Vec<(String, String)>, EvidenceError> {
    let (sid, gid, rid) = (rec.id.as_str(), rec.grant.as_str(), rec.request.as_str());
    let mut out = Vec::new();
    let mut after = None;
    loop {
        let page = store
            .audit(&AuditFilter {
                after_seq: after,
                limit: Some(PAGE),
                ..AuditFilter::default()
            })
            .await?;
        let Some(last) = page.last() else { break };
        after = Some(last.seq);
        let full = page.len() as u32 >= PAGE;
        for e in page {
            let about = e.session.as_deref() == Some(sid)
                || e.grant.as_deref() == Some(gid)
                || e.request.as_deref() == Some(rid);
            if !about {
                continue;
            }
            check_record(&e.record, key).map_err(|reason| EvidenceError::BadAudit {
                session: rec.id.clone(),
                seq: e.seq,
                reason,
            })?;
            out.push((e.event, e.record));
        }
        if !full {
            break;
        }
    }
    Ok(out)
}

/// Write `members` as a tar archive at `out`: a temp file beside it, fsync, rename.
fn write_archive(
    out: &Path,
    members: &[(String, Vec<u8>)],
    mtime: u64,
) -> Result<(), EvidenceError> {
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "evidence.tar".into());
    let tmp = out.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    let written = (|| -> std::io::Result<()> {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o640)
            .open(&tmp)?;
        let mut tar = tar::Builder::new(std::io::BufWriter::new(file));
        for (path, bytes) in members {
            let mut header = tar::Header::new_gnu();
            header.set_entry_type(tar::EntryType::Regular);
            header.set_size(bytes.len() as u64);
            header.set_mode(0o640);
            header.set_mtime(mtime);
            header.set_uid(0);
            header.set_gid(0);
            tar.append_data(&mut header, path, bytes.as_slice())?;
        }
        let mut file = tar.into_inner()?.into_inner().map_err(|e| e.into_error())?;
        file.flush()?;
        file.sync_all()?;
        std::fs::rename(&tmp, out)
    })();
    written.map_err(|source| {
        let _ = std::fs::remove_file(&tmp);
        EvidenceError::Io {
            action: "write",
            path: out.to_path_buf(),
            source,
        }
    })
}
