//! `outflow deliver`: send a file or stdin to destinations and report each result.

use std::process::ExitCode;

use anyhow::{Context, bail};
use outflow_core::context::{JobContext, Priority};
use outflow_core::output::Output;
use outflow_destinations::runner::{DeliveryReport, deliver_all};
use serde_json::Value;

use crate::cli::DeliverArgs;
use crate::{destinations, input};

/// Delivers the input to every requested destination; exit 0 only if all succeeded.
pub async fn run(args: DeliverArgs) -> anyhow::Result<ExitCode> {
    let loaded = destinations::load(&args.config, false)?;
    let job = job_context(&args)?;
    let requested = destinations::requested(&loaded, &args.to, &args.dest)?;
    let destinations = destinations::build_all(requested)?;

    if args.dry_run {
        for d in &destinations {
            println!(
                "would deliver to {}  {}  {}",
                d.name,
                d.destination.kind(),
                d.destination.describe()
            );
        }
        println!(
            "job_uuid {}  ({} destination(s), nothing delivered)",
            job.job_uuid,
            destinations.len()
        );
        return Ok(ExitCode::SUCCESS);
    }

    let bytes = input::read_input(args.input.as_deref())?;
    let output = if args.raw {
        match String::from_utf8(bytes.to_vec()) {
            Ok(text) => Output::Text(text),
            Err(_) => Output::Binary(bytes),
        }
    } else {
        Output::detect(bytes)
    };

    let reports =
        deliver_all(&destinations, &job, &output, loaded.config.output.max_concurrent_deliveries)
            .await;
    let all_ok = reports.iter().all(|r| r.success);
    if args.json {
        let doc =
            serde_json::json!({"job_uuid": job.job_uuid, "success": all_ok, "results": reports});
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        print_table(&reports);
    }
    Ok(if all_ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

fn job_context(args: &DeliverArgs) -> anyhow::Result<JobContext> {
    let mut job = JobContext::new_now();
    if let Some(id) = &args.job_id {
        if let Ok(uuid) = uuid::Uuid::parse_str(id) {
            job.job_uuid = uuid;
        } else if let Ok(n) = id.parse::<i64>() {
            job.job_id = Some(n);
        } else {
            bail!("--job-id must be a UUID or a number, got '{id}'");
        }
    }
    job.task_name = args.task_name.clone();
    job.task_version = args.task_version.clone();
    job.status = args.status.clone();
    job.priority = Priority::parse(&args.priority).with_context(|| {
        format!("--priority must be low, normal, high or urgent, got '{}'", args.priority)
    })?;
    for (k, v) in &args.meta {
        job.metadata.insert(k.clone(), Value::String(v.clone()));
    }
    job.vars = args.vars.iter().cloned().collect();
    Ok(job)
}

fn print_table(reports: &[DeliveryReport]) {
    let width = |f: &dyn Fn(&DeliveryReport) -> usize| reports.iter().map(f).max().unwrap_or(0);
    let wn = width(&|r| r.name.len());
    let wt = width(&|r| r.destination_type.len());
    let wg = width(&|r| r.target.len()).min(80);
    for r in reports {
        let n = r.attempts.len();
        let attempts = format!("{n} attempt{}", if n == 1 { "" } else { "s" });
        let status = if r.success { "ok  " } else { "FAIL" };
        let tail = match &r.error {
            Some(e) => format!("  {e}"),
            None => format!("  {} bytes", r.bytes),
        };
        println!(
            "{status}  {:wn$}  {:wt$}  {:wg$}  {attempts:>10}  {:>6} ms{tail}",
            r.name, r.destination_type, r.target, r.duration_ms
        );
    }
}
