//! What a `READ_NEEDLE` leaves in the client's buffer besides the data: the needle's metadata,
//! so a client can answer like the volume server's HTTP GET (name, mime, last-modified,
//! compression) and read a needle larger than its buffer range by range.
//!
//! ```text
//! buf_offset + 0                 NeedleMeta (encoded, at most NEEDLE_META_LEN bytes)
//! buf_offset + NEEDLE_META_LEN   data bytes (the CQE result says how many)
//!
//! NeedleMeta, little-endian:
//!  0 data_size u64      size of the needle's whole data as stored (compressed if GZIP)
//!  8 range_offset u64   data offset of the first byte returned
//! 16 last_modified u64  Unix seconds, 0 when the needle has none
//! 24 append_at_ns u64   when the volume server appended it (volume version 3), else 0
//! 32 checksum u32       the stored CRC-32C (Castagnoli) of the whole data
//! 36 flags u8           the needle's flag bits as stored (see `flags`)
//! 37 name_len u8        bytes of name at 64
//! 38 mime_len u8        bytes of mime type at 64 + name_len
//! 39 version u8         the volume's needle version (2 or 3)
//! 40 ttl [u8; 2]        count, unit as stored; zero when none
//! 42 reserved           zero up to 64
//! 64 name, mime
//! ```

/// Bytes reserved at the start of a `READ_NEEDLE` buffer for the metadata; data follows.
pub const NEEDLE_META_LEN: usize = 1024;
/// Fixed part of the encoded metadata.
pub const NEEDLE_META_FIXED: usize = 64;
/// Longest encoding: fixed part plus a 255-byte name and a 255-byte mime type.
pub const NEEDLE_META_MAX: usize = NEEDLE_META_FIXED + 255 + 255;
const _: () = assert!(NEEDLE_META_MAX <= NEEDLE_META_LEN);

/// Needle flag bits (SeaweedFS `weed/storage/needle`), as they are stored.
pub mod flags {
    /// The data is gzip-compressed as stored; the HTTP API decompresses it for clients that
    /// do not accept gzip.
    pub const GZIP: u8 = 0x01;
    pub const HAS_NAME: u8 = 0x02;
    pub const HAS_MIME: u8 = 0x04;
    pub const HAS_LAST_MODIFIED: u8 = 0x08;
    pub const HAS_TTL: u8 = 0x10;
    pub const HAS_PAIRS: u8 = 0x20;
    /// The data is a chunk manifest (JSON list of other file ids), not file content.
    pub const CHUNK_MANIFEST: u8 = 0x80;
}

/// A needle's metadata as carried between engines and into the client's buffer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NeedleMeta {
    pub data_size: u64,
    pub range_offset: u64,
    pub last_modified: u64,
    pub append_at_ns: u64,
    pub checksum: u32,
    pub flags: u8,
    pub version: u8,
    pub ttl: [u8; 2],
    /// At most 255 bytes (the on-disk length field is one byte).
    pub name: Vec<u8>,
    /// At most 255 bytes.
    pub mime: Vec<u8>,
}

/// Why encoded metadata was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NeedleMetaError {
    Short(usize),
    Lengths { want: usize, have: usize },
    Reserved,
}

impl core::fmt::Display for NeedleMetaError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Short(n) => write!(f, "needle metadata is {n} bytes, shorter than its 64-byte fixed part"),
            Self::Lengths { want, have } => {
                write!(
                    f,
                    "needle metadata names {want} bytes of name and mime but carries {have}"
                )
            }
            Self::Reserved => write!(f, "needle metadata reserved bytes are not zero"),
        }
    }
}

impl std::error::Error for NeedleMetaError {}

impl NeedleMeta {
    /// Encoded length (`64 + name + mime`); name and mime are cut to 255 bytes.
    pub fn encoded_len(&self) -> usize {
        NEEDLE_META_FIXED + self.name.len().min(255) + self.mime.len().min(255)
    }

