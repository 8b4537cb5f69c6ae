//! The webhook destination against a real HTTP server on 127.0.0.1.

#[path = "common/receiver.rs"]
mod receiver;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use chrono::{TimeZone, Utc};
use hmac::{Hmac, Mac};
use outflow_core::attempt::FailureClass;
use outflow_core::config::{ConfigError, DestinationSpec};
use outflow_core::context::{JobContext, Priority, RenderContext};
use outflow_core::netpolicy::NetworkPolicy;
use outflow_core::output::Output;
use outflow_destinations::runner::{NamedDestination, deliver_all};
use outflow_destinations::{
    Attempt, BuildDefaults, DeliveryError, DeliveryReceipt, Destination, Registry,
};
use receiver::{Receiver, Reply};
use serde_json::{Value, json};
use sha2::Sha256;

const URL_EXPECTED: &str = "an absolute http:// or https:// URL, e.g. https://example.com/hook";
const FAST_RETRIES: &str = "fast";

fn spec(mut v: Value) -> DestinationSpec {
    v["type"] = json!("webhook");
    if v.get("retry_policy").and_then(Value::as_str) == Some(FAST_RETRIES) {
        v["retry_policy"] = json!({"max_attempts": 3, "initial_delay_ms": 10,
            "max_delay_ms": 5000, "backoff_multiplier": 2.0, "jitter": 0.0});
    }
    DestinationSpec::from_value(&v, "d").unwrap()
}

fn build(v: Value) -> Arc<dyn Destination> {
    Registry::default().build(&spec(v), "d").unwrap()
}

fn build_err(v: Value) -> Vec<ConfigError> {
    Registry::default().build(&spec(v), "d").unwrap_err()
}

fn job() -> JobContext {
    JobContext {
        job_uuid: "0190b6f2-7c5e-7a3b-8c1d-2e3f4a5b6c7d".parse().unwrap(),
        job_id: Some(42),
        task_name: Some("report".into()),
        task_version: Some("1.2.0".into()),
        task_id: Some(7),
        execution_id: None,
        priority: Priority::High,
        schedule_id: None,
        environment: "staging".into(),
        completed_at: Utc.with_ymd_and_hms(2025, 1, 5, 3, 4, 9).unwrap(),
        duration_ms: 1234,
        status: "completed".into(),
        metadata: json!({"owner": "ops"}).as_object().unwrap().clone(),
        vars: BTreeMap::new(),
    }
}

fn output() -> Output {
    Output::Json(json!({"rows": 3, "ok": true}))
}

async fn deliver_once(
    dest: &Arc<dyn Destination>,
    job: &JobContext,
    id: &str,
) -> Result<DeliveryReceipt, DeliveryError> {
    let out = output();
    dest.deliver(Attempt { render: RenderContext::new(job, &out, id), number: 1 }).await
}

/// HMAC-SHA256 Standard Webhooks signature, computed here without outflow's code.
fn independent_signature(key: &[u8], id: &str, timestamp: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body);
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

#[tokio::test]
async fn default_post_sends_envelope_and_standard_headers() {
    let rx = Receiver::start(vec![Reply::status(200, "accepted")]).await;
    let dest = build(json!({"url": rx.url("/hook"), "allow_private_networks": true}));
    let receipt = deliver_once(&dest, &job(), "dlv_abc").await.unwrap();

    let expected_body = concat!(
        r#"{"delivery_id":"dlv_abc","job_uuid":"0190b6f2-7c5e-7a3b-8c1d-2e3f4a5b6c7d","#,
        r#""job_id":42,"task_name":"report","task_version":"1.2.0","status":"completed","#,
        r#""priority":"high","environment":"staging","timestamp":"2025-01-05T03:04:09Z","#,
        r#""duration_ms":1234,"metadata":{"owner":"ops"},"output":{"rows":3,"ok":true}}"#
    );
    let reqs = rx.requests();
    assert_eq!(reqs.len(), 1);
    let r = &reqs[0];
    assert_eq!(r.method, "POST");
    assert_eq!(r.path, "/hook");
    assert_eq!(std::str::from_utf8(&r.body).unwrap(), expected_body);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.header("user-agent"), Some(concat!("outflow/", env!("CARGO_PKG_VERSION"))));
    assert_eq!(r.header("webhook-id"), Some("dlv_abc"));
    assert_eq!(r.header("authorization"), None);
    assert_eq!(r.header("webhook-signature"), None);
    assert_eq!(
        receipt,
        DeliveryReceipt {
            target: rx.url("/hook"),
            status_code: Some(200),
            bytes: expected_body.len() as u64,
            response_excerpt: Some("accepted".into()),
        }
    );
}

