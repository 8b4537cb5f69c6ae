//! The behaviour every [`Store`] implementation must have, as functions of a fresh, empty
//! store. The SQLite tests run them on a temp database; a PostgreSQL implementation runs the
//! same functions on its own fresh database.

#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::{TimeDelta, Utc};
use outflow_core::attempt::{AttemptRecord, FailureClass};
use outflow_core::context::Priority;
use outflow_core::delivery::DeliveryState;
use outflow_core::job::{JobStatus, OutputKind};
use outflow_store::{
    AttemptOutcome, AttemptResult, ClaimedDelivery, DeliveryQuery, FinishJob, JobQuery, JobRef,
    JobSort, NewDelivery, NewJob, NewOutput, StatusUpdate, Store, StoreError, TaskDef,
};
use serde_json::{Map, Value, json};
use uuid::Uuid;

/// A fresh store under test.
pub type DynStore = Arc<dyn Store>;

/// A minimal executable job.
pub fn new_job() -> NewJob {
    NewJob {
        uuid: Uuid::now_v7(),
        client_job_id: None,
        task_id: None,
        task_name: None,
        task_version: None,
        priority: Priority::Normal,
        input_data: json!({"n": 1}),
        metadata: Map::new(),
        output_destinations: vec![json!({"type": "filesystem", "path": "/tmp/x"})],
        destinations: vec!["audit".into()],
        executable: true,
    }
}

fn with_priority(p: Priority) -> NewJob {
    NewJob { priority: p, ..new_job() }
}

/// A delivery due now to `key`.
pub fn new_delivery(key: &str) -> NewDelivery {
    NewDelivery {
        id: format!("dlv_{}", Uuid::now_v7()),
        destination_name: "output_destinations[0]".into(),
        destination_type: "webhook".into(),
        destination: json!({"type": "webhook", "url": format!("http://{key}/hook")}),
        destination_key: key.into(),
        deliver_at: None,
    }
}

/// A JSON output.
pub fn json_output(body: &str) -> NewOutput {
    NewOutput {
        kind: OutputKind::Json,
        content_type: "application/json".into(),
        body: Bytes::from(body.to_owned()),
    }
}

fn finish_with(status: Option<JobStatus>, body: &str, deliveries: Vec<NewDelivery>) -> FinishJob {
    FinishJob {
        status,
        error: None,
        log: None,
        output: Some(json_output(body)),
        deliveries,
        lease_owner: None,
    }
}

fn attempt(number: u32, error: Option<&str>) -> AttemptRecord {
    AttemptRecord {
        number,
        started_at: Utc::now(),
        duration_ms: 12,
        status_code: Some(if error.is_some() { 503 } else { 200 }),
        error: error.map(str::to_owned),
        failure_class: error.map(|_| FailureClass::Retryable),
        response_excerpt: Some("busy".into()),
        next_retry_in: error.map(|_| Duration::from_secs(2)),
    }
}

/// The result of an attempt on delivery `id`, made under its claim among `claims`.
fn result(
    claims: &[ClaimedDelivery],
    id: &str,
    number: u32,
    outcome: AttemptOutcome,
) -> AttemptResult {
    let err = match outcome {
        AttemptOutcome::Delivered => None,
        _ => Some("HTTP 503"),
    };
    let claim = claims.iter().find(|c| c.delivery.id == id).expect("the delivery was claimed");
    AttemptResult {
        delivery_id: id.into(),
        attempt: attempt(number, err),
        outcome,
        lease_until: claim.lease_until,
    }
}

const LEASE: Duration = Duration::from_secs(60);
/// A lease that has run out by the time the next call runs (after [`expire`]).
const SHORT: Duration = Duration::from_millis(1);

async fn expire() {
    tokio::time::sleep(Duration::from_millis(15)).await;
}

/// A job with one output version and the given deliveries, already committed.
async fn job_with_deliveries(store: &DynStore, keys: &[&str]) -> (i64, Vec<String>) {
    let (job, _) = store.create_job(new_job()).await.unwrap();
    let ds: Vec<NewDelivery> = keys.iter().map(|k| new_delivery(k)).collect();
    let ids = ds.iter().map(|d| d.id.clone()).collect();
    store
        .finish_job(JobRef::Id(job.id), finish_with(Some(JobStatus::Succeeded), "{}", ds))
        .await
        .unwrap();
    (job.id, ids)
}

fn conflict_of(e: StoreError) -> (String, Option<JobStatus>) {
    match e {
        StoreError::Conflict { message, current_status } => (message, current_status),
        other => panic!("expected a conflict, got {other:?}"),
    }
}

fn not_found_of(e: StoreError) -> String {
    match e {
        StoreError::NotFound(m) => m,
        other => panic!("expected not found, got {other:?}"),
    }
}

pub async fn create_and_get(store: DynStore) {
    let before = Utc::now() - TimeDelta::milliseconds(1);
    let mut new = new_job();
    new.metadata.insert("title".into(), json!("Report"));
    new.task_name = Some("report".into());
    new.task_id = Some(7);
    new.task_version = Some("1.2".into());
    new.priority = Priority::Urgent;
    let (job, created) = store.create_job(new.clone()).await.unwrap();
    assert!(created);
    assert_eq!(job.uuid, new.uuid);
    assert_eq!(job.status, JobStatus::Queued);
    assert_eq!(job.priority, Priority::Urgent);
    assert_eq!(job.task_name.as_deref(), Some("report"));
    assert_eq!(job.task_id, Some(7));
    assert_eq!(job.task_version.as_deref(), Some("1.2"));
    assert_eq!(job.input_data, json!({"n": 1}));
    assert_eq!(job.metadata.get("title"), Some(&json!("Report")));
    assert_eq!(job.output_destinations, new.output_destinations);
    assert_eq!(job.destinations, vec!["audit".to_string()]);
    assert!(job.executable);
    assert!(job.queued_at >= before && job.queued_at <= Utc::now());
    assert_eq!((job.started_at, job.finished_at, job.output_version), (None, None, None));
    assert_eq!(store.get_job(JobRef::Id(job.id)).await.unwrap(), job);
    assert_eq!(store.get_job(JobRef::Uuid(job.uuid)).await.unwrap(), job);

    let (second, _) = store.create_job(new_job()).await.unwrap();
    assert!(second.id > job.id, "ids grow: {} then {}", job.id, second.id);

    let missing = store.get_job(JobRef::Id(999_999)).await.unwrap_err();
    assert_eq!(not_found_of(missing), "job 999999 not found");
    let u = Uuid::now_v7();
    let missing = store.get_job(JobRef::Uuid(u)).await.unwrap_err();
    assert_eq!(not_found_of(missing), format!("job {u} not found"));
}

