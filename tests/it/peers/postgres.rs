//! A real PostgreSQL (Debian's `postgresql` package, whatever major version it brings) for
//! the cluster tests: a database cluster of its own in a temporary directory, initialised and
//! run as the unprivileged `postgres` user on a free loopback port, with password (SCRAM)
//! authentication for a `jitgate` role. [`postgres()`] is the one shared by the run (each test
//! takes a fresh database from it); [`Postgres::start`] gives a test a server of its own to stop
//! and start again.
//!
//! The server runs under a `sh` wrapper whose stdin is a pipe from this process: when the pipe
//! closes (the test binary exits, or [`Postgres::stop`]), the wrapper stops the server by its
//! pid (a fast shutdown, SIGINT) and waits for it.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::log_tail;
use crate::sshd::free_port;

/// The `jitgate` role's password.
pub const PASSWORD: &str = "jitgate-test-database-password";

/// How long the server may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(60);

static SHARED: OnceLock<Postgres> = OnceLock::new();
static DATABASES: AtomicUsize = AtomicUsize::new(0);

/// The PostgreSQL shared by the run.
pub fn postgres() -> &'static Postgres {
    // Never dropped: its wrapper removes the directory when the run ends.
    SHARED.get_or_init(|| Postgres::init(true, false))
}

/// A PostgreSQL server of the tests'.
pub struct Postgres {
    dir: PathBuf,
    bin: PathBuf,
    port: u16,
    running: std::sync::Mutex<Option<(Child, ChildStdin)>>,
    /// The wrapper removes the directory once the server has stopped (the shared server).
    cleanup: bool,
    /// The CA of the server's TLS certificate, when it serves TLS ([`Postgres::start_tls`]).
    ca: Option<PathBuf>,
}

/// Debian's server binaries, of the newest major version installed.
fn server_bin() -> PathBuf {
    let mut versions: Vec<PathBuf> = fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL is not installed (apt-get install postgresql; scripts/test.sh does)")
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|b| b.join("initdb").is_file())
        .collect();
    versions.sort();
    versions
        .pop()
        .expect("no /usr/lib/postgresql/*/bin/initdb; apt-get install postgresql")
}

/// `setpriv`'s arguments to run `program` as the `postgres` user (it execs the program in
/// place, so the pid is the program's).
const AS_POSTGRES: [&str; 4] = [
    "--reuid=postgres",
    "--regid=postgres",
    "--init-groups",
    "--reset-env",
];

fn as_postgres(bin: &Path, program: &str) -> Command {
    let mut c = Command::new("setpriv");
    c.args(AS_POSTGRES).arg(bin.join(program));
    c
}

impl Postgres {
    /// Initialise a database cluster in a fresh directory and start a server on it.
    pub fn start() -> Self {
        Self::init(false, false)
    }

    /// [`Postgres::start`], serving TLS with a certificate for 127.0.0.1 from a CA of its own
    /// ([`Postgres::ca`]); clients that do not ask for TLS are still served.
    pub fn start_tls() -> Self {
        Self::init(false, true)
    }

    /// The CA that signed the server's certificate (a server started with TLS).
    pub fn ca(&self) -> &Path {
        self.ca.as_deref().expect("a server started with start_tls")
    }

    fn init(cleanup: bool, tls: bool) -> Self {
        let bin = server_bin();
        let dir = tempfile::Builder::new()
            .prefix("jitgate-pg-")
            .tempdir_in("/tmp")
            .expect("temp dir")
            .keep();
        let chown = |p: &Path| {
            let ok = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(p)
                .status()
                .expect("chown");
            assert!(ok.success(), "chown postgres {}", p.display());
        };
        fs::write(dir.join("pwfile"), format!("{PASSWORD}\n")).expect("pwfile");
        let ca = tls.then(|| {
            let ca = super::make_certs(&dir, "PostgreSQL");
            // The server refuses a key others may read.
            use std::os::unix::fs::PermissionsExt as _;
            fs::set_permissions(
                dir.join("server-key.pem"),
                fs::Permissions::from_mode(0o600),
            )
            .expect("chmod the server key");
            ca
        });
        chown(&dir);
        let out = as_postgres(&bin, "initdb")
            .arg("-D")
            .arg(dir.join("data"))
            .args([
                "-U",
                "jitgate",
                "-A",
                "scram-sha-256",
                "--no-sync",
                "-E",
                "UTF8",
                "--locale=C",
            ])
            .arg(format!("--pwfile={}", dir.join("pwfile").display()))
            .output()
            .expect("run initdb");
        assert!(
            out.status.success(),
            "initdb failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let pg = Self {
            dir,
            bin,
            port: free_port(),
            running: std::sync::Mutex::new(None),
            cleanup,
            ca,
        };
        pg.resume();
        pg
    }

