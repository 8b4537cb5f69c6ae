//! The elasticsearch destination (also `type: opensearch`): one document per output, `_bulk`
//! for batches, `_id` = the delivery id.
//!
//! ```yaml
//! type: elasticsearch          # or opensearch: the same destination
//! addresses: ["https://es1:9200", "https://es2:9200"]  # round-robin, failover on errors
//! # cloud_id: "deployment:base64..."   # instead of addresses: Elastic Cloud
//! index: "logs-{{task_name}}"  # template; or "logs-%{+YYYY.MM.dd}" (seed 001 patterns)
//! index_rotation: daily        # none (default), daily, weekly, monthly, yearly
//! pipeline: my-pipeline        # ingest pipeline
//! username: elastic            # basic auth with password...
//! password: "${ES_PASSWORD}"
//! # api_key: "${ES_API_KEY}"   # ...or an API key ("id:key", or already base64-encoded)
//! # tls_ca_file: /etc/ssl/es-ca.pem   # trust this CA too; tls_insecure: true skips checks
//! op_type: index               # index (default: create or replace) or create (never replace)
//! # id_field: /event/id       # _id from the output (JSON pointer or top-level key)
//! timestamp_field: "@timestamp"
//! job_fields_key: outflow      # job fields go under this key; false leaves them out
//! message_field: message       # where a text output goes
//! batch_size: 500              # most documents per _bulk request (seed 001)
//! max_bulk_bytes: 10MiB        # largest _bulk body
//! bulk_workers: 2              # concurrent _bulk requests per batch (seed 001)
//! batch_timeout: 5s            # seed 001: accepted; the engine forms batches (see below)
//! timeout_seconds: 30
//! allow_private_networks: false   # operator-only, like webhooks; allowed_hosts too
//! ```
//!
//! **Documents.** A JSON object output is the document itself; a text output becomes
//! `{"<message_field>": text}`; another JSON value (array, number...) becomes `{"data":
//! value}`; a binary output cannot be indexed (permanent error). Outflow adds
//! `<timestamp_field>` (the job's completion time, RFC 3339 UTC, unless the output already
//! has that field) and, under `<job_fields_key>`, `delivery_id`, `job_uuid`, `job_id`,
//! `task_name`, `task_version`, `status`, `priority`, `environment`, `duration_ms` and
//! `metadata` (replacing an output field of that name).
//!
//! **Index names** are rendered from the job context and dated by the job's
//! `completed_at` (UTC), then checked against Elasticsearch's rules (lowercase, no `/ \ * ?
//! " < > | , # :` or spaces...): a bad name is a permanent error naming it.
//!
//! **Delivery.** One output: `PUT /<index>/_doc/<id>` (`_create` with `op_type: create`).
//! A batch: `POST /_bulk` (NDJSON), split by `batch_size` and `max_bulk_bytes`, and each
//! item's own result is reported, so only failed items are retried. The `_id` makes
//! redelivery idempotent: `index` rewrites the same document, `create` answers 409, which
//! counts as delivered (the document is there). 429 (the whole request or one item) and
//! 5xx are retryable (a `Retry-After` is passed on); 401/403, mapping errors (400), a
//! missing pipeline and other 4xx are permanent. Connection errors fail over to the next
//! address, then are retryable. `batch_timeout` is accepted for seed 001 configs but does
//! nothing here: batching (size and wait) is the engine's, which calls `deliver_batch`.
//!
//! **Network safety** is the webhook's: addresses resolve through the same
//! [`PolicyResolver`](crate::webhook::resolver::PolicyResolver), so private addresses need
//! `allow_private_networks` or `allowed_hosts` from the operator's config. No redirects,
//! no environment proxies.
//!
//! Plain `reqwest` (already the webhook's client) speaks this small REST surface; an
//! official client crate would add a large dependency tree for no behaviour we need.

pub mod config;
pub mod index;

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Instant, SystemTime};

use async_trait::async_trait;
use base64::Engine as _;
use futures::StreamExt as _;
use outflow_core::attempt::response_excerpt;
use outflow_core::config::{ConfigError, DestinationSpec};
use outflow_core::context::RenderContext;
use outflow_core::output::Output;
use outflow_core::retry::{RetryPolicy, parse_retry_after};
use reqwest::StatusCode;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderValue, RETRY_AFTER};
use serde_json::{Map, Value, json};

