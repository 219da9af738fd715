//! `jitgate demo`: the gateway, the built-in demo target, demo users and a ticket on loopback;
//! prints what to type.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Args;
use tokio_util::sync::CancellationToken;

use super::Cli;
use crate::demo::{
    CONSOLE_TARGET, CONSOLE_TASK, Demo, DemoInfo, DemoOptions, PRINCIPAL, TARGET, TASK, TICKET,
    USERS,
};

/// `jitgate demo` options.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Directory for the demo's configuration, keys, data and recordings (default: a new
    /// directory under the system's temporary directory). Reusing one keeps its history.
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Port of the control-plane API on 127.0.0.1 (0: any free port).
    #[arg(long, default_value_t = 0)]
    pub api_port: u16,
    /// Port of the SSH gateway on 127.0.0.1 (0: any free port).
    #[arg(long, default_value_t = 0)]
    pub ssh_port: u16,
    /// Port of the HTTPS gateway on 127.0.0.1 (0: any free port).
    #[arg(long, default_value_t = 0)]
    pub https_port: u16,
}

/// `jitgate demo`.
pub async fn demo(cli: &Cli, args: &DemoArgs) -> Result<i32> {
    let dir = match &args.dir {
        Some(d) => d.clone(),
        None => {
            let d =
                std::env::temp_dir().join(format!("jitgate-demo-{}", crate::types::random_id(8)));
            std::fs::create_dir(&d)
                .with_context(|| format!("cannot create the demo directory {}", d.display()))?;
            d
        }
    };
    let demo = match Demo::prepare(DemoOptions {
        dir,
        api_port: args.api_port,
        ssh_port: args.ssh_port,
        https_port: args.https_port,
    })
    .await
    {
        Ok(d) => d,
        Err(e) => {
            eprintln!("jitgate demo cannot start: {e}");
            return Ok(1);
        }
    };
    let exe = std::env::current_exe()
        .ok()
        .unwrap_or_else(|| PathBuf::from("jitgate"));
    if cli.json {
        let mut v = serde_json::to_value(&demo.info)?;
        v["binary"] = serde_json::json!(exe);
        super::say_or_ignore(v);
    } else {
        super::say_or_ignore(instructions(&demo.info, &exe));
    }
    tracing::info!(dir = %demo.info.dir.display(), api = %demo.info.api, ssh = %demo.info.ssh, "jitgate demo running");
    let shutdown = CancellationToken::new();
    {
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!("shutting down the demo");
            shutdown.cancel();
        });
    }
    demo.run(shutdown).await?;
    Ok(0)
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// `s` quoted for a POSIX shell where needed.
fn sh(s: &str) -> String {
    let safe = !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./:=@%+,".contains(&b));
    if safe {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

fn p(path: &Path) -> String {
    sh(&path.display().to_string())
}

/// The text a person reads: where everything is and the exact commands to run.
fn instructions(i: &DemoInfo, exe: &Path) -> String {
    let j = p(exe);
    let key = |user: &str| i.keys.get(user).map(|k| k.expose()).unwrap_or("");
    let users = USERS
        .iter()
        .map(|(n, r)| format!("{n} ({})", r.join(", ")))
        .collect::<Vec<_>>()
        .join(", ");
    let (alice, bob, admin) = (key("alice"), key("bob"), key("admin"));
    let port = i.ssh.port();
    let sftp = if i.sftp { ", sftp" } else { "" };
    let links: String = i
        .sign_in_links
        .iter()
        .map(|(n, l)| format!("  {n:<6} {}\n", l.expose()))
        .collect();
    format!(
        "\
jitgate demo is running; Ctrl-C stops it.

  API          {api}
  SSH gateway  {ssh}  (host key {fp})
  HTTPS gateway {https}
  {TARGET}     {target}  built-in SSH target, loopback only; trusts only this gateway's user CA
  {CONSOLE_TARGET} {console}  built-in admin web console, loopback only; demands a client certificate from this gateway's CA
  files        {dir}  (jitgate.toml, certs/, data/, recordings/)

Users (new API keys each run): {users}.

The web console is {api}/ . Sign in to it in a browser (trusting {ca}); each link works
once, for 30 minutes:
{links}
In the browser: alice opens Request access, picks {TARGET} and {TASK} for ticket {TICKET}, and
submits; bob (in another browser or a private window) approves it under Approvals; alice's
request page turns approved by itself, Reveal token shows her token once, with the ssh command
below; admin watches the session live under Sessions, kills it, and plays its recording.
For {CONSOLE_TARGET}, alice's approved request page has Open console.

Or the same from the command line:
Ticket {TICKET} is open and assigned to alice. Task {TASK} gives a shell on {TARGET} as
`{PRINCIPAL}` (pty, shell, exec{sftp}; at most 30m; one approval).

In another terminal:

export JITGATE_URL={api}
export JITGATE_CA={ca}
export JITGATE_CONFIG={config}

# 1. alice asks for a shell on {TARGET} for ticket {TICKET}; REQ holds the request id
REQ=$(JITGATE_API_KEY={alice} {j} request --task {TASK} --target {TARGET} --ticket {TICKET} --ttl 10m --reason \"demo: look around {TARGET}\" | head -n1); echo \"$REQ\"

# 2. bob approves it
JITGATE_API_KEY={bob} {j} approve \"$REQ\"

# 3. alice fetches her grant token (shown once)
JITGATE_API_KEY={alice} {j} token \"$REQ\"

# 4. alice connects and pastes the token at the `Grant token:` prompt
#    (the known_hosts file holds the gateway's host key, so there is nothing to trust blindly)
ssh -o UserKnownHostsFile={known_hosts} -p {port} alice@127.0.0.1

# 5. the web console: alice asks for task {CONSOLE_TASK} on {CONSOLE_TARGET}, bob approves, then
#    alice opens {https}/_jitgate/login in a browser (trusting {ca}) and pastes the token, or:
WREQ=$(JITGATE_API_KEY={alice} {j} request --task {CONSOLE_TASK} --target {CONSOLE_TARGET} --ticket {TICKET} --ttl 10m --reason \"demo: unlock dave\" | head -n1)
JITGATE_API_KEY={bob} {j} approve \"$WREQ\"
WTOKEN=$(JITGATE_API_KEY={alice} {j} token \"$WREQ\" | head -n1)
curl --cacert {ca} -H \"Authorization: Bearer $WTOKEN\" {https}/users
curl --cacert {ca} -H \"Authorization: Bearer $WTOKEN\" -X POST {https}/users/dave/unlock
curl --cacert {ca} -H \"Authorization: Bearer $WTOKEN\" -X POST {https}/users/dave/delete   # refused: not in the task

# Then, as admin: list sessions, cut the live one by closing its ticket, replay a recording,
# and check the signed audit log
JITGATE_API_KEY={admin} {j} sessions
JITGATE_API_KEY={admin} {j} ticket close {TICKET}
{j} replay ses_...
{j} audit verify
",
        api = i.api,
        ssh = i.ssh,
        fp = i.host_key_fingerprint,
        target = i.target_address,
        https = i.https,
        console = i.console_address,
        dir = p(&i.dir),
        ca = p(&i.ca),
        config = p(&i.config),
        known_hosts = p(&i.known_hosts),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_quoting() {
        assert_eq!(
            sh("/tmp/jitgate-demo-x/certs/ca.pem"),
            "/tmp/jitgate-demo-x/certs/ca.pem"
        );
        assert_eq!(sh("/tmp/a b"), "'/tmp/a b'");
        assert_eq!(sh("it's"), r"'it'\''s'");
        assert_eq!(sh(""), "''");
    }
}
