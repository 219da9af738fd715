//! The Request Tracker 5 peer: Debian's `request-tracker5` (SQLite, `rt-server` on Starlet) on
//! `http://127.0.0.1:PORT`, serving this run's own copy of the database the package created, so
//! the system's RT is never touched and every run starts from the same empty helpdesk. Started
//! once per run of the test binary and shared by every test; each test makes its own users and
//! tickets (names get a per-run number). [`Rt::start_own`] serves the same database from a second
//! `rt-server` that a test can stop and start, for "the ticket system is unreachable".
//!
//! Set-up scripts and the site configuration are in tests/peers/rt/; scripts/test.sh installs
//! RT. Each `rt-server` runs under a `sh` wrapper whose stdin is a pipe from this process: when
//! the pipe closes (the test binary exits, or [`RtProcess::stop`]), the wrapper kills that
//! `rt-server` by its pid and waits for it.

use std::fs;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{log_tail, peers_dir, url_encode};
use crate::harness::output;
use crate::sshd::free_port;

/// Debian's paths for RT 5.
const RT_SERVER: &str = "/usr/share/request-tracker5/libexec/rt-server";
const RT_LIB: &str = "/usr/share/request-tracker5/lib";
/// The database the package's install created (root, the General queue, no tickets).
const SYSTEM_DB: &str = "/var/lib/dbconfig-common/sqlite3/request-tracker5/rtdb";

/// How long an `rt-server` may take to answer: about 3 s on an idle machine, several times that
/// while the rest of the suite compiles and runs beside it.
const START_TIMEOUT: Duration = Duration::from_secs(90);
/// How often to ask whether it answers yet.
const START_POLL: Duration = Duration::from_millis(200);
/// How long a stopped `rt-server` may take to exit (its master waits for its workers; under a
/// second here).
const STOP_TIMEOUT: Duration = Duration::from_secs(20);
/// Starlet workers per server: enough for two test threads at once; each is about 130 MB.
const WORKERS: &str = "2";
/// Attempts at a fresh port when the one picked was taken before `rt-server` bound it.
const PORT_ATTEMPTS: usize = 3;

/// Runs `rt-server` ("$@" after the cleanup directory) in the background, prints its pid, and
/// kills it by that pid when stdin closes, then removes the cleanup directory when one is given
/// (the shared server's temp dir: the static that holds it is never dropped). When `rt-server`
/// ends on its own first, the wrapper exits with its status and leaves the directory (and the
/// log in it) for a look.
const WRAPPER: &str = r#"
cleanup=$1; shift
exec 3<&0
"$@" </dev/null 3<&- >&2 &
rt=$!
echo "$rt"
{ read -r _ <&3; [ -z "$cleanup" ] || : >"$cleanup/.stopped"; kill "$rt" 2>/dev/null; } &
watcher=$!
exec 3<&-
wait "$rt"
code=$?
kill "$watcher" 2>/dev/null
[ -z "$cleanup" ] || [ ! -e "$cleanup/.stopped" ] || rm -rf -- "$cleanup"
exit "$code"
"#;

static RT: OnceLock<Rt> = OnceLock::new();

/// The run's Request Tracker, started on first use.
pub fn rt() -> &'static Rt {
    RT.get_or_init(Rt::start)
}

/// Where one run's RT keeps its database and configuration.
#[derive(Clone)]
struct Site {
    /// The run's temp directory.
    dir: PathBuf,
    /// The run's copy of the database.
    db: PathBuf,
    /// An empty directory, so none of Debian's RT_SiteConfig.d snippets apply.
    conf_dir: PathBuf,
}

impl Site {
    /// A command with the environment tests/peers/rt/RT_SiteConfig.pm reads.
    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        cmd.env("RT_SITE_CONFIG", peers_dir().join("rt/RT_SiteConfig.pm"))
            .env("RT_SITE_CONFIG_DIR", &self.conf_dir)
            .env("JITGATE_RT_DB", &self.db)
            .env_remove("JITGATE_RT_PORT")
            .current_dir(&self.dir);
        cmd
    }

    /// Run `perl tests/peers/rt/SCRIPT ARGS` against the database; its stdout. Panics with its
    /// stderr when it fails.
    fn perl(&self, script: &str, args: &[&str], envs: &[(&str, &str)]) -> String {
        let mut cmd = self.command("perl");
        cmd.arg(format!("-I{RT_LIB}"))
            .arg(peers_dir().join("rt").join(script))
            .args(args)
            .envs(envs.iter().copied());
        let (code, out, err) = output(cmd);
        assert_eq!(code, 0, "tests/peers/rt/{script} {args:?} failed: {err}");
        out
    }
}

