//! What a command task runs: [`CommandSpec`], read from the task's stored definition.
//!
//! The definition is the task's config as JSON (`TaskRecord.definition`). The executor reads
//! these keys and ignores the rest (`name`, `version`, `output_destinations`,
//! `destinations`, ...), which belong to other parts of the server:
//!
//! ```json
//! {
//!   "command": "/usr/bin/python3",      // required to be executable; a non-empty string
//!   "args": ["script.py", "--fast"],    // optional; strings (numbers and booleans are
//!                                       // taken as written)
//!   "env": {"K": "V"},                  // optional; added to the server's environment
//!   "working_dir": "/srv/jobs",         // optional; default: the server's directory
//!   "timeout_seconds": 30               // optional; seconds, or "500ms", "5m", "1h"...;
//!                                       // absent or null: no timeout
//! }
//! ```
//!
//! The config loader validates tasks at start; this parser re-checks because the store may
//! hold a definition written by another version of the server, and a job must fail with a
//! clear message rather than run something half-understood.

use std::path::PathBuf;
use std::time::Duration;

use outflow_core::config::units::{Unit, duration_from_value};
use serde_json::Value;

/// How to run a command task's process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandSpec {
    /// The program: a path, or a name looked up in `PATH`.
    pub command: String,
    /// Its arguments.
    pub args: Vec<String>,
    /// Variables added to the inherited environment, in definition order.
    pub env: Vec<(String, String)>,
    /// The directory it runs in; the server's own when `None`.
    pub working_dir: Option<PathBuf>,
    /// How long it may run before its process group is killed; unlimited when `None`.
    pub timeout: Option<Duration>,
}

impl CommandSpec {
    /// Reads the command of task `task` from its definition. `Ok(None)` when the task has no
    /// command (an external producer reports its output). Errors list every problem, each
    /// naming its key as `tasks.<name>.<key>`.
    pub fn from_definition(task: &str, definition: &Value) -> Result<Option<CommandSpec>, String> {
        let Some(def) = definition.as_object() else {
            return Err(format!(
                "task '{task}': the stored definition must be an object, got {}",
                type_name(definition)
            ));
        };
        let path = |key: &str| format!("tasks.{task}.{key}");
        let mut errors = Vec::new();

        let command = match def.get("command") {
            None | Some(Value::Null) => return Ok(None),
            Some(Value::String(s)) if !s.trim().is_empty() => s.clone(),
            Some(Value::String(_)) => {
                errors
                    .push(format!("{}: must be a non-empty program path or name", path("command")));
                String::new()
            }
            Some(other) => {
                errors.push(format!(
                    "{}: must be a string (the program to run), got {}",
                    path("command"),
                    type_name(other)
                ));
                String::new()
            }
        };

        let mut args = Vec::new();
        match def.get("args") {
            None | Some(Value::Null) => {}
            Some(Value::Array(items)) => {
                for (i, item) in items.iter().enumerate() {
                    match scalar(item) {
                        Some(s) => args.push(s),
                        None => errors.push(format!(
                            "{}[{i}]: must be a string, got {}",
                            path("args"),
                            type_name(item)
                        )),
                    }
                }
            }
            Some(other) => errors.push(format!(
                "{}: must be a list of strings, got {}",
                path("args"),
                type_name(other)
            )),
        }

        let mut env = Vec::new();
        match def.get("env") {
            None | Some(Value::Null) => {}
            Some(Value::Object(vars)) => {
                for (key, value) in vars {
                    if key.is_empty() || key.contains('=') || key.contains('\0') {
                        errors.push(format!(
                            "{}: variable name '{key}' is invalid (must be non-empty, without \
                             '=' or NUL)",
                            path("env")
                        ));
                        continue;
                    }
                    match scalar(value) {
                        Some(s) if s.contains('\0') => errors
                            .push(format!("{}.{key}: must not contain a NUL byte", path("env"))),
                        Some(s) => env.push((key.clone(), s)),
                        None => errors.push(format!(
                            "{}.{key}: must be a string, got {}",
                            path("env"),
                            type_name(value)
                        )),
                    }
                }
            }
            Some(other) => errors.push(format!(
                "{}: must be a map of variable names to strings, got {}",
                path("env"),
                type_name(other)
            )),
        }

        let working_dir = match def.get("working_dir") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if !s.is_empty() => Some(PathBuf::from(s)),
            Some(other) => {
                errors.push(format!(
                    "{}: must be a non-empty directory path, got {}",
                    path("working_dir"),
                    if other.is_string() { "an empty string" } else { type_name(other) }
                ));
                None
            }
        };

