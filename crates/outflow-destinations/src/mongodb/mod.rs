//! The MongoDB destination: one document per delivery, keyed by the delivery id.
//!
//! ```yaml
//! type: mongodb
//! uri: "mongodb://outflow:${MONGO_PASSWORD}@db1:27017,db2:27017/?replicaSet=rs0&authSource=admin"
//! database: outflow                    # validated: 1-63 bytes, none of / \ . space " $ * < > : | ?
//! collection: "outputs_{{task_name}}"  # template; rendered name: A-Z a-z 0-9 _ - . (1-120 bytes)
//! timeout_seconds: 30                  # bounds server selection, connect and each write
//! retry_policy: { max_attempts: 5 }
//! ```
//!
//! **Document layout.** Each delivery inserts one document:
//!
//! | field | value |
//! |---|---|
//! | `_id` | the delivery id (string) — the dedupe key |
//! | `job_uuid` | the job's UUID (string) |
//! | `job_id` | the store's numeric job id, or `null` |
//! | `task_name` | the task name, or `null` |
//! | `status` | the job status (`completed`, `failed`...) |
//! | `completed_at` | when the job completed (BSON date, millisecond precision) |
//! | `output_format` | `json`, `text` or `binary`: how to read `data` |
//! | `data` | the output: a JSON output as the equivalent BSON value (objects stay documents, so they can be queried and indexed); a text output as one string; a binary output as BSON binary (subtype 0) |
//!
//! **Effectively-once.** `_id` is the delivery id, identical on every retry, so a redelivery
//! fails with a duplicate-key error (code 11000) on that `_id`, which counts as success: the
//! document is already there. Batches ([`Destination::deliver_batch`]) use one unordered
//! `insertMany` per rendered collection, with per-document results: a duplicate key is a
//! success, other write errors fail only their document.
//!
//! **Errors.** Authentication failed (18), unauthorized (13), invalid names or documents
//! (e.g. over the 16 MiB BSON limit) are permanent. Network errors, timeouts, server
//! selection failures, `NotWritablePrimary`/stepdowns/shutdowns, write-concern errors and
//! anything the server labels `RetryableWriteError` are retryable.
//!
//! The client is created on the first delivery or check (not when the config is parsed) and
//! kept; the driver's pool reconnects by itself after the server comes back.

pub mod config;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use mongodb::bson::{self, Bson, Document, doc};
use mongodb::error::{
    Error as MongoError, ErrorKind, RETRYABLE_WRITE_ERROR, SYSTEM_OVERLOADED_ERROR, WriteFailure,
};
use mongodb::options::ClientOptions;
use outflow_core::config::{ConfigError, DestinationSpec, mask_url_secrets};
use outflow_core::context::RenderContext;
use outflow_core::output::Output;
use outflow_core::retry::RetryPolicy;
use tokio::sync::OnceCell;

use self::config::MongoConfig;
use crate::{
    Attempt, BatchResults, BuildDefaults, CheckReport, DeliveryError, DeliveryReceipt, Destination,
};

/// The server's duplicate-key error code: a redelivery of a document already stored.
pub const DUPLICATE_KEY: i32 = 11000;

/// Parses and validates a `type: mongodb` body.
pub fn build(
    spec: &DestinationSpec,
    defaults: &BuildDefaults,
    path: &str,
) -> Result<Arc<dyn Destination>, Vec<ConfigError>> {
    let cfg = config::parse(spec, defaults, path)?;
    Ok(Arc::new(MongoDestination { cfg, client: OnceCell::new() }))
}

/// A configured MongoDB destination with its (lazily created) pooled client.
#[derive(Debug)]
pub struct MongoDestination {
    cfg: MongoConfig,
    client: OnceCell<mongodb::Client>,
}

