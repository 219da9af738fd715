//! What a gateway is built from: the admission check, the session registry, the keys, the audit
//! log, the metrics and the gateway settings. Both gateways get these few things and nothing else
//! of the control plane, so each can be read (and tested) without the grant service behind it.

use std::sync::Arc;

use crate::audit::Log;
use crate::config::GatewayConfig;
use crate::grant::Admission;
use crate::grant::admission::{AdmissionDenied, AdmitRequest};
use crate::metrics::Metrics;
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
