//! The Kafka destination: one record per output, produced with librdkafka (`rdkafka`).
//!
//! ```yaml
//! type: kafka
//! brokers: [kafka1:9092, kafka2:9092]   # or "kafka1:9092,kafka2:9092"
//! topic: "jobs-{{task_name}}"          # template, validated after rendering
//! topic_field: service                 # optional: the output field naming the topic
//!                                      # (topic is then the fallback when it is absent)
//! key: "{{job_uuid}}"                  # template for the record key, or...
//! partition_key: user_id               # ...the output field whose value is the key
//! partition_strategy: hash             # hash (default), random, round_robin, manual
//! partition: 0                         # with manual: a number or a template
//! required_acks: all                   # 0, 1, -1 / all (default)
//! idempotent: true                     # needs required_acks: all
//! compression: zstd                    # none (default), gzip, snappy, lz4, zstd
//!                                      # (compression_codec is the same key)
//! max_message_bytes: 1000000           # default 1000000, Kafka's broker default
//! batch_size: 10000                    # librdkafka batch.num.messages
//! batch_timeout: 5ms                   # librdkafka linger.ms
//! sasl: { mechanism: SCRAM-SHA-512, username: svc, password: "${KAFKA_PASSWORD}" }
//!   # or the flat form: sasl_enabled: true, sasl_mechanism, sasl_username, sasl_password
//! tls: { enabled: true, ca_file: /etc/ssl/kafka-ca.pem, cert_file: ..., key_file: ...,
//!        insecure_skip_verify: false }
//! headers: { x-task: "{{task_name}}" }  # values are templates
//! format: raw                          # default raw: JSON compact, text and bytes as-is
//! timeout: 30s                         # default output.default_timeout
//! retry_policy: { max_attempts: 5 }
//! ```
//!
//! **Records.** The value is the output in `format`; every record carries the headers
//! `outflow-delivery-id` (the delivery id, identical on every retry) and `outflow-job-uuid`,
//! plus the configured ones. The key is the rendered `key`, or the `partition_key` field of
//! a JSON output (no key when the field is absent). `topic_field` and `partition_key` read a
//! field by name, dotted path (`user.id`) or JSON pointer (`/user/id`); only strings,
//! numbers and booleans count.
//!
//! **Partitions.** `hash` uses the key's murmur2 hash, as the Java client does (records
//! without a key go to a random partition); `random` ignores the key; `round_robin` takes
//! the topic's partitions in turn (the partition count is read from the cluster and cached
//! for a minute); `manual` uses `partition`.
//!
//! **Guarantee: at-least-once.** A delivery succeeds when the broker acknowledged the record
//! with `required_acks`. Kafka cannot drop a duplicate that a *new* producer sends, so a
//! retry after a failed attempt or a restart can write the record twice; consumers dedupe on
//! the `outflow-delivery-id` header. `idempotent: true` makes the broker drop the duplicates
//! librdkafka's own internal retries would create within one producer session (the same
//! record resent after a lost acknowledgement), and keeps the order per partition.
//!
//! **Failures.** Each delivery is bounded by `timeout` (librdkafka's `message.timeout.ms`).
//! A record too large, an unknown topic or partition (on a cluster that does not create
//! topics), missing authorization, failed authentication and refused settings are
//! permanent; timeouts, unreachable brokers, leader changes and a full producer queue are
//! retryable. librdkafka reports a failed SASL authentication once and then lets messages
//! time out, so the destination remembers it (until a delivery succeeds, at most 5 minutes)
//! and keeps such attempts permanent. Messages name the topic and the brokers. `deliver_batch` enqueues every record
//! and reports each one's own acknowledgement, so only the records that failed are retried.
//!
//! **Connections.** One librdkafka producer per destination, created on first use and
//! kept; librdkafka reconnects by itself after a broker restart (backing off at most 1 s).
//! A fatal producer error (possible with `idempotent`) drops it, and the next attempt
//! creates a new one.

pub mod client;
pub mod config;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use outflow_core::config::{ConfigError, DestinationSpec};
use outflow_core::context::RenderContext;
use outflow_core::output::Output;
use outflow_core::retry::RetryPolicy;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureRecord, Producer as _};
use rdkafka::util::Timeout;

use self::client::{Client, classify, create_client};
use self::config::{
    DELIVERY_ID_HEADER, JOB_UUID_HEADER, KafkaConfig, PartitionChoice, PartitionStrategy,
    validate_topic,
};
use crate::{
    Attempt, BatchResults, BuildDefaults, CheckReport, DeliveryError, DeliveryReceipt, Destination,
};

