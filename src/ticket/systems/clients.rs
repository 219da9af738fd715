//! The three ticket-system APIs, each reduced to the two things jitgate needs: read a ticket
//! (state, assignee, title) and add a comment to it.
//!
//! - Request Tracker 5 REST2: `GET /REST/2.0/ticket/{id}` (`Status`, `Owner.id`, `Subject`),
//!   `POST /REST/2.0/ticket/{id}/comment` (text/plain).
//! - Jira (Cloud and Data Center, REST v2): `GET /rest/api/2/issue/{key}?fields=status,assignee,summary`
//!   (`fields.status.statusCategory.key`, `fields.assignee.accountId` or `.name`),
//!   `POST /rest/api/2/issue/{key}/comment` `{"body": ...}`.
//! - ServiceNow Table API: `GET /api/now/table/{table}?sysparm_query=number={n}&...`
//!   (`state`, `assigned_to.user_name`, `short_description`, `sys_id`), then
//!   `PATCH /api/now/table/{table}/{sys_id}` `{"work_notes": ...}`.
//!
//! The reconcile pass reads many tickets at once ([`Client::fetch_many`]): RT's ticket search,
//! Jira's `POST /rest/api/2/search` (Data Center) or `POST /rest/api/2/search/jql` (Cloud),
//! ServiceNow's table query with `numberIN`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};

use http::Method;
use serde_json::{Value, json};

use super::http::{Answer, Http, encode};
use super::{Remote, SystemError};
use crate::config::{TicketSystemConfig, TicketSystemKind};

/// Tickets asked for in one search (and Jira's largest page, Cloud's cap).
const BATCH: usize = 100;
/// The fields jitgate reads from a Jira issue.
const JIRA_FIELDS: [&str; 3] = ["status", "assignee", "summary"];
/// The fields jitgate reads from a ServiceNow record.
const SN_FIELDS: &str = "sys_id,number,state,assigned_to.user_name,short_description";

/// One ticket system's API.
pub(super) struct Client {
    pub name: String,
    kind: TicketSystemKind,
    table: String,
    http: Http,
    /// Jira: the legacy search answered 410 Gone (Cloud); use the enhanced one.
    enhanced_search: AtomicBool,
}

impl Client {
    /// Requests sent to the system so far.
    pub fn calls(&self) -> u64 {
        self.http.calls()
    }

    pub fn new(cfg: &TicketSystemConfig, http: Http) -> Self {
        Self {
            name: cfg.name.clone(),
            kind: cfg.kind,
            table: cfg.table().to_string(),
            http,
            enhanced_search: AtomicBool::new(false),
        }
    }

    fn unreachable(&self, reason: String) -> SystemError {
        SystemError::Unreachable {
            system: self.name.clone(),
            reason,
        }
    }

    /// Turn an answer that is not a success into the error it means.
    fn refusal(&self, a: &Answer, id: &str) -> SystemError {
        let system = self.name.clone();
        match a.status {
            401 | 403 => SystemError::Credentials {
                system,
                status: a.status,
            },
            404 => SystemError::NotFound {
                system,
                id: id.to_string(),
            },
            429 => SystemError::RateLimited {
                system,
                retry_after: a.retry_after.unwrap_or(30),
            },
            s if s >= 500 => SystemError::Unreachable {
                system,
                reason: format!("it answered {s}"),
            },
            s => SystemError::Answer {
                system,
                status: s,
                detail: String::from_utf8_lossy(&a.body).chars().take(200).collect(),
            },
        }
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<(&'static str, Vec<u8>)>,
        id: &str,
    ) -> Result<Answer, SystemError> {
        let a = self
            .http
            .call(method, path, body)
            .await
            .map_err(|e| self.unreachable(e))?;
        if (200..300).contains(&a.status) {
            Ok(a)
        } else {
            Err(self.refusal(&a, id))
        }
    }

    fn json(&self, a: &Answer) -> Result<Value, SystemError> {
        a.json().map_err(|e| self.unreachable(e))
    }

    /// What the system says about ticket `id` (its own id: `42`, `OPS-121`, `INC0010001`).
    pub async fn fetch(&self, id: &str) -> Result<Remote, SystemError> {
        match self.kind {
            TicketSystemKind::Rt => {
                if !id.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(self.not_found(id));
                }
                let a = self
                    .call(Method::GET, &format!("/REST/2.0/ticket/{id}"), None, id)
                    .await?;
                let v = self.json(&a)?;
                let owner = v
                    .pointer("/Owner/id")
                    .and_then(Value::as_str)
                    .filter(|o| *o != "Nobody");
                Ok(Remote {
                    state: text(&v, "/Status").unwrap_or_default(),
                    assignee: owner.map(str::to_string),
                    title: text(&v, "/Subject"),
                })
            }
            TicketSystemKind::Jira => {
                let path = format!(
                    "/rest/api/2/issue/{}?fields=status,assignee,summary",
                    encode(id)
                );
                let a = self.call(Method::GET, &path, None, id).await?;
                Ok(jira_remote(&self.json(&a)?))
            }
            TicketSystemKind::Servicenow => {
                let (_, remote) = self.servicenow_record(id).await?;
                Ok(remote)
            }
        }
    }

