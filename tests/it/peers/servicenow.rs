//! A ServiceNow test server built from the documented Table API (ServiceNow REST API reference,
//! "Table API": `/api/now/table/{tableName}`), on 127.0.0.1 inside the test binary, for
//! jitgate's `kind = "servicenow"` ticket systems. A test creates incidents (or records of other
//! task tables), changes their `state` and `assigned_to`, and reads back the work notes jitgate
//! wrote and the `Authorization` header of every request.
//!
//! Served:
//! - `GET /api/now/table/{tableName}` with `sysparm_query` (an encoded query: `field=value`,
//!   `!=`, `IN`, `STARTSWITH`, `LIKE`, `ISEMPTY`, `ISNOTEMPTY`, joined by `^` and `^OR`, with
//!   `ORDERBY` / `ORDERBYDESC`; dot-walked fields such as `assigned_to.user_name`; as ServiceNow
//!   does by default, a condition on a field the table lacks is ignored), `sysparm_fields`,
//!   `sysparm_limit` (default 10000), `sysparm_offset`, `sysparm_display_value`
//!   (`false` | `true` | `all`) and `sysparm_exclude_reference_link`: 200 `{"result": [...]}`
//!   (an empty list when nothing matches), with `X-Total-Count` and a `Link` header of
//!   `rel="first"`, `"prev"`, `"next"` and `"last"` pages.
//! - `GET /api/now/table/{tableName}/{sys_id}`: `{"result": {...}}`.
//! - `PATCH` (and `PUT`) `/api/now/table/{tableName}/{sys_id}` with a JSON object: `work_notes`
//!   and `comments` are journal entries added to the record, `state`, `assigned_to` and
//!   `short_description` are set, other fields are ignored; 200 `{"result": {...}}`.
//! - Values are strings as the Table API gives them (`"state": "1"`); a reference field is
//!   `{"link": ".../api/now/table/sys_user/{sys_id}", "value": sys_id}` unless
//!   `sysparm_exclude_reference_link=true` (then the sys_id), `""` when empty.
//! - Errors in ServiceNow's shape, `{"error": {"message", "detail"}, "status": "failure"}`: 400
//!   `Invalid table`, 404 `No Record found`, 401 `User Not Authenticated` without the configured
//!   credentials (Basic, or Bearer for an OAuth token), and the faults a test queues: 429 with
//!   `Retry-After` (seconds), `X-RateLimit-Limit`, `X-RateLimit-Reset` and `X-RateLimit-Rule`
//!   (inbound REST API rate limiting), 403, 500, 503.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};

use super::fake::{Auth, Fault, Gate, HttpPeer, Seen, through_gate};
use query::Encoded;
use table::{Db, Render, Row, TASK_TABLES, glide_time, known_table};

mod query;
mod table;

/// The Table API's page size when a request names none.
const DEFAULT_LIMIT: usize = 10_000;
/// A journal entry (work note or additional comment) a record received.
#[derive(Clone, Debug)]
pub struct WorkNote {
    pub number: String,
    /// `work_notes` or `comments`.
    pub field: String,
    pub text: String,
    /// The `Authorization` header it came with.
    pub authorization: Option<String>,
}

#[derive(Clone)]
struct App {
    db: Arc<Mutex<Db>>,
}

/// A running fake ServiceNow.
pub struct ServiceNow {
    peer: HttpPeer,
    gate: Arc<Gate>,
    db: Arc<Mutex<Db>>,
}