pub async fn client_job_id_is_idempotent(store: DynStore) {
    let first = NewJob { client_job_id: Some("order-17".into()), ..new_job() };
    let (job, created) = store.create_job(first).await.unwrap();
    assert!(created);
    let again = NewJob {
        client_job_id: Some("order-17".into()),
        input_data: json!("different"),
        ..new_job()
    };
    let (same, created) = store.create_job(again).await.unwrap();
    assert!(!created);
    assert_eq!(same, job);
    let page = store.list_jobs(&JobQuery::default()).await.unwrap();
    assert_eq!(page.total, 1);
    // Jobs without a client id never collide.
    store.create_job(new_job()).await.unwrap();
    store.create_job(new_job()).await.unwrap();
    assert_eq!(store.list_jobs(&JobQuery::default()).await.unwrap().total, 3);
}

fn ids(page: &outflow_store::Page<outflow_core::job::Job>) -> Vec<i64> {
    page.items.iter().map(|j| j.id).collect()
}

pub async fn list_filters_sort_and_paging(store: DynStore) {
    let mut made = Vec::new();
    let specs = [
        (Priority::Low, "a", json!(["x", "y"])),
        (Priority::High, "b", json!(["y"])),
        (Priority::High, "a", json!([])),
        (Priority::Urgent, "b", json!(["x"])),
        (Priority::Normal, "a", json!("x")),
    ];
    let mut middle = None;
    for (i, (p, task, tags)) in specs.into_iter().enumerate() {
        if i == 2 {
            tokio::time::sleep(Duration::from_millis(5)).await;
            middle = Some(Utc::now());
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let mut n = with_priority(p);
        n.task_name = Some(task.into());
        n.metadata.insert("tags".into(), tags);
        made.push(store.create_job(n).await.unwrap().0.id);
    }
    let all = store.list_jobs(&JobQuery::default()).await.unwrap();
    assert_eq!(all.total, 5);
    assert_eq!(ids(&all), made.iter().rev().copied().collect::<Vec<_>>(), "newest first");

    let q = |f: fn(&mut JobQuery)| {
        let mut q = JobQuery::default();
        f(&mut q);
        q
    };
    let asc = store.list_jobs(&q(|q| q.sort = JobSort::CreatedAsc)).await.unwrap();
    assert_eq!(ids(&asc), made);

    let high = store.list_jobs(&q(|q| q.priority = Some(Priority::High))).await.unwrap();
    assert_eq!((ids(&high), high.total), (vec![made[2], made[1]], 2));

    let a = store.list_jobs(&q(|q| q.task_name = Some("a".into()))).await.unwrap();
    assert_eq!(ids(&a), vec![made[4], made[2], made[0]]);

    // Only arrays hold tags: job 4's `tags: "x"` is not a list and does not match.
    let x = store.list_jobs(&q(|q| q.tag = Some("x".into()))).await.unwrap();
    assert_eq!(ids(&x), vec![made[3], made[0]]);
    let y = store.list_jobs(&q(|q| q.tag = Some("y".into()))).await.unwrap();
    assert_eq!(ids(&y), vec![made[1], made[0]]);
    let none = store.list_jobs(&q(|q| q.tag = Some("zz".into()))).await.unwrap();
    assert_eq!((none.items.len(), none.total), (0, 0));

    let middle = middle.unwrap();
    let mut after = JobQuery { created_after: Some(middle), ..JobQuery::default() };
    assert_eq!(ids(&store.list_jobs(&after).await.unwrap()), vec![made[4], made[3], made[2]]);
    after.created_after = None;
    after.created_before = Some(middle);
    assert_eq!(ids(&store.list_jobs(&after).await.unwrap()), vec![made[1], made[0]]);

    // Paging: total counts every match, items only the page.
    let page = JobQuery { sort: JobSort::CreatedAsc, offset: 1, limit: 2, ..JobQuery::default() };
    let p = store.list_jobs(&page).await.unwrap();
    assert_eq!((ids(&p), p.total), (vec![made[1], made[2]], 5));
    let last = JobQuery { offset: 4, limit: 2, ..page.clone() };
    assert_eq!(ids(&store.list_jobs(&last).await.unwrap()), vec![made[4]]);
    let beyond = JobQuery { offset: 10, ..page };
    let p = store.list_jobs(&beyond).await.unwrap();
    assert_eq!((p.items.len(), p.total), (0, 5));

    let both = JobQuery {
        status: Some(JobStatus::Queued),
        task_name: Some("b".into()),
        tag: Some("x".into()),
        ..JobQuery::default()
    };
    assert_eq!(ids(&store.list_jobs(&both).await.unwrap()), vec![made[3]]);

    // Updated order: touching the oldest job moves it to the front.
    tokio::time::sleep(Duration::from_millis(5)).await;
    let up = StatusUpdate { status: JobStatus::Running, progress: Some(5), error: None };
    store.update_status(JobRef::Id(made[0]), up).await.unwrap();
    let by_update = q(|q| q.sort = JobSort::UpdatedDesc);
    assert_eq!(store.list_jobs(&by_update).await.unwrap().items[0].id, made[0]);
    let by_update = q(|q| q.sort = JobSort::UpdatedAsc);
    assert_eq!(store.list_jobs(&by_update).await.unwrap().items[4].id, made[0]);
    let running = q(|q| q.status = Some(JobStatus::Running));
    assert_eq!(ids(&store.list_jobs(&running).await.unwrap()), vec![made[0]]);
}

pub async fn status_transitions(store: DynStore) {
    let (job, _) = store.create_job(new_job()).await.unwrap();
    let r = JobRef::Id(job.id);
    let running = store
        .update_status(
            r,
            StatusUpdate { status: JobStatus::Running, progress: Some(10), error: None },
        )
        .await
        .unwrap();
    assert_eq!(running.status, JobStatus::Running);
    assert_eq!(running.progress, Some(10));
    let started = running.started_at.expect("running sets started_at");
    assert!(running.finished_at.is_none());

    tokio::time::sleep(Duration::from_millis(3)).await;
    let again = store
        .update_status(
            r,
            StatusUpdate { status: JobStatus::Running, progress: Some(50), error: None },
        )
        .await
        .unwrap();
    assert_eq!(again.progress, Some(50));
    assert_eq!(again.started_at, Some(started), "started_at is kept on progress reports");
    assert!(again.updated_at > running.updated_at);

    let failed = store
        .update_status(
            r,
            StatusUpdate { status: JobStatus::Failed, progress: None, error: Some("boom".into()) },
        )
        .await
        .unwrap();
    assert_eq!(failed.status, JobStatus::Failed);
    assert_eq!(failed.error.as_deref(), Some("boom"));
    assert_eq!(failed.progress, Some(50));
    assert!(failed.finished_at.is_some());

    let err = store
        .update_status(r, StatusUpdate { status: JobStatus::Running, progress: None, error: None })
        .await
        .unwrap_err();
    let (message, current) = conflict_of(err);
    assert_eq!(message, format!("job {} is failed; cannot become running", job.id));
    assert_eq!(current, Some(JobStatus::Failed));

    // Progress over 100 is refused, and nothing changes.
    let (other, _) = store.create_job(new_job()).await.unwrap();
    let err = store
        .update_status(
            JobRef::Id(other.id),
            StatusUpdate { status: JobStatus::Running, progress: Some(101), error: None },
        )
        .await
        .unwrap_err();
    let (message, _) = conflict_of(err);
    assert_eq!(message, format!("progress of job {} must be between 0 and 100, got 101", other.id));
    assert_eq!(store.get_job(JobRef::Id(other.id)).await.unwrap().status, JobStatus::Queued);

    // Straight from queued to succeeded (a producer that reports only the end).
    let done = store
        .update_status(
            JobRef::Uuid(other.uuid),
            StatusUpdate { status: JobStatus::Succeeded, progress: Some(100), error: None },
        )
        .await
        .unwrap();
    assert_eq!(done.status, JobStatus::Succeeded);
    assert!(done.started_at.is_none());
    assert!(done.finished_at.is_some());

    let err = store
        .update_status(
            JobRef::Id(424_242),
            StatusUpdate { status: JobStatus::Running, progress: None, error: None },
        )
        .await
        .unwrap_err();
    assert_eq!(not_found_of(err), "job 424242 not found");
}

pub async fn finish_job_versions_and_deliveries(store: DynStore) {
    let (job, _) = store.create_job(new_job()).await.unwrap();
    let r = JobRef::Id(job.id);
    let err = store.get_output(r, None).await.unwrap_err();
    assert_eq!(not_found_of(err), format!("job {} has no output yet", job.id));

    let d1 = new_delivery("a.example");
    let mut later = new_delivery("b.example");
    let at = Utc::now() + TimeDelta::hours(1);
    later.deliver_at = Some(at);
    let finish = FinishJob {
        status: Some(JobStatus::Succeeded),
        error: None,
        log: Some("stderr tail".into()),
        output: Some(json_output("hello")),
        deliveries: vec![d1.clone(), later.clone()],
        lease_owner: None,
    };
    let (done, meta) = store.finish_job(r, finish).await.unwrap();
    let meta = meta.expect("an output version");
    assert_eq!(meta.version, 1);
    assert_eq!(meta.size, 5);
    assert_eq!(meta.sha256, "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824");
    assert_eq!(meta.kind, OutputKind::Json);
    assert_eq!(meta.content_type, "application/json");
    assert_eq!(meta.job_id, job.id);
    assert_eq!(done.status, JobStatus::Succeeded);
    assert_eq!(done.output_version, Some(1));
    assert_eq!(done.log.as_deref(), Some("stderr tail"));
    assert!(done.finished_at.is_some());

    let (got, body) = store.get_output(r, None).await.unwrap();
    assert_eq!((got, &body[..]), (meta.clone(), &b"hello"[..]));

    let ds = store.job_deliveries(r).await.unwrap();
    assert_eq!(ds.len(), 2);
    let now_one = ds.iter().find(|(d, _)| d.id == d1.id).unwrap();
    assert_eq!(now_one.0.state, DeliveryState::Pending);
    assert_eq!(now_one.0.output_version, 1);
    assert_eq!(now_one.0.job_uuid, job.uuid);
    assert_eq!(now_one.0.destination, d1.destination);
    assert_eq!(now_one.0.destination_key, "a.example");
    assert_eq!(now_one.0.attempts, 0);
    assert!(now_one.1.is_empty());
    let sched = store.get_delivery(&later.id).await.unwrap();
    assert_eq!(sched.state, DeliveryState::Scheduled);
    assert_eq!(sched.next_attempt_at.map(|t| t.timestamp_millis()), Some(at.timestamp_millis()));

    // A second version: same terminal status again is accepted; version 2 is the latest.
    let (_, meta2) = store
        .finish_job(
            r,
            finish_with(Some(JobStatus::Succeeded), "[1,2]", vec![new_delivery("a.example")]),
        )
        .await
        .unwrap();
    assert_eq!(meta2.unwrap().version, 2);
    let (latest, body) = store.get_output(r, None).await.unwrap();
    assert_eq!((latest.version, &body[..]), (2, &b"[1,2]"[..]));
    let (first, body) = store.get_output(JobRef::Uuid(job.uuid), Some(1)).await.unwrap();
    assert_eq!((first.version, &body[..]), (1, &b"hello"[..]));
    let err = store.get_output(r, Some(3)).await.unwrap_err();
    assert_eq!(not_found_of(err), format!("job {} has no output version 3", job.id));
    assert_eq!(store.job_deliveries(r).await.unwrap().len(), 3);

    // A different terminal status after the end is a conflict.
    let err =
        store.finish_job(r, finish_with(Some(JobStatus::Failed), "x", vec![])).await.unwrap_err();
    let (message, current) = conflict_of(err);
    assert_eq!(message, format!("job {} is succeeded; cannot become failed", job.id));
    assert_eq!(current, Some(JobStatus::Succeeded));

    // One transaction: a failing delivery insert (duplicate id) leaves no output version.
    let (other, _) = store.create_job(new_job()).await.unwrap();
    let dup = new_delivery("c.example");
    let bad = finish_with(Some(JobStatus::Succeeded), "x", vec![dup.clone(), dup]);
    store.finish_job(JobRef::Id(other.id), bad).await.unwrap_err();
    let after = store.get_job(JobRef::Id(other.id)).await.unwrap();
    assert_eq!((after.status, after.output_version), (JobStatus::Queued, None));
    assert!(store.job_deliveries(JobRef::Id(other.id)).await.unwrap().is_empty());
    store.get_output(JobRef::Id(other.id), None).await.unwrap_err();

    // Output without a status change keeps the status (a running job's interim version).
    let up = StatusUpdate { status: JobStatus::Running, progress: None, error: None };
    store.update_status(JobRef::Id(other.id), up).await.unwrap();
    let (j, m) =
        store.finish_job(JobRef::Id(other.id), finish_with(None, "partial", vec![])).await.unwrap();
    assert_eq!((j.status, m.unwrap().version), (JobStatus::Running, 1));

    // Deliveries need an output to deliver.
    let (bare, _) = store.create_job(new_job()).await.unwrap();
    let only = FinishJob {
        status: None,
        error: None,
        log: None,
        output: None,
        deliveries: vec![new_delivery("d.example")],
        lease_owner: None,
    };
    let (message, _) = conflict_of(store.finish_job(JobRef::Id(bare.id), only).await.unwrap_err());
    assert_eq!(message, format!("job {} has no output yet; there is nothing to deliver", bare.id));

    // Nothing is stored for a cancelled job.
    store.cancel_job(JobRef::Id(bare.id)).await.unwrap();
    let err = store
        .finish_job(JobRef::Id(bare.id), finish_with(Some(JobStatus::Succeeded), "x", vec![]))
        .await
        .unwrap_err();
    let (message, current) = conflict_of(err);
    assert_eq!(message, format!("job {} is cancelled; it takes no more output or status", bare.id));
    assert_eq!(current, Some(JobStatus::Cancelled));
    let err = store.get_output(JobRef::Id(bare.id), None).await.unwrap_err();
    assert_eq!(not_found_of(err), format!("job {} has no output yet", bare.id));
}

pub async fn cancel_and_delete(store: DynStore) {
    let (queued, _) = store.create_job(new_job()).await.unwrap();
    let cancelled = store.cancel_job(JobRef::Id(queued.id)).await.unwrap();
    assert_eq!(cancelled.status, JobStatus::Cancelled);
    assert!(cancelled.finished_at.is_some());
    let (message, current) =
        conflict_of(store.cancel_job(JobRef::Id(queued.id)).await.unwrap_err());
    assert_eq!(message, format!("job {} is cancelled; it cannot be cancelled", queued.id));
    assert_eq!(current, Some(JobStatus::Cancelled));

    // A claimed (running) job: cancel clears the lease, so nobody reclaims it.
    let (run, _) = store.create_job(new_job()).await.unwrap();
    let claimed = store.claim_jobs("node-a", 10, SHORT).await.unwrap();
    assert_eq!(claimed.iter().map(|j| j.id).collect::<Vec<_>>(), vec![run.id]);
    let err = store.delete_job(JobRef::Id(run.id), false).await.unwrap_err();
    let (message, current) = conflict_of(err);
    assert_eq!(message, format!("job {} is running; cancel it first or delete with force", run.id));
    assert_eq!(current, Some(JobStatus::Running));
    store.cancel_job(JobRef::Uuid(run.uuid)).await.unwrap();
    expire().await;
    assert!(store.claim_jobs("node-b", 10, LEASE).await.unwrap().is_empty());

    // Delete cascades to outputs, deliveries and attempts.
    let (job, dids) = job_with_deliveries(&store, &["a.example"]).await;
    let c = store.claim_deliveries("w", 10, LEASE, &[]).await.unwrap();
    assert_eq!(c.len(), 1);
    let res = result(&c, &dids[0], 1, AttemptOutcome::RetryAt(Utc::now() + TimeDelta::hours(1)));
    assert_eq!(store.complete_attempts("w", vec![res]).await.unwrap(), 1);
    assert_eq!(store.list_attempts(&dids[0]).await.unwrap().len(), 1);
    store.delete_job(JobRef::Id(job), false).await.unwrap();
    assert_eq!(
        not_found_of(store.get_job(JobRef::Id(job)).await.unwrap_err()),
        format!("job {job} not found")
    );
    let gone = store.get_delivery(&dids[0]).await.unwrap_err();
    assert_eq!(not_found_of(gone), format!("delivery {} not found", dids[0]));
    let gone = store.list_attempts(&dids[0]).await.unwrap_err();
    assert_eq!(not_found_of(gone), format!("delivery {} not found", dids[0]));
    assert_eq!(store.next_due_at().await.unwrap(), None);
    assert_eq!(
        not_found_of(store.delete_job(JobRef::Id(job), true).await.unwrap_err()),
        format!("job {job} not found")
    );

    // Force deletes a running job.
    let (run2, _) = store.create_job(new_job()).await.unwrap();
    store.claim_jobs("node-a", 10, LEASE).await.unwrap();
    store.delete_job(JobRef::Id(run2.id), true).await.unwrap();
    store.get_job(JobRef::Id(run2.id)).await.unwrap_err();
}

pub async fn claim_jobs_order_and_leases(store: DynStore) {
    let low = store.create_job(with_priority(Priority::Low)).await.unwrap().0.id;
    let n1 = store.create_job(with_priority(Priority::Normal)).await.unwrap().0.id;
    let external = NewJob { executable: false, ..with_priority(Priority::Urgent) };
    let ext = store.create_job(external).await.unwrap().0.id;
    let u = store.create_job(with_priority(Priority::Urgent)).await.unwrap().0.id;
    let n2 = store.create_job(with_priority(Priority::Normal)).await.unwrap().0.id;
    let h = store.create_job(with_priority(Priority::High)).await.unwrap().0.id;

    let first = store.claim_jobs("a", 3, LEASE).await.unwrap();
    assert_eq!(first.iter().map(|j| j.id).collect::<Vec<_>>(), vec![u, h, n1]);
    for j in &first {
        assert_eq!(j.status, JobStatus::Running);
        assert!(j.started_at.is_some());
    }
    let rest = store.claim_jobs("b", 10, LEASE).await.unwrap();
    assert_eq!(rest.iter().map(|j| j.id).collect::<Vec<_>>(), vec![n2, low]);
    assert!(store.claim_jobs("c", 10, LEASE).await.unwrap().is_empty());
    // The job for an external producer is never claimed.
    assert_eq!(store.get_job(JobRef::Id(ext)).await.unwrap().status, JobStatus::Queued);

    // An executor that stops renewing loses its jobs; one that renews keeps them.
    let (x, _) = store.create_job(new_job()).await.unwrap();
    let (y, _) = store.create_job(new_job()).await.unwrap();
    let got = store.claim_jobs("crashy", 2, SHORT).await.unwrap();
    assert_eq!(got.len(), 2);
    assert_eq!(store.renew_job_leases("crashy", &[y.id], LEASE).await.unwrap(), vec![y.id]);
    // Renewing someone else's job does nothing, and says so.
    assert_eq!(store.renew_job_leases("thief", &[x.id], LEASE).await.unwrap(), Vec::<i64>::new());
    expire().await;
    let reclaimed = store.claim_jobs("d", 10, LEASE).await.unwrap();
    assert_eq!(reclaimed.iter().map(|j| j.id).collect::<Vec<_>>(), vec![x.id]);
    assert_eq!(reclaimed[0].started_at, got[0].started_at, "the first start is kept");

    // Finishing a job clears its lease: it is not reclaimed after the lease would expire.
    let (z, _) = store.create_job(new_job()).await.unwrap();
    store.claim_jobs("e", 1, SHORT).await.unwrap();
    let done = StatusUpdate { status: JobStatus::Succeeded, progress: None, error: None };
    store.update_status(JobRef::Id(z.id), done).await.unwrap();
    expire().await;
    assert!(store.claim_jobs("f", 10, LEASE).await.unwrap().is_empty());
    assert_eq!(store.get_job(JobRef::Id(z.id)).await.unwrap().status, JobStatus::Succeeded);
}

/// An executor whose lease on a job ran out while it ran, and whose job was claimed and run
/// again, cannot store its result: only the current claim adds an output version (and its
/// deliveries). Renewing tells the stale executor it lost the job.
pub async fn finishing_a_job_needs_its_lease(store: DynStore) {
    let (job, _) = store.create_job(new_job()).await.unwrap();
    assert_eq!(store.claim_jobs("old", 1, SHORT).await.unwrap().len(), 1);
    expire().await;
    assert_eq!(store.claim_jobs("new", 1, LEASE).await.unwrap().len(), 1);
    assert_eq!(store.renew_job_leases("old", &[job.id], LEASE).await.unwrap(), Vec::<i64>::new());
    assert_eq!(store.renew_job_leases("new", &[job.id], LEASE).await.unwrap(), vec![job.id]);

    let by = |owner: &str| FinishJob {
        lease_owner: Some(owner.into()),
        ..finish_with(Some(JobStatus::Succeeded), "{}", vec![new_delivery("a.example")])
    };
    let (message, current) =
        conflict_of(store.finish_job(JobRef::Id(job.id), by("old")).await.unwrap_err());
    assert_eq!(
        message,
        format!(
            "job {} is no longer run by old (it is running: ended, or claimed again after the \
             lease expired); this run's result is not stored",
            job.id
        )
    );
    assert_eq!(current, Some(JobStatus::Running));
    let stale = store.get_job(JobRef::Id(job.id)).await.unwrap();
    assert_eq!((stale.status, stale.output_version), (JobStatus::Running, None));
    assert!(store.job_deliveries(JobRef::Id(job.id)).await.unwrap().is_empty());

    let (done, meta) = store.finish_job(JobRef::Id(job.id), by("new")).await.unwrap();
    assert_eq!((done.status, meta.map(|m| m.version)), (JobStatus::Succeeded, Some(1)));
    // The same owner finishing twice (a second run of its own) is refused too: the job is
    // no longer running, so no second version and no second set of deliveries.
    let (message, current) =
        conflict_of(store.finish_job(JobRef::Id(job.id), by("new")).await.unwrap_err());
    assert_eq!(
        message,
        format!(
            "job {} is no longer run by new (it is succeeded: ended, or claimed again after \
             the lease expired); this run's result is not stored",
            job.id
        )
    );
    assert_eq!(current, Some(JobStatus::Succeeded));
    assert_eq!(store.get_job(JobRef::Id(job.id)).await.unwrap().output_version, Some(1));
    assert_eq!(store.job_deliveries(JobRef::Id(job.id)).await.unwrap().len(), 1);
}

pub async fn claim_jobs_no_double_claim(store: DynStore) {
    let mut all = Vec::new();
    for _ in 0..40 {
        all.push(store.create_job(new_job()).await.unwrap().0.id);
    }
    let mut tasks = Vec::new();
    for owner in ["a", "b", "c", "d"] {
        let s = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let got = s.claim_jobs(owner, 3, LEASE).await.unwrap();
                if got.is_empty() {
                    return mine;
                }
                mine.extend(got.into_iter().map(|j| j.id));
            }
        }));
    }
    let mut claimed = Vec::new();
    for t in tasks {
        claimed.extend(t.await.unwrap());
    }
    claimed.sort();
    assert_eq!(claimed, all, "every job claimed exactly once");
}