/// How long a topic's partition count is trusted by `round_robin` before it is read again.
const PARTITION_COUNT_TTL: Duration = Duration::from_secs(60);

/// How long to wait between tries when librdkafka's queue is full.
const QUEUE_FULL_PAUSE: Duration = Duration::from_millis(5);

/// Extra time given to librdkafka to report a delivery after `message.timeout.ms`, before
/// outflow stops waiting for the report itself.
const REPORT_GRACE: Duration = Duration::from_secs(5);

/// Parses and validates a `type: kafka` body.
pub fn build(
    spec: &DestinationSpec,
    defaults: &BuildDefaults,
    path: &str,
) -> Result<Arc<dyn Destination>, Vec<ConfigError>> {
    let cfg = KafkaConfig::parse(spec, defaults, path)?;
    Ok(Arc::new(KafkaDestination::new(cfg)))
}

/// A configured Kafka destination with its (lazily created) producer.
pub struct KafkaDestination {
    cfg: KafkaConfig,
    /// Created on the first delivery or check, not when the destination is built: specs are
    /// built to validate them, and a producer starts threads and connections. Never held
    /// across an `.await`.
    client: Mutex<Option<Client>>,
    /// `round_robin`: partition counts per topic, with when they were read.
    partition_counts: Mutex<HashMap<String, (i32, Instant)>>,
    /// `round_robin`: the next turn.
    turn: AtomicU64,
}

impl std::fmt::Debug for KafkaDestination {
    /// Header values and credentials are left out: they may hold tokens.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let header_names: Vec<&str> = self.cfg.headers.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("KafkaDestination")
            .field("brokers", &self.cfg.brokers)
            .field("topic", &self.cfg.topic.as_ref().map(|t| t.source()))
            .field("topic_field", &self.cfg.topic_field.as_ref().map(|p| p.source()))
            .field("partition_strategy", &self.cfg.partition_strategy)
            .field("acks", &self.cfg.acks)
            .field("idempotent", &self.cfg.idempotent)
            .field("compression", &self.cfg.compression)
            .field("sasl", &self.cfg.sasl.as_ref().map(|s| s.mechanism))
            .field("tls", &self.cfg.tls.is_some())
            .field("headers", &header_names)
            .field("format", &self.cfg.format.name())
            .field("timeout", &self.cfg.timeout)
            .finish()
    }
}

/// One record, rendered, before it is handed to librdkafka.
struct Record {
    topic: String,
    key: Option<String>,
    partition: Option<i32>,
    headers: OwnedHeaders,
    payload: Vec<u8>,
}

/// A record in flight, or why it never left.
enum Pending {
    Sent { future: DeliveryFuture, topic: String, bytes: u64 },
    Failed(DeliveryError),
}

impl KafkaDestination {
    /// A destination for `cfg`; nothing connects until the first delivery or check.
    pub fn new(cfg: KafkaConfig) -> Self {
        KafkaDestination {
            cfg,
            client: Mutex::new(None),
            partition_counts: Mutex::new(HashMap::new()),
            turn: AtomicU64::new(0),
        }
    }

    /// The validated configuration.
    pub fn config(&self) -> &KafkaConfig {
        &self.cfg
    }

    /// The producer, created on first use.
    fn client(&self) -> Result<Client, DeliveryError> {
        let mut guard = self.client.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(client) = guard.as_ref() {
            return Ok(client.clone());
        }
        let client = create_client(&self.cfg)?;
        *guard = Some(client.clone());
        Ok(client)
    }

    /// Drops the producer after a fatal error so the next attempt starts a fresh one.
    fn discard_client(&self) {
        let old = self.client.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(old) = old {
            // Dropping a producer purges and flushes it (up to 500 ms): not on a runtime thread.
            tokio::task::spawn_blocking(move || drop(old));
        }
    }

    /// "topic 'x' on brokers a:9092,b:9092", for messages.
    fn target(&self, topic: &str) -> String {
        format!("topic '{topic}' on brokers {}", self.cfg.bootstrap_servers())
    }

