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

mod ssh_cert;

pub use ssh_cert::{SshCertSpec, SshSessionCert};

use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::net::IpAddr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PublicKeyData, SanType, SerialNumber,
};
use russh::keys::ssh_key::{HashAlg, LineEnding, PublicKey};
use russh::keys::{Algorithm, PrivateKey};
use rustls::RootCertStore;
use rustls::client::danger::ServerCertVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use time::{Duration, OffsetDateTime};

use crate::crypto::{SigningKey, VerifyingKey};

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

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// The certs directory, and what [`init`] did in it.
struct Files<'a> {
    dir: &'a Path,
    created: Vec<PathBuf>,
    kept: Vec<PathBuf>,
}

impl Files<'_> {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Write a new file with `mode` from the start; fails rather than overwrite.
    fn create(&mut self, name: &str, contents: &[u8], mode: u32) -> Result<(), PkiError> {
        let path = self.path(name);
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&path)
            .map_err(|e| io_err("create", &path, e))?;
        if let Err(e) = file.write_all(contents).and_then(|()| file.sync_all()) {
            // The file is ours and incomplete: remove it so the next run starts clean.
            let _ = fs::remove_file(&path);
            return Err(io_err("write", &path, e));
        }
        self.created.push(path);
        Ok(())
    }
}

/// Find or create the private key `private` and its public part `public` (see the module docs).
/// `matches` says whether an existing public file belongs to the key. Returns the key and the
/// public file's text.
fn ensure_pair<K>(
    files: &mut Files<'_>,
    private: &str,
    public: &str,
    parse: impl FnOnce(&Path, &str) -> Result<K, PkiError>,
    generate: impl FnOnce() -> Result<(K, String), PkiError>,
    derive: impl FnOnce(&K) -> Result<String, PkiError>,
    matches: impl FnOnce(&K, &Path, &str) -> Result<bool, PkiError>,
) -> Result<(K, String), PkiError> {
    let priv_path = files.path(private);
    let pub_path = files.path(public);
    let key = match read_opt(&priv_path, true)? {
        Some(text) => {
            let key = parse(&priv_path, &text)?;
            files.kept.push(priv_path.clone());
            key
        }
        None if pub_path.exists() => {
            return Err(PkiError::Orphaned {
                public: pub_path,
                private: priv_path,
            });
        }
        None => {
            let (key, pem) = generate()?;
            files.create(private, pem.as_bytes(), 0o600)?;
            key
        }
    };
    let text = match read_opt(&pub_path, false)? {
        Some(text) if matches(&key, &pub_path, &text)? => {
            files.kept.push(pub_path);
            text
        }
        Some(_) => {
            return Err(PkiError::Mismatch {
                public: pub_path,
                private: priv_path,
            });
        }
        None => {
            let text = derive(&key)?;
            files.create(public, text.as_bytes(), 0o644)?;
            text
        }
    };
    Ok((key, text))
}

/// Load the private key `private` and, if present (or `required`), its public part, checking
/// that they belong together.
fn load_pair<K>(
    files: &Files<'_>,
    private: &str,
    public: String,
    required: bool,
    parse: impl FnOnce(&Path, &str) -> Result<K, PkiError>,
    matches: impl FnOnce(&K, &Path, &str) -> Result<bool, PkiError>,
) -> Result<(K, Option<String>), PkiError> {
    let priv_path = files.path(private);
    let pub_path = files.path(&public);
    let text = read_opt(&priv_path, true)?.ok_or_else(|| PkiError::Missing(priv_path.clone()))?;
    let key = parse(&priv_path, &text)?;
    let public = match read_opt(&pub_path, false)? {
        None if required => return Err(PkiError::Missing(pub_path)),
        None => None,
        Some(text) if matches(&key, &pub_path, &text)? => Some(text),
        Some(_) => {
            return Err(PkiError::Mismatch {
                public: pub_path,
                private: priv_path,
            });
        }
    };
    Ok((key, public))
}

fn ssh_pub_name(private: &str) -> String {
    format!("{private}.pub")
}

