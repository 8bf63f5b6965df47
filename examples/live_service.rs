//! # live_service: a TCP service on a hybrid pipeline, with Prometheus metrics
//!
//! Clients send newline-delimited records, `<sensor> <value>` (two unsigned
//! integers), to a TCP listener on 127.0.0.1. Each record is pushed, as it
//! arrives, into a ringweave pipeline through an [`Input`] — backpressure
//! reaches the client through TCP when the pipeline is full — and runs
//!
//! ```text
//! Input ─▶ source ─▶ calibrate (map) ─▶ in_range (filter)
//!       ─▶ running_max (stateful, per sensor) ─▶ sink
//! ```
//!
//! in [`ExecutionMode::Hybrid`]: above `--threshold` items/s the transforms
//! move into worker processes, and back below it. The pipeline's metrics go
//! through the `metrics` facade (the library's `metrics` feature) to a
//! Prometheus recorder, served as text at `http://<metrics>/metrics` by a
//! small HTTP loop here: per-stage counters and rates, ring fill, the mode,
//! switches, the sampled latency histogram, and this service's own counts of
//! accepted and rejected lines.
//!
//! ```text
//! cargo run --release --features metrics --example live_service
//! cargo run --release --features metrics --example live_service -- --threshold 20000
//! # in another terminal:
//! seq 1 100000 | awk '{print $1 % 16, $1}' | nc -q1 127.0.0.1 7878
//! curl -s 127.0.0.1:9898/metrics | grep ringweave_
//! ```
//!
//! Clients are served one at a time (the `Input` has one producer). With
//! `--connections N` the service ends after its N-th client has closed its
//! connection: the `Input` is dropped, the pipeline drains and joins, and
//! the service prints what it delivered. Otherwise it runs until killed.

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use ringweave::{ExecutionMode, HybridConfig, Input, Pipeline};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

const USAGE: &str = "\
live_service: newline-delimited records over TCP through a hybrid ringweave pipeline

usage: live_service [--listen ADDR] [--metrics ADDR] [--threshold ITEMS_PER_S]
                    [--connections N]

  --listen ADDR        where clients send `<sensor> <value>` lines (default 127.0.0.1:7878;
                       port 0 picks a free one)
  --metrics ADDR       where GET /metrics answers in Prometheus text (default 127.0.0.1:9898)
  --threshold N        items/s above which the transforms move to worker processes
                       (default 50000)
  --connections N      end after N clients have come and gone (default: run until killed)";

/// Sensors the `running_max` stage keeps a maximum for.
const SENSORS: usize = 16;
/// Values at or above this are dropped by `in_range`.
const RANGE: u64 = 1 << 40;

