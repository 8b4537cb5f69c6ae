//! The Slack destination: a readable message through a Slack incoming webhook, sent with the
//! webhook destination's client, SSRF guard and retry rules.
//!
//! ```yaml
//! type: slack
//! webhook_url: "${SLACK_WEBHOOK_URL}"   # a secret: shown as https://hooks.slack.com/********
//! channel: "#ops"                       # optional overrides (legacy webhooks honour them)
//! username: outflow
//! icon_emoji: ":robot_face:"
//! mention: "@here"                      # @here, @channel, @everyone or <@U123>/<!subteam^S1>
//! mention_on: failure                   # failure (default) or always
//! max_output_chars: 2500                # characters of output in the code block (1 to 2900)
//! link_template: "https://outflow.example.com/jobs/{{job_uuid}}"
//! template: "{{task_name}} finished: {{status}}"   # optional Handlebars: replaces the message
//! timeout_seconds: 10
//! retry_policy: { max_attempts: 5 }
//! ```
//!
//! **Message.** Per Slack's incoming webhooks: a `text` fallback (what notifications show:
//! status emoji, task, status, job) and `blocks` — a header (emoji, task, status; at most
//! 150 characters), a section with status, duration, job and environment fields, the
//! mention when it applies, the output in a code block (at most `max_output_chars`
//! characters after escaping `&`, `<`, `>`; never cut inside a character; a context line
//! says how much was shown when it was cut) and the link. Block texts stay under Slack's
//! 3,000 characters and `text` under 40,000. With `template`, the message is only `text`:
//! the rendered template (its data: every job variable, `output`, and `output_text`, the
//! output cut to `max_output_chars`), cut to 40,000 characters.
//!
//! **Outcome.** Like the webhook: 2xx succeeds; 429 is retryable and Slack's `Retry-After`
//! is honoured; 408, 425 and every 5xx are retryable; other 4xx (404 `no_service`, 400
//! `invalid_payload`, 403, 410 `channel_is_archived`) are permanent. Delivery is
//! at-least-once and Slack cannot deduplicate: a retry after a lost answer posts twice.

use std::sync::Arc;

use outflow_core::config::{ConfigError, DestinationSpec, FieldReader};
use outflow_core::context::RenderContext;
use outflow_core::format::HandlebarsTemplate;
use outflow_core::template::Template;
use serde_json::{Map, Value, json};

use crate::text::{display_output, fit_code, human_ms, is_failure, status_emoji, truncate_chars};
use crate::webhook::preset::read_transport;
use crate::webhook::{BodyRenderer, WebhookDestination};
use crate::{BuildDefaults, DeliveryError, Destination};

/// Slack's limit on a message's `text`.
pub const TEXT_LIMIT: usize = 40_000;
/// Slack's limit on one block's text.
pub const BLOCK_TEXT_LIMIT: usize = 3_000;
/// Slack's limit on a header block's text.
pub const HEADER_LIMIT: usize = 150;
/// Slack's limit on one section field's text.
pub const FIELD_LIMIT: usize = 2_000;
/// The default `max_output_chars`.
pub const DEFAULT_MAX_OUTPUT_CHARS: usize = 2_500;
/// The largest `max_output_chars`: a code block's fences must fit in the 3,000 too.
pub const MAX_OUTPUT_CHARS: usize = 2_900;

/// Parses and validates a `type: slack` body.
pub fn build(
    spec: &DestinationSpec,
    defaults: &BuildDefaults,
    path: &str,
) -> Result<Arc<dyn Destination>, Vec<ConfigError>> {
    let mut r = FieldReader::new(&spec.fields, path);
    let transport =
        read_transport(&mut r, defaults, "https://hooks.slack.com/services/T000/B000/XXXX", None);
    let message = SlackMessage::parse(&mut r);
    let errors = r.finish();
    match (transport, message) {
        (Some(cfg), Some(message)) if errors.is_empty() => {
            let dest = WebhookDestination::preset("slack", cfg, Arc::new(message))
                .map_err(|e| vec![ConfigError::new(path, e)])?;
            Ok(Arc::new(dest))
        }
        _ if errors.is_empty() => Err(vec![ConfigError::new(path, "invalid slack configuration")]),
        _ => Err(errors),
    }
}

/// When the mention is added.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MentionOn {
    Failure,
    Always,
}

/// The message half of a Slack config: builds the payload.
#[derive(Debug, Clone)]
pub struct SlackMessage {
    channel: Option<String>,
    username: Option<String>,
    icon_emoji: Option<String>,
    mention: Option<String>,
    mention_on: MentionOn,
    max_output_chars: usize,
    link: Option<Template>,
    template: Option<HandlebarsTemplate>,
}

