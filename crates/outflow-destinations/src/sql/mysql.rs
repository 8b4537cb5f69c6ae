//! The MySQL / MariaDB backend (`type: mysql`), on sqlx's MySQL driver.
//!
//! A batch is a multi-row `INSERT ... VALUES (...), (...)` within the placeholder limit
//! (65,535) and a packet budget, with `ON DUPLICATE KEY UPDATE delivery_id = delivery_id` so
//! a redelivered row is skipped while bad values still fail (strict mode) instead of being
//! stored truncated, as `INSERT IGNORE` would.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use outflow_core::config::{ConfigError, DestinationSpec};
use sqlx_core::sql_str::AssertSqlSafe;
use sqlx_mysql::{MySql, MySqlConnectOptions, MySqlDatabaseError, MySqlPool, MySqlSslMode};
use tokio::sync::OnceCell;

use super::config::{Dialect, SqlConfig, TlsMode};
use super::ident::{Quote, TableName};
use super::{Backend, ColumnType, Layout, Row, SqlDestination, SqlValue, acquire_timeout, redact};
use crate::{BuildDefaults, DeliveryError, Destination};

const Q: Quote = Quote::Backtick;

/// Parses and validates a `type: mysql` body.
pub fn build(
    spec: &DestinationSpec,
    defaults: &BuildDefaults,
    path: &str,
) -> Result<Arc<dyn Destination>, Vec<ConfigError>> {
    let cfg = SqlConfig::parse(spec, defaults, path, Dialect::MySql)?;
    let backend = MySqlBackend::new(&cfg, path)?;
    Ok(Arc::new(SqlDestination::new(cfg, backend)))
}

/// A lazily connected MySQL pool.
#[derive(Debug)]
pub struct MySqlBackend {
    options: MySqlConnectOptions,
    pool_size: u32,
    timeout: Duration,
    target: String,
    pool: OnceCell<MySqlPool>,
}

