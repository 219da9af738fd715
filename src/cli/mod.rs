//! The command line: one file per command group. Client commands talk to the API using
//! `JITGATE_URL`, `JITGATE_CA` and `JITGATE_API_KEY`, or without a key the credential that
//! `jitgate login` stored for that URL.

pub mod admin;
pub mod audit;
pub mod demo;
pub mod evidence;
pub mod login;
pub mod requests;
pub mod serve;
pub mod sessions;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use serde_json::Value;

use crate::client::{Answer, Client};
use crate::types::Secret;

/// jitgate: ticket-bound just-in-time privileged access.
#[derive(Debug, Parser)]
#[command(name = "jitgate", version, about, propagate_version = true)]
pub struct Cli {
    /// Configuration file.
    #[arg(
        long,
        global = true,
        default_value = "config/jitgate.toml",
        env = "JITGATE_CONFIG"
    )]
    pub config: PathBuf,
    /// Machine output: one JSON object (lists: an array) on stdout.
    #[arg(long, global = true)]
    pub json: bool,
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Human)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

/// How logs are written.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum LogFormat {
    Human,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create missing keys and certificates under certs/ (never overwrites); print target set-up lines.
    Init,
    /// Validate the configuration and policy; exit 1 with file:line and the reason on error.
    Check,
    /// Run the control-plane API (and, as they land, the SSH and HTTPS gateways).
    Serve,
    /// Gateway, built-in demo SSH target, demo users and an open ticket on loopback; prints what to type.
    Demo(demo::DemoArgs),
    /// Local ticket provider.
    #[command(subcommand)]
    Ticket(TicketCmd),
    /// Request one task on one target for a ticket.
    Request(requests::RequestArgs),
    /// List requests visible to you.
    Requests {
        /// Only pending requests.
        #[arg(long)]
        pending: bool,
    },
    /// Approve a pending request.
    Approve {
        id: String,
        #[arg(long)]
        comment: Option<String>,
    },
    /// Reject a pending request.
    Deny {
        id: String,
        #[arg(long)]
        reason: String,
    },
    /// Fetch your grant token (once).
    Token { id: String },
    /// End your own grant early.
    Done { id: String },
    /// End a grant now (request or grant id).
    Revoke {
        id: String,
        #[arg(long)]
        reason: String,
    },
    /// List grants visible to you.
    Grants {
        /// Only active grants.
        #[arg(long)]
        active: bool,
    },
    /// List sessions (live and ended), with filters.
    Sessions(sessions::SessionArgs),
    /// List the gateway nodes sharing the database, alive or not.
    Nodes,
    /// Apply the database migrations this jitgate needs (serve does too, at start).
    Migrate,
    /// Cut a live session now.
    Kill {
        session: String,
        #[arg(long)]
        reason: String,
    },
    /// Play a session's terminal recording with its timing.
    Replay {
        session: String,
        /// Playback speed (2 = twice as fast).
        #[arg(long, default_value_t = 1.0)]
        speed: f64,
        /// Cap pauses at this many seconds.
        #[arg(long)]
        max_idle: Option<f64>,
    },
    /// Emergency access: a grant at once, without approval, for break-glass tasks only.
    #[command(name = "break-glass")]
    BreakGlass {
        #[arg(long)]
        target: String,
        /// Why this cannot wait for an approval.
        #[arg(long)]
        reason: String,
        #[arg(long)]
        ticket: Option<String>,
        #[arg(long)]
        task: Option<String>,
        #[arg(long)]
        ttl: Option<String>,
    },
    /// Break-glass uses awaiting review, with their age.
    Reviews {
        /// Include completed reviews.
        #[arg(long)]
        all: bool,
    },
    /// Sign off a break-glass use (reviewers; never the user who broke glass).
    Review {
        id: String,
        #[arg(long)]
        notes: String,
    },
    /// Audit log tools.
    #[command(subcommand)]
    Audit(AuditCmd),
    /// Evidence bundles: one session's recording and audit trail, signed, verifiable offline.
    #[command(subcommand)]
    Evidence(EvidenceCmd),
    /// API key tools.
    #[command(subcommand, name = "api-key")]
    ApiKey(ApiKeyCmd),
    /// Sign the CLI in as yourself through the gateway's identity provider (opens a browser).
    Login {
        /// Print the sign-in address instead of opening a browser.
        #[arg(long)]
        no_browser: bool,
    },
    /// Revoke and forget the CLI's sign-in.
    Logout,
    /// Who the CLI is: user, roles, groups and how it signed in.
    Whoami,
    /// Make a one-time browser sign-in link for a user (admins; gateways without [oidc]).
    #[command(name = "sign-in-link")]
    SignInLink { user: String },
}

