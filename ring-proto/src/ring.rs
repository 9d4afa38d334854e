//! Single-producer single-consumer ring over a [`RingCtl`] and an entry array.
//!
//! Both the SQ and the CQ use these two types; only the sides swap. Each side keeps its own
//! index in private memory and only ever *stores* it to the shared line: the other side could
//! scribble on shared memory, so a side never trusts what it reads back of its own index.
//! Indices are free-running u32s; the slot is `index & (entries - 1)`.
//!
//! Memory ordering (SPEC.md, "Ordering"):
//! - producer: write entry words (Relaxed) → `tail.store(Release)`.
//!   SYNC POINT: pairs with the consumer's `tail.load(Acquire)`.
//! - consumer: `tail.load(Acquire)` → read entry words (Relaxed) → `head.store(Release)`.
//!   SYNC POINT: pairs with the producer's `head.load(Acquire)` before it reuses a slot, so a
//!   slot is never overwritten while the consumer still copies it.
//! - sleep/wake: see [`Consumer::prepare_sleep`] and [`Producer::publish`].

use core::marker::PhantomData;
use core::ptr::NonNull;

use crate::entry::{load_entry, store_entry, Entry};
use crate::layout::{RingCtl, RING_NEED_WAKEUP};
use crate::sync::{fence, AtomicU64, Ordering};

/// The other side moved its index to a place no correct peer can put it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingCorrupt {
    /// The index we own.
    pub ours: u32,
    /// The index we loaded from the other side.
    pub theirs: u32,
}

impl core::fmt::Display for RingCorrupt {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "peer ring index {} is inconsistent with ours ({})",
            self.theirs, self.ours
        )
    }
}

impl std::error::Error for RingCorrupt {}

/// Pointers to one ring in memory. Cheap to copy; the memory must outlive every copy.
#[derive(Clone, Copy, Debug)]
pub struct RawRing {
    ctl: NonNull<RingCtl>,
    words: NonNull<AtomicU64>,
    entries: u32,
}

// Safety: RawRing only hands out shared references to atomics, which are Sync.
unsafe impl Send for RawRing {}
// Safety: as above.
unsafe impl Sync for RawRing {}

impl RawRing {
    /// # Safety
    /// `ctl` must point to a `RingCtl` and `words` to `entries * words_per_entry` `AtomicU64`s
    /// (8-byte aligned), both valid for as long as any copy of this `RawRing`, or any
    /// producer or consumer made from it, is used. `entries` must be a power of two.
    pub unsafe fn new(ctl: NonNull<RingCtl>, words: NonNull<AtomicU64>, entries: u32) -> Self {
        debug_assert!(entries.is_power_of_two());
        Self { ctl, words, entries }
    }

    pub fn entries(&self) -> u32 {
        self.entries
    }

    pub fn ctl(&self) -> &RingCtl {
        // Safety: guaranteed valid by the contract of `new`.
        unsafe { self.ctl.as_ref() }
    }

    fn slot<E: Entry>(&self, index: u32) -> &[AtomicU64] {
        let i = (index & (self.entries - 1)) as usize;
        // Safety: `i < entries`, and `new`'s contract covers `entries * E::WORDS` words.
        unsafe { core::slice::from_raw_parts(self.words.as_ptr().add(i * E::WORDS), E::WORDS) }
    }
}

/// A ring allocated on the heap: for tests, models and the bench's bare echo baseline.
pub struct HeapRing {
    ctl: Box<RingCtl>,
    words: Box<[AtomicU64]>,
    entries: u32,
}

impl HeapRing {
    pub fn new<E: Entry>(entries: u32) -> Self {
        assert!(entries.is_power_of_two());
        let words = (0..entries as usize * E::WORDS).map(|_| AtomicU64::new(0)).collect();
        Self {
            ctl: Box::new(RingCtl::new()),
            words,
            entries,
        }
    }

    /// The ring's pointers; valid while `self` lives.
    pub fn raw(&self) -> RawRing {
        // Safety: both boxes live as long as `self`, and `words` was sized for `E::WORDS`
        // by `new`.
        unsafe {
            RawRing::new(
                NonNull::from(&*self.ctl),
                NonNull::new(self.words.as_ptr() as *mut AtomicU64).expect("box is non-null"),
                self.entries,
            )
        }
    }
}

/// The writing side of a ring.
pub struct Producer<E: Entry> {
    ring: RawRing,
    /// Next index to write; published by `publish`.
    tail: u32,
    /// Last value of the consumer's head we loaded (and checked).
    head_cache: u32,
    _entry: PhantomData<E>,
}

