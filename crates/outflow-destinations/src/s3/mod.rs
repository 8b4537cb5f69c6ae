//! The S3 destination: one object per output in AWS S3 or an S3-compatible store (MinIO,
//! Ceph, R2, s3s), with key templates, date partitions, compression, storage classes,
//! server-side encryption, user metadata, canned ACLs and multipart uploads.
//!
//! ```yaml
//! type: s3
//! bucket: my-outputs                 # required
//! region: eu-west-1                  # default: AWS_REGION / AWS_DEFAULT_REGION, else us-east-1
//! endpoint: http://127.0.0.1:9000    # S3-compatible server; default: AWS
//! force_path_style: true             # default: true with an endpoint, false for AWS
//! access_key_id: ${S3_KEY}           # secrets; without them: `profile`, else the environment
//! secret_access_key: ${S3_SECRET}    #   (AWS_ACCESS_KEY_ID..., AWS_PROFILE, web identity,
//! session_token: ${S3_TOKEN}         #    ECS, instance metadata)
//! profile: dev                       # a profile of ~/.aws/credentials (static keys only)
//! prefix: "archive/{{environment}}"  # template; joined to the key with one '/'
//! key: "{{task_name}}/{{delivery_id}}.json"   # template (seed 001 spelling: key_template)
//! partitioning: hive                 # none (default), hive (year=2025/month=01/day=15/), plain
//! partition_format: year/month/day   # or year/month/day/hour, year-month-day
//! format: json                       # json, json_compact, yaml, csv, xml, raw, ndjson, template
//! compression: gzip                  # none, gzip, zstd (or true = gzip)
//! compression_level: 9               # gzip 0-9 (default 6), zstd 1-22 (default 3)
//! content_type: application/json    # default: the format's media type
//! storage_class: STANDARD_IA         # STANDARD, STANDARD_IA, GLACIER, DEEP_ARCHIVE, GLACIER_IR...
//! server_side_encryption: aws:kms    # AES256, aws:kms, aws:kms:dsse
//! kms_key_id: arn:aws:kms:...        # only with aws:kms
//! metadata: { job: "{{job_uuid}}" }  # x-amz-meta-*, values are templates
//! acl: bucket-owner-full-control     # a canned ACL
//! multipart_threshold: 8MiB          # larger bodies go up in parts...
//! part_size: 8MiB                    # ...of this size (5MiB to 5GiB)
//! timeout_seconds: 30                # per S3 request; default output.default_timeout
//! allow_private_networks: false      # an endpoint on a private/loopback address needs this...
//! allowed_hosts: ["10.0.0.0/8"]      # ...or a matching entry (as for webhooks)
//! retry_policy: { max_attempts: 5 }
//! ```
//! Seed 004's camelCase spellings (`storageClass`, `serverSideEncryption`, `kmsKeyId`,
//! `partitionFormat`, `multipartThreshold`, `compressionLevel`) are accepted as well.
//! Batching keys (`batch_size`, `batch_timeout`, `bufferSize`, `flushInterval`) are a
//! "not supported yet" error: the engine forms batches.
//!
//! **Keys.** `[prefix/][partitions/]key`, then `.gz`/`.zst` for compressed bodies unless the
//! key already ends with it (`{{job_uuid}}.json.gz` stays as it is). Partitions come from the
//! job's completion time. Rendered keys are checked: at most 1024 bytes, no control
//! characters, no empty, `.` or `..` segments, no leading or trailing `/`; a bad key is a
//! permanent error naming it. The default key ends in `{{delivery_id}}`.
//!
//! **Delivery guarantee.** A delivery writes its key with an unconditional PUT, and its
//! key is the same on every retry, so a redelivery overwrites the object instead of adding
//! one: effectively-once whenever the key contains something stable per delivery
//! (`{{delivery_id}}`, or `{{job_uuid}}` for one object per job). Every object carries
//! `x-amz-meta-outflow-delivery-id`.
//!
//! **Objects.** The body is the output in `format`, then compressed; `Content-Type` is
//! `content_type` or the format's type and `Content-Encoding` names the compression. Bodies
//! larger than `multipart_threshold` are uploaded in `part_size` parts (four at a time; the
//! part size grows when 10,000 parts would not hold the body); a failed multipart upload is
//! aborted. The ACL, when set, is applied with `PUT ?acl` right after the upload (the
//! upload API used here cannot carry it), so for a moment the object has the bucket's
//! default ACL; if that second request fails, the delivery fails and its retry writes both
//! again.
//!
//! **Batches.** [`Destination::deliver_batch`] writes one object per batch: one line of
//! compact JSON per record (the record's output), `Content-Type: application/x-ndjson`.
//! Its key is the first record's key without a format extension, plus
//! `.batch-<records>-<hash of the batch's delivery ids>.ndjson` (and the compression
//! extension), e.g. `logs/d1.batch-1000-9f2c0a1b3d4e5f60.ndjson.gz`: a retried batch
//! overwrites its object, a different batch never does. Metadata templates render from the
//! first record; `x-amz-meta-outflow-records` holds the record count. Every record gets the
//! batch's result.
//!
//! **Failures.** `NoSuchBucket`, `AccessDenied`, `InvalidAccessKeyId`,
//! `SignatureDoesNotMatch` and other 4xx answers are permanent, naming the bucket and S3's
//! error code; 5xx, `SlowDown`, `RequestTimeout`, timeouts and connection failures are
//! retryable. [`Destination::check`] lists one page of the bucket (it needs
//! `s3:ListBucket`); a missing bucket is an error naming it.
//!
//! Outputs arrive in memory today; uploads are therefore memory-sized. Constant-memory
//! uploads from a blob store need a streaming body source feeding the same multipart path.

