//! Prometheus metrics shared by the API and the gateways (text exposition at `/metrics`).

use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::grant::GrantEventKind;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ApiLabels {
    method: String,
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AdmissionLabels {
    protocol: String,
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProtocolLabels {
    protocol: String,
}

/// Every metric jitgate exports.
pub struct Metrics {
    registry: Mutex<Registry>,
    api_requests: Family<ApiLabels, Counter>,
    grant_events: Family<KindLabels, Counter>,
    admissions: Family<AdmissionLabels, Counter>,
    proxy_refusals: Family<ProtocolLabels, Counter>,
    kill_latency: Histogram,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A registry with jitgate's metrics registered.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("jitgate");
        let api_requests = Family::<ApiLabels, Counter>::default();
        registry.register(
            "api_requests",
            "Control-plane API requests by route and status",
            api_requests.clone(),
        );
        let grant_events = Family::<KindLabels, Counter>::default();
        registry.register(
            "grant_events",
            "Grant lifecycle events (issued, revoked, expired, completed)",
            grant_events.clone(),
        );
        let admissions = Family::<AdmissionLabels, Counter>::default();
        registry.register(
            "gateway_admissions",
            "Gateway connection admissions by protocol and result",
            admissions.clone(),
        );
        let proxy_refusals = Family::<ProtocolLabels, Counter>::default();
        registry.register(
            "gateway_proxy_refusals",
            "Gateway connections refused for their PROXY header (missing from a balancer, or sent by a non-balancer), by protocol; audited as proxy.refused within the flood budget, counted always",
            proxy_refusals.clone(),
        );
        let kill_latency =
            Histogram::new([0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0]);
        registry.register_with_unit(
            "session_kill_latency",
            "Time from a grant's end (revoke, expiry, ticket close, kill) to the client's socket closing",
            prometheus_client::registry::Unit::Seconds,
            kill_latency.clone(),
        );
        Self {
            registry: Mutex::new(registry),
            api_requests,
            grant_events,
            admissions,
            proxy_refusals,
            kill_latency,
        }
    }

    /// Count one API request.
    pub fn api_request(&self, method: String, route: String, status: u16) {
        self.api_requests
            .get_or_create(&ApiLabels {
                method,
                route,
                status,
            })
            .inc();
    }

    /// Record how long a session took to be cut after its triggering event.
    pub fn kill_latency(&self, seconds: f64) {
        self.kill_latency.observe(seconds);
    }

    /// Count one gateway admission (`result`: admitted or denied).
    pub fn admission(&self, protocol: crate::config::TargetKind, admitted: bool) {
        self.admissions
            .get_or_create(&AdmissionLabels {
                protocol: protocol.as_str().into(),
                result: if admitted { "admitted" } else { "denied" }.into(),
            })
            .inc();
    }

    /// Count one connection refused for its PROXY header.
    pub fn proxy_refusal(&self, protocol: crate::config::TargetKind) {
        self.proxy_refusals
            .get_or_create(&ProtocolLabels {
                protocol: protocol.as_str().into(),
            })
            .inc();
    }

    /// Count one grant event.
    pub fn grant_event(&self, kind: GrantEventKind) {
        self.grant_events
            .get_or_create(&KindLabels {
                kind: kind.as_str().into(),
            })
            .inc();
    }

    /// Register more metrics (gateways add theirs).
    pub fn with_registry<T>(&self, f: impl FnOnce(&mut Registry) -> T) -> T {
        f(&mut self.registry.lock().expect("metrics lock"))
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let reg = self.registry.lock().expect("metrics lock");
        prometheus_client::encoding::text::encode(&mut out, &reg).expect("writing to a String");
        out
    }

    /// The exposition in the format the scraper's `Accept` header asks for: OpenMetrics when
    /// it names `application/openmetrics-text`, else Prometheus text 0.0.4. Returns the
    /// content type and the body.
    pub fn encode_for(&self, accept: Option<&str>) -> (&'static str, String) {
        let open_metrics = accept.is_some_and(|a| {
            a.split(',').any(|part| {
                let mut it = part.split(';');
                let media = it.next().unwrap_or("").trim();
                // `q=0` means "not acceptable".
                let refused = it.any(|p| {
                    p.trim()
                        .strip_prefix("q=")
                        .and_then(|q| q.trim().parse::<f32>().ok())
                        .is_some_and(|q| q <= 0.0)
                });
                media.eq_ignore_ascii_case("application/openmetrics-text") && !refused
            })
        });
        if open_metrics {
            (OPENMETRICS, self.encode())
        } else {
            (PROMETHEUS_TEXT, prometheus_text(&self.encode()))
        }
    }
}

/// Content type of the OpenMetrics exposition.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// Content type of the Prometheus text exposition.
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Rewrite an OpenMetrics exposition as Prometheus text 0.0.4: a counter family's `# HELP` and
/// `# TYPE` name its `_total` samples, and `# UNIT` and `# EOF` (which that format lacks) go.
fn prometheus_text(open_metrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = open_metrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(open_metrics.len() + 64);
    for line in open_metrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let meta = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|p| line.strip_prefix(p).map(|rest| (p, rest)));
        match meta {
            Some((prefix, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                out.push_str(prefix);
                out.push_str(name);
                if counters.contains(name) {
                    out.push_str("_total");
                }
                out.push(' ');
                out.push_str(tail);
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_text_names_counters_by_their_samples_and_drops_openmetrics_only_lines() {
        let m = Metrics::new();
        m.api_request("GET".into(), "/x".into(), 200);
        m.kill_latency(0.01);
        let (ty, text) = m.encode_for(Some("text/plain;version=0.0.4;q=0.5,*/*;q=0.1"));
        assert_eq!(ty, PROMETHEUS_TEXT);
        assert!(
            text.contains("# HELP jitgate_api_requests_total Control-plane"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE jitgate_api_requests_total counter"),
            "{text}"
        );
        assert!(
            text.contains("jitgate_api_requests_total{method=\"GET\""),
            "{text}"
        );
        assert!(
            text.contains("# TYPE jitgate_session_kill_latency_seconds histogram"),
            "{text}"
        );
        assert!(
            !text.contains("# EOF") && !text.contains("# UNIT"),
            "{text}"
        );
        let (ty, text) = m.encode_for(Some(
            "application/openmetrics-text;version=1.0.0,text/plain;q=0.5",
        ));
        assert_eq!(ty, OPENMETRICS);
        assert!(text.ends_with("# EOF\n"), "{text}");
        let (ty, _) = m.encode_for(Some("application/openmetrics-text;q=0"));
        assert_eq!(ty, PROMETHEUS_TEXT);
    }
}
