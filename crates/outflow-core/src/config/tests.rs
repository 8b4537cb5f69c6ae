//! Loading and validating `outflow.yaml`: one test per rule, asserting exact paths and
//! messages.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::json;

use super::env::expand;
use super::*;
use crate::netpolicy::HostRule;
use crate::retry::RetryPolicy;
use crate::secret::MASK;

const SEED: &str = include_str!("../../tests/fixtures/seed000.yaml");

fn env(pairs: &[(&'static str, &'static str)]) -> HashMap<&'static str, &'static str> {
    pairs.iter().copied().collect()
}

fn no_env() -> HashMap<&'static str, &'static str> {
    HashMap::new()
}

/// Parses and returns the errors as `path: message` lines, for exact comparison.
fn errors_of(text: &str, env: &dyn EnvSource) -> Vec<String> {
    Config::parse(text, env).1.iter().map(ToString::to_string).collect()
}

fn parse_ok(text: &str, env: &dyn EnvSource) -> Config {
    let (config, errors) = Config::parse(text, env);
    assert!(errors.is_empty(), "unexpected errors: {errors:?}");
    config
}

#[test]
fn seed_example_loads_with_its_values() {
    let config = parse_ok(SEED, &env(&[("ANALYTICS_WEBHOOK_TOKEN", "tok-123")]));
    let out = &config.output;
    assert_eq!(out.max_concurrent_deliveries, 20);
    assert_eq!(out.default_timeout, Duration::from_secs(45));
    assert!(out.validate_on_startup);
    assert_eq!(
        out.default_retry_policy,
        RetryPolicy {
            max_attempts: 5,
            initial_delay_ms: 2000,
            max_delay_ms: 60000,
            backoff_multiplier: 2.5,
            jitter: 0.1,
        }
    );
    assert!(!out.allow_private_networks);
    assert!(out.allowed_hosts.is_empty());
    assert_eq!(out.global_destinations.len(), 2);

    let logs = &out.global_destinations[0];
    assert_eq!(logs.name, "production_logs");
    assert_eq!(logs.description.as_deref(), Some("Production log storage"));
    assert_eq!(logs.index, 0);
    assert_eq!(logs.destination.kind, "filesystem");
    assert_eq!(
        Value::Object(logs.destination.fields.clone()),
        json!({
            "path": "/var/log/ratchet/outputs/{{environment}}/{{job_uuid}}.json",
            "format": "json",
            "permissions": "644",
            "create_dirs": true,
            "overwrite": true,
        })
    );

    let hook = &out.global_destinations[1];
    assert_eq!(hook.name, "analytics_webhook");
    assert_eq!(hook.description.as_deref(), Some("Analytics webhook for completed tasks"));
    assert_eq!(hook.index, 1);
    assert_eq!(hook.destination.kind, "webhook");
    assert_eq!(
        Value::Object(hook.destination.fields.clone()),
        json!({
            "url": "https://analytics.company.com/webhook/task-completion",
            "method": "POST",
            "headers": {"X-Environment": "{{environment}}", "X-Task-Name": "{{task_name}}"},
            "timeout_seconds": 30,
            "content_type": "application/json",
            "auth": {"type": "bearer", "token": "tok-123"},
        })
    );
    assert_eq!(config.logging, LoggingConfig::default());
}

#[test]
fn seed_example_without_its_variable_names_it_at_the_token() {
    assert_eq!(
        errors_of(SEED, &no_env()),
        ["output.global_destinations[1].destination.auth.token: environment variable \
          ANALYTICS_WEBHOOK_TOKEN is not set (write ${ANALYTICS_WEBHOOK_TOKEN:-default} to give \
          a default)"]
    );
}

#[test]
fn empty_file_comments_and_empty_sections_are_all_defaults() {
    for text in ["", "\n", "# nothing here\n", "output:\nlogging:\n", "---\n"] {
        assert_eq!(parse_ok(text, &no_env()), Config::default(), "{text:?}");
    }
    let d = Config::default();
    assert_eq!(d.output.max_concurrent_deliveries, 10);
    assert_eq!(d.output.default_timeout, Duration::from_secs(30));
    assert!(d.output.validate_on_startup);
    let p = d.output.default_retry_policy;
    assert_eq!((p.max_attempts, p.initial_delay_ms, p.max_delay_ms), (3, 1000, 30000));
    assert_eq!(p.backoff_multiplier, 2.0);
}

#[test]
fn yaml_syntax_error_is_one_error_with_line_and_column() {
    assert_eq!(
        errors_of("output:\n  max_concurrent_deliveries: [1, 2\n", &no_env()),
        ["invalid YAML at line 3, column 1: did not find expected ',' or ']', while parsing a \
          flow sequence at line 2 column 30"]
    );
    assert_eq!(
        errors_of("output: a: b\n", &no_env()),
        ["invalid YAML at line 1, column 10: mapping values are not allowed in this context"]
    );
}

