//! The iceoryx2 peer: lossless publish-subscribe, created after the fork
//! in both processes.

use super::payload::{blob_check, text_check, Payload, Text, Tick};
use super::{
    forked, forked_with, Backoff, Outcome, Placement, RoundTrips, BLOB_LEN, CHILD_TIMEOUT, EXIT_OK,
    EXIT_SETUP, EXIT_TRANSPORT, INLINE_TEXT_CAP,
};
use iceoryx2::prelude::{
    ipc, BackpressureStrategy, Node, NodeBuilder, PortFactory as _, ServiceName,
    SignalHandlingMode, ZeroCopySend,
};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

/// Builds (or opens) a lossless publish-subscribe service: safe overflow
/// off (a full subscriber buffer blocks the publisher), no history, one
/// publisher and one subscriber, the subscriber buffer given.
macro_rules! ice_service {
    ($node:expr, $name:expr, $payload:ty, $buffer:expr) => {
        $node
            .service_builder($name)
            .publish_subscribe::<$payload>()
            .enable_safe_overflow(false)
            .subscriber_max_buffer_size($buffer)
            .history_size(0)
            .max_publishers(1)
            .max_subscribers(1)
            .open_or_create()
    };
}

/// A publisher builder that blocks while the subscriber's buffer is full.
macro_rules! ice_publisher {
    ($service:expr) => {
        $service
            .publisher_builder()
            .backpressure_strategy(BackpressureStrategy::RetryUntilDelivered)
    };
}

/// [`Text`] as iceoryx2 carries it: the string copied into an inline array.
#[derive(Debug, ZeroCopySend)]
#[repr(C)]
pub(super) struct InlineText {
    id: u64,
    len: u64,
    bytes: [u8; INLINE_TEXT_CAP],
}

impl From<&Text> for InlineText {
    fn from(t: &Text) -> Self {
        let mut bytes = [0; INLINE_TEXT_CAP];
        bytes[..t.text.len()].copy_from_slice(t.text.as_bytes());
        Self {
            id: t.id,
            len: t.text.len() as u64,
            bytes,
        }
    }
}

/// A payload's iceoryx2 contender.
pub(super) trait Peer: Sized {
    /// Sends `total` records of `pool` to a forked child through iceoryx2.
    fn iceoryx2(pool: &[Self], total: u64) -> Outcome<()>;
}

impl Peer for u64 {
    fn iceoryx2(pool: &[Self], total: u64) -> Outcome<()> {
        let name = ice_service_name("u64");
        iceoryx2_throughput(
            total,
            || {
                let node = ice_node()?;
                let service = retry(|| ice_service!(node, &name, u64, Self::ICE_BUFFER)).ok()?;
                let subscriber = service.subscriber_builder().create().ok()?;
                Some((subscriber, service, node))
            },
            |(_, service, _)| service.dynamic_config().number_of_publishers(),
            |(subscriber, _, _)| match subscriber.receive() {
                Ok(Some(sample)) => Ok(Some(*sample.payload())),
                Ok(None) => Ok(None),
                Err(_) => Err(()),
            },
            || {
                let node = ice_node().expect("iceoryx2 node");
                let service = retry(|| ice_service!(node, &name, u64, Self::ICE_BUFFER))
                    .expect("iceoryx2 service");
                let publisher = ice_publisher!(service)
                    .create()
                    .expect("iceoryx2 publisher");
                (publisher, service, node)
            },
            |(publisher, _, _)| {
                for i in 0..total {
                    let sample = publisher.loan_uninit().expect("iceoryx2 loan");
                    let sample = sample.write_payload(pool[i as usize % Self::POOL]);
                    ice_delivered(sample.send());
                }
            },
        )
    }
}

