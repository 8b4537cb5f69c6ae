//! # outflow-client
//!
//! A thin client for Outflow's REST API (`/api/v1`): the CLI's `jobs` and `deliveries`
//! commands and the end-to-end tests use it. Responses are JSON values shaped as the
//! server's OpenAPI document (`/api/v1/openapi.json`) describes; errors carry the server's
//! problem body (`title`, `detail`, `errors[{path, message}]`) so callers can print them.
//!
//! It deliberately does not mirror every response type: the OpenAPI document is the
//! contract, and a second copy of it here would drift.

use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use reqwest::{Method, StatusCode};
use serde_json::Value;
use thiserror::Error;
use url::Url;

/// The default server address (`outflow serve` listens there by default).
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:8080";

/// A failed call.
#[derive(Debug, Error)]
pub enum ClientError {
    /// The server answered with an error status and (usually) a problem body.
    #[error("{}", Problem(.status, .body))]
    Http {
        /// The status.
        status: StatusCode,
        /// The problem document (or `{"detail": text}` when the body was not JSON).
        body: Value,
    },
    /// The server could not be reached.
    #[error(
        "cannot reach the Outflow server at {server}: {reason} (is `outflow serve` running? set --server or OUTFLOW_SERVER)"
    )]
    Unreachable {
        /// The base URL.
        server: String,
        /// The transport error.
        reason: String,
    },
    /// The answer was not what the API promises.
    #[error("unexpected response from the server: {0}")]
    Decode(String),
    /// A bad server URL or argument.
    #[error("{0}")]
    Usage(String),
}

impl ClientError {
    /// The HTTP status, when the server answered.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            ClientError::Http { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// Renders a problem body for people: `HTTP 422 Unprocessable Entity: title — detail` and
/// one line per validation error.
struct Problem<'a>(&'a StatusCode, &'a Value);

impl fmt::Display for Problem<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (status, body) = (self.0, self.1);
        write!(f, "HTTP {status}")?;
        let title = body.get("title").and_then(Value::as_str);
        let detail = body.get("detail").and_then(Value::as_str);
        match (title, detail) {
            (Some(t), Some(d)) if t != d => write!(f, ": {t}: {d}")?,
            (Some(t), _) => write!(f, ": {t}")?,
            (None, Some(d)) => write!(f, ": {d}")?,
            (None, None) => {}
        }
        if let Some(errors) = body.get("errors").and_then(Value::as_array) {
            for e in errors {
                let path = e.get("path").and_then(Value::as_str).unwrap_or("");
                let message = e.get("message").and_then(Value::as_str).unwrap_or("");
                write!(f, "\n  {path}: {message}")?;
            }
        }
        Ok(())
    }
}

/// A downloaded output version.
#[derive(Debug, Clone)]
pub struct OutputBody {
    /// Its `Content-Type`.
    pub content_type: Option<String>,
    /// The bytes.
    pub bytes: Bytes,
}

/// The client.
#[derive(Debug, Clone)]
pub struct Client {
    base: Url,
    http: reqwest::Client,
    token: Option<String>,
}

