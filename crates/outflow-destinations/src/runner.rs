//! Delivering one output: to one destination with retries, or to many at once.
//!
//! This is the in-memory runner used by `outflow deliver`; the server's engine schedules
//! retries in its store instead but makes attempts through the same [`Destination`] trait
//! and [`RetryPolicy`](outflow_core::retry::RetryPolicy).

use std::sync::Arc;
use std::time::Instant;

use chrono::Utc;
use futures::future::join_all;
use outflow_core::attempt::AttemptRecord;
use outflow_core::context::{JobContext, RenderContext};
use outflow_core::output::Output;
use serde::Serialize;
use tokio::sync::Semaphore;

use crate::{Attempt, Destination};

/// A destination with the name it is known by (`production_logs`, `--dest #1`).
#[derive(Debug, Clone)]
pub struct NamedDestination {
    /// The global destination's name, or a label for inline ones.
    pub name: String,
    /// The destination.
    pub destination: Arc<dyn Destination>,
}

/// The outcome of delivering one output to one destination.
#[derive(Debug, Clone, Serialize)]
pub struct DeliveryReport {
    /// The destination's name.
    pub name: String,
    /// Its type.
    pub destination_type: &'static str,
    /// The stable delivery id (`webhook-id`).
    pub delivery_id: String,
    /// The rendered target of the last attempt (or the unrendered one if none rendered).
    pub target: String,
    /// Whether an attempt succeeded.
    pub success: bool,
    /// Every attempt made.
    pub attempts: Vec<AttemptRecord>,
    /// Wall time from the first attempt to the end, waits included.
    pub duration_ms: u64,
    /// Bytes delivered by the successful attempt.
    pub bytes: u64,
    /// The last error, when it failed.
    pub error: Option<String>,
}

/// A new delivery id: `dlv_` + a UUIDv7, so ids sort by creation time.
pub fn new_delivery_id() -> String {
    format!("dlv_{}", uuid::Uuid::now_v7().simple())
}

/// A destination type as the first word of a log line (`webhook` → `Webhook`), so the CLI
/// runner and the engine log failures in the same words ("Webhook delivery failed, ...").
pub fn title_case(kind: &str) -> String {
    let mut c = kind.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

/// Delivers to one destination, retrying per its policy. An attempt holds a permit from
/// `permits` only while it runs, never while it waits for a retry, so a failing destination
/// cannot starve the others of the global concurrency budget.
pub async fn deliver_with_retries(
    dest: &NamedDestination,
    job: &JobContext,
    output: &Output,
    delivery_id: &str,
    permits: &Semaphore,
) -> DeliveryReport {
    let policy = dest.destination.retry_policy().clone();
    let kind = dest.destination.kind();
    let started = Instant::now();
    let mut attempts = Vec::new();
    let mut report = DeliveryReport {
        name: dest.name.clone(),
        destination_type: kind,
        delivery_id: delivery_id.to_string(),
        target: dest.destination.describe(),
        success: false,
        attempts: Vec::new(),
        duration_ms: 0,
        bytes: 0,
        error: None,
    };
    let render = RenderContext::new(job, output, delivery_id);
    let mut number = 1;
    loop {
        let attempt_start = Utc::now();
        let clock = Instant::now();
        let result = {
            let _permit = permits.acquire().await.expect("semaphore is never closed");
            dest.destination.deliver(Attempt { render, number }).await
        };
        let duration_ms = clock.elapsed().as_millis() as u64;
        match result {
            Ok(receipt) => {
                attempts.push(AttemptRecord {
                    number,
                    started_at: attempt_start,
                    duration_ms,
                    status_code: receipt.status_code,
                    error: None,
                    failure_class: None,
                    response_excerpt: receipt.response_excerpt,
                    next_retry_in: None,
                });
                tracing::info!(job = %job.job_uuid, destination = %dest.name, target = %receipt.target,
                    attempt = number, bytes = receipt.bytes, "Output delivered");
                report.success = true;
                report.target = receipt.target;
                report.bytes = receipt.bytes;
                break;
            }
            Err(err) => {
                let retry = err.is_retryable() && policy.allows_attempt_after(number);
                let next = retry.then(|| policy.delay_after_random(number, err.retry_after));
                attempts.push(AttemptRecord {
                    number,
                    started_at: attempt_start,
                    duration_ms,
                    status_code: err.status_code,
                    error: Some(err.message.clone()),
                    failure_class: Some(err.class),
                    response_excerpt: err.response_excerpt.clone(),
                    next_retry_in: next,
                });
                let status = err.status_code.map(|s| s.to_string()).unwrap_or_else(|| "-".into());
                match next {
                    Some(wait) => {
                        tracing::warn!(job = %job.job_uuid, destination = %dest.name, status = %status,
                            error = %err.message,
                            "{} delivery failed, retrying (attempt {}/{}) next retry in {:.1}s",
                            title_case(kind), number + 1, policy.max_attempts, wait.as_secs_f64());
                        tokio::time::sleep(wait).await;
                        number += 1;
                    }
                    None => {
                        let why = if err.is_retryable() {
                            "attempts exhausted"
                        } else {
                            "permanent error"
                        };
                        tracing::error!(job = %job.job_uuid, destination = %dest.name, status = %status,
                            attempts = number, error = %err.message,
                            "Failed to deliver to {kind} destination ({why})");
                        report.error = Some(err.message);
                        break;
                    }
                }
            }
        }
    }
    report.attempts = attempts;
    report.duration_ms = started.elapsed().as_millis() as u64;
    report
}

/// Delivers one output to every destination concurrently, at most `max_concurrent` attempts
/// in flight; each destination retries on its own. Reports come back in input order.
pub async fn deliver_all(
    destinations: &[NamedDestination],
    job: &JobContext,
    output: &Output,
    max_concurrent: usize,
) -> Vec<DeliveryReport> {
    let permits = Semaphore::new(max_concurrent.max(1));
    let ids: Vec<String> = destinations.iter().map(|_| new_delivery_id()).collect();
    join_all(
        destinations
            .iter()
            .zip(&ids)
            .map(|(d, id)| deliver_with_retries(d, job, output, id, &permits)),
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::title_case;

    #[test]
    fn kinds_start_log_lines_capitalised() {
        assert_eq!(title_case("webhook"), "Webhook");
        assert_eq!(title_case(""), "");
    }
}
