//! `outflow bench webhook`: jobs each delivered to a local receiver with Standard Webhooks
//! signing; deliveries/s and submit-to-delivered latency. `--fail-percent 10` makes the
//! receiver answer 503 to that share of requests (they are retried).

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use super::harness::{ChildServer, add_resources};
use super::load::Load;
use super::receiver::Receiver;
use super::report::Report;
use crate::cli::BenchArgs;

/// Runs the scenario.
pub async fn run(args: &BenchArgs) -> anyhow::Result<Report> {
    let receiver = Receiver::start(args.fail_percent).await?;
    let server = ChildServer::start(json!({
        "output": {
            "max_concurrent_deliveries": 256,
            "per_destination_concurrency": 128,
            "allowed_hosts": ["127.0.0.1"],
            "global_destinations": [{"name": "hook", "destination": {
                "type": "webhook", "url": receiver.url,
                "auth": {"type": "signature", "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "algorithm": "sha256"},
                "retry_policy": {"max_attempts": 10, "initial_delay_ms": 100, "max_delay_ms": 1000, "backoff_multiplier": 2.0}
            }}]
        }
    }))
    .await?;
    let load = Load {
        concurrency: args.concurrency,
        rate: args.rate,
        warmup: args.warmup.into(),
        duration: args.duration.into(),
    };
    let started = Instant::now();
    let result = load
        .run(&server.client, Arc::new(|_| json!({"destinations": ["hook"], "input_data": {}})))
        .await;

    // Wait for the measured jobs to drain (bounded), then compute.
    let drain_deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let arrived = {
            let a = receiver.ledger.arrivals.lock().expect("not poisoned");
            result.acknowledged.iter().filter(|(j, _)| a.contains_key(j)).count()
        };
        if arrived == result.acknowledged.len() || Instant::now() > drain_deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let total_elapsed = started.elapsed();
    let arrivals = receiver.ledger.arrivals.lock().expect("not poisoned").clone();
    let mut e2e: Vec<f64> = result
        .acknowledged
        .iter()
        .filter_map(|(j, acked)| {
            arrivals.get(j).map(|t| t.saturating_duration_since(*acked).as_secs_f64() * 1e3)
        })
        .collect();
    let delivered_in_window = e2e.len();
    let last_arrival = result.acknowledged.iter().filter_map(|(j, _)| arrivals.get(j)).max();
    let first_ack = result.acknowledged.iter().map(|(_, t)| *t).min();
    let delivery_span = match (first_ack, last_arrival) {
        (Some(a), Some(b)) if *b > a => (*b - a).as_secs_f64(),
        _ => load.duration.as_secs_f64(),
    };

    let mut report = Report::new("webhook");
    report.add("jobs_acknowledged", result.acknowledged.len() as f64, "count");
    report.add("jobs_delivered", delivered_in_window as f64, "count");
    report.add("jobs_lost", (result.acknowledged.len() - delivered_in_window) as f64, "count");
    report.add("submit_errors", result.errors as f64, "count");
    report.add(
        "submit_throughput",
        result.acknowledged.len() as f64 / result.window.as_secs_f64(),
        "1/s",
    );
    report.add("webhook_deliveries_per_sec", delivered_in_window as f64 / delivery_span, "1/s");
    report.add(
        "receiver_503_answers",
        receiver.ledger.rejected.load(std::sync::atomic::Ordering::Relaxed) as f64,
        "count",
    );
    let (mut submit, mut output) = (result.submit_ms, result.output_ms);
    report.add_percentiles("submit_latency", &mut submit);
    report.add_percentiles("output_put_latency", &mut output);
    report.add_percentiles("submit_to_delivered", &mut e2e);
    add_resources(&mut report, server.resources()?);
    report.add("wall_time", total_elapsed.as_secs_f64(), "s");
    Ok(report)
}
