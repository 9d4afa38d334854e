//! Needles (`weed/storage/needle/needle_read.go`, `needle_read_tail.go`, `needle_write_v*.go`): sizes, the header,
//! the body fields of each version, the tail, and TTL expiry.

use ring_proto::needle::{flags, NeedleMeta};

use crate::{
    be_u16, be_u32, be_u64, FormatError, LAST_MODIFIED_LEN, NEEDLE_CHECKSUM_SIZE, NEEDLE_HEADER_SIZE,
    NEEDLE_PADDING_SIZE, TIMESTAMP_SIZE, TTL_LEN,
};

/// `PaddingLength`: 1 to 8 bytes that round the needle up to a multiple of 8 (8, not 0, when
/// it is already a multiple).
pub fn padding_len(size: u32, version: u8) -> u64 {
    let ts = if version == 3 { TIMESTAMP_SIZE as u64 } else { 0 };
    let unpadded = NEEDLE_HEADER_SIZE as u64 + size as u64 + NEEDLE_CHECKSUM_SIZE as u64 + ts;
    NEEDLE_PADDING_SIZE - unpadded % NEEDLE_PADDING_SIZE
}

/// `GetActualSize`: the bytes a needle of header size `size` occupies in the `.dat`.
pub fn needle_disk_size(size: u32, version: u8) -> u64 {
    let ts = if version == 3 { TIMESTAMP_SIZE as u64 } else { 0 };
    NEEDLE_HEADER_SIZE as u64 + size as u64 + NEEDLE_CHECKSUM_SIZE as u64 + ts + padding_len(size, version)
}

/// The 16-byte needle header (`ParseNeedleHeader`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NeedleHeader {
    pub cookie: u32,
    pub id: u64,
    /// As stored (Go reads it as a signed `Size`).
    pub size: u32,
}

impl NeedleHeader {
    pub fn parse(b: &[u8]) -> Result<Self, FormatError> {
        if b.len() < NEEDLE_HEADER_SIZE {
            return Err(FormatError::Truncated {
                what: "needle header",
                need: NEEDLE_HEADER_SIZE as u64,
                have: b.len() as u64,
            });
        }
        Ok(Self {
            cookie: be_u32(&b[0..4]),
            id: be_u64(&b[4..12]),
            size: be_u32(&b[12..16]),
        })
    }
}

/// A parsed needle, borrowing from the bytes it was parsed from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Needle<'a> {
    pub header: NeedleHeader,
    /// The file data as stored (gzip-compressed when `flags` has GZIP).
    pub data: &'a [u8],
    /// Where `data` starts, counted from the needle's first byte.
    pub data_start: usize,
    /// Flag bits as stored (`ring_proto::needle::flags`); 0 for version 1 and empty needles.
    pub flags: u8,
    pub name: &'a [u8],
    pub mime: &'a [u8],
    /// Unix seconds (5 bytes on disk); 0 when absent.
    pub last_modified: u64,
    /// Count, unit; zero when absent.
    pub ttl: [u8; 2],
    /// JSON name/value pairs; empty when absent.
    pub pairs: &'a [u8],
    /// The tail's checksum as stored: CRC-32C of `data`, or for needles written by SeaweedFS
    /// before 3.09 the legacy transform of it ([`legacy_crc`]).
    pub stored_checksum: u32,
    /// Version 3: the tail's append time in Unix nanoseconds; else 0.
    pub append_at_ns: u64,
    /// Bytes the needle occupies in the `.dat`, padding included.
    pub disk_size: u64,
}

