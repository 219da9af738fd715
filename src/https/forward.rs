//! The target leg of the HTTPS gateway: mutual TLS with a client certificate minted for the
//! session, the target's own CA as the only trust anchor, HTTP/1.1 connections (each client
//! connection's own, and a pool per session), and the header rewriting a reverse proxy owes both
//! sides.

use std::path::Path;
use std::sync::{Arc, Mutex, Weak};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, Uri};
use http_body_util::combinators::BoxBody;
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_rustls::TlsConnector;

use super::HttpSession;
use super::record::BoxError;
use super::timing::TARGET_CONNECT;
use crate::net::read_ahead::{Gather, ReadAhead};

/// Request bodies sent to targets.
pub type ReqBody = BoxBody<Bytes, BoxError>;

type Connection = hyper::client::conn::http1::Connection<
    TokioIo<Gather<tokio_rustls::client::TlsStream<ReadAhead<TcpStream>>>>,
    ReqBody,
>;

/// The I/O of one target connection, run by the client connection's own task: a request and
/// its answer then cross no task boundary in the gateway.
pub type Driver = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// Most connections a session's pool keeps for reuse.
const POOL_MAX: usize = 256;

/// Hop-by-hop headers, never forwarded (RFC 9110 §7.6.1).
static HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// One session's way to its target.
pub struct Upstream {
    host: String,
    port: u16,
    /// Path prefix of the target URL (no trailing slash), e.g. `/console`.
    base_path: String,
    /// `https://host[:port]` as the target's own absolute URLs spell it.
    origin: String,
    server_name: ServerName<'static>,
    tls: TlsConnector,
    pool: Mutex<Vec<SendRequest<ReqBody>>>,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Upstream({})", self.origin)
    }
}

/// Parse `https://host[:port][/base]`.
fn parse_url(url: &str) -> Result<(String, u16, String), String> {
    let uri: Uri = url
        .parse()
        .map_err(|e| format!("bad target url {url:?}: {e}"))?;
    if uri.scheme_str() != Some("https") {
        return Err(format!("target url {url:?} must be https://"));
    }
    let host = uri
        .host()
        .ok_or_else(|| format!("target url {url:?} has no host"))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = uri.port_u16().unwrap_or(443);
    let base = uri.path().trim_end_matches('/').to_string();
    Ok((host, port, base))
}

impl Upstream {
    /// Prepare the way to the HTTPS target at `url`, whose server certificate `server_ca` signs,
    /// with the session's client certificate (PEM cert and key). Nothing is dialled yet.
    pub fn new(url: &str, server_ca: &Path, cert_pem: &str, key_pem: &str) -> Result<Self, String> {
        let (host, port, base_path) = parse_url(url)?;
        let ca_pem = std::fs::read_to_string(server_ca)
            .map_err(|e| format!("cannot read server_ca {}: {e}", server_ca.display()))?;
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_pemfile::certs(&mut ca_pem.as_bytes()) {
            let cert = cert.map_err(|e| format!("server_ca {}: {e}", server_ca.display()))?;
            roots
                .add(cert)
                .map_err(|e| format!("server_ca {}: {e}", server_ca.display()))?;
        }
        if roots.is_empty() {
            return Err(format!(
                "server_ca {} holds no certificate",
                server_ca.display()
            ));
        }
        let chain: Vec<_> = rustls_pemfile::certs(&mut cert_pem.as_bytes())
            .collect::<Result<_, _>>()
            .map_err(|e| format!("session certificate: {e}"))?;
        let key = rustls_pemfile::private_key(&mut key_pem.as_bytes())
            .map_err(|e| format!("session key: {e}"))?
            .ok_or("session key missing")?;
        let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(|e| format!("session certificate: {e}"))?;
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        let server_name = ServerName::try_from(host.clone())
            .map_err(|_| format!("target host {host:?} is not a valid TLS name"))?;
        let origin = if port == 443 {
            format!("https://{host}")
        } else {
            format!("https://{host}:{port}")
        };
        Ok(Self {
            host,
            port,
            base_path,
            origin,
            server_name,
            tls: TlsConnector::from(Arc::new(cfg)),
            pool: Mutex::new(Vec::new()),
        })
    }

