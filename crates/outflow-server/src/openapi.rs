//! The OpenAPI 3 document, generated from the handlers' `#[utoipa::path]` attributes and
//! the DTOs' schemas — never written by hand. `tests/openapi.rs` compares it with the
//! checked-in `openapi.json` so an API change is a reviewed diff.

use utoipa::OpenApi;

use crate::routes::{admin, deliveries, health, jobs, outputs};

/// The API description.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Outflow",
        description = "Durable delivery of job outputs to files, signed webhooks and more. \
            Errors are RFC 9457 problem documents (`application/problem+json`); every list \
            answers `{\"data\", \"total\", \"page\", \"limit\"}` and sets `X-Total-Count`.",
        license(name = "Apache-2.0"),
    ),
    paths(
        jobs::submit_job,
        jobs::list_jobs,
        jobs::get_job,
        jobs::get_status,
        jobs::post_status,
        jobs::cancel_job,
        jobs::delete_job,
        outputs::put_output,
        outputs::get_output,
        deliveries::job_deliveries,
        deliveries::list_deliveries,
        deliveries::get_delivery,
        deliveries::retry_delivery,
        deliveries::replay_dead,
        deliveries::purge_dead,
        admin::test_output_destinations,
        admin::list_tasks,
        admin::list_destinations,
        health::healthz,
        health::readyz,
        health::metrics,
    ),
    components(schemas(crate::problem::Problem, crate::problem::FieldError)),
    tags(
        (name = "jobs", description = "Submit jobs, follow them, report their status"),
        (name = "outputs", description = "Upload and fetch job outputs"),
        (name = "deliveries", description = "Deliveries, their attempts and the dead-letter list"),
        (name = "destinations", description = "Global destinations and destination tests"),
        (name = "tasks", description = "Configured tasks"),
        (name = "operations", description = "Health, readiness and metrics"),
    )
)]
pub struct ApiDoc;

/// The document as pretty JSON with a trailing newline (the form checked in).
pub fn document_json() -> String {
    let mut text = ApiDoc::openapi().to_pretty_json().unwrap_or_else(|e| {
        // Serialising a generated document cannot fail short of a utoipa bug; say so
        // rather than serve half a document.
        format!("{{\"error\": \"cannot serialise the OpenAPI document: {e}\"}}")
    });
    text.push('\n');
    text
}