#[tokio::test]
async fn bearer_basic_and_api_key_headers() {
    let rx = Receiver::start(vec![]).await;
    let common = |auth: Value| {
        build(json!({"url": rx.url("/a"), "allow_private_networks": true, "auth": auth}))
    };
    let bearer = common(json!({"type": "bearer", "token": "tok-123"}));
    let basic = common(json!({"type": "basic", "username": "user", "password": "p@ss:w0rd"}));
    let api_key = common(json!({"type": "api_key", "header": "X-API-Key", "value": "k-9"}));
    for dest in [&bearer, &basic, &api_key] {
        deliver_once(dest, &job(), "dlv_1").await.unwrap();
    }
    let reqs = rx.requests();
    assert_eq!(reqs[0].header("authorization"), Some("Bearer tok-123"));
    assert_eq!(
        reqs[1].header("authorization"),
        Some(format!("Basic {}", STANDARD.encode("user:p@ss:w0rd")).as_str())
    );
    assert_eq!(reqs[2].header("x-api-key"), Some("k-9"));
    assert_eq!(reqs[2].header("authorization"), None);
}

#[tokio::test]
async fn signature_verifies_independently_with_raw_and_whsec_secrets() {
    let key = b"0123456789abcdef0123456789abcdef";
    let whsec = format!("whsec_{}", STANDARD.encode(key));
    let rx = Receiver::start(vec![]).await;
    for secret in ["plain-secret", whsec.as_str()] {
        let dest = build(json!({
            "url": rx.url("/signed"), "allow_private_networks": true,
            "auth": {"type": "signature", "secret": secret, "algorithm": "sha256"}
        }));
        deliver_once(&dest, &job(), "msg_2Lz").await.unwrap();
    }
    let reqs = rx.requests();
    let now = Utc::now().timestamp();
    for (r, key) in reqs.iter().zip([b"plain-secret".as_slice(), key.as_slice()]) {
        let ts = r.header("webhook-timestamp").unwrap();
        assert!((ts.parse::<i64>().unwrap() - now).abs() <= 5, "timestamp {ts} vs now {now}");
        assert_eq!(r.header("webhook-id"), Some("msg_2Lz"));
        assert_eq!(
            r.header("webhook-signature").unwrap(),
            independent_signature(key, "msg_2Lz", ts, &r.body)
        );
    }
}

#[tokio::test]
async fn server_error_then_success_is_retried_with_the_same_webhook_id() {
    let rx = Receiver::start(vec![Reply::status(500, "boom")]).await;
    let dest = build(json!({
        "url": rx.url("/r"), "allow_private_networks": true, "retry_policy": FAST_RETRIES,
        "auth": {"type": "signature", "secret": "s"}
    }));
    let named = [NamedDestination { name: "hook".into(), destination: dest }];
    let reports = deliver_all(&named, &job(), &output(), 4).await;
    let report = &reports[0];
    assert!(report.success, "{report:?}");
    assert_eq!(report.attempts.len(), 2);
    let first = &report.attempts[0];
    assert_eq!(first.status_code, Some(500));
    assert_eq!(first.failure_class, Some(FailureClass::Retryable));
    assert_eq!(
        first.error.as_deref(),
        Some(format!("HTTP 500 Internal Server Error from {}", rx.url("/r")).as_str())
    );
    assert_eq!(first.response_excerpt.as_deref(), Some("boom"));
    assert_eq!(first.next_retry_in, Some(Duration::from_millis(10)));
    assert_eq!(report.attempts[1].status_code, Some(200));

    let reqs = rx.requests();
    assert_eq!(reqs.len(), 2);
    let ids: Vec<_> = reqs.iter().map(|r| r.header("webhook-id").unwrap()).collect();
    assert_eq!(ids, [report.delivery_id.as_str(), report.delivery_id.as_str()]);
    assert_eq!(reqs[0].body, reqs[1].body);
}

