//! Parsing and validation of a `type: mqtt` body.

use std::path::PathBuf;
use std::time::Duration;

use outflow_core::config::{ConfigError, DestinationSpec, FieldReader};
use outflow_core::format::OutputFormat;
use outflow_core::retry::RetryPolicy;
use outflow_core::secret::Secret;
use outflow_core::template::Template;

use crate::messaging;
use crate::{BuildDefaults, common};

const URL_EXPECTED: &str =
    "an MQTT URL such as \"mqtt://broker:1883\" (mqtts://broker:8883 for TLS), or host and port";

/// The user property that carries the delivery id.
pub(crate) const DELIVERY_ID_PROPERTY: &str = "outflow-delivery-id";

/// A validated MQTT destination configuration.
#[derive(Debug, Clone)]
pub(crate) struct MqttConfig {
    /// The broker's host.
    pub host: String,
    /// The broker's port.
    pub port: u16,
    /// Connect with TLS.
    pub tls: bool,
    /// Root certificates (PEM) to trust instead of the platform's.
    pub ca_file: Option<PathBuf>,
    /// The client id; `None` means a unique one per connection.
    pub client_id: Option<String>,
    /// `username` (or the URL's user).
    pub username: Option<String>,
    /// `password` (or the URL's password).
    pub password: Option<Secret>,
    /// The topic published to.
    pub topic: Template,
    /// 0, 1 or 2.
    pub qos: u8,
    /// Ask the broker to keep the message as the topic's retained message.
    pub retain: bool,
    /// The message body format.
    pub format: OutputFormat,
    /// Extra user properties, values templated.
    pub user_properties: Vec<(String, Template)>,
    /// The deadline of one attempt.
    pub timeout: Duration,
    /// Retries.
    pub retry_policy: RetryPolicy,
}

/// Reads every key of `spec`, collecting every problem under `path`.
pub(crate) fn parse(
    spec: &DestinationSpec,
    defaults: &BuildDefaults,
    path: &str,
) -> Result<MqttConfig, Vec<ConfigError>> {
    let mut r = FieldReader::new(&spec.fields, path);

    let url = r.secret("url", false);
    let host = r.string("host");
    let port: Option<u16> = r.optional("port", "a port number (1 to 65535)");
    let mut tls = r.bool("tls");
    let (mut username, mut password) = (r.string("username"), r.secret("password", false));
    let (host, port) = match (url, host) {
        (Some(_), Some(_)) => {
            r.error("host", "set either url or host (and port), not both");
            (None, None)
        }
        (Some(url), None) => match parse_url(url.expose()) {
            Ok(parsed) => {
                if port.is_some() {
                    r.error("port", "is part of url; set it there");
                }
                if tls.is_some_and(|t| t != parsed.tls) {
                    r.error("tls", "contradicts the url's scheme (mqtts:// means TLS)");
                }
                tls = Some(parsed.tls);
                if parsed.username.is_some() {
                    if username.is_some() || password.is_some() {
                        r.error(
                            "username",
                            "the url already has credentials; set them in one place",
                        );
                    }
                    username = parsed.username;
                    password = parsed.password.map(Secret::new);
                }
                (Some(parsed.host), Some(parsed.port))
            }
            Err(msg) => {
                r.error("url", msg);
                (None, None)
            }
        },
        (None, Some(h)) if h.trim().is_empty() => {
            r.error("host", "must not be empty");
            (None, None)
        }
        (None, Some(h)) => {
            let default_port = if tls == Some(true) { 8883 } else { 1883 };
            (Some(h), Some(port.unwrap_or(default_port)))
        }
        (None, None) => {
            r.error("url", format!("is required (or host); expected {URL_EXPECTED}"));
            (None, None)
        }
    };
    if port == Some(0) {
        r.error("port", "must be between 1 and 65535");
    }
    if password.is_some() && username.is_none() {
        r.error("username", "is required with password");
    }
    let ca_file = r.string("ca_file").map(PathBuf::from);
    if ca_file.is_some() && tls != Some(true) {
        r.error("ca_file", "is only used with TLS (mqtts:// or tls: true)");
    }
    let client_id = r.string("client_id");
    if let Some(id) = &client_id
        && (id.is_empty() || id.len() > 65535)
    {
        r.error("client_id", "must be 1 to 65535 bytes long (omit it for a unique generated id)");
    }

    let topic = r.template("topic", true, "a topic, e.g. \"outflow/{{task_name}}/output\"");
    if let Some(t) = &topic
        && t.is_static()
        && let Err(msg) = check_topic(t.source())
    {
        r.error("topic", msg);
    }
    let qos = match r.raw("qos") {
        None => Some(1),
        Some(v) => match v.as_u64().or_else(|| v.as_str().and_then(|s| s.trim().parse().ok())) {
            Some(q @ 0..=2) => Some(q as u8),
            _ => {
                r.error("qos", format!("must be 0, 1 or 2, got {v}"));
                None
            }
        },
    };
    let retain = r.bool("retain").unwrap_or(false);
    let format = common::read_format_default_raw(&mut r);
    // `headers` travel as MQTT v5 user properties.
    let user_properties = messaging::read_headers(&mut r, |name| {
        if name.is_empty() {
            Some("a user property name must not be empty".into())
        } else if name == DELIVERY_ID_PROPERTY || name == messaging::JOB_UUID_HEADER {
            Some(format!(
                "user property '{name}' cannot be set here: outflow sets it on every message"
            ))
        } else {
            None
        }
    });
    let timeout = common::read_timeout(&mut r, defaults);
    let retry_policy = common::read_retry_policy(&mut r, defaults);

    let errors = r.finish();
    match (host, port, topic, qos, format) {
        (Some(host), Some(port), Some(topic), Some(qos), Some(format)) if errors.is_empty() => {
            Ok(MqttConfig {
                host,
                port,
                tls: tls.unwrap_or(false),
                ca_file,
                client_id,
                username,
                password,
                topic,
                qos,
                retain,
                format,
                user_properties,
                timeout,
                retry_policy,
            })
        }
        _ => Err(errors),
    }
}

