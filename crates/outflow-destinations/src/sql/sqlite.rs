//! The SQLite backend (`type: sqlite`), on the workspace's `rusqlite` (the store's SQLite).
//!
//! SQLite calls block, so each runs on tokio's blocking pool. Connections are cached per
//! database file for the whole process: destinations writing to the same file share one
//! connection, so they queue on its mutex instead of fighting over the file lock. The file
//! is put in WAL mode (readers never block the writer). A batch is one transaction of
//! single-row inserts through one cached prepared statement — as fast as a multi-row
//! INSERT in SQLite, without the placeholder limit.
//!
//! "The peer is down", for a file, means another process holds the write lock longer than
//! the busy timeout (`SQLITE_BUSY`), the file became read-only, or the disk failed or filled
//! up: all retryable. A missing table with `create_table: false`, a file that is not a
//! database, or a path that cannot be opened are permanent.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use outflow_core::config::{ConfigError, DestinationSpec};
use rusqlite::{Connection, ErrorCode, TransactionBehavior, params_from_iter, types::Value as Sql};
use serde_json::Value;

use super::config::{Connection as Conn, Dialect, SqlConfig};
use super::ident::{Quote, TableName};
use super::{Backend, ColumnType, Layout, Row, SqlDestination, SqlValue, acquire_timeout};
use crate::{BuildDefaults, DeliveryError, Destination};

const Q: Quote = Quote::Double;

/// Parses and validates a `type: sqlite` body.
pub fn build(
    spec: &DestinationSpec,
    defaults: &BuildDefaults,
    path: &str,
) -> Result<Arc<dyn Destination>, Vec<ConfigError>> {
    let cfg = SqlConfig::parse(spec, defaults, path, Dialect::Sqlite)?;
    let Conn::File(file) = &cfg.connection else {
        return Err(vec![ConfigError::new(path, "sqlite needs a database file path")]);
    };
    let backend = SqliteBackend::new(file.clone(), acquire_timeout(cfg.timeout));
    Ok(Arc::new(SqlDestination::new(cfg, backend)))
}

type Slot = Arc<Mutex<Option<Connection>>>;

/// The process-wide connection cache: one slot per database file.
fn slot_for(path: &Path) -> Slot {
    static CACHE: OnceLock<Mutex<HashMap<PathBuf, Slot>>> = OnceLock::new();
    let mut cache = CACHE.get_or_init(Mutex::default).lock().unwrap_or_else(|e| e.into_inner());
    Arc::clone(cache.entry(path.to_path_buf()).or_default())
}

/// An SQLite database file.
#[derive(Debug)]
pub struct SqliteBackend {
    path: PathBuf,
    busy_timeout: Duration,
    slot: Slot,
}

fn open(path: &Path, busy: Duration) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(busy)?;
    // WAL: readers and the writer do not block each other. FULL sync (the default) keeps a
    // committed delivery on disk across a power cut.
    conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get::<_, String>(0))?;
    Ok(conn)
}

/// Errors after which the cached connection is dropped and the file reopened next time.
fn poisons_connection(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(
            ErrorCode::SystemIoFailure
                | ErrorCode::CannotOpen
                | ErrorCode::NotADatabase
                | ErrorCode::DatabaseCorrupt
                | ErrorCode::ReadOnly
        )
    )
}

/// Maps an SQLite error to a delivery error naming the file, the table and the code.
pub fn classify(path: &Path, table: Option<&TableName>, e: &rusqlite::Error) -> DeliveryError {
    let at = match table {
        Some(t) => format!("sqlite {} table {t}", path.display()),
        None => format!("sqlite {}", path.display()),
    };
    let (code, extended) = match e {
        rusqlite::Error::SqliteFailure(f, _) => (Some(f.code), f.extended_code),
        _ => (None, 0),
    };
    let mut msg = format!("{at}: {e}");
    if let Some(code) = code {
        msg.push_str(&format!(" (SQLITE code {extended}, {code:?})"));
    }
    if msg.contains("no such table") {
        msg.push_str("; the table does not exist: create it, or set create_table: true");
    }
    let retryable = matches!(
        code,
        Some(
            ErrorCode::DatabaseBusy
                | ErrorCode::DatabaseLocked
                | ErrorCode::SystemIoFailure
                | ErrorCode::DiskFull
                | ErrorCode::ReadOnly
                | ErrorCode::OperationInterrupted
                | ErrorCode::FileLockingProtocolFailed
                | ErrorCode::OutOfMemory
        )
    );
    if retryable { DeliveryError::retryable(msg) } else { DeliveryError::permanent(msg) }
}

fn sql_type(ty: ColumnType) -> &'static str {
    match ty {
        ColumnType::BigInt => "INTEGER",
        _ => "TEXT",
    }
}

