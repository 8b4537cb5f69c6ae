//! The Slack destination against a real HTTP receiver on 127.0.0.1 standing in for Slack's
//! incoming-webhook endpoint: the exact payload, Slack's limits, mentions, templates, and the
//! outcome rules (429 + Retry-After, 404/400 permanent, 5xx and outages retryable).
//!
//! The shared conformance macro does not fit a chat preset (the output is shown truncated by
//! design, so case 5's byte-exact 5 MiB cannot hold, and there is no name to template);
//! the cases that apply are here as dedicated tests: one message arrives (1), a redelivery
//! arrives again with the same `webhook-id` (2), an outage is retryable and recovers (3),
//! 404 is permanent and dead-lettered (4), a large multi-byte output is cut within the
//! limits (5), templates render from the job (6), config errors name their path (7).

mod conformance;
#[path = "common/receiver.rs"]
mod receiver;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeZone, Utc};
use conformance::proxy::TcpProxy;
use outflow_core::attempt::FailureClass;
use outflow_core::config::DestinationSpec;
use outflow_core::context::{JobContext, Priority};
use outflow_core::output::Output;
use outflow_destinations::runner::{NamedDestination, deliver_all, new_delivery_id};
use outflow_destinations::{Destination, Registry};
use receiver::{Receiver, Reply};
use serde_json::{Value, json};

fn build(mut v: Value) -> Arc<dyn Destination> {
    v["type"] = json!("slack");
    conformance::build(&v)
}

fn job(status: &str) -> JobContext {
    JobContext {
        job_uuid: "0190b6f2-7c5e-7a3b-8c1d-2e3f4a5b6c7d".parse().unwrap(),
        job_id: Some(42),
        task_name: Some("report".into()),
        task_version: None,
        task_id: None,
        execution_id: None,
        priority: Priority::Normal,
        schedule_id: None,
        environment: "staging".into(),
        completed_at: Utc.with_ymd_and_hms(2025, 1, 5, 3, 4, 9).unwrap(),
        duration_ms: 1234,
        status: status.into(),
        metadata: json!({"owner": "ops"}).as_object().unwrap().clone(),
        vars: BTreeMap::new(),
    }
}

fn body(rx: &Receiver, i: usize) -> Value {
    serde_json::from_slice(&rx.requests()[i].body).expect("the body is JSON")
}

fn hook(rx: &Receiver) -> String {
    rx.url("/services/T000/B000/SECRETTOKEN")
}

#[tokio::test]
async fn the_default_message_has_slacks_payload_shape() {
    let rx = Receiver::start(vec![Reply::status(200, "ok")]).await;
    let dest = build(json!({
        "webhook_url": hook(&rx), "allow_private_networks": true,
        "channel": "#ops", "username": "outflow", "icon_emoji": ":robot_face:",
        "mention": "@here", "link_template": "https://outflow.example.com/jobs/{{job_uuid}}",
    }));
    let id = new_delivery_id();
    let output = Output::Json(json!({"rows": 3, "note": "a<b & c>d"}));
    let receipt = conformance::deliver(dest.as_ref(), &job("completed"), &output, &id)
        .await
        .expect("delivered");
    assert_eq!(receipt.status_code, Some(200));
    assert_eq!(receipt.target, format!("http://{}/********", rx.addr), "the URL is a secret");
    assert_eq!(dest.kind(), "slack");
    assert_eq!(dest.describe(), format!("http://{}/********", rx.addr));
    assert!(!format!("{dest:?}").contains("SECRETTOKEN"));
    let key = dest.isolation_key();
    assert!(key.starts_with(&format!("slack:http://{}/********#", rx.addr)), "{key}");
    let other = build(json!({"webhook_url": rx.url("/services/T000/B000/OTHER")}));
    assert_ne!(other.isolation_key(), key, "each webhook is isolated from the others");

    let req = &rx.requests()[0];
    assert_eq!(req.method, "POST");
    assert_eq!(req.path, "/services/T000/B000/SECRETTOKEN");
    assert_eq!(req.header("content-type"), Some("application/json"));
    assert_eq!(req.header("webhook-id"), Some(id.as_str()));
    let uuid = "0190b6f2-7c5e-7a3b-8c1d-2e3f4a5b6c7d";
    let code = "```\n{\n  \"rows\": 3,\n  \"note\": \"a&lt;b &amp; c&gt;d\"\n}\n```";
    assert_eq!(
        body(&rx, 0),
        json!({
            "text": format!("✅ report completed (job {uuid})"),
            "blocks": [
                {"type": "header", "text": {"type": "plain_text", "text": "✅ report completed", "emoji": true}},
                {"type": "section", "fields": [
                    {"type": "mrkdwn", "text": "*Status*\n✅ completed"},
                    {"type": "mrkdwn", "text": "*Duration*\n1.2 s"},
                    {"type": "mrkdwn", "text": format!("*Job*\n`{uuid}` (id 42)")},
                    {"type": "mrkdwn", "text": "*Environment*\nstaging"},
                ]},
                {"type": "section", "text": {"type": "mrkdwn", "text": code}},
                {"type": "context", "elements": [{"type": "mrkdwn",
                    "text": format!("<https://outflow.example.com/jobs/{uuid}|View job {uuid}>")}]},
            ],
            "channel": "#ops",
            "username": "outflow",
            "icon_emoji": ":robot_face:",
        })
    );
}

