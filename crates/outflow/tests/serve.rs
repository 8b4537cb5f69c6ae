//! `outflow serve` as a real child process: crash safety (SIGKILL under load loses nothing
//! acknowledged) and retries that survive a restart.

use std::collections::{HashMap, HashSet};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use outflow_client::Client;
use serde_json::{Value, json};

/// Every request the receiver got: (webhook-id, job uuid from the envelope).
type Ledger = Arc<Mutex<Vec<(String, String)>>>;

/// A webhook receiver on 127.0.0.1 answering with the status in `status` (200 by default),
/// after `delay`.
async fn receiver(status: Arc<AtomicU16>, delay: Duration) -> (String, Ledger) {
    let ledger: Ledger = Arc::default();
    let l = ledger.clone();
    let app = Router::new().route(
        "/hook",
        post(move |headers: HeaderMap, body: Bytes| {
            let (l, status) = (l.clone(), status.clone());
            async move {
                tokio::time::sleep(delay).await;
                let code = status.load(Ordering::SeqCst);
                if code == 200 {
                    let id = headers
                        .get("webhook-id")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_string();
                    let envelope: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                    let job = envelope["job_uuid"].as_str().unwrap_or("").to_string();
                    l.lock().unwrap().push((id, job));
                }
                StatusCode::from_u16(code).unwrap()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}/hook"), ledger)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn write_config(dir: &Path, port: u16, hook: &str, retry: Value) -> std::path::PathBuf {
    let config = json!({
        "server": {"listen": format!("127.0.0.1:{port}"), "shutdown_grace": "2s"},
        "storage": {"path": dir.join("data")},
        "logging": {"level": "warn"},
        "output": {
            "max_concurrent_deliveries": 32,
            "default_timeout": 2,
            // A crashed server's in-flight deliveries come back when their lease expires.
            "delivery_lease": "3s",
            "allowed_hosts": ["127.0.0.1"],
            "global_destinations": [{
                "name": "hook",
                "destination": {"type": "webhook", "url": hook, "timeout_seconds": 2,
                                "retry_policy": retry}
            }]
        }
    });
    let path = dir.join("outflow.yaml");
    std::fs::write(&path, serde_json::to_string_pretty(&config).unwrap()).unwrap();
    path
}

struct Server {
    child: Child,
}

impl Server {
    async fn start(config: &Path, port: u16) -> Server {
        let child = Command::new(env!("CARGO_BIN_EXE_outflow"))
            .args(["serve", "--config"])
            .arg(config)
            .env_remove("OUTFLOW_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("outflow serve starts");
        let client = Client::new(&format!("http://127.0.0.1:{port}")).unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while client.health().await.is_err() {
            assert!(Instant::now() < deadline, "outflow serve did not answer /healthz in 20s");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Server { child }
    }

    fn kill9(mut self) {
        self.child.kill().unwrap(); // SIGKILL
        self.child.wait().unwrap();
    }

    fn terminate(mut self) {
        // SAFETY: signalling our own child by its pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let status = self.child.wait().unwrap();
        assert!(status.success(), "graceful shutdown exits 0, got {status}");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Submits a job to the `hook` destination and puts its output; returns the job UUID when
/// the output was acknowledged (2xx), `None` when the server was not there to take it.
async fn submit_one(client: &Client, n: usize) -> Option<String> {
    let (job, _) =
        client.submit_job(&json!({"destinations": ["hook"], "input_data": {"n": n}})).await.ok()?;
    let id = job["id"].to_string();
    let body = serde_json::to_vec(&json!({"n": n})).unwrap();
    client.put_output(&id, "application/json", body.into()).await.ok()?;
    job["job_uuid"].as_str().map(str::to_string)
}

async fn wait_for_all(ledger: &Ledger, acknowledged: &HashSet<String>, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        let delivered: HashSet<String> =
            ledger.lock().unwrap().iter().map(|(_, j)| j.clone()).collect();
        let missing = acknowledged.difference(&delivered).count();
        if missing == 0 {
            return;
        }
        assert!(Instant::now() < deadline, "{missing} acknowledged outputs never arrived");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_under_load_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let (hook, ledger) = receiver(Arc::new(AtomicU16::new(200)), Duration::from_millis(20)).await;
    let port = free_port();
    let retry = json!({"max_attempts": 20, "initial_delay_ms": 100, "max_delay_ms": 500, "backoff_multiplier": 2.0});
    let config = write_config(dir.path(), port, &hook, retry);
    let client = Client::new(&format!("http://127.0.0.1:{port}")).unwrap();

    let mut acknowledged = HashSet::new();
    for round in 0..3 {
        let server = Server::start(&config, port).await;
        // Submit from several tasks at once and kill the server while they run.
        let mut tasks = Vec::new();
        for worker in 0..8 {
            let client = client.clone();
            tasks.push(tokio::spawn(async move {
                let mut acked = Vec::new();
                for i in 0..25 {
                    match submit_one(&client, round * 1000 + worker * 100 + i).await {
                        Some(uuid) => acked.push(uuid),
                        None => break,
                    }
                }
                acked
            }));
        }
        tokio::time::sleep(Duration::from_millis(800 + round as u64 * 200)).await;
        server.kill9();
        for t in tasks {
            acknowledged.extend(t.await.unwrap());
        }
    }
    assert!(
        acknowledged.len() >= 10,
        "the load did reach the server ({} acks)",
        acknowledged.len()
    );

    // Restart on the same data dir: expired leases and pending deliveries are picked up.
    let server = Server::start(&config, port).await;
    wait_for_all(&ledger, &acknowledged, Duration::from_secs(60)).await;

    // Duplicates are allowed only as redeliveries of the same delivery (same webhook-id).
    let ledger = ledger.lock().unwrap();
    let mut ids_per_job: HashMap<&str, HashSet<&str>> = HashMap::new();
    for (id, job) in ledger.iter() {
        ids_per_job.entry(job.as_str()).or_default().insert(id.as_str());
    }
    for job in &acknowledged {
        assert_eq!(ids_per_job[job.as_str()].len(), 1, "job {job} got more than one delivery id");
    }
    eprintln!(
        "crash test: acknowledged {}, received {} (duplicates {})",
        acknowledged.len(),
        ledger.len(),
        ledger.len() - ids_per_job.len()
    );
    drop(ledger);
    server.terminate();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_scheduled_before_a_restart_is_delivered_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let status = Arc::new(AtomicU16::new(503));
    let (hook, ledger) = receiver(status.clone(), Duration::ZERO).await;
    let port = free_port();
    let retry = json!({"max_attempts": 5, "initial_delay_ms": 1500, "max_delay_ms": 3000, "backoff_multiplier": 2.0, "jitter": 0.0});
    let config = write_config(dir.path(), port, &hook, retry);
    let client = Client::new(&format!("http://127.0.0.1:{port}")).unwrap();

    let server = Server::start(&config, port).await;
    let uuid = submit_one(&client, 1).await.expect("acknowledged");
    // Wait until the first attempt failed and a retry is scheduled in the store.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let page = client.list_deliveries(&[("state", "scheduled".to_string())]).await.unwrap();
        if page["total"].as_u64() == Some(1) {
            break;
        }
        assert!(Instant::now() < deadline, "no retry got scheduled: {page}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.terminate();

    status.store(200, Ordering::SeqCst);
    let server = Server::start(&config, port).await;
    let acknowledged = HashSet::from([uuid]);
    wait_for_all(&ledger, &acknowledged, Duration::from_secs(20)).await;
    // The receiver logs the request before the server commits the outcome: poll for it.
    let deadline = Instant::now() + Duration::from_secs(10);
    let page = loop {
        let page = client.list_deliveries(&[("state", "delivered".to_string())]).await.unwrap();
        if page["total"] == 1 {
            break page;
        }
        assert!(Instant::now() < deadline, "never recorded as delivered: {page}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(page["data"][0]["attempt_count"], 2, "one failed attempt before, one after: {page}");
    server.terminate();
}
