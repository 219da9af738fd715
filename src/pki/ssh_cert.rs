//! Per-session OpenSSH user certificates: a fresh key pair, signed by jitgate's user CA for one
//! session only, carrying exactly what the task allows.

use std::sync::Arc;

use russh::keys::ssh_key::Certificate;
use russh::keys::ssh_key::certificate::{Builder, CertType};
use russh::keys::{Algorithm, PrivateKey};

use super::{Keys, PkiError};

/// What goes into a session certificate.
#[derive(Debug, Clone)]
pub struct SshCertSpec<'a> {
    /// Login name on the target (the task's principal).
    pub principal: &'a str,
    /// `jitgate session=<id> grant=<id> user=<u> ticket=<t>`: sshd logs it on login.
    pub key_id: String,
    /// Unix seconds after which the certificate is invalid (the grant's expiry).
    pub valid_before: u64,
    pub permit_pty: bool,
    pub permit_port_forwarding: bool,
    pub force_command: Option<&'a str>,
    pub source_address: Option<&'a str>,
}

/// A session's key and its certificate.
pub struct SshSessionCert {
    pub key: Arc<PrivateKey>,
    pub cert: Certificate,
}

impl std::fmt::Debug for SshSessionCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SshSessionCert")
            .field("key_id", &self.cert.key_id())
            .finish_non_exhaustive()
    }
}

/// How far `valid_after` is back-dated for clock skew between gateway and target.
const BACKDATE_SECS: u64 = 60;

impl Keys {
    /// Mint a key pair and a user certificate for one session. Never adds agent or X11
    /// forwarding; adds `permit-pty` / `permit-port-forwarding` only when allowed.
    pub fn mint_ssh_cert(&self, spec: &SshCertSpec<'_>) -> Result<SshSessionCert, PkiError> {
        let fail = |reason: String| PkiError::Mint {
            user: spec.principal.to_string(),
            grant: spec.key_id.clone(),
            reason,
        };
        let now = crate::types::now().max(0) as u64;
        if spec.valid_before <= now {
            return Err(fail("the grant has already expired".into()));
        }
        let mut rng = rand::rng();
        let key = PrivateKey::random(&mut rng, Algorithm::Ed25519)
            .map_err(|e| fail(format!("cannot generate a session key: {e}")))?;
        let mut b = Builder::new_with_random_nonce(
            &mut rng,
            key.public_key(),
            now.saturating_sub(BACKDATE_SECS),
            spec.valid_before,
        )
        .map_err(|e| fail(e.to_string()))?;
        let serial: u64 = rand::RngExt::random(&mut rng);
        b.serial(serial)
            .and_then(|b| b.cert_type(CertType::User))
            .and_then(|b| b.key_id(spec.key_id.clone()))
            .and_then(|b| b.valid_principal(spec.principal))
            .map_err(|e| fail(e.to_string()))?;
        if spec.permit_pty {
            b.extension("permit-pty", "")
                .map_err(|e| fail(e.to_string()))?;
        }
        if spec.permit_port_forwarding {
            b.extension("permit-port-forwarding", "")
                .map_err(|e| fail(e.to_string()))?;
        }
        if let Some(cmd) = spec.force_command {
            b.critical_option("force-command", cmd)
                .map_err(|e| fail(e.to_string()))?;
        }
        if let Some(src) = spec.source_address {
            b.critical_option("source-address", src)
                .map_err(|e| fail(e.to_string()))?;
        }
        let cert = b
            .sign(self.ssh_user_ca())
            .map_err(|e| fail(format!("cannot sign: {e}")))?;
        Ok(SshSessionCert {
            key: Arc::new(key),
            cert,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificate_carries_only_what_the_task_allows() {
        let dir = tempfile::tempdir().unwrap();
        super::super::init(dir.path(), "localhost").unwrap();
        let keys = Keys::load(dir.path()).unwrap();
        let exp = crate::types::now() as u64 + 600;
        let c = keys
            .mint_ssh_cert(&SshCertSpec {
                principal: "helpdesk-reset",
                key_id: "jitgate session=ses_x grant=gr_y user=alice ticket=INC-7".into(),
                valid_before: exp,
                permit_pty: true,
                permit_port_forwarding: false,
                force_command: Some("/usr/local/sbin/reset-password"),
                source_address: None,
            })
            .unwrap();
        let cert = &c.cert;
        assert_eq!(cert.valid_principals(), ["helpdesk-reset".to_string()]);
        assert_eq!(cert.valid_before(), exp);
        assert!(cert.valid_after() <= crate::types::now() as u64 - 59);
        assert!(cert.extensions().contains_key("permit-pty"));
        assert!(!cert.extensions().contains_key("permit-port-forwarding"));
        assert!(!cert.extensions().contains_key("permit-agent-forwarding"));
        assert!(!cert.extensions().contains_key("permit-X11-forwarding"));
        assert_eq!(
            cert.critical_options()
                .get("force-command")
                .map(String::as_str),
            Some("/usr/local/sbin/reset-password")
        );
        assert_eq!(
            cert.signature_key(),
            keys.ssh_user_ca().public_key().key_data()
        );
        assert_eq!(cert.public_key(), c.key.public_key().key_data());
    }

    #[test]
    fn an_expired_grant_gets_no_certificate() {
        let dir = tempfile::tempdir().unwrap();
        super::super::init(dir.path(), "localhost").unwrap();
        let keys = Keys::load(dir.path()).unwrap();
        let err = keys
            .mint_ssh_cert(&SshCertSpec {
                principal: "p",
                key_id: "k".into(),
                valid_before: 1,
                permit_pty: false,
                permit_port_forwarding: false,
                force_command: None,
                source_address: None,
            })
            .unwrap_err();
        assert!(err.to_string().contains("expired"), "{err}");
    }
}
