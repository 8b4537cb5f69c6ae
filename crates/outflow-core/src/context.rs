//! The job context a delivery is rendered from: the template variables of seed 000.

use std::borrow::Cow;
use std::collections::BTreeMap;

use chrono::{DateTime, Datelike, SecondsFormat, Timelike, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::output::Output;
use crate::template::{TemplateError, VarSource};

/// Job priority: `low`, `normal` (default), `high`, `urgent`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    /// Background work.
    Low,
    /// The default.
    #[default]
    Normal,
    /// Ahead of normal work.
    High,
    /// Ahead of everything.
    Urgent,
}

impl Priority {
    /// Parses a priority in any case (`normal`, `NORMAL`, `Normal`).
    pub fn parse(s: &str) -> Option<Priority> {
        match s.to_ascii_lowercase().as_str() {
            "low" => Some(Priority::Low),
            "normal" => Some(Priority::Normal),
            "high" => Some(Priority::High),
            "urgent" => Some(Priority::Urgent),
            _ => None,
        }
    }

    /// The lowercase name used in templates and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Low => "low",
            Priority::Normal => "normal",
            Priority::High => "high",
            Priority::Urgent => "urgent",
        }
    }
}

/// Everything known about the job whose output is being delivered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobContext {
    /// `{{job_uuid}}`: the job's UUIDv7.
    pub job_uuid: Uuid,
    /// `{{job_id}}`: the store's numeric id, when the job lives in a store.
    pub job_id: Option<i64>,
    /// `{{task_name}}`.
    pub task_name: Option<String>,
    /// `{{task_version}}`.
    pub task_version: Option<String>,
    /// `{{task_id}}`.
    pub task_id: Option<i64>,
    /// `{{execution_id}}`.
    pub execution_id: Option<i64>,
    /// `{{priority}}`.
    pub priority: Priority,
    /// `{{schedule_id}}`, for jobs started by a schedule.
    pub schedule_id: Option<i64>,
    /// `{{environment}}`: from `ENVIRONMENT`, `development` when unset.
    pub environment: String,
    /// When execution completed; the source of `{{timestamp}}`, `{{date}}`, `{{year}}`...
    pub completed_at: DateTime<Utc>,
    /// `{{duration_ms}}`.
    pub duration_ms: u64,
    /// `{{status}}`: `completed` or `failed` (seed 000), or the job status.
    pub status: String,
    /// Job metadata, reachable as `{{meta.<key>}}`.
    pub metadata: Map<String, Value>,
    /// User variables (`--var key=value`), reachable by their bare name.
    pub vars: BTreeMap<String, String>,
}

impl JobContext {
    /// A context for a new job completing now, with a fresh UUIDv7 and the environment taken
    /// from `ENVIRONMENT`.
    pub fn new_now() -> JobContext {
        JobContext {
            job_uuid: Uuid::now_v7(),
            job_id: None,
            task_name: None,
            task_version: None,
            task_id: None,
            execution_id: None,
            priority: Priority::Normal,
            schedule_id: None,
            environment: environment_from_env(),
            completed_at: Utc::now(),
            duration_ms: 0,
            status: "completed".to_string(),
            metadata: Map::new(),
            vars: BTreeMap::new(),
        }
    }
}

/// `ENVIRONMENT`, or `development` when it is unset or empty.
pub fn environment_from_env() -> String {
    std::env::var("ENVIRONMENT")
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "development".to_string())
}

/// The names of the built-in template variables, for help texts and "did you mean" hints.
pub const BUILTIN_VARIABLES: &[&str] = &[
    "job_uuid",
    "job_id",
    "task_name",
    "task_version",
    "task_id",
    "execution_id",
    "priority",
    "schedule_id",
    "environment",
    "timestamp",
    "date",
    "time",
    "year",
    "month",
    "day",
    "hour",
    "minute",
    "second",
    "duration_ms",
    "status",
    "output_data",
    "output_size",
    "delivery_id",
];