pub async fn claim_deliveries_due_skip_and_leases(store: DynStore) {
    let (job, ids) = job_with_deliveries(&store, &["a.example", "b.example", "c.example"]).await;
    let (_, later) = {
        let (j, _) = store.create_job(new_job()).await.unwrap();
        let mut d = new_delivery("a.example");
        d.deliver_at = Some(Utc::now() + TimeDelta::hours(1));
        let id = d.id.clone();
        store
            .finish_job(JobRef::Id(j.id), finish_with(Some(JobStatus::Succeeded), "{}", vec![d]))
            .await
            .unwrap();
        (j.id, id)
    };

    let skip = vec!["b.example".to_string()];
    let got = store.claim_deliveries("w1", 10, LEASE, &skip).await.unwrap();
    let mut got_ids: Vec<&str> = got.iter().map(|c| c.delivery.id.as_str()).collect();
    got_ids.sort();
    let mut want = vec![ids[0].as_str(), ids[2].as_str()];
    want.sort();
    assert_eq!(got_ids, want, "due ones, minus the skipped key, minus the future one");
    let c = &got[0];
    assert_eq!(c.delivery.state, DeliveryState::InFlight);
    assert_eq!(c.delivery.attempts, 0);
    assert_eq!(c.job.id, job);
    assert_eq!(c.job.status, JobStatus::Succeeded);
    assert_eq!((c.output.version, c.output.size, &c.body[..]), (1, 2, &b"{}"[..]));

    // In flight under a live lease: nobody else gets them.
    let other = store.claim_deliveries("w2", 10, LEASE, &skip).await.unwrap();
    assert!(other.is_empty(), "claimed twice: {other:?}");
    // The skipped key is claimable when not skipped.
    let b = store.claim_deliveries("w2", 10, LEASE, &[]).await.unwrap();
    assert_eq!(b.iter().map(|c| c.delivery.id.clone()).collect::<Vec<_>>(), vec![ids[1].clone()]);

    assert_eq!(store.get_delivery(&later).await.unwrap().state, DeliveryState::Scheduled);

    // A worker whose lease runs out loses its deliveries to the next claim.
    let (_, crashed) = job_with_deliveries(&store, &["e1", "e2"]).await;
    assert_eq!(store.claim_deliveries("crashy", 10, SHORT, &[]).await.unwrap().len(), 2);
    expire().await;
    let taken = store.claim_deliveries("w3", 10, LEASE, &[]).await.unwrap();
    let mut taken_ids: Vec<String> = taken.iter().map(|c| c.delivery.id.clone()).collect();
    taken_ids.sort();
    let mut want = crashed.clone();
    want.sort();
    assert_eq!(taken_ids, want);
    assert!(taken.iter().all(|c| c.delivery.state == DeliveryState::InFlight));

    // Limit.
    let (_, many) = job_with_deliveries(&store, &["k1", "k2", "k3"]).await;
    let two = store.claim_deliveries("w4", 2, LEASE, &[]).await.unwrap();
    assert_eq!(two.len(), 2);
    let one = store.claim_deliveries("w4", 2, LEASE, &[]).await.unwrap();
    assert_eq!(one.len(), 1);
    let mut all: Vec<String> =
        two.iter().chain(one.iter()).map(|c| c.delivery.id.clone()).collect();
    all.sort();
    let mut m = many.clone();
    m.sort();
    assert_eq!(all, m);
    assert!(store.claim_deliveries("w4", 0, LEASE, &[]).await.unwrap().is_empty());
}