/// Parses a needle from the start of `b` (which may go on past the needle). Accepts what
/// SeaweedFS's own reader accepts (`ReadBytes` → `readNeedleDataVersion2` →
/// `readNeedleDataVersion2NonData` → `readNeedleTail`), minus the CRC check ([`check_crc`]):
///
/// * the whole needle, padding included, must be in `b` (`ReadNeedleBlob` reads it whole);
/// * an optional field whose flag is set but which would start at the end of the body is
///   absent (Go's `index < lenBytes` guards); one that starts inside the body but does not
///   fit is an error;
/// * bytes left in the body after the last field are ignored, as is the padding's content.
///
/// It is stricter than Go in one place: a version 2/3 body of 1 to 3 bytes cannot hold its
/// data size (Go would index past the slice and panic); that is a `FieldOverrun` here.
pub fn parse_needle(b: &[u8], version: u8) -> Result<Needle<'_>, FormatError> {
    if !(1..=3).contains(&version) {
        return Err(FormatError::UnsupportedVersion(version));
    }
    let header = NeedleHeader::parse(b)?;
    if header.size > i32::MAX as u32 {
        return Err(FormatError::NegativeSize(header.size));
    }
    let disk_size = needle_disk_size(header.size, version);
    if (b.len() as u64) < disk_size {
        return Err(FormatError::Truncated {
            what: "needle",
            need: disk_size,
            have: b.len() as u64,
        });
    }
    let size = header.size as usize;
    let body = &b[NEEDLE_HEADER_SIZE..NEEDLE_HEADER_SIZE + size];
    let tail = &b[NEEDLE_HEADER_SIZE + size..];
    let mut n = Needle {
        header,
        data: &[],
        data_start: NEEDLE_HEADER_SIZE,
        flags: 0,
        name: &[],
        mime: &[],
        last_modified: 0,
        ttl: [0; 2],
        pairs: &[],
        stored_checksum: be_u32(&tail[..NEEDLE_CHECKSUM_SIZE]),
        append_at_ns: 0,
        disk_size,
    };
    if version == 3 {
        n.append_at_ns = be_u64(&tail[NEEDLE_CHECKSUM_SIZE..NEEDLE_CHECKSUM_SIZE + TIMESTAMP_SIZE]);
    }
    if version == 1 {
        n.data = body;
        return Ok(n);
    }
    parse_body_v2(&mut n, body)?;
    Ok(n)
}

fn parse_body_v2<'a>(n: &mut Needle<'a>, body: &'a [u8]) -> Result<(), FormatError> {
    let len = body.len();
    let overrun = |field: &'static str, end: usize| FormatError::FieldOverrun {
        field,
        end: end as u64,
        body: len as u64,
    };
    if len == 0 {
        return Ok(());
    }
    if len < 4 {
        return Err(overrun("data size", 4));
    }
    let data_size = be_u32(&body[0..4]) as usize;
    let mut i: usize = 4;
    let data_end = i
        .checked_add(data_size)
        .filter(|&e| e <= len)
        .ok_or(overrun("data", data_size.saturating_add(4)))?;
    n.data = &body[i..data_end];
    n.data_start = NEEDLE_HEADER_SIZE + i;
    i = data_end;
    if i < len {
        n.flags = body[i];
        i += 1;
    }
    if i < len && n.flags & flags::HAS_NAME != 0 {
        let l = body[i] as usize;
        i += 1;
        if i + l > len {
            return Err(overrun("name", i + l));
        }
        n.name = &body[i..i + l];
        i += l;
    }
    if i < len && n.flags & flags::HAS_MIME != 0 {
        let l = body[i] as usize;
        i += 1;
        if i + l > len {
            return Err(overrun("mime", i + l));
        }
        n.mime = &body[i..i + l];
        i += l;
    }
    if i < len && n.flags & flags::HAS_LAST_MODIFIED != 0 {
        if i + LAST_MODIFIED_LEN > len {
            return Err(overrun("last-modified", i + LAST_MODIFIED_LEN));
        }
        n.last_modified = body[i..i + LAST_MODIFIED_LEN]
            .iter()
            .fold(0u64, |a, &x| a << 8 | x as u64);
        i += LAST_MODIFIED_LEN;
    }
    if i < len && n.flags & flags::HAS_TTL != 0 {
        if i + TTL_LEN > len {
            return Err(overrun("ttl", i + TTL_LEN));
        }
        n.ttl = [body[i], body[i + 1]];
        i += TTL_LEN;
    }
    if i < len && n.flags & flags::HAS_PAIRS != 0 {
        if i + 2 > len {
            return Err(overrun("pairs size", i + 2));
        }
        let l = be_u16(&body[i..i + 2]) as usize;
        i += 2;
        if i + l > len {
            return Err(overrun("pairs", i + l));
        }
        n.pairs = &body[i..i + l];
    }
    Ok(())
}

