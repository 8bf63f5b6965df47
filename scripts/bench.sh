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
# function, and the `ratio` rows that matter. A bench file may have several
# `bench` lines, one per criterion group; it runs once.
#   bench  <file name in benches/> <criterion group> <title>
#   row    <criterion function id> <label>
#   ratio  <numerator function> <denominator function> <target: minimum ratio, or ->
#          (of throughputs)
#   extra  <file in the group's criterion directory>: a JSON object whose
#          "lines" the bench wrote for what criterion cannot hold; printed as is
#   note   <text printed under the bench's tables>
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

bench switch switch_pause "Switch pause: source → 3 × map → sink, u64, rings of 4096, both directions, 10 MB and 100 MB resident"
row   pause_out_empty_10MB   "pause in → distributed, empty, 10 MB"
row   pause_out_half_10MB    "pause in → distributed, half, 10 MB"
row   pause_out_full_10MB    "pause in → distributed, full, 10 MB"
row   pause_back_empty_10MB  "pause distributed → in, empty, 10 MB"
row   pause_back_half_10MB   "pause distributed → in, half, 10 MB"
row   pause_back_full_10MB   "pause distributed → in, full, 10 MB"
row   pause_out_empty_100MB  "pause in → distributed, empty, 100 MB"
row   pause_out_half_100MB   "pause in → distributed, half, 100 MB"
row   pause_out_full_100MB   "pause in → distributed, full, 100 MB"
row   pause_back_empty_100MB "pause distributed → in, empty, 100 MB"
row   pause_back_half_100MB  "pause distributed → in, half, 100 MB"
row   pause_back_full_100MB  "pause distributed → in, full, 100 MB"
row   fork_10MB              "floor: fork + _exit + waitpid, 10 MB"
row   fork_parent_10MB       "floor: fork until it returns in the parent, 10 MB"
row   reap_10MB              "floor: SIGKILL + waitpid of a waiting child, 10 MB"
row   fork_100MB             "floor: fork + _exit + waitpid, 100 MB"
row   fork_parent_100MB      "floor: fork until it returns in the parent, 100 MB"
row   reap_100MB             "floor: SIGKILL + waitpid of a waiting child, 100 MB"
row   copy_out_4096          "floor: archive 4096 u64 into a fresh record ring"
row   copy_in_4096           "floor: read back 4096 u64 records, validated"
row   segment_create         "creating a switch's data segment (4 rings)"
extra extra.json
note  "Pauses are the engine's own clock (`SwitchEvent::pause`, from the first pause request to the restart of the stages); each cycle spawns the pipeline, builds the backlog, switches out, builds it again, switches back and checks that the sink got every item once, in order. `empty`: the source is paced at 4 M items/s (sleeping between batches); `half`/`full`: 8192 items / every ring's worth buffered behind a sink held at a gate, which opens just before `switch_to`, so the sink drains what it can until the barrier reaches it, last — the residual actually copied is in the table above. `full` keeps nearly all of it (every upstream stage is waiting for room, which the barrier interrupts at once); `half` loses most of it, because its source must first come back from its own gate (a park) before it can be paused. Distributed: the three maps run in forked workers over record rings of 128 KiB (4096 `u64` records)."
note  "Where a switch out spends its pause (perf uprobes on the coordinator and on fork/waitpid, sched tracepoints; 10 cycles per size, full backlog, lightly loaded machine): at 100 MB the three forks — one after the other, each copying the page tables of the whole process — take 5.8–8.6 ms of 6.9–10.3 ms (≈ 85 %); the barrier (5 stages paused one by one, each a thread hand-over) 0.4–0.8 ms; segment + copy of up to 16,128 items 0.15–0.4 ms; the workers' READY ≈ 0.03 ms (up to 2 ms when a child waits for a core); restarting the source and sink threads 0.3–0.5 ms. At 10 MB the forks are 1.5–1.7 ms of 2.6–4.7 ms and the fixed costs weigh more, which is why the stricter ratio (time until `fork` returns, without the child's exit) misses 1.25 × there. Against the floor as specified (fork + `_exit` + `waitpid`, which includes tearing the child down) the pause is within 1.25 ×. Taking the forks out of the pause — forking the workers before the barrier and handing them the stage state through the state area, as the switch back already does — is what would move it."
note  "A switch back forks nothing and still takes as long: after the barrier (0.4–9 ms in the traced cycles: the distributed source thread needs a core and room in its record ring to reach a batch boundary), the coordinator tells the workers to leave one at a time and waits for each exit before it restarts the five threads (0.8–1 ms); a worker's exit tears down its copy-on-write copy of the parent's address space, ≈ 1.8 ms of CPU each at 100 MB (`perf sched timehist`), so 3 × (EXIT, exit, reap) took 6.5–18 ms of the pause at 100 MB. A worker does nothing but `_exit` once told to leave, so it could be reaped after the threads restart."

