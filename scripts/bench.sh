#!/usr/bin/env bash
# Runs the criterion benches and writes docs/PERF.md: per bench, the
# throughput of every contender and its ratio against the named peers, with
# the targets next to the ratios.
#
# Usage: scripts/bench.sh [BENCH ...]
#   BENCH                 bench names to run (default: every bench in SPEC
#                         whose benches/<name>.rs exists)
#   BENCH_SKIP_RUN=1      do not run anything; rebuild docs/PERF.md from the
#                         results criterion already saved
#
# Results are read from ${CARGO_TARGET_DIR:-target}/criterion/<group>/<function>/new/
# (or $CRITERION_HOME/..., as criterion does)
# (estimates.json: median ns per iteration; benchmark.json: elements per
# iteration). A result older than this run is marked stale in the report.
set -euo pipefail
cd "$(dirname "$0")/.."

# What to report. To add a bench: a `bench` line, one `row` per criterion
# function, and the `ratio` rows that matter.
#   bench <file name in benches/> <criterion group> <title>
#   row   <criterion function id> <label>
#   ratio <numerator function> <denominator function> <target: minimum ratio, or ->
#   note  <text printed under the bench's tables>
SPEC=$(
  cat <<'EOF'
bench ring ring "Ring: one producer thread, one consumer thread, u64, capacity 4096"
row   ringweave_single   "ringweave single (push/pop)"
row   ringweave_chunked  "ringweave chunked (≤ 256)"
row   rtrb_single        "rtrb single (push/pop)"
row   rtrb_chunked       "rtrb chunked (≤ 256)"
row   crossbeam_channel  "crossbeam-channel bounded(4096)"
row   std_sync_channel   "std mpsc sync_channel(4096)"
ratio ringweave_single   rtrb_single        1.0
ratio ringweave_chunked  rtrb_chunked       1.0
ratio ringweave_chunked  crossbeam_channel  5.0
ratio ringweave_single   crossbeam_channel  -
ratio ringweave_chunked  std_sync_channel   -
note  "Ring contenders wait on Full/Empty by spinning 64 times, then yield_now (the same code for ringweave and rtrb); channels block in their own way."

bench pipeline pipeline "Pipeline: source → 3 × map → sink, u64, five threads"
row   ringweave          "ringweave Pipeline"
row   crossbeam          "crossbeam-channel, hand-wired"
row   rtrb_hand_wired    "rtrb chunks, hand-wired"
ratio ringweave          crossbeam          10.0
ratio ringweave          rtrb_hand_wired    0.9
note  "2,000,000 items per iteration, ring/channel capacity 4096 everywhere; each iteration times the whole run, the five threads' spawn and join included for all three. Maps are cheap arithmetic, so this measures the per-item cost of the stage loop and the hand-over. The rtrb contender moves chunks of up to 256 and waits by spinning 16 times, then yield_now; ringweave uses its default batch (256) and WaitStrategy (spin, yield, park). Every run's sink sum is checked."
EOF
)

crit_dir="${CRITERION_HOME:-${CARGO_TARGET_DIR:-target}/criterion}"
out=docs/PERF.md
start_epoch=$(date +%s)
load_at_start=$(cut -d' ' -f1-3 /proc/loadavg)

