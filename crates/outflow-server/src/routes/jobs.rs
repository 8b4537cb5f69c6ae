//! Jobs: submit, list, inspect, status reports from producers, cancel, delete.

use axum::Json;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use outflow_core::config::FieldReader;
use outflow_core::config::reader::type_name;
use outflow_core::context::Priority;
use outflow_core::job::JobStatus;
use outflow_store::{JobQuery, JobSort, NewJob, StatusUpdate};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::dto::{
    DeleteParams, JobListParams, JobStatusView, JobView, StatusUpdateRequest, SubmitJobRequest,
};
use crate::extract::{JobPath, JsonObject};
use crate::pagination::{ListResponse, PageRequest, QueryParams};
use crate::problem::{FieldError, Problem};
use crate::state::AppState;

const PRIORITIES: [&str; 4] = ["low", "normal", "high", "urgent"];
const STATUSES: [&str; 5] = ["queued", "running", "succeeded", "failed", "cancelled"];
const MAX_CLIENT_JOB_ID: usize = 255;

/// The validated fields of a submit body.
struct Submit {
    task_id: Option<i64>,
    task_name: Option<String>,
    input_data: Value,
    priority: Priority,
    output_destinations: Option<Vec<Value>>,
    destinations: Option<Vec<String>>,
    client_job_id: Option<String>,
    metadata: Map<String, Value>,
}

fn read_submit(body: &Map<String, Value>) -> Result<Submit, Problem> {
    let mut r = FieldReader::new(body, "");
    let task_id = r.optional::<i64>("task_id", "an integer task id (GET /api/v1/tasks)");
    let task_name = r.string("task_name");
    let input_data = r.raw("input_data").cloned().unwrap_or_else(|| Value::Object(Map::new()));
    let priority = match r.string("priority") {
        None => Priority::Normal,
        Some(p) => Priority::parse(&p).unwrap_or_else(|| {
            r.error(
                "priority",
                format!("must be one of {} (any case), got '{p}'", PRIORITIES.join(", ")),
            );
            Priority::Normal
        }),
    };
    let output_destinations = r.optional::<Vec<Value>>(
        "output_destinations",
        "a list of destinations, each a mapping with a 'type'",
    );
    let destinations =
        r.optional::<Vec<String>>("destinations", "a list of global destination names");
    let client_job_id = r.string("job_id");
    if let Some(id) = &client_job_id
        && (id.trim().is_empty() || id.len() > MAX_CLIENT_JOB_ID)
    {
        r.error("job_id", format!("must be 1 to {MAX_CLIENT_JOB_ID} characters, not blank"));
    }
    let mut metadata = Map::new();
    if let Some(raw) = r.raw("metadata") {
        match raw {
            Value::Object(map) => {
                metadata = map.clone();
                for key in ["title", "description"] {
                    if let Some(v) = map.get(key).filter(|v| !v.is_null() && !v.is_string()) {
                        r.error(
                            &format!("metadata.{key}"),
                            format!("must be a string, got {}", type_name(v)),
                        );
                    }
                }
                if let Some(tags) = map.get("tags").filter(|v| !v.is_null()) {
                    let ok = tags.as_array().is_some_and(|a| a.iter().all(Value::is_string));
                    if !ok {
                        r.error("metadata.tags", "must be a list of strings");
                    }
                }
            }
            other => r.error(
                "metadata",
                format!(
                    "must be a mapping (title, description, tags and free keys), got {}",
                    type_name(other)
                ),
            ),
        }
    }
    let errors = r.finish();
    if !errors.is_empty() {
        return Err(Problem::validation(errors.into_iter().map(FieldError::from).collect()));
    }
    Ok(Submit {
        task_id,
        task_name,
        input_data,
        priority,
        output_destinations,
        destinations,
        client_job_id,
        metadata,
    })
}

fn job_location(job: &outflow_core::job::Job) -> HeaderValue {
    HeaderValue::from_str(&format!("/api/v1/jobs/{}", job.id))
        .unwrap_or_else(|_| HeaderValue::from_static("/api/v1/jobs"))
}

