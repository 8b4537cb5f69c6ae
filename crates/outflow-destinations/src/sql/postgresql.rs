//! The PostgreSQL backend (`type: postgresql`), on sqlx's PostgreSQL driver.
//!
//! A batch is one statement whatever its size: the rows travel as one JSON array parameter
//! and `json_populate_recordset(NULL::table, $1)` turns them into rows typed like the
//! table's columns, so an existing table may type a mapped column as integer, timestamp or
//! JSONB and the server converts. The statement text does not depend on the row count, so
//! it is prepared once per table and reused.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use outflow_core::config::{ConfigError, DestinationSpec};
use serde_json::{Map, Value};
use sqlx_core::sql_str::AssertSqlSafe;
use sqlx_postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgSslMode, Postgres};
use tokio::sync::OnceCell;

use super::config::{Dialect, SqlConfig, TlsMode};
use super::ident::{Quote, TableName};
use super::{Backend, ColumnType, Layout, Row, SqlDestination, SqlValue, acquire_timeout, redact};
use crate::{BuildDefaults, DeliveryError, Destination};

const Q: Quote = Quote::Double;

/// Parses and validates a `type: postgresql` body.
pub fn build(
    spec: &DestinationSpec,
    defaults: &BuildDefaults,
    path: &str,
) -> Result<Arc<dyn Destination>, Vec<ConfigError>> {
    let cfg = SqlConfig::parse(spec, defaults, path, Dialect::Postgres)?;
    let backend = PgBackend::new(&cfg, path)?;
    Ok(Arc::new(SqlDestination::new(cfg, backend)))
}

/// A lazily connected PostgreSQL pool.
#[derive(Debug)]
pub struct PgBackend {
    options: PgConnectOptions,
    pool_size: u32,
    timeout: Duration,
    target: String,
    pool: OnceCell<PgPool>,
}

impl PgBackend {
    /// Builds connect options from the config; nothing connects yet.
    pub fn new(cfg: &SqlConfig, path: &str) -> Result<PgBackend, Vec<ConfigError>> {
        let net = cfg
            .network()
            .ok_or_else(|| vec![ConfigError::new(path, "postgresql needs a network connection")])?;
        let mut options = match &net.connection_string {
            Some(cs) => PgConnectOptions::from_str(cs.expose()).map_err(|e| {
                vec![ConfigError::new(
                    format!("{path}.connection_string"),
                    format!(
                        "is not a valid postgres:// URL: {}",
                        redact(&e.to_string(), Some(cs.expose()))
                    ),
                )]
            })?,
            None => PgConnectOptions::new_without_pgpass(),
        };
        if let Some(host) = &net.host {
            options = options.host(host);
        }
        if let Some(port) = net.port {
            options = options.port(port);
        }
        if let Some(db) = &net.database {
            options = options.database(db);
        }
        if let Some(user) = &net.user {
            options = options.username(user);
        }
        if let Some(pw) = &net.password {
            options = options.password(pw.expose());
        }
        if let Some(mode) = net.tls_mode {
            options = options.ssl_mode(match mode {
                TlsMode::Disable => PgSslMode::Disable,
                TlsMode::Prefer => PgSslMode::Prefer,
                TlsMode::Require => PgSslMode::Require,
                TlsMode::VerifyCa => PgSslMode::VerifyCa,
                TlsMode::VerifyFull => PgSslMode::VerifyFull,
            });
        }
        if let Some(ca) = &net.tls_ca_file {
            options = options.ssl_root_cert(ca);
        }
        options = options.application_name("outflow");
        let target = format!(
            "postgres://{}@{}:{}/{}",
            options.get_username(),
            options.get_host(),
            options.get_port(),
            options.get_database().unwrap_or("")
        );
        Ok(PgBackend {
            options,
            pool_size: net.pool_size,
            timeout: cfg.timeout,
            target,
            pool: OnceCell::new(),
        })
    }

    /// The TLS mode in force (for tests and `describe`).
    pub fn ssl_mode(&self) -> PgSslMode {
        self.options.get_ssl_mode()
    }

    async fn pool(&self) -> &PgPool {
        // Created inside the runtime on first use: building a pool spawns its maintenance
        // task, and `build` also runs where there is no runtime (`outflow check`).
        self.pool
            .get_or_init(|| async {
                PgPoolOptions::new()
                    .max_connections(self.pool_size)
                    .min_connections(0)
                    .acquire_timeout(acquire_timeout(self.timeout))
                    .idle_timeout(Some(Duration::from_secs(300)))
                    .test_before_acquire(true)
                    .connect_lazy_with(self.options.clone())
            })
            .await
    }

    fn error(&self, table: Option<&TableName>, e: sqlx_core::Error) -> DeliveryError {
        classify(&self.target, table, e)
    }
}

/// Whether a SQLSTATE means "try again later".
pub fn retryable_sqlstate(code: &str) -> bool {
    matches!(
        code,
        "40001" // serialization_failure
            | "40P01" // deadlock_detected
            | "55P03" // lock_not_available
            | "57014" // query_canceled (statement_timeout)
            | "57P01" // admin_shutdown
            | "57P02" // crash_shutdown
            | "57P03" // cannot_connect_now
            | "53000" | "53100" | "53200" | "53300" | "53400" // insufficient resources
            | "58000" | "58030" // system / I/O error
            | "XX000" // internal error
    ) || code.starts_with("08") // connection exceptions
}