    /// Many tickets in few requests: an RT ticket search (`id = 1 OR id = 2 ...`), a Jira
    /// JQL search (`key in (...)`, paged by `startAt`), a ServiceNow table query
    /// (`numberIN...`, paged by `sysparm_offset`), [`BATCH`] tickets per query. What the answer
    /// lacks does not exist in RT (a search finds every ticket that does); Jira and ServiceNow
    /// tickets it lacks (a moved issue answers under its new key) are read one at a time, and a
    /// Jira that refuses both searches (400, 404, 410) gets `None`, so that the caller reads
    /// every ticket alone.
    pub async fn fetch_many(
        &self,
        ids: &[&str],
    ) -> Option<Result<HashMap<String, Remote>, SystemError>> {
        let mut found = HashMap::new();
        for chunk in ids.chunks(BATCH) {
            let got = match self.kind {
                TicketSystemKind::Rt => self.rt_search(chunk).await,
                TicketSystemKind::Jira => match self.jira_search(chunk).await {
                    Err(
                        SystemError::NotFound { .. }
                        | SystemError::Answer {
                            status: 400 | 410, ..
                        },
                    ) => return None,
                    other => other,
                },
                TicketSystemKind::Servicenow => self.servicenow_search(chunk).await,
            };
            match got {
                Ok(got) => found.extend(got),
                Err(e) => return Some(Err(e)),
            }
        }
        if self.kind != TicketSystemKind::Rt {
            for id in ids {
                if !found.contains_key(*id) {
                    match self.fetch(id).await {
                        Ok(remote) => {
                            found.insert(id.to_string(), remote);
                        }
                        Err(SystemError::NotFound { .. }) => {}
                        Err(e) => return Some(Err(e)),
                    }
                }
            }
        }
        Some(Ok(found))
    }