/// A running `rt-server` (or one stopped by [`RtProcess::stop`]) on its own port over the run's
/// database. Dropping it stops it.
pub struct RtProcess {
    site: Site,
    port: u16,
    log: PathBuf,
    /// Removed by the wrapper once `rt-server` has exited (the shared server's temp dir).
    cleanup: Option<PathBuf>,
    running: Option<Running>,
}

struct Running {
    wrapper: Child,
    /// The pipe whose closing stops `rt-server`.
    stdin: Option<ChildStdin>,
    pid: u32,
}

/// Why an `rt-server` did not come up.
enum StartError {
    /// The port was taken between picking and binding it.
    PortTaken,
    Other(String),
}

impl RtProcess {
    /// Start on a free port, trying another when the one picked is taken meanwhile.
    fn spawn(site: Site, log: PathBuf, cleanup: Option<PathBuf>) -> Self {
        let mut last = String::new();
        for _ in 0..PORT_ATTEMPTS {
            let mut me = RtProcess {
                site: site.clone(),
                port: free_port(),
                log: log.clone(),
                cleanup: cleanup.clone(),
                running: None,
            };
            match me.try_start() {
                Ok(()) => return me,
                Err(StartError::PortTaken) => last = format!("port {} was taken", me.port),
                Err(StartError::Other(why)) => me.failed(&why),
            }
        }
        panic!("rt-server did not start: {last}, {PORT_ATTEMPTS} times");
    }

    fn failed(&self, why: &str) -> ! {
        panic!(
            "rt-server on port {} did not start: {why}; its log ({}):\n{}",
            self.port,
            self.log.display(),
            log_tail(&self.log)
        )
    }

    /// Run `rt-server` under the wrapper and wait until REST2 answers.
    fn try_start(&mut self) -> Result<(), StartError> {
        assert!(self.running.is_none(), "rt-server is already running");
        let started = Instant::now();
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("open the RT log");
        let offset = log.metadata().map(|m| m.len()).unwrap_or(0);
        let port = self.port.to_string();
        let mut cmd = self.site.command("sh");
        cmd.arg("-c")
            .arg(WRAPPER)
            .arg("rt-wrapper")
            .arg(self.cleanup.as_deref().unwrap_or(Path::new("")))
            .arg(RT_SERVER)
            .args(["--server", "Starlet", "--host", "127.0.0.1", "--port"])
            .arg(&port)
            .args(["--max-workers", WORKERS])
            .env("JITGATE_RT_PORT", &port)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log);
        let mut wrapper = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("start sh for rt-server: {e}"));
        let stdin = wrapper.stdin.take();
        let mut line = String::new();
        BufReader::new(wrapper.stdout.take().expect("piped stdout"))
            .read_line(&mut line)
            .expect("read rt-server's pid");
        let pid = line
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("the RT wrapper printed {line:?}, not a pid"));
        self.running = Some(Running {
            wrapper,
            stdin,
            pid,
        });
        loop {
            let alive = self.running.as_mut().expect("running").wrapper.try_wait();
            if matches!(alive, Ok(None)) && self.answers() {
                eprintln!(
                    "peers: RT is at {} (pid {pid}, {:?} to start)",
                    self.url(),
                    started.elapsed()
                );
                return Ok(());
            }
            let running = self.running.as_mut().expect("running");
            if let Some(status) = running.wrapper.try_wait().expect("wait for the RT wrapper") {
                self.running = None;
                let mut text = String::new();
                if let Ok(mut f) = fs::File::open(&self.log) {
                    let _ = f.seek(SeekFrom::Start(offset));
                    let _ = f.read_to_string(&mut text);
                }
                return Err(if text.contains("Address already in use") {
                    StartError::PortTaken
                } else {
                    StartError::Other(format!("it exited ({status})"))
                });
            }
            if started.elapsed() > START_TIMEOUT {
                self.stop();
                return Err(StartError::Other(format!(
                    "it did not answer within {START_TIMEOUT:?}"
                )));
            }
            std::thread::sleep(START_POLL);
        }
    }

    /// Whether RT's REST2 answers on the port: 401 from Starlet to a request without
    /// credentials (what else might hold the port would not say that).
    fn answers(&self) -> bool {
        let mut cmd = Command::new("curl");
        cmd.args(["-s", "-o", "/dev/null", "--max-time", "5"])
            .args(["-w", "%{http_code} %header{server}"])
            .arg(format!("{}/REST/2.0/rt", self.url()));
        let (_, out, _) = output(cmd);
        out.trim() == "401 Plack::Handler::Starlet"
    }

    /// `http://127.0.0.1:PORT`, no trailing slash (the same while stopped and after a start).
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The pid of `rt-server` (its Starlet master), while it runs.
    #[allow(dead_code, reason = "for a test to measure or show")]
    pub fn pid(&self) -> Option<u32> {
        self.running.as_ref().map(|r| r.pid)
    }

    /// What this `rt-server` wrote on stderr so far.
    #[allow(dead_code, reason = "for a failing test to show")]
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Stop `rt-server` and wait until it has exited and its port refuses connections. A no-op
    /// when it is not running.
    pub fn stop(&mut self) {
        let Some(mut running) = self.running.take() else {
            return;
        };
        drop(running.stdin.take());
        let deadline = Instant::now() + STOP_TIMEOUT;
        while running
            .wrapper
            .try_wait()
            .expect("wait for the RT wrapper")
            .is_none()
        {
            if Instant::now() > deadline {
                // It did not stop on TERM: kill it by its pid, then its wrapper.
                let _ = Command::new("kill")
                    .args(["-KILL", &running.pid.to_string()])
                    .status();
                let _ = running.wrapper.kill();
                let _ = running.wrapper.wait();
                panic!(
                    "rt-server (pid {}) did not exit within {STOP_TIMEOUT:?} of TERM; killed it; its log:\n{}",
                    running.pid,
                    log_tail(&self.log)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err(),
            "port {} still accepts connections after rt-server (pid {}) exited",
            self.port,
            running.pid
        );
    }

    /// Start `rt-server` again on the same port, after [`RtProcess::stop`].
    pub fn start(&mut self) {
        if self.running.is_some() {
            return;
        }
        match self.try_start() {
            Ok(()) => {}
            Err(StartError::PortTaken) => self.failed("its port was taken while it was stopped"),
            Err(StartError::Other(why)) => self.failed(&why),
        }
    }
}

impl Drop for RtProcess {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // No second panic from a failed stop; closing the pipe is enough to end it.
            if let Some(mut running) = self.running.take() {
                drop(running.stdin.take());
                let _ = running.wrapper.wait();
            }
        } else {
            self.stop();
        }
    }
}