    /// `host:port` for the Host header.
    pub fn authority(&self) -> String {
        if self.port == 443 {
            self.host.clone()
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// A new connection to the target: TCP, TLS with the session's client certificate, HTTP/1.1.
    async fn handshake(&self) -> Result<(SendRequest<ReqBody>, Connection), String> {
        let tcp = tokio::time::timeout(
            TARGET_CONNECT,
            TcpStream::connect((self.host.as_str(), self.port)),
        )
        .await
        .map_err(|_| {
            format!(
                "the target did not answer within {} s",
                TARGET_CONNECT.as_secs()
            )
        })?
        .map_err(|e| format!("cannot connect to the target: {e}"))?;
        let _ = tcp.set_nodelay(true);
        let tls = tokio::time::timeout(
            TARGET_CONNECT,
            self.tls.connect(self.server_name.clone(), ReadAhead::new(tcp)),
        )
        .await
        .map_err(|_| "TLS with the target timed out".to_string())?
        .map_err(|e| {
            format!("TLS with the target failed ({e}); its certificate must be signed by the target's server_ca")
        })?;
        hyper::client::conn::http1::Builder::new()
            .handshake(TokioIo::new(Gather::new(tls)))
            .await
            .map_err(|e| format!("HTTP with the target failed: {e}"))
    }

    /// A new connection run by a task of its own (websockets and the session-wide pool).
    async fn connect(&self) -> Result<SendRequest<ReqBody>, String> {
        let (sender, conn) = self.handshake().await?;
        tokio::spawn(async move {
            let _ = conn.with_upgrades().await;
        });
        Ok(sender)
    }

    /// A new connection whose I/O the caller drives (see [`Driver`]).
    async fn connect_driven(&self) -> Result<(SendRequest<ReqBody>, Driver), String> {
        let (sender, conn) = self.handshake().await?;
        Ok((
            sender,
            Box::pin(async move {
                let _ = conn.await;
            }),
        ))
    }

    /// Send `req` on a connection of the session's pool (reused when idle), or, when `fresh`
    /// (a websocket, which keeps its connection), on a new one of its own.
    pub async fn send(
        &self,
        req: Request<ReqBody>,
        fresh: bool,
    ) -> Result<Response<Incoming>, String> {
        let pooled = if fresh {
            None
        } else {
            let mut pool = self.pool.lock().expect("pool lock");
            pool.retain(|s| !s.is_closed());
            let i = pool.iter().position(|s| s.is_ready());
            i.map(|i| pool.swap_remove(i))
        };
        let mut sender = match pooled {
            Some(s) => s,
            None => self.connect().await?,
        };
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| format!("the target did not answer: {e}"))?;
        if !fresh {
            let mut pool = self.pool.lock().expect("pool lock");
            if pool.len() < POOL_MAX {
                pool.push(sender);
            }
        }
        Ok(resp)
    }

    /// The target URI (origin form) for the client's request URI: its path and query under
    /// the target's base path.
    pub fn uri_for(&self, client: &Uri) -> Result<Uri, String> {
        let pq = client.path_and_query();
        if self.base_path.is_empty() {
            return Ok(pq.cloned().map_or_else(|| Uri::from_static("/"), Uri::from));
        }
        format!("{}{}", self.base_path, pq.map_or("/", |p| p.as_str()))
            .parse()
            .map_err(|e| format!("bad path: {e}"))
    }

    /// Rewrite a `Location` that points at the target itself so it stays on the gateway.
    pub fn rewrite_location(&self, location: &str, gateway_origin: &str) -> Option<String> {
        rewrite_location(&self.origin, &self.base_path, location, gateway_origin)
    }
}

/// Which target connection a client connection's requests go out on. Each session it carries
/// gets a target connection of its own, driven by the client connection's task (see [`Driver`])
/// so that a request and its answer cross no task boundary; while that one is busy (concurrent
/// HTTP/2 streams), the session's pool serves.
pub(super) struct TargetRouter {
    /// One per session this client connection carried.
    own: Mutex<Vec<OwnConn>>,
    /// Hands a new target connection's I/O to the client connection's task.
    drivers: mpsc::UnboundedSender<Driver>,
}

/// A session's own target connection on one client connection.
struct OwnConn {
    /// Only names the session (and keeps its address from being reused).
    session: Weak<HttpSession>,
    /// `None` while a request is using it.
    sender: Option<SendRequest<ReqBody>>,
}

/// Where one request goes out.
enum Route {
    /// The session's own target connection on this client connection, ready.
    Own(SendRequest<ReqBody>),
    /// None yet, or it closed: open one.
    Connect,
    /// The own one is busy: the session's pool.
    Pool,
}

impl TargetRouter {
    /// A router whose new target connections are driven by the receiver of `drivers`.
    pub(super) fn new(drivers: mpsc::UnboundedSender<Driver>) -> Self {
        Self {
            own: Mutex::new(Vec::new()),
            drivers,
        }
    }

