//! Parsing and validation of a `type: rabbitmq` body.

use std::time::Duration;

use outflow_core::config::{ConfigError, DestinationSpec, FieldReader};
use outflow_core::format::OutputFormat;
use outflow_core::retry::RetryPolicy;
use outflow_core::secret::Secret;
use outflow_core::template::Template;

use crate::messaging;
use crate::{BuildDefaults, common};

/// The exchange types `exchange_type` accepts.
pub(crate) const EXCHANGE_TYPES: &[&str] = &["direct", "fanout", "topic", "headers"];

const URL_EXPECTED: &str =
    "an AMQP URL such as \"amqp://user:${RABBITMQ_PASSWORD}@rabbitmq:5672/%2f\" (amqps:// for TLS)";

/// A validated RabbitMQ destination configuration.
#[derive(Debug, Clone)]
pub(crate) struct RabbitConfig {
    /// The broker URL; it may hold the password, so it is kept secret.
    pub url: Secret,
    /// The exchange published to; `""` is the default exchange (routes by queue name).
    pub exchange: String,
    /// Its type, used when it is declared.
    pub exchange_type: &'static str,
    /// Declare the exchange (durable) before the first publish.
    pub declare_exchange: bool,
    /// The routing key; `None` means the rendered queue name.
    pub routing_key: Option<Template>,
    /// A queue declared durable and bound to the exchange with the routing key.
    pub queue: Option<Template>,
    /// delivery_mode 2: the broker writes the message to disk.
    pub persistent: bool,
    /// Ask the broker to return unroutable messages, which then fail the delivery.
    pub mandatory: bool,
    /// The message body format.
    pub format: OutputFormat,
    /// Overrides the content type the format implies.
    pub content_type: Option<String>,
    /// Extra message headers, values templated.
    pub headers: Vec<(String, Template)>,
    /// The deadline of one attempt (connect, declare, publish, confirm).
    pub timeout: Duration,
    /// Retries.
    pub retry_policy: RetryPolicy,
}

/// Reads every key of `spec`, collecting every problem under `path`.
pub(crate) fn parse(
    spec: &DestinationSpec,
    defaults: &BuildDefaults,
    path: &str,
) -> Result<RabbitConfig, Vec<ConfigError>> {
    let mut r = FieldReader::new(&spec.fields, path);

    let url = r.secret("url", true);
    if let Some(url) = &url {
        check_url(&mut r, url.expose());
    }

    let exchange = r.string("exchange").unwrap_or_default();
    if let Err(msg) = check_name(&exchange, "exchange") {
        r.error("exchange", msg);
    }
    let exchange_type = match r.raw("exchange_type") {
        Some(_) => r.one_of("exchange_type", EXCHANGE_TYPES),
        None => Some("direct"),
    };
    let declare_exchange = r.bool("declare_exchange").unwrap_or(false);
    if declare_exchange && exchange.is_empty() {
        r.error("declare_exchange", "needs an exchange name (the default exchange always exists)");
    }
    if exchange.starts_with("amq.") && declare_exchange {
        r.error(
            "declare_exchange",
            format!("'{exchange}' is a built-in exchange (amq.*) and cannot be declared"),
        );
    }

    let routing_key =
        r.template("routing_key", false, "a routing key, e.g. \"jobs.{{task_name}}\"");
    let queue = queue_key(&mut r);
    if routing_key.is_none() && queue.is_none() && !r.has_errors() {
        r.error(
            "routing_key",
            "is required unless queue (or queue_name) is set, e.g. \"jobs.{{task_name}}\"",
        );
    }
    let persistent = r.bool("persistent").unwrap_or(true);
    let mandatory = r.bool("mandatory").unwrap_or(true);
    let format = common::read_format_default_raw(&mut r);
    let content_type = r.string("content_type");
    if content_type.as_deref().is_some_and(|ct| ct.trim().is_empty()) {
        r.error("content_type", "must not be empty (a media type such as application/json)");
    }
    let headers = messaging::read_headers(&mut r, |name| {
        if name.is_empty() || name.len() > 255 {
            Some(format!("header name '{name}' must be 1 to 255 bytes long"))
        } else if name.eq_ignore_ascii_case(messaging::JOB_UUID_HEADER) {
            Some(format!("header '{name}' cannot be set here: outflow sets it on every message"))
        } else {
            None
        }
    });
    let timeout = common::read_timeout(&mut r, defaults);
    let retry_policy = common::read_retry_policy(&mut r, defaults);

    let errors = r.finish();
    match (url, exchange_type, format) {
        (Some(url), Some(exchange_type), Some(format)) if errors.is_empty() => Ok(RabbitConfig {
            url,
            exchange,
            exchange_type,
            declare_exchange,
            routing_key,
            queue,
            persistent,
            mandatory,
            format,
            content_type,
            headers,
            timeout,
            retry_policy,
        }),
        _ => Err(errors),
    }
}

/// `queue`, or seed 003's spelling `queue_name`; not both.
fn queue_key(r: &mut FieldReader<'_>) -> Option<Template> {
    let expected = "a queue name, e.g. \"events_{{task_name}}\"";
    let queue = r.template("queue", false, expected);
    let queue_name = r.template("queue_name", false, expected);
    match (queue, queue_name) {
        (Some(_), Some(_)) => {
            r.error("queue_name", "is another spelling of queue: set only one of them");
            None
        }
        (q, n) => q.or(n),
    }
}