/// The run's Request Tracker: its shared `rt-server`, root's API token, and REST2 helpers that
/// panic with RT's answer when RT refuses.
pub struct Rt {
    site: Site,
    url: String,
    token: String,
    seq: AtomicUsize,
    server: RtProcess,
}

impl Rt {
    fn start() -> Self {
        let started = Instant::now();
        assert!(
            Path::new(RT_SERVER).exists() && Path::new(SYSTEM_DB).exists(),
            "Request Tracker 5 is not installed ({RT_SERVER} or {SYSTEM_DB} is missing): run \
             scripts/test.sh as root, which installs request-tracker5, rt5-db-sqlite and \
             rt5-standalone"
        );
        let dir = tempfile::Builder::new()
            .prefix("jitgate-it-rt-")
            .tempdir()
            .expect("temp dir for RT")
            .keep();
        let site = Site {
            db: dir.join("rtdb"),
            conf_dir: dir.join("RT_SiteConfig.d"),
            dir: dir.clone(),
        };
        fs::copy(SYSTEM_DB, &site.db)
            .unwrap_or_else(|e| panic!("copy RT's database {SYSTEM_DB}: {e} (run as root)"));
        fs::create_dir(&site.conf_dir).expect("create the empty RT_SiteConfig.d");
        let token = site.perl("setup.pl", &[], &[]);
        let token = token
            .lines()
            .last()
            .filter(|t| t.starts_with("1-"))
            .unwrap_or_else(|| panic!("setup.pl printed no API token: {token:?}"))
            .to_string();
        let server = RtProcess::spawn(site.clone(), dir.join("rt.log"), Some(dir.clone()));
        eprintln!(
            "peers: RT is ready at {} ({:?} with its set-up)",
            server.url(),
            started.elapsed()
        );
        Rt {
            url: server.url(),
            site,
            token,
            seq: AtomicUsize::new(0),
            server,
        }
    }

    /// `http://127.0.0.1:PORT`, no trailing slash; REST2 is under `/REST/2.0`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// An API token for RT's root user: `Authorization: token <value>`.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// What the shared `rt-server` wrote on stderr so far (scrips log their failures there).
    #[allow(dead_code, reason = "for a failing test to show")]
    pub fn log(&self) -> String {
        self.server.log()
    }

