//! `outflow bench submit`: clients submit jobs whose small JSON output goes to one
//! filesystem destination; submit latency percentiles, throughput and submit-to-delivered
//! latency (when the file appeared).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use super::harness::{ChildServer, add_resources};
use super::load::Load;
use super::report::Report;
use crate::cli::BenchArgs;

/// Runs the scenario.
pub async fn run(args: &BenchArgs) -> anyhow::Result<Report> {
    // Every file lands under one root, which is one destination key: give that key as many
    // slots as the engine, as a deployment writing many small files would.
    let server = ChildServer::start(json!({"output": {
        "max_concurrent_deliveries": 64,
        "per_destination_concurrency": 64
    }}))
    .await?;
    let out_dir = server.subdir("out")?;
    let path_template = format!("{}/{{{{job_uuid}}}}.json", out_dir.display());
    let load = Load {
        concurrency: args.concurrency,
        rate: args.rate,
        warmup: args.warmup.into(),
        duration: args.duration.into(),
    };
    let body = Arc::new(
        move |_| json!({"input_data": {}, "output_destinations": [{"type": "filesystem", "path": path_template, "format": "json_compact"}]}),
    );

    // Watch for files while the load runs, so arrival times are close to the truth.
    let watch_dir = out_dir.clone();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop_watch = stop.clone();
    let watcher = tokio::task::spawn_blocking(move || watch_files(watch_dir, stop_watch));

    let result = load.run(&server.client, body).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline
        && !result.acknowledged.iter().all(|(j, _)| out_dir.join(format!("{j}.json")).exists())
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let seen = watcher.await?;

    let mut e2e: Vec<f64> = result
        .acknowledged
        .iter()
        .filter_map(|(j, acked)| {
            seen.get(&format!("{j}.json"))
                .map(|t| t.saturating_duration_since(*acked).as_secs_f64() * 1e3)
        })
        .collect();
    let mut report = Report::new("submit");
    report.add("jobs_acknowledged", result.acknowledged.len() as f64, "count");
    report.add("jobs_delivered", e2e.len() as f64, "count");
    report.add("submit_errors", result.errors as f64, "count");
    report.add(
        "submit_throughput",
        result.acknowledged.len() as f64 / result.window.as_secs_f64(),
        "1/s",
    );
    let (mut submit, mut output) = (result.submit_ms, result.output_ms);
    report.add_percentiles("submit_latency", &mut submit);
    report.add_percentiles("output_put_latency", &mut output);
    report.add_percentiles("submit_to_delivered", &mut e2e);
    add_resources(&mut report, server.resources()?);
    Ok(report)
}

/// Scans `dir` every millisecond, recording when each file name was first seen.
fn watch_files(dir: PathBuf, stop: Arc<std::sync::atomic::AtomicBool>) -> HashMap<String, Instant> {
    let mut seen = HashMap::new();
    loop {
        let done = stop.load(std::sync::atomic::Ordering::SeqCst);
        if let Ok(entries) = std::fs::read_dir(&dir) {
            let now = Instant::now();
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                // Atomic writes go through hidden temp files; only count final names.
                if name.ends_with(".json") && !name.starts_with('.') {
                    seen.entry(name).or_insert(now);
                }
            }
        }
        if done {
            return seen;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}
