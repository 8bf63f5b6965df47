//! A network edge, against its peers, in one run (issue "beyond one
//! host"):
//!
//! - **throughput**: 20 M `u64`s from a source on one host to a sink on
//!   another, in runs of 4 KiB and of 64 KiB: ringweave's Zenoh edge
//!   (`run_on`, two hosts as two peer sessions of this process over TCP on
//!   127.0.0.1) against a plain `TcpStream` carrying the same runs (each
//!   the rkyv archive of a `Vec<u64>`, length-prefixed, validated and
//!   deserialized on arrival), and against the shared-memory ring (the
//!   same source and sink with a pass-through stage in a forked worker:
//!   two crossings). Rates are timed at the receiving sink, first item to
//!   last; contenders alternate within each round, ratios are per round.
//!   Targets: Zenoh edge ≥ 0.5 × the `TcpStream`, and ≥ 50 M items/s;
//! - **round trip**: one item out and back (host 0 → a stage on host 1 →
//!   the sink on host 0), pushed through an `Input` and awaited at the
//!   sink, against the same over a `TcpStream` (a one-item run each way)
//!   and through a worker process (shared-memory rings).
//!
//! `cargo bench -p ringweave-benches --bench cluster` (`CLUSTER_ITEMS`,
//! default 20 M; `CLUSTER_ROUNDS`, default 5; `CLUSTER_TRIPS`, default
//! 2000; `CLUSTER_RUN_KIB`, run sizes in KiB, default `4,64`).

#[path = "common/report.rs"]
mod common;

use common::{quantile, sorted, summary, write_extra};
use ringweave::{Cluster, ExecutionMode, Pipeline};
use rkyv::util::AlignedVec;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Two free loopback locators.
fn locators() -> Vec<String> {
    let listeners: Vec<_> = (0..2)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind"))
        .collect();
    listeners
        .iter()
        .map(|l| format!("tcp/127.0.0.1:{}", l.local_addr().unwrap().port()))
        .collect()
}

/// A cluster name no other run of this bench uses.
fn name() -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    format!(
        "bench-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// A sink that notes when the first and the last of `n` items arrived and
/// checks their sum.
fn timed_sink(n: u64) -> (impl FnMut(u64) + Send + 'static, mpsc::Receiver<f64>) {
    let (tx, rx) = mpsc::channel();
    let (mut count, mut sum, mut first) = (0u64, 0u64, None);
    // The clock is read at the first and the last item only: a clock read
    // per item (about 25 ns on this VM) once capped the sink itself.
    let sink = move |x: u64| {
        if count == 0 {
            first = Some(Instant::now());
        }
        count += 1;
        sum = sum.wrapping_add(x);
        if count == n {
            let now = Instant::now();
            assert_eq!(sum, n * (n - 1) / 2, "the sink's sum");
            let _ = tx.send((n - 1) as f64 / (now - first.unwrap()).as_secs_f64());
        }
    };
    (sink, rx)
}

/// Items/s through a Zenoh edge: source on host 0, sink on host 1.
fn zenoh_rate(n: u64, run_bytes: usize) -> f64 {
    let (locators, name) = (locators(), name());
    let (rate_tx, rate_rx) = mpsc::channel();
    let hosts: Vec<_> = (0..2)
        .map(|host| {
            let cluster = Cluster::new(name.clone(), host, locators.clone())
                .place("sink", 1)
                .run_bytes(run_bytes);
            let rate_tx = rate_tx.clone();
            thread::spawn(move || {
                let (sink, rate) = timed_sink(n);
                Pipeline::from_iter(0..n)
                    .sink(sink)
                    .run_on(&cluster)
                    .expect("cluster run");
                if host == 1 {
                    rate_tx.send(rate.recv().expect("rate")).unwrap();
                }
            })
        })
        .collect();
    hosts.into_iter().for_each(|h| h.join().unwrap());
    rate_rx.recv().unwrap()
}

/// Sends `items` as one length-prefixed rkyv run.
fn send_run(stream: &mut TcpStream, items: &[u64]) {
    let bytes = rkyv::to_bytes::<rkyv::rancor::Error>(&items.to_vec()).expect("archive");
    stream
        .write_all(&(bytes.len() as u32).to_le_bytes())
        .unwrap();
    stream.write_all(&bytes).unwrap();
}

/// Receives one run (validated), or `None` at the end of the stream.
fn recv_run(stream: &mut TcpStream, buf: &mut AlignedVec<16>) -> Option<Vec<u64>> {
    let mut len = [0u8; 4];
    stream.read_exact(&mut len).ok()?;
    buf.clear();
    buf.resize(u32::from_le_bytes(len) as usize, 0);
    stream.read_exact(buf).unwrap();
    Some(rkyv::from_bytes::<Vec<u64>, rkyv::rancor::Error>(buf).expect("valid run"))
}

/// Items/s through a plain `TcpStream` carrying the same runs.
fn tcp_rate(n: u64, run_bytes: usize) -> f64 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let per_run = run_bytes / 8;
    let sender = thread::spawn(move || {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream.set_nodelay(true).unwrap();
        let mut run = Vec::with_capacity(per_run);
        for x in 0..n {
            run.push(x);
            if run.len() == per_run {
                send_run(&mut stream, &run);
                run.clear();
            }
        }
        send_run(&mut stream, &run);
    });
    let (mut stream, _) = listener.accept().unwrap();
    let mut buf = AlignedVec::<16>::new();
    let (mut count, mut sum, mut first) = (0u64, 0u64, None);
    let mut last = Instant::now();
    while let Some(run) = recv_run(&mut stream, &mut buf) {
        let now = Instant::now();
        first.get_or_insert(now);
        last = now;
        count += run.len() as u64;
        sum = run.iter().fold(sum, |s, x| s.wrapping_add(*x));
    }
    sender.join().unwrap();
    assert_eq!((count, sum), (n, n * (n - 1) / 2));
    n as f64 / (last - first.unwrap()).as_secs_f64()
}