impl Peer for Tick {
    fn iceoryx2(pool: &[Self], total: u64) -> Outcome<()> {
        let name = ice_service_name("tick");
        iceoryx2_throughput(
            total,
            || {
                let node = ice_node()?;
                let service = retry(|| ice_service!(node, &name, Tick, Self::ICE_BUFFER)).ok()?;
                let subscriber = service.subscriber_builder().create().ok()?;
                Some((subscriber, service, node))
            },
            |(_, service, _)| service.dynamic_config().number_of_publishers(),
            |(subscriber, _, _)| match subscriber.receive() {
                Ok(Some(sample)) => Ok(Some(sample.payload().check())),
                Ok(None) => Ok(None),
                Err(_) => Err(()),
            },
            || {
                let node = ice_node().expect("iceoryx2 node");
                let service = retry(|| ice_service!(node, &name, Tick, Self::ICE_BUFFER))
                    .expect("iceoryx2 service");
                let publisher = ice_publisher!(service)
                    .create()
                    .expect("iceoryx2 publisher");
                (publisher, service, node)
            },
            |(publisher, _, _)| {
                for i in 0..total {
                    let sample = publisher.loan_uninit().expect("iceoryx2 loan");
                    let sample = sample.write_payload(pool[i as usize % Self::POOL].clone());
                    ice_delivered(sample.send());
                }
            },
        )
    }
}

impl Peer for Text {
    fn iceoryx2(pool: &[Self], total: u64) -> Outcome<()> {
        let name = ice_service_name("text");
        iceoryx2_throughput(
            total,
            || {
                let node = ice_node()?;
                let service =
                    retry(|| ice_service!(node, &name, InlineText, Self::ICE_BUFFER)).ok()?;
                let subscriber = service.subscriber_builder().create().ok()?;
                Some((subscriber, service, node))
            },
            |(_, service, _)| service.dynamic_config().number_of_publishers(),
            |(subscriber, _, _)| match subscriber.receive() {
                Ok(Some(sample)) => {
                    let t = sample.payload();
                    let len = (t.len as usize).min(INLINE_TEXT_CAP);
                    Ok(Some(text_check(t.id, &t.bytes[..len])))
                }
                Ok(None) => Ok(None),
                Err(_) => Err(()),
            },
            || {
                let node = ice_node().expect("iceoryx2 node");
                let service = retry(|| ice_service!(node, &name, InlineText, Self::ICE_BUFFER))
                    .expect("iceoryx2 service");
                let publisher = ice_publisher!(service)
                    .create()
                    .expect("iceoryx2 publisher");
                (publisher, service, node)
            },
            |(publisher, _, _)| {
                for i in 0..total {
                    let sample = publisher.loan_uninit().expect("iceoryx2 loan");
                    let value = InlineText::from(&pool[i as usize % Self::POOL]);
                    ice_delivered(sample.write_payload(value).send());
                }
            },
        )
    }
}

impl Peer for Vec<u8> {
    fn iceoryx2(pool: &[Self], total: u64) -> Outcome<()> {
        let name = ice_service_name("blob");
        iceoryx2_throughput(
            total,
            || {
                let node = ice_node()?;
                let service = retry(|| ice_service!(node, &name, [u8], Self::ICE_BUFFER)).ok()?;
                let subscriber = service.subscriber_builder().create().ok()?;
                Some((subscriber, service, node))
            },
            |(_, service, _)| service.dynamic_config().number_of_publishers(),
            |(subscriber, _, _)| match subscriber.receive() {
                Ok(Some(sample)) => Ok(Some(blob_check(sample.payload()))),
                Ok(None) => Ok(None),
                Err(_) => Err(()),
            },
            || {
                let node = ice_node().expect("iceoryx2 node");
                let service = retry(|| ice_service!(node, &name, [u8], Self::ICE_BUFFER))
                    .expect("iceoryx2 service");
                let publisher = ice_publisher!(service)
                    .initial_max_slice_len(BLOB_LEN)
                    .create()
                    .expect("iceoryx2 publisher");
                (publisher, service, node)
            },
            |(publisher, _, _)| {
                for i in 0..total {
                    let blob = &pool[i as usize % Self::POOL];
                    let sample = publisher
                        .loan_slice_uninit(blob.len())
                        .expect("iceoryx2 loan");
                    ice_delivered(sample.write_from_slice(blob).send());
                }
            },
        )
    }
}

