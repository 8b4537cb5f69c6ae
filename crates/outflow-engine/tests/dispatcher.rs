//! The dispatcher against the real SQLite store, a real HTTP receiver on 127.0.0.1 and a
//! real directory: deliveries, scheduled retries, dead letters, isolation of a stuck
//! destination, the circuit breaker and graceful shutdown.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use outflow_core::attempt::FailureClass;
use outflow_core::context::Priority;
use outflow_core::delivery::{Delivery, DeliveryState};
use outflow_core::job::{JobStatus, OutputKind};
use outflow_destinations::Registry;
use outflow_engine::{BreakerSettings, Engine, EngineSettings, EngineTasks};
use outflow_store::{FinishJob, JobRef, NewJob, NewOutput, SqliteStore, Store};
use serde_json::{Value, json};
use tempfile::TempDir;

// ---------------------------------------------------------------------------------------
// A receiver on 127.0.0.1: records requests, answers from a script, then a default reply.

#[derive(Debug, Clone)]
struct Seen {
    webhook_id: Option<String>,
    body: Bytes,
    at: Instant,
}

#[derive(Debug, Clone, Copy)]
struct Reply {
    status: u16,
    delay: Duration,
}

fn reply(status: u16) -> Reply {
    Reply { status, delay: Duration::ZERO }
}

struct Shared {
    seen: Mutex<Vec<Seen>>,
    script: Mutex<VecDeque<Reply>>,
    default: Mutex<Reply>,
}

struct Receiver {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

impl Receiver {
    async fn start(script: Vec<Reply>, default: Reply) -> Receiver {
        let shared = Arc::new(Shared {
            seen: Mutex::default(),
            script: Mutex::new(script.into()),
            default: Mutex::new(default),
        });
        let app = Router::new().fallback(handle).with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Receiver { addr, shared }
    }

    fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    fn seen(&self) -> Vec<Seen> {
        self.shared.seen.lock().unwrap().clone()
    }

