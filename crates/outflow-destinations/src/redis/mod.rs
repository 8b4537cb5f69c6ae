//! The redis destination: lists, Python RQ queues, streams and pub/sub channels.
//!
//! ```yaml
//! type: redis
//! url: "redis://:${REDIS_PASSWORD}@cache.internal:6379/0"   # or rediss:// for TLS
//! # host: cache.internal   # instead of url (seed 003's connection form), with port, tls
//! # username: app          # ACL user; password: "${REDIS_PASSWORD}"; db: 0 (override the URL's)
//! # tls_ca_file: /etc/ssl/redis-ca.pem   # trust this PEM bundle instead of the built-in roots
//! # tls_insecure: false                  # skip certificate verification (testing only)
//! mode: list                   # list (default), rq, stream, pubsub
//! key: "outputs:{{task_name}}" # the list, stream, channel or RQ queue name (template)
//! push: right                  # list: right (RPUSH, default) or left (LPUSH)
//! max_length: 10000            # list: keep only the newest N entries (LTRIM)
//! # maxlen: 100000             # stream: XADD MAXLEN ~ N
//! # approximate_maxlen: true   # stream: "~" (default, efficient) or exact trimming
//! envelope: true               # list/pubsub: wrap in the JSON envelope (default true)
//! format: json_compact         # optional: the payload format
//! timeout_seconds: 10          # connect and per-command timeout; default output.default_timeout
//! retry_policy: { max_attempts: 5 }
//! ```
//!
//! **Payloads.** `list` and `pubsub` have no headers, so by default every value is a compact
//! JSON envelope `{"delivery_id", "job_uuid", "task_name", "data"}` where `data` is the
//! output (JSON as-is, text as a string, binary as base64; with a `format`, the formatted
//! text as a string): consumers dedupe on `delivery_id`. `envelope: false` sends the bare
//! payload (the `format`, default `raw`: text as-is, JSON compact). `stream` entries have
//! the fields `delivery_id`, `job_uuid` and `data` (the payload as in `envelope: false`).
//!
//! **`mode: rq`** enqueues a job a Python [RQ](https://python-rq.org) worker runs (seed
//! 003's `redis_rq` module: `queue_name` is accepted for `key`, `function` is the dotted
//! path of the callable). The worker must use RQ's JSON serializer (`rq worker
//! --serializer rq.serializers.JSONSerializer QUEUE`), because RQ's default pickle format
//! is Python-only. The job is written the way RQ's own `Queue.enqueue(..., job_id=...,
//! unique=True)` writes it: the `rq:job:<id>` hash (`data` = zlib-compressed JSON
//! `[function, null, [output], {}]`, `origin`, `status: queued`, `created_at`,
//! `enqueued_at`, `timeout` from `job_timeout` (default 180 s), `result_ttl` (default
//! 500 s), `description`, `meta` = `{delivery_id, job_uuid, task_name}`), the id pushed on
//! `rq:queue:<name>` and the queue added to `rq:queues`, atomically in one Lua script. The
//! function is called with one argument: the output (JSON as-is, text as a string, binary
//! as base64; with a `format`, the formatted text).
//!
//! **Duplicates.** Every mode carries the delivery id (envelope, stream field, RQ job id and
//! meta), so consumers can drop a redelivery. `rq` goes further: the job id *is* the
//! delivery id (hashed when it has characters RQ refuses) and the script enqueues only when
//! `rq:job:<id>` does not exist, so a redelivery while the job is queued, running or kept
//! (its `result_ttl`, or RQ's failure TTL) enqueues nothing.
//!
//! **Outcome.** A delivery succeeds when Redis answered the command: the list length, the
//! stream entry id, the number of pub/sub receivers (0 is still a success: the server took
//! it) or the RQ job id is in the receipt. Authentication failures (`NOAUTH`, `WRONGPASS`),
//! `NOPERM`, `WRONGTYPE` (the key holds another type), other command errors (`ERR`), a
//! server certificate that does not verify and bad rendered names are permanent;
//! connection errors, timeouts, `LOADING`, `BUSY`, `TRYAGAIN`, `READONLY` (a failover) and
//! `OOM` are retryable. The connection is a [`redis::aio::ConnectionManager`]: created on
//! first use, shared, and reconnected after the server restarts. `deliver_batch` sends all
//! records in one pipeline (one round trip) and reports each record's own result.

