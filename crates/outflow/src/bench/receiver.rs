//! A webhook receiver on 127.0.0.1 that records when each job's delivery arrived, and can
//! answer a share of requests with 503.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::http::StatusCode;
use axum::routing::post;
use serde_json::Value;

/// The receiver's ledger.
#[derive(Default)]
pub struct Ledger {
    /// Job UUID → when its first successful delivery arrived.
    pub arrivals: Mutex<HashMap<String, Instant>>,
    /// Requests answered 2xx.
    pub accepted: AtomicU64,
    /// Requests answered 503.
    pub rejected: AtomicU64,
    requests: AtomicU64,
}

/// A running receiver.
pub struct Receiver {
    /// The URL to deliver to.
    pub url: String,
    /// What arrived.
    pub ledger: Arc<Ledger>,
}

impl Receiver {
    /// Starts a receiver; `fail_percent` of requests get 503, spread evenly over the requests.
    pub async fn start(fail_percent: u32) -> anyhow::Result<Receiver> {
        let ledger = Arc::new(Ledger::default());
        let l = ledger.clone();
        let app = Router::new().route(
            "/hook",
            post(move |body: Bytes| {
                let l = l.clone();
                async move {
                    let n = l.requests.fetch_add(1, Ordering::Relaxed);
                    // Spread failures evenly (10 % = every 10th request), not in runs that
                    // would look like an outage to the circuit breaker.
                    let p = u64::from(fail_percent);
                    if p > 0 && (n * p) / 100 != ((n + 1) * p) / 100 {
                        l.rejected.fetch_add(1, Ordering::Relaxed);
                        return StatusCode::SERVICE_UNAVAILABLE;
                    }
                    let now = Instant::now();
                    if let Ok(envelope) = serde_json::from_slice::<Value>(&body)
                        && let Some(job) = envelope.get("job_uuid").and_then(Value::as_str)
                    {
                        l.arrivals
                            .lock()
                            .expect("not poisoned")
                            .entry(job.to_string())
                            .or_insert(now);
                    }
                    l.accepted.fetch_add(1, Ordering::Relaxed);
                    StatusCode::NO_CONTENT
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}/hook", listener.local_addr()?);
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Receiver { url, ledger })
    }
}
