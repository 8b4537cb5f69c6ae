//! The SMTP destination: one email per delivery, the output attached or inlined.
//!
//! ```yaml
//! type: smtp
//! host: smtp.example.com
//! port: 587                    # default by security: none 25, starttls 587, tls 465
//! security: starttls           # none | starttls (default) | tls (implicit TLS); alias: tls
//! username: outflow            # with password: AUTH PLAIN/LOGIN after EHLO
//! password: "${SMTP_PASSWORD}" # a secret: never printed
//! from: "Outflow <outflow@example.com>"       # template
//! to: ["{{meta.owner}}@example.com"]          # list of templates (a single string works too)
//! cc: []
//! bcc: ["audit@example.com"]
//! subject: "{{task_name}} {{status}}"         # template; default "[outflow] job {{job_uuid}} {{status}}"
//! body: "Job {{job_uuid}} finished: {{status}}"   # Handlebars text; default: a summary
//! html_body: "<p>{{task_name}}: {{status}}</p>"   # optional Handlebars (values HTML-escaped)
//! attach_output: true          # default true; false inlines it into the text body
//! attachment_name: "{{task_name}}-{{date}}.json"  # template; default outflow-<job_uuid>.<ext>
//! format: json                 # default: pretty JSON for JSON outputs, as-is otherwise
//! max_inline_bytes: 256KiB     # with attach_output: false; longer outputs are cut with a note
//! timeout_seconds: 30          # bounds one whole attempt; default output.default_timeout
//! retry_policy: { max_attempts: 5 }
//! ```
//!
//! **Message.** `From`, `To`, `Cc`, `Subject`, `Date`, `User-Agent` and `Message-ID:
//! <delivery_id@outflow>`, identical on every retry of a delivery so receivers (and mail
//! stores) can drop a duplicate: delivery is at-least-once, a retry after a lost reply sends
//! the message again. `Bcc` recipients are in the envelope only. The text body is the
//! `body` template (or a summary: task, status, duration, job, delivery); with `html_body`
//! the two form a `multipart/alternative`. With `attach_output` the formatted output is a
//! base64 attachment (so it arrives byte-exact) whose content type comes from the format;
//! without it, the output is appended to the text body up to `max_inline_bytes`, cut at a
//! character boundary with a note saying how much was left out (a binary output is never
//! inlined: a note says so).
//!
//! **Addresses** are rendered per delivery and validated after rendering: an invalid one is a
//! permanent failure naming the field and the rendered text. Header values are rendered
//! with line breaks replaced by spaces, so a value cannot add a header.
//!
//! **Outcome.** SMTP 4xx replies and connection problems (refused, reset, timeout) are
//! retryable; 5xx replies (unknown recipient, authentication failed 535, message too big)
//! and TLS failures (certificate not trusted) are permanent. Connections are pooled and
//! reused across deliveries; a pooled connection the server closed is detected (NOOP)
//! and replaced. [`Destination::check`] connects, says EHLO, authenticates when credentials
//! are set and sends NOOP.

pub mod config;

