//! Parsing and validating a `type: kafka` body.
//!
//! Everything that can be judged without a job is judged here (so `outflow check` catches
//! it): broker addresses, a static topic's name, option combinations librdkafka would refuse
//! only at connect time (`idempotent` without `required_acks: all`, a client certificate
//! without its key), the SASL and TLS blocks, header names and the format.

use std::time::Duration;

use outflow_core::config::reader::type_name;
use outflow_core::config::{ConfigError, DestinationSpec, FieldReader};
use outflow_core::format::OutputFormat;
use outflow_core::retry::RetryPolicy;
use outflow_core::secret::Secret;
use outflow_core::template::Template;
use serde_json::Value;

use crate::{BuildDefaults, common};

/// The header carrying the delivery id (identical on every retry), on every record.
pub const DELIVERY_ID_HEADER: &str = "outflow-delivery-id";
/// The header carrying the job's UUID, on every record.
pub const JOB_UUID_HEADER: &str = "outflow-job-uuid";

/// The longest topic name Kafka accepts.
pub const MAX_TOPIC_LEN: usize = 249;

/// `max_message_bytes` when not set: Kafka's own broker default (`message.max.bytes`).
pub const DEFAULT_MAX_MESSAGE_BYTES: u64 = 1_000_000;
/// librdkafka's bounds for `message.max.bytes`.
const MESSAGE_BYTES_RANGE: (u64, u64) = (1_000, 1_000_000_000);
/// librdkafka's bound for `batch.num.messages`.
const MAX_BATCH_SIZE: u64 = 1_000_000;
/// librdkafka's bound for `linger.ms`.
const MAX_BATCH_TIMEOUT: Duration = Duration::from_millis(900_000);

/// The partition strategies (`partition_strategy`).
pub const PARTITION_STRATEGIES: &[&str] = &["hash", "random", "round_robin", "manual"];
/// The compression codecs (`compression`, alias `compression_codec`).
pub const CODECS: &[&str] = &["none", "gzip", "snappy", "lz4", "zstd"];
/// The SASL mechanisms.
pub const SASL_MECHANISMS: &[&str] = &["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"];

/// How a record's partition is chosen.
#[derive(Debug, Clone, PartialEq)]
pub enum PartitionStrategy {
    /// By a hash of the key (murmur2, as the Java client does, so other producers of the same
    /// keys agree); records without a key go to a random partition.
    Hash,
    /// A random partition per record.
    Random,
    /// The topic's partitions in turn, per destination.
    RoundRobin,
    /// The partition `partition` names.
    Manual(PartitionChoice),
}

/// The `partition` of `partition_strategy: manual`.
#[derive(Debug, Clone, PartialEq)]
pub enum PartitionChoice {
    /// A fixed partition number.
    Fixed(i32),
    /// A template that renders to a partition number.
    Template(Template),
}

/// `required_acks`: how many replicas must have the record before it counts as delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acks {
    /// 0: fire and forget; the broker does not answer (a success only means "sent").
    None,
    /// 1: the partition leader has written it.
    Leader,
    /// -1 / `all`: every in-sync replica has it.
    All,
}

impl Acks {
    /// librdkafka's `acks` value.
    pub fn as_config(self) -> &'static str {
        match self {
            Acks::None => "0",
            Acks::Leader => "1",
            Acks::All => "all",
        }
    }
}

/// Where a value comes from in a JSON output: `service`, `user.id` or a JSON pointer
/// `/user/id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldPath {
    source: String,
}

impl FieldPath {
    /// Parses a field name, dotted path or JSON pointer.
    pub fn parse(source: &str) -> Result<FieldPath, String> {
        let valid = "a field of the JSON output: a name (service), a dotted path (user.id) or a \
                     JSON pointer (/user/id)";
        if source.trim().is_empty() {
            return Err(format!("must not be empty; expected {valid}"));
        }
        if !source.starts_with('/') && source.split('.').any(str::is_empty) {
            return Err(format!("'{source}' has an empty segment; expected {valid}"));
        }
        Ok(FieldPath { source: source.to_string() })
    }

    /// The path as written.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The scalar at this path as text (strings as they are, numbers and booleans as their
    /// JSON text). `None` when the path is absent, `null`, or an object or array.
    pub fn lookup(&self, value: &Value) -> Option<String> {
        let found = if self.source.starts_with('/') {
            value.pointer(&self.source)
        } else {
            // A key that itself contains dots wins over the dotted reading.
            value.get(&self.source).or_else(|| {
                self.source.split('.').try_fold(value, |v, segment| match v {
                    Value::Array(items) => segment.parse::<usize>().ok().and_then(|i| items.get(i)),
                    other => other.get(segment),
                })
            })
        }?;
        match found {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            Value::Null | Value::Array(_) | Value::Object(_) => None,
        }
    }
}

/// SASL credentials.
#[derive(Debug, Clone, PartialEq)]
pub struct Sasl {
    /// `PLAIN`, `SCRAM-SHA-256` or `SCRAM-SHA-512`.
    pub mechanism: &'static str,
    /// The user name.
    pub username: String,
    /// The password (never printed).
    pub password: Secret,
}

/// TLS settings (`tls.enabled`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Tls {
    /// CA bundle (PEM) to verify the brokers with; the system store when absent.
    pub ca_file: Option<String>,
    /// Client certificate (PEM), for mutual TLS.
    pub cert_file: Option<String>,
    /// The client certificate's private key (PEM).
    pub key_file: Option<String>,
    /// Skip verifying the brokers' certificates and host names (tests only).
    pub insecure_skip_verify: bool,
}

