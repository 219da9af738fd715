//! One gateway process per data directory: `serve` holds an exclusive lock on
//! `<data_dir>/jitgate.lock` for its whole life, taken before it reads or writes anything else
//! there. A second process on the same directory (an overlapping restart, an operator who
//! starts it twice) would otherwise run crash recovery on the first one's live sessions and
//! fork the audit chain.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// The lock file's name inside the data directory.
pub const LOCK_FILE: &str = "jitgate.lock";

/// Why the lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "{dir} is in use by another jitgate process ({holder}; lock file {file}); stop that process first, or give this gateway its own gateway.data_dir"
    )]
    Held {
        dir: String,
        file: String,
        holder: String,
    },
    #[error("cannot lock {file}: {reason}; check that the directory exists and is writable")]
    Io { file: String, reason: String },
}

/// Held for the life of the process; the operating system releases it when the process ends,
/// however it ends (kill -9 included), so a stale file never blocks a restart.
#[derive(Debug)]
pub struct DataDirLock {
    _file: File,
    path: PathBuf,
}

impl DataDirLock {
    /// Take the lock on `dir` (created if missing) and write this process's id into it.
    pub fn acquire(dir: &Path) -> Result<Self, LockError> {
        let path = dir.join(LOCK_FILE);
        let io = |e: std::io::Error| LockError::Io {
            file: path.display().to_string(),
            reason: e.to_string(),
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                let holder = match text.trim().parse::<u32>() {
                    Ok(pid) => format!("process id {pid}"),
                    Err(_) => "a process that has not written its id yet".to_string(),
                };
                return Err(LockError::Held {
                    dir: dir.display().to_string(),
                    file: path.display().to_string(),
                    holder,
                });
            }
            Err(TryLockError::Error(e)) => return Err(io(e)),
        }
        file.set_len(0).map_err(io)?;
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        writeln!(file, "{}", std::process::id()).map_err(io)?;
        file.sync_data().map_err(io)?;
        Ok(Self { _file: file, path })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_on_one_directory_is_refused_naming_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let first = DataDirLock::acquire(dir.path()).unwrap();
        let err = DataDirLock::acquire(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains(&format!("process id {}", std::process::id())),
            "{err}"
        );
        assert!(err.contains("jitgate.lock"), "{err}");
        drop(first);
        // Released with its holder: the next start succeeds.
        DataDirLock::acquire(dir.path()).unwrap();
    }
}
