//! The store suite on SQLite files in temp directories, plus what only SQLite has:
//! reopening the file, schema versions.

mod suite;

use std::sync::Arc;

use outflow_core::job::JobStatus;
use outflow_store::sqlite::{DB_FILE, SCHEMA_VERSION};
use outflow_store::{FinishJob, JobRef, SqliteStore, Store, StoreError};
use tempfile::TempDir;

async fn fresh() -> (TempDir, suite::DynStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).await.unwrap();
    (dir, Arc::new(store))
}

macro_rules! suite_tests {
    ($($name:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let (_dir, store) = fresh().await;
            suite::$name(store).await;
        }
    )*};
}

suite_tests!(
    create_and_get,
    client_job_id_is_idempotent,
    list_filters_sort_and_paging,
    status_transitions,
    finish_job_versions_and_deliveries,
    cancel_and_delete,
    claim_jobs_order_and_leases,
    claim_jobs_no_double_claim,
    finishing_a_job_needs_its_lease,
    claim_deliveries_due_skip_and_leases,
    claim_deliveries_oldest_due_first,
    complete_attempts_outcomes,
    stolen_lease_is_ignored,
    result_of_an_older_claim_by_the_same_owner_is_ignored,
    an_attempt_record_is_never_replaced,
    release_and_next_due,
    retry_replay_purge,
    delivered_cannot_be_retried,
    job_deliveries_with_attempts,
    stats_count_everything,
    tasks_keep_their_ids,
    concurrent_creates,
    failing_request_does_not_fail_its_batch,
);

#[tokio::test]
async fn data_survives_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("nested/data")).await.unwrap();
    assert!(dir.path().join("nested/data").join(DB_FILE).is_file());
    let (job, _) = store.create_job(suite::new_job()).await.unwrap();
    let d = suite::new_delivery("a.example");
    let finish = FinishJob {
        status: Some(JobStatus::Succeeded),
        error: None,
        log: None,
        output: Some(suite::json_output("{\"ok\":true}")),
        deliveries: vec![d.clone()],
        lease_owner: None,
    };
    store.finish_job(JobRef::Id(job.id), finish).await.unwrap();
    let before = store.get_job(JobRef::Id(job.id)).await.unwrap();
    drop(store);

    let store = SqliteStore::open(&dir.path().join("nested/data")).await.unwrap();
    assert!(store.migrations_applied().await.unwrap());
    assert_eq!(store.get_job(JobRef::Uuid(job.uuid)).await.unwrap(), before);
    let (meta, body) = store.get_output(JobRef::Id(job.id), None).await.unwrap();
    assert_eq!((meta.version, &body[..]), (1, &b"{\"ok\":true}"[..]));
    let claimed = store.claim_deliveries("w", 10, std::time::Duration::from_secs(5), &[]).await;
    assert_eq!(claimed.unwrap()[0].delivery.id, d.id);
    // Ids keep growing after a restart (AUTOINCREMENT never reuses one).
    let (next, _) = store.create_job(suite::new_job()).await.unwrap();
    assert!(next.id > job.id);
}

#[tokio::test]
async fn schema_version_is_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).await.unwrap();
    assert_eq!(store.schema_version().await.unwrap(), SCHEMA_VERSION);
    assert!(store.migrations_applied().await.unwrap());
    store.ping().await.unwrap();
    drop(store);
    let conn = rusqlite::Connection::open(dir.path().join(DB_FILE)).unwrap();
    let mode: String = conn.query_row("PRAGMA journal_mode", [], |r| r.get(0)).unwrap();
    assert_eq!(mode, "wal");
}

#[tokio::test]
async fn newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    drop(SqliteStore::open(dir.path()).await.unwrap());
    let path = dir.path().join(DB_FILE);
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1).unwrap();
    drop(conn);
    let err = SqliteStore::open(dir.path()).await.unwrap_err();
    let StoreError::Backend(message) = err else { panic!("expected a backend error: {err:?}") };
    assert_eq!(
        message,
        format!(
            "the database {} has schema version {}, newer than this Outflow understands \
             (version {SCHEMA_VERSION}); upgrade Outflow or point storage.path at another data \
             directory",
            path.display(),
            SCHEMA_VERSION + 1
        )
    );
}

#[tokio::test]
async fn closed_store_refuses_writes() {
    let (_dir, store) = fresh().await;
    let sqlite = SqliteStore::open(_dir.path()).await.unwrap();
    sqlite.close();
    let err = sqlite.create_job(suite::new_job()).await.unwrap_err();
    assert_eq!(err.to_string(), "store error: the store is closed");
    // The other store on the same file is unaffected.
    store.create_job(suite::new_job()).await.unwrap();
    // Two stores on one file see each other's commits.
    assert_eq!(sqlite.list_jobs(&Default::default()).await.unwrap().total, 1);
}

