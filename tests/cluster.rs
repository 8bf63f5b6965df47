//! Cluster mode: the same pipeline as 2–3 processes of this test binary on
//! loopback, each a host.
//!
//! Each test starts its hosts by running this binary again with
//! `--exact host_process` and the case in the environment; `host_process`
//! does nothing unless that is set. A host that runs the sink compares what
//! it received with the plain iterator's result and exits non-zero (with
//! the difference on stderr) if they differ; a host whose run fails prints
//! the error and exits with code 3. The parent asserts every exit and, for
//! failures, the error text; every host is killed and reaped when the test
//! ends, however it ends, and must have exited within a bound.

use ringweave::{Cluster, Error, ExecutionMode, Pipeline};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long a host may take, in a debug build on two busy cores.
const HOST_BOUND: Duration = Duration::from_secs(120);

// ---------------------------------------------------------------- the cases

/// The items a case's source yields.
fn items(case: &str) -> u64 {
    match case {
        "kill" | "panic" => 50_000_000,
        "trickle" => 300,
        _ => 200_000,
    }
}

/// What every case computes, built the same way on every host: a chain of
/// maps, a filter, a flat_map, a running (stateful) stage, a keyed stage
/// and a `String`-carrying stage, so items of several types cross hosts.
fn pipeline(case: &str, host: usize) -> ringweave::CompletePipeline {
    let (tx, rx) = mpsc::channel::<(u64, String)>();
    let n = items(case);
    let watched = host == 1 && matches!(case, "kill" | "panic");
    let panics = host == 2 && std::env::var("CLUSTER_PANIC").is_ok();
    // "recover": the worker of `mix` (host 1) kills itself once, mid-stream;
    // its host replaces it from a checkpoint and the run goes on.
    let kill_flag = (case == "recover" && host == 1).then(|| {
        std::env::temp_dir().join(format!(
            "ringweave-cluster-{}",
            std::env::var("CLUSTER_GROUP").unwrap()
        ))
    });
    // "trickle": the source (host 0) yields an item only once the sink (host
    // 0) has everything the items before it make, through stages on host 1
    // in worker processes: a run held back waiting to fill would hang it.
    let source: Box<dyn Iterator<Item = u64> + Send> = if case == "trickle" && host == 0 {
        Box::new((0..n).inspect(|&i| {
            let need: u64 = (0..i).map(|j| if keep(mix(j)) { 2 } else { 0 }).sum();
            let started = Instant::now();
            while DELIVERED.load(Ordering::Relaxed) < need {
                assert!(
                    started.elapsed() < Duration::from_secs(60),
                    "item {i}: the items before it were held back"
                );
                std::thread::sleep(Duration::from_micros(200));
            }
        }))
    } else {
        Box::new(0..n)
    };
    // "recover_late": the worker of `running` (host 2) kills itself at its
    // last item, once its host's network source has read the end of the
    // stream: the recovery restarts a source whose stream has ended.
    let late_kill = (case == "recover_late" && host == 2).then(|| {
        (
            expected(case).len() as u64,
            std::env::temp_dir().join(format!(
                "ringweave-cluster-{}",
                std::env::var("CLUSTER_GROUP").unwrap()
            )),
        )
    });
    let p = Pipeline::from_iter(source)
        .map("mix", move |x| {
            if let Some(flag) = kill_flag.as_ref().filter(|_| x == 50_000) {
                if std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(flag)
                    .is_ok()
                {
                    kill_self();
                }
            }
            mix(x)
        })
        .filter("keep", |x| keep(*x))
        .flat_map("twice", |x| [x, x / 3])
        .replicas(2)
        .stateful("running", 0u64, move |sum: &mut u64, x: u64| {
            if let Some((last, flag)) = &late_kill {
                if RAN.fetch_add(1, Ordering::Relaxed) + 1 == *last
                    && std::fs::OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .open(flag)
                        .is_ok()
                {
                    // Long enough for the end of the stream to arrive.
                    std::thread::sleep(Duration::from_millis(300));
                    kill_self();
                }
            }
            *sum = sum.wrapping_add(x);
            Some(*sum % 1_000_003)
        })
        .stateful_by_key(
            "per_key",
            |x: &u64| x % 5,
            || 0u64,
            |seen: &mut u64, x: u64| {
                *seen += 1;
                Some((x, *seen))
            },
        )
        .replicas(2)
        .map("label", move |(x, seen): (u64, u64)| {
            if watched && LABELLED.fetch_add(1, Ordering::Relaxed) == 1_000 {
                // The kill and panic cases wait for this line (host 1).
                eprintln!("RUNNING");
            }
            (x, format!("{seen}"))
        })
        .map("check", move |item: (u64, String)| {
            if panics && CHECKED.fetch_add(1, Ordering::Relaxed) == 2_000 {
                panic!("check failed on purpose at {}", item.0);
            }
            item
        });
    let mode = match case {
        // Replicas as processes on their host.
        "distributed" | "recover" | "recover_late" | "trickle" => ExecutionMode::Distributed,
        _ => ExecutionMode::InProcess,
    };
    let p = if case.starts_with("recover") {
        p.max_restarts(3)
    } else {
        p
    };
    let stall = case == "stall";
    let mut delivered = 0u64;
    let complete = p.mode(mode).sink(move |item| {
        delivered += 1;
        DELIVERED.fetch_add(1, Ordering::Relaxed);
        if stall && delivered == 10_000 {
            std::thread::sleep(Duration::from_secs(6));
        }
        let _ = tx.send(item);
    });
    EXPECTED_RX.with(|cell| *cell.borrow_mut() = Some(rx));
    complete
}

