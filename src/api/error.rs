//! The one place where errors become HTTP responses: `{ "error": code, "message": what to do }`.

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::grant::GrantError;
use crate::ticket::TicketError;
use crate::ticket::webhook::WebhookError;

/// An error answer.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Extra fields (e.g. the id of a denied request).
    pub extra: Option<serde_json::Value>,
}

impl ApiError {
    /// An error with `status`, machine `code` and human `message`.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            extra: None,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the gateway hit an internal error; it is logged, try again or ask an admin",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({ "error": self.code, "message": self.message });
        if let (Some(serde_json::Value::Object(extra)), Some(obj)) =
            (self.extra, body.as_object_mut())
        {
            obj.extend(extra);
        }
        (self.status, Json(body)).into_response()
    }
}

impl From<GrantError> for ApiError {
    fn from(e: GrantError) -> Self {
        match e {
            GrantError::Denied { request, reason } => {
                let mut err = ApiError::new(StatusCode::FORBIDDEN, "denied", reason);
                err.extra = request.map(|r| json!({ "id": r, "state": "denied" }));
                err
            }
            GrantError::Forbidden(m) => ApiError::forbidden(m),
            GrantError::NotFound(m) => ApiError::not_found(m),
            GrantError::Conflict(m) => ApiError::new(StatusCode::CONFLICT, "conflict", m),
            GrantError::Invalid(m) => ApiError::bad_request(m),
            GrantError::Ticket(t) => t.into(),
            GrantError::TicketSystem(e) => {
                tracing::warn!(error = %e, "ticket system gave no answer");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "ticket_system",
                    e.to_string(),
                )
            }
            GrantError::Store(e @ crate::store::StoreError::Busy(_)) => {
                tracing::warn!(error = %e, "store busy");
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "busy", e.to_string())
            }
            GrantError::Store(e @ crate::store::StoreError::Unreachable(_)) => {
                tracing::warn!(error = %e, "database unreachable");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "database_unreachable",
                    e.to_string(),
                )
            }
            GrantError::Store(e) => {
                tracing::error!(error = %e, "store failure");
                ApiError::internal()
            }
            GrantError::Audit(e) => {
                tracing::error!(error = %e, "audit failure");
                ApiError::internal()
            }
        }
    }
}

impl From<TicketError> for ApiError {
    fn from(e: TicketError) -> Self {
        match e {
            TicketError::NotFound(_) => ApiError::not_found(e.to_string()),
            TicketError::AlreadyOpen(_) => {
                ApiError::new(StatusCode::CONFLICT, "conflict", e.to_string())
            }
            TicketError::UnknownUser(_) | TicketError::TitleTooLong => {
                ApiError::bad_request(e.to_string())
            }
            TicketError::Store(crate::store::StoreError::Busy(_)) => {
                tracing::warn!(error = %e, "store busy");
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "busy", e.to_string())
            }
            TicketError::Store(crate::store::StoreError::Unreachable(_)) => {
                tracing::warn!(error = %e, "database unreachable");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "database_unreachable",
                    e.to_string(),
                )
            }
            TicketError::Store(_) | TicketError::Audit(_) => {
                tracing::error!(error = %e, "ticket failure");
                ApiError::internal()
            }
        }
    }
}

impl From<WebhookError> for ApiError {
    fn from(e: WebhookError) -> Self {
        let status = match e {
            WebhookError::NotConfigured => StatusCode::SERVICE_UNAVAILABLE,
            WebhookError::MissingHeader(_) | WebhookError::BadSignature => StatusCode::UNAUTHORIZED,
            WebhookError::Stale(..) | WebhookError::BadTimestamp(_) => StatusCode::UNAUTHORIZED,
            WebhookError::BadPayload(..) => StatusCode::BAD_REQUEST,
        };
        let code = match e {
            WebhookError::NotConfigured => "not_configured",
            WebhookError::BadPayload(..) => "bad_request",
            WebhookError::Stale(..) => "stale",
            _ => "bad_signature",
        };
        ApiError::new(status, code, e.to_string())
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        // A body of the wrong shape (axum's 422) is bad input like any other: 400.
        let status = match r.status() {
            StatusCode::UNPROCESSABLE_ENTITY => StatusCode::BAD_REQUEST,
            s => s,
        };
        let code = match status {
            StatusCode::PAYLOAD_TOO_LARGE => "too_large",
            StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
            _ => "bad_request",
        };
        let message = match status {
            StatusCode::PAYLOAD_TOO_LARGE => {
                "the request body is too large; keep fields short (reasons up to 1000 characters)"
                    .to_string()
            }
            StatusCode::UNSUPPORTED_MEDIA_TYPE => {
                "send the body as JSON with Content-Type: application/json".to_string()
            }
            _ => format!(
                "the body is not valid JSON for this call: {}",
                r.body_text()
            ),
        };
        ApiError::new(status, code, message)
    }
}

impl From<PathRejection> for ApiError {
    fn from(r: PathRejection) -> Self {
        ApiError::bad_request(r.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        ApiError::bad_request(format!("bad query string: {}", r.body_text()))
    }
}
