//! The embedded store on SQLite: WAL, versioned migrations, group commit, leases.
//!
//! One file, `outflow.db`, in the data directory. Writes go to a single writer thread that
//! commits whatever requests are waiting in one transaction (group commit: one fsync for a
//! burst of submits) and answers each caller only after the commit; reads run on a small
//! pool of read-only connections, which in WAL mode never wait for the writer. Every write
//! takes the database write lock with `BEGIN IMMEDIATE`, so several processes may share the
//! file: claims are single transactions and leases expire, as the [`Store`] contract asks.

mod conn;
mod deliveries;
mod jobs;
mod migrations;
mod rows;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use outflow_core::attempt::AttemptRecord;
use outflow_core::delivery::Delivery;
use outflow_core::job::{Job, OutputMeta};
use rusqlite::{Connection, ErrorCode};
use tokio::sync::oneshot;

pub use migrations::SCHEMA_VERSION;

use crate::{
    AttemptResult, ClaimedDelivery, DeliveryQuery, FinishJob, JobQuery, JobRef, NewJob, Page,
    StatusUpdate, Store, StoreError, StoreResult, StoreStats, TaskDef, TaskRecord,
};

/// The database file's name inside the data directory.
pub const DB_FILE: &str = "outflow.db";

/// How many read-only connections serve reads concurrently.
const READERS: usize = 4;

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> StoreError {
        match &e {
            rusqlite::Error::SqliteFailure(f, _) if f.code == ErrorCode::DiskFull => {
                StoreError::Full(e.to_string())
            }
            _ => StoreError::Backend(e.to_string()),
        }
    }
}

/// A copy of an error, for answering every request of a failed batch.
pub(crate) fn dup_error(e: &StoreError) -> StoreError {
    match e {
        StoreError::NotFound(m) => StoreError::NotFound(m.clone()),
        StoreError::Conflict { message, current_status } => {
            StoreError::Conflict { message: message.clone(), current_status: *current_status }
        }
        StoreError::Full(m) => StoreError::Full(m.clone()),
        StoreError::Backend(m) => StoreError::Backend(m.clone()),
    }
}

struct Inner {
    path: PathBuf,
    writer: conn::Writer,
    readers: Arc<conn::Readers>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Requests already queued are committed and answered before the thread exits.
        self.writer.shutdown();
    }
}

/// The embedded SQLite store. Cheap to clone: clones share the writer and the readers.
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore").field("path", &self.inner.path).finish()
    }
}

impl SqliteStore {
    /// Opens (creating if needed) `outflow.db` under `data_dir` and applies migrations;
    /// refuses a database written by a newer Outflow.
    pub async fn open(data_dir: &Path) -> StoreResult<SqliteStore> {
        let dir = data_dir.to_path_buf();
        tokio::task::spawn_blocking(move || SqliteStore::open_blocking(&dir))
            .await
            .map_err(|e| StoreError::Backend(format!("opening the store failed: {e}")))?
    }