impl<E: Entry> Producer<E> {
    /// # Safety
    /// This must be the only producer of `ring`, and `ring` must have been built for entries
    /// of type `E`. The ring must be fresh (both indices 0).
    pub unsafe fn new(ring: RawRing) -> Self {
        Self {
            ring,
            tail: 0,
            head_cache: 0,
            _entry: PhantomData,
        }
    }

    pub fn ring(&self) -> &RawRing {
        &self.ring
    }

    /// Our tail, including entries pushed but not yet published.
    pub fn local_tail(&self) -> u32 {
        self.tail
    }

    /// Loads the consumer's head and returns how many slots are free.
    pub fn refresh(&mut self) -> Result<u32, RingCorrupt> {
        // SYNC POINT: Acquire pairs with the consumer's Release store of head: the consumer
        // has finished copying every slot before `head`, so they may be overwritten.
        let head = self.ring.ctl().head.value.load(Ordering::Acquire);
        let used = self.tail.wrapping_sub(head);
        if used > self.ring.entries || head.wrapping_sub(self.head_cache) > self.ring.entries {
            return Err(RingCorrupt {
                ours: self.tail,
                theirs: head,
            });
        }
        self.head_cache = head;
        Ok(self.ring.entries - used)
    }

    /// Free slots according to the last loaded head (no shared-memory access).
    pub fn cached_free(&self) -> u32 {
        self.ring.entries - self.tail.wrapping_sub(self.head_cache)
    }

    /// Free slots, loading the consumer's head only when the cached value shows fewer than
    /// `wanted`. The consumer writes its head line on every release; not reading it while
    /// there is room saves a cache-line transfer per round trip.
    pub fn free_at_least(&mut self, wanted: u32) -> Result<u32, RingCorrupt> {
        let cached = self.cached_free();
        if cached >= wanted {
            return Ok(cached);
        }
        self.refresh()
    }

    /// Writes an entry into the next slot. Not visible to the consumer until [`publish`].
    /// Returns the entry back if the ring is full.
    ///
    /// [`publish`]: Producer::publish
    pub fn push(&mut self, e: &E) -> Result<(), E> {
        if self.cached_free() == 0 && !matches!(self.refresh(), Ok(n) if n > 0) {
            return Err(*e);
        }
        store_entry(self.ring.slot::<E>(self.tail), e);
        self.tail = self.tail.wrapping_add(1);
        Ok(())
    }

    /// Publishes every pushed entry and reports whether the consumer asked to be woken.
    ///
    /// If this returns true the caller must signal the consumer (its eventfd). The SeqCst
    /// fence between our tail store and our load of the consumer's flags pairs with the fence
    /// in [`Consumer::prepare_sleep`] between its flag store and its tail load: of the two
    /// loads at least one sees the other side's store, so either the consumer sees our new
    /// tail and does not sleep, or we see its NEED_WAKEUP flag and wake it. Without the fence
    /// both loads could be satisfied before the stores become visible (store buffering,
    /// allowed even on x86) and the consumer would sleep on a non-empty ring.
    pub fn publish(&mut self) -> bool {
        // SYNC POINT: Release pairs with the consumer's Acquire load of tail: the entry words
        // written above are visible before the new tail is.
        self.ring.ctl().tail.value.store(self.tail, Ordering::Release);
        self.consumer_needs_wakeup()
    }

    /// Fences, then reads whether the consumer announced it sleeps. Call it after any store
    /// the sleeping consumer may be waiting for: the new tail (see [`publish`]), or, on the
    /// client, a CQ head release that gives a stalled engine room to complete more (see
    /// SPEC.md, "Sleep and wake"). The fence pairs with the one in
    /// [`Consumer::announce_sleep`].
    ///
    /// [`publish`]: Producer::publish
    pub fn consumer_needs_wakeup(&self) -> bool {
        fence(Ordering::SeqCst);
        self.ring.ctl().flags.load(Ordering::Relaxed) & RING_NEED_WAKEUP != 0
    }

    /// Publishes without looking at the consumer's flags (for a consumer that never sleeps).
    pub fn publish_no_wakeup_check(&mut self) {
        // SYNC POINT: as in `publish`.
        self.ring.ctl().tail.value.store(self.tail, Ordering::Release);
    }
}

/// The reading side of a ring.
pub struct Consumer<E: Entry> {
    ring: RawRing,
    /// Next index to read; published by `release`.
    head: u32,
    /// Last value of the producer's tail we loaded (and checked).
    tail_cache: u32,
    _entry: PhantomData<E>,
}

