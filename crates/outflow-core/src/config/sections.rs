//! Decoders of the server-side sections: `server`, `storage`, `executor`, `tasks`, and the
//! delivery limits under `output`. Each is a function of one mapping, registered in
//! `load::SECTIONS`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::Value;

use super::model::{Config, DeliveryLimits, TaskConfig};
use super::reader::{FieldReader, type_name};
use super::{ConfigError, DestinationCatalog, DestinationSpec};

pub(super) fn decode_server(r: &mut FieldReader<'_>, config: &mut Config) {
    let server = &mut config.server;
    if let Some(listen) = r.string("listen") {
        match listen.parse() {
            Ok(addr) => server.listen = addr,
            Err(_) => r.error(
                "listen",
                format!("must be an address:port such as \"127.0.0.1:8080\" or \"0.0.0.0:8080\", got '{listen}'"),
            ),
        }
    }
    match r.size("body_limit") {
        Some(0) => r.error("body_limit", "must be a positive size such as \"32MiB\""),
        Some(n) => server.body_limit = n,
        None => {}
    }
    if let Some(d) = r.duration_secs("shutdown_grace") {
        server.shutdown_grace = d;
    }
    if let Some(b) = r.bool("allow_unauthenticated") {
        server.allow_unauthenticated = b;
    }
}

pub(super) fn decode_storage(r: &mut FieldReader<'_>, config: &mut Config) {
    match r.string("path") {
        Some(p) if p.trim().is_empty() => {
            r.error("path", "must not be empty (a directory, e.g. ./outflow-data)")
        }
        Some(p) => config.storage.path = PathBuf::from(p),
        None => {}
    }
}

pub(super) fn decode_executor(r: &mut FieldReader<'_>, config: &mut Config) {
    let ex = &mut config.executor;
    match r.optional::<usize>("max_concurrent_jobs", "a positive integer") {
        Some(0) => r.error("max_concurrent_jobs", "must be a positive integer, got 0"),
        Some(n) => ex.max_concurrent_jobs = n,
        None => {}
    }
    if let Some(n) = r.size("stderr_limit") {
        ex.stderr_limit = n;
    }
    match r.size("max_output_bytes") {
        Some(0) => r.error("max_output_bytes", "must be a positive size such as \"32MiB\""),
        Some(n) => ex.max_output_bytes = n,
        None => {}
    }
}

/// `per_destination_concurrency`, `delivery_lease` and `circuit_breaker` inside `output:`.
/// Returns whether `delivery_lease` was given explicitly.
pub(super) fn decode_delivery_limits(r: &mut FieldReader<'_>, limits: &mut DeliveryLimits) -> bool {
    match r.optional::<usize>("per_destination_concurrency", "a positive integer") {
        Some(0) => r.error("per_destination_concurrency", "must be a positive integer, got 0"),
        Some(n) => limits.per_destination_concurrency = n,
        None => {}
    }
    let lease = r.duration_secs("delivery_lease");
    match lease {
        Some(d) if d < std::time::Duration::from_secs(1) => {
            r.error("delivery_lease", "must be at least 1s (e.g. \"60s\")")
        }
        Some(d) => limits.lease = d,
        None => {}
    }
    if let Some(mut cb) = r.child("circuit_breaker") {
        match cb.optional::<u32>("failure_threshold", "a positive integer") {
            Some(0) => cb.error("failure_threshold", "must be a positive integer, got 0"),
            Some(n) => limits.breaker_failure_threshold = n,
            None => {}
        }
        if let Some(d) = cb.duration_secs("cool_down") {
            limits.breaker_cool_down = d;
        }
        let errors = cb.finish();
        r.extend(errors);
    }
    lease.is_some()
}

const TASK_NAME_EXPECTED: &str = "a unique task name of letters, digits, '_', '-' and '.'";