use std::fmt;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use async_trait::async_trait;
use futures::StreamExt;
use lettre::message::header::{ContentTransferEncoding, ContentType};
use lettre::message::{Attachment, Body, Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::transport::smtp::{AsyncSmtpTransport, PoolConfig};
use lettre::{AsyncTransport, Message, Tokio1Executor};
use outflow_core::config::{ConfigError, DestinationSpec};
use outflow_core::context::RenderContext;
use outflow_core::format::OutputFormat;
use outflow_core::output::Output;
use outflow_core::retry::RetryPolicy;
use outflow_core::template::Template;
use serde_json::Value;

use self::config::{Security, SmtpConfig, parse_mailbox};
use crate::{
    Attempt, BatchResults, BuildDefaults, CheckReport, DeliveryError, DeliveryReceipt, Destination,
};

/// The `User-Agent` header of every message.
const USER_AGENT: &str = concat!("outflow/", env!("CARGO_PKG_VERSION"));

/// How many messages of one batch are in flight at once (each on its own pooled connection).
const BATCH_CONCURRENCY: usize = 4;

/// The most connections kept open to one server.
const POOL_MAX_SIZE: u32 = 8;

/// Parses and validates a `type: smtp` body.
pub fn build(
    spec: &DestinationSpec,
    defaults: &BuildDefaults,
    path: &str,
) -> Result<Arc<dyn Destination>, Vec<ConfigError>> {
    let cfg = SmtpConfig::parse(spec, defaults, path)?;
    Ok(Arc::new(SmtpDestination::new(cfg)))
}

/// A configured SMTP destination with its pooled transport.
///
/// The transport (and its pool) is created on the first delivery or check: building a
/// destination happens on every job submission and must stay cheap, and the pool's cleanup
/// task needs a running Tokio runtime.
pub struct SmtpDestination {
    cfg: SmtpConfig,
    transport: OnceLock<AsyncSmtpTransport<Tokio1Executor>>,
}

impl fmt::Debug for SmtpDestination {
    /// The password is left out (it is a `Secret` anyway); addresses are templates.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmtpDestination")
            .field("server", &self.server())
            .field("security", &self.cfg.security)
            .field("username", &self.cfg.username)
            .field("from", &self.cfg.from.source())
            .field("to", &sources(&self.cfg.to))
            .field("cc", &sources(&self.cfg.cc))
            .field("bcc", &sources(&self.cfg.bcc))
            .field("attach_output", &self.cfg.attach_output)
            .field("timeout", &self.cfg.timeout)
            .finish()
    }
}

fn sources(templates: &[Template]) -> Vec<&str> {
    templates.iter().map(Template::source).collect()
}

/// One message, rendered and ready to send.
struct Rendered {
    message: Message,
    recipients: Vec<String>,
}

impl SmtpDestination {
    /// The destination; its transport is created on first use.
    pub fn new(cfg: SmtpConfig) -> Self {
        SmtpDestination { cfg, transport: OnceLock::new() }
    }

    /// The validated configuration.
    pub fn config(&self) -> &SmtpConfig {
        &self.cfg
    }

    /// `smtp://host:port` (no credentials).
    fn server(&self) -> String {
        let scheme = if self.cfg.security == Security::Tls { "smtps" } else { "smtp" };
        let host = &self.cfg.host;
        if host.contains(':') {
            format!("{scheme}://[{host}]:{}", self.cfg.port)
        } else {
            format!("{scheme}://{host}:{}", self.cfg.port)
        }
    }

