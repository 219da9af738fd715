//! A real OpenSSH `sshd` as the SSH target: its own `sshd_config` on loopback that trusts only
//! the gateway's user CA (`TrustedUserCAKeys`, `AuthorizedPrincipalsFile`, `AuthorizedKeysFile
//! none`), logging to a file the tests read. Needs root (it runs as CI does).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The login account on the target; also the tasks' principal.
pub const LOGIN: &str = "jitgate-it";

/// How long sshd may take to print its listening line.
const START_TIMEOUT: Duration = Duration::from_secs(10);

static ACCOUNT: Mutex<bool> = Mutex::new(false);

/// Create the login account once (useradd locks it; `usermod -p '*'` allows key-based login).
fn ensure_account() {
    let mut done = ACCOUNT.lock().unwrap_or_else(|e| e.into_inner());
    if *done {
        return;
    }
    let exists = Command::new("id")
        .arg("-u")
        .arg(LOGIN)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !exists {
        let out = Command::new("useradd")
            .args(["-m", "-s", "/bin/bash", LOGIN])
            .output()
            .expect("run useradd (the SSH tests run as root)");
        assert!(
            out.status.success(),
            "useradd {LOGIN}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = Command::new("usermod")
        .args(["-p", "*", LOGIN])
        .output()
        .expect("run usermod");
    assert!(
        out.status.success(),
        "usermod -p '*' {LOGIN}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    fs::create_dir_all("/run/sshd").expect("create /run/sshd");
    *done = true;
}

/// The numeric uid and gid of [`LOGIN`].
fn login_ids() -> (String, String) {
    let id = |flag: &str| {
        let out = Command::new("id")
            .arg(flag)
            .arg(LOGIN)
            .output()
            .expect("run id");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    (id("-u"), id("-g"))
}

/// A free loopback port (free when asked; a server started on it reports when it lost a race
/// for it).
///
/// Taken below the kernel's ephemeral range (32768 and up by default), one after another: a
/// port the kernel hands out for `bind(0)` or an outgoing connection could be taken by another
/// test between this check and its owner's bind (seen: a gateway's `api_listen` "Address already
/// in use"); these ports only this process hands out, each once.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    const FIRST: u16 = 20000;
    const LAST: u16 = 32000;
    static NEXT: AtomicU16 = AtomicU16::new(FIRST);
    for _ in FIRST..=LAST {
        let mut port = NEXT.fetch_add(1, Ordering::Relaxed);
        if !(FIRST..=LAST).contains(&port) {
            NEXT.store(FIRST + 1, Ordering::Relaxed);
            port = FIRST;
        }
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port in {FIRST}..={LAST}");
}

/// One running sshd in its own temp directory.
pub struct Sshd {
    dir: tempfile::TempDir,
    pub port: u16,
    /// The host key as the gateway pins it: `ssh-ed25519 AAAA...` (type and base64 only).
    pub host_key: String,
    child: Option<Child>,
}

impl Sshd {
    /// Make a host key, the principals file and a folder the login may write, then start sshd
    /// (the user CA it trusts is installed later with [`Sshd::trust`]; sshd reads it at login).
    pub fn start() -> Self {
        ensure_account();
        let dir = tempfile::Builder::new()
            .prefix("jitgate-it-sshd-")
            .tempdir()
            .expect("temp dir");
        let root = dir.path();
        // The login reads its principals file and writes into `files/`.
        fs::set_permissions(root, fs::Permissions::from_mode(0o755)).expect("chmod temp dir");
        fs::create_dir_all(root.join("principals")).expect("principals dir");
        fs::write(root.join("principals").join(LOGIN), format!("{LOGIN}\n")).expect("principals");
        let files = root.join("files");
        fs::create_dir_all(&files).expect("files dir");
        let (uid, gid) = login_ids();
        let out = Command::new("chown")
            .arg(format!("{uid}:{gid}"))
            .arg(&files)
            .output()
            .expect("run chown");
        assert!(out.status.success(), "chown {}", files.display());
        let key = root.join("hostkey");
        let out = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "", "-f"])
            .arg(&key)
            .output()
            .expect("run ssh-keygen");
        assert!(
            out.status.success(),
            "ssh-keygen: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let host_key = pub_key_line(&root.join("hostkey.pub"));
        let mut me = Self {
            dir,
            port: 0,
            host_key,
            child: None,
        };
        // Another process may take the port between asking and binding: try a few.
        for _ in 0..5 {
            if me.spawn(free_port()) {
                return me;
            }
        }
        panic!("sshd did not start; its log:\n{}", me.log());
    }

    /// Write the config for `port` and run sshd in the foreground; whether it listens.
    fn spawn(&mut self, port: u16) -> bool {
        let root = self.dir.path();
        let cfg = root.join("sshd_config");
        fs::write(
            &cfg,
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {key}\nPidFile {pid}\n\
                 TrustedUserCAKeys {ca}\nAuthorizedPrincipalsFile {root}/principals/%u\n\
                 AuthorizedKeysFile none\nPasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\nUsePAM no\nLogLevel VERBOSE\n\
                 Subsystem sftp internal-sftp\nAllowTcpForwarding yes\nStrictModes no\n",
                key = root.join("hostkey").display(),
                pid = root.join("sshd.pid").display(),
                ca = self.ca_path().display(),
                root = root.display(),
            ),
        )
        .expect("write sshd_config");
        let log = root.join("sshd.log");
        let _ = fs::remove_file(&log);
        let mut child = Command::new("/usr/sbin/sshd")
            .arg("-D")
            .arg("-f")
            .arg(&cfg)
            .arg("-E")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn /usr/sbin/sshd (install openssh-server)");
        let deadline = Instant::now() + START_TIMEOUT;
        let ready = format!("Server listening on 127.0.0.1 port {port}.");
        while Instant::now() < deadline {
            if self.log().contains(&ready) {
                self.port = port;
                self.child = Some(child);
                return true;
            }
            if let Ok(Some(_)) = child.try_wait() {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        false
    }

    /// Where sshd looks for the user CA it trusts.
    fn ca_path(&self) -> PathBuf {
        self.dir.path().join("trusted_user_ca.pub")
    }

    /// Trust the gateway's user CA (its `certs/ssh_user_ca.pub`), as an admin would.
    pub fn trust(&self, ca_pub: &Path) {
        fs::copy(ca_pub, self.ca_path())
            .unwrap_or_else(|e| panic!("copy {} into sshd: {e}", ca_pub.display()));
    }

    /// A folder on the target the login may write.
    pub fn files(&self) -> PathBuf {
        self.dir.path().join("files")
    }

    /// `127.0.0.1:PORT`.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// sshd's log.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("sshd.log")).unwrap_or_default()
    }

    /// A `[[targets]]` entry for this sshd, pinning `host_key`.
    pub fn target_toml(&self, name: &str, host_key: &str) -> String {
        format!(
            "[[targets]]\nname = \"{name}\"\nkind = \"ssh\"\naddress = \"{}\"\nhost_key = \"{host_key}\"\n",
            self.address()
        )
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `type base64` of an OpenSSH public key file (the comment dropped).
pub fn pub_key_line(path: &Path) -> String {
    let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ")
}
