//! Edges: everything the coordinator does with one edge that depends on the
//! type of the items it carries — building its rings, and moving residual
//! items between an in-process ring and a shared-memory record ring at a
//! switch. The builder makes one [`TypedEdge`] per edge; the coordinator
//! holds it as `dyn EdgeSpec`, and the ends and items it hands around are
//! [`Erased`] (see `erased.rs`).

use crate::erased::{End, Erased, ErasedMut, Residue};
use crate::heap::RingOutbox;
use crate::item::Item;
use crate::latency::{StampRx, StampTx, STAMP_QUEUE};
use crate::shm::{stage_items, MAX_ITEMS_PER_RECORD};
use crate::stage::ErasedStage;
use crate::topology::Topology;
use ringweave_ipc::record::RecordError;
use ringweave_ipc::record_ring::{PushError, RecordProducer, RecordRing};
use ringweave_ipc::ring::{self, RingWaker};
use ringweave_ipc::wait::WaitStrategy;
use std::marker::PhantomData;
#[cfg(feature = "cluster")]
use {
    crate::cluster::net::{EdgeCounters, NetFeed, NetIn, Outgoing, Wire},
    crate::cluster::wire::RunEncoder,
    crate::latency::Stamps,
    crate::source::SourceStage,
    crate::stage::{SinkStage, Tally},
    crate::transport::{Rx, Tx},
};

/// Items and bytes moved across an edge at a switch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Moved {
    pub items: u64,
    pub bytes: u64,
}

impl std::ops::AddAssign for Moved {
    fn add_assign(&mut self, other: Self) {
        self.items += other.items;
        self.bytes += other.bytes;
    }
}

/// Why the residue of an in-process ring could not be archived.
#[derive(Debug)]
pub(crate) enum CopyOutError {
    /// The items need more bytes than the record ring has: a larger ring
    /// may take them.
    Full {
        items: usize,
        fitted: usize,
        ring_bytes: usize,
    },
    /// Item `index` of `items` does not archive.
    Item {
        index: usize,
        items: usize,
        cause: PushError,
    },
}

impl std::fmt::Display for CopyOutError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Full {
                items,
                fitted,
                ring_bytes,
            } => write!(
                f,
                "the {items} residual items need more than the {ring_bytes}-byte shared ring \
                 ({fitted} fitted; raise shm_ring_bytes)"
            ),
            Self::Item {
                index,
                items,
                cause,
            } => write!(f, "residual item {index} of {items}: {cause}"),
        }
    }
}

/// The typed operations on one edge.
pub(crate) trait EdgeSpec: Send {
    /// A new in-process ring: `Producer<T>`, `Consumer<T>`, and a waker for
    /// both ends.
    fn ring(&self, capacity: usize) -> (Erased<End>, Erased<End>, RingWaker);

    /// The producer end of `ring` for this edge's item type, a
    /// `RecordProducer<Vec<T>>` (items cross in runs, one record per run:
    /// see `ShmOutbox`).
    ///
    /// # Safety
    ///
    /// The contract of [`RecordRing::producer`]: one producer in use at a
    /// time, across processes, and `ring`'s segment outlives it in this
    /// process.
    unsafe fn record_producer(&self, ring: &RecordRing) -> Erased<End>;

    /// The consumer end of `ring`, a `RecordConsumer<Vec<T>>`.
    ///
    /// # Safety
    ///
    /// The contract of [`RecordRing::consumer`], as for `record_producer`.
    unsafe fn record_consumer(&self, ring: &RecordRing) -> Erased<End>;

    /// Gives up a producer from `record_producer` without closing the ring
    /// ([`RecordProducer::detach`]): a worker forked next attaches its own.
    fn detach_producer(&self, producer: Erased<End>);

    /// Archives every item in a paused in-process ring (`consumer`, the
    /// reading stage's `Consumer<T>`) into `producer` (from
    /// `record_producer`) and publishes them, leaving the in-process ring
    /// untouched.
    fn copy_out(
        &self,
        consumer: ErasedMut<'_, End>,
        producer: &mut Erased<End>,
    ) -> Result<Moved, CopyOutError>;