impl SlackMessage {
    fn parse(r: &mut FieldReader<'_>) -> Option<SlackMessage> {
        let channel = r.string("channel");
        let username = r.string("username");
        let icon_emoji = r.string("icon_emoji");
        if let Some(icon) = &icon_emoji
            && !(icon.len() > 2 && icon.starts_with(':') && icon.ends_with(':'))
        {
            r.error(
                "icon_emoji",
                format!("'{icon}' is not an emoji code; expected e.g. \":robot_face:\""),
            );
        }
        let mention = r.string("mention").map(|m| slack_mention(&m));
        let mention_on = match r.one_of("mention_on", &["failure", "always"]) {
            Some("always") => MentionOn::Always,
            _ => MentionOn::Failure,
        };
        let max_output_chars =
            match r.optional::<usize>("max_output_chars", "a number of characters") {
                Some(n) if (1..=MAX_OUTPUT_CHARS).contains(&n) => n,
                Some(n) => {
                    r.error(
                        "max_output_chars",
                        format!(
                            "{n} is out of range: 1 to {MAX_OUTPUT_CHARS} (a Slack block holds at \
                         most {BLOCK_TEXT_LIMIT} characters)"
                        ),
                    );
                    DEFAULT_MAX_OUTPUT_CHARS
                }
                None => DEFAULT_MAX_OUTPUT_CHARS,
            };
        let (link, template) = crate::text::read_link_and_template(r);
        Some(SlackMessage {
            channel,
            username,
            icon_emoji,
            mention,
            mention_on,
            max_output_chars,
            link,
            template,
        })
    }

    /// The mention for this job, if any.
    fn mention_for(&self, status: &str) -> Option<&str> {
        match self.mention_on {
            MentionOn::Always => self.mention.as_deref(),
            MentionOn::Failure if is_failure(status) => self.mention.as_deref(),
            MentionOn::Failure => None,
        }
    }

    /// The payload for one delivery.
    pub fn payload(&self, ctx: &RenderContext<'_>) -> Result<Value, DeliveryError> {
        let job = ctx.job;
        let task = job.task_name.as_deref().unwrap_or("Job");
        let emoji = status_emoji(&job.status);
        let mention = self.mention_for(&job.status);
        let link = match &self.link {
            Some(t) => Some(crate::text::render_link(t, ctx)?),
            None => None,
        };
        let output = display_output(ctx.output);

        let mut payload = Map::new();
        if let Some(template) = &self.template {
            let mut data = ctx.to_json();
            if let Value::Object(map) = &mut data {
                let cut = truncate_chars(&output, self.max_output_chars);
                map.insert("output_text".into(), Value::String(cut.to_string()));
            }
            let rendered = template.render_value(&data).map_err(|e| {
                DeliveryError::permanent(format!("cannot render the slack template: {e}"))
            })?;
            let text = match mention {
                Some(m) => format!("{m} {rendered}"),
                None => rendered,
            };
            payload.insert("text".into(), json!(truncate_chars(&text, TEXT_LIMIT)));
        } else {
            let title = format!("{emoji} {task} {}", job.status);
            let fallback = match mention {
                Some(m) => format!("{m} {title} (job {})", job.job_uuid),
                None => format!("{title} (job {})", job.job_uuid),
            };
            payload.insert("text".into(), json!(truncate_chars(&fallback, TEXT_LIMIT)));

            let mut blocks = vec![json!({
                "type": "header",
                "text": {"type": "plain_text", "text": truncate_chars(&title, HEADER_LIMIT), "emoji": true},
            })];
            let job_text = match job.job_id {
                Some(id) => format!("`{}` (id {id})", job.job_uuid),
                None => format!("`{}`", job.job_uuid),
            };
            let fields: Vec<Value> = [
                ("Status", format!("{emoji} {}", escape_text(&job.status))),
                ("Duration", human_ms(job.duration_ms)),
                ("Job", job_text),
                ("Environment", escape_text(&job.environment)),
            ]
            .iter()
            .map(|(name, value)| {
                let text = format!("*{name}*\n{value}");
                json!({"type": "mrkdwn", "text": truncate_chars(&text, FIELD_LIMIT)})
            })
            .collect();
            blocks.push(json!({"type": "section", "fields": fields}));
            if let Some(m) = mention {
                blocks.push(json!({"type": "section", "text": {"type": "mrkdwn", "text": m}}));
            }
            let total = output.chars().count();
            if total > 0 {
                let (code, shown) = fit_code(&output, self.max_output_chars, slack_escape);
                blocks.push(json!({
                    "type": "section",
                    "text": {"type": "mrkdwn", "text": format!("```\n{code}\n```")},
                }));
                if shown < total {
                    blocks.push(json!({
                        "type": "context",
                        "elements": [{"type": "mrkdwn", "text": format!(
                            "Output truncated: {shown} of {total} characters shown."
                        )}],
                    }));
                }
            }
            if let Some(url) = &link {
                blocks.push(json!({
                    "type": "context",
                    "elements": [{"type": "mrkdwn", "text": format!("<{url}|View job {}>", job.job_uuid)}],
                }));
            }
            payload.insert("blocks".into(), Value::Array(blocks));
        }
        if let Some(c) = &self.channel {
            payload.insert("channel".into(), json!(c));
        }
        if let Some(u) = &self.username {
            payload.insert("username".into(), json!(u));
        }
        if let Some(i) = &self.icon_emoji {
            payload.insert("icon_emoji".into(), json!(i));
        }
        Ok(Value::Object(payload))
    }
}

