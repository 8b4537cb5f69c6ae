//! Parsing and validating `type: postgresql`, `mysql` and `sqlite` bodies: the keys the three
//! share, plus each one's connection keys.

use std::path::PathBuf;
use std::time::Duration;

use outflow_core::config::{ConfigError, DestinationSpec, FieldReader};
use outflow_core::retry::RetryPolicy;
use outflow_core::secret::Secret;
use outflow_core::template::Template;
use serde_json::Value;

use super::ident::{IDENT_EXPECTED, check_ident};
use crate::{BuildDefaults, common};

/// The three SQL dialects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// PostgreSQL.
    Postgres,
    /// MySQL and MariaDB.
    MySql,
    /// SQLite.
    Sqlite,
}

impl Dialect {
    /// The destination `type`.
    pub fn kind(self) -> &'static str {
        match self {
            Dialect::Postgres => "postgresql",
            Dialect::MySql => "mysql",
            Dialect::Sqlite => "sqlite",
        }
    }
}

/// The default `pool_size` (seed 004's `poolSize: 10`).
pub const DEFAULT_POOL_SIZE: u32 = 10;
/// The default number of rows per INSERT in a batch.
pub const DEFAULT_BATCH_SIZE: usize = 500;
/// Column names the destination owns and `columns` may not map.
pub const RESERVED_COLUMNS: &[&str] = &["id", "delivery_id", "created_at"];
/// The `tls_mode` values (libpq's `sslmode` names; MySQL's are mapped onto them).
pub const TLS_MODES: &[&str] = &["disable", "prefer", "require", "verify-ca", "verify-full"];

/// How TLS is used on the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    /// Never.
    Disable,
    /// When the server offers it.
    Prefer,
    /// Always, without checking the certificate.
    Require,
    /// Always, checking the certificate chain against `tls_ca_file` (or the system roots).
    VerifyCa,
    /// Like `VerifyCa`, and the certificate must name the host.
    VerifyFull,
}

impl TlsMode {
    fn parse(name: &str) -> TlsMode {
        match name {
            "disable" => TlsMode::Disable,
            "prefer" => TlsMode::Prefer,
            "require" => TlsMode::Require,
            "verify-ca" => TlsMode::VerifyCa,
            _ => TlsMode::VerifyFull,
        }
    }
}

/// Where a network database is, as configured.
#[derive(Debug, Clone)]
pub struct NetworkConnection {
    /// A `postgres://` / `mysql://` URL; the other fields override its parts.
    pub connection_string: Option<Secret>,
    /// Host name or address.
    pub host: Option<String>,
    /// Port.
    pub port: Option<u16>,
    /// Database name.
    pub database: Option<String>,
    /// User name.
    pub user: Option<String>,
    /// Password.
    pub password: Option<Secret>,
    /// TLS mode; `None` leaves the connection string's (or the driver's default, `prefer`).
    pub tls_mode: Option<TlsMode>,
    /// A PEM file of CA certificates to verify the server with.
    pub tls_ca_file: Option<PathBuf>,
    /// The most connections the pool opens.
    pub pool_size: u32,
}

/// Where the data goes.
#[derive(Debug, Clone)]
pub enum Connection {
    /// PostgreSQL or MySQL over the network.
    Network(NetworkConnection),
    /// An SQLite database file.
    File(PathBuf),
}

/// Where one user column's value comes from.
#[derive(Debug, Clone)]
pub enum ColumnSource {
    /// A `{{var}}` template over the job context.
    Template(Template),
    /// An RFC 6901 JSON pointer into the output (`/user/id`); missing → NULL.
    Pointer(String),
}