#[tokio::test]
async fn client_error_is_permanent_and_not_retried() {
    let rx = Receiver::start(vec![Reply::status(400, "bad field")]).await;
    let dest = build(json!({"url": rx.url("/x"), "allow_private_networks": true,
        "retry_policy": FAST_RETRIES}));
    let named = [NamedDestination { name: "hook".into(), destination: dest }];
    let report = &deliver_all(&named, &job(), &output(), 4).await[0];
    assert!(!report.success);
    assert_eq!(report.attempts.len(), 1);
    assert_eq!(report.attempts[0].failure_class, Some(FailureClass::Permanent));
    assert_eq!(report.attempts[0].next_retry_in, None);
    assert_eq!(report.error, Some(format!("HTTP 400 Bad Request from {}", rx.url("/x"))));
    assert_eq!(rx.requests().len(), 1);
}

#[tokio::test]
async fn retry_on_status_replaces_the_default_list() {
    let rx = Receiver::start(vec![Reply::status(400, ""), Reply::status(503, "")]).await;
    let dest = build(json!({"url": rx.url("/x"), "allow_private_networks": true,
        "retry_policy": FAST_RETRIES, "retry_on_status": [400]}));
    let named = [NamedDestination { name: "hook".into(), destination: dest }];
    let report = &deliver_all(&named, &job(), &output(), 4).await[0];
    let codes: Vec<_> = report.attempts.iter().map(|a| (a.status_code, a.failure_class)).collect();
    assert_eq!(
        codes,
        [(Some(400), Some(FailureClass::Retryable)), (Some(503), Some(FailureClass::Permanent))]
    );
}

#[tokio::test]
async fn retry_after_on_429_is_respected() {
    let rx =
        Receiver::start(vec![Reply::status(429, "slow down").header("Retry-After", "1")]).await;
    let dest = build(json!({"url": rx.url("/x"), "allow_private_networks": true,
        "retry_policy": FAST_RETRIES}));
    let named = [NamedDestination { name: "hook".into(), destination: dest }];
    let report = &deliver_all(&named, &job(), &output(), 4).await[0];
    assert!(report.success);
    assert_eq!(report.attempts[0].status_code, Some(429));
    assert_eq!(report.attempts[0].next_retry_in, Some(Duration::from_secs(1)));
    let reqs = rx.requests();
    assert_eq!(reqs.len(), 2);
    let gap = reqs[1].at - reqs[0].at;
    assert!(gap >= Duration::from_millis(950), "second request after {gap:?}");
}

#[tokio::test]
async fn slow_server_is_a_retryable_timeout() {
    let rx =
        Receiver::start(vec![Reply::status(200, "late").delayed(Duration::from_secs(3))]).await;
    let dest = build(json!({"url": rx.url("/slow"), "allow_private_networks": true,
        "timeout_seconds": "1s"}));
    let started = Instant::now();
    let err = deliver_once(&dest, &job(), "dlv_t").await.unwrap_err();
    assert!(started.elapsed() < Duration::from_millis(2500), "{:?}", started.elapsed());
    assert!(err.is_retryable());
    assert_eq!(err.message, format!("Request timeout after 1s (POST {})", rx.url("/slow")));
    assert_eq!(rx.requests().len(), 1);
}

#[tokio::test]
async fn global_defaults_apply_when_the_destination_is_silent() {
    let rx =
        Receiver::start(vec![Reply::status(200, "late").delayed(Duration::from_secs(3))]).await;
    let defaults = BuildDefaults {
        timeout: Duration::from_secs(1),
        network: NetworkPolicy { allow_private_networks: true, allowed_hosts: Vec::new() },
        ..BuildDefaults::default()
    };
    let dest = Registry::new(defaults).build(&spec(json!({"url": rx.url("/d")})), "d").unwrap();
    let err = deliver_once(&dest, &job(), "dlv_d").await.unwrap_err();
    assert!(err.message.starts_with("Request timeout after 1s"), "{}", err.message);
    assert_eq!(rx.requests().len(), 1, "the global allow-list let 127.0.0.1 through");
}

