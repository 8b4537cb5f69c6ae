//! The webhook destination: signed HTTP requests with auth, retries and an SSRF guard.
//!
//! ```yaml
//! type: webhook
//! url: "https://hooks.example.com/task/{{task_name}}"   # template; http or https
//! method: POST                 # GET, POST, PUT, PATCH, DELETE (any case); default POST
//! headers:                     # values are templates
//!   X-Job: "{{job_uuid}}"
//! timeout_seconds: 30          # or "30s"; default output.default_timeout
//! content_type: application/json
//! format: json                 # optional; default: the JSON envelope below
//! retry_policy: { max_attempts: 5 }
//! retry_on_status: [429, 503]  # replaces the default retryable list
//! allow_private_networks: false
//! allowed_hosts: ["hooks.internal", "10.1.0.0/16"]
//! auth: { type: signature, secret: "${WEBHOOK_SECRET}", algorithm: sha256 }
//! ```
//!
//! **Body.** With a `format`, the body is the output in that format. Without one it is a
//! compact JSON envelope, keys in this order: `delivery_id`, `job_uuid`, `job_id`,
//! `task_name`, `task_version`, `status`, `priority`, `environment`, `timestamp` (ISO 8601
//! UTC), `duration_ms`, `metadata` (the job metadata object) and `output` (the parsed
//! output: JSON as-is, text as a string, binary as a base64 string); absent values are
//! `null`. `GET` and `DELETE` send no body at all, so the output is not sent with them
//! (use the URL or headers templates to pass what the receiver needs).
//!
//! **Headers.** Every request carries `User-Agent: outflow/<version>`, `Content-Type`, and
//! `webhook-id` (the delivery id, identical on every retry: the receiver's idempotency
//! key). `auth: {type: signature}` adds the Standard Webhooks `webhook-timestamp` and
//! `webhook-signature` computed over the exact body bytes sent.
//!
//! **URL variables** in the path and query are percent-encoded (everything but
//! `A-Z a-z 0-9 - . _ ~`), so a value cannot add path segments or query parameters;
//! variables in the scheme/host part are inserted as they are.
//!
//! **Network safety.** Host names are resolved by a [`resolver::PolicyResolver`] that drops
//! every address the [`NetworkPolicy`](outflow_core::netpolicy::NetworkPolicy) refuses and
//! hands reqwest only the checked ones, so the connection goes to an address that was
//! checked. Literal IP hosts are checked before sending. Redirects are *not followed*: a
//! redirect could point at an internal address the check never saw, so a 3xx is a
//! permanent failure naming the `Location`. Environment proxies (`HTTP_PROXY`...) are
//! ignored for the same reason: through a proxy, the proxy would resolve the host.
//!
//! **Outcome.** One attempt per [`Destination::deliver`] call. 2xx succeeds. Statuses in
//! the retryable list (default 408, 425, 429, 500, 502, 503, 504) are retryable, with a
//! `Retry-After` on 429/503 passed on to the runner; other statuses are permanent.
//! Timeouts and connection errors are retryable; template, format and policy failures are
//! permanent. Responses are read up to [`MAX_RESPONSE_BYTES`] (the rest is dropped, the
//! attempt is still judged by its status) and their first 4 KiB are kept.
//!
//! **Presets.** `slack` and `discord` are webhooks too: [`WebhookDestination::preset`] gives
//! them their own `type` name and a [`BodyRenderer`] for the message, and
//! [`WebhookConfig::secret_path`] masks their URL after the origin (the path is the
//! credential). The `preset` module reads the keys they share.

pub mod auth;
pub mod config;
#[cfg(any(feature = "slack", feature = "discord"))]
pub mod preset;
pub mod resolver;

use std::cell::Cell;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use outflow_core::attempt::response_excerpt;
use outflow_core::config::mask_url_secrets;
use outflow_core::config::{ConfigError, DestinationSpec};
use outflow_core::context::{JobContext, RenderContext};
use outflow_core::output::Output;
use outflow_core::retry::{RetryPolicy, is_retryable_status, parse_retry_after};
use outflow_core::template::VarSource;
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue, LOCATION, RETRY_AFTER};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use self::config::{WebhookConfig, validate_parsed};
use self::resolver::{PolicyResolver, ResolveError, check_literal};
use crate::{Attempt, BuildDefaults, CheckReport, DeliveryError, DeliveryReceipt, Destination};

