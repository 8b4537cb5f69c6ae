//! The DynamoDB destination: one item per delivery, keyed by the delivery id, written with
//! DynamoDB's JSON API (`POST /`, `X-Amz-Target: DynamoDB_20120810.<Operation>`) signed
//! with AWS Signature V4.
//!
//! ```yaml
//! type: dynamodb
//! table: "outputs_{{task_name}}"      # template; rendered: 3-255 chars of A-Z a-z 0-9 _ - .
//! region: us-east-1                   # required: the signing region
//! endpoint: http://127.0.0.1:8000     # optional: DynamoDB Local, moto, Alternator...
//! access_key_id: "${AWS_ACCESS_KEY_ID}"       # optional; else AWS_ACCESS_KEY_ID,
//! secret_access_key: "${AWS_SECRET_ACCESS_KEY}" # AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN
//! session_token: "${AWS_SESSION_TOKEN}"       # optional
//! partition_key: delivery_id          # the table's partition key attribute (value: the delivery id)
//! sort_key: job_uuid                  # optional: the table's sort key attribute...
//! sort_key_value: "{{job_uuid}}"      # ...and its value (template, default {{job_uuid}})
//! data_type: string                   # string (default) or map
//! timeout_seconds: 30
//! retry_policy: { max_attempts: 5 }
//! ```
//!
//! **Item layout.** Every value is a string attribute (`S`) unless noted:
//! `delivery_id`, `job_uuid`, `job_id` (`N`, when the job has one), `task_name` (when set),
//! `status`, `completed_at` (RFC 3339, UTC, milliseconds), `output_format` (`json`, `text`
//! or `binary`) and `data`: with `data_type: string`, a JSON output's compact JSON text;
//! with `data_type: map`, the JSON output as DynamoDB types (`M`, `L`, `N`, `S`, `BOOL`,
//! `NULL`). Text outputs are always a string, binary outputs a binary attribute (`B`). The
//! `partition_key` attribute holds the delivery id and the `sort_key` attribute its rendered
//! value; they are written last, so they win over a layout attribute of the same name.
//!
//! **Effectively-once.** A single delivery is a `PutItem` with
//! `ConditionExpression: attribute_not_exists(<partition_key>)`: a redelivery fails the
//! condition (`ConditionalCheckFailedException`), which counts as success — the item is
//! already there and is left untouched. Batches use `BatchWriteItem` (25 items per request,
//! up to 4 requests at a time), which takes no conditions: a redelivered item *overwrites*
//! the stored one with the same key and identical content, so batches are idempotent by key
//! rather than conditional. `UnprocessedItems` (throttling) are resent a few times with a
//! short backoff; what is still unprocessed fails retryably, per item.
//!
//! **Limits.** An item is at most 400 KB (names plus values). A larger item is refused
//! before sending, permanently, naming the limit: store large outputs in S3 instead.
//!
//! **Errors.** `ResourceNotFoundException` (missing table), `AccessDeniedException`,
//! `UnrecognizedClientException`, signature and token errors, and validation errors are
//! permanent. `ProvisionedThroughputExceededException`, `ThrottlingException`,
//! `RequestLimitExceeded`, 5xx responses, timeouts and connection errors are retryable.
//!
//! `check()` calls `DescribeTable` on a static table name, `ListTables` (limit 1) when the
//! name is templated: both need the endpoint, valid credentials and (the first) the table.

pub mod config;

use std::collections::HashSet;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    SignableBody, SignableRequest, SigningParams, SigningSettings, sign,
};
use aws_sigv4::sign::v4;
use base64::Engine as _;
use futures::StreamExt as _;
use outflow_core::config::{ConfigError, DestinationSpec};
use outflow_core::context::RenderContext;
use outflow_core::output::Output;
use outflow_core::retry::RetryPolicy;
use serde_json::{Map, Value, json};

use self::config::{DataType, DynamoConfig};
use crate::{
    Attempt, BatchResults, BuildDefaults, CheckReport, DeliveryError, DeliveryReceipt, Destination,
};

