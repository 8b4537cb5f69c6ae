//! The Discord destination: a message with an embed through a Discord webhook, sent with the
//! webhook destination's client, SSRF guard and retry rules.
//!
//! ```yaml
//! type: discord
//! webhook_url: "${DISCORD_WEBHOOK_URL}"  # a secret: shown as https://discord.com/********
//! username: outflow                      # optional overrides of the webhook's name/avatar
//! avatar_url: "https://example.com/outflow.png"
//! mention: "@here"                       # @here, @everyone, <@USER_ID> or <@&ROLE_ID>
//! mention_on: failure                    # failure (default) or always
//! max_output_chars: 3500                 # characters of output in the embed (1 to 4000)
//! link_template: "https://outflow.example.com/jobs/{{job_uuid}}"   # the embed's title link
//! template: "{{task_name}} finished: {{status}}"   # optional Handlebars: the message content
//! timeout_seconds: 10
//! retry_policy: { max_attempts: 5 }
//! ```
//!
//! **Message.** Per Discord's Execute Webhook: `content` (the mention and, with `template`,
//! the rendered template; at most 2,000 characters) and one embed — title (status emoji,
//! task, status; at most 256 characters) linking to `link_template`, description (the output
//! in a code block, at most `max_output_chars` characters, never cut inside a character,
//! at most 4,096), fields (status, duration, job, environment), a colour by status (green
//! completed, red failed, grey otherwise), the completion timestamp and a footer saying when
//! the output was cut; the whole embed stays under Discord's 6,000 characters.
//! `allowed_mentions` lets only the configured mention ping: a job's output or a template
//! value cannot ping `@everyone`. The URL gets `?wait=true`, so Discord answers with the
//! created message (kept in the attempt's response excerpt) instead of an empty 204.
//!
//! **Outcome.** Like the webhook: 2xx succeeds; 429 is retryable and Discord's `Retry-After`
//! is honoured; 408, 425 and every 5xx are retryable; other 4xx (404 unknown webhook, 400
//! invalid form body, 401) are permanent. Delivery is at-least-once and Discord cannot
//! deduplicate: a retry after a lost answer posts twice.

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

/// Discord's limit on `content`.
pub const CONTENT_LIMIT: usize = 2_000;
/// Discord's limit on an embed title.
pub const TITLE_LIMIT: usize = 256;
/// Discord's limit on an embed description.
pub const DESCRIPTION_LIMIT: usize = 4_096;
/// Discord's limit on an embed field value.
pub const FIELD_VALUE_LIMIT: usize = 1_024;
/// Discord's limit on all of an embed's text together.
pub const EMBED_TOTAL_LIMIT: usize = 6_000;
/// The default `max_output_chars`.
pub const DEFAULT_MAX_OUTPUT_CHARS: usize = 3_500;
/// The largest `max_output_chars`: the code fences must fit in the description too.
pub const MAX_OUTPUT_CHARS: usize = 4_000;

/// Embed colours by status.
const GREEN: u32 = 0x2E_CC_71;
const RED: u32 = 0xE7_4C_3C;
const GREY: u32 = 0x95_A5_A6;

/// Parses and validates a `type: discord` body.
pub fn build(
    spec: &DestinationSpec,
    defaults: &BuildDefaults,
    path: &str,
) -> Result<Arc<dyn Destination>, Vec<ConfigError>> {
    let mut r = FieldReader::new(&spec.fields, path);
    let transport = read_transport(
        &mut r,
        defaults,
        "https://discord.com/api/webhooks/123/abc",
        Some(("wait", "true")),
    );
    let message = DiscordMessage::parse(&mut r);
    let errors = r.finish();
    match (transport, message) {
        (Some(cfg), Some(message)) if errors.is_empty() => {
            let dest = WebhookDestination::preset("discord", cfg, Arc::new(message))
                .map_err(|e| vec![ConfigError::new(path, e)])?;
            Ok(Arc::new(dest))
        }
        _ if errors.is_empty() => {
            Err(vec![ConfigError::new(path, "invalid discord configuration")])
        }
        _ => Err(errors),
    }
}

