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
    /// The `server:` section.
    pub server: ServerConfig,
    /// The `storage:` section.
    pub storage: StorageConfig,
    /// The `executor:` section.
    pub executor: ExecutorConfig,
    /// The `tasks:` list.
    pub tasks: Vec<TaskConfig>,
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
    /// `per_destination_concurrency` and `circuit_breaker`.
    pub limits: DeliveryLimits,
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
            limits: DeliveryLimits::default(),
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

/// The `server:` section.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerConfig {
    /// `listen` (default `127.0.0.1:8080`; env `OUTFLOW_SERVER_LISTEN`; `--listen`).
    pub listen: std::net::SocketAddr,
    /// `body_limit`: the largest JSON request body (default 32 MiB).
    pub body_limit: u64,
    /// `shutdown_grace`: how long in-flight work may finish on SIGTERM (default 30 s).
    pub shutdown_grace: Duration,
    /// `allow_unauthenticated` (default false): listen on a non-loopback address although
    /// the API has no authentication yet. Any client that can connect can then submit jobs
    /// whose inline destinations write files as the server's user and call URLs.
    pub allow_unauthenticated: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: std::net::SocketAddr::from(([127, 0, 0, 1], 8080)),
            body_limit: 32 * 1024 * 1024,
            shutdown_grace: Duration::from_secs(30),
            allow_unauthenticated: false,
        }
    }
}

/// The `storage:` section.
#[derive(Debug, Clone, PartialEq)]
pub struct StorageConfig {
    /// `path`: the data directory (default `./outflow-data`; env `OUTFLOW_STORAGE_PATH`;
    /// `--data-dir`).
    pub path: std::path::PathBuf,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig { path: std::path::PathBuf::from("outflow-data") }
    }
}

/// The `executor:` section: how command tasks run.
#[derive(Debug, Clone, PartialEq)]
pub struct ExecutorConfig {
    /// `max_concurrent_jobs` (default: the number of CPUs).
    pub max_concurrent_jobs: usize,
    /// `stderr_limit`: how much of a command's stderr is kept as the job log (default 64 KiB).
    pub stderr_limit: u64,
    /// `max_output_bytes`: the most stdout a command may write (default 32 MiB, like
    /// `server.body_limit`); past it the command is killed and its job fails.
    pub max_output_bytes: u64,
}

impl Default for ExecutorConfig {
    fn default() -> Self {
        ExecutorConfig {
            max_concurrent_jobs: std::thread::available_parallelism().map_or(2, |n| n.get()),
            stderr_limit: 64 * 1024,
            max_output_bytes: 32 * 1024 * 1024,
        }
    }
}

/// Per-destination delivery limits under `output:`.
#[derive(Debug, Clone, PartialEq)]
pub struct DeliveryLimits {
    /// `per_destination_concurrency`: attempts in flight per destination key (default 4).
    pub per_destination_concurrency: usize,
    /// `circuit_breaker.failure_threshold` (default 5).
    pub breaker_failure_threshold: u32,
    /// `circuit_breaker.cool_down` (default 30 s).
    pub breaker_cool_down: Duration,
    /// `delivery_lease`: how long a claimed delivery (or command job) stays this node's
    /// before another node may take it over (default 60 s). After a crash, work in flight
    /// is retried once its lease expires; an attempt is cut at 90 % of it, so it must be
    /// longer than the slowest destination's timeout.
    pub lease: Duration,
}

impl Default for DeliveryLimits {
    fn default() -> Self {
        DeliveryLimits {
            per_destination_concurrency: 4,
            breaker_failure_threshold: 5,
            breaker_cool_down: Duration::from_secs(30),
            lease: Duration::from_secs(60),
        }
    }
}

/// One entry of `tasks:`: a registered producer, optionally run by the built-in executor.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskConfig {
    /// Unique name (`task_name` in jobs).
    pub name: String,
    /// Version label.
    pub version: Option<String>,
    /// The program to run; without it, jobs wait for an external producer.
    pub command: Option<String>,
    /// Its arguments.
    pub args: Vec<String>,
    /// Variables added to its environment.
    pub env: std::collections::BTreeMap<String, String>,
    /// Its working directory.
    pub working_dir: Option<std::path::PathBuf>,
    /// Kill it after this long (`timeout_seconds`).
    pub timeout: Option<Duration>,
    /// Inline destinations for jobs of this task that name none.
    pub output_destinations: Vec<serde_json::Value>,
    /// Global destination names for jobs of this task that name none.
    pub destinations: Vec<String>,
    /// Where it sits in the file (`tasks[{index}]`).
    pub index: usize,
}

impl TaskConfig {
    /// The task as the JSON the store keeps and the executor reads: `name`, `version`,
    /// `command`, `args`, `env`, `working_dir`, `timeout_seconds`, `output_destinations`,
    /// `destinations`.
    pub fn definition(&self) -> serde_json::Value {
        serde_json::json!({
            "name": self.name,
            "version": self.version,
            "command": self.command,
            "args": self.args,
            "env": self.env,
            "working_dir": self.working_dir,
            "timeout_seconds": self.timeout.map(|d| d.as_secs_f64()),
            "output_destinations": self.output_destinations,
            "destinations": self.destinations,
        })
    }
}
