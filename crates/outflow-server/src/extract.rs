//! Request extractors that answer in problem documents: bodies under the size limit (413
//! naming it), JSON objects (400 when unparsable), job references in paths.
//!
//! JSON bodies are parsed regardless of their `Content-Type`: `curl -d @file.json` sends
//! `application/x-www-form-urlencoded`, and the seed's examples rely on that working.

use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::request::Parts;
use axum::response::IntoResponse;
use bytes::Bytes;
use outflow_core::config::reader::type_name;
use outflow_store::JobRef;
use serde_json::{Map, Value};

use crate::problem::Problem;
use crate::state::AppState;

/// A body read whole, at most `server.body_limit` bytes.
pub struct LimitedBytes(pub Bytes);

impl FromRequest<AppState> for LimitedBytes {
    type Rejection = Problem;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Problem> {
        match Bytes::from_request(req, state).await {
            Ok(bytes) => Ok(LimitedBytes(bytes)),
            Err(rejection) => {
                let response = rejection.into_response();
                if response.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                    Err(Problem::too_large(state.body_limit))
                } else {
                    Err(Problem::bad_request(format!(
                        "cannot read the request body (status {})",
                        response.status()
                    )))
                }
            }
        }
    }
}

/// A body that must be a JSON object.
pub struct JsonObject(pub Map<String, Value>);

/// A body that may be empty (then `{}`) or a JSON object.
pub struct OptionalJsonObject(pub Map<String, Value>);

fn parse_object(bytes: &[u8], empty_ok: bool) -> Result<Map<String, Value>, Problem> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return if empty_ok {
            Ok(Map::new())
        } else {
            Err(Problem::bad_request("the request body is empty; expected a JSON object"))
        };
    }
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(other) => Err(Problem::bad_request(format!(
            "the request body must be a JSON object, got {}",
            type_name(&other)
        ))),
        Err(e) => Err(Problem::bad_request(format!("the request body is not valid JSON: {e}"))),
    }
}

impl FromRequest<AppState> for JsonObject {
    type Rejection = Problem;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Problem> {
        let LimitedBytes(bytes) = LimitedBytes::from_request(req, state).await?;
        parse_object(&bytes, false).map(JsonObject)
    }
}

impl FromRequest<AppState> for OptionalJsonObject {
    type Rejection = Problem;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Problem> {
        let LimitedBytes(bytes) = LimitedBytes::from_request(req, state).await?;
        parse_object(&bytes, true).map(OptionalJsonObject)
    }
}

/// The `{id}` of a job path: a numeric id or a UUID.
pub struct JobPath(pub JobRef);

impl<S: Send + Sync> FromRequestParts<S> for JobPath {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Problem> {
        let Path(raw) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|e| Problem::bad_request(e.body_text()))?;
        JobRef::parse(&raw).map(JobPath).ok_or_else(|| {
            Problem::bad_request(format!(
                "'{raw}' is not a job id: use the numeric id or the job_uuid"
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies() {
        assert!(parse_object(b"  ", true).unwrap().is_empty());
        assert_eq!(
            parse_object(b"", false).unwrap_err().detail,
            "the request body is empty; expected a JSON object"
        );
        assert_eq!(
            parse_object(b"[1]", false).unwrap_err().detail,
            "the request body must be a JSON object, got a list"
        );
        assert!(
            parse_object(b"{\"a\":", false)
                .unwrap_err()
                .detail
                .starts_with("the request body is not valid JSON: ")
        );
    }
}
