//! The built-in executor: runs command tasks.
//!
//! The loop claims executable jobs from the store (they come back `running` under this node's
//! lease, highest priority first, FIFO within a priority) while fewer than
//! `max_concurrent_jobs` run, and starts them in that order. Each job runs its task's
//! command ([`CommandSpec`]) in its own process group:
//!
//! - stdin: the job's `input_data` as compact JSON plus a newline, then closed;
//! - stdout: the output — stored as JSON (`application/json`) when it parses as JSON, else as
//!   UTF-8 text (`text/plain; charset=utf-8`), else as binary (`application/octet-stream`).
//!   It is held in memory, so it is capped at `max_output_bytes`: one byte more kills the
//!   group → `failed` (`output exceeded 33554432 bytes (executor.max_output_bytes)`), and
//!   nothing is stored or delivered;
//! - stderr: the job log, only its last `stderr_limit` bytes (with a note when cut);
//! - exit 0 → `succeeded`; non-zero → `failed` (`exit status 3`); past `timeout_seconds` the
//!   whole group is killed → `failed` (`timed out after 30s`). In all three cases the output
//!   is stored and delivered, in the same transaction as the status; the deliveries see the
//!   job's status in their template context;
//! - a command that cannot start (missing program, bad `working_dir`), a missing task or an
//!   invalid task definition → `failed` with a message saying which, and no output;
//! - cancel ([`Engine::kill_job`](crate::Engine::kill_job)) kills the group; the API has
//!   already set `cancelled`, which the executor does not overwrite and the output is dropped.
//!   The job is re-read just before its command starts, so a cancel that committed before
//!   the process existed (nothing to kill yet) still stops it.
//!
//! When the command ends, processes it left in its group are killed as well: they would
//! otherwise outlive the job's timeout and cancel.
//!
//! Leases: every `lease / 3` the executor renews the leases of the jobs it runs; a job the
//! store did not renew (cancelled elsewhere, deleted, or claimed by another node after the
//! lease ran out) is killed and its result dropped. Finishing is fenced too: the store takes
//! a result only while the job is still `running` under this node. On shutdown
//! it stops claiming, lets running jobs finish for `shutdown_grace`, then kills the rest and
//! leaves them `running` in the store: when their lease expires, this node after a restart
//! or another node claims them again and **runs the command again from the start**.
//! Execution is at-least-once; a command whose effects must not repeat has to be
//! idempotent. The same holds after a crash.

mod process;
mod spec;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use outflow_core::job::{Job, JobStatus, OutputKind};
use outflow_store::{FinishJob, JobRef, NewOutput, StoreError, StoreResult, TaskRecord};
use tokio::task::JoinSet;
use tracing::{debug, error, info, warn};

use crate::{Engine, EngineSettings};
use process::{End, JobControl, KillReason, RunOutcome};
pub use spec::CommandSpec;
use spec::human_duration;

/// How long the task list read from the store is trusted before it is read again (another
/// node may have synchronised a changed config).
const TASK_CACHE_TTL: Duration = Duration::from_secs(30);

/// How long, after the shutdown grace, killed jobs get to wind down before being abandoned.
const KILL_WAIT: Duration = Duration::from_secs(5);

/// Executor state shared through the [`Engine`]: the jobs this node runs (so cancel can
/// reach their processes) and a cache of task definitions.
#[derive(Debug, Default)]
pub struct ExecutorState {
    running: Mutex<HashMap<i64, Arc<JobControl>>>,
    tasks: Mutex<Option<(Instant, Arc<Vec<TaskRecord>>)>>,
}

impl ExecutorState {
    /// Fresh state.
    pub fn new(settings: &EngineSettings) -> Self {
        let _ = settings;
        ExecutorState::default()
    }

    /// Kills a running job's process group (SIGKILL); whether this node runs the job. A job
    /// claimed but not yet started is stopped before its command starts.
    pub fn kill(&self, job_id: i64) -> bool {
        let control = self.running().get(&job_id).cloned();
        match control {
            Some(control) => {
                control.kill(KillReason::Cancel);
                true
            }
            None => false,
        }
    }

    /// Ids of the jobs this node runs.
    pub fn running_jobs(&self) -> Vec<i64> {
        let mut ids: Vec<i64> = self.running().keys().copied().collect();
        ids.sort_unstable();
        ids
    }