mod config;
mod errors;
mod key;
mod network;
mod profile;

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3, AmazonS3Builder, AmazonS3ConfigKey, AwsAuthorizer};
use object_store::client::{HttpRequest, HttpRequestBody};
use object_store::path::Path;
use object_store::{
    Attribute, AttributeValue, Attributes, BackoffConfig, ClientOptions, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, RetryConfig,
};
use outflow_core::compression::Compression;
use outflow_core::config::{ConfigError, DestinationSpec};
use outflow_core::context::RenderContext;
use outflow_core::retry::RetryPolicy;
use reqwest::header::{HeaderName, HeaderValue};

use self::config::{Credentials, Encryption, S3Config};
use self::errors::{S3Failure, classify};
use self::key::KeyBuilder;
use crate::{
    Attempt, BatchResults, BuildDefaults, CheckReport, DeliveryError, DeliveryReceipt, Destination,
};

pub use self::config::{CANNED_ACLS, DEFAULT_KEY, SSE_MODES, STORAGE_CLASSES};

/// Parts uploaded at the same time by one multipart upload.
const PART_CONCURRENCY: usize = 4;
/// S3's limit on the parts of one upload.
const MAX_PARTS: u64 = 10_000;
/// The user metadata every object carries: the delivery id (the first one for batches).
const DELIVERY_ID_METADATA: &str = "outflow-delivery-id";
/// The user metadata batch objects carry: how many records they hold.
const RECORDS_METADATA: &str = "outflow-records";

/// Parses and validates a `type: s3` body.
pub fn build(
    spec: &DestinationSpec,
    defaults: &BuildDefaults,
    path: &str,
) -> Result<Arc<dyn Destination>, Vec<ConfigError>> {
    let cfg = config::parse(spec, defaults, path)?;
    Ok(Arc::new(S3Destination { cfg, client: OnceLock::new() }))
}

/// A configured S3 destination. Its client (connection pool, credentials) is created on
/// the first delivery or check and reused; a dropped connection is replaced by the pool on
/// the next request.
#[derive(Debug)]
pub struct S3Destination {
    cfg: S3Config,
    client: OnceLock<Arc<Client>>,
}

/// The connected parts: the object store and what the ACL request needs.
struct Client {
    store: AmazonS3,
    http: reqwest::Client,
    region: String,
    /// `scheme://host[:port]` the object URLs start with (the bucket is in the host for
    /// virtual-hosted style).
    base_url: String,
}

