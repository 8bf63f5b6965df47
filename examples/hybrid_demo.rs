//! # hybrid_demo: watch a pipeline move between threads and processes
//!
//! The first thing to run. A pipeline
//!
//! ```text
//! source ─▶ scramble (map, synthetic CPU cost) ─▶ sample (filter, keeps 3 of 4)
//!        ─▶ checksum (stateful running checksum) ─▶ sink (in this process)
//! ```
//!
//! runs in [`ExecutionMode::Hybrid`]. Its source follows a rate schedule of
//! three phases — low (a quarter of the threshold), high (four times the
//! threshold), low again — pacing itself by sleeping after each small group
//! of items. When the windowed rate leaving the source rises above the
//! threshold (plus 10 % hysteresis) the engine pauses every stage at a
//! barrier, copies the items in flight into shared-memory rings, forks one
//! worker process per transform stage and resumes; when the rate falls
//! back, it brings the stages home onto threads again. Not an item is lost,
//! duplicated or reordered, and the demo checks that at the end.
//!
//! While it runs, one status line shows elapsed time, mode, rate, threshold,
//! the fullest ring and p99 latency: refreshed in place five times a second
//! on a terminal, printed as plain lines once a second (and at each switch)
//! when stdout is a pipe or a file. At the end it prints the switch history
//! (direction, reason, outcome, pause, items and bytes migrated, rate and p99
//! before and after), latency percentiles and item counts, compares what the
//! sink received with the same functions run over plain iterators (PASS or
//! FAIL; FAIL exits non-zero), and writes an SVG chart of throughput over
//! time with the threshold and the switches marked.
//!
//! ```text
//! cargo run --release --example hybrid_demo
//! cargo run --release --example hybrid_demo -- --duration 10 --threshold 50000 --stage-cost 2000
//! cargo run --release --example hybrid_demo -- --help
//! RUST_LOG=ringweave=info cargo run --release --example hybrid_demo   # the engine's own switch logs, on stderr
//! ```
//!
//! With the default stage cost the rings stay nearly empty and a switch
//! finds little in flight; raise `--stage-cost` (e.g. 2000) to make the map
//! the bottleneck and watch the ring fill and the migrated items grow.
//!
//! **Scale-out.** `scramble` runs on one thread in-process and as
//! `--replicas` (default 2) replicas in its worker process. Make it the
//! bottleneck of the high phase — `--stage-cost 4000` caps one thread at
//! 250 k items/s, below the high phase's 400 k/s — and the chart shows the
//! in-process rate flattening under the schedule and the distributed rate
//! reaching it after the switch out:
//!
//! ```text
//! cargo run --release --example hybrid_demo -- --stage-cost 4000
//! ```
//!
//! Latency is the engine's: sampled items, stamped when the source starts a
//! batch and read when the sink takes them. At the low rates it includes the
//! source's own pacing (up to a batch's worth of sleeping), so the demo keeps
//! batches small (`batch_size(32)`).

use plotters::prelude::*;
use ringweave::{
    ExecutionMode, HybridConfig, Metrics, Mode, Pipeline, RecoveryEvent, RunReport, SwitchImpact,
    SwitchOutcome, SwitchReason,
};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

const USAGE: &str = "\
hybrid_demo: a ringweave pipeline that switches live between threads and worker processes

USAGE:
    cargo run --release --example hybrid_demo [-- OPTIONS]

OPTIONS:
    --duration SECS           total run time, split 30 % low rate / 40 % high / 30 % low [default: 24]
    --threshold ITEMS_PER_SEC hybrid switching threshold; the source runs at a quarter of it,
                              then four times it, then a quarter again [default: 100000]
    --stage-cost NANOS        synthetic CPU work per item in the `scramble` map stage [default: 500]
    --replicas N              replicas of `scramble` while distributed (one thread in-process) [default: 2]
    --kill-worker-at SECS     SIGKILL one worker process this many seconds in (or as soon as one
                              exists after that): the run replaces it from its last checkpoint
                              (max_restarts 3) and the check still passes [default: no kill]
    --svg PATH                where to write the throughput chart [default: target/hybrid_demo.svg]
    --help                    print this and exit

Exits 0 when the sink received exactly the expected items (PASS), 1 otherwise (FAIL, or the
pipeline or the chart failed), 2 for bad arguments.";

