//! The filesystem destination, end to end through the registry, on real temp directories.

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use chrono::{TimeZone, Utc};
use outflow_core::attempt::FailureClass;
use outflow_core::config::{ConfigError, DestinationSpec};
use outflow_core::context::{JobContext, Priority, RenderContext};
use outflow_core::output::Output;
use outflow_destinations::{Attempt, DeliveryError, DeliveryReceipt, Destination, Registry};
use serde_json::{Map, Value, json};
use tempfile::TempDir;
use uuid::Uuid;

fn job() -> JobContext {
    JobContext {
        job_uuid: Uuid::parse_str("0190b6f2-7c5e-7a3b-8c1d-2e3f4a5b6c7d").unwrap(),
        job_id: Some(42),
        task_name: Some("report".into()),
        task_version: Some("1.2.0".into()),
        task_id: Some(7),
        execution_id: Some(99),
        priority: Priority::Normal,
        schedule_id: None,
        environment: "test".into(),
        completed_at: Utc.with_ymd_and_hms(2025, 1, 5, 3, 4, 9).unwrap(),
        duration_ms: 12,
        status: "completed".into(),
        metadata: Map::new(),
        vars: BTreeMap::new(),
    }
}

fn build(body: Value) -> Result<Arc<dyn Destination>, Vec<ConfigError>> {
    let spec = DestinationSpec::from_value(&body, "d").unwrap();
    Registry::default().build(&spec, "d")
}

fn dest(body: Value) -> Arc<dyn Destination> {
    build(body).unwrap_or_else(|e| panic!("config errors: {e:?}"))
}

async fn deliver_with(
    d: &dyn Destination,
    job: &JobContext,
    output: &Output,
) -> Result<DeliveryReceipt, DeliveryError> {
    d.deliver(Attempt { render: RenderContext::new(job, output, "dlv_1"), number: 1 }).await
}

async fn deliver(d: &dyn Destination, output: &Output) -> Result<DeliveryReceipt, DeliveryError> {
    deliver_with(d, &job(), output).await
}

fn sample() -> Output {
    Output::Json(json!([{"id": 1, "name": "a,b"}, {"id": 2, "extra": {"k": true}}]))
}

/// Every entry of `dir`, sorted, so a leftover temp file shows up.
fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn p(dir: &TempDir, rel: &str) -> String {
    format!("{}/{rel}", dir.path().display())
}

fn mode(path: &str) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test]
async fn json_is_written_atomically_with_exact_bytes() {
    let dir = TempDir::new().unwrap();
    let target = p(&dir, "out.json");
    let d = dest(json!({"type": "filesystem", "path": target}));
    let receipt = deliver(&*d, &Output::Json(json!({"ok": true, "n": [1, 2]}))).await.unwrap();

    let expected = "{\n  \"ok\": true,\n  \"n\": [\n    1,\n    2\n  ]\n}\n";
    assert_eq!(std::fs::read_to_string(&target).unwrap(), expected);
    assert_eq!(receipt.target, target);
    assert_eq!(receipt.bytes, expected.len() as u64);
    assert_eq!(entries(dir.path()), ["out.json"]);
    assert_eq!(d.kind(), "filesystem");
    assert_eq!(d.describe(), target);
}

#[tokio::test]
async fn csv_is_written_with_exact_bytes() {
    let dir = TempDir::new().unwrap();
    let target = p(&dir, "out.csv");
    let d = dest(json!({"type": "filesystem", "path": target, "format": "csv"}));
    let receipt = deliver(&*d, &sample()).await.unwrap();

    let expected = "id,name,extra\n1,\"a,b\",\n2,,\"{\"\"k\"\":true}\"\n";
    assert_eq!(std::fs::read_to_string(&target).unwrap(), expected);
    assert_eq!(receipt.bytes, expected.len() as u64);
    assert_eq!(entries(dir.path()), ["out.csv"]);
}

#[tokio::test]
async fn templated_path_creates_directories() {
    let dir = TempDir::new().unwrap();
    let template = p(&dir, "{{year}}/{{month}}/{{day}}/{{task_name}}_{{job_uuid}}.json");
    let d = dest(json!({"type": "filesystem", "path": template}));
    let receipt = deliver(&*d, &Output::Json(json!(1))).await.unwrap();

    let expected = p(&dir, "2025/01/05/report_0190b6f2-7c5e-7a3b-8c1d-2e3f4a5b6c7d.json");
    assert_eq!(receipt.target, expected);
    assert_eq!(std::fs::read_to_string(&expected).unwrap(), "1\n");
    assert_eq!(d.describe(), template);
}

