//! What the message-broker destinations ([`crate::rabbitmq`], [`crate::nats`],
//! [`crate::mqtt`]) share: templated `headers`, rendering of templated names, and the
//! deadline every attempt runs under. Their `format` key is [`crate::common::read_format_default_raw`].

use std::future::Future;
use std::time::Duration;

use outflow_core::config::{ConfigError, FieldReader};
use outflow_core::context::RenderContext;
use outflow_core::format::OutputFormat;
use outflow_core::template::Template;
use serde_json::Value;

use crate::{BatchResults, DeliveryError};

/// The header (AMQP header, NATS header, MQTT user property) that carries the job's uuid.
pub(crate) const JOB_UUID_HEADER: &str = "outflow-job-uuid";

/// `headers`: a mapping of name to templated value. `valid_name` says why a name is
/// refused (reserved, malformed), or `None` when it is fine.
pub(crate) fn read_headers(
    r: &mut FieldReader<'_>,
    valid_name: impl Fn(&str) -> Option<String>,
) -> Vec<(String, Template)> {
    let base = r.path_of("headers");
    let map = match r.raw("headers") {
        None => return Vec::new(),
        Some(Value::Object(map)) => map,
        Some(other) => {
            let t = outflow_core::config::reader::type_name(other);
            r.error("headers", format!("must be a mapping of header name to value, got {t}"));
            return Vec::new();
        }
    };
    let mut out = Vec::new();
    for (name, value) in map {
        let at = format!("{base}.{name}");
        if let Some(why) = valid_name(name) {
            r.extend([ConfigError::new(at, why)]);
            continue;
        }
        let text = match value {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            other => {
                let t = outflow_core::config::reader::type_name(other);
                r.extend([ConfigError::new(at, format!("must be a string, got {t}"))]);
                continue;
            }
        };
        match Template::parse(&text) {
            Ok(t) => out.push((name.clone(), t)),
            Err(e) => r.extend([ConfigError::new(
                at,
                format!("invalid template: {} (at byte {})", e.reason, e.offset),
            )]),
        }
    }
    out
}

/// Renders a templated name (`what`: "routing_key", "subject", "topic"...); a failure to
/// render is permanent: the job lacks a variable the template needs.
pub(crate) fn render(
    template: &Template,
    what: &str,
    ctx: &RenderContext<'_>,
) -> Result<String, DeliveryError> {
    template.render(ctx).map_err(|e| {
        DeliveryError::permanent(format!(
            "cannot render {what} template '{}': {e}",
            template.source()
        ))
    })
}

/// Renders `headers` for one delivery.
pub(crate) fn render_headers(
    headers: &[(String, Template)],
    ctx: &RenderContext<'_>,
) -> Result<Vec<(String, String)>, DeliveryError> {
    headers
        .iter()
        .map(|(name, t)| Ok((name.clone(), render(t, &format!("header '{name}'"), ctx)?)))
        .collect()
}

/// The formatted output of one delivery.
pub(crate) fn payload(
    format: &OutputFormat,
    ctx: &RenderContext<'_>,
) -> Result<Vec<u8>, DeliveryError> {
    format.render(ctx).map_err(|e| DeliveryError::permanent(e.to_string()))
}

/// Puts the publish results back in the batch's order: a record that could not be rendered
/// keeps its own error, each other one takes the next result of `published` (one per
/// rendered message, in order).
pub(crate) fn merge_results<M>(
    rendered: Vec<Result<M, DeliveryError>>,
    published: BatchResults,
) -> BatchResults {
    let mut published = published.into_iter();
    rendered
        .into_iter()
        .map(|m| match m {
            Ok(_) => published.next().expect("one result per published message"),
            Err(e) => Err(e),
        })
        .collect()
}

/// Runs `fut` under the destination's deadline; running out of time is retryable (the
/// broker may be slow or unreachable) and names `target` and the step that timed out.
pub(crate) async fn within<T>(
    timeout: Duration,
    target: &str,
    step: &str,
    fut: impl Future<Output = Result<T, DeliveryError>>,
) -> Result<T, DeliveryError> {
    match tokio::time::timeout(timeout, fut).await {
        Ok(result) => result,
        Err(_) => Err(DeliveryError::retryable(format!(
            "{target}: {step} timed out after {}",
            humanize(timeout)
        ))),
    }
}

fn humanize(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{} s", d.as_secs())
    } else {
        format!("{} ms", d.as_millis())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::common::test_support::reader_errors;
    use serde_json::json;

    #[test]
    fn headers_are_checked() {
        let errs = reader_errors(
            json!({"headers": {"ok": "{{task_name}}", "bad": "{{", "nested": {"a": 1}, "no": "x"}}),
            |r| {
                let got = read_headers(r, |n| (n == "no").then(|| "reserved".to_string()));
                assert_eq!(got.len(), 1);
            },
        );
        let paths: Vec<&str> = errs.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["d.headers.bad", "d.headers.nested", "d.headers.no"]);
        let errs = reader_errors(json!({"headers": ["x"]}), |r| {
            read_headers(r, |_| None);
        });
        assert_eq!(errs[0].path, "d.headers");
    }
}
