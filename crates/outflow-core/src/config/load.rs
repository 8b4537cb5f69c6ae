//! `outflow.yaml` text → [`Config`]: YAML → JSON tree → `${VAR}` expansion → `OUTFLOW_*`
//! overrides → typed sections, every problem collected and sorted into document order.

use super::sections;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::env::{AppliedOverride, EnvSource, apply_overrides, expand_tree};
use super::reader::{FieldReader, join, type_name};
use super::{
    Config, ConfigError, ConfigErrors, DestinationCatalog, DestinationSpec, GlobalDestination,
};
use crate::netpolicy::HostRule;
use crate::retry::RetryPolicy;

/// Reads one top-level section (the reader is over that section's mapping) into the config.
type SectionDecoder = fn(&mut FieldReader<'_>, &mut Config);

/// Every top-level section and its decoder: adding a section is one line here. Keys not
/// listed are reported as unknown, with these as the valid ones.
const SECTIONS: &[(&str, SectionDecoder)] = &[
    ("output", decode_output),
    ("logging", decode_logging),
    ("server", sections::decode_server),
    ("storage", sections::decode_storage),
    ("executor", sections::decode_executor),
];

/// Valid `logging.level` values.
pub const LOG_LEVELS: &[&str] = &["error", "warn", "info", "debug", "trace"];

/// Valid `logging.format` values.
pub const LOG_FORMATS: &[&str] = &["pretty", "json"];

/// The file looked for in the working directory when neither `--config` nor
/// `OUTFLOW_CONFIG` names one.
pub const DEFAULT_CONFIG_FILE: &str = "outflow.yaml";

/// The environment variable naming the config file.
pub const CONFIG_ENV_VAR: &str = "OUTFLOW_CONFIG";

/// Which config file to load: the explicit `--config` path, else `$OUTFLOW_CONFIG` (when set
/// and not empty), else `./outflow.yaml` when it exists, else `None` (run on defaults plus
/// `OUTFLOW_*` overrides). A path named explicitly or by `OUTFLOW_CONFIG` is returned even
/// if it does not exist, so loading reports it rather than silently using defaults.
pub fn resolve_config_path(explicit: Option<&Path>, env: &dyn EnvSource) -> Option<PathBuf> {
    resolve_config_path_in(explicit, env, Path::new("."))
}

/// [`resolve_config_path`] with the default file looked for in `dir` instead of the working
/// directory.
pub fn resolve_config_path_in(
    explicit: Option<&Path>,
    env: &dyn EnvSource,
    dir: &Path,
) -> Option<PathBuf> {
    if let Some(p) = explicit {
        return Some(p.to_path_buf());
    }
    if let Some(p) = env.get(CONFIG_ENV_VAR).filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    let default = dir.join(DEFAULT_CONFIG_FILE);
    default.is_file().then_some(default)
}

impl Config {
    /// Reads (when `path` is given), parses and validates a whole configuration, destination
    /// bodies included, reporting every problem at once with `source` set to the file (or
    /// `<defaults>` when there is no file, where only `OUTFLOW_*` overrides can be wrong).
    ///
    /// Destinations are validated even when `validate_on_startup` is false: callers that
    /// honour that flag use [`Config::load_file`] and [`Config::validate_destinations`].
    pub fn load(
        path: Option<&Path>,
        env: &dyn EnvSource,
        catalog: &dyn DestinationCatalog,
    ) -> Result<Config, ConfigErrors> {
        let (source, text) = match path {
            Some(p) => {
                let source = p.display().to_string();
                match std::fs::read_to_string(p) {
                    Ok(text) => (source, text),
                    Err(e) => {
                        let message = format!("cannot read config file: {e}");
                        return Err(ConfigErrors {
                            source,
                            errors: vec![ConfigError::new("", message)],
                        });
                    }
                }
            }
            None => ("<defaults>".to_string(), String::new()),
        };
        let parsed = parse_document(&text, env);
        let mut errors = parsed.errors;
        errors.extend(parsed.config.validate_destinations(catalog));
        sort_in_document_order(&mut errors, &parsed.tree, &parsed.overrides);
        if errors.is_empty() { Ok(parsed.config) } else { Err(ConfigErrors { source, errors }) }
    }
}

/// The result of parsing, with the tree kept for ordering later errors.
pub(super) struct Parsed {
    pub config: Config,
    pub errors: Vec<ConfigError>,
    pub tree: Value,
    pub overrides: Vec<AppliedOverride>,
}

/// The whole pipeline short of destination validation; errors already sorted.
pub(super) fn parse_document(text: &str, env: &dyn EnvSource) -> Parsed {
    let (mut tree, mut errors) = yaml_to_tree(text);
    if !errors.is_empty() {
        return Parsed { config: Config::default(), errors, tree: Value::Null, overrides: vec![] };
    }
    errors.extend(expand_tree(&mut tree, "", env));
    let overrides = apply_overrides(&mut tree, env);
    let mut config = Config::default();
    // A value that failed to expand is still as written; judging it again would only add
    // a confusing second error at the same place.
    let unexpanded: Vec<String> = errors.iter().map(|e| e.path.clone()).collect();
    errors.extend(decode(&tree, &mut config).into_iter().filter(|e| !unexpanded.contains(&e.path)));
    sort_in_document_order(&mut errors, &tree, &overrides);
    Parsed { config, errors, tree, overrides }
}

/// Parses YAML into a JSON tree. A syntax error is one error with its line and column;
/// structures JSON cannot hold (tags, non-scalar keys, NaN) are errors at their path. An
/// empty document is `null` (all defaults). Merge keys (`<<: *base`) are applied.
pub fn yaml_to_tree(text: &str) -> (Value, Vec<ConfigError>) {
    let parsed = serde_yaml_ng::from_str::<serde_yaml_ng::Value>(text).and_then(|mut v| {
        v.apply_merge()?;
        Ok(v)
    });
    match parsed {
        Ok(yaml) => {
            let mut errors = Vec::new();
            let tree = yaml_to_json(yaml, "", &mut errors);
            (tree, errors)
        }
        Err(e) => (Value::Null, vec![yaml_syntax_error(&e)]),
    }
}

fn yaml_syntax_error(e: &serde_yaml_ng::Error) -> ConfigError {
    // libyaml's text already ends in "at line L column C" where it knows them; state the
    // position first, in one consistent form, and keep the description.
    let text = e.to_string();
    let message = match e.location() {
        Some(loc) => {
            let suffix = format!(" at line {} column {}", loc.line(), loc.column());
            let description = text.replacen(&suffix, "", 1);
            format!("invalid YAML at line {}, column {}: {description}", loc.line(), loc.column())
        }
        None => format!("invalid YAML: {text}"),
    };
    ConfigError::new("", message)
}

fn yaml_to_json(v: serde_yaml_ng::Value, path: &str, errors: &mut Vec<ConfigError>) -> Value {
    use serde_yaml_ng::Value as Y;
    match v {
        Y::Null => Value::Null,
        Y::Bool(b) => Value::Bool(b),
        Y::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::from(i)
            } else if let Some(u) = n.as_u64() {
                Value::from(u)
            } else {
                match n.as_f64().and_then(serde_json::Number::from_f64) {
                    Some(f) => Value::Number(f),
                    None => {
                        errors.push(ConfigError::new(path, "must be a finite number"));
                        Value::Null
                    }
                }
            }
        }
        Y::String(s) => Value::String(s),
        Y::Sequence(items) => Value::Array(
            items
                .into_iter()
                .enumerate()
                .map(|(i, item)| yaml_to_json(item, &format!("{path}[{i}]"), errors))
                .collect(),
        ),
        Y::Mapping(mapping) => {
            let mut map = Map::new();
            for (key, value) in mapping {
                let key = match key {
                    Y::String(s) => s,
                    // `200: ...` and `true: ...` are common enough (status maps); keep their
                    // text as the key.
                    Y::Number(n) => n.to_string(),
                    Y::Bool(b) => b.to_string(),
                    _ => {
                        errors.push(ConfigError::new(
                            path,
                            "mapping keys must be strings, numbers or booleans (not null, lists \
                             or mappings)",
                        ));
                        continue;
                    }
                };
                let value = yaml_to_json(value, &join(path, &key), errors);
                map.insert(key, value);
            }
            Value::Object(map)
        }
        Y::Tagged(tagged) => {
            errors.push(ConfigError::new(
                path,
                format!("YAML tags such as {} are not supported; remove the tag", tagged.tag),
            ));
            Value::Null
        }
    }
}

