//! X.509 certificates and TLS configuration: the TLS CA, the gateway's server certificate, serial
//! numbers, and client configurations trusting a given CA.

use std::net::IpAddr;
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PublicKeyData, SanType, SerialNumber,
};
use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use time::{Duration, OffsetDateTime};

use super::{CA_DAYS, PkiError, SERVER_DAYS};

/// A rustls client configuration trusting only the CA certificates in `ca_pem` (PEM text), on
/// aws-lc-rs, without a client certificate. ALPN is left empty for the caller to set.
pub fn client_tls(ca_pem: &str) -> Result<rustls::ClientConfig, PkiError> {
    let certs = rustls_pemfile::certs(&mut ca_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| PkiError::CaBundle(e.to_string()))?;
    if certs.is_empty() {
        return Err(PkiError::CaBundle("no CERTIFICATE block found".into()));
    }
    let mut roots = RootCertStore::empty();
    for cert in certs {
        roots
            .add(cert)
            .map_err(|e| PkiError::CaBundle(e.to_string()))?;
    }
    Ok(rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|source| PkiError::Tls {
            what: "the TLS client configuration".into(),
            source,
        })?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

pub(super) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

pub(super) fn self_signed_ca(key: &KeyPair) -> Result<String, rcgen::Error> {
    let now = OffsetDateTime::now_utc();
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::OrganizationName, "jitgate");
    // Named after its own key: unique per installation (so a certificate from another jitgate
    // is an unknown issuer, not a bad signature), yet stable when the certificate is re-derived.
    let id = &crate::crypto::sha256_hex(&key.subject_public_key_info())[..12];
    params
        .distinguished_name
        .push(DnType::CommonName, format!("jitgate TLS CA {id}"));
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = now - Duration::hours(1);
    params.not_after = now + Duration::days(CA_DAYS);
    params.serial_number = Some(random_serial());
    Ok(params.self_signed(key)?.pem())
}

pub(super) fn server_cert(
    key: &KeyPair,
    issuer: &Issuer<'_, &KeyPair>,
    public_name: &str,
) -> Result<String, rcgen::Error> {
    let now = OffsetDateTime::now_utc();
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, public_name);
    let mut names = vec![public_name];
    names.extend(
        ["localhost", "127.0.0.1", "::1"]
            .into_iter()
            .filter(|n| *n != public_name),
    );
    params.subject_alt_names = names
        .into_iter()
        .map(|n| match n.parse::<IpAddr>() {
            Ok(ip) => Ok(SanType::IpAddress(ip)),
            Err(_) => Ok(SanType::DnsName(n.try_into()?)),
        })
        .collect::<Result<_, rcgen::Error>>()?;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.not_before = now - Duration::hours(1);
    params.not_after = now + Duration::days(SERVER_DAYS);
    params.serial_number = Some(random_serial());
    params.use_authority_key_identifier_extension = true;
    Ok(params.signed_by(key, issuer)?.pem())
}

/// A random positive 128-bit certificate serial number.
pub(super) fn random_serial() -> SerialNumber {
    let mut bytes = [0u8; 16];
    aws_lc_rs::rand::fill(&mut bytes).expect("the system random generator works");
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01;
    SerialNumber::from_slice(&bytes)
}
