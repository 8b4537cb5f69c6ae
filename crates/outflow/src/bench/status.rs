//! `outflow bench status`: status reads against 10,000 stored jobs (DESIGN §11: p99 ≤ 2 ms).
//!
//! Seeds the store with `--jobs` jobs (no destinations, so nothing is delivered), then N
//! clients read `GET /api/v1/jobs/{id}/status` of random jobs for the measured window.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::sync::Mutex;

use super::harness::{ChildServer, add_resources};
use super::report::Report;
use crate::cli::BenchArgs;

/// Runs the scenario.
pub async fn run(args: &BenchArgs) -> anyhow::Result<Report> {
    let server = ChildServer::start(json!({})).await?;
    let seeded = seed(&server, args.jobs, args.concurrency).await?;
    anyhow::ensure!(!seeded.is_empty(), "seeding created no jobs");

    let warmup: Duration = args.warmup.into();
    let duration: Duration = args.duration.into();
    let measure_from = Instant::now() + warmup;
    let stop_at = measure_from + duration;
    let ids = Arc::new(seeded);
    let samples = Arc::new(Mutex::new(Vec::new()));
    let errors = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut tasks = Vec::new();
    for worker in 0..args.concurrency {
        let (client, ids, samples, errors) =
            (server.client.clone(), ids.clone(), samples.clone(), errors.clone());
        let interval = args.rate.map(|r| Duration::from_secs_f64(args.concurrency as f64 / r));
        tasks.push(tokio::spawn(async move {
            let mut local = Vec::new();
            // A cheap per-worker sequence that visits jobs all over the table.
            let mut i = worker * 7919;
            let mut next = Instant::now();
            while Instant::now() < stop_at {
                if let Some(interval) = interval {
                    tokio::time::sleep_until(next.into()).await;
                    next += interval;
                }
                i = (i + 104_729) % ids.len();
                let t0 = Instant::now();
                if client.job_status(&ids[i].to_string()).await.is_err() {
                    errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    continue;
                }
                if t0 >= measure_from {
                    local.push(t0.elapsed().as_secs_f64() * 1e3);
                }
            }
            samples.lock().await.extend(local);
        }));
    }
    for t in tasks {
        t.await?;
    }
    let mut samples = std::mem::take(&mut *samples.lock().await);
    let mut report = Report::new("status");
    report.add("stored_jobs", ids.len() as f64, "count");
    report.add("status_reads", samples.len() as f64, "count");
    report.add("status_errors", errors.load(std::sync::atomic::Ordering::Relaxed) as f64, "count");
    report.add("status_reads_per_sec", samples.len() as f64 / duration.as_secs_f64(), "1/s");
    report.add_percentiles("status_latency", &mut samples);
    add_resources(&mut report, server.resources()?);
    Ok(report)
}

/// Creates `count` jobs with `concurrency` clients; returns their numeric ids.
async fn seed(server: &ChildServer, count: usize, concurrency: usize) -> anyhow::Result<Vec<i64>> {
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..concurrency.max(1) {
        let (client, next) = (server.client.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < count {
                let body = json!({"input_data": {}, "metadata": {"tags": ["bench"]}});
                let (job, _) = client.submit_job(&body).await?;
                ids.extend(job["id"].as_i64());
            }
            Ok::<_, outflow_client::ClientError>(ids)
        }));
    }
    let mut all = Vec::with_capacity(count);
    for t in tasks {
        all.extend(t.await??);
    }
    Ok(all)
}