#[tokio::test]
async fn responses_over_ten_megabytes_are_cut_and_judged_by_status() {
    let big = vec![b'z'; 12 * 1024 * 1024];
    let rx = Receiver::start(vec![
        Reply { body: big.clone(), ..Reply::status(200, "") },
        Reply { body: big, ..Reply::status(502, "") },
    ])
    .await;
    let dest = build(json!({"url": rx.url("/big"), "allow_private_networks": true}));
    let receipt = deliver_once(&dest, &job(), "dlv_b").await.unwrap();
    assert_eq!(receipt.status_code, Some(200));
    assert_eq!(receipt.response_excerpt, Some("z".repeat(4096)));
    let err = deliver_once(&dest, &job(), "dlv_b").await.unwrap_err();
    assert!(err.is_retryable());
    assert_eq!(err.status_code, Some(502));
    assert_eq!(err.response_excerpt, Some("z".repeat(4096)));
}

#[tokio::test]
async fn url_and_headers_are_templated_and_path_values_encoded() {
    let rx = Receiver::start(vec![]).await;
    let dest = build(json!({
        "url": rx.url("/hooks/{{task_name}}?job={{job_uuid}}"),
        "allow_private_networks": true,
        "headers": {"X-Job": "{{job_uuid}}", "X-Env": "{{environment}}-{{priority}}"}
    }));
    let receipt = deliver_once(&dest, &job(), "dlv_1").await.unwrap();
    let mut odd = job();
    odd.task_name = Some("daily report/v2?x=1".into());
    deliver_once(&dest, &odd, "dlv_2").await.unwrap();

    let reqs = rx.requests();
    let uuid = "0190b6f2-7c5e-7a3b-8c1d-2e3f4a5b6c7d";
    assert_eq!(reqs[0].path, format!("/hooks/report?job={uuid}"));
    assert_eq!(receipt.target, rx.url(&format!("/hooks/report?job={uuid}")));
    assert_eq!(reqs[0].header("x-job"), Some(uuid));
    assert_eq!(reqs[0].header("x-env"), Some("staging-high"));
    assert_eq!(reqs[1].path, format!("/hooks/daily%20report%2Fv2%3Fx%3D1?job={uuid}"));
}

#[tokio::test]
async fn missing_template_value_is_permanent_and_names_the_variable() {
    let rx = Receiver::start(vec![]).await;
    let dest = build(json!({"url": rx.url("/s/{{schedule_id}}"), "allow_private_networks": true}));
    let err = deliver_once(&dest, &job(), "dlv_1").await.unwrap_err();
    assert!(!err.is_retryable());
    assert!(err.message.contains("Template variable 'schedule_id'"), "{}", err.message);
    assert!(rx.requests().is_empty());
}

#[tokio::test]
async fn get_sends_no_body_and_method_case_is_free() {
    let rx = Receiver::start(vec![]).await;
    let get = build(json!({"url": rx.url("/g"), "method": "get", "allow_private_networks": true}));
    let put = build(json!({"url": rx.url("/p"), "method": "Put", "allow_private_networks": true}));
    let receipt = deliver_once(&get, &job(), "dlv_g").await.unwrap();
    deliver_once(&put, &job(), "dlv_p").await.unwrap();
    let reqs = rx.requests();
    assert_eq!((reqs[0].method.as_str(), reqs[0].body.len()), ("GET", 0));
    assert_eq!(reqs[0].header("webhook-id"), Some("dlv_g"));
    assert_eq!(receipt.bytes, 0);
    assert_eq!(reqs[1].method, "PUT");
    assert!(!reqs[1].body.is_empty());
}