    fn running(&self) -> MutexGuard<'_, HashMap<i64, Arc<JobControl>>> {
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The jobs this node runs with their controls, so a kill reaches the very run that
    /// was looked at even if the job is claimed and started again meanwhile.
    fn running_controls(&self) -> Vec<(i64, Arc<JobControl>)> {
        self.running().iter().map(|(id, c)| (*id, c.clone())).collect()
    }

    fn register(&self, job_id: i64) -> Arc<JobControl> {
        let control = Arc::new(JobControl::default());
        if let Some(stale) = self.running().insert(job_id, control.clone()) {
            // This node claimed the job again because its lease ran out while a run was
            // still going: the new run owns the job, the old one must not finish it too.
            warn!(
                job_id,
                "executor: job claimed again after its lease ran out; stopping the older run"
            );
            stale.kill(KillReason::LeaseLost);
        }
        control
    }

    /// Forgets a job, unless a newer run of it (re-claimed after its lease was lost)
    /// replaced the entry.
    fn unregister(&self, job_id: i64, control: &Arc<JobControl>) {
        let mut running = self.running();
        if running.get(&job_id).is_some_and(|c| Arc::ptr_eq(c, control)) {
            running.remove(&job_id);
        }
    }

    fn kill_all(&self, reason: KillReason) {
        for control in self.running().values() {
            control.kill(reason);
        }
    }

    fn cached_tasks(&self) -> Option<Arc<Vec<TaskRecord>>> {
        let cache = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
        cache.as_ref().filter(|(at, _)| at.elapsed() < TASK_CACHE_TTL).map(|(_, t)| t.clone())
    }

    fn cache_tasks(&self, tasks: Vec<TaskRecord>) -> Arc<Vec<TaskRecord>> {
        let tasks = Arc::new(tasks);
        *self.tasks.lock().unwrap_or_else(|e| e.into_inner()) =
            Some((Instant::now(), tasks.clone()));
        tasks
    }
}

/// The executor loop; returns after shutdown (see the module docs for what shutdown does
/// to running jobs).
pub async fn run(engine: Arc<Engine>) {
    let settings = &engine.settings;
    let max = settings.max_concurrent_jobs.max(1);
    let mut shutdown = engine.shutdown.subscribe();
    let mut jobs: JoinSet<()> = JoinSet::new();
    let renewer = tokio::spawn(renew_leases(engine.clone()));

    loop {
        if *shutdown.borrow_and_update() {
            break;
        }
        while let Some(done) = jobs.try_join_next() {
            log_join(done);
        }
        let free = max.saturating_sub(jobs.len());
        if free > 0 {
            match engine.store.claim_jobs(&settings.node_id, free, settings.lease).await {
                Ok(claimed) => {
                    // Spawned in the store's order, so priority order is start order.
                    for job in claimed {
                        let control = engine.executor.register(job.id);
                        jobs.spawn(run_job(engine.clone(), job, control));
                    }
                }
                Err(e) => warn!(error = %e, "executor: claiming jobs failed"),
            }
        }
        tokio::select! {
            () = engine.jobs_ready.notified() => {}
            () = tokio::time::sleep(settings.idle_poll) => {}
            _ = shutdown.changed() => {}
            Some(done) = jobs.join_next(), if !jobs.is_empty() => log_join(done),
        }
    }

    if !jobs.is_empty() {
        info!(
            jobs = jobs.len(),
            grace = %human_duration(settings.shutdown_grace),
            "executor: waiting for running jobs"
        );
        let grace = tokio::time::sleep(settings.shutdown_grace);
        tokio::pin!(grace);
        while !jobs.is_empty() {
            tokio::select! {
                Some(done) = jobs.join_next() => log_join(done),
                () = &mut grace => break,
            }
        }
    }
    if !jobs.is_empty() {
        warn!(
            jobs = ?engine.executor.running_jobs(),
            "executor: shutdown grace over; killing the remaining jobs, which stay running \
             in the store and run again once their lease expires"
        );
        engine.executor.kill_all(KillReason::Shutdown);
        let wind_down = async {
            while let Some(done) = jobs.join_next().await {
                log_join(done);
            }
        };
        if tokio::time::timeout(KILL_WAIT, wind_down).await.is_err() {
            jobs.abort_all();
        }
    }
    renewer.abort();
}

