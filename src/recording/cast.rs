//! asciicast v2 recording of one SSH channel, written by a background task.
//!
//! A [`CastRecorder`] is a cheap, cloneable handle around a bounded channel of `bytes::Bytes`; the
//! gateway's channel pump never performs a file syscall per chunk. The writer task JSON-escapes,
//! hashes, flushes at least once a second while data is pending (so a killed gateway leaves a file
//! readable up to the last flush, in whole lines), and fsyncs on [`CastRecorder::finish`].
//!
//! On a channel without a PTY (scp, `tar c | ssh`, rsync) data that stops looking like text, or
//! passes 1 MiB, is no longer written as events: one `m` marker says so, and only sizes and
//! SHA-256 digests are kept, so a 1 GB transfer still makes a small file.

use std::fs::OpenOptions;
use std::future::Future;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use super::RecordingError;

mod writer;
use writer::{Msg, Writer};
#[cfg(test)]
mod tests;

/// Messages buffered between a recorder handle and its writer task; when the writer falls behind,
/// callers wait (back-pressure) rather than drop data.
const CHANNEL_CAPACITY: usize = 128;

/// How a cast file is set up.
#[derive(Debug, Clone)]
pub struct CastOptions {
    /// Terminal columns (the PTY's, or a nominal 80 without one).
    pub width: u16,
    /// Terminal rows (the PTY's, or a nominal 24 without one).
    pub height: u16,
    /// The client's `TERM`, recorded as `env.TERM` in the header.
    pub term: Option<String>,
    /// Header title, e.g. `alice@dc-01 (reset-credential, INC-7)`.
    pub title: String,
    /// Write client → target data as `i` events (it is counted and hashed either way).
    pub record_input: bool,
    /// The channel has a PTY: always write events, never switch to size-and-hash only.
    pub pty: bool,
}

impl Default for CastOptions {
    fn default() -> Self {
        CastOptions {
            width: 80,
            height: 24,
            term: None,
            title: String::new(),
            record_input: true,
            pty: false,
        }
    }
}

/// What a finished recording holds: the file's digest for `session.json` and the audit log, and
/// the size and digest of each direction's raw bytes (kept even when events were not written).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CastSummary {
    /// File name of the cast (no directory).
    pub file: String,
    /// SHA-256 (hex) of the file's bytes.
    pub sha256: String,
    /// Size of the file.
    pub bytes: u64,
    /// Raw target → client bytes seen.
    pub output_bytes: u64,
    /// Raw client → target bytes seen.
    pub input_bytes: u64,
    /// SHA-256 (hex) of the raw target → client bytes.
    pub output_sha256: String,
    /// SHA-256 (hex) of the raw client → target bytes.
    pub input_sha256: String,
    /// The channel switched to size-and-hash only (binary or bulk data without a PTY).
    pub binary: bool,
    /// Event lines written (after the header).
    pub events: u64,
}

/// The asciicast v2 header line.
#[derive(Serialize)]
struct HeaderOut<'a> {
    version: u8,
    width: u16,
    height: u16,
    timestamp: i64,
    env: EnvOut<'a>,
    title: &'a str,
}

#[derive(Serialize)]
struct EnvOut<'a> {
    #[serde(rename = "TERM", skip_serializing_if = "Option::is_none")]
    term: Option<&'a str>,
}

/// Handle to one asciicast v2 recording. Clones share the same file; the recording ends with
/// [`finish`](Self::finish), or when the last handle is dropped (flushed and synced either way).
#[derive(Clone)]
pub struct CastRecorder {
    /// Boxed: a channel allocates room for 32 messages at once, and an idle session's recorder
    /// should not hold 32 of the largest.
    tx: mpsc::Sender<Box<Msg>>,
    start: Instant,
    status: watch::Receiver<Option<RecordingError>>,
    file: Arc<str>,
}

impl std::fmt::Debug for CastRecorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CastRecorder")
            .field("file", &self.file)
            .finish_non_exhaustive()
    }
}

/// A marker whose time is taken when it happens and which is written later
/// ([`CastRecorder::stamp`], [`CastRecorder::record`]): a cut's reason keeps the cut's instant,
/// while the writer's work for it waits until the cut's sockets are closed.
#[derive(Debug)]
pub struct StampedMarker {
    t: f64,
    text: String,
}

