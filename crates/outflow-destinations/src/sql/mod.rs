//! The SQL destinations: `postgresql`, `mysql` (MySQL and MariaDB) and `sqlite`.
//!
//! ```yaml
//! destination:
//!   type: postgresql                 # or mysql, sqlite
//!   connection_string: "postgres://outflow:${PG_PASSWORD}@db:5432/outputs"
//!   # ...or host / port / database / user / password (they override the URL's parts)
//!   # sqlite: path: /var/lib/outflow/outputs.db (or connection_string: sqlite:///var/...)
//!   pool_size: 10                    # connections (postgresql, mysql)
//!   tls_mode: verify-full            # disable, prefer, require, verify-ca, verify-full
//!   tls_ca_file: /etc/ssl/db-ca.pem
//!   table: "outputs_{{task_name}}"   # template; validated after rendering; schema.table ok
//!   schema: public                   # postgresql: for table names without one
//!   create_table: true               # default: create the table and its indexes if missing
//!   columns:                         # optional: your own columns instead of the default schema
//!     job: "{{job_uuid}}"            #   a template over the job context
//!     user_id: "/user/id"            #   a JSON pointer into the output (missing → NULL)
//!   retention_days: 90               # delete rows older than this, checked hourly per table
//!   batch_size: 500                  # rows per INSERT in deliver_batch
//!   timeout_seconds: 30
//! ```
//!
//! ## The default schema (seed 004)
//! `id` (auto-increment key), `delivery_id` UNIQUE, the job's fields (`job_uuid`, `job_id`,
//! `task_name`, `task_version`, `status`, `environment`, `priority`, `duration_ms`),
//! `output_kind` (`json`, `text`, `binary`), `output_size`, `data` (the output: PostgreSQL
//! `JSONB`, MySQL `JSON`, SQLite `TEXT` holding JSON), `completed_at` (the job's) and
//! `created_at` (the insert's). A JSON output is stored as its value; a text output as a JSON
//! string (so `data #>> '{}'` / `JSON_UNQUOTE(data)` / `json_extract(data, '$')` read it
//! back byte-exact); a binary output as a JSON string of its standard base64. PostgreSQL gets
//! B-tree indexes on `completed_at DESC`, `task_name`, `status` and `job_uuid`, a partial index
//! on `completed_at` of the rows whose status is not `completed`, and a GIN index on `data`;
//! MySQL and SQLite get the B-tree ones (MySQL cannot index a JSON column; SQLite has no GIN).
//!
//! With `columns`, the table holds `id`, `delivery_id`, your columns (created as text; an
//! existing table may type them as it likes — values are converted by the database) and
//! `created_at`. Either way `delivery_id` must be unique: that is what makes a redelivery a
//! no-op.
//!
//! ## Guarantees
//! Effectively-once: every row carries the delivery id under a unique constraint and is
//! inserted with `ON CONFLICT (delivery_id) DO NOTHING` (PostgreSQL, SQLite) or
//! `ON DUPLICATE KEY UPDATE delivery_id = delivery_id` (MySQL: unlike `INSERT IGNORE`, it
//! does not turn bad values into warnings and silently stored truncations), so a retry after
//! a lost acknowledgement stores nothing twice.
//!
//! ## Errors
//! Connection failures, serialization failures, deadlocks, lock timeouts, too many
//! connections and server shutdowns are retryable; bad credentials, permissions, unknown
//! databases, a missing table with `create_table: false`, bad values and invalid rendered
//! names are permanent. Messages name the table and the SQLSTATE or error number.

pub mod config;
pub mod ident;
#[cfg(feature = "mysql")]
pub mod mysql;
#[cfg(feature = "postgresql")]
pub mod postgresql;
#[cfg(feature = "sqlite")]
pub mod sqlite;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use base64::Engine as _;
use chrono::{DateTime, Utc};
use outflow_core::context::RenderContext;
use outflow_core::output::Output;
use outflow_core::retry::RetryPolicy;
use serde_json::Value;

use crate::{Attempt, BatchResults, CheckReport, DeliveryError, DeliveryReceipt, Destination};
use config::{ColumnSource, SqlConfig};
use ident::TableName;

/// How often retention runs per table, at most.
pub const RETENTION_INTERVAL: Duration = Duration::from_secs(3600);

/// The SQL type family of a column, mapped to a concrete type by each backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnType {
    /// A short string (VARCHAR(n)).
    Short(u16),
    /// Unbounded text.
    Text,
    /// A UUID.
    Uuid,
    /// A 64-bit integer.
    BigInt,
    /// A JSON document.
    Json,
    /// A UTC timestamp.
    Timestamp,
}

