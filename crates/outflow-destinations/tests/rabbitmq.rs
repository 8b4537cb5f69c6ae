//! The RabbitMQ destination against a real RabbitMQ on 127.0.0.1 (`OUTFLOW_TEST_AMQP_URL`):
//! the conformance suite, then exchange types, queue declare + bind, message properties,
//! unroutable messages and refused credentials. Messages are read back with an independent
//! lapin connection (`basic_get` from a queue).

mod conformance;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use conformance::{Arrival, Dedupe, Peer, TASK, build, deliver, job, unique_name};
use lapin::options::{
    BasicGetOptions, ExchangeDeleteOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use outflow_core::attempt::FailureClass;
use outflow_core::output::Output;
use outflow_destinations::runner::new_delivery_id;
use serde_json::{Value, json};

struct RabbitPeer {
    url: String,
    addr: SocketAddr,
    channel: Channel,
    _connection: Connection,
}

impl RabbitPeer {
    async fn connect() -> Option<RabbitPeer> {
        let url = conformance::peers::require(
            "RabbitMQ",
            "OUTFLOW_TEST_AMQP_URL",
            "amqp://guest:guest@127.0.0.1:5672/%2f",
        )?;
        let addr = conformance::peers::socket_addr(&url).expect("AMQP URL has host:port");
        let connection = Connection::connect(&url, ConnectionProperties::default())
            .await
            .expect("test client connects to RabbitMQ");
        let channel = connection.create_channel().await.expect("test channel");
        Some(RabbitPeer { url, addr, channel, _connection: connection })
    }

    /// `url` with its host:port replaced by `addr` (the suite's proxy).
    fn url_via(&self, addr: SocketAddr) -> String {
        let (scheme, rest) = self.url.split_once("://").expect("scheme");
        let (auth, tail) = rest.split_once('@').map_or(("", rest), |(a, t)| (a, t));
        let path = tail.find('/').map_or("", |i| &tail[i..]);
        let at = if auth.is_empty() { String::new() } else { format!("{auth}@") };
        format!("{scheme}://{at}{addr}{path}")
    }

    async fn declare(&self, queue: &str) {
        self.channel
            .queue_declare(
                ShortString::from(queue),
                QueueDeclareOptions { durable: true, ..Default::default() },
                FieldTable::default(),
            )
            .await
            .expect("test queue declared");
    }

    /// Every message in `queue` (with their properties), waiting until `expected` arrived
    /// or five seconds passed; the queue is deleted afterwards.
    async fn drain(&self, queue: &str, expected: usize) -> Vec<(Vec<u8>, BasicProperties)> {
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut got = Vec::new();
        loop {
            match self
                .channel
                .basic_get(ShortString::from(queue), BasicGetOptions { no_ack: true })
                .await
            {
                Ok(Some(m)) => {
                    got.push((m.delivery.data, m.delivery.properties));
                    continue;
                }
                Ok(None) => {}
                Err(e) => panic!("basic_get from {queue}: {e}"),
            }
            if got.len() >= expected || Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let _ = self
            .channel
            .queue_delete(ShortString::from(queue), QueueDeleteOptions::default())
            .await;
        got
    }
}

#[async_trait]
impl Peer for RabbitPeer {
    fn kind(&self) -> &'static str {
        "rabbitmq"
    }

    fn upstream(&self) -> SocketAddr {
        self.addr
    }

    fn spec(&self, addr: SocketAddr, name: &str) -> Value {
        // Seed 003's shape: a queue_name, published through the default exchange.
        json!({"type": "rabbitmq", "url": self.url_via(addr), "queue_name": name})
    }

    async fn prepare(&self, location: &str) {
        self.declare(location).await;
    }

    async fn read_back(&self, location: &str, expected: usize) -> Vec<Arrival> {
        self.drain(location, expected)
            .await
            .into_iter()
            .map(|(body, props)| Arrival {
                body,
                delivery_id: props.message_id().as_ref().map(|m| m.as_str().to_string()),
            })
            .collect()
    }

    fn dedupe(&self) -> Dedupe {
        Dedupe::CarriesId
    }

    fn permanent_failure(&self, addr: SocketAddr, name: &str) -> (Value, &'static str) {
        let spec = json!({
            "type": "rabbitmq", "url": self.url_via(addr),
            "exchange": format!("{}_missing", name.replace("{{task_name}}", "x")),
            "routing_key": name,
        });
        (spec, "not found")
    }

    fn required_fields(&self) -> &'static [&'static str] {
        &["url"]
    }
}

conformance_suite!(RabbitPeer::connect().await);