impl Client {
    /// A client for the server at `base` (e.g. `http://127.0.0.1:8080`).
    pub fn new(base: &str) -> Result<Client, ClientError> {
        let mut base = Url::parse(base).map_err(|e| {
            ClientError::Usage(format!("invalid server URL '{base}': {e} (e.g. {DEFAULT_SERVER})"))
        })?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(ClientError::Usage(format!(
                "invalid server URL '{base}': the scheme must be http or https"
            )));
        }
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        let http = reqwest::Client::builder()
            .user_agent(concat!("outflow-client/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| ClientError::Usage(format!("cannot build the HTTP client: {e}")))?;
        Ok(Client { base, http, token: None })
    }

    /// Sends `Authorization: Bearer <token>` with every request.
    pub fn with_token(mut self, token: Option<String>) -> Self {
        self.token = token;
        self
    }

    /// The server's base URL.
    pub fn base(&self) -> &Url {
        &self.base
    }

    fn url(&self, path: &str) -> Result<Url, ClientError> {
        self.base
            .join(path.trim_start_matches('/'))
            .map_err(|e| ClientError::Usage(format!("invalid path '{path}': {e}")))
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
    ) -> Result<reqwest::Response, ClientError> {
        let mut req = self.http.request(method, self.url(path)?).query(query);
        if let Some(token) = &self.token {
            req = req.bearer_auth(token);
        }
        if let Some(body) = body {
            req = req.json(body);
        }
        let resp = req.send().await.map_err(|e| ClientError::Unreachable {
            server: self.base.to_string(),
            reason: error_chain(&e),
        })?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        let body = serde_json::from_str(&text)
            .unwrap_or_else(|_| serde_json::json!({ "detail": text.trim() }));
        Err(ClientError::Http { status, body })
    }

    async fn json(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
    ) -> Result<(StatusCode, Value), ClientError> {
        let resp = self.send(method, path, query, body).await?;
        let status = resp.status();
        if status == StatusCode::NO_CONTENT {
            return Ok((status, Value::Null));
        }
        let value = resp.json::<Value>().await.map_err(|e| ClientError::Decode(e.to_string()))?;
        Ok((status, value))
    }

    /// `POST /api/v1/jobs`: returns the job and whether it was created (`false` when the
    /// client `job_id` already existed).
    pub async fn submit_job(&self, body: &Value) -> Result<(Value, bool), ClientError> {
        let (status, job) = self.json(Method::POST, "api/v1/jobs", &[], Some(body)).await?;
        Ok((job, status == StatusCode::CREATED))
    }

    /// `GET /api/v1/jobs` with query parameters (`status`, `task_name`, `page`, ...).
    pub async fn list_jobs(&self, query: &[(&str, String)]) -> Result<Value, ClientError> {
        Ok(self.json(Method::GET, "api/v1/jobs", query, None).await?.1)
    }

    /// `GET /api/v1/jobs/{id}`.
    pub async fn get_job(&self, id: &str) -> Result<Value, ClientError> {
        Ok(self.json(Method::GET, &format!("api/v1/jobs/{}", seg(id)), &[], None).await?.1)
    }

    /// `GET /api/v1/jobs/{id}/status`.
    pub async fn job_status(&self, id: &str) -> Result<Value, ClientError> {
        let path = format!("api/v1/jobs/{}/status", seg(id));
        Ok(self.json(Method::GET, &path, &[], None).await?.1)
    }

    /// `POST /api/v1/jobs/{id}/status`.
    pub async fn report_status(&self, id: &str, body: &Value) -> Result<Value, ClientError> {
        let path = format!("api/v1/jobs/{}/status", seg(id));
        Ok(self.json(Method::POST, &path, &[], Some(body)).await?.1)
    }

    /// `PUT /api/v1/jobs/{id}/output` with a content type.
    pub async fn put_output(
        &self,
        id: &str,
        content_type: &str,
        bytes: Bytes,
    ) -> Result<Value, ClientError> {
        let mut req = self
            .http
            .put(self.url(&format!("api/v1/jobs/{}/output", seg(id)))?)
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .body(bytes);
        if let Some(token) = &self.token {
            req = req.bearer_auth(token);
        }
        let resp = req.send().await.map_err(|e| ClientError::Unreachable {
            server: self.base.to_string(),
            reason: error_chain(&e),
        })?;
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        let body: Value = serde_json::from_str(&text)
            .unwrap_or_else(|_| serde_json::json!({ "detail": text.trim() }));
        if status.is_success() { Ok(body) } else { Err(ClientError::Http { status, body }) }
    }

    /// `GET /api/v1/jobs/{id}/output[?version=N]`.
    pub async fn job_output(
        &self,
        id: &str,
        version: Option<u32>,
    ) -> Result<OutputBody, ClientError> {
        let query: Vec<(&str, String)> =
            version.map(|v| vec![("version", v.to_string())]).unwrap_or_default();
        let path = format!("api/v1/jobs/{}/output", seg(id));
        let resp = self.send(Method::GET, &path, &query, None).await?;
        let content_type = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let bytes = resp.bytes().await.map_err(|e| ClientError::Decode(e.to_string()))?;
        Ok(OutputBody { content_type, bytes })
    }

    /// `POST /api/v1/jobs/{id}/cancel`.
    pub async fn cancel_job(&self, id: &str) -> Result<Value, ClientError> {
        let path = format!("api/v1/jobs/{}/cancel", seg(id));
        Ok(self.json(Method::POST, &path, &[], None).await?.1)
    }

    /// `DELETE /api/v1/jobs/{id}[?force=true]`.
    pub async fn delete_job(&self, id: &str, force: bool) -> Result<(), ClientError> {
        let query: Vec<(&str, String)> =
            if force { vec![("force", "true".into())] } else { Vec::new() };
        self.json(Method::DELETE, &format!("api/v1/jobs/{}", seg(id)), &query, None).await?;
        Ok(())
    }

    /// `GET /api/v1/jobs/{id}/deliveries`.
    pub async fn job_deliveries(&self, id: &str) -> Result<Value, ClientError> {
        let path = format!("api/v1/jobs/{}/deliveries", seg(id));
        Ok(self.json(Method::GET, &path, &[], None).await?.1)
    }

    /// `GET /api/v1/deliveries` with query parameters (`state`, `job_id`, ...).
    pub async fn list_deliveries(&self, query: &[(&str, String)]) -> Result<Value, ClientError> {
        Ok(self.json(Method::GET, "api/v1/deliveries", query, None).await?.1)
    }

    /// `POST /api/v1/deliveries/{id}/retry`.
    pub async fn retry_delivery(&self, id: &str) -> Result<Value, ClientError> {
        let path = format!("api/v1/deliveries/{}/retry", seg(id));
        Ok(self.json(Method::POST, &path, &[], None).await?.1)
    }

    /// `POST /api/v1/deliveries/replay` with a filter body; returns the server's answer
    /// (`{"requeued": N}`).
    pub async fn replay_deliveries(&self, filter: &Value) -> Result<Value, ClientError> {
        Ok(self.json(Method::POST, "api/v1/deliveries/replay", &[], Some(filter)).await?.1)
    }

    /// `GET /healthz`.
    pub async fn health(&self) -> Result<Value, ClientError> {
        Ok(self.json(Method::GET, "healthz", &[], None).await?.1)
    }
}

/// Percent-encodes a path segment (ids are numbers or UUIDs, but never trust input).
fn seg(id: &str) -> String {
    url::form_urlencoded::byte_serialize(id.as_bytes()).collect()
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problem_rendering_lists_validation_errors() {
        let err = ClientError::Http {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            body: serde_json::json!({
                "title": "Invalid destinations",
                "detail": "2 problems",
                "errors": [{"path": "output_destinations[0].path", "message": "must be absolute"}]
            }),
        };
        assert_eq!(
            err.to_string(),
            "HTTP 422 Unprocessable Entity: Invalid destinations: 2 problems\n  output_destinations[0].path: must be absolute"
        );
    }

    #[test]
    fn base_url_validation() {
        assert!(Client::new("ftp://x").is_err());
        assert!(Client::new("not a url").is_err());
        let c = Client::new("http://127.0.0.1:8080/prefix").unwrap();
        assert_eq!(
            c.url("api/v1/jobs").unwrap().as_str(),
            "http://127.0.0.1:8080/prefix/api/v1/jobs"
        );
        assert_eq!(seg("a/b"), "a%2Fb");
    }
}
