//! Refusals that anyone on the network can cause (a bad grant token, a bad API key, an unsigned
//! webhook) are audited in bounded numbers, so a flood can neither fill the disk nor bury the
//! records that matter. In each one-minute window, per kind of refusal, the first
//! [`PER_SOURCE`] from each source address are recorded in full, up to [`PER_KIND`] in all;
//! the rest are counted, and when the window closes one `refusals.suppressed` record per kind
//! says how many were left out, from how many sources, and which sources sent the most.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use crate::types::source_key;

/// Length of one counting window.
pub const WINDOW: Duration = Duration::from_secs(60);
/// Refusals recorded in full per kind and source in one window.
pub const PER_SOURCE: u32 = 10;
/// Refusals recorded in full per kind in one window, from all sources.
pub const PER_KIND: u32 = 300;
/// Sources tracked per kind in one window; refusals from further sources are counted only.
const MAX_TRACKED: usize = 10_000;
/// Sources named in a summary.
const TOP: usize = 5;

/// What to do with one refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Record,
    Suppress,
}

/// One source's share of a summary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SourceCount {
    pub source: String,
    pub count: u64,
}

/// A closed window in which some refusals of one kind were not recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Suppressed {
    pub event: &'static str,
    pub count: u64,
    pub sources: u64,
    pub top: Vec<SourceCount>,
    pub from: String,
    pub to: String,
}

#[derive(Debug)]
struct Window {
    event: &'static str,
    started: Instant,
    started_wall: String,
    recorded: u32,
    suppressed: u64,
    /// Suppressed refusals from sources past `MAX_TRACKED`.
    untracked: u64,
    by_source: HashMap<IpAddr, (u32, u64)>,
}

impl Window {
    fn new(event: &'static str) -> Self {
        Self {
            event,
            started: Instant::now(),
            started_wall: crate::types::rfc3339_millis_now(),
            recorded: 0,
            suppressed: 0,
            untracked: 0,
            by_source: HashMap::new(),
        }
    }

    fn summary(&self) -> Option<Suppressed> {
        if self.suppressed == 0 {
            return None;
        }
        let mut counts: Vec<(IpAddr, u64)> = self
            .by_source
            .iter()
            .filter(|(_, (_, s))| *s > 0)
            .map(|(ip, (_, s))| (*ip, *s))
            .collect();
        let sources = counts.len() as u64 + u64::from(self.untracked > 0);
        counts.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        Some(Suppressed {
            event: self.event,
            count: self.suppressed,
            sources,
            top: counts
                .into_iter()
                .take(TOP)
                .map(|(ip, count)| SourceCount {
                    source: ip.to_string(),
                    count,
                })
                .collect(),
            from: self.started_wall.clone(),
            to: crate::types::rfc3339_millis_now(),
        })
    }
}

/// The counting windows of every kind of refusal.
#[derive(Debug, Default)]
pub struct Budget {
    windows: Mutex<Vec<Window>>,
}

impl Budget {
    /// Count one refusal of kind `event` from `source`; returns whether to record it in full,
    /// and the summaries of windows that closed since the last call.
    pub fn check(&self, event: &'static str, source: IpAddr) -> (Verdict, Vec<Suppressed>) {
        let mut windows = self.windows.lock().expect("budget lock");
        let closed = roll(&mut windows);
        let w = match windows.iter().position(|w| w.event == event) {
            Some(i) => &mut windows[i],
            None => {
                windows.push(Window::new(event));
                windows.last_mut().expect("just pushed")
            }
        };
        let key = source_key(source);
        let tracked = w.by_source.len() < MAX_TRACKED || w.by_source.contains_key(&key);
        if !tracked {
            w.suppressed += 1;
            w.untracked += 1;
            return (Verdict::Suppress, closed);
        }
        let entry = w.by_source.entry(key).or_insert((0, 0));
        if entry.0 < PER_SOURCE && w.recorded < PER_KIND {
            entry.0 += 1;
            w.recorded += 1;
            (Verdict::Record, closed)
        } else {
            entry.1 += 1;
            w.suppressed += 1;
            (Verdict::Suppress, closed)
        }
    }

    /// The summaries of windows that have closed (for a periodic flush).
    pub fn closed(&self) -> Vec<Suppressed> {
        roll(&mut self.windows.lock().expect("budget lock"))
    }

    /// Close every window now (shutdown) and return their summaries.
    pub fn close_all(&self) -> Vec<Suppressed> {
        let mut windows = self.windows.lock().expect("budget lock");
        windows.drain(..).filter_map(|w| w.summary()).collect()
    }
}

/// Remove windows older than [`WINDOW`]; return the summaries of those that suppressed some.
fn roll(windows: &mut Vec<Window>) -> Vec<Suppressed> {
    let mut out = Vec::new();
    windows.retain(|w| {
        if w.started.elapsed() < WINDOW {
            return true;
        }
        out.extend(w.summary());
        false
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_flood_from_one_source_is_recorded_ten_times_then_summarised() {
        let b = Budget::default();
        let flood: IpAddr = "192.0.2.7".parse().unwrap();
        let other: IpAddr = "192.0.2.8".parse().unwrap();
        let mut recorded = 0;
        for _ in 0..1000 {
            if b.check("webhook.rejected", flood).0 == Verdict::Record {
                recorded += 1;
            }
        }
        assert_eq!(recorded, PER_SOURCE);
        // Another source's first refusal, and another kind's, are still recorded.
        assert_eq!(b.check("webhook.rejected", other).0, Verdict::Record);
        assert_eq!(b.check("api.auth_denied", flood).0, Verdict::Record);
        assert!(b.closed().is_empty(), "the window is still open");
        tokio::time::advance(WINDOW).await;
        let (v, closed) = b.check("webhook.rejected", flood);
        assert_eq!(v, Verdict::Record, "a new window starts afresh");
        assert_eq!(closed.len(), 1, "{closed:?}");
        let s = &closed[0];
        assert_eq!((s.event, s.count, s.sources), ("webhook.rejected", 990, 1));
        assert_eq!(s.top[0].source, "192.0.2.7");
        assert_eq!(s.top[0].count, 990);
    }

    #[tokio::test(start_paused = true)]
    async fn many_sources_are_capped_per_kind() {
        let b = Budget::default();
        let mut recorded = 0;
        for i in 0..2000u32 {
            let ip = IpAddr::from([10, (i >> 16) as u8, (i >> 8) as u8, i as u8]);
            if b.check("admission.denied", ip).0 == Verdict::Record {
                recorded += 1;
            }
        }
        assert_eq!(recorded, PER_KIND);
        let closed = b.close_all();
        assert_eq!(closed[0].count, 2000 - u64::from(PER_KIND));
        assert_eq!(closed[0].top.len(), TOP);
    }
}
