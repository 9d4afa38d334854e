//! Single-producer single-consumer ring over a [`RingCtl`] and an entry array.
//!
//! Both the SQ and the CQ use these two types; only the sides swap. An entry is published
//! by its own control word (word 0, holding the control byte of `entry.rs`): the consumer
//! polls the slot it reads next, not a shared tail, so a round trip moves one cache line
//! each way (the entry's) instead of two (a tail line, then the entry). The consumer still
//! stores a head index, which the producer loads only when its cached view shows too little
//! room. Each side keeps its own index in private memory and only ever *stores* it: the
//! other side could scribble on shared memory, so a side never trusts what it reads back.
//! Indices are free-running u32s; the slot is `index & (entries - 1)`; an entry published at
//! index `i` carries `CTL_PHASE` set when `i & entries == 0` (lap parity, first lap 1), so a
//! slot still holding the previous lap's entry (or the zeroed first lap) never looks ready.
//!
//! Memory ordering (SPEC.md §5, "Ordering"):
//! - producer: write words 1.. (Relaxed) → word 0 with `CTL_PHASE` (Release store; the
//!   first entry of a publication last, in [`Producer::publish`]).
//!   SYNC POINT: pairs with the consumer's Acquire load of word 0 in [`Consumer::refresh_up_to`].
//! - consumer: word 0 load (Acquire) shows the phase → copy the words (Relaxed) →
//!   `head.store(Release)`.
//!   SYNC POINT: pairs with the producer's `head.load(Acquire)` before it reuses a slot, so a
//!   slot is never overwritten while the consumer still copies it.
//! - sleep/wake: the consumer's `flags` word and a SeqCst fence on each side (store
//!   buffering); see [`Consumer::prepare_sleep`] and [`Producer::publish`].

use core::marker::PhantomData;
use core::ptr::NonNull;

use crate::entry::{load_entry, store_entry_body, Entry, CTL_MASK, CTL_PHASE};
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

    /// Entries published from the consumer's head on (head loaded Relaxed, words Relaxed):
    /// for status from another thread. At most `entries`.
    pub fn published_after<E: Entry>(&self) -> u32 {
        let head = self.ctl().head.value.load(Ordering::Relaxed);
        let mut n = 0;
        while n < self.entries {
            let index = head.wrapping_add(n);
            if self.slot::<E>(index)[0].load(Ordering::Relaxed) & CTL_PHASE != self.phase(index) {
                break;
            }
            n += 1;
        }
        n
    }

    /// The `CTL_PHASE` bit an entry published at `index` carries: set on even laps.
    fn phase(&self, index: u32) -> u64 {
        if index & self.entries == 0 {
            CTL_PHASE
        } else {
            0
        }
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
    /// Next index to write.
    tail: u32,
    /// First index not published yet: the entry there has its control word held back in
    /// `held`; entries after it up to `tail` are written in full.
    published: u32,
    /// Control word of the entry at `published`, stored by `publish`.
    held: u64,
    /// Last value of the consumer's head we loaded (and checked).
    head_cache: u32,
    _entry: PhantomData<E>,
}