/// How much of a response body is read; the rest is dropped unread.
pub const MAX_RESPONSE_BYTES: usize = 10 * 1024 * 1024;

/// The `User-Agent` of every request.
pub const USER_AGENT: &str = concat!("outflow/", env!("CARGO_PKG_VERSION"));

/// Parses and validates a `type: webhook` body.
pub fn build(
    spec: &DestinationSpec,
    defaults: &BuildDefaults,
    path: &str,
) -> Result<Arc<dyn Destination>, Vec<ConfigError>> {
    let cfg = WebhookConfig::parse(spec, defaults, path)?;
    let dest = WebhookDestination::new(cfg).map_err(|e| vec![ConfigError::new(path, e)])?;
    Ok(Arc::new(dest))
}

/// A configured webhook with its own pooled HTTP client.
///
/// The client (TLS configuration, connection pool) is created on the first request, not
/// when the destination is built: validating a job's destinations and planning its
/// deliveries build destinations on every submit, and a TLS client per submit would cost
/// more than the whole request.
pub struct WebhookDestination {
    cfg: WebhookConfig,
    client: std::sync::OnceLock<reqwest::Client>,
    resolver: PolicyResolver,
    preset: Option<Preset>,
}

/// Builds a preset's request body (a Slack or Discord message) in place of the envelope or
/// `format`.
pub trait BodyRenderer: Send + Sync + fmt::Debug {
    /// The body bytes for one delivery; a failure is permanent (a template, a payload that
    /// cannot be built).
    fn render(&self, ctx: &RenderContext<'_>) -> Result<Vec<u8>, DeliveryError>;
}

/// A destination type built on the webhook: its own `type` name and body.
#[derive(Debug)]
struct Preset {
    kind: &'static str,
    body: Arc<dyn BodyRenderer>,
}

impl fmt::Debug for WebhookDestination {
    /// Header values are left out: after `${VAR}` expansion they may hold tokens.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let header_names: Vec<&str> = self.cfg.headers.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("WebhookDestination")
            .field("kind", &self.kind())
            .field("url", &self.mask(self.cfg.url.source()))
            .field("method", &self.cfg.method)
            .field("headers", &header_names)
            .field("timeout", &self.cfg.timeout)
            .field("content_type", &self.cfg.content_type)
            .field("format", &self.cfg.format.as_ref().map(|f| f.name()))
            .field("auth", &self.cfg.auth.as_ref().map(auth::Auth::kind))
            .field("retry_policy", &self.cfg.retry_policy)
            .field("retry_on_status", &self.cfg.retry_on_status)
            .field("network", &self.cfg.network)
            .finish()
    }
}

impl WebhookDestination {
    /// Builds the destination; its HTTP client is created on first use.
    pub fn new(cfg: WebhookConfig) -> Result<Self, String> {
        let resolver = PolicyResolver::new(Arc::new(cfg.network.clone()));
        Ok(WebhookDestination { cfg, client: std::sync::OnceLock::new(), resolver, preset: None })
    }

    /// A preset (`slack`, `discord`): the webhook's transport, SSRF guard and outcome rules
    /// with its own `type` name and body.
    pub fn preset(
        kind: &'static str,
        cfg: WebhookConfig,
        body: Arc<dyn BodyRenderer>,
    ) -> Result<Self, String> {
        let mut dest = WebhookDestination::new(cfg)?;
        dest.preset = Some(Preset { kind, body });
        Ok(dest)
    }

    /// A URL as it may be shown: secrets in userinfo and query masked, and with
    /// [`WebhookConfig::secret_path`] everything after the origin.
    fn mask(&self, url: &str) -> String {
        if self.cfg.secret_path { mask_path(url) } else { mask_url_secrets(url) }
    }

    /// The pooled client, created on first use. Fails only if the TLS backend cannot start.
    fn client(&self) -> Result<&reqwest::Client, DeliveryError> {
        if let Some(client) = self.client.get() {
            return Ok(client);
        }
        let client = reqwest::Client::builder()
            .user_agent(USER_AGENT)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .timeout(self.cfg.timeout)
            .connect_timeout(self.cfg.timeout)
            .dns_resolver(self.resolver.clone())
            .build()
            .map_err(|e| {
                DeliveryError::permanent(format!(
                    "cannot create the HTTP client: {}",
                    error_chain(&e)
                ))
            })?;
        // Two first uses may race: both clients work, one is kept.
        Ok(self.client.get_or_init(|| client))
    }

