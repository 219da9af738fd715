//! The demo's admin web console: an HTTPS server on loopback that demands a client
//! certificate from jitgate's CA (like an identity provider's admin pages behind
//! `ssl_verify_client on`), with a page listing locked accounts and an unlock action.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Time a client has to finish the TLS handshake.
const TLS_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections open at once: the HTTPS gateway's to this console, a handful in a demo.
const MAX_CONNECTIONS: usize = 256;

/// The console: its TLS configuration and the accounts it manages.
pub struct DemoConsole {
    tls: Arc<rustls::ServerConfig>,
    locked: Mutex<Vec<String>>,
}

impl std::fmt::Debug for DemoConsole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DemoConsole")
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Make the console's own CA and server certificate under `dir`; trust `gateway_ca_pem` for
/// client certificates. Returns the console and the path of its CA (the target's `server_ca`).
pub fn prepare(dir: &Path, gateway_ca_pem: &str) -> Result<(Arc<DemoConsole>, PathBuf), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let now = time::OffsetDateTime::now_utc();
    let ca_key = KeyPair::generate().map_err(|e| e.to_string())?;
    let mut ca = CertificateParams::default();
    ca.distinguished_name = DistinguishedName::new();
    ca.distinguished_name
        .push(DnType::CommonName, "jitgate demo console CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    ca.not_before = now - time::Duration::hours(1);
    ca.not_after = now + time::Duration::days(30);
    let ca_cert = ca.self_signed(&ca_key).map_err(|e| e.to_string())?;
    let issuer = Issuer::new(ca, &ca_key);
    let key = KeyPair::generate().map_err(|e| e.to_string())?;
    let mut srv = CertificateParams::default();
    srv.distinguished_name = DistinguishedName::new();
    srv.distinguished_name
        .push(DnType::CommonName, "demo-console");
    srv.subject_alt_names = vec![
        SanType::IpAddress([127, 0, 0, 1].into()),
        SanType::DnsName("localhost".try_into().map_err(|e| format!("{e}"))?),
    ];
    srv.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    srv.not_before = now - time::Duration::hours(1);
    srv.not_after = now + time::Duration::days(30);
    let srv_cert = srv.signed_by(&key, &issuer).map_err(|e| e.to_string())?;
    let ca_path = dir.join("ca.pem");
    std::fs::write(&ca_path, ca_cert.pem())
        .map_err(|e| format!("cannot write {}: {e}", ca_path.display()))?;

    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut gateway_ca_pem.as_bytes()) {
        roots
            .add(c.map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    }
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .map_err(|e| e.to_string())?;
    let der_key = rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
    let mut tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![srv_cert.der().clone()], der_key)
        .map_err(|e| e.to_string())?;
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok((
        Arc::new(DemoConsole {
            tls: Arc::new(tls),
            locked: Mutex::new(vec!["dave".into(), "erin".into(), "frank".into()]),
        }),
        ca_path,
    ))
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn page(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>demo admin console</title>\
<style>body{{font:16px/1.5 system-ui,sans-serif;max-width:40rem;margin:3rem auto;padding:0 1rem}}</style></head><body>{body}</body></html>"
    );
    let mut r = Response::new(Full::new(Bytes::from(html)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/html; charset=utf-8"),
    );
    r
}

impl DemoConsole {
    fn handle(&self, req: &Request<Incoming>) -> Response<Full<Bytes>> {
        let user = req
            .headers()
            .get("x-jitgate-user")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("(unknown)");
        let ticket = req
            .headers()
            .get("x-jitgate-ticket")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let path = req.uri().path();
        let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
        match (req.method(), segs.as_slice()) {
            (&Method::POST, ["users", name, "unlock"]) => {
                let mut locked = self.locked.lock().expect("locked lock");
                let was = locked.iter().position(|u| u == name);
                if let Some(i) = was {
                    locked.remove(i);
                }
                page(
                    StatusCode::OK,
                    format!(
                        "<h1>Unlocked {}</h1><p>by {} for ticket {}.</p><p><a href=\"/users\">back</a></p>",
                        esc(name),
                        esc(user),
                        esc(ticket)
                    ),
                )
            }
            (&Method::GET, [""]) | (&Method::GET, ["users"]) => {
                let rows: Vec<String> = self
                    .locked
                    .lock()
                    .expect("locked lock")
                    .iter()
                    .map(|u| {
                        format!(
                            "<li>{u} <form style=\"display:inline\" method=\"post\" action=\"/users/{u}/unlock\"><button>unlock</button></form>\
 <form style=\"display:inline\" method=\"post\" action=\"/users/{u}/delete\"><button>delete</button></form></li>",
                            u = esc(u)
                        )
                    })
                    .collect();
                page(
                    StatusCode::OK,
                    format!(
                        "<h1>Demo admin console</h1><p>Signed in through jitgate as <b>{}</b> (ticket {}); this console accepts only \
client certificates from jitgate's CA.</p><h2>Locked accounts</h2><ul>{}</ul>\
<p>The task allows unlocking; deleting is outside it and jitgate refuses it.</p><p><a href=\"/_jitgate/logout\">log out</a></p>",
                        esc(user),
                        esc(ticket),
                        if rows.is_empty() {
                            "<li>none</li>".to_string()
                        } else {
                            rows.join("")
                        }
                    ),
                )
            }
            _ => page(StatusCode::NOT_FOUND, "<h1>not found</h1>".into()),
        }
    }

    /// Serve on `listener` until `stop` (the gateway's accept loop, at most
    /// [`MAX_CONNECTIONS`] at a time).
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        stop: CancellationToken,
        tracker: TaskTracker,
    ) {
        let acceptor = TlsAcceptor::from(self.tls.clone());
        crate::net::accept_loop(
            listener,
            MAX_CONNECTIONS,
            "demo console",
            &stop,
            &tracker,
            |tcp, _| self.clone().connection(acceptor.clone(), tcp, stop.clone()),
        )
        .await;
    }

    /// One connection: the TLS handshake, which fails without a client certificate from
    /// jitgate's CA, then HTTP/1.1 until the client closes or `stop`.
    async fn connection(
        self: Arc<Self>,
        acceptor: TlsAcceptor,
        tcp: TcpStream,
        stop: CancellationToken,
    ) {
        let Ok(Ok(tls)) = tokio::time::timeout(TLS_TIMEOUT, acceptor.accept(tcp)).await else {
            return;
        };
        let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
            let me = self.clone();
            async move {
                let resp = me.handle(&req);
                let _ = req.into_body().collect().await;
                Ok::<_, std::convert::Infallible>(resp)
            }
        });
        let conn =
            hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tls), svc);
        tokio::pin!(conn);
        tokio::select! {
            _ = conn.as_mut() => {}
            _ = stop.cancelled() => {}
        }
    }
}
