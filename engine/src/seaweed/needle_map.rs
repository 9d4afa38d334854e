//! A volume's needle map: needle id → where its latest `.idx` entry puts it, in 12 bytes per
//! needle, as compact as SeaweedFS's own `CompactMap` (weed/storage/needle_map/compact_map.go:
//! a `CompactNeedleValue` is a 2-byte key, a 4-byte offset and a 4-byte size, 12 bytes with
//! Go's alignment, in sorted segments of 50 000 ids).
//!
//! The same shape: ids are cut into segments of 2^16 consecutive ids (the high 48 bits pick
//! the segment, a hash map lookup), each a vector of [`Entry`] sorted by the low 16 bits
//! (a binary search of at most 16 steps). SeaweedFS's master hands out ids in increasing
//! order, so replaying an `.idx` appends at the end of a segment; an id out of order is an
//! insertion. A segment grows by an eighth at a time, so spare capacity stays under 12.5%
//! (a doubling vector would average a third more).
//!
//! Deleted needles stay (offset 0) so a read can answer `needle-deleted` rather than
//! `no-such-needle`, as SeaweedFS keeps tombstones in its map.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicU8, Ordering};

use super::format::IdxEntry;

const SEGMENT_BITS: u32 = 16;
const KEY_MASK: u64 = (1 << SEGMENT_BITS) - 1;
/// `.dat` offsets are multiples of 8 (SeaweedFS pads needles to 8 bytes), kept in units of 8:
/// 40 bits of units reach 8 TiB, the largest volume of a 17-byte `.idx`.
const OFFSET_UNIT: u64 = 8;
const MAX_UNITS: u64 = (1 << 40) - 1;

/// One needle, 12 bytes.
#[repr(C)]
#[derive(Debug)]
struct Entry {
    /// The id's low 16 bits.
    key: u16,
    /// CRC state (`volume.rs`): set by readers under the map's read lock, hence atomic.
    crc: AtomicU8,
    /// Bits 32..39 of the offset in units of 8.
    units_hi: u8,
    units_lo: u32,
    /// The needle's size, -1 when deleted.
    size: i32,
}

const _: () = assert!(std::mem::size_of::<Entry>() == 12);

impl Entry {
    fn new(key: u16, e: &IdxEntry) -> Self {
        let (units, size) = if e.is_live() {
            (e.offset / OFFSET_UNIT, e.size)
        } else {
            (0, -1)
        };
        debug_assert!(units <= MAX_UNITS && e.offset.is_multiple_of(OFFSET_UNIT));
        Self {
            key,
            crc: AtomicU8::new(0),
            units_hi: (units >> 32) as u8,
            units_lo: units as u32,
            size,
        }
    }

    fn offset(&self) -> u64 {
        ((self.units_hi as u64) << 32 | self.units_lo as u64) * OFFSET_UNIT
    }

    fn live(&self) -> bool {
        self.offset() != 0 && self.size >= 0
    }

    fn found(&self) -> Found {
        Found {
            offset: self.offset(),
            size: self.size,
            crc: self.crc.load(Ordering::Relaxed),
        }
    }
}

/// What the map holds for a needle: its offset (0: deleted), size (-1: deleted) and CRC state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Found {
    pub offset: u64,
    pub size: i32,
    pub crc: u8,
}

