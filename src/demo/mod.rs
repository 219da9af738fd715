//! `jitgate demo`: a self-contained gateway on loopback with demo users, an open ticket and a
//! built-in SSH target (`demo-box`) that trusts only the gateway's user CA.
//!
//! Everything lives in one directory: `jitgate.toml` (generated, fresh API keys each run),
//! `certs/` (as `jitgate init` makes it), `data/` (database, audit log), `recordings/`,
//! `known_hosts` (the gateway's host key, so `ssh` needs no trust on first use) and `demo-box/`
//! (the target's host key and home directory). Running it again on the same directory keeps
//! keys, audit log and history and issues new API keys.
//!
//! This file prepares the directory and runs everything; `gateway_config` writes `jitgate.toml`;
//! [`target`] is `demo-box` (its listener and connections), [`cert`] what it accepts and
//! [`shell`] what runs on its channels; [`console`] is the demo admin console. Both demo servers
//! use the gateway's accept loop ([`crate::net::accept_loop`]).

pub mod cert;
pub mod console;
mod gateway_config;
pub mod shell;
pub mod target;

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use russh::keys::ssh_key::{HashAlg, LineEnding, PublicKey};
use russh::keys::{Algorithm, PrivateKey};
use serde::Serialize;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{Config, ConfigError};
use crate::server::{Listeners, Runtime, ServerError};
use crate::store::TicketState;
use crate::types::{Secret, TicketRef, UserName};

use gateway_config::{ConfigInput, config_text};
use target::{DemoTarget, TargetSettings};

/// The demo ticket, opened for alice.
pub const TICKET: &str = "DEMO-1";
/// The built-in target's name.
pub const TARGET: &str = "demo-box";
/// The task that gives a shell on it.
pub const TASK: &str = "demo-shell";
/// The demo admin console's target name.
pub const CONSOLE_TARGET: &str = "demo-console";
/// The task that unlocks accounts in the demo console.
pub const CONSOLE_TASK: &str = "unlock-account";
/// The login on the target (the task's principal).
pub const PRINCIPAL: &str = "demo";
/// The demo users and their roles.
pub const USERS: [(&str, &[&str]); 3] = [
    ("alice", &["technician"]),
    ("bob", &["approver"]),
    ("admin", &["admin", "reviewer"]),
];
/// How long the demo target waits for its connections at shutdown.
const TARGET_GRACE: Duration = Duration::from_secs(3);

/// Why the demo could not start.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("cannot {what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "cannot listen on 127.0.0.1:{port} for the {what}: {source}; choose another port with {flag} (0 picks a free one)"
    )]
    Bind {
        what: &'static str,
        port: u16,
        flag: &'static str,
        source: std::io::Error,
    },
    #[error("cannot prepare the demo target's host key: {0}")]
    HostKey(String),
    #[error(transparent)]
    Pki(#[from] crate::pki::PkiError),
    #[error("the generated configuration {} is invalid: {problems}", path.display())]
    Config { problems: String, path: PathBuf },
    #[error(transparent)]
    Server(#[from] ServerError),
    #[error("cannot open ticket {TICKET}: {0}")]
    Ticket(String),
    #[error("cannot prepare the demo admin console: {0}")]
    Console(String),
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> DemoError + 'a {
    move |source| DemoError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// Where and on which ports to run.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    pub dir: PathBuf,
    pub api_port: u16,
    pub ssh_port: u16,
    pub https_port: u16,
}

/// What the demo prints (`--json` prints exactly this).
#[derive(Debug, Clone, Serialize)]
pub struct DemoInfo {
    /// API base URL (`JITGATE_URL`).
    pub api: String,
    /// The SSH gateway's address.
    pub ssh: SocketAddr,
    /// The demo target's address (loopback only).
    pub target_address: SocketAddr,
    /// The HTTPS gateway's base URL.
    pub https: String,
    /// The demo admin console's address (loopback only; demands jitgate client certificates).
    pub console_address: SocketAddr,
    pub dir: PathBuf,
    pub config: PathBuf,
    /// The CA clients trust (`JITGATE_CA`).
    pub ca: PathBuf,
    pub recordings: PathBuf,
    pub audit_log: PathBuf,
    pub audit_key: PathBuf,
    /// A known_hosts file holding the gateway's host key.
    pub known_hosts: PathBuf,
    pub host_key_fingerprint: String,
    pub ticket: &'static str,
    pub target: &'static str,
    pub task: &'static str,
    pub principal: &'static str,
    /// Whether the task allows sftp (the target found OpenSSH's `sftp-server`).
    pub sftp: bool,
    /// Each demo user's API key (fresh each run).
    #[serde(serialize_with = "expose_keys")]
    pub keys: BTreeMap<String, Secret>,
    /// One-time browser sign-in links for alice, bob and admin (each works once, 30 minutes).
    #[serde(serialize_with = "expose_keys")]
    pub sign_in_links: BTreeMap<String, Secret>,
}

fn expose_keys<S: serde::Serializer>(
    keys: &BTreeMap<String, Secret>,
    s: S,
) -> Result<S::Ok, S::Error> {
    s.collect_map(keys.iter().map(|(k, v)| (k, v.expose())))
}

/// A prepared demo: configuration written, keys made, ticket open, listeners bound.
pub struct Demo {
    pub info: DemoInfo,
    runtime: Runtime,
    api: TcpListener,
    ssh: TcpListener,
    https: TcpListener,
    metrics: TcpListener,
    target: Arc<DemoTarget>,
    target_listener: TcpListener,
    console: Arc<console::DemoConsole>,
    console_listener: TcpListener,
}

impl std::fmt::Debug for Demo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Demo")
            .field("dir", &self.info.dir)
            .finish_non_exhaustive()
    }
}

