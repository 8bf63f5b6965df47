//! Single-process tests of the record ring: framing, wrap-around, staging,
//! validation, closing. The multi-process ones are in `ipc/tests/`.

use super::*;
use crate::segment::SegmentLayout;

/// A segment holding one ring at payload offset 0.
fn ring(capacity: usize) -> RecordRing {
    let mut layout = SegmentLayout::new();
    let offset = layout
        .reserve(RecordRing::layout(capacity).unwrap())
        .unwrap();
    assert_eq!(offset, 0);
    let segment = Arc::new(Segment::create("ringweave-ring-unit", layout.size()).unwrap());
    RecordRing::new(&segment, offset, capacity).unwrap()
}

/// Both ends of `ring`.
fn ends<T: Record>(ring: &RecordRing) -> (RecordProducer<T>, RecordConsumer<T>) {
    // SAFETY: one producer and one consumer per ring in these tests, used on
    // the test's thread (or moved to one other thread), dropped before the
    // descriptor that keeps the segment mapped.
    unsafe { (ring.producer(), ring.consumer()) }
}

/// `n` bytes of the arena at arena offset `at`.
fn arena_bytes(ring: &RecordRing, at: usize, n: usize) -> *mut u8 {
    ring.segment()
        .region(RecordRing::ARENA_OFFSET + at, n)
        .unwrap()
        .as_ptr()
}

#[test]
fn handles_are_send_and_the_descriptor_is_shared() {
    fn send<T: Send>() {}
    fn sync<T: Sync>() {}
    send::<RecordProducer<String>>();
    send::<RecordConsumer<String>>();
    send::<RecordRing>();
    sync::<RecordRing>();
}

#[test]
fn staged_records_appear_on_flush_only() {
    let ring = ring(1024);
    let (mut tx, mut rx) = ends::<u64>(&ring);
    for i in 0..5 {
        tx.push(&i).unwrap();
    }
    assert_eq!(tx.staged(), 5);
    assert_eq!(rx.pop(), Err(PopError::Empty));
    assert_eq!(ring.positions(), (0, 0));
    assert_eq!(tx.flush(), 5);
    assert_eq!(tx.staged(), 0);
    // u64: 8 archived bytes, a 32-byte frame.
    assert_eq!(ring.positions(), (0, 5 * 32));
    assert_eq!(tx.flush(), 0);
    for i in 0..5 {
        assert_eq!(rx.pop(), Ok(i));
    }
    assert_eq!(rx.pop(), Err(PopError::Empty));
    assert_eq!(ring.positions(), (160, 160));
}

#[test]
fn wraps_without_splitting_records() {
    // Sizes that do not divide the arena, so frames land everywhere and
    // padding is needed on most wraps.
    let ring = ring(256);
    let (mut tx, mut rx) = ends::<Vec<u8>>(&ring);
    let mut sent = 0u64;
    let mut received = 0u64;
    let value = |i: u64| vec![i as u8; (i as usize * 7) % 100];
    while received < 2_000 {
        while tx.push(&value(sent)).is_ok() {
            sent += 1;
        }
        tx.flush();
        let mut got = Vec::new();
        rx.pop_batch(usize::MAX, &mut got).unwrap();
        for v in got {
            assert_eq!(v, value(received));
            received += 1;
        }
    }
    let (read, _) = ring.positions();
    assert!(read > 100 * 256, "many wrap-arounds: read position {read}");
}

#[test]
fn a_record_filling_the_whole_arena_goes_through_padding() {
    let ring = ring(256);
    let (mut tx, mut rx) = ends::<Vec<u8>>(&ring);
    // Find the largest Vec<u8> that fits: its archive is the bytes plus an
    // 8-byte header, so 240 - 8 data bytes make a 256-byte frame.
    let big = vec![7u8; ring.max_record_len() - 8];
    tx.push(&vec![1]).unwrap();
    tx.flush();
    assert_eq!(rx.pop(), Ok(vec![1]));
    // Not at the arena start: padding is staged, then there is no room.
    assert_eq!(tx.push(&big), Err(PushError::Full));
    assert_eq!(tx.staged(), 0, "padding is not a record");
    tx.flush();
    // The consumer finds only padding, and releases it.
    assert_eq!(rx.pop(), Err(PopError::Empty));
    tx.push(&big).unwrap();
    tx.flush();
    assert_eq!(ring.positions(), (256, 512));
    assert_eq!(rx.pop(), Ok(big));
}

