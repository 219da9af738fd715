//! The target leg: a russh client that verifies the target's host key against the pinned key or
//! the configured host CA (never trust on first use) and authenticates with the per-session
//! certificate.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use russh::client;
use russh::keys::PublicKeyOrCertificate;
use russh::keys::ssh_key::PublicKey;
use russh::keys::ssh_key::certificate::CertType;

use crate::config::{Allow, HostTrust, TargetSpec};
use crate::grant::Admission;
use crate::net::HostPort;
use crate::pki::{Keys, SshCertSpec, SshSessionCert};
use crate::types::SessionId;

/// Why the target could not be reached.
#[derive(Debug, Clone, thiserror::Error)]
pub enum UpstreamError {
    #[error("target {target} could not be reached at {address}: {reason}")]
    Connect {
        target: String,
        address: String,
        reason: String,
    },
    #[error(
        "target {target}'s host key does not match the one configured ({detail}); the connection was refused — if the target was rebuilt, an admin must update its host_key or host_ca"
    )]
    HostKey { target: String, detail: String },
    #[error(
        "target {target} refused the session certificate for principal {principal}; check that it trusts jitgate's user CA and lists the principal"
    )]
    Auth { target: String, principal: String },
    #[error("the session is ending")]
    Gone,
}

/// How the target proves itself.
#[derive(Debug, Clone)]
enum Trust {
    Pinned(PublicKey),
    Ca { ca: PublicKey, host: String },
}

/// The client handler: checks the host key and remembers why it refused one.
pub struct Verifier {
    trust: Trust,
    refusal: Arc<Mutex<Option<String>>>,
}

impl client::Handler for Verifier {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let verdict = match (&self.trust, key) {
            (Trust::Pinned(pinned), PublicKeyOrCertificate::PublicKey { key, .. }) => {
                if key.key_data() == pinned.key_data() {
                    Ok(())
                } else {
                    Err(format!(
                        "presented {}, expected {}",
                        key.fingerprint(Default::default()),
                        pinned.fingerprint(Default::default())
                    ))
                }
            }
            (Trust::Pinned(_), PublicKeyOrCertificate::Certificate(_)) => {
                Err("presented a certificate where a pinned key is configured".into())
            }
            (Trust::Ca { .. }, PublicKeyOrCertificate::PublicKey { key, .. }) => Err(format!(
                "presented a plain key {} where a host certificate signed by host_ca is required",
                key.fingerprint(Default::default())
            )),
            (Trust::Ca { ca, host }, PublicKeyOrCertificate::Certificate(cert)) => {
                let now = crate::types::now().max(0) as u64;
                let fp = ca.fingerprint(Default::default());
                if cert.cert_type() != CertType::Host {
                    Err("presented a user certificate as its host certificate".into())
                } else if cert.validate_at(now, [&fp]).is_err() {
                    Err(
                        "host certificate is not signed by host_ca or is outside its validity"
                            .into(),
                    )
                } else if !cert.valid_principals().is_empty()
                    && !cert.valid_principals().iter().any(|p| p == host)
                {
                    Err(format!("host certificate is not valid for {host}"))
                } else {
                    Ok(())
                }
            }
        };
        match verdict {
            Ok(()) => Ok(true),
            Err(why) => {
                *self.refusal.lock().expect("refusal lock") = Some(why);
                Ok(false)
            }
        }
    }
}

/// A connected, authenticated target.
pub struct Upstream {
    pub handle: client::Handle<Verifier>,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Upstream")
    }
}

/// Keepalive probes a target may leave unanswered before its connection is given up.
const KEEPALIVE_MISSES: usize = 3;

/// The client configuration for target connections.
/// A target that answers none of [`KEEPALIVE_MISSES`] probes sent a third of `silence` apart is
/// given up, which ends the session.
pub fn client_config(silence: Duration) -> client::Config {
    client::Config {
        preferred: super::algorithms::gateway_client(),
        nodelay: true,
        inactivity_timeout: None,
        keepalive_interval: Some(
            (silence / KEEPALIVE_MISSES as u32).max(super::timing::MIN_KEEPALIVE),
        ),
        keepalive_max: KEEPALIVE_MISSES,
        ..Default::default()
    }
}