async fn bind(port: u16, what: &'static str, flag: &'static str) -> Result<TcpListener, DemoError> {
    TcpListener::bind(("127.0.0.1", port))
        .await
        .map_err(|source| DemoError::Bind {
            what,
            port,
            flag,
            source,
        })
}

fn local(l: &TcpListener) -> Result<SocketAddr, DemoError> {
    l.local_addr().map_err(|source| DemoError::Bind {
        what: "listener",
        port: 0,
        flag: "--api-port/--ssh-port",
        source,
    })
}

fn mkdir(path: &Path) -> Result<(), DemoError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(io("create directory", path))
}

/// Write `contents` to `path` with `mode` (replacing it).
fn write(path: &Path, contents: &[u8], mode: u32) -> Result<(), DemoError> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .map_err(io("write", path))?;
    f.write_all(contents).map_err(io("write", path))
}

/// OpenSSH's `sftp-server`, where the distribution puts it.
fn find_sftp_server() -> Option<PathBuf> {
    [
        "/usr/lib/openssh/sftp-server",
        "/usr/libexec/openssh/sftp-server",
        "/usr/lib/ssh/sftp-server",
        "/usr/libexec/sftp-server",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.is_file())
}

/// Load the target's host key from `path`, or create it.
fn target_host_key(path: &Path) -> Result<PrivateKey, DemoError> {
    if let Ok(text) = fs::read_to_string(path) {
        return PrivateKey::from_openssh(&text)
            .map_err(|e| DemoError::HostKey(format!("{}: {e}", path.display())));
    }
    let mut key = PrivateKey::random(&mut rand::rng(), Algorithm::Ed25519)
        .map_err(|e| DemoError::HostKey(e.to_string()))?;
    key.set_comment("demo-box host key");
    let pem = key
        .to_openssh(LineEnding::LF)
        .map_err(|e| DemoError::HostKey(e.to_string()))?;
    write(path, pem.as_bytes(), 0o600)?;
    Ok(key)
}

/// The public half as an OpenSSH line without a comment.
fn key_line(key: &PublicKey) -> String {
    PublicKey::from(key.key_data().clone())
        .to_openssh()
        .unwrap_or_default()
}

const BASHRC: &str = "\
# demo-box: written by `jitgate demo`.
PS1='demo-box$ '
";

const WELCOME: &str = "\
This is demo-box, the SSH target built into `jitgate demo`.

You reached it through the jitgate gateway, which logged in here with an OpenSSH user
certificate it minted for this one session: principal `demo`, valid until your grant expires,
its key id naming the session, grant, user and ticket. demo-box accepts nothing else.

