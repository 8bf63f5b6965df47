#!/usr/bin/env bash
# Runs the in-process ring's tests under Miri (nightly), with strict
# provenance: tests/ring.rs (which scales its loops down under cfg!(miri))
# and the doc tests of src/ring.rs. Not part
# of CI (slow; needs the nightly toolchain with the miri and rust-src
# components).
#
# If Miri is not installed the script tries `rustup component add` once (this
# needs rustup's distribution server, which may be unreachable). If Miri is
# still unavailable it says so and exits 0, so that it can sit in a local
# routine; set MIRI_REQUIRED=1 to make that an error (exit 2) instead.
#
# Environment:
#   MIRI_TOOLCHAIN   toolchain to use (default nightly)
#   MIRI_REQUIRED    1: fail when Miri is unavailable
#   MIRI_TARGET_DIR  target directory (default target/miri)
#   MIRIFLAGS        default -Zmiri-strict-provenance
#   Extra arguments are passed to libtest (e.g. a test name filter).
set -euo pipefail
cd "$(dirname "$0")/.."

toolchain="${MIRI_TOOLCHAIN:-nightly}"
export CARGO_TARGET_DIR="${MIRI_TARGET_DIR:-target/miri}"
export MIRIFLAGS="${MIRIFLAGS:--Zmiri-strict-provenance}"

unavailable() {
  echo "miri.sh: Miri is unavailable: $1"
  echo "miri.sh: install it with: rustup toolchain install $toolchain && rustup component add --toolchain $toolchain miri rust-src"
  if [[ "${MIRI_REQUIRED:-0}" == 1 ]]; then
    exit 2
  fi
  echo "miri.sh: SKIPPED (set MIRI_REQUIRED=1 to fail instead)"
  exit 0
}

if ! command -v rustup >/dev/null 2>&1; then
  unavailable "rustup is not installed"
fi
if ! cargo "+$toolchain" miri --version >/dev/null 2>&1; then
  echo "miri.sh: Miri not found on $toolchain; trying rustup component add"
  rustup component add --toolchain "$toolchain" miri rust-src >/dev/null 2>&1 || true
  if ! cargo "+$toolchain" miri --version >/dev/null 2>&1; then
    unavailable "the $toolchain toolchain has no working cargo-miri (offline?)"
  fi
fi
echo "== miri: $(cargo "+$toolchain" miri --version), MIRIFLAGS=$MIRIFLAGS"
cargo "+$toolchain" miri setup

echo "== miri: tests/ring.rs"
cargo "+$toolchain" miri test -p ringweave --test ring -- "$@"
echo "== miri: doc tests of src/ring.rs"
cargo "+$toolchain" miri test -p ringweave --doc -- src/ring.rs "$@"
