//! The PROXY protocol (v1 and v2) on the gateways' listeners: behind a TCP load balancer, the
//! balancer's header says who the client is. A connection from an address in
//! `gateway.proxy_protocol_from` must begin with a header ([`accept`] reads it, byte-exact and
//! within [`HEADER_TIMEOUT`]); from any other address it is a direct client, and a header from
//! it is refused ([`screen`]). Either way the connection is screened for a header of the
//! client's own.

mod header;
mod screen;

pub use header::{
    Addresses, Header, HeaderError, V1_MAX, V1_PREFIX, V2_MAX_PAYLOAD, V2_SIGNATURE, Version,
    read_header,
};
pub use screen::{Screened, Tripwire};

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::AsyncRead;

use super::Cidr;

/// How long a balancer has to send its header. A balancer sends it as it connects, before any
/// byte of the client's, so this is network time only: generous for a loaded balancer, short
/// enough that one which connects and says nothing frees its place soon (the client's own
/// handshake timeouts start after it).
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// `gateway.proxy_protocol_from` as configuration writes it: a list of address blocks, each
/// checked when the file is loaded; a bad one is named with its place in the list.
pub fn deserialize_balancers<'de, D>(d: D) -> Result<Vec<Cidr>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    let texts = <Vec<String> as serde::Deserialize>::deserialize(d)?;
    texts
        .iter()
        .enumerate()
        .map(|(i, t)| {
            t.parse().map_err(|e| {
                serde::de::Error::custom(format!("gateway.proxy_protocol_from[{i}]: {e}"))
            })
        })
        .collect()
}

/// A connection past its PROXY header, if it had to have one.
#[derive(Debug)]
pub struct Inbound<S> {
    /// The stream after the header, screened for a header of the client's own.
    pub stream: Screened<S>,
    pub origin: Origin,
}

/// Where a connection comes from.
#[derive(Debug, Clone)]
pub struct Origin {
    /// The client's address: from the header for a relayed connection, else the peer's.
    pub client: SocketAddr,
    /// The balancer the connection came through, if it did.
    pub balancer: Option<SocketAddr>,
    tripwire: Tripwire,
}

impl Origin {
    /// Why the connection's stream failed, if it failed for beginning with a PROXY header of
    /// the client's own.
    pub fn refused_header(&self) -> Option<String> {
        let version = self.tripwire.tripped()?.as_str();
        Some(match self.balancer {
            None => format!(
                "a PROXY {version} header from {}, which is not in gateway.proxy_protocol_from",
                self.client.ip()
            ),
            Some(b) => format!(
                "a second PROXY {version} header, the client's own, through the balancer {}",
                b.ip()
            ),
        })
    }
}

/// A connection from a balancer refused for its PROXY header.
#[derive(Debug)]
pub struct Refused {
    /// The balancer's address.
    pub peer: SocketAddr,
    pub reason: HeaderError,
}

impl Refused {
    /// Whether to audit the refusal: not a connection closed before its first byte (a
    /// balancer's plain TCP health check).
    pub fn audited(&self) -> bool {
        !matches!(self.reason, HeaderError::Silent)
    }
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} (from {}, which is in gateway.proxy_protocol_from)",
            self.reason,
            self.peer.ip()
        )
    }
}

/// The connection `tcp` from `peer`, past its PROXY header when `peer` is in `balancers`. The
/// header's source (an IPv4-mapped address as the IPv4 one) is then the client's address; a
/// `LOCAL` or `UNKNOWN` header leaves the peer's.
pub async fn accept<S: AsyncRead + Unpin>(
    balancers: &[Cidr],
    mut tcp: S,
    peer: SocketAddr,
) -> Result<Inbound<S>, Refused> {
    let inbound = |tcp, client, balancer| {
        let stream = Screened::new(tcp);
        let tripwire = stream.tripwire();
        Inbound {
            stream,
            origin: Origin {
                client,
                balancer,
                tripwire,
            },
        }
    };
    if !Cidr::any_contains(balancers, peer.ip()) {
        return Ok(inbound(tcp, peer, None));
    }
    let header = match tokio::time::timeout(HEADER_TIMEOUT, read_header(&mut tcp)).await {
        Ok(Ok(h)) => h,
        Ok(Err(reason)) => return Err(Refused { peer, reason }),
        Err(_) => {
            return Err(Refused {
                peer,
                reason: HeaderError::Timeout(HEADER_TIMEOUT),
            });
        }
    };
    let client = header.addresses.map_or(peer, |a| {
        SocketAddr::new(a.source.ip().to_canonical(), a.source.port())
    });
    Ok(inbound(tcp, client, Some(peer)))
}

#[cfg(test)]
mod tests;