bench switch switch_throughput "Switch: monitor and distributed-mode throughput, source → 3 × map → sink, u64"
row   in_process_20M                   "in-process, 20M items"
row   hybrid_20M                       "hybrid, threshold never reached (monitor every 100 ms), 20M items"
row   paired_in_process_and_hybrid_20M "in-process and hybrid runs alternating (2 × 20M items)"
row   in_process_5M                    "in-process, 5M items"
row   distributed_5M                   "distributed (3 worker processes), 5M items"
ratio hybrid_20M      in_process_20M   -
ratio distributed_5M  in_process_5M    0.5
extra extra.json
note  "Each run is timed whole: spawn, the workers' forks and the joins included. For the monitor read the paired line (which carries the ≥ 0.99 × target), not the criterion ratio: a 1 % effect is far below the drift between two criterion benchmarks on these shared cores, and the pairs' quartiles show how much two runs a few hundred milliseconds apart differ — while other jobs share the two cores this machine may not resolve 1 % at all. By construction the monitor costs little: in-process runs sample the same counters too (the coordinator wakes at least once a second); hybrid wakes it every 100 ms and compares the rate with the threshold."
note  "Distributed mode misses its target by an order of magnitude, and the time is CPU in the record path (perf record of a 20M-item distributed run): archiving each record into the ring (`RecordProducer::stage`, ≈ 25 % of samples), the frame check and validation (`RawRing::frame`, ≈ 19 %), an rkyv serializer arena acquired per record (`Arena::acquire`, ≈ 14 %), reading (`RawRing::read`, ≈ 9 %) and the batch pop (≈ 24 %); kernel and futex wake-ups < 3 %. Every item is archived, validated and deserialized at each of the 4 hops (≈ 60 ns a hop here, against ≈ 2 ns in-process), by five busy processes sharing two cores. 0.5 × needs a record path about ten times cheaper: no per-record arena for plain types, and validation that the engine's own workers skip (`trust_producer`) or do once per batch."
EOF
)

crit_dir="${CRITERION_HOME:-${CARGO_TARGET_DIR:-target}/criterion}"
out=docs/PERF.md
start_epoch=$(date +%s)
load_at_start=$(cut -d' ' -f1-3 /proc/loadavg)

# Benches named in SPEC, in order.
mapfile -t known < <(awk '$1 == "bench" && !seen[$2]++ { print $2 }' <<<"$SPEC")
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
                        "rows": [], "ratios": [], "extras": [],
                        "notes": []})
    elif kind == "row":
        benches[-1]["rows"].append((args[0], args[1]))
    elif kind == "ratio":
        target = None if args[2] == "-" else float(args[2])
        benches[-1]["ratios"].append((args[0], args[1], target))
    elif kind == "extra":
        benches[-1]["extras"].append(args[0])
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


def fine(target):
    """Whether a target needs two decimals (0.99)."""
    return target is not None and round(target * 10) != target * 10


def fmt_target(target, sign):
    if target is None:
        return "—"
    return f"{sign} {target:.2f} ×" if fine(target) else f"{sign} {target:.1f} ×"


def fmt_ratio(ratio, target):
    """Two decimals, three when the target has two."""
    return f"{ratio:.3f} ×" if fine(target) else f"{ratio:.2f} ×"


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
                lines.append(f"| {name} | — | {fmt_target(target, '≥')} | no result |")
                continue
            ratio = rate(rn) / rate(rd)
            verdict = "" if target is None else ("met" if ratio >= target else "**missed**")
            lines.append(f"| {name} | {fmt_ratio(ratio, target)} | {fmt_target(target, '≥')} | {verdict} |")
        lines.append("")
    for extra in b["extras"]:
        path = os.path.join(crit, b["group"], extra)
        try:
            with open(path) as f:
                extra_lines = json.load(f)["lines"]
        except (FileNotFoundError, ValueError, KeyError):
            continue
        if os.path.getmtime(path) < start:
            when = datetime.fromtimestamp(os.path.getmtime(path), timezone.utc)
            lines += [f"(Stale: written {when.strftime('%Y-%m-%d %H:%M UTC')}.)", ""]
        lines += extra_lines + [""]
    for note in b["notes"]:
        lines += [note, ""]

with open(env["OUT"], "w") as f:
    f.write("\n".join(lines).rstrip() + "\n")
print(f"wrote {env['OUT']}")
PY
