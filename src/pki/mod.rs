//! The CAs jitgate owns: SSH user CA, gateway host key, TLS CA and server certificate, audit
//! signing key; creation by `jitgate init` and loading for `serve`.
//!
//! Every key lives in one file under the certs directory (names are the constants below), next to
//! the public part derived from it: `.pub` lines for SSH keys, certificates for TLS keys, a PEM
//! public key for the audit key. [`init`] creates whatever is missing and never overwrites; a
//! missing public part is derived again from its private key, while a public part whose private
//! key is gone is an error (recreating the key would silently break everything that trusts it).
//! Private keys are created with mode 0600 and, as OpenSSH does, refused when other users can
//! read them.

mod files;
mod ssh_cert;
#[cfg(test)]
mod tests;
mod x509;

pub use ssh_cert::{SshCertSpec, SshSessionCert};
pub use x509::client_tls;

use std::fmt;
use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use russh::keys::PrivateKey;
use russh::keys::ssh_key::HashAlg;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use time::{Duration, OffsetDateTime};

use crate::crypto::SigningKey;
use files::{
    Files, audit_pub_matches, cert_matches_key, check_bundle, check_server_cert, ensure_pair,
    ensure_ssh_key, gen_err, generate_tls_key, invalid, io_err, load_pair, parse_audit_key,
    parse_certs, parse_ssh_key, parse_tls_key, ssh_pub_matches, ssh_pub_name,
};
use x509::{provider, random_serial, self_signed_ca, server_cert};

/// OpenSSH private key (Ed25519) of the CA that signs per-session user certificates; + ".pub".
pub const SSH_USER_CA: &str = "ssh_user_ca";
/// OpenSSH private key (Ed25519) the SSH gateway presents to technicians; + ".pub".
pub const SSH_HOST_KEY: &str = "ssh_host_ed25519_key";
/// Private key of the TLS CA (PKCS#8 PEM, ECDSA P-256).
pub const TLS_CA_KEY: &str = "tls_ca.key";
/// Self-signed certificate of the TLS CA.
pub const TLS_CA_CERT: &str = "tls_ca.pem";
/// Private key of the gateway's TLS server certificate.
pub const SERVER_KEY: &str = "server.key";
/// The gateway's TLS server certificate, issued by the TLS CA.
pub const SERVER_CERT: &str = "server.pem";
/// What clients and HTTPS targets trust (= the TLS CA certificate).
pub const CA_BUNDLE: &str = "ca.pem";
/// Ed25519 key that signs the audit log (PKCS#8 PEM).
pub const AUDIT_KEY: &str = "audit_ed25519.pem";
/// Public half of [`AUDIT_KEY`], for reviewers verifying the log offline.
pub const AUDIT_PUB: &str = "audit_ed25519.pub.pem";

/// Lifetime of the TLS CA certificate.
const CA_DAYS: i64 = 3650;
/// Lifetime of the gateway's server certificate.
const SERVER_DAYS: i64 = 365;
/// `jitgate init` warns when the server certificate expires sooner than this.
const RENEW_WARNING_DAYS: u64 = 30;

/// Why keys or certificates could not be created, loaded or used.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("{} is missing; run `jitgate init` first", .0.display())]
    Missing(PathBuf),
    #[error("cannot {action} {}: {source}; check the path and its permissions", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error(
        "{} is not a valid {what}: {reason}; restore it from a backup, or remove it and run `jitgate init` to create a new one",
        path.display()
    )]
    Invalid {
        path: PathBuf,
        what: &'static str,
        reason: String,
    },
    #[error("{} can be read by other users (mode {mode:03o}); run `chmod 600 {}`", path.display(), path.display())]
    Insecure { path: PathBuf, mode: u32 },
    #[error(
        "{} exists but its private key {} is missing; restore {} from a backup, or remove {} and run `jitgate init` to create a new pair (whatever trusted the old one must then be given the new one)",
        public.display(), private.display(), private.display(), public.display()
    )]
    Orphaned { public: PathBuf, private: PathBuf },
    #[error(
        "{} does not belong to the key in {}; restore the matching file from a backup, or remove {} and run `jitgate init` to derive it again",
        public.display(), private.display(), public.display()
    )]
    Mismatch { public: PathBuf, private: PathBuf },
    #[error(
        "{} is not usable with {}: {reason}; remove {} and run `jitgate init` to issue a new one for the existing key",
        path.display(), ca.display(), path.display()
    )]
    ServerCert {
        path: PathBuf,
        ca: PathBuf,
        reason: String,
    },
    #[error(
        "{} does not contain the CA certificate from {}; clients trusting it cannot reach this gateway; copy {} to {}",
        bundle.display(), ca.display(), ca.display(), bundle.display()
    )]
    StaleBundle { bundle: PathBuf, ca: PathBuf },
    #[error(
        "public name {0:?} is neither a DNS name nor an IP address; fix `public_name` in [gateway]"
    )]
    PublicName(String),
    #[error(
        "the CA bundle has no usable certificate: {0}; point JITGATE_CA at the gateway's certs/ca.pem"
    )]
    CaBundle(String),
    #[error("cannot generate {what}: {reason}")]
    Generate { what: &'static str, reason: String },
    #[error("cannot build {what}: {source}")]
    Tls { what: String, source: rustls::Error },
    #[error("cannot mint a client certificate for user {user:?} (grant {grant}): {reason}")]
    Mint {
        user: String,
        grant: String,
        reason: String,
    },
}

