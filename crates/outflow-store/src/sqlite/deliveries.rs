//! Delivery operations: the engine's claim/complete cycle and the dead-letter tools.

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use outflow_core::attempt::AttemptRecord;
use outflow_core::delivery::{Delivery, DeliveryState};
use outflow_core::job::JobStatus;
use rusqlite::types::Value as SqlValue;
use rusqlite::{Connection, OptionalExtension, params, params_from_iter};

use super::jobs::{self, sql_limit};
use super::rows::{
    ATTEMPT_COLS, DELIVERY_COLS, JOB_COLS, OUTPUT_COLS, attempt_from_row, delivery_from_row,
    failure_class_name, from_ms, job_at, now_ms, output_at, to_json, to_ms,
};
use crate::{
    AttemptOutcome, AttemptResult, ClaimedDelivery, DeliveryQuery, JobRef, Page, StoreError,
    StoreResult, StoreStats,
};

fn not_found(id: &str) -> StoreError {
    StoreError::NotFound(format!("delivery {id} not found"))
}

/// Latest lease end: the last millisecond of year 9999. The lease end is a claim's fencing
/// token and travels as a `DateTime`, so it must stay representable.
const MAX_LEASE_END: i64 = 253_402_300_799_999;

fn lease_end(now: i64, lease: Duration) -> i64 {
    now.saturating_add(lease.as_millis().min(i64::MAX as u128) as i64).min(MAX_LEASE_END)
}

/// One delivery.
pub(super) fn load(conn: &Connection, id: &str) -> StoreResult<Delivery> {
    conn.prepare_cached(&format!(
        "SELECT {DELIVERY_COLS} FROM deliveries d JOIN jobs j ON j.id = d.job_id WHERE d.id = ?1"
    ))?
    .query_row([id], delivery_from_row)
    .optional()?
    .ok_or_else(|| not_found(id))
}

/// A delivery's attempts, oldest first.
pub(super) fn attempts(conn: &Connection, id: &str) -> StoreResult<Vec<AttemptRecord>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {ATTEMPT_COLS} FROM attempts WHERE delivery_id = ?1 ORDER BY number"
    ))?;
    let rows = stmt.query_map([id], attempt_from_row)?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Attempts of a delivery that must exist.
pub(super) fn list_attempts(conn: &Connection, id: &str) -> StoreResult<Vec<AttemptRecord>> {
    let exists = conn
        .prepare_cached("SELECT 1 FROM deliveries WHERE id = ?1")?
        .query_row([id], |_| Ok(()))
        .optional()?;
    if exists.is_none() {
        return Err(not_found(id));
    }
    attempts(conn, id)
}