/// Reads the whole tree into `config`; returns every problem.
fn decode(tree: &Value, config: &mut Config) -> Vec<ConfigError> {
    let map = match tree {
        Value::Null => return Vec::new(),
        Value::Object(map) => map,
        other => {
            let names: Vec<&str> = SECTIONS.iter().map(|(n, _)| *n).collect();
            return vec![ConfigError::new(
                "",
                format!(
                    "the top level must be a mapping of sections ({}), got {}",
                    names.join(", "),
                    type_name(other)
                ),
            )];
        }
    };
    let mut top = FieldReader::new(map, "");
    for &(name, decoder) in SECTIONS {
        if let Some(mut section) = top.child(name) {
            decoder(&mut section, config);
            let errors = section.finish();
            top.extend(errors);
        }
    }
    // `tasks` is a list, not a mapping of keys.
    if let Some(tasks) = top.raw("tasks") {
        let errors = sections::decode_tasks(tasks, "tasks", config);
        top.extend(errors);
    }
    top.finish()
}

fn decode_output(r: &mut FieldReader<'_>, config: &mut Config) {
    let out = &mut config.output;
    let key = "max_concurrent_deliveries";
    match r.optional::<usize>(key, "a positive integer") {
        Some(0) => r.error(key, "must be a positive integer, got 0"),
        Some(n) => out.max_concurrent_deliveries = n,
        None => {}
    }
    let key = "default_timeout";
    match r.duration_secs(key) {
        Some(d) if d.is_zero() => {
            r.error(key, "must be positive: seconds (30) or a duration (\"500ms\", \"5s\", \"1m\")")
        }
        Some(d) => out.default_timeout = d,
        None => {}
    }
    if let Some(b) = r.bool("validate_on_startup") {
        out.validate_on_startup = b;
    }
    if let Some(p) = r.retry_policy("default_retry_policy", &RetryPolicy::default()) {
        out.default_retry_policy = p;
    }
    out.global_destinations = global_destinations(r);
    if let Some(b) = r.bool("allow_private_networks") {
        out.allow_private_networks = b;
    }
    out.allowed_hosts = allowed_hosts(r);
    let explicit_lease = sections::decode_delivery_limits(r, &mut out.limits);
    if !explicit_lease {
        // Long timeouts get a lease that outlasts them, so attempts are never cut.
        out.limits.lease = out.limits.lease.max(out.default_timeout * 2);
    } else if out.limits.lease <= out.default_timeout {
        r.error(
            "delivery_lease",
            format!(
                "must be longer than default_timeout ({}s), got {}s: an attempt is cut at 90 % of the lease",
                out.default_timeout.as_secs_f64(),
                out.limits.lease.as_secs_f64()
            ),
        );
    }
}

