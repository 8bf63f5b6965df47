//! Live metrics: what [`PipelineHandle::metrics`](crate::PipelineHandle::metrics)
//! returns and [`RunReport::metrics`](crate::RunReport) carries at the end,
//! and its Prometheus text rendering.

use crate::config::Mode;
use crate::event::{LatencySummary, RecoveryEvent, SwitchEvent, SwitchOutcome};
use std::fmt::Write as _;
use std::time::Duration;

/// A snapshot of a running (or finished) pipeline.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Metrics {
    /// The mode the stages run in.
    pub mode: Mode,
    /// Time since the run started.
    pub elapsed: Duration,
    /// Items per second leaving the source, over the monitor's window (the
    /// rate hybrid switching acts on).
    pub throughput: f64,
    /// Per stage, source first.
    pub stages: Vec<StageMetrics>,
    /// Per edge, in pipeline order.
    pub edges: Vec<EdgeMetrics>,
    /// Source-to-sink latency of sampled items since the start.
    pub latency: LatencySummary,
    /// Every switch so far, with its effect on rate and latency.
    pub switches: Vec<SwitchImpact>,
    /// Every worker replaced after a crash so far.
    pub recoveries: Vec<RecoveryEvent>,
}

/// One stage's counters and rates.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct StageMetrics {
    /// The stage's name.
    pub name: String,
    /// Items taken in, ever.
    pub items_in: u64,
    /// Items handed on, ever.
    pub items_out: u64,
    /// Items per second handed on, over the monitor's window.
    pub rate_out: f64,
    /// How many replicas the stage runs as now (threads of this process,
    /// or of its worker while distributed): 1 unless it was given
    /// `replicas`/`distributed_replicas`.
    pub replicas: usize,
    /// Items each replica has taken, ever, as `stage[i]` in the
    /// Prometheus text (replica 0 is the stage's own thread or worker).
    /// Empty for a stage that never had more than one replica.
    pub replica_items: Vec<u64>,
}

/// How full one edge's ring is.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct EdgeMetrics {
    /// The producing stage.
    pub from: String,
    /// The consuming stage.
    pub to: String,
    /// Occupied fraction of the ring, 0 to 1: items of the in-process ring,
    /// or bytes of the shared-memory record ring when distributed.
    pub fill: f64,
}

/// A switch and what it did to throughput and tail latency.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct SwitchImpact {
    /// The switch itself.
    pub event: SwitchEvent,
    /// Windowed items/s just before the switch.
    pub rate_before: f64,
    /// p99 latency of the window just before the switch.
    pub p99_before: Duration,
    /// Windowed items/s one window after the switch; `None` until a full
    /// window has passed.
    pub rate_after: Option<f64>,
    /// p99 latency of that window.
    pub p99_after: Option<Duration>,
}

fn mode_name(mode: Mode) -> &'static str {
    match mode {
        Mode::InProcess => "in_process",
        Mode::Distributed => "distributed",
    }
}

/// Escapes a label value for the text exposition format.
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Writes one metric family's `HELP` and `TYPE` lines.
fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

