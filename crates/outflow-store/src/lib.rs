//! # outflow-store
//!
//! The durable state of Outflow behind one trait, [`Store`]: jobs, their output versions,
//! deliveries and their attempts, tasks. SQLite ([`sqlite`]) is the embedded default;
//! PostgreSQL arrives as a second implementation of the same trait.
//!
//! Rules every implementation keeps (DESIGN.md §2):
//! - a call that returns `Ok` has committed (invariant 1: nothing acknowledged before it is
//!   durable);
//! - work is *claimed* under leases that expire (`lease_owner`, `lease_until`), never held by
//!   in-process state, so any number of processes can share one store and a crashed
//!   process's work is picked up when its leases run out;
//! - creating an output version and its deliveries is one transaction.
//!
//! This crate does not deliver anything and knows no destination: deliveries carry their
//! destination spec as JSON.

pub mod sqlite;

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use outflow_core::attempt::AttemptRecord;
use outflow_core::context::Priority;
use outflow_core::delivery::{Delivery, DeliveryState};
use outflow_core::job::{Job, JobStatus, OutputKind, OutputMeta};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use thiserror::Error;
use uuid::Uuid;

pub use sqlite::SqliteStore;

/// A store failure.
#[derive(Debug, Error)]
pub enum StoreError {
    /// The object does not exist (message names it).
    #[error("{0}")]
    NotFound(String),
    /// The request conflicts with the object's state (e.g. output on a cancelled job).
    #[error("{message}")]
    Conflict {
        /// What conflicts.
        message: String,
        /// The job's status, when the conflict is about it.
        current_status: Option<JobStatus>,
    },
    /// The disk is full: callers answer 507.
    #[error("storage is full: {0}")]
    Full(String),
    /// Anything else from the backend (I/O, corruption, connection).
    #[error("store error: {0}")]
    Backend(String),
}

/// Result alias.
pub type StoreResult<T> = Result<T, StoreError>;

/// How a job is referred to: its numeric id or its UUID.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobRef {
    /// `job_id`.
    Id(i64),
    /// `job_uuid`.
    Uuid(Uuid),
}

impl JobRef {
    /// Parses a path segment: a number or a UUID.
    pub fn parse(s: &str) -> Option<JobRef> {
        if let Ok(n) = s.parse::<i64>() {
            return Some(JobRef::Id(n));
        }
        Uuid::parse_str(s).ok().map(JobRef::Uuid)
    }
}

impl std::fmt::Display for JobRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JobRef::Id(n) => write!(f, "{n}"),
            JobRef::Uuid(u) => write!(f, "{u}"),
        }
    }
}

/// A task as declared in config, to be synchronised into the store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskDef {
    /// Unique name.
    pub name: String,
    /// Version label.
    pub version: Option<String>,
    /// The whole task config as JSON (command, args, env, destinations...).
    pub definition: Value,
}

/// A task in the store: its stable numeric id and definition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskRecord {
    /// Stable id: the same name keeps its id across restarts.
    pub id: i64,
    /// Unique name.
    pub name: String,
    /// Version label.
    pub version: Option<String>,
    /// The task config as JSON.
    pub definition: Value,
}

/// A job to create.
#[derive(Debug, Clone, PartialEq)]
pub struct NewJob {
    /// UUIDv7 chosen by the caller.
    pub uuid: Uuid,
    /// The client's idempotency key.
    pub client_job_id: Option<String>,
    /// Task id, name, version.
    pub task_id: Option<i64>,
    /// Task name.
    pub task_name: Option<String>,
    /// Task version.
    pub task_version: Option<String>,
    /// Priority.
    pub priority: Priority,
    /// Input.
    pub input_data: Value,
    /// Metadata.
    pub metadata: Map<String, Value>,
    /// Inline destinations (validated by the caller).
    pub output_destinations: Vec<Value>,
    /// Global destination names.
    pub destinations: Vec<String>,
    /// Whether the executor runs it.
    pub executable: bool,
}

/// Sort order of job listings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum JobSort {
    /// By creation (id), newest first.
    #[default]
    CreatedDesc,
    /// By creation, oldest first.
    CreatedAsc,
    /// By last change, newest first.
    UpdatedDesc,
    /// By last change, oldest first.
    UpdatedAsc,
}

/// Filters and page of a job listing.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JobQuery {
    /// Only this status.
    pub status: Option<JobStatus>,
    /// Only this task.
    pub task_name: Option<String>,
    /// Only this priority.
    pub priority: Option<Priority>,
    /// Only jobs whose `metadata.tags` contains this tag.
    pub tag: Option<String>,
    /// Created at or after.
    pub created_after: Option<DateTime<Utc>>,
    /// Created before.
    pub created_before: Option<DateTime<Utc>>,
    /// Order.
    pub sort: JobSort,
    /// Rows to skip.
    pub offset: u64,
    /// Rows to return; `0` means no limit.
    pub limit: u64,
}

