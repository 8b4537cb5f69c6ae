//! The typed configuration model.

use std::time::Duration;

use crate::config::DestinationSpec;
use crate::netpolicy::HostRule;
use crate::retry::RetryPolicy;

/// A whole `outflow.yaml`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Config {
    /// The `output:` section (seed 000).
    pub output: OutputConfig,
    /// The `logging:` section.
    pub logging: LoggingConfig,
}

/// Seed 000's `output:` section plus Outflow's network allow-list.
#[derive(Debug, Clone, PartialEq)]
pub struct OutputConfig {
    /// `max_concurrent_deliveries` (default 10; env `OUTFLOW_OUTPUT_MAX_CONCURRENT`).
    pub max_concurrent_deliveries: usize,
    /// `default_timeout` in seconds or `30s` form (default 30 s; env
    /// `OUTFLOW_OUTPUT_DEFAULT_TIMEOUT`).
    pub default_timeout: Duration,
    /// `validate_on_startup` (default true; env `OUTFLOW_OUTPUT_VALIDATE_STARTUP`).
    pub validate_on_startup: bool,
    /// `default_retry_policy`.
    pub default_retry_policy: RetryPolicy,
    /// `global_destinations`: named, reusable destinations.
    pub global_destinations: Vec<GlobalDestination>,
    /// `allow_private_networks` (default false): let webhooks reach private addresses.
    pub allow_private_networks: bool,
    /// `allowed_hosts`: hosts and CIDRs webhooks may reach even when private.
    pub allowed_hosts: Vec<HostRule>,
}

impl Default for OutputConfig {
    fn default() -> Self {
        OutputConfig {
            max_concurrent_deliveries: 10,
            default_timeout: Duration::from_secs(30),
            validate_on_startup: true,
            default_retry_policy: RetryPolicy::default(),
            global_destinations: Vec::new(),
            allow_private_networks: false,
            allowed_hosts: Vec::new(),
        }
    }
}

/// One entry of `global_destinations`.
#[derive(Debug, Clone, PartialEq)]
pub struct GlobalDestination {
    /// Unique name, used by `--to NAME` and a job's `destinations: [NAME]`.
    pub name: String,
    /// Free text.
    pub description: Option<String>,
    /// Position in `output.global_destinations` as written. Entries with errors are left out
    /// of the list, so this can differ from the position in the `Vec`; error paths
    /// (`output.global_destinations[{index}].destination`) must use this one.
    pub index: usize,
    /// The destination body, validated by the destination catalog.
    pub destination: DestinationSpec,
}

/// The `logging:` section.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LoggingConfig {
    /// `level` (`error`, `warn`, `info`, `debug`, `trace`; env `OUTFLOW_LOG_LEVEL`).
    pub level: Option<String>,
    /// `format`: `pretty` (default) or `json`.
    pub format: Option<String>,
}
