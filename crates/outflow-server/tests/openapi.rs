//! The OpenAPI document is generated from the handlers; the checked-in copy
//! (`crates/outflow-server/openapi.json`) must match it, so every API change shows up as a
//! reviewed diff. Refresh it with `UPDATE_OPENAPI=1 cargo test -p outflow-server --test openapi`.

mod common;

use std::path::PathBuf;

use common::{TestServer, config};
use serde_json::{Value, json};

fn checked_in() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("openapi.json")
}

#[test]
fn the_checked_in_document_matches_the_handlers() {
    let generated = outflow_server::openapi::document_json();
    let path = checked_in();
    if std::env::var_os("UPDATE_OPENAPI").is_some() {
        std::fs::write(&path, &generated).unwrap();
        return;
    }
    let stored = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        stored == generated,
        "{} is out of date with the handlers' OpenAPI annotations; run \
         `UPDATE_OPENAPI=1 cargo test -p outflow-server --test openapi` and commit the file",
        path.display()
    );
}

#[test]
fn the_document_describes_every_route() {
    let doc: Value = serde_json::from_str(&outflow_server::openapi::document_json()).unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let paths = doc["paths"].as_object().unwrap();
    for (path, method) in [
        ("/api/v1/jobs", "post"),
        ("/api/v1/jobs", "get"),
        ("/api/v1/jobs/{id}", "get"),
        ("/api/v1/jobs/{id}", "delete"),
        ("/api/v1/jobs/{id}/status", "get"),
        ("/api/v1/jobs/{id}/status", "post"),
        ("/api/v1/jobs/{id}/output", "put"),
        ("/api/v1/jobs/{id}/output", "get"),
        ("/api/v1/jobs/{id}/cancel", "post"),
        ("/api/v1/jobs/{id}/deliveries", "get"),
        ("/api/v1/jobs/test-output-destinations", "post"),
        ("/api/v1/deliveries", "get"),
        ("/api/v1/deliveries/{id}", "get"),
        ("/api/v1/deliveries/{id}/retry", "post"),
        ("/api/v1/deliveries/replay", "post"),
        ("/api/v1/deliveries/dead", "delete"),
        ("/api/v1/tasks", "get"),
        ("/api/v1/destinations", "get"),
        ("/healthz", "get"),
        ("/readyz", "get"),
        ("/metrics", "get"),
    ] {
        assert!(paths.get(path).and_then(|p| p.get(method)).is_some(), "{method} {path} missing");
    }
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    for name in
        ["JobView", "SubmitJobRequest", "Problem", "DeliveryView", "TestDestinationsResponse"]
    {
        assert!(schemas.contains_key(name), "schema {name} missing");
    }
    assert_eq!(
        schemas["JobView"]["properties"]["status"]["enum"],
        json!(["queued", "running", "succeeded", "failed", "cancelled"])
    );
}

#[tokio::test]
async fn the_server_serves_the_generated_document() {
    let server = TestServer::start(config(json!([]), json!([]))).await;
    let a = server.get("/api/v1/openapi.json").await;
    assert_eq!(a.status, 200);
    assert_eq!(a.header("content-type"), Some("application/json"));
    assert_eq!(
        String::from_utf8(a.bytes.to_vec()).unwrap(),
        outflow_server::openapi::document_json()
    );
    server.stop().await;
}
