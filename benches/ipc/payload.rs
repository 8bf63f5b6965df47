//! The payloads of the throughput benches: the records, the check value a
//! consumer sums for each, and the sizes of their frames on each transport.

use super::iceoryx::Peer;
use super::{BATCH_BYTES, BLOB_LEN, ICE_BLOB_BUFFER, ICE_BUFFER, TEXT_LEN};
use iceoryx2::prelude::ZeroCopySend;
use ringweave_ipc::record::{frame_len, Record};
use rkyv::api::high::HighSerializer;
use rkyv::rancor;
use rkyv::ser::allocator::ArenaHandle;
use rkyv::util::AlignedVec;

/// A 64-byte record: plain fields, as a market-data tick would have.
/// `#[repr(C)]` and `ZeroCopySend` so that iceoryx2 can send it as it is.
#[derive(Debug, Clone, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, ZeroCopySend)]
#[repr(C)]
pub(super) struct Tick {
    pub(super) id: u64,
    pub(super) ts_ns: u64,
    pub(super) price: f64,
    pub(super) qty: u64,
    pub(super) venue: u32,
    pub(super) side: u32,
    pub(super) tag: [u8; 24],
}

const _: () = assert!(std::mem::size_of::<Tick>() == 64);
const _: () = assert!(std::mem::size_of::<ArchivedTick>() == 64);

/// A record holding a heap `String` of `TEXT_LEN` bytes.
#[derive(Debug, Clone, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub(super) struct Text {
    pub(super) id: u64,
    pub(super) text: String,
}

pub(super) fn tick_check(
    id: u64,
    ts: u64,
    price: f64,
    qty: u64,
    venue: u32,
    side: u32,
    tag: &[u8],
) -> u64 {
    tag.iter()
        .fold(id, |s, &b| s.wrapping_add(u64::from(b)))
        .wrapping_add(ts)
        .wrapping_add(price.to_bits())
        .wrapping_add(qty)
        .wrapping_add(u64::from(venue) << 32 | u64::from(side))
}

/// Every byte of the string counts: a consumer reads what it receives.
pub(super) fn text_check(id: u64, text: &[u8]) -> u64 {
    text.iter()
        .fold(id.wrapping_add(text.len() as u64), |s, &b| {
            s.wrapping_add(u64::from(b))
        })
}

/// One byte of every 64-byte line: the consumer touches the whole payload
/// without the sum dominating the copy.
pub(super) fn blob_check(bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .step_by(64)
        .fold(bytes.len() as u64, |s, &b| s.wrapping_add(u64::from(b)))
}

/// A payload of the throughput benches.
pub(super) trait Payload:
    Record + Peer + for<'a> rkyv::Serialize<HighSerializer<AlignedVec, ArenaHandle<'a>, rancor::Error>>
{
    /// Values in the pool the records cycle through.
    const POOL: usize;
    /// Subscriber buffer of the iceoryx2 service, in samples.
    const ICE_BUFFER: usize;
    /// The `k`-th value of the pool.
    fn make(k: u64) -> Self;
    /// What the consumer adds to its running sum for this record.
    fn check(&self) -> u64;
    /// The same, read from the archive in place.
    fn check_archived(archived: &rkyv::Archived<Self>) -> u64;
    /// The record as plain bytes, for payloads that are nothing else (the
    /// hand-off floor sends those).
    fn blob(&self) -> Option<&[u8]> {
        None
    }
}

impl Payload for u64 {
    const POOL: usize = 64;
    const ICE_BUFFER: usize = ICE_BUFFER;

    fn make(k: u64) -> Self {
        k.wrapping_mul(0x9E37_79B9_7F4A_7C15)
    }

    fn check(&self) -> u64 {
        *self
    }

    fn check_archived(archived: &rkyv::Archived<Self>) -> u64 {
        archived.to_native()
    }
}

impl Payload for Tick {
    const POOL: usize = 64;
    const ICE_BUFFER: usize = ICE_BUFFER;