#[test]
fn duplicate_yaml_keys_are_an_error() {
    let errs = errors_of(
        "output:\n  max_concurrent_deliveries: 1\n  max_concurrent_deliveries: 2\n",
        &no_env(),
    );
    assert_eq!(errs.len(), 1);
    assert!(
        errs[0].contains("duplicate entry with key \"max_concurrent_deliveries\""),
        "{}",
        errs[0]
    );
}

#[test]
fn yaml_tags_are_refused_at_their_path() {
    assert_eq!(
        errors_of("output:\n  max_concurrent_deliveries: !big 5\n", &no_env()),
        ["output.max_concurrent_deliveries: YAML tags such as !big are not supported; remove the \
          tag"]
    );
}

#[test]
fn top_level_must_be_a_mapping() {
    assert_eq!(
        errors_of("- output\n", &no_env()),
        [
            "the top level must be a mapping of sections (output, logging, server, storage, executor), got a list"
        ]
    );
    assert_eq!(
        errors_of("just text\n", &no_env()),
        [
            "the top level must be a mapping of sections (output, logging, server, storage, executor), got a string"
        ]
    );
}

#[test]
fn unknown_top_level_key_suggests_and_lists_sections() {
    assert_eq!(
        errors_of("outptu:\n  max_concurrent_deliveries: 5\n", &no_env()),
        [
            "outptu: unknown key 'outptu' (did you mean 'output'? valid keys: executor, logging, output, server, storage, tasks)"
        ]
    );
}

#[test]
fn unknown_output_key_suggests() {
    assert_eq!(
        errors_of("output:\n  max_concurent_deliveries: 5\n", &no_env()),
        ["output.max_concurent_deliveries: unknown key 'max_concurent_deliveries' (did you mean \
          'max_concurrent_deliveries'? valid keys: allow_private_networks, allowed_hosts, \
          circuit_breaker, default_retry_policy, default_timeout, delivery_lease, global_destinations, \
          max_concurrent_deliveries, per_destination_concurrency, validate_on_startup)"]
    );
}

#[test]
fn unknown_retry_policy_key_suggests() {
    assert_eq!(
        errors_of("output:\n  default_retry_policy:\n    max_attempt: 4\n", &no_env()),
        ["output.default_retry_policy.max_attempt: unknown key 'max_attempt' (did you mean \
          'max_attempts'? valid keys: backoff_multiplier, initial_delay_ms, jitter, \
          max_attempts, max_delay_ms)"]
    );
}

#[test]
fn unknown_global_destination_key_suggests() {
    let text = "output:\n  global_destinations:\n    - name: a\n      descripton: x\n      \
                destination: {type: filesystem}\n";
    assert_eq!(
        errors_of(text, &no_env()),
        ["output.global_destinations[0].descripton: unknown key 'descripton' (did you mean \
          'description'? valid keys: description, destination, name)"]
    );
}

#[test]
fn retry_max_delay_below_initial_is_refused() {
    let (config, errors) = Config::parse(
        "output:\n  default_retry_policy:\n    initial_delay_ms: 5000\n    max_delay_ms: 1000\n",
        &no_env(),
    );
    assert_eq!(
        errors.iter().map(ToString::to_string).collect::<Vec<_>>(),
        ["output.default_retry_policy.max_delay_ms: must be at least initial_delay_ms (5000), \
          got 1000"]
    );
    assert_eq!(config.output.default_retry_policy, RetryPolicy::default());
}

#[test]
fn retry_multiplier_must_exceed_one() {
    assert_eq!(
        errors_of("output:\n  default_retry_policy:\n    backoff_multiplier: 1.0\n", &no_env()),
        ["output.default_retry_policy.backoff_multiplier: must be greater than 1.0 (e.g. 2.0), \
          got 1"]
    );
    assert_eq!(
        errors_of("output:\n  default_retry_policy:\n    backoff_multiplier: 0.5\n", &no_env()),
        ["output.default_retry_policy.backoff_multiplier: must be greater than 1.0 (e.g. 2.0), \
          got 0.5"]
    );
}

#[test]
fn retry_zero_attempts_is_refused() {
    assert_eq!(
        errors_of("output:\n  default_retry_policy:\n    max_attempts: 0\n", &no_env()),
        ["output.default_retry_policy.max_attempts: must be at least 1 (it counts the first \
          attempt)"]
    );
}

#[test]
fn retry_partial_block_keeps_other_defaults() {
    let config = parse_ok("output:\n  default_retry_policy:\n    max_attempts: 7\n", &no_env());
    assert_eq!(
        config.output.default_retry_policy,
        RetryPolicy { max_attempts: 7, ..RetryPolicy::default() }
    );
}