fn log_join(done: Result<(), tokio::task::JoinError>) {
    if let Err(e) = done
        && e.is_panic()
    {
        error!(error = %e, "executor: a job task panicked; its job runs again when its lease expires");
    }
}

/// Renews the leases of every running job every `lease / 3`, and kills the runs whose job
/// the store no longer has this node running (the renewal skipped them): a cancel that
/// found no process to kill, or a lease lost to another node.
async fn renew_leases(engine: Arc<Engine>) {
    let lease = engine.settings.lease;
    let mut tick = tokio::time::interval((lease / 3).max(Duration::from_millis(10)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let runs = engine.executor.running_controls();
        if runs.is_empty() {
            continue;
        }
        let ids: Vec<i64> = runs.iter().map(|(id, _)| *id).collect();
        match engine.store.renew_job_leases(&engine.settings.node_id, &ids, lease).await {
            Ok(renewed) => {
                for (id, control) in runs {
                    if !renewed.contains(&id) {
                        warn!(
                            job_id = id,
                            "executor: the store no longer has this node running the job \
                             (cancelled, deleted or claimed by another node); killing it"
                        );
                        control.kill(KillReason::LeaseLost);
                    }
                }
            }
            Err(e) => warn!(error = %e, jobs = ?ids, "executor: renewing job leases failed"),
        }
    }
}

/// Removes the job from the running map however its task ends (even by panic), so its
/// lease stops being renewed.
struct Registration {
    engine: Arc<Engine>,
    job_id: i64,
    control: Arc<JobControl>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.engine.executor.unregister(self.job_id, &self.control);
    }
}

async fn run_job(engine: Arc<Engine>, job: Job, control: Arc<JobControl>) {
    let registration = Registration { engine: engine.clone(), job_id: job.id, control };
    let spec = match resolve_spec(&engine, &job).await {
        Ok(spec) => spec,
        Err(Unresolved::Invalid(message)) => {
            warn!(job_id = job.id, error = %message, "executor: job cannot run");
            record_outcome("start_failed", None);
            finish(&engine, &job, JobStatus::Failed, Some(message), None, None).await;
            return;
        }
        Err(Unresolved::Store(e)) => {
            error!(
                job_id = job.id, error = %e,
                "executor: cannot read tasks; the job runs again when its lease expires"
            );
            return;
        }
    };

    // A cancel committed between the claim and the registration found no process to kill.
    // The job was registered before this read, so a cancel after it reaches the process.
    match engine.store.get_job(JobRef::Id(job.id)).await {
        Ok(current) if current.status != JobStatus::Running => {
            info!(
                job_id = job.id,
                status = current.status.as_str(),
                "executor: job changed before its command started (cancelled?); not running it"
            );
            record_outcome("cancelled", None);
            return;
        }
        Ok(_) => {}
        Err(StoreError::NotFound(message)) => {
            info!(job_id = job.id, %message, "executor: job was deleted before it started");
            return;
        }
        Err(e) => warn!(
            job_id = job.id, error = %e,
            "executor: cannot re-read the job before starting it; starting it anyway (a cancel \
             is still noticed at the next lease renewal)"
        ),
    }

    let mut input = serde_json::to_vec(&job.input_data).unwrap_or_else(|_| b"null".to_vec());
    input.push(b'\n');
    debug!(job_id = job.id, command = %spec.command, "executor: starting job");
    let started = Instant::now();
    let RunOutcome { end, stdout, log } = process::run(
        &spec,
        input,
        engine.settings.stderr_limit,
        engine.settings.max_output_bytes,
        &registration.control,
    )
    .await;
    let elapsed = started.elapsed();

    let (status, error) = match end {
        End::Exited(status) if status.success() => (JobStatus::Succeeded, None),
        End::Exited(status) => (JobStatus::Failed, Some(describe_exit(status))),
        End::TimedOut(after) => {
            (JobStatus::Failed, Some(format!("timed out after {}", human_duration(after))))
        }
        End::OutputTooLarge(limit) => {
            // A cut output is not the job's output: nothing is stored or delivered.
            let message = format!("output exceeded {limit} bytes (executor.max_output_bytes)");
            warn!(job_id = job.id, error = %message, "executor: job killed");
            record_outcome("output_too_large", Some(elapsed));
            finish(&engine, &job, JobStatus::Failed, Some(message), log, None).await;
            return;
        }
        End::StartFailed(message) => {
            warn!(job_id = job.id, error = %message, "executor: job cannot run");
            record_outcome("start_failed", None);
            finish(&engine, &job, JobStatus::Failed, Some(message), log, None).await;
            return;
        }
        End::Killed(KillReason::Cancel) => {
            info!(job_id = job.id, "executor: job killed on cancel; its output is dropped");
            record_outcome("cancelled", Some(elapsed));
            // The API set `cancelled` before killing, so the store refuses this (Conflict);
            // it only lands if someone killed the job without cancelling it, which must not
            // leave the job running forever.
            let message = "killed while running (cancel requested)".to_string();
            finish(&engine, &job, JobStatus::Failed, Some(message), log, None).await;
            return;
        }
        End::Killed(KillReason::LeaseLost) => {
            info!(
                job_id = job.id,
                "executor: job stopped because this node no longer holds it; its result is dropped"
            );
            record_outcome("lease_lost", Some(elapsed));
            return;
        }
        End::Killed(KillReason::Shutdown) => {
            info!(
                job_id = job.id,
                "executor: job killed at shutdown; it stays running and runs again when its \
                 lease expires"
            );
            record_outcome("released", Some(elapsed));
            return;
        }
    };
    let outcome = match (&status, &error) {
        (JobStatus::Succeeded, _) => "succeeded",
        (_, Some(e)) if e.starts_with("timed out") => "timed_out",
        _ => "failed",
    };
    record_outcome(outcome, Some(elapsed));
    debug!(
        job_id = job.id,
        status = status.as_str(),
        elapsed_ms = elapsed.as_millis() as u64,
        "executor: job ended"
    );
    finish(&engine, &job, status, error, log, Some(classify_output(stdout))).await;
    drop(registration);
}

