//! The executor against the real SQLite store, real commands (`/bin/sh -c ...`) and, for
//! deliveries, the real dispatcher writing into a temporary directory: success with JSON and
//! text output, failure, timeout (the whole process group dies), cancel, priority order, a
//! command that does not exist, a capped log, and shutdown leaving a job to be run again.
#![cfg(unix)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use outflow_core::attempt::AttemptRecord;
use outflow_core::context::Priority;
use outflow_core::delivery::Delivery;
use outflow_core::job::{Job, JobStatus, OutputKind, OutputMeta};
use outflow_destinations::Registry;
use outflow_engine::{Engine, EngineSettings, EngineTasks};
use outflow_store::{
    AttemptResult, ClaimedDelivery, DeliveryQuery, FinishJob, JobQuery, JobRef, NewJob, Page,
    SqliteStore, StatusUpdate, Store, StoreResult, StoreStats, TaskDef, TaskRecord,
};
use serde_json::{Value, json};
use tempfile::TempDir;

const WAIT: Duration = Duration::from_secs(15);

fn settings() -> EngineSettings {
    EngineSettings {
        max_concurrent_jobs: 4,
        lease: Duration::from_secs(60),
        shutdown_grace: Duration::from_secs(5),
        idle_poll: Duration::from_millis(100),
        ..EngineSettings::default()
    }
}

struct Harness {
    dir: TempDir,
    store: Arc<dyn Store>,
    settings: EngineSettings,
}