#[test]
fn too_large_is_refused_before_anything_is_staged() {
    let ring = ring(4096);
    let (mut tx, mut rx) = ends::<Vec<u8>>(&ring);
    tx.push(&vec![1, 2, 3]).unwrap();
    let err = tx.push(&vec![0u8; 10_000]).unwrap_err();
    let PushError::Record(RecordError::TooLarge { record, capacity }) = err.clone() else {
        panic!("expected TooLarge, got {err:?}");
    };
    assert!(record >= 10_000, "{record}");
    assert_eq!(capacity, 4096 - 16);
    let message = err.to_string();
    assert!(
        message.contains(&record.to_string()) && message.contains("4080"),
        "{message}"
    );
    assert_eq!(tx.staged(), 1);
    tx.flush();
    assert_eq!(rx.pop(), Ok(vec![1, 2, 3]));
    assert_eq!(rx.pop(), Err(PopError::Empty));
    // The producer is still usable.
    tx.push(&vec![4]).unwrap();
    tx.flush();
    assert_eq!(rx.pop(), Ok(vec![4]));
    // Same through the blocking push: no wait, same error.
    assert!(matches!(
        tx.push_blocking(&vec![0u8; 5000]),
        Err(PushError::Record(RecordError::TooLarge { .. }))
    ));
}

#[test]
fn corrupted_archive_is_an_error_and_can_be_skipped() {
    let ring = ring(1024);
    let (mut tx, mut rx) = ends::<String>(&ring);
    tx.push(&"first".to_string()).unwrap();
    tx.push(&"x".repeat(40)).unwrap();
    tx.push(&"third".to_string()).unwrap();
    tx.flush();
    assert_eq!(rx.pop().unwrap(), "first");
    // The second frame starts at 32 ("first" is inline: an 8-byte archive).
    // Its archive is 40 bytes of text then the ArchivedString (a length,
    // then a relative offset to the text); point the offset far outside the
    // archive.
    let (read, _) = ring.positions();
    assert_eq!(read, 32);
    let archive = arena_bytes(&ring, 32 + FRAME_HEADER, 48);
    // SAFETY: published, unreleased bytes; nothing else touches them now.
    unsafe { archive.add(44).cast::<i32>().write_unaligned(0x1000_0000) };
    for _ in 0..2 {
        match rx.pop() {
            Err(PopError::Record(RecordError::Invalid {
                position,
                len,
                message,
            })) => {
                assert_eq!(position, 32);
                assert_eq!(len, 48);
                assert!(!message.is_empty());
            }
            other => panic!("expected Invalid, got {other:?}"),
        }
    }
    assert!(matches!(
        rx.read_with(|s| s.len()),
        Err(PopError::Record(RecordError::Invalid { .. }))
    ));
    rx.skip().unwrap();
    assert_eq!(rx.pop().unwrap(), "third");
}

#[test]
fn damaged_frame_header_stops_reading() {
    let ring = ring(1024);
    let (mut tx, mut rx) = ends::<u64>(&ring);
    for i in 0..3 {
        tx.push(&i).unwrap();
    }
    tx.flush();
    // Second frame's length word: claim a huge record.
    let header = arena_bytes(&ring, 32, 16).cast::<u64>();
    // SAFETY: published, unreleased bytes; nothing else touches them now.
    unsafe { header.write(1 << 40) };
    assert_eq!(rx.pop(), Ok(0));
    let err = rx.pop().unwrap_err();
    assert!(
        matches!(
            err,
            PopError::Record(RecordError::Frame {
                position: 32,
                len: 0x100_0000_0000,
                ..
            })
        ),
        "{err:?}"
    );
    assert!(rx.skip().is_err(), "a damaged frame cannot be skipped");
    let seen: Vec<_> = rx.iter_unread().collect();
    assert_eq!(seen.len(), 1, "the iterator stops after a damaged frame");
    assert!(seen[0].is_err());
    // A consistent but impossible length is caught as well.
    // SAFETY: as above.
    unsafe { header.cast::<[u64; 2]>().write([5000, !5000]) };
    assert!(matches!(
        rx.pop(),
        Err(PopError::Record(RecordError::Frame { len: 5000, .. }))
    ));
}

