//! Deliveries: one output version × one destination, and their states.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

/// Where a delivery is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    /// Due now.
    Pending,
    /// Claimed by a worker (under a lease that expires).
    InFlight,
    /// Waiting for a retry at `next_attempt_at`.
    Scheduled,
    /// Done.
    Delivered,
    /// Exhausted or permanently failed: in the dead-letter list.
    Dead,
}

impl DeliveryState {
    /// Every state.
    pub const ALL: [DeliveryState; 5] = [
        DeliveryState::Pending,
        DeliveryState::InFlight,
        DeliveryState::Scheduled,
        DeliveryState::Delivered,
        DeliveryState::Dead,
    ];

    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Pending => "pending",
            DeliveryState::InFlight => "in_flight",
            DeliveryState::Scheduled => "scheduled",
            DeliveryState::Delivered => "delivered",
            DeliveryState::Dead => "dead",
        }
    }

    /// Parses the snake_case name.
    pub fn parse(s: &str) -> Option<DeliveryState> {
        DeliveryState::ALL.into_iter().find(|st| st.as_str().eq_ignore_ascii_case(s))
    }
}

/// A delivery as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Delivery {
    /// Stable id (`dlv_<uuidv7>`): the webhook `webhook-id`, identical on every retry.
    pub id: String,
    /// The job.
    pub job_id: i64,
    /// The job's UUID.
    pub job_uuid: Uuid,
    /// Which output version it delivers.
    pub output_version: u32,
    /// The global destination's name, or `output_destinations[i]` for inline ones.
    pub destination_name: String,
    /// The destination `type`.
    pub destination_type: String,
    /// The destination spec as configured (JSON, with secrets; mask before showing).
    pub destination: Value,
    /// The isolation key (rendered host, file root...): concurrency limits and the circuit
    /// breaker are per key.
    pub destination_key: String,
    /// Current state.
    pub state: DeliveryState,
    /// Attempts made so far.
    pub attempts: u32,
    /// When the next attempt is due (pending/scheduled).
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// The last error, when the last attempt failed.
    pub last_error: Option<String>,
    /// The last status code, when there was one.
    pub last_status_code: Option<u16>,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
    /// When it was delivered.
    pub delivered_at: Option<DateTime<Utc>>,
}
