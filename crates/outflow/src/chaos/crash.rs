//! `outflow chaos crash`: SIGKILL a loaded server `--kills` times at random moments, restart
//! it on the same data dir each time, let the backlog drain, and compare what the receiver
//! got with what the API acknowledged (DESIGN: nothing acknowledged is ever lost).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use outflow_client::Client;
use serde_json::{Value, json};

use super::SplitMix64;
use crate::bench::Report;
use crate::bench::harness::ChildServer;
use crate::cli::ChaosCrashArgs;

/// Every request the receiver answered 2xx: (webhook-id, job UUID from the envelope).
type Receipts = Arc<Mutex<Vec<(String, String)>>>;

/// How long the backlog may take to drain after the last restart.
const DRAIN_LIMIT: Duration = Duration::from_secs(120);

/// Runs the scenario; the second value lists broken invariants (empty when all held).
pub async fn run(args: &ChaosCrashArgs) -> anyhow::Result<(Report, Vec<String>)> {
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
    });
    // On stderr, not in the report: a u64 does not survive the report's f64.
    eprintln!("chaos crash: seed {seed} (replay the kill moments with --seed {seed})");
    let mut rng = SplitMix64::new(seed);
    let (hook, receipts) = receiver().await?;
    let mut server = ChildServer::start(json!({
        "output": {
            "max_concurrent_deliveries": 32,
            // In-flight work of a killed server comes back once its lease expires.
            "default_timeout": 2,
            "delivery_lease": "3s",
            "allowed_hosts": ["127.0.0.1"],
            "global_destinations": [{"name": "hook", "destination": {
                "type": "webhook", "url": hook, "timeout_seconds": 2,
                "retry_policy": {"max_attempts": 30, "initial_delay_ms": 100,
                                 "max_delay_ms": 1000, "backoff_multiplier": 2.0}
            }}]
        }
    }))
    .await?;

    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for worker in 0..args.concurrency.max(1) {
        let (client, stop) = (server.client.clone(), stop.clone());
        workers.push(tokio::spawn(submit_until(client, stop, worker)));
    }
    for _ in 0..args.kills {
        tokio::time::sleep(Duration::from_millis(rng.between(200, 1500))).await;
        server.kill9()?;
        server.restart().await?;
    }
    // Some load against the last incarnation too, so its own acknowledgements count.
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::SeqCst);
    let mut acknowledged = HashSet::new();
    let mut submit_errors = 0u64;
    for w in workers {
        let (acked, errors) = w.await?;
        acknowledged.extend(acked);
        submit_errors += errors;
    }

    let drain_started = Instant::now();
    while Instant::now() < drain_started + DRAIN_LIMIT {
        let got = tally(&acknowledged, &receipts.lock().expect("not poisoned"));
        if got.lost == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let drain = drain_started.elapsed();
    let t = tally(&acknowledged, &receipts.lock().expect("not poisoned"));

    let mut report = Report::new("crash");
    report.add("kills", f64::from(args.kills), "count");
    report.add("acknowledged", t.acknowledged as f64, "count");
    report.add("delivered", t.delivered as f64, "count");
    report.add("lost", t.lost as f64, "count");
    report.add("duplicates", t.duplicates as f64, "count");
    report.add("jobs_with_several_ids", t.split as f64, "count");
    report.add("received", t.received as f64, "count");
    report.add("submit_errors", submit_errors as f64, "count");
    report.add("drain_time", drain.as_secs_f64(), "s");

    let mut failures = Vec::new();
    if t.acknowledged == 0 {
        failures.push("no submission was acknowledged: the load never reached the server".into());
    }
    if t.lost > 0 {
        failures.push(format!(
            "{} acknowledged outputs never arrived within {} s (seed {seed})",
            t.lost,
            DRAIN_LIMIT.as_secs()
        ));
    }
    if t.split > 0 {
        failures.push(format!(
            "{} jobs arrived under more than one webhook-id; a redelivery must reuse its id",
            t.split
        ));
    }
    Ok((report, failures))
}

