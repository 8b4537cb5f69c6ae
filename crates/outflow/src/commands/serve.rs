//! `outflow serve`: run the server until SIGINT/SIGTERM.

use std::process::ExitCode;

use outflow_server::ServeOptions;

use crate::cli::ServeArgs;
use crate::destinations;

/// Loads the config, applies `--listen`/`--data-dir`, and serves until a signal. A second
/// signal during the graceful shutdown exits at once.
pub async fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    // The server validates destinations itself (honouring `validate_on_startup`).
    let loaded = destinations::load(&args.config, false)?;
    let mut config = loaded.config;
    if config.logging.level.is_none() {
        // A service should say that it started and where; the CLI's default is quieter.
        crate::logging::apply_config_level(Some("info"));
    }
    if let Some(listen) = args.listen {
        config.server.listen = listen;
    }
    if let Some(dir) = args.data_dir {
        config.storage.path = dir;
    }
    if loaded.path.is_none() {
        tracing::warn!(
            listen = %config.server.listen,
            data_dir = %config.storage.path.display(),
            "no config file found (pass --config FILE, set OUTFLOW_CONFIG or create ./outflow.yaml): \
             starting with defaults, no tasks and no global destinations"
        );
    }
    outflow_server::serve(ServeOptions::new(config), shutdown_signal()).await?;
    Ok(ExitCode::SUCCESS)
}

/// Completes on the first SIGINT or SIGTERM; a second one exits the process at once.
async fn shutdown_signal() {
    wait_for_signal().await;
    tokio::spawn(async {
        wait_for_signal().await;
        eprintln!("second signal: exiting without waiting for in-flight work");
        std::process::exit(130);
    });
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).expect("can install a SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
