//! End-to-end tests of the `outflow` binary: real processes, real files, a real HTTP
//! receiver on 127.0.0.1.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;

const SEED_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn outflow() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_outflow"));
    // Never pick up the developer's own config or log level.
    cmd.env_remove("OUTFLOW_CONFIG").env_remove("OUTFLOW_LOG_LEVEL").env_remove("ENVIRONMENT");
    cmd
}

fn run(cmd: &mut Command, stdin: &[u8]) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("outflow binary runs");
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn seed_config(dir: &Path) -> std::path::PathBuf {
    let seed = include_str!("../../outflow-core/tests/fixtures/seed000.yaml");
    let path = dir.join("outflow.yaml");
    std::fs::write(&path, seed).unwrap();
    path
}

#[test]
fn check_accepts_the_seed_example_when_its_variable_is_set() {
    let dir = tempfile::tempdir().unwrap();
    let config = seed_config(dir.path());
    let out = run(
        outflow().arg("check").arg("--config").arg(&config).env("ANALYTICS_WEBHOOK_TOKEN", "t0k3n"),
        b"",
    );
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    assert!(text(&out.stdout).starts_with("OK"), "{}", text(&out.stdout));
}

#[test]
fn check_names_a_missing_variable_and_fails() {
    let dir = tempfile::tempdir().unwrap();
    let config = seed_config(dir.path());
    let out = run(
        outflow().arg("check").arg("--config").arg(&config).env_remove("ANALYTICS_WEBHOOK_TOKEN"),
        b"",
    );
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("output.global_destinations[1].destination.auth.token"), "{err}");
    assert!(err.contains("ANALYTICS_WEBHOOK_TOKEN"), "{err}");
}

#[test]
fn check_reports_every_error_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.yaml");
    std::fs::write(
        &path,
        r#"
output:
  max_concurent_deliveries: 5
  default_retry_policy: {max_attempts: 3, initial_delay_ms: 5000, max_delay_ms: 1000, backoff_multiplier: 2.0}
  global_destinations:
    - name: a
      destination: {type: filesystem, path: "relative/{{job_uuid}}.json"}
    - name: b
      destination: {type: webhook, url: "not a url", auth: {type: bearer, token: "s3cr3t-value"}}
    - name: c
      destination: {type: carrier_pigeon}
"#,
    )
    .unwrap();
    let out = run(outflow().arg("check").arg("--config").arg(&path), b"");
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    for needle in [
        "output.max_concurent_deliveries",
        "did you mean 'max_concurrent_deliveries'",
        "output.default_retry_policy.max_delay_ms",
        "output.global_destinations[0].destination.path",
        "must be absolute",
        "output.global_destinations[1].destination.url",
        "output.global_destinations[2].destination.type",
        "valid types: filesystem, webhook",
    ] {
        assert!(err.contains(needle), "missing {needle:?} in:\n{err}");
    }
    assert!(!err.contains("s3cr3t-value"), "a secret leaked:\n{err}");
}

#[test]
fn deliver_writes_a_file_without_any_config() {
    let dir = tempfile::tempdir().unwrap();
    let dest = serde_json::json!({
        "type": "filesystem",
        "path": format!("{}/{{{{task_name}}}}/{{{{job_uuid}}}}.json", dir.path().display()),
        "format": "json_compact",
    });
    let out = run(
        outflow()
            .args(["deliver", "--task-name", "report", "--job-id"])
            .arg("0190b6f2-7c5e-7a3b-8c1d-2e3f4a5b6c7d")
            .arg("--dest")
            .arg(dest.to_string()),
        br#"{"rows": [1, 2, 3]}"#,
    );
    assert!(out.status.success(), "stdout: {}\nstderr: {}", text(&out.stdout), text(&out.stderr));
    let file = dir.path().join("report/0190b6f2-7c5e-7a3b-8c1d-2e3f4a5b6c7d.json");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), r#"{"rows":[1,2,3]}"#);
    let stdout = text(&out.stdout);
    assert!(stdout.starts_with("ok"), "{stdout}");
    assert!(stdout.contains(&file.display().to_string()), "{stdout}");
}

