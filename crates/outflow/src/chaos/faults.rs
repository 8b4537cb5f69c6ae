//! `outflow chaos faults`: webhooks delivered to a receiver that, by turns, is too slow,
//! resets the connection, answers 500/503, answers 429 with `Retry-After: 1`, or accepts.
//! Every delivery must end `delivered` or `dead`, and its attempt records must match what
//! the receiver saw: the statuses of the attempts that got an answer are exactly the
//! answers the receiver gave that webhook-id, in order, and the attempts without a status
//! (timeouts, resets) are exactly the requests it left unanswered.
//!
//! The receiver is a small hand-written HTTP/1.1 responder on a `TcpListener`, because a
//! framework would not let a handler drop the connection without answering.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

use crate::bench::Report;
use crate::bench::harness::ChildServer;
use crate::cli::ChaosFaultsArgs;

/// The destination's timeout; a slow answer takes longer than this.
const TIMEOUT_SECONDS: u64 = 1;
/// How long a slow request is held before the receiver gives up on it.
const SLOW_HOLD: Duration = Duration::from_millis(2500);

/// What the receiver does with one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Fault {
    /// Answers 204.
    Accept,
    /// Holds the request past the destination's timeout, then closes without answering.
    Slow,
    /// Closes the connection (RST) without answering.
    Reset,
    /// Answers 500.
    Status500,
    /// Answers 503.
    Status503,
    /// Answers 429 with `Retry-After: 1`.
    TooMany,
}

/// The turn order: request `n` gets `SCHEDULE[n % len]`. Three accepts in eight give a
/// delivery with 6 attempts a ~94 % chance to succeed, so both final states show up.
const SCHEDULE: [Fault; 8] = [
    Fault::Accept,
    Fault::Status500,
    Fault::Reset,
    Fault::Accept,
    Fault::TooMany,
    Fault::Slow,
    Fault::Accept,
    Fault::Status503,
];

/// The fault of the `n`-th request (0-based) the receiver gets.
pub fn fault_for(n: u64) -> Fault {
    SCHEDULE[(n % SCHEDULE.len() as u64) as usize]
}

impl Fault {
    /// The status the receiver answers, `None` when it answers nothing.
    pub fn status(self) -> Option<u16> {
        match self {
            Fault::Accept => Some(204),
            Fault::Status500 => Some(500),
            Fault::Status503 => Some(503),
            Fault::TooMany => Some(429),
            Fault::Slow | Fault::Reset => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Fault::Accept => "accept",
            Fault::Slow => "slow",
            Fault::Reset => "reset",
            Fault::Status500 => "status_500",
            Fault::Status503 => "status_503",
            Fault::TooMany => "status_429",
        }
    }
}

/// What the receiver did for one webhook-id.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Seen {
    /// Statuses answered, in order.
    pub answered: Vec<u16>,
    /// Requests left without an answer (slow or reset).
    pub unanswered: usize,
}

/// The receiver's ledger.
#[derive(Default)]
struct Ledger {
    next: AtomicU64,
    per_id: Mutex<HashMap<String, Seen>>,
    per_fault: Mutex<BTreeMap<Fault, u64>>,
}

/// Runs the scenario; the second value lists broken invariants (empty when all held).
pub async fn run(args: &ChaosFaultsArgs) -> anyhow::Result<(Report, Vec<String>)> {
    let ledger = Arc::new(Ledger::default());
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let hook = format!("http://{}/hook", listener.local_addr()?);
    tokio::spawn(accept_loop(listener, ledger.clone()));
    let server = ChildServer::start(json!({
        "output": {
            "max_concurrent_deliveries": 64,
            "per_destination_concurrency": 64,
            "default_timeout": TIMEOUT_SECONDS,
            // Failures are the point here; an open breaker would only slow the run down.
            "circuit_breaker": {"failure_threshold": 1_000_000, "cool_down": "1s"},
            "allowed_hosts": ["127.0.0.1"],
            "global_destinations": [{"name": "hook", "destination": {
                "type": "webhook", "url": hook, "timeout_seconds": TIMEOUT_SECONDS,
                "retry_policy": {"max_attempts": 6, "initial_delay_ms": 50,
                                 "max_delay_ms": 400, "backoff_multiplier": 2.0}
            }}]
        }
    }))
    .await?;
    let started = Instant::now();
    let job_ids = submit(&server, args.jobs).await?;

    // Wait (bounded) until no delivery is pending, in flight or scheduled.
    let deadline = Instant::now() + Duration::from_secs(60 + args.jobs as u64 / 5);
    let mut unsettled = u64::MAX;
    while unsettled > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        unsettled = 0;
        for state in ["pending", "in_flight", "scheduled"] {
            let page = server
                .client
                .list_deliveries(&[("state", state.to_string()), ("limit", "1".to_string())])
                .await?;
            unsettled += page["total"].as_u64().unwrap_or(0);
        }
    }
    let settle_time = started.elapsed();

    let mut failures = Vec::new();
    let mut per_state: BTreeMap<String, u64> = BTreeMap::new();
    let mut attempts_total = 0usize;
    for id in &job_ids {
        let page = server.client.job_deliveries(id).await?;
        for d in page["data"].as_array().into_iter().flatten() {
            let delivery = Delivered::from_view(d);
            attempts_total += delivery.attempts.len();
            *per_state.entry(delivery.state.clone()).or_default() += 1;
            let seen = ledger.per_id.lock().expect("not poisoned").get(&delivery.id).cloned();
            if let Err(why) = check(&delivery, &seen.unwrap_or_default()) {
                failures.push(format!("job {id}, delivery {}: {why}", delivery.id));
            }
        }
    }
    let deliveries: u64 = per_state.values().sum();
    if deliveries != job_ids.len() as u64 {
        failures.push(format!("{} jobs but {deliveries} deliveries", job_ids.len()));
    }

    let mut report = Report::new("faults");
    report.add("jobs", job_ids.len() as f64, "count");
    for (fault, n) in ledger.per_fault.lock().expect("not poisoned").iter() {
        report.add(format!("requests_{}", fault.name()), *n as f64, "count");
    }
    report.add("attempts_recorded", attempts_total as f64, "count");
    for (state, n) in &per_state {
        report.add(format!("deliveries_{state}"), *n as f64, "count");
    }
    report.add("mismatches", failures.len() as f64, "count");
    report.add("settle_time", settle_time.as_secs_f64(), "s");
    Ok((report, failures))
}

