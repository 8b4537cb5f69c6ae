//! `outflow serve`: run the server until SIGINT/SIGTERM.

use std::process::ExitCode;

use crate::cli::ServeArgs;

/// Loads the config, applies `--listen`/`--data-dir`, and serves until a signal.
pub async fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let _ = args;
    anyhow::bail!("outflow serve: not wired yet")
}