impl Harness {
    async fn new(settings: EngineSettings) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("data")).await.unwrap();
        Harness { dir, store: Arc::new(store), settings }
    }

    /// A path inside the test's temporary directory.
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn engine(&self) -> Arc<Engine> {
        Engine::new(self.store.clone(), Registry::default(), Vec::new(), self.settings.clone())
    }

    /// Registers a task whose command is `/bin/sh -c <script>` plus `extra` definition keys;
    /// returns its id.
    async fn shell_task(&self, name: &str, script: &str, extra: Value) -> i64 {
        let mut definition = json!({
            "name": name, "version": "1.0",
            "command": "/bin/sh", "args": ["-c", script],
        });
        for (k, v) in extra.as_object().unwrap() {
            definition[k] = v.clone();
        }
        self.task(name, definition).await
    }

    async fn task(&self, name: &str, definition: Value) -> i64 {
        let mut defs: Vec<TaskDef> = self
            .store
            .list_tasks()
            .await
            .unwrap()
            .into_iter()
            .map(|t| TaskDef { name: t.name, version: t.version, definition: t.definition })
            .collect();
        defs.push(TaskDef { name: name.into(), version: Some("1.0".into()), definition });
        let tasks = self.store.sync_tasks(&defs).await.unwrap();
        tasks.iter().find(|t| t.name == name).unwrap().id
    }

    async fn job(
        &self,
        task_id: i64,
        priority: Priority,
        input: Value,
        destinations: Vec<Value>,
    ) -> Job {
        let (job, created) = self
            .store
            .create_job(NewJob {
                uuid: uuid::Uuid::now_v7(),
                client_job_id: None,
                task_id: Some(task_id),
                task_name: None,
                task_version: None,
                priority,
                input_data: input,
                metadata: serde_json::Map::new(),
                output_destinations: destinations,
                destinations: Vec::new(),
                executable: true,
            })
            .await
            .unwrap();
        assert!(created);
        job
    }

    async fn get(&self, id: i64) -> Job {
        self.store.get_job(JobRef::Id(id)).await.unwrap()
    }

    /// Polls until the job has `status` (panics after [`WAIT`]).
    async fn wait_status(&self, id: i64, status: JobStatus) -> Job {
        let start = Instant::now();
        loop {
            let job = self.get(id).await;
            if job.status == status {
                return job;
            }
            assert!(
                start.elapsed() < WAIT,
                "job {id} still {:?} (error {:?}) after {WAIT:?}, wanted {status:?}",
                job.status,
                job.error
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn output(&self, id: i64) -> (OutputKind, String, Vec<u8>) {
        let (meta, body) = self.store.get_output(JobRef::Id(id), None).await.unwrap();
        (meta.kind, meta.content_type, body.to_vec())
    }
}

async fn stop(tasks: EngineTasks) {
    tokio::time::timeout(Duration::from_secs(20), tasks.shutdown())
        .await
        .expect("engine stops within its grace period");
}

/// Polls until `check` holds (panics after [`WAIT`] with `what`).
async fn wait_until(what: &str, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < WAIT, "{what}: still not true after {WAIT:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Reads a pid a script wrote to `file`, waiting for it to appear.
async fn read_pid(file: &Path) -> i32 {
    wait_until(&format!("{} written", file.display()), || {
        std::fs::read_to_string(file).is_ok_and(|s| s.ends_with('\n'))
    })
    .await;
    std::fs::read_to_string(file).unwrap().trim().parse().unwrap()
}

/// Whether a process is gone (or a zombie nobody reaped yet, which runs nothing).
fn process_gone(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        // The state follows the parenthesised command name: "123 (sleep) Z ...".
        Ok(stat) => {
            stat.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
        }
    }
}

// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_from_stdin_succeeds_and_is_delivered_to_a_file() {
    let h = Harness::new(settings()).await;
    // The input arrives as one line of JSON; the command wraps it and prints JSON.
    let task =
        h.shell_task("echo", r#"read -r line; printf '{"echo": %s}' "$line""#, json!({})).await;
    let file = h.path("out/result.json");
    let job = h
        .job(
            task,
            Priority::Normal,
            json!({"n": 1, "s": "x"}),
            vec![json!({"type": "filesystem", "path": file.to_str().unwrap(),
                "format": "json_compact", "create_dirs": true})],
        )
        .await;
    let engine = h.engine();
    let tasks = engine.start();
    engine.wake_executor();

    let done = h.wait_status(job.id, JobStatus::Succeeded).await;
    assert_eq!(done.error, None);
    assert_eq!(done.log, None);
    assert_eq!(done.output_version, Some(1));
    assert!(done.started_at.is_some() && done.finished_at.is_some());
    let (kind, content_type, body) = h.output(job.id).await;
    assert_eq!((kind, content_type.as_str()), (OutputKind::Json, "application/json"));
    assert_eq!(String::from_utf8(body).unwrap(), r#"{"echo": {"n":1,"s":"x"}}"#);

    wait_until("the file destination was written", || file.exists()).await;
    assert_eq!(std::fs::read_to_string(&file).unwrap(), r#"{"echo":{"n":1,"s":"x"}}"#);
    stop(tasks).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_output_with_env_and_working_dir() {
    let h = Harness::new(settings()).await;
    let workdir = tempfile::tempdir().unwrap();
    let task = h
        .shell_task(
            "greet",
            r#"printf '%s from %s' "$GREETING" "$(pwd -P)""#,
            json!({"env": {"GREETING": "hello"}, "working_dir": workdir.path()}),
        )
        .await;
    let job = h.job(task, Priority::Normal, json!(null), Vec::new()).await;
    let engine = h.engine();
    let tasks = engine.start();

    h.wait_status(job.id, JobStatus::Succeeded).await;
    let (kind, content_type, body) = h.output(job.id).await;
    assert_eq!((kind, content_type.as_str()), (OutputKind::Text, "text/plain; charset=utf-8"));
    let real = workdir.path().canonicalize().unwrap();
    assert_eq!(String::from_utf8(body).unwrap(), format!("hello from {}", real.display()));
    stop(tasks).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_zero_exit_fails_but_stores_and_delivers_the_output_and_log() {
    let h = Harness::new(settings()).await;
    let task = h
        .shell_task("flaky", "echo partial; echo 'oops: disk on fire' >&2; exit 3", json!({}))
        .await;
    let out = h.path("out");
    std::fs::create_dir(&out).unwrap();
    // The status is in the template context: the file is named after it.
    let job = h
        .job(
            task,
            Priority::Normal,
            json!({}),
            vec![json!({"type": "filesystem",
                "path": format!("{}/{{{{status}}}}-{{{{job_id}}}}.txt", out.display()),
                "format": "raw"})],
        )
        .await;
    let engine = h.engine();
    let tasks = engine.start();

    let done = h.wait_status(job.id, JobStatus::Failed).await;
    assert_eq!(done.error.as_deref(), Some("exit status 3"));
    assert_eq!(done.log.as_deref(), Some("oops: disk on fire\n"));
    let (kind, _, body) = h.output(job.id).await;
    assert_eq!((kind, body.as_slice()), (OutputKind::Text, &b"partial\n"[..]));

    let file = out.join(format!("failed-{}.txt", job.id));
    wait_until("the failed job's output was delivered", || file.exists()).await;
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "partial\n");
    stop(tasks).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_kills_the_whole_process_group() {
    let h = Harness::new(settings()).await;
    let pidfile = h.path("child.pid");
    // A background child that would outlive its parent, then a parent that hangs.
    let script = format!("sleep 30 & echo $! > '{}'; echo started; sleep 30", pidfile.display());
    let task = h.shell_task("hang", &script, json!({"timeout_seconds": 1})).await;
    let job = h.job(task, Priority::Normal, json!({}), Vec::new()).await;
    let engine = h.engine();
    let started = Instant::now();
    let tasks = engine.start();

    let child = read_pid(&pidfile).await;
    let done = h.wait_status(job.id, JobStatus::Failed).await;
    assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());
    assert_eq!(done.error.as_deref(), Some("timed out after 1s"));
    // What it printed before the timeout is kept.
    let (_, _, body) = h.output(job.id).await;
    assert_eq!(body, b"started\n");
    wait_until(&format!("background child {child} killed"), || process_gone(child)).await;
    stop(tasks).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_kills_the_process_and_the_status_stays_cancelled() {
    let h = Harness::new(settings()).await;
    let pidfile = h.path("job.pid");
    let script = format!("echo $$ > '{}'; sleep 30; echo finished", pidfile.display());
    let task = h.shell_task("long", &script, json!({})).await;
    let job = h.job(task, Priority::Normal, json!({}), Vec::new()).await;
    let engine = h.engine();
    let tasks = engine.start();

    let pid = read_pid(&pidfile).await;
    assert_eq!(h.get(job.id).await.status, JobStatus::Running);
    // What the API does: cancel in the store, then kill.
    h.store.cancel_job(JobRef::Id(job.id)).await.unwrap();
    assert!(engine.kill_job(job.id));
    assert!(!engine.kill_job(job.id + 1000), "no such job runs here");
    wait_until(&format!("job process {pid} killed"), || process_gone(pid)).await;

    // Give the executor time to (wrongly) record a result, then check it did not.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after = h.get(job.id).await;
    assert_eq!(after.status, JobStatus::Cancelled);
    assert_eq!(after.output_version, None);
    wait_until("the job left the executor", || !engine.kill_job(job.id)).await;
    stop(tasks).await;
}

/// A cancel committed where this node never hears of it (another node's API): the next
/// lease renewal does not renew the job, so the executor kills it instead of running it to
/// the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_the_renewal_no_longer_holds_is_killed() {
    let h = Harness::new(EngineSettings { lease: Duration::from_millis(300), ..settings() }).await;
    let pidfile = h.path("job.pid");
    let done = h.path("done");
    let script = format!("echo $$ > '{}'; sleep 2; touch '{}'", pidfile.display(), done.display());
    let task = h.shell_task("long", &script, json!({})).await;
    let job = h.job(task, Priority::Normal, json!({}), Vec::new()).await;
    let engine = h.engine();
    let tasks = engine.start();

    let pid = read_pid(&pidfile).await;
    h.store.cancel_job(JobRef::Id(job.id)).await.unwrap();
    wait_until(&format!("job process {pid} killed"), || process_gone(pid)).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(!done.exists(), "the cancelled command ran to its end");
    let after = h.get(job.id).await;
    assert_eq!((after.status, after.output_version), (JobStatus::Cancelled, None));
    stop(tasks).await;
}

/// The real store, except that every job it hands out is cancelled right after the claim
/// committed: a `POST /cancel` landing between the executor's claim and the start of the
/// job's command, when there is no process yet for the API's kill to reach.
struct CancelAfterClaim(Arc<dyn Store>);

#[async_trait::async_trait]
impl Store for CancelAfterClaim {
    async fn claim_jobs(
        &self,
        owner: &str,
        limit: usize,
        lease: Duration,
    ) -> StoreResult<Vec<Job>> {
        let jobs = self.0.claim_jobs(owner, limit, lease).await?;
        for job in &jobs {
            self.0.cancel_job(JobRef::Id(job.id)).await?;
        }
        Ok(jobs)
    }

    async fn ping(&self) -> StoreResult<()> {
        self.0.ping().await
    }
    async fn sync_tasks(&self, tasks: &[TaskDef]) -> StoreResult<Vec<TaskRecord>> {
        self.0.sync_tasks(tasks).await
    }
    async fn list_tasks(&self) -> StoreResult<Vec<TaskRecord>> {
        self.0.list_tasks().await
    }
    async fn create_job(&self, job: NewJob) -> StoreResult<(Job, bool)> {
        self.0.create_job(job).await
    }
    async fn get_job(&self, job: JobRef) -> StoreResult<Job> {
        self.0.get_job(job).await
    }
    async fn list_jobs(&self, query: &JobQuery) -> StoreResult<Page<Job>> {
        self.0.list_jobs(query).await
    }
    async fn update_status(&self, job: JobRef, update: StatusUpdate) -> StoreResult<Job> {
        self.0.update_status(job, update).await
    }
    async fn finish_job(
        &self,
        job: JobRef,
        finish: FinishJob,
    ) -> StoreResult<(Job, Option<OutputMeta>)> {
        self.0.finish_job(job, finish).await
    }
    async fn cancel_job(&self, job: JobRef) -> StoreResult<Job> {
        self.0.cancel_job(job).await
    }
    async fn delete_job(&self, job: JobRef, force: bool) -> StoreResult<()> {
        self.0.delete_job(job, force).await
    }
    async fn get_output(
        &self,
        job: JobRef,
        version: Option<u32>,
    ) -> StoreResult<(OutputMeta, bytes::Bytes)> {
        self.0.get_output(job, version).await
    }
    async fn renew_job_leases(
        &self,
        owner: &str,
        jobs: &[i64],
        lease: Duration,
    ) -> StoreResult<Vec<i64>> {
        self.0.renew_job_leases(owner, jobs, lease).await
    }
    async fn claim_deliveries(
        &self,
        owner: &str,
        limit: usize,
        lease: Duration,
        skip_keys: &[String],
    ) -> StoreResult<Vec<ClaimedDelivery>> {
        self.0.claim_deliveries(owner, limit, lease, skip_keys).await
    }
    async fn complete_attempts(
        &self,
        owner: &str,
        results: Vec<AttemptResult>,
    ) -> StoreResult<usize> {
        self.0.complete_attempts(owner, results).await
    }
    async fn release_deliveries(&self, owner: &str, ids: &[String]) -> StoreResult<()> {
        self.0.release_deliveries(owner, ids).await
    }
    async fn next_due_at(&self) -> StoreResult<Option<chrono::DateTime<chrono::Utc>>> {
        self.0.next_due_at().await
    }
    async fn get_delivery(&self, id: &str) -> StoreResult<Delivery> {
        self.0.get_delivery(id).await
    }
    async fn list_attempts(&self, delivery_id: &str) -> StoreResult<Vec<AttemptRecord>> {
        self.0.list_attempts(delivery_id).await
    }
    async fn list_deliveries(&self, query: &DeliveryQuery) -> StoreResult<Page<Delivery>> {
        self.0.list_deliveries(query).await
    }
    async fn job_deliveries(
        &self,
        job: JobRef,
    ) -> StoreResult<Vec<(Delivery, Vec<AttemptRecord>)>> {
        self.0.job_deliveries(job).await
    }
    async fn retry_delivery(&self, id: &str) -> StoreResult<Delivery> {
        self.0.retry_delivery(id).await
    }
    async fn replay_dead(&self, filter: &DeliveryQuery) -> StoreResult<u64> {
        self.0.replay_dead(filter).await
    }
    async fn purge_dead(&self, filter: &DeliveryQuery) -> StoreResult<u64> {
        self.0.purge_dead(filter).await
    }
    async fn stats(&self) -> StoreResult<StoreStats> {
        self.0.stats().await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_cancelled_between_claim_and_start_never_runs() {
    let h = Harness::new(settings()).await;
    let started = h.path("started");
    let done = h.path("done");
    let script = format!("touch '{}'; sleep 1; touch '{}'", started.display(), done.display());
    let task = h.shell_task("cancelled-early", &script, json!({})).await;
    let job = h.job(task, Priority::Normal, json!({}), Vec::new()).await;
    let store: Arc<dyn Store> = Arc::new(CancelAfterClaim(h.store.clone()));
    let engine = Engine::new(store, Registry::default(), Vec::new(), h.settings.clone());
    let tasks = engine.start();

    // Claimed (and so cancelled by the wrapper).
    h.wait_status(job.id, JobStatus::Cancelled).await;
    // Long enough for the command to have finished had it started.
    tokio::time::sleep(Duration::from_millis(2000)).await;
    assert!(!started.exists(), "the command of a cancelled job started");
    assert!(!done.exists(), "the command of a cancelled job ran to its end");
    let after = h.get(job.id).await;
    assert_eq!((after.status, after.output_version), (JobStatus::Cancelled, None));
    stop(tasks).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_past_the_limit_kills_the_command_and_fails_the_job() {
    let h = Harness::new(EngineSettings { max_output_bytes: 1000, ..settings() }).await;
    // Exactly the limit is fine.
    let fits = h.shell_task("fits", "head -c 1000 /dev/zero | tr '\\0' x", json!({})).await;
    let fits = h.job(fits, Priority::Normal, json!({}), Vec::new()).await;
    // One byte more, then the command would hang on: it must be killed, not waited for.
    let pidfile = h.path("big.pid");
    let script =
        format!("echo $$ > '{}'; head -c 1001 /dev/zero | tr '\\0' x; sleep 30", pidfile.display());
    let big = h.shell_task("big", &script, json!({})).await;
    let big = h.job(big, Priority::Normal, json!({}), Vec::new()).await;
    let engine = h.engine();
    let tasks = engine.start();

    h.wait_status(fits.id, JobStatus::Succeeded).await;
    let (_, _, body) = h.output(fits.id).await;
    assert_eq!(body, vec![b'x'; 1000]);

    let failed = h.wait_status(big.id, JobStatus::Failed).await;
    assert_eq!(
        failed.error.as_deref(),
        Some("output exceeded 1000 bytes (executor.max_output_bytes)")
    );
    assert_eq!(failed.output_version, None, "a cut output is not stored");
    let pid = read_pid(&pidfile).await;
    wait_until(&format!("job process {pid} killed"), || process_gone(pid)).await;
    stop(tasks).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_run_by_priority_then_in_submission_order() {
    let h = Harness::new(EngineSettings { max_concurrent_jobs: 1, ..settings() }).await;
    let order = h.path("order.txt");
    // Each job appends its input (a JSON string such as "low") to the order file.
    let script = format!("cat >> '{}'", order.display());
    let task = h.shell_task("append", &script, json!({})).await;
    for (priority, name) in [
        (Priority::Low, "low"),
        (Priority::Normal, "normal-1"),
        (Priority::Urgent, "urgent"),
        (Priority::High, "high"),
        (Priority::Normal, "normal-2"),
    ] {
        h.job(task, priority, json!(name), Vec::new()).await;
    }
    let engine = h.engine();
    let tasks = engine.start();

    wait_until("all five jobs ran", || {
        std::fs::read_to_string(&order).is_ok_and(|s| s.lines().count() == 5)
    })
    .await;
    assert_eq!(
        std::fs::read_to_string(&order).unwrap(),
        "\"urgent\"\n\"high\"\n\"normal-1\"\n\"normal-2\"\n\"low\"\n"
    );
    stop(tasks).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_command_or_task_fails_with_a_message_naming_it() {
    let h = Harness::new(settings()).await;
    let task = h
        .task(
            "ghost",
            json!({"name": "ghost", "command": "/nonexistent/outflow-no-such-program",
                "args": ["x"]}),
        )
        .await;
    let missing_command = h.job(task, Priority::Normal, json!({}), Vec::new()).await;
    let missing_task = h.job(task + 100, Priority::Normal, json!({}), Vec::new()).await;
    let bad = h.task("bad", json!({"name": "bad", "command": "/bin/true", "args": "-x"})).await;
    let bad_definition = h.job(bad, Priority::Normal, json!({}), Vec::new()).await;
    let engine = h.engine();
    let tasks = engine.start();

    let done = h.wait_status(missing_command.id, JobStatus::Failed).await;
    assert_eq!(
        done.error.as_deref(),
        Some(
            "cannot start command '/nonexistent/outflow-no-such-program': No such file or \
             directory (os error 2)"
        )
    );
    assert_eq!(done.output_version, None);
    let done = h.wait_status(missing_task.id, JobStatus::Failed).await;
    assert_eq!(
        done.error,
        Some(format!(
            "task {} does not exist (any more): it is not among the configured tasks",
            task + 100
        ))
    );
    let done = h.wait_status(bad_definition.id, JobStatus::Failed).await;
    assert_eq!(
        done.error.as_deref(),
        Some("invalid task definition: tasks.bad.args: must be a list of strings, got a string")
    );
    stop(tasks).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_keeps_the_last_bytes_of_stderr() {
    let h = Harness::new(EngineSettings { stderr_limit: 10, ..settings() }).await;
    let task = h.shell_task("chatty", "printf 'first line\\nlast line\\n' >&2", json!({})).await;
    let job = h.job(task, Priority::Normal, json!({}), Vec::new()).await;
    let engine = h.engine();
    let tasks = engine.start();

    let done = h.wait_status(job.id, JobStatus::Succeeded).await;
    assert_eq!(
        done.log.as_deref(),
        Some("[stderr truncated: the first 11 of 21 bytes were dropped]\nlast line\n")
    );
    stop(tasks).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_leaves_a_running_job_to_its_lease_and_it_runs_again() {
    let h = Harness::new(EngineSettings {
        lease: Duration::from_millis(600),
        shutdown_grace: Duration::from_millis(200),
        ..settings()
    })
    .await;
    let marker = h.path("first-run");
    let pidfile = h.path("run.pid");
    // The first run hangs; a second run (after the restart) finishes at once.
    let script = format!(
        "if [ -e '{m}' ]; then echo second run; exit 0; fi; touch '{m}'; echo $$ > '{p}'; sleep 30",
        m = marker.display(),
        p = pidfile.display()
    );
    let task = h.shell_task("resumable", &script, json!({})).await;
    let job = h.job(task, Priority::Normal, json!({}), Vec::new()).await;

    let engine = h.engine();
    let tasks = engine.start();
    let pid = read_pid(&pidfile).await;
    // Outlive a few lease periods: renewal keeps the job ours.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let running = h.get(job.id).await;
    assert_eq!(running.status, JobStatus::Running);
    let stopped = Instant::now();
    stop(tasks).await;
    assert!(stopped.elapsed() < Duration::from_secs(5), "shutdown took {:?}", stopped.elapsed());
    wait_until(&format!("job process {pid} killed at shutdown"), || process_gone(pid)).await;
    assert_eq!(h.get(job.id).await.status, JobStatus::Running, "left to its lease");

    // A new engine (a restart) claims it once the lease expired and runs it again.
    let engine = h.engine();
    let tasks = engine.start();
    let done = h.wait_status(job.id, JobStatus::Succeeded).await;
    let (_, _, body) = h.output(job.id).await;
    assert_eq!(body, b"second run\n");
    assert_eq!(done.output_version, Some(1));
    stop(tasks).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_whose_destinations_cannot_be_planned_still_finishes() {
    let h = Harness::new(settings()).await;
    let task = h.shell_task("ok", "echo '{\"ok\": true}'", json!({})).await;
    // The job names a global destination the config no longer has.
    let (job, _) = h
        .store
        .create_job(NewJob {
            uuid: uuid::Uuid::now_v7(),
            client_job_id: None,
            task_id: Some(task),
            task_name: None,
            task_version: None,
            priority: Priority::Normal,
            input_data: json!({}),
            metadata: serde_json::Map::new(),
            output_destinations: Vec::new(),
            destinations: vec!["archive".into()],
            executable: true,
        })
        .await
        .unwrap();
    let engine = h.engine();
    let tasks = engine.start();

    let done = h.wait_status(job.id, JobStatus::Failed).await;
    assert_eq!(
        done.error.as_deref(),
        Some(
            "output not delivered: archive: unknown global destination 'archive': \
             output.global_destinations is empty"
        )
    );
    let (kind, _, body) = h.output(job.id).await;
    assert_eq!((kind, body.as_slice()), (OutputKind::Json, &b"{\"ok\": true}\n"[..]));
    assert!(h.store.job_deliveries(JobRef::Id(job.id)).await.unwrap().is_empty());
    stop(tasks).await;
}
