//! The needles a soak reads: two volumes written before the engine starts (SeaweedFS format,
//! versions 3 and 2) and one appended to while it serves.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use integration_tests::rng::TestRng;
use ring_proto::needle::NeedleMeta;
use seaweed_format::crc32c;
use seaweed_format::writer::{full_needle, needle, VolumeWriter};

/// Volumes: `V3` (version 3, 16-byte idx), `V2` (collection "soak", version 2, 17-byte idx),
/// `VNEW` (version 3, appended to during the soak).
const V3: u32 = 3;
const V2: u32 = 7;
const VNEW: u32 = 9;
const NEW_NEEDLES_MAX: usize = 1000;

/// `n` bytes that depend on `seed` (xorshift64, 8 bytes a step).
pub fn pattern(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut v = Vec::with_capacity(n + 8);
    while v.len() < n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(n);
    v
}

/// A needle as the test wrote it, and the metadata the engine must return for it.
pub struct NeedleRef {
    pub vid: u32,
    pub id: u64,
    pub cookie: u32,
    pub data: Vec<u8>,
    pub meta: NeedleMeta,
}

fn plain_meta(vid_version: u8, id: u64, data: &[u8]) -> NeedleMeta {
    NeedleMeta {
        data_size: data.len() as u64,
        range_offset: 0,
        last_modified: 0,
        append_at_ns: if vid_version == 3 {
            1_700_000_000_000_000_000 + id
        } else {
            0
        },
        checksum: crc32c(data),
        flags: 0,
        version: vid_version,
        ttl: [0, 0],
        name: Vec::new(),
        mime: Vec::new(),
    }
}

/// A needle with plain metadata (as `needle()` writes it), for the volume of `vid`.
fn plain_ref(vid: u32, version: u8, id: u64, cookie: u32, data: Vec<u8>) -> Arc<NeedleRef> {
    Arc::new(NeedleRef {
        vid,
        id,
        cookie,
        meta: plain_meta(version, id, &data),
        data,
    })
}

/// The needles a run reads: written before the engine starts, plus those written meanwhile.
pub struct Volumes {
    /// Readable whole into one slot.
    pub small: Vec<Arc<NeedleRef>>,
    /// Larger than a slot: ranged reads only (whole: response-too-large).
    pub big: Arc<NeedleRef>,
    /// Deleted (needle-deleted).
    pub deleted: (u32, u64, u32),
    /// Written during the run, each published after its `.idx` entry is on disk.
    pub new: RwLock<Vec<Arc<NeedleRef>>>,
}

#[rustfmt::skip]
const SIZES: [usize; 28] = [
    0, 1, 2, 7, 8, 9, 100, 1000, 1023, 1024, 1025, 4095, 4096, 4097, 8191, 8192, 10_000, 16_384, 65_535, 65_536,
    65_537, 100_000, 131_072, 262_144, 500_000, 777_777, 1_000_000, 1 << 20,
];

/// Writes the volumes into `dir`; returns them and the writer of `VNEW`, for
/// [`append_while_serving`].
pub fn write_volumes(dir: &Path) -> (Volumes, VolumeWriter) {
    let mut v3 = VolumeWriter::create(dir, "", V3, 3, 16).unwrap();
    let mut v2 = VolumeWriter::create(dir, "soak", V2, 2, 17).unwrap();
    let mut small = Vec::new();
    for (i, &n) in SIZES.iter().enumerate() {
        for (w, vid, version, cookie) in [
            (&mut v3, V3, 3u8, 0x5eed_0000 + i as u32),
            (&mut v2, V2, 2u8, 0x0a7e_0000 + i as u32),
        ] {
            let id = i as u64 + 1;
            let data = pattern(n, vid as u64 * 1000 + i as u64);
            w.write(&needle(id, cookie, &data)).unwrap();
            small.push(plain_ref(vid, version, id, cookie, data));
        }
    }
    // Every optional field, as an upload through the HTTP API leaves it.
    let full_data = pattern(5000, 77);
    let spec = full_needle(100, 77, &full_data);
    v3.write(&spec).unwrap();
    small.push(Arc::new(NeedleRef {
        vid: V3,
        id: 100,
        cookie: 77,
        meta: NeedleMeta {
            last_modified: spec.last_modified,
            flags: spec.flags,
            ttl: spec.ttl,
            name: spec.name.clone(),
            mime: spec.mime.clone(),
            ..plain_meta(3, 100, &full_data)
        },
        data: full_data,
    }));
    // Overwritten: the last entry wins.
    v3.write(&needle(200, 5, &pattern(3000, 200))).unwrap();
    let newer = pattern(7000, 201);
    v3.write(&needle(200, 5, &newer)).unwrap();
    small.push(plain_ref(V3, 3, 200, 5, newer));
    v3.write(&needle(300, 6, b"short-lived")).unwrap();
    v3.delete(300, 6).unwrap();
    let big_data = pattern(3 << 20, 400);
    v3.write(&needle(400, 9, &big_data)).unwrap();
    let big = plain_ref(V3, 3, 400, 9, big_data);
    // The volume appended to during the run starts with one needle.
    let mut vnew = VolumeWriter::create(dir, "", VNEW, 3, 16).unwrap();
    let first = pattern(100, 9000);
    vnew.write(&needle(1, 1, &first)).unwrap();
    let new = vec![plain_ref(VNEW, 3, 1, 1, first)];
    (
        Volumes {
            small,
            big,
            deleted: (V3, 300, 6),
            new: RwLock::new(new),
        },
        vnew,
    )
}

/// The volume server keeps writing: needles appended to volume `VNEW` every 25 ms until
/// `deadline` (or `abort`), each published to the readers once its .idx entry is written (the
/// engine finds it on a miss). Counts them in `written`.
pub fn append_while_serving(
    vnew: &mut VolumeWriter,
    vols: &Volumes,
    mut rng: TestRng,
    deadline: Instant,
    abort: &AtomicBool,
    written: &AtomicU64,
) {
    let mut id = 2u64;
    while Instant::now() < deadline && !abort.load(Ordering::Relaxed) && (id as usize) < NEW_NEEDLES_MAX {
        let data = pattern(rng.range(0, 128 << 10), 9000 + id);
        let cookie = rng.next_u64() as u32;
        vnew.write(&needle(id, cookie, &data)).unwrap();
        vols.new.write().unwrap().push(plain_ref(VNEW, 3, id, cookie, data));
        written.fetch_add(1, Ordering::Relaxed);
        id += 1;
        std::thread::sleep(Duration::from_millis(25));
    }
}
