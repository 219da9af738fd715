//! The writer task behind a [`CastRecorder`](super::CastRecorder): encodes events as asciicast v2
//! lines, hashes everything, flushes at least once a second and reports the first failure.

use std::io::{self, Write as _};
use std::sync::Arc;
use std::time::Duration;

use aws_lc_rs::digest;
use bytes::Bytes;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::MissedTickBehavior;

use super::CastSummary;
use crate::recording::RecordingError;
use crate::recording::text::{Utf8Decoder, looks_binary};

/// How often pending data is flushed to the file at the latest.
const FLUSH_EVERY: Duration = Duration::from_secs(1);
/// Buffered bytes that trigger a write before the next flush tick.
const WRITE_AT: usize = 64 * 1024;
/// Messages taken from the channel per wake-up.
const BATCH: usize = 64;
/// Data written as events on a channel without a PTY before it is treated as a bulk transfer.
const TEXT_LIMIT: u64 = 1024 * 1024;
/// The marker written when a channel switches to size-and-hash-only recording.
pub(super) const BINARY_MARKER: &str = "binary stream: recording size and SHA-256 only";

/// What a [`CastRecorder`](super::CastRecorder) handle sends to its writer task.
pub(super) enum Msg {
    /// Target → client data, with the seconds since start when it was handed over.
    Output(f64, Bytes),
    /// Client → target data.
    Input(f64, Bytes),
    /// Terminal resized to (cols, rows).
    Resize(f64, u16, u16),
    /// A jitgate marker.
    Marker(f64, String),
    /// Flush, sync and close; answer with the summary.
    Finish(oneshot::Sender<Result<CastSummary, RecordingError>>),
}

/// Byte count, hash and text decoder of one direction.
struct Stream {
    hash: digest::Context,
    bytes: u64,
    /// Bytes of this direction already written as events.
    event_bytes: u64,
    decoder: Utf8Decoder,
}

impl Stream {
    fn new() -> Self {
        Stream {
            hash: digest::Context::new(&digest::SHA256),
            bytes: 0,
            event_bytes: 0,
            decoder: Utf8Decoder::default(),
        }
    }

    fn count(&mut self, data: &[u8]) {
        self.hash.update(data);
        self.bytes += data.len() as u64;
    }
}

/// State of one cast file, owned by its writer task.
pub(super) struct Writer {
    name: String,
    /// Written directly: the lines go to the page cache in whole batches (at most once per
    /// 64 KiB or per second), which costs less than a blocking-pool hand-off per write. Only
    /// the final fsync goes to the blocking pool.
    file: std::fs::File,
    /// Complete lines not yet handed to the file.
    buf: Vec<u8>,
    /// SHA-256 and size of every byte put into `buf` (= the file's bytes once flushed).
    file_hash: digest::Context,
    file_bytes: u64,
    output: Stream,
    input: Stream,
    pty: bool,
    record_input: bool,
    /// Data events stopped: only sizes and hashes are kept.
    binary: bool,
    events: u64,
    /// Time of the last event written; events never go back in time.
    last_t: f64,
    /// Data appended since the last flush.
    dirty: bool,
    /// Scratch space for decoded text.
    text: String,
}

impl Writer {
    /// A writer for `file` whose header line (without newline) is `header`.
    pub(super) fn new(
        name: String,
        file: std::fs::File,
        header: &[u8],
        pty: bool,
        record_input: bool,
    ) -> Self {
        let mut w = Writer {
            name,
            file,
            buf: Vec::new(),
            file_hash: digest::Context::new(&digest::SHA256),
            file_bytes: 0,
            output: Stream::new(),
            input: Stream::new(),
            pty,
            record_input,
            binary: false,
            events: 0,
            last_t: 0.0,
            dirty: false,
            text: String::new(),
        };
        w.buf.extend_from_slice(header);
        w.buf.push(b'\n');
        w.seal(0);
        w
    }

    /// Run until finished, every handle is dropped, or a write fails.
    ///
    /// An `async move` block rather than an `async fn`: an `async fn` moves its arguments into
    /// locals, which kept the writer twice in the task.
    #[allow(clippy::manual_async_fn)] // the layout above, not the syntax, is the point
    pub(super) fn run(
        mut self,
        mut rx: mpsc::Receiver<Box<Msg>>,
        status: watch::Sender<Option<RecordingError>>,
    ) -> impl std::future::Future<Output = ()> {
        async move {
            let fail = |e: RecordingError| {
                tracing::error!(recording.file = %e_file(&e), error = %e, "recording failed");
                status.send_replace(Some(e));
            };
            // The header goes to disk at once: a file that cannot be written fails at session start.
            if let Err(e) = self.flush().await {
                return fail(e);
            }
            let mut tick = tokio::time::interval(FLUSH_EVERY);
            tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
            // Grows with the backlog, up to BATCH messages.
            let mut batch = Vec::new();
            loop {
                tokio::select! {
                    n = rx.recv_many(&mut batch, BATCH) => {
                        if n == 0 {
                            // Every handle was dropped without `finish`: keep what was recorded.
                            if let Err(e) = self.finish().await {
                                fail(e);
                            }
                            return;
                        }
                        for msg in batch.drain(..) {
                            let step = match *msg {
                                Msg::Finish(reply) => {
                                    let result = self.finish().await;
                                    if let Err(e) = &result {
                                        fail(e.clone());
                                    }
                                    let _ = reply.send(result);
                                    return;
                                }
                                Msg::Output(t, data) => {
                                    self.on_output(t, &data);
                                    Ok(())
                                }
                                Msg::Input(t, data) => {
                                    self.on_input(t, &data);
                                    Ok(())
                                }
                                Msg::Resize(t, cols, rows) => {
                                    self.event(t, "r", &format!("{cols}x{rows}"));
                                    Ok(())
                                }
                                Msg::Marker(t, text) => {
                                    self.event(t, "m", &text);
                                    Ok(())
                                }
                            };
                            let step = match step {
                                Ok(()) if self.buf.len() >= WRITE_AT => self.write_out().await,
                                other => other,
                            };
                            if let Err(e) = step {
                                return fail(e);
                            }
                        }
                    }
                    _ = tick.tick(), if self.dirty => {
                        if let Err(e) = self.flush().await {
                            return fail(e);
                        }
                    }
                }
            }
        }
    }