/// What [`init`] did, and what the administrator of a target needs to trust the gateway.
#[derive(Debug, Clone)]
pub struct InitReport {
    /// Files written by this run.
    pub created: Vec<PathBuf>,
    /// Files that already existed and were left untouched.
    pub kept: Vec<PathBuf>,
    /// Things that work but deserve attention (directory mode, server certificate names/expiry).
    pub warnings: Vec<String>,
    /// The SSH user CA public key line (`ssh-ed25519 AAAA... comment`).
    pub ssh_user_ca_pub: String,
    /// Where that line is stored.
    pub ssh_user_ca_pub_path: PathBuf,
    /// SHA-256 fingerprint of the gateway's SSH host key, for technicians' first connection.
    pub ssh_host_key_fingerprint: String,
    /// The CA certificate clients and HTTPS targets trust.
    pub ca_bundle: PathBuf,
    /// The audit public key reviewers verify the log with.
    pub audit_pub: PathBuf,
}

impl InitReport {
    /// The lines a target administrator (and a reviewer) needs, ready to print.
    pub fn target_setup(&self) -> String {
        format!(
            "\
SSH targets (OpenSSH), as root:
  1. Trust jitgate's user CA: put this line (also in {pub_path}) in /etc/ssh/jitgate_user_ca.pub
       {pub_line}
  2. Add to /etc/ssh/sshd_config:
       TrustedUserCAKeys /etc/ssh/jitgate_user_ca.pub
       AuthorizedPrincipalsFile /etc/ssh/auth_principals/%u
  3. For each login account, write /etc/ssh/auth_principals/<account> with one principal per line
     (the task's principal, e.g. `helpdesk-reset`), then reload sshd.

HTTPS consoles (nginx): accept only client certificates minted by jitgate.
  Copy {ca} to the target, e.g. as /etc/nginx/jitgate-ca.pem, and add to the server block:
       ssl_client_certificate /etc/nginx/jitgate-ca.pem;
       ssl_verify_client on;

Clients (jitgate CLI, browsers, curl) trust the gateway through {ca}.
Technicians can check the gateway's SSH host key: {fp}
Reviewers verify the audit log with the public key in {audit}.
",
            pub_path = self.ssh_user_ca_pub_path.display(),
            pub_line = self.ssh_user_ca_pub,
            ca = self.ca_bundle.display(),
            fp = self.ssh_host_key_fingerprint,
            audit = self.audit_pub.display(),
        )
    }
}

/// Create every missing file under `certs_dir` (mkdir -p, directory 0700); never overwrite an
/// existing one. Private keys are created 0600. `public_name` goes into the server certificate's
/// SANs together with `localhost`, `127.0.0.1` and `::1`.
pub fn init(certs_dir: &Path, public_name: &str) -> Result<InitReport, PkiError> {
    if public_name.is_empty() || ServerName::try_from(public_name).is_err() {
        return Err(PkiError::PublicName(public_name.to_string()));
    }
    let mut warnings = Vec::new();
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(certs_dir)
        .map_err(|e| io_err("create directory", certs_dir, e))?;
    let mode = fs::metadata(certs_dir)
        .map_err(|e| io_err("inspect", certs_dir, e))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        warnings.push(format!(
            "{} is accessible by other users (mode {:03o}); consider `chmod 700 {}`",
            certs_dir.display(),
            mode & 0o777,
            certs_dir.display()
        ));
    }
    let mut files = Files {
        dir: certs_dir,
        created: Vec::new(),
        kept: Vec::new(),
    };