impl BodyRenderer for SlackMessage {
    fn render(&self, ctx: &RenderContext<'_>) -> Result<Vec<u8>, DeliveryError> {
        Ok(serde_json::to_vec(&self.payload(ctx)?).expect("JSON values always serialize"))
    }
}

/// `@here` → `<!here>` (Slack's syntax for special mentions); other text as written.
fn slack_mention(m: &str) -> String {
    match m.trim() {
        "@here" | "here" => "<!here>".into(),
        "@channel" | "channel" => "<!channel>".into(),
        "@everyone" | "everyone" => "<!everyone>".into(),
        other => other.to_string(),
    }
}

/// The characters Slack's mrkdwn wants escaped.
fn slack_escape(c: char) -> Option<&'static str> {
    match c {
        '&' => Some("&amp;"),
        '<' => Some("&lt;"),
        '>' => Some("&gt;"),
        _ => None,
    }
}

fn escape_text(s: &str) -> String {
    s.chars().fold(String::with_capacity(s.len()), |mut out, c| {
        match slack_escape(c) {
            Some(e) => out.push_str(e),
            None => out.push(c),
        }
        out
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::common::test_support::pairs;
    use serde_json::json;

    fn errors(v: Value) -> Vec<(String, String)> {
        let mut v = v;
        v["type"] = json!("slack");
        let spec = DestinationSpec::from_value(&v, "d").unwrap();
        pairs(build(&spec, &BuildDefaults::default(), "d").unwrap_err())
    }

    #[test]
    fn webhook_url_is_required_and_never_echoed() {
        assert_eq!(
            errors(json!({})),
            [(
                "d.webhook_url".to_string(),
                "is required (the incoming webhook URL, e.g. \
                 https://hooks.slack.com/services/T000/B000/XXXX)"
                    .to_string()
            )]
        );
        let errs = errors(json!({"webhook_url": "hooks.slack.com/services/SECRET"}));
        assert_eq!(errs[0].0, "d.webhook_url");
        assert!(!errs[0].1.contains("SECRET"), "{}", errs[0].1);
        let errs = errors(json!({"webhook_url": "ftp://h/SECRET"}));
        assert!(
            errs[0].1.contains("scheme 'ftp' is not supported") && !errs[0].1.contains("SECRET")
        );
    }

    #[test]
    fn every_bad_option_is_reported() {
        let errs = errors(json!({
            "webhook_url": "https://hooks.slack.com/services/x", "icon_emoji": "robot",
            "mention_on": "sometimes", "max_output_chars": 5000, "link_template": "{{x",
            "template": "{{#each}}", "timeout_seconds": 0, "colour": "red",
        }));
        let paths: Vec<&str> = errs.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(
            paths,
            [
                "d.timeout_seconds",
                "d.icon_emoji",
                "d.mention_on",
                "d.max_output_chars",
                "d.link_template",
                "d.template",
                "d.colour"
            ],
            "{errs:?}"
        );
        assert_eq!(
            errs[3].1,
            "5000 is out of range: 1 to 2900 (a Slack block holds at most 3000 characters)"
        );
    }

    #[test]
    fn mentions_use_slack_syntax() {
        assert_eq!(slack_mention("@here"), "<!here>");
        assert_eq!(slack_mention("<@U123>"), "<@U123>");
    }
}
