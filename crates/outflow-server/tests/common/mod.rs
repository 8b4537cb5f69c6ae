//! Shared test harness: the real server in-process on 127.0.0.1:0 with a temp data dir, a
//! real webhook receiver on 127.0.0.1, and small HTTP helpers.

#![allow(dead_code)] // each test binary uses a different part of the harness

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use outflow_core::config::Config;
use outflow_engine::{BreakerSettings, EngineSettings};
use outflow_server::{RunningServer, ServeOptions, engine_settings};
use reqwest::Method;
use serde_json::{Value, json};
use sha2::Sha256;
use tempfile::TempDir;

/// The signing key of the webhook destinations in these tests.
pub const SIGNING_KEY: &[u8] = b"outflow-test-signing-key-0123456789";

/// `whsec_` + base64 of [`SIGNING_KEY`].
pub fn whsec() -> String {
    format!("whsec_{}", STANDARD.encode(SIGNING_KEY))
}

/// The Standard Webhooks signature of a request, computed independently of outflow.
pub fn expected_signature(id: &str, timestamp: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(SIGNING_KEY).unwrap();
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body);
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// Path as sent.
    pub path: String,
    /// Headers.
    pub headers: HeaderMap,
    /// Exact body.
    pub body: Bytes,
}

impl Recorded {
    /// A header as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

#[derive(Default)]
struct ReceiverState {
    status: AtomicU16,
    requests: Mutex<Vec<Recorded>>,
}

/// A webhook receiver on 127.0.0.1 answering with a status that tests can change.
pub struct Receiver {
    /// Where it listens.
    pub addr: SocketAddr,
    state: Arc<ReceiverState>,
}

impl Receiver {
    /// Starts answering `status`.
    pub async fn start(status: u16) -> Receiver {
        let state =
            Arc::new(ReceiverState { status: AtomicU16::new(status), ..Default::default() });
        let app = Router::new().fallback(record).with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Receiver { addr, state }
    }

    /// `http://127.0.0.1:port{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Answer `status` from now on.
    pub fn set_status(&self, status: u16) {
        self.state.status.store(status, Ordering::SeqCst);
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.state.requests.lock().unwrap().clone()
    }
}

async fn record(
    State(state): State<Arc<ReceiverState>>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, &'static str) {
    state.requests.lock().unwrap().push(Recorded { path: uri.path().to_string(), headers, body });
    let status = StatusCode::from_u16(state.status.load(Ordering::SeqCst)).unwrap();
    (status, if status.is_success() { "ok" } else { "refused by the test receiver" })
}

/// A response: status, headers, body as JSON (`Value::Null` when not JSON).
#[derive(Debug)]
pub struct Answer {
    /// Status.
    pub status: u16,
    /// Headers.
    pub headers: reqwest::header::HeaderMap,
    /// Raw body.
    pub bytes: Bytes,
    /// Parsed body.
    pub json: Value,
}

impl Answer {
    /// A header as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts a problem document with this status; returns it.
    pub fn problem(&self, status: u16) -> &Value {
        assert_eq!(self.status, status, "body: {}", self.json);
        assert_eq!(self.header("content-type"), Some("application/problem+json"));
        assert_eq!(self.json["status"], status);
        assert!(self.json["type"].as_str().unwrap().starts_with("urn:outflow:problem:"));
        assert!(self.json["title"].is_string());
        assert!(self.json["detail"].is_string());
        &self.json
    }
}

/// A server under test, with its temp directories.
pub struct TestServer {
    /// `http://127.0.0.1:port`.
    pub base: String,
    /// Temp dir for filesystem destinations.
    pub out: TempDir,
    /// The data directory.
    pub data: TempDir,
    client: reqwest::Client,
    server: Option<RunningServer>,
}

/// Engine settings for tests: quick polling, breakers that stay out of the way.
pub fn test_engine(config: &Config) -> EngineSettings {
    EngineSettings {
        idle_poll: Duration::from_millis(100),
        breaker: BreakerSettings { failure_threshold: 1000, cool_down: Duration::from_secs(1) },
        shutdown_grace: Duration::from_secs(5),
        ..engine_settings(config)
    }
}

/// Parses a config tree (JSON is YAML) and fails the test on any error.
pub fn config_from(tree: &Value) -> Config {
    let env: HashMap<&str, &str> = HashMap::new();
    let (config, errors) = Config::parse(&tree.to_string(), &env);
    assert!(errors.is_empty(), "config errors: {errors:?}");
    config
}

impl TestServer {
    /// Starts a server on `config` (listen and storage are overridden).
    pub async fn start(config: Value) -> TestServer {
        let data = TempDir::new().unwrap();
        let out = TempDir::new().unwrap();
        TestServer::start_in(config, data, out).await
    }