#[tokio::test]
async fn a_failure_mentions_and_a_success_does_not() {
    let rx = Receiver::start(Vec::new()).await;
    let dest = build(json!({"webhook_url": hook(&rx), "allow_private_networks": true,
        "mention": "@channel"}));
    let output = Output::Text("boom".into());
    conformance::deliver(dest.as_ref(), &job("failed"), &output, &new_delivery_id()).await.unwrap();
    conformance::deliver(dest.as_ref(), &job("completed"), &output, &new_delivery_id())
        .await
        .unwrap();
    let failed = body(&rx, 0);
    assert!(failed["text"].as_str().unwrap().starts_with("<!channel> ❌ report failed"));
    assert_eq!(failed["blocks"][0]["text"]["text"], "❌ report failed");
    assert_eq!(
        failed["blocks"][2],
        json!({"type": "section", "text": {"type": "mrkdwn", "text": "<!channel>"}})
    );
    let ok = body(&rx, 1);
    assert!(!ok.to_string().contains("<!channel>"), "{ok}");
}

#[tokio::test]
async fn long_multibyte_output_is_cut_within_slacks_limits() {
    let rx = Receiver::start(Vec::new()).await;
    let dest = build(json!({"webhook_url": hook(&rx), "allow_private_networks": true}));
    let mut long_job = job("completed");
    long_job.task_name = Some("é".repeat(200));
    // 5,000 characters, multi-byte, with characters Slack needs escaped.
    let text: String = "日本語<テ>キスト&".chars().cycle().take(5_000).collect();
    conformance::deliver(dest.as_ref(), &long_job, &Output::Text(text.clone()), &new_delivery_id())
        .await
        .expect("delivered");
    let payload = body(&rx, 0);
    let blocks = payload["blocks"].as_array().unwrap();
    let header = blocks[0]["text"]["text"].as_str().unwrap();
    assert_eq!(header.chars().count(), 150, "a header holds at most 150 characters");
    let code = blocks[2]["text"]["text"].as_str().unwrap();
    assert!(code.chars().count() <= 3_000, "a block holds at most 3,000 characters");
    let inner = code.strip_prefix("```\n").and_then(|c| c.strip_suffix("\n```")).unwrap();
    assert!(inner.chars().count() <= 2_500, "max_output_chars defaults to 2,500");
    let unescaped = inner.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&");
    assert!(text.starts_with(&unescaped), "the shown output is a prefix of the output");
    let shown = unescaped.chars().count();
    // As much as fits: the next character (escaped) would go past the 2,500.
    let next = match text.chars().nth(shown).unwrap() {
        '<' | '>' => 4,
        '&' => 5,
        _ => 1,
    };
    assert!(inner.chars().count() + next > 2_500, "stopped early at {shown} characters");
    assert_eq!(
        blocks[3],
        json!({"type": "context", "elements": [{"type": "mrkdwn",
            "text": format!("Output truncated: {shown} of 5000 characters shown.")}]})
    );
    assert!(payload["text"].as_str().unwrap().chars().count() <= 40_000);
}

