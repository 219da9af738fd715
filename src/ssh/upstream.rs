//! The target leg: a russh client that verifies the target's host key against the pinned key or
//! the configured host CA (never trust on first use) and authenticates with the per-session
//! certificate.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use russh::client;
use russh::keys::PublicKeyOrCertificate;
use russh::keys::ssh_key::PublicKey;
use russh::keys::ssh_key::certificate::CertType;

use crate::config::TargetConfig;
use crate::pki::SshSessionCert;

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

/// Key exchanges on both legs (technician to gateway, gateway to target), most preferred first:
/// the post-quantum hybrids (ML-KEM for OpenSSH 9.9 and later; Streamlined NTRU Prime for 8.9 to
/// 9.8, such as Debian 12's 9.2, which would otherwise fall back to curve25519), then russh's
/// default classical ones, then the pseudo-algorithms of russh's default list that announce
/// extension negotiation and strict key exchange (the Terrapin fix).
pub const KEX_ORDER: &[russh::kex::Name] = &[
    russh::kex::MLKEM768X25519_SHA256,
    russh::kex::SNTRUP761X25519_SHA512_OPENSSH,
    russh::kex::CURVE25519,
    russh::kex::CURVE25519_PRE_RFC_8731,
    russh::kex::DH_GEX_SHA256,
    russh::kex::DH_G18_SHA512,
    russh::kex::DH_G17_SHA512,
    russh::kex::DH_G16_SHA512,
    russh::kex::DH_G15_SHA512,
    russh::kex::DH_G14_SHA256,
    russh::kex::EXTENSION_SUPPORT_AS_CLIENT,
    russh::kex::EXTENSION_SUPPORT_AS_SERVER,
    russh::kex::EXTENSION_OPENSSH_STRICT_KEX_AS_CLIENT,
    russh::kex::EXTENSION_OPENSSH_STRICT_KEX_AS_SERVER,
];

/// Keepalive probes a target may leave unanswered before its connection is given up.
const KEEPALIVE_MISSES: usize = 3;

/// The client configuration for target connections (AES-GCM first: cheapest on CPUs with AES).
/// A target that answers none of [`KEEPALIVE_MISSES`] probes sent a third of `silence` apart is
/// given up, which ends the session.
pub fn client_config(silence: Duration) -> client::Config {
    let preferred = russh::Preferred {
        kex: std::borrow::Cow::Borrowed(KEX_ORDER),
        cipher: std::borrow::Cow::Borrowed(&[
            russh::cipher::AES_128_GCM,
            russh::cipher::AES_256_GCM,
            russh::cipher::CHACHA20_POLY1305,
        ]),
        ..Default::default()
    };
    client::Config {
        preferred,
        nodelay: true,
        inactivity_timeout: None,
        keepalive_interval: Some(
            (silence / KEEPALIVE_MISSES as u32).max(super::timing::MIN_KEEPALIVE),
        ),
        keepalive_max: KEEPALIVE_MISSES,
        ..Default::default()
    }
}

/// Connect to `target` and log in as `principal` with `cert`.
pub async fn connect(
    target: &TargetConfig,
    principal: &str,
    cert: SshSessionCert,
    silence: Duration,
) -> Result<Upstream, UpstreamError> {
    let name = target.name.to_string();
    let address = target.address.clone().unwrap_or_default();
    let connect_err = |reason: String| UpstreamError::Connect {
        target: name.clone(),
        address: address.clone(),
        reason,
    };
    let trust = match (&target.host_key, &target.host_ca) {
        (Some(k), _) => Trust::Pinned(
            PublicKey::from_openssh(k).map_err(|e| connect_err(format!("bad host_key: {e}")))?,
        ),
        (None, Some(ca)) => Trust::Ca {
            ca: PublicKey::from_openssh(ca)
                .map_err(|e| connect_err(format!("bad host_ca: {e}")))?,
            host: address
                .rsplit_once(':')
                .map(|(h, _)| h.trim_start_matches('[').trim_end_matches(']').to_string())
                .unwrap_or_default(),
        },
        (None, None) => return Err(connect_err("no host_key or host_ca configured".into())),
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
        let mut handle = client::connect(Arc::new(config), address.as_str(), verifier)
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

#[cfg(test)]
mod tests {
    use super::KEX_ORDER;

    #[test]
    fn kex_order_puts_post_quantum_first_and_keeps_all_of_russhs_defaults() {
        let names: Vec<&str> = KEX_ORDER.iter().map(|k| k.as_ref()).collect();
        assert_eq!(
            names[..3],
            [
                "mlkem768x25519-sha256",
                "sntrup761x25519-sha512@openssh.com",
                "curve25519-sha256"
            ]
        );
        // A russh upgrade that adds a default (or a strict-kex marker) shows up here.
        for k in russh::Preferred::DEFAULT.kex.iter() {
            assert!(KEX_ORDER.contains(k), "{} is missing", k.as_ref());
        }
    }
}
