//! The schema, as numbered migrations embedded in the binary.
//!
//! The applied version lives in `PRAGMA user_version` (in the database header, so it is
//! part of the same transaction as the DDL that it describes). Migrations only ever get
//! appended: an old database is brought forward at open, and a database written by a newer
//! Outflow is refused rather than misread.

use rusqlite::Connection;

use crate::{StoreError, StoreResult};

/// The migrations, in order; migration `i` brings the schema to version `i + 1`.
const MIGRATIONS: &[&str] = &[
    // 1: jobs, outputs, deliveries, attempts, tasks.
    r#"
CREATE TABLE tasks (
    id          INTEGER PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    version     TEXT,
    definition  TEXT NOT NULL,
    updated_at  INTEGER NOT NULL
);

CREATE TABLE jobs (
    id                  INTEGER PRIMARY KEY AUTOINCREMENT,
    uuid                TEXT NOT NULL UNIQUE,
    client_job_id       TEXT UNIQUE,
    task_id             INTEGER,
    task_name           TEXT,
    task_version        TEXT,
    priority            INTEGER NOT NULL,
    status              TEXT NOT NULL,
    progress            INTEGER,
    error               TEXT,
    input_data          TEXT NOT NULL,
    metadata            TEXT NOT NULL,
    output_destinations TEXT NOT NULL,
    destinations        TEXT NOT NULL,
    executable          INTEGER NOT NULL,
    queued_at           INTEGER NOT NULL,
    started_at          INTEGER,
    finished_at         INTEGER,
    updated_at          INTEGER NOT NULL,
    output_version      INTEGER,
    log                 TEXT,
    lease_owner         TEXT,
    lease_until         INTEGER
);
-- The executor's queue: partial indexes keep claiming cheap however many jobs are done.
CREATE INDEX jobs_queue ON jobs (priority DESC, id) WHERE executable = 1 AND status = 'queued';
CREATE INDEX jobs_leases ON jobs (lease_until) WHERE executable = 1 AND status = 'running';
CREATE INDEX jobs_status ON jobs (status, id);
CREATE INDEX jobs_task_name ON jobs (task_name, id);
CREATE INDEX jobs_queued_at ON jobs (queued_at);
CREATE INDEX jobs_updated_at ON jobs (updated_at, id);

CREATE TABLE outputs (
    job_id        INTEGER NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    version       INTEGER NOT NULL,
    kind          TEXT NOT NULL,
    content_type  TEXT NOT NULL,
    size          INTEGER NOT NULL,
    sha256        TEXT NOT NULL,
    created_at    INTEGER NOT NULL,
    body          BLOB NOT NULL,
    PRIMARY KEY (job_id, version)
);

CREATE TABLE deliveries (
    id                TEXT PRIMARY KEY,
    job_id            INTEGER NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    output_version    INTEGER NOT NULL,
    destination_name  TEXT NOT NULL,
    destination_type  TEXT NOT NULL,
    destination       TEXT NOT NULL,
    destination_key   TEXT NOT NULL,
    state             TEXT NOT NULL,
    attempts          INTEGER NOT NULL DEFAULT 0,
    next_attempt_at   INTEGER,
    last_error        TEXT,
    last_status_code  INTEGER,
    created_at        INTEGER NOT NULL,
    updated_at        INTEGER NOT NULL,
    delivered_at      INTEGER,
    lease_owner       TEXT,
    lease_until       INTEGER,
    FOREIGN KEY (job_id, output_version) REFERENCES outputs (job_id, version) ON DELETE CASCADE
) WITHOUT ROWID;
-- The delivery queue: due work, and work whose worker's lease ran out.
-- destination_key is in them so that skipping saturated keys reads only the index.
CREATE INDEX deliveries_due ON deliveries (next_attempt_at, destination_key)
    WHERE state IN ('pending', 'scheduled');
CREATE INDEX deliveries_leases ON deliveries (lease_until, destination_key)
    WHERE state = 'in_flight';
CREATE INDEX deliveries_job ON deliveries (job_id, output_version);
CREATE INDEX deliveries_state ON deliveries (state, created_at);
CREATE INDEX deliveries_created ON deliveries (created_at);

CREATE TABLE attempts (
    delivery_id       TEXT NOT NULL REFERENCES deliveries (id) ON DELETE CASCADE,
    number            INTEGER NOT NULL,
    started_at        INTEGER NOT NULL,
    duration_ms       INTEGER NOT NULL,
    status_code       INTEGER,
    error             TEXT,
    failure_class     TEXT,
    response_excerpt  TEXT,
    next_retry_in_ms  INTEGER,
    PRIMARY KEY (delivery_id, number)
) WITHOUT ROWID;
"#,
];

/// The schema version this build writes and understands.
pub const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

/// The schema version recorded in the database.
pub(super) fn applied_version(conn: &Connection) -> StoreResult<u32> {
    let v: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    Ok(v as u32)
}

/// Brings the schema to [`SCHEMA_VERSION`] in one transaction; refuses a newer database.
pub(super) fn migrate(conn: &mut Connection, path: &str) -> StoreResult<u32> {
    // IMMEDIATE takes the write lock before reading the version, so two processes opening
    // the same fresh database cannot both run migration 1.
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let current = applied_version(&tx)?;
    if current > SCHEMA_VERSION {
        return Err(StoreError::Backend(format!(
            "the database {path} has schema version {current}, newer than this Outflow \
             understands (version {SCHEMA_VERSION}); upgrade Outflow or point storage.path \
             at another data directory"
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        tx.execute_batch(sql).map_err(|e| {
            StoreError::Backend(format!("migration {} of {path} failed: {e}", i + 1))
        })?;
    }
    if current < SCHEMA_VERSION {
        tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
        tracing::info!(path, from = current, to = SCHEMA_VERSION, "store schema migrated");
    }
    tx.commit()?;
    Ok(SCHEMA_VERSION)
}