const NAME_EXPECTED: &str = "a unique name of letters, digits, '_', '-' and '.'";

fn global_destinations(r: &mut FieldReader<'_>) -> Vec<GlobalDestination> {
    let key = "global_destinations";
    let Some(value) = r.raw(key) else { return Vec::new() };
    let Value::Array(items) = value else {
        let t = type_name(value);
        r.error(key, format!("must be a list of entries with 'name' and 'destination', got {t}"));
        return Vec::new();
    };
    let list_path = r.path_of(key);
    let mut out = Vec::new();
    // (name, index of its first use)
    let mut seen: Vec<(&str, usize)> = Vec::new();
    for (index, item) in items.iter().enumerate() {
        let path = format!("{list_path}[{index}]");
        let Value::Object(map) = item else {
            let t = type_name(item);
            let message = format!("must be a mapping with 'name' and 'destination', got {t}");
            r.extend([ConfigError::new(path, message)]);
            continue;
        };
        let mut e = FieldReader::new(map, path);
        let name = e.required_string("name", NAME_EXPECTED);
        let name_ok = match name.as_deref() {
            None => false,
            Some("") => {
                e.error("name", format!("must not be empty ({NAME_EXPECTED})"));
                false
            }
            Some(n) if !n.chars().all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c)) => {
                e.error(
                    "name",
                    format!("may only contain letters, digits, '_', '-' and '.', got '{n}'"),
                );
                false
            }
            Some(n) => match seen.iter().find(|(s, _)| *s == n) {
                Some((_, first)) => {
                    e.error(
                        "name",
                        format!(
                            "duplicate name '{n}': already used by {list_path}[{first}]; names \
                             must be unique"
                        ),
                    );
                    false
                }
                None => {
                    // Borrow from the tree, which outlives this loop.
                    if let Some(Value::String(s)) = map.get("name") {
                        seen.push((s.as_str(), index));
                    }
                    true
                }
            },
        };
        let description = e.string("description");
        let destination = match e.raw("destination") {
            None => {
                e.error(
                    "destination",
                    "is required (a mapping with a 'type' key, e.g. type: filesystem)",
                );
                None
            }
            Some(v) => match DestinationSpec::from_value(v, &e.path_of("destination")) {
                Ok(spec) => Some(spec),
                Err(err) => {
                    e.extend([err]);
                    None
                }
            },
        };
        let errors = e.finish();
        let entry_ok = errors.is_empty();
        r.extend(errors);
        if let (true, true, Some(name), Some(destination)) = (name_ok, entry_ok, name, destination)
        {
            out.push(GlobalDestination { name, description, index, destination });
        }
    }
    out
}

