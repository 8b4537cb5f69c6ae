//! Parsing and validation of a `type: s3` body.

use std::time::Duration;

use outflow_core::compression::{COMPRESSION_NAMES, Compression};
use outflow_core::config::{ConfigError, DestinationSpec, FieldReader};
use outflow_core::format::{FORMAT_NAMES, OutputFormat};
use outflow_core::netpolicy::NetworkPolicy;
use outflow_core::retry::RetryPolicy;
use outflow_core::secret::Secret;
use outflow_core::template::Template;
use serde_json::Value;

use super::key::{PartitionFormat, Partitioning};
use crate::{BuildDefaults, common};

/// The smallest part S3 accepts (every part but the last).
pub const MIN_PART_SIZE: u64 = 5 * 1024 * 1024;
/// The largest part S3 accepts.
pub const MAX_PART_SIZE: u64 = 5 * 1024 * 1024 * 1024;
/// Default `multipart_threshold` and `part_size`: the AWS CLI's 8 MiB.
pub const DEFAULT_PART_SIZE: u64 = 8 * 1024 * 1024;
/// The key used when none is configured: unique per delivery, so a redelivery overwrites
/// the same object instead of adding a second one.
pub const DEFAULT_KEY: &str = "{{task_name}}/{{year}}/{{month}}/{{day}}/{{delivery_id}}.json";
/// The region when neither the config nor the environment names one.
pub const DEFAULT_REGION: &str = "us-east-1";

/// S3 storage classes (`x-amz-storage-class`).
pub const STORAGE_CLASSES: &[&str] = &[
    "STANDARD",
    "REDUCED_REDUNDANCY",
    "STANDARD_IA",
    "ONEZONE_IA",
    "INTELLIGENT_TIERING",
    "GLACIER",
    "DEEP_ARCHIVE",
    "GLACIER_IR",
    "OUTPOSTS",
    "SNOW",
    "EXPRESS_ONEZONE",
];

/// Server-side encryption modes (`x-amz-server-side-encryption`).
pub const SSE_MODES: &[&str] = &["AES256", "aws:kms", "aws:kms:dsse"];

/// Canned ACLs (`x-amz-acl`).
pub const CANNED_ACLS: &[&str] = &[
    "private",
    "public-read",
    "public-read-write",
    "authenticated-read",
    "aws-exec-read",
    "bucket-owner-read",
    "bucket-owner-full-control",
];

const PARTITIONING_NAMES: &[&str] = &["none", "hive", "plain"];
const PARTITION_FORMATS: &[&str] = &["year/month/day", "year/month/day/hour", "year-month-day"];

/// Where the credentials come from.
#[derive(Clone, PartialEq)]
pub(crate) enum Credentials {
    /// `access_key_id` + `secret_access_key` (+ `session_token`) from the config.
    Static { access_key_id: Secret, secret_access_key: Secret, session_token: Option<Secret> },
    /// A profile of the shared credentials file (`~/.aws/credentials`).
    Profile(String),
    /// The environment (`AWS_ACCESS_KEY_ID`..., `AWS_PROFILE`), web identity, ECS or the
    /// instance metadata service, in that order.
    Environment,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::Static { .. } => f.write_str("Static(********)"),
            Credentials::Profile(p) => write!(f, "Profile({p})"),
            Credentials::Environment => f.write_str("Environment"),
        }
    }
}

/// Server-side encryption.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Encryption {
    /// SSE-S3 (`AES256`).
    Aes256,
    /// SSE-KMS (`aws:kms`) or dual-layer (`aws:kms:dsse`), with an optional key id (else the
    /// bucket's AWS-managed key).
    Kms { dsse: bool, key_id: Option<String> },
}

