//! Durations, sizes and file permissions as written in config.

use std::time::Duration;

use serde_json::Value;

use super::reader::type_name;

/// What a bare number means for a duration key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// `default_timeout: 45` is 45 seconds (seed 000).
    Seconds,
    /// `initial_delay_ms: 1000` is 1000 milliseconds.
    Millis,
}

/// Parses `500ms`, `5s`, `5m`, `1h`, `1d` or a bare number in `bare` units.
pub fn parse_duration(s: &str, bare: Unit) -> Result<Duration, String> {
    let _ = (s, bare);
    Err("not implemented yet".into())
}

/// A duration from a config value (number or string).
pub fn duration_from_value(v: &Value, bare: Unit) -> Result<Duration, String> {
    match v {
        Value::String(s) => parse_duration(s, bare),
        Value::Number(_) => parse_duration(&v.to_string(), bare),
        other => Err(format!(
            "must be a duration such as 30, \"500ms\", \"5s\", \"5m\" or \"1h\", got {}",
            type_name(other)
        )),
    }
}

/// Parses `8MiB`, `10MB`, `512KiB`, `1GiB` or a bare number of bytes.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let _ = s;
    Err("not implemented yet".into())
}

/// A size from a config value (number or string).
pub fn size_from_value(v: &Value) -> Result<u64, String> {
    match v {
        Value::String(s) => parse_size(s),
        Value::Number(_) => parse_size(&v.to_string()),
        other => Err(format!(
            "must be a size such as 1048576, \"512KiB\", \"8MiB\" or \"10MB\", got {}",
            type_name(other)
        )),
    }
}

/// Unix permissions: the octal strings `"644"`/`"0644"`/`"0o644"` or the integer 420.
pub fn permissions_from_value(v: &Value) -> Result<u32, String> {
    let _ = v;
    Err("not implemented yet".into())
}