/// Items/s through bare Zenoh: two peer sessions, a blocking publisher
/// putting the same runs (archived on the sending thread), a subscriber
/// validating and deserializing each in its callback — what any edge over
/// Zenoh costs before ringweave's stages and credit.
fn raw_zenoh_rate(n: u64, run_bytes: usize) -> f64 {
    use zenoh::Wait;
    let locators = locators();
    let key = format!("ringweave-bench/{}/raw", name());
    let open = |listen: &str, connect: Option<&str>| {
        let mut config = zenoh::Config::default();
        config.insert_json5("mode", "\"peer\"").unwrap();
        config
            .insert_json5("listen/endpoints", &format!("[\"{listen}\"]"))
            .unwrap();
        if let Some(peer) = connect {
            config
                .insert_json5("connect/endpoints", &format!("[\"{peer}\"]"))
                .unwrap();
        }
        config
            .insert_json5("scouting/multicast/enabled", "false")
            .unwrap();
        zenoh::open(config).wait().unwrap()
    };
    let receiver = open(&locators[0], None);
    let sender = open(&locators[1], Some(&locators[0]));
    let (done_tx, done) = mpsc::channel();
    let state = Mutex::new((0u64, None::<Instant>));
    let _subscriber = receiver
        .declare_subscriber(&key)
        .callback(move |sample| {
            let bytes = sample.payload().to_bytes();
            let mut aligned = AlignedVec::<16>::new();
            aligned.extend_from_slice(&bytes);
            let run =
                rkyv::from_bytes::<Vec<u64>, rkyv::rancor::Error>(&aligned).expect("valid run");
            let mut state = state.lock().unwrap();
            let first = *state.1.get_or_insert_with(Instant::now);
            state.0 += run.len() as u64;
            if state.0 == n {
                let _ = done_tx.send(n as f64 / first.elapsed().as_secs_f64());
            }
        })
        .wait()
        .unwrap();
    let publisher = sender
        .declare_publisher(&key)
        .congestion_control(zenoh::qos::CongestionControl::Block)
        .wait()
        .unwrap();
    while !publisher.matching_status().wait().unwrap().matching() {
        thread::sleep(Duration::from_millis(1));
    }
    let per_run = run_bytes / 8;
    let mut run = Vec::with_capacity(per_run);
    for x in 0..n {
        run.push(x);
        if run.len() == per_run || x == n - 1 {
            let bytes = rkyv::to_bytes::<rkyv::rancor::Error>(&run).expect("archive");
            publisher.put(bytes.into_vec()).wait().unwrap();
            run.clear();
        }
    }
    let rate = done.recv().unwrap();
    drop(publisher);
    sender.close().wait().unwrap();
    receiver.close().wait().unwrap();
    rate
}

