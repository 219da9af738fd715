//! A client's stream that refuses a PROXY header at its start ([`Screened`]), for connections
//! whose header, if any, was already read: a direct client's (its address is not a balancer's,
//! so a header from it would be a forged address) and a relayed client's (whose own header,
//! sent through the balancer, would be a second and forged one).
//!
//! Why a wrapper rather than reading or peeking first: an SSH server speaks first (its version
//! line) and a client may wait for it before saying anything, so waiting for the client's first
//! bytes before the handshake could stall it. Peeking has the same wait. The wrapper instead
//! looks at the first bytes as the handshake reads them: bytes that cannot begin a PROXY header
//! pass at once (an SSH client starts with `SSH-`, a TLS client with 0x16, each ruled out by
//! its first byte), writes are never held, and only a start that still agrees with a signature
//! (`P`, `\r`) is held back until it either completes one (the read fails; the tripwire
//! notes which version) or stops agreeing (the held bytes are handed on, unchanged).

use std::io;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, ReadBuf};

use super::header::{V1_PREFIX, V2_SIGNATURE, Version, could_begin_header};

/// The longest signature screened for (v2's).
const HELD: usize = V2_SIGNATURE.len();

/// Notes whether a [`Screened`] stream met a PROXY header, and which version.
#[derive(Debug, Clone, Default)]
pub struct Tripwire(Arc<OnceLock<Version>>);

impl Tripwire {
    /// The version of the PROXY header the stream began with, if it did.
    pub fn tripped(&self) -> Option<Version> {
        self.0.get().copied()
    }
}

#[derive(Debug)]
enum State {
    /// The first bytes, all still agreeing with a signature.
    Screening { held: [u8; HELD], len: usize },
    /// Screened bytes that were no header, being handed on.
    Releasing {
        held: [u8; HELD],
        at: usize,
        len: usize,
    },
    /// Past the start: reads go straight through.
    Open,
    /// The stream began with a PROXY header; every read fails.
    Refused,
}

/// `S`, whose reads fail if it begins with a PROXY header (see the module's notes).
#[derive(Debug)]
pub struct Screened<S> {
    inner: S,
    state: State,
    tripwire: Tripwire,
}

impl<S> Screened<S> {
    /// Screen the start of `inner`.
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            state: State::Screening {
                held: [0; HELD],
                len: 0,
            },
            tripwire: Tripwire::default(),
        }
    }

    /// Where this stream notes a PROXY header at its start.
    pub fn tripwire(&self) -> Tripwire {
        self.tripwire.clone()
    }
}

/// What the first bytes of a stream are, so far.
enum Start {
    /// They agree with a signature but do not complete it: wait for more.
    Undecided,
    /// A PROXY header.
    Header(Version),
    /// No PROXY header.
    Clear,
}

fn screen(start: &[u8]) -> Start {
    if start.starts_with(V1_PREFIX) {
        Start::Header(Version::V1)
    } else if start.starts_with(V2_SIGNATURE) {
        Start::Header(Version::V2)
    } else if could_begin_header(start) {
        Start::Undecided
    } else {
        Start::Clear
    }
}

fn refused() -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        "the connection began with a PROXY header that it may not send",
    )
}

impl<S: AsyncRead + Unpin> AsyncRead for Screened<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let me = &mut *self;
        loop {
            match &mut me.state {
                State::Open => return Pin::new(&mut me.inner).poll_read(cx, out),
                State::Refused => return Poll::Ready(Err(refused())),
                State::Releasing { held, at, len } => {
                    let k = (*len - *at).min(out.remaining());
                    out.put_slice(&held[*at..*at + k]);
                    *at += k;
                    if at == len {
                        me.state = State::Open;
                    }
                    return Poll::Ready(Ok(()));
                }
                State::Screening { held, len } => {
                    if out.remaining() == 0 {
                        return Poll::Ready(Ok(()));
                    }
                    let mut more = ReadBuf::new(&mut held[*len..]);
                    ready!(Pin::new(&mut me.inner).poll_read(cx, &mut more))?;
                    let k = more.filled().len();
                    if k == 0 {
                        // The end of the stream: hand on what was held, then the end.
                        let (held, len) = (*held, *len);
                        if len == 0 {
                            me.state = State::Open;
                            return Poll::Ready(Ok(()));
                        }
                        me.state = State::Releasing { held, at: 0, len };
                        continue;
                    }
                    *len += k;
                    match screen(&held[..*len]) {
                        Start::Undecided => continue,
                        Start::Header(version) => {
                            let _ = me.tripwire.0.set(version);
                            me.state = State::Refused;
                        }
                        Start::Clear => {
                            let (held, len) = (*held, *len);
                            me.state = State::Releasing { held, at: 0, len };
                        }
                    }
                }
            }
        }
    }
}

