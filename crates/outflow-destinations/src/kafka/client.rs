//! The librdkafka side: the producer's settings, the client context that keeps librdkafka's
//! last connection-level error, and the mapping from librdkafka errors to retryable or
//! permanent failures.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::FutureProducer;

use super::config::{KafkaConfig, PartitionStrategy};
use crate::DeliveryError;

/// The producer type of a Kafka destination.
pub type Producer = FutureProducer<OutflowContext>;

/// How long librdkafka waits between reconnects at most. Its default (10 s) would leave a
/// delivery after a broker restart waiting longer than most delivery timeouts.
const RECONNECT_BACKOFF_MAX_MS: u64 = 1_000;

/// How long a failed authentication is remembered: librdkafka reports it once and then
/// suppresses identical errors, while every later attempt just times out.
const AUTH_FAILURE_MEMORY: Duration = Duration::from_secs(300);

/// The client-level errors librdkafka reported: a message that times out says only "timed
/// out", the last error says why (connection refused, authentication failed).
#[derive(Debug, Default)]
pub struct LastError(Mutex<Reported>);

#[derive(Debug, Default)]
struct Reported {
    last: Option<ClientError>,
    /// The last authentication failure, until a delivery succeeds.
    auth: Option<ClientError>,
}

/// A client-level error librdkafka reported.
#[derive(Debug, Clone)]
pub struct ClientError {
    /// Its code, when it has one.
    pub code: Option<RDKafkaErrorCode>,
    /// librdkafka's description.
    pub reason: String,
    /// When it was reported.
    pub at: Instant,
}

impl ClientError {
    fn is_authentication(&self) -> bool {
        matches!(
            self.code,
            Some(
                RDKafkaErrorCode::Authentication
                    | RDKafkaErrorCode::SaslAuthenticationFailed
                    | RDKafkaErrorCode::UnsupportedSASLMechanism
            )
        )
    }
}

impl LastError {
    /// What explains a failure of an attempt that started at `since`: a recent
    /// authentication failure, else the last error reported since then.
    pub fn since(&self, since: Instant) -> Option<ClientError> {
        let guard = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(auth) = &guard.auth
            && auth.at.elapsed() < AUTH_FAILURE_MEMORY
        {
            return Some(auth.clone());
        }
        guard.last.as_ref().filter(|e| e.at >= since).cloned()
    }

    /// A delivery succeeded: the credentials work now.
    pub fn delivered(&self) {
        let mut guard = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if guard.auth.is_some() {
            guard.auth = None;
        }
    }

    fn record(&self, error: ClientError) {
        let mut guard = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if error.is_authentication() {
            guard.auth = Some(error.clone());
        }
        guard.last = Some(error);
    }
}

/// Receives librdkafka's logs (into `tracing`) and its client-level errors (into a
/// [`LastError`] the destination reads).
#[derive(Debug, Default)]
pub struct OutflowContext {
    errors: Arc<LastError>,
}

/// A producer and the errors its client reported.
#[derive(Clone)]
pub struct Client {
    /// The producer, shared by every delivery of the destination.
    pub producer: Producer,
    /// Its client-level errors.
    pub errors: Arc<LastError>,
}

impl ClientContext for OutflowContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => tracing::error!(target: "librdkafka", "{fac}: {message}"),
            RDKafkaLogLevel::Warning => tracing::warn!(target: "librdkafka", "{fac}: {message}"),
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                tracing::info!(target: "librdkafka", "{fac}: {message}")
            }
            RDKafkaLogLevel::Debug => tracing::debug!(target: "librdkafka", "{fac}: {message}"),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::warn!(target: "librdkafka", error = %error, "{reason}");
        self.errors.record(ClientError {
            code: error.rdkafka_error_code(),
            reason: reason.to_string(),
            at: Instant::now(),
        });
    }
}