    /// Starts a server on an existing data directory (restarts).
    pub async fn start_in(config: Value, data: TempDir, out: TempDir) -> TestServer {
        let mut config = config_from(&config);
        config.server.listen = "127.0.0.1:0".parse().unwrap();
        config.storage.path = data.path().to_path_buf();
        let mut opts = ServeOptions::new(config.clone());
        opts.engine = Some(test_engine(&config));
        let server = outflow_server::start(opts).await.expect("server starts");
        TestServer {
            base: server.base_url(),
            out,
            data,
            client: reqwest::Client::new(),
            server: Some(server),
        }
    }

    /// Stops it gracefully, keeping the directories.
    pub async fn stop(mut self) -> (TempDir, TempDir) {
        if let Some(s) = self.server.take() {
            s.shutdown().await;
        }
        (self.data, self.out)
    }

    /// A path in the filesystem-destination temp dir.
    pub fn out_path(&self, name: &str) -> String {
        self.out.path().join(name).display().to_string()
    }

    /// Any request.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        content_type: Option<&str>,
        body: Option<Vec<u8>>,
    ) -> Answer {
        let mut req = self.client.request(method, format!("{}{path}", self.base));
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        if let Some(body) = body {
            req = req.body(body);
        }
        let resp = req.send().await.expect("request reaches the server");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let bytes = resp.bytes().await.unwrap();
        let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Answer { status, headers, bytes, json }
    }

    /// GET.
    pub async fn get(&self, path: &str) -> Answer {
        self.request(Method::GET, path, None, None).await
    }

    /// POST a JSON body.
    pub async fn post(&self, path: &str, body: &Value) -> Answer {
        self.request(
            Method::POST,
            path,
            Some("application/json"),
            Some(body.to_string().into_bytes()),
        )
        .await
    }

    /// PUT raw bytes with a Content-Type.
    pub async fn put(&self, path: &str, content_type: &str, body: &[u8]) -> Answer {
        self.request(Method::PUT, path, Some(content_type), Some(body.to_vec())).await
    }

    /// DELETE.
    pub async fn delete(&self, path: &str) -> Answer {
        self.request(Method::DELETE, path, None, None).await
    }

    /// Submits a job; asserts 201; returns it.
    pub async fn submit(&self, body: Value) -> Value {
        let a = self.post("/api/v1/jobs", &body).await;
        assert_eq!(a.status, 201, "submit failed: {}", a.json);
        a.json
    }

    /// Waits until `check` returns `Some` (polling every 25 ms), at most `secs` seconds.
    pub async fn wait_for<T, F, Fut>(&self, secs: u64, what: &str, mut check: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Option<T>>,
    {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(t) = check().await {
                return t;
            }
            assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Waits until every delivery of `job` is in `state`; returns them.
    pub async fn wait_deliveries(&self, job: i64, state: &str) -> Vec<Value> {
        self.wait_for(20, &format!("job {job}'s deliveries to be {state}"), || async {
            let a = self.get(&format!("/api/v1/jobs/{job}/deliveries")).await;
            let data = a.json["data"].as_array()?.clone();
            (!data.is_empty() && data.iter().all(|d| d["state"] == state)).then_some(data)
        })
        .await
    }
}

/// A webhook destination to `rx` that signs with [`whsec`] and gives up after one attempt
/// on retryable errors (fast tests).
pub fn signed_hook(rx: &Receiver, path: &str) -> Value {
    json!({
        "type": "webhook",
        "url": rx.url(path),
        "auth": {"type": "signature", "secret": whsec()},
        "retry_policy": {"max_attempts": 2, "initial_delay_ms": 50, "max_delay_ms": 100,
                         "backoff_multiplier": 2.0, "jitter": 0.0}
    })
}

/// A config with `global_destinations` and `tasks`, webhooks allowed to reach 127.0.0.1.
pub fn config(globals: Value, tasks: Value) -> Value {
    json!({
        "output": {
            "allowed_hosts": ["127.0.0.1"],
            "global_destinations": globals,
        },
        "tasks": tasks,
    })
}
