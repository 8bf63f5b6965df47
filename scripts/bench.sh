#!/usr/bin/env bash
# Runs the criterion benches and writes docs/PERF.md: per bench, the
# throughput of every contender and its ratio against the named peers, with
# the targets next to the ratios.
#
# Usage: scripts/bench.sh [BENCH ...]
#   BENCH                 bench names to run (default: every bench in SPEC
#                         whose benches/<name>.rs exists, then `latency`)
#   BENCH_SKIP_RUN=1      do not run anything; rebuild docs/PERF.md from the
#                         results criterion already saved
#
# Results are read from ${CARGO_TARGET_DIR:-target}/criterion/<group>/<function>/new/
# (or $CRITERION_HOME/..., as criterion does)
# (estimates.json: median ns per iteration; benchmark.json: elements per
# iteration). A result older than this run is marked stale in the report.
#
# `latency` (benches/latency.rs) is not a criterion bench: it writes its own
# markdown tables to ${CARGO_TARGET_DIR:-target}/latency/latency.md (and
# every row to latency.json there), which go into docs/PERF.md as they are.
set -euo pipefail
cd "$(dirname "$0")/.."

# The whole script is one compound command, so bash has read all of it
# before it runs any of it: editing this file while a long run is going
# (it takes ~12 minutes) cannot change what the run does. Bash reads a
# plain script as it goes, and an edit mid-run once ended one with a
# syntax error after the last bench.
{

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
row   paired_single      "ringweave and rtrb single, alternating (2 × 2^20 items)"
row   paired_chunked     "ringweave and rtrb chunked, alternating (2 × 2^20 items)"
ratio ringweave_single   rtrb_single        1.0
ratio ringweave_chunked  rtrb_chunked       1.0
ratio ringweave_chunked  crossbeam_channel  5.0
ratio ringweave_single   crossbeam_channel  -
ratio ringweave_chunked  std_sync_channel   -
extra extra.json
note  "Ring contenders wait on Full/Empty by spinning 64 times, then yield_now (the same code for ringweave and rtrb); channels block in their own way."

bench pipeline pipeline "Pipeline: source → 3 × map → sink, u64, five threads"
row   ringweave          "ringweave Pipeline"
row   crossbeam          "crossbeam-channel, hand-wired"
row   rtrb_hand_wired    "rtrb chunks, hand-wired"
row   paired_ringweave_and_rtrb "ringweave and rtrb hand-wired runs alternating (2 × 2M items)"
ratio ringweave          crossbeam          10.0
ratio ringweave          rtrb_hand_wired    0.9
extra extra.json
note  "2,000,000 items per iteration, ring/channel capacity 4096 everywhere; each iteration times the whole run, the five threads' spawn and join included for all three. Maps are cheap arithmetic, so this measures the per-item cost of the stage loop and the hand-over. The rtrb contender moves chunks of up to 256 and waits by spinning 16 times, then yield_now; ringweave uses its default batch (256) and WaitStrategy (spin, yield, park). Every run's sink sum is checked."

bench ipc ipc_u64 "IPC: parent → forked child, u64 records"
row   ringweave_per_record  "ringweave record ring, flush per record"
row   ringweave_batched     "ringweave record ring, flush per ≤ 64 KiB"
row   socketpair_per_record "socketpair, one record per write"
row   socketpair_batched    "socketpair, ≤ 64 KiB per write"
row   pipe_per_record       "pipe, one record per write"
row   pipe_batched          "pipe, ≤ 64 KiB per write"
row   iceoryx2              "iceoryx2 pub-sub, one sample per send"
ratio ringweave_per_record  socketpair_per_record 10.0
ratio ringweave_batched     socketpair_batched    1.0
ratio ringweave_per_record  pipe_per_record       -
ratio ringweave_batched     pipe_batched          -
ratio ringweave_batched     iceoryx2              10.0
ratio ringweave_per_record  iceoryx2              -
extra extra.json
note  "Parent → forked child: the child consumes every record (archived, validated: the ring's default, and `rkyv::access` on the stream peers), keeps a running sum of a check value of each and reports count, sum and its end time through shared memory; the parent asserts count and sum. Time: from the parent's first send to the child's last record; fork, setup and reaping are outside it. Same records, same counts, one fork per measurement for every contender. Stream frames: 8-byte length + the archive `rkyv::to_bytes` makes (serialized straight into the send buffer: no allocation or extra copy per record) + padding to 8; OS default buffer sizes. ringweave: 1 MiB arena, its pages faulted in during setup in both processes (`Segment::populate`, as iceoryx2 allocates its shared memory when a service is made), the record ring's default wait (`record_ring::DEFAULT_WAIT`: spin 16, yield 1024, futex) on both sides; the child reads with `read_batch` (up to 64 KiB a release). iceoryx2 0.10: safe overflow off, `BackpressureStrategy::RetryUntilDelivered` (the publisher blocks while the subscriber's buffer of 4096 samples is full), the payload sent as the plain `u64` (no serialization, no validation); the subscriber polls (spin 64, then yield). The iceoryx2 target is read against the batched ring: iceoryx2 has no batching, each sample is published alone. The ratio table compares criterion runs made minutes apart; the paired lines above it (the two contenders alternating within the same minute) are the verdict where the two disagree."
note  "**Where parent and child run.** Until 6e9b3e0 these results were bimodal: a ring side that found nothing to do spun 16 times, yielded 8 (later 64) times and slept on the futex, and the other side's FUTEX_WAKE then woke it on the waker's CPU (the scheduler's wake-affine placement), where the two stayed while the other CPU idled. The same binary moved u64 at 2.7 × the batched socketpair's rate in one run and 0.77 × in the next (`ipc_u64/ringweave_batched`: 1.6 ms apart, 4.4 ms together). A record ring's ends now yield 1024 times before sleeping (`record_ring::DEFAULT_WAIT`), long enough to see the other side's next flush, so they stay runnable and keep a CPU each; four runs in a row then took 0.94–0.96 ms. The engine keeps the shorter `WaitStrategy::default()` on its own rings, where five stages share two cores."
note  "**Per-record cost.** rkyv's serializer arena used to be acquired (and shrunk) for every record, ≈ 14 % of the producer's samples (perf) and as much as the rest of staging a `u64`; the `Scratch` allocator acquires it only when a serialization asks for scratch space, which a `u64` or a plain struct never does. The consumer validates each root in place (see `ipc_validate`)."

bench ipc ipc_struct64 "IPC: parent → forked child, 64-byte struct (rkyv derive)"
row   ringweave_per_record  "ringweave record ring, flush per record"
row   ringweave_batched     "ringweave record ring, flush per ≤ 64 KiB"
row   socketpair_per_record "socketpair, one record per write"
row   socketpair_batched    "socketpair, ≤ 64 KiB per write"
row   pipe_per_record       "pipe, one record per write"
row   pipe_batched          "pipe, ≤ 64 KiB per write"
row   iceoryx2              "iceoryx2 pub-sub, one sample per send"
ratio ringweave_per_record  socketpair_per_record 10.0
ratio ringweave_batched     socketpair_batched    1.0
ratio ringweave_per_record  pipe_per_record       -
ratio ringweave_batched     pipe_batched          -
ratio ringweave_batched     iceoryx2              10.0
ratio ringweave_per_record  iceoryx2              -
extra extra.json
note  "As for u64. The record is `Tick` (eight plain fields, 64 bytes in memory and archived); iceoryx2 sends the same struct as it is (`#[repr(C)]`, `ZeroCopySend`), unvalidated."

bench ipc ipc_string "IPC: parent → forked child, struct holding a 100-byte String"
row   ringweave_per_record  "ringweave record ring, flush per record"
row   ringweave_batched     "ringweave record ring, flush per ≤ 64 KiB"
row   socketpair_per_record "socketpair, one record per write"
row   socketpair_batched    "socketpair, ≤ 64 KiB per write"
row   pipe_per_record       "pipe, one record per write"
row   pipe_batched          "pipe, ≤ 64 KiB per write"
row   iceoryx2              "iceoryx2 pub-sub, one sample per send"
ratio ringweave_per_record  socketpair_per_record 10.0
ratio ringweave_batched     socketpair_batched    1.0
ratio ringweave_per_record  pipe_per_record       -
ratio ringweave_batched     pipe_batched          -
ratio ringweave_batched     iceoryx2              -
ratio ringweave_per_record  iceoryx2              -
extra extra.json
note  "As for u64. The record is `Text { id: u64, text: String }`; the check sums every byte of the string, and validation checks it is UTF-8. A `String` cannot travel zero-copy in iceoryx2, so its contender copies the string into a fixed inline array (`InlineText`, 128 bytes) per sample; no target was set against it."
note  "Strings were where the ring's margin was thinnest. Until c6fdcaa, in the far-apart machine state (see the top), the producer's stores went into lines the consumer had read a lap before and still held, and stores leave the store buffer in order, so the serializer's small stores waited for those lines one at a time (perf: most producer samples on one store): 130 ns a record batched, against 27 ns on near cores, and 0.3 × the socketpair. The producer now prefetches the free lines up to 2 KiB ahead of it for writing; in one slow-state run that took the batched stream from 27 ms to 6 ms per 200k records (socketpair: 8 ms). Since 590b1cc a publish also skips its SeqCst fence (the sleeping side pays with a global membarrier), which is most of what one record per send cost."

bench ipc ipc_blob64k "IPC: parent → forked child, 64 KiB Vec<u8>"
row   ringweave_per_record  "ringweave record ring, flush per record"
row   ringweave_batched     "ringweave record ring, flush per ≤ 64 KiB (= per record)"
row   socketpair_per_record "socketpair, one record per write"
row   socketpair_batched    "socketpair, ≤ 64 KiB per write (= per record)"
row   pipe_per_record       "pipe, one record per write"
row   pipe_batched          "pipe, ≤ 64 KiB per write (= per record)"
row   iceoryx2              "iceoryx2 pub-sub, one 64 KiB slice per send"
ratio ringweave_per_record  socketpair_per_record 10.0
ratio ringweave_batched     socketpair_batched    1.0
ratio ringweave_per_record  pipe_per_record       -
ratio ringweave_batched     iceoryx2              0.5
extra extra.json
note  "A frame of a 64 KiB record is larger than 64 KiB, so the batched shapes send one record per flush or write too: the two rows of each transport measure the same thing twice (a gauge of the noise). The check reads one byte of every 64-byte line. iceoryx2: `loan_slice_uninit(65536)` + `write_from_slice` (one copy into its shared memory), subscriber buffer of 16 samples (≈ the ring's 1 MiB)."
note  "The per-record target (10 × the socketpair) sits at the ceiling of any transport that copies each record once on this machine, and the hand-off-floor line above measures that ceiling in every run: the parent copies each record into fixed slots of a 1 MiB shared buffer and the child reads it, two index words between them and nothing else. The ring takes what that bare hand-off takes (0.85–1.34 × of it per round; medians about 1.0 ×), so its framing, serializer, validation and wake-ups cost next to nothing at this size; what is left is moving 64 KiB from one core to the other, and the socketpair takes 8.5–10.0 × that with the two vCPUs near each other and about 5 × with them far apart (single-group runs on 2026-11-27: hand-off 0.82–0.89 µs a record near, 1.84–1.89 µs far; socketpair 7.5–8.7 µs and 9.5–9.7 µs). So a run meets 10 × only when the socketpair has a slow minute. The copy is already the cheapest one found: glibc's `memcpy` (`rep movsb` at this size) against hand-written AVX2 and AVX-512 store loops in the hand-off, 2–4.5 × slower, `clzero` on each line first, 3 × slower; 2 to 64 slots in the hand-off's buffer (128 KiB to 4 MiB) and 4 or 16 MiB arenas for the ring changed nothing beyond the noise; in the ring, prefetching the whole record for writing doubled the time and non-temporal stores quintupled it. Against iceoryx2, which also copies each record once into its shared memory (`write_from_slice`), the ring holds its own."

bench ipc ipc_validate "IPC: validated vs unchecked reads of the 64-byte struct"
row   validated      "parent → child, batched ring, validated (default)"
row   unchecked      "parent → child, batched ring, trust_producer"
row   read_validated "read alone: drain a pre-filled ring, validated"
row   read_unchecked "read alone: drain a pre-filled ring, trust_producer"
ratio validated      unchecked      0.87
ratio read_validated read_unchecked 0.87
extra extra.json
note  "Target: validation at most 15 % slower than unchecked reads, i.e. a throughput ratio of at least 1 / 1.15 = 0.87. Until a5e313c the read alone missed it (0.71–0.74 ×): rkyv's `access` built a `HighValidator` and ran the root through `in_subtree` for every record, ≈ 50 of the 66 extra instructions per 64-byte record (callgrind). The ring now does the same checks itself (root at the archive's end, in bounds and aligned; everything it points to confined to the bytes before it) and calls the root's `check_bytes` directly; for `Tick`, whose fields need no checks, validation then costs about what reading the frame costs."

bench ipc ipc_rtt "IPC: round trip parent → child → parent, one u64"
row   ringweave_spin  "ringweave, 2 record rings, spin 64 then yield (never sleeps)"
row   ringweave_futex "ringweave, 2 record rings, default wait (spin 16, yield 1024, futex)"
row   socketpair      "socketpair, blocking read / write"
row   iceoryx2        "iceoryx2, 2 pub-sub services, polling (spin 64 then yield)"
ratio ringweave_spin  iceoryx2   2.0
ratio ringweave_futex iceoryx2   2.0
ratio ringweave_futex socketpair -
ratio ringweave_spin  socketpair -
extra extra.json
note  "The table's throughput is round trips per second and its last column the mean round trip in ns. Target: a round trip at most 0.5 × iceoryx2's, i.e. a ratio of round trips per second of at least 2 in the table, and a p50 ratio of at most 0.5 in the latency lines (the verdict: there the contenders take turns). Each criterion measurement forks once and times its round trips as a whole after 1,000 untimed ones. Every contender runs pinned: the parent to the CPU it is on, the child to the other one, as iceoryx2's own latency benchmarks pin their two participants. The spinning contenders (ringweave_spin, iceoryx2) need both processes on a core at once: when other work takes one of the two cores they share one, and a round trip then costs time slices, not nanoseconds."
note  "Why pinned: unpinned, a forked child sometimes started on its parent's CPU and the scheduler took milliseconds to move one of them (seen with `sched_getcpu` in both processes: parent and child on one CPU for the slow stretch, apart after it). For that while two polling sides took turns on one core and each round trip cost a yield each way, ≈ 6 µs: in four runs before pinning, 2–5 of ringweave_spin's ten blocks had 3–78 % of their round trips at ≈ 6 µs, which made its p99 3–9 × iceoryx2's and, in one run, its p50 1.0 ×. iceoryx2's child takes milliseconds to set up its node and services, long enough for the scheduler to part the two, so it rarely met this. Pinned, three runs on 2026-11-28 gave ringweave_spin p50 0.16–0.17 µs and p99 0.23–0.85 µs against iceoryx2's 0.60–0.61 and 0.71–1.96 µs (p99 0.31–0.43 ×). The rings' pages are faulted in before the round trips (`Segment::populate`), as in the throughput groups: the first lap of a 64 KiB ring is 2048 round trips, past the warm-up, and took a page fault every 4 KiB. On an idle machine a sleeping side costs a wake-up of an idle virtual CPU, ≈ 15 µs: the socketpair's round trip (two of them) had a p50 of 31–45 µs."

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
row   paired_in_process_and_distributed_5M "in-process and distributed runs alternating (2 × 5M items)"
ratio hybrid_20M      in_process_20M   -
ratio distributed_5M  in_process_5M    0.5
extra extra.json
note  "Each run is timed whole: spawn, the workers' forks and the joins included. For the monitor read the paired line (which carries the ≥ 0.99 × target), not the criterion ratio: a 1 % effect is far below the drift between two criterion benchmarks on these shared cores, and the pairs' quartiles show how much two runs a few hundred milliseconds apart differ — while other jobs share the two cores this machine may not resolve 1 % at all. By construction the monitor costs little: in-process runs sample the same counters too (the coordinator wakes at least once a second); hybrid wakes it every 100 ms and compares the rate with the threshold."
note  "Distributed mode: read the paired line (in-process and distributed runs alternating), since the in-process pipeline alone ran at 13 ms per 5M items in some minutes of this VM and at 32 ms in others, old and new code alike. Until 7031925 every item was its own record (≈ 60 ns a hop: a serializer, a frame header, a validator and a deserializer per item; 0.08 ×). Edges now carry runs of items, one `Vec<T>` record per run: the outbox holds what a batch emits and archives it in place at the flush (`VecOf`, one copy of the run for plain-old-data items), the inbox validates a run once and deserializes its items straight out of the archive (`RecordConsumer::pop_items`), and one-to-one maps move whole runs. The coordinator also looked for exited workers every 5 ms, which was most of a short distributed run; it now polls every 200 µs once only workers are left. Each run still forks three workers (≈ 1.5 ms of a 5M-item run)."

bench graph graph "Graphs: replicas (scale-out), against rayon, the ordered merge, rescale pause"
extra extra.json
note  "Its own harness (`benches/graph.rs`), not criterion: every round runs each case once in a rotated order, and the ratios are per round. `work()` is a xorshift loop; its cost per item is measured at the start of the run. A replicated stage deals a batch out only when its measured cost per item says the batch holds at least 20 µs of work (`replica::Cost`), so the cheap map's two replicas run unsplit: that line measures what the replica path costs a stage too cheap to split (one clock read per batch). Before that rule, with every batch dealt out, the same line was 0.14 × — waking a pool thread and joining it costs more than 256 cheap items."
bench recovery recovery "Crash recovery: the cost of checkpointing, downtime after a kill, the replay log's bound"
extra extra.json
note  "Its own harness (`benches/recovery.rs`), not criterion. Checkpointing cost: runs with and without `max_restarts` alternate, the ratio is per round. Downtime: a paced run (about 100 k items/s) in a process holding 100 MB, one worker SIGKILLed every 200 ms; kill → the first item the sink receives after the recovery resumed the threads. The floor is the pause of a switch out of the same pipeline in the same process: a recovery does that (barrier aside) plus noticing the death, killing and reaping the other workers and pausing the local threads."
note  "Where the checkpointing cost goes (measured while choosing the defaults): a checkpoint pauses everything for 0.2–0.8 ms (the barrier is most of it: the source and sink threads hand their stages back and are spawned again), and the replay log writes every item the source sends to memory the caches no longer hold. With trivial maps at 70–90 M items/s the log's bound decides the balance: 32 Mi u64s measured 0.78 ×, 4 Mi 0.81–0.93 ×, 2 Mi 0.90–0.98 ×, 1 Mi 0.91–1.02 × (the default now: 8 MiB of the item type), 500 k 0.94 ×. Before the source woke the coordinator at half a log, a source at 80 M items/s filled the log within the coordinator's 5 ms tick and waited (peaks of 1.04 M of 1.05 M items; now 0.53 M). Moving whole runs into the log instead of copying items did not change the ratio measurably."

bench cluster cluster "Cluster: a network edge over Zenoh against a TcpStream and shared memory"
extra extra.json
note  "Its own harness (`benches/cluster.rs`), not criterion. Both hosts are peer sessions of the bench process on 127.0.0.1, so both share this VM's two cores: four pipeline threads for the Zenoh edge (source, network sink; network source, sink) beside Zenoh's tasks, against the TcpStream contender's two and bare Zenoh's one publisher thread and one callback. Rates are timed at the receiving sink, first item to last; contenders alternate within a round and ratios are per round. The shared-memory row crosses twice (parent → worker → parent)."
note  "The credit window (2026-12-06): granting 16 runs ahead, a credit round trip throttled 4 KiB runs to 34 M items/s (0.69 × the TcpStream); with a window of 8 MiB of runs (16 to 1024 runs) they moved 51–72 M over four runs that day, and 64 KiB runs 73–101 M. A window of 2 MiB measured 69 M / 79 M."
note  "Threads, not the wire: at 64 KiB the edge reaches about half of bare Zenoh in the same run. The edge runs four pipeline threads beside Zenoh's transmit and receive tasks; the bare contender one thread and a callback. On two cores that is the difference; on two machines each side would have its own. Bare Zenoh batches small messages (2.4 × the TcpStream at 4 KiB, which writes once per run); why it trails the TcpStream at 64 KiB was not measured."
note  "Tried and dropped (2026-12-06): express publishing (no batching) cut 4 KiB runs from 70 M to 31 M items/s and left the round trip where it was (63 µs p50); runs of 60 KiB (one Zenoh batch each) against 64 KiB made no difference beyond the noise. A clock read per item in the bench's own sink once capped every rate near 20 M items/s (half the perf samples in clock_gettime); it reads the clock twice per run now."
note  "The round trip: a hop over Zenoh wakes three threads (its transmit task, its receive task, the receiving source stage) where a blocking read on a TcpStream wakes one."
EOF
)

