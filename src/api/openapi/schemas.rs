//! The document's schemas: request bodies with the limits the server enforces, and answers.

use serde_json::{Value, json};

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

pub(super) fn r(name: &str) -> Value {
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

pub(super) fn schemas() -> Value {
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
        "bytes_in": int, "bytes_out": int, "node": string,
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
        "TicketState": {"enum": ["open", "closed"]},
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
            "EventStream": {"type": "string", "description": "text/event-stream (server-sent events)."},
            "EvidenceBundle": {"type": "string", "format": "binary", "description": "A tar archive: recording, audit records, public key, signed manifest."},
            "RecordingFile": {"type": "string", "description": "The file as recorded."},
            "RecordingName": {"type": "string", "pattern": "^([0-9]{1,6}\\.cast|http\\.jsonl|session\\.json)$"},
            "Preview": obj(json!({
                "allowed": {"type": "boolean"}, "refusal": opt_string,
                "required_approvals": {"type": "integer", "minimum": 1}, "high_impact": {"type": "boolean"},
                "approvals_why": string, "max_ttl": {"type": ["string", "null"]},
            }), &["allowed", "refusal", "required_approvals", "high_impact", "approvals_why", "max_ttl"]),
            "ConsoleLink": obj(json!({"url": {"type": "string", "format": "uri"}, "expires_in": {"type": "integer"}}), &["url", "expires_in"]),
            "WhoAmI": obj(json!({
                "name": r("Name"), "user": r("Name"), "roles": array("Role"),
                "groups": {"type": "array", "items": string}, "vendor": opt_string,
                "method": {"enum": ["api_key", "oidc", "link"]},
                "signed_in_at": {"type": ["string", "null"], "format": "date-time"},
                "expires_at": {"type": ["string", "null"], "format": "date-time"},
                "sign_in": opt_string,
            }), &["name", "user", "roles", "groups", "vendor", "method", "signed_in_at", "expires_at", "sign_in"]),
            "CliCode": obj(json!({"code": {"type": "string", "maxLength": 100}, "code_verifier": {"type": "string", "maxLength": 128}}), &["code", "code_verifier"]),
            "CliCredential": obj(json!({
                "credential": {"type": "string", "pattern": "^jgs_"}, "user": r("Name"), "roles": array("Role"),
                "groups": {"type": "array", "items": string},
                "signed_in_at": {"type": "string", "format": "date-time"}, "expires_at": {"type": "string", "format": "date-time"},
            }), &["credential", "user", "roles", "groups", "signed_in_at", "expires_at"]),
            "SignedOut": obj(json!({"signed_out": {"const": true}, "sign_in": string}), &["signed_out", "sign_in"]),
            "NewSignInLink": obj(json!({"user": r("Name")}), &["user"]),
            "SignInLink": obj(json!({"user": r("Name"), "url": {"type": "string", "format": "uri"}, "expires_at": {"type": "string", "format": "date-time"}}), &["user", "url", "expires_at"]),
            "Approval": obj(json!({"approver": r("Name"), "comment": opt_string, "at": int}), &["approver", "comment", "at"]),
            "RecordedFile": obj(json!({"name": string, "sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"}, "bytes": int}), &["name", "sha256", "bytes"]),
            "Token": obj(issued.clone(), &all_keys(&issued)),
            "BreakGlassGrant": obj(break_glass.clone(), &all_keys(&break_glass)),
            "Admitted": obj(json!({
                "admitted": {"const": true}, "grant": r("GrantId"), "request": r("RequestId"),
                "user": r("Name"), "task": r("Name"), "target": r("Name"), "principal": opt_string,
                "ticket": r("Name"), "expires_at": {"type": "string", "format": "date-time"},
            }), &["admitted", "grant", "request", "user", "task", "target", "principal", "ticket", "expires_at"]),
            "Killed": obj(json!({"id": r("SessionId"), "state": {"const": "terminating"}, "reason": string, "node": r("Name")}), &["id", "state", "reason"]),
            "Node": obj(json!({"name": r("Name"), "alive": {"type": "boolean"}, "last_heartbeat": string, "live_sessions": {"type": "integer", "minimum": 0}, "started_at": string}), &["name", "alive", "last_heartbeat", "live_sessions", "started_at"]),
            "Nodes": array("Node"),
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
        ("Tickets", array("Ticket")),
        (
            "TicketChange",
            obj(ticket_change.clone(), &all_keys(&ticket_change)),
        ),
        ("Request", obj(request.clone(), &all_keys(&request))),
        ("Requests", array("Request")),
        ("Grant", obj(grant.clone(), &all_keys(&grant))),
        ("Grants", array("Grant")),
        // `node` only when several nodes share the database.
        (
            "Session",
            obj(
                session.clone(),
                &all_keys(&session)
                    .into_iter()
                    .filter(|k| *k != "node")
                    .collect::<Vec<_>>(),
            ),
        ),
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
