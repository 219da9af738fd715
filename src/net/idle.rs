//! Idle HTTP connections are closed: one that sends no request soon after its handshake, and
//! one with no request in flight for a while. A request counts as in flight from its headers to
//! the end of its response body, so a long download or a slow target never looks idle, and
//! HTTP/2 pings do not keep an otherwise idle connection open.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use tokio::time::Instant;

use super::gate::Pass;

/// How long a new connection may take to send its first request (after the TLS handshake,
/// which has its own limit): browsers and `curl` send theirs at once.
pub const FIRST_REQUEST: Duration = Duration::from_secs(10);
/// How long a connection may stay open with no request in flight: longer than browsers wait
/// before reusing a connection (about a minute), like common web servers' keep-alive limit.
pub const KEEP_ALIVE: Duration = Duration::from_secs(75);

/// One connection's requests in flight and when the last one ended.
#[derive(Debug, Clone)]
pub struct Activity(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    opened: Instant,
    inflight: AtomicUsize,
    requests: AtomicU64,
    /// Milliseconds after `opened` at which the last request ended.
    last_end_ms: AtomicU64,
    /// The connection's place among unauthenticated ones, given back at its first request.
    pass: Mutex<Option<Pass>>,
}

impl Activity {
    /// A new connection holding `pass` until its first request.
    pub fn new(pass: Option<Pass>) -> Self {
        Self(Arc::new(Inner {
            opened: Instant::now(),
            inflight: AtomicUsize::new(0),
            requests: AtomicU64::new(0),
            last_end_ms: AtomicU64::new(0),
            pass: Mutex::new(pass),
        }))
    }

    /// A request has arrived; it is in flight until the guard (moved into its response body
    /// with [`Guarded`]) is dropped.
    pub fn request(&self) -> InFlight {
        self.0.inflight.fetch_add(1, Ordering::AcqRel);
        if self.0.requests.fetch_add(1, Ordering::AcqRel) == 0 {
            self.0.pass.lock().expect("pass lock").take();
        }
        InFlight(self.clone())
    }

    /// Resolves once the connection is idle: no first request within [`FIRST_REQUEST`] of
    /// opening, or no request in flight for [`KEEP_ALIVE`].
    pub async fn idle(&self) {
        self.idle_after(FIRST_REQUEST, KEEP_ALIVE).await
    }

    async fn idle_after(&self, first: Duration, keep_alive: Duration) {
        loop {
            let deadline = if self.0.inflight.load(Ordering::Acquire) > 0 {
                Instant::now() + keep_alive
            } else if self.0.requests.load(Ordering::Acquire) == 0 {
                self.0.opened + first
            } else {
                let end = Duration::from_millis(self.0.last_end_ms.load(Ordering::Acquire));
                self.0.opened + end + keep_alive
            };
            if Instant::now() >= deadline && self.0.inflight.load(Ordering::Acquire) == 0 {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    }
}

/// A request in flight; its end is noted when dropped.
#[derive(Debug)]
pub struct InFlight(Activity);

impl Drop for InFlight {
    fn drop(&mut self) {
        let inner = &self.0.0;
        let ms = inner.opened.elapsed().as_millis() as u64;
        inner.last_end_ms.fetch_max(ms, Ordering::AcqRel);
        inner.inflight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A response body that keeps its request in flight until it ends or is dropped.
pub struct Guarded<B> {
    body: B,
    _inflight: InFlight,
}

impl<B> Guarded<B> {
    pub fn new(body: B, inflight: InFlight) -> Self {
        Self {
            body,
            _inflight: inflight,
        }
    }
}

impl<B> Body for Guarded<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_connection_without_a_request_is_idle_after_the_first_request_limit() {
        let a = Activity::new(None);
        let t = Instant::now();
        a.idle_after(Duration::from_secs(10), Duration::from_secs(75))
            .await;
        assert_eq!(t.elapsed(), Duration::from_secs(10));
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_in_flight_is_never_idle_and_keep_alive_counts_from_its_end() {
        let a = Activity::new(None);
        let req = a.request();
        let waiter = {
            let a = a.clone();
            tokio::spawn(async move {
                let t = Instant::now();
                a.idle_after(Duration::from_secs(10), Duration::from_secs(75))
                    .await;
                t.elapsed()
            })
        };
        tokio::time::sleep(Duration::from_secs(500)).await;
        assert!(!waiter.is_finished(), "idle while a request was in flight");
        drop(req);
        let waited = waiter.await.unwrap();
        assert!(
            waited >= Duration::from_secs(575) && waited <= Duration::from_secs(651),
            "{waited:?}"
        );
    }
}
