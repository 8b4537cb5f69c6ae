//! The MQTT destination (`rumqttc`, MQTT v5): each delivery is one PUBLISH.
//!
//! ```yaml
//! destination:
//!   type: mqtt
//!   url: "mqtt://broker:1883"      # mqtts://broker:8883 for TLS; or host + port (+ tls: true)
//!   username: outflow              # optional
//!   password: "${MQTT_PASSWORD}"
//!   ca_file: /etc/ssl/broker-ca.pem   # TLS: trust these roots instead of the platform's
//!   client_id: outflow-1           # default: a unique id per connection
//!   topic: "outflow/{{task_name}}/output"
//!   qos: 1                         # 0, 1 (default) or 2
//!   retain: false
//!   format: raw                    # default raw; json, yaml, csv, xml, ndjson, template
//!   headers:                       # sent as MQTT v5 user properties
//!     tenant: "{{meta.tenant}}"
//!   timeout_seconds: 30
//! ```
//!
//! Every PUBLISH carries the user properties `outflow-delivery-id` (the delivery id) and
//! `outflow-job-uuid`, the templated `headers`, and the format's content type. With QoS 1
//! a delivery succeeds only on the broker's PUBACK for its packet id, with QoS 2 only on
//! the PUBCOMP; a PUBACK/PUBREC with a failure reason code fails it. QoS 0 has no
//! acknowledgement: success means the packet was handed to the connection (at-most-once).
//! QoS 1 and 2 are at-least-once end to end (a retry after a lost ack publishes again;
//! consumers drop the copy by `outflow-delivery-id`).
//!
//! The connection is made on first use and driven by a background task that matches
//! acknowledgements to deliveries by packet id. When the connection fails, every delivery
//! waiting on it fails as retryable, the session is dropped, and the next attempt connects
//! afresh (clean start: nothing is replayed behind the caller's back). Refused credentials
//! and not-authorized publishes are permanent; so is a rendered topic with a wildcard.

mod config;

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;
use outflow_core::config::{ConfigError, DestinationSpec};
use outflow_core::retry::RetryPolicy;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{
    ConnectReturnCode, Packet, PubAckReason, PubCompReason, PubRecReason, PublishProperties,
};
use rumqttc::v5::{AsyncClient, ConnectionError, Event, EventLoop, MqttOptions};
use rumqttc::{Outgoing, TlsConfiguration, Transport};
use tokio::sync::{Mutex, oneshot};

use crate::messaging::{self, within};
use crate::{
    Attempt, BatchResults, BuildDefaults, CheckReport, DeliveryError, DeliveryReceipt, Destination,
};
use config::{DELIVERY_ID_PROPERTY, MqttConfig};

/// Parses and validates a `type: mqtt` body.
pub fn build(
    spec: &DestinationSpec,
    defaults: &BuildDefaults,
    path: &str,
) -> Result<Arc<dyn Destination>, Vec<ConfigError>> {
    let config = config::parse(spec, defaults, path)?;
    Ok(Arc::new(MqttDestination { config, session: Mutex::new(None) }))
}

/// A configured MQTT destination.
pub struct MqttDestination {
    config: MqttConfig,
    /// The live session, made on first use and replaced after it fails.
    session: Mutex<Option<Arc<Session>>>,
}

impl std::fmt::Debug for MqttDestination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MqttDestination").field("target", &self.describe()).finish()
    }
}

type Ack = oneshot::Sender<Result<(), DeliveryError>>;

/// One connection: the client handle and the acknowledgements its event loop resolves.
struct Session {
    client: AsyncClient,
    acks: Arc<StdMutex<Acks>>,
    /// Serialises enqueueing, so the order of `Acks::queued` is the order the event loop
    /// sends the packets in.
    enqueue: Mutex<()>,
    /// The largest packet the broker accepts (its CONNACK's maximum packet size).
    max_packet: Option<u32>,
}

/// Deliveries waiting for their packet to be sent, then acknowledged.
#[derive(Default)]
struct Acks {
    /// Set when the event loop ended: the session cannot be used any more.
    failed: Option<DeliveryError>,
    /// Publishes enqueued but not yet sent, oldest first.
    queued: VecDeque<Ack>,
    /// Sent QoS 1/2 publishes, by packet id.
    in_flight: HashMap<u16, Ack>,
}