/// The DDL for `table`: the table and its indexes, each `IF NOT EXISTS`, as one script.
pub fn create_script(table: &TableName, layout: &Layout) -> String {
    let t = table.quoted(Q);
    let mut cols = vec!["\"id\" INTEGER PRIMARY KEY AUTOINCREMENT".to_string()];
    for c in &layout.columns {
        let extra = match (c.name.as_str(), c.ty) {
            ("delivery_id", _) => " NOT NULL UNIQUE".to_string(),
            ("completed_at", _) if layout.default_schema => " NOT NULL".to_string(),
            (name, ColumnType::Json) => {
                format!(" CHECK ({} IS NULL OR json_valid({}))", Q.ident(name), Q.ident(name))
            }
            _ => String::new(),
        };
        cols.push(format!("{} {}{extra}", Q.ident(&c.name), sql_type(c.ty)));
    }
    cols.push(
        "\"created_at\" TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))".into(),
    );
    let mut script = format!("CREATE TABLE IF NOT EXISTS {t} ({});\n", cols.join(", "));
    // SQLite index names are per database (schema), so qualify them like the table.
    let index = |suffix: &str, body: &str| {
        let name = match &table.schema {
            Some(s) => format!("{}.{}", Q.ident(s), Q.ident(&table.index_name(suffix))),
            None => Q.ident(&table.index_name(suffix)),
        };
        format!("CREATE INDEX IF NOT EXISTS {name} ON {} {body};\n", Q.ident(&table.name))
    };
    script.push_str(&index("created_at_idx", "(\"created_at\")"));
    if layout.default_schema {
        script.push_str(&index("completed_at_idx", "(\"completed_at\" DESC)"));
        script.push_str(&index("task_name_idx", "(\"task_name\")"));
        script.push_str(&index("status_idx", "(\"status\")"));
        script.push_str(&index("job_uuid_idx", "(\"job_uuid\")"));
        script.push_str(&index(
            "failed_idx",
            "(\"completed_at\" DESC) WHERE \"status\" <> 'completed'",
        ));
    }
    script
}

/// The single-row INSERT, skipping a delivery id that is already there (only that
/// conflict: `INSERT OR IGNORE` would also swallow NOT NULL and CHECK failures).
pub fn insert_statement(table: &TableName, layout: &Layout) -> String {
    let cols: Vec<String> = layout.columns.iter().map(|c| Q.ident(&c.name)).collect();
    format!(
        "INSERT INTO {} ({}) VALUES ({}) ON CONFLICT (\"delivery_id\") DO NOTHING",
        table.quoted(Q),
        cols.join(", "),
        vec!["?"; cols.len()].join(", ")
    )
}

fn to_sql(ty: ColumnType, v: &SqlValue) -> Sql {
    match v {
        SqlValue::Null => Sql::Null,
        SqlValue::Text(s) => Sql::Text(s.clone()),
        SqlValue::Int(n) => Sql::Integer(*n),
        // A JSON column always holds JSON text; a user column gets numbers as numbers.
        SqlValue::Json(v) if ty == ColumnType::Json => Sql::Text(v.to_string()),
        SqlValue::Json(Value::Number(n)) if n.is_i64() => Sql::Integer(n.as_i64().unwrap_or(0)),
        SqlValue::Json(Value::Number(n)) if n.is_f64() => Sql::Real(n.as_f64().unwrap_or(0.0)),
        SqlValue::Json(v) => Sql::Text(v.to_string()),
        SqlValue::Timestamp(t) => Sql::Text(t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()),
    }
}

impl SqliteBackend {
    /// A backend for the database at `path`; nothing is opened yet.
    pub fn new(path: PathBuf, busy_timeout: Duration) -> SqliteBackend {
        let slot = slot_for(&path);
        SqliteBackend { path, busy_timeout, slot }
    }

    /// Runs `f` on the cached connection on the blocking pool, opening it first if needed.
    async fn run<T: Send + 'static>(
        &self,
        table: Option<&TableName>,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, DeliveryError> {
        let slot = Arc::clone(&self.slot);
        let path = self.path.clone();
        let busy = self.busy_timeout;
        let outcome = tokio::task::spawn_blocking(move || {
            let mut guard = slot.lock().unwrap_or_else(|e| e.into_inner());
            if guard.is_none() {
                *guard = Some(open(&path, busy)?);
            }
            let Some(conn) = guard.as_mut() else {
                return Err(rusqlite::Error::InvalidQuery);
            };
            let result = f(conn);
            if let Err(e) = &result
                && poisons_connection(e)
            {
                *guard = None;
            }
            result
        })
        .await;
        match outcome {
            Ok(result) => result.map_err(|e| classify(&self.path, table, &e)),
            Err(join) => Err(DeliveryError::retryable(format!(
                "sqlite {}: the database task failed: {join}",
                self.path.display()
            ))),
        }
    }
}

