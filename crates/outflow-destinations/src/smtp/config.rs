//! Parsing and validating a `type: smtp` body.
//!
//! Everything that can be checked without a job is checked here: the host and port, the
//! security mode, that `username` and `password` come together, that static addresses are
//! valid mailboxes, template syntax (`{{var}}` for subject, addresses and attachment name;
//! Handlebars for the bodies), the format and the sizes.

use std::time::Duration;

use lettre::message::Mailbox;
use outflow_core::config::{ConfigError, DestinationSpec, FieldReader};
use outflow_core::format::{HandlebarsTemplate, OutputFormat};
use outflow_core::retry::RetryPolicy;
use outflow_core::secret::Secret;
use outflow_core::template::Template;
use serde_json::Value;

use crate::{BuildDefaults, common};

/// How the connection to the server is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Security {
    /// Plain text (trusted local relays only).
    None,
    /// Plain connect, then `STARTTLS`, which must succeed (port 587).
    StartTls,
    /// TLS from the first byte, "implicit TLS" (port 465).
    Tls,
}

/// The accepted `security` names.
pub const SECURITY_NAMES: &[&str] = &["none", "starttls", "tls"];

impl Security {
    fn parse(name: &str) -> Security {
        match name {
            "none" => Security::None,
            "tls" => Security::Tls,
            _ => Security::StartTls,
        }
    }

    /// The conventional port of this mode.
    pub fn default_port(self) -> u16 {
        match self {
            Security::None => 25,
            Security::StartTls => 587,
            Security::Tls => 465,
        }
    }

    /// The config name.
    pub fn name(self) -> &'static str {
        match self {
            Security::None => "none",
            Security::StartTls => "starttls",
            Security::Tls => "tls",
        }
    }
}

/// The default `subject`.
pub const DEFAULT_SUBJECT: &str = "[outflow] job {{job_uuid}} {{status}}";

/// The default `max_inline_bytes`.
pub const DEFAULT_MAX_INLINE_BYTES: u64 = 256 * 1024;

/// The largest `max_inline_bytes` accepted: beyond this, attach the output.
pub const MAX_INLINE_LIMIT: u64 = 10 * 1024 * 1024;

const ADDRESS_EXPECTED: &str =
    "an email address or \"Name <address>\", optionally with {{variables}}";

/// A validated SMTP configuration.
#[derive(Debug, Clone)]
pub struct SmtpConfig {
    /// The server's host name or IP address.
    pub host: String,
    /// The server's port.
    pub port: u16,
    /// How the connection is protected.
    pub security: Security,
    /// Login name, with `password`.
    pub username: Option<String>,
    /// Login password.
    pub password: Option<Secret>,
    /// The `From` mailbox template.
    pub from: Template,
    /// `To` templates (at least one recipient among to/cc/bcc).
    pub to: Vec<Template>,
    /// `Cc` templates.
    pub cc: Vec<Template>,
    /// `Bcc` templates (in the envelope, not in the headers).
    pub bcc: Vec<Template>,
    /// The subject template.
    pub subject: Template,
    /// The plain-text body (Handlebars); `None` means the built-in summary.
    pub body: Option<HandlebarsTemplate>,
    /// The HTML alternative (Handlebars, values HTML-escaped).
    pub html_body: Option<HtmlTemplate>,
    /// Attach the output as a file (else it is inlined into the text body).
    pub attach_output: bool,
    /// The attachment's file name; `None` means `outflow-<job_uuid>.<extension>`.
    pub attachment_name: Option<Template>,
    /// How the output becomes bytes; `None` means pretty JSON for JSON, as-is otherwise.
    pub format: Option<OutputFormat>,
    /// The most output bytes inlined into the body.
    pub max_inline_bytes: u64,
    /// Bound on one whole attempt (connect, auth, send).
    pub timeout: Duration,
    /// Retries.
    pub retry_policy: RetryPolicy,
}

/// A Handlebars template for `html_body`: strict, and with HTML escaping on so a value (say,
/// the job's output) cannot inject markup into the message.
#[derive(Clone)]
pub struct HtmlTemplate {
    source: String,
    registry: std::sync::Arc<handlebars::Handlebars<'static>>,
}

impl std::fmt::Debug for HtmlTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HtmlTemplate").field("source", &self.source).finish()
    }
}

impl HtmlTemplate {
    /// Compiles `source`, reporting syntax errors with their position.
    pub fn compile(source: &str) -> Result<HtmlTemplate, String> {
        let mut registry = handlebars::Handlebars::new();
        registry.set_strict_mode(true);
        registry.register_template_string("html", source).map_err(|e| match e.pos() {
            Some((line, column)) => format!(
                "invalid Handlebars template at line {line}, column {column}: {}",
                e.reason()
            ),
            None => format!("invalid Handlebars template: {}", e.reason()),
        })?;
        Ok(HtmlTemplate { source: source.to_string(), registry: std::sync::Arc::new(registry) })
    }

