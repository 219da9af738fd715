//! A real HAProxy (Debian's `haproxy`, which `scripts/test.sh` installs) in `mode tcp` in front
//! of a gateway listener, as a site runs it: one frontend per [`Route`] on a loopback port of
//! its own, each passing the client's address with `send-proxy` or `send-proxy-v2` and
//! connecting from a chosen loopback source address. Runs in the foreground as this test's
//! child, configured in a temp directory, and is stopped by its pid.

use std::fs;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::sshd::free_port;

const BIN: &str = "/usr/sbin/haproxy";

/// How long HAProxy may take to listen.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// One frontend: HAProxy listens on a port of its own and passes each connection to `to`.
#[derive(Debug, Clone)]
pub struct Route {
    /// `host:port` of the gateway listener; several, comma-separated, are balanced round-robin
    /// (several gateway nodes).
    pub to: String,
    /// The server line's PROXY option: `send-proxy` (v1) or `send-proxy-v2`, with any
    /// `proxy-v2-options`.
    pub send: &'static str,
    /// The loopback address HAProxy connects to the gateway from.
    pub source: &'static str,
}

/// A running HAProxy.
pub struct Haproxy {
    dir: tempfile::TempDir,
    child: Option<Child>,
    /// The frontends' ports, in the order of the routes.
    pub ports: Vec<u16>,
}

impl Haproxy {
    /// Start HAProxy with one frontend per route (a few tries, should a chosen port be taken).
    pub fn start(routes: &[Route]) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("jitgate-it-haproxy-")
            .tempdir()
            .expect("temp dir");
        let mut me = Self {
            dir,
            child: None,
            ports: Vec::new(),
        };
        for _ in 0..5 {
            let ports: Vec<u16> = routes.iter().map(|_| free_port()).collect();
            if me.spawn(routes, &ports) {
                me.ports = ports;
                return me;
            }
        }
        panic!("HAProxy did not start; its log:\n{}", me.log());
    }

    /// `127.0.0.1:PORT` of the frontend of route `i`.
    pub fn address(&self, i: usize) -> String {
        format!("127.0.0.1:{}", self.ports[i])
    }

    /// What HAProxy wrote to stderr.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("haproxy.log")).unwrap_or_default()
    }

    fn spawn(&mut self, routes: &[Route], ports: &[u16]) -> bool {
        let mut cfg = String::from(
            "global\n    maxconn 256\n\ndefaults\n    mode tcp\n    timeout connect 5s\n    \
             timeout client 60s\n    timeout server 60s\n",
        );
        for (i, (r, port)) in routes.iter().zip(ports).enumerate() {
            cfg.push_str(&format!(
                "\nfrontend front{i}\n    bind 127.0.0.1:{port}\n    default_backend gateway{i}\n\
                 \nbackend gateway{i}\n    balance roundrobin\n"
            ));
            for (j, to) in r.to.split(',').enumerate() {
                cfg.push_str(&format!(
                    "    server gw{j} {to} {send} source {source}\n",
                    send = r.send,
                    source = r.source,
                ));
            }
        }
        let path = self.dir.path().join("haproxy.cfg");
        fs::write(&path, cfg).expect("write haproxy.cfg");
        let log = fs::File::create(self.dir.path().join("haproxy.log")).expect("haproxy log");
        // -db: stay in the foreground, as this process's child.
        let mut child = Command::new(BIN)
            .arg("-db")
            .arg("-f")
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn /usr/sbin/haproxy (install the Debian package haproxy)");
        let deadline = Instant::now() + START_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return false;
            }
            // Not by connecting: a probe would reach the gateway and be audited.
            if ports.iter().all(|p| listening(*p)) {
                self.child = Some(child);
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        false
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // By its pid: the child this test started.
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Whether some socket listens on 127.0.0.1:`port` (read from `/proc/net/tcp`).
fn listening(port: u16) -> bool {
    let want = format!("0100007F:{port:04X}");
    fs::read_to_string("/proc/net/tcp")
        .unwrap_or_default()
        .lines()
        .skip(1)
        .any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() > 3 && f[1] == want && f[3] == "0A"
        })
}