# Absolute: cargo runs each bench binary in its package's folder
# (benches/), where a relative `target` would be a second one, and the
# benches write their extra results under $CARGO_TARGET_DIR.
export CARGO_TARGET_DIR="$(realpath -m "${CARGO_TARGET_DIR:-target}")"
crit_dir="${CRITERION_HOME:-${CARGO_TARGET_DIR}/criterion}"
latency_md="${CARGO_TARGET_DIR}/latency/latency.md"
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
  [[ -f benches/latency.rs ]] && selected+=(latency)
fi

if [[ "${BENCH_SKIP_RUN:-0}" != 1 ]]; then
  for name in "${selected[@]}"; do
    echo "== cargo bench -p ringweave-benches --bench $name"
    if [[ "$name" == latency ]]; then
      # Its own harness: no criterion options.
      cargo bench -p ringweave-benches --bench latency
    else
      cargo bench -p ringweave-benches --bench "$name" -- --noplot
    fi
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
  LATENCY_MD="$latency_md" \
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
    "**Two machine states.** On 2026-11-27 every cross-thread bench here swung",
    "between two levels from one minute to the next, old and new code alike,",
    "with the machine otherwise idle: the in-process pipeline took 13 ms or",
    "32 ms per 5M items, the rtrb chunked ring 0.45 ms or 1.5 ms per 2^20",
    "items, the record ring's string stream 6 ms or 24 ms. Both processes",
    "showed ≈ 95 % of a CPU each in both states, on different vCPUs; it looks",
    "like the host placing the two vCPUs near each other or far apart, which",
    "changes what every cache-line hand-over costs. Contenders hurt",
    "differently (a ring's reader pulls each line from the other CPU; a",
    "socket's kernel copy does it in bulk), so even same-minute ratios move;",
    "the paired lines, which alternate the two contenders, are the ones to read.",
    "The record ring's producer has prefetched the lines it is about to write",
    "since c6fdcaa, which took most of the far state's cost out of its streams",
    "(the string stream: 27 ms → 6 ms batched in one far-state run).",
    "On 2026-11-28 the far state was checked from inside: parent and child",
    "on different CPUs at start and end of every 64 KiB run, 0–3 involuntary",
    "context switches each, in both states; a 64 KiB record took 0.85 µs or",
    "1.8 µs to hand over even with no transport at all (the hand-off floor in",
    "the 64 KiB section). In the in-process ring, 20–40 % of 4-run rounds",
    "over two 6–8 minute stretches were far-state ones (chunks ≈ 1.7 ms per",
    "2^20 items instead of 0.33); ringweave / rtrb chunked averaged 0.80 ×",
    "in those rounds in one stretch and 1.01 × in the other, against 1.3 × in",
    "near-state rounds. Aligning the slot array to 128 bytes did not change",
    "the first (0.80 × and 0.82 ×, A/B in the same stretch). Dropping the",
    "wake-up flag's load from every publish and release did not either: over",
    "10 minutes and 112k A/B rounds, the 1.2 % that were far-state ones gave",
    "chunked 0.96 × with the load and 0.95 × without (single 0.95 × and",
    "0.93 ×; near-state rounds 1.33 × both ways). Why the far state costs",
    "ringweave more than rtrb is still open.",
    "",
    "## Measured design choices",
    "",
    "Numbers the code's comments point to (measured once, kept here rather",
    "than in the code):",
    "",
    "- Registering for `MEMBARRIER_CMD_GLOBAL_EXPEDITED` (`fence::init_shared`)",
    "  waits for an RCU grace period once threads exist: 10–19 ms with four",
    "  idle threads, and the first switch pause was 9–25 ms while it happened",
    "  inside the pause; the coordinator now does it when the run starts.",
    "- Record ring producer prefetch (`PREFETCH_AHEAD`): without it,",
    "  100-byte-string records went 4.6 × slower with producer and consumer",
    "  on far-apart vCPUs.",
    "- Record ring arena size, vCPUs far apart, no prefetch: 200k 144-byte",
    "  records took 27 ms through a 1 MiB arena, 6–10 ms through 16 MiB and",
    "  5.5 ms through 64 MiB.",
    "- Light first sleep (`wait::LIGHT_SLEEP`): a stage that parked between",
    "  every item paid a membarrier per park; at 10k items/s the p99 of",
    "  `from_iter` and `Input` pipelines was 0.92–1.29 × crossbeam-channel's",
    "  with it and 0.78–0.83 × without (5 rounds × 2 runs each).",
    "- Latency pacer: a pacer that spun through every period kept one of the",
    "  two cores busy; crossbeam's own 10k items/s p99 was 25 µs in one run",
    "  and 3.8 ms in the next. It now sleeps until 5 µs before each item.",
    "- Single-item ring against rtrb driven by one loop (`ring_same_loop`,",
    "  41 rounds of 5M u64): 0.80 × and 0.83 × in two runs; in a build with",
    "  the wake-up check after each push and pop taken out (for measurement",
    "  only: it can lose a wake-up), 1.56 × and 1.09 ×. Dropping only the",
    "  check's fence or its mode load changed nothing (0.40–0.79 ×, noise).",
    "",
]

