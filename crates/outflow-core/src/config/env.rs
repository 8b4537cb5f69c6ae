//! Environment access for config loading: `${VAR}` / `${VAR:-default}` expansion and the
//! `OUTFLOW_*` overrides. Behind a trait so tests pass a map instead of the process env.

use std::collections::HashMap;

use serde_json::{Map, Value};

use super::ConfigError;
use super::reader::join;

/// A source of environment variables.
pub trait EnvSource {
    /// The variable's value, if set.
    fn get(&self, name: &str) -> Option<String>;
}

/// The process environment.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessEnv;

impl EnvSource for ProcessEnv {
    fn get(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

impl EnvSource for HashMap<String, String> {
    fn get(&self, name: &str) -> Option<String> {
        HashMap::get(self, name).cloned()
    }
}

impl EnvSource for HashMap<&str, &str> {
    fn get(&self, name: &str) -> Option<String> {
        HashMap::get(self, name).map(|v| v.to_string())
    }
}

/// `${VAR}` / `${VAR:-default}` expansion of one string. `$${` stands for a literal `${`; any
/// other `$` is kept as written. As in the shell, `:-` uses the default when the variable is
/// unset *or empty*, while a plain `${VAR}` set to the empty string expands to nothing.
///
/// Returns the expanded text, or every problem in it. Problems name variables and byte
/// offsets but never a value (expanded values are often secrets). On error the result is
/// not usable, so no partially expanded text is returned.
pub fn expand(text: &str, env: &dyn EnvSource) -> Result<String, Vec<String>> {
    let mut out = String::with_capacity(text.len());
    let mut problems = Vec::new();
    let mut rest = text;
    while let Some(dollar) = rest.find('$') {
        out.push_str(&rest[..dollar]);
        let after = &rest[dollar..];
        if let Some(escaped) = after.strip_prefix("$${") {
            out.push_str("${");
            rest = escaped;
            continue;
        }
        let Some(body_and_rest) = after.strip_prefix("${") else {
            out.push('$');
            rest = &after[1..];
            continue;
        };
        let offset = text.len() - after.len();
        let Some(close) = body_and_rest.find('}') else {
            problems.push(format!(
                "'${{' at byte {offset} is never closed (write ${{NAME}} or ${{NAME:-default}}, \
                 or $${{ for a literal '${{')"
            ));
            break;
        };
        let body = &body_and_rest[..close];
        rest = &body_and_rest[close + 1..];
        let (name, default) = match body.split_once(":-") {
            Some((name, default)) => (name, Some(default)),
            None => (body, None),
        };
        if default.is_some_and(|d| d.contains("${")) {
            problems.push(format!(
                "nested variable reference in the default at byte {offset}: a default is \
                 literal text and cannot contain '${{'"
            ));
            continue;
        }
        if !is_var_name(name) {
            problems.push(format!(
                "invalid variable reference at byte {offset}: names use letters, digits and \
                 '_' and do not start with a digit (write ${{NAME}} or ${{NAME:-default}}, or \
                 $${{ for a literal '${{')"
            ));
            continue;
        }
        match (env.get(name), default) {
            (Some(value), Some(default)) if value.is_empty() => out.push_str(default),
            (Some(value), _) => out.push_str(&value),
            (None, Some(default)) => out.push_str(default),
            (None, None) => problems.push(format!(
                "environment variable {name} is not set (write ${{{name}:-default}} to give a \
                 default)"
            )),
        }
    }
    out.push_str(rest);
    if problems.is_empty() { Ok(out) } else { Err(problems) }
}

fn is_var_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c == '_' || c.is_ascii_alphabetic())
        && chars.all(|c| c == '_' || c.is_ascii_alphanumeric())
}

/// Expands every string value (never a key) of `tree` in place, reporting problems at the
/// value's path. Expansion runs on the parsed tree so a variable's value can never change the
/// YAML structure. A value that fails to expand is left as written.
pub fn expand_tree(tree: &mut Value, path: &str, env: &dyn EnvSource) -> Vec<ConfigError> {
    let mut errors = Vec::new();
    expand_into(tree, path, env, &mut errors);
    errors
}

fn expand_into(v: &mut Value, path: &str, env: &dyn EnvSource, errors: &mut Vec<ConfigError>) {
    match v {
        Value::String(s) if s.contains('$') => match expand(s, env) {
            Ok(expanded) => *s = expanded,
            Err(problems) => {
                errors.extend(problems.into_iter().map(|m| ConfigError::new(path, m)));
            }
        },
        Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                expand_into(item, &format!("{path}[{i}]"), env, errors);
            }
        }
        Value::Object(map) => {
            for (key, item) in map.iter_mut() {
                expand_into(item, &join(path, key), env, errors);
            }
        }
        _ => {}
    }
}

/// Every `OUTFLOW_*` environment override: (variable, dotted config path). The one place to
/// add more.
pub const ENV_OVERRIDES: &[(&str, &str)] = &[
    ("OUTFLOW_OUTPUT_MAX_CONCURRENT", "output.max_concurrent_deliveries"),
    ("OUTFLOW_OUTPUT_DEFAULT_TIMEOUT", "output.default_timeout"),
    ("OUTFLOW_OUTPUT_VALIDATE_STARTUP", "output.validate_on_startup"),
    ("OUTFLOW_LOG_LEVEL", "logging.level"),
    ("OUTFLOW_SERVER_LISTEN", "server.listen"),
    ("OUTFLOW_STORAGE_PATH", "storage.path"),
];

/// An override that was applied: which variable set which path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppliedOverride {
    /// The environment variable, e.g. `OUTFLOW_LOG_LEVEL`.
    pub var: &'static str,
    /// The config path it set, e.g. `logging.level`.
    pub path: &'static str,
}

/// Applies [`ENV_OVERRIDES`] to `tree` (a mapping, or null for an empty file). Each value is
/// read as a YAML scalar, so `15` is a number and `true` a boolean, just as if it had been
/// written in the file; an empty variable counts as unset. Overrides whose parent is not a
/// mapping are skipped: that parent is already reported as invalid.
pub fn apply_overrides(tree: &mut Value, env: &dyn EnvSource) -> Vec<AppliedOverride> {
    let mut applied = Vec::new();
    for &(var, path) in ENV_OVERRIDES {
        let Some(raw) = env.get(var).filter(|v| !v.trim().is_empty()) else { continue };
        if set_path(tree, path, scalar_from_env(&raw)) {
            applied.push(AppliedOverride { var, path });
        }
    }
    applied
}

/// A YAML scalar from an environment variable; anything that is not a plain scalar (a list,
/// a mapping, a syntax error) stays the string as given.
fn scalar_from_env(raw: &str) -> Value {
    match serde_yaml_ng::from_str::<Value>(raw) {
        Ok(v @ (Value::Bool(_) | Value::Number(_) | Value::String(_))) => v,
        _ => Value::String(raw.to_string()),
    }
}

fn set_path(tree: &mut Value, path: &str, value: Value) -> bool {
    if tree.is_null() {
        *tree = Value::Object(Map::new());
    }
    let mut node = tree;
    let mut keys = path.split('.').peekable();
    while let Some(key) = keys.next() {
        let Value::Object(map) = node else { return false };
        if keys.peek().is_none() {
            map.insert(key.to_string(), value);
            return true;
        }
        let child = map.entry(key.to_string()).or_insert(Value::Null);
        if child.is_null() {
            *child = Value::Object(Map::new());
        }
        node = child;
    }
    false
}