pub mod config;

use std::fmt;
use std::io::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use outflow_core::config::{ConfigError, DestinationSpec};
use outflow_core::context::RenderContext;
use outflow_core::retry::RetryPolicy;
use redis::aio::ConnectionManager;
use serde_json::{Value, json};
use sha2::Digest as _;

use self::config::{Mode, Push, RedisConfig};
use crate::{
    Attempt, BatchResults, BuildDefaults, CheckReport, DeliveryError, DeliveryReceipt, Destination,
};

/// The longest rendered key accepted, in bytes.
pub const MAX_KEY_BYTES: usize = 1024;

/// Parses and validates a `type: redis` body.
pub fn build(
    spec: &DestinationSpec,
    defaults: &BuildDefaults,
    path: &str,
) -> Result<Arc<dyn Destination>, Vec<ConfigError>> {
    let cfg = RedisConfig::parse(spec, defaults, path)?;
    Ok(Arc::new(RedisDestination { cfg, manager: tokio::sync::OnceCell::new() }))
}

/// A configured redis destination with its shared, self-reconnecting connection.
pub struct RedisDestination {
    cfg: RedisConfig,
    manager: tokio::sync::OnceCell<ConnectionManager>,
}

impl fmt::Debug for RedisDestination {
    /// The URL is shown masked; the password never.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisDestination")
            .field("url", &self.cfg.display_url)
            .field("mode", &self.cfg.mode)
            .field("key", &self.cfg.key.source())
            .field("timeout", &self.cfg.timeout)
            .finish_non_exhaustive()
    }
}

/// One record turned into the command that delivers it.
struct Prepared {
    /// The rendered key (list, stream, channel or queue).
    key: String,
    /// The command.
    cmd: redis::Cmd,
    /// Payload bytes sent.
    bytes: u64,
    /// The RQ job id, in `rq` mode.
    job_id: Option<String>,
}

/// The RQ enqueue, as RQ's own `save_unique_job` does it: nothing when the job hash exists
/// (a redelivery), else the hash, the queue push and the queue registration, atomically.
/// KEYS: job hash, queue list, `rq:queues`. ARGV: job id, queue key, then hash field/value
/// pairs. Returns 1 when enqueued, 0 when the job already existed.
const RQ_ENQUEUE_SCRIPT: &str = r#"
if redis.call("EXISTS", KEYS[1]) == 1 then
  return 0
end
redis.call("HSET", KEYS[1], unpack(ARGV, 3))
redis.call("RPUSH", KEYS[2], ARGV[1])
redis.call("SADD", KEYS[3], ARGV[2])
return 1
"#;

impl RedisDestination {
    /// The validated configuration.
    pub fn config(&self) -> &RedisConfig {
        &self.cfg
    }

