//! What a run records as it goes: its switches and the latency of sampled
//! items. Shared by the live metrics (`metrics.rs`) and the final report
//! (`report.rs`).

use crate::config::Mode;
use std::time::{Duration, SystemTime};

/// Latency percentiles of items stamped at the source and seen at the sink.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct LatencySummary {
    /// Number of sampled items.
    pub samples: u64,
    /// Median.
    pub p50: Duration,
    /// 99th percentile.
    pub p99: Duration,
    /// 99.9th percentile.
    pub p999: Duration,
    /// Largest seen.
    pub max: Duration,
    /// Mean.
    pub mean: Duration,
}

impl LatencySummary {
    /// Summarises a histogram of nanoseconds.
    pub(crate) fn of(h: &hdrhistogram::Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        let ns = Duration::from_nanos;
        Self {
            samples: h.len(),
            p50: ns(h.value_at_quantile(0.5)),
            p99: ns(h.value_at_quantile(0.99)),
            p999: ns(h.value_at_quantile(0.999)),
            max: ns(h.max()),
            mean: ns(h.mean() as u64),
        }
    }
}

/// Why a switch was attempted.
#[derive(Clone, Debug, PartialEq)]
pub enum SwitchReason {
    /// The windowed rate rose above the upper threshold.
    ThroughputAbove {
        /// Observed items/s leaving the source.
        rate: f64,
        /// The threshold it crossed, items/s.
        threshold: f64,
    },
    /// The windowed rate fell below the lower threshold.
    ThroughputBelow {
        /// Observed items/s leaving the source.
        rate: f64,
        /// The threshold it crossed, items/s.
        threshold: f64,
    },
    /// [`PipelineHandle::switch_to`](crate::PipelineHandle::switch_to).
    Manual,
}

/// How a switch ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SwitchOutcome {
    /// The pipeline now runs in the target mode.
    Completed,
    /// Something failed before the commit; the pipeline runs exactly as
    /// before. The cause is in the text.
    RolledBack(String),
    /// Not every stage reached the barrier within `switch_timeout_ms`; the
    /// switch was abandoned and the pipeline runs as before.
    TimedOut {
        /// Stages that had not reached the barrier.
        pending: Vec<String>,
        /// The timeout, in milliseconds.
        timeout_ms: u64,
    },
}

/// One switch attempt.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct SwitchEvent {
    /// Mode before.
    pub from: Mode,
    /// Mode asked for.
    pub to: Mode,
    /// Why.
    pub reason: SwitchReason,
    /// How it ended.
    pub outcome: SwitchOutcome,
    /// Time during which no item moved: from the pause request to the resume.
    pub pause: Duration,
    /// Items copied from one kind of ring into the other.
    pub migrated_items: u64,
    /// Bytes of rkyv records written or read for them.
    pub migrated_bytes: u64,
    /// When the switch started.
    pub at: SystemTime,
}

/// A worker replaced after a crash (see
/// [`max_restarts`](crate::CompletePipeline::max_restarts)): the run went
/// back to its last checkpoint and replayed from there.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct RecoveryEvent {
    /// The stage whose worker died (`score[2]` for a replica process).
    pub stage: String,
    /// Its pid.
    pub pid: u32,
    /// How it ended (`was killed by SIGKILL`, or the watchdog's verdict).
    pub cause: String,
    /// Items the source sent again: what it had sent since the checkpoint,
    /// and what it held.
    pub replayed_items: u64,
    /// Items put back into the rings from the checkpoint (in flight when it
    /// was taken).
    pub restored_items: u64,
    /// From noticing the death to the new workers running: killing and
    /// reaping the others, forking, refilling the rings.
    pub downtime: Duration,
    /// Which restart of the run this was, from 1.
    pub restart: u32,
    /// When the death was noticed.
    pub at: SystemTime,
}