    fn on_output(&mut self, t: f64, data: &[u8]) {
        self.output.count(data);
        if !self.binary {
            self.text_event(t, "o", data, false);
        }
    }

    fn on_input(&mut self, t: f64, data: &[u8]) {
        self.input.count(data);
        if self.record_input && !self.binary {
            self.text_event(t, "i", data, true);
        }
    }

    /// Write `data` as a text event, unless a channel without a PTY turns out to carry binary
    /// data or more than [`TEXT_LIMIT`]: then switch the whole channel to size-and-hash only.
    fn text_event(&mut self, t: f64, code: &str, data: &[u8], input: bool) {
        let guard = !self.pty;
        let stream = if input {
            &mut self.input
        } else {
            &mut self.output
        };
        if guard && (stream.event_bytes >= TEXT_LIMIT || looks_binary(data)) {
            return self.go_binary(t);
        }
        let mut text = std::mem::take(&mut self.text);
        text.clear();
        let decoded = stream.decoder.decode(data, &mut text);
        stream.event_bytes += data.len() as u64;
        if guard && decoded.invalid {
            self.go_binary(t);
        } else if !text.is_empty() {
            self.event(t, code, &text);
        }
        self.text = text;
    }

    fn go_binary(&mut self, t: f64) {
        self.binary = true;
        self.output.decoder.reset();
        self.input.decoder.reset();
        self.event(t, "m", BINARY_MARKER);
    }

    /// Append one `[t, code, data]` line.
    fn event(&mut self, t: f64, code: &str, data: &str) {
        let t = t.max(self.last_t);
        self.last_t = t;
        let start = self.buf.len();
        // Writing into a Vec cannot fail.
        let _ = write!(self.buf, "[{t:.6}, \"{code}\", ");
        let _ = serde_json::to_writer(&mut self.buf, data);
        self.buf.extend_from_slice(b"]\n");
        self.events += 1;
        self.seal(start);
    }

    /// Account for the bytes appended to `buf` since `start`.
    fn seal(&mut self, start: usize) {
        let line = &self.buf[start..];
        self.file_hash.update(line);
        self.file_bytes += line.len() as u64;
        self.dirty = true;
    }

    /// Hand the buffered lines to the file (whole lines only).
    async fn write_out(&mut self) -> Result<(), RecordingError> {
        if !self.buf.is_empty() {
            let r = self.file.write_all(&self.buf);
            r.map_err(|e| self.write_error(e))?;
            self.buf.clear();
        }
        Ok(())
    }

    /// Write out and wait until the file has the data.
    async fn flush(&mut self) -> Result<(), RecordingError> {
        self.write_out().await?;
        // An idle session keeps no buffers: a burst of output grows them only until the next
        // flush, which comes at most a second later.
        self.buf = Vec::new();
        self.text = String::new();
        self.dirty = false;
        Ok(())
    }

    /// Emit any carried partial character, flush, fsync and summarize.
    async fn finish(&mut self) -> Result<CastSummary, RecordingError> {
        if !self.binary {
            let t = self.last_t;
            let mut tail = String::new();
            if self.output.decoder.finish(&mut tail) {
                self.event(t, "o", &tail);
            }
            tail.clear();
            if self.input.decoder.finish(&mut tail) {
                self.event(t, "i", &tail);
            }
        }
        self.flush().await?;
        let r = match self.file.try_clone() {
            Ok(f) => tokio::task::spawn_blocking(move || f.sync_all())
                .await
                .unwrap_or_else(|e| Err(io::Error::other(e.to_string()))),
            Err(e) => Err(e),
        };
        r.map_err(|e| self.write_error(e))?;
        let hex = |ctx: &digest::Context| hex::encode(ctx.clone().finish().as_ref());
        Ok(CastSummary {
            file: self.name.clone(),
            sha256: hex(&self.file_hash),
            bytes: self.file_bytes,
            output_bytes: self.output.bytes,
            input_bytes: self.input.bytes,
            output_sha256: hex(&self.output.hash),
            input_sha256: hex(&self.input.hash),
            binary: self.binary,
            events: self.events,
        })
    }

    fn write_error(&self, e: io::Error) -> RecordingError {
        RecordingError::Write {
            file: self.name.clone(),
            source: Arc::new(e),
        }
    }
}

/// The file an error is about, for the log line.
fn e_file(e: &RecordingError) -> String {
    match e {
        RecordingError::Write { file, .. } | RecordingError::Finished { file } => file.clone(),
        RecordingError::Create { path, .. }
        | RecordingError::Read { path, .. }
        | RecordingError::Format { path, .. } => path.display().to_string(),
        RecordingError::Output(_) | RecordingError::Invalid(_) => String::new(),
    }
}
