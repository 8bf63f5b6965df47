#!/usr/bin/env bash
# Soak: random switches and SIGKILLs of worker and replica processes for
# SOAK_SECONDS (default 600), every result checked against a sequential
# model as it arrives, resident memory and descriptors sampled every 5 s
# (examples/soak.rs). Prints PASS or FAIL; exits non-zero on FAIL.
#
# Usage: scripts/soak.sh [--seed N]
set -euo pipefail
cd "$(dirname "$0")/.."
exec cargo run --release --example soak -- --seconds "${SOAK_SECONDS:-600}" "$@"
