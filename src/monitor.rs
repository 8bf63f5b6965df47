//! The throughput monitor: a rolling window over the source's counter.
//!
//! Every stage publishes its own counters with plain stores (see
//! `control.rs`); the coordinator samples them every
//! `monitoring_interval_ms`. The rate that drives switching is items per
//! second leaving the source, over the last `window_size_ms`.

use crate::config::{HybridConfig, Mode};
use crate::event::SwitchReason;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// A rolling window of `(time, count)` samples of a monotonic counter.
#[derive(Debug)]
pub(crate) struct RateWindow {
    window: Duration,
    /// Oldest first. Keeps one sample at or before `newest - window` so the
    /// window is always fully covered once it has been.
    samples: VecDeque<(Instant, u64)>,
}

impl RateWindow {
    pub(crate) fn new(window: Duration) -> Self {
        Self {
            window,
            samples: VecDeque::new(),
        }
    }

    /// Adds a sample and forgets those no longer needed.
    pub(crate) fn record(&mut self, at: Instant, count: u64) {
        self.samples.push_back((at, count));
        while self.samples.len() > 2 && at.duration_since(self.samples[1].0) >= self.window {
            self.samples.pop_front();
        }
    }

    /// The window's width.
    pub(crate) fn window(&self) -> Duration {
        self.window
    }

    /// Forgets everything (after a switch the old rate says nothing).
    pub(crate) fn clear(&mut self) {
        self.samples.clear();
    }

    /// Items per second over the window, once the samples span a whole
    /// window; `None` before.
    pub(crate) fn rate(&self) -> Option<f64> {
        let (&(t0, c0), &(t1, c1)) = (self.samples.front()?, self.samples.back()?);
        let span = t1.duration_since(t0);
        if span < self.window || span.is_zero() {
            return None;
        }
        Some(c1.saturating_sub(c0) as f64 / span.as_secs_f64())
    }

    /// Items per second over whatever the samples span, if they span any
    /// time at all (for metrics, before the window is full).
    pub(crate) fn rate_if_spanned(&self) -> Option<f64> {
        let (&(t0, c0), &(t1, c1)) = (self.samples.front()?, self.samples.back()?);
        (t1 > t0).then(|| c1.saturating_sub(c0) as f64 / t1.duration_since(t0).as_secs_f64())
    }

    /// Items per second over whatever the samples span (for metrics).
    pub(crate) fn rate_so_far(&self) -> f64 {
        match (self.samples.front(), self.samples.back()) {
            (Some(&(t0, c0)), Some(&(t1, c1))) if t1 > t0 => {
                c1.saturating_sub(c0) as f64 / t1.duration_since(t0).as_secs_f64()
            }
            _ => 0.0,
        }
    }
}

/// The hybrid policy: the switch that a windowed `rate` calls for while
/// the pipeline is in `mode`, if any. Above the upper threshold an
/// in-process pipeline leaves the process; below the lower one a
/// distributed pipeline comes back (the two differ by ±10 % with
/// hysteresis, so a rate sitting at the threshold does not flap).
pub(crate) fn policy(mode: Mode, rate: f64, config: &HybridConfig) -> Option<(Mode, SwitchReason)> {
    let (upper, lower) = (config.upper_threshold(), config.lower_threshold());
    match mode {
        Mode::InProcess if rate > upper => Some((
            Mode::Distributed,
            SwitchReason::ThroughputAbove {
                rate,
                threshold: upper,
            },
        )),
        Mode::Distributed if rate < lower => Some((
            Mode::InProcess,
            SwitchReason::ThroughputBelow {
                rate,
                threshold: lower,
            },
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_switches_across_the_thresholds_with_hysteresis() {
        let config = HybridConfig {
            local_threshold: 1000,
            enable_hysteresis: true,
            ..HybridConfig::default()
        };
        let to = |mode, rate| policy(mode, rate, &config).map(|(to, _)| to);
        // Between 900 and 1100 nothing moves, whichever the mode.
        for rate in [900.0, 1000.0, 1100.0] {
            assert_eq!(to(Mode::InProcess, rate), None, "{rate}");
            assert_eq!(to(Mode::Distributed, rate), None, "{rate}");
        }
        assert_eq!(to(Mode::InProcess, 1100.1), Some(Mode::Distributed));
        assert_eq!(to(Mode::Distributed, 899.9), Some(Mode::InProcess));
        // A fast distributed pipeline and a slow in-process one stay put.
        assert_eq!(to(Mode::Distributed, 1e9), None);
        assert_eq!(to(Mode::InProcess, 0.0), None);
        match policy(Mode::InProcess, 2000.0, &config) {
            Some((_, SwitchReason::ThroughputAbove { rate, threshold })) => {
                assert_eq!((rate, threshold), (2000.0, 1100.0));
            }
            other => panic!("{other:?}"),
        }
        let flat = HybridConfig {
            enable_hysteresis: false,
            ..config
        };
        assert_eq!(
            policy(Mode::InProcess, 1000.5, &flat).map(|(to, _)| to),
            Some(Mode::Distributed)
        );
    }

    #[test]
    fn rate_needs_a_full_window_then_tracks_the_last_one() {
        let t = Instant::now();
        let ms = Duration::from_millis;
        let mut w = RateWindow::new(ms(1000));
        w.record(t, 0);
        w.record(t + ms(500), 500);
        assert_eq!(w.rate(), None, "half a window");
        w.record(t + ms(1000), 1000);
        assert_eq!(w.rate(), Some(1000.0));
        // Rate jumps to 10,000/s for the next second: the window forgets the
        // old samples and reports the new rate alone.
        for k in 1..=10 {
            w.record(t + ms(1000 + 100 * k), 1000 + 1000 * k);
        }
        let rate = w.rate().unwrap();
        assert!((rate - 10_000.0).abs() < 1e-6, "{rate}");
        w.clear();
        assert_eq!(w.rate(), None);
    }
}