/// One column the destination writes.
#[derive(Debug, Clone)]
pub struct Column {
    /// Its name (validated).
    pub name: String,
    /// Its type, for CREATE TABLE.
    pub ty: ColumnType,
}

/// The columns written, in order; `delivery_id` is always the first.
#[derive(Debug, Clone)]
pub struct Layout {
    /// The columns.
    pub columns: Vec<Column>,
    /// Whether this is the default (seed 004) schema, which gets its indexes.
    pub default_schema: bool,
}

/// The default schema's columns, after `id` and before `created_at`.
const DEFAULT_COLUMNS: &[(&str, ColumnType)] = &[
    ("delivery_id", ColumnType::Short(255)),
    ("job_uuid", ColumnType::Uuid),
    ("job_id", ColumnType::BigInt),
    ("task_name", ColumnType::Short(255)),
    ("task_version", ColumnType::Short(100)),
    ("status", ColumnType::Short(50)),
    ("environment", ColumnType::Short(100)),
    ("priority", ColumnType::Short(20)),
    ("duration_ms", ColumnType::BigInt),
    ("output_kind", ColumnType::Short(20)),
    ("output_size", ColumnType::BigInt),
    ("data", ColumnType::Json),
    ("completed_at", ColumnType::Timestamp),
];

impl Layout {
    fn from_config(cfg: &SqlConfig) -> Layout {
        match &cfg.columns {
            None => Layout {
                columns: DEFAULT_COLUMNS
                    .iter()
                    .map(|(name, ty)| Column { name: (*name).to_string(), ty: *ty })
                    .collect(),
                default_schema: true,
            },
            Some(user) => {
                let mut columns =
                    vec![Column { name: "delivery_id".into(), ty: ColumnType::Short(255) }];
                columns.extend(
                    user.iter()
                        .map(|(name, _)| Column { name: name.clone(), ty: ColumnType::Text }),
                );
                Layout { columns, default_schema: false }
            }
        }
    }
}

/// One value to insert.
#[derive(Debug, Clone, PartialEq)]
pub enum SqlValue {
    /// NULL.
    Null,
    /// Text.
    Text(String),
    /// An integer.
    Int(i64),
    /// A JSON value (the output, or what a pointer found).
    Json(Value),
    /// A timestamp.
    Timestamp(DateTime<Utc>),
}

/// One row: values in [`Layout::columns`] order.
#[derive(Debug, Clone)]
pub struct Row {
    /// The values.
    pub values: Vec<SqlValue>,
    /// The size of the output the row carries, for receipts.
    pub bytes: u64,
}

impl Row {
    /// A rough size, to keep statements under the server's packet limit.
    pub fn approx_len(&self) -> usize {
        self.values
            .iter()
            .map(|v| match v {
                SqlValue::Text(s) => s.len() + 8,
                SqlValue::Json(Value::String(s)) => s.len() + 8,
                SqlValue::Json(v) => v.to_string().len(),
                _ => 16,
            })
            .sum()
    }
}

/// The output as the JSON stored in `data`: its value, or a string (text; base64 of bytes).
pub fn output_json(output: &Output) -> Value {
    match output {
        Output::Json(v) => v.clone(),
        Output::Text(s) => Value::String(s.clone()),
        Output::Binary(b) => Value::String(base64::engine::general_purpose::STANDARD.encode(b)),
    }
}

fn opt_text(v: Option<&str>) -> SqlValue {
    v.map_or(SqlValue::Null, |s| SqlValue::Text(s.to_string()))
}

