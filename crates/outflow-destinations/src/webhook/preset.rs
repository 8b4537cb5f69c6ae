//! What the chat presets (`slack`, `discord`) share: reading the incoming-webhook URL and
//! the transport keys, and turning them into a [`WebhookConfig`] whose requests go through
//! the webhook's client, SSRF guard and outcome rules.

use outflow_core::config::FieldReader;
use outflow_core::template::Template;
use reqwest::Method;
use reqwest::header::HeaderValue;

use super::config::{WebhookConfig, validate_parsed};
use crate::{BuildDefaults, common};

/// Statuses a chat service answers that are worth retrying: 408, 425, 429 (rate limited,
/// with `Retry-After`) and every 5xx. Other 4xx (unknown webhook 404, invalid payload 400)
/// are permanent.
pub fn retryable_statuses() -> Vec<u16> {
    [408, 425, 429].into_iter().chain(500..=599).collect()
}

/// Reads `webhook_url` (a secret: never echoed), `timeout_seconds`, `retry_policy`,
/// `allow_private_networks` and `allowed_hosts`. `query` is added to the URL unless it is
/// there already (Discord's `wait=true`). Every problem is recorded in `r`; `None` when
/// `webhook_url` is missing or invalid.
pub(crate) fn read_transport(
    r: &mut FieldReader<'_>,
    defaults: &BuildDefaults,
    example: &str,
    query: Option<(&str, &str)>,
) -> Option<WebhookConfig> {
    let expected = format!("the incoming webhook URL, e.g. {example}");
    let url = match r.secret("webhook_url", false) {
        Some(secret) => match url::Url::parse(secret.expose().trim()) {
            Ok(mut url) => match validate_parsed(&url) {
                Ok(()) => {
                    if let Some((key, value)) = query
                        && !url.query_pairs().any(|(k, _)| k == key)
                    {
                        url.query_pairs_mut().append_pair(key, value);
                    }
                    Some(url)
                }
                Err(msg) => {
                    // validate_parsed never echoes the URL, only its scheme or what is missing.
                    r.error("webhook_url", msg);
                    None
                }
            },
            Err(e) => {
                r.error("webhook_url", format!("is not a valid URL ({e}); expected {expected}"));
                None
            }
        },
        None => {
            if r.raw("webhook_url").is_none() {
                r.error("webhook_url", format!("is required ({expected})"));
            }
            None
        }
    };
    // The URL is literal (a secret, not a template): write any `{{` as text.
    let url = url.and_then(|u| match Template::parse(&u.as_str().replace("{{", "\\{{")) {
        Ok(t) => Some(t),
        Err(_) => {
            r.error("webhook_url", format!("is not a valid URL; expected {expected}"));
            None
        }
    });

    let timeout = common::read_timeout(r, defaults);
    let retry_policy = common::read_retry_policy(r, defaults);
    let network = common::read_network(r, &defaults.network, "hooks.internal");

    Some(WebhookConfig {
        url: url?,
        origin_vars: 0,
        method: Method::POST,
        headers: Vec::new(),
        timeout,
        content_type: HeaderValue::from_static("application/json"),
        format: None,
        retry_policy,
        retry_on_status: Some(retryable_statuses()),
        network,
        auth: None,
        secret_path: true,
    })
}