/// Submits `jobs` jobs to the `hook` destination (8 clients) and returns their numeric ids.
async fn submit(server: &ChildServer, jobs: usize) -> anyhow::Result<Vec<String>> {
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (client, next) = (server.client.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= jobs as u64 {
                    return Ok::<_, outflow_client::ClientError>(ids);
                }
                let body = json!({"destinations": ["hook"], "input_data": {"n": n}});
                let (job, _) = client.submit_job(&body).await?;
                let id = job["id"].to_string();
                let output = serde_json::to_vec(&json!({"n": n})).unwrap_or_default();
                client.put_output(&id, "application/json", output.into()).await?;
                ids.push(id);
            }
        }));
    }
    let mut all = Vec::with_capacity(jobs);
    for t in tasks {
        all.extend(t.await??);
    }
    Ok(all)
}

/// A delivery as the API reports it, reduced to what is compared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivered {
    /// The delivery id, which is the `webhook-id`.
    pub id: String,
    /// Its state.
    pub state: String,
    /// Each recorded attempt's status, oldest first.
    pub attempts: Vec<Option<u16>>,
    /// The `attempt_count` field.
    pub attempt_count: u64,
}

impl Delivered {
    fn from_view(v: &Value) -> Delivered {
        Delivered {
            id: v["id"].as_str().unwrap_or_default().to_string(),
            state: v["state"].as_str().unwrap_or_default().to_string(),
            attempts: v["attempts"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|a| a["status_code"].as_u64().and_then(|s| u16::try_from(s).ok()))
                .collect(),
            attempt_count: v["attempt_count"].as_u64().unwrap_or(0),
        }
    }
}

/// Checks one delivery against what the receiver saw for its webhook-id.
pub fn check(d: &Delivered, seen: &Seen) -> Result<(), String> {
    if d.state != "delivered" && d.state != "dead" {
        return Err(format!("ended {:?}, expected delivered or dead", d.state));
    }
    if d.attempt_count != d.attempts.len() as u64 {
        return Err(format!(
            "attempt_count {} but {} attempt records",
            d.attempt_count,
            d.attempts.len()
        ));
    }
    let recorded: Vec<u16> = d.attempts.iter().flatten().copied().collect();
    if recorded != seen.answered {
        return Err(format!(
            "attempts recorded statuses {recorded:?}, the receiver answered {:?}",
            seen.answered
        ));
    }
    let without = d.attempts.iter().filter(|a| a.is_none()).count();
    if without != seen.unanswered {
        return Err(format!(
            "{without} attempts without a status, the receiver left {} requests unanswered",
            seen.unanswered
        ));
    }
    let accepted = seen.answered.iter().filter(|s| (200..300).contains(*s)).count();
    match (d.state.as_str(), accepted) {
        ("delivered", 1) | ("dead", 0) => Ok(()),
        (state, n) => Err(format!("ended {state} but the receiver accepted it {n} times")),
    }
}

async fn accept_loop(listener: TcpListener, ledger: Arc<Ledger>) {
    while let Ok((stream, _)) = listener.accept().await {
        tokio::spawn(serve_connection(stream, ledger.clone()));
    }
}

