//! `jitgate init`, `jitgate check` and `jitgate api-key new`: local administration.

use anyhow::{Context, Result};
use serde_json::json;

use super::{Cli, emit};
use crate::config::{Config, ConfigError};
use crate::policy::Engine;

/// `jitgate init`.
pub fn init(cli: &Cli) -> Result<i32> {
    // init works before the configuration is complete: read only what it needs.
    let (certs_dir, public_name) = match Config::load(&cli.config) {
        Ok(c) => (c.gateway.certs_dir.clone(), c.gateway.public_name.clone()),
        Err(ConfigError::Read { .. }) => {
            eprintln!(
                "note: {} not found; creating keys in ./certs for public name localhost",
                cli.config.display()
            );
            ("certs".into(), "localhost".to_string())
        }
        Err(e) => {
            eprintln!("{e}");
            eprintln!("fix the configuration, then run `jitgate init` again");
            return Ok(1);
        }
    };
    let report = crate::pki::init(&certs_dir, &public_name)
        .with_context(|| format!("cannot initialise {}", certs_dir.display()))?;
    let v = json!({
        "certs_dir": certs_dir,
        "created": report.created,
        "kept": report.kept,
        "warnings": report.warnings,
        "ssh_user_ca": report.ssh_user_ca_pub,
        "ca": report.ca_bundle,
        "audit_public_key": report.audit_pub,
    });
    emit(cli, &v, || {
        let mut s = String::new();
        for p in &report.created {
            s.push_str(&format!("created {}\n", p.display()));
        }
        for p in &report.kept {
            s.push_str(&format!(
                "kept    {} (exists; not overwritten)\n",
                p.display()
            ));
        }
        for w in &report.warnings {
            s.push_str(&format!("warning: {w}\n"));
        }
        s.push('\n');
        s.push_str(&report.target_setup());
        s
    });
    Ok(0)
}

/// `jitgate check`.
/// `jitgate migrate`: bring the PostgreSQL database's schema up to this jitgate's (SQLite
/// databases migrate when they are opened).
pub async fn migrate(cli: &Cli) -> Result<i32> {
    let cfg = Config::load(&cli.config)?;
    if !cfg.is_cluster() {
        let path = cfg.sqlite_path().unwrap_or_default();
        crate::store::sqlite::SqliteStore::open(&path)?;
        println!("{}: up to date", path.display());
        return Ok(0);
    }
    let applied = crate::store::postgres::PgStore::for_config(&cfg)?
        .migrate()
        .await?;
    println!(
        "{}: {applied} migration(s) applied, up to date",
        crate::store::redact_url(&cfg.store.url)
    );
    Ok(0)
}

pub fn check(cli: &Cli) -> Result<i32> {
    let mut problems: Vec<String> = Vec::new();
    let cfg = match Config::load(&cli.config) {
        Ok(c) => Some(c),
        Err(ConfigError::Invalid(p)) => {
            problems.extend(p.iter().map(|p| p.to_string()));
            None
        }
        Err(e) => {
            problems.push(e.to_string());
            None
        }
    };
    let mut policies = 0;
    if let Some(cfg) = &cfg {
        match Engine::load(cfg) {
            Ok(e) => policies = e.len(),
            Err(p) => problems.extend(p.iter().map(|p| p.to_string())),
        }
        let example = cfg.users_with_example_keys();
        if let Some(why) = cfg.example_keys_exposed() {
            problems.push(why);
        } else if !example.is_empty() && !cli.json {
            let names: Vec<&str> = example.iter().map(|u| u.as_str()).collect();
            eprintln!(
                "warning: {} use the published example API keys; replace them with `jitgate api-key new`",
                names.join(", ")
            );
        }
        problems.extend(cfg.nobody_can_sign_in());
        if let Err(e) = cfg.webhook_secret() {
            problems.push(format!("{}: {e}", cfg.source.display()));
        }
        match cfg.metrics_token() {
            Err(e) => problems.push(format!("{}: {e}", cfg.source.display())),
            Ok(_) => problems.extend(cfg.metrics_exposed()),
        }
    }
    let ok = problems.is_empty();
    let v = json!({
        "ok": ok,
        "config": cli.config,
        "problems": problems,
        "users": cfg.as_ref().map(|c| c.users.len()),
        "targets": cfg.as_ref().map(|c| c.targets.len()),
        "tasks": cfg.as_ref().map(|c| c.tasks.len()),
        "policies": policies,
        "sign_in": cfg.as_ref().map(|c| c.identity_rule()),
    });
    if cli.json {
        emit(cli, &v, String::new);
    } else if ok {
        let c = cfg.as_ref().expect("ok implies a config");
        super::say(format!(
            "{}: ok ({} users, {} targets, {} tasks, {} policies)",
            cli.config.display(),
            c.users.len(),
            c.targets.len(),
            c.tasks.len(),
            policies
        ));
        super::say(c.identity_rule());
    } else {
        for p in &problems {
            eprintln!("{p}");
        }
    }
    Ok(if ok { 0 } else { 1 })
}

/// `jitgate api-key new`.
pub fn api_key_new(cli: &Cli) -> Result<i32> {
    let key = format!("jgk_{}", crate::types::random_id(40));
    let hash = crate::crypto::sha256_hex(key.as_bytes());
    let v = json!({ "api_key": key, "api_key_sha256": hash });
    emit(cli, &v, || {
        format!(
            "API key (give it to the user; it is not stored anywhere):\n  {key}\n\nAdd to the user's [[users]] entry:\n  api_key_sha256 = \"{hash}\""
        )
    });
    Ok(0)
}
