//! The command-line interface: every flag and its help text.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Deliver job output to files, signed webhooks and more, with retries and a truthful exit
/// code.
#[derive(Debug, Parser)]
#[command(
    name = "outflow",
    version,
    about,
    long_about = "Outflow delivers the output of jobs, durably, to where it belongs: files, \
                  signed webhooks and more.\n\n\
                  Destinations come from a config file (outflow.yaml: --config, OUTFLOW_CONFIG, \
                  or ./outflow.yaml) or inline as JSON with --dest.",
    after_help = "Examples:\n  \
        outflow check --config outflow.yaml\n  \
        outflow deliver --dest '{\"type\":\"filesystem\",\"path\":\"/tmp/{{job_uuid}}.json\"}' out.json\n  \
        outflow deliver --config outflow.yaml --to production_logs report.json\n  \
        outflow webhook verify --secret S --id ID --timestamp T --signature SIG body.json"
)]
pub struct Cli {
    /// Log level: error, warn, info, debug or trace [env: OUTFLOW_LOG_LEVEL; default: warn].
    #[arg(long, global = true, value_name = "LEVEL")]
    pub log_level: Option<String>,
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Pretty)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Pretty,
    /// One JSON object per line.
    Json,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate a config file and print OK or every error (exit 0 / 1).
    Check(CheckArgs),
    /// Deliver a file or stdin to destinations, with retries; one result line each.
    Deliver(DeliverArgs),
    /// Check that destinations are valid and reachable, without delivering.
    TestDestinations(TestDestinationsArgs),
    /// Sign or verify Standard Webhooks signatures (for debugging receivers).
    Webhook {
        #[command(subcommand)]
        command: WebhookCommand,
    },
    /// Run the server: REST API, durable store, delivery engine and executor.
    Serve(ServeArgs),
    /// Submit, list, inspect, cancel and delete jobs on a running server.
    Jobs {
        #[command(flatten)]
        server: ServerArg,
        #[command(subcommand)]
        command: JobsCommand,
    },
    /// Measure throughput and latency against a child server (prints `name value unit`).
    Bench(BenchArgs),
    /// Crash and fault scenarios against a child server; exit 1 if anything was lost.
    Chaos {
        #[command(subcommand)]
        scenario: ChaosScenario,
    },
    /// List deliveries, retry or replay dead letters on a running server.
    Deliveries {
        #[command(flatten)]
        server: ServerArg,
        #[command(subcommand)]
        command: DeliveriesCommand,
    },
}

/// `outflow serve`.
#[derive(Debug, Args)]
#[command(after_help = "Without a config file the server starts with defaults: \
    127.0.0.1:8080, data in ./outflow-data, no tasks and no global destinations \
    (jobs bring their own output_destinations). SIGINT/SIGTERM shut it down gracefully.")]
pub struct ServeArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Address to listen on [default: server.listen, else 127.0.0.1:8080].
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<std::net::SocketAddr>,
    /// Data directory [default: storage.path, else ./outflow-data].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
}

/// `outflow bench`.
#[derive(Debug, Args)]
#[command(after_help = "Each scenario starts an `outflow serve` child with a temporary data dir \
    (and a receiver on 127.0.0.1 where needed), warms up, measures for --duration and prints \
    one `name value unit` line per figure, including the server's peak RSS and CPU time. \
    See docs/benchmarks.md.")]
pub struct BenchArgs {
    /// What to measure.
    #[arg(value_enum)]
    pub scenario: BenchScenario,
    /// How long to measure.
    #[arg(long, default_value = "10s", value_parser = parse_duration_arg)]
    pub duration: HumanDuration,
    /// How long to run before measuring.
    #[arg(long, default_value = "2s", value_parser = parse_duration_arg)]
    pub warmup: HumanDuration,
    /// Concurrent clients.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// Target jobs per second across all clients [default: flat out].
    #[arg(long)]
    pub rate: Option<f64>,
    /// Jobs stored before measuring (status scenario).
    #[arg(long, default_value_t = 10_000)]
    pub jobs: usize,
    /// Share of webhook requests the receiver answers with 503 (webhook scenario).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=100))]
    pub fail_percent: u32,
    /// Destination type to measure (destination scenario); its spec points at the local
    /// test peer that `scripts/services.sh up` starts, unless --spec is given.
    #[arg(long = "type", value_name = "TYPE")]
    pub destination_type: Option<String>,
    /// A full destination spec as JSON (destination scenario), e.g.
    /// '{"type":"postgresql","connection_string":"postgres://...","table":"bench"}'.
    #[arg(long, value_name = "JSON")]
    pub spec: Option<String>,
    /// Records to deliver (destination scenario).
    #[arg(long, default_value_t = 10_000)]
    pub records: usize,
    /// Records per `deliver_batch` call (destination scenario); 1 delivers them one by one,
    /// --concurrency at a time.
    #[arg(long, default_value_t = 1000)]
    pub batch_size: usize,
    /// Print a JSON summary instead of lines.
    #[arg(long)]
    pub json: bool,
}