use self::config::{Auth, ElasticsearchConfig, OpType};
use crate::webhook::resolver::{PolicyResolver, ResolveError, check_literal};
use crate::{
    Attempt, BatchResults, BuildDefaults, CheckReport, DeliveryError, DeliveryReceipt, Destination,
};

/// Parses and validates a `type: elasticsearch` body.
pub fn build(
    spec: &DestinationSpec,
    defaults: &BuildDefaults,
    path: &str,
) -> Result<Arc<dyn Destination>, Vec<ConfigError>> {
    build_kind(spec, defaults, path, "elasticsearch")
}

/// Parses and validates a `type: opensearch` body: the same destination under the name
/// OpenSearch users look for.
pub fn build_opensearch(
    spec: &DestinationSpec,
    defaults: &BuildDefaults,
    path: &str,
) -> Result<Arc<dyn Destination>, Vec<ConfigError>> {
    build_kind(spec, defaults, path, "opensearch")
}

fn build_kind(
    spec: &DestinationSpec,
    defaults: &BuildDefaults,
    path: &str,
    kind: &'static str,
) -> Result<Arc<dyn Destination>, Vec<ConfigError>> {
    let cfg = ElasticsearchConfig::parse(spec, defaults, path)?;
    let resolver = PolicyResolver::new(Arc::new(cfg.network.clone()));
    Ok(Arc::new(ElasticsearchDestination {
        cfg,
        kind,
        client: std::sync::OnceLock::new(),
        resolver,
        next: AtomicUsize::new(0),
    }))
}

/// A configured elasticsearch destination with its pooled HTTP client.
pub struct ElasticsearchDestination {
    cfg: ElasticsearchConfig,
    kind: &'static str,
    client: std::sync::OnceLock<reqwest::Client>,
    resolver: PolicyResolver,
    /// Round-robin position over `addresses`.
    next: AtomicUsize,
}

impl fmt::Debug for ElasticsearchDestination {
    /// Credentials are left out.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let addresses: Vec<&str> = self.cfg.addresses.iter().map(url::Url::as_str).collect();
        f.debug_struct("ElasticsearchDestination")
            .field("kind", &self.kind)
            .field("addresses", &addresses)
            .field("index", &self.cfg.index.source())
            .field("pipeline", &self.cfg.pipeline)
            .field("op_type", &self.cfg.op_type)
            .finish_non_exhaustive()
    }
}

/// One document ready to send.
struct Doc {
    index: String,
    id: String,
    body: Vec<u8>,
}

/// A response read to the end (bounded by the client timeout).
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Vec<u8>,
    target: String,
}

impl ElasticsearchDestination {
    /// The validated configuration.
    pub fn config(&self) -> &ElasticsearchConfig {
        &self.cfg
    }

