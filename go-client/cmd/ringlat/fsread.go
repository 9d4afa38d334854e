package main

// Front-end blocks (block fs) for the bench's mount.*, s3.* and filer.* scenarios
// (bench/README.md): reads through a real SeaweedFS front end that this ringlat starts
// (internal/weedfront), over the stock path (-fs-path http: the stock weed, chunks fetched with HTTP
// GETs from the volume server) or the ring path (-fs-path ring: the weed of scripts/weed
// --ring with SWRING_ENGINE_SOCKET, chunks read with READ_NEEDLE through the engine).
//
//   - mount-rand: one 4 KiB pread per sample at a 4 KiB-aligned offset of the weed host's
//     file through a FUSE weed mount, each offset read once in the run (a shuffled order of
//     the file's pages). Nothing holds the data before the read:
//     · the kernel's page cache: the page was never read through this mount, readahead is
//     off (POSIX_FADV_RANDOM), and mincore(2) on a mapping of the file checks, outside
//     the timed read, that the page is not resident before it is read (a resident page is
//     skipped and counted in "resident_before", expected 0) and, after each block, that
//     no more pages are resident than were read ("resident_extra": readahead);
//     · the mount's chunk cache: the disk cache is off (-cacheCapacityMB=0), and the mount
//     reads in random mode (weed/filer/reader_pattern.go: the first read is the file's
//     last page, every later one more than 8 MiB (SeqTolerance) below it, so the pattern
//     never turns sequential), where a read fetches only the requested range from the
//     volume server and caches nothing (reader_at.go, readChunkSliceAt: fetchChunkRange).
//     When every page was read, the file's pages are dropped (POSIX_FADV_DONTNEED, checked
//     with mincore) and a new order begins ("rounds").
//   - mount-seq: one 1 MiB read per sample, sequentially through the file; at its end the
//     pages are dropped as above and the next pass starts at 0 (the mount's own read-ahead
//     and prefetch stay on: they are what sequential readers get).
//   - mount-hit (a floor, stock weed): 4 KiB preads of the file's first 16 pages in turn,
//     each dropped from the page cache first, with weed's default chunk cache: every read
//     reaches the mount and is served from its cache (hitSample).
//   - s3: a keep-alive HTTP GET of one object from weed s3 per sample, body read to its end
//     into a reused buffer (time to last byte); objects in turn.
//   - filer: the same from the filer's HTTP API, from a filer of this ringlat's own.
//
// A sample times the read only; its bytes are compared with the generated data (weedfront.FillPages)
// after the clock is read, outside the sample.

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/seaweed-ring/seaweed-ring/go-client/internal/weedcluster"
	"github.com/seaweed-ring/seaweed-ring/go-client/internal/weedfront"
)

// mincore is mincore(2) (golang.org/x/sys/unix has no wrapper): vec[i]&1 tells whether page
// i of mapping is resident.
func mincore(mapping, vec []byte) error {
	if len(mapping) == 0 || len(vec) < (len(mapping)+weedfront.Page-1)/weedfront.Page {
		return errors.New("mincore: empty mapping or short vector")
	}
	// Safety: both pointers come from live Go slices of the lengths given (the mapping is
	// ours, from unix.Mmap, page-aligned at every multiple of weedfront.Page), and the kernel writes
	// at most one byte per page of mapping into vec, which has that many.
	_, _, errno := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(&mapping[0])), uintptr(len(mapping)),
		uintptr(unsafe.Pointer(&vec[0])))
	if errno != 0 {
		return errno
	}
	return nil
}

// fsTarget is what a front-end ringlat measures (its flags).
type fsTarget struct {
	kind, path, weedBin, master, filer, file, engineSocket, engineAddrs string
	volumeMetrics                                                       string
	bytes, objectBytes                                                  int64
	name                                                                string
}

