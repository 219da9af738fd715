//! Session recordings: asciicast v2 files, session.json manifests, replay.
//!
//! Layout (README, "Recordings"): `recordings/YYYY/MM/DD/<session-id>/` holds `session.json`
//! ([`manifest::SessionManifest`]) and one `<n>.cast` per shell/exec channel, written by a
//! [`cast::CastRecorder`]. A recorder is a cheap handle around a bounded channel into a writer
//! task: the gateway's channel pump hands over `bytes::Bytes` and never waits on a file syscall
//! per chunk. [`replay::replay`] plays a cast back in a terminal (`jitgate replay`).
//!
//! A failed recording is never silent: every recorder call after a write failure returns a
//! [`RecordingError`] saying "recording failed" and why, and [`cast::CastRecorder::failed`] lets the
//! session end promptly, because an unrecorded privileged session is worse than a cut one.

use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::types::SessionId;

pub mod cast;
pub mod manifest;
pub mod replay;
mod text;

pub use cast::{CastOptions, CastRecorder, CastSummary};
pub use manifest::{FileEntry, SessionManifest, hash_file, verify_files};
pub use replay::{Header, read_cast, replay};

/// What went wrong while writing or reading a recording.
///
/// Cheap to clone (I/O errors are shared), so one failure can be reported to every holder of a
/// [`CastRecorder`] handle.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RecordingError {
    /// The recording file could not be created.
    #[error(
        "recording failed: cannot create {}: {source}; check that the recordings directory exists, \
         is writable and has free space",
        .path.display()
    )]
    Create {
        /// The file that could not be created.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: Arc<io::Error>,
    },
    /// Writing, flushing or syncing the recording failed (disk full, I/O error, ...).
    #[error(
        "recording failed: cannot write {file}: {source}; the session cannot continue unrecorded \
         (check free space and permissions of the recordings directory)"
    )]
    Write {
        /// Name of the recording file.
        file: String,
        /// The underlying error.
        #[source]
        source: Arc<io::Error>,
    },
    /// The recorder was already finished; nothing more can be recorded into it.
    #[error("recording {file} is already finished; nothing more can be recorded into it")]
    Finished {
        /// Name of the recording file.
        file: String,
    },
    /// A recording could not be read.
    #[error("cannot read recording {}: {source}", .path.display())]
    Read {
        /// The recording file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: Arc<io::Error>,
    },
    /// A recording is not a well-formed asciicast v2 file.
    #[error("recording {} line {line} is not valid asciicast v2: {reason}", .path.display())]
    Format {
        /// The recording file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// Replay could not write to its output (e.g. the terminal went away).
    #[error("replay failed: cannot write to the output: {0}")]
    Output(#[source] Arc<io::Error>),
    /// Replay was asked for something impossible (e.g. a speed of zero).
    #[error("replay failed: {0}")]
    Invalid(String),
}

/// Create (if missing) and return the recording directory of one session:
/// `root/YYYY/MM/DD/<session-id>/`, dated by `started` in UTC, directories mode 0750.
pub fn session_dir(
    root: &Path,
    id: &SessionId,
    started: time::OffsetDateTime,
) -> io::Result<PathBuf> {
    let day = started.to_offset(time::UtcOffset::UTC);
    let dir = root
        .join(format!("{:04}", day.year()))
        .join(format!("{:02}", day.month() as u8))
        .join(format!("{:02}", day.day()))
        .join(id.as_str());
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o750)
        .create(&dir)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot create {}: {e}", dir.display())))?;
    Ok(dir)
}

/// A session's recording folder: the one its record names, else found under `root` (moved
/// recordings, another node's path).
pub fn recorded_dir(root: &Path, s: &crate::store::SessionRecord) -> Option<PathBuf> {
    let named = PathBuf::from(&s.dir);
    if named.is_dir() {
        return Some(named);
    }
    find_session_dir(root, &s.id).ok().flatten()
}

/// Find the recording directory of session `id` under `root` (`root/YYYY/MM/DD/<id>/`), for
/// `jitgate replay` and evidence export; `Ok(None)` when there is none.
pub fn find_session_dir(root: &Path, id: &SessionId) -> io::Result<Option<PathBuf>> {
    let subdirs = |dir: &Path| -> io::Result<Vec<PathBuf>> {
        let mut dirs: Vec<PathBuf> = std::fs::read_dir(dir)?
            .filter_map(|e| e.ok())
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .map(|e| e.path())
            .collect();
        // Newest first: a session is most likely recent.
        dirs.sort_unstable_by(|a, b| b.cmp(a));
        Ok(dirs)
    };
    if !root.is_dir() {
        return Ok(None);
    }
    for year in subdirs(root)? {
        for month in subdirs(&year)? {
            for day in subdirs(&month)? {
                let dir = day.join(id.as_str());
                if dir.is_dir() {
                    return Ok(Some(dir));
                }
            }
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_dir_is_dated_in_utc_and_created() {
        let root = tempfile::tempdir().unwrap();
        let id = SessionId::generate();
        // 23:30 at UTC-2 is already the next day in UTC.
        let started = time::macros::datetime!(2026-02-28 23:30 -2);
        let dir = session_dir(root.path(), &id, started).unwrap();
        assert_eq!(dir, root.path().join("2026/03/01").join(id.as_str()));
        assert!(dir.is_dir());
        // Idempotent: a second call finds the directory in place.
        assert_eq!(session_dir(root.path(), &id, started).unwrap(), dir);
        assert_eq!(find_session_dir(root.path(), &id).unwrap(), Some(dir));
        let other = SessionId::generate();
        assert_eq!(find_session_dir(root.path(), &other).unwrap(), None);
        let missing = root.path().join("nope");
        assert_eq!(find_session_dir(&missing, &other).unwrap(), None);
    }
}
