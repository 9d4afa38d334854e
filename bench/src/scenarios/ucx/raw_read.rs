//! `ucx.raw_read_bw.*` ([`RawRead`]): raw UCX gets of 1 MiB between two workers, from a
//! registered shared mapping like a session region.

use super::*;

/// Anonymous shared memory (like a session region, which is a shared mapping), in 2 MiB huge
/// pages when enough are free, as the engine maps sessions under `hugepages = prefer`. Its
/// bytes are reached only through its [`SharedArea`] (checked copies; UCX gets its ranges as
/// [`SharedRange`]s, which keep the mapping alive while UCX may use them).
pub(super) struct Mapping {
    pub(super) area: SharedArea,
    base: NonNull<u8>,
    len: usize,
    huge: bool,
}

// SAFETY: the mapping is plain shared memory reached only through the SharedArea (atomic
// copies) and UCX; the raw base pointer is kept only to unmap it.
unsafe impl Send for Mapping {}
// SAFETY: as above.
unsafe impl Sync for Mapping {}

impl SharedMemory for Mapping {
    fn shared_area(&self) -> &SharedArea {
        &self.area
    }
}

impl Mapping {
    fn new(len: usize) -> Result<Arc<Self>> {
        let prot = libc::PROT_READ | libc::PROT_WRITE;
        let flags = libc::MAP_SHARED | libc::MAP_ANONYMOUS;
        // SAFETY: a fresh anonymous mapping; no existing memory is touched.
        let mut p = unsafe { libc::mmap(std::ptr::null_mut(), len, prot, flags | libc::MAP_HUGETLB, -1, 0) };
        let huge = p != libc::MAP_FAILED;
        if !huge {
            // SAFETY: as above.
            p = unsafe { libc::mmap(std::ptr::null_mut(), len, prot, flags, -1, 0) };
            if p == libc::MAP_FAILED {
                return Err(format!("mapping {len} bytes: {}", std::io::Error::last_os_error()).into());
            }
        }
        let base = NonNull::new(p.cast::<u8>()).ok_or("mmap returned null")?;
        // SAFETY: `len` bytes mapped read-write, unmapped only when the Mapping (which owns the
        // area) is dropped; no Rust slice over them is ever made.
        let area = unsafe { SharedArea::new(base, len) };
        Ok(Arc::new(Self { area, base, len, huge }))
    }

    /// The address of byte `offset` (what a peer names in a get).
    fn addr(&self, offset: usize) -> u64 {
        self.area.range(offset, 0).expect("offset inside the mapping").addr()
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: our own mapping, unmapped once, when nothing holds it any more (the
        // registrations and UCX's operations hold it through SharedRanges).
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.len) };
    }
}

/// `ucx.raw_read_bw.<tls>`: the server worker's side registers [`EXPORT_BYTES`] (the
/// export); the client side registers its destination ([`READ_DEPTH`] slots, as the engine
/// registers a session's whole region) and unpacks the export's packed remote key on its
/// endpoint (handed over in-process); then [`READ_DEPTH`] gets of [`READ_BYTES`] are kept in
/// flight, both workers progressed by the one thread.
pub(super) struct RawRead {
    // Dropped in `Drop` in this order before the rest: key, endpoints, listener,
    // registrations; then the workers, then the memory.
    rkey: Option<RemoteKey>,
    client_ep: Option<Endpoint>,
    server_ep: Option<Endpoint>,
    listener: Option<Listener>,
    src_reg: Option<Registration>,
    dst_reg: Option<Registration>,
    client: Worker,
    server: Worker,
    src: Arc<Mapping>,
    pub(super) dst: Arc<Mapping>,
    addr: SocketAddr,
    pub(super) lanes: String,
    seq: u64,
}

impl RawRead {
    pub(super) fn new(tls: Tls) -> Result<Self> {
        let ctx = Context::new(Some(tls.transports()), Some(tls.net_devices()))
            .map_err(|e| format!("UCX context ({}): {e}", tls.transports()))?;
        let mut server = Worker::new(ctx.clone(), &[]).map_err(|e| format!("UCX server worker: {e}"))?;
        let client = Worker::new(ctx.clone(), &[]).map_err(|e| format!("UCX client worker: {e}"))?;
        let listener = server
            .listen(SocketAddr::from(([127, 0, 0, 1], 0)))
            .map_err(|e| format!("UCX listen on 127.0.0.1: {e}"))?;
        let addr = listener.addr;
        let mut r = RawRead {
            rkey: None,
            client_ep: None,
            server_ep: None,
            listener: Some(listener),
            src_reg: None,
            dst_reg: None,
            client,
            server,
            src: Mapping::new(EXPORT_BYTES)?,
            dst: Mapping::new(READ_DEPTH * READ_BYTES)?,
            addr,
            lanes: String::new(),
            seq: 0,
        };
        let mut piece = vec![0u8; READ_BYTES];
        for k in 0..EXPORT_BYTES / READ_BYTES {
            fill_pattern(&mut piece, k * READ_BYTES);
            r.src.area.copy_in(k * READ_BYTES, &piece).expect("inside the source");
        }
        r.dst.area.fill(0, r.dst.len, 0xee).expect("inside the destination");
        // The registrations hold the mappings.
        r.src_reg = Some(
            ctx.register(SharedRange::whole(r.src.clone()))
                .map_err(|e| format!("UCX registration of the source: {e}"))?,
        );
        r.dst_reg = Some(
            ctx.register(SharedRange::whole(r.dst.clone()))
                .map_err(|e| format!("UCX registration of the destination: {e}"))?,
        );
        establish(
            Some(&mut r.client),
            &mut r.server,
            addr,
            &mut r.client_ep,
            &mut r.server_ep,
        )?;
        let packed = r
            .src_reg
            .as_ref()
            .expect("registered")
            .pack_rkey()
            .map_err(|e| format!("UCX rkey pack: {e}"))?;
        r.rkey = Some(
            r.client
                .unpack_rkey(
                    r.client_ep.as_ref().expect("connected"),
                    &packed,
                    r.src.addr(0)..r.src.addr(0) + EXPORT_BYTES as u64,
                )
                .map_err(|e| format!("UCX rkey unpack: {e}"))?,
        );
        // Once, before any measurement: one get, every byte checked.
        let remote = r.src.addr(0) + PROBE_PIECE * READ_BYTES as u64;
        if !r.get(PROBE_SLOT, remote)? {
            let mut done = false;
            let mut guard = SpinGuard::new();
            while !done {
                r.poll(&mut |slot| done |= slot == PROBE_SLOT)?;
                guard.turn(|| "waiting for the first raw get".into())?;
            }
        }
        let at = slot_offset(PROBE_SLOT);
        check_pattern(
            &r.dst.area.read_vec(at, READ_BYTES).expect("inside the destination"),
            PROBE_PIECE as usize * READ_BYTES,
            "the first raw get",
        )?;
        let info = r.client.ep_info(r.client_ep.as_ref().expect("connected"));
        r.lanes = lanes_of(&info);
        Ok(r)
    }

