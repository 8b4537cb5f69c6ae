//! Parsing and validating a `type: redis` body.
//!
//! Everything that can be checked without a job is checked here: the server address (a
//! `url`, or seed 003's `host`/`port`/`db`/`password` connection form), the mode and the
//! keys that belong to it, the `key` template's syntax, the RQ function path, the format and
//! the retry policy.

use std::path::PathBuf;
use std::time::Duration;

use outflow_core::config::{ConfigError, DestinationSpec, FieldReader};
use outflow_core::format::OutputFormat;
use outflow_core::retry::RetryPolicy;
use outflow_core::secret::Secret;
use outflow_core::template::Template;

use crate::{BuildDefaults, common};

/// What a valid `url` looks like, for messages.
pub const URL_EXPECTED: &str =
    "a redis:// or rediss:// URL, e.g. redis://127.0.0.1:6379/0 (or give host and port)";

/// The modes, in the order messages list them.
pub const MODES: &[&str] = &["list", "rq", "stream", "pubsub"];

/// How an output reaches Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `LPUSH`/`RPUSH` onto a list.
    List,
    /// A job in a Python RQ queue.
    Rq,
    /// `XADD` to a stream.
    Stream,
    /// `PUBLISH` on a channel.
    PubSub,
}

impl Mode {
    /// The config name.
    pub fn name(self) -> &'static str {
        match self {
            Mode::List => "list",
            Mode::Rq => "rq",
            Mode::Stream => "stream",
            Mode::PubSub => "pubsub",
        }
    }

    /// What `key` names in this mode, for messages and receipts.
    pub fn key_noun(self) -> &'static str {
        match self {
            Mode::List => "list",
            Mode::Rq => "queue",
            Mode::Stream => "stream",
            Mode::PubSub => "channel",
        }
    }
}

/// Which end of the list `list` mode pushes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Push {
    /// `LPUSH`: newest first.
    Left,
    /// `RPUSH`: oldest first (consumers `LPOP`/`BLPOP` in arrival order).
    Right,
}

/// The RQ job settings of `mode: rq`.
#[derive(Debug, Clone, PartialEq)]
pub struct RqSettings {
    /// The dotted path of the Python callable the worker runs (`myapp.tasks.process`).
    pub function: String,
    /// The job's `timeout` (RQ's default is 180 s).
    pub job_timeout: u64,
    /// How long the worker keeps a successful job's result (RQ's default is 500 s).
    pub result_ttl: u64,
}

/// A validated redis configuration.
#[derive(Debug, Clone)]
pub struct RedisConfig {
    /// The server URL; its password (if any) is kept out of `Debug` output by the
    /// destination, never printed.
    pub url: Secret,
    /// The URL with the password masked, for logs and receipts.
    pub display_url: String,
    /// `username`, overriding the URL's.
    pub username: Option<String>,
    /// `password`, overriding the URL's.
    pub password: Option<Secret>,
    /// `db`, overriding the URL's.
    pub db: Option<i64>,
    /// `tls_ca_file`: a PEM bundle to trust instead of the built-in roots.
    pub tls_ca_file: Option<PathBuf>,
    /// `tls_insecure`: skip certificate verification (rediss only).
    pub tls_insecure: bool,
    /// The mode.
    pub mode: Mode,
    /// The list, stream, channel or queue name.
    pub key: Template,
    /// `list`: which end to push to.
    pub push: Push,
    /// `list`: keep only the newest N entries (`LTRIM`).
    pub max_length: Option<u64>,
    /// `stream`: `MAXLEN` for `XADD`.
    pub maxlen: Option<u64>,
    /// `stream`: whether `MAXLEN` is approximate (`~`, the efficient default).
    pub approximate_maxlen: bool,
    /// `list`/`pubsub`: wrap the payload in the JSON envelope.
    pub envelope: bool,
    /// The payload format; `None` means the default for the mode (see the module docs).
    pub format: Option<OutputFormat>,
    /// `rq` settings.
    pub rq: Option<RqSettings>,
    /// Per-attempt timeout (connect and command).
    pub timeout: Duration,
    /// Retries.
    pub retry_policy: RetryPolicy,
}