/// A validated SQL destination configuration.
#[derive(Debug, Clone)]
pub struct SqlConfig {
    /// Which database.
    pub dialect: Dialect,
    /// Where it is.
    pub connection: Connection,
    /// The table name template (`events`, `schema.events`, `outputs_{{task_name}}`).
    pub table: Template,
    /// The schema (PostgreSQL) for table names without one.
    pub schema: Option<String>,
    /// Create missing tables (with indexes) on first use.
    pub create_table: bool,
    /// User-defined columns, in config order; `None` means the default schema.
    pub columns: Option<Vec<(String, ColumnSource)>>,
    /// Delete rows older than this many days (checked at most hourly per table).
    pub retention_days: Option<u32>,
    /// Rows per INSERT statement in a batch.
    pub batch_size: usize,
    /// The bound on one delivery (connect, create, insert).
    pub timeout: Duration,
    /// Retries.
    pub retry_policy: RetryPolicy,
}

/// Reads `key`, or its camelCase spelling from seed 004 (`retentionDays`), refusing both.
fn aliased<'a>(
    r: &mut FieldReader<'a>,
    key: &'static str,
    camel: &'static str,
) -> Option<(&'static str, &'a Value)> {
    match (r.raw(key), r.raw(camel)) {
        (Some(_), Some(_)) => {
            r.error(camel, format!("is the same option as '{key}': set only one"));
            None
        }
        (Some(v), None) => Some((key, v)),
        (None, Some(v)) => Some((camel, v)),
        (None, None) => None,
    }
}

fn positive_int(r: &mut FieldReader<'_>, key: &str, v: &Value, max: u64) -> Option<u64> {
    let n = match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse::<u64>().ok(),
        _ => None,
    };
    match n {
        Some(n) if n >= 1 && n <= max => Some(n),
        _ => {
            r.error(key, format!("must be an integer from 1 to {max}"));
            None
        }
    }
}

fn parse_columns(r: &mut FieldReader<'_>) -> Option<Vec<(String, ColumnSource)>> {
    let expected = "a mapping of column name to a template (\"{{job_uuid}}\") or a JSON pointer \
                    into the output (\"/user/id\"), e.g. {user_id: \"/user/id\"}";
    let raw = r.raw("columns")?;
    let Value::Object(map) = raw else {
        r.error("columns", format!("must be {expected}"));
        return None;
    };
    if map.is_empty() {
        r.error("columns", format!("must not be empty; expected {expected}"));
        return None;
    }
    let mut out = Vec::new();
    let mut ok = true;
    for (name, source) in map {
        let at = format!("columns.{name}");
        if let Err(e) = check_ident(name) {
            r.error(&at, e);
            ok = false;
            continue;
        }
        if RESERVED_COLUMNS.contains(&name.to_ascii_lowercase().as_str()) {
            r.error(
                &at,
                format!(
                    "'{name}' is set by the destination itself ({} are reserved)",
                    RESERVED_COLUMNS.join(", ")
                ),
            );
            ok = false;
            continue;
        }
        let parsed = match source {
            Value::String(s) if s.starts_with('/') => Ok(ColumnSource::Pointer(s.clone())),
            Value::String(s) => Template::parse(s)
                .map(ColumnSource::Template)
                .map_err(|e| format!("invalid template: {} (at byte {})", e.reason, e.offset)),
            Value::Object(m) if m.len() == 1 && m.get("pointer").is_some_and(Value::is_string) => {
                let p = m["pointer"].as_str().unwrap_or_default();
                if p.is_empty() || p.starts_with('/') {
                    Ok(ColumnSource::Pointer(p.to_string()))
                } else {
                    Err(format!("pointer '{p}' must be empty (the whole output) or start with '/'"))
                }
            }
            Value::Object(m) if m.len() == 1 && m.get("template").is_some_and(Value::is_string) => {
                Template::parse(m["template"].as_str().unwrap_or_default())
                    .map(ColumnSource::Template)
                    .map_err(|e| format!("invalid template: {} (at byte {})", e.reason, e.offset))
            }
            _ => Err(format!(
                "must be a template or JSON pointer string, or {{template: ...}} / {{pointer: ...}}; expected {expected}"
            )),
        };
        match parsed {
            Ok(source) => out.push((name.clone(), source)),
            Err(msg) => {
                r.error(&at, msg);
                ok = false;
            }
        }
    }
    ok.then_some(out)
}