for b in benches:
    lines += [f"## {b['title']}", "",
              f"`cargo bench -p ringweave-benches --bench {b['file']}` (criterion group `{b['group']}`).", ""]
    results = {fid: result(b["group"], fid) for fid, _ in b["rows"]}
    labels = dict(b["rows"])
    if b["rows"] and not any(results.values()):
        lines += ["No results (bench not run yet).", ""]
        continue
    # A bench without criterion rows (its own harness) reports in extras.
    table = ["| Contender | Median time / iteration | Throughput | ns / item |",
             "|---|---:|---:|---:|"] if b["rows"] else []
    lines += table
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
        if not per_s:
            thr = "—"
        elif per_s >= 1e6:
            thr = f"{per_s / 1e6:.1f} M items/s"
        else:
            thr = f"{per_s / 1e3:.1f} k items/s"
        per_item = f"{1e9 / per_s:.2f}" if per_s else "—"
        lines.append(f"| {label}{stale} | {fmt_time(r[0])} | {thr} | {per_item} |")
    if table:
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

# The latency bench's own tables (benches/latency.rs writes them).
lines += ["## Latency: source → 3 × map → sink, paced", ""]
try:
    with open(env["LATENCY_MD"]) as f:
        latency_md = f.read().rstrip("\n")
    latency_mtime = os.path.getmtime(env["LATENCY_MD"])
except FileNotFoundError:
    lines += ["No results (`cargo bench -p ringweave-benches --bench latency` not run yet).", ""]
else:
    if latency_mtime < start:
        when = datetime.fromtimestamp(latency_mtime, timezone.utc)
        lines += [f"(Stale: written {when.strftime('%Y-%m-%d %H:%M UTC')}.)", ""]
    lines += [latency_md, ""]

with open(env["OUT"], "w") as f:
    f.write("\n".join(lines).rstrip() + "\n")
print(f"wrote {env['OUT']}")
PY
exit
}
