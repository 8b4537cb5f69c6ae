//! The API's request and response bodies: serde shapes with OpenAPI schemas.
//!
//! Views are built from the domain records (`Job`, `Delivery`, ...) and always mask secrets
//! ([`outflow_core::config::redact`]) in destination specs before they leave the server.
//! Request types document the bodies; they are parsed by hand (see [`crate::extract`]) so
//! that every problem is reported with its path, unknown fields included.

use chrono::{DateTime, Utc};
use outflow_core::attempt::AttemptRecord;
use outflow_core::config::redact;
use outflow_core::delivery::Delivery;
use outflow_core::job::{Job, OutputMeta};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::openapi::schema::{ObjectBuilder, SchemaType, Type};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

fn string_enum(values: &[&str], description: &str) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(SchemaType::Type(Type::String))
        .enum_values(Some(values.iter().copied()))
        .description(Some(description))
}

fn priority_schema() -> ObjectBuilder {
    string_enum(&["low", "normal", "high", "urgent"], "Scheduling priority.")
}

fn job_status_schema() -> ObjectBuilder {
    string_enum(
        &["queued", "running", "succeeded", "failed", "cancelled"],
        "Where the job is in its life.",
    )
}

fn delivery_state_schema() -> ObjectBuilder {
    string_enum(&["pending", "in_flight", "scheduled", "delivered", "dead"], "Delivery state.")
}

fn output_kind_schema() -> ObjectBuilder {
    string_enum(&["json", "text", "binary"], "What kind of bytes the output holds.")
}

/// `POST /api/v1/jobs`: seed 000's body plus global destinations, a client id and metadata.
///
/// Unknown fields are refused (422) so that typos are not silently ignored.
#[derive(Debug, Clone, Default, Deserialize, Serialize, ToSchema)]
#[schema(example = json!({
    "task_name": "report",
    "input_data": {"name": "example"},
    "priority": "normal",
    "job_id": "order-1234",
    "metadata": {"title": "Nightly report", "tags": ["nightly"]},
    "destinations": ["audit_log"],
    "output_destinations": [
        {"type": "filesystem", "path": "/data/outputs/{{job_uuid}}.json", "format": "json"}
    ]
}))]
pub struct SubmitJobRequest {
    /// The task's numeric id (see `GET /api/v1/tasks`). Give this or `task_name`, or
    /// neither for a job that names no task.
    pub task_id: Option<i64>,
    /// The task's name.
    pub task_name: Option<String>,
    /// What the job is asked to do; a command task gets it as JSON on stdin. Default `{}`.
    pub input_data: Option<Value>,
    /// `low`, `normal` (default), `high` or `urgent`, in any case.
    #[schema(example = "normal")]
    pub priority: Option<String>,
    /// Inline destinations (seed 000 syntax: `{"type": "filesystem", ...}`).
    #[schema(value_type = Option<Vec<Object>>)]
    pub output_destinations: Option<Vec<Value>>,
    /// Names of configured global destinations (`output.global_destinations`).
    pub destinations: Option<Vec<String>>,
    /// Your own id for this job: submitting the same id again returns the existing job
    /// (200) instead of creating one (201).
    pub job_id: Option<String>,
    /// `title`, `description`, `tags` (list of strings) and any other keys.
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Map<String, Value>>,
}

/// A job, as every job endpoint shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct JobView {
    /// Numeric id (`{{job_id}}` in templates); use it or `job_uuid` in paths.
    pub id: i64,
    /// The job's UUIDv7.
    pub job_uuid: Uuid,
    /// The client's own id, when one was given at submit.
    pub job_id: Option<String>,
    /// The task's numeric id, when the job names a task.
    pub task_id: Option<i64>,
    /// The task's name.
    pub task_name: Option<String>,
    /// The task's version.
    pub task_version: Option<String>,
    /// Scheduling priority.
    #[schema(schema_with = priority_schema)]
    pub priority: String,
    /// Current status.
    #[schema(schema_with = job_status_schema)]
    pub status: String,
    /// 0–100, when reported.
    pub progress: Option<u8>,
    /// Why the job failed, when it did.
    pub error: Option<String>,
    /// The job's input.
    #[schema(value_type = Object)]
    pub input_data: Value,
    /// `title`, `description`, `tags` and free keys.
    #[schema(value_type = Object)]
    pub metadata: Map<String, Value>,
    /// Inline destinations as stored, secrets masked.
    #[schema(value_type = Vec<Object>)]
    pub output_destinations: Vec<Value>,
    /// Global destination names.
    pub destinations: Vec<String>,
    /// When the job was accepted (committed).
    pub queued_at: DateTime<Utc>,
    /// When it started running.
    pub started_at: Option<DateTime<Utc>>,
    /// When it reached a terminal status.
    pub finished_at: Option<DateTime<Utc>>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
    /// The latest output version, when there is one.
    pub output_version: Option<u32>,
}