/// librdkafka's settings for `cfg`. Secrets go into the librdkafka config only, which
/// never prints them.
pub fn client_config(cfg: &KafkaConfig) -> ClientConfig {
    let timeout_ms = cfg.timeout.as_millis().max(1);
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", cfg.bootstrap_servers())
        .set("client.id", concat!("outflow/", env!("CARGO_PKG_VERSION")))
        .set("acks", cfg.acks.as_config())
        .set("enable.idempotence", cfg.idempotent.to_string())
        .set("compression.codec", cfg.compression)
        .set("message.max.bytes", cfg.max_message_bytes.to_string())
        // A delivery fails (retryably) once its timeout has passed, whatever librdkafka is
        // doing; socket and request timeouts stay within it.
        .set("message.timeout.ms", timeout_ms.to_string())
        .set("request.timeout.ms", timeout_ms.min(30_000).to_string())
        .set("socket.timeout.ms", timeout_ms.clamp(10, 60_000).to_string())
        // librdkafka waits this long before it declares a missing topic missing (topics
        // take a while to propagate); half the timeout leaves room to report "unknown topic"
        // (permanent) rather than a plain timeout.
        .set("topic.metadata.propagation.max.ms", (timeout_ms / 2).clamp(1, 30_000).to_string())
        .set("reconnect.backoff.max.ms", RECONNECT_BACKOFF_MAX_MS.to_string())
        .set("partitioner", partitioner(&cfg.partition_strategy))
        .set_log_level(RDKafkaLogLevel::Warning);
    if let Some(n) = cfg.batch_size {
        c.set("batch.num.messages", n.to_string());
    }
    if let Some(linger) = cfg.batch_timeout {
        c.set("linger.ms", linger.as_millis().to_string());
    }
    let protocol = match (cfg.sasl.is_some(), cfg.tls.is_some()) {
        (false, false) => "plaintext",
        (false, true) => "ssl",
        (true, false) => "sasl_plaintext",
        (true, true) => "sasl_ssl",
    };
    c.set("security.protocol", protocol);
    if let Some(sasl) = &cfg.sasl {
        c.set("sasl.mechanisms", sasl.mechanism)
            .set("sasl.username", &sasl.username)
            .set("sasl.password", sasl.password.expose());
    }
    if let Some(tls) = &cfg.tls {
        if let Some(ca) = &tls.ca_file {
            c.set("ssl.ca.location", ca);
        }
        if let (Some(cert), Some(key)) = (&tls.cert_file, &tls.key_file) {
            c.set("ssl.certificate.location", cert).set("ssl.key.location", key);
        }
        if tls.insecure_skip_verify {
            c.set("enable.ssl.certificate.verification", "false")
                .set("ssl.endpoint.identification.algorithm", "none");
        }
    }
    c
}

/// librdkafka's partitioner for a strategy. Round-robin and manual set the partition on
/// each record, so the partitioner is not consulted for them.
fn partitioner(strategy: &PartitionStrategy) -> &'static str {
    match strategy {
        // The Java client's hash, so records with a key land where Java producers put them.
        PartitionStrategy::Hash => "murmur2_random",
        PartitionStrategy::Random => "random",
        PartitionStrategy::RoundRobin | PartitionStrategy::Manual(_) => "consistent_random",
    }
}

/// Creates the producer and its error log; failures (an unreadable CA file, a setting librdkafka refuses)
/// are permanent.
pub fn create_client(cfg: &KafkaConfig) -> Result<Client, DeliveryError> {
    if let Some(tls) = &cfg.tls {
        // librdkafka's own message ("ssl.ca.location failed: BIO lib") does not say which
        // file or why.
        let files =
            [("ca_file", &tls.ca_file), ("cert_file", &tls.cert_file), ("key_file", &tls.key_file)];
        for (key, path) in files {
            if let Some(path) = path
                && let Err(e) = std::fs::File::open(path)
            {
                return Err(DeliveryError::permanent(format!(
                    "cannot read tls.{key} '{path}' for brokers {}: {e}",
                    cfg.bootstrap_servers()
                )));
            }
        }
    }
    let errors = Arc::new(LastError::default());
    let context = OutflowContext { errors: Arc::clone(&errors) };
    let producer = client_config(cfg).create_with_context(context).map_err(|e| {
        DeliveryError::permanent(format!(
            "cannot create the Kafka producer for brokers {}: {}",
            cfg.bootstrap_servers(),
            describe_error(&e)
        ))
    })?;
    Ok(Client { producer, errors })
}

/// A readable text for a librdkafka error.
pub fn describe_error(err: &KafkaError) -> String {
    match err {
        KafkaError::ClientConfig(_, desc, key, _) => format!("setting {key}: {desc}"),
        KafkaError::ClientCreation(msg) => msg.clone(),
        other => match other.rdkafka_error_code() {
            Some(code) => code.to_string(),
            None => other.to_string(),
        },
    }
}

/// Whether a librdkafka error code can never succeed on retry with this configuration.
pub fn is_permanent(code: RDKafkaErrorCode) -> bool {
    use RDKafkaErrorCode as C;
    matches!(
        code,
        C::MessageSizeTooLarge
            | C::InvalidMessageSize
            | C::MessageBatchTooLarge
            | C::UnknownTopic
            | C::UnknownPartition
            | C::UnknownTopicOrPartition
            | C::InvalidTopic
            | C::TopicAuthorizationFailed
            | C::ClusterAuthorizationFailed
            | C::TransactionalIdAuthorizationFailed
            | C::Authentication
            | C::SaslAuthenticationFailed
            | C::UnsupportedSASLMechanism
            | C::IllegalSASLState
            | C::InvalidConfig
            | C::InvalidRequiredAcks
            | C::InvalidArgument
            | C::InvalidRecord
            | C::InvalidTimestamp
            | C::PolicyViolation
            | C::UnsupportedCompressionType
            | C::UnsupportedForMessageFormat
            | C::SecurityDisabled
    )
}

