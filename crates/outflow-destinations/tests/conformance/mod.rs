//! The conformance suite every destination runs against its real peer.
//!
//! A destination's test file implements [`Peer`] (how to configure the destination for the
//! peer, and how to read back what arrived) and invokes [`conformance_suite!`], which
//! generates one test per case:
//!
//! 1. one output arrives, byte-exact (text) or value-exact (JSON);
//! 2. the same delivery id delivered twice: no duplicate where the destination dedupes
//!    ([`Dedupe::Unique`]), or two copies that carry the delivery id ([`Dedupe::CarriesId`]);
//! 3. the peer stops (a [`proxy::TcpProxy`] is unplugged) → retryable error and a failing
//!    health check; once it is back, a retry of the same delivery succeeds;
//! 4. a permanent error is classified permanent, dead-lettered after one attempt, and its
//!    message names the cause;
//! 5. a 5 MiB output, and a batch of 1,000 small records through `deliver_batch`;
//! 6. templated names (table, key, topic, index, queue, subject) render from the job context;
//! 7. a missing required field is a config error at its path.
//!
//! Each test file uses `mod conformance;`, so not every item is used by every binary.

#![allow(dead_code)]

pub mod peers;
pub mod proxy;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use outflow_core::attempt::FailureClass;
use outflow_core::config::DestinationSpec;
use outflow_core::context::{JobContext, RenderContext};
use outflow_core::netpolicy::NetworkPolicy;
use outflow_core::output::Output;
use outflow_core::retry::RetryPolicy;
use outflow_destinations::runner::{NamedDestination, deliver_with_retries, new_delivery_id};
use outflow_destinations::{Attempt, BuildDefaults, Destination, Registry};
use serde_json::{Value, json};

/// How a destination treats a second delivery with the same delivery id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dedupe {
    /// The second delivery leaves one record (unique key, object key, document `_id`).
    Unique,
    /// Both copies arrive, each carrying the delivery id (header, property, field) so
    /// consumers can drop the duplicate.
    CarriesId,
}

/// One record as it arrived at the peer.
#[derive(Debug, Clone)]
pub struct Arrival {
    /// The output as delivered, taken out of any envelope the destination wraps it in: the
    /// exact text for text outputs, JSON text for JSON outputs.
    pub body: Vec<u8>,
    /// The delivery id the record carries (column, header, property, `_id`), if any.
    pub delivery_id: Option<String>,
}

/// A real server a destination delivers to, and how to read back from it.
#[async_trait]
pub trait Peer: Send + Sync {
    /// The destination `type`.
    fn kind(&self) -> &'static str;

    /// The real server's address; the suite's proxy forwards to it.
    fn upstream(&self) -> SocketAddr;

    /// A working destination spec (with `type`) that connects to `addr` and uses `name` —
    /// a template such as `of_pg_x1y2_{{task_name}}` — for its table, key, topic, index,
    /// queue or subject.
    fn spec(&self, addr: SocketAddr, name: &str) -> Value;

    /// Runs before anything is delivered to the rendered `location` (subscribe, create a
    /// topic...). The default does nothing.
    async fn prepare(&self, _location: &str) {}

    /// What arrived at the rendered `location`, one [`Arrival`] per record, oldest first.
    /// Waits until `expected` records are there, or a few seconds have passed.
    async fn read_back(&self, location: &str, expected: usize) -> Vec<Arrival>;

    /// What a second delivery of the same id does.
    fn dedupe(&self) -> Dedupe;

    /// A spec that fails permanently (bad credentials, missing table with
    /// `create_table: false`, missing bucket) and a phrase its error message must contain.
    fn permanent_failure(&self, addr: SocketAddr, name: &str) -> (Value, &'static str);

    /// Keys whose absence is a config error reported at `d.<key>`.
    fn required_fields(&self) -> &'static [&'static str];

