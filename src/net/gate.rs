//! Caps on connections that have not proven anything yet: at most so many per source address
//! and so many in all. A connection takes a [`Pass`] when it is accepted and gives it back once
//! it is authenticated (SSH) or has sent its first request (HTTP), or when it closes. One source
//! that opens connections and sends nothing can therefore hold only its own share, and never
//! the slots that authenticated users need.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use crate::types::source_key;

/// Unauthenticated connections one source address may hold at once. Generous: an office NAT
/// puts many people behind one address, and an honest handshake lasts well under a second.
pub const PER_SOURCE: usize = 64;
/// Unauthenticated connections the listener holds at once, from all sources.
pub const TOTAL: usize = 1024;

/// The caps of one listener.
#[derive(Debug, Clone)]
pub struct Gate(Arc<GateInner>);

#[derive(Debug)]
struct GateInner {
    per_source: usize,
    total: usize,
    held: Mutex<Held>,
}

#[derive(Debug, Default)]
struct Held {
    total: usize,
    by_source: HashMap<IpAddr, usize>,
}

/// Why a connection was turned away at the door.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Full {
    /// This source already holds its share.
    Source,
    /// The listener holds its total.
    Total,
}

impl Default for Gate {
    fn default() -> Self {
        Self::new(PER_SOURCE, TOTAL)
    }
}

impl Gate {
    /// A gate with the given caps.
    pub fn new(per_source: usize, total: usize) -> Self {
        Self(Arc::new(GateInner {
            per_source: per_source.max(1),
            total: total.max(1),
            held: Mutex::new(Held::default()),
        }))
    }

    /// A pass for a new connection from `ip`, unless a cap is reached.
    pub fn enter(&self, ip: IpAddr) -> Result<Pass, Full> {
        let source = source_key(ip);
        let mut held = self.0.held.lock().expect("gate lock");
        if held.total >= self.0.total {
            return Err(Full::Total);
        }
        let n = held.by_source.entry(source).or_insert(0);
        if *n >= self.0.per_source {
            return Err(Full::Source);
        }
        *n += 1;
        held.total += 1;
        Ok(Pass {
            gate: self.clone(),
            source,
        })
    }

    /// Unauthenticated connections held now (all sources).
    pub fn held(&self) -> usize {
        self.0.held.lock().expect("gate lock").total
    }
}

/// One connection's place at the gate; given back when dropped.
#[derive(Debug)]
pub struct Pass {
    gate: Gate,
    source: IpAddr,
}

impl Drop for Pass {
    fn drop(&mut self) {
        let mut held = self.gate.0.held.lock().expect("gate lock");
        held.total -= 1;
        if let Some(n) = held.by_source.get_mut(&self.source) {
            *n -= 1;
            if *n == 0 {
                held.by_source.remove(&self.source);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_source_cannot_take_more_than_its_share_or_others_places() {
        let gate = Gate::new(2, 3);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let a1 = gate.enter(a).unwrap();
        let _a2 = gate.enter(a).unwrap();
        assert_eq!(gate.enter(a).unwrap_err(), Full::Source);
        let _b1 = gate.enter(b).unwrap();
        assert_eq!(gate.enter(b).unwrap_err(), Full::Total);
        drop(a1);
        assert_eq!(gate.held(), 2);
        gate.enter(a).unwrap();
    }

    #[test]
    fn ipv6_sources_count_by_their_64() {
        let gate = Gate::new(1, 10);
        let _p = gate.enter("2001:db8:1:2::1".parse().unwrap()).unwrap();
        assert_eq!(
            gate.enter("2001:db8:1:2:ffff::9".parse().unwrap())
                .unwrap_err(),
            Full::Source
        );
        gate.enter("2001:db8:1:3::1".parse().unwrap()).unwrap();
    }
}
