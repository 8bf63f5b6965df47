//! In-process pipelines against the same computation done with plain
//! iterators, failure propagation and configuration checks.

mod hybrid_support;

use hybrid_support::collector;
use ringweave::{Error, ExecutionMode, HybridConfig, Pipeline};
use std::sync::{Arc, Mutex};

fn take<T>(out: Arc<Mutex<Vec<T>>>) -> Vec<T> {
    std::mem::take(&mut *out.lock().unwrap())
}

const N: u64 = if cfg!(debug_assertions) {
    200_000
} else {
    2_000_000
};

#[test]
fn every_stage_kind_matches_iterators() {
    for &(capacity, batch) in &[(2usize, 1usize), (4, 3), (64, 256), (4096, 256)] {
        let (out, sink) = collector();
        let report = Pipeline::from_iter(0..N)
            .map("double", |x| x * 2)
            .filter("div3", |x| x % 3 == 0)
            .flat_map("pair", |x| [x, x + 1])
            .stateful("running_sum", 0u64, |s, x| {
                *s = s.wrapping_add(x);
                Some(*s)
            })
            .ring_capacity(capacity)
            .batch_size(batch)
            .sink(sink)
            .run()
            .unwrap();
        let expected: Vec<u64> = (0..N)
            .map(|x| x * 2)
            .filter(|x| x % 3 == 0)
            .flat_map(|x| [x, x + 1])
            .scan(0u64, |s, x| {
                *s = s.wrapping_add(x);
                Some(*s)
            })
            .collect();
        let got = take(out);
        assert_eq!(
            got.len(),
            expected.len(),
            "capacity {capacity} batch {batch}"
        );
        assert!(
            got == expected,
            "capacity {capacity} batch {batch}: sequences differ"
        );
        assert_eq!(report.items_produced, N);
        assert_eq!(report.items_delivered, expected.len() as u64);
        let names: Vec<&str> = report.stages.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            ["source", "double", "div3", "pair", "running_sum", "sink"]
        );
        let div3 = &report.stages[2];
        assert_eq!(div3.items_in, N);
        assert_eq!(
            div3.items_out,
            (0..N).filter(|x| (x * 2) % 3 == 0).count() as u64
        );
        assert_eq!(report.stages[3].items_out, 2 * div3.items_out);
    }
}

#[test]
fn heap_items_and_fan_out_larger_than_ring() {
    // flat_map emits 10 outputs per input into a ring of 2: the stage must
    // keep the overflow in order and never drop or reorder.
    let (out, sink) = collector();
    Pipeline::from_iter((0..2_000u32).map(|i| format!("item-{i}")))
        .flat_map("explode", |s: String| {
            (0..10).map(move |k| format!("{s}/{k}"))
        })
        .filter("not7", |s: &String| !s.ends_with("/7"))
        .map("len", |s: String| (s.len(), s))
        .ring_capacity(2)
        .batch_size(3)
        .sink(sink)
        .run()
        .unwrap();
    let expected: Vec<(usize, String)> = (0..2_000u32)
        .map(|i| format!("item-{i}"))
        .flat_map(|s| (0..10).map(move |k| format!("{s}/{k}")))
        .filter(|s| !s.ends_with("/7"))
        .map(|s| (s.len(), s))
        .collect();
    assert_eq!(take(out), expected);
}

#[test]
fn zero_and_one_item() {
    for n in [0u64, 1] {
        let (out, sink) = collector();
        let report = Pipeline::from_iter(0..n)
            .map("inc", |x| x + 1)
            .sink(sink)
            .run()
            .unwrap();
        assert_eq!(take(out), (0..n).map(|x| x + 1).collect::<Vec<_>>());
        assert_eq!(report.items_produced, n);
        assert_eq!(report.items_delivered, n);
    }
    // No transform at all: source straight into the sink.
    let (out, sink) = collector();
    Pipeline::from_iter(0..5u8).sink(sink).run().unwrap();
    assert_eq!(take(out), vec![0, 1, 2, 3, 4]);
}

#[test]
fn panic_in_a_transform_names_the_stage() {
    // The source is endless: the run can only end because the panic stops it.
    let err = Pipeline::from_iter(0u64..)
        .map("ok", |x| x + 1)
        .map("boom", |x| {
            if x == 5_000 {
                panic!("item {x} is cursed");
            }
            x
        })
        .map("after", |x| x)
        .ring_capacity(16)
        .sink(|_| {})
        .run()
        .unwrap_err();
    match err {
        Error::StagePanicked { stage, message } => {
            assert_eq!(stage, "boom");
            assert_eq!(message, "item 5000 is cursed");
        }
        other => panic!("unexpected error {other}"),
    }
}