/// A validated S3 destination configuration.
#[derive(Debug, Clone)]
pub(crate) struct S3Config {
    pub bucket: String,
    pub region: Option<String>,
    /// `http(s)://host[:port]` of an S3-compatible server; `None` means AWS.
    pub endpoint: Option<String>,
    pub force_path_style: bool,
    pub credentials: Credentials,
    pub key: Template,
    pub prefix: Option<Template>,
    pub partitioning: Partitioning,
    pub format: OutputFormat,
    pub compression: Compression,
    /// `None`: the codec's default (gzip 6, zstd 3).
    pub compression_level: Option<i32>,
    pub content_type: Option<String>,
    pub storage_class: Option<&'static str>,
    pub encryption: Option<Encryption>,
    /// User metadata: lowercase names (without `x-amz-meta-`) and value templates.
    pub metadata: Vec<(String, Template)>,
    pub acl: Option<&'static str>,
    pub multipart_threshold: u64,
    pub part_size: u64,
    pub timeout: Duration,
    pub retry_policy: RetryPolicy,
    /// Which addresses the endpoint may resolve to.
    pub network: NetworkPolicy,
}

const KEY_EXPECTED: &str = "an object key template, e.g. \"{{task_name}}/{{year}}/{{month}}/{{day}}/{{delivery_id}}.json\"";