/// Why iceoryx2 cannot run here, or `None` if it can.
pub(super) fn iceoryx2_probe() -> Option<String> {
    let node = match ice_node() {
        Some(node) => node,
        None => return Some("creating an iceoryx2 node failed".into()),
    };
    let name = ice_service_name("probe");
    let service = match ice_service!(node, &name, u64, 4) {
        Ok(s) => s,
        Err(e) => return Some(format!("creating an iceoryx2 service failed: {e:?}")),
    };
    let subscriber = match service.subscriber_builder().create() {
        Ok(s) => s,
        Err(e) => return Some(format!("creating an iceoryx2 subscriber failed: {e:?}")),
    };
    let publisher = match ice_publisher!(service).create() {
        Ok(p) => p,
        Err(e) => return Some(format!("creating an iceoryx2 publisher failed: {e:?}")),
    };
    if let Err(e) = publisher.send_copy(42) {
        return Some(format!("iceoryx2 send failed: {e:?}"));
    }
    match subscriber.receive() {
        Ok(Some(s)) if *s.payload() == 42 => None,
        other => Some(format!(
            "iceoryx2 sample not received in-process: {:?}",
            other.map(|s| s.map(|s| *s.payload()))
        )),
    }
}

fn ice_node() -> Option<Node<ipc::Service>> {
    NodeBuilder::new()
        // Leave SIGINT/SIGTERM to the bench process.
        .signal_handling_mode(SignalHandlingMode::Disabled)
        .create::<ipc::Service>()
        .ok()
}

/// A service name unique to this process and call.
fn ice_service_name(tag: &str) -> ServiceName {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    // Relaxed: a counter for unique names, publishes nothing.
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let name = format!("ringweave-bench/{}/{tag}/{n}", std::process::id());
    ServiceName::new(&name).expect("service name")
}

/// Retries `f` for up to a second: `open_or_create` from two processes at
/// once can find the service half-made.
fn retry<T, E>(mut f: impl FnMut() -> Result<T, E>) -> Result<T, E> {
    let mut tries = 0;
    loop {
        match f() {
            Ok(v) => return Ok(v),
            Err(e) if tries >= 1000 => return Err(e),
            Err(_) => {
                tries += 1;
                thread::sleep(Duration::from_millis(1));
            }
        }
    }
}

/// Panics unless a send reached exactly one subscriber: with safe overflow
/// off, iceoryx2 drops a sample silently (returns 0) when the subscriber's
/// side of the connection is not (yet, or any longer) there.
fn ice_delivered<E: fmt::Debug>(sent: Result<usize, E>) {
    assert_eq!(
        sent.expect("iceoryx2 send"),
        1,
        "iceoryx2 sample not delivered"
    );
}

/// Panics unless this process has one thread: the iceoryx2 children use
/// iceoryx2's full API (locks included) after the fork.
fn assert_single_threaded() {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let threads = status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .map(str::trim);
    assert_eq!(
        threads,
        Some("1"),
        "iceoryx2 children need a single-threaded parent at the fork"
    );
}

/// Waits (yielding, up to `CHILD_TIMEOUT`) until `publishers()` is non-zero.
fn await_publisher(publishers: impl Fn() -> usize) -> bool {
    let give_up = Instant::now() + CHILD_TIMEOUT;
    while publishers() == 0 {
        if Instant::now() >= give_up {
            return false;
        }
        thread::yield_now();
    }
    true
}