#[test]
fn max_concurrent_must_be_a_positive_integer() {
    assert_eq!(
        errors_of("output:\n  max_concurrent_deliveries: 0\n", &no_env()),
        ["output.max_concurrent_deliveries: must be a positive integer, got 0"]
    );
    assert_eq!(
        errors_of("output:\n  max_concurrent_deliveries: many\n", &no_env()),
        ["output.max_concurrent_deliveries: must be a positive integer, got a string"]
    );
}

#[test]
fn default_timeout_takes_seconds_or_durations() {
    for (written, expected) in [
        ("45", Duration::from_secs(45)),
        ("\"500ms\"", Duration::from_millis(500)),
        ("\"5s\"", Duration::from_secs(5)),
        ("\"5m\"", Duration::from_secs(300)),
        ("\"1h\"", Duration::from_secs(3600)),
    ] {
        let config = parse_ok(&format!("output:\n  default_timeout: {written}\n"), &no_env());
        assert_eq!(config.output.default_timeout, expected, "{written}");
    }
    assert_eq!(
        errors_of("output:\n  default_timeout: 0\n", &no_env()),
        ["output.default_timeout: must be positive: seconds (30) or a duration (\"500ms\", \
          \"5s\", \"1m\")"]
    );
}

#[test]
fn validate_on_startup_and_allow_private_networks_are_booleans() {
    let config = parse_ok(
        "output:\n  validate_on_startup: false\n  allow_private_networks: true\n",
        &no_env(),
    );
    assert!(!config.output.validate_on_startup);
    assert!(config.output.allow_private_networks);
    assert_eq!(
        errors_of("output:\n  validate_on_startup: 1\n", &no_env()),
        ["output.validate_on_startup: must be true or false, got an integer"]
    );
}

#[test]
fn allowed_hosts_parse_names_and_cidrs() {
    let config =
        parse_ok("output:\n  allowed_hosts: [\"hooks.internal\", \"10.0.0.0/8\"]\n", &no_env());
    assert_eq!(
        config.output.allowed_hosts,
        [HostRule::Host("hooks.internal".into()), HostRule::Net("10.0.0.0/8".parse().unwrap())]
    );
}

#[test]
fn allowed_hosts_must_be_a_list_of_strings() {
    assert_eq!(
        errors_of("output:\n  allowed_hosts: hooks.internal\n", &no_env()),
        ["output.allowed_hosts: must be a list of host names or CIDRs (e.g. [\"hooks.internal\", \
          \"10.0.0.0/8\"]), got a string"]
    );
    assert_eq!(
        errors_of("output:\n  allowed_hosts: [5]\n", &no_env()),
        ["output.allowed_hosts[0]: must be a host name or CIDR string (e.g. \"10.0.0.0/8\"), got \
          an integer"]
    );
}

#[test]
fn each_env_override_applies_over_the_file() {
    type Check = fn(&Config) -> bool;
    let cases: [(&str, &str, Check); 5] = [
        ("OUTFLOW_OUTPUT_MAX_CONCURRENT", "15", |c| c.output.max_concurrent_deliveries == 15),
        ("OUTFLOW_OUTPUT_DEFAULT_TIMEOUT", "60", |c| {
            c.output.default_timeout == Duration::from_secs(60)
        }),
        ("OUTFLOW_OUTPUT_DEFAULT_TIMEOUT", "2m", |c| {
            c.output.default_timeout == Duration::from_secs(120)
        }),
        ("OUTFLOW_OUTPUT_VALIDATE_STARTUP", "false", |c| !c.output.validate_on_startup),
        ("OUTFLOW_LOG_LEVEL", "DEBUG", |c| c.logging.level.as_deref() == Some("debug")),
    ];
    let file = "output:\n  max_concurrent_deliveries: 20\n  default_timeout: 45\n  \
                validate_on_startup: true\nlogging:\n  level: info\n";
    for (var, value, check) in cases {
        let with_file = parse_ok(file, &env(&[(var, value)]));
        assert!(check(&with_file), "{var}={value} over a file");
        let without_file = parse_ok("", &env(&[(var, value)]));
        assert!(check(&without_file), "{var}={value} with no file");
    }
    // Unset and empty variables leave the file alone.
    let c = parse_ok(file, &env(&[("OUTFLOW_OUTPUT_MAX_CONCURRENT", "")]));
    assert_eq!(c.output.max_concurrent_deliveries, 20);
}