#[test]
fn deliver_exit_code_reflects_any_failure_and_others_still_deliver() {
    let dir = tempfile::tempdir().unwrap();
    let good = serde_json::json!({"type": "filesystem", "path": format!("{}/ok.json", dir.path().display())});
    // The parent of this path is a file, so the write fails permanently.
    std::fs::write(dir.path().join("blocker"), b"x").unwrap();
    let bad = serde_json::json!({"type": "filesystem", "path": format!("{}/blocker/x.json", dir.path().display())});
    let out = run(
        outflow()
            .arg("deliver")
            .arg("--dest")
            .arg(good.to_string())
            .arg("--dest")
            .arg(bad.to_string()),
        b"{}",
    );
    assert_eq!(out.status.code(), Some(1), "stdout: {}", text(&out.stdout));
    assert!(dir.path().join("ok.json").exists());
    let stdout = text(&out.stdout);
    assert_eq!(stdout.lines().filter(|l| l.starts_with("ok")).count(), 1, "{stdout}");
    assert_eq!(stdout.lines().filter(|l| l.starts_with("FAIL")).count(), 1, "{stdout}");
}

#[test]
fn deliver_to_unknown_global_name_lists_known_ones() {
    let dir = tempfile::tempdir().unwrap();
    let config = seed_config(dir.path());
    let out = run(
        outflow()
            .args(["deliver", "--to", "nope", "--config"])
            .arg(&config)
            .env("ANALYTICS_WEBHOOK_TOKEN", "t"),
        b"{}",
    );
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("unknown destination 'nope'"), "{err}");
    assert!(err.contains("production_logs, analytics_webhook"), "{err}");
}

#[test]
fn dry_run_masks_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let config = seed_config(dir.path());
    let out = run(
        outflow()
            .args(["deliver", "--dry-run", "--config"])
            .arg(&config)
            .env("ANALYTICS_WEBHOOK_TOKEN", "very-secret-token"),
        b"{}",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let all = text(&out.stdout) + &text(&out.stderr);
    assert!(all.contains("analytics_webhook"), "{all}");
    assert!(!all.contains("very-secret-token"), "secret leaked: {all}");
}

#[test]
fn webhook_sign_matches_the_standard_webhooks_example_and_verify_agrees() {
    let body = br#"{"test": 2432232314}"#;
    let sign = run(
        outflow().args([
            "webhook",
            "sign",
            "--secret",
            SEED_SECRET,
            "--id",
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            "--timestamp",
            "1614265330",
        ]),
        body,
    );
    assert!(sign.status.success());
    let sig = text(&sign.stdout).trim().to_string();
    assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");

    let verify = |extra: &[&str], body: &[u8]| {
        run(
            outflow()
                .args([
                    "webhook",
                    "verify",
                    "--secret",
                    SEED_SECRET,
                    "--id",
                    "msg_p5jXN8AQM9LWM0D4loKWxJek",
                ])
                .args(["--timestamp", "1614265330", "--signature", &sig])
                .args(extra),
            body,
        )
    };
    let ok = verify(&["--no-tolerance"], body);
    assert!(ok.status.success(), "{}", text(&ok.stderr));
    let stale = verify(&[], body);
    assert_eq!(stale.status.code(), Some(1));
    assert!(text(&stale.stderr).contains("--no-tolerance"));
    let tampered = verify(&["--no-tolerance"], b"{}");
    assert_eq!(tampered.status.code(), Some(1));
}

type Ledger = Arc<Mutex<Vec<(HeaderMap, Bytes)>>>;

