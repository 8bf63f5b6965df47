//! The stream peers: a Unix socketpair and a pipe carrying length-prefixed
//! rkyv archives.

use super::payload::Payload;
use super::{
    forked, forked_with, Outcome, Placement, RoundTrips, BATCH_BYTES, BLOB_LEN, EXIT_INVALID,
    EXIT_OK, EXIT_TRANSPORT, STREAM_BUF,
};
use rkyv::rancor;
use rkyv::util::AlignedVec;
use std::fmt;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::time::Duration;

#[derive(Clone, Copy, Debug)]
pub(super) enum Transport {
    Socketpair,
    Pipe,
}

impl Transport {
    /// `(reader, writer)`.
    fn open(self) -> (OwnedFd, OwnedFd) {
        match self {
            Self::Socketpair => {
                let (a, b) = UnixStream::pair().expect("socketpair");
                (a.into(), b.into())
            }
            Self::Pipe => nix::unistd::pipe().expect("pipe"),
        }
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Socketpair => "socketpair",
            Self::Pipe => "pipe",
        })
    }
}

/// Appends `value`'s stream frame to `buf`: its length as an 8-byte
/// little-endian word, the archive `rkyv::to_bytes` would make (serialized
/// in place), zero padding to 8 bytes. `buf`'s length is a multiple of 8,
/// so every archive starts 8-aligned in the buffer (all these archives need
/// at most 8).
fn append_frame<T: Payload>(mut buf: AlignedVec, value: &T) -> AlignedVec {
    let at = buf.len();
    debug_assert!(at % 8 == 0);
    buf.extend_from_slice(&[0; 8]);
    let mut buf = rkyv::api::high::to_bytes_in::<_, rancor::Error>(value, buf).expect("serialize");
    let len = buf.len() - at - 8;
    buf[at..at + 8].copy_from_slice(&(len as u64).to_le_bytes());
    buf.extend_from_slice(&[0; 8][..len.next_multiple_of(8) - len]);
    buf
}

/// The child's side of a stream: reads frames until `total` records are
/// consumed; returns `(count, sum)` or an exit code.
fn stream_consume<T: Payload>(r: &mut File, total: u64) -> Result<(u64, u64), i32> {
    let mut buf = AlignedVec::<16>::with_capacity(STREAM_BUF);
    buf.resize(STREAM_BUF, 0);
    let max_frame = 8 + (BLOB_LEN + 64).next_multiple_of(8);
    let (mut start, mut end) = (0usize, 0usize);
    let (mut got, mut sum) = (0u64, 0u64);
    while got < total {
        if STREAM_BUF - end < max_frame {
            buf.copy_within(start..end, 0);
            end -= start;
            start = 0;
        }
        let n = r.read(&mut buf[end..]).map_err(|_| EXIT_TRANSPORT)?;
        if n == 0 {
            return Err(EXIT_TRANSPORT);
        }
        end += n;
        while end - start >= 8 {
            let word: [u8; 8] = buf[start..start + 8].try_into().expect("8 bytes");
            let len = u64::from_le_bytes(word) as usize;
            if len > max_frame {
                return Err(EXIT_TRANSPORT);
            }
            let frame = 8 + len.next_multiple_of(8);
            if end - start < frame {
                break;
            }
            let bytes = &buf[start + 8..start + 8 + len];
            let archived = rkyv::access::<rkyv::Archived<T>, rancor::Error>(bytes)
                .map_err(|_| EXIT_INVALID)?;
            sum = sum.wrapping_add(T::check_archived(archived));
            got += 1;
            start += frame;
        }
        if start == end {
            (start, end) = (0, 0);
        }
    }
    Ok((got, sum))
}

/// The parent's side: frames `total` records of `pool`, `per_write` per
/// `write` (the last may hold fewer).
fn stream_produce<T: Payload>(w: &mut File, pool: &[T], total: u64, per_write: usize) {
    let mut buf = AlignedVec::<16>::with_capacity(BATCH_BYTES + BLOB_LEN + 128);
    let mut in_buf = 0;
    for i in 0..total {
        buf = append_frame(buf, &pool[i as usize % T::POOL]);
        in_buf += 1;
        if in_buf == per_write {
            w.write_all(&buf).expect("stream write");
            buf.clear();
            in_buf = 0;
        }
    }
    if in_buf > 0 {
        w.write_all(&buf).expect("stream write");
    }
}

/// Sends `total` records of `pool` over `transport`, `per_write` frames per
/// `write`.
pub(super) fn stream<T: Payload>(
    transport: Transport,
    pool: &[T],
    total: u64,
    per_write: usize,
) -> Outcome<()> {
    let (reader, writer) = transport.open();
    let raw = reader.as_raw_fd();
    forked(
        &transport.to_string(),
        move |report| {
            // SAFETY: `raw` is the reader end, open in this forked process
            // (the parent closes its own copy only after the fork); nothing
            // else in the child owns it.
            let mut r = unsafe { File::from_raw_fd(raw) };
            report.ready();
            match stream_consume::<T>(&mut r, total) {
                Ok((got, sum)) => {
                    report.done(got, sum);
                    EXIT_OK
                }
                Err(code) => code,
            }
        },
        move || {
            // The child has its copy: without ours, a dead child makes our
            // writes fail (EPIPE) instead of blocking.
            drop(reader);
            File::from(writer)
        },
        |w| stream_produce(w, pool, total, per_write),
    )
}

pub(super) fn rtt_socketpair(mut plan: RoundTrips<'_>) -> Duration {
    let total = plan.total();
    let (parent_end, child_end) = UnixStream::pair().expect("socketpair");
    let raw = child_end.as_raw_fd();
    // One u64 frame: 8-byte length, 8-byte archive.
    const FRAME: usize = 16;
    let out = forked_with(
        Placement::Pinned,
        "socketpair_rtt",
        move |report| {
            // SAFETY: `raw` is the child's end, open in this forked process;
            // nothing else in the child owns it.
            let mut s = unsafe { File::from_raw_fd(raw) };
            let mut frame = AlignedVec::<16>::with_capacity(FRAME);
            frame.resize(FRAME, 0);
            let mut out = AlignedVec::<16>::with_capacity(FRAME);
            report.ready();
            let mut sum = 0u64;
            for _ in 0..total {
                if s.read_exact(&mut frame).is_err() {
                    return EXIT_TRANSPORT;
                }
                let Ok(v) = rkyv::access::<rkyv::Archived<u64>, rancor::Error>(&frame[8..]) else {
                    return EXIT_INVALID;
                };
                let v = v.to_native();
                sum = sum.wrapping_add(v);
                out.clear();
                out = append_frame(out, &v);
                if s.write_all(&out).is_err() {
                    return EXIT_TRANSPORT;
                }
            }
            report.done(total, sum);
            EXIT_OK
        },
        move || {
            drop(child_end);
            let mut frame = AlignedVec::<16>::with_capacity(FRAME);
            frame.resize(FRAME, 0);
            (File::from(OwnedFd::from(parent_end)), frame)
        },
        |(s, frame)| {
            let mut out = AlignedVec::<16>::with_capacity(FRAME);
            plan.run(|i| {
                out.clear();
                out = append_frame(std::mem::take(&mut out), &i);
                s.write_all(&out).expect("socket write");
                s.read_exact(&mut frame[..]).expect("socket read");
                let v = rkyv::access::<rkyv::Archived<u64>, rancor::Error>(&frame[8..])
                    .expect("valid echo")
                    .to_native();
                assert_eq!(v, i, "socketpair_rtt: wrong echo");
            })
        },
    );
    out.verify("socketpair_rtt", total, plan.sum());
    out.value
}