fn check_url(r: &mut FieldReader<'_>, url: &str) {
    if !(url.starts_with("amqp://") || url.starts_with("amqps://")) {
        r.error("url", format!("must start with amqp:// or amqps://; expected {URL_EXPECTED}"));
        return;
    }
    if let Err(e) = url.parse::<lapin::uri::AMQPUri>() {
        // The parser's message may quote the URL: never echo it (it can hold a password).
        let _ = e;
        r.error("url", format!("is not a valid AMQP URL; expected {URL_EXPECTED}"));
    }
}

/// Checks an exchange, queue or routing key name: AMQP short strings are at most 255 bytes,
/// and control characters are refused so a variable cannot smuggle them in.
pub(crate) fn check_name(name: &str, what: &str) -> Result<(), String> {
    if name.len() > 255 {
        return Err(format!(
            "{what} '{}...' is {} bytes long; AMQP allows 255",
            head(name),
            name.len()
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(format!("{what} '{}' contains a control character", name.escape_default()));
    }
    Ok(())
}

fn head(s: &str) -> String {
    s.chars().take(40).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::common::test_support::paths as errors_paths;
    use serde_json::{Value, json};

    fn errors(v: Value) -> Vec<ConfigError> {
        let spec = DestinationSpec::from_value(&v, "d").unwrap();
        parse(&spec, &BuildDefaults::default(), "d").unwrap_err()
    }

    fn ok(v: Value) -> RabbitConfig {
        let spec = DestinationSpec::from_value(&v, "d").unwrap();
        parse(&spec, &BuildDefaults::default(), "d").unwrap()
    }

    const URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

    #[test]
    fn seed_003_queue_name_is_accepted() {
        let c = ok(json!({"type": "rabbitmq", "url": URL, "queue_name": "event_queue"}));
        assert_eq!(c.queue.unwrap().source(), "event_queue");
        assert!(c.persistent && c.mandatory && !c.declare_exchange);
        assert_eq!(c.exchange, "");
        assert_eq!(c.format.name(), "raw");
    }

    #[test]
    fn url_is_required_and_checked_without_echoing_it() {
        let errs = errors(json!({"type": "rabbitmq", "queue": "q"}));
        assert_eq!(errs[0].path, "d.url");
        let errs = errors(json!({"type": "rabbitmq", "url": "http://u:hunter2@h/", "queue": "q"}));
        assert_eq!(errs[0].path, "d.url");
        assert!(!errs[0].message.contains("hunter2"));
        let errs = errors(
            json!({"type": "rabbitmq", "url": "amqp://u:hunter2@h:notaport/", "queue": "q"}),
        );
        assert_eq!(errs[0].path, "d.url");
        assert!(!errs[0].message.contains("hunter2"), "{}", errs[0].message);
    }

    #[test]
    fn routing_key_or_queue_is_required() {
        let errs = errors(json!({"type": "rabbitmq", "url": URL, "exchange": "x"}));
        assert_eq!(errs[0].path, "d.routing_key");
        assert!(errs[0].message.contains("queue"), "{}", errs[0].message);
    }

    #[test]
    fn queue_and_queue_name_are_exclusive() {
        let errs = errors(json!({"type": "rabbitmq", "url": URL, "queue": "a", "queue_name": "b"}));
        assert_eq!(errs[0].path, "d.queue_name");
    }

    #[test]
    fn exchange_options_are_checked() {
        let errs = errors(
            json!({"type": "rabbitmq", "url": URL, "exchange": "x", "exchange_type": "bogus", "routing_key": "k"}),
        );
        assert_eq!(errs[0].path, "d.exchange_type");
        assert!(errs[0].message.contains("direct, fanout, topic, headers"));
        let errs = errors(
            json!({"type": "rabbitmq", "url": URL, "declare_exchange": true, "routing_key": "k"}),
        );
        assert_eq!(errs[0].path, "d.declare_exchange");
        let errs = errors(
            json!({"type": "rabbitmq", "url": URL, "exchange": "amq.topic", "declare_exchange": true, "routing_key": "k"}),
        );
        assert_eq!(errs[0].path, "d.declare_exchange");
        let errs =
            errors(json!({"type": "rabbitmq", "url": URL, "exchange": "a\nb", "routing_key": "k"}));
        assert_eq!(errs[0].path, "d.exchange");
    }

    #[test]
    fn templates_headers_and_unknown_keys() {
        let errs = errors(json!({
            "type": "rabbitmq", "url": URL, "routing_key": "{{", "queue": "q",
            "headers": {"outflow-job-uuid": "x"}, "content_type": " ", "persistant": true,
            "timeout_seconds": 0, "format": "template"
        }));
        let paths: Vec<&str> = errors_paths(&errs);
        assert_eq!(
            paths,
            [
                "d.routing_key",
                "d.format",
                "d.content_type",
                "d.headers.outflow-job-uuid",
                "d.timeout_seconds",
                "d.persistant"
            ]
        );
        assert!(errs[5].message.contains("did you mean 'persistent'"), "{}", errs[5].message);
    }

    #[test]
    fn names_are_bounded() {
        assert!(check_name(&"a".repeat(255), "queue").is_ok());
        assert!(check_name(&"a".repeat(256), "queue").unwrap_err().contains("256 bytes"));
        assert!(check_name("a\u{0}b", "queue").is_err());
    }
}
