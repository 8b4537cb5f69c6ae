//! [`FieldReader`]: reads typed values out of one config mapping while collecting every
//! problem with its path, and reports keys nobody asked for (typos are never ignored).

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use super::ConfigError;
use super::units;
use crate::retry::RetryPolicy;
use crate::secret::Secret;
use crate::template::Template;

/// A short name for a JSON value's type, for "got ..." in messages (never the value itself,
/// which might be a secret).
pub fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_f64() => "a decimal number",
        Value::Number(_) => "an integer",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

/// Joins a path and a key: `output` + `max` → `output.max`; `` + `output` → `output`.
pub fn join(path: &str, key: &str) -> String {
    if path.is_empty() { key.to_string() } else { format!("{path}.{key}") }
}

/// Reads one mapping. Every accessor records the key as known; [`FieldReader::finish`]
/// reports the keys that were never read, with a "did you mean" suggestion.
pub struct FieldReader<'a> {
    path: String,
    map: &'a Map<String, Value>,
    known: Vec<&'static str>,
    errors: Vec<ConfigError>,
}

impl<'a> FieldReader<'a> {
    /// A reader over `map`, whose keys live under `path`.
    pub fn new(map: &'a Map<String, Value>, path: impl Into<String>) -> Self {
        FieldReader { path: path.into(), map, known: Vec::new(), errors: Vec::new() }
    }

    /// The path of this mapping.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The path of `key` inside this mapping.
    pub fn path_of(&self, key: &str) -> String {
        join(&self.path, key)
    }

    /// Records a problem with `key`.
    pub fn error(&mut self, key: &str, message: impl Into<String>) {
        let path = self.path_of(key);
        self.errors.push(ConfigError::new(path, message));
    }

    /// Adds problems found elsewhere (a nested reader's, a catalog's).
    pub fn extend(&mut self, errors: impl IntoIterator<Item = ConfigError>) {
        self.errors.extend(errors);
    }

    /// Whether any problem was recorded so far.
    pub fn has_errors(&self) -> bool {
        !self.errors.is_empty()
    }

    /// Marks keys as known without reading them (handled by someone else).
    pub fn allow(&mut self, keys: &[&'static str]) {
        self.known.extend_from_slice(keys);
    }

    /// The raw value of `key`, marking it known. `null` counts as absent.
    pub fn raw(&mut self, key: &'static str) -> Option<&'a Value> {
        self.known.push(key);
        self.map.get(key).filter(|v| !v.is_null())
    }

    /// Reports `key` as missing when `value` is `None`.
    fn require<T>(&mut self, key: &'static str, value: Option<T>, expected: &str) -> Option<T> {
        if value.is_none() && self.map.get(key).is_none_or(Value::is_null) {
            self.error(key, format!("is required ({expected})"));
        }
        value
    }

    /// Any serde-deserializable value; `expected` describes valid values for messages.
    pub fn optional<T: DeserializeOwned>(
        &mut self,
        key: &'static str,
        expected: &str,
    ) -> Option<T> {
        let v = self.raw(key)?;
        match serde_json::from_value::<T>(v.clone()) {
            Ok(t) => Some(t),
            // `${N}` expands to a string: accept "15" where a number is expected.
            Err(_) if v.as_str().is_some_and(|s| serde_json::from_str::<T>(s.trim()).is_ok()) => {
                serde_json::from_str::<T>(v.as_str().unwrap_or_default().trim()).ok()
            }
            Err(_) => {
                self.error(key, format!("must be {expected}, got {}", type_name(v)));
                None
            }
        }
    }

    /// Like [`Self::optional`], reporting absence.
    pub fn required<T: DeserializeOwned>(
        &mut self,
        key: &'static str,
        expected: &str,
    ) -> Option<T> {
        let v = self.optional(key, expected);
        self.require(key, v, expected)
    }

    /// A string.
    pub fn string(&mut self, key: &'static str) -> Option<String> {
        self.optional(key, "a string")
    }

    /// A required string.
    pub fn required_string(&mut self, key: &'static str, expected: &str) -> Option<String> {
        let v = self.optional::<String>(key, expected);
        self.require(key, v, expected)
    }

    /// A boolean (`true`/`false`; the strings `"true"`/`"false"` from env overrides too).
    pub fn bool(&mut self, key: &'static str) -> Option<bool> {
        match self.raw(key)? {
            Value::Bool(b) => Some(*b),
            Value::String(s) if s.eq_ignore_ascii_case("true") => Some(true),
            Value::String(s) if s.eq_ignore_ascii_case("false") => Some(false),
            other => {
                let t = type_name(other);
                self.error(key, format!("must be true or false, got {t}"));
                None
            }
        }
    }

    /// A secret string; messages never echo its value.
    pub fn secret(&mut self, key: &'static str, required: bool) -> Option<Secret> {
        let v = match self.raw(key) {
            Some(Value::String(s)) if s.is_empty() => {
                self.error(key, "must not be empty");
                None
            }
            Some(Value::String(s)) => Some(Secret::new(s.clone())),
            Some(other) => {
                let t = type_name(other);
                self.error(key, format!("must be a string, got {t}"));
                None
            }
            None => None,
        };
        if required { self.require(key, v, "a secret string, e.g. \"${MY_TOKEN}\"") } else { v }
    }

    /// A `{{var}}` template, syntax-checked now.
    pub fn template(
        &mut self,
        key: &'static str,
        required: bool,
        expected: &str,
    ) -> Option<Template> {
        let src = if required { self.required_string(key, expected) } else { self.string(key) }?;
        match Template::parse(&src) {
            Ok(t) => Some(t),
            Err(e) => {
                self.error(key, format!("invalid template: {} (at byte {})", e.reason, e.offset));
                None
            }
        }
    }

    /// One of a fixed set of names, compared case-insensitively; returns the canonical
    /// (listed) spelling.
    pub fn one_of(&mut self, key: &'static str, allowed: &[&'static str]) -> Option<&'static str> {
        let v = self.raw(key)?;
        let found = v.as_str().and_then(|s| allowed.iter().find(|a| a.eq_ignore_ascii_case(s)));
        match found {
            Some(a) => Some(*a),
            None => {
                let got = match v.as_str() {
                    Some(s) => format!("'{s}'"),
                    None => type_name(v).to_string(),
                };
                self.error(key, format!("must be one of {}, got {got}", allowed.join(", ")));
                None
            }
        }
    }

