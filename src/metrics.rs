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

/// Every metric jitgate exports.
pub struct Metrics {
    registry: Mutex<Registry>,
    api_requests: Family<ApiLabels, Counter>,
    grant_events: Family<KindLabels, Counter>,
    admissions: Family<AdmissionLabels, Counter>,
    kill_latency: Histogram,
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
    pub fn admission(&self, protocol: &str, result: &str) {
        self.admissions
            .get_or_create(&AdmissionLabels {
                protocol: protocol.into(),
                result: result.into(),
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

    /// The text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let reg = self.registry.lock().expect("metrics lock");
        prometheus_client::encoding::text::encode(&mut out, &reg).expect("writing to a String");
        out
    }
}
