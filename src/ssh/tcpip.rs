//! Port forwarding: a `direct-tcpip` channel (`ssh -L`, `ssh -W`) bridged as a byte stream to
//! the grant's target host only, counted and noted in `session.json`.

use std::sync::Arc;

use russh::Channel;
use russh::server::Msg;

use super::link::Link;
use crate::grant::Admission;
use crate::session::SessionEvent;

/// Whether `host` names the grant's target itself (the only place `ssh -L`/`-W` may reach).
pub fn is_target_host(a: &Admission, host: &str) -> bool {
    if matches!(
        crate::net::unbracket(host),
        "localhost" | "127.0.0.1" | "::1"
    ) {
        return true;
    }
    matches!(a.spec(), crate::config::TargetSpec::Ssh { address, .. } if address.is_host(host))
}

/// Bridge a `direct-tcpip` channel (`ssh -L`, `ssh -W`) to the target host.
pub(super) async fn direct_tcpip(
    link: Arc<Link>,
    client: Channel<Msg>,
    host: String,
    port: u32,
    originator: String,
    originator_port: u32,
) {
    let session = &link.session;
    let token = session.token();
    let upstream = tokio::select! {
        up = link.target() => up,
        _ = token.cancelled() => return,
    };
    let upstream = match upstream {
        Ok(u) => u,
        Err(e) => {
            tracing::info!(session = %session.id(), error = %e, "port forward failed");
            let _ = client.close().await;
            return;
        }
    };
    let up = match upstream
        .handle
        .channel_open_direct_tcpip(host.clone(), port, originator, originator_port)
        .await
    {
        Ok(c) => c,
        Err(e) => {
            tracing::info!(session = %session.id(), error = %e, "the target refused a port forward");
            let _ = client.close().await;
            return;
        }
    };
    let mut a = client.into_stream();
    let mut b = up.into_stream();
    let (to_target, to_client) = tokio::select! {
        r = tokio::io::copy_bidirectional(&mut a, &mut b) => r.unwrap_or((0, 0)),
        _ = token.cancelled() => (0, 0),
    };
    session.add_bytes(to_target, to_client);
    session.add_event(SessionEvent::PortForward {
        host,
        port,
        bytes_to_target: to_target,
        bytes_to_client: to_client,
        at: crate::types::rfc3339(crate::types::now()),
    });
}
