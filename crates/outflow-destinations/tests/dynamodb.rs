//! The DynamoDB destination against a real DynamoDB-API server on 127.0.0.1 (moto in
//! development and CI), read back with raw JSON-API requests (`Scan`), not through the
//! destination. Tables are created by the test with its own `CreateTable` request.

mod conformance;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use conformance::{Arrival, Dedupe, Peer, TASK, build, deliver, job, names};
use outflow_core::attempt::FailureClass;
use outflow_core::context::RenderContext;
use outflow_core::output::Output;
use outflow_destinations::Attempt;
use outflow_destinations::runner::new_delivery_id;
use serde_json::{Value, json};

struct DynamoPeer {
    url: String,
    addr: SocketAddr,
    http: reqwest::Client,
}

impl DynamoPeer {
    async fn connect() -> Option<DynamoPeer> {
        let url = conformance::peers::require(
            "DynamoDB",
            "OUTFLOW_TEST_DYNAMODB_URL",
            "http://127.0.0.1:5000",
        )?;
        let addr = conformance::peers::socket_addr(&url).expect("the DynamoDB URL names host:port");
        Some(DynamoPeer { url, addr, http: reqwest::Client::new() })
    }

    /// One JSON-API call with a well-formed (unverified) SigV4 header: moto reads the
    /// region and account from it and accepts any signature.
    async fn call(&self, operation: &str, body: Value) -> (u16, Value) {
        let response = self
            .http
            .post(&self.url)
            .header("content-type", "application/x-amz-json-1.0")
            .header("x-amz-target", format!("DynamoDB_20120810.{operation}"))
            .header(
                "authorization",
                "AWS4-HMAC-SHA256 Credential=AK/20250101/us-east-1/dynamodb/aws4_request, \
                 SignedHeaders=host, Signature=00",
            )
            .json(&body)
            .send()
            .await
            .expect("the DynamoDB peer answers");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn create_table(&self, name: &str, sort_key: Option<&str>) {
        let mut schema = vec![json!({"AttributeName": "delivery_id", "KeyType": "HASH"})];
        let mut attributes = vec![json!({"AttributeName": "delivery_id", "AttributeType": "S"})];
        if let Some(sk) = sort_key {
            schema.push(json!({"AttributeName": sk, "KeyType": "RANGE"}));
            attributes.push(json!({"AttributeName": sk, "AttributeType": "S"}));
        }
        let (status, body) = self
            .call(
                "CreateTable",
                json!({"TableName": name, "KeySchema": schema, "AttributeDefinitions": attributes,
                       "BillingMode": "PAY_PER_REQUEST"}),
            )
            .await;
        assert_eq!(status, 200, "CreateTable {name}: {body}");
    }

    /// Every item of `table` (all pages); none when the table does not exist.
    async fn scan(&self, table: &str) -> Vec<Value> {
        let mut items = Vec::new();
        let mut start: Option<Value> = None;
        loop {
            let mut request = json!({"TableName": table});
            if let Some(key) = start.take() {
                request["ExclusiveStartKey"] = key;
            }
            let (status, body) = self.call("Scan", request).await;
            if status != 200 {
                return items;
            }
            items.extend(body["Items"].as_array().cloned().unwrap_or_default());
            match body.get("LastEvaluatedKey") {
                Some(key) if !key.is_null() => start = Some(key.clone()),
                _ => return items,
            }
        }
    }
}

fn body_of(item: &Value) -> Vec<u8> {
    item["data"]["S"].as_str().unwrap_or_default().as_bytes().to_vec()
}

#[async_trait]
impl Peer for DynamoPeer {
    fn kind(&self) -> &'static str {
        "dynamodb"
    }

    fn upstream(&self) -> SocketAddr {
        self.addr
    }

    fn spec(&self, addr: SocketAddr, name: &str) -> Value {
        json!({
            "type": "dynamodb",
            "table": name,
            "region": "us-east-1",
            "endpoint": format!("http://{addr}"),
            "access_key_id": "AK",
            "secret_access_key": "SK",
            "timeout_seconds": 5,
        })
    }

    async fn prepare(&self, location: &str) {
        self.create_table(location, None).await;
    }