#[tokio::test]
async fn a_template_replaces_the_message_and_is_cut_at_40000_characters() {
    let rx = Receiver::start(Vec::new()).await;
    let dest = build(json!({"webhook_url": hook(&rx), "allow_private_networks": true,
        "template": "{{task_name}} ({{meta.owner}}) {{status}}: {{output_text}}",
        "max_output_chars": 5}));
    conformance::deliver(
        dest.as_ref(),
        &job("completed"),
        &Output::Text("ünïcode output".into()),
        &new_delivery_id(),
    )
    .await
    .unwrap();
    assert_eq!(body(&rx, 0), json!({"text": "report (ops) completed: ünïco"}));

    let big = build(json!({"webhook_url": hook(&rx), "allow_private_networks": true,
        "template": "{{output}}"}));
    let text: String = "ü".repeat(50_000);
    conformance::deliver(big.as_ref(), &job("completed"), &Output::Text(text), &new_delivery_id())
        .await
        .unwrap();
    assert_eq!(body(&rx, 1)["text"].as_str().unwrap(), "ü".repeat(40_000));
}

#[tokio::test]
async fn rate_limits_honour_retry_after_and_redelivery_repeats_the_id() {
    let rx =
        Receiver::start(vec![Reply::status(429, "rate_limited").header("Retry-After", "1")]).await;
    let dest = build(json!({"webhook_url": hook(&rx), "allow_private_networks": true,
        "retry_policy": {"max_attempts": 3, "initial_delay_ms": 10, "backoff_multiplier": 2.0,
            "max_delay_ms": 5000, "jitter": 0.0}}));
    let named = [NamedDestination { name: "slack".into(), destination: dest }];
    let report = &deliver_all(&named, &job("completed"), &Output::Text("x".into()), 4).await[0];
    assert!(report.success, "{report:?}");
    assert_eq!(report.attempts[0].status_code, Some(429));
    assert_eq!(report.attempts[0].next_retry_in, Some(Duration::from_secs(1)));
    let reqs = rx.requests();
    assert_eq!(reqs.len(), 2);
    assert!(reqs[1].at - reqs[0].at >= Duration::from_millis(950));
    assert_eq!(reqs[0].header("webhook-id"), reqs[1].header("webhook-id"), "no dedupe: same id");
}

#[tokio::test]
async fn client_errors_are_permanent_and_server_errors_retryable() {
    for (status, body_text, class) in [
        (404, "no_service", FailureClass::Permanent),
        (400, "invalid_payload", FailureClass::Permanent),
        (410, "channel_is_archived", FailureClass::Permanent),
        (500, "oops", FailureClass::Retryable),
        (501, "not implemented", FailureClass::Retryable),
    ] {
        let rx = Receiver::start(vec![Reply::status(status, body_text)]).await;
        let dest = build(json!({"webhook_url": hook(&rx), "allow_private_networks": true}));
        let err = conformance::deliver(
            dest.as_ref(),
            &job("completed"),
            &Output::Text("x".into()),
            &new_delivery_id(),
        )
        .await
        .expect_err("fails");
        assert_eq!(err.class, class, "{status}: {err:?}");
        assert_eq!(err.status_code, Some(status));
        assert_eq!(err.response_excerpt.as_deref(), Some(body_text));
        assert!(err.message.starts_with(&format!("HTTP {status}")), "{}", err.message);
        assert!(!err.message.contains("SECRETTOKEN"), "{}", err.message);
    }
}