    /// The largest output the peer is asked to take in case 5 (default 5 MiB).
    fn large_output_bytes(&self) -> usize {
        5 * 1024 * 1024
    }
}

/// The task name the suite's jobs carry: templates use `{{task_name}}`.
pub const TASK: &str = "conf";

/// A unique, lowercase name for one test: `of_<kind>_<random>`.
pub fn unique_name(kind: &str) -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("of_{}_{}", kind.replace('-', "_"), &id[..10])
}

/// The `(template, rendered)` pair of a test's name.
pub fn names(kind: &str) -> (String, String) {
    let base = unique_name(kind);
    (format!("{base}_{{{{task_name}}}}"), format!("{base}_{TASK}"))
}

/// A job context whose `{{task_name}}` is `task`.
pub fn job(task: &str) -> JobContext {
    let mut job = JobContext::new_now();
    job.task_name = Some(task.to_string());
    job.metadata.insert("suite".into(), json!("conformance"));
    job
}

/// A registry that lets destinations reach loopback peers and retries quickly.
pub fn registry() -> Registry {
    Registry::new(BuildDefaults {
        timeout: Duration::from_secs(10),
        retry_policy: RetryPolicy {
            max_attempts: 3,
            initial_delay_ms: 50,
            max_delay_ms: 200,
            backoff_multiplier: 2.0,
            jitter: 0.0,
        },
        network: NetworkPolicy { allow_private_networks: true, ..NetworkPolicy::default() },
    })
}

/// Builds a destination from a JSON spec, panicking with every config error.
pub fn build(spec: &Value) -> Arc<dyn Destination> {
    let spec = DestinationSpec::from_value(spec, "d").expect("spec is a mapping with a type");
    match registry().build(&spec, "d") {
        Ok(dest) => dest,
        Err(errors) => panic!("spec {spec:?} does not build: {errors:?}"),
    }
}

/// Delivers `output` once, within a minute (a hang is a failure, not a slow pass).
pub async fn deliver(
    dest: &dyn Destination,
    job: &JobContext,
    output: &Output,
    delivery_id: &str,
) -> Result<outflow_destinations::DeliveryReceipt, outflow_destinations::DeliveryError> {
    let render = RenderContext::new(job, output, delivery_id);
    tokio::time::timeout(Duration::from_secs(60), dest.deliver(Attempt { render, number: 1 }))
        .await
        .unwrap_or_else(|_| panic!("{} delivery hung for 60 s", dest.kind()))
}

fn json_output() -> (Output, Value) {
    let value = json!({"message": "hello from outflow", "n": 1, "unicode": "é ✓ 日本", "nested": {"ok": true, "list": [1, 2, 3]}});
    (Output::Json(value.clone()), value)
}

fn assert_json_body(arrival: &Arrival, expected: &Value, kind: &str) {
    let got: Value = serde_json::from_slice(&arrival.body).unwrap_or_else(|e| {
        panic!(
            "{kind}: the arrived body is not JSON ({e}): {}",
            String::from_utf8_lossy(&arrival.body)
        )
    });
    assert_eq!(&got, expected, "{kind}: the arrived output differs from the delivered one");
}

/// Case 1: one output arrives, value-exact, carrying its delivery id when the destination
/// stores one; the health check passes.
pub async fn delivers_one_output(peer: &dyn Peer) {
    let (template, location) = names(peer.kind());
    let dest = build(&peer.spec(peer.upstream(), &template));
    dest.check().await.unwrap_or_else(|e| panic!("{}: health check failed: {e}", peer.kind()));
    peer.prepare(&location).await;
    let (output, value) = json_output();
    let id = new_delivery_id();
    let receipt = deliver(dest.as_ref(), &job(TASK), &output, &id)
        .await
        .unwrap_or_else(|e| panic!("{}: delivery failed: {e:?}", peer.kind()));
    assert!(
        receipt.target.contains(&location),
        "{}: receipt target {:?} should name {location}",
        peer.kind(),
        receipt.target
    );
    let arrived = peer.read_back(&location, 1).await;
    assert_eq!(arrived.len(), 1, "{}: expected exactly one record at {location}", peer.kind());
    assert_json_body(&arrived[0], &value, peer.kind());
    if let Some(carried) = &arrived[0].delivery_id {
        assert_eq!(carried, &id, "{}: the record carries another delivery id", peer.kind());
    }
}

