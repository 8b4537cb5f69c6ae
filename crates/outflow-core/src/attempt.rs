//! The record of one delivery attempt: what the API, the CLI and the store report.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// How a failed attempt is judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureClass {
    /// Worth another attempt: network errors, timeouts, 408/425/429/5xx.
    Retryable,
    /// Will not succeed by retrying: other 4xx, bad credentials, a refused address.
    Permanent,
}

/// One attempt to deliver an output to one destination.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttemptRecord {
    /// 1-based attempt number.
    pub number: u32,
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// How long it took, in milliseconds.
    pub duration_ms: u64,
    /// HTTP status or protocol-level code, when there was one.
    pub status_code: Option<u16>,
    /// `None` when the attempt succeeded.
    pub error: Option<String>,
    /// Set when the attempt failed.
    pub failure_class: Option<FailureClass>,
    /// The first bytes of the response (at most [`RESPONSE_EXCERPT_BYTES`]).
    pub response_excerpt: Option<String>,
    /// The wait before the next attempt, when one is scheduled.
    #[serde(with = "opt_millis")]
    pub next_retry_in: Option<Duration>,
}

/// How much of a response body an attempt record keeps.
pub const RESPONSE_EXCERPT_BYTES: usize = 4096;

/// The first [`RESPONSE_EXCERPT_BYTES`] of a body as (lossy) UTF-8, cut on a char boundary.
pub fn response_excerpt(body: &[u8]) -> String {
    let cut = &body[..body.len().min(RESPONSE_EXCERPT_BYTES)];
    let text = String::from_utf8_lossy(cut);
    text.into_owned()
}

mod opt_millis {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(v: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(d) => s.serialize_some(&(d.as_millis() as u64)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Ok(Option::<u64>::deserialize(d)?.map(Duration::from_millis))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excerpt_is_capped() {
        let body = vec![b'a'; 10_000];
        assert_eq!(response_excerpt(&body).len(), RESPONSE_EXCERPT_BYTES);
        assert_eq!(response_excerpt(b"ok"), "ok");
    }
}
