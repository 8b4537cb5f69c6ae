//! The elasticsearch destination against a real OpenSearch/Elasticsearch-compatible server on
//! 127.0.0.1 (`OUTFLOW_TEST_ELASTICSEARCH_URL`, osmem-server in CI): the conformance suite,
//! index rotation and date patterns, per-item `_bulk` results, failover and the SSRF guard.
//! Request shapes the server cannot show (the `pipeline` parameter, auth headers, 429
//! handling) are checked against a local HTTP receiver.

mod conformance;
#[path = "common/receiver.rs"]
mod receiver;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use base64::Engine as _;
use chrono::TimeZone as _;
use conformance::{Arrival, Dedupe, Peer, TASK, build, deliver, job, unique_name};
use outflow_core::attempt::FailureClass;
use outflow_core::config::DestinationSpec;
use outflow_core::context::RenderContext;
use outflow_core::output::Output;
use outflow_destinations::runner::new_delivery_id;
use outflow_destinations::{Attempt, Registry};
use receiver::{Receiver, Reply};
use serde_json::{Value, json};

fn es_url() -> Option<String> {
    conformance::peers::require(
        "Elasticsearch/OpenSearch",
        "OUTFLOW_TEST_ELASTICSEARCH_URL",
        "http://127.0.0.1:9200",
    )
}

/// Reads an index back with an independent client: `_refresh`, then `_search`. Returns
/// `(_id, _source)` pairs.
async fn search(url: &str, index: &str) -> Vec<(String, Value)> {
    let http = reqwest::Client::new();
    let _ = http.post(format!("{url}/{index}/_refresh")).send().await;
    let response =
        http.get(format!("{url}/{index}/_search?size=10000")).send().await.expect("search request");
    if !response.status().is_success() {
        return Vec::new();
    }
    let v: Value = response.json().await.expect("search answer is JSON");
    v["hits"]["hits"]
        .as_array()
        .map(|hits| {
            hits.iter()
                .map(|h| (h["_id"].as_str().unwrap_or_default().to_string(), h["_source"].clone()))
                .collect()
        })
        .unwrap_or_default()
}

/// GET `/{index}/_doc/{id}`'s `_source`, if found.
async fn get_doc(url: &str, index: &str, id: &str) -> Option<Value> {
    let v: Value =
        reqwest::get(format!("{url}/{index}/_doc/{id}")).await.ok()?.json().await.ok()?;
    (v["found"] == json!(true)).then(|| v["_source"].clone())
}

struct EsPeer {
    url: String,
    addr: SocketAddr,
}

impl EsPeer {
    fn connect() -> Option<EsPeer> {
        let url = es_url()?.trim_end_matches('/').to_string();
        let addr = conformance::peers::socket_addr(&url).expect("elasticsearch address");
        Some(EsPeer { url, addr })
    }
}

#[async_trait]
impl Peer for EsPeer {
    fn kind(&self) -> &'static str {
        "elasticsearch"
    }

    fn upstream(&self) -> SocketAddr {
        self.addr
    }

    fn spec(&self, addr: SocketAddr, name: &str) -> Value {
        // osmem indexes on one lock and analyses text fields: on a loaded 2-core machine a
        // small request can wait seconds behind the 5 MiB document of case 5.
        json!({"type": "elasticsearch", "addresses": [format!("http://{addr}")], "index": name,
            "timeout_seconds": 30})
    }

    async fn read_back(&self, location: &str, expected: usize) -> Vec<Arrival> {
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            let found: Vec<Arrival> = search(&self.url, location)
                .await
                .into_iter()
                .map(|(id, mut source)| {
                    let obj = source.as_object_mut().expect("a document is an object");
                    let job = obj.shift_remove("outflow").expect("job fields under 'outflow'");
                    assert_eq!(job["delivery_id"], json!(id), "_id is the delivery id");
                    assert!(obj.shift_remove("@timestamp").is_some(), "documents have @timestamp");
                    let body = match (obj.len(), obj.get("message")) {
                        (1, Some(Value::String(text))) => text.as_bytes().to_vec(),
                        _ => serde_json::to_vec(&source).unwrap(),
                    };
                    Arrival { body, delivery_id: Some(id) }
                })
                .collect();
            if found.len() >= expected || Instant::now() > deadline {
                return found;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn dedupe(&self) -> Dedupe {
        Dedupe::Unique
    }

    fn permanent_failure(&self, addr: SocketAddr, name: &str) -> (Value, &'static str) {
        let mut spec = self.spec(addr, name);
        spec["pipeline"] = json!("of_missing_pipeline");
        (spec, "does not exist")
    }

    fn required_fields(&self) -> &'static [&'static str] {
        &["addresses", "index"]
    }
}

