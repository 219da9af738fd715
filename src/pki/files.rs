//! The key and certificate files under the certs directory: creating them without overwriting,
//! reading them with their permissions checked, and checking that each public part belongs to
//! its private key.

use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{KeyPair, PublicKeyData};
use russh::keys::ssh_key::{LineEnding, PublicKey};
use russh::keys::{Algorithm, PrivateKey};
use rustls::RootCertStore;
use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;

use super::x509::provider;
use super::{CA_BUNDLE, PkiError, SERVER_CERT, TLS_CA_CERT};
use crate::crypto::{SigningKey, VerifyingKey};

/// The certs directory, and what [`init`] did in it.
pub(super) struct Files<'a> {
    pub(super) dir: &'a Path,
    pub(super) created: Vec<PathBuf>,
    pub(super) kept: Vec<PathBuf>,
}

impl Files<'_> {
    pub(super) fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Write a new file with `mode` from the start; fails rather than overwrite.
    pub(super) fn create(
        &mut self,
        name: &str,
        contents: &[u8],
        mode: u32,
    ) -> Result<(), PkiError> {
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
pub(super) fn ensure_pair<K>(
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
pub(super) fn load_pair<K>(
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

pub(super) fn ssh_pub_name(private: &str) -> String {
    format!("{private}.pub")
}

pub(super) fn ensure_ssh_key(
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

pub(super) fn parse_ssh_key(path: &Path, text: &str) -> Result<PrivateKey, PkiError> {
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

pub(super) fn ssh_pub_matches(key: &PrivateKey, path: &Path, text: &str) -> Result<bool, PkiError> {
    let public =
        PublicKey::from_openssh(text.trim()).map_err(|e| invalid(path, "OpenSSH public key", e))?;
    Ok(public.key_data() == key.public_key().key_data())
}

pub(super) fn parse_audit_key(path: &Path, text: &str) -> Result<SigningKey, PkiError> {
    SigningKey::from_pem(text).map_err(|e| invalid(path, "audit signing key", e))
}

pub(super) fn audit_pub_matches(
    key: &SigningKey,
    path: &Path,
    text: &str,
) -> Result<bool, PkiError> {
    let public = VerifyingKey::from_pem(text).map_err(|e| invalid(path, "audit public key", e))?;
    Ok(public == key.public())
}

pub(super) fn generate_tls_key() -> Result<(KeyPair, String), PkiError> {
    let key = KeyPair::generate().map_err(|e| gen_err("an ECDSA P-256 key", e))?;
    let pem = key.serialize_pem();
    Ok((key, pem))
}

/// A TLS private key, as rcgen (to sign or compare) and rustls (to serve) want it.
pub(super) fn parse_tls_key(
    path: &Path,
    text: &str,
) -> Result<(KeyPair, PrivateKeyDer<'static>), PkiError> {
    let what = "PEM private key";
    let der = rustls_pemfile::private_key(&mut text.as_bytes())
        .map_err(|e| invalid(path, what, e))?
        .ok_or_else(|| invalid(path, what, "no PRIVATE KEY block found"))?;
    let key = KeyPair::try_from(&der).map_err(|e| invalid(path, what, e))?;
    Ok((key, der))
}

/// The certificates in a PEM file, at least one.
pub(super) fn parse_certs(
    path: &Path,
    text: &str,
) -> Result<Vec<CertificateDer<'static>>, PkiError> {
    let what = "PEM certificate file";
    let certs = rustls_pemfile::certs(&mut text.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(path, what, e))?;
    if certs.is_empty() {
        return Err(invalid(path, what, "no CERTIFICATE block found"));
    }
    Ok(certs)
}

pub(super) fn cert_matches_key(key: &KeyPair, path: &Path, text: &str) -> Result<bool, PkiError> {
    let certs = parse_certs(path, text)?;
    let parsed = ParsedCertificate::try_from(&certs[0])
        .map_err(|e| invalid(path, "X.509 certificate", e))?;
    Ok(parsed.subject_public_key_info().as_ref() == key.subject_public_key_info().as_slice())
}

/// Whether the CA bundle exists; an existing one must contain the CA certificate.
pub(super) fn check_bundle(
    files: &Files<'_>,
    ca: &CertificateDer<'static>,
) -> Result<bool, PkiError> {
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
pub(super) fn check_server_cert(
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

/// Read `path`, `None` if it does not exist. Secret files must not be accessible to others.
pub(super) fn read_opt(path: &Path, secret: bool) -> Result<Option<String>, PkiError> {
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

pub(super) fn io_err(action: &'static str, path: &Path, source: io::Error) -> PkiError {
    PkiError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

pub(super) fn invalid(path: &Path, what: &'static str, reason: impl fmt::Display) -> PkiError {
    PkiError::Invalid {
        path: path.to_path_buf(),
        what,
        reason: reason.to_string(),
    }
}

pub(super) fn gen_err(what: &'static str, reason: impl fmt::Display) -> PkiError {
    PkiError::Generate {
        what,
        reason: reason.to_string(),
    }
}