impl MongoDestination {
    /// The pooled client, created on first use. Parsing a `mongodb://` URI needs no network,
    /// and the driver connects lazily, so this fails only on an invalid URI (permanent).
    async fn client(&self) -> Result<&mongodb::Client, DeliveryError> {
        self.client
            .get_or_try_init(|| async {
                let mut options = ClientOptions::parse(&self.cfg.uri).await.map_err(|e| {
                    DeliveryError::permanent(format!(
                        "invalid MongoDB uri {}: {}",
                        mask_url_secrets(&self.cfg.uri),
                        self.scrub(&first_line(&e))
                    ))
                })?;
                // The driver's defaults (30 s server selection, 10 s connect) would outlast
                // the destination's timeout; an unreachable server must fail within it.
                options.server_selection_timeout = Some(self.cfg.timeout);
                options.connect_timeout = Some(self.cfg.timeout);
                options.app_name.get_or_insert_with(|| "outflow".to_string());
                mongodb::Client::with_options(options).map_err(|e| {
                    DeliveryError::permanent(format!(
                        "cannot create the MongoDB client for {}: {}",
                        mask_url_secrets(&self.cfg.uri),
                        self.scrub(&first_line(&e))
                    ))
                })
            })
            .await
    }

    /// `text` with the URI's password masked: a parse error may quote part of the URI.
    fn scrub(&self, text: &str) -> String {
        let uri = &self.cfg.uri;
        let authority = uri.split("://").nth(1).and_then(|rest| rest.split('/').next());
        let password = authority
            .and_then(|a| a.rsplit_once('@'))
            .and_then(|(userinfo, _)| userinfo.split_once(':'))
            .map(|(_, password)| password)
            .filter(|p| !p.is_empty());
        match password {
            Some(p) => text.replace(p, "********"),
            None => text.to_string(),
        }
    }

    /// `mongodb://host/database`, password masked, for messages and receipts.
    fn server(&self) -> String {
        let uri = mask_url_secrets(&self.cfg.uri);
        let without_query = uri.split('?').next().unwrap_or(&uri);
        let base = without_query.trim_end_matches('/');
        // Drop a default database from the URI; ours is the configured one.
        let authority_end = base
            .find("://")
            .map(|i| i + 3)
            .map_or(base.len(), |s| base[s..].find('/').map_or(base.len(), |j| s + j));
        format!("{}/{}", &base[..authority_end], self.cfg.database)
    }

    /// Renders and validates the collection name for one delivery.
    fn collection_name(&self, ctx: &RenderContext<'_>) -> Result<String, DeliveryError> {
        let name = self.cfg.collection.render(ctx).map_err(|e| {
            DeliveryError::permanent(format!(
                "cannot render collection template '{}': {e}",
                self.cfg.collection.source()
            ))
        })?;
        config::validate_collection(&name).map_err(|msg| {
            DeliveryError::permanent(format!(
                "{msg} (rendered from collection template '{}')",
                self.cfg.collection.source()
            ))
        })?;
        Ok(name)
    }

    fn target(&self, collection: &str) -> String {
        format!("{}.{collection}", self.server())
    }

    /// Runs `op` within the destination's timeout.
    async fn bounded<T>(
        &self,
        what: &str,
        target: &str,
        op: impl std::future::Future<Output = Result<T, MongoError>>,
    ) -> Result<Result<T, MongoError>, DeliveryError> {
        tokio::time::timeout(self.cfg.timeout, op).await.map_err(|_| {
            DeliveryError::retryable(format!(
                "MongoDB {what} on {target} timed out after {:?}",
                self.cfg.timeout
            ))
        })
    }
}

/// The stored document of one delivery (see the module docs for the layout).
pub fn document(ctx: &RenderContext<'_>) -> Result<Document, DeliveryError> {
    let job = ctx.job;
    let data = match ctx.output {
        Output::Json(value) => bson::to_bson(value).map_err(|e| {
            DeliveryError::permanent(format!("the JSON output cannot be stored as BSON: {e}"))
        })?,
        Output::Text(text) => Bson::String(text.clone()),
        Output::Binary(bytes) => Bson::Binary(bson::Binary {
            subtype: bson::spec::BinarySubtype::Generic,
            bytes: bytes.to_vec(),
        }),
    };
    Ok(doc! {
        "_id": ctx.delivery_id,
        "job_uuid": job.job_uuid.to_string(),
        "job_id": job.job_id,
        "task_name": job.task_name.clone(),
        "status": job.status.clone(),
        "completed_at": bson::DateTime::from_millis(job.completed_at.timestamp_millis()),
        "output_format": ctx.output.kind_name(),
        "data": data,
    })
}

