//! Mapping between rows and domain types: timestamps as unix milliseconds, JSON as text,
//! enums by name (priorities as 0–3 so they sort).

use chrono::{DateTime, Utc};
use outflow_core::attempt::{AttemptRecord, FailureClass};
use outflow_core::context::Priority;
use outflow_core::delivery::{Delivery, DeliveryState};
use outflow_core::job::{Job, JobStatus, OutputKind, OutputMeta};
use rusqlite::Row;
use rusqlite::types::Type;
use serde_json::Value;
use uuid::Uuid;

use crate::{StoreError, StoreResult};

/// Now, as stored.
pub(super) fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

/// A timestamp as stored.
pub(super) fn to_ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

pub(super) fn from_ms(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

/// The stored number of a priority: higher runs first.
pub(super) fn priority_rank(p: Priority) -> i64 {
    match p {
        Priority::Low => 0,
        Priority::Normal => 1,
        Priority::High => 2,
        Priority::Urgent => 3,
    }
}

fn priority_from_rank(n: i64) -> Priority {
    match n {
        i64::MIN..=0 => Priority::Low,
        1 => Priority::Normal,
        2 => Priority::High,
        _ => Priority::Urgent,
    }
}

/// JSON for a text column.
pub(super) fn to_json<T: serde::Serialize>(v: &T) -> StoreResult<String> {
    serde_json::to_string(v).map_err(|e| StoreError::Backend(format!("cannot encode JSON: {e}")))
}

fn bad(idx: usize, ty: Type, msg: String) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(idx, ty, msg.into())
}

fn json_col<T: serde::de::DeserializeOwned>(row: &Row, idx: usize) -> rusqlite::Result<T> {
    let text: String = row.get(idx)?;
    serde_json::from_str(&text).map_err(|e| bad(idx, Type::Text, format!("bad JSON: {e}")))
}

fn ts(row: &Row, idx: usize) -> rusqlite::Result<DateTime<Utc>> {
    Ok(from_ms(row.get(idx)?))
}

fn opt_ts(row: &Row, idx: usize) -> rusqlite::Result<Option<DateTime<Utc>>> {
    Ok(row.get::<_, Option<i64>>(idx)?.map(from_ms))
}

fn uuid_col(row: &Row, idx: usize) -> rusqlite::Result<Uuid> {
    let text: String = row.get(idx)?;
    Uuid::parse_str(&text).map_err(|e| bad(idx, Type::Text, format!("bad UUID {text:?}: {e}")))
}

/// The job columns [`job_from_row`] reads, for `FROM jobs j`.
pub(super) const JOB_COLS: &str = "j.id, j.uuid, j.client_job_id, j.task_id, j.task_name, \
     j.task_version, j.priority, j.status, j.progress, j.error, j.input_data, j.metadata, \
     j.output_destinations, j.destinations, j.executable, j.queued_at, j.started_at, \
     j.finished_at, j.updated_at, j.output_version, j.log";

/// A job from [`JOB_COLS`].
pub(super) fn job_from_row(row: &Row) -> rusqlite::Result<Job> {
    job_at(row, 0)
}

/// A job from [`JOB_COLS`] starting at column `b`.
pub(super) fn job_at(row: &Row, b: usize) -> rusqlite::Result<Job> {
    let status: String = row.get(b + 7)?;
    Ok(Job {
        id: row.get(b)?,
        uuid: uuid_col(row, b + 1)?,
        client_job_id: row.get(b + 2)?,
        task_id: row.get(b + 3)?,
        task_name: row.get(b + 4)?,
        task_version: row.get(b + 5)?,
        priority: priority_from_rank(row.get(b + 6)?),
        status: JobStatus::parse(&status)
            .ok_or_else(|| bad(b + 7, Type::Text, format!("unknown job status {status:?}")))?,
        progress: row.get::<_, Option<i64>>(b + 8)?.map(|p| p.clamp(0, 100) as u8),
        error: row.get(b + 9)?,
        input_data: json_col(row, b + 10)?,
        metadata: json_col(row, b + 11)?,
        output_destinations: json_col(row, b + 12)?,
        destinations: json_col(row, b + 13)?,
        executable: row.get(b + 14)?,
        queued_at: ts(row, b + 15)?,
        started_at: opt_ts(row, b + 16)?,
        finished_at: opt_ts(row, b + 17)?,
        updated_at: ts(row, b + 18)?,
        output_version: row.get(b + 19)?,
        log: row.get(b + 20)?,
    })
}