    /// Send `req` to `s`'s target and wait for the head of its answer.
    pub(super) async fn send(
        &self,
        s: &Arc<HttpSession>,
        req: Request<ReqBody>,
    ) -> Result<Response<Incoming>, String> {
        let of_s = |c: &OwnConn| std::ptr::eq(c.session.as_ptr(), Arc::as_ptr(s));
        let route = {
            let mut own = self.own.lock().expect("target router lock");
            match own.iter_mut().find(|c| of_s(c)) {
                None => {
                    own.push(OwnConn {
                        session: Arc::downgrade(s),
                        sender: None,
                    });
                    Route::Connect
                }
                Some(OwnConn { sender: slot, .. }) => match slot.take() {
                    None => Route::Pool,
                    Some(up) if up.is_ready() => Route::Own(up),
                    Some(up) if !up.is_closed() => {
                        *slot = Some(up);
                        Route::Pool
                    }
                    Some(_) => Route::Connect,
                },
            }
        };
        let mut up = match route {
            Route::Own(up) => up,
            Route::Pool => return s.upstream.send(req, false).await,
            Route::Connect => match s.upstream.connect_driven().await {
                Ok((up, driver)) => {
                    if let Err(mpsc::error::SendError(driver)) = self.drivers.send(driver) {
                        tokio::spawn(driver);
                    }
                    up
                }
                Err(e) => {
                    self.own
                        .lock()
                        .expect("target router lock")
                        .retain(|c| !of_s(c));
                    return Err(e);
                }
            },
        };
        let resp = up.send_request(req).await;
        if let Some(c) = self
            .own
            .lock()
            .expect("target router lock")
            .iter_mut()
            .find(|c| of_s(c))
        {
            c.sender = Some(up);
        }
        resp.map_err(|e| format!("the target did not answer: {e}"))
    }
}

/// A target's `Location` on `origin` (with `base_path`) as the same place on the gateway.
fn rewrite_location(
    origin: &str,
    base_path: &str,
    location: &str,
    gateway_origin: &str,
) -> Option<String> {
    let rest = location.strip_prefix(origin)?;
    if !(rest.is_empty() || rest.starts_with('/') || rest.starts_with('?')) {
        return None;
    }
    // The base path is removed only where it is a whole path prefix: `/console` off
    // `/console/x` or `/console?q`, never off `/console.evil.example/`.
    let rest = match rest.strip_prefix(base_path) {
        Some(after) if after.is_empty() || after.starts_with(['/', '?']) => after,
        _ => rest,
    };
    Some(format!("{gateway_origin}{rest}"))
}

/// Remove hop-by-hop headers and those named in `Connection` (a websocket's `Upgrade` and
/// `Connection` stay when `keep_upgrade`).
pub fn strip_hop_by_hop(h: &mut HeaderMap, keep_upgrade: bool) {
    // This runs twice per forwarded request, and most messages carry one hop-by-hop header
    // (`Connection`) or none: one pass over the names notes which are here (a `match` on each
    // name, no parsing or hashing), and only those are removed.
    let mut present = 0u16;
    for name in h.keys() {
        if let Some(i) = hop_by_hop_index(name) {
            present |= 1 << i;
        }
    }
    if present == 0 {
        return;
    }
    // `HOP_BY_HOP[0]`, `Connection`: the headers it names go too. Those it names most often
    // (`keep-alive`, `upgrade`) are hop-by-hop themselves and go below with the rest.
    if present & 1 != 0 {
        let named: Vec<HeaderName> = h
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|n| {
                !HOP_BY_HOP
                    .iter()
                    .any(|hop| n.eq_ignore_ascii_case(hop.as_str()))
            })
            .filter_map(|n| HeaderName::from_bytes(n.as_bytes()).ok())
            .collect();
        for n in named {
            h.remove(n);
        }
    }
    for (i, n) in HOP_BY_HOP.iter().enumerate() {
        let kept = keep_upgrade && (n == header::UPGRADE || n == header::CONNECTION);
        if present & (1 << i) != 0 && !kept {
            h.remove(n);
        }
    }
}

/// Where `n` is in [`HOP_BY_HOP`], if it is a hop-by-hop header.
fn hop_by_hop_index(n: &HeaderName) -> Option<usize> {
    Some(match n.as_str() {
        "connection" => 0,
        "keep-alive" => 1,
        "proxy-connection" => 2,
        "proxy-authenticate" => 3,
        "proxy-authorization" => 4,
        "te" => 5,
        "trailer" => 6,
        "transfer-encoding" => 7,
        "upgrade" => 8,
        _ => return None,
    })
}

