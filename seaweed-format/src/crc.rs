//! The needle checksum (`weed/storage/needle/crc.go`, `needle_read_tail.go readNeedleTail`).

/// CRC-32C (Castagnoli) of `data`, as Go's `crc32.Update(0, castagnoliTable, data)`;
/// hardware-accelerated where the CPU has it (SSE 4.2, ARMv8 CRC).
pub fn crc32c(data: &[u8]) -> u32 {
    crc32c::crc32c(data)
}

/// `CRC.Value()`: the transform SeaweedFS stored before 3.09 (commit 056c480eb). Its reader
/// still accepts either form.
pub fn legacy_crc(crc: u32) -> u32 {
    crc.rotate_right(15).wrapping_add(0xa282_ead8)
}

/// The CRC whose [`legacy_crc`] is `stored`.
pub fn crc_from_legacy(stored: u32) -> u32 {
    stored.wrapping_sub(0xa282_ead8).rotate_left(15)
}

/// How a needle's stored checksum relates to its data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrcCheck {
    /// The stored value is the CRC-32C of the data (or the data is empty: Go checks nothing).
    Match,
    /// The stored value is the legacy transform of the CRC-32C.
    LegacyMatch,
    Mismatch {
        computed: u32,
    },
}

/// Checks `data` against its stored checksum as `readNeedleTail` does.
pub fn check_crc(data: &[u8], stored: u32) -> CrcCheck {
    if data.is_empty() {
        return CrcCheck::Match;
    }
    let c = crc32c(data);
    if c == stored {
        CrcCheck::Match
    } else if legacy_crc(c) == stored {
        CrcCheck::LegacyMatch
    } else {
        CrcCheck::Mismatch { computed: c }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(clippy::manual_rotate)] // Go's expression, as written in crc.go
    fn crc32c_is_castagnoli_and_legacy_inverts() {
        // The CRC-32C check value (RFC 3720 appendix B.4 lists the same polynomial).
        assert_eq!(crc32c(b"123456789"), 0xe306_9283);
        for c in [0u32, 1, 0xe306_9283, u32::MAX, 0x8000_0000] {
            assert_eq!(crc_from_legacy(legacy_crc(c)), c);
        }
        // Go: uint32(c>>15|c<<17) + 0xa282ead8
        let c = 0xe306_9283u32;
        assert_eq!(legacy_crc(c), ((c >> 15) | (c << 17)).wrapping_add(0xa282ead8));
    }
}
