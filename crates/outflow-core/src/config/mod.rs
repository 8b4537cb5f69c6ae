//! The `outflow.yaml` model, its loading and its validation.
//!
//! Loading is YAML → a JSON value tree → `${VAR}` expansion → `OUTFLOW_*` overrides → typed
//! model, with every problem collected (not just the first) as a [`ConfigError`] carrying its
//! path (`output.global_destinations[1].destination.url`), what is wrong and what would be
//! valid. Destination bodies are validated by a [`DestinationCatalog`] supplied by the
//! destinations crate, so this crate knows no destination.

pub mod reader;
pub mod units;

use std::fmt;

use serde::Serialize;
use serde_json::{Map, Value};

pub use reader::FieldReader;

/// One problem in a configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConfigError {
    /// Where: `output.global_destinations[1].destination.url`.
    pub path: String,
    /// What is wrong and what would be valid. Never contains a secret's value.
    pub message: String,
}

impl ConfigError {
    /// A new error at `path`.
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError { path: path.into(), message: message.into() }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Every problem found in one configuration source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors {
    /// The file (or `<inline>`, `--dest #2`) the errors are in.
    pub source: String,
    /// The problems, in document order.
    pub errors: Vec<ConfigError>,
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.errors.len();
        writeln!(f, "{}: {n} error{}", self.source, if n == 1 { "" } else { "s" })?;
        for e in &self.errors {
            writeln!(f, "  {}: {e}", self.source)?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// A destination as written in config: its `type` and the rest of its keys, still raw. The
/// destinations crate turns it into a typed, validated destination.
#[derive(Debug, Clone, PartialEq)]
pub struct DestinationSpec {
    /// The `type` key: `filesystem`, `webhook`, ...
    pub kind: String,
    /// Every other key.
    pub fields: Map<String, Value>,
}

impl DestinationSpec {
    /// Splits a JSON object into `type` and the rest. Errors name `path`.
    pub fn from_value(value: &Value, path: &str) -> Result<DestinationSpec, ConfigError> {
        let Value::Object(map) = value else {
            return Err(ConfigError::new(
                path,
                format!("must be a mapping with a 'type' key, got {}", reader::type_name(value)),
            ));
        };
        let mut fields = map.clone();
        // `shift_remove` keeps the other keys in document order (plain `remove` swaps the
        // last key into the hole), so dumps and error order follow the file.
        match fields.shift_remove("type") {
            Some(Value::String(kind)) => Ok(DestinationSpec { kind, fields }),
            Some(other) => Err(ConfigError::new(
                format!("{path}.type"),
                format!(
                    "must be a string naming the destination type, got {}",
                    reader::type_name(&other)
                ),
            )),
            None => Err(ConfigError::new(
                format!("{path}.type"),
                "is required: the destination type (e.g. 'filesystem' or 'webhook')",
            )),
        }
    }

    /// The spec back as one JSON object (with `type`).
    pub fn to_value(&self) -> Value {
        let mut map = Map::new();
        map.insert("type".into(), Value::String(self.kind.clone()));
        map.extend(self.fields.clone());
        Value::Object(map)
    }
}

/// Knows which destination types exist and how to validate their bodies. Implemented by
/// `outflow-destinations`' registry.
pub trait DestinationCatalog {
    /// The valid `type` names, for "unknown type" errors.
    fn kinds(&self) -> Vec<&'static str>;
    /// Every problem in `spec`, with paths under `path`.
    fn validate(&self, spec: &DestinationSpec, path: &str) -> Vec<ConfigError>;
}

pub mod env;
mod load;
mod model;
mod redact;
mod sections;
#[cfg(test)]
mod tests;

pub use env::{EnvSource, ProcessEnv};
pub use load::{
    CONFIG_ENV_VAR, DEFAULT_CONFIG_FILE, LOG_FORMATS, LOG_LEVELS, resolve_config_path,
    resolve_config_path_in, yaml_to_tree,
};
pub use model::{
    Config, DeliveryLimits, ExecutorConfig, GlobalDestination, LoggingConfig, OutputConfig,
    ServerConfig, StorageConfig, TaskConfig,
};
pub use redact::{mask_url_secrets, redact};

impl Config {
    /// Parses YAML text. Always returns a config (defaults where a value was invalid) and
    /// every problem found, so callers can report them all at once. Destination bodies are
    /// split into [`DestinationSpec`]s but not validated: see
    /// [`Config::validate_destinations`].
    ///
    /// Errors come in document order; a YAML syntax error is reported alone (there is no tree
    /// to check). An empty text is all defaults, with `OUTFLOW_*` overrides still applied.
    pub fn parse(text: &str, env: &dyn EnvSource) -> (Config, Vec<ConfigError>) {
        let parsed = load::parse_document(text, env);
        (parsed.config, parsed.errors)
    }

    /// Validates every global destination's body, and every task's default destinations,
    /// with `catalog`.
    pub fn validate_destinations(&self, catalog: &dyn DestinationCatalog) -> Vec<ConfigError> {
        let mut errors: Vec<ConfigError> = self
            .output
            .global_destinations
            .iter()
            .flat_map(|g| {
                catalog.validate(
                    &g.destination,
                    &format!("output.global_destinations[{}].destination", g.index),
                )
            })
            .collect();
        errors.extend(sections::validate_task_destinations(self, catalog));
        errors
    }

    /// Reads and parses a file; a missing or unreadable file is one error naming it.
    pub fn load_file(
        path: &std::path::Path,
        env: &dyn EnvSource,
    ) -> Result<(Config, Vec<ConfigError>), ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigErrors {
            source: path.display().to_string(),
            errors: vec![ConfigError::new("", format!("cannot read config file: {e}"))],
        })?;
        Ok(Config::parse(&text, env))
    }
}
