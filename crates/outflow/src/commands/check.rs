//! `outflow check`: validate a config file and print OK or every error.

use std::process::ExitCode;

use crate::cli::CheckArgs;
use crate::destinations;

/// Validates the config (structure and every destination) and prints `OK` or every error.
pub fn run(args: CheckArgs) -> anyhow::Result<ExitCode> {
    match destinations::load(&args.config, true) {
        Ok(loaded) => {
            let n = loaded.config.output.global_destinations.len();
            match &loaded.path {
                Some(p) => println!(
                    "OK: {} ({n} global destination{})",
                    p.display(),
                    if n == 1 { "" } else { "s" }
                ),
                None => println!(
                    "OK: no config file found (pass --config FILE or set OUTFLOW_CONFIG); using defaults"
                ),
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            // Config errors already list every problem with its path.
            eprint!("{e}");
            if !e.to_string().ends_with('\n') {
                eprintln!();
            }
            Ok(ExitCode::FAILURE)
        }
    }
}
