//! The HTTPS gateway end to end: the real `jitgate serve`, a real nginx as the admin console
//! (trusting only client certificates from the gateway's CA, see `nginx.rs`) and `curl` or a
//! small WebSocket client as the technician's browser.
//!
//! Each test starts its own nginx and gateway; what they assert is what a technician, a target
//! admin or a reviewer would see: pages, status codes, headers, nginx's logs, the recording.

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::flows::{Granted, approve, granted, open_ticket, request, token};
use crate::harness::{Gateway, Opts, Policy, output};
use crate::nginx::{HOME, Nginx, UNLOCKED, read_frame, sha256_file, write_frame, ws_accept};

/// Tasks on the nginx console `console`.
const TASKS: &str = r#"
[[tasks]]
name = "console-admin"
description = "Unlock accounts in the test console; its live view uses a websocket"
targets = ["console"]
allow = ["websocket"]
http_allow = ["GET /*", "POST /users/*/unlock"]
max_ttl = "1h"

[[tasks]]
name = "console-read"
description = "Look at the test console, no websockets"
targets = ["console"]
http_allow = ["GET /*"]
max_ttl = "1h"
"#;

static SEQ: AtomicUsize = AtomicUsize::new(0);

/// A gateway in front of its own nginx. The gateway is declared first so it stops first.
struct Env {
    gw: Gateway,
    nginx: Nginx,
}

impl Env {
    /// nginx prepared, the gateway configured and initialised, nginx started trusting the
    /// gateway's CA (as an admin would copy it), then the gateway serving.
    fn start() -> Self {
        let mut nginx = Nginx::prepare();
        let opts = Opts::default()
            .policy(Policy::None)
            .extra(&nginx.target_toml("console"))
            .extra(TASKS);
        let mut gw = Gateway::prepare(opts);
        gw.init();
        nginx.start(&gw.ca());
        gw.serve();
        Self { gw, nginx }
    }

    /// Open `ticket` for `user`, request `task` on the console, approve as bob, fetch the token.
    fn grant(&self, user: &str, task: &str, ticket: &str) -> Granted {
        let gw = &self.gw;
        open_ticket(gw, ticket, user);
        let (code, v, err) = request(gw, user, task, "console", ticket, "30m", "integration test");
        assert_eq!(code, 0, "request {task} as {user}: {v} {err}");
        let id = v["id"].as_str().expect("request id").to_string();
        let (code, v, err) = approve(gw, "bob", &id);
        assert_eq!(code, 0, "approve {id}: {v} {err}");
        assert_eq!(v["state"], "approved", "{v}");
        let grant = v["grant"].as_str().expect("grant id").to_string();
        let (t, _) = token(gw, user, &id);
        Granted {
            request: id,
            grant,
            token: t,
        }
    }

    /// `host:port` of the HTTPS gateway.
    fn https_addr(&self) -> String {
        self.gw
            .https_url()
            .trim_start_matches("https://")
            .to_string()
    }

    /// A fresh file name in the gateway's temp directory.
    fn scratch(&self, what: &str) -> PathBuf {
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        self.gw.path(&format!("https-{n}.{what}"))
    }

    /// `curl` to the HTTPS gateway: `path` with `args` (method, headers, body ...).
    fn curl(&self, path: &str, args: &[&str]) -> Reply {
        let url = format!("{}{path}", self.gw.https_url());
        self.curl_url(&url, &self.gw.ca(), args)
    }

    /// `curl` with a bearer token.
    fn bearer(&self, token: &str, path: &str, args: &[&str]) -> Reply {
        let auth = format!("Authorization: Bearer {token}");
        let mut all = vec!["-H", auth.as_str()];
        all.extend_from_slice(args);
        self.curl(path, &all)
    }

    /// `curl` to any URL, trusting `ca`.
    fn curl_url(&self, url: &str, ca: &Path, args: &[&str]) -> Reply {
        let body = self.scratch("body");
        let head = self.scratch("head");
        let mut cmd = Command::new("curl");
        cmd.args(["-sS", "--max-time", "30", "--cacert"])
            .arg(ca)
            .arg("-D")
            .arg(&head)
            .arg("-o")
            .arg(&body)
            .args(["-w", "%{http_code} %{http_version}"])
            .args(args)
            .arg(url);
        let (code, out, stderr) = output(cmd);
        let mut w = out.split_whitespace();
        let status = w.next().and_then(|s| s.parse().ok()).unwrap_or(0);
        let version = w.next().unwrap_or_default().to_string();
        Reply {
            code,
            status,
            version,
            head: fs::read_to_string(&head).unwrap_or_default(),
            body: fs::read_to_string(&body).unwrap_or_default(),
            stderr,
        }
    }

    /// A download to a file in the background: `curl -o FILE args URL`.
    fn spawn_download(&self, token: &str, path: &str, file: &Path, args: &[&str]) -> Child {
        Command::new("curl")
            .args(["-sS", "--max-time", "120", "--cacert"])
            .arg(self.gw.ca())
            .arg("-H")
            .arg(format!("Authorization: Bearer {token}"))
            .arg("-o")
            .arg(file)
            .args(["-w", "%{http_code}"])
            .args(args)
            .arg(format!("{}{path}", self.gw.https_url()))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn curl")
    }
}

/// What curl got.
#[derive(Debug)]
struct Reply {
    /// curl's exit code.
    code: i32,
    status: u16,
    /// `1.1` or `2`.
    version: String,
    /// The response head as received.
    head: String,
    body: String,
    stderr: String,
}

