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
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Spawn { source, .. } => Some(source),
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
