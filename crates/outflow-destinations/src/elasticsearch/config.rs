//! Parsing and validating a `type: elasticsearch` (or `opensearch`) body.

use std::path::PathBuf;
use std::time::Duration;

use base64::Engine as _;
use outflow_core::config::{ConfigError, DestinationSpec, FieldReader};
use outflow_core::netpolicy::NetworkPolicy;
use outflow_core::retry::RetryPolicy;
use outflow_core::secret::Secret;
use serde_json::Value;

use super::index::{IndexName, Rotation};
use crate::{BuildDefaults, common};

/// What a valid address looks like, for messages.
pub const ADDRESS_EXPECTED: &str =
    "a list of http:// or https:// URLs, e.g. [\"http://localhost:9200\"]";

/// `op_type`: how a document is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpType {
    /// `index`: create or replace the document with this `_id`.
    Index,
    /// `create`: only create; an existing `_id` is left as it is.
    Create,
}

/// How requests authenticate.
#[derive(Debug, Clone)]
pub enum Auth {
    /// `username`/`password`: HTTP Basic.
    Basic {
        /// The user.
        username: String,
        /// The password.
        password: Secret,
    },
    /// `api_key`: `Authorization: ApiKey <base64(id:key)>`.
    ApiKey(Secret),
}

/// A validated elasticsearch configuration.
#[derive(Debug, Clone)]
pub struct ElasticsearchConfig {
    /// Cluster base URLs, tried round-robin with failover.
    pub addresses: Vec<url::Url>,
    /// The index name template and its date suffix.
    pub index: IndexName,
    /// `pipeline`: the ingest pipeline documents go through.
    pub pipeline: Option<String>,
    /// Authentication.
    pub auth: Option<Auth>,
    /// `tls_ca_file`: PEM certificates to trust in addition to the system roots.
    pub tls_ca_file: Option<PathBuf>,
    /// `tls_insecure`: accept any certificate (testing only).
    pub tls_insecure: bool,
    /// `id_field`: a JSON pointer (`/event/id`) or top-level key of the output whose value is
    /// the `_id`; without it the `_id` is the delivery id.
    pub id_field: Option<String>,
    /// `op_type`.
    pub op_type: OpType,
    /// `timestamp_field`: where the job's completion time goes (default `@timestamp`).
    pub timestamp_field: String,
    /// `job_fields_key`: the object the job fields go under (default `outflow`); `None` to
    /// leave them out.
    pub job_fields_key: Option<String>,
    /// `message_field`: the field a text output goes in (default `message`).
    pub message_field: String,
    /// `max_bulk_bytes`: the largest `_bulk` request body.
    pub max_bulk_bytes: u64,
    /// `batch_size`: the most documents per `_bulk` request (seed 001).
    pub batch_size: usize,
    /// `bulk_workers`: how many `_bulk` requests of one batch run at once (seed 001).
    pub bulk_workers: usize,
    /// `batch_timeout`: seed 001's flush interval, kept for the engine's batcher.
    pub batch_timeout: Option<Duration>,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Retries.
    pub retry_policy: RetryPolicy,
    /// The global network policy plus this destination's additions.
    pub network: NetworkPolicy,
}

/// Decodes an Elastic Cloud id (`name:base64(host$es_uuid$kibana_uuid)`) into the
/// cluster's URL, `https://<es_uuid>.<host>` (port 443 unless the host names one).
pub fn decode_cloud_id(cloud_id: &str) -> Result<url::Url, String> {
    let encoded = cloud_id.rsplit_once(':').map_or(cloud_id, |(_, b)| b);
    let bad = |why: &str| format!("is not a valid Elastic Cloud id ({why})");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(encoded.trim()))
        .map_err(|_| bad("the part after ':' is not base64"))?;
    let text = String::from_utf8(bytes).map_err(|_| bad("it does not decode to text"))?;
    let mut parts = text.split('$');
    let host = parts.next().filter(|h| !h.is_empty()).ok_or_else(|| bad("no host"))?;
    let es = parts.next().filter(|u| !u.is_empty()).ok_or_else(|| bad("no cluster id"))?;
    let (host, port) = match host.rsplit_once(':') {
        Some((h, p)) if p.parse::<u16>().is_ok() => (h, p),
        _ => (host, "443"),
    };
    url::Url::parse(&format!("https://{es}.{host}:{port}/")).map_err(|_| bad("bad host"))
}