pub async fn claim_deliveries_oldest_due_first(store: DynStore) {
    let (j, _) = store.create_job(new_job()).await.unwrap();
    let mut a = new_delivery("k");
    a.deliver_at = Some(Utc::now() - TimeDelta::seconds(10));
    let mut b = new_delivery("k");
    b.deliver_at = Some(Utc::now() - TimeDelta::seconds(30));
    let c = new_delivery("k");
    let order = [b.id.clone(), a.id.clone(), c.id.clone()];
    store.finish_job(JobRef::Id(j.id), finish_with(None, "1", vec![a, c, b])).await.unwrap();
    let first = store.claim_deliveries("w", 1, LEASE, &[]).await.unwrap();
    assert_eq!(first[0].delivery.id, order[0]);
    let rest = store.claim_deliveries("w", 10, LEASE, &[]).await.unwrap();
    let got: Vec<String> = rest.into_iter().map(|c| c.delivery.id).collect();
    assert_eq!(got, order[1..]);
}

pub async fn complete_attempts_outcomes(store: DynStore) {
    let (_, ids) = job_with_deliveries(&store, &["a", "b", "c"]).await;
    let claimed = store.claim_deliveries("w", 10, LEASE, &[]).await.unwrap();
    assert_eq!(claimed.len(), 3);
    let retry_at = Utc::now() + TimeDelta::minutes(5);
    let results = vec![
        result(&claimed, &ids[0], 1, AttemptOutcome::Delivered),
        result(&claimed, &ids[1], 1, AttemptOutcome::RetryAt(retry_at)),
        result(&claimed, &ids[2], 1, AttemptOutcome::Dead),
    ];
    // Another owner's results are ignored.
    assert_eq!(store.complete_attempts("intruder", results.clone()).await.unwrap(), 0);
    assert_eq!(store.complete_attempts("w", results.clone()).await.unwrap(), 3);

    let delivered = store.get_delivery(&ids[0]).await.unwrap();
    assert_eq!(delivered.state, DeliveryState::Delivered);
    assert_eq!(delivered.attempts, 1);
    assert!(delivered.delivered_at.is_some());
    assert_eq!((delivered.last_error, delivered.last_status_code), (None, Some(200)));

    let scheduled = store.get_delivery(&ids[1]).await.unwrap();
    assert_eq!(scheduled.state, DeliveryState::Scheduled);
    assert_eq!(
        scheduled.next_attempt_at.map(|t| t.timestamp_millis()),
        Some(retry_at.timestamp_millis())
    );
    assert_eq!(scheduled.last_error.as_deref(), Some("HTTP 503"));
    assert_eq!(scheduled.last_status_code, Some(503));
    assert!(scheduled.delivered_at.is_none());

    let dead = store.get_delivery(&ids[2]).await.unwrap();
    assert_eq!((dead.state, dead.attempts), (DeliveryState::Dead, 1));

    let recorded = store.list_attempts(&ids[1]).await.unwrap();
    assert_eq!(recorded.len(), 1);
    let want = &results[1].attempt;
    assert_eq!(recorded[0].number, 1);
    assert_eq!(recorded[0].started_at.timestamp_millis(), want.started_at.timestamp_millis());
    assert_eq!(recorded[0].duration_ms, 12);
    assert_eq!(recorded[0].status_code, Some(503));
    assert_eq!(recorded[0].error.as_deref(), Some("HTTP 503"));
    assert_eq!(recorded[0].failure_class, Some(FailureClass::Retryable));
    assert_eq!(recorded[0].response_excerpt.as_deref(), Some("busy"));
    assert_eq!(recorded[0].next_retry_in, Some(Duration::from_secs(2)));

    // Applying the same results again changes nothing: the leases are gone.
    assert_eq!(store.complete_attempts("w", results).await.unwrap(), 0);
    assert_eq!(store.list_attempts(&ids[0]).await.unwrap().len(), 1);
    // The scheduled one is not due yet.
    assert!(store.claim_deliveries("w", 10, LEASE, &[]).await.unwrap().is_empty());
    assert_eq!(
        store.next_due_at().await.unwrap().map(|t| t.timestamp_millis()),
        Some(retry_at.timestamp_millis())
    );
    // A retry that is already due is claimed again, and attempt 2 is recorded after 1.
    let past = Utc::now() - TimeDelta::seconds(1);
    let (_, more) = job_with_deliveries(&store, &["d"]).await;
    let first = store.claim_deliveries("w", 10, LEASE, &[]).await.unwrap();
    store
        .complete_attempts("w", vec![result(&first, &more[0], 1, AttemptOutcome::RetryAt(past))])
        .await
        .unwrap();
    let again = store.claim_deliveries("w", 10, LEASE, &[]).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].delivery.attempts, 1);
    store
        .complete_attempts("w", vec![result(&again, &more[0], 2, AttemptOutcome::Delivered)])
        .await
        .unwrap();
    let nums: Vec<u32> =
        store.list_attempts(&more[0]).await.unwrap().iter().map(|a| a.number).collect();
    assert_eq!(nums, vec![1, 2]);
    assert_eq!(store.get_delivery(&more[0]).await.unwrap().attempts, 2);
}