/// One page of results and the total matching.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    /// The rows.
    pub items: Vec<T>,
    /// How many rows match the filters in all.
    pub total: u64,
}

/// A status report from a producer (or the executor).
#[derive(Debug, Clone, PartialEq)]
pub struct StatusUpdate {
    /// The new status.
    pub status: JobStatus,
    /// 0–100.
    pub progress: Option<u8>,
    /// Failure reason.
    pub error: Option<String>,
}

/// An output version to store.
#[derive(Debug, Clone, PartialEq)]
pub struct NewOutput {
    /// json, text or binary.
    pub kind: OutputKind,
    /// The `Content-Type`.
    pub content_type: String,
    /// The bytes.
    pub body: Bytes,
}

/// A delivery to create together with an output version.
#[derive(Debug, Clone, PartialEq)]
pub struct NewDelivery {
    /// Stable id (`dlv_<uuidv7>`).
    pub id: String,
    /// Global name or `output_destinations[i]`.
    pub destination_name: String,
    /// The `type`.
    pub destination_type: String,
    /// The spec as JSON.
    pub destination: Value,
    /// The isolation key.
    pub destination_key: String,
    /// Not before this time (scheduled delivery); `None` = now.
    pub deliver_at: Option<DateTime<Utc>>,
}

/// What finishing a job stores, in one transaction.
#[derive(Debug, Clone, PartialEq)]
pub struct FinishJob {
    /// The status to set (`None` keeps the current one, e.g. a second output version).
    pub status: Option<JobStatus>,
    /// Failure reason.
    pub error: Option<String>,
    /// The command's stderr tail, for executed jobs.
    pub log: Option<String>,
    /// The output version to add.
    pub output: Option<NewOutput>,
    /// The deliveries of that version.
    pub deliveries: Vec<NewDelivery>,
    /// The executor finishing a job it claimed: its lease owner. The finish is then refused
    /// (`Conflict`, nothing stored) unless the job is still `running` under this owner, so
    /// a run whose lease was lost (and whose job was claimed and run again) cannot add a
    /// second output version. `None` for producers, which hold no lease.
    pub lease_owner: Option<String>,
}

/// A claimed delivery with what is needed to make the attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct ClaimedDelivery {
    /// The delivery (state `in_flight`, attempts not yet incremented).
    pub delivery: Delivery,
    /// Its job.
    pub job: Job,
    /// The output version's description.
    pub output: OutputMeta,
    /// The output bytes.
    pub body: Bytes,
    /// When this claim's lease ends. It is also the claim's fencing token: the result of
    /// the attempt carries it back ([`AttemptResult::lease_until`]) and is recorded only
    /// while the delivery is still under this very claim, so a late result of an older
    /// claim (even by the same owner) cannot overwrite a newer one.
    pub lease_until: DateTime<Utc>,
}

/// What an attempt decided.
#[derive(Debug, Clone, PartialEq)]
pub enum AttemptOutcome {
    /// Delivered: done.
    Delivered,
    /// Failed, try again at this time.
    RetryAt(DateTime<Utc>),
    /// Failed for good: dead-letter it.
    Dead,
}

/// One finished attempt to record.
#[derive(Debug, Clone, PartialEq)]
pub struct AttemptResult {
    /// The delivery.
    pub delivery_id: String,
    /// The attempt's record (number, timing, status, error, excerpt, next retry).
    pub attempt: AttemptRecord,
    /// What follows.
    pub outcome: AttemptOutcome,
    /// The [`ClaimedDelivery::lease_until`] of the claim the attempt was made under.
    pub lease_until: DateTime<Utc>,
}

/// Filters and page of a delivery listing.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DeliveryQuery {
    /// Only this state.
    pub state: Option<DeliveryState>,
    /// Only this destination type.
    pub destination_type: Option<String>,
    /// Only this job.
    pub job_id: Option<i64>,
    /// Created at or after.
    pub created_after: Option<DateTime<Utc>>,
    /// Created before.
    pub created_before: Option<DateTime<Utc>>,
    /// Rows to skip.
    pub offset: u64,
    /// Rows to return; `0` means no limit.
    pub limit: u64,
}

/// Counts for `/metrics` and `/readyz`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct StoreStats {
    /// Jobs per status name.
    pub jobs_by_status: Vec<(JobStatus, u64)>,
    /// Deliveries per state.
    pub deliveries_by_state: Vec<(DeliveryState, u64)>,
}

