//! Webhook ingestion: signature and freshness checks, then the provider's payload shape turned
//! into a [`TicketUpdate`].
//!
//! - `generic` and `servicenow`: headers `X-Jitgate-Timestamp: <unix seconds>` and
//!   `X-Jitgate-Signature: sha256=<hex HMAC-SHA256(secret, "<timestamp>.<raw body>")>`; optional
//!   `X-Jitgate-Delivery: <unique id>` (else the body's digest identifies the delivery).
//! - `jira`: `X-Hub-Signature: sha256=<hex HMAC-SHA256(secret, raw body)>` as Jira Cloud sends it;
//!   freshness from the body's `timestamp` (ms); `X-Atlassian-Webhook-Identifier` identifies the
//!   delivery across retries.

use http::HeaderMap;
use serde::Deserialize;
use serde_json::Value;

use super::TicketUpdate;
use crate::config::Config;
use crate::crypto;
use crate::types::{Secret, TicketRef, UnixTime, UserName};

/// Which ticket system sent the webhook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    Generic,
    Jira,
    ServiceNow,
}

impl Provider {
    /// Parse the path segment.
    pub fn from_path(s: &str) -> Option<Self> {
        match s {
            "generic" => Some(Self::Generic),
            "jira" => Some(Self::Jira),
            "servicenow" => Some(Self::ServiceNow),
            _ => None,
        }
    }

    /// The name used in audit records and ticket sources.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Generic => "generic",
            Self::Jira => "jira",
            Self::ServiceNow => "servicenow",
        }
    }
}

/// Why a webhook was refused. Each message says what the sender must fix.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WebhookError {
    #[error("webhook ingestion is not configured; set [tickets] webhook_secret")]
    NotConfigured,
    #[error("missing {0} header; sign the request as described in the README")]
    MissingHeader(&'static str),
    #[error("the signature does not match the body; check the shared secret and sign the raw body")]
    BadSignature,
    #[error(
        "the timestamp is {0} s from the gateway's clock, outside the {1} s window; send it promptly with the current time"
    )]
    Stale(i64, u64),
    #[error("the timestamp is not a number of {0}")]
    BadTimestamp(&'static str),
    #[error("the body is not a valid {0} payload: {1}")]
    BadPayload(&'static str, String),
}

/// A verified delivery: its idempotency key and the update it carries (`None` for events that
/// do not concern a ticket's state, which are acknowledged and ignored).
#[derive(Debug)]
pub struct Delivery {
    pub key: String,
    pub update: Option<TicketUpdate>,
}

fn header<'a>(h: &'a HeaderMap, name: &'static str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok()).map(str::trim)
}

fn check_sig(secret: &Secret, signed: &[u8], header_value: &str) -> Result<(), WebhookError> {
    let hexsig = header_value.strip_prefix("sha256=").unwrap_or(header_value);
    let tag = hex::decode(hexsig).map_err(|_| WebhookError::BadSignature)?;
    if crypto::hmac_sha256_verify(secret.expose().as_bytes(), signed, &tag) {
        Ok(())
    } else {
        Err(WebhookError::BadSignature)
    }
}

fn check_fresh(ts: i64, now: UnixTime, window: u64) -> Result<(), WebhookError> {
    let skew = ts.saturating_sub(now);
    if skew.unsigned_abs() > window {
        return Err(WebhookError::Stale(skew, window));
    }
    Ok(())
}

