//! `http.jsonl`: one line per exchange (time, method, path, redacted query, status, bytes each
//! way, duration, upgrade, refusals), buffered by the requests and written by one task, and body
//! wrappers that count bytes and stop a stream the moment its session is cut.

use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use serde::Serialize;
use tokio::io::AsyncWriteExt;
use tokio::sync::Notify;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

/// Boxed error type of bodies passing through the gateway.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// One exchange as recorded.
#[derive(Debug, Clone, Serialize)]
pub struct Exchange {
    pub ts: String,
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    pub status: u16,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub duration_ms: u64,
    pub upgrade: Option<String>,
    /// Why the gateway answered itself (refused by the task's allow-list, session ended, ...).
    pub refused: Option<String>,
    /// The response stream was cut before its end.
    pub aborted: bool,
}

impl Exchange {
    /// Append this exchange to `out` as one line of `http.jsonl`: the JSON `serde_json` writes
    /// for it, written here directly because it runs once per request and serde's
    /// field-by-field path cost about 3,100 of the gateway's 97,700 instructions per request
    /// (callgrind). A test holds the two equal, so a field added to `Exchange` and not here
    /// fails it.
    fn write_line(&self, out: &mut Vec<u8>) {
        let mut n = itoa::Buffer::new();
        out.extend_from_slice(b"{\"ts\":");
        json_str(out, &self.ts);
        out.extend_from_slice(b",\"method\":");
        json_str(out, &self.method);
        out.extend_from_slice(b",\"path\":");
        json_str(out, &self.path);
        out.extend_from_slice(b",\"query\":");
        json_opt_str(out, self.query.as_deref());
        out.extend_from_slice(b",\"status\":");
        out.extend_from_slice(n.format(self.status).as_bytes());
        out.extend_from_slice(b",\"bytes_in\":");
        out.extend_from_slice(n.format(self.bytes_in).as_bytes());
        out.extend_from_slice(b",\"bytes_out\":");
        out.extend_from_slice(n.format(self.bytes_out).as_bytes());
        out.extend_from_slice(b",\"duration_ms\":");
        out.extend_from_slice(n.format(self.duration_ms).as_bytes());
        out.extend_from_slice(b",\"upgrade\":");
        json_opt_str(out, self.upgrade.as_deref());
        out.extend_from_slice(b",\"refused\":");
        json_opt_str(out, self.refused.as_deref());
        out.extend_from_slice(if self.aborted {
            b",\"aborted\":true}\n"
        } else {
            b",\"aborted\":false}\n"
        });
    }
}

/// `s` as a JSON string, escaped as `serde_json` escapes it: `"` and `\\`, the short escapes
/// of `\b \f \n \r \t`, and `\u00xx` for the other control characters.
fn json_str(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes = s.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    // Most strings (a time, a method, a path) need no escape: one scan, one copy.
    if !bytes.iter().any(|&b| b < 0x20 || b == b'"' || b == b'\\') {
        out.extend_from_slice(bytes);
        out.push(b'"');
        return;
    }
    let mut plain = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let control;
        let escaped: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0..0x20 => {
                control = [
                    b'\\',
                    b'u',
                    b'0',
                    b'0',
                    HEX[usize::from(b >> 4)],
                    HEX[usize::from(b & 15)],
                ];
                &control
            }
            _ => continue,
        };
        out.extend_from_slice(&bytes[plain..i]);
        out.extend_from_slice(escaped);
        plain = i + 1;
    }
    out.extend_from_slice(&bytes[plain..]);
    out.push(b'"');
}

fn json_opt_str(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => json_str(out, s),
        None => out.extend_from_slice(b"null"),
    }
}

/// Names of query parameters whose values are never recorded.
const SECRET_WORDS: &[&str] = &[
    "token",
    "password",
    "passwd",
    "secret",
    "key",
    "auth",
    "session",
    "code",
    "sig",
    "credential",
];

