//! The integration-test harness: writes a configuration into a temp directory, runs the real
//! `jitgate` binary (`init`, then `serve` on port 0), and talks to it only through the CLI, the
//! API client and `curl`.

use std::fs::{self, File};
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use jitgate::client::{Answer, Client};
use jitgate::types::Secret;
use serde_json::{Value, json};

pub use crate::fixture::{Opts, Policy, api_key};
use crate::fixture::{PERMIT_ALL, WEBHOOK_ENV, config_text, repo};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_jitgate");

/// How long one CLI or curl command may run.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// How long `serve` may take to print its listening line.
const START_TIMEOUT: Duration = Duration::from_secs(20);

static SEQ: AtomicUsize = AtomicUsize::new(0);

/// A finished command: exit code, stdout, stderr.
pub type Out = (i32, String, String);

/// One gateway in its own temp directory.
pub struct Gateway {
    dir: tempfile::TempDir,
    pub config: PathBuf,
    opts: Opts,
    child: Option<Child>,
    url: Option<String>,
    ssh: Option<String>,
    https: Option<String>,
    metrics: Option<String>,
}

impl Gateway {
    /// Write the configuration, run `init`, start `serve`.
    pub fn start(opts: Opts) -> Self {
        let mut gw = Self::prepare(opts);
        gw.init();
        gw.serve();
        gw
    }