impl Metrics {
    /// Renders the snapshot in the Prometheus text exposition format
    /// (version 0.0.4): one `HELP` and one `TYPE` line per metric family,
    /// names prefixed `ringweave_` and suffixed with their unit.
    ///
    /// # Examples
    ///
    /// ```
    /// use ringweave::Pipeline;
    ///
    /// let report = Pipeline::from_iter(0..1000u64).map("inc", |x| x + 1).sink(|_| {}).run()?;
    /// let text = report.metrics.to_prometheus();
    /// assert!(text.contains("ringweave_stage_items_out_total{stage=\"inc\"} 1000"));
    /// # Ok::<(), ringweave::Error>(())
    /// ```
    pub fn to_prometheus(&self) -> String {
        let mut out = String::new();
        family(
            &mut out,
            "ringweave_mode",
            "gauge",
            "1 for the mode the pipeline runs in.",
        );
        for mode in [Mode::InProcess, Mode::Distributed] {
            let on = u8::from(self.mode == mode);
            let _ = writeln!(out, "ringweave_mode{{mode=\"{}\"}} {on}", mode_name(mode));
        }
        family(
            &mut out,
            "ringweave_uptime_seconds",
            "gauge",
            "Seconds since the run started.",
        );
        let _ = writeln!(
            out,
            "ringweave_uptime_seconds {}",
            self.elapsed.as_secs_f64()
        );
        family(
            &mut out,
            "ringweave_throughput_items_per_second",
            "gauge",
            "Items per second leaving the source, over the monitor window.",
        );
        let _ = writeln!(
            out,
            "ringweave_throughput_items_per_second {}",
            self.throughput
        );
        family(
            &mut out,
            "ringweave_stage_items_in_total",
            "counter",
            "Items each stage has taken from its input.",
        );
        for s in &self.stages {
            let _ = writeln!(
                out,
                "ringweave_stage_items_in_total{{stage=\"{}\"}} {}",
                label(&s.name),
                s.items_in
            );
        }
        family(
            &mut out,
            "ringweave_stage_items_out_total",
            "counter",
            "Items each stage has handed to its output (for the sink: delivered).",
        );
        for s in &self.stages {
            let _ = writeln!(
                out,
                "ringweave_stage_items_out_total{{stage=\"{}\"}} {}",
                label(&s.name),
                s.items_out
            );
        }
        family(
            &mut out,
            "ringweave_stage_rate_items_per_second",
            "gauge",
            "Items per second each stage hands on, over the monitor window.",
        );
        for s in &self.stages {
            let _ = writeln!(
                out,
                "ringweave_stage_rate_items_per_second{{stage=\"{}\"}} {}",
                label(&s.name),
                s.rate_out
            );
        }
        family(
            &mut out,
            "ringweave_stage_replicas",
            "gauge",
            "Replicas each stage runs as now.",
        );
        for s in &self.stages {
            let _ = writeln!(
                out,
                "ringweave_stage_replicas{{stage=\"{}\"}} {}",
                label(&s.name),
                s.replicas
            );
        }
        family(
            &mut out,
            "ringweave_replica_items_total",
            "counter",
            "Items each replica of a replicated stage has taken.",
        );
        for s in &self.stages {
            for (r, items) in s.replica_items.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "ringweave_replica_items_total{{stage=\"{}[{r}]\"}} {items}",
                    label(&s.name)
                );
            }
        }
        family(
            &mut out,
            "ringweave_ring_fill_ratio",
            "gauge",
            "Occupied fraction of each edge's ring.",
        );
        for e in &self.edges {
            let _ = writeln!(
                out,
                "ringweave_ring_fill_ratio{{from=\"{}\",to=\"{}\"}} {}",
                label(&e.from),
                label(&e.to),
                e.fill
            );
        }
        family(
            &mut out,
            "ringweave_latency_seconds",
            "summary",
            "Source-to-sink latency of sampled items.",
        );
        let l = &self.latency;
        for (q, v) in [
            ("0.5", l.p50),
            ("0.99", l.p99),
            ("0.999", l.p999),
            ("1", l.max),
        ] {
            let _ = writeln!(
                out,
                "ringweave_latency_seconds{{quantile=\"{q}\"}} {}",
                v.as_secs_f64()
            );
        }
        let _ = writeln!(
            out,
            "ringweave_latency_seconds_sum {}",
            l.mean.as_secs_f64() * l.samples as f64
        );
        let _ = writeln!(out, "ringweave_latency_seconds_count {}", l.samples);
        family(
            &mut out,
            "ringweave_switches_total",
            "counter",
            "Switch attempts by target mode and outcome.",
        );
        for to in [Mode::InProcess, Mode::Distributed] {
            for outcome in ["completed", "rolled_back", "timed_out"] {
                let n = self
                    .switches
                    .iter()
                    .filter(|s| s.event.to == to && outcome_name(&s.event.outcome) == outcome)
                    .count();
                let _ = writeln!(
                    out,
                    "ringweave_switches_total{{to=\"{}\",outcome=\"{outcome}\"}} {n}",
                    mode_name(to)
                );
            }
        }
        family(
            &mut out,
            "ringweave_last_switch_pause_seconds",
            "gauge",
            "Time no item moved during the last switch (0 before any).",
        );
        let pause = self
            .switches
            .last()
            .map_or(0.0, |s| s.event.pause.as_secs_f64());
        let _ = writeln!(out, "ringweave_last_switch_pause_seconds {pause}");
        family(
            &mut out,
            "ringweave_recoveries_total",
            "counter",
            "Workers replaced after a crash.",
        );
        let _ = writeln!(out, "ringweave_recoveries_total {}", self.recoveries.len());
        out
    }
}

fn outcome_name(outcome: &SwitchOutcome) -> &'static str {
    match outcome {
        SwitchOutcome::Completed => "completed",
        SwitchOutcome::RolledBack(_) => "rolled_back",
        SwitchOutcome::TimedOut { .. } => "timed_out",
    }
}