#[tokio::test]
async fn missing_directory_without_create_dirs_is_permanent() {
    let dir = TempDir::new().unwrap();
    let d =
        dest(json!({"type": "filesystem", "path": p(&dir, "sub/x.json"), "create_dirs": false}));
    let err = deliver(&*d, &Output::Json(json!(1))).await.unwrap_err();
    assert_eq!(err.class, FailureClass::Permanent);
    assert_eq!(
        err.message,
        format!(
            "directory '{}' does not exist (set create_dirs: true to create it)",
            p(&dir, "sub")
        )
    );
    assert!(!dir.path().join("sub").exists());
}

#[tokio::test]
async fn permissions_are_applied() {
    let dir = TempDir::new().unwrap();
    for (value, expected) in [(json!(420), 0o644), (json!("0600"), 0o600), (json!("640"), 0o640)] {
        let target = p(&dir, &format!("{expected:o}.json"));
        let d = dest(json!({"type": "filesystem", "path": target, "permissions": value}));
        deliver(&*d, &Output::Json(json!(1))).await.unwrap();
        assert_eq!(mode(&target), expected, "permissions {value}");
    }
}

#[tokio::test]
async fn existing_file_is_refused_without_overwrite() {
    let dir = TempDir::new().unwrap();
    let target = p(&dir, "x.json");
    std::fs::write(&target, "old").unwrap();
    let d = dest(json!({"type": "filesystem", "path": target}));
    let err = deliver(&*d, &Output::Json(json!(1))).await.unwrap_err();
    assert_eq!(err.class, FailureClass::Permanent);
    assert_eq!(
        err.message,
        format!("'{target}' already exists (set overwrite: true or backup_existing: true)")
    );
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "old");
    assert_eq!(entries(dir.path()), ["x.json"]);
}