/// SIGKILL to this process (a worker, in the "recover" case).
fn kill_self() {
    let _ = nix::sys::signal::kill(nix::unistd::getpid(), nix::sys::signal::Signal::SIGKILL);
}

fn mix(x: u64) -> u64 {
    x.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 20
}

fn keep(x: u64) -> bool {
    x % 7 != 3
}

/// Items the sink delivered (this process).
static DELIVERED: AtomicU64 = AtomicU64::new(0);
/// Items `running` took (this process).
static RAN: AtomicU64 = AtomicU64::new(0);

static LABELLED: AtomicU64 = AtomicU64::new(0);
static CHECKED: AtomicU64 = AtomicU64::new(0);

thread_local! {
    static EXPECTED_RX: std::cell::RefCell<Option<mpsc::Receiver<(u64, String)>>> =
        const { std::cell::RefCell::new(None) };
}

/// The same computation with plain iterators.
fn expected(case: &str) -> Vec<(u64, String)> {
    let mut sum = 0u64;
    let mut seen = [0u64; 5];
    (0..items(case))
        .map(mix)
        .filter(|x| keep(*x))
        .flat_map(|x| [x, x / 3])
        .map(|x| {
            sum = sum.wrapping_add(x);
            sum % 1_000_003
        })
        .map(|x| {
            seen[(x % 5) as usize] += 1;
            (x, format!("{}", seen[(x % 5) as usize]))
        })
        .collect()
}

/// Where each case puts the stages: `(stage, host)`.
fn placement(case: &str) -> Vec<(&'static str, usize)> {
    match case {
        "two_hosts" => vec![("keep", 1), ("twice", 1), ("running", 1)],
        // The sink stands still for 6 s once: longer than Zenoh's
        // wait_before_close (5 s), which a blocking put would hit.
        "stall" => vec![("mix", 1), ("running", 2), ("per_key", 1)],
        "trickle" => vec![
            ("mix", 1),
            ("keep", 1),
            ("twice", 1),
            ("running", 1),
            ("per_key", 1),
            ("label", 1),
            ("check", 1),
        ],
        // Host 2 runs nothing: it must still join, wait and end with the run.
        "idle_host" => vec![("mix", 1), ("per_key", 1)],
        "source_and_sink_away" => vec![
            ("source", 2),
            ("mix", 2),
            ("keep", 0),
            ("twice", 1),
            ("per_key", 1),
            ("sink", 1),
        ],
        // Every stage on another host than the one before it.
        "alternating" => vec![
            ("mix", 1),
            ("keep", 2),
            ("twice", 0),
            ("running", 1),
            ("per_key", 2),
            ("label", 0),
            ("check", 1),
        ],
        _ => vec![
            ("mix", 1),
            ("keep", 1),
            ("twice", 1),
            ("running", 2),
            ("per_key", 2),
            ("label", 1),
            ("check", 2),
        ],
    }
}