/// Items/s from a source to a sink through a worker process (two shared
/// memory crossings).
fn shm_rate(n: u64) -> f64 {
    let (sink, rate) = timed_sink(n);
    Pipeline::from_iter(0..n)
        .map("pass", |x| x)
        .mode(ExecutionMode::Distributed)
        .sink(sink)
        .run()
        .expect("run");
    rate.recv().unwrap()
}

/// Round trips through `push` and the sink's channel, in µs.
fn trips(trips: u64, mut push: impl FnMut(u64), back: &mpsc::Receiver<u64>) -> Vec<f64> {
    let mut out = Vec::with_capacity(trips as usize);
    for i in 0..trips + 100 {
        let t = Instant::now();
        push(i);
        assert_eq!(back.recv().unwrap(), i);
        if i >= 100 {
            out.push(t.elapsed().as_secs_f64() * 1e6);
        }
    }
    sorted(out)
}

/// Round trips host 0 → `echo` on host 1 → the sink on host 0.
fn zenoh_trips(n: u64) -> Vec<f64> {
    let (locators, name) = (locators(), name());
    let (back_tx, back) = mpsc::channel();
    let input = Arc::new(Mutex::new(None));
    let hosts: Vec<_> = (0..2)
        .map(|host| {
            let cluster = Cluster::new(name.clone(), host, locators.clone()).place("echo", 1);
            let (back_tx, input) = (back_tx.clone(), Arc::clone(&input));
            thread::spawn(move || {
                let (push, p) = Pipeline::<u64>::with_input();
                if host == 0 {
                    *input.lock().unwrap() = Some(push);
                }
                p.map("echo", |x| x)
                    .sink(move |x| {
                        let _ = back_tx.send(x);
                    })
                    .run_on(&cluster)
                    .expect("cluster run");
            })
        })
        .collect();
    let mut push = loop {
        if let Some(push) = input.lock().unwrap().take() {
            break push;
        }
        thread::sleep(Duration::from_millis(1));
    };
    let out = trips(n, |i| push.push(i).unwrap(), &back);
    drop(push);
    hosts.into_iter().for_each(|h| h.join().unwrap());
    out
}

/// Round trips over a `TcpStream`: a one-item run out, decoded, sent back.
fn tcp_trips(n: u64) -> Vec<f64> {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let echo = thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        stream.set_nodelay(true).unwrap();
        let mut buf = AlignedVec::<16>::new();
        while let Some(run) = recv_run(&mut stream, &mut buf) {
            send_run(&mut stream, &run);
        }
    });
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_nodelay(true).unwrap();
    let mut reader = stream.try_clone().unwrap();
    let (tx, back) = mpsc::channel();
    let receiver = thread::spawn(move || {
        let mut buf = AlignedVec::<16>::new();
        while let Some(run) = recv_run(&mut reader, &mut buf) {
            let _ = tx.send(run[0]);
        }
    });
    let out = trips(n, |i| send_run(&mut stream, &[i]), &back);
    stream.shutdown(std::net::Shutdown::Both).unwrap();
    echo.join().unwrap();
    receiver.join().unwrap();
    out
}

/// Round trips through a worker process.
fn shm_trips(n: u64) -> Vec<f64> {
    let (back_tx, back) = mpsc::channel();
    let (mut push, p) = Pipeline::<u64>::with_input();
    let handle = p
        .map("echo", |x| x)
        .mode(ExecutionMode::Distributed)
        .sink(move |x| {
            let _ = back_tx.send(x);
        })
        .spawn()
        .expect("spawn");
    let out = trips(n, |i| push.push(i).unwrap(), &back);
    drop(push);
    handle.join().expect("run");
    out
}