#[tokio::test]
async fn unwritable_data_dir_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"x").unwrap();
    let err = SqliteStore::open(&file.join("data")).await.unwrap_err();
    let message = err.to_string();
    assert!(
        message.starts_with(&format!(
            "store error: cannot create the data directory {}: ",
            file.join("data").display()
        )),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_disk_is_reported_and_nothing_unacknowledged_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).await.unwrap();
    store.create_job(suite::new_job()).await.unwrap();
    let conn = rusqlite::Connection::open(dir.path().join(DB_FILE)).unwrap();
    let pages: i64 = conn.query_row("PRAGMA page_count", [], |r| r.get(0)).unwrap();
    store.limit_pages_for_tests(pages as u64 + 2).await.unwrap();

    // One request too big for the space left, among small ones in the same batches.
    let big = outflow_store::NewJob {
        input_data: serde_json::Value::String("x".repeat(1 << 20)),
        ..suite::new_job()
    };
    let err = store.create_job(big.clone()).await.unwrap_err();
    let StoreError::Full(message) = err else { panic!("expected Full: {err:?}") };
    assert!(message.contains("full"), "{message}");

    let mut tasks = Vec::new();
    for i in 0..30 {
        let s = store.clone();
        let job = if i == 10 { big.clone() } else { suite::new_job() };
        tasks.push(tokio::spawn(async move { s.create_job(job).await.map(|(j, _)| j.uuid) }));
    }
    let mut acknowledged = vec![];
    for t in tasks {
        match t.await.unwrap() {
            Ok(uuid) => acknowledged.push(uuid),
            Err(StoreError::Full(_)) => {}
            Err(e) => panic!("unexpected {e:?}"),
        }
    }
    assert!(acknowledged.len() < 30, "the big one cannot fit");
    store.limit_pages_for_tests(1 << 30).await.unwrap();
    store.create_job(big).await.unwrap();
    // Exactly the acknowledged jobs (+ the first and the big one) exist.
    let all = store.list_jobs(&Default::default()).await.unwrap();
    assert_eq!(all.total as usize, acknowledged.len() + 2);
    for uuid in acknowledged {
        store.get_job(JobRef::Uuid(uuid)).await.unwrap();
    }
}

/// Two stores on one file stand for two processes: their claims never overlap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_stores_on_one_file_never_claim_the_same_work() {
    let dir = tempfile::tempdir().unwrap();
    let a = SqliteStore::open(dir.path()).await.unwrap();
    let b = SqliteStore::open(dir.path()).await.unwrap();
    let mut jobs = Vec::new();
    let mut deliveries = Vec::new();
    for _ in 0..30 {
        let (job, _) = a.create_job(suite::new_job()).await.unwrap();
        jobs.push(job.id);
        let d = suite::new_delivery("k");
        deliveries.push(d.id.clone());
        let finish = FinishJob {
            status: None,
            error: None,
            log: None,
            output: Some(suite::json_output("1")),
            deliveries: vec![d],
            lease_owner: None,
        };
        b.finish_job(JobRef::Id(job.id), finish).await.unwrap();
    }
    let lease = std::time::Duration::from_secs(60);
    let mut tasks = Vec::new();
    for (name, store) in [("a", a.clone()), ("b", b.clone()), ("a2", a), ("b2", b)] {
        tasks.push(tokio::spawn(async move {
            let mut got_jobs = Vec::new();
            let mut got_deliveries = Vec::new();
            loop {
                let j = store.claim_jobs(name, 2, lease).await.unwrap();
                let d = store.claim_deliveries(name, 2, lease, &[]).await.unwrap();
                if j.is_empty() && d.is_empty() {
                    return (got_jobs, got_deliveries);
                }
                got_jobs.extend(j.into_iter().map(|j| j.id));
                got_deliveries.extend(d.into_iter().map(|c| c.delivery.id));
            }
        }));
    }
    let mut all_jobs = Vec::new();
    let mut all_deliveries = Vec::new();
    for t in tasks {
        let (j, d) = t.await.unwrap();
        all_jobs.extend(j);
        all_deliveries.extend(d);
    }
    all_jobs.sort();
    all_deliveries.sort();
    deliveries.sort();
    assert_eq!(all_jobs, jobs);
    assert_eq!(all_deliveries, deliveries);
}