/// A validated Kafka configuration.
#[derive(Debug, Clone)]
pub struct KafkaConfig {
    /// Bootstrap brokers, `host:port`.
    pub brokers: Vec<String>,
    /// The topic template; the fallback when `topic_field` is absent from an output.
    pub topic: Option<Template>,
    /// The output field that names the topic.
    pub topic_field: Option<FieldPath>,
    /// The record key template.
    pub key: Option<Template>,
    /// The output field whose value is the record key.
    pub partition_key: Option<FieldPath>,
    /// How partitions are chosen.
    pub partition_strategy: PartitionStrategy,
    /// `required_acks`.
    pub acks: Acks,
    /// `idempotent`: the broker drops duplicates of the producer's own retries.
    pub idempotent: bool,
    /// The compression codec (`none`, `gzip`, `snappy`, `lz4`, `zstd`).
    pub compression: &'static str,
    /// The largest record accepted, in bytes.
    pub max_message_bytes: u64,
    /// librdkafka's `batch.num.messages`, when set.
    pub batch_size: Option<u64>,
    /// librdkafka's `linger.ms`, when set.
    pub batch_timeout: Option<Duration>,
    /// SASL, when enabled.
    pub sasl: Option<Sasl>,
    /// TLS, when enabled.
    pub tls: Option<Tls>,
    /// Extra headers, values templated, in config order.
    pub headers: Vec<(String, Template)>,
    /// How the output becomes the record value.
    pub format: OutputFormat,
    /// The bound of one delivery (and of `message.timeout.ms`).
    pub timeout: Duration,
    /// Retries.
    pub retry_policy: RetryPolicy,
}

impl KafkaConfig {
    /// Parses `spec`, reporting every problem under `path`.
    pub fn parse(
        spec: &DestinationSpec,
        defaults: &BuildDefaults,
        path: &str,
    ) -> Result<KafkaConfig, Vec<ConfigError>> {
        let mut r = FieldReader::new(&spec.fields, path);

        let brokers = parse_brokers(&mut r);

        let topic = r.template("topic", false, "a topic name or template");
        if let Some(t) = &topic
            && t.is_static()
            && let Err(msg) = validate_topic(t.source())
        {
            r.error("topic", msg);
        }
        let topic_field = field_path(&mut r, "topic_field");
        if topic.is_none() && topic_field.is_none() && r.raw("topic").is_none() {
            r.error(
                "topic",
                "is required (a topic name or template such as \"logs-{{task_name}}\"), unless \
                 topic_field names the output field that holds the topic",
            );
        }

        let key = r.template("key", false, "a template for the record key");
        let partition_key = field_path(&mut r, "partition_key");
        if key.is_some() && partition_key.is_some() {
            r.error("partition_key", "cannot be combined with key: set one of them");
        }

        let partition_strategy = parse_partitioning(&mut r);

        let acks = parse_acks(&mut r);
        let idempotent = r.bool("idempotent").unwrap_or(false);
        if idempotent && acks.is_some_and(|a| a != Acks::All) {
            r.error(
                "idempotent",
                "needs required_acks: all (-1): the broker can only drop duplicate retries it \
                 has acknowledged from every in-sync replica",
            );
        }

        let compression = match (r.raw("compression").is_some(), r.raw("compression_codec")) {
            (true, Some(_)) => {
                r.error("compression_codec", "is another name for compression: set only one");
                None
            }
            (false, Some(_)) => r.one_of("compression_codec", CODECS),
            (true, None) => r.one_of("compression", CODECS),
            (false, None) => Some("none"),
        };

        let max_message_bytes = match r.size("max_message_bytes") {
            Some(n) if !(MESSAGE_BYTES_RANGE.0..=MESSAGE_BYTES_RANGE.1).contains(&n) => {
                r.error(
                    "max_message_bytes",
                    format!(
                        "must be between {} and {} bytes, got {n}",
                        MESSAGE_BYTES_RANGE.0, MESSAGE_BYTES_RANGE.1
                    ),
                );
                None
            }
            Some(n) => Some(n),
            None => Some(DEFAULT_MAX_MESSAGE_BYTES),
        };

        let batch_size = r.optional::<u64>("batch_size", "a positive integer (records)");
        if batch_size.is_some_and(|n| n == 0 || n > MAX_BATCH_SIZE) {
            r.error("batch_size", format!("must be between 1 and {MAX_BATCH_SIZE} records"));
        }
        let batch_timeout = r.duration_secs("batch_timeout");
        if batch_timeout.is_some_and(|d| d > MAX_BATCH_TIMEOUT) {
            r.error("batch_timeout", "must be at most 900s (librdkafka's linger.ms limit)");
        }

        let sasl = parse_sasl(&mut r);
        let tls = parse_tls(&mut r);
        let headers = parse_headers(&mut r);
        let format = common::read_format_default_raw(&mut r);

        let timeout = match r.duration_secs("timeout") {
            Some(d) if d < Duration::from_millis(100) => {
                r.error("timeout", "must be at least 100ms (e.g. 30 or \"30s\")");
                None
            }
            Some(d) if d > Duration::from_secs(3600) => {
                r.error("timeout", "must be at most 1h");
                None
            }
            Some(d) => Some(d),
            None => Some(defaults.timeout),
        };

        if let (Some(linger), Some(limit)) = (batch_timeout, timeout)
            && linger >= limit
        {
            r.error(
                "batch_timeout",
                "must be shorter than timeout: a record waits batch_timeout before it is sent",
            );
        }

        let retry_policy = common::read_retry_policy(&mut r, defaults);

        let errors = r.finish();
        match (brokers, compression, max_message_bytes, partition_strategy, acks) {
            (Some(brokers), Some(compression), Some(max), Some(strategy), Some(acks))
                if errors.is_empty() =>
            {
                Ok(KafkaConfig {
                    brokers,
                    topic,
                    topic_field,
                    key,
                    partition_key,
                    partition_strategy: strategy,
                    acks,
                    idempotent,
                    compression,
                    max_message_bytes: max,
                    batch_size,
                    batch_timeout,
                    sasl: sasl.flatten(),
                    tls: tls.flatten(),
                    headers,
                    format: format.unwrap_or(OutputFormat::Raw),
                    timeout: timeout.unwrap_or(defaults.timeout),
                    retry_policy,
                })
            }
            _ if errors.is_empty() => {
                Err(vec![ConfigError::new(path, "invalid kafka configuration")])
            }
            _ => Err(errors),
        }
    }