    fn make(k: u64) -> Self {
        let mut tag = [0u8; 24];
        for (j, b) in tag.iter_mut().enumerate() {
            *b = (k as u8).wrapping_mul(7).wrapping_add(j as u8);
        }
        Self {
            id: k,
            ts_ns: 1_700_000_000_000_000_000 + k * 1_000,
            price: 100.0 + k as f64 / 64.0,
            qty: 10 + k % 7,
            venue: (k % 5) as u32,
            side: (k % 2) as u32,
            tag,
        }
    }

    fn check(&self) -> u64 {
        tick_check(
            self.id, self.ts_ns, self.price, self.qty, self.venue, self.side, &self.tag,
        )
    }

    fn check_archived(a: &ArchivedTick) -> u64 {
        tick_check(
            a.id.to_native(),
            a.ts_ns.to_native(),
            a.price.to_native(),
            a.qty.to_native(),
            a.venue.to_native(),
            a.side.to_native(),
            &a.tag,
        )
    }
}

impl Payload for Text {
    const POOL: usize = 64;
    const ICE_BUFFER: usize = ICE_BUFFER;

    fn make(k: u64) -> Self {
        let text = (0..TEXT_LEN)
            .map(|j| char::from(b'a' + ((k as usize + j) % 26) as u8))
            .collect();
        Self { id: k, text }
    }

    fn check(&self) -> u64 {
        text_check(self.id, self.text.as_bytes())
    }

    fn check_archived(a: &ArchivedText) -> u64 {
        text_check(a.id.to_native(), a.text.as_bytes())
    }
}

impl Payload for Vec<u8> {
    const POOL: usize = 4;
    const ICE_BUFFER: usize = ICE_BLOB_BUFFER;

    fn make(k: u64) -> Self {
        (0..BLOB_LEN)
            .map(|j| (k as usize * 31 + j * 7) as u8)
            .collect()
    }

    fn check(&self) -> u64 {
        blob_check(self)
    }

    fn check_archived(a: &rkyv::vec::ArchivedVec<u8>) -> u64 {
        blob_check(a.as_slice())
    }

    fn blob(&self) -> Option<&[u8]> {
        Some(self)
    }
}

/// What the consumer must report for `total` records cycling through a
/// pool whose check values are `checks`.
pub(super) fn expected_sum(checks: &[u64], total: u64) -> u64 {
    let p = checks.len() as u64;
    let all = checks.iter().fold(0u64, |s, &c| s.wrapping_add(c));
    let rest = checks[..(total % p) as usize]
        .iter()
        .fold(0u64, |s, &c| s.wrapping_add(c));
    all.wrapping_mul(total / p).wrapping_add(rest)
}

/// Sizes of a payload's records on each transport.
#[derive(Clone, Copy, Debug)]
pub(super) struct Shape {
    /// Bytes of the rkyv archive.
    pub(super) archive: usize,
    /// Bytes of a record-ring frame (16-byte header, archive, padding to 16).
    pub(super) ring_frame: usize,
    /// Records per `flush` in the batched ring contender (and per
    /// `read_batch` in every ring consumer).
    pub(super) per_flush: usize,
    /// Bytes of a stream frame (8-byte length, archive, padding to 8).
    pub(super) stream_frame: usize,
    /// Records per `write` in the batched stream contenders.
    pub(super) per_write: usize,
}

impl Shape {
    pub(super) fn of<T: Payload>(pool: &[T]) -> Self {
        let archive = rkyv::to_bytes::<rancor::Error>(&pool[0])
            .expect("serialize")
            .len();
        for v in pool {
            let len = rkyv::to_bytes::<rancor::Error>(v).expect("serialize").len();
            assert_eq!(len, archive, "pool records must have one size");
        }
        let ring_frame = frame_len(archive);
        let stream_frame = 8 + archive.next_multiple_of(8);
        Self {
            archive,
            ring_frame,
            per_flush: (BATCH_BYTES / ring_frame).max(1),
            stream_frame,
            per_write: (BATCH_BYTES / stream_frame).max(1),
        }
    }
}