impl std::fmt::Debug for Client {
    /// The store's own Debug shows the access key id; the config treats it as a secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("region", &self.region)
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

/// A body ready to upload, with its headers.
struct Upload {
    key: String,
    body: Bytes,
    attributes: Attributes,
}

impl S3Destination {
    fn keys(&self) -> KeyBuilder<'_> {
        KeyBuilder {
            prefix: self.cfg.prefix.as_ref(),
            partitioning: self.cfg.partitioning,
            key: &self.cfg.key,
            compression: self.cfg.compression,
        }
    }

    fn target(&self, key: &str) -> String {
        format!("s3://{}/{key}", self.cfg.bucket)
    }

    /// The client, created on first use from the config, the profile or the environment.
    fn client(&self) -> Result<Arc<Client>, DeliveryError> {
        if let Some(client) = self.client.get() {
            return Ok(client.clone());
        }
        let client = Arc::new(self.connect()?);
        // Two first uses may race: both clients work, one is kept.
        Ok(self.client.get_or_init(|| client).clone())
    }

    fn connect(&self) -> Result<Client, DeliveryError> {
        let cfg = &self.cfg;
        let env_region = || {
            ["AWS_REGION", "AWS_DEFAULT_REGION"]
                .iter()
                .find_map(|v| std::env::var(v).ok().filter(|r| !r.is_empty()))
        };
        let mut builder = match &cfg.credentials {
            Credentials::Environment => AmazonS3Builder::from_env(),
            _ => AmazonS3Builder::new(),
        };
        let mut region = cfg.region.clone();
        let credentials = match &cfg.credentials {
            Credentials::Static { access_key_id, secret_access_key, session_token } => {
                Some((access_key_id.clone(), secret_access_key.clone(), session_token.clone()))
            }
            Credentials::Profile(name) => Some(load_profile(name, &mut region)?),
            Credentials::Environment => match std::env::var("AWS_PROFILE") {
                // AWS_PROFILE counts only when no keys are in the environment.
                Ok(name) if std::env::var_os("AWS_ACCESS_KEY_ID").is_none() && !name.is_empty() => {
                    Some(load_profile(&name, &mut region)?)
                }
                _ => None,
            },
        };
        if let Some((id, secret, token)) = credentials {
            builder =
                builder.with_access_key_id(id.expose()).with_secret_access_key(secret.expose());
            if let Some(token) = token {
                builder = builder.with_token(token.expose());
            }
        }
        let region = region.or_else(env_region).unwrap_or_else(|| config::DEFAULT_REGION.into());
        let virtual_hosted = !cfg.force_path_style;
        let base_url = match &cfg.endpoint {
            Some(endpoint) if virtual_hosted => {
                // object_store expects the bucket in a virtual-hosted endpoint's host.
                let mut url = url::Url::parse(endpoint).map_err(|e| {
                    DeliveryError::permanent(format!("invalid endpoint '{endpoint}': {e}"))
                })?;
                let host = format!("{}.{}", cfg.bucket, url.host_str().unwrap_or_default());
                url.set_host(Some(&host)).map_err(|e| {
                    DeliveryError::permanent(format!("invalid endpoint host '{host}': {e}"))
                })?;
                url.as_str().trim_end_matches('/').to_string()
            }
            Some(endpoint) => endpoint.clone(),
            None if virtual_hosted => format!("https://{}.s3.{region}.amazonaws.com", cfg.bucket),
            None => format!("https://s3.{region}.amazonaws.com"),
        };
        builder = builder
            .with_bucket_name(&cfg.bucket)
            .with_region(&region)
            .with_virtual_hosted_style_request(virtual_hosted)
            .with_client_options(self.client_options())
            // The engine retries with its own policy; two quick retries here only smooth
            // over a dropped keep-alive connection or a blip inside a multipart upload.
            .with_retry(RetryConfig {
                backoff: BackoffConfig {
                    init_backoff: Duration::from_millis(100),
                    max_backoff: Duration::from_secs(1),
                    base: 2.0,
                },
                max_retries: 2,
                retry_timeout: cfg.timeout,
            });
        if cfg.endpoint.is_some() {
            builder =
                builder.with_endpoint(&base_url).with_allow_http(base_url.starts_with("http://"));
        }
        // The encryption keys are not exported as enum variants; their names are stable
        // config strings.
        let sse_key = |name: &str| {
            name.parse::<AmazonS3ConfigKey>().expect("object_store knows its SSE config keys")
        };
        match &cfg.encryption {
            None => {}
            Some(Encryption::Aes256) => {
                builder = builder.with_config(sse_key("aws_server_side_encryption"), "AES256");
            }
            Some(Encryption::Kms { dsse, key_id }) => {
                let mode = if *dsse { "aws:kms:dsse" } else { "aws:kms" };
                builder = builder.with_config(sse_key("aws_server_side_encryption"), mode);
                if let Some(id) = key_id {
                    builder = builder.with_config(sse_key("aws_sse_kms_key_id"), id);
                }
            }
        }
        let store = builder.build().map_err(|e| {
            DeliveryError::permanent(format!(
                "cannot configure the S3 client for bucket '{}': {e}",
                cfg.bucket
            ))
        })?;
        let http = reqwest::Client::builder()
            .timeout(cfg.timeout)
            .connect_timeout(cfg.timeout)
            .no_proxy()
            .build()
            .map_err(|e| {
                DeliveryError::permanent(format!("cannot create the HTTP client for S3: {e}"))
            })?;
        Ok(Client { store, http, region, base_url })
    }