    /// The pooled client, created on first use.
    fn client(&self) -> Result<&reqwest::Client, DeliveryError> {
        if let Some(client) = self.client.get() {
            return Ok(client);
        }
        let mut builder = reqwest::Client::builder()
            .user_agent(crate::webhook::USER_AGENT)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .timeout(self.cfg.timeout)
            .connect_timeout(self.cfg.timeout)
            .dns_resolver(self.resolver.clone());
        if let Some(path) = &self.cfg.tls_ca_file {
            let pem = std::fs::read(path).map_err(|e| {
                DeliveryError::permanent(format!("cannot read tls_ca_file {}: {e}", path.display()))
            })?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                DeliveryError::permanent(format!(
                    "tls_ca_file {} holds no usable PEM certificate: {e}",
                    path.display()
                ))
            })?;
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        if self.cfg.tls_insecure {
            builder = builder.danger_accept_invalid_certs(true);
        }
        let client = builder.build().map_err(|e| {
            DeliveryError::permanent(format!(
                "cannot create the HTTP client: {}",
                crate::webhook::error_chain(&e)
            ))
        })?;
        Ok(self.client.get_or_init(|| client))
    }

    /// The `Authorization` header, if any.
    fn auth_header(&self) -> Result<Option<HeaderValue>, DeliveryError> {
        let value = match &self.cfg.auth {
            None => return Ok(None),
            Some(Auth::Basic { username, password }) => {
                let raw = format!("{username}:{}", password.expose());
                format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(raw))
            }
            Some(Auth::ApiKey(key)) => {
                let key = key.expose();
                // "id:key" is encoded here; a value without ':' is taken as already encoded.
                if key.contains(':') {
                    format!("ApiKey {}", base64::engine::general_purpose::STANDARD.encode(key))
                } else {
                    format!("ApiKey {key}")
                }
            }
        };
        let mut value = HeaderValue::from_str(&value).map_err(|_| {
            DeliveryError::permanent(
                "the credentials contain characters not allowed in HTTP headers",
            )
        })?;
        value.set_sensitive(true);
        Ok(Some(value))
    }

    /// Sends a request to the addresses in round-robin order, failing over on connection
    /// errors and 502/503/504; `path` is relative to the address (`_bulk`, `idx/_doc/id`).
    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        content_type: &'static str,
        body: Option<Vec<u8>>,
    ) -> Result<Answer, DeliveryError> {
        let client = self.client()?;
        let auth = self.auth_header()?;
        let n = self.cfg.addresses.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let mut last_err = None;
        for k in 0..n {
            let base = &self.cfg.addresses[(start + k) % n];
            let url = base.join(path).map_err(|e| {
                DeliveryError::permanent(format!("cannot build a URL from {base} and {path}: {e}"))
            })?;
            let target = url.as_str().to_string();
            if let Some(host) = url.host() {
                check_literal(&self.cfg.network, &host).map_err(|m| blocked(&target, &m))?;
            }
            let mut request = client.request(method.clone(), url);
            if let Some(auth) = &auth {
                request = request.header(AUTHORIZATION, auth.clone());
            }
            if let Some(body) = &body {
                request = request.header(CONTENT_TYPE, content_type).body(body.clone());
            }
            let response = match request.send().await {
                Ok(r) => r,
                Err(e) => {
                    let err = self.send_error(&e, &target);
                    if !err.is_retryable() {
                        return Err(err);
                    }
                    last_err = Some(err);
                    continue;
                }
            };
            let status = response.status();
            let headers = response.headers().clone();
            let body = match response.bytes().await {
                Ok(b) => b.to_vec(),
                Err(e) => {
                    last_err = Some(self.send_error(&e, &target));
                    continue;
                }
            };
            let answer = Answer { status, headers, body, target };
            if matches!(status.as_u16(), 502..=504) && k + 1 < n {
                last_err = Some(answer_error(&answer));
                continue;
            }
            return Ok(answer);
        }
        Err(last_err.unwrap_or_else(|| DeliveryError::retryable("no address to send to")))
    }

    fn send_error(&self, err: &reqwest::Error, target: &str) -> DeliveryError {
        if let Some(refusal) = ResolveError::refusal_in(err) {
            return blocked(target, &refusal.to_string());
        }
        if err.is_timeout() {
            return DeliveryError::retryable(format!(
                "request to {target} timed out after {:?}",
                self.cfg.timeout
            ));
        }
        if err.is_builder() {
            return DeliveryError::permanent(format!(
                "cannot build the request to {target}: {}",
                crate::webhook::error_chain(err)
            ));
        }
        DeliveryError::retryable(format!(
            "connection to {target} failed: {}",
            crate::webhook::error_chain(err)
        ))
    }

    /// The document for one output (see the module docs).
    fn document(&self, ctx: &RenderContext<'_>) -> Result<Map<String, Value>, DeliveryError> {
        let cfg = &self.cfg;
        let mut doc = match ctx.output {
            Output::Json(Value::Object(map)) => map.clone(),
            Output::Json(Value::String(text)) | Output::Text(text) => {
                Map::from_iter([(cfg.message_field.clone(), Value::String(text.clone()))])
            }
            Output::Json(other) => Map::from_iter([("data".to_string(), other.clone())]),
            Output::Binary(_) => {
                return Err(DeliveryError::permanent(
                    "a binary output cannot be indexed as a document; produce JSON or text",
                ));
            }
        };
        let job = ctx.job;
        if !doc.contains_key(&cfg.timestamp_field) {
            let at = job.completed_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
            doc.insert(cfg.timestamp_field.clone(), Value::String(at));
        }
        if let Some(key) = &cfg.job_fields_key {
            doc.insert(
                key.clone(),
                json!({
                    "delivery_id": ctx.delivery_id,
                    "job_uuid": job.job_uuid.to_string(),
                    "job_id": job.job_id,
                    "task_name": job.task_name,
                    "task_version": job.task_version,
                    "status": job.status,
                    "priority": job.priority.as_str(),
                    "environment": job.environment,
                    "duration_ms": job.duration_ms,
                    "metadata": job.metadata,
                }),
            );
        }
        Ok(doc)
    }

    /// The `_id`: the `id_field` value, or the delivery id.
    fn doc_id(&self, ctx: &RenderContext<'_>) -> Result<String, DeliveryError> {
        let Some(field) = &self.cfg.id_field else {
            return Ok(ctx.delivery_id.to_string());
        };
        let found = match ctx.output {
            Output::Json(v) if field.starts_with('/') => v.pointer(field),
            Output::Json(v) => v.get(field),
            _ => None,
        };
        match found {
            Some(Value::String(s)) if !s.is_empty() && s.len() <= 512 => Ok(s.clone()),
            Some(Value::Number(n)) => Ok(n.to_string()),
            Some(_) => Err(DeliveryError::permanent(format!(
                "id_field '{field}' is not a non-empty string (at most 512 bytes) or a number"
            ))),
            None => Err(DeliveryError::permanent(format!(
                "id_field '{field}' is not in the output (a {} output)",
                ctx.output.kind_name()
            ))),
        }
    }

    fn prepare(&self, ctx: &RenderContext<'_>) -> Result<Doc, DeliveryError> {
        let index =
            self.cfg.index.render(ctx, ctx.job.completed_at).map_err(DeliveryError::permanent)?;
        let id = self.doc_id(ctx)?;
        let body = serde_json::to_vec(&self.document(ctx)?).expect("JSON values always serialize");
        Ok(Doc { index, id, body })
    }

    /// `?pipeline=...` when a pipeline is set.
    fn query(&self) -> String {
        match &self.cfg.pipeline {
            Some(p) => format!("?pipeline={p}"),
            None => String::new(),
        }
    }

    /// Judges a single-document answer.
    fn judge_one(&self, answer: Answer, sent: u64) -> Result<DeliveryReceipt, DeliveryError> {
        let code = answer.status.as_u16();
        let excerpt = (!answer.body.is_empty()).then(|| response_excerpt(&answer.body));
        if answer.status.is_success() {
            return Ok(DeliveryReceipt {
                target: answer.target,
                status_code: Some(code),
                bytes: sent,
                response_excerpt: excerpt,
            });
        }
        if code == 409 && self.cfg.op_type == OpType::Create {
            return Ok(DeliveryReceipt {
                target: answer.target,
                status_code: Some(code),
                bytes: sent,
                response_excerpt: Some(
                    "the document already exists (op_type: create); left as it is".into(),
                ),
            });
        }
        Err(answer_error(&answer))
    }

    /// Sends one `_bulk` request for `docs` and returns one result per document.
    async fn bulk(&self, docs: Vec<&Doc>) -> Vec<Result<DeliveryReceipt, DeliveryError>> {
        let action = match self.cfg.op_type {
            OpType::Index => "index",
            OpType::Create => "create",
        };
        let mut body = Vec::new();
        for doc in &docs {
            let line = json!({action: {"_index": doc.index, "_id": doc.id}});
            serde_json::to_writer(&mut body, &line).expect("JSON values always serialize");
            body.push(b'\n');
            body.extend_from_slice(&doc.body);
            body.push(b'\n');
        }
        let path = format!("_bulk{}", self.query());
        let all = |err: DeliveryError| docs.iter().map(|_| Err(err.clone())).collect();
        let answer =
            match self.send(reqwest::Method::POST, &path, "application/x-ndjson", Some(body)).await
            {
                Ok(a) => a,
                Err(e) => return all(e),
            };
        if !answer.status.is_success() {
            return all(answer_error(&answer));
        }
        let parsed: Value = match serde_json::from_slice(&answer.body) {
            Ok(v) => v,
            Err(e) => {
                return all(DeliveryError::retryable(format!(
                    "{}: the _bulk answer is not JSON ({e})",
                    answer.target
                )));
            }
        };
        let items = parsed.get("items").and_then(Value::as_array);
        let Some(items) = items.filter(|i| i.len() == docs.len()) else {
            return all(DeliveryError::retryable(format!(
                "{}: the _bulk answer does not have one item per document",
                answer.target
            )));
        };
        let retry_after = retry_after(&answer.headers);
        docs.iter().zip(items).map(|(doc, item)| self.judge_item(doc, item, retry_after)).collect()
    }

    /// Judges one `_bulk` item.
    fn judge_item(
        &self,
        doc: &Doc,
        item: &Value,
        retry_after: Option<std::time::Duration>,
    ) -> Result<DeliveryReceipt, DeliveryError> {
        let result = item.as_object().and_then(|o| o.values().next()).unwrap_or(&Value::Null);
        let status = result.get("status").and_then(Value::as_u64).unwrap_or(0) as u16;
        let target = format!("{} {}/_doc/{}", self.cfg.addresses[0].as_str(), doc.index, doc.id);
        let receipt = |excerpt: String| DeliveryReceipt {
            target: target.clone(),
            status_code: Some(status),
            bytes: doc.body.len() as u64,
            response_excerpt: Some(excerpt),
        };
        if (200..300).contains(&status) {
            let outcome = result.get("result").and_then(Value::as_str).unwrap_or("ok");
            return Ok(receipt(format!("{} {outcome}", doc.index)));
        }
        if status == 409 && self.cfg.op_type == OpType::Create {
            return Ok(receipt(
                "the document already exists (op_type: create); left as it is".into(),
            ));
        }
        let (kind, reason) = error_parts(result.get("error"));
        let message = format!("{target}: item failed with HTTP {status}: {kind}: {reason}");
        let err = if status == 429 || status >= 500 || status == 0 {
            DeliveryError::retryable(message).with_retry_after(retry_after)
        } else {
            DeliveryError::permanent(message)
        };
        Err(err.with_status(status))
    }
}