    /// The pooled transport, created on first use.
    fn transport(&self) -> Result<&AsyncSmtpTransport<Tokio1Executor>, DeliveryError> {
        if let Some(t) = self.transport.get() {
            return Ok(t);
        }
        let cfg = &self.cfg;
        let tls = |host: &str| {
            TlsParameters::new(host.to_string()).map_err(|e| {
                DeliveryError::permanent(format!("cannot set up TLS for {}: {e}", self.server()))
            })
        };
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&cfg.host)
            .port(cfg.port)
            .timeout(Some(cfg.timeout))
            .pool_config(PoolConfig::new().max_size(POOL_MAX_SIZE));
        builder = match cfg.security {
            Security::None => builder.tls(Tls::None),
            Security::StartTls => builder.tls(Tls::Required(tls(&cfg.host)?)),
            Security::Tls => builder.tls(Tls::Wrapper(tls(&cfg.host)?)),
        };
        if let (Some(user), Some(password)) = (&cfg.username, &cfg.password) {
            builder =
                builder.credentials(Credentials::new(user.clone(), password.expose().to_string()));
        }
        // Two first uses may race: both transports work, one is kept (the other's pool,
        // still empty, ends with it).
        Ok(self.transport.get_or_init(|| builder.build()))
    }

    /// Renders one message.
    fn render(&self, ctx: &RenderContext<'_>) -> Result<Rendered, DeliveryError> {
        let cfg = &self.cfg;
        let from = render_mailbox(&cfg.from, ctx, "from")?;
        let mut builder = Message::builder().from(from);
        let mut recipients = Vec::new();
        for (key, list) in [("to", &cfg.to), ("cc", &cfg.cc), ("bcc", &cfg.bcc)] {
            for (i, template) in list.iter().enumerate() {
                let mailbox = render_mailbox(template, ctx, &format!("{key}[{i}]"))?;
                recipients.push(mailbox.email.to_string());
                builder = match key {
                    "to" => builder.to(mailbox),
                    "cc" => builder.cc(mailbox),
                    _ => builder.bcc(mailbox),
                };
            }
        }
        let subject = render_header(&cfg.subject, ctx, "subject")?;
        builder = builder
            .subject(subject)
            .message_id(Some(message_id(ctx.delivery_id)))
            .date_now()
            .user_agent(USER_AGENT.to_string());

        let (output, content_type, extension) = self.formatted_output(ctx)?;
        let attachment_name = if cfg.attach_output {
            Some(match &cfg.attachment_name {
                Some(t) => {
                    let name = render_header(t, ctx, "attachment_name")?;
                    if name.trim().is_empty() {
                        return Err(DeliveryError::permanent(format!(
                            "attachment_name '{}' rendered to an empty file name",
                            t.source()
                        )));
                    }
                    name
                }
                None => format!("outflow-{}.{extension}", ctx.job.job_uuid),
            })
        } else {
            None
        };

        let mut data = ctx.to_json();
        if let (Value::Object(map), Some(name)) = (&mut data, &attachment_name) {
            map.insert("attachment_name".into(), Value::String(name.clone()));
        }
        let mut text = match &cfg.body {
            Some(t) => t.render_value(&data).map_err(|e| {
                DeliveryError::permanent(format!("cannot render the body template: {e}"))
            })?,
            None => summary(ctx, attachment_name.as_deref(), output.len()),
        };
        if !cfg.attach_output {
            inline_output(&mut text, ctx.output, &output, cfg.max_inline_bytes);
        }
        let plain = SinglePart::plain(text);
        let html = match &cfg.html_body {
            Some(t) => Some(SinglePart::html(t.render_value(&data).map_err(|e| {
                DeliveryError::permanent(format!("cannot render the html_body template: {e}"))
            })?)),
            None => None,
        };
        let message = match (html, attachment_name) {
            (None, None) => builder.singlepart(plain),
            (Some(html), None) => {
                builder.multipart(MultiPart::alternative().singlepart(plain).singlepart(html))
            }
            (html, Some(name)) => {
                let content_type = ContentType::parse(content_type).unwrap_or_else(|_| {
                    ContentType::parse("application/octet-stream").expect("valid")
                });
                // Base64 always: the attachment must arrive byte-exact, and 7bit/QP bodies may
                // have their line endings rewritten on the way.
                let body = Body::new_with_encoding(output, ContentTransferEncoding::Base64)
                    .map_err(|_| DeliveryError::permanent("cannot base64-encode the output"))?;
                let attachment = Attachment::new(name).body(body, content_type);
                let text_part = match html {
                    Some(html) => MultiPart::alternative().singlepart(plain).singlepart(html),
                    None => MultiPart::mixed().singlepart(plain),
                };
                let mixed = if cfg.html_body.is_some() {
                    MultiPart::mixed().multipart(text_part).singlepart(attachment)
                } else {
                    text_part.singlepart(attachment)
                };
                builder.multipart(mixed)
            }
        }
        .map_err(|e| DeliveryError::permanent(format!("cannot build the message: {e}")))?;
        Ok(Rendered { message, recipients })
    }

    /// The output's bytes, content type and file extension.
    fn formatted_output(
        &self,
        ctx: &RenderContext<'_>,
    ) -> Result<(Vec<u8>, &'static str, &'static str), DeliveryError> {
        let auto;
        let format = match &self.cfg.format {
            Some(f) => f,
            None => {
                auto = match ctx.output {
                    Output::Json(Value::String(_)) | Output::Text(_) | Output::Binary(_) => {
                        OutputFormat::Raw
                    }
                    Output::Json(_) => OutputFormat::Json,
                };
                &auto
            }
        };
        let bytes = format.render(ctx).map_err(|e| DeliveryError::permanent(e.to_string()))?;
        Ok((bytes, format.content_type_for(ctx.output), format.extension_for(ctx.output)))
    }

    /// The receipt/error target: server and recipients.
    fn target(&self, recipients: &[String]) -> String {
        format!("{} to {}", self.server(), recipients.join(", "))
    }

    async fn send(&self, rendered: Rendered) -> Result<DeliveryReceipt, DeliveryError> {
        let target = self.target(&rendered.recipients);
        let transport = self.transport()?;
        let bytes = rendered.message.formatted();
        let envelope = rendered.message.envelope();
        let sent = bytes.len() as u64;
        tracing::debug!(target = %target, bytes = sent, "sending email");
        let result =
            tokio::time::timeout(self.cfg.timeout, transport.send_raw(envelope, &bytes)).await;
        match result {
            Err(_) => Err(DeliveryError::retryable(format!(
                "sending to {target} timed out after {:?}",
                self.cfg.timeout
            ))),
            Ok(Err(e)) => Err(classify(&e, &target)),
            Ok(Ok(response)) => Ok(DeliveryReceipt {
                target,
                status_code: Some(u16::from(response.code())),
                bytes: sent,
                response_excerpt: Some(response.message().collect::<Vec<_>>().join(" ")),
            }),
        }
    }
}