/// What one failed record (or metadata request) means. `target` names the topic and the
/// brokers; `client` is the last connection-level error librdkafka reported meanwhile, which
/// explains timeouts (and turns an authentication failure into the permanent error it is).
pub fn classify(
    err: &KafkaError,
    target: &str,
    client: Option<ClientError>,
    timeout: Duration,
) -> DeliveryError {
    use RDKafkaErrorCode as C;
    let code = err.rdkafka_error_code();
    let cause = match client.as_ref() {
        Some(c) => format!(" (last broker error: {})", c.reason),
        None => String::new(),
    };
    // An authentication failure shows as a timed-out message: nothing was ever sent.
    if let Some(ClientError { code: Some(c), reason, .. }) = &client
        && matches!(
            c,
            C::Authentication | C::SaslAuthenticationFailed | C::UnsupportedSASLMechanism
        )
    {
        return DeliveryError::permanent(format!(
            "authentication failed for {target}: {reason}; check the sasl settings"
        ));
    }
    match code {
        Some(C::MessageSizeTooLarge | C::InvalidMessageSize | C::MessageBatchTooLarge) => {
            DeliveryError::permanent(format!(
                "the record is too large for {target} ({}): raise max_message_bytes, and the \
                 broker's or topic's message.max.bytes",
                describe_error(err)
            ))
        }
        Some(C::UnknownTopic | C::UnknownTopicOrPartition) => DeliveryError::permanent(format!(
            "unknown topic for {target}: the topic does not exist and the cluster does not \
             create topics automatically ({})",
            describe_error(err)
        )),
        Some(C::UnknownPartition) => DeliveryError::permanent(format!(
            "unknown partition for {target}: the topic has no such partition ({})",
            describe_error(err)
        )),
        Some(C::MessageTimedOut | C::OperationTimedOut | C::RequestTimedOut) => {
            DeliveryError::retryable(format!(
                "no acknowledgement from {target} within {} ms{cause}",
                timeout.as_millis()
            ))
        }
        Some(c) if is_permanent(c) => DeliveryError::permanent(format!(
            "{target} refused the record: {}{cause}",
            describe_error(err)
        )),
        _ => DeliveryError::retryable(format!(
            "delivery to {target} failed: {}{cause}",
            describe_error(err)
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(code: RDKafkaErrorCode) -> KafkaError {
        KafkaError::MessageProduction(code)
    }

    #[test]
    fn permanent_and_retryable_codes() {
        let t = "topic 'logs' on brokers a:9092";
        let d = Duration::from_secs(5);
        for code in [
            RDKafkaErrorCode::MessageSizeTooLarge,
            RDKafkaErrorCode::UnknownTopicOrPartition,
            RDKafkaErrorCode::UnknownTopic,
            RDKafkaErrorCode::TopicAuthorizationFailed,
            RDKafkaErrorCode::SaslAuthenticationFailed,
            RDKafkaErrorCode::InvalidConfig,
        ] {
            assert!(!classify(&at(code), t, None, d).is_retryable(), "{code:?}");
        }
        for code in [
            RDKafkaErrorCode::MessageTimedOut,
            RDKafkaErrorCode::QueueFull,
            RDKafkaErrorCode::AllBrokersDown,
            RDKafkaErrorCode::BrokerTransportFailure,
            RDKafkaErrorCode::NotLeaderForPartition,
            RDKafkaErrorCode::LeaderNotAvailable,
            RDKafkaErrorCode::NotEnoughReplicas,
            RDKafkaErrorCode::NetworkException,
        ] {
            let e = classify(&at(code), t, None, d);
            assert!(e.is_retryable(), "{code:?}");
            assert!(e.message.contains(t), "{}", e.message);
        }
    }

    #[test]
    fn a_timeout_after_an_authentication_failure_is_permanent() {
        let client = ClientError {
            code: Some(RDKafkaErrorCode::Authentication),
            reason: "SASL authentication error: bad password".into(),
            at: Instant::now(),
        };
        let e = classify(
            &at(RDKafkaErrorCode::MessageTimedOut),
            "topic 't' on brokers a:1",
            Some(client),
            Duration::from_secs(1),
        );
        assert!(!e.is_retryable());
        assert!(e.message.contains("authentication failed"), "{}", e.message);
    }

    #[test]
    fn a_timeout_names_the_last_broker_error() {
        let client = ClientError {
            code: Some(RDKafkaErrorCode::AllBrokersDown),
            reason: "1/1 brokers are down".into(),
            at: Instant::now(),
        };
        let e = classify(
            &at(RDKafkaErrorCode::MessageTimedOut),
            "topic 't' on brokers a:1",
            Some(client),
            Duration::from_millis(1500),
        );
        assert!(e.is_retryable());
        assert!(e.message.contains("within 1500 ms"), "{}", e.message);
        assert!(e.message.contains("1/1 brokers are down"), "{}", e.message);
    }
}
