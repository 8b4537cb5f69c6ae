//! The s3 destination against real S3 servers on 127.0.0.1: s3s-fs (checks SigV4; the
//! conformance suite and most options) and moto (server-side encryption, storage classes and
//! ACLs, which s3s-fs does not keep). Reading back uses a separate `object_store` client and
//! plain signed requests, never the destination.

mod conformance;

use std::io::Read;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::TimeZone;
use conformance::{Arrival, Dedupe, Peer, TASK, build, deliver, job, unique_name};
use futures::TryStreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder, AwsAuthorizer, AwsCredential};
use object_store::client::{HttpRequest, HttpRequestBody};
use object_store::path::Path;
use object_store::{Attribute, ObjectStore, ObjectStoreExt};
use outflow_core::attempt::FailureClass;
use outflow_core::config::DestinationSpec;
use outflow_core::context::RenderContext;
use outflow_core::output::Output;
use outflow_destinations::Attempt;
use outflow_destinations::runner::new_delivery_id;
use serde_json::{Value, json};

/// One S3 server and a fresh bucket on it.
struct S3Peer {
    url: String,
    addr: SocketAddr,
    access_key: String,
    secret_key: String,
    bucket: String,
    store: Arc<AmazonS3>,
}

impl S3Peer {
    /// s3s-fs (`OUTFLOW_TEST_S3_URL`), with a new bucket.
    async fn connect() -> Option<S3Peer> {
        let url = conformance::peers::require(
            "S3 (s3s-fs)",
            "OUTFLOW_TEST_S3_URL",
            "http://127.0.0.1:8014",
        )?;
        let ak = conformance::peers::setting("OUTFLOW_TEST_S3_ACCESS_KEY", "AK");
        let sk = conformance::peers::setting("OUTFLOW_TEST_S3_SECRET_KEY", "SK");
        Some(S3Peer::with_bucket(url, ak, sk).await)
    }

    /// moto (`OUTFLOW_TEST_MOTO_URL`), which accepts any credentials, with a new bucket.
    async fn moto() -> Option<S3Peer> {
        let url = conformance::peers::require(
            "S3 (moto)",
            "OUTFLOW_TEST_MOTO_URL",
            "http://127.0.0.1:5000",
        )?;
        Some(S3Peer::with_bucket(url, "AK".into(), "SK".into()).await)
    }

    async fn with_bucket(url: String, access_key: String, secret_key: String) -> S3Peer {
        let url = url.trim_end_matches('/').to_string();
        let addr = conformance::peers::socket_addr(&url).expect("peer URL has host:port");
        let bucket = unique_name("s3").replace('_', "-");
        let store = Arc::new(
            AmazonS3Builder::new()
                .with_endpoint(&url)
                .with_allow_http(true)
                .with_region("us-east-1")
                .with_bucket_name(&bucket)
                .with_access_key_id(&access_key)
                .with_secret_access_key(&secret_key)
                .build()
                .expect("read-back client"),
        );
        let peer = S3Peer { url, addr, access_key, secret_key, bucket, store };
        let response = peer.signed(reqwest::Method::PUT, &format!("/{}", peer.bucket), &[]).await;
        assert!(
            response.status().is_success(),
            "creating bucket {} failed: {} {}",
            peer.bucket,
            response.status(),
            response.text().await.unwrap_or_default()
        );
        peer
    }