    /// The validated configuration.
    pub fn config(&self) -> &WebhookConfig {
        &self.cfg
    }

    /// Renders the URL for one delivery: origin variables verbatim, later ones
    /// percent-encoded.
    fn render_url(&self, ctx: &dyn VarSource) -> Result<url::Url, DeliveryError> {
        let index = Cell::new(0usize);
        let origin_vars = self.cfg.origin_vars;
        let escape = |v: &str| {
            let i = index.get();
            index.set(i + 1);
            if i < origin_vars { v.to_string() } else { percent_encode(v) }
        };
        let source = self.mask(self.cfg.url.source());
        let rendered = self.cfg.url.render_with(ctx, &escape).map_err(|e| {
            DeliveryError::permanent(format!("cannot render URL template '{source}': {e}"))
        })?;
        let url = url::Url::parse(&rendered)
            .map_err(|e| format!("Invalid URL format: {e}; expected {}", config::URL_EXPECTED))
            .and_then(|u| validate_parsed(&u).map(|()| u))
            .map_err(|msg| DeliveryError::permanent(format!("{msg} (URL template '{source}')")))?;
        Ok(url)
    }

    /// The request body for one delivery.
    fn body(&self, ctx: &RenderContext<'_>) -> Result<Vec<u8>, DeliveryError> {
        if let Some(preset) = &self.preset {
            return preset.body.render(ctx);
        }
        match &self.cfg.format {
            Some(format) => format.render(ctx).map_err(|e| DeliveryError::permanent(e.to_string())),
            None => Ok(serde_json::to_vec(&envelope(ctx)).expect("JSON values always serialize")),
        }
    }

    /// The request headers except auth, which needs the final body.
    fn headers(&self, ctx: &RenderContext<'_>) -> Result<HeaderMap, DeliveryError> {
        let mut headers = HeaderMap::new();
        for (name, template) in &self.cfg.headers {
            let value = template.render(ctx).map_err(|e| {
                DeliveryError::permanent(format!("cannot render header '{name}': {e}"))
            })?;
            let value = HeaderValue::from_str(&value).map_err(|_| {
                DeliveryError::permanent(format!(
                    "header '{name}' rendered to a value with characters not allowed in HTTP \
                     headers (control characters or non-ASCII)"
                ))
            })?;
            headers.insert(name.clone(), value);
        }
        headers.insert(CONTENT_TYPE, self.cfg.content_type.clone());
        let id = HeaderValue::from_str(ctx.delivery_id).map_err(|_| {
            DeliveryError::permanent("the delivery id is not a valid HTTP header value")
        })?;
        headers.insert(HeaderName::from_static(auth::headers::WEBHOOK_ID), id);
        Ok(headers)
    }

    /// Classifies a failed `send`.
    fn send_error(&self, err: &reqwest::Error, target: &str) -> DeliveryError {
        if let Some(refusal) = ResolveError::refusal_in(err) {
            return blocked(target, &refusal.to_string());
        }
        if err.is_timeout() {
            return DeliveryError::retryable(format!(
                "Request timeout after {} ({} {target})",
                human_duration(self.cfg.timeout),
                self.cfg.method
            ));
        }
        if err.is_builder() {
            return DeliveryError::permanent(format!(
                "cannot build the request to {target}: {}",
                error_chain(err)
            ));
        }
        DeliveryError::retryable(format!("Connection to {target} failed: {}", error_chain(err)))
    }