    /// Starts a get of [`READ_BYTES`] at `remote` into `slot`; `true` if it completed at once.
    fn get(&mut self, slot: usize, remote: u64) -> Result<bool> {
        let ep = self.client_ep.as_ref().expect("connected");
        let rkey = self.rkey.as_ref().expect("unpacked");
        assert!(slot < READ_DEPTH);
        // The slot's range holds `dst` mapped until the get is done; a slot gets a new get
        // only after its previous one completed; the key belongs to the server, the
        // endpoint's peer.
        let dst = SharedRange::new(self.dst.clone(), slot_offset(slot), READ_BYTES).map_err(|e| e.to_string())?;
        let st = self
            .client
            .get(ep, dst, remote, rkey, slot as u64)
            .map_err(|e| format!("UCX get: {e}"))?;
        Ok(st == Started::Done)
    }
}

/// The lane lines of UCX's endpoint description, on one line (as the engine logs them).
pub(super) fn lanes_of(info: &str) -> String {
    let lanes: Vec<String> = info
        .lines()
        .map(|l| l.trim_start_matches('#').trim())
        .filter(|l| l.starts_with("lane[") || l.starts_with("am_send:"))
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    lanes.join(" | ")
}

impl Pipeline for RawRead {
    fn start(&mut self, slot: usize) -> Result<bool> {
        self.seq += 1;
        let remote = self.src.addr(0) + remote_offset(self.seq);
        self.get(slot, remote)
    }

    fn poll(&mut self, done: &mut dyn FnMut(usize)) -> Result<()> {
        let mut failed: Option<String> = None;
        self.client.progress(&mut |ev| match ev {
            WorkerEvent::SendDone { token, result: Ok(()) } if (token as usize) < READ_DEPTH => done(token as usize),
            WorkerEvent::SendDone { token, result: Ok(()) } => failed = Some(format!("unexpected completion {token}")),
            WorkerEvent::SendDone { token, result: Err(e) } => failed = Some(format!("UCX get of slot {token}: {e}")),
            WorkerEvent::EndpointFailed { error, .. } => failed = Some(format!("UCX endpoint failed: {error}")),
            WorkerEvent::Am(m) => failed = Some(format!("unexpected active message id {}", m.id)),
            WorkerEvent::RecvDone { .. } => failed = Some("unexpected rendezvous completion".into()),
        });
        self.server.progress(&mut |ev| {
            if let WorkerEvent::EndpointFailed { error, .. } = ev {
                failed = Some(format!("UCX server endpoint failed: {error}"));
            }
        });
        fail_if(&mut failed)
    }

    fn waiting_for(&self) -> String {
        format!("waiting for raw UCX gets (last started {})", self.seq)
    }
}

impl RawBlocks for RawRead {
    fn facts(&self) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("listen_address".into(), self.addr.to_string().into());
        m.insert("read_bytes".into(), READ_BYTES.into());
        m.insert("in_flight".into(), READ_DEPTH.into());
        m.insert("export_bytes".into(), EXPORT_BYTES.into());
        m.insert(
            "buffer_pages".into(),
            (if self.src.huge && self.dst.huge {
                "huge"
            } else {
                "normal"
            })
            .into(),
        );
        m.insert("raw_ucx_lanes".into(), self.lanes.clone().into());
        m.insert("first_read_checked".into(), true.into());
        m
    }

    fn block(&mut self, timing: Timing, hist: &mut Histogram<u64>) -> Result<BlockRun> {
        pipelined_loop(timing, hist, READ_DEPTH, self)
    }
}

impl Drop for RawRead {
    fn drop(&mut self) {
        // Gets still in flight (only after an error) complete with errors during the close.
        drop(self.rkey.take());
        if let Some(ep) = self.client_ep.take() {
            self.client.close(ep);
        }
        if let Some(ep) = self.server_ep.take() {
            self.server.close(ep);
        }
        if let Some(l) = self.listener.take() {
            l.destroy();
        }
        drop(self.src_reg.take());
        drop(self.dst_reg.take());
    }
}