fn parse_network(r: &mut FieldReader<'_>, dialect: Dialect) -> Option<NetworkConnection> {
    let scheme = if dialect == Dialect::Postgres { "postgres" } else { "mysql" };
    let connection_string = r.secret("connection_string", false);
    let host = r.string("host");
    let port: Option<u16> = r.optional("port", "a TCP port number (1 to 65535)");
    let database = r.string("database");
    let user = r.string("user");
    let password = r.secret("password", false);
    let tls_mode = r.one_of("tls_mode", TLS_MODES).map(TlsMode::parse);
    let tls_ca_file = r.string("tls_ca_file").map(PathBuf::from);
    let pool_size = match aliased(r, "pool_size", "poolSize") {
        Some((key, v)) => positive_int(r, key, v, 1000).map(|n| n as u32),
        None => Some(DEFAULT_POOL_SIZE),
    };
    match (&connection_string, &host) {
        (Some(cs), _) => {
            let text = cs.expose();
            let ok_scheme = match dialect {
                Dialect::Postgres => {
                    text.starts_with("postgres://") || text.starts_with("postgresql://")
                }
                _ => text.starts_with("mysql://") || text.starts_with("mariadb://"),
            };
            if !ok_scheme {
                // Never echo the value: it may hold a password.
                r.error(
                    "connection_string",
                    format!("must be a {scheme}:// URL, e.g. {scheme}://user@host:port/database"),
                );
            }
        }
        (None, Some(_)) => {}
        (None, None) => r.error(
            "connection_string",
            format!(
                "is required (a {scheme}://user@host:port/database URL), unless host (with \
                 port, database, user, password) is given"
            ),
        ),
    }
    if let Some(ca) = &tls_ca_file
        && !ca.is_absolute()
    {
        r.error("tls_ca_file", "must be an absolute path to a PEM file of CA certificates");
    }
    Some(NetworkConnection {
        connection_string,
        host,
        port,
        database,
        user,
        password,
        tls_mode,
        tls_ca_file,
        pool_size: pool_size?,
    })
}

fn parse_file(r: &mut FieldReader<'_>) -> Option<PathBuf> {
    let path = r.string("path");
    let cs = r.string("connection_string");
    let expected = "an absolute path such as /var/lib/outflow/outputs.db, or connection_string \
                    sqlite:///var/lib/outflow/outputs.db";
    let file = match (path, cs) {
        (Some(_), Some(_)) => {
            r.error("connection_string", "set either path or connection_string, not both");
            return None;
        }
        (Some(p), None) => PathBuf::from(p),
        (None, Some(cs)) => match cs.strip_prefix("sqlite://") {
            Some(rest) if rest.starts_with('/') => {
                PathBuf::from(rest.split('?').next().unwrap_or(rest))
            }
            _ => {
                r.error(
                    "connection_string",
                    format!("must be sqlite:///absolute/path.db; expected {expected}"),
                );
                return None;
            }
        },
        (None, None) => {
            r.error("path", format!("is required ({expected})"));
            return None;
        }
    };
    if !file.is_absolute() {
        r.error("path", format!("'{}' is not absolute; expected {expected}", file.display()));
        return None;
    }
    Some(file)
}