func (t *fsTarget) flags() {
	flag.StringVar(&t.kind, "fs", "", "-serve front-end mode: mount-rand, mount-seq, mount-hit, s3 or filer")
	flag.StringVar(&t.path, "fs-path", "http", "-fs: ring (weed with the ring read path and SWRING_ENGINE_SOCKET) or http (stock)")
	flag.StringVar(&t.weedBin, "fs-weed", "", "-fs: the weed binary of the front end")
	flag.StringVar(&t.master, "master", "", "-fs filer: the master (host:port)")
	flag.StringVar(&t.filer, "filer", "", "-fs mount-*/s3: the weed host's filer (host:port)")
	flag.StringVar(&t.file, "fs-file", fsFile, "-fs mount-*: the weed host's file")
	flag.Int64Var(&t.bytes, "fs-bytes", 0, "-fs mount-*: its size")
	flag.Int64Var(&t.objectBytes, "fs-object-bytes", 4096, "-fs s3/filer: the size of the objects to write and GET")
	flag.StringVar(&t.volumeMetrics, "volume-metrics", "", "-fs: the volume server's metrics address (host:port): GETs it answered are counted per block")
	flag.StringVar(&t.engineSocket, "engine-socket", "", "-fs-path ring: SWRING_ENGINE_SOCKET of the front end")
	flag.StringVar(&t.engineAddrs, "engine-addrs", "", "-fs-path ring: SWRING_ENGINE_ADDRS of the front end (VOLUME=UCX,...)")
}

// fsObjects is how many objects an s3/filer ringlat writes and GETs in turn: 32, or 8 of
// 1 MiB and more (they all go into one bucket, one collection of the weed host's volume
// server, whose volumes hold 64 MB).
func fsObjects(size int64) int {
	if size >= 1<<20 {
		return 8
	}
	return 32
}

// fsOps is a started front end and its read state.
type fsOps struct {
	t   *fsTarget
	dir string
	// cluster: the weed host's cluster, attached (weedcluster.Attach); its Stop ends the
	// front end this ringlat started.
	cluster *weedcluster.Cluster
	logPath string // the front end's output
	// mount-*
	f       *os.File
	mapping []byte // the file mapped for mincore only (never read through)
	order   []int64
	next    int
	pages   int64
	rounds  int
	read    int64 // pages read since the last drop
	buf     []byte
	want    []byte
	seed    uint64
	seqOff  int64
	skipped int64
	// s3 / filer
	client *http.Client
	urls   []string
	objs   [][]byte
}

// fsBlockStats are a block's facts about caches and checks (summed by the bench).
type fsBlockStats struct {
	Reads          int64 `json:"reads"`
	BytesVerified  int64 `json:"bytes_verified"`
	ResidentBefore int64 `json:"resident_before"`
	ResidentExtra  int64 `json:"resident_extra"`
	// ResidentRead: pages resident at the last check, of the ReadSinceDrop read since the
	// file's pages were last dropped (equal: mincore sees the reads, so the checks mean
	// something).
	ResidentRead  int64 `json:"resident_read"`
	ReadSinceDrop int64 `json:"read_since_drop"`
	Drops         int64 `json:"drops"`
	// VolumeGETs: GETs the volume server answered during the block (-volume-metrics; -1
	// without): about one per read on the stock path, none on the ring path.
	VolumeGETs int64 `json:"volume_gets"`
	// RingLog: on the ring path, when the volume server answered GETs during the block, the
	// front end's last "seaweed-ring" log lines (the hook logs why it declined a read), so
	// that a report of volume GETs on the ring path says where they came from.
	RingLog []string `json:"ring_log,omitempty"`
}

func newFsOps(ctx context.Context, t *fsTarget) (*fsOps, error) {
	if t.weedBin == "" {
		return nil, errors.New("-fs needs -fs-weed")
	}
	var ro weedcluster.ReaderOptions
	switch t.path {
	case "ring":
		if t.engineSocket == "" {
			return nil, errors.New("-fs-path ring needs -engine-socket")
		}
		ro = weedcluster.ReaderOptions{Weed: t.weedBin, EngineSocket: t.engineSocket, Env: []string{"SWRING_ENGINE_ADDRS=" + t.engineAddrs}}
	case "http":
		ro = weedcluster.ReaderOptions{Weed: t.weedBin}
	default:
		return nil, fmt.Errorf("-fs-path %q: want ring or http", t.path)
	}
	dir, err := os.MkdirTemp("", "swring-bench-fs-")
	if err != nil {
		return nil, err
	}
	o := &fsOps{t: t, client: keepAliveClient(), dir: dir, cluster: weedcluster.Attach(t.master, t.weedBin, dir)}
	if err := o.start(ctx, ro); err != nil {
		o.close()
		return nil, err
	}
	return o, nil
}