fn ensure_ssh_key(
    files: &mut Files<'_>,
    name: &str,
    comment: &str,
) -> Result<(PrivateKey, String), PkiError> {
    let what = "an Ed25519 SSH key";
    ensure_pair(
        files,
        name,
        &ssh_pub_name(name),
        parse_ssh_key,
        || {
            let mut key = PrivateKey::random(&mut rand::rng(), Algorithm::Ed25519)
                .map_err(|e| gen_err(what, e))?;
            key.set_comment(comment);
            let pem = key
                .to_openssh(LineEnding::LF)
                .map_err(|e| gen_err(what, e))?;
            Ok((key, pem.to_string()))
        },
        |key| {
            let line = key
                .public_key()
                .to_openssh()
                .map_err(|e| gen_err(what, e))?;
            Ok(format!("{line}\n"))
        },
        ssh_pub_matches,
    )
}

fn parse_ssh_key(path: &Path, text: &str) -> Result<PrivateKey, PkiError> {
    let what = "OpenSSH private key";
    let key = PrivateKey::from_openssh(text).map_err(|e| invalid(path, what, e))?;
    if key.is_encrypted() {
        return Err(invalid(
            path,
            what,
            "it is passphrase-protected and jitgate needs it unencrypted",
        ));
    }
    Ok(key)
}

fn ssh_pub_matches(key: &PrivateKey, path: &Path, text: &str) -> Result<bool, PkiError> {
    let public =
        PublicKey::from_openssh(text.trim()).map_err(|e| invalid(path, "OpenSSH public key", e))?;
    Ok(public.key_data() == key.public_key().key_data())
}

fn parse_audit_key(path: &Path, text: &str) -> Result<SigningKey, PkiError> {
    SigningKey::from_pem(text).map_err(|e| invalid(path, "audit signing key", e))
}

fn audit_pub_matches(key: &SigningKey, path: &Path, text: &str) -> Result<bool, PkiError> {
    let public = VerifyingKey::from_pem(text).map_err(|e| invalid(path, "audit public key", e))?;
    Ok(public == key.public())
}

fn generate_tls_key() -> Result<(KeyPair, String), PkiError> {
    let key = KeyPair::generate().map_err(|e| gen_err("an ECDSA P-256 key", e))?;
    let pem = key.serialize_pem();
    Ok((key, pem))
}

/// A TLS private key, as rcgen (to sign or compare) and rustls (to serve) want it.
fn parse_tls_key(path: &Path, text: &str) -> Result<(KeyPair, PrivateKeyDer<'static>), PkiError> {
    let what = "PEM private key";
    let der = rustls_pemfile::private_key(&mut text.as_bytes())
        .map_err(|e| invalid(path, what, e))?
        .ok_or_else(|| invalid(path, what, "no PRIVATE KEY block found"))?;
    let key = KeyPair::try_from(&der).map_err(|e| invalid(path, what, e))?;
    Ok((key, der))
}

/// The certificates in a PEM file, at least one.
fn parse_certs(path: &Path, text: &str) -> Result<Vec<CertificateDer<'static>>, PkiError> {
    let what = "PEM certificate file";
    let certs = rustls_pemfile::certs(&mut text.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(path, what, e))?;
    if certs.is_empty() {
        return Err(invalid(path, what, "no CERTIFICATE block found"));
    }
    Ok(certs)
}

fn cert_matches_key(key: &KeyPair, path: &Path, text: &str) -> Result<bool, PkiError> {
    let certs = parse_certs(path, text)?;
    let parsed = ParsedCertificate::try_from(&certs[0])
        .map_err(|e| invalid(path, "X.509 certificate", e))?;
    Ok(parsed.subject_public_key_info().as_ref() == key.subject_public_key_info().as_slice())
}

/// Whether the CA bundle exists; an existing one must contain the CA certificate.
fn check_bundle(files: &Files<'_>, ca: &CertificateDer<'static>) -> Result<bool, PkiError> {
    let bundle = files.path(CA_BUNDLE);
    match read_opt(&bundle, false)? {
        None => Ok(false),
        Some(text) if parse_certs(&bundle, &text)?.contains(ca) => Ok(true),
        Some(_) => Err(PkiError::StaleBundle {
            bundle,
            ca: files.path(TLS_CA_CERT),
        }),
    }
}

