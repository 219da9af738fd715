//! Tokio's mpsc channels with every message boxed (a jitgate edit, see `vendor/README.md`).
//!
//! A Tokio channel allocates its queue in blocks of 32 slots, each as large as the message type,
//! as soon as it is created. russh's session and channel messages are 80 to 88 bytes, so each
//! of a connection's queues held about 2.8 KB while idle. Here a slot holds a `Box<T>` (one
//! pointer) and the message is boxed only while it is queued. The API is the subset of Tokio's
//! that russh uses, with the same names, semantics and error types.

use std::fmt;
use std::task::{Context, Poll};

use tokio::sync::mpsc as tokio_mpsc;
pub use tokio::sync::mpsc::error;
use tokio::sync::mpsc::error::{SendError, TryRecvError, TrySendError};

fn unbox_send<T>(e: SendError<Box<T>>) -> SendError<T> {
    SendError(*e.0)
}

fn unbox_try_send<T>(e: TrySendError<Box<T>>) -> TrySendError<T> {
    match e {
        TrySendError::Full(v) => TrySendError::Full(*v),
        TrySendError::Closed(v) => TrySendError::Closed(*v),
    }
}

/// A bounded channel of `buffer` messages, as [`tokio::sync::mpsc::channel`].
pub fn channel<T>(buffer: usize) -> (Sender<T>, Receiver<T>) {
    let (tx, rx) = tokio_mpsc::channel(buffer);
    (Sender(tx), Receiver(rx))
}

/// An unbounded channel, as [`tokio::sync::mpsc::unbounded_channel`].
pub fn unbounded_channel<T>() -> (UnboundedSender<T>, UnboundedReceiver<T>) {
    let (tx, rx) = tokio_mpsc::unbounded_channel();
    (UnboundedSender(tx), UnboundedReceiver(rx))
}

/// The sending half of [`channel`].
pub struct Sender<T>(tokio_mpsc::Sender<Box<T>>);

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        Sender(self.0.clone())
    }
}

impl<T> fmt::Debug for Sender<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl<T> Sender<T> {
    /// Wait for capacity, then queue `value`; an error gives it back if the receiver is gone.
    pub async fn send(&self, value: T) -> Result<(), SendError<T>> {
        self.0.send(Box::new(value)).await.map_err(unbox_send)
    }

    /// Queue `value` if there is capacity now.
    pub fn try_send(&self, value: T) -> Result<(), TrySendError<T>> {
        self.0.try_send(Box::new(value)).map_err(unbox_try_send)
    }

    /// Wait for capacity and hold it, for a message sent later through the permit.
    pub async fn reserve_owned(self) -> Result<OwnedPermit<T>, SendError<()>> {
        self.0.reserve_owned().await.map(OwnedPermit)
    }

    /// Whether the receiver is gone.
    pub fn is_closed(&self) -> bool {
        self.0.is_closed()
    }

    /// Resolves when the receiver is gone.
    pub async fn closed(&self) {
        self.0.closed().await
    }
}

/// Capacity held by [`Sender::reserve_owned`].
pub struct OwnedPermit<T>(tokio_mpsc::OwnedPermit<Box<T>>);

impl<T> OwnedPermit<T> {
    /// Queue `value` in the held capacity and give the sender back.
    pub fn send(self, value: T) -> Sender<T> {
        Sender(self.0.send(Box::new(value)))
    }
}

/// The receiving half of [`channel`].
pub struct Receiver<T>(tokio_mpsc::Receiver<Box<T>>);

impl<T> fmt::Debug for Receiver<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl<T> Receiver<T> {
    /// The next message, or `None` once every sender is gone and the queue is empty.
    pub async fn recv(&mut self) -> Option<T> {
        self.0.recv().await.map(|b| *b)
    }

    /// The next message if one is queued now.
    pub fn try_recv(&mut self) -> Result<T, TryRecvError> {
        self.0.try_recv().map(|b| *b)
    }

    /// Poll for the next message.
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<T>> {
        self.0.poll_recv(cx).map(|v| v.map(|b| *b))
    }

    /// Refuse further messages; those queued can still be received.
    pub fn close(&mut self) {
        self.0.close()
    }
}

/// The sending half of [`unbounded_channel`].
pub struct UnboundedSender<T>(tokio_mpsc::UnboundedSender<Box<T>>);

impl<T> Clone for UnboundedSender<T> {
    fn clone(&self) -> Self {
        UnboundedSender(self.0.clone())
    }
}

impl<T> fmt::Debug for UnboundedSender<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl<T> UnboundedSender<T> {
    /// Queue `value`; an error gives it back if the receiver is gone.
    pub fn send(&self, value: T) -> Result<(), SendError<T>> {
        self.0.send(Box::new(value)).map_err(unbox_send)
    }

}

/// The receiving half of [`unbounded_channel`].
pub struct UnboundedReceiver<T>(tokio_mpsc::UnboundedReceiver<Box<T>>);

impl<T> fmt::Debug for UnboundedReceiver<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl<T> UnboundedReceiver<T> {
    /// The next message, or `None` once every sender is gone and the queue is empty.
    pub async fn recv(&mut self) -> Option<T> {
        self.0.recv().await.map(|b| *b)
    }

    /// The next message if one is queued now.
    pub fn try_recv(&mut self) -> Result<T, TryRecvError> {
        self.0.try_recv().map(|b| *b)
    }

    /// Refuse further messages; those queued can still be received.
    pub fn close(&mut self) {
        self.0.close()
    }
}
