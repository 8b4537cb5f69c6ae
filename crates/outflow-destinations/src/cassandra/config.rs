//! Parsing and validating a `type: cassandra` body.

use std::time::Duration;

use outflow_core::config::{ConfigError, DestinationSpec, FieldReader};
use outflow_core::retry::RetryPolicy;
use outflow_core::secret::Secret;
use outflow_core::template::Template;

use crate::{BuildDefaults, common};

/// The `consistency` names, in CQL's spelling (lowercase).
pub const CONSISTENCY_LEVELS: &[&str] =
    &["any", "one", "two", "three", "quorum", "all", "local_quorum", "each_quorum", "local_one"];

/// The longest table or keyspace name Cassandra accepts.
pub const MAX_NAME_CHARS: usize = 48;

/// A validated Cassandra configuration.
#[derive(Debug, Clone)]
pub struct CassandraConfig {
    /// `host:port` (or `host`, port 9042) of the nodes to bootstrap from.
    pub contact_points: Vec<String>,
    /// The keyspace (must exist).
    pub keyspace: String,
    /// The table name template, validated after rendering.
    pub table: Template,
    /// Plain-text authentication.
    pub credentials: Option<(String, Secret)>,
    /// The write consistency level, one of [`CONSISTENCY_LEVELS`].
    pub consistency: &'static str,
    /// Create missing tables (`CREATE TABLE IF NOT EXISTS`) before the first insert.
    pub create_table: bool,
    /// Insert with `IF NOT EXISTS` (a lightweight transaction); `false` upserts.
    pub if_not_exists: bool,
    /// Concurrent inserts of one batch.
    pub batch_concurrency: usize,
    /// Bounds connecting, preparing and each insert.
    pub timeout: Duration,
    /// Retries.
    pub retry_policy: RetryPolicy,
}

/// Checks a keyspace or rendered table name: 1-48 characters of `a-z 0-9 _`, starting with
/// a letter. Names are used unquoted, where Cassandra folds case; requiring lowercase means
/// the name written is the name stored.
pub fn validate_name(what: &str, name: &str) -> Result<(), String> {
    if name.is_empty() || name.chars().count() > MAX_NAME_CHARS {
        return Err(format!("{what} name '{name}' must be 1 to {MAX_NAME_CHARS} characters long"));
    }
    if !name.starts_with(|c: char| c.is_ascii_lowercase()) {
        return Err(format!("{what} name '{name}' must start with a lowercase letter"));
    }
    if let Some(c) =
        name.chars().find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_'))
    {
        return Err(format!(
            "{what} name '{name}' contains '{c}'; allowed: lowercase letters, digits and _"
        ));
    }
    Ok(())
}