pub(super) fn decode_tasks(value: &Value, path: &str, config: &mut Config) -> Vec<ConfigError> {
    let Value::Array(items) = value else {
        return vec![ConfigError::new(
            path,
            format!("must be a list of tasks (each with a 'name'), got {}", type_name(value)),
        )];
    };
    let mut errors = Vec::new();
    for (index, item) in items.iter().enumerate() {
        let item_path = format!("{path}[{index}]");
        let Value::Object(map) = item else {
            errors.push(ConfigError::new(
                item_path,
                format!("must be a mapping with at least a 'name', got {}", type_name(item)),
            ));
            continue;
        };
        let mut r = FieldReader::new(map, item_path);
        let name = r.required_string("name", TASK_NAME_EXPECTED);
        if let Some(n) = &name {
            if n.is_empty() || !n.chars().all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c)) {
                r.error("name", format!("must be {TASK_NAME_EXPECTED}, got '{n}'"));
            } else if let Some(first) = config.tasks.iter().find(|t| &t.name == n) {
                r.error(
                    "name",
                    format!("duplicate task name '{n}': already used by {path}[{}]", first.index),
                );
            }
        }
        let version = match r.raw("version") {
            Some(Value::String(s)) => Some(s.clone()),
            Some(Value::Number(n)) => Some(n.to_string()),
            Some(other) => {
                let t = type_name(other);
                r.error("version", format!("must be a string such as \"1.2.0\", got {t}"));
                None
            }
            None => None,
        };
        let command = r.string("command");
        if command.as_deref() == Some("") {
            r.error("command", "must not be empty (a program path or name, e.g. /usr/bin/python3)");
        }
        let args: Vec<String> = r.optional("args", "a list of strings").unwrap_or_default();
        let env: BTreeMap<String, String> =
            r.optional("env", "a mapping of variable names to strings").unwrap_or_default();
        let working_dir = r.string("working_dir").map(PathBuf::from);
        let timeout = r.duration_secs("timeout_seconds");
        if timeout.is_some_and(|d| d.is_zero()) {
            r.error("timeout_seconds", "must be positive (seconds, or a duration such as \"5m\")");
        }
        if command.is_none() {
            for key in ["args", "env", "working_dir", "timeout_seconds"] {
                if map.contains_key(key) {
                    r.error(key, "only applies to tasks with a 'command'");
                }
            }
        }
        let output_destinations = match r.raw("output_destinations") {
            None => Vec::new(),
            Some(Value::Array(list)) => list.clone(),
            Some(other) => {
                let t = type_name(other);
                r.error("output_destinations", format!("must be a list of destinations, got {t}"));
                Vec::new()
            }
        };
        let destinations: Vec<String> =
            r.optional("destinations", "a list of global destination names").unwrap_or_default();
        let task_errors = r.finish();
        let ok = task_errors.is_empty();
        errors.extend(task_errors);
        if let (true, Some(name)) = (ok, name) {
            config.tasks.push(TaskConfig {
                name,
                version,
                command,
                args,
                env,
                working_dir,
                timeout,
                output_destinations,
                destinations,
                index,
            });
        }
    }
    errors
}

/// Every task's default destinations: inline bodies through `catalog`, names against the
/// configured global destinations.
pub(super) fn validate_task_destinations(
    config: &Config,
    catalog: &dyn DestinationCatalog,
) -> Vec<ConfigError> {
    let mut errors = Vec::new();
    let globals: Vec<&str> =
        config.output.global_destinations.iter().map(|g| g.name.as_str()).collect();
    for task in &config.tasks {
        for (i, spec) in task.output_destinations.iter().enumerate() {
            let path = format!("tasks[{}].output_destinations[{i}]", task.index);
            match DestinationSpec::from_value(spec, &path) {
                Ok(spec) => errors.extend(catalog.validate(&spec, &path)),
                Err(e) => errors.push(e),
            }
        }
        for (i, name) in task.destinations.iter().enumerate() {
            if !globals.contains(&name.as_str()) {
                let known = if globals.is_empty() {
                    "output.global_destinations is empty".to_string()
                } else {
                    format!("configured: {}", globals.join(", "))
                };
                errors.push(ConfigError::new(
                    format!("tasks[{}].destinations[{i}]", task.index),
                    format!("unknown global destination '{name}'; {known}"),
                ));
            }
        }
    }
    errors
}
