//! `session.json`: who did what, under which grant and ticket, and the SHA-256 of every recording
//! file of the session. Written atomically (temp file, fsync, rename) at start and at end.

use std::io::{self, Read as _, Write as _};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::cast::CastSummary;

/// File name of the manifest inside a session directory.
pub const MANIFEST_FILE: &str = "session.json";

/// The manifest of one recorded session.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct SessionManifest {
    /// Session id.
    pub session: String,
    /// `"ssh"` or `"https"`.
    pub protocol: String,
    /// The technician (the grant's requester).
    pub user: String,
    /// The technician's vendor, for vendor users.
    pub vendor: Option<String>,
    /// Grant id.
    pub grant: String,
    /// Request id.
    pub request: String,
    /// Ticket reference.
    pub ticket: String,
    /// Task name.
    pub task: String,
    /// Target name.
    pub target: String,
    /// Login name on the target (SSH certificate principal).
    pub principal: Option<String>,
    /// Users who approved the request.
    pub approvers: Vec<String>,
    /// Client address (`ip:port`).
    pub source: String,
    /// RFC 3339 start time.
    pub started_at: String,
    /// RFC 3339 end time, once ended.
    pub ended_at: Option<String>,
    /// Why the session ended, once ended.
    pub end_reason: Option<String>,
    /// Recording files of the session with their digests.
    pub files: Vec<FileEntry>,
    /// Other recorded facts, e.g. SFTP byte counts.
    pub events: Vec<serde_json::Value>,
    /// The gateway node that served the session (several nodes on PostgreSQL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

/// One recording file listed in a manifest.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct FileEntry {
    /// File name inside the session directory (no path separators).
    pub name: String,
    /// SHA-256 (hex) of the file.
    pub sha256: String,
    /// File size.
    pub bytes: u64,
    /// SSH channel number the file records.
    pub channel: u32,
    /// `"shell"`, `"exec"` or `"subsystem"`.
    pub kind: String,
    /// The exec command or subsystem name.
    pub command: Option<String>,
    /// Data was recorded by size and SHA-256 only (binary or bulk transfer without a PTY).
    pub binary: bool,
    /// Raw target → client bytes.
    pub output_bytes: u64,
    /// Raw client → target bytes.
    pub input_bytes: u64,
}

impl FileEntry {
    /// The entry for a finished cast recording.
    pub fn from_cast(
        summary: &CastSummary,
        channel: u32,
        kind: &str,
        command: Option<String>,
    ) -> Self {
        FileEntry {
            name: summary.file.clone(),
            sha256: summary.sha256.clone(),
            bytes: summary.bytes,
            channel,
            kind: kind.to_string(),
            command,
            binary: summary.binary,
            output_bytes: summary.output_bytes,
            input_bytes: summary.input_bytes,
        }
    }
}

impl SessionManifest {
    /// Write `dir/session.json` atomically: a temp file in `dir`, fsync, rename over the old one,
    /// fsync the directory. A crash leaves either the old or the new manifest, never half of one.
    pub fn write(&self, dir: &Path) -> io::Result<()> {
        let path = dir.join(MANIFEST_FILE);
        let tmp = dir.join(format!(".{MANIFEST_FILE}.{}.tmp", std::process::id()));
        let mut json = serde_json::to_vec_pretty(self)?;
        json.push(b'\n');
        let written = (|| {
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o640)
                .open(&tmp)?;
            file.write_all(&json)?;
            file.sync_all()?;
            std::fs::rename(&tmp, &path)?;
            std::fs::File::open(dir)?.sync_all()
        })();
        written.map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            io::Error::new(e.kind(), format!("cannot write {}: {e}", path.display()))
        })
    }

    /// Read `dir/session.json`.
    pub fn read(dir: &Path) -> io::Result<Self> {
        let path = dir.join(MANIFEST_FILE);
        let bytes = std::fs::read(&path).map_err(|e| {
            io::Error::new(e.kind(), format!("cannot read {}: {e}", path.display()))
        })?;
        serde_json::from_slice(&bytes).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{} is not a valid session manifest: {e}", path.display()),
            )
        })
    }
}

