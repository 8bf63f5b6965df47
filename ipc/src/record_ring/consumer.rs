//! The reading end of a record ring.

use super::{
    wait_polled, Frame, Located, PopError, RawRing, Unread, WaitOutcome, DEFAULT_POLL_INTERVAL,
};
use crate::futex::FutexSleeper;
use crate::index::ConsumerCursor;
use crate::record::{Record, RecordError, FRAME_HEADER};
use crate::wait::{self, WaitStrategy};
use std::fmt;
use std::marker::PhantomData;
use std::time::{Duration, Instant};

/// The reading end of a [`RecordRing`](super::RecordRing). `Send`, not
/// `Sync`; one per ring (see [`RecordRing::consumer`](super::RecordRing::consumer)).
///
/// Every record is validated with bytecheck before it is read, unless
/// [`trust_producer`](Self::trust_producer) was called: the ring is the
/// trust boundary between processes. A record that fails validation, or a
/// damaged frame, is reported as [`PopError::Record`] and left in the ring;
/// nothing in the ring's contents can make a validating consumer panic or
/// read outside the arena.
pub struct RecordConsumer<T> {
    ring: RawRing,
    cursor: ConsumerCursor,
    /// Skip validation: set only through the `unsafe` `trust_producer`.
    trusted: bool,
    strategy: WaitStrategy,
    poll: Option<Duration>,
    _record: PhantomData<fn() -> T>,
}

// SAFETY: the handle owns its cursor; the raw pointers point into a shared
// mapping whose concurrent use the index protocol orders. It never holds a
// `T` (values it deserializes are returned at once).
unsafe impl<T> Send for RecordConsumer<T> {}

impl<T> fmt::Debug for RecordConsumer<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecordConsumer")
            .field("capacity", &self.ring.capacity)
            .field("position", &self.cursor.position())
            .field("trusted", &self.trusted)
            .finish()
    }
}

impl<T: Record> RecordConsumer<T> {
    pub(super) fn attach(ring: RawRing) -> Self {
        Self {
            cursor: ConsumerCursor::attach(ring.index()),
            ring,
            trusted: false,
            strategy: super::DEFAULT_WAIT,
            poll: Some(DEFAULT_POLL_INTERVAL),
            _record: PhantomData,
        }
    }

    /// The next record's frame at or after `from` (a frame boundary at or
    /// after our position), skipping padding. `Ok((None, end))` when only
    /// padding, up to `end`, is readable.
    fn locate(&mut self, from: u64) -> Result<(Option<Located>, u64), RecordError> {
        let index = self.ring.index();
        let mut pos = from;
        loop {
            let ahead = pos - self.cursor.position();
            let readable = self.cursor.available(index, ahead + FRAME_HEADER as u64) - ahead;
            if readable == 0 {
                return Ok((None, pos));
            }
            // SAFETY: `pos..pos + readable` is published (`available`) and
            // only we release it, which we do not do while reading it.
            match unsafe { self.ring.frame(pos, readable) }? {
                Frame::Pad { end } => pos = end,
                Frame::Record(at) => return Ok((Some(at), pos)),
            }
        }
    }

    /// Releases everything before ring position `pos` with one store, and
    /// wakes the producer if it sleeps.
    fn release_to(&mut self, pos: u64) {
        let n = pos - self.cursor.position();
        if n > 0 {
            self.cursor.release(self.ring.index(), n);
            wait::notify(self.ring.index().space_waiter(), &FutexSleeper::new());
        }
    }

    /// The next record's frame, releasing padding in front of it (so that a
    /// producer waiting for the arena start gets it even when no record
    /// follows yet). `Ok(None)`: no record readable.
    fn next_frame(&mut self) -> Result<Option<Located>, RecordError> {
        let (found, after_padding) = self.locate(self.cursor.position())?;
        if found.is_none() {
            self.release_to(after_padding);
        }
        Ok(found)
    }

    /// `Empty` or `Closed`, for a ring where no record was found.
    fn empty_or_closed(&mut self) -> Result<PopError, RecordError> {
        if !self.ring.index().is_producer_closed() {
            return Ok(PopError::Empty);
        }
        // The close bit is stored after the producer's last publish, so a
        // reload now sees everything that will ever arrive.
        Ok(match self.next_frame()? {
            None => PopError::Closed,
            Some(_) => PopError::Empty,
        })
    }