impl Reply {
    /// The last value of header `name` (case-insensitive).
    fn header(&self, name: &str) -> Option<String> {
        self.headers(name).pop()
    }

    /// Every value of header `name`.
    fn headers(&self, name: &str) -> Vec<String> {
        self.head
            .lines()
            .filter_map(|l| l.split_once(':'))
            .filter(|(k, _)| k.trim().eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim().to_string())
            .collect()
    }

    /// Panics unless curl finished with `status`.
    fn expect(&self, status: u16) -> &Self {
        assert!(
            self.code == 0 && self.status == status,
            "expected {status}, got curl exit {} status {}: {}\n{}{}",
            self.code,
            self.status,
            self.stderr,
            self.head,
            self.body
        );
        self
    }
}

/// Sessions of `grant`, as admin sees them through the API.
async fn sessions_of(gw: &Gateway, grant: &str) -> Vec<Value> {
    let a = gw
        .api("admin")
        .get(&format!("/api/v1/sessions?grant={grant}"))
        .await
        .expect("GET /api/v1/sessions");
    assert_eq!(a.status, 200, "GET /api/v1/sessions: {:?}", a.body);
    a.body.as_array().cloned().unwrap_or_default()
}

/// Every session of `grant` once all have ended (waits up to 10 s); at least one.
async fn ended_sessions(gw: &Gateway, grant: &str) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let list = sessions_of(gw, grant).await;
        if !list.is_empty() && list.iter().all(|s| !s["ended_at"].is_null()) {
            return list;
        }
        assert!(
            Instant::now() < deadline,
            "the sessions of {grant} did not all end within 10 s: {list:?}\ngateway log:\n{}",
            gw.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The one session of `grant`, once ended.
async fn ended_session(gw: &Gateway, grant: &str) -> Value {
    let list = ended_sessions(gw, grant).await;
    assert_eq!(list.len(), 1, "one session of {grant} expected: {list:?}");
    list[0].clone()
}

/// The `session.ended` audit record of `session` (waits up to 10 s).
async fn session_ended_record(gw: &Gateway, session: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let recs: Vec<Value> = gw
            .audit("session.ended")
            .await
            .into_iter()
            .filter(|r| r["session"] == session)
            .collect();
        assert!(
            recs.len() <= 1,
            "session.ended twice for {session}: {recs:?}"
        );
        if let Some(r) = recs.into_iter().next() {
            return r;
        }
        assert!(
            Instant::now() < deadline,
            "no session.ended for {session} within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The recording folder of a session.
fn session_dir(s: &Value) -> PathBuf {
    PathBuf::from(s["dir"].as_str().expect("session dir"))
}

/// The lines of a session's `http.jsonl`.
fn http_log(s: &Value) -> Vec<Value> {
    let path = session_dir(s).join("http.jsonl");
    let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// `http.jsonl` lines for `method path`.
fn exchanges<'a>(log: &'a [Value], method: &str, path: &str) -> Vec<&'a Value> {
    log.iter()
        .filter(|e| e["method"] == method && e["path"] == path)
        .collect()
}

/// The access-log lines nginx wrote for `method uri`.
fn access_lines(nginx: &Nginx, method: &str, uri: &str) -> Vec<String> {
    let prefix = format!("{method} {uri} ");
    nginx
        .access_log()
        .lines()
        .filter(|l| l.starts_with(&prefix))
        .map(str::to_string)
        .collect()
}

/// `jitgate done REQUEST` as the requester.
fn done(env: &Env, user: &str, g: &Granted) {
    let (code, out, err) = env.gw.cli(user, &["done", &g.request]);
    assert_eq!(code, 0, "done {}: {out} {err}", g.request);
}

/// The pid of the gateway's `serve` process (found by its config path in /proc).
fn serve_pid(gw: &Gateway) -> u32 {
    let config = gw.config.display().to_string();
    for e in fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmdline) = fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if args.contains(&config) && args.iter().any(|a| a == "serve") {
            return pid;
        }
    }
    panic!("no `jitgate serve` process for {config}");
}

/// Resident memory of `pid` in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc/PID/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS")
}

/// Percent-decode (nginx's `$ssl_client_escaped_cert`).
fn url_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `openssl args` on success; panics otherwise.
fn openssl(args: &[&str]) -> String {
    let mut cmd = Command::new("openssl");
    cmd.args(args);
    let (code, out, err) = output(cmd);
    assert_eq!(code, 0, "openssl {args:?}: {out} {err}");
    out
}

