//! Connections: one writer thread doing group commit, and a small pool of readers.
//!
//! Every write is a closure sent to the writer thread. The thread takes every request that
//! is waiting (up to [`MAX_BATCH`]) and runs them in one transaction, each inside its own
//! savepoint so that a request that fails (a conflict, a missing job) rolls back alone.
//! Callers are answered only after `COMMIT` returned, so with `synchronous = FULL` an `Ok`
//! means the change is on disk, and a burst of concurrent submits shares one fsync.

use std::path::Path;
use std::sync::mpsc::{Receiver, Sender, TryRecvError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};
use tokio::sync::{Semaphore, oneshot};

use super::dup_error;
use crate::{StoreError, StoreResult};

/// The most requests one transaction carries; bounds the latency a large burst adds to the
/// first request in it.
pub(super) const MAX_BATCH: usize = 256;

/// How long a connection waits for another process's lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs after the batch's `COMMIT` (or its failure) to answer the caller.
type Finisher = Box<dyn FnOnce(Result<(), &StoreError>) + Send>;

/// A write request as the writer thread sees it.
pub(super) trait WriteOp: Send {
    /// Runs the request inside a savepoint; returns how to answer it once the batch is
    /// committed, and a copy of its error when it failed.
    fn run(self: Box<Self>, conn: &Connection) -> (Finisher, Option<StoreError>);
    /// Answers the request with an error without running it.
    fn fail(self: Box<Self>, err: StoreError);
}

/// A closure and the channel its result goes back on.
pub(super) struct Op<F, T> {
    pub(super) f: F,
    pub(super) reply: oneshot::Sender<StoreResult<T>>,
}

impl<F, T> WriteOp for Op<F, T>
where
    F: FnOnce(&Connection) -> StoreResult<T> + Send,
    T: Send + 'static,
{
    fn run(self: Box<Self>, conn: &Connection) -> (Finisher, Option<StoreError>) {
        let Op { f, reply } = *self;
        let result = in_savepoint(conn, f);
        let failed = result.as_ref().err().map(dup_error);
        let finisher: Finisher = Box::new(move |commit| {
            // A request that failed by itself reports its own error; one that succeeded
            // reports the commit's outcome, since its changes live or die with the batch.
            let answer = match (result, commit) {
                (Ok(_), Err(e)) => Err(dup_error(e)),
                (result, _) => result,
            };
            let _ = reply.send(answer);
        });
        (finisher, failed)
    }

    fn fail(self: Box<Self>, err: StoreError) {
        let _ = self.reply.send(Err(err));
    }
}

fn in_savepoint<T>(
    conn: &Connection,
    f: impl FnOnce(&Connection) -> StoreResult<T>,
) -> StoreResult<T> {
    conn.execute_batch("SAVEPOINT op")?;
    let result = f(conn);
    if conn.is_autocommit() {
        // SQLite already rolled the whole transaction back (disk full, I/O error); the
        // batch loop notices and answers the batch.
        return result;
    }
    match result {
        Ok(v) => {
            conn.execute_batch("RELEASE op")?;
            Ok(v)
        }
        Err(e) => {
            conn.execute_batch("ROLLBACK TO op; RELEASE op")?;
            Err(e)
        }
    }
}

/// Opens a connection with the pragmas every connection needs.
pub(super) fn open_connection(path: &Path, writer: bool) -> StoreResult<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX
        | OpenFlags::SQLITE_OPEN_URI;
    let conn = Connection::open_with_flags(path, flags).map_err(|e| {
        StoreError::Backend(format!("cannot open the database {}: {e}", path.display()))
    })?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.set_prepared_statement_cache_capacity(64);
    if writer {
        let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Backend(format!(
                "the database {} cannot use WAL mode (journal_mode is {mode}); put the data \
                 directory on a local filesystem",
                path.display()
            )));
        }
        // FULL fsyncs the WAL at every commit: an acknowledged write survives power loss.
        conn.pragma_update(None, "synchronous", "FULL")?;
        // Query planner stability: plan each cached statement once, from its SQL alone.
        // Without it SQLite (3.5x) marks statements whose plan *might* depend on a bound
        // value (LIMIT ?, values compared against partial-index conditions) and re-prepares
        // them whenever that value changes — which for `WHERE id = ?` and the claims'
        // `LIMIT ?` means on nearly every call: a profile of `outflow bench webhook` showed
        // over one re-prepare per job, ~12% of the writer thread, the one thread every
        // commit waits for. The writer's statements either look rows up by key or name
        // their index (INDEXED BY), so value-specific planning gains them nothing.
        conn.set_db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.pragma_update(None, "temp_store", "MEMORY")?;
        // Checkpoints leave the WAL file at this size at most instead of its high-water mark.
        conn.pragma_update(None, "journal_size_limit", 64 * 1024 * 1024)?;
    } else {
        conn.pragma_update(None, "query_only", "ON")?;
    }
    Ok(conn)
}

