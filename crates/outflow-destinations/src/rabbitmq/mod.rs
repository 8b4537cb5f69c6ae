//! The RabbitMQ destination (AMQP 0-9-1 through `lapin`): each delivery is one message,
//! published with publisher confirms.
//!
//! ```yaml
//! destination:
//!   type: rabbitmq
//!   url: "amqp://outflow:${RABBITMQ_PASSWORD}@rabbitmq:5672/%2f"   # amqps:// for TLS
//!   exchange: outputs          # default "": the default exchange, which routes by queue name
//!   exchange_type: topic       # direct (default), fanout, topic, headers
//!   declare_exchange: true     # default false: the exchange must exist
//!   routing_key: "jobs.{{task_name}}"   # default: the rendered queue name
//!   queue_name: "events_{{task_name}}"  # or `queue`: declared durable and bound (seed 003)
//!   persistent: true           # default true: delivery_mode 2
//!   mandatory: true            # default true: an unroutable message fails the delivery
//!   format: raw                # default raw; json, yaml, csv, xml, ndjson, template
//!   content_type: application/json      # default: from the format
//!   headers:
//!     x-tenant: "{{meta.tenant}}"
//!   timeout_seconds: 30        # default: output.default_timeout
//! ```
//!
//! A delivery succeeds only when the broker confirms the message (publisher confirms): a
//! nack, or a message returned as unroutable while `mandatory` is on, fails it. Messages
//! carry `message_id` = the delivery id, the format's content type, `app_id: outflow`, a
//! timestamp, the templated headers and `outflow-job-uuid`. The guarantee is at-least-once:
//! a retry after a lost confirm publishes again, and consumers drop the copy by
//! `message_id`.
//!
//! One connection and one confirm-mode channel are opened lazily and shared by all
//! deliveries. A channel closed by the broker (missing exchange) is reopened on the next
//! attempt; a cut connection is dropped and reconnected on the next attempt. Access refused
//! (bad credentials, no permission), a missing exchange with `declare_exchange: false`, a
//! queue declared with other arguments and an unroutable message are permanent; connection
//! failures and timeouts are retryable.

mod config;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use lapin::options::{
    BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::protocol::{AMQPErrorKind, AMQPHardError, AMQPSoftError};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{
    BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, ErrorKind,
    ExchangeKind, PublisherConfirm,
};
use outflow_core::config::mask_url_secrets;
use outflow_core::config::{ConfigError, DestinationSpec};
use outflow_core::retry::RetryPolicy;
use tokio::sync::Mutex;

use crate::messaging::{self, within};
use crate::{
    Attempt, BatchResults, BuildDefaults, CheckReport, DeliveryError, DeliveryReceipt, Destination,
};
use config::RabbitConfig;

/// Parses and validates a `type: rabbitmq` body.
pub fn build(
    spec: &DestinationSpec,
    defaults: &BuildDefaults,
    path: &str,
) -> Result<Arc<dyn Destination>, Vec<ConfigError>> {
    let config = config::parse(spec, defaults, path)?;
    let masked_url = mask_url_secrets(config.url.expose());
    Ok(Arc::new(RabbitDestination { config, masked_url, link: Mutex::new(None) }))
}

/// A configured RabbitMQ destination.
pub struct RabbitDestination {
    config: RabbitConfig,
    /// The URL with its password masked, for messages.
    masked_url: String,
    /// The open connection and channel, created on first use.
    link: Mutex<Option<Link>>,
}

impl std::fmt::Debug for RabbitDestination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RabbitDestination").field("target", &self.describe()).finish()
    }
}

/// One connection, its confirm-mode channel, and what was declared through it.
struct Link {
    connection: Arc<Connection>,
    channel: Channel,
    /// Whether the exchange was declared (with `declare_exchange`).
    exchange_ready: bool,
    /// Queues declared and bound on this connection, with their binding keys (rendered).
    queues: HashSet<(String, String)>,
}

