//! Parsing and validating a `type: dynamodb` body.

use std::time::Duration;

use outflow_core::config::{ConfigError, DestinationSpec, FieldReader};
use outflow_core::retry::RetryPolicy;
use outflow_core::secret::Secret;
use outflow_core::template::Template;

use crate::{BuildDefaults, common};

/// How the output is stored in the item's `data` attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataType {
    /// A string attribute (`S`): the compact JSON text of a JSON output, a text output as
    /// it is; binary outputs are a binary attribute (`B`).
    String,
    /// A JSON output converted to DynamoDB types (`M`, `L`, `N`, `S`, `BOOL`, `NULL`), so
    /// its fields can be projected and filtered; text and binary are stored as with `string`.
    Map,
}

/// Static credentials from the config; when absent, `AWS_ACCESS_KEY_ID`,
/// `AWS_SECRET_ACCESS_KEY` and `AWS_SESSION_TOKEN` are read on first use.
#[derive(Debug, Clone)]
pub struct StaticCredentials {
    /// `access_key_id`.
    pub access_key_id: String,
    /// `secret_access_key`.
    pub secret_access_key: Secret,
    /// `session_token`, for temporary credentials.
    pub session_token: Option<Secret>,
}

/// A validated DynamoDB configuration.
#[derive(Debug, Clone)]
pub struct DynamoConfig {
    /// The table name template, validated after rendering.
    pub table: Template,
    /// The AWS region (signing scope, default endpoint).
    pub region: String,
    /// The endpoint URL: configured (DynamoDB Local, moto, ScyllaDB Alternator) or
    /// `https://dynamodb.<region>.amazonaws.com`.
    pub endpoint: url::Url,
    /// Credentials from the config, if given there.
    pub credentials: Option<StaticCredentials>,
    /// The partition key attribute, whose value is the delivery id.
    pub partition_key: String,
    /// The sort key attribute and its value template, for tables with a composite key.
    pub sort_key: Option<(String, Template)>,
    /// How `data` is stored.
    pub data_type: DataType,
    /// Bounds each request.
    pub timeout: Duration,
    /// Retries.
    pub retry_policy: RetryPolicy,
}

/// Checks a rendered table name: 3-255 characters of `A-Z a-z 0-9 _ - .` (DynamoDB's rule).
pub fn validate_table(name: &str) -> Result<(), String> {
    if !(3..=255).contains(&name.len()) {
        return Err(format!("table name '{name}' must be 3 to 255 characters long"));
    }
    if let Some(c) = name.chars().find(|c| !(c.is_ascii_alphanumeric() || "_-.".contains(*c))) {
        return Err(format!("table name '{name}' contains '{c}'; allowed: letters, digits, _ - ."));
    }
    Ok(())
}

/// Checks an attribute name used as a key: 1-255 bytes.
fn validate_attribute(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 255 {
        return Err(format!("attribute name '{name}' must be 1 to 255 bytes long"));
    }
    Ok(())
}