impl CastRecorder {
    /// Create the file at `path` (mode 0640; an existing file is an error), write the header and
    /// spawn the writer task. Must be called within a Tokio runtime.
    pub fn start(path: &Path, opts: CastOptions) -> Result<CastRecorder, RecordingError> {
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o640)
            .open(path)
            .map_err(|e| RecordingError::Create {
                path: path.to_path_buf(),
                source: Arc::new(e),
            })?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| path.display().to_string());
        Self::start_with_file(file, name, opts)
    }

    /// Like [`start`](Self::start), for a file the caller already opened for writing (`name` is
    /// what the summary and error messages call it). The header is written at once; if that
    /// fails, [`failed`](Self::failed) resolves promptly.
    pub fn start_with_file(
        file: std::fs::File,
        name: impl Into<String>,
        opts: CastOptions,
    ) -> Result<CastRecorder, RecordingError> {
        let name = name.into();
        let runtime = tokio::runtime::Handle::try_current().map_err(|e| RecordingError::Write {
            file: name.clone(),
            source: Arc::new(std::io::Error::other(format!(
                "no Tokio runtime for the writer: {e}"
            ))),
        })?;
        let header = HeaderOut {
            version: 2,
            width: opts.width,
            height: opts.height,
            timestamp: time::OffsetDateTime::now_utc().unix_timestamp(),
            env: EnvOut {
                term: opts.term.as_deref(),
            },
            title: &opts.title,
        };
        let header = serde_json::to_vec(&header).map_err(|e| RecordingError::Write {
            file: name.clone(),
            source: Arc::new(e.into()),
        })?;
        let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
        let (status_tx, status) = watch::channel(None);
        let writer = Writer::new(name.clone(), file, &header, opts.pty, opts.record_input);
        runtime.spawn(writer.run(rx, status_tx));
        Ok(CastRecorder {
            tx,
            start: Instant::now(),
            status,
            file: name.into(),
        })
    }

    /// Record target → client data (stdout and stderr) as an `o` event, timed now.
    pub async fn output(&self, data: Bytes) -> Result<(), RecordingError> {
        if data.is_empty() {
            return self.check();
        }
        self.send(Msg::Output(self.elapsed(), data)).await
    }

    /// Record client → target data: always counted and hashed, written as an `i` event only when
    /// [`CastOptions::record_input`] is set.
    pub async fn input(&self, data: Bytes) -> Result<(), RecordingError> {
        if data.is_empty() {
            return self.check();
        }
        self.send(Msg::Input(self.elapsed(), data)).await
    }

    /// Record a terminal resize as an `r` event (`"COLSxROWS"`).
    pub async fn resize(&self, cols: u16, rows: u16) -> Result<(), RecordingError> {
        self.send(Msg::Resize(self.elapsed(), cols, rows)).await
    }

    /// Record a jitgate marker (`m` event), e.g. an expiry warning or the termination reason.
    pub async fn marker(&self, text: &str) -> Result<(), RecordingError> {
        self.record(self.stamp(text)).await
    }

    /// A marker with this instant's time, to [`record`](Self::record) later.
    pub fn stamp(&self, text: &str) -> StampedMarker {
        StampedMarker {
            t: self.elapsed(),
            text: text.to_string(),
        }
    }

    /// Record a marker stamped earlier, at its stamped time.
    pub async fn record(&self, marker: StampedMarker) -> Result<(), RecordingError> {
        self.send(Msg::Marker(marker.t, marker.text)).await
    }

    /// Flush, fsync and close the file; return its summary. Other clones can record no more.
    pub async fn finish(self) -> Result<CastSummary, RecordingError> {
        self.check()?;
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Box::new(Msg::Finish(reply)))
            .await
            .map_err(|_| self.closed_error())?;
        answer.await.unwrap_or_else(|_| Err(self.closed_error()))
    }

    /// The failure that stopped this recording, if any.
    pub fn error(&self) -> Option<RecordingError> {
        self.status.borrow().clone()
    }

    /// Resolves with the error as soon as the recording fails (never, if it does not): `select!`
    /// on it next to the session's cancellation token and end the session with its message.
    pub fn failed(&self) -> impl Future<Output = RecordingError> + Send + 'static {
        let mut status = self.status.clone();
        async move {
            let failure = match status.wait_for(Option::is_some).await {
                Ok(current) => current.clone(),
                Err(_) => None,
            };
            match failure {
                Some(e) => e,
                None => std::future::pending().await,
            }
        }
    }

    /// File name of the cast.
    pub fn file_name(&self) -> &str {
        &self.file
    }

    /// Seconds since the recording started.
    fn elapsed(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }

    fn check(&self) -> Result<(), RecordingError> {
        match &*self.status.borrow() {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }

    async fn send(&self, msg: Msg) -> Result<(), RecordingError> {
        self.check()?;
        self.tx
            .send(Box::new(msg))
            .await
            .map_err(|_| self.closed_error())
    }

    /// Why the writer task is gone: its failure, or a normal finish.
    fn closed_error(&self) -> RecordingError {
        self.error().unwrap_or_else(|| RecordingError::Finished {
            file: self.file.to_string(),
        })
    }
}
