//! `outflow bench <scenario>`: benchmarks as programs, not timed tests.
//!
//! Each server scenario starts what it needs on 127.0.0.1 — an `outflow serve` child process with a
//! temporary data dir ([`harness::ChildServer`]) and, where needed, a receiver
//! ([`receiver::Receiver`]) — runs for `--duration` after a warm-up, and prints one line per
//! figure (`name value unit`, stable and greppable) or a JSON summary with `--json`. Every
//! scenario reports the server's peak RSS and CPU time, read from `/proc`. The `destination`
//! scenario drives one destination directly, without a server, against its test peer.
//!
//! Adding a scenario = one module with a `run(&BenchArgs) -> Report` and one match arm in
//! [`run`].

mod destination;
pub(crate) mod harness;
mod load;
mod receiver;
mod report;
mod status;
mod submit;
mod webhook;

use std::process::ExitCode;

use crate::cli::{BenchArgs, BenchScenario};

pub use report::Report;

/// Runs the chosen scenario and prints its report.
pub async fn run(args: BenchArgs) -> anyhow::Result<ExitCode> {
    let report = match args.scenario {
        BenchScenario::Submit => submit::run(&args).await?,
        BenchScenario::Webhook => webhook::run(&args).await?,
        BenchScenario::Status => status::run(&args).await?,
        BenchScenario::Destination => destination::run(&args).await?,
    };
    report.print(args.json)?;
    Ok(ExitCode::SUCCESS)
}
