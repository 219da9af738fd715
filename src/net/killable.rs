//! A socket wrapper the gateway can cut from outside: once its token is cancelled every read
//! and write fails, so a connection whose peer stopped reading still closes on time. It also
//! notes when the gateway closed its side ([`CloseMark`]): that instant ends a cut's kill
//! latency, whether or not the peer has acknowledged the close yet.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Instant;

use futures_util::task::AtomicWaker;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

/// When the gateway closed its side of a connection: the first write shutdown (FIN sent
/// after the last message) or the first I/O after the connection was killed.
#[derive(Clone, Default)]
pub struct CloseMark(Arc<MarkInner>);

type Hook = Box<dyn FnOnce() + Send>;

#[derive(Default)]
struct MarkInner {
    at: OnceLock<Instant>,
    hook: Mutex<Option<Hook>>,
    /// The session's cut, once the connection has a session ([`CloseMark::cork_on`]).
    cut: OnceLock<CancellationToken>,
    /// Wakes [`CloseMark::closed`].
    closing: tokio::sync::Notify,
}

impl std::fmt::Debug for CloseMark {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("CloseMark").field(&self.get()).finish()
    }
}

impl CloseMark {
    /// The instant the gateway's side closed, if it has.
    pub fn get(&self) -> Option<Instant> {
        self.0.at.get().copied()
    }

    /// Note that the gateway's side is closed now (kept if already noted).
    pub fn set_now(&self) -> Instant {
        let at = *self.0.at.get_or_init(Instant::now);
        self.0.closing.notify_waiters();
        self.run_hook();
        at
    }

    /// Once `cut` is cancelled, the socket is corked at its next write: what a cut writes
    /// (the reason, the channel's end, the disconnect) then leaves with the FIN in one
    /// segment, instead of each write in its own (the kernel sends corked data after 200 ms
    /// at the latest).
    pub fn cork_on(&self, cut: CancellationToken) {
        let _ = self.0.cut.set(cut);
    }

    fn cut(&self) -> Option<&CancellationToken> {
        self.0.cut.get()
    }

    /// Until the side has closed.
    pub async fn closed(&self) {
        // Registered before the check: a close between the two still wakes it.
        let closing = self.0.closing.notified();
        if self.0.at.get().is_some() {
            return;
        }
        closing.await;
    }

    /// Call `f` once, when the side closes (at once if it has).
    pub fn on_close(&self, f: impl FnOnce() + Send + 'static) {
        *self.0.hook.lock().expect("close hook lock") = Some(Box::new(f));
        if self.0.at.get().is_some() {
            self.run_hook();
        }
    }

    fn run_hook(&self) {
        let hook = self.0.hook.lock().expect("close hook lock").take();
        if let Some(f) = hook {
            f();
        }
    }
}

/// A socket that can be made to close with a reset: what it has not sent yet is dropped and
/// the peer sees the end at once, instead of after reading everything queued for it (a
/// rate-limited download can have seconds of data in flight).
pub trait Abort {
    /// Make the coming close a reset.
    fn reset_on_close(&self) {}
    /// Hold small writes until the close (or 200 ms), so that they leave with the FIN.
    fn cork(&self) {}
}

impl Abort for tokio::net::TcpStream {
    fn reset_on_close(&self) {
        let _ = self.set_zero_linger();
    }

    fn cork(&self) {
        let _ = socket2::SockRef::from(self).set_tcp_cork(true);
    }
}

impl Abort for tokio::io::DuplexStream {}

/// Whether a token is cancelled, asked on every read and write at the cost of an atomic load:
/// the token's own check takes its lock, and polling its future takes the waiters' lock too.
/// The future is polled with a waker of this watch's own, which notes the cancellation and
/// wakes the task last registered here; it is polled again only when that waker has fired.
pub(crate) struct Watch {
    cancelled: Pin<Box<WaitForCancellationFutureOwned>>,
    trip: Arc<Trip>,
    waker: Waker,
    /// The task last registered in `trip` (registering the same one again is skipped).
    task: Option<Waker>,
    state: WatchState,
}

#[derive(Clone, Copy, PartialEq)]
enum WatchState {
    /// The future has not been polled since it was made or since the waker fired.
    Unarmed,
    /// The future waits with this watch's waker.
    Armed,
    Cancelled,
}