/// One message, rendered and ready to publish.
struct Message {
    routing_key: String,
    queue: Option<String>,
    payload: Vec<u8>,
    properties: BasicProperties,
    target: String,
}

impl RabbitDestination {
    fn target(&self, routing_key: &str, queue: Option<&str>) -> String {
        let mut t = format!(
            "{} exchange '{}' routing key '{routing_key}'",
            self.masked_url, self.config.exchange
        );
        if let Some(q) = queue {
            t.push_str(&format!(" queue '{q}'"));
        }
        t
    }

    /// Renders names, body and properties of one delivery; failures are permanent.
    fn message(&self, attempt: &Attempt<'_>) -> Result<Message, DeliveryError> {
        let cfg = &self.config;
        let ctx = &attempt.render;
        let queue = match &cfg.queue {
            Some(t) => {
                let q = messaging::render(t, "queue", ctx)?;
                check_rendered(&q, "queue")?;
                if q.is_empty() {
                    return Err(DeliveryError::permanent(format!(
                        "queue template '{}' rendered an empty name",
                        t.source()
                    )));
                }
                if q.starts_with("amq.") {
                    return Err(DeliveryError::permanent(format!(
                        "queue '{q}' starts with 'amq.', which RabbitMQ reserves"
                    )));
                }
                Some(q)
            }
            None => None,
        };
        let routing_key = match (&cfg.routing_key, &queue) {
            (Some(t), _) => messaging::render(t, "routing_key", ctx)?,
            (None, Some(q)) => q.clone(),
            (None, None) => {
                return Err(DeliveryError::permanent("neither routing_key nor queue is set"));
            }
        };
        check_rendered(&routing_key, "routing key")?;
        let payload = messaging::payload(&cfg.format, ctx)?;
        let mut headers = FieldTable::default();
        for (name, value) in messaging::render_headers(&cfg.headers, ctx)? {
            headers.insert(ShortString::from(name), AMQPValue::LongString(LongString::from(value)));
        }
        headers.insert(
            ShortString::from(messaging::JOB_UUID_HEADER),
            AMQPValue::LongString(LongString::from(ctx.job.job_uuid.to_string())),
        );
        let content_type = match &cfg.content_type {
            Some(ct) => ct.clone(),
            None => cfg.format.content_type_for(ctx.output).to_string(),
        };
        let mut properties = BasicProperties::default()
            .with_message_id(ShortString::from(ctx.delivery_id))
            .with_content_type(ShortString::from(content_type))
            .with_app_id(ShortString::from("outflow"))
            .with_timestamp(chrono::Utc::now().timestamp().max(0) as u64)
            .with_headers(headers);
        if cfg.persistent {
            properties = properties.with_delivery_mode(2);
        }
        let target = self.target(&routing_key, queue.as_deref());
        Ok(Message { routing_key, queue, payload, properties, target })
    }

    /// The shared channel, (re)opened when needed, with the exchange declared and each
    /// `(queue, routing key)` of `bindings` declared and bound.
    async fn channel(&self, bindings: &[(&str, &str)]) -> Result<Channel, DeliveryError> {
        let mut guard = self.link.lock().await;
        let reusable = guard
            .as_ref()
            .is_some_and(|l| l.connection.status().connected() && l.channel.status().connected());
        if !reusable {
            let old = guard.take();
            *guard = Some(self.open(old).await?);
        }
        let link = guard.as_mut().expect("link was just opened");
        let cfg = &self.config;
        if cfg.declare_exchange && !link.exchange_ready {
            link.channel
                .exchange_declare(
                    ShortString::from(cfg.exchange.as_str()),
                    exchange_kind(cfg.exchange_type),
                    ExchangeDeclareOptions { durable: true, ..Default::default() },
                    FieldTable::default(),
                )
                .await
                .map_err(|e| self.error(&e, &format!("declaring exchange '{}'", cfg.exchange)))?;
            link.exchange_ready = true;
        }
        for &(queue, key) in bindings {
            if link.queues.contains(&(queue.to_string(), key.to_string())) {
                continue;
            }
            link.channel
                .queue_declare(
                    ShortString::from(queue),
                    QueueDeclareOptions { durable: true, ..Default::default() },
                    FieldTable::default(),
                )
                .await
                .map_err(|e| self.error(&e, &format!("declaring queue '{queue}'")))?;
            // The default exchange binds every queue by its name already (and refuses
            // explicit bindings).
            if !cfg.exchange.is_empty() {
                link.channel
                    .queue_bind(
                        ShortString::from(queue),
                        ShortString::from(cfg.exchange.as_str()),
                        ShortString::from(key),
                        QueueBindOptions::default(),
                        FieldTable::default(),
                    )
                    .await
                    .map_err(|e| {
                        self.error(
                            &e,
                            &format!(
                                "binding queue '{queue}' to exchange '{}' with key '{key}'",
                                cfg.exchange
                            ),
                        )
                    })?;
            }
            link.queues.insert((queue.to_string(), key.to_string()));
        }
        Ok(link.channel.clone())
    }