#[tokio::test]
async fn curl_with_a_bearer_token_reaches_nginx_with_a_certificate_minted_for_the_session() {
    let env = Env::start();
    let g = env.grant("alice", "console-admin", "INC-1");

    // The technician's view: the console's page, over HTTP/2 (curl's default when offered).
    let r = env.bearer(&g.token, "/", &[]);
    r.expect(200);
    assert_eq!(r.body, HOME);
    assert_eq!(r.version, "2", "ALPN should offer h2: {r:?}");
    let dn = r.header("x-client-dn").unwrap_or_default();
    assert!(dn.contains("CN=alice"), "nginx saw client DN {dn:?}");

    // The certificate nginx verified: jitgate's CA, CN = user, SAN names the grant, it expires
    // with the grant.
    let pem = url_decode(&r.header("x-client-cert").expect("X-Client-Cert"));
    let cert = env.scratch("client.pem");
    fs::write(&cert, &pem).expect("write the client certificate");
    let ca = env.gw.ca().display().to_string();
    let cert_s = cert.display().to_string();
    let verified = openssl(&["verify", "-CAfile", &ca, &cert_s]);
    assert!(verified.contains(": OK"), "{verified}");
    let text = openssl(&["x509", "-in", &cert_s, "-noout", "-text"]);
    assert!(text.contains("Subject: CN = alice"), "{text}");
    let san = format!("URI:urn:jitgate:grant:{}", g.grant);
    assert!(text.contains(&san), "no {san} in\n{text}");
    assert!(text.contains("TLS Web Client Authentication"), "{text}");
    let end = openssl(&[
        "x509", "-in", &cert_s, "-noout", "-enddate", "-dateopt", "iso_8601",
    ]);
    let grant = crate::flows::grant_state(&env.gw, &g.grant).await;
    let expires = time::OffsetDateTime::from_unix_timestamp(
        grant["expires_at"].as_i64().expect("expires_at"),
    )
    .expect("a time");
    let want = expires
        .format(time::macros::format_description!(
            "[year]-[month]-[day] [hour]:[minute]:[second]Z"
        ))
        .expect("format");
    assert_eq!(end.trim(), format!("notAfter={want}"), "{grant}");

    // What nginx logged: the client certificate, jitgate's headers, no bearer token.
    let lines = access_lines(&env.nginx, "GET", "/");
    assert_eq!(lines.len(), 1, "{}", env.nginx.access_log());
    let line = &lines[0];
    for want in [
        "GET / 200 ".to_string(),
        "dn=\"CN=alice\"".into(),
        "auth=\"-\"".into(),
        "user=\"alice\"".into(),
        format!("grant=\"{}\"", g.grant),
        "ticket=\"INC-1\"".into(),
        "xff=\"127.0.0.1\"".into(),
        "xproto=\"https\"".into(),
        format!("xhost=\"{}\"", env.https_addr()),
    ] {
        assert!(line.contains(&want), "access log lacks {want:?}: {line}");
    }
    assert!(!line.contains("jgt_"), "the token reached nginx: {line}");

    // A client cannot pose as jitgate by sending its headers.
    env.bearer(&g.token, "/", &["-H", "X-Jitgate-User: root"])
        .expect(200);
    let log = env.nginx.access_log();
    assert!(
        !log.contains("root"),
        "a client-sent X-Jitgate-User reached nginx:\n{log}"
    );

    // The target's absolute redirects stay on the gateway; its cookies lose their Domain.
    let r = env.bearer(&g.token, "/moved", &[]);
    r.expect(302);
    assert_eq!(
        r.header("location").as_deref(),
        Some(format!("{}/landing?from=moved", env.gw.https_url()).as_str()),
        "{}",
        r.head
    );
    let r = env.bearer(&g.token, "/set-cookie", &[]);
    r.expect(200);
    let cookie = r.header("set-cookie").expect("Set-Cookie");
    assert!(cookie.starts_with("console_sid=s3"), "{cookie}");
    assert!(!cookie.to_ascii_lowercase().contains("domain"), "{cookie}");

    // Straight to nginx, without a jitgate certificate, the console refuses.
    let direct = env.curl_url(
        &format!("{}/", env.nginx.url()),
        &env.nginx.server_ca(),
        &[],
    );
    direct.expect(400);
    assert!(
        direct.body.contains("No required SSL certificate was sent"),
        "{direct:?}"
    );
    // Nor does a certificate from another CA help (here the console's own CA).
    let dir = env.nginx.path("");
    let key = dir.join("rogue.key").display().to_string();
    let rogue = dir.join("rogue.pem").display().to_string();
    let csr = dir.join("rogue.csr").display().to_string();
    openssl(&[
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        &key,
        "-out",
        &csr,
        "-subj",
        "/CN=alice",
    ]);
    let console_ca = env.nginx.server_ca().display().to_string();
    let console_key = env.nginx.path("console-ca.key").display().to_string();
    openssl(&[
        "x509",
        "-req",
        "-in",
        &csr,
        "-CA",
        &console_ca,
        "-CAkey",
        &console_key,
        "-CAcreateserial",
        "-days",
        "1",
        "-out",
        &rogue,
    ]);
    let direct = env.curl_url(
        &format!("{}/", env.nginx.url()),
        &env.nginx.server_ca(),
        &["--cert", &rogue, "--key", &key],
    );
    assert_eq!(direct.status, 400, "{direct:?}");
    assert!(direct.body.contains("SSL certificate error"), "{direct:?}");
}