fn hosts(case: &str) -> usize {
    if matches!(case, "two_hosts" | "trickle") {
        2
    } else {
        3
    }
}

/// The body of a host process (runs only when started by a test).
#[test]
fn host_process() {
    let Ok(case) = std::env::var("CLUSTER_CASE") else {
        return;
    };
    let host: usize = std::env::var("CLUSTER_HOST").unwrap().parse().unwrap();
    let peers: Vec<String> = std::env::var("CLUSTER_PEERS")
        .unwrap()
        .split(',')
        .map(String::from)
        .collect();
    let mut cluster = Cluster::new(
        format!("test-{}", std::env::var("CLUSTER_GROUP").unwrap()),
        host,
        peers,
    )
    .connect_timeout(Duration::from_secs(60));
    for (stage, on) in placement(&case) {
        cluster = cluster.place(stage, on);
    }
    let sink_host = placement(&case)
        .iter()
        .find(|(s, _)| *s == "sink")
        .map_or(0, |(_, h)| *h);
    let complete = pipeline(&case, host);
    let rx = EXPECTED_RX.with(|cell| cell.borrow_mut().take()).unwrap();
    match complete.run_on(&cluster) {
        Ok(report) => {
            if host == sink_host {
                let got: Vec<(u64, String)> = rx.try_iter().collect();
                let want = expected(&case);
                if got != want {
                    let first = got.iter().zip(&want).position(|(a, b)| a != b);
                    eprintln!(
                        "MISMATCH: {} items received, {} expected, first difference at {first:?}",
                        got.len(),
                        want.len()
                    );
                    std::process::exit(2);
                }
                eprintln!("EQUAL {}", got.len());
            }
            let recoveries: usize = report.segments.iter().map(|r| r.recoveries.len()).sum();
            eprintln!("RECOVERIES {recoveries}");
            // The parent checks that both ends of every edge agree.
            for edge in &report.edges {
                eprintln!(
                    "EDGE {}>{} {} items={} runs={}",
                    edge.from,
                    edge.to,
                    if edge.sent { "sent" } else { "received" },
                    edge.items,
                    edge.runs
                );
            }
            std::process::exit(0);
        }
        Err(error) => {
            eprintln!("ERROR: {error}");
            std::process::exit(3);
        }
    }
}

// ------------------------------------------------------------- the harness

/// Free loopback ports (bound and released: good enough on a test machine).
/// Free loopback ports below the kernel's ephemeral range (32768 and up
/// by default), so that no outgoing connection — Zenoh dials and redials —
/// takes one between this check and the host's bind.
fn free_ports(n: usize) -> Vec<String> {
    use rand::Rng;
    let mut rng = rand::thread_rng();
    let mut ports = Vec::new();
    let mut held = Vec::new();
    while ports.len() < n {
        let port: u16 = rng.gen_range(20_000..32_000);
        if let Ok(listener) = std::net::TcpListener::bind(("127.0.0.1", port)) {
            held.push(listener);
            ports.push(format!("tcp/127.0.0.1:{port}"));
        }
    }
    ports
}

/// The host processes of one test: killed and reaped on drop.
struct Hosts {
    children: Vec<Child>,
    /// Lines `await_line` read past, for `wait`.
    seen: Vec<(usize, String)>,
    /// The file a "recover" case's worker makes before it kills itself.
    flag: std::path::PathBuf,
    /// Each host's stderr lines, as they come.
    lines: mpsc::Receiver<(usize, String)>,
}