#[derive(Default)]
struct Trip {
    fired: AtomicBool,
    task: AtomicWaker,
}

impl Wake for Trip {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.fired.store(true, Ordering::Release);
        self.task.wake();
    }
}

impl Watch {
    pub(crate) fn new(token: CancellationToken) -> Self {
        let trip = Arc::new(Trip::default());
        Self {
            cancelled: Box::pin(token.cancelled_owned()),
            waker: Waker::from(trip.clone()),
            trip,
            task: None,
            state: WatchState::Unarmed,
        }
    }

    /// Whether the token is cancelled; `cx`'s task (when given) is woken when it is.
    fn check(&mut self, cx: Option<&Context<'_>>) -> bool {
        if let Some(cx) = cx
            && !self.task.as_ref().is_some_and(|w| w.will_wake(cx.waker()))
        {
            self.trip.task.register(cx.waker());
            self.task = Some(cx.waker().clone());
        }
        match self.state {
            WatchState::Cancelled => return true,
            WatchState::Armed if !self.trip.fired.load(Ordering::Acquire) => return false,
            _ => {}
        }
        // Cleared before the poll: a cancellation after it fires the waker again.
        self.trip.fired.store(false, Ordering::Release);
        // A firing takes the task registered in `trip`: register it again (wakes come only
        // with the cancellation, but a waiting task must never be left without one).
        self.task = cx.map(|cx| {
            self.trip.task.register(cx.waker());
            cx.waker().clone()
        });
        let mut own = Context::from_waker(&self.waker);
        self.state = match self.cancelled.as_mut().poll(&mut own) {
            Poll::Ready(()) => WatchState::Cancelled,
            Poll::Pending => WatchState::Armed,
        };
        self.state == WatchState::Cancelled
    }