#[tokio::test]
async fn cookie_login_works_and_the_token_never_appears_in_a_cookie_or_a_log() {
    let env = Env::start();
    let g = env.grant("alice", "console-admin", "INC-2");

    // Without a credential: browsers go to the login page, other clients are told what to send.
    let r = env.curl("/", &["-H", "Accept: text/html"]);
    r.expect(303);
    assert_eq!(r.header("location").as_deref(), Some("/_jitgate/login"));
    let r = env.curl("/", &[]);
    r.expect(401);
    assert!(r.body.contains("Authorization: Bearer"), "{}", r.body);
    let form = env.curl("/_jitgate/login", &[]);
    form.expect(200);
    assert!(form.body.contains("name=\"token\""), "{}", form.body);

    // A wrong token: the form again, saying why, and no cookie.
    let wrong = format!("{}x", &g.token[..g.token.len() - 1]);
    let r = env.curl(
        "/_jitgate/login",
        &["--http1.1", "--data-urlencode", &format!("token={wrong}")],
    );
    r.expect(200);
    assert!(r.header("set-cookie").is_none(), "{}", r.head);
    assert!(r.body.contains("role=\"alert\""), "{}", r.body);

    // The real token: 303 to the console with a cookie that holds a random handle.
    let r = env.curl(
        "/_jitgate/login",
        &[
            "--http1.1",
            "--data-urlencode",
            &format!("token={}", g.token),
        ],
    );
    r.expect(303);
    assert_eq!(r.header("location").as_deref(), Some("/"));
    let set = r.header("set-cookie").expect("Set-Cookie");
    let (pair, attrs) = set.split_once(';').expect("cookie attributes");
    let handle = pair
        .strip_prefix("__Host-jitgate=")
        .unwrap_or_else(|| panic!("cookie {set:?}"));
    assert_eq!(attrs.trim(), "Path=/; Secure; HttpOnly; SameSite=Strict");
    assert!(handle.len() >= 32, "handle {handle:?} is short");
    let secret = g.token.trim_start_matches("jgt_");
    assert!(
        !handle.contains(&secret[..16]) && !set.contains(&g.token),
        "the cookie carries the token: {set}"
    );

    // The cookie opens the console; nginx gets the site's own cookies, never jitgate's.
    let cookie = format!("Cookie: __Host-jitgate={handle}; theme=dark");
    let r = env.curl("/", &["-H", &cookie]);
    r.expect(200);
    assert_eq!(r.body, HOME);
    let lines = access_lines(&env.nginx, "GET", "/");
    assert_eq!(lines.len(), 1, "{}", env.nginx.access_log());
    assert!(lines[0].contains("cookie=\"theme=dark\""), "{}", lines[0]);
    assert!(lines[0].contains("dn=\"CN=alice\""), "{}", lines[0]);

    // The bearer header is stripped too.
    env.bearer(&g.token, "/index.html", &[]).expect(200);
    let lines = access_lines(&env.nginx, "GET", "/index.html");
    assert_eq!(lines.len(), 1, "{}", env.nginx.access_log());
    assert!(lines[0].contains("auth=\"-\""), "{}", lines[0]);

    // Logout ends the cookie's session; the cookie is cleared and no longer works.
    let r = env.curl("/_jitgate/logout", &["-H", &cookie]);
    r.expect(200);
    let cleared = r.header("set-cookie").expect("Set-Cookie on logout");
    assert!(
        cleared.starts_with("__Host-jitgate=;") && cleared.contains("Max-Age=0"),
        "{cleared}"
    );
    let r = env.curl("/", &["-H", &cookie]);
    r.expect(401);
    assert!(r.body.contains("no longer valid"), "{}", r.body);

    // End the bearer session too, then look everywhere the token could have leaked.
    done(&env, "alice", &g);
    let sessions = ended_sessions(&env.gw, &g.grant).await;
    assert_eq!(
        sessions.len(),
        2,
        "a login session and a bearer session: {sessions:?}"
    );
    let logged_out: Vec<_> = sessions
        .iter()
        .filter(|s| s["end_reason"] == "logged out")
        .collect();
    assert_eq!(logged_out.len(), 1, "{sessions:?}");
    assert_eq!(logged_out[0]["end_cause"], "client", "{sessions:?}");
    let mut places = vec![
        ("gateway log".to_string(), env.gw.logs()),
        (
            "audit log".into(),
            fs::read_to_string(env.gw.audit_log()).expect("audit log"),
        ),
        ("nginx access log".into(), env.nginx.access_log()),
        ("nginx error log".into(), env.nginx.error_log()),
    ];
    for s in &sessions {
        let dir = session_dir(s);
        for f in ["http.jsonl", "session.json"] {
            let text = fs::read_to_string(dir.join(f)).unwrap_or_else(|e| panic!("{f}: {e}"));
            places.push((format!("{}/{f}", dir.display()), text));
        }
    }
    assert!(!env.gw.logs().is_empty(), "the gateway logged nothing");
    for (what, text) in places {
        assert!(
            !text.contains(&g.token) && !text.contains(secret),
            "the token appears in the {what}"
        );
    }
}