/// Serves the requests of one keep-alive connection until a fault closes it.
async fn serve_connection(stream: TcpStream, ledger: Arc<Ledger>) {
    let mut stream = BufReader::new(stream);
    while let Some(webhook_id) = read_request(&mut stream).await {
        let fault = fault_for(ledger.next.fetch_add(1, Ordering::SeqCst));
        // Recorded before answering: the server may record the attempt as soon as it reads
        // the answer, and the comparison only runs once everything has settled.
        *ledger.per_fault.lock().expect("not poisoned").entry(fault).or_default() += 1;
        {
            let mut per_id = ledger.per_id.lock().expect("not poisoned");
            let seen = per_id.entry(webhook_id).or_default();
            match fault.status() {
                Some(s) => seen.answered.push(s),
                None => seen.unanswered += 1,
            }
        }
        let head = match fault {
            Fault::Accept => "HTTP/1.1 204 No Content\r\n",
            Fault::Status500 => "HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\n",
            Fault::Status503 => "HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n",
            Fault::TooMany => {
                "HTTP/1.1 429 Too Many Requests\r\nretry-after: 1\r\ncontent-length: 0\r\n"
            }
            Fault::Slow => {
                tokio::time::sleep(SLOW_HOLD).await;
                return;
            }
            Fault::Reset => {
                // Zero linger: dropping the socket sends RST instead of a clean FIN.
                let _ = stream.get_ref().set_zero_linger();
                return;
            }
        };
        if stream.write_all(format!("{head}\r\n").as_bytes()).await.is_err() {
            return;
        }
    }
}

/// Reads one HTTP/1.1 request (head and `content-length` body); returns its `webhook-id`
/// (empty when absent), or `None` at the end of the connection or on a malformed request.
async fn read_request(stream: &mut BufReader<TcpStream>) -> Option<String> {
    let (mut webhook_id, mut length) = (String::new(), 0usize);
    let mut line = String::new();
    let mut first = true;
    loop {
        line.clear();
        if stream.read_line(&mut line).await.ok()? == 0 {
            return None;
        }
        let trimmed = line.trim_end();
        if trimmed.is_empty() {
            if first {
                continue; // tolerate a stray CRLF between requests
            }
            break;
        }
        first = false;
        if let Some((name, value)) = trimmed.split_once(':') {
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                length = value.parse().ok()?;
            } else if name.eq_ignore_ascii_case("webhook-id") {
                webhook_id = value.to_string();
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                return None; // the webhook destination always sends a sized body
            }
        }
    }
    let mut body = vec![0; length];
    stream.read_exact(&mut body).await.ok()?;
    Some(webhook_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delivered(state: &str, attempts: &[Option<u16>]) -> Delivered {
        Delivered {
            id: "dlv_1".into(),
            state: state.into(),
            attempts: attempts.to_vec(),
            attempt_count: attempts.len() as u64,
        }
    }

    #[test]
    fn the_schedule_cycles_through_every_fault() {
        let first: Vec<Fault> = (0..8).map(fault_for).collect();
        assert_eq!(first, SCHEDULE);
        assert_eq!(fault_for(8), Fault::Accept);
        assert_eq!(fault_for(13), Fault::Slow);
        for f in [Fault::Slow, Fault::Reset, Fault::Status500, Fault::Status503, Fault::TooMany] {
            assert!(SCHEDULE.contains(&f), "{f:?} never happens");
        }
        assert_eq!(Fault::TooMany.status(), Some(429));
        assert_eq!(Fault::Reset.status(), None);
    }

    #[test]
    fn matching_records_pass() {
        let seen = Seen { answered: vec![500, 429, 204], unanswered: 2 };
        let d = delivered("delivered", &[Some(500), None, Some(429), None, Some(204)]);
        assert_eq!(check(&d, &seen), Ok(()));
        let dead = delivered("dead", &[Some(503), None]);
        assert_eq!(check(&dead, &Seen { answered: vec![503], unanswered: 1 }), Ok(()));
    }

    #[test]
    fn disagreements_are_named() {
        let seen = Seen { answered: vec![500, 204], unanswered: 0 };
        assert_eq!(
            check(&delivered("delivered", &[Some(204)]), &seen),
            Err("attempts recorded statuses [204], the receiver answered [500, 204]".into())
        );
        assert_eq!(
            check(&delivered("delivered", &[Some(500), None, Some(204)]), &seen),
            Err("1 attempts without a status, the receiver left 0 requests unanswered".into())
        );
        assert_eq!(
            check(&delivered("scheduled", &[]), &Seen::default()),
            Err("ended \"scheduled\", expected delivered or dead".into())
        );
        assert_eq!(
            check(&delivered("dead", &[Some(500), Some(204)]), &seen),
            Err("ended dead but the receiver accepted it 1 times".into())
        );
        let mut short = delivered("dead", &[]);
        short.attempt_count = 2;
        assert_eq!(
            check(&short, &Seen::default()),
            Err("attempt_count 2 but 0 attempt records".into())
        );
    }
}