    /// Renders with `data`.
    pub fn render_value(&self, data: &Value) -> Result<String, String> {
        self.registry.render("html", data).map_err(|e| match e.reason() {
            handlebars::RenderErrorReason::MissingVariable(Some(name)) => {
                format!("Template variable '{name}' not found")
            }
            other => other.to_string(),
        })
    }
}

/// Parses an address, for config-time and delivery-time checks alike.
pub fn parse_mailbox(text: &str) -> Result<Mailbox, String> {
    text.trim()
        .parse::<Mailbox>()
        .map_err(|e| format!("'{text}' is not a valid email address ({e})"))
}

impl SmtpConfig {
    /// Parses `spec`, reporting every problem under `path`.
    pub fn parse(
        spec: &DestinationSpec,
        defaults: &BuildDefaults,
        path: &str,
    ) -> Result<SmtpConfig, Vec<ConfigError>> {
        let mut r = FieldReader::new(&spec.fields, path);

        let host = r.required_string("host", "the SMTP server's host name, e.g. smtp.example.com");
        if let Some(h) = &host
            && (h.trim().is_empty() || h.contains(['/', ' ', '@']))
        {
            r.error("host", format!("'{h}' is not a host name or IP address (no scheme, no port)"));
        }

        let security = Self::parse_security(&mut r);
        let port = match r.raw("port") {
            Some(_) => match r.optional::<u32>("port", "a port number from 1 to 65535") {
                Some(p @ 1..=65535) => u16::try_from(p).ok(),
                Some(p) => {
                    r.error("port", format!("{p} is not a port number (1 to 65535)"));
                    None
                }
                None => None,
            },
            None => security.map(Security::default_port),
        };

        let username = r.string("username");
        let password = r.secret("password", false);
        match (&username, &password) {
            (Some(_), None) => r.error("password", "is required when username is set"),
            (None, Some(_)) => r.error("username", "is required when password is set"),
            _ => {}
        }

        let from = r.template("from", true, ADDRESS_EXPECTED);
        if let Some(t) = &from {
            check_static_address(&mut r, "from", t);
        }
        let to = Self::parse_addresses(&mut r, "to");
        let cc = Self::parse_addresses(&mut r, "cc");
        let bcc = Self::parse_addresses(&mut r, "bcc");
        let non_empty = |v: Option<&Value>| match v {
            Some(Value::Array(items)) => !items.is_empty(),
            Some(_) => true,
            None => false,
        };
        let any_given = ["to", "cc", "bcc"].iter().any(|k| non_empty(spec.fields.get(*k)));
        if to.is_empty() && cc.is_empty() && bcc.is_empty() && !any_given {
            r.error("to", format!("is required: a list of recipients ({ADDRESS_EXPECTED})"));
        }

        let subject = match r.raw("subject") {
            Some(_) => {
                r.template("subject", false, "a subject line, e.g. \"{{task_name}} finished\"")
            }
            None => Some(Template::parse(DEFAULT_SUBJECT).expect("the default subject parses")),
        };

        let body = r.string("body").and_then(|src| match HandlebarsTemplate::compile(&src) {
            Ok(t) => Some(t),
            Err(msg) => {
                r.error("body", msg);
                None
            }
        });
        let html_body = r.string("html_body").and_then(|src| match HtmlTemplate::compile(&src) {
            Ok(t) => Some(t),
            Err(msg) => {
                r.error("html_body", msg);
                None
            }
        });

        let attach_output = r.bool("attach_output").unwrap_or(true);
        let attachment_name = r.template(
            "attachment_name",
            false,
            "a file name, e.g. \"{{task_name}}-{{date}}.json\"",
        );
        if attachment_name.is_some() && !attach_output {
            r.error("attachment_name", "is only used with attach_output: true");
        }

        let format = common::read_optional_format(&mut r);

        let max_inline_bytes = match r.size("max_inline_bytes") {
            Some(0) => {
                r.error("max_inline_bytes", "must be greater than 0 (bytes, or e.g. \"64KiB\")");
                DEFAULT_MAX_INLINE_BYTES
            }
            Some(n) if n > MAX_INLINE_LIMIT => {
                r.error(
                    "max_inline_bytes",
                    format!(
                        "{n} is larger than the {MAX_INLINE_LIMIT} bytes (10 MiB) a message body \
                         should carry; use attach_output: true for large outputs"
                    ),
                );
                DEFAULT_MAX_INLINE_BYTES
            }
            Some(n) => n,
            None => DEFAULT_MAX_INLINE_BYTES,
        };

        let timeout = common::read_timeout(&mut r, defaults);

        let retry_policy = common::read_retry_policy(&mut r, defaults);

        let errors = r.finish();
        match (host, security, port, from, subject) {
            (Some(host), Some(security), Some(port), Some(from), Some(subject))
                if errors.is_empty() =>
            {
                Ok(SmtpConfig {
                    host: host.trim().to_string(),
                    port,
                    security,
                    username,
                    password,
                    from,
                    to,
                    cc,
                    bcc,
                    subject,
                    body,
                    html_body,
                    attach_output,
                    attachment_name,
                    format,
                    max_inline_bytes,
                    timeout,
                    retry_policy,
                })
            }
            _ if errors.is_empty() => {
                Err(vec![ConfigError::new(path, "invalid smtp configuration")])
            }
            _ => Err(errors),
        }
    }