/// Default `--duration`, seconds.
const DEFAULT_DURATION_SECS: f64 = 24.0;
/// Default `--threshold`, items per second.
const DEFAULT_THRESHOLD: usize = 100_000;
/// Default `--stage-cost`, nanoseconds per item.
const DEFAULT_STAGE_COST_NANOS: u64 = 500;
/// Default `--replicas`.
const DEFAULT_REPLICAS: usize = 2;
/// Default `--svg`.
const DEFAULT_SVG_PATH: &str = "target/hybrid_demo.svg";

/// Low-phase rate = threshold / `RATE_FACTOR`; high-phase rate = threshold × `RATE_FACTOR`.
const RATE_FACTOR: f64 = 4.0;
/// How often the status line is refreshed.
const STATUS_INTERVAL: Duration = Duration::from_millis(200);
/// On a pipe, print one status line every this many refreshes (once a second).
const PLAIN_STATUS_EVERY: u32 = 5;
/// The monitor's sampling interval and window, and the cooldown between switches.
const MONITORING_INTERVAL_MS: u64 = 50;
const WINDOW_SIZE_MS: u64 = 500;
const COOLDOWN_MS: u64 = 1000;
/// Items each stage takes at once. Small, so a batch the paced source fills
/// slowly does not hold its first item back for long (see the latency note
/// at the top).
const BATCH_SIZE: usize = 32;
/// The source stops catching up once it is this far behind its schedule
/// (after a switch's pause, or when the machine is busy), so a stall is not
/// followed by a burst that the monitor would read as a rise in load.
const MAX_SCHEDULE_DEBT: Duration = Duration::from_millis(20);

/// What the command line asked for.
#[derive(Clone, Debug)]
struct Settings {
    duration: Duration,
    threshold: usize,
    stage_cost: Duration,
    /// Replicas of `scramble` while distributed (one thread in-process).
    replicas: usize,
    /// When to SIGKILL a worker process, if at all.
    kill_worker_at: Option<Duration>,
    svg: PathBuf,
}

/// What to do.
enum Invocation {
    Run(Settings),
    Help,
}

/// Parses the arguments after the program name (`--flag VALUE` or `--flag=VALUE`).
fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Invocation, String> {
    let mut settings = Settings {
        duration: Duration::from_secs_f64(DEFAULT_DURATION_SECS),
        threshold: DEFAULT_THRESHOLD,
        stage_cost: Duration::from_nanos(DEFAULT_STAGE_COST_NANOS),
        replicas: DEFAULT_REPLICAS,
        kill_worker_at: None,
        svg: PathBuf::from(DEFAULT_SVG_PATH),
    };
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((flag, value)) if flag.starts_with("--") => (flag.to_owned(), Some(value.into())),
            _ => (arg.clone(), None),
        };
        if flag == "--help" || flag == "-h" {
            return Ok(Invocation::Help);
        }
        if !matches!(
            flag.as_str(),
            "--duration"
                | "--threshold"
                | "--stage-cost"
                | "--replicas"
                | "--kill-worker-at"
                | "--svg"
        ) {
            return Err(format!("unknown argument `{arg}`"));
        }
        let value: String = match inline.or_else(|| args.next()) {
            Some(value) => value,
            None => return Err(format!("`{flag}` needs a value")),
        };
        match flag.as_str() {
            "--duration" => {
                let secs: f64 = value.parse().map_err(|_| {
                    format!("`--duration` takes seconds (e.g. 20 or 4.5), got `{value}`")
                })?;
                if !(secs.is_finite() && secs > 0.0 && secs <= 3600.0) {
                    return Err(format!(
                        "`--duration` must be more than 0 and at most 3600 seconds, got {value}"
                    ));
                }
                settings.duration = Duration::from_secs_f64(secs);
            }
            "--threshold" => {
                settings.threshold = value
                    .parse()
                    .ok()
                    .filter(|&t: &usize| t >= 4)
                    .ok_or_else(|| {
                        format!("`--threshold` takes a whole number of items/s, at least 4, got `{value}`")
                    })?;
            }
            "--stage-cost" => {
                let nanos: u64 = value.parse().map_err(|_| {
                    format!("`--stage-cost` takes whole nanoseconds (e.g. 500), got `{value}`")
                })?;
                settings.stage_cost = Duration::from_nanos(nanos);
            }
            "--replicas" => {
                settings.replicas = value
                    .parse()
                    .ok()
                    .filter(|n| (1..=ringweave::MAX_REPLICAS).contains(n))
                    .ok_or_else(|| {
                        format!(
                            "`--replicas` takes a count in 1..={}, got `{value}`",
                            ringweave::MAX_REPLICAS
                        )
                    })?;
            }
            "--kill-worker-at" => {
                let secs: f64 = value.parse().map_err(|_| {
                    format!("`--kill-worker-at` takes seconds (e.g. 10 or 7.5), got `{value}`")
                })?;
                if !(secs.is_finite() && (0.0..=3600.0).contains(&secs)) {
                    return Err(format!(
                        "`--kill-worker-at` must be in 0..=3600 seconds, got {value}"
                    ));
                }
                settings.kill_worker_at = Some(Duration::from_secs_f64(secs));
            }
            "--svg" => {
                if value.is_empty() {
                    return Err("`--svg` needs a file path, got an empty one".into());
                }
                settings.svg = PathBuf::from(value);
            }
            _ => unreachable!("flag checked above"),
        }
    }
    Ok(Invocation::Run(settings))
}

