//! Job operations, as functions of one connection inside a transaction.

use std::time::Duration;

use bytes::Bytes;
use outflow_core::job::{Job, JobStatus, OutputMeta};
use rusqlite::types::Value as SqlValue;
use rusqlite::{Connection, OptionalExtension, params, params_from_iter};
use sha2::{Digest, Sha256};

use super::rows::{
    JOB_COLS, OUTPUT_COLS, from_ms, job_from_row, now_ms, output_from_row, priority_rank, to_json,
    to_ms,
};
use crate::{
    FinishJob, JobQuery, JobRef, JobSort, NewJob, Page, StatusUpdate, StoreError, StoreResult,
    TaskDef, TaskRecord,
};

fn not_found(job: JobRef) -> StoreError {
    StoreError::NotFound(format!("job {job} not found"))
}

/// One job, by id or UUID.
pub(super) fn load(conn: &Connection, job: JobRef) -> StoreResult<Job> {
    let found = match job {
        JobRef::Id(id) => conn
            .prepare_cached(&format!("SELECT {JOB_COLS} FROM jobs j WHERE j.id = ?1"))?
            .query_row([id], job_from_row)
            .optional()?,
        JobRef::Uuid(uuid) => conn
            .prepare_cached(&format!("SELECT {JOB_COLS} FROM jobs j WHERE j.uuid = ?1"))?
            .query_row([uuid.to_string()], job_from_row)
            .optional()?,
    };
    found.ok_or_else(|| not_found(job))
}

/// Upserts tasks by name and returns them all.
pub(super) fn sync_tasks(conn: &Connection, tasks: &[TaskDef]) -> StoreResult<Vec<TaskRecord>> {
    let now = now_ms();
    let mut upsert = conn.prepare_cached(
        "INSERT INTO tasks (name, version, definition, updated_at) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (name) DO UPDATE SET version = excluded.version,
             definition = excluded.definition, updated_at = excluded.updated_at",
    )?;
    for t in tasks {
        upsert.execute(params![t.name, t.version, to_json(&t.definition)?, now])?;
    }
    list_tasks(conn)
}

/// Every task, by id.
pub(super) fn list_tasks(conn: &Connection) -> StoreResult<Vec<TaskRecord>> {
    let mut stmt =
        conn.prepare_cached("SELECT id, name, version, definition FROM tasks ORDER BY id")?;
    let rows = stmt.query_map([], |r| {
        Ok((r.get::<_, i64>(0)?, r.get(1)?, r.get(2)?, r.get::<_, String>(3)?))
    })?;
    let mut tasks = Vec::new();
    for row in rows {
        let (id, name, version, definition): (i64, String, Option<String>, String) = row?;
        let definition = serde_json::from_str(&definition).map_err(|e| {
            StoreError::Backend(format!("task {name:?} has an unreadable definition: {e}"))
        })?;
        tasks.push(TaskRecord { id, name, version, definition });
    }
    Ok(tasks)
}

/// Inserts a job, or finds the one with the same `client_job_id`.
pub(super) fn create(conn: &Connection, job: NewJob) -> StoreResult<(Job, bool)> {
    let now = now_ms();
    let inserted = conn
        .prepare_cached(
            "INSERT INTO jobs (uuid, client_job_id, task_id, task_name, task_version, priority,
                 status, input_data, metadata, output_destinations, destinations, executable,
                 queued_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'queued', ?7, ?8, ?9, ?10, ?11, ?12, ?12)
             ON CONFLICT (client_job_id) DO NOTHING",
        )?
        .execute(params![
            job.uuid.to_string(),
            job.client_job_id,
            job.task_id,
            job.task_name,
            job.task_version,
            priority_rank(job.priority),
            to_json(&job.input_data)?,
            to_json(&job.metadata)?,
            to_json(&job.output_destinations)?,
            to_json(&job.destinations)?,
            job.executable,
            now,
        ])?;
    if inserted == 1 {
        // Built from what was just written rather than read back: submits are the hottest
        // write path.
        let at = from_ms(now);
        let created = Job {
            id: conn.last_insert_rowid(),
            uuid: job.uuid,
            client_job_id: job.client_job_id,
            task_id: job.task_id,
            task_name: job.task_name,
            task_version: job.task_version,
            priority: job.priority,
            status: JobStatus::Queued,
            progress: None,
            error: None,
            input_data: job.input_data,
            metadata: job.metadata,
            output_destinations: job.output_destinations,
            destinations: job.destinations,
            executable: job.executable,
            queued_at: at,
            started_at: None,
            finished_at: None,
            updated_at: at,
            output_version: None,
            log: None,
        };
        return Ok((created, true));
    }
    let existing = conn
        .prepare_cached(&format!("SELECT {JOB_COLS} FROM jobs j WHERE j.client_job_id = ?1"))?
        .query_row([&job.client_job_id], job_from_row)
        .optional()?;
    match existing {
        Some(j) => Ok((j, false)),
        None => Err(StoreError::Backend(format!(
            "job {} was not inserted and no job has client job id {:?}",
            job.uuid, job.client_job_id
        ))),
    }
}

