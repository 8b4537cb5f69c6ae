//! The delivery dispatcher: claim due deliveries, attempt, record, retry or dead-letter.
//!
//! One loop claims due deliveries from the store under a lease, as many as there are free
//! global slots (`max_concurrent_deliveries`), skipping destination keys that are saturated
//! (`per_destination_concurrency`) or whose circuit is open ([`breaker`]). Each claimed
//! delivery becomes one attempt task holding a global and a per-key slot ([`limits`]), so a
//! stuck endpoint ties up only its own key's slots. Results go to a collector that records
//! them in batches (one store transaction for many attempts).
//!
//! Nothing here is needed for correctness across a crash: an unrecorded attempt's lease
//! expires and the delivery is attempted again with the same id (at-least-once, same
//! `webhook-id`).

pub mod breaker;
pub mod limits;

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::Utc;
use futures::FutureExt;
use outflow_core::attempt::AttemptRecord;
use outflow_core::context::{JobContext, RenderContext, environment_from_env};
use outflow_core::delivery::Delivery;
use outflow_core::job::{Job, JobStatus, OutputKind};
use outflow_core::output::Output;
use outflow_destinations::runner::title_case;
use outflow_destinations::{Attempt, DeliveryError, Destination};
use outflow_store::{AttemptOutcome, AttemptResult, ClaimedDelivery};
use serde::Serialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::JoinSet;

use crate::{Engine, EngineSettings};
use limits::{KeyPermit, KeyTable};

/// Most results recorded in one store transaction.
const MAX_BATCH: usize = 512;
/// How long the collector waits for more results before committing a small batch.
const BATCH_WINDOW: Duration = Duration::from_millis(2);
/// Built destinations kept (webhook clients keep their connection pools while cached).
const DESTINATION_CACHE: usize = 256;
/// Longest pause between retries of a failing store call.
const MAX_STORE_BACKOFF: Duration = Duration::from_secs(5);

/// A destination key's circuit, as shown by the API.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CircuitView {
    /// The destination key.
    pub key: String,
    /// `closed`, `open` or `half_open`.
    pub state: &'static str,
    /// Consecutive failures.
    pub consecutive_failures: u32,
}

/// Dispatcher state shared through the [`Engine`].
#[derive(Debug)]
pub struct DispatcherState {
    keys: Arc<KeyTable>,
    global: Arc<Semaphore>,
    destinations: Mutex<DestinationCache>,
}

impl DispatcherState {
    /// Fresh state.
    pub fn new(settings: &EngineSettings) -> Self {
        DispatcherState {
            keys: Arc::new(KeyTable::new(
                settings.per_destination_concurrency,
                settings.breaker.clone(),
            )),
            global: Arc::new(Semaphore::new(settings.max_concurrent_deliveries.max(1))),
            destinations: Mutex::new(DestinationCache::default()),
        }
    }

    /// Every key's circuit, sorted by key. Keys never attempted are not listed (they are
    /// closed).
    pub fn circuits(&self) -> Vec<CircuitView> {
        self.keys.views(Instant::now())
    }

