//! `jitgate demo`: one command starts everything; the commands it prints (request, approve,
//! token, `ssh`) work against its built-in target, which accepts only certificates from the
//! gateway's user CA; sessions are recorded; SIGTERM stops it cleanly.

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_jitgate");
/// How long `jitgate demo` may take to print its ready line.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one command may run.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// A finished command: exit code, stdout, stderr.
type Out = (i32, String, String);

/// A running `jitgate demo` in its own temp directory.
pub(crate) struct Demo {
    child: Child,
    pub(crate) dir: tempfile::TempDir,
    pub(crate) info: Value,
}

impl Demo {
    /// `jitgate --json demo --dir TMP`; waits for its one JSON line.
    pub(crate) fn start() -> Self {
        for tool in ["ssh", "sshpass", "ssh-keygen"] {
            assert!(
                Command::new("sh")
                    .args(["-c", &format!("command -v {tool}")])
                    .stdout(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success()),
                "{tool} is needed for the demo tests (scripts/test.sh installs it)"
            );
        }
        let dir = tempfile::Builder::new()
            .prefix("jitgate-demo-it-")
            .tempdir()
            .expect("temp dir");
        let log = fs::File::create(dir.path().join("demo.stderr.log")).expect("log file");
        let mut cmd = Command::new(BIN);
        cmd.args(["--json", "demo", "--dir"])
            .arg(dir.path().join("demo"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log);
        clean_env(&mut cmd);
        let mut child = cmd.spawn().expect("start jitgate demo");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let _ = tx.send(lines.next());
            // Keep reading so the demo never blocks on a full pipe.
            for _ in lines {}
        });
        let line = match rx.recv_timeout(START_TIMEOUT) {
            Ok(Some(Ok(line))) => line,
            other => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "jitgate demo printed no ready line ({other:?}); its log:\n{}",
                    fs::read_to_string(dir.path().join("demo.stderr.log")).unwrap_or_default()
                );
            }
        };
        let info: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("the ready line is not JSON ({e}): {line}"));
        Self { child, dir, info }
    }

    pub(crate) fn s(&self, key: &str) -> &str {
        self.info[key]
            .as_str()
            .unwrap_or_else(|| panic!("ready line lacks {key}: {}", self.info))
    }

    /// The demo's directory (`--dir`).
    pub(crate) fn root(&self) -> PathBuf {
        PathBuf::from(self.s("dir"))
    }

    pub(crate) fn ssh_port(&self) -> String {
        self.s("ssh")
            .rsplit(':')
            .next()
            .expect("host:port")
            .to_string()
    }

    pub(crate) fn logs(&self) -> String {
        fs::read_to_string(self.dir.path().join("demo.stderr.log")).unwrap_or_default()
    }

    /// A client command as `user`, with the printed key, URL and `certs/ca.pem`.
    pub(crate) fn cli(&self, user: &str, args: &[&str]) -> Out {
        let key = self.info["keys"][user]
            .as_str()
            .unwrap_or_else(|| panic!("no key for {user}: {}", self.info));
        let mut cmd = Command::new(BIN);
        cmd.args(args);
        clean_env(&mut cmd);
        cmd.env("JITGATE_URL", self.s("api"))
            .env("JITGATE_CA", self.root().join("certs/ca.pem"))
            .env("JITGATE_API_KEY", key);
        run(cmd, None)
    }

    pub(crate) fn cli_json(&self, user: &str, args: &[&str]) -> Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let (code, out, err) = self.cli(user, &all);
        assert_eq!(code, 0, "jitgate {all:?} as {user}: {out}\n{err}");
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
    }

    /// request → approve → token, as the demo prints it; returns the token.
    pub(crate) fn grant_token(&self) -> String {
        let r = self.cli_json(
            "alice",
            &[
                "request",
                "--task",
                "demo-shell",
                "--target",
                "demo-box",
                "--ticket",
                "DEMO-1",
                "--ttl",
                "10m",
                "--reason",
                "demo: look around demo-box",
            ],
        );
        let id = r["id"].as_str().expect("request id").to_string();
        assert_eq!(r["state"], "pending", "{r}");
        let a = self.cli_json("bob", &["approve", &id]);
        assert_eq!(a["state"], "approved", "{a}");
        let t = self.cli_json("alice", &["token", &id]);
        t["token"].as_str().expect("token").to_string()
    }

    /// `ssh` to the gateway as alice with the token (password method, via sshpass).
    pub(crate) fn ssh(
        &self,
        token: &str,
        extra: &[&str],
        remote: Option<&str>,
        input: Option<&[u8]>,
    ) -> Out {
        let mut cmd = Command::new("sshpass");
        cmd.args(["-p", token, "ssh"])
            .args(SSH_OPTS)
            .args(["-o", "PreferredAuthentications=password", "-p"])
            .arg(self.ssh_port())
            .args(extra)
            .arg("alice@127.0.0.1");
        if let Some(r) = remote {
            cmd.arg(r);
        }
        run(cmd, input)
    }

    /// SIGTERM, then wait (bounded) for the exit status.
    pub(crate) fn stop(&mut self) -> Option<i32> {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(s)) = self.child.try_wait() {
                return s.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

pub(crate) const SSH_OPTS: &[&str] = &[
    "-o",
    "StrictHostKeyChecking=no",
    "-o",
    "UserKnownHostsFile=/dev/null",
    "-o",
    "LogLevel=ERROR",
    "-o",
    "ConnectTimeout=20",
];

fn clean_env(cmd: &mut Command) {
    for var in [
        "JITGATE_URL",
        "JITGATE_API_KEY",
        "JITGATE_CA",
        "JITGATE_CONFIG",
        "JITGATE_LOG",
    ] {
        cmd.env_remove(var);
    }
}

/// Run `cmd` to completion with `input` on stdin (killed after [`COMMAND_TIMEOUT`]).
fn run(mut cmd: Command, input: Option<&[u8]>) -> Out {
    cmd.stdin(if input.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    if let Some(bytes) = input {
        let mut stdin = child.stdin.take().expect("piped stdin");
        let bytes = bytes.to_vec();
        // Keep stdin open a moment after writing: ssh -tt ends the session at EOF.
        std::thread::spawn(move || {
            let _ = stdin.write_all(&bytes);
            std::thread::sleep(Duration::from_secs(5));
        });
    }
    let read = |mut r: Box<dyn Read + Send>| {
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
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} did not finish within {COMMAND_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    (
        status.code().unwrap_or(-1),
        out.join().unwrap_or_default(),
        err.join().unwrap_or_default(),
    )
}

/// Every `session.json` under `dir`, parsed, with its folder.
fn sessions(dir: &Path) -> Vec<(PathBuf, Value)> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.file_name().is_some_and(|n| n == "session.json")
                && let Ok(v) = serde_json::from_str(&fs::read_to_string(&p).unwrap_or_default())
            {
                found.push((d.clone(), v));
            }
        }
    }
    found
}

