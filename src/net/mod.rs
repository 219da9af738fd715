//! Listener plumbing shared by the API and both gateways: a bounded accept loop, caps on
//! unauthenticated connections ([`gate`]), idle HTTP connections closed ([`idle`]), and a
//! socket wrapper the gateway can cut from outside ([`killable`]), the PROXY protocol behind a
//! load balancer ([`proxy`]), larger reads under TLS ([`read_ahead`]), and `host:port` and address-block parsing ([`HostPort`],
//! [`Cidr`]).

mod cidr;
pub mod gate;
mod host;
pub mod idle;
pub mod killable;
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
use tokio::sync::Semaphore;
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
    let slots = Arc::new(Semaphore::new(max));
    loop {
        let (tcp, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "{what} accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            tracing::warn!(%peer, "too many {what} connections; refusing one");
            continue;
        };
        let _ = tcp.set_nodelay(true);
        // `map` rather than `async move { fut.await }`: an async block would hold the
        // connection's future twice over (as captured and as awaited) for the connection's life.
        tracker.spawn(serve(tcp, peer).map(move |()| drop(permit)));
    }
}
