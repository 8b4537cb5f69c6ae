//! The Cassandra destination (CQL v4, also ScyllaDB): one row per delivery, keyed by the
//! delivery id, written with prepared inserts.
//!
//! ```yaml
//! type: cassandra
//! contact_points: ["10.0.0.1:9042", "10.0.0.2:9042"]   # or "h1:9042,h2:9042"
//! keyspace: outflow                 # must exist; a-z 0-9 _ (1-48 chars)
//! table: "outputs_{{task_name}}"    # template; rendered: a-z 0-9 _ (1-48 chars), starts with a letter
//! username: outflow                 # optional, PasswordAuthenticator
//! password: "${CASSANDRA_PASSWORD}"
//! consistency: local_quorum         # any, one, two, three, quorum, all, local_quorum (default), each_quorum, local_one
//! create_table: true                # default true: CREATE TABLE IF NOT EXISTS before the first insert
//! if_not_exists: true               # default true: INSERT ... IF NOT EXISTS (lightweight transaction)
//! batch_concurrency: 16             # inserts in flight for deliver_batch
//! timeout_seconds: 30
//! retry_policy: { max_attempts: 5 }
//! ```
//!
//! **Table layout** (what `create_table` creates; a table made by hand needs these columns):
//!
//! ```sql
//! CREATE TABLE IF NOT EXISTS <keyspace>.<table> (
//!   delivery_id text PRIMARY KEY, job_uuid text, job_id bigint, task_name text,
//!   status text, completed_at timestamp, output_format text, data text)
//! ```
//!
//! `data` holds a JSON output's compact JSON text, a text output as it is, and a binary
//! output as standard base64; `output_format` (`json`, `text`, `binary`) says which.
//!
//! **Effectively-once.** The row's primary key is the delivery id, identical on every retry.
//! With `if_not_exists: true` the insert is `INSERT ... IF NOT EXISTS`: a redelivery is not
//! applied (`[applied] = false`) and counts as success, leaving the first row untouched.
//! With `if_not_exists: false` (no Paxos round, for clusters or servers without lightweight
//! transactions) the insert is a plain upsert: a redelivery rewrites the same row with the
//! same values, so there is still one row per delivery. Batches run the same prepared insert
//! for each record, `batch_concurrency` at a time, with one result per record (no CQL
//! `BATCH`: a logged batch spanning partitions costs more than it saves, and conditional
//! batches must stay in one partition).
//!
//! **Errors.** Syntax and invalid-request errors (a missing keyspace, a missing table with
//! `create_table: false`), authentication and authorization errors are permanent.
//! Unavailable, overloaded, bootstrapping, read/write timeouts and failures, server errors,
//! connection and pool errors are retryable. A connection-class error also drops the
//! session, so the next attempt connects afresh instead of waiting out the driver's
//! reconnection backoff.
//!
//! `check()` runs `SELECT release_version FROM system.local`.

pub mod config;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use async_trait::async_trait;
use base64::Engine as _;
use futures::StreamExt as _;
use outflow_core::config::{ConfigError, DestinationSpec};
use outflow_core::context::RenderContext;
use outflow_core::output::Output;
use outflow_core::retry::RetryPolicy;
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::errors::{DbError, ExecutionError, NewSessionError, PrepareError, RequestAttemptError};
use scylla::statement::Consistency;
use scylla::statement::prepared::PreparedStatement;

use self::config::CassandraConfig;
use crate::{
    Attempt, BatchResults, BuildDefaults, CheckReport, DeliveryError, DeliveryReceipt, Destination,
};

/// Parses and validates a `type: cassandra` body.
pub fn build(
    spec: &DestinationSpec,
    defaults: &BuildDefaults,
    path: &str,
) -> Result<Arc<dyn Destination>, Vec<ConfigError>> {
    let cfg = config::parse(spec, defaults, path)?;
    Ok(Arc::new(CassandraDestination { cfg, connection: tokio::sync::Mutex::new(None) }))
}

/// A session and the inserts prepared on it, one per rendered table.
struct Connection {
    session: Session,
    inserts: Mutex<HashMap<String, PreparedStatement>>,
}

/// A configured Cassandra destination; connects on first use and keeps the session.
pub struct CassandraDestination {
    cfg: CassandraConfig,
    connection: tokio::sync::Mutex<Option<Arc<Connection>>>,
}