#[test]
fn panic_in_source_and_sink() {
    let err = Pipeline::from_iter((0u64..).inspect(|&x| {
        assert!(x < 1_000, "source ran dry at {x}");
    }))
    .map("id", |x| x)
    .sink(|_| {})
    .run()
    .unwrap_err();
    assert!(
        matches!(&err, Error::StagePanicked { stage, message } if stage == "source" && message == "source ran dry at 1000"),
        "{err}"
    );

    let err = Pipeline::from_iter(0u64..)
        .map("id", |x| x)
        .sink(|x| assert!(x < 777, "sink refuses {x}"))
        .run()
        .unwrap_err();
    assert!(
        matches!(&err, Error::StagePanicked { stage, message } if stage == "sink" && message == "sink refuses 777"),
        "{err}"
    );
}

#[test]
fn dropping_the_handle_stops_an_endless_pipeline() {
    let (out, sink) = collector::<u64>();
    let handle = Pipeline::from_iter(0u64..)
        .map("id", |x| x)
        .ring_capacity(8)
        .sink(sink)
        .spawn()
        .unwrap();
    // Wait until items flow, then drop: drop returns only once every thread
    // has stopped.
    while handle.stage_counts().last().unwrap().1 < 1_000 {
        std::thread::yield_now();
    }
    drop(handle);
    let got = take(out);
    assert!(got.len() >= 1_000);
    assert!(
        got.iter().copied().eq(0..got.len() as u64),
        "prefix in order"
    );
}

#[test]
fn invalid_configuration_is_rejected_with_the_field() {
    let field_of = |e: Error| match e {
        Error::InvalidConfig { field, reason } => {
            assert!(!reason.is_empty());
            field
        }
        other => panic!("unexpected {other}"),
    };
    let run = |p: ringweave::CompletePipeline| p.spawn().map(|_| ()).unwrap_err();
    assert_eq!(
        field_of(run(Pipeline::from_iter(0..1u8)
            .ring_capacity(1000)
            .sink(|_| {}))),
        "ring_capacity"
    );
    assert_eq!(
        field_of(run(Pipeline::from_iter(0..1u8)
            .ring_capacity(1)
            .sink(|_| {}))),
        "ring_capacity"
    );
    assert_eq!(
        field_of(run(Pipeline::from_iter(0..1u8).batch_size(0).sink(|_| {}))),
        "batch_size"
    );
    let hybrid = |c: HybridConfig| {
        Pipeline::from_iter(0..1u8)
            .mode(ExecutionMode::Hybrid(c))
            .sink(|_| {})
    };
    assert_eq!(
        field_of(run(hybrid(HybridConfig {
            local_threshold: 0,
            ..Default::default()
        }))),
        "local_threshold"
    );
    assert_eq!(
        field_of(run(hybrid(HybridConfig {
            window_size_ms: 50,
            monitoring_interval_ms: 100,
            ..Default::default()
        }))),
        "window_size_ms"
    );
    assert_eq!(
        field_of(run(Pipeline::from_iter(0..1u8)
            .map("x", |x| x)
            .map("x", |x| x)
            .sink(|_| {}))),
        "stage name"
    );
    let msg = HybridConfig {
        window_size_ms: 50,
        ..Default::default()
    }
    .validate()
    .unwrap_err()
    .to_string();
    assert!(msg.contains("50") && msg.contains("100"), "{msg}");
}

/// An item that counts how many of it exist.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug)]
struct Counted(u64);

static LIVE: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(0);

impl Counted {
    fn new(x: u64) -> Self {
        LIVE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Counted(x)
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        LIVE.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

#[test]
fn a_panicking_map_drops_every_item_exactly_once() {
    // The map's batch path moves items slot to slot; a panic in the middle
    // of a batch must release what was taken and publish what was written.
    for capacity in [2usize, 64, 4096] {
        let err = Pipeline::from_iter((0..50_000u64).map(Counted::new))
            .map("boom", |c: Counted| {
                assert!(c.0 != 20_000, "cursed item");
                Counted::new(c.0 + 1)
            })
            .map("again", |c: Counted| Counted::new(c.0))
            .ring_capacity(capacity)
            .sink(drop)
            .run()
            .unwrap_err();
        assert!(
            matches!(err, Error::StagePanicked { ref stage, .. } if stage == "boom"),
            "{err}"
        );
        assert_eq!(
            LIVE.load(std::sync::atomic::Ordering::Relaxed),
            0,
            "capacity {capacity}"
        );
    }
}