#[test]
fn batches_release_with_one_store() {
    let ring = ring(4096);
    let (mut tx, mut rx) = ends::<(u32, String)>(&ring);
    for i in 0..20 {
        tx.push(&(i, format!("n{i}"))).unwrap();
    }
    tx.flush();
    let (_, write) = ring.positions();
    let mut seen = Vec::new();
    let n = rx.read_batch(15, |r| seen.push(r.0.to_native())).unwrap();
    assert_eq!(n, 15);
    assert_eq!(seen, (0..15).collect::<Vec<_>>());
    let mut rest = Vec::new();
    assert_eq!(rx.pop_batch(100, &mut rest), Ok(5));
    assert_eq!(rest[4], (19, "n19".to_string()));
    assert_eq!(ring.positions(), (write, write));
    assert_eq!(rx.read_batch(10, |_| {}), Err(PopError::Empty));
    drop(tx);
    assert_eq!(rx.pop_batch(10, &mut rest), Err(PopError::Closed));
}

#[test]
fn peeking_leaves_the_ring_as_it_was() {
    let ring = ring(512);
    let (mut tx, mut rx) = ends::<String>(&ring);
    // Wrap once so the unread records straddle padding.
    for i in 0..6 {
        tx.push(&format!("{i:>30}")).unwrap();
        tx.flush();
        assert!(rx.pop().is_ok());
    }
    let words: Vec<String> = (0..7).map(|i| format!("word {i}")).collect();
    for w in &words {
        tx.push(w).unwrap();
    }
    tx.flush();
    let before = ring.positions();
    let peeked: Vec<String> = rx.iter_unread().map(Result::unwrap).collect();
    assert_eq!(peeked, words);
    // SAFETY: the consumer releases nothing while the iterator lives.
    let by_descriptor: Vec<String> = unsafe { ring.peek_unread::<String>() }
        .map(Result::unwrap)
        .collect();
    assert_eq!(by_descriptor, words);
    assert_eq!(rx.peek_with(|s| s.as_str() == "word 0"), Ok(true));
    // SAFETY: as above.
    let mut unread = unsafe { ring.peek_unread::<String>() };
    assert_eq!(unread.next_with(|s| s.len()), Some(Ok(6)));
    assert!(unread.remaining_bytes() > 0);
    assert_eq!(ring.positions(), before);
    let popped: Vec<String> = std::iter::from_fn(|| rx.pop().ok()).collect();
    assert_eq!(popped, words);
}

#[test]
fn closing_either_end_is_seen() {
    let ring = ring(256);
    let (mut tx, mut rx) = ends::<u64>(&ring);
    tx.push(&1).unwrap();
    tx.push(&2).unwrap();
    tx.close(); // flushes
    assert!(ring.is_producer_closed());
    assert_eq!(rx.pop_blocking(), Ok(1));
    assert_eq!(rx.pop_blocking(), Ok(2));
    assert_eq!(rx.pop_blocking(), Err(PopError::Closed));
    assert_eq!(rx.wait_for_records(None, || false), WaitOutcome::Closed);
    drop(rx);

    // SAFETY: both ends are dropped.
    unsafe { ring.reopen() };
    let (mut tx, rx) = ends::<u64>(&ring);
    while tx.push(&0).is_ok() {}
    rx.close();
    assert_eq!(tx.push_blocking(&0), Err(PushError::Abandoned));
}

#[test]
fn waits_time_out_and_are_interrupted() {
    let ring = ring(128);
    let (mut tx, mut rx) = ends::<u64>(&ring);
    let soon = Instant::now() + Duration::from_millis(5);
    assert_eq!(rx.pop_until(Some(soon), || false), Err(PopError::Empty));
    let mut calls = 0;
    assert_eq!(
        rx.pop_until(None, || {
            calls += 1;
            calls == 3
        }),
        Err(PopError::Interrupted)
    );
    while tx.push(&0).is_ok() {}
    let soon = Instant::now() + Duration::from_millis(5);
    assert_eq!(
        tx.push_until(&0, Some(soon), || false),
        Err(PushError::Full)
    );
    assert_eq!(tx.staged(), 0, "waiting flushed the staged records");
    // The interrupt is polled while asleep, even though nobody wakes us.
    tx.set_poll_interval(Some(Duration::from_millis(1)));
    let start = Instant::now();
    assert_eq!(
        tx.push_until(&0, None, || start.elapsed() > Duration::from_millis(20)),
        Err(PushError::Interrupted)
    );
}