pub async fn stolen_lease_is_ignored(store: DynStore) {
    let (_, ids) = job_with_deliveries(&store, &["a"]).await;
    let slow = store.claim_deliveries("slow", 10, SHORT, &[]).await.unwrap();
    assert_eq!(slow.len(), 1);
    expire().await;
    let fast = store.claim_deliveries("fast", 10, LEASE, &[]).await.unwrap();
    assert_eq!(fast.len(), 1);
    let late = result(&slow, &ids[0], 1, AttemptOutcome::Dead);
    assert_eq!(store.complete_attempts("slow", vec![late]).await.unwrap(), 0);
    store.release_deliveries("slow", &ids).await.unwrap();
    let d = store.get_delivery(&ids[0]).await.unwrap();
    assert_eq!((d.state, d.attempts), (DeliveryState::InFlight, 0));
    assert!(store.list_attempts(&ids[0]).await.unwrap().is_empty());
    let ok = result(&fast, &ids[0], 1, AttemptOutcome::Delivered);
    assert_eq!(store.complete_attempts("fast", vec![ok]).await.unwrap(), 1);
    assert_eq!(store.get_delivery(&ids[0]).await.unwrap().state, DeliveryState::Delivered);
}

/// The same owner claims a delivery again after its lease ran out while the first attempt
/// was still running: the first attempt's late result must not be recorded over the
/// second claim's, nor replace the attempt record the second claim wrote.
pub async fn result_of_an_older_claim_by_the_same_owner_is_ignored(store: DynStore) {
    let (_, ids) = job_with_deliveries(&store, &["a"]).await;
    let first = store.claim_deliveries("node", 10, SHORT, &[]).await.unwrap();
    assert_eq!(first.len(), 1);
    expire().await;
    let second = store.claim_deliveries("node", 10, LEASE, &[]).await.unwrap();
    assert_eq!(second.len(), 1);
    assert!(second[0].lease_until > first[0].lease_until);
    // Both claims see attempts = 0, so both attempts are number 1.
    assert_eq!((first[0].delivery.attempts, second[0].delivery.attempts), (0, 0));

    let late = result(&first, &ids[0], 1, AttemptOutcome::Delivered);
    assert_eq!(store.complete_attempts("node", vec![late.clone()]).await.unwrap(), 0);
    let d = store.get_delivery(&ids[0]).await.unwrap();
    assert_eq!((d.state, d.attempts), (DeliveryState::InFlight, 0));
    assert!(store.list_attempts(&ids[0]).await.unwrap().is_empty());

    let retry_at = Utc::now() + TimeDelta::minutes(5);
    let current = result(&second, &ids[0], 1, AttemptOutcome::RetryAt(retry_at));
    assert_eq!(store.complete_attempts("node", vec![current]).await.unwrap(), 1);
    // The late result arriving again after the delivery moved on changes nothing either.
    assert_eq!(store.complete_attempts("node", vec![late]).await.unwrap(), 0);
    let d = store.get_delivery(&ids[0]).await.unwrap();
    assert_eq!((d.state, d.attempts), (DeliveryState::Scheduled, 1));
    let recorded = store.list_attempts(&ids[0]).await.unwrap();
    assert_eq!(recorded.len(), 1);
    assert_eq!(
        (recorded[0].number, recorded[0].status_code, recorded[0].error.as_deref()),
        (1, Some(503), Some("HTTP 503"))
    );
}

