//! The few HTTPS calls jitgate makes to an identity provider (discovery, keys, token, userinfo):
//! one request per connection, HTTPS only, bounded in time and size, no redirects followed.

use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::Request;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// Largest answer read from the provider (metadata, key sets and tokens are a few KiB).
const MAX_ANSWER: usize = 1024 * 1024;
/// How long one call to the provider may take, connect to last byte.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// HTTPS to the provider, trusting either the configured CA or the system's roots.
#[derive(Clone)]
pub struct IdpHttp {
    tls: TlsConnector,
}

impl std::fmt::Debug for IdpHttp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IdpHttp")
    }
}

/// One answer: status and JSON body.
pub struct Answer {
    pub status: u16,
    pub body: Value,
}

/// The body of a call.
pub enum Body<'a> {
    None,
    /// `application/x-www-form-urlencoded` fields.
    Form(&'a [(&'a str, &'a str)]),
}

impl IdpHttp {
    /// Trust the PEM certificates in `ca_pem`, or the system's roots when `None`.
    pub fn new(ca_pem: Option<&[u8]>) -> Result<Self, String> {
        let mut roots = rustls::RootCertStore::empty();
        match ca_pem {
            Some(pem) => {
                for c in rustls_pemfile::certs(&mut &pem[..]) {
                    let c = c.map_err(|e| format!("oidc.ca: {e}"))?;
                    roots
                        .add(c)
                        .map_err(|e| format!("oidc.ca holds an unusable certificate: {e}"))?;
                }
            }
            None => {
                let found = rustls_native_certs::load_native_certs();
                for c in found.certs {
                    let _ = roots.add(c);
                }
            }
        }
        if roots.is_empty() {
            return Err(
                "no certificate to trust for the identity provider: set [oidc] ca to its CA's PEM file"
                    .into(),
            );
        }
        let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            tls: TlsConnector::from(Arc::new(cfg)),
        })
    }

    /// `method url`, with an optional bearer token or basic credentials; the body is JSON.
    pub async fn call(
        &self,
        method: &str,
        url: &str,
        auth: Option<String>,
        body: Body<'_>,
    ) -> Result<Answer, String> {
        tokio::time::timeout(CALL_TIMEOUT, self.call_inner(method, url, auth, body))
            .await
            .map_err(|_| format!("{url} did not answer within {} s", CALL_TIMEOUT.as_secs()))?
    }

    async fn call_inner(
        &self,
        method: &str,
        url: &str,
        auth: Option<String>,
        body: Body<'_>,
    ) -> Result<Answer, String> {
        let uri: http::Uri = url.parse().map_err(|_| format!("{url:?} is not a URL"))?;
        if uri.scheme_str() != Some("https") {
            return Err(format!("{url} is not an https:// URL"));
        }
        let host = uri
            .host()
            .ok_or_else(|| format!("{url} has no host"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = uri.port_u16().unwrap_or(443);
        let tcp = TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|e| format!("cannot connect to {url}: {e}"))?;
        let name = rustls::pki_types::ServerName::try_from(host.clone())
            .map_err(|_| format!("{url}: bad host name"))?;
        let tls = self
            .tls
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS with {url} failed: {e} (is [oidc] ca right?)"))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| format!("{url}: {e}"))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let authority = uri.authority().map(|a| a.as_str()).unwrap_or(&host);
        let path = uri.path_and_query().map_or("/", |p| p.as_str());
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, authority)
            .header(hyper::header::ACCEPT, "application/json")
            .header(hyper::header::USER_AGENT, "jitgate");
        if let Some(a) = auth {
            req = req.header(hyper::header::AUTHORIZATION, a);
        }
        let bytes = match body {
            Body::None => Vec::new(),
            Body::Form(fields) => {
                req = req.header(
                    hyper::header::CONTENT_TYPE,
                    "application/x-www-form-urlencoded",
                );
                form_encode(fields).into_bytes()
            }
        };
        let req = req
            .body(Full::new(bytes::Bytes::from(bytes)))
            .map_err(|e| e.to_string())?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| format!("{url}: {e}"))?;
        let status = resp.status().as_u16();
        let body = Limited::new(resp.into_body(), MAX_ANSWER)
            .collect()
            .await
            .map_err(|e| format!("{url}: reading the answer: {e}"))?
            .to_bytes();
        let body = if body.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&body)
                .map_err(|_| format!("{url} answered {status} with something that is not JSON"))?
        };
        Ok(Answer { status, body })
    }
}

/// `application/x-www-form-urlencoded` for `fields`.
pub fn form_encode(fields: &[(&str, &str)]) -> String {
    fields
        .iter()
        .map(|(k, v)| format!("{}={}", url_encode(k), url_encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// Percent-encode everything but the unreserved characters (RFC 3986).
pub fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_fields_are_percent_encoded() {
        assert_eq!(
            form_encode(&[("a b", "x&y=z"), ("redirect_uri", "https://h/cb?q=1")]),
            "a%20b=x%26y%3Dz&redirect_uri=https%3A%2F%2Fh%2Fcb%3Fq%3D1"
        );
    }
}