    fn client_options(&self) -> ClientOptions {
        ClientOptions::new()
            .with_timeout(self.cfg.timeout)
            .with_connect_timeout(self.cfg.timeout.min(Duration::from_secs(10)))
            .with_user_agent(HeaderValue::from_static(USER_AGENT))
            .with_dns_resolver(Arc::new(network::PolicyDns::new(self.cfg.network.clone())))
    }

    /// The attributes of an object: content type and encoding, storage class, metadata
    /// rendered from `ctx`.
    fn attributes(
        &self,
        ctx: &RenderContext<'_>,
        content_type: &str,
    ) -> Result<Attributes, DeliveryError> {
        let mut attrs = Attributes::new();
        attrs.insert(Attribute::ContentType, AttributeValue::from(content_type.to_string()));
        if let Some(encoding) = self.cfg.compression.content_encoding() {
            attrs.insert(Attribute::ContentEncoding, AttributeValue::from(encoding));
        }
        if let Some(class) = self.cfg.storage_class {
            attrs.insert(Attribute::StorageClass, AttributeValue::from(class));
        }
        for (name, template) in &self.cfg.metadata {
            let value = template.render(ctx).map_err(|e| {
                DeliveryError::permanent(format!("cannot render metadata '{name}': {e}"))
            })?;
            // S3 sends metadata as HTTP headers: printable ASCII only.
            if !value.bytes().all(|b| (0x20..0x7f).contains(&b)) {
                return Err(DeliveryError::permanent(format!(
                    "metadata '{name}' rendered to a value with non-ASCII or control \
                     characters, which S3 metadata cannot carry"
                )));
            }
            attrs.insert(Attribute::Metadata(name.clone().into()), AttributeValue::from(value));
        }
        attrs.insert(
            Attribute::Metadata(DELIVERY_ID_METADATA.into()),
            AttributeValue::from(ctx.delivery_id.to_string()),
        );
        Ok(attrs)
    }

    fn compress(&self, body: Vec<u8>, key: &str) -> Result<Bytes, DeliveryError> {
        let compressed = match (self.cfg.compression, self.cfg.compression_level) {
            (Compression::None, _) => return Ok(Bytes::from(body)),
            (c, None) => c.compress(&body),
            (Compression::Gzip, Some(level)) => {
                use std::io::Write;
                let level = flate2::Compression::new(level.unsigned_abs());
                let mut encoder = flate2::write::GzEncoder::new(Vec::new(), level);
                encoder.write_all(&body).and_then(|()| encoder.finish())
            }
            (Compression::Zstd, Some(level)) => zstd::encode_all(&body[..], level),
        };
        compressed.map(Bytes::from).map_err(|e| {
            DeliveryError::permanent(format!("cannot compress the body of '{key}': {e}"))
        })
    }

