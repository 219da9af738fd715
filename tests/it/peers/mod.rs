//! Test peers, each started once per run of the test binary and shared by every test: a real
//! OpenID provider ([`idp()`], Node's oidc-provider) and a headless Chromium ([`browser()`],
//! through playwright-core). Their Node sources and lock file are in tests/peers/
//! (`npm ci --prefix tests/peers`, which scripts/test.sh runs).
//!
//! Both Node processes exit when their stdin closes, which happens when the test binary exits.
//!
//! The fake ticket systems are different: each test starts its own [`Jira`] or [`ServiceNow`],
//! an HTTP server inside the test binary built from the vendor's documented REST shapes (on
//! `fake.rs`, which logs requests and serves the faults a test queues).

mod browser;
mod certs;
mod fake;
mod idp;
mod jira;
mod postgres;
mod rt;
mod servicenow;

use std::ffi::OsStr;
use std::fs::{self, File};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use serde_json::{Value, json};

#[allow(unused_imports)]
pub use browser::{Browser, Context, Page, browser};
pub use certs::make_certs;
pub use fake::{Auth, Fault, Seen};
#[allow(unused_imports)]
pub use idp::{Idp, idp};
pub use jira::{Category, Jira};
#[allow(unused_imports)]
pub use postgres::{PASSWORD as POSTGRES_PASSWORD, Postgres, postgres};
pub use rt::{Rt, RtProcess, rt};
pub use servicenow::ServiceNow;

/// tests/peers/
fn peers_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers")
}

/// The last lines of a peer's log, for a failure message.
fn log_tail(log: &Path) -> String {
    let text = fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// A started Node peer that printed its ready line.
struct Node {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    ready: Value,
}

/// Run `node tests/peers/SCRIPT ARGS` with stderr to `log`, stdin and stdout piped; wait for its
/// first stdout line (JSON). `temp`, the peer's temp directory, is removed by the peer when it
/// exits: the statics that hold a peer are never dropped.
fn start_node(script: &str, args: &[&OsStr], temp: &Path, log: &Path, timeout: Duration) -> Node {
    let dir = peers_dir();
    assert!(
        dir.join("node_modules/oidc-provider").is_dir()
            && dir.join("node_modules/playwright-core").is_dir(),
        "the test peers' Node packages are missing: npm ci --prefix tests/peers (scripts/test.sh does)"
    );
    let mut child = Command::new("node")
        .arg(dir.join(script))
        .args(args)
        .current_dir(&dir)
        .env("JITGATE_PEER_DIR", temp)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(File::create(log).expect("create a peer log"))
        .spawn()
        .unwrap_or_else(|e| panic!("start node {script}: {e}"));
    let stdin = child.stdin.take().expect("piped stdin");
    let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let read = stdout.read_line(&mut line);
        let _ = tx.send((read.map(|_| line), stdout));
    });
    let failed = |child: &mut Child, why: String| -> ! {
        let _ = child.kill();
        let _ = child.wait();
        panic!("{script} did not start: {why}; its log:\n{}", log_tail(log))
    };
    match rx.recv_timeout(timeout) {
        Ok((Ok(line), stdout)) if !line.is_empty() => match serde_json::from_str(&line) {
            Ok(ready) => Node {
                child,
                stdin,
                stdout,
                ready,
            },
            Err(e) => failed(
                &mut child,
                format!("its first line {line:?} is not JSON ({e})"),
            ),
        },
        Ok((Ok(_), _)) => failed(&mut child, "it exited".to_string()),
        Ok((Err(e), _)) => failed(&mut child, format!("reading its stdout: {e}")),
        Err(_) => failed(&mut child, format!("no ready line within {timeout:?}")),
    }
}

/// Percent-encode everything but RFC 3986's unreserved characters (for a query value or a path
/// segment).
pub fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The decoded value of query parameter `name` in `url` (e.g. the `code` a sign-in landed with).
pub fn query_param(url: &str, name: &str) -> Option<String> {
    let query = url.split_once('?')?.1.split('#').next()?;
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decode(k) == name).then(|| percent_decode(v))
    })
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(v) => {
                        out.push(v);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A PKCE pair: a random verifier and its S256 challenge.
fn pkce() -> (String, String) {
    let mut bytes = [0u8; 32];
    aws_lc_rs::rand::fill(&mut bytes).expect("random bytes");
    let verifier = B64.encode(bytes);
    let challenge = B64.encode(aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        verifier.as_bytes(),
    ));
    (verifier, challenge)
}