impl ElasticsearchConfig {
    /// Parses `spec`, reporting every problem under `path`.
    pub fn parse(
        spec: &DestinationSpec,
        defaults: &BuildDefaults,
        path: &str,
    ) -> Result<ElasticsearchConfig, Vec<ConfigError>> {
        let mut r = FieldReader::new(&spec.fields, path);

        let addresses = Self::parse_addresses(&mut r);
        let index_src = r.template(
            "index",
            true,
            "the index name (a template), e.g. logs-{{task_name}} or logs-%{+YYYY.MM.dd}",
        );
        let rotation = match r.raw("index_rotation") {
            Some(_) => r.one_of("index_rotation", Rotation::NAMES),
            None => Some("none"),
        }
        .and_then(Rotation::parse);
        let index = match (index_src, rotation) {
            (Some(t), Some(rot)) => match IndexName::new(t, rot) {
                Ok(i) => Some(i),
                Err(msg) => {
                    r.error("index", msg);
                    None
                }
            },
            _ => None,
        };

        let pipeline = r.string("pipeline");
        if let Some(p) = &pipeline
            && (p.is_empty() || !p.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)))
        {
            r.error("pipeline", format!("'{p}' is not a pipeline id (letters, digits, - _ .)"));
        }

        let username = r.string("username");
        let password = r.secret("password", false);
        let api_key = r.secret("api_key", false);
        let auth = match (username, password, api_key) {
            (None, None, None) => None,
            (Some(username), Some(password), None) => Some(Auth::Basic { username, password }),
            (None, None, Some(key)) => Some(Auth::ApiKey(key)),
            (u, p, Some(_)) if u.is_some() || p.is_some() => {
                r.error("api_key", "use either api_key or username/password, not both");
                None
            }
            (Some(_), None, _) => {
                r.error("password", "is required with username");
                None
            }
            _ => {
                r.error("username", "is required with password");
                None
            }
        };

        let tls_ca_file = r.string("tls_ca_file").map(PathBuf::from);
        let tls_insecure = r.bool("tls_insecure").unwrap_or(false);
        let id_field = r.string("id_field");
        if id_field.as_deref() == Some("") {
            r.error("id_field", "must name a field, e.g. event_id or /event/id");
        }
        let op_type = match r.raw("op_type") {
            Some(_) => r.one_of("op_type", &["index", "create"]),
            None => Some("index"),
        }
        .map(|o| if o == "create" { OpType::Create } else { OpType::Index });
        let timestamp_field = r.string("timestamp_field").unwrap_or_else(|| "@timestamp".into());
        let message_field = r.string("message_field").unwrap_or_else(|| "message".into());
        let job_fields_key = match r.raw("job_fields_key") {
            Some(Value::Bool(false)) => None,
            Some(Value::String(s)) if s.is_empty() => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => {
                r.error("job_fields_key", "must be a field name, or false to leave job fields out");
                None
            }
            None => Some("outflow".into()),
        };
        for (key, value) in
            [("timestamp_field", &timestamp_field), ("message_field", &message_field)]
        {
            if value.is_empty() {
                r.error(key, "must not be empty");
            }
        }

        let max_bulk_bytes = r.size("max_bulk_bytes").unwrap_or(10 * 1024 * 1024);
        if max_bulk_bytes == 0 {
            r.error("max_bulk_bytes", "must be greater than 0 (e.g. \"10MiB\")");
        }
        let batch_size: usize =
            r.optional("batch_size", "a positive number of documents").unwrap_or(500);
        if batch_size == 0 {
            r.error("batch_size", "must be at least 1");
        }
        let bulk_workers: usize =
            r.optional("bulk_workers", "a positive number of concurrent requests").unwrap_or(2);
        if bulk_workers == 0 {
            r.error("bulk_workers", "must be at least 1");
        }
        let batch_timeout = r.duration_secs("batch_timeout");

        let timeout = common::read_timeout(&mut r, defaults);
        let retry_policy = common::read_retry_policy(&mut r, defaults);
        let network = common::read_network(&mut r, &defaults.network, "search.internal");

        let errors = r.finish();
        if !errors.is_empty() {
            return Err(errors);
        }
        let missing = || vec![ConfigError::new(path, "invalid elasticsearch configuration")];
        Ok(ElasticsearchConfig {
            addresses: addresses.ok_or_else(missing)?,
            index: index.ok_or_else(missing)?,
            pipeline,
            auth,
            tls_ca_file,
            tls_insecure,
            id_field,
            op_type: op_type.ok_or_else(missing)?,
            timestamp_field,
            job_fields_key,
            message_field,
            max_bulk_bytes,
            batch_size,
            bulk_workers,
            batch_timeout,
            timeout,
            retry_policy,
            network,
        })
    }

    /// `addresses` (a list or one URL) or `cloud_id`.
    fn parse_addresses(r: &mut FieldReader<'_>) -> Option<Vec<url::Url>> {
        let cloud_id = r.string("cloud_id");
        let given = r.raw("addresses");
        let list: Vec<String> = match (given, &cloud_id) {
            (Some(_), Some(_)) => {
                r.error("cloud_id", "give either addresses or cloud_id, not both");
                return None;
            }
            (None, Some(id)) => {
                return match decode_cloud_id(id) {
                    Ok(url) => Some(vec![url]),
                    Err(msg) => {
                        r.error("cloud_id", msg);
                        None
                    }
                };
            }
            (Some(Value::String(one)), None) => vec![one.clone()],
            (Some(_), None) => r.optional("addresses", ADDRESS_EXPECTED)?,
            (None, None) => {
                r.error("addresses", format!("is required ({ADDRESS_EXPECTED}), or give cloud_id"));
                return None;
            }
        };
        if list.is_empty() {
            r.error("addresses", format!("must not be empty; expected {ADDRESS_EXPECTED}"));
            return None;
        }
        let base = r.path_of("addresses");
        let mut out = Vec::new();
        for (i, a) in list.iter().enumerate() {
            let shown = outflow_core::config::mask_url_secrets(a);
            let parsed = url::Url::parse(a).map_err(|e| format!("'{shown}' is not a URL: {e}"));
            let checked = parsed.and_then(|u| {
                if !matches!(u.scheme(), "http" | "https") {
                    Err(format!("'{shown}': scheme '{}' is not http or https", u.scheme()))
                } else if u.host_str().is_none_or(str::is_empty) {
                    Err(format!("'{shown}' has no host"))
                } else if !u.username().is_empty() || u.password().is_some() {
                    Err(format!("'{shown}': put credentials in username/password, not the URL"))
                } else if u.query().is_some() {
                    Err(format!("'{shown}': a query string is not allowed in an address"))
                } else {
                    Ok(u)
                }
            });
            match checked {
                Ok(mut u) => {
                    if !u.path().ends_with('/') {
                        let p = format!("{}/", u.path());
                        u.set_path(&p);
                    }
                    out.push(u);
                }
                Err(msg) => {
                    r.extend([ConfigError::new(
                        format!("{base}[{i}]"),
                        format!("{msg}; expected {ADDRESS_EXPECTED}"),
                    )]);
                }
            }
        }
        (out.len() == list.len()).then_some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::common::test_support::{has, pairs};
    use serde_json::json;

    fn parse(v: Value) -> Result<ElasticsearchConfig, Vec<ConfigError>> {
        let spec = DestinationSpec::from_value(&v, "d").unwrap();
        ElasticsearchConfig::parse(&spec, &BuildDefaults::default(), "d")
    }

    fn errors(v: Value) -> Vec<(String, String)> {
        pairs(parse(v).unwrap_err())
    }

    #[test]
    fn seed_001_options_parse() {
        let cfg = parse(json!({"type": "elasticsearch", "addresses": ["http://localhost:9200"],
            "index": "logs", "index_rotation": "daily", "pipeline": "my-pipeline",
            "username": "elastic", "password": "changeme", "batch_size": 500,
            "batch_timeout": "5s", "bulk_workers": 2}))
        .unwrap();
        assert_eq!(cfg.addresses[0].as_str(), "http://localhost:9200/");
        assert_eq!(cfg.pipeline.as_deref(), Some("my-pipeline"));
        assert!(matches!(cfg.auth, Some(Auth::Basic { .. })));
        assert_eq!((cfg.batch_size, cfg.bulk_workers), (500, 2));
        assert_eq!(cfg.batch_timeout, Some(Duration::from_secs(5)));
        assert_eq!(cfg.op_type, OpType::Index);
        assert_eq!(cfg.job_fields_key.as_deref(), Some("outflow"));
    }

    #[test]
    fn missing_required_fields() {
        let errs = errors(json!({"type": "elasticsearch"}));
        assert!(has(&errs, "d.addresses", "is required"), "{errs:?}");
        assert!(has(&errs, "d.index", "is required"), "{errs:?}");
    }

    #[test]
    fn addresses_are_checked_one_by_one() {
        let errs = errors(json!({"type": "elasticsearch", "index": "i",
            "addresses": ["http://ok:9200", "ftp://x", "http://u:secret@h:9200", "nope"]}));
        assert!(has(&errs, "d.addresses[1]", "scheme 'ftp'"), "{errs:?}");
        assert!(has(&errs, "d.addresses[2]", "username/password"), "{errs:?}");
        assert!(has(&errs, "d.addresses[3]", "not a URL"), "{errs:?}");
        assert!(errs.iter().all(|(_, m)| !m.contains("secret")), "{errs:?}");
        let errs = errors(json!({"type": "elasticsearch", "index": "i", "addresses": []}));
        assert!(has(&errs, "d.addresses", "must not be empty"), "{errs:?}");
        let cfg =
            parse(json!({"type": "elasticsearch", "index": "i", "addresses": "http://h:9200/es"}))
                .unwrap();
        assert_eq!(cfg.addresses[0].as_str(), "http://h:9200/es/");
    }

    #[test]
    fn cloud_id_decodes_to_the_endpoint() {
        use base64::Engine as _;
        let encoded = base64::engine::general_purpose::STANDARD
            .encode("us-east-1.aws.found.io$abc123$kib456");
        let url = decode_cloud_id(&format!("my-deployment:{encoded}")).unwrap();
        assert_eq!(url.as_str(), "https://abc123.us-east-1.aws.found.io/");
        let encoded = base64::engine::general_purpose::STANDARD.encode("example.com:9243$es1$k");
        assert_eq!(
            decode_cloud_id(&format!("n:{encoded}")).unwrap().as_str(),
            "https://es1.example.com:9243/"
        );
        assert!(decode_cloud_id("name:!!!").unwrap_err().contains("not base64"));
        let errs = errors(json!({"type": "elasticsearch", "index": "i", "cloud_id": "x:eA==",
            "addresses": ["http://h"]}));
        assert!(has(&errs, "d.cloud_id", "not both"), "{errs:?}");
        let errs = errors(json!({"type": "elasticsearch", "index": "i", "cloud_id": "x:eA=="}));
        assert!(has(&errs, "d.cloud_id", "no cluster id"), "{errs:?}");
    }

    #[test]
    fn auth_combinations() {
        let base = json!({"type": "elasticsearch", "index": "i", "addresses": ["http://h"]});
        let with = |extra: Value| {
            let mut v = base.clone();
            v.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
            v
        };
        let cfg = parse(with(json!({"api_key": "id:key"}))).unwrap();
        assert!(matches!(cfg.auth, Some(Auth::ApiKey(_))));
        let errs = errors(with(json!({"api_key": "k", "username": "u", "password": "p"})));
        assert!(has(&errs, "d.api_key", "not both"), "{errs:?}");
        let errs = errors(with(json!({"username": "u"})));
        assert!(has(&errs, "d.password", "is required with username"), "{errs:?}");
        let errs = errors(with(json!({"password": "p"})));
        assert!(has(&errs, "d.username", "is required with password"), "{errs:?}");
    }

    #[test]
    fn other_options_are_validated() {
        let base = json!({"type": "elasticsearch", "index": "i", "addresses": ["http://h"]});
        let with = |extra: Value| {
            let mut v = base.clone();
            v.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
            v
        };
        let errs = errors(with(json!({"index_rotation": "hourly"})));
        assert!(has(&errs, "d.index_rotation", "none, daily, weekly, monthly, yearly"), "{errs:?}");
        let errs = errors(with(json!({"op_type": "upsert"})));
        assert!(has(&errs, "d.op_type", "index, create"), "{errs:?}");
        let errs = errors(with(json!({"pipeline": "a b"})));
        assert!(has(&errs, "d.pipeline", "not a pipeline id"), "{errs:?}");
        let errs = errors(with(json!({"batch_size": 0, "bulk_workers": 0, "max_bulk_bytes": 0})));
        assert!(has(&errs, "d.batch_size", "at least 1"), "{errs:?}");
        assert!(has(&errs, "d.bulk_workers", "at least 1"), "{errs:?}");
        assert!(has(&errs, "d.max_bulk_bytes", "greater than 0"), "{errs:?}");
        let errs = errors(with(json!({"id_field": ""})));
        assert!(has(&errs, "d.id_field", "must name a field"), "{errs:?}");
        let errs = errors(with(json!({"job_fields_key": 3})));
        assert!(has(&errs, "d.job_fields_key", "or false"), "{errs:?}");
        let cfg = parse(with(json!({"job_fields_key": false}))).unwrap();
        assert_eq!(cfg.job_fields_key, None);
        let errs = errors(with(json!({"index": "logs-%{+YYYY.MM.dd}", "index_rotation": "daily"})));
        assert!(has(&errs, "d.index", "either"), "{errs:?}");
        let errs = errors(with(json!({"allowed_hosts": ["http://x/"]})));
        assert!(has(&errs, "d.allowed_hosts[0]", "a URL"), "{errs:?}");
        let errs = errors(with(json!({"indx": "x"})));
        assert!(has(&errs, "d.indx", "did you mean 'index'"), "{errs:?}");
    }
}
