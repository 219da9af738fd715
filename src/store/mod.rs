//! Persistent state behind the [`Store`] trait: tickets, requests, grants, webhook deliveries and
//! the audit index. [`sqlite::SqliteStore`] is the embedded default; the trait is shaped so that a
//! PostgreSQL implementation can follow (records as whole values, no SQLite types in signatures).

pub mod lock;
mod people;
pub mod postgres;
pub mod sqlite;

pub use people::{Person, SignIn, SignInKind, SignInMethod};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::types::{
    GrantId, RequestId, SessionId, TargetName, TaskName, TicketRef, Ttl, UnixTime, UserName,
};

/// `url` with any password in it replaced by `***`, for messages and logs.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (auth, host) = match rest.rsplit_once('@') {
        Some(x) => x,
        None => return url.to_string(),
    };
    match auth.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_string(),
    }
}

/// Failures of the storage layer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Db(String),
    /// Another process holds a lock on the database for longer than the busy timeout.
    #[error("the database is busy ({0}): another process holds a lock on it; try again shortly")]
    Busy(String),
    /// The database server cannot be reached (PostgreSQL).
    #[error("the database cannot be reached ({0}); what needs it is refused until it is back")]
    Unreachable(String),
    #[error("stored record is unreadable: {0}")]
    Corrupt(String),
    #[error("cannot open the database at {path}: {reason}")]
    Open { path: String, reason: String },
}

/// Open or closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TicketState {
    Open,
    Closed,
}

impl TicketState {
    /// Lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            TicketState::Open => "open",
            TicketState::Closed => "closed",
        }
    }
}

/// A ticket as jitgate knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ticket {
    pub id: TicketRef,
    pub title: String,
    pub assignee: Option<UserName>,
    pub state: TicketState,
    /// `local`, `generic`, `jira` or `servicenow`.
    pub source: String,
    pub opened_at: UnixTime,
    pub updated_at: UnixTime,
}

/// Where a request is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RequestState {
    /// Waiting for approvals.
    Pending,
    /// Fully approved; a grant was issued.
    Approved,
    /// Refused by the rules or policy at request time.
    Denied,
    /// Refused by an approver, or by the rules at approval time.
    Rejected,
    /// Not decided in time, or its ticket closed while pending.
    Expired,
}

impl RequestState {
    /// Lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            RequestState::Pending => "pending",
            RequestState::Approved => "approved",
            RequestState::Denied => "denied",
            RequestState::Rejected => "rejected",
            RequestState::Expired => "expired",
        }
    }
}

/// Normal or emergency path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum RequestKind {
    #[default]
    Normal,
    BreakGlass,
}

/// One approval.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Approval {
    pub approver: UserName,
    pub comment: Option<String>,
    pub at: UnixTime,
}

/// An access request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    pub id: RequestId,
    #[serde(default)]
    pub kind: RequestKind,
    pub requester: UserName,
    pub task: TaskName,
    pub target: TargetName,
    pub ticket: TicketRef,
    pub ttl: Ttl,
    pub reason: String,
    pub state: RequestState,
    pub created_at: UnixTime,
    /// A pending request expires at this time.
    pub expires_at: UnixTime,
    pub approvals: Vec<Approval>,
    pub required_approvals: u32,
    pub decided_at: Option<UnixTime>,
    pub decided_by: Option<UserName>,
    /// Why it was denied, rejected or expired.
    pub decision_reason: Option<String>,
    pub grant: Option<GrantId>,
}

/// Where a grant is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GrantState {
    Active,
    Revoked,
    Expired,
    Completed,
}

impl GrantState {
    /// Lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            GrantState::Active => "active",
            GrantState::Revoked => "revoked",
            GrantState::Expired => "expired",
            GrantState::Completed => "completed",
        }
    }
}

/// A grant: the right to open sessions for one task on one target until `expires_at`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    pub id: GrantId,
    pub request: RequestId,
    #[serde(default)]
    pub kind: RequestKind,
    pub requester: UserName,
    pub task: TaskName,
    pub target: TargetName,
    pub ticket: TicketRef,
    pub approvers: Vec<UserName>,
    /// Hex SHA-256 of the token; the token itself is never stored.
    pub token_hash: String,
    pub token_fetched: bool,
    pub issued_at: UnixTime,
    pub expires_at: UnixTime,
    pub state: GrantState,
    pub ended_at: Option<UnixTime>,
    pub ended_by: Option<String>,
    pub end_reason: Option<String>,
}

