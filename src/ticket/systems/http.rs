//! The HTTP calls jitgate makes to a ticket system: one request per connection, bounded in time
//! and size, no redirects followed. HTTPS, or plain HTTP to a loopback address only (a system on
//! the same host); credentials never cross a network in the clear.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http_body_util::{BodyExt, Full, Limited};
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// Largest answer read (a ticket, or one page of a search, is a few KiB).
const MAX_ANSWER: usize = 4 * 1024 * 1024;
/// How long one call may take, connect to last byte.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Where a ticket system is and how jitgate proves itself to it.
#[derive(Clone)]
pub struct Http {
    host: String,
    port: u16,
    /// Prefix of every path (a base URL's path, without the trailing `/`).
    base_path: String,
    tls: Option<TlsConnector>,
    auth: Option<HeaderValue>,
    /// Requests sent so far (for `bench/tickets.sh` and the log).
    calls: Arc<std::sync::atomic::AtomicU64>,
}

impl std::fmt::Debug for Http {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Http({}:{})", self.host, self.port)
    }
}

/// One answer.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    /// `Retry-After` in seconds, when the system sent one.
    pub retry_after: Option<u64>,
    pub body: Bytes,
}

impl Answer {
    /// The body as JSON.
    pub fn json(&self) -> Result<serde_json::Value, String> {
        serde_json::from_slice(&self.body).map_err(|e| format!("the answer is not JSON: {e}"))
    }
}

impl Http {
    /// A client for `url` (`https://host[:port][/path]`, or `http://` on loopback), trusting
    /// `ca_pem` (or the system's roots), sending `auth` as the `Authorization` header.
    pub fn new(url: &str, ca_pem: Option<&[u8]>, auth: Option<String>) -> Result<Self, String> {
        let Target {
            tls,
            host,
            port,
            path,
        } = parse_url(url)?;
        let tls = if tls {
            let mut roots = rustls::RootCertStore::empty();
            match ca_pem {
                Some(pem) => {
                    for c in rustls_pemfile::certs(&mut &pem[..]) {
                        let c = c.map_err(|e| format!("ca: {e}"))?;
                        roots
                            .add(c)
                            .map_err(|e| format!("ca holds an unusable certificate: {e}"))?;
                    }
                }
                None => {
                    for c in rustls_native_certs::load_native_certs().certs {
                        let _ = roots.add(c);
                    }
                }
            }
            if roots.is_empty() {
                return Err("no CA certificate to trust the ticket system with".into());
            }
            let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::aws_lc_rs::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
            Some(TlsConnector::from(Arc::new(cfg)))
        } else {
            None
        };
        let auth = auth
            .map(|a| {
                let mut v = HeaderValue::from_str(&a)
                    .map_err(|_| "the credentials are not valid header text".to_string())?;
                v.set_sensitive(true);
                Ok::<_, String>(v)
            })
            .transpose()?;
        Ok(Self {
            host,
            port,
            base_path: path,
            tls,
            auth,
            calls: Arc::default(),
        })
    }

    /// Requests sent so far.
    pub fn calls(&self) -> u64 {
        self.calls.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// `method` `path` (below the base URL; with its query) with an optional body of
    /// `content_type`. `Err` is why the system could not be asked (unreachable, timed out).
    pub async fn call(
        &self,
        method: http::Method,
        path: &str,
        body: Option<(&'static str, Vec<u8>)>,
    ) -> Result<Answer, String> {
        self.calls
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        match tokio::time::timeout(CALL_TIMEOUT, self.call_once(method, path, body)).await {
            Ok(r) => r,
            Err(_) => Err(format!("no answer within {} s", CALL_TIMEOUT.as_secs())),
        }
    }

    async fn call_once(
        &self,
        method: http::Method,
        path: &str,
        body: Option<(&'static str, Vec<u8>)>,
    ) -> Result<Answer, String> {
        let tcp = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| format!("cannot connect to {}:{}: {e}", self.host, self.port))?;
        let _ = tcp.set_nodelay(true);
        let authority = if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        };
        let mut req = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base_path))
            .header(header::HOST, &authority)
            .header(header::ACCEPT, "application/json")
            .header(header::USER_AGENT, "jitgate");
        if let Some(a) = &self.auth {
            req = req.header(header::AUTHORIZATION, a.clone());
        }
        let bytes = match body {
            Some((ct, b)) => {
                req = req.header(header::CONTENT_TYPE, ct);
                b
            }
            None => Vec::new(),
        };
        let req = req
            .body(Full::new(Bytes::from(bytes)))
            .map_err(|e| e.to_string())?;
        let resp = match &self.tls {
            Some(tls) => {
                let name = rustls::pki_types::ServerName::try_from(self.host.clone())
                    .map_err(|_| format!("{:?} is not a valid TLS name", self.host))?;
                let stream = tls
                    .connect(name, tcp)
                    .await
                    .map_err(|e| format!("TLS with {}: {e}", self.host))?;
                send(TokioIo::new(stream), req).await?
            }
            None => send(TokioIo::new(tcp), req).await?,
        };
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        let body = Limited::new(resp.into_body(), MAX_ANSWER)
            .collect()
            .await
            .map_err(|e| format!("reading the answer: {e}"))?
            .to_bytes();
        Ok(Answer {
            status,
            retry_after,
            body,
        })
    }
}

/// Where a base URL points.
struct Target {
    tls: bool,
    host: String,
    port: u16,
    path: String,
}

/// Check a ticket system's base URL: `https://host[:port][/path]`, or `http://` to loopback.
pub fn check_url(url: &str) -> Result<(), String> {
    parse_url(url).map(|_| ())
}

fn parse_url(url: &str) -> Result<Target, String> {
    let (tls, rest) = if let Some(rest) = url.strip_prefix("https://") {
        (true, rest)
    } else if let Some(rest) = url.strip_prefix("http://") {
        (false, rest)
    } else {
        return Err(format!("url {url:?} must start with https://"));
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
        None => (rest, ""),
    };
    let (host, port) = match crate::net::HostPort::parse(authority) {
        Some(hp) => (hp.host().to_string(), hp.port()),
        None if !authority.is_empty() && !authority.contains(':') => {
            (authority.to_string(), if tls { 443 } else { 80 })
        }
        None => return Err(format!("url {url:?} has no usable host")),
    };
    let loopback = host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
    if !tls && !loopback {
        return Err(format!(
            "url {url:?} is plain http to another host; use https (plain http is accepted on loopback only)"
        ));
    }
    Ok(Target {
        tls,
        host,
        port,
        path: path.to_string(),
    })
}

async fn send<I>(
    io: I,
    req: Request<Full<Bytes>>,
) -> Result<http::Response<hyper::body::Incoming>, String>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| format!("HTTP handshake: {e}"))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    sender
        .send_request(req)
        .await
        .map_err(|e| format!("the request failed: {e}"))
}

/// `s` with every byte outside the unreserved set percent-encoded (for a path segment or a
/// query value).
pub fn encode(s: &str) -> String {
    crate::identity::http::url_encode(s)
}