conformance_suite!(EsPeer::connect());

fn spec(addresses: Value, extra: Value) -> Value {
    let mut spec = json!({"type": "elasticsearch", "addresses": addresses, "timeout_seconds": 30});
    spec.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    spec
}

/// A job that completed on 2025-01-15 (ISO week 3).
fn dated_job() -> outflow_core::context::JobContext {
    let mut job = job(TASK);
    job.completed_at = chrono::Utc.with_ymd_and_hms(2025, 1, 15, 10, 30, 0).unwrap();
    job
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn index_rotation_and_custom_patterns_use_the_job_completion_date() {
    let Some(peer) = EsPeer::connect() else { return };
    let base = unique_name("elasticsearch");
    let cases = [
        (
            json!({"index": format!("{base}_d"), "index_rotation": "daily"}),
            format!("{base}_d-2025.01.15"),
        ),
        (
            json!({"index": format!("{base}_w"), "index_rotation": "weekly"}),
            format!("{base}_w-2025.03"),
        ),
        (
            json!({"index": format!("{base}_m"), "index_rotation": "monthly"}),
            format!("{base}_m-2025.01"),
        ),
        (
            json!({"index": format!("{base}_y"), "index_rotation": "yearly"}),
            format!("{base}_y-2025"),
        ),
        (
            json!({"index": format!("{base}_{{{{task_name}}}}-%{{+YYYY.MM.dd}}")}),
            format!("{base}_{TASK}-2025.01.15"),
        ),
    ];
    let job = dated_job();
    for (extra, expected_index) in cases {
        let dest = build(&spec(json!([peer.url]), extra));
        let id = new_delivery_id();
        let receipt = deliver(dest.as_ref(), &job, &Output::Json(json!({"k": 1})), &id)
            .await
            .unwrap_or_else(|e| panic!("{expected_index}: {e:?}"));
        assert!(receipt.target.contains(&format!("/{expected_index}/_doc/{id}")), "{receipt:?}");
        let doc = get_doc(&peer.url, &expected_index, &id).await;
        let doc = doc.unwrap_or_else(|| panic!("no document {id} in {expected_index}"));
        assert_eq!(doc["@timestamp"], json!("2025-01-15T10:30:00.000Z"));
        assert_eq!(doc["k"], json!(1));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_reports_each_item_and_create_conflicts_count_as_delivered() {
    let Some(peer) = EsPeer::connect() else { return };
    let index = unique_name("elasticsearch");
    let dest = build(&spec(json!([peer.url]), json!({"index": index, "op_type": "create"})));
    let job = job(TASK);
    let first_id = new_delivery_id();
    deliver(dest.as_ref(), &job, &Output::Json(json!({"n": 1})), &first_id).await.expect("first");

    let outputs = [
        Output::Json(json!({"n": 99})), // same _id as the first: already there
        Output::Json(json!({"n": 2})),  // fine
        Output::Json(json!({"n": "abc"})), // n is a long now: a mapping error
        Output::Json(json!({"n": 3})),  // fine
    ];
    let ids = [first_id.clone(), new_delivery_id(), new_delivery_id(), new_delivery_id()];
    let attempts: Vec<Attempt<'_>> = outputs
        .iter()
        .zip(&ids)
        .map(|(o, id)| Attempt { render: RenderContext::new(&job, o, id), number: 1 })
        .collect();
    let results = dest.deliver_batch(&attempts).await;
    let conflict = results[0].as_ref().expect("a create conflict on our own _id is delivered");
    assert_eq!(conflict.status_code, Some(409));
    assert!(conflict.response_excerpt.as_deref().unwrap().contains("already exists"));
    assert!(results[1].is_ok() && results[3].is_ok(), "{results:?}");
    let err = results[2].as_ref().expect_err("the mapping error fails alone");
    assert_eq!(err.class, FailureClass::Permanent);
    assert_eq!(err.status_code, Some(400));
    assert!(err.message.contains("mapper_parsing_exception"), "{}", err.message);

    let docs = search(&peer.url, &index).await;
    assert_eq!(docs.len(), 3, "{docs:?}");
    let first = get_doc(&peer.url, &index, &first_id).await.unwrap();
    assert_eq!(first["n"], json!(1), "create never overwrites");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn id_field_text_outputs_and_the_opensearch_alias() {
    let Some(peer) = EsPeer::connect() else { return };
    let index = unique_name("elasticsearch");
    let dest = build(&json!({"type": "opensearch", "addresses": peer.url, "index": index,
        "id_field": "/event/id", "job_fields_key": "job", "message_field": "text",
        "timeout_seconds": 30}));
    assert_eq!(dest.kind(), "opensearch");
    deliver(
        dest.as_ref(),
        &job(TASK),
        &Output::Json(json!({"event": {"id": "evt-7"}})),
        &new_delivery_id(),
    )
    .await
    .expect("index by event id");
    let doc = get_doc(&peer.url, &index, "evt-7").await.expect("_id from id_field");
    assert_eq!(doc["job"]["task_name"], json!(TASK));
    let err = deliver(dest.as_ref(), &job(TASK), &Output::Text("plain".into()), &new_delivery_id())
        .await
        .expect_err("a text output has no event id");
    assert!(err.message.contains("id_field '/event/id'"), "{}", err.message);

    let plain = build(&json!({"type": "opensearch", "addresses": [peer.url], "index": index,
        "message_field": "text", "job_fields_key": false, "timeout_seconds": 30}));
    let id = new_delivery_id();
    deliver(plain.as_ref(), &job(TASK), &Output::Text("a line of text".into()), &id).await.unwrap();
    let doc = get_doc(&peer.url, &index, &id).await.unwrap();
    assert_eq!(doc["text"], json!("a line of text"));
    assert!(doc.get("outflow").is_none() && doc.get("job").is_none(), "{doc}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_address_fails_over_to_the_next() {
    let Some(peer) = EsPeer::connect() else { return };
    let dead = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead_url = format!("http://{}", dead.local_addr().unwrap());
    drop(dead);
    let index = unique_name("elasticsearch");
    let dest = build(&spec(json!([dead_url, peer.url]), json!({"index": index})));
    for _ in 0..4 {
        let id = new_delivery_id();
        deliver(dest.as_ref(), &job(TASK), &Output::Json(json!({"x": 1})), &id)
            .await
            .expect("the live address takes it");
    }
    dest.check().await.expect("check fails over too");
    assert_eq!(search(&peer.url, &index).await.len(), 4);
}

#[tokio::test]
async fn private_addresses_need_the_operator_to_allow_them() {
    let Some(peer) = EsPeer::connect() else { return };
    let value = spec(json!([peer.url]), json!({"index": unique_name("elasticsearch")}));
    let parsed = DestinationSpec::from_value(&value, "d").unwrap();
    let strict = Registry::default().build(&parsed, "d").expect("builds");
    let err = deliver(strict.as_ref(), &job(TASK), &Output::Json(json!({})), &new_delivery_id())
        .await
        .expect_err("loopback is private");
    assert_eq!(err.class, FailureClass::Permanent);
    assert!(err.message.contains("SSRF guard"), "{}", err.message);
}

#[tokio::test]
async fn pipeline_and_credentials_are_sent() {
    let single = Receiver::start(vec![Reply::status(201, r#"{"result":"created"}"#)]).await;
    let dest = build(&spec(
        json!([single.url("")]),
        json!({"index": "logs", "pipeline": "enrich-1", "username": "elastic", "password": "changeme"}),
    ));
    let id = new_delivery_id();
    deliver(dest.as_ref(), &job(TASK), &Output::Json(json!({"a": 1})), &id).await.expect("201");
    let request = &single.requests()[0];
    assert_eq!(request.method, "PUT");
    assert_eq!(request.path, format!("/logs/_doc/{id}?pipeline=enrich-1"));
    let basic = base64::engine::general_purpose::STANDARD.encode("elastic:changeme");
    assert_eq!(request.header("authorization"), Some(format!("Basic {basic}").as_str()));
    assert_eq!(request.header("content-type"), Some("application/json"));

    let bulk_answer = json!({"errors": false, "items": [
        {"index": {"status": 201, "result": "created"}},
        {"index": {"status": 200, "result": "updated"}}]});
    let receiver = Receiver::start(vec![
        Reply::status(200, r#"{"cluster_name":"x"}"#),
        Reply::status(200, &bulk_answer.to_string()),
    ])
    .await;
    let dest = build(&spec(
        json!([receiver.url("")]),
        json!({"index": "logs-{{task_name}}", "pipeline": "enrich-1", "api_key": "key-id:key-secret"}),
    ));
    dest.check().await.expect("GET / answers 200");
    let job = job(TASK);
    let outputs = [Output::Json(json!({"a": 1})), Output::Text("two".into())];
    let ids = [new_delivery_id(), new_delivery_id()];
    let attempts: Vec<Attempt<'_>> = outputs
        .iter()
        .zip(&ids)
        .map(|(o, id)| Attempt { render: RenderContext::new(&job, o, id), number: 1 })
        .collect();
    let results = dest.deliver_batch(&attempts).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    let requests = receiver.requests();
    let api_key = base64::engine::general_purpose::STANDARD.encode("key-id:key-secret");
    for r in &requests {
        assert_eq!(
            r.header("authorization"),
            Some(format!("ApiKey {api_key}").as_str()),
            "{}",
            r.path
        );
    }
    assert_eq!((requests[0].method.as_str(), requests[0].path.as_str()), ("GET", "/"));
    let bulk = &requests[1];
    assert_eq!((bulk.method.as_str(), bulk.path.as_str()), ("POST", "/_bulk?pipeline=enrich-1"));
    assert_eq!(bulk.header("content-type"), Some("application/x-ndjson"));
    let lines: Vec<Value> = std::str::from_utf8(&bulk.body)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 4);
    assert_eq!(lines[0], json!({"index": {"_index": format!("logs-{TASK}"), "_id": ids[0]}}));
    assert_eq!(lines[1]["a"], json!(1));
    assert_eq!(lines[3]["message"], json!("two"));
    assert!(bulk.body.ends_with(b"\n"), "NDJSON ends with a newline");
}

#[tokio::test]
async fn throttling_is_retryable_for_the_request_and_for_items() {
    let items = json!({"errors": true, "items": [
        {"index": {"status": 201, "result": "created"}},
        {"index": {"status": 429, "error": {"type": "es_rejected_execution_exception", "reason": "queue full"}}}]});
    let receiver = Receiver::start(vec![
        Reply::status(
            429,
            r#"{"error":{"type":"circuit_breaking_exception","reason":"too much"}}"#,
        )
        .header("retry-after", "7"),
        Reply::status(200, &items.to_string()),
    ])
    .await;
    let dest = build(&spec(json!([receiver.url("")]), json!({"index": "logs"})));
    let err = deliver(dest.as_ref(), &job(TASK), &Output::Json(json!({})), &new_delivery_id())
        .await
        .expect_err("429");
    assert_eq!(err.class, FailureClass::Retryable);
    assert_eq!(err.retry_after, Some(Duration::from_secs(7)));
    assert!(err.message.contains("circuit_breaking_exception"), "{}", err.message);

    let job = job(TASK);
    let outputs = [Output::Json(json!({"a": 1})), Output::Json(json!({"a": 2}))];
    let ids = [new_delivery_id(), new_delivery_id()];
    let attempts: Vec<Attempt<'_>> = outputs
        .iter()
        .zip(&ids)
        .map(|(o, id)| Attempt { render: RenderContext::new(&job, o, id), number: 1 })
        .collect();
    let results = dest.deliver_batch(&attempts).await;
    assert!(results[0].is_ok());
    let err = results[1].as_ref().expect_err("the throttled item");
    assert_eq!(err.class, FailureClass::Retryable);
    assert!(err.message.contains("es_rejected_execution_exception"), "{}", err.message);
}

#[tokio::test]
async fn bad_credentials_are_permanent() {
    let receiver = Receiver::start(vec![
        Reply::status(
            401,
            r#"{"error":{"type":"security_exception","reason":"unable to authenticate"}}"#
        );
        2
    ])
    .await;
    let dest = build(&spec(
        json!([receiver.url("")]),
        json!({"index": "logs", "username": "u", "password": "wrong"}),
    ));
    let err = dest.check().await.expect_err("401");
    assert_eq!(err.class, FailureClass::Permanent);
    assert!(err.message.contains("authentication failed"), "{}", err.message);
    assert!(!err.message.contains("wrong"), "no secret in messages: {}", err.message);
}

#[tokio::test]
async fn batches_are_split_by_batch_size_and_max_bulk_bytes() {
    let items = |n: usize| {
        let item = json!({"index": {"status": 201, "result": "created"}});
        Reply::status(200, &json!({"errors": false, "items": vec![item; n]}).to_string())
    };
    let job = job(TASK);
    let outputs: Vec<Output> = (0..5).map(|i| Output::Json(json!({"i": i}))).collect();
    let ids: Vec<String> = (0..5).map(|_| new_delivery_id()).collect();
    let attempts: Vec<Attempt<'_>> = outputs
        .iter()
        .zip(&ids)
        .map(|(o, id)| Attempt { render: RenderContext::new(&job, o, id), number: 1 })
        .collect();
    let docs_per_request = |r: &receiver::Recorded| bytecount_lines(&r.body) / 2;

    let receiver = Receiver::start(vec![items(2), items(2), items(1)]).await;
    let dest = build(&spec(
        json!([receiver.url("")]),
        json!({"index": "logs", "batch_size": 2, "bulk_workers": 1}),
    ));
    let results = dest.deliver_batch(&attempts).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    let sizes: Vec<usize> = receiver.requests().iter().map(docs_per_request).collect();
    assert_eq!(sizes, [2, 2, 1]);

    // Each document is ~400 bytes with its job fields: 1 KiB holds two at most.
    let receiver = Receiver::start(vec![items(2), items(2), items(1)]).await;
    let dest = build(&spec(
        json!([receiver.url("")]),
        json!({"index": "logs", "max_bulk_bytes": 1024, "bulk_workers": 1}),
    ));
    let results = dest.deliver_batch(&attempts).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    let requests = receiver.requests();
    assert!(requests.iter().all(|r| r.body.len() <= 1024), "bodies stay under max_bulk_bytes");
    assert_eq!(requests.iter().map(docs_per_request).sum::<usize>(), 5);
}

fn bytecount_lines(body: &[u8]) -> usize {
    body.iter().filter(|b| **b == b'\n').count()
}
