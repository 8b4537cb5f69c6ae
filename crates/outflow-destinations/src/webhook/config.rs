//! Parsing and validating a `type: webhook` body.
//!
//! Everything that can be checked without a job is checked here, so `outflow check` and
//! startup validation catch it: the URL (statically, when its scheme and host are not
//! templated), the method, header names, the auth block, the format, the retry policy and
//! the network allow-list.

use std::time::Duration;

use outflow_core::config::{ConfigError, DestinationSpec, FieldReader};
use outflow_core::format::OutputFormat;
use outflow_core::netpolicy::NetworkPolicy;
use outflow_core::retry::RetryPolicy;
use outflow_core::template::{Template, TemplateError, VarSource};
use reqwest::Method;
use reqwest::header::{CONTENT_TYPE, HeaderName, HeaderValue};
use serde_json::Value;

use super::auth::{Auth, headers};
use crate::{BuildDefaults, common};

/// The methods a webhook may use.
pub const METHODS: &[&str] = &["GET", "POST", "PUT", "PATCH", "DELETE"];

/// What a valid `url` looks like, for messages.
pub const URL_EXPECTED: &str = "an absolute http:// or https:// URL, e.g. https://example.com/hook";

/// The default `content_type`.
pub const DEFAULT_CONTENT_TYPE: &str = "application/json";

/// A validated webhook configuration.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// The URL template.
    pub url: Template,
    /// How many of the URL's variables sit in its scheme/host/port part. Those are
    /// substituted verbatim; later ones (path, query) are percent-encoded so a value cannot
    /// change the URL's structure.
    pub origin_vars: usize,
    /// The HTTP method.
    pub method: Method,
    /// Extra headers, values templated, in config order.
    pub headers: Vec<(HeaderName, Template)>,
    /// The whole-request timeout (connect, send, read).
    pub timeout: Duration,
    /// The `Content-Type` header.
    pub content_type: HeaderValue,
    /// The body format; `None` means the JSON envelope.
    pub format: Option<OutputFormat>,
    /// Retries.
    pub retry_policy: RetryPolicy,
    /// Statuses to retry instead of the default list.
    pub retry_on_status: Option<Vec<u16>>,
    /// The global network policy plus this destination's additions.
    pub network: NetworkPolicy,
    /// Authentication.
    pub auth: Option<Auth>,
    /// The URL's path and query are a credential (Slack and Discord webhook URLs): they are
    /// shown as `********` in descriptions, receipts and errors.
    pub secret_path: bool,
}

/// Stands in for variables when the URL is checked statically. Made of characters that are
/// valid in any URL position, so only the literal text can make the parse fail.
const PLACEHOLDER: &str = "outflowvar";

struct Placeholders;

impl VarSource for Placeholders {
    fn var(&self, _name: &str) -> Result<std::borrow::Cow<'_, str>, TemplateError> {
        Ok(std::borrow::Cow::Borrowed(PLACEHOLDER))
    }
}

/// Where the scheme/host/port part of `url` ends: the first `/`, `?` or `#` after `://`
/// (or anywhere, when there is no `://`).
fn authority_end(url: &str) -> usize {
    let start = url.find("://").map_or(0, |i| i + 3);
    url[start..].find(['/', '?', '#']).map_or(url.len(), |i| start + i)
}

/// Checks a URL template statically when its scheme and host are literal text; returns the
/// number of variables inside the scheme/host/port part (judged only after rendering). The
/// message never echoes the URL: it may carry a password in its userinfo.
fn check_url(url: &Template) -> Result<usize, String> {
    let rendered = url.render(&Placeholders).expect("placeholders never fail");
    if let Some(first) = rendered.find(PLACEHOLDER) {
        // The origin is literal when the text before the first variable already ends it.
        let prefix = &rendered[..first];
        if authority_end(prefix) == prefix.len() {
            let end = authority_end(&rendered);
            return Ok(rendered[..end].matches(PLACEHOLDER).count());
        }
    }
    let parsed = url::Url::parse(&rendered)
        .map_err(|e| format!("Invalid URL format: {e}; expected {URL_EXPECTED}"))?;
    validate_parsed(&parsed)?;
    Ok(0)
}

/// The checks a parsed URL must pass, statically and after rendering.
pub fn validate_parsed(url: &url::Url) -> Result<(), String> {
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "Invalid URL format: scheme '{}' is not supported; expected {URL_EXPECTED}",
            url.scheme()
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("Invalid URL format: no host; expected {URL_EXPECTED}"));
    }
    Ok(())
}

/// Header names `headers` may not set: computed per request, or owned by `auth`/signing.
const RESERVED_HEADERS: &[&str] = &[
    "content-type",
    "content-length",
    "host",
    "transfer-encoding",
    headers::WEBHOOK_ID,
    headers::WEBHOOK_TIMESTAMP,
    headers::WEBHOOK_SIGNATURE,
];

