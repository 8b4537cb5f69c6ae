//! The NATS destination (`async-nats`): core publish, or JetStream publish with ack.
//!
//! ```yaml
//! destination:
//!   type: nats
//!   url: "nats://nats:4222"          # or servers: [nats://n1:4222, nats://n2:4222]
//!   # one of: user + password, token, nkey (a seed), credentials_file (.creds)
//!   user: outflow
//!   password: "${NATS_PASSWORD}"
//!   tls: false                       # require TLS; ca_file: /etc/ssl/nats-ca.pem
//!   subject: "outputs.{{task_name}}"
//!   jetstream: true                  # default false: core NATS
//!   stream: OUTPUTS                  # JetStream: the stream that must store it
//!   create_stream: false             # create `stream` if missing, add rendered subjects to it
//!   format: raw                      # default raw; json, yaml, csv, xml, ndjson, template
//!   headers:
//!     x-tenant: "{{meta.tenant}}"
//!   timeout_seconds: 30
//! ```
//!
//! Every message carries the headers `Nats-Msg-Id` (the delivery id), `outflow-job-uuid`
//! and `Content-Type`, plus the templated ones.
//!
//! - **Core NATS**: the message is published, then a request nobody serves makes the server
//!   answer "no responders": success means the server has processed the message (it has
//!   passed it to the subscribers connected then). Core NATS stores nothing: failures
//!   outflow sees are retried (at-least-once, consumers dedupe by `Nats-Msg-Id`), but a
//!   subscriber that is not connected at that moment never gets the message. Use JetStream
//!   when the message must be kept.
//! - **JetStream**: success means the stream's PubAck. The stream drops a second message
//!   with the same `Nats-Msg-Id` inside its duplicate window (default two minutes), so a
//!   retry does not duplicate: effectively-once within that window, at-least-once beyond.
//!
//! An output larger than the server's `max_payload` (1 MiB by default) is a permanent
//! error that says so; so is a JetStream subject no stream captures (no responders), an
//! invalid rendered subject or stream name, and an authorization violation. A lost
//! connection, a timeout and a missing ack are retryable. The client reconnects by itself;
//! while it is disconnected an attempt waits for the connection (within its deadline)
//! rather than queueing the message inside the client.

mod config;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::connection::State;
use async_nats::jetstream::{self, context::PublishErrorKind as JsErrorKind};
use async_nats::{Client, ConnectErrorKind, ConnectOptions, HeaderMap};
use async_trait::async_trait;
use bytes::Bytes;
use outflow_core::config::mask_url_secrets;
use outflow_core::config::{ConfigError, DestinationSpec};
use outflow_core::retry::RetryPolicy;
use tokio::sync::Mutex;

use crate::messaging::{self, within};
use crate::{
    Attempt, BatchResults, BuildDefaults, CheckReport, DeliveryError, DeliveryReceipt, Destination,
};
use config::{Credentials, NatsConfig};

/// Parses and validates a `type: nats` body.
pub fn build(
    spec: &DestinationSpec,
    defaults: &BuildDefaults,
    path: &str,
) -> Result<Arc<dyn Destination>, Vec<ConfigError>> {
    let config = config::parse(spec, defaults, path)?;
    let masked =
        config.servers.iter().map(|s| mask_url_secrets(s.expose())).collect::<Vec<_>>().join(",");
    Ok(Arc::new(NatsDestination {
        config,
        masked,
        client: Mutex::new(None),
        streams: Mutex::new(HashSet::new()),
    }))
}

/// A configured NATS destination.
pub struct NatsDestination {
    config: NatsConfig,
    /// The servers with their passwords masked, for messages.
    masked: String,
    /// The connection, made on first use; the client reconnects by itself afterwards.
    client: Mutex<Option<Client>>,
    /// `stream\nsubject` pairs known to be captured (with `create_stream`), rendered.
    streams: Mutex<HashSet<String>>,
}

impl std::fmt::Debug for NatsDestination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsDestination").field("target", &self.describe()).finish()
    }
}