    /// Uploads one object (single PUT or multipart), then applies the ACL; bounded by the
    /// timeout per request.
    async fn upload(&self, upload: Upload) -> Result<DeliveryReceipt, DeliveryError> {
        let client = self.client()?;
        let target = self.target(&upload.key);
        let path = Path::parse(&upload.key).map_err(|e| {
            DeliveryError::permanent(format!("rendered key '{}' is not usable: {e}", upload.key))
        })?;
        let bytes = upload.body.len() as u64;
        let parts = if bytes > self.cfg.multipart_threshold {
            bytes.div_ceil(self.part_size(bytes))
        } else {
            1
        };
        // Every request is bounded by the client's timeout; this bounds the whole delivery,
        // allowing one timeout per part plus the create/complete/ACL requests.
        let deadline = self.cfg.timeout * (u32::try_from(parts).unwrap_or(u32::MAX / 4) + 3);
        let work = async {
            if parts > 1 {
                self.put_multipart(&client, &path, &target, upload.body, upload.attributes).await?;
            } else {
                let opts = PutOptions { attributes: upload.attributes, ..PutOptions::default() };
                client
                    .store
                    .put_opts(&path, PutPayload::from(upload.body), opts)
                    .await
                    .map_err(|e| classify(&e, &format!("PUT {target}"), &self.cfg.bucket))?;
            }
            if let Some(acl) = self.cfg.acl {
                self.put_acl(&client, &upload.key, acl).await?;
            }
            Ok::<_, DeliveryError>(())
        };
        tokio::time::timeout(deadline, work).await.map_err(|_| {
            DeliveryError::retryable(format!(
                "PUT {target} timed out after {} s",
                deadline.as_secs_f64()
            ))
        })??;
        tracing::debug!(target = %target, bytes, parts, "uploaded to S3");
        Ok(DeliveryReceipt { target, status_code: Some(200), bytes, response_excerpt: None })
    }

    /// `part_size`, grown when S3's 10,000-part limit would not hold `bytes`.
    fn part_size(&self, bytes: u64) -> u64 {
        self.cfg.part_size.max(bytes.div_ceil(MAX_PARTS))
    }

    async fn put_multipart(
        &self,
        client: &Client,
        path: &Path,
        target: &str,
        body: Bytes,
        attributes: Attributes,
    ) -> Result<(), DeliveryError> {
        let op = format!("multipart upload to {target}");
        let bucket = &self.cfg.bucket;
        let opts = PutMultipartOptions { attributes, ..PutMultipartOptions::default() };
        let mut upload = client
            .store
            .put_multipart_opts(path, opts)
            .await
            .map_err(|e| classify(&e, &op, bucket))?;
        let part_size = usize::try_from(self.part_size(body.len() as u64)).unwrap_or(usize::MAX);
        // Parts are numbered in the order put_part is called; they may then finish in any
        // order. Slicing `Bytes` shares the buffer instead of copying it.
        let mut pending = Vec::new();
        let mut offset = 0;
        while offset < body.len() {
            let end = (offset + part_size).min(body.len());
            pending.push(upload.put_part(PutPayload::from(body.slice(offset..end))));
            offset = end;
        }
        let sent: Result<Vec<()>, _> =
            futures::stream::iter(pending).buffer_unordered(PART_CONCURRENCY).try_collect().await;
        let result = match sent {
            Ok(_) => upload.complete().await.map(|_| ()),
            Err(e) => Err(e),
        };
        if let Err(e) = result {
            let err = classify(&e, &op, bucket);
            if let Err(abort) = upload.abort().await {
                tracing::warn!(target = %target, error = %abort,
                    "aborting a failed multipart upload failed; the bucket's lifecycle rules must clean it up");
            }
            return Err(err);
        }
        Ok(())
    }