fn conflict(job: &Job, message: String) -> StoreError {
    StoreError::Conflict { message, current_status: Some(job.status) }
}

fn check_transition(job: &Job, next: JobStatus) -> StoreResult<()> {
    if job.status.can_become(next) {
        Ok(())
    } else {
        Err(conflict(
            job,
            format!("job {} is {}; cannot become {}", job.id, job.status.as_str(), next.as_str()),
        ))
    }
}

fn check_progress(job: &Job, progress: Option<u8>) -> StoreResult<()> {
    match progress {
        Some(p) if p > 100 => Err(conflict(
            job,
            format!("progress of job {} must be between 0 and 100, got {p}", job.id),
        )),
        _ => Ok(()),
    }
}

/// Writes a (validated) status: `started_at` on the first `running`, `finished_at` and no
/// lease once terminal.
fn set_status(
    conn: &Connection,
    id: i64,
    status: JobStatus,
    progress: Option<u8>,
    error: Option<&str>,
    now: i64,
) -> StoreResult<()> {
    conn.prepare_cached(
        "UPDATE jobs SET status = ?2, progress = COALESCE(?3, progress),
             error = COALESCE(?4, error),
             started_at = CASE WHEN ?2 = 'running' THEN COALESCE(started_at, ?5)
                               ELSE started_at END,
             finished_at = CASE WHEN ?6 THEN ?5 ELSE finished_at END,
             lease_owner = CASE WHEN ?6 THEN NULL ELSE lease_owner END,
             lease_until = CASE WHEN ?6 THEN NULL ELSE lease_until END,
             updated_at = ?5
         WHERE id = ?1",
    )?
    .execute(params![id, status.as_str(), progress, error, now, status.is_terminal()])?;
    Ok(())
}

/// A producer's (or the executor's) status report.
pub(super) fn update_status(
    conn: &Connection,
    job: JobRef,
    update: StatusUpdate,
) -> StoreResult<Job> {
    let current = load(conn, job)?;
    check_transition(&current, update.status)?;
    check_progress(&current, update.progress)?;
    set_status(
        conn,
        current.id,
        update.status,
        update.progress,
        update.error.as_deref(),
        now_ms(),
    )?;
    load(conn, JobRef::Id(current.id))
}

/// Output version, deliveries, status, log and error in one go.
pub(super) fn finish(
    conn: &Connection,
    job: JobRef,
    finish: FinishJob,
) -> StoreResult<(Job, Option<OutputMeta>)> {
    let current = load(conn, job)?;
    let id = current.id;
    if current.status == JobStatus::Cancelled {
        return Err(conflict(
            &current,
            format!("job {id} is cancelled; it takes no more output or status"),
        ));
    }
    if let Some(owner) = &finish.lease_owner {
        let holder: Option<String> = conn
            .prepare_cached("SELECT lease_owner FROM jobs WHERE id = ?1")?
            .query_row([id], |r| r.get(0))?;
        if current.status != JobStatus::Running || holder.as_deref() != Some(owner.as_str()) {
            return Err(conflict(
                &current,
                format!(
                    "job {id} is no longer run by {owner} (it is {}: ended, or claimed again \
                     after the lease expired); this run's result is not stored",
                    current.status.as_str()
                ),
            ));
        }
    }
    let now = now_ms();
    if let Some(status) = finish.status {
        // Reporting the terminal status a job already has is a no-op, so a producer may
        // add another output version with the same final status.
        if status != current.status || !status.is_terminal() {
            check_transition(&current, status)?;
            set_status(conn, id, status, None, None, now)?;
        }
    }
    let output = match finish.output {
        Some(out) => {
            let version: u32 = conn
                .prepare_cached(
                    "SELECT COALESCE(MAX(version), 0) + 1 FROM outputs WHERE job_id = ?1",
                )?
                .query_row([id], |r| r.get(0))?;
            let sha256 = hex::encode(Sha256::digest(&out.body));
            conn.prepare_cached(
                "INSERT INTO outputs (job_id, version, kind, content_type, size, sha256,
                     created_at, body)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?
            .execute(params![
                id,
                version,
                out.kind.as_str(),
                out.content_type,
                out.body.len() as i64,
                sha256,
                now,
                &out.body[..],
            ])?;
            conn.prepare_cached(
                "UPDATE jobs SET output_version = ?2, updated_at = ?3 WHERE id = ?1",
            )?
            .execute(params![id, version, now])?;
            Some(OutputMeta {
                job_id: id,
                version,
                kind: out.kind,
                content_type: out.content_type,
                size: out.body.len() as u64,
                sha256,
                created_at: from_ms(now),
            })
        }
        None => None,
    };
    if !finish.deliveries.is_empty() {
        let version = match (&output, current.output_version) {
            (Some(o), _) => o.version,
            (None, Some(v)) => v,
            (None, None) => {
                return Err(conflict(
                    &current,
                    format!("job {id} has no output yet; there is nothing to deliver"),
                ));
            }
        };
        let mut insert = conn.prepare_cached(
            "INSERT INTO deliveries (id, job_id, output_version, destination_name,
                 destination_type, destination, destination_key, state, attempts,
                 next_attempt_at, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 0, ?9, ?10, ?10)",
        )?;
        for d in &finish.deliveries {
            let due = d.deliver_at.map(to_ms).unwrap_or(now);
            let state = if due > now { "scheduled" } else { "pending" };
            insert.execute(params![
                d.id,
                id,
                version,
                d.destination_name,
                d.destination_type,
                to_json(&d.destination)?,
                d.destination_key,
                state,
                due,
                now,
            ])?;
        }
    }
    if finish.log.is_some() || finish.error.is_some() {
        conn.prepare_cached(
            "UPDATE jobs SET log = COALESCE(?2, log), error = COALESCE(?3, error),
                 updated_at = ?4
             WHERE id = ?1",
        )?
        .execute(params![id, finish.log, finish.error, now])?;
    }
    Ok((load(conn, JobRef::Id(id))?, output))
}