func (o *fsOps) start(ctx context.Context, ro weedcluster.ReaderOptions) error {
	t := o.t
	switch t.kind {
	case "mount-rand", "mount-seq", "mount-hit":
		if t.filer == "" || t.bytes < 16<<20 || t.bytes%weedfront.Page != 0 {
			return errors.New("-fs mount-*: needs -filer and -fs-bytes, a multiple of 4 KiB of at least 16 MiB")
		}
		// The on-disk chunk cache off: the scenarios read data no cache holds (mount-hit, the
		// floor, keeps weed's default cache).
		cache := int64(-1)
		if t.kind == "mount-hit" {
			cache = 0
		}
		m, err := o.cluster.StartMount(ctx, weedcluster.MountOptions{ReaderOptions: ro, Filer: t.filer, ChunkCacheMB: cache})
		if err != nil {
			return err
		}
		o.logPath = m.LogPath
		path := filepath.Join(m.Dir, t.file)
		deadline := time.Now().Add(60 * time.Second)
		for {
			st, err := os.Stat(path)
			if err == nil && st.Size() == t.bytes {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("%s through the mount: %v (size %d, expected %d; log %s)", path, err, sizeOf(st), t.bytes, m.LogPath)
			}
			time.Sleep(100 * time.Millisecond)
		}
		return o.openFile(path)
	case "s3", "filer":
		return o.startHTTP(ctx, ro)
	}
	return fmt.Errorf("-fs %q: want mount-rand, mount-seq, mount-hit, s3 or filer", t.kind)
}

func sizeOf(st os.FileInfo) int64 {
	if st == nil {
		return -1
	}
	return st.Size()
}

func keepAliveClient() *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 1
	tr.IdleConnTimeout = 0
	tr.DisableCompression = true // bytes as stored; the objects are random (never gzipped)
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}
}

func (o *fsOps) openFile(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	o.f = f
	o.seed = weedfront.SeedOf(o.t.file)
	o.pages = o.t.bytes / weedfront.Page
	if o.t.kind != "mount-seq" { // the sequential reads keep the kernel's readahead
		if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_RANDOM); err != nil {
			return fmt.Errorf("fadvise RANDOM: %w", err)
		}
	}
	if o.mapping, err = unix.Mmap(int(f.Fd()), 0, int(o.t.bytes), unix.PROT_READ, unix.MAP_SHARED); err != nil {
		return fmt.Errorf("mapping %s for mincore: %w", path, err)
	}
	size := weedfront.Page
	if o.t.kind == "mount-seq" {
		size = 1 << 20
	}
	o.buf, o.want = make([]byte, size), make([]byte, size)
	if o.t.kind == "mount-rand" {
		// The first read is the last page: the read frontier is the file's end from then
		// on, and every offset of order lies more than SeqTolerance (8 MiB) below it.
		if err := o.readAt(o.pages-1, weedfront.Page); err != nil {
			return err
		}
		o.shuffle()
	}
	return o.drop() // the pages read so far, and a clean start
}

// shuffle makes a new order of the pages more than 8 MiB + 4 KiB below the end.
func (o *fsOps) shuffle() {
	n := o.pages - (8<<20)/weedfront.Page - 1
	o.order = o.order[:0]
	for i := int64(0); i < n; i++ {
		o.order = append(o.order, i)
	}
	rand.Shuffle(len(o.order), func(i, j int) { o.order[i], o.order[j] = o.order[j], o.order[i] })
	o.next = 0
}

// resident counts the file's pages in the page cache.
func (o *fsOps) resident() (int64, error) {
	vec := make([]byte, o.pages)
	if err := mincore(o.mapping, vec); err != nil {
		return 0, fmt.Errorf("mincore: %w", err)
	}
	var n int64
	for _, v := range vec {
		n += int64(v & 1)
	}
	return n, nil
}