#[tokio::test]
async fn format_replaces_the_envelope() {
    let rx = Receiver::start(vec![]).await;
    let dest = build(json!({"url": rx.url("/f"), "allow_private_networks": true,
        "format": "json_compact", "content_type": "application/vnd.report+json"}));
    deliver_once(&dest, &job(), "dlv_f").await.unwrap();
    let r = &rx.requests()[0];
    assert_eq!(&r.body[..], br#"{"rows":3,"ok":true}"#);
    assert_eq!(r.header("content-type"), Some("application/vnd.report+json"));
}

#[tokio::test]
async fn private_addresses_are_refused_without_the_allow_setting() {
    let rx = Receiver::start(vec![]).await;
    let port = rx.addr.port();
    for url in [rx.url("/x"), format!("http://localhost:{port}/x")] {
        let dest = build(json!({"url": url}));
        let err = deliver_once(&dest, &job(), "dlv_1").await.unwrap_err();
        assert!(!err.is_retryable(), "{url}: {}", err.message);
        assert!(err.message.contains("allow_private_networks"), "{}", err.message);
        let prefix = format!("{url} blocked by the SSRF guard: refusing to connect to ");
        assert!(err.message.starts_with(&prefix), "{}", err.message);
        let check = dest.check().await.unwrap_err();
        assert!(!check.is_retryable());
        let prefix = format!("localhost:{port} blocked by the SSRF guard: ");
        let prefix_ip = format!("127.0.0.1:{port} blocked by the SSRF guard: ");
        assert!(
            check.message.starts_with(&prefix) || check.message.starts_with(&prefix_ip),
            "{}",
            check.message
        );
        assert!(check.message.contains("allow_private_networks"), "{}", check.message);
    }
    let v6 = build(json!({"url": format!("http://[::1]:{port}/x")}));
    let err = deliver_once(&v6, &job(), "dlv_1").await.unwrap_err();
    assert!(!err.is_retryable());
    assert!(err.message.contains("refusing to connect to ::1"), "{}", err.message);
    let literal = build(json!({"url": rx.url("/x")}));
    let err = deliver_once(&literal, &job(), "dlv_1").await.unwrap_err();
    assert!(err.message.contains("127.0.0.1"), "{}", err.message);
    assert!(rx.requests().is_empty(), "the receiver must not have been contacted");
}

#[tokio::test]
async fn allowed_hosts_admits_a_listed_address() {
    let rx = Receiver::start(vec![]).await;
    let dest = build(json!({"url": rx.url("/ok"), "allowed_hosts": ["127.0.0.1"]}));
    let receipt = deliver_once(&dest, &job(), "dlv_1").await.unwrap();
    assert_eq!(receipt.status_code, Some(200));
    assert_eq!(rx.requests().len(), 1);
}

#[tokio::test]
async fn redirects_are_not_followed() {
    let rx = Receiver::start(vec![]).await;
    let other = rx.url("/elsewhere");
    let rx2 = Receiver::start(vec![Reply::status(302, "").header("Location", other.clone())]).await;
    let dest = build(json!({"url": rx2.url("/start"), "allow_private_networks": true,
        "retry_policy": FAST_RETRIES}));
    let err = deliver_once(&dest, &job(), "dlv_1").await.unwrap_err();
    assert!(!err.is_retryable());
    assert_eq!(err.status_code, Some(302));
    assert!(
        err.message.starts_with(&format!(
            "HTTP 302 Found from {}: redirects are not followed (Location: {other})",
            rx2.url("/start")
        )),
        "{}",
        err.message
    );
    assert_eq!(rx2.requests().len(), 1);
    assert!(rx.requests().is_empty());
}

#[tokio::test]
async fn connection_refused_is_retryable_with_the_cause() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let url = format!("http://127.0.0.1:{port}/x");
    let dest = build(json!({"url": url, "allow_private_networks": true}));
    let err = deliver_once(&dest, &job(), "dlv_1").await.unwrap_err();
    assert!(err.is_retryable());
    assert!(err.message.starts_with(&format!("Connection to {url} failed: ")), "{}", err.message);
    assert!(err.message.contains("Connection refused"), "{}", err.message);
    let check = dest.check().await.unwrap_err();
    assert!(check.is_retryable());
    assert!(check.message.contains("Connection refused"), "{}", check.message);
}

#[tokio::test]
async fn check_connects_without_sending_a_request() {
    let rx = Receiver::start(vec![]).await;
    let dest =
        build(json!({"url": rx.url("/hooks/{{task_name}}"), "allow_private_networks": true}));
    let report = dest.check().await.unwrap();
    assert_eq!(report.target, rx.addr.to_string());
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(rx.requests().is_empty());
}