/// Reads the value of `key` or of its seed spelling `alias` (seed 001's `key_template`, seed
/// 004's camelCase keys); both at once is an error. Returns the key that was given.
fn either(r: &mut FieldReader<'_>, key: &'static str, alias: &'static str) -> &'static str {
    let has_key = r.raw(key).is_some();
    let has_alias = r.raw(alias).is_some();
    if has_key && has_alias {
        r.error(alias, format!("is another name for '{key}'; set only one of them"));
    }
    if has_alias && !has_key { alias } else { key }
}

/// Reads every key of `spec`, collecting every problem under `path`.
pub(crate) fn parse(
    spec: &DestinationSpec,
    defaults: &BuildDefaults,
    path: &str,
) -> Result<S3Config, Vec<ConfigError>> {
    let mut r = FieldReader::new(&spec.fields, path);

    let bucket = r.required_string("bucket", "the bucket name, e.g. \"my-outputs\"");
    if let Some(b) = &bucket
        && let Err(msg) = validate_bucket(b)
    {
        r.error("bucket", msg);
    }

    let region = r.string("region");
    if region.as_deref().is_some_and(|s| s.trim().is_empty()) {
        r.error("region", "must not be empty (e.g. \"us-east-1\")");
    }
    let endpoint = r.string("endpoint").and_then(|e| match validate_endpoint(&e) {
        Ok(e) => Some(e),
        Err(msg) => {
            r.error("endpoint", msg);
            None
        }
    });
    let network = common::read_network(&mut r, &defaults.network, "minio.internal");
    if let Some(e) = &endpoint
        && let Ok(url) = url::Url::parse(e)
        && let Some(host) = url.host()
        && let Err(msg) = super::network::check_literal(&network, &host)
    {
        r.error("endpoint", msg);
    }
    // Compatible servers (MinIO, Ceph, s3s) are usually reached by IP or a name without
    // per-bucket DNS, so path style is their default; AWS itself defaults to virtual hosts.
    let force_path_style = r.bool("force_path_style").unwrap_or(endpoint.is_some());

    let credentials = parse_credentials(&mut r);

    let key_name = either(&mut r, "key", "key_template");
    let key = match r.raw(key_name) {
        Some(_) => r.template(key_name, false, KEY_EXPECTED),
        None => Some(Template::parse(DEFAULT_KEY).expect("the default key parses")),
    };
    if let Some(k) = &key
        && k.source().starts_with('/')
    {
        r.error(
            key_name,
            format!("must not start with '/' (S3 keys are relative), got '{}'", k.source()),
        );
    }
    let prefix = r.template("prefix", false, "a key prefix, e.g. \"archive/\"");

    let partitioning = parse_partitioning(&mut r);

    let format = read_format(&mut r);
    let compression = match r.raw("compression") {
        // Seed 004 writes `compression: true` for gzip.
        Some(Value::Bool(true)) => Compression::Gzip,
        Some(Value::Bool(false)) => Compression::None,
        Some(_) => r
            .one_of("compression", COMPRESSION_NAMES)
            .and_then(Compression::parse)
            .unwrap_or_default(),
        None => Compression::None,
    };
    let cl_key = either(&mut r, "compression_level", "compressionLevel");
    let compression_level = r.optional::<i32>(cl_key, "an integer level (gzip 0-9, zstd 1-22)");
    if let Some(level) = compression_level {
        let range = match compression {
            Compression::Gzip => Some(0..=9),
            Compression::Zstd => Some(1..=22),
            Compression::None => None,
        };
        match range {
            None => r.error(cl_key, "is only used with compression: gzip or zstd"),
            Some(range) if !range.contains(&level) => r.error(
                cl_key,
                format!(
                    "must be between {} and {} for {}, got {level}",
                    range.start(),
                    range.end(),
                    compression.name()
                ),
            ),
            Some(_) => {}
        }
    }

    let content_type = r.string("content_type");
    if let Some(ct) = &content_type
        && (ct.trim().is_empty() || !ct.bytes().all(|b| (0x20..0x7f).contains(&b)))
    {
        r.error("content_type", format!("'{ct}' is not a valid media type, e.g. application/json"));
    }

    let sc_key = either(&mut r, "storage_class", "storageClass");
    let storage_class = r.one_of(sc_key, STORAGE_CLASSES);
    let encryption = parse_encryption(&mut r);
    let metadata = parse_metadata(&mut r);
    let acl = r.one_of("acl", CANNED_ACLS);

    let mt_key = either(&mut r, "multipart_threshold", "multipartThreshold");
    let multipart_threshold = r.size(mt_key).unwrap_or(DEFAULT_PART_SIZE);
    if multipart_threshold == 0 {
        r.error(mt_key, "must be greater than 0 (a size such as \"8MiB\")");
    }
    let part_size = r.size("part_size").unwrap_or(DEFAULT_PART_SIZE);
    if !(MIN_PART_SIZE..=MAX_PART_SIZE).contains(&part_size) {
        r.error(
            "part_size",
            format!("must be between 5MiB and 5GiB (S3's part size limits), got {part_size} bytes"),
        );
    }

    for batching in ["batch_size", "batch_timeout", "bufferSize", "flushInterval"] {
        if r.raw(batching).is_some() {
            r.error(
                batching,
                "is not supported yet: batches are formed by the engine and written as one \
                 NDJSON object each (see deliver_batch)",
            );
        }
    }

    let timeout = common::read_timeout(&mut r, defaults);
    let retry_policy = common::read_retry_policy(&mut r, defaults);

    let errors = r.finish();
    match (bucket, key, format, credentials) {
        (Some(bucket), Some(key), Some(format), Some(credentials)) if errors.is_empty() => {
            Ok(S3Config {
                bucket,
                region,
                endpoint,
                force_path_style,
                credentials,
                key,
                prefix,
                partitioning,
                format,
                compression,
                compression_level,
                content_type,
                storage_class,
                encryption,
                metadata,
                acl,
                multipart_threshold,
                part_size,
                timeout,
                retry_policy,
                network,
            })
        }
        _ => Err(errors),
    }
}

/// Bucket names as S3 and compatible servers accept them; mostly this keeps `/`, `?` and
/// spaces out of the URL.
fn validate_bucket(bucket: &str) -> Result<(), String> {
    let valid_chars =
        bucket.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'));
    if !(3..=255).contains(&bucket.len()) || !valid_chars {
        return Err(format!(
            "'{bucket}' is not a valid bucket name: 3 to 255 characters of letters, digits, \
             '.', '-' and '_' (new AWS buckets: 3 to 63, lowercase)"
        ));
    }
    Ok(())
}

/// `http(s)://host[:port]` without a path; the trailing `/` is dropped.
fn validate_endpoint(endpoint: &str) -> Result<String, String> {
    let expected = "an http(s) URL of an S3-compatible server, e.g. \"http://127.0.0.1:9000\"";
    let url = url::Url::parse(endpoint)
        .map_err(|e| format!("'{endpoint}' is not a URL ({e}); expected {expected}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(format!("'{endpoint}' is not {expected}"));
    }
    if url.path() != "/" || url.query().is_some() {
        return Err(format!(
            "'{endpoint}' has a path or query; give the server's address only (the bucket is \
             the 'bucket' key)"
        ));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not carry credentials; use access_key_id and secret_access_key".into());
    }
    Ok(endpoint.trim_end_matches('/').to_string())
}

fn parse_credentials(r: &mut FieldReader<'_>) -> Option<Credentials> {
    let access_key_id = r.secret("access_key_id", false);
    let secret_access_key = r.secret("secret_access_key", false);
    let session_token = r.secret("session_token", false);
    let profile = r.string("profile");
    match (access_key_id, secret_access_key, profile) {
        (Some(_), Some(_), Some(_)) => {
            r.error("profile", "set either a profile or access_key_id/secret_access_key, not both");
            None
        }
        (Some(access_key_id), Some(secret_access_key), None) => {
            Some(Credentials::Static { access_key_id, secret_access_key, session_token })
        }
        (Some(_), None, _) => {
            r.error("secret_access_key", "is required when access_key_id is set");
            None
        }
        (None, Some(_), _) => {
            r.error("access_key_id", "is required when secret_access_key is set");
            None
        }
        (None, None, profile) => {
            if session_token.is_some() {
                r.error("session_token", "is only used with access_key_id and secret_access_key");
                return None;
            }
            match profile {
                Some(p) if p.trim().is_empty() => {
                    r.error("profile", "must not be empty");
                    None
                }
                Some(p) => Some(Credentials::Profile(p)),
                None => Some(Credentials::Environment),
            }
        }
    }
}

fn parse_partitioning(r: &mut FieldReader<'_>) -> Partitioning {
    let style = match r.raw("partitioning") {
        // Seed 004's `partitioning: true` means its Hive-style `year=/month=/day=` keys.
        Some(Value::Bool(true)) => Some("hive"),
        Some(Value::Bool(false)) | None => Some("none"),
        Some(_) => r.one_of("partitioning", PARTITIONING_NAMES),
    };
    let pf_key = either(r, "partition_format", "partitionFormat");
    let given = r.raw(pf_key).is_some();
    let format = match r.one_of(pf_key, PARTITION_FORMATS) {
        Some("year/month/day/hour") => PartitionFormat::Hour,
        Some("year-month-day") => PartitionFormat::Date,
        _ => PartitionFormat::Day,
    };
    match style {
        Some("hive") => Partitioning::Hive(format),
        Some("plain") => Partitioning::Plain(format),
        _ => {
            if given && style == Some("none") && r.raw("partitioning").is_some() {
                r.error(pf_key, "is only used with partitioning: hive or plain");
            } else if given && r.raw("partitioning").is_none() {
                // A format alone says the user wants partitions (seed 004 sets only it).
                return Partitioning::Hive(format);
            }
            Partitioning::None
        }
    }
}

fn parse_encryption(r: &mut FieldReader<'_>) -> Option<Encryption> {
    let sse_key = either(r, "server_side_encryption", "serverSideEncryption");
    let mode = r.one_of(sse_key, SSE_MODES);
    let kms_key = either(r, "kms_key_id", "kmsKeyId");
    let key_id = r.string(kms_key);
    match (mode, key_id) {
        (Some("AES256"), Some(_)) => {
            r.error(kms_key, "is only used with server_side_encryption: aws:kms or aws:kms:dsse");
            None
        }
        (Some("AES256"), None) => Some(Encryption::Aes256),
        (Some(m), key_id) => Some(Encryption::Kms { dsse: m == "aws:kms:dsse", key_id }),
        (None, Some(_)) if r.raw(sse_key).is_none() => {
            r.error(kms_key, "needs server_side_encryption: aws:kms");
            None
        }
        (None, _) => None,
    }
}

/// Names as S3 stores them: lowercase HTTP token characters. Values are templates.
fn parse_metadata(r: &mut FieldReader<'_>) -> Vec<(String, Template)> {
    let Some(map) = r.raw("metadata") else { return Vec::new() };
    let at = r.path_of("metadata");
    let Some(map) = map.as_object() else {
        r.error("metadata", "must be a mapping of names to values (templates)");
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut problems = Vec::new();
    for (name, value) in map {
        let path = format!("{at}.{name}");
        let lower = name.to_ascii_lowercase();
        let lower = lower.strip_prefix("x-amz-meta-").unwrap_or(&lower).to_string();
        let valid = !lower.is_empty()
            && lower.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if !valid {
            problems.push(ConfigError::new(
                &path,
                "is not a valid metadata name: letters, digits, '-', '_' and '.' only",
            ));
            continue;
        }
        let source = match value {
            Value::String(s) => s.clone(),
            Value::Number(_) | Value::Bool(_) => value.to_string(),
            other => {
                problems.push(ConfigError::new(
                    &path,
                    format!(
                        "must be a string (a template), got {}",
                        outflow_core::config::reader::type_name(other)
                    ),
                ));
                continue;
            }
        };
        match Template::parse(&source) {
            Ok(t) => out.push((lower, t)),
            Err(e) => problems.push(ConfigError::new(
                &path,
                format!("invalid template: {} (at byte {})", e.reason, e.offset),
            )),
        }
    }
    r.extend(problems);
    out
}

/// `format` (default `json`) and, for `format: template`, the `template` text.
fn read_format(r: &mut FieldReader<'_>) -> Option<OutputFormat> {
    let given = r.raw("format").is_some();
    let name = if given { r.one_of("format", FORMAT_NAMES) } else { Some("json") };
    let template = r.string("template");
    if template.is_some() && name != Some("template") && name.is_some() {
        r.error("template", "is only used with format: template");
    }
    match OutputFormat::parse(name?, template.as_deref()) {
        Ok(f) => Some(f),
        Err(msg) => {
            r.error(if template.is_some() { "template" } else { "format" }, msg);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::common::test_support::pairs;
    use serde_json::json;

    fn parse_json(v: Value) -> Result<S3Config, Vec<ConfigError>> {
        let mut v = v;
        v["type"] = json!("s3");
        let spec = DestinationSpec::from_value(&v, "d").unwrap();
        parse(&spec, &BuildDefaults::default(), "d")
    }

    fn errors(v: Value) -> Vec<(String, String)> {
        pairs(parse_json(v).unwrap_err())
    }

    fn one_error(v: Value) -> (String, String) {
        let errs = errors(v);
        assert_eq!(errs.len(), 1, "{errs:?}");
        errs.into_iter().next().unwrap()
    }

    #[test]
    fn minimal_config_takes_defaults() {
        let cfg = parse_json(json!({"bucket": "outputs"})).unwrap();
        assert_eq!(cfg.key.source(), DEFAULT_KEY);
        assert!(cfg.key.variables().any(|v| v == "delivery_id"));
        assert!(!cfg.force_path_style);
        assert_eq!(cfg.credentials, Credentials::Environment);
        assert_eq!(cfg.format.name(), "json");
        assert_eq!(cfg.compression, Compression::None);
        assert_eq!(cfg.multipart_threshold, DEFAULT_PART_SIZE);
        assert_eq!(cfg.part_size, DEFAULT_PART_SIZE);
        assert_eq!(cfg.partitioning, Partitioning::None);
        assert_eq!(cfg.timeout, Duration::from_secs(30));
    }

    #[test]
    fn every_option_parses() {
        let cfg = parse_json(json!({
            "bucket": "outputs", "region": "eu-west-1", "endpoint": "http://127.0.0.1:9000/",
            "allow_private_networks": true,
            "access_key_id": "AK", "secret_access_key": "SK", "session_token": "T",
            "key": "{{job_uuid}}.json", "prefix": "archive", "partitioning": "hive",
            "partition_format": "year/month/day/hour", "format": "json_compact",
            "compression": "zstd", "content_type": "application/x-custom",
            "storage_class": "standard_ia", "server_side_encryption": "aws:kms",
            "kms_key_id": "arn:aws:kms:k", "metadata": {"Job": "{{job_uuid}}"},
            "acl": "bucket-owner-full-control", "multipart_threshold": "16MiB",
            "part_size": "5MiB", "timeout_seconds": 5, "retry_policy": {"max_attempts": 2}
        }))
        .unwrap();
        assert_eq!(cfg.endpoint.as_deref(), Some("http://127.0.0.1:9000"));
        assert!(cfg.force_path_style, "an endpoint defaults to path style");
        assert!(matches!(cfg.credentials, Credentials::Static { session_token: Some(_), .. }));
        assert_eq!(format!("{:?}", cfg.credentials), "Static(********)");
        assert_eq!(cfg.partitioning, Partitioning::Hive(PartitionFormat::Hour));
        assert_eq!(cfg.storage_class, Some("STANDARD_IA"));
        assert_eq!(
            cfg.encryption,
            Some(Encryption::Kms { dsse: false, key_id: Some("arn:aws:kms:k".into()) })
        );
        assert_eq!(cfg.metadata[0].0, "job");
        assert_eq!(cfg.acl, Some("bucket-owner-full-control"));
        assert_eq!(cfg.multipart_threshold, 16 * 1024 * 1024);
        assert_eq!(cfg.part_size, MIN_PART_SIZE);
        assert_eq!(cfg.timeout, Duration::from_secs(5));
        assert_eq!(cfg.retry_policy.max_attempts, 2);
    }

    #[test]
    fn seed_spellings_are_accepted() {
        let cfg = parse_json(json!({
            "bucket": "logs-archive", "key_template": "{{year}}/logs-{{job_uuid}}.json.gz",
            "compression": true, "compressionLevel": 9, "storageClass": "GLACIER",
            "serverSideEncryption": "AES256",
            "partitionFormat": "year-month-day", "multipartThreshold": 5242880
        }))
        .unwrap();
        assert_eq!(cfg.key.source(), "{{year}}/logs-{{job_uuid}}.json.gz");
        assert_eq!(cfg.compression, Compression::Gzip);
        assert_eq!(cfg.compression_level, Some(9));
        assert_eq!(cfg.storage_class, Some("GLACIER"));
        assert_eq!(cfg.encryption, Some(Encryption::Aes256));
        assert_eq!(cfg.partitioning, Partitioning::Hive(PartitionFormat::Date));
        assert_eq!(cfg.multipart_threshold, MIN_PART_SIZE);
        let cfg = parse_json(json!({"bucket": "bkt", "partitioning": true})).unwrap();
        assert_eq!(cfg.partitioning, Partitioning::Hive(PartitionFormat::Day));
        let cfg = parse_json(json!({"bucket": "bkt", "compression": false})).unwrap();
        assert_eq!(cfg.compression, Compression::None);
    }

    #[test]
    fn bucket_is_required_and_checked() {
        assert_eq!(one_error(json!({})).0, "d.bucket");
        let (path, msg) = one_error(json!({"bucket": "a/b"}));
        assert_eq!(path, "d.bucket");
        assert!(msg.contains("'a/b' is not a valid bucket name"), "{msg}");
        assert_eq!(one_error(json!({"bucket": "ab"})).0, "d.bucket");
    }

    #[test]
    fn key_errors() {
        let (path, msg) = one_error(json!({"bucket": "bkt", "key": "/abs/{{job_uuid}}"}));
        assert_eq!(path, "d.key");
        assert!(msg.contains("must not start with '/'"), "{msg}");
        let (path, msg) = one_error(json!({"bucket": "bkt", "key": "{{job_uuid"}));
        assert_eq!(path, "d.key");
        assert!(msg.starts_with("invalid template"), "{msg}");
        let (path, msg) = one_error(json!({"bucket": "bkt", "key": "a", "key_template": "b"}));
        assert_eq!(path, "d.key_template");
        assert!(msg.contains("set only one"), "{msg}");
    }

    #[test]
    fn endpoint_errors() {
        for bad in ["ftp://x", "not a url", "http://h:9000/bucket", "http://u:p@h:9000"] {
            let (path, _) = one_error(json!({"bucket": "bkt", "endpoint": bad}));
            assert_eq!(path, "d.endpoint", "{bad}");
        }
        let cfg = parse_json(
            json!({"bucket": "bkt", "endpoint": "https://s3.example", "force_path_style": false}),
        )
        .unwrap();
        assert!(!cfg.force_path_style);
        assert_eq!(one_error(json!({"bucket": "bkt", "region": " "})).0, "d.region");
        let (path, msg) = one_error(json!({"bucket": "bkt", "endpoint": "http://127.0.0.1:9000"}));
        assert_eq!(path, "d.endpoint");
        assert!(msg.starts_with("refusing to connect to 127.0.0.1: loopback"), "{msg}");
        let allowed = json!({"bucket": "bkt", "endpoint": "http://127.0.0.1:9000", "allowed_hosts": ["127.0.0.1"]});
        assert!(parse_json(allowed).is_ok());
        let (path, _) = one_error(json!({"bucket": "bkt", "allowed_hosts": ["http://x"]}));
        assert_eq!(path, "d.allowed_hosts[0]");
    }

    #[test]
    fn credential_errors() {
        let (path, _) = one_error(json!({"bucket": "bkt", "access_key_id": "AK"}));
        assert_eq!(path, "d.secret_access_key");
        let (path, _) = one_error(json!({"bucket": "bkt", "secret_access_key": "SK"}));
        assert_eq!(path, "d.access_key_id");
        let (path, _) = one_error(json!({"bucket": "bkt", "session_token": "T"}));
        assert_eq!(path, "d.session_token");
        let (path, _) = one_error(
            json!({"bucket": "bkt", "access_key_id": "A", "secret_access_key": "S", "profile": "p"}),
        );
        assert_eq!(path, "d.profile");
        let (path, msg) = one_error(json!({"bucket": "bkt", "secret_access_key": ""}));
        assert_eq!((path.as_str(), msg.as_str()), ("d.secret_access_key", "must not be empty"));
        let cfg = parse_json(json!({"bucket": "bkt", "profile": "dev"})).unwrap();
        assert_eq!(cfg.credentials, Credentials::Profile("dev".into()));
    }

    #[test]
    fn option_value_errors() {
        let cases = [
            (json!({"storage_class": "COLD"}), "d.storage_class"),
            (json!({"server_side_encryption": "rot13"}), "d.server_side_encryption"),
            (json!({"server_side_encryption": "AES256", "kms_key_id": "k"}), "d.kms_key_id"),
            (json!({"kms_key_id": "k"}), "d.kms_key_id"),
            (json!({"acl": "everyone"}), "d.acl"),
            (json!({"compression": "brotli"}), "d.compression"),
            (json!({"compression_level": 9}), "d.compression_level"),
            (json!({"compression": "gzip", "compression_level": 10}), "d.compression_level"),
            (json!({"compression": "zstd", "compressionLevel": 0}), "d.compressionLevel"),
            (json!({"compression": "gzip", "compression_level": "high"}), "d.compression_level"),
            (json!({"format": "toml"}), "d.format"),
            (json!({"template": "x"}), "d.template"),
            (json!({"partitioning": "weekly"}), "d.partitioning"),
            (
                json!({"partitioning": "none", "partition_format": "year/month/day"}),
                "d.partition_format",
            ),
            (json!({"partition_format": "y/m"}), "d.partition_format"),
            (json!({"part_size": "1MiB"}), "d.part_size"),
            (json!({"multipart_threshold": 0}), "d.multipart_threshold"),
            (json!({"multipart_threshold": "lots"}), "d.multipart_threshold"),
            (json!({"metadata": ["a"]}), "d.metadata"),
            (json!({"metadata": {"bad name": "x"}}), "d.metadata.bad name"),
            (json!({"metadata": {"n": {"x": 1}}}), "d.metadata.n"),
            (json!({"metadata": {"n": "{{oops"}}), "d.metadata.n"),
            (json!({"content_type": "bad\u{7}type"}), "d.content_type"),
            (json!({"timeout_seconds": 0}), "d.timeout_seconds"),
            (json!({"batch_size": 100}), "d.batch_size"),
            (json!({"retry_policy": {"max_attempts": 0}}), "d.retry_policy.max_attempts"),
            (json!({"storage_clas": "STANDARD"}), "d.storage_clas"),
        ];
        for (extra, want) in cases {
            let mut spec = json!({"bucket": "bkt"});
            for (k, v) in extra.as_object().unwrap() {
                spec[k] = v.clone();
            }
            let errs = errors(spec.clone());
            assert!(errs.iter().any(|(p, m)| p == want && !m.is_empty()), "{spec}: {errs:?}");
        }
        let (_, msg) = one_error(json!({"bucket": "bkt", "storage_clas": "STANDARD"}));
        assert!(msg.contains("did you mean 'storage_class'"), "{msg}");
    }

    #[test]
    fn secrets_never_appear_in_errors() {
        let errs = errors(json!({"bucket": "bkt", "access_key_id": "AKIDSECRETVALUE"}));
        assert!(errs.iter().all(|(_, m)| !m.contains("AKIDSECRETVALUE")));
    }
}