    /// Opens a connection and a confirm-mode channel, reusing `old`'s connection when only
    /// its channel was closed (by a channel error such as a missing exchange).
    async fn open(&self, old: Option<Link>) -> Result<Link, DeliveryError> {
        let connection = match old {
            Some(link) if link.connection.status().connected() => link.connection,
            Some(link) => {
                // Let the broken connection's I/O loop end instead of leaking it.
                let conn = link.connection;
                tokio::spawn(async move {
                    let _ = conn.close(320, ShortString::from("reconnecting")).await;
                });
                Arc::new(self.connect().await?)
            }
            None => Arc::new(self.connect().await?),
        };
        let channel =
            connection.create_channel().await.map_err(|e| self.error(&e, "opening a channel"))?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(|e| self.error(&e, "enabling publisher confirms"))?;
        Ok(Link { connection, channel, exchange_ready: false, queues: HashSet::new() })
    }

    async fn connect(&self) -> Result<Connection, DeliveryError> {
        let props = ConnectionProperties::default()
            .with_connection_name(LongString::from("outflow".to_string()));
        Connection::connect(self.config.url.expose(), props)
            .await
            .map_err(|e| self.error(&e, "connecting"))
    }

    /// Forgets the link after a failure that may have left it half-open (a timeout, an I/O
    /// error), so the next attempt reconnects instead of waiting on a dead socket.
    async fn forget_link(&self) {
        if let Some(link) = self.link.lock().await.take() {
            tokio::spawn(async move {
                let _ = link.connection.close(320, ShortString::from("reconnecting")).await;
            });
        }
    }

    /// A lapin error as a delivery error naming the broker and the step.
    fn error(&self, e: &lapin::Error, step: &str) -> DeliveryError {
        classify(e, &format!("{}: {step}", self.masked_url), &self.config.exchange)
    }

    /// Publishes and waits for the broker's confirm.
    async fn publish(
        &self,
        channel: &Channel,
        msg: &Message,
    ) -> Result<PublisherConfirm, DeliveryError> {
        channel
            .basic_publish(
                ShortString::from(self.config.exchange.as_str()),
                ShortString::from(msg.routing_key.as_str()),
                BasicPublishOptions { mandatory: self.config.mandatory, immediate: false },
                &msg.payload,
                msg.properties.clone(),
            )
            .await
            .map_err(|e| {
                classify(&e, &format!("{}: publishing", msg.target), &self.config.exchange)
            })
    }

