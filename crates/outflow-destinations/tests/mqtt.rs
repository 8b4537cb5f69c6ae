//! The MQTT destination against a real Mosquitto 2.0 on 127.0.0.1 (`OUTFLOW_TEST_MQTT_URL`):
//! the conformance suite (read back by an independent MQTT v5 subscriber opened in
//! `prepare`), then QoS 0/1/2, retained messages and user properties.

mod conformance;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use conformance::{Arrival, Dedupe, Peer, TASK, build, deliver, job, unique_name};
use outflow_core::attempt::FailureClass;
use outflow_core::output::Output;
use outflow_destinations::runner::new_delivery_id;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{Packet, Publish};
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use serde_json::{Value, json};

/// An independent MQTT v5 subscriber: records every PUBLISH by topic.
struct Reader {
    client: AsyncClient,
    seen: Arc<Mutex<HashMap<String, Vec<Publish>>>>,
    subacks: Arc<AtomicUsize>,
}

impl Reader {
    async fn start(addr: SocketAddr) -> Reader {
        let id = format!("outflow-test-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        let mut opts = MqttOptions::new(id, addr.ip().to_string(), addr.port());
        // Case 5 sends 5 MiB: raise the client's 10 KiB default for incoming packets.
        opts.set_max_packet_size(Some(64 * 1024 * 1024));
        let (client, mut eventloop) = AsyncClient::new(opts, 16);
        let seen: Arc<Mutex<HashMap<String, Vec<Publish>>>> = Arc::default();
        let subacks = Arc::new(AtomicUsize::new(0));
        let (seen2, subacks2) = (Arc::clone(&seen), Arc::clone(&subacks));
        tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let topic = String::from_utf8_lossy(&p.topic).to_string();
                        seen2.lock().unwrap().entry(topic).or_default().push(p);
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        subacks2.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(_) => {}
                    Err(_) => return,
                }
            }
        });
        Reader { client, seen, subacks }
    }

    /// Subscribes at QoS 2 and returns once the broker acknowledged the subscription.
    async fn subscribe(&self, topic: &str) {
        let before = self.subacks.load(Ordering::SeqCst);
        self.client.subscribe(topic.to_string(), QoS::ExactlyOnce).await.expect("subscribe");
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.subacks.load(Ordering::SeqCst) == before {
            assert!(Instant::now() < deadline, "no SUBACK for {topic}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn wait_for(&self, topic: &str, expected: usize) -> Vec<Publish> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let got = self.seen.lock().unwrap().get(topic).cloned().unwrap_or_default();
            if got.len() >= expected || Instant::now() > deadline {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn user_property(p: &Publish, name: &str) -> Option<String> {
    p.properties.as_ref()?.user_properties.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
}

struct MqttPeer {
    addr: SocketAddr,
    reader: Reader,
}

impl MqttPeer {
    async fn connect() -> Option<MqttPeer> {
        let url = conformance::peers::require(
            "Mosquitto",
            "OUTFLOW_TEST_MQTT_URL",
            "mqtt://127.0.0.1:1883",
        )?;
        let addr = conformance::peers::socket_addr(&url).expect("MQTT URL has host:port");
        Some(MqttPeer { addr, reader: Reader::start(addr).await })
    }
}

#[async_trait]
impl Peer for MqttPeer {
    fn kind(&self) -> &'static str {
        "mqtt"
    }

    fn upstream(&self) -> SocketAddr {
        self.addr
    }

    fn spec(&self, addr: SocketAddr, name: &str) -> Value {
        json!({"type": "mqtt", "url": format!("mqtt://{addr}"), "topic": name, "qos": 1})
    }

    async fn prepare(&self, location: &str) {
        self.reader.subscribe(location).await;
    }

    async fn read_back(&self, location: &str, expected: usize) -> Vec<Arrival> {
        self.reader
            .wait_for(location, expected)
            .await
            .into_iter()
            .map(|p| Arrival {
                delivery_id: user_property(&p, "outflow-delivery-id"),
                body: p.payload.to_vec(),
            })
            .collect()
    }

    fn dedupe(&self) -> Dedupe {
        Dedupe::CarriesId
    }

    fn permanent_failure(&self, addr: SocketAddr, name: &str) -> (Value, &'static str) {
        // The Mosquitto here allows anonymous clients, so credentials cannot be refused; a
        // topic that renders with a wildcard can never be published to.
        (
            json!({"type": "mqtt", "url": format!("mqtt://{addr}"), "topic": format!("{name}/+")}),
            "wildcard",
        )
    }

    fn required_fields(&self) -> &'static [&'static str] {
        &["url", "topic"]
    }
}

conformance_suite!(MqttPeer::connect().await);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_qos_level_is_delivered_and_acknowledged() {
    let Some(peer) = MqttPeer::connect().await else { return };
    for qos in [0, 1, 2] {
        let topic = format!("{}/qos{qos}", unique_name("mqtt"));
        peer.reader.subscribe(&topic).await;
        let dest = build(
            &json!({"type": "mqtt", "url": format!("mqtt://{}", peer.addr), "topic": topic, "qos": qos}),
        );
        for i in 0..3 {
            deliver(dest.as_ref(), &job(TASK), &Output::Text(format!("m{i}")), &new_delivery_id())
                .await
                .unwrap_or_else(|e| panic!("qos {qos}: {e:?}"));
        }
        let got = peer.reader.wait_for(&topic, 3).await;
        let bodies: Vec<Vec<u8>> = got.iter().map(|p| p.payload.to_vec()).collect();
        assert_eq!(bodies, [b"m0".to_vec(), b"m1".to_vec(), b"m2".to_vec()], "qos {qos}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retained_message_reaches_a_late_subscriber() {
    let Some(peer) = MqttPeer::connect().await else { return };
    let topic = format!("{}/retained", unique_name("mqtt"));
    let dest = build(&json!({
        "type": "mqtt", "url": format!("mqtt://{}", peer.addr), "topic": topic, "qos": 1, "retain": true
    }));
    let id = new_delivery_id();
    deliver(dest.as_ref(), &job(TASK), &Output::Text("kept".into()), &id).await.unwrap();
    // Subscribed only after the delivery: only a retained message can reach it.
    let late = Reader::start(peer.addr).await;
    late.subscribe(&topic).await;
    let got = late.wait_for(&topic, 1).await;
    assert_eq!(got.len(), 1, "the late subscriber gets the retained message");
    assert_eq!(&got[0].payload[..], b"kept");
    assert!(got[0].retain, "delivered as retained");
    assert_eq!(user_property(&got[0], "outflow-delivery-id"), Some(id));
    // Clear it: an empty retained message removes the topic's retained message.
    let clear = build(&json!({
        "type": "mqtt", "url": format!("mqtt://{}", peer.addr), "topic": topic, "retain": true
    }));
    deliver(clear.as_ref(), &job(TASK), &Output::Text(String::new()), &new_delivery_id())
        .await
        .unwrap();

    let not_retained = format!("{}/plain", unique_name("mqtt"));
    let plain = build(
        &json!({"type": "mqtt", "url": format!("mqtt://{}", peer.addr), "topic": not_retained}),
    );
    deliver(plain.as_ref(), &job(TASK), &Output::Text("gone".into()), &new_delivery_id())
        .await
        .unwrap();
    let later = Reader::start(peer.addr).await;
    later.subscribe(&not_retained).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(later.wait_for(&not_retained, 0).await.is_empty(), "without retain nothing is kept");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_properties_carry_ids_and_templates() {
    let Some(peer) = MqttPeer::connect().await else { return };
    let topic = format!("{}/props", unique_name("mqtt"));
    peer.reader.subscribe(&topic).await;
    let dest = build(&json!({
        "type": "mqtt", "url": format!("mqtt://{}", peer.addr), "topic": topic, "qos": 2,
        "format": "json_compact", "headers": {"task": "{{task_name}}"},
    }));
    let job = job(TASK);
    let id = new_delivery_id();
    deliver(dest.as_ref(), &job, &Output::Json(json!({"n": 1})), &id).await.unwrap();
    let got = peer.reader.wait_for(&topic, 1).await;
    assert_eq!(got.len(), 1);
    let p = &got[0];
    assert_eq!(&p.payload[..], br#"{"n":1}"#);
    assert_eq!(user_property(p, "outflow-delivery-id"), Some(id));
    assert_eq!(user_property(p, "outflow-job-uuid"), Some(job.job_uuid.to_string()));
    assert_eq!(user_property(p, "task").as_deref(), Some(TASK));
    assert_eq!(p.properties.as_ref().unwrap().content_type.as_deref(), Some("application/json"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_broker_is_retryable_and_bounded() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let dest = build(
        &json!({"type": "mqtt", "url": format!("mqtt://{addr}"), "topic": "t", "timeout_seconds": 2}),
    );
    let started = Instant::now();
    let err = deliver(dest.as_ref(), &job(TASK), &Output::Text("x".into()), &new_delivery_id())
        .await
        .unwrap_err();
    assert_eq!(err.class, FailureClass::Retryable, "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(dest.check().await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fixed_client_id_survives_health_checks() {
    let Some(peer) = MqttPeer::connect().await else { return };
    let topic = format!("{}/fixed", unique_name("mqtt"));
    peer.reader.subscribe(&topic).await;
    let dest = build(&json!({
        "type": "mqtt", "url": format!("mqtt://{}", peer.addr), "topic": topic,
        "client_id": unique_name("outflow"), "qos": 1,
    }));
    for i in 0..3 {
        deliver(dest.as_ref(), &job(TASK), &Output::Text(format!("m{i}")), &new_delivery_id())
            .await
            .unwrap_or_else(|e| panic!("delivery {i}: {e:?}"));
        // The check connects with its own id, so the broker does not take the delivery
        // session over.
        dest.check().await.expect("check");
    }
    assert_eq!(peer.reader.wait_for(&topic, 3).await.len(), 3);
}
