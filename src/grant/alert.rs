//! Break-glass alerts: a JSON POST to the configured webhook, retried, bounded in time.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Attempts and the pause before each retry.
const RETRIES: [Duration; 3] = [
    Duration::from_millis(0),
    Duration::from_secs(1),
    Duration::from_secs(3),
];
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);

/// Deliver `body` to `url`; `Err` says why the last attempt failed.
pub async fn deliver(
    url: &str,
    ca_pem: Option<&str>,
    body: &serde_json::Value,
) -> Result<u16, String> {
    let mut last = String::new();
    for pause in RETRIES {
        tokio::time::sleep(pause).await;
        match tokio::time::timeout(ATTEMPT_TIMEOUT, post(url, ca_pem, body)).await {
            Ok(Ok(status)) if (200..300).contains(&status) => return Ok(status),
            Ok(Ok(status)) => last = format!("the webhook answered {status}"),
            Ok(Err(e)) => last = e,
            Err(_) => last = format!("no answer within {} s", ATTEMPT_TIMEOUT.as_secs()),
        }
        tracing::warn!(url = %url, error = %last, "break-glass alert attempt failed");
    }
    Err(last)
}

async fn post(url: &str, ca_pem: Option<&str>, body: &serde_json::Value) -> Result<u16, String> {
    let uri: http::Uri = url.parse().map_err(|e| format!("bad alert URL: {e}"))?;
    let https = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        _ => return Err("the alert URL must be http:// or https://".into()),
    };
    let host = uri.host().ok_or("the alert URL has no host")?.to_string();
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let path = uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/")
        .to_string();
    let tcp = TcpStream::connect((host.trim_start_matches('[').trim_end_matches(']'), port))
        .await
        .map_err(|e| format!("cannot connect: {e}"))?;
    let req = http::Request::post(path)
        .header(
            http::header::HOST,
            uri.authority().map(|a| a.as_str()).unwrap_or(&host),
        )
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(http::header::USER_AGENT, "jitgate")
        .body(Full::new(Bytes::from(
            serde_json::to_vec(body).expect("JSON serializes"),
        )))
        .map_err(|e| e.to_string())?;
    let status = if https {
        let ca = ca_pem.ok_or("an https alert URL needs alert_ca")?;
        let mut cfg = crate::pki::client_tls(ca).map_err(|e| e.to_string())?;
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        let name = rustls::pki_types::ServerName::try_from(host.clone())
            .map_err(|_| format!("{host} is not a valid TLS name"))?;
        let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS failed: {e}"))?;
        send(TokioIo::new(tls), req).await?
    } else {
        send(TokioIo::new(tcp), req).await?
    };
    Ok(status)
}

async fn send<I>(io: I, req: http::Request<Full<Bytes>>) -> Result<u16, String>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let _ = resp.into_body().collect().await;
    Ok(status)
}