    fn confirmed(
        &self,
        msg: &Message,
        confirm: Result<Confirmation, lapin::Error>,
    ) -> Result<DeliveryReceipt, DeliveryError> {
        match confirm {
            Ok(Confirmation::Ack(None)) => Ok(DeliveryReceipt {
                target: msg.target.clone(),
                bytes: msg.payload.len() as u64,
                ..DeliveryReceipt::default()
            }),
            Ok(Confirmation::Ack(Some(returned)) | Confirmation::Nack(Some(returned))) => {
                Err(DeliveryError::permanent(format!(
                    "{}: the broker returned the message as unroutable ({} {}): no queue is \
                     bound for this routing key (bind one, set queue, or set mandatory: false \
                     to let the broker drop such messages)",
                    msg.target, returned.reply_code, returned.reply_text
                )))
            }
            Ok(Confirmation::Nack(None)) => Err(DeliveryError::retryable(format!(
                "{}: the broker nacked the message (it could not take responsibility for it)",
                msg.target
            ))),
            Ok(Confirmation::NotRequested) => Err(DeliveryError::retryable(format!(
                "{}: the channel is not in confirm mode, so the publish is unconfirmed",
                msg.target
            ))),
            Err(e) => Err(classify(
                &e,
                &format!("{}: waiting for the confirm", msg.target),
                &self.config.exchange,
            )),
        }
    }

    /// Publishes `messages` on one channel and waits for every confirm.
    async fn publish_all(
        &self,
        messages: &[&Message],
    ) -> Vec<Result<DeliveryReceipt, DeliveryError>> {
        let mut bindings: Vec<(&str, &str)> = messages
            .iter()
            .filter_map(|m| m.queue.as_deref().map(|q| (q, m.routing_key.as_str())))
            .collect();
        bindings.sort_unstable();
        bindings.dedup();
        let channel = match self.channel(&bindings).await {
            Ok(c) => c,
            Err(e) => return messages.iter().map(|_| Err(e.clone())).collect(),
        };
        let mut pending = Vec::with_capacity(messages.len());
        for msg in messages {
            pending.push(self.publish(&channel, msg).await);
        }
        let mut results = Vec::with_capacity(messages.len());
        for (msg, published) in messages.iter().zip(pending) {
            results.push(match published {
                Ok(confirm) => self.confirmed(msg, confirm.await),
                Err(e) => Err(e),
            });
        }
        results
    }
}

/// Validates a rendered routing key or queue name.
fn check_rendered(name: &str, what: &str) -> Result<(), DeliveryError> {
    config::check_name(name, what)
        .map_err(|msg| DeliveryError::permanent(format!("rendered {msg}")))
}

fn exchange_kind(name: &str) -> ExchangeKind {
    match name {
        "fanout" => ExchangeKind::Fanout,
        "topic" => ExchangeKind::Topic,
        "headers" => ExchangeKind::Headers,
        _ => ExchangeKind::Direct,
    }
}

/// Classifies a lapin error: refusals the broker will repeat are permanent, connection
/// trouble is retryable.
fn classify(e: &lapin::Error, context: &str, exchange: &str) -> DeliveryError {
    match e.kind() {
        ErrorKind::ProtocolError(amqp) => {
            let text = amqp.get_message().as_str();
            let code = amqp.get_id();
            match amqp.kind() {
                AMQPErrorKind::Soft(AMQPSoftError::ACCESSREFUSED) => {
                    DeliveryError::permanent(format!(
                        "{context} failed: access refused ({code}: {text}): bad credentials or no \
                     permission on this vhost/resource"
                    ))
                }
                AMQPErrorKind::Soft(AMQPSoftError::NOTFOUND) => DeliveryError::permanent(format!(
                    "{context} failed: not found ({code}: {text}); if exchange '{exchange}' does not \
                     exist, create it or set declare_exchange: true"
                )),
                AMQPErrorKind::Soft(AMQPSoftError::PRECONDITIONFAILED) => {
                    DeliveryError::permanent(format!(
                        "{context} failed: precondition failed ({code}: {text}); an existing \
                         exchange or queue was declared with other settings"
                    ))
                }
                AMQPErrorKind::Soft(AMQPSoftError::CONTENTTOOLARGE) => DeliveryError::permanent(
                    format!("{context} failed: message too large for the broker ({code}: {text})"),
                ),
                AMQPErrorKind::Hard(AMQPHardError::NOTALLOWED) => {
                    DeliveryError::permanent(format!(
                        "{context} failed: not allowed ({code}: {text}): the user may not use this vhost"
                    ))
                }
                AMQPErrorKind::Hard(
                    AMQPHardError::FRAMEERROR
                    | AMQPHardError::SYNTAXERROR
                    | AMQPHardError::COMMANDINVALID
                    | AMQPHardError::NOTIMPLEMENTED
                    | AMQPHardError::INVALIDPATH,
                ) => DeliveryError::permanent(format!("{context} failed: {code}: {text}")),
                _ => DeliveryError::retryable(format!("{context} failed: {code}: {text}")),
            }
        }
        ErrorKind::InvalidProtocolVersion(_) => {
            DeliveryError::permanent(format!("{context} failed: {e}"))
        }
        // I/O errors, closed connections or channels, missed heartbeats: the broker may be
        // back on a later attempt.
        _ => DeliveryError::retryable(format!("{context} failed: {e}")),
    }
}

