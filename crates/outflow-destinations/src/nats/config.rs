//! Parsing and validation of a `type: nats` body.

use std::path::PathBuf;
use std::time::Duration;

use outflow_core::config::{ConfigError, DestinationSpec, FieldReader};
use outflow_core::format::OutputFormat;
use outflow_core::retry::RetryPolicy;
use outflow_core::secret::Secret;
use outflow_core::template::Template;

use crate::messaging;
use crate::{BuildDefaults, common};

const URL_EXPECTED: &str = "a NATS URL such as \"nats://nats:4222\" (tls:// for TLS)";

/// Headers outflow sets itself on every message.
pub(crate) const RESERVED_HEADERS: &[&str] =
    &["Nats-Msg-Id", "Nats-Expected-Stream", messaging::JOB_UUID_HEADER];

/// How the client authenticates.
#[derive(Debug, Clone)]
pub(crate) enum Credentials {
    /// No credentials (or the ones in the URL's userinfo).
    None,
    /// `user` and `password`.
    UserPassword(String, Secret),
    /// `token`.
    Token(Secret),
    /// `nkey`: an NKey seed.
    NKey(Secret),
    /// `credentials_file`: a `.creds` file (JWT + NKey seed).
    File(PathBuf),
}

/// A validated NATS destination configuration.
#[derive(Debug, Clone)]
pub(crate) struct NatsConfig {
    /// The servers; the URLs may hold credentials, so they are kept secret.
    pub servers: Vec<Secret>,
    /// Authentication.
    pub credentials: Credentials,
    /// Require TLS.
    pub tls: bool,
    /// Extra root certificates (PEM) for TLS.
    pub ca_file: Option<PathBuf>,
    /// The subject published to.
    pub subject: Template,
    /// Publish through JetStream and wait for the stream's ack.
    pub jetstream: bool,
    /// The stream that must store the message (`Nats-Expected-Stream`).
    pub stream: Option<Template>,
    /// Create `stream` (capturing the rendered subject) when it does not exist.
    pub create_stream: bool,
    /// The message body format.
    pub format: OutputFormat,
    /// Extra message headers, values templated.
    pub headers: Vec<(String, Template)>,
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
) -> Result<NatsConfig, Vec<ConfigError>> {
    let mut r = FieldReader::new(&spec.fields, path);

    let url = r.secret("url", false);
    let servers: Option<Vec<String>> =
        r.optional("servers", "a list of NATS URLs, e.g. [\"nats://n1:4222\", \"nats://n2:4222\"]");
    let mut all = Vec::new();
    match (url, servers) {
        (Some(_), Some(_)) => r.error("servers", "set either url or servers, not both"),
        (Some(u), None) => all.push(u),
        (None, Some(list)) if list.is_empty() => r.error("servers", "must list at least one URL"),
        (None, Some(list)) => all.extend(list.into_iter().map(Secret::new)),
        (None, None) => {
            r.error("url", format!("is required (or servers); expected {URL_EXPECTED}"))
        }
    }
    for (i, server) in all.iter().enumerate() {
        if let Err(msg) = check_url(server.expose()) {
            let key =
                if r.raw("servers").is_some() { format!("servers[{i}]") } else { "url".into() };
            r.error(&key, msg);
        }
    }

    let credentials = read_credentials(&mut r);
    let tls = r.bool("tls").unwrap_or(false);
    let ca_file = r.string("ca_file").map(PathBuf::from);

    let subject = r.template("subject", true, "a subject, e.g. \"outflow.{{task_name}}\"");
    if let Some(s) = &subject
        && s.is_static()
        && let Err(msg) = check_subject(s.source())
    {
        r.error("subject", msg);
    }
    let jetstream = r.bool("jetstream").unwrap_or(false);
    let stream = r.template("stream", false, "a JetStream stream name, e.g. \"OUTPUTS\"");
    if let Some(s) = &stream
        && s.is_static()
        && let Err(msg) = check_stream_name(s.source())
    {
        r.error("stream", msg);
    }
    let create_stream = r.bool("create_stream").unwrap_or(false);
    if stream.is_some() && !jetstream {
        r.error("stream", "is only used with jetstream: true");
    }
    if create_stream && stream.is_none() {
        r.error("create_stream", "needs stream: the name of the stream to create");
    }

    let format = common::read_format_default_raw(&mut r);
    let headers = messaging::read_headers(&mut r, |name| {
        if name.is_empty() || name.chars().any(|c| c.is_control() || c == ':' || c == ' ') {
            Some(format!(
                "'{name}' is not a valid header name (no spaces, colons or control characters)"
            ))
        } else if RESERVED_HEADERS.iter().any(|h| h.eq_ignore_ascii_case(name)) {
            Some(format!("header '{name}' cannot be set here: outflow sets it on every message"))
        } else {
            None
        }
    });
    let timeout = common::read_timeout(&mut r, defaults);
    let retry_policy = common::read_retry_policy(&mut r, defaults);

    let errors = r.finish();
    match (subject, format) {
        (Some(subject), Some(format)) if errors.is_empty() => Ok(NatsConfig {
            servers: all,
            credentials,
            tls,
            ca_file,
            subject,
            jetstream,
            stream,
            create_stream,
            format,
            headers,
            timeout,
            retry_policy,
        }),
        _ => Err(errors),
    }
}