impl Needle<'_> {
    /// The metadata a `READ_NEEDLE` returns. `checksum` is the CRC-32C to report (the stored
    /// one, or the raw CRC when the stored one is in the legacy encoding).
    pub fn meta(&self, version: u8, range_offset: u64, checksum: u32) -> NeedleMeta {
        NeedleMeta {
            data_size: self.data.len() as u64,
            range_offset,
            last_modified: self.last_modified,
            append_at_ns: self.append_at_ns,
            checksum,
            flags: self.flags,
            version,
            ttl: self.ttl,
            name: self.name.to_vec(),
            mime: self.mime.to_vec(),
        }
    }

    /// Whether SeaweedFS's reader would answer "not found" because the needle's TTL ran out
    /// (`Volume.readNeedle`, `volume_read.go`): only a needle with flags TTL and last-modified
    /// and a non-zero TTL expires, `ttl` minutes after its append time. A version 2 needle has
    /// no append time (0), so such a needle counts as expired, as in Go.
    pub fn expired(&self, now_unix_ns: u64) -> bool {
        if self.flags & flags::HAS_TTL == 0 || self.flags & flags::HAS_LAST_MODIFIED == 0 {
            return false;
        }
        let minutes = ttl_minutes(self.ttl);
        if minutes == 0 {
            return false;
        }
        let until = self.append_at_ns as u128 + minutes as u128 * 60_000_000_000;
        now_unix_ns as u128 >= until
    }
}