#[tokio::test]
async fn the_allow_list_admits_the_tasks_requests_and_refuses_the_rest() {
    let env = Env::start();
    let g = env.grant("alice", "console-admin", "INC-3");
    let post = ["--http1.1", "-X", "POST", "--data-binary", "why=locked out"];

    // Admitted: any GET, and the one POST the task names.
    let r = env.bearer(&g.token, "/anything/at/all", &[]);
    r.expect(404);
    assert!(r.header("x-jitgate-refused").is_none(), "{}", r.head);
    let r = env.bearer(&g.token, "/users/dave/unlock", &post);
    r.expect(200);
    assert_eq!(r.body, UNLOCKED);

    // Refused, with a page that names the task and what it allows.
    let refused: [(&str, &str, &[&str]); 4] = [
        ("DELETE", "/users/dave", &["--http1.1", "-X", "DELETE"]),
        ("POST", "/other", &post),
        ("POST", "/users/dave/delete", &post),
        ("POST", "/users/dave/../carol/unlock", &post),
    ];
    for (method, path, args) in refused {
        let mut a = args.to_vec();
        a.push("--path-as-is");
        let r = env.bearer(&g.token, path, &a);
        r.expect(403);
        let why = r.header("x-jitgate-refused").expect("X-Jitgate-Refused");
        assert_eq!(
            why,
            format!("jitgate: task console-admin does not allow {method} {path}"),
            "{}",
            r.head
        );
        for want in ["console-admin", "GET /*", "POST /users/*/unlock"] {
            assert!(
                r.body.contains(want),
                "the 403 page lacks {want:?}: {}",
                r.body
            );
        }
    }
    // None of them reached nginx.
    let log = env.nginx.access_log();
    assert_eq!(log.lines().count(), 2, "{log}");
    assert!(!log.contains("DELETE") && !log.contains("/other"), "{log}");

    // The recording holds every request, the refusals with their reason.
    done(&env, "alice", &g);
    let s = ended_session(&env.gw, &g.grant).await;
    let log = http_log(&s);
    assert_eq!(log.len(), 6, "{log:?}");
    for (method, path) in [("GET", "/anything/at/all"), ("POST", "/users/dave/unlock")] {
        let e = exchanges(&log, method, path);
        assert_eq!(e.len(), 1, "{log:?}");
        assert!(e[0]["refused"].is_null(), "{}", e[0]);
    }
    for (method, path) in [
        ("DELETE", "/users/dave"),
        ("POST", "/other"),
        ("POST", "/users/dave/delete"),
        ("POST", "/users/dave/../carol/unlock"),
    ] {
        let e = exchanges(&log, method, path);
        assert_eq!(e.len(), 1, "{method} {path}: {log:?}");
        assert_eq!(e[0]["status"], 403, "{}", e[0]);
        let why = e[0]["refused"].as_str().unwrap_or_default();
        assert!(
            why.contains("does not allow"),
            "no refusal recorded: {}",
            e[0]
        );
    }
}

#[tokio::test]
async fn a_200_mb_download_streams_without_the_gateway_growing() {
    let env = Env::start();
    let digest = env.nginx.write_blob("big.bin", 200);
    let g = env.grant("alice", "console-read", "INC-4");
    env.bearer(&g.token, "/", &[]).expect(200);
    let pid = serve_pid(&env.gw);
    std::thread::sleep(Duration::from_millis(300));
    let idle = rss_kib(pid);

    let peak = Arc::new(AtomicU64::new(idle));
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, stop) = (peak.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                peak.fetch_max(rss_kib(pid), Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    let file = env.scratch("download");
    let started = Instant::now();
    let child = env.spawn_download(&g.token, "/big.bin", &file, &[]);
    let out = child.wait_with_output().expect("wait for curl");
    let took = started.elapsed();
    stop.store(true, Ordering::SeqCst);
    sampler.join().expect("sampler");
    assert!(
        out.status.success(),
        "curl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "200");
    let len = fs::metadata(&file).expect("downloaded file").len();
    assert_eq!(len, 200 << 20);
    assert_eq!(sha256_file(&file), digest, "the downloaded bytes differ");
    let _ = fs::remove_file(&file);
    let grown = peak.load(Ordering::SeqCst).saturating_sub(idle);
    eprintln!(
        "200 MB through the gateway in {took:?}; resident memory {idle} KiB idle, +{grown} KiB peak"
    );
    assert!(
        grown < 64 * 1024,
        "the gateway grew by {grown} KiB (idle {idle} KiB) while streaming 200 MB"
    );

    done(&env, "alice", &g);
    let s = ended_session(&env.gw, &g.grant).await;
    let log = http_log(&s);
    let e = exchanges(&log, "GET", "/big.bin");
    assert_eq!(e.len(), 1, "{log:?}");
    assert_eq!(e[0]["status"], 200);
    assert_eq!(e[0]["bytes_out"], 200u64 << 20, "{}", e[0]);
    assert_eq!(e[0]["aborted"], false, "{}", e[0]);
}

/// A WebSocket client over TLS to the gateway.
type Tls = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// Open `path` on the gateway with an upgrade to WebSocket; returns the stream and the
/// response head.
fn ws_connect(env: &Env, token: &str, path: &str) -> (Tls, String) {
    let ca = fs::read_to_string(env.gw.ca()).expect("certs/ca.pem");
    let cfg = jitgate::pki::client_tls(&ca).expect("client TLS");
    let addr = env.https_addr();
    let tcp = TcpStream::connect(&addr).expect("connect to the HTTPS gateway");
    tcp.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("read timeout");
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").expect("name");
    let conn = rustls::ClientConnection::new(Arc::new(cfg), name).expect("TLS client");
    let mut s = rustls::StreamOwned::new(conn, tcp);
    let key = "dGhlIHNhbXBsZSBub25jZQ==";
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\
         Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Key: {key}\r\n\r\n"
    )
    .expect("send the upgrade request");
    s.flush().expect("flush");
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = s.read(&mut b).expect("read the response head");
        assert!(
            n == 1,
            "the gateway closed during the response head: {head:?}"
        );
        head.push(b[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    if head.starts_with("HTTP/1.1 101") {
        let accept = format!("sec-websocket-accept: {}", ws_accept(key));
        assert!(
            head.to_ascii_lowercase()
                .contains(&accept.to_ascii_lowercase()),
            "{head}"
        );
    }
    (s, head)
}

#[tokio::test]
async fn a_websocket_echoes_through_and_is_closed_on_revocation() {
    let env = Env::start();
    let g = env.grant("alice", "console-admin", "INC-5");
    let (mut ws, head) = ws_connect(&env, &g.token, "/ws/echo");
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    write_frame(&mut ws, 0x1, b"hello through jitgate", true).expect("send a text frame");
    let (op, data) = read_frame(&mut ws).expect("the echo");
    assert_eq!((op, data.as_slice()), (0x1, &b"hello through jitgate"[..]));
    let big: Vec<u8> = (0..70_000u32).map(|i| (i % 251) as u8).collect();
    write_frame(&mut ws, 0x2, &big, true).expect("send a binary frame");
    let (op, data) = read_frame(&mut ws).expect("the echo");
    assert_eq!(op, 0x2);
    assert!(data == big, "the 70000-byte frame came back changed");

    // A task without `websocket` refuses the upgrade (plain pages still work).
    let other = env.grant("dave", "console-read", "INC-55");
    let (_, head) = ws_connect(&env, &other.token, "/ws/echo");
    assert!(head.starts_with("HTTP/1.1 403"), "{head}");
    assert!(
        head.contains("task console-read does not allow websockets"),
        "{head}"
    );
    env.bearer(&other.token, "/", &[]).expect(200);

    // Revocation closes the live websocket.
    let (code, out, err) = env.gw.cli(
        "admin",
        &["revoke", &g.request, "--reason", "vendor left early"],
    );
    let revoked = Instant::now();
    assert_eq!(code, 0, "revoke: {out} {err}");
    let mut buf = [0u8; 64];
    match ws.read(&mut buf) {
        Ok(0) => {}
        Ok(n) => panic!("the websocket still delivers data after revocation: {n} bytes"),
        Err(e) => assert!(
            !matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
            "the websocket stayed open after revocation"
        ),
    }
    let closed = revoked.elapsed();
    assert!(
        closed < Duration::from_secs(2),
        "closed {closed:?} after revoke"
    );
    assert!(
        write_frame(&mut ws, 0x1, b"still there?", true).is_err() || read_frame(&mut ws).is_err(),
        "the websocket still works after revocation"
    );

    // Later requests are refused with the reason.
    let r = env.bearer(&g.token, "/", &[]);
    r.expect(403);
    assert!(r.body.contains("session terminated"), "{}", r.body);
    assert!(r.body.contains("vendor left early"), "{}", r.body);

    let s = ended_session(&env.gw, &g.grant).await;
    assert_eq!(s["end_cause"], "revoked", "{s}");
    let log = http_log(&s);
    let e = exchanges(&log, "GET", "/ws/echo");
    assert_eq!(e.len(), 1, "{log:?}");
    assert_eq!(e[0]["upgrade"], "websocket", "{}", e[0]);
    assert_eq!(e[0]["status"], 101, "{}", e[0]);
    let (sent, got) = (
        e[0]["bytes_in"].as_u64().unwrap_or(0),
        e[0]["bytes_out"].as_u64().unwrap_or(0),
    );
    // Frames as on the wire: 21 + 70000 bytes of payload each way, plus framing.
    assert!(
        sent >= 70_021 && got >= 70_021,
        "bytes not counted: {}",
        e[0]
    );
    assert_digests_match(&s);
}

/// Wait up to `limit` after `since` for `child` to exit: its status, when, and its stderr.
fn wait_exit(child: &mut Child, since: Instant, limit: Duration) -> (ExitStatus, Duration, String) {
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait for the child") {
            break s;
        }
        assert!(
            since.elapsed() < limit,
            "{child:?} still runs {limit:?} later"
        );
        std::thread::sleep(Duration::from_millis(5));
    };
    let took = since.elapsed();
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut stderr);
    }
    (status, took, stderr)
}