impl Acks {
    /// Fails every waiting delivery with `err` and refuses new ones.
    fn fail_all(&mut self, err: DeliveryError) {
        for ack in self.queued.drain(..).chain(self.in_flight.drain().map(|(_, a)| a)) {
            let _ = ack.send(Err(err.clone()));
        }
        self.failed = Some(err);
    }

    fn resolve(&mut self, pkid: u16, result: Result<(), DeliveryError>) {
        if let Some(ack) = self.in_flight.remove(&pkid) {
            let _ = ack.send(result);
        }
    }
}

/// One message, rendered and ready to publish.
struct Message {
    topic: String,
    payload: Bytes,
    properties: PublishProperties,
    target: String,
}

impl MqttDestination {
    fn origin(&self) -> String {
        let scheme = if self.config.tls { "mqtts" } else { "mqtt" };
        format!("{scheme}://{}:{}", self.config.host, self.config.port)
    }

    fn target(&self, topic: &str) -> String {
        format!("{} topic '{topic}'", self.origin())
    }

    fn message(&self, attempt: &Attempt<'_>) -> Result<Message, DeliveryError> {
        let cfg = &self.config;
        let ctx = &attempt.render;
        let topic = messaging::render(&cfg.topic, "topic", ctx)?;
        config::check_topic(&topic)
            .map_err(|m| DeliveryError::permanent(format!("rendered {m}")))?;
        let mut user_properties = messaging::render_headers(&cfg.user_properties, ctx)?;
        user_properties.push((DELIVERY_ID_PROPERTY.to_string(), ctx.delivery_id.to_string()));
        user_properties
            .push((messaging::JOB_UUID_HEADER.to_string(), ctx.job.job_uuid.to_string()));
        let properties = PublishProperties {
            content_type: Some(cfg.format.content_type_for(ctx.output).to_string()),
            user_properties,
            ..PublishProperties::default()
        };
        let payload = Bytes::from(messaging::payload(&cfg.format, ctx)?);
        let target = self.target(&topic);
        Ok(Message { topic, payload, properties, target })
    }

    fn qos(&self) -> QoS {
        match self.config.qos {
            0 => QoS::AtMostOnce,
            2 => QoS::ExactlyOnce,
            _ => QoS::AtLeastOnce,
        }
    }

    /// The live session, connecting a new one when there is none or the last one failed.
    async fn session(&self) -> Result<Arc<Session>, DeliveryError> {
        let mut guard = self.session.lock().await;
        if let Some(s) = guard.as_ref()
            && s.acks.lock().expect("acks lock").failed.is_none()
        {
            return Ok(Arc::clone(s));
        }
        *guard = None;
        let session = Arc::new(self.connect("").await?);
        *guard = Some(Arc::clone(&session));
        Ok(session)
    }

    /// Connects a session; `purpose` suffixes a configured client id (the health check's
    /// own connection must not take over the delivery session, which a broker does to an
    /// older connection with the same client id).
    async fn connect(&self, purpose: &str) -> Result<Session, DeliveryError> {
        let cfg = &self.config;
        let client_id = match &cfg.client_id {
            Some(id) => format!("{id}{purpose}"),
            None => format!("outflow-{}", &uuid::Uuid::new_v4().simple().to_string()[..16]),
        };
        let mut opts = MqttOptions::new(client_id, cfg.host.clone(), cfg.port);
        opts.set_clean_start(true);
        opts.set_connection_timeout(cfg.timeout.as_secs().max(1));
        if let Some(user) = &cfg.username {
            let password =
                cfg.password.as_ref().map(|p| p.expose().to_string()).unwrap_or_default();
            opts.set_credentials(user.clone(), password);
        }
        if cfg.tls {
            opts.set_transport(Transport::tls_with_config(self.tls_config()?));
        }
        let (client, eventloop) = AsyncClient::new(opts, 64);
        let acks = Arc::new(StdMutex::new(Acks::default()));
        let (connected_tx, connected_rx) = oneshot::channel();
        tokio::spawn(drive(eventloop, Arc::clone(&acks), connected_tx, self.origin()));
        let max_packet = connected_rx.await.unwrap_or_else(|_| {
            Err(DeliveryError::retryable(format!("{}: the connection task ended", self.origin())))
        })?;
        Ok(Session { client, acks, enqueue: Mutex::new(()), max_packet })
    }