impl From<&Job> for JobView {
    fn from(job: &Job) -> Self {
        JobView {
            id: job.id,
            job_uuid: job.uuid,
            job_id: job.client_job_id.clone(),
            task_id: job.task_id,
            task_name: job.task_name.clone(),
            task_version: job.task_version.clone(),
            priority: job.priority.as_str().to_string(),
            status: job.status.as_str().to_string(),
            progress: job.progress,
            error: job.error.clone(),
            input_data: job.input_data.clone(),
            metadata: job.metadata.clone(),
            output_destinations: job.output_destinations.iter().map(redact).collect(),
            destinations: job.destinations.clone(),
            queued_at: job.queued_at,
            started_at: job.started_at,
            finished_at: job.finished_at,
            updated_at: job.updated_at,
            output_version: job.output_version,
        }
    }
}

/// `GET /api/v1/jobs/{id}/status`: the cheap view for polling.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct JobStatusView {
    /// Numeric id.
    pub id: i64,
    /// Current status.
    #[schema(schema_with = job_status_schema)]
    pub status: String,
    /// 0–100, when reported.
    pub progress: Option<u8>,
    /// Why the job failed, when it did.
    pub error: Option<String>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
    /// The latest output version, when there is one.
    pub output_version: Option<u32>,
}

impl From<&Job> for JobStatusView {
    fn from(job: &Job) -> Self {
        JobStatusView {
            id: job.id,
            status: job.status.as_str().to_string(),
            progress: job.progress,
            error: job.error.clone(),
            updated_at: job.updated_at,
            output_version: job.output_version,
        }
    }
}

/// `POST /api/v1/jobs/{id}/status`: a producer's report.
#[derive(Debug, Clone, Default, Deserialize, Serialize, ToSchema)]
#[schema(example = json!({"status": "running", "progress": 50}))]
pub struct StatusUpdateRequest {
    /// `running`, `succeeded` or `failed` (any case). A terminal status without an output
    /// finishes the job with no deliveries; `PUT .../output` is what triggers deliveries.
    pub status: String,
    /// 0–100.
    pub progress: Option<u8>,
    /// Why the job failed.
    pub error: Option<String>,
}

/// What `PUT /api/v1/jobs/{id}/output` stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct OutputStoredView {
    /// The job's numeric id.
    pub job_id: i64,
    /// The new version (1, 2, ...).
    pub version: u32,
    /// json, text or binary (from the `Content-Type`).
    #[schema(schema_with = output_kind_schema)]
    pub kind: String,
    /// The `Content-Type` it was stored with.
    pub content_type: String,
    /// Bytes.
    pub size: u64,
    /// Hex SHA-256 of the bytes.
    pub sha256: String,
    /// When it was stored.
    pub created_at: DateTime<Utc>,
    /// The job's status after storing it.
    #[schema(schema_with = job_status_schema)]
    pub job_status: String,
    /// The ids of the deliveries created for this version (one per destination).
    pub deliveries: Vec<String>,
}

impl OutputStoredView {
    /// The view of `meta`, stored on `job`, with its deliveries' ids.
    pub fn new(job: &Job, meta: &OutputMeta, deliveries: Vec<String>) -> Self {
        OutputStoredView {
            job_id: job.id,
            version: meta.version,
            kind: meta.kind.as_str().to_string(),
            content_type: meta.content_type.clone(),
            size: meta.size,
            sha256: meta.sha256.clone(),
            created_at: meta.created_at,
            job_status: job.status.as_str().to_string(),
            deliveries,
        }
    }
}

/// One delivery attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AttemptView {
    /// 1-based attempt number.
    pub number: u32,
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// How long it took.
    pub duration_ms: u64,
    /// HTTP status or protocol code, when there was one.
    pub status_code: Option<u16>,
    /// The error, when the attempt failed.
    pub error: Option<String>,
    /// `retryable` or `permanent`, when the attempt failed.
    pub failure_class: Option<String>,
    /// The first 4 KiB of the response.
    pub response_excerpt: Option<String>,
    /// The wait before the next attempt, when one was scheduled.
    pub next_retry_in_ms: Option<u64>,
}