impl std::fmt::Debug for CassandraDestination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CassandraDestination").field("cfg", &self.cfg).finish_non_exhaustive()
    }
}

/// How a failure affects the session: a connection-class failure drops it.
enum Failure {
    Connection(DeliveryError),
    Other(DeliveryError),
}

impl CassandraDestination {
    fn hosts(&self) -> String {
        self.cfg.contact_points.join(",")
    }

    fn target(&self, table: &str) -> String {
        format!("cassandra://{}/{}.{table}", self.hosts(), self.cfg.keyspace)
    }

    fn consistency(&self) -> Consistency {
        match self.cfg.consistency {
            "any" => Consistency::Any,
            "one" => Consistency::One,
            "two" => Consistency::Two,
            "three" => Consistency::Three,
            "quorum" => Consistency::Quorum,
            "all" => Consistency::All,
            "each_quorum" => Consistency::EachQuorum,
            "local_one" => Consistency::LocalOne,
            _ => Consistency::LocalQuorum,
        }
    }

    /// The session, connecting when there is none (first use, or after a connection error).
    async fn connection(&self) -> Result<Arc<Connection>, DeliveryError> {
        let mut slot = self.connection.lock().await;
        if let Some(conn) = slot.as_ref() {
            return Ok(Arc::clone(conn));
        }
        let mut builder = SessionBuilder::new()
            .known_nodes(&self.cfg.contact_points)
            .connection_timeout(self.cfg.timeout)
            // Only the token ring is needed: keyspace/table schema metadata would be read
            // (and kept current) for nothing.
            .fetch_schema_metadata(false)
            // CREATE TABLE changes no topology, and with schema metadata off there is nothing
            // to refresh after it; a failed refresh would fail the DDL that succeeded (seen
            // with kassandra, whose system.local the driver cannot read as prepared).
            .refresh_metadata_on_auto_schema_agreement(false);
        if let Some((user, password)) = &self.cfg.credentials {
            builder = builder.user(user, password.expose());
        }
        let session = tokio::time::timeout(self.cfg.timeout, builder.build())
            .await
            .map_err(|_| {
                DeliveryError::retryable(format!(
                    "connecting to Cassandra at {} timed out after {:?}",
                    self.hosts(),
                    self.cfg.timeout
                ))
            })?
            .map_err(|e| self.session_error(&e))?;
        let conn = Arc::new(Connection { session, inserts: Mutex::new(HashMap::new()) });
        *slot = Some(Arc::clone(&conn));
        Ok(conn)
    }

    /// Forgets the session after a connection-class failure.
    async fn reset(&self, failed: &Arc<Connection>) {
        let mut slot = self.connection.lock().await;
        if slot.as_ref().is_some_and(|current| Arc::ptr_eq(current, failed)) {
            *slot = None;
        }
    }

    fn session_error(&self, err: &NewSessionError) -> DeliveryError {
        let text = format!("cannot connect to Cassandra at {}: {err}", self.hosts());
        match err {
            NewSessionError::EmptyKnownNodesList | NewSessionError::IllegalConfig(_) => {
                DeliveryError::permanent(text)
            }
            // Authentication failures surface inside connection errors; retrying the same
            // credentials cannot help.
            _ if text.contains("Authentication") || text.contains("authentication") => {
                DeliveryError::permanent(text)
            }
            _ => DeliveryError::retryable(text),
        }
    }

    /// Renders and validates the table name for one delivery.
    fn table_name(&self, ctx: &RenderContext<'_>) -> Result<String, DeliveryError> {
        let name = self.cfg.table.render(ctx).map_err(|e| {
            DeliveryError::permanent(format!(
                "cannot render table template '{}': {e}",
                self.cfg.table.source()
            ))
        })?;
        config::validate_name("table", &name).map_err(|msg| {
            DeliveryError::permanent(format!(
                "{msg} (rendered from table template '{}')",
                self.cfg.table.source()
            ))
        })?;
        Ok(name)
    }