impl<E: Entry> Consumer<E> {
    /// # Safety
    /// This must be the only consumer of `ring`, and `ring` must have been built for entries
    /// of type `E`. The ring must be fresh (both indices 0).
    pub unsafe fn new(ring: RawRing) -> Self {
        Self {
            ring,
            head: 0,
            tail_cache: 0,
            _entry: PhantomData,
        }
    }

    pub fn ring(&self) -> &RawRing {
        &self.ring
    }

    /// Our head, including entries taken but not yet released.
    pub fn local_head(&self) -> u32 {
        self.head
    }

    /// Loads the producer's tail and returns how many entries are ready to read.
    pub fn refresh(&mut self) -> Result<u32, RingCorrupt> {
        // SYNC POINT: Acquire pairs with the producer's Release store of tail: entry words
        // before `tail` are visible after this load.
        let tail = self.ring.ctl().tail.value.load(Ordering::Acquire);
        let ready = tail.wrapping_sub(self.head);
        if ready > self.ring.entries || tail.wrapping_sub(self.tail_cache) > self.ring.entries {
            return Err(RingCorrupt {
                ours: self.head,
                theirs: tail,
            });
        }
        self.tail_cache = tail;
        Ok(ready)
    }

    /// Entries ready according to the last loaded tail (no shared-memory access).
    pub fn cached_ready(&self) -> u32 {
        self.tail_cache.wrapping_sub(self.head)
    }

    /// Copies out the next entry, if one is ready according to the last `refresh`.
    /// Each word is read exactly once; validate the copy, never the slot.
    pub fn pop(&mut self) -> Option<E> {
        if self.cached_ready() == 0 {
            return None;
        }
        let e = load_entry(self.ring.slot::<E>(self.head));
        self.head = self.head.wrapping_add(1);
        Some(e)
    }

    /// Hands every popped slot back to the producer.
    pub fn release(&mut self) {
        // SYNC POINT: Release pairs with the producer's Acquire load of head in `refresh`:
        // our copies of the popped slots happen before the producer may overwrite them.
        self.ring.ctl().head.value.store(self.head, Ordering::Release);
    }

    /// Announces that we are about to sleep, then checks once more for entries.
    ///
    /// Returns true if the ring is still empty: the caller may now block on its eventfd and
    /// is guaranteed a signal for any entry published after this point. Returns false if
    /// entries arrived (the flag is cleared again): keep consuming.
    ///
    /// The SeqCst fence pairs with the one in [`Producer::publish`] (store buffering: each
    /// side stores, fences, then loads what the other side stored).
    pub fn prepare_sleep(&mut self) -> Result<bool, RingCorrupt> {
        self.announce_sleep();
        if self.refresh()? == 0 {
            return Ok(true);
        }
        self.finish_sleep();
        Ok(false)
    }

    /// The first half of [`prepare_sleep`](Consumer::prepare_sleep): stores NEED_WAKEUP and
    /// fences. A consumer that waits on more than this ring's tail (the engine also waits for
    /// CQ room) then re-checks each condition itself and sleeps only if none holds; every
    /// party that can change one must fence and look at this flag after its change.
    pub fn announce_sleep(&self) {
        self.ring.ctl().flags.store(RING_NEED_WAKEUP, Ordering::Relaxed);
        fence(Ordering::SeqCst);
    }

