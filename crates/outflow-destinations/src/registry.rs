//! The one place destination types are listed: `type` name → builder.
//!
//! Adding a destination = a module with a `build` function + one line in [`ENTRIES`].

use std::sync::Arc;
use std::time::Duration;

use outflow_core::config::{ConfigError, DestinationCatalog, DestinationSpec, OutputConfig};
use outflow_core::netpolicy::NetworkPolicy;
use outflow_core::retry::RetryPolicy;

use crate::Destination;

/// Settings a destination inherits when its own config is silent (the `output:` section).
#[derive(Debug, Clone, PartialEq)]
pub struct BuildDefaults {
    /// `output.default_timeout`.
    pub timeout: Duration,
    /// `output.default_retry_policy`.
    pub retry_policy: RetryPolicy,
    /// `output.allow_private_networks` / `output.allowed_hosts`.
    pub network: NetworkPolicy,
}

impl BuildDefaults {
    /// The defaults an `output:` section gives its destinations.
    pub fn from_output(output: &OutputConfig) -> Self {
        BuildDefaults {
            timeout: output.default_timeout,
            retry_policy: output.default_retry_policy.clone(),
            network: NetworkPolicy {
                allow_private_networks: output.allow_private_networks,
                allowed_hosts: output.allowed_hosts.clone(),
            },
        }
    }
}

impl Default for BuildDefaults {
    fn default() -> Self {
        BuildDefaults {
            timeout: Duration::from_secs(30),
            retry_policy: RetryPolicy::default(),
            network: NetworkPolicy::default(),
        }
    }
}

/// Parses and validates a destination body, reporting every problem under `path`.
pub type BuildFn =
    fn(&DestinationSpec, &BuildDefaults, &str) -> Result<Arc<dyn Destination>, Vec<ConfigError>>;

struct Entry {
    kind: &'static str,
    build: BuildFn,
}

const ENTRIES: &[Entry] = &[
    #[cfg(feature = "filesystem")]
    Entry { kind: "filesystem", build: crate::filesystem::build },
    #[cfg(feature = "webhook")]
    Entry { kind: "webhook", build: crate::webhook::build },
    #[cfg(feature = "s3")]
    Entry { kind: "s3", build: crate::s3::build },
    #[cfg(feature = "kafka")]
    Entry { kind: "kafka", build: crate::kafka::build },
    #[cfg(feature = "smtp")]
    Entry { kind: "smtp", build: crate::smtp::build },
    #[cfg(feature = "slack")]
    Entry { kind: "slack", build: crate::slack::build },
    #[cfg(feature = "discord")]
    Entry { kind: "discord", build: crate::discord::build },
    #[cfg(feature = "rabbitmq")]
    Entry { kind: "rabbitmq", build: crate::rabbitmq::build },
    #[cfg(feature = "nats")]
    Entry { kind: "nats", build: crate::nats::build },
    #[cfg(feature = "mqtt")]
    Entry { kind: "mqtt", build: crate::mqtt::build },
    #[cfg(feature = "mongodb")]
    Entry { kind: "mongodb", build: crate::mongodb::build },
    #[cfg(feature = "dynamodb")]
    Entry { kind: "dynamodb", build: crate::dynamodb::build },
    #[cfg(feature = "cassandra")]
    Entry { kind: "cassandra", build: crate::cassandra::build },
    #[cfg(feature = "postgresql")]
    Entry { kind: "postgresql", build: crate::sql::postgresql::build },
    #[cfg(feature = "mysql")]
    Entry { kind: "mysql", build: crate::sql::mysql::build },
    #[cfg(feature = "sqlite")]
    Entry { kind: "sqlite", build: crate::sql::sqlite::build },
    #[cfg(feature = "redis")]
    Entry { kind: "redis", build: crate::redis::build },
    #[cfg(feature = "elasticsearch")]
    Entry { kind: "elasticsearch", build: crate::elasticsearch::build },
    #[cfg(feature = "elasticsearch")]
    Entry { kind: "opensearch", build: crate::elasticsearch::build_opensearch },
];

/// Types on the roadmap (DESIGN.md §2) that this version does not build yet: naming one is a
/// clear "not supported yet" error rather than "unknown type".
const PLANNED: &[&str] = &["database"];

/// Keys that widen what a destination may reach. Only the operator's config may set them:
/// a destination submitted through the API (a job's `output_destinations`,
/// `test-output-destinations`) that names one is refused, so an API client cannot point a
/// webhook at the cloud metadata service and read the answer back from the attempt record.
pub const OPERATOR_ONLY_KEYS: &[&str] = &["allow_private_networks", "allowed_hosts"];

/// Destination types an API client may describe inline (a job's `output_destinations`,
/// `test-output-destinations`). HTTP destinations resolve and check every address against
/// the server's network policy; filesystem writes stay on the server's own disk. Every other
/// type (databases, brokers, object stores, mail) connects to whatever host its spec names,
/// so only the operator's config may declare one; jobs then name it.
pub const API_INLINE_KINDS: &[&str] =
    &["filesystem", "webhook", "slack", "discord", "elasticsearch", "opensearch"];

/// Who wrote a destination spec, which decides what it may set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpecOrigin {
    /// The operator: the config file or the command line.
    Operator,
    /// An API client: [`OPERATOR_ONLY_KEYS`] are refused.
    ApiClient,
}

/// Builds destinations from specs with a set of defaults.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    defaults: BuildDefaults,
}

impl Registry {
    /// A registry whose destinations inherit `defaults`.
    pub fn new(defaults: BuildDefaults) -> Self {
        Registry { defaults }
    }