    /// TLS with the aws-lc-rs provider chosen explicitly (no process-wide default needed),
    /// trusting `ca_file` or the platform's roots.
    fn tls_config(&self) -> Result<TlsConfiguration, DeliveryError> {
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        match &self.config.ca_file {
            Some(path) => {
                let certs = CertificateDer::pem_file_iter(path)
                    .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                    .map_err(|e| {
                        DeliveryError::permanent(format!(
                            "cannot read ca_file '{}': {e}",
                            path.display()
                        ))
                    })?;
                for cert in certs {
                    roots.add(cert).map_err(|e| {
                        DeliveryError::permanent(format!("ca_file '{}': {e}", path.display()))
                    })?;
                }
            }
            None => {
                for cert in rustls_native_certs::load_native_certs().certs {
                    let _ = roots.add(cert);
                }
            }
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| DeliveryError::permanent(format!("TLS setup failed: {e}")))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(TlsConfiguration::Rustls(Arc::new(config)))
    }

    /// Forgets a session (after a timeout) so the next attempt connects afresh.
    async fn forget(&self, session: &Arc<Session>) {
        let mut guard = self.session.lock().await;
        if guard.as_ref().is_some_and(|s| Arc::ptr_eq(s, session)) {
            session.acks.lock().expect("acks lock").fail_all(DeliveryError::retryable(format!(
                "{}: the session was dropped after a timeout",
                self.origin()
            )));
            let _ = session.client.try_disconnect();
            *guard = None;
        }
    }

    /// Enqueues one PUBLISH; the receiver resolves on its acknowledgement.
    async fn enqueue(
        &self,
        session: &Session,
        msg: &Message,
    ) -> Result<oneshot::Receiver<Result<(), DeliveryError>>, DeliveryError> {
        if let Some(max) = session.max_packet {
            // Fixed header, topic, properties: a generous bound on the overhead.
            let props: usize =
                msg.properties.user_properties.iter().map(|(k, v)| k.len() + v.len() + 5).sum();
            let size = msg.payload.len() + msg.topic.len() + props + 64;
            if size > max as usize {
                return Err(DeliveryError::permanent(format!(
                    "{}: the message is about {size} bytes but the broker's maximum packet size is {max}",
                    msg.target
                )));
            }
        }
        let _order = session.enqueue.lock().await;
        let (tx, rx) = oneshot::channel();
        {
            let mut acks = session.acks.lock().expect("acks lock");
            if let Some(e) = &acks.failed {
                return Err(e.clone());
            }
            acks.queued.push_back(tx);
        }
        session
            .client
            .publish_with_properties(
                msg.topic.clone(),
                self.qos(),
                self.config.retain,
                msg.payload.clone(),
                msg.properties.clone(),
            )
            .await
            .map_err(|e| {
                let err =
                    DeliveryError::retryable(format!("{}: publishing failed: {e}", msg.target));
                session.acks.lock().expect("acks lock").fail_all(err.clone());
                err
            })?;
        Ok(rx)
    }

    async fn publish_all(
        &self,
        session: &Session,
        messages: &[&Message],
    ) -> Vec<Result<DeliveryReceipt, DeliveryError>> {
        let mut waiting = Vec::with_capacity(messages.len());
        for msg in messages {
            waiting.push(self.enqueue(session, msg).await);
        }
        let mut results = Vec::with_capacity(messages.len());
        for (msg, w) in messages.iter().zip(waiting) {
            let outcome = match w {
                Ok(rx) => rx.await.unwrap_or_else(|_| {
                    Err(DeliveryError::retryable(format!(
                        "{}: the connection task ended",
                        msg.target
                    )))
                }),
                Err(e) => Err(e),
            };
            results.push(outcome.map(|()| DeliveryReceipt {
                target: msg.target.clone(),
                bytes: msg.payload.len() as u64,
                ..DeliveryReceipt::default()
            }));
        }
        results
    }
}