    /// The brokers as librdkafka's `bootstrap.servers`.
    pub fn bootstrap_servers(&self) -> String {
        self.brokers.join(",")
    }
}

/// What valid `brokers` look like, for messages.
const BROKERS_EXPECTED: &str = "a list of host:port addresses, e.g. [\"kafka1:9092\", \"kafka2:9092\"], or one \
     comma-separated string";

fn parse_brokers(r: &mut FieldReader<'_>) -> Option<Vec<String>> {
    let list: Vec<String> = match r.raw("brokers") {
        None => {
            r.error("brokers", format!("is required ({BROKERS_EXPECTED})"));
            return None;
        }
        Some(Value::String(s)) => s.split(',').map(|b| b.trim().to_string()).collect(),
        Some(Value::Array(items)) => {
            let mut out = Vec::new();
            for (i, item) in items.iter().enumerate() {
                match item {
                    Value::String(s) => out.push(s.trim().to_string()),
                    other => r.extend([ConfigError::new(
                        format!("{}[{i}]", r.path_of("brokers")),
                        format!("must be a host:port string, got {}", type_name(other)),
                    )]),
                }
            }
            if out.len() != items.len() {
                return None;
            }
            out
        }
        Some(other) => {
            r.error("brokers", format!("must be {BROKERS_EXPECTED}, got {}", type_name(other)));
            return None;
        }
    };
    let list: Vec<String> = list.into_iter().filter(|b| !b.is_empty()).collect();
    if list.is_empty() {
        r.error("brokers", format!("must name at least one broker ({BROKERS_EXPECTED})"));
        return None;
    }
    let mut ok = true;
    for broker in &list {
        if let Err(msg) = validate_broker(broker) {
            r.error("brokers", msg);
            ok = false;
        }
    }
    ok.then_some(list)
}

/// Checks one `host:port` (IPv6 hosts in brackets).
pub fn validate_broker(broker: &str) -> Result<(), String> {
    let bad = |why: &str| {
        Err(format!(
            "'{broker}' is not a broker address: {why}; expected host:port, e.g. kafka1:9092"
        ))
    };
    if broker.contains("://") {
        return bad("no scheme is used (security comes from the tls and sasl options)");
    }
    let Some((host, port)) = broker.rsplit_once(':') else {
        return bad("the port is missing");
    };
    // An IPv6 host needs brackets: in "::1:9092" the port is not the only reading.
    let (host, bracketed) = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(inner) => (inner, true),
        None => (host, false),
    };
    let bad_v6 = bracketed != host.contains(':')
        || (bracketed && host.parse::<std::net::Ipv6Addr>().is_err());
    if host.is_empty() || host.contains(['/', ' ', ',', '[', ']']) || bad_v6 {
        return bad("the host is empty or malformed (write IPv6 addresses as [::1]:9092)");
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(()),
        _ => bad(&format!("'{port}' is not a port (1 to 65535)")),
    }
}

/// Checks a topic name: 1 to 249 characters of `a-z A-Z 0-9 . _ -`, not `.` or `..`.
pub fn validate_topic(topic: &str) -> Result<(), String> {
    let valid = "a topic name is 1 to 249 characters of a-z, A-Z, 0-9, '.', '_' and '-', and \
                 not '.' or '..'";
    if topic.is_empty() {
        return Err(format!("the topic name is empty; {valid}"));
    }
    if topic == "." || topic == ".." {
        return Err(format!("'{topic}' is not a valid topic name; {valid}"));
    }
    if topic.len() > MAX_TOPIC_LEN {
        return Err(format!("the topic name is {} characters long; {valid}", topic.len()));
    }
    if let Some(bad) = topic.chars().find(|c| !(c.is_ascii_alphanumeric() || "._-".contains(*c))) {
        return Err(format!("'{topic}' is not a valid topic name (it contains {bad:?}); {valid}"));
    }
    Ok(())
}

fn field_path(r: &mut FieldReader<'_>, key: &'static str) -> Option<FieldPath> {
    let src = r.string(key)?;
    match FieldPath::parse(&src) {
        Ok(p) => Some(p),
        Err(msg) => {
            r.error(key, msg);
            None
        }
    }
}

