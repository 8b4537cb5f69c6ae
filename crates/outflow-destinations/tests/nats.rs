//! The NATS destination against a real nats-server with JetStream on 127.0.0.1
//! (`OUTFLOW_TEST_NATS_URL`). Two peers run the conformance suite: core NATS (read back by a
//! subscription opened in `prepare`) and JetStream (read back from the stream). Then:
//! headers, max_payload, and a stream that does not match.

mod conformance;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use async_trait::async_trait;
use conformance::{Arrival, Dedupe, Peer, TASK, build, deliver, job, unique_name};
use futures::StreamExt;
use outflow_core::attempt::FailureClass;
use outflow_core::output::Output;
use outflow_destinations::runner::new_delivery_id;
use serde_json::{Value, json};

/// The largest output the suite sends: the server's default max_payload is 1 MiB, and a
/// NATS message cannot be larger (outflow refuses such outputs permanently, see
/// `outputs_over_max_payload_are_permanent`), so case 5 sends 512 KiB instead of 5 MiB.
const LARGE: usize = 512 * 1024;

/// A message as the reader saw it.
#[derive(Clone)]
struct Seen {
    payload: Vec<u8>,
    headers: HashMap<String, String>,
}

fn header_map(h: Option<&async_nats::HeaderMap>) -> HashMap<String, String> {
    h.map(|h| {
        h.iter()
            .map(|(k, v)| {
                (k.to_string(), v.first().map(|v| v.as_str().to_string()).unwrap_or_default())
            })
            .collect()
    })
    .unwrap_or_default()
}

/// Core NATS: an independent client subscribes in `prepare`.
struct CorePeer {
    addr: SocketAddr,
    client: async_nats::Client,
    seen: Arc<Mutex<HashMap<String, Vec<Seen>>>>,
}

impl CorePeer {
    async fn connect() -> Option<CorePeer> {
        let url =
            conformance::peers::require("NATS", "OUTFLOW_TEST_NATS_URL", "nats://127.0.0.1:4222")?;
        let addr = conformance::peers::socket_addr(&url).expect("NATS URL has host:port");
        let client = async_nats::connect(url.as_str()).await.expect("test client connects to NATS");
        Some(CorePeer { addr, client, seen: Arc::default() })
    }

    /// Subscribes to `subject` and returns once the subscription provably receives: a probe
    /// published after it came back through it.
    async fn subscribe(&self, subject: &str) {
        let mut sub = self.client.subscribe(subject.to_string()).await.expect("subscribe");
        let seen = Arc::clone(&self.seen);
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let key = subject.to_string();
        tokio::spawn(async move {
            let mut ready = Some(ready_tx);
            while let Some(msg) = sub.next().await {
                let headers = header_map(msg.headers.as_ref());
                if headers.contains_key("outflow-test-probe") {
                    if let Some(tx) = ready.take() {
                        let _ = tx.send(());
                    }
                    continue;
                }
                seen.lock()
                    .unwrap()
                    .entry(key.clone())
                    .or_default()
                    .push(Seen { payload: msg.payload.to_vec(), headers });
            }
        });
        let mut probe = async_nats::HeaderMap::new();
        probe.insert("outflow-test-probe", "1");
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut ready_rx = ready_rx;
        loop {
            self.client
                .publish_with_headers(subject.to_string(), probe.clone(), "".into())
                .await
                .unwrap();
            self.client.flush().await.unwrap();
            match tokio::time::timeout(Duration::from_millis(200), &mut ready_rx).await {
                Ok(_) => return,
                Err(_) if Instant::now() < deadline => continue,
                Err(_) => panic!("subscription to {subject} never became ready"),
            }
        }
    }