    /// `security`, or its alias `tls`; default `starttls`.
    fn parse_security(r: &mut FieldReader<'_>) -> Option<Security> {
        let security = r.raw("security").is_some();
        let tls = r.raw("tls").is_some();
        if security && tls {
            r.error("tls", "is an alias of security; set only one of them");
            return None;
        }
        let key = if tls { "tls" } else { "security" };
        if !security && !tls {
            return Some(Security::StartTls);
        }
        // `tls: true/false` reads naturally too: true is implicit TLS, false plain text.
        if let Some(Value::Bool(b)) = r.raw(key) {
            return Some(if *b { Security::Tls } else { Security::None });
        }
        r.one_of(key, SECURITY_NAMES).map(Security::parse)
    }

    /// A list of address templates; a single string is a one-element list.
    fn parse_addresses(r: &mut FieldReader<'_>, key: &'static str) -> Vec<Template> {
        let base = r.path_of(key);
        let items: Vec<(String, &Value)> = match r.raw(key) {
            None => return Vec::new(),
            Some(Value::Array(items)) => {
                items.iter().enumerate().map(|(i, v)| (format!("{base}[{i}]"), v)).collect()
            }
            Some(v @ Value::String(_)) => vec![(base.clone(), v)],
            Some(other) => {
                let t = outflow_core::config::reader::type_name(other);
                r.error(key, format!("must be a list of addresses ({ADDRESS_EXPECTED}), got {t}"));
                return Vec::new();
            }
        };
        let mut out = Vec::new();
        for (at, value) in items {
            let Value::String(src) = value else {
                let t = outflow_core::config::reader::type_name(value);
                r.extend([ConfigError::new(at, format!("must be {ADDRESS_EXPECTED}, got {t}"))]);
                continue;
            };
            match Template::parse(src) {
                Ok(t) if t.is_static() => match parse_mailbox(src) {
                    Ok(_) => out.push(t),
                    Err(msg) => r.extend([ConfigError::new(at, msg)]),
                },
                Ok(t) => out.push(t),
                Err(e) => r.extend([ConfigError::new(
                    at,
                    format!("invalid template: {} (at byte {})", e.reason, e.offset),
                )]),
            }
        }
        out
    }
}