/// At most one way to authenticate: `user`+`password`, `token`, `nkey` or
/// `credentials_file`.
fn read_credentials(r: &mut FieldReader<'_>) -> Credentials {
    let user = r.string("user");
    let password = r.secret("password", false);
    let token = r.secret("token", false);
    let nkey = r.secret("nkey", false);
    let file = r.string("credentials_file").map(PathBuf::from);
    let given =
        [user.is_some() || password.is_some(), token.is_some(), nkey.is_some(), file.is_some()]
            .iter()
            .filter(|g| **g)
            .count();
    if given > 1 {
        r.error(
            "token",
            "set only one way to authenticate: user + password, token, nkey or credentials_file",
        );
        return Credentials::None;
    }
    match (user, password, token, nkey, file) {
        (Some(u), Some(p), ..) => Credentials::UserPassword(u, p),
        (Some(_), None, ..) => {
            r.error("password", "is required with user");
            Credentials::None
        }
        (None, Some(_), ..) => {
            r.error("user", "is required with password");
            Credentials::None
        }
        (_, _, Some(t), ..) => Credentials::Token(t),
        (_, _, _, Some(k), _) => {
            if !k.expose().starts_with('S') {
                r.error("nkey", "must be an NKey seed (it starts with 'S', e.g. \"SUA...\")");
            }
            Credentials::NKey(k)
        }
        (_, _, _, _, Some(f)) => Credentials::File(f),
        _ => Credentials::None,
    }
}

fn check_url(url: &str) -> Result<(), String> {
    let scheme_ok =
        ["nats://", "tls://"].iter().any(|s| url.starts_with(s)) || !url.contains("://");
    if !scheme_ok {
        return Err(format!("must start with nats:// or tls://; expected {URL_EXPECTED}"));
    }
    match url.parse::<async_nats::ServerAddr>() {
        Ok(_) => Ok(()),
        // The parser's message may quote the URL: never echo it (it can hold a password).
        Err(_) => Err(format!("is not a valid NATS URL; expected {URL_EXPECTED}")),
    }
}

/// A publish subject: dot-separated non-empty tokens, no wildcards (`*`, `>`), no
/// whitespace or control characters.
pub(crate) fn check_subject(subject: &str) -> Result<(), String> {
    if subject.is_empty() {
        return Err("subject is empty".into());
    }
    if subject.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "subject '{}' contains whitespace or a control character",
            subject.escape_default()
        ));
    }
    for token in subject.split('.') {
        if token.is_empty() {
            return Err(format!(
                "subject '{subject}' has an empty token (a leading, trailing or double '.')"
            ));
        }
        if token == "*" || token == ">" {
            return Err(format!(
                "subject '{subject}' contains the wildcard '{token}'; a message is published to one subject"
            ));
        }
    }
    Ok(())
}