    /// A fresh, empty database; its URL (`postgres://jitgate@127.0.0.1:PORT/NAME`, without the
    /// password, which is [`PASSWORD`]).
    pub fn database(&self) -> String {
        let name = format!("jg_{}", DATABASES.fetch_add(1, Ordering::Relaxed));
        self.psql("postgres", &format!("CREATE DATABASE {name}"));
        format!("postgres://jitgate@127.0.0.1:{}/{name}", self.port)
    }

    /// Run one statement as the `jitgate` role in database `db`; its output.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let out = Command::new("psql")
            .args([
                "-h",
                "127.0.0.1",
                "-U",
                "jitgate",
                "-At",
                "-v",
                "ON_ERROR_STOP=1",
            ])
            .arg("-p")
            .arg(self.port.to_string())
            .args(["-d", db, "-c", sql])
            .env("PGPASSWORD", PASSWORD)
            .output()
            .expect("run psql");
        assert!(
            out.status.success(),
            "psql {sql:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    fn log(&self) -> PathBuf {
        self.dir.join("server.log")
    }

    /// Stop the server (a fast shutdown: its sessions are disconnected) and wait for it.
    pub fn stop(&self) {
        let Some((mut wrapper, stdin)) = self.running.lock().expect("pg lock").take() else {
            return;
        };
        drop(stdin);
        let _ = wrapper.wait();
    }

    /// Stop the server and remove its directory (a test's own server; the shared one lives as
    /// long as the run).
    pub fn remove(self) {
        self.stop();
        let _ = fs::remove_dir_all(&self.dir);
    }

    /// Start the server (again) on the same directory and port; wait until it accepts.
    pub fn resume(&self) {
        let mut running = self.running.lock().expect("pg lock");
        assert!(running.is_none(), "PostgreSQL is running already");
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.log())
            .expect("server log");
        // A background job's stdin is /dev/null in sh: the watcher reads the pipe on fd 3.
        let script = r#"
exec 3<&0
"$@" </dev/null &
pg=$!
{ read -r _ <&3; kill -INT "$pg" 2>/dev/null; } &
watcher=$!
wait "$pg"
kill "$watcher" 2>/dev/null
[ -z "$JITGATE_PG_CLEANUP" ] || rm -rf "$JITGATE_PG_CLEANUP"
"#;
        let mut wrapper = Command::new("sh");
        if self.cleanup {
            wrapper.env("JITGATE_PG_CLEANUP", &self.dir);
        }
        let mut wrapper = wrapper
            .arg("-c")
            .arg(script)
            .arg("sh")
            .arg("setpriv")
            .args(AS_POSTGRES)
            .arg(self.bin.join("postgres"))
            .arg("-D")
            .arg(self.dir.join("data"))
            .arg("-k")
            .arg(&self.dir)
            .arg("-p")
            .arg(self.port.to_string())
            .args([
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
                "-c",
                "max_connections=300",
            ])
            .args(self.ca.iter().flat_map(|_| {
                [
                    "-c".to_string(),
                    "ssl=on".to_string(),
                    "-c".to_string(),
                    format!("ssl_cert_file={}", self.dir.join("server.pem").display()),
                    "-c".to_string(),
                    format!("ssl_key_file={}", self.dir.join("server-key.pem").display()),
                ]
            }))
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start postgres");
        let stdin = wrapper.stdin.take().expect("piped stdin");
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let ready = Command::new(self.bin.join("pg_isready"))
                .args(["-h", "127.0.0.1", "-q"])
                .arg("-p")
                .arg(self.port.to_string())
                .status()
                .is_ok_and(|s| s.success());
            if ready {
                break;
            }
            if let Ok(Some(status)) = wrapper.try_wait() {
                panic!(
                    "postgres exited ({status}) before accepting connections; its log:\n{}",
                    log_tail(&self.log())
                );
            }
            assert!(
                Instant::now() < deadline,
                "postgres did not accept connections within {START_TIMEOUT:?}; its log:\n{}",
                log_tail(&self.log())
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        *running = Some((wrapper, stdin));
    }
}
