#!/usr/bin/env bash
# The one test command: formatting, lints, docs, unit/integration/doc tests,
# and the loom model checks. CI runs exactly this (see .ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== fmt"
cargo fmt --all -- --check
echo "== clippy"
cargo clippy --workspace --all-targets -- -D warnings
cargo clippy --all-targets --features metrics -- -D warnings
cargo clippy --all-targets --features cluster -- -D warnings
echo "== doc"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps
RUSTDOCFLAGS="-D warnings" cargo doc -p ringweave --no-deps --features cluster
echo "== test"
cargo test --workspace
echo "== test: examples/live_service with the metrics feature"
cargo build --features metrics --example live_service
cargo test --features metrics --test live_service
echo "== test: cluster mode (hosts as processes on loopback, over Zenoh)"
cargo test --features cluster --lib cluster::
cargo test --features cluster --test cluster
cargo build --features cluster --example cluster
if [[ -x scripts/loom.sh ]]; then
  echo "== loom"
  scripts/loom.sh
fi