fn parse_partitioning(r: &mut FieldReader<'_>) -> Option<PartitionStrategy> {
    let strategy = match r.raw("partition_strategy") {
        Some(_) => r.one_of("partition_strategy", PARTITION_STRATEGIES),
        None => Some("hash"),
    };
    let partition = match r.raw("partition") {
        None => None,
        Some(Value::Number(n)) => match n.as_i64().and_then(|n| i32::try_from(n).ok()) {
            Some(p) if p >= 0 => Some(PartitionChoice::Fixed(p)),
            _ => {
                r.error("partition", format!("must be a partition number (0 or more), got {n}"));
                return None;
            }
        },
        Some(Value::String(s)) if s.trim().parse::<i32>().is_ok_and(|p| p >= 0) => {
            Some(PartitionChoice::Fixed(s.trim().parse().unwrap_or_default()))
        }
        Some(Value::String(s)) => match Template::parse(s) {
            Ok(t) if !t.is_static() => Some(PartitionChoice::Template(t)),
            Ok(_) => {
                r.error(
                    "partition",
                    format!("must be a partition number (0 or more) or a template, got '{s}'"),
                );
                return None;
            }
            Err(e) => {
                r.error(
                    "partition",
                    format!("invalid template: {} (at byte {})", e.reason, e.offset),
                );
                return None;
            }
        },
        Some(other) => {
            r.error(
                "partition",
                format!("must be a partition number or a template, got {}", type_name(other)),
            );
            return None;
        }
    };
    match (strategy?, partition) {
        ("manual", Some(p)) => Some(PartitionStrategy::Manual(p)),
        ("manual", None) => {
            r.error("partition", "is required with partition_strategy: manual (a partition number such as 0, or a template)");
            None
        }
        (other, Some(_)) => {
            r.error(
                "partition",
                format!(
                    "is only used with partition_strategy: manual (partition_strategy is '{other}')"
                ),
            );
            None
        }
        ("random", None) => Some(PartitionStrategy::Random),
        ("round_robin", None) => Some(PartitionStrategy::RoundRobin),
        (_, None) => Some(PartitionStrategy::Hash),
    }
}

fn parse_acks(r: &mut FieldReader<'_>) -> Option<Acks> {
    let Some(v) = r.raw("required_acks") else { return Some(Acks::All) };
    let text = match v {
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.trim().to_ascii_lowercase(),
        other => {
            r.error("required_acks", format!("must be 0, 1, -1 or all, got {}", type_name(other)));
            return None;
        }
    };
    match text.as_str() {
        "0" => Some(Acks::None),
        "1" => Some(Acks::Leader),
        "-1" | "all" => Some(Acks::All),
        _ => {
            r.error("required_acks", format!("must be 0, 1, -1 or all, got {text}"));
            None
        }
    }
}

/// The seed's flat spelling of the SASL settings.
const FLAT_SASL_KEYS: &[&str] =
    &["sasl_enabled", "sasl_mechanism", "sasl_username", "sasl_password"];

/// `sasl: {mechanism, username, password}`, or the flat `sasl_enabled`, `sasl_mechanism`,
/// `sasl_username`, `sasl_password`. `Some(None)` means "no SASL"; `None` means invalid.
fn parse_sasl(r: &mut FieldReader<'_>) -> Option<Option<Sasl>> {
    let flat_given: Vec<&str> =
        FLAT_SASL_KEYS.iter().copied().filter(|k| r.raw(k).is_some()).collect();
    if let Some(mut child) = r.child("sasl") {
        if let Some(first) = flat_given.first() {
            r.error(first, "cannot be combined with the sasl block: use one form");
        }
        let sasl = read_sasl(&mut child, "mechanism", "username", "password");
        r.extend(child.finish());
        return sasl.map(Some);
    }
    if r.raw("sasl").is_some() {
        return None; // not a mapping: reported by child()
    }
    if flat_given.is_empty() {
        return Some(None);
    }
    match r.bool("sasl_enabled") {
        Some(true) => read_sasl(r, "sasl_mechanism", "sasl_username", "sasl_password").map(Some),
        Some(false) => {
            for key in flat_given.iter().filter(|k| **k != "sasl_enabled") {
                r.error(key, "is set but sasl_enabled is false");
            }
            Some(None)
        }
        None if r.raw("sasl_enabled").is_some() => None,
        None => {
            r.error(
                "sasl_enabled",
                "must be true to use sasl_mechanism, sasl_username and sasl_password (or use \
                 the sasl block)",
            );
            None
        }
    }
}

fn read_sasl(
    r: &mut FieldReader<'_>,
    mechanism: &'static str,
    username: &'static str,
    password: &'static str,
) -> Option<Sasl> {
    let mech = match r.raw(mechanism) {
        Some(_) => r.one_of(mechanism, SASL_MECHANISMS),
        None => {
            r.error(mechanism, format!("is required (one of {})", SASL_MECHANISMS.join(", ")));
            None
        }
    };
    let user = r.required_string(username, "the SASL user name");
    let pass = r.secret(password, true);
    Some(Sasl { mechanism: mech?, username: user?, password: pass? })
}