/// One message, rendered and ready to publish.
struct Message {
    subject: String,
    stream: Option<String>,
    headers: HeaderMap,
    payload: Bytes,
    target: String,
}

impl NatsDestination {
    fn target(&self, subject: &str) -> String {
        let mode = if self.config.jetstream { "jetstream" } else { "nats" };
        format!("{mode} {} subject '{subject}'", self.masked)
    }

    fn message(&self, attempt: &Attempt<'_>) -> Result<Message, DeliveryError> {
        let cfg = &self.config;
        let ctx = &attempt.render;
        let subject = messaging::render(&cfg.subject, "subject", ctx)?;
        config::check_subject(&subject)
            .map_err(|m| DeliveryError::permanent(format!("rendered {m}")))?;
        let stream = match &cfg.stream {
            Some(t) => {
                let s = messaging::render(t, "stream", ctx)?;
                config::check_stream_name(&s)
                    .map_err(|m| DeliveryError::permanent(format!("rendered {m}")))?;
                Some(s)
            }
            None => None,
        };
        let mut headers = HeaderMap::new();
        for (name, value) in messaging::render_headers(&cfg.headers, ctx)? {
            headers.insert(name.as_str(), value);
        }
        headers.insert("Nats-Msg-Id", ctx.delivery_id);
        headers.insert(messaging::JOB_UUID_HEADER, ctx.job.job_uuid.to_string());
        headers.insert("Content-Type", cfg.format.content_type_for(ctx.output));
        if let Some(s) = &stream {
            headers.insert("Nats-Expected-Stream", s.as_str());
        }
        let payload = Bytes::from(messaging::payload(&cfg.format, ctx)?);
        let target = self.target(&subject);
        Ok(Message { subject, stream, headers, payload, target })
    }

