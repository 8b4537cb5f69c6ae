//! Figures and how they are printed.

use serde::Serialize;

/// One measured figure.
#[derive(Debug, Clone, Serialize)]
pub struct Figure {
    /// Stable, greppable name (`webhook_deliveries_per_sec`).
    pub name: String,
    /// The value.
    pub value: f64,
    /// Its unit (`1/s`, `ms`, `MiB`, `s`, `count`).
    pub unit: &'static str,
}

/// A scenario's result.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The scenario's name.
    pub scenario: &'static str,
    /// What was measured, in order.
    pub figures: Vec<Figure>,
}

impl Report {
    /// An empty report for `scenario`.
    pub fn new(scenario: &'static str) -> Self {
        Report { scenario, figures: Vec::new() }
    }

    /// Adds a figure.
    pub fn add(&mut self, name: impl Into<String>, value: f64, unit: &'static str) {
        self.figures.push(Figure { name: name.into(), value, unit });
    }

    /// Adds p50/p90/p99/max of `samples_ms` under `prefix`.
    pub fn add_percentiles(&mut self, prefix: &str, samples_ms: &mut [f64]) {
        if samples_ms.is_empty() {
            return;
        }
        samples_ms.sort_by(|a, b| a.total_cmp(b));
        for (label, q) in [("p50", 0.50), ("p90", 0.90), ("p99", 0.99)] {
            self.add(format!("{prefix}_{label}"), percentile(samples_ms, q), "ms");
        }
        self.add(format!("{prefix}_max"), *samples_ms.last().expect("non-empty"), "ms");
    }

    /// Prints `name value unit` lines, or the JSON document.
    pub fn print(&self, json: bool) -> anyhow::Result<()> {
        if json {
            println!("{}", serde_json::to_string_pretty(self)?);
        } else {
            for f in &self.figures {
                let value = if f.value.fract() == 0.0 && f.value.abs() < 1e15 {
                    format!("{}", f.value as i64)
                } else {
                    format!("{:.3}", f.value)
                };
                println!("{} {value} {}", f.name, f.unit);
            }
        }
        Ok(())
    }
}

/// The `q` quantile of sorted samples (nearest rank).
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), 50.0);
        assert_eq!(percentile(&v, 0.99), 99.0);
        assert_eq!(percentile(&v, 1.0), 100.0);
        assert_eq!(percentile(&[7.0], 0.99), 7.0);
    }
}
