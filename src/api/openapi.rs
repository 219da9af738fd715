//! The OpenAPI 3.1 document served at `/api/v1/openapi.json`, built from one table of routes so
//! that it cannot drift far from [`super::router`]: an integration test compares the two, and
//! another runs schemathesis against a live gateway to check that every answer is documented.
//!
//! What a JSON Schema can say about an input is said exactly, including what the server trims
//! (free text and durations lose leading and trailing white space before they are checked).
//! What it cannot say (a duration's one-year bound, which names are configured) is in the
//! descriptions, with the status the server answers.

use serde_json::{Map, Value, json};

/// How a caller proves who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    /// Anyone.
    None,
    /// `Authorization: Bearer jgk_...`.
    ApiKey,
    /// The metrics bearer token, or an API key.
    MetricsTokenOrApiKey,
    /// An HMAC-SHA256 signature in headers (ticket webhooks).
    Hmac,
}

/// How an operation reads its request body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    None,
    /// JSON with `Content-Type: application/json` (else 415); a body of the wrong shape is 422.
    Json(&'static str),
    /// Read as bytes whatever its content type; an empty body is allowed.
    OptionalBytes(&'static str),
    /// Read as bytes and checked by the handler (webhooks, after their signature).
    Bytes(&'static str),
}

/// One query or header parameter: name, where, required, schema, description.
#[derive(Debug, Clone, Copy)]
pub struct Param {
    pub name: &'static str,
    pub within: &'static str,
    pub required: bool,
    /// A component schema name, or `boolean` / `string` for a plain one.
    pub schema: &'static str,
    pub description: &'static str,
}

const fn q(name: &'static str, schema: &'static str, description: &'static str) -> Param {
    Param {
        name,
        within: "query",
        required: false,
        schema,
        description,
    }
}

const fn h(
    name: &'static str,
    required: bool,
    schema: &'static str,
    description: &'static str,
) -> Param {
    Param {
        name,
        within: "header",
        required,
        schema,
        description,
    }
}

/// One documented operation.
pub struct Op {
    pub method: &'static str,
    pub path: &'static str,
    pub summary: &'static str,
    pub roles: &'static str,
    pub auth: Auth,
    pub body: Body,
    /// The schema of `{id}` in the path, when it has one.
    pub id: Option<&'static str>,
    pub params: &'static [Param],
    /// Successful answers: status and body schema.
    pub ok: &'static [(u16, &'static str)],
    /// Refusals particular to the operation (503: the database is busy); those of its
    /// authentication and body, and 408 and 413 (any request), are added by [`document`].
    pub errors: &'static [u16],
    /// Operations that take an id from the success answer (OpenAPI links).
    pub links: &'static [Link],
}

/// An OpenAPI link: the operation `method path` takes its `{id}` from the success answer's body
/// at the JSON pointer `id`.
pub struct Link {
    pub method: &'static str,
    pub path: &'static str,
    pub id: &'static str,
}

const fn link(method: &'static str, path: &'static str, id: &'static str) -> Link {
    Link { method, path, id }
}

macro_rules! links {
    ($id:literal: $($method:literal $path:literal),+ $(,)?) => {
        &[$(link($method, $path, $id)),+]
    };
}

const REQUEST_OPS: &[Link] = links!("/id":
    "get" "/api/v1/requests/{id}", "post" "/api/v1/requests/{id}/approve",
    "post" "/api/v1/requests/{id}/deny", "post" "/api/v1/requests/{id}/token");
const FIRST_REQUEST_OPS: &[Link] = links!("/0/id":
    "get" "/api/v1/requests/{id}", "post" "/api/v1/requests/{id}/approve",
    "post" "/api/v1/requests/{id}/deny", "post" "/api/v1/requests/{id}/token");
const GRANT_OPS: &[Link] = links!("/grant":
    "get" "/api/v1/grants/{id}", "post" "/api/v1/grants/{id}/done",
    "post" "/api/v1/grants/{id}/revoke");
const FIRST_GRANT_OPS: &[Link] = links!("/0/id":
    "get" "/api/v1/grants/{id}", "post" "/api/v1/grants/{id}/done",
    "post" "/api/v1/grants/{id}/revoke");
const TICKET_OPS: &[Link] = links!("/id":
    "get" "/api/v1/tickets/{id}", "post" "/api/v1/tickets/{id}/close",
    "post" "/api/v1/tickets/{id}/assign");
const FIRST_SESSION_OPS: &[Link] = links!("/0/id":
    "get" "/api/v1/sessions/{id}", "post" "/api/v1/sessions/{id}/kill");
const FIRST_REVIEW_OPS: &[Link] = links!("/0/id": "post" "/api/v1/reviews/{id}");
const BREAK_GLASS_OPS: &[Link] = &[
    link("post", "/api/v1/reviews/{id}", "/review"),
    link("get", "/api/v1/grants/{id}", "/grant"),
    link("post", "/api/v1/grants/{id}/done", "/grant"),
    link("post", "/api/v1/grants/{id}/revoke", "/grant"),
];