    /// The connected client, connecting on first use; waits (within the caller's
    /// deadline) while an existing client reconnects.
    async fn client(&self) -> Result<Client, DeliveryError> {
        let client = {
            let mut guard = self.client.lock().await;
            match guard.as_ref() {
                Some(c) => c.clone(),
                None => {
                    let c = self.connect().await?;
                    *guard = Some(c.clone());
                    c
                }
            }
        };
        // The client queues publishes while it reconnects; waiting here instead keeps an
        // attempt that times out from being sent later behind the caller's back.
        while client.connection_state() != State::Connected {
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        Ok(client)
    }

    async fn connect(&self) -> Result<Client, DeliveryError> {
        let cfg = &self.config;
        let mut opts = ConnectOptions::new()
            .name("outflow")
            .connection_timeout(cfg.timeout)
            .request_timeout(Some(cfg.timeout))
            // A destination should notice a broker that is back within a second, not after
            // the default 4 s backoff.
            .reconnect_delay_callback(|attempts| {
                Duration::from_millis((50 * attempts as u64).min(1000))
            });
        if cfg.tls {
            opts = opts.require_tls(true);
        }
        if let Some(ca) = &cfg.ca_file {
            opts = opts.add_root_certificates(ca.clone());
        }
        opts = match &cfg.credentials {
            Credentials::None => opts,
            Credentials::UserPassword(u, p) => {
                opts.user_and_password(u.clone(), p.expose().to_string())
            }
            Credentials::Token(t) => opts.token(t.expose().to_string()),
            Credentials::NKey(k) => opts.nkey(k.expose().to_string()),
            Credentials::File(path) => opts.credentials_file(path).await.map_err(|e| {
                DeliveryError::permanent(format!(
                    "cannot read NATS credentials_file '{}': {e}",
                    path.display()
                ))
            })?,
        };
        let servers: Vec<async_nats::ServerAddr> =
            cfg.servers.iter().filter_map(|s| s.expose().parse().ok()).collect();
        opts.connect(servers).await.map_err(|e| {
            let msg = format!("nats {}: connecting failed: {e}", self.masked);
            match e.kind() {
                ConnectErrorKind::AuthorizationViolation | ConnectErrorKind::Authentication => {
                    DeliveryError::permanent(format!("{msg} (check the credentials)"))
                }
                ConnectErrorKind::ServerParse | ConnectErrorKind::Tls => {
                    DeliveryError::permanent(msg)
                }
                _ => DeliveryError::retryable(msg),
            }
        })
    }

    /// Refuses a message the server would refuse: larger than its `max_payload`.
    fn fits(&self, client: &Client, msg: &Message) -> Result<(), DeliveryError> {
        let max = client.server_info().max_payload;
        // "NATS/1.0\r\n", then "name: value\r\n" per value, then "\r\n".
        let header_bytes: usize = 12
            + msg
                .headers
                .iter()
                .map(|(k, vs)| {
                    let name: &str = k.as_ref();
                    vs.iter().map(|v| name.len() + v.as_str().len() + 4).sum::<usize>()
                })
                .sum::<usize>();
        let size = msg.payload.len() + header_bytes;
        if max > 0 && size > max {
            return Err(DeliveryError::permanent(format!(
                "{}: the message is {size} bytes (output {} + headers) but the NATS server's \
                 max_payload is {max} bytes; raise max_payload in the server config, or use a \
                 destination meant for large objects",
                msg.target,
                msg.payload.len()
            )));
        }
        Ok(())
    }

    /// With `create_stream`: makes sure the message's stream exists and captures its
    /// subject, creating the stream or adding the rendered subject to it (a templated
    /// subject renders to subjects the stream was not created with).
    async fn ensure_stream(&self, client: &Client, msg: &Message) -> Result<(), DeliveryError> {
        let Some(stream) = msg.stream.as_deref().filter(|_| self.config.create_stream) else {
            return Ok(());
        };
        let key = format!("{stream}\n{}", msg.subject);
        let mut known = self.streams.lock().await;
        if known.contains(&key) {
            return Ok(());
        }
        let js = self.jetstream(client);
        let existing = js
            .get_or_create_stream(jetstream::stream::Config {
                name: stream.to_string(),
                subjects: vec![msg.subject.clone()],
                ..Default::default()
            })
            .await
            .map_err(|e| {
                use jetstream::context::CreateStreamErrorKind as K;
                let text = format!("{}: creating stream '{stream}' failed: {e}", msg.target);
                match e.kind() {
                    // The server refused the stream (its subjects overlap another stream's,
                    // limits): it will refuse it again.
                    K::JetStream(_) | K::InvalidStreamName | K::EmptyStreamName => {
                        DeliveryError::permanent(text)
                    }
                    _ => DeliveryError::retryable(text),
                }
            })?;
        let config = &existing.cached_info().config;
        if !config.subjects.iter().any(|pattern| subject_matches(pattern, &msg.subject)) {
            let mut wider = config.clone();
            wider.subjects.push(msg.subject.clone());
            js.update_stream(&wider).await.map_err(|e| {
                DeliveryError::permanent(format!(
                    "{}: adding the subject to stream '{stream}' failed: {e}",
                    msg.target
                ))
            })?;
        }
        known.insert(key);
        Ok(())
    }

    fn jetstream(&self, client: &Client) -> jetstream::Context {
        jetstream::context::ContextBuilder::new().timeout(self.config.timeout).build(client.clone())
    }

    /// Publishes `messages` and waits for their acks (JetStream) or one flush (core).
    async fn publish_all(
        &self,
        messages: &[&Message],
    ) -> Vec<Result<DeliveryReceipt, DeliveryError>> {
        let client = match self.client().await {
            Ok(c) => c,
            Err(e) => return messages.iter().map(|_| Err(e.clone())).collect(),
        };
        let receipt = |msg: &Message| DeliveryReceipt {
            target: msg.target.clone(),
            bytes: msg.payload.len() as u64,
            ..DeliveryReceipt::default()
        };
        if self.config.jetstream {
            let js = self.jetstream(&client);
            let mut acks = Vec::with_capacity(messages.len());
            for msg in messages {
                let sent = async {
                    self.fits(&client, msg)?;
                    self.ensure_stream(&client, msg).await?;
                    js.publish_with_headers(
                        msg.subject.clone(),
                        msg.headers.clone(),
                        msg.payload.clone(),
                    )
                    .await
                    .map_err(|e| js_error(e.kind(), &e.to_string(), msg))
                }
                .await;
                acks.push(sent);
            }
            let mut results = Vec::with_capacity(messages.len());
            for (msg, sent) in messages.iter().zip(acks) {
                results.push(match sent {
                    Ok(ack) => match ack.await {
                        // A duplicate ack means the stream already holds this delivery id:
                        // the earlier attempt did arrive, which is success.
                        Ok(_) => Ok(receipt(msg)),
                        Err(e) => Err(js_error(e.kind(), &e.to_string(), msg)),
                    },
                    Err(e) => Err(e),
                });
            }
            return results;
        }
        let mut results: Vec<Result<DeliveryReceipt, DeliveryError>> =
            Vec::with_capacity(messages.len());
        for msg in messages {
            let sent = match self.fits(&client, msg) {
                Ok(()) => client
                    .publish_with_headers(
                        msg.subject.clone(),
                        msg.headers.clone(),
                        msg.payload.clone(),
                    )
                    .await
                    .map(|()| receipt(msg))
                    .map_err(|e| match e.kind() {
                        async_nats::client::PublishErrorKind::Send => DeliveryError::retryable(
                            format!("{}: publishing failed: {e}", msg.target),
                        ),
                        _ => DeliveryError::permanent(format!(
                            "{}: publishing failed: {e}",
                            msg.target
                        )),
                    }),
                Err(e) => Err(e),
            };
            results.push(sent);
        }
        if results.iter().any(Result::is_ok)
            && let Err(err) = round_trip(&client, &format!("nats {}", self.masked)).await
        {
            for r in results.iter_mut().filter(|r| r.is_ok()) {
                *r = Err(err.clone());
            }
        }
        results
    }
}

/// Whether a stream subject `pattern` (with `*` for one token, `>` for the rest) captures
/// `subject`.
fn subject_matches(pattern: &str, subject: &str) -> bool {
    let mut subject_tokens = subject.split('.');
    for p in pattern.split('.') {
        match (p, subject_tokens.next()) {
            (">", Some(_)) => return true,
            ("*", Some(_)) => {}
            (p, Some(t)) if p == t => {}
            _ => return false,
        }
    }
    subject_tokens.next().is_none()
}

/// A round trip to the server after core publishes: a request to a subject nobody
/// serves, answered by the server itself with "no responders". The server handles a
/// connection's messages in order, so the answer proves every earlier publish reached it;
/// a flush alone only proves the bytes reached the socket, which a cut connection can
/// swallow.
async fn round_trip(client: &Client, target: &str) -> Result<(), DeliveryError> {
    use async_nats::client::RequestErrorKind;
    match client.request(client.new_inbox(), Bytes::new()).await {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == RequestErrorKind::NoResponders => Ok(()),
        Err(e) => Err(DeliveryError::retryable(format!(
            "{target}: no answer from the server after publishing: {e}"
        ))),
    }
}

/// Asks the server for the account's JetStream info. Read as plain JSON: the typed
/// `query_account` expects fields older servers (2.9) do not send.
async fn jetstream_info(client: &Client, target: &str) -> Result<(), DeliveryError> {
    let reply = client.request("$JS.API.INFO", Bytes::new()).await.map_err(|e| {
        let msg = format!("{target}: JetStream is not available: {e}");
        match e.kind() {
            async_nats::client::RequestErrorKind::NoResponders => DeliveryError::permanent(msg),
            _ => DeliveryError::retryable(msg),
        }
    })?;
    let body: serde_json::Value = serde_json::from_slice(&reply.payload).unwrap_or_default();
    match body.get("error") {
        Some(err) => Err(DeliveryError::permanent(format!(
            "{target}: JetStream is not available: {}",
            err.get("description").and_then(|d| d.as_str()).unwrap_or("error")
        ))),
        None => Ok(()),
    }
}

/// Classifies a JetStream publish failure.
fn js_error(kind: JsErrorKind, text: &str, msg: &Message) -> DeliveryError {
    match kind {
        JsErrorKind::StreamNotFound => DeliveryError::permanent(format!(
            "{}: no JetStream stream captures this subject (no responders); create a stream \
             for it, or set stream and create_stream: true",
            msg.target
        )),
        JsErrorKind::MaxPayloadExceeded => DeliveryError::permanent(format!(
            "{}: the message exceeds the NATS server's max_payload: {text}",
            msg.target
        )),
        JsErrorKind::TimedOut | JsErrorKind::BrokenPipe | JsErrorKind::MaxAckPending => {
            DeliveryError::retryable(format!("{}: no ack from JetStream: {text}", msg.target))
        }
        // API errors (wrong expected stream, message too large for the stream, ...) repeat
        // on retry.
        _ if text.contains("insufficient resources") || text.contains("temporarily") => {
            DeliveryError::retryable(format!(
                "{}: JetStream refused the message: {text}",
                msg.target
            ))
        }
        _ => DeliveryError::permanent(format!(
            "{}: JetStream refused the message: {text}",
            msg.target
        )),
    }
}

#[async_trait]
impl Destination for NatsDestination {
    fn kind(&self) -> &'static str {
        "nats"
    }