    /// Runs `f` on the next record, validated, without waiting.
    fn take_with<R>(
        &mut self,
        f: impl FnOnce(&Self, Located) -> Result<R, RecordError>,
    ) -> Result<R, PopError> {
        loop {
            match self.next_frame()? {
                Some(at) => {
                    let r = f(self, at)?;
                    self.release_to(at.end);
                    return Ok(r);
                }
                None => match self.empty_or_closed()? {
                    // A record arrived between the two looks.
                    PopError::Empty if self.ring.index().is_producer_closed() => continue,
                    e => return Err(e),
                },
            }
        }
    }

    /// Takes the oldest record, deserialized, without waiting.
    ///
    /// # Errors
    ///
    /// [`PopError::Empty`], [`PopError::Closed`] (empty, and the producer is
    /// gone), or [`PopError::Record`] for a damaged record (left in place).
    pub fn pop(&mut self) -> Result<T, PopError> {
        // SAFETY: `at` is unreleased until `take_with` returns; `trusted` is
        // only set by `trust_producer`, whose caller vouched for the bytes.
        self.take_with(|c, at| unsafe { c.ring.read::<T>(at, c.trusted) })
    }

    /// Lends the oldest record, archived, to `f`, then consumes it; no `T` is
    /// built.
    ///
    /// # Errors
    ///
    /// As for [`pop`](Self::pop); `f` is not called on an error.
    pub fn read_with<R>(&mut self, f: impl FnOnce(&rkyv::Archived<T>) -> R) -> Result<R, PopError> {
        // SAFETY: as in `pop`; the reference does not outlive `f`.
        self.take_with(|c, at| unsafe { c.ring.access::<T>(at, c.trusted) }.map(f))
    }

    /// Lends the oldest record, archived, to `f` and leaves it in the ring.
    ///
    /// # Errors
    ///
    /// As for [`pop`](Self::pop).
    pub fn peek_with<R>(&mut self, f: impl FnOnce(&rkyv::Archived<T>) -> R) -> Result<R, PopError> {
        match self.next_frame()? {
            // SAFETY: as in `pop`; nothing is released while `f` runs.
            Some(at) => Ok(unsafe { self.ring.access::<T>(at, self.trusted) }.map(f)?),
            None => Err(self.empty_or_closed()?),
        }
    }

    /// Consumes the oldest record without validating its archive (only its
    /// frame): the way past a record that fails validation.
    ///
    /// # Errors
    ///
    /// [`PopError::Empty`], [`PopError::Closed`], or
    /// [`PopError::Record`] with [`RecordError::Frame`] if the frame itself is
    /// damaged (the ring cannot be read past it).
    pub fn skip(&mut self) -> Result<(), PopError> {
        self.take_with(|_, _| Ok(()))
    }

    /// Takes the oldest record, waiting (spin, yield, futex) while the ring
    /// is empty.
    ///
    /// # Errors
    ///
    /// [`PopError::Closed`] once the ring is empty and the producer is gone;
    /// [`PopError::Record`] as for [`pop`](Self::pop). A producer in another
    /// process that is killed never closes: use
    /// [`pop_until`](Self::pop_until) with an `interrupt` there.
    pub fn pop_blocking(&mut self) -> Result<T, PopError> {
        self.pop_until(None, || false)
    }

    /// Takes the oldest record, waiting while the ring is empty until
    /// `deadline`, or until `interrupt()` returns `true`.
    ///
    /// `interrupt` is checked between the wait's tiers and at least every
    /// poll interval while asleep (see
    /// [`set_poll_interval`](Self::set_poll_interval)) — check the producer
    /// process's liveness there, e.g. with
    /// [`Worker::try_status`](crate::worker::Worker::try_status).
    ///
    /// # Errors
    ///
    /// [`PopError::Empty`] on timeout, [`PopError::Interrupted`],
    /// [`PopError::Closed`], [`PopError::Record`].
    pub fn pop_until(
        &mut self,
        deadline: Option<Instant>,
        mut interrupt: impl FnMut() -> bool,
    ) -> Result<T, PopError> {
        loop {
            match self.pop() {
                Err(PopError::Empty) => {}
                done => return done,
            }
            match self.wait_for_records(deadline, &mut interrupt) {
                WaitOutcome::Ready(_) | WaitOutcome::Closed => {}
                WaitOutcome::Interrupted => return Err(PopError::Interrupted),
                WaitOutcome::TimedOut => return Err(PopError::Empty),
            }
        }
    }

