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
        node: r.node.clone(),
    };
    m.write(&live.dir)
}

/// The store's view of a session's files.
fn recorded(entries: &[FileEntry]) -> Vec<RecordedFile> {
    entries
        .iter()
        .map(|e| RecordedFile {
            name: e.name.clone(),
            sha256: e.sha256.clone(),
            bytes: e.bytes,
        })
        .collect()
}

/// A recording file's digest and size, read in blocks (a raw side file can be large); an
/// unreadable file gets an empty digest.
fn digest_file(path: &std::path::Path) -> (String, u64) {
    crate::recording::hash_file(path).unwrap_or_default()
}

impl Registry {
    /// Record the end of `live` once: store, manifest, audit, metrics. A call while another
    /// is recording it returns once that one has (so a tracked task waiting here keeps
    /// shutdown waiting for an end an untracked one is recording).
    pub(super) async fn finish(self: &Arc<Self>, live: &Arc<Live>) {
        let claimed = {
            let mut done = live.finished.lock().expect("finished lock");
            !std::mem::replace(&mut *done, true)
        };
        if !claimed {
            let _ = live.recorded.subscribe().wait_for(|r| *r).await;
            return;
        }
        // Other sessions' cuts first: this is file work, theirs is closing sockets.
        self.cut_landed(live);
        self.cuts.landed(super::CUTS_FIRST_MAX).await;
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
        // Digests and `session.json` are file work: the blocking pool does it, so a burst of
        // ending sessions does not stall the worker threads other sessions' cuts run on.
        let l = live.clone();
        let end_reason = ending.reason.clone();
        let end_cause = ending.cause.as_str();
        let record = tokio::task::spawn_blocking(move || {
            let infos = l.files.lock().expect("files lock").clone();
            let entries: Vec<FileEntry> = infos
                .iter()
                .map(|f| {
                    let (sha256, bytes) = digest_file(&l.dir.join(&f.name));
                    FileEntry {
                        name: f.name.clone(),
                        sha256,
                        bytes,
                        channel: f.channel,
                        kind: f.kind.clone(),
                        command: f.command.clone(),
                        binary: f.summary.as_ref().is_some_and(|s| s.binary),
                        output_bytes: f.summary.as_ref().map_or(0, |s| s.output_bytes),
                        input_bytes: f.summary.as_ref().map_or(0, |s| s.input_bytes),
                    }
                })
                .collect();
            let record = {
                let mut r = l.record.lock().expect("record lock");
                r.ended_at = Some(now());
                r.end_cause = Some(end_cause.into());
                r.end_reason = Some(end_reason);
                r.kill_latency_ms = latency.map(|l| l.as_millis() as u64);
                r.files = recorded(&entries);
                r.clone()
            };
            if let Err(e) = write_manifest(&l, Some(&entries)) {
                tracing::error!(session = %record.id, error = %e, "cannot write session.json");
            }
            record
        })
        .await
        .expect("the session's end record task does not panic");
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
        live.recorded.send_replace(true);
        tracing::info!(
            session = %record.id,
            cause = ending.cause.as_str(),
            reason = %ending.reason,
            kill_latency_ms = record.kill_latency_ms,
            "session ended"
        );
    }
}

impl Registry {
    /// After a crash: every session of this node the store still shows as live is ended with
    /// cause `restart`, its partial recordings are digested, `session.json` is completed and
    /// `session.ended` is audited. Returns how many sessions were closed.
    pub async fn recover(self: &Arc<Self>) -> Result<usize, crate::store::StoreError> {
        let me = self.node().map(str::to_string);
        self.close_orphans(
            me.as_deref(),
            "restart",
            "gateway restart: the gateway stopped while the session was live",
        )
        .await
    }

    /// End every session of `node` (of no node, on one node) that the store shows as live and
    /// this registry does not hold: with `cause` and `reason`, digests of whatever recordings
    /// can be read, `session.json` completed and `session.ended` audited. Returns how many.
    pub async fn close_orphans(
        self: &Arc<Self>,
        node: Option<&str>,
        cause: &str,
        reason: &str,
    ) -> Result<usize, crate::store::StoreError> {
        let stale = self
            .store
            .sessions(&crate::store::SessionFilter {
                live: Some(true),
                limit: Some(10_000),
                ..Default::default()
            })
            .await?;
        let mut n = 0;
        for mut rec in stale {
            if rec.node.as_deref() != node
                || self
                    .live
                    .lock()
                    .expect("registry lock")
                    .contains_key(&rec.id)
            {
                continue;
            }
            let dir = std::path::PathBuf::from(&rec.dir);
            let mut manifest = crate::recording::manifest::SessionManifest::read(&dir).ok();
            let mut names: Vec<String> = std::fs::read_dir(&dir)
                .map(|r| {
                    r.filter_map(|e| e.ok())
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .filter(|n| n.ends_with(".cast"))
                        .collect()
                })
                .unwrap_or_default();
            names.sort_by_key(|n| {
                n.trim_end_matches(".cast")
                    .parse::<u64>()
                    .unwrap_or(u64::MAX)
            });
            let entries: Vec<FileEntry> = names
                .iter()
                .map(|name| {
                    let (sha256, bytes) = digest_file(&dir.join(name));
                    let channel = name.trim_end_matches(".cast").parse().unwrap_or(0);
                    FileEntry {
                        name: name.clone(),
                        sha256,
                        bytes,
                        channel,
                        kind: "unknown".into(),
                        command: None,
                        binary: false,
                        output_bytes: 0,
                        input_bytes: 0,
                    }
                })
                .collect();
            let reason = reason.to_string();
            let ended = now();
            rec.ended_at = Some(ended);
            rec.end_cause = Some(cause.into());
            rec.end_reason = Some(reason.clone());
            rec.files = recorded(&entries);
            if let Some(m) = &mut manifest {
                m.ended_at = Some(rfc3339(ended));
                m.end_reason = Some(reason.clone());
                m.files = entries;
                if let Err(e) = m.write(&dir) {
                    tracing::error!(session = %rec.id, error = %e, "cannot complete session.json");
                }
            }
            self.store.put_session(&rec).await?;
            if let Err(e) = self
                .audit
                .record(
                    "system",
                    AuditEvent::SessionEnded {
                        session: rec.id.clone(),
                        grant: rec.grant.clone(),
                        request: rec.request.clone(),
                        cause: cause.into(),
                        reason,
                        duration_ms: ((ended - rec.started_at).max(0) as u64) * 1000,
                        bytes_in: rec.bytes_in,
                        bytes_out: rec.bytes_out,
                        recording: rec.files.clone(),
                        kill_latency_ms: None,
                    },
                )
                .await
            {
                tracing::error!(session = %rec.id, error = %e, "cannot audit a recovered session");
            }
            tracing::warn!(session = %rec.id, cause, "session the store showed live, and no node holds, closed");
            n += 1;
        }
        Ok(n)
    }
}