/// The error's `type` and `reason` from an Elasticsearch error object.
fn error_parts(error: Option<&Value>) -> (String, String) {
    let error = error.unwrap_or(&Value::Null);
    let kind = error.get("type").and_then(Value::as_str).unwrap_or("error").to_string();
    let reason = match error.get("reason").and_then(Value::as_str) {
        Some(r) => r.to_string(),
        None => error.as_str().unwrap_or("no reason given").to_string(),
    };
    (kind, reason)
}

fn retry_after(headers: &HeaderMap) -> Option<std::time::Duration> {
    headers
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| parse_retry_after(v, SystemTime::now()))
}

/// The error for a non-2xx answer: 429, 408 and 5xx retryable, others permanent.
fn answer_error(answer: &Answer) -> DeliveryError {
    let code = answer.status.as_u16();
    let parsed: Option<Value> = serde_json::from_slice(&answer.body).ok();
    let (kind, reason) = error_parts(parsed.as_ref().and_then(|v| v.get("error")));
    let hint = match code {
        401 => " (authentication failed: check username/password or api_key)",
        403 => " (permission denied for these credentials)",
        _ => "",
    };
    let message = match parsed.as_ref().and_then(|v| v.get("error")) {
        Some(_) => format!("HTTP {code} from {}: {kind}: {reason}{hint}", answer.target),
        None => format!("HTTP {code} from {}{hint}", answer.target),
    };
    let excerpt = (!answer.body.is_empty()).then(|| response_excerpt(&answer.body));
    let err = match code {
        429 => DeliveryError::retryable(message).with_retry_after(retry_after(&answer.headers)),
        408 | 500..=599 => DeliveryError::retryable(message),
        _ => DeliveryError::permanent(message),
    };
    err.with_status(code).with_excerpt(excerpt)
}