    async fn rt_search(&self, chunk: &[&str]) -> Result<HashMap<String, Remote>, SystemError> {
        let mut found = HashMap::new();
        let numeric: Vec<&&str> = chunk
            .iter()
            .filter(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()))
            .collect();
        if numeric.is_empty() {
            return Ok(found);
        }
        let query = numeric
            .iter()
            .map(|id| format!("id = {id}"))
            .collect::<Vec<_>>()
            .join(" OR ");
        let path = format!(
            "/REST/2.0/tickets?query={}&fields=Status,Owner,Subject&per_page={BATCH}&page=1",
            encode(&query)
        );
        let a = self.call(Method::GET, &path, None, "").await?;
        let v = self.json(&a)?;
        for item in items(&v, "items") {
            let id = match item.get("id") {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Number(n)) => n.to_string(),
                _ => continue,
            };
            let owner = match item.get("Owner") {
                Some(Value::String(s)) => Some(s.clone()),
                Some(o) => o.get("id").and_then(Value::as_str).map(str::to_string),
                None => None,
            }
            .filter(|o| o != "Nobody");
            found.insert(
                id,
                Remote {
                    state: text(item, "/Status").unwrap_or_default(),
                    assignee: owner,
                    title: text(item, "/Subject"),
                },
            );
        }
        Ok(found)
    }

    /// Jira issues by `key in (...)`, every page: Data Center's `POST /rest/api/2/search`
    /// (`startAt`, `total`); on Cloud, where that answers 410 Gone, the enhanced
    /// `POST /rest/api/2/search/jql` (`nextPageToken`), remembered for the next passes.
    async fn jira_search(&self, chunk: &[&str]) -> Result<HashMap<String, Remote>, SystemError> {
        // Only issue keys go into JQL (nothing to quote); other ids are read one at a time.
        let keys: Vec<&str> = chunk.iter().copied().filter(|k| is_jira_key(k)).collect();
        if keys.is_empty() {
            return Ok(HashMap::new());
        }
        let jql = format!("key in ({}) ORDER BY key ASC", keys.join(", "));
        if !self.enhanced_search.load(Ordering::Relaxed) {
            match self.jira_legacy_search(&jql, keys.len()).await {
                Err(SystemError::Answer { status: 410, .. }) => {
                    self.enhanced_search.store(true, Ordering::Relaxed);
                }
                other => return other,
            }
        }
        self.jira_enhanced_search(&jql, keys.len()).await
    }

    async fn jira_legacy_search(
        &self,
        jql: &str,
        asked: usize,
    ) -> Result<HashMap<String, Remote>, SystemError> {
        let mut found = HashMap::new();
        let mut start = 0usize;
        // At most as many pages as keys: a system that pages forever is not followed.
        for _ in 0..=asked {
            let doc = json!({
                "jql": jql,
                "startAt": start,
                "maxResults": BATCH,
                "fields": JIRA_FIELDS,
                "validateQuery": "warn",
            });
            let v = self.jira_post("/rest/api/2/search", &doc).await?;
            let n = jira_issues(&v, &mut found);
            start += n;
            let total = v.get("total").and_then(Value::as_u64).unwrap_or(0) as usize;
            // Jira may answer fewer than maxResults per page: go on until `total`.
            if n == 0 || start >= total.min(asked) {
                break;
            }
        }
        Ok(found)
    }

    async fn jira_enhanced_search(
        &self,
        jql: &str,
        asked: usize,
    ) -> Result<HashMap<String, Remote>, SystemError> {
        let mut found = HashMap::new();
        let mut token: Option<String> = None;
        for _ in 0..=asked {
            let mut doc = json!({ "jql": jql, "maxResults": BATCH, "fields": JIRA_FIELDS });
            if let Some(t) = &token {
                doc["nextPageToken"] = json!(t);
            }
            let v = self.jira_post("/rest/api/2/search/jql", &doc).await?;
            let n = jira_issues(&v, &mut found);
            token = v
                .get("nextPageToken")
                .and_then(Value::as_str)
                .filter(|t| !t.is_empty() && t.len() <= 4096)
                .map(str::to_string);
            let last = v
                .get("isLast")
                .and_then(Value::as_bool)
                .unwrap_or(token.is_none());
            if n == 0 || last || token.is_none() || found.len() >= asked {
                break;
            }
        }
        Ok(found)
    }

    async fn jira_post(&self, path: &str, doc: &Value) -> Result<Value, SystemError> {
        let body = Some(("application/json", doc.to_string().into_bytes()));
        let a = self.call(Method::POST, path, body, "").await?;
        self.json(&a)
    }

    /// `GET /api/now/table/{table}?sysparm_query=numberIN...`, every page of it.
    async fn servicenow_search(
        &self,
        chunk: &[&str],
    ) -> Result<HashMap<String, Remote>, SystemError> {
        let mut found = HashMap::new();
        // `,` and `^` would change the query: such numbers are read one at a time.
        let numbers: Vec<&str> = chunk
            .iter()
            .copied()
            .filter(|n| {
                !n.is_empty()
                    && n.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
            })
            .collect();
        if numbers.is_empty() {
            return Ok(found);
        }
        let query = format!("numberIN{}^ORDERBYnumber", numbers.join(","));
        let mut offset = 0usize;
        for _ in 0..=numbers.len() {
            let path = format!(
                "/api/now/table/{}?sysparm_query={}&sysparm_fields={SN_FIELDS}&sysparm_limit={BATCH}&sysparm_offset={offset}&sysparm_exclude_reference_link=true",
                encode(&self.table),
                encode(&query)
            );
            let a = self.call(Method::GET, &path, None, "").await?;
            let v = self.json(&a)?;
            let records = items(&v, "result");
            let n = records.len();
            for rec in records {
                if let Some(number) = text(rec, "/number") {
                    found.insert(number, servicenow_remote(rec));
                }
            }
            offset += n;
            // An instance may cap pages below sysparm_limit: go on until all are read.
            if n == 0 || offset >= numbers.len() {
                break;
            }
        }
        Ok(found)
    }

    fn not_found(&self, id: &str) -> SystemError {
        SystemError::NotFound {
            system: self.name.clone(),
            id: id.to_string(),
        }
    }

    /// A ServiceNow record by number: its `sys_id` and what it says.
    async fn servicenow_record(&self, number: &str) -> Result<(String, Remote), SystemError> {
        let path = format!(
            "/api/now/table/{}?sysparm_query=number%3D{}&sysparm_fields={SN_FIELDS}&sysparm_limit=1&sysparm_exclude_reference_link=true",
            encode(&self.table),
            encode(number)
        );
        let a = self.call(Method::GET, &path, None, number).await?;
        let v = self.json(&a)?;
        let Some(rec) = v.pointer("/result/0") else {
            return Err(self.not_found(number));
        };
        let sys_id = text(rec, "/sys_id").ok_or_else(|| self.not_found(number))?;
        Ok((sys_id, servicenow_remote(rec)))
    }

    /// Add `body` to ticket `id` as a comment (RT, Jira) or work note (ServiceNow).
    pub async fn comment(&self, id: &str, body: &str) -> Result<(), SystemError> {
        match self.kind {
            TicketSystemKind::Rt => {
                let path = format!("/REST/2.0/ticket/{}/comment", encode(id));
                self.call(
                    Method::POST,
                    &path,
                    Some(("text/plain", body.as_bytes().to_vec())),
                    id,
                )
                .await?;
            }
            TicketSystemKind::Jira => {
                let path = format!("/rest/api/2/issue/{}/comment", encode(id));
                let doc = json!({ "body": body }).to_string().into_bytes();
                self.call(Method::POST, &path, Some(("application/json", doc)), id)
                    .await?;
            }
            TicketSystemKind::Servicenow => {
                let (sys_id, _) = self.servicenow_record(id).await?;
                let path = format!("/api/now/table/{}/{}", encode(&self.table), encode(&sys_id));
                let doc = json!({ "work_notes": body }).to_string().into_bytes();
                self.call(Method::PATCH, &path, Some(("application/json", doc)), id)
                    .await?;
            }
        }
        Ok(())
    }
}