    /// A request to `path_and_query` signed with the peer's credentials.
    async fn signed(
        &self,
        method: reqwest::Method,
        path_and_query: &str,
        headers: &[(&'static str, &str)],
    ) -> reqwest::Response {
        let url = format!("{}{path_and_query}", self.url);
        let mut request = HttpRequest::new(HttpRequestBody::empty());
        *request.method_mut() = method.clone();
        *request.uri_mut() = url.parse().expect("valid URL");
        for (name, value) in headers {
            request.headers_mut().insert(*name, value.parse().expect("header value"));
        }
        let credential = AwsCredential {
            key_id: self.access_key.clone(),
            secret_key: self.secret_key.clone(),
            token: None,
        };
        AwsAuthorizer::new(&credential, "s3", "us-east-1")
            .try_authorize(&mut request, None)
            .expect("sign");
        reqwest::Client::new()
            .request(method, url)
            .headers(request.headers().clone())
            .send()
            .await
            .expect("request to the S3 peer")
    }

    /// The destination spec for this peer at `addr`.
    fn base_spec(&self, addr: SocketAddr) -> Value {
        json!({
            "type": "s3",
            "endpoint": format!("http://{addr}"),
            "bucket": self.bucket,
            "access_key_id": self.access_key,
            "secret_access_key": self.secret_key,
        })
    }

    fn spec_with(&self, extra: Value) -> Value {
        let mut spec = self.base_spec(self.addr);
        for (k, v) in extra.as_object().expect("object") {
            spec[k] = v.clone();
        }
        spec
    }

    /// Keys under `prefix/`, sorted.
    async fn keys(&self, prefix: &str) -> Vec<String> {
        let prefix = Path::from(prefix);
        let mut keys: Vec<String> = self
            .store
            .list(Some(&prefix))
            .map_ok(|m| m.location.to_string())
            .try_collect()
            .await
            .expect("list");
        keys.sort();
        keys
    }

    async fn get(&self, key: &str) -> (Vec<u8>, object_store::Attributes) {
        let result = self.store.get(&Path::parse(key).expect("key")).await.expect("get");
        let attributes = result.attributes.clone();
        (result.bytes().await.expect("body").to_vec(), attributes)
    }
}

fn metadata<'a>(attributes: &'a object_store::Attributes, name: &str) -> Option<&'a str> {
    attributes.get(&Attribute::Metadata(name.to_string().into())).map(|v| v.as_ref())
}

#[async_trait]
impl Peer for S3Peer {
    fn kind(&self) -> &'static str {
        "s3"
    }

    fn upstream(&self) -> SocketAddr {
        self.addr
    }

    fn spec(&self, addr: SocketAddr, name: &str) -> Value {
        let mut spec = self.base_spec(addr);
        spec["prefix"] = json!(name);
        spec["key"] = json!("{{delivery_id}}.json");
        spec["format"] = json!("raw");
        spec
    }

    async fn read_back(&self, location: &str, expected: usize) -> Vec<Arrival> {
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            let mut arrivals = Vec::new();
            for key in self.keys(location).await {
                let (body, attributes) = self.get(&key).await;
                let delivery_id = metadata(&attributes, "outflow-delivery-id").map(str::to_string);
                if key.contains(".batch-") && key.ends_with(".ndjson") {
                    for line in body.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                        arrivals.push(Arrival { body: line.to_vec(), delivery_id: None });
                    }
                } else {
                    arrivals.push(Arrival { body, delivery_id });
                }
            }
            if arrivals.len() >= expected || Instant::now() > deadline {
                return arrivals;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn dedupe(&self) -> Dedupe {
        Dedupe::Unique
    }

    /// s3s-fs creates a missing bucket's directory on PUT, so its permanent failure is a
    /// wrong secret (it checks signatures); the missing bucket is tested against moto below.
    fn permanent_failure(&self, addr: SocketAddr, name: &str) -> (Value, &'static str) {
        let mut spec = self.spec(addr, name);
        spec["secret_access_key"] = json!("not-the-secret");
        (spec, "was refused")
    }

    fn required_fields(&self) -> &'static [&'static str] {
        &["bucket"]
    }
}

conformance_suite!(S3Peer::connect().await);

/// A job that completed at 2025-01-15 07:08:09 UTC.
fn dated_job() -> outflow_core::context::JobContext {
    let mut job = job(TASK);
    job.completed_at = chrono::Utc.with_ymd_and_hms(2025, 1, 15, 7, 8, 9).unwrap();
    job
}

fn sample() -> (Output, Value) {
    let value = json!({"event": "done", "n": 7});
    (Output::Json(value.clone()), value)
}