/// `<delivery_id@outflow>`, keeping only characters a message id may hold.
fn message_id(delivery_id: &str) -> String {
    let local: String = delivery_id
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~.".contains(*c))
        .collect();
    format!("<{local}@outflow>")
}

/// Renders a header value with line breaks flattened (no header injection).
fn render_header(
    t: &Template,
    ctx: &RenderContext<'_>,
    key: &str,
) -> Result<String, DeliveryError> {
    let text = t.render(ctx).map_err(|e| {
        DeliveryError::permanent(format!("cannot render {key} template '{}': {e}", t.source()))
    })?;
    Ok(text.replace(['\r', '\n'], " "))
}

/// Renders and validates one address.
fn render_mailbox(
    t: &Template,
    ctx: &RenderContext<'_>,
    key: &str,
) -> Result<Mailbox, DeliveryError> {
    let text = render_header(t, ctx, key)?;
    parse_mailbox(&text).map_err(|msg| {
        DeliveryError::permanent(format!("{key} (template '{}'): {msg}", t.source()))
    })
}

/// Classifies a failed SMTP exchange.
fn classify(err: &lettre::transport::smtp::Error, target: &str) -> DeliveryError {
    let code = err.status().map(u16::from);
    let detail = err.to_string();
    let e = if err.is_permanent() {
        let what = match code {
            Some(530 | 534 | 535 | 538) => "refused authentication",
            _ => "rejected the message",
        };
        DeliveryError::permanent(format!("{target}: the server {what}: {detail}"))
    } else if err.is_transient() {
        DeliveryError::retryable(format!("{target}: temporary failure: {detail}"))
    } else if err.is_timeout() {
        DeliveryError::retryable(format!("{target}: timed out: {detail}"))
    } else if err.is_tls() {
        DeliveryError::permanent(format!(
            "{target}: TLS failed (is the certificate trusted and does security match the \
             port?): {detail}"
        ))
    } else if err.is_client() {
        DeliveryError::permanent(format!("{target}: {detail}"))
    } else {
        DeliveryError::retryable(format!("{target}: connection failed: {detail}"))
    };
    match code {
        Some(c) => e.with_status(c),
        None => e,
    }
}

/// The default text body.
fn summary(ctx: &RenderContext<'_>, attachment: Option<&str>, size: usize) -> String {
    let job = ctx.job;
    let mut out = String::new();
    if let Some(task) = &job.task_name {
        out.push_str(&format!("Task:      {task}\n"));
    }
    out.push_str(&format!("Status:    {}\n", job.status));
    out.push_str(&format!("Duration:  {}\n", crate::text::human_ms(job.duration_ms)));
    match job.job_id {
        Some(id) => out.push_str(&format!("Job:       {} (id {id})\n", job.job_uuid)),
        None => out.push_str(&format!("Job:       {}\n", job.job_uuid)),
    }
    out.push_str(&format!(
        "Finished:  {}\n",
        job.completed_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    ));
    out.push_str(&format!("Delivery:  {}\n", ctx.delivery_id));
    if let Some(name) = attachment {
        out.push_str(&format!("\nThe output ({size} bytes) is attached as {name}.\n"));
    }
    out
}

