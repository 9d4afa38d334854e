//! `ucx.read_bw.*`: 1 MiB READs of another session's export through the rings and the
//! engine's own UCX listener, and the source pattern both bandwidth scenarios check.

use super::*;

/// Bytes per READ (and per raw get).
pub const READ_BYTES: usize = 1 << 20;
/// READs (gets) in flight, each into a slot of its own in the destination buffer.
pub const READ_DEPTH: usize = 16;
/// The exported (registered) source: READs cycle over its 1 MiB pieces.
pub const EXPORT_BYTES: usize = 16 << 20;
pub(super) const EXPORT_PIECES: u64 = (EXPORT_BYTES / READ_BYTES) as u64;
/// The sanity check before the first block: this piece of the export into this slot.
pub(super) const PROBE_PIECE: u64 = 5;
pub(super) const PROBE_SLOT: usize = 3;

/// Where READ number `seq` reads in the export: its pieces in turn.
pub(super) fn remote_offset(seq: u64) -> u64 {
    (seq % EXPORT_PIECES) * READ_BYTES as u64
}

/// Where the READ of `slot` lands in the destination buffer.
pub(super) fn slot_offset(slot: usize) -> usize {
    slot * READ_BYTES
}

/// `user_data` of a READ: the sequence number above, the slot in the low byte.
pub(super) fn read_user_data(seq: u64, slot: usize) -> u64 {
    (seq << 8) | slot as u64
}

pub(super) fn slot_of(user_data: u64) -> usize {
    (user_data & 0xff) as usize
}

