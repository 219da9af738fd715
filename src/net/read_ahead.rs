//! Fewer, larger reads under and over TLS. rustls reads no more than one record (16 KiB) per
//! `read` call, and a TLS stream hands on one record per read, so a proxy moved a download in
//! 16 KiB pieces: each its own read, its own trip through HTTP, and its own write and TCP
//! segment.
//!
//! [`ReadAhead`], under TLS, lets small messages through untouched and, once a read fills the
//! caller's buffer (more is waiting), reads up to [`CHUNK`] at a time into a buffer of its own
//! and serves the small reads from it, until the socket is drained and the buffer is given
//! back: an idle connection holds none. [`Gather`], over TLS, fills each read with as many
//! records as have arrived.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf as _, BytesMut};
use tokio::io::{AsyncRead, ReadBuf};

/// Most bytes read from the socket at once while data streams in.
pub const CHUNK: usize = 64 * 1024;

/// `S`, its reads batched while data streams in (see the module's notes).
#[derive(Debug)]
pub struct ReadAhead<S> {
    inner: S,
    /// Bytes read from `inner` and not yet handed on.
    buf: BytesMut,
    /// The last read filled its buffer: read ahead next time.
    streaming: bool,
}

impl<S> ReadAhead<S> {
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            buf: BytesMut::new(),
            streaming: false,
        }
    }

    #[cfg(test)]
    fn get_ref(&self) -> &S {
        &self.inner
    }

    /// Hand on what is buffered, and give the buffer back once it is empty and the socket was
    /// drained.
    fn serve(&mut self, out: &mut ReadBuf<'_>) {
        let n = out.remaining().min(self.buf.len());
        out.put_slice(&self.buf[..n]);
        self.buf.advance(n);
        if self.buf.is_empty() && !self.streaming {
            self.buf = BytesMut::new();
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for ReadAhead<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let me = self.get_mut();
        if !me.buf.is_empty() {
            me.serve(out);
            return Poll::Ready(Ok(()));
        }
        if !me.streaming || out.remaining() >= CHUNK {
            let wanted = out.remaining();
            let before = out.filled().len();
            std::task::ready!(Pin::new(&mut me.inner).poll_read(cx, out))?;
            let got = out.filled().len() - before;
            me.streaming = wanted > 0 && got == wanted && wanted < CHUNK;
            return Poll::Ready(Ok(()));
        }
        // Not zeroed: `poll_read_buf` reads into the spare capacity.
        me.buf.reserve(CHUNK);
        match tokio_util::io::poll_read_buf(Pin::new(&mut me.inner), cx, &mut me.buf) {
            Poll::Pending => {
                // Drained after all: an idle connection holds no buffer.
                me.buf = BytesMut::new();
                me.streaming = false;
                Poll::Pending
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Ready(Ok(got)) => {
                me.streaming = got >= CHUNK;
                me.serve(out);
                Poll::Ready(Ok(()))
            }
        }
    }
}

writes_through!(ReadAhead);
aborts_through!(ReadAhead);

/// `T` (a TLS stream), each read filled with what has arrived rather than one record of it.
#[derive(Debug)]
pub struct Gather<T> {
    inner: T,
    /// An error met after a read had data to hand on: the next read returns it.
    error: Option<io::Error>,
}

impl<T> Gather<T> {
    pub fn new(inner: T) -> Self {
        Self { inner, error: None }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Gather<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let me = self.get_mut();
        if let Some(e) = me.error.take() {
            return Poll::Ready(Err(e));
        }
        let start = out.filled().len();
        loop {
            let before = out.filled().len();
            let got_any = before > start;
            match Pin::new(&mut me.inner).poll_read(cx, out) {
                Poll::Ready(Ok(())) => {
                    // The end, or full: hand on what there is.
                    if out.filled().len() == before || out.remaining() == 0 {
                        return Poll::Ready(Ok(()));
                    }
                }
                Poll::Ready(Err(e)) if got_any => {
                    me.error = Some(e);
                    return Poll::Ready(Ok(()));
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending if got_any => return Poll::Ready(Ok(())),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

writes_through!(Gather);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::pieces::{Pieces, Then};
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    /// Counts the reads that reach the socket.
    struct Counted<S> {
        inner: S,
        reads: usize,
    }

    impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            let r = Pin::new(&mut self.inner).poll_read(cx, buf);
            if r.is_ready() {
                self.reads += 1;
            }
            r
        }
    }

    #[tokio::test]
    async fn a_stream_is_read_in_large_chunks_and_arrives_whole_and_in_order() {
        let (mut tx, rx) = tokio::io::duplex(1 << 20);
        let data: Vec<u8> = (0..1_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
        tx.write_all(&data).await.unwrap();
        drop(tx);
        let mut r = ReadAhead::new(Counted {
            inner: rx,
            reads: 0,
        });
        let mut got = Vec::new();
        let mut small = [0u8; 4096];
        loop {
            let n = r.read(&mut small).await.unwrap();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&small[..n]);
        }
        assert_eq!(got, data);
        // 4 KiB reads straight through would take 245; one direct read, then 64 KiB ones.
        let reads = r.get_ref().reads;
        assert!(reads <= 20, "{reads} reads reached the socket");
        assert!(r.buf.is_empty(), "the buffer is given back at the end");
    }

    #[tokio::test]
    async fn small_messages_pass_straight_through_and_leave_no_buffer() {
        let (mut tx, rx) = tokio::io::duplex(1 << 16);
        let mut r = ReadAhead::new(rx);
        for msg in [&b"GET / HTTP/1.1\r\n\r\n"[..], b"second", b"third message"] {
            tx.write_all(msg).await.unwrap();
            let mut buf = [0u8; 4096];
            let n = r.read(&mut buf).await.unwrap();
            assert_eq!(&buf[..n], msg);
            assert!(
                r.buf.is_empty() && !r.streaming,
                "no read-ahead for {msg:?}"
            );
        }
    }

    #[tokio::test]
    async fn after_a_burst_the_buffer_is_given_back() {
        let (mut tx, rx) = tokio::io::duplex(1 << 20);
        let mut r = ReadAhead::new(rx);
        tx.write_all(&[1u8; 100_000]).await.unwrap();
        let mut buf = vec![0u8; 100_000];
        r.read_exact(&mut buf[..4096]).await.unwrap();
        assert!(r.streaming, "a full read means more is waiting");
        let mut chunk = [0u8; 4096];
        let mut left = 100_000 - 4096;
        while left > 0 {
            left -= r.read(&mut chunk).await.unwrap();
        }
        assert!(r.buf.is_empty(), "drained: no buffer held");
        tx.write_all(b"later").await.unwrap();
        let n = r.read(&mut chunk).await.unwrap();
        assert_eq!(&chunk[..n], b"later");
    }

    fn pieces(n: usize, then: Then) -> Pieces {
        Pieces::new((0..n).map(|i| vec![i as u8; 10]), then)
    }

    #[tokio::test]
    async fn a_gathered_read_takes_every_record_that_has_arrived() {
        let mut g = Gather::new(pieces(5, Then::Wait));
        let mut buf = [0u8; 35];
        let n = g.read(&mut buf).await.unwrap();
        assert_eq!(n, 35, "full: three pieces and half of the fourth");
        let n = g.read(&mut buf).await.unwrap();
        assert_eq!(n, 15, "the rest, then nothing more has arrived");
        assert_eq!(&buf[..5], &[3u8; 5]);
        assert_eq!(&buf[5..15], &[4u8; 10]);
    }

    #[tokio::test]
    async fn an_error_after_data_comes_with_the_next_read() {
        let mut g = Gather::new(pieces(2, Then::Fail));
        let mut buf = [0u8; 100];
        assert_eq!(g.read(&mut buf).await.unwrap(), 20, "the data first");
        let e = g.read(&mut buf).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
    }
}