    fn open_blocking(dir: &Path) -> StoreResult<SqliteStore> {
        std::fs::create_dir_all(dir).map_err(|e| {
            StoreError::Backend(format!("cannot create the data directory {}: {e}", dir.display()))
        })?;
        let path = dir.join(DB_FILE);
        let mut writer = conn::open_connection(&path, true)?;
        migrations::migrate(&mut writer, &path.display().to_string())?;
        let readers = Arc::new(conn::Readers::new(&path, READERS)?);
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("outflow-store-writer".into())
            .spawn(move || conn::run_writer(writer, rx))
            .map_err(|e| StoreError::Backend(format!("cannot start the store writer: {e}")))?;
        Ok(SqliteStore {
            inner: Arc::new(Inner {
                path,
                writer: conn::Writer {
                    requests: Mutex::new(Some(tx)),
                    thread: Mutex::new(Some(thread)),
                },
                readers,
            }),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The schema version recorded in the database (for `/readyz`).
    pub async fn schema_version(&self) -> StoreResult<u32> {
        self.read(migrations::applied_version).await
    }

    /// Whether the database carries exactly the schema this build knows (for `/readyz`).
    pub async fn migrations_applied(&self) -> StoreResult<bool> {
        Ok(self.schema_version().await? == SCHEMA_VERSION)
    }

    /// Stops the writer after the queued writes are committed. Further calls fail with
    /// "the store is closed"; reads keep working until the last clone is dropped.
    pub fn close(&self) {
        self.inner.writer.shutdown();
    }

    /// Caps the database at `pages` pages on the writer connection, so tests can reach the
    /// "disk full" paths without filling a disk. Not for production use.
    #[doc(hidden)]
    pub async fn limit_pages_for_tests(&self, pages: u64) -> StoreResult<()> {
        self.write(move |c| {
            c.pragma_update(None, "max_page_count", pages as i64)?;
            Ok(())
        })
        .await
    }

    /// Runs `f` on the writer in the next group-commit batch; returns once it committed.
    async fn write<T, F>(&self, f: F) -> StoreResult<T>
    where
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
        T: Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        self.inner.writer.submit(Box::new(conn::Op { f, reply }));
        answer
            .await
            .map_err(|_| StoreError::Backend("the store writer stopped before answering".into()))?
    }

    /// Runs `f` on a reader, in one read transaction.
    async fn read<T, F>(&self, f: F) -> StoreResult<T>
    where
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
        T: Send + 'static,
    {
        self.inner.readers.read(f).await
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn ping(&self) -> StoreResult<()> {
        // Ready means reachable *and* on the schema this build writes.
        let version = self.schema_version().await?;
        if version != SCHEMA_VERSION {
            return Err(StoreError::Backend(format!(
                "the database {} is at schema version {version}, this Outflow needs \
                 {SCHEMA_VERSION}",
                self.inner.path.display()
            )));
        }
        Ok(())
    }

    async fn sync_tasks(&self, tasks: &[TaskDef]) -> StoreResult<Vec<TaskRecord>> {
        let tasks = tasks.to_vec();
        self.write(move |c| jobs::sync_tasks(c, &tasks)).await
    }

    async fn list_tasks(&self) -> StoreResult<Vec<TaskRecord>> {
        self.read(jobs::list_tasks).await
    }

    async fn create_job(&self, job: NewJob) -> StoreResult<(Job, bool)> {
        self.write(move |c| jobs::create(c, job)).await
    }

    async fn get_job(&self, job: JobRef) -> StoreResult<Job> {
        self.read(move |c| jobs::load(c, job)).await
    }

    async fn list_jobs(&self, query: &JobQuery) -> StoreResult<Page<Job>> {
        let query = query.clone();
        self.read(move |c| jobs::list(c, &query)).await
    }

    async fn update_status(&self, job: JobRef, update: StatusUpdate) -> StoreResult<Job> {
        self.write(move |c| jobs::update_status(c, job, update)).await
    }

    async fn finish_job(
        &self,
        job: JobRef,
        finish: FinishJob,
    ) -> StoreResult<(Job, Option<OutputMeta>)> {
        self.write(move |c| jobs::finish(c, job, finish)).await
    }

    async fn cancel_job(&self, job: JobRef) -> StoreResult<Job> {
        self.write(move |c| jobs::cancel(c, job)).await
    }

    async fn delete_job(&self, job: JobRef, force: bool) -> StoreResult<()> {
        self.write(move |c| jobs::delete(c, job, force)).await
    }

    async fn get_output(
        &self,
        job: JobRef,
        version: Option<u32>,
    ) -> StoreResult<(OutputMeta, Bytes)> {
        self.read(move |c| jobs::output(c, job, version)).await
    }

    async fn claim_jobs(
        &self,
        owner: &str,
        limit: usize,
        lease: Duration,
    ) -> StoreResult<Vec<Job>> {
        let owner = owner.to_owned();
        self.write(move |c| jobs::claim(c, &owner, limit, lease)).await
    }

    async fn renew_job_leases(
        &self,
        owner: &str,
        jobs: &[i64],
        lease: Duration,
    ) -> StoreResult<Vec<i64>> {
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        let owner = owner.to_owned();
        let ids = jobs.to_vec();
        self.write(move |c| jobs::renew_leases(c, &owner, &ids, lease)).await
    }

    async fn claim_deliveries(
        &self,
        owner: &str,
        limit: usize,
        lease: Duration,
        skip_keys: &[String],
    ) -> StoreResult<Vec<ClaimedDelivery>> {
        let owner = owner.to_owned();
        let skip = skip_keys.to_vec();
        self.write(move |c| deliveries::claim(c, &owner, limit, lease, &skip)).await
    }

    async fn complete_attempts(
        &self,
        owner: &str,
        results: Vec<AttemptResult>,
    ) -> StoreResult<usize> {
        if results.is_empty() {
            return Ok(0);
        }
        let owner = owner.to_owned();
        self.write(move |c| deliveries::complete(c, &owner, results)).await
    }

    async fn release_deliveries(&self, owner: &str, ids: &[String]) -> StoreResult<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let owner = owner.to_owned();
        let ids = ids.to_vec();
        self.write(move |c| deliveries::release(c, &owner, &ids)).await
    }

    async fn next_due_at(&self) -> StoreResult<Option<DateTime<Utc>>> {
        self.read(deliveries::next_due_at).await
    }

    async fn get_delivery(&self, id: &str) -> StoreResult<Delivery> {
        let id = id.to_owned();
        self.read(move |c| deliveries::load(c, &id)).await
    }

    async fn list_attempts(&self, delivery_id: &str) -> StoreResult<Vec<AttemptRecord>> {
        let id = delivery_id.to_owned();
        self.read(move |c| deliveries::list_attempts(c, &id)).await
    }

    async fn list_deliveries(&self, query: &DeliveryQuery) -> StoreResult<Page<Delivery>> {
        let query = query.clone();
        self.read(move |c| deliveries::list(c, &query)).await
    }

    async fn job_deliveries(
        &self,
        job: JobRef,
    ) -> StoreResult<Vec<(Delivery, Vec<AttemptRecord>)>> {
        self.read(move |c| deliveries::of_job(c, job)).await
    }

    async fn retry_delivery(&self, id: &str) -> StoreResult<Delivery> {
        let id = id.to_owned();
        self.write(move |c| deliveries::retry(c, &id)).await
    }

    async fn replay_dead(&self, filter: &DeliveryQuery) -> StoreResult<u64> {
        let filter = filter.clone();
        self.write(move |c| deliveries::replay_dead(c, &filter)).await
    }

    async fn purge_dead(&self, filter: &DeliveryQuery) -> StoreResult<u64> {
        let filter = filter.clone();
        self.write(move |c| deliveries::purge_dead(c, &filter)).await
    }

    async fn stats(&self) -> StoreResult<StoreStats> {
        self.read(deliveries::stats).await
    }
}
