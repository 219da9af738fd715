//! The OpenAPI 3.1 document served at `/api/v1/openapi.json`, built from one table of routes so
//! that it cannot drift far from [`super::router`] (a unit test compares the two).

use serde_json::{Value, json};

/// One documented operation: method, path, summary, roles, request body schema name.
pub struct Op {
    pub method: &'static str,
    pub path: &'static str,
    pub summary: &'static str,
    pub roles: &'static str,
    pub body: Option<&'static str>,
}

/// Every operation of the API.
pub const OPS: &[Op] = &[
    Op {
        method: "get",
        path: "/api/v1/health",
        summary: "Liveness check",
        roles: "none",
        body: None,
    },
    Op {
        method: "get",
        path: "/api/v1/openapi.json",
        summary: "This document",
        roles: "none",
        body: None,
    },
    Op {
        method: "get",
        path: "/api/v1/whoami",
        summary: "The caller's name, roles and groups",
        roles: "any",
        body: None,
    },
    Op {
        method: "post",
        path: "/api/v1/tickets",
        summary: "Open (or reopen) a local ticket",
        roles: "admin, approver",
        body: Some("OpenTicket"),
    },
    Op {
        method: "get",
        path: "/api/v1/tickets/{id}",
        summary: "A ticket's state and assignee",
        roles: "any",
        body: None,
    },
    Op {
        method: "post",
        path: "/api/v1/tickets/{id}/close",
        summary: "Close a ticket; revokes every grant on it",
        roles: "admin, approver",
        body: None,
    },
    Op {
        method: "post",
        path: "/api/v1/tickets/{id}/assign",
        summary: "Reassign a ticket; revokes grants of the previous assignee",
        roles: "admin, approver",
        body: Some("AssignTicket"),
    },
    Op {
        method: "post",
        path: "/api/v1/tickets/webhook/{provider}",
        summary: "Ticket-system webhook (generic, jira, servicenow), authenticated by HMAC-SHA256",
        roles: "HMAC signature",
        body: Some("Webhook"),
    },
    Op {
        method: "post",
        path: "/api/v1/requests",
        summary: "Request one task on one target for a ticket",
        roles: "technician",
        body: Some("NewRequest"),
    },
    Op {
        method: "get",
        path: "/api/v1/requests",
        summary: "Requests visible to the caller (?state=pending|approved|denied|rejected|expired)",
        roles: "any",
        body: None,
    },
    Op {
        method: "get",
        path: "/api/v1/requests/{id}",
        summary: "One request",
        roles: "requester, approver, reviewer, admin",
        body: None,
    },
    Op {
        method: "post",
        path: "/api/v1/requests/{id}/approve",
        summary: "Approve; the final approval issues the grant",
        roles: "approver (never the requester)",
        body: Some("Approve"),
    },
    Op {
        method: "post",
        path: "/api/v1/requests/{id}/deny",
        summary: "Reject a pending request",
        roles: "approver, admin",
        body: Some("Reason"),
    },
    Op {
        method: "post",
        path: "/api/v1/requests/{id}/token",
        summary: "Fetch the grant token, exactly once",
        roles: "requester",
        body: None,
    },
    Op {
        method: "get",
        path: "/api/v1/grants",
        summary: "Grants visible to the caller (?state=active|revoked|expired|completed)",
        roles: "any",
        body: None,
    },
    Op {
        method: "get",
        path: "/api/v1/grants/{id}",
        summary: "One grant, by grant or request id",
        roles: "requester, approver, reviewer, admin",
        body: None,
    },
    Op {
        method: "post",
        path: "/api/v1/grants/{id}/done",
        summary: "End one's own grant early",
        roles: "requester",
        body: None,
    },
    Op {
        method: "post",
        path: "/api/v1/grants/{id}/revoke",
        summary: "End a grant now",
        roles: "approver, admin",
        body: Some("Reason"),
    },
    Op {
        method: "post",
        path: "/api/v1/admission",
        summary: "Run the gateways' admission check for a token",
        roles: "admin",
        body: Some("Admission"),
    },
    Op {
        method: "get",
        path: "/api/v1/sessions",
        summary: "Sessions (?live=&user=&ticket=&grant=&target=&task=&protocol=&since=&until=&end_cause=&break_glass=&vendor=&limit=); technicians see their own",
        roles: "any",
        body: None,
    },
    Op {
        method: "get",
        path: "/api/v1/sessions/{id}",
        summary: "One session with its recording files and digests",
        roles: "its user, approver, reviewer, admin",
        body: None,
    },
    Op {
        method: "post",
        path: "/api/v1/sessions/{id}/kill",
        summary: "Cut a live session now",
        roles: "approver, admin",
        body: Some("Reason"),
    },
    Op {
        method: "get",
        path: "/api/v1/audit",
        summary: "Audit records (?after=SEQ&event=&request=&grant=&limit=)",
        roles: "reviewer, admin",
        body: None,
    },
    Op {
        method: "get",
        path: "/metrics",
        summary: "Prometheus metrics",
        roles: "none",
        body: None,
    },
];