Everything you type and see is recorded (asciicast v2) under the demo's recordings/ folder.
Try closing the ticket (`jitgate ticket close DEMO-1` as admin) while this shell is open.

demo-box listens on 127.0.0.1 only and runs shells as the user who started `jitgate demo`.
";

impl Demo {
    /// Write the configuration and keys into `opts.dir`, bind the listeners, open the runtime
    /// and the demo ticket.
    pub async fn prepare(opts: DemoOptions) -> Result<Demo, DemoError> {
        let dir = std::path::absolute(&opts.dir).map_err(io("resolve", &opts.dir))?;
        mkdir(&dir)?;
        for sub in ["data", "recordings", "demo-box/home"] {
            mkdir(&dir.join(sub))?;
        }
        let api = bind(opts.api_port, "control-plane API", "--api-port").await?;
        let ssh = bind(opts.ssh_port, "SSH gateway", "--ssh-port").await?;
        let https = bind(opts.https_port, "HTTPS gateway", "--https-port").await?;
        let metrics = bind(0, "metrics", "--api-port").await?;
        let target_listener = bind(0, "demo target", "--ssh-port").await?;
        let console_listener = bind(0, "demo console", "--https-port").await?;
        let (https_addr, console_addr) = (local(&https)?, local(&console_listener)?);
        let (api_addr, ssh_addr, target_addr) =
            (local(&api)?, local(&ssh)?, local(&target_listener)?);

        let host_key = target_host_key(&dir.join("demo-box/ssh_host_ed25519_key"))?;
        let home = dir.join("demo-box/home");
        write(&home.join(".bashrc"), BASHRC.as_bytes(), 0o644)?;
        write(&home.join("README.txt"), WELCOME.as_bytes(), 0o644)?;
        let sftp_server = find_sftp_server();

        let mut keys = BTreeMap::new();
        let mut hashes = Vec::new();
        for (name, roles) in USERS {
            let key = format!("jgk_{}", crate::types::random_id(40));
            hashes.push((
                name.to_string(),
                crate::crypto::sha256_hex(key.as_bytes()),
                roles,
            ));
            keys.insert(name.to_string(), Secret::new(key));
        }
        // The gateway's CA must exist before the console can trust it.
        let certs_dir = dir.join("certs");
        crate::pki::init(&certs_dir, "localhost")?;
        let gateway_ca = std::fs::read_to_string(certs_dir.join(crate::pki::CA_BUNDLE))
            .map_err(io("read", &certs_dir))?;
        let (console, console_ca) =
            console::prepare(&dir.join("demo-console"), &gateway_ca).map_err(DemoError::Console)?;
        let config_path = dir.join("jitgate.toml");
        let text = config_text(&ConfigInput {
            api: api_addr,
            ssh: ssh_addr,
            https: https_addr,
            metrics: local(&metrics)?,
            console: console_addr,
            console_ca: &console_ca,
            target: target_addr,
            target_host_key: &key_line(host_key.public_key()),
            key_hashes: &hashes,
            webhook_secret: &crate::types::random_id(32),
            sftp: sftp_server.is_some(),
        });
        write(&config_path, text.as_bytes(), 0o600)?;
        let cfg = match Config::from_text(&text, &config_path) {
            Ok(c) => c,
            Err(ConfigError::Invalid(p)) => {
                let msg = p.iter().map(|p| p.to_string()).collect::<Vec<_>>();
                return Err(DemoError::Config {
                    problems: msg.join("; "),
                    path: config_path,
                });
            }
            Err(e) => {
                return Err(DemoError::Config {
                    problems: e.to_string(),
                    path: config_path,
                });
            }
        };
        let init = crate::pki::init(&cfg.gateway.certs_dir, &cfg.gateway.public_name)?;
        let runtime = Runtime::open(cfg, &text).await?;
        open_ticket(&runtime).await?;
        let mut sign_in_links = BTreeMap::new();
        for name in ["alice", "bob", "admin"] {
            let user = name.parse().expect("demo user names are valid");
            let token = runtime
                .identity
                .link(&user)
                .await
                .map_err(|r| DemoError::Config {
                    problems: r.0,
                    path: config_path.clone(),
                })?;
            sign_in_links.insert(
                name.to_string(),
                Secret::new(format!("https://{api_addr}/auth/link?token={token}")),
            );
        }

        let gateway_key = runtime.keys.ssh_host_key().public_key().clone();
        let known_hosts = dir.join("known_hosts");
        write(
            &known_hosts,
            format!(
                "[127.0.0.1]:{} {}\n",
                ssh_addr.port(),
                key_line(&gateway_key)
            )
            .as_bytes(),
            0o644,
        )?;
        let target = DemoTarget::new(TargetSettings {
            host_key,
            user_ca: runtime.keys.ssh_user_ca().public_key().clone(),
            principal: PRINCIPAL.into(),
            home,
            shell: ["/bin/bash", "/bin/sh"]
                .iter()
                .map(PathBuf::from)
                .find(|p| p.is_file())
                .unwrap_or_else(|| "/bin/sh".into()),
            prompt: "demo-box$ ".into(),
            sftp_server: sftp_server.clone(),
            auth_timeout: target::AUTH_TIMEOUT,
        });
        let info = DemoInfo {
            api: format!("https://{api_addr}"),
            ssh: ssh_addr,
            target_address: target_addr,
            https: format!("https://{https_addr}"),
            console_address: console_addr,
            config: config_path,
            ca: init.ca_bundle,
            recordings: runtime.cfg.gateway.recordings_dir.clone(),
            audit_log: runtime.cfg.gateway.data_dir.join("audit.jsonl"),
            audit_key: init.audit_pub,
            known_hosts,
            host_key_fingerprint: gateway_key.fingerprint(HashAlg::Sha256).to_string(),
            dir,
            ticket: TICKET,
            target: TARGET,
            task: TASK,
            principal: PRINCIPAL,
            sftp: sftp_server.is_some(),
            keys,
            sign_in_links,
        };
        Ok(Demo {
            info,
            runtime,
            api,
            ssh,
            https,
            metrics,
            target,
            target_listener,
            console,
            console_listener,
        })
    }