/// The benchmark scenarios.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum BenchScenario {
    /// Jobs with a small JSON output to one filesystem destination.
    Submit,
    /// Jobs delivered as signed webhooks to a local receiver.
    Webhook,
    /// Status reads of random jobs among --jobs stored ones.
    Status,
    /// --records small records straight into one destination (--type or --spec), in
    /// batches of --batch-size: records/s, batch latency, this process's peak RSS.
    Destination,
}

/// `outflow chaos` scenarios. See docs/chaos.md.
#[derive(Debug, Subcommand)]
pub enum ChaosScenario {
    /// SIGKILL a loaded server K times, restart it on the same data dir, and check that
    /// every acknowledged output was delivered.
    Crash(ChaosCrashArgs),
    /// Deliver to a receiver that times out, resets, answers 500/503/429 or accepts by
    /// turns, and check every delivery's final state and attempt records.
    Faults(ChaosFaultsArgs),
    /// Put the data dir on a small tmpfs, fill it, and check for a clear 507, no corrupted
    /// output, and service resuming once the tmpfs grows (needs root to mount).
    DiskFull(ChaosDiskFullArgs),
}

/// `outflow chaos crash`.
#[derive(Debug, Args)]
#[command(after_help = "Prints `acknowledged`, `delivered`, `lost`, `duplicates` (extra \
    receipts of an already received webhook-id) as `name value unit` lines; exits 1 when \
    lost > 0.")]
pub struct ChaosCrashArgs {
    /// How many times to SIGKILL the server.
    #[arg(long, default_value_t = 20)]
    pub kills: u32,
    /// Concurrent submitting clients.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// Seed of the kill delays (200 ms to 1.5 s each) [default: from the clock, printed].
    #[arg(long)]
    pub seed: Option<u64>,
    /// Print a JSON summary instead of lines.
    #[arg(long)]
    pub json: bool,
}

/// `outflow chaos faults`.
#[derive(Debug, Args)]
#[command(after_help = "Prints requests per fault kind, deliveries per final state and \
    `mismatches`; exits 1 when a delivery did not end delivered or dead or its attempt \
    records disagree with what the receiver saw.")]
pub struct ChaosFaultsArgs {
    /// Jobs to submit (one webhook delivery each).
    #[arg(long, default_value_t = 200)]
    pub jobs: usize,
    /// Print a JSON summary instead of lines.
    #[arg(long)]
    pub json: bool,
}

/// `outflow chaos disk-full`.
#[derive(Debug, Args)]
#[command(after_help = "Mounts a tmpfs of --size-mib (needs root, CAP_SYS_ADMIN; exit 2 \
    without it) as the data dir, submits 64 KiB outputs until a submission fails, reads every \
    acknowledged output back, grows the tmpfs to 4x and submits again. Prints \
    `acknowledged_before_full`, `first_failure_status`, `corrupted`, `resumed_after_space`, \
    `acknowledged_after_resume`; exits 1 when nothing failed, the failure was not 507/503, \
    an output was corrupted or service did not resume.")]
pub struct ChaosDiskFullArgs {
    /// Size of the tmpfs holding the data dir, in MiB.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..=4096))]
    pub size_mib: u64,
    /// Print a JSON summary instead of lines.
    #[arg(long)]
    pub json: bool,
}

/// A duration given as `10s`, `500ms`, `2m`.
#[derive(Debug, Clone, Copy)]
pub struct HumanDuration(pub std::time::Duration);

impl From<HumanDuration> for std::time::Duration {
    fn from(d: HumanDuration) -> Self {
        d.0
    }
}

fn parse_duration_arg(s: &str) -> Result<HumanDuration, String> {
    outflow_core::config::units::parse_duration(s, outflow_core::config::units::Unit::Seconds)
        .map(HumanDuration)
}

/// Which server the client commands talk to.
#[derive(Debug, Args)]
pub struct ServerArg {
    /// The server's base URL.
    #[arg(long, global = true, env = "OUTFLOW_SERVER", default_value = outflow_client::DEFAULT_SERVER)]
    pub server: String,
    /// API key sent as `Authorization: Bearer`.
    #[arg(long, global = true, env = "OUTFLOW_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Print JSON instead of tables (for scripts).
    #[arg(long, global = true)]
    pub json: bool,
}