// ---------------------------------------------------------------------------
// The pipeline's functions. The pipeline runs them in its stages; the check
// at the end runs the very same functions over plain iterators.

/// `scramble`: a SplitMix64 finaliser, so the filter and checksum below see
/// well-mixed values.
fn scramble(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// `sample`: keeps three items in four.
fn is_sampled(h: &u64) -> bool {
    h % 4 != 0
}

/// `checksum`: a running, order-sensitive checksum; emits it after every item.
fn checksum_step(sum: &mut u64, h: u64) -> Option<u64> {
    *sum = sum.rotate_left(7) ^ h;
    Some(*sum)
}

/// What the sink folds every item it receives into (FNV-1a style, order-sensitive).
fn digest_step(digest: u64, item: u64) -> u64 {
    (digest ^ item).wrapping_mul(0x0000_0100_0000_01B3)
}
const DIGEST_SEED: u64 = 0xCBF2_9CE4_8422_2325;

/// Burns `cost` of CPU time: the synthetic work of the `scramble` stage.
/// Reads only the monotonic clock, so it is safe in a forked worker.
fn burn(cost: Duration) {
    if cost.is_zero() {
        return;
    }
    let start = Instant::now();
    while start.elapsed() < cost {
        std::hint::spin_loop();
    }
}

/// What the sink has received: a count and a digest. Only the sink writes
/// them; `main` reads them after `join`.
#[derive(Default)]
struct SinkTally {
    items: AtomicU64,
    digest: AtomicU64,
}

/// The count and digest a pure in-process run over `0..produced` delivers.
fn expected_tally(produced: u64) -> (u64, u64) {
    (0..produced)
        .map(scramble)
        .filter(is_sampled)
        .scan(0u64, checksum_step)
        .fold((0, DIGEST_SEED), |(n, d), c| (n + 1, digest_step(d, c)))
}

// ---------------------------------------------------------------------------
// The source: 0, 1, 2, … at a rate that follows a schedule.

/// One stretch of the source's schedule: `rate` items/s until `until` after the start.
#[derive(Clone, Copy, Debug)]
struct Phase {
    until: Duration,
    rate: f64,
}

/// The demo's schedule: low, high, low.
fn schedule(settings: &Settings) -> Vec<Phase> {
    let t = settings.threshold as f64;
    let d = settings.duration;
    vec![
        Phase {
            until: d.mul_f64(0.3),
            rate: t / RATE_FACTOR,
        },
        Phase {
            until: d.mul_f64(0.7),
            rate: t * RATE_FACTOR,
        },
        Phase {
            until: d,
            rate: t / RATE_FACTOR,
        },
    ]
}

/// An iterator over `0, 1, 2, …` that paces itself to a [`Phase`] schedule
/// and ends when the schedule does. It sleeps at the start of each group of
/// about half a millisecond's worth of items until the schedule catches up.
/// When it ends (or is dropped, if the run is aborted) it raises `ended`.
struct RampSource {
    phases: Vec<Phase>,
    started: Instant,
    /// Index into `phases` of the current phase; `phases.len()` once ended.
    phase: usize,
    /// When the current phase's pacing clock started (moved on after a stall).
    phase_start: Instant,
    /// Items emitted since `phase_start`.
    emitted_in_phase: u64,
    /// Items left to emit before the next pacing check.
    group_left: u64,
    next_item: u64,
    ended: Arc<AtomicBool>,
}

impl RampSource {
    fn new(phases: Vec<Phase>, started: Instant, ended: Arc<AtomicBool>) -> Self {
        Self {
            phases,
            started,
            phase: 0,
            phase_start: started,
            emitted_in_phase: 0,
            group_left: 0,
            next_item: 0,
            ended,
        }
    }

    fn end(&mut self) {
        self.phase = self.phases.len();
        // Release: pairs with the Acquire load in `main`'s status loop. (Only
        // a signal; the results are read after `join`.)
        self.ended.store(true, Ordering::Release);
    }
}

impl Iterator for RampSource {
    type Item = u64;

    fn next(&mut self) -> Option<u64> {
        if self.phase >= self.phases.len() {
            return None;
        }
        if self.group_left == 0 {
            let now = Instant::now();
            let t = now.duration_since(self.started);
            while self.phase < self.phases.len() && t >= self.phases[self.phase].until {
                self.phase += 1;
                self.phase_start = now;
                self.emitted_in_phase = 0;
            }
            let Some(phase) = self.phases.get(self.phase).copied() else {
                self.end();
                return None;
            };
            let due = self.phase_start
                + Duration::from_secs_f64(self.emitted_in_phase as f64 / phase.rate);
            if due > now {
                std::thread::sleep(due - now);
            } else if now - due > MAX_SCHEDULE_DEBT {
                self.phase_start = now;
                self.emitted_in_phase = 0;
            }
            // About 0.5 ms of items per group: coarse enough for `sleep`,
            // fine enough to keep the rate smooth.
            self.group_left = ((phase.rate / 2000.0) as u64).clamp(1, 4096);
        }
        self.group_left -= 1;
        self.emitted_in_phase += 1;
        let item = self.next_item;
        self.next_item += 1;
        Some(item)
    }
}

impl Drop for RampSource {
    fn drop(&mut self) {
        self.end();
    }
}

// ---------------------------------------------------------------------------
// Formatting.

/// `1234567.0` → `"1.23M/s"`.
fn rate_text(rate: f64) -> String {
    if rate >= 1e6 {
        format!("{:.2}M/s", rate / 1e6)
    } else if rate >= 1e3 {
        format!("{:.1}k/s", rate / 1e3)
    } else {
        format!("{rate:.0}/s")
    }
}

/// A duration as ns, µs or ms.
fn duration_text(d: Duration) -> String {
    let ns = d.as_nanos();
    if ns < 1000 {
        format!("{ns} ns")
    } else if ns < 1_000_000 {
        format!("{:.1} µs", ns as f64 / 1e3)
    } else {
        format!("{:.2} ms", ns as f64 / 1e6)
    }
}

/// `1234567` → `"1,234,567"`.
fn count_text(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn reason_text(reason: &SwitchReason) -> String {
    match reason {
        SwitchReason::ThroughputAbove { rate, threshold } => {
            format!("rate {} above {}", rate_text(*rate), rate_text(*threshold))
        }
        SwitchReason::ThroughputBelow { rate, threshold } => {
            format!("rate {} below {}", rate_text(*rate), rate_text(*threshold))
        }
        SwitchReason::Manual => "manual".into(),
    }
}

fn outcome_text(outcome: &SwitchOutcome) -> String {
    match outcome {
        SwitchOutcome::Completed => "completed".into(),
        SwitchOutcome::RolledBack(cause) => format!("rolled back ({cause})"),
        SwitchOutcome::TimedOut {
            pending,
            timeout_ms,
        } => format!(
            "timed out after {timeout_ms} ms waiting for {}",
            pending.join(", ")
        ),
    }
}

/// Seconds from the start of the run to the start of a switch.
fn switch_offset(impact: &SwitchImpact, run_started: SystemTime) -> f64 {
    impact
        .event
        .at
        .duration_since(run_started)
        .unwrap_or_default()
        .as_secs_f64()
}

/// The fullest ring, 0 to 1.
fn max_fill(metrics: &Metrics) -> f64 {
    metrics.edges.iter().map(|e| e.fill).fold(0.0, f64::max)
}

fn status_text(metrics: &Metrics, threshold: usize) -> String {
    let recoveries = match metrics.recoveries.len() {
        0 => String::new(),
        n => format!("  recoveries {n}"),
    };
    format!(
        "{:>6.1} s  {:<11}  rate {:>9}  (threshold {})  ring fill {:>5.1}%  p99 {}{recoveries}",
        metrics.elapsed.as_secs_f64(),
        metrics.mode.to_string(),
        rate_text(metrics.throughput),
        rate_text(threshold as f64),
        100.0 * max_fill(metrics),
        duration_text(metrics.latency.p99),
    )
}

/// A window's p99: a window in which no item was sampled (a low rate
/// around a switch) reports zero, which no sampled latency is.
fn window_p99_text(p99: Duration) -> String {
    if p99.is_zero() {
        "n/a (no sample in the window)".into()
    } else {
        duration_text(p99)
    }
}

/// Seconds from the start of the run to a recovery.
fn recovery_offset(event: &RecoveryEvent, run_started: SystemTime) -> f64 {
    event
        .at
        .duration_since(run_started)
        .unwrap_or_default()
        .as_secs_f64()
}

fn recovery_notice(event: &RecoveryEvent, run_started: SystemTime) -> String {
    format!(
        ">> {:.2} s: worker `{}` (pid {}) died ({}); replaced from the last checkpoint in {}, \
         {} items replayed, {} restored",
        recovery_offset(event, run_started),
        event.stage,
        event.pid,
        event.cause,
        duration_text(event.downtime),
        count_text(event.replayed_items),
        count_text(event.restored_items),
    )
}

fn switch_notice(impact: &SwitchImpact, run_started: SystemTime) -> String {
    let e = &impact.event;
    format!(
        ">> {:.2} s: {} → {}: {}, {}; pause {}, {} items migrated",
        switch_offset(impact, run_started),
        e.from,
        e.to,
        reason_text(&e.reason),
        outcome_text(&e.outcome),
        duration_text(e.pause),
        count_text(e.migrated_items),
    )
}

// ---------------------------------------------------------------------------
// The live status line.

/// Prints the status: in place on a terminal, as plain lines otherwise.
struct StatusLine {
    in_place: bool,
    refreshes: u32,
    out: std::io::Stdout,
}

impl StatusLine {
    fn new() -> Self {
        let out = std::io::stdout();
        Self {
            in_place: out.is_terminal(),
            refreshes: 0,
            out,
        }
    }

    /// Shows `text` as the current status.
    fn show(&mut self, text: &str) {
        let mut out = self.out.lock();
        if self.in_place {
            // Carriage return, then erase the line.
            let _ = write!(out, "\r\x1b[2K{text}");
            let _ = out.flush();
        } else if self.refreshes % PLAIN_STATUS_EVERY == 0 {
            let _ = writeln!(out, "{text}");
        }
        self.refreshes += 1;
    }

    /// Prints a line that stays (a switch notice) above the status.
    fn note(&mut self, text: &str) {
        let mut out = self.out.lock();
        if self.in_place {
            let _ = writeln!(out, "\r\x1b[2K{text}");
        } else {
            let _ = writeln!(out, "{text}");
        }
    }

    /// Ends the in-place line.
    fn finish(&mut self) {
        if self.in_place {
            let _ = writeln!(self.out.lock());
        }
    }
}

/// One point of the chart.
#[derive(Clone, Copy, Debug)]
struct ThroughputSample {
    /// Seconds since the start.
    at: f64,
    /// The monitor's windowed rate (what switching acts on).
    window_rate: f64,
    /// Items that left the source since the previous sample, per second.
    tick_rate: f64,
}

// ---------------------------------------------------------------------------
// The chart.

/// Writes the throughput chart to `path`.
fn write_chart(
    path: &Path,
    samples: &[ThroughputSample],
    switches: &[SwitchImpact],
    recoveries: &[RecoveryEvent],
    run_started: SystemTime,
    settings: &Settings,
    config: &HybridConfig,
) -> Result<(), Box<dyn std::error::Error>> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create directory {}: {e}", dir.display()))?;
    }
    let x_max = samples
        .iter()
        .map(|s| s.at)
        .fold(settings.duration.as_secs_f64(), f64::max);
    let peak = samples
        .iter()
        .map(|s| s.window_rate.max(s.tick_rate))
        .fold(config.upper_threshold(), f64::max);
    let y_max = peak * 1.15;

    let root = SVGBackend::new(path, (1100, 560)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!(
                "ringweave hybrid demo: source throughput (threshold {}, stage cost {})",
                rate_text(settings.threshold as f64),
                duration_text(settings.stage_cost)
            ),
            ("sans-serif", 20),
        )
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(80)
        .build_cartesian_2d(0f64..x_max, 0f64..y_max)?;
    chart
        .configure_mesh()
        .x_desc("seconds since start")
        .y_desc("items/s leaving the source")
        .y_label_formatter(&|v| rate_text(*v))
        .light_line_style(BLACK.mix(0.05))
        .draw()?;

    // Shade the stretches spent in distributed mode.
    let mut distributed_since: Option<f64> = None;
    let mut stretches = Vec::new();
    for s in switches
        .iter()
        .filter(|s| s.event.outcome == SwitchOutcome::Completed)
    {
        let at = switch_offset(s, run_started);
        match s.event.to {
            Mode::Distributed => distributed_since = distributed_since.or(Some(at)),
            Mode::InProcess => {
                if let Some(from) = distributed_since.take() {
                    stretches.push((from, at));
                }
            }
        }
    }
    if let Some(from) = distributed_since {
        stretches.push((from, x_max));
    }
    let shade = RGBColor(46, 160, 67).mix(0.10);
    chart
        .draw_series(
            stretches
                .iter()
                .map(|&(a, b)| Rectangle::new([(a, 0.0), (b, y_max)], shade.filled())),
        )?
        .label("distributed mode")
        .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 20, y + 6)], shade.filled()));

    // Threshold and hysteresis band.
    let red = RGBColor(200, 30, 30);
    let t = settings.threshold as f64;
    chart
        .draw_series(LineSeries::new([(0.0, t), (x_max, t)], red.stroke_width(2)))?
        .label(format!("threshold {}", rate_text(t)))
        .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], red.stroke_width(2)));
    if config.enable_hysteresis {
        let band = red.mix(0.5).stroke_width(1);
        for (i, level) in [config.upper_threshold(), config.lower_threshold()]
            .into_iter()
            .enumerate()
        {
            let series = chart.draw_series(DashedLineSeries::new(
                [(0.0, level), (x_max, level)],
                6,
                4,
                band,
            ))?;
            if i == 0 {
                series
                    .label("hysteresis: out above +10 %, back below -10 %")
                    .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], band));
            }
        }
    }

    // Throughput: per refresh (light) and the monitor's window (bold).
    let light_blue = RGBColor(120, 160, 220);
    let blue = RGBColor(20, 70, 170);
    chart
        .draw_series(LineSeries::new(
            samples.iter().map(|s| (s.at, s.tick_rate)),
            light_blue.stroke_width(1),
        ))?
        .label(format!("rate per {} ms", STATUS_INTERVAL.as_millis()))
        .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], light_blue.stroke_width(1)));
    chart
        .draw_series(LineSeries::new(
            samples.iter().map(|s| (s.at, s.window_rate)),
            blue.stroke_width(2),
        ))?
        .label(format!(
            "monitor rate ({} ms window)",
            config.window_size_ms
        ))
        .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], blue.stroke_width(2)));

    // The switches: a vertical line each, labelled with its direction.
    for (i, s) in switches.iter().enumerate() {
        let at = switch_offset(s, run_started);
        let (color, label) = match (&s.event.outcome, s.event.to) {
            (SwitchOutcome::Completed, Mode::Distributed) => {
                (RGBColor(46, 140, 60), "→ distributed".to_owned())
            }
            (SwitchOutcome::Completed, Mode::InProcess) => {
                (RGBColor(220, 120, 0), "→ in-process".to_owned())
            }
            (outcome, to) => (
                RGBColor(120, 120, 120),
                format!(
                    "→ {to} {}",
                    match outcome {
                        SwitchOutcome::TimedOut { .. } => "(timed out)",
                        _ => "(rolled back)",
                    }
                ),
            ),
        };
        chart.draw_series(std::iter::once(PathElement::new(
            [(at, 0.0), (at, y_max)],
            color.stroke_width(2),
        )))?;
        // Stagger the labels so neighbouring switches stay readable.
        let y = y_max * (0.96 - 0.05 * (i % 3) as f64);
        chart.draw_series(std::iter::once(Text::new(
            format!("{label} {at:.1} s"),
            (at + x_max * 0.005, y),
            ("sans-serif", 14).into_font().color(&color),
        )))?;
    }

    // Recoveries: a dashed red line each, at the moment the death was
    // noticed.
    let crash = RGBColor(190, 0, 0);
    for (i, r) in recoveries.iter().enumerate() {
        let at = recovery_offset(r, run_started);
        let series = chart.draw_series(DashedLineSeries::new(
            [(at, 0.0), (at, y_max)],
            8,
            4,
            crash.stroke_width(2),
        ))?;
        if i == 0 {
            series
                .label("worker killed → replaced (recovery)")
                .legend(move |(x, y)| {
                    PathElement::new([(x, y), (x + 20, y)], crash.stroke_width(2))
                });
        }
        chart.draw_series(std::iter::once(Text::new(
            format!("✖ {} replaced, {}", r.stage, duration_text(r.downtime)),
            (at + x_max * 0.005, y_max * (0.80 - 0.05 * (i % 3) as f64)),
            ("sans-serif", 14).into_font().color(&crash),
        )))?;
    }

    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.3))
        .draw()?;
    root.present()?;
    Ok(())
}

