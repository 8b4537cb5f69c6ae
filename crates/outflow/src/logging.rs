//! Logging setup: `tracing` to stderr, so stdout stays for results.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::cli::LogFormat;

/// Installs the global subscriber. Level: `--log-level`, else `OUTFLOW_LOG_LEVEL`, else
/// `warn` (retries and failures show; routine success does not).
pub fn init(level: Option<&str>, format: LogFormat) {
    let level = level
        .map(str::to_string)
        .or_else(|| std::env::var("OUTFLOW_LOG_LEVEL").ok())
        .unwrap_or_else(|| "warn".to_string());
    let filter = EnvFilter::try_new(&level).unwrap_or_else(|_| {
        eprintln!("warning: invalid log level '{level}', using 'warn' (valid: error, warn, info, debug, trace)");
        EnvFilter::new("warn")
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let _ = match format {
        LogFormat::Pretty => builder.with_target(false).try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}