    /// The client for the configured server, with credentials and TLS settings applied.
    fn client(&self) -> Result<redis::Client, DeliveryError> {
        use redis::IntoConnectionInfo as _;
        let cfg = &self.cfg;
        let bad = |e: redis::RedisError| {
            DeliveryError::permanent(format!(
                "invalid redis connection settings for {}: {}",
                cfg.display_url,
                describe_error(&e)
            ))
        };
        let mut info = cfg.url.expose().into_connection_info().map_err(bad)?;
        if matches!(info.addr(), redis::ConnectionAddr::TcpTls { .. }) {
            install_crypto_provider();
        }
        let mut settings = info.redis_settings().clone();
        if let Some(user) = &cfg.username {
            settings = settings.set_username(user);
        }
        if let Some(password) = &cfg.password {
            settings = settings.set_password(password.expose());
        }
        if let Some(db) = cfg.db {
            settings = settings.set_db(db);
        }
        info = info.set_redis_settings(settings);
        if cfg.tls_insecure
            && let redis::ConnectionAddr::TcpTls { host, port, tls_params, .. } =
                info.addr().clone()
        {
            info = info.set_addr(redis::ConnectionAddr::TcpTls {
                host,
                port,
                insecure: true,
                tls_params,
            });
        }
        match &cfg.tls_ca_file {
            Some(path) => {
                let pem = std::fs::read(path).map_err(|e| {
                    DeliveryError::permanent(format!(
                        "cannot read tls_ca_file {}: {e}",
                        path.display()
                    ))
                })?;
                let certs = redis::TlsCertificates { client_tls: None, root_cert: Some(pem) };
                redis::Client::build_with_tls(info, certs).map_err(bad)
            }
            None => redis::Client::open(info).map_err(bad),
        }
    }