/// Claims due deliveries for `owner`, with the job and output each needs.
pub(super) fn claim(
    conn: &Connection,
    owner: &str,
    limit: usize,
    lease: Duration,
    skip_keys: &[String],
) -> StoreResult<Vec<ClaimedDelivery>> {
    if limit == 0 {
        return Ok(Vec::new());
    }
    let now = now_ms();
    let skip = to_json(&skip_keys)?;
    let n = limit as i64;
    let mut ids: Vec<(i64, String)> = Vec::with_capacity(limit);
    {
        // Expired leases first: that work has waited longest. Each query walks a partial
        // index in order, so finished deliveries cost nothing however many there are.
        let mut expired = conn.prepare_cached(
            "SELECT lease_until, id FROM deliveries INDEXED BY deliveries_leases
             WHERE state = 'in_flight' AND lease_until < ?1
                 AND destination_key NOT IN (SELECT value FROM json_each(?2))
             ORDER BY lease_until LIMIT ?3",
        )?;
        for row in expired.query_map(params![now, skip, n], |r| Ok((r.get(0)?, r.get(1)?)))? {
            ids.push(row?);
        }
        if ids.len() < limit {
            let mut due = conn.prepare_cached(
                "SELECT next_attempt_at, id FROM deliveries INDEXED BY deliveries_due
                 WHERE state IN ('pending', 'scheduled') AND next_attempt_at <= ?1
                     AND destination_key NOT IN (SELECT value FROM json_each(?2))
                 ORDER BY next_attempt_at LIMIT ?3",
            )?;
            let rest = (limit - ids.len()) as i64;
            for row in due.query_map(params![now, skip, rest], |r| Ok((r.get(0)?, r.get(1)?)))? {
                ids.push(row?);
            }
        }
    }
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let until = lease_end(now, lease);
    let id_list = to_json(&ids.iter().map(|(_, id)| id).collect::<Vec<_>>())?;
    conn.prepare_cached(
        "UPDATE deliveries SET state = 'in_flight', lease_owner = ?2, lease_until = ?3,
             updated_at = ?4
         WHERE id IN (SELECT value FROM json_each(?1))",
    )?
    .execute(params![id_list, owner, until, now])?;
    // One query for the deliveries with their jobs and output versions.
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {DELIVERY_COLS}, {JOB_COLS}, {OUTPUT_COLS}, o.body
         FROM deliveries d
         JOIN jobs j ON j.id = d.job_id
         JOIN outputs o ON o.job_id = d.job_id AND o.version = d.output_version
         WHERE d.id IN (SELECT value FROM json_each(?1))"
    ))?;
    let job_at_col = DELIVERY_COLS.split(',').count();
    let output_at_col = job_at_col + JOB_COLS.split(',').count();
    let body_col = output_at_col + OUTPUT_COLS.split(',').count();
    let mut by_id: HashMap<String, ClaimedDelivery> = stmt
        .query_map([&id_list], |r| {
            Ok(ClaimedDelivery {
                delivery: delivery_from_row(r)?,
                job: job_at(r, job_at_col)?,
                output: output_at(r, output_at_col)?,
                body: Bytes::from(r.get::<_, Vec<u8>>(body_col)?),
                lease_until: from_ms(until),
            })
        })?
        .map(|c| c.map(|c| (c.delivery.id.clone(), c)))
        .collect::<rusqlite::Result<_>>()?;
    // Claim order: expired leases, then oldest due first.
    let claimed = ids.into_iter().filter_map(|(_, id)| by_id.remove(&id)).collect();
    Ok(claimed)
}

/// Records attempts of deliveries still held by the claim that made them (same owner and
/// lease end) and moves them on.
pub(super) fn complete(
    conn: &Connection,
    owner: &str,
    results: Vec<AttemptResult>,
) -> StoreResult<usize> {
    let now = now_ms();
    let mut update = conn.prepare_cached(
        "UPDATE deliveries SET state = ?3, attempts = ?4, last_error = ?5,
             last_status_code = ?6, next_attempt_at = ?7,
             delivered_at = CASE WHEN ?3 = 'delivered' THEN ?8 ELSE delivered_at END,
             lease_owner = NULL, lease_until = NULL, updated_at = ?8
         WHERE id = ?1 AND lease_owner = ?2 AND lease_until = ?9 AND state = 'in_flight'",
    )?;
    // A record is history: a result that reaches this point twice (which the fencing above
    // should prevent) must not rewrite what was recorded.
    let mut insert = conn.prepare_cached(
        "INSERT INTO attempts (delivery_id, number, started_at, duration_ms,
             status_code, error, failure_class, response_excerpt, next_retry_in_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
         ON CONFLICT (delivery_id, number) DO NOTHING",
    )?;
    let mut applied = 0;
    for r in results {
        let a = &r.attempt;
        let (state, next) = match r.outcome {
            AttemptOutcome::Delivered => ("delivered", None),
            AttemptOutcome::RetryAt(t) => ("scheduled", Some(to_ms(t))),
            AttemptOutcome::Dead => ("dead", None),
        };
        let changed = update.execute(params![
            r.delivery_id,
            owner,
            state,
            a.number,
            a.error,
            a.status_code,
            next,
            now,
            to_ms(r.lease_until),
        ])?;
        if changed == 0 {
            tracing::debug!(delivery = %r.delivery_id, owner, "attempt result ignored: its claim no longer holds the delivery");
            continue;
        }
        insert.execute(params![
            r.delivery_id,
            a.number,
            to_ms(a.started_at),
            a.duration_ms.min(i64::MAX as u64) as i64,
            a.status_code,
            a.error,
            a.failure_class.map(failure_class_name),
            a.response_excerpt,
            a.next_retry_in.map(|d| d.as_millis().min(i64::MAX as u128) as i64),
        ])?;
        applied += 1;
    }
    Ok(applied)
}