/// Queued or running → cancelled.
pub(super) fn cancel(conn: &Connection, job: JobRef) -> StoreResult<Job> {
    let current = load(conn, job)?;
    if current.status.is_terminal() {
        return Err(conflict(
            &current,
            format!("job {} is {}; it cannot be cancelled", current.id, current.status.as_str()),
        ));
    }
    set_status(conn, current.id, JobStatus::Cancelled, None, None, now_ms())?;
    load(conn, JobRef::Id(current.id))
}

/// Deletes a job; the schema cascades to outputs, deliveries and attempts.
pub(super) fn delete(conn: &Connection, job: JobRef, force: bool) -> StoreResult<()> {
    let current = load(conn, job)?;
    if current.status == JobStatus::Running && !force {
        return Err(conflict(
            &current,
            format!("job {} is running; cancel it first or delete with force", current.id),
        ));
    }
    conn.prepare_cached("DELETE FROM jobs WHERE id = ?1")?.execute([current.id])?;
    Ok(())
}

/// An output version (the latest by default) and its bytes.
pub(super) fn output(
    conn: &Connection,
    job: JobRef,
    version: Option<u32>,
) -> StoreResult<(OutputMeta, Bytes)> {
    let current = load(conn, job)?;
    let id = current.id;
    let wanted = match version.or(current.output_version) {
        Some(v) => v,
        None => return Err(StoreError::NotFound(format!("job {id} has no output yet"))),
    };
    conn.prepare_cached(&format!(
        "SELECT {OUTPUT_COLS}, o.body FROM outputs o WHERE o.job_id = ?1 AND o.version = ?2"
    ))?
    .query_row(params![id, wanted], |r| {
        Ok((output_from_row(r)?, Bytes::from(r.get::<_, Vec<u8>>(7)?)))
    })
    .optional()?
    .ok_or_else(|| StoreError::NotFound(format!("job {id} has no output version {wanted}")))
}

/// Filters as SQL conditions and their parameters.
fn job_filters(q: &JobQuery) -> (String, Vec<SqlValue>) {
    let mut conds: Vec<&str> = Vec::new();
    let mut args: Vec<SqlValue> = Vec::new();
    if let Some(s) = q.status {
        conds.push("j.status = ?");
        args.push(SqlValue::Text(s.as_str().into()));
    }
    if let Some(t) = &q.task_name {
        conds.push("j.task_name = ?");
        args.push(SqlValue::Text(t.clone()));
    }
    if let Some(p) = q.priority {
        conds.push("j.priority = ?");
        args.push(SqlValue::Integer(priority_rank(p)));
    }
    if let Some(tag) = &q.tag {
        conds.push(
            "json_type(j.metadata, '$.tags') = 'array'
             AND EXISTS (SELECT 1 FROM json_each(j.metadata, '$.tags') t
                         WHERE t.type = 'text' AND t.value = ?)",
        );
        args.push(SqlValue::Text(tag.clone()));
    }
    if let Some(t) = q.created_after {
        conds.push("j.queued_at >= ?");
        args.push(SqlValue::Integer(to_ms(t)));
    }
    if let Some(t) = q.created_before {
        conds.push("j.queued_at < ?");
        args.push(SqlValue::Integer(to_ms(t)));
    }
    let clause =
        if conds.is_empty() { String::new() } else { format!("WHERE {}", conds.join(" AND ")) };
    (clause, args)
}

