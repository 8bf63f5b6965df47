#!/usr/bin/env bash
# The one test command: formatting, lints, docs, unit/integration/doc tests,
# and the loom model checks. CI runs exactly this (see .ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== fmt"
cargo fmt --all -- --check
echo "== clippy"
cargo clippy --workspace --all-targets -- -D warnings
echo "== doc"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps
echo "== test"
cargo test --workspace
if [[ -x scripts/loom.sh ]]; then
  echo "== loom"
  scripts/loom.sh
fi