impl SqlConfig {
    /// Parses `spec` for `dialect`, reporting every problem under `path`.
    pub fn parse(
        spec: &DestinationSpec,
        defaults: &BuildDefaults,
        path: &str,
        dialect: Dialect,
    ) -> Result<SqlConfig, Vec<ConfigError>> {
        let mut r = FieldReader::new(&spec.fields, path);
        let connection = match dialect {
            Dialect::Sqlite => parse_file(&mut r).map(Connection::File),
            _ => parse_network(&mut r, dialect).map(Connection::Network),
        };

        let table_expected = format!(
            "a table name template, e.g. outputs_{{{{task_name}}}}; after rendering: {IDENT_EXPECTED}"
        );
        let table = match aliased(&mut r, "table", "tableName") {
            Some((key, Value::String(s))) => match Template::parse(s) {
                Ok(t) => Some(t),
                Err(e) => {
                    r.error(key, format!("invalid template: {} (at byte {})", e.reason, e.offset));
                    None
                }
            },
            Some((key, _)) => {
                r.error(key, format!("must be {table_expected}"));
                None
            }
            None => {
                r.error("table", format!("is required ({table_expected})"));
                None
            }
        };
        // A literal table name is checked now rather than at the first delivery.
        if let Some(t) = &table
            && t.is_static()
            && let Err(e) = super::ident::TableName::parse(t.source(), None)
        {
            r.error("table", e);
        }

        let schema = if dialect == Dialect::Postgres {
            match aliased(&mut r, "schema", "schemaName") {
                Some((key, Value::String(s))) => match check_ident(s) {
                    Ok(()) => Some(s.clone()),
                    Err(e) => {
                        r.error(key, e);
                        None
                    }
                },
                Some((key, _)) => {
                    r.error(key, "must be a schema name such as public");
                    None
                }
                None => None,
            }
        } else {
            None
        };

        let create_table = match aliased(&mut r, "create_table", "createTableIfNotExists") {
            Some((_, Value::Bool(b))) => *b,
            Some((_, Value::String(s))) if s.eq_ignore_ascii_case("true") => true,
            Some((_, Value::String(s))) if s.eq_ignore_ascii_case("false") => false,
            Some((key, _)) => {
                r.error(key, "must be true or false");
                true
            }
            None => true,
        };

        let columns = parse_columns(&mut r);

        let retention_days = match aliased(&mut r, "retention_days", "retentionDays") {
            Some((key, v)) => positive_int(&mut r, key, v, 36_500).map(|n| n as u32),
            None => None,
        };

        let batch_size = match r.raw("batch_size") {
            Some(v) => positive_int(&mut r, "batch_size", v, 10_000)
                .map_or(DEFAULT_BATCH_SIZE, |n| n as usize),
            None => DEFAULT_BATCH_SIZE,
        };

        let timeout = common::read_timeout(&mut r, defaults);

        let retry_policy = common::read_retry_policy(&mut r, defaults);

        let errors = r.finish();
        if !errors.is_empty() {
            return Err(errors);
        }
        let invalid =
            || vec![ConfigError::new(path, format!("invalid {} configuration", dialect.kind()))];
        Ok(SqlConfig {
            dialect,
            connection: connection.ok_or_else(invalid)?,
            table: table.ok_or_else(invalid)?,
            schema,
            create_table,
            columns,
            retention_days,
            batch_size,
            timeout,
            retry_policy,
        })
    }