impl Hosts {
    fn start(case: &str, extra: &[(usize, &str, &str)]) -> Self {
        let peers = free_ports(hosts(case)).join(",");
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let group = format!("{}-{case}-{nanos}", std::process::id());
        let flag = std::env::temp_dir().join(format!("ringweave-cluster-{group}"));
        let (tx, lines) = mpsc::channel();
        let mut children = Vec::new();
        for host in 0..hosts(case) {
            let mut command = Command::new(std::env::current_exe().unwrap());
            command
                .args(["--exact", "host_process", "--nocapture", "--test-threads=1"])
                .env("CLUSTER_CASE", case)
                .env("CLUSTER_HOST", host.to_string())
                .env("CLUSTER_PEERS", &peers)
                .env("CLUSTER_GROUP", &group)
                .stdout(Stdio::null())
                .stderr(Stdio::piped());
            for (h, key, value) in extra {
                if *h == host {
                    command.env(key, value);
                }
            }
            let mut child = command.spawn().unwrap();
            let stderr = child.stderr.take().unwrap();
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    let _ = tx.send((host, line));
                }
            });
            children.push(child);
        }
        Self {
            children,
            seen: Vec::new(),
            lines,
            flag,
        }
    }

    /// Waits for every host to exit; returns each exit code and its
    /// stderr.
    fn wait(mut self) -> Vec<(i32, String)> {
        let deadline = Instant::now() + HOST_BOUND;
        let mut out = vec![(None, String::new()); self.children.len()];
        while out.iter().any(|(code, _)| code.is_none()) {
            for (i, child) in self.children.iter_mut().enumerate() {
                if out[i].0.is_none() {
                    if let Some(status) = child.try_wait().unwrap() {
                        out[i].0 = Some(status.code().unwrap_or(-1));
                    }
                }
            }
            self.drain_lines(&mut out);
            assert!(
                Instant::now() < deadline,
                "hosts still running after {HOST_BOUND:?}: {:?}",
                out.iter().map(|(c, _)| *c).collect::<Vec<_>>()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        // The readers end with the pipes; take what is left.
        std::thread::sleep(Duration::from_millis(50));
        self.drain_lines(&mut out);
        out.into_iter().map(|(c, s)| (c.unwrap(), s)).collect()
    }

    fn drain_lines(&mut self, out: &mut [(Option<i32>, String)]) {
        let seen = std::mem::take(&mut self.seen);
        for (host, line) in seen.into_iter().chain(self.lines.try_iter()) {
            out[host].1.push_str(&line);
            out[host].1.push('\n');
        }
    }

    /// Waits for a line from `host`.
    fn await_line(&mut self, host: usize, text: &str) {
        let deadline = Instant::now() + HOST_BOUND;
        loop {
            let wait = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(wait) {
                Ok((h, line)) => {
                    let found = h == host && line.contains(text);
                    self.seen.push((h, line));
                    if found {
                        return;
                    }
                }
                Err(_) => panic!("host {host} never printed `{text}`"),
            }
        }
    }

    fn kill(&mut self, host: usize) {
        self.children[host].kill().unwrap();
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_file(&self.flag);
    }
}

fn assert_equivalent(case: &str) -> Vec<(i32, String)> {
    let results = Hosts::start(case, &[]).wait();
    for (host, (code, stderr)) in results.iter().enumerate() {
        assert_eq!(*code, 0, "host {host} of `{case}` failed:\n{stderr}");
    }
    let sink = placement(case)
        .iter()
        .find(|(s, _)| *s == "sink")
        .map_or(0, |(_, h)| *h);
    let want = format!("EQUAL {}", expected(case).len());
    assert!(results[sink].1.contains(&want), "{}", results[sink].1);
    // Every edge that crosses hosts: both ends report it, with the same
    // items and runs.
    let mut ends: std::collections::BTreeMap<String, Vec<(String, String)>> = Default::default();
    for (_, stderr) in &results {
        for line in stderr.lines().filter_map(|l| l.strip_prefix("EDGE ")) {
            let mut parts = line.splitn(3, ' ');
            let (edge, side, counts) = (
                parts.next().unwrap(),
                parts.next().unwrap(),
                parts.next().unwrap(),
            );
            ends.entry(edge.to_owned())
                .or_default()
                .push((side.to_owned(), counts.to_owned()));
        }
    }
    let names = [
        "source", "mix", "keep", "twice", "running", "per_key", "label", "check", "sink",
    ];
    let host_of = |stage: &str| {
        placement(case)
            .iter()
            .find(|(s, _)| *s == stage)
            .map_or(0, |(_, h)| *h)
    };
    let crossing = names
        .windows(2)
        .filter(|w| host_of(w[0]) != host_of(w[1]))
        .count();
    assert_eq!(ends.len(), crossing, "edges reported: {ends:?}");
    for (edge, sides) in &ends {
        assert_eq!(sides.len(), 2, "edge {edge}: {sides:?}");
        assert_eq!(
            sides[0].1, sides[1].1,
            "edge {edge}: the two ends disagree: {sides:?}"
        );
        assert_ne!(sides[0].0, sides[1].0, "edge {edge}: {sides:?}");
    }
    results
}

// ---------------------------------------------------------------- the tests

#[test]
fn a_chain_across_three_hosts_equals_the_iterators() {
    let results = assert_equivalent("three_hosts");
    assert!(results.iter().all(|(_, e)| e.contains("RECOVERIES 0")));
}

#[test]
fn two_hosts_equal_the_iterators() {
    assert_equivalent("two_hosts");
}

#[test]
fn every_stage_on_another_host_than_the_last() {
    assert_equivalent("alternating");
}

#[test]
fn source_and_sink_may_live_on_other_hosts() {
    assert_equivalent("source_and_sink_away");
}

#[test]
fn a_sink_standing_still_longer_than_zenoh_waits_loses_nothing() {
    assert_equivalent("stall");
}

#[test]
fn a_worker_killed_on_one_host_is_replaced_and_the_run_goes_on() {
    let results = assert_equivalent("recover");
    assert!(results[1].1.contains("RECOVERIES 1"), "{}", results[1].1);
}

#[test]
fn a_worker_killed_after_its_hosts_input_ended_is_replaced() {
    let results = assert_equivalent("recover_late");
    assert!(results[2].1.contains("RECOVERIES 1"), "{}", results[2].1);
}

#[test]
fn items_at_a_trickle_are_not_held_back_to_fill_a_run() {
    assert_equivalent("trickle");
}

#[test]
fn a_host_without_stages_ends_with_the_run() {
    assert_equivalent("idle_host");
}

#[test]
fn replicas_run_as_processes_on_their_host() {
    assert_equivalent("distributed");
}

#[test]
fn a_killed_host_fails_the_others_naming_it() {
    let mut hosts = Hosts::start("kill", &[]);
    hosts.await_line(1, "RUNNING");
    hosts.kill(1);
    let results = hosts.wait();
    assert_eq!(results[1].0, -1, "host 1 was killed");
    for host in [0, 2] {
        let (code, stderr) = &results[host];
        assert_eq!(*code, 3, "host {host} must fail:\n{stderr}");
        assert!(
            stderr.contains("host 1"),
            "host {host} must name host 1:\n{stderr}"
        );
    }
    // Hosts 0 and 2 both exchange items with host 1: each sees it go.
    assert!(results[0].1.contains("was lost"), "{}", results[0].1);
    assert!(
        results[0].1.contains("mix"),
        "names host 1's stages: {}",
        results[0].1
    );
}

#[test]
fn a_panic_on_one_host_fails_every_host_with_it() {
    let mut hosts = Hosts::start("panic", &[(2, "CLUSTER_PANIC", "1")]);
    hosts.await_line(1, "RUNNING");
    let results = hosts.wait();
    for (host, (code, stderr)) in results.iter().enumerate() {
        assert_eq!(*code, 3, "host {host} must fail:\n{stderr}");
    }
    let (_, stderr) = &results[2];
    assert!(
        stderr.contains("`check` panicked: check failed on purpose"),
        "{stderr}"
    );
    // Host 0 hears why from host 2, or sees host 2 go first.
    let (_, stderr) = &results[0];
    assert!(stderr.contains("host 2"), "{stderr}");
}

#[test]
fn a_host_that_never_joins_times_out_naming_it() {
    let ports = free_ports(2);
    let cluster = Cluster::new(format!("lonely-{}", std::process::id()), 0, ports)
        .place("double", 1)
        .connect_timeout(Duration::from_millis(500));
    let started = Instant::now();
    let result = Pipeline::from_iter(0..10u64)
        .map("double", |x| x * 2)
        .sink(|_| {})
        .run_on(&cluster);
    match result {
        Err(Error::Cluster { host: 1, reason }) => {
            assert!(reason.contains("did not join"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
    assert!(started.elapsed() < HOST_BOUND);
}

#[test]
fn absurd_cluster_configurations_are_refused_before_anything_starts() {
    let peers = ["tcp/127.0.0.1:1", "tcp/127.0.0.1:2"];
    let run = |cluster: Cluster| {
        Pipeline::from_iter(0..10u64)
            .map("double", |x| x * 2)
            .sink(|_| {})
            .run_on(&cluster)
    };
    let field = |result: Result<ringweave::ClusterReport, Error>| match result {
        Err(Error::InvalidConfig { field, reason }) => (field, reason),
        other => panic!("{other:?}"),
    };
    let (f, reason) = field(run(Cluster::new("p", 0, peers).place("nope", 1)));
    assert_eq!(f, "cluster placement");
    assert!(
        reason.contains("nope") && reason.contains("double"),
        "{reason}"
    );
    let (f, reason) = field(run(Cluster::new("p", 0, peers).place("double", 7)));
    assert!(f == "cluster placement" && reason.contains("7") && reason.contains("2 hosts"));
    assert_eq!(field(run(Cluster::new("p", 5, peers))).0, "cluster host");
    assert_eq!(field(run(Cluster::new("a b", 0, peers))).0, "cluster name");
    assert_eq!(
        field(run(Cluster::new("p", 0, ["tcp/\"x"]))).0,
        "cluster locators"
    );
    assert_eq!(
        field(run(Cluster::new("p", 0, peers).run_bytes(0))).0,
        "run_bytes"
    );
    let tee = Pipeline::from_iter(0..10u64)
        .tee("copy", |branch| branch.sink(|_| {}))
        .sink(|_| {})
        .run_on(&Cluster::new("p", 0, peers));
    assert_eq!(field(tee).0, "cluster");
}

/// The body of `the_environment_describes_a_cluster`'s processes: the
/// variables are set for them, so no test thread calls `set_var` while
/// another runs Zenoh.
#[test]
fn env_process() {
    if std::env::var("CLUSTER_ENV_CASE").is_err() {
        return;
    }
    match Cluster::from_env() {
        Ok(cluster) => eprintln!("OK host={} hosts={}", cluster.host(), cluster.hosts()),
        Err(Error::InvalidConfig { field, reason }) => eprintln!("ERR {field}: {reason}"),
        Err(other) => eprintln!("OTHER {other}"),
    }
    std::process::exit(0);
}

#[test]
fn the_environment_describes_a_cluster() {
    let run = |vars: &[(&str, &str)]| {
        let mut command = Command::new(std::env::current_exe().unwrap());
        command
            .args(["--exact", "env_process", "--nocapture", "--test-threads=1"])
            .env("CLUSTER_ENV_CASE", "1")
            .env_remove("RINGWEAVE_CLUSTER_HOST")
            .env_remove("RINGWEAVE_CLUSTER_PEERS")
            .env_remove("RINGWEAVE_CLUSTER_PLACE");
        for (key, value) in vars {
            command.env(key, value);
        }
        let output = command.output().unwrap();
        assert!(output.status.success());
        String::from_utf8_lossy(&output.stderr).into_owned()
    };
    let peers = (
        "RINGWEAVE_CLUSTER_PEERS",
        "tcp/127.0.0.1:7001, tcp/127.0.0.1:7002",
    );
    let out = run(&[
        ("RINGWEAVE_CLUSTER_HOST", "1"),
        peers,
        ("RINGWEAVE_CLUSTER_PLACE", "double=1,sink=1"),
    ]);
    assert!(out.contains("OK host=1 hosts=2"), "{out}");
    let out = run(&[
        ("RINGWEAVE_CLUSTER_HOST", "1"),
        peers,
        ("RINGWEAVE_CLUSTER_PLACE", "double:1"),
    ]);
    assert!(
        out.contains("ERR RINGWEAVE_CLUSTER_PLACE") && out.contains("double:1"),
        "{out}"
    );
    let out = run(&[("RINGWEAVE_CLUSTER_HOST", "one"), peers]);
    assert!(out.contains("ERR RINGWEAVE_CLUSTER_HOST"), "{out}");
    let out = run(&[("RINGWEAVE_CLUSTER_HOST", "0")]);
    assert!(out.contains("ERR RINGWEAVE_CLUSTER_PEERS"), "{out}");
}