/// Maps a driver error to a delivery error naming the target, the table and the SQLSTATE.
pub fn classify(target: &str, table: Option<&TableName>, e: sqlx_core::Error) -> DeliveryError {
    let at = match table {
        Some(t) => format!("postgresql {target} table {t}"),
        None => format!("postgresql {target}"),
    };
    match e {
        sqlx_core::Error::Database(db) => {
            let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
            let mut msg = format!("{at}: {} (SQLSTATE {code})", db.message());
            match code.as_str() {
                "42P01" => {
                    msg.push_str("; the table does not exist: create it, or set create_table: true")
                }
                "28P01" | "28000" => msg.push_str("; check user and password"),
                "42501" => {
                    msg.push_str("; permission denied: grant INSERT (and CREATE) to the user")
                }
                "42P10" => msg.push_str("; delivery_id needs a UNIQUE constraint"),
                _ => {}
            }
            if retryable_sqlstate(&code) {
                DeliveryError::retryable(msg)
            } else {
                DeliveryError::permanent(msg)
            }
        }
        other => super::driver_error(&at, other),
    }
}

fn sql_type(ty: ColumnType) -> String {
    match ty {
        ColumnType::Short(n) => format!("VARCHAR({n})"),
        ColumnType::Text => "TEXT".into(),
        ColumnType::Uuid => "UUID".into(),
        ColumnType::BigInt => "BIGINT".into(),
        ColumnType::Json => "JSONB".into(),
        ColumnType::Timestamp => "TIMESTAMPTZ".into(),
    }
}

/// The DDL for `table`: the table, then its indexes, each `IF NOT EXISTS`.
pub fn create_statements(table: &TableName, layout: &Layout) -> Vec<String> {
    let t = table.quoted(Q);
    let mut cols = vec!["id BIGSERIAL PRIMARY KEY".to_string()];
    for c in &layout.columns {
        let not_null = match c.name.as_str() {
            "delivery_id" => " NOT NULL UNIQUE",
            "completed_at" if layout.default_schema => " NOT NULL",
            _ => "",
        };
        cols.push(format!("{} {}{not_null}", Q.ident(&c.name), sql_type(c.ty)));
    }
    cols.push("created_at TIMESTAMPTZ NOT NULL DEFAULT NOW()".into());
    let mut out = vec![format!("CREATE TABLE IF NOT EXISTS {t} ({})", cols.join(", "))];
    let index = |suffix: &str, body: &str| {
        format!("CREATE INDEX IF NOT EXISTS {} ON {t} {body}", Q.ident(&table.index_name(suffix)))
    };
    out.push(index("created_at_idx", "(created_at)"));
    if layout.default_schema {
        out.push(index("completed_at_idx", "(completed_at DESC)"));
        out.push(index("task_name_idx", "(task_name)"));
        out.push(index("status_idx", "(status)"));
        out.push(index("job_uuid_idx", "(job_uuid)"));
        out.push(index("failed_idx", "(completed_at DESC) WHERE status <> 'completed'"));
        out.push(index("data_gin_idx", "USING GIN (data)"));
    }
    out
}

/// The INSERT for `layout`: one JSON array parameter, duplicates of `delivery_id` skipped.
pub fn insert_statement(table: &TableName, layout: &Layout) -> String {
    let t = table.quoted(Q);
    let cols: Vec<String> = layout.columns.iter().map(|c| Q.ident(&c.name)).collect();
    let cols = cols.join(", ");
    format!(
        "INSERT INTO {t} ({cols}) SELECT {cols} FROM json_populate_recordset(NULL::{t}, $1::json) \
         ON CONFLICT (delivery_id) DO NOTHING"
    )
}

/// The rows as the JSON array `json_populate_recordset` reads.
fn rows_json(layout: &Layout, rows: &[Row]) -> String {
    let array: Vec<Value> = rows
        .iter()
        .map(|row| {
            let mut obj = Map::new();
            for (col, v) in layout.columns.iter().zip(&row.values) {
                let v = match v {
                    SqlValue::Null => Value::Null,
                    SqlValue::Text(s) => Value::String(s.clone()),
                    SqlValue::Int(n) => Value::from(*n),
                    SqlValue::Json(v) => v.clone(),
                    SqlValue::Timestamp(t) => Value::String(t.to_rfc3339()),
                };
                obj.insert(col.name.clone(), v);
            }
            Value::Object(obj)
        })
        .collect();
    Value::Array(array).to_string()
}

#[async_trait]
impl Backend for PgBackend {
    fn target(&self) -> String {
        self.target.clone()
    }

