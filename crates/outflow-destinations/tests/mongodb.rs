//! The MongoDB destination against a real MongoDB-wire server on 127.0.0.1 (nx-27017 in
//! development and CI; any MongoDB works), read back with the driver as an independent
//! client.

mod conformance;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use conformance::{Arrival, Dedupe, Peer, TASK, build, deliver, job, names};
use futures::TryStreamExt as _;
use mongodb::bson::{Bson, Document, doc};
use outflow_core::attempt::FailureClass;
use outflow_core::context::RenderContext;
use outflow_core::output::Output;
use outflow_destinations::Attempt;
use outflow_destinations::runner::new_delivery_id;
use serde_json::{Value, json};

const DATABASE: &str = "outflow_test";

struct MongoPeer {
    addr: SocketAddr,
    client: mongodb::Client,
}

impl MongoPeer {
    async fn connect() -> Option<MongoPeer> {
        let url = conformance::peers::require(
            "MongoDB",
            "OUTFLOW_TEST_MONGODB_URL",
            "mongodb://127.0.0.1:27017",
        )?;
        let addr = conformance::peers::socket_addr(&url).expect("the MongoDB URL names host:port");
        let client = mongodb::Client::with_uri_str(&url).await.expect("a valid MongoDB URL");
        Some(MongoPeer { addr, client })
    }

    async fn documents(&self, collection: &str) -> Vec<Document> {
        let coll = self.client.database(DATABASE).collection::<Document>(collection);
        coll.find(doc! {}).await.expect("find").try_collect().await.expect("cursor")
    }
}

/// The output a stored document carries, as the suite compares it.
fn body_of(doc: &Document) -> Vec<u8> {
    match (doc.get_str("output_format"), doc.get("data")) {
        (Ok("text"), Some(Bson::String(text))) => text.clone().into_bytes(),
        (_, Some(data)) => data.clone().into_relaxed_extjson().to_string().into_bytes(),
        _ => Vec::new(),
    }
}

#[async_trait]
impl Peer for MongoPeer {
    fn kind(&self) -> &'static str {
        "mongodb"
    }

    fn upstream(&self) -> SocketAddr {
        self.addr
    }

    fn spec(&self, addr: SocketAddr, name: &str) -> Value {
        json!({
            "type": "mongodb",
            "uri": format!("mongodb://{addr}/?directConnection=true"),
            "database": DATABASE,
            "collection": name,
            "timeout_seconds": 5,
        })
    }

    async fn read_back(&self, location: &str, expected: usize) -> Vec<Arrival> {
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            let docs = self.documents(location).await;
            if docs.len() >= expected || Instant::now() > deadline {
                return docs
                    .iter()
                    .map(|d| Arrival {
                        body: body_of(d),
                        delivery_id: d.get_str("_id").ok().map(str::to_string),
                    })
                    .collect();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn dedupe(&self) -> Dedupe {
        Dedupe::Unique
    }

    fn permanent_failure(&self, addr: SocketAddr, name: &str) -> (Value, &'static str) {
        // A collection name that renders to an operator-looking name is refused, permanently.
        (self.spec(addr, &format!("{name}$cmd")), "contains '$'")
    }

    fn required_fields(&self) -> &'static [&'static str] {
        &["uri", "database", "collection"]
    }
}

