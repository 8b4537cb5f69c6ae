//! Dead letters over the API: a permanent failure is dead at once and listed; retry one
//! after the receiver recovers; replay by filter; purge; retries survive a restart.

mod common;

use common::{Receiver, TestServer, config, signed_hook};
use serde_json::{Value, json};

async fn job_with_hook(server: &TestServer, rx: &Receiver, path: &str) -> i64 {
    let job = server.submit(json!({"output_destinations": [signed_hook(rx, path)]})).await;
    let id = job["id"].as_i64().unwrap();
    let out =
        server.put(&format!("/api/v1/jobs/{id}/output"), "application/json", b"{\"n\":1}").await;
    assert_eq!(out.status, 201, "{}", out.json);
    id
}

#[tokio::test]
async fn permanent_failure_is_dead_at_once_then_retried_after_the_receiver_recovers() {
    let rx = Receiver::start(400).await;
    let server = TestServer::start(config(json!([]), json!([]))).await;
    let id = job_with_hook(&server, &rx, "/dead").await;
    let dead = server.wait_deliveries(id, "dead").await;
    assert_eq!(dead[0]["attempt_count"], 1, "a 400 is permanent: no retry");
    assert_eq!(dead[0]["last_status_code"], 400);
    assert_eq!(dead[0]["attempts"][0]["failure_class"], "permanent");
    assert_eq!(dead[0]["attempts"][0]["status_code"], 400);
    assert_eq!(rx.requests().len(), 1);

    let listed = server.get("/api/v1/deliveries?state=dead").await;
    assert_eq!(listed.status, 200);
    assert_eq!(listed.json["total"], 1);
    assert_eq!(listed.header("x-total-count"), Some("1"));
    let delivery_id = listed.json["data"][0]["id"].as_str().unwrap().to_string();
    assert_eq!(delivery_id, dead[0]["id"].as_str().unwrap());
    assert_eq!(listed.json["data"][0]["job_id"], id);
    assert_eq!(listed.json["data"][0]["target"]["auth"]["secret"], "********");
    assert!(listed.json["data"][0].get("attempts").is_none(), "listings leave attempts out");
    assert_eq!(server.get("/api/v1/deliveries?state=delivered").await.json["total"], 0);
    let bad = server.get("/api/v1/deliveries?state=lost").await;
    assert_eq!(
        bad.problem(400)["detail"],
        "query parameter 'state' must be one of pending, in_flight, scheduled, delivered, dead, got 'lost'"
    );

    rx.set_status(200);
    let retried = server.post(&format!("/api/v1/deliveries/{delivery_id}/retry"), &json!({})).await;
    assert_eq!(retried.status, 200, "{}", retried.json);
    assert_eq!(retried.json["id"], delivery_id.as_str());
    server.wait_deliveries(id, "delivered").await;
    let one = server.get(&format!("/api/v1/deliveries/{delivery_id}")).await;
    assert_eq!(one.json["state"], "delivered");
    let attempts = one.json["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2);
    assert_eq!(attempts[1]["status_code"], 200);
    let requests = rx.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(
        requests[0].header("webhook-id"),
        requests[1].header("webhook-id"),
        "a retry carries the same webhook-id"
    );
    assert_eq!(server.get("/api/v1/deliveries?state=dead").await.json["total"], 0);
    // A delivered delivery cannot be retried.
    server.post(&format!("/api/v1/deliveries/{delivery_id}/retry"), &json!({})).await.problem(409);
    server.stop().await;
}

#[tokio::test]
async fn replay_by_filter_and_purge() {
    let rx = Receiver::start(400).await;
    let server = TestServer::start(config(json!([]), json!([]))).await;
    let a = job_with_hook(&server, &rx, "/a").await;
    let b = job_with_hook(&server, &rx, "/b").await;
    let c = job_with_hook(&server, &rx, "/c").await;
    for id in [a, b, c] {
        server.wait_deliveries(id, "dead").await;
    }
    let dead = server.get("/api/v1/deliveries?state=dead&destination_type=webhook").await;
    assert_eq!(dead.json["total"], 3);
    let for_b = server.get(&format!("/api/v1/deliveries?job_id={b}")).await;
    assert_eq!(for_b.json["total"], 1);
    let paged = server.get("/api/v1/deliveries?state=dead&_start=0&_end=2").await;
    assert_eq!(paged.json["data"].as_array().unwrap().len(), 2);
    assert_eq!(paged.header("x-total-count"), Some("3"));

    let bad = server.post("/api/v1/deliveries/replay", &json!({"job": a})).await;
    assert_eq!(bad.problem(422)["errors"][0]["path"], "job");
    let none =
        server.post("/api/v1/deliveries/replay", &json!({"destination_type": "filesystem"})).await;
    assert_eq!(none.json, json!({"requeued": 0}));

    rx.set_status(200);
    let replayed = server.post("/api/v1/deliveries/replay", &json!({"job_id": a})).await;
    assert_eq!(replayed.status, 200);
    assert_eq!(replayed.json, json!({"requeued": 1}));
    server.wait_deliveries(a, "delivered").await;
    assert_eq!(
        server.get(&format!("/api/v1/jobs/{b}/deliveries")).await.json["data"][0]["state"],
        "dead"
    );

    let purged = server.delete(&format!("/api/v1/deliveries/dead?job_id={b}")).await;
    assert_eq!(purged.status, 200, "{}", purged.json);
    assert_eq!(purged.json, json!({"purged": 1}));
    assert_eq!(server.get(&format!("/api/v1/jobs/{b}/deliveries")).await.json["total"], 0);

    // Replay everything left (an empty body is every dead delivery).
    let all = server.request(reqwest::Method::POST, "/api/v1/deliveries/replay", None, None).await;
    assert_eq!(all.json, json!({"requeued": 1}));
    server.wait_deliveries(c, "delivered").await;
    let purge_rest = server.delete("/api/v1/deliveries/dead").await;
    assert_eq!(purge_rest.json, json!({"purged": 0}));
    server.stop().await;
}

#[tokio::test]
async fn a_scheduled_retry_survives_a_restart() {
    let rx = Receiver::start(503).await;
    let server = TestServer::start(config(json!([]), json!([]))).await;
    let job = server
        .submit(json!({"output_destinations": [{
            "type": "webhook", "url": rx.url("/later"),
            "retry_policy": {"max_attempts": 5, "initial_delay_ms": 1500, "max_delay_ms": 1500,
                             "backoff_multiplier": 1.5, "jitter": 0.0}
        }]}))
        .await;
    let id = job["id"].as_i64().unwrap();
    server.put(&format!("/api/v1/jobs/{id}/output"), "text/plain", b"hello").await;
    let scheduled: Vec<Value> = server.wait_deliveries(id, "scheduled").await;
    assert!(scheduled[0]["next_attempt_at"].is_string());
    let (data, out) = server.stop().await;

    rx.set_status(200);
    let server = TestServer::start_in(config(json!([]), json!([])), data, out).await;
    let delivered = server.wait_deliveries(id, "delivered").await;
    assert_eq!(delivered[0]["attempt_count"], 2);
    assert_eq!(rx.requests().len(), 2);
    server.stop().await;
}
