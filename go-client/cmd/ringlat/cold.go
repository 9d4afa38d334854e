package main

// Cold needle reads, for the bench's needle.read.cold.1m.<path> scenarios and the cold
// reader of ring.nop.beside_cold_reads (bench/README.md, "Cold reads").
//
// ringlat -serve -cold-fids "F1 F2 ..." -cold-dir DIR -cold-per-block K reads the weed host's
// cold needles (weed.go, -cold): before each read it drops the pages of every *.dat in DIR
// from the page cache (posix_fadvise(DONTNEED), after an fdatasync at the start of each
// block: dirty pages would stay),
// then reads one needle, timed alone, then checks its bytes (coldData of its fid). The
// drops and checks are outside the samples.
//
//   - cold-ring: READ_NEEDLE to the engine at -peer, as needle-ring does (needle.go), each
//     read of a needle the engine never read before, in the order of -cold-fids. The
//     engine maps the pages it serves, and mapped pages cannot be dropped: a needle read
//     once over the ring stays in memory. Running out of fids is an error.
//   - cold-http: the volume server's GET, as needle-http does, cycling through -cold-fids:
//     the volume server reads with pread, so a needle's pages can be dropped every time.
//
// The engine may still hold a few pages next to a needle it served (the kernel maps up to
// 64 KiB of cached neighbours with each fault); the filler the weed host writes after each
// cold needle keeps those off the next one.
//
// A cold block ("block cold-ring|cold-http WARMUP_NS MEASURE_NS") does one unrecorded read
// (it opens the connection and faults the buffers in; WARMUP_NS is not used: reads of the
// pool would be spent on it), then records reads until MEASURE_NS of wall time have passed
// (at least one) or K reads (the warm-up one included) were made, the pool being sized for
// K per block.
// "elapsed_ns" is the sum of the recorded reads, so ops/s and bytes/s are those of the
// reads, not of the drops between them; the answer adds
// "cold":{"reads","drops","bytes_verified","budget_hit","wall_ns","left"}.

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"

	"github.com/seaweed-ring/seaweed-ring/go-client/needle"
	"github.com/seaweed-ring/seaweed-ring/go-client/ring"
)

const (
	// coldNeedleBytes is the size of every cold needle.
	coldNeedleBytes = 1 << 20
	// coldFillerBytes is written after each cold needle: more than the kernel's fault-around
	// window (64 KiB), with room to spare.
	coldFillerBytes = 256 << 10
)

// coldData is the content of the cold needle fid: ChaCha8 seeded by the fid's SHA-256, so
// that the uploader and the readers agree without a list of hashes.
func coldData(fid string, n int) []byte {
	b := make([]byte, n)
	rand.NewChaCha8(sha256.Sum256([]byte(fid))).Read(b)
	return b
}

// coldTarget is what a cold ringlat reads (its flags).
type coldTarget struct {
	fids     []string
	dir      string
	perBlock int
	volume   string // volume server host:port (cold-http)
	peer     string // UCX address of the engine serving dir (cold-ring)
}

// coldBlockStats are a cold block's counts.
type coldBlockStats struct {
	Reads         int64 `json:"reads"`
	Drops         int64 `json:"drops"`
	BytesVerified int64 `json:"bytes_verified"`
	// BudgetHit: the block ended on its K reads before MEASURE_NS had passed.
	BudgetHit bool `json:"budget_hit"`
	// WallNs: from the block's first read to its last one's end, drops and checks included.
	WallNs int64 `json:"wall_ns"`
	// Left: the fids cold-ring has not read yet.
	Left int `json:"left"`
}

// coldOps are the cold reads of one ringlat.
type coldOps struct {
	t    *coldTarget
	dats []*os.File
	// ring path (nil without an engine session or -peer)
	c    *ring.Client
	peer ring.Peer
	buf  ring.Buffer
	// next: the index in t.fids of the next ring read, or of the next HTTP read (cycling).
	next int
	http *needleHTTP
	out  []byte // the ring path's copy of the data out of the shared buffer
}

func newColdOps(ctx context.Context, c *ring.Client, t *coldTarget) (*coldOps, error) {
	if len(t.fids) == 0 || t.perBlock < 2 {
		return nil, errors.New("-cold-fids needs at least one fid and -cold-per-block at least 2")
	}
	paths, err := filepath.Glob(filepath.Join(t.dir, "*.dat"))
	if err != nil || len(paths) == 0 {
		return nil, fmt.Errorf("-cold-dir %s: no .dat files (%v)", t.dir, err)
	}
	o := &coldOps{t: t, out: make([]byte, coldNeedleBytes)}
	for _, p := range paths {
		f, err := os.Open(p)
		if err != nil {
			o.close()
			return nil, err
		}
		o.dats = append(o.dats, f)
	}
	o.http = newNeedleHTTP(&needleTarget{volume: t.volume, size: coldNeedleBytes}, newNeedleHTTPClient(1))
	if c != nil && t.peer != "" {
		peer, err := c.ConnectPeer(ctx, t.peer)
		if err != nil {
			o.close()
			return nil, fmt.Errorf("connecting to the engine at %s: %w", t.peer, err)
		}
		buf, err := c.AllocBuffer(ctx, needle.MetaLen+coldNeedleBytes)
		if err != nil {
			o.close()
			return nil, fmt.Errorf("a %d-byte session buffer: %w", needle.MetaLen+coldNeedleBytes, err)
		}
		o.c, o.peer, o.buf = c, peer, buf
	}
	return o, nil
}