#[test]
fn threads_stream_through_a_small_ring() {
    let ring = ring(512);
    let (mut tx, mut rx) = ends::<(u64, String)>(&ring);
    let n = if cfg!(debug_assertions) {
        20_000
    } else {
        200_000
    };
    let producer = std::thread::spawn(move || {
        for i in 0..n {
            tx.push_blocking(&(i, "s".repeat((i % 50) as usize)))
                .unwrap();
            if i % 7 == 0 {
                tx.flush();
            }
        }
    });
    for i in 0..n {
        let (j, s) = rx.pop_blocking().unwrap();
        assert_eq!(j, i);
        assert_eq!(s.len(), (i % 50) as usize);
    }
    assert_eq!(rx.pop_blocking(), Err(PopError::Closed));
    producer.join().unwrap();
}

#[test]
fn descriptor_checks_its_region() {
    let segment = Arc::new(Segment::create("ringweave-ring-unit", 1 << 14).unwrap());
    assert_eq!(
        RecordRing::new(&segment, 0, 1000).unwrap_err(),
        RecordRingError::Capacity { capacity: 1000 }
    );
    assert_eq!(
        RecordRing::layout(32).unwrap_err(),
        RecordRingError::Capacity { capacity: 32 }
    );
    assert_eq!(
        RecordRing::new(&segment, 64, 1024).unwrap_err(),
        RecordRingError::Misaligned {
            offset: 64,
            align: 128
        }
    );
    assert!(matches!(
        RecordRing::new(&segment, 0, 1 << 20),
        Err(RecordRingError::Region(RegionError::OutOfBounds { .. }))
    ));
    let first = RecordRing::new(&segment, 0, 1024).unwrap();
    assert_eq!(first.capacity(), 1024);
    assert!(RecordRing::new(&segment, 0, 1024).is_ok());
    assert_eq!(
        RecordRing::new(&segment, 0, 2048).unwrap_err(),
        RecordRingError::CapacityMismatch {
            found: 1024,
            expected: 2048
        }
    );
}

