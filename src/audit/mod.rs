//! The audit log: typed [`AuditEvent`]s appended to a hash-chained, Ed25519-signed JSONL file and
//! indexed in the store, and [`verify`] which checks a log offline.
//!
//! Each line is one JSON object with `seq`, `ts`, `event`, `actor`, the event's fields, `prev`
//! (the previous record's hash), `hash` (SHA-256 over the canonical JSON of every other field) and
//! `sig` (Ed25519 over the hash bytes, base64). The store keeps the last `(seq, hash)` so that a
//! cut tail is caught too.

pub mod flood;
mod log;
#[cfg(test)]
mod tests;
mod verify;

pub use log::{Appended, Log};
pub use verify::{BadRecord, Verification, verify, verify_store};

use std::path::PathBuf;

use base64::Engine;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::crypto::VerifyingKey;
use crate::store::StoreError;
use crate::types::{
    GrantId, RequestId, SessionId, TargetName, TaskName, TicketRef, Ttl, UnixTime, UserName,
};

/// File name of the log inside the data directory.
pub const LOG_FILE: &str = "audit.jsonl";
/// `prev` of the first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Everything the audit log records. Field names are part of the contract.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event")]
pub enum AuditEvent {
    #[serde(rename = "config.loaded")]
    ConfigLoaded {
        file: String,
        sha256: String,
        users: usize,
        targets: usize,
        tasks: usize,
        policies: usize,
        record_terminal: bool,
    },
    #[serde(rename = "request.created")]
    RequestCreated {
        request: RequestId,
        task: TaskName,
        target: TargetName,
        ticket: TicketRef,
        ttl: Ttl,
        reason: String,
        required_approvals: u32,
    },
    #[serde(rename = "request.denied")]
    RequestDenied {
        request: RequestId,
        task: String,
        target: String,
        ticket: String,
        reason: String,
    },
    #[serde(rename = "request.approved")]
    RequestApproved {
        request: RequestId,
        approvals: u32,
        required_approvals: u32,
        comment: Option<String>,
    },
    #[serde(rename = "approval.refused")]
    ApprovalRefused { request: RequestId, reason: String },
    #[serde(rename = "request.rejected")]
    RequestRejected { request: RequestId, reason: String },
    #[serde(rename = "request.expired")]
    RequestExpired { request: RequestId, reason: String },
    #[serde(rename = "grant.issued")]
    GrantIssued {
        grant: GrantId,
        request: RequestId,
        requester: UserName,
        task: TaskName,
        target: TargetName,
        ticket: TicketRef,
        approvers: Vec<UserName>,
        expires_at: String,
    },
    #[serde(rename = "grant.token_fetched")]
    GrantTokenFetched { grant: GrantId, request: RequestId },
    #[serde(rename = "grant.revoked")]
    GrantRevoked {
        grant: GrantId,
        request: RequestId,
        reason: String,
    },
    #[serde(rename = "grant.expired")]
    GrantExpired { grant: GrantId, request: RequestId },
    #[serde(rename = "grant.completed")]
    GrantCompleted { grant: GrantId, request: RequestId },
    #[serde(rename = "ticket.opened")]
    TicketOpened {
        ticket: TicketRef,
        assignee: Option<UserName>,
        source: String,
    },
    #[serde(rename = "ticket.reassigned")]
    TicketReassigned {
        ticket: TicketRef,
        from: Option<UserName>,
        to: Option<UserName>,
        source: String,
    },
    #[serde(rename = "ticket.closed")]
    TicketClosed { ticket: TicketRef, source: String },
    /// A ticket system's answer changed a decision: the ticket closed or changed hands there.
    #[serde(rename = "ticket.checked")]
    TicketChecked {
        ticket: TicketRef,
        system: String,
        /// What the system answered.
        answer: String,
        /// closed, or reassigned.
        effect: String,
    },
    /// A ticket system gave no answer, and a request, approval or token fetch was refused.
    #[serde(rename = "ticket.unanswered")]
    TicketUnanswered {
        ticket: TicketRef,
        system: String,
        refused: String,
        reason: String,
    },
    /// A grant ended because its ticket's system could not confirm the ticket within `grace`.
    #[serde(rename = "ticket.unverifiable")]
    TicketUnverifiable {
        ticket: TicketRef,
        grant: GrantId,
        reason: String,
    },
    #[serde(rename = "webhook.rejected")]
    WebhookRejected {
        provider: String,
        source: String,
        reason: String,
    },
    /// A person signed in (browser or `jitgate login`).
    #[serde(rename = "auth.signed_in")]
    AuthSignedIn {
        user: UserName,
        /// The provider's issuer, or `link` for a one-time sign-in link.
        issuer: String,
        subject: Option<String>,
        groups: Vec<String>,
        /// The browser's address.
        source: String,
        method: String,
        /// `browser` or `cli`.
        via: String,
        sign_in: String,
    },
    /// A sign-in was refused.
    #[serde(rename = "auth.refused")]
    AuthRefused {
        user: Option<String>,
        issuer: String,
        subject: Option<String>,
        groups: Vec<String>,
        source: String,
        reason: String,
    },
    /// A sign-in ended before its time (sign-out, `jitgate logout`).
    #[serde(rename = "auth.signed_out")]
    AuthSignedOut {
        user: UserName,
        sign_in: String,
        via: String,
        reason: String,
    },
    #[serde(rename = "api.auth_denied")]
    ApiAuthDenied {
        source: String,
        path: String,
        reason: String,
    },
    /// Someone opened the live view of a session's terminal in the console.
    #[serde(rename = "session.watched")]
    SessionWatched {
        session: SessionId,
        grant: GrantId,
        /// Whose session it is.
        user: UserName,
    },
    #[serde(rename = "session.started")]
    SessionStarted {
        session: SessionId,
        grant: GrantId,
        request: RequestId,
        protocol: crate::config::TargetKind,
        user: UserName,
        vendor: Option<String>,
        task: TaskName,
        target: TargetName,
        ticket: TicketRef,
        principal: Option<String>,
        source: String,
    },
    #[serde(rename = "session.ended")]
    SessionEnded {
        session: SessionId,
        grant: GrantId,
        request: RequestId,
        cause: String,
        reason: String,
        duration_ms: u64,
        bytes_in: u64,
        bytes_out: u64,
        recording: Vec<crate::store::RecordedFile>,
        kill_latency_ms: Option<u64>,
    },
    #[serde(rename = "target.refused")]
    TargetRefused {
        session: SessionId,
        target: TargetName,
        reason: String,
    },
    #[serde(rename = "break_glass.activated")]
    BreakGlassActivated {
        request: RequestId,
        grant: GrantId,
        user: UserName,
        target: TargetName,
        task: TaskName,
        ticket: TicketRef,
        reason: String,
        review: String,
        expires_at: String,
    },
    #[serde(rename = "break_glass.denied")]
    BreakGlassDenied {
        user: UserName,
        target: String,
        reason: String,
    },
    #[serde(rename = "break_glass.alert_failed")]
    BreakGlassAlertFailed { review: String, reason: String },
    #[serde(rename = "review.completed")]
    ReviewCompleted {
        review: String,
        user: UserName,
        grant: GrantId,
        notes: String,
    },
    #[serde(rename = "admission.denied")]
    AdmissionDenied {
        user: String,
        protocol: crate::config::TargetKind,
        source: String,
        grant: Option<GrantId>,
        reason: String,
    },
    /// A gateway connection refused for its PROXY header (`gateway.proxy_protocol_from`): a
    /// balancer's without a valid one, or a client's that sent one of its own.
    #[serde(rename = "proxy.refused")]
    ProxyRefused {
        protocol: crate::config::TargetKind,
        /// Who sent the refused bytes, as far as is known: the client, or the balancer when
        /// its own header was the fault.
        source: String,
        /// The address the connection came from (the balancer's, behind one).
        peer: String,
        reason: String,
    },
    /// Refusals of one `kind` left out of the log in one window (see [`flood`]).
    #[serde(rename = "refusals.suppressed")]
    RefusalsSuppressed {
        kind: String,
        count: u64,
        sources: u64,
        top: Vec<flood::SourceCount>,
        from: String,
        to: String,
    },
}

