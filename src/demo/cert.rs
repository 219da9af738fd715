//! What `demo-box` accepts: an OpenSSH user certificate checked as sshd checks one with
//! `TrustedUserCAKeys` and an `AuthorizedPrincipalsFile` listing only the demo principal (type,
//! CA signature, validity, principal, critical options including `source-address`), and what an
//! accepted certificate permits on the connection ([`Permits`]).

use std::net::IpAddr;

use russh::keys::ssh_key::certificate::CertType;
use russh::keys::ssh_key::{Certificate, Fingerprint};

/// What an accepted certificate permits on this connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Permits {
    pub key_id: String,
    pub serial: u64,
    pub permit_pty: bool,
    pub force_command: Option<String>,
}

/// Why a certificate was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("login name {user:?} is not allowed; log in as {principal:?}")]
    User { user: String, principal: String },
    #[error("this is a host certificate, not a user certificate")]
    NotUserCert,
    #[error("the certificate is not signed by the gateway's user CA or is outside its validity")]
    Untrusted,
    #[error("principal {principal:?} is not listed in the certificate (it lists {listed:?})")]
    Principal {
        principal: String,
        listed: Vec<String>,
    },
    #[error("critical option {0:?} is not supported")]
    UnknownOption(String),
    #[error("source address {peer} is not in the certificate's source-address {allowed:?}")]
    Source { peer: String, allowed: String },
}

/// Check a user certificate as sshd does with `TrustedUserCAKeys` and a principals file listing
/// only `principal`: type, CA signature, validity at `now`, principal, critical options.
pub fn check_certificate(
    cert: &Certificate,
    user: &str,
    principal: &str,
    ca: &Fingerprint,
    now: u64,
    peer: Option<IpAddr>,
) -> Result<Permits, Refusal> {
    if user != principal {
        return Err(Refusal::User {
            user: user.to_string(),
            principal: principal.to_string(),
        });
    }
    if cert.cert_type() != CertType::User {
        return Err(Refusal::NotUserCert);
    }
    cert.validate_at(now, [ca])
        .map_err(|_| Refusal::Untrusted)?;
    if !cert.valid_principals().iter().any(|p| p == principal) {
        return Err(Refusal::Principal {
            principal: principal.to_string(),
            listed: cert.valid_principals().to_vec(),
        });
    }
    let mut force_command = None;
    for (name, value) in cert.critical_options().iter() {
        match name.as_str() {
            "force-command" => force_command = Some(value.clone()),
            "source-address" => {
                if !peer.is_some_and(|ip| source_allowed(value, ip)) {
                    return Err(Refusal::Source {
                        peer: peer.map_or_else(|| "unknown".into(), |ip| ip.to_string()),
                        allowed: value.clone(),
                    });
                }
            }
            other => return Err(Refusal::UnknownOption(other.to_string())),
        }
    }
    Ok(Permits {
        key_id: cert.key_id().to_string(),
        serial: cert.serial(),
        permit_pty: cert.extensions().contains_key("permit-pty"),
        force_command,
    })
}

/// Whether `ip` matches the comma-separated addresses and CIDR blocks of a `source-address`.
fn source_allowed(list: &str, ip: IpAddr) -> bool {
    let ip = ip.to_canonical();
    list.split(',').map(str::trim).any(|entry| {
        let (addr, bits) = match entry.split_once('/') {
            Some((a, b)) => (a, b.parse::<u32>().ok()),
            None => (entry, None),
        };
        match (addr.parse::<IpAddr>().map(|a| a.to_canonical()), ip) {
            (Ok(IpAddr::V4(net)), IpAddr::V4(ip)) => {
                let bits = bits.unwrap_or(32).min(32);
                let mask = u32::MAX.checked_shl(32 - bits).unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (Ok(IpAddr::V6(net)), IpAddr::V6(ip)) => {
                let bits = bits.unwrap_or(128).min(128);
                let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    })
}

#[cfg(test)]
pub(super) mod tests {
    //! The certificate checks, and the keys and certificates the target's tests log in with.

    use std::sync::Arc;

    use russh::keys::ssh_key::HashAlg;
    use russh::keys::ssh_key::certificate::Builder;
    use russh::keys::{Algorithm, PrivateKey};

    use super::*;

    /// A fresh Ed25519 key.
    pub(in crate::demo) fn key() -> PrivateKey {
        PrivateKey::random(&mut rand::rng(), Algorithm::Ed25519).unwrap()
    }

    /// A user certificate for a fresh key, signed by `ca`.
    pub(in crate::demo) fn cert(
        ca: &PrivateKey,
        principal: &str,
        valid: std::ops::Range<u64>,
        pty: bool,
    ) -> (Arc<PrivateKey>, Certificate) {
        let k = key();
        let mut b = Builder::new_with_random_nonce(
            &mut rand::rng(),
            k.public_key(),
            valid.start,
            valid.end,
        )
        .unwrap();
        b.serial(7)
            .unwrap()
            .cert_type(CertType::User)
            .unwrap()
            .key_id("jitgate session=ses_test grant=gr_test user=alice ticket=DEMO-1")
            .unwrap()
            .valid_principal(principal)
            .unwrap();
        if pty {
            b.extension("permit-pty", "").unwrap();
        }
        (Arc::new(k), b.sign(ca).unwrap())
    }

    /// Now, in seconds since the epoch.
    pub(in crate::demo) fn now() -> u64 {
        crate::types::now() as u64
    }

    #[test]
    fn certificate_checks_name_the_reason() {
        let ca = key();
        let fp = ca.public_key().fingerprint(HashAlg::Sha256);
        let t = now();
        let (_, c) = cert(&ca, "demo", t - 60..t + 60, true);
        let p = check_certificate(&c, "demo", "demo", &fp, t, None).unwrap();
        assert!(p.permit_pty);
        assert!(p.key_id.contains("ticket=DEMO-1"));
        let (_, c) = cert(&ca, "ops", t - 60..t + 60, true);
        assert!(matches!(
            check_certificate(&c, "demo", "demo", &fp, t, None),
            Err(Refusal::Principal { .. })
        ));
        let other = key().public_key().fingerprint(HashAlg::Sha256);
        let (_, c) = cert(&ca, "demo", t - 60..t + 60, true);
        assert_eq!(
            check_certificate(&c, "demo", "demo", &other, t, None),
            Err(Refusal::Untrusted)
        );
        assert_eq!(
            check_certificate(&c, "demo", "demo", &fp, t + 61, None),
            Err(Refusal::Untrusted)
        );
    }

    #[test]
    fn source_address_lists_match_addresses_and_blocks() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(source_allowed("127.0.0.1", ip("127.0.0.1")));
        assert!(source_allowed("10.0.0.0/8, 127.0.0.0/8", ip("127.1.2.3")));
        assert!(!source_allowed("10.0.0.0/8", ip("127.0.0.1")));
        assert!(source_allowed("::1", ip("::1")));
        assert!(source_allowed("127.0.0.1", ip("::ffff:127.0.0.1")));
        assert!(!source_allowed("192.168.1.0/24", ip("192.168.2.1")));
        assert!(source_allowed("0.0.0.0/0", ip("8.8.8.8")));
    }
}