/// The IdP's authorization URL for a code flow with PKCE, plus `extra` (`&max_age=1`...).
fn auth_url(
    idp: &Idp,
    client_id: &str,
    redirect: &str,
    nonce: &str,
    challenge: &str,
    extra: &str,
) -> String {
    format!(
        "{}/auth?client_id={}&response_type=code&scope=openid%20profile%20email%20groups\
         &redirect_uri={}&state=s&nonce={}&code_challenge={}&code_challenge_method=S256{extra}",
        idp.issuer(),
        url_encode(client_id),
        url_encode(redirect),
        url_encode(nonce),
        url_encode(challenge),
    )
}

/// Redeem `code` at the token endpoint with HTTP basic client authentication.
fn redeem(
    idp: &Idp,
    client: &(String, String),
    code: &str,
    redirect: &str,
    verifier: &str,
) -> (u16, Value) {
    let auth = format!("{}:{}", client.0, client.1);
    let token = format!("{}/token", idp.issuer());
    let (status, body) = idp.curl(&[
        "-u",
        &auth,
        "-d",
        "grant_type=authorization_code",
        "--data-urlencode",
        &format!("code={code}"),
        "--data-urlencode",
        &format!("redirect_uri={redirect}"),
        "--data-urlencode",
        &format!("code_verifier={verifier}"),
        &token,
    ]);
    let body = serde_json::from_str(&body).unwrap_or_else(|e| panic!("token answer {body}: {e}"));
    (status, body)
}

/// Check a JWT's RS256 signature against the IdP's JWKS; returns its header and claims.
fn verify_jwt(idp: &Idp, jwt: &str) -> (Value, Value) {
    let parts: Vec<&str> = jwt.split('.').collect();
    assert_eq!(parts.len(), 3, "not a JWS: {jwt}");
    let part = |s: &str| -> Value {
        serde_json::from_slice(&B64.decode(s).expect("base64url")).expect("JSON")
    };
    let (header, claims) = (part(parts[0]), part(parts[1]));
    assert_eq!(header["alg"], "RS256", "header {header}");
    let (status, jwks) = idp.curl(&[&format!("{}/jwks", idp.issuer())]);
    assert_eq!(status, 200, "jwks: {jwks}");
    let jwks: Value = serde_json::from_str(&jwks).expect("JWKS JSON");
    let key = jwks["keys"]
        .as_array()
        .and_then(|keys| keys.iter().find(|k| k["kid"] == header["kid"]))
        .unwrap_or_else(|| panic!("no key {} in the JWKS {jwks}", header["kid"]));
    let n = B64
        .decode(key["n"].as_str().expect("n"))
        .expect("n base64url");
    let e = B64
        .decode(key["e"].as_str().expect("e"))
        .expect("e base64url");
    let sig = B64.decode(parts[2]).expect("signature base64url");
    aws_lc_rs::signature::RsaPublicKeyComponents { n: &n, e: &e }
        .verify(
            &aws_lc_rs::signature::RSA_PKCS1_2048_8192_SHA256,
            format!("{}.{}", parts[0], parts[1]).as_bytes(),
            &sig,
        )
        .unwrap_or_else(|_| panic!("the ID token's signature does not verify: {claims}"));
    (header, claims)
}

/// Fill the IdP's login form and submit it; the URL after.
fn sign_in(page: &Page, login: &str, password: &str) -> String {
    page.fill("#login", login);
    page.fill("#password", password);
    page.click("#submit")
}