    /// A second `rt-server` on another port over the same database, for a test to stop and
    /// start; tickets made through either are seen by both.
    #[allow(dead_code, reason = "for the ticket-system tests")]
    pub fn start_own(&self) -> RtProcess {
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        RtProcess::spawn(
            self.site.clone(),
            self.site.dir.join(format!("rt-own-{n}.log")),
            None,
        )
    }

    /// `name` with this run's next number, e.g. `alice-7`.
    fn unique(&self, name: &str) -> String {
        format!("{name}-{}", self.seq.fetch_add(1, Ordering::Relaxed))
    }

    /// Send a REST2 request as root to `path` (after `/REST/2.0`); returns the status and body.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        content_type: &str,
        body: Option<&str>,
    ) -> (u16, String) {
        let mut cmd = Command::new("curl");
        cmd.args([
            "-sS",
            "--max-time",
            "30",
            "-w",
            "\n%{http_code}",
            "-X",
            method,
        ])
        .arg("-H")
        .arg(format!("Authorization: token {}", self.token))
        .arg("-H")
        .arg(format!("Content-Type: {content_type}"));
        if let Some(body) = body {
            cmd.arg("--data-raw").arg(body);
        }
        cmd.arg(format!("{}/REST/2.0{path}", self.url));
        let (code, out, err) = output(cmd);
        let (text, status) = out.rsplit_once('\n').unwrap_or(("", &out));
        let status = status.trim().parse().unwrap_or(0);
        if code != 0 && status == 0 {
            panic!(
                "curl {method} {path} against RT failed (exit {code}): {err}\nRT log:\n{}",
                log_tail(&self.server.log)
            );
        }
        (status, text.to_string())
    }

    /// A JSON request that must answer `want`; its JSON answer.
    fn call(&self, method: &str, path: &str, body: Option<&Value>, want: u16) -> Value {
        let body = body.map(Value::to_string);
        let (status, text) = self.request(method, path, "application/json", body.as_deref());
        assert_eq!(
            status,
            want,
            "RT answered {method} {path} with {status}: {text}\nRT log:\n{}",
            log_tail(&self.server.log)
        );
        serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("RT's answer to {method} {path} is not JSON ({e}): {text}"))
    }

    /// GET `/ticket/ID`.
    pub fn ticket(&self, id: u64) -> Value {
        self.call("GET", &format!("/ticket/{id}"), None, 200)
    }

    /// Create a privileged user (who may own tickets) named `name` plus a number, so tests do
    /// not collide; returns the name RT knows them by.
    pub fn create_user(&self, name: &str) -> String {
        let name = self.unique(name);
        self.call(
            "POST",
            "/user",
            Some(&json!({
                "Name": name,
                "EmailAddress": format!("{name}@example.test"),
                "RealName": format!("{name} (jitgate tests)"),
                "Privileged": 1,
            })),
            201,
        );
        name
    }

    /// Create a ticket in the General queue owned by `owner` (an RT user name, or "Nobody"), its
    /// subject `subject` plus a number; returns its id.
    pub fn create_ticket(&self, subject: &str, owner: &str) -> u64 {
        let subject = format!("{subject} [{}]", self.seq.fetch_add(1, Ordering::Relaxed));
        let answer = self.call(
            "POST",
            "/ticket",
            Some(&json!({
                "Queue": "General",
                "Subject": subject,
                "Content": format!("{subject}\n\nMade by jitgate's integration tests."),
                "Owner": owner,
            })),
            201,
        );
        let id = answer["id"]
            .as_str()
            .and_then(|id| id.parse().ok())
            .unwrap_or_else(|| panic!("no ticket id in RT's answer {answer}"));
        let got = self.owner(id);
        assert_eq!(got, owner, "ticket {id} was created with owner {got}");
        id
    }

    /// PUT `fields` on ticket `id`, then check that RT applied each (it answers 200 with a
    /// message when it refuses a change).
    fn update(&self, id: u64, fields: Value, read: impl Fn(&Self) -> String, want: &str) {
        let messages = self.call("PUT", &format!("/ticket/{id}"), Some(&fields), 200);
        let got = read(self);
        assert_eq!(
            got, want,
            "RT did not apply {fields} to ticket {id}: {messages}"
        );
    }

    /// Make `user` (an RT user name, or "Nobody") the owner of ticket `id`.
    pub fn set_owner(&self, id: u64, user: &str) {
        self.update(id, json!({ "Owner": user }), |rt| rt.owner(id), user);
    }

    /// Set ticket `id`'s status (`open`, `stalled`, `resolved`, `rejected`...).
    pub fn set_status(&self, id: u64, status: &str) {
        self.update(id, json!({ "Status": status }), |rt| rt.status(id), status);
    }

    /// Ticket `id`'s status.
    pub fn status(&self, id: u64) -> String {
        let ticket = self.ticket(id);
        ticket["Status"]
            .as_str()
            .unwrap_or_else(|| panic!("no Status in ticket {id}: {ticket}"))
            .to_string()
    }

    /// Ticket `id`'s owner's user name ("Nobody" when it has none).
    pub fn owner(&self, id: u64) -> String {
        let ticket = self.ticket(id);
        ticket["Owner"]["id"]
            .as_str()
            .unwrap_or_else(|| panic!("no Owner in ticket {id}: {ticket}"))
            .to_string()
    }

    /// Comment on ticket `id` (text/plain), as root.
    pub fn comment(&self, id: u64, text: &str) {
        let path = format!("/ticket/{id}/comment");
        let (status, answer) = self.request("POST", &path, "text/plain", Some(text));
        assert_eq!(
            status, 201,
            "RT answered POST {path} with {status}: {answer}"
        );
    }

    /// Every page of the REST2 collection at `path` (which has a `?`), `items` joined.
    fn collection(&self, path: &str) -> Vec<Value> {
        let mut items = Vec::new();
        for page in 1.. {
            let answer = self.call(
                "GET",
                &format!("{path}&per_page=100&page={page}"),
                None,
                200,
            );
            items.extend(answer["items"].as_array().cloned().unwrap_or_default());
            if answer["pages"].as_u64().is_none_or(|pages| page >= pages) {
                break;
            }
        }
        items
    }

    /// The text of the comments on ticket `id`, oldest first: the text/plain part of each
    /// Comment transaction in its history (whoever wrote it: root, or jitgate's account).
    pub fn comments(&self, id: u64) -> Vec<String> {
        let comments: Vec<String> = self
            .collection(&format!("/ticket/{id}/history?fields=Type"))
            .into_iter()
            .filter(|t| t["Type"] == "Comment")
            .filter_map(|t| t["id"].as_str().map(str::to_string))
            .collect();
        comments
            .iter()
            .filter_map(|txn| {
                self.collection(&format!(
                    "/transaction/{txn}/attachments?fields=ContentType,Content"
                ))
                .into_iter()
                .find(|a| a["ContentType"] == "text/plain")
                .and_then(|a| a["Content"].as_str().map(str::to_string))
            })
            .collect()
    }

    /// Install (or point again) the two global scrips of tests/peers/rt/webhook-scrip.pl that
    /// post every ticket's status and owner changes to `url`, signed with `secret` as jitgate's
    /// generic webhook verifies. They post every ticket's changes, other tests' too: filter by
    /// ticket id. Scrips are keyed by `url`: installing for another URL adds a pair.
    pub fn install_webhook_scrip(&self, url: &str, secret: &str) {
        self.site.perl(
            "webhook-scrip.pl",
            &["--url", url, "--name", &scrip_name(url)],
            &[("JITGATE_WEBHOOK_SECRET", secret)],
        );
    }

    /// [`Rt::install_webhook_scrip`] for an `https://` URL whose certificate `ca` signs.
    pub fn install_webhook_scrip_trusting(&self, url: &str, secret: &str, ca: &Path) {
        let ca = ca.display().to_string();
        self.site.perl(
            "webhook-scrip.pl",
            &["--url", url, "--name", &scrip_name(url), "--ca", &ca],
            &[("JITGATE_WEBHOOK_SECRET", secret)],
        );
    }

    /// Disable the scrips [`Rt::install_webhook_scrip`] installed for `url`.
    pub fn remove_webhook_scrip(&self, url: &str) {
        self.site.perl(
            "webhook-scrip.pl",
            &["--remove", "--name", &scrip_name(url)],
            &[],
        );
    }

    /// Ticket ids matching a TicketSQL `query` (e.g. `Owner='alice-3' AND Status='resolved'`).
    #[allow(dead_code, reason = "for the ticket-system tests")]
    pub fn search(&self, query: &str) -> Vec<u64> {
        self.collection(&format!("/tickets?query={}", url_encode(query)))
            .iter()
            .filter_map(|t| t["id"].as_str().and_then(|id| id.parse().ok()))
            .collect()
    }
}

/// The scrips' name for a webhook URL.
fn scrip_name(url: &str) -> String {
    format!("jitgate {url}")
}