    async fn read_back(&self, location: &str, expected: usize) -> Vec<Arrival> {
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            let mut items = self.scan(location).await;
            if items.len() >= expected || Instant::now() > deadline {
                items.sort_by(|a, b| {
                    a["completed_at"]["S"].as_str().cmp(&b["completed_at"]["S"].as_str())
                });
                return items
                    .iter()
                    .map(|item| Arrival {
                        body: body_of(item),
                        delivery_id: item["delivery_id"]["S"].as_str().map(str::to_string),
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
        // The table is never created.
        (self.spec(addr, name), "does not exist")
    }

    fn required_fields(&self) -> &'static [&'static str] {
        &["table", "region"]
    }

    /// DynamoDB items are limited to 400 KB: the large case stays under it (an over-limit
    /// item is a permanent error, tested below).
    fn large_output_bytes(&self) -> usize {
        300 * 1024
    }
}

conformance_suite!(DynamoPeer::connect().await);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redelivery_fails_the_condition_and_keeps_the_first_item() {
    let Some(peer) = DynamoPeer::connect().await else { return };
    let (template, table) = names("dynamodb");
    peer.create_table(&table, None).await;
    let dest = build(&peer.spec(peer.addr, &template));
    let id = new_delivery_id();
    let job = job(TASK);
    deliver(dest.as_ref(), &job, &Output::Json(json!({"v": 1})), &id).await.unwrap();
    let again = deliver(dest.as_ref(), &job, &Output::Json(json!({"v": 2})), &id).await.unwrap();
    assert!(
        again.response_excerpt.as_deref().is_some_and(|e| e.contains("ConditionalCheckFailed")),
        "{again:?}"
    );
    let items = peer.scan(&table).await;
    assert_eq!(items.len(), 1);
    assert_eq!(body_of(&items[0]), br#"{"v":1}"#);
    let item = &items[0];
    assert_eq!(item["job_uuid"]["S"], json!(job.job_uuid.to_string()));
    assert_eq!(item["task_name"]["S"], json!(TASK));
    assert_eq!(item["status"]["S"], json!("completed"));
    assert_eq!(item["output_format"]["S"], json!("json"));
    assert!(item["completed_at"]["S"].as_str().unwrap().ends_with('Z'));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_item_over_400_kb_is_refused_permanently() {
    let Some(peer) = DynamoPeer::connect().await else { return };
    let (template, table) = names("dynamodb");
    peer.create_table(&table, None).await;
    let dest = build(&peer.spec(peer.addr, &template));
    let big = Output::Text("x".repeat(500 * 1024));
    let err = deliver(dest.as_ref(), &job(TASK), &big, &new_delivery_id()).await.unwrap_err();
    assert_eq!(err.class, FailureClass::Permanent);
    assert!(err.message.contains("400 KB item size limit"), "{}", err.message);
    assert!(peer.scan(&table).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_reports_each_item() {
    let Some(peer) = DynamoPeer::connect().await else { return };
    let (template, table) = names("dynamodb");
    peer.create_table(&table, None).await;
    let dest = build(&peer.spec(peer.addr, &template));
    let good = job(TASK);
    let bad = job("not valid");
    let outputs = [
        Output::Json(json!({"i": 1})),
        Output::Text("y".repeat(500 * 1024)),
        Output::Json(json!({"i": 3})),
        Output::Json(json!({"i": 4})),
    ];
    let ids: Vec<String> = (0..4).map(|_| new_delivery_id()).collect();
    let attempts = [
        Attempt { render: RenderContext::new(&good, &outputs[0], &ids[0]), number: 1 },
        Attempt { render: RenderContext::new(&good, &outputs[1], &ids[1]), number: 1 },
        Attempt { render: RenderContext::new(&bad, &outputs[2], &ids[2]), number: 1 },
        // The same delivery id twice in one batch: written once, both succeed.
        Attempt { render: RenderContext::new(&good, &outputs[0], &ids[0]), number: 1 },
    ];
    let results = dest.deliver_batch(&attempts).await;
    assert!(results[0].is_ok(), "{:?}", results[0]);
    assert!(results[1].as_ref().unwrap_err().message.contains("400 KB"), "{:?}", results[1]);
    assert!(results[2].as_ref().unwrap_err().message.contains("table name"), "{:?}", results[2]);
    assert!(results[3].is_ok(), "{:?}", results[3]);
    let items = peer.scan(&table).await;
    assert_eq!(items.len(), 1);
    assert_eq!(body_of(&items[0]), br#"{"i":1}"#);

    // A batch into a table that does not exist fails every record, permanently.
    let (missing, _) = names("dynamodb");
    let dest = build(&peer.spec(peer.addr, &missing));
    let results = dest.deliver_batch(&attempts[..1]).await;
    let err = results[0].as_ref().unwrap_err();
    assert_eq!(err.class, FailureClass::Permanent);
    assert!(err.message.contains("does not exist"), "{}", err.message);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sort_key_and_map_data_follow_the_config() {
    let Some(peer) = DynamoPeer::connect().await else { return };
    let (template, table) = names("dynamodb");
    peer.create_table(&table, Some("task")).await;
    let mut spec = peer.spec(peer.addr, &template);
    spec["sort_key"] = json!("task");
    spec["sort_key_value"] = json!("{{task_name}}");
    spec["data_type"] = json!("map");
    let dest = build(&spec);
    dest.check().await.expect("ListTables answers");
    let id = new_delivery_id();
    let output = Output::Json(json!({"n": 1, "tags": ["a"], "ok": true}));
    deliver(dest.as_ref(), &job(TASK), &output, &id).await.unwrap();
    deliver(dest.as_ref(), &job(TASK), &output, &id).await.expect("the redelivery dedupes");
    let items = peer.scan(&table).await;
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["task"]["S"], json!(TASK));
    assert_eq!(
        items[0]["data"]["M"],
        json!({"n": {"N": "1"}, "tags": {"L": [{"S": "a"}]}, "ok": {"BOOL": true}})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_check_describes_a_static_table() {
    let Some(peer) = DynamoPeer::connect().await else { return };
    let (_, table) = names("dynamodb");
    let dest = build(&peer.spec(peer.addr, &table));
    let err = dest.check().await.expect_err("the table does not exist yet");
    assert_eq!(err.class, FailureClass::Permanent);
    assert!(err.message.contains("does not exist"), "{}", err.message);
    peer.create_table(&table, None).await;
    let report = dest.check().await.expect("DescribeTable");
    assert!(report.target.contains(&table));
}