/// Whether `s` is a dotted Python path: identifiers joined by dots (`pkg.mod.func`).
pub fn is_python_path(s: &str) -> bool {
    !s.is_empty()
        && s.split('.').all(|part| {
            let mut chars = part.chars();
            chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        })
}

impl RedisConfig {
    /// Parses `spec`, reporting every problem under `path`.
    pub fn parse(
        spec: &DestinationSpec,
        defaults: &BuildDefaults,
        path: &str,
    ) -> Result<RedisConfig, Vec<ConfigError>> {
        let mut r = FieldReader::new(&spec.fields, path);

        let mode = match r.raw("mode") {
            Some(_) => r.one_of("mode", MODES),
            None => Some("list"),
        }
        .map(|m| match m {
            "rq" => Mode::Rq,
            "stream" => Mode::Stream,
            "pubsub" => Mode::PubSub,
            _ => Mode::List,
        });

        let (url, display_url) = Self::parse_address(&mut r).unzip();
        let username = r.string("username");
        let password = r.secret("password", false);
        let db: Option<i64> = r.optional("db", "a database number, 0 or more");
        if db.is_some_and(|d| d < 0) {
            r.error("db", "must be 0 or more");
        }
        let tls_ca_file = r.string("tls_ca_file").map(PathBuf::from);
        let tls_insecure = r.bool("tls_insecure").unwrap_or(false);
        let plain = url.as_ref().is_some_and(|u| !u.expose().starts_with("rediss://"));
        for (key, set) in [("tls_ca_file", tls_ca_file.is_some()), ("tls_insecure", tls_insecure)] {
            if set && plain {
                r.error(key, "only applies to TLS connections: use a rediss:// url (or tls: true)");
            }
        }

        // Seed 003's redis_rq module names the queue `queue_name`; `key` works in every mode.
        let key = match (r.raw("key").is_some(), r.raw("queue_name").is_some()) {
            (true, true) => {
                r.error("queue_name", "give either key or queue_name, not both");
                None
            }
            (false, true) if mode != Some(Mode::Rq) => {
                r.error("queue_name", "is only used with mode: rq; use key");
                None
            }
            (false, true) => r.template("queue_name", true, "the RQ queue name"),
            _ => r.template(
                "key",
                true,
                "the list, stream, channel or queue name (a template), e.g. outputs:{{task_name}}",
            ),
        };

        let push = match r.raw("push") {
            Some(_) => r.one_of("push", &["left", "right"]),
            None => Some("right"),
        }
        .map(|p| if p == "left" { Push::Left } else { Push::Right });
        let max_length: Option<u64> = r.optional("max_length", "a positive number of entries");
        let maxlen: Option<u64> = r.optional("maxlen", "a positive number of entries");
        let approximate_maxlen = r.bool("approximate_maxlen").unwrap_or(true);
        let envelope = r.bool("envelope");
        let format = common::read_optional_format(&mut r);
        let function = r.string("function");
        let job_timeout = r.duration_secs("job_timeout");
        let result_ttl = r.duration_secs("result_ttl");

        if let Some(mode) = mode {
            Self::check_mode_keys(&mut r, mode, &spec.fields);
            if max_length == Some(0) {
                r.error("max_length", "must be at least 1");
            }
            if maxlen == Some(0) {
                r.error("maxlen", "must be at least 1");
            }
            if mode == Mode::Rq && function.is_none() {
                r.error(
                    "function",
                    "is required with mode: rq (the dotted path of the Python function the RQ \
                     worker calls, e.g. myapp.tasks.process_output)",
                );
            }
        }
        if let Some(f) = &function
            && !is_python_path(f)
        {
            r.error(
                "function",
                format!(
                    "'{f}' is not a dotted Python path (identifiers joined by dots, e.g. \
                     myapp.tasks.process_output)"
                ),
            );
        }
        for (key, d) in [("job_timeout", job_timeout), ("result_ttl", result_ttl)] {
            if d.is_some_and(|d| d.is_zero() || d.subsec_nanos() != 0) {
                r.error(key, "must be a whole number of seconds greater than 0");
            }
        }

        let timeout = common::read_timeout(&mut r, defaults);
        let retry_policy = common::read_retry_policy(&mut r, defaults);

        let errors = r.finish();
        if !errors.is_empty() {
            return Err(errors);
        }
        let missing = || vec![ConfigError::new(path, "invalid redis configuration")];
        let mode = mode.ok_or_else(missing)?;
        let rq = (mode == Mode::Rq).then(|| RqSettings {
            function: function.unwrap_or_default(),
            job_timeout: job_timeout.map_or(180, |d| d.as_secs()),
            result_ttl: result_ttl.map_or(500, |d| d.as_secs()),
        });
        Ok(RedisConfig {
            url: url.ok_or_else(missing)?,
            display_url: display_url.ok_or_else(missing)?,
            username,
            password,
            db,
            tls_ca_file,
            tls_insecure,
            mode,
            key: key.ok_or_else(missing)?,
            push: push.ok_or_else(missing)?,
            max_length,
            maxlen,
            approximate_maxlen,
            envelope: envelope.unwrap_or(matches!(mode, Mode::List | Mode::PubSub)),
            format,
            rq,
            timeout,
            retry_policy,
        })
    }

