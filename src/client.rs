//! The HTTPS client the CLI uses to call the API: trusts only the given CA, sends the caller's
//! API key, returns the status and JSON body.

use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::Request;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::types::Secret;

/// Largest response body the client reads.
const MAX_RESPONSE: usize = 16 * 1024 * 1024;

/// Failures talking to the API.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("JITGATE_URL {0:?} is not an https:// URL (e.g. https://127.0.0.1:8440)")]
    BadUrl(String),
    #[error(
        "cannot reach the jitgate API at {url}: {reason}; is `jitgate serve` running and JITGATE_URL right?"
    )]
    Connect { url: String, reason: String },
    #[error(
        "TLS with the jitgate API at {url} failed: {reason}; check JITGATE_CA (the gateway's certs/ca.pem)"
    )]
    Tls { url: String, reason: String },
    #[error("the API call failed: {0}")]
    Http(String),
    #[error("the API answered with something that is not JSON (status {0})")]
    NotJson(u16),
    #[error("{0}")]
    Ca(String),
}

/// An API client.
#[derive(Clone)]
pub struct Client {
    host: String,
    port: u16,
    base: String,
    key: Option<Secret>,
    tls: TlsConnector,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").field("base", &self.base).finish()
    }
}

/// An API answer.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: Value,
}

impl Answer {
    /// Whether the status is 2xx.
    pub fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The error message of a failed call.
    pub fn message(&self) -> String {
        self.body
            .get("message")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| format!("the API answered {}", self.status))
    }
}

impl Client {
    /// A client for `url` (`https://host:port`), authenticating with `key`, trusting `ca_pem`.
    pub fn new(url: &str, key: Option<Secret>, ca_pem: &str) -> Result<Self, ClientError> {
        let rest = url
            .trim_end_matches('/')
            .strip_prefix("https://")
            .ok_or_else(|| ClientError::BadUrl(url.into()))?;
        let (host, port) = match rest.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => match p.parse::<u16>() {
                Ok(p) => (h.to_string(), p),
                Err(_) => (rest.to_string(), 443),
            },
            _ => (rest.to_string(), 443),
        };
        if host.is_empty() || host.contains('/') {
            return Err(ClientError::BadUrl(url.into()));
        }
        let mut cfg = crate::pki::client_tls(ca_pem).map_err(|e| ClientError::Ca(e.to_string()))?;
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string(),
            port,
            base: format!("https://{rest}"),
            key,
            tls: TlsConnector::from(Arc::new(cfg)),
        })
    }

    /// `host:port` as the Host header names it.
    fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> Result<Answer, ClientError> {
        self.call("GET", path, None).await
    }

    /// `POST path` with a JSON body.
    pub async fn post(&self, path: &str, body: Value) -> Result<Answer, ClientError> {
        self.call("POST", path, Some(body)).await
    }

    /// One call on a fresh connection.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Result<Answer, ClientError> {
        let url = self.base.clone();
        let tcp = tokio::time::timeout(
            Duration::from_secs(10),
            TcpStream::connect((self.host.as_str(), self.port)),
        )
        .await
        .map_err(|_| ClientError::Connect {
            url: url.clone(),
            reason: "timed out".into(),
        })?
        .map_err(|e| ClientError::Connect {
            url: url.clone(),
            reason: e.to_string(),
        })?;
        let name = rustls::pki_types::ServerName::try_from(self.host.clone())
            .map_err(|_| ClientError::BadUrl(url.clone()))?;
        let tls = self
            .tls
            .connect(name, tcp)
            .await
            .map_err(|e| ClientError::Tls {
                url: url.clone(),
                reason: e.to_string(),
            })?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| ClientError::Http(e.to_string()))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, self.authority())
            .header(hyper::header::ACCEPT, "application/json");
        if let Some(k) = &self.key {
            req = req.header(
                hyper::header::AUTHORIZATION,
                format!("Bearer {}", k.expose()),
            );
        }
        let bytes = match body {
            Some(b) => {
                req = req.header(hyper::header::CONTENT_TYPE, "application/json");
                serde_json::to_vec(&b).expect("JSON values serialize")
            }
            None => Vec::new(),
        };
        let req = req
            .body(Full::new(bytes::Bytes::from(bytes)))
            .map_err(|e| ClientError::Http(e.to_string()))?;
        let resp = tokio::time::timeout(Duration::from_secs(60), sender.send_request(req))
            .await
            .map_err(|_| ClientError::Http("no answer within 60 s".into()))?
            .map_err(|e| ClientError::Http(e.to_string()))?;
        let status = resp.status().as_u16();
        let body = Limited::new(resp.into_body(), MAX_RESPONSE)
            .collect()
            .await
            .map_err(|e| ClientError::Http(e.to_string()))?
            .to_bytes();
        let body = if body.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&body).map_err(|_| ClientError::NotJson(status))?
        };
        Ok(Answer { status, body })
    }
}
