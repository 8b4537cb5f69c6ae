//! Jobs and their stored outputs, as the store keeps them and the API shows them.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::context::Priority;

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobStatus {
    /// Accepted, waiting for the executor or an external producer.
    Queued,
    /// Being executed.
    Running,
    /// Finished well.
    Succeeded,
    /// Finished badly (non-zero exit, timeout, producer-reported failure).
    Failed,
    /// Stopped on request.
    Cancelled,
}

impl JobStatus {
    /// Every status, for metrics and validation messages.
    pub const ALL: [JobStatus; 5] = [
        JobStatus::Queued,
        JobStatus::Running,
        JobStatus::Succeeded,
        JobStatus::Failed,
        JobStatus::Cancelled,
    ];

    /// The lowercase name (`queued`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::Running => "running",
            JobStatus::Succeeded => "succeeded",
            JobStatus::Failed => "failed",
            JobStatus::Cancelled => "cancelled",
        }
    }

    /// Parses a name in any case (`Running`, `running`).
    pub fn parse(s: &str) -> Option<JobStatus> {
        JobStatus::ALL.into_iter().find(|st| st.as_str().eq_ignore_ascii_case(s))
    }

    /// Succeeded, failed or cancelled: nothing more will happen to the job.
    pub fn is_terminal(self) -> bool {
        matches!(self, JobStatus::Succeeded | JobStatus::Failed | JobStatus::Cancelled)
    }

    /// Whether a producer may move a job from `self` to `next`. Re-reporting `running`
    /// (progress updates) is allowed; nothing leaves a terminal state.
    pub fn can_become(self, next: JobStatus) -> bool {
        use JobStatus::*;
        matches!((self, next), (Queued | Running, Running | Succeeded | Failed | Cancelled))
    }
}

/// What kind of bytes an output holds; decided by the `Content-Type` it was stored with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputKind {
    /// A JSON document.
    Json,
    /// UTF-8 text.
    Text,
    /// Anything else.
    Binary,
}

impl OutputKind {
    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            OutputKind::Json => "json",
            OutputKind::Text => "text",
            OutputKind::Binary => "binary",
        }
    }

    /// Parses the lowercase name.
    pub fn parse(s: &str) -> Option<OutputKind> {
        match s {
            "json" => Some(OutputKind::Json),
            "text" => Some(OutputKind::Text),
            "binary" => Some(OutputKind::Binary),
            _ => None,
        }
    }
}

/// A job as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    /// Numeric id (`job_id` in templates and the API).
    pub id: i64,
    /// UUIDv7 (`job_uuid`).
    pub uuid: Uuid,
    /// The client's own id, when it gave one; submitting it again returns this job.
    pub client_job_id: Option<String>,
    /// The task, when the job names one.
    pub task_id: Option<i64>,
    /// The task's name.
    pub task_name: Option<String>,
    /// The task's version.
    pub task_version: Option<String>,
    /// Scheduling priority.
    pub priority: Priority,
    /// Current status.
    pub status: JobStatus,
    /// 0–100, when the producer reports it.
    pub progress: Option<u8>,
    /// Why it failed, when it did.
    pub error: Option<String>,
    /// What the job was asked to do (stdin of a command task).
    pub input_data: Value,
    /// `title`, `description`, `tags` and free keys.
    pub metadata: Map<String, Value>,
    /// Inline destinations as submitted (secrets are masked by the API, not here).
    pub output_destinations: Vec<Value>,
    /// Names of global destinations the job also delivers to.
    pub destinations: Vec<String>,
    /// Whether the built-in executor runs it (its task has a command).
    pub executable: bool,
    /// When it was accepted.
    pub queued_at: DateTime<Utc>,
    /// When it started running.
    pub started_at: Option<DateTime<Utc>>,
    /// When it reached a terminal status.
    pub finished_at: Option<DateTime<Utc>>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
    /// The latest output version, when there is one.
    pub output_version: Option<u32>,
    /// The end of the command's stderr (capped), for executed jobs.
    pub log: Option<String>,
}

impl Job {
    /// Milliseconds from start (or queueing) to finish, when finished.
    pub fn duration_ms(&self) -> u64 {
        let start = self.started_at.unwrap_or(self.queued_at);
        self.finished_at.map(|end| (end - start).num_milliseconds().max(0) as u64).unwrap_or(0)
    }
}

/// A stored output version's description (the bytes are fetched separately).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutputMeta {
    /// The job.
    pub job_id: i64,
    /// 1, 2, ...
    pub version: u32,
    /// json, text or binary.
    pub kind: OutputKind,
    /// The `Content-Type` it was stored with.
    pub content_type: String,
    /// Size in bytes.
    pub size: u64,
    /// Hex SHA-256 of the bytes.
    pub sha256: String,
    /// When it was stored.
    pub created_at: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transitions() {
        use JobStatus::*;
        assert!(Queued.can_become(Running));
        assert!(Running.can_become(Running));
        assert!(Running.can_become(Succeeded));
        assert!(!Succeeded.can_become(Running));
        assert!(!Cancelled.can_become(Succeeded));
        assert!(!Failed.can_become(Failed));
    }

    #[test]
    fn status_names() {
        assert_eq!(JobStatus::parse("Running"), Some(JobStatus::Running));
        assert_eq!(JobStatus::parse("nope"), None);
        assert_eq!(serde_json::to_string(&JobStatus::Cancelled).unwrap(), "\"cancelled\"");
    }
}