/// A gateway session (live or ended).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRecord {
    pub id: SessionId,
    /// `ssh` or `https`.
    pub protocol: String,
    pub user: UserName,
    pub vendor: Option<String>,
    pub grant: GrantId,
    pub request: RequestId,
    #[serde(default)]
    pub kind: RequestKind,
    pub ticket: TicketRef,
    pub task: TaskName,
    pub target: TargetName,
    pub principal: Option<String>,
    pub approvers: Vec<UserName>,
    pub source: String,
    pub started_at: UnixTime,
    pub expires_at: UnixTime,
    pub ended_at: Option<UnixTime>,
    /// Machine cause: expired, revoked, completed, ticket, ticket-unverifiable, killed, client,
    /// target, recording, shutdown, error, restart; several nodes: stale, node-lost.
    pub end_cause: Option<String>,
    pub end_reason: Option<String>,
    pub kill_latency_ms: Option<u64>,
    /// Recording folder.
    pub dir: String,
    /// Recorded files with their SHA-256.
    pub files: Vec<RecordedFile>,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// The gateway node that serves it (several nodes on PostgreSQL; absent on one node).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

/// One recorded file of a session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedFile {
    pub name: String,
    pub sha256: String,
    pub bytes: u64,
}

/// Which sessions to list, newest first (`started_at DESC, id DESC`). Every filter is a column of
/// the index, so a filtered page reads only the sessions it returns.
#[derive(Debug, Clone, Default)]
pub struct SessionFilter {
    pub user: Option<UserName>,
    pub grant: Option<GrantId>,
    pub ticket: Option<TicketRef>,
    pub live: Option<bool>,
    pub target: Option<TargetName>,
    pub task: Option<TaskName>,
    /// `ssh` or `https`.
    pub protocol: Option<String>,
    /// Started at or after (Unix seconds).
    pub since: Option<UnixTime>,
    /// Started before (Unix seconds).
    pub until: Option<UnixTime>,
    /// End cause (`expired`, `revoked`, `ticket`, `killed`, `client`, `restart`, ...).
    pub end_cause: Option<String>,
    pub break_glass: Option<bool>,
    /// Sessions of vendor users (`Some(true)`), or of this vendor (`vendor_name`).
    pub vendor: Option<bool>,
    pub vendor_name: Option<String>,
    /// Keyset page: only sessions after this one in the index's order. A session that does not
    /// exist has none after it.
    pub before: Option<SessionId>,
    /// At most this many (default 1000, at most 10,000).
    pub limit: Option<u32>,
}

/// Which tickets to list, newest updated first.
#[derive(Debug, Clone, Default)]
pub struct TicketFilter {
    pub assignee: Option<UserName>,
    pub state: Option<TicketState>,
    /// At most this many (default 1000, at most 10,000).
    pub limit: Option<u32>,
}

/// A break-glass use awaiting (or after) its review.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Review {
    pub id: String,
    pub user: UserName,
    pub grant: GrantId,
    pub request: RequestId,
    pub target: TargetName,
    pub task: TaskName,
    pub ticket: TicketRef,
    pub reason: String,
    pub created_at: UnixTime,
    pub reviewed_by: Option<UserName>,
    pub reviewed_at: Option<UnixTime>,
    pub notes: Option<String>,
}

/// Which requests to list.
#[derive(Debug, Clone, Default)]
pub struct RequestFilter {
    pub requester: Option<UserName>,
    pub state: Option<RequestState>,
    pub ticket: Option<TicketRef>,
    pub limit: Option<u32>,
}

/// Which grants to list.
#[derive(Debug, Clone, Default)]
pub struct GrantFilter {
    pub requester: Option<UserName>,
    pub state: Option<GrantState>,
    pub ticket: Option<TicketRef>,
    pub limit: Option<u32>,
}

/// One audit record as indexed in the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub seq: u64,
    pub ts: String,
    pub event: String,
    pub hash: String,
    pub request: Option<String>,
    pub grant: Option<String>,
    pub session: Option<String>,
    /// The whole JSON record as written to the log.
    pub record: String,
}

/// Builds the next audit record from the `(seq, hash)` of the one before it.
pub type ChainLink = Box<dyn FnOnce(u64, &str) -> AuditEntry + Send>;

