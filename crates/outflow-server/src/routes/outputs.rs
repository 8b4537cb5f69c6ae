//! Outputs: producers upload them (`PUT`), clients fetch them (`GET`).

use axum::Json;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use outflow_core::job::{JobStatus, OutputKind};
use outflow_store::{FinishJob, JobRef, NewOutput, StoreError};

use crate::dto::{OutputParams, OutputStoredView};
use crate::extract::{JobPath, LimitedBytes};
use crate::pagination::QueryParams;
use crate::problem::{FieldError, Problem};
use crate::state::AppState;

/// Header with the version of the output returned.
pub static OUTPUT_VERSION: HeaderName = HeaderName::from_static("output-version");
/// Header with the hex SHA-256 of the output returned.
pub static OUTPUT_SHA256: HeaderName = HeaderName::from_static("output-sha256");

/// What an upload's `Content-Type` makes of it: JSON for `application/json` and any
/// `+json` type, text for `text/*`, binary for everything else (or none).
pub fn classify(content_type: Option<&str>) -> (OutputKind, String) {
    let Some(ct) = content_type.map(str::trim).filter(|c| !c.is_empty()) else {
        return (OutputKind::Binary, "application/octet-stream".to_string());
    };
    let essence = ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    let kind = if essence == "application/json" || essence.ends_with("+json") {
        OutputKind::Json
    } else if essence.starts_with("text/") {
        OutputKind::Text
    } else {
        OutputKind::Binary
    };
    (kind, ct.to_string())
}