/// Server codes that retrying can fix: primaries stepping down or restarting, network
/// trouble seen by the server, time limits, rate limits.
const RETRYABLE_CODES: &[i32] = &[
    6,     // HostUnreachable
    7,     // HostNotFound
    50,    // MaxTimeMSExpired
    89,    // NetworkTimeout
    91,    // ShutdownInProgress
    189,   // PrimarySteppedDown
    262,   // ExceededTimeLimit
    462,   // IngressRequestRateLimitExceeded
    9001,  // SocketException
    10107, // NotWritablePrimary
    11600, // InterruptedAtShutdown
    11602, // InterruptedDueToReplStateChange
    13435, // NotPrimaryNoSecondaryOk
    13436, // NotPrimaryOrSecondary
];

/// Classifies a server error code (a command or write error).
fn classify_code(code: i32, name: Option<&str>, message: &str, target: &str) -> DeliveryError {
    let label = match name {
        Some(n) if !n.is_empty() => format!("{n} ({code})"),
        _ => format!("code {code}"),
    };
    let text = format!("MongoDB {target}: {label}: {message}");
    match code {
        18 => DeliveryError::permanent(format!(
            "{text} (authentication failed: check the uri's credentials)"
        )),
        13 => DeliveryError::permanent(format!(
            "{text} (unauthorized: the user lacks the insert privilege)"
        )),
        c if RETRYABLE_CODES.contains(&c) => DeliveryError::retryable(text),
        _ => DeliveryError::permanent(text),
    }
}

/// Classifies a driver error for `target` (no secret appears in driver messages: the URI is
/// never part of them).
pub fn classify(err: &MongoError, target: &str) -> DeliveryError {
    let labelled_retryable =
        err.contains_label(RETRYABLE_WRITE_ERROR) || err.contains_label(SYSTEM_OVERLOADED_ERROR);
    let classified = match err.kind.as_ref() {
        ErrorKind::Authentication { message, .. } => {
            DeliveryError::permanent(format!("MongoDB {target}: authentication failed: {message}"))
        }
        ErrorKind::Command(c) => classify_code(c.code, Some(&c.code_name), &c.message, target),
        ErrorKind::Write(WriteFailure::WriteError(w)) => {
            classify_code(w.code, w.code_name.as_deref(), &w.message, target)
        }
        ErrorKind::Write(WriteFailure::WriteConcernError(w)) => DeliveryError::retryable(format!(
            "MongoDB {target}: write concern not satisfied: {} ({})",
            w.message, w.code_name
        )),
        ErrorKind::InvalidArgument { message, .. } => {
            DeliveryError::permanent(format!("MongoDB {target}: invalid request: {message}"))
        }
        ErrorKind::BsonSerialization(_) | ErrorKind::InvalidTlsConfig { .. } => {
            DeliveryError::permanent(format!("MongoDB {target}: {}", first_line(err)))
        }
        ErrorKind::IncompatibleServer { message, .. } => {
            DeliveryError::permanent(format!("MongoDB {target}: incompatible server: {message}"))
        }
        // Network, server selection, pool cleared, DNS, shutdown, odd responses: transient.
        _ => DeliveryError::retryable(format!("MongoDB {target}: {}", first_line(err))),
    };
    if labelled_retryable && !classified.is_retryable() {
        return DeliveryError::retryable(classified.message);
    }
    classified
}

/// Whether `err` is the duplicate-key error of a document already stored.
fn is_duplicate_key(err: &MongoError) -> bool {
    match err.kind.as_ref() {
        ErrorKind::Write(WriteFailure::WriteError(w)) => w.code == DUPLICATE_KEY,
        ErrorKind::Command(c) => c.code == DUPLICATE_KEY,
        _ => false,
    }
}

/// The first line of an error's text (driver errors can be long).
fn first_line(err: &impl std::fmt::Display) -> String {
    let text = err.to_string();
    text.lines().next().unwrap_or_default().chars().take(500).collect()
}

