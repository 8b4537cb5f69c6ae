//! Testing destinations without delivering: validate each spec, then probe it with
//! [`Destination::check`]. Shared by `outflow test-destinations` and the server's
//! `POST /api/v1/jobs/test-output-destinations`, so both report the same way.

use std::sync::Arc;
use std::time::{Duration, Instant};

use outflow_core::config::{ConfigError, DestinationSpec};
use serde_json::Value;

use crate::{Destination, Registry, SpecOrigin};

/// The outcome of testing one destination.
#[derive(Debug, Clone, PartialEq)]
pub struct SpecCheck {
    /// Valid and reachable.
    pub success: bool,
    /// Every validation problem (`path: message`, joined by `; `) or the probe's failure.
    pub error: Option<String>,
    /// How long validating and probing took.
    pub elapsed: Duration,
}

/// Probes an already built destination, or reports why it could not be built.
pub async fn check_built(built: Result<Arc<dyn Destination>, Vec<ConfigError>>) -> SpecCheck {
    let started = Instant::now();
    let (success, error) = match built {
        Err(errors) => {
            (false, Some(errors.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; ")))
        }
        Ok(dest) => match dest.check().await {
            Ok(_) => (true, None),
            Err(e) => (false, Some(e.message)),
        },
    };
    SpecCheck { success, error, elapsed: started.elapsed() }
}

/// Validates and probes one raw spec (`{"type": ..., ...}`) written by `origin`; `path`
/// names it in errors (`destinations[0]`).
pub async fn check_spec(
    registry: &Registry,
    spec: &Value,
    path: &str,
    origin: SpecOrigin,
) -> SpecCheck {
    let started = Instant::now();
    let built = DestinationSpec::from_value(spec, path)
        .map_err(|e| vec![e])
        .and_then(|spec| registry.build_from(&spec, path, origin));
    let mut report = check_built(built).await;
    report.elapsed = started.elapsed();
    report
}

/// Tests every spec concurrently (a slow probe does not delay the others); results come
/// back in input order. Paths are `{prefix}[i]`.
pub async fn check_specs(
    registry: &Registry,
    specs: &[Value],
    prefix: &str,
    origin: SpecOrigin,
) -> Vec<SpecCheck> {
    let checks = specs.iter().enumerate().map(|(i, spec)| async move {
        check_spec(registry, spec, &format!("{prefix}[{i}]"), origin).await
    });
    futures::future::join_all(checks).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[tokio::test]
    async fn invalid_specs_report_every_problem() {
        let reports = check_specs(
            &Registry::default(),
            &[json!({"path": "/tmp/x"}), json!({"type": "ftp"})],
            "destinations",
            SpecOrigin::Operator,
        )
        .await;
        assert!(!reports[0].success);
        assert_eq!(
            reports[0].error.as_deref(),
            Some(
                "destinations[0].type: is required: the destination type (e.g. 'filesystem' or 'webhook')"
            )
        );
        assert!(
            reports[1]
                .error
                .as_deref()
                .unwrap()
                .starts_with("destinations[1].type: unknown destination type 'ftp'")
        );
    }
}
