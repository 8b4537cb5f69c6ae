//! `outflow deliveries ...`: list deliveries, retry and replay dead letters.

use std::process::ExitCode;

use serde_json::{Map, Value, json};

use crate::cli::{DeliveriesCommand, ServerArg};
use crate::commands::jobs::client;
use crate::table::{Table, cell};

/// Runs one `deliveries` subcommand.
pub async fn run(server: ServerArg, command: DeliveriesCommand) -> anyhow::Result<ExitCode> {
    let client = client(&server)?;
    match command {
        DeliveriesCommand::List { state, job_id, destination_type, page, limit } => {
            let mut q = vec![("page", page.to_string()), ("limit", limit.to_string())];
            if let Some(s) = state {
                q.push(("state", s));
            }
            if let Some(j) = job_id {
                q.push(("job_id", j.to_string()));
            }
            if let Some(t) = destination_type {
                q.push(("destination_type", t));
            }
            let page = client.list_deliveries(&q).await?;
            if server.json {
                println!("{}", serde_json::to_string_pretty(&page)?);
            } else {
                print_deliveries(&page);
                println!("{} in all", cell(&page, "total"));
            }
        }
        DeliveriesCommand::Retry { id } => {
            let d = client.retry_delivery(&id).await?;
            if server.json {
                println!("{}", serde_json::to_string_pretty(&d)?);
            } else {
                println!("delivery {id} requeued ({})", cell(&d, "state"));
            }
        }
        DeliveriesCommand::Replay { destination_type, job_id, created_after, created_before } => {
            let mut filter = Map::new();
            for (k, v) in [
                ("destination_type", destination_type.map(|s| json!(s))),
                ("job_id", job_id.map(|j| json!(j))),
                ("created_after", created_after.map(|s| json!(s))),
                ("created_before", created_before.map(|s| json!(s))),
            ] {
                if let Some(v) = v {
                    filter.insert(k.into(), v);
                }
            }
            let answer = client.replay_deliveries(&Value::Object(filter)).await?;
            if server.json {
                println!("{}", serde_json::to_string_pretty(&answer)?);
            } else {
                println!("{} dead deliveries requeued", cell(&answer, "requeued"));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints deliveries (a list envelope `{"data": [...]}` or a bare array) as a table.
pub fn print_deliveries(v: &Value) {
    let rows = v
        .get("data")
        .and_then(Value::as_array)
        .or_else(|| v.as_array())
        .cloned()
        .unwrap_or_default();
    let mut table =
        Table::new(vec!["ID", "JOB", "DESTINATION", "TYPE", "STATE", "ATTEMPTS", "LAST ERROR"]);
    for d in &rows {
        let attempts = match d.get("attempts") {
            Some(Value::Array(a)) => a.len().to_string(),
            _ => cell(d, "attempts"),
        };
        table.row(vec![
            cell(d, "id"),
            cell(d, "job_id"),
            cell(d, "destination_name"),
            cell(d, "destination_type"),
            cell(d, "state"),
            attempts,
            cell(d, "last_error"),
        ]);
    }
    table.print();
}