impl From<&AttemptRecord> for AttemptView {
    fn from(a: &AttemptRecord) -> Self {
        AttemptView {
            number: a.number,
            started_at: a.started_at,
            duration_ms: a.duration_ms,
            status_code: a.status_code,
            error: a.error.clone(),
            failure_class: a.failure_class.map(|c| {
                serde_json::to_value(c)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default()
            }),
            response_excerpt: a.response_excerpt.clone(),
            next_retry_in_ms: a.next_retry_in.map(|d| d.as_millis() as u64),
        }
    }
}

/// One delivery: an output version × a destination.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DeliveryView {
    /// Stable id (`dlv_...`): the webhook `webhook-id`, identical on every retry.
    pub id: String,
    /// The job's numeric id.
    pub job_id: i64,
    /// The job's UUID.
    pub job_uuid: Uuid,
    /// Which output version it delivers.
    pub output_version: u32,
    /// The global destination's name, or `output_destinations[i]`.
    pub destination_name: String,
    /// The destination type.
    pub destination_type: String,
    /// The destination spec (for a global destination, its configured body), secrets
    /// masked.
    #[schema(value_type = Object)]
    pub target: Value,
    /// The isolation key: concurrency limits and the circuit breaker are per key.
    pub destination_key: String,
    /// Current state.
    #[schema(schema_with = delivery_state_schema)]
    pub state: String,
    /// Attempts made so far.
    pub attempt_count: u32,
    /// When the next attempt is due (pending, scheduled).
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// The last attempt's error.
    pub last_error: Option<String>,
    /// The last attempt's status code.
    pub last_status_code: Option<u16>,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
    /// When it was delivered.
    pub delivered_at: Option<DateTime<Utc>>,
    /// Every attempt, oldest first. Present on `GET /api/v1/deliveries/{id}` and
    /// `GET /api/v1/jobs/{id}/deliveries`; left out of listings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts: Option<Vec<AttemptView>>,
}

impl DeliveryView {
    /// The view of `d`; `target` is the spec to show (already resolved for globals).
    pub fn new(d: &Delivery, target: &Value, attempts: Option<&[AttemptRecord]>) -> Self {
        DeliveryView {
            id: d.id.clone(),
            job_id: d.job_id,
            job_uuid: d.job_uuid,
            output_version: d.output_version,
            destination_name: d.destination_name.clone(),
            destination_type: d.destination_type.clone(),
            target: redact(target),
            destination_key: d.destination_key.clone(),
            state: d.state.as_str().to_string(),
            attempt_count: d.attempts,
            next_attempt_at: d.next_attempt_at,
            last_error: d.last_error.clone(),
            last_status_code: d.last_status_code,
            created_at: d.created_at,
            updated_at: d.updated_at,
            delivered_at: d.delivered_at,
            attempts: attempts.map(|a| a.iter().map(AttemptView::from).collect()),
        }
    }
}

/// A filter over dead deliveries, for replay and purge. Every key is optional; `{}` (or an
/// empty body) matches every dead delivery.
#[derive(Debug, Clone, Default, Deserialize, Serialize, ToSchema, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeadLetterFilter {
    /// Only this destination type (`webhook`, `filesystem`).
    pub destination_type: Option<String>,
    /// Only this job (numeric id).
    pub job_id: Option<i64>,
    /// Deliveries created at or after (RFC 3339).
    pub created_after: Option<DateTime<Utc>>,
    /// Deliveries created before (RFC 3339).
    pub created_before: Option<DateTime<Utc>>,
}

/// `POST /api/v1/deliveries/replay`'s answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ReplayResult {
    /// How many dead deliveries were requeued.
    pub requeued: u64,
}

/// `DELETE /api/v1/deliveries/dead`'s answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PurgeResult {
    /// How many dead deliveries were deleted.
    pub purged: u64,
}

/// `POST /api/v1/jobs/test-output-destinations` (seed 000).
#[derive(Debug, Clone, Default, Deserialize, Serialize, ToSchema)]
#[schema(example = json!({"destinations": [
    {"type": "filesystem", "path": "/tmp/test-output.json", "format": "json", "create_dirs": true}
]}))]
pub struct TestDestinationsRequest {
    /// Destination specs, as in `output_destinations`.
    #[schema(value_type = Vec<Object>)]
    pub destinations: Vec<Value>,
}

/// One tested destination.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TestDestinationResult {
    /// Its position in the request.
    pub index: usize,
    /// Its `type`, as written (`null` when missing).
    pub destination_type: Option<String>,
    /// Valid and reachable.
    pub success: bool,
    /// Why not (every validation problem, or the reachability failure).
    pub error: Option<String>,
    /// How long validating and checking it took.
    pub estimated_time_ms: u64,
}

/// `POST /api/v1/jobs/test-output-destinations`'s answer: `{"data": [...]}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TestDestinationsResponse {
    /// One result per requested destination, in order.
    pub data: Vec<TestDestinationResult>,
}

