//! Parsing and validating a `type: mongodb` body.

use std::time::Duration;

use outflow_core::config::{ConfigError, DestinationSpec, FieldReader, mask_url_secrets};
use outflow_core::retry::RetryPolicy;
use outflow_core::template::Template;

use crate::{BuildDefaults, common};

/// What a valid `uri` looks like, for messages.
pub const URI_EXPECTED: &str =
    "a MongoDB connection string, e.g. mongodb://user:pass@host:27017/?authSource=admin";

/// The longest collection name accepted, in bytes (MongoDB's namespace limit is 255 bytes
/// for `database.collection`; 120 leaves room for any database name).
pub const MAX_COLLECTION_BYTES: usize = 120;

/// A validated MongoDB configuration.
#[derive(Clone)]
pub struct MongoConfig {
    /// The connection string (may hold a password: shown only through
    /// [`mask_url_secrets`]).
    pub uri: String,
    /// The database, validated.
    pub database: String,
    /// The collection name template, validated after rendering.
    pub collection: Template,
    /// Bounds every operation: server selection, connect, the write itself.
    pub timeout: Duration,
    /// Retries.
    pub retry_policy: RetryPolicy,
}

impl std::fmt::Debug for MongoConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MongoConfig")
            .field("uri", &mask_url_secrets(&self.uri))
            .field("database", &self.database)
            .field("collection", &self.collection.source())
            .field("timeout", &self.timeout)
            .field("retry_policy", &self.retry_policy)
            .finish()
    }
}

/// Checks a database name: 1–63 bytes, none of `/\. "$*<>:|?` and no NUL (MongoDB's rules
/// for names that must also be valid directory names).
pub fn validate_database(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 63 {
        return Err(format!("database name '{name}' must be 1 to 63 bytes long"));
    }
    if let Some(c) = name.chars().find(|c| "/\\. \"$*<>:|?\0".contains(*c)) {
        return Err(format!(
            "database name '{name}' contains '{c}'; MongoDB database names cannot contain any \
             of / \\ . space \" $ * < > : | ?"
        ));
    }
    Ok(())
}

/// Checks a rendered collection name: 1–120 bytes of `A-Z a-z 0-9 _ - .`, not starting or
/// ending with `.`, not in the reserved `system.` namespace. Stricter than MongoDB itself
/// (which allows most characters) so a rendered job value cannot produce an operator-looking
/// (`$`) or hard-to-address name.
pub fn validate_collection(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_COLLECTION_BYTES {
        return Err(format!(
            "collection name '{name}' must be 1 to {MAX_COLLECTION_BYTES} bytes long"
        ));
    }
    if let Some(c) = name.chars().find(|c| !(c.is_ascii_alphanumeric() || "_-.".contains(*c))) {
        return Err(format!(
            "collection name '{name}' contains '{c}'; allowed: letters, digits, _ - ."
        ));
    }
    if name.starts_with('.') || name.ends_with('.') || name.starts_with("system.") {
        return Err(format!(
            "collection name '{name}' cannot start or end with '.' or use the reserved 'system.' prefix"
        ));
    }
    Ok(())
}

