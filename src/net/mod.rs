//! Listener plumbing shared by the API and both gateways: a bounded accept loop, caps on
//! unauthenticated connections ([`gate`]), idle HTTP connections closed ([`idle`]), and a
//! socket wrapper the gateway can cut from outside ([`killable`]), the PROXY protocol behind a
//! load balancer ([`proxy`]), larger reads under TLS ([`read_ahead`]), and `host:port` and
//! address-block parsing ([`HostPort`], [`Cidr`]).

/// `impl AsyncWrite for $ty<S>` that passes every write to the wrapper's `inner`: for
/// wrappers that change only how a socket is read.
macro_rules! writes_through {
    ($ty:ident) => {
        impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for $ty<S> {
            fn poll_write(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                buf: &[u8],
            ) -> std::task::Poll<std::io::Result<usize>> {
                std::pin::Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
            }

            fn poll_write_vectored(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                bufs: &[std::io::IoSlice<'_>],
            ) -> std::task::Poll<std::io::Result<usize>> {
                std::pin::Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
            }

            fn is_write_vectored(&self) -> bool {
                self.inner.is_write_vectored()
            }

            fn poll_flush(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                std::pin::Pin::new(&mut self.get_mut().inner).poll_flush(cx)
            }

            fn poll_shutdown(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                std::pin::Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
            }
        }
    };
}

/// `impl Abort for $ty<S>` that passes both to the wrapper's `inner` socket.
macro_rules! aborts_through {
    ($ty:ident) => {
        impl<S: $crate::net::killable::Abort> $crate::net::killable::Abort for $ty<S> {
            fn reset_on_close(&self) {
                self.inner.reset_on_close();
            }

            fn cork(&self) {
                self.inner.cork();
            }
        }
    };
}

mod cidr;
pub mod cores;
pub mod gate;
mod host;
pub mod idle;
pub mod killable;
#[cfg(test)]
pub mod pieces;
pub mod proxy;
pub mod read_ahead;

pub use cidr::{Cidr, CidrError};
pub use host::{HostPort, unbracket};

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt as _;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Accept connections on `listener` until `shutdown`, at most `max` at a time (more are closed
/// at once), and run `serve` for each on `tracker`. `what` names the listener in logs.
pub async fn accept_loop<F, Fut>(
    listener: TcpListener,
    max: usize,
    what: &'static str,
    shutdown: &CancellationToken,
    tracker: &TaskTracker,
    mut serve: F,
) where
    F: FnMut(TcpStream, SocketAddr) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = Capped::new(listener, max, what);
    while let Some((tcp, peer, permit)) = listener.next(shutdown).await {
        // `map` rather than `async move { fut.await }`: an async block would hold the
        // connection's future twice over (as captured and as awaited) for the connection's life.
        tracker.spawn(serve(tcp, peer).map(move |()| drop(permit)));
    }
}

/// [`accept_loop`], each connection served on the one of `cores` with the fewest: `serve`
/// is given the peer's address here and the socket on that core.
pub async fn accept_loop_on<F, G, Fut>(
    listener: TcpListener,
    max: usize,
    what: &'static str,
    shutdown: &CancellationToken,
    tracker: &TaskTracker,
    cores: &cores::Cores,
    mut serve: F,
) where
    F: FnMut(SocketAddr) -> G,
    G: FnOnce(TcpStream) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = Capped::new(listener, max, what);
    while let Some((tcp, peer, permit)) = listener.next(shutdown).await {
        let serve = serve(peer);
        cores.spawn(tcp, tracker, move |tcp| {
            serve(tcp).map(move |()| drop(permit))
        });
    }
}

/// A listener with a cap on the connections it lets in at once.
struct Capped {
    listener: TcpListener,
    slots: Arc<Semaphore>,
    what: &'static str,
}

impl Capped {
    fn new(listener: TcpListener, max: usize, what: &'static str) -> Self {
        Self {
            listener,
            slots: Arc::new(Semaphore::new(max)),
            what,
        }
    }

    /// The next connection with its slot (`TCP_NODELAY` set), or `None` at `shutdown`.
    /// Connections beyond the cap are closed as they come.
    async fn next(
        &self,
        shutdown: &CancellationToken,
    ) -> Option<(TcpStream, SocketAddr, OwnedSemaphorePermit)> {
        let what = self.what;
        loop {
            let (tcp, peer) = tokio::select! {
                _ = shutdown.cancelled() => return None,
                r = self.listener.accept() => match r {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::warn!(error = %e, "{what} accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                }
            };
            let Ok(permit) = self.slots.clone().try_acquire_owned() else {
                tracing::warn!(%peer, "too many {what} connections; refusing one");
                continue;
            };
            let _ = tcp.set_nodelay(true);
            return Some((tcp, peer, permit));
        }
    }
}