    /// Ready once the token is cancelled.
    pub(crate) fn poll_cancelled(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.check(Some(cx)) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

/// `S`, failing all I/O once `kill` is cancelled; a killed socket closes with a reset.
pub struct Killable<S> {
    inner: S,
    killed: Watch,
    mark: CloseMark,
    /// The session's cut, watched from the first write after [`CloseMark::cork_on`].
    cut: Option<Watch>,
    corked: bool,
}

impl<S> Killable<S> {
    /// Wrap `inner`; cancelling `kill` cuts it.
    pub fn new(inner: S, kill: CancellationToken) -> Self {
        Self {
            inner,
            killed: Watch::new(kill),
            mark: CloseMark::default(),
            cut: None,
            corked: false,
        }
    }

    /// Where this socket notes when the gateway closed its side.
    pub fn close_mark(&self) -> CloseMark {
        self.mark.clone()
    }

    fn check(&mut self, cx: &mut Context<'_>) -> io::Result<()>
    where
        S: Abort,
    {
        if !self.killed.check(Some(cx)) {
            return Ok(());
        }
        if self.mark.get().is_none() {
            self.inner.reset_on_close();
        }
        self.mark.set_now();
        Err(io::Error::new(
            io::ErrorKind::ConnectionAborted,
            "connection cut by the gateway",
        ))
    }
}

impl<S: Abort> Killable<S> {
    /// Fail once killed; cork once the session's cut has begun.
    fn before_write(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        self.check(cx)?;
        if !self.corked {
            if self.cut.is_none() {
                self.cut = self.mark.cut().cloned().map(Watch::new);
            }
            if self.cut.as_mut().is_some_and(|c| c.check(None)) {
                self.corked = true;
                self.cut = None;
                self.inner.cork();
            }
        }
        Ok(())
    }
}

impl<S: AsyncRead + Abort + Unpin> AsyncRead for Killable<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if let Err(e) = self.check(cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Abort + Unpin> AsyncWrite for Killable<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if let Err(e) = self.before_write(cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if let Err(e) = self.before_write(cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let Err(e) = self.check(cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_shutdown(cx);
        if r.is_ready() {
            self.mark.set_now();
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn a_pending_read_fails_when_killed() {
        let (a, mut b) = tokio::io::duplex(64);
        let kill = CancellationToken::new();
        let mut k = Killable::new(a, kill.clone());
        b.write_all(b"hi").await.unwrap();
        let mut buf = [0u8; 2];
        k.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"hi");
        let reader = tokio::spawn(async move {
            let mut buf = [0u8; 1];
            k.read(&mut buf).await
        });
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        kill.cancel();
        let err = reader.await.unwrap().unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionAborted);
    }

    /// The watch sees a cancellation whenever it comes (before it was first asked, or while it
    /// waits), wakes the task that asked last, and stays cancelled.
    #[test]
    fn a_watch_sees_the_cancellation_and_wakes_the_last_task() {
        use std::sync::atomic::AtomicUsize;
        struct Count(AtomicUsize);
        impl Wake for Count {
            fn wake(self: Arc<Self>) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let (first, last) = (
            Arc::new(Count(AtomicUsize::new(0))),
            Arc::new(Count(AtomicUsize::new(0))),
        );
        let token = CancellationToken::new();
        let mut watch = Watch::new(token.clone());
        for _ in 0..3 {
            assert!(!watch.check(Some(&Context::from_waker(&Waker::from(first.clone())))));
        }
        assert!(!watch.check(Some(&Context::from_waker(&Waker::from(last.clone())))));
        token.cancel();
        assert_eq!(first.0.load(Ordering::SeqCst), 0);
        assert_eq!(last.0.load(Ordering::SeqCst), 1);
        assert!(watch.check(None));
        assert!(watch.check(None), "stays cancelled");

        let token = CancellationToken::new();
        token.cancel();
        assert!(
            Watch::new(token).check(None),
            "cancelled before the first check"
        );
    }

    #[test]
    fn the_close_hook_runs_once_whether_set_before_or_after_the_close() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let calls = Arc::new(AtomicUsize::new(0));
        let before = CloseMark::default();
        let c = calls.clone();
        before.on_close(move || {
            c.fetch_add(1, Ordering::SeqCst);
        });
        assert_eq!(calls.load(Ordering::SeqCst), 0, "not closed yet");
        before.set_now();
        before.set_now();
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        let after = CloseMark::default();
        after.set_now();
        let c = calls.clone();
        after.on_close(move || {
            c.fetch_add(1, Ordering::SeqCst);
        });
        after.set_now();
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn waiting_for_the_close_ends_when_it_happens_or_at_once_after_it() {
        let mark = CloseMark::default();
        let waiting = tokio::spawn({
            let mark = mark.clone();
            async move { mark.closed().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "an open side is waited for");
        mark.set_now();
        tokio::time::timeout(std::time::Duration::from_secs(5), waiting)
            .await
            .expect("the close wakes the waiter")
            .unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(5), mark.closed())
            .await
            .expect("a closed side is not waited for");
    }

    #[tokio::test]
    async fn a_cut_sessions_writes_are_corked_and_leave_with_the_close() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (client, accepted) =
            tokio::join!(tokio::net::TcpStream::connect(addr), listener.accept());
        let mut k = Killable::new(accepted.unwrap().0, CancellationToken::new());
        let cut = CancellationToken::new();
        k.close_mark().cork_on(cut.clone());
        let corked = |k: &Killable<tokio::net::TcpStream>| {
            socket2::SockRef::from(&k.inner).tcp_cork().unwrap()
        };
        k.write_all(b"before ").await.unwrap();
        assert!(!corked(&k), "a live session's writes are not held");
        cut.cancel();
        k.write_all(b"the reason").await.unwrap();
        assert!(corked(&k), "a cut session's writes wait for the close");
        k.shutdown().await.unwrap();
        let mut got = Vec::new();
        tokio::time::timeout(
            std::time::Duration::from_secs(5),
            client.unwrap().read_to_end(&mut got),
        )
        .await
        .expect("the close sends what was held")
        .unwrap();
        assert_eq!(got, b"before the reason");
    }

    #[tokio::test]
    async fn the_close_mark_is_set_by_shutdown() {
        let (a, mut b) = tokio::io::duplex(64);
        let mut k = Killable::new(a, CancellationToken::new());
        let mark = k.close_mark();
        k.write_all(b"bye").await.unwrap();
        assert!(mark.get().is_none(), "open socket has no close mark");
        k.shutdown().await.unwrap();
        let at = mark.get().expect("shutdown sets the mark");
        let mut got = Vec::new();
        b.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"bye");
        assert_eq!(mark.set_now(), at, "the first close wins");
    }
}