impl ServiceNow {
    /// A ServiceNow instance on a free port that accepts only `auth`.
    pub fn start(auth: Auth) -> Self {
        let gate = Gate::new(auth, refusal);
        let db = Arc::new(Mutex::new(Db {
            base: String::new(),
            page_cap: None,
            rows: Vec::new(),
            journal: Vec::new(),
            next: 0,
        }));
        let router = Router::new()
            .route("/api/now/table/{table}", get(list))
            .route(
                "/api/now/table/{table}/{sys_id}",
                get(one).patch(update).put(update),
            )
            .fallback(|| async {
                sn_error(
                    StatusCode::BAD_REQUEST,
                    "Requested URI does not represent any resource",
                    None,
                )
            })
            .with_state(App { db: db.clone() })
            .layer(axum::middleware::from_fn_with_state(
                gate.clone(),
                through_gate,
            ));
        let peer = HttpPeer::start(router);
        db.lock().expect("db").base = peer.url();
        Self { peer, gate, db }
    }

    /// The instance URL (`url` in `[[ticket_systems]]`).
    pub fn url(&self) -> String {
        self.peer.url()
    }

    pub fn port(&self) -> u16 {
        self.peer.port()
    }

    /// Answer list queries with pages of at most `n` records, whatever `sysparm_limit` asks
    /// for (as an instance does when access controls leave rows out of a page).
    pub fn cap_pages(&self, n: usize) {
        self.db.lock().expect("db").page_cap = Some(n);
    }

    /// Create record `number` in `table` (state 1, New), assigned to user `assignee`
    /// (`user_name`); returns its sys_id.
    pub fn create(
        &self,
        table: &str,
        number: &str,
        short_description: &str,
        assignee: Option<&str>,
    ) -> String {
        assert!(TASK_TABLES.contains(&table), "not a task table: {table}");
        let mut db = self.db.lock().expect("db");
        assert!(
            !db.rows.iter().any(|r| r.get("number") == number),
            "record {number} exists already"
        );
        let sys_id = db.new_sys_id();
        let assigned = assignee.map(|a| db.user(a)).unwrap_or_default();
        let fields = [
            ("sys_id", sys_id.clone()),
            ("number", number.to_string()),
            ("state", "1".to_string()),
            ("short_description", short_description.to_string()),
            ("assigned_to", assigned),
            ("active", "true".to_string()),
            ("sys_class_name", table.to_string()),
            ("sys_updated_on", glide_time()),
            ("work_notes", String::new()),
            ("comments", String::new()),
        ];
        db.rows.push(Row {
            table: table.into(),
            fields: fields
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
        });
        sys_id
    }

    /// An incident (table `incident`).
    pub fn create_incident(&self, number: &str, short: &str, assignee: Option<&str>) -> String {
        self.create("incident", number, short, assignee)
    }

    /// The sys_id of record `number`.
    pub fn sys_id(&self, number: &str) -> String {
        self.db
            .lock()
            .expect("db")
            .by_number_mut(number)
            .get("sys_id")
            .to_string()
    }

    /// Set record `number`'s `state` (`1` New, `2` In Progress, `3` On Hold, `6` Resolved,
    /// `7` Closed, `8` Canceled).
    pub fn set_state(&self, number: &str, state: &str) {
        let mut db = self.db.lock().expect("db");
        let row = db.by_number_mut(number);
        row.fields.insert("state".into(), state.into());
        let active = ["1", "2", "3"].contains(&state);
        row.fields.insert("active".into(), active.to_string());
        row.fields.insert("sys_updated_on".into(), glide_time());
    }

    /// Resolve record `number` (state 6).
    pub fn resolve(&self, number: &str) {
        self.set_state(number, "6");
    }

    /// Give record `number` to user `assignee` (`user_name`), or nobody.
    pub fn assign(&self, number: &str, assignee: Option<&str>) {
        let mut db = self.db.lock().expect("db");
        let user = assignee.map(|a| db.user(a)).unwrap_or_default();
        let row = db.by_number_mut(number);
        row.fields.insert("assigned_to".into(), user);
        row.fields.insert("sys_updated_on".into(), glide_time());
    }

    /// The work notes record `number` received, oldest first.
    pub fn work_notes(&self, number: &str) -> Vec<WorkNote> {
        let db = self.db.lock().expect("db");
        db.journal
            .iter()
            .filter(|n| n.number == number && n.field == "work_notes")
            .cloned()
            .collect()
    }