/// Parses `spec`, reporting every problem under `path`.
pub fn parse(
    spec: &DestinationSpec,
    defaults: &BuildDefaults,
    path: &str,
) -> Result<CassandraConfig, Vec<ConfigError>> {
    let mut r = FieldReader::new(&spec.fields, path);
    let expected_points = "a list of host:port, e.g. [\"10.0.0.1:9042\", \"10.0.0.2:9042\"]";
    let contact_points: Option<Vec<String>> = match r.raw("contact_points") {
        // A single string is accepted too (`${CASSANDRA_HOSTS}` expands to one string).
        Some(serde_json::Value::String(s)) => {
            Some(s.split(',').map(|p| p.trim().to_string()).filter(|p| !p.is_empty()).collect())
        }
        Some(_) => r.optional("contact_points", expected_points),
        None => {
            r.error("contact_points", format!("is required ({expected_points})"));
            None
        }
    };
    if let Some(points) = &contact_points {
        if points.is_empty() {
            r.error("contact_points", format!("must not be empty ({expected_points})"));
        }
        for (i, p) in points.iter().enumerate() {
            if p.is_empty() || p.contains(['/', ' ']) {
                let at = format!("{}[{i}]", r.path_of("contact_points"));
                r.extend([ConfigError::new(at, format!("'{p}' is not host or host:port"))]);
            }
        }
    }
    let keyspace = r.required_string("keyspace", "an existing keyspace, e.g. outflow");
    if let Some(Err(msg)) = keyspace.as_deref().map(|k| validate_name("keyspace", k)) {
        r.error("keyspace", msg);
    }
    let table = r.template("table", true, "a table name template, e.g. outputs_{{task_name}}");
    if let Some(t) = &table
        && t.is_static()
        && let Err(msg) = validate_name("table", t.source())
    {
        r.error("table", msg);
    }
    let username = r.string("username");
    let password = r.secret("password", false);
    let credentials = match (username, password) {
        (Some(u), Some(p)) => Some((u, p)),
        (None, None) => None,
        (Some(_), None) => {
            r.error("password", "is required with username");
            None
        }
        (None, Some(_)) => {
            r.error("username", "is required with password");
            None
        }
    };
    let consistency = match r.raw("consistency") {
        Some(_) => r.one_of("consistency", CONSISTENCY_LEVELS),
        None => Some("local_quorum"),
    };
    let create_table = r.bool("create_table").unwrap_or(true);
    let if_not_exists = r.bool("if_not_exists").unwrap_or(true);
    let batch_concurrency: usize =
        r.optional("batch_concurrency", "a positive integer, e.g. 16").unwrap_or(16);
    if batch_concurrency == 0 {
        r.error("batch_concurrency", "must be at least 1");
    }
    let timeout = common::read_timeout(&mut r, defaults);
    let retry_policy = common::read_retry_policy(&mut r, defaults);
    let errors = r.finish();
    if !errors.is_empty() {
        return Err(errors);
    }
    match (contact_points, keyspace, table, consistency) {
        (Some(contact_points), Some(keyspace), Some(table), Some(consistency)) => {
            Ok(CassandraConfig {
                contact_points,
                keyspace,
                table,
                credentials,
                consistency,
                create_table,
                if_not_exists,
                batch_concurrency,
                timeout,
                retry_policy,
            })
        }
        _ => Err(vec![ConfigError::new(path, "invalid cassandra configuration")]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::common::test_support::pairs;
    use serde_json::{Value, json};

    fn parsed(body: Value) -> Result<CassandraConfig, Vec<(String, String)>> {
        let spec = DestinationSpec::from_value(&body, "d").unwrap();
        parse(&spec, &BuildDefaults::default(), "d").map_err(pairs)
    }

    fn base() -> Value {
        json!({"type": "cassandra", "contact_points": ["127.0.0.1:9042"], "keyspace": "outflow", "table": "out_{{task_name}}"})
    }

    fn with(key: &str, value: Value) -> Value {
        let mut b = base();
        b[key] = value;
        b
    }

    #[test]
    fn defaults_and_options() {
        let cfg = parsed(base()).unwrap();
        assert_eq!(cfg.consistency, "local_quorum");
        assert!(cfg.create_table && cfg.if_not_exists);
        let mut body = base();
        for (k, v) in [
            ("contact_points", json!("a:9042, b:9042")),
            ("username", json!("u")),
            ("password", json!("hidden-pw")),
            ("consistency", json!("QUORUM")),
            ("create_table", json!(false)),
            ("if_not_exists", json!(false)),
            ("batch_concurrency", json!(4)),
        ] {
            body[k] = v;
        }
        let cfg = parsed(body).unwrap();
        assert_eq!(cfg.contact_points, ["a:9042", "b:9042"]);
        assert_eq!(cfg.consistency, "quorum");
        assert!(!cfg.create_table && !cfg.if_not_exists);
        assert!(!format!("{cfg:?}").contains("hidden-pw"));
    }

    #[test]
    fn errors_name_their_path() {
        let errs = parsed(json!({"type": "cassandra"})).unwrap_err();
        let paths: Vec<&str> = errs.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(paths, ["d.contact_points", "d.keyspace", "d.table"]);
        let errs = parsed(with("contact_points", json!([]))).unwrap_err();
        assert_eq!(errs[0].0, "d.contact_points");
        let errs = parsed(with("contact_points", json!(["ok:1", "bad host"]))).unwrap_err();
        assert_eq!(errs[0].0, "d.contact_points[1]");
        let errs = parsed(with("keyspace", json!("My-KS"))).unwrap_err();
        assert_eq!(errs[0].0, "d.keyspace");
        let errs = parsed(with("table", json!("t;drop"))).unwrap_err();
        assert!(errs[0].1.contains("contains ';'"), "{}", errs[0].1);
        let errs = parsed(with("consistency", json!("most"))).unwrap_err();
        assert!(errs[0].1.starts_with("must be one of any, one"), "{}", errs[0].1);
        let errs = parsed(with("username", json!("u"))).unwrap_err();
        assert_eq!(errs[0].0, "d.password");
        let errs = parsed(with("batch_concurrency", json!(0))).unwrap_err();
        assert_eq!(errs[0].0, "d.batch_concurrency");
    }

    #[test]
    fn names_are_checked() {
        assert!(validate_name("table", "out_report_2").is_ok());
        assert!(validate_name("table", "2out").is_err());
        assert!(validate_name("table", "Out").is_err());
        assert!(validate_name("table", &"a".repeat(49)).is_err());
    }
}