    fn answer_from_now_on(&self, r: Reply) {
        *self.shared.default.lock().unwrap() = r;
    }
}

async fn handle(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    shared.seen.lock().unwrap().push(Seen {
        webhook_id: headers.get("webhook-id").map(|v| v.to_str().unwrap().to_string()),
        body,
        at: Instant::now(),
    });
    let next = shared.script.lock().unwrap().pop_front();
    let r = next.unwrap_or_else(|| *shared.default.lock().unwrap());
    if !r.delay.is_zero() {
        tokio::time::sleep(r.delay).await;
    }
    Response::builder()
        .status(StatusCode::from_u16(r.status).unwrap())
        .body(Body::from(format!("answer {}", r.status)))
        .unwrap()
}

// ---------------------------------------------------------------------------------------
// Store, engine and jobs.

struct Harness {
    _dir: TempDir,
    store: Arc<dyn Store>,
    settings: EngineSettings,
}

fn settings() -> EngineSettings {
    EngineSettings {
        max_concurrent_deliveries: 10,
        per_destination_concurrency: 2,
        breaker: BreakerSettings { failure_threshold: 50, cool_down: Duration::from_secs(30) },
        lease: Duration::from_secs(60),
        shutdown_grace: Duration::from_secs(5),
        idle_poll: Duration::from_millis(200),
        ..EngineSettings::default()
    }
}

impl Harness {
    async fn new(settings: EngineSettings) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("data")).await.unwrap();
        Harness { _dir: dir, store: Arc::new(store), settings }
    }

    fn engine(&self) -> Arc<Engine> {
        Engine::new(self.store.clone(), Registry::default(), Vec::new(), self.settings.clone())
    }

    /// A finished job whose JSON output goes to `destinations`; returns its deliveries.
    async fn job(&self, engine: &Engine, destinations: Vec<Value>) -> Vec<Delivery> {
        let (job, created) = self
            .store
            .create_job(NewJob {
                uuid: uuid::Uuid::now_v7(),
                client_job_id: None,
                task_id: None,
                task_name: Some("report".into()),
                task_version: None,
                priority: Priority::Normal,
                input_data: json!({}),
                metadata: serde_json::Map::new(),
                output_destinations: destinations,
                destinations: Vec::new(),
                executable: false,
            })
            .await
            .unwrap();
        assert!(created);
        let deliveries = engine.planner.plan(&job).unwrap();
        self.store
            .finish_job(
                JobRef::Id(job.id),
                FinishJob {
                    status: Some(JobStatus::Succeeded),
                    error: None,
                    log: None,
                    output: Some(NewOutput {
                        kind: OutputKind::Json,
                        content_type: "application/json".into(),
                        body: Bytes::from_static(br#"{"rows":3}"#),
                    }),
                    deliveries,
                    lease_owner: None,
                },
            )
            .await
            .unwrap();
        engine.wake_deliveries();
        self.store
            .job_deliveries(JobRef::Id(job.id))
            .await
            .unwrap()
            .into_iter()
            .map(|(d, _)| d)
            .collect()
    }

    async fn delivery(&self, id: &str) -> Delivery {
        self.store.get_delivery(id).await.unwrap()
    }

    /// Polls until the delivery is in `state` (panics after `within`).
    async fn wait_state(&self, id: &str, state: DeliveryState, within: Duration) -> Delivery {
        let start = Instant::now();
        loop {
            let d = self.delivery(id).await;
            if d.state == state {
                return d;
            }
            assert!(
                start.elapsed() < within,
                "delivery {id} still {:?} (attempts {}, last error {:?}) after {within:?}, wanted {state:?}",
                d.state,
                d.attempts,
                d.last_error
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

fn webhook(rx: &Receiver, retry: Value) -> Value {
    json!({"type": "webhook", "url": rx.url(), "allowed_hosts": ["127.0.0.1"], "retry_policy": retry})
}

fn fast_retries(max_attempts: u32, initial_delay_ms: u64) -> Value {
    json!({"max_attempts": max_attempts, "initial_delay_ms": initial_delay_ms,
        "max_delay_ms": 10_000, "backoff_multiplier": 2.0, "jitter": 0.0})
}

async fn stop(tasks: EngineTasks) {
    tokio::time::timeout(Duration::from_secs(20), tasks.shutdown())
        .await
        .expect("engine stops within its grace period");
}

const WAIT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivers_to_webhook_and_file_with_attempt_records() {
    let h = Harness::new(settings()).await;
    let rx = Receiver::start(Vec::new(), reply(200)).await;
    let out = tempfile::tempdir().unwrap();
    let file = out.path().join("out.json");
    let engine = h.engine();
    let tasks = engine.start();

    let ds = h
        .job(
            &engine,
            vec![
                webhook(&rx, fast_retries(3, 10)),
                json!({"type": "filesystem", "path": file.to_str().unwrap(), "format": "json_compact"}),
            ],
        )
        .await;
    assert_eq!(ds.len(), 2);
    for d in &ds {
        let done = h.wait_state(&d.id, DeliveryState::Delivered, WAIT).await;
        assert_eq!(done.attempts, 1);
        assert!(done.delivered_at.is_some());
        let attempts = h.store.list_attempts(&d.id).await.unwrap();
        assert_eq!(attempts.len(), 1);
        assert_eq!(attempts[0].number, 1);
        assert_eq!(attempts[0].error, None);
        assert_eq!(attempts[0].failure_class, None);
        assert_eq!(attempts[0].next_retry_in, None);
    }
    let hook = ds.iter().find(|d| d.destination_type == "webhook").unwrap();
    let attempts = h.store.list_attempts(&hook.id).await.unwrap();
    assert_eq!(attempts[0].status_code, Some(200));
    assert_eq!(attempts[0].response_excerpt.as_deref(), Some("answer 200"));

    let seen = rx.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].webhook_id.as_deref(), Some(hook.id.as_str()));
    let body: Value = serde_json::from_slice(&seen[0].body).unwrap();
    assert_eq!(body["delivery_id"], json!(hook.id));
    assert_eq!(body["status"], json!("completed"));
    assert_eq!(body["task_name"], json!("report"));
    assert_eq!(body["output"], json!({"rows": 3}));

    assert_eq!(std::fs::read_to_string(&file).unwrap(), "{\"rows\":3}");
    stop(tasks).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_500_schedules_a_retry_in_the_store_then_delivers_with_the_same_id() {
    let h = Harness::new(settings()).await;
    let rx = Receiver::start(vec![reply(500)], reply(200)).await;
    let engine = h.engine();
    let tasks = engine.start();

    let ds = h.job(&engine, vec![webhook(&rx, fast_retries(3, 700))]).await;
    let id = &ds[0].id;
    let scheduled = h.wait_state(id, DeliveryState::Scheduled, WAIT).await;
    assert_eq!(scheduled.attempts, 1);
    assert_eq!(scheduled.last_status_code, Some(500));
    assert!(scheduled.next_attempt_at.unwrap() > chrono::Utc::now());
    let first = h.store.list_attempts(id).await.unwrap();
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].failure_class, Some(FailureClass::Retryable));
    assert_eq!(first[0].next_retry_in, Some(Duration::from_millis(700)));

    let done = h.wait_state(id, DeliveryState::Delivered, WAIT).await;
    assert_eq!(done.attempts, 2);
    let attempts = h.store.list_attempts(id).await.unwrap();
    assert_eq!(attempts.iter().map(|a| a.number).collect::<Vec<_>>(), [1, 2]);
    assert_eq!(attempts.iter().map(|a| a.status_code).collect::<Vec<_>>(), [Some(500), Some(200)]);
    let seen = rx.seen();
    assert_eq!(seen.len(), 2);
    assert!(seen.iter().all(|s| s.webhook_id.as_deref() == Some(id.as_str())));
    let gap = seen[1].at - seen[0].at;
    assert!(gap >= Duration::from_millis(650), "retried after {gap:?}, policy says 700 ms");
    stop(tasks).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_400_is_dead_at_once() {
    let h = Harness::new(settings()).await;
    let rx = Receiver::start(Vec::new(), reply(400)).await;
    let engine = h.engine();
    let tasks = engine.start();

    let ds = h.job(&engine, vec![webhook(&rx, fast_retries(5, 10))]).await;
    let dead = h.wait_state(&ds[0].id, DeliveryState::Dead, WAIT).await;
    assert_eq!(dead.attempts, 1);
    assert_eq!(dead.last_status_code, Some(400));
    let attempts = h.store.list_attempts(&ds[0].id).await.unwrap();
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0].failure_class, Some(FailureClass::Permanent));
    assert_eq!(attempts[0].next_retry_in, None);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(rx.seen().len(), 1, "a permanent failure is not retried");
    stop(tasks).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exhausted_retries_are_dead() {
    let h = Harness::new(settings()).await;
    let rx = Receiver::start(Vec::new(), reply(503)).await;
    let engine = h.engine();
    let tasks = engine.start();

    let ds = h.job(&engine, vec![webhook(&rx, fast_retries(3, 20))]).await;
    let dead = h.wait_state(&ds[0].id, DeliveryState::Dead, WAIT).await;
    assert_eq!(dead.attempts, 3);
    assert_eq!(dead.last_status_code, Some(503));
    let attempts = h.store.list_attempts(&ds[0].id).await.unwrap();
    assert_eq!(
        attempts.iter().map(|a| a.next_retry_in).collect::<Vec<_>>(),
        [Some(Duration::from_millis(20)), Some(Duration::from_millis(40)), None]
    );
    assert_eq!(rx.seen().len(), 3);
    stop(tasks).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_destination_does_not_delay_a_healthy_one() {
    let h = Harness::new(settings()).await;
    let stuck =
        Receiver::start(Vec::new(), Reply { status: 200, delay: Duration::from_secs(30) }).await;
    let healthy = Receiver::start(Vec::new(), reply(200)).await;
    let engine = h.engine();
    let tasks = engine.start();

    let mut stuck_spec = webhook(&stuck, fast_retries(2, 10));
    stuck_spec["timeout_seconds"] = json!(3);
    // More stuck deliveries than the global cap: without per-key limits they would take
    // every slot.
    let mut stuck_ids = Vec::new();
    for _ in 0..12 {
        stuck_ids.push(h.job(&engine, vec![stuck_spec.clone()]).await[0].id.clone());
    }
    let started = Instant::now();
    let mut healthy_ids = Vec::new();
    for _ in 0..20 {
        healthy_ids
            .push(h.job(&engine, vec![webhook(&healthy, fast_retries(2, 10))]).await[0].id.clone());
    }
    for id in &healthy_ids {
        h.wait_state(id, DeliveryState::Delivered, Duration::from_secs(2)).await;
    }
    let elapsed = started.elapsed();
    assert!(elapsed < Duration::from_secs(2), "healthy deliveries took {elapsed:?}");
    assert_eq!(healthy.seen().len(), 20);
    // The stuck endpoint has exactly its per-key share in flight, nothing answered yet.
    assert_eq!(stuck.seen().len(), 2);
    let mut in_flight = 0;
    for id in &stuck_ids {
        let d = h.delivery(id).await;
        assert_eq!(d.attempts, 0, "no stuck attempt has finished yet");
        assert!(
            matches!(d.state, DeliveryState::InFlight | DeliveryState::Pending),
            "{:?}",
            d.state
        );
        in_flight += usize::from(d.state == DeliveryState::InFlight);
    }
    assert_eq!(in_flight, 2);
    drop(tasks); // the stuck attempts would hold shutdown for its grace period
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_breaker_opens_after_n_failures_and_a_probe_closes_it() {
    let cool_down = Duration::from_millis(1500);
    let h = Harness::new(EngineSettings {
        per_destination_concurrency: 1,
        breaker: BreakerSettings { failure_threshold: 3, cool_down },
        ..settings()
    })
    .await;
    let rx = Receiver::start(Vec::new(), reply(503)).await;
    let engine = h.engine();
    let tasks = engine.start();
    let key = format!("webhook:http://{}", rx.addr);

    let ds = h.job(&engine, vec![webhook(&rx, fast_retries(10, 20))]).await;
    let id = &ds[0].id;
    let start = Instant::now();
    loop {
        let c = engine.circuits();
        if c.iter().any(|c| c.key == key && c.state == "open") {
            break;
        }
        assert!(start.elapsed() < WAIT, "circuit never opened: {c:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let c = engine.circuits();
    assert_eq!(c.len(), 1);
    assert_eq!((c[0].state, c[0].consecutive_failures), ("open", 3));
    assert_eq!(rx.seen().len(), 3);

    // Open: the retry is due (20-80 ms) but nothing reaches the endpoint.
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(rx.seen().len(), 3, "no attempt while the circuit is open");
    let d = h.delivery(id).await;
    assert_eq!(d.state, DeliveryState::Scheduled);
    assert_eq!(d.attempts, 3);

    rx.answer_from_now_on(reply(200));
    h.wait_state(id, DeliveryState::Delivered, WAIT).await;
    let seen = rx.seen();
    assert_eq!(seen.len(), 4, "one probe");
    let gap = seen[3].at - seen[2].at;
    assert!(gap >= cool_down - Duration::from_millis(50), "probe after {gap:?}");
    let c = engine.circuits();
    assert_eq!((c[0].state, c[0].consecutive_failures), ("closed", 0));
    stop(tasks).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_probe_reopens_the_circuit() {
    let cool_down = Duration::from_millis(500);
    let h = Harness::new(EngineSettings {
        per_destination_concurrency: 1,
        breaker: BreakerSettings { failure_threshold: 2, cool_down },
        ..settings()
    })
    .await;
    let rx = Receiver::start(Vec::new(), reply(503)).await;
    let engine = h.engine();
    let tasks = engine.start();

    let ds = h.job(&engine, vec![webhook(&rx, fast_retries(4, 10))]).await;
    let dead = h.wait_state(&ds[0].id, DeliveryState::Dead, WAIT).await;
    assert_eq!(dead.attempts, 4);
    let seen = rx.seen();
    assert_eq!(seen.len(), 4);
    // Attempts 3 and 4 are probes, each after a cool-down.
    for i in [2, 3] {
        let gap = seen[i].at - seen[i - 1].at;
        assert!(gap >= cool_down - Duration::from_millis(50), "attempt {} after {gap:?}", i + 1);
    }
    let c = engine.circuits();
    assert_eq!((c[0].state, c[0].consecutive_failures), ("open", 4));
    stop(tasks).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_releases_in_flight_deliveries_and_a_restart_delivers_them() {
    let h =
        Harness::new(EngineSettings { shutdown_grace: Duration::from_millis(300), ..settings() })
            .await;
    let rx =
        Receiver::start(vec![Reply { status: 200, delay: Duration::from_secs(20) }], reply(200))
            .await;
    let engine = h.engine();
    let tasks = engine.start();

    let ds = h.job(&engine, vec![webhook(&rx, fast_retries(3, 10))]).await;
    let id = &ds[0].id;
    let start = Instant::now();
    while rx.seen().is_empty() {
        assert!(start.elapsed() < WAIT, "attempt never started");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(h.delivery(id).await.state, DeliveryState::InFlight);

    let stopping = Instant::now();
    stop(tasks).await;
    let took = stopping.elapsed();
    assert!(took >= Duration::from_millis(300) && took < Duration::from_secs(3), "{took:?}");
    let d = h.delivery(id).await;
    assert_eq!(d.state, DeliveryState::Pending);
    assert_eq!(d.attempts, 0, "a released attempt is not counted");
    assert!(h.store.list_attempts(id).await.unwrap().is_empty());

    let again = h.engine();
    let tasks = again.start();
    again.wake_deliveries();
    let done = h.wait_state(id, DeliveryState::Delivered, WAIT).await;
    assert_eq!(done.attempts, 1);
    let seen = rx.seen();
    assert_eq!(seen.len(), 2);
    assert!(seen.iter().all(|s| s.webhook_id.as_deref() == Some(id.as_str())));
    stop(tasks).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_waits_for_attempts_that_finish_within_the_grace_period() {
    let h = Harness::new(settings()).await;
    let rx =
        Receiver::start(vec![Reply { status: 200, delay: Duration::from_millis(400) }], reply(200))
            .await;
    let engine = h.engine();
    let tasks = engine.start();
    let ds = h.job(&engine, vec![webhook(&rx, fast_retries(3, 10))]).await;
    let start = Instant::now();
    while rx.seen().is_empty() {
        assert!(start.elapsed() < WAIT, "attempt never started");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    stop(tasks).await;
    // Recorded before run() returned: the collector was flushed.
    let d = h.delivery(&ds[0].id).await;
    assert_eq!((d.state, d.attempts), (DeliveryState::Delivered, 1));
}