/// Gives claimed deliveries back, due now.
pub(super) fn release(conn: &Connection, owner: &str, ids: &[String]) -> StoreResult<()> {
    let now = now_ms();
    conn.prepare_cached(
        "UPDATE deliveries SET state = 'pending', next_attempt_at = ?3, lease_owner = NULL,
             lease_until = NULL, updated_at = ?3
         WHERE id IN (SELECT value FROM json_each(?1)) AND lease_owner = ?2
             AND state = 'in_flight'",
    )?
    .execute(params![to_json(&ids)?, owner, now])?;
    Ok(())
}

/// When work next becomes due: a pending/scheduled delivery or an expiring lease.
pub(super) fn next_due_at(conn: &Connection) -> StoreResult<Option<chrono::DateTime<chrono::Utc>>> {
    let due: Option<i64> = conn
        .prepare_cached(
            "SELECT MIN(next_attempt_at) FROM deliveries INDEXED BY deliveries_due
             WHERE state IN ('pending', 'scheduled')",
        )?
        .query_row([], |r| r.get(0))?;
    let lease: Option<i64> = conn
        .prepare_cached(
            "SELECT MIN(lease_until) FROM deliveries INDEXED BY deliveries_leases
             WHERE state = 'in_flight'",
        )?
        .query_row([], |r| r.get(0))?;
    Ok(match (due, lease) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
    .map(from_ms))
}

/// Filters as SQL conditions and parameters; `state` overrides the query's own state.
fn delivery_filters(q: &DeliveryQuery, state: Option<DeliveryState>) -> (String, Vec<SqlValue>) {
    let mut conds: Vec<&str> = Vec::new();
    let mut args: Vec<SqlValue> = Vec::new();
    if let Some(s) = state.or(q.state) {
        conds.push("d.state = ?");
        args.push(SqlValue::Text(s.as_str().into()));
    }
    if let Some(t) = &q.destination_type {
        conds.push("d.destination_type = ?");
        args.push(SqlValue::Text(t.clone()));
    }
    if let Some(j) = q.job_id {
        conds.push("d.job_id = ?");
        args.push(SqlValue::Integer(j));
    }
    if let Some(t) = q.created_after {
        conds.push("d.created_at >= ?");
        args.push(SqlValue::Integer(to_ms(t)));
    }
    if let Some(t) = q.created_before {
        conds.push("d.created_at < ?");
        args.push(SqlValue::Integer(to_ms(t)));
    }
    let clause =
        if conds.is_empty() { String::new() } else { format!("WHERE {}", conds.join(" AND ")) };
    (clause, args)
}

/// A filtered page of deliveries, newest first.
pub(super) fn list(conn: &Connection, q: &DeliveryQuery) -> StoreResult<Page<Delivery>> {
    let (clause, mut args) = delivery_filters(q, None);
    let total: i64 = conn
        .prepare_cached(&format!("SELECT COUNT(*) FROM deliveries d {clause}"))?
        .query_row(params_from_iter(args.iter()), |r| r.get(0))?;
    args.push(SqlValue::Integer(sql_limit(q.limit)));
    args.push(SqlValue::Integer(q.offset.min(i64::MAX as u64) as i64));
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {DELIVERY_COLS} FROM deliveries d JOIN jobs j ON j.id = d.job_id {clause}
         ORDER BY d.created_at DESC, d.id DESC LIMIT ? OFFSET ?"
    ))?;
    let items = stmt
        .query_map(params_from_iter(args.iter()), delivery_from_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(Page { items, total: total as u64 })
}