    /// The network connection settings (PostgreSQL, MySQL).
    pub fn network(&self) -> Option<&NetworkConnection> {
        match &self.connection {
            Connection::Network(n) => Some(n),
            Connection::File(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::common::test_support::{has, pairs};
    use serde_json::json;

    fn parse(v: Value, dialect: Dialect) -> Result<SqlConfig, Vec<ConfigError>> {
        let spec = DestinationSpec::from_value(&v, "d").unwrap();
        SqlConfig::parse(&spec, &BuildDefaults::default(), "d", dialect)
    }

    fn errors(v: Value, dialect: Dialect) -> Vec<(String, String)> {
        pairs(parse(v, dialect).unwrap_err())
    }

    #[test]
    fn minimal_postgres_config_takes_defaults() {
        let c = parse(
            json!({"type": "postgresql", "connection_string": "postgres://u@h/db", "table": "events"}),
            Dialect::Postgres,
        )
        .unwrap();
        assert!(c.create_table);
        assert!(c.columns.is_none());
        assert_eq!(c.batch_size, DEFAULT_BATCH_SIZE);
        assert_eq!(c.network().unwrap().pool_size, DEFAULT_POOL_SIZE);
        assert_eq!(c.network().unwrap().tls_mode, None);
    }

    #[test]
    fn seed_004_keys_are_accepted() {
        let c = parse(
            json!({"type": "postgresql", "host": "localhost", "port": 5432, "database": "obs",
                   "user": "postgres", "password": "pw", "tableName": "events",
                   "schemaName": "public", "poolSize": 4, "retentionDays": 90,
                   "createTableIfNotExists": false}),
            Dialect::Postgres,
        )
        .unwrap();
        assert_eq!(c.schema.as_deref(), Some("public"));
        assert_eq!(c.retention_days, Some(90));
        assert!(!c.create_table);
        assert_eq!(c.network().unwrap().pool_size, 4);
        let errs = errors(
            json!({"type": "postgresql", "host": "h", "table": "a", "tableName": "b"}),
            Dialect::Postgres,
        );
        assert!(has(&errs, "d.tableName", "same option as 'table'"), "{errs:?}");
    }

    #[test]
    fn tls_modes_parse_and_bad_ones_are_listed() {
        for (name, mode) in [
            ("disable", TlsMode::Disable),
            ("prefer", TlsMode::Prefer),
            ("require", TlsMode::Require),
            ("verify-ca", TlsMode::VerifyCa),
            ("VERIFY-FULL", TlsMode::VerifyFull),
        ] {
            let c = parse(
                json!({"type": "mysql", "host": "h", "table": "t", "tls_mode": name, "tls_ca_file": "/etc/ca.pem"}),
                Dialect::MySql,
            )
            .unwrap();
            assert_eq!(c.network().unwrap().tls_mode, Some(mode));
        }
        let errs = errors(
            json!({"type": "mysql", "host": "h", "table": "t", "tls_mode": "sometimes", "tls_ca_file": "ca.pem"}),
            Dialect::MySql,
        );
        assert!(has(&errs, "d.tls_mode", "must be one of disable, prefer, require"), "{errs:?}");
        assert!(has(&errs, "d.tls_ca_file", "absolute"), "{errs:?}");
    }

    #[test]
    fn missing_connection_and_table_are_reported() {
        let errs = errors(json!({"type": "postgresql"}), Dialect::Postgres);
        assert!(has(&errs, "d.connection_string", "is required"), "{errs:?}");
        assert!(has(&errs, "d.table", "is required"), "{errs:?}");
        let errs = errors(json!({"type": "sqlite"}), Dialect::Sqlite);
        assert!(has(&errs, "d.path", "is required"), "{errs:?}");
    }

    #[test]
    fn connection_string_is_checked_without_echoing_it() {
        let errs = errors(
            json!({"type": "postgresql", "connection_string": "mysql://u:hunter2@h/db", "table": "t"}),
            Dialect::Postgres,
        );
        assert!(has(&errs, "d.connection_string", "postgres:// URL"), "{errs:?}");
        assert!(errs.iter().all(|(_, m)| !m.contains("hunter2")));
    }

    #[test]
    fn bad_static_table_and_schema_are_refused() {
        let errs = errors(
            json!({"type": "postgresql", "host": "h", "table": "x; DROP TABLE y", "schema": "a-b"}),
            Dialect::Postgres,
        );
        assert!(has(&errs, "d.table", "not a valid SQL identifier"), "{errs:?}");
        assert!(has(&errs, "d.schema", "not a valid SQL identifier"), "{errs:?}");
        let errs = errors(
            json!({"type": "postgresql", "host": "h", "table": "t_{{task_name"}),
            Dialect::Postgres,
        );
        assert!(has(&errs, "d.table", "invalid template"), "{errs:?}");
    }

    #[test]
    fn columns_parse_templates_and_pointers() {
        let c = parse(
            json!({"type": "sqlite", "path": "/tmp/x.db", "table": "t",
                   "columns": {"job": "{{job_uuid}}", "user_id": "/user/id",
                               "lit": {"template": "/not/a/pointer"}, "all": {"pointer": ""}}}),
            Dialect::Sqlite,
        )
        .unwrap();
        let cols = c.columns.unwrap();
        assert_eq!(cols.len(), 4);
        assert!(matches!(&cols[1].1, ColumnSource::Pointer(p) if p == "/user/id"));
        assert!(matches!(&cols[2].1, ColumnSource::Template(_)));
        assert!(matches!(&cols[3].1, ColumnSource::Pointer(p) if p.is_empty()));
    }

    #[test]
    fn bad_columns_are_reported_at_their_path() {
        let errs = errors(
            json!({"type": "sqlite", "path": "/tmp/x.db", "table": "t",
                   "columns": {"bad name": "x", "delivery_id": "x", "n": 3, "t": "{{oops"}}),
            Dialect::Sqlite,
        );
        assert!(has(&errs, "d.columns.bad name", "not a valid SQL identifier"), "{errs:?}");
        assert!(has(&errs, "d.columns.delivery_id", "reserved"), "{errs:?}");
        assert!(has(&errs, "d.columns.n", "must be a template or JSON pointer"), "{errs:?}");
        assert!(has(&errs, "d.columns.t", "invalid template"), "{errs:?}");
        let errs = errors(
            json!({"type": "sqlite", "path": "/tmp/x.db", "table": "t", "columns": {}}),
            Dialect::Sqlite,
        );
        assert!(has(&errs, "d.columns", "must not be empty"), "{errs:?}");
    }

    #[test]
    fn numbers_and_unknown_keys_are_checked() {
        let errs = errors(
            json!({"type": "mysql", "host": "h", "table": "t", "pool_size": 0, "retention_days": -1,
                   "batch_size": 20000, "timeout_seconds": 0, "tabel": "x", "schema": "s"}),
            Dialect::MySql,
        );
        assert!(has(&errs, "d.pool_size", "integer from 1"), "{errs:?}");
        assert!(has(&errs, "d.retention_days", "integer from 1"), "{errs:?}");
        assert!(has(&errs, "d.batch_size", "integer from 1 to 10000"), "{errs:?}");
        assert!(has(&errs, "d.timeout_seconds", "greater than 0"), "{errs:?}");
        assert!(has(&errs, "d.tabel", "did you mean 'table'"), "{errs:?}");
        // `schema` is PostgreSQL's; MySQL qualifies with database.table.
        assert!(has(&errs, "d.schema", "unknown key"), "{errs:?}");
    }

    #[test]
    fn sqlite_paths_and_connection_strings() {
        let c = parse(
            json!({"type": "sqlite", "connection_string": "sqlite:///var/lib/o.db?mode=rwc", "table": "t"}),
            Dialect::Sqlite,
        )
        .unwrap();
        assert!(
            matches!(c.connection, Connection::File(ref p) if p == &PathBuf::from("/var/lib/o.db"))
        );
        let errs =
            errors(json!({"type": "sqlite", "path": "rel.db", "table": "t"}), Dialect::Sqlite);
        assert!(has(&errs, "d.path", "not absolute"), "{errs:?}");
        let errs = errors(
            json!({"type": "sqlite", "connection_string": "sqlite://rel.db", "table": "t"}),
            Dialect::Sqlite,
        );
        assert!(has(&errs, "d.connection_string", "sqlite:///absolute"), "{errs:?}");
        let errs = errors(
            json!({"type": "sqlite", "path": "/a.db", "table": "t", "host": "h"}),
            Dialect::Sqlite,
        );
        assert!(has(&errs, "d.host", "unknown key"), "{errs:?}");
    }
}