impl MySqlBackend {
    /// Builds connect options from the config; nothing connects yet.
    pub fn new(cfg: &SqlConfig, path: &str) -> Result<MySqlBackend, Vec<ConfigError>> {
        let net = cfg
            .network()
            .ok_or_else(|| vec![ConfigError::new(path, "mysql needs a network connection")])?;
        let mut options = match &net.connection_string {
            Some(cs) => {
                let url = cs.expose();
                let url = match url.strip_prefix("mariadb://") {
                    Some(rest) => format!("mysql://{rest}"),
                    None => url.to_string(),
                };
                MySqlConnectOptions::from_str(&url).map_err(|e| {
                    vec![ConfigError::new(
                        format!("{path}.connection_string"),
                        format!(
                            "is not a valid mysql:// URL: {}",
                            redact(&e.to_string(), Some(cs.expose()))
                        ),
                    )]
                })?
            }
            None => MySqlConnectOptions::new(),
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
                TlsMode::Disable => MySqlSslMode::Disabled,
                TlsMode::Prefer => MySqlSslMode::Preferred,
                TlsMode::Require => MySqlSslMode::Required,
                TlsMode::VerifyCa => MySqlSslMode::VerifyCa,
                TlsMode::VerifyFull => MySqlSslMode::VerifyIdentity,
            });
        }
        if let Some(ca) = &net.tls_ca_file {
            options = options.ssl_ca(ca);
        }
        // Timestamps are written and compared in UTC.
        options = options.timezone(Some("+00:00".to_string()));
        let target = format!(
            "mysql://{}@{}:{}/{}",
            options.get_username(),
            options.get_host(),
            options.get_port(),
            options.get_database().unwrap_or("")
        );
        Ok(MySqlBackend {
            options,
            pool_size: net.pool_size,
            timeout: cfg.timeout,
            target,
            pool: OnceCell::new(),
        })
    }

    /// The TLS mode in force.
    pub fn ssl_mode(&self) -> MySqlSslMode {
        self.options.get_ssl_mode()
    }

    async fn pool(&self) -> &MySqlPool {
        self.pool
            .get_or_init(|| async {
                sqlx_core::pool::PoolOptions::<MySql>::new()
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

/// Whether a MySQL/MariaDB error number means "try again later".
pub fn retryable_number(n: u16) -> bool {
    matches!(
        n,
        1021 // disk full
            | 1040 // too many connections
            | 1053 // server shutdown in progress
            | 1114 // table is full
            | 1152
            ..=1161 // aborted connection, network read/write errors
            | 1203 // max_user_connections
            | 1205 // lock wait timeout
            | 1213 // deadlock
            | 1290 | 1836 // read-only (failover in progress)
            | 1317 // query interrupted
            | 1927 // connection killed
            | 1969 | 3024 // statement timeout (MariaDB, MySQL)
            | 2002 | 2003 | 2006 | 2013 // client: cannot connect, server gone, lost connection
            | 4031 // disconnected for inactivity
    )
}

/// Maps a driver error to a delivery error naming the target, the table and the error
/// number with its SQLSTATE.
pub fn classify(target: &str, table: Option<&TableName>, e: sqlx_core::Error) -> DeliveryError {
    let at = match table {
        Some(t) => format!("mysql {target} table {t}"),
        None => format!("mysql {target}"),
    };
    match e {
        sqlx_core::Error::Database(db) => {
            let number = db.try_downcast_ref::<MySqlDatabaseError>().map(|m| m.number());
            let state = db.code().map(|c| c.into_owned()).unwrap_or_default();
            let n = number.unwrap_or(0);
            let mut msg = format!("{at}: {} (error {n}, SQLSTATE {state})", db.message());
            match n {
                1146 => {
                    msg.push_str("; the table does not exist: create it, or set create_table: true")
                }
                1045 => msg.push_str("; check user and password"),
                1044 | 1142 | 1143 => {
                    msg.push_str("; permission denied: grant INSERT (and CREATE) to the user")
                }
                1049 => msg.push_str("; the database does not exist"),
                _ => {}
            }
            if retryable_number(n) || state == "40001" || state.starts_with("08") {
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
        ColumnType::Text => "LONGTEXT".into(),
        ColumnType::Uuid => "CHAR(36)".into(),
        ColumnType::BigInt => "BIGINT".into(),
        ColumnType::Json => "JSON".into(),
        ColumnType::Timestamp => "DATETIME(6)".into(),
    }
}

/// The CREATE TABLE for `table`, indexes inline (MySQL has no CREATE INDEX IF NOT EXISTS).
pub fn create_statement(table: &TableName, layout: &Layout) -> String {
    let mut parts = vec!["`id` BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY".to_string()];
    for c in &layout.columns {
        let extra = match c.name.as_str() {
            "delivery_id" => " NOT NULL",
            "completed_at" if layout.default_schema => " NOT NULL",
            _ => "",
        };
        parts.push(format!("{} {}{extra}", Q.ident(&c.name), sql_type(c.ty)));
    }
    parts.push("`created_at` DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6)".into());
    let index =
        |suffix: &str, cols: &str| format!("INDEX {} ({cols})", Q.ident(&table.index_name(suffix)));
    parts.push(format!(
        "UNIQUE KEY {} (`delivery_id`)",
        Q.ident(&table.index_name("delivery_id_key"))
    ));
    parts.push(index("created_at_idx", "`created_at`"));
    if layout.default_schema {
        parts.push(index("completed_at_idx", "`completed_at`"));
        parts.push(index("task_name_idx", "`task_name`"));
        parts.push(index("status_idx", "`status`, `completed_at`"));
        parts.push(index("job_uuid_idx", "`job_uuid`"));
    }
    format!(
        "CREATE TABLE IF NOT EXISTS {} ({}) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
        table.quoted(Q),
        parts.join(", ")
    )
}

/// A multi-row INSERT of `rows` rows.
pub fn insert_statement(table: &TableName, layout: &Layout, rows: usize) -> String {
    let cols: Vec<String> = layout.columns.iter().map(|c| Q.ident(&c.name)).collect();
    let one = format!("({})", vec!["?"; cols.len()].join(", "));
    format!(
        "INSERT INTO {} ({}) VALUES {} ON DUPLICATE KEY UPDATE `delivery_id` = `delivery_id`",
        table.quoted(Q),
        cols.join(", "),
        vec![one; rows].join(", ")
    )
}

#[async_trait]
impl Backend for MySqlBackend {
    fn target(&self) -> String {
        self.target.clone()
    }

    async fn create_table(&self, table: &TableName, layout: &Layout) -> Result<(), DeliveryError> {
        match sqlx_core::query::query::<MySql>(AssertSqlSafe(create_statement(table, layout)))
            .execute(self.pool().await)
            .await
        {
            Ok(_) => Ok(()),
            // 1050: created by someone else in between.
            Err(sqlx_core::Error::Database(db))
                if db
                    .try_downcast_ref::<MySqlDatabaseError>()
                    .is_some_and(|m| m.number() == 1050) =>
            {
                Ok(())
            }
            Err(e) => Err(self.error(Some(table), e)),
        }
    }

    async fn table_exists(&self, table: &TableName) -> Result<bool, DeliveryError> {
        sqlx_core::query_scalar::query_scalar::<MySql, i64>(
            "SELECT COUNT(*) FROM information_schema.tables \
             WHERE table_schema = COALESCE(?, DATABASE()) AND table_name = ?",
        )
        .bind(table.schema.clone())
        .bind(table.name.clone())
        .fetch_one(self.pool().await)
        .await
        .map(|n| n > 0)
        .map_err(|e| self.error(Some(table), e))
    }

    async fn insert(
        &self,
        table: &TableName,
        layout: &Layout,
        rows: &[Row],
    ) -> Result<(), DeliveryError> {
        let sql = insert_statement(table, layout, rows.len());
        let mut query = sqlx_core::query::query::<MySql>(AssertSqlSafe(sql));
        for row in rows {
            for v in &row.values {
                query = match v {
                    SqlValue::Null => query.bind(None::<String>),
                    SqlValue::Text(s) => query.bind(s.clone()),
                    SqlValue::Int(n) => query.bind(*n),
                    SqlValue::Json(v) => query.bind(v.to_string()),
                    SqlValue::Timestamp(t) => {
                        query.bind(t.format("%Y-%m-%d %H:%M:%S%.6f").to_string())
                    }
                };
            }
        }
        // Statements of unusual row counts are not worth a slot in the statement cache.
        let query = query.persistent(rows.len() == 1);
        query.execute(self.pool().await).await.map(|_| ()).map_err(|e| self.error(Some(table), e))
    }

    async fn purge(&self, table: &TableName, days: u32) -> Result<u64, DeliveryError> {
        let sql =
            format!("DELETE FROM {} WHERE `created_at` < NOW(6) - INTERVAL ? DAY", table.quoted(Q));
        sqlx_core::query::query::<MySql>(AssertSqlSafe(sql))
            .bind(i64::from(days))
            .execute(self.pool().await)
            .await
            .map(|r| r.rows_affected())
            .map_err(|e| self.error(Some(table), e))
    }

    async fn ping(&self) -> Result<(), DeliveryError> {
        sqlx_core::query_scalar::query_scalar::<MySql, i32>("SELECT 1")
            .fetch_one(self.pool().await)
            .await
            .map(|_| ())
            .map_err(|e| self.error(None, e))
    }

    fn max_rows_per_statement(&self, columns: usize) -> usize {
        65_535 / columns.max(1)
    }

    fn max_bytes_per_statement(&self) -> usize {
        // Under MySQL 5.7's 4 MiB default max_allowed_packet with room for the SQL text.
        3 * 1024 * 1024
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn cfg(v: Value) -> SqlConfig {
        let spec = DestinationSpec::from_value(&v, "d").unwrap();
        SqlConfig::parse(&spec, &BuildDefaults::default(), "d", Dialect::MySql).unwrap()
    }

    #[test]
    fn tls_modes_map_to_mysql_names() {
        for (mode, want) in [
            ("disable", MySqlSslMode::Disabled),
            ("prefer", MySqlSslMode::Preferred),
            ("require", MySqlSslMode::Required),
            ("verify-ca", MySqlSslMode::VerifyCa),
            ("verify-full", MySqlSslMode::VerifyIdentity),
        ] {
            let c = cfg(json!({"type": "mysql", "connection_string": "mariadb://u:pw@db:3307/out",
                "table": "t", "tls_mode": mode}));
            let b = MySqlBackend::new(&c, "d").unwrap();
            assert_eq!(format!("{:?}", b.ssl_mode()), format!("{want:?}"));
            assert_eq!(b.target, "mysql://u@db:3307/out");
        }
    }

    #[test]
    fn error_numbers_are_classified() {
        for n in [1213, 1205, 1040, 1053, 2013, 1927] {
            assert!(retryable_number(n), "{n}");
        }
        for n in [1146, 1142, 1045, 1049, 1054, 1406, 1366, 4025] {
            assert!(!retryable_number(n), "{n}");
        }
    }

    #[test]
    fn statements_quote_and_dedupe() {
        let t = TableName::parse("outputs", None).unwrap();
        let layout = Layout::from_config(&cfg(json!({"type": "mysql", "host": "h", "table": "t"})));
        let ddl = create_statement(&t, &layout);
        assert!(ddl.contains("UNIQUE KEY `outputs_delivery_id_key` (`delivery_id`)"), "{ddl}");
        assert!(ddl.contains("`data` JSON"), "{ddl}");
        let ins = insert_statement(&t, &layout, 2);
        assert!(ins.contains("), ("), "{ins}");
        assert!(ins.ends_with("ON DUPLICATE KEY UPDATE `delivery_id` = `delivery_id`"));
    }
}