/// Drives the event loop: reports the CONNACK, matches sent packets to waiting deliveries
/// and acknowledgements to packet ids, and fails everything when the connection ends.
async fn drive(
    mut eventloop: EventLoop,
    acks: Arc<StdMutex<Acks>>,
    connected: oneshot::Sender<Result<Option<u32>, DeliveryError>>,
    origin: String,
) {
    let mut connected = Some(connected);
    loop {
        let event = eventloop.poll().await;
        let mut acks = acks.lock().expect("acks lock");
        match event {
            Ok(Event::Incoming(Packet::ConnAck(connack))) => {
                let max = connack.properties.and_then(|p| p.max_packet_size);
                if let Some(tx) = connected.take() {
                    let _ = tx.send(Ok(max));
                }
            }
            Ok(Event::Outgoing(Outgoing::Publish(pkid))) => {
                if let Some(ack) = acks.queued.pop_front() {
                    if pkid == 0 {
                        // QoS 0: nothing will acknowledge it; handed to the connection is all.
                        let _ = ack.send(Ok(()));
                    } else {
                        acks.in_flight.insert(pkid, ack);
                    }
                }
            }
            Ok(Event::Incoming(Packet::PubAck(puback))) => {
                let result = match puback.reason {
                    PubAckReason::Success | PubAckReason::NoMatchingSubscribers => Ok(()),
                    reason => {
                        let transient = matches!(
                            reason,
                            PubAckReason::QuotaExceeded
                                | PubAckReason::UnspecifiedError
                                | PubAckReason::ImplementationSpecificError
                        );
                        Err(refused(&origin, &format!("{reason:?}"), transient))
                    }
                };
                acks.resolve(puback.pkid, result);
            }
            Ok(Event::Incoming(Packet::PubRec(pubrec))) => {
                if !matches!(
                    pubrec.reason,
                    PubRecReason::Success | PubRecReason::NoMatchingSubscribers
                ) {
                    let transient = matches!(
                        pubrec.reason,
                        PubRecReason::QuotaExceeded
                            | PubRecReason::UnspecifiedError
                            | PubRecReason::ImplementationSpecificError
                    );
                    let err = refused(&origin, &format!("{:?}", pubrec.reason), transient);
                    acks.resolve(pubrec.pkid, Err(err));
                }
            }
            Ok(Event::Incoming(Packet::PubComp(pubcomp))) => {
                let result = match pubcomp.reason {
                    PubCompReason::Success => Ok(()),
                    reason => Err(DeliveryError::retryable(format!(
                        "{origin}: the broker did not complete the QoS 2 exchange ({reason:?})"
                    ))),
                };
                acks.resolve(pubcomp.pkid, result);
            }
            Ok(Event::Incoming(Packet::Disconnect(d))) => {
                let err = DeliveryError::retryable(format!(
                    "{origin}: the broker disconnected ({:?})",
                    d.reason_code
                ));
                fail(&mut acks, &mut connected, err);
                return;
            }
            Ok(_) => {}
            Err(e) => {
                let err = connection_error(&origin, &e);
                fail(&mut acks, &mut connected, err);
                return;
            }
        }
    }
}

fn fail(
    acks: &mut Acks,
    connected: &mut Option<oneshot::Sender<Result<Option<u32>, DeliveryError>>>,
    err: DeliveryError,
) {
    if let Some(tx) = connected.take() {
        let _ = tx.send(Err(err.clone()));
    }
    acks.fail_all(err);
}

/// A PUBACK/PUBREC failure reason. Not authorized, an invalid topic or payload format are
/// permanent (the broker would refuse again); a quota or an unspecified broker error
/// (`transient`) may pass later.
fn refused(origin: &str, reason: &str, transient: bool) -> DeliveryError {
    let msg = format!("{origin}: the broker refused the publish ({reason})");
    if transient { DeliveryError::retryable(msg) } else { DeliveryError::permanent(msg) }
}

fn connection_error(origin: &str, e: &ConnectionError) -> DeliveryError {
    match e {
        ConnectionError::ConnectionRefused(code) => {
            let msg = format!("{origin}: the broker refused the connection ({code:?})");
            match code {
                ConnectReturnCode::BadUserNamePassword
                | ConnectReturnCode::NotAuthorized
                | ConnectReturnCode::Banned
                | ConnectReturnCode::BadAuthenticationMethod
                | ConnectReturnCode::ClientIdentifierNotValid
                | ConnectReturnCode::BadClientId
                | ConnectReturnCode::UnsupportedProtocolVersion
                | ConnectReturnCode::RefusedProtocolVersion => {
                    DeliveryError::permanent(format!("{msg}: check the credentials and client_id"))
                }
                _ => DeliveryError::retryable(msg),
            }
        }
        ConnectionError::Tls(e) => DeliveryError::permanent(format!("{origin}: TLS failed: {e}")),
        other => DeliveryError::retryable(format!("{origin}: connection failed: {other}")),
    }
}