    /// Judges a response by its status.
    fn judge(
        &self,
        status: StatusCode,
        response_headers: &HeaderMap,
        body: &[u8],
        target: String,
        sent: u64,
    ) -> Result<DeliveryReceipt, DeliveryError> {
        let code = status.as_u16();
        let excerpt = (!body.is_empty()).then(|| response_excerpt(body));
        if status.is_success() {
            return Ok(DeliveryReceipt {
                target,
                status_code: Some(code),
                bytes: sent,
                response_excerpt: excerpt,
            });
        }
        let label = match status.canonical_reason() {
            Some(reason) => format!("HTTP {code} {reason} from {target}"),
            None => format!("HTTP {code} from {target}"),
        };
        let err = if is_retryable_status(code, self.cfg.retry_on_status.as_deref()) {
            let retry_after = matches!(code, 429 | 503)
                .then(|| response_headers.get(RETRY_AFTER))
                .flatten()
                .and_then(|v| v.to_str().ok())
                .and_then(|v| {
                    parse_retry_after(v, SystemTime::now()).or_else(|| fractional_secs(v))
                });
            DeliveryError::retryable(label).with_retry_after(retry_after)
        } else if status.is_redirection() {
            let location = response_headers
                .get(LOCATION)
                .and_then(|v| v.to_str().ok())
                .map(mask_url_secrets)
                .unwrap_or_else(|| "none given".into());
            DeliveryError::permanent(format!(
                "{label}: redirects are not followed (Location: {location}); a redirect could \
                 lead to an address the network policy never checked, so configure the final URL"
            ))
        } else {
            DeliveryError::permanent(label)
        };
        Err(err.with_status(code).with_excerpt(excerpt))
    }

    /// The URL `check` connects to: the literal one, or one rendered for a sample job when
    /// only path variables are templated.
    fn check_url(&self) -> Result<url::Url, DeliveryError> {
        let job = JobContext::new_now();
        let output = Output::Json(Value::Null);
        let sample = RenderContext::new(&job, &output, "check");
        if self.cfg.origin_vars == 0 {
            // Path variables may have no value for a sample job; the origin is all we need.
            let literal = SampleVars(&sample);
            return self.render_url(&literal);
        }
        self.render_url(&sample).map_err(|e| {
            DeliveryError::permanent(format!(
                "cannot check a webhook whose host comes from template variables without a \
                 job: {}",
                e.message
            ))
        })
    }
}

/// Renders variables from a sample job, with a placeholder for those it has no value for.
struct SampleVars<'a>(&'a RenderContext<'a>);

impl VarSource for SampleVars<'_> {
    fn var(
        &self,
        name: &str,
    ) -> Result<std::borrow::Cow<'_, str>, outflow_core::template::TemplateError> {
        Ok(self.0.var(name).unwrap_or(std::borrow::Cow::Borrowed("x")))
    }
}

/// The default body: the job context and the parsed output (see the module docs).
pub fn envelope(ctx: &RenderContext<'_>) -> Value {
    let job = ctx.job;
    json!({
        "delivery_id": ctx.delivery_id,
        "job_uuid": job.job_uuid.to_string(),
        "job_id": job.job_id,
        "task_name": job.task_name,
        "task_version": job.task_version,
        "status": job.status,
        "priority": job.priority.as_str(),
        "environment": job.environment,
        "timestamp": ctx.var("timestamp").map(|t| t.into_owned()).ok(),
        "duration_ms": job.duration_ms,
        "metadata": job.metadata,
        "output": ctx.output.to_json_value(),
    })
}

fn has_body(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::DELETE)
}

