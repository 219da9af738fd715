//! The HTTPS gateway end to end: the real `jitgate serve`, a real nginx as the admin console
//! (trusting only client certificates from the gateway's CA, see `nginx.rs`) and `curl` or a
//! small WebSocket client as the technician's browser.
//!
//! Each test starts its own nginx and gateway; what they assert is what a technician, a target
//! admin or a reviewer would see: pages, status codes, headers, nginx's logs, the recording.
//! The tests live in the submodules by theme.

mod access;
mod console;
mod recording;
mod scope;
mod streams;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

pub use crate::flows::session_ended_record;
use crate::flows::{Granted, approved_token, open_ticket, request};
use crate::harness::{Gateway, Opts, Policy, output};
use crate::nginx::{Nginx, sha256_file};

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
        Self::with_gateway("")
    }

    /// [`Env::start`] with `toml` added to the gateway's `[gateway]` section.
    fn with_gateway(toml: &str) -> Self {
        let mut nginx = Nginx::prepare();
        let opts = Opts::default()
            .policy(Policy::None)
            .gateway(toml)
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
        approved_token(gw, user, id)
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