    /// Waits until a record is readable, the ring is empty and closed,
    /// `interrupt()` returns `true`, or `deadline` passes. See
    /// [`pop_until`](Self::pop_until) for `interrupt`.
    ///
    /// `Ready` holds the bytes readable (records and padding). A damaged
    /// frame counts as ready, so that the read after the wait reports it.
    pub fn wait_for_records(
        &mut self,
        deadline: Option<Instant>,
        mut interrupt: impl FnMut() -> bool,
    ) -> WaitOutcome {
        let mut outcome = WaitOutcome::TimedOut;
        let ring = self.ring;
        let flag = ring.index().data_waiter();
        let strategy = self.strategy;
        let poll = self.poll;
        wait_polled(flag, strategy, deadline, poll, || {
            outcome = match self.next_frame() {
                Ok(Some(_)) | Err(_) => WaitOutcome::Ready(self.readable_bytes()),
                Ok(None) => match self.empty_or_closed() {
                    Ok(PopError::Closed) => WaitOutcome::Closed,
                    Ok(_) if self.ring.index().is_producer_closed() => {
                        WaitOutcome::Ready(self.readable_bytes())
                    }
                    Err(_) => WaitOutcome::Ready(self.readable_bytes()),
                    Ok(_) if interrupt() => WaitOutcome::Interrupted,
                    Ok(_) => return false,
                },
            };
            true
        });
        outcome
    }

    /// Lends up to `max` records, archived and oldest first, to `f`, then
    /// releases them all with one store. Returns how many.
    ///
    /// A damaged record stops the batch before it: the records before it are
    /// released and counted, and the error comes from the next call.
    ///
    /// # Errors
    ///
    /// With no record read: [`PopError::Empty`], [`PopError::Closed`], or
    /// [`PopError::Record`] for a damaged first record.
    ///
    /// # Examples
    ///
    /// ```
    /// # use ringweave_ipc::record_ring::{PopError, RecordRing};
    /// # use ringweave_ipc::segment::{Segment, SegmentLayout};
    /// # use std::sync::Arc;
    /// # let mut layout = SegmentLayout::new();
    /// # let at = layout.reserve(RecordRing::layout(4096).unwrap()).unwrap();
    /// # let segment = Arc::new(Segment::create("doc", layout.size()).unwrap());
    /// # let ring = RecordRing::new(&segment, at, 4096).unwrap();
    /// // SAFETY: one end each, dropped before `ring`.
    /// let (mut tx, mut rx) = unsafe { (ring.producer::<(u32, String)>(), ring.consumer::<(u32, String)>()) };
    /// for i in 0..5 {
    ///     tx.push(&(i, format!("#{i}"))).unwrap();
    /// }
    /// tx.close();
    /// // Sum the archived numbers in place: no String is built.
    /// let mut sum = 0;
    /// assert_eq!(rx.read_batch(100, |r| sum += r.0.to_native()), Ok(5));
    /// assert_eq!(sum, 10);
    /// assert_eq!(rx.read_batch(100, |_| {}), Err(PopError::Closed));
    /// ```
    pub fn read_batch(
        &mut self,
        max: usize,
        mut f: impl FnMut(&rkyv::Archived<T>),
    ) -> Result<usize, PopError> {
        self.batch(max, |c, at| {
            // SAFETY: as in `pop`; the batch releases nothing until it ends.
            unsafe { c.ring.access::<T>(at, c.trusted) }.map(&mut f)?;
            Ok(1)
        })
    }

    /// Moves up to `max` records, deserialized and oldest first, into `out`,
    /// releasing them all with one store. Returns how many.
    ///
    /// # Errors
    ///
    /// As for [`read_batch`](Self::read_batch).
    pub fn pop_batch(&mut self, max: usize, out: &mut impl Extend<T>) -> Result<usize, PopError> {
        self.batch(max, |c, at| {
            // SAFETY: as in `read_batch`.
            let value = unsafe { c.ring.read::<T>(at, c.trusted) }?;
            out.extend(std::iter::once(value));
            Ok(1)
        })
    }

    /// Reads records from our position on, calling `each` on every one
    /// until their weights (what `each` returns) add up to `max`, then
    /// releases them with one store. Returns the total weight.
    fn batch(
        &mut self,
        max: usize,
        mut each: impl FnMut(&Self, Located) -> Result<usize, RecordError>,
    ) -> Result<usize, PopError> {
        let start = self.cursor.position();
        let mut pos = start;
        let mut n = 0;
        let mut records = 0usize;
        let mut error = None;
        while n < max {
            match self.locate(pos) {
                Ok((Some(at), _)) => match each(self, at) {
                    Ok(weight) => {
                        pos = at.end;
                        n += weight;
                        records += 1;
                    }
                    Err(e) => {
                        error = Some(e);
                        break;
                    }
                },
                Ok((None, after_padding)) => {
                    pos = after_padding;
                    break;
                }
                Err(e) => {
                    error = Some(e);
                    break;
                }
            }
        }
        self.release_to(pos);
        match (records, error) {
            (0, Some(e)) => Err(PopError::Record(e)),
            (0, None) if max > 0 => Err(self.empty_or_closed()?),
            _ => Ok(n),
        }
    }

