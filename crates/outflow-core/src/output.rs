//! What a job produced.

use bytes::Bytes;
use serde_json::Value;

/// A job's output as it is handed to destinations.
///
/// JSON outputs keep their structure so formats like `csv` or `yaml` can reshape them; text
/// and binary outputs are passed through unchanged by the `raw` format.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// A structured value (the usual case: a task printed JSON).
    Json(Value),
    /// UTF-8 text that is not JSON.
    Text(String),
    /// Arbitrary bytes.
    Binary(Bytes),
}

impl Output {
    /// Interprets bytes the way `outflow deliver` and the executor do: JSON if they parse as
    /// JSON, otherwise UTF-8 text, otherwise binary.
    pub fn detect(bytes: Bytes) -> Output {
        if let Ok(value) = serde_json::from_slice::<Value>(&bytes) {
            return Output::Json(value);
        }
        match String::from_utf8(bytes.to_vec()) {
            Ok(text) => Output::Text(text),
            Err(_) => Output::Binary(bytes),
        }
    }

    /// The output's size in bytes: compact JSON for structured values, the byte length
    /// otherwise. This is `{{output_size}}`.
    pub fn size(&self) -> u64 {
        match self {
            Output::Json(v) => serde_json::to_vec(v).map(|b| b.len() as u64).unwrap_or(0),
            Output::Text(t) => t.len() as u64,
            Output::Binary(b) => b.len() as u64,
        }
    }

    /// The output as a JSON value: text becomes a string, binary becomes a base64 string.
    /// Used for the webhook envelope and the `output` variable of Handlebars templates.
    pub fn to_json_value(&self) -> Value {
        use base64::Engine as _;
        match self {
            Output::Json(v) => v.clone(),
            Output::Text(t) => Value::String(t.clone()),
            Output::Binary(b) => Value::String(base64::engine::general_purpose::STANDARD.encode(b)),
        }
    }

    /// Compact JSON text of the output (`{{output_data}}`). Text is JSON-quoted, binary is a
    /// quoted base64 string, so the result is always valid JSON.
    pub fn to_compact_json(&self) -> String {
        match self {
            Output::Json(v) => v.to_string(),
            other => other.to_json_value().to_string(),
        }
    }

    /// A short name of the output's kind, for error messages: `json`, `text` or `binary`.
    pub fn kind_name(&self) -> &'static str {
        match self {
            Output::Json(_) => "json",
            Output::Text(_) => "text",
            Output::Binary(_) => "binary",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn detect_prefers_json_then_text_then_binary() {
        assert_eq!(Output::detect(Bytes::from_static(b"{\"a\":1}")), Output::Json(json!({"a":1})));
        assert_eq!(Output::detect(Bytes::from_static(b"hello")), Output::Text("hello".into()));
        assert_eq!(
            Output::detect(Bytes::from_static(&[0xff, 0xfe])),
            Output::Binary(Bytes::from_static(&[0xff, 0xfe]))
        );
    }

    #[test]
    fn size_counts_compact_json_bytes() {
        assert_eq!(Output::Json(json!({"a": [1, 2]})).size(), 11);
        assert_eq!(Output::Text("héllo".into()).size(), 6);
    }
}
