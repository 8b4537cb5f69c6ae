#!/usr/bin/env bash
# A short smoke run of every fuzz target, for CI (called by .ci/run after the tests).
#
# Usage: fuzz/smoke.sh [seconds per target, default 25]
#
# Needs `cargo fuzz`; when it is missing the script tries to install it (bounded by a
# timeout) and, if that fails, prints a loud notice and exits 0: fuzzing is a bonus on top of
# the tests, and a registry outage must not fail CI. A crash, a hang (an input taking more
# than 10 s) or a build failure of the targets does fail it.
#
# cargo-fuzz needs nightly compiler flags (-Zsanitizer); RUSTC_BOOTSTRAP=1 lets the stable
# toolchain accept them. Builds go to their own target dir because the sanitizer build would
# otherwise invalidate the shared one. The corpus lives in the cache so runs build on
# each other; fuzz/seeds/<target> holds hand-written starting inputs.
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_PER_TARGET="${1:-25}"
INSTALL_TIMEOUT="${FUZZ_INSTALL_TIMEOUT:-300}"
TARGETS=(template config formats)
export RUSTC_BOOTSTRAP=1
export CARGO_TARGET_DIR="${FUZZ_TARGET_DIR:-$HOME/.cache/outflow/fuzz-target}"
CORPUS_ROOT="${FUZZ_CORPUS_DIR:-$HOME/.cache/outflow/fuzz-corpus}"

skip() {
  echo "################################################################################"
  echo "## FUZZ SMOKE RUN SKIPPED: $1"
  echo "## Install it with: cargo install cargo-fuzz --locked"
  echo "################################################################################"
  exit 0
}

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "==> cargo fuzz not found; installing cargo-fuzz (timeout ${INSTALL_TIMEOUT}s)"
  if ! timeout --kill-after=10 "$INSTALL_TIMEOUT" cargo install cargo-fuzz --locked; then
    skip "cargo-fuzz could not be installed within ${INSTALL_TIMEOUT}s"
  fi
  cargo fuzz --version >/dev/null 2>&1 || skip "cargo fuzz still not runnable after install"
fi

start=$(date +%s)
echo "==> cargo fuzz build (sanitizer build, target dir $CARGO_TARGET_DIR)"
cargo fuzz build
for t in "${TARGETS[@]}"; do
  echo "==> cargo fuzz run $t (${SECONDS_PER_TARGET}s)"
  mkdir -p "$CORPUS_ROOT/$t"
  log="$CORPUS_ROOT/$t.log"
  # -timeout: an input that takes over 10 s is a hang, reported like a crash. libFuzzer's
  # progress lines go to a log; on failure its tail (the panic and the input) is printed.
  if cargo fuzz run "$t" "$CORPUS_ROOT/$t" "fuzz/seeds/$t" -- \
    -max_total_time="$SECONDS_PER_TARGET" -timeout=10 >"$log" 2>&1; then
    grep -E '^Done [0-9]+ runs' "$log" || true
  else
    tail -n 60 "$log" >&2
    echo "error: fuzz target '$t' failed; the crashing input is under fuzz/artifacts/$t/." >&2
    echo "Reproduce: RUSTC_BOOTSTRAP=1 cargo fuzz run $t fuzz/artifacts/$t/<file>" >&2
    exit 1
  fi
done
echo "==> fuzz smoke run passed in $(( $(date +%s) - start ))s"