/// Jira's search answer's issues into `found` by key; how many there were.
fn jira_issues(v: &Value, found: &mut HashMap<String, Remote>) -> usize {
    let issues = items(v, "issues");
    for issue in issues {
        if let Some(key) = text(issue, "/key") {
            found.insert(key, jira_remote(issue));
        }
    }
    issues.len()
}

/// A Jira issue bean: status category, assignee (Cloud's `accountId`, Data Center's `name`),
/// summary.
fn jira_remote(v: &Value) -> Remote {
    Remote {
        state: text(v, "/fields/status/statusCategory/key").unwrap_or_default(),
        assignee: text(v, "/fields/assignee/accountId")
            .or_else(|| text(v, "/fields/assignee/name")),
        title: text(v, "/fields/summary"),
    }
}

/// A ServiceNow record with [`SN_FIELDS`].
fn servicenow_remote(rec: &Value) -> Remote {
    Remote {
        state: match rec.get("state") {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            _ => String::new(),
        },
        assignee: text(rec, "/assigned_to.user_name"),
        title: text(rec, "/short_description"),
    }
}

/// A Jira issue key (`OPS-121`): a project key (a letter, then letters, digits or `_`), `-`,
/// a number.
fn is_jira_key(k: &str) -> bool {
    let Some((project, number)) = k.split_once('-') else {
        return false;
    };
    project.len() <= 255
        && project.starts_with(|c: char| c.is_ascii_alphabetic())
        && project
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && !number.is_empty()
        && number.len() <= 18
        && number.bytes().all(|b| b.is_ascii_digit())
}

/// The array under `key` (empty when there is none).
fn items<'a>(v: &'a Value, key: &str) -> &'a [Value] {
    v.get(key)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

fn text(v: &Value, pointer: &str) -> Option<String> {
    let found = if pointer.contains('.') {
        // ServiceNow dot-walked field names are keys, not paths.
        v.get(pointer.trim_start_matches('/'))
    } else {
        v.pointer(pointer)
    };
    found
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(|s| s.chars().take(200).collect())
}