writes_through!(Screened);
aborts_through!(Screened);

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A screened stream over a pipe, and the pipe's other end.
    fn pipe() -> (Screened<tokio::io::DuplexStream>, tokio::io::DuplexStream) {
        let (a, b) = tokio::io::duplex(4096);
        (Screened::new(a), b)
    }

    #[tokio::test]
    async fn an_ssh_client_is_read_at_its_first_byte_unchanged() {
        let (mut s, mut client) = pipe();
        client.write_all(b"S").await.unwrap();
        let mut one = [0u8; 8];
        // Nothing else is coming yet: the first byte is handed on at once, not held.
        let n = tokio::time::timeout(std::time::Duration::from_secs(1), s.read(&mut one))
            .await
            .expect("the first byte is not held back")
            .unwrap();
        assert_eq!(&one[..n], b"S");
        client.write_all(b"SH-2.0-OpenSSH_9.2\r\n").await.unwrap();
        drop(client);
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).await.unwrap();
        assert_eq!(rest, b"SH-2.0-OpenSSH_9.2\r\n");
        assert_eq!(s.tripwire().tripped(), None);
    }

    #[tokio::test]
    async fn writes_go_through_before_the_client_says_anything() {
        let (mut s, mut client) = pipe();
        s.write_all(b"SSH-2.0-jitgate\r\n").await.unwrap();
        let mut got = [0u8; 17];
        client.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"SSH-2.0-jitgate\r\n");
    }

    #[tokio::test]
    async fn a_v1_header_fails_the_read_and_trips_the_wire() {
        let (mut s, mut client) = pipe();
        let wire = s.tripwire();
        // Byte by byte: held while it agrees, refused when it completes.
        for b in b"PROXY TCP4 192.0.2.1 192.0.2.2 1 2\r\nSSH-2.0-x\r\n" {
            client.write_all(&[*b]).await.unwrap();
        }
        let e = s.read(&mut [0u8; 64]).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert_eq!(wire.tripped(), Some(Version::V1));
        assert!(s.read(&mut [0u8; 64]).await.is_err(), "it stays refused");
    }

    #[tokio::test]
    async fn a_v2_signature_split_across_reads_trips_the_wire() {
        let (mut s, mut client) = pipe();
        let wire = s.tripwire();
        let reader = tokio::spawn(async move {
            let mut buf = [0u8; 64];
            let r = s.read(&mut buf).await;
            (r.map(|n| buf[..n].to_vec()), s)
        });
        client.write_all(&V2_SIGNATURE[..5]).await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        assert!(
            !reader.is_finished(),
            "a start that agrees is held, not handed on"
        );
        client.write_all(&V2_SIGNATURE[5..]).await.unwrap();
        client.write_all(&[0x21, 0x11, 0, 12]).await.unwrap();
        let (r, _) = reader.await.unwrap();
        assert!(r.is_err(), "{r:?}");
        assert_eq!(wire.tripped(), Some(Version::V2));
    }

    #[tokio::test]
    async fn a_start_that_stops_agreeing_is_handed_on_whole_even_into_small_buffers() {
        let (mut s, mut client) = pipe();
        client.write_all(b"PROXIMA\r\n").await.unwrap();
        drop(client);
        let mut got = Vec::new();
        let mut one = [0u8; 1];
        loop {
            match s.read(&mut one).await.unwrap() {
                0 => break,
                n => got.extend_from_slice(&one[..n]),
            }
        }
        assert_eq!(got, b"PROXIMA\r\n");
        assert_eq!(s.tripwire().tripped(), None);
    }

    #[tokio::test]
    async fn a_client_that_closes_mid_signature_gets_its_bytes_then_the_end() {
        let (mut s, mut client) = pipe();
        client.write_all(b"\r\n\r").await.unwrap();
        drop(client);
        let mut got = Vec::new();
        s.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"\r\n\r");
        let (mut s, client) = pipe();
        drop(client);
        assert_eq!(s.read(&mut [0u8; 4]).await.unwrap(), 0);
    }
}
