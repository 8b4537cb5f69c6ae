//! The redis destination against a real Redis on 127.0.0.1 (`OUTFLOW_TEST_REDIS_URL`): the
//! conformance suite in `list` and `stream` modes, then each mode's own behaviour, and `rq`
//! mode picked up by a real Python RQ worker. Keys are unique per test (the server is
//! shared; nothing is flushed).

mod conformance;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use conformance::{Arrival, Dedupe, Peer, TASK, build, deliver, job, unique_name};
use outflow_core::attempt::FailureClass;
use outflow_core::context::RenderContext;
use outflow_core::output::Output;
use outflow_destinations::Attempt;
use outflow_destinations::runner::new_delivery_id;
use redis::AsyncCommands as _;
use serde_json::{Value, json};

/// The Redis URL when the server answers (else skipped, or failed under CI).
fn redis_url() -> Option<String> {
    conformance::peers::require("Redis", "OUTFLOW_TEST_REDIS_URL", "redis://127.0.0.1:6379")
}

/// An independent connection for reading back.
async fn reader(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .expect("redis URL")
        .get_multiplexed_async_connection_with_config(
            &redis::AsyncConnectionConfig::new()
                .set_response_timeout(Some(Duration::from_secs(30)))
                .set_connection_timeout(Some(Duration::from_secs(10))),
        )
        .await
        .expect("connect to redis")
}

/// The output inside an envelope's `data`: text as its bytes, JSON as JSON text.
fn data_body(data: &Value) -> Vec<u8> {
    match data {
        Value::String(s) => s.as_bytes().to_vec(),
        other => serde_json::to_vec(other).unwrap(),
    }
}

/// Redis in `list` mode (the default envelope) or `stream` mode.
struct RedisPeer {
    url: String,
    addr: SocketAddr,
    mode: &'static str,
}

impl RedisPeer {
    fn connect(mode: &'static str) -> Option<RedisPeer> {
        let url = redis_url()?;
        let addr = conformance::peers::socket_addr(&url).expect("redis address");
        Some(RedisPeer { url, addr, mode })
    }
}

#[async_trait]
impl Peer for RedisPeer {
    fn kind(&self) -> &'static str {
        "redis"
    }

    fn upstream(&self) -> SocketAddr {
        self.addr
    }

    fn spec(&self, addr: SocketAddr, name: &str) -> Value {
        json!({"type": "redis", "url": format!("redis://{addr}"), "mode": self.mode, "key": name})
    }

    async fn read_back(&self, location: &str, expected: usize) -> Vec<Arrival> {
        let mut conn = reader(&self.url).await;
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            let found: Vec<Arrival> = if self.mode == "stream" {
                let reply: redis::streams::StreamRangeReply =
                    conn.xrange_all(location).await.expect("XRANGE");
                reply
                    .ids
                    .iter()
                    .map(|entry| Arrival {
                        body: entry.get::<Vec<u8>>("data").expect("entry has data"),
                        delivery_id: entry.get::<String>("delivery_id"),
                    })
                    .collect()
            } else {
                let items: Vec<Vec<u8>> = conn.lrange(location, 0, -1).await.expect("LRANGE");
                items
                    .iter()
                    .map(|raw| {
                        let env: Value = serde_json::from_slice(raw).expect("envelope is JSON");
                        Arrival {
                            body: data_body(&env["data"]),
                            delivery_id: env["delivery_id"].as_str().map(str::to_string),
                        }
                    })
                    .collect()
            };
            if found.len() >= expected || Instant::now() > deadline {
                // The server is shared and never flushed: let the test's key go in a while.
                let _: Result<bool, _> = conn.expire(location, 600).await;
                return found;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn dedupe(&self) -> Dedupe {
        Dedupe::CarriesId
    }

    fn permanent_failure(&self, addr: SocketAddr, name: &str) -> (Value, &'static str) {
        // An ACL user that does not exist: Redis answers WRONGPASS.
        let mut spec = self.spec(addr, name);
        spec["username"] = json!("of_no_such_user");
        spec["password"] = json!("wrong");
        (spec, "authentication failed")
    }

    fn required_fields(&self) -> &'static [&'static str] {
        &["url", "key"]
    }
}

mod list {
    use super::*;
    conformance_suite!(RedisPeer::connect("list"));
}

mod stream {
    use super::*;
    conformance_suite!(RedisPeer::connect("stream"));
}

fn spec(url: &str, extra: Value) -> Value {
    let mut spec = json!({"type": "redis", "url": url});
    spec.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    spec
}