// sync writes back the .dat files' dirty pages (a drop leaves them in memory). Once per
// block: nothing writes to the volumes while the bench reads, and an fdatasync of a clean
// file still costs a disk cache flush of a few ms here.
func (o *coldOps) sync() error {
	for _, f := range o.dats {
		if err := unix.Fdatasync(int(f.Fd())); err != nil {
			return fmt.Errorf("fdatasync %s: %w", f.Name(), err)
		}
	}
	return nil
}

// drop drops every .dat page that no process has mapped.
func (o *coldOps) drop() error {
	for _, f := range o.dats {
		if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
			return fmt.Errorf("fadvise(DONTNEED) %s: %w", f.Name(), err)
		}
	}
	return nil
}

// readRing reads fid over the ring into o.out.
func (o *coldOps) readRing(ctx context.Context, fid string) error {
	id, err := needle.ParseFileID(fid)
	if err != nil {
		return err
	}
	req := needle.ReadRangeRequest(o.peer, id, 0, coldNeedleBytes, o.buf)
	t, err := o.c.Submit(ctx, &req)
	if err != nil {
		return err
	}
	res, err := t.Wait(ctx)
	if err != nil {
		return err
	}
	m, data, err := needle.Decode(o.buf, res)
	if err != nil {
		return err
	}
	if len(data) != coldNeedleBytes || m.Flags&needle.FlagGzip != 0 {
		return fmt.Errorf("READ_NEEDLE %s: %d bytes (flags %#x), expected %d uncompressed", fid, len(data), m.Flags, coldNeedleBytes)
	}
	copy(o.out, data)
	return nil
}

// read drops the pages, then reads the next needle of path ("ring" or "http"), timed, then
// checks its bytes.
func (o *coldOps) read(ctx context.Context, path string, st *coldBlockStats) (time.Duration, error) {
	if err := o.drop(); err != nil {
		return 0, err
	}
	st.Drops++
	var fid string
	var got []byte
	var dt time.Duration
	switch path {
	case "ring":
		if o.c == nil {
			return 0, errors.New("cold-ring: this ringlat has no engine session and peer (-no-engine or no -peer)")
		}
		if o.next >= len(o.t.fids) {
			return 0, fmt.Errorf("cold-ring: all %d cold needles were read (the pool holds -cold-per-block reads per block)", len(o.t.fids))
		}
		fid = o.t.fids[o.next]
		o.next++
		t0 := time.Now()
		err := o.readRing(ctx, fid)
		dt = time.Since(t0)
		if err != nil {
			return 0, err
		}
		got = o.out
	default:
		fid = o.t.fids[o.next%len(o.t.fids)]
		o.next++
		o.http.url = "http://" + o.t.volume + "/" + fid
		t0 := time.Now()
		err := o.http.read()
		dt = time.Since(t0)
		if err != nil {
			return 0, err
		}
		got = o.http.data()
	}
	st.Reads++
	if err := sameBytes(fid, "the "+path+" path", got, coldData(fid, coldNeedleBytes)); err != nil {
		return 0, err
	}
	st.BytesVerified += coldNeedleBytes
	return dt, nil
}

// runBlock runs one cold block of path into h (see the comment at the top).
func (o *coldOps) runBlock(ctx context.Context, cmd blockCommand, path string, h *histogram) (n, ops int64, elapsed time.Duration, st coldBlockStats, err error) {
	start := time.Now()
	if err = o.sync(); err != nil {
		return 0, 0, 0, st, err
	}
	if _, err = o.read(ctx, path, &st); err != nil {
		return 0, 0, 0, st, err
	}
	ops = 1
	for {
		if ops >= int64(o.t.perBlock) {
			st.BudgetHit = true
			break
		}
		var dt time.Duration
		if dt, err = o.read(ctx, path, &st); err != nil {
			return 0, ops, 0, st, err
		}
		ops++
		h.record(int64(dt))
		elapsed += dt
		n++
		if time.Since(start) >= cmd.measure {
			break
		}
	}
	st.WallNs = int64(time.Since(start))
	st.Left = len(o.t.fids) // cold-http cycles
	if path == "ring" {
		st.Left -= o.next
	}
	return n, ops, elapsed, st, nil
}

func (o *coldOps) close() {
	for _, f := range o.dats {
		f.Close()
	}
	if o.http != nil {
		o.http.close()
	}
	if o.c != nil {
		o.buf.Release()
	}
}