    /// The defaults destinations inherit.
    pub fn defaults(&self) -> &BuildDefaults {
        &self.defaults
    }

    /// The `type` names compiled into this build.
    pub fn kinds() -> Vec<&'static str> {
        ENTRIES.iter().map(|e| e.kind).collect()
    }

    /// Builds one destination; `path` is where `spec` sits in the config, for messages.
    pub fn build(
        &self,
        spec: &DestinationSpec,
        path: &str,
    ) -> Result<Arc<dyn Destination>, Vec<ConfigError>> {
        match ENTRIES.iter().find(|e| e.kind == spec.kind) {
            Some(entry) => (entry.build)(spec, &self.defaults, path),
            None if PLANNED.contains(&spec.kind.as_str()) => Err(vec![ConfigError::new(
                format!("{path}.type"),
                format!(
                    "destination type '{}' is not supported yet by this version of outflow; supported: {}",
                    spec.kind,
                    Self::kinds().join(", ")
                ),
            )]),
            None => Err(vec![ConfigError::new(
                format!("{path}.type"),
                format!(
                    "unknown destination type '{}'; valid types: {}",
                    spec.kind,
                    Self::kinds().join(", ")
                ),
            )]),
        }
    }
}

impl Registry {
    /// Builds a destination written by `origin`: like [`Registry::build`], but an API
    /// client's spec may not set [`OPERATOR_ONLY_KEYS`]. Every problem is reported.
    pub fn build_from(
        &self,
        spec: &DestinationSpec,
        path: &str,
        origin: SpecOrigin,
    ) -> Result<Arc<dyn Destination>, Vec<ConfigError>> {
        let mut errors: Vec<ConfigError> = match origin {
            SpecOrigin::Operator => Vec::new(),
            // An unknown type falls through to `build`, which says it is unknown.
            SpecOrigin::ApiClient
                if !API_INLINE_KINDS.contains(&spec.kind.as_str())
                    && Self::kinds().contains(&spec.kind.as_str()) =>
            {
                return Err(vec![ConfigError::new(
                    format!("{path}.type"),
                    format!(
                        "a '{}' destination cannot be given inline through the API: declare it in \
                         the server's config (output.global_destinations) and name it instead; \
                         inline types: {}",
                        spec.kind,
                        API_INLINE_KINDS.join(", ")
                    ),
                )]);
            }
            SpecOrigin::ApiClient => OPERATOR_ONLY_KEYS
                .iter()
                .filter(|key| spec.fields.contains_key(**key))
                .map(|key| {
                    ConfigError::new(
                        format!("{path}.{key}"),
                        "cannot be set through the API: which private networks destinations may \
                         reach is the server's config (output.allow_private_networks, \
                         output.allowed_hosts)",
                    )
                })
                .collect(),
        };
        match self.build(spec, path) {
            Ok(dest) if errors.is_empty() => Ok(dest),
            Ok(_) => Err(errors),
            Err(more) => {
                errors.extend(more);
                Err(errors)
            }
        }
    }
}

impl DestinationCatalog for Registry {
    fn kinds(&self) -> Vec<&'static str> {
        Registry::kinds()
    }

    fn validate(&self, spec: &DestinationSpec, path: &str) -> Vec<ConfigError> {
        self.build(spec, path).err().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn unknown_type_lists_valid_ones() {
        let spec = DestinationSpec::from_value(&json!({"type": "ftp"}), "d").unwrap();
        let errs = Registry::default().build(&spec, "d").unwrap_err();
        assert_eq!(errs[0].path, "d.type");
        assert_eq!(
            errs[0].message,
            format!(
                "unknown destination type 'ftp'; valid types: {}",
                Registry::kinds().join(", ")
            )
        );
    }

    #[test]
    fn planned_type_says_not_supported_yet() {
        let spec = DestinationSpec::from_value(&json!({"type": "database"}), "d").unwrap();
        let errs = Registry::default().build(&spec, "d").unwrap_err();
        assert_eq!(errs[0].path, "d.type");
        assert!(
            errs[0].message.starts_with("destination type 'database' is not supported yet"),
            "{}",
            errs[0].message
        );
    }

    #[test]
    #[cfg(feature = "postgresql")]
    fn api_clients_name_network_destinations_instead_of_describing_them() {
        let spec = DestinationSpec::from_value(
            &json!({"type": "postgresql", "connection_string": "postgres://10.0.0.5/db", "table": "t"}),
            "d",
        )
        .unwrap();
        let errs = Registry::default().build_from(&spec, "d", SpecOrigin::ApiClient).unwrap_err();
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].path, "d.type");
        assert!(
            errs[0].message.contains("cannot be given inline through the API"),
            "{}",
            errs[0].message
        );
        assert!(errs[0].message.contains("output.global_destinations"), "{}", errs[0].message);
    }

    #[test]
    fn api_clients_cannot_widen_the_network_policy() {
        let spec = DestinationSpec::from_value(
            &json!({"type": "webhook", "url": "http://169.254.169.254/", "allow_private_networks": true}),
            "d",
        )
        .unwrap();
        let registry = Registry::default();
        assert!(registry.build_from(&spec, "d", SpecOrigin::Operator).is_ok());
        let errs = registry.build_from(&spec, "d", SpecOrigin::ApiClient).unwrap_err();
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].path, "d.allow_private_networks");
        assert!(errs[0].message.contains("cannot be set through the API"), "{}", errs[0].message);
    }
}