#[test]
fn invalid_override_names_the_variable() {
    assert_eq!(
        errors_of("", &env(&[("OUTFLOW_OUTPUT_MAX_CONCURRENT", "lots")])),
        ["output.max_concurrent_deliveries (from OUTFLOW_OUTPUT_MAX_CONCURRENT): must be a \
          positive integer, got a string"]
    );
    assert_eq!(
        errors_of("logging:\n  level: info\n", &env(&[("OUTFLOW_LOG_LEVEL", "verbose")])),
        ["logging.level (from OUTFLOW_LOG_LEVEL): must be one of error, warn, info, debug, \
          trace, got 'verbose'"]
    );
    assert_eq!(
        errors_of("", &env(&[("OUTFLOW_OUTPUT_VALIDATE_STARTUP", "maybe")])),
        ["output.validate_on_startup (from OUTFLOW_OUTPUT_VALIDATE_STARTUP): must be true or \
          false, got a string"]
    );
}

#[test]
fn overrides_table_names_only_real_keys() {
    // Every override must land on a key the decoder reads, or it would be reported unknown.
    for (var, _) in env::ENV_OVERRIDES {
        let value = match *var {
            "OUTFLOW_LOG_LEVEL" => "warn",
            "OUTFLOW_OUTPUT_VALIDATE_STARTUP" => "true",
            "OUTFLOW_SERVER_LISTEN" => "127.0.0.1:9000",
            "OUTFLOW_STORAGE_PATH" => "/var/lib/outflow",
            _ => "7",
        };
        parse_ok("", &env(&[(var, value)]));
    }
}

#[test]
fn variable_defaults_apply_when_unset_or_empty() {
    let text = "output:\n  global_destinations:\n    - name: logs\n      description: \
                \"${DESC:-no description}\"\n      destination:\n        type: filesystem\n        \
                path: \"${OUT_DIR:-/tmp/out}/{{job_uuid}}.json\"\n";
    let fields = |c: &Config| {
        let g = &c.output.global_destinations[0];
        (g.description.clone().unwrap(), g.destination.fields["path"].clone())
    };
    assert_eq!(
        fields(&parse_ok(text, &no_env())),
        ("no description".into(), json!("/tmp/out/{{job_uuid}}.json"))
    );
    assert_eq!(
        fields(&parse_ok(text, &env(&[("OUT_DIR", "/data"), ("DESC", "")]))),
        ("no description".into(), json!("/data/{{job_uuid}}.json"))
    );
}

#[test]
fn expansion_rules() {
    let e = env(&[("A", "x"), ("EMPTY", "")]);
    assert_eq!(expand("${A}-${A}", &e).unwrap(), "x-x");
    assert_eq!(expand("${EMPTY}", &e).unwrap(), "");
    assert_eq!(expand("${EMPTY:-d}", &e).unwrap(), "d");
    assert_eq!(expand("${MISSING:-}", &e).unwrap(), "");
    assert_eq!(expand("$${A} costs $5 and $$", &e).unwrap(), "${A} costs $5 and $$");
    assert_eq!(expand("$HOME", &e).unwrap(), "$HOME");
    assert_eq!(
        expand("a${B", &e).unwrap_err(),
        ["'${' at byte 1 is never closed (write ${NAME} or ${NAME:-default}, or $${ for a \
          literal '${')"]
    );
    assert_eq!(
        expand("${1X}", &e).unwrap_err(),
        ["invalid variable reference at byte 0: names use letters, digits and '_' and do not \
          start with a digit (write ${NAME} or ${NAME:-default}, or $${ for a literal '${')"]
    );
    assert_eq!(expand("${}", &e).unwrap_err().len(), 1);
    assert_eq!(expand("${A B}", &e).unwrap_err().len(), 1);
    assert_eq!(
        expand("${X:-${A}}", &e).unwrap_err(),
        ["nested variable reference in the default at byte 0: a default is literal text and \
          cannot contain '${'"]
    );
    // Every missing variable is reported, not only the first.
    assert_eq!(
        expand("${M1}/${M2}", &e).unwrap_err(),
        [
            "environment variable M1 is not set (write ${M1:-default} to give a default)",
            "environment variable M2 is not set (write ${M2:-default} to give a default)",
        ]
    );
}

#[test]
fn malformed_reference_is_reported_at_its_path() {
    assert_eq!(
        errors_of("logging:\n  level: \"${LEVEL\"\n", &no_env()),
        ["logging.level: '${' at byte 0 is never closed (write ${NAME} or ${NAME:-default}, or \
          $${ for a literal '${')"]
    );
}