impl<E: Entry> Producer<E> {
    /// # Safety
    /// This must be the only producer of `ring`, and `ring` must have been built for entries
    /// of type `E`. The ring must be fresh (head 0, every slot's phase clear).
    pub unsafe fn new(ring: RawRing) -> Self {
        Self {
            ring,
            tail: 0,
            published: 0,
            held: 0,
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
        let words = e.to_words();
        let words = words.as_ref();
        let ctl_word = (words[0] & !CTL_MASK) | self.ring.phase(self.tail);
        let slot = self.ring.slot::<E>(self.tail);
        store_entry_body(slot, words);
        if self.tail == self.published {
            // The first entry of this publication: `publish` stores its control word last,
            // which makes the whole batch visible at once (the consumer reads in order).
            self.held = ctl_word;
        } else {
            // SYNC POINT: Release pairs with the consumer's Acquire load of this word; the
            // consumer reaches it only after the held entry before it, so it is not visible
            // before `publish` either.
            slot[0].store(ctl_word, Ordering::Release);
        }
        self.tail = self.tail.wrapping_add(1);
        Ok(())
    }

    /// Publishes every pushed entry and reports whether the consumer asked to be woken.
    ///
    /// If this returns true the caller must signal the consumer (its doorbell). The control
    /// word of the first unpublished entry is stored (Release), then a SeqCst fence, then the
    /// consumer's `flags` are loaded. The fence pairs with the one in
    /// [`Consumer::prepare_sleep`] between its flag store and its load of the slot: of the
    /// two loads at least one sees the other side's store, so either the consumer sees the
    /// entry and does not sleep, or we see its NEED_WAKEUP and wake it. Without the fences
    /// both loads could be satisfied before the stores become visible (store buffering,
    /// allowed even on x86) and the consumer would sleep on a published entry (the loom
    /// model `sleep_wake_handshake_loses_no_wakeup` fails without either fence).
    ///
    /// A swap of the control word that returns a mark the consumer set on the slot would
    /// need no fence, but it is a locked read-modify-write of the very line the consumer
    /// polls, issued after the entry's other stores to it: measured slower and bimodal
    /// (bench/README.md, "The ring round trip at the floor").
    pub fn publish(&mut self) -> bool {
        if self.published == self.tail {
            return false;
        }
        let slot = self.ring.slot::<E>(self.published);
        // SYNC POINT: Release pairs with the consumer's Acquire load of word 0: this entry's
        // words and every entry pushed after it are visible once this word is.
        slot[0].store(self.held, Ordering::Release);
        self.published = self.tail;
        self.consumer_needs_wakeup()
    }

    /// Fences, then reads whether the consumer announced it sleeps. Call it after any store
    /// the sleeping consumer may be waiting for: a publication (see [`publish`]), or, on the
    /// client, a CQ head release that gives a stalled engine room to complete more (SPEC.md
    /// §6, "The engine also sleeps on a full CQ"). The fence pairs with the one in
    /// [`Consumer::announce_sleep`].
    ///
    /// [`publish`]: Producer::publish
    pub fn consumer_needs_wakeup(&self) -> bool {
        fence(Ordering::SeqCst);
        self.ring.ctl().flags.load(Ordering::Relaxed) & RING_NEED_WAKEUP != 0
    }
}

/// The reading side of a ring.
pub struct Consumer<E: Entry> {
    ring: RawRing,
    /// Next index to read; published by `release`.
    head: u32,
    /// Entries from `head` on seen published (their control words loaded with Acquire).
    ready: u32,
    _entry: PhantomData<E>,
}

impl<E: Entry> Consumer<E> {
    /// # Safety
    /// This must be the only consumer of `ring`, and `ring` must have been built for entries
    /// of type `E`. The ring must be fresh (head 0, every slot's phase clear).
    pub unsafe fn new(ring: RawRing) -> Self {
        Self {
            ring,
            head: 0,
            ready: 0,
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

    /// Looks at the slots after the ones already counted, in order, and returns how many
    /// entries are ready, counting at most `max` (and never more than the ring holds).
    /// A slot whose control word does not carry its index's phase ends the count: a
    /// producer that writes garbage only delays its own entries.
    pub fn refresh_up_to(&mut self, max: u32) -> u32 {
        let max = max.min(self.ring.entries);
        while self.ready < max {
            let index = self.head.wrapping_add(self.ready);
            // SYNC POINT: Acquire pairs with the producer's Release store of word 0:
            // the entry's other words are visible after this load.
            let w0 = self.ring.slot::<E>(index)[0].load(Ordering::Acquire);
            if w0 & CTL_PHASE != self.ring.phase(index) {
                break;
            }
            self.ready += 1;
        }
        self.ready
    }

    /// Every entry ready now (at most the ring's size).
    pub fn refresh(&mut self) -> u32 {
        self.refresh_up_to(self.ring.entries)
    }

    /// Entries ready according to the last refresh (no shared-memory access).
    pub fn cached_ready(&self) -> u32 {
        self.ready
    }

    /// Copies out the next entry, if one was counted ready by a refresh.
    /// Each word is read exactly once; validate the copy, never the slot.
    pub fn pop(&mut self) -> Option<E> {
        if self.ready == 0 {
            return None;
        }
        let e = load_entry(self.ring.slot::<E>(self.head));
        self.head = self.head.wrapping_add(1);
        self.ready -= 1;
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
    /// Returns true if the ring is still empty: the caller may now block on its doorbell and
    /// is guaranteed a signal for any entry published after this point. Returns false if an
    /// entry is ready (the flag is cleared again): keep consuming. Call
    /// [`finish_sleep`](Consumer::finish_sleep) after waking.
    ///
    /// The SeqCst fence (in `announce_sleep`) pairs with the one in [`Producer::publish`].
    pub fn prepare_sleep(&mut self) -> bool {
        self.announce_sleep();
        if self.refresh_up_to(1) == 0 {
            return true;
        }
        self.finish_sleep();
        false
    }

    /// The first half of [`prepare_sleep`](Consumer::prepare_sleep): stores NEED_WAKEUP and
    /// fences. A consumer that waits on more than this ring's entries (the engine also waits
    /// for CQ room) then re-checks each condition itself and sleeps only if none holds; every
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
        Cqe::new(n, n as i32)
    }

    /// What the consumer copied, without the ring's control byte.
    fn body(mut e: Cqe) -> Cqe {
        e.ctl = 0;
        e
    }

    #[test]
    fn empty_ring_has_nothing() {
        let ring = HeapRing::new::<Cqe>(4);
        let (_p, mut c) = pair::<Cqe>(&ring);
        assert_eq!(c.refresh(), 0);
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
        assert_eq!(c.refresh(), 4);
        assert_eq!(c.pop().map(body), Some(cqe(0)));
        // Popped but not released: the producer must still see the ring full.
        assert!(p.push(&cqe(9)).is_err());
        c.release();
        p.push(&cqe(4)).unwrap();
    }

    #[test]
    fn unpublished_entries_are_invisible() {
        let ring = HeapRing::new::<Sqe>(8);
        let (mut p, mut c) = pair::<Sqe>(&ring);
        for n in 1..=3 {
            p.push(&Sqe {
                user_data: n,
                ..Default::default()
            })
            .unwrap();
        }
        // Entries after the first of a publication are written in full, but the first one's
        // held-back control word hides them all.
        assert_eq!(c.refresh(), 0);
        p.publish();
        assert_eq!(c.refresh(), 3);
    }

    #[test]
    fn refresh_up_to_counts_at_most_max() {
        let ring = HeapRing::new::<Cqe>(8);
        let (mut p, mut c) = pair::<Cqe>(&ring);
        for i in 0..5 {
            p.push(&cqe(i)).unwrap();
        }
        p.publish();
        assert_eq!(c.refresh_up_to(2), 2);
        assert_eq!(c.refresh_up_to(100), 5);
        assert_eq!(c.pop().map(body), Some(cqe(0)));
        assert_eq!(c.cached_ready(), 4);
    }

    #[test]
    fn wraparound_across_u32_overflow() {
        let ring = HeapRing::new::<Cqe>(4);
        let (mut p, mut c) = pair::<Cqe>(&ring);
        // Start both sides just below the u32 wrap, with the slots holding the previous lap.
        let start = u32::MAX - 5;
        let raw = ring.raw();
        for i in 0..4u32 {
            let index = start.wrapping_sub(4).wrapping_add(i);
            raw.slot::<Cqe>(index)[0].store(raw.phase(index), Ordering::Relaxed);
        }
        p.tail = start;
        p.published = start;
        p.head_cache = start;
        c.head = start;
        ring.ctl.head.value.store(start, Ordering::Relaxed);
        for i in 0..100u64 {
            p.push(&cqe(i)).unwrap();
            p.publish();
            assert_eq!(c.refresh(), 1);
            assert_eq!(c.pop().map(body), Some(cqe(i)));
            c.release();
        }
    }

    #[test]
    fn a_slot_of_the_previous_lap_is_not_ready() {
        let ring = HeapRing::new::<Cqe>(2);
        let (mut p, mut c) = pair::<Cqe>(&ring);
        for i in 0..2 {
            p.push(&cqe(i)).unwrap();
            p.publish();
        }
        assert_eq!(c.refresh(), 2);
        c.pop();
        c.pop();
        c.release();
        // Slots 0 and 1 still hold lap 0's entries: nothing is ready for indices 2 and 3.
        assert_eq!(c.refresh(), 0);
        p.push(&cqe(2)).unwrap();
        p.publish();
        assert_eq!(c.refresh(), 1);
        assert_eq!(c.pop().map(body), Some(cqe(2)));
    }

    #[test]
    fn corrupt_head_is_detected() {
        let ring = HeapRing::new::<Cqe>(4);
        let (mut p, _c) = pair::<Cqe>(&ring);
        // Head ahead of our tail.
        ring.ctl.head.value.store(1, Ordering::Relaxed);
        assert!(p.refresh().is_err());
    }

    #[test]
    fn garbage_control_words_only_stall_their_ring() {
        let ring = HeapRing::new::<Cqe>(4);
        let (_p, mut c) = pair::<Cqe>(&ring);
        // A producer writing the wrong phase everywhere: nothing is ready.
        let raw = ring.raw();
        for i in 0..4 {
            raw.slot::<Cqe>(i)[0].store(!CTL_PHASE, Ordering::Relaxed);
        }
        assert_eq!(c.refresh(), 0);
        assert!(c.prepare_sleep());
    }

    #[test]
    fn sleep_handshake_single_thread() {
        let ring = HeapRing::new::<Cqe>(4);
        let (mut p, mut c) = pair::<Cqe>(&ring);
        assert!(c.prepare_sleep());
        p.push(&cqe(1)).unwrap();
        assert!(p.publish(), "producer must see the sleeping consumer");
        c.finish_sleep();
        p.push(&cqe(2)).unwrap();
        assert!(!p.publish());
        // Entries already there: prepare_sleep refuses to sleep and clears the flag.
        assert!(!c.prepare_sleep());
        assert_eq!(ring.ctl.flags.load(Ordering::Relaxed), 0);
        // A batch signals once, at its publication.
        assert_eq!(c.refresh(), 2);
        c.pop();
        c.pop();
        c.release();
        assert!(c.prepare_sleep());
        p.push(&cqe(3)).unwrap();
        p.push(&cqe(4)).unwrap();
        assert!(p.publish());
        assert_eq!(c.refresh(), 2);
    }

    proptest! {
        /// Any interleaving of pushes, publishes, pops and releases delivers exactly the
        /// published entries, in order, and never more than the ring holds.
        #[test]
        fn model_matches_queue(ops in proptest::collection::vec(0u8..6, 1..400), log2 in 1u32..5) {
            let entries = 1 << log2;
            let ring = HeapRing::new::<Cqe>(entries);
            let (mut p, mut c) = pair::<Cqe>(&ring);
            let mut next = 0u64;
            let mut pushed = std::collections::VecDeque::new();
            let mut published = 0usize;
            let mut in_ring_unreleased = 0usize;
            let mut expect = 0u64;
            let mut asleep = false;
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
                    1 => {
                        let woke = p.publish();
                        // Every publication of something new while the consumer announced a
                        // sleep signals; nothing else does.
                        let had_new = pushed.len() > published;
                        prop_assert_eq!(woke, asleep && had_new);
                        published = pushed.len();
                    }
                    2 => {
                        let ready = c.refresh() as usize;
                        prop_assert_eq!(ready, published);
                        if let Some(e) = c.pop() {
                            prop_assert_eq!(e.user_data, expect);
                            prop_assert_eq!(pushed.pop_front(), Some(expect));
                            expect += 1;
                            published -= 1;
                            in_ring_unreleased += 1;
                        }
                    }
                    3 => { c.release(); in_ring_unreleased = 0; }
                    4 => {
                        let sleeps = c.prepare_sleep();
                        prop_assert_eq!(sleeps, published == 0);
                        asleep = sleeps;
                    }
                    _ => { c.finish_sleep(); asleep = false; }
                }
            }
        }
    }
}
