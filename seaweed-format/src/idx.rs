//! `.idx` entries (`weed/storage/idx/walk.go IdxFileEntry`, `types/offset_*bytes.go`,
//! `types/needle_types.go`)

use crate::{be_u32, be_u64, FormatError, IDX_ENTRY_SIZE_4, IDX_ENTRY_SIZE_5, NEEDLE_PADDING_SIZE};

/// One `.idx` entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdxEntry {
    pub id: u64,
    /// Byte offset of the needle in the `.dat` (the stored unit count times 8).
    pub offset: u64,
    /// The needle's header size; negative (normally -1, `TombstoneFileSize`) for a deletion.
    pub size: i32,
}

impl IdxEntry {
    /// Parses one entry from the start of `b`; `None` when `b` is shorter than `entry_size`
    /// or `entry_size` is neither 16 nor 17.
    ///
    /// The 5-byte offset is `BytesToOffset`: bytes 0..4 are the low 32 bits big-endian, byte 4
    /// is bits 32..40 (the high byte comes last, not first).
    pub fn parse(b: &[u8], entry_size: usize) -> Option<Self> {
        if b.len() < entry_size {
            return None;
        }
        let id = be_u64(&b[0..8]);
        let low = be_u32(&b[8..12]) as u64;
        let (units, size_at) = match entry_size {
            IDX_ENTRY_SIZE_4 => (low, 12),
            IDX_ENTRY_SIZE_5 => (low | (b[12] as u64) << 32, 13),
            _ => return None,
        };
        Some(Self {
            id,
            offset: units * NEEDLE_PADDING_SIZE,
            size: be_u32(&b[size_at..size_at + 4]) as i32,
        })
    }

    /// Whether the entry makes its needle readable: `doLoading` (`needle_map_memory.go`)
    /// sets the map only for `!offset.IsZero() && !size.IsDeleted()`, and deletes otherwise.
    /// A size of 0 is a live, empty needle.
    pub fn is_live(&self) -> bool {
        self.offset != 0 && self.size >= 0
    }

    /// Appends the entry as `needle_map.ToBytes` writes it. `offset` must be a multiple of 8
    /// that fits the entry size (4 or 5 bytes of 8-byte units); bits beyond are dropped, as
    /// Go's `ToOffset` drops them.
    pub fn encode_into(&self, entry_size: usize, out: &mut Vec<u8>) -> Result<(), FormatError> {
        let units = self.offset / NEEDLE_PADDING_SIZE;
        out.extend_from_slice(&self.id.to_be_bytes());
        out.extend_from_slice(&(units as u32).to_be_bytes());
        match entry_size {
            IDX_ENTRY_SIZE_4 => {}
            IDX_ENTRY_SIZE_5 => out.push((units >> 32) as u8),
            other => {
                out.truncate(out.len() - 12);
                return Err(FormatError::EntrySize(other));
            }
        }
        out.extend_from_slice(&(self.size as u32).to_be_bytes());
        Ok(())
    }
}

/// The entry size an `.idx` file's length allows on its own: `Some` when the length is a
/// multiple of exactly one of 16 and 17. Lengths that are multiples of both (every multiple of
/// 272, including an empty file) or of neither (a partial trailing entry) decide nothing; the
/// reader then looks at what the entries point to in the `.dat` (`volume.rs`).
pub fn entry_size_by_length(len: u64) -> Option<usize> {
    match (
        len.is_multiple_of(IDX_ENTRY_SIZE_4 as u64),
        len.is_multiple_of(IDX_ENTRY_SIZE_5 as u64),
    ) {
        (true, false) => Some(IDX_ENTRY_SIZE_4),
        (false, true) => Some(IDX_ENTRY_SIZE_5),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn idx_entries_16_and_17_bytes() {
        let b16 = [0, 0, 0, 0, 0, 0, 0x12, 0x34, 0, 0, 0, 3, 0, 0, 0, 40];
        assert_eq!(
            IdxEntry::parse(&b16, 16),
            Some(IdxEntry {
                id: 0x1234,
                offset: 24,
                size: 40
            })
        );
        // 17 bytes: the fifth offset byte (bits 32..40) follows the four big-endian ones.
        let b17 = [0, 0, 0, 0, 0, 0, 0x12, 0x34, 0, 0, 0, 3, 2, 0xff, 0xff, 0xff, 0xff];
        let e = IdxEntry::parse(&b17, 17).unwrap();
        assert_eq!(e.offset, (3 + (2u64 << 32)) * 8);
        assert_eq!(e.size, -1);
        assert!(!e.is_live());
        let mut v = Vec::new();
        e.encode_into(17, &mut v).unwrap();
        assert_eq!(v, b17);
        assert_eq!(IdxEntry::parse(&b17[..16], 17), None);
        assert_eq!(IdxEntry::parse(&b17, 15), None);
        assert!(
            IdxEntry {
                id: 1,
                offset: 8,
                size: 0
            }
            .is_live(),
            "size 0 is an empty needle"
        );
        assert!(
            !IdxEntry {
                id: 1,
                offset: 0,
                size: 5
            }
            .is_live(),
            "offset 0 is a deletion"
        );
        assert_eq!(
            IdxEntry {
                id: 1,
                offset: 8,
                size: 0
            }
            .encode_into(18, &mut v),
            Err(FormatError::EntrySize(18))
        );
        assert_eq!(v, b17, "a refused encoding leaves the buffer as it was");
    }

    #[test]
    fn entry_size_from_length() {
        assert_eq!(entry_size_by_length(16 * 5), Some(16));
        assert_eq!(entry_size_by_length(17 * 5), Some(17));
        assert_eq!(entry_size_by_length(0), None);
        assert_eq!(entry_size_by_length(272), None);
        assert_eq!(entry_size_by_length(33), None);
    }

    proptest! {
        #[test]
        fn idx_entry_roundtrip(id: u64, units in 1u64..(1 << 40), size: i32, five: bool) {
            let es = if five { 17 } else { 16 };
            let units = if five { units } else { units & 0xffff_ffff };
            let e = IdxEntry { id, offset: units * 8, size };
            let mut v = Vec::new();
            e.encode_into(es, &mut v).unwrap();
            prop_assert_eq!(v.len(), es);
            prop_assert_eq!(IdxEntry::parse(&v, es), Some(e));
        }
    }
}