#[async_trait]
impl Backend for SqliteBackend {
    fn target(&self) -> String {
        self.path.display().to_string()
    }

    async fn create_table(&self, table: &TableName, layout: &Layout) -> Result<(), DeliveryError> {
        let script = create_script(table, layout);
        self.run(Some(table), move |conn| conn.execute_batch(&script)).await
    }

    async fn table_exists(&self, table: &TableName) -> Result<bool, DeliveryError> {
        let schema = table.schema.clone().unwrap_or_else(|| "main".into());
        let sql = format!(
            "SELECT COUNT(*) FROM {}.sqlite_master WHERE type = 'table' AND name = ?1",
            Q.ident(&schema)
        );
        let name = table.name.clone();
        self.run(Some(table), move |conn| {
            conn.query_row(&sql, [name], |r| r.get::<_, i64>(0)).map(|n| n > 0)
        })
        .await
    }

    async fn insert(
        &self,
        table: &TableName,
        layout: &Layout,
        rows: &[Row],
    ) -> Result<(), DeliveryError> {
        let sql = insert_statement(table, layout);
        let types: Vec<ColumnType> = layout.columns.iter().map(|c| c.ty).collect();
        let rows: Vec<Vec<Sql>> = rows
            .iter()
            .map(|r| types.iter().zip(&r.values).map(|(ty, v)| to_sql(*ty, v)).collect())
            .collect();
        self.run(Some(table), move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            {
                let mut stmt = tx.prepare_cached(&sql)?;
                for row in &rows {
                    stmt.execute(params_from_iter(row.iter()))?;
                }
            }
            tx.commit()
        })
        .await
    }

    async fn purge(&self, table: &TableName, days: u32) -> Result<u64, DeliveryError> {
        let sql = format!(
            "DELETE FROM {} WHERE julianday(\"created_at\") < julianday('now') - ?1",
            table.quoted(Q)
        );
        self.run(Some(table), move |conn| conn.execute(&sql, [i64::from(days)]).map(|n| n as u64))
            .await
    }

    async fn ping(&self) -> Result<(), DeliveryError> {
        // Taking the write lock proves the file is writable now, which `SELECT 1` would not
        // (readers are never blocked in WAL mode).
        self.run(None, |conn| {
            conn.query_row("SELECT 1", [], |r| r.get::<_, i64>(0))?;
            conn.transaction_with_behavior(TransactionBehavior::Immediate)?.rollback()
        })
        .await
    }

    fn max_rows_per_statement(&self, _columns: usize) -> usize {
        usize::MAX
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn script_quotes_and_indexes() {
        let spec = DestinationSpec::from_value(
            &json!({"type": "sqlite", "path": "/x.db", "table": "t"}),
            "d",
        )
        .unwrap();
        let cfg = SqlConfig::parse(&spec, &BuildDefaults::default(), "d", Dialect::Sqlite).unwrap();
        let layout = Layout::from_config(&cfg);
        let t = TableName::parse("outputs", None).unwrap();
        let script = create_script(&t, &layout);
        assert!(script.contains("\"delivery_id\" TEXT NOT NULL UNIQUE"), "{script}");
        assert!(script.contains("json_valid(\"data\")"), "{script}");
        assert!(script.contains("WHERE \"status\" <> 'completed'"), "{script}");
        assert!(
            insert_statement(&t, &layout).ends_with("ON CONFLICT (\"delivery_id\") DO NOTHING")
        );
    }

    #[test]
    fn values_map_to_sqlite_types() {
        assert_eq!(
            to_sql(ColumnType::Json, &SqlValue::Json(json!("x"))),
            Sql::Text("\"x\"".into())
        );
        assert_eq!(to_sql(ColumnType::Text, &SqlValue::Json(json!(7))), Sql::Integer(7));
        assert_eq!(
            to_sql(ColumnType::Text, &SqlValue::Json(json!({"a": 1}))),
            Sql::Text("{\"a\":1}".into())
        );
    }

    #[test]
    fn busy_is_retryable_and_missing_table_permanent() {
        let busy = rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY),
            Some("database is locked".into()),
        );
        assert!(classify(Path::new("/x.db"), None, &busy).is_retryable());
        let missing = rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_ERROR),
            Some("no such table: t".into()),
        );
        let t = TableName::parse("t", None).unwrap();
        let e = classify(Path::new("/x.db"), Some(&t), &missing);
        assert!(!e.is_retryable());
        assert!(
            e.message.contains("table t") && e.message.contains("no such table"),
            "{}",
            e.message
        );
    }
}