#[tokio::test]
async fn pubsub_publishes_to_subscribers_and_reports_receivers() {
    let Some(url) = redis_url() else { return };
    let channel = unique_name("redis");
    let mut pubsub =
        redis::Client::open(url.as_str()).unwrap().get_async_pubsub().await.expect("pubsub");
    pubsub.subscribe(&channel).await.expect("SUBSCRIBE");
    let dest = build(&spec(&url, json!({"mode": "pubsub", "key": channel})));
    let id = new_delivery_id();
    let output = Output::Json(json!({"event": "done"}));
    let receipt = deliver(dest.as_ref(), &job(TASK), &output, &id).await.expect("publish");
    assert_eq!(receipt.response_excerpt.as_deref(), Some("1 receivers"));
    let msg = tokio::time::timeout(Duration::from_secs(5), pubsub.on_message().next_message())
        .await
        .expect("a message within 5 s");
    let payload: Value = serde_json::from_slice(msg.get_payload_bytes()).unwrap();
    assert_eq!(payload["delivery_id"], json!(id));
    assert_eq!(payload["task_name"], json!(TASK));
    assert_eq!(payload["data"], json!({"event": "done"}));

    // Nobody listening is still a success: the server took the message.
    let lonely = build(&spec(&url, json!({"mode": "pubsub", "key": unique_name("redis")})));
    let receipt = deliver(lonely.as_ref(), &job(TASK), &output, &new_delivery_id()).await.unwrap();
    assert_eq!(receipt.response_excerpt.as_deref(), Some("0 receivers"));
}

/// `StreamExt::next` for the pub/sub message stream.
trait NextMessage {
    async fn next_message(&mut self) -> redis::Msg;
}

impl<S: futures::Stream<Item = redis::Msg> + Unpin> NextMessage for S {
    async fn next_message(&mut self) -> redis::Msg {
        use futures::StreamExt as _;
        self.next().await.expect("the subscription ended")
    }
}

#[tokio::test]
async fn stream_maxlen_trims_exactly_when_asked() {
    let Some(url) = redis_url() else { return };
    let key = unique_name("redis");
    let dest = build(&spec(
        &url,
        json!({"mode": "stream", "key": key, "maxlen": 5, "approximate_maxlen": false, "format": "json_compact"}),
    ));
    for i in 0..8 {
        deliver(dest.as_ref(), &job(TASK), &Output::Json(json!({"i": i})), &new_delivery_id())
            .await
            .expect("XADD");
    }
    let mut conn = reader(&url).await;
    let reply: redis::streams::StreamRangeReply = conn.xrange_all(&key).await.unwrap();
    let kept: Vec<String> = reply.ids.iter().map(|e| e.get::<String>("data").unwrap()).collect();
    assert_eq!(kept, (3..8).map(|i| format!("{{\"i\":{i}}}")).collect::<Vec<_>>());
    let _: () = conn.del(&key).await.unwrap();
}

#[tokio::test]
async fn list_push_left_with_max_length_keeps_the_newest() {
    let Some(url) = redis_url() else { return };
    let key = unique_name("redis");
    let dest =
        build(&spec(&url, json!({"key": key, "push": "left", "max_length": 3, "envelope": false})));
    for i in 0..5 {
        deliver(dest.as_ref(), &job(TASK), &Output::Text(format!("m{i}")), &new_delivery_id())
            .await
            .expect("LPUSH");
    }
    let mut conn = reader(&url).await;
    let items: Vec<String> = conn.lrange(&key, 0, -1).await.unwrap();
    assert_eq!(items, ["m4", "m3", "m2"], "LPUSH puts the newest first; LTRIM keeps 3");
    let _: () = conn.del(&key).await.unwrap();
}

#[tokio::test]
async fn a_key_holding_another_type_is_a_permanent_wrongtype() {
    let Some(url) = redis_url() else { return };
    let key = unique_name("redis");
    let mut conn = reader(&url).await;
    let _: () = conn.set(&key, "a string").await.unwrap();
    for mode in ["list", "stream"] {
        let dest = build(&spec(&url, json!({"mode": mode, "key": key})));
        let err = deliver(dest.as_ref(), &job(TASK), &Output::Text("x".into()), &new_delivery_id())
            .await
            .expect_err("WRONGTYPE");
        assert_eq!(err.class, FailureClass::Permanent, "{mode}: {err:?}");
        assert!(err.message.contains("WRONGTYPE"), "{mode}: {}", err.message);
        assert!(err.message.contains(&key), "{mode}: the message names the key: {}", err.message);
    }
    let _: () = conn.del(&key).await.unwrap();
}