/// Builds the row of one delivery.
fn build_row(cfg: &SqlConfig, ctx: &RenderContext<'_>) -> Result<Row, DeliveryError> {
    let job = ctx.job;
    let bytes = ctx.output.size();
    let values = match &cfg.columns {
        None => vec![
            SqlValue::Text(ctx.delivery_id.to_string()),
            SqlValue::Text(job.job_uuid.to_string()),
            job.job_id.map_or(SqlValue::Null, SqlValue::Int),
            opt_text(job.task_name.as_deref()),
            opt_text(job.task_version.as_deref()),
            SqlValue::Text(job.status.clone()),
            SqlValue::Text(job.environment.clone()),
            SqlValue::Text(job.priority.as_str().to_string()),
            SqlValue::Int(i64::try_from(job.duration_ms).unwrap_or(i64::MAX)),
            SqlValue::Text(ctx.output.kind_name().to_string()),
            SqlValue::Int(i64::try_from(bytes).unwrap_or(i64::MAX)),
            SqlValue::Json(output_json(ctx.output)),
            SqlValue::Timestamp(job.completed_at),
        ],
        Some(user) => {
            let mut values = vec![SqlValue::Text(ctx.delivery_id.to_string())];
            let mut doc = None;
            for (name, source) in user {
                values.push(match source {
                    ColumnSource::Template(t) => SqlValue::Text(t.render(ctx).map_err(|e| {
                        DeliveryError::permanent(format!(
                            "cannot render column '{name}' from '{}': {e}",
                            t.source()
                        ))
                    })?),
                    ColumnSource::Pointer(p) => {
                        let doc = doc.get_or_insert_with(|| ctx.output.to_json_value());
                        match doc.pointer(p) {
                            None | Some(Value::Null) => SqlValue::Null,
                            Some(Value::String(s)) => SqlValue::Text(s.clone()),
                            Some(other) => SqlValue::Json(other.clone()),
                        }
                    }
                });
            }
            values
        }
    };
    Ok(Row { values, bytes })
}

/// What each database does; the shared [`SqlDestination`] does the rest (rendering,
/// validation, table cache, chunking, retention, timeouts).
#[async_trait]
pub trait Backend: Send + Sync + std::fmt::Debug + 'static {
    /// Where it connects, secrets masked (`postgres://u@h:5432/db`, a file path).
    fn target(&self) -> String;

    /// Creates `table` with `layout` (and its indexes) unless it exists.
    async fn create_table(&self, table: &TableName, layout: &Layout) -> Result<(), DeliveryError>;

    /// Whether `table` exists.
    async fn table_exists(&self, table: &TableName) -> Result<bool, DeliveryError>;

    /// Inserts `rows` in one statement (or transaction); rows whose delivery id is already
    /// there are skipped.
    async fn insert(
        &self,
        table: &TableName,
        layout: &Layout,
        rows: &[Row],
    ) -> Result<(), DeliveryError>;

    /// Deletes rows whose `created_at` is older than `days` days; returns how many.
    async fn purge(&self, table: &TableName, days: u32) -> Result<u64, DeliveryError>;

    /// Connects, authenticates and runs `SELECT 1` (or proves the file writable).
    async fn ping(&self) -> Result<(), DeliveryError>;

    /// The most rows one INSERT may carry with `columns` columns (placeholder limits).
    fn max_rows_per_statement(&self, columns: usize) -> usize;

    /// The most bytes one INSERT should carry (packet limits).
    fn max_bytes_per_statement(&self) -> usize {
        16 * 1024 * 1024
    }
}

/// A configured SQL destination over backend `B`.
#[derive(Debug)]
pub struct SqlDestination<B: Backend> {
    cfg: SqlConfig,
    layout: Layout,
    backend: Arc<B>,
    /// Tables known to exist (created or checked), by qualified name.
    ready: Mutex<HashSet<TableName>>,
    /// When retention last started per table.
    purged: Arc<Mutex<HashMap<TableName, Instant>>>,
    /// Serializes table creation so one destination never races itself on CREATE.
    creating: tokio::sync::Mutex<()>,
}

impl<B: Backend> SqlDestination<B> {
    /// A destination over `backend`.
    pub fn new(cfg: SqlConfig, backend: B) -> Self {
        SqlDestination {
            layout: Layout::from_config(&cfg),
            cfg,
            backend: Arc::new(backend),
            ready: Mutex::new(HashSet::new()),
            purged: Arc::new(Mutex::new(HashMap::new())),
            creating: tokio::sync::Mutex::new(()),
        }
    }

    /// The validated configuration.
    pub fn config(&self) -> &SqlConfig {
        &self.cfg
    }

