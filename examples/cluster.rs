//! One pipeline across three hosts (or three processes of one machine).
//!
//! Every host runs this same program with its own index; the source and the
//! sink run on host 0, `parse` on host 1 and `score` on host 2 (with two
//! replicas there):
//!
//! ```text
//! cargo run --release --features cluster --example cluster -- 0 &
//! cargo run --release --features cluster --example cluster -- 1 &
//! cargo run --release --features cluster --example cluster -- 2
//! ```
//!
//! On three machines, give every host the same list of locators, e.g.
//! `RINGWEAVE_CLUSTER_PEERS=tcp/10.0.0.1:7501,tcp/10.0.0.2:7501,tcp/10.0.0.3:7501`
//! and each its own `RINGWEAVE_CLUSTER_HOST` (`ITEMS` sets the stream's
//! length, default 10 million).

use ringweave::{Cluster, Pipeline};
use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let cluster = match std::env::args().nth(1) {
        Some(host) => Cluster::new(
            "example",
            host.parse()?,
            [
                "tcp/127.0.0.1:7501",
                "tcp/127.0.0.1:7502",
                "tcp/127.0.0.1:7503",
            ],
        ),
        None => Cluster::from_env()?,
    };
    let cluster = cluster.place("parse", 1).place("score", 2);
    let items: u64 = std::env::var("ITEMS").map_or(Ok(10_000_000), |v| v.parse())?;
    let host = cluster.host();

    let started = Instant::now();
    let (mut count, mut sum) = (0u64, 0u64);
    let report = Pipeline::from_iter(0..items)
        .map("parse", |x| x.wrapping_mul(0x9e37_79b9_7f4a_7c15))
        .map("score", |x| x >> 40)
        .replicas(2)
        .sink(move |x| {
            count += 1;
            sum = sum.wrapping_add(x);
            if count == items {
                println!("sink: {count} items, checksum {sum:#x}");
            }
        })
        .run_on(&cluster)?;
    let elapsed = started.elapsed();
    for edge in &report.edges {
        let direction = if edge.sent {
            "sent to"
        } else {
            "received from"
        };
        println!(
            "host {host}: `{}` → `{}` {direction} host {}: {} items in {} runs, {:.1} MB, {:.1} M items/s",
            edge.from,
            edge.to,
            edge.peer,
            edge.items,
            edge.runs,
            edge.bytes as f64 / 1e6,
            edge.items as f64 / elapsed.as_secs_f64() / 1e6,
        );
    }
    println!("host {host}: done in {elapsed:.2?}");
    Ok(())
}