async fn receiver() -> (String, Ledger) {
    let ledger: Ledger = Arc::default();
    let l = ledger.clone();
    let app = Router::new().route(
        "/hook/{name}",
        post(move |headers: HeaderMap, body: Bytes| {
            let l = l.clone();
            async move {
                l.lock().unwrap().push((headers, body));
                StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), ledger)
}

#[tokio::test]
async fn deliver_sends_a_signed_webhook_the_verify_command_accepts() {
    let (base, ledger) = receiver().await;
    let dest = serde_json::json!({
        "type": "webhook",
        "url": format!("{base}/hook/{{{{task_name}}}}"),
        "allowed_hosts": ["127.0.0.1"],
        "auth": {"type": "signature", "secret": SEED_SECRET, "algorithm": "sha256"},
    });
    let out = tokio::task::spawn_blocking(move || {
        run(
            outflow().args(["deliver", "--task-name", "nightly", "--dest"]).arg(dest.to_string()),
            br#"{"answer": 42}"#,
        )
    })
    .await
    .unwrap();
    assert!(out.status.success(), "stdout: {}\nstderr: {}", text(&out.stdout), text(&out.stderr));

    let (headers, body) = ledger.lock().unwrap().pop().expect("the receiver got the request");
    let h = |name: &str| headers.get(name).unwrap().to_str().unwrap().to_string();
    let envelope: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(envelope["output"], serde_json::json!({"answer": 42}));
    assert_eq!(envelope["task_name"], "nightly");

    let (id, ts, sig) = (h("webhook-id"), h("webhook-timestamp"), h("webhook-signature"));
    let verify = tokio::task::spawn_blocking(move || {
        run(
            outflow().args(["webhook", "verify", "--secret", SEED_SECRET, "--id", &id]).args([
                "--timestamp",
                &ts,
                "--signature",
                &sig,
            ]),
            &body,
        )
    })
    .await
    .unwrap();
    assert!(verify.status.success(), "{}", text(&verify.stderr));
}

#[test]
fn test_destinations_reports_each_destination_as_data() {
    let dir = tempfile::tempdir().unwrap();
    let good = serde_json::json!({"type": "filesystem", "path": format!("{}/x/{{{{job_uuid}}}}.json", dir.path().display())});
    let bad = serde_json::json!({"type": "filesystem", "path": "relative.json"});
    let out = run(
        outflow()
            .args(["test-destinations", "--json", "--dest"])
            .arg(good.to_string())
            .arg("--dest")
            .arg(bad.to_string()),
        b"",
    );
    assert_eq!(out.status.code(), Some(1));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let data = doc["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    assert_eq!(data[0]["index"], 0);
    assert_eq!(data[0]["destination_type"], "filesystem");
    assert_eq!(data[0]["success"], true);
    assert!(data[0]["error"].is_null());
    assert!(data[0]["estimated_time_ms"].is_u64());
    assert_eq!(data[1]["success"], false);
    assert!(data[1]["error"].as_str().unwrap().contains("must be absolute"), "{}", data[1]);
}

#[test]
fn config_logging_level_applies_unless_the_environment_overrides_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("outflow.yaml");
    let out_path = dir.path().join("out.json");
    std::fs::write(
        &config,
        format!(
            "logging:\n  level: info\noutput:\n  global_destinations:\n    - name: f\n      destination: {{type: filesystem, path: \"{}\"}}\n",
            out_path.display()
        ),
    )
    .unwrap();
    let info = run(outflow().arg("deliver").arg("--config").arg(&config), b"{}");
    assert!(info.status.success(), "{}", text(&info.stderr));
    assert!(text(&info.stderr).contains("Output delivered"), "{}", text(&info.stderr));

    std::fs::remove_file(&out_path).unwrap();
    let quiet = run(
        outflow().arg("deliver").arg("--config").arg(&config).env("OUTFLOW_LOG_LEVEL", "error"),
        b"{}",
    );
    assert!(quiet.status.success(), "{}", text(&quiet.stderr));
    assert!(!text(&quiet.stderr).contains("Output delivered"), "{}", text(&quiet.stderr));
}

#[test]
fn serve_refuses_a_public_address_without_authentication() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(
        outflow()
            .args(["serve", "--listen", "0.0.0.0:0", "--data-dir"])
            .arg(dir.path().join("data")),
        b"",
    );
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("refusing to listen on 0.0.0.0:0"), "{err}");
    assert!(err.contains("server.allow_unauthenticated"), "{err}");
}