/// Which audit records to list.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub after_seq: Option<u64>,
    pub event: Option<String>,
    pub request: Option<String>,
    pub grant: Option<String>,
    pub limit: Option<u32>,
}

/// Persistent state. Every method is a single atomic step.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    async fn put_ticket(&self, t: &Ticket) -> Result<(), StoreError>;
    async fn ticket(&self, id: &TicketRef) -> Result<Option<Ticket>, StoreError>;
    /// Tickets, newest updated first.
    async fn tickets(&self, f: &TicketFilter) -> Result<Vec<Ticket>, StoreError>;

    async fn put_request(&self, r: &Request) -> Result<(), StoreError>;
    async fn request(&self, id: &RequestId) -> Result<Option<Request>, StoreError>;
    async fn requests(&self, f: &RequestFilter) -> Result<Vec<Request>, StoreError>;

    async fn put_grant(&self, g: &Grant) -> Result<(), StoreError>;
    async fn grant(&self, id: &GrantId) -> Result<Option<Grant>, StoreError>;
    async fn grant_by_token_hash(&self, hash: &str) -> Result<Option<Grant>, StoreError>;
    async fn grants(&self, f: &GrantFilter) -> Result<Vec<Grant>, StoreError>;

    async fn put_session(&self, s: &SessionRecord) -> Result<(), StoreError>;
    async fn session(&self, id: &SessionId) -> Result<Option<SessionRecord>, StoreError>;
    /// Sessions, newest first (`started_at DESC, id DESC`).
    async fn sessions(&self, f: &SessionFilter) -> Result<Vec<SessionRecord>, StoreError>;

    async fn put_review(&self, r: &Review) -> Result<(), StoreError>;
    async fn review(&self, id: &str) -> Result<Option<Review>, StoreError>;
    /// Reviews, newest first; only open ones when `open_only`; only `user`'s when given.
    async fn reviews(
        &self,
        open_only: bool,
        user: Option<&UserName>,
    ) -> Result<Vec<Review>, StoreError>;

    /// Record a webhook delivery key; `false` when it was seen before (a replay).
    async fn record_delivery(&self, key: &str, at: UnixTime) -> Result<bool, StoreError>;

    /// Index one audit record and move the head to it, atomically.
    async fn append_audit(&self, e: &AuditEntry) -> Result<(), StoreError>;
    /// The last indexed audit record's `(seq, hash)`.
    async fn audit_head(&self) -> Result<Option<(u64, String)>, StoreError>;
    /// Append to a chain several writers share: under a lock on the head, each of `links` in
    /// turn builds the next record from the `(seq, hash)` of the one before it; the records are
    /// indexed and the last becomes the head, all in one transaction (one lock and one commit
    /// for a burst of records). Stores of one writer (SQLite, whose chain is the log file)
    /// refuse.
    async fn append_chained(&self, links: Vec<ChainLink>) -> Result<Vec<AuditEntry>, StoreError> {
        drop(links);
        Err(StoreError::Db(
            "a chain shared by several nodes needs PostgreSQL (store.url = \"postgres://...\")"
                .into(),
        ))
    }
    async fn audit(&self, f: &AuditFilter) -> Result<Vec<AuditEntry>, StoreError>;

    async fn put_person(&self, p: &Person) -> Result<(), StoreError>;
    async fn person(&self, name: &UserName) -> Result<Option<Person>, StoreError>;
    /// The person whose last sign-in claimed `external_id` (`jira:5b10ac8d...`).
    async fn person_with_id(&self, external_id: &str) -> Result<Option<UserName>, StoreError>;

    /// Hold `value` under `(kind, key)` until it is taken or `expires_at`, unless `max` of
    /// `kind` are held already (`false`). Values expired for a minute are dropped first.
    async fn put_held(
        &self,
        kind: &str,
        key: &str,
        value: &str,
        expires_at: UnixTime,
        max: usize,
    ) -> Result<bool, StoreError>;
    /// Take the value held under `(kind, key)`: it is gone once returned.
    async fn take_held(&self, kind: &str, key: &str) -> Result<Option<String>, StoreError>;

    async fn put_sign_in(&self, s: &SignIn) -> Result<(), StoreError>;
    /// The sign-in whose secret hashes to `sha256` (hex).
    async fn sign_in(&self, sha256: &str) -> Result<Option<SignIn>, StoreError>;
}