/// Drop the `Domain` attribute so a target's cookie sticks to the gateway's host.
pub fn rewrite_set_cookie(v: &HeaderValue) -> HeaderValue {
    // Work on bytes: a cookie value need not be text, and its attributes still must be read.
    let bytes = v.as_bytes();
    let mut parts = bytes.split(|b| *b == b';');
    // The first part is the cookie's own name=value, whatever its name (a cookie may be
    // called "domain"); only the attributes after it can be `Domain`.
    let mut kept: Vec<&[u8]> = vec![parts.next().unwrap_or_default()];
    kept.extend(parts.filter(|attr| {
        // `Domain=...` as a browser reads an attribute (RFC 6265 §5.2: the name before `=`,
        // trimmed, any case). A bare `Domain` without `=` sets nothing and stays.
        match attr.iter().position(|b| *b == b'=') {
            Some(i) => !attr[..i].trim_ascii().eq_ignore_ascii_case(b"domain"),
            None => true,
        }
    }));
    HeaderValue::from_bytes(&kept.join(&b';')).unwrap_or_else(|_| v.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_with_base_paths() {
        assert_eq!(
            parse_url("https://10.0.0.9:8443/console/").unwrap(),
            ("10.0.0.9".into(), 8443, "/console".into())
        );
        assert_eq!(
            parse_url("https://idp.example").unwrap(),
            ("idp.example".into(), 443, "".into())
        );
        assert!(parse_url("http://x").is_err());
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| (HeaderName::from_static(k), HeaderValue::from_static(v)))
            .collect()
    }

    #[test]
    fn hop_by_hop_and_connection_named_headers_go() {
        let mut h = headers(&[
            ("connection", "close, x-secret"),
            ("x-secret", "1"),
            ("keep-alive", "5"),
            ("accept", "*/*"),
        ]);
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("accept"));
    }

    #[test]
    fn each_hop_by_hop_header_is_found_at_its_place() {
        for (i, n) in HOP_BY_HOP.iter().enumerate() {
            assert_eq!(hop_by_hop_index(n), Some(i), "{n}");
        }
        assert_eq!(hop_by_hop_index(&header::ACCEPT), None);
    }

    #[test]
    fn a_websocket_keeps_its_upgrade_and_connection_and_loses_the_rest() {
        let mut h = headers(&[
            ("connection", "Upgrade, X-Hop"),
            ("upgrade", "websocket"),
            ("x-hop", "1"),
            ("te", "trailers"),
            ("proxy-authorization", "Basic eDp5"),
            ("sec-websocket-key", "k"),
        ]);
        strip_hop_by_hop(&mut h, true);
        let mut left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        left.sort();
        assert_eq!(left, ["connection", "sec-websocket-key", "upgrade"]);
        strip_hop_by_hop(&mut h, false);
        assert_eq!(
            h.keys().map(|k| k.as_str()).collect::<Vec<_>>(),
            ["sec-websocket-key"]
        );
    }

    #[test]
    fn set_cookie_loses_its_domain() {
        let v = HeaderValue::from_static("sid=1; Domain=idp.example; Path=/; Secure");
        assert_eq!(rewrite_set_cookie(&v), "sid=1; Path=/; Secure");
    }

    /// Found by the `https_set_cookie` fuzz target (fuzz/regressions/https_set_cookie/).
    #[test]
    fn set_cookie_domain_goes_whatever_the_spacing_or_value_and_a_cookie_named_domain_stays() {
        let rewrite = |b: &[u8]| rewrite_set_cookie(&HeaderValue::from_bytes(b).unwrap());
        assert_eq!(
            rewrite(b"sid=1; Domain =idp.example; Path=/"),
            "sid=1; Path=/"
        );
        assert_eq!(
            rewrite("sid=\u{e9}; Domain=idp.example; Path=/".as_bytes()).as_bytes(),
            "sid=\u{e9}; Path=/".as_bytes()
        );
        assert_eq!(rewrite(b"domain=eu; Path=/"), "domain=eu; Path=/");
    }

    /// Found by the `https_location` fuzz target (fuzz/regressions/https_location/).
    #[test]
    fn location_base_path_is_removed_only_at_a_segment_boundary() {
        let at = |loc: &str| {
            rewrite_location(
                "https://10.0.0.9:8443",
                "/console",
                loc,
                "https://gw.example",
            )
        };
        assert_eq!(
            at("https://10.0.0.9:8443/console/users").as_deref(),
            Some("https://gw.example/users")
        );
        assert_eq!(
            at("https://10.0.0.9:8443/console?x=1").as_deref(),
            Some("https://gw.example?x=1")
        );
        assert_eq!(
            at("https://10.0.0.9:8443/console.evil.example/").as_deref(),
            Some("https://gw.example/console.evil.example/")
        );
        assert_eq!(at("https://10.0.0.9:84430/console/"), None);
    }
}