#[tokio::test]
async fn a_bad_rendered_key_is_permanent_and_the_batch_reports_it_alone() {
    let Some(url) = redis_url() else { return };
    let base = unique_name("redis");
    let dest = build(&spec(&url, json!({"key": format!("{base}_{{{{meta.k}}}}")})));
    let outputs = [Output::Text("a".into()), Output::Text("b".into())];
    let mut good = job(TASK);
    good.metadata.insert("k".into(), json!("ok"));
    let mut bad = job(TASK);
    bad.metadata.insert("k".into(), json!("has space"));
    let ids = [new_delivery_id(), new_delivery_id()];
    let attempts = [
        Attempt { render: RenderContext::new(&good, &outputs[0], &ids[0]), number: 1 },
        Attempt { render: RenderContext::new(&bad, &outputs[1], &ids[1]), number: 1 },
    ];
    let results = dest.deliver_batch(&attempts).await;
    assert!(results[0].is_ok(), "{:?}", results[0]);
    let err = results[1].as_ref().unwrap_err();
    assert_eq!(err.class, FailureClass::Permanent);
    assert!(err.message.contains("invalid redis list name"), "{}", err.message);
    let mut conn = reader(&url).await;
    let len: usize = conn.llen(format!("{base}_ok")).await.unwrap();
    assert_eq!(len, 1);
    let _: () = conn.del(format!("{base}_ok")).await.unwrap();
}

