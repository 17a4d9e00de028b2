//! Errors as clients see them: one place that maps every failure to a status and a stable
//! code.
//!
//! Every 4xx and 5xx answer has `Content-Type: application/json` and the body
//! `{"error": "<code>", "message": "<text>"}`; a quorum failure adds `required` and
//! `answered`. Codes are part of the API contract: clients branch on them, so they never
//! change meaning.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use quorumkv_coordinator::{CoordinatorError, InputError};
use serde_json::json;

use crate::CONTEXT_HEADER;

/// A failed request, ready to become a response.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    extra: Option<serde_json::Value>,
    context: Option<String>,
}

impl ApiError {
    /// An error with this status, stable code and message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            extra: None,
            context: None,
        }
    }

    /// 400 with `code`.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// Attaches a causal context header (a 404 for a deleted key carries one).
    pub fn with_context(mut self, token: String) -> Self {
        self.context = Some(token);
        self
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The stable error code.
    pub fn code(&self) -> &'static str {
        self.code
    }
}

impl From<InputError> for ApiError {
    fn from(error: InputError) -> Self {
        let code = match &error {
            InputError::InvalidBucket(_) => "invalid_bucket",
            InputError::InvalidKey(_) => "invalid_key",
            InputError::InvalidQuorum { .. } => "invalid_quorum",
            InputError::InvalidTimeout(_) => "invalid_timeout",
            InputError::InvalidContext(_) => "invalid_context",
            InputError::InvalidProps(_) => "invalid_props",
        };
        Self::bad_request(code, error.to_string())
    }
}

impl From<CoordinatorError> for ApiError {
    fn from(error: CoordinatorError) -> Self {
        match error {
            CoordinatorError::Input(input) => input.into(),
            CoordinatorError::NotReady(_) => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "not_ready",
                error.to_string(),
            ),
            CoordinatorError::QuorumUnavailable {
                required, answered, ..
            } => {
                let mut api = Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "quorum_unavailable",
                    error.to_string(),
                );
                api.extra = Some(json!({ "required": required, "answered": answered }));
                api
            }
            CoordinatorError::BucketNotEmpty { .. } => {
                Self::new(StatusCode::CONFLICT, "bucket_not_empty", error.to_string())
            }
            CoordinatorError::InsufficientStorage(_) => Self::new(
                StatusCode::INSUFFICIENT_STORAGE,
                "insufficient_storage",
                error.to_string(),
            ),
            CoordinatorError::NodeNotFound(_) => {
                Self::new(StatusCode::NOT_FOUND, "node_not_found", error.to_string())
            }
            CoordinatorError::MemberUp(_) => {
                Self::new(StatusCode::CONFLICT, "member_up", error.to_string())
            }
            CoordinatorError::InvalidChange(_) => {
                Self::bad_request("invalid_change", error.to_string())
            }
            CoordinatorError::ChangeUnderWay(_) => Self::new(
                StatusCode::CONFLICT,
                "change_in_progress",
                error.to_string(),
            ),
            CoordinatorError::TooManySiblings { count, .. } => {
                let mut api =
                    Self::new(StatusCode::CONFLICT, "too_many_siblings", error.to_string());
                api.extra = count.map(|count| json!({ "count": count }));
                api
            }
            CoordinatorError::ObjectTooLarge(_) => Self::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "object_too_large",
                error.to_string(),
            ),
            CoordinatorError::ClockTooLarge(_) => {
                Self::new(StatusCode::CONFLICT, "clock_too_large", error.to_string())
            }
            CoordinatorError::Internal(_) => {
                tracing::error!(%error, "internal error");
                Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    error.to_string(),
                )
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({ "error": self.code, "message": self.message });
        if let (Some(map), Some(serde_json::Value::Object(extra))) =
            (body.as_object_mut(), self.extra)
        {
            map.extend(extra);
        }
        let mut response = (self.status, Json(body)).into_response();
        if let Some(token) = self.context.and_then(|t| HeaderValue::from_str(&t).ok()) {
            response.headers_mut().insert(CONTEXT_HEADER, token);
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_disk_answers_507_insufficient_storage() {
        let error = ApiError::from(CoordinatorError::InsufficientStorage(
            "out of disk space: IO error: No space left on device".into(),
        ));
        assert_eq!(
            (error.status(), error.code()),
            (StatusCode::INSUFFICIENT_STORAGE, "insufficient_storage")
        );
    }
}