    /// The destination a delivery refers to, built once per distinct spec and reused.
    fn destination(
        &self,
        engine: &Engine,
        delivery: &Delivery,
    ) -> Result<Arc<dyn Destination>, String> {
        let spec = delivery.destination.to_string();
        if let Some(d) = self.cache().get(&spec) {
            return Ok(d);
        }
        // Built outside the lock: building a webhook creates an HTTP client.
        let built = engine
            .planner
            .build(&delivery.destination, &delivery.destination_name)
            .map_err(|e| e.to_string())?;
        self.cache().insert(spec, built.clone());
        Ok(built)
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, DestinationCache> {
        self.destinations.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A small least-recently-used map of built destinations, keyed by their spec's JSON text.
#[derive(Debug, Default)]
struct DestinationCache {
    entries: HashMap<String, (Arc<dyn Destination>, u64)>,
    tick: u64,
}

impl DestinationCache {
    fn get(&mut self, spec: &str) -> Option<Arc<dyn Destination>> {
        self.tick += 1;
        let tick = self.tick;
        self.entries.get_mut(spec).map(|(d, used)| {
            *used = tick;
            d.clone()
        })
    }

    fn insert(&mut self, spec: String, dest: Arc<dyn Destination>) {
        if self.entries.len() >= DESTINATION_CACHE && !self.entries.contains_key(&spec) {
            let oldest = self.entries.iter().min_by_key(|(_, (_, used))| *used);
            if let Some(key) = oldest.map(|(k, _)| k.clone()) {
                self.entries.remove(&key);
            }
        }
        self.tick += 1;
        self.entries.insert(spec, (dest, self.tick));
    }
}

/// The dispatcher loop; returns after shutdown, once in-flight attempts finished or were
/// released and every result was handed to the store.
pub async fn run(engine: Arc<Engine>) {
    let (results, collected) = mpsc::unbounded_channel();
    let collector = tokio::spawn(collect(engine.clone(), collected));
    let mut shutdown = engine.shutdown.subscribe();
    let state = &engine.dispatcher;
    let mut tasks: JoinSet<()> = JoinSet::new();
    let mut running: HashMap<tokio::task::Id, String> = HashMap::new();
    let mut backoff = Duration::from_millis(100);

    loop {
        while let Some(done) = tasks.try_join_next_with_id() {
            reap(done, &mut running);
        }
        if *shutdown.borrow() {
            break;
        }
        let free = state.global.available_permits();
        if free == 0 {
            tokio::select! {
                _ = state.keys.slot_freed.notified() => {}
                _ = shutdown.changed() => {}
            }
            continue;
        }
        let skip = state.keys.skip_keys(Instant::now());
        let claimed = match engine
            .store
            .claim_deliveries(&engine.settings.node_id, free, engine.settings.lease, &skip)
            .await
        {
            Ok(claimed) => {
                backoff = Duration::from_millis(100);
                claimed
            }
            Err(e) => {
                tracing::error!(error = %e, retry_in_ms = backoff.as_millis() as u64,
                    "Cannot claim deliveries from the store");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = shutdown.changed() => {}
                }
                backoff = (backoff * 2).min(MAX_STORE_BACKOFF);
                continue;
            }
        };
        let got_all = claimed.len() >= free;
        let mut give_back = Vec::new();
        for claim in claimed {
            let Some(key) = state.keys.try_admit(&claim.delivery.destination_key, Instant::now())
            else {
                // The claim returned more deliveries for this key than it has free slots (or
                // a second one for a half-open circuit): hand them back rather than queue them
                // here, where they would wait on a slow key while holding global capacity.
                give_back.push(claim.delivery.id);
                continue;
            };
            let Ok(global) = state.global.clone().try_acquire_owned() else {
                give_back.push(claim.delivery.id);
                continue;
            };
            let id = claim.delivery.id.clone();
            let handle =
                tasks.spawn(attempt_task(engine.clone(), claim, global, key, results.clone()));
            running.insert(handle.id(), id);
        }
        if !give_back.is_empty() {
            release(&engine, &give_back).await;
        }
        if got_all {
            continue;
        }
        wait_for_work(&engine, &mut shutdown).await;
    }

    drain(&engine, &mut tasks, &mut running).await;
    drop(results);
    let _ = collector.await;
}

/// Sleeps until something may be claimable: new deliveries were committed, an attempt freed
/// a slot, the next scheduled delivery or circuit probe is due, the idle poll elapsed, or
/// shutdown began. Due work in skipped keys does not wake it (no busy loop): a freed slot
/// or a circuit's probe time does.
async fn wait_for_work(engine: &Engine, shutdown: &mut tokio::sync::watch::Receiver<bool>) {
    let now = Instant::now();
    let mut sleep = engine.settings.idle_poll;
    match engine.store.next_due_at().await {
        Ok(Some(due)) => {
            if let Ok(until) = (due - Utc::now()).to_std()
                && !until.is_zero()
            {
                sleep = sleep.min(until);
            }
        }
        Ok(None) => {}
        Err(e) => tracing::warn!(error = %e, "Cannot read the next delivery due time"),
    }
    if let Some(reopen) = engine.dispatcher.keys.next_reopen(now) {
        sleep = sleep.min(reopen.saturating_duration_since(now));
    }
    tokio::select! {
        _ = engine.deliveries_ready.notified() => {}
        _ = engine.dispatcher.keys.slot_freed.notified() => {}
        _ = tokio::time::sleep(sleep) => {}
        _ = shutdown.changed() => {}
    }
}

fn reap(
    done: Result<(tokio::task::Id, ()), tokio::task::JoinError>,
    running: &mut HashMap<tokio::task::Id, String>,
) -> Option<String> {
    match done {
        Ok((id, ())) => {
            running.remove(&id);
            None
        }
        Err(e) => {
            let delivery = running.remove(&e.id());
            if !e.is_cancelled() {
                // attempt_task catches destination panics; this is a bug in the engine. The
                // delivery's lease expires and it is attempted again.
                tracing::error!(delivery = ?delivery, error = %e, "Delivery attempt task failed");
            }
            delivery.filter(|_| e.is_cancelled())
        }
    }
}

/// Shutdown: waits up to the grace period for in-flight attempts, then aborts the rest and
/// releases them (pending again, no attempt counted).
async fn drain(
    engine: &Engine,
    tasks: &mut JoinSet<()>,
    running: &mut HashMap<tokio::task::Id, String>,
) {
    if !tasks.is_empty() {
        tracing::info!(
            in_flight = tasks.len(),
            grace_s = engine.settings.shutdown_grace.as_secs_f64(),
            "Waiting for in-flight deliveries"
        );
    }
    let waited = tokio::time::timeout(engine.settings.shutdown_grace, async {
        while let Some(done) = tasks.join_next_with_id().await {
            reap(done, running);
        }
    })
    .await;
    if waited.is_ok() {
        return;
    }
    tasks.abort_all();
    let mut released = Vec::new();
    while let Some(done) = tasks.join_next_with_id().await {
        released.extend(reap(done, running));
    }
    if !released.is_empty() {
        tracing::warn!(
            count = released.len(),
            "Grace period over: releasing in-flight deliveries for another attempt"
        );
        release(engine, &released).await;
    }
}

/// Gives claimed deliveries back to the store. Failure is logged: their leases expire and
/// they are claimed again then.
async fn release(engine: &Engine, ids: &[String]) {
    if let Err(e) = engine.store.release_deliveries(&engine.settings.node_id, ids).await {
        tracing::error!(error = %e, count = ids.len(), lease_s = engine.settings.lease.as_secs(),
            "Cannot release deliveries; they will be retried when their leases expire");
    }
}

async fn attempt_task(
    engine: Arc<Engine>,
    claim: ClaimedDelivery,
    global: OwnedSemaphorePermit,
    mut key: KeyPermit,
    results: mpsc::UnboundedSender<AttemptResult>,
) {
    let result = attempt(&engine, &claim, &mut key).await;
    if results.send(result).is_err() {
        tracing::error!(delivery = %claim.delivery.id,
            "Result collector stopped; the delivery is retried when its lease expires");
    }
    drop(global);
    drop(key);
}

/// Makes one attempt and decides what follows.
async fn attempt(engine: &Engine, claim: &ClaimedDelivery, key: &mut KeyPermit) -> AttemptResult {
    let delivery = &claim.delivery;
    let number = delivery.attempts + 1;
    let kind = delivery.destination_type.as_str();
    let started_at = Utc::now();
    let clock = Instant::now();

    let dest = match engine.dispatcher.destination(engine, delivery) {
        Ok(d) => d,
        Err(message) => {
            // A configuration problem, not the endpoint's: no breaker verdict.
            let err = DeliveryError::permanent(format!("cannot build the destination: {message}"));
            return failed(engine, claim, number, started_at, clock, err, None, key);
        }
    };
    let job = job_context(&claim.job);
    let output = stored_output(claim.output.kind, &claim.body);
    let render = RenderContext::new(&job, &output, &delivery.id);
    // An attempt outliving its lease could be claimed again and run twice at once; stop it
    // before the claim's lease ends (not a lease length after this task started: the task
    // may have waited), keeping a tenth of the lease to record the result in time.
    let margin = engine.settings.lease / 10;
    let limit =
        (claim.lease_until - Utc::now()).to_std().unwrap_or_default().saturating_sub(margin);
    let outcome = tokio::time::timeout(
        limit,
        AssertUnwindSafe(dest.deliver(Attempt { render, number })).catch_unwind(),
    )
    .await;
    let result = match outcome {
        Ok(Ok(result)) => result,
        Ok(Err(panic)) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            Err(DeliveryError::retryable(format!("{kind} destination panicked: {what}")))
        }
        Err(_) => Err(DeliveryError::retryable(format!(
            "attempt did not finish in time: stopped after {:.1}s, {:.1}s before its delivery \
             lease ends, to record the result while the lease still holds",
            limit.as_secs_f64(),
            margin.as_secs_f64()
        ))),
    };
    let duration = clock.elapsed();
    metrics::histogram!("outflow_delivery_attempt_duration_seconds", "destination_type" => kind.to_string())
        .record(duration.as_secs_f64());

    match result {
        Ok(receipt) => {
            key.success();
            metrics::counter!("outflow_delivery_attempts_total",
                "destination_type" => kind.to_string(), "outcome" => "delivered")
            .increment(1);
            metrics::counter!("outflow_bytes_delivered_total", "destination_type" => kind.to_string())
                .increment(receipt.bytes);
            tracing::info!(job = %claim.job.uuid, delivery = %delivery.id,
                destination = %delivery.destination_name, target = %receipt.target,
                attempt = number, bytes = receipt.bytes, "Output delivered");
            AttemptResult {
                delivery_id: delivery.id.clone(),
                attempt: AttemptRecord {
                    number,
                    started_at,
                    duration_ms: duration.as_millis() as u64,
                    status_code: receipt.status_code,
                    error: None,
                    failure_class: None,
                    response_excerpt: receipt.response_excerpt,
                    next_retry_in: None,
                },
                outcome: AttemptOutcome::Delivered,
                lease_until: claim.lease_until,
            }
        }
        Err(err) => failed(engine, claim, number, started_at, clock, err, Some(dest), key),
    }
}

/// Records a failed attempt: retry at T when the policy allows, dead otherwise.
#[allow(clippy::too_many_arguments)]
fn failed(
    engine: &Engine,
    claim: &ClaimedDelivery,
    number: u32,
    started_at: chrono::DateTime<Utc>,
    clock: Instant,
    err: DeliveryError,
    dest: Option<Arc<dyn Destination>>,
    key: &mut KeyPermit,
) -> AttemptResult {
    let delivery = &claim.delivery;
    let kind = delivery.destination_type.as_str();
    let duration_ms = clock.elapsed().as_millis() as u64;
    let next = dest.as_ref().and_then(|d| {
        let policy = d.retry_policy();
        (err.is_retryable() && policy.allows_attempt_after(number))
            .then(|| (policy.delay_after_random(number, err.retry_after), policy.max_attempts))
    });
    if dest.is_some()
        && let Some(failures) = key.failure(Instant::now())
    {
        tracing::warn!(key = %key.key(), consecutive_failures = failures,
            cool_down_s = engine.settings.breaker.cool_down.as_secs_f64(),
            "Circuit opened: pausing deliveries to this destination");
    }
    let status = err.status_code.map(|s| s.to_string()).unwrap_or_else(|| "-".into());
    let outcome = match next {
        Some((wait, max)) => {
            metrics::counter!("outflow_delivery_attempts_total",
                "destination_type" => kind.to_string(), "outcome" => "retry")
            .increment(1);
            tracing::warn!(job = %claim.job.uuid, delivery = %delivery.id,
                destination = %delivery.destination_name, status = %status, error = %err.message,
                "{} delivery failed, retrying (attempt {}/{}) next retry in {:.1}s",
                title_case(kind), number + 1, max, wait.as_secs_f64());
            let wait_chrono = chrono::Duration::from_std(wait).unwrap_or(chrono::Duration::MAX);
            AttemptOutcome::RetryAt(Utc::now() + wait_chrono)
        }
        None => {
            metrics::counter!("outflow_delivery_attempts_total",
                "destination_type" => kind.to_string(), "outcome" => "dead")
            .increment(1);
            let why = if err.is_retryable() { "attempts exhausted" } else { "permanent error" };
            tracing::error!(job = %claim.job.uuid, delivery = %delivery.id,
                destination = %delivery.destination_name, status = %status, attempts = number,
                error = %err.message, "Failed to deliver to {kind} destination ({why})");
            AttemptOutcome::Dead
        }
    };
    AttemptResult {
        delivery_id: delivery.id.clone(),
        attempt: AttemptRecord {
            number,
            started_at,
            duration_ms,
            status_code: err.status_code,
            error: Some(err.message),
            failure_class: Some(err.class),
            response_excerpt: err.response_excerpt,
            next_retry_in: next.map(|(wait, _)| wait),
        },
        outcome,
        lease_until: claim.lease_until,
    }
}

/// The template context of a stored job.
///
/// `{{status}}` is `completed` for a succeeded job, as seed 000's templates and webhook
/// payloads expect; other statuses keep their names (`failed`, ...).
pub fn job_context(job: &Job) -> JobContext {
    let status = match job.status {
        JobStatus::Succeeded => "completed",
        other => other.as_str(),
    };
    JobContext {
        job_uuid: job.uuid,
        job_id: Some(job.id),
        task_name: job.task_name.clone(),
        task_version: job.task_version.clone(),
        task_id: job.task_id,
        execution_id: None,
        priority: job.priority,
        schedule_id: None,
        environment: environment_from_env(),
        completed_at: job.finished_at.unwrap_or_else(Utc::now),
        duration_ms: job.duration_ms(),
        status: status.to_string(),
        metadata: job.metadata.clone(),
        vars: Default::default(),
    }
}

/// A stored output body as its kind says. A body that does not match its kind (which the
/// store should never hold) is read the way `outflow deliver` reads files instead of
/// failing the delivery.
pub fn stored_output(kind: OutputKind, body: &Bytes) -> Output {
    match kind {
        OutputKind::Json => match serde_json::from_slice(body) {
            Ok(value) => Output::Json(value),
            Err(_) => Output::detect(body.clone()),
        },
        OutputKind::Text => match std::str::from_utf8(body) {
            Ok(text) => Output::Text(text.to_string()),
            Err(_) => Output::Binary(body.clone()),
        },
        OutputKind::Binary => Output::Binary(body.clone()),
    }
}

/// Records results in batches: whatever arrived while the previous commit ran, plus what
/// arrives within [`BATCH_WINDOW`], up to [`MAX_BATCH`] per transaction.
async fn collect(engine: Arc<Engine>, mut results: mpsc::UnboundedReceiver<AttemptResult>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = results.recv().await {
        batch.push(first);
        let deadline = tokio::time::Instant::now() + BATCH_WINDOW;
        while batch.len() < MAX_BATCH {
            match results.try_recv() {
                Ok(r) => batch.push(r),
                Err(mpsc::error::TryRecvError::Disconnected) => break,
                Err(mpsc::error::TryRecvError::Empty) => {
                    match tokio::time::timeout_at(deadline, results.recv()).await {
                        Ok(Some(r)) => batch.push(r),
                        Ok(None) | Err(_) => break,
                    }
                }
            }
        }
        record(&engine, std::mem::take(&mut batch)).await;
    }
}

/// Hands one batch to the store, retrying until it is recorded. During shutdown it gives up
/// after a few tries, saying so: those deliveries are attempted again once their leases
/// expire.
async fn record(engine: &Engine, batch: Vec<AttemptResult>) {
    let mut backoff = Duration::from_millis(100);
    let mut tries = 0;
    loop {
        tries += 1;
        match engine.store.complete_attempts(&engine.settings.node_id, batch.clone()).await {
            Ok(applied) => {
                if applied < batch.len() {
                    tracing::warn!(
                        ignored = batch.len() - applied,
                        recorded = applied,
                        "Attempt results ignored: their claim's lease had expired and a newer claim (another node's or this node's) took those deliveries over"
                    );
                }
                return;
            }
            Err(e) => {
                let ids: Vec<&str> = batch.iter().map(|r| r.delivery_id.as_str()).collect();
                if engine.is_shutting_down() && tries >= 5 {
                    tracing::error!(error = %e, deliveries = ?ids,
                        "Giving up recording attempt results at shutdown; these deliveries will be attempted again when their leases expire");
                    return;
                }
                tracing::error!(error = %e, count = batch.len(), retry_in_ms = backoff.as_millis() as u64,
                    "Cannot record attempt results; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_STORE_BACKOFF);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_outputs_by_kind() {
        let json = Bytes::from_static(br#"{"a":1}"#);
        assert_eq!(
            stored_output(OutputKind::Json, &json),
            Output::Json(serde_json::json!({"a": 1}))
        );
        assert_eq!(stored_output(OutputKind::Text, &json), Output::Text(r#"{"a":1}"#.into()));
        assert_eq!(stored_output(OutputKind::Binary, &json), Output::Binary(json.clone()));
        let bad = Bytes::from_static(&[0xff, 0xfe]);
        assert_eq!(stored_output(OutputKind::Text, &bad), Output::Binary(bad.clone()));
    }
}