/// `outflow jobs ...`.
#[derive(Debug, Subcommand)]
pub enum JobsCommand {
    /// Submit a job.
    Submit(SubmitArgs),
    /// List jobs, newest first.
    List(ListJobsArgs),
    /// Show one job (by numeric id or UUID).
    Get {
        /// The job's id or UUID.
        id: String,
    },
    /// Show a job's status and progress.
    Status {
        /// The job's id or UUID.
        id: String,
    },
    /// Write a job's output to stdout (or a file).
    Output {
        /// The job's id or UUID.
        id: String,
        /// An older version [default: the latest].
        #[arg(long)]
        version: Option<u32>,
        /// Write to this file instead of stdout.
        #[arg(long, short = 'o', value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Cancel a queued or running job (a running command is killed).
    Cancel {
        /// The job's id or UUID.
        id: String,
    },
    /// Delete a job with its outputs, deliveries and attempts.
    Delete {
        /// The job's id or UUID.
        id: String,
        /// Also delete a running job.
        #[arg(long)]
        force: bool,
    },
    /// Show a job's deliveries and their attempts.
    Deliveries {
        /// The job's id or UUID.
        id: String,
    },
}

/// `outflow jobs submit`.
#[derive(Debug, Args)]
pub struct SubmitArgs {
    /// The task, by name.
    #[arg(long, value_name = "NAME", conflicts_with = "task_id")]
    pub task_name: Option<String>,
    /// The task, by numeric id.
    #[arg(long, value_name = "ID")]
    pub task_id: Option<i64>,
    /// Input data: JSON text, or @FILE to read it from a file.
    #[arg(long, value_name = "JSON|@FILE")]
    pub input: Option<String>,
    /// low, normal, high or urgent.
    #[arg(long, value_name = "PRIORITY")]
    pub priority: Option<String>,
    /// Deliver to this global destination (repeatable).
    #[arg(long = "to", value_name = "NAME")]
    pub to: Vec<String>,
    /// An inline destination as JSON (repeatable).
    #[arg(long = "dest", value_name = "JSON")]
    pub dest: Vec<String>,
    /// Your own id for the job: submitting it again returns the existing job.
    #[arg(long, value_name = "ID")]
    pub job_id: Option<String>,
    /// Metadata `key=value` (repeatable; `tags=a,b` sets a list).
    #[arg(long = "meta", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub meta: Vec<(String, String)>,
}

/// `outflow jobs list`.
#[derive(Debug, Args)]
pub struct ListJobsArgs {
    /// Only jobs with this status (queued, running, succeeded, failed, cancelled).
    #[arg(long)]
    pub status: Option<String>,
    /// Only jobs of this task.
    #[arg(long)]
    pub task_name: Option<String>,
    /// Only jobs tagged so.
    #[arg(long)]
    pub tag: Option<String>,
    /// Page number (1-based).
    #[arg(long, default_value_t = 1)]
    pub page: u64,
    /// Jobs per page.
    #[arg(long, default_value_t = 20)]
    pub limit: u64,
}

/// `outflow deliveries ...`.
#[derive(Debug, Subcommand)]
pub enum DeliveriesCommand {
    /// List deliveries (dead letters with --state dead).
    List {
        /// pending, in_flight, scheduled, delivered or dead.
        #[arg(long)]
        state: Option<String>,
        /// Only deliveries of this job (numeric id).
        #[arg(long = "job", value_name = "ID")]
        job_id: Option<i64>,
        /// Only this destination type.
        #[arg(long)]
        destination_type: Option<String>,
        /// Page number (1-based).
        #[arg(long, default_value_t = 1)]
        page: u64,
        /// Deliveries per page.
        #[arg(long, default_value_t = 20)]
        limit: u64,
    },
    /// Requeue one delivery now (dead or scheduled).
    Retry {
        /// The delivery id (dlv_...).
        id: String,
    },
    /// Requeue every dead delivery matching the filters.
    Replay {
        /// Only this destination type.
        #[arg(long)]
        destination_type: Option<String>,
        /// Only deliveries of this job (numeric id).
        #[arg(long = "job", value_name = "ID")]
        job_id: Option<i64>,
        /// Only deliveries created at or after this time (RFC 3339).
        #[arg(long)]
        created_after: Option<String>,
        /// Only deliveries created before this time (RFC 3339).
        #[arg(long)]
        created_before: Option<String>,
    },
}

/// Where the config comes from.
#[derive(Debug, Args)]
pub struct ConfigArg {
    /// Config file [default: $OUTFLOW_CONFIG, else ./outflow.yaml when it exists].
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// `outflow check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub config: ConfigArg,
}

/// `outflow deliver`.
#[derive(Debug, Args)]
#[command(after_help = "Template variables available in paths, URLs and headers:\n  \
    job_uuid job_id task_name task_version task_id execution_id priority schedule_id\n  \
    environment timestamp date time year month day hour minute second duration_ms status\n  \
    output_data output_size delivery_id meta.<key> and every --var name.\n\n\
    Exit status: 0 when every destination succeeded, 1 otherwise.")]
pub struct DeliverArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Deliver to this global destination (repeatable). Without --to and --dest, every
    /// global destination is used.
    #[arg(long = "to", value_name = "NAME")]
    pub to: Vec<String>,
    /// An inline destination as JSON, e.g. '{"type":"filesystem","path":"/tmp/{{job_uuid}}.json"}'
    /// (repeatable; works without a config file).
    #[arg(long = "dest", value_name = "JSON")]
    pub dest: Vec<String>,
    /// A template variable, `key=value` (repeatable).
    #[arg(long = "var", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub vars: Vec<(String, String)>,
    /// Job metadata for `{{meta.<key>}}`, `key=value` (repeatable).
    #[arg(long = "meta", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub meta: Vec<(String, String)>,
    /// The job's id: a UUID sets `job_uuid`, a number sets `job_id` [default: a new UUIDv7].
    #[arg(long, value_name = "ID")]
    pub job_id: Option<String>,
    /// `{{task_name}}`.
    #[arg(long, value_name = "NAME")]
    pub task_name: Option<String>,
    /// `{{task_version}}`.
    #[arg(long, value_name = "VERSION")]
    pub task_version: Option<String>,
    /// `{{status}}` of the job that produced the output.
    #[arg(long, default_value = "completed", value_name = "STATUS")]
    pub status: String,
    /// `{{priority}}`: low, normal, high or urgent.
    #[arg(long, default_value = "normal", value_name = "PRIORITY")]
    pub priority: String,
    /// Treat the input as raw bytes (text or binary) instead of detecting JSON.
    #[arg(long)]
    pub raw: bool,
    /// Validate and show where the output would go, without delivering. Secrets are masked.
    #[arg(long)]
    pub dry_run: bool,
    /// Print the results as JSON (for scripts).
    #[arg(long)]
    pub json: bool,
    /// The output to deliver: a file, or `-` / nothing for stdin.
    #[arg(value_name = "INPUT")]
    pub input: Option<PathBuf>,
}