    /// Write the configuration and policy into a fresh temp directory; start nothing.
    pub fn prepare(opts: Opts) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("jitgate-it-")
            .tempdir()
            .expect("temp dir");
        let root = dir.path();
        fs::create_dir_all(root.join("targets")).expect("targets dir");
        fs::copy(
            repo().join("config/targets/idp-ca.pem"),
            root.join("targets/idp-ca.pem"),
        )
        .expect("copy config/targets/idp-ca.pem");
        match &opts.policy {
            Policy::None => {}
            Policy::PermitAll => fs::write(root.join("policy.cedar"), PERMIT_ALL).expect("policy"),
            Policy::Example => {
                fs::copy(
                    repo().join("config/policy.cedar"),
                    root.join("policy.cedar"),
                )
                .expect("copy config/policy.cedar");
            }
        }
        let config = root.join("jitgate.toml");
        fs::write(&config, config_text(&opts)).expect("write config");
        Self {
            dir,
            config,
            opts,
            child: None,
            url: None,
            ssh: None,
            https: None,
            metrics: None,
        }
    }

    /// A path inside the temp directory.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// The CA clients trust.
    pub fn ca(&self) -> PathBuf {
        self.path("certs/ca.pem")
    }

    /// The audit log file.
    pub fn audit_log(&self) -> PathBuf {
        self.path("data/audit.jsonl")
    }

    /// Everything the gateway wrote to stderr, across restarts.
    pub fn logs(&self) -> String {
        fs::read_to_string(self.path("gateway.stderr.log")).unwrap_or_default()
    }

    /// The API base URL (`https://127.0.0.1:PORT`).
    pub fn url(&self) -> &str {
        self.url.as_deref().expect("the gateway is running")
    }

    /// The SSH gateway's address (`127.0.0.1:PORT`).
    pub fn ssh_addr(&self) -> &str {
        self.ssh.as_deref().expect("the gateway is running")
    }

    /// The HTTPS gateway's base URL (`https://127.0.0.1:PORT`).
    pub fn https_url(&self) -> &str {
        self.https.as_deref().expect("the gateway is running")
    }

    /// The SSH gateway's port.
    /// The metrics listener's URL (`http://ADDR/metrics`).
    pub fn metrics_url(&self) -> &str {
        self.metrics
            .as_deref()
            .expect("serve printed its metrics line")
    }

    /// The process id of the running `serve`.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("the gateway is running").id()
    }

    pub fn ssh_port(&self) -> u16 {
        let addr = self.ssh_addr();
        let port = addr.rsplit_once(':').map(|(_, p)| p).unwrap_or_default();
        port.parse()
            .unwrap_or_else(|_| panic!("no port in the SSH gateway address {addr}"))
    }

    /// `jitgate init`; panics unless it succeeds.
    pub fn init(&self) {
        let (code, out, err) = self.run(&["init"], &[]);
        assert_eq!(code, 0, "jitgate init failed:\n{out}\n{err}");
    }

    /// Run the binary with `--config` and `envs` (no API environment).
    pub fn run(&self, args: &[&str], envs: &[(&str, &str)]) -> Out {
        let mut cmd = Command::new(BIN);
        cmd.arg("--config").arg(&self.config).args(args);
        clean_env(&mut cmd);
        cmd.envs(self.opts.env.iter().map(|(k, v)| (k, v)));
        cmd.envs(envs.iter().copied());
        output(cmd)
    }

    /// Run a client command as `user` (an empty user sends no API key).
    pub fn cli(&self, user: &str, args: &[&str]) -> Out {
        let key = (!user.is_empty()).then(|| api_key(user));
        self.cli_with_key(key.as_deref(), args)
    }

    /// Run a client command with an arbitrary API key.
    pub fn cli_with_key(&self, key: Option<&str>, args: &[&str]) -> Out {
        let mut cmd = Command::new(BIN);
        cmd.arg("--config").arg(&self.config).args(args);
        clean_env(&mut cmd);
        cmd.env("JITGATE_URL", self.url())
            .env("JITGATE_CA", self.ca());
        if let Some(k) = key {
            cmd.env("JITGATE_API_KEY", k);
        }
        output(cmd)
    }

    /// A client command with `--json`; stdout parsed as JSON (`Null` when it is not).
    pub fn cli_json(&self, user: &str, args: &[&str]) -> (i32, Value, String) {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let (code, out, err) = self.cli(user, &all);
        let v = serde_json::from_str(&out).unwrap_or(Value::Null);
        (code, v, err)
    }

    /// A client command that spawns and returns the child (for `request --wait`).
    pub fn cli_spawn(&self, user: &str, args: &[&str]) -> Child {
        let mut cmd = Command::new(BIN);
        cmd.arg("--config").arg(&self.config).args(args);
        clean_env(&mut cmd);
        cmd.env("JITGATE_URL", self.url())
            .env("JITGATE_CA", self.ca())
            .env("JITGATE_API_KEY", api_key(user))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd.spawn().expect("spawn jitgate")
    }

    /// An API client authenticating as `user`.
    pub fn api(&self, user: &str) -> Client {
        self.client(Some(api_key(user)))
    }

    /// An API client sending `key` (or none).
    pub fn client(&self, key: Option<String>) -> Client {
        let ca = fs::read_to_string(self.ca()).expect("certs/ca.pem");
        Client::new(self.url(), key.map(Secret::new), &ca).expect("API client")
    }

    /// Send raw bytes with `curl`: returns the status and the body (JSON, or a JSON string
    /// holding the text when it is not JSON). `key` goes into `Authorization: Bearer`.
    pub fn raw(
        &self,
        method: &str,
        path: &str,
        key: Option<&str>,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> (u16, Value) {
        self.try_raw(method, path, key, headers, body)
            .unwrap_or_else(|e| panic!("curl {method} {path}: {e}"))
    }

    /// [`Gateway::raw`], returning curl's error when no HTTP answer arrived.
    pub fn try_raw(
        &self,
        method: &str,
        path: &str,
        key: Option<&str>,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Result<(u16, Value), String> {
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let out_file = self.path(&format!("curl-{n}.out"));
        let mut cmd = Command::new("curl");
        // HTTP/1.1 like the CLI: curl 7.88's HTTP/2 uploads fail at random (curl error 92)
        // against any server, which would make these tests flaky for curl's sake.
        cmd.arg("-sS")
            .arg("--http1.1")
            .arg("--max-time")
            .arg("30")
            .arg("--cacert")
            .arg(self.ca())
            .arg("-X")
            .arg(method)
            .arg("-o")
            .arg(&out_file)
            .arg("-w")
            .arg("%{http_code}");
        if let Some(k) = key {
            cmd.arg("-H").arg(format!("Authorization: Bearer {k}"));
        }
        for (h, v) in headers {
            cmd.arg("-H").arg(format!("{h}: {v}"));
        }
        if let Some(b) = body {
            let body_file = self.path(&format!("curl-{n}.body"));
            fs::write(&body_file, b).expect("write curl body");
            cmd.arg("--data-binary")
                .arg(format!("@{}", body_file.display()));
        }
        cmd.arg(format!("{}{path}", self.url()));
        let (code, stdout, stderr) = output(cmd);
        let status: u16 = stdout.trim().parse().unwrap_or(0);
        let text = fs::read_to_string(&out_file).unwrap_or_default();
        if code != 0 || !(200..600).contains(&status) {
            return Err(format!(
                "no complete HTTP answer (curl exit {code}, status {status}): {} {text}",
                stderr.trim()
            ));
        }
        let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Ok((status, v))
    }

    /// `raw` with a JSON content type and the API key of `user` (empty: none).
    pub fn raw_json(&self, method: &str, path: &str, user: &str, body: &[u8]) -> (u16, Value) {
        let key = (!user.is_empty()).then(|| api_key(user));
        self.raw(
            method,
            path,
            key.as_deref(),
            &[("Content-Type", "application/json")],
            Some(body),
        )
    }

    /// Audit records with `event`, read through the API as the reviewer.
    pub async fn audit(&self, event: &str) -> Vec<Value> {
        let a = self
            .api("rita")
            .get(&format!("/api/v1/audit?event={event}&limit=5000"))
            .await
            .expect("GET /api/v1/audit");
        assert_eq!(a.status, 200, "GET /api/v1/audit: {:?}", a.body);
        a.body.as_array().cloned().unwrap_or_default()
    }

    /// `POST /api/v1/admission` as admin.
    pub async fn admit(&self, token: &str, user: &str, protocol: &str) -> Answer {
        self.api("admin")
            .post(
                "/api/v1/admission",
                json!({ "token": token, "user": user, "protocol": protocol }),
            )
            .await
            .expect("POST /api/v1/admission")
    }

    /// Start `serve` and wait for its listening line.
    pub fn serve(&mut self) {
        assert!(self.child.is_none(), "the gateway is already running");
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.path("gateway.stderr.log"))
            .expect("gateway log");
        let mut cmd = Command::new(BIN);
        cmd.arg("--config").arg(&self.config).arg("serve");
        clean_env(&mut cmd);
        cmd.envs(self.opts.env.iter().map(|(k, v)| (k, v)));
        if let Some(s) = &self.opts.webhook_secret {
            cmd.env(WEBHOOK_ENV, s);
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log));
        let mut child = cmd.spawn().expect("spawn jitgate serve");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel::<String>();
        std::thread::spawn(move || {
            let mut r = BufReader::new(stdout);
            let mut line = String::new();
            loop {
                line.clear();
                match r.read_line(&mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        // Keep draining after the listening line so the pipe never fills.
                        let _ = tx.send(line.trim_end().to_string());
                    }
                }
            }
        });
        let deadline = Instant::now() + START_TIMEOUT;
        // The API line comes first, then the SSH gateway's, then the HTTPS gateway's.
        let mut url = None;
        let mut ssh = None;
        let mut metrics = None;
        let https = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(u) = line.strip_prefix("jitgate API listening on ") {
                        url = Some(u.trim().to_string());
                    } else if let Some(m) = line.strip_prefix("jitgate metrics listening on ") {
                        metrics = Some(m.trim().to_string());
                    } else if let Some(a) = line.strip_prefix("jitgate SSH gateway listening on ") {
                        ssh = Some(a.trim().to_string());
                    } else if let Some(a) = line.strip_prefix("jitgate HTTPS gateway listening on ")
                        && url.is_some()
                        && ssh.is_some()
                    {
                        break a.trim().to_string();
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "jitgate serve printed no listening line within {START_TIMEOUT:?}; stderr:\n{}",
                        self.logs()
                    );
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = child.wait();
                    panic!(
                        "jitgate serve exited ({status:?}) before listening; stderr:\n{}",
                        self.logs()
                    );
                }
            }
        };
        let url = url.expect("the API line came first");
        let ssh = ssh.expect("the SSH gateway line came before the HTTPS one");
        assert!(
            url.starts_with("https://127.0.0.1:"),
            "unexpected URL {url}"
        );
        assert!(
            ssh.starts_with("127.0.0.1:"),
            "unexpected SSH gateway address {ssh}"
        );
        self.url = Some(url);
        self.ssh = Some(ssh);
        self.https = Some(https);
        self.metrics = metrics;
        self.child = Some(child);
    }

    /// Stop `serve` with SIGTERM (SIGKILL after 10 s); returns whether it exited on its own.
    pub fn stop(&mut self) -> bool {
        let Some(mut child) = self.child.take() else {
            return true;
        };
        self.url = None;
        self.ssh = None;
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        let _ = child.kill();
        let _ = child.wait();
        false
    }

    /// Kill `serve` outright (SIGKILL, by its pid), as a crash or a lost machine would.
    pub fn kill_hard(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        self.url = None;
        self.ssh = None;
        let _ = Command::new("kill")
            .arg("-KILL")
            .arg(child.id().to_string())
            .status();
        let _ = child.wait();
    }

    /// Stop and start `serve` again on the same directory (the port may change).
    pub fn restart(&mut self) {
        let clean = self.stop();
        assert!(clean, "jitgate serve did not stop within 10 s of SIGTERM");
        self.serve();
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Remove inherited jitgate variables so only what a test sets reaches the binary.
fn clean_env(cmd: &mut Command) {
    for var in [
        "JITGATE_URL",
        "JITGATE_API_KEY",
        "JITGATE_CA",
        "JITGATE_CONFIG",
        "JITGATE_LOG",
        WEBHOOK_ENV,
    ] {
        cmd.env_remove(var);
    }
}

/// Run `cmd` to completion (killing it after [`COMMAND_TIMEOUT`]).
pub fn output(mut cmd: Command) -> Out {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("run command");
    let read = |mut r: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = r.read_to_end(&mut buf);
            String::from_utf8_lossy(&buf).into_owned()
        })
    };
    let out = read(Box::new(child.stdout.take().expect("piped stdout")));
    let err = read(Box::new(child.stderr.take().expect("piped stderr")));
    let deadline = Instant::now() + COMMAND_TIMEOUT;
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait for command") {
            break s;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{cmd:?} did not finish within {COMMAND_TIMEOUT:?}; stderr:\n{}",
                err.join().unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    (
        status.code().unwrap_or(-1),
        out.join().unwrap_or_default(),
        err.join().unwrap_or_default(),
    )
}

/// Unix seconds now.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64
}

/// Assert an error answer is JSON `{error, message}` with a non-empty message; returns the message.
pub fn error_message(status: u16, body: &Value) -> String {
    assert!(
        (400..500).contains(&status),
        "expected a 4xx answer, got {status}: {body}"
    );
    let code = body.get("error").and_then(Value::as_str);
    let msg = body.get("message").and_then(Value::as_str);
    assert!(
        code.is_some_and(|c| !c.is_empty()) && msg.is_some_and(|m| !m.is_empty()),
        "expected JSON {{error, message}} with status {status}, got {body}"
    );
    msg.unwrap_or_default().to_string()
}
