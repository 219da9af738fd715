//! `http.jsonl`: one line per exchange (time, method, path, redacted query, status, bytes each
//! way, duration, upgrade, refusals), written by one task behind a bounded channel, and body
//! wrappers that count bytes and stop a stream the moment its session is cut.

use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use serde::Serialize;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
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
            Some((k, _))
                if {
                    let k = k.to_ascii_lowercase();
                    SECRET_WORDS.iter().any(|w| k.contains(w))
                } =>
            {
                format!("{k}=***")
            }
            _ => pair.chars().take(512).collect(),
        })
        .collect::<Vec<_>>()
        .join("&")
}

enum LogMsg {
    Line(Exchange),
    /// Write and sync everything queued before this, then answer.
    Flush(tokio::sync::oneshot::Sender<()>),
}

/// Appends exchanges to a session's `http.jsonl`.
#[derive(Clone)]
pub struct HttpLog {
    tx: mpsc::Sender<LogMsg>,
    /// Lines handed to tasks because the queue was full, not yet queued.
    overflow: Arc<Overflow>,
}

#[derive(Default)]
struct Overflow {
    pending: AtomicU64,
    drained: tokio::sync::Notify,
}

impl HttpLog {
    /// Create the file and start the writer task.
    pub async fn create(path: &Path) -> std::io::Result<Self> {
        let file = tokio::fs::OpenOptions::new()
            .create_new(true)
            .write(true)
            .open(path)
            .await?;
        let (tx, mut rx) = mpsc::channel::<LogMsg>(1024);
        tokio::spawn(async move {
            let mut w = tokio::io::BufWriter::with_capacity(64 * 1024, file);
            // Lines reach the file at least every 200 ms (and on every flush request), not one
            // write per exchange.
            let mut tick = tokio::time::interval(std::time::Duration::from_millis(200));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut dirty = false;
            let mut batch = Vec::with_capacity(64);
            loop {
                let n = tokio::select! {
                    n = rx.recv_many(&mut batch, 64) => n,
                    _ = tick.tick() => {
                        if dirty {
                            if let Err(err) = w.flush().await {
                                tracing::error!(error = %err, "cannot flush http.jsonl");
                                return;
                            }
                            dirty = false;
                        }
                        continue;
                    }
                };
                if n == 0 {
                    break;
                }
                let mut acks = Vec::new();
                for m in batch.drain(..) {
                    match m {
                        LogMsg::Line(e) => {
                            let mut line = serde_json::to_vec(&e).expect("exchanges serialize");
                            line.push(b'\n');
                            if let Err(err) = w.write_all(&line).await {
                                tracing::error!(error = %err, "cannot write http.jsonl");
                                return;
                            }
                            dirty = true;
                        }
                        LogMsg::Flush(ack) => acks.push(ack),
                    }
                }
                if !acks.is_empty() {
                    if let Err(err) = w.flush().await {
                        tracing::error!(error = %err, "cannot flush http.jsonl");
                        return;
                    }
                    dirty = false;
                    let _ = w.get_ref().sync_all().await;
                    for ack in acks {
                        let _ = ack.send(());
                    }
                }
            }
            let _ = w.flush().await;
            let _ = w.get_ref().sync_all().await;
        });
        Ok(Self {
            tx,
            overflow: Arc::default(),
        })
    }

    /// Record one exchange (waits if the writer is far behind).
    pub async fn record(&self, e: Exchange) {
        let _ = self.tx.send(LogMsg::Line(e)).await;
    }

    /// Record without waiting (from `Drop`). When the writer is behind, a task waits for room
    /// instead, so no exchange is left out of the recording.
    pub fn record_now(&self, e: Exchange) {
        if let Err(mpsc::error::TrySendError::Full(line)) = self.tx.try_send(LogMsg::Line(e)) {
            let tx = self.tx.clone();
            let overflow = self.overflow.clone();
            overflow.pending.fetch_add(1, Ordering::AcqRel);
            tokio::spawn(async move {
                let _ = tx.send(line).await;
                if overflow.pending.fetch_sub(1, Ordering::AcqRel) == 1 {
                    overflow.drained.notify_waiters();
                }
            });
        }
    }

    /// Wait until every line recorded so far is on disk (before the file is digested).
    pub async fn flush(&self) {
        let queued = async {
            loop {
                let drained = self.overflow.drained.notified();
                if self.overflow.pending.load(Ordering::Acquire) == 0 {
                    break;
                }
                drained.await;
            }
        };
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), queued).await;
        let (ack, done) = tokio::sync::oneshot::channel();
        if self.tx.send(LogMsg::Flush(ack)).await.is_ok() {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(5), done).await;
        }
    }

    /// Whether the writer has stopped (the file cannot be written).
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
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
    pub log: Option<HttpLog>,
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
            if let Some(log) = &p.log {
                log.record_now(p.exchange);
            }
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

    #[tokio::test]
    async fn a_burst_beyond_the_queue_is_recorded_whole_before_flush_returns() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("http.jsonl");
        let log = HttpLog::create(&path).await.unwrap();
        // Without yielding, the writer cannot drain: most of these overflow the queue.
        for i in 0..3000 {
            log.record_now(Exchange {
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
            });
        }
        log.flush().await;
        let text = std::fs::read_to_string(&path).unwrap();
        let paths: std::collections::HashSet<String> = text
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["path"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect();
        assert_eq!(
            paths.len(),
            3000,
            "every exchange is in the file once flush returns"
        );
    }
}
