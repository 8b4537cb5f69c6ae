//! Liveness, readiness and metrics.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

use crate::dto::HealthView;
use crate::problem::Problem;
use crate::state::AppState;

/// Liveness: the process answers.
#[utoipa::path(
    get, path = "/healthz", tag = "operations",
    responses((status = 200, body = HealthView, example = json!({"status": "ok"})))
)]
pub async fn healthz() -> Json<HealthView> {
    Json(HealthView { status: "ok".into() })
}

/// Readiness: the store answers, its schema is the one this build knows, and the server
/// is not shutting down.
#[utoipa::path(
    get, path = "/readyz", tag = "operations",
    responses(
        (status = 200, body = HealthView, example = json!({"status": "ready"})),
        (status = 503, description = "Not ready; the detail says why", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn readyz(State(state): State<AppState>) -> Result<Json<HealthView>, Problem> {
    if state.engine.is_shutting_down() {
        return Err(Problem::unavailable("the server is shutting down"));
    }
    if let Err(e) = state.store.ping().await {
        return Err(Problem::unavailable(format!("the store is unreachable: {e}")));
    }
    if let Some(sqlite) = &state.sqlite {
        match sqlite.migrations_applied().await {
            Ok(true) => {}
            Ok(false) => {
                return Err(Problem::unavailable(format!(
                    "the database schema is not the version this build expects ({})",
                    outflow_store::sqlite::SCHEMA_VERSION
                )));
            }
            Err(e) => {
                return Err(Problem::unavailable(format!("cannot read the schema version: {e}")));
            }
        }
    }
    Ok(Json(HealthView { status: "ready".into() }))
}

/// Prometheus metrics (text exposition format).
///
/// Jobs by status, deliveries by state, queue depth, dead letters and circuit state per
/// destination key (read at scrape time), plus the engine's attempt counters by destination
/// type and outcome, attempt latency histograms, bytes delivered and executed jobs.
#[utoipa::path(
    get, path = "/metrics", tag = "operations",
    responses(
        (status = 200, description = "Prometheus text", content_type = "text/plain; version=0.0.4", body = String),
        (status = 500, body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn metrics(State(state): State<AppState>) -> Result<Response, Problem> {
    let stats = state.store.stats().await?;
    let body = crate::metrics::render(&stats, &state.engine.circuits());
    let mut response = body.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    Ok(response)
}