/// `tls: {enabled, ca_file, cert_file, key_file, insecure_skip_verify}`. A block without
/// `enabled` is enabled. `Some(None)` means "no TLS"; `None` means invalid.
fn parse_tls(r: &mut FieldReader<'_>) -> Option<Option<Tls>> {
    let Some(mut c) = r.child("tls") else {
        return if r.raw("tls").is_some() { None } else { Some(None) };
    };
    let enabled = c.bool("enabled").unwrap_or(true);
    let file = |c: &mut FieldReader<'_>, key: &'static str| match c.string(key) {
        Some(s) if s.trim().is_empty() => {
            c.error(key, "must not be empty (a path to a PEM file)");
            None
        }
        other => other,
    };
    let tls = Tls {
        ca_file: file(&mut c, "ca_file"),
        cert_file: file(&mut c, "cert_file"),
        key_file: file(&mut c, "key_file"),
        insecure_skip_verify: c.bool("insecure_skip_verify").unwrap_or(false),
    };
    match (&tls.cert_file, &tls.key_file) {
        (Some(_), None) => {
            c.error("key_file", "is required with cert_file (the client certificate's private key)")
        }
        (None, Some(_)) => {
            c.error("cert_file", "is required with key_file (the client certificate)")
        }
        _ => {}
    }
    let errors = c.finish();
    let ok = errors.is_empty();
    r.extend(errors);
    ok.then(|| enabled.then_some(tls))
}