#[test]
fn expansion_never_leaks_values_into_errors() {
    let e = env(&[("TOKEN_PART", "s3cr3t-value")]);
    let text = "output:\n  global_destinations:\n    - name: h\n      destination:\n        type: \
                webhook\n        auth: {type: bearer, token: \"${TOKEN_PART}${OTHER_PART}\"}\n";
    let errs = errors_of(text, &e);
    assert_eq!(
        errs,
        ["output.global_destinations[0].destination.auth.token: environment variable OTHER_PART \
          is not set (write ${OTHER_PART:-default} to give a default)"]
    );
    // A bad override value is not echoed either (it is described by type).
    let errs = errors_of("", &env(&[("OUTFLOW_OUTPUT_MAX_CONCURRENT", "s3cr3t-value")]));
    assert!(!errs[0].contains("s3cr3t"), "{}", errs[0]);
}

#[test]
fn expansion_cannot_inject_yaml_and_skips_keys() {
    let e = env(&[("DESC", "x\nvalidate_on_startup: false"), ("K", "expanded")]);
    let text = "output:\n  validate_on_startup: true\n  global_destinations:\n    - name: a\n      \
                description: \"${DESC}\"\n      destination:\n        type: webhook\n        \
                headers: {\"${K}\": v}\n";
    let config = parse_ok(text, &e);
    assert!(config.output.validate_on_startup);
    let g = &config.output.global_destinations[0];
    assert_eq!(g.description.as_deref(), Some("x\nvalidate_on_startup: false"));
    assert_eq!(g.destination.fields["headers"], json!({"${K}": "v"}));
}

#[test]
fn duplicate_names_point_at_the_first() {
    let text = "output:\n  global_destinations:\n    - name: a\n      destination: {type: \
                filesystem}\n    - name: b\n      destination: {type: filesystem}\n    - name: a\n      \
                destination: {type: webhook}\n";
    let (config, errors) = Config::parse(text, &no_env());
    assert_eq!(
        errors.iter().map(ToString::to_string).collect::<Vec<_>>(),
        ["output.global_destinations[2].name: duplicate name 'a': already used by \
          output.global_destinations[0]; names must be unique"]
    );
    let names: Vec<_> = config.output.global_destinations.iter().map(|g| &g.name).collect();
    assert_eq!(names, ["a", "b"]);
}

#[test]
fn names_use_a_limited_alphabet() {
    parse_ok(
        "output:\n  global_destinations:\n    - name: prod.logs-v2_eu\n      destination: {type: \
         filesystem}\n",
        &no_env(),
    );
    assert_eq!(
        errors_of(
            "output:\n  global_destinations:\n    - name: \"my logs\"\n      destination: {type: \
             filesystem}\n    - name: \"\"\n      destination: {type: filesystem}\n",
            &no_env()
        ),
        [
            "output.global_destinations[0].name: may only contain letters, digits, '_', '-' and \
             '.', got 'my logs'",
            "output.global_destinations[1].name: must not be empty (a unique name of letters, \
             digits, '_', '-' and '.')",
        ]
    );
}

#[test]
fn missing_name_and_destination() {
    assert_eq!(
        errors_of("output:\n  global_destinations:\n    - description: orphan\n", &no_env()),
        [
            "output.global_destinations[0].name: is required (a unique name of letters, digits, \
             '_', '-' and '.')",
            "output.global_destinations[0].destination: is required (a mapping with a 'type' \
             key, e.g. type: filesystem)",
        ]
    );
}

#[test]
fn non_mapping_destination() {
    assert_eq!(
        errors_of(
            "output:\n  global_destinations:\n    - name: a\n      destination: /tmp/out.json\n",
            &no_env()
        ),
        ["output.global_destinations[0].destination: must be a mapping with a 'type' key, got a \
          string"]
    );
}

#[test]
fn missing_destination_type() {
    assert_eq!(
        errors_of(
            "output:\n  global_destinations:\n    - name: a\n      destination:\n        path: /x\n",
            &no_env()
        ),
        ["output.global_destinations[0].destination.type: is required: the destination type \
          (e.g. 'filesystem' or 'webhook')"]
    );
}

#[test]
fn global_destinations_shape() {
    assert_eq!(
        errors_of("output:\n  global_destinations:\n    name: a\n", &no_env()),
        ["output.global_destinations: must be a list of entries with 'name' and 'destination', \
          got a mapping"]
    );
    assert_eq!(
        errors_of("output:\n  global_destinations:\n    - logs\n", &no_env()),
        ["output.global_destinations[0]: must be a mapping with 'name' and 'destination', got a \
          string"]
    );
}

#[test]
fn log_level_and_format() {
    let config = parse_ok("logging:\n  level: WARN\n  format: json\n", &no_env());
    assert_eq!(config.logging.level.as_deref(), Some("warn"));
    assert_eq!(config.logging.format.as_deref(), Some("json"));
    assert_eq!(
        errors_of("logging:\n  level: verbose\n  format: xml\n", &no_env()),
        [
            "logging.level: must be one of error, warn, info, debug, trace, got 'verbose'",
            "logging.format: must be one of pretty, json, got 'xml'",
        ]
    );
}

