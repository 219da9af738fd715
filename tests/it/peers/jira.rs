//! A Jira test server built from Jira's documented REST v2 shapes (Jira Cloud platform REST API
//! v2, developer.atlassian.com/cloud/jira/platform/rest/v2; the same resources on Data Center),
//! on 127.0.0.1 inside the test binary, for jitgate's `kind = "jira"` ticket systems. A test
//! creates issues, moves them between status categories, assigns and closes them, and reads
//! back the comments jitgate wrote and the `Authorization` header of every request.
//!
//! Served:
//! - `GET /rest/api/2/issue/{issueIdOrKey}?fields=...`: the issue bean, `{"id", "key", "self",
//!   "fields": {"summary", "status": {"name", "statusCategory": {"key": "new" | "indeterminate" |
//!   "done", ...}}, "assignee": {"accountId", "displayName", ...} | null}}`, only the fields asked
//!   for (`*all` and `*navigable` for all); 404 `{"errorMessages": ["Issue does not exist or you
//!   do not have permission to see it."], "errors": {}}`.
//! - `POST /rest/api/2/issue/{issueIdOrKey}/comment` `{"body": "..."}`: 201 with the comment
//!   (`id`, `author`, `body`, `created`); 400 `{"errors": {"comment": "Comment body can not be
//!   empty!"}}`; 415 without a JSON content type. `GET` of the same path lists them, paged
//!   (`startAt`, `maxResults`, `total`, `comments`).
//! - `GET /rest/api/2/search?jql=&startAt=&maxResults=&fields=` and `POST /rest/api/2/search`
//!   `{"jql", "startAt", "maxResults", "fields"}`: `{"startAt", "maxResults", "total",
//!   "issues"}`, `maxResults` at most 100 (Cloud's cap; a test may set a lower one). The JQL understood is a small part of
//!   the language: `project`, `key`/`issuekey`, `status`, `statusCategory` and `assignee` with
//!   `=`, `!=`, `in (...)`, `not in (...)`, `is [not] EMPTY`, joined by `AND`, and `ORDER BY key`
//!   or `created` `[ASC|DESC]`; anything else is a 400 "Error in the JQL Query".
//! - `POST /rest/api/2/search/jql` (Jira Cloud's enhanced search, CHANGE-2046) `{"jql",
//!   "maxResults", "fields", "nextPageToken"}`: `{"issues", "nextPageToken", "isLast"}` (no
//!   `startAt`, no `total`; ids only without `fields`), once a test switches the fake to Cloud,
//!   which also makes the legacy search answer 410 Gone as Cloud does.
//! - Every request needs the configured credentials (401 otherwise); faults a test queues are
//!   answered as Jira does: 429 with `Retry-After` (seconds) and `X-RateLimit-Reset`, 401, 403,
//!   500, 503, each with `{"errorMessages": [...], "errors": {}}` (Jira's ErrorCollection).

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Map, Value, json};

use super::fake::{Auth, Fault, Gate, HttpPeer, Seen, through_gate};
use jql::Jql;

mod jql;

/// Jira Cloud's largest page of search results.
const MAX_RESULTS_CAP: usize = 100;
/// The page size when a search names none.
const DEFAULT_MAX_RESULTS: usize = 50;

/// A Jira status category (the three Jira has, by their keys).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Category {
    New,
    Indeterminate,
    Done,
}

impl Category {
    fn key(self) -> &'static str {
        match self {
            Self::New => "new",
            Self::Indeterminate => "indeterminate",
            Self::Done => "done",
        }
    }

    /// Id, category name, colour, and the default workflow's status in it (name, id).
    fn facts(self) -> (u32, &'static str, &'static str, &'static str, &'static str) {
        match self {
            Self::New => (2, "To Do", "blue-gray", "To Do", "10000"),
            Self::Indeterminate => (4, "In Progress", "yellow", "In Progress", "3"),
            Self::Done => (3, "Done", "green", "Done", "10001"),
        }
    }
}

/// A comment an issue received.
#[derive(Clone, Debug)]
pub struct Comment {
    pub id: u64,
    pub issue: String,
    pub body: String,
    /// The `Authorization` header it came with.
    pub authorization: Option<String>,
}

#[derive(Clone, Debug)]
struct Issue {
    id: u64,
    key: String,
    summary: String,
    category: Category,
    assignee: Option<String>,
}