    /// Clears NEED_WAKEUP after waking (or after deciding not to sleep). A producer that still
    /// sees the old flag only sends one spurious signal.
    pub fn finish_sleep(&self) {
        self.ring.ctl().flags.store(0, Ordering::Relaxed);
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::entry::{Cqe, Sqe};
    use proptest::prelude::*;

    fn pair<E: Entry>(ring: &HeapRing) -> (Producer<E>, Consumer<E>) {
        // Safety: one producer and one consumer of a fresh heap ring built for E.
        unsafe { (Producer::new(ring.raw()), Consumer::new(ring.raw())) }
    }

    fn cqe(n: u64) -> Cqe {
        Cqe {
            user_data: n,
            result: n as i32,
            flags: 0,
        }
    }

    #[test]
    fn empty_ring_has_nothing() {
        let ring = HeapRing::new::<Cqe>(4);
        let (_p, mut c) = pair::<Cqe>(&ring);
        assert_eq!(c.refresh(), Ok(0));
        assert_eq!(c.pop(), None);
    }

    #[test]
    fn full_ring_refuses_then_accepts_after_release() {
        let ring = HeapRing::new::<Cqe>(4);
        let (mut p, mut c) = pair::<Cqe>(&ring);
        for i in 0..4 {
            p.push(&cqe(i)).unwrap();
        }
        assert_eq!(p.push(&cqe(9)), Err(cqe(9)));
        p.publish();
        assert_eq!(c.refresh(), Ok(4));
        assert_eq!(c.pop(), Some(cqe(0)));
        // Popped but not released: the producer must still see the ring full.
        assert!(p.push(&cqe(9)).is_err());
        c.release();
        p.push(&cqe(4)).unwrap();
    }

    #[test]
    fn unpublished_entries_are_invisible() {
        let ring = HeapRing::new::<Sqe>(8);
        let (mut p, mut c) = pair::<Sqe>(&ring);
        p.push(&Sqe {
            user_data: 1,
            ..Default::default()
        })
        .unwrap();
        assert_eq!(c.refresh(), Ok(0));
        p.publish();
        assert_eq!(c.refresh(), Ok(1));
    }

    #[test]
    fn wraparound_across_u32_overflow() {
        let ring = HeapRing::new::<Cqe>(4);
        let (mut p, mut c) = pair::<Cqe>(&ring);
        // Start both sides just below the u32 wrap.
        let start = u32::MAX - 5;
        p.tail = start;
        p.head_cache = start;
        c.head = start;
        c.tail_cache = start;
        ring.ctl.head.value.store(start, Ordering::Relaxed);
        ring.ctl.tail.value.store(start, Ordering::Relaxed);
        for i in 0..100u64 {
            p.push(&cqe(i)).unwrap();
            p.publish();
            assert_eq!(c.refresh(), Ok(1));
            assert_eq!(c.pop(), Some(cqe(i)));
            c.release();
        }
    }

    #[test]
    fn corrupt_indices_are_detected() {
        let ring = HeapRing::new::<Cqe>(4);
        let (mut p, mut c) = pair::<Cqe>(&ring);
        // Tail far ahead of head.
        ring.ctl.tail.value.store(5, Ordering::Relaxed);
        assert!(c.refresh().is_err());
        // Tail moved backwards.
        ring.ctl.tail.value.store(u32::MAX, Ordering::Relaxed);
        assert!(c.refresh().is_err());
        // Head ahead of our tail.
        ring.ctl.head.value.store(1, Ordering::Relaxed);
        assert!(p.refresh().is_err());
    }

    #[test]
    fn sleep_handshake_single_thread() {
        let ring = HeapRing::new::<Cqe>(4);
        let (mut p, mut c) = pair::<Cqe>(&ring);
        assert_eq!(c.prepare_sleep(), Ok(true));
        p.push(&cqe(1)).unwrap();
        assert!(p.publish(), "producer must see the sleeping consumer");
        c.finish_sleep();
        p.push(&cqe(2)).unwrap();
        assert!(!p.publish());
        // Entries already there: prepare_sleep refuses to sleep and clears the flag.
        assert_eq!(c.prepare_sleep(), Ok(false));
        assert_eq!(ring.ctl.flags.load(Ordering::Relaxed), 0);
    }

    proptest! {
        /// Any interleaving of pushes, publishes, pops and releases delivers exactly the
        /// published entries, in order, and never more than the ring holds.
        #[test]
        fn model_matches_queue(ops in proptest::collection::vec(0u8..4, 1..400), log2 in 1u32..5) {
            let entries = 1 << log2;
            let ring = HeapRing::new::<Cqe>(entries);
            let (mut p, mut c) = pair::<Cqe>(&ring);
            let mut next = 0u64;
            let mut pushed = std::collections::VecDeque::new();
            let mut published = 0usize;
            let mut in_ring_unreleased = 0usize;
            let mut expect = 0u64;
            for op in ops {
                match op {
                    0 => {
                        let occupied = pushed.len() + in_ring_unreleased;
                        let r = p.push(&cqe(next));
                        if occupied < entries as usize {
                            prop_assert!(r.is_ok());
                            pushed.push_back(next);
                            next += 1;
                        } else {
                            prop_assert!(r.is_err());
                        }
                    }
                    1 => { p.publish(); published = pushed.len(); }
                    2 => {
                        let ready = c.refresh().unwrap() as usize;
                        prop_assert_eq!(ready, published);
                        if let Some(e) = c.pop() {
                            prop_assert_eq!(e.user_data, expect);
                            prop_assert_eq!(pushed.pop_front(), Some(expect));
                            expect += 1;
                            published -= 1;
                            in_ring_unreleased += 1;
                        }
                    }
                    _ => { c.release(); in_ring_unreleased = 0; }
                }
            }
        }
    }
}
