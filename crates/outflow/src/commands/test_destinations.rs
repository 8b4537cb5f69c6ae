//! `outflow test-destinations`: validate each destination and check it is reachable,
//! without delivering anything.

use std::process::ExitCode;

use outflow_destinations::check::check_built;
use serde::Serialize;

use crate::cli::TestDestinationsArgs;
use crate::destinations;

/// One row, shaped like the REST API's `test-output-destinations` answer.
#[derive(Debug, Serialize)]
struct TestResult {
    index: usize,
    name: String,
    destination_type: String,
    success: bool,
    error: Option<String>,
    estimated_time_ms: u64,
}

/// Checks every requested destination; exit 0 only if all are valid and reachable.
pub async fn run(args: TestDestinationsArgs) -> anyhow::Result<ExitCode> {
    let loaded = destinations::load(&args.config, false)?;
    let requested = destinations::requested(&loaded, &args.to, &args.dest)?;
    let mut results = Vec::with_capacity(requested.len());
    for (index, r) in requested.into_iter().enumerate() {
        // The same check as the API's test-output-destinations, so both report alike.
        let check = check_built(r.built).await;
        results.push(TestResult {
            index,
            name: r.name,
            destination_type: r.kind,
            success: check.success,
            error: check.error,
            estimated_time_ms: check.elapsed.as_millis() as u64,
        });
    }
    let all_ok = results.iter().all(|r| r.success);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&serde_json::json!({ "data": results }))?);
    } else {
        // The type column is as wide as its longest entry (`elasticsearch`).
        let width = results.iter().map(|r| r.destination_type.len()).max().unwrap_or(0).max(11);
        println!("index  {:<width$}  success  time_ms  name / error", "type");
        for r in &results {
            let detail = match &r.error {
                Some(e) => format!("{}: {e}", r.name),
                None => r.name.clone(),
            };
            println!(
                "{:<5}  {:<width$}  {:<7}  {:>7}  {detail}",
                r.index, r.destination_type, r.success, r.estimated_time_ms
            );
        }
    }
    Ok(if all_ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