    fn describe(&self) -> String {
        self.target(self.config.subject.source())
    }

    fn isolation_key(&self) -> String {
        format!("nats:{}", self.masked)
    }

    fn retry_policy(&self) -> &RetryPolicy {
        &self.config.retry_policy
    }

    async fn deliver(&self, attempt: Attempt<'_>) -> Result<DeliveryReceipt, DeliveryError> {
        let msg = self.message(&attempt)?;
        within(self.config.timeout, &msg.target, "publishing", async {
            self.publish_all(&[&msg]).await.pop().expect("one result per message")
        })
        .await
    }

    async fn deliver_batch(&self, records: &[Attempt<'_>]) -> BatchResults {
        let rendered: Vec<Result<Message, DeliveryError>> =
            records.iter().map(|a| self.message(a)).collect();
        let ready: Vec<&Message> = rendered.iter().filter_map(|m| m.as_ref().ok()).collect();
        let published =
            match tokio::time::timeout(self.config.timeout, self.publish_all(&ready)).await {
                Ok(results) => results,
                Err(_) => {
                    let e = DeliveryError::retryable(format!(
                        "{}: publishing a batch of {} timed out",
                        self.describe(),
                        ready.len()
                    ));
                    ready.iter().map(|_| Err(e.clone())).collect()
                }
            };
        messaging::merge_results(rendered, published)
    }

    async fn check(&self) -> Result<CheckReport, DeliveryError> {
        let started = Instant::now();
        let target = self.describe();
        within(self.config.timeout, &target, "health check", async {
            let client = self.client().await?;
            // A round trip proves the server answers, not just that a socket is open.
            round_trip(&client, &target).await?;
            if self.config.jetstream {
                let js = self.jetstream(&client);
                if let Some(stream) = self.config.stream.as_ref().filter(|s| s.is_static()) {
                    if !self.config.create_stream {
                        js.get_stream(stream.source()).await.map_err(|e| {
                            DeliveryError::permanent(format!(
                                "{target}: stream '{}' is not available: {e}",
                                stream.source()
                            ))
                        })?;
                    }
                } else {
                    jetstream_info(&client, &target).await?;
                }
            }
            Ok(())
        })
        .await?;
        Ok(CheckReport { target, elapsed: started.elapsed() })
    }
}

#[cfg(test)]
mod tests {
    use super::subject_matches;

    #[test]
    fn stream_subject_patterns() {
        assert!(subject_matches("a.b", "a.b"));
        assert!(!subject_matches("a.b", "a.c"));
        assert!(subject_matches("a.*", "a.c"));
        assert!(!subject_matches("a.*", "a.c.d"));
        assert!(subject_matches("a.>", "a.c.d"));
        assert!(!subject_matches("a.>", "a"));
        assert!(!subject_matches("a.b.c", "a.b"));
    }
}