struct ParsedUrl {
    host: String,
    port: u16,
    tls: bool,
    username: Option<String>,
    password: Option<String>,
}

fn parse_url(text: &str) -> Result<ParsedUrl, String> {
    // Never echo the URL: it can hold a password.
    let url = url::Url::parse(text)
        .map_err(|e| format!("is not a valid URL ({e}); expected {URL_EXPECTED}"))?;
    let (tls, default_port) = match url.scheme() {
        "mqtt" | "tcp" => (false, 1883),
        "mqtts" | "ssl" => (true, 8883),
        other => {
            return Err(format!("scheme '{other}' is not supported; expected {URL_EXPECTED}"));
        }
    };
    let host = url
        .host_str()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| format!("has no host; expected {URL_EXPECTED}"))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    if !matches!(url.path(), "" | "/") {
        return Err(format!(
            "must not have a path (the topic goes in topic); expected {URL_EXPECTED}"
        ));
    }
    let decode = |s: &str| {
        url::form_urlencoded::parse(format!("x={s}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default()
    };
    let username = (!url.username().is_empty()).then(|| decode(url.username()));
    let password = url.password().map(decode);
    Ok(ParsedUrl { host, port: url.port().unwrap_or(default_port), tls, username, password })
}

/// A publish topic: not empty, no wildcards (`+`, `#`), no NUL, at most 65535 bytes.
pub(crate) fn check_topic(topic: &str) -> Result<(), String> {
    if topic.is_empty() {
        return Err("topic is empty".into());
    }
    if topic.len() > 65535 {
        return Err(format!("topic is {} bytes long; MQTT allows 65535", topic.len()));
    }
    if topic.contains('\0') {
        return Err(format!("topic '{}' contains a NUL character", topic.escape_default()));
    }
    if topic.contains(['+', '#']) {
        return Err(format!(
            "topic '{topic}' contains a wildcard ('+' or '#'), which only subscriptions may use"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::common::test_support::paths;
    use serde_json::{Value, json};

    fn errors(v: Value) -> Vec<ConfigError> {
        let spec = DestinationSpec::from_value(&v, "d").unwrap();
        parse(&spec, &BuildDefaults::default(), "d").unwrap_err()
    }

    fn ok(v: Value) -> MqttConfig {
        let spec = DestinationSpec::from_value(&v, "d").unwrap();
        parse(&spec, &BuildDefaults::default(), "d").unwrap()
    }

    #[test]
    fn url_host_and_defaults() {
        let c =
            ok(json!({"type": "mqtt", "url": "mqtt://127.0.0.1:1884", "topic": "a/{{task_name}}"}));
        assert_eq!(
            (c.host.as_str(), c.port, c.tls, c.qos, c.retain),
            ("127.0.0.1", 1884, false, 1, false)
        );
        let c = ok(json!({"type": "mqtt", "url": "mqtts://u:p%40ss@broker", "topic": "a"}));
        assert_eq!((c.port, c.tls), (8883, true));
        assert_eq!(c.username.as_deref(), Some("u"));
        assert_eq!(c.password.unwrap().expose(), "p@ss");
        let c = ok(
            json!({"type": "mqtt", "host": "broker", "tls": true, "topic": "a", "qos": 2, "retain": true}),
        );
        assert_eq!((c.port, c.qos, c.retain), (8883, 2, true));
    }

    #[test]
    fn url_errors_never_echo_the_password() {
        let errs = errors(json!({"type": "mqtt", "url": "http://u:hunter2@b", "topic": "a"}));
        assert_eq!(paths(&errs), ["d.url"]);
        assert!(!errs[0].message.contains("hunter2"));
        let errs = errors(json!({"type": "mqtt", "url": "mqtt://b/path", "topic": "a"}));
        assert_eq!(paths(&errs), ["d.url"]);
        let errs = errors(json!({"type": "mqtt", "topic": "a"}));
        assert_eq!(paths(&errs), ["d.url"]);
        let errs = errors(json!({"type": "mqtt", "url": "mqtt://b", "host": "c", "topic": "a"}));
        assert_eq!(paths(&errs), ["d.host"]);
        let errs = errors(json!({"type": "mqtt", "url": "mqtt://b", "port": 1, "topic": "a"}));
        assert_eq!(paths(&errs), ["d.port"]);
        let errs = errors(json!({"type": "mqtt", "url": "mqtt://b", "tls": true, "topic": "a"}));
        assert_eq!(paths(&errs), ["d.tls"]);
    }

    #[test]
    fn topic_qos_and_credentials() {
        let errs = errors(json!({"type": "mqtt", "url": "mqtt://b"}));
        assert_eq!(paths(&errs), ["d.topic"]);
        for bad in ["a/+/b", "a/#", ""] {
            let errs = errors(json!({"type": "mqtt", "url": "mqtt://b", "topic": bad}));
            assert_eq!(paths(&errs), ["d.topic"], "{bad}");
        }
        let errs = errors(json!({"type": "mqtt", "url": "mqtt://b", "topic": "a", "qos": 3}));
        assert_eq!(paths(&errs), ["d.qos"]);
        assert!(errs[0].message.contains("0, 1 or 2"));
        let errs =
            errors(json!({"type": "mqtt", "url": "mqtt://b", "topic": "a", "password": "p"}));
        assert_eq!(paths(&errs), ["d.username"]);
        let errs =
            errors(json!({"type": "mqtt", "url": "mqtt://b", "topic": "a", "ca_file": "/x.pem"}));
        assert_eq!(paths(&errs), ["d.ca_file"]);
    }

    #[test]
    fn reserved_properties_and_unknown_keys() {
        let errs = errors(json!({
            "type": "mqtt", "url": "mqtt://b", "topic": "a",
            "headers": {"outflow-delivery-id": "x"}, "retian": true
        }));
        assert_eq!(paths(&errs), ["d.headers.outflow-delivery-id", "d.retian"]);
        assert!(errs[1].message.contains("did you mean 'retain'"), "{}", errs[1].message);
    }
}
