//! What crosses a network edge: runs of items as the shared-memory rings
//! carry them (the rkyv archive of a `Vec<T>`), behind a 16-byte header
//! that numbers them, and the control messages beside them.
//!
//! A run message is `MAGIC`, a tag byte, three zero bytes, the run's
//! sequence number (little-endian `u64`), then the archive. The sequence
//! number lets the receiver prove that nothing was lost, duplicated or
//! reordered between the two processes: Zenoh's reliable channel over TCP
//! should never do that, and if it does the run fails instead of
//! delivering a wrong stream.

use ringweave_ipc::record::{serialize_to_slice, VecOf};
use ringweave_ipc::record_ring::check_archive;
use ringweave_ipc::Record;
use rkyv::ser::allocator::Arena;
use rkyv::util::AlignedVec;

/// Bytes of runs a receiver grants ahead of what it has read: what may be
/// in flight on one edge. Small runs get more of them, so a credit round
/// trip (tens of µs) does not throttle the sender.
const WINDOW_BYTES: usize = 8 << 20;

/// Runs a receiver grants ahead of what it has read, for runs of at most
/// `run_bytes`: 2 MiB of them, at least 16, at most 1024. Every host
/// computes it from the same `Cluster::run_bytes`.
pub(crate) fn window(run_bytes: usize) -> u64 {
    (WINDOW_BYTES / run_bytes.max(1)).clamp(16, 1024) as u64
}

/// Bytes before a message's body.
pub(crate) const HEADER: usize = 16;
const MAGIC: [u8; 4] = *b"RWN1";

/// What a message on an edge or control key says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Tag {
    /// A run of items: the body is the archive of a `Vec<T>`.
    Run = 1,
    /// The end of an edge's stream: `seq` is the number of runs sent, the
    /// body the number of items (`u64`).
    End = 2,
    /// A host finished everything it had to do (control key).
    Done = 3,
    /// A host's run failed: the body is the reason, UTF-8 (control key).
    Abort = 4,
    /// The receiver of an edge took its end: the body is the items it
    /// received (`u64`), `seq` the runs.
    Ack = 5,
    /// The receiver of an edge lets the sender have sent the body's number
    /// of runs (`u64`) in all.
    Credit = 6,
}

/// A message's header, parsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Header {
    pub tag: Tag,
    pub seq: u64,
}

/// Starts a message: the header, then `body`.
pub(crate) fn message(tag: Tag, seq: u64, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + body.len());
    write_header(&mut out, tag, seq);
    out.extend_from_slice(body);
    out
}

fn write_header(out: &mut Vec<u8>, tag: Tag, seq: u64) {
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&[tag as u8, 0, 0, 0]);
    out.extend_from_slice(&seq.to_le_bytes());
}

/// Parses a message's header: `Err` says what is wrong with it.
pub(crate) fn header(bytes: &[u8]) -> Result<Header, String> {
    if bytes.len() < HEADER || bytes[..4] != MAGIC {
        return Err(format!(
            "a message of {} bytes that is not a ringweave message (bad header)",
            bytes.len()
        ));
    }
    let tag = match bytes[4] {
        1 => Tag::Run,
        2 => Tag::End,
        3 => Tag::Done,
        4 => Tag::Abort,
        5 => Tag::Ack,
        6 => Tag::Credit,
        other => return Err(format!("a message with unknown tag {other}")),
    };
    let mut seq = [0; 8];
    seq.copy_from_slice(&bytes[8..16]);
    Ok(Header {
        tag,
        seq: u64::from_le_bytes(seq),
    })
}

/// A `u64` body (`End`, `Ack`).
pub(crate) fn body_u64(bytes: &[u8]) -> Result<u64, String> {
    let body = &bytes[HEADER.min(bytes.len())..];
    let array: [u8; 8] = body
        .try_into()
        .map_err(|_| format!("a count of {} bytes, not 8", body.len()))?;
    Ok(u64::from_le_bytes(array))
}

/// Archives runs of items into messages, reusing its scratch space.
#[derive(Default)]
pub(crate) struct RunEncoder {
    arena: Arena,
}

impl RunEncoder {
    /// The message of run `seq` holding `items`.
    pub(crate) fn encode<T: Record>(&mut self, seq: u64, items: &[T]) -> Result<Vec<u8>, String> {
        // A first guess that fits plain items; the serializer counts past
        // the window when it is short, so a second pass has the exact size.
        let mut out = Vec::new();
        let mut window = std::mem::size_of_val(items) + 64;
        loop {
            out.clear();
            write_header(&mut out, Tag::Run, seq);
            out.resize(HEADER + window, 0);
            let len = serialize_to_slice(&VecOf(items), &mut self.arena, &mut out[HEADER..])
                .map_err(|e| format!("archiving a run of {} items: {e}", items.len()))?;
            if len <= window {
                out.truncate(HEADER + len);
                return Ok(out);
            }
            window = len;
        }
    }
}

/// Validates and deserializes run messages, reusing an aligned buffer
/// (the archive must sit 16-byte aligned, as in a record ring; a network
/// buffer is not).
#[derive(Default)]
pub(crate) struct RunDecoder {
    aligned: AlignedVec<16>,
}

impl RunDecoder {
    /// The items of a run message (`bytes`, header included).
    pub(crate) fn decode<T: Record>(&mut self, bytes: &[u8]) -> Result<Vec<T>, String> {
        self.aligned.clear();
        self.aligned
            .extend_from_slice(&bytes[HEADER.min(bytes.len())..]);
        let archived = check_archive::<Vec<T>>(&self.aligned)
            .map_err(|e| format!("a run of {} bytes failed validation: {e}", bytes.len()))?;
        rkyv::deserialize::<Vec<T>, rkyv::rancor::Error>(archived)
            .map_err(|e| format!("deserializing a run of {} bytes: {e}", bytes.len()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_round_trip_with_their_number() {
        let mut encoder = RunEncoder::default();
        let mut decoder = RunDecoder::default();
        let items: Vec<(u64, String)> = (0..100).map(|i| (i, "x".repeat(i as usize))).collect();
        let bytes = encoder.encode(7, &items).unwrap();
        assert_eq!(
            header(&bytes).unwrap(),
            Header {
                tag: Tag::Run,
                seq: 7
            }
        );
        assert_eq!(decoder.decode::<(u64, String)>(&bytes).unwrap(), items);
        let empty = encoder.encode::<u64>(8, &[]).unwrap();
        assert!(decoder.decode::<u64>(&empty).unwrap().is_empty());
    }

    #[test]
    fn damaged_messages_are_refused() {
        let mut encoder = RunEncoder::default();
        let mut decoder = RunDecoder::default();
        let mut bytes = encoder.encode(0, &[1u64, 2, 3]).unwrap();
        assert!(header(&bytes[..10]).is_err());
        let mut bad = bytes.clone();
        bad[0] = b'X';
        assert!(header(&bad).is_err());
        bad = bytes.clone();
        bad[4] = 99;
        assert!(header(&bad).unwrap_err().contains("99"));
        // A length word that points past the archive.
        let n = bytes.len();
        bytes[n - 4..].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(decoder.decode::<u64>(&bytes).is_err());
        let end = message(Tag::End, 3, &42u64.to_le_bytes());
        assert_eq!(body_u64(&end).unwrap(), 42);
        assert!(body_u64(&message(Tag::End, 3, &[1, 2])).is_err());
    }
}