    /// Archives `items` (a `Vec<T>`: a checkpoint's residue of this edge)
    /// into `producer`, as `copy_out` does, leaving `items` as they are: a
    /// recovery refills a fresh record ring with them.
    fn fill(
        &self,
        items: &mut Erased<Residue>,
        producer: &mut Erased<End>,
    ) -> Result<Moved, CopyOutError>;

    /// Drops every item in a paused in-process ring (the reading stage's
    /// `Consumer<T>`): the commit of a switch out, once the items live in
    /// the record ring.
    fn clear(&self, consumer: ErasedMut<'_, End>);

    /// Reads every unread record of `ring`, validated and deserialized,
    /// without consuming it: the items (a `Vec<T>`) and what they took.
    ///
    /// # Safety
    ///
    /// The contract of [`RecordRing::peek_unread`]: the consumer is paused.
    unsafe fn copy_in(&self, ring: &RecordRing) -> Result<(Erased<Residue>, Moved), RecordError>;

    /// Appends items from `copy_in` to a paused stage's output (the writing
    /// stage's `RingOutbox<T>`), after what it already holds.
    fn append(&self, outbox: ErasedMut<'_, End>, items: Erased<Residue>);

    /// The sending end of this edge across hosts: a sink stage named
    /// `name` that sends its items as runs on `out`.
    #[cfg(feature = "cluster")]
    fn net_sink(&self, name: String, out: NetOut) -> Box<dyn ErasedStage>;

    /// The receiving end of this edge across hosts: a source that reads
    /// the edge's messages.
    #[cfg(feature = "cluster")]
    fn net_source(&self, input: NetIn) -> Box<dyn ErasedStage>;
}

/// What the sending end of a network edge sends on.
#[cfg(feature = "cluster")]
pub(crate) struct NetOut {
    /// This host's index, for errors.
    pub host: usize,
    /// The edge, for errors.
    pub edge: String,
    pub wire: Box<dyn Wire>,
    /// Bytes of items a run holds at most (at least one item).
    pub run_bytes: usize,
    pub counters: std::sync::Arc<EdgeCounters>,
}

/// The [`EdgeSpec`] of an edge carrying `T`.
pub(crate) struct TypedEdge<T>(PhantomData<fn() -> T>);

impl<T> TypedEdge<T> {
    /// The spec of an edge carrying `T`.
    pub(crate) fn new() -> Self {
        Self(PhantomData)
    }
}

impl<T: Item> EdgeSpec for TypedEdge<T> {
    fn ring(&self, capacity: usize) -> (Erased<End>, Erased<End>, RingWaker) {
        let (producer, consumer) = ring::channel::<T>(capacity);
        let waker = producer.waker();
        (Erased::new(producer), Erased::new(consumer), waker)
    }

    unsafe fn record_producer(&self, ring: &RecordRing) -> Erased<End> {
        // SAFETY: forwarded to the caller.
        let mut producer = unsafe { ring.producer::<Vec<T>>() };
        // Five stages on two cores: yield briefly, then sleep (see
        // `ringweave_ipc::record_ring::DEFAULT_WAIT` for the two-process
        // default).
        producer.set_wait_strategy(WaitStrategy::default());
        Erased::new(producer)
    }

    unsafe fn record_consumer(&self, ring: &RecordRing) -> Erased<End> {
        // SAFETY: forwarded to the caller.
        let mut consumer = unsafe { ring.consumer::<Vec<T>>() };
        consumer.set_wait_strategy(WaitStrategy::default());
        Erased::new(consumer)
    }

    fn detach_producer(&self, producer: Erased<End>) {
        producer.open::<RecordProducer<Vec<T>>>().detach();
    }

    fn copy_out(
        &self,
        consumer: ErasedMut<'_, End>,
        producer: &mut Erased<End>,
    ) -> Result<Moved, CopyOutError> {
        let consumer = consumer.open::<ring::Consumer<T>>();
        let producer = producer.get_mut::<RecordProducer<Vec<T>>>();
        let n = consumer.slots();
        let Ok(chunk) = consumer.read_chunk(n) else {
            return Ok(Moved::default());
        };
        let (a, b) = chunk.as_slices();
        archive_residue(producer, [a, b])
    }

    fn fill(
        &self,
        items: &mut Erased<Residue>,
        producer: &mut Erased<End>,
    ) -> Result<Moved, CopyOutError> {
        let items = items.get_mut::<Vec<T>>();
        let producer = producer.get_mut::<RecordProducer<Vec<T>>>();
        archive_residue(producer, [items, &[]])
    }

    fn clear(&self, consumer: ErasedMut<'_, End>) {
        let consumer = consumer.open::<ring::Consumer<T>>();
        let n = consumer.slots();
        if let Ok(chunk) = consumer.read_chunk(n) {
            chunk.commit_all();
        }
    }

    unsafe fn copy_in(&self, ring: &RecordRing) -> Result<(Erased<Residue>, Moved), RecordError> {
        // SAFETY: forwarded to the caller.
        let unread = unsafe { ring.peek_unread::<Vec<T>>() };
        let bytes = unread.remaining_bytes();
        let mut items = Vec::new();
        for run in unread {
            items.extend(run?);
        }
        let moved = Moved {
            items: items.len() as u64,
            bytes,
        };
        Ok((Erased::new(items), moved))
    }

    fn append(&self, outbox: ErasedMut<'_, End>, items: Erased<Residue>) {
        outbox
            .open::<RingOutbox<T>>()
            .append(items.open::<Vec<T>>());
    }

    #[cfg(feature = "cluster")]
    fn net_sink(&self, name: String, out: NetOut) -> Box<dyn ErasedStage> {
        Box::new(SinkStage::<T, _> {
            f: Outgoing {
                name,
                host: out.host,
                edge: out.edge,
                wire: out.wire,
                run_items: (out.run_bytes / std::mem::size_of::<T>().max(1)).max(1),
                counters: out.counters,
                held: Vec::new(),
                encoder: RunEncoder::default(),
                runs: 0,
                sent: 0,
            },
            input: Rx::default(),
            tally: Tally::default(),
            skip: 0,
            stamps: Stamps::default(),
        })
    }

    #[cfg(feature = "cluster")]
    fn net_source(&self, input: NetIn) -> Box<dyn ErasedStage> {
        Box::new(SourceStage {
            feed: NetFeed::<T>::new(input),
            output: Tx::default(),
            tally: Tally::default(),
            stamps: Stamps::default(),
            log: None,
            kept: None,
        })
    }
}

/// Archives residual items (`parts`, in order) into a fresh record ring
/// and publishes them.
fn archive_residue<T: Item>(
    producer: &mut RecordProducer<Vec<T>>,
    parts: [&[T]; 2],
) -> Result<Moved, CopyOutError> {
    let n = parts[0].len() + parts[1].len();
    let before = producer.free_bytes();
    let mut per_record = MAX_ITEMS_PER_RECORD;
    let mut bytes_per_item = 0;
    let mut fitted = 0;
    for part in parts {
        // Residues are not bounded in items: they were in a ring already,
        // so they are about that many.
        let (done, result) =
            stage_items(producer, part, &mut per_record, None, &mut bytes_per_item);
        fitted += done;
        match result {
            Ok(()) => {}
            Err(PushError::Full) => {
                return Err(CopyOutError::Full {
                    items: n,
                    fitted,
                    ring_bytes: producer.capacity(),
                })
            }
            Err(cause) => {
                return Err(CopyOutError::Item {
                    index: fitted,
                    items: n,
                    cause,
                })
            }
        }
    }
    producer.flush();
    Ok(Moved {
        items: n as u64,
        bytes: (before - producer.free_bytes()) as u64,
    })
}

/// Gives every edge a fresh in-process stamp queue (see `latency.rs`).
pub(crate) fn install_stamp_rings<S>(nodes: &mut [S], topology: &Topology)
where
    S: std::ops::DerefMut<Target = dyn ErasedStage + 'static>,
{
    for (_, link) in topology.edges() {
        let (tx, rx) = ring::channel(STAMP_QUEUE);
        nodes[link.from.0].set_stamps(None, Some(StampTx::Ring(tx)));
        nodes[link.to.0].set_stamps(Some(StampRx::Ring(rx)), None);
    }
}