// ---------------------------------------------------------------------------
// The final report.

fn print_report(
    report: &RunReport,
    run_started: SystemTime,
    sink: (u64, u64),
    expected: (u64, u64),
) -> bool {
    let switches = &report.metrics.switches;
    println!();
    println!("Switch history ({} switches)", switches.len());
    if switches.is_empty() {
        println!("  none: the rate never crossed the threshold band long enough (is the machine very busy?)");
    }
    for (i, s) in switches.iter().enumerate() {
        let e = &s.event;
        println!(
            "  #{} at {:.2} s  {} → {}",
            i + 1,
            switch_offset(s, run_started),
            e.from,
            e.to
        );
        println!("      reason   {}", reason_text(&e.reason));
        println!("      outcome  {}", outcome_text(&e.outcome));
        println!(
            "      pause    {}, migrated {} items / {} bytes",
            duration_text(e.pause),
            count_text(e.migrated_items),
            count_text(e.migrated_bytes)
        );
        let after = match (s.rate_after, s.p99_after) {
            (Some(rate), Some(p99)) => format!("{}, p99 {}", rate_text(rate), window_p99_text(p99)),
            _ => "(run ended within a window of the switch)".into(),
        };
        println!(
            "      before   {}, p99 {}   after   {after}",
            rate_text(s.rate_before),
            window_p99_text(s.p99_before),
        );
    }

    println!();
    println!("Recoveries ({})", report.recoveries.len());
    for (i, r) in report.recoveries.iter().enumerate() {
        println!(
            "  #{} at {:.2} s  worker `{}` (pid {}): {}",
            i + 1,
            recovery_offset(r, run_started),
            r.stage,
            r.pid,
            r.cause
        );
        println!(
            "      downtime {} (death noticed → new workers running); {} items replayed from \
             the source's log, {} restored from the checkpoint",
            duration_text(r.downtime),
            count_text(r.replayed_items),
            count_text(r.restored_items)
        );
    }
    println!(
        "  {} checkpoints taken while distributed",
        count_text(report.checkpoints)
    );

    let l = &report.latency;
    println!();
    println!(
        "Latency, source → sink ({} sampled items): p50 {}  p99 {}  p99.9 {}  max {}",
        count_text(l.samples),
        duration_text(l.p50),
        duration_text(l.p99),
        duration_text(l.p999),
        duration_text(l.max)
    );
    println!();
    println!(
        "Items ({} s, final mode {}):",
        format_args!("{:.1}", report.elapsed.as_secs_f64()),
        report.final_mode
    );
    for stage in &report.stages {
        println!(
            "  {:<10} in {:>12}   out {:>12}",
            stage.name,
            count_text(stage.items_in),
            count_text(stage.items_out)
        );
    }

    let pass = sink == expected && report.items_delivered == expected.0;
    println!();
    println!(
        "Check: sink received {} items, digest {:#018x}; a plain-iterator run over the {} source items gives {} items, digest {:#018x}",
        count_text(sink.0),
        sink.1,
        count_text(report.items_produced),
        count_text(expected.0),
        expected.1
    );
    if pass {
        println!("PASS: exactly the expected items, in order");
    } else {
        println!(
            "FAIL: the sink's items differ from a pure in-process run (report says {} delivered)",
            count_text(report.items_delivered)
        );
    }
    pass
}