fn schemas() -> Value {
    let s = |props: Value, required: &[&str]| json!({"type": "object", "additionalProperties": false, "properties": props, "required": required});
    json!({
        "Error": s(json!({"error": {"type": "string"}, "message": {"type": "string"}}), &["error", "message"]),
        "OpenTicket": s(json!({"id": {"type": "string"}, "assignee": {"type": "string"}, "title": {"type": "string"}}), &["id", "assignee"]),
        "AssignTicket": s(json!({"assignee": {"type": ["string", "null"]}}), &["assignee"]),
        "Webhook": {"type": "object", "description": "Provider-specific payload; see README"},
        "NewRequest": s(json!({
            "task": {"type": "string"}, "target": {"type": "string"}, "ticket": {"type": "string"},
            "ttl": {"type": "string", "example": "15m"}, "reason": {"type": "string", "maxLength": 1000}
        }), &["task", "target", "ticket", "ttl", "reason"]),
        "Approve": s(json!({"comment": {"type": "string", "maxLength": 1000}}), &[]),
        "Reason": s(json!({"reason": {"type": "string", "maxLength": 1000}}), &["reason"]),
        "BreakGlass": s(json!({"target": {"type": "string"}, "reason": {"type": "string", "maxLength": 1000}, "ticket": {"type": "string"}, "task": {"type": "string"}, "ttl": {"type": "string"}}), &["target", "reason"]),
        "Notes": s(json!({"notes": {"type": "string", "maxLength": 1000}}), &["notes"]),
        "Admission": s(json!({"token": {"type": "string"}, "user": {"type": "string"}, "protocol": {"enum": ["ssh", "https"]}}), &["token", "user", "protocol"]),
    })
}

/// The document.
pub fn document() -> Value {
    let mut paths = serde_json::Map::new();
    for op in OPS {
        let entry = paths
            .entry(op.path.to_string())
            .or_insert_with(|| json!({}));
        let mut o = json!({
            "summary": op.summary,
            "description": format!("Roles: {}.", op.roles),
            "responses": {
                "200": {"description": "Success (201 when something is created)"},
                "default": {"description": "Error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
            }
        });
        if op.path.contains("{id}") {
            o["parameters"] = json!([{"name": "id", "in": "path", "required": true, "schema": {"type": "string"}}]);
        }
        if op.path.contains("{provider}") {
            o["parameters"] = json!([{"name": "provider", "in": "path", "required": true, "schema": {"enum": ["generic", "jira", "servicenow"]}}]);
        }
        if let Some(b) = op.body {
            o["requestBody"] = json!({"required": b != "Approve", "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{b}")}}}});
        }
        if !matches!(op.roles, "none" | "HMAC signature") {
            o["security"] = json!([{"apiKey": []}]);
        }
        entry[op.method] = o;
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "jitgate control-plane API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Ticket-bound just-in-time access: requests, approvals, grants, tickets, audit."
        },
        "paths": paths,
        "components": {
            "securitySchemes": {"apiKey": {"type": "http", "scheme": "bearer", "description": "jgk_ API key"}},
            "schemas": schemas(),
        }
    })
}
