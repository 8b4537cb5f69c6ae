//! The REST API against the real server in-process: submit → output → delivered to a file
//! and a signed webhook; listings, filters, idempotency, status reports, every 4xx problem.

mod common;

use common::{Receiver, TestServer, config, expected_signature, signed_hook};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

#[tokio::test]
async fn submit_then_output_reaches_the_file_and_the_signed_webhook() {
    let rx = Receiver::start(200).await;
    let server = TestServer::start(config(
        json!([{"name": "hook", "destination": signed_hook(&rx, "/signed")}]),
        json!([{"name": "producer", "version": "1.0"}]),
    ))
    .await;
    let file = server.out_path("{{job_id}}.json");
    let job = server
        .submit(json!({
            "task_name": "producer",
            "input_data": {"name": "example"},
            "priority": "HIGH",
            "destinations": ["hook"],
            "metadata": {"title": "t", "tags": ["a"], "owner": "ops"},
            "output_destinations": [
                {"type": "filesystem", "path": file, "format": "json", "create_dirs": true},
                {"type": "webhook", "url": rx.url("/bearer"),
                 "auth": {"type": "bearer", "token": "s3cr3t-token"}}
            ]
        }))
        .await;
    let id = job["id"].as_i64().unwrap();
    assert_eq!(job["status"], "queued");
    assert_eq!(job["priority"], "high");
    assert_eq!(job["task_name"], "producer");
    assert_eq!(job["task_version"], "1.0");
    assert!(job["task_id"].is_i64());
    assert!(job["queued_at"].is_string());
    assert_eq!(job["destinations"], json!(["hook"]));
    assert_eq!(job["metadata"]["owner"], "ops");
    assert_eq!(job["output_destinations"][0]["path"], file);
    assert_eq!(job["output_destinations"][1]["auth"]["token"], "********");
    assert!(!job.to_string().contains("s3cr3t-token"));

    let out = server
        .put(&format!("/api/v1/jobs/{id}/output"), "application/json", br#"{"rows":3,"ok":true}"#)
        .await;
    assert_eq!(out.status, 201, "{}", out.json);
    assert_eq!(out.json["version"], 1);
    assert_eq!(out.json["kind"], "json");
    assert_eq!(out.json["content_type"], "application/json");
    assert_eq!(out.json["size"], 20);
    let sha = hex(&Sha256::digest(br#"{"rows":3,"ok":true}"#));
    assert_eq!(out.json["sha256"], sha.as_str());
    assert_eq!(out.json["job_status"], "succeeded");
    assert_eq!(out.json["deliveries"].as_array().unwrap().len(), 3);

    let deliveries = server.wait_deliveries(id, "delivered").await;
    assert_eq!(deliveries.len(), 3);
    let path = server.out.path().join(format!("{id}.json"));
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "{\n  \"rows\": 3,\n  \"ok\": true\n}\n");

    let requests = rx.requests();
    assert_eq!(requests.len(), 2);
    let signed = requests.iter().find(|r| r.path == "/signed").expect("signed request");
    let webhook_id = signed.header("webhook-id").unwrap();
    let ts = signed.header("webhook-timestamp").unwrap();
    assert_eq!(
        signed.header("webhook-signature").unwrap(),
        expected_signature(webhook_id, ts, &signed.body)
    );
    let envelope: Value = serde_json::from_slice(&signed.body).unwrap();
    assert_eq!(envelope["output"], json!({"rows": 3, "ok": true}));
    assert_eq!(envelope["job_id"], id);
    let hook_delivery = deliveries.iter().find(|d| d["destination_name"] == "hook").unwrap();
    assert_eq!(hook_delivery["id"], webhook_id);
    assert_eq!(hook_delivery["attempt_count"], 1);
    assert_eq!(hook_delivery["attempts"][0]["status_code"], 200);
    assert_eq!(hook_delivery["target"]["auth"]["secret"], "********");
    let bearer = requests.iter().find(|r| r.path == "/bearer").unwrap();
    assert_eq!(bearer.header("authorization"), Some("Bearer s3cr3t-token"));
    let deliveries_text = serde_json::to_string(&deliveries).unwrap();
    assert!(!deliveries_text.contains("s3cr3t-token"));
    assert!(!deliveries_text.contains(&common::whsec()));

    let fetched = server.get(&format!("/api/v1/jobs/{id}/output")).await;
    assert_eq!(fetched.status, 200);
    assert_eq!(&fetched.bytes[..], br#"{"rows":3,"ok":true}"#);
    assert_eq!(fetched.header("content-type"), Some("application/json"));
    assert_eq!(fetched.header("output-version"), Some("1"));
    assert_eq!(fetched.header("output-sha256"), Some(sha.as_str()));

    let status =
        server.get(&format!("/api/v1/jobs/{}/status", job["job_uuid"].as_str().unwrap())).await;
    assert_eq!(status.status, 200);
    assert_eq!(status.json["status"], "succeeded");
    assert_eq!(status.json["output_version"], 1);
    server.stop().await;
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test]
async fn binary_and_text_outputs_keep_their_bytes_and_versions() {
    let server = TestServer::start(config(json!([]), json!([]))).await;
    let file = server.out_path("{{job_id}}-v.bin");
    let job = server
        .submit(
            json!({"output_destinations": [{"type": "filesystem", "path": file, "format": "raw"}]}),
        )
        .await;
    let id = job["id"].as_i64().unwrap();
    let bytes: Vec<u8> = (0u8..=255).collect();
    let out =
        server.put(&format!("/api/v1/jobs/{id}/output"), "application/octet-stream", &bytes).await;
    assert_eq!(out.status, 201);
    assert_eq!(out.json["kind"], "binary");
    server.wait_deliveries(id, "delivered").await;
    assert_eq!(std::fs::read(server.out.path().join(format!("{id}-v.bin"))).unwrap(), bytes);

    // A second version on a finished job: stored, the job stays succeeded.
    let out =
        server.put(&format!("/api/v1/jobs/{id}/output"), "text/plain; charset=utf-8", b"v2").await;
    assert_eq!(out.status, 201);
    assert_eq!(out.json["version"], 2);
    assert_eq!(out.json["kind"], "text");
    assert_eq!(out.json["job_status"], "succeeded");
    let v1 = server.get(&format!("/api/v1/jobs/{id}/output?version=1")).await;
    assert_eq!(&v1.bytes[..], &bytes[..]);
    assert_eq!(v1.header("content-type"), Some("application/octet-stream"));
    let latest = server.get(&format!("/api/v1/jobs/{id}/output")).await;
    assert_eq!(&latest.bytes[..], b"v2");
    assert_eq!(latest.header("content-type"), Some("text/plain; charset=utf-8"));
    let missing = server.get(&format!("/api/v1/jobs/{id}/output?version=3")).await;
    assert_eq!(
        missing.problem(404)["detail"],
        format!("job {id} has no output version 3; the latest is 2")
    );
    server.stop().await;
}

#[tokio::test]
async fn idempotent_client_job_id() {
    let server = TestServer::start(config(json!([]), json!([]))).await;
    let body = json!({"job_id": "order-1234", "input_data": {"n": 1}});
    let first = server.post("/api/v1/jobs", &body).await;
    assert_eq!(first.status, 201);
    assert_eq!(first.json["job_id"], "order-1234");
    let again =
        server.post("/api/v1/jobs", &json!({"job_id": "order-1234", "input_data": {"n": 2}})).await;
    assert_eq!(again.status, 200);
    assert_eq!(again.json["id"], first.json["id"]);
    assert_eq!(again.json["job_uuid"], first.json["job_uuid"]);
    assert_eq!(again.json["input_data"], json!({"n": 1}));
    assert_eq!(
        again.header("location"),
        Some(format!("/api/v1/jobs/{}", first.json["id"]).as_str())
    );
    let other = server.post("/api/v1/jobs", &json!({"job_id": "order-1235"})).await;
    assert_eq!(other.status, 201);
    assert_ne!(other.json["id"], first.json["id"]);
    server.stop().await;
}

#[tokio::test]
async fn pagination_both_styles_sorting_and_filters() {
    let server =
        TestServer::start(config(json!([]), json!([{"name": "alpha"}, {"name": "beta"}]))).await;
    let mut ids = Vec::new();
    for (i, (task, priority, tag)) in [
        ("alpha", "low", "red"),
        ("alpha", "normal", "blue"),
        ("beta", "high", "red"),
        ("beta", "urgent", "green"),
        ("alpha", "normal", "red"),
    ]
    .into_iter()
    .enumerate()
    {
        let job = server
            .submit(json!({"task_name": task, "priority": priority,
                           "metadata": {"tags": [tag], "n": i}}))
            .await;
        ids.push(job["id"].as_i64().unwrap());
    }
    let list_ids = |v: &Value| -> Vec<i64> {
        v["data"].as_array().unwrap().iter().map(|j| j["id"].as_i64().unwrap()).collect()
    };

    let all = server.get("/api/v1/jobs").await;
    assert_eq!(all.status, 200);
    assert_eq!(all.json["total"], 5);
    assert_eq!(all.json["page"], 1);
    assert_eq!(all.json["limit"], 20);
    assert_eq!(all.header("x-total-count"), Some("5"));
    let newest_first: Vec<i64> = ids.iter().rev().copied().collect();
    assert_eq!(list_ids(&all.json), newest_first);
    assert!(all.json["data"][0]["output_destinations"].is_array());
    assert!(all.json["data"][0]["queued_at"].is_string());

    let range = server.get("/api/v1/jobs?_start=1&_end=3&sort=created").await;
    assert_eq!(list_ids(&range.json), ids[1..3]);
    assert_eq!(range.header("x-total-count"), Some("5"));
    assert_eq!(range.json["total"], 5);
    assert_eq!(range.json["limit"], 2);

    let page = server.get("/api/v1/jobs?page=2&limit=2&sort=created&order=asc").await;
    assert_eq!(list_ids(&page.json), ids[2..4]);
    assert_eq!(page.json["page"], 2);
    assert_eq!(page.json["limit"], 2);
    let last = server.get("/api/v1/jobs?page=3&limit=2&sort=created").await;
    assert_eq!(list_ids(&last.json), ids[4..5]);
    let beyond = server.get("/api/v1/jobs?page=9&limit=2").await;
    assert_eq!(list_ids(&beyond.json), Vec::<i64>::new());
    assert_eq!(beyond.json["total"], 5);

    // Touch the first job so `updated` order differs from `created` order.
    let touched = server
        .post(
            &format!("/api/v1/jobs/{}/status", ids[0]),
            &json!({"status": "running", "progress": 10}),
        )
        .await;
    assert_eq!(touched.status, 200);
    let by_update = server.get("/api/v1/jobs?sort=-updated&limit=1").await;
    assert_eq!(list_ids(&by_update.json), [ids[0]]);

    let q = |query: &str| {
        let path = format!("/api/v1/jobs?{query}&sort=created");
        let query = query.to_string();
        let server = &server;
        async move {
            let a = server.get(&path).await;
            assert_eq!(a.status, 200, "{query}: {}", a.json);
            list_ids(&a.json)
        }
    };
    assert_eq!(q("status=running").await, [ids[0]]);
    assert_eq!(q("status=QUEUED").await, ids[1..].to_vec());
    assert_eq!(q("task_name=beta").await, ids[2..4].to_vec());
    assert_eq!(q("priority=normal").await, [ids[1], ids[4]]);
    assert_eq!(q("tag=red").await, [ids[0], ids[2], ids[4]]);
    assert_eq!(q("tag=red&task_name=alpha&priority=low").await, [ids[0]]);
    assert_eq!(q("created_after=2999-01-01T00:00:00Z").await, Vec::<i64>::new());
    assert_eq!(q("created_before=2999-01-01T00:00:00Z").await, ids);
    assert_eq!(q("created_after=2000-01-01T00:00:00%2B02:00").await, ids);

    for (query, param, detail) in [
        (
            "status=done",
            "status",
            "query parameter 'status' must be one of queued, running, succeeded, failed, cancelled, got 'done'",
        ),
        (
            "priority=asap",
            "priority",
            "query parameter 'priority' must be one of low, normal, high, urgent, got 'asap'",
        ),
        ("limit=5000", "limit", "query parameter 'limit' must be between 1 and 1000, got 5000"),
        ("page=0", "page", "query parameter 'page' must be 1 or more (pages count from 1)"),
        (
            "_start=0&_end=2000",
            "_end",
            "query parameter '_end' _end - _start must be at most 1000, got 2000",
        ),
        (
            "page=1&_end=5",
            "page",
            "query parameter 'page' cannot be combined with _start/_end; use one pagination style",
        ),
        (
            "created_after=yesterday",
            "created_after",
            "query parameter 'created_after' must be an RFC 3339 timestamp like 2024-01-01T10:00:00Z, got 'yesterday'",
        ),
        (
            "sort=name",
            "sort",
            "query parameter 'sort' must be one of created, -created, updated, -updated, got 'name'",
        ),
        ("order=up", "order", "query parameter 'order' must be asc or desc, got 'up'"),
        (
            "stauts=queued",
            "stauts",
            "query parameter 'stauts' is not a parameter of this endpoint; valid parameters: _end, _start, created_after, created_before, limit, order, page, priority, sort, status, tag, task_name",
        ),
    ] {
        let a = server.get(&format!("/api/v1/jobs?{query}")).await;
        let p = a.problem(400);
        assert_eq!(p["detail"], detail, "{query}");
        assert_eq!(p["errors"][0]["path"], param, "{query}");
    }
    server.stop().await;
}

#[tokio::test]
async fn task_defaults_apply_when_a_job_names_no_destinations() {
    let server = TestServer::start(config(
        json!([]),
        json!([{"name": "report", "output_destinations": [
            {"type": "webhook", "url": "https://hooks.example.com/x",
             "auth": {"type": "bearer", "token": "task-token-xyz"}}
        ]}]),
    ))
    .await;
    let tasks = server.get("/api/v1/tasks").await;
    let task_id = tasks.json["data"][0]["id"].as_i64().unwrap();
    let job = server.submit(json!({"task_id": task_id})).await;
    assert_eq!(job["task_name"], "report");
    assert_eq!(job["output_destinations"][0]["url"], "https://hooks.example.com/x");
    assert_eq!(job["output_destinations"][0]["auth"]["token"], "********");
    // Naming destinations replaces the defaults.
    let file = server.out_path("x.json");
    let job = server
        .submit(json!({"task_name": "report",
                       "output_destinations": [{"type": "filesystem", "path": file}]}))
        .await;
    assert_eq!(job["output_destinations"].as_array().unwrap().len(), 1);
    assert_eq!(job["output_destinations"][0]["type"], "filesystem");
    server.stop().await;
}

#[tokio::test]
async fn producer_status_reports_and_transitions() {
    let server = TestServer::start(config(json!([]), json!([]))).await;
    let job = server.submit(json!({})).await;
    let id = job["id"].as_i64().unwrap();
    let status_path = format!("/api/v1/jobs/{id}/status");

    let a = server.post(&status_path, &json!({"status": "Running", "progress": 40})).await;
    assert_eq!(a.status, 200, "{}", a.json);
    assert_eq!(a.json["status"], "running");
    assert_eq!(a.json["progress"], 40);
    let got = server.get(&status_path).await;
    assert_eq!(got.json["status"], "running");
    assert_eq!(got.json["progress"], 40);
    assert!(got.json["updated_at"].is_string());
    assert!(got.json["error"].is_null());
    let full = server.get(&format!("/api/v1/jobs/{id}")).await;
    assert!(full.json["started_at"].is_string());

    let bad =
        server.post(&status_path, &json!({"status": "done", "progress": 101, "eror": "x"})).await;
    let p = bad.problem(422);
    let paths: Vec<&str> =
        p["errors"].as_array().unwrap().iter().map(|e| e["path"].as_str().unwrap()).collect();
    assert_eq!(paths, ["status", "progress", "eror"]);
    assert_eq!(p["errors"][1]["message"], "must be an integer from 0 to 100, got 101");
    assert_eq!(server.post(&status_path, &json!({"status": "cancelled"})).await.status, 422);

    let failed =
        server.post(&status_path, &json!({"status": "failed", "error": "disk full"})).await;
    assert_eq!(failed.json["status"], "failed");
    assert_eq!(failed.json["error"], "disk full");
    // A failed job still takes an output (delivered with status failed) and stays failed.
    let out = server.put(&format!("/api/v1/jobs/{id}/output"), "text/plain", b"partial").await;
    assert_eq!(out.status, 201);
    assert_eq!(out.json["job_status"], "failed");

    let again = server.post(&status_path, &json!({"status": "running"})).await;
    let p = again.problem(409);
    assert_eq!(p["current_status"], "failed");
    server.stop().await;
}

#[tokio::test]
async fn a_terminal_status_without_output_finishes_the_job_with_no_deliveries() {
    let server = TestServer::start(config(json!([]), json!([]))).await;
    let file = server.out_path("never.json");
    let job =
        server.submit(json!({"output_destinations": [{"type": "filesystem", "path": file}]})).await;
    let id = job["id"].as_i64().unwrap();
    let done =
        server.post(&format!("/api/v1/jobs/{id}/status"), &json!({"status": "succeeded"})).await;
    assert_eq!(done.json["status"], "succeeded");
    let job = server.get(&format!("/api/v1/jobs/{id}")).await;
    assert!(job.json["finished_at"].is_string());
    assert!(job.json["output_version"].is_null());
    let deliveries = server.get(&format!("/api/v1/jobs/{id}/deliveries")).await;
    assert_eq!(deliveries.json["total"], 0);
    let out = server.get(&format!("/api/v1/jobs/{id}/output")).await;
    assert_eq!(out.problem(404)["detail"], format!("job {id} has no output yet"));
    server.stop().await;
}

#[tokio::test]
async fn cancel_and_delete() {
    let server = TestServer::start(config(json!([]), json!([]))).await;
    let id = server.submit(json!({})).await["id"].as_i64().unwrap();
    let c = server.post(&format!("/api/v1/jobs/{id}/cancel"), &json!({})).await;
    assert_eq!(c.status, 200);
    assert_eq!(c.json["status"], "cancelled");
    let again = server.post(&format!("/api/v1/jobs/{id}/cancel"), &json!({})).await;
    assert_eq!(again.problem(409)["current_status"], "cancelled");
    let out = server.put(&format!("/api/v1/jobs/{id}/output"), "application/json", b"{}").await;
    let p = out.problem(409);
    assert_eq!(p["current_status"], "cancelled");
    assert_eq!(p["detail"], format!("job {id} is cancelled: it takes no output"));

    let d = server.delete(&format!("/api/v1/jobs/{id}")).await;
    assert_eq!(d.status, 204);
    server.get(&format!("/api/v1/jobs/{id}")).await.problem(404);

    let running = server.submit(json!({})).await["id"].as_i64().unwrap();
    server.post(&format!("/api/v1/jobs/{running}/status"), &json!({"status": "running"})).await;
    let refused = server.delete(&format!("/api/v1/jobs/{running}")).await;
    assert_eq!(refused.problem(409)["current_status"], "running");
    let bad = server.delete(&format!("/api/v1/jobs/{running}?force=yes")).await;
    assert_eq!(
        bad.problem(400)["detail"],
        "query parameter 'force' must be true or false, got 'yes'"
    );
    assert_eq!(server.delete(&format!("/api/v1/jobs/{running}?force=true")).await.status, 204);
    server.get(&format!("/api/v1/jobs/{running}")).await.problem(404);
    server.stop().await;
}

#[tokio::test]
async fn every_client_error_is_a_problem_document() {
    let mut cfg = config(
        json!([{"name": "hook", "destination": {"type": "webhook", "url": "https://hooks.example.com/"}}]),
        json!([{"name": "report"}]),
    );
    cfg["server"] = json!({"body_limit": "4KiB"});
    let server = TestServer::start(cfg).await;

    let unknown = server.post("/api/v1/jobs", &json!({"task_name": "nope"})).await;
    assert_eq!(
        unknown.problem(400)["detail"],
        format!(
            "unknown task_name 'nope'; configured tasks: {} (report)",
            server.get("/api/v1/tasks").await.json["data"][0]["id"]
        )
    );
    let unknown_id = server.post("/api/v1/jobs", &json!({"task_id": 999})).await;
    assert!(
        unknown_id.problem(400)["detail"]
            .as_str()
            .unwrap()
            .starts_with("unknown task_id 999; configured tasks: ")
    );

    let invalid = server
        .post(
            "/api/v1/jobs",
            &json!({
                "destinations": ["hook", "nope"],
                "output_destinations": [
                    {"type": "filesystem", "path": "relative/out.json"},
                    {"type": "webhook", "url": "ftp://x"},
                    {"path": "/tmp/x"}
                ]
            }),
        )
        .await;
    let p = invalid.problem(422);
    let paths: Vec<&str> =
        p["errors"].as_array().unwrap().iter().map(|e| e["path"].as_str().unwrap()).collect();
    assert_eq!(
        paths,
        [
            "destinations[1]",
            "output_destinations[0].path",
            "output_destinations[1].url",
            "output_destinations[2].type"
        ]
    );
    assert_eq!(p["errors"][0]["message"], "unknown global destination 'nope'; configured: hook");
    assert_eq!(p["detail"], "the request has 4 invalid fields");

    let typo =
        server.post("/api/v1/jobs", &json!({"task_name": "report", "priorty": "high"})).await;
    let p = typo.problem(422);
    assert_eq!(p["errors"][0]["path"], "priorty");
    assert!(
        p["errors"][0]["message"]
            .as_str()
            .unwrap()
            .starts_with("unknown key 'priorty' (did you mean 'priority'?")
    );

    let not_json = server
        .request(
            reqwest::Method::POST,
            "/api/v1/jobs",
            Some("application/json"),
            Some(b"{nope".to_vec()),
        )
        .await;
    assert!(
        not_json.problem(400)["detail"]
            .as_str()
            .unwrap()
            .starts_with("the request body is not valid JSON")
    );

    let big = json!({"input_data": {"blob": "x".repeat(5000)}});
    let too_large = server.post("/api/v1/jobs", &big).await;
    assert_eq!(
        too_large.problem(413)["detail"],
        "the request body exceeds the limit of 4 KiB (4096 bytes; server.body_limit)"
    );
    let id = server.submit(json!({})).await["id"].as_i64().unwrap();
    let big_output =
        server.put(&format!("/api/v1/jobs/{id}/output"), "text/plain", &[b'a'; 5000]).await;
    big_output.problem(413);

    let bad_json_output =
        server.put(&format!("/api/v1/jobs/{id}/output"), "application/json", b"{oops").await;
    assert!(
        bad_json_output.problem(400)["detail"]
            .as_str()
            .unwrap()
            .starts_with("the body is not valid JSON although Content-Type is application/json")
    );

    server.get("/api/v1/jobs/424242").await.problem(404);
    server.get("/api/v1/jobs/424242/deliveries").await.problem(404);
    server.post("/api/v1/jobs/424242/cancel", &json!({})).await.problem(404);
    server.post("/api/v1/jobs/424242/status", &json!({"status": "running"})).await.problem(404);
    server.put("/api/v1/jobs/424242/output", "text/plain", b"x").await.problem(404);
    server.delete("/api/v1/jobs/424242").await.problem(404);
    server.get("/api/v1/jobs/0190b6f2-7c5e-7a3b-8c1d-2e3f4a5b6c7d/status").await.problem(404);
    assert_eq!(
        server.get("/api/v1/jobs/not-a-job").await.problem(400)["detail"],
        "'not-a-job' is not a job id: use the numeric id or the job_uuid"
    );
    assert_eq!(
        server.get(&format!("/api/v1/jobs/{id}/output")).await.problem(404)["detail"],
        format!("job {id} has no output yet")
    );
    server.post("/api/v1/deliveries/dlv_nope/retry", &json!({})).await.problem(404);
    server.get("/api/v1/deliveries/dlv_nope").await.problem(404);
    assert_eq!(
        server.get("/api/v1/nothing").await.problem(404)["detail"],
        "no route for GET /api/v1/nothing; see /api/v1/openapi.json"
    );
    server.request(reqwest::Method::PATCH, "/api/v1/jobs", None, None).await.problem(405);
    server.stop().await;
}

#[tokio::test]
async fn test_output_destinations_reports_each_destination_as_data() {
    let rx = Receiver::start(200).await;
    let server = TestServer::start(config(json!([]), json!([]))).await;
    let a = server
        .post("/api/v1/jobs/test-output-destinations", &json!({"destinations": [
            {"type": "filesystem", "path": server.out_path("t/test-output.json"), "format": "json", "create_dirs": true},
            {"type": "webhook", "url": rx.url("/post"), "method": "POST", "timeout_seconds": 10},
            {"type": "filesystem", "path": "relative.json"},
            {"type": "ftp", "host": "x"},
        ]}))
        .await;
    assert_eq!(a.status, 200, "{}", a.json);
    let data = a.json["data"].as_array().unwrap();
    assert_eq!(data.len(), 4);
    for (i, d) in data.iter().enumerate() {
        assert_eq!(d["index"], i);
        assert!(d["estimated_time_ms"].is_u64());
    }
    assert_eq!(data[0]["destination_type"], "filesystem");
    assert_eq!(data[0]["success"], true, "{}", data[0]);
    assert!(data[0]["error"].is_null());
    assert_eq!(data[1]["destination_type"], "webhook");
    assert_eq!(data[1]["success"], true, "{}", data[1]);
    assert_eq!(data[2]["success"], false);
    assert!(
        data[2]["error"].as_str().unwrap().starts_with("destinations[2].path: must be absolute")
    );
    assert_eq!(data[3]["destination_type"], "ftp");
    assert!(
        data[3]["error"]
            .as_str()
            .unwrap()
            .starts_with("destinations[3].type: unknown destination type 'ftp'")
    );
    assert!(rx.requests().is_empty(), "a test delivers nothing");

    let missing = server.post("/api/v1/jobs/test-output-destinations", &json!({})).await;
    assert_eq!(missing.problem(422)["errors"][0]["path"], "destinations");
    server.stop().await;
}

#[tokio::test]
async fn tasks_and_destinations_are_listed_with_secrets_masked() {
    let rx = Receiver::start(200).await;
    let server = TestServer::start(config(
        json!([
            {"name": "hook", "description": "signed", "destination": signed_hook(&rx, "/h")},
            {"name": "files", "destination": {"type": "filesystem", "path": "/tmp/outflow-test/{{job_id}}.json"}}
        ]),
        json!([
            {"name": "build", "version": "2", "command": "true", "timeout_seconds": 5,
             "destinations": ["hook"]},
            {"name": "ext", "output_destinations": [{"type": "webhook", "url": "https://h.example.com/",
              "headers": {"Authorization": "Bearer header-secret"}}]}
        ]),
    ))
    .await;
    let tasks = server.get("/api/v1/tasks").await;
    assert_eq!(tasks.json["total"], 2);
    assert_eq!(tasks.header("x-total-count"), Some("2"));
    let build = &tasks.json["data"][0];
    assert_eq!(build["name"], "build");
    assert_eq!(build["version"], "2");
    assert_eq!(build["has_command"], true);
    assert_eq!(build["timeout_seconds"], 5.0);
    assert_eq!(build["destinations"], json!(["hook"]));
    let ext = &tasks.json["data"][1];
    assert_eq!(ext["has_command"], false);
    assert_eq!(ext["output_destinations"][0]["headers"]["Authorization"], "********");
    assert!(!tasks.bytes.windows(13).any(|w| w == b"header-secret"));

    let dests = server.get("/api/v1/destinations").await;
    assert_eq!(dests.json["total"], 2);
    let hook = &dests.json["data"][0];
    assert_eq!(hook["name"], "hook");
    assert_eq!(hook["description"], "signed");
    assert_eq!(hook["type"], "webhook");
    assert_eq!(hook["destination"]["auth"]["secret"], "********");
    assert_eq!(hook["destination"]["url"], rx.url("/h"));
    assert_eq!(hook["circuit"], json!({"state": "closed", "consecutive_failures": 0}));
    assert!(hook["isolation_key"].as_str().unwrap().contains(&rx.addr.to_string()));
    assert!(!String::from_utf8_lossy(&dests.bytes).contains(&common::whsec()));
    assert_eq!(dests.json["data"][1]["type"], "filesystem");
    let page = server.get("/api/v1/destinations?_start=1&_end=2").await;
    assert_eq!(page.json["data"].as_array().unwrap().len(), 1);
    assert_eq!(page.json["data"][0]["name"], "files");
    server.stop().await;
}

#[tokio::test]
async fn a_command_task_is_run_by_the_executor() {
    let server =
        TestServer::start(config(json!([]), json!([{"name": "echo", "command": "cat"}]))).await;
    let job = server.submit(json!({"task_name": "echo", "input_data": {"hello": "world"}})).await;
    let id = job["id"].as_i64().unwrap();
    let done = server
        .wait_for(20, "the command job to finish", || async {
            let s = server.get(&format!("/api/v1/jobs/{id}/status")).await;
            (s.json["status"] == "succeeded").then_some(s.json)
        })
        .await;
    assert_eq!(done["output_version"], 1);
    let out = server.get(&format!("/api/v1/jobs/{id}/output")).await;
    assert_eq!(serde_json::from_slice::<Value>(&out.bytes).unwrap(), json!({"hello": "world"}));
    server.stop().await;
}

#[tokio::test]
async fn health_readiness_and_metrics() {
    let server = TestServer::start(config(json!([]), json!([]))).await;
    let h = server.get("/healthz").await;
    assert_eq!((h.status, h.json.clone()), (200, json!({"status": "ok"})));
    let r = server.get("/readyz").await;
    assert_eq!((r.status, r.json.clone()), (200, json!({"status": "ready"})));
    for _ in 0..3 {
        server.submit(json!({})).await;
    }
    let id = server.submit(json!({})).await["id"].as_i64().unwrap();
    server.post(&format!("/api/v1/jobs/{id}/cancel"), &json!({})).await;
    let m = server.get("/metrics").await;
    assert_eq!(m.status, 200);
    assert!(m.header("content-type").unwrap().starts_with("text/plain"));
    let text = String::from_utf8(m.bytes.to_vec()).unwrap();
    assert!(text.contains("# TYPE outflow_jobs gauge\n"), "{text}");
    assert!(text.contains("outflow_jobs{status=\"queued\"} 3\n"), "{text}");
    assert!(text.contains("outflow_jobs{status=\"cancelled\"} 1\n"), "{text}");
    assert!(text.contains("outflow_jobs{status=\"running\"} 0\n"), "{text}");
    assert!(text.contains("outflow_delivery_queue_depth 0\n"), "{text}");
    assert!(text.contains("outflow_dead_letters 0\n"), "{text}");
    assert!(text.contains("outflow_deliveries{state=\"delivered\"} 0\n"), "{text}");
    server.stop().await;
}

#[tokio::test]
async fn api_clients_cannot_widen_the_network_policy() {
    let server = TestServer::start(config(json!([]), json!([]))).await;
    // A job cannot carry its own allow-list: that would let any client read internal URLs
    // (e.g. cloud metadata) back through the attempt's response excerpt.
    let a = server
        .post(
            "/api/v1/jobs",
            &json!({"output_destinations": [{
                "type": "webhook", "url": "http://169.254.169.254/latest/meta-data/",
                "allow_private_networks": true, "allowed_hosts": ["169.254.169.254"]
            }]}),
        )
        .await;
    let problem = a.problem(422);
    let paths: Vec<&str> =
        problem["errors"].as_array().unwrap().iter().map(|e| e["path"].as_str().unwrap()).collect();
    assert_eq!(
        paths,
        ["output_destinations[0].allow_private_networks", "output_destinations[0].allowed_hosts"]
    );
    assert!(problem["errors"][0]["message"].as_str().unwrap().contains("server's config"));

    let t = server
        .post(
            "/api/v1/jobs/test-output-destinations",
            &json!({"destinations": [
                {"type": "webhook", "url": "http://10.0.0.1/", "allow_private_networks": true}
            ]}),
        )
        .await;
    assert_eq!(t.status, 200, "{}", t.json);
    assert_eq!(t.json["data"][0]["success"], false);
    assert!(
        t.json["data"][0]["error"].as_str().unwrap().contains("cannot be set through the API"),
        "{}",
        t.json
    );
    server.stop().await;
}

#[tokio::test]
async fn an_empty_start_end_range_is_refused_not_unlimited() {
    let server = TestServer::start(config(json!([]), json!([]))).await;
    let a = server.get("/api/v1/jobs?_start=3&_end=3").await;
    assert_eq!(
        a.problem(400)["detail"].as_str().map(|d| d.contains("_end")),
        Some(true),
        "{}",
        a.json
    );
    server.stop().await;
}

#[tokio::test]
async fn producers_cannot_report_for_jobs_the_executor_runs() {
    let server = TestServer::start(config(
        json!([]),
        json!([{"name": "slow", "command": "/bin/sh", "args": ["-c", "sleep 2; cat"]}]),
    ))
    .await;
    let job = server.submit(json!({"task_name": "slow", "input_data": {}})).await;
    let id = job["id"].as_i64().unwrap();
    let status =
        server.post(&format!("/api/v1/jobs/{id}/status"), &json!({"status": "running"})).await;
    assert!(status.problem(409)["detail"].as_str().unwrap().contains("built-in executor"));
    let output = server.put(&format!("/api/v1/jobs/{id}/output"), "application/json", b"{}").await;
    assert!(output.problem(409)["detail"].as_str().unwrap().contains("built-in executor"));
    server.stop().await;
}
