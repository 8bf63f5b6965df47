#!/usr/bin/env bash
# Model-checks ringweave's concurrency protocols with loom (crate loom-tests/):
# the SPSC ring, the waiter-flag wake-up handshake, the switch barrier and the
# forced pause of a crash recovery, each built from the engine's own source under RUSTFLAGS="--cfg ringweave_loom".
# Then builds the deliberately broken variants (feature loom-broken-publish)
# and asserts that loom catches every one of them, for the expected reason.
#
# Release mode, its own target directory (target/loom, so the normal build is
# not invalidated), preemption bound LOOM_MAX_PREEMPTIONS (default 3; the
# three-stage barrier models cap it lower, see tests/barrier.rs). About 5
# minutes on 2 cores, most of it compiling.
#
# Environment:
#   LOOM_MAX_PREEMPTIONS  preemption bound (default 3)
#   LOOM_TEST_THREADS     models run in parallel (default 2)
#   LOOM_TARGET_DIR       target directory (default target/loom)
set -euo pipefail
cd "$(dirname "$0")/.."

export RUSTFLAGS="--cfg ringweave_loom"
export CARGO_TARGET_DIR="${LOOM_TARGET_DIR:-target/loom}"
export LOOM_MAX_PREEMPTIONS="${LOOM_MAX_PREEMPTIONS:-3}"
threads="${LOOM_TEST_THREADS:-2}"

echo "== loom: building (RUSTFLAGS=$RUSTFLAGS, target $CARGO_TARGET_DIR)"
cargo test --release -p loom-tests --tests --no-run

# Each model prints "loom: <model>: <executions> executions, preemption bound
# <n>, <seconds>s"; each file's wall time follows its test summary.
for file in ring wakeup barrier forced_pause; do
  echo "== loom: tests/$file.rs (preemption bound $LOOM_MAX_PREEMPTIONS)"
  start=$SECONDS
  cargo test --release -p loom-tests --test "$file" -- --nocapture --test-threads="$threads"
  echo "loom: tests/$file.rs took $((SECONDS - start))s"
done

# The broken build must fail. Each variant runs in a process of its own:
# after a deadlock loom's clean-up may abort the whole test binary, so
# #[should_panic] cannot be relied on. A variant counts as caught only if it
# fails AND its output carries the failure loom must report.
echo "== loom: broken variants (feature loom-broken-publish; each must fail)"
broken=(cargo test --release -p loom-tests --features loom-broken-publish --test broken)
"${broken[@]}" --no-run
variants=(
  "relaxed_publish_is_a_data_race|Causality violation"
  "notify_before_publish_loses_wakeup|deadlock"
  "handshake_without_fences_loses_wakeup|deadlock"
)
caught=0
missed=0
for variant in "${variants[@]}"; do
  name="${variant%%|*}"
  expect="${variant#*|}"
  start=$SECONDS
  set +e
  output="$("${broken[@]}" -- --exact "$name" --test-threads=1 2>&1)"
  status=$?
  set -e
  if [[ $status -ne 0 ]] && grep -qF "$expect" <<<"$output"; then
    echo "loom: broken variant $name caught ($expect) in $((SECONDS - start))s"
    caught=$((caught + 1))
  else
    echo "loom: broken variant $name NOT caught (exit $status, expected '$expect'); its output:"
    tail -n 40 <<<"$output"
    missed=$((missed + 1))
  fi
done
echo "loom-broken: $caught passed, $missed failed"
if [[ $missed -ne 0 ]]; then
  exit 1
fi