#[derive(Debug, Subcommand)]
pub enum TicketCmd {
    /// Open (or reopen) a ticket assigned to a user.
    Open {
        id: String,
        #[arg(long)]
        assignee: String,
        #[arg(long, default_value = "")]
        title: String,
    },
    /// Close a ticket: every grant on it is revoked.
    Close { id: String },
    /// Reassign a ticket: grants of the previous assignee are revoked.
    Assign {
        id: String,
        /// New assignee; omit to unassign.
        #[arg(long)]
        assignee: Option<String>,
    },
    /// Show a ticket.
    Show { id: String },
}

#[derive(Debug, Subcommand)]
pub enum AuditCmd {
    /// Check the chain and signatures; exit 1 and name the first bad record.
    Verify(audit::VerifyArgs),
    /// Write the whole chain, as the database holds it, to a JSONL file `audit verify --log`
    /// checks offline.
    Export(audit::ExportArgs),
}

#[derive(Debug, Subcommand)]
pub enum EvidenceCmd {
    /// Write one session's evidence bundle (recording, audit records, public key, signed manifest).
    Export(evidence::ExportArgs),
    /// Verify a bundle offline (no configuration, database or gateway); exit 1 naming what failed.
    Verify(evidence::VerifyArgs),
}

#[derive(Debug, Subcommand)]
pub enum ApiKeyCmd {
    /// Generate a new API key and print it with the api_key_sha256 line for the config.
    New,
}

/// Build the API client from the environment (and the config for defaults): the API key in
/// `JITGATE_API_KEY`, else the credential `jitgate login` stored for this URL.
pub fn client(cli: &Cli) -> Result<Client> {
    let (url, ca) = endpoint(cli)?;
    let key = std::env::var("JITGATE_API_KEY")
        .ok()
        .filter(|k| !k.is_empty())
        .or_else(|| login::stored(&url))
        .map(Secret::new);
    Ok(Client::new(&url, key, &ca)?)
}

/// The API's URL and the CA certificate (PEM) to trust for it.
pub fn endpoint(cli: &Cli) -> Result<(String, String)> {
    let url = match std::env::var("JITGATE_URL") {
        Ok(u) if !u.is_empty() => u,
        _ => default_url(&cli.config),
    };
    let ca_path = match std::env::var("JITGATE_CA") {
        Ok(p) if !p.is_empty() => PathBuf::from(p),
        _ => default_ca(&cli.config),
    };
    let ca = std::fs::read_to_string(&ca_path).with_context(|| {
        format!(
            "cannot read the CA certificate {} to trust the gateway; set JITGATE_CA to the gateway's certs/ca.pem",
            ca_path.display()
        )
    })?;
    Ok((url, ca))
}

fn default_url(config: &Path) -> String {
    crate::config::Config::load(config)
        .map(|c| {
            let a = c.gateway.api_listen;
            let host = if a.ip().is_unspecified() {
                "127.0.0.1".to_string()
            } else {
                a.ip().to_string()
            };
            if a.is_ipv6() {
                format!("https://[{host}]:{}", a.port())
            } else {
                format!("https://{host}:{}", a.port())
            }
        })
        .unwrap_or_else(|_| "https://127.0.0.1:8440".into())
}

fn default_ca(config: &Path) -> PathBuf {
    crate::config::Config::load(config)
        .map(|c| c.gateway.certs_dir.join(crate::pki::CA_BUNDLE))
        .unwrap_or_else(|_| PathBuf::from("certs").join(crate::pki::CA_BUNDLE))
}

/// A failed API call, carrying its status and JSON body for `--json` output.
#[derive(Debug)]
pub struct ApiFailure {
    pub status: u16,
    pub body: Value,
}

impl std::fmt::Display for ApiFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let msg = self
            .body
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or("the API refused the call");
        write!(f, "{msg}")
    }
}

impl std::error::Error for ApiFailure {}

