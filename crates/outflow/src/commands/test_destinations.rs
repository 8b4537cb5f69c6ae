//! `outflow test-destinations`: validate each destination and check it is reachable,
//! without delivering anything.

use std::process::ExitCode;
use std::time::Instant;

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
        let started = Instant::now();
        let (success, error) = match r.built {
            Err(errors) => {
                let text = errors.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; ");
                (false, Some(text))
            }
            Ok(dest) => match dest.check().await {
                Ok(_) => (true, None),
                Err(e) => (false, Some(e.message)),
            },
        };
        results.push(TestResult {
            index,
            name: r.name,
            destination_type: r.kind,
            success,
            error,
            estimated_time_ms: started.elapsed().as_millis() as u64,
        });
    }
    let all_ok = results.iter().all(|r| r.success);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&serde_json::json!({ "data": results }))?);
    } else {
        println!("index  type         success  time_ms  name / error");
        for r in &results {
            let detail = match &r.error {
                Some(e) => format!("{}: {e}", r.name),
                None => r.name.clone(),
            };
            println!(
                "{:<5}  {:<11}  {:<7}  {:>7}  {detail}",
                r.index, r.destination_type, r.success, r.estimated_time_ms
            );
        }
    }
    Ok(if all_ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
