//! Deliveries and dead letters: list, inspect, retry one, replay by filter, purge.

use axum::Json;
use axum::extract::{Path, RawQuery, State};
use outflow_core::config::FieldReader;
use outflow_core::delivery::{Delivery, DeliveryState};
use outflow_store::DeliveryQuery;
use serde_json::{Map, Value};

use crate::dto::{DeadLetterFilter, DeliveryListParams, DeliveryView, PurgeResult, ReplayResult};
use crate::extract::{JobPath, OptionalJsonObject};
use crate::pagination::{ListResponse, PageRequest, QueryParams, parse_time};
use crate::problem::{FieldError, Problem};
use crate::state::AppState;

const STATES: [&str; 5] = ["pending", "in_flight", "scheduled", "delivered", "dead"];

fn view(
    state: &AppState,
    d: &Delivery,
    attempts: Option<&[outflow_core::attempt::AttemptRecord]>,
) -> DeliveryView {
    DeliveryView::new(d, &state.resolve_target(&d.destination), attempts)
}

/// A job's deliveries, each with every attempt.
#[utoipa::path(
    get, path = "/api/v1/jobs/{id}/deliveries", tag = "deliveries",
    params(("id" = String, Path, description = "Numeric id or job_uuid")),
    responses(
        (status = 200, description = "Every delivery of every output version of the job", body = ListResponse<DeliveryView>,
            headers(("X-Total-Count" = u64, description = "Deliveries of the job"))),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn job_deliveries(
    State(state): State<AppState>,
    JobPath(job): JobPath,
) -> Result<ListResponse<DeliveryView>, Problem> {
    let all = state.store.job_deliveries(job).await?;
    let data: Vec<DeliveryView> =
        all.iter().map(|(d, attempts)| view(&state, d, Some(attempts))).collect();
    let total = data.len() as u64;
    let page = PageRequest { offset: 0, limit: total, page: 1 };
    Ok(ListResponse::new(data, total, &page))
}

/// List deliveries (the dead-letter list is `state=dead`).
#[utoipa::path(
    get, path = "/api/v1/deliveries", tag = "deliveries",
    params(DeliveryListParams),
    responses(
        (status = 200, description = "One page of deliveries, newest first (attempt records left out)", body = ListResponse<DeliveryView>,
            headers(("X-Total-Count" = u64, description = "Deliveries matching the filters"))),
        (status = 400, body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list_deliveries(
    State(state): State<AppState>,
    RawQuery(raw): RawQuery,
) -> Result<ListResponse<DeliveryView>, Problem> {
    let mut q = QueryParams::parse(raw.as_deref())?;
    let delivery_state = q.one_of("state", &STATES, DeliveryState::parse)?;
    let destination_type = q.string("destination_type");
    let job_id = q.i64("job_id")?;
    let created_after = q.time("created_after")?;
    let created_before = q.time("created_before")?;
    let page = PageRequest::from_query(&mut q)?;
    q.finish()?;
    let query = DeliveryQuery {
        state: delivery_state,
        destination_type,
        job_id,
        created_after,
        created_before,
        offset: page.offset,
        limit: page.limit,
    };
    let found = state.store.list_deliveries(&query).await?;
    let data = found.items.iter().map(|d| view(&state, d, None)).collect();
    Ok(ListResponse::new(data, found.total, &page))
}

/// One delivery with every attempt.
#[utoipa::path(
    get, path = "/api/v1/deliveries/{id}", tag = "deliveries",
    params(("id" = String, Path, description = "Delivery id (dlv_...)")),
    responses(
        (status = 200, body = DeliveryView),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn get_delivery(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<DeliveryView>, Problem> {
    let delivery = state.store.get_delivery(&id).await?;
    let attempts = state.store.list_attempts(&id).await?;
    Ok(Json(view(&state, &delivery, Some(&attempts))))
}

/// Requeue one dead (or scheduled) delivery now; its attempt history is kept.
#[utoipa::path(
    post, path = "/api/v1/deliveries/{id}/retry", tag = "deliveries",
    params(("id" = String, Path, description = "Delivery id (dlv_...)")),
    responses(
        (status = 200, description = "Requeued (state pending)", body = DeliveryView),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Not dead or scheduled (already delivered, in flight...)", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn retry_delivery(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<DeliveryView>, Problem> {
    let delivery = state.store.retry_delivery(&id).await?;
    state.engine.wake_deliveries();
    Ok(Json(view(&state, &delivery, None)))
}

/// Reads a dead-letter filter from a JSON body, with every problem and unknown key reported.
fn filter_from_body(body: &Map<String, Value>) -> Result<DeliveryQuery, Problem> {
    let mut r = FieldReader::new(body, "");
    let destination_type = r.string("destination_type");
    let job_id = r.optional::<i64>("job_id", "a job's numeric id");
    let time = |r: &mut FieldReader, key: &'static str| match r.string(key) {
        None => None,
        Some(v) => match parse_time(&v) {
            Ok(t) => Some(t),
            Err(m) => {
                r.error(key, m);
                None
            }
        },
    };
    let created_after = time(&mut r, "created_after");
    let created_before = time(&mut r, "created_before");
    let errors = r.finish();
    if !errors.is_empty() {
        return Err(Problem::validation(errors.into_iter().map(FieldError::from).collect()));
    }
    Ok(DeliveryQuery {
        state: Some(DeliveryState::Dead),
        destination_type,
        job_id,
        created_after,
        created_before,
        offset: 0,
        limit: 0,
    })
}

/// Reads the same filter from a query string.
fn filter_from_query(raw: Option<&str>) -> Result<DeliveryQuery, Problem> {
    let mut q = QueryParams::parse(raw)?;
    let filter = DeliveryQuery {
        state: Some(DeliveryState::Dead),
        destination_type: q.string("destination_type"),
        job_id: q.i64("job_id")?,
        created_after: q.time("created_after")?,
        created_before: q.time("created_before")?,
        offset: 0,
        limit: 0,
    };
    q.finish()?;
    Ok(filter)
}

fn is_unfiltered(f: &DeliveryQuery) -> bool {
    f.destination_type.is_none()
        && f.job_id.is_none()
        && f.created_after.is_none()
        && f.created_before.is_none()
}

/// Requeue every dead delivery matching a filter (`{}` = all of them).
#[utoipa::path(
    post, path = "/api/v1/deliveries/replay", tag = "deliveries",
    request_body(content = DeadLetterFilter, description = "Which dead deliveries; an empty body or `{}` means all"),
    responses(
        (status = 200, body = ReplayResult),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn replay_dead(
    State(state): State<AppState>,
    OptionalJsonObject(body): OptionalJsonObject,
) -> Result<Json<ReplayResult>, Problem> {
    let filter = filter_from_body(&body)?;
    let requeued = state.store.replay_dead(&filter).await?;
    if requeued > 0 {
        state.engine.wake_deliveries();
    }
    tracing::info!(requeued, "dead deliveries replayed");
    Ok(Json(ReplayResult { requeued }))
}

/// Delete every dead delivery matching a filter, given as a JSON body or as query
/// parameters (not both; neither = all dead deliveries).
#[utoipa::path(
    delete, path = "/api/v1/deliveries/dead", tag = "deliveries",
    params(DeadLetterFilter),
    request_body(content = DeadLetterFilter, description = "Which dead deliveries (or use the query parameters)"),
    responses(
        (status = 200, body = PurgeResult),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn purge_dead(
    State(state): State<AppState>,
    RawQuery(raw): RawQuery,
    OptionalJsonObject(body): OptionalJsonObject,
) -> Result<Json<PurgeResult>, Problem> {
    let from_query = filter_from_query(raw.as_deref())?;
    let from_body = filter_from_body(&body)?;
    let filter = match (is_unfiltered(&from_query), body.is_empty()) {
        (true, _) => from_body,
        (false, true) => from_query,
        (false, false) => {
            return Err(Problem::bad_request(
                "give the filter either as query parameters or as a JSON body, not both",
            ));
        }
    };
    let purged = state.store.purge_dead(&filter).await?;
    tracing::info!(purged, "dead deliveries purged");
    Ok(Json(PurgeResult { purged }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn filters() {
        let f = filter_from_body(
            json!({"destination_type": "webhook", "job_id": 4}).as_object().unwrap(),
        )
        .unwrap();
        assert_eq!(f.state, Some(DeliveryState::Dead));
        assert_eq!(f.job_id, Some(4));
        let p =
            filter_from_body(json!({"created_after": "yesterday", "typ": 1}).as_object().unwrap())
                .unwrap_err();
        assert_eq!(p.errors[0].path, "created_after");
        assert_eq!(p.errors[1].path, "typ");
        let f = filter_from_query(Some("job_id=7")).unwrap();
        assert_eq!(f.job_id, Some(7));
        assert!(filter_from_query(Some("state=dead")).is_err());
    }
}