/// Wait until `file` holds at least `bytes`.
fn wait_size(file: &Path, bytes: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while fs::metadata(file).map(|m| m.len()).unwrap_or(0) < bytes {
        assert!(
            Instant::now() < deadline,
            "{} did not reach {bytes} bytes",
            file.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `session.json` lists every recording file with the SHA-256 and size it has on disk.
fn assert_digests_match(s: &Value) {
    let dir = session_dir(s);
    let m: Value =
        serde_json::from_str(&fs::read_to_string(dir.join("session.json")).expect("session.json"))
            .expect("session.json is JSON");
    let files = m["files"].as_array().expect("files");
    assert!(!files.is_empty(), "{m}");
    for f in files {
        let path = dir.join(f["name"].as_str().expect("file name"));
        let on_disk = fs::read_to_string(&path).unwrap_or_default();
        assert_eq!(
            f["sha256"],
            sha256_file(&path).as_str(),
            "session.json's digest of {} ({} bytes listed) is not that of the file on disk \
             ({} bytes):\n{on_disk}",
            path.display(),
            f["bytes"],
            on_disk.len()
        );
    }
}

#[tokio::test]
async fn ticket_close_aborts_in_flight_downloads_within_a_second() {
    let env = Env::start();
    // Two long downloads on one grant: from a console that sends slowly (nginx `limit_rate`)
    // and to a client that reads slowly (`curl --limit-rate`).
    env.nginx.write_blob("slow/report.bin", 32);
    env.nginx.write_blob("export.bin", 32);
    let g = env.grant("alice", "console-read", "INC-6");
    env.bearer(&g.token, "/", &[]).expect(200);
    let (f1, f2) = (env.scratch("report"), env.scratch("export"));
    let mut slow_target = env.spawn_download(&g.token, "/slow/report.bin", &f1, &[]);
    let mut slow_reader = env.spawn_download(&g.token, "/export.bin", &f2, &["--limit-rate", "1M"]);
    wait_size(&f1, 256 * 1024);
    wait_size(&f2, 256 * 1024);

    let (code, out, err) = env.gw.cli("admin", &["ticket", "close", "INC-6"]);
    let closed = Instant::now();
    assert_eq!(code, 0, "ticket close: {out} {err}");
    let (status, took, stderr) = wait_exit(&mut slow_target, closed, Duration::from_secs(10));
    // 18: partial file (HTTP/1.1); 92: stream reset (HTTP/2); 56: connection cut.
    assert!(
        matches!(status.code(), Some(18 | 56 | 92)),
        "curl {status}: {stderr}"
    );
    assert!(
        took < Duration::from_secs(1),
        "the download stopped {took:?} after the ticket closed (curl {status}: {stderr})"
    );
    // The slow reader still drains what its socket buffers held before the cut, then fails.
    let (status, took, stderr) = wait_exit(&mut slow_reader, closed, Duration::from_secs(20));
    assert!(
        matches!(status.code(), Some(18 | 56 | 92)),
        "curl {status}: {stderr}"
    );
    eprintln!("the slow reader's download failed {took:?} after the ticket closed");
    for f in [&f1, &f2] {
        let got = fs::metadata(f).map(|m| m.len()).unwrap_or(0);
        assert!(got < 32 << 20, "{got} bytes arrived");
    }

    // Recorded: cause, reason, a kill latency under a second.
    let s = ended_session(&env.gw, &g.grant).await;
    assert_eq!(s["end_cause"], "ticket", "{s}");
    let sid = s["id"].as_str().expect("session id");
    let r = session_ended_record(&env.gw, sid).await;
    assert_eq!(r["cause"], "ticket", "{r}");
    assert!(
        r["reason"]
            .as_str()
            .is_some_and(|x| x.contains("ticket INC-6 closed")),
        "{r}"
    );
    let latency = r["kill_latency_ms"]
        .as_u64()
        .unwrap_or_else(|| panic!("no kill_latency_ms in {r}"));
    assert!(latency < 1000, "kill latency {latency} ms: {r}");

    // Later requests: 403 and why.
    let later = env.bearer(&g.token, "/", &[]);
    later.expect(403);
    assert!(
        later
            .body
            .contains("session terminated: ticket INC-6 closed"),
        "{}",
        later.body
    );
    assert_eq!(
        later.header("x-jitgate-refused").as_deref(),
        Some("jitgate: session terminated: ticket INC-6 closed")
    );

    // Both downloads are in http.jsonl as aborted, and session.json's digest is of that file.
    let log = http_log(&s);
    for path in ["/slow/report.bin", "/export.bin"] {
        let e = exchanges(&log, "GET", path);
        assert_eq!(e.len(), 1, "{path}: {log:?}");
        assert_eq!(e[0]["aborted"], true, "{}", e[0]);
        assert!(
            e[0]["bytes_out"].as_u64().is_some_and(|b| b < 32 << 20),
            "{}",
            e[0]
        );
    }
    assert_digests_match(&s);
}

#[tokio::test]
async fn concurrent_first_requests_with_one_token_share_one_session() {
    let env = Env::start();
    let g = env.grant("alice", "console-read", "INC-10");
    let curls: Vec<Child> = (0..4)
        .map(|i| {
            let file = env.scratch(&format!("parallel-{i}"));
            env.spawn_download(&g.token, "/", &file, &[])
        })
        .collect();
    for c in curls {
        let out = c.wait_with_output().expect("wait for curl");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "200",
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    done(&env, "alice", &g);
    let list = ended_sessions(&env.gw, &g.grant).await;
    let ids: Vec<&Value> = list.iter().map(|s| &s["id"]).collect();
    assert_eq!(list.len(), 1, "one token, one session; got {ids:?}");
    assert_eq!(http_log(&list[0]).len(), 4);
}

#[tokio::test]
async fn grant_tokens_work_only_at_their_own_gateway() {
    let env = Env::start();
    // An SSH grant (reset-credential on dc-01) at the HTTPS gateway.
    let ssh = granted(&env.gw, "alice", "INC-7");
    let r = env.bearer(&ssh.token, "/", &[]);
    r.expect(403);
    let why = "is for ssh target dc-01; use the SSH gateway";
    assert!(r.body.contains(why), "{}", r.body);
    let r = env.curl(
        "/_jitgate/login",
        &[
            "--http1.1",
            "--data-urlencode",
            &format!("token={}", ssh.token),
        ],
    );
    r.expect(200);
    assert!(r.header("set-cookie").is_none(), "{}", r.head);
    assert!(r.body.contains(why), "{}", r.body);
    assert!(
        env.nginx.access_log().is_empty(),
        "an SSH grant reached the console:\n{}",
        env.nginx.access_log()
    );

    // An HTTPS grant at the SSH gateway.
    let https = env.grant("dave", "console-admin", "INC-8");
    let mut cmd = Command::new("sshpass");
    cmd.arg("-e")
        .arg("ssh")
        .args(["-F", "/dev/null", "-o", "StrictHostKeyChecking=no"])
        .args([
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "ConnectTimeout=10",
        ])
        .args(["-o", "PreferredAuthentications=password"])
        .args(["-o", "NumberOfPasswordPrompts=1", "-p"])
        .arg(env.gw.ssh_port().to_string())
        .arg("dave@127.0.0.1")
        .arg("true")
        .env("SSHPASS", &https.token)
        .env_remove("SSH_AUTH_SOCK");
    let (code, out, err) = output(cmd);
    assert_ne!(code, 0, "the HTTPS token logged in over SSH: {out} {err}");

    // Both refusals are audited with the reason.
    let denied = env.gw.audit("admission.denied").await;
    let find = |grant: &str, protocol: &str| {
        denied
            .iter()
            .find(|r| r["grant"] == grant && r["protocol"] == protocol)
            .cloned()
            .unwrap_or_else(|| panic!("no {protocol} admission.denied for {grant}: {denied:?}"))
    };
    let r = find(&ssh.grant, "https");
    assert!(r["reason"].as_str().is_some_and(|x| x.contains(why)), "{r}");
    let r = find(&https.grant, "ssh");
    assert!(
        r["reason"]
            .as_str()
            .is_some_and(|x| x.contains("is for https target console")),
        "{r}"
    );
}

#[tokio::test]
async fn http_jsonl_and_session_json_match_what_happened() {
    let env = Env::start();
    let g = env.grant("alice", "console-admin", "INC-9");
    env.bearer(&g.token, "/index.html?token=abc123&page=2", &[])
        .expect(200);
    let body = "why=locked+out";
    env.bearer(
        &g.token,
        "/users/dave/unlock",
        &["--http1.1", "-X", "POST", "--data-binary", body],
    )
    .expect(200);
    env.bearer(&g.token, "/users/dave", &["--http1.1", "-X", "DELETE"])
        .expect(403);
    done(&env, "alice", &g);

    let s = ended_session(&env.gw, &g.grant).await;
    let sid = s["id"].as_str().expect("session id").to_string();
    assert_eq!(s["end_cause"], "completed", "{s}");
    assert_eq!(s["protocol"], "https", "{s}");

    // recordings/YYYY/MM/DD/<session id>/
    let dir = session_dir(&s);
    let started =
        time::OffsetDateTime::from_unix_timestamp(s["started_at"].as_i64().expect("started_at"))
            .expect("a time");
    let day = format!(
        "{:04}/{:02}/{:02}",
        started.year(),
        started.month() as u8,
        started.day()
    );
    assert_eq!(
        dir.canonicalize().expect("the recording folder"),
        env.gw
            .path("recordings")
            .join(day)
            .join(&sid)
            .canonicalize()
            .expect("recordings/YYYY/MM/DD/<id>")
    );

    // http.jsonl: one line per exchange, in order.
    let log = http_log(&s);
    assert_eq!(log.len(), 3, "{log:?}");
    let text = fs::read_to_string(dir.join("http.jsonl")).expect("http.jsonl");
    assert!(
        !text.contains("abc123"),
        "a secret query value was recorded:\n{text}"
    );
    let (get, post, delete) = (&log[0], &log[1], &log[2]);
    assert_eq!(get["method"], "GET");
    assert_eq!(get["path"], "/index.html");
    assert_eq!(get["query"], "token=***&page=2");
    assert_eq!(get["status"], 200);
    assert_eq!(get["bytes_out"], HOME.len());
    assert_eq!(get["bytes_in"], 0);
    assert!(
        get["upgrade"].is_null() && get["refused"].is_null(),
        "{get}"
    );
    assert_eq!(get["aborted"], false);
    for e in &log {
        let ts = e["ts"].as_str().unwrap_or_default();
        assert!(
            time::OffsetDateTime::parse(ts, &time::format_description::well_known::Rfc3339).is_ok(),
            "ts {ts:?} is not RFC 3339: {e}"
        );
        assert!(e["duration_ms"].is_u64(), "{e}");
    }
    assert_eq!(post["method"], "POST");
    assert_eq!(post["path"], "/users/dave/unlock");
    assert!(post["query"].is_null(), "{post}");
    assert_eq!(post["status"], 200);
    assert_eq!(post["bytes_in"], body.len());
    assert_eq!(post["bytes_out"], UNLOCKED.len());
    assert_eq!(delete["method"], "DELETE");
    assert_eq!(delete["status"], 403);
    assert_eq!(
        delete["refused"],
        "task console-admin does not allow DELETE /users/dave"
    );

    // session.json: who, what, when, and the digest of http.jsonl as it is on disk.
    let m: Value =
        serde_json::from_str(&fs::read_to_string(dir.join("session.json")).expect("session.json"))
            .expect("session.json is JSON");
    assert_eq!(m["session"], sid.as_str(), "{m}");
    assert_eq!(m["protocol"], "https", "{m}");
    assert_eq!(m["user"], "alice");
    assert_eq!(m["grant"], g.grant.as_str());
    assert_eq!(m["ticket"], "INC-9");
    assert_eq!(m["task"], "console-admin");
    assert_eq!(m["target"], "console");
    assert_eq!(m["approvers"], serde_json::json!(["bob"]));
    assert!(!m["ended_at"].is_null(), "{m}");
    assert!(!m["end_reason"].is_null(), "{m}");
    let files = m["files"].as_array().expect("files");
    assert_eq!(files.len(), 1, "{m}");
    let path = dir.join("http.jsonl");
    let digest = sha256_file(&path);
    assert_eq!(files[0]["name"], "http.jsonl");
    assert_eq!(files[0]["sha256"], digest.as_str(), "session.json digest");
    assert_eq!(files[0]["bytes"], fs::metadata(&path).expect("size").len());

    // The audit record carries the same digest and the bytes moved each way.
    let r = session_ended_record(&env.gw, &sid).await;
    assert_eq!(r["cause"], "completed", "{r}");
    let rec = r["recording"].as_array().expect("recording");
    assert_eq!(rec.len(), 1, "{r}");
    assert_eq!(rec[0]["sha256"], digest.as_str(), "audited digest");
    assert_eq!(r["bytes_in"], body.len(), "{r}");
    assert_eq!(r["bytes_out"], HOME.len() + UNLOCKED.len(), "{r}");
}