fn main() {
    // criterion's arguments (`--bench`) are not ours.
    let n = env("CLUSTER_ITEMS", 20_000_000);
    let rounds = env("CLUSTER_ROUNDS", 5);
    let trip_count = env("CLUSTER_TRIPS", 2_000);
    let mut lines = vec![format!(
        "{n} u64 items a run, {rounds} rounds; Zenoh 1.10, two peer sessions of one process over TCP on 127.0.0.1, reliable, `CongestionControl::Block`."
    )];
    lines.push(String::new());
    lines.push("| contender | run size | items/s per round (M) | median |".into());
    lines.push("|---|---|---|---|".into());
    let mut ratio_lines = Vec::new();
    let mut zenoh_medians = Vec::new();
    let sizes: Vec<usize> = std::env::var("CLUSTER_RUN_KIB")
        .ok()
        .map(|v| v.split(',').filter_map(|k| k.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![4, 64]);
    for run_bytes in sizes.iter().map(|k| k * 1024) {
        let (mut z, mut t, mut s, mut ratios) = (vec![], vec![], vec![], vec![]);
        let mut raw = vec![];
        for round in 0..rounds {
            let (zr, tr) = if round % 2 == 0 {
                let zr = zenoh_rate(n, run_bytes);
                (zr, tcp_rate(n, run_bytes))
            } else {
                let tr = tcp_rate(n, run_bytes);
                (zenoh_rate(n, run_bytes), tr)
            };
            raw.push(raw_zenoh_rate(n, run_bytes));
            if run_bytes == *sizes.iter().max().unwrap() * 1024 {
                s.push(shm_rate(n));
            }
            eprintln!(
                "{} KiB round {round}: zenoh {:.1} M/s, tcp {:.1} M/s",
                run_bytes / 1024,
                zr / 1e6,
                tr / 1e6
            );
            z.push(zr);
            t.push(tr);
            ratios.push(zr / tr);
        }
        let kib = run_bytes / 1024;
        let mut row = |what: &str, rates: &[f64]| {
            let each: Vec<String> = rates.iter().map(|r| format!("{:.1}", r / 1e6)).collect();
            let median = quantile(&sorted(rates.to_vec()), 0.5);
            lines.push(format!(
                "| {what} | {kib} KiB | {} | **{:.1} M** |",
                each.join(", "),
                median / 1e6
            ));
            median
        };
        zenoh_medians.push((kib, row("ringweave Zenoh edge (`run_on`)", &z)));
        row("`TcpStream`, same runs", &t);
        row(
            "bare Zenoh pub/sub, same runs (the floor of any Zenoh edge)",
            &raw,
        );
        if !s.is_empty() {
            row("shared-memory ring (via a worker: 2 crossings)", &s);
        }
        ratio_lines.push(format!(
            "- Zenoh edge / `TcpStream`, {kib} KiB runs, paired: {}",
            summary(&sorted(ratios), 2, 0.5)
        ));
        let floor: Vec<f64> = raw.iter().zip(&t).map(|(r, t)| r / t).collect();
        ratio_lines.push(format!(
            "- bare Zenoh / `TcpStream`, {kib} KiB runs (what Zenoh itself reaches of the target), paired: {}",
            summary(&sorted(floor), 2, 0.5)
        ));
        let of_floor: Vec<f64> = z.iter().zip(&raw).map(|(z, r)| z / r).collect();
        ratio_lines.push(format!(
            "- Zenoh edge / bare Zenoh, {kib} KiB runs (ringweave's share of the gap), paired: {}",
            summary(&sorted(of_floor), 2, 0.8)
        ));
    }
    lines.push(String::new());
    lines.extend(ratio_lines);
    for (kib, median) in zenoh_medians {
        let verdict = if median >= 50e6 { "met" } else { "**missed**" };
        lines.push(format!(
            "- Zenoh edge end to end, {kib} KiB runs: median {:.1} M items/s; target ≥ 50 M: {verdict}.",
            median / 1e6
        ));
    }
    lines.push(String::new());
    lines.push(format!(
        "Round trip of one item ({trip_count} trips after 100 of warm-up), µs:"
    ));
    lines.push(String::new());
    lines.push("| path | p50 | p90 | p99 |".into());
    lines.push("|---|---|---|---|".into());
    for (what, t) in [
        (
            "ringweave: host 0 → stage on host 1 → sink on host 0, Zenoh",
            zenoh_trips(trip_count),
        ),
        (
            "`TcpStream` ping-pong, one-item rkyv runs",
            tcp_trips(trip_count),
        ),
        (
            "ringweave: `Input` → stage in a worker process → sink, shared memory",
            shm_trips(trip_count),
        ),
    ] {
        lines.push(format!(
            "| {what} | {:.1} | {:.1} | {:.1} |",
            quantile(&t, 0.5),
            quantile(&t, 0.9),
            quantile(&t, 0.99)
        ));
    }
    for line in &lines {
        println!("{line}");
    }
    write_extra("cluster", "cluster", &lines);
}