    /// A duration: a plain number means seconds; strings take `500ms`, `5s`, `5m`, `1h`.
    pub fn duration_secs(&mut self, key: &'static str) -> Option<Duration> {
        let v = self.raw(key)?;
        match units::duration_from_value(v, units::Unit::Seconds) {
            Ok(d) => Some(d),
            Err(msg) => {
                self.error(key, msg);
                None
            }
        }
    }

    /// A size: a plain number means bytes; strings take `8MiB`, `10MB`, `512KiB`.
    pub fn size(&mut self, key: &'static str) -> Option<u64> {
        let v = self.raw(key)?;
        match units::size_from_value(v) {
            Ok(n) => Some(n),
            Err(msg) => {
                self.error(key, msg);
                None
            }
        }
    }

    /// A nested mapping, read by a child reader whose errors must be passed back with
    /// [`Self::extend`] after [`FieldReader::finish`].
    pub fn child(&mut self, key: &'static str) -> Option<FieldReader<'a>> {
        let path = self.path_of(key);
        match self.raw(key)? {
            Value::Object(map) => Some(FieldReader::new(map, path)),
            other => {
                let t = type_name(other);
                self.error(key, format!("must be a mapping, got {t}"));
                None
            }
        }
    }

    /// A retry policy block; missing keys take their values from `defaults`.
    pub fn retry_policy(
        &mut self,
        key: &'static str,
        defaults: &RetryPolicy,
    ) -> Option<RetryPolicy> {
        let mut child = self.child(key)?;
        let policy = child.retry_policy_fields(defaults);
        let errors = child.finish();
        let ok = errors.is_empty();
        self.extend(errors);
        if ok { Some(policy) } else { None }
    }

    /// Reads the retry policy keys of *this* mapping (for `default_retry_policy` and
    /// `retry_policy` blocks), validating their values.
    pub fn retry_policy_fields(&mut self, defaults: &RetryPolicy) -> RetryPolicy {
        let positive = "a positive integer";
        let p = RetryPolicy {
            max_attempts: self.optional("max_attempts", positive).unwrap_or(defaults.max_attempts),
            initial_delay_ms: self
                .optional("initial_delay_ms", "a positive number of milliseconds")
                .unwrap_or(defaults.initial_delay_ms),
            max_delay_ms: self
                .optional("max_delay_ms", "a positive number of milliseconds")
                .unwrap_or(defaults.max_delay_ms),
            backoff_multiplier: self
                .optional("backoff_multiplier", "a number greater than 1.0")
                .unwrap_or(defaults.backoff_multiplier),
            jitter: self
                .optional("jitter", "a fraction between 0.0 and 1.0")
                .unwrap_or(defaults.jitter),
        };
        if !self.has_errors() {
            for (field, message) in p.problems() {
                self.error(field, message);
            }
        }
        p
    }

    /// Ends reading: every key that no accessor asked for is reported as unknown, with the
    /// closest known key suggested. Returns all problems found in this mapping.
    pub fn finish(mut self) -> Vec<ConfigError> {
        let mut unknown: Vec<&String> =
            self.map.keys().filter(|k| !self.known.contains(&k.as_str())).collect();
        unknown.sort_by_key(|k| self.map.keys().position(|x| x == *k));
        let mut valid: Vec<&str> = self.known.clone();
        valid.sort_unstable();
        valid.dedup();
        for key in unknown {
            let hint = match suggest(key, &valid) {
                Some(s) => format!("did you mean '{s}'? "),
                None => String::new(),
            };
            let message = format!("unknown key '{key}' ({hint}valid keys: {})", valid.join(", "));
            self.errors.push(ConfigError::new(join(&self.path, key), message));
        }
        self.errors
    }
}

/// The closest candidate to `word` by edit distance, when it is close enough to be a typo.
pub fn suggest<'c>(word: &str, candidates: &[&'c str]) -> Option<&'c str> {
    let word = word.to_ascii_lowercase();
    candidates
        .iter()
        .map(|c| (edit_distance(&word, &c.to_ascii_lowercase()), *c))
        .filter(|(d, c)| *d <= (c.len() / 3).max(2))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn map(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn unknown_keys_are_reported_with_a_suggestion() {
        let m = map(json!({"path": "/x", "formt": "json"}));
        let mut r = FieldReader::new(&m, "dest");
        r.string("path");
        r.string("format");
        let errs = r.finish();
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].path, "dest.formt");
        assert!(errs[0].message.contains("did you mean 'format'?"), "{}", errs[0].message);
        assert!(errs[0].message.contains("valid keys: format, path"));
    }

    #[test]
    fn type_errors_name_expectation_not_value() {
        let m = map(json!({"token": 5, "n": "x"}));
        let mut r = FieldReader::new(&m, "auth");
        r.secret("token", true);
        r.optional::<u32>("n", "a positive integer");
        let errs = r.finish();
        assert_eq!(errs[0].to_string(), "auth.token: must be a string, got an integer");
        assert_eq!(errs[1].to_string(), "auth.n: must be a positive integer, got a string");
    }

    #[test]
    fn numbers_from_expanded_strings_are_accepted() {
        let m = map(json!({"n": "15", "bad": "fifteen"}));
        let mut r = FieldReader::new(&m, "o");
        assert_eq!(r.optional::<u32>("n", "a positive integer"), Some(15));
        assert_eq!(r.optional::<u32>("bad", "a positive integer"), None);
        let errs = r.finish();
        assert_eq!(errs[0].to_string(), "o.bad: must be a positive integer, got a string");
    }

    #[test]
    fn required_and_templates() {
        let m = map(json!({"url": "http://x/{{a"}));
        let mut r = FieldReader::new(&m, "d");
        r.template("url", true, "an http(s) URL");
        r.required_string("method", "an HTTP method");
        let errs = r.finish();
        assert_eq!(errs[0].path, "d.url");
        assert!(errs[0].message.contains("never closed"));
        assert_eq!(errs[1].to_string(), "d.method: is required (an HTTP method)");
    }

    #[test]
    fn retry_policy_block_validates() {
        let m = map(
            json!({"retry_policy": {"max_attempts": 3, "initial_delay_ms": 5000, "max_delay_ms": 1000}}),
        );
        let mut r = FieldReader::new(&m, "d");
        assert!(r.retry_policy("retry_policy", &RetryPolicy::default()).is_none());
        let errs = r.finish();
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].path, "d.retry_policy.max_delay_ms");
    }
}