/// The delivery columns [`delivery_from_row`] reads, for
/// `FROM deliveries d JOIN jobs j ON j.id = d.job_id`.
pub(super) const DELIVERY_COLS: &str = "d.id, d.job_id, j.uuid, d.output_version, \
     d.destination_name, d.destination_type, d.destination, d.destination_key, d.state, \
     d.attempts, d.next_attempt_at, d.last_error, d.last_status_code, d.created_at, \
     d.updated_at, d.delivered_at";

/// A delivery from [`DELIVERY_COLS`].
pub(super) fn delivery_from_row(row: &Row) -> rusqlite::Result<Delivery> {
    let state: String = row.get(8)?;
    Ok(Delivery {
        id: row.get(0)?,
        job_id: row.get(1)?,
        job_uuid: uuid_col(row, 2)?,
        output_version: row.get(3)?,
        destination_name: row.get(4)?,
        destination_type: row.get(5)?,
        destination: json_col::<Value>(row, 6)?,
        destination_key: row.get(7)?,
        state: DeliveryState::parse(&state)
            .ok_or_else(|| bad(8, Type::Text, format!("unknown delivery state {state:?}")))?,
        attempts: row.get(9)?,
        next_attempt_at: opt_ts(row, 10)?,
        last_error: row.get(11)?,
        last_status_code: row.get(12)?,
        created_at: ts(row, 13)?,
        updated_at: ts(row, 14)?,
        delivered_at: opt_ts(row, 15)?,
    })
}

/// The attempt columns [`attempt_from_row`] reads.
pub(super) const ATTEMPT_COLS: &str = "number, started_at, duration_ms, status_code, error, \
     failure_class, response_excerpt, next_retry_in_ms";

/// An attempt from [`ATTEMPT_COLS`].
pub(super) fn attempt_from_row(row: &Row) -> rusqlite::Result<AttemptRecord> {
    let class: Option<String> = row.get(5)?;
    let failure_class = match class.as_deref() {
        None => None,
        Some("retryable") => Some(FailureClass::Retryable),
        Some("permanent") => Some(FailureClass::Permanent),
        Some(other) => {
            return Err(bad(5, Type::Text, format!("unknown failure class {other:?}")));
        }
    };
    Ok(AttemptRecord {
        number: row.get(0)?,
        started_at: ts(row, 1)?,
        duration_ms: row.get::<_, i64>(2)?.max(0) as u64,
        status_code: row.get(3)?,
        error: row.get(4)?,
        failure_class,
        response_excerpt: row.get(6)?,
        next_retry_in: row
            .get::<_, Option<i64>>(7)?
            .map(|ms| std::time::Duration::from_millis(ms.max(0) as u64)),
    })
}

/// The stored name of a failure class.
pub(super) fn failure_class_name(c: FailureClass) -> &'static str {
    match c {
        FailureClass::Retryable => "retryable",
        FailureClass::Permanent => "permanent",
    }
}

/// The output columns [`output_from_row`] reads (without the body), for `FROM outputs o`.
pub(super) const OUTPUT_COLS: &str =
    "o.job_id, o.version, o.kind, o.content_type, o.size, o.sha256, o.created_at";

/// An output description from [`OUTPUT_COLS`].
pub(super) fn output_from_row(row: &Row) -> rusqlite::Result<OutputMeta> {
    output_at(row, 0)
}

/// An output description from [`OUTPUT_COLS`] starting at column `b`.
pub(super) fn output_at(row: &Row, b: usize) -> rusqlite::Result<OutputMeta> {
    let kind: String = row.get(b + 2)?;
    Ok(OutputMeta {
        job_id: row.get(b)?,
        version: row.get(b + 1)?,
        kind: OutputKind::parse(&kind)
            .ok_or_else(|| bad(b + 2, Type::Text, format!("unknown output kind {kind:?}")))?,
        content_type: row.get(b + 3)?,
        size: row.get::<_, i64>(b + 4)?.max(0) as u64,
        sha256: row.get(b + 5)?,
        created_at: ts(row, b + 6)?,
    })
}