#[tokio::test]
async fn overwrite_replaces_the_file() {
    let dir = TempDir::new().unwrap();
    let target = p(&dir, "x.json");
    std::fs::write(&target, "old content").unwrap();
    let d = dest(
        json!({"type": "filesystem", "path": target, "overwrite": true, "format": "json_compact"}),
    );
    deliver(&*d, &Output::Json(json!({"new": 1}))).await.unwrap();
    assert_eq!(std::fs::read_to_string(&target).unwrap(), r#"{"new":1}"#);
    assert_eq!(entries(dir.path()), ["x.json"]);
}

fn is_backup_name(name: &str) -> bool {
    // `x.json.backup.` + YYYYmmddTHHMMSS + `Z`, the spec's `\.backup\.\d{8}T\d{6}Z$`.
    let Some(stamp) = name.strip_prefix("x.json.backup.") else { return false };
    let b = stamp.as_bytes();
    b.len() == 16
        && b[..8].iter().all(u8::is_ascii_digit)
        && b[8] == b'T'
        && b[9..15].iter().all(u8::is_ascii_digit)
        && b[15] == b'Z'
}

#[tokio::test]
async fn backup_keeps_the_old_file_under_a_timestamped_name() {
    let dir = TempDir::new().unwrap();
    let target = p(&dir, "x.json");
    std::fs::write(&target, "first").unwrap();
    let d = dest(
        json!({"type": "filesystem", "path": target, "backup_existing": true, "format": "raw"}),
    );
    let before = Utc::now();
    deliver(&*d, &Output::Text("second".into())).await.unwrap();
    let after = Utc::now();

    assert_eq!(std::fs::read_to_string(&target).unwrap(), "second");
    let names = entries(dir.path());
    assert_eq!(names.len(), 2, "{names:?}");
    assert_eq!(names[0], "x.json");
    assert!(is_backup_name(&names[1]), "{names:?}");
    let stamp = &names[1]["x.json.backup.".len()..];
    let fmt = |t: chrono::DateTime<Utc>| t.format("%Y%m%dT%H%M%SZ").to_string();
    assert!(stamp == fmt(before) || stamp == fmt(after), "{stamp}");
    assert_eq!(std::fs::read_to_string(dir.path().join(&names[1])).unwrap(), "first");
}

#[tokio::test]
async fn backup_names_get_a_counter_when_taken() {
    let dir = TempDir::new().unwrap();
    let target = p(&dir, "x.json");
    std::fs::write(&target, "first").unwrap();
    // Take this second's and the next seconds' names so the new backup must count.
    let now = Utc::now();
    let mut taken = Vec::new();
    for s in 0..3 {
        let stamp = (now + chrono::Duration::seconds(s)).format("%Y%m%dT%H%M%SZ").to_string();
        let name = format!("x.json.backup.{stamp}");
        std::fs::write(dir.path().join(&name), "taken").unwrap();
        taken.push(name);
    }
    let d = dest(
        json!({"type": "filesystem", "path": target, "backup_existing": true, "format": "raw"}),
    );
    deliver(&*d, &Output::Text("second".into())).await.unwrap();

    let fresh: Vec<String> =
        entries(dir.path()).into_iter().filter(|n| n != "x.json" && !taken.contains(n)).collect();
    assert_eq!(fresh.len(), 1, "{fresh:?}");
    assert!(taken.iter().any(|t| fresh[0] == format!("{t}.1")), "{fresh:?}");
    assert_eq!(std::fs::read_to_string(dir.path().join(&fresh[0])).unwrap(), "first");
    for t in &taken {
        assert_eq!(std::fs::read_to_string(dir.path().join(t)).unwrap(), "taken");
    }
}

#[tokio::test]
async fn gzip_round_trips_and_extension_is_appended_once() {
    let dir = TempDir::new().unwrap();
    let output = Output::Json(json!({"a": [1, 2, 3]}));
    let expected = "{\n  \"a\": [\n    1,\n    2,\n    3\n  ]\n}\n";
    for (path, written) in [("g.json", "g.json.gz"), ("h.json.gz", "h.json.gz")] {
        let d = dest(json!({"type": "filesystem", "path": p(&dir, path), "compression": "gzip"}));
        let receipt = deliver(&*d, &output).await.unwrap();
        assert_eq!(receipt.target, p(&dir, written));
        let compressed = std::fs::read(p(&dir, written)).unwrap();
        assert_eq!(receipt.bytes, compressed.len() as u64);
        let mut text = String::new();
        flate2::read::GzDecoder::new(&compressed[..]).read_to_string(&mut text).unwrap();
        assert_eq!(text, expected);
    }
    assert_eq!(entries(dir.path()), ["g.json.gz", "h.json.gz"]);
}

#[tokio::test]
async fn zstd_round_trips_and_extension_is_appended_once() {
    let dir = TempDir::new().unwrap();
    let output = Output::Text("hello zstd".into());
    for (path, written) in [("z.txt", "z.txt.zst"), ("y.zst", "y.zst")] {
        let d = dest(json!({
            "type": "filesystem", "path": p(&dir, path), "compression": "zstd", "format": "raw"
        }));
        let receipt = deliver(&*d, &output).await.unwrap();
        assert_eq!(receipt.target, p(&dir, written));
        let compressed = std::fs::read(p(&dir, written)).unwrap();
        assert_eq!(zstd::decode_all(&compressed[..]).unwrap(), b"hello zstd");
    }
    assert_eq!(entries(dir.path()), ["y.zst", "z.txt.zst"]);
}

fn job_with_var(name: &str, value: &str) -> JobContext {
    let mut job = job();
    job.vars.insert(name.into(), value.into());
    job
}

#[tokio::test]
async fn paths_outside_base_dir_are_refused() {
    let dir = TempDir::new().unwrap();
    let base = p(&dir, "allowed");
    let d = dest(json!({
        "type": "filesystem", "path": format!("{}/{{{{area}}}}/x.json", dir.path().display()),
        "base_dir": base,
    }));
    let output = Output::Json(json!(1));

    let err = deliver_with(&*d, &job_with_var("area", "other"), &output).await.unwrap_err();
    assert_eq!(err.class, FailureClass::Permanent);
    assert_eq!(
        err.message,
        format!("rendered path '{}' is outside base_dir '{base}'", p(&dir, "other/x.json"))
    );

    let ok = deliver_with(&*d, &job_with_var("area", "allowed/sub"), &output).await.unwrap();
    assert_eq!(ok.target, p(&dir, "allowed/sub/x.json"));
    assert_eq!(entries(dir.path()), ["allowed"]);
}

#[tokio::test]
async fn dot_dot_in_a_rendered_path_is_refused() {
    let dir = TempDir::new().unwrap();
    let base = p(&dir, "out");
    let d = dest(json!({
        "type": "filesystem", "path": format!("{base}/{{{{name}}}}.json"), "base_dir": base,
    }));
    let job = job_with_var("name", "../escaped");
    let err = deliver_with(&*d, &job, &Output::Json(json!(1))).await.unwrap_err();
    assert_eq!(err.class, FailureClass::Permanent);
    assert_eq!(
        err.message,
        format!(
            "rendered path '{base}/../escaped.json' contains a '..' component; it must stay under base_dir '{base}'"
        )
    );
    assert!(entries(dir.path()).is_empty());

    // Without base_dir too: `..` is never accepted.
    let d = dest(json!({"type": "filesystem", "path": format!("{base}/{{{{name}}}}.json")}));
    let err = deliver_with(&*d, &job, &Output::Json(json!(1))).await.unwrap_err();
    assert_eq!(
        err.message,
        format!("rendered path '{base}/../escaped.json' contains a '..' component")
    );
}

#[tokio::test]
async fn unknown_template_variable_is_permanent() {
    let d = dest(json!({"type": "filesystem", "path": "/tmp/{{nope}}.json"}));
    let err = deliver(&*d, &Output::Json(json!(1))).await.unwrap_err();
    assert_eq!(err.class, FailureClass::Permanent);
    assert_eq!(
        err.message,
        "cannot render path template '/tmp/{{nope}}.json': Template variable 'nope' not found"
    );
}

#[test]
fn relative_path_is_a_config_error() {
    let errs = build(json!({"type": "filesystem", "path": "relative/x.json"})).unwrap_err();
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert_eq!(errs[0].path, "d.path");
    assert_eq!(errs[0].message, "must be absolute (start with '/'), got 'relative/x.json'");

    let errs = build(json!({"type": "filesystem", "path": "{{dir}}/x.json"})).unwrap_err();
    assert_eq!(errs[0].message, "must be absolute (start with '/'), got '{{dir}}/x.json'");
}

#[test]
fn unknown_keys_and_every_other_problem_are_reported_together() {
    let errs = build(json!({
        "type": "filesystem",
        "path": "/tmp/x.json",
        "overwrit": true,
        "format": "pdf",
        "compression": "brotli",
        "create_dirs": "yes",
        "base_dir": "data",
    }))
    .unwrap_err();
    let got: Vec<String> = errs.iter().map(ToString::to_string).collect();
    assert_eq!(
        got,
        [
            "d.format: must be one of json, json_compact, yaml, csv, xml, raw, ndjson, template, got 'pdf'",
            "d.create_dirs: must be true or false, got a string",
            "d.compression: must be one of none, gzip, zstd, got 'brotli'",
            "d.base_dir: must be an absolute directory (start with '/'), got 'data'",
            "d.overwrit: unknown key 'overwrit' (did you mean 'overwrite'? valid keys: backup_existing, base_dir, compression, create_dirs, format, overwrite, path, permissions, retry_policy, template)",
        ]
    );
}

#[test]
fn missing_path_and_template_rules() {
    let errs = build(json!({"type": "filesystem"})).unwrap_err();
    assert_eq!(errs[0].path, "d.path");
    assert!(errs[0].message.starts_with("is required (an absolute file path"), "{errs:?}");

    let errs =
        build(json!({"type": "filesystem", "path": "/x", "format": "template"})).unwrap_err();
    assert_eq!(errs[0].path, "d.template");
    assert!(errs[0].message.starts_with("is required when format is 'template'"), "{errs:?}");

    let errs = build(json!({"type": "filesystem", "path": "/x", "template": "{{a}}"})).unwrap_err();
    assert_eq!(
        errs[0].to_string(),
        "d.template: is only used with format: template (format is 'json')"
    );

    let errs =
        build(json!({"type": "filesystem", "path": "/etc/{{x}}", "base_dir": "/srv"})).unwrap_err();
    assert_eq!(
        errs[0].to_string(),
        "d.path: '/etc/{{x}}' is outside base_dir '/srv': the path must stay under base_dir"
    );
}

#[tokio::test]
async fn template_format_renders_handlebars() {
    let dir = TempDir::new().unwrap();
    let target = p(&dir, "t.txt");
    let d = dest(json!({
        "type": "filesystem", "path": target, "format": "template",
        "template": "{{task_name}}: {{json output}}",
    }));
    deliver(&*d, &Output::Json(json!({"a": "<b>"}))).await.unwrap();
    assert_eq!(std::fs::read_to_string(&target).unwrap(), r#"report: {"a":"<b>"}"#);
}

#[test]
fn retry_policy_defaults_and_overrides() {
    let d = dest(json!({"type": "filesystem", "path": "/tmp/x"}));
    assert_eq!(d.retry_policy(), &Registry::default().defaults().retry_policy);
    let d =
        dest(json!({"type": "filesystem", "path": "/tmp/x", "retry_policy": {"max_attempts": 7}}));
    assert_eq!(d.retry_policy().max_attempts, 7);
}

/// True when chmod cannot keep this process out of a directory (running as root).
fn chmod_is_ineffective(dir: &Path) -> bool {
    let probe = dir.join("probe");
    std::fs::create_dir(&probe).unwrap();
    std::fs::set_permissions(&probe, std::fs::Permissions::from_mode(0o555)).unwrap();
    let ineffective = std::fs::write(probe.join("f"), "x").is_ok();
    std::fs::set_permissions(&probe, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::remove_dir_all(&probe).unwrap();
    ineffective
}

#[tokio::test]
async fn permission_denied_names_the_path_and_os_error() {
    let dir = TempDir::new().unwrap();
    if chmod_is_ineffective(dir.path()) {
        eprintln!("skipped: chmod does not restrict this user (root)");
        return;
    }
    let locked = dir.path().join("locked");
    std::fs::create_dir(&locked).unwrap();
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o555)).unwrap();
    let d = dest(json!({"type": "filesystem", "path": format!("{}/x.json", locked.display())}));
    let err = deliver(&*d, &Output::Json(json!(1))).await.unwrap_err();
    let check = d.check().await.unwrap_err();
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o755)).unwrap();

    assert_eq!(err.class, FailureClass::Permanent);
    assert_eq!(
        err.message,
        format!(
            "cannot create a temporary file in '{}': Permission denied (os error 13)",
            locked.display()
        )
    );
    assert_eq!(check.class, FailureClass::Permanent);
    assert!(check.message.contains("Permission denied (os error 13)"), "{}", check.message);
    assert!(entries(&locked).is_empty());
}