/// Verify and parse one delivery.
pub fn verify_and_parse(
    provider: Provider,
    cfg: &Config,
    secret: &Secret,
    headers: &HeaderMap,
    body: &[u8],
    now: UnixTime,
) -> Result<Delivery, WebhookError> {
    let window = cfg.tickets.webhook_window.as_secs();
    match provider {
        Provider::Generic | Provider::ServiceNow => {
            let ts_text = header(headers, "x-jitgate-timestamp")
                .ok_or(WebhookError::MissingHeader("X-Jitgate-Timestamp"))?;
            let sig = header(headers, "x-jitgate-signature")
                .ok_or(WebhookError::MissingHeader("X-Jitgate-Signature"))?;
            let mut signed = Vec::with_capacity(ts_text.len() + 1 + body.len());
            signed.extend_from_slice(ts_text.as_bytes());
            signed.push(b'.');
            signed.extend_from_slice(body);
            check_sig(secret, &signed, sig)?;
            let ts: i64 = ts_text
                .parse()
                .map_err(|_| WebhookError::BadTimestamp("seconds"))?;
            check_fresh(ts, now, window)?;
            let key = match header(headers, "x-jitgate-delivery") {
                Some(d) if !d.is_empty() && d.len() <= 200 => d.to_string(),
                _ => format!("sha256:{}", crypto::sha256_hex(&signed)),
            };
            let update = if provider == Provider::Generic {
                parse_generic(cfg, body)?
            } else {
                parse_servicenow(cfg, body)?
            };
            Ok(Delivery {
                key: format!("{}:{key}", provider.as_str()),
                update: Some(update),
            })
        }
        Provider::Jira => {
            let sig = header(headers, "x-hub-signature")
                .ok_or(WebhookError::MissingHeader("X-Hub-Signature"))?;
            check_sig(secret, body, sig)?;
            let v: Value = serde_json::from_slice(body)
                .map_err(|e| WebhookError::BadPayload("Jira", e.to_string()))?;
            let ts_ms =
                v.get("timestamp")
                    .and_then(Value::as_i64)
                    .ok_or(WebhookError::BadTimestamp(
                        "milliseconds in the body's timestamp",
                    ))?;
            check_fresh(ts_ms / 1000, now, window)?;
            let key = match header(headers, "x-atlassian-webhook-identifier") {
                Some(d) if !d.is_empty() && d.len() <= 200 => d.to_string(),
                _ => format!("sha256:{}", crypto::sha256_hex(body)),
            };
            Ok(Delivery {
                key: format!("jira:{key}"),
                update: parse_jira(cfg, &v)?,
            })
        }
    }
}

/// The user whose `external_ids` contain `system:id`.
fn map_external(cfg: &Config, system: &str, id: &str) -> Option<UserName> {
    let want = format!("{system}:{id}");
    cfg.users
        .iter()
        .find(|u| u.external_ids.iter().any(|x| x == &want))
        .map(|u| u.name.clone())
}

fn ticket_ref(provider: &'static str, s: &str) -> Result<TicketRef, WebhookError> {
    s.parse()
        .map_err(|e: String| WebhookError::BadPayload(provider, format!("ticket id: {e}")))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Generic {
    ticket: String,
    state: GenericState,
    assignee: Option<String>,
    title: Option<String>,
}

#[derive(Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum GenericState {
    Open,
    Closed,
    Resolved,
}

fn parse_generic(cfg: &Config, body: &[u8]) -> Result<TicketUpdate, WebhookError> {
    let g: Generic = serde_json::from_slice(body)
        .map_err(|e| WebhookError::BadPayload("generic", e.to_string()))?;
    let id = ticket_ref("generic", &g.ticket)?;
    // A ticket system's ticket (`rt:42`) maps its assignee through that system's identities.
    let system = id
        .system()
        .filter(|s| cfg.ticket_systems.iter().any(|t| t.name == *s))
        .map(str::to_string);
    let named = g.assignee.as_deref().filter(|a| !a.is_empty());
    let assignee = named.and_then(|a| {
        system
            .as_deref()
            .and_then(|s| map_external(cfg, s, a))
            .or_else(|| map_external(cfg, "generic", a))
            .or_else(|| a.parse::<UserName>().ok().filter(|n| cfg.user(n).is_some()))
    });
    // Someone config does not know may still be a person whose sign-in claimed the identity.
    let assignee_as = match (&assignee, &system, named) {
        (None, Some(s), Some(a)) => Some(format!("{s}:{a}")),
        _ => None,
    };
    Ok(TicketUpdate {
        id,
        title: g.title.map(|t| t.chars().take(200).collect()),
        open: g.state == GenericState::Open,
        assignee,
        source: system.unwrap_or_else(|| "generic".into()),
        answer: None,
        assignee_as,
    })
}