#[test]
fn demo_request_approve_token_then_ssh_exec_and_pty_shell_are_recorded() {
    let mut demo = Demo::start();
    let root = demo.root();
    assert_eq!(demo.s("ticket"), "DEMO-1");
    assert!(root.join("jitgate.toml").is_file());
    assert!(root.join("certs/ca.pem").is_file());
    for user in ["alice", "bob", "admin"] {
        assert!(
            demo.info["keys"][user]
                .as_str()
                .is_some_and(|k| k.starts_with("jgk_")),
            "{}",
            demo.info
        );
    }

    let token = demo.grant_token();
    assert!(token.starts_with("jgt_"), "{token}");

    // exec: output and exit status come back through the gateway.
    let (code, out, err) = demo.ssh(
        &token,
        &[],
        Some("echo hello from $(hostname); echo to-stderr >&2; exit 7"),
        None,
    );
    let host = run(Command::new("hostname"), None).1;
    assert_eq!(code, 7, "exit status of the remote command\n{out}\n{err}");
    assert_eq!(out, format!("hello from {}\n", host.trim()), "{err}");
    assert!(err.contains("to-stderr"), "stderr: {err}");

    // A PTY shell: banner with the certificate's key id, the prompt, the command's output.
    let (code, out, err) = demo.ssh(&token, &["-tt"], None, Some(b"echo pty-$((6*7)); exit 3\n"));
    assert_eq!(code, 3, "exit status of the shell\n{out}\n{err}");
    assert!(out.contains("pty-42"), "{out}");
    assert!(out.contains("demo-box$ "), "prompt missing: {out}");
    assert!(
        out.contains("key id: jitgate session=ses_") && out.contains("user=alice ticket=DEMO-1"),
        "{out}"
    );

    // The target logged the certificate's key id; both sessions are recorded under recordings/.
    let logs = demo.logs();
    assert!(
        logs.contains("demo-box accepted a certificate")
            && logs.contains("user=alice ticket=DEMO-1"),
        "{logs}"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let (dir, meta) = loop {
        let found = sessions(&root.join("recordings"));
        let shell = found
            .into_iter()
            .find(|(_, v)| v["files"][0]["kind"] == "shell" && v["ended_at"].is_string());
        if let Some(s) = shell {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "no ended shell session under recordings/"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(meta["user"], "alice", "{meta}");
    assert_eq!(meta["ticket"], "DEMO-1", "{meta}");
    assert_eq!(meta["target"], "demo-box", "{meta}");
    assert_eq!(meta["principal"], "demo", "{meta}");
    let cast = fs::read_to_string(dir.join(meta["files"][0]["name"].as_str().unwrap())).unwrap();
    assert!(cast.starts_with("{\"version\":2"), "{cast}");
    assert!(cast.contains("pty-42"), "{cast}");
    assert_eq!(sessions(&root.join("recordings")).len(), 2);

    // SIGTERM (what Ctrl-C does) stops it cleanly.
    assert_eq!(demo.stop(), Some(0), "{}", demo.logs());
}

#[test]
fn demo_target_accepts_only_certificates_from_the_gateway_ca_for_principal_demo() {
    let demo = Demo::start();
    let root = demo.root();
    let port = demo
        .s("target_address")
        .rsplit(':')
        .next()
        .unwrap()
        .to_string();
    let keys = demo.dir.path().join("keys");
    fs::create_dir_all(&keys).unwrap();
    let keygen = |args: &[&str]| {
        let mut cmd = Command::new("ssh-keygen");
        cmd.args(args);
        let (code, out, err) = run(cmd, None);
        assert_eq!(code, 0, "ssh-keygen {args:?}: {out}\n{err}");
    };
    let p = |name: &str| keys.join(name).display().to_string();
    keygen(&["-q", "-t", "ed25519", "-N", "", "-f", &p("user")]);
    keygen(&["-q", "-t", "ed25519", "-N", "", "-f", &p("other_ca")]);
    let gateway_ca = root.join("certs/ssh_user_ca").display().to_string();
    // Sign the user key as `name`: by `ca`, for `principal`.
    let sign = |name: &str, ca: &str, principal: &str| {
        fs::copy(p("user"), p(name)).unwrap();
        fs::copy(p("user.pub"), p(&format!("{name}.pub"))).unwrap();
        keygen(&[
            "-q",
            "-s",
            ca,
            "-I",
            "jitgate-it",
            "-n",
            principal,
            "-V",
            "-5m:+5m",
            &p(&format!("{name}.pub")),
        ]);
    };
    sign("good", &gateway_ca, "demo");
    sign("foreign", &p("other_ca"), "demo");
    sign("wrong_principal", &gateway_ca, "root");
    let ssh = |key: &str, login: &str| {
        let mut cmd = Command::new("ssh");
        cmd.args(SSH_OPTS)
            .args([
                "-o",
                "BatchMode=yes",
                "-o",
                "IdentitiesOnly=yes",
                "-o",
                "PreferredAuthentications=publickey",
                "-i",
                &p(key),
                "-p",
                &port,
            ])
            .arg(format!("{login}@127.0.0.1"))
            .arg("echo certificate-accepted");
        run(cmd, None)
    };
    // The control: OpenSSH's own certificate from the gateway's CA for `demo` gets in.
    let (code, out, err) = ssh("good", "demo");
    assert_eq!((code, out.as_str()), (0, "certificate-accepted\n"), "{err}");
    for (key, login, what) in [
        ("foreign", "demo", "a certificate from another CA"),
        (
            "wrong_principal",
            "demo",
            "a certificate without principal demo",
        ),
        ("good", "root", "another login name"),
        ("user", "demo", "a plain key"),
    ] {
        let (code, out, err) = ssh(key, login);
        assert_eq!(code, 255, "{what} must be refused: {out}\n{err}");
        assert!(err.contains("Permission denied"), "{what}: {err}");
    }
    let logs = demo.logs();
    assert!(logs.contains("demo-box refused a certificate"), "{logs}");
    assert!(
        logs.contains("demo-box refused a plain public key"),
        "{logs}"
    );
}

#[test]
fn demo_prints_one_time_sign_in_links_that_work_once_in_a_browser() {
    let demo = Demo::start();
    for user in ["alice", "bob", "admin"] {
        let link = demo.info["sign_in_links"][user]
            .as_str()
            .unwrap_or_default();
        assert!(
            link.starts_with(&format!("{}/auth/link?token=", demo.s("api"))),
            "{user}: {link}"
        );
    }
    let link = demo.info["sign_in_links"]["alice"].as_str().unwrap();
    let ctx = crate::peers::browser().context();
    let page = ctx.page();
    page.goto(link);
    page.click("#continue");
    assert_eq!(page.text("#user"), "alice", "{}", page.content());
    assert!(page.text("#roles").contains("technician"));
    let again = ctx.page();
    again.goto(link);
    again.click("#continue");
    assert!(
        again.text("#why").contains("already used"),
        "{}",
        again.content()
    );
}