/// An attempt number already recorded keeps its record: a second result with that number
/// (from a claim that saw the same attempt count) is applied to the delivery but does not
/// rewrite history.
pub async fn an_attempt_record_is_never_replaced(store: DynStore) {
    let (_, ids) = job_with_deliveries(&store, &["a"]).await;
    let first = store.claim_deliveries("w", 10, LEASE, &[]).await.unwrap();
    let past = Utc::now() - TimeDelta::seconds(1);
    let failed = result(&first, &ids[0], 1, AttemptOutcome::RetryAt(past));
    assert_eq!(store.complete_attempts("w", vec![failed]).await.unwrap(), 1);
    // Due again at once: the next claim makes attempt 2. A result that says it is
    // attempt 1 again must not replace attempt 1's record.
    let again = store.claim_deliveries("w", 10, LEASE, &[]).await.unwrap();
    assert_eq!(again[0].delivery.attempts, 1);
    let dup = result(&again, &ids[0], 1, AttemptOutcome::Delivered);
    assert_eq!(store.complete_attempts("w", vec![dup]).await.unwrap(), 1);
    let recorded = store.list_attempts(&ids[0]).await.unwrap();
    assert_eq!(recorded.len(), 1);
    assert_eq!(
        (recorded[0].number, recorded[0].status_code, recorded[0].error.as_deref()),
        (1, Some(503), Some("HTTP 503"))
    );
}