#[test]
fn several_errors_come_together_in_document_order() {
    let text = "\
output:
  default_retry_policy:
    max_attempts: 0
  global_destinations:
    - name: a
      destination: {type: filesystem}
    - destination: 5
  max_concurrent_deliveries: 0
  typo_key: 1
logging:
  level: loud
extra: 1
";
    assert_eq!(
        errors_of(text, &no_env()),
        [
            "output.default_retry_policy.max_attempts: must be at least 1 (it counts the first \
             attempt)",
            "output.global_destinations[1].destination: must be a mapping with a 'type' key, got \
             an integer",
            "output.global_destinations[1].name: is required (a unique name of letters, digits, \
             '_', '-' and '.')",
            "output.max_concurrent_deliveries: must be a positive integer, got 0",
            "output.typo_key: unknown key 'typo_key' (valid keys: allow_private_networks, \
             allowed_hosts, circuit_breaker, default_retry_policy, default_timeout, delivery_lease, \
             global_destinations, max_concurrent_deliveries, per_destination_concurrency, \
             validate_on_startup)",
            "logging.level: must be one of error, warn, info, debug, trace, got 'loud'",
            "extra: unknown key 'extra' (valid keys: executor, logging, output, server, storage, tasks)",
        ]
    );
}

/// A catalog whose only rule is that `filesystem` needs `path` and `webhook` needs `url`.
struct FakeCatalog;

impl DestinationCatalog for FakeCatalog {
    fn kinds(&self) -> Vec<&'static str> {
        vec!["filesystem", "webhook"]
    }

    fn validate(&self, spec: &DestinationSpec, path: &str) -> Vec<ConfigError> {
        let required = match spec.kind.as_str() {
            "filesystem" => "path",
            "webhook" => "url",
            _ => return vec![ConfigError::new(format!("{path}.type"), "unknown")],
        };
        if spec.fields.contains_key(required) {
            vec![]
        } else {
            vec![ConfigError::new(format!("{path}.{required}"), "is required")]
        }
    }
}

#[test]
fn destination_errors_use_the_written_index() {
    let text = "output:\n  global_destinations:\n    - description: no name\n      destination: \
                {type: filesystem}\n    - name: b\n      destination: {type: webhook}\n";
    let (config, errors) = Config::parse(text, &no_env());
    assert_eq!(errors.len(), 1);
    assert_eq!(
        config.validate_destinations(&FakeCatalog),
        [ConfigError::new("output.global_destinations[1].destination.url", "is required")]
    );
}