/// `TTL.Minutes` (`needle/volume_ttl.go`): units 1 minute, 2 hour, 3 day, 4 week, 5 month
/// (30 days), 6 year (365 days); 0 and unknown units are no TTL.
pub fn ttl_minutes(ttl: [u8; 2]) -> u32 {
    let count = ttl[0] as u32;
    count
        * match ttl[1] {
            1 => 1,
            2 => 60,
            3 => 60 * 24,
            4 => 60 * 24 * 7,
            5 => 60 * 24 * 30,
            6 => 60 * 24 * 365,
            _ => 0,
        }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        check_crc, crc32c, crc_from_legacy, encode_needle, legacy_crc, CrcCheck, IdxEntry, NeedleSpec, SuperBlock,
    };
    use proptest::prelude::*;

    #[test]
    fn padding_is_one_to_eight_bytes() {
        // 16 + 0 + 4 = 20 → 4 bytes of padding; v3: 28 → 4.
        assert_eq!(padding_len(0, 2), 4);
        assert_eq!(padding_len(0, 3), 4);
        // 16 + 4 + 4 = 24, a multiple of 8: Go pads 8 bytes, not 0.
        assert_eq!(padding_len(4, 2), 8);
        assert_eq!(needle_disk_size(4, 2), 32);
        for size in 0..64u32 {
            for v in 1..=3 {
                let d = needle_disk_size(size, v);
                assert_eq!(d % 8, 0);
                assert!((1..=8).contains(&padding_len(size, v)));
            }
        }
    }

    fn full_spec() -> NeedleSpec {
        NeedleSpec {
            cookie: 0xdead_beef,
            id: 0x0102_0304_0506_0708,
            data: b"hello, needle".to_vec(),
            flags: flags::GZIP
                | flags::HAS_NAME
                | flags::HAS_MIME
                | flags::HAS_LAST_MODIFIED
                | flags::HAS_TTL
                | flags::HAS_PAIRS,
            name: b"a.txt".to_vec(),
            mime: b"text/plain".to_vec(),
            last_modified: 0x01_2345_6789,
            ttl: [3, 2],
            pairs: br#"{"k":"v"}"#.to_vec(),
            append_at_ns: 1_700_000_000_000_000_000,
            checksum: None,
            pad_byte: 0xa5,
        }
    }

    #[test]
    fn needle_roundtrip_all_fields_v2_v3() {
        let s = full_spec();
        for v in [2u8, 3] {
            let (b, size) = encode_needle(&s, v);
            assert_eq!(b.len() as u64, needle_disk_size(size, v));
            assert_eq!(size as usize, 4 + 13 + 1 + 6 + 11 + 5 + 2 + 2 + 9);
            let n = parse_needle(&b, v).unwrap();
            assert_eq!(
                n.header,
                NeedleHeader {
                    cookie: s.cookie,
                    id: s.id,
                    size
                }
            );
            assert_eq!(n.data, &s.data[..]);
            assert_eq!(&b[n.data_start..n.data_start + n.data.len()], &s.data[..]);
            assert_eq!((n.flags, n.name, n.mime), (s.flags, &b"a.txt"[..], &b"text/plain"[..]));
            assert_eq!(
                (n.last_modified, n.ttl, n.pairs),
                (s.last_modified, [3, 2], &s.pairs[..])
            );
            assert_eq!(n.append_at_ns, if v == 3 { s.append_at_ns } else { 0 });
            assert_eq!(check_crc(n.data, n.stored_checksum), CrcCheck::Match);
            let m = n.meta(v, 4, n.stored_checksum);
            assert_eq!((m.data_size, m.range_offset, m.version, m.flags), (13, 4, v, s.flags));
        }
    }

    #[test]
    fn empty_needle_has_no_body() {
        let s = NeedleSpec {
            id: 9,
            cookie: 1,
            flags: flags::HAS_NAME,
            name: b"x".to_vec(),
            ..Default::default()
        };
        let (b, size) = encode_needle(&s, 3);
        assert_eq!(size, 0);
        assert_eq!(b.len(), 32);
        let n = parse_needle(&b, 3).unwrap();
        assert_eq!((n.data, n.flags, n.name), (&[][..], 0, &[][..]));
    }

    #[test]
    fn version_1_data_is_the_body() {
        let s = NeedleSpec {
            id: 2,
            cookie: 3,
            data: b"v1 data".to_vec(),
            ..Default::default()
        };
        let (b, size) = encode_needle(&s, 1);
        assert_eq!(size, 7);
        let n = parse_needle(&b, 1).unwrap();
        assert_eq!(n.data, b"v1 data");
        assert_eq!(n.data_start, 16);
    }

    #[test]
    fn legacy_checksum_is_accepted_and_garbage_refused() {
        let mut s = full_spec();
        s.checksum = Some(legacy_crc(crc32c(&s.data)));
        let (b, _) = encode_needle(&s, 3);
        let n = parse_needle(&b, 3).unwrap();
        assert_eq!(check_crc(n.data, n.stored_checksum), CrcCheck::LegacyMatch);
        assert_eq!(crc_from_legacy(n.stored_checksum), crc32c(&s.data));
        assert!(matches!(check_crc(n.data, 0x1234), CrcCheck::Mismatch { .. }));
        assert_eq!(
            check_crc(&[], 0x1234),
            CrcCheck::Match,
            "Go checks no CRC for empty data"
        );
    }

    #[test]
    fn flagged_field_at_body_end_is_absent_but_overrun_is_corrupt() {
        // Flags say name, but the body ends right after the flags byte: Go skips the name.
        let s = NeedleSpec {
            id: 1,
            cookie: 1,
            data: b"abc".to_vec(),
            ..Default::default()
        };
        let (mut b, size) = encode_needle(&s, 2);
        b[NEEDLE_HEADER_SIZE + size as usize - 1] = flags::HAS_NAME;
        let n = parse_needle(&b, 2).unwrap();
        assert_eq!(n.name, b"");
        // A name length running past the body is corrupt.
        let s = NeedleSpec {
            id: 1,
            cookie: 1,
            data: b"abc".to_vec(),
            flags: flags::HAS_NAME,
            name: b"nm".to_vec(),
            ..Default::default()
        };
        let (mut b, size) = encode_needle(&s, 2);
        b[NEEDLE_HEADER_SIZE + size as usize - 3] = 200;
        assert!(matches!(
            parse_needle(&b, 2),
            Err(FormatError::FieldOverrun { field: "name", .. })
        ));
        // A data size past the body.
        let (mut b, _) = encode_needle(&s, 3);
        b[NEEDLE_HEADER_SIZE..NEEDLE_HEADER_SIZE + 4].copy_from_slice(&1000u32.to_be_bytes());
        assert!(matches!(
            parse_needle(&b, 3),
            Err(FormatError::FieldOverrun { field: "data", .. })
        ));
        // A body too short for its data size.
        let mut b = vec![0u8; 40];
        b[15] = 2;
        assert!(matches!(
            parse_needle(&b, 2),
            Err(FormatError::FieldOverrun { field: "data size", .. })
        ));
        // Negative size; truncated needle.
        let mut b = vec![0u8; 40];
        b[12] = 0x80;
        assert_eq!(parse_needle(&b, 2), Err(FormatError::NegativeSize(0x8000_0000)));
        let (b, _) = encode_needle(&full_spec(), 3);
        assert!(matches!(
            parse_needle(&b[..b.len() - 1], 3),
            Err(FormatError::Truncated { .. })
        ));
        assert_eq!(parse_needle(&b, 4), Err(FormatError::UnsupportedVersion(4)));
    }

    #[test]
    fn ttl_expiry_follows_go() {
        let mut s = full_spec(); // ttl 3 hours, last-modified flag set
        let (b, _) = encode_needle(&s, 3);
        let n = parse_needle(&b, 3).unwrap();
        let t = s.append_at_ns;
        assert!(!n.expired(t));
        assert!(!n.expired(t + 3 * 3600 * 1_000_000_000 - 1));
        assert!(n.expired(t + 3 * 3600 * 1_000_000_000));
        s.flags &= !flags::HAS_LAST_MODIFIED;
        let (b, _) = encode_needle(&s, 3);
        assert!(
            !parse_needle(&b, 3).unwrap().expired(u64::MAX),
            "no last-modified: never expires"
        );
        assert_eq!(ttl_minutes([5, 4]), 5 * 7 * 24 * 60);
        assert_eq!(ttl_minutes([5, 9]), 0);
    }

    proptest! {
        #[test]
        fn parsers_never_panic(b in proptest::collection::vec(any::<u8>(), 0..400), v in 0u8..5) {
            let _ = SuperBlock::parse(&b);
            let _ = NeedleHeader::parse(&b);
            for es in [15usize, 16, 17, 18] {
                let _ = IdxEntry::parse(&b, es);
            }
            if let Ok(n) = parse_needle(&b, v) {
                prop_assert!(n.disk_size <= b.len() as u64);
                prop_assert!(n.data_start + n.data.len() <= b.len());
                prop_assert_eq!(&b[n.data_start..n.data_start + n.data.len()], n.data);
                prop_assert!(n.name.len() <= 255 && n.mime.len() <= 255);
                let _ = check_crc(n.data, n.stored_checksum);
                let _ = n.expired(u64::MAX);
                let m = n.meta(v, 0, 0);
                prop_assert!(m.encoded_len() <= ring_proto::needle::NEEDLE_META_MAX);
            }
        }
    }
}