const SESSION_QUERY: &[Param] = &[
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
        "limit",
        "Limit",
        "At most this many (default 500, capped at 5000).",
    ),
];

const AUDIT_QUERY: &[Param] = &[
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

const JITGATE_SIGNED: &[Param] = &[
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

const JIRA_SIGNED: &[Param] = &[
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

/// Every operation of the API.
pub const OPS: &[Op] = &[
    Op {
        method: "get",
        path: "/api/v1/health",
        summary: "Liveness check",
        roles: "none",
        auth: Auth::None,
        body: Body::None,
        id: None,
        params: &[],
        ok: &[(200, "Health")],
        errors: &[],
        links: &[],
    },
    Op {
        method: "get",
        path: "/api/v1/openapi.json",
        summary: "This document",
        roles: "none",
        auth: Auth::None,
        body: Body::None,
        id: None,
        params: &[],
        ok: &[(200, "OpenApi")],
        errors: &[],
        links: &[],
    },
    Op {
        method: "get",
        path: "/api/v1/whoami",
        summary: "The caller's name, roles and groups",
        roles: "any",
        auth: Auth::ApiKey,
        body: Body::None,
        id: None,
        params: &[],
        ok: &[(200, "WhoAmI")],
        errors: &[],
        links: &[],
    },
    Op {
        method: "post",
        path: "/api/v1/tickets",
        summary: "Open (or reopen) a local ticket; 404 when the assignee is not a configured user, 409 when it is open already",
        roles: "admin, approver",
        auth: Auth::ApiKey,
        body: Body::Json("OpenTicket"),
        id: None,
        params: &[],
        ok: &[(201, "Ticket")],
        errors: &[403, 404, 409, 503],
        links: TICKET_OPS,
    },
    Op {
        method: "get",
        path: "/api/v1/tickets/{id}",
        summary: "A ticket's state and assignee",
        roles: "any",
        auth: Auth::ApiKey,
        body: Body::None,
        id: Some("Name"),
        params: &[],
        ok: &[(200, "Ticket")],
        errors: &[400, 404, 503],
        links: &[],
    },
    Op {
        method: "post",
        path: "/api/v1/tickets/{id}/close",
        summary: "Close a ticket; revokes every grant on it",
        roles: "admin, approver",
        auth: Auth::ApiKey,
        body: Body::None,
        id: Some("Name"),
        params: &[],
        ok: &[(200, "TicketChange")],
        errors: &[400, 403, 404, 503],
        links: &[],
    },
    Op {
        method: "post",
        path: "/api/v1/tickets/{id}/assign",
        summary: "Reassign a ticket (assignee null unassigns); revokes grants of the previous assignee",
        roles: "admin, approver",
        auth: Auth::ApiKey,
        body: Body::Json("AssignTicket"),
        id: Some("Name"),
        params: &[],
        ok: &[(200, "TicketChange")],
        errors: &[403, 404, 503],
        links: &[],
    },
    Op {
        method: "post",
        path: "/api/v1/tickets/webhook/generic",
        summary: "Generic ticket-system webhook, authenticated by HMAC-SHA256",
        roles: "HMAC signature",
        auth: Auth::Hmac,
        body: Body::Bytes("GenericWebhook"),
        id: None,
        params: JITGATE_SIGNED,
        ok: &[(200, "WebhookResult")],
        errors: &[503],
        links: &[],
    },
    Op {
        method: "post",
        path: "/api/v1/tickets/webhook/jira",
        summary: "Jira Cloud webhook, authenticated by HMAC-SHA256; events other than issue changes are acknowledged with 202 and ignored",
        roles: "HMAC signature",
        auth: Auth::Hmac,
        body: Body::Bytes("JiraWebhook"),
        id: None,
        params: JIRA_SIGNED,
        ok: &[(200, "WebhookResult"), (202, "WebhookResult")],
        errors: &[503],
        links: &[],
    },
    Op {
        method: "post",
        path: "/api/v1/tickets/webhook/servicenow",
        summary: "ServiceNow webhook, authenticated by HMAC-SHA256",
        roles: "HMAC signature",
        auth: Auth::Hmac,
        body: Body::Bytes("ServiceNowWebhook"),
        id: None,
        params: JITGATE_SIGNED,
        ok: &[(200, "WebhookResult")],
        errors: &[503],
        links: &[],
    },
    Op {
        method: "post",
        path: "/api/v1/requests",
        summary: "Request one task on one target for a ticket; a request the rules or the policy refuse is recorded as denied and answered 403",
        roles: "technician",
        auth: Auth::ApiKey,
        body: Body::Json("NewRequest"),
        id: None,
        params: &[],
        ok: &[(201, "Request")],
        errors: &[403, 503],
        links: REQUEST_OPS,
    },
    Op {
        method: "get",
        path: "/api/v1/requests",
        summary: "Requests visible to the caller",
        roles: "any",
        auth: Auth::ApiKey,
        body: Body::None,
        id: None,
        params: &[q("state", "RequestState", "Only requests in this state.")],
        ok: &[(200, "Requests")],
        errors: &[400, 503],
        links: FIRST_REQUEST_OPS,
    },
    Op {
        method: "get",
        path: "/api/v1/requests/{id}",
        summary: "One request",
        roles: "requester, approver, reviewer, admin",
        auth: Auth::ApiKey,
        body: Body::None,
        id: Some("RequestId"),
        params: &[],
        ok: &[(200, "Request")],
        errors: &[404, 503],
        links: &[],
    },
    Op {
        method: "post",
        path: "/api/v1/requests/{id}/approve",
        summary: "Approve; the final approval issues the grant",
        roles: "approver (never the requester)",
        auth: Auth::ApiKey,
        body: Body::OptionalBytes("Approve"),
        id: Some("RequestId"),
        params: &[],
        ok: &[(200, "Request")],
        errors: &[403, 404, 409, 503],
        links: &[],
    },
    Op {
        method: "post",
        path: "/api/v1/requests/{id}/deny",
        summary: "Reject a pending request",
        roles: "approver, admin",
        auth: Auth::ApiKey,
        body: Body::Json("Reason"),
        id: Some("RequestId"),
        params: &[],
        ok: &[(200, "Request")],
        errors: &[403, 404, 409, 503],
        links: &[],
    },
    Op {
        method: "post",
        path: "/api/v1/requests/{id}/token",
        summary: "Fetch the grant token, exactly once",
        roles: "requester",
        auth: Auth::ApiKey,
        body: Body::None,
        id: Some("GrantOrRequestId"),
        params: &[],
        ok: &[(200, "Token")],
        errors: &[403, 404, 409, 503],
        links: GRANT_OPS,
    },
    Op {
        method: "get",
        path: "/api/v1/grants",
        summary: "Grants visible to the caller",
        roles: "any",
        auth: Auth::ApiKey,
        body: Body::None,
        id: None,
        params: &[q("state", "GrantState", "Only grants in this state.")],
        ok: &[(200, "Grants")],
        errors: &[400, 503],
        links: FIRST_GRANT_OPS,
    },
    Op {
        method: "get",
        path: "/api/v1/grants/{id}",
        summary: "One grant, by grant or request id",
        roles: "requester, approver, reviewer, admin",
        auth: Auth::ApiKey,
        body: Body::None,
        id: Some("GrantOrRequestId"),
        params: &[],
        ok: &[(200, "Grant")],
        errors: &[404, 503],
        links: &[],
    },
    Op {
        method: "post",
        path: "/api/v1/grants/{id}/done",
        summary: "End one's own grant early",
        roles: "requester",
        auth: Auth::ApiKey,
        body: Body::None,
        id: Some("GrantOrRequestId"),
        params: &[],
        ok: &[(200, "Grant")],
        errors: &[403, 404, 409, 503],
        links: &[],
    },
    Op {
        method: "post",
        path: "/api/v1/grants/{id}/revoke",
        summary: "End a grant now",
        roles: "approver, admin",
        auth: Auth::ApiKey,
        body: Body::Json("Reason"),
        id: Some("GrantOrRequestId"),
        params: &[],
        ok: &[(200, "Grant")],
        errors: &[403, 404, 409, 503],
        links: &[],
    },
    Op {
        method: "post",
        path: "/api/v1/admission",
        summary: "Run the gateways' admission check for a token; a refusal is 403 with admitted false",
        roles: "admin",
        auth: Auth::ApiKey,
        body: Body::Json("Admission"),
        id: None,
        params: &[],
        ok: &[(200, "Admitted")],
        errors: &[403, 503],
        links: &[],
    },
    Op {
        method: "post",
        path: "/api/v1/break-glass",
        summary: "Take an emergency grant without approval (only where [break_glass] is configured); it opens a review",
        roles: "break-glass",
        auth: Auth::ApiKey,
        body: Body::Json("BreakGlass"),
        id: None,
        params: &[],
        ok: &[(201, "BreakGlassGrant")],
        errors: &[403, 404, 503],
        links: BREAK_GLASS_OPS,
    },
    Op {
        method: "get",
        path: "/api/v1/reviews",
        summary: "Break-glass reviews: reviewers and admins see everyone's, others their own",
        roles: "any",
        auth: Auth::ApiKey,
        body: Body::None,
        id: None,
        params: &[q(
            "all",
            "boolean",
            "Include completed reviews (default: open ones only).",
        )],
        ok: &[(200, "Reviews")],
        errors: &[400, 503],
        links: FIRST_REVIEW_OPS,
    },
    Op {
        method: "post",
        path: "/api/v1/reviews/{id}",
        summary: "Sign off a break-glass use (never one's own)",
        roles: "reviewer, admin",
        auth: Auth::ApiKey,
        body: Body::Json("Notes"),
        id: Some("ReviewId"),
        params: &[],
        ok: &[(200, "Review")],
        errors: &[403, 404, 409, 503],
        links: &[],
    },
    Op {
        method: "get",
        path: "/api/v1/sessions",
        summary: "Sessions, newest first; technicians see their own",
        roles: "any",
        auth: Auth::ApiKey,
        body: Body::None,
        id: None,
        params: SESSION_QUERY,
        ok: &[(200, "Sessions")],
        errors: &[400, 503],
        links: FIRST_SESSION_OPS,
    },
    Op {
        method: "get",
        path: "/api/v1/sessions/{id}",
        summary: "One session with its recording files and digests",
        roles: "its user, approver, reviewer, admin",
        auth: Auth::ApiKey,
        body: Body::None,
        id: Some("SessionId"),
        params: &[],
        ok: &[(200, "Session")],
        errors: &[404, 503],
        links: &[],
    },
    Op {
        method: "post",
        path: "/api/v1/sessions/{id}/kill",
        summary: "Cut a live session now",
        roles: "approver, admin",
        auth: Auth::ApiKey,
        body: Body::Json("Reason"),
        id: Some("SessionId"),
        params: &[],
        ok: &[(200, "Killed")],
        errors: &[403, 404, 409],
        links: &[],
    },
    Op {
        method: "get",
        path: "/api/v1/audit",
        summary: "Audit records",
        roles: "reviewer, admin",
        auth: Auth::ApiKey,
        body: Body::None,
        id: None,
        params: AUDIT_QUERY,
        ok: &[(200, "AuditRecords")],
        errors: &[400, 403, 503],
        links: &[],
    },
    Op {
        method: "get",
        path: "/metrics",
        summary: "Prometheus metrics (OpenMetrics when the Accept header asks for it)",
        roles: "admin, reviewer, or a scraper with gateway.metrics_token",
        auth: Auth::MetricsTokenOrApiKey,
        body: Body::None,
        id: None,
        params: &[],
        ok: &[(200, "Metrics")],
        errors: &[403],
        links: &[],
    },
];

/// Characters `str::trim` removes (Unicode `White_Space`), as a regex class body.
const WS: &str = r"\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000";
/// Control characters free text must not contain (all of them but tab and newline).
const CTRL: &str = r"\x00-\x08\x0b-\x1f\x7f-\x9f";
/// Characters that may begin or end trimmed free text: neither white space nor control.
const VISIBLE: &str = r"\x00-\x20\x7f-\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000";
/// Longest free text after trimming, in characters ([`crate::grant::MAX_TEXT`]).
const MAX_TEXT: usize = crate::grant::MAX_TEXT;

/// Free text: trimmed, at most [`MAX_TEXT`] characters, no control characters but tab and
/// newline; with `blank`, it may be empty or white space only.
fn text(blank: bool) -> String {
    let core = format!(
        "[^{VISIBLE}](?:[^{CTRL}]{{0,{}}}[^{VISIBLE}])?",
        MAX_TEXT - 2
    );
    let core = if blank { format!("(?:{core})?") } else { core };
    format!("^[{WS}]*{core}[{WS}]*$")
}

/// A duration such as `90s`, `15m`, `1h30m` or `2d`: trimmed, at most 32 characters, not zero.
fn ttl() -> String {
    format!("^[{WS}]*(?=[0-9smhd]{{1,32}}[{WS}]*$)(?=[^1-9]*[1-9])(?:[0-9]+[smhd])+[{WS}]*$")
}

fn obj(props: Value, required: &[&str]) -> Value {
    json!({"type": "object", "additionalProperties": false, "properties": props, "required": required})
}

fn r(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

fn nullable(name: &str) -> Value {
    json!({"anyOf": [r(name), {"type": "null"}]})
}

fn array(name: &str) -> Value {
    json!({"type": "array", "items": r(name)})
}

/// `props` with `more` added.
fn with(mut props: Value, more: Value) -> Value {
    if let (Some(p), Value::Object(m)) = (props.as_object_mut(), more) {
        p.extend(m);
    }
    props
}

fn all_keys(props: &Value) -> Vec<&str> {
    props
        .as_object()
        .map(|m| m.keys().map(String::as_str).collect())
        .unwrap_or_default()
}

fn schemas() -> Value {
    let int = json!({"type": "integer"});
    let opt_int = json!({"type": ["integer", "null"]});
    let string = json!({"type": "string"});
    let opt_string = json!({"type": ["string", "null"]});
    let id =
        |prefix: &str| json!({"type": "string", "pattern": format!("^{prefix}_[a-z2-7]{{16}}$")});
    let ticket = json!({
        "id": r("Name"), "title": string, "assignee": nullable("Name"),
        "state": {"enum": ["open", "closed"]}, "source": string,
        "opened_at": int, "updated_at": int,
    });
    let request = json!({
        "id": r("RequestId"), "kind": r("Kind"), "requester": r("Name"), "task": r("Name"),
        "target": r("Name"), "ticket": r("Name"), "ttl": string, "reason": string,
        "state": r("RequestState"), "created_at": int, "expires_at": int,
        "approvals": array("Approval"), "required_approvals": {"type": "integer", "minimum": 0},
        "decided_at": opt_int, "decided_by": nullable("Name"), "decision_reason": opt_string,
        "grant": nullable("GrantId"),
    });
    let grant = json!({
        "id": r("GrantId"), "request": r("RequestId"), "kind": r("Kind"), "requester": r("Name"),
        "task": r("Name"), "target": r("Name"), "ticket": r("Name"),
        "approvers": array("Name"), "token_hash": string, "token_fetched": {"type": "boolean"},
        "issued_at": int, "expires_at": int, "state": r("GrantState"), "ended_at": opt_int,
        "ended_by": opt_string, "end_reason": opt_string,
    });
    let session = json!({
        "id": r("SessionId"), "protocol": string, "user": r("Name"), "vendor": opt_string,
        "grant": r("GrantId"), "request": r("RequestId"), "kind": r("Kind"), "ticket": r("Name"),
        "task": r("Name"), "target": r("Name"), "principal": opt_string,
        "approvers": array("Name"), "source": string, "started_at": int, "expires_at": int,
        "ended_at": opt_int, "end_cause": opt_string, "end_reason": opt_string,
        "kill_latency_ms": opt_int, "dir": string, "files": array("RecordedFile"),
        "bytes_in": int, "bytes_out": int,
    });
    let review = json!({
        "id": r("ReviewId"), "user": r("Name"), "grant": r("GrantId"), "request": r("RequestId"),
        "target": r("Name"), "task": r("Name"), "ticket": r("Name"), "reason": string,
        "created_at": int, "reviewed_by": nullable("Name"), "reviewed_at": opt_int,
        "notes": opt_string,
    });
    let ticket_change = with(
        ticket.clone(),
        json!({"revoked": {"type": "integer", "minimum": 0, "description": "Grants revoked by the change"}}),
    );
    let listed_review = with(review.clone(), json!({"age_secs": int}));
    let issued = json!({
        "token": {"type": "string", "description": "The grant token; shown this once"},
        "grant": r("GrantId"), "request": r("RequestId"), "task": r("Name"), "target": r("Name"),
        "protocol": {"enum": ["ssh", "https", "unknown"]}, "expires_at": {"type": "string", "format": "date-time"},
    });
    let break_glass = with(
        issued.clone(),
        json!({"review": r("ReviewId"), "ticket": r("Name")}),
    );
    let error_codes = [
        "bad_request",
        "unauthorized",
        "forbidden",
        "denied",
        "admission_denied",
        "not_found",
        "conflict",
        "timeout",
        "too_large",
        "unsupported_media_type",
        "rate_limited",
        "bad_signature",
        "stale",
        "not_configured",
        "busy",
        "internal",
    ];
    let mut s = json!({
        "Error": {
            "type": "object", "additionalProperties": false, "required": ["error", "message"],
            "description": "Every refusal. A denied request adds its id and state; a refused admission adds admitted false and the grant the token named, if any.",
            "properties": {
                "error": {"enum": error_codes}, "message": {"type": "string", "minLength": 1},
                "id": r("RequestId"), "state": {"const": "denied"},
                "admitted": {"const": false}, "grant": nullable("GrantId"),
            },
        },
        "Name": {
            "type": "string", "pattern": "^[A-Za-z0-9._@-]{1,64}$",
            "description": "A user, target, task or ticket name: 1 to 64 letters, digits, '-', '_', '.' and '@'.",
        },
        "RequestId": id("req"),
        "GrantId": id("gr"),
        "GrantOrRequestId": {"type": "string", "pattern": "^(gr|req)_[a-z2-7]{16}$", "description": "A grant id, or the id of the request it was issued for."},
        "SessionId": id("ses"),
        "ReviewId": id("bgr"),
        "Ttl": {
            "type": "string", "pattern": ttl(), "examples": ["15m", "1h30m", "2d"],
            "description": "A duration: numbers with units s, m, h, d (e.g. 90s, 15m, 1h30m, 2d), at most 32 characters once trimmed, not zero. A duration over a year is refused (400); one over the task's max_ttl is denied (403).",
        },
        "Text": {
            "type": "string", "pattern": text(true),
            "description": "Free text of at most 1000 characters once leading and trailing white space is trimmed, without control characters other than tab and newline.",
        },
        "RequiredText": {
            "type": "string", "pattern": text(false), "minLength": 1,
            "description": "Free text as Text, and not blank.",
        },
        "Justification": {
            "type": "string", "pattern": text(false), "minLength": 1,
            "description": "Why: free text as Text. A blank one is denied (403) and recorded as a denied request.",
        },
        "Kind": {"enum": ["normal", "break-glass"]},
        "Protocol": {"enum": ["ssh", "https"]},
        "Role": {"enum": ["technician", "approver", "reviewer", "admin", "break-glass"]},
        "RequestState": {"enum": ["pending", "approved", "denied", "rejected", "expired"]},
        "GrantState": {"enum": ["active", "revoked", "expired", "completed"]},
        "Limit": {"type": "integer", "minimum": 0, "maximum": u32::MAX},
        "Seq": {"type": "integer", "minimum": 0, "maximum": u64::MAX},
        "Time": {
            "description": "Unix seconds, a date (midnight UTC) or an RFC 3339 time.",
            "anyOf": [
                {"type": "integer", "minimum": i64::MIN, "maximum": i64::MAX},
                {"type": "string", "format": "date"},
                {"type": "string", "format": "date-time"},
            ],
        },
        "UnixSeconds": {"type": "string", "pattern": "^[0-9]{1,18}$"},
        "Signature": {"type": "string", "pattern": "^sha256=[0-9a-f]{64}$"},
        "DeliveryId": {"type": "string", "minLength": 1, "maxLength": 200},
    });
    // In parts: one `json!` of all of it passes the macro's recursion limit.
    s = with(
        s,
        json!({
            "OpenTicket": obj(json!({"id": r("Name"), "assignee": r("Name"), "title": {"type": "string", "maxLength": 200, "default": ""}}), &["id", "assignee"]),
            "AssignTicket": obj(json!({"assignee": {"anyOf": [r("Name"), {"type": "null"}], "description": "The new assignee, a configured user (404 otherwise); null unassigns."}}), &["assignee"]),
            "NewRequest": {
                "type": "object", "additionalProperties": false,
                "required": ["task", "target", "ticket", "ttl", "reason"],
                "properties": {
                    "task": r("Name"), "target": r("Name"), "ticket": r("Name"), "ttl": r("Ttl"),
                    "reason": r("Justification"),
                },
                "examples": [{"task": "reset-credential", "target": "dc-01", "ticket": "INC-7", "ttl": "15m", "reason": "reset the locked account of j.doe"}],
            },
            "Approve": obj(json!({"comment": {"anyOf": [r("Text"), {"type": "null"}]}}), &[]),
            "Reason": obj(json!({"reason": r("RequiredText")}), &["reason"]),
            "Notes": obj(json!({"notes": r("RequiredText")}), &["notes"]),
            "BreakGlass": obj(json!({
                "target": r("Name"), "reason": r("RequiredText"),
                "ticket": {"anyOf": [r("Name"), {"type": "null"}], "description": "An open ticket; omitted, jitgate opens one."},
                "task": {"anyOf": [r("Name"), {"type": "null"}], "description": "One of [break_glass] tasks; omitted, the first that covers the target."},
                "ttl": {"anyOf": [r("Ttl"), {"type": "null"}], "description": "At most break_glass.max_ttl (400 otherwise), which is also the default."},
            }), &["target", "reason"]),
            "Admission": obj(json!({"token": string, "user": string, "protocol": r("Protocol")}), &["token", "user", "protocol"]),
        }),
    );
    s = with(
        s,
        json!({
            "GenericWebhook": obj(json!({
                "ticket": r("Name"), "state": {"enum": ["open", "closed", "resolved"]},
                "assignee": {"type": ["string", "null"], "description": "A generic: external id or a configured user name; anything else leaves the ticket unassigned."},
                "title": {"type": ["string", "null"], "description": "Kept to its first 200 characters."},
            }), &["ticket", "state"]),
            "JiraWebhook": {
                "type": "object", "required": ["timestamp"],
                "description": "Jira Cloud's issue event: webhookEvent jira:issue_created, jira:issue_updated or jira:issue_deleted, issue.key, issue.fields.status.statusCategory.key, issue.fields.assignee.accountId, issue.fields.summary.",
                "properties": {"timestamp": {"type": "integer", "description": "Milliseconds since the Unix epoch; refused (401) outside [tickets] webhook_window"}, "webhookEvent": string, "issue": {"type": "object"}},
            },
            "ServiceNowWebhook": {
                "type": "object", "required": ["number", "state"],
                "description": "A ServiceNow incident: number, state (6, 7, 8 or resolved, closed, canceled close the ticket), assigned_to (a user name, or an object with user_name or value), short_description.",
                "properties": {"number": r("Name"), "state": {"type": ["string", "integer"]}, "assigned_to": {"type": ["string", "object", "null"]}, "short_description": string},
            },
            "Health": obj(json!({"status": {"const": "ok"}}), &["status"]),
            "OpenApi": {"type": "object", "required": ["openapi", "info", "paths"]},
            "Metrics": {"type": "string", "description": "The Prometheus text exposition format, or OpenMetrics."},
            "WhoAmI": obj(json!({"name": r("Name"), "roles": array("Role"), "groups": {"type": "array", "items": string}, "vendor": opt_string}), &["name", "roles", "groups", "vendor"]),
            "Approval": obj(json!({"approver": r("Name"), "comment": opt_string, "at": int}), &["approver", "comment", "at"]),
            "RecordedFile": obj(json!({"name": string, "sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"}, "bytes": int}), &["name", "sha256", "bytes"]),
            "Token": obj(issued.clone(), &all_keys(&issued)),
            "BreakGlassGrant": obj(break_glass.clone(), &all_keys(&break_glass)),
            "Admitted": obj(json!({
                "admitted": {"const": true}, "grant": r("GrantId"), "request": r("RequestId"),
                "user": r("Name"), "task": r("Name"), "target": r("Name"), "principal": opt_string,
                "ticket": r("Name"), "expires_at": {"type": "string", "format": "date-time"},
            }), &["admitted", "grant", "request", "user", "task", "target", "principal", "ticket", "expires_at"]),
            "Killed": obj(json!({"id": r("SessionId"), "state": {"const": "terminating"}, "reason": string}), &["id", "state", "reason"]),
            "AuditRecord": {"type": "object", "required": ["event", "seq", "ts", "actor", "hash"], "description": "One record of the hash-chained audit log; the other fields depend on the event."},
            "AuditRecords": array("AuditRecord"),
            "WebhookResult": {
                "type": "object", "additionalProperties": false, "required": ["status"],
                "properties": {
                    "status": {"enum": ["applied", "duplicate", "ignored"]}, "ticket": r("Name"),
                    "state": {"enum": ["open", "closed"]}, "assignee": nullable("Name"),
                    "revoked": {"type": "integer", "minimum": 0},
                },
            },
        }),
    );
    let more = [
        ("Ticket", obj(ticket.clone(), &all_keys(&ticket))),
        (
            "TicketChange",
            obj(ticket_change.clone(), &all_keys(&ticket_change)),
        ),
        ("Request", obj(request.clone(), &all_keys(&request))),
        ("Requests", array("Request")),
        ("Grant", obj(grant.clone(), &all_keys(&grant))),
        ("Grants", array("Grant")),
        ("Session", obj(session.clone(), &all_keys(&session))),
        ("Sessions", array("Session")),
        ("Review", obj(review.clone(), &all_keys(&review))),
        ("Reviews", {
            let listed = obj(listed_review.clone(), &all_keys(&listed_review));
            json!({"type": "array", "items": listed})
        }),
    ];
    if let Some(m) = s.as_object_mut() {
        for (name, schema) in more {
            m.insert(name.to_string(), schema);
        }
    }
    s
}

/// What each refusal means, for the document's readers.
fn error_description(status: u16) -> &'static str {
    match status {
        400 => "Bad input: a malformed body, parameter or query string",
        401 => {
            "Missing, unknown or expired credentials (for webhooks: a missing, wrong or stale signature)"
        }
        403 => "The caller's roles, the rules or the policy refuse this",
        404 => "No such object visible to the caller",
        408 => "The request was not received within 30 s",
        409 => "The object is in the wrong state for this",
        413 => "The body is too large (64 KiB; webhooks 256 KiB)",
        415 => "The body is not sent as Content-Type: application/json",
        422 => {
            "The JSON body does not have this operation's shape (a missing or unknown field, or a value of the wrong type)"
        }
        429 => {
            "Too many failed authentications from this address in the last minute; each further failure is answered after a second (a valid key is still accepted at once)"
        }
        503 => {
            "Another process holds a lock on the database (busy; try again shortly), or, for webhooks, none are configured ([tickets] webhook_secret)"
        }
        _ => "Refused",
    }
}

/// `get_requests_id_approve` for `get /api/v1/requests/{id}/approve`.
pub fn operation_id(method: &str, path: &str) -> String {
    let path = path.strip_prefix("/api/v1").unwrap_or(path);
    let words: Vec<String> = path
        .split('/')
        .filter(|w| !w.is_empty())
        .map(|w| w.trim_matches(['{', '}']).replace(['.', '-'], "_"))
        .collect();
    format!("{method}_{}", words.join("_"))
}

fn operation(op: &Op) -> Value {
    let mut errors: Vec<u16> = op.errors.to_vec();
    errors.extend([408, 413]);
    match op.auth {
        Auth::ApiKey | Auth::MetricsTokenOrApiKey => errors.extend([401, 429]),
        Auth::Hmac => errors.extend([400, 401]),
        Auth::None => {}
    }
    match op.body {
        Body::Json(_) => errors.extend([400, 415, 422]),
        Body::OptionalBytes(_) | Body::Bytes(_) => errors.push(400),
        Body::None => {}
    }
    errors.sort_unstable();
    errors.dedup();
    let mut responses = Map::new();
    for (i, &(status, schema)) in op.ok.iter().enumerate() {
        let content = if schema == "Metrics" {
            json!({"text/plain": {"schema": r(schema)}, "application/openmetrics-text": {"schema": r(schema)}})
        } else {
            json!({"application/json": {"schema": r(schema)}})
        };
        let mut answer = json!({"description": if status == 201 { "Created" } else { "Success" }, "content": content});
        if i == 0 && !op.links.is_empty() {
            let links: Map<String, Value> = op
                .links
                .iter()
                .map(|l| {
                    let to = operation_id(l.method, l.path);
                    let from = format!("$response.body#{}", l.id);
                    (
                        to.clone(),
                        json!({"operationId": to, "parameters": {"id": from}}),
                    )
                })
                .collect();
            answer["links"] = Value::Object(links);
        }
        responses.insert(status.to_string(), answer);
    }
    for status in errors {
        responses.insert(
            status.to_string(),
            json!({"description": error_description(status), "content": {"application/json": {"schema": r("Error")}}}),
        );
    }
    let mut params: Vec<Value> = Vec::new();
    if let Some(id) = op.id {
        params.push(json!({"name": "id", "in": "path", "required": true, "schema": r(id)}));
    }
    for p in op.params {
        let schema = match p.schema {
            "boolean" | "string" => json!({"type": p.schema}),
            name => r(name),
        };
        params.push(json!({"name": p.name, "in": p.within, "required": p.required, "schema": schema, "description": p.description}));
    }
    let mut o = json!({
        "operationId": operation_id(op.method, op.path),
        "summary": op.summary,
        "description": format!("Roles: {}.", op.roles),
        "responses": responses,
        "security": match op.auth {
            Auth::ApiKey => json!([{"apiKey": []}]),
            Auth::MetricsTokenOrApiKey => json!([{"apiKey": []}, {"metricsToken": []}]),
            Auth::None | Auth::Hmac => json!([]),
        },
    });
    if !params.is_empty() {
        o["parameters"] = Value::Array(params);
    }
    let body = match op.body {
        Body::Json(s) | Body::Bytes(s) => Some((s, true)),
        Body::OptionalBytes(s) => Some((s, false)),
        Body::None => None,
    };
    if let Some((schema, required)) = body {
        o["requestBody"] =
            json!({"required": required, "content": {"application/json": {"schema": r(schema)}}});
    }
    o
}

/// The document.
pub fn document() -> Value {
    let mut paths = Map::new();
    for op in OPS {
        let entry = paths
            .entry(op.path.to_string())
            .or_insert_with(|| json!({}));
        entry[op.method] = operation(op);
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "jitgate control-plane API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Ticket-bound just-in-time access: requests, approvals, grants, tickets, sessions, audit. Errors are {\"error\": code, \"message\": what to do}.",
        },
        "paths": paths,
        "components": {
            "securitySchemes": {
                "apiKey": {"type": "http", "scheme": "bearer", "description": "A jgk_ API key: Authorization: Bearer jgk_..."},
                "metricsToken": {"type": "http", "scheme": "bearer", "description": "gateway.metrics_token, for Prometheus scrapers"},
            },
            "schemas": schemas(),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Operation ids are unique and every link leads to a documented operation with an `{id}`.
    #[test]
    fn links_lead_to_operations_with_an_id() {
        let mut ids: Vec<String> = OPS.iter().map(|o| operation_id(o.method, o.path)).collect();
        ids.sort();
        let n = ids.len();
        ids.dedup();
        assert_eq!(ids.len(), n, "operation ids repeat: {ids:?}");
        for op in OPS {
            for l in op.links {
                let to = OPS
                    .iter()
                    .find(|o| o.method == l.method && o.path == l.path);
                assert!(
                    to.is_some_and(|o| o.id.is_some()),
                    "{} {} links to {} {}, which is not an operation with an id",
                    op.method,
                    op.path,
                    l.method,
                    l.path
                );
            }
        }
    }

    /// Every `$ref` names a schema of the document.
    #[test]
    fn every_reference_resolves() {
        fn walk(v: &Value, names: &Map<String, Value>) {
            match v {
                Value::Object(m) => {
                    if let Some(Value::String(to)) = m.get("$ref") {
                        let name = to.trim_start_matches("#/components/schemas/");
                        assert!(names.contains_key(name), "dangling $ref {to}");
                    }
                    m.values().for_each(|v| walk(v, names));
                }
                Value::Array(a) => a.iter().for_each(|v| walk(v, names)),
                _ => {}
            }
        }
        let doc = document();
        let names = doc["components"]["schemas"].as_object().unwrap().clone();
        walk(&doc, &names);
    }
}