/// Store an output version and deliver it.
///
/// The body is the output; its `Content-Type` decides the kind (`application/json` and
/// `*+json` → json, which must parse; `text/*` → text, which must be UTF-8; anything else →
/// binary). The version and one delivery per destination of the job are committed in one
/// transaction, then the engine is woken. A queued or running job becomes `succeeded`; a
/// finished one keeps its status (a failed job's output is delivered with `status` =
/// failed); a cancelled job takes no output (409).
#[utoipa::path(
    put, path = "/api/v1/jobs/{id}/output", tag = "outputs",
    params(("id" = String, Path, description = "Numeric id or job_uuid")),
    request_body(content = Vec<u8>, description = "The output bytes", content_type = "*/*"),
    responses(
        (status = 201, description = "Stored as a new version; deliveries created", body = OutputStoredView),
        (status = 400, description = "A JSON or text body that does not parse", body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The job is cancelled", body = Problem, content_type = "application/problem+json"),
        (status = 413, body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "The job's destinations no longer build with the current config", body = Problem, content_type = "application/problem+json"),
        (status = 507, body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn put_output(
    State(state): State<AppState>,
    JobPath(job_ref): JobPath,
    headers: HeaderMap,
    LimitedBytes(body): LimitedBytes,
) -> Result<Response, Problem> {
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
    let (kind, content_type) = classify(content_type);
    match kind {
        OutputKind::Json => {
            if let Err(e) = serde_json::from_slice::<serde_json::Value>(&body) {
                return Err(Problem::bad_request(format!(
                    "the body is not valid JSON although Content-Type is {content_type}: {e} \
                     (send another Content-Type to store it as text or binary)"
                )));
            }
        }
        OutputKind::Text => {
            if let Err(e) = std::str::from_utf8(&body) {
                return Err(Problem::bad_request(format!(
                    "the body is not valid UTF-8 although Content-Type is {content_type}: {e} \
                     (send application/octet-stream to store it as binary)"
                )));
            }
        }
        OutputKind::Binary => {}
    }
    let job = state.store.get_job(job_ref).await?;
    super::jobs::refuse_if_executed(&job)?;
    if job.status == JobStatus::Cancelled {
        return Err(Problem::conflict(
            format!("job {} is cancelled: it takes no output", job.id),
            Some(JobStatus::Cancelled),
        ));
    }
    let deliveries = state.planner().plan(&job).map_err(|e| {
        let mut p = Problem::validation(e.errors.into_iter().map(FieldError::from).collect());
        p.detail = format!(
            "job {}'s destinations no longer build with the current configuration: {}",
            job.id, p.detail
        );
        p
    })?;
    let ids: Vec<String> = deliveries.iter().map(|d| d.id.clone()).collect();
    let output = NewOutput { kind, content_type, body };
    let finish = |status| FinishJob {
        status,
        error: None,
        log: None,
        output: Some(output.clone()),
        deliveries: deliveries.clone(),
        lease_owner: None,
    };
    let status = (!job.status.is_terminal()).then_some(JobStatus::Succeeded);
    let result = match state.store.finish_job(JobRef::Id(job.id), finish(status)).await {
        // The producer reported failed between our read and the commit: keep that status.
        Err(StoreError::Conflict {
            current_status: Some(JobStatus::Succeeded | JobStatus::Failed),
            ..
        }) if status.is_some() => state.store.finish_job(JobRef::Id(job.id), finish(None)).await,
        other => other,
    };
    let (job, meta) = result?;
    let Some(meta) = meta else {
        return Err(Problem::internal("the store did not report the stored output version"));
    };
    if !ids.is_empty() {
        state.engine.wake_deliveries();
    }
    let location = format!("/api/v1/jobs/{}/output?version={}", job.id, meta.version);
    let mut response =
        (StatusCode::CREATED, Json(OutputStoredView::new(&job, &meta, ids))).into_response();
    if let Ok(v) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, v);
    }
    Ok(response)
}

/// Fetch a job's output: the stored bytes with their `Content-Type`.
///
/// The latest version unless `version` is given. `Output-Version` and `Output-Sha256`
/// headers describe what was returned. 404 before the job has any output.
#[utoipa::path(
    get, path = "/api/v1/jobs/{id}/output", tag = "outputs",
    params(("id" = String, Path, description = "Numeric id or job_uuid"), OutputParams),
    responses(
        (status = 200, description = "The output bytes, with the Content-Type they were stored with",
            content_type = "*/*", body = Vec<u8>,
            headers(
                ("Output-Version" = u32, description = "The version returned"),
                ("Output-Sha256" = String, description = "Hex SHA-256 of the bytes"),
            )),
        (status = 404, description = "No such job, no output yet, or no such version", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn get_output(
    State(state): State<AppState>,
    JobPath(job_ref): JobPath,
    RawQuery(raw): RawQuery,
) -> Result<Response, Problem> {
    let mut q = QueryParams::parse(raw.as_deref())?;
    let version = match q.u64("version")? {
        None => None,
        Some(v) if (1..=u64::from(u32::MAX)).contains(&v) => Some(v as u32),
        Some(v) => {
            return Err(Problem::bad_parameter(
                "version",
                format!("must be a version number from 1, got {v}"),
            ));
        }
    };
    q.finish()?;
    let job = state.store.get_job(job_ref).await?;
    let Some(latest) = job.output_version else {
        return Err(Problem::not_found(format!("job {} has no output yet", job.id)));
    };
    if let Some(v) = version
        && v > latest
    {
        return Err(Problem::not_found(format!(
            "job {} has no output version {v}; the latest is {latest}",
            job.id
        )));
    }
    let (meta, bytes) = state.store.get_output(JobRef::Id(job.id), version).await?;
    let mut response = bytes.into_response();
    let headers = response.headers_mut();
    if let Ok(ct) = HeaderValue::from_str(&meta.content_type) {
        headers.insert(header::CONTENT_TYPE, ct);
    }
    headers.insert(OUTPUT_VERSION.clone(), HeaderValue::from(meta.version));
    if let Ok(sha) = HeaderValue::from_str(&meta.sha256) {
        headers.insert(OUTPUT_SHA256.clone(), sha);
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types() {
        assert_eq!(classify(Some("application/json")).0, OutputKind::Json);
        assert_eq!(classify(Some("application/problem+json; charset=utf-8")).0, OutputKind::Json);
        assert_eq!(
            classify(Some("text/csv; charset=utf-8")),
            (OutputKind::Text, "text/csv; charset=utf-8".into())
        );
        assert_eq!(classify(Some("image/png")).0, OutputKind::Binary);
        assert_eq!(classify(None), (OutputKind::Binary, "application/octet-stream".into()));
    }
}