    /// `url`, or `host` + `port` (+ `tls`): the URL to connect to and its masked form.
    fn parse_address(r: &mut FieldReader<'_>) -> Option<(Secret, String)> {
        let has_url = r.raw("url").is_some();
        let host = r.string("host");
        let port: Option<u16> = r.optional("port", "a TCP port number (1 to 65535)");
        let tls = r.bool("tls");
        if has_url && (host.is_some() || port.is_some() || tls.is_some()) {
            r.error("url", "give either url, or host/port/tls, not both");
            return None;
        }
        if let Some(host) = host {
            if host.is_empty() || host.contains(['/', '@', ' ', '?', '#']) {
                r.error("host", format!("'{host}' is not a host name or IP address"));
                return None;
            }
            let scheme = if tls == Some(true) { "rediss" } else { "redis" };
            let host = if host.contains(':') && !host.starts_with('[') {
                format!("[{host}]")
            } else {
                host
            };
            let url = format!("{scheme}://{host}:{}", port.unwrap_or(6379));
            return Some((Secret::new(url.clone()), url));
        }
        if port.is_some() || tls.is_some() {
            r.error("host", "is required when port or tls is given");
            return None;
        }
        let url = r.required_string("url", URL_EXPECTED)?;
        match check_url(&url) {
            Ok(()) => {
                let shown = outflow_core::config::mask_url_secrets(&url);
                Some((Secret::new(url), shown))
            }
            Err(msg) => {
                r.error("url", msg);
                None
            }
        }
    }

    /// Mode-specific keys given with another mode are errors, not silently ignored.
    fn check_mode_keys(
        r: &mut FieldReader<'_>,
        mode: Mode,
        fields: &serde_json::Map<String, serde_json::Value>,
    ) {
        let owners: &[(&str, &[Mode])] = &[
            ("push", &[Mode::List]),
            ("max_length", &[Mode::List]),
            ("maxlen", &[Mode::Stream]),
            ("approximate_maxlen", &[Mode::Stream]),
            ("envelope", &[Mode::List, Mode::PubSub]),
            ("function", &[Mode::Rq]),
            ("job_timeout", &[Mode::Rq]),
            ("result_ttl", &[Mode::Rq]),
        ];
        for (key, modes) in owners {
            if fields.get(*key).is_some_and(|v| !v.is_null()) && !modes.contains(&mode) {
                let names: Vec<&str> = modes.iter().map(|m| m.name()).collect();
                r.error(
                    key,
                    format!(
                        "is only used with mode: {} (this destination has mode: {})",
                        names.join(" or "),
                        mode.name()
                    ),
                );
            }
        }
    }
}