/// A unique scratch directory under the system temp dir, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir =
            std::env::temp_dir().join(format!("outflow-config-test-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    fn write(&self, file: &str, text: &str) -> PathBuf {
        let p = self.0.join(file);
        std::fs::write(&p, text).unwrap();
        p
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn load_reports_parse_and_destination_errors_in_document_order() {
    let dir = Scratch::new("load");
    let path = dir.write(
        "outflow.yaml",
        "output:\n  global_destinations:\n    - name: a\n      destination: {type: webhook}\n  \
         max_concurrent_deliveries: 0\n",
    );
    let err = Config::load(Some(&path), &no_env(), &FakeCatalog).unwrap_err();
    assert_eq!(err.source, path.display().to_string());
    assert_eq!(
        err.errors,
        [
            ConfigError::new("output.global_destinations[0].destination.url", "is required"),
            ConfigError::new(
                "output.max_concurrent_deliveries",
                "must be a positive integer, got 0"
            ),
        ]
    );
    assert_eq!(
        err.to_string(),
        format!(
            "{p}: 2 errors\n  {p}: output.global_destinations[0].destination.url: is required\n  \
             {p}: output.max_concurrent_deliveries: must be a positive integer, got 0\n",
            p = path.display()
        )
    );
}

#[test]
fn load_succeeds_on_the_seed() {
    let dir = Scratch::new("seed");
    let path = dir.write("outflow.yaml", SEED);
    let e = env(&[("ANALYTICS_WEBHOOK_TOKEN", "t")]);
    let config = Config::load(Some(&path), &e, &FakeCatalog).unwrap();
    assert_eq!(config, Config::parse(SEED, &e).0);
    assert_eq!(config.output.global_destinations.len(), 2);
}

#[test]
fn load_without_a_file_uses_defaults_and_overrides() {
    let config =
        Config::load(None, &env(&[("OUTFLOW_OUTPUT_MAX_CONCURRENT", "3")]), &FakeCatalog).unwrap();
    assert_eq!(config.output.max_concurrent_deliveries, 3);
    let err = Config::load(None, &env(&[("OUTFLOW_LOG_LEVEL", "loud")]), &FakeCatalog).unwrap_err();
    assert_eq!(err.source, "<defaults>");
    assert_eq!(err.errors[0].path, "logging.level (from OUTFLOW_LOG_LEVEL)");
}

#[test]
fn load_reports_an_unreadable_file() {
    let dir = Scratch::new("missing");
    let path = dir.0.join("nope.yaml");
    let err = Config::load(Some(&path), &no_env(), &FakeCatalog).unwrap_err();
    assert_eq!(err.source, path.display().to_string());
    assert_eq!(err.errors.len(), 1);
    assert!(
        err.errors[0].message.starts_with("cannot read config file: "),
        "{}",
        err.errors[0].message
    );
}

#[test]
fn config_path_resolution_order() {
    let dir = Scratch::new("resolve");
    let explicit = Path::new("/etc/outflow/custom.yaml");
    let from_env = env(&[("OUTFLOW_CONFIG", "/srv/outflow.yaml")]);
    // Nothing anywhere: defaults.
    assert_eq!(resolve_config_path_in(None, &no_env(), &dir.0), None);
    // The working directory's file once it exists.
    let local = dir.write("outflow.yaml", "");
    assert_eq!(resolve_config_path_in(None, &no_env(), &dir.0), Some(local));
    // OUTFLOW_CONFIG beats the local file (empty counts as unset).
    assert_eq!(
        resolve_config_path_in(None, &from_env, &dir.0),
        Some(PathBuf::from("/srv/outflow.yaml"))
    );
    assert_eq!(
        resolve_config_path_in(None, &env(&[("OUTFLOW_CONFIG", "")]), &dir.0),
        Some(dir.0.join("outflow.yaml"))
    );
    // --config beats everything, even when the file does not exist.
    assert_eq!(
        resolve_config_path_in(Some(explicit), &from_env, &dir.0),
        Some(explicit.to_path_buf())
    );
}

#[test]
fn redacted_dump_never_shows_a_secret() {
    let config = parse_ok(SEED, &env(&[("ANALYTICS_WEBHOOK_TOKEN", "tok-SECRET-123")]));
    let yaml = config.redacted_yaml();
    assert!(!yaml.contains("tok-SECRET-123"), "{yaml}");
    assert!(yaml.contains(&format!("token: '{MASK}'")), "{yaml}");
    // Keys keep the file's order.
    let expected = [
        "    destination:",
        "      type: filesystem",
        "      path: /var/log/ratchet/outputs/{{environment}}/{{job_uuid}}.json",
        "      format: json",
        "      permissions: '644'",
        "",
    ];
    assert!(yaml.contains(&expected.join("\n")), "{yaml}");
    // Everything else survives: parsing the dump back gives the same config, token aside.
    let mut reparsed = parse_ok(&yaml, &no_env());
    reparsed.output.global_destinations[1]
        .destination
        .fields
        .insert("auth".into(), json!({"type": "bearer", "token": "tok-SECRET-123"}));
    assert_eq!(reparsed, config);
}

#[test]
fn redaction_covers_api_keys_headers_and_urls() {
    let tree = json!({
        "a": {"auth": {"type": "api_key", "header": "X-API-Key", "value": "v-secret"}},
        "b": {"auth": {"type": "basic", "username": "u", "password": "p-secret"}},
        "c": {"auth": {"type": "signature", "secret": "whsec_secret", "algorithm": "sha256"}},
        "d": {"headers": {"Authorization": "Bearer h-secret", "X-Api-Key": "k-secret",
                          "X-Env": "prod"}},
        "e": ["https://user:u-secret@example.com/p?token=q-secret&x=1#frag"],
        "f": {"webhook_secret": {"nested": "n-secret"}, "value": "not an api key block"},
    });
    let out = serde_json::to_string(&redact(&tree)).unwrap();
    for secret in [
        "v-secret",
        "p-secret",
        "whsec_secret",
        "h-secret",
        "k-secret",
        "u-secret",
        "q-secret",
        "n-secret",
    ] {
        assert!(!out.contains(secret), "{secret} leaked in {out}");
    }
    let r = redact(&tree);
    assert_eq!(r["a"]["auth"]["header"], "X-API-Key");
    assert_eq!(r["b"]["auth"]["username"], "u");
    assert_eq!(r["d"]["headers"]["X-Env"], "prod");
    assert_eq!(r["e"][0], format!("https://user:{MASK}@example.com/p?token={MASK}&x=1#frag"));
    assert_eq!(r["f"]["value"], "not an api key block");
    assert_eq!(r["b"]["auth"]["password"], MASK);
}

#[test]
fn merge_keys_and_number_keys_are_accepted() {
    let text = "\
x-base: &base
  type: webhook
  url: https://example.com/hook
output:
  global_destinations:
    - name: a
      destination:
        <<: *base
        retry_on_status: {503: true}
";
    // `x-base` is not a section, so it is still reported; the merge itself worked.
    let (config, errors) = Config::parse(text, &no_env());
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].path, "x-base");
    let spec = &config.output.global_destinations[0].destination;
    assert_eq!(spec.kind, "webhook");
    assert_eq!(
        Value::Object(spec.fields.clone()),
        json!({"url": "https://example.com/hook", "retry_on_status": {"503": true}})
    );
}