pub async fn release_and_next_due(store: DynStore) {
    assert_eq!(store.next_due_at().await.unwrap(), None);
    let (_, ids) = job_with_deliveries(&store, &["a", "b"]).await;
    let due = store.next_due_at().await.unwrap().expect("due now");
    assert!(due <= Utc::now());
    let claimed = store.claim_deliveries("w", 10, LEASE, &[]).await.unwrap();
    assert_eq!(claimed.len(), 2);
    // In flight: the next thing due is the lease running out.
    let lease_end = store.next_due_at().await.unwrap().expect("lease end");
    assert!(lease_end > Utc::now() + TimeDelta::seconds(50), "{lease_end}");

    store.release_deliveries("w", &ids[..1]).await.unwrap();
    let d = store.get_delivery(&ids[0]).await.unwrap();
    assert_eq!((d.state, d.attempts), (DeliveryState::Pending, 0));
    assert!(d.next_attempt_at.unwrap() <= Utc::now());
    assert_eq!(store.get_delivery(&ids[1]).await.unwrap().state, DeliveryState::InFlight);
    let again = store.claim_deliveries("w2", 10, LEASE, &[]).await.unwrap();
    assert_eq!(
        again.iter().map(|c| c.delivery.id.clone()).collect::<Vec<_>>(),
        vec![ids[0].clone()]
    );
}

async fn make_dead(store: &DynStore, n: usize, dtype: &str) -> (i64, Vec<String>) {
    let (j, _) = store.create_job(new_job()).await.unwrap();
    let ds: Vec<NewDelivery> = (0..n)
        .map(|i| NewDelivery { destination_type: dtype.into(), ..new_delivery(&format!("k{i}")) })
        .collect();
    let ids: Vec<String> = ds.iter().map(|d| d.id.clone()).collect();
    store.finish_job(JobRef::Id(j.id), finish_with(None, "1", ds)).await.unwrap();
    let claimed = store.claim_deliveries("w", 100, LEASE, &[]).await.unwrap();
    let results = ids.iter().map(|id| result(&claimed, id, 1, AttemptOutcome::Dead)).collect();
    assert_eq!(store.complete_attempts("w", results).await.unwrap(), n);
    (j.id, ids)
}

pub async fn retry_replay_purge(store: DynStore) {
    let (job_a, dead_a) = make_dead(&store, 2, "webhook").await;
    tokio::time::sleep(Duration::from_millis(5)).await;
    let middle = Utc::now();
    tokio::time::sleep(Duration::from_millis(5)).await;
    let (job_b, dead_b) = make_dead(&store, 2, "filesystem").await;
    let (_, live) = job_with_deliveries(&store, &["z"]).await;

    let dead = DeliveryQuery { state: Some(DeliveryState::Dead), ..DeliveryQuery::default() };
    let page = store.list_deliveries(&dead).await.unwrap();
    assert_eq!(page.total, 4);
    assert_eq!(page.items[0].job_id, job_b, "newest first");
    let paged = store
        .list_deliveries(&DeliveryQuery { offset: 1, limit: 2, ..dead.clone() })
        .await
        .unwrap();
    assert_eq!((paged.items.len(), paged.total), (2, 4));
    let fs = DeliveryQuery { destination_type: Some("filesystem".into()), ..dead.clone() };
    let mut got: Vec<String> =
        store.list_deliveries(&fs).await.unwrap().items.into_iter().map(|d| d.id).collect();
    got.sort();
    let mut want = dead_b.clone();
    want.sort();
    assert_eq!(got, want);
    let all = store.list_deliveries(&DeliveryQuery::default()).await.unwrap();
    assert_eq!(all.total, 5);
    let of_a = DeliveryQuery { job_id: Some(job_a), ..DeliveryQuery::default() };
    assert_eq!(store.list_deliveries(&of_a).await.unwrap().total, 2);
    let before = DeliveryQuery { created_before: Some(middle), ..DeliveryQuery::default() };
    assert_eq!(store.list_deliveries(&before).await.unwrap().total, 2);

    // Retry one: pending, due now, history kept.
    let r = store.retry_delivery(&dead_a[0]).await.unwrap();
    assert_eq!((r.state, r.attempts), (DeliveryState::Pending, 1));
    assert_eq!(store.list_attempts(&dead_a[0]).await.unwrap().len(), 1);
    let (message, current) = conflict_of(
        store
            .retry_delivery(&live[0])
            .await
            .map(|_| ())
            .and(
                async {
                    store.claim_deliveries("w", 100, LEASE, &[]).await.unwrap();
                    store.retry_delivery(&live[0]).await.map(|_| ())
                }
                .await,
            )
            .unwrap_err(),
    );
    assert_eq!(
        message,
        format!(
            "delivery {} is in_flight; only dead or scheduled deliveries can be retried",
            live[0]
        )
    );
    assert_eq!(current, None);
    let missing = store.retry_delivery("dlv_nope").await.unwrap_err();
    assert_eq!(not_found_of(missing), "delivery dlv_nope not found");

    // Replay by filter: only dead ones, only matching.
    let replay_fs = DeliveryQuery {
        destination_type: Some("filesystem".into()),
        // The state in the filter is ignored: replay always means dead ones.
        state: Some(DeliveryState::Delivered),
        ..DeliveryQuery::default()
    };
    assert_eq!(store.replay_dead(&replay_fs).await.unwrap(), 2);
    for id in &dead_b {
        assert_eq!(store.get_delivery(id).await.unwrap().state, DeliveryState::Pending);
    }
    assert_eq!(store.replay_dead(&replay_fs).await.unwrap(), 0);
    let range = DeliveryQuery { created_after: Some(middle), ..DeliveryQuery::default() };
    assert_eq!(store.replay_dead(&range).await.unwrap(), 0, "job a's dead one is older");

    // Purge: only dead, only matching.
    let of_b = DeliveryQuery { job_id: Some(job_b), ..DeliveryQuery::default() };
    assert_eq!(store.purge_dead(&of_b).await.unwrap(), 0);
    assert_eq!(store.purge_dead(&DeliveryQuery::default()).await.unwrap(), 1);
    let gone = store.get_delivery(&dead_a[1]).await.unwrap_err();
    assert_eq!(not_found_of(gone), format!("delivery {} not found", dead_a[1]));
    assert_eq!(store.list_deliveries(&dead).await.unwrap().total, 0);
    assert_eq!(store.list_deliveries(&DeliveryQuery::default()).await.unwrap().total, 4);
}