/// DynamoDB's item size limit: 400 KB, attribute names included.
pub const MAX_ITEM_BYTES: usize = 400 * 1024;

/// Items per `BatchWriteItem` request (DynamoDB's limit).
pub const BATCH_SIZE: usize = 25;

/// `BatchWriteItem` requests in flight at once per batch.
const BATCH_CONCURRENCY: usize = 4;

/// How many times unprocessed batch items are resent before they fail (retryably).
const UNPROCESSED_ROUNDS: u32 = 4;

/// Parses and validates a `type: dynamodb` body.
pub fn build(
    spec: &DestinationSpec,
    defaults: &BuildDefaults,
    path: &str,
) -> Result<Arc<dyn Destination>, Vec<ConfigError>> {
    let cfg = config::parse(spec, defaults, path)?;
    Ok(Arc::new(DynamoDestination { cfg, client: OnceLock::new() }))
}

/// A configured DynamoDB destination with its (lazily created) pooled HTTP client.
#[derive(Debug)]
pub struct DynamoDestination {
    cfg: DynamoConfig,
    client: OnceLock<reqwest::Client>,
}

/// Why a call failed.
enum CallError {
    /// No answer (connection, timeout) or a problem before sending: already classified.
    Transport(DeliveryError),
    /// DynamoDB answered with an error.
    Api { status: u16, kind: String, message: String },
}

/// One record of a batch, ready to write.
struct Prepared {
    index: usize,
    table: String,
    key: String,
    item: Map<String, Value>,
    bytes: u64,
}