/// Parses `spec`, reporting every problem under `path`.
pub fn parse(
    spec: &DestinationSpec,
    defaults: &BuildDefaults,
    path: &str,
) -> Result<DynamoConfig, Vec<ConfigError>> {
    let mut r = FieldReader::new(&spec.fields, path);
    let table = r.template("table", true, "a table name template, e.g. outputs_{{task_name}}");
    if let Some(t) = &table
        && t.is_static()
        && let Err(msg) = validate_table(t.source())
    {
        r.error("table", msg);
    }
    let region = r.required_string("region", "an AWS region, e.g. us-east-1");
    if let Some(region) = &region
        && (region.is_empty() || !region.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'))
    {
        r.error("region", format!("'{region}' is not a region name (e.g. us-east-1)"));
    }
    let endpoint = match r.string("endpoint") {
        Some(text) => match url::Url::parse(&text) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => Some(u),
            _ => {
                r.error(
                    "endpoint",
                    format!(
                        "'{text}' is not an http:// or https:// URL (e.g. http://127.0.0.1:8000)"
                    ),
                );
                None
            }
        },
        None => region.as_deref().and_then(|region| {
            url::Url::parse(&format!("https://dynamodb.{region}.amazonaws.com")).ok()
        }),
    };
    let access_key_id = r.string("access_key_id");
    let secret_access_key = r.secret("secret_access_key", false);
    let session_token = r.secret("session_token", false);
    let credentials = match (access_key_id, secret_access_key) {
        (Some(access_key_id), Some(secret_access_key)) => {
            Some(StaticCredentials { access_key_id, secret_access_key, session_token })
        }
        (None, None) => {
            if session_token.is_some() {
                r.error("session_token", "needs access_key_id and secret_access_key");
            }
            None
        }
        (Some(_), None) => {
            r.error("secret_access_key", "is required with access_key_id");
            None
        }
        (None, Some(_)) => {
            r.error("access_key_id", "is required with secret_access_key");
            None
        }
    };
    let partition_key = r.string("partition_key").unwrap_or_else(|| "delivery_id".to_string());
    if let Err(msg) = validate_attribute(&partition_key) {
        r.error("partition_key", msg);
    }
    let sort_key = r.string("sort_key");
    let sort_key_value = r.template("sort_key_value", false, "a template");
    if let Some(name) = &sort_key {
        if let Err(msg) = validate_attribute(name) {
            r.error("sort_key", msg);
        } else if *name == partition_key {
            r.error("sort_key", format!("'{name}' is already the partition key"));
        }
    } else if sort_key_value.is_some() {
        r.error("sort_key_value", "is only used with sort_key");
    }
    let sort_key = sort_key.map(|name| {
        let value = sort_key_value
            .unwrap_or_else(|| Template::parse("{{job_uuid}}").expect("a valid template"));
        (name, value)
    });
    let data_type = match r.raw("data_type") {
        Some(_) => match r.one_of("data_type", &["string", "map"]) {
            Some("map") => Some(DataType::Map),
            Some(_) => Some(DataType::String),
            None => None,
        },
        None => Some(DataType::String),
    };
    let timeout = common::read_timeout(&mut r, defaults);
    let retry_policy = common::read_retry_policy(&mut r, defaults);
    let errors = r.finish();
    if !errors.is_empty() {
        return Err(errors);
    }
    match (table, region, endpoint, data_type) {
        (Some(table), Some(region), Some(endpoint), Some(data_type)) => Ok(DynamoConfig {
            table,
            region,
            endpoint,
            credentials,
            partition_key,
            sort_key,
            data_type,
            timeout,
            retry_policy,
        }),
        _ => Err(vec![ConfigError::new(path, "invalid dynamodb configuration")]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::common::test_support::pairs;
    use serde_json::{Value, json};

    fn parsed(body: Value) -> Result<DynamoConfig, Vec<(String, String)>> {
        let spec = DestinationSpec::from_value(&body, "d").unwrap();
        parse(&spec, &BuildDefaults::default(), "d").map_err(pairs)
    }

    fn base() -> Value {
        json!({"type": "dynamodb", "table": "outputs_{{task_name}}", "region": "eu-west-1"})
    }

    fn with(key: &str, value: Value) -> Value {
        let mut b = base();
        b[key] = value;
        b
    }

    #[test]
    fn defaults_fill_in() {
        let cfg = parsed(base()).unwrap();
        assert_eq!(cfg.endpoint.as_str(), "https://dynamodb.eu-west-1.amazonaws.com/");
        assert_eq!(cfg.partition_key, "delivery_id");
        assert!(cfg.sort_key.is_none() && cfg.credentials.is_none());
        assert_eq!(cfg.data_type, DataType::String);
    }

    #[test]
    fn every_option_parses_and_secrets_stay_hidden() {
        let mut body = base();
        for (k, v) in [
            ("endpoint", json!("http://127.0.0.1:8000")),
            ("access_key_id", json!("AK")),
            ("secret_access_key", json!("very-secret")),
            ("partition_key", json!("pk")),
            ("sort_key", json!("sk")),
            ("sort_key_value", json!("{{task_name}}")),
            ("data_type", json!("map")),
            ("timeout_seconds", json!(3)),
        ] {
            body[k] = v;
        }
        let cfg = parsed(body).unwrap();
        assert_eq!(cfg.endpoint.as_str(), "http://127.0.0.1:8000/");
        assert_eq!(cfg.sort_key.as_ref().unwrap().1.source(), "{{task_name}}");
        assert_eq!(cfg.data_type, DataType::Map);
        assert!(!format!("{cfg:?}").contains("very-secret"));
    }

    #[test]
    fn missing_and_invalid_fields_are_reported() {
        let errs = parsed(json!({"type": "dynamodb"})).unwrap_err();
        let paths: Vec<&str> = errs.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(paths, ["d.table", "d.region"]);
        let errs = parsed(with("table", json!("a b"))).unwrap_err();
        assert_eq!(errs[0].0, "d.table");
        assert!(errs[0].1.contains("contains ' '"), "{}", errs[0].1);
        let errs = parsed(with("endpoint", json!("ftp://x"))).unwrap_err();
        assert_eq!(errs[0].0, "d.endpoint");
        let errs = parsed(with("access_key_id", json!("AK"))).unwrap_err();
        assert_eq!(
            errs[0],
            ("d.secret_access_key".into(), "is required with access_key_id".into())
        );
        let errs = parsed(with("sort_key_value", json!("x"))).unwrap_err();
        assert_eq!(errs[0].0, "d.sort_key_value");
        let errs = parsed(with("sort_key", json!("delivery_id"))).unwrap_err();
        assert!(errs[0].1.contains("already the partition key"));
        let errs = parsed(with("data_type", json!("list"))).unwrap_err();
        assert_eq!(errs[0].1, "must be one of string, map, got 'list'");
        let errs = parsed(with("region", json!("eu west"))).unwrap_err();
        assert_eq!(errs[0].0, "d.region");
    }

    #[test]
    fn rendered_table_names_are_checked() {
        assert!(validate_table("outputs_report-1.v2").is_ok());
        assert!(validate_table("ab").is_err());
        assert!(validate_table("a/b").is_err());
    }
}
