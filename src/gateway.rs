//! What a gateway is built from: the admission check, the session registry, the keys, the audit
//! log, the metrics and the gateway settings. Both gateways get these few things and nothing else
//! of the control plane, so each can be read (and tested) without the grant service behind it.
//! Both let connections in through a [`Door`]: the PROXY protocol behind a load balancer, and
//! the caps on unauthenticated connections.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use tokio::net::TcpStream;

use crate::audit::{AuditEvent, Log};
use crate::config::{GatewayConfig, TargetKind};
use crate::grant::Admission;
use crate::grant::admission::{AdmissionDenied, AdmitRequest};
use crate::metrics::Metrics;
use crate::net::gate::{Gate, Pass};
use crate::net::proxy::{self, Origin, Screened};
use crate::pki::Keys;
use crate::session::Registry;

/// The check a gateway runs on a presented grant token: an [`Admission`], or a refusal whose
/// message can be shown to the technician. The grant service implements it (and audits and
/// throttles refusals); unit tests of a gateway's connection code give their own.
#[async_trait::async_trait]
pub trait Admit: Send + Sync + 'static {
    async fn admit(&self, request: AdmitRequest<'_>) -> Result<Admission, AdmissionDenied>;
}

#[async_trait::async_trait]
impl Admit for crate::grant::Service {
    async fn admit(&self, request: AdmitRequest<'_>) -> Result<Admission, AdmissionDenied> {
        crate::grant::Service::admit(self, request).await
    }
}

/// Everything a gateway uses, shared by all its connections.
#[derive(Clone)]
pub struct Parts {
    pub admit: Arc<dyn Admit>,
    pub sessions: Arc<Registry>,
    pub keys: Arc<Keys>,
    pub audit: Arc<Log>,
    pub metrics: Arc<Metrics>,
    pub settings: Arc<GatewayConfig>,
}

impl std::fmt::Debug for Parts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("gateway::Parts")
    }
}

/// The way into a gateway: each accepted connection's PROXY header read where its peer is a
/// balancer (`gateway.proxy_protocol_from`), then its place among unauthenticated connections
/// taken for the client's address, so that a balancer's clients each hold their own share.
/// Connections refused for a PROXY header are logged and audited (`proxy.refused`, within the
/// flood budget).
#[derive(Debug)]
pub struct Door {
    protocol: TargetKind,
    audit: Arc<Log>,
    metrics: Arc<Metrics>,
    settings: Arc<GatewayConfig>,
    gate: Gate,
}

/// A connection through the [`Door`].
pub struct Entered {
    pub stream: Screened<TcpStream>,
    pub origin: Origin,
    /// The connection's place among unauthenticated ones.
    pub pass: Pass,
}

impl Door {
    /// The door of the `protocol` gateway built from `parts`.
    pub fn new(protocol: TargetKind, parts: &Parts) -> Self {
        Self {
            protocol,
            audit: parts.audit.clone(),
            metrics: parts.metrics.clone(),
            settings: parts.settings.clone(),
            gate: Gate::default(),
        }
    }

    /// Let the connection `tcp` from `peer` in, or refuse it (logged, audited where a PROXY
    /// header was the reason).
    pub async fn enter(&self, tcp: TcpStream, peer: SocketAddr) -> Option<Entered> {
        let inbound = match proxy::accept(&self.settings.proxy_protocol_from, tcp, peer).await {
            Ok(i) => i,
            Err(refused) => {
                if refused.audited() {
                    let ip = refused.peer.ip();
                    self.refuse(ip, ip, refused.to_string()).await;
                } else {
                    tracing::debug!(%peer, protocol = self.protocol.as_str(), "a balancer's connection closed before its PROXY header");
                }
                return None;
            }
        };
        let client = inbound.origin.client;
        let Ok(pass) = self.gate.enter(client.ip()) else {
            tracing::debug!(%client, protocol = self.protocol.as_str(), "too many unauthenticated connections from this source; closing one");
            return None;
        };
        Some(Entered {
            stream: inbound.stream,
            origin: inbound.origin,
            pass,
        })
    }

    /// After a handshake failed: if it failed because the connection began with a PROXY
    /// header of the client's own, log and audit that, and return true.
    pub async fn refused_header(&self, origin: &Origin) -> bool {
        let Some(reason) = origin.refused_header() else {
            return false;
        };
        let peer = origin.balancer.unwrap_or(origin.client).ip();
        self.refuse(origin.client.ip(), peer, reason).await;
        true
    }

    async fn refuse(&self, source: IpAddr, peer: IpAddr, reason: String) {
        let protocol = self.protocol;
        tracing::info!(%source, %peer, protocol = protocol.as_str(), %reason, "connection refused for its PROXY header");
        self.metrics.proxy_refusal(protocol);
        let event = AuditEvent::ProxyRefused {
            protocol,
            source: source.to_string(),
            peer: peer.to_string(),
            reason,
        };
        if let Err(e) = self.audit.refusal("system", source, event).await {
            tracing::error!(error = %e, "cannot audit a PROXY header refusal");
        }
    }
}