#[async_trait]
impl Destination for WebhookDestination {
    fn kind(&self) -> &'static str {
        self.preset.as_ref().map_or("webhook", |p| p.kind)
    }

    fn describe(&self) -> String {
        self.mask(self.cfg.url.source())
    }

    fn isolation_key(&self) -> String {
        match &self.preset {
            // Every Slack (or Discord) webhook shares one origin, but each is its own
            // endpoint with its own rate limit: one revoked webhook must not open the
            // breaker of the others. The URL is a secret, so it is keyed by a hash of it.
            Some(preset) => {
                use std::hash::{Hash, Hasher};
                let mut hasher = std::collections::hash_map::DefaultHasher::new();
                self.cfg.url.source().hash(&mut hasher);
                format!(
                    "{}:{}#{:016x}",
                    preset.kind,
                    self.mask(self.cfg.url.source()),
                    hasher.finish()
                )
            }
            None => origin_key(self.cfg.url.source()),
        }
    }

    fn retry_policy(&self) -> &RetryPolicy {
        &self.cfg.retry_policy
    }

    async fn deliver(&self, attempt: Attempt<'_>) -> Result<DeliveryReceipt, DeliveryError> {
        let ctx = attempt.render;
        let url = self.render_url(&ctx)?;
        let target = self.mask(url.as_str());
        if let Some(host) = url.host() {
            check_literal(&self.cfg.network, &host).map_err(|msg| blocked(&target, &msg))?;
        }
        let mut headers = self.headers(&ctx)?;
        let body = if has_body(&self.cfg.method) { self.body(&ctx)? } else { Vec::new() };
        if let Some(auth) = &self.cfg.auth {
            let now = chrono::Utc::now().timestamp();
            auth.apply(&mut headers, ctx.delivery_id, now, &body);
        }
        let sent = body.len() as u64;
        let mut request = self.client()?.request(self.cfg.method.clone(), url).headers(headers);
        if has_body(&self.cfg.method) {
            request = request.body(body);
        }
        tracing::debug!(target = %target, method = %self.cfg.method, attempt = attempt.number,
            bytes = sent, "sending webhook");
        let mut response = request.send().await.map_err(|e| self.send_error(&e, &target))?;
        let status = response.status();
        let response_headers = response.headers().clone();
        let body = read_capped(&mut response, &target).await;
        self.judge(status, &response_headers, &body, target, sent)
    }

    async fn check(&self) -> Result<CheckReport, DeliveryError> {
        let started = Instant::now();
        let url = self.check_url()?;
        let host = url.host().expect("validated URLs have a host");
        let port = url.port_or_known_default().expect("http and https have default ports");
        let target = match &host {
            url::Host::Ipv6(ip) => format!("[{ip}]:{port}"),
            other => format!("{other}:{port}"),
        };
        let ips = match &host {
            url::Host::Ipv4(ip) => vec![std::net::IpAddr::V4(*ip)],
            url::Host::Ipv6(ip) => vec![std::net::IpAddr::V6(*ip)],
            url::Host::Domain(_) => Vec::new(),
        };
        let ips = if ips.is_empty() {
            self.resolver.resolve_allowed(&host.to_string()).await.map_err(|e| match e {
                ResolveError::Refused(m) => blocked(&target, &m),
                ResolveError::Lookup(m) => DeliveryError::retryable(m),
            })?
        } else {
            check_literal(&self.cfg.network, &host).map_err(|m| blocked(&target, &m))?;
            ips
        };
        let mut last = String::new();
        for ip in ips {
            let connect = tokio::net::TcpStream::connect((ip, port));
            match tokio::time::timeout(self.cfg.timeout, connect).await {
                Ok(Ok(_stream)) => {
                    return Ok(CheckReport { target, elapsed: started.elapsed() });
                }
                Ok(Err(e)) => last = format!("cannot connect to {target} ({ip}): {e}"),
                Err(_) => {
                    last = format!(
                        "connecting to {target} ({ip}) timed out after {}",
                        human_duration(self.cfg.timeout)
                    );
                }
            }
        }
        Err(DeliveryError::retryable(last))
    }
}

/// A permanent error for an address the network policy refused; `why` is the policy's
/// message (the address, why it is special, the setting that would allow it).
fn blocked(target: &str, why: &str) -> DeliveryError {
    DeliveryError::permanent(format!("{target} blocked by the SSRF guard: {why}"))
}

/// Reads a response body up to [`MAX_RESPONSE_BYTES`]. A read error ends the body early:
/// the status line already arrived, and the attempt is judged by it.
async fn read_capped(response: &mut reqwest::Response, target: &str) -> Vec<u8> {
    let mut body = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                let room = MAX_RESPONSE_BYTES - body.len();
                if chunk.len() >= room {
                    body.extend_from_slice(&chunk[..room]);
                    tracing::debug!(target = %target, "response body cut at {MAX_RESPONSE_BYTES} bytes");
                    break;
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => break,
            Err(e) => {
                tracing::debug!(target = %target, error = %error_chain(&e),
                    "reading the response body failed; judging by status");
                break;
            }
        }
    }
    body
}

/// An error and its causes, `: `-separated. reqwest's own top-level text is skipped when
/// there is a cause (it is generic and its URL form could carry credentials).
pub(crate) fn error_chain(err: &reqwest::Error) -> String {
    let mut parts = Vec::new();
    let mut cur = std::error::Error::source(err);
    while let Some(e) = cur {
        let text = e.to_string();
        if !parts.contains(&text) {
            parts.push(text);
        }
        cur = e.source();
    }
    if parts.is_empty() {
        parts.push(match err.url() {
            Some(_) => "request failed".to_string(),
            None => err.to_string(),
        });
    }
    parts.join(": ")
}