#[test]
fn config_errors_have_exact_paths_and_messages() {
    let one = |v: Value| {
        let errs = build_err(v);
        assert_eq!(errs.len(), 1, "{errs:?}");
        errs[0].to_string()
    };
    assert_eq!(one(json!({})), format!("d.url: is required ({URL_EXPECTED})"));
    assert_eq!(
        one(json!({"url": "https://h.example/", "method": "FETCH"})),
        "d.method: must be one of GET, POST, PUT, PATCH, DELETE, got 'FETCH'"
    );
    assert_eq!(
        one(json!({"url": "https://h.example/", "auth": {"type": "oauth"}})),
        "d.auth.type: must be one of bearer, basic, api_key, signature, got 'oauth'"
    );
    assert_eq!(
        one(json!({"url": "https://h.example/", "auth": {"type": "bearer"}})),
        "d.auth.token: is required (a secret string, e.g. \"${MY_TOKEN}\")"
    );
    assert_eq!(
        one(json!({"url": "h.example/{{task_name}}"})),
        format!("d.url: Invalid URL format: relative URL without a base; expected {URL_EXPECTED}")
    );
    assert_eq!(
        one(json!({"url": "ftp://h.example/"})),
        format!(
            "d.url: Invalid URL format: scheme 'ftp' is not supported; expected {URL_EXPECTED}"
        )
    );
    assert_eq!(
        one(json!({"url": "https://h.example/", "headers": {"Bad Header": "x"}})),
        "d.headers.Bad Header: 'Bad Header' is not a valid HTTP header name \
         (letters, digits and !#$%&'*+-.^_`|~ only)"
    );
    assert_eq!(
        one(json!({"url": "https://h.example/", "timeout_seconds": 0})),
        "d.timeout_seconds: must be greater than 0 (seconds, e.g. 30 or \"30s\")"
    );
    assert_eq!(
        one(json!({"url": "https://h.example/", "auth": {"type": "signature", "secret": "s",
            "algorithm": "sha1"}})),
        "d.auth.algorithm: must be one of sha256, got 'sha1'"
    );
    assert_eq!(
        one(json!({"url": "https://h.example/", "auth": {"type": "bearer", "token": "t"},
            "headers": {"Authorization": "x"}})),
        "d.headers.Authorization: header 'Authorization' is already set by auth; remove one of them"
    );
    // A templated host is judged after rendering, not now.
    assert!(
        Registry::default()
            .build(&spec(json!({"url": "https://api.{{environment}}.example.com/x"})), "d")
            .is_ok()
    );
}

#[test]
fn every_config_error_is_reported_at_once() {
    let errs = build_err(json!({"method": "FETCH", "methd": "x", "auth": {"type": "bearer"}}));
    let paths: Vec<&str> = errs.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(paths, ["d.url", "d.method", "d.auth.token", "d.methd"]);
    assert!(errs[3].message.contains("did you mean 'method'?"), "{}", errs[3].message);
}

#[tokio::test]
async fn secrets_never_appear_in_debug_describe_or_errors() {
    let rx = Receiver::start(vec![Reply::status(401, "no")]).await;
    let url = format!("http://user:url-pass-77@{}/x", rx.addr);
    let dest = build(json!({
        "url": url, "allow_private_networks": true,
        "headers": {"X-Token": "header-secret-55"},
        "auth": {"type": "signature", "secret": "sign-secret-99"}
    }));
    let err = deliver_once(&dest, &job(), "dlv_1").await.unwrap_err();
    let shown = format!("{dest:?} {} {}", dest.describe(), err.message);
    for secret in ["url-pass-77", "sign-secret-99", "header-secret-55"] {
        assert!(!shown.contains(secret), "{secret} leaked in: {shown}");
    }
    assert_eq!(
        err.message,
        format!("HTTP 401 Unauthorized from http://user:********@{}/x", rx.addr)
    );
    // reqwest sends the URL's userinfo as Basic auth: the password is used, just never shown.
    assert_eq!(
        rx.requests()[0].header("authorization"),
        Some(format!("Basic {}", STANDARD.encode("user:url-pass-77")).as_str())
    );

    for bad in [
        json!({"url": "https://h.example/", "auth": {"type": "bearer", "token": "tok\nleak-1"}}),
        json!({"url": "https://h.example/", "auth": {"type": "api_key", "header": "X-K",
            "value": "leak-2\u{1}"}}),
        json!({"url": "https://h.example/", "auth": {"type": "basic", "username": "u",
            "password": 5}}),
    ] {
        let text = format!("{:?}", build_err(bad));
        assert!(!text.contains("leak"), "{text}");
    }
}
