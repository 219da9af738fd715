//! `jitgate evidence export` and `jitgate evidence verify`: one session's recording and audit
//! trail in a signed archive that verifies offline.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use serde_json::{Value, json};

use super::{Cli, emit};
use crate::config::Config;
use crate::crypto::VerifyingKey;
use crate::evidence::{EvidenceError, RECORDING, Verified};
use crate::types::SessionId;

/// `jitgate evidence export SESSION -o FILE`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The session id (`ses_...`).
    pub session: String,
    /// Where to write the bundle (a tar archive).
    #[arg(short, long)]
    pub output: PathBuf,
    /// Export a session that is still live (its recording is not final).
    #[arg(long)]
    pub allow_live: bool,
}

/// `jitgate evidence verify FILE [--key PUB.pem]`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The bundle.
    pub file: PathBuf,
    /// The audit public key to pin (the gateway's certs/audit_ed25519.pub.pem, obtained
    /// separately). Without it the key inside the bundle is used, which proves nothing unless
    /// you compare its fingerprint.
    #[arg(long)]
    pub key: Option<PathBuf>,
}

/// `jitgate evidence export`: reads the configuration, the database (read-only) and the
/// recordings; works whether or not the gateway runs.
pub async fn export(cli: &Cli, args: &ExportArgs) -> Result<i32> {
    let sid = SessionId::parse(&args.session).with_context(|| {
        format!(
            "{} is not a session id (they look like ses_...); list them with `jitgate sessions`",
            args.session
        )
    })?;
    let cfg = Config::load(&cli.config).with_context(|| {
        "evidence export reads the configuration for the database, certs and recordings; pass --config"
    })?;
    // One node's SQLite (read-only), or the PostgreSQL several nodes share: any node exports.
    let store = super::open_store(&cfg).await?;
    let keys = crate::pki::Keys::load(&cfg.gateway.certs_dir)
        .context("evidence export signs with the audit key")?;
    let public_pem =
        std::fs::read_to_string(cfg.gateway.certs_dir.join(crate::pki::AUDIT_PUB)).ok();
    let e = crate::evidence::export(
        store.as_ref(),
        &cfg.gateway.recordings_dir,
        keys.audit_key(),
        public_pem.as_deref(),
        &sid,
        args.allow_live,
        &args.output,
    )
    .await?;
    let m = &e.manifest;
    let out = json!({
        "file": e.file,
        "session": m.session,
        "grant": m.grant,
        "request": m.request,
        "created_at": m.created_at,
        "live": e.live,
        "members": m.members,
        "audit_records": e.audit_records,
        "audit_public_key_sha256": m.audit_public_key_sha256,
    });
    emit(cli, &out, || {
        let files = m
            .members
            .iter()
            .filter_map(|x| x.path.strip_prefix(&format!("{RECORDING}/")))
            .collect::<Vec<_>>()
            .join(", ");
        let mut text = format!(
            "wrote evidence bundle {} for session {}: recording ({files}), {} audit records, \
             manifest signed by the audit key (SHA-256 of its PEM: {})",
            e.file.display(),
            m.session,
            e.audit_records,
            m.audit_public_key_sha256
        );
        if e.live {
            text.push_str("\nwarning: the session was live at export; its recording is not final");
        }
        text
    });
    Ok(0)
}

/// `jitgate evidence verify`: needs only the file (and the key to pin, if given).
pub fn verify(cli: &Cli, args: &VerifyArgs) -> Result<i32> {
    let pinned = match &args.key {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the public key {}", path.display()))?;
            Some(VerifyingKey::from_pem(&text).with_context(|| {
                format!(
                    "{} is not an audit public key (certs/audit_ed25519.pub.pem)",
                    path.display()
                )
            })?)
        }
        None => None,
    };
    let file = std::fs::File::open(&args.file)
        .with_context(|| format!("cannot open the bundle {}", args.file.display()))?;
    match crate::evidence::verify(std::io::BufReader::new(file), pinned.as_ref()) {
        Ok(v) => {
            let out = summary(args, &v);
            emit(cli, &out, || human(args, &v));
            Ok(0)
        }
        Err(EvidenceError::Rejected { member, reason }) => {
            if cli.json {
                let out = json!({
                    "ok": false,
                    "file": args.file,
                    "member": member,
                    "reason": reason,
                });
                emit(cli, &out, String::new);
            } else {
                eprintln!(
                    "evidence bundle {} is NOT valid: {member}: {reason}",
                    args.file.display()
                );
            }
            Ok(1)
        }
        Err(e) => Err(e.into()),
    }
}

