//! API errors as RFC 9457 problem documents (`application/problem+json`).
//!
//! Every handler returns `Result<_, Problem>`; a [`Problem`] knows its HTTP status and
//! renders `{"type", "title", "status", "detail"}`, plus `errors: [{path, message}]` for
//! validation failures and `current_status` for job-state conflicts. Store errors map onto
//! statuses in one place ([`From<StoreError>`]), so every route answers the same way.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use outflow_core::config::ConfigError;
use outflow_core::job::JobStatus;
use outflow_store::StoreError;
use serde::Serialize;
use utoipa::ToSchema;

/// The media type of problem documents.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// One validation problem: where (`output_destinations[1].url`) and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct FieldError {
    /// The path of the offending value inside the request (`priority`,
    /// `output_destinations[0].path`), or the query parameter's name.
    pub path: String,
    /// What is wrong and what would be valid.
    pub message: String,
}

impl From<ConfigError> for FieldError {
    fn from(e: ConfigError) -> Self {
        FieldError { path: e.path, message: e.message }
    }
}

/// An error response: an RFC 9457 problem document.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Problem {
    /// A URI naming the kind of problem (`urn:outflow:problem:validation`).
    #[serde(rename = "type")]
    pub kind: String,
    /// A short, fixed summary of the kind of problem.
    pub title: String,
    /// The HTTP status code.
    pub status: u16,
    /// What went wrong in this request, naming the object or parameter.
    pub detail: String,
    /// Every validation problem, each with its path (validation errors only).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
    /// The job's status when a transition was refused (409 only).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, example = "cancelled")]
    pub current_status: Option<JobStatus>,
}

impl Problem {
    fn new(status: StatusCode, slug: &str, title: &str, detail: impl Into<String>) -> Self {
        Problem {
            kind: format!("urn:outflow:problem:{slug}"),
            title: title.to_string(),
            status: status.as_u16(),
            detail: detail.into(),
            errors: Vec::new(),
            current_status: None,
        }
    }

    /// 400: the request itself is malformed (bad query value, unparsable body, unknown task).
    pub fn bad_request(detail: impl Into<String>) -> Self {
        Problem::new(StatusCode::BAD_REQUEST, "bad-request", "Bad request", detail)
    }

    /// 400 about one query parameter: the detail names it; `errors` carries it as the path.
    pub fn bad_parameter(name: &str, message: impl Into<String>) -> Self {
        let message = message.into();
        let mut p = Problem::bad_request(format!("query parameter '{name}' {message}"));
        p.errors.push(FieldError { path: name.to_string(), message });
        p
    }

    /// 422: the body parsed but its content is invalid; `errors` lists every problem.
    pub fn validation(errors: Vec<FieldError>) -> Self {
        let n = errors.len();
        let detail = match errors.as_slice() {
            [one] => format!("{}: {}", one.path, one.message),
            _ => format!("the request has {n} invalid fields"),
        };
        let mut p = Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation",
            "The request is invalid",
            detail,
        );
        p.errors = errors;
        p
    }

    /// Not found (404).
    pub fn not_found(detail: impl Into<String>) -> Self {
        Problem::new(StatusCode::NOT_FOUND, "not-found", "Not found", detail)
    }

    /// 409, with the job's status when the conflict is about it.
    pub fn conflict(detail: impl Into<String>, current_status: Option<JobStatus>) -> Self {
        let mut p = Problem::new(StatusCode::CONFLICT, "conflict", "Conflict", detail);
        p.current_status = current_status;
        p
    }

    /// 413: the body is larger than `limit` bytes.
    pub fn too_large(limit: u64) -> Self {
        Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload-too-large",
            "Request body too large",
            format!(
                "the request body exceeds the limit of {} ({limit} bytes; server.body_limit)",
                human_size(limit)
            ),
        )
    }

    /// Method not allowed (405).
    pub fn method_not_allowed() -> Self {
        Problem::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method-not-allowed",
            "Method not allowed",
            "this method is not allowed on this path; see /api/v1/openapi.json",
        )
    }

    /// 503: not ready (store unreachable, shutting down).
    pub fn unavailable(detail: impl Into<String>) -> Self {
        Problem::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "Service unavailable", detail)
    }

    /// An internal error (500). The detail must not carry internals a client should not
    /// see (the cause is logged by the caller).
    pub fn internal(detail: impl Into<String>) -> Self {
        Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "Internal server error", detail)
    }

    /// The HTTP status.
    pub fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

impl From<StoreError> for Problem {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(m) => Problem::not_found(m),
            StoreError::Conflict { message, current_status } => {
                Problem::conflict(message, current_status)
            }
            StoreError::Full(m) => Problem::new(
                StatusCode::INSUFFICIENT_STORAGE,
                "insufficient-storage",
                "Insufficient storage",
                format!("the store is full, nothing was saved: {m}"),
            ),
            StoreError::Backend(m) => {
                // The backend's text can name files and SQL; it goes to the log, not the client.
                tracing::error!(error = %m, "store error");
                Problem::internal("the store failed; the server log has the cause")
            }
        }
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = self.status_code();
        let body = serde_json::to_vec(&self).unwrap_or_default();
        let mut response = (status, body).into_response();
        response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        response
    }
}

/// `33554432` → `32 MiB`; sizes that are not whole units stay in bytes.
pub fn human_size(bytes: u64) -> String {
    const UNITS: [(u64, &str); 3] = [(1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")];
    for (unit, name) in UNITS {
        if bytes >= unit && bytes.is_multiple_of(unit) {
            return format!("{} {name}", bytes / unit);
        }
    }
    format!("{bytes} bytes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_human() {
        assert_eq!(human_size(32 * 1024 * 1024), "32 MiB");
        assert_eq!(human_size(1024), "1 KiB");
        assert_eq!(human_size(1500), "1500 bytes");
    }

    #[test]
    fn store_errors_map_to_statuses() {
        let p: Problem = StoreError::Conflict {
            message: "job 3 is cancelled".into(),
            current_status: Some(JobStatus::Cancelled),
        }
        .into();
        assert_eq!(p.status, 409);
        let v = serde_json::to_value(&p).unwrap();
        assert_eq!(v["current_status"], "cancelled");
        assert_eq!(v["type"], "urn:outflow:problem:conflict");
        assert!(v.get("errors").is_none());
        let p: Problem = StoreError::Full("disk".into()).into();
        assert_eq!(p.status, 507);
        let p: Problem = StoreError::Backend("/secret/path locked".into()).into();
        assert_eq!(p.status, 500);
        assert!(!p.detail.contains("/secret/path"));
    }
}