fn parse_servicenow(cfg: &Config, body: &[u8]) -> Result<TicketUpdate, WebhookError> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| WebhookError::BadPayload("ServiceNow", e.to_string()))?;
    let number = v
        .get("number")
        .and_then(Value::as_str)
        .ok_or_else(|| WebhookError::BadPayload("ServiceNow", "missing \"number\"".into()))?;
    let state = match v.get("state") {
        Some(Value::String(s)) => s.trim().to_ascii_lowercase(),
        Some(Value::Number(n)) => n.to_string(),
        _ => {
            return Err(WebhookError::BadPayload(
                "ServiceNow",
                "missing \"state\"".into(),
            ));
        }
    };
    // Incident states: 1 new, 2 in progress, 3 on hold, 6 resolved, 7 closed, 8 canceled.
    let open = !matches!(
        state.as_str(),
        "6" | "7" | "8" | "resolved" | "closed" | "canceled" | "cancelled"
    );
    let assigned = match v.get("assigned_to") {
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Object(o)) => o
            .get("user_name")
            .or_else(|| o.get("value"))
            .and_then(Value::as_str)
            .map(str::to_string),
        _ => None,
    };
    let assigned = assigned.filter(|a| !a.is_empty());
    let assignee = assigned
        .as_deref()
        .and_then(|a| map_external(cfg, "servicenow", a));
    let assignee_as = match (&assignee, assigned) {
        (None, Some(a)) => Some(format!("servicenow:{a}")),
        _ => None,
    };
    Ok(TicketUpdate {
        id: ticket_ref("ServiceNow", number)?,
        title: v
            .get("short_description")
            .and_then(Value::as_str)
            .map(|t| t.chars().take(200).collect()),
        open,
        assignee,
        source: "servicenow".into(),
        answer: None,
        assignee_as,
    })
}