/// Checks a `url` without echoing it (it may hold a password).
fn check_url(url: &str) -> Result<(), String> {
    let parsed = url::Url::parse(url)
        .map_err(|e| format!("Invalid URL format: {e}; expected {URL_EXPECTED}"))?;
    if !matches!(parsed.scheme(), "redis" | "rediss") {
        return Err(format!(
            "Invalid URL format: scheme '{}' is not supported; expected {URL_EXPECTED}",
            parsed.scheme()
        ));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(format!("Invalid URL format: no host; expected {URL_EXPECTED}"));
    }
    let db = parsed.path().trim_start_matches('/');
    if !db.is_empty() && db.parse::<u32>().is_err() {
        return Err(format!(
            "Invalid URL format: the path must be a database number (e.g. /0), got '/{db}'"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::common::test_support::{has, pairs};
    use serde_json::{Value, json};

    fn parse(v: Value) -> Result<RedisConfig, Vec<ConfigError>> {
        let spec = DestinationSpec::from_value(&v, "d").unwrap();
        RedisConfig::parse(&spec, &BuildDefaults::default(), "d")
    }

    fn errors(v: Value) -> Vec<(String, String)> {
        pairs(parse(v).unwrap_err())
    }

    #[test]
    fn a_minimal_list_config_takes_the_defaults() {
        let cfg =
            parse(json!({"type": "redis", "url": "redis://u:pw@127.0.0.1:6379/2", "key": "k"}))
                .unwrap();
        assert_eq!(cfg.mode, Mode::List);
        assert_eq!(cfg.push, Push::Right);
        assert!(cfg.envelope, "list mode wraps in the envelope by default");
        assert_eq!(cfg.display_url, "redis://u:********@127.0.0.1:6379/2");
        assert!(cfg.rq.is_none());
    }

    #[test]
    fn host_port_form_builds_a_url() {
        let cfg = parse(json!({"type": "redis", "host": "cache", "port": 6380, "tls": true,
            "db": 3, "password": "p", "key": "k"}))
        .unwrap();
        assert_eq!(cfg.url.expose(), "rediss://cache:6380");
        assert_eq!(cfg.db, Some(3));
        let errs = errors(json!({"type": "redis", "host": "a", "url": "redis://a", "key": "k"}));
        assert!(has(&errs, "d.url", "not both"), "{errs:?}");
        let errs = errors(json!({"type": "redis", "port": 1, "key": "k"}));
        assert!(has(&errs, "d.host", "is required"), "{errs:?}");
        let errs =
            errors(json!({"type": "redis", "url": "redis://h", "key": "k", "tls_insecure": true}));
        assert!(has(&errs, "d.tls_insecure", "rediss://"), "{errs:?}");
        assert!(
            parse(json!({"type": "redis", "host": "h", "tls": true, "key": "k", "tls_ca_file": "/ca.pem"}))
                .is_ok()
        );
        let errs = errors(json!({"type": "redis", "host": "a/b", "key": "k"}));
        assert!(has(&errs, "d.host", "not a host"), "{errs:?}");
    }

    #[test]
    fn missing_url_and_key_are_reported_at_their_paths() {
        let errs = errors(json!({"type": "redis"}));
        assert!(has(&errs, "d.url", "is required"), "{errs:?}");
        assert!(has(&errs, "d.key", "is required"), "{errs:?}");
    }

    #[test]
    fn bad_urls_never_echo_the_password() {
        let errs = errors(json!({"type": "redis", "url": "http://u:hunter2@h/", "key": "k"}));
        assert!(has(&errs, "d.url", "scheme 'http'"), "{errs:?}");
        assert!(errs.iter().all(|(_, m)| !m.contains("hunter2")));
        let errs = errors(json!({"type": "redis", "url": "redis://h/x", "key": "k"}));
        assert!(has(&errs, "d.url", "database number"), "{errs:?}");
        let errs = errors(json!({"type": "redis", "url": "not a url", "key": "k"}));
        assert!(has(&errs, "d.url", "Invalid URL format"), "{errs:?}");
    }

    #[test]
    fn mode_and_its_keys_are_checked() {
        let errs =
            errors(json!({"type": "redis", "url": "redis://h", "key": "k", "mode": "queue"}));
        assert!(has(&errs, "d.mode", "must be one of list, rq, stream, pubsub"), "{errs:?}");
        let errs = errors(
            json!({"type": "redis", "url": "redis://h", "key": "k", "mode": "stream", "push": "left"}),
        );
        assert!(has(&errs, "d.push", "only used with mode: list"), "{errs:?}");
        let errs = errors(json!({"type": "redis", "url": "redis://h", "key": "k", "maxlen": 10}));
        assert!(has(&errs, "d.maxlen", "only used with mode: stream"), "{errs:?}");
        let errs = errors(
            json!({"type": "redis", "url": "redis://h", "key": "k", "mode": "stream", "envelope": true}),
        );
        assert!(has(&errs, "d.envelope", "only used with mode: list or pubsub"), "{errs:?}");
        let errs = errors(json!({"type": "redis", "url": "redis://h", "key": "k", "push": "up"}));
        assert!(has(&errs, "d.push", "left, right"), "{errs:?}");
        let errs =
            errors(json!({"type": "redis", "url": "redis://h", "key": "k", "max_length": 0}));
        assert!(has(&errs, "d.max_length", "at least 1"), "{errs:?}");
        let errs = errors(
            json!({"type": "redis", "url": "redis://h", "key": "k", "mode": "stream", "maxlen": 0}),
        );
        assert!(has(&errs, "d.maxlen", "at least 1"), "{errs:?}");
        let errs = errors(json!({"type": "redis", "url": "redis://h", "key": "k", "db": -1}));
        assert!(has(&errs, "d.db", "0 or more"), "{errs:?}");
    }

    #[test]
    fn rq_mode_follows_seed_003() {
        let cfg = parse(json!({"type": "redis", "url": "redis://h", "mode": "rq",
            "queue_name": "processing", "function": "myapp.tasks.process"}))
        .unwrap();
        assert_eq!(cfg.key.source(), "processing");
        let rq = cfg.rq.unwrap();
        assert_eq!(
            (rq.function.as_str(), rq.job_timeout, rq.result_ttl),
            ("myapp.tasks.process", 180, 500)
        );
        assert!(!cfg.envelope);

        let errs = errors(json!({"type": "redis", "url": "redis://h", "mode": "rq", "key": "q"}));
        assert!(has(&errs, "d.function", "is required with mode: rq"), "{errs:?}");
        let errs = errors(json!({"type": "redis", "url": "redis://h", "mode": "rq", "key": "q",
            "function": "os.system('x')"}));
        assert!(has(&errs, "d.function", "not a dotted Python path"), "{errs:?}");
        let errs = errors(json!({"type": "redis", "url": "redis://h", "mode": "rq", "key": "q",
            "queue_name": "q", "function": "a.b"}));
        assert!(has(&errs, "d.queue_name", "not both"), "{errs:?}");
        let errs = errors(json!({"type": "redis", "url": "redis://h", "queue_name": "q"}));
        assert!(has(&errs, "d.queue_name", "only used with mode: rq"), "{errs:?}");
        let errs = errors(json!({"type": "redis", "url": "redis://h", "mode": "rq", "key": "q",
            "function": "a.b", "job_timeout": 0}));
        assert!(has(&errs, "d.job_timeout", "greater than 0"), "{errs:?}");
    }

    #[test]
    fn format_template_and_unknown_keys() {
        let errs =
            errors(json!({"type": "redis", "url": "redis://h", "key": "k", "format": "bson"}));
        assert!(has(&errs, "d.format", "must be one of"), "{errs:?}");
        let errs =
            errors(json!({"type": "redis", "url": "redis://h", "key": "k", "template": "x"}));
        assert!(has(&errs, "d.template", "only used with format: template"), "{errs:?}");
        let errs = errors(json!({"type": "redis", "url": "redis://h", "key": "k", "channel": "x"}));
        assert!(has(&errs, "d.channel", "unknown key"), "{errs:?}");
        let errs = errors(json!({"type": "redis", "url": "redis://h", "key": "{{oops"}));
        assert!(has(&errs, "d.key", "invalid template"), "{errs:?}");
        let errs =
            errors(json!({"type": "redis", "url": "redis://h", "key": "k", "timeout_seconds": 0}));
        assert!(has(&errs, "d.timeout_seconds", "greater than 0"), "{errs:?}");
    }

    #[test]
    fn python_paths() {
        assert!(is_python_path("process"));
        assert!(is_python_path("pkg.mod._f1"));
        assert!(!is_python_path("pkg..f"));
        assert!(!is_python_path("1pkg.f"));
        assert!(!is_python_path("a.b()"));
    }
}