    /// The prepared insert for `table`, creating the table first when configured.
    async fn insert_for(
        &self,
        conn: &Connection,
        table: &str,
    ) -> Result<PreparedStatement, Failure> {
        if let Some(prepared) = conn.inserts.lock().expect("not poisoned").get(table) {
            return Ok(prepared.clone());
        }
        let target = self.target(table);
        let qualified = format!("{}.{table}", self.cfg.keyspace);
        if self.cfg.create_table {
            let ddl = format!(
                "CREATE TABLE IF NOT EXISTS {qualified} (delivery_id text PRIMARY KEY, \
                 job_uuid text, job_id bigint, task_name text, status text, \
                 completed_at timestamp, output_format text, data text)"
            );
            self.bounded(&target, "CREATE TABLE", conn.session.query_unpaged(ddl, ()))
                .await?
                .map_err(|e| classify_execution(&e, &target, "CREATE TABLE"))?;
        }
        let condition = if self.cfg.if_not_exists { " IF NOT EXISTS" } else { "" };
        let insert = format!(
            "INSERT INTO {qualified} (delivery_id, job_uuid, job_id, task_name, status, \
             completed_at, output_format, data) VALUES (?, ?, ?, ?, ?, ?, ?, ?){condition}"
        );
        let mut prepared = self
            .bounded(&target, "PREPARE", conn.session.prepare(insert))
            .await?
            .map_err(|e| classify_prepare(&e, &target))?;
        prepared.set_consistency(self.consistency());
        prepared.set_request_timeout(Some(self.cfg.timeout));
        conn.inserts.lock().expect("not poisoned").insert(table.to_string(), prepared.clone());
        Ok(prepared)
    }

    async fn bounded<T>(
        &self,
        target: &str,
        what: &str,
        op: impl std::future::Future<Output = T>,
    ) -> Result<T, Failure> {
        tokio::time::timeout(self.cfg.timeout, op).await.map_err(|_| {
            Failure::Connection(DeliveryError::retryable(format!(
                "Cassandra {what} on {target} timed out after {:?}",
                self.cfg.timeout
            )))
        })
    }

    /// Inserts one record on `conn`.
    async fn insert(
        &self,
        conn: &Connection,
        ctx: &RenderContext<'_>,
    ) -> Result<DeliveryReceipt, Failure> {
        let table = self.table_name(ctx).map_err(Failure::Other)?;
        let target = self.target(&table);
        let prepared = self.insert_for(conn, &table).await?;
        let job = ctx.job;
        let data = match ctx.output {
            Output::Json(v) => v.to_string(),
            Output::Text(t) => t.clone(),
            Output::Binary(b) => base64::engine::general_purpose::STANDARD.encode(b),
        };
        let values = (
            ctx.delivery_id,
            job.job_uuid.to_string(),
            job.job_id,
            job.task_name.as_deref(),
            job.status.as_str(),
            job.completed_at,
            ctx.output.kind_name(),
            data,
        );
        self.bounded(&target, "INSERT", conn.session.execute_unpaged(&prepared, values))
            .await?
            .map_err(|e| classify_execution(&e, &target, "INSERT"))?;
        // Applied or not (`[applied] = false`: the row was already there), the row is stored.
        Ok(DeliveryReceipt { target, bytes: ctx.output.size(), ..Default::default() })
    }

    /// One attempt for one record, dropping the session after a connection-class failure.
    async fn deliver_one(&self, ctx: &RenderContext<'_>) -> Result<DeliveryReceipt, DeliveryError> {
        let conn = self.connection().await?;
        match self.insert(&conn, ctx).await {
            Ok(receipt) => Ok(receipt),
            Err(Failure::Connection(e)) => {
                self.reset(&conn).await;
                Err(e)
            }
            Err(Failure::Other(e)) => Err(e),
        }
    }
}

/// Classifies a server error.
fn classify_db(db: &DbError, message: &str, target: &str, what: &str) -> Failure {
    let mut text = format!("Cassandra {what} on {target}: {db}: {message}");
    if matches!(db, DbError::Invalid) {
        text.push_str(
            " (check that the keyspace exists and the table has the documented columns, or set \
             create_table: true)",
        );
    }
    match db {
        DbError::SyntaxError
        | DbError::Invalid
        | DbError::AlreadyExists { .. }
        | DbError::FunctionFailure { .. }
        | DbError::ConfigError
        | DbError::AuthenticationError
        | DbError::Unauthorized
        | DbError::ProtocolError => Failure::Other(DeliveryError::permanent(text)),
        _ => Failure::Other(DeliveryError::retryable(text)),
    }
}