    let (_, ssh_user_ca_pub) = ensure_ssh_key(&mut files, SSH_USER_CA, "jitgate user CA")?;
    let (host, _) = ensure_ssh_key(&mut files, SSH_HOST_KEY, "jitgate gateway host key")?;
    ensure_pair(
        &mut files,
        AUDIT_KEY,
        AUDIT_PUB,
        parse_audit_key,
        || Ok(SigningKey::generate()),
        |key| Ok(key.public().to_pem()),
        audit_pub_matches,
    )?;
    let (ca_key, ca_pem) = ensure_pair(
        &mut files,
        TLS_CA_KEY,
        TLS_CA_CERT,
        |path, text| parse_tls_key(path, text).map(|(key, _)| key),
        generate_tls_key,
        |key| self_signed_ca(key).map_err(|e| gen_err("the TLS CA certificate", e)),
        cert_matches_key,
    )?;
    let ca_path = files.path(TLS_CA_CERT);
    let ca_der = parse_certs(&ca_path, &ca_pem)?.remove(0);
    let issuer = Issuer::from_ca_cert_der(&ca_der, &ca_key)
        .map_err(|e| invalid(&ca_path, "CA certificate", e))?;

    if check_bundle(&files, &ca_der)? {
        files.kept.push(files.path(CA_BUNDLE));
    } else {
        files.create(CA_BUNDLE, ca_pem.as_bytes(), 0o644)?;
    }

    let (_, server_pem) = ensure_pair(
        &mut files,
        SERVER_KEY,
        SERVER_CERT,
        |path, text| parse_tls_key(path, text).map(|(key, _)| key),
        generate_tls_key,
        |key| {
            server_cert(key, &issuer, public_name)
                .map_err(|e| gen_err("the gateway's server certificate", e))
        },
        cert_matches_key,
    )?;
    let server_path = files.path(SERVER_CERT);
    let chain = parse_certs(&server_path, &server_pem)?;
    let now = UnixTime::now();
    check_server_cert(&files, &ca_der, &chain, "localhost", now)?;
    if check_server_cert(&files, &ca_der, &chain, public_name, now).is_err() {
        warnings.push(format!(
            "{} does not name {public_name:?}; remove it and run `jitgate init` again to reissue it for the existing key",
            server_path.display()
        ));
    }
    let soon = UnixTime::since_unix_epoch(std::time::Duration::from_secs(
        now.as_secs() + RENEW_WARNING_DAYS * 86_400,
    ));
    if check_server_cert(&files, &ca_der, &chain, "localhost", soon).is_err() {
        warnings.push(format!(
            "{} expires within {RENEW_WARNING_DAYS} days; remove it and run `jitgate init` again to renew it",
            server_path.display()
        ));
    }

    Ok(InitReport {
        ssh_user_ca_pub: ssh_user_ca_pub.trim().to_string(),
        ssh_user_ca_pub_path: files.path(&ssh_pub_name(SSH_USER_CA)),
        ssh_host_key_fingerprint: host.fingerprint(HashAlg::Sha256).to_string(),
        ca_bundle: files.path(CA_BUNDLE),
        audit_pub: files.path(AUDIT_PUB),
        created: files.created,
        kept: files.kept,
        warnings,
    })
}

/// Everything `serve` needs, loaded from the certs directory. `Debug` prints fingerprints only.
pub struct Keys {
    certs_dir: PathBuf,
    audit: SigningKey,
    ssh_user_ca: PrivateKey,
    ssh_host_key: PrivateKey,
    tls_ca: Issuer<'static, KeyPair>,
    ca_pem: String,
    server_chain: Vec<CertificateDer<'static>>,
    server_key: PrivateKeyDer<'static>,
}

impl fmt::Debug for Keys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keys")
            .field("certs_dir", &self.certs_dir)
            .field("audit_key", &self.audit.public().to_hex())
            .field(
                "ssh_user_ca",
                &self.ssh_user_ca.fingerprint(HashAlg::Sha256).to_string(),
            )
            .field(
                "ssh_host_key",
                &self.ssh_host_key.fingerprint(HashAlg::Sha256).to_string(),
            )
            .finish_non_exhaustive()
    }
}

