//! Configuration views: tasks, global destinations with their circuits, and testing
//! destinations without delivering.

use axum::Json;
use axum::extract::{RawQuery, State};
use outflow_core::config::FieldReader;
use outflow_core::config::redact;
use outflow_destinations::SpecOrigin;
use outflow_destinations::check::check_specs;
use serde_json::Value;

use crate::dto::{
    CircuitView, DestinationView, PageParams, TaskView, TestDestinationResult,
    TestDestinationsRequest, TestDestinationsResponse,
};
use crate::extract::JsonObject;
use crate::pagination::{ListResponse, PageRequest, QueryParams};
use crate::problem::{FieldError, Problem};
use crate::state::AppState;

fn page_of(raw: Option<&str>) -> Result<PageRequest, Problem> {
    let mut q = QueryParams::parse(raw)?;
    let page = PageRequest::from_query(&mut q)?;
    q.finish()?;
    Ok(page)
}

/// Test destinations: validate each and check it is reachable, delivering nothing.
///
/// Seed 000's body `{"destinations": [...]}`. A destination that is invalid or unreachable
/// is reported in the data (`success: false` with the `error`), not as an HTTP error; the
/// destinations are checked concurrently.
#[utoipa::path(
    post, path = "/api/v1/jobs/test-output-destinations", tag = "destinations",
    request_body = TestDestinationsRequest,
    responses(
        (status = 200, body = TestDestinationsResponse),
        (status = 400, description = "Unparsable body", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`destinations` missing or not a list", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn test_output_destinations(
    State(state): State<AppState>,
    JsonObject(body): JsonObject,
) -> Result<Json<TestDestinationsResponse>, Problem> {
    let mut r = FieldReader::new(&body, "");
    let specs: Option<Vec<Value>> =
        r.required("destinations", "a list of destinations, each a mapping with a 'type'");
    let errors = r.finish();
    let Some(specs) = specs.filter(|_| errors.is_empty()) else {
        return Err(Problem::validation(errors.into_iter().map(FieldError::from).collect()));
    };
    let checks =
        check_specs(state.planner().registry(), &specs, "destinations", SpecOrigin::ApiClient)
            .await;
    let data = specs
        .iter()
        .zip(checks)
        .enumerate()
        .map(|(index, (spec, check))| TestDestinationResult {
            index,
            destination_type: spec.get("type").and_then(Value::as_str).map(str::to_string),
            success: check.success,
            error: check.error,
            estimated_time_ms: check.elapsed.as_millis() as u64,
        })
        .collect();
    Ok(Json(TestDestinationsResponse { data }))
}

/// The configured tasks.
#[utoipa::path(
    get, path = "/api/v1/tasks", tag = "tasks",
    params(PageParams),
    responses(
        (status = 200, body = ListResponse<TaskView>,
            headers(("X-Total-Count" = u64, description = "Configured tasks"))),
        (status = 400, body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list_tasks(
    State(state): State<AppState>,
    RawQuery(raw): RawQuery,
) -> Result<ListResponse<TaskView>, Problem> {
    let page = page_of(raw.as_deref())?;
    let all: Vec<TaskView> = state
        .tasks
        .iter()
        .map(|t| TaskView {
            id: t.record.id,
            name: t.record.name.clone(),
            version: t.record.version.clone(),
            has_command: t.config.command.is_some(),
            timeout_seconds: t.config.timeout.map(|d| d.as_secs_f64()),
            output_destinations: t.config.output_destinations.iter().map(redact).collect(),
            destinations: t.config.destinations.clone(),
        })
        .collect();
    Ok(ListResponse::new(page.slice(&all), all.len() as u64, &page))
}

/// The configured global destinations, secrets masked, with their circuit breakers.
#[utoipa::path(
    get, path = "/api/v1/destinations", tag = "destinations",
    params(PageParams),
    responses(
        (status = 200, body = ListResponse<DestinationView>,
            headers(("X-Total-Count" = u64, description = "Configured global destinations"))),
        (status = 400, body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list_destinations(
    State(state): State<AppState>,
    RawQuery(raw): RawQuery,
) -> Result<ListResponse<DestinationView>, Problem> {
    let page = page_of(raw.as_deref())?;
    let circuits = state.engine.circuits();
    let all: Vec<DestinationView> = state
        .config
        .output
        .global_destinations
        .iter()
        .map(|g| {
            let key = state
                .planner()
                .build(&serde_json::json!({ "global": g.name }), &g.name)
                .ok()
                .map(|d| d.isolation_key());
            let circuit = key
                .as_ref()
                .and_then(|k| circuits.iter().find(|c| &c.key == k))
                .map(|c| CircuitView {
                    state: c.state.to_string(),
                    consecutive_failures: c.consecutive_failures,
                })
                .unwrap_or(CircuitView { state: "closed".into(), consecutive_failures: 0 });
            DestinationView {
                name: g.name.clone(),
                description: g.description.clone(),
                kind: g.destination.kind.clone(),
                destination: redact(&g.destination.to_value()),
                isolation_key: key,
                circuit,
            }
        })
        .collect();
    Ok(ListResponse::new(page.slice(&all), all.len() as u64, &page))
}
