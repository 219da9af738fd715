//! The query parameters and signed-webhook headers the operations table refers to.

use super::{Param, h, q};

pub(super) const SESSION_QUERY: &[Param] = &[
    q(
        "live",
        "boolean",
        "Only live (true) or only ended (false) sessions.",
    ),
    q(
        "user",
        "Name",
        "Only this user's sessions (technicians always see only their own).",
    ),
    q("ticket", "Name", "Only sessions under this ticket."),
    q("grant", "GrantId", "Only sessions of this grant."),
    q("target", "Name", "Only sessions on this target."),
    q("task", "Name", "Only sessions for this task."),
    q("protocol", "Protocol", "Only ssh or only https sessions."),
    q(
        "since",
        "Time",
        "Only sessions started at or after this time.",
    ),
    q("until", "Time", "Only sessions started before this time."),
    q(
        "end_cause",
        "string",
        "Only sessions that ended this way (expired, revoked, completed, ticket, killed, client, target, recording, shutdown, error, restart).",
    ),
    q(
        "break_glass",
        "boolean",
        "Only break-glass (true) or only normal (false) sessions.",
    ),
    q(
        "vendor",
        "string",
        "true: only vendor users' sessions; false: only others'; any other value: only that vendor's.",
    ),
    q(
        "before",
        "SessionId",
        "The next page: only sessions after this one in the list's order (started_at, then id, both descending). Pass the id of the last session of the previous page; 404 when no such session exists.",
    ),
    q(
        "limit",
        "Limit",
        "At most this many (default 500, capped at 5000).",
    ),
];

pub(super) const TICKET_QUERY: &[Param] = &[
    q(
        "assignee",
        "Name",
        "Only tickets assigned to this user (technicians always see only their own).",
    ),
    q("state", "TicketState", "Only open or only closed tickets."),
    q(
        "limit",
        "Limit",
        "At most this many (default 500, capped at 5000).",
    ),
];

pub(super) const AUDIT_QUERY: &[Param] = &[
    q("after", "Seq", "Only records after this sequence number."),
    q(
        "event",
        "string",
        "Only records of this event, e.g. grant.issued.",
    ),
    q("request", "string", "Only records about this request id."),
    q("grant", "string", "Only records about this grant id."),
    q(
        "limit",
        "Limit",
        "At most this many (default 500, capped at 5000).",
    ),
];

pub(super) const JITGATE_SIGNED: &[Param] = &[
    h(
        "X-Jitgate-Timestamp",
        true,
        "UnixSeconds",
        "Unix seconds when the delivery was signed; refused (401) outside [tickets] webhook_window of the gateway's clock.",
    ),
    h(
        "X-Jitgate-Signature",
        true,
        "Signature",
        "sha256= and the hex HMAC-SHA256, keyed with [tickets] webhook_secret, of \"<timestamp>.<raw body>\".",
    ),
    h(
        "X-Jitgate-Delivery",
        false,
        "DeliveryId",
        "A unique id of the delivery; a repeated one is acknowledged as a duplicate (else the signed bytes identify it).",
    ),
];

pub(super) const JIRA_SIGNED: &[Param] = &[
    h(
        "X-Hub-Signature",
        true,
        "Signature",
        "sha256= and the hex HMAC-SHA256, keyed with [tickets] webhook_secret, of the raw body, as Jira Cloud sends it.",
    ),
    h(
        "X-Atlassian-Webhook-Identifier",
        false,
        "DeliveryId",
        "Identifies the delivery across Jira's retries; a repeated one is acknowledged as a duplicate.",
    ),
];
