//! The errors a pipeline run can end with.

use std::fmt;

/// Why a pipeline could not start or did not finish.
///
/// Every variant that concerns a stage names it, and every limit carries the
/// numbers that were exceeded.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// A configuration value is out of range; `field` names it.
    InvalidConfig {
        /// The offending field (`ring_capacity`, `local_threshold`, …).
        field: &'static str,
        /// What is wrong, with the value given.
        reason: String,
    },
    /// A stage, the source or the sink panicked.
    StagePanicked {
        /// The stage's name (`source` and `sink` for those two).
        stage: String,
        /// The panic message, if it was a string.
        message: String,
    },
    /// An OS thread could not be started.
    Spawn {
        /// The stage the thread was for.
        stage: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The operation is not available in this build or mode.
    Unsupported {
        /// What was asked for.
        what: String,
    },
    /// The pipeline is no longer running (it finished or failed) and cannot
    /// take the command.
    NotRunning,
    /// An item could not cross into or out of a worker process: its archive
    /// is larger than the shared ring (the error carries both sizes), its
    /// `Serialize` failed, or a record failed validation.
    Record {
        /// The stage that wrote or read the record.
        stage: String,
        /// What was wrong, with the sizes and ring position.
        source: ringweave_ipc::record::RecordError,
    },
    /// A worker process ended without finishing its stage: killed by a
    /// signal, or exited with a failure code.
    WorkerCrashed {
        /// The stage the worker ran.
        stage: String,
        /// Its process id (an `i32`, as `pid_t`; `worker_pids()` and
        /// [`Error::WorkerStalled`] give it as `u32`: kept as released).
        pid: i32,
        /// How it ended (`killed by SIGKILL`, `exited with code 3`, …) and
        /// the message it left, if any.
        exit: String,
    },
    /// A worker process made no progress for longer than the stall timeout
    /// (`CompletePipeline::stall_timeout`) while its input held items and
    /// its output was empty (so it waited for neither): it was killed and
    /// reaped. The usual cause is
    /// stage code that takes a lock another thread of this program held at
    /// the fork (stdio, `println!`, `tracing`, a `Mutex`): in the worker
    /// that lock is never released.
    WorkerStalled {
        /// The stage the worker ran.
        stage: String,
        /// Its process id.
        pid: u32,
        /// How long its counters stood still.
        stalled_for: std::time::Duration,
        /// Items it had taken from its input when it stopped moving.
        items_in: u64,
        /// Bytes waiting in its input ring.
        input_bytes: u64,
    },
    /// A shared-memory segment or worker process could not be set up to
    /// start a distributed run.
    Distributed {
        /// What failed, with the OS error and sizes.
        reason: String,
    },
    /// Cluster mode (`CompletePipeline::run_on`): a host's process went
    /// away — exited, was killed, or the network to it parted — while this
    /// host still had items to receive from it or to hand to it.
    HostLost {
        /// The host's index in the cluster.
        host: usize,
        /// The stages placed on it.
        stages: Vec<String>,
    },
    /// Cluster mode: the run failed on host `host` (which told this one
    /// why), or the network edge or session of this host failed.
    Cluster {
        /// The host where it failed.
        host: usize,
        /// What failed, naming the stage or edge.
        reason: String,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::InvalidConfig { field, reason } => {
                write!(f, "invalid configuration: `{field}` {reason}")
            }
            Error::StagePanicked { stage, message } => {
                write!(f, "stage `{stage}` panicked: {message}")
            }
            Error::Spawn { stage, source } => {
                write!(f, "could not start the thread of stage `{stage}`: {source}")
            }
            Error::Unsupported { what } => write!(f, "not supported: {what}"),
            Error::NotRunning => f.write_str("the pipeline is not running"),
            Error::Record { stage, source } => write!(f, "stage `{stage}`: {source}"),
            Error::WorkerCrashed { stage, pid, exit } => {
                write!(f, "worker process {pid} of stage `{stage}` {exit}")
            }
            Error::WorkerStalled {
                stage,
                pid,
                stalled_for,
                items_in,
                input_bytes,
            } => write!(
                f,
                "worker process {pid} of stage `{stage}` made no progress for {} ms \
                 with {input_bytes} bytes waiting in its input and its output empty \
                 (stuck after {items_in} items; a lock held at the fork?): killed",
                stalled_for.as_millis()
            ),
            Error::Distributed { reason } => {
                write!(f, "could not start distributed execution: {reason}")
            }
            Error::HostLost { host, stages } => write!(
                f,
                "cluster host {host} (stages {}) was lost before its part of the run was done",
                stages.join(", ")
            ),
            Error::Cluster { host, reason } => write!(f, "cluster host {host}: {reason}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Spawn { source, .. } => Some(source),
            Error::Record { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// The text of a panic payload, or a placeholder when it is not a string.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "<non-string panic payload>".to_owned()
    }
}