fn parse_headers(r: &mut FieldReader<'_>) -> Vec<(String, Template)> {
    let mut out = Vec::new();
    let base = r.path_of("headers");
    let map = match r.raw("headers") {
        None => return out,
        Some(Value::Object(map)) => map,
        Some(other) => {
            r.error(
                "headers",
                format!("must be a mapping of header name to value, got {}", type_name(other)),
            );
            return out;
        }
    };
    for (name, value) in map {
        let at = format!("{base}.{name}");
        if name.is_empty() {
            r.extend([ConfigError::new(at, "a header name must not be empty")]);
            continue;
        }
        if name.eq_ignore_ascii_case(DELIVERY_ID_HEADER)
            || name.eq_ignore_ascii_case(JOB_UUID_HEADER)
        {
            r.extend([ConfigError::new(
                at,
                format!("header '{name}' cannot be set here: outflow sets it on every record"),
            )]);
            continue;
        }
        let Value::String(src) = value else {
            r.extend([ConfigError::new(
                at,
                format!("must be a string (a template), got {}", type_name(value)),
            )]);
            continue;
        };
        match Template::parse(src) {
            Ok(t) => out.push((name.clone(), t)),
            Err(e) => r.extend([ConfigError::new(
                at,
                format!("invalid template: {} (at byte {})", e.reason, e.offset),
            )]),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::common::test_support::pairs;
    use serde_json::json;

    fn parse(value: Value) -> Result<KafkaConfig, Vec<ConfigError>> {
        let mut value = value;
        value["type"] = json!("kafka");
        let spec = DestinationSpec::from_value(&value, "d").unwrap();
        KafkaConfig::parse(&spec, &BuildDefaults::default(), "d")
    }

    fn errors(value: Value) -> Vec<(String, String)> {
        pairs(parse(value).unwrap_err())
    }

    fn error_at(value: Value, path: &str) -> String {
        let all = errors(value);
        all.iter()
            .find(|(p, _)| p == path)
            .map(|(_, m)| m.clone())
            .unwrap_or_else(|| panic!("no error at {path}: {all:?}"))
    }

    #[test]
    fn minimal_config_takes_the_defaults() {
        let cfg = parse(json!({"brokers": "a:9092, b:9093", "topic": "logs"})).unwrap();
        assert_eq!(cfg.brokers, ["a:9092", "b:9093"]);
        assert_eq!(cfg.bootstrap_servers(), "a:9092,b:9093");
        assert_eq!(cfg.partition_strategy, PartitionStrategy::Hash);
        assert_eq!(cfg.acks, Acks::All);
        assert!(!cfg.idempotent);
        assert_eq!(cfg.compression, "none");
        assert_eq!(cfg.max_message_bytes, DEFAULT_MAX_MESSAGE_BYTES);
        assert_eq!(cfg.format.name(), "raw");
        assert_eq!(cfg.timeout, BuildDefaults::default().timeout);
        assert!(cfg.sasl.is_none() && cfg.tls.is_none());
    }

    #[test]
    fn the_seed_example_parses() {
        let cfg = parse(json!({
            "brokers": ["kafka1:9092", "kafka2:9092", "kafka3:9092"],
            "topic": "logs-high-volume",
            "topic_field": "service",
            "partition_key": "user_id",
            "partition_strategy": "hash",
            "compression_codec": "snappy",
            "batch_size": 1000,
            "batch_timeout": "1s",
            "required_acks": 1,
            "sasl_enabled": true,
            "sasl_mechanism": "SCRAM-SHA-256",
            "sasl_username": "svc",
            "sasl_password": "pw",
        }))
        .unwrap();
        assert_eq!(cfg.compression, "snappy");
        assert_eq!(cfg.acks, Acks::Leader);
        assert_eq!(cfg.batch_size, Some(1000));
        assert_eq!(cfg.batch_timeout, Some(Duration::from_secs(1)));
        let sasl = cfg.sasl.unwrap();
        assert_eq!((sasl.mechanism, sasl.username.as_str()), ("SCRAM-SHA-256", "svc"));
        assert_eq!(cfg.topic_field.unwrap().source(), "service");
        assert_eq!(cfg.partition_key.unwrap().source(), "user_id");
    }

    #[test]
    fn brokers_are_required_and_checked() {
        assert!(error_at(json!({"topic": "t"}), "d.brokers").starts_with("is required"));
        assert!(
            error_at(json!({"brokers": "", "topic": "t"}), "d.brokers").contains("at least one")
        );
        assert!(
            error_at(json!({"brokers": 9092, "topic": "t"}), "d.brokers")
                .contains("got an integer")
        );
        assert!(
            error_at(json!({"brokers": ["a:1", 2], "topic": "t"}), "d.brokers[1]")
                .contains("host:port")
        );
        assert!(
            error_at(json!({"brokers": "kafka", "topic": "t"}), "d.brokers")
                .contains("port is missing")
        );
        assert!(
            error_at(json!({"brokers": "kafka:x", "topic": "t"}), "d.brokers")
                .contains("'x' is not a port")
        );
        assert!(
            error_at(json!({"brokers": "kafka://h:1", "topic": "t"}), "d.brokers")
                .contains("no scheme")
        );
        assert!(validate_broker("[::1]:9092").is_ok());
        assert!(validate_broker("::1:9092").is_err());
    }

    #[test]
    fn topic_or_topic_field_is_required_and_static_topics_are_checked() {
        assert!(error_at(json!({"brokers": "a:1"}), "d.topic").starts_with("is required"));
        assert!(parse(json!({"brokers": "a:1", "topic_field": "service"})).is_ok());
        assert!(
            error_at(json!({"brokers": "a:1", "topic": "bad topic"}), "d.topic").contains("' '")
        );
        assert!(
            error_at(json!({"brokers": "a:1", "topic": ".."}), "d.topic")
                .contains("not a valid topic")
        );
        assert!(
            error_at(json!({"brokers": "a:1", "topic": "x".repeat(250)}), "d.topic")
                .contains("250")
        );
        assert!(
            error_at(json!({"brokers": "a:1", "topic": "{{oops"}), "d.topic")
                .contains("invalid template")
        );
        assert!(
            error_at(json!({"brokers": "a:1", "topic": "t", "topic_field": ""}), "d.topic_field")
                .contains("empty")
        );
        assert!(
            error_at(
                json!({"brokers": "a:1", "topic": "t", "topic_field": "a..b"}),
                "d.topic_field"
            )
            .contains("empty segment")
        );
        // Templates are judged after rendering.
        assert!(parse(json!({"brokers": "a:1", "topic": "logs-{{task_name}}"})).is_ok());
    }

    #[test]
    fn key_and_partition_key_exclude_each_other() {
        let msg = error_at(
            json!({"brokers": "a:1", "topic": "t", "key": "{{job_uuid}}", "partition_key": "id"}),
            "d.partition_key",
        );
        assert!(msg.contains("cannot be combined with key"));
    }

    #[test]
    fn partition_strategies_and_manual_partition() {
        let strategy = |v: Value| parse(v).unwrap().partition_strategy;
        assert_eq!(
            strategy(json!({"brokers": "a:1", "topic": "t", "partition_strategy": "random"})),
            PartitionStrategy::Random
        );
        assert_eq!(
            strategy(json!({"brokers": "a:1", "topic": "t", "partition_strategy": "ROUND_ROBIN"})),
            PartitionStrategy::RoundRobin
        );
        assert_eq!(
            strategy(
                json!({"brokers": "a:1", "topic": "t", "partition_strategy": "manual", "partition": 3})
            ),
            PartitionStrategy::Manual(PartitionChoice::Fixed(3))
        );
        assert_eq!(
            strategy(
                json!({"brokers": "a:1", "topic": "t", "partition_strategy": "manual", "partition": "2"})
            ),
            PartitionStrategy::Manual(PartitionChoice::Fixed(2))
        );
        assert!(matches!(
            strategy(
                json!({"brokers": "a:1", "topic": "t", "partition_strategy": "manual", "partition": "{{priority}}"})
            ),
            PartitionStrategy::Manual(PartitionChoice::Template(_))
        ));
        assert!(
            error_at(
                json!({"brokers": "a:1", "topic": "t", "partition_strategy": "sticky"}),
                "d.partition_strategy"
            )
            .contains("hash, random, round_robin, manual")
        );
        assert!(
            error_at(
                json!({"brokers": "a:1", "topic": "t", "partition_strategy": "manual"}),
                "d.partition"
            )
            .starts_with("is required")
        );
        assert!(
            error_at(json!({"brokers": "a:1", "topic": "t", "partition": 1}), "d.partition")
                .contains("only used with partition_strategy: manual")
        );
        assert!(error_at(json!({"brokers": "a:1", "topic": "t", "partition_strategy": "manual", "partition": -1}), "d.partition").contains("0 or more"));
        assert!(error_at(json!({"brokers": "a:1", "topic": "t", "partition_strategy": "manual", "partition": "x"}), "d.partition").contains("or a template"));
        assert!(error_at(json!({"brokers": "a:1", "topic": "t", "partition_strategy": "manual", "partition": true}), "d.partition").contains("got a boolean"));
    }

    #[test]
    fn acks_and_idempotence() {
        let acks = |v: Value| {
            parse(json!({"brokers": "a:1", "topic": "t", "required_acks": v})).unwrap().acks
        };
        assert_eq!(acks(json!(0)), Acks::None);
        assert_eq!(acks(json!("1")), Acks::Leader);
        assert_eq!(acks(json!(-1)), Acks::All);
        assert_eq!(acks(json!("ALL")), Acks::All);
        assert!(
            error_at(
                json!({"brokers": "a:1", "topic": "t", "required_acks": 2}),
                "d.required_acks"
            )
            .contains("0, 1, -1 or all")
        );
        assert!(
            error_at(
                json!({"brokers": "a:1", "topic": "t", "required_acks": [1]}),
                "d.required_acks"
            )
            .contains("got a list")
        );
        assert!(
            parse(json!({"brokers": "a:1", "topic": "t", "idempotent": true})).unwrap().idempotent
        );
        assert!(
            error_at(
                json!({"brokers": "a:1", "topic": "t", "idempotent": true, "required_acks": 1}),
                "d.idempotent"
            )
            .contains("required_acks: all")
        );
    }

    #[test]
    fn compression_has_two_names() {
        let codec = |v: Value| parse(v).unwrap().compression;
        assert_eq!(codec(json!({"brokers": "a:1", "topic": "t", "compression": "zstd"})), "zstd");
        assert_eq!(
            codec(json!({"brokers": "a:1", "topic": "t", "compression_codec": "LZ4"})),
            "lz4"
        );
        assert!(
            error_at(
                json!({"brokers": "a:1", "topic": "t", "compression": "brotli"}),
                "d.compression"
            )
            .contains("none, gzip, snappy, lz4, zstd")
        );
        assert!(error_at(json!({"brokers": "a:1", "topic": "t", "compression": "gzip", "compression_codec": "gzip"}), "d.compression_codec").contains("only one"));
    }

    #[test]
    fn sizes_batches_and_timeouts_are_bounded() {
        let cfg = parse(
            json!({"brokers": "a:1", "topic": "t", "max_message_bytes": "8MiB", "timeout": "5s"}),
        )
        .unwrap();
        assert_eq!(cfg.max_message_bytes, 8 * 1024 * 1024);
        assert_eq!(cfg.timeout, Duration::from_secs(5));
        assert!(
            error_at(
                json!({"brokers": "a:1", "topic": "t", "max_message_bytes": 10}),
                "d.max_message_bytes"
            )
            .contains("between 1000")
        );
        assert!(
            error_at(
                json!({"brokers": "a:1", "topic": "t", "max_message_bytes": "lots"}),
                "d.max_message_bytes"
            )
            .contains("must be a size")
        );
        assert!(
            error_at(json!({"brokers": "a:1", "topic": "t", "batch_size": 0}), "d.batch_size")
                .contains("between 1")
        );
        assert!(
            error_at(json!({"brokers": "a:1", "topic": "t", "batch_size": "many"}), "d.batch_size")
                .contains("positive integer")
        );
        assert!(
            error_at(
                json!({"brokers": "a:1", "topic": "t", "batch_timeout": "1h"}),
                "d.batch_timeout"
            )
            .contains("900s")
        );
        assert!(
            error_at(json!({"brokers": "a:1", "topic": "t", "timeout": "10ms"}), "d.timeout")
                .contains("at least 100ms")
        );
        assert!(
            error_at(
                json!({"brokers": "a:1", "topic": "t", "timeout": "1s", "batch_timeout": "2s"}),
                "d.batch_timeout"
            )
            .contains("shorter than timeout")
        );
        assert!(
            error_at(json!({"brokers": "a:1", "topic": "t", "timeout": "2h"}), "d.timeout")
                .contains("at most 1h")
        );
    }

    #[test]
    fn sasl_block_and_flat_keys() {
        let cfg = parse(json!({"brokers": "a:1", "topic": "t", "sasl": {"mechanism": "plain", "username": "u", "password": "p"}})).unwrap();
        assert_eq!(cfg.sasl.unwrap().mechanism, "PLAIN");
        assert!(error_at(json!({"brokers": "a:1", "topic": "t", "sasl": {"mechanism": "GSSAPI", "username": "u", "password": "p"}}), "d.sasl.mechanism").contains("PLAIN, SCRAM-SHA-256, SCRAM-SHA-512"));
        assert!(
            error_at(
                json!({"brokers": "a:1", "topic": "t", "sasl": {"username": "u", "password": "p"}}),
                "d.sasl.mechanism"
            )
            .starts_with("is required")
        );
        assert!(error_at(json!({"brokers": "a:1", "topic": "t", "sasl": {"mechanism": "PLAIN", "password": "p"}}), "d.sasl.username").starts_with("is required"));
        assert!(error_at(json!({"brokers": "a:1", "topic": "t", "sasl": {"mechanism": "PLAIN", "username": "u"}}), "d.sasl.password").starts_with("is required"));
        assert!(error_at(json!({"brokers": "a:1", "topic": "t", "sasl": {"mechanism": "PLAIN", "username": "u", "password": "p", "pasword": 1}}), "d.sasl.pasword").contains("did you mean 'password'"));
        assert!(
            error_at(json!({"brokers": "a:1", "topic": "t", "sasl": "PLAIN"}), "d.sasl")
                .contains("mapping")
        );
        assert!(error_at(json!({"brokers": "a:1", "topic": "t", "sasl": {"mechanism": "PLAIN", "username": "u", "password": "p"}, "sasl_enabled": true}), "d.sasl_enabled").contains("one form"));
        assert!(
            error_at(
                json!({"brokers": "a:1", "topic": "t", "sasl_mechanism": "PLAIN"}),
                "d.sasl_enabled"
            )
            .contains("must be true")
        );
        assert!(error_at(json!({"brokers": "a:1", "topic": "t", "sasl_enabled": false, "sasl_mechanism": "PLAIN"}), "d.sasl_mechanism").contains("sasl_enabled is false"));
        assert!(error_at(json!({"brokers": "a:1", "topic": "t", "sasl_enabled": true, "sasl_mechanism": "PLAIN"}), "d.sasl_username").starts_with("is required"));
        assert!(
            parse(json!({"brokers": "a:1", "topic": "t", "sasl_enabled": false}))
                .unwrap()
                .sasl
                .is_none()
        );
        // The password never appears in messages.
        let all = errors(
            json!({"brokers": "a:1", "topic": "t", "sasl": {"mechanism": "X", "username": "u", "password": "hunter2"}}),
        );
        assert!(all.iter().all(|(_, m)| !m.contains("hunter2")), "{all:?}");
    }

    #[test]
    fn tls_block() {
        let cfg =
            parse(json!({"brokers": "a:1", "topic": "t", "tls": {"ca_file": "/ca.pem"}})).unwrap();
        assert_eq!(cfg.tls.unwrap().ca_file.as_deref(), Some("/ca.pem"));
        assert!(
            parse(json!({"brokers": "a:1", "topic": "t", "tls": {"enabled": false}}))
                .unwrap()
                .tls
                .is_none()
        );
        assert!(
            error_at(
                json!({"brokers": "a:1", "topic": "t", "tls": {"cert_file": "/c.pem"}}),
                "d.tls.key_file"
            )
            .starts_with("is required")
        );
        assert!(
            error_at(
                json!({"brokers": "a:1", "topic": "t", "tls": {"key_file": "/k.pem"}}),
                "d.tls.cert_file"
            )
            .starts_with("is required")
        );
        assert!(
            error_at(
                json!({"brokers": "a:1", "topic": "t", "tls": {"ca_file": ""}}),
                "d.tls.ca_file"
            )
            .contains("not be empty")
        );
        assert!(
            error_at(
                json!({"brokers": "a:1", "topic": "t", "tls": {"verify": false}}),
                "d.tls.verify"
            )
            .contains("unknown key")
        );
        assert!(
            error_at(json!({"brokers": "a:1", "topic": "t", "tls": true}), "d.tls")
                .contains("mapping")
        );
    }

    #[test]
    fn headers_are_templates_and_the_reserved_ones_are_refused() {
        let cfg =
            parse(json!({"brokers": "a:1", "topic": "t", "headers": {"x-task": "{{task_name}}"}}))
                .unwrap();
        assert_eq!(cfg.headers[0].0, "x-task");
        assert!(
            error_at(
                json!({"brokers": "a:1", "topic": "t", "headers": {"Outflow-Delivery-Id": "x"}}),
                "d.headers.Outflow-Delivery-Id"
            )
            .contains("outflow sets it")
        );
        assert!(
            error_at(
                json!({"brokers": "a:1", "topic": "t", "headers": {"outflow-job-uuid": "x"}}),
                "d.headers.outflow-job-uuid"
            )
            .contains("outflow sets it")
        );
        assert!(
            error_at(json!({"brokers": "a:1", "topic": "t", "headers": {"n": 1}}), "d.headers.n")
                .contains("must be a string")
        );
        assert!(
            error_at(
                json!({"brokers": "a:1", "topic": "t", "headers": {"n": "{{x"}}),
                "d.headers.n"
            )
            .contains("invalid template")
        );
        assert!(
            error_at(json!({"brokers": "a:1", "topic": "t", "headers": ["a"]}), "d.headers")
                .contains("mapping")
        );
    }

    #[test]
    fn format_and_template() {
        assert_eq!(
            parse(json!({"brokers": "a:1", "topic": "t", "format": "json_compact"}))
                .unwrap()
                .format
                .name(),
            "json_compact"
        );
        assert!(
            error_at(json!({"brokers": "a:1", "topic": "t", "format": "avro"}), "d.format")
                .contains("json, json_compact")
        );
        assert!(
            error_at(json!({"brokers": "a:1", "topic": "t", "format": "template"}), "d.format")
                .contains("needs a 'template'")
        );
        assert!(
            error_at(json!({"brokers": "a:1", "topic": "t", "template": "{{x}}"}), "d.template")
                .contains("only used with format: template")
        );
    }

    #[test]
    fn unknown_keys_suggest_the_right_one() {
        assert!(
            error_at(json!({"brokers": "a:1", "topic": "t", "topik": "x"}), "d.topik")
                .contains("did you mean 'topic'")
        );
    }

    #[test]
    fn field_paths_read_names_dotted_paths_and_pointers() {
        let v = json!({"service": "api", "user": {"id": 7, "tags": ["a", "b"]}, "a.b": true, "none": null});
        let get = |p: &str| FieldPath::parse(p).unwrap().lookup(&v);
        assert_eq!(get("service").as_deref(), Some("api"));
        assert_eq!(get("user.id").as_deref(), Some("7"));
        assert_eq!(get("/user/id").as_deref(), Some("7"));
        assert_eq!(get("user.tags.1").as_deref(), Some("b"));
        assert_eq!(get("a.b").as_deref(), Some("true"));
        assert_eq!(get("user"), None);
        assert_eq!(get("none"), None);
        assert_eq!(get("missing"), None);
    }

    #[test]
    fn topic_names_are_validated() {
        assert!(validate_topic("logs-2025.01_x").is_ok());
        assert!(validate_topic("").unwrap_err().contains("empty"));
        assert!(validate_topic("a/b").unwrap_err().contains("'/'"));
        assert!(validate_topic("é").is_err());
    }
}