    /// Every record readable now, validated (unless trusted) and
    /// deserialized, without consuming any: the ring is left as it was.
    ///
    /// Records published after this call are not included.
    pub fn iter_unread(&mut self) -> Unread<'_, T> {
        let start = self.cursor.position();
        let end = start + self.cursor.available(self.ring.index(), u64::MAX);
        Unread::new(self.ring, start, end, self.trusted)
    }
}

impl<T: Record> RecordConsumer<Vec<T>> {
    /// Takes whole records from a ring of `Vec<T>` records (written with
    /// [`push_as`](super::RecordProducer::push_as) and a
    /// [`VecOf`](crate::record::VecOf), or with `push`), handing their items
    /// to `f` one by one, oldest first, until at least `max` items were
    /// handed out; then releases the records with one store. Returns how
    /// many items.
    ///
    /// Each record is validated once as a whole (unless trusted), and its
    /// items are deserialized straight out of the archive: no `Vec` is
    /// built. The last record may take the count past `max`: records are
    /// never split.
    ///
    /// # Errors
    ///
    /// As for [`read_batch`](Self::read_batch). If an item fails to
    /// deserialize, the items before it in its record have been handed to
    /// `f`, and the record stays in the ring.
    pub fn pop_items(&mut self, max: usize, mut f: impl FnMut(T)) -> Result<usize, PopError> {
        self.batch(max, |c, at| {
            // SAFETY: as in `read_batch`.
            let archived = unsafe { c.ring.access::<Vec<T>>(at, c.trusted) }?;
            // One pool per record: shared pointers are told apart by
            // address, and a later record may reuse this one's bytes.
            let mut pool = rkyv::de::Pool::new();
            for item in archived.iter() {
                let value = rkyv::Deserialize::deserialize(
                    item,
                    rkyv::rancor::Strategy::<_, rkyv::rancor::Error>::wrap(&mut pool),
                )
                .map_err(|e| RecordError::Deserialize {
                    position: at.pos,
                    message: e.to_string(),
                })?;
                f(value);
            }
            Ok(archived.len())
        })
    }
}

impl<T> RecordConsumer<T> {
    /// Bytes published and not yet released (records and padding).
    pub fn readable_bytes(&mut self) -> usize {
        self.cursor.available(self.ring.index(), u64::MAX) as usize
    }

    /// Reads records without validating them: faster, and sound only if the
    /// producer is this program's own [`RecordProducer`](super::RecordProducer) of the same `T`.
    ///
    /// # Safety
    ///
    /// Every record this consumer reads from now on must be a valid archive
    /// of `T`, written by a [`RecordProducer<T>`](super::RecordProducer) of the same build, into a
    /// segment no one else writes to. A damaged archive read this way is
    /// undefined behaviour.
    pub unsafe fn trust_producer(&mut self) {
        self.trusted = true;
    }

    /// Validates every record again (the default).
    pub fn validate_records(&mut self) {
        self.trusted = false;
    }

    /// Whether the producer has closed its end. Records may still be
    /// readable.
    #[inline]
    pub fn is_abandoned(&self) -> bool {
        self.ring.index().is_producer_closed()
    }

    /// Sets how blocking operations wait before sleeping.
    pub fn set_wait_strategy(&mut self, strategy: WaitStrategy) {
        self.strategy = strategy;
    }

    /// Sets the longest sleep between two checks of a blocking operation's
    /// `interrupt` ([`DEFAULT_POLL_INTERVAL`] unless set; `None`: sleep until
    /// woken or the deadline).
    pub fn set_poll_interval(&mut self, poll: Option<Duration>) {
        self.poll = poll;
    }

    /// Closes the consumer's end: a producer waiting for space gets
    /// [`PushError::Abandoned`](super::PushError::Abandoned). The same as
    /// dropping the handle.
    pub fn close(self) {
        drop(self);
    }
}

impl<T> Drop for RecordConsumer<T> {
    fn drop(&mut self) {
        let index = self.ring.index();
        index.close_consumer();
        wait::notify(index.space_waiter(), &FutexSleeper::new());
    }
}
