//! Prometheus metrics at `/metrics` (text exposition format).

use std::sync::Mutex;

use axum::extract::{MatchedPath, Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use super::AppState;
use crate::grant::GrantEventKind;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ApiLabels {
    method: String,
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: String,
}

/// Every metric jitgate exports.
pub struct Metrics {
    registry: Mutex<Registry>,
    api_requests: Family<ApiLabels, Counter>,
    grant_events: Family<KindLabels, Counter>,
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
        Self {
            registry: Mutex::new(registry),
            api_requests,
            grant_events,
        }
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

/// `GET /metrics`.
pub async fn scrape(State(state): State<AppState>) -> Response {
    (
        [(
            CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
        .into_response()
}

/// Middleware counting API requests by matched route (never the raw path: ids would explode
/// the label set).
pub async fn track(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let method = req.method().as_str().to_string();
    let resp = next.run(req).await;
    state
        .metrics
        .api_requests
        .get_or_create(&ApiLabels {
            method,
            route,
            status: resp.status().as_u16(),
        })
        .inc();
    resp
}