/// The message half of a Discord config: builds the payload.
#[derive(Debug, Clone)]
pub struct DiscordMessage {
    username: Option<String>,
    avatar_url: Option<String>,
    mention: Option<String>,
    mention_always: bool,
    max_output_chars: usize,
    link: Option<Template>,
    template: Option<HandlebarsTemplate>,
}

impl DiscordMessage {
    fn parse(r: &mut FieldReader<'_>) -> Option<DiscordMessage> {
        let username = r.string("username");
        if let Some(u) = &username
            && (u.trim().is_empty() || u.chars().count() > 80)
        {
            r.error("username", "must be 1 to 80 characters (Discord's limit)");
        }
        let avatar_url = r.string("avatar_url");
        if let Some(a) = &avatar_url
            && !url::Url::parse(a).is_ok_and(|u| matches!(u.scheme(), "http" | "https"))
        {
            r.error("avatar_url", format!("'{a}' is not an http(s) URL"));
        }
        let mention = r.string("mention");
        let mention_always = r.one_of("mention_on", &["failure", "always"]) == Some("always");
        let max_output_chars =
            match r.optional::<usize>("max_output_chars", "a number of characters") {
                Some(n) if (1..=MAX_OUTPUT_CHARS).contains(&n) => n,
                Some(n) => {
                    r.error(
                        "max_output_chars",
                        format!(
                            "{n} is out of range: 1 to {MAX_OUTPUT_CHARS} (an embed description \
                             holds at most {DESCRIPTION_LIMIT} characters)"
                        ),
                    );
                    DEFAULT_MAX_OUTPUT_CHARS
                }
                None => DEFAULT_MAX_OUTPUT_CHARS,
            };
        let (link, template) = crate::text::read_link_and_template(r);
        Some(DiscordMessage {
            username,
            avatar_url,
            mention,
            mention_always,
            max_output_chars,
            link,
            template,
        })
    }

