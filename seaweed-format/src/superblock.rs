//! The `.dat` super block (`weed/storage/super_block/super_block.go`, `super_block_read.go.go`).

use crate::{be_u16, FormatError, SUPER_BLOCK_SIZE};

/// The first bytes of a `.dat` file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SuperBlock {
    /// Needle version of every needle in the volume: 1, 2 or 3.
    pub version: u8,
    pub replica_placement: u8,
    /// Volume TTL: count, unit.
    pub ttl: [u8; 2],
    /// How often the volume was compacted (vacuumed).
    pub compaction_revision: u16,
    /// Bytes of protobuf `SuperBlockExtra` after the 8 fixed bytes (versions 2 and 3).
    pub extra_size: u16,
}

impl SuperBlock {
    /// Parses the 8 fixed bytes. The extra bytes are not interpreted (nothing in them matters
    /// for reading needles); `block_size` says how far they reach.
    pub fn parse(b: &[u8]) -> Result<Self, FormatError> {
        if b.len() < SUPER_BLOCK_SIZE {
            return Err(FormatError::Truncated {
                what: "super block",
                need: SUPER_BLOCK_SIZE as u64,
                have: b.len() as u64,
            });
        }
        if !(1..=3).contains(&b[0]) {
            return Err(FormatError::UnsupportedVersion(b[0]));
        }
        Ok(Self {
            version: b[0],
            replica_placement: b[1],
            ttl: [b[2], b[3]],
            compaction_revision: be_u16(&b[4..6]),
            extra_size: be_u16(&b[6..8]),
        })
    }

    /// Bytes before the first needle (`SuperBlock.BlockSize`: the extra counts for versions 2
    /// and 3 only).
    pub fn block_size(&self) -> u64 {
        match self.version {
            2 | 3 => SUPER_BLOCK_SIZE as u64 + self.extra_size as u64,
            _ => SUPER_BLOCK_SIZE as u64,
        }
    }

    /// The 8 fixed bytes (`SuperBlock.Bytes` without the extra).
    pub fn encode(&self) -> [u8; SUPER_BLOCK_SIZE] {
        let r = self.compaction_revision.to_be_bytes();
        let e = self.extra_size.to_be_bytes();
        [
            self.version,
            self.replica_placement,
            self.ttl[0],
            self.ttl[1],
            r[0],
            r[1],
            e[0],
            e[1],
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn super_block_fields() {
        let sb = SuperBlock::parse(&[3, 0x01, 5, 3, 0, 7, 0, 12]).unwrap();
        assert_eq!(
            sb,
            SuperBlock {
                version: 3,
                replica_placement: 1,
                ttl: [5, 3],
                compaction_revision: 7,
                extra_size: 12
            }
        );
        assert_eq!(sb.block_size(), 20);
        assert_eq!(sb.encode(), [3, 0x01, 5, 3, 0, 7, 0, 12]);
        let v1 = SuperBlock { version: 1, ..sb };
        assert_eq!(v1.block_size(), 8, "version 1 ignores the extra size");
        assert_eq!(
            SuperBlock::parse(&[4, 0, 0, 0, 0, 0, 0, 0]),
            Err(FormatError::UnsupportedVersion(4))
        );
        assert!(matches!(SuperBlock::parse(&[3, 0]), Err(FormatError::Truncated { .. })));
    }
}
