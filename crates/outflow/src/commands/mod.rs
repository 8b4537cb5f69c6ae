//! One module per subcommand. Each `run` returns the process exit code; errors bubble up as
//! `anyhow::Error` and are printed once by `main`.

pub mod check;
pub mod deliver;
pub mod deliveries;
pub mod jobs;
pub mod serve;
pub mod test_destinations;
pub mod webhook;