struct Issues {
    base: String,
    /// The largest page a search answers (Jira caps `maxResults` by a site setting and
    /// answers fewer than asked for above it); default [`MAX_RESULTS_CAP`].
    page_cap: usize,
    /// Jira Cloud since CHANGE-2046: `/rest/api/2/search` answers 410 Gone, and
    /// `/rest/api/2/search/jql` (enhanced search, `nextPageToken` pages) is served instead.
    cloud: bool,
    issues: Vec<Issue>,
    comments: Vec<Comment>,
    next_id: u64,
}

impl Issues {
    /// The issues `query` matches from `start`, at most `max`, and how many match in all.
    fn page(&self, query: &Jql, fields: &Fields, start: usize, max: usize) -> (Vec<Value>, usize) {
        let mut found: Vec<&Issue> = self.issues.iter().filter(|i| query.matches(i)).collect();
        found.sort_by_key(|i| i.id);
        if query.descending {
            found.reverse();
        }
        let issues = found
            .iter()
            .skip(start)
            .take(max)
            .map(|i| issue_json(&self.base, i, fields))
            .collect();
        (issues, found.len())
    }

    fn find(&self, id_or_key: &str) -> Option<&Issue> {
        self.issues
            .iter()
            .find(|i| i.key.eq_ignore_ascii_case(id_or_key) || i.id.to_string() == id_or_key)
    }

    fn find_mut(&mut self, key: &str) -> &mut Issue {
        self.issues
            .iter_mut()
            .find(|i| i.key == key)
            .unwrap_or_else(|| panic!("the fake Jira has no issue {key}"))
    }
}

#[derive(Clone)]
struct App {
    issues: Arc<Mutex<Issues>>,
    gate: Arc<Gate>,
}

/// A running fake Jira.
pub struct Jira {
    peer: HttpPeer,
    gate: Arc<Gate>,
    issues: Arc<Mutex<Issues>>,
}

impl Jira {
    /// A Jira on a free port that accepts only `auth`.
    pub fn start(auth: Auth) -> Self {
        let gate = Gate::new(auth, refusal);
        let issues = Arc::new(Mutex::new(Issues {
            base: String::new(),
            page_cap: MAX_RESULTS_CAP,
            cloud: false,
            issues: Vec::new(),
            comments: Vec::new(),
            next_id: 10001,
        }));
        let app = App {
            issues: issues.clone(),
            gate: gate.clone(),
        };
        let router = Router::new()
            .route("/rest/api/2/issue/{key}", get(get_issue))
            .route(
                "/rest/api/2/issue/{key}/comment",
                get(list_comments).post(add_comment),
            )
            .route("/rest/api/2/search", get(search_get).post(search_post))
            .route("/rest/api/2/search/jql", axum::routing::post(search_jql))
            .fallback(|| async { jira_error(StatusCode::NOT_FOUND, "Not Found") })
            .with_state(app)
            .layer(axum::middleware::from_fn_with_state(
                gate.clone(),
                through_gate,
            ));
        let peer = HttpPeer::start(router);
        issues.lock().expect("issues").base = peer.url();
        Self { peer, gate, issues }
    }

    /// The base URL (`url` in `[[ticket_systems]]`).
    pub fn url(&self) -> String {
        self.peer.url()
    }

    pub fn port(&self) -> u16 {
        self.peer.port()
    }

    /// Create issue `key` (`OPS-1`) in status "To Do", assigned to the account id `assignee`.
    pub fn create_issue(&self, key: &str, summary: &str, assignee: Option<&str>) {
        let mut s = self.issues.lock().expect("issues");
        assert!(s.find(key).is_none(), "issue {key} exists already");
        let id = s.next_id;
        s.next_id += 1;
        s.issues.push(Issue {
            id,
            key: key.to_string(),
            summary: summary.to_string(),
            category: Category::New,
            assignee: assignee.map(str::to_string),
        });
    }

    /// Move issue `key` to a status of `category` (as a workflow transition would).
    pub fn set_category(&self, key: &str, category: Category) {
        self.issues.lock().expect("issues").find_mut(key).category = category;
    }

    /// Resolve issue `key` (status "Done").
    pub fn close(&self, key: &str) {
        self.set_category(key, Category::Done);
    }

    /// Search as Jira Cloud does now: the legacy search is gone (410), enhanced search serves.
    pub fn as_cloud(&self) {
        self.issues.lock().expect("issues").cloud = true;
    }

    /// Answer searches with pages of at most `n` issues, whatever `maxResults` asks for.
    pub fn cap_pages(&self, n: usize) {
        self.issues.lock().expect("issues").page_cap = n;
    }

    /// Give issue `key` to the account id `assignee` (or nobody).
    pub fn assign(&self, key: &str, assignee: Option<&str>) {
        self.issues.lock().expect("issues").find_mut(key).assignee = assignee.map(str::to_string);
    }