    /// `PUT /key?acl` with `x-amz-acl`, signed with the store's credentials.
    async fn put_acl(&self, client: &Client, key: &str, acl: &str) -> Result<(), DeliveryError> {
        let bucket = &self.cfg.bucket;
        let op = format!("PUT ACL '{acl}' on {}", self.target(key));
        let credential = client
            .store
            .credentials()
            .get_credential()
            .await
            .map_err(|e| classify(&e, &op, bucket))?;
        let encoded_key = encode_key(key);
        let url = if self.cfg.force_path_style {
            format!("{}/{bucket}/{encoded_key}?acl", client.base_url)
        } else {
            format!("{}/{encoded_key}?acl", client.base_url)
        };
        let mut request = HttpRequest::new(HttpRequestBody::empty());
        *request.method_mut() = reqwest::Method::PUT;
        *request.uri_mut() = url.parse().map_err(|e| {
            DeliveryError::permanent(format!("{op}: cannot build the request URL: {e}"))
        })?;
        let acl_value = HeaderValue::from_str(acl).map_err(|_| {
            DeliveryError::permanent(format!("{op}: '{acl}' is not a header value"))
        })?;
        request.headers_mut().insert(HeaderName::from_static("x-amz-acl"), acl_value);
        AwsAuthorizer::new(&credential, "s3", &client.region)
            .try_authorize(&mut request, None)
            .map_err(|e| DeliveryError::permanent(format!("{op}: cannot sign the request: {e}")))?;
        let response = client
            .http
            .request(reqwest::Method::PUT, url)
            .headers(request.headers().clone())
            .send()
            .await
            .map_err(|e| {
                let msg = format!("{op} failed: cannot reach S3 ({e})");
                if e.is_builder() {
                    DeliveryError::permanent(msg)
                } else {
                    DeliveryError::retryable(msg)
                }
            })?;
        let status = response.status().as_u16();
        if response.status().is_success() {
            return Ok(());
        }
        let body = response.text().await.unwrap_or_default();
        Err(S3Failure::from_text(Some(status), &body).classify(&op, bucket))
    }

    /// Renders and uploads one delivery.
    async fn deliver_one(&self, ctx: &RenderContext<'_>) -> Result<DeliveryReceipt, DeliveryError> {
        let key = self.keys().render(ctx)?;
        let formatted =
            self.cfg.format.render(ctx).map_err(|e| {
                DeliveryError::permanent(format!("{e} (object {})", self.target(&key)))
            })?;
        let body = self.compress(formatted, &key)?;
        let content_type = match &self.cfg.content_type {
            Some(ct) => ct.clone(),
            None => self.cfg.format.content_type_for(ctx.output).to_string(),
        };
        let attributes = self.attributes(ctx, &content_type)?;
        self.upload(Upload { key, body, attributes }).await
    }

    /// Renders and uploads a batch as one NDJSON object.
    async fn deliver_ndjson(
        &self,
        records: &[Attempt<'_>],
    ) -> Result<DeliveryReceipt, DeliveryError> {
        let first = &records[0].render;
        let ids: Vec<&str> = records.iter().map(|r| r.render.delivery_id).collect();
        let key = self.keys().render_batch(first, &ids)?;
        let mut lines = Vec::with_capacity(records.len() * 64);
        for record in records {
            serde_json::to_writer(&mut lines, &record.render.output.to_json_value())
                .map_err(|e| DeliveryError::permanent(format!("cannot encode a record: {e}")))?;
            lines.push(b'\n');
        }
        let body = self.compress(lines, &key)?;
        let content_type = self.cfg.content_type.as_deref().unwrap_or("application/x-ndjson");
        let mut attributes = self.attributes(first, content_type)?;
        attributes.insert(
            Attribute::Metadata(RECORDS_METADATA.into()),
            AttributeValue::from(records.len().to_string()),
        );
        self.upload(Upload { key, body, attributes }).await
    }
}

/// The user agent of the object store client.
const USER_AGENT: &str = concat!("outflow/", env!("CARGO_PKG_VERSION"));

fn load_profile(
    name: &str,
    region: &mut Option<String>,
) -> Result<
    (
        outflow_core::secret::Secret,
        outflow_core::secret::Secret,
        Option<outflow_core::secret::Secret>,
    ),
    DeliveryError,
> {
    let profile = profile::load(name).map_err(DeliveryError::permanent)?;
    if region.is_none() {
        *region = profile.region;
    }
    Ok((profile.access_key_id, profile.secret_access_key, profile.session_token))
}

/// Percent-encodes a key for a URL path the way SigV4 canonicalizes S3 paths: everything
/// but `A-Z a-z 0-9 - . _ ~` and the `/` separators.
fn encode_key(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for b in key.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'/') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[async_trait]
impl Destination for S3Destination {
    fn kind(&self) -> &'static str {
        "s3"
    }