fn text(s: &str) -> Output {
    Output::Text(s.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exchange_types_declare_and_bind_the_queue() {
    let Some(peer) = RabbitPeer::connect().await else { return };
    for kind in ["direct", "topic", "fanout", "headers"] {
        let base = unique_name("rmq");
        let exchange = format!("{base}_x");
        let dest = build(&json!({
            "type": "rabbitmq", "url": peer.url,
            "exchange": exchange, "exchange_type": kind, "declare_exchange": true,
            "routing_key": "jobs.{{task_name}}", "queue": format!("{base}_{{{{task_name}}}}"),
        }));
        dest.check().await.unwrap_or_else(|e| panic!("{kind}: check: {e}"));
        deliver(dest.as_ref(), &job(TASK), &text(kind), &new_delivery_id())
            .await
            .unwrap_or_else(|e| panic!("{kind}: {e:?}"));
        let got = peer.drain(&format!("{base}_{TASK}"), 1).await;
        assert_eq!(got.len(), 1, "{kind}: the declared, bound queue gets the message");
        assert_eq!(got[0].0, kind.as_bytes());
        let _ = peer
            .channel
            .exchange_delete(ShortString::from(exchange.as_str()), ExchangeDeleteOptions::default())
            .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_properties_carry_ids_type_and_headers() {
    let Some(peer) = RabbitPeer::connect().await else { return };
    let queue = unique_name("rmq");
    let dest = build(&json!({
        "type": "rabbitmq", "url": peer.url, "queue": queue, "format": "json_compact",
        "headers": {"x-task": "{{task_name}}", "x-static": "s"},
    }));
    let job = job(TASK);
    let id = new_delivery_id();
    let receipt = deliver(dest.as_ref(), &job, &Output::Json(json!({"a": 1})), &id).await.unwrap();
    assert!(receipt.target.contains(&queue), "{}", receipt.target);
    assert!(!receipt.target.contains("guest:guest"), "the password is masked: {}", receipt.target);
    let got = peer.drain(&queue, 1).await;
    assert_eq!(got.len(), 1);
    let (body, props) = &got[0];
    assert_eq!(body, br#"{"a":1}"#);
    assert_eq!(props.message_id().as_ref().unwrap().as_str(), id);
    assert_eq!(props.content_type().as_ref().unwrap().as_str(), "application/json");
    assert_eq!(*props.delivery_mode(), Some(2), "persistent by default");
    assert_eq!(props.app_id().as_ref().unwrap().as_str(), "outflow");
    let headers = props.headers().as_ref().expect("headers").inner();
    let header = |k: &str| match headers.get(k) {
        Some(AMQPValue::LongString(s)) => s.to_string(),
        other => panic!("header {k}: {other:?}"),
    };
    assert_eq!(header("x-task"), TASK);
    assert_eq!(header("x-static"), "s");
    assert_eq!(header("outflow-job-uuid"), job.job_uuid.to_string());

    let transient =
        build(&json!({"type": "rabbitmq", "url": peer.url, "queue": queue, "persistent": false}));
    deliver(transient.as_ref(), &job, &text("t"), &new_delivery_id()).await.unwrap();
    let got = peer.drain(&queue, 1).await;
    assert_eq!(*got[0].1.delivery_mode(), None, "persistent: false leaves delivery_mode unset");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unroutable_messages_fail_when_mandatory() {
    let Some(peer) = RabbitPeer::connect().await else { return };
    let key = unique_name("rmq_nowhere");
    let dest = build(
        &json!({"type": "rabbitmq", "url": peer.url, "exchange": "amq.direct", "routing_key": key}),
    );
    let err = deliver(dest.as_ref(), &job(TASK), &text("x"), &new_delivery_id()).await.unwrap_err();
    assert_eq!(err.class, FailureClass::Permanent, "{err:?}");
    assert!(err.message.contains("unroutable"), "{}", err.message);
    // The same channel keeps working afterwards.
    let queue = unique_name("rmq");
    peer.declare(&queue).await;
    let ok = build(&json!({"type": "rabbitmq", "url": peer.url, "queue": queue}));
    deliver(ok.as_ref(), &job(TASK), &text("y"), &new_delivery_id()).await.unwrap();
    assert_eq!(peer.drain(&queue, 1).await.len(), 1);
    let lax = build(&json!({
        "type": "rabbitmq", "url": peer.url, "exchange": "amq.direct", "routing_key": key, "mandatory": false
    }));
    deliver(lax.as_ref(), &job(TASK), &text("x"), &new_delivery_id())
        .await
        .expect("mandatory: false lets the broker drop an unroutable message");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_credentials_are_permanent_and_masked() {
    let Some(peer) = RabbitPeer::connect().await else { return };
    let url = peer.url.replacen("guest:guest", "guest:wrong-secret", 1);
    let dest = build(&json!({"type": "rabbitmq", "url": url, "queue": unique_name("rmq")}));
    assert!(!dest.describe().contains("wrong-secret"), "{}", dest.describe());
    let err = deliver(dest.as_ref(), &job(TASK), &text("x"), &new_delivery_id()).await.unwrap_err();
    assert_eq!(err.class, FailureClass::Permanent, "{err:?}");
    assert!(err.message.to_lowercase().contains("access refused"), "{}", err.message);
    assert!(!err.message.contains("wrong-secret"), "{}", err.message);
    let check = dest.check().await.unwrap_err();
    assert_eq!(check.class, FailureClass::Permanent, "{check:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_rendered_queue_name_is_permanent() {
    let Some(peer) = RabbitPeer::connect().await else { return };
    let dest = build(&json!({"type": "rabbitmq", "url": peer.url, "queue": "amq.{{task_name}}"}));
    let err = deliver(dest.as_ref(), &job(TASK), &text("x"), &new_delivery_id()).await.unwrap_err();
    assert_eq!(err.class, FailureClass::Permanent);
    assert!(err.message.contains("'amq.conf'"), "{}", err.message);
}