/// Multiplicative hash for segment numbers. Ids come from the volume's own `.idx` (assigned
/// by the SeaweedFS master), not from peers, so a keyed hash buys nothing; lookups from peers
/// never insert.
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ b as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }

    fn write_u64(&mut self, n: u64) {
        let h = n.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        self.0 = h ^ (h >> 29);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

#[derive(Default)]
pub(super) struct NeedleMap {
    segments: HashMap<u64, Vec<Entry>, BuildHasherDefault<IdHasher>>,
    live: u64,
    deleted: u64,
}

impl NeedleMap {
    /// Replays one entry as SeaweedFS's `doLoading` does: the last entry for an id wins. Its
    /// CRC state starts at 0, unverified (a rewritten needle is checked anew).
    pub(super) fn apply(&mut self, e: &IdxEntry) {
        let key = (e.id & KEY_MASK) as u16;
        let seg = self.segments.entry(e.id >> SEGMENT_BITS).or_default();
        let new = Entry::new(key, e);
        let now_live = new.live();
        let was_live = match seg.last().map(|l| l.key.cmp(&key)) {
            // In id order: the common case when replaying an `.idx`.
            None | Some(std::cmp::Ordering::Less) => {
                grow_by_an_eighth(seg);
                seg.push(new);
                None
            }
            _ => match seg.binary_search_by_key(&key, |x| x.key) {
                Ok(i) => Some(std::mem::replace(&mut seg[i], new).live()),
                Err(i) => {
                    grow_by_an_eighth(seg);
                    seg.insert(i, new);
                    None
                }
            },
        };
        match (was_live, now_live) {
            (None, true) => self.live += 1,
            (None, false) => self.deleted += 1,
            (Some(true), false) => {
                self.live -= 1;
                self.deleted += 1;
            }
            (Some(false), true) => {
                self.deleted -= 1;
                self.live += 1;
            }
            (Some(_), _) => {}
        }
    }

    pub(super) fn get(&self, id: u64) -> Option<Found> {
        self.entry(id).map(Entry::found)
    }

    /// Records a CRC check of needle `id` if the map still holds the same stored needle
    /// (`offset` and `size`: a rewrite is a new stored needle, with its own check).
    pub(super) fn set_crc(&self, id: u64, offset: u64, size: i32, crc: u8) {
        if let Some(e) = self.entry(id).filter(|e| e.offset() == offset && e.size == size) {
            e.crc.store(crc, Ordering::Relaxed);
        }
    }

    /// Needles whose latest entry makes them readable, and those it deletes.
    pub(super) fn counts(&self) -> (u64, u64) {
        (self.live, self.deleted)
    }

    /// Bytes the map holds on the heap (entries and segment table), for status.
    pub(super) fn heap_bytes(&self) -> u64 {
        let entries: usize = self.segments.values().map(|s| s.capacity()).sum();
        let table = self.segments.capacity() * (std::mem::size_of::<(u64, Vec<Entry>)>() + 1);
        (entries * std::mem::size_of::<Entry>() + table) as u64
    }

    fn entry(&self, id: u64) -> Option<&Entry> {
        let seg = self.segments.get(&(id >> SEGMENT_BITS))?;
        let key = (id & KEY_MASK) as u16;
        seg.binary_search_by_key(&key, |x| x.key).ok().map(|i| &seg[i])
    }
}

/// Room for one more entry, growing by an eighth (at least 8) when full.
fn grow_by_an_eighth(seg: &mut Vec<Entry>) {
    if seg.len() == seg.capacity() {
        seg.reserve_exact((seg.len() / 8).max(8));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn entry(id: u64, offset: u64, size: i32) -> IdxEntry {
        IdxEntry { id, offset, size }
    }

    #[test]
    fn offsets_up_to_8_tib_and_deletions_round_trip() {
        let mut m = NeedleMap::default();
        let far = MAX_UNITS * OFFSET_UNIT;
        m.apply(&entry(7, far, 100));
        m.apply(&entry(u64::MAX, 8, 0));
        m.apply(&entry(1 << 16, 16, 5));
        m.apply(&entry(3, 0, -1));
        assert_eq!(
            m.get(7),
            Some(Found {
                offset: far,
                size: 100,
                crc: 0
            })
        );
        assert_eq!(
            m.get(u64::MAX),
            Some(Found {
                offset: 8,
                size: 0,
                crc: 0
            })
        );
        assert_eq!(
            m.get(3),
            Some(Found {
                offset: 0,
                size: -1,
                crc: 0
            })
        );
        assert_eq!(m.get(4), None);
        assert_eq!(m.counts(), (3, 1));
        m.set_crc(7, far, 100, 2);
        m.set_crc(1 << 16, 24, 5, 2); // another stored needle than the map's: ignored
        assert_eq!(m.get(7).unwrap().crc, 2);
        assert_eq!(m.get(1 << 16).unwrap().crc, 0);
    }

    #[test]
    fn replaying_a_million_ids_in_order_costs_about_12_bytes_each() {
        let mut m = NeedleMap::default();
        for id in 1..=1_000_000u64 {
            m.apply(&entry(id * 3, id * 64, 40));
        }
        let per_needle = m.heap_bytes() as f64 / 1e6;
        assert!(per_needle < 12.0 * 1.13 + 0.5, "{per_needle} bytes per needle");
    }

    proptest! {
        /// Against a HashMap replaying the same entries: same answers, same counts.
        #[test]
        fn agrees_with_a_hash_map(ops in prop::collection::vec((0u64..300_000, 0u64..1000, -1i32..50), 0..600)) {
            let mut m = NeedleMap::default();
            let mut model: HashMap<u64, (u64, i32)> = HashMap::new();
            for &(id, units, size) in &ops {
                let e = entry(id, units * 8, size);
                m.apply(&e);
                model.insert(id, if e.is_live() { (units * 8, size) } else { (0, -1) });
            }
            for (&id, &(offset, size)) in &model {
                prop_assert_eq!(m.get(id), Some(Found { offset, size, crc: 0 }));
            }
            let live = model.values().filter(|&&(o, s)| o != 0 && s >= 0).count() as u64;
            prop_assert_eq!(m.counts(), (live, model.len() as u64 - live));
            for &(id, _, _) in &ops {
                prop_assert_eq!(m.get(id + 300_000), None);
            }
        }
    }
}
