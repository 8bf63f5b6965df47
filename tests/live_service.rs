//! `examples/live_service.rs`, run as a user would: started as a process,
//! fed records over loopback, scraped over loopback. Needs the `metrics`
//! feature and the example's binary (scripts/test.sh does both):
//!
//! ```text
//! cargo build --features metrics --example live_service
//! cargo test --features metrics --test live_service
//! ```
#![cfg(feature = "metrics")]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Records the test sends; the last few lines are malformed on purpose.
const RECORDS: u64 = 20_000;
const MALFORMED: [&str; 3] = ["not a record", "1", "2 3 4"];

/// The example's binary, which `cargo test` builds next to the tests:
/// `<target>/<profile>/examples/live_service`.
fn example_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("<target>/<profile>/deps/<test>");
    profile_dir.join("examples").join("live_service")
}

/// Kills the service if the test fails before it has exited.
struct Service(Child);

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn scrape(addr: &str) -> String {
    let mut stream = TcpStream::connect(addr).expect("connect to /metrics");
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: test\r\n\r\n")
        .expect("send the request");
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .expect("read the response");
    assert!(response.starts_with("HTTP/1.1 200 OK"), "{response}");
    response
}

/// The value of the sample `name` (with its labels, as rendered), if any.
fn value(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

#[test]
fn serves_records_over_tcp_and_metrics_over_http() {
    let binary = example_binary();
    assert!(
        binary.exists(),
        "{} is missing: run `cargo build --features metrics --example live_service` first",
        binary.display()
    );
    let mut child = Command::new(&binary)
        .args([
            "--listen",
            "127.0.0.1:0",
            "--metrics",
            "127.0.0.1:0",
            "--connections",
            "1",
            // Above anything this test sends: the pipeline stays in-process,
            // so the counters can be read off one process.
            "--threshold",
            "100000000",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the example");
    let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
    let service = Service(child);
    let mut banner = String::new();
    stdout.read_line(&mut banner).expect("the banner line");
    // "live_service: records on A, metrics on http://B/metrics"
    let records_addr = banner
        .split("records on ")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .unwrap_or_else(|| panic!("no records address in {banner:?}"))
        .to_string();
    let metrics_addr = banner
        .split("http://")
        .nth(1)
        .and_then(|s| s.strip_suffix("/metrics\n"))
        .unwrap_or_else(|| panic!("no metrics address in {banner:?}"))
        .to_string();

    let mut client = TcpStream::connect(&records_addr).expect("connect to the records port");
    let mut lines = String::new();
    for i in 0..RECORDS {
        lines.push_str(&format!("{} {}\n", i % 16, i));
    }
    for bad in MALFORMED {
        lines.push_str(bad);
        lines.push('\n');
    }
    client
        .write_all(lines.as_bytes())
        .expect("send the records");
    client.flush().expect("flush");

    // The counters are published at every coordinator sample (100 ms);
    // wait until the sink has taken everything. The bound only keeps a
    // broken service from hanging the test.
    let deadline = Instant::now() + Duration::from_secs(120);
    let text = loop {
        let text = scrape(&metrics_addr);
        let sink_in = value(&text, "ringweave_stage_items_in_total{stage=\"sink\"}");
        if sink_in == Some(RECORDS as f64) {
            break text;
        }
        assert!(
            Instant::now() < deadline,
            "the sink took {sink_in:?} of {RECORDS} records; last scrape:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let n = RECORDS as f64;
    assert_eq!(value(&text, "live_service_records_total"), Some(n));
    assert_eq!(
        value(&text, "live_service_rejected_total"),
        Some(MALFORMED.len() as f64)
    );
    for stage in ["source", "calibrate", "in_range", "running_max"] {
        let out = format!("ringweave_stage_items_out_total{{stage=\"{stage}\"}}");
        assert_eq!(value(&text, &out), Some(n), "{out}\n{text}");
    }
    assert_eq!(
        value(
            &text,
            "ringweave_edge_fill_ratio{from=\"source\",to=\"calibrate\"}"
        )
        .map(|f| (0.0..=1.0).contains(&f)),
        Some(true),
        "{text}"
    );
    assert_eq!(value(&text, "ringweave_distributed"), Some(0.0), "{text}");
    assert!(
        value(&text, "ringweave_latency_seconds_count").is_some_and(|c| c > 0.0),
        "no latency samples:\n{text}"
    );
    let throughput = value(&text, "ringweave_throughput").expect("throughput gauge");
    assert!(throughput >= 0.0, "{throughput}");

    // Closing the only connection ends the service (`--connections 1`).
    drop(client);
    let mut rest = String::new();
    stdout
        .read_to_string(&mut rest)
        .expect("the rest of stdout");
    let mut service = service;
    let status = service.0.wait().expect("the service's exit");
    assert!(status.success(), "exit {status}; stdout:\n{rest}");
    assert!(
        rest.contains(&format!("delivered {RECORDS} of {RECORDS} records")),
        "{rest}"
    );
}
