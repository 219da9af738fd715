use std::collections::BTreeMap;
use std::sync::Arc;

use rustls::RootCertStore;
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