fn summary(args: &VerifyArgs, v: &Verified) -> Value {
    let r = &v.recording;
    let m = &v.manifest;
    json!({
        "ok": true,
        "file": args.file,
        "session": m.session,
        "grant": m.grant,
        "request": m.request,
        "protocol": r.protocol,
        "user": r.user,
        "vendor": r.vendor,
        "target": r.target,
        "task": r.task,
        "ticket": r.ticket,
        "principal": r.principal,
        "approvers": r.approvers,
        "source": r.source,
        "started_at": r.started_at,
        "ended_at": r.ended_at,
        "end_reason": r.end_reason,
        "files": m.members.iter().filter(|x| x.path.starts_with(&format!("{RECORDING}/"))).collect::<Vec<_>>(),
        "audit_records": v.audit.len(),
        "audit_events": v.audit.iter().map(|(seq, event)| json!({"seq": seq, "event": event})).collect::<Vec<_>>(),
        "recording_in_audit": v.recording_in_audit,
        "key_pinned": v.key_pinned,
        "key_sha256": v.key_sha256,
        "created_at": m.created_at,
    })
}

fn human(args: &VerifyArgs, v: &Verified) -> String {
    let r = &v.recording;
    let m = &v.manifest;
    let mut lines = vec![format!(
        "evidence bundle {} ok: signed manifest and all {} members intact",
        args.file.display(),
        m.members.len()
    )];
    lines.push(format!(
        "  session {} ({}): user {}{}, target {}, task {}, ticket {}",
        m.session,
        r.protocol,
        r.user,
        r.vendor
            .as_ref()
            .map(|v| format!(" (vendor {v})"))
            .unwrap_or_default(),
        r.target,
        r.task,
        r.ticket
    ));
    lines.push(format!(
        "  request {}, grant {}, approved by {}",
        m.request,
        m.grant,
        if r.approvers.is_empty() {
            "nobody (break-glass)".to_string()
        } else {
            r.approvers.join(", ")
        }
    ));
    lines.push(format!(
        "  started {}, {}",
        r.started_at,
        match (&r.ended_at, &r.end_reason) {
            (Some(at), Some(why)) => format!("ended {at}: {why}"),
            (Some(at), None) => format!("ended {at}"),
            _ => "still live when exported (recording not final)".to_string(),
        }
    ));
    let files: Vec<String> = m
        .members
        .iter()
        .filter_map(|x| {
            x.path
                .strip_prefix(&format!("{RECORDING}/"))
                .map(|n| format!("{n} ({} bytes)", x.bytes))
        })
        .collect();
    lines.push(format!("  files: {}", files.join(", ")));
    let span = match (v.audit.first(), v.audit.last()) {
        (Some((a, _)), Some((b, _))) => format!(" (seq {a}..{b})"),
        _ => String::new(),
    };
    lines.push(format!(
        "  audit records: {}{span}, each hash and signature valid{}",
        v.audit.len(),
        if v.recording_in_audit {
            "; session.ended holds the recording's digests"
        } else {
            "; no session.ended record vouches for the recording"
        }
    ));
    if v.key_pinned {
        lines.push(format!(
            "  key: pinned ({}), SHA-256 {}",
            args.key
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            v.key_sha256
        ));
    } else {
        lines.push(format!(
            "  key: NOT pinned: checked with the key inside the bundle, SHA-256 {}; compare it \
             with `sha256sum certs/audit_ed25519.pub.pem` on the gateway, or pass --key",
            v.key_sha256
        ));
    }
    lines.push(format!("  exported {}", m.created_at));
    lines.join("\n")
}