#[test]
fn the_identity_provider_signs_a_person_in_through_chromium() {
    let idp = idp();
    let iss = idp.issuer();
    let (status, discovery) = idp.curl(&[&format!("{iss}/.well-known/openid-configuration")]);
    assert_eq!(status, 200, "discovery: {discovery}");
    let discovery: Value = serde_json::from_str(&discovery).expect("discovery JSON");
    assert_eq!(discovery["issuer"], iss);
    assert_eq!(
        discovery["end_session_endpoint"],
        format!("{iss}/session/end")
    );
    assert_eq!(discovery["registration_endpoint"], format!("{iss}/reg"));
    assert_eq!(
        discovery["scopes_supported"],
        json!(["openid", "profile", "email", "groups", "tickets"])
    );

    let callback = idp.page(r#"<!DOCTYPE html><title>RP</title><h1 id="rp">back at the RP</h1>"#);
    let client = idp.register_client(&callback, "client_secret_basic");
    idp.set_account(
        "peers-alice",
        "correct horse",
        json!({"preferred_username": "alice", "name": "Alice Example",
               "email": "alice@example.test", "groups": ["helpdesk", "ops"]}),
    );

    let ctx = browser().context();
    let page = ctx.page();
    let (verifier, challenge) = pkce();
    let url = auth_url(idp, &client.0, &callback, "n1", &challenge, "");
    assert_eq!(page.goto(&url), Some(200));
    assert!(
        page.url().starts_with(&format!("{iss}/interaction/")),
        "at {}",
        page.url()
    );
    let shot = tempfile::NamedTempFile::new().expect("temp file");
    page.screenshot(shot.path());
    assert!(
        fs::read(shot.path()).unwrap().starts_with(b"\x89PNG"),
        "a PNG screenshot"
    );

    sign_in(&page, "peers-alice", "wrong");
    assert_eq!(page.text("#error"), "Wrong username or password.");
    let landed = sign_in(&page, "peers-alice", "correct horse");
    assert!(
        landed.starts_with(&format!("{callback}&")),
        "landed at {landed}"
    );
    assert_eq!(query_param(&landed, "state").as_deref(), Some("s"));
    assert_eq!(query_param(&landed, "iss").as_deref(), Some(iss));
    assert_eq!(page.text("#rp"), "back at the RP");
    let session = ctx.cookie("_session").expect("the IdP's session cookie");
    assert_eq!(
        (session["secure"].clone(), session["httpOnly"].clone()),
        (json!(true), json!(true))
    );

    let code = query_param(&landed, "code").expect("a code");
    let (status, tokens) = redeem(idp, &client, &code, &callback, &verifier);
    assert_eq!(status, 200, "token: {tokens}");
    let (header, claims) = verify_jwt(idp, tokens["id_token"].as_str().expect("an id_token"));
    assert_eq!(claims["iss"], iss);
    assert_eq!(claims["aud"], client.0.as_str());
    assert_eq!(claims["sub"], "peers-alice");
    assert_eq!(claims["nonce"], "n1");
    assert!(claims["exp"].as_i64() > Some(crate::harness::now()));
    let bearer = format!(
        "authorization: Bearer {}",
        tokens["access_token"].as_str().unwrap()
    );
    let (status, userinfo) = idp.curl(&["-H", &bearer, &format!("{iss}/me")]);
    assert_eq!(status, 200, "userinfo: {userinfo}");
    assert_eq!(
        serde_json::from_str::<Value>(&userinfo).unwrap(),
        json!({"sub": "peers-alice", "preferred_username": "alice", "name": "Alice Example",
               "email": "alice@example.test", "groups": ["helpdesk", "ops"]})
    );
    let (status, again) = redeem(idp, &client, &code, &callback, &verifier);
    assert_eq!(
        (status, &again["error"]),
        (400, &json!("invalid_grant")),
        "a code is single-use"
    );

    // The next token response carries the ID token with another audience, signed by the same
    // key; the one after is normal again. The IdP session signs her in without the form.
    idp.tamper_next_id_token(&client.0, "other-app");
    for (nonce, aud) in [("n2", "other-app"), ("n3", client.0.as_str())] {
        let (verifier, challenge) = pkce();
        page.goto(&auth_url(idp, &client.0, &callback, nonce, &challenge, ""));
        let landed = page.url();
        assert!(
            landed.starts_with(&format!("{callback}&")),
            "landed at {landed}"
        );
        let code = query_param(&landed, "code").expect("a code");
        let (status, tokens) = redeem(idp, &client, &code, &callback, &verifier);
        assert_eq!(status, 200, "token: {tokens}");
        let (h, claims) = verify_jwt(idp, tokens["id_token"].as_str().expect("an id_token"));
        assert_eq!(h["kid"], header["kid"]);
        assert_eq!(
            (&claims["aud"], &claims["nonce"]),
            (&json!(aud), &json!(nonce))
        );
        assert_eq!(claims["sub"], "peers-alice");
    }
}

#[test]
fn the_identity_provider_asks_again_past_max_age() {
    let idp = idp();
    let callback = idp.page("<!DOCTYPE html><title>RP</title><p>callback</p>");
    let client = idp.register_client(&callback, "client_secret_basic");
    idp.set_account(
        "peers-bob",
        "pw-bob",
        json!({"preferred_username": "bob", "groups": []}),
    );
    let ctx = browser().context();
    let page = ctx.page();
    let (_, challenge) = pkce();
    page.goto(&auth_url(idp, &client.0, &callback, "n", &challenge, ""));
    assert!(sign_in(&page, "peers-bob", "pw-bob").starts_with(&callback));

    std::thread::sleep(Duration::from_secs(2));
    let (verifier, challenge) = pkce();
    let before = crate::harness::now();
    page.goto(&auth_url(
        idp,
        &client.0,
        &callback,
        "n",
        &challenge,
        "&max_age=1",
    ));
    assert!(
        page.url()
            .starts_with(&format!("{}/interaction/", idp.issuer())),
        "at {}",
        page.url()
    );
    let landed = sign_in(&page, "peers-bob", "pw-bob");
    let code = query_param(&landed, "code").unwrap_or_else(|| panic!("no code in {landed}"));
    let (status, tokens) = redeem(idp, &client, &code, &callback, &verifier);
    assert_eq!(status, 200, "token: {tokens}");
    let (_, claims) = verify_jwt(idp, tokens["id_token"].as_str().expect("an id_token"));
    assert!(
        claims["auth_time"].as_i64() >= Some(before),
        "auth_time is the new sign-in: {claims}"
    );
}

#[test]
fn the_browser_driver_reports_bad_commands_and_serves_threads_at_once() {
    let b = browser();
    assert!(
        b.try_cmd("no-such-command", json!({}))
            .unwrap_err()
            .contains("unknown command")
    );
    assert!(
        b.try_cmd("newPage", json!({"ctx": "c-none"}))
            .unwrap_err()
            .contains("no context")
    );
    let html = r#"<!DOCTYPE html><title>t</title><p id="p">here</p>"#;
    let url = idp().page(html);
    let threads: Vec<_> = (0..3)
        .map(|i| {
            let url = url.clone();
            std::thread::spawn(move || {
                let ctx = browser().context();
                let page = ctx.page();
                assert_eq!(page.goto(&url), Some(200));
                let missing = page.try_cmd("text", json!({"selector": "#nope", "timeout_ms": 300}));
                assert!(missing.is_err(), "{missing:?}");
                assert_eq!(page.eval(&format!("async () => {i} + 1")), json!(i + 1));
                assert!(page.try_eval("no_such_name").is_err());
                page.text("#p")
            })
        })
        .collect();
    for t in threads {
        assert_eq!(t.join().expect("a browsing thread"), "here");
    }

    // Cookies go in and come out per context; a refused connection is an error, not a hang.
    let (one, two) = (b.context(), b.context());
    assert_ne!(one.id(), two.id());
    one.add_cookies(
        json!([{"name": "__Host-t", "value": "1", "url": idp().issuer(),
                            "secure": true, "httpOnly": true, "sameSite": "Lax"}]),
    );
    assert_eq!(one.cookie("__Host-t").expect("the cookie")["value"], "1");
    assert!(two.cookie("__Host-t").is_none());
    let page = one.page();
    assert_eq!(page.goto(&url), Some(200));
    assert_eq!(page.wait_url(&url, Duration::from_secs(5)), url);
    assert!(page.content().contains(r#"<p id="p">here</p>"#));
    assert!(
        page.eval("document.cookie") == json!(""),
        "the cookie is HttpOnly"
    );
    let refused = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = refused.local_addr().unwrap().port();
    drop(refused);
    let err = page
        .try_goto(&format!("https://127.0.0.1:{port}/"))
        .unwrap_err();
    assert!(err.contains("ERR_CONNECTION_REFUSED"), "{err}");
    assert!(
        fs::read_to_string(idp().ca())
            .unwrap()
            .starts_with("-----BEGIN CERTIFICATE-----")
    );
    let start = Instant::now();
    let err = browser()
        .context()
        .page()
        .try_wait_url("https://nowhere.invalid/", Duration::from_millis(300))
        .unwrap_err();
    assert!(err.contains("did not reach"), "{err}");
    assert!(start.elapsed() < Duration::from_secs(10));
}