    /// Renders the topic: the `topic_field` of a JSON output, else the `topic` template.
    fn topic(&self, ctx: &RenderContext<'_>) -> Result<String, DeliveryError> {
        let cfg = &self.cfg;
        let from_field = cfg.topic_field.as_ref().and_then(|field| match ctx.output {
            Output::Json(value) => field.lookup(value),
            _ => None,
        });
        let (topic, origin) = match (from_field, &cfg.topic) {
            (Some(topic), _) => {
                let field = cfg.topic_field.as_ref().map(|f| f.source()).unwrap_or_default();
                (topic, format!("the output field '{field}' (topic_field)"))
            }
            (None, Some(template)) => {
                let topic = template.render(ctx).map_err(|e| {
                    DeliveryError::permanent(format!(
                        "cannot render the topic template '{}' (brokers {}): {e}",
                        template.source(),
                        cfg.bootstrap_servers()
                    ))
                })?;
                (topic, format!("the template '{}'", template.source()))
            }
            (None, None) => {
                let field = cfg.topic_field.as_ref().map(|f| f.source()).unwrap_or_default();
                return Err(DeliveryError::permanent(format!(
                    "the output has no field '{field}' (topic_field) to name the topic, and no \
                     topic is configured as a fallback (brokers {})",
                    cfg.bootstrap_servers()
                )));
            }
        };
        validate_topic(&topic).map_err(|msg| {
            DeliveryError::permanent(format!(
                "{msg} (from {origin}; brokers {})",
                cfg.bootstrap_servers()
            ))
        })?;
        Ok(topic)
    }

    /// Renders everything but a round-robin partition.
    fn render(&self, ctx: &RenderContext<'_>) -> Result<Record, DeliveryError> {
        let cfg = &self.cfg;
        let topic = self.topic(ctx)?;
        let target = || self.target(&topic);
        let key = match (&cfg.key, &cfg.partition_key) {
            (Some(template), _) => Some(template.render(ctx).map_err(|e| {
                DeliveryError::permanent(format!(
                    "cannot render the key template '{}' for {}: {e}",
                    template.source(),
                    target()
                ))
            })?),
            (None, Some(field)) => match ctx.output {
                Output::Json(value) => field.lookup(value),
                _ => None,
            },
            (None, None) => None,
        };
        let partition = match &cfg.partition_strategy {
            PartitionStrategy::Manual(PartitionChoice::Fixed(p)) => Some(*p),
            PartitionStrategy::Manual(PartitionChoice::Template(template)) => {
                let text = template.render(ctx).map_err(|e| {
                    DeliveryError::permanent(format!(
                        "cannot render the partition template '{}' for {}: {e}",
                        template.source(),
                        target()
                    ))
                })?;
                match text.trim().parse::<i32>() {
                    Ok(p) if p >= 0 => Some(p),
                    _ => {
                        return Err(DeliveryError::permanent(format!(
                            "the partition template '{}' rendered '{text}', which is not a \
                             partition number (0 or more), for {}",
                            template.source(),
                            target()
                        )));
                    }
                }
            }
            _ => None,
        };
        let mut headers = OwnedHeaders::new_with_capacity(cfg.headers.len() + 2)
            .insert(Header { key: DELIVERY_ID_HEADER, value: Some(ctx.delivery_id) });
        let job_uuid = ctx.job.job_uuid.to_string();
        headers = headers.insert(Header { key: JOB_UUID_HEADER, value: Some(job_uuid.as_str()) });
        for (name, template) in &cfg.headers {
            let value = template.render(ctx).map_err(|e| {
                DeliveryError::permanent(format!(
                    "cannot render header '{name}' for {}: {e}",
                    target()
                ))
            })?;
            headers = headers.insert(Header { key: name, value: Some(value.as_str()) });
        }
        let payload = cfg
            .format
            .render(ctx)
            .map_err(|e| DeliveryError::permanent(format!("{e} (for {})", target())))?;
        Ok(Record { topic, key, partition, headers, payload })
    }

    /// `round_robin`: the next partition of `topic`.
    async fn next_partition(&self, client: &Client, topic: &str) -> Result<i32, DeliveryError> {
        let cached = {
            let counts = self.partition_counts.lock().unwrap_or_else(|p| p.into_inner());
            counts.get(topic).filter(|(_, at)| at.elapsed() < PARTITION_COUNT_TTL).map(|(n, _)| *n)
        };
        let count = match cached {
            Some(n) => n,
            None => {
                let n = self.partition_count(client, topic).await?;
                let mut counts = self.partition_counts.lock().unwrap_or_else(|p| p.into_inner());
                counts.insert(topic.to_string(), (n, Instant::now()));
                n
            }
        };
        let turn = self.turn.fetch_add(1, Ordering::Relaxed);
        Ok(i32::try_from(turn % u64::from(count.unsigned_abs().max(1))).unwrap_or(0))
    }

