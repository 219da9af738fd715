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

use std::collections::HashMap;

use http::Method;
use serde_json::{Value, json};

use super::http::{Answer, Http, encode};
use super::{Remote, SystemError};
use crate::config::{TicketSystemConfig, TicketSystemKind};

/// Tickets read in one RT search request.
const BATCH: usize = 100;

/// One ticket system's API.
pub(super) struct Client {
    pub name: String,
    kind: TicketSystemKind,
    table: String,
    http: Http,
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
                let v = self.json(&a)?;
                let assignee = text(&v, "/fields/assignee/accountId")
                    .or_else(|| text(&v, "/fields/assignee/name"));
                Ok(Remote {
                    state: text(&v, "/fields/status/statusCategory/key").unwrap_or_default(),
                    assignee,
                    title: text(&v, "/fields/summary"),
                })
            }
            TicketSystemKind::Servicenow => {
                let (_, remote) = self.servicenow_record(id).await?;
                Ok(remote)
            }
        }
    }

    /// RT: many tickets in one search (`id = 1 OR id = 2 ...`), up to [`BATCH`] per request.
    /// `None` for the kinds that are read one ticket at a time. Tickets missing from the answer
    /// do not exist (any more).
    pub async fn fetch_many(
        &self,
        ids: &[&str],
    ) -> Option<Result<HashMap<String, Remote>, SystemError>> {
        if self.kind != TicketSystemKind::Rt {
            return None;
        }
        let mut found = HashMap::new();
        for chunk in ids.chunks(BATCH) {
            let numeric: Vec<&&str> = chunk
                .iter()
                .filter(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()))
                .collect();
            if numeric.is_empty() {
                continue;
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
            let a = match self.call(Method::GET, &path, None, "").await {
                Ok(a) => a,
                Err(e) => return Some(Err(e)),
            };
            let v = match self.json(&a) {
                Ok(v) => v,
                Err(e) => return Some(Err(e)),
            };
            for item in v
                .get("items")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
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
        }
        Some(Ok(found))
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
            "/api/now/table/{}?sysparm_query=number%3D{}&sysparm_fields=sys_id,number,state,assigned_to.user_name,short_description&sysparm_limit=1&sysparm_exclude_reference_link=true",
            encode(&self.table),
            encode(number)
        );
        let a = self.call(Method::GET, &path, None, number).await?;
        let v = self.json(&a)?;
        let Some(rec) = v.pointer("/result/0") else {
            return Err(self.not_found(number));
        };
        let state = match rec.get("state") {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            _ => String::new(),
        };
        let sys_id = text(rec, "/sys_id").ok_or_else(|| self.not_found(number))?;
        Ok((
            sys_id,
            Remote {
                state,
                assignee: text(rec, "/assigned_to.user_name"),
                title: text(rec, "/short_description"),
            },
        ))
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
