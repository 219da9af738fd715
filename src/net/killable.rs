//! A socket wrapper the gateway can cut from outside: once its token is cancelled every read
//! and write fails, so a connection whose peer stopped reading still closes on time. It also
//! notes when the gateway closed its side ([`CloseMark`]): that instant ends a cut's kill
//! latency, whether or not the peer has acknowledged the close yet.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Instant;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

/// When the gateway closed its side of a connection: the first write shutdown (FIN sent
/// after the last message) or the first I/O after the connection was killed.
#[derive(Clone, Debug, Default)]
pub struct CloseMark(Arc<OnceLock<Instant>>);

impl CloseMark {
    /// The instant the gateway's side closed, if it has.
    pub fn get(&self) -> Option<Instant> {
        self.0.get().copied()
    }

    /// Note that the gateway's side is closed now (kept if already noted).
    pub fn set_now(&self) -> Instant {
        *self.0.get_or_init(Instant::now)
    }
}

/// `S`, failing all I/O once `kill` is cancelled.
pub struct Killable<S> {
    inner: S,
    killed: Pin<Box<WaitForCancellationFutureOwned>>,
    mark: CloseMark,
}

impl<S> Killable<S> {
    /// Wrap `inner`; cancelling `kill` cuts it.
    pub fn new(inner: S, kill: CancellationToken) -> Self {
        Self {
            inner,
            killed: Box::pin(kill.cancelled_owned()),
            mark: CloseMark::default(),
        }
    }

    /// Where this socket notes when the gateway closed its side.
    pub fn close_mark(&self) -> CloseMark {
        self.mark.clone()
    }

    fn check(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        match self.killed.as_mut().poll(cx) {
            Poll::Ready(()) => {
                self.mark.set_now();
                Err(io::Error::new(
                    io::ErrorKind::ConnectionAborted,
                    "connection cut by the gateway",
                ))
            }
            Poll::Pending => Ok(()),
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Killable<S> {
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

impl<S: AsyncWrite + Unpin> AsyncWrite for Killable<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if let Err(e) = self.check(cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
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
