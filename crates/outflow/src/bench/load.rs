//! The load generator shared by the scenarios: N clients submitting jobs (POST the job, PUT
//! its output) for a warm-up and a measured window, flat out or at a target rate.

use std::sync::Arc;
use std::time::{Duration, Instant};

use outflow_client::Client;
use serde_json::{Value, json};
use tokio::sync::Mutex;

/// What the clients did during the measured window.
#[derive(Default)]
pub struct LoadResult {
    /// `POST /api/v1/jobs` latencies, ms.
    pub submit_ms: Vec<f64>,
    /// `PUT .../output` latencies, ms.
    pub output_ms: Vec<f64>,
    /// (job UUID, when its output was acknowledged), for submit-to-delivered.
    pub acknowledged: Vec<(String, Instant)>,
    /// Calls that failed.
    pub errors: u64,
    /// The measured window's real length.
    pub window: Duration,
}

/// Load parameters.
pub struct Load {
    /// Concurrent clients.
    pub concurrency: usize,
    /// Total jobs per second across clients; `None` = flat out.
    pub rate: Option<f64>,
    /// Not measured.
    pub warmup: Duration,
    /// Measured.
    pub duration: Duration,
}

impl Load {
    /// Runs the load; `job_body(n)` is the submit body of the n-th job of a client.
    pub async fn run(
        &self,
        client: &Client,
        job_body: Arc<dyn Fn(u64) -> Value + Send + Sync>,
    ) -> LoadResult {
        let start = Instant::now();
        let measure_from = start + self.warmup;
        let stop_at = measure_from + self.duration;
        let result = Arc::new(Mutex::new(LoadResult::default()));
        let per_client_interval =
            self.rate.map(|r| Duration::from_secs_f64(self.concurrency as f64 / r.max(0.001)));
        let mut tasks = Vec::new();
        for worker in 0..self.concurrency {
            let (client, result, job_body) = (client.clone(), result.clone(), job_body.clone());
            tasks.push(tokio::spawn(async move {
                let mut local = LoadResult::default();
                let mut next = Instant::now();
                let mut n = 0u64;
                while Instant::now() < stop_at {
                    if let Some(interval) = per_client_interval {
                        tokio::time::sleep_until(next.into()).await;
                        next += interval;
                    }
                    n += 1;
                    let body = job_body(worker as u64 * 1_000_000_000 + n);
                    let t0 = Instant::now();
                    let job = match client.submit_job(&body).await {
                        Ok((job, _)) => job,
                        Err(_) => {
                            local.errors += 1;
                            continue;
                        }
                    };
                    let t1 = Instant::now();
                    let id = job["id"].to_string();
                    let output =
                        serde_json::to_vec(&json!({"n": n, "ok": true})).unwrap_or_default();
                    if client.put_output(&id, "application/json", output.into()).await.is_err() {
                        local.errors += 1;
                        continue;
                    }
                    let t2 = Instant::now();
                    if t0 >= measure_from && t2 <= stop_at {
                        local.submit_ms.push((t1 - t0).as_secs_f64() * 1e3);
                        local.output_ms.push((t2 - t1).as_secs_f64() * 1e3);
                        if let Some(uuid) = job["job_uuid"].as_str() {
                            local.acknowledged.push((uuid.to_string(), t2));
                        }
                    }
                }
                let mut r = result.lock().await;
                r.submit_ms.extend(local.submit_ms);
                r.output_ms.extend(local.output_ms);
                r.acknowledged.extend(local.acknowledged);
                r.errors += local.errors;
            }));
        }
        for t in tasks {
            let _ = t.await;
        }
        let mut r = std::mem::take(&mut *result.lock().await);
        r.window = self.duration;
        r
    }
}