/// The writer thread's loop: batch, run, commit, answer.
pub(super) fn run_writer(conn: Connection, requests: Receiver<Box<dyn WriteOp>>) {
    while let Ok(first) = requests.recv() {
        let mut batch = Vec::with_capacity(16);
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match requests.try_recv() {
                Ok(op) => batch.push(op),
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
            }
        }
        run_batch(&conn, batch);
    }
}

fn run_batch(conn: &Connection, batch: Vec<Box<dyn WriteOp>>) {
    let mut done: Vec<Finisher> = Vec::with_capacity(batch.len());
    let mut in_tx = false;
    for op in batch {
        if !in_tx {
            // IMMEDIATE: take the write lock up front, so another process's writer makes us
            // wait (busy_timeout) instead of failing half-way with SQLITE_BUSY.
            if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
                op.fail(e.into());
                continue;
            }
            in_tx = true;
        }
        let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| op.run(conn)));
        let (finisher, failed) = match ran {
            Ok(r) => r,
            Err(_) => {
                // A bug in one request must not take the store down: undo what it did
                // (its caller sees its reply channel dropped) and go on with the batch.
                tracing::error!("a store write request panicked; rolled back");
                if !conn.is_autocommit() {
                    let _ = conn.execute_batch("ROLLBACK TO op; RELEASE op");
                }
                if conn.is_autocommit() {
                    let err = StoreError::Backend("the write transaction was rolled back".into());
                    for f in done.drain(..) {
                        f(Err(&err));
                    }
                    in_tx = false;
                }
                continue;
            }
        };
        if conn.is_autocommit() {
            // The transaction is gone: everything batched so far was rolled back with it.
            let err = failed.unwrap_or_else(|| {
                StoreError::Backend("the write transaction was rolled back".into())
            });
            for f in done.drain(..) {
                f(Err(&err));
            }
            finisher(Err(&err));
            in_tx = false;
            continue;
        }
        done.push(finisher);
    }
    if !in_tx {
        return;
    }
    match conn.execute_batch("COMMIT") {
        Ok(()) => {
            for f in done {
                f(Ok(()));
            }
        }
        Err(e) => {
            let err: StoreError = e.into();
            tracing::error!(error = %err, "store commit failed");
            if !conn.is_autocommit() {
                let _ = conn.execute_batch("ROLLBACK");
            }
            for f in done {
                f(Err(&err));
            }
        }
    }
}

/// The writer's request queue.
pub(super) struct Writer {
    pub(super) requests: Mutex<Option<Sender<Box<dyn WriteOp>>>>,
    pub(super) thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Writer {
    /// Queues a request; fails when the writer has stopped.
    pub(super) fn submit(&self, op: Box<dyn WriteOp>) {
        let guard = self.requests.lock().unwrap_or_else(|p| p.into_inner());
        match guard.as_ref() {
            Some(tx) => {
                if let Err(std::sync::mpsc::SendError(op)) = tx.send(op) {
                    op.fail(stopped());
                }
            }
            None => op.fail(stopped()),
        }
    }

    /// Stops taking requests and waits for the writer to finish the queued ones.
    pub(super) fn shutdown(&self) {
        self.requests.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(handle) = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = handle.join();
        }
    }
}

fn stopped() -> StoreError {
    StoreError::Backend("the store is closed".into())
}

/// Read-only connections, handed out one per blocking task.
pub(super) struct Readers {
    path: std::path::PathBuf,
    idle: Mutex<Vec<Connection>>,
    permits: Arc<Semaphore>,
}

impl Readers {
    /// A pool of `size` readers on `path`.
    pub(super) fn new(path: &Path, size: usize) -> StoreResult<Readers> {
        let idle = (0..size).map(|_| open_connection(path, false)).collect::<StoreResult<_>>()?;
        Ok(Readers {
            path: path.to_path_buf(),
            idle: Mutex::new(idle),
            permits: Arc::new(Semaphore::new(size)),
        })
    }

    /// Runs `f` on a reader in one read transaction (a consistent snapshot), off the async
    /// runtime.
    pub(super) async fn read<T, F>(self: &Arc<Self>, f: F) -> StoreResult<T>
    where
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
        T: Send + 'static,
    {
        let permit = self.permits.clone().acquire_owned().await.map_err(|_| stopped())?;
        let pool = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let conn = pool.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
            // A reader lost to a panic is replaced rather than shrinking the pool.
            let conn = match conn {
                Some(c) => c,
                None => open_connection(&pool.path, false)?,
            };
            let result = (|| {
                let tx = conn.unchecked_transaction()?;
                let v = f(&tx)?;
                tx.commit()?;
                Ok(v)
            })();
            pool.idle.lock().unwrap_or_else(|p| p.into_inner()).push(conn);
            result
        })
        .await
        .map_err(|e| StoreError::Backend(format!("a store read task failed: {e}")))?
    }
}