    /// The comments issue `key` received, oldest first.
    pub fn comments(&self, key: &str) -> Vec<Comment> {
        let s = self.issues.lock().expect("issues");
        s.comments
            .iter()
            .filter(|c| c.issue == key)
            .cloned()
            .collect()
    }

    /// The bodies of [`Jira::comments`].
    pub fn comment_bodies(&self, key: &str) -> Vec<String> {
        self.comments(key).into_iter().map(|c| c.body).collect()
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Seen> {
        self.gate.requests()
    }

    /// See [`Gate::fail_next`].
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

/// Jira's ErrorCollection: `{"errorMessages": [message], "errors": {}}`.
fn jira_error(status: StatusCode, message: &str) -> Response {
    (
        status,
        axum::Json(json!({ "errorMessages": [message], "errors": {} })),
    )
        .into_response()
}

fn refusal(f: Fault) -> Response {
    match f {
        Fault::RateLimited { retry_after } => {
            let reset =
                time::OffsetDateTime::now_utc() + time::Duration::seconds(retry_after as i64);
            let reset = reset
                .format(time::macros::format_description!(
                    "[year]-[month]-[day]T[hour]:[minute]Z"
                ))
                .expect("a timestamp");
            let mut r = jira_error(StatusCode::TOO_MANY_REQUESTS, "Rate limit exceeded.");
            let h = r.headers_mut();
            h.insert("retry-after", retry_after.to_string().parse().unwrap());
            h.insert("x-ratelimit-reset", reset.parse().unwrap());
            h.insert("ratelimit-reason", "jira-burst-based".parse().unwrap());
            r
        }
        Fault::Status(401) => jira_error(
            StatusCode::UNAUTHORIZED,
            "You are not authenticated. Authentication required to perform this operation.",
        ),
        Fault::Status(403) => jira_error(
            StatusCode::FORBIDDEN,
            "You do not have the permission to see the specified issue.",
        ),
        Fault::Status(503) => jira_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "Service unavailable; try again later.",
        ),
        Fault::Status(s) => jira_error(
            StatusCode::from_u16(s).expect("an HTTP status"),
            "Internal server error",
        ),
    }
}

/// `2026-05-01T10:00:00.000+0000`, as Jira writes times.
fn jira_time() -> String {
    time::OffsetDateTime::now_utc()
        .format(time::macros::format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]+0000"
        ))
        .expect("a timestamp")
}

fn user_json(base: &str, account_id: &str, display: &str) -> Value {
    json!({
        "self": format!("{base}/rest/api/2/user?accountId={account_id}"),
        "accountId": account_id,
        "displayName": display,
        "active": true,
        "timeZone": "UTC",
        "accountType": "atlassian",
    })
}