/// One client: submits jobs (POST the job, PUT its output) until `stop`, riding out the
/// server's deaths. Returns the UUIDs whose output PUT was answered 2xx, and the failures.
async fn submit_until(client: Client, stop: Arc<AtomicBool>, worker: usize) -> (Vec<String>, u64) {
    let (mut acked, mut errors) = (Vec::new(), 0u64);
    let mut n = 0u64;
    while !stop.load(Ordering::SeqCst) {
        n += 1;
        let body = json!({"destinations": ["hook"], "input_data": {"worker": worker, "n": n}});
        let outcome = async {
            let (job, _) = client.submit_job(&body).await.ok()?;
            let output = serde_json::to_vec(&json!({"worker": worker, "n": n})).ok()?;
            client
                .put_output(&job["id"].to_string(), "application/json", output.into())
                .await
                .ok()?;
            job["job_uuid"].as_str().map(str::to_string)
        }
        .await;
        match outcome {
            Some(uuid) => acked.push(uuid),
            None => {
                // The server is down (or restarting): back off briefly instead of spinning.
                errors += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    (acked, errors)
}

/// A webhook receiver on 127.0.0.1 that answers 204 after a short delay (so kills catch
/// deliveries in flight) and records every receipt.
async fn receiver() -> anyhow::Result<(String, Receipts)> {
    let receipts: Receipts = Arc::default();
    let r = receipts.clone();
    let app = Router::new().route(
        "/hook",
        post(move |headers: HeaderMap, body: Bytes| {
            let r = r.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(10)).await;
                let id = headers.get("webhook-id").and_then(|v| v.to_str().ok()).unwrap_or("");
                let envelope: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                let job = envelope["job_uuid"].as_str().unwrap_or("");
                r.lock().expect("not poisoned").push((id.to_string(), job.to_string()));
                StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/hook", listener.local_addr()?);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((url, receipts))
}

/// The comparison of acknowledged submissions with the receiver's ledger.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    /// Outputs whose PUT was answered 2xx.
    pub acknowledged: usize,
    /// Acknowledged outputs that arrived at least once.
    pub delivered: usize,
    /// Acknowledged outputs that never arrived.
    pub lost: usize,
    /// Receipts beyond the first of a webhook-id (at-least-once redeliveries).
    pub duplicates: usize,
    /// Jobs that arrived under more than one webhook-id (must be 0: one output, one id).
    pub split: usize,
    /// Every receipt.
    pub received: usize,
}

/// Compares `acknowledged` job UUIDs with `receipts` (webhook-id, job UUID). Receipts of
/// jobs that were never acknowledged (the server committed, then died before answering)
/// count as received, not as lost or delivered.
pub fn tally(acknowledged: &HashSet<String>, receipts: &[(String, String)]) -> Tally {
    let mut ids_per_job: HashMap<&str, HashSet<&str>> = HashMap::new();
    for (id, job) in receipts {
        ids_per_job.entry(job).or_default().insert(id);
    }
    let distinct_ids: HashSet<&str> = receipts.iter().map(|(id, _)| id.as_str()).collect();
    let delivered = acknowledged.iter().filter(|j| ids_per_job.contains_key(j.as_str())).count();
    Tally {
        acknowledged: acknowledged.len(),
        delivered,
        lost: acknowledged.len() - delivered,
        duplicates: receipts.len() - distinct_ids.len(),
        split: ids_per_job.values().filter(|ids| ids.len() > 1).count(),
        received: receipts.len(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(id: &str, job: &str) -> (String, String) {
        (id.to_string(), job.to_string())
    }

    #[test]
    fn tally_counts_lost_duplicates_and_split_ids() {
        let acked: HashSet<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        let receipts = [
            r("dlv_1", "a"),
            r("dlv_1", "a"), // redelivered after a kill: a duplicate, not a second delivery
            r("dlv_2", "b"),
            r("dlv_3", "b"), // the same job under a second id: split
            r("dlv_4", "z"), // committed but never acknowledged: received only
        ];
        assert_eq!(
            tally(&acked, &receipts),
            Tally { acknowledged: 3, delivered: 2, lost: 1, duplicates: 1, split: 1, received: 5 }
        );
    }

    #[test]
    fn nothing_acknowledged_nothing_lost() {
        assert_eq!(
            tally(&HashSet::new(), &[]),
            Tally { acknowledged: 0, delivered: 0, lost: 0, duplicates: 0, split: 0, received: 0 }
        );
    }
}
