//! A reader for tests that hands out its bytes in the given pieces (a read never spans two, and
//! what does not fit stays for the next read), as a socket or a TLS stream does, then ends,
//! waits or fails as told.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, ReadBuf};

/// What a reader does once its pieces are gone.
#[derive(Clone, Copy, Debug)]
pub enum Then {
    /// The end of the stream.
    End,
    /// Nothing more has arrived (for now).
    Wait,
    /// A read error.
    Fail,
}

pub struct Pieces {
    pieces: VecDeque<Vec<u8>>,
    then: Then,
}

impl Pieces {
    pub fn new(pieces: impl IntoIterator<Item = Vec<u8>>, then: Then) -> Self {
        Self {
            pieces: pieces.into_iter().filter(|p| !p.is_empty()).collect(),
            then,
        }
    }

    /// All of `bytes` in one piece, then the end.
    pub fn whole(bytes: &[u8]) -> Self {
        Self::new([bytes.to_vec()], Then::End)
    }

    /// `bytes` one by one, then the end.
    pub fn bytewise(bytes: &[u8]) -> Self {
        Self::new(bytes.iter().map(|b| vec![*b]), Then::End)
    }

    /// The bytes not read yet.
    pub fn left(&self) -> Vec<u8> {
        self.pieces.iter().flatten().copied().collect()
    }
}

impl AsyncRead for Pieces {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let Some(front) = self.pieces.front_mut() else {
            return match self.then {
                Then::End => Poll::Ready(Ok(())),
                Then::Wait => Poll::Pending,
                Then::Fail => Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "bad record",
                ))),
            };
        };
        let k = front.len().min(buf.remaining());
        buf.put_slice(&front[..k]);
        front.drain(..k);
        if front.is_empty() {
            self.pieces.pop_front();
        }
        Poll::Ready(Ok(()))
    }
}