impl WebhookConfig {
    /// Parses `spec`, reporting every problem under `path`.
    pub fn parse(
        spec: &DestinationSpec,
        defaults: &BuildDefaults,
        path: &str,
    ) -> Result<WebhookConfig, Vec<ConfigError>> {
        let mut r = FieldReader::new(&spec.fields, path);

        let url = r.template("url", true, URL_EXPECTED);
        let origin_vars = url.as_ref().and_then(|u| match check_url(u) {
            Ok(n) => Some(n),
            Err(msg) => {
                r.error("url", msg);
                None
            }
        });

        let method = match r.raw("method") {
            Some(_) => r.one_of("method", METHODS),
            None => Some("POST"),
        }
        .map(|m| Method::from_bytes(m.as_bytes()).expect("listed methods are valid"));

        let timeout = common::read_timeout(&mut r, defaults);

        let content_type = match r.string("content_type") {
            Some(ct) => match HeaderValue::from_str(&ct) {
                Ok(v) if !ct.trim().is_empty() => Some(v),
                _ => {
                    r.error(
                        "content_type",
                        format!("'{ct}' is not a valid header value; expected a media type such as application/json"),
                    );
                    None
                }
            },
            None => Some(HeaderValue::from_static(DEFAULT_CONTENT_TYPE)),
        };

        let format = common::read_optional_format(&mut r);

        let retry_policy = common::read_retry_policy(&mut r, defaults);

        let retry_on_status: Option<Vec<u16>> =
            r.optional("retry_on_status", "a list of HTTP status codes, e.g. [429, 503]");
        if let Some(codes) = &retry_on_status {
            for (i, code) in codes.iter().enumerate() {
                if !(100..=599).contains(code) {
                    let at = format!("{}[{i}]", r.path_of("retry_on_status"));
                    r.extend([ConfigError::new(
                        at,
                        format!("{code} is not an HTTP status code (100 to 599)"),
                    )]);
                }
            }
        }

        let network = common::read_network(&mut r, &defaults.network, "hooks.internal");

        let auth = match r.child("auth") {
            Some(child) => {
                let (auth, errors) = Auth::parse(child);
                r.extend(errors);
                auth
            }
            None => None,
        };

        let headers = Self::parse_headers(&mut r, auth.as_ref());

        let errors = r.finish();
        if !errors.is_empty() {
            return Err(errors);
        }
        let missing = || vec![ConfigError::new(path, "invalid webhook configuration")];
        Ok(WebhookConfig {
            url: url.ok_or_else(missing)?,
            origin_vars: origin_vars.ok_or_else(missing)?,
            method: method.ok_or_else(missing)?,
            headers,
            timeout,
            content_type: content_type.ok_or_else(missing)?,
            format,
            retry_policy,
            retry_on_status,
            network,
            auth,
            secret_path: false,
        })
    }

    fn parse_headers(r: &mut FieldReader<'_>, auth: Option<&Auth>) -> Vec<(HeaderName, Template)> {
        let mut out = Vec::new();
        let base = r.path_of("headers");
        let map = match r.raw("headers") {
            None => return out,
            Some(Value::Object(map)) => map,
            Some(other) => {
                let t = outflow_core::config::reader::type_name(other);
                r.error("headers", format!("must be a mapping of header name to value, got {t}"));
                return out;
            }
        };
        let auth_header = auth.and_then(Auth::header_name);
        for (name, value) in map {
            let at = format!("{base}.{name}");
            let Ok(header) = HeaderName::from_bytes(name.as_bytes()) else {
                r.extend([ConfigError::new(
                    at,
                    format!("'{name}' is not a valid HTTP header name (letters, digits and !#$%&'*+-.^_`|~ only)"),
                )]);
                continue;
            };
            if RESERVED_HEADERS.contains(&header.as_str()) {
                let why = if header == CONTENT_TYPE {
                    "set it with content_type".to_string()
                } else {
                    "outflow sets it on every request".to_string()
                };
                r.extend([ConfigError::new(
                    at,
                    format!("header '{name}' cannot be set here: {why}"),
                )]);
                continue;
            }
            if auth_header.as_ref() == Some(&header) {
                r.extend([ConfigError::new(
                    at,
                    format!("header '{name}' is already set by auth; remove one of them"),
                )]);
                continue;
            }
            let Value::String(src) = value else {
                let t = outflow_core::config::reader::type_name(value);
                r.extend([ConfigError::new(at, format!("must be a string (a template), got {t}"))]);
                continue;
            };
            match Template::parse(src) {
                Ok(t) => out.push((header, t)),
                Err(e) => r.extend([ConfigError::new(
                    at,
                    format!("invalid template: {} (at byte {})", e.reason, e.offset),
                )]),
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin_vars(src: &str) -> Result<usize, String> {
        check_url(&Template::parse(src).unwrap())
    }

    #[test]
    fn static_origin_is_parsed_and_path_vars_are_not_origin_vars() {
        assert_eq!(origin_vars("https://h.example/hooks/{{task_name}}?j={{job_uuid}}"), Ok(0));
        assert_eq!(origin_vars("https://api.{{environment}}.example.com/x/{{a}}"), Ok(1));
        assert_eq!(origin_vars("{{base}}/x"), Ok(1));
        assert_eq!(
            origin_vars("example.com/{{a}}"),
            Err(format!(
                "Invalid URL format: relative URL without a base; expected {URL_EXPECTED}"
            ))
        );
        assert_eq!(
            origin_vars("ftp://example.com/"),
            Err(format!(
                "Invalid URL format: scheme 'ftp' is not supported; expected {URL_EXPECTED}"
            ))
        );
        assert_eq!(
            origin_vars("http://:80/"),
            Err(format!("Invalid URL format: empty host; expected {URL_EXPECTED}"))
        );
    }
}