#[async_trait]
impl Destination for MqttDestination {
    fn kind(&self) -> &'static str {
        "mqtt"
    }

    fn describe(&self) -> String {
        self.target(self.config.topic.source())
    }

    fn isolation_key(&self) -> String {
        format!("mqtt:{}", self.origin())
    }

    fn retry_policy(&self) -> &RetryPolicy {
        &self.config.retry_policy
    }

    async fn deliver(&self, attempt: Attempt<'_>) -> Result<DeliveryReceipt, DeliveryError> {
        let msg = self.message(&attempt)?;
        let session =
            within(self.config.timeout, &msg.target, "connecting", self.session()).await?;
        let result = within(self.config.timeout, &msg.target, "publishing", async {
            self.publish_all(&session, &[&msg]).await.pop().expect("one result per message")
        })
        .await;
        if result.as_ref().is_err_and(DeliveryError::is_retryable) {
            // A timeout leaves the session's state unknown: start the next attempt afresh.
            self.forget(&session).await;
        }
        result
    }

    async fn deliver_batch(&self, records: &[Attempt<'_>]) -> BatchResults {
        let rendered: Vec<Result<Message, DeliveryError>> =
            records.iter().map(|a| self.message(a)).collect();
        let ready: Vec<&Message> = rendered.iter().filter_map(|m| m.as_ref().ok()).collect();
        let describe = self.describe();
        let published = match within(self.config.timeout, &describe, "connecting", self.session())
            .await
        {
            Err(e) => ready.iter().map(|_| Err(e.clone())).collect(),
            Ok(session) => {
                match tokio::time::timeout(self.config.timeout, self.publish_all(&session, &ready))
                    .await
                {
                    Ok(results) => results,
                    Err(_) => {
                        self.forget(&session).await;
                        let e = DeliveryError::retryable(format!(
                            "{describe}: publishing a batch of {} timed out",
                            ready.len()
                        ));
                        ready.iter().map(|_| Err(e.clone())).collect()
                    }
                }
            }
        };
        messaging::merge_results(rendered, published)
    }

    async fn check(&self) -> Result<CheckReport, DeliveryError> {
        let started = Instant::now();
        let target = self.describe();
        // A fresh connection proves the broker answers and accepts the credentials now; the
        // delivery session (if any) is left alone.
        let session =
            within(self.config.timeout, &target, "health check", self.connect("-check")).await?;
        let _ = session.client.disconnect().await;
        Ok(CheckReport { target, elapsed: started.elapsed() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_connections_are_classified() {
        let origin = "mqtt://b:1883";
        for code in [ConnectReturnCode::BadUserNamePassword, ConnectReturnCode::NotAuthorized] {
            let err = connection_error(origin, &ConnectionError::ConnectionRefused(code));
            assert!(!err.is_retryable(), "{err:?}");
            assert!(err.message.contains("check the credentials"), "{}", err.message);
        }
        let busy = connection_error(
            origin,
            &ConnectionError::ConnectionRefused(ConnectReturnCode::ServerBusy),
        );
        assert!(busy.is_retryable());
        let io = connection_error(
            origin,
            &ConnectionError::Io(std::io::ErrorKind::ConnectionRefused.into()),
        );
        assert!(io.is_retryable());
        assert!(io.message.starts_with(origin), "{}", io.message);
    }

    #[test]
    fn refused_publishes_name_the_reason() {
        let err = refused("mqtt://b:1883", "NotAuthorized", false);
        assert!(!err.is_retryable());
        assert!(err.message.contains("NotAuthorized"));
        assert!(refused("mqtt://b:1883", "QuotaExceeded", true).is_retryable());
    }

    #[test]
    fn a_failed_session_fails_every_waiting_delivery() {
        let mut acks = Acks::default();
        let (tx1, mut rx1) = oneshot::channel();
        let (tx2, mut rx2) = oneshot::channel();
        acks.queued.push_back(tx1);
        acks.in_flight.insert(7, tx2);
        acks.fail_all(DeliveryError::retryable("cut"));
        assert!(rx1.try_recv().unwrap().unwrap_err().is_retryable());
        assert!(rx2.try_recv().unwrap().unwrap_err().is_retryable());
        assert!(acks.failed.is_some());
        let (tx3, mut rx3) = oneshot::channel();
        acks.in_flight.insert(8, tx3);
        acks.resolve(8, Ok(()));
        assert!(rx3.try_recv().unwrap().is_ok());
    }
}