    /// The shared connection, created on first use. A failed creation is not kept: the next
    /// attempt tries again.
    async fn connection(&self) -> Result<ConnectionManager, DeliveryError> {
        let manager = self
            .manager
            .get_or_try_init(|| async {
                let client = self.client()?;
                let config = redis::aio::ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(self.cfg.timeout))
                    .set_response_timeout(Some(self.cfg.timeout))
                    // Reconnect quickly after an outage; the engine's retries do the waiting.
                    .set_min_delay(Duration::from_millis(50))
                    .set_max_delay(Duration::from_secs(2))
                    .set_number_of_retries(2);
                let connect = client.get_connection_manager_with_config(config);
                match tokio::time::timeout(self.cfg.timeout, connect).await {
                    Ok(Ok(manager)) => Ok(manager),
                    Ok(Err(e)) => Err(classify(&e, &self.cfg.display_url)),
                    Err(_) => Err(DeliveryError::retryable(format!(
                        "connecting to redis at {} timed out after {:?}",
                        self.cfg.display_url, self.cfg.timeout
                    ))),
                }
            })
            .await?;
        Ok(manager.clone())
    }

    /// Runs `f` on the connection within the destination's timeout.
    async fn run<T, F>(&self, what: &str, f: F) -> Result<T, DeliveryError>
    where
        F: AsyncFnOnce(&mut ConnectionManager) -> redis::RedisResult<T>,
    {
        let started = Instant::now();
        let mut conn = self.connection().await?;
        let left = self.cfg.timeout.saturating_sub(started.elapsed()).max(Duration::from_millis(1));
        match tokio::time::timeout(left, f(&mut conn)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(classify(&e, what)),
            Err(_) => Err(DeliveryError::retryable(format!(
                "{what}: no answer from redis within {:?}",
                self.cfg.timeout
            ))),
        }
    }

    /// The target as receipts and messages show it: `redis://h:6379 list outputs:x`.
    fn target(&self, key: &str) -> String {
        format!("{} {} {key}", self.cfg.display_url, self.cfg.mode.key_noun())
    }

    /// Renders and validates the key of one delivery.
    fn render_key(&self, ctx: &RenderContext<'_>) -> Result<String, DeliveryError> {
        let noun = self.cfg.mode.key_noun();
        let key = self.cfg.key.render(ctx).map_err(|e| {
            DeliveryError::permanent(format!(
                "cannot render the {noun} name template '{}': {e}",
                self.cfg.key.source()
            ))
        })?;
        validate_key(&key).map_err(|why| {
            DeliveryError::permanent(format!(
                "invalid redis {noun} name '{}': {why}",
                key.escape_debug()
            ))
        })?;
        Ok(key)
    }

    /// The payload without the envelope: the format's bytes, or the raw output.
    fn bare_payload(&self, ctx: &RenderContext<'_>) -> Result<Vec<u8>, DeliveryError> {
        let format = self.cfg.format.as_ref().unwrap_or(&outflow_core::format::OutputFormat::Raw);
        format.render(ctx).map_err(|e| DeliveryError::permanent(e.to_string()))
    }

    /// The output as a JSON value for the envelope's `data` and RQ's argument: the output
    /// itself, or the formatted text when a `format` is set.
    fn data_value(&self, ctx: &RenderContext<'_>) -> Result<Value, DeliveryError> {
        match &self.cfg.format {
            None => Ok(ctx.output.to_json_value()),
            Some(_) => {
                let bytes = self.bare_payload(ctx)?;
                String::from_utf8(bytes).map(Value::String).map_err(|_| {
                    DeliveryError::permanent(
                        "the formatted output is not UTF-8 text and cannot be carried in JSON; \
                         use a text format",
                    )
                })
            }
        }
    }

    /// The value pushed or published in `list`/`pubsub` mode.
    fn list_payload(&self, ctx: &RenderContext<'_>) -> Result<Vec<u8>, DeliveryError> {
        if !self.cfg.envelope {
            return self.bare_payload(ctx);
        }
        let value = json!({
            "delivery_id": ctx.delivery_id,
            "job_uuid": ctx.job.job_uuid.to_string(),
            "task_name": ctx.job.task_name,
            "data": self.data_value(ctx)?,
        });
        Ok(serde_json::to_vec(&value).expect("JSON values always serialize"))
    }

    /// Builds the command that delivers one record.
    fn prepare(&self, ctx: &RenderContext<'_>) -> Result<Prepared, DeliveryError> {
        let key = self.render_key(ctx)?;
        let cfg = &self.cfg;
        let (cmd, bytes, job_id) = match cfg.mode {
            Mode::List | Mode::PubSub => {
                let payload = self.list_payload(ctx)?;
                let name = match (cfg.mode, cfg.push) {
                    (Mode::PubSub, _) => "PUBLISH",
                    (_, Push::Left) => "LPUSH",
                    (_, Push::Right) => "RPUSH",
                };
                let mut cmd = redis::cmd(name);
                cmd.arg(&key).arg(&payload);
                (cmd, payload.len() as u64, None)
            }
            Mode::Stream => {
                let payload = self.bare_payload(ctx)?;
                let mut cmd = redis::cmd("XADD");
                cmd.arg(&key);
                if let Some(maxlen) = cfg.maxlen {
                    cmd.arg("MAXLEN");
                    if cfg.approximate_maxlen {
                        cmd.arg("~");
                    }
                    cmd.arg(maxlen);
                }
                cmd.arg("*")
                    .arg("delivery_id")
                    .arg(ctx.delivery_id)
                    .arg("job_uuid")
                    .arg(ctx.job.job_uuid.to_string())
                    .arg("data")
                    .arg(&payload);
                (cmd, payload.len() as u64, None)
            }
            Mode::Rq => {
                let (cmd, bytes, job_id) = self.rq_enqueue(ctx, &key)?;
                (cmd, bytes, Some(job_id))
            }
        };
        Ok(Prepared { key, cmd, bytes, job_id })
    }

    /// The `EVAL` that enqueues one RQ job (see [`RQ_ENQUEUE_SCRIPT`]).
    fn rq_enqueue(
        &self,
        ctx: &RenderContext<'_>,
        queue: &str,
    ) -> Result<(redis::Cmd, u64, String), DeliveryError> {
        let rq = self.cfg.rq.as_ref().expect("rq mode has rq settings");
        let job_id = rq_job_id(ctx.delivery_id);
        // RQ's job tuple: (func_name, instance, args, kwargs), serialized by JSONSerializer.
        let data = json!([rq.function, Value::Null, [self.data_value(ctx)?], {}]);
        let data = serde_json::to_vec(&data).expect("JSON values always serialize");
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        let compressed = z.write_all(&data).and_then(|()| z.finish()).map_err(|e| {
            DeliveryError::permanent(format!("cannot compress the RQ job data: {e}"))
        })?;
        let meta = json!({
            "delivery_id": ctx.delivery_id,
            "job_uuid": ctx.job.job_uuid.to_string(),
            "task_name": ctx.job.task_name,
        });
        let now = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string();
        let queue_key = format!("rq:queue:{queue}");
        let fields: Vec<(&str, Vec<u8>)> = vec![
            ("created_at", now.clone().into_bytes()),
            ("data", compressed),
            ("success_callback_name", Vec::new()),
            ("failure_callback_name", Vec::new()),
            ("stopped_callback_name", Vec::new()),
            ("started_at", Vec::new()),
            ("ended_at", Vec::new()),
            ("last_heartbeat", Vec::new()),
            ("worker_name", Vec::new()),
            ("group_id", Vec::new()),
            ("origin", queue.as_bytes().to_vec()),
            (
                "description",
                format!("{}(<outflow delivery {}>)", rq.function, ctx.delivery_id).into_bytes(),
            ),
            ("enqueued_at", now.into_bytes()),
            ("timeout", rq.job_timeout.to_string().into_bytes()),
            ("result_ttl", rq.result_ttl.to_string().into_bytes()),
            ("status", b"queued".to_vec()),
            ("meta", serde_json::to_vec(&meta).expect("JSON values always serialize")),
        ];
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(RQ_ENQUEUE_SCRIPT)
            .arg(3)
            .arg(format!("rq:job:{job_id}"))
            .arg(&queue_key)
            .arg("rq:queues")
            .arg(&job_id)
            .arg(&queue_key);
        for (field, value) in fields {
            cmd.arg(field).arg(value);
        }
        Ok((cmd, data.len() as u64, job_id))
    }

    /// The receipt for one record from Redis's answer.
    fn receipt(&self, prepared: &Prepared, answer: &redis::Value) -> DeliveryReceipt {
        let n = match answer {
            redis::Value::Int(n) => Some(*n),
            _ => None,
        };
        let excerpt = match self.cfg.mode {
            Mode::List => format!("list length {}", n.unwrap_or_default()),
            Mode::PubSub => format!("{} receivers", n.unwrap_or_default()),
            Mode::Stream => match answer {
                redis::Value::BulkString(id) => format!("entry {}", String::from_utf8_lossy(id)),
                redis::Value::SimpleString(id) => format!("entry {id}"),
                other => format!("{other:?}"),
            },
            Mode::Rq => {
                let id = prepared.job_id.as_deref().unwrap_or_default();
                if n == Some(0) {
                    format!("RQ job {id} already exists; not enqueued again")
                } else {
                    format!("RQ job {id} enqueued")
                }
            }
        };
        DeliveryReceipt {
            target: self.target(&prepared.key),
            status_code: None,
            bytes: prepared.bytes,
            response_excerpt: Some(excerpt),
        }
    }

    /// `LTRIM` keeping the newest `max_length` entries, for `list` mode.
    fn trim(&self, key: &str) -> Option<redis::Cmd> {
        let max = i64::try_from(self.cfg.max_length?).unwrap_or(i64::MAX);
        let mut cmd = redis::cmd("LTRIM");
        match self.cfg.push {
            Push::Right => cmd.arg(key).arg(-max).arg(-1),
            Push::Left => cmd.arg(key).arg(0).arg(max - 1),
        };
        Some(cmd)
    }
}

