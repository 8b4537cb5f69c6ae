//! `outflow jobs ...`: the job commands of the REST client.

use std::process::ExitCode;

use anyhow::{Context, bail};
use outflow_client::Client;
use serde_json::{Map, Value, json};

use crate::cli::{JobsCommand, ListJobsArgs, ServerArg, SubmitArgs};
use crate::table::{Table, cell};

/// A client for `--server`, with `--api-key`.
pub fn client(server: &ServerArg) -> anyhow::Result<Client> {
    Ok(Client::new(&server.server)?.with_token(server.api_key.clone()))
}

fn print_json(v: &Value) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

/// Runs one `jobs` subcommand.
pub async fn run(server: ServerArg, command: JobsCommand) -> anyhow::Result<ExitCode> {
    let client = client(&server)?;
    match command {
        JobsCommand::Submit(args) => {
            let (job, created) = client.submit_job(&submit_body(&args)?).await?;
            if server.json {
                print_json(&job)?;
            } else {
                let verb = if created { "submitted" } else { "already exists" };
                println!(
                    "job {} {verb}: uuid {}, status {}",
                    cell(&job, "id"),
                    cell(&job, "job_uuid"),
                    cell(&job, "status")
                );
            }
        }
        JobsCommand::List(args) => {
            let page = client.list_jobs(&list_query(&args)).await?;
            if server.json {
                print_json(&page)?;
            } else {
                print_jobs(&page);
            }
        }
        JobsCommand::Get { id } => print_json(&client.get_job(&id).await?)?,
        JobsCommand::Status { id } => {
            let status = client.job_status(&id).await?;
            if server.json {
                print_json(&status)?;
            } else {
                let progress = match status.get("progress").and_then(Value::as_u64) {
                    Some(p) => format!(" ({p}%)"),
                    None => String::new(),
                };
                let error = match status.get("error").and_then(Value::as_str) {
                    Some(e) => format!(": {e}"),
                    None => String::new(),
                };
                println!("{}{progress}{error}", cell(&status, "status"));
            }
        }
        JobsCommand::Output { id, version, output } => {
            let body = client.job_output(&id, version).await?;
            match output {
                Some(path) => std::fs::write(&path, &body.bytes)
                    .with_context(|| format!("cannot write {}", path.display()))?,
                None => {
                    use std::io::Write;
                    std::io::stdout().write_all(&body.bytes)?;
                }
            }
        }
        JobsCommand::Cancel { id } => {
            let job = client.cancel_job(&id).await?;
            if server.json {
                print_json(&job)?;
            } else {
                println!("job {} {}", cell(&job, "id"), cell(&job, "status"));
            }
        }
        JobsCommand::Delete { id, force } => {
            client.delete_job(&id, force).await?;
            if !server.json {
                println!("job {id} deleted");
            }
        }
        JobsCommand::Deliveries { id } => {
            let deliveries = client.job_deliveries(&id).await?;
            if server.json {
                print_json(&deliveries)?;
            } else {
                crate::commands::deliveries::print_deliveries(&deliveries);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn submit_body(args: &SubmitArgs) -> anyhow::Result<Value> {
    let mut body = Map::new();
    if let Some(name) = &args.task_name {
        body.insert("task_name".into(), json!(name));
    }
    if let Some(id) = args.task_id {
        body.insert("task_id".into(), json!(id));
    }
    if let Some(input) = &args.input {
        let text = match input.strip_prefix('@') {
            Some(path) => std::fs::read_to_string(path)
                .with_context(|| format!("cannot read --input file {path}"))?,
            None => input.clone(),
        };
        let value: Value = serde_json::from_str(&text)
            .with_context(|| "--input must be JSON (or @FILE holding JSON)".to_string())?;
        body.insert("input_data".into(), value);
    }
    if let Some(p) = &args.priority {
        body.insert("priority".into(), json!(p));
    }
    if !args.to.is_empty() {
        body.insert("destinations".into(), json!(args.to));
    }
    if !args.dest.is_empty() {
        let mut list = Vec::new();
        for (i, d) in args.dest.iter().enumerate() {
            match serde_json::from_str::<Value>(d) {
                Ok(v) => list.push(v),
                Err(e) => bail!("--dest #{} is not valid JSON: {e}", i + 1),
            }
        }
        body.insert("output_destinations".into(), Value::Array(list));
    }
    if let Some(id) = &args.job_id {
        body.insert("job_id".into(), json!(id));
    }
    if !args.meta.is_empty() {
        let mut meta = Map::new();
        for (k, v) in &args.meta {
            let value = if k == "tags" {
                json!(v.split(',').map(str::trim).filter(|t| !t.is_empty()).collect::<Vec<_>>())
            } else {
                json!(v)
            };
            meta.insert(k.clone(), value);
        }
        body.insert("metadata".into(), Value::Object(meta));
    }
    Ok(Value::Object(body))
}

fn list_query(args: &ListJobsArgs) -> Vec<(&'static str, String)> {
    let mut q = vec![("page", args.page.to_string()), ("limit", args.limit.to_string())];
    if let Some(s) = &args.status {
        q.push(("status", s.clone()));
    }
    if let Some(t) = &args.task_name {
        q.push(("task_name", t.clone()));
    }
    if let Some(t) = &args.tag {
        q.push(("tag", t.clone()));
    }
    q
}

fn print_jobs(page: &Value) {
    let mut table = Table::new(vec!["ID", "UUID", "TASK", "STATUS", "PRIORITY", "QUEUED AT"]);
    let rows = page.get("data").and_then(Value::as_array).cloned().unwrap_or_default();
    for job in &rows {
        table.row(vec![
            cell(job, "id"),
            cell(job, "job_uuid"),
            cell(job, "task_name"),
            cell(job, "status"),
            cell(job, "priority"),
            cell(job, "queued_at"),
        ]);
    }
    table.print();
    println!(
        "{} of {} (page {}, limit {})",
        rows.len(),
        cell(page, "total"),
        cell(page, "page"),
        cell(page, "limit")
    );
}