#[tokio::test]
async fn hive_partitioning_puts_dates_in_the_key() {
    let Some(peer) = S3Peer::connect().await else { return };
    let loc = unique_name("s3");
    let dest = build(&peer.spec_with(json!({
        "prefix": format!("{loc}/"), "partitioning": "hive", "key": "{{task_name}}-{{delivery_id}}.json"
    })));
    let (output, value) = sample();
    let id = new_delivery_id();
    let receipt = deliver(dest.as_ref(), &dated_job(), &output, &id).await.expect("delivered");
    let key = format!("{loc}/year=2025/month=01/day=15/{TASK}-{id}.json");
    assert_eq!(receipt.target, format!("s3://{}/{key}", peer.bucket));
    assert_eq!(peer.keys(&loc).await, vec![key.clone()]);
    let (body, _) = peer.get(&key).await;
    assert_eq!(serde_json::from_slice::<Value>(&body).unwrap(), value);

    let hourly = build(&peer.spec_with(json!({
        "prefix": loc, "partitioning": "hive", "partition_format": "year/month/day/hour", "key": "h.json"
    })));
    deliver(hourly.as_ref(), &dated_job(), &output, &id).await.expect("delivered");
    assert!(
        peer.keys(&loc).await.contains(&format!("{loc}/year=2025/month=01/day=15/hour=07/h.json"))
    );
}

#[tokio::test]
async fn compression_extension_is_appended_once() {
    let Some(peer) = S3Peer::connect().await else { return };
    let loc = unique_name("s3");
    let (output, value) = sample();
    let job = job(TASK);
    let gz = build(&peer.spec_with(json!({
        "prefix": loc, "key": "{{job_uuid}}.json.gz", "compression": "gzip"
    })));
    deliver(gz.as_ref(), &job, &output, &new_delivery_id()).await.expect("gzip delivered");
    let zst = build(&peer.spec_with(json!({
        "prefix": loc, "key": "z-{{job_uuid}}.json", "compression": "zstd"
    })));
    deliver(zst.as_ref(), &job, &output, &new_delivery_id()).await.expect("zstd delivered");

    let leveled = build(&peer.spec_with(json!({
        "prefix": loc, "key": "l-{{job_uuid}}.json", "compression": "gzip", "compression_level": 1
    })));
    deliver(leveled.as_ref(), &job, &output, &new_delivery_id()).await.expect("level 1 delivered");

    let gz_key = format!("{loc}/{}.json.gz", job.job_uuid);
    let zst_key = format!("{loc}/z-{}.json.zst", job.job_uuid);
    let level_key = format!("{loc}/l-{}.json.gz", job.job_uuid);
    assert_eq!(peer.keys(&loc).await, vec![gz_key.clone(), level_key.clone(), zst_key.clone()]);

    let (body, attributes) = peer.get(&level_key).await;
    assert_eq!(attributes.get(&Attribute::ContentEncoding).map(|v| v.as_ref()), Some("gzip"));
    let mut text = String::new();
    flate2::read::GzDecoder::new(&body[..]).read_to_string(&mut text).expect("gzip body");
    assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), value);

    let (body, _) = peer.get(&gz_key).await;
    let mut text = String::new();
    flate2::read::GzDecoder::new(&body[..]).read_to_string(&mut text).expect("gzip body");
    assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), value);
    let (body, _) = peer.get(&zst_key).await;
    let plain = zstd::decode_all(&body[..]).expect("zstd body");
    assert_eq!(serde_json::from_slice::<Value>(&plain).unwrap(), value);
}