/// The target leg of session `session`: mint its certificate (valid until the grant ends, with
/// the task's permissions), then connect and log in with it.
pub async fn connect_for(
    keys: Arc<Keys>,
    admission: Admission,
    session: SessionId,
    silence: Duration,
) -> Result<Upstream, UpstreamError> {
    let a = &admission;
    let name = a.target().name.to_string();
    let TargetSpec::Ssh { address, trust } = a.spec() else {
        return Err(UpstreamError::Connect {
            target: name,
            address: String::new(),
            reason: "not an SSH target".into(),
        });
    };
    let principal = a.principal().unwrap_or_default().to_string();
    let mut key_id = format!(
        "jitgate session={session} grant={} user={} ticket={}",
        a.grant(),
        a.user().name,
        a.ticket()
    );
    if let Some(v) = &a.user().vendor {
        key_id.push_str(&format!(" vendor={v}"));
    }
    let task = a.task();
    let cert = keys
        .mint_ssh_cert(&SshCertSpec {
            principal: &principal,
            key_id,
            valid_before: a.expires_at().max(0) as u64,
            permit_pty: task.allow.contains(&Allow::Pty),
            permit_port_forwarding: task.allow.contains(&Allow::PortForward),
            force_command: task.force_command.as_deref(),
            source_address: task.source_address.as_deref(),
        })
        .map_err(|e| UpstreamError::Connect {
            target: name.clone(),
            address: address.to_string(),
            reason: e.to_string(),
        })?;
    connect(&name, address, trust, &principal, cert, silence).await
}

/// Connect to the SSH target `name` at `address`, check it by `trust`, and log in as
/// `principal` with `cert`.
pub async fn connect(
    name: &str,
    address: &HostPort,
    trust: &HostTrust,
    principal: &str,
    cert: SshSessionCert,
    silence: Duration,
) -> Result<Upstream, UpstreamError> {
    let name = name.to_string();
    let address_text = address.to_string();
    let connect_err = |reason: String| UpstreamError::Connect {
        target: name.clone(),
        address: address_text.clone(),
        reason,
    };
    let trust = match trust {
        HostTrust::Pinned(k) => Trust::Pinned(
            PublicKey::from_openssh(k).map_err(|e| connect_err(format!("bad host_key: {e}")))?,
        ),
        HostTrust::Ca(ca) => Trust::Ca {
            ca: PublicKey::from_openssh(ca)
                .map_err(|e| connect_err(format!("bad host_ca: {e}")))?,
            host: address.host().to_string(),
        },
    };
    let mut config = client_config(silence);
    if let Trust::Ca { ca, .. } = &trust {
        config.preferred.host_key_certificates = std::borrow::Cow::Owned(vec![ca.algorithm()]);
    }
    let refusal = Arc::new(Mutex::new(None));
    let verifier = Verifier {
        trust,
        refusal: refusal.clone(),
    };
    let attempt = async {
        let mut handle =
            client::connect(Arc::new(config), (address.host(), address.port()), verifier)
                .await
                .map_err(|e| {
                    if let Some(why) = refusal.lock().expect("refusal lock").take() {
                        UpstreamError::HostKey {
                            target: name.clone(),
                            detail: why,
                        }
                    } else {
                        connect_err(e.to_string())
                    }
                })?;
        let auth = handle
            .authenticate_openssh_cert(principal, cert.key, cert.cert)
            .await
            .map_err(|e| connect_err(format!("authentication failed: {e}")))?;
        if !auth.success() {
            return Err(UpstreamError::Auth {
                target: name.clone(),
                principal: principal.to_string(),
            });
        }
        Ok(Upstream { handle })
    };
    match tokio::time::timeout(super::timing::TARGET_CONNECT, attempt).await {
        Ok(r) => r,
        Err(_) => Err(connect_err(format!(
            "no answer within {} s",
            super::timing::TARGET_CONNECT.as_secs()
        ))),
    }
}