/// Check the server certificate chain against the CA for `name` at time `now`.
fn check_server_cert(
    files: &Files<'_>,
    ca: &CertificateDer<'static>,
    chain: &[CertificateDer<'static>],
    name: &str,
    now: UnixTime,
) -> Result<(), PkiError> {
    let fail = |reason: String| PkiError::ServerCert {
        path: files.path(SERVER_CERT),
        ca: files.path(TLS_CA_CERT),
        reason,
    };
    let mut roots = RootCertStore::empty();
    roots.add(ca.clone()).map_err(|e| fail(e.to_string()))?;
    let verifier =
        rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .map_err(|e| fail(e.to_string()))?;
    let name = ServerName::try_from(name).map_err(|e| fail(e.to_string()))?;
    verifier
        .verify_server_cert(&chain[0], &chain[1..], &name, &[], now)
        .map_err(|e| fail(e.to_string()))?;
    Ok(())
}

fn self_signed_ca(key: &KeyPair) -> Result<String, rcgen::Error> {
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

fn server_cert(
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
fn random_serial() -> SerialNumber {
    let mut bytes = [0u8; 16];
    aws_lc_rs::rand::fill(&mut bytes).expect("the system random generator works");
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01;
    SerialNumber::from_slice(&bytes)
}

/// Read `path`, `None` if it does not exist. Secret files must not be accessible to others.
fn read_opt(path: &Path, secret: bool) -> Result<Option<String>, PkiError> {
    let meta = match fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err("inspect", path, e)),
    };
    let mode = meta.permissions().mode() & 0o777;
    if secret && mode & 0o077 != 0 {
        return Err(PkiError::Insecure {
            path: path.to_path_buf(),
            mode,
        });
    }
    fs::read_to_string(path)
        .map(Some)
        .map_err(|e| io_err("read", path, e))
}

fn io_err(action: &'static str, path: &Path, source: io::Error) -> PkiError {
    PkiError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

fn invalid(path: &Path, what: &'static str, reason: impl fmt::Display) -> PkiError {
    PkiError::Invalid {
        path: path.to_path_buf(),
        what,
        reason: reason.to_string(),
    }
}

fn gen_err(what: &'static str, reason: impl fmt::Display) -> PkiError {
    PkiError::Generate {
        what,
        reason: reason.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    const PUBLIC_NAME: &str = "gw.example.test";

    const ALL_FILES: [&str; 11] = [
        SSH_USER_CA,
        "ssh_user_ca.pub",
        SSH_HOST_KEY,
        "ssh_host_ed25519_key.pub",
        TLS_CA_KEY,
        TLS_CA_CERT,
        SERVER_KEY,
        SERVER_CERT,
        CA_BUNDLE,
        AUDIT_KEY,
        AUDIT_PUB,
    ];
    const PRIVATE_FILES: [&str; 5] = [SSH_USER_CA, SSH_HOST_KEY, TLS_CA_KEY, SERVER_KEY, AUDIT_KEY];

    fn fresh() -> (tempfile::TempDir, PathBuf, InitReport) {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("certs");
        let report = init(&dir, PUBLIC_NAME).unwrap();
        (tmp, dir, report)
    }

    fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
        fs::read_dir(dir)
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.file_name().into_string().unwrap(),
                    fs::read(e.path()).unwrap(),
                )
            })
            .collect()
    }

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    /// A full TLS handshake over an in-memory pipe, then one byte each way. Returns the ALPN
    /// protocol the server chose and the client certificates the server saw.
    async fn handshake(
        server: rustls::ServerConfig,
        client: rustls::ClientConfig,
        name: &str,
    ) -> Result<(Option<Vec<u8>>, usize), String> {
        let (c, s) = tokio::io::duplex(64 * 1024);
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
        let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
        let name = ServerName::try_from(name.to_string()).unwrap();
        let server_side = async move {
            let mut tls = acceptor
                .accept(s)
                .await
                .map_err(|e| format!("server: {e}"))?;
            let mut b = [0u8; 1];
            tls.read_exact(&mut b)
                .await
                .map_err(|e| format!("server: {e}"))?;
            tls.write_all(b"y")
                .await
                .map_err(|e| format!("server: {e}"))?;
            tls.flush().await.map_err(|e| format!("server: {e}"))?;
            let conn = tls.get_ref().1;
            Ok::<_, String>((
                conn.alpn_protocol().map(<[u8]>::to_vec),
                conn.peer_certificates().map_or(0, <[_]>::len),
            ))
        };
        let client_side = async move {
            let mut tls = connector
                .connect(name, c)
                .await
                .map_err(|e| format!("client: {e}"))?;
            tls.write_all(b"x")
                .await
                .map_err(|e| format!("client: {e}"))?;
            tls.flush().await.map_err(|e| format!("client: {e}"))?;
            let mut b = [0u8; 1];
            tls.read_exact(&mut b)
                .await
                .map_err(|e| format!("client: {e}"))?;
            Ok::<_, String>(())
        };
        let run = async { tokio::join!(server_side, client_side) };
        let (server_result, client_result) =
            tokio::time::timeout(std::time::Duration::from_secs(10), run)
                .await
                .expect("handshake finished");
        client_result?;
        server_result
    }

    #[test]
    fn init_creates_every_file_with_private_keys_0600() {
        let (_tmp, dir, report) = fresh();
        assert_eq!(mode(&dir), 0o700);
        for name in ALL_FILES {
            assert!(dir.join(name).is_file(), "{name} was not created");
            assert!(
                report.created.contains(&dir.join(name)),
                "{name} not reported"
            );
        }
        assert_eq!(report.created.len(), ALL_FILES.len());
        assert!(report.kept.is_empty());
        for name in PRIVATE_FILES {
            assert_eq!(mode(&dir.join(name)), 0o600, "{name}");
        }
        assert!(report.ssh_user_ca_pub.starts_with("ssh-ed25519 AAAA"));
        assert_eq!(
            fs::read_to_string(dir.join("ssh_user_ca.pub"))
                .unwrap()
                .trim(),
            report.ssh_user_ca_pub
        );
        assert_eq!(
            fs::read(dir.join(CA_BUNDLE)).unwrap(),
            fs::read(dir.join(TLS_CA_CERT)).unwrap()
        );
        assert!(report.ssh_host_key_fingerprint.starts_with("SHA256:"));
        assert!(report.warnings.is_empty(), "{:?}", report.warnings);
        // Loading gives the very keys that were written.
        let keys = Keys::load(&dir).unwrap();
        assert_eq!(
            keys.ssh_user_ca().public_key().to_openssh().unwrap(),
            report.ssh_user_ca_pub
        );
        assert_eq!(
            keys.ca_pem(),
            fs::read_to_string(dir.join(CA_BUNDLE)).unwrap()
        );
        let audit_pub = fs::read_to_string(dir.join(AUDIT_PUB)).unwrap();
        assert_eq!(keys.audit_key().public().to_pem(), audit_pub);
        assert_ne!(
            keys.ssh_host_key().public_key().key_data(),
            keys.ssh_user_ca().public_key().key_data()
        );
    }

    #[test]
    fn second_init_creates_nothing_and_leaves_bytes_unchanged() {
        let (_tmp, dir, _) = fresh();
        let before = snapshot(&dir);
        let report = init(&dir, PUBLIC_NAME).unwrap();
        assert!(report.created.is_empty(), "{:?}", report.created);
        assert_eq!(report.kept.len(), ALL_FILES.len());
        assert_eq!(snapshot(&dir), before);
    }

    #[test]
    fn init_derives_missing_public_parts_from_existing_keys() {
        let (_tmp, dir, _) = fresh();
        let before = snapshot(&dir);
        for name in ["ssh_user_ca.pub", AUDIT_PUB, TLS_CA_CERT, CA_BUNDLE] {
            fs::remove_file(dir.join(name)).unwrap();
        }
        let report = init(&dir, PUBLIC_NAME).unwrap();
        assert_eq!(report.created.len(), 4, "{:?}", report.created);
        let after = snapshot(&dir);
        assert_eq!(after["ssh_user_ca.pub"], before["ssh_user_ca.pub"]);
        assert_eq!(after[AUDIT_PUB], before[AUDIT_PUB]);
        assert_eq!(after[TLS_CA_KEY], before[TLS_CA_KEY]);
        // A re-issued CA certificate for the same key still vouches for the existing server cert.
        assert_eq!(after[SERVER_CERT], before[SERVER_CERT]);
        Keys::load(&dir).unwrap();
    }

    #[test]
    fn init_refuses_a_public_part_whose_private_key_is_gone() {
        let (_tmp, dir, _) = fresh();
        fs::remove_file(dir.join(SSH_USER_CA)).unwrap();
        let before = snapshot(&dir);
        let err = init(&dir, PUBLIC_NAME).unwrap_err();
        assert!(matches!(err, PkiError::Orphaned { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(msg.contains("certs/ssh_user_ca.pub exists"), "{msg}");
        assert!(msg.contains("certs/ssh_user_ca is missing"), "{msg}");
        assert_eq!(snapshot(&dir), before);
    }

    #[test]
    fn init_warns_when_the_server_certificate_lacks_a_new_public_name() {
        let (_tmp, dir, _) = fresh();
        let report = init(&dir, "renamed.example.test").unwrap();
        assert!(report.created.is_empty());
        assert_eq!(report.warnings.len(), 1, "{:?}", report.warnings);
        assert!(report.warnings[0].contains("server.pem does not name \"renamed.example.test\""));
    }

    #[test]
    fn init_rejects_a_public_name_that_is_not_a_host_name() {
        let tmp = tempfile::tempdir().unwrap();
        let err = init(&tmp.path().join("certs"), "not a name").unwrap_err();
        assert!(err.to_string().contains("public_name"), "{err}");
        assert!(!tmp.path().join("certs").exists());
    }

    #[tokio::test]
    async fn server_certificate_verifies_against_ca_pem_for_every_local_name() {
        let (_tmp, dir, _) = fresh();
        let keys = Keys::load(&dir).unwrap();
        let ca_pem = fs::read_to_string(dir.join(CA_BUNDLE)).unwrap();
        for name in ["localhost", "127.0.0.1", "::1", PUBLIC_NAME] {
            let mut client = client_tls(&ca_pem).unwrap();
            client.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
            let server = keys.server_tls(&[b"h2", b"http/1.1"]).unwrap();
            let (alpn, client_certs) = handshake(server, client, name)
                .await
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(alpn.as_deref(), Some(&b"h2"[..]), "{name}");
            assert_eq!(client_certs, 0, "no client auth");
        }
        // A name the certificate does not carry is refused.
        let server = keys.server_tls(&[]).unwrap();
        let err = handshake(server, client_tls(&ca_pem).unwrap(), "other.example.test")
            .await
            .unwrap_err();
        assert!(err.contains("client:"), "{err}");
    }

    #[tokio::test]
    async fn a_client_trusting_another_ca_refuses_the_gateway() {
        let (_tmp, dir, _) = fresh();
        let (_tmp2, other, _) = fresh();
        let keys = Keys::load(&dir).unwrap();
        let other_ca = fs::read_to_string(other.join(CA_BUNDLE)).unwrap();
        let err = handshake(
            keys.server_tls(&[]).unwrap(),
            client_tls(&other_ca).unwrap(),
            "localhost",
        )
        .await
        .unwrap_err();
        assert!(err.contains("UnknownIssuer"), "{err}");
    }

    #[test]
    fn load_on_an_empty_dir_names_the_missing_file_and_jitgate_init() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("certs");
        fs::create_dir(&dir).unwrap();
        let err = Keys::load(&dir).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains(&format!("{} is missing", dir.join(SSH_USER_CA).display())),
            "{msg}"
        );
        assert!(msg.contains("run `jitgate init`"), "{msg}");
    }

    #[test]
    fn load_names_each_missing_file() {
        let (_tmp, dir, _) = fresh();
        for name in [SERVER_CERT, TLS_CA_KEY, AUDIT_KEY] {
            let path = dir.join(name);
            let saved = fs::read(&path).unwrap();
            fs::remove_file(&path).unwrap();
            let msg = Keys::load(&dir).unwrap_err().to_string();
            assert!(
                msg.contains(&format!("{} is missing", path.display())),
                "{msg}"
            );
            fs::write(&path, saved).unwrap();
            fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        }
        Keys::load(&dir).unwrap();
    }

    #[test]
    fn load_refuses_a_private_key_others_can_read() {
        let (_tmp, dir, _) = fresh();
        let path = dir.join(SERVER_KEY);
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let msg = Keys::load(&dir).unwrap_err().to_string();
        assert!(
            msg.contains("can be read by other users (mode 644)"),
            "{msg}"
        );
        assert!(
            msg.contains(&format!("chmod 600 {}", path.display())),
            "{msg}"
        );
    }

    #[test]
    fn load_refuses_a_public_key_from_another_pair() {
        let (_tmp, dir, _) = fresh();
        let (_tmp2, other, _) = fresh();
        fs::remove_file(dir.join(AUDIT_PUB)).unwrap();
        fs::copy(other.join(AUDIT_PUB), dir.join(AUDIT_PUB)).unwrap();
        let err = Keys::load(&dir).unwrap_err();
        assert!(matches!(err, PkiError::Mismatch { .. }), "{err:?}");
        assert!(
            err.to_string()
                .contains("audit_ed25519.pub.pem does not belong")
        );
        // init spots it too rather than reporting the set as complete.
        assert!(matches!(
            init(&dir, PUBLIC_NAME),
            Err(PkiError::Mismatch { .. })
        ));
    }

    #[test]
    fn load_refuses_a_server_certificate_from_another_ca() {
        let (_tmp, dir, _) = fresh();
        let (_tmp2, other, _) = fresh();
        for name in [SERVER_KEY, SERVER_CERT] {
            fs::remove_file(dir.join(name)).unwrap();
        }
        fs::copy(other.join(SERVER_KEY), dir.join(SERVER_KEY)).unwrap();
        fs::copy(other.join(SERVER_CERT), dir.join(SERVER_CERT)).unwrap();
        let msg = Keys::load(&dir).unwrap_err().to_string();
        assert!(msg.contains("server.pem is not usable with"), "{msg}");
        assert!(msg.contains("UnknownIssuer"), "{msg}");
    }

    #[test]
    fn a_ca_bundle_without_our_ca_is_reported_not_kept() {
        let (_tmp, dir, _) = fresh();
        let (_tmp2, other, _) = fresh();
        let mine = fs::read_to_string(dir.join(CA_BUNDLE)).unwrap();
        let theirs = fs::read_to_string(other.join(CA_BUNDLE)).unwrap();
        fs::write(dir.join(CA_BUNDLE), &theirs).unwrap();
        let msg = init(&dir, PUBLIC_NAME).unwrap_err().to_string();
        assert!(
            msg.contains("ca.pem does not contain the CA certificate from"),
            "{msg}"
        );
        assert!(matches!(
            Keys::load(&dir),
            Err(PkiError::StaleBundle { .. })
        ));
        // A bundle that also carries another CA (e.g. during a rotation) is fine.
        fs::write(dir.join(CA_BUNDLE), format!("{theirs}{mine}")).unwrap();
        Keys::load(&dir).unwrap();
        assert!(init(&dir, PUBLIC_NAME).unwrap().created.is_empty());
    }

    #[tokio::test]
    async fn minted_client_cert_chains_to_the_ca_and_names_the_grant() {
        let (_tmp, dir, _) = fresh();
        let keys = Keys::load(&dir).unwrap();
        let t0 = UnixTime::now().as_secs();
        let expires_at = t0 as i64 + 600;
        let (cert_pem, key_pem) = keys
            .mint_client_cert("alice", "gr_abcdefghijklmnop", expires_at)
            .unwrap();
        let chain = parse_certs(Path::new("minted"), &cert_pem).unwrap();
        let der: &[u8] = chain[0].as_ref();
        let contains = |needle: &[u8]| der.windows(needle.len()).any(|w| w == needle);
        let uri = b"urn:jitgate:grant:gr_abcdefghijklmnop";
        let mut san = vec![0x86, uri.len() as u8]; // [6] IMPLICIT IA5String: uniformResourceIdentifier
        san.extend_from_slice(uri);
        assert!(contains(&san), "SAN URI missing");
        assert!(
            contains(&[0x55, 0x04, 0x03, 0x0c, 5, b'a', b'l', b'i', b'c', b'e']),
            "CN"
        );
        // id-kp-clientAuth 1.3.6.1.5.5.7.3.2
        assert!(contains(&[
            0x06, 0x08, 0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x02
        ]));

        // It chains to the CA (webpki, client-auth usage) only inside its validity window.
        let mut roots = RootCertStore::empty();
        for ca in parse_certs(Path::new("ca"), keys.ca_pem()).unwrap() {
            roots.add(ca).unwrap();
        }
        let roots = Arc::new(roots);
        let verifier =
            rustls::server::WebPkiClientVerifier::builder_with_provider(roots.clone(), provider())
                .build()
                .unwrap();
        let at = |secs: u64| UnixTime::since_unix_epoch(std::time::Duration::from_secs(secs));
        let verify = |secs| verifier.verify_client_cert(&chain[0], &[], at(secs));
        verify(t0).unwrap();
        verify(t0 - 59).unwrap();
        verify(expires_at as u64).unwrap();
        assert!(verify(t0 - 62).is_err(), "valid before not_before");
        assert!(verify(expires_at as u64 + 1).is_err(), "valid after expiry");

        // And a real mutual-TLS handshake accepts it.
        let server = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_client_cert_verifier(verifier.clone())
            .with_single_cert(keys.server_chain.clone(), keys.server_key.clone_key())
            .unwrap();
        let client_key = rustls_pemfile::private_key(&mut key_pem.as_bytes())
            .unwrap()
            .unwrap();
        let client = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_client_auth_cert(chain.clone(), client_key)
            .unwrap();
        let (_, seen) = handshake(server, client, "localhost").await.unwrap();
        assert_eq!(seen, 1);
    }

    #[test]
    fn minting_for_an_expired_grant_fails() {
        let (_tmp, dir, _) = fresh();
        let keys = Keys::load(&dir).unwrap();
        let past = UnixTime::now().as_secs() as i64 - 1;
        let msg = keys
            .mint_client_cert("alice", "gr_abcdefghijklmnop", past)
            .unwrap_err()
            .to_string();
        assert!(msg.contains("alice") && msg.contains("expired"), "{msg}");
        assert!(
            keys.mint_client_cert("alice", "gr bad", past + 600)
                .is_err()
        );
    }

    #[test]
    fn client_tls_rejects_text_without_certificates() {
        let err = client_tls("not a certificate").unwrap_err();
        assert!(err.to_string().contains("JITGATE_CA"), "{err}");
    }

    #[test]
    fn keys_debug_prints_no_key_material() {
        let (_tmp, dir, _) = fresh();
        let keys = Keys::load(&dir).unwrap();
        let debug = format!("{keys:?}");
        assert!(debug.contains("SHA256:"), "{debug}");
        for name in PRIVATE_FILES {
            let text = fs::read_to_string(dir.join(name)).unwrap();
            for line in text.lines().filter(|l| !l.starts_with("-----")) {
                assert!(!debug.contains(line), "{name} leaked into {debug}");
            }
        }
        assert!(!debug.contains("PRIVATE"));
        fn shareable<T: Send + Sync>() {}
        shareable::<Keys>();
    }

    #[test]
    fn target_setup_names_every_line_an_admin_needs() {
        let (_tmp, dir, report) = fresh();
        let text = report.target_setup();
        for needle in [
            report.ssh_user_ca_pub.as_str(),
            "TrustedUserCAKeys /etc/ssh/jitgate_user_ca.pub",
            "AuthorizedPrincipalsFile /etc/ssh/auth_principals/%u",
            "one principal per line",
            "the task's principal",
            "ssl_client_certificate ",
            "ssl_verify_client on;",
            &report.ssh_host_key_fingerprint,
        ] {
            assert!(text.contains(needle), "missing {needle:?} in\n{text}");
        }
        assert!(text.contains(&dir.join(CA_BUNDLE).display().to_string()));
        assert!(text.contains(&dir.join(AUDIT_PUB).display().to_string()));
    }
}