    fn describe(&self) -> String {
        let mut key = String::new();
        if let Some(prefix) = &self.cfg.prefix {
            key.push_str(prefix.source().trim_end_matches('/'));
            key.push('/');
        }
        key.push_str(self.cfg.key.source());
        match &self.cfg.endpoint {
            Some(endpoint) => format!("{} at {endpoint}", self.target(&key)),
            None => self.target(&key),
        }
    }

    fn isolation_key(&self) -> String {
        let server = self.cfg.endpoint.as_deref().unwrap_or("aws");
        format!("s3:{server}/{}", self.cfg.bucket)
    }

    fn retry_policy(&self) -> &RetryPolicy {
        &self.cfg.retry_policy
    }

    async fn deliver(&self, attempt: Attempt<'_>) -> Result<DeliveryReceipt, DeliveryError> {
        self.deliver_one(&attempt.render).await
    }

    async fn deliver_batch(&self, records: &[Attempt<'_>]) -> BatchResults {
        if records.is_empty() {
            return Vec::new();
        }
        let result = self.deliver_ndjson(records).await;
        vec![result; records.len()]
    }

    async fn check(&self) -> Result<CheckReport, DeliveryError> {
        let started = Instant::now();
        let client = self.client()?;
        let target = format!("s3://{}", self.cfg.bucket);
        let op = format!("LIST {target}");
        // One page of the listing: cheap, and it fails with NoSuchBucket / AccessDenied.
        let first = tokio::time::timeout(self.cfg.timeout, client.store.list(None).next())
            .await
            .map_err(|_| {
                DeliveryError::retryable(format!(
                    "{op} timed out after {} s",
                    self.cfg.timeout.as_secs_f64()
                ))
            })?;
        if let Some(Err(e)) = first {
            return Err(classify(&e, &op, &self.cfg.bucket));
        }
        Ok(CheckReport { target, elapsed: started.elapsed() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_shows_no_credentials() {
        let spec = DestinationSpec::from_value(
            &serde_json::json!({"type": "s3", "bucket": "bkt", "endpoint": "http://127.0.0.1:1",
                "allow_private_networks": true,
                "access_key_id": "AKIDVISIBLE", "secret_access_key": "SECRETVISIBLE",
                "session_token": "TOKENVISIBLE"}),
            "d",
        )
        .unwrap();
        let cfg = config::parse(&spec, &BuildDefaults::default(), "d").unwrap();
        let dest = S3Destination { cfg, client: OnceLock::new() };
        dest.client().expect("the client is built without a network round trip");
        let shown = format!("{dest:?} {}", dest.describe());
        for secret in ["AKIDVISIBLE", "SECRETVISIBLE", "TOKENVISIBLE"] {
            assert!(!shown.contains(secret), "{shown}");
        }
        assert_eq!(
            dest.describe(),
            "s3://bkt/{{task_name}}/{{year}}/{{month}}/{{day}}/{{delivery_id}}.json at http://127.0.0.1:1"
        );
        assert_eq!(dest.isolation_key(), "s3:http://127.0.0.1:1/bkt");
    }

    #[test]
    fn keys_are_encoded_like_sigv4_wants() {
        assert_eq!(encode_key("a/b c/ü+x~.json"), "a/b%20c/%C3%BC%2Bx~.json");
    }
}