/// The exported content: byte `i` of the export (a multiplicative hash, so that every piece
/// differs from every other and from any shifted copy).
pub(super) fn pattern_at(i: usize) -> u8 {
    ((i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56) as u8
}

pub(super) fn fill_pattern(dst: &mut [u8], export_offset: usize) {
    for (k, b) in dst.iter_mut().enumerate() {
        *b = pattern_at(export_offset + k);
    }
}

/// Compares what a READ of the export at `export_offset` brought with the export's content.
pub(super) fn check_pattern(got: &[u8], export_offset: usize, what: &str) -> Result<()> {
    match got
        .iter()
        .enumerate()
        .find(|(k, b)| **b != pattern_at(export_offset + k))
    {
        None => Ok(()),
        Some((k, b)) => Err(format!(
            "{what}: wrong bytes: byte {k} of {} is {b:#04x}, expected {:#04x} (export offset {})",
            got.len(),
            pattern_at(export_offset + k),
            export_offset + k
        )
        .into()),
    }
}

pub(super) fn read_sqe(peer: u32, slot: usize, seq: u64, (export_id, key): (u64, u64), remote: u64) -> Sqe {
    Sqe {
        opcode: opcode::READ,
        peer,
        user_data: read_user_data(seq, slot),
        buf_offset: slot_offset(slot) as u64,
        buf_len: READ_BYTES as u32,
        args: [export_id, key, remote, 0],
        ..Default::default()
    }
}

pub(super) fn describe_result(c: &Cqe) -> String {
    ResultCode::from_result(c.result).map_or_else(|| format!("result {}", c.result), |r| format!("{r} ({})", c.result))
}

/// `ucx.read_bw.<tls>`: one session of the group's UCX engine exports [`EXPORT_BYTES`]
/// (EXPORT, read-only); another session of the same engine registers the engine's own
/// listener as a peer and keeps [`READ_DEPTH`] READs of [`READ_BYTES`] in flight from the
/// export into distinct slots of its buffer, reaping completions with `try_cqe` and
/// resubmitting at once. One sample: one READ, submit to reaped completion. The engine moves
/// the bytes with UCX gets between the two sessions' shared buffers.
#[derive(Default)]
pub struct ReadBw {
    state: Option<ReadState>,
    details: Map<String, Value>,
}

pub(super) struct ReadState {
    // The reader goes first (its READs are all complete between blocks), then the exporter.
    reader: Session,
    exporter: Session,
    peer: u32,
    export: (u64, u64),
    seq: u64,
}

pub(super) fn bench_session(socket: &std::path::Path, buf: usize, role: &str) -> Result<Session> {
    Session::connect(
        socket,
        SessionOptions {
            sq_entries: 64,
            cq_entries: 128,
            buf_size: buf as u64,
            keepalive: false,
        },
    )
    .map_err(|e| format!("opening the {role} session ({buf} bytes of buffer): {e}").into())
}

pub(super) const SETUP_TIMEOUT: Duration = Duration::from_secs(15);

impl ReadState {
    fn new(ctx: &Ctx) -> Result<Self> {
        let socket = ctx.ucx_socket.as_deref().ok_or("no UCX engine socket for this group")?;
        let addr = ctx
            .ucx_address
            .as_deref()
            .ok_or("no UCX listen address for this group")?;
        // One page more than the export: EXPORT writes its ticket (id, key) there.
        let mut exporter = bench_session(socket, EXPORT_BYTES + 4096, "exporting")?;
        let mut piece = vec![0u8; READ_BYTES];
        for k in 0..EXPORT_BYTES / READ_BYTES {
            fill_pattern(&mut piece, k * READ_BYTES);
            exporter
                .buffer()
                .write(k * READ_BYTES, &piece)
                .ok_or("the exporting session's buffer is smaller than asked for")?;
        }
        exporter.submit(&Sqe {
            opcode: opcode::EXPORT,
            aux: 1, // read
            user_data: 1,
            buf_offset: 0,
            buf_len: EXPORT_BYTES as u32,
            args: [EXPORT_BYTES as u64, 0, 0, 0],
            ..Default::default()
        })?;
        let c = exporter.wait_cqe(Duration::from_micros(50), Some(SETUP_TIMEOUT))?;
        if c.user_data != 1 || c.result != 0 {
            return Err(format!("EXPORT of {EXPORT_BYTES} bytes failed: {}", describe_result(&c)).into());
        }
        let mut ticket = [0u8; ring_proto::entry::EXPORT_TICKET_LEN];
        exporter
            .buffer()
            .read(EXPORT_BYTES, &mut ticket)
            .ok_or("the exporting session's buffer has no room for the export ticket")?;
        let t = ring_proto::entry::ExportTicket::decode(&ticket);
        let export = (t.id, t.key);

        let mut reader = bench_session(socket, READ_DEPTH * READ_BYTES, "reading")?;
        let peer = reader
            .connect_peer(addr)
            .map_err(|e| format!("connecting the reading session to the engine's own listener {addr}: {e}"))?;
        // One ECHO over the connection first: the engine logs the lanes UCX chose for a
        // connection when it completes the first SEND on it (not on READs), and the bench
        // copies that line into details.engine_ucx_lanes.
        reader
            .buffer()
            .write(REQ_OFFSET, &PAYLOAD)
            .ok_or("the reading session's buffer is too small")?;
        reader.submit(&send_sqe(peer, 2))?;
        let c = reader.wait_cqe(Duration::from_micros(50), Some(SETUP_TIMEOUT))?;
        if c.user_data != 2 || c.result != PAYLOAD.len() as i32 {
            return Err(format!("the set-up ECHO failed: {}", describe_result(&c)).into());
        }
        // Once, before any measurement: one READ, every byte checked.
        let probe = slot_offset(PROBE_SLOT);
        reader
            .buffer()
            .write(probe, &vec![0xee; READ_BYTES])
            .ok_or("the reading session's buffer is smaller than asked for")?;
        let remote = PROBE_PIECE * READ_BYTES as u64;
        reader.submit(&read_sqe(peer, PROBE_SLOT, 0, export, remote))?;
        let c = reader.wait_cqe(Duration::from_micros(50), Some(SETUP_TIMEOUT))?;
        if c.user_data != read_user_data(0, PROBE_SLOT) || c.result != READ_BYTES as i32 {
            return Err(format!(
                "the first READ (export {}, {READ_BYTES} bytes at offset {remote}) failed: user_data {}, {}",
                export.0,
                c.user_data,
                describe_result(&c)
            )
            .into());
        }
        let mut got = vec![0u8; READ_BYTES];
        reader
            .buffer()
            .read(probe, &mut got)
            .ok_or("reading the READ's bytes")?;
        check_pattern(&got, remote as usize, "the first READ")?;
        Ok(Self {
            reader,
            exporter,
            peer,
            export,
            seq: 0,
        })
    }
}

impl Pipeline for ReadState {
    fn start(&mut self, slot: usize) -> Result<bool> {
        self.seq += 1;
        let sqe = read_sqe(self.peer, slot, self.seq, self.export, remote_offset(self.seq));
        self.reader.submit(&sqe)?;
        Ok(false)
    }

    fn poll(&mut self, done: &mut dyn FnMut(usize)) -> Result<()> {
        while let Some(c) = self.reader.try_cqe()? {
            let slot = slot_of(c.user_data);
            if c.result != READ_BYTES as i32 || slot >= READ_DEPTH {
                return Err(format!(
                    "READ {} (slot {slot}) completed with {}, expected {READ_BYTES}",
                    c.user_data >> 8,
                    describe_result(&c)
                )
                .into());
            }
            done(slot);
        }
        Ok(())
    }

    fn waiting_for(&self) -> String {
        format!(
            "waiting for READ completions (last submitted {}; reader {}; exporter state {:?})",
            self.seq,
            stall_context(&self.reader),
            self.exporter.state()
        )
    }
}

impl Scenario for ReadBw {
    fn run_block(&mut self, ctx: &mut Ctx, hist: &mut Histogram<u64>) -> Result<BlockRun> {
        if self.state.is_none() {
            let st = ReadState::new(ctx)?;
            let d = &mut self.details;
            d.insert("read_bytes".into(), READ_BYTES.into());
            d.insert("in_flight".into(), READ_DEPTH.into());
            d.insert("export_bytes".into(), EXPORT_BYTES.into());
            d.insert("export_id".into(), st.export.0.into());
            d.insert("peer_address".into(), ctx.ucx_address.clone().into());
            d.insert("first_read_checked".into(), true.into());
            self.state = Some(st);
        }
        let st = self.state.as_mut().expect("set up above");
        pipelined_loop(ctx.timing, hist, READ_DEPTH, st)
    }

    fn details(&self) -> Map<String, Value> {
        self.details.clone()
    }
}