    fn kind_name(&self) -> &'static str {
        self.cfg.dialect.kind()
    }

    /// Renders and validates the table name of one delivery.
    fn table(&self, ctx: &RenderContext<'_>) -> Result<TableName, DeliveryError> {
        let rendered = self.cfg.table.render(ctx).map_err(|e| {
            DeliveryError::permanent(format!(
                "cannot render table template '{}': {e}",
                self.cfg.table.source()
            ))
        })?;
        TableName::parse(&rendered, self.cfg.schema.as_deref()).map_err(|e| {
            DeliveryError::permanent(format!("{}: refused rendered {e}", self.kind_name()))
        })
    }

    fn is_ready(&self, table: &TableName) -> bool {
        self.ready.lock().unwrap_or_else(|e| e.into_inner()).contains(table)
    }

    fn forget(&self, table: &TableName) {
        self.ready.lock().unwrap_or_else(|e| e.into_inner()).remove(table);
    }

    /// Makes sure `table` exists: created once (create_table: true); otherwise the INSERT
    /// itself reports a missing table.
    async fn ensure_table(&self, table: &TableName) -> Result<(), DeliveryError> {
        if !self.cfg.create_table || self.is_ready(table) {
            return Ok(());
        }
        let _guard = self.creating.lock().await;
        if self.is_ready(table) {
            return Ok(());
        }
        self.backend.create_table(table, &self.layout).await?;
        self.ready.lock().unwrap_or_else(|e| e.into_inner()).insert(table.clone());
        Ok(())
    }

    /// Starts retention for `table` in the background when it is due: at most once per
    /// [`RETENTION_INTERVAL`], never on the delivery's clock.
    fn maybe_purge(&self, table: &TableName) {
        let Some(days) = self.cfg.retention_days else { return };
        {
            let mut purged = self.purged.lock().unwrap_or_else(|e| e.into_inner());
            if purged.get(table).is_some_and(|at| at.elapsed() < RETENTION_INTERVAL) {
                return;
            }
            purged.insert(table.clone(), Instant::now());
        }
        let backend = Arc::clone(&self.backend);
        let table = table.clone();
        let timeout = self.cfg.timeout.max(Duration::from_secs(60));
        let kind = self.kind_name();
        tokio::spawn(async move {
            match tokio::time::timeout(timeout, backend.purge(&table, days)).await {
                Ok(Ok(n)) => tracing::info!(
                    destination = kind,
                    %table,
                    deleted = n,
                    retention_days = days,
                    "retention: deleted rows older than {days} days"
                ),
                Ok(Err(e)) => {
                    tracing::warn!(destination = kind, %table, error = %e, "retention failed")
                }
                Err(_) => tracing::warn!(destination = kind, %table, "retention timed out"),
            }
        });
    }

    /// Inserts rows into one table in statements of at most `batch_size` rows and the
    /// backend's size limits. A statement that fails permanently is retried row by row so
    /// one bad record does not fail its neighbours.
    async fn insert_rows(&self, table: &TableName, rows: &[Row]) -> Vec<Result<(), DeliveryError>> {
        let mut results = Vec::with_capacity(rows.len());
        if let Err(e) = self.ensure_table(table).await {
            results.resize(rows.len(), Err(e));
            return results;
        }
        let max_rows = self
            .cfg
            .batch_size
            .min(self.backend.max_rows_per_statement(self.layout.columns.len()))
            .max(1);
        let max_bytes = self.backend.max_bytes_per_statement();
        let mut start = 0;
        while start < rows.len() {
            let mut end = start;
            let mut bytes = 0;
            while end < rows.len() && end - start < max_rows {
                bytes += rows[end].approx_len();
                if end > start && bytes > max_bytes {
                    break;
                }
                end += 1;
            }
            let chunk = &rows[start..end];
            match self.backend.insert(table, &self.layout, chunk).await {
                Ok(()) => results.extend(chunk.iter().map(|_| Ok(()))),
                Err(e) if !e.is_retryable() && chunk.len() > 1 => {
                    for row in chunk {
                        let one =
                            self.backend.insert(table, &self.layout, std::slice::from_ref(row));
                        results.push(one.await);
                    }
                }
                Err(e) => results.extend(chunk.iter().map(|_| Err(e.clone()))),
            }
            start = end;
        }
        if results.iter().any(|r| r.as_ref().is_err_and(is_missing_table)) {
            // Dropped behind our back: forget it, and when we may create tables, the retry
            // creates it again (so the error is retryable, not the permanent "missing").
            self.forget(table);
            if self.cfg.create_table {
                for r in &mut results {
                    if let Err(e) = r
                        && is_missing_table(e)
                    {
                        e.class = outflow_core::attempt::FailureClass::Retryable;
                    }
                }
            }
        }
        if results.iter().any(Result::is_ok) {
            self.maybe_purge(table);
        }
        results
    }

    fn receipt(&self, table: &TableName, bytes: u64) -> DeliveryReceipt {
        DeliveryReceipt {
            target: format!("{} {} table {table}", self.kind_name(), self.backend.target()),
            status_code: None,
            bytes,
            response_excerpt: None,
        }
    }

    fn timed_out(&self) -> DeliveryError {
        DeliveryError::retryable(format!(
            "{} {}: no answer within {:?} (timeout_seconds)",
            self.kind_name(),
            self.backend.target(),
            self.cfg.timeout
        ))
    }

    async fn deliver_all(&self, records: &[Attempt<'_>]) -> BatchResults {
        let mut results: Vec<Option<Result<DeliveryReceipt, DeliveryError>>> =
            vec![None; records.len()];
        // Group by rendered table, keeping record order within each group.
        let mut groups: Vec<(TableName, Vec<usize>, Vec<Row>)> = Vec::new();
        for (i, record) in records.iter().enumerate() {
            let prepared = self
                .table(&record.render)
                .and_then(|t| build_row(&self.cfg, &record.render).map(|row| (t, row)));
            match prepared {
                Ok((table, row)) => match groups.iter_mut().find(|g| g.0 == table) {
                    Some(g) => {
                        g.1.push(i);
                        g.2.push(row);
                    }
                    None => groups.push((table, vec![i], vec![row])),
                },
                Err(e) => results[i] = Some(Err(e)),
            }
        }
        for (table, indexes, rows) in groups {
            let outcome = self.insert_rows(&table, &rows).await;
            for ((i, row), result) in indexes.into_iter().zip(&rows).zip(outcome) {
                results[i] = Some(result.map(|()| self.receipt(&table, row.bytes)));
            }
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(DeliveryError::retryable("record was not attempted"))))
            .collect()
    }
}

