//! `jitgate audit verify`: check the audit log's chain, hashes, signatures and tail, offline.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use serde_json::json;

use super::{Cli, emit};
use crate::config::Config;
use crate::crypto::VerifyingKey;
use crate::store::Store;
use crate::store::sqlite::SqliteStore;

/// Where to find the log and key; defaults come from the configuration.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The audit log (default: <data_dir>/audit.jsonl).
    #[arg(long)]
    pub log: Option<PathBuf>,
    /// The audit public key PEM (default: <certs_dir>/audit_ed25519.pub.pem).
    #[arg(long)]
    pub key: Option<PathBuf>,
    /// The database holding the log's head, to catch a cut tail (default: from store.url).
    #[arg(long)]
    pub db: Option<PathBuf>,
}

/// Where `audit export` writes.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The file to write (replaced atomically).
    #[arg(short = 'o', long = "output")]
    pub output: PathBuf,
}

/// Write every audit record `store` indexes, in order, to `out` (a temp file renamed into
/// place); how many.
async fn write_chain(store: &dyn Store, out: &std::path::Path) -> Result<u64> {
    use std::io::Write as _;
    let tmp = out.with_extension("jsonl.tmp");
    let mut f = std::io::BufWriter::new(
        std::fs::File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?,
    );
    let (mut after, mut n) = (0u64, 0u64);
    loop {
        let page = store
            .audit(&crate::store::AuditFilter {
                after_seq: Some(after),
                limit: Some(10_000),
                ..Default::default()
            })
            .await?;
        let Some(last) = page.last() else { break };
        after = last.seq;
        for e in &page {
            writeln!(f, "{}", e.record)?;
            n += 1;
        }
    }
    f.into_inner()
        .map_err(|e| e.into_error())?
        .sync_all()
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, out).with_context(|| format!("cannot write {}", out.display()))?;
    Ok(n)
}

/// `jitgate audit export -o FILE`.
pub async fn export(cli: &Cli, args: &ExportArgs) -> Result<i32> {
    let cfg = Config::load(&cli.config)?;
    let store = super::open_store(&cfg).await?;
    let n = write_chain(store.as_ref(), &args.output).await?;
    emit(cli, &json!({ "records": n, "output": args.output }), || {
        format!("{n} audit records written to {}", args.output.display())
    });
    Ok(0)
}

/// `jitgate audit verify`.
pub async fn verify(cli: &Cli, args: &VerifyArgs) -> Result<i32> {
    let cfg = if args.log.is_some() && args.key.is_some() {
        Config::load(&cli.config).ok()
    } else {
        Some(Config::load(&cli.config).with_context(
            || "cannot load the configuration; pass --log and --key to verify without it",
        )?)
    };
    // Several nodes: the chain is the database's, checked where it lies.
    let cluster = cfg
        .as_ref()
        .filter(|c| c.is_cluster() && args.log.is_none());
    let key_path = args
        .key
        .clone()
        .or_else(|| {
            cfg.as_ref()
                .map(|c| c.gateway.certs_dir.join(crate::pki::AUDIT_PUB))
        })
        .expect("key path from args or config");
    let key_text = std::fs::read_to_string(&key_path)
        .with_context(|| format!("cannot read the audit public key {}", key_path.display()))?;
    let key = VerifyingKey::from_pem(&key_text)
        .with_context(|| format!("{} is not an audit public key", key_path.display()))?;
    let (log, v) = match cluster {
        Some(c) => {
            let store = super::open_store(c).await?;
            let v = crate::audit::verify_store(store.as_ref(), &key).await?;
            (PathBuf::from(crate::store::redact_url(&c.store.url)), v)
        }
        None => {
            let log = args
                .log
                .clone()
                .or_else(|| {
                    cfg.as_ref()
                        .map(|c| c.gateway.data_dir.join(crate::audit::LOG_FILE))
                })
                .expect("log path from args or config");
            let db = args
                .db
                .clone()
                .or_else(|| cfg.as_ref().and_then(|c| c.sqlite_path()));
            let head = match db {
                Some(db) => match SqliteStore::open_read_only(&db)? {
                    Some(store) => store.audit_head().await?,
                    None => None,
                },
                None => None,
            };
            let v = crate::audit::verify(&log, &key, head)
                .with_context(|| format!("cannot read the audit log {}", log.display()))?;
            (log, v)
        }
    };
    let out = json!({
        "ok": v.ok,
        "log": log,
        "records": v.records,
        "head_checked": v.head_checked,
        "first_bad": v.first_bad,
    });
    if v.ok {
        emit(cli, &out, || {
            format!(
                "audit log {} ok: {} records, chain and signatures valid{}",
                log.display(),
                v.records,
                if v.head_checked {
                    ", tail matches the database"
                } else {
                    " (no database head to compare the tail with)"
                }
            )
        });
        Ok(0)
    } else {
        let bad = v.first_bad.as_ref().expect("not ok implies a bad record");
        if cli.json {
            emit(cli, &out, String::new);
        } else {
            eprintln!(
                "audit log {} is NOT intact: first bad record at line {}{}: {}",
                log.display(),
                bad.line,
                bad.seq.map(|s| format!(" (seq {s})")).unwrap_or_default(),
                bad.reason
            );
        }
        Ok(1)
    }
}
