//! Evidence bundles: one tar archive per session that a reviewer verifies offline, with nothing
//! but the archive (and, ideally, the audit public key obtained out of band).
//!
//! Members of a bundle:
//! - `manifest.json`: [`Manifest`] — format, session, grant, request, creation time, every other
//!   member's path, SHA-256 and size (sorted by path) and the SHA-256 of the bundled public key;
//! - `manifest.sig`: base64 Ed25519 signature over the exact bytes of `manifest.json`, by the
//!   audit key;
//! - `audit_public_key.pem`: the audit public key (`certs/audit_ed25519.pub.pem`);
//! - `audit.jsonl`: every audit record about the session's request, grant and session, in seq
//!   order, byte for byte as in the log (each keeps its own hash and signature);
//! - `recording/<file>`: every file of the session's recording folder (`session.json`, `*.cast`,
//!   `http.jsonl`).
//!
//! [`export()`] writes a bundle from the store and the recording folder; [`verify()`] checks one.

mod export;
mod verify;

#[cfg(test)]
mod tests;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::crypto::VerifyingKey;
use crate::store::StoreError;
use crate::types::{GrantId, RequestId, SessionId};

pub use export::{Exported, export};
pub use verify::{Verified, verify};

/// `format` of the manifests this version writes and reads.
pub const FORMAT: &str = "jitgate-evidence/1";
/// The signed manifest.
pub const MANIFEST: &str = "manifest.json";
/// The manifest's signature.
pub const MANIFEST_SIG: &str = "manifest.sig";
/// The audit public key, PEM.
pub const PUBLIC_KEY: &str = "audit_public_key.pem";
/// The session's audit records.
pub const AUDIT: &str = "audit.jsonl";
/// Folder of the recording files inside the bundle.
pub const RECORDING: &str = "recording";

/// The signed table of contents of a bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Always [`FORMAT`].
    pub format: String,
    pub session: SessionId,
    pub grant: GrantId,
    pub request: RequestId,
    /// RFC 3339 time of the export.
    pub created_at: String,
    /// Every member except `manifest.json` and `manifest.sig`, sorted by path.
    pub members: Vec<Member>,
    /// SHA-256 (hex) of the `audit_public_key.pem` member: the key's fingerprint.
    pub audit_public_key_sha256: String,
}

/// One member listed in the manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Member {
    /// Path inside the archive (`/`-separated, relative).
    pub path: String,
    /// SHA-256 (hex) of the member's bytes.
    pub sha256: String,
    pub bytes: u64,
}

/// Failures exporting a bundle, and the reasons a bundle is rejected.
#[derive(Debug, thiserror::Error)]
pub enum EvidenceError {
    #[error("session {0} is not in the database; list sessions with `jitgate sessions`")]
    UnknownSession(SessionId),
    #[error(
        "session {0} is still live, so its recording is not final; export it once it has ended \
         (`jitgate kill {0} --reason ...` ends it now), or pass --allow-live to export it as it \
         stands"
    )]
    Live(SessionId),
    #[error(
        "the recording folder of session {session} ({}) is missing; restore it under \
         recordings_dir before exporting", dir.display()
    )]
    NoRecording { session: SessionId, dir: PathBuf },
    #[error(
        "audit record seq {seq} about session {session} does not verify ({reason}); run \
         `jitgate audit verify` and investigate before exporting"
    )]
    BadAudit {
        session: SessionId,
        seq: u64,
        reason: String,
    },
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The bundle failed verification; `member` names the part that failed.
    #[error("{member}: {reason}")]
    Rejected { member: String, reason: String },
}

impl EvidenceError {
    fn rejected(member: impl Into<String>, reason: impl Into<String>) -> Self {
        EvidenceError::Rejected {
            member: member.into(),
            reason: reason.into(),
        }
    }
}

/// Check one audit log line on its own (hash and signature, as [`crate::audit::verify`] does).
fn check_record(line: &str, key: &VerifyingKey) -> Result<Map<String, Value>, String> {
    let m: Map<String, Value> =
        serde_json::from_str(line).map_err(|e| format!("not a JSON object: {e}"))?;
    crate::audit::check_record(&m, key)?;
    Ok(m)
}

/// Whether an audit record is about `request`, `grant` or `session`.
fn concerns(m: &Map<String, Value>, session: &str, grant: &str, request: &str) -> bool {
    let is = |k: &str, v: &str| m.get(k).and_then(Value::as_str) == Some(v);
    is("session", session) || is("grant", grant) || is("request", request)
}