    /// How many partitions `topic` has, from the cluster's metadata.
    async fn partition_count(&self, client: &Client, topic: &str) -> Result<i32, DeliveryError> {
        let started = Instant::now();
        let producer = client.producer.clone();
        let name = topic.to_string();
        let timeout = self.cfg.timeout;
        let metadata = tokio::task::spawn_blocking(move || {
            producer.client().fetch_metadata(Some(&name), Timeout::After(timeout))
        })
        .await
        .map_err(|e| DeliveryError::retryable(format!("metadata lookup stopped: {e}")))?
        .map_err(|e| classify(&e, &self.target(topic), client.errors.since(started), timeout))?;
        let found = metadata.topics().iter().find(|t| t.name() == topic);
        match found {
            Some(t) if t.error().is_none() && !t.partitions().is_empty() => {
                Ok(i32::try_from(t.partitions().len()).unwrap_or(i32::MAX))
            }
            Some(t) => {
                let code = t
                    .error()
                    .map(RDKafkaErrorCode::from)
                    .unwrap_or(RDKafkaErrorCode::UnknownPartition);
                Err(classify(&KafkaError::MetadataFetch(code), &self.target(topic), None, timeout))
            }
            None => Err(classify(
                &KafkaError::MetadataFetch(RDKafkaErrorCode::UnknownTopicOrPartition),
                &self.target(topic),
                None,
                timeout,
            )),
        }
    }

    /// Hands one rendered record to librdkafka, waiting while its queue is full (until
    /// `deadline`).
    async fn enqueue(&self, client: &Client, record: Record, deadline: Instant) -> Pending {
        let bytes = record.payload.len() as u64;
        let mut future_record =
            FutureRecord::to(&record.topic).payload(&record.payload).headers(record.headers);
        if let Some(key) = &record.key {
            future_record = future_record.key(key.as_str());
        }
        if let Some(p) = record.partition {
            future_record = future_record.partition(p);
        }
        loop {
            match client.producer.send_result(future_record) {
                Ok(future) => return Pending::Sent { future, topic: record.topic, bytes },
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back))
                    if Instant::now() < deadline =>
                {
                    future_record = back;
                    tokio::time::sleep(QUEUE_FULL_PAUSE).await;
                }
                Err((err, _)) => {
                    let target = self.target(&record.topic);
                    let mut failure = classify(&err, &target, None, self.cfg.timeout);
                    if matches!(
                        err.rdkafka_error_code(),
                        Some(RDKafkaErrorCode::MessageSizeTooLarge)
                    ) {
                        failure.message = format!(
                            "the record is too large for {target}: {bytes} bytes of value (plus \
                             key and headers) exceed max_message_bytes ({})",
                            self.cfg.max_message_bytes
                        );
                    }
                    return Pending::Failed(failure);
                }
            }
        }
    }

    /// Waits for one record's acknowledgement.
    async fn settle(
        &self,
        client: &Client,
        pending: Pending,
        started: Instant,
    ) -> Result<DeliveryReceipt, DeliveryError> {
        let (future, topic, bytes) = match pending {
            Pending::Sent { future, topic, bytes } => (future, topic, bytes),
            Pending::Failed(e) => return Err(e),
        };
        let target = self.target(&topic);
        let wait = self.cfg.timeout + REPORT_GRACE;
        let report = match tokio::time::timeout(wait, future).await {
            Ok(Ok(report)) => report,
            Ok(Err(_canceled)) => {
                return Err(DeliveryError::retryable(format!(
                    "the producer for {target} was closed before the record was acknowledged"
                )));
            }
            Err(_) => {
                return Err(DeliveryError::retryable(format!(
                    "no delivery report from {target} within {} ms",
                    wait.as_millis()
                )));
            }
        };
        match report {
            Ok(delivery) => {
                client.errors.delivered();
                Ok(DeliveryReceipt {
                    target: format!("kafka://{}/{topic}", self.cfg.bootstrap_servers()),
                    status_code: None,
                    bytes,
                    response_excerpt: Some(format!(
                        "partition {}, offset {}",
                        delivery.partition, delivery.offset
                    )),
                })
            }
            Err((err, _message)) => {
                if matches!(err.rdkafka_error_code(), Some(RDKafkaErrorCode::Fatal)) {
                    self.discard_client();
                }
                Err(classify(&err, &target, client.errors.since(started), self.cfg.timeout))
            }
        }
    }

    /// Renders and enqueues one record (choosing its round-robin partition).
    async fn produce(
        &self,
        client: &Client,
        ctx: &RenderContext<'_>,
        deadline: Instant,
    ) -> Pending {
        let mut record = match self.render(ctx) {
            Ok(record) => record,
            Err(e) => return Pending::Failed(e),
        };
        if self.cfg.partition_strategy == PartitionStrategy::RoundRobin {
            match self.next_partition(client, &record.topic).await {
                Ok(p) => record.partition = Some(p),
                Err(e) => return Pending::Failed(e),
            }
        }
        self.enqueue(client, record, deadline).await
    }
}