conformance_suite!(MongoPeer::connect().await);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redelivery_is_a_duplicate_key_and_keeps_the_first_document() {
    let Some(peer) = MongoPeer::connect().await else { return };
    let (template, location) = names("mongodb");
    let dest = build(&peer.spec(peer.addr, &template));
    let id = new_delivery_id();
    let job = job(TASK);
    let first = deliver(dest.as_ref(), &job, &Output::Json(json!({"v": 1})), &id).await.unwrap();
    assert_eq!(first.response_excerpt, None);
    let second = deliver(dest.as_ref(), &job, &Output::Json(json!({"v": 2})), &id).await.unwrap();
    assert_eq!(
        second.response_excerpt.as_deref(),
        Some(format!("duplicate _id {id}: already stored").as_str())
    );
    let docs = peer.documents(&location).await;
    assert_eq!(docs.len(), 1);
    assert_eq!(body_of(&docs[0]), br#"{"v":1}"#);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_document_has_the_documented_layout() {
    let Some(peer) = MongoPeer::connect().await else { return };
    let (template, location) = names("mongodb");
    let dest = build(&peer.spec(peer.addr, &template));
    let mut job = job(TASK);
    job.job_id = Some(42);
    job.status = "failed".into();
    let id = new_delivery_id();
    deliver(dest.as_ref(), &job, &Output::Text("plain text\nline 2".into()), &id).await.unwrap();
    let docs = peer.documents(&location).await;
    assert_eq!(docs.len(), 1);
    let d = &docs[0];
    assert_eq!(d.get_str("_id").unwrap(), id);
    assert_eq!(d.get_str("job_uuid").unwrap(), job.job_uuid.to_string());
    // Stored as a 64-bit integer; nx-27017 hands small integers back as 32-bit ones.
    assert!(matches!(d.get("job_id"), Some(Bson::Int64(42) | Bson::Int32(42))), "{d:?}");
    assert_eq!(d.get_str("task_name").unwrap(), TASK);
    assert_eq!(d.get_str("status").unwrap(), "failed");
    assert_eq!(d.get_str("output_format").unwrap(), "text");
    assert_eq!(d.get_str("data").unwrap(), "plain text\nline 2");
    let at = d.get_datetime("completed_at").expect("completed_at is a BSON date");
    assert_eq!(at.timestamp_millis(), job.completed_at.timestamp_millis());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_reports_each_document() {
    let Some(peer) = MongoPeer::connect().await else { return };
    let (template, location) = names("mongodb");
    let dest = build(&peer.spec(peer.addr, &template));
    let good = job(TASK);
    let bad = job("not valid");
    let existing = new_delivery_id();
    deliver(dest.as_ref(), &good, &Output::Json(json!({"i": 0})), &existing).await.unwrap();

    let outputs: Vec<Output> = (1..=3).map(|i| Output::Json(json!({"i": i}))).collect();
    let fresh = new_delivery_id();
    let other = new_delivery_id();
    let attempts = [
        Attempt { render: RenderContext::new(&good, &outputs[0], &fresh), number: 1 },
        Attempt { render: RenderContext::new(&good, &outputs[1], &existing), number: 1 },
        Attempt { render: RenderContext::new(&bad, &outputs[2], &other), number: 1 },
    ];
    let results = dest.deliver_batch(&attempts).await;
    assert!(results[0].is_ok(), "{:?}", results[0]);
    assert!(results[1].is_ok(), "a duplicate key in a batch is a success: {:?}", results[1]);
    let err = results[2].as_ref().expect_err("a bad rendered name fails its record");
    assert_eq!(err.class, FailureClass::Permanent);
    assert!(err.message.contains("collection name"), "{}", err.message);
    let docs = peer.documents(&location).await;
    let mut seen: Vec<String> =
        docs.iter().map(|d| String::from_utf8(body_of(d)).unwrap()).collect();
    seen.sort();
    assert_eq!(seen, [r#"{"i":0}"#, r#"{"i":1}"#], "the duplicate kept the first document");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_check_pings_and_an_unreachable_server_is_retryable() {
    let Some(peer) = MongoPeer::connect().await else { return };
    let (template, _) = names("mongodb");
    let dest = build(&peer.spec(peer.addr, &template));
    let report = dest.check().await.expect("ping");
    assert!(report.target.ends_with(DATABASE), "{}", report.target);

    // A port nothing listens on: the bind is released at once.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let mut spec = peer.spec(closed, &template);
    spec["timeout_seconds"] = json!(1);
    let dest = build(&spec);
    let started = Instant::now();
    let err = deliver(dest.as_ref(), &job(TASK), &Output::Json(json!({})), &new_delivery_id())
        .await
        .expect_err("nothing listens there");
    assert_eq!(err.class, FailureClass::Retryable, "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(5), "bounded by timeout_seconds");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_credentials_are_permanent_and_masked() {
    let Some(peer) = MongoPeer::connect().await else { return };
    let (template, _) = names("mongodb");
    let mut spec = peer.spec(peer.addr, &template);
    // nx-27017 has no users: the SCRAM handshake fails, as a wrong password does on MongoDB.
    spec["uri"] = json!(format!(
        "mongodb://nobody:wrong-pass@{}/?authSource=admin&directConnection=true",
        peer.addr
    ));
    let dest = build(&spec);
    let err = deliver(dest.as_ref(), &job(TASK), &Output::Json(json!({})), &new_delivery_id())
        .await
        .expect_err("the credentials are refused");
    assert_eq!(err.class, FailureClass::Permanent, "{err:?}");
    assert!(err.message.contains("authentication failed"), "{}", err.message);
    assert!(!err.message.contains("wrong-pass"), "{}", err.message);
}
