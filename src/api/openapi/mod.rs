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
    /// JSON with `Content-Type: application/json` (else 415); a body of the wrong shape is 400.
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

// After `links!`, which the operations table uses.
mod ops;
mod params;
mod schemas;

pub use ops::OPS;
use schemas::{r, schemas};
/// What each refusal means, for the document's readers.
fn error_description(status: u16) -> &'static str {
    match status {
        400 => {
            "Bad input: a malformed body, parameter or query string, or a JSON body without this operation's shape (a missing or unknown field, or a value of the wrong type)"
        }
        401 => {
            "Missing, unknown or expired credentials (for webhooks: a missing, wrong or stale signature)"
        }
        403 => "The caller's roles, the rules or the policy refuse this",
        404 => "No such object visible to the caller",
        408 => "The request was not received within 30 s",
        409 => "The object is in the wrong state for this",
        413 => "The body is too large (64 KiB; webhooks 256 KiB)",
        415 => "The body is not sent as Content-Type: application/json",
        429 => {
            "Too many failed authentications from this address in the last minute; each further failure is answered after a second (a valid key is still accepted at once)"
        }
        503 => {
            "Another process holds a lock on the database (busy; try again shortly); the ticket's system gave no answer (error ticket_system, naming it); or, for webhooks, none are configured ([tickets] webhook_secret)"
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
        Body::Json(_) => errors.extend([400, 415]),
        Body::OptionalBytes(_) | Body::Bytes(_) => errors.push(400),
        Body::None => {}
    }
    errors.sort_unstable();
    errors.dedup();
    let mut responses = Map::new();
    for (i, &(status, schema)) in op.ok.iter().enumerate() {
        let content = match schema {
            "Metrics" => {
                json!({"text/plain": {"schema": r(schema)}, "application/openmetrics-text": {"schema": r(schema)}})
            }
            "EventStream" => json!({"text/event-stream": {"schema": r(schema)}}),
            "EvidenceBundle" => json!({"application/x-tar": {"schema": r(schema)}}),
            "RecordingFile" => json!({
                "application/x-asciicast": {"schema": r(schema)},
                "application/x-ndjson": {"schema": r(schema)},
                "application/json": {"schema": r(schema)},
            }),
            _ => json!({"application/json": {"schema": r(schema)}}),
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
                "apiKey": {"type": "http", "scheme": "bearer", "description": "A jgk_ API key (Authorization: Bearer jgk_...), a person's jgs_ CLI credential from jitgate login (Bearer jgs_...), or the console's session cookie __Host-jitgate-console (state-changing calls then also need a same-origin Origin and X-CSRF-Token)"},
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
