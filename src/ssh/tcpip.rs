//! Port forwarding: a `direct-tcpip` channel (`ssh -L`, `ssh -W`) bridged as a byte stream to
//! the grant's target host only, counted and noted in `session.json`.

use std::sync::Arc;

use russh::Channel;
use russh::server::Msg;

use super::active::Active;
use crate::grant::Admission;

/// Whether `host` names the grant's target itself (the only place `ssh -L`/`-W` may reach).
pub fn is_target_host(a: &Admission, host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if matches!(host, "localhost" | "127.0.0.1" | "::1") {
        return true;
    }
    a.target()
        .address
        .as_deref()
        .and_then(|addr| addr.rsplit_once(':'))
        .is_some_and(|(h, _)| h.trim_start_matches('[').trim_end_matches(']') == host)
}

/// Bridge a `direct-tcpip` channel (`ssh -L`, `ssh -W`) to the target host.
pub(crate) async fn direct_tcpip(
    active: Arc<Active>,
    client: Channel<Msg>,
    host: String,
    port: u32,
    originator: String,
    originator_port: u32,
) {
    let token = active.guard.token();
    let upstream = match active.upstream().await {
        Ok(u) => u,
        Err(e) => {
            tracing::info!(session = %active.guard.id(), error = %e, "port forward failed");
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
            tracing::info!(session = %active.guard.id(), error = %e, "the target refused a port forward");
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
    active.guard.add_bytes(to_target, to_client);
    active.guard.add_event(serde_json::json!({
        "type": "port-forward",
        "host": host,
        "port": port,
        "bytes_to_target": to_target,
        "bytes_to_client": to_client,
        "at": crate::types::rfc3339(crate::types::now()),
    }));
}