fn record_outcome(outcome: &'static str, elapsed: Option<Duration>) {
    metrics::counter!("outflow_jobs_executed_total", "outcome" => outcome).increment(1);
    if let Some(elapsed) = elapsed {
        metrics::histogram!("outflow_job_duration_seconds").record(elapsed.as_secs_f64());
    }
}

/// `exit status 3`, or `killed by signal 9` for a signal the executor did not send.
fn describe_exit(status: std::process::ExitStatus) -> String {
    if let Some(code) = status.code() {
        return format!("exit status {code}");
    }
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(signal) = status.signal() {
            return format!("killed by signal {signal}");
        }
    }
    format!("ended abnormally ({status})")
}

/// JSON if stdout parses as JSON, else UTF-8 text, else binary. The bytes are kept as
/// written (not re-serialised).
pub fn classify_output(stdout: Vec<u8>) -> NewOutput {
    let (kind, content_type) = if serde_json::from_slice::<serde::de::IgnoredAny>(&stdout).is_ok() {
        (OutputKind::Json, "application/json")
    } else if std::str::from_utf8(&stdout).is_ok() {
        (OutputKind::Text, "text/plain; charset=utf-8")
    } else {
        (OutputKind::Binary, "application/octet-stream")
    };
    NewOutput { kind, content_type: content_type.to_string(), body: stdout.into() }
}

enum Unresolved {
    /// The job cannot run: the message says why.
    Invalid(String),
    /// The store could not be read.
    Store(StoreError),
}

/// The job's task (by id, else by name) and its command.
async fn resolve_spec(engine: &Engine, job: &Job) -> Result<CommandSpec, Unresolved> {
    let find = |tasks: &[TaskRecord]| -> Option<TaskRecord> {
        match (job.task_id, &job.task_name) {
            (Some(id), _) => tasks.iter().find(|t| t.id == id).cloned(),
            (None, Some(name)) => tasks.iter().find(|t| &t.name == name).cloned(),
            (None, None) => None,
        }
    };
    let cached = engine.executor.cached_tasks().and_then(|tasks| find(&tasks));
    let task = match cached {
        Some(task) => Some(task),
        None => {
            let tasks =
                with_retries(|| engine.store.list_tasks()).await.map_err(Unresolved::Store)?;
            find(&engine.executor.cache_tasks(tasks))
        }
    };
    let Some(task) = task else {
        let which = match (job.task_id, &job.task_name) {
            (Some(id), Some(name)) => format!("task {id} ('{name}')"),
            (Some(id), None) => format!("task {id}"),
            (None, Some(name)) => format!("task '{name}'"),
            (None, None) => {
                return Err(Unresolved::Invalid(
                    "the job names no task, so there is no command to run".to_string(),
                ));
            }
        };
        return Err(Unresolved::Invalid(format!(
            "{which} does not exist (any more): it is not among the configured tasks"
        )));
    };
    match CommandSpec::from_definition(&task.name, &task.definition) {
        Ok(Some(spec)) => Ok(spec),
        Ok(None) => Err(Unresolved::Invalid(format!(
            "task '{}' has no command: an external producer must report this job's output",
            task.name
        ))),
        Err(e) => Err(Unresolved::Invalid(format!("invalid task definition: {e}"))),
    }
}