#[tokio::test]
async fn metadata_and_content_type_are_set() {
    let Some(peer) = S3Peer::connect().await else { return };
    let loc = unique_name("s3");
    let job = job(TASK);
    let (output, _) = sample();
    let dest = build(&peer.spec_with(json!({
        "prefix": loc, "key": "a.json",
        "metadata": {"Job-UUID": "{{job_uuid}}", "task": "task {{task_name}}", "suite": "{{meta.suite}}"}
    })));
    let id = new_delivery_id();
    deliver(dest.as_ref(), &job, &output, &id).await.expect("delivered");
    let (_, attributes) = peer.get(&format!("{loc}/a.json")).await;
    assert_eq!(metadata(&attributes, "job-uuid"), Some(job.job_uuid.to_string().as_str()));
    assert_eq!(metadata(&attributes, "task"), Some("task conf"));
    assert_eq!(metadata(&attributes, "suite"), Some("conformance"));
    assert_eq!(metadata(&attributes, "outflow-delivery-id"), Some(id.as_str()));
    assert_eq!(
        attributes.get(&Attribute::ContentType).map(|v| v.as_ref()),
        Some("application/json")
    );

    let custom = build(&peer.spec_with(json!({
        "prefix": loc, "key": "b.csv", "format": "csv", "content_type": "text/x-report"
    })));
    let rows = Output::Json(json!([{"a": 1}]));
    deliver(custom.as_ref(), &job, &rows, &new_delivery_id()).await.expect("delivered");
    let (body, attributes) = peer.get(&format!("{loc}/b.csv")).await;
    assert_eq!(body, b"a\n1\n");
    assert_eq!(attributes.get(&Attribute::ContentType).map(|v| v.as_ref()), Some("text/x-report"));

    let bad = build(&peer.spec_with(json!({"prefix": loc, "metadata": {"x": "{{nope}}"}})));
    let err = deliver(bad.as_ref(), &job, &output, &new_delivery_id()).await.unwrap_err();
    assert_eq!(err.class, FailureClass::Permanent);
    assert!(err.message.contains("metadata 'x'"), "{}", err.message);
}

#[tokio::test]
async fn multipart_upload_above_the_threshold_is_byte_exact() {
    let Some(peer) = S3Peer::connect().await else { return };
    let loc = unique_name("s3");
    let dest = build(&peer.spec_with(json!({
        "prefix": loc, "key": "big.bin", "format": "raw",
        "multipart_threshold": "5MiB", "part_size": "5MiB"
    })));
    // 12 MiB of non-repeating bytes: three parts (5 + 5 + 2 MiB), and a misplaced part
    // would change the content, not just its length.
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let data: Vec<u8> = (0..12 * 1024 * 1024)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect();
    let output = Output::Binary(data.clone().into());
    let receipt =
        deliver(dest.as_ref(), &job(TASK), &output, &new_delivery_id()).await.expect("uploaded");
    assert_eq!(receipt.bytes, data.len() as u64);
    let (body, _) = peer.get(&format!("{loc}/big.bin")).await;
    assert_eq!(body.len(), data.len());
    assert!(body == data, "the multipart object is not byte-exact");
}

#[tokio::test]
async fn batches_are_one_ndjson_object_with_a_stable_key() {
    let Some(peer) = S3Peer::connect().await else { return };
    let loc = unique_name("s3");
    let dest = build(&peer.spec_with(json!({"prefix": loc, "key": "{{delivery_id}}.json"})));
    let job = job(TASK);
    let outputs: Vec<Output> = (0..3).map(|i| Output::Json(json!({"i": i}))).collect();
    let ids: Vec<String> = (0..3).map(|_| new_delivery_id()).collect();
    let attempts: Vec<Attempt<'_>> = outputs
        .iter()
        .zip(&ids)
        .map(|(o, id)| Attempt { render: RenderContext::new(&job, o, id), number: 1 })
        .collect();
    for _ in 0..2 {
        let results = dest.deliver_batch(&attempts).await;
        assert_eq!(results.len(), 3);
        assert!(results.iter().all(|r| r.is_ok()), "{results:?}");
        assert_eq!(results[0], results[2], "every record gets the batch's result");
    }
    let keys = peer.keys(&loc).await;
    assert_eq!(keys.len(), 1, "a redelivered batch overwrites its object: {keys:?}");
    assert!(keys[0].starts_with(&format!("{loc}/{}.batch-3-", ids[0])), "{}", keys[0]);
    assert!(keys[0].ends_with(".ndjson"), "{}", keys[0]);
    let (body, attributes) = peer.get(&keys[0]).await;
    assert_eq!(String::from_utf8(body).unwrap(), "{\"i\":0}\n{\"i\":1}\n{\"i\":2}\n");
    assert_eq!(metadata(&attributes, "outflow-records"), Some("3"));
    assert_eq!(
        attributes.get(&Attribute::ContentType).map(|v| v.as_ref()),
        Some("application/x-ndjson")
    );
}