#[tokio::test]
async fn check_succeeds_without_writing() {
    let dir = TempDir::new().unwrap();
    let d = dest(json!({"type": "filesystem", "path": p(&dir, "new/{{year}}/x.json")}));
    let report = d.check().await.unwrap();
    assert_eq!(report.target, p(&dir, "new"));
    assert!(entries(dir.path()).is_empty(), "check must leave nothing behind");

    let d = dest(json!({"type": "filesystem", "path": p(&dir, "x_{{job_uuid}}.json")}));
    assert_eq!(d.check().await.unwrap().target, dir.path().display().to_string());
    assert!(entries(dir.path()).is_empty());
}

#[tokio::test]
async fn check_fails_for_missing_directory_or_file_in_the_way() {
    let dir = TempDir::new().unwrap();
    let d =
        dest(json!({"type": "filesystem", "path": p(&dir, "new/x.json"), "create_dirs": false}));
    let err = d.check().await.unwrap_err();
    assert_eq!(err.class, FailureClass::Permanent);
    assert_eq!(
        err.message,
        format!(
            "directory '{}' does not exist (set create_dirs: true to create it)",
            p(&dir, "new")
        )
    );

    std::fs::write(dir.path().join("file"), "").unwrap();
    let d = dest(json!({"type": "filesystem", "path": p(&dir, "file/sub/x.json")}));
    let err = d.check().await.unwrap_err();
    assert_eq!(
        err.message,
        format!(
            "'{}' exists but is not a directory, so '{}' cannot be created",
            p(&dir, "file"),
            p(&dir, "file/sub")
        )
    );
}

#[test]
fn bad_permissions_are_a_config_error_at_their_path() {
    let errs =
        build(json!({"type": "filesystem", "path": "/tmp/x", "permissions": "0968"})).unwrap_err();
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert_eq!(errs[0].path, "d.permissions");
    assert!(errs[0].message.ends_with("got \"0968\""), "{}", errs[0].message);
}

#[tokio::test]
async fn existing_directory_is_used_when_create_dirs_is_false() {
    let dir = TempDir::new().unwrap();
    let target = p(&dir, "x.json");
    let d =
        dest(json!({"type": "filesystem", "path": target, "create_dirs": false, "format": "raw"}));
    deliver(&*d, &Output::Text("plain".into())).await.unwrap();
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "plain");
}