/// A job's deliveries (by output version, then creation) with their attempts.
pub(super) fn of_job(
    conn: &Connection,
    job: JobRef,
) -> StoreResult<Vec<(Delivery, Vec<AttemptRecord>)>> {
    let id = jobs::load(conn, job)?.id;
    let deliveries = conn
        .prepare_cached(&format!(
            "SELECT {DELIVERY_COLS} FROM deliveries d JOIN jobs j ON j.id = d.job_id
             WHERE d.job_id = ?1 ORDER BY d.output_version, d.created_at, d.id"
        ))?
        .query_map([id], delivery_from_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    deliveries
        .into_iter()
        .map(|d| {
            let a = attempts(conn, &d.id)?;
            Ok((d, a))
        })
        .collect()
}

/// Requeues one dead or scheduled delivery now.
pub(super) fn retry(conn: &Connection, id: &str) -> StoreResult<Delivery> {
    let current = load(conn, id)?;
    match current.state {
        DeliveryState::Dead | DeliveryState::Scheduled => {}
        // Already waiting to go: retrying it again changes nothing.
        DeliveryState::Pending => return Ok(current),
        DeliveryState::Delivered | DeliveryState::InFlight => {
            return Err(StoreError::Conflict {
                message: format!(
                    "delivery {id} is {}; only dead or scheduled deliveries can be retried",
                    current.state.as_str()
                ),
                current_status: None,
            });
        }
    }
    let now = now_ms();
    conn.prepare_cached(
        "UPDATE deliveries SET state = 'pending', next_attempt_at = ?2, updated_at = ?2
         WHERE id = ?1",
    )?
    .execute(params![id, now])?;
    load(conn, id)
}

/// Requeues every dead delivery matching the filter.
pub(super) fn replay_dead(conn: &Connection, q: &DeliveryQuery) -> StoreResult<u64> {
    let (clause, mut args) = delivery_filters(q, Some(DeliveryState::Dead));
    let now = now_ms();
    args.insert(0, SqlValue::Integer(now));
    let n = conn
        .prepare_cached(&format!(
            "UPDATE deliveries SET state = 'pending', next_attempt_at = ?1, updated_at = ?1
             WHERE id IN (SELECT d.id FROM deliveries d {clause})"
        ))?
        .execute(params_from_iter(args.iter()))?;
    Ok(n as u64)
}

/// Deletes every dead delivery matching the filter (attempts cascade).
pub(super) fn purge_dead(conn: &Connection, q: &DeliveryQuery) -> StoreResult<u64> {
    let (clause, args) = delivery_filters(q, Some(DeliveryState::Dead));
    let n = conn
        .prepare_cached(&format!(
            "DELETE FROM deliveries WHERE id IN (SELECT d.id FROM deliveries d {clause})"
        ))?
        .execute(params_from_iter(args.iter()))?;
    Ok(n as u64)
}

/// Jobs per status and deliveries per state, zeros included.
pub(super) fn stats(conn: &Connection) -> StoreResult<StoreStats> {
    let mut job_counts: HashMap<String, u64> = HashMap::new();
    let mut stmt = conn.prepare_cached("SELECT status, COUNT(*) FROM jobs GROUP BY status")?;
    for row in stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))? {
        let (s, n) = row?;
        job_counts.insert(s, n as u64);
    }
    let mut delivery_counts: HashMap<String, u64> = HashMap::new();
    let mut stmt = conn.prepare_cached("SELECT state, COUNT(*) FROM deliveries GROUP BY state")?;
    for row in stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))? {
        let (s, n) = row?;
        delivery_counts.insert(s, n as u64);
    }
    Ok(StoreStats {
        jobs_by_status: JobStatus::ALL
            .into_iter()
            .map(|s| (s, job_counts.get(s.as_str()).copied().unwrap_or(0)))
            .collect(),
        deliveries_by_state: DeliveryState::ALL
            .into_iter()
            .map(|s| (s, delivery_counts.get(s.as_str()).copied().unwrap_or(0)))
            .collect(),
    })
}
