//! `/metrics`: Prometheus text.
//!
//! Two sources: the process-wide `metrics` recorder (the engine's attempt counters,
//! latency histograms, bytes delivered, executed jobs), installed once per process because
//! tests start several servers in one; and, per scrape, gauges read from *this* server's
//! store and engine (jobs by status, deliveries by state, queue depth, dead letters,
//! circuit state). The latter are rendered directly rather than through the global
//! recorder, so two servers in one process never report each other's counts.

use std::fmt::Write as _;
use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use outflow_core::delivery::DeliveryState;
use outflow_core::job::JobStatus;
use outflow_engine::CircuitView;
use outflow_store::StoreStats;

/// Histogram buckets in seconds (attempt and job durations): 5 ms to 60 s.
const BUCKETS: &[f64] =
    &[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// The process's Prometheus handle, installing the recorder on first use. When another
/// recorder was installed first (an embedding program's), the handle renders only what
/// this module writes and a warning says why the engine's series are missing.
pub fn handle() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets(BUCKETS)
            .unwrap_or_else(|_| PrometheusBuilder::new());
        match builder.install_recorder() {
            Ok(handle) => handle,
            Err(e) => {
                tracing::warn!(
                    error = %e,
                    "another metrics recorder is installed; /metrics shows only store gauges"
                );
                PrometheusBuilder::new().build_recorder().handle()
            }
        }
    })
}

fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

fn gauge_header(out: &mut String, name: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} gauge");
}

/// The per-scrape gauges of one server, in Prometheus text format.
pub fn render_gauges(stats: &StoreStats, circuits: &[CircuitView]) -> String {
    let mut out = String::new();
    gauge_header(&mut out, "outflow_jobs", "Jobs in the store by status.");
    for status in JobStatus::ALL {
        let n = stats.jobs_by_status.iter().find(|(s, _)| *s == status).map_or(0, |(_, n)| *n);
        let _ = writeln!(out, "outflow_jobs{{status=\"{}\"}} {n}", status.as_str());
    }
    let count = |state: DeliveryState| {
        stats.deliveries_by_state.iter().find(|(s, _)| *s == state).map_or(0, |(_, n)| *n)
    };
    gauge_header(&mut out, "outflow_deliveries", "Deliveries in the store by state.");
    for state in DeliveryState::ALL {
        let _ =
            writeln!(out, "outflow_deliveries{{state=\"{}\"}} {}", state.as_str(), count(state));
    }
    gauge_header(
        &mut out,
        "outflow_delivery_queue_depth",
        "Deliveries waiting for an attempt (pending + scheduled).",
    );
    let depth = count(DeliveryState::Pending) + count(DeliveryState::Scheduled);
    let _ = writeln!(out, "outflow_delivery_queue_depth {depth}");
    gauge_header(&mut out, "outflow_dead_letters", "Deliveries in the dead-letter list.");
    let _ = writeln!(out, "outflow_dead_letters {}", count(DeliveryState::Dead));
    gauge_header(
        &mut out,
        "outflow_circuit_state",
        "Circuit breaker per destination key: 0 closed, 1 half-open, 2 open.",
    );
    for c in circuits {
        let value = match c.state {
            "open" => 2,
            "half_open" => 1,
            _ => 0,
        };
        let _ = writeln!(out, "outflow_circuit_state{{key=\"{}\"}} {value}", escape_label(&c.key));
    }
    out
}

/// The whole `/metrics` body: the recorder's series, then this server's gauges.
pub fn render(stats: &StoreStats, circuits: &[CircuitView]) -> String {
    let handle = handle();
    handle.run_upkeep();
    let mut text = handle.render();
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str(&render_gauges(stats, circuits));
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gauges_are_zero_filled() {
        let stats = StoreStats {
            jobs_by_status: vec![(JobStatus::Queued, 3)],
            deliveries_by_state: vec![
                (DeliveryState::Pending, 2),
                (DeliveryState::Scheduled, 1),
                (DeliveryState::Dead, 4),
            ],
        };
        let circuits =
            vec![CircuitView { key: "http://a\"b".into(), state: "open", consecutive_failures: 5 }];
        let text = render_gauges(&stats, &circuits);
        assert!(text.contains("outflow_jobs{status=\"queued\"} 3\n"));
        assert!(text.contains("outflow_jobs{status=\"failed\"} 0\n"));
        assert!(text.contains("outflow_delivery_queue_depth 3\n"));
        assert!(text.contains("outflow_dead_letters 4\n"));
        assert!(text.contains("outflow_circuit_state{key=\"http://a\\\"b\"} 2\n"));
    }
}