    async fn wait_for(&self, subject: &str, expected: usize) -> Vec<Seen> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let got = self.seen.lock().unwrap().get(subject).cloned().unwrap_or_default();
            if got.len() >= expected || Instant::now() > deadline {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[async_trait]
impl Peer for CorePeer {
    fn kind(&self) -> &'static str {
        "nats"
    }

    fn upstream(&self) -> SocketAddr {
        self.addr
    }

    fn spec(&self, addr: SocketAddr, name: &str) -> Value {
        json!({"type": "nats", "url": format!("nats://{addr}"), "subject": name})
    }

    async fn prepare(&self, location: &str) {
        self.subscribe(location).await;
    }

    async fn read_back(&self, location: &str, expected: usize) -> Vec<Arrival> {
        self.wait_for(location, expected)
            .await
            .into_iter()
            .map(|s| Arrival {
                delivery_id: s.headers.get("Nats-Msg-Id").cloned(),
                body: s.payload,
            })
            .collect()
    }

    fn dedupe(&self) -> Dedupe {
        Dedupe::CarriesId
    }

    fn permanent_failure(&self, addr: SocketAddr, name: &str) -> (Value, &'static str) {
        // A subject that renders with a space cannot be published to.
        (
            json!({"type": "nats", "url": format!("nats://{addr}"), "subject": format!("{name} x")}),
            "whitespace",
        )
    }

    fn required_fields(&self) -> &'static [&'static str] {
        &["url", "subject"]
    }

    fn large_output_bytes(&self) -> usize {
        LARGE
    }
}

/// JetStream: the destination creates a stream named after the subject
/// (`create_stream: true`); an independent client reads it back and deletes it.
struct JetStreamPeer {
    addr: SocketAddr,
    js: jetstream::Context,
}

impl JetStreamPeer {
    async fn connect() -> Option<JetStreamPeer> {
        let url =
            conformance::peers::require("NATS", "OUTFLOW_TEST_NATS_URL", "nats://127.0.0.1:4222")?;
        let addr = conformance::peers::socket_addr(&url).expect("NATS URL has host:port");
        let client = async_nats::connect(url.as_str()).await.expect("test client connects to NATS");
        Some(JetStreamPeer { addr, js: jetstream::new(client) })
    }

    async fn stored(&self, stream: &str, expected: usize) -> Vec<Seen> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let mut got = Vec::new();
            if let Ok(mut s) = self.js.get_stream(stream).await
                && let Ok(info) = s.info().await
            {
                let (first, last) = (info.state.first_sequence, info.state.last_sequence);
                for seq in first.max(1)..=last {
                    if let Ok(m) = s.get_raw_message(seq).await {
                        got.push(Seen {
                            payload: m.payload.to_vec(),
                            headers: header_map(Some(&m.headers)),
                        });
                    }
                }
            }
            if got.len() >= expected || Instant::now() > deadline {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[async_trait]
impl Peer for JetStreamPeer {
    fn kind(&self) -> &'static str {
        "nats"
    }

    fn upstream(&self) -> SocketAddr {
        self.addr
    }

    fn spec(&self, addr: SocketAddr, name: &str) -> Value {
        json!({
            "type": "nats", "url": format!("nats://{addr}"), "subject": name,
            "jetstream": true, "stream": name, "create_stream": true,
        })
    }

    async fn read_back(&self, location: &str, expected: usize) -> Vec<Arrival> {
        let got = self.stored(location, expected).await;
        let _ = self.js.delete_stream(location).await;
        got.into_iter()
            .map(|s| Arrival {
                delivery_id: s.headers.get("Nats-Msg-Id").cloned(),
                body: s.payload,
            })
            .collect()
    }

    fn dedupe(&self) -> Dedupe {
        Dedupe::Unique
    }

    fn permanent_failure(&self, addr: SocketAddr, name: &str) -> (Value, &'static str) {
        // No stream captures this subject: the server answers "no responders".
        (
            json!({"type": "nats", "url": format!("nats://{addr}"), "subject": name, "jetstream": true}),
            "no jetstream stream",
        )
    }

    fn required_fields(&self) -> &'static [&'static str] {
        &["url", "subject"]
    }

    fn large_output_bytes(&self) -> usize {
        LARGE
    }
}

mod core_nats {
    use super::*;
    conformance_suite!(CorePeer::connect().await);
}

