//! `outflow bench destination --type T`: small records straight into one destination,
//! without a server, so the figure is the destination driver and its peer, nothing else.
//!
//! The spec comes from `--spec` or, with `--type`, points at the local test peer that
//! `scripts/services.sh up` starts (its addresses are read from the same variables and
//! env file the tests use); tables, topics, buckets and indexes get a fresh name per run
//! (s3s-fs creates the bucket on first write; other S3 stores need `--spec` with an existing
//! bucket, so the health check before the run is only a warning). Records go through [`Destination::deliver_batch`] in batches
//! of `--batch-size`; `--batch-size 1` delivers them one by one, `--concurrency` at a time.

use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail};
use futures::StreamExt;
use outflow_core::config::DestinationSpec;
use outflow_core::context::{JobContext, RenderContext};
use outflow_core::netpolicy::NetworkPolicy;
use outflow_core::output::Output;
use outflow_destinations::runner::new_delivery_id;
use outflow_destinations::{Attempt, BuildDefaults, Destination, Registry};
use serde_json::{Value, json};

use super::harness::Resources;
use super::report::Report;
use crate::cli::BenchArgs;

/// Runs the scenario.
pub async fn run(args: &BenchArgs) -> anyhow::Result<Report> {
    let name = format!("outflow_bench_{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let spec = match (&args.spec, &args.destination_type) {
        (Some(text), _) => {
            serde_json::from_str::<Value>(text).context("--spec is not valid JSON")?
        }
        (None, Some(kind)) => peer_spec(kind, &name)?,
        (None, None) => bail!(
            "the destination scenario needs --type TYPE (against its local test peer) or --spec JSON\n\
             hint: scripts/services.sh up && outflow bench destination --type postgresql"
        ),
    };
    let parsed = DestinationSpec::from_value(&spec, "spec").map_err(|e| anyhow::anyhow!("{e}"))?;
    let registry = Registry::new(BuildDefaults {
        // The bench talks to peers on loopback.
        network: NetworkPolicy { allow_private_networks: true, ..NetworkPolicy::default() },
        ..BuildDefaults::default()
    });
    let destination = registry.build(&parsed, "spec").map_err(|errors| {
        let lines: Vec<String> = errors.iter().map(|e| format!("  {e}")).collect();
        anyhow::anyhow!("the destination spec is invalid:\n{}", lines.join("\n"))
    })?;
    // Advisory: a store that creates the bucket or topic on first write (s3s-fs, tansu)
    // fails a check that deliveries then pass; a real outage fails the deliveries below.
    if let Err(e) = destination.check().await {
        eprintln!(
            "warning: health check of {} failed ({e}); delivering anyway",
            destination.describe()
        );
    }

    let mut job = JobContext::new_now();
    job.task_name = Some("bench".into());
    let outputs: Vec<Output> = (0..args.records)
        .map(|i| Output::Json(json!({"i": i, "level": "info", "msg": "benchmark record"})))
        .collect();
    let ids: Vec<String> = (0..args.records).map(|_| new_delivery_id()).collect();

    let started = Instant::now();
    let (failed, mut latencies) = if args.batch_size <= 1 {
        deliver_one_by_one(&destination, &job, &outputs, &ids, args.concurrency.max(1)).await
    } else {
        deliver_in_batches(destination.as_ref(), &job, &outputs, &ids, args.batch_size).await
    };
    let elapsed = started.elapsed().as_secs_f64();
    if failed > 0 {
        bail!("{failed} of {} records failed to reach {}", args.records, destination.describe());
    }

    let mut report = Report::new("destination");
    report.add("destination_records", args.records as f64, "count");
    report.add("destination_records_per_sec", args.records as f64 / elapsed, "1/s");
    let prefix = if args.batch_size <= 1 { "record_latency" } else { "batch_latency" };
    report.add_percentiles(prefix, &mut latencies);
    let own = Resources::of(std::process::id())?;
    report.add("process_peak_rss", own.peak_rss_mib, "MiB");
    report.add("process_cpu_time", own.cpu_seconds, "s");
    Ok(report)
}