/// Appends the output to `text`, cut at `max` bytes on a character boundary, with a note
/// when cut; binary outputs are only described.
fn inline_output(text: &mut String, output: &Output, bytes: &[u8], max: u64) {
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    let total = bytes.len();
    let shown = match (output, std::str::from_utf8(bytes)) {
        (Output::Binary(_), _) | (_, Err(_)) => {
            text.push_str(&format!(
                "\n(The output is {total} bytes of binary data, which is not shown inline; set \
                 attach_output: true to receive it as an attachment.)\n"
            ));
            return;
        }
        (_, Ok(s)) => s,
    };
    let max = usize::try_from(max).unwrap_or(usize::MAX);
    let cut = crate::text::truncate_bytes(shown, max);
    text.push_str(&format!("\n---- output ({total} bytes) ----\n"));
    text.push_str(cut);
    if !cut.ends_with('\n') {
        text.push('\n');
    }
    if cut.len() < total {
        text.push_str(&format!(
            "[output truncated: {} of {total} bytes shown; set attach_output: true to receive \
             it whole]\n",
            cut.len()
        ));
    }
}

#[async_trait]
impl Destination for SmtpDestination {
    fn kind(&self) -> &'static str {
        "smtp"
    }

    fn describe(&self) -> String {
        format!("{} to {}", self.server(), sources(&self.cfg.to).join(", "))
    }

    fn isolation_key(&self) -> String {
        format!("smtp:{}:{}", self.cfg.host, self.cfg.port)
    }

    fn retry_policy(&self) -> &RetryPolicy {
        &self.cfg.retry_policy
    }

    async fn deliver(&self, attempt: Attempt<'_>) -> Result<DeliveryReceipt, DeliveryError> {
        let rendered = self.render(&attempt.render)?;
        self.send(rendered).await
    }

    /// Sends a few messages at once, each on its own pooled connection; results keep the
    /// records' order.
    async fn deliver_batch(&self, records: &[Attempt<'_>]) -> BatchResults {
        // Collected first: a lazily mapped iterator held across the await would make the
        // future's Send-ness depend on the closure's lifetimes, which async_trait cannot prove.
        let mut pending = Vec::with_capacity(records.len());
        for record in records {
            pending.push(self.deliver(*record));
        }
        futures::stream::iter(pending).buffered(BATCH_CONCURRENCY).collect().await
    }

    async fn check(&self) -> Result<CheckReport, DeliveryError> {
        let started = Instant::now();
        let target = self.server();
        let transport = self.transport()?;
        match tokio::time::timeout(self.cfg.timeout, transport.test_connection()).await {
            Err(_) => Err(DeliveryError::retryable(format!(
                "{target}: no answer within {:?}",
                self.cfg.timeout
            ))),
            Ok(Err(e)) => Err(classify(&e, &target)),
            Ok(Ok(false)) => {
                Err(DeliveryError::retryable(format!("{target}: the server did not answer NOOP")))
            }
            Ok(Ok(true)) => Ok(CheckReport { target, elapsed: started.elapsed() }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use outflow_core::context::JobContext;

    #[test]
    fn message_ids_derive_from_the_delivery_id() {
        assert_eq!(message_id("dlv_0190b6f2-7c5e"), "<dlv_0190b6f2-7c5e@outflow>");
        assert_eq!(message_id("a b<c>@d"), "<abcd@outflow>");
    }

    #[test]
    fn inline_output_is_cut_on_a_char_boundary_with_a_note() {
        let out = Output::Text("héllo wörld".into());
        let bytes = "héllo wörld".as_bytes();
        let mut text = String::from("intro");
        inline_output(&mut text, &out, bytes, 2);
        assert!(text.contains("---- output (13 bytes) ----\nh\n"), "{text}");
        assert!(text.contains("[output truncated: 1 of 13 bytes shown"), "{text}");
        let mut whole = String::new();
        inline_output(&mut whole, &out, bytes, 100);
        assert!(!whole.contains("truncated") && whole.contains("héllo wörld\n"), "{whole}");
        let mut bin = String::new();
        inline_output(&mut bin, &Output::Binary(vec![0xff, 0].into()), &[0xff, 0], 100);
        assert!(bin.contains("2 bytes of binary data"), "{bin}");
    }

    #[test]
    fn header_values_cannot_add_headers() {
        let job = JobContext::new_now();
        let out = Output::Text(String::new());
        let ctx = RenderContext::new(&job, &out, "dlv_1");
        let t = Template::parse("a\r\nBcc: x@evil.test{{delivery_id}}").unwrap();
        assert_eq!(render_header(&t, &ctx, "subject").unwrap(), "a  Bcc: x@evil.testdlv_1");
    }
}