/// The durable store. Every method is one transaction; `Ok` means committed.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Cheap liveness probe of the backend (for `/readyz`).
    async fn ping(&self) -> StoreResult<()>;

    /// Upserts tasks by name (a name keeps its id) and returns all tasks.
    async fn sync_tasks(&self, tasks: &[TaskDef]) -> StoreResult<Vec<TaskRecord>>;
    /// Every task.
    async fn list_tasks(&self) -> StoreResult<Vec<TaskRecord>>;

    /// Creates a job; when `client_job_id` already exists returns that job and `false`.
    async fn create_job(&self, job: NewJob) -> StoreResult<(Job, bool)>;
    /// One job.
    async fn get_job(&self, job: JobRef) -> StoreResult<Job>;
    /// A filtered page of jobs.
    async fn list_jobs(&self, query: &JobQuery) -> StoreResult<Page<Job>>;
    /// Applies a validated status transition (409 `Conflict` with the current status
    /// otherwise). Sets `started_at`/`finished_at` as the status implies.
    async fn update_status(&self, job: JobRef, update: StatusUpdate) -> StoreResult<Job>;
    /// Stores a final output version and its deliveries, and the status, in one transaction.
    /// Refused (`Conflict`) on a cancelled job.
    async fn finish_job(
        &self,
        job: JobRef,
        finish: FinishJob,
    ) -> StoreResult<(Job, Option<OutputMeta>)>;
    /// Cancels a queued or running job (`Conflict` when already terminal).
    async fn cancel_job(&self, job: JobRef) -> StoreResult<Job>;
    /// Deletes a job with its outputs, deliveries and attempts; a running job only with
    /// `force` (`Conflict` otherwise).
    async fn delete_job(&self, job: JobRef, force: bool) -> StoreResult<()>;
    /// An output version (the latest when `version` is `None`) and its bytes.
    async fn get_output(
        &self,
        job: JobRef,
        version: Option<u32>,
    ) -> StoreResult<(OutputMeta, Bytes)>;

    /// Claims up to `limit` executable jobs that are queued (or running under an expired
    /// lease), highest priority first, FIFO within a priority; marks them running.
    async fn claim_jobs(&self, owner: &str, limit: usize, lease: Duration)
    -> StoreResult<Vec<Job>>;
    /// Extends the leases of running jobs this owner holds and returns the ids renewed; a
    /// job missing from the answer is no longer this owner's to run (cancelled, finished,
    /// deleted, or claimed by someone else after its lease expired).
    async fn renew_job_leases(
        &self,
        owner: &str,
        jobs: &[i64],
        lease: Duration,
    ) -> StoreResult<Vec<i64>>;

    /// Claims up to `limit` due deliveries (pending, scheduled and due, or in flight under
    /// an expired lease), oldest due first, skipping `skip_keys` (saturated or
    /// circuit-open destination keys). Marks them `in_flight` under `owner`'s lease.
    async fn claim_deliveries(
        &self,
        owner: &str,
        limit: usize,
        lease: Duration,
        skip_keys: &[String],
    ) -> StoreResult<Vec<ClaimedDelivery>>;
    /// Records finished attempts (batched: one transaction for all) and moves each
    /// delivery to delivered, scheduled or dead. Ignores results whose claim no longer
    /// holds the delivery (another owner, or a newer claim by the same owner, took over
    /// after the lease expired: `lease_owner` and `lease_until` must both match), returning
    /// how many were applied. An attempt record never replaces an existing one.
    async fn complete_attempts(
        &self,
        owner: &str,
        results: Vec<AttemptResult>,
    ) -> StoreResult<usize>;
    /// Gives claimed deliveries back (pending, due now) without counting an attempt.
    async fn release_deliveries(&self, owner: &str, ids: &[String]) -> StoreResult<()>;
    /// When the next pending/scheduled delivery is due, so the engine can sleep until then.
    async fn next_due_at(&self) -> StoreResult<Option<DateTime<Utc>>>;

    /// One delivery.
    async fn get_delivery(&self, id: &str) -> StoreResult<Delivery>;
    /// A delivery's attempts, oldest first.
    async fn list_attempts(&self, delivery_id: &str) -> StoreResult<Vec<AttemptRecord>>;
    /// A filtered page of deliveries.
    async fn list_deliveries(&self, query: &DeliveryQuery) -> StoreResult<Page<Delivery>>;
    /// A job's deliveries with their attempts.
    async fn job_deliveries(&self, job: JobRef)
    -> StoreResult<Vec<(Delivery, Vec<AttemptRecord>)>>;
    /// Requeues one dead (or scheduled) delivery now; its attempt history is kept.
    async fn retry_delivery(&self, id: &str) -> StoreResult<Delivery>;
    /// Requeues every dead delivery matching the filter (state is forced to dead);
    /// returns how many.
    async fn replay_dead(&self, filter: &DeliveryQuery) -> StoreResult<u64>;
    /// Deletes every dead delivery matching the filter; returns how many.
    async fn purge_dead(&self, filter: &DeliveryQuery) -> StoreResult<u64>;

    /// Counts for metrics.
    async fn stats(&self) -> StoreResult<StoreStats>;
}
