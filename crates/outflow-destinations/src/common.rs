//! Config keys that destinations read the same way: `timeout_seconds` and `retry_policy`
//! (every destination), both defaulting to the global settings in [`BuildDefaults`],
//! `format`/`template` (two flavours: default `raw`, or optional), and the network policy
//! keys of the HTTP destinations.

#[cfg(any(feature = "webhook", feature = "s3", feature = "elasticsearch"))]
use outflow_core::config::ConfigError;
use outflow_core::config::FieldReader;
#[cfg(any(
    feature = "rabbitmq",
    feature = "nats",
    feature = "mqtt",
    feature = "kafka",
    feature = "webhook",
    feature = "redis",
    feature = "smtp"
))]
use outflow_core::format::{FORMAT_NAMES, OutputFormat};
#[cfg(any(feature = "webhook", feature = "s3", feature = "elasticsearch"))]
use outflow_core::netpolicy::{HostRule, NetworkPolicy};
use outflow_core::retry::RetryPolicy;

use crate::BuildDefaults;

/// `timeout_seconds` (default: the global `output.default_timeout`), greater than zero.
/// A zero is reported as an error on `r` (so the parse fails); the default is returned
/// only to let parsing go on and collect every other error.
#[cfg(any(
    feature = "webhook",
    feature = "s3",
    feature = "smtp",
    feature = "rabbitmq",
    feature = "nats",
    feature = "mqtt",
    feature = "mongodb",
    feature = "dynamodb",
    feature = "cassandra",
    feature = "postgresql",
    feature = "mysql",
    feature = "sqlite",
    feature = "redis",
    feature = "elasticsearch"
))]
pub(crate) fn read_timeout(
    r: &mut FieldReader<'_>,
    defaults: &BuildDefaults,
) -> std::time::Duration {
    match r.duration_secs("timeout_seconds") {
        Some(d) if d.is_zero() => {
            r.error("timeout_seconds", "must be greater than 0 (seconds, e.g. 30 or \"30s\")");
            defaults.timeout
        }
        Some(d) => d,
        None => defaults.timeout,
    }
}

/// `retry_policy` (missing keys, or the whole block, default to the global policy). An
/// invalid block is reported as errors on `r` (so the parse fails); the default is
/// returned only to let parsing go on.
pub(crate) fn read_retry_policy(r: &mut FieldReader<'_>, defaults: &BuildDefaults) -> RetryPolicy {
    r.retry_policy("retry_policy", &defaults.retry_policy)
        .unwrap_or_else(|| defaults.retry_policy.clone())
}

/// `allow_private_networks` and `allowed_hosts` on top of the global policy (operator-only
/// keys: the registry refuses them from API clients). `example_host` makes the expected
/// value concrete in the error message (e.g. `"hooks.internal"`).
#[cfg(any(feature = "webhook", feature = "s3", feature = "elasticsearch"))]
pub(crate) fn read_network(
    r: &mut FieldReader<'_>,
    global: &NetworkPolicy,
    example_host: &str,
) -> NetworkPolicy {
    let mut policy = global.clone();
    if r.bool("allow_private_networks") == Some(true) {
        policy.allow_private_networks = true;
    }
    let expected =
        format!("a list of host names or CIDRs, e.g. [\"{example_host}\", \"10.0.0.0/8\"]");
    let hosts: Option<Vec<String>> = r.optional("allowed_hosts", &expected);
    for (i, h) in hosts.iter().flatten().enumerate() {
        match HostRule::parse(h) {
            Ok(rule) => policy.allowed_hosts.push(rule),
            Err(msg) => {
                let at = format!("{}[{i}]", r.path_of("allowed_hosts"));
                r.extend([ConfigError::new(at, msg)]);
            }
        }
    }
    policy
}

/// `format` (default `raw`, so a text output travels byte-exact and a JSON output as its
/// JSON text) and, for `format: template`, the `template` text.
#[cfg(any(feature = "rabbitmq", feature = "nats", feature = "mqtt", feature = "kafka"))]
pub(crate) fn read_format_default_raw(r: &mut FieldReader<'_>) -> Option<OutputFormat> {
    let given = r.raw("format").is_some();
    let name = if given { r.one_of("format", FORMAT_NAMES) } else { Some("raw") };
    let template = r.string("template");
    if template.is_some() && name.is_some_and(|n| n != "template") {
        r.error("template", "is only used with format: template");
        return None;
    }
    match OutputFormat::parse(name?, template.as_deref()) {
        Ok(f) => Some(f),
        Err(msg) => {
            r.error(if template.is_some() { "template" } else { "format" }, msg);
            None
        }
    }
}

/// `format` (optional: `None` when absent) and, for `format: template`, the `template`
/// text. When `format` itself is invalid, one error about it is enough.
#[cfg(any(feature = "webhook", feature = "redis", feature = "smtp"))]
pub(crate) fn read_optional_format(r: &mut FieldReader<'_>) -> Option<OutputFormat> {
    let given = r.raw("format").is_some();
    let name = if given { r.one_of("format", FORMAT_NAMES) } else { None };
    let template = r.string("template");
    if template.is_some() && name != Some("template") && (name.is_some() || !given) {
        r.error("template", "is only used with format: template");
    }
    match OutputFormat::parse(name?, template.as_deref()) {
        Ok(f) => Some(f),
        Err(msg) => {
            r.error(if template.is_some() { "template" } else { "format" }, msg);
            None
        }
    }
}