/// A JetStream stream name: no whitespace, `.`, `*`, `>`, path separators; at most 255 bytes.
pub(crate) fn check_stream_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 255 {
        return Err(format!("stream name '{name}' must be 1 to 255 bytes long"));
    }
    if name.chars().any(|c| c.is_whitespace() || c.is_control() || ".*>/\\".contains(c)) {
        return Err(format!(
            "stream name '{}' may not contain whitespace, '.', '*', '>', '/' or '\\'",
            name.escape_default()
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

    fn ok(v: Value) -> NatsConfig {
        let spec = DestinationSpec::from_value(&v, "d").unwrap();
        parse(&spec, &BuildDefaults::default(), "d").unwrap()
    }

    #[test]
    fn minimal_and_full() {
        let c = ok(
            json!({"type": "nats", "url": "nats://127.0.0.1:4222", "subject": "a.{{task_name}}"}),
        );
        assert!(!c.jetstream && matches!(c.credentials, Credentials::None));
        let c = ok(json!({
            "type": "nats", "servers": ["nats://a:4222", "nats://b:4222"], "subject": "a.b",
            "jetstream": true, "stream": "OUT", "create_stream": true, "user": "u", "password": "p",
            "headers": {"x-tenant": "{{task_name}}"}
        }));
        assert_eq!(c.servers.len(), 2);
        assert!(matches!(c.credentials, Credentials::UserPassword(..)));
    }

    #[test]
    fn url_or_servers_required() {
        let errs = errors(json!({"type": "nats", "subject": "a"}));
        assert_eq!(paths(&errs), ["d.url"]);
        let errs = errors(
            json!({"type": "nats", "url": "nats://a", "servers": ["nats://b"], "subject": "a"}),
        );
        assert_eq!(paths(&errs), ["d.servers"]);
        let errs = errors(json!({"type": "nats", "servers": [], "subject": "a"}));
        assert_eq!(paths(&errs), ["d.servers"]);
        let errs = errors(
            json!({"type": "nats", "servers": ["nats://a", "http://u:secret@b"], "subject": "a"}),
        );
        assert_eq!(paths(&errs), ["d.servers[1]"]);
        assert!(!errs[0].message.contains("secret"));
    }

    #[test]
    fn subject_is_required_and_checked() {
        let errs = errors(json!({"type": "nats", "url": "nats://a"}));
        assert_eq!(paths(&errs), ["d.subject"]);
        for bad in ["a..b", "a.*", "a.>", "a b", ".a"] {
            let errs = errors(json!({"type": "nats", "url": "nats://a", "subject": bad}));
            assert_eq!(paths(&errs), ["d.subject"], "{bad}");
        }
    }

    #[test]
    fn stream_options_need_jetstream() {
        let errs =
            errors(json!({"type": "nats", "url": "nats://a", "subject": "a", "stream": "S"}));
        assert_eq!(paths(&errs), ["d.stream"]);
        let errs = errors(
            json!({"type": "nats", "url": "nats://a", "subject": "a", "jetstream": true, "create_stream": true}),
        );
        assert_eq!(paths(&errs), ["d.create_stream"]);
        let errs = errors(
            json!({"type": "nats", "url": "nats://a", "subject": "a", "jetstream": true, "stream": "a.b"}),
        );
        assert_eq!(paths(&errs), ["d.stream"]);
    }

    #[test]
    fn credentials_are_exclusive_and_complete() {
        let errs = errors(
            json!({"type": "nats", "url": "nats://a", "subject": "a", "token": "t", "user": "u", "password": "p"}),
        );
        assert_eq!(paths(&errs), ["d.token"]);
        let errs = errors(json!({"type": "nats", "url": "nats://a", "subject": "a", "user": "u"}));
        assert_eq!(paths(&errs), ["d.password"]);
        let errs =
            errors(json!({"type": "nats", "url": "nats://a", "subject": "a", "password": "p"}));
        assert_eq!(paths(&errs), ["d.user"]);
        let errs =
            errors(json!({"type": "nats", "url": "nats://a", "subject": "a", "nkey": "UABC"}));
        assert_eq!(paths(&errs), ["d.nkey"]);
        assert!(!errs[0].message.contains("UABC"));
    }

    #[test]
    fn reserved_headers_and_unknown_keys() {
        let errs = errors(json!({
            "type": "nats", "url": "nats://a", "subject": "a",
            "headers": {"Nats-Msg-Id": "x", "bad name": "y"}, "jetsream": true
        }));
        assert_eq!(paths(&errs), ["d.headers.Nats-Msg-Id", "d.headers.bad name", "d.jetsream"]);
        assert!(errs[2].message.contains("did you mean 'jetstream'"), "{}", errs[2].message);
    }
}