/// Stores the job's end: status, error, log and (when there is one) the output with its
/// deliveries, in one transaction. A job whose deliveries cannot be planned (e.g. a global
/// destination removed from config since it was submitted) still finishes, as `failed`,
/// with its output stored undelivered and the reason in `error`.
async fn finish(
    engine: &Engine,
    job: &Job,
    mut status: JobStatus,
    mut error: Option<String>,
    log: Option<String>,
    output: Option<NewOutput>,
) {
    let mut deliveries = Vec::new();
    if output.is_some() {
        match engine.planner.plan(job) {
            Ok(planned) => deliveries = planned,
            Err(e) => {
                status = JobStatus::Failed;
                let problems: Vec<String> = e.errors.iter().map(|e| e.to_string()).collect();
                let why = format!("output not delivered: {}", problems.join("; "));
                error = Some(match error {
                    Some(first) => format!("{first}; {why}"),
                    None => why,
                });
            }
        }
    }
    let has_deliveries = !deliveries.is_empty();
    let request = FinishJob {
        status: Some(status),
        error,
        log,
        output,
        deliveries,
        lease_owner: Some(engine.settings.node_id.clone()),
    };
    match with_retries(|| engine.store.finish_job(JobRef::Id(job.id), request.clone())).await {
        Ok(_) => {
            if has_deliveries {
                engine.wake_deliveries();
            }
        }
        Err(StoreError::Conflict { message, current_status }) => info!(
            job_id = job.id,
            current = current_status.map(JobStatus::as_str),
            %message,
            "executor: job changed while it ran (cancelled, or its lease was lost and it was \
             claimed again); its result is dropped"
        ),
        Err(StoreError::NotFound(message)) => {
            info!(job_id = job.id, %message, "executor: job was deleted while it ran")
        }
        Err(e) => error!(
            job_id = job.id, error = %e,
            "executor: storing the job's result failed; it runs again when its lease expires"
        ),
    }
}

/// Retries a store call on backend errors (a busy or briefly unreachable store); answers
/// about the job itself (not found, conflict) are final at once.
async fn with_retries<T, F, Fut>(mut call: F) -> StoreResult<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = StoreResult<T>>,
{
    let mut delay = Duration::from_millis(200);
    for _ in 0..3 {
        match call().await {
            Err(StoreError::Backend(e)) => {
                warn!(error = %e, "executor: store call failed; retrying");
                tokio::time::sleep(delay).await;
                delay *= 4;
            }
            other => return other,
        }
    }
    call().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_kinds() {
        let json = classify_output(b"{\"a\": 1}\n".to_vec());
        assert_eq!(
            (json.kind, json.content_type.as_str(), &json.body[..]),
            (OutputKind::Json, "application/json", &b"{\"a\": 1}\n"[..])
        );
        let text = classify_output(b"hello\n".to_vec());
        assert_eq!(
            (text.kind, text.content_type.as_str()),
            (OutputKind::Text, "text/plain; charset=utf-8")
        );
        let empty = classify_output(Vec::new());
        assert_eq!(empty.kind, OutputKind::Text);
        let binary = classify_output(vec![0xff, 0x00, 0xfe]);
        assert_eq!(
            (binary.kind, binary.content_type.as_str()),
            (OutputKind::Binary, "application/octet-stream")
        );
    }

    #[cfg(unix)]
    #[test]
    fn exit_descriptions() {
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(describe_exit(std::process::ExitStatus::from_raw(3 << 8)), "exit status 3");
        assert_eq!(describe_exit(std::process::ExitStatus::from_raw(9)), "killed by signal 9");
    }
}
