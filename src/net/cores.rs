//! Connections spread over single-threaded runtimes, one per core, each with its own reactor:
//! a connection's socket readiness, its tasks and its timers all stay on one thread, as in an
//! event-loop server, instead of going through the shared runtime's one reactor and being
//! handed between its workers.

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::net::TcpStream;
use tokio::runtime::Handle;
use tokio_util::task::TaskTracker;

/// A set of single-threaded runtimes, each on a thread of its own for the process's life.
pub struct Cores {
    cores: Vec<Core>,
}

struct Core {
    handle: Handle,
    /// Connections being served here.
    live: Arc<AtomicUsize>,
}

impl Cores {
    /// Start `n` runtimes (at least one) on threads named `{name}-{i}`.
    pub fn start(n: usize, name: &str) -> io::Result<Self> {
        let mut cores = Vec::with_capacity(n.max(1));
        for i in 0..n.max(1) {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let handle = rt.handle().clone();
            std::thread::Builder::new()
                .name(format!("{name}-{i}"))
                .spawn(move || rt.block_on(std::future::pending::<()>()))?;
            cores.push(Core {
                handle,
                live: Arc::new(AtomicUsize::new(0)),
            });
        }
        Ok(Self { cores })
    }

    /// Serve `tcp` on the runtime with the fewest connections: `serve` gets the socket
    /// registered with that runtime's reactor. The task is tracked by `tracker`.
    pub fn spawn<F, Fut>(&self, tcp: TcpStream, tracker: &TaskTracker, serve: F)
    where
        F: FnOnce(TcpStream) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + 'static + Send,
    {
        let core = self
            .cores
            .iter()
            .min_by_key(|c| c.live.load(Ordering::Relaxed))
            .expect("at least one core");
        let std = match tcp.into_std() {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot hand a connection to a core");
                return;
            }
        };
        let live = core.live.clone();
        live.fetch_add(1, Ordering::Relaxed);
        core.handle.spawn(tracker.track_future(async move {
            let _live = Live(live);
            match TcpStream::from_std(std) {
                Ok(tcp) => serve(tcp).await,
                Err(e) => tracing::warn!(error = %e, "cannot register a connection"),
            }
        }));
    }
}

/// Counts a connection on its core until dropped.
struct Live(Arc<AtomicUsize>);

impl Drop for Live {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio::net::TcpListener;

    /// Connections go to the core with the fewest, each is served on its core's own thread with
    /// a socket that works there, and the tracker sees each until it ends.
    #[tokio::test]
    async fn connections_spread_over_the_cores_and_are_tracked() {
        let cores = Cores::start(2, "jitgate-test").unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let tracker = TaskTracker::new();
        let (names_tx, mut names_rx) = tokio::sync::mpsc::unbounded_channel();
        let mut clients = Vec::new();
        for _ in 0..4 {
            let client = TcpStream::connect(addr).await.unwrap();
            let (tcp, _) = listener.accept().await.unwrap();
            let names = names_tx.clone();
            cores.spawn(tcp, &tracker, move |mut tcp| async move {
                let name = std::thread::current()
                    .name()
                    .unwrap_or_default()
                    .to_string();
                tcp.write_all(name.as_bytes()).await.unwrap();
                tcp.shutdown().await.unwrap();
                // Held until the client closes, so the next one goes elsewhere.
                let _ = tcp.read(&mut [0u8; 1]).await;
                names.send(name).unwrap();
            });
            clients.push(client);
        }
        let mut served = Vec::new();
        for c in &mut clients {
            let mut name = String::new();
            c.read_to_string(&mut name).await.unwrap();
            served.push(name);
        }
        assert_eq!(
            served,
            [
                "jitgate-test-0",
                "jitgate-test-1",
                "jitgate-test-0",
                "jitgate-test-1"
            ]
        );
        tracker.close();
        assert_eq!(tracker.len(), 4);
        drop(clients);
        tokio::time::timeout(std::time::Duration::from_secs(10), tracker.wait())
            .await
            .expect("the tracker sees every connection end");
        drop(names_tx);
        let mut ended = 0;
        while names_rx.recv().await.is_some() {
            ended += 1;
        }
        assert_eq!(ended, 4);
        assert!(
            cores
                .cores
                .iter()
                .all(|c| c.live.load(Ordering::Relaxed) == 0)
        );
    }
}