/// Whether an error says the table does not exist (so the cache must forget it).
fn is_missing_table(e: &DeliveryError) -> bool {
    e.message.contains("SQLSTATE 42P01")
        || e.message.contains("error 1146")
        || e.message.contains("no such table")
}

#[async_trait]
impl<B: Backend> Destination for SqlDestination<B> {
    fn kind(&self) -> &'static str {
        self.kind_name()
    }

    fn describe(&self) -> String {
        format!("{} table {}", self.backend.target(), self.cfg.table.source())
    }

    fn isolation_key(&self) -> String {
        format!("{}:{}", self.kind_name(), self.backend.target())
    }

    fn retry_policy(&self) -> &RetryPolicy {
        &self.cfg.retry_policy
    }

    async fn deliver(&self, attempt: Attempt<'_>) -> Result<DeliveryReceipt, DeliveryError> {
        let records = [attempt];
        match tokio::time::timeout(self.cfg.timeout, self.deliver_all(&records)).await {
            Ok(mut results) => results.pop().unwrap_or_else(|| Err(self.timed_out())),
            Err(_) => Err(self.timed_out()),
        }
    }

    async fn deliver_batch(&self, records: &[Attempt<'_>]) -> BatchResults {
        // A batch gets the timeout per statement's worth of rows, not per record.
        let statements = records.len().div_ceil(self.cfg.batch_size).max(1) as u32;
        let bound = self.cfg.timeout.saturating_mul(statements);
        match tokio::time::timeout(bound, self.deliver_all(records)).await {
            Ok(results) => results,
            Err(_) => records.iter().map(|_| Err(self.timed_out())).collect(),
        }
    }

    async fn check(&self) -> Result<CheckReport, DeliveryError> {
        let started = Instant::now();
        let probe = async {
            self.backend.ping().await?;
            if !self.cfg.create_table && self.cfg.table.is_static() {
                let table = TableName::parse(self.cfg.table.source(), self.cfg.schema.as_deref())
                    .map_err(DeliveryError::permanent)?;
                if !self.backend.table_exists(&table).await? {
                    return Err(DeliveryError::permanent(format!(
                        "{} {}: table {table} does not exist and create_table is false",
                        self.kind_name(),
                        self.backend.target()
                    )));
                }
            }
            Ok(())
        };
        match tokio::time::timeout(self.cfg.timeout, probe).await {
            Ok(Ok(())) => Ok(CheckReport { target: self.describe(), elapsed: started.elapsed() }),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(self.timed_out()),
        }
    }
}

/// Replaces `secret` in `text` (driver messages may quote the URL they failed on).
#[cfg(any(feature = "postgresql", feature = "mysql"))]
fn redact(text: &str, secret: Option<&str>) -> String {
    match secret {
        Some(s) if !s.is_empty() => text.replace(s, "***"),
        _ => text.to_string(),
    }
}