/// Makes aws-lc-rs the process's rustls provider unless one is installed: the redis client
/// builds its TLS config with `ClientConfig::builder()`, which panics when the build holds
/// two providers (ring comes with some other clients) and none was chosen.
fn install_crypto_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // An error means a provider is already installed, which is all we need.
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    });
}

/// The RQ job id for a delivery: the delivery id itself when RQ accepts it (letters,
/// digits, `_`, `-`), else a hex digest of it, so it is stable across retries.
pub fn rq_job_id(delivery_id: &str) -> String {
    let accepted = !delivery_id.is_empty()
        && delivery_id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if accepted {
        delivery_id.to_string()
    } else {
        let digest = sha2::Sha256::digest(delivery_id.as_bytes());
        format!("outflow-{}", hex_lower(&digest[..16]))
    }
}

fn hex_lower(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Checks a rendered key: 1 to [`MAX_KEY_BYTES`] bytes, no whitespace or control
/// characters (a variable must not smuggle in a newline or an empty name).
pub fn validate_key(key: &str) -> Result<(), String> {
    if key.is_empty() {
        return Err("it is empty".into());
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(format!("it is longer than {MAX_KEY_BYTES} bytes"));
    }
    if let Some(c) = key.chars().find(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "it contains {:?}; names may not contain whitespace or control characters",
            c
        ));
    }
    Ok(())
}