/// A configured task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TaskView {
    /// Stable numeric id (`task_id` in submits).
    pub id: i64,
    /// Name (`task_name` in submits).
    pub name: String,
    /// Version label.
    pub version: Option<String>,
    /// Whether the built-in executor runs its jobs (it has a `command`); without one, jobs
    /// wait for an external producer.
    pub has_command: bool,
    /// The command's timeout.
    pub timeout_seconds: Option<f64>,
    /// Default inline destinations for jobs that name none, secrets masked.
    #[schema(value_type = Vec<Object>)]
    pub output_destinations: Vec<Value>,
    /// Default global destination names for jobs that name none.
    pub destinations: Vec<String>,
}

/// A destination key's circuit breaker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CircuitView {
    /// `closed`, `open` or `half_open`.
    #[schema(example = "closed")]
    pub state: String,
    /// Consecutive failures so far.
    pub consecutive_failures: u32,
}

/// A configured global destination.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DestinationView {
    /// Name (`destinations: [name]` in submits).
    pub name: String,
    /// Free text.
    pub description: Option<String>,
    /// The destination type.
    #[serde(rename = "type")]
    pub kind: String,
    /// The destination body, secrets masked.
    #[schema(value_type = Object)]
    pub destination: Value,
    /// The isolation key (null when the destination does not build).
    pub isolation_key: Option<String>,
    /// Its key's circuit breaker (closed until it has failed).
    pub circuit: CircuitView,
}

/// `GET /healthz` and `GET /readyz`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct HealthView {
    /// `ok` or `ready`.
    pub status: String,
}

/// Filters, sort and page of `GET /api/v1/jobs`.
///
/// Two pagination styles: `_start`/`_end` (zero-based, end exclusive, as react-admin and
/// json-server send them) or `page`/`limit` (page from 1, limit 1–1000, default 20); not
/// both. The total is in the body and in the `X-Total-Count` header.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct JobListParams {
    /// `queued`, `running`, `succeeded`, `failed` or `cancelled`.
    pub status: Option<String>,
    /// Only jobs of this task.
    pub task_name: Option<String>,
    /// `low`, `normal`, `high` or `urgent`.
    pub priority: Option<String>,
    /// Only jobs whose `metadata.tags` contains this tag.
    pub tag: Option<String>,
    /// Created at or after (RFC 3339).
    pub created_after: Option<String>,
    /// Created before (RFC 3339).
    pub created_before: Option<String>,
    /// `created` or `updated`; a leading `-` sorts descending (default `-created`,
    /// newest first). Without a `-`, `order` picks the direction (default `asc`).
    pub sort: Option<String>,
    /// `asc` or `desc`, with an unprefixed `sort`.
    pub order: Option<String>,
    /// First row, zero-based (with `_end`).
    pub _start: Option<u64>,
    /// One past the last row (with `_start`).
    pub _end: Option<u64>,
    /// Page number from 1 (with `limit`).
    pub page: Option<u64>,
    /// Rows per page, 1–1000 (default 20).
    pub limit: Option<u64>,
}

/// Filters and page of `GET /api/v1/deliveries` (same pagination as jobs).
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeliveryListParams {
    /// `pending`, `in_flight`, `scheduled`, `delivered` or `dead`.
    pub state: Option<String>,
    /// Only this destination type.
    pub destination_type: Option<String>,
    /// Only this job (numeric id).
    pub job_id: Option<i64>,
    /// Created at or after (RFC 3339).
    pub created_after: Option<String>,
    /// Created before (RFC 3339).
    pub created_before: Option<String>,
    /// First row, zero-based (with `_end`).
    pub _start: Option<u64>,
    /// One past the last row (with `_start`).
    pub _end: Option<u64>,
    /// Page number from 1.
    pub page: Option<u64>,
    /// Rows per page, 1–1000 (default 20).
    pub limit: Option<u64>,
}

/// Page of the small configuration listings (tasks, destinations).
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageParams {
    /// First row, zero-based (with `_end`).
    pub _start: Option<u64>,
    /// One past the last row (with `_start`).
    pub _end: Option<u64>,
    /// Page number from 1.
    pub page: Option<u64>,
    /// Rows per page, 1–1000 (default 20).
    pub limit: Option<u64>,
}

/// `GET /api/v1/jobs/{id}/output`'s query.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct OutputParams {
    /// The version to fetch (default: the latest).
    pub version: Option<u32>,
}

/// `DELETE /api/v1/jobs/{id}`'s query.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeleteParams {
    /// Also delete a running job (its process, if this node runs it, is killed).
    pub force: Option<bool>,
}
