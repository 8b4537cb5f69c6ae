//! # outflow-destinations
//!
//! Where outputs go. Every destination implements one trait, [`Destination`], lives in its
//! own module behind a cargo feature, and is listed once in [`registry`]. The engine (and
//! `outflow deliver`) knows only the trait.
//!
//! - [`registry`]: `type` name → config parser + constructor; the [`DestinationCatalog`] the
//!   config validator uses.
//! - [`runner`]: one delivery with retries ([`runner::deliver_with_retries`]) and fan-out to
//!   many destinations ([`runner::deliver_all`]).
//! - [`filesystem`], [`webhook`]: the destinations.
//! - [`s3`]: objects in AWS S3 or a compatible store (key templates, partitions, multipart,
//!   SSE, storage classes, metadata, ACLs; NDJSON objects for batches).
//! - [`kafka`]: records produced to Kafka with librdkafka (feature `kafka`).
//! - [`smtp`]: email through an SMTP server (lettre, rustls), output attached or inlined.
//! - [`slack`], [`discord`]: chat messages through incoming webhooks, built on [`webhook`].
//! - [`rabbitmq`], [`nats`], [`mqtt`]: message brokers (publisher confirms, JetStream acks,
//!   QoS acks), sharing the `messaging` helpers.
//! - [`mongodb`], [`dynamodb`], [`cassandra`]: NoSQL databases (seed 002 §6), one record per
//!   delivery keyed by the delivery id.
//! - [`sql`]: `postgresql`, `mysql` and `sqlite` (shared config, schema, batching, retention).
//! - `redis` (lists, Python RQ queues, streams, pub/sub) and `elasticsearch` (also `type:
//!   opensearch`; `_bulk` batches): behind their features.
//!
//! This crate does not store anything: durable queues and scheduled retries belong to the
//! engine; the runner here retries in memory for the one-shot CLI.
//!
//! [`DestinationCatalog`]: outflow_core::config::DestinationCatalog

#[cfg(feature = "cassandra")]
pub mod cassandra;
pub mod check;
mod common;
#[cfg(feature = "discord")]
pub mod discord;
#[cfg(feature = "dynamodb")]
pub mod dynamodb;
#[cfg(feature = "elasticsearch")]
pub mod elasticsearch;
pub mod error;
#[cfg(feature = "filesystem")]
pub mod filesystem;
#[cfg(feature = "kafka")]
pub mod kafka;
#[cfg(any(feature = "rabbitmq", feature = "nats", feature = "mqtt"))]
mod messaging;
#[cfg(feature = "mongodb")]
pub mod mongodb;
#[cfg(feature = "mqtt")]
pub mod mqtt;
#[cfg(feature = "nats")]
pub mod nats;
#[cfg(feature = "rabbitmq")]
pub mod rabbitmq;
#[cfg(feature = "redis")]
pub mod redis;
pub mod registry;
pub mod runner;
#[cfg(feature = "s3")]
pub mod s3;
#[cfg(feature = "slack")]
pub mod slack;
#[cfg(feature = "smtp")]
pub mod smtp;
#[cfg(any(feature = "postgresql", feature = "mysql", feature = "sqlite"))]
pub mod sql;
#[cfg(any(feature = "smtp", feature = "slack", feature = "discord"))]
mod text;
#[cfg(feature = "webhook")]
pub mod webhook;

use std::time::Duration;

use async_trait::async_trait;
use outflow_core::context::RenderContext;
use outflow_core::retry::RetryPolicy;

pub use error::DeliveryError;
pub use registry::{BuildDefaults, Registry, SpecOrigin};

/// What a successful attempt reports.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DeliveryReceipt {
    /// Where it went, rendered, with secrets masked (a path, a URL).
    pub target: String,
    /// HTTP status or protocol code, when there is one.
    pub status_code: Option<u16>,
    /// Bytes written or sent.
    pub bytes: u64,
    /// The first bytes of the response, when there is one.
    pub response_excerpt: Option<String>,
}

/// One result per record of a [`Destination::deliver_batch`] call, in the records' order.
pub type BatchResults = Vec<Result<DeliveryReceipt, DeliveryError>>;

/// What a reachability check reports.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckReport {
    /// What was checked (a directory, `host:port`).
    pub target: String,
    /// How long the check took.
    pub elapsed: Duration,
}

/// One delivery attempt's input.
#[derive(Debug, Clone, Copy)]
pub struct Attempt<'a> {
    /// The job, its output and the delivery's stable id (identical on every retry).
    pub render: RenderContext<'a>,
    /// 1-based attempt number.
    pub number: u32,
}

/// A configured destination, ready to deliver.
///
/// Implementations render their templates from [`Attempt::render`], perform exactly one
/// attempt per [`Destination::deliver`] call and classify failures (retryable or
/// permanent); retrying and scheduling are the caller's job.
#[async_trait]
pub trait Destination: Send + Sync + std::fmt::Debug {
    /// The `type` name (`filesystem`, `webhook`).
    fn kind(&self) -> &'static str;

    /// The destination's target for logs and reports, unrendered (templates as written),
    /// secrets masked.
    fn describe(&self) -> String;

    /// The key destinations are isolated by: each key has its own concurrency limit and
    /// circuit breaker in the engine, so a stuck endpoint never slows another. Webhooks use
    /// the URL's origin (scheme, host, port), files their directory root. The default is the
    /// type and the unrendered target.
    fn isolation_key(&self) -> String {
        format!("{}:{}", self.kind(), self.describe())
    }

    /// The retry policy in force for this destination.
    fn retry_policy(&self) -> &RetryPolicy;

    /// Makes one attempt.
    async fn deliver(&self, attempt: Attempt<'_>) -> Result<DeliveryReceipt, DeliveryError>;

    /// Delivers many records as one batch (pipelines, `outflow bench destination`). The result
    /// has one entry per record, in order, so the caller retries only the records that failed.
    ///
    /// The default delivers them one by one. Destinations with a bulk operation (multi-row
    /// INSERT, Elasticsearch `_bulk`, Kafka's producer queue, MongoDB `insertMany`) override
    /// it; a batch that fails as a whole reports the same error for every record.
    async fn deliver_batch(&self, records: &[Attempt<'_>]) -> BatchResults {
        let mut results = Vec::with_capacity(records.len());
        for record in records {
            results.push(self.deliver(*record).await);
        }
        results
    }

    /// Checks that a delivery could succeed, without delivering (directory writable, host
    /// resolvable and connectable).
    async fn check(&self) -> Result<CheckReport, DeliveryError>;
}