/// A redis error in words, without the URL (which may carry a password).
fn describe_error(e: &redis::RedisError) -> String {
    match (e.code(), e.detail()) {
        (Some(code), Some(detail)) => format!("{code} {detail}"),
        _ => e.to_string(),
    }
}

/// Classifies a redis error; `target` names where it happened.
pub fn classify(e: &redis::RedisError, target: &str) -> DeliveryError {
    use redis::ErrorKind;
    let text = describe_error(e);
    let code = e.code().unwrap_or_default().to_ascii_uppercase();
    let permanent_code = matches!(
        code.as_str(),
        "NOAUTH" | "WRONGPASS" | "NOPERM" | "WRONGTYPE" | "ERR" | "EXECABORT" | "NOSCRIPT"
    );
    let retryable_err = code == "ERR" && text.contains("max number of clients");
    // A certificate the client refuses will be refused again: fix tls_ca_file instead.
    let bad_certificate = text.contains("invalid peer certificate");
    let permanent = (permanent_code && !retryable_err)
        || bad_certificate
        || matches!(
            e.kind(),
            ErrorKind::AuthenticationFailed
                | ErrorKind::InvalidClientConfig
                | ErrorKind::UnexpectedReturnType
        );
    let hint = match code.as_str() {
        "WRONGTYPE" => " (the key already holds a value of another type)",
        "NOAUTH" | "WRONGPASS" => " (authentication failed: check username and password)",
        "NOPERM" => " (the ACL user may not run this command on this key)",
        _ if bad_certificate => " (trust its CA with tls_ca_file, or tls_insecure for tests)",
        _ if e.kind() == ErrorKind::AuthenticationFailed => {
            " (authentication failed: check username and password)"
        }
        _ => "",
    };
    let message = format!("redis {target}: {text}{hint}");
    if permanent { DeliveryError::permanent(message) } else { DeliveryError::retryable(message) }
}

