//! Logging setup: `tracing` to stderr, so stdout stays for results.
//!
//! The level comes from `--log-level`, else `OUTFLOW_LOG_LEVEL`, else the config file's
//! `logging.level`, else `warn`. The config is read after logging starts (so config errors
//! can be logged), hence the reload handle: [`apply_config_level`] swaps the filter in once
//! the file is loaded, unless the command line or the environment already chose.

use std::io::IsTerminal;
use std::sync::OnceLock;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Registry, fmt, reload};

use crate::cli::LogFormat;

/// Set when neither `--log-level` nor `OUTFLOW_LOG_LEVEL` chose a level.
static CONFIG_MAY_SET_LEVEL: OnceLock<reload::Handle<EnvFilter, Registry>> = OnceLock::new();

fn parse_filter(level: &str) -> Option<EnvFilter> {
    EnvFilter::try_new(level).ok()
}

/// Installs the global subscriber.
pub fn init(level: Option<&str>, format: LogFormat) {
    let explicit = level
        .map(str::to_string)
        .or_else(|| std::env::var("OUTFLOW_LOG_LEVEL").ok().filter(|l| !l.is_empty()));
    let filter = match explicit.as_deref() {
        Some(l) => parse_filter(l).unwrap_or_else(|| {
            eprintln!(
                "warning: invalid log level '{l}', using 'warn' (valid: error, warn, info, debug, trace)"
            );
            EnvFilter::new("warn")
        }),
        None => EnvFilter::new("warn"),
    };
    let (filter, handle) = reload::Layer::new(filter);
    let ansi = std::io::stderr().is_terminal();
    let registry = tracing_subscriber::registry().with(filter);
    let installed = match format {
        LogFormat::Pretty => registry
            .with(fmt::layer().with_writer(std::io::stderr).with_ansi(ansi).with_target(false))
            .try_init(),
        LogFormat::Json => {
            registry.with(fmt::layer().json().with_writer(std::io::stderr)).try_init()
        }
    };
    if installed.is_ok() && explicit.is_none() {
        let _ = CONFIG_MAY_SET_LEVEL.set(handle);
    }
}

/// Applies the config file's `logging.level` when nothing more specific chose a level.
/// The config loader has already validated the value.
pub fn apply_config_level(level: Option<&str>) {
    if let (Some(handle), Some(filter)) = (CONFIG_MAY_SET_LEVEL.get(), level.and_then(parse_filter))
    {
        let _ = handle.reload(filter);
    }
}
