#!/usr/bin/env bash
# Runs every check CI runs: formatting, clippy (warnings are errors) and the whole test
# suite. Usage: scripts/test.sh [extra cargo test args]
#
# It adds rustfmt and clippy to the toolchain when they are missing, so it works on a fresh
# machine with Rust installed. Build artefacts go to $CARGO_TARGET_DIR (default
# ~/.cache/outflow/target) so repeated runs and CI reuse them.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/outflow/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

if ! command -v cargo >/dev/null 2>&1; then
  if [ -x "$HOME/.cargo/bin/cargo" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
  else
    echo "error: cargo not found. Install Rust 1.94 or newer (https://rustup.rs) and re-run." >&2
    exit 1
  fi
fi
if command -v rustup >/dev/null 2>&1; then
  rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt
  rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy
fi

# Native build prerequisites of the destinations: librdkafka is built from source (cmake;
# its build wants curl's headers) and links the system OpenSSL for TLS and SCRAM.
missing_pkgs=()
command -v cmake >/dev/null 2>&1 || missing_pkgs+=(cmake)
command -v pkg-config >/dev/null 2>&1 || missing_pkgs+=(pkg-config)
for pkg in libssl-dev libcurl4-openssl-dev; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing_pkgs+=("$pkg")
done
if [ "${#missing_pkgs[@]}" -gt 0 ]; then
  echo "==> installing build prerequisites: ${missing_pkgs[*]}"
  if [ "$(id -u)" -eq 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing_pkgs[@]}"
  else
    echo "error: missing Debian packages: ${missing_pkgs[*]} (sudo apt-get install ${missing_pkgs[*]})" >&2
    exit 1
  fi
fi

echo "==> cargo fmt --check"
cargo fmt --all -- --check

echo "==> cargo clippy (warnings are errors)"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "==> cargo test"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
cargo test --workspace --locked "$@" 2>&1 | tee "$log"
# One total over every test binary (cargo's own last line is a doc-test block, often
# "0 passed"). OUTFLOW_TEST_SUMMARY, when set, receives the same line.
summary="$(awk '/^test result:/ {p += $4; f += $6} END {printf "tests: %d passed, %d failed", p, f}' "$log")"
echo "$summary"
if [ -n "${OUTFLOW_TEST_SUMMARY:-}" ]; then
  echo "$summary" > "$OUTFLOW_TEST_SUMMARY"
fi