struct Settings {
    listen: String,
    metrics: String,
    threshold: u64,
    connections: Option<u64>,
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Option<Settings>, String> {
    let mut settings = Settings {
        listen: "127.0.0.1:7878".into(),
        metrics: "127.0.0.1:9898".into(),
        threshold: 50_000,
        connections: None,
    };
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--listen" => settings.listen = value()?,
            "--metrics" => settings.metrics = value()?,
            "--threshold" => {
                settings.threshold = value()?.parse().map_err(|e| format!("--threshold: {e}"))?
            }
            "--connections" => {
                settings.connections = Some(
                    value()?
                        .parse()
                        .map_err(|e| format!("--connections: {e}"))?,
                )
            }
            "-h" | "--help" => return Ok(None),
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    Ok(Some(settings))
}

fn main() -> ExitCode {
    let settings = match parse_args(std::env::args().skip(1)) {
        Ok(Some(settings)) => settings,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("live_service: {message}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match serve(&settings) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("live_service: {message}");
            ExitCode::FAILURE
        }
    }
}

fn serve(settings: &Settings) -> Result<(), String> {
    let prometheus = PrometheusBuilder::new()
        .install_recorder()
        .map_err(|e| format!("installing the Prometheus recorder: {e}"))?;
    let records = TcpListener::bind(&settings.listen)
        .map_err(|e| format!("binding {}: {e}", settings.listen))?;
    let scrapes = TcpListener::bind(&settings.metrics)
        .map_err(|e| format!("binding {}: {e}", settings.metrics))?;
    let records_addr = records.local_addr().map_err(|e| e.to_string())?;
    let scrapes_addr = scrapes.local_addr().map_err(|e| e.to_string())?;
    thread::Builder::new()
        .name("metrics-http".into())
        .spawn(move || serve_metrics(scrapes, prometheus))
        .map_err(|e| format!("starting the metrics thread: {e}"))?;

    let delivered = Arc::new(AtomicU64::new(0));
    let seen = Arc::clone(&delivered);
    let (mut input, pipeline) = Pipeline::<(u32, u64)>::with_input();
    let handle = pipeline
        .map("calibrate", |(sensor, raw)| {
            (sensor, raw.saturating_mul(3) / 2)
        })
        .filter("in_range", |&(_, value)| value < RANGE)
        .stateful(
            "running_max",
            vec![0u64; SENSORS],
            |max: &mut Vec<u64>, (sensor, value)| {
                let slot = &mut max[sensor as usize % SENSORS];
                *slot = (*slot).max(value);
                Some((sensor, value, *slot))
            },
        )
        .mode(ExecutionMode::Hybrid(HybridConfig {
            local_threshold: settings.threshold as usize,
            monitoring_interval_ms: 100,
            window_size_ms: 1000,
            ..HybridConfig::default()
        }))
        .sink(move |(_sensor, _value, _max)| {
            seen.fetch_add(1, Ordering::Relaxed);
        })
        .spawn()
        .map_err(|e| format!("starting the pipeline: {e}"))?;
    // The test reads this line for the two addresses.
    println!("live_service: records on {records_addr}, metrics on http://{scrapes_addr}/metrics");
    let _ = std::io::stdout().flush();

    let mut served = 0u64;
    for client in records.incoming() {
        match client {
            Ok(stream) => {
                if let Err(message) = read_client(stream, &mut input) {
                    // The pipeline has failed: report it from `join`.
                    eprintln!("live_service: {message}");
                    break;
                }
            }
            Err(e) => eprintln!("live_service: accept: {e}"),
        }
        served += 1;
        if settings.connections.is_some_and(|n| served >= n) {
            break;
        }
    }
    // Dropping the input ends the stream; the pipeline drains and ends.
    drop(input);
    let report = handle
        .join()
        .map_err(|e| format!("the pipeline failed: {e}"))?;
    println!(
        "live_service: delivered {} of {} records ({} switches), {} clients",
        delivered.load(Ordering::Relaxed),
        report.items_produced,
        report.switches.len(),
        served
    );
    Ok(())
}

/// Pushes every well-formed line of one client into the pipeline. `Err`
/// only if the pipeline can take no more (it has failed).
fn read_client(stream: TcpStream, input: &mut Input<(u32, u64)>) -> Result<(), String> {
    let peer = stream
        .peer_addr()
        .map_or_else(|_| "?".to_string(), |a| a.to_string());
    for line in BufReader::new(stream).lines() {
        let line = match line {
            Ok(line) => line,
            Err(e) => {
                eprintln!("live_service: reading from {peer}: {e}");
                return Ok(());
            }
        };
        match parse_record(&line) {
            Some(record) => {
                input.push(record).map_err(|e| e.to_string())?;
                metrics::counter!("live_service_records_total").increment(1);
            }
            None => {
                metrics::counter!("live_service_rejected_total").increment(1);
            }
        }
    }
    Ok(())
}

/// `<sensor> <value>`, or `None`.
fn parse_record(line: &str) -> Option<(u32, u64)> {
    let mut fields = line.split_whitespace();
    let sensor = fields.next()?.parse().ok()?;
    let value = fields.next()?.parse().ok()?;
    fields.next().is_none().then_some((sensor, value))
}

/// Answers `GET /metrics` with the recorder's Prometheus text, anything
/// else with 404. One request per connection.
fn serve_metrics(listener: TcpListener, prometheus: PrometheusHandle) {
    for stream in listener.incoming().flatten() {
        let _ = answer(stream, &prometheus);
    }
}

fn answer(mut stream: TcpStream, prometheus: &PrometheusHandle) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut request = Vec::new();
    let mut buf = [0u8; 1024];
    // Read the request head (a scraper sends no body with GET).
    while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < 16 << 10 {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        request.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8_lossy(&request);
    let (status, body) = if head.starts_with("GET /metrics ") {
        ("200 OK", prometheus.render())
    } else {
        ("404 Not Found", "try GET /metrics\n".to_string())
    };
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    stream.flush()
}