/// A static address is checked now; a templated one after rendering.
fn check_static_address(r: &mut FieldReader<'_>, key: &str, t: &Template) {
    if t.is_static()
        && let Err(msg) = parse_mailbox(t.source())
    {
        r.error(key, msg);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::common::test_support::pairs;
    use serde_json::json;

    fn parse(v: Value) -> Result<SmtpConfig, Vec<ConfigError>> {
        let mut v = v;
        v["type"] = json!("smtp");
        let spec = DestinationSpec::from_value(&v, "d").unwrap();
        SmtpConfig::parse(&spec, &BuildDefaults::default(), "d")
    }

    fn errors(v: Value) -> Vec<(String, String)> {
        pairs(parse(v).unwrap_err())
    }

    fn minimal() -> Value {
        json!({"host": "smtp.example.com", "from": "outflow@example.com", "to": ["ops@example.com"]})
    }

    #[test]
    fn minimal_config_takes_the_defaults() {
        let cfg = parse(minimal()).unwrap();
        assert_eq!(cfg.security, Security::StartTls);
        assert_eq!(cfg.port, 587);
        assert!(cfg.attach_output);
        assert_eq!(cfg.max_inline_bytes, DEFAULT_MAX_INLINE_BYTES);
        assert_eq!(cfg.subject.source(), DEFAULT_SUBJECT);
        assert!(cfg.format.is_none() && cfg.body.is_none() && cfg.html_body.is_none());
    }

    #[test]
    fn security_sets_the_default_port_and_tls_is_an_alias() {
        let mut v = minimal();
        v["security"] = json!("TLS");
        assert_eq!(parse(v.clone()).unwrap().port, 465);
        v["port"] = json!(2465);
        assert_eq!(parse(v).unwrap().port, 2465);
        let mut v = minimal();
        v["tls"] = json!("none");
        let cfg = parse(v).unwrap();
        assert_eq!((cfg.security, cfg.port), (Security::None, 25));
        let mut v = minimal();
        v["tls"] = json!(true);
        assert_eq!(parse(v).unwrap().security, Security::Tls);
    }

    #[test]
    fn required_fields_are_reported_at_their_paths() {
        let errs = errors(json!({}));
        let paths: Vec<&str> = errs.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(paths, ["d.host", "d.from", "d.to"]);
        assert_eq!(errs[0].1, "is required (the SMTP server's host name, e.g. smtp.example.com)");
        assert!(errs[2].1.starts_with("is required: a list of recipients"), "{}", errs[2].1);
    }

    #[test]
    fn cc_or_bcc_alone_is_enough() {
        let v = json!({"host": "h", "from": "a@example.com", "bcc": "b@example.com"});
        assert_eq!(parse(v).unwrap().bcc.len(), 1);
    }

    #[test]
    fn bad_values_are_each_reported() {
        let errs = errors(json!({
            "host": "smtp://x", "port": 70000, "security": "ssl", "username": "u",
            "from": "not an address", "to": ["ok@example.com", "nope", 3, "{{bad"],
            "cc": {"a": 1}, "body": "{{#if}}", "html_body": "{{/x}}",
            "attach_output": false, "attachment_name": "x.txt", "format": "pdf",
            "max_inline_bytes": 0, "timeout_seconds": 0,
        }));
        let paths: Vec<&str> = errs.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(
            paths,
            [
                "d.host",
                "d.security",
                "d.port",
                "d.password",
                "d.from",
                "d.to[1]",
                "d.to[2]",
                "d.to[3]",
                "d.cc",
                "d.body",
                "d.html_body",
                "d.attachment_name",
                "d.format",
                "d.max_inline_bytes",
                "d.timeout_seconds",
            ],
            "{errs:?}"
        );
        let msg = |path: &str| {
            errs.iter().find(|(p, _)| p == path).map(|(_, m)| m.as_str()).unwrap_or_default()
        };
        assert_eq!(
            msg("d.host"),
            "'smtp://x' is not a host name or IP address (no scheme, no port)"
        );
        assert_eq!(msg("d.security"), "must be one of none, starttls, tls, got 'ssl'");
        assert_eq!(msg("d.port"), "70000 is not a port number (1 to 65535)");
        assert_eq!(msg("d.password"), "is required when username is set");
        assert!(msg("d.from").starts_with("'not an address' is not a valid email address"));
        assert!(msg("d.to[1]").starts_with("'nope' is not a valid email address"));
        assert!(msg("d.to[2]").starts_with("must be an email address"), "{errs:?}");
        assert!(msg("d.to[3]").starts_with("invalid template"), "{errs:?}");
        assert!(msg("d.cc").starts_with("must be a list of addresses"), "{errs:?}");
        assert!(msg("d.body").starts_with("invalid Handlebars template"), "{errs:?}");
        assert!(msg("d.html_body").starts_with("invalid Handlebars template"), "{errs:?}");
        assert_eq!(msg("d.attachment_name"), "is only used with attach_output: true");
        assert!(msg("d.format").starts_with("must be one of json"), "{errs:?}");
        assert!(msg("d.max_inline_bytes").starts_with("must be greater than 0"), "{errs:?}");
    }

    #[test]
    fn port_out_of_range_and_conflicting_aliases() {
        let mut v = minimal();
        v["port"] = json!(0);
        v["security"] = json!("none");
        v["tls"] = json!("tls");
        let errs = errors(v);
        assert_eq!(
            errs[0],
            ("d.tls".into(), "is an alias of security; set only one of them".into())
        );
        assert_eq!(errs[1], ("d.port".into(), "0 is not a port number (1 to 65535)".into()));
    }

    #[test]
    fn password_alone_and_huge_inline_limit_are_refused_without_echoing_the_secret() {
        let mut v = minimal();
        v["password"] = json!("hunter2");
        v["max_inline_bytes"] = json!("100MiB");
        let errs = errors(v);
        assert_eq!(errs[0], ("d.username".into(), "is required when password is set".into()));
        assert_eq!(errs[1].0, "d.max_inline_bytes");
        assert!(errs.iter().all(|(_, m)| !m.contains("hunter2")));
    }

    #[test]
    fn templated_addresses_wait_for_rendering_and_unknown_keys_are_flagged() {
        let mut v = minimal();
        v["to"] = json!(["{{meta.owner}}@example.com"]);
        assert!(parse(v.clone()).is_ok());
        v["subjet"] = json!("x");
        let errs = errors(v);
        assert_eq!(errs[0].0, "d.subjet");
        assert!(errs[0].1.contains("did you mean 'subject'"), "{}", errs[0].1);
    }
}