#[tokio::test]
async fn missing_bucket_is_permanent_and_named() {
    // moto, because s3s-fs creates a missing bucket's directory on PUT.
    let Some(peer) = S3Peer::moto().await else { return };
    let missing = format!("{}-nope", peer.bucket);
    let dest = build(&peer.spec_with(json!({"bucket": missing})));
    let (output, _) = sample();
    let err = deliver(dest.as_ref(), &job(TASK), &output, &new_delivery_id()).await.unwrap_err();
    assert_eq!(err.class, FailureClass::Permanent, "{err:?}");
    assert!(err.message.contains(&format!("bucket '{missing}' does not exist")), "{}", err.message);
    let err = dest.check().await.expect_err("check of a missing bucket");
    assert_eq!(err.class, FailureClass::Permanent, "{err:?}");
    assert!(err.message.contains(&missing), "{}", err.message);
    dest.check().await.expect_err("still missing");
    build(&peer.spec_with(json!({}))).check().await.expect("the real bucket passes the check");
}

#[tokio::test]
async fn bad_credentials_are_permanent() {
    let Some(peer) = S3Peer::connect().await else { return };
    let (output, _) = sample();
    for (ak, sk) in [(peer.access_key.as_str(), "wrong-secret"), ("NOSUCHKEY", "wrong")] {
        let dest = build(&peer.spec_with(json!({"access_key_id": ak, "secret_access_key": sk})));
        let err =
            deliver(dest.as_ref(), &job(TASK), &output, &new_delivery_id()).await.unwrap_err();
        assert_eq!(err.class, FailureClass::Permanent, "{err:?}");
        assert!(
            err.message.contains(&format!("access to bucket '{}' was refused", peer.bucket)),
            "{}",
            err.message
        );
        assert!(!err.message.contains("wrong-secret"), "{}", err.message);
        let check = dest.check().await.expect_err("check with bad credentials");
        assert_eq!(check.class, FailureClass::Permanent, "{check:?}");
    }
}

#[tokio::test]
async fn private_endpoints_need_the_network_policy() {
    let Some(peer) = S3Peer::connect().await else { return };
    let strict = outflow_destinations::Registry::default();
    let mut spec = peer.spec_with(json!({}));
    let parsed = DestinationSpec::from_value(&spec, "d").unwrap();
    let errors = strict.build(&parsed, "d").expect_err("a loopback endpoint is refused");
    assert_eq!(errors[0].path, "d.endpoint");
    assert!(errors[0].message.contains("refusing to connect to 127.0.0.1"), "{errors:?}");

    // A host name passes the config check; its resolved addresses are judged on connect.
    spec["endpoint"] = json!(format!("http://localhost:{}", peer.addr.port()));
    let parsed = DestinationSpec::from_value(&spec, "d").unwrap();
    let dest = strict.build(&parsed, "d").expect("a host name is judged when resolved");
    let (output, _) = sample();
    let err = deliver(dest.as_ref(), &job(TASK), &output, &new_delivery_id()).await.unwrap_err();
    assert_eq!(err.class, FailureClass::Permanent, "{err:?}");
    assert!(err.message.contains("refusing to connect to"), "{}", err.message);
    assert!(err.message.contains("loopback"), "{}", err.message);

    spec["allowed_hosts"] = json!(["localhost"]);
    let parsed = DestinationSpec::from_value(&spec, "d").unwrap();
    let dest = strict.build(&parsed, "d").expect("allowed host");
    deliver(dest.as_ref(), &job(TASK), &output, &new_delivery_id()).await.expect("allowed");
}