impl DynamoDestination {
    fn client(&self) -> Result<&reqwest::Client, DeliveryError> {
        if let Some(client) = self.client.get() {
            return Ok(client);
        }
        let client = reqwest::Client::builder()
            .user_agent(concat!("outflow/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::none())
            .timeout(self.cfg.timeout)
            .connect_timeout(self.cfg.timeout)
            .build()
            .map_err(|e| DeliveryError::permanent(format!("cannot create the HTTP client: {e}")))?;
        Ok(self.client.get_or_init(|| client))
    }

    /// Credentials from the config, else from the standard environment variables.
    fn credentials(&self) -> Result<Credentials, DeliveryError> {
        if let Some(c) = &self.cfg.credentials {
            return Ok(Credentials::new(
                &c.access_key_id,
                c.secret_access_key.expose(),
                c.session_token.as_ref().map(|t| t.expose().to_string()),
                None,
                "outflow-config",
            ));
        }
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        match (var("AWS_ACCESS_KEY_ID"), var("AWS_SECRET_ACCESS_KEY")) {
            (Some(id), Some(secret)) => {
                Ok(Credentials::new(id, secret, var("AWS_SESSION_TOKEN"), None, "outflow-env"))
            }
            _ => Err(DeliveryError::permanent(
                "no DynamoDB credentials: set access_key_id and secret_access_key, or the \
                 AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY environment variables",
            )),
        }
    }

    fn endpoint(&self) -> &str {
        self.cfg.endpoint.as_str().trim_end_matches('/')
    }

    fn target(&self, table: &str) -> String {
        format!("DynamoDB table {table} at {}", self.endpoint())
    }

    /// Calls one DynamoDB operation with a signed JSON request.
    async fn call(&self, operation: &str, body: &Value) -> Result<Value, CallError> {
        let payload = serde_json::to_vec(body).expect("JSON values always serialize");
        let client = self.client().map_err(CallError::Transport)?;
        let credentials = self.credentials().map_err(CallError::Transport)?;
        let url = self.cfg.endpoint.as_str();
        let amz_target = format!("DynamoDB_20120810.{operation}");
        let headers =
            [("content-type", "application/x-amz-json-1.0"), ("x-amz-target", amz_target.as_str())];
        let identity = credentials.into();
        let signing_failed = |e: &dyn std::fmt::Display| {
            CallError::Transport(DeliveryError::permanent(format!(
                "cannot sign the DynamoDB request: {e}"
            )))
        };
        let params: SigningParams<'_> = v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.cfg.region)
            .name("dynamodb")
            .time(SystemTime::now())
            .settings(SigningSettings::default())
            .build()
            .map_err(|e| signing_failed(&e))?
            .into();
        let signable = SignableRequest::new(
            "POST",
            url,
            headers.iter().copied(),
            SignableBody::Bytes(&payload),
        )
        .map_err(|e| signing_failed(&e))?;
        let (instructions, _signature) =
            sign(signable, &params).map_err(|e| signing_failed(&e))?.into_parts();
        let mut request = client.post(url).body(payload);
        for (name, value) in headers.iter().copied().chain(instructions.headers()) {
            request = request.header(name, value);
        }
        let response = request.send().await.map_err(|e| {
            CallError::Transport(DeliveryError::retryable(if e.is_timeout() {
                format!(
                    "DynamoDB {operation} at {} timed out after {:?}",
                    self.endpoint(),
                    self.cfg.timeout
                )
            } else {
                format!("DynamoDB {operation} at {} failed: {}", self.endpoint(), error_chain(&e))
            }))
        })?;
        let status = response.status().as_u16();
        let bytes = response.bytes().await.map_err(|e| {
            CallError::Transport(DeliveryError::retryable(format!(
                "DynamoDB {operation} at {}: reading the response failed: {}",
                self.endpoint(),
                error_chain(&e)
            )))
        })?;
        let parsed: Option<Value> = serde_json::from_slice(&bytes).ok();
        if (200..300).contains(&status) {
            return parsed.ok_or_else(|| {
                CallError::Transport(DeliveryError::retryable(format!(
                    "DynamoDB {operation} at {}: the response is not JSON",
                    self.endpoint()
                )))
            });
        }
        let field = |name: &str| {
            parsed.as_ref().and_then(|v| v.get(name)).and_then(Value::as_str).map(str::to_string)
        };
        let kind = field("__type")
            .map(|t| t.rsplit('#').next().unwrap_or_default().to_string())
            .unwrap_or_else(|| format!("HTTP {status}"));
        let message = field("message")
            .or_else(|| field("Message"))
            .unwrap_or_else(|| String::from_utf8_lossy(&bytes).chars().take(300).collect());
        Err(CallError::Api { status, kind, message })
    }

    /// Renders and validates the table name for one delivery.
    fn table_name(&self, ctx: &RenderContext<'_>) -> Result<String, DeliveryError> {
        let name = self.cfg.table.render(ctx).map_err(|e| {
            DeliveryError::permanent(format!(
                "cannot render table template '{}': {e}",
                self.cfg.table.source()
            ))
        })?;
        config::validate_table(&name).map_err(|msg| {
            DeliveryError::permanent(format!(
                "{msg} (rendered from table template '{}')",
                self.cfg.table.source()
            ))
        })?;
        Ok(name)
    }

    /// The item of one delivery (see the module docs), checked against the size limit; its
    /// key as text, to match `UnprocessedItems` back to records.
    fn item(&self, ctx: &RenderContext<'_>) -> Result<(Map<String, Value>, String), DeliveryError> {
        let job = ctx.job;
        let s = |v: &str| json!({ "S": v });
        let mut item = Map::new();
        item.insert("delivery_id".into(), s(ctx.delivery_id));
        item.insert("job_uuid".into(), s(&job.job_uuid.to_string()));
        if let Some(id) = job.job_id {
            item.insert("job_id".into(), json!({ "N": id.to_string() }));
        }
        if let Some(task) = &job.task_name {
            item.insert("task_name".into(), s(task));
        }
        item.insert("status".into(), s(&job.status));
        item.insert(
            "completed_at".into(),
            s(&job.completed_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
        );
        item.insert("output_format".into(), s(ctx.output.kind_name()));
        let data = match (ctx.output, self.cfg.data_type) {
            (Output::Json(v), DataType::Map) => attribute_value(v),
            (Output::Json(v), DataType::String) => s(&v.to_string()),
            (Output::Text(t), _) => s(t),
            (Output::Binary(b), _) => {
                json!({ "B": base64::engine::general_purpose::STANDARD.encode(b) })
            }
        };
        item.insert("data".into(), data);
        item.insert(self.cfg.partition_key.clone(), s(ctx.delivery_id));
        let mut key = ctx.delivery_id.to_string();
        if let Some((name, template)) = &self.cfg.sort_key {
            let value = template.render(ctx).map_err(|e| {
                DeliveryError::permanent(format!(
                    "cannot render sort_key_value '{}': {e}",
                    template.source()
                ))
            })?;
            key = format!("{key}\u{0}{value}");
            item.insert(name.clone(), s(&value));
        }
        let size: usize = item.iter().map(|(k, v)| k.len() + value_size(v)).sum();
        if size > MAX_ITEM_BYTES {
            return Err(DeliveryError::permanent(format!(
                "the item is {size} bytes, over DynamoDB's 400 KB item size limit \
                 ({MAX_ITEM_BYTES} bytes, attribute names included); store outputs this \
                 large in S3 and deliver a reference instead"
            )));
        }
        Ok((item, key))
    }

    /// The item's key as text (see [`Self::item`]).
    fn key_of(&self, item: &Value) -> String {
        let part = |name: &str| {
            item.get(name)
                .and_then(|v| v.get("S"))
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        match &self.cfg.sort_key {
            Some((name, _)) => format!("{}\u{0}{}", part(&self.cfg.partition_key), part(name)),
            None => part(&self.cfg.partition_key),
        }
    }

    fn api_error(&self, err: CallError, table: &str) -> DeliveryError {
        match err {
            CallError::Transport(e) => e,
            CallError::Api { status, kind, message } => {
                classify(status, &kind, &message, table, self.endpoint())
            }
        }
    }

    /// Writes one chunk (at most [`BATCH_SIZE`] items with distinct keys) with
    /// `BatchWriteItem`, resending unprocessed items; one result per entry.
    async fn write_chunk(
        &self,
        chunk: Vec<Prepared>,
    ) -> Vec<(usize, Result<DeliveryReceipt, DeliveryError>)> {
        let mut done = Vec::with_capacity(chunk.len());
        let mut pending = chunk;
        let deadline = Instant::now() + self.cfg.timeout;
        for round in 0..=UNPROCESSED_ROUNDS {
            let mut request: Map<String, Value> = Map::new();
            for p in &pending {
                let list =
                    request.entry(p.table.clone()).or_insert_with(|| Value::Array(Vec::new()));
                if let Value::Array(list) = list {
                    list.push(json!({ "PutRequest": { "Item": p.item } }));
                }
            }
            let tables: Vec<String> = request.keys().cloned().collect();
            let response =
                match self.call("BatchWriteItem", &json!({ "RequestItems": request })).await {
                    Ok(response) => response,
                    Err(err) => {
                        let err = self.api_error(err, &tables.join(", "));
                        done.extend(pending.into_iter().map(|p| (p.index, Err(err.clone()))));
                        return done;
                    }
                };
            let unprocessed: HashSet<(String, String)> = response
                .get("UnprocessedItems")
                .and_then(Value::as_object)
                .into_iter()
                .flatten()
                .flat_map(|(table, requests)| {
                    requests
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(move |r| (table.clone(), self.key_of(&r["PutRequest"]["Item"])))
                })
                .collect();
            let (left, written): (Vec<Prepared>, Vec<Prepared>) = pending
                .into_iter()
                .partition(|p| unprocessed.contains(&(p.table.clone(), p.key.clone())));
            done.extend(written.into_iter().map(|p| {
                let receipt = DeliveryReceipt {
                    target: self.target(&p.table),
                    bytes: p.bytes,
                    ..Default::default()
                };
                (p.index, Ok(receipt))
            }));
            pending = left;
            if pending.is_empty() {
                break;
            }
            let backoff = Duration::from_millis(50 << round);
            if round == UNPROCESSED_ROUNDS || Instant::now() + backoff > deadline {
                break;
            }
            tokio::time::sleep(backoff).await;
        }
        done.extend(pending.into_iter().map(|p| {
            let err = DeliveryError::retryable(format!(
                "{}: the item was left unprocessed by BatchWriteItem (throughput exceeded) after {} resends",
                self.target(&p.table),
                UNPROCESSED_ROUNDS
            ));
            (p.index, Err(err))
        }));
        done
    }
}

/// Classifies an error answer from DynamoDB.
fn classify(status: u16, kind: &str, message: &str, table: &str, endpoint: &str) -> DeliveryError {
    let text = format!("{kind}: {message}");
    let err = match kind {
        "ResourceNotFoundException" => DeliveryError::permanent(format!(
            "DynamoDB table {table} does not exist or is not active at {endpoint} ({text}); \
             create it with the configured key"
        )),
        "AccessDeniedException"
        | "UnrecognizedClientException"
        | "InvalidSignatureException"
        | "MissingAuthenticationTokenException"
        | "IncompleteSignatureException"
        | "ExpiredTokenException"
        | "InvalidClientTokenId" => DeliveryError::permanent(format!(
            "DynamoDB at {endpoint} refused the credentials for table {table} ({text})"
        )),
        "ProvisionedThroughputExceededException"
        | "ThrottlingException"
        | "RequestLimitExceeded"
        | "LimitExceededException"
        | "InternalServerError"
        | "ServiceUnavailable"
        | "TransactionConflictException" => {
            DeliveryError::retryable(format!("DynamoDB table {table} at {endpoint}: {text}"))
        }
        _ if status >= 500 => {
            DeliveryError::retryable(format!("DynamoDB table {table} at {endpoint}: {text}"))
        }
        _ => DeliveryError::permanent(format!("DynamoDB table {table} at {endpoint}: {text}")),
    };
    err.with_status(status)
}

/// A JSON value as a DynamoDB attribute value (`data_type: map`).
pub fn attribute_value(value: &Value) -> Value {
    match value {
        Value::Null => json!({ "NULL": true }),
        Value::Bool(b) => json!({ "BOOL": b }),
        Value::Number(n) => json!({ "N": n.to_string() }),
        Value::String(s) => json!({ "S": s }),
        Value::Array(items) => {
            json!({ "L": items.iter().map(attribute_value).collect::<Vec<_>>() })
        }
        Value::Object(map) => {
            let m: Map<String, Value> =
                map.iter().map(|(k, v)| (k.clone(), attribute_value(v))).collect();
            json!({ "M": m })
        }
    }
}

/// The stored size of an attribute value, by DynamoDB's rules (strings and binaries by
/// length, numbers by digits, containers 3 bytes plus their elements).
fn value_size(v: &Value) -> usize {
    let Some((kind, inner)) = v.as_object().and_then(|m| m.iter().next()) else { return 0 };
    match (kind.as_str(), inner) {
        ("S" | "N", Value::String(s)) => s.len(),
        ("B", Value::String(b64)) => b64.len() / 4 * 3,
        ("L", Value::Array(items)) => 3 + items.iter().map(|i| 1 + value_size(i)).sum::<usize>(),
        ("M", Value::Object(map)) => {
            3 + map.iter().map(|(k, i)| 1 + k.len() + value_size(i)).sum::<usize>()
        }
        _ => 1,
    }
}

fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[async_trait]
impl Destination for DynamoDestination {
    fn kind(&self) -> &'static str {
        "dynamodb"
    }

    fn describe(&self) -> String {
        self.target(self.cfg.table.source())
    }

    fn isolation_key(&self) -> String {
        format!("dynamodb:{}", self.endpoint())
    }

    fn retry_policy(&self) -> &RetryPolicy {
        &self.cfg.retry_policy
    }

    async fn deliver(&self, attempt: Attempt<'_>) -> Result<DeliveryReceipt, DeliveryError> {
        let ctx = attempt.render;
        let table = self.table_name(&ctx)?;
        let (item, _) = self.item(&ctx)?;
        let body = json!({
            "TableName": table,
            "Item": item,
            "ConditionExpression": "attribute_not_exists(#pk)",
            "ExpressionAttributeNames": { "#pk": self.cfg.partition_key },
        });
        let receipt = DeliveryReceipt {
            target: self.target(&table),
            bytes: ctx.output.size(),
            ..Default::default()
        };
        match self.call("PutItem", &body).await {
            Ok(_) => Ok(DeliveryReceipt { status_code: Some(200), ..receipt }),
            Err(CallError::Api { kind, .. }) if kind == "ConditionalCheckFailedException" => {
                Ok(DeliveryReceipt {
                    response_excerpt: Some(format!(
                        "item {} already stored (ConditionalCheckFailed)",
                        ctx.delivery_id
                    )),
                    ..receipt
                })
            }
            Err(err) => Err(self.api_error(err, &table)),
        }
    }

    async fn deliver_batch(&self, records: &[Attempt<'_>]) -> BatchResults {
        let mut results: BatchResults =
            records.iter().map(|_| Err(DeliveryError::permanent("not attempted"))).collect();
        // Chunks of at most 25 items; BatchWriteItem refuses a request naming one key twice,
        // so a repeated key starts a new chunk.
        let mut chunks: Vec<Vec<Prepared>> = Vec::new();
        let mut current: Vec<Prepared> = Vec::new();
        let mut keys: HashSet<(String, String)> = HashSet::new();
        for (index, record) in records.iter().enumerate() {
            let prepared = self.table_name(&record.render).and_then(|table| {
                self.item(&record.render).map(|(item, key)| Prepared {
                    index,
                    table,
                    key,
                    item,
                    bytes: record.render.output.size(),
                })
            });
            match prepared {
                Ok(p) => {
                    let id = (p.table.clone(), p.key.clone());
                    if current.len() == BATCH_SIZE || keys.contains(&id) {
                        chunks.push(std::mem::take(&mut current));
                        keys.clear();
                    }
                    keys.insert(id);
                    current.push(p);
                }
                Err(e) => results[index] = Err(e),
            }
        }
        if !current.is_empty() {
            chunks.push(current);
        }
        let mut written = futures::stream::iter(chunks.into_iter().map(|c| self.write_chunk(c)))
            .buffer_unordered(BATCH_CONCURRENCY);
        while let Some(done) = written.next().await {
            for (index, result) in done {
                results[index] = result;
            }
        }
        results
    }

    async fn check(&self) -> Result<CheckReport, DeliveryError> {
        let started = Instant::now();
        let (operation, body, table) = if self.cfg.table.is_static() {
            let table = self.cfg.table.source().to_string();
            ("DescribeTable", json!({ "TableName": table }), table)
        } else {
            ("ListTables", json!({ "Limit": 1 }), self.cfg.table.source().to_string())
        };
        self.call(operation, &body).await.map_err(|e| self.api_error(e, &table))?;
        Ok(CheckReport { target: self.target(&table), elapsed: started.elapsed() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_answers_are_classified() {
        let t = |kind: &str, status| classify(status, kind, "m", "t", "http://e");
        assert!(!t("ResourceNotFoundException", 400).is_retryable());
        assert!(t("ResourceNotFoundException", 400).message.contains("does not exist"));
        assert!(!t("AccessDeniedException", 400).is_retryable());
        assert!(!t("UnrecognizedClientException", 400).is_retryable());
        assert!(!t("ValidationException", 400).is_retryable());
        assert!(t("ProvisionedThroughputExceededException", 400).is_retryable());
        assert!(t("ThrottlingException", 400).is_retryable());
        assert!(t("HTTP 503", 503).is_retryable());
        assert_eq!(t("ThrottlingException", 400).status_code, Some(400));
    }

    #[test]
    fn json_maps_to_attribute_values() {
        let v = json!({"a": [1, "x", null, true], "b": {"c": 2.5}});
        assert_eq!(
            attribute_value(&v),
            json!({"M": {
                "a": {"L": [{"N": "1"}, {"S": "x"}, {"NULL": true}, {"BOOL": true}]},
                "b": {"M": {"c": {"N": "2.5"}}}
            }})
        );
        assert_eq!(value_size(&json!({"S": "abc"})), 3);
        assert_eq!(value_size(&json!({"L": [{"S": "ab"}]})), 6);
    }
}