/// Submit a job.
///
/// Seed 000's body (`task_id` or `task_name`, `input_data`, `priority`,
/// `output_destinations`) plus `destinations` (global names), `job_id` (idempotency key)
/// and `metadata`. A job that names no destinations gets its task's defaults. The job is
/// committed before the answer; a task with a `command` is run by the built-in executor,
/// any other job waits for its producer to report status and output.
#[utoipa::path(
    post, path = "/api/v1/jobs", tag = "jobs",
    request_body = SubmitJobRequest,
    responses(
        (status = 201, description = "Created", body = JobView),
        (status = 200, description = "A job with this `job_id` already exists: that job", body = JobView),
        (status = 400, description = "Unparsable body or unknown task", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields or destinations (every problem listed)", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = Problem, content_type = "application/problem+json"),
        (status = 507, description = "The store is full", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn submit_job(
    State(state): State<AppState>,
    JsonObject(body): JsonObject,
) -> Result<Response, Problem> {
    let submit = read_submit(&body)?;
    let task = match (submit.task_id, submit.task_name.as_deref()) {
        (None, None) => None,
        (Some(id), None) => Some(state.task_by_id(id)?),
        (None, Some(name)) => Some(state.task_by_name(name)?),
        (Some(id), Some(name)) => {
            let task = state.task_by_id(id)?;
            if task.record.name != name {
                return Err(Problem::bad_request(format!(
                    "task_id {id} is task '{}' but task_name is '{name}'; give one of them",
                    task.record.name
                )));
            }
            Some(task)
        }
    };
    let named_none = submit.output_destinations.as_ref().is_none_or(Vec::is_empty)
        && submit.destinations.as_ref().is_none_or(Vec::is_empty);
    let (inline, names) = match task {
        // Task defaults were validated when the config was loaded.
        Some(t) if named_none => {
            (t.config.output_destinations.clone(), t.config.destinations.clone())
        }
        _ => {
            let inline = submit.output_destinations.unwrap_or_default();
            let names = submit.destinations.unwrap_or_default();
            state.planner().validate(&names, &inline).map_err(|e| {
                Problem::validation(e.errors.into_iter().map(FieldError::from).collect())
            })?;
            (inline, names)
        }
    };
    let executable = task.is_some_and(|t| t.config.command.is_some());
    let new = NewJob {
        uuid: Uuid::now_v7(),
        client_job_id: submit.client_job_id,
        task_id: task.map(|t| t.record.id),
        task_name: task.map(|t| t.record.name.clone()),
        task_version: task.and_then(|t| t.record.version.clone()),
        priority: submit.priority,
        input_data: submit.input_data,
        metadata: submit.metadata,
        output_destinations: inline,
        destinations: names,
        executable,
    };
    let (job, created) = state.store.create_job(new).await?;
    if created && executable {
        state.engine.wake_executor();
    }
    let status = if created { StatusCode::CREATED } else { StatusCode::OK };
    let mut response = (status, Json(JobView::from(&job))).into_response();
    response.headers_mut().insert(header::LOCATION, job_location(&job));
    Ok(response)
}

fn parse_sort(sort: Option<String>, order: Option<String>) -> Result<JobSort, Problem> {
    let order = match order.as_deref().map(str::to_ascii_lowercase).as_deref() {
        None => None,
        Some("asc") => Some(false),
        Some("desc") => Some(true),
        Some(_) => {
            return Err(Problem::bad_parameter(
                "order",
                format!("must be asc or desc, got '{}'", order.unwrap_or_default()),
            ));
        }
    };
    let Some(sort) = sort else {
        return Ok(match order {
            Some(false) => JobSort::CreatedAsc,
            _ => JobSort::CreatedDesc,
        });
    };
    let (field, minus) = match sort.strip_prefix('-') {
        Some(f) => (f, true),
        None => (sort.as_str(), false),
    };
    if minus && order.is_some() {
        return Err(Problem::bad_parameter(
            "order",
            format!("cannot be combined with a descending sort ('{sort}'); use one of them"),
        ));
    }
    let desc = minus || order == Some(true);
    match (field.to_ascii_lowercase().as_str(), desc) {
        ("created" | "created_at" | "queued_at" | "id", false) => Ok(JobSort::CreatedAsc),
        ("created" | "created_at" | "queued_at" | "id", true) => Ok(JobSort::CreatedDesc),
        ("updated" | "updated_at", false) => Ok(JobSort::UpdatedAsc),
        ("updated" | "updated_at", true) => Ok(JobSort::UpdatedDesc),
        _ => Err(Problem::bad_parameter(
            "sort",
            format!("must be one of created, -created, updated, -updated, got '{sort}'"),
        )),
    }
}

/// List jobs.
///
/// Filters combine with AND. Pagination: `_start`/`_end` or `page`/`limit` (not both);
/// sort: `sort=-created` (default, newest first), `created`, `updated`, `-updated`, or an
/// unprefixed `sort` with `order=asc|desc`.
#[utoipa::path(
    get, path = "/api/v1/jobs", tag = "jobs",
    params(JobListParams),
    responses(
        (status = 200, description = "One page of jobs; `X-Total-Count` has the total", body = ListResponse<JobView>,
            headers(("X-Total-Count" = u64, description = "Jobs matching the filters"))),
        (status = 400, description = "A bad query parameter (named in the problem)", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list_jobs(
    State(state): State<AppState>,
    RawQuery(raw): RawQuery,
) -> Result<ListResponse<JobView>, Problem> {
    let mut q = QueryParams::parse(raw.as_deref())?;
    let status = q.one_of("status", &STATUSES, JobStatus::parse)?;
    let task_name = q.string("task_name");
    let priority = q.one_of("priority", &PRIORITIES, Priority::parse)?;
    let tag = q.string("tag");
    let created_after = q.time("created_after")?;
    let created_before = q.time("created_before")?;
    let sort = q.string("sort");
    let order = q.string("order");
    let page = PageRequest::from_query(&mut q)?;
    q.finish()?;
    let sort = parse_sort(sort, order)?;
    let query = JobQuery {
        status,
        task_name,
        priority,
        tag,
        created_after,
        created_before,
        sort,
        offset: page.offset,
        limit: page.limit,
    };
    let found = state.store.list_jobs(&query).await?;
    let data = found.items.iter().map(JobView::from).collect();
    Ok(ListResponse::new(data, found.total, &page))
}

/// One job, by numeric id or UUID.
#[utoipa::path(
    get, path = "/api/v1/jobs/{id}", tag = "jobs",
    params(("id" = String, Path, description = "Numeric id or job_uuid")),
    responses(
        (status = 200, body = JobView),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn get_job(
    State(state): State<AppState>,
    JobPath(job): JobPath,
) -> Result<Json<JobView>, Problem> {
    let job = state.store.get_job(job).await?;
    Ok(Json(JobView::from(&job)))
}

/// A job's status, progress and last change (cheap, for polling).
#[utoipa::path(
    get, path = "/api/v1/jobs/{id}/status", tag = "jobs",
    params(("id" = String, Path, description = "Numeric id or job_uuid")),
    responses(
        (status = 200, body = JobStatusView),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn get_status(
    State(state): State<AppState>,
    JobPath(job): JobPath,
) -> Result<Json<JobStatusView>, Problem> {
    let job = state.store.get_job(job).await?;
    Ok(Json(JobStatusView::from(&job)))
}

fn read_status_update(body: &Map<String, Value>) -> Result<StatusUpdate, Problem> {
    let mut r = FieldReader::new(body, "");
    let valid =
        "running, succeeded or failed (any case; cancel with POST /api/v1/jobs/{id}/cancel)";
    let status = match r.raw("status") {
        None => {
            r.error("status", format!("is required: {valid}"));
            None
        }
        Some(Value::String(s)) => match JobStatus::parse(s) {
            Some(st @ (JobStatus::Running | JobStatus::Succeeded | JobStatus::Failed)) => Some(st),
            _ => {
                r.error("status", format!("must be {valid}, got '{s}'"));
                None
            }
        },
        Some(other) => {
            r.error("status", format!("must be a string: {valid}; got {}", type_name(other)));
            None
        }
    };
    let progress = match r.raw("progress") {
        None => None,
        Some(v) => match v.as_u64().filter(|p| *p <= 100) {
            Some(p) => Some(p as u8),
            None => {
                r.error("progress", format!("must be an integer from 0 to 100, got {v}"));
                None
            }
        },
    };
    let error = r.string("error");
    let errors = r.finish();
    match status {
        Some(status) if errors.is_empty() => Ok(StatusUpdate { status, progress, error }),
        _ => Err(Problem::validation(errors.into_iter().map(FieldError::from).collect())),
    }
}

/// Report a job's status (external producers).
///
/// `running` (with `progress`) any number of times, then `succeeded` or `failed` (with
/// `error`). A terminal status without an output finishes the job with no deliveries; to
/// deliver, `PUT /api/v1/jobs/{id}/output` (which also marks the job succeeded unless it
/// already failed). Nothing leaves a terminal status: 409 with `current_status`.
#[utoipa::path(
    post, path = "/api/v1/jobs/{id}/status", tag = "jobs",
    params(("id" = String, Path, description = "Numeric id or job_uuid")),
    request_body = StatusUpdateRequest,
    responses(
        (status = 200, body = JobStatusView),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Invalid transition; `current_status` says where the job is", body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn post_status(
    State(state): State<AppState>,
    JobPath(job): JobPath,
    JsonObject(body): JsonObject,
) -> Result<Json<JobStatusView>, Problem> {
    let update = read_status_update(&body)?;
    refuse_if_executed(&state.store.get_job(job).await?)?;
    let job = state.store.update_status(job, update).await?;
    Ok(Json(JobStatusView::from(&job)))
}

/// Cancel a queued or running job (its process is killed if this node runs it).
#[utoipa::path(
    post, path = "/api/v1/jobs/{id}/cancel", tag = "jobs",
    params(("id" = String, Path, description = "Numeric id or job_uuid")),
    responses(
        (status = 200, body = JobView),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Already finished", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn cancel_job(
    State(state): State<AppState>,
    JobPath(job): JobPath,
) -> Result<Json<JobView>, Problem> {
    let job = state.store.cancel_job(job).await?;
    // The store's status is the truth; killing the process is best effort on this node.
    state.engine.kill_job(job.id);
    Ok(Json(JobView::from(&job)))
}

/// Delete a job with its outputs, deliveries and attempts.
///
/// A running job is refused (409) unless `force=true`.
#[utoipa::path(
    delete, path = "/api/v1/jobs/{id}", tag = "jobs",
    params(("id" = String, Path, description = "Numeric id or job_uuid"), DeleteParams),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Running and not forced", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn delete_job(
    State(state): State<AppState>,
    JobPath(job): JobPath,
    RawQuery(raw): RawQuery,
) -> Result<StatusCode, Problem> {
    let mut q = QueryParams::parse(raw.as_deref())?;
    let force = q.bool("force")?.unwrap_or(false);
    q.finish()?;
    let id = match job {
        outflow_store::JobRef::Id(id) => id,
        other => state.store.get_job(other).await?.id,
    };
    state.store.delete_job(job, force).await?;
    if force {
        state.engine.kill_job(id);
    }
    Ok(StatusCode::NO_CONTENT)
}

/// Jobs of a task with a command belong to the built-in executor: a producer reporting their
/// status or output would race it (a `running` report would leave the job without the
/// executor's lease, so it would never run).
pub(crate) fn refuse_if_executed(job: &outflow_core::job::Job) -> Result<(), Problem> {
    if job.executable {
        return Err(Problem::conflict(
            format!(
                "job {} is run by the built-in executor (its task has a command): its status \
                 and output come from the command, not from producers",
                job.id
            ),
            Some(job.status),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn submit_errors_are_all_reported() {
        let p = read_submit(&obj(json!({
            "priority": "asap", "job_id": "", "metadata": {"tags": "x", "title": 3}, "tsk_name": "a"
        })))
        .err()
        .unwrap();
        let paths: Vec<&str> = p.errors.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["priority", "job_id", "metadata.title", "metadata.tags", "tsk_name"]);
        assert_eq!(
            p.errors[0].message,
            "must be one of low, normal, high, urgent (any case), got 'asap'"
        );
        assert!(
            p.errors[4].message.starts_with("unknown key 'tsk_name' (did you mean 'task_name'?")
        );
    }

    #[test]
    fn priority_in_any_case() {
        let s = read_submit(&obj(json!({"priority": "URGENT"}))).ok().unwrap();
        assert_eq!(s.priority, Priority::Urgent);
    }

    #[test]
    fn sorts() {
        assert_eq!(parse_sort(None, None).unwrap(), JobSort::CreatedDesc);
        assert_eq!(parse_sort(Some("created".into()), None).unwrap(), JobSort::CreatedAsc);
        assert_eq!(parse_sort(Some("-updated".into()), None).unwrap(), JobSort::UpdatedDesc);
        assert_eq!(
            parse_sort(Some("updated".into()), Some("DESC".into())).unwrap(),
            JobSort::UpdatedDesc
        );
        assert_eq!(parse_sort(None, Some("asc".into())).unwrap(), JobSort::CreatedAsc);
        assert!(parse_sort(Some("-created".into()), Some("asc".into())).is_err());
        assert_eq!(
            parse_sort(Some("name".into()), None).unwrap_err().detail,
            "query parameter 'sort' must be one of created, -created, updated, -updated, got 'name'"
        );
    }

    #[test]
    fn status_updates() {
        let u = read_status_update(&obj(json!({"status": "Running", "progress": 50}))).unwrap();
        assert_eq!(u.status, JobStatus::Running);
        assert_eq!(u.progress, Some(50));
        let p =
            read_status_update(&obj(json!({"status": "cancelled", "progress": 101}))).unwrap_err();
        assert_eq!(p.errors.len(), 2);
        assert_eq!(p.errors[1].message, "must be an integer from 0 to 100, got 101");
    }
}