/// Parses `spec`, reporting every problem under `path`.
pub fn parse(
    spec: &DestinationSpec,
    defaults: &BuildDefaults,
    path: &str,
) -> Result<MongoConfig, Vec<ConfigError>> {
    let mut r = FieldReader::new(&spec.fields, path);
    let uri = r.required_string("uri", URI_EXPECTED);
    if let Some(uri) = &uri {
        if uri.starts_with("mongodb+srv://") {
            r.error(
                "uri",
                "mongodb+srv:// (DNS seed lists) is not supported by this build; list the hosts \
                 in a mongodb:// URI instead",
            );
        } else if !uri.starts_with("mongodb://") || uri.len() == "mongodb://".len() {
            r.error("uri", format!("must be {URI_EXPECTED}"));
        }
    }
    let database = r.required_string("database", "a database name, e.g. outflow");
    if let Some(Err(msg)) = database.as_deref().map(validate_database) {
        r.error("database", msg);
    }
    let collection =
        r.template("collection", true, "a collection name template, e.g. outputs_{{task_name}}");
    if let Some(t) = &collection
        && t.is_static()
        && let Err(msg) = validate_collection(t.source())
    {
        r.error("collection", msg);
    }
    let timeout = common::read_timeout(&mut r, defaults);
    let retry_policy = common::read_retry_policy(&mut r, defaults);
    let errors = r.finish();
    match (uri, database, collection) {
        (Some(uri), Some(database), Some(collection)) if errors.is_empty() => {
            Ok(MongoConfig { uri, database, collection, timeout, retry_policy })
        }
        _ if errors.is_empty() => {
            Err(vec![ConfigError::new(path, "invalid mongodb configuration")])
        }
        _ => Err(errors),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::common::test_support::pairs;
    use serde_json::{Value, json};

    fn errors(body: Value) -> Vec<(String, String)> {
        let spec = DestinationSpec::from_value(&body, "d").unwrap();
        match parse(&spec, &BuildDefaults::default(), "d") {
            Ok(_) => Vec::new(),
            Err(errs) => pairs(errs),
        }
    }

    fn base() -> Value {
        json!({"type": "mongodb", "uri": "mongodb://u:pw@h:27017", "database": "outflow", "collection": "out_{{task_name}}"})
    }

    fn with(key: &str, value: Value) -> Value {
        let mut b = base();
        b[key] = value;
        b
    }

    #[test]
    fn a_full_config_parses_and_hides_the_password() {
        let mut body = base();
        body["timeout_seconds"] = json!("5s");
        body["retry_policy"] = json!({"max_attempts": 2});
        let spec = DestinationSpec::from_value(&body, "d").unwrap();
        let cfg = parse(&spec, &BuildDefaults::default(), "d").unwrap();
        assert_eq!(cfg.timeout, Duration::from_secs(5));
        assert_eq!(cfg.retry_policy.max_attempts, 2);
        assert!(!format!("{cfg:?}").contains("pw"));
    }

    #[test]
    fn missing_fields_are_reported_each_at_its_path() {
        let errs = errors(json!({"type": "mongodb"}));
        let paths: Vec<&str> = errs.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(paths, ["d.uri", "d.database", "d.collection"]);
    }

    #[test]
    fn bad_uris_are_refused_without_echoing_them() {
        let errs = errors(with("uri", json!("postgres://u:secret@h")));
        assert_eq!(errs[0].0, "d.uri");
        assert!(errs[0].1.starts_with("must be a MongoDB connection string"), "{}", errs[0].1);
        assert!(!errs[0].1.contains("secret"));
        let errs = errors(with("uri", json!("mongodb+srv://cluster.example")));
        assert!(errs[0].1.contains("mongodb+srv:// (DNS seed lists) is not supported"));
    }

    #[test]
    fn bad_names_are_refused() {
        let errs = errors(with("database", json!("my.db")));
        assert_eq!(errs[0].0, "d.database");
        assert!(errs[0].1.contains("contains '.'"), "{}", errs[0].1);
        let errs = errors(with("collection", json!("a$b")));
        assert_eq!(errs[0].0, "d.collection");
        assert!(errs[0].1.contains("contains '$'"), "{}", errs[0].1);
        let errs = errors(with("collection", json!("system.users")));
        assert!(errs[0].1.contains("reserved 'system.' prefix"), "{}", errs[0].1);
        let errs = errors(with("collection", json!("x_{{task_name")));
        assert!(errs[0].1.starts_with("invalid template"), "{}", errs[0].1);
    }

    #[test]
    fn zero_timeout_and_unknown_keys_are_refused() {
        let errs = errors(with("timeout_seconds", json!(0)));
        assert_eq!(errs[0].0, "d.timeout_seconds");
        let errs = errors(with("colection", json!("x")));
        assert_eq!(errs[0].0, "d.colection");
        assert!(errs[0].1.contains("did you mean 'collection'"), "{}", errs[0].1);
    }

    #[test]
    fn rendered_collection_names_are_checked() {
        assert!(validate_collection("out_report-1.v2").is_ok());
        assert!(validate_collection("").is_err());
        assert!(validate_collection(&"a".repeat(121)).is_err());
        assert!(validate_collection("a b").is_err());
        assert!(validate_collection("a.").is_err());
    }
}