/// Batches of `size` through `deliver_batch`, one after another; returns the failures and
/// each batch's latency in ms.
async fn deliver_in_batches(
    destination: &dyn Destination,
    job: &JobContext,
    outputs: &[Output],
    ids: &[String],
    size: usize,
) -> (usize, Vec<f64>) {
    let mut failed = 0;
    let mut latencies = Vec::new();
    for (chunk_outputs, chunk_ids) in outputs.chunks(size).zip(ids.chunks(size)) {
        let attempts: Vec<Attempt<'_>> = chunk_outputs
            .iter()
            .zip(chunk_ids)
            .map(|(output, id)| Attempt { render: RenderContext::new(job, output, id), number: 1 })
            .collect();
        let clock = Instant::now();
        let results = destination.deliver_batch(&attempts).await;
        latencies.push(clock.elapsed().as_secs_f64() * 1000.0);
        if let Some(Err(first)) = results.iter().find(|r| r.is_err()) {
            tracing::warn!(error = %first, "a batch had failed records");
        }
        failed += results.iter().filter(|r| r.is_err()).count();
    }
    (failed, latencies)
}

/// One `deliver` per record, `concurrency` in flight; returns the failures and each
/// record's latency in ms.
async fn deliver_one_by_one(
    destination: &Arc<dyn Destination>,
    job: &JobContext,
    outputs: &[Output],
    ids: &[String],
    concurrency: usize,
) -> (usize, Vec<f64>) {
    let results: Vec<(bool, f64)> = futures::stream::iter(outputs.iter().zip(ids))
        .map(|(output, id)| async move {
            let clock = Instant::now();
            let render = RenderContext::new(job, output, id);
            let ok = destination.deliver(Attempt { render, number: 1 }).await.is_ok();
            (ok, clock.elapsed().as_secs_f64() * 1000.0)
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let failed = results.iter().filter(|(ok, _)| !ok).count();
    (failed, results.into_iter().map(|(_, ms)| ms).collect())
}

/// A peer setting: the environment variable, else the env file `scripts/services.sh up`
/// writes, else `default` (the same lookup the conformance tests use).
fn peer_setting(var: &str, default: &str) -> String {
    if let Ok(value) = std::env::var(var)
        && !value.is_empty()
    {
        return value;
    }
    let file =
        std::env::var_os("OUTFLOW_SERVICES_ENV").map(std::path::PathBuf::from).or_else(|| {
            let cache =
                std::env::var_os("XDG_CACHE_HOME").map(std::path::PathBuf::from).or_else(|| {
                    std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".cache"))
                })?;
            Some(cache.join("outflow").join("services.env"))
        });
    let text = file.and_then(|f| std::fs::read_to_string(f).ok()).unwrap_or_default();
    text.lines()
        .filter_map(|line| line.trim().trim_start_matches("export ").split_once('='))
        .find(|(key, _)| key.trim() == var)
        .map(|(_, value)| value.trim().trim_matches(|c| c == '"' || c == '\'').to_string())
        .unwrap_or_else(|| default.to_string())
}

/// The spec of `kind` against its local test peer; `name` names the table, topic, key
/// prefix... so runs do not mix.
fn peer_spec(kind: &str, name: &str) -> anyhow::Result<Value> {
    let spec = match kind {
        "filesystem" => {
            let dir = std::env::temp_dir().join(name);
            json!({"type": "filesystem", "path": format!("{}/{{{{delivery_id}}}}.json", dir.display())})
        }
        "postgresql" => json!({
            "type": "postgresql",
            "connection_string": peer_setting("OUTFLOW_TEST_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/test"),
            "table": name,
        }),
        "kafka" => json!({
            "type": "kafka",
            "brokers": peer_setting("OUTFLOW_TEST_KAFKA_BROKERS", "127.0.0.1:9092"),
            "topic": name,
        }),
        "s3" => json!({
            "type": "s3",
            "endpoint": peer_setting("OUTFLOW_TEST_S3_URL", "http://127.0.0.1:8014"),
            "access_key_id": peer_setting("OUTFLOW_TEST_S3_ACCESS_KEY", "AK"),
            "secret_access_key": peer_setting("OUTFLOW_TEST_S3_SECRET_KEY", "SK"),
            "region": "us-east-1",
            "bucket": name.replace('_', "-"),
            "key": "bench/{{delivery_id}}.json",
        }),
        "redis" => json!({
            "type": "redis",
            "url": peer_setting("OUTFLOW_TEST_REDIS_URL", "redis://127.0.0.1:6379"),
            "key": name,
        }),
        "elasticsearch" => json!({
            "type": "elasticsearch",
            "addresses": [peer_setting("OUTFLOW_TEST_ELASTICSEARCH_URL", "http://127.0.0.1:9200")],
            "index": name,
        }),
        other => bail!(
            "no built-in peer spec for '{other}'; pass --spec JSON (types with one: {})",
            PEER_SPEC_KINDS.join(", ")
        ),
    };
    Ok(spec)
}

/// Types [`peer_spec`] knows.
const PEER_SPEC_KINDS: &[&str] =
    &["filesystem", "postgresql", "kafka", "s3", "redis", "elasticsearch"];
