//! Recording a session's end: file digests, `session.json`, the store, `session.ended`, metrics.

use std::sync::Arc;
use std::time::Instant;

use super::{Cause, Live, Registry};
use crate::audit::AuditEvent;
use crate::recording::manifest::{FileEntry, SessionManifest};
use crate::store::RecordedFile;
use crate::types::{now, rfc3339};

/// Write `session.json` for `live`, with the end when given.
pub(super) fn write_manifest(live: &Live, files: Option<&[FileEntry]>) -> std::io::Result<()> {
    let r = live.record.lock().expect("record lock").clone();
    let m = SessionManifest {
        session: r.id.to_string(),
        protocol: r.protocol.clone(),
        user: r.user.to_string(),
        vendor: r.vendor.clone(),
        grant: r.grant.to_string(),
        request: r.request.to_string(),
        ticket: r.ticket.to_string(),
        task: r.task.to_string(),
        target: r.target.to_string(),
        principal: r.principal.clone(),
        approvers: r.approvers.iter().map(|a| a.to_string()).collect(),
        source: r.source.clone(),
        started_at: rfc3339(r.started_at),
        ended_at: r.ended_at.map(rfc3339),
        end_reason: r.end_reason.clone(),
        files: files.map(<[FileEntry]>::to_vec).unwrap_or_default(),
        events: live.events.lock().expect("events lock").clone(),
    };
    m.write(&live.dir)
}

fn digest_file(path: &std::path::Path) -> (String, u64) {
    match std::fs::read(path) {
        Ok(bytes) => (crate::crypto::sha256_hex(&bytes), bytes.len() as u64),
        Err(_) => (String::new(), 0),
    }
}

impl Registry {
    /// Record the end of `live` once: store, manifest, audit, metrics.
    pub(super) async fn finish(self: &Arc<Self>, live: &Arc<Live>) {
        {
            let mut done = live.finished.lock().expect("finished lock");
            if *done {
                return;
            }
            *done = true;
        }
        let ending = live
            .ending
            .lock()
            .expect("ending lock")
            .clone()
            .unwrap_or(super::Ending {
                cause: Cause::Error,
                reason: "ended without a reason".into(),
                trigger: Instant::now(),
            });
        let closed_at = *live.closed_at.lock().expect("closed lock");
        let latency = match (ending.cause.is_cut(), closed_at) {
            (true, Some(c)) => Some(c.saturating_duration_since(ending.trigger)),
            _ => None,
        };
        if let Some(l) = latency {
            self.metrics.kill_latency(l.as_secs_f64());
        }
        let infos = live.files.lock().expect("files lock").clone();
        let entries: Vec<FileEntry> = infos
            .iter()
            .map(|f| {
                let (sha256, bytes) = digest_file(&live.dir.join(&f.name));
                FileEntry {
                    name: f.name.clone(),
                    sha256,
                    bytes,
                    channel: f.channel,
                    kind: f.kind.clone(),
                    command: f.command.clone(),
                    binary: false,
                    output_bytes: 0,
                    input_bytes: 0,
                }
            })
            .collect();
        let record = {
            let mut r = live.record.lock().expect("record lock");
            r.ended_at = Some(now());
            r.end_cause = Some(ending.cause.as_str().into());
            r.end_reason = Some(ending.reason.clone());
            r.kill_latency_ms = latency.map(|l| l.as_millis() as u64);
            r.files = entries
                .iter()
                .map(|e| RecordedFile {
                    name: e.name.clone(),
                    sha256: e.sha256.clone(),
                    bytes: e.bytes,
                })
                .collect();
            r.clone()
        };
        if let Err(e) = write_manifest(live, Some(&entries)) {
            tracing::error!(session = %record.id, error = %e, "cannot write session.json");
        }
        if let Err(e) = self.store.put_session(&record).await {
            tracing::error!(session = %record.id, error = %e, "cannot store the session's end");
        }
        if let Err(e) = self
            .audit
            .record(
                "system",
                AuditEvent::SessionEnded {
                    session: record.id.clone(),
                    grant: record.grant.clone(),
                    request: record.request.clone(),
                    cause: ending.cause.as_str().into(),
                    reason: ending.reason.clone(),
                    duration_ms: live.started.elapsed().as_millis() as u64,
                    bytes_in: record.bytes_in,
                    bytes_out: record.bytes_out,
                    recording: record.files.clone(),
                    kill_latency_ms: record.kill_latency_ms,
                },
            )
            .await
        {
            tracing::error!(session = %record.id, error = %e, "cannot audit the session's end");
        }
        self.live.lock().expect("registry lock").remove(&record.id);
        tracing::info!(
            session = %record.id,
            cause = ending.cause.as_str(),
            reason = %ending.reason,
            kill_latency_ms = record.kill_latency_ms,
            "session ended"
        );
    }
}