/// The iceoryx2 throughput skeleton. The child makes its node, service and
/// subscriber (`child_ends`), waits for the parent's publisher, connects its
/// side (one `receive`, which finds nothing: the parent sends only after
/// `ready`) and polls `receive` (which yields a record's check value) until
/// `total` records are in. The parent makes its ends after the fork
/// (`parent_ends`) and sends (`send_all`, timed); it keeps them until the
/// child is done.
fn iceoryx2_throughput<C, P>(
    total: u64,
    child_ends: impl FnOnce() -> Option<C>,
    publishers: impl Fn(&C) -> usize,
    mut receive: impl FnMut(&C) -> Result<Option<u64>, ()>,
    parent_ends: impl FnOnce() -> P,
    send_all: impl FnOnce(&mut P),
) -> Outcome<()> {
    assert_single_threaded();
    forked(
        "iceoryx2",
        move |report| {
            let Some(ends) = child_ends() else {
                return EXIT_SETUP;
            };
            if !await_publisher(|| publishers(&ends)) || !matches!(receive(&ends), Ok(None)) {
                return EXIT_SETUP;
            }
            report.ready();
            let (mut got, mut sum) = (0u64, 0u64);
            let mut backoff = Backoff::new();
            while got < total {
                match receive(&ends) {
                    Ok(Some(check)) => {
                        sum = sum.wrapping_add(check);
                        got += 1;
                        backoff.reset();
                    }
                    Ok(None) => backoff.snooze(),
                    Err(()) => return EXIT_TRANSPORT,
                }
            }
            report.done(got, sum);
            drop(ends);
            EXIT_OK
        },
        parent_ends,
        |ends| send_all(ends),
    )
}

pub(super) fn rtt_iceoryx2(mut plan: RoundTrips<'_>) -> Duration {
    assert_single_threaded();
    let total = plan.total();
    let (ping, pong) = (ice_service_name("ping"), ice_service_name("pong"));
    const BUFFER: usize = 16;
    let out = forked_with(
        Placement::Pinned,
        "iceoryx2_rtt",
        |report| {
            let Some(node) = ice_node() else {
                return EXIT_SETUP;
            };
            let (Ok(ping), Ok(pong)) = (
                retry(|| ice_service!(node, &ping, u64, BUFFER)),
                retry(|| ice_service!(node, &pong, u64, BUFFER)),
            ) else {
                return EXIT_SETUP;
            };
            let (Ok(subscriber), Ok(publisher)) = (
                ping.subscriber_builder().create(),
                ice_publisher!(pong).create(),
            ) else {
                return EXIT_SETUP;
            };
            if !await_publisher(|| ping.dynamic_config().number_of_publishers())
                || !matches!(subscriber.receive(), Ok(None))
            {
                return EXIT_SETUP;
            }
            report.ready();
            let mut sum = 0u64;
            let mut backoff = Backoff::new();
            for _ in 0..total {
                let v = loop {
                    match subscriber.receive() {
                        Ok(Some(sample)) => break *sample.payload(),
                        Ok(None) => backoff.snooze(),
                        Err(_) => return EXIT_TRANSPORT,
                    }
                };
                backoff.reset();
                sum = sum.wrapping_add(v);
                let Ok(sample) = publisher.loan_uninit() else {
                    return EXIT_TRANSPORT;
                };
                if !matches!(sample.write_payload(v).send(), Ok(1)) {
                    return EXIT_TRANSPORT;
                }
            }
            report.done(total, sum);
            drop((publisher, subscriber, ping, pong));
            EXIT_OK
        },
        || {
            let node = ice_node().expect("iceoryx2 node");
            let ping = retry(|| ice_service!(node, &ping, u64, BUFFER)).expect("ping service");
            let pong = retry(|| ice_service!(node, &pong, u64, BUFFER)).expect("pong service");
            let publisher = ice_publisher!(ping).create().expect("ping publisher");
            let subscriber = pong.subscriber_builder().create().expect("pong subscriber");
            assert!(
                await_publisher(|| pong.dynamic_config().number_of_publishers()),
                "iceoryx2_rtt: the child's publisher never appeared"
            );
            assert!(matches!(subscriber.receive(), Ok(None)));
            (publisher, subscriber, ping, pong, node)
        },
        |(publisher, subscriber, ..)| {
            let mut backoff = Backoff::new();
            plan.run(|i| {
                let sample = publisher.loan_uninit().expect("iceoryx2 loan");
                ice_delivered(sample.write_payload(i).send());
                let v = loop {
                    match subscriber.receive().expect("iceoryx2 receive") {
                        Some(sample) => break *sample.payload(),
                        None => backoff.snooze(),
                    }
                };
                backoff.reset();
                assert_eq!(v, i, "iceoryx2_rtt: wrong echo");
            })
        },
    );
    out.verify("iceoryx2_rtt", total, plan.sum());
    out.value
}