    /// The payload for one delivery.
    pub fn payload(&self, ctx: &RenderContext<'_>) -> Result<Value, DeliveryError> {
        let job = ctx.job;
        let task = job.task_name.as_deref().unwrap_or("Job");
        let emoji = status_emoji(&job.status);
        let failed = is_failure(&job.status);
        let mention = self.mention.as_deref().filter(|_| self.mention_always || failed);
        let output = display_output(ctx.output);

        let mut content = mention.map(str::to_string).unwrap_or_default();
        if let Some(template) = &self.template {
            let mut data = ctx.to_json();
            if let Value::Object(map) = &mut data {
                let cut = truncate_chars(&output, self.max_output_chars);
                map.insert("output_text".into(), Value::String(cut.to_string()));
            }
            let rendered = template.render_value(&data).map_err(|e| {
                DeliveryError::permanent(format!("cannot render the discord template: {e}"))
            })?;
            if !content.is_empty() {
                content.push(' ');
            }
            content.push_str(&rendered);
        }

        let title =
            truncate_chars(&format!("{emoji} {task} {}", job.status), TITLE_LIMIT).to_string();
        let job_text = match job.job_id {
            Some(id) => format!("`{}` (id {id})", job.job_uuid),
            None => format!("`{}`", job.job_uuid),
        };
        let fields: Vec<(&str, String, bool)> = vec![
            ("Status", job.status.clone(), true),
            ("Duration", human_ms(job.duration_ms), true),
            ("Environment", job.environment.clone(), true),
            ("Job", job_text, false),
        ];
        let fields: Vec<(&str, String, bool)> = fields
            .into_iter()
            .map(|(n, v, inline)| (n, truncate_chars(&v, FIELD_VALUE_LIMIT).to_string(), inline))
            .collect();
        let fixed: usize = title.chars().count()
            + fields.iter().map(|(n, v, _)| n.chars().count() + v.chars().count()).sum::<usize>();
        // The footer is at most this long; the description gets what is left of the 6,000.
        let footer_room = 120;
        let fence = "```\n\n```".len();
        let budget = self
            .max_output_chars
            .min(DESCRIPTION_LIMIT - fence)
            .min(EMBED_TOTAL_LIMIT.saturating_sub(fixed + footer_room + fence));

        let mut embed = Map::new();
        embed.insert("title".into(), json!(title));
        if let Some(t) = &self.link {
            embed.insert("url".into(), json!(crate::text::render_link(t, ctx)?));
        }
        let total = output.chars().count();
        let mut footer = None;
        if total > 0 {
            let (code, shown) = fit_code(&output, budget, |_| None);
            embed.insert("description".into(), json!(format!("```\n{code}\n```")));
            if shown < total {
                footer = Some(format!("Output truncated: {shown} of {total} characters shown."));
            }
        }
        embed.insert(
            "color".into(),
            json!(if failed {
                RED
            } else if job.status.eq_ignore_ascii_case("completed") {
                GREEN
            } else {
                GREY
            }),
        );
        embed.insert(
            "timestamp".into(),
            json!(job.completed_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
        );
        embed.insert(
            "fields".into(),
            Value::Array(
                fields
                    .iter()
                    .map(|(n, v, inline)| json!({"name": n, "value": v, "inline": inline}))
                    .collect(),
            ),
        );
        if let Some(f) = footer {
            embed.insert("footer".into(), json!({"text": f}));
        }

        let mut payload = Map::new();
        if !content.is_empty() {
            payload.insert("content".into(), json!(truncate_chars(&content, CONTENT_LIMIT)));
        }
        if let Some(u) = &self.username {
            payload.insert("username".into(), json!(u));
        }
        if let Some(a) = &self.avatar_url {
            payload.insert("avatar_url".into(), json!(a));
        }
        payload.insert("embeds".into(), json!([Value::Object(embed)]));
        payload.insert("allowed_mentions".into(), allowed_mentions(mention));
        Ok(Value::Object(payload))
    }
}

impl BodyRenderer for DiscordMessage {
    fn render(&self, ctx: &RenderContext<'_>) -> Result<Vec<u8>, DeliveryError> {
        Ok(serde_json::to_vec(&self.payload(ctx)?).expect("JSON values always serialize"))
    }
}

/// Only the configured mention may ping: `@here`/`@everyone` → `everyone`, `<@id>` → that
/// user, `<@&id>` → that role; nothing else in the content pings.
fn allowed_mentions(mention: Option<&str>) -> Value {
    let Some(m) = mention.map(str::trim) else { return json!({"parse": []}) };
    if m == "@here" || m == "@everyone" {
        return json!({"parse": ["everyone"]});
    }
    if let Some(id) = m.strip_prefix("<@&").and_then(|r| r.strip_suffix('>')) {
        return json!({"parse": [], "roles": [id]});
    }
    if let Some(id) =
        m.strip_prefix("<@").and_then(|r| r.strip_suffix('>')).map(|id| id.trim_start_matches('!'))
    {
        return json!({"parse": [], "users": [id]});
    }
    json!({"parse": []})
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::common::test_support::pairs;
    use serde_json::json;

    fn errors(v: Value) -> Vec<(String, String)> {
        let mut v = v;
        v["type"] = json!("discord");
        let spec = DestinationSpec::from_value(&v, "d").unwrap();
        pairs(build(&spec, &BuildDefaults::default(), "d").unwrap_err())
    }

    #[test]
    fn bad_options_are_each_reported() {
        let errs = errors(json!({
            "username": "", "avatar_url": "nope", "max_output_chars": 0,
            "template": "{{/x}}", "embed": {},
        }));
        let paths: Vec<&str> = errs.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(
            paths,
            [
                "d.webhook_url",
                "d.username",
                "d.avatar_url",
                "d.max_output_chars",
                "d.template",
                "d.embed"
            ],
            "{errs:?}"
        );
        assert!(errs[0].1.starts_with("is required (the incoming webhook URL"));
        assert_eq!(errs[2].1, "'nope' is not an http(s) URL");
    }

    #[test]
    fn only_the_configured_mention_pings() {
        assert_eq!(allowed_mentions(None), json!({"parse": []}));
        assert_eq!(allowed_mentions(Some("@here")), json!({"parse": ["everyone"]}));
        assert_eq!(allowed_mentions(Some("<@&42>")), json!({"parse": [], "roles": ["42"]}));
        assert_eq!(allowed_mentions(Some("<@!7>")), json!({"parse": [], "users": ["7"]}));
    }
}