#[test]
fn redacted_dump_keeps_sub_second_timeouts() {
    let config = parse_ok("output:\n  default_timeout: 1500ms\n", &no_env());
    let yaml = config.redacted_yaml();
    assert!(yaml.contains("default_timeout: 1500ms\n"), "{yaml}");
    assert_eq!(parse_ok(&yaml, &no_env()), config);
}

#[test]
fn server_storage_executor_sections() {
    let text = "server:\n  listen: \"0.0.0.0:9090\"\n  body_limit: 1MiB\n  shutdown_grace: 5s\n\
                storage:\n  path: /var/lib/outflow\nexecutor:\n  max_concurrent_jobs: 3\n  max_output_bytes: 1KiB\n\
                output:\n  per_destination_concurrency: 2\n  circuit_breaker: {failure_threshold: 7, cool_down: 1m}\n";
    let c = parse_ok(text, &no_env());
    assert_eq!(c.server.listen.to_string(), "0.0.0.0:9090");
    assert_eq!(c.server.body_limit, 1024 * 1024);
    assert_eq!(c.server.shutdown_grace, std::time::Duration::from_secs(5));
    assert_eq!(c.storage.path, std::path::PathBuf::from("/var/lib/outflow"));
    assert_eq!(c.executor.max_concurrent_jobs, 3);
    assert_eq!(c.executor.max_output_bytes, 1024);
    assert_eq!(parse_ok("", &no_env()).executor.max_output_bytes, 32 * 1024 * 1024);
    assert_eq!(
        errors_of("executor:\n  max_output_bytes: 0\n", &no_env()),
        ["executor.max_output_bytes: must be a positive size such as \"32MiB\""]
    );
    assert_eq!(c.output.limits.per_destination_concurrency, 2);
    assert_eq!(c.output.limits.breaker_failure_threshold, 7);
    assert_eq!(c.output.limits.breaker_cool_down, std::time::Duration::from_secs(60));
    assert_eq!(
        errors_of("server:\n  listen: localhost\n", &no_env()),
        [
            "server.listen: must be an address:port such as \"127.0.0.1:8080\" or \"0.0.0.0:8080\", got 'localhost'"
        ]
    );
}

#[test]
fn tasks_load_and_validate() {
    let text = r#"
tasks:
  - name: report
    version: 1.2
    command: /bin/sh
    args: ["-c", "cat"]
    env: {A: b}
    timeout_seconds: 30
    output_destinations:
      - {type: filesystem, path: /tmp/x.json}
  - name: external
"#;
    let c = parse_ok(text, &no_env());
    assert_eq!(c.tasks.len(), 2);
    let t = &c.tasks[0];
    assert_eq!(
        (t.name.as_str(), t.version.as_deref(), t.command.as_deref()),
        ("report", Some("1.2"), Some("/bin/sh"))
    );
    assert_eq!(t.args, ["-c", "cat"]);
    assert_eq!(t.timeout, Some(std::time::Duration::from_secs(30)));
    let def = t.definition();
    assert_eq!(def["timeout_seconds"], json!(30.0));
    assert_eq!(def["output_destinations"][0]["type"], "filesystem");
    assert!(c.tasks[1].command.is_none());

    assert_eq!(
        errors_of(
            "tasks:\n  - name: a\n  - name: a\n  - {command: x}\n  - name: b\n    args: [x]\n",
            &no_env()
        ),
        [
            "tasks[1].name: duplicate task name 'a': already used by tasks[0]",
            "tasks[2].name: is required (a unique task name of letters, digits, '_', '-' and '.')",
            "tasks[3].args: only applies to tasks with a 'command'",
        ]
    );
}

#[test]
fn delivery_lease_outlasts_the_timeout() {
    let c = parse_ok("output:\n  default_timeout: 300\n", &no_env());
    assert_eq!(c.output.limits.lease, std::time::Duration::from_secs(600));
    let c = parse_ok("output:\n  delivery_lease: 5s\n  default_timeout: 2\n", &no_env());
    assert_eq!(c.output.limits.lease, std::time::Duration::from_secs(5));
    assert_eq!(
        errors_of("output:\n  delivery_lease: 10s\n", &no_env()),
        [
            "output.delivery_lease: must be longer than default_timeout (30s), got 10s: an attempt is cut at 90 % of the lease"
        ]
    );
}