/// Turn a non-2xx answer into an error.
pub fn expect_ok(a: Answer) -> Result<Value> {
    if a.ok() {
        Ok(a.body)
    } else {
        Err(ApiFailure {
            status: a.status,
            body: a.body,
        }
        .into())
    }
}

/// Print `v` as JSON, or `human` otherwise.
pub fn emit(cli: &Cli, v: &Value, human: impl FnOnce() -> String) {
    if cli.json {
        say(serde_json::to_string_pretty(v).expect("JSON values serialize"));
    } else {
        let text = human();
        if !text.is_empty() {
            say(text);
        }
    }
}

/// Print one line on stdout. When the reader has gone (`jitgate requests | head -n1`), the
/// command ends quietly, as any Unix tool does, instead of panicking in `println!`.
pub fn say(text: impl std::fmt::Display) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let written = writeln!(out, "{text}").and_then(|()| out.flush());
    if let Err(e) = written {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        // stdout is unusable (e.g. a full disk): say so once where it can still be seen.
        eprintln!("error: cannot write to standard output: {e}");
        std::process::exit(1);
    }
}

/// Print one line on stdout for a long-running command (`serve`, `demo`): a reader that has
/// gone must not stop the gateway.
pub fn say_or_ignore(text: impl std::fmt::Display) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{text}").and_then(|()| out.flush());
}

/// Percent-encode one path segment.
pub fn seg(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Run the parsed command.
pub async fn run(cli: Cli) -> Result<i32> {
    match &cli.command {
        Command::Init => admin::init(&cli),
        Command::Check => admin::check(&cli),
        Command::Serve => serve::serve(&cli).await,
        Command::Demo(args) => demo::demo(&cli, args).await,
        Command::ApiKey(ApiKeyCmd::New) => admin::api_key_new(&cli),
        Command::Login { no_browser } => login::login(&cli, *no_browser).await,
        Command::Logout => login::logout(&cli).await,
        Command::Whoami => login::whoami(&cli).await,
        Command::SignInLink { user } => login::sign_in_link(&cli, user).await,
        Command::Audit(AuditCmd::Verify(args)) => audit::verify(&cli, args).await,
        Command::Audit(AuditCmd::Export(args)) => audit::export(&cli, args).await,
        Command::Evidence(EvidenceCmd::Export(args)) => evidence::export(&cli, args).await,
        Command::Evidence(EvidenceCmd::Verify(args)) => evidence::verify(&cli, args),
        Command::Ticket(t) => requests::ticket(&cli, t).await,
        Command::Request(args) => requests::request(&cli, args).await,
        Command::Requests { pending } => requests::list(&cli, *pending).await,
        Command::Approve { id, comment } => requests::approve(&cli, id, comment.clone()).await,
        Command::Deny { id, reason } => requests::deny(&cli, id, reason).await,
        Command::Token { id } => requests::token(&cli, id).await,
        Command::Done { id } => requests::done(&cli, id).await,
        Command::Revoke { id, reason } => requests::revoke(&cli, id, reason).await,
        Command::Grants { active } => requests::grants(&cli, *active).await,
        Command::Sessions(args) => sessions::list(&cli, args).await,
        Command::Nodes => sessions::nodes(&cli).await,
        Command::Migrate => admin::migrate(&cli).await,
        Command::BreakGlass {
            target,
            reason,
            ticket,
            task,
            ttl,
        } => requests::break_glass(&cli, target, reason, ticket, task, ttl).await,
        Command::Reviews { all } => requests::reviews(&cli, *all).await,
        Command::Review { id, notes } => requests::review(&cli, id, notes).await,
        Command::Kill { session, reason } => sessions::kill(&cli, session, reason).await,
        Command::Replay {
            session,
            speed,
            max_idle,
        } => sessions::replay(&cli, session, *speed, *max_idle).await,
    }
}

/// The store the configuration names, read-only where it can be.
pub(crate) async fn open_store(
    cfg: &crate::config::Config,
) -> anyhow::Result<Box<dyn crate::store::Store>> {
    if cfg.is_cluster() {
        return Ok(Box::new(crate::store::postgres::PgStore::for_config(cfg)?));
    }
    let db = cfg.sqlite_path().unwrap_or_default();
    let store = crate::store::sqlite::SqliteStore::open_read_only(&db)?.ok_or_else(|| {
        anyhow::anyhow!(
            "no database at {}; has the gateway run with this configuration?",
            db.display()
        )
    })?;
    Ok(Box::new(store))
}
