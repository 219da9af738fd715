//! Failed credentials per source address in one-minute windows. Past a limit, each further
//! failure from that source is answered only after [`DELAY`]; nothing here ever refuses a valid
//! credential, so one person behind an office NAT or a load balancer cannot lock the others
//! out (and 256-bit tokens cannot be guessed anyway). Used for grant tokens at admission and
//! for API keys.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Length of one counting window.
const WINDOW: Duration = Duration::from_secs(60);
/// Sources tracked at once; past it, closed windows are dropped, and newcomers count as over.
const MAX_SOURCES: usize = 100_000;
/// The wait before each failure past the limit is answered: it slows a guessing loop without
/// holding anything a valid caller needs.
pub const DELAY: Duration = Duration::from_secs(1);

/// Failures per source (IPv6 by its /64) and window.
#[derive(Debug)]
pub struct Throttle {
    per_minute: u32,
    map: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

impl Throttle {
    /// Failures answered at once per source and minute: `per_minute` (at least 1).
    pub fn new(per_minute: u32) -> Self {
        Self {
            per_minute: per_minute.max(1),
            map: Mutex::new(HashMap::new()),
        }
    }

    /// Count a failure from `ip`; returns whether it is past the limit (answer after [`DELAY`]).
    pub fn fail(&self, ip: IpAddr) -> bool {
        let ip = crate::types::source_key(ip);
        let mut map = self.map.lock().expect("throttle lock");
        if map.len() >= MAX_SOURCES {
            map.retain(|_, (start, _)| start.elapsed() < WINDOW);
        }
        if map.len() >= MAX_SOURCES && !map.contains_key(&ip) {
            return true;
        }
        let e = map.entry(ip).or_insert((Instant::now(), 0));
        if e.0.elapsed() >= WINDOW {
            *e = (Instant::now(), 0);
        }
        e.1 = e.1.saturating_add(1);
        e.1 > self.per_minute
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_is_over_its_limit_after_n_failures_and_others_are_not() {
        let t = Throttle::new(2);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        assert!(!t.fail(a));
        assert!(!t.fail(a));
        assert!(t.fail(a));
        assert!(!t.fail("192.0.2.2".parse().unwrap()));
        // One /64 is one source.
        let t = Throttle::new(1);
        assert!(!t.fail("2001:db8::1".parse().unwrap()));
        assert!(t.fail("2001:db8::2".parse().unwrap()));
    }
}