    /// Serve the gateway and the demo target until `shutdown`, then stop both (bounded).
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), DemoError> {
        let tracker = TaskTracker::new();
        let target_stop = CancellationToken::new();
        tracker.spawn(self.target.serve(
            self.target_listener,
            target_stop.clone(),
            tracker.clone(),
        ));
        tracker.spawn(self.console.clone().serve(
            self.console_listener,
            target_stop.clone(),
            tracker.clone(),
        ));
        let served = self
            .runtime
            .serve(
                Listeners {
                    api: self.api,
                    ssh: Some(self.ssh),
                    https: Some(self.https),
                    metrics: Some(self.metrics),
                },
                shutdown,
            )
            .await;
        // The gateway has cut and recorded its sessions; now the target goes.
        target_stop.cancel();
        tracker.close();
        if tokio::time::timeout(TARGET_GRACE, tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!("demo-box did not finish within the shutdown grace period");
        }
        Ok(served?)
    }
}

/// Open DEMO-1 for alice (or leave it as it is when a previous run already did).
async fn open_ticket(runtime: &Runtime) -> Result<(), DemoError> {
    let fail = |e: &dyn std::fmt::Display| DemoError::Ticket(e.to_string());
    let id: TicketRef = TICKET.parse().map_err(|e: String| fail(&e))?;
    let alice: UserName = "alice".parse().map_err(|e: String| fail(&e))?;
    let tickets = runtime.grants.tickets();
    match tickets.get(&id).await {
        Ok(t) if t.state == TicketState::Open && t.assignee.as_ref() == Some(&alice) => Ok(()),
        Ok(t) if t.state == TicketState::Open => {
            let change = tickets
                .assign("system", id, Some(alice))
                .await
                .map_err(|e| fail(&e))?;
            runtime
                .grants
                .ticket_changed(&change)
                .await
                .map_err(|e| fail(&e))?;
            Ok(())
        }
        _ => {
            tickets
                .open(
                    "system",
                    id,
                    alice,
                    "Demo: have a look around demo-box".into(),
                )
                .await
                .map_err(|e| fail(&e))?;
            Ok(())
        }
    }
}