/// Case 2: delivering the same id twice dedupes or carries the id, as the peer declares.
pub async fn redelivery_is_deduplicated_or_identified(peer: &dyn Peer) {
    let (template, location) = names(peer.kind());
    let dest = build(&peer.spec(peer.upstream(), &template));
    peer.prepare(&location).await;
    let (output, value) = json_output();
    let id = new_delivery_id();
    let job = job(TASK);
    for round in 1..=2 {
        deliver(dest.as_ref(), &job, &output, &id)
            .await
            .unwrap_or_else(|e| panic!("{}: delivery {round} failed: {e:?}", peer.kind()));
    }
    match peer.dedupe() {
        Dedupe::Unique => {
            let arrived = peer.read_back(&location, 2).await;
            assert_eq!(
                arrived.len(),
                1,
                "{}: a redelivery must not duplicate the record",
                peer.kind()
            );
            assert_json_body(&arrived[0], &value, peer.kind());
        }
        Dedupe::CarriesId => {
            let arrived = peer.read_back(&location, 2).await;
            assert_eq!(arrived.len(), 2, "{}: both deliveries should arrive", peer.kind());
            for copy in &arrived {
                assert_eq!(
                    copy.delivery_id.as_deref(),
                    Some(id.as_str()),
                    "{}: each copy must carry the delivery id so consumers can dedupe",
                    peer.kind()
                );
            }
        }
    }
}