#[async_trait]
impl Destination for KafkaDestination {
    fn kind(&self) -> &'static str {
        "kafka"
    }

    fn describe(&self) -> String {
        let cfg = &self.cfg;
        let topic = match (&cfg.topic_field, &cfg.topic) {
            (Some(field), Some(t)) => format!("(field {}, else {})", field.source(), t.source()),
            (Some(field), None) => format!("(field {})", field.source()),
            (None, Some(t)) => t.source().to_string(),
            (None, None) => String::new(),
        };
        format!("kafka://{}/{topic}", cfg.bootstrap_servers())
    }

    /// One cluster is one failure domain: destinations writing to the same brokers share
    /// their concurrency limit and circuit breaker, whatever their topics.
    fn isolation_key(&self) -> String {
        format!("kafka:{}", self.cfg.bootstrap_servers())
    }

    fn retry_policy(&self) -> &RetryPolicy {
        &self.cfg.retry_policy
    }

    async fn deliver(&self, attempt: Attempt<'_>) -> Result<DeliveryReceipt, DeliveryError> {
        let started = Instant::now();
        let client = self.client()?;
        let pending = self.produce(&client, &attempt.render, started + self.cfg.timeout).await;
        self.settle(&client, pending, started).await
    }

    /// Enqueues every record first (librdkafka batches them per partition), then waits for
    /// each record's own acknowledgement: one failed record fails alone.
    async fn deliver_batch(&self, records: &[Attempt<'_>]) -> BatchResults {
        let started = Instant::now();
        let client = match self.client() {
            Ok(client) => client,
            Err(e) => return vec![Err(e); records.len()],
        };
        let deadline = started + self.cfg.timeout;
        let mut pending = Vec::with_capacity(records.len());
        for record in records {
            pending.push(self.produce(&client, &record.render, deadline).await);
        }
        let settled = pending.into_iter().map(|p| self.settle(&client, p, started));
        futures::future::join_all(settled).await
    }

    async fn check(&self) -> Result<CheckReport, DeliveryError> {
        let started = Instant::now();
        let client = self.client()?;
        // A static topic is checked too; a templated one cannot be named without a job.
        let topic = match (&self.cfg.topic_field, &self.cfg.topic) {
            (None, Some(t)) if t.is_static() => Some(t.source().to_string()),
            _ => None,
        };
        let producer = client.producer.clone();
        let timeout = self.cfg.timeout;
        let name = topic.clone();
        let metadata = tokio::task::spawn_blocking(move || {
            producer.client().fetch_metadata(name.as_deref(), Timeout::After(timeout))
        })
        .await
        .map_err(|e| DeliveryError::retryable(format!("metadata lookup stopped: {e}")))?;
        let brokers = self.cfg.bootstrap_servers();
        let metadata = metadata.map_err(|e| {
            let target = match &topic {
                Some(t) => self.target(t),
                None => format!("brokers {brokers}"),
            };
            classify(&e, &target, client.errors.since(started), timeout)
        })?;
        if metadata.brokers().is_empty() {
            return Err(DeliveryError::retryable(format!("brokers {brokers} list no brokers")));
        }
        if let Some(topic) = &topic {
            let code = match metadata.topics().iter().find(|t| t.name() == topic) {
                Some(t) => t.error().map(RDKafkaErrorCode::from),
                None => Some(RDKafkaErrorCode::UnknownTopicOrPartition),
            };
            if let Some(code) = code {
                return Err(classify(
                    &KafkaError::MetadataFetch(code),
                    &self.target(topic),
                    None,
                    timeout,
                ));
            }
        }
        let target = match &topic {
            Some(t) => format!("kafka://{brokers}/{t}"),
            None => format!("kafka://{brokers}"),
        };
        Ok(CheckReport { target, elapsed: started.elapsed() })
    }
}