#[test]
fn runs_of_items_cross_as_one_record_each() {
    use crate::record::VecOf;
    let ring = ring(1024);
    let (mut tx, mut rx) = ends::<Vec<u64>>(&ring);
    let items: Vec<u64> = (0..5000).map(|i| i * 7 + 1).collect();
    let (mut sent, mut len, mut got) = (0, 1, Vec::new());
    // Runs of 1..=37 items wrap the 1 KiB arena many times.
    while sent < items.len() {
        let run = &items[sent..(sent + len).min(items.len())];
        match tx.push_as(&VecOf(run)) {
            Ok(()) => {
                sent += run.len();
                len = len % 37 + 1;
            }
            Err(PushError::Full) => {
                tx.flush();
                let n = rx.pop_items(usize::MAX, |x| got.push(x)).unwrap();
                assert!(n > 0, "a full ring has items to read");
            }
            Err(e) => panic!("{e}"),
        }
    }
    drop(tx);
    loop {
        match rx.pop_items(usize::MAX, |x| got.push(x)) {
            Ok(_) => {}
            Err(PopError::Closed) => break,
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(got, items);
}

#[test]
fn pop_items_takes_whole_records_until_max() {
    use crate::record::VecOf;
    let ring = ring(4096);
    let (mut tx, mut rx) = ends::<Vec<u64>>(&ring);
    let items: Vec<u64> = (0..30).collect();
    for run in items.chunks(10) {
        tx.push_as(&VecOf(run)).unwrap();
    }
    // A `Vec` is a record of the same type.
    tx.push(&vec![100, 101]).unwrap();
    tx.flush();
    let mut got = Vec::new();
    // 15 is reached within the second record, which is taken whole.
    assert_eq!(rx.pop_items(15, |x| got.push(x)), Ok(20));
    assert_eq!(got, items[..20]);
    assert_eq!(rx.pop_items(1, |x| got.push(x)), Ok(10));
    assert_eq!(rx.pop_items(100, |x| got.push(x)), Ok(2));
    assert_eq!(got[28..], [28, 29, 100, 101]);
    assert_eq!(rx.pop_items(1, |x| got.push(x)), Err(PopError::Empty));
    assert_eq!(ring.positions().0, ring.positions().1, "all released");
}

#[test]
fn a_damaged_run_hands_out_nothing() {
    use crate::record::VecOf;
    let ring = ring(4096);
    let (mut tx, mut rx) = ends::<Vec<String>>(&ring);
    let bad = ["a".repeat(30), "b".repeat(30)];
    tx.push_as(&VecOf(&bad)).unwrap();
    tx.push_as(&VecOf(&["ok".to_string()])).unwrap();
    tx.flush();
    // The run's root (an ArchivedVec: a relative offset, then a length) is
    // the archive's last 8 bytes; claim 2^28 items.
    // SAFETY: published bytes no one else touches now; the frame header's
    // first word is the archive's length.
    let len = unsafe { arena_bytes(&ring, 0, 16).cast::<u64>().read() } as usize;
    let root_len = arena_bytes(&ring, FRAME_HEADER + len - 4, 4);
    // SAFETY: as above.
    unsafe { root_len.cast::<u32>().write_unaligned(1 << 28) };
    let mut got = Vec::new();
    match rx.pop_items(usize::MAX, |s| got.push(s)) {
        Err(PopError::Record(RecordError::Invalid {
            position, len: l, ..
        })) => {
            assert_eq!((position, l), (0, len));
        }
        other => panic!("expected Invalid, got {other:?}"),
    }
    assert!(got.is_empty(), "nothing of a damaged run is handed out");
    rx.skip().unwrap();
    assert_eq!(rx.pop_items(usize::MAX, |s| got.push(s)), Ok(1));
    assert_eq!(got, ["ok"]);
}

#[test]
fn a_run_too_large_for_the_ring_is_refused_with_both_sizes() {
    use crate::record::VecOf;
    let ring = ring(1024);
    let (mut tx, _rx) = ends::<Vec<u64>>(&ring);
    let items = vec![0u64; 200];
    match tx.push_as(&VecOf(&items)) {
        // 200 items of 8 bytes, then the 8-byte root.
        Err(PushError::Record(RecordError::TooLarge { record, capacity })) => {
            assert_eq!((record, capacity), (1608, 1008));
        }
        other => panic!("expected TooLarge, got {other:?}"),
    }
    assert_eq!(tx.staged(), 0);
    tx.push_as(&VecOf(&items[..100])).unwrap();
    assert_eq!(tx.staged(), 1);
}

#[test]
fn an_archive_shorter_than_its_root_is_invalid() {
    let ring = ring(1024);
    // A producer of one type, a consumer of a larger one: the validating
    // reader must catch the mismatch, not read past the archive.
    // SAFETY: one end of each kind, dropped before the descriptor.
    let (mut tx, mut rx) = unsafe { (ring.producer::<u64>(), ring.consumer::<(u64, u64)>()) };
    tx.push(&7).unwrap();
    tx.flush();
    match rx.pop() {
        Err(PopError::Record(RecordError::Invalid { len, message, .. })) => {
            assert_eq!(len, 8);
            assert!(message.contains("smaller than its root"), "{message}");
        }
        other => panic!("expected Invalid, got {other:?}"),
    }
}

#[test]
fn empty_archives_still_take_a_frame_and_fill_the_ring() {
    // `()` archives to zero bytes, so a record of it is a bare 16-byte frame
    // header; a full ring must refuse it rather than write past the free
    // bytes.
    let ring = ring(1024);
    let (mut tx, mut rx) = ends::<()>(&ring);
    let mut pushed = 0;
    while pushed <= 1024 / FRAME_HEADER {
        match tx.push(&()) {
            Ok(()) => pushed += 1,
            Err(PushError::Full) => break,
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(
        pushed,
        1024 / FRAME_HEADER,
        "one 16-byte frame each, then Full"
    );
    tx.flush();
    for _ in 0..pushed {
        rx.pop().unwrap();
    }
    assert_eq!(rx.pop(), Err(PopError::Empty));
}