/// The query string with secret-looking parameters' values replaced by `***`.
pub fn redact_query(q: &str) -> String {
    q.split('&')
        .map(|pair| match pair.split_once('=') {
            // The name as written, and as the target reads it (`pass%77ord` is `password`).
            Some((k, _))
                if {
                    let decoded = super::percent_decode_lossy(&k.replace('+', " "));
                    let names = [
                        k.to_ascii_lowercase(),
                        String::from_utf8_lossy(&decoded).to_ascii_lowercase(),
                    ];
                    names
                        .iter()
                        .any(|n| SECRET_WORDS.iter().any(|w| n.contains(w)))
                } =>
            {
                format!("{}=***", k.chars().take(512).collect::<String>())
            }
            _ => pair.chars().take(512).collect(),
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// Buffered lines written out at once past this size (the writer also writes every 200 ms).
const WRITE_AT: usize = 64 * 1024;
/// Past this much unwritten text (the disk is not keeping up), new requests wait.
const MAX_UNWRITTEN: usize = 16 * 1024 * 1024;

/// Appends exchanges to a session's `http.jsonl`. A request writes its line into the session's
/// buffer itself, with no hand-off to another task; one writer task per session writes the
/// buffer out at least every 200 ms, at once past 64 KiB, and on [`flush`](Self::flush).
#[derive(Clone)]
pub struct HttpLog {
    shared: Arc<LogShared>,
    /// The last handle dropped tells the writer to write what is left and stop.
    _handles: Arc<Handles>,
}

struct LogShared {
    state: std::sync::Mutex<LogState>,
    /// Bytes buffered and not written yet (read without the lock).
    unwritten: AtomicUsize,
    /// Wakes the writer: a full buffer, a flush, or the last handle gone.
    wake: Notify,
    /// The writer wrote (room for requests waiting on [`MAX_UNWRITTEN`]).
    wrote: Notify,
    /// The file cannot be written; the session is ended with that reason.
    failed: AtomicBool,
}

#[derive(Default)]
struct LogState {
    lines: Vec<u8>,
    flushes: Vec<tokio::sync::oneshot::Sender<()>>,
    closing: bool,
}

struct Handles(Arc<LogShared>);

impl Drop for Handles {
    fn drop(&mut self) {
        self.0.state.lock().expect("http log lock").closing = true;
        self.0.wake.notify_one();
    }
}

impl HttpLog {
    /// Create the file and start the writer task.
    pub async fn create(path: &Path) -> std::io::Result<Self> {
        let file = tokio::fs::OpenOptions::new()
            .create_new(true)
            .write(true)
            .open(path)
            .await?;
        let shared = Arc::new(LogShared {
            state: std::sync::Mutex::new(LogState::default()),
            unwritten: AtomicUsize::new(0),
            wake: Notify::new(),
            wrote: Notify::new(),
            failed: AtomicBool::new(false),
        });
        tokio::spawn(write_out(shared.clone(), file));
        Ok(Self {
            _handles: Arc::new(Handles(shared.clone())),
            shared,
        })
    }

    /// Record one exchange; waits first while the disk is far behind.
    pub async fn record(&self, e: Exchange) {
        self.room().await;
        self.record_now(e);
    }

    /// Record one exchange now (also from `Drop`).
    pub fn record_now(&self, e: Exchange) {
        let len = {
            let mut st = self.shared.state.lock().expect("http log lock");
            e.write_line(&mut st.lines);
            self.shared
                .unwritten
                .store(st.lines.len(), Ordering::Release);
            st.lines.len()
        };
        if len >= WRITE_AT {
            self.shared.wake.notify_one();
        }
    }

    /// Until the unwritten text is under [`MAX_UNWRITTEN`] (at once, unless the disk stalls).
    pub async fn room(&self) {
        while self.shared.unwritten.load(Ordering::Acquire) > MAX_UNWRITTEN && !self.is_closed() {
            let wrote = self.shared.wrote.notified();
            if self.shared.unwritten.load(Ordering::Acquire) <= MAX_UNWRITTEN {
                break;
            }
            let _ = tokio::time::timeout(super::timing::LOG_TICK, wrote).await;
        }
    }

    /// Wait until every line recorded so far is on disk (before the file is digested).
    pub async fn flush(&self) {
        let (ack, done) = tokio::sync::oneshot::channel();
        self.shared
            .state
            .lock()
            .expect("http log lock")
            .flushes
            .push(ack);
        self.shared.wake.notify_one();
        let _ = tokio::time::timeout(super::timing::LOG_FLUSH_WAIT, done).await;
    }

    /// Whether the writer has stopped (the file cannot be written).
    pub fn is_closed(&self) -> bool {
        self.shared.failed.load(Ordering::Acquire)
    }
}

/// The writer task: takes the buffer, writes it, syncs on a flush and at the end.
async fn write_out(shared: Arc<LogShared>, mut file: tokio::fs::File) {
    let mut tick = tokio::time::interval(super::timing::LOG_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut out = Vec::new();
    loop {
        tokio::select! {
            _ = shared.wake.notified() => {}
            _ = tick.tick() => {}
        }
        let (flushes, closing) = {
            let mut st = shared.state.lock().expect("http log lock");
            std::mem::swap(&mut st.lines, &mut out);
            shared.unwritten.store(0, Ordering::Release);
            (std::mem::take(&mut st.flushes), st.closing)
        };
        if !out.is_empty() {
            let written = async {
                file.write_all(&out).await?;
                file.flush().await
            };
            if let Err(err) = written.await {
                tracing::error!(error = %err, "cannot write http.jsonl");
                shared.failed.store(true, Ordering::Release);
                shared.wrote.notify_waiters();
                return;
            }
            out.clear();
            // A burst's buffer is not kept for the session's life.
            out.shrink_to(WRITE_AT);
            shared.wrote.notify_waiters();
        }
        if !flushes.is_empty() || closing {
            let _ = file.sync_all().await;
            for ack in flushes {
                let _ = ack.send(());
            }
        }
        if closing {
            return;
        }
    }
}

/// Counts request bytes as they pass.
pub struct CountIn<B> {
    inner: B,
    count: Arc<AtomicU64>,
    limit: u64,
}

impl<B> CountIn<B> {
    /// Count into `count`; fail the stream past `limit` bytes.
    pub fn new(inner: B, count: Arc<AtomicU64>, limit: u64) -> Self {
        Self {
            inner,
            count,
            limit,
        }
    }
}

impl<B> Body for CountIn<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(f))) => {
                if let Some(d) = f.data_ref() {
                    let n =
                        self.count.fetch_add(d.len() as u64, Ordering::Relaxed) + d.len() as u64;
                    if n > self.limit {
                        return Poll::Ready(Some(Err(
                            "request body over the gateway's limit".into()
                        )));
                    }
                }
                Poll::Ready(Some(Ok(f)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A response body on its way to the client: counted, cut when the session ends, and
/// recorded in `http.jsonl` when it finishes (or is dropped).
pub struct Tap<B: Body> {
    inner: B,
    cut: Pin<Box<WaitForCancellationFutureOwned>>,
    done: Option<Pending>,
    bytes_out: u64,
}

/// What is known of an exchange before its response body ends.
pub struct Pending {
    pub log: HttpLog,
    pub exchange: Exchange,
    pub started: Instant,
    pub bytes_in: Arc<AtomicU64>,
    pub inflight: Arc<super::Inflight>,
}

impl<B: Body> Tap<B> {
    /// Wrap `inner`, cut on `token`, finishing `pending` at the end.
    pub fn new(inner: B, token: CancellationToken, pending: Pending) -> Self {
        Self {
            inner,
            cut: Box::pin(token.cancelled_owned()),
            done: Some(pending),
            bytes_out: 0,
        }
    }

    fn finish(&mut self, aborted: bool) {
        if let Some(mut p) = self.done.take() {
            p.exchange.bytes_out = self.bytes_out;
            p.exchange.bytes_in = p.bytes_in.load(Ordering::Relaxed);
            p.exchange.duration_ms = p.started.elapsed().as_millis() as u64;
            p.exchange.aborted = aborted;
            p.log.record_now(p.exchange);
            p.inflight
                .leave(self.bytes_out, p.bytes_in.load(Ordering::Relaxed));
        }
    }
}

impl<B: Body> Drop for Tap<B> {
    fn drop(&mut self) {
        // hyper drops a body whose length says it is complete without polling its end.
        let complete = self.inner.is_end_stream();
        self.finish(!complete);
    }
}

impl<B> Body for Tap<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if self.cut.as_mut().poll(cx).is_ready() {
            self.finish(true);
            return Poll::Ready(Some(Err("the session was terminated".into())));
        }
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(f))) => {
                if let Some(d) = f.data_ref() {
                    self.bytes_out += d.len() as u64;
                }
                Poll::Ready(Some(Ok(f)))
            }
            Poll::Ready(Some(Err(e))) => {
                self.finish(true);
                Poll::Ready(Some(Err(e.into())))
            }
            Poll::Ready(None) => {
                self.finish(false);
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_looking_parameters_are_redacted() {
        assert_eq!(
            redact_query("user=dave&access_token=abc&page=2&Password=x&sig=1"),
            "user=dave&access_token=***&page=2&Password=***&sig=***"
        );
        assert_eq!(redact_query("q=hello"), "q=hello");
    }

    /// Found by the `https_redact_query` fuzz target (fuzz/regressions/https_redact_query/).
    #[test]
    fn percent_encoded_secret_names_are_redacted_too() {
        assert_eq!(
            redact_query("pass%77ord=hunter2&page=2"),
            "pass%77ord=***&page=2"
        );
        assert_eq!(redact_query("api%5Fkey=k&x=1"), "api%5Fkey=***&x=1");
    }

    #[test]
    fn a_line_is_the_json_serde_writes_whatever_its_strings_hold() {
        let every_ascii: String = (0u8..0x80).map(char::from).collect();
        let strings = [
            String::new(),
            "/users/dave".into(),
            every_ascii,
            "quote \" backslash \\ tab \t nul \0 del \x7f".into(),
            "caf\u{e9} \u{2028} \u{1f512} \u{fffd}".into(),
        ];
        for (i, s) in strings.iter().enumerate() {
            let mut e = exchange(i);
            e.method = s.clone();
            e.path = s.clone();
            e.query = (i % 2 == 0).then(|| s.clone());
            e.upgrade = (i % 2 == 1).then(|| s.clone());
            e.refused = (i % 3 == 0).then(|| s.clone());
            e.aborted = i % 2 == 0;
            e.status = u16::MAX;
            e.bytes_in = u64::MAX;
            e.bytes_out = i as u64;
            e.duration_ms = 0;
            let mut line = Vec::new();
            e.write_line(&mut line);
            let mut expected = serde_json::to_vec(&e).unwrap();
            expected.push(b'\n');
            assert_eq!(
                String::from_utf8(line).unwrap(),
                String::from_utf8(expected).unwrap()
            );
        }
    }

    #[tokio::test]
    async fn a_burst_is_recorded_whole_before_flush_returns() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("http.jsonl");
        let log = HttpLog::create(&path).await.unwrap();
        // Without yielding, the writer cannot run: all of it waits in the buffer.
        for i in 0..3000 {
            log.record_now(exchange(i));
        }
        log.flush().await;
        assert_eq!(
            paths(&path).len(),
            3000,
            "every exchange is in the file once flush returns"
        );
        // What is left when the last handle goes is written too.
        log.record_now(exchange(3000));
        drop(log);
        for _ in 0..100 {
            if paths(&path).len() == 3001 {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        panic!("the last line was not written after the log was dropped");
    }

    fn exchange(i: usize) -> Exchange {
        Exchange {
            ts: "2026-01-01T00:00:00.000Z".into(),
            method: "GET".into(),
            path: format!("/page/{i}"),
            query: None,
            status: 200,
            bytes_in: 0,
            bytes_out: 1,
            duration_ms: 0,
            upgrade: None,
            refused: None,
            aborted: false,
        }
    }

    fn paths(path: &Path) -> std::collections::HashSet<String> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["path"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect()
    }
}
