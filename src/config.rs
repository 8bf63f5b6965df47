//! How a pipeline runs: the execution mode and the hybrid switching policy.

use crate::error::Error;

/// Default slots per in-process ring.
pub const DEFAULT_RING_CAPACITY: usize = 4096;
/// Default number of items a stage takes from its input at once.
pub const DEFAULT_BATCH_SIZE: usize = 256;
/// Default bytes per shared-memory record ring (distributed mode). Pages
/// are only touched as records pass, so a large ring costs address space,
/// not memory.
pub const DEFAULT_SHM_RING_BYTES: usize = 1 << 20;
/// Default stall timeout of a worker process (see `stall_timeout`).
pub const DEFAULT_STALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// Default bytes a `stateful` stage's archived state may take when it moves
/// back from a worker process.
pub const DEFAULT_MAX_STATE_BYTES: usize = 1 << 20;
/// Default [`max_restarts`](crate::Pipeline::max_restarts): 0, so a crashed
/// worker ends the run with [`Error::WorkerCrashed`] and nothing is logged
/// or checkpointed; recovery is asked for, not paid for by every run.
pub const DEFAULT_MAX_RESTARTS: u32 = 0;
/// Default longest time between two checkpoints while distributed (see
/// [`checkpoint_interval`](crate::Pipeline::checkpoint_interval)).
pub const DEFAULT_CHECKPOINT_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);
/// What the source's replay log may hold by default, in bytes of its item
/// type (`size_of::<T>()`; heap data the items own is not counted): 8 MiB,
/// so 1 Mi `u64`s, and never fewer than 1024 items (see
/// [`replay_log_items`](crate::Pipeline::replay_log_items)). Larger logs
/// measured slower, not faster: fewer checkpoints, but every logged item
/// written to memory the caches no longer hold (docs/PERF.md).
pub const DEFAULT_REPLAY_LOG_BYTES: usize = 8 << 20;
/// Largest accepted [`replay_log_items`](crate::Pipeline::replay_log_items):
/// 1 Gi items.
pub const MAX_REPLAY_LOG_ITEMS: usize = 1 << 30;

/// Largest accepted [`ring_capacity`](crate::Pipeline::ring_capacity): 16 Mi
/// slots. Each in-process ring allocates its slots up front, so a capacity
/// far beyond any useful buffering (2^40 slots of even 8 bytes is 8 TiB)
/// would abort the process on the failed allocation instead of failing the
/// run.
pub const MAX_RING_CAPACITY: usize = 1 << 24;
/// Largest accepted [`batch_size`](crate::Pipeline::batch_size): 64 Ki items. A
/// stage gathers up to a batch before it hands anything on, and in
/// distributed mode a batch crosses in shared-memory records, so an
/// unbounded batch over an endless source would grow without limit.
pub const MAX_BATCH_SIZE: usize = 1 << 16;
pub use ringweave_ipc::control::MAX_STATE_BYTES;

/// The physical mode a pipeline starts in (and, for `Hybrid`, may leave).
#[derive(Clone, Debug, Default, PartialEq)]
pub enum ExecutionMode {
    /// One OS thread per stage, joined by in-process rings. The default.
    #[default]
    InProcess,
    /// Each transform stage in a forked worker process, joined by rings in
    /// shared memory; source and sink stay on threads of this process.
    Distributed,
    /// Starts in-process and switches to distributed (and back) when the
    /// measured throughput crosses [`HybridConfig::local_threshold`].
    Hybrid(HybridConfig),
}

/// One of the two physical modes, as reported and as a switch target.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mode {
    /// Stages on threads of this process.
    InProcess,
    /// Transform stages in forked worker processes.
    Distributed,
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Mode::InProcess => "in-process",
            Mode::Distributed => "distributed",
        })
    }
}

/// The policy of [`ExecutionMode::Hybrid`].
///
/// `Default` gives a 100 ms sampling interval, a 1 s window, a 5 s switch
/// timeout, hysteresis on and a 2 s cooldown; `local_threshold` has no
/// sensible default (1,000,000 items/s) and should be set.
#[derive(Clone, Debug, PartialEq)]
pub struct HybridConfig {
    /// Items per second leaving the source above which the pipeline moves to
    /// distributed mode (and below which it moves back).
    pub local_threshold: usize,
    /// How often the monitor samples the stage counters, in milliseconds.
    pub monitoring_interval_ms: u64,
    /// Width of the rolling window the rate is computed over, in
    /// milliseconds. At least `monitoring_interval_ms`.
    pub window_size_ms: u64,
    /// How long a switch may wait for every stage to reach the barrier before
    /// it is abandoned (never forced), in milliseconds.
    pub switch_timeout_ms: u64,
    /// Move out above `1.1 × threshold` and back below `0.9 × threshold`
    /// instead of crossing the threshold itself both ways.
    pub enable_hysteresis: bool,
    /// Minimum time between the end of one switch and the next automatic one,
    /// in milliseconds, so the pipeline cannot flap.
    pub cooldown_ms: u64,
}

impl Default for HybridConfig {
    fn default() -> Self {
        Self {
            local_threshold: 1_000_000,
            monitoring_interval_ms: 100,
            window_size_ms: 1000,
            switch_timeout_ms: 5000,
            enable_hysteresis: true,
            cooldown_ms: 2000,
        }
    }
}

impl HybridConfig {
    /// Checks every field.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] naming the first invalid field and its value.
    pub fn validate(&self) -> Result<(), Error> {
        let invalid =
            |field: &'static str, reason: String| Err(Error::InvalidConfig { field, reason });
        if self.local_threshold == 0 {
            return invalid("local_threshold", "must be at least 1 item/s, got 0".into());
        }
        if self.monitoring_interval_ms == 0 {
            return invalid(
                "monitoring_interval_ms",
                "must be at least 1 ms, got 0".into(),
            );
        }
        if self.window_size_ms < self.monitoring_interval_ms {
            return invalid(
                "window_size_ms",
                format!(
                    "must be at least monitoring_interval_ms ({} ms), got {} ms",
                    self.monitoring_interval_ms, self.window_size_ms
                ),
            );
        }
        if self.switch_timeout_ms == 0 {
            return invalid("switch_timeout_ms", "must be at least 1 ms, got 0".into());
        }
        Ok(())
    }

    /// Rate above which the pipeline moves to distributed mode.
    pub fn upper_threshold(&self) -> f64 {
        let t = self.local_threshold as f64;
        if self.enable_hysteresis {
            1.1 * t
        } else {
            t
        }
    }

    /// Rate below which the pipeline moves back in-process.
    pub fn lower_threshold(&self) -> f64 {
        let t = self.local_threshold as f64;
        if self.enable_hysteresis {
            0.9 * t
        } else {
            t
        }
    }
}