/// SQLite's "no limit" for a query's `limit` of 0.
pub(super) fn sql_limit(limit: u64) -> i64 {
    if limit == 0 { -1 } else { limit.min(i64::MAX as u64) as i64 }
}

/// A filtered, sorted page of jobs and the total.
pub(super) fn list(conn: &Connection, q: &JobQuery) -> StoreResult<Page<Job>> {
    let (clause, mut args) = job_filters(q);
    let total: i64 = conn
        .prepare_cached(&format!("SELECT COUNT(*) FROM jobs j {clause}"))?
        .query_row(params_from_iter(args.iter()), |r| r.get(0))?;
    let order = match q.sort {
        JobSort::CreatedDesc => "j.id DESC",
        JobSort::CreatedAsc => "j.id ASC",
        JobSort::UpdatedDesc => "j.updated_at DESC, j.id DESC",
        JobSort::UpdatedAsc => "j.updated_at ASC, j.id ASC",
    };
    args.push(SqlValue::Integer(sql_limit(q.limit)));
    args.push(SqlValue::Integer(q.offset.min(i64::MAX as u64) as i64));
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {JOB_COLS} FROM jobs j {clause} ORDER BY {order} LIMIT ? OFFSET ?"
    ))?;
    let items = stmt
        .query_map(params_from_iter(args.iter()), job_from_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(Page { items, total: total as u64 })
}

/// Claims runnable jobs: queued ones and running ones whose executor's lease ran out.
pub(super) fn claim(
    conn: &Connection,
    owner: &str,
    limit: usize,
    lease: Duration,
) -> StoreResult<Vec<Job>> {
    if limit == 0 {
        return Ok(Vec::new());
    }
    let now = now_ms();
    let n = limit as i64;
    // Both queries walk a partial index in claim order; merging the two short lists keeps
    // priority-then-FIFO order across them.
    let mut candidates: Vec<(i64, i64)> = Vec::with_capacity(limit);
    {
        let mut queued = conn.prepare_cached(
            "SELECT priority, id FROM jobs INDEXED BY jobs_queue
             WHERE executable = 1 AND status = 'queued'
             ORDER BY priority DESC, id LIMIT ?1",
        )?;
        for row in queued.query_map([n], |r| Ok((r.get(0)?, r.get(1)?)))? {
            candidates.push(row?);
        }
        let mut expired = conn.prepare_cached(
            "SELECT priority, id FROM jobs INDEXED BY jobs_leases
             WHERE executable = 1 AND status = 'running'
                 AND lease_until < ?1
             ORDER BY lease_until LIMIT ?2",
        )?;
        for row in expired.query_map(params![now, n], |r| Ok((r.get(0)?, r.get(1)?)))? {
            candidates.push(row?);
        }
    }
    candidates.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    candidates.truncate(limit);
    let until = now.saturating_add(lease.as_millis().min(i64::MAX as u128) as i64);
    let mut mark = conn.prepare_cached(
        "UPDATE jobs SET status = 'running', started_at = COALESCE(started_at, ?2),
             lease_owner = ?3, lease_until = ?4, updated_at = ?2
         WHERE id = ?1",
    )?;
    let mut jobs = Vec::with_capacity(candidates.len());
    for (_, id) in candidates {
        mark.execute(params![id, now, owner, until])?;
        jobs.push(load(conn, JobRef::Id(id))?);
    }
    Ok(jobs)
}

/// Extends this owner's leases on running jobs; returns the ids renewed (sorted).
pub(super) fn renew_leases(
    conn: &Connection,
    owner: &str,
    jobs: &[i64],
    lease: Duration,
) -> StoreResult<Vec<i64>> {
    let until = now_ms().saturating_add(lease.as_millis().min(i64::MAX as u128) as i64);
    let mut stmt = conn.prepare_cached(
        "UPDATE jobs SET lease_until = ?3
         WHERE id IN (SELECT value FROM json_each(?1)) AND lease_owner = ?2
             AND status = 'running'
         RETURNING id",
    )?;
    let mut renewed = stmt
        .query_map(params![to_json(&jobs)?, owner, until], |r| r.get::<_, i64>(0))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    renewed.sort_unstable();
    Ok(renewed)
}
