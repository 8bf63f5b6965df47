//! The automatic switching policy of `ExecutionMode::Hybrid`: a source whose
//! rate ramps up across `local_threshold` and back down moves the pipeline
//! out (`ThroughputAbove`) and back (`ThroughputBelow`) with the output still
//! exact; with hysteresis a rate between 0.9× and 1.1× the threshold moves it
//! neither way.
//!
//! Rates are set far from the thresholds (a noisy two-core machine), and the
//! phases are driven by counters and by the handle's worker list, never by
//! sleeping and hoping. The source runs in this process, so it reads the
//! test's phase word directly.

use ringweave::{
    ExecutionMode, HybridConfig, Mode, Pipeline, PipelineHandle, SwitchEvent, SwitchOutcome,
    SwitchReason,
};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// Bound on any wait: far beyond what a healthy run needs.
const PATIENCE: Duration = Duration::from_secs(120);

fn wait_until(what: &str, handle: &PipelineHandle, mut done: impl FnMut(&PipelineHandle) -> bool) {
    let start = Instant::now();
    while !done(handle) {
        assert!(
            start.elapsed() < PATIENCE,
            "waited in vain for {what}: {:?}, workers {:?}",
            handle.stage_counts(),
            handle.worker_pids()
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn produced(handle: &PipelineHandle) -> u64 {
    handle.stage_counts()[0].2
}

/// A source of `0, 1, 2, …` paced at `rate` items/s (read before every
/// item; 0 ends the stream). Each item is due at a fixed point of a
/// schedule, so the average rate holds even when a sleep overshoots.
struct Paced {
    rate: Arc<AtomicU64>,
    current: u64,
    next_due: Instant,
    next: u64,
}

impl Paced {
    fn new(rate: &Arc<AtomicU64>) -> Self {
        Self {
            rate: Arc::clone(rate),
            current: 0,
            next_due: Instant::now(),
            next: 0,
        }
    }
}

/// Unpaced: as fast as the pipeline takes items.
const FLAT_OUT: u64 = u64::MAX;

impl Iterator for Paced {
    type Item = u64;

    fn next(&mut self) -> Option<u64> {
        let rate = self.rate.load(Ordering::Relaxed);
        if rate == 0 {
            return None;
        }
        if rate != FLAT_OUT {
            if rate != self.current {
                self.current = rate;
                self.next_due = Instant::now();
            }
            let now = Instant::now();
            if self.next_due > now {
                std::thread::sleep(self.next_due - now);
            }
            self.next_due += Duration::from_secs_f64(1.0 / rate as f64);
        } else {
            self.current = rate;
        }
        self.next += 1;
        Some(self.next - 1)
    }
}

fn step(s: &mut u64, x: u64) -> Option<u64> {
    *s = s.wrapping_mul(0x9e37_79b9_7f4a_7c15).wrapping_add(x);
    (*s % 3 != 0).then_some(*s)
}

fn expected(n: u64) -> Vec<u64> {
    (0..n)
        .map(|x| x * 5)
        .filter(|x| x % 7 != 0)
        .scan(0u64, |s, x| Some(step(s, x)))
        .flatten()
        .collect()
}

/// `Paced` source → map → filter → stateful, collected.
fn spawn(rate: &Arc<AtomicU64>, config: HybridConfig) -> (PipelineHandle, Arc<Mutex<Vec<u64>>>) {
    let out = Arc::new(Mutex::new(Vec::new()));
    let sink_out = Arc::clone(&out);
    let handle = Pipeline::from_iter(Paced::new(rate))
        .map("times5", |x: u64| x * 5)
        .filter("not7", |x: &u64| x % 7 != 0)
        .stateful("mix", 0u64, step)
        .mode(ExecutionMode::Hybrid(config))
        .batch_size(8)
        .sink(move |x| sink_out.lock().unwrap().push(x))
        .spawn()
        .unwrap();
    (handle, out)
}

fn is_above(e: &SwitchEvent) -> bool {
    matches!(e.reason, SwitchReason::ThroughputAbove { rate, threshold } if rate > threshold)
}

fn is_below(e: &SwitchEvent) -> bool {
    matches!(e.reason, SwitchReason::ThroughputBelow { rate, threshold } if rate < threshold)
}

/// ~1k items/s, then flat out (hundreds of thousands per second even in a
/// debug build), then ~1k items/s again, against a threshold of 20k/s.
#[test]
fn rate_ramp_switches_out_and_back() {
    let threshold = 20_000;
    let rate = Arc::new(AtomicU64::new(1_000));
    let (handle, out) = spawn(
        &rate,
        HybridConfig {
            local_threshold: threshold,
            monitoring_interval_ms: 10,
            window_size_ms: 100,
            switch_timeout_ms: 5_000,
            enable_hysteresis: true,
            cooldown_ms: 50,
        },
    );
    // Low: several windows at ~1k/s; nothing may happen.
    wait_until("a low phase", &handle, |h| produced(h) >= 400);
    assert_eq!(handle.worker_pids(), vec![]);

    let high_from = SystemTime::now();
    rate.store(FLAT_OUT, Ordering::Relaxed);
    wait_until("the switch out", &handle, |h| !h.worker_pids().is_empty());
    let then = produced(&handle);
    wait_until("a high phase while distributed", &handle, |h| {
        produced(h) >= then + 50_000
    });

    let low_from = SystemTime::now();
    rate.store(1_000, Ordering::Relaxed);
    wait_until("the switch back", &handle, |h| h.worker_pids().is_empty());
    let then = produced(&handle);
    wait_until("a low phase in-process", &handle, |h| {
        produced(h) >= then + 200
    });
    rate.store(0, Ordering::Relaxed);

    let report = handle.join().unwrap();
    let got = std::mem::take(&mut *out.lock().unwrap());
    let expected = expected(report.items_produced);
    assert_eq!(got.len(), expected.len());
    assert!(got == expected, "sequence differs");

    let events = &report.switches;
    eprintln!("{events:#?}");
    assert!(events.len() >= 2, "{events:#?}");
    let first = &events[0];
    assert!(first.at >= high_from, "a switch during the first low phase");
    assert_eq!((first.from, first.to), (Mode::InProcess, Mode::Distributed));
    assert!(is_above(first), "{first:?}");
    if let SwitchReason::ThroughputAbove { threshold: t, .. } = first.reason {
        assert!(
            (t - 1.1 * threshold as f64).abs() < 1.0,
            "upper threshold {t}"
        );
    }
    let last = events.last().unwrap();
    assert!(last.at >= low_from, "{last:?}");
    assert_eq!((last.from, last.to), (Mode::Distributed, Mode::InProcess));
    assert!(is_below(last), "{last:?}");
    if let SwitchReason::ThroughputBelow { threshold: t, .. } = last.reason {
        assert!(
            (t - 0.9 * threshold as f64).abs() < 1.0,
            "lower threshold {t}"
        );
    }
    // Any switch between the two (a dip of the distributed rate on a busy
    // machine) must still alternate and complete.
    for pair in events.windows(2) {
        assert_eq!(pair[0].to, pair[1].from, "{events:#?}");
    }
    for e in events {
        assert_eq!(e.outcome, SwitchOutcome::Completed, "{e:?}");
        assert!(is_above(e) || is_below(e), "only automatic switches: {e:?}");
    }
    assert_eq!(report.final_mode, Mode::InProcess);
}

/// With hysteresis, a rate equal to the threshold (inside 0.9×..1.1×) moves
/// the pipeline neither out nor back; 3× moves it out, ¼× moves it back.
#[test]
fn hysteresis_holds_between_the_bands() {
    let threshold = 2_000u64;
    let rate = Arc::new(AtomicU64::new(threshold));
    let (handle, out) = spawn(
        &rate,
        HybridConfig {
            local_threshold: threshold as usize,
            monitoring_interval_ms: 50,
            window_size_ms: 1_000,
            switch_timeout_ms: 5_000,
            enable_hysteresis: true,
            cooldown_ms: 200,
        },
    );
    let in_band = |h: &PipelineHandle, phase: &str| {
        let measured = h.metrics().throughput;
        let t = threshold as f64;
        assert!(
            (0.9 * t..=1.1 * t).contains(&measured),
            "{phase}: the source was meant to run at the threshold, measured {measured}/s"
        );
    };

    // 1.0× in-process for two seconds: full windows, none above 1.1×.
    wait_until("two seconds at the threshold", &handle, |h| {
        produced(h) >= 2 * threshold
    });
    in_band(&handle, "in-process");
    assert_eq!(handle.worker_pids(), vec![], "switched out inside the band");

    let out_from = SystemTime::now();
    rate.store(3 * threshold, Ordering::Relaxed);
    wait_until("the switch out", &handle, |h| !h.worker_pids().is_empty());

    // 1.0× distributed for two seconds: none below 0.9×.
    rate.store(threshold, Ordering::Relaxed);
    let then = produced(&handle);
    wait_until("two seconds at the threshold", &handle, |h| {
        produced(h) >= then + 2 * threshold
    });
    in_band(&handle, "distributed");
    assert!(
        !handle.worker_pids().is_empty(),
        "switched back inside the band"
    );

    let back_from = SystemTime::now();
    rate.store(threshold / 4, Ordering::Relaxed);
    wait_until("the switch back", &handle, |h| h.worker_pids().is_empty());
    rate.store(0, Ordering::Relaxed);

    let report = handle.join().unwrap();
    let got = std::mem::take(&mut *out.lock().unwrap());
    assert!(got == expected(report.items_produced), "sequence differs");
    let events = &report.switches;
    assert_eq!(events.len(), 2, "{events:#?}");
    assert!(
        events[0].at >= out_from && is_above(&events[0]),
        "{events:#?}"
    );
    assert!(
        events[1].at >= back_from && is_below(&events[1]),
        "{events:#?}"
    );
    assert!(events.iter().all(|e| e.outcome == SwitchOutcome::Completed));
}