    /// The texts of [`ServiceNow::work_notes`].
    pub fn work_note_texts(&self, number: &str) -> Vec<String> {
        self.work_notes(number)
            .into_iter()
            .map(|n| n.text)
            .collect()
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Seen> {
        self.gate.requests()
    }

    /// See [`super::fake::Gate::fail_next`].
    pub fn fail_next(&self, n: usize, fault: Fault, on: &str) {
        self.gate.fail_next(n, fault, on);
    }

    /// Accept only `auth` from now on.
    pub fn set_auth(&self, auth: Auth) {
        self.gate.set_auth(auth);
    }

    /// Stop listening (connections are refused).
    pub fn stop(&mut self) {
        self.peer.stop();
    }

    /// Listen again on the same port.
    pub fn resume(&mut self) {
        self.peer.resume();
    }
}

/// ServiceNow's error shape.
fn sn_error(status: StatusCode, message: &str, detail: Option<&str>) -> Response {
    (
        status,
        axum::Json(json!({
            "error": { "message": message, "detail": detail },
            "status": "failure",
        })),
    )
        .into_response()
}

fn refusal(f: Fault) -> Response {
    match f {
        Fault::RateLimited { retry_after } => {
            let reset = time::OffsetDateTime::now_utc().unix_timestamp() + retry_after as i64;
            let mut r = sn_error(
                StatusCode::TOO_MANY_REQUESTS,
                "Rate limit exceeded",
                Some(&format!(
                    "The rate limit rule jitgate-test allows 100 requests per hour; retry after {retry_after} seconds"
                )),
            );
            let h = r.headers_mut();
            h.insert("retry-after", retry_after.to_string().parse().unwrap());
            h.insert("x-ratelimit-limit", "100".parse().unwrap());
            h.insert("x-ratelimit-reset", reset.to_string().parse().unwrap());
            h.insert(
                "x-ratelimit-rule",
                "f2d5b1a0db7d2010d3a4e1e2f39619aa".parse().unwrap(),
            );
            r
        }
        Fault::Status(401) => sn_error(
            StatusCode::UNAUTHORIZED,
            "User Not Authenticated",
            Some("Required to provide Auth information"),
        ),
        Fault::Status(403) => sn_error(
            StatusCode::FORBIDDEN,
            "Operation Failed",
            Some("ACL Exception Insert Failed due to security constraints"),
        ),
        Fault::Status(s) => sn_error(
            StatusCode::from_u16(s).expect("an HTTP status"),
            StatusCode::from_u16(s)
                .ok()
                .and_then(|c| c.canonical_reason())
                .unwrap_or("Error"),
            None,
        ),
    }
}

fn no_record() -> Response {
    sn_error(
        StatusCode::NOT_FOUND,
        "No Record found",
        Some("Record doesn't exist or ACL restricts the record retrieval"),
    )
}

fn invalid_table(table: &str) -> Response {
    sn_error(
        StatusCode::BAD_REQUEST,
        &format!("Invalid table {table}"),
        None,
    )
}

fn num(q: &HashMap<String, String>, k: &str, default: usize) -> usize {
    q.get(k).and_then(|v| v.parse().ok()).unwrap_or(default)
}

async fn list(
    State(app): State<App>,
    Path(table): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    RawQuery(raw): RawQuery,
) -> Response {
    if !known_table(&table) {
        return invalid_table(&table);
    }
    let db = app.db.lock().expect("db");
    let query = Encoded::parse(
        q.get("sysparm_query")
            .map(String::as_str)
            .unwrap_or_default(),
    );
    let mut rows: Vec<&Row> = db
        .rows
        .iter()
        .filter(|r| r.table == table && query.matches(&db, r))
        .collect();
    if let Some((field, desc)) = &query.order {
        rows.sort_by_key(|r| db.value(r, field).unwrap_or_default());
        if *desc {
            rows.reverse();
        }
    }
    let (limit, offset) = (
        num(&q, "sysparm_limit", DEFAULT_LIMIT)
            .max(1)
            .min(db.page_cap.unwrap_or(usize::MAX)),
        num(&q, "sysparm_offset", 0),
    );
    let total = rows.len();
    let render = Render::from(&q);
    let result: Vec<Value> = rows
        .iter()
        .skip(offset)
        .take(limit)
        .map(|r| db.render(r, &render))
        .collect();
    let mut resp = axum::Json(json!({ "result": result })).into_response();
    let h = resp.headers_mut();
    h.insert("x-total-count", total.to_string().parse().unwrap());
    let suppress = q
        .get("sysparm_suppress_pagination_header")
        .is_some_and(|v| v.eq_ignore_ascii_case("true"));
    if !suppress {
        let link = links(
            &db.base,
            &table,
            raw.as_deref().unwrap_or_default(),
            limit,
            offset,
            total,
        );
        h.insert("link", link.parse().unwrap());
    }
    resp
}

/// The `Link` header: the same request at the first, previous, next and last offsets.
fn links(base: &str, table: &str, raw: &str, limit: usize, offset: usize, total: usize) -> String {
    let mut kept: Vec<&str> = raw
        .split('&')
        .filter(|p| !p.is_empty() && !p.starts_with("sysparm_offset="))
        .collect();
    let limit_param = format!("sysparm_limit={limit}");
    if !kept.iter().any(|p| p.starts_with("sysparm_limit=")) {
        kept.insert(0, &limit_param);
    }
    let at = |o: usize, rel: &str| {
        format!(
            "<{base}/api/now/table/{table}?{}&sysparm_offset={o}>;rel=\"{rel}\"",
            kept.join("&")
        )
    };
    let last = total.saturating_sub(1) / limit * limit;
    let mut out = vec![at(0, "first")];
    if offset > 0 {
        out.push(at(offset.saturating_sub(limit), "prev"));
    }
    if offset + limit < total {
        out.push(at(offset + limit, "next"));
    }
    out.push(at(last, "last"));
    out.join(",")
}

async fn one(
    State(app): State<App>,
    Path((table, sys_id)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if !known_table(&table) {
        return invalid_table(&table);
    }
    let db = app.db.lock().expect("db");
    match db.row(&table, &sys_id) {
        Some(r) => axum::Json(json!({ "result": db.render(r, &Render::from(&q)) })).into_response(),
        None => no_record(),
    }
}

async fn update(
    State(app): State<App>,
    Path((table, sys_id)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !known_table(&table) {
        return invalid_table(&table);
    }
    let json_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !json_type {
        return sn_error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Unsupported Media Type",
            Some("Send the record as application/json"),
        );
    }
    let Ok(Value::Object(doc)) = serde_json::from_slice::<Value>(&body) else {
        return sn_error(
            StatusCode::BAD_REQUEST,
            "Exception while reading request",
            Some("The payload is not valid JSON."),
        );
    };
    let authorization = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let mut db = app.db.lock().expect("db");
    let Some(i) = db
        .rows
        .iter()
        .position(|r| r.get("sys_id") == sys_id && r.table == table)
    else {
        return no_record();
    };
    let number = db.rows[i].get("number").to_string();
    for (k, v) in &doc {
        let text = match v {
            Value::String(s) => s.clone(),
            Value::Null => String::new(),
            other => other.to_string(),
        };
        match k.as_str() {
            "work_notes" | "comments" if !text.is_empty() => db.journal.push(WorkNote {
                number: number.clone(),
                field: k.clone(),
                text,
                authorization: authorization.clone(),
            }),
            "state" | "assigned_to" | "short_description" => {
                db.rows[i].fields.insert(k.clone(), text);
            }
            _ => {}
        }
    }
    db.rows[i]
        .fields
        .insert("sys_updated_on".into(), glide_time());
    let row = db.rows[i].clone();
    axum::Json(json!({ "result": db.render(&row, &Render::from(&q)) })).into_response()
}