fn blocked(target: &str, why: &str) -> DeliveryError {
    DeliveryError::permanent(format!("{target} blocked by the SSRF guard: {why}"))
}

/// Percent-encodes a path segment (everything but unreserved characters).
fn encode_segment(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[async_trait]
impl Destination for ElasticsearchDestination {
    fn kind(&self) -> &'static str {
        self.kind
    }

    fn describe(&self) -> String {
        format!("{} index {}", self.cfg.addresses[0].as_str(), self.cfg.index.source())
    }

    fn isolation_key(&self) -> String {
        let base = &self.cfg.addresses[0];
        let port = base.port_or_known_default().map(|p| format!(":{p}")).unwrap_or_default();
        format!("{}:{}://{}{port}", self.kind, base.scheme(), base.host_str().unwrap_or_default())
    }

    fn retry_policy(&self) -> &RetryPolicy {
        &self.cfg.retry_policy
    }

    async fn deliver(&self, attempt: Attempt<'_>) -> Result<DeliveryReceipt, DeliveryError> {
        let doc = self.prepare(&attempt.render)?;
        let endpoint = match self.cfg.op_type {
            OpType::Index => "_doc",
            OpType::Create => "_create",
        };
        let path = format!("{}/{endpoint}/{}{}", doc.index, encode_segment(&doc.id), self.query());
        tracing::debug!(index = %doc.index, id = %doc.id, attempt = attempt.number,
            bytes = doc.body.len(), "indexing document");
        let sent = doc.body.len() as u64;
        let answer =
            self.send(reqwest::Method::PUT, &path, "application/json", Some(doc.body)).await?;
        self.judge_one(answer, sent)
    }

    async fn deliver_batch(&self, records: &[Attempt<'_>]) -> BatchResults {
        let mut results: Vec<Option<Result<DeliveryReceipt, DeliveryError>>> =
            Vec::with_capacity(records.len());
        let mut docs: Vec<(usize, Doc)> = Vec::new();
        for record in records {
            match self.prepare(&record.render) {
                Ok(doc) => {
                    docs.push((results.len(), doc));
                    results.push(None);
                }
                Err(e) => results.push(Some(Err(e))),
            }
        }
        // Chunks by count and bytes; a document larger than max_bulk_bytes goes alone.
        let mut chunks: Vec<Vec<&(usize, Doc)>> = Vec::new();
        let mut size = 0u64;
        for entry in &docs {
            let bytes = entry.1.body.len() as u64 + 128;
            let full = chunks.last().is_none_or(|c| {
                c.len() >= self.cfg.batch_size || size + bytes > self.cfg.max_bulk_bytes
            });
            if full {
                chunks.push(Vec::new());
                size = 0;
            }
            size += bytes;
            chunks.last_mut().expect("a chunk was pushed").push(entry);
        }
        let requests: Vec<_> =
            chunks.iter().map(|chunk| self.bulk(chunk.iter().map(|(_, d)| d).collect())).collect();
        let outcomes: Vec<_> =
            futures::stream::iter(requests).buffered(self.cfg.bulk_workers).collect().await;
        for (chunk, outcome) in chunks.iter().zip(outcomes) {
            for ((slot, _), result) in chunk.iter().zip(outcome) {
                results[*slot] = Some(result);
            }
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(DeliveryError::retryable("record was not sent"))))
            .collect()
    }

    async fn check(&self) -> Result<CheckReport, DeliveryError> {
        let started = Instant::now();
        let answer = self.send(reqwest::Method::GET, "", "application/json", None).await?;
        if !answer.status.is_success() {
            return Err(answer_error(&answer));
        }
        Ok(CheckReport { target: answer.target, elapsed: started.elapsed() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_are_encoded() {
        assert_eq!(encode_segment("dlv_01ab"), "dlv_01ab");
        assert_eq!(encode_segment("a/b?c d"), "a%2Fb%3Fc%20d");
    }

    #[test]
    fn error_answers_are_classified() {
        let answer = |code: u16, body: &str| Answer {
            status: StatusCode::from_u16(code).unwrap(),
            headers: HeaderMap::new(),
            body: body.as_bytes().to_vec(),
            target: "http://es/x".into(),
        };
        let e = answer_error(&answer(
            400,
            r#"{"error":{"type":"mapper_parsing_exception","reason":"failed to parse field [n]"}}"#,
        ));
        assert!(!e.is_retryable());
        assert!(
            e.message.contains("mapper_parsing_exception: failed to parse field [n]"),
            "{}",
            e.message
        );
        assert!(answer_error(&answer(429, "")).is_retryable());
        assert!(answer_error(&answer(503, "")).is_retryable());
        let e = answer_error(&answer(401, ""));
        assert!(!e.is_retryable() && e.message.contains("authentication failed"));
    }
}