    /// Appends the encoding to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        let name = &self.name[..self.name.len().min(255)];
        let mime = &self.mime[..self.mime.len().min(255)];
        out.extend_from_slice(&self.data_size.to_le_bytes());
        out.extend_from_slice(&self.range_offset.to_le_bytes());
        out.extend_from_slice(&self.last_modified.to_le_bytes());
        out.extend_from_slice(&self.append_at_ns.to_le_bytes());
        out.extend_from_slice(&self.checksum.to_le_bytes());
        out.extend_from_slice(&[self.flags, name.len() as u8, mime.len() as u8, self.version]);
        out.extend_from_slice(&self.ttl);
        out.extend_from_slice(&[0u8; NEEDLE_META_FIXED - 42]);
        out.extend_from_slice(name);
        out.extend_from_slice(mime);
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(self.encoded_len());
        self.encode_into(&mut v);
        v
    }

    /// Decodes and checks an encoding; bytes after the name and mime are ignored (a buffer's
    /// meta area is `NEEDLE_META_LEN` bytes).
    pub fn decode(b: &[u8]) -> Result<Self, NeedleMetaError> {
        if b.len() < NEEDLE_META_FIXED {
            return Err(NeedleMetaError::Short(b.len()));
        }
        let u64_at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().expect("8 bytes"));
        let (name_len, mime_len) = (b[37] as usize, b[38] as usize);
        let want = NEEDLE_META_FIXED + name_len + mime_len;
        if want > b.len() {
            return Err(NeedleMetaError::Lengths { want, have: b.len() });
        }
        if b[42..NEEDLE_META_FIXED].iter().any(|&x| x != 0) {
            return Err(NeedleMetaError::Reserved);
        }
        Ok(Self {
            data_size: u64_at(0),
            range_offset: u64_at(8),
            last_modified: u64_at(16),
            append_at_ns: u64_at(24),
            checksum: u32::from_le_bytes(b[32..36].try_into().expect("4 bytes")),
            flags: b[36],
            version: b[39],
            ttl: [b[40], b[41]],
            name: b[NEEDLE_META_FIXED..NEEDLE_META_FIXED + name_len].to_vec(),
            mime: b[NEEDLE_META_FIXED + name_len..want].to_vec(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn byte_positions() {
        let m = NeedleMeta {
            data_size: 1,
            range_offset: 2,
            last_modified: 3,
            append_at_ns: 4,
            checksum: 5,
            flags: 6,
            version: 3,
            ttl: [7, 8],
            name: b"a.txt".to_vec(),
            mime: b"text/plain".to_vec(),
        };
        let b = m.encode();
        assert_eq!(b.len(), 64 + 5 + 10);
        assert_eq!(
            (b[0], b[8], b[16], b[24], b[32], b[36], b[37], b[38], b[39], b[40], b[41]),
            (1, 2, 3, 4, 5, 6, 5, 10, 3, 7, 8)
        );
        assert_eq!(&b[64..69], b"a.txt");
        assert_eq!(NeedleMeta::decode(&b), Ok(m));
    }

    #[test]
    fn lengths_are_checked() {
        let mut b = NeedleMeta::default().encode();
        b[37] = 1;
        assert_eq!(
            NeedleMeta::decode(&b),
            Err(NeedleMetaError::Lengths { want: 65, have: 64 })
        );
        assert_eq!(NeedleMeta::decode(&b[..63]), Err(NeedleMetaError::Short(63)));
        let mut b = NeedleMeta::default().encode();
        b[50] = 1;
        assert_eq!(NeedleMeta::decode(&b), Err(NeedleMetaError::Reserved));
    }

    proptest! {
        #[test]
        fn decode_never_panics(b in proptest::collection::vec(any::<u8>(), 0..700)) {
            if let Ok(m) = NeedleMeta::decode(&b) {
                prop_assert!(m.encoded_len() <= b.len());
            }
        }

        #[test]
        fn roundtrip(name in proptest::collection::vec(any::<u8>(), 0..300), mime in proptest::collection::vec(any::<u8>(), 0..300), size: u64, crc: u32) {
            let m = NeedleMeta { data_size: size, checksum: crc, name, mime, ..Default::default() };
            let d = NeedleMeta::decode(&m.encode()).unwrap();
            prop_assert_eq!(&d.name[..], &m.name[..m.name.len().min(255)]);
            prop_assert_eq!(&d.mime[..], &m.mime[..m.mime.len().min(255)]);
            prop_assert!(m.encoded_len() <= NEEDLE_META_MAX);
        }
    }
}