    async fn create_table(&self, table: &TableName, layout: &Layout) -> Result<(), DeliveryError> {
        let pool = self.pool().await;
        for stmt in create_statements(table, layout) {
            match sqlx_core::query::query::<Postgres>(AssertSqlSafe(stmt)).execute(pool).await {
                Ok(_) => {}
                // Another process created it between our IF NOT EXISTS and CREATE.
                Err(sqlx_core::Error::Database(db))
                    if matches!(db.code().as_deref(), Some("23505" | "42P07")) => {}
                Err(e) => return Err(self.error(Some(table), e)),
            }
        }
        Ok(())
    }

    async fn table_exists(&self, table: &TableName) -> Result<bool, DeliveryError> {
        sqlx_core::query_scalar::query_scalar::<Postgres, bool>(
            "SELECT to_regclass($1) IS NOT NULL",
        )
        .bind(table.quoted(Q))
        .fetch_one(self.pool().await)
        .await
        .map_err(|e| self.error(Some(table), e))
    }

    async fn insert(
        &self,
        table: &TableName,
        layout: &Layout,
        rows: &[Row],
    ) -> Result<(), DeliveryError> {
        sqlx_core::query::query::<Postgres>(AssertSqlSafe(insert_statement(table, layout)))
            .bind(rows_json(layout, rows))
            .execute(self.pool().await)
            .await
            .map(|_| ())
            .map_err(|e| self.error(Some(table), e))
    }

    async fn purge(&self, table: &TableName, days: u32) -> Result<u64, DeliveryError> {
        let sql = format!(
            "DELETE FROM {} WHERE created_at < NOW() - make_interval(days => $1)",
            table.quoted(Q)
        );
        sqlx_core::query::query::<Postgres>(AssertSqlSafe(sql))
            .bind(i32::try_from(days).unwrap_or(i32::MAX))
            .execute(self.pool().await)
            .await
            .map(|r| r.rows_affected())
            .map_err(|e| self.error(Some(table), e))
    }

    async fn ping(&self) -> Result<(), DeliveryError> {
        sqlx_core::query_scalar::query_scalar::<Postgres, i32>("SELECT 1")
            .fetch_one(self.pool().await)
            .await
            .map(|_| ())
            .map_err(|e| self.error(None, e))
    }

    fn max_rows_per_statement(&self, _columns: usize) -> usize {
        usize::MAX
    }

    fn max_bytes_per_statement(&self) -> usize {
        64 * 1024 * 1024
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cfg(v: Value) -> Result<SqlConfig, Vec<ConfigError>> {
        let spec = DestinationSpec::from_value(&v, "d").unwrap();
        SqlConfig::parse(&spec, &BuildDefaults::default(), "d", Dialect::Postgres)
    }

    #[test]
    fn tls_mode_overrides_the_connection_string() {
        let c = cfg(json!({"type": "postgresql", "table": "t",
            "connection_string": "postgres://u:pw@db:5433/out?sslmode=disable", "tls_mode": "verify-full"}))
        .unwrap();
        let b = PgBackend::new(&c, "d").unwrap();
        assert!(matches!(b.ssl_mode(), PgSslMode::VerifyFull));
        assert_eq!(b.target, "postgres://u@db:5433/out");
        let c = cfg(json!({"type": "postgresql", "table": "t",
            "connection_string": "postgres://u@db/out?sslmode=require"}))
        .unwrap();
        assert!(matches!(PgBackend::new(&c, "d").unwrap().ssl_mode(), PgSslMode::Require));
    }

    #[test]
    fn host_fields_build_options_without_a_url() {
        let c =
            cfg(json!({"type": "postgresql", "table": "t", "host": "db.internal", "port": 6432,
            "database": "obs", "user": "writer", "password": "s3cret", "tls_mode": "disable"}))
            .unwrap();
        let b = PgBackend::new(&c, "d").unwrap();
        assert_eq!(b.target, "postgres://writer@db.internal:6432/obs");
        assert!(!b.target.contains("s3cret"));
        assert!(matches!(b.ssl_mode(), PgSslMode::Disable));
    }

    #[test]
    fn sqlstates_are_classified() {
        for code in ["40001", "40P01", "57P01", "53300", "08006", "08001"] {
            assert!(retryable_sqlstate(code), "{code}");
        }
        for code in ["42P01", "42501", "28P01", "3D000", "22P02", "23502", "42703"] {
            assert!(!retryable_sqlstate(code), "{code}");
        }
    }

    #[test]
    fn statements_quote_every_identifier() {
        let t = TableName::parse("audit.events", None).unwrap();
        let layout = Layout::from_config(
            &cfg(json!({"type": "postgresql", "host": "h", "table": "t"})).unwrap(),
        );
        let ddl = create_statements(&t, &layout);
        assert!(
            ddl[0].starts_with("CREATE TABLE IF NOT EXISTS \"audit\".\"events\" (id BIGSERIAL")
        );
        assert!(ddl.iter().any(|s| s.contains("USING GIN (data)")));
        assert!(ddl.iter().any(|s| s.contains("WHERE status <> 'completed'")));
        let ins = insert_statement(&t, &layout);
        assert!(ins.contains("NULL::\"audit\".\"events\""), "{ins}");
        assert!(ins.ends_with("ON CONFLICT (delivery_id) DO NOTHING"));
    }
}