/// Recompute the SHA-256 and size of every file the manifest lists and compare them; the error
/// names the first file that is missing or differs.
pub fn verify_files(dir: &Path, m: &SessionManifest) -> Result<(), String> {
    for entry in &m.files {
        let plain = !entry.name.is_empty()
            && entry.name != "."
            && entry.name != ".."
            && !entry.name.contains(['/', '\\', '\0']);
        if !plain {
            return Err(format!(
                "session {}: file name {:?} is not a plain file name",
                m.session, entry.name
            ));
        }
        let path = dir.join(&entry.name);
        let (sha256, bytes) =
            hash_file(&path).map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
        if sha256 != entry.sha256.to_ascii_lowercase() {
            return Err(format!(
                "{}: SHA-256 mismatch: the manifest says {}, the file has {sha256}; \
                 the recording was altered or truncated",
                path.display(),
                entry.sha256
            ));
        }
        if bytes != entry.bytes {
            return Err(format!(
                "{}: size mismatch: the manifest says {} bytes, the file has {bytes}",
                path.display(),
                entry.bytes
            ));
        }
    }
    Ok(())
}

/// SHA-256 (hex) and size of a file, read in blocks.
pub fn hash_file(path: &Path) -> io::Result<(String, u64)> {
    let mut file = std::fs::File::open(path)?;
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        ctx.update(&buf[..n]);
        total += n as u64;
    }
    Ok((hex::encode(ctx.finish().as_ref()), total))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(files: Vec<FileEntry>) -> SessionManifest {
        SessionManifest {
            session: "ses_aaaaaaaaaaaaaaaa".into(),
            protocol: "ssh".into(),
            user: "alice".into(),
            vendor: None,
            grant: "gr_bbbbbbbbbbbbbbbb".into(),
            request: "req_cccccccccccccccc".into(),
            ticket: "INC-7".into(),
            task: "reset-credential".into(),
            target: "dc-01".into(),
            principal: Some("helpdesk-reset".into()),
            approvers: vec!["bob".into()],
            source: "127.0.0.1:50000".into(),
            started_at: "2026-03-01T10:00:00Z".into(),
            ended_at: Some("2026-03-01T10:05:00Z".into()),
            end_reason: Some("ticket INC-7 closed".into()),
            files,
            events: vec![serde_json::json!({"sftp": {"read_bytes": 10, "written_bytes": 0}})],
            node: None,
        }
    }

    fn entry(name: &str, data: &[u8]) -> FileEntry {
        FileEntry {
            name: name.into(),
            sha256: crate::crypto::sha256_hex(data),
            bytes: data.len() as u64,
            channel: 0,
            kind: "shell".into(),
            command: None,
            binary: false,
            output_bytes: 3,
            input_bytes: 1,
        }
    }

    #[test]
    fn manifest_round_trips_and_replaces_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let mut m = manifest(vec![]);
        m.ended_at = None;
        m.write(dir.path()).unwrap();
        let mut m = manifest(vec![entry("0.cast", b"abc")]);
        m.write(dir.path()).unwrap();
        assert_eq!(SessionManifest::read(dir.path()).unwrap(), m);
        // Only the manifest is left: no temp files.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, [MANIFEST_FILE]);
        let text = std::fs::read_to_string(dir.path().join(MANIFEST_FILE)).unwrap();
        assert!(text.contains("\"ticket\": \"INC-7\""), "{text}");
        m.vendor = Some("acme".into());
        assert_ne!(SessionManifest::read(dir.path()).unwrap(), m);
    }

    #[test]
    fn verify_files_catches_one_flipped_byte() {
        let dir = tempfile::tempdir().unwrap();
        let data = b"{\"version\": 2}\n[0.1, \"o\", \"hi\"]\n".to_vec();
        std::fs::write(dir.path().join("0.cast"), &data).unwrap();
        let m = manifest(vec![entry("0.cast", &data)]);
        verify_files(dir.path(), &m).unwrap();

        let mut flipped = data.clone();
        flipped[20] ^= 0x01;
        std::fs::write(dir.path().join("0.cast"), &flipped).unwrap();
        let err = verify_files(dir.path(), &m).unwrap_err();
        assert!(err.contains("0.cast: SHA-256 mismatch"), "{err}");

        std::fs::remove_file(dir.path().join("0.cast")).unwrap();
        let err = verify_files(dir.path(), &m).unwrap_err();
        assert!(err.contains("cannot read"), "{err}");

        let err = verify_files(dir.path(), &manifest(vec![entry("../x", b"")])).unwrap_err();
        assert!(err.contains("not a plain file name"), "{err}");
    }

    #[test]
    fn read_reports_a_broken_manifest() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(MANIFEST_FILE), "{\"session\": 1}").unwrap();
        let err = SessionManifest::read(dir.path()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(
            err.to_string().contains("not a valid session manifest"),
            "{err}"
        );
    }
}