/// Helpers for the config unit tests of the destinations (each is compiled with the
/// destinations that use it).
#[cfg(test)]
pub(crate) mod test_support {
    use outflow_core::config::{ConfigError, FieldReader};
    use serde_json::Value;

    /// The errors `f` records when it reads `fields` (a JSON mapping) at path `d`.
    pub(crate) fn reader_errors(
        fields: Value,
        f: impl FnOnce(&mut FieldReader<'_>),
    ) -> Vec<ConfigError> {
        let map = fields.as_object().expect("a JSON mapping").clone();
        let mut r = FieldReader::new(&map, "d");
        f(&mut r);
        r.finish()
    }

    /// Config errors as `(path, message)` pairs, to assert on.
    #[cfg(any(
        feature = "elasticsearch",
        feature = "redis",
        feature = "postgresql",
        feature = "mysql",
        feature = "sqlite",
        feature = "kafka",
        feature = "smtp",
        feature = "s3",
        feature = "cassandra",
        feature = "dynamodb",
        feature = "mongodb",
        feature = "slack",
        feature = "discord"
    ))]
    pub(crate) fn pairs(errs: Vec<ConfigError>) -> Vec<(String, String)> {
        errs.into_iter().map(|e| (e.path, e.message)).collect()
    }

    /// Whether one of `errs` is at `path` and its message contains `phrase`.
    #[cfg(any(
        feature = "elasticsearch",
        feature = "redis",
        feature = "postgresql",
        feature = "mysql",
        feature = "sqlite"
    ))]
    pub(crate) fn has(errs: &[(String, String)], path: &str, phrase: &str) -> bool {
        errs.iter().any(|(p, m)| p == path && m.contains(phrase))
    }

    /// The paths of `errs`, in order.
    #[cfg(any(feature = "rabbitmq", feature = "nats", feature = "mqtt"))]
    pub(crate) fn paths(errs: &[ConfigError]) -> Vec<&str> {
        errs.iter().map(|e| e.path.as_str()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::reader_errors;
    use super::*;
    use serde_json::json;

    #[cfg(any(feature = "rabbitmq", feature = "nats", feature = "mqtt", feature = "kafka"))]
    #[test]
    fn format_defaults_to_raw_and_checks_template() {
        let map = serde_json::Map::new();
        let mut r = FieldReader::new(&map, "d");
        assert_eq!(read_format_default_raw(&mut r).unwrap().name(), "raw");
        let errs = reader_errors(json!({"format": "json", "template": "x"}), |r| {
            assert!(read_format_default_raw(r).is_none());
        });
        assert_eq!(errs[0].path, "d.template");
        let errs = reader_errors(json!({"format": "template"}), |r| {
            assert!(read_format_default_raw(r).is_none());
        });
        assert_eq!(errs[0].path, "d.format");
        let errs = reader_errors(json!({"format": "pdf"}), |r| {
            assert!(read_format_default_raw(r).is_none());
        });
        assert!(errs[0].message.starts_with("must be one of"), "{}", errs[0].message);
    }

    #[cfg(feature = "webhook")]
    #[test]
    fn timeout_defaults_and_must_be_positive() {
        let defaults = BuildDefaults::default();
        let errs = reader_errors(json!({"timeout_seconds": 0}), |r| {
            read_timeout(r, &defaults);
        });
        assert_eq!(errs[0].path, "d.timeout_seconds");
        let errs = reader_errors(json!({}), |r| {
            assert_eq!(read_timeout(r, &defaults), defaults.timeout);
        });
        assert!(errs.is_empty());
        let errs = reader_errors(json!({"timeout_seconds": "5s"}), |r| {
            assert_eq!(read_timeout(r, &defaults), std::time::Duration::from_secs(5));
        });
        assert!(errs.is_empty());
    }

    #[test]
    fn retry_policy_defaults_and_is_checked() {
        let defaults = BuildDefaults::default();
        let errs = reader_errors(json!({}), |r| {
            assert_eq!(read_retry_policy(r, &defaults), defaults.retry_policy);
        });
        assert!(errs.is_empty());
        let errs = reader_errors(json!({"retry_policy": {"max_attempts": 2}}), |r| {
            assert_eq!(read_retry_policy(r, &defaults).max_attempts, 2);
        });
        assert!(errs.is_empty());
        let errs = reader_errors(json!({"retry_policy": {"max_attempts": 0}}), |r| {
            read_retry_policy(r, &defaults);
        });
        assert_eq!(errs[0].path, "d.retry_policy.max_attempts");
        let errs = reader_errors(json!({"retry_policy": 3}), |r| {
            read_retry_policy(r, &defaults);
        });
        assert_eq!(errs[0].path, "d.retry_policy");
    }
}
