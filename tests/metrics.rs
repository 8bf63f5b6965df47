//! Metrics snapshots, latency sampling and the Prometheus rendering.

use ringweave::{ExecutionMode, HybridConfig, Mode, Pipeline};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

const N: u64 = if cfg!(debug_assertions) {
    200_000
} else {
    2_000_000
};

/// Checks the text exposition format line by line: every sample belongs to
/// a family announced by exactly one HELP and one TYPE line before it, names
/// start with `ringweave_`, values parse as floats. Returns the samples.
fn parse_prometheus(text: &str) -> HashMap<String, f64> {
    let mut help = HashSet::new();
    let mut types = HashMap::new();
    let mut samples = HashMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split_whitespace().next().unwrap();
            assert!(help.insert(name.to_owned()), "second HELP for {name}");
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            let (name, kind) = (parts.next().unwrap(), parts.next().unwrap());
            assert!(["counter", "gauge", "summary", "histogram", "untyped"].contains(&kind));
            assert!(
                types.insert(name.to_owned(), kind.to_owned()).is_none(),
                "second TYPE for {name}"
            );
        } else {
            assert!(
                !line.is_empty() && !line.starts_with('#'),
                "stray line {line:?}"
            );
            let (series, value) = line.rsplit_once(' ').unwrap();
            let value: f64 = value
                .parse()
                .unwrap_or_else(|_| panic!("bad value in {line:?}"));
            let name = series.split('{').next().unwrap();
            assert!(name.starts_with("ringweave_"), "{name}");
            let family = ["_sum", "_count"]
                .iter()
                .find_map(|suffix| {
                    name.strip_suffix(suffix)
                        .filter(|f| types.get(*f).is_some_and(|k| k == "summary"))
                })
                .unwrap_or(name);
            assert!(
                types.contains_key(family) && help.contains(family),
                "{name} before its HELP/TYPE"
            );
            if let Some(labels) = series.strip_prefix(name) {
                if !labels.is_empty() {
                    assert!(labels.starts_with('{') && labels.ends_with('}'), "{line}");
                }
            }
            samples.insert(series.to_owned(), value);
        }
    }
    assert_eq!(help.len(), types.len());
    samples
}

#[test]
fn report_metrics_match_the_sink_and_render_as_prometheus() {
    let delivered = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&delivered);
    let report = Pipeline::from_iter(0..N)
        .map("double", |x: u64| x * 2)
        .filter("even", |x: &u64| x % 4 == 0)
        .sink(move |_| {
            counter.fetch_add(1, Ordering::Relaxed);
        })
        .run()
        .unwrap();
    let sunk = delivered.load(Ordering::Relaxed);
    let m = &report.metrics;
    assert_eq!(m.stages.last().unwrap().items_in, sunk);
    assert_eq!(report.items_delivered, sunk);
    assert_eq!(m.stages[0].items_out, N);
    assert_eq!(m.edges.len(), 3);
    assert_eq!(m.mode, Mode::InProcess);
    assert!(m.latency.samples > 0, "the source stamps items");
    assert!(m.latency.p50 <= m.latency.p99 && m.latency.p99 <= m.latency.max);
    let samples = parse_prometheus(&m.to_prometheus());
    assert_eq!(
        samples["ringweave_stage_items_in_total{stage=\"sink\"}"],
        sunk as f64
    );
    assert_eq!(
        samples["ringweave_stage_items_out_total{stage=\"source\"}"],
        N as f64
    );
    assert_eq!(samples["ringweave_mode{mode=\"in_process\"}"], 1.0);
    assert_eq!(
        samples["ringweave_latency_seconds_count"],
        m.latency.samples as f64
    );
}

#[test]
fn live_metrics_follow_a_switch() {
    let handle = Pipeline::from_iter(0u64..)
        .map("id", |x: u64| x)
        .mode(ExecutionMode::Hybrid(HybridConfig {
            local_threshold: usize::MAX / 4,
            monitoring_interval_ms: 10,
            window_size_ms: 20,
            // The threshold is out of reach, so in distributed mode the
            // policy would move back at its first full window — racing the
            // reads below. The cooldown after the manual switch holds it off.
            cooldown_ms: 600_000,
            ..Default::default()
        }))
        .sink(|_| {})
        .spawn()
        .unwrap();
    let event = handle.switch_to(Mode::Distributed).unwrap();
    assert_eq!(
        event.outcome,
        ringweave::SwitchOutcome::Completed,
        "{event:?}"
    );
    // Wait (bounded by progress, not time) until a full window has passed
    // after the switch, so its after-effect is measured.
    let impact = loop {
        let m = handle.metrics();
        if let Some(rate) = m.switches[0].rate_after {
            assert_eq!(m.mode, Mode::Distributed);
            break (m.switches[0].clone(), rate);
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    };
    assert!(impact.1 > 0.0, "items flow after the switch");
    assert_eq!(impact.0.event.to, Mode::Distributed);
    let text = handle.metrics().to_prometheus();
    let samples = parse_prometheus(&text);
    assert_eq!(samples["ringweave_mode{mode=\"distributed\"}"], 1.0);
    assert_eq!(
        samples["ringweave_switches_total{to=\"distributed\",outcome=\"completed\"}"],
        1.0
    );
    drop(handle);
}