/// Case 3: the peer stops → retryable error and failing check; it comes back → the retry
/// succeeds.
pub async fn outage_is_retryable_and_recovers(peer: &dyn Peer) {
    let proxy = proxy::TcpProxy::start(peer.upstream()).await;
    let (template, location) = names(peer.kind());
    let dest = build(&peer.spec(proxy.addr(), &template));
    peer.prepare(&location).await;
    let job = job(TASK);
    let (output, _) = json_output();
    deliver(dest.as_ref(), &job, &output, &new_delivery_id())
        .await
        .unwrap_or_else(|e| panic!("{}: delivery through the proxy failed: {e:?}", peer.kind()));

    proxy.unplug();
    let id = new_delivery_id();
    let err = deliver(dest.as_ref(), &job, &output, &id)
        .await
        .expect_err("a delivery to a stopped peer must fail");
    assert_eq!(
        err.class,
        FailureClass::Retryable,
        "{}: an outage must be retryable: {err:?}",
        peer.kind()
    );
    assert!(!err.message.is_empty());
    let check =
        tokio::time::timeout(Duration::from_secs(60), dest.check()).await.expect("check hung");
    assert!(check.is_err(), "{}: the health check must fail while the peer is down", peer.kind());

    proxy.plug().await;
    let mut last = None;
    // Clients reconnect with a backoff of their own: give them a few tries, as the engine would.
    for _ in 0..20 {
        match deliver(dest.as_ref(), &job, &output, &id).await {
            Ok(_) => {
                last = None;
                break;
            }
            Err(e) => {
                assert_eq!(e.class, FailureClass::Retryable, "{}: {e:?}", peer.kind());
                last = Some(e);
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    }
    assert!(last.is_none(), "{}: no success after the peer came back: {last:?}", peer.kind());
    let arrived = peer.read_back(&location, 2).await;
    assert!(
        arrived.iter().any(|a| a.delivery_id.as_deref().is_none_or(|d| d == id)),
        "{}: the retried delivery did not arrive",
        peer.kind()
    );
}

/// Case 4: a permanent error is classified permanent, dead-lettered after one attempt, and
/// names its cause.
pub async fn permanent_error_is_dead_lettered(peer: &dyn Peer) {
    let (template, _) = names(peer.kind());
    let (spec, cause) = peer.permanent_failure(peer.upstream(), &template);
    let dest = build(&spec);
    let (output, _) = json_output();
    let job = job(TASK);
    let err = deliver(dest.as_ref(), &job, &output, &new_delivery_id())
        .await
        .expect_err("the delivery must fail");
    assert_eq!(err.class, FailureClass::Permanent, "{}: {err:?}", peer.kind());
    assert!(
        err.message.to_lowercase().contains(&cause.to_lowercase()),
        "{}: the message should name the cause ({cause:?}): {}",
        peer.kind(),
        err.message
    );
    let named = NamedDestination { name: "conformance".into(), destination: dest };
    let permits = tokio::sync::Semaphore::new(4);
    let report = deliver_with_retries(&named, &job, &output, &new_delivery_id(), &permits).await;
    assert!(!report.success, "{}: a permanent failure cannot succeed", peer.kind());
    assert_eq!(report.attempts.len(), 1, "{}: a permanent failure is not retried", peer.kind());
    assert_eq!(report.attempts[0].failure_class, Some(FailureClass::Permanent));
}

/// Case 5a: a 5 MiB text output arrives byte-exact.
pub async fn large_output_arrives_intact(peer: &dyn Peer) {
    let (template, location) = names(peer.kind());
    let dest = build(&peer.spec(peer.upstream(), &template));
    peer.prepare(&location).await;
    let line =
        "outflow large output line: the quick brown fox jumps over the lazy dog 0123456789\n";
    let text: String = line.repeat(peer.large_output_bytes() / line.len() + 1);
    let text = text[..peer.large_output_bytes()].to_string();
    let output = Output::Text(text.clone());
    deliver(dest.as_ref(), &job(TASK), &output, &new_delivery_id())
        .await
        .unwrap_or_else(|e| panic!("{}: large delivery failed: {e:?}", peer.kind()));
    let arrived = peer.read_back(&location, 1).await;
    assert_eq!(arrived.len(), 1, "{}: one large record expected", peer.kind());
    assert_eq!(arrived[0].body.len(), text.len(), "{}: size differs", peer.kind());
    assert!(
        arrived[0].body == text.as_bytes(),
        "{}: the large output is not byte-exact",
        peer.kind()
    );
}

/// Case 5b: a batch of 1,000 small records through `deliver_batch`: every record succeeds
/// and arrives once.
pub async fn batch_of_small_records_arrives(peer: &dyn Peer) {
    let (template, location) = names(peer.kind());
    let dest = build(&peer.spec(peer.upstream(), &template));
    peer.prepare(&location).await;
    let job = job(TASK);
    let outputs: Vec<Output> =
        (0..1000).map(|i| Output::Json(json!({"i": i, "msg": "small"}))).collect();
    let ids: Vec<String> = (0..1000).map(|_| new_delivery_id()).collect();
    let attempts: Vec<Attempt<'_>> = outputs
        .iter()
        .zip(&ids)
        .map(|(output, id)| Attempt { render: RenderContext::new(&job, output, id), number: 1 })
        .collect();
    let results = tokio::time::timeout(Duration::from_secs(120), dest.deliver_batch(&attempts))
        .await
        .expect("batch hung for 120 s");
    assert_eq!(results.len(), 1000, "{}: one result per record", peer.kind());
    for (i, result) in results.iter().enumerate() {
        if let Err(e) = result {
            panic!("{}: record {i} failed: {e:?}", peer.kind());
        }
    }
    let arrived = peer.read_back(&location, 1000).await;
    let seen: BTreeSet<i64> = arrived
        .iter()
        .map(|a| {
            let v: Value = serde_json::from_slice(&a.body).expect("batch record is JSON");
            v["i"].as_i64().expect("record has i")
        })
        .collect();
    assert_eq!(arrived.len(), 1000, "{}: every record arrives once", peer.kind());
    assert_eq!(seen, (0..1000).collect::<BTreeSet<i64>>(), "{}: records missing", peer.kind());
}

/// Case 6: templated names render from the job context: two tasks, two locations.
pub async fn templated_names_follow_the_job(peer: &dyn Peer) {
    let base = unique_name(peer.kind());
    let dest = build(&peer.spec(peer.upstream(), &format!("{base}_{{{{task_name}}}}")));
    let (output, value) = json_output();
    for task in ["alpha", "beta"] {
        peer.prepare(&format!("{base}_{task}")).await;
    }
    for task in ["alpha", "beta"] {
        deliver(dest.as_ref(), &job(task), &output, &new_delivery_id())
            .await
            .unwrap_or_else(|e| panic!("{}: delivery for {task} failed: {e:?}", peer.kind()));
    }
    for task in ["alpha", "beta"] {
        let arrived = peer.read_back(&format!("{base}_{task}"), 1).await;
        assert_eq!(arrived.len(), 1, "{}: one record at {base}_{task}", peer.kind());
        assert_json_body(&arrived[0], &value, peer.kind());
    }
}

/// Case 7: each required field, when missing, is a config error at `d.<field>`.
pub async fn missing_required_fields_are_reported(peer: &dyn Peer) {
    let (template, _) = names(peer.kind());
    let spec = peer.spec(peer.upstream(), &template);
    assert!(!peer.required_fields().is_empty(), "{}: list the required fields", peer.kind());
    for field in peer.required_fields() {
        let mut broken = spec.clone();
        let removed = broken.as_object_mut().expect("spec is an object").remove(*field);
        assert!(removed.is_some(), "{}: the working spec lacks {field}", peer.kind());
        let parsed = DestinationSpec::from_value(&broken, "d").expect("still a mapping");
        let errors =
            registry().build(&parsed, "d").expect_err("a missing required field is an error");
        assert!(
            errors.iter().any(|e| e.path == format!("d.{field}") && !e.message.is_empty()),
            "{}: no error at d.{field}: {errors:?}",
            peer.kind()
        );
    }
}

/// A small output built from bytes, for peers' own extra tests.
pub fn text_output(text: &str) -> Output {
    Output::detect(Bytes::from(text.to_string()))
}

/// Generates the conformance tests for a peer. `$peer` is an expression of type
/// `Option<P>` where `P: Peer` (usually a constructor that returns `None` after
/// [`peers::require`] skipped).
#[macro_export]
macro_rules! conformance_suite {
    ($peer:expr) => {
        mod conformance_suite {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn case1_delivers_one_output() {
                if let Some(peer) = $peer {
                    conformance::delivers_one_output(&peer).await
                }
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn case2_redelivery_is_deduplicated_or_identified() {
                if let Some(peer) = $peer {
                    conformance::redelivery_is_deduplicated_or_identified(&peer).await
                }
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn case3_outage_is_retryable_and_recovers() {
                if let Some(peer) = $peer {
                    conformance::outage_is_retryable_and_recovers(&peer).await
                }
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn case4_permanent_error_is_dead_lettered() {
                if let Some(peer) = $peer {
                    conformance::permanent_error_is_dead_lettered(&peer).await
                }
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn case5_large_output_arrives_intact() {
                if let Some(peer) = $peer {
                    conformance::large_output_arrives_intact(&peer).await
                }
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn case5_batch_of_small_records_arrives() {
                if let Some(peer) = $peer {
                    conformance::batch_of_small_records_arrives(&peer).await
                }
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn case6_templated_names_follow_the_job() {
                if let Some(peer) = $peer {
                    conformance::templated_names_follow_the_job(&peer).await
                }
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn case7_missing_required_fields_are_reported() {
                if let Some(peer) = $peer {
                    conformance::missing_required_fields_are_reported(&peer).await
                }
            }
        }
    };
}