#[tokio::test]
async fn encryption_storage_class_and_acl_reach_the_object() {
    let Some(peer) = S3Peer::moto().await else { return };
    let (output, _) = sample();
    let job = job(TASK);
    let dest = build(&peer.spec_with(json!({
        "key": "sse/{{job_uuid}}.json", "server_side_encryption": "AES256",
        "storage_class": "STANDARD_IA", "acl": "public-read",
        "metadata": {"owner": "{{task_name}}"}
    })));
    deliver(dest.as_ref(), &job, &output, &new_delivery_id()).await.expect("delivered");
    let path = format!("/{}/sse/{}.json", peer.bucket, job.job_uuid);
    let head = peer.signed(reqwest::Method::HEAD, &path, &[]).await;
    assert!(head.status().is_success(), "HEAD {path}: {}", head.status());
    let header =
        |name: &str| head.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
    assert_eq!(header("x-amz-server-side-encryption").as_deref(), Some("AES256"));
    assert_eq!(header("x-amz-storage-class").as_deref(), Some("STANDARD_IA"));
    assert_eq!(header("x-amz-meta-owner").as_deref(), Some(TASK));
    let acl = peer.signed(reqwest::Method::GET, &format!("{path}?acl"), &[]).await;
    let acl = acl.text().await.unwrap();
    assert!(acl.contains("http://acs.amazonaws.com/groups/global/AllUsers"), "{acl}");
    assert!(acl.contains("<Permission>READ</Permission>"), "{acl}");

    let kms = build(&peer.spec_with(json!({
        "key": "kms/{{job_uuid}}.json", "server_side_encryption": "aws:kms",
        "kms_key_id": "alias/outflow-test", "multipart_threshold": "5MiB", "part_size": "5MiB",
        "format": "raw", "storage_class": "GLACIER"
    })));
    let big = Output::Text("k".repeat(6 * 1024 * 1024));
    deliver(kms.as_ref(), &job, &big, &new_delivery_id()).await.expect("multipart with KMS");
    let path = format!("/{}/kms/{}.json", peer.bucket, job.job_uuid);
    let head = peer.signed(reqwest::Method::HEAD, &path, &[]).await;
    assert!(head.status().is_success(), "HEAD {path}: {}", head.status());
    let header =
        |name: &str| head.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
    assert_eq!(header("x-amz-server-side-encryption").as_deref(), Some("aws:kms"));
    assert_eq!(
        header("x-amz-server-side-encryption-aws-kms-key-id").as_deref(),
        Some("alias/outflow-test")
    );
    assert_eq!(header("x-amz-storage-class").as_deref(), Some("GLACIER"));
    assert_eq!(header("content-length").as_deref(), Some("6291456"));
}

/// Throughput of 10,000 small records: one object each (32 at a time) and one NDJSON batch.
/// `cargo test -p outflow-destinations --test s3 -- --ignored --nocapture throughput`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, not a check"]
async fn throughput_of_10000_small_records() {
    use futures::StreamExt;
    let Some(peer) = S3Peer::connect().await else { return };
    let loc = unique_name("s3");
    let dest = build(&peer.spec_with(
        json!({"prefix": loc, "key": "{{delivery_id}}.json", "format": "json_compact"}),
    ));
    let job = job(TASK);
    let outputs: Vec<Output> =
        (0..10_000).map(|i| Output::Json(json!({"i": i, "msg": "a small event"}))).collect();
    let ids: Vec<String> = (0..10_000).map(|_| new_delivery_id()).collect();

    let started = Instant::now();
    let failures = futures::stream::iter(outputs.iter().zip(&ids))
        .map(|(o, id)| {
            let dest = dest.clone();
            let job = &job;
            async move {
                dest.deliver(Attempt { render: RenderContext::new(job, o, id), number: 1 }).await
            }
        })
        .buffer_unordered(32)
        .filter(|r| futures::future::ready(r.is_err()))
        .count()
        .await;
    let per_object = started.elapsed();
    assert_eq!(failures, 0);

    let attempts: Vec<Attempt<'_>> = outputs
        .iter()
        .zip(&ids)
        .map(|(o, id)| Attempt { render: RenderContext::new(&job, o, id), number: 1 })
        .collect();
    let started = Instant::now();
    let results = dest.deliver_batch(&attempts).await;
    let batch = started.elapsed();
    assert!(results.iter().all(|r| r.is_ok()));
    println!(
        "s3 throughput (s3s-fs): one object per record, concurrency 32: {:.0} objects/s ({:.2} s); \
         one NDJSON batch object: {:.0} records/s ({:.3} s)",
        10_000.0 / per_object.as_secs_f64(),
        per_object.as_secs_f64(),
        10_000.0 / batch.as_secs_f64(),
        batch.as_secs_f64()
    );
}