// drop evicts the file's pages from the page cache and checks that none stayed.
func (o *fsOps) drop() error {
	if err := unix.Fadvise(int(o.f.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
		return fmt.Errorf("fadvise DONTNEED: %w", err)
	}
	n, err := o.resident()
	if err == nil && n != 0 {
		err = fmt.Errorf("%d pages of %s stayed in the page cache after POSIX_FADV_DONTNEED", n, o.t.file)
	}
	o.read, o.rounds = 0, o.rounds+1
	return err
}

// readAt reads n bytes at page (untimed set-up and checks use it too) and checks them.
func (o *fsOps) readAt(page int64, n int) error {
	got, err := o.f.ReadAt(o.buf[:n], page*weedfront.Page)
	if err != nil && !(errors.Is(err, io.EOF) && got == n) {
		return fmt.Errorf("pread %s at %d: %d bytes, %w", o.t.file, page*weedfront.Page, got, err)
	}
	return o.check(page, n)
}

func (o *fsOps) check(page int64, n int) error {
	weedfront.FillPages(o.want[:n], o.seed, page*weedfront.Page)
	if !bytes.Equal(o.buf[:n], o.want[:n]) {
		return fmt.Errorf("%s at %d: the mount returned other bytes than were written", o.t.file, page*weedfront.Page)
	}
	return nil
}

// startHTTP starts the s3 gateway (on the weed host's filer) or a filer of its own, and
// writes the objects through the filer.
func (o *fsOps) startHTTP(ctx context.Context, ro weedcluster.ReaderOptions) error {
	t := o.t
	if t.objectBytes <= 0 || t.objectBytes > 64<<20 {
		return errors.New("-fs-object-bytes must be in 1..64 MiB")
	}
	// One bucket for every ringlat of the run (a bucket is a collection, with volumes of
	// its own), a directory in it per ringlat.
	filer, prefix := t.filer, fmt.Sprintf("/buckets/bench/p%d-%d", os.Getpid(), time.Now().UnixNano()%1e6)
	if t.kind == "filer" {
		if t.master == "" {
			return errors.New("-fs filer needs -master")
		}
		f, err := o.cluster.StartFiler(ctx, weedcluster.FilerOptions{ReaderOptions: ro})
		if err != nil {
			return err
		}
		filer, prefix, o.logPath = f.Addr, "/bench", f.LogPath
	} else if filer == "" {
		return errors.New("-fs s3 needs -filer")
	}
	for i := range fsObjects(t.objectBytes) {
		path := fmt.Sprintf("%s/obj%d", prefix, i)
		if err := weedfront.FilerPut(ctx, filer, path, weedfront.SeedOf(path), t.objectBytes); err != nil {
			return err
		}
		data := make([]byte, t.objectBytes)
		weedfront.FillPages(data, weedfront.SeedOf(path), 0)
		o.objs = append(o.objs, data)
		o.urls = append(o.urls, "http://"+filer+path)
	}
	if t.kind == "s3" {
		gw, err := o.cluster.StartS3(ctx, weedcluster.S3Options{ReaderOptions: ro, Filer: filer})
		if err != nil {
			return err
		}
		o.logPath = gw.LogPath
		for i := range o.urls {
			o.urls[i] = "http://" + gw.Addr + strings.TrimPrefix(o.urls[i], "http://"+filer+"/buckets")
		}
	}
	o.buf = make([]byte, t.objectBytes+1)
	for i := range o.urls { // every object once, checked, before the first block
		if err := o.get(i); err != nil {
			return err
		}
		if !bytes.Equal(o.buf[:t.objectBytes], o.objs[i]) {
			return fmt.Errorf("GET %s returned other bytes than were written", o.urls[i])
		}
	}
	return nil
}

// get reads object i to the end of its body into buf.
func (o *fsOps) get(i int) error {
	resp, err := o.client.Get(o.urls[i])
	if err != nil {
		return err
	}
	n := 0
	for err == nil && n < len(o.buf) {
		var m int
		m, err = resp.Body.Read(o.buf[n:])
		n += m
	}
	resp.Body.Close()
	switch {
	case resp.StatusCode != http.StatusOK:
		return fmt.Errorf("GET %s: %s", o.urls[i], resp.Status)
	case err != nil && err != io.EOF:
		return fmt.Errorf("GET %s: reading the body: %w", o.urls[i], err)
	case int64(n) != o.t.objectBytes:
		return fmt.Errorf("GET %s: %d bytes, expected %d", o.urls[i], n, o.t.objectBytes)
	}
	return nil
}

// runBlock runs a block of front-end samples into h: unrecorded for the warm-up, then
// recorded until the measured time has passed. Each sample times its read alone.
func (o *fsOps) runBlock(cmd blockCommand, h *histogram) (n, ops int64, elapsed time.Duration, st fsBlockStats, err error) {
	gets0, err := o.quietVolumeGETs()
	if err != nil {
		return 0, 0, 0, st, err
	}
	defer func() {
		gets1, gerr := o.volumeGETs()
		if err == nil {
			err = gerr
		}
		st.VolumeGETs = gets1 - gets0
		if gets0 < 0 {
			st.VolumeGETs = -1
		}
		if st.VolumeGETs > 0 && o.t.path == "ring" {
			st.RingLog = ringLogLines(o.logPath, 8)
		}
	}()
	base := time.Now()
	warmEnd := cmd.warmup
	var start time.Duration
	measuring := false
	next := 0
	for {
		t0 := time.Since(base)
		if !measuring && t0 >= warmEnd {
			measuring, start = true, t0
		}
		if measuring && t0-start >= cmd.measure {
			// The time spent reading (the samples' sum), not the block's: the checks
			// between the reads are not the front end's, and throughput is of the reads.
			return n, ops, elapsed, st, nil
		}
		var dt time.Duration
		switch o.t.kind {
		case "mount-rand":
			dt, err = o.randSample(&st)
		case "mount-seq":
			dt, err = o.seqSample(&st)
		case "mount-hit":
			dt, err = o.hitSample(&st)
		default:
			i := next % len(o.urls)
			next++
			s := time.Now()
			err = o.get(i)
			dt = time.Since(s)
			if err == nil && !bytes.Equal(o.buf[:o.t.objectBytes], o.objs[i]) {
				err = fmt.Errorf("GET %s returned other bytes than were written", o.urls[i])
			}
			st.Reads++
			st.BytesVerified += o.t.objectBytes
		}
		if err != nil {
			return 0, ops, 0, st, err
		}
		ops++
		if measuring && dt > 0 {
			h.record(int64(dt))
			elapsed += dt
			n++
		}
	}
}

// volumeGETs is the volume server's GET count (-1 without -volume-metrics).
func (o *fsOps) volumeGETs() (int64, error) {
	if o.t.volumeMetrics == "" {
		return -1, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	n, err := (&weedcluster.VolumeServer{MetricsAddr: o.t.volumeMetrics}).GETs(ctx)
	if err != nil {
		return 0, fmt.Errorf("the volume server's GET count: %w", err)
	}
	return int64(n), nil
}

// quietVolumeGETs waits until the volume server's GET count holds still (the same over
// three polls 100 ms apart; at most 10 s) and returns it. The front ends of all scenarios
// share the weed host's volume server, and a block's count must hold its own GETs only: weed
// mount prefetches the chunks after the one a sequential read reached
// (weed/filer/reader_cache.go, MaybeCache) in goroutines that run on after the read returned
// and the block of that scenario ended.
func (o *fsOps) quietVolumeGETs() (int64, error) {
	n, err := o.volumeGETs()
	if n < 0 || err != nil {
		return n, err
	}
	for same, deadline := 0, time.Now().Add(10*time.Second); same < 3 && time.Now().Before(deadline); {
		time.Sleep(100 * time.Millisecond)
		m, err := o.volumeGETs()
		if err != nil {
			return 0, err
		}
		if m == n {
			same++
		} else {
			n, same = m, 0
		}
	}
	return n, nil
}

// ringLogLines returns the last max lines of the front end's log that name seaweed-ring
// (the ring hook's records: its start line, and why it declined reads).
func ringLogLines(path string, max int) []string {
	data, err := os.ReadFile(path)
	if err != nil {
		return []string{fmt.Sprintf("(the front end's log: %v)", err)}
	}
	var lines []string
	for _, l := range strings.Split(string(data), "\n") {
		if strings.Contains(l, "seaweed-ring") {
			lines = append(lines, l)
		}
	}
	if len(lines) > max {
		lines = lines[len(lines)-max:]
	}
	if len(lines) == 0 {
		lines = []string{"(no seaweed-ring line in " + path + ")"}
	}
	return lines
}

// randSample reads the next page of the order (a resident one is skipped and counted).
func (o *fsOps) randSample(st *fsBlockStats) (time.Duration, error) {
	for {
		if o.next == len(o.order) {
			if err := o.drop(); err != nil {
				return 0, err
			}
			st.Drops++
			o.shuffle()
		}
		page := o.order[o.next]
		o.next++
		vec := []byte{0}
		if err := mincore(o.mapping[page*weedfront.Page:(page+1)*weedfront.Page], vec); err != nil {
			return 0, fmt.Errorf("mincore: %w", err)
		}
		if vec[0]&1 != 0 {
			st.ResidentBefore++
			continue
		}
		s := time.Now()
		got, err := o.f.ReadAt(o.buf, page*weedfront.Page)
		dt := time.Since(s)
		if err != nil || got != weedfront.Page {
			return 0, fmt.Errorf("pread %s at %d: %d bytes, %v", o.t.file, page*weedfront.Page, got, err)
		}
		o.read++
		st.Reads++
		st.BytesVerified += weedfront.Page
		if err := o.check(page, weedfront.Page); err != nil {
			return 0, err
		}
		if o.next%512 == 0 { // readahead would show here: more resident than read
			r, err := o.resident()
			if err != nil {
				return 0, err
			}
			st.ResidentExtra = max(st.ResidentExtra, r-o.read)
			st.ResidentRead, st.ReadSinceDrop = r, o.read
		}
		return dt, nil
	}
}

// hitSample reads one of the first 16 pages of the file in turn, after dropping it from the
// page cache (checked): the read reaches the mount, which has the chunk in its cache (the
// reads are near each other, so the mount reads in sequential mode and caches the whole
// chunk on the first of them). The floor of a FUSE read through weed mount: FUSE and the
// mount's own work, no volume read (the block's volume GET count shows it).
func (o *fsOps) hitSample(st *fsBlockStats) (time.Duration, error) {
	page := int64(o.next % 16)
	o.next++
	if err := unix.Fadvise(int(o.f.Fd()), page*weedfront.Page, weedfront.Page, unix.FADV_DONTNEED); err != nil {
		return 0, fmt.Errorf("fadvise DONTNEED: %w", err)
	}
	vec := []byte{0}
	if err := mincore(o.mapping[page*weedfront.Page:(page+1)*weedfront.Page], vec); err != nil {
		return 0, err
	}
	if vec[0]&1 != 0 {
		st.ResidentBefore++ // the drop did not take: counted (expected 0)
	}
	s := time.Now()
	got, err := o.f.ReadAt(o.buf, page*weedfront.Page)
	dt := time.Since(s)
	if err != nil || got != weedfront.Page {
		return 0, fmt.Errorf("pread %s at %d: %d bytes, %v", o.t.file, page*weedfront.Page, got, err)
	}
	st.Reads++
	st.BytesVerified += weedfront.Page
	return dt, o.check(page, weedfront.Page)
}

// seqSample reads the next MiB; at the end of the file it drops the pages and starts over.
func (o *fsOps) seqSample(st *fsBlockStats) (time.Duration, error) {
	if o.seqOff >= o.t.bytes {
		if err := o.drop(); err != nil {
			return 0, err
		}
		st.Drops++
		o.seqOff = 0
	}
	n := int(min(int64(len(o.buf)), o.t.bytes-o.seqOff))
	s := time.Now()
	got, err := o.f.ReadAt(o.buf[:n], o.seqOff)
	dt := time.Since(s)
	if got != n || (err != nil && !errors.Is(err, io.EOF)) {
		return 0, fmt.Errorf("read %s at %d: %d of %d bytes, %v", o.t.file, o.seqOff, got, n, err)
	}
	if err := o.check(o.seqOff/weedfront.Page, n); err != nil {
		return 0, err
	}
	o.seqOff += int64(n)
	st.Reads++
	st.BytesVerified += int64(n)
	return dt, nil
}

func (o *fsOps) close() {
	if o.mapping != nil {
		unix.Munmap(o.mapping)
	}
	if o.f != nil {
		o.f.Close()
	}
	o.cluster.Stop()
	o.client.CloseIdleConnections()
	if o.dir != "" {
		os.RemoveAll(o.dir)
	}
}
