//! `jitgate login`, `logout` and `whoami`: a person signs the CLI in through the gateway's
//! browser sign-in. The CLI waits on `http://127.0.0.1:<free port>/callback`; the gateway does
//! the round trip to the identity provider and sends the browser back there with a one-time
//! code, which the CLI exchanges (with its PKCE verifier) for a `jgs_` credential. Credentials
//! are kept 0600 in `$XDG_CONFIG_HOME/jitgate/credentials.json`, keyed by API URL.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::{Cli, emit, expect_ok};
use crate::identity::{challenge, http::url_encode};
use crate::types::random_id;

/// How long `jitgate login` waits for the browser to come back.
const WAIT: Duration = Duration::from_secs(300);

/// `$XDG_CONFIG_HOME/jitgate/credentials.json` (or `~/.config/...`).
pub fn credentials_path() -> Option<PathBuf> {
    let base = match std::env::var_os("XDG_CONFIG_HOME") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => PathBuf::from(std::env::var_os("HOME")?).join(".config"),
    };
    Some(base.join("jitgate").join("credentials.json"))
}

fn read_all() -> BTreeMap<String, Value> {
    credentials_path()
        .and_then(|p| std::fs::read(p).ok())
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

fn write_all(all: &BTreeMap<String, Value>) -> Result<PathBuf> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let path = credentials_path().context("neither XDG_CONFIG_HOME nor HOME is set")?;
    let dir = path.parent().expect("the path has a directory");
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    // Write beside, then rename: a crash never leaves half a file.
    let tmp = path.with_extension("json.tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    f.write_all(&serde_json::to_vec_pretty(all)?)?;
    f.sync_all()?;
    std::fs::rename(&tmp, &path)?;
    Ok(path)
}

/// The stored CLI credential for `url`, if it has not expired.
pub fn stored(url: &str) -> Option<String> {
    let all = read_all();
    let e = all.get(url.trim_end_matches('/'))?;
    let exp = e.get("expires_at").and_then(Value::as_str)?;
    let exp = crate::config::parse_expiry(exp)?;
    if crate::types::now() >= exp {
        return None;
    }
    e.get("credential")
        .and_then(Value::as_str)
        .map(str::to_string)
}

/// `jitgate login`.
pub async fn login(cli: &Cli, no_browser: bool) -> Result<i32> {
    let (url, ca) = super::endpoint(cli)?;
    let listener = TcpListener::bind(("127.0.0.1", 0))
        .await
        .context("cannot listen on 127.0.0.1 for the browser's return")?;
    let port = listener.local_addr()?.port();
    let verifier = random_id(64);
    let state = random_id(24);
    let redirect = format!("http://127.0.0.1:{port}/callback");
    let start = format!(
        // step_up: the provider checks the person again when its own sign-in is older than
        // step_up_max_age, so a fresh `jitgate login` can always approve high-impact work.
        "{url}/login?cli_redirect={}&cli_challenge={}&cli_state={state}&step_up=1",
        url_encode(&redirect),
        challenge(&verifier)
    );
    // Ask the gateway first: one without an identity provider answers /login with a page, not
    // a redirect, and waiting for a browser would be waiting for nothing.
    let probe = crate::client::Client::new(&url, None, &ca)?;
    let path = start.trim_start_matches(&url).to_string();
    match probe.get(&path).await {
        Err(crate::client::ClientError::NotJson(200)) => bail!(
            "{url} has no identity provider ([oidc]), so the CLI cannot sign in as a person there; use an API key (JITGATE_API_KEY), or a sign-in link in the browser"
        ),
        Err(crate::client::ClientError::NotJson(502)) => bail!(
            "{url} cannot reach its identity provider right now; try again in a minute, or ask an admin to check [oidc]"
        ),
        _ => {}
    }
    let opened = !no_browser && open_browser(&start);
    if opened {
        eprintln!("Opening your browser to sign in. If it does not open, visit:\n{start}");
    } else {
        eprintln!("Visit this address in a browser on this machine to sign in:\n{start}");
    }
    let code = tokio::time::timeout(WAIT, wait_for_code(&listener, &state))
        .await
        .map_err(|_| {
            anyhow::anyhow!(
                "no sign-in came back within {} minutes; run jitgate login again",
                WAIT.as_secs() / 60
            )
        })??;
    let client = crate::client::Client::new(&url, None, &ca)?;
    let body = expect_ok(
        client
            .post(
                "/api/v1/auth/cli-token",
                json!({ "code": code, "code_verifier": verifier }),
            )
            .await?,
    )?;
    let credential = body
        .get("credential")
        .and_then(Value::as_str)
        .context("the gateway's answer has no credential")?;
    let mut all = read_all();
    all.insert(
        url.trim_end_matches('/').to_string(),
        json!({
            "credential": credential,
            "user": body.get("user"),
            "expires_at": body.get("expires_at"),
        }),
    );
    let path = write_all(&all)?;
    let mut shown = body.clone();
    if let Some(o) = shown.as_object_mut() {
        o.remove("credential");
        o.insert("credentials_file".into(), json!(path.display().to_string()));
    }
    emit(cli, &shown, || {
        format!(
            "Signed in as {} (roles: {}) until {}; the credential is in {}",
            body["user"].as_str().unwrap_or("?"),
            list(&body["roles"]),
            body["expires_at"].as_str().unwrap_or("?"),
            path.display()
        )
    });
    Ok(0)
}

fn list(v: &Value) -> String {
    let items: Vec<&str> = v
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if items.is_empty() {
        "none".into()
    } else {
        items.join(", ")
    }
}

/// Open `url` with `$BROWSER` or `xdg-open`; whether one started.
fn open_browser(url: &str) -> bool {
    let cmd = std::env::var("BROWSER")
        .ok()
        .filter(|b| !b.is_empty())
        .unwrap_or_else(|| "xdg-open".into());
    std::process::Command::new(cmd)
        .arg(url)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .is_ok()
}

/// Serve the loopback address until the browser brings `code` with our `state`.
async fn wait_for_code(listener: &TcpListener, state: &str) -> Result<String> {
    loop {
        let (mut sock, _) = listener.accept().await?;
        let mut buf = vec![0u8; 8192];
        let mut n = 0;
        // Read the request head (bounded), a few seconds at most.
        let head = tokio::time::timeout(Duration::from_secs(5), async {
            while n < buf.len() {
                let m = sock.read(&mut buf[n..]).await?;
                if m == 0 {
                    break;
                }
                n += m;
                if buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                    break;
                }
            }
            Ok::<_, std::io::Error>(())
        })
        .await;
        if head.is_err() {
            continue;
        }
        let text = String::from_utf8_lossy(&buf[..n]).to_string();
        let target = text
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("GET "))
            .and_then(|l| l.split(' ').next())
            .unwrap_or("");
        let Some(query) = target.strip_prefix("/callback?") else {
            let _ = sock
                .write_all(
                    b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                )
                .await;
            continue;
        };
        let field = |name: &str| {
            query.split('&').find_map(|p| {
                let (k, v) = p.split_once('=')?;
                (k == name).then(|| v.to_string())
            })
        };
        let (ok, message, result) = match (field("code"), field("state")) {
            (Some(code), Some(s)) if s == state => (
                true,
                "You can close this tab and return to the terminal.",
                Some(code),
            ),
            _ => (
                false,
                "This answer does not belong to the jitgate login waiting here; run jitgate login again.",
                None,
            ),
        };
        let page = crate::console::pages::cli_done_html(ok, message);
        let resp = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\nCache-Control: no-store\r\nReferrer-Policy: no-referrer\r\nConnection: close\r\n\r\n{page}",
            page.len()
        );
        let _ = sock.write_all(resp.as_bytes()).await;
        let _ = sock.shutdown().await;
        match result {
            Some(code) => return Ok(code),
            None => bail!(
                "the browser came back with an answer for another sign-in; run jitgate login again"
            ),
        }
    }
}