#[async_trait]
impl Destination for RabbitDestination {
    fn kind(&self) -> &'static str {
        "rabbitmq"
    }

    fn describe(&self) -> String {
        let key = match (&self.config.routing_key, &self.config.queue) {
            (Some(t), _) | (None, Some(t)) => t.source(),
            (None, None) => "",
        };
        let queue = self.config.queue.as_ref().map(|q| q.source());
        self.target(key, queue)
    }

    fn isolation_key(&self) -> String {
        format!("rabbitmq:{}", self.masked_url)
    }

    fn retry_policy(&self) -> &RetryPolicy {
        &self.config.retry_policy
    }

    async fn deliver(&self, attempt: Attempt<'_>) -> Result<DeliveryReceipt, DeliveryError> {
        let msg = self.message(&attempt)?;
        let result = within(self.config.timeout, &msg.target, "publishing", async {
            self.publish_all(&[&msg]).await.pop().expect("one result per message")
        })
        .await;
        if result.as_ref().is_err_and(DeliveryError::is_retryable) {
            self.forget_link().await;
        }
        result
    }

    async fn deliver_batch(&self, records: &[Attempt<'_>]) -> BatchResults {
        let rendered: Vec<Result<Message, DeliveryError>> =
            records.iter().map(|a| self.message(a)).collect();
        let ready: Vec<&Message> = rendered.iter().filter_map(|m| m.as_ref().ok()).collect();
        let describe = self.describe();
        let published =
            match tokio::time::timeout(self.config.timeout, self.publish_all(&ready)).await {
                Ok(results) => results,
                Err(_) => {
                    let e = DeliveryError::retryable(format!(
                        "{describe}: publishing a batch of {} timed out",
                        ready.len()
                    ));
                    ready.iter().map(|_| Err(e.clone())).collect()
                }
            };
        let results = messaging::merge_results(rendered, published);
        if results.iter().any(|r| r.as_ref().is_err_and(DeliveryError::is_retryable)) {
            self.forget_link().await;
        }
        results
    }

    async fn check(&self) -> Result<CheckReport, DeliveryError> {
        let started = Instant::now();
        let target = self.describe();
        let result = within(self.config.timeout, &target, "health check", async {
            let channel = self.channel(&[]).await?;
            // A round trip on the shared channel proves the connection is alive; a passive
            // declare also proves the exchange exists.
            let exchange =
                if self.config.exchange.is_empty() { "amq.direct" } else { &self.config.exchange };
            channel
                .exchange_declare(
                    ShortString::from(exchange),
                    exchange_kind(self.config.exchange_type),
                    ExchangeDeclareOptions { passive: true, ..Default::default() },
                    FieldTable::default(),
                )
                .await
                .map_err(|e| self.error(&e, &format!("checking exchange '{exchange}'")))
        })
        .await;
        if result.is_err() {
            self.forget_link().await;
        }
        result?;
        Ok(CheckReport { target, elapsed: started.elapsed() })
    }
}