# Benches named in SPEC, in order.
mapfile -t known < <(awk '$1 == "bench" { print $2 }' <<<"$SPEC")
if (($# > 0)); then
  selected=("$@")
else
  selected=()
  for name in "${known[@]}"; do
    [[ -f "benches/$name.rs" ]] && selected+=("$name")
  done
fi

if [[ "${BENCH_SKIP_RUN:-0}" != 1 ]]; then
  for name in "${selected[@]}"; do
    echo "== cargo bench --bench $name"
    cargo bench --bench "$name" -- --noplot
  done
else
  start_epoch=0
fi

mkdir -p "$(dirname "$out")"
cpu_model=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
if [[ -n "$(git status --porcelain 2>/dev/null)" ]]; then
  commit="$commit (with uncommitted changes)"
fi

SPEC="$SPEC" \
  CRIT_DIR="$crit_dir" \
  OUT="$out" \
  START_EPOCH="$start_epoch" \
  MACHINE_NPROC="$(nproc)" \
  MACHINE_CPU="${cpu_model:-unknown}" \
  MACHINE_RUSTC="$(rustc --version)" \
  MACHINE_DATE="$(date -u '+%Y-%m-%d %H:%M UTC')" \
  MACHINE_LOAD="$load_at_start" \
  MACHINE_COMMIT="$commit" \
  python3 - <<'PY'
import json
import os
import shlex
from datetime import datetime, timezone

env = os.environ
crit = env["CRIT_DIR"]
start = int(env["START_EPOCH"])

# Parse SPEC into [{file, group, title, rows, ratios, notes}].
benches = []
for line in env["SPEC"].splitlines():
    words = shlex.split(line, comments=True)
    if not words:
        continue
    kind, args = words[0], words[1:]
    if kind == "bench":
        benches.append({"file": args[0], "group": args[1], "title": args[2],
                        "rows": [], "ratios": [], "notes": []})
    elif kind == "row":
        benches[-1]["rows"].append((args[0], args[1]))
    elif kind == "ratio":
        target = None if args[2] == "-" else float(args[2])
        benches[-1]["ratios"].append((args[0], args[1], target))
    elif kind == "note":
        benches[-1]["notes"].append(args[0])
    else:
        raise SystemExit(f"bench.sh: unknown SPEC line: {line}")


def result(group, function):
    """(ns per iteration, elements per iteration, stale) or None."""
    base = os.path.join(crit, group, function, "new")
    try:
        with open(os.path.join(base, "estimates.json")) as f:
            est = json.load(f)
        with open(os.path.join(base, "benchmark.json")) as f:
            meta = json.load(f)
    except FileNotFoundError:
        return None
    ns = est["median"]["point_estimate"]
    elements = (meta.get("throughput") or {}).get("Elements")
    mtime = os.path.getmtime(os.path.join(base, "estimates.json"))
    return ns, elements, mtime < start, mtime


def fmt_time(ns):
    for unit, scale in (("s", 1e9), ("ms", 1e6), ("µs", 1e3)):
        if ns >= scale:
            return f"{ns / scale:.3g} {unit}"
    return f"{ns:.3g} ns"


def rate(r):
    """Elements per second, or None."""
    ns, elements, _, _ = r
    return elements * 1e9 / ns if elements else None


lines = [
    "# Performance",
    "",
    "Generated by `scripts/bench.sh` — do not edit by hand; rerun the script.",
    "",
    "| Machine | |",
    "|---|---|",
    f"| CPU | {env['MACHINE_CPU']} |",
    f"| `nproc` | {env['MACHINE_NPROC']} |",
    f"| rustc | `{env['MACHINE_RUSTC']}` |",
    f"| Date | {env['MACHINE_DATE']} |",
    f"| Commit | {env['MACHINE_COMMIT']} |",
    f"| Load average at start (1/5/15 min) | {env['MACHINE_LOAD']} |",
    "",
    "**Noise.** These machines have few cores, shared with other engineers'",
    "builds and tests while the benches run. Throughputs are criterion medians",
    "from one run, and the ratios compare contenders measured minutes apart in",
    "that run; expect tens of percent of run-to-run variation (more for the",
    "spinning ring contenders, which need both threads on a core at once).",
    "Read the ratios, not the absolute numbers, and rerun before concluding.",
    "",
]

for b in benches:
    lines += [f"## {b['title']}", "",
              f"`cargo bench --bench {b['file']}` (criterion group `{b['group']}`).", ""]
    results = {fid: result(b["group"], fid) for fid, _ in b["rows"]}
    labels = dict(b["rows"])
    if not any(results.values()):
        lines += ["No results (bench not run yet).", ""]
        continue
    lines += ["| Contender | Median time / iteration | Throughput | ns / item |",
              "|---|---:|---:|---:|"]
    for fid, label in b["rows"]:
        r = results[fid]
        if r is None:
            lines.append(f"| {label} | — | — | — |")
            continue
        stale = ""
        if r[2]:
            when = datetime.fromtimestamp(r[3], timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
            stale = f" (stale: {when})"
        per_s = rate(r)
        thr = f"{per_s / 1e6:.1f} M items/s" if per_s else "—"
        per_item = f"{1e9 / per_s:.2f}" if per_s else "—"
        lines.append(f"| {label}{stale} | {fmt_time(r[0])} | {thr} | {per_item} |")
    lines.append("")
    if b["ratios"]:
        lines += ["| Ratio (throughput) | Measured | Target | |", "|---|---:|---:|---|"]
        for num, den, target in b["ratios"]:
            rn, rd = results.get(num), results.get(den)
            name = f"{labels.get(num, num)} / {labels.get(den, den)}"
            if rn is None or rd is None or not rate(rn) or not rate(rd):
                lines.append(f"| {name} | — | {'—' if target is None else f'≥ {target:.1f} ×'} | no result |")
                continue
            ratio = rate(rn) / rate(rd)
            if target is None:
                tgt, verdict = "—", ""
            else:
                tgt = f"≥ {target:.1f} ×"
                verdict = "met" if ratio >= target else "**missed**"
            lines.append(f"| {name} | {ratio:.2f} × | {tgt} | {verdict} |")
        lines.append("")
    for note in b["notes"]:
        lines += [note, ""]

with open(env["OUT"], "w") as f:
    f.write("\n".join(lines).rstrip() + "\n")
print(f"wrote {env['OUT']}")
PY
