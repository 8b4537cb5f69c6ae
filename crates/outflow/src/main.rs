//! `outflow`: deliver the output of jobs and the events of pipelines, durably, to where they
//! belong.
//!
//! This file only parses the command line and dispatches; each subcommand lives in
//! [`commands`]. Exit codes: 0 success, 1 a delivery or validation failed, 2 usage errors.

mod bench;
mod chaos;
mod cli;
mod commands;
mod destinations;
mod input;
mod logging;
mod table;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command, WebhookCommand};

fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init(cli.log_level.as_deref(), cli.log_format);
    // One TLS crypto provider for every client (reqwest, lapin, async-nats, redis, sqlx...):
    // if a dependency ever brings a second one, rustls could no longer pick a default and
    // would panic on the first TLS connection. An error means one is installed already.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Check(args) => commands::check::run(args),
            Command::Deliver(args) => commands::deliver::run(args).await,
            Command::TestDestinations(args) => commands::test_destinations::run(args).await,
            Command::Webhook { command: WebhookCommand::Sign(args) } => {
                commands::webhook::sign(args)
            }
            Command::Webhook { command: WebhookCommand::Verify(args) } => {
                commands::webhook::verify(args)
            }
            Command::Serve(args) => commands::serve::run(args).await,
            Command::Bench(args) => bench::run(args).await,
            Command::Chaos { scenario } => chaos::run(scenario).await,
            Command::Jobs { server, command } => commands::jobs::run(server, command).await,
            Command::Deliveries { server, command } => {
                commands::deliveries::run(server, command).await
            }
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