fn main() -> ExitCode {
    let settings = match parse_args(std::env::args().skip(1)) {
        Ok(Invocation::Run(settings)) => settings,
        Ok(Invocation::Help) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("hybrid_demo: {message}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    match run(&settings) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(message) => {
            eprintln!("hybrid_demo: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the demo; `Ok(pass)` once the report is printed.
fn run(settings: &Settings) -> Result<bool, String> {
    let config = HybridConfig {
        local_threshold: settings.threshold,
        monitoring_interval_ms: MONITORING_INTERVAL_MS,
        window_size_ms: WINDOW_SIZE_MS,
        enable_hysteresis: true,
        cooldown_ms: COOLDOWN_MS,
        ..HybridConfig::default()
    };
    let phases = schedule(settings);
    println!("ringweave hybrid demo");
    println!(
        "  pipeline  source → scramble (map, {} of CPU per item; 1 thread here, {} replicas in its worker) → sample (filter, keeps 3/4) → checksum (stateful) → sink",
        duration_text(settings.stage_cost),
        settings.replicas
    );
    println!(
        "  hybrid    threshold {} (out above {}, back below {}), window {} ms sampled every {} ms, cooldown {} ms",
        rate_text(settings.threshold as f64),
        rate_text(config.upper_threshold()),
        rate_text(config.lower_threshold()),
        config.window_size_ms,
        config.monitoring_interval_ms,
        config.cooldown_ms
    );
    let mut from = 0.0;
    let plan: Vec<String> = phases
        .iter()
        .map(|p| {
            let to = p.until.as_secs_f64();
            let text = format!("{from:.1}–{to:.1} s at {}", rate_text(p.rate));
            from = to;
            text
        })
        .collect();
    println!("  source    {}", plan.join(", "));
    println!();

    let ended = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(SinkTally::default());
    let sink_tally = Arc::clone(&tally);
    let (mut received, mut digest) = (0u64, DIGEST_SEED);
    let cost = settings.stage_cost;
    let run_started = SystemTime::now();
    let started = Instant::now();
    let handle = Pipeline::from_iter(RampSource::new(phases, started, Arc::clone(&ended)))
        .map("scramble", move |x: u64| {
            burn(cost);
            scramble(x)
        })
        .replicas(1)
        .distributed_replicas(settings.replicas)
        .filter("sample", is_sampled)
        .stateful("checksum", 0u64, checksum_step)
        .mode(ExecutionMode::Hybrid(config.clone()))
        .max_restarts(3)
        .batch_size(BATCH_SIZE)
        .sink(move |c: u64| {
            received += 1;
            digest = digest_step(digest, c);
            // Relaxed: `main` reads these only after `join`, which orders
            // every write of the sink's threads before it.
            sink_tally.items.store(received, Ordering::Relaxed);
            sink_tally.digest.store(digest, Ordering::Relaxed);
        })
        .spawn()
        .map_err(|e| format!("cannot start the pipeline: {e}"))?;

    let mut status = StatusLine::new();
    let mut samples = Vec::new();
    let mut switches_seen = 0;
    let mut recoveries_seen = 0;
    let mut kill_at = settings.kill_worker_at;
    let (mut last_at, mut last_produced) = (0.0, 0u64);
    let mut next_refresh = Instant::now();
    // Acquire: pairs with the Release store in `RampSource::end`.
    while !ended.load(Ordering::Acquire) {
        next_refresh += STATUS_INTERVAL;
        std::thread::sleep(next_refresh.saturating_duration_since(Instant::now()));
        let metrics = handle.metrics();
        let at = metrics.elapsed.as_secs_f64();
        let produced = metrics.stages.first().map_or(0, |s| s.items_out);
        let tick_rate = if at > last_at {
            produced.saturating_sub(last_produced) as f64 / (at - last_at)
        } else {
            0.0
        };
        (last_at, last_produced) = (at, produced);
        samples.push(ThroughputSample {
            at,
            window_rate: metrics.throughput,
            tick_rate,
        });
        for impact in metrics.switches.iter().skip(switches_seen) {
            status.note(&switch_notice(impact, run_started));
        }
        switches_seen = switches_seen.max(metrics.switches.len());
        for event in metrics.recoveries.iter().skip(recoveries_seen) {
            status.note(&recovery_notice(event, run_started));
        }
        recoveries_seen = recoveries_seen.max(metrics.recoveries.len());
        if let Some(when) = kill_at.filter(|&when| started.elapsed() >= when) {
            // The last worker listed: the stateful `checksum` when the
            // pipeline is distributed. In-process there is none yet: try
            // again at the next refresh.
            if let Some((stage, pid)) = handle.worker_pids().pop() {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
                status.note(&format!(
                    ">> {:.2} s: SIGKILL to worker `{stage}` (pid {pid}) (asked for at {:.1} s)",
                    started.elapsed().as_secs_f64(),
                    when.as_secs_f64()
                ));
                kill_at = None;
            }
        }
        status.show(&status_text(&metrics, settings.threshold));
    }
    let report = handle.join();
    status.finish();
    let report = report.map_err(|e| format!("the pipeline failed: {e}"))?;

    // Relaxed: after `join` (see the sink).
    let sink = (
        tally.items.load(Ordering::Relaxed),
        tally.digest.load(Ordering::Relaxed),
    );
    let expected = expected_tally(report.items_produced);
    let pass = print_report(&report, run_started, sink, expected);

    let chart = write_chart(
        &settings.svg,
        &samples,
        &report.metrics.switches,
        &report.recoveries,
        run_started,
        settings,
        &config,
    );
    println!();
    match chart {
        Ok(()) => println!("Chart: {}", settings.svg.display()),
        Err(e) => {
            println!("Chart: not written: {e}");
            return Err(format!(
                "cannot write the chart to {}: {e}",
                settings.svg.display()
            ));
        }
    }
    println!("Run time: {:.1} s", started.elapsed().as_secs_f64());
    Ok(pass)
}