/// `jitgate logout`: revoke the stored credential at the gateway and forget it.
pub async fn logout(cli: &Cli) -> Result<i32> {
    let (url, ca) = super::endpoint(cli)?;
    let key = url.trim_end_matches('/').to_string();
    let mut all = read_all();
    let Some(entry) = all.remove(&key) else {
        emit(cli, &json!({ "signed_out": false }), || {
            format!("The CLI is not signed in to {url}")
        });
        return Ok(0);
    };
    let revoked = match entry.get("credential").and_then(Value::as_str) {
        Some(c) => {
            let client = crate::client::Client::new(&url, Some(crate::types::Secret::new(c)), &ca)?;
            match client.post("/api/v1/auth/logout", json!({})).await {
                Ok(a) if a.ok() => true,
                // Already expired or ended at the gateway: forgetting it is all that is left.
                Ok(a) if a.status == 401 => true,
                Ok(a) => bail!("the gateway refused the sign-out: {}", a.message()),
                Err(e) => bail!("{e}; the credential is kept so that it can still be revoked"),
            }
        }
        None => false,
    };
    write_all(&all)?;
    emit(
        cli,
        &json!({ "signed_out": true, "revoked": revoked }),
        || format!("Signed out of {url}"),
    );
    Ok(0)
}

/// `jitgate whoami`.
pub async fn whoami(cli: &Cli) -> Result<i32> {
    let c = super::client(cli)?;
    let v = expect_ok(c.get("/api/v1/whoami").await?)?;
    let out = json!({
        "user": v["user"],
        "roles": v["roles"],
        "groups": v["groups"],
        "method": v["method"],
        "signed_in_at": v["signed_in_at"],
        "expires_at": v["expires_at"],
    });
    emit(cli, &out, || {
        format!(
            "{} (roles: {}; groups: {}), signed in by {}{}",
            v["user"].as_str().unwrap_or("?"),
            list(&v["roles"]),
            list(&v["groups"]),
            v["method"].as_str().unwrap_or("?"),
            v["expires_at"]
                .as_str()
                .map(|e| format!(", until {e}"))
                .unwrap_or_default()
        )
    });
    Ok(0)
}

/// `jitgate sign-in-link USER` (admins; gateways without an identity provider).
pub async fn sign_in_link(cli: &Cli, user: &str) -> Result<i32> {
    let c = super::client(cli)?;
    let v = expect_ok(
        c.post("/api/v1/auth/links", json!({ "user": user }))
            .await?,
    )?;
    emit(cli, &v, || {
        format!(
            "One-time sign-in link for {} (works once, until {}):\n{}",
            v["user"].as_str().unwrap_or("?"),
            v["expires_at"].as_str().unwrap_or("?"),
            v["url"].as_str().unwrap_or("?")
        )
    });
    Ok(0)
}