#[async_trait]
impl Destination for RedisDestination {
    fn kind(&self) -> &'static str {
        "redis"
    }

    fn describe(&self) -> String {
        format!("{} {} {}", self.cfg.display_url, self.cfg.mode.name(), self.cfg.key.source())
    }

    fn isolation_key(&self) -> String {
        format!("redis:{}", self.cfg.display_url)
    }

    fn retry_policy(&self) -> &RetryPolicy {
        &self.cfg.retry_policy
    }

    async fn deliver(&self, attempt: Attempt<'_>) -> Result<DeliveryReceipt, DeliveryError> {
        let prepared = self.prepare(&attempt.render)?;
        let target = self.target(&prepared.key);
        let trim = (self.cfg.mode == Mode::List).then(|| self.trim(&prepared.key)).flatten();
        tracing::debug!(target = %target, attempt = attempt.number, bytes = prepared.bytes,
            "sending to redis");
        let answer = self
            .run(&target, async |conn| {
                let mut pipe = redis::pipe();
                // Server errors come back as values, so each keeps its own code (WRONGTYPE...).
                pipe.ignore_errors().add_command(prepared.cmd.clone());
                if let Some(trim) = &trim {
                    pipe.add_command(trim.clone()).ignore();
                }
                let mut values: Vec<redis::Value> = pipe.query_async(conn).await?;
                Ok(if values.is_empty() { redis::Value::Nil } else { values.swap_remove(0) })
            })
            .await?;
        match answer {
            redis::Value::ServerError(err) => Err(classify(&err.into(), &target)),
            answer => Ok(self.receipt(&prepared, &answer)),
        }
    }

    async fn deliver_batch(&self, records: &[Attempt<'_>]) -> BatchResults {
        let mut results: Vec<Option<Result<DeliveryReceipt, DeliveryError>>> =
            Vec::with_capacity(records.len());
        let mut prepared = Vec::new();
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        for record in records {
            match self.prepare(&record.render) {
                Ok(p) => {
                    pipe.add_command(p.cmd.clone());
                    if self.cfg.mode == Mode::List
                        && let Some(trim) = self.trim(&p.key)
                    {
                        pipe.add_command(trim).ignore();
                    }
                    prepared.push((results.len(), p));
                    results.push(None);
                }
                Err(e) => results.push(Some(Err(e))),
            }
        }
        if !prepared.is_empty() {
            let what = format!("{} pipeline of {} records", self.cfg.display_url, prepared.len());
            let answers = self
                .run(&what, async |conn| pipe.query_async::<Vec<redis::Value>>(conn).await)
                .await;
            match answers {
                Ok(answers) if answers.len() == prepared.len() => {
                    for ((slot, p), answer) in prepared.iter().zip(answers) {
                        results[*slot] = Some(match answer {
                            redis::Value::ServerError(err) => {
                                Err(classify(&err.into(), &self.target(&p.key)))
                            }
                            answer => Ok(self.receipt(p, &answer)),
                        });
                    }
                }
                Ok(answers) => {
                    let err = DeliveryError::retryable(format!(
                        "{what}: redis answered {} results for {} commands",
                        answers.len(),
                        prepared.len()
                    ));
                    for (slot, _) in &prepared {
                        results[*slot] = Some(Err(err.clone()));
                    }
                }
                Err(err) => {
                    for (slot, _) in &prepared {
                        results[*slot] = Some(Err(err.clone()));
                    }
                }
            }
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(DeliveryError::retryable("record was not sent"))))
            .collect()
    }

    async fn check(&self) -> Result<CheckReport, DeliveryError> {
        let started = Instant::now();
        let target = self.cfg.display_url.clone();
        let pong: String =
            self.run(&target, async |conn| redis::cmd("PING").query_async(conn).await).await?;
        if !pong.eq_ignore_ascii_case("PONG") {
            return Err(DeliveryError::retryable(format!(
                "redis {target}: PING answered {pong:?}"
            )));
        }
        Ok(CheckReport { target, elapsed: started.elapsed() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rq_job_ids_are_the_delivery_id_or_a_stable_digest() {
        assert_eq!(rq_job_id("dlv_0190abc-1"), "dlv_0190abc-1");
        let hashed = rq_job_id("dlv/with:colon");
        assert!(hashed.starts_with("outflow-") && hashed.len() == 8 + 32, "{hashed}");
        assert_eq!(hashed, rq_job_id("dlv/with:colon"));
    }

    #[test]
    fn keys_are_validated() {
        assert!(validate_key("outputs:report").is_ok());
        assert!(validate_key("").unwrap_err().contains("empty"));
        assert!(validate_key("a b").unwrap_err().contains("whitespace"));
        assert!(validate_key("a\nFLUSHALL").is_err());
        assert!(validate_key(&"k".repeat(MAX_KEY_BYTES + 1)).unwrap_err().contains("longer"));
    }

    #[test]
    fn client_side_errors_are_classified() {
        let io = redis::RedisError::from(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "refused",
        ));
        assert!(classify(&io, "t").is_retryable());
        let auth = redis::RedisError::from((redis::ErrorKind::AuthenticationFailed, "auth"));
        assert!(!classify(&auth, "t").is_retryable());
    }
}