/// `30s`, `1.5s`, `250ms`.
fn human_duration(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else if d.as_secs() == 0 {
        format!("{}ms", d.as_millis())
    } else {
        format!("{}s", d.as_secs_f64())
    }
}

/// `Retry-After: 1.5`: Discord sends fractional seconds, which HTTP's own grammar lacks.
fn fractional_secs(value: &str) -> Option<Duration> {
    let secs = value.trim().parse::<f64>().ok()?;
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs.min(86_400.0)))
}

/// `scheme://host:port/********`: the origin only, for URLs whose path is a credential.
fn mask_path(url: &str) -> String {
    let start = url.find("://").map_or(0, |i| i + 3);
    let end = url[start..].find(['/', '?', '#']).map_or(url.len(), |i| start + i);
    let origin = mask_url_secrets(&url[..end]);
    if end == url.len() { origin } else { format!("{origin}/********") }
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
fn percent_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_and_secret_query_values_are_masked() {
        assert_eq!(
            mask_url_secrets("https://u:pw@h.example/x@y"),
            "https://u:********@h.example/x@y"
        );
        assert_eq!(mask_url_secrets("https://u@h/"), "https://u@h/");
        assert_eq!(mask_url_secrets("https://h/?a=b:c@d"), "https://h/?a=b:c@d");
        assert_eq!(
            mask_url_secrets("https://h/in?token=s3cret&x=1"),
            "https://h/in?token=********&x=1"
        );
        assert_eq!(mask_url_secrets("no url"), "no url");
    }

    #[test]
    fn fractional_retry_after_is_understood() {
        assert_eq!(fractional_secs("1.5"), Some(Duration::from_millis(1500)));
        assert_eq!(fractional_secs("-1"), None);
        assert_eq!(fractional_secs("soon"), None);
    }

    #[test]
    fn secret_paths_are_masked_after_the_origin() {
        assert_eq!(
            mask_path("https://hooks.slack.com/services/T0/B0/XYZ?x=1"),
            "https://hooks.slack.com/********"
        );
        assert_eq!(mask_path("http://127.0.0.1:9/"), "http://127.0.0.1:9/********");
        assert_eq!(mask_path("https://h.example"), "https://h.example");
    }

    #[test]
    fn path_values_are_encoded() {
        assert_eq!(percent_encode("a b/c?d=é~"), "a%20b%2Fc%3Fd%3D%C3%A9~");
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(human_duration(Duration::from_secs(30)), "30s");
        assert_eq!(human_duration(Duration::from_millis(250)), "250ms");
        assert_eq!(human_duration(Duration::from_millis(1500)), "1.5s");
    }
}

/// The isolation key of a URL template: `webhook:scheme://host:port` when the origin has no
/// variables, else the origin's template text (every job rendering a different host shares
/// one key, which errs on the side of isolating too little rather than too much).
fn origin_key(url_template: &str) -> String {
    let static_len = url_template.find("{{").unwrap_or(url_template.len());
    let origin_end = url_template
        .find("://")
        .map(|i| i + 3)
        .and_then(|start| url_template[start..].find('/').map(|j| start + j))
        .unwrap_or(url_template.len());
    if origin_end <= static_len
        && let Ok(url) = url::Url::parse(&url_template[..origin_end])
        && let Some(host) = url.host_str()
    {
        let port = url.port_or_known_default().map(|p| format!(":{p}")).unwrap_or_default();
        return format!("webhook:{}://{host}{port}", url.scheme());
    }
    format!("webhook:{}", mask_url_secrets(&url_template[..origin_end]))
}

#[cfg(test)]
mod isolation_tests {
    use super::origin_key;

    #[test]
    fn origin_keys() {
        assert_eq!(origin_key("https://a.example/x/{{job_uuid}}"), "webhook:https://a.example:443");
        assert_eq!(origin_key("http://127.0.0.1:9000/hook"), "webhook:http://127.0.0.1:9000");
        assert_eq!(origin_key("https://{{meta.host}}/x"), "webhook:https://{{meta.host}}");
    }
}
