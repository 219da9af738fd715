//! Certificates for peers that serve TLS on loopback (the OpenID provider, PostgreSQL).

use std::fs;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

/// A test CA named for `name` (the peer it vouches for) and a server certificate for IP
/// 127.0.0.1, in `dir` (ca.pem, server.pem, server-key.pem); returns the CA's path.
pub fn make_certs(dir: &Path, name: &str) -> PathBuf {
    let now = time::OffsetDateTime::now_utc();
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
    ca.distinguished_name
        .push(DnType::CommonName, format!("jitgate-it test {name} CA"));
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    ca.not_before = now - time::Duration::days(1);
    ca.not_after = now + time::Duration::days(30);
    let ca = CertifiedIssuer::self_signed(ca, ca_key).expect("CA certificate");

    let key = KeyPair::generate().expect("server key");
    let mut server =
        CertificateParams::new(vec!["127.0.0.1".to_string()]).expect("server parameters");
    server
        .distinguished_name
        .push(DnType::CommonName, "127.0.0.1");
    server.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    server.not_before = now - time::Duration::days(1);
    server.not_after = now + time::Duration::days(30);
    let cert = server.signed_by(&key, &ca).expect("server certificate");

    let ca_path = dir.join("ca.pem");
    fs::write(&ca_path, ca.pem()).expect("write ca.pem");
    fs::write(dir.join("server.pem"), cert.pem()).expect("write server.pem");
    fs::write(dir.join("server-key.pem"), key.serialize_pem()).expect("write server-key.pem");
    ca_path
}