        let timeout = match def.get("timeout_seconds") {
            None | Some(Value::Null) => None,
            Some(v) => match duration_from_value(v, Unit::Seconds) {
                Ok(d) if d.is_zero() => {
                    errors.push(format!(
                        "{}: must be greater than 0 (leave it out for no timeout)",
                        path("timeout_seconds")
                    ));
                    None
                }
                Ok(d) => Some(d),
                Err(e) => {
                    errors.push(format!("{}: {e}", path("timeout_seconds")));
                    None
                }
            },
        };

        if errors.is_empty() {
            Ok(Some(CommandSpec { command, args, env, working_dir, timeout }))
        } else {
            Err(errors.join("; "))
        }
    }
}

/// A string as written; numbers and booleans (YAML `- 1`, `DEBUG: true`) as their text.
fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a map",
    }
}

/// `30s`, `1.5s`, `250ms`: a timeout as people write it, for messages.
pub(crate) fn human_duration(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else if d < Duration::from_secs(1) && d.subsec_nanos().is_multiple_of(1_000_000) {
        format!("{}ms", d.as_millis())
    } else {
        let s = format!("{:.3}", d.as_secs_f64());
        format!("{}s", s.trim_end_matches('0').trim_end_matches('.'))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn full_definition() {
        let def = json!({
            "name": "report", "version": "1.0", "command": "/usr/bin/python3",
            "args": ["script.py", 2, true], "env": {"K": "V", "N": 1},
            "working_dir": "/tmp", "timeout_seconds": 30,
            "output_destinations": [], "destinations": ["archive"]
        });
        let spec = CommandSpec::from_definition("report", &def).unwrap().unwrap();
        assert_eq!(
            spec,
            CommandSpec {
                command: "/usr/bin/python3".into(),
                args: vec!["script.py".into(), "2".into(), "true".into()],
                env: vec![("K".into(), "V".into()), ("N".into(), "1".into())],
                working_dir: Some(PathBuf::from("/tmp")),
                timeout: Some(Duration::from_secs(30)),
            }
        );
    }

    #[test]
    fn no_command_means_external_producer() {
        assert_eq!(CommandSpec::from_definition("t", &json!({"name": "t"})), Ok(None));
        assert_eq!(CommandSpec::from_definition("t", &json!({"command": null})), Ok(None));
    }

    #[test]
    fn timeout_forms() {
        let t = |v: Value| {
            CommandSpec::from_definition("t", &json!({"command": "x", "timeout_seconds": v}))
                .map(|s| s.unwrap().timeout)
        };
        assert_eq!(t(json!(1.5)), Ok(Some(Duration::from_millis(1500))));
        assert_eq!(t(json!("500ms")), Ok(Some(Duration::from_millis(500))));
        assert_eq!(t(Value::Null), Ok(None));
        assert_eq!(
            t(json!(0)),
            Err("tasks.t.timeout_seconds: must be greater than 0 (leave it out for no timeout)"
                .into())
        );
    }

    #[test]
    fn every_error_is_reported_with_its_path() {
        let def = json!({
            "command": 5, "args": ["ok", {"a": 1}], "env": {"A": [1]},
            "working_dir": "", "timeout_seconds": "soon"
        });
        let err = CommandSpec::from_definition("t", &def).unwrap_err();
        assert_eq!(
            err,
            "tasks.t.command: must be a string (the program to run), got a number; \
             tasks.t.args[1]: must be a string, got a map; \
             tasks.t.env.A: must be a string, got a list; \
             tasks.t.working_dir: must be a non-empty directory path, got an empty string; \
             tasks.t.timeout_seconds: must be a duration such as 30, \"500ms\", \"5s\", \
             \"1.5m\", \"1h\" or \"1d\" (units ms, s, m, h, d; a bare number is seconds), \
             got \"soon\""
        );
        assert_eq!(
            CommandSpec::from_definition("t", &json!(["x"])).unwrap_err(),
            "task 't': the stored definition must be an object, got a list"
        );
    }

    #[test]
    fn durations_for_messages() {
        assert_eq!(human_duration(Duration::from_secs(30)), "30s");
        assert_eq!(human_duration(Duration::from_millis(250)), "250ms");
        assert_eq!(human_duration(Duration::from_millis(1500)), "1.5s");
    }
}