/// The variables of one delivery: a job, its output and the delivery's stable id.
#[derive(Debug, Clone, Copy)]
pub struct RenderContext<'a> {
    /// The job.
    pub job: &'a JobContext,
    /// Its output.
    pub output: &'a Output,
    /// The delivery's stable id (`{{delivery_id}}`, the webhook `webhook-id`).
    pub delivery_id: &'a str,
}

impl<'a> RenderContext<'a> {
    /// Bundles the parts.
    pub fn new(job: &'a JobContext, output: &'a Output, delivery_id: &'a str) -> Self {
        RenderContext { job, output, delivery_id }
    }

    /// Every variable as a JSON object, plus `output` (the parsed output value) and `meta`,
    /// for Handlebars templates and the default webhook envelope.
    pub fn to_json(&self) -> Value {
        let mut map = Map::new();
        for name in BUILTIN_VARIABLES {
            if *name == "output_data" {
                continue; // `output` carries it structurally; avoid doubling large outputs
            }
            if let Ok(v) = self.var(name) {
                map.insert((*name).to_string(), Value::String(v.into_owned()));
            }
        }
        map.insert("output_data".into(), Value::String(self.output.to_compact_json()));
        map.insert("output".into(), self.output.to_json_value());
        map.insert("meta".into(), Value::Object(self.job.metadata.clone()));
        for (k, v) in &self.job.vars {
            map.entry(k.clone()).or_insert_with(|| Value::String(v.clone()));
        }
        Value::Object(map)
    }
}

fn opt_num(name: &str, v: Option<i64>) -> Result<Cow<'static, str>, TemplateError> {
    v.map(|n| Cow::Owned(n.to_string()))
        .ok_or_else(|| TemplateError::NoValue { name: name.to_string(), hint: String::new() })
}

fn opt_str<'s>(name: &str, v: &'s Option<String>) -> Result<Cow<'s, str>, TemplateError> {
    v.as_deref()
        .map(Cow::Borrowed)
        .ok_or_else(|| TemplateError::NoValue { name: name.to_string(), hint: String::new() })
}