#[async_trait]
impl Destination for MongoDestination {
    fn kind(&self) -> &'static str {
        "mongodb"
    }

    fn describe(&self) -> String {
        self.target(self.cfg.collection.source())
    }

    fn isolation_key(&self) -> String {
        format!("mongodb:{}", self.server())
    }

    fn retry_policy(&self) -> &RetryPolicy {
        &self.cfg.retry_policy
    }

    async fn deliver(&self, attempt: Attempt<'_>) -> Result<DeliveryReceipt, DeliveryError> {
        let ctx = attempt.render;
        let name = self.collection_name(&ctx)?;
        let target = self.target(&name);
        let doc = document(&ctx)?;
        let client = self.client().await?;
        let coll = client.database(&self.cfg.database).collection::<Document>(&name);
        let receipt = DeliveryReceipt {
            target: target.clone(),
            bytes: ctx.output.size(),
            ..Default::default()
        };
        match self.bounded("insert", &target, coll.insert_one(doc).into_future()).await? {
            Ok(_) => Ok(receipt),
            Err(e) if is_duplicate_key(&e) => Ok(DeliveryReceipt {
                response_excerpt: Some(format!(
                    "duplicate _id {}: already stored",
                    ctx.delivery_id
                )),
                ..receipt
            }),
            Err(e) => Err(classify(&e, &target)),
        }
    }

    async fn deliver_batch(&self, records: &[Attempt<'_>]) -> BatchResults {
        let mut results: BatchResults =
            records.iter().map(|_| Err(DeliveryError::permanent("not attempted"))).collect();
        // One unordered insertMany per rendered collection; `positions` maps a document's
        // index in its group back to the record's index.
        let mut groups: BTreeMap<String, (Vec<usize>, Vec<Document>)> = BTreeMap::new();
        for (i, record) in records.iter().enumerate() {
            let prepared = self
                .collection_name(&record.render)
                .and_then(|name| document(&record.render).map(|doc| (name, doc)));
            match prepared {
                Ok((name, doc)) => {
                    let group = groups.entry(name).or_default();
                    group.0.push(i);
                    group.1.push(doc);
                }
                Err(e) => results[i] = Err(e),
            }
        }
        if groups.is_empty() {
            return results;
        }
        let client = match self.client().await {
            Ok(client) => client,
            Err(e) => {
                for (positions, _) in groups.values() {
                    for &i in positions {
                        results[i] = Err(e.clone());
                    }
                }
                return results;
            }
        };
        for (name, (positions, docs)) in groups {
            let target = self.target(&name);
            let coll = client.database(&self.cfg.database).collection::<Document>(&name);
            let outcome = self
                .bounded(
                    "insertMany",
                    &target,
                    coll.insert_many(&docs).ordered(false).into_future(),
                )
                .await;
            let mut per_doc: Vec<Result<(), DeliveryError>> = vec![Ok(()); positions.len()];
            match outcome {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => match e.kind.as_ref() {
                    ErrorKind::InsertMany(many) => {
                        // A write-concern error means the writes are not confirmed durable:
                        // every document not failed otherwise is retried (the retry dedupes).
                        if let Some(wc) = &many.write_concern_error {
                            let err = DeliveryError::retryable(format!(
                                "MongoDB {target}: write concern not satisfied: {} ({})",
                                wc.message, wc.code_name
                            ));
                            per_doc.iter_mut().for_each(|r| *r = Err(err.clone()));
                        }
                        for w in many.write_errors.iter().flatten() {
                            if let Some(slot) = per_doc.get_mut(w.index) {
                                *slot = if w.code == DUPLICATE_KEY {
                                    Ok(())
                                } else {
                                    Err(classify_code(
                                        w.code,
                                        w.code_name.as_deref(),
                                        &w.message,
                                        &target,
                                    ))
                                };
                            }
                        }
                    }
                    _ => {
                        let err = classify(&e, &target);
                        per_doc.iter_mut().for_each(|r| *r = Err(err.clone()));
                    }
                },
                Err(timeout) => per_doc.iter_mut().for_each(|r| *r = Err(timeout.clone())),
            }
            for (slot, &i) in per_doc.into_iter().zip(&positions) {
                results[i] = slot.map(|()| DeliveryReceipt {
                    target: target.clone(),
                    bytes: records[i].render.output.size(),
                    ..Default::default()
                });
            }
        }
        results
    }

    async fn check(&self) -> Result<CheckReport, DeliveryError> {
        let started = Instant::now();
        let target = self.server();
        let client = self.client().await?;
        let database = client.database(&self.cfg.database);
        self.bounded("ping", &target, database.run_command(doc! {"ping": 1}).into_future())
            .await?
            .map_err(|e| classify(&e, &target))?;
        Ok(CheckReport { target, elapsed: started.elapsed() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use outflow_core::context::JobContext;
    use serde_json::json;

    #[test]
    fn the_document_follows_the_documented_layout() {
        let mut job = JobContext::new_now();
        job.task_name = Some("report".into());
        let output = Output::Json(json!({"a": [1, 2.5, "x"], "b": null}));
        let doc = document(&RenderContext::new(&job, &output, "dlv_1")).unwrap();
        let keys: Vec<&str> = doc.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "_id",
                "job_uuid",
                "job_id",
                "task_name",
                "status",
                "completed_at",
                "output_format",
                "data"
            ]
        );
        assert_eq!(doc.get_str("_id").unwrap(), "dlv_1");
        assert_eq!(doc.get_str("output_format").unwrap(), "json");
        assert_eq!(doc.get_document("data").unwrap().get_array("a").unwrap().len(), 3);
        assert!(matches!(doc.get("completed_at"), Some(Bson::DateTime(_))));
        let text = Output::Text("plain".into());
        let doc = document(&RenderContext::new(&job, &text, "dlv_2")).unwrap();
        assert_eq!(doc.get_str("data").unwrap(), "plain");
    }

    #[test]
    fn client_errors_never_show_the_password() {
        let spec = outflow_core::config::DestinationSpec::from_value(
            &json!({"type": "mongodb", "uri": "mongodb://u:s3cret@h:99999/", "database": "d", "collection": "c"}),
            "d",
        )
        .unwrap();
        let cfg = config::parse(&spec, &crate::BuildDefaults::default(), "d").unwrap();
        let dest = MongoDestination { cfg, client: OnceCell::new() };
        assert_eq!(dest.scrub("bad port in u:s3cret@h:99999"), "bad port in u:********@h:99999");
        assert_eq!(dest.server(), "mongodb://u:********@h:99999/d");
    }

    #[tokio::test]
    async fn an_invalid_uri_is_permanent_and_masked() {
        let spec = outflow_core::config::DestinationSpec::from_value(
            &json!({"type": "mongodb", "uri": "mongodb://u:s3cret@h:99999/", "database": "d", "collection": "c"}),
            "d",
        )
        .unwrap();
        let cfg = config::parse(&spec, &crate::BuildDefaults::default(), "d").unwrap();
        let dest = MongoDestination { cfg, client: OnceCell::new() };
        let err = dest.check().await.unwrap_err();
        assert!(!err.is_retryable(), "{err:?}");
        assert!(!err.message.contains("s3cret"), "{}", err.message);
    }

    #[test]
    fn codes_are_classified() {
        assert!(!classify_code(18, Some("AuthenticationFailed"), "x", "t").is_retryable());
        assert!(!classify_code(13, Some("Unauthorized"), "x", "t").is_retryable());
        assert!(classify_code(10107, Some("NotWritablePrimary"), "x", "t").is_retryable());
        assert!(classify_code(91, None, "x", "t").is_retryable());
        assert!(!classify_code(2, Some("BadValue"), "x", "t").is_retryable());
        let msg =
            classify_code(13, Some("Unauthorized"), "not allowed", "mongodb://h/db.c").message;
        assert_eq!(
            msg,
            "MongoDB mongodb://h/db.c: Unauthorized (13): not allowed (unauthorized: the user lacks the insert privilege)"
        );
    }
}