fn allowed_hosts(r: &mut FieldReader<'_>) -> Vec<HostRule> {
    let key = "allowed_hosts";
    let Some(value) = r.raw(key) else { return Vec::new() };
    let Value::Array(items) = value else {
        let t = type_name(value);
        r.error(
            key,
            format!(
                "must be a list of host names or CIDRs (e.g. [\"hooks.internal\", \
                 \"10.0.0.0/8\"]), got {t}"
            ),
        );
        return Vec::new();
    };
    let list_path = r.path_of(key);
    let mut rules = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let path = format!("{list_path}[{i}]");
        let parsed = match item {
            Value::String(s) => HostRule::parse(s),
            other => Err(format!(
                "must be a host name or CIDR string (e.g. \"10.0.0.0/8\"), got {}",
                type_name(other)
            )),
        };
        match parsed {
            Ok(rule) => rules.push(rule),
            Err(message) => r.extend([ConfigError::new(path, message)]),
        }
    }
    rules
}

fn decode_logging(r: &mut FieldReader<'_>, config: &mut Config) {
    config.logging.level = r.one_of("level", LOG_LEVELS).map(str::to_string);
    config.logging.format = r.one_of("format", LOG_FORMATS).map(str::to_string);
}

/// Suffixes the path of errors about an overridden value with the variable that set it
/// (`output.max_concurrent_deliveries (from OUTFLOW_OUTPUT_MAX_CONCURRENT)`): the file is
/// not where the bad value is.
fn mark_overrides(errors: &mut [ConfigError], overrides: &[AppliedOverride]) {
    for e in errors {
        if let Some(o) = overrides.iter().find(|o| {
            e.path
                .strip_prefix(o.path)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '[']))
        }) {
            e.path = format!("{} (from {})", e.path, o.var);
        }
    }
}

/// Marks override errors, then sorts errors by where their path sits in the document
/// (keeping the order of errors at the same place), so they read top to bottom whichever
/// code found them.
fn sort_in_document_order(errors: &mut [ConfigError], tree: &Value, overrides: &[AppliedOverride]) {
    mark_overrides(errors, overrides);
    errors.sort_by_cached_key(|e| document_position(tree, &e.path));
}

/// The position of `path` in `tree` as a list of indices (key order in mappings, index in
/// lists). Keys may contain dots, so the longest key matching the rest of the path wins. A
/// part that does not exist (a missing required key) sorts after its existing siblings.
fn document_position(tree: &Value, path: &str) -> Vec<usize> {
    let mut rest = path.split_once(" (from ").map_or(path, |(p, _)| p);
    let mut node = tree;
    let mut position = Vec::new();
    loop {
        rest = rest.strip_prefix('.').unwrap_or(rest);
        if rest.is_empty() {
            return position;
        }
        let step = match node {
            Value::Array(items) if rest.starts_with('[') => rest.find(']').and_then(|end| {
                let i: usize = rest[1..end].parse().ok()?;
                Some((i, items.get(i)?, end + 1))
            }),
            Value::Object(map) => map
                .iter()
                .enumerate()
                .filter(|(_, (k, _))| {
                    !k.is_empty()
                        && rest.strip_prefix(k.as_str()).is_some_and(|r| {
                            r.is_empty() || r.starts_with('.') || r.starts_with('[')
                        })
                })
                .max_by_key(|(_, (k, _))| k.len())
                .map(|(i, (k, v))| (i, v, k.len())),
            _ => None,
        };
        match step {
            Some((i, child, len)) => {
                position.push(i);
                node = child;
                rest = &rest[len..];
            }
            None => {
                position.push(usize::MAX);
                return position;
            }
        }
    }
}
