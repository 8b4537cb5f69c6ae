//! Fixtures shared by the fuzz targets: one fixed job, so a crash reproduces byte for byte
//! (nothing is read from the clock or the environment).

use std::collections::BTreeMap;

use chrono::{TimeZone, Utc};
use outflow_core::context::{JobContext, Priority};
use serde_json::{Map, Value, json};

/// A job with every optional field set except `schedule_id` (so `{{schedule_id}}` exercises
/// the "no value" path), metadata of several JSON types and two user variables.
pub fn fixed_job() -> JobContext {
    let metadata: Map<String, Value> = json!({
        "owner": "ops",
        "n": 3,
        "nested": {"a": [1, 2, {"b": null}]},
        "flag": true
    })
    .as_object()
    .cloned()
    .unwrap_or_default();
    let mut vars = BTreeMap::new();
    vars.insert("region".to_string(), "eu-west-1".to_string());
    vars.insert("run".to_string(), "a/b c".to_string());
    JobContext {
        job_uuid: uuid::Uuid::from_u128(0x0190b6f2_7c5e_7a3b_8c1d_2e3f4a5b6c7d),
        job_id: Some(42),
        task_name: Some("report".into()),
        task_version: Some("1.2.0".into()),
        task_id: Some(7),
        execution_id: Some(99),
        priority: Priority::High,
        schedule_id: None,
        environment: "staging".into(),
        completed_at: Utc.with_ymd_and_hms(2025, 1, 5, 3, 4, 9).single().expect("valid date"),
        duration_ms: 1234,
        status: "completed".into(),
        metadata,
        vars,
    }
}

/// The delivery id every target renders with.
pub const DELIVERY_ID: &str = "dlv_0190b6f2-7c5e-7a3b-8c1d-2e3f4a5b6c7d";