fn parse_jira(cfg: &Config, v: &Value) -> Result<Option<TicketUpdate>, WebhookError> {
    let event = v.get("webhookEvent").and_then(Value::as_str).unwrap_or("");
    if !matches!(
        event,
        "jira:issue_updated" | "jira:issue_created" | "jira:issue_deleted"
    ) {
        return Ok(None);
    }
    let issue = v
        .get("issue")
        .ok_or_else(|| WebhookError::BadPayload("Jira", "missing \"issue\"".into()))?;
    let key = issue
        .get("key")
        .and_then(Value::as_str)
        .ok_or_else(|| WebhookError::BadPayload("Jira", "missing \"issue.key\"".into()))?;
    let fields = issue.get("fields").unwrap_or(&Value::Null);
    let category = fields
        .pointer("/status/statusCategory/key")
        .and_then(Value::as_str)
        .unwrap_or("new");
    let account = fields
        .pointer("/assignee/accountId")
        .and_then(Value::as_str)
        .filter(|id| !id.is_empty());
    let assignee = account.and_then(|id| map_external(cfg, "jira", id));
    let assignee_as = match (&assignee, account) {
        (None, Some(id)) => Some(format!("jira:{id}")),
        _ => None,
    };
    Ok(Some(TicketUpdate {
        id: ticket_ref("Jira", key)?,
        title: fields
            .get("summary")
            .and_then(Value::as_str)
            .map(|t| t.chars().take(200).collect()),
        open: category != "done" && event != "jira:issue_deleted",
        assignee,
        source: "jira".into(),
        answer: None,
        assignee_as,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn cfg() -> Config {
        Config::from_text(
            r#"
[gateway]
public_name = "gw"
[[users]]
name = "alice"
roles = ["technician"]
external_ids = ["jira:557058:c9eb", "servicenow:alice.smith"]
"#,
            Path::new("/x/j.toml"),
        )
        .unwrap()
    }

    fn signed(secret: &str, ts: i64, body: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        let tag = crypto::hmac_sha256(secret.as_bytes(), format!("{ts}.{body}").as_bytes());
        h.insert("x-jitgate-timestamp", ts.to_string().parse().unwrap());
        h.insert(
            "x-jitgate-signature",
            format!("sha256={}", hex::encode(tag)).parse().unwrap(),
        );
        h
    }

    const SECRET: &str = "0123456789abcdef-secret";

    #[test]
    fn generic_signed_fresh_body_parses() {
        let body = r#"{"ticket":"INC-7","state":"closed","assignee":"alice"}"#;
        let d = verify_and_parse(
            Provider::Generic,
            &cfg(),
            &Secret::new(SECRET),
            &signed(SECRET, 1000, body),
            body.as_bytes(),
            1010,
        )
        .unwrap();
        let u = d.update.unwrap();
        assert!(!u.open);
        assert_eq!(u.assignee.unwrap().as_str(), "alice");
        assert!(d.key.starts_with("generic:sha256:"));
    }

    #[test]
    fn wrong_secret_stale_time_and_moved_timestamp_are_refused() {
        let body = r#"{"ticket":"INC-7","state":"closed"}"#;
        let c = cfg();
        let s = Secret::new(SECRET);
        let err = verify_and_parse(
            Provider::Generic,
            &c,
            &s,
            &signed("another-secret-xxxxx", 1000, body),
            body.as_bytes(),
            1000,
        )
        .unwrap_err();
        assert_eq!(err, WebhookError::BadSignature);
        let err = verify_and_parse(
            Provider::Generic,
            &c,
            &s,
            &signed(SECRET, 1000, body),
            body.as_bytes(),
            1000 + 301,
        )
        .unwrap_err();
        assert!(matches!(err, WebhookError::Stale(-301, 300)), "{err}");
        let mut h = signed(SECRET, 1000, body);
        h.insert("x-jitgate-timestamp", "2000".parse().unwrap());
        let err =
            verify_and_parse(Provider::Generic, &c, &s, &h, body.as_bytes(), 2000).unwrap_err();
        assert_eq!(err, WebhookError::BadSignature);
    }

    #[test]
    fn jira_done_category_closes_and_maps_account_ids() {
        let body = r#"{"timestamp":1000000,"webhookEvent":"jira:issue_updated","issue":{"key":"OPS-121","fields":{"status":{"name":"Done","statusCategory":{"key":"done"}},"assignee":{"accountId":"557058:c9eb"}}}}"#;
        let mut h = HeaderMap::new();
        let tag = crypto::hmac_sha256(SECRET.as_bytes(), body.as_bytes());
        h.insert(
            "x-hub-signature",
            format!("sha256={}", hex::encode(tag)).parse().unwrap(),
        );
        h.insert("x-atlassian-webhook-identifier", "abc-1".parse().unwrap());
        let d = verify_and_parse(
            Provider::Jira,
            &cfg(),
            &Secret::new(SECRET),
            &h,
            body.as_bytes(),
            1000,
        )
        .unwrap();
        assert_eq!(d.key, "jira:abc-1");
        let u = d.update.unwrap();
        assert_eq!(u.id.as_str(), "OPS-121");
        assert!(!u.open);
        assert_eq!(u.assignee.unwrap().as_str(), "alice");
    }

    #[test]
    fn servicenow_resolved_state_closes() {
        let body = r#"{"number":"INC0010001","state":"6","assigned_to":"alice.smith"}"#;
        let d = verify_and_parse(
            Provider::ServiceNow,
            &cfg(),
            &Secret::new(SECRET),
            &signed(SECRET, 5, body),
            body.as_bytes(),
            5,
        )
        .unwrap();
        let u = d.update.unwrap();
        assert!(!u.open);
        assert_eq!(u.assignee.unwrap().as_str(), "alice");
        let body = r#"{"number":"INC0010001","state":2,"assigned_to":"bob.jones"}"#;
        let d = verify_and_parse(
            Provider::ServiceNow,
            &cfg(),
            &Secret::new(SECRET),
            &signed(SECRET, 5, body),
            body.as_bytes(),
            5,
        )
        .unwrap();
        let u = d.update.unwrap();
        assert!(u.open);
        assert_eq!(u.assignee, None);
        // Someone config does not map: left for the people whose sign-in claimed the id.
        assert_eq!(u.assignee_as.as_deref(), Some("servicenow:bob.jones"));
    }
}
