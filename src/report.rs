//! What a run reports: counts, the switches it made, latency.

use crate::config::Mode;
use crate::event::{LatencySummary, RecoveryEvent, SwitchEvent};
use crate::metrics::Metrics;
use std::time::Duration;

/// The outcome of a finished run.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct RunReport {
    /// Items the source produced.
    pub items_produced: u64,
    /// Items the sink received.
    pub items_delivered: u64,
    /// The mode the pipeline was in when it finished.
    pub final_mode: Mode,
    /// Wall time from `spawn` to the last stage's exit.
    pub elapsed: Duration,
    /// Per-stage counts, source first, sink last.
    pub stages: Vec<StageReport>,
    /// Every switch attempted, in order, whatever its outcome.
    pub switches: Vec<SwitchEvent>,
    /// End-to-end latency of sampled items, source to sink.
    pub latency: LatencySummary,
    /// The final metrics snapshot (rates, ring fill, switch impact).
    pub metrics: Metrics,
    /// The reports of the pipelines that ran beside this one — tee
    /// branches and merge inputs — in the order the builder added them.
    pub branches: Vec<RunReport>,
    /// Every worker replaced after a crash, in order (see
    /// [`max_restarts`](crate::CompletePipeline::max_restarts)).
    pub recoveries: Vec<RecoveryEvent>,
    /// The most items the source's replay log held at once (0 without
    /// [`max_restarts`](crate::CompletePipeline::max_restarts)); never more
    /// than `replay_log_bound`.
    pub replay_log_peak: usize,
    /// The bound of the source's replay log (0 without `max_restarts`).
    pub replay_log_bound: usize,
    /// Checkpoints taken (a switch out counts as one; 0 without
    /// `max_restarts`).
    pub checkpoints: u64,
}

/// Counts of one stage over the whole run.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct StageReport {
    /// The stage's name (`source`, `sink`, or the name given to the builder).
    pub name: String,
    /// Items taken from the input (0 for the source).
    pub items_in: u64,
    /// Items handed to the output (for the sink: items delivered).
    pub items_out: u64,
}