fn classify_attempt(err: &RequestAttemptError, target: &str, what: &str) -> Failure {
    match err {
        RequestAttemptError::DbError(db, message) => classify_db(db, message, target, what),
        RequestAttemptError::SerializationError(_)
        | RequestAttemptError::CqlRequestSerialization(_) => {
            Failure::Other(DeliveryError::permanent(format!("Cassandra {what} on {target}: {err}")))
        }
        _ => Failure::Connection(DeliveryError::retryable(format!(
            "Cassandra {what} on {target}: {err}"
        ))),
    }
}

fn classify_prepare(err: &PrepareError, target: &str) -> Failure {
    match err {
        PrepareError::AllAttemptsFailed { first_attempt } => {
            classify_attempt(first_attempt, target, "PREPARE")
        }
        PrepareError::ConnectionPoolError(_) => Failure::Connection(DeliveryError::retryable(
            format!("Cassandra PREPARE on {target}: {err}"),
        )),
        _ => Failure::Other(DeliveryError::retryable(format!(
            "Cassandra PREPARE on {target}: {err}"
        ))),
    }
}

fn classify_execution(err: &ExecutionError, target: &str, what: &str) -> Failure {
    match err {
        ExecutionError::LastAttemptError(attempt) => classify_attempt(attempt, target, what),
        ExecutionError::PrepareError(prepare) => classify_prepare(prepare, target),
        ExecutionError::BadQuery(_) => {
            Failure::Other(DeliveryError::permanent(format!("Cassandra {what} on {target}: {err}")))
        }
        // No connection, an empty plan, a client-side timeout, schema or metadata trouble.
        _ => Failure::Connection(DeliveryError::retryable(format!(
            "Cassandra {what} on {target}: {err}"
        ))),
    }
}

#[async_trait]
impl Destination for CassandraDestination {
    fn kind(&self) -> &'static str {
        "cassandra"
    }

    fn describe(&self) -> String {
        self.target(self.cfg.table.source())
    }

    fn isolation_key(&self) -> String {
        format!("cassandra:{}", self.hosts())
    }

    fn retry_policy(&self) -> &RetryPolicy {
        &self.cfg.retry_policy
    }

    async fn deliver(&self, attempt: Attempt<'_>) -> Result<DeliveryReceipt, DeliveryError> {
        self.deliver_one(&attempt.render).await
    }

    async fn deliver_batch(&self, records: &[Attempt<'_>]) -> BatchResults {
        // Collected first: a stream mapping `&Attempt` through a closure would need a
        // higher-ranked closure that async_trait's `Send` bound cannot prove.
        let inserts: Vec<_> = records
            .iter()
            .map(|record| {
                let ctx = record.render;
                async move { self.deliver_one(&ctx).await }
            })
            .collect();
        futures::stream::iter(inserts).buffered(self.cfg.batch_concurrency).collect().await
    }

    async fn check(&self) -> Result<CheckReport, DeliveryError> {
        let started = Instant::now();
        let target = format!("cassandra://{}", self.hosts());
        let conn = self.connection().await?;
        let query = conn.session.query_unpaged("SELECT release_version FROM system.local", ());
        let outcome = match self.bounded(&target, "SELECT", query).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(classify_execution(&e, &target, "SELECT")),
            Err(e) => Err(e),
        };
        match outcome {
            Ok(()) => Ok(CheckReport { target, elapsed: started.elapsed() }),
            Err(Failure::Connection(e)) => {
                self.reset(&conn).await;
                Err(e)
            }
            Err(Failure::Other(e)) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_errors_are_classified() {
        let class = |db: DbError| match classify_db(&db, "m", "t", "INSERT") {
            Failure::Other(e) | Failure::Connection(e) => e.is_retryable(),
        };
        assert!(!class(DbError::SyntaxError));
        assert!(!class(DbError::Invalid));
        assert!(!class(DbError::Unauthorized));
        assert!(!class(DbError::AuthenticationError));
        assert!(class(DbError::Overloaded));
        assert!(class(DbError::IsBootstrapping));
        assert!(class(DbError::ServerError));
    }
}