#[tokio::test]
async fn a_404_is_dead_lettered_after_one_attempt() {
    let rx = Receiver::start(vec![Reply::status(404, "no_service"); 3]).await;
    let dest = build(json!({"webhook_url": hook(&rx), "allow_private_networks": true}));
    let named = [NamedDestination { name: "slack".into(), destination: dest }];
    let report = &deliver_all(&named, &job("completed"), &Output::Text("x".into()), 4).await[0];
    assert!(!report.success);
    assert_eq!(report.attempts.len(), 1);
    assert_eq!(report.attempts[0].failure_class, Some(FailureClass::Permanent));
}

#[tokio::test]
async fn an_outage_is_retryable_and_the_retry_succeeds() {
    let rx = Receiver::start(Vec::new()).await;
    let proxy = TcpProxy::start(rx.addr).await;
    let dest = build(json!({"webhook_url": format!("http://{}/services/T/B/S", proxy.addr()),
        "allow_private_networks": true, "timeout_seconds": 5}));
    let job = job("completed");
    let out = Output::Text("x".into());
    conformance::deliver(dest.as_ref(), &job, &out, &new_delivery_id()).await.expect("first");
    proxy.unplug();
    let id = new_delivery_id();
    let err = conformance::deliver(dest.as_ref(), &job, &out, &id).await.expect_err("down");
    assert_eq!(err.class, FailureClass::Retryable, "{err:?}");
    assert!(dest.check().await.is_err(), "the check fails while the receiver is down");
    proxy.plug().await;
    let mut ok = false;
    for _ in 0..20 {
        if conformance::deliver(dest.as_ref(), &job, &out, &id).await.is_ok() {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ok, "no success after the receiver came back");
    assert_eq!(rx.requests().last().unwrap().header("webhook-id"), Some(id.as_str()));
}

#[tokio::test]
async fn the_ssrf_guard_applies_to_presets() {
    let rx = Receiver::start(Vec::new()).await;
    let spec =
        DestinationSpec::from_value(&json!({"type": "slack", "webhook_url": hook(&rx)}), "d")
            .unwrap();
    let dest = Registry::default().build(&spec, "d").unwrap();
    let err = conformance::deliver(
        dest.as_ref(),
        &job("completed"),
        &Output::Text("x".into()),
        &new_delivery_id(),
    )
    .await
    .expect_err("loopback is private");
    assert_eq!(err.class, FailureClass::Permanent);
    assert!(err.message.contains("blocked by the SSRF guard"), "{}", err.message);
    assert!(rx.requests().is_empty());
}

#[test]
fn config_errors_name_their_paths_without_echoing_the_url() {
    let spec = DestinationSpec::from_value(
        &json!({"type": "slack", "webhook_url": "not a url SECRET", "max_output_chars": 0,
            "mention_on": "never", "chanel": "#x"}),
        "destinations[0]",
    )
    .unwrap();
    let errs = Registry::default().build(&spec, "destinations[0]").unwrap_err();
    let got: Vec<(&str, &str)> =
        errs.iter().map(|e| (e.path.as_str(), e.message.as_str())).collect();
    assert_eq!(got[0].0, "destinations[0].webhook_url");
    assert!(
        got[0].1.starts_with("is not a valid URL (relative URL without a base)"),
        "{}",
        got[0].1
    );
    assert!(!got[0].1.contains("SECRET"));
    assert_eq!(
        got[1],
        ("destinations[0].mention_on", "must be one of failure, always, got 'never'")
    );
    assert_eq!(got[2].0, "destinations[0].max_output_chars");
    assert_eq!(got[3].0, "destinations[0].chanel");
    assert!(got[3].1.contains("did you mean 'channel'"), "{}", got[3].1);
    let missing = DestinationSpec::from_value(&json!({"type": "slack"}), "d").unwrap();
    let errs = Registry::default().build(&missing, "d").unwrap_err();
    assert_eq!(errs.len(), 1);
    assert_eq!(errs[0].path, "d.webhook_url");
}
