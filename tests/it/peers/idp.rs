//! The OpenID provider peer: `tests/peers/idp.mjs` (Node's oidc-provider) on
//! `https://127.0.0.1:PORT`, with a certificate from a CA made here with rcgen. Started once per
//! run of the test binary; each test registers its own client and accounts.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{log_tail, make_certs, start_node, url_encode};
use crate::harness::output;

/// How long the IdP may take to print its ready line (it takes about half a second).
const START_TIMEOUT: Duration = Duration::from_secs(30);

static IDP: OnceLock<Idp> = OnceLock::new();

/// The run's OpenID provider, started on first use.
pub fn idp() -> &'static Idp {
    IDP.get_or_init(Idp::start)
}

/// A running `idp.mjs`. Never dropped (it lives in a static): the process exits when the test
/// binary does, because its stdin, held here, closes then.
pub struct Idp {
    issuer: String,
    dir: tempfile::TempDir,
    ca: PathBuf,
    log: PathBuf,
    seq: AtomicUsize,
    _child: Child,
    _stdin: ChildStdin,
}

impl Idp {
    fn start() -> Self {
        let started = Instant::now();
        let dir = tempfile::Builder::new()
            .prefix("jitgate-it-idp-")
            .tempdir()
            .expect("temp dir for the IdP");
        let ca = make_certs(dir.path(), "IdP");
        let config = dir.path().join("idp.json");
        fs::write(
            &config,
            json!({
                "cert": dir.path().join("server.pem"),
                "key": dir.path().join("server-key.pem"),
            })
            .to_string(),
        )
        .expect("write idp.json");
        let log = dir.path().join("idp.log");
        let started_node = start_node(
            "idp.mjs",
            &[config.as_os_str()],
            dir.path(),
            &log,
            START_TIMEOUT,
        );
        let issuer = started_node.ready["issuer"]
            .as_str()
            .unwrap_or_else(|| {
                panic!(
                    "idp.mjs: no issuer in its ready line {}",
                    started_node.ready
                )
            })
            .to_string();
        // Nothing more is expected on stdout; drain it so a stray print can never block the IdP.
        let mut stdout = started_node.stdout;
        std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
        eprintln!(
            "peers: the IdP is at {issuer} ({:?} to start)",
            started.elapsed()
        );
        Idp {
            issuer,
            dir,
            ca,
            log,
            seq: AtomicUsize::new(0),
            _child: started_node.child,
            _stdin: started_node.stdin,
        }
    }

    /// `https://127.0.0.1:PORT`, no trailing slash.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The CA (PEM) that issued the IdP's certificate.
    pub fn ca(&self) -> &Path {
        &self.ca
    }

    /// What the IdP wrote on stderr so far.
    #[allow(dead_code, reason = "for a failing test to show")]
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Run `curl` against the IdP (trusting its CA) with `args` after the common ones; returns the
    /// status (0 when no answer came) and the body.
    pub fn curl(&self, args: &[&str]) -> (u16, String) {
        let mut cmd = Command::new("curl");
        cmd.args([
            "-sS",
            "--http1.1",
            "--max-time",
            "30",
            "-w",
            "\n%{http_code}",
        ])
        .arg("--cacert")
        .arg(&self.ca)
        .args(args);
        let (code, out, err) = output(cmd);
        let (body, status) = out.rsplit_once('\n').unwrap_or(("", &out));
        let status = status.trim().parse().unwrap_or(0);
        if code != 0 && status == 0 {
            panic!(
                "curl {args:?} against the IdP failed (exit {code}): {err}\nIdP log:\n{}",
                log_tail(&self.log)
            );
        }
        (status, body.to_string())
    }

    /// Send `body` with `method` to `path` (on the issuer) and expect `want`; returns the body.
    fn send(&self, method: &str, path: &str, content_type: &str, body: &str, want: u16) -> String {
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        let file = self.dir.path().join(format!("body-{n}"));
        fs::write(&file, body).expect("write a request body");
        let data = format!("@{}", file.display());
        let url = format!("{}{path}", self.issuer);
        let ct = format!("content-type: {content_type}");
        let (status, answer) = self.curl(&["-X", method, "-H", &ct, "--data-binary", &data, &url]);
        let _ = fs::remove_file(&file);
        assert_eq!(
            status,
            want,
            "{method} {path} at the IdP answered {status}: {answer}\nIdP log:\n{}",
            log_tail(&self.log)
        );
        answer
    }

    /// Register a client (dynamic client registration) with `metadata`, e.g.
    /// `{"redirect_uris": [...], "token_endpoint_auth_method": "client_secret_post",
    /// "post_logout_redirect_uris": [...]}`; returns the registration answer (client_id,
    /// client_secret and the metadata as the IdP took it).
    pub fn register(&self, metadata: Value) -> Value {
        let answer = self.send(
            "POST",
            "/reg",
            "application/json",
            &metadata.to_string(),
            201,
        );
        serde_json::from_str(&answer).unwrap_or_else(|e| panic!("IdP /reg answer {answer}: {e}"))
    }

    /// Register a client with one redirect URI and `auth_method` (`client_secret_basic` or
    /// `client_secret_post`); returns its id and secret.
    pub fn register_client(&self, redirect_uri: &str, auth_method: &str) -> (String, String) {
        let client = self.register(json!({
            "redirect_uris": [redirect_uri],
            "token_endpoint_auth_method": auth_method,
        }));
        let field = |name: &str| {
            client[name]
                .as_str()
                .unwrap_or_else(|| panic!("no {name} in the IdP's registration answer {client}"))
                .to_string()
        };
        (field("client_id"), field("client_secret"))
    }

    /// Create or replace the account `id` (its `sub`), signing in with `password`; `claims` are
    /// what the scopes release: preferred_username and name (profile), email, groups.
    pub fn set_account(&self, id: &str, password: &str, claims: Value) {
        let path = format!("/__test/accounts/{}", url_encode(id));
        let body = json!({ "password": password, "claims": claims }).to_string();
        self.send("PUT", &path, "application/json", &body, 204);
    }

    /// Make the next token response for `client_id` carry its ID token re-signed with the IdP's
    /// own key (same kid, same claims, nonce included) but `aud` = `audience`. One-shot.
    pub fn tamper_next_id_token(&self, client_id: &str, audience: &str) {
        let body = json!({ "client_id": client_id, "audience": audience }).to_string();
        self.send("POST", "/__test/tamper", "application/json", &body, 204);
    }

    /// Serve `html` at a new URL on the IdP's origin (same site as a gateway on 127.0.0.1, other
    /// port); returns that URL.
    pub fn page(&self, html: &str) -> String {
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        self.send("PUT", &format!("/__test/page/{n}"), "text/html", html, 204);
        format!("{}/__test/page?id={n}", self.issuer)
    }
}
