//! `outflow chaos <scenario>`: crash and fault scenarios against a child `outflow serve`.
//!
//! Like `outflow bench`, each scenario starts what it needs on 127.0.0.1 (the server through
//! the bench harness, [`crate::bench::harness::ChildServer`], and its own receiver) and
//! prints `name value unit` lines or `--json`. Unlike a benchmark it has a verdict: the exit
//! code is 1 when an invariant broke (an acknowledged output lost, an attempt record that
//! disagrees with what the receiver saw), so CI can run short versions.

mod crash;
mod disk_full;
mod faults;

use std::process::ExitCode;

use crate::cli::ChaosScenario;

/// Runs the chosen scenario, prints its report and turns its verdict into the exit code.
pub async fn run(scenario: ChaosScenario) -> anyhow::Result<ExitCode> {
    let (report, json, failures) = match scenario {
        ChaosScenario::Crash(args) => {
            let (report, failures) = crash::run(&args).await?;
            (report, args.json, failures)
        }
        ChaosScenario::Faults(args) => {
            let (report, failures) = faults::run(&args).await?;
            (report, args.json, failures)
        }
        ChaosScenario::DiskFull(args) => match disk_full::run(&args).await? {
            Ok((report, failures)) => (report, args.json, failures),
            Err(code) => return Ok(code),
        },
    };
    report.print(json)?;
    if failures.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    for f in &failures {
        eprintln!("error: {}: {f}", report.scenario);
    }
    Ok(ExitCode::FAILURE)
}

/// SplitMix64: a tiny seeded generator, so a run's kill moments can be replayed with
/// `--seed` without pulling a random-number crate into the binary.
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator starting from `seed`.
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A value in `lo..=hi` (the modulo bias is irrelevant at these ranges).
    pub fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix_is_deterministic_and_stays_in_range() {
        // The reference sequence of SplitMix64 from seed 0.
        let mut r = SplitMix64::new(0);
        assert_eq!(r.next_u64(), 0xE220_A839_7B1D_CDAF);
        assert_eq!(r.next_u64(), 0x6E78_9E6A_A1B9_65F4);
        let (mut a, mut b) = (SplitMix64::new(42), SplitMix64::new(42));
        for _ in 0..1000 {
            let x = a.between(200, 1500);
            assert_eq!(x, b.between(200, 1500));
            assert!((200..=1500).contains(&x), "{x}");
        }
    }
}