mod jetstream_nats {
    use super::*;
    conformance_suite!(JetStreamPeer::connect().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_carry_ids_content_type_and_templates() {
    let Some(peer) = CorePeer::connect().await else { return };
    let subject = unique_name("nats");
    peer.subscribe(&subject).await;
    let dest = build(&json!({
        "type": "nats", "url": format!("nats://{}", peer.addr), "subject": subject,
        "headers": {"x-task": "{{task_name}}"},
    }));
    let job = job(TASK);
    let id = new_delivery_id();
    deliver(dest.as_ref(), &job, &Output::Json(json!({"k": "v"})), &id).await.unwrap();
    let got = peer.wait_for(&subject, 1).await;
    assert_eq!(got.len(), 1);
    let h = &got[0].headers;
    assert_eq!(h.get("Nats-Msg-Id"), Some(&id));
    assert_eq!(h.get("outflow-job-uuid"), Some(&job.job_uuid.to_string()));
    assert_eq!(h.get("Content-Type").map(String::as_str), Some("application/json"));
    assert_eq!(h.get("x-task").map(String::as_str), Some(TASK));
    assert_eq!(got[0].payload, br#"{"k":"v"}"#);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outputs_over_max_payload_are_permanent() {
    let Some(peer) = CorePeer::connect().await else { return };
    let max = peer.client.server_info().max_payload;
    for jetstream in [false, true] {
        let dest = build(&json!({
            "type": "nats", "url": format!("nats://{}", peer.addr), "subject": unique_name("nats"),
            "jetstream": jetstream,
        }));
        let big = Output::Text("x".repeat(max + 1));
        let err = deliver(dest.as_ref(), &job(TASK), &big, &new_delivery_id()).await.unwrap_err();
        assert_eq!(err.class, FailureClass::Permanent, "{err:?}");
        assert!(err.message.contains("max_payload"), "{}", err.message);
        assert!(err.message.contains(&max.to_string()), "names the limit: {}", err.message);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_that_does_not_capture_the_subject_is_refused() {
    let Some(peer) = JetStreamPeer::connect().await else { return };
    let (a, b) = (unique_name("nats"), unique_name("nats"));
    peer.js
        .create_stream(jetstream::stream::Config {
            name: a.clone(),
            subjects: vec![a.clone()],
            ..Default::default()
        })
        .await
        .unwrap();
    peer.js
        .create_stream(jetstream::stream::Config {
            name: b.clone(),
            subjects: vec![b.clone()],
            ..Default::default()
        })
        .await
        .unwrap();
    // Publishing to a's subject while expecting stream b: the server refuses it.
    let dest = build(&json!({
        "type": "nats", "url": format!("nats://{}", peer.addr), "subject": a,
        "jetstream": true, "stream": b,
    }));
    let err = deliver(dest.as_ref(), &job(TASK), &Output::Text("x".into()), &new_delivery_id())
        .await
        .unwrap_err();
    assert_eq!(err.class, FailureClass::Permanent, "{err:?}");
    assert!(err.message.contains("JetStream refused"), "{}", err.message);
    let ok = build(&json!({
        "type": "nats", "url": format!("nats://{}", peer.addr), "subject": a,
        "jetstream": true, "stream": a,
    }));
    ok.check().await.expect("the stream exists");
    deliver(ok.as_ref(), &job(TASK), &Output::Text("y".into()), &new_delivery_id()).await.unwrap();
    assert_eq!(peer.stored(&a, 1).await.len(), 1);
    let _ = peer.js.delete_stream(&a).await;
    let _ = peer.js.delete_stream(&b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_stream_captures_every_rendered_subject() {
    let Some(peer) = JetStreamPeer::connect().await else { return };
    let base = unique_name("nats");
    let stream = format!("{base}_S");
    let dest = build(&json!({
        "type": "nats", "url": format!("nats://{}", peer.addr), "subject": format!("{base}.{{{{task_name}}}}"),
        "jetstream": true, "stream": stream, "create_stream": true,
    }));
    for task in ["alpha", "beta", "alpha"] {
        deliver(dest.as_ref(), &job(task), &Output::Text(task.into()), &new_delivery_id())
            .await
            .unwrap_or_else(|e| panic!("{task}: {e:?}"));
    }
    let got = peer.stored(&stream, 3).await;
    let bodies: Vec<&[u8]> = got.iter().map(|s| s.payload.as_slice()).collect();
    assert_eq!(bodies, [b"alpha".as_slice(), b"beta", b"alpha"]);
    let _ = peer.js.delete_stream(&stream).await;
}