/// Which fields an answer carries (`fields=`: a comma list; `*all`, `*navigable`; `-name`).
struct Fields(BTreeSet<&'static str>);

impl Fields {
    const ALL: [&'static str; 3] = ["summary", "status", "assignee"];

    fn parse(spec: Option<&str>) -> Self {
        let mut set = BTreeSet::new();
        let spec = spec.unwrap_or("*all");
        for f in spec.split(',').map(str::trim) {
            match f {
                "*all" | "*navigable" => set.extend(Self::ALL),
                f if f.starts_with('-') => {
                    set.remove(&f[1..]);
                }
                f => {
                    if let Some(known) = Self::ALL.iter().find(|k| **k == f) {
                        set.insert(*known);
                    }
                }
            }
        }
        Self(set)
    }
}

fn issue_json(base: &str, i: &Issue, fields: &Fields) -> Value {
    let mut f = Map::new();
    if fields.0.contains("summary") {
        f.insert("summary".into(), json!(i.summary));
    }
    if fields.0.contains("status") {
        let (cat_id, cat_name, colour, status, status_id) = i.category.facts();
        f.insert(
            "status".into(),
            json!({
                "self": format!("{base}/rest/api/2/status/{status_id}"),
                "description": "",
                "iconUrl": format!("{base}/images/icons/statuses/generic.png"),
                "name": status,
                "id": status_id,
                "statusCategory": {
                    "self": format!("{base}/rest/api/2/statuscategory/{cat_id}"),
                    "id": cat_id,
                    "key": i.category.key(),
                    "colorName": colour,
                    "name": cat_name,
                },
            }),
        );
    }
    if fields.0.contains("assignee") {
        let a = i
            .assignee
            .as_deref()
            .map(|a| user_json(base, a, a))
            .unwrap_or(Value::Null);
        f.insert("assignee".into(), a);
    }
    json!({
        "expand": "renderedFields,names,schema,operations,editmeta,changelog,versionedRepresentations",
        "id": i.id.to_string(),
        "self": format!("{base}/rest/api/2/issue/{}", i.id),
        "key": i.key,
        "fields": f,
    })
}

const NO_ISSUE: &str = "Issue does not exist or you do not have permission to see it.";

async fn get_issue(
    State(app): State<App>,
    Path(key): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let s = app.issues.lock().expect("issues");
    match s.find(&key) {
        Some(i) => axum::Json(issue_json(
            &s.base,
            i,
            &Fields::parse(q.get("fields").map(String::as_str)),
        ))
        .into_response(),
        None => jira_error(StatusCode::NOT_FOUND, NO_ISSUE),
    }
}

fn comment_json(base: &str, issue_id: u64, c: &Comment, author: &str) -> Value {
    let when = jira_time();
    json!({
        "self": format!("{base}/rest/api/2/issue/{issue_id}/comment/{}", c.id),
        "id": c.id.to_string(),
        "author": user_json(base, author, author),
        "body": c.body,
        "updateAuthor": user_json(base, author, author),
        "created": when,
        "updated": when,
        "jsdPublic": true,
    })
}

async fn add_comment(
    State(app): State<App>,
    Path(key): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let json_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !json_type {
        return jira_error(StatusCode::UNSUPPORTED_MEDIA_TYPE, "Unsupported Media Type");
    }
    let Ok(doc) = serde_json::from_slice::<Value>(&body) else {
        return jira_error(
            StatusCode::BAD_REQUEST,
            "Unexpected character in the request body; it is not JSON.",
        );
    };
    let author = app.gate.auth().name().to_string();
    let authorization = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let mut s = app.issues.lock().expect("issues");
    let Some(issue) = s.find(&key).cloned() else {
        return jira_error(StatusCode::NOT_FOUND, NO_ISSUE);
    };
    let text = doc.get("body").and_then(Value::as_str).unwrap_or_default();
    if text.trim().is_empty() {
        return (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({
                "errorMessages": [],
                "errors": { "comment": "Comment body can not be empty!" },
            })),
        )
            .into_response();
    }
    let c = Comment {
        id: s.next_id,
        issue: issue.key.clone(),
        body: text.to_string(),
        authorization,
    };
    s.next_id += 1;
    let answer = comment_json(&s.base, issue.id, &c, &author);
    s.comments.push(c);
    (StatusCode::CREATED, axum::Json(answer)).into_response()
}

/// `startAt` / `maxResults` of a paged resource; `Err` is the 400 in Jira's words when they are
/// not numbers.
fn page(
    start_at: Option<&Value>,
    max_results: Option<&Value>,
    default_max: usize,
) -> Result<(usize, usize), Box<Response>> {
    let num = |v: Option<&Value>, name: &str, default: usize| {
        match v {
            None | Some(Value::Null) => Ok(default),
            Some(Value::Number(n)) => n.as_u64().map(|n| n as usize).ok_or(()),
            Some(Value::String(s)) => s.parse().map_err(|_| ()),
            Some(_) => Err(()),
        }
        .map_err(|()| {
            Box::new(jira_error(
                StatusCode::BAD_REQUEST,
                &format!("The value of '{name}' must be a number."),
            ))
        })
    };
    Ok((
        num(start_at, "startAt", 0)?,
        num(max_results, "maxResults", default_max)?,
    ))
}

async fn list_comments(
    State(app): State<App>,
    Path(key): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let s = app.issues.lock().expect("issues");
    let Some(issue) = s.find(&key) else {
        return jira_error(StatusCode::NOT_FOUND, NO_ISSUE);
    };
    let q: HashMap<String, Value> = q.into_iter().map(|(k, v)| (k, json!(v))).collect();
    let (start, max) = match page(q.get("startAt"), q.get("maxResults"), 5000) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let all: Vec<&Comment> = s.comments.iter().filter(|c| c.issue == issue.key).collect();
    let author = app.gate.auth().name().to_string();
    let comments: Vec<Value> = all
        .iter()
        .skip(start)
        .take(max)
        .map(|c| comment_json(&s.base, issue.id, c, &author))
        .collect();
    axum::Json(json!({
        "startAt": start,
        "maxResults": max,
        "total": all.len(),
        "comments": comments,
    }))
    .into_response()
}

/// A search body's `fields` array as the query parameter's comma list.
fn body_fields(doc: &Value) -> Option<String> {
    doc.get("fields").and_then(Value::as_array).map(|fs| {
        fs.iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(",")
    })
}

/// The answer Jira Cloud gives the removed legacy search.
fn search_removed() -> Response {
    jira_error(
        StatusCode::GONE,
        "The requested API has been removed. Please migrate to the /rest/api/3/search/jql API. A full migration guideline is available at https://developer.atlassian.com/changelog/#CHANGE-2046",
    )
}

/// `POST /rest/api/2/search/jql` (Cloud's enhanced search): `{"jql", "maxResults", "fields",
/// "nextPageToken"}` → `{"issues", "nextPageToken"?, "isLast"}`; no `startAt`, no `total`.
async fn search_jql(State(app): State<App>, body: Bytes) -> Response {
    if !app.issues.lock().expect("issues").cloud {
        return jira_error(StatusCode::NOT_FOUND, "Not Found");
    }
    let Ok(doc) = serde_json::from_slice::<Value>(&body) else {
        return jira_error(StatusCode::BAD_REQUEST, "The request body is not JSON.");
    };
    let jql = doc.get("jql").and_then(Value::as_str).unwrap_or_default();
    if jql.trim().is_empty() {
        return jira_error(
            StatusCode::BAD_REQUEST,
            "Unbounded JQL queries are not allowed here. Please add a search restriction to your query.",
        );
    }
    let start = match doc.get("nextPageToken") {
        None | Some(Value::Null) => 0,
        Some(t) => match t
            .as_str()
            .and_then(|t| t.strip_prefix("page-"))
            .map(str::parse)
        {
            Some(Ok(n)) => n,
            _ => return jira_error(StatusCode::BAD_REQUEST, "Invalid nextPageToken."),
        },
    };
    let fields = body_fields(&doc);
    let max = match doc.get("maxResults") {
        None => DEFAULT_MAX_RESULTS,
        Some(v) => match v.as_u64() {
            Some(n) => n as usize,
            None => {
                return jira_error(StatusCode::BAD_REQUEST, "maxResults must be a number.");
            }
        },
    };
    let query = match Jql::parse(jql) {
        Ok(q) => q,
        Err(why) => return jira_error(StatusCode::BAD_REQUEST, &why),
    };
    let s = app.issues.lock().expect("issues");
    let max = max.clamp(1, s.page_cap);
    // Without fields, enhanced search gives ids only.
    let fields = Fields::parse(fields.as_deref().or(Some("id")));
    let (issues, total) = s.page(&query, &fields, start, max);
    let next = start + issues.len();
    let mut answer = json!({ "issues": issues, "isLast": next >= total });
    if next < total {
        answer["nextPageToken"] = json!(format!("page-{next}"));
    }
    axum::Json(answer).into_response()
}

async fn search_get(State(app): State<App>, Query(q): Query<HashMap<String, String>>) -> Response {
    if app.issues.lock().expect("issues").cloud {
        return search_removed();
    }
    let get = |k: &str| q.get(k).map(|v| json!(v));
    search(
        &app,
        q.get("jql").map(String::as_str).unwrap_or_default(),
        get("startAt").as_ref(),
        get("maxResults").as_ref(),
        q.get("fields").map(String::as_str),
    )
}

async fn search_post(State(app): State<App>, body: Bytes) -> Response {
    if app.issues.lock().expect("issues").cloud {
        return search_removed();
    }
    let Ok(doc) = serde_json::from_slice::<Value>(&body) else {
        return jira_error(StatusCode::BAD_REQUEST, "The request body is not JSON.");
    };
    let fields = body_fields(&doc);
    search(
        &app,
        doc.get("jql").and_then(Value::as_str).unwrap_or_default(),
        doc.get("startAt"),
        doc.get("maxResults"),
        fields.as_deref().or(Some("*navigable")),
    )
}

fn search(
    app: &App,
    jql: &str,
    start_at: Option<&Value>,
    max_results: Option<&Value>,
    fields: Option<&str>,
) -> Response {
    let (start, max) = match page(start_at, max_results, DEFAULT_MAX_RESULTS) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let max = max.min(app.issues.lock().expect("issues").page_cap);
    let query = match Jql::parse(jql) {
        Ok(q) => q,
        Err(why) => return jira_error(StatusCode::BAD_REQUEST, &why),
    };
    let s = app.issues.lock().expect("issues");
    let fields = Fields::parse(fields.or(Some("*navigable")));
    let (issues, total) = s.page(&query, &fields, start, max);
    axum::Json(json!({
        "expand": "schema,names",
        "startAt": start,
        "maxResults": max,
        "total": total,
        "issues": issues,
    }))
    .into_response()
}