/// Maps a driver error that is not the server's (I/O, pool, TLS, encoding) to a delivery
/// error: transport trouble is retryable, the rest permanent.
#[cfg(any(feature = "postgresql", feature = "mysql"))]
fn driver_error(at: &str, e: sqlx_core::Error) -> DeliveryError {
    use sqlx_core::Error as E;
    match e {
        E::Io(io) => DeliveryError::retryable(format!("{at}: connection failed: {io}")),
        E::PoolTimedOut => DeliveryError::retryable(format!(
            "{at}: no connection in time (the server is unreachable or refusing connections, \
             or every pooled connection is busy)"
        )),
        E::PoolClosed | E::WorkerCrashed | E::Protocol(_) => {
            DeliveryError::retryable(format!("{at}: connection lost: {e}"))
        }
        E::Tls(t) => {
            let text = t.to_string();
            // A certificate the client refuses stays refused; a handshake cut short does not.
            if text.to_ascii_lowercase().contains("certificate") {
                DeliveryError::permanent(format!("{at}: TLS: {text} (check tls_mode, tls_ca_file)"))
            } else {
                DeliveryError::retryable(format!("{at}: TLS: {text}"))
            }
        }
        other => DeliveryError::permanent(format!("{at}: {other}")),
    }
}

/// The time `acquire` may wait for a pooled connection (or a new one): bounded by the
/// destination's timeout, and short enough that an outage is reported while the delivery's
/// own clock still runs.
pub fn acquire_timeout(timeout: Duration) -> Duration {
    (timeout / 2).clamp(Duration::from_millis(500), Duration::from_secs(10))
}

#[cfg(test)]
mod tests {
    use super::*;
    use outflow_core::config::DestinationSpec;
    use outflow_core::context::JobContext;
    use serde_json::json;

    fn cfg(v: Value) -> SqlConfig {
        let spec = DestinationSpec::from_value(&v, "d").unwrap();
        SqlConfig::parse(&spec, &crate::BuildDefaults::default(), "d", config::Dialect::Sqlite)
            .unwrap()
    }

    #[test]
    fn default_rows_follow_the_default_layout() {
        let c = cfg(json!({"type": "sqlite", "path": "/x.db", "table": "t"}));
        let layout = Layout::from_config(&c);
        let mut job = JobContext::new_now();
        job.task_name = Some("report".into());
        let output = Output::Text("plain text".into());
        let row = build_row(&c, &RenderContext::new(&job, &output, "d-1")).unwrap();
        assert_eq!(row.values.len(), layout.columns.len());
        assert_eq!(layout.columns[0].name, "delivery_id");
        assert_eq!(row.values[0], SqlValue::Text("d-1".into()));
        let data = layout.columns.iter().position(|c| c.name == "data").unwrap();
        assert_eq!(row.values[data], SqlValue::Json(json!("plain text")));
        let bin = output_json(&Output::Binary(bytes::Bytes::from_static(b"\x00\xff")));
        assert_eq!(bin, json!("AP8="));
    }

    #[test]
    fn user_columns_render_templates_and_pointers() {
        let c = cfg(json!({"type": "sqlite", "path": "/x.db", "table": "t",
            "columns": {"task": "{{task_name}}-x", "uid": "/user/id", "name": "/user/name",
                        "tags": "/tags", "none": "/missing"}}));
        let mut job = JobContext::new_now();
        job.task_name = Some("report".into());
        let output = Output::Json(json!({"user": {"id": 7, "name": "ann"}, "tags": ["a"]}));
        let row = build_row(&c, &RenderContext::new(&job, &output, "d-1")).unwrap();
        assert_eq!(
            row.values,
            vec![
                SqlValue::Text("d-1".into()),
                SqlValue::Text("report-x".into()),
                SqlValue::Json(json!(7)),
                SqlValue::Text("ann".into()),
                SqlValue::Json(json!(["a"])),
                SqlValue::Null,
            ]
        );
        let c = cfg(json!({"type": "sqlite", "path": "/x.db", "table": "t",
            "columns": {"v": "{{nope}}"}}));
        let err = build_row(&c, &RenderContext::new(&job, &output, "d")).unwrap_err();
        assert!(!err.is_retryable());
        assert!(err.message.contains("column 'v'"), "{}", err.message);
    }

    #[test]
    fn acquire_timeout_is_bounded() {
        assert_eq!(acquire_timeout(Duration::from_secs(30)), Duration::from_secs(10));
        assert_eq!(acquire_timeout(Duration::from_secs(4)), Duration::from_secs(2));
        assert_eq!(acquire_timeout(Duration::from_millis(100)), Duration::from_millis(500));
    }
}