impl VarSource for RenderContext<'_> {
    fn var(&self, name: &str) -> Result<Cow<'_, str>, TemplateError> {
        let job = self.job;
        let at = job.completed_at;
        let two = |n: u32| Cow::Owned(format!("{n:02}"));
        Ok(match name {
            "job_uuid" => Cow::Owned(job.job_uuid.to_string()),
            "job_id" => return opt_num(name, job.job_id),
            "task_name" => return opt_str(name, &job.task_name),
            "task_version" => return opt_str(name, &job.task_version),
            "task_id" => return opt_num(name, job.task_id),
            "execution_id" => return opt_num(name, job.execution_id),
            "priority" => Cow::Borrowed(job.priority.as_str()),
            "schedule_id" => return opt_num(name, job.schedule_id),
            "environment" => Cow::Borrowed(job.environment.as_str()),
            "timestamp" => Cow::Owned(at.to_rfc3339_opts(SecondsFormat::Secs, true)),
            "date" => Cow::Owned(at.format("%Y-%m-%d").to_string()),
            "time" => Cow::Owned(at.format("%H:%M:%S").to_string()),
            "year" => Cow::Owned(format!("{:04}", at.year())),
            "month" => two(at.month()),
            "day" => two(at.day()),
            "hour" => two(at.hour()),
            "minute" => two(at.minute()),
            "second" => two(at.second()),
            "duration_ms" => Cow::Owned(job.duration_ms.to_string()),
            "status" => Cow::Borrowed(job.status.as_str()),
            "output_data" => Cow::Owned(self.output.to_compact_json()),
            "output_size" => Cow::Owned(self.output.size().to_string()),
            "delivery_id" => Cow::Borrowed(self.delivery_id),
            _ => {
                if let Some(key) = name.strip_prefix("meta.") {
                    return match job.metadata.get(key) {
                        Some(Value::String(s)) => Ok(Cow::Borrowed(s.as_str())),
                        Some(other) => Ok(Cow::Owned(other.to_string())),
                        None => Err(TemplateError::NotFound(name.to_string())),
                    };
                }
                match job.vars.get(name) {
                    Some(v) => Cow::Borrowed(v.as_str()),
                    None => return Err(TemplateError::NotFound(name.to_string())),
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::template::Template;
    use chrono::TimeZone;
    use serde_json::json;

    fn job() -> JobContext {
        JobContext {
            job_uuid: Uuid::parse_str("0190b6f2-7c5e-7a3b-8c1d-2e3f4a5b6c7d").unwrap(),
            job_id: Some(42),
            task_name: Some("report".into()),
            task_version: Some("1.2.0".into()),
            task_id: Some(7),
            execution_id: Some(99),
            priority: Priority::High,
            schedule_id: None,
            environment: "staging".into(),
            completed_at: Utc.with_ymd_and_hms(2025, 1, 5, 3, 4, 9).unwrap(),
            duration_ms: 1234,
            status: "completed".into(),
            metadata: json!({"owner": "ops", "n": 3}).as_object().unwrap().clone(),
            vars: BTreeMap::from([("webhook_token".to_string(), "tok".to_string())]),
        }
    }

    fn render(src: &str) -> Result<String, TemplateError> {
        let job = job();
        let out = Output::Json(json!({"ok": true}));
        Template::parse(src).unwrap().render(&RenderContext::new(&job, &out, "dlv_1"))
    }

    #[test]
    fn every_builtin_variable_renders() {
        let expected = [
            ("job_uuid", "0190b6f2-7c5e-7a3b-8c1d-2e3f4a5b6c7d"),
            ("job_id", "42"),
            ("task_name", "report"),
            ("task_version", "1.2.0"),
            ("task_id", "7"),
            ("execution_id", "99"),
            ("priority", "high"),
            ("environment", "staging"),
            ("timestamp", "2025-01-05T03:04:09Z"),
            ("date", "2025-01-05"),
            ("time", "03:04:09"),
            ("year", "2025"),
            ("month", "01"),
            ("day", "05"),
            ("hour", "03"),
            ("minute", "04"),
            ("second", "09"),
            ("duration_ms", "1234"),
            ("status", "completed"),
            ("output_data", r#"{"ok":true}"#),
            ("output_size", "11"),
            ("delivery_id", "dlv_1"),
            ("meta.owner", "ops"),
            ("meta.n", "3"),
            ("webhook_token", "tok"),
        ];
        for (name, value) in expected {
            assert_eq!(render(&format!("{{{{{name}}}}}")).unwrap(), value, "{name}");
        }
    }

    #[test]
    fn absent_and_unknown_variables_are_errors_naming_them() {
        assert_eq!(
            render("{{schedule_id}}").unwrap_err().to_string(),
            "Template variable 'schedule_id' has no value for this job"
        );
        assert_eq!(
            render("{{nope}}").unwrap_err().to_string(),
            "Template variable 'nope' not found"
        );
        assert_eq!(
            render("{{meta.nope}}").unwrap_err().to_string(),
            "Template variable 'meta.nope' not found"
        );
    }

    #[test]
    fn to_json_has_output_and_meta() {
        let job = job();
        let out = Output::Json(json!([1, 2]));
        let v = RenderContext::new(&job, &out, "d").to_json();
        assert_eq!(v["output"], json!([1, 2]));
        assert_eq!(v["meta"]["owner"], "ops");
        assert_eq!(v["task_name"], "report");
        assert_eq!(v["webhook_token"], "tok");
    }

    #[test]
    fn priority_parses_any_case() {
        assert_eq!(Priority::parse("URGENT"), Some(Priority::Urgent));
        assert_eq!(Priority::parse("Normal"), Some(Priority::Normal));
        assert_eq!(Priority::parse("x"), None);
    }
}