/// The venv with RQ: `~/.cache/outflow/services/venv`, created (with `pip install rq`) when
/// missing. `None` when Python or pip cannot provide it.
fn rq_venv() -> Option<PathBuf> {
    let home = std::env::var_os("HOME").map(PathBuf::from)?;
    let venv = home.join(".cache/outflow/services/venv");
    let rq = venv.join("bin/rq");
    if rq.exists() {
        return Some(venv);
    }
    let python = venv.join("bin/python");
    if !python.exists() {
        let made = std::process::Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .is_ok_and(|s| s.success());
        if !made {
            return None;
        }
    }
    let installed = std::process::Command::new(&python)
        .args(["-m", "pip", "install", "--quiet", "rq"])
        .status()
        .is_ok_and(|s| s.success());
    (installed && rq.exists()).then_some(venv)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rq_jobs_are_run_by_a_real_python_rq_worker() {
    let Some(url) = redis_url() else { return };
    let Some(venv) = rq_venv() else {
        conformance::peers::skip(
            "Python RQ is not available (python3 -m venv ~/.cache/outflow/services/venv \
             && pip install rq failed)",
        );
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let out_file = dir.path().join("received.json");
    let module = format!(
        "import json\n\ndef record(arg):\n    with open({:?}, 'w') as f:\n        json.dump(arg, f)\n    return 'ok'\n",
        out_file.to_str().unwrap()
    );
    std::fs::write(dir.path().join("outflow_rq_probe.py"), module).unwrap();

    let queue = unique_name("redis");
    let dest = build(&spec(
        &url,
        json!({"mode": "rq", "queue_name": queue, "function": "outflow_rq_probe.record"}),
    ));
    let output = Output::Json(json!({"report": "done", "rows": [1, 2, 3], "text": "é ✓"}));
    let id = new_delivery_id();
    let receipt = deliver(dest.as_ref(), &job(TASK), &output, &id).await.expect("enqueue");
    assert_eq!(receipt.response_excerpt, Some(format!("RQ job {id} enqueued")));
    // A redelivery while the job exists enqueues nothing.
    let again = deliver(dest.as_ref(), &job(TASK), &output, &id).await.expect("re-enqueue");
    assert!(again.response_excerpt.unwrap().contains("already exists"));
    let mut conn = reader(&url).await;
    let queued: Vec<String> = conn.lrange(format!("rq:queue:{queue}"), 0, -1).await.unwrap();
    assert_eq!(queued, std::slice::from_ref(&id), "one job, whose id is the delivery id");
    let registered: bool = conn.sismember("rq:queues", format!("rq:queue:{queue}")).await.unwrap();
    assert!(registered, "the queue is listed in rq:queues");

    let status = tokio::process::Command::new(venv.join("bin/rq"))
        .args(["worker", "--burst", "--url", &url, "--serializer", "rq.serializers.JSONSerializer"])
        .arg(&queue)
        .env("PYTHONPATH", dir.path())
        .current_dir(dir.path())
        .kill_on_drop(true)
        .status();
    let status = tokio::time::timeout(Duration::from_secs(120), status)
        .await
        .expect("the RQ worker finished within 120 s")
        .expect("the RQ worker ran");
    assert!(status.success(), "rq worker exited with {status}");
    let received = std::fs::read_to_string(&out_file).expect("the job function wrote its argument");
    let received: Value = serde_json::from_str(&received).unwrap();
    assert_eq!(received, json!({"report": "done", "rows": [1, 2, 3], "text": "é ✓"}));
    let job_status: String = conn.hget(format!("rq:job:{id}"), "status").await.unwrap();
    assert_eq!(job_status, "finished");
    let _: () = conn.del(format!("rq:job:{id}")).await.unwrap();
    let _: () = conn.srem("rq:queues", format!("rq:queue:{queue}")).await.unwrap();
}

/// Throughput of `deliver_batch` (one pipeline) for 10,000 small records in list mode.
/// Run with `cargo test -p outflow-destinations --test redis -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn list_batch_throughput() {
    let Some(url) = redis_url() else { return };
    let key = unique_name("redis");
    let dest = build(&spec(&url, json!({"key": key})));
    let job = job(TASK);
    let outputs: Vec<Output> =
        (0..10_000).map(|i| Output::Json(json!({"i": i, "msg": "small"}))).collect();
    let ids: Vec<String> = (0..10_000).map(|_| new_delivery_id()).collect();
    let attempts: Vec<Attempt<'_>> = outputs
        .iter()
        .zip(&ids)
        .map(|(o, id)| Attempt { render: RenderContext::new(&job, o, id), number: 1 })
        .collect();
    dest.check().await.expect("connect first, so the timing is the batch alone");
    let started = Instant::now();
    let results = dest.deliver_batch(&attempts).await;
    let elapsed = started.elapsed();
    assert!(results.iter().all(Result::is_ok));
    let mut conn = reader(&url).await;
    let len: usize = conn.llen(&key).await.unwrap();
    assert_eq!(len, 10_000);
    println!(
        "redis list deliver_batch: 10000 records in {:.1} ms = {:.0} records/s",
        elapsed.as_secs_f64() * 1000.0,
        10_000.0 / elapsed.as_secs_f64()
    );
    let _: () = conn.del(&key).await.unwrap();
}

/// A throwaway TLS-only redis-server with a self-signed certificate for `localhost`, killed
/// on drop. `None` (a loud skip) when `redis-server` or `openssl` is missing.
async fn tls_redis(dir: &std::path::Path) -> Option<(tokio::process::Child, u16)> {
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    // A CA and a leaf it signed (webpki refuses a self-signed CA used as the server's cert).
    let script = "set -e
        printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\\nbasicConstraints=CA:FALSE\\n' > leaf.ext
        openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=outflow-test-ca \\
            -keyout ca.key -out ca.pem
        openssl req -newkey rsa:2048 -nodes -subj /CN=localhost -keyout key.pem -out leaf.csr
        openssl x509 -req -in leaf.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 1 \\
            -extfile leaf.ext -out cert.pem";
    let made = std::process::Command::new("sh")
        .args(["-c", script])
        .current_dir(dir)
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !made {
        conformance::peers::skip("openssl is not available to make a test certificate");
        return None;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let child = tokio::process::Command::new("redis-server")
        .args(["--port", "0", "--bind", "127.0.0.1", "--save", "", "--tls-auth-clients", "no"])
        .arg("--tls-port")
        .arg(port.to_string())
        .arg("--tls-cert-file")
        .arg(&cert)
        .arg("--tls-key-file")
        .arg(&key)
        .arg("--tls-ca-cert-file")
        .arg(dir.join("ca.pem"))
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn();
    let Ok(child) = child else {
        conformance::peers::skip("redis-server is not installed (needed for the TLS test)");
        return None;
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
        assert!(Instant::now() < deadline, "the TLS redis-server did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Some((child, port))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_with_a_private_ca_or_without_verification() {
    let dir = tempfile::tempdir().unwrap();
    let Some((_server, port)) = tls_redis(dir.path()).await else { return };
    let url = format!("rediss://localhost:{port}");
    let ca = dir.path().join("ca.pem");
    let key = unique_name("redis");
    let output = Output::Text("over TLS".into());

    let trusted = build(&spec(&url, json!({"key": key, "tls_ca_file": ca})));
    trusted.check().await.expect("PING over TLS with the private CA");
    let receipt = deliver(trusted.as_ref(), &job(TASK), &output, &new_delivery_id()).await.unwrap();
    assert_eq!(receipt.response_excerpt.as_deref(), Some("list length 1"));

    let untrusted = build(&spec(&url, json!({"key": key})));
    let err = deliver(untrusted.as_ref(), &job(TASK), &output, &new_delivery_id())
        .await
        .expect_err("a self-signed certificate is not in the built-in roots");
    assert_eq!(err.class, FailureClass::Permanent, "{err:?}");
    assert!(err.message.contains(&format!("localhost:{port}")), "{}", err.message);
    assert!(err.message.contains("tls_ca_file"), "{}", err.message);

    let insecure = build(&spec(&url, json!({"key": key, "tls_insecure": true})));
    let receipt =
        deliver(insecure.as_ref(), &job(TASK), &output, &new_delivery_id()).await.unwrap();
    assert_eq!(receipt.response_excerpt.as_deref(), Some("list length 2"));
}