impl Keys {
    /// Load every key and certificate from `certs_dir`, checking that public parts present on
    /// disk belong to their private keys and that the server certificate verifies against the CA.
    pub fn load(certs_dir: &Path) -> Result<Keys, PkiError> {
        let files = Files {
            dir: certs_dir,
            created: Vec::new(),
            kept: Vec::new(),
        };
        let ssh_user_ca = load_pair(
            &files,
            SSH_USER_CA,
            ssh_pub_name(SSH_USER_CA),
            false,
            parse_ssh_key,
            ssh_pub_matches,
        )?
        .0;
        let ssh_host_key = load_pair(
            &files,
            SSH_HOST_KEY,
            ssh_pub_name(SSH_HOST_KEY),
            false,
            parse_ssh_key,
            ssh_pub_matches,
        )?
        .0;
        let audit = load_pair(
            &files,
            AUDIT_KEY,
            AUDIT_PUB.into(),
            false,
            parse_audit_key,
            audit_pub_matches,
        )?
        .0;
        let ((ca_key, _), ca_pem) = load_pair(
            &files,
            TLS_CA_KEY,
            TLS_CA_CERT.into(),
            true,
            parse_tls_key,
            |(key, _), path, text| cert_matches_key(key, path, text),
        )?;
        let ca_pem = ca_pem.expect("required");
        let ca_path = files.path(TLS_CA_CERT);
        let ca_der = parse_certs(&ca_path, &ca_pem)?.remove(0);
        let tls_ca = Issuer::from_ca_cert_der(&ca_der, ca_key)
            .map_err(|e| invalid(&ca_path, "CA certificate", e))?;

        check_bundle(&files, &ca_der)?;

        let ((_, server_key), server_pem) = load_pair(
            &files,
            SERVER_KEY,
            SERVER_CERT.into(),
            true,
            parse_tls_key,
            |(key, _), path, text| cert_matches_key(key, path, text),
        )?;
        let server_chain = parse_certs(&files.path(SERVER_CERT), &server_pem.expect("required"))?;
        check_server_cert(&files, &ca_der, &server_chain, "localhost", UnixTime::now())?;

        Ok(Keys {
            certs_dir: certs_dir.to_path_buf(),
            audit,
            ssh_user_ca,
            ssh_host_key,
            tls_ca,
            ca_pem,
            server_chain,
            server_key,
        })
    }

    /// A TLS server configuration presenting the gateway's certificate, without client
    /// authentication, on aws-lc-rs, offering the given ALPN protocols (most preferred first).
    pub fn server_tls(&self, alpn: &[&[u8]]) -> Result<rustls::ServerConfig, PkiError> {
        let tls_err = |source| PkiError::Tls {
            what: format!(
                "the TLS server configuration from {}",
                self.certs_dir.join(SERVER_CERT).display()
            ),
            source,
        };
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(tls_err)?
            .with_no_client_auth()
            .with_single_cert(self.server_chain.clone(), self.server_key.clone_key())
            .map_err(tls_err)?;
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(config)
    }

    /// The key that signs the audit log.
    pub fn audit_key(&self) -> &SigningKey {
        &self.audit
    }

    /// The CA that signs per-session SSH user certificates.
    pub fn ssh_user_ca(&self) -> &PrivateKey {
        &self.ssh_user_ca
    }

    /// The SSH gateway's host key.
    pub fn ssh_host_key(&self) -> &PrivateKey {
        &self.ssh_host_key
    }

    /// The TLS CA certificate (PEM), which clients and HTTPS targets trust.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// Mint a TLS client certificate for one HTTPS session: subject CN = `user`, SAN URI
    /// `urn:jitgate:grant:<grant>`, ExtendedKeyUsage ClientAuth, valid from 60 s ago until
    /// `expires_at` (unix seconds), signed by the TLS CA with a fresh ECDSA P-256 key.
    ///
    /// Returns `(certificate PEM, PKCS#8 private key PEM)`: the form nginx, curl and
    /// `rustls_pemfile` all take. The key PEM is a secret: never log it.
    pub fn mint_client_cert(
        &self,
        user: &str,
        grant: &str,
        expires_at: i64,
    ) -> Result<(String, String), PkiError> {
        let fail = |reason: String| PkiError::Mint {
            user: user.to_string(),
            grant: grant.to_string(),
            reason,
        };
        if user.is_empty() {
            return Err(fail("the user name is empty".into()));
        }
        let grant_ok = !grant.is_empty()
            && grant
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b));
        if !grant_ok {
            return Err(fail("the grant id is not of the form gr_...".into()));
        }
        let now = OffsetDateTime::now_utc();
        let not_after = OffsetDateTime::from_unix_timestamp(expires_at)
            .map_err(|e| fail(format!("expiry {expires_at} is out of range: {e}")))?;
        if not_after <= now {
            return Err(fail(format!(
                "the grant expired at {expires_at} (unix time)"
            )));
        }
        let key = KeyPair::generate().map_err(|e| fail(e.to_string()))?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, user);
        let uri = format!("urn:jitgate:grant:{grant}");
        params.subject_alt_names = vec![SanType::URI(
            uri.try_into().map_err(|e| fail(format!("{e}")))?,
        )];
        params.not_before = now - Duration::seconds(60);
        params.not_after = not_after;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.serial_number = Some(random_serial());
        params.use_authority_key_identifier_extension = true;
        let cert = params
            .signed_by(&key, &self.tls_ca)
            .map_err(|e| fail(e.to_string()))?;
        Ok((cert.pem(), key.serialize_pem()))
    }
}
