//! Sampled end-to-end latency: stamps that follow items from the source to
//! the sink.
//!
//! The source stamps the first item of a batch (at most one every
//! [`STAMP_INTERVAL`]) with the time it emits it. A stamp is `(sequence
//! number of the item on its edge, nanoseconds since the run started)`, and
//! travels beside the items in a small queue per edge, never inside them, so
//! an unstamped item costs one integer comparison per stage. A stage that
//! takes the stamped item passes the stamp on to the first output that item
//! produces (an item a `filter` drops loses its stamp); the sink records
//! `now - stamp` in the run's histogram. Sequence numbers are the stages'
//! item counters, which survive switches, so a stamp stays valid across one;
//! a full stamp queue drops stamps rather than waiting.
//!
//! The clock is `CLOCK_MONOTONIC` through `Instant`, which a forked worker
//! shares with its parent; only the source and the sink (threads of this
//! process) read it.

use hdrhistogram::Histogram;
use parking_lot::Mutex;
use ringweave_ipc::record_ring::{RecordConsumer, RecordProducer};
use ringweave_ipc::ring::{Consumer, Producer};
use std::time::{Duration, Instant};

/// `(sequence number on the edge, nanoseconds since the run started)`.
pub(crate) type Stamp = (u64, u64);

/// Stamps an in-process stamp queue holds; more in flight are dropped.
pub(crate) const STAMP_QUEUE: usize = 1024;

/// Least time between two stamps at the source.
pub(crate) const STAMP_INTERVAL: Duration = Duration::from_micros(200);

/// Where a stage sends the stamps of its outputs.
pub(crate) enum StampTx {
    None,
    Ring(Producer<Stamp>),
    Shm(RecordProducer<Stamp>),
}

/// Where a stage receives the stamps of its inputs.
pub(crate) enum StampRx {
    None,
    Ring(Consumer<Stamp>),
    Shm(RecordConsumer<Stamp>),
}

impl StampTx {
    fn push(&mut self, stamp: Stamp) {
        match self {
            StampTx::None => {}
            StampTx::Ring(tx) => {
                let _ = tx.push(stamp);
            }
            StampTx::Shm(tx) => {
                if tx.push(&stamp).is_ok() {
                    tx.flush();
                }
            }
        }
    }
}

impl StampRx {
    fn pop(&mut self) -> Option<Stamp> {
        match self {
            StampRx::None => None,
            StampRx::Ring(rx) => rx.pop().ok(),
            StampRx::Shm(rx) => rx.pop().ok(),
        }
    }
}

/// A stage's two stamp queues and the next stamped input it expects.
pub(crate) struct Stamps {
    pub rx: StampRx,
    pub tx: StampTx,
    /// Sequence number of the next stamped input; `u64::MAX` if none is
    /// known yet.
    next_seq: u64,
    /// Its stamp.
    next_at: u64,
    /// When the source last stamped an item.
    last_stamp: Option<Instant>,
}

impl Default for Stamps {
    fn default() -> Self {
        Self {
            rx: StampRx::None,
            tx: StampTx::None,
            next_seq: u64::MAX,
            next_at: 0,
            last_stamp: None,
        }
    }
}

impl Stamps {
    /// Replaces the queues (at a switch); `None` keeps that side.
    pub(crate) fn replace(&mut self, rx: Option<StampRx>, tx: Option<StampTx>) {
        if let Some(rx) = rx {
            self.rx = rx;
            self.next_seq = u64::MAX;
        }
        if let Some(tx) = tx {
            self.tx = tx;
        }
    }

    /// Looks for the first stamp at or after input `seq` (called once per
    /// batch, so stamps that arrived since are found).
    #[inline]
    pub(crate) fn refresh(&mut self, seq: u64) {
        if self.next_seq != u64::MAX && self.next_seq >= seq {
            return;
        }
        self.next_seq = u64::MAX;
        while let Some((s, at)) = self.rx.pop() {
            if s >= seq {
                self.next_seq = s;
                self.next_at = at;
                return;
            }
        }
    }

    /// If input `seq` is stamped, takes its stamp.
    #[inline]
    pub(crate) fn take(&mut self, seq: u64) -> Option<u64> {
        if seq != self.next_seq {
            return None;
        }
        let at = self.next_at;
        self.next_seq = u64::MAX;
        self.refresh(seq + 1);
        Some(at)
    }

    /// Takes the next stamp if its input is below `end` (the end of a
    /// batch just taken), as `(seq, at)`.
    #[inline]
    pub(crate) fn take_below(&mut self, end: u64) -> Option<(u64, u64)> {
        if self.next_seq >= end {
            return None;
        }
        let (seq, at) = (self.next_seq, self.next_at);
        self.next_seq = u64::MAX;
        self.refresh(seq + 1);
        Some((seq, at))
    }

    /// Passes a stamp on with output `seq`.
    #[inline]
    pub(crate) fn forward(&mut self, seq: u64, at: u64) {
        self.tx.push((seq, at));
    }

    /// At the source: whether to stamp the next item now.
    #[inline]
    pub(crate) fn source_due(&mut self, now: Instant) -> bool {
        match self.last_stamp {
            Some(last) if now.duration_since(last) < STAMP_INTERVAL => false,
            _ => {
                self.last_stamp = Some(now);
                true
            }
        }
    }
}

/// The run's clock and latency histogram, shared by the source and the sink.
pub(crate) struct LatencyRecorder {
    /// Time zero of every stamp.
    pub started: Instant,
    /// Source-to-sink latency in nanoseconds, since the start.
    pub histogram: Mutex<Histogram<u64>>,
    /// The same since the coordinator last rotated it (one monitor window).
    pub recent: Mutex<Histogram<u64>>,
}

impl LatencyRecorder {
    pub(crate) fn new(started: Instant) -> Self {
        // 1 ns to one hour at three significant figures; `saturating_record`
        // clamps anything longer to the hour (it does not resize).
        let histogram = Histogram::new_with_bounds(1, 3_600_000_000_000, 3)
            .expect("bounds and precision are valid");
        Self {
            started,
            recent: Mutex::new(histogram.clone()),
            histogram: Mutex::new(histogram),
        }
    }

    /// Nanoseconds since the run started.
    #[inline]
    pub(crate) fn now(&self) -> u64 {
        self.started.elapsed().as_nanos() as u64
    }

    /// Records samples taken by the sink in one batch.
    pub(crate) fn record(&self, samples: &[u64]) {
        if samples.is_empty() {
            return;
        }
        {
            let mut histogram = self.histogram.lock();
            for &ns in samples {
                histogram.saturating_record(ns.max(1));
            }
        }
        let mut recent = self.recent.lock();
        for &ns in samples {
            recent.saturating_record(ns.max(1));
        }
        drop(recent);
        // The facade's histogram (see `export.rs`): recorded here, where
        // each sample is, rather than rebuilt from the HDR histogram.
        #[cfg(feature = "metrics")]
        {
            let histogram = metrics::histogram!("ringweave_latency_seconds");
            for &ns in samples {
                histogram.record(ns as f64 / 1e9);
            }
        }
    }

    /// p99 of the samples since the last call, then starts a new window.
    pub(crate) fn rotate(&self) -> Duration {
        let mut recent = self.recent.lock();
        let p99 = if recent.is_empty() {
            0
        } else {
            recent.value_at_quantile(0.99)
        };
        recent.reset();
        Duration::from_nanos(p99)
    }
}