impl AuditEvent {
    /// The `event` name.
    pub fn name(&self) -> String {
        match serde_json::to_value(self) {
            Ok(Value::Object(m)) => m
                .get("event")
                .and_then(Value::as_str)
                .unwrap_or("unknown")
                .to_string(),
            _ => "unknown".into(),
        }
    }
}

/// Failures writing or verifying the log.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("cannot write the audit log {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("audit index: {0}")]
    Store(#[from] StoreError),
    #[error(
        "the audit log {path} does not match the database (log ends at seq {log_seq}, database at seq {db_seq}); run `jitgate audit verify` and investigate before serving"
    )]
    HeadMismatch {
        path: PathBuf,
        log_seq: u64,
        db_seq: u64,
    },
    #[error("the audit log {path} is damaged at line {line}: {reason}; run `jitgate audit verify`")]
    Damaged {
        path: PathBuf,
        line: usize,
        reason: String,
    },
}

/// Check one record on its own: its `hash` is the SHA-256 of its canonical form and its `sig`
/// is `key`'s signature over those hash bytes. Returns the hash.
pub fn check_record(m: &Map<String, Value>, key: &VerifyingKey) -> Result<[u8; 32], &'static str> {
    let computed = crate::crypto::sha256(&canonical(m));
    if str_field(m, "hash").as_deref() != Some(hex::encode(computed).as_str()) {
        return Err("hash does not match the record's contents: the record was edited");
    }
    let sig_ok = str_field(m, "sig")
        .and_then(|s| base64::engine::general_purpose::STANDARD.decode(s).ok())
        .is_some_and(|sig| key.verify(&computed, &sig));
    if !sig_ok {
        return Err("signature is not valid for the audit public key");
    }
    Ok(computed)
}

/// Canonical bytes of a record for hashing: every field but `hash` and `sig`, keys sorted.
fn canonical(record: &Map<String, Value>) -> Vec<u8> {
    let mut m = record.clone();
    m.remove("hash");
    m.remove("sig");
    // serde_json's Map is ordered by key, so this is canonical.
    serde_json::to_vec(&Value::Object(m)).expect("JSON values serialize")
}

fn str_field(m: &Map<String, Value>, k: &str) -> Option<String> {
    m.get(k).and_then(Value::as_str).map(str::to_string)
}

/// Convenience: the unix time of now as RFC 3339 for event fields.
pub fn at(t: UnixTime) -> String {
    crate::types::rfc3339(t)
}