pub async fn delivered_cannot_be_retried(store: DynStore) {
    let (_, ids) = job_with_deliveries(&store, &["a"]).await;
    let claimed = store.claim_deliveries("w", 1, LEASE, &[]).await.unwrap();
    store
        .complete_attempts("w", vec![result(&claimed, &ids[0], 1, AttemptOutcome::Delivered)])
        .await
        .unwrap();
    let (message, _) = conflict_of(store.retry_delivery(&ids[0]).await.unwrap_err());
    assert_eq!(
        message,
        format!(
            "delivery {} is delivered; only dead or scheduled deliveries can be retried",
            ids[0]
        )
    );
}

pub async fn job_deliveries_with_attempts(store: DynStore) {
    let (job, ids) = job_with_deliveries(&store, &["a", "b"]).await;
    let claimed = store.claim_deliveries("w", 10, LEASE, &[]).await.unwrap();
    let dead = result(&claimed, &ids[1], 1, AttemptOutcome::Dead);
    store.complete_attempts("w", vec![dead]).await.unwrap();
    let all = store.job_deliveries(JobRef::Id(job)).await.unwrap();
    let by_id = |id: &str| all.iter().find(|(d, _)| d.id == id).unwrap();
    assert!(by_id(&ids[0]).1.is_empty());
    assert_eq!(by_id(&ids[1]).1.len(), 1);
    assert_eq!(by_id(&ids[1]).0.state, DeliveryState::Dead);
    let err = store.job_deliveries(JobRef::Id(777_777)).await.unwrap_err();
    assert_eq!(not_found_of(err), "job 777777 not found");
}

pub async fn stats_count_everything(store: DynStore) {
    let empty = store.stats().await.unwrap();
    assert_eq!(empty.jobs_by_status, JobStatus::ALL.iter().map(|s| (*s, 0)).collect::<Vec<_>>());
    assert_eq!(
        empty.deliveries_by_state,
        DeliveryState::ALL.iter().map(|s| (*s, 0)).collect::<Vec<_>>()
    );
    store.create_job(new_job()).await.unwrap();
    let (_, ids) = job_with_deliveries(&store, &["a", "b", "c"]).await;
    let (c, _) = store.create_job(new_job()).await.unwrap();
    store.cancel_job(JobRef::Id(c.id)).await.unwrap();
    store.claim_deliveries("w", 1, LEASE, &[]).await.unwrap();
    let s = store.stats().await.unwrap();
    let job = |st| s.jobs_by_status.iter().find(|(x, _)| *x == st).unwrap().1;
    let dl = |st| s.deliveries_by_state.iter().find(|(x, _)| *x == st).unwrap().1;
    assert_eq!(
        (job(JobStatus::Queued), job(JobStatus::Succeeded), job(JobStatus::Cancelled)),
        (1, 1, 1)
    );
    assert_eq!((job(JobStatus::Running), job(JobStatus::Failed)), (0, 0));
    assert_eq!((dl(DeliveryState::Pending), dl(DeliveryState::InFlight)), (2, 1));
    assert_eq!(dl(DeliveryState::Dead), 0);
    assert_eq!(ids.len(), 3);
}

pub async fn tasks_keep_their_ids(store: DynStore) {
    let def = |name: &str, v: &str| TaskDef {
        name: name.into(),
        version: Some(v.into()),
        definition: json!({"command": "/bin/echo", "v": v}),
    };
    assert!(store.list_tasks().await.unwrap().is_empty());
    let first = store.sync_tasks(&[def("build", "1"), def("report", "1")]).await.unwrap();
    assert_eq!(first.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(), vec!["build", "report"]);
    let again = store.sync_tasks(&[def("report", "2"), def("new", "1")]).await.unwrap();
    let report = again.iter().find(|t| t.name == "report").unwrap();
    assert_eq!(report.id, first[1].id);
    assert_eq!(report.version.as_deref(), Some("2"));
    assert_eq!(report.definition, json!({"command": "/bin/echo", "v": "2"}));
    assert_eq!(again.len(), 3, "tasks missing from a sync are kept: {again:?}");
    assert_eq!(store.list_tasks().await.unwrap(), again);
    let _ = Value::Null;
}

pub async fn concurrent_creates(store: DynStore) {
    let mut tasks = Vec::new();
    for i in 0..200 {
        let s = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut n = new_job();
            n.client_job_id = Some(format!("c-{i}"));
            s.create_job(n).await.unwrap().0
        }));
    }
    let mut ids = Vec::new();
    for t in tasks {
        ids.push(t.await.unwrap().id);
    }
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 200);
    let page = store.list_jobs(&JobQuery::default()).await.unwrap();
    assert_eq!(page.total, 200);
    for i in [0, 57, 199] {
        let n = NewJob { client_job_id: Some(format!("c-{i}")), ..new_job() };
        assert!(!store.create_job(n).await.unwrap().1);
    }
}

/// A conflict inside a batch of concurrent writes fails only its own request.
pub async fn failing_request_does_not_fail_its_batch(store: DynStore) {
    let (done, _) = store.create_job(new_job()).await.unwrap();
    store.cancel_job(JobRef::Id(done.id)).await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..50 {
        let s = store.clone();
        tasks.push(tokio::spawn(async move {
            if i % 5 == 0 {
                s.cancel_job(JobRef::Id(done.id)).await.map(|_| ())
            } else {
                s.create_job(new_job()).await.map(|_| ())
            }
        }));
    }
    let mut ok = 0;
    let mut conflicts = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(()) => ok += 1,
            Err(StoreError::Conflict { .. }) => conflicts += 1,
            Err(e) => panic!("unexpected {e:?}"),
        }
    }
    assert_eq!((ok, conflicts), (40, 10));
    assert_eq!(store.list_jobs(&JobQuery::default()).await.unwrap().total, 41);
}