/// `outflow test-destinations`.
#[derive(Debug, Args)]
pub struct TestDestinationsArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Only these global destinations (repeatable) [default: all].
    #[arg(long = "to", value_name = "NAME")]
    pub to: Vec<String>,
    /// An inline destination as JSON (repeatable).
    #[arg(long = "dest", value_name = "JSON")]
    pub dest: Vec<String>,
    /// Print `{"data": [...]}` as JSON, like the REST API.
    #[arg(long)]
    pub json: bool,
}

/// `outflow webhook ...`.
#[derive(Debug, Subcommand)]
pub enum WebhookCommand {
    /// Print the `webhook-signature` value for a message.
    Sign(SignArgs),
    /// Verify a `webhook-signature` header; exit 0 when valid, 1 otherwise.
    Verify(VerifyArgs),
}

/// The message being signed or verified.
#[derive(Debug, Args)]
pub struct MessageArgs {
    /// The signing secret: `whsec_<base64>` or a plain string [env: OUTFLOW_WEBHOOK_SECRET].
    #[arg(long, env = "OUTFLOW_WEBHOOK_SECRET", hide_env_values = true)]
    pub secret: String,
    /// The `webhook-id` header.
    #[arg(long)]
    pub id: String,
    /// The `webhook-timestamp` header (unix seconds).
    #[arg(long, allow_negative_numbers = true)]
    pub timestamp: i64,
    /// The body: a file, or `-` / nothing for stdin.
    #[arg(value_name = "BODY")]
    pub body: Option<PathBuf>,
}

/// `outflow webhook sign`.
#[derive(Debug, Args)]
pub struct SignArgs {
    #[command(flatten)]
    pub message: MessageArgs,
}

/// `outflow webhook verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub message: MessageArgs,
    /// The `webhook-signature` header (one or more space-separated `v1,<base64>`).
    #[arg(long)]
    pub signature: String,
    /// Skip the ±5 minute timestamp window check.
    #[arg(long)]
    pub no_tolerance: bool,
}

fn parse_key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("expected KEY=VALUE, got '{s}'")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn key_value_parsing() {
        assert_eq!(parse_key_value("a=b=c").unwrap(), ("a".into(), "b=c".into()));
        assert!(parse_key_value("=x").is_err());
        assert!(parse_key_value("novalue").is_err());
    }
}
