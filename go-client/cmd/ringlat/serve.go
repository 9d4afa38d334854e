package main

// Block mode (-serve), driven by the Rust bench (bench/src/scenarios/go.rs).
//
// After dialing, ringlat prints one line
//
//	{"ready":true,"session":3,"worker":0,"core":0,"gomaxprocs":1,"go":"go1.26.8"}
//
// (in needle mode also "needle":{"fid","bytes","volume","peer","verified":true}, and
// without "session"/"worker" under -no-engine; {"ready":false,"error":"..."} when set-up
// failed) and then reads commands on stdin, one per line:
//
//	block nop|batch|needle-ring|needle-http|needle-ring-nocopy|reader-ring|reader-http|fs|cold-ring|cold-http WARMUP_NS MEASURE_NS
//	quit                                  (or end of input)
//
// Each block is answered with one line:
//
//	{"scenario":"ring.nop.go","samples":N,"elapsed_ns":E,"hist":[[value_ns,count],...],
//	 "ops":C,"mallocs":M,"alloc_bytes":B,"gc_cycles":G,"gc_pause_ns":P}
//
// or {"error":"..."} after which ringlat exits with status 1. A block runs its sample
// (one Client.Do of a NOP, or one SubmitBatch of -batch NOPs and the waits for all of them,
// or one needle read, see needle.go) unrecorded until WARMUP_NS have passed, then records
// samples until MEASURE_NS have passed, exactly as the bench's sample_loop does: one
// monotonic clock read per sample, a sample being the time from the previous read to this
// one (the loop's own cost is inside every sample, as on the Rust side). "hist" lists the
// non-empty buckets of an HdrHistogram-compatible layout with 3 significant digits (see
// bucketFloor), each as the lowest value of its bucket, so the bench can record them into
// its own histogram without losing precision. "ops" counts every sample the block ran,
// warm-up included; mallocs, alloc_bytes, gc_cycles and gc_pause_ns are the Go runtime's
// counters (runtime.MemStats) over the same span, read before and after the block; "cpu_ns"
// the process's CPU time over it, and "ring" (with a session) the session's doorbell counts.
//
// Front-end blocks (block fs, with -fs: fsread.go) time each read alone and add
// "fs":{"reads","bytes_verified","resident_before","resident_extra","drops"}; the ready
// line adds "fs":{"kind","path","weed","verified":true}.
//
// Cold blocks (block cold-ring|cold-http, with -cold-fids: cold.go) drop the volume's pages
// before each read, time each read alone and add "cold":{...}.
//
// With -conc N (needle mode), needle-ring and needle-http blocks run N goroutines that read
// at once (concurrent.go): "samples" counts the reads of all of them that ended in the
// measured window, "hist" holds those reads, and "elapsed_ns" is the window, so that
// samples / elapsed is the process's reads per second. The manual needle blocks run one
// goroutine, -conc or not.
//
// Needle blocks (needle mode: -fid given) are answered with the scenario name of -name and
// run with the measuring goroutine unlocked from its OS thread: the HTTP client hands each
// request to its connection's reader and writer goroutines, and a goroutine locked to a
// thread pays two thread switches for every such hand-off. (Every thread of the process is
// on -core anyway.) Needle mode keeps the garbage collector on (GOGC's default) unless
// -gc-off: the HTTP path allocates on every request, and a heap that only grows would
// charge it with page faults instead.

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"runtime"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/seaweed-ring/seaweed-ring/go-client/ring"
)

const (
	// subBuckets is HdrHistogram's sub-bucket count for 3 significant digits.
	subBuckets = 2048
	half       = subBuckets / 2
	// highestNs matches the bench's histogram range (1 minute).
	highestNs = 60_000_000_000
)

// bucketIndex maps a value to its bucket: values below 2048 have a bucket each, then every
// power of two from 2^11 up has 1024 buckets (width 2^(k-10) for values in [2^k, 2^(k+1))).
// This is the layout of an HdrHistogram with 3 significant digits and a lowest
// discernible value of 1, so a bucket's lowest value lands in the same bucket there.
func bucketIndex(v int64) int {
	if v < subBuckets {
		return int(v)
	}
	shift := bits.Len64(uint64(v)) - 11
	return subBuckets + (shift-1)*half + int(v>>shift) - half
}

// bucketFloor is the lowest value of bucket i.
func bucketFloor(i int) int64 {
	if i < subBuckets {
		return int64(i)
	}
	shift := (i-subBuckets)/half + 1
	return int64(half+(i-subBuckets)%half) << shift
}

// histogram counts samples per bucket; recording allocates nothing.
type histogram struct {
	counts []int64
	total  int64
}

func newHistogram() *histogram {
	return &histogram{counts: make([]int64, bucketIndex(highestNs)+1)}
}

func (h *histogram) record(ns int64) {
	if ns < 1 {
		ns = 1 // clock granularity, as the bench counts 0 ns
	}
	if ns > highestNs {
		ns = highestNs
	}
	h.counts[bucketIndex(ns)]++
	h.total++
}

func (h *histogram) reset() {
	clear(h.counts)
	h.total = 0
}

// buckets lists the non-empty buckets as [lowest value, count] pairs, ascending.
func (h *histogram) buckets() [][2]int64 {
	var out [][2]int64
	for i, n := range h.counts {
		if n != 0 {
			out = append(out, [2]int64{bucketFloor(i), n})
		}
	}
	return out
}

type ready struct {
	Ready      bool         `json:"ready"`
	Session    *uint32      `json:"session,omitempty"`
	Worker     *uint32      `json:"worker,omitempty"`
	Core       int          `json:"core"`
	GOMAXPROCS int          `json:"gomaxprocs"`
	Go         string       `json:"go"`
	Needle     *readyNeedle `json:"needle,omitempty"`
	// FS: a front-end ringlat's front end, started, and its data read once and checked.
	FS *readyFS `json:"fs,omitempty"`
}

type readyFS struct {
	Kind     string `json:"kind"`
	Path     string `json:"path"`
	Weed     string `json:"weed"`
	Verified bool   `json:"verified"`
}

// readyNeedle describes the needle of a needle-mode ringlat, checked before the first block.
type readyNeedle struct {
	Fid      string `json:"fid"`
	Bytes    int    `json:"bytes"`
	Volume   string `json:"volume"`
	Peer     string `json:"peer,omitempty"`
	Verified bool   `json:"verified"`
}

type blockResult struct {
	Scenario   string     `json:"scenario"`
	Samples    int64      `json:"samples"`
	ElapsedNs  int64      `json:"elapsed_ns"`
	Hist       [][2]int64 `json:"hist"`
	Ops        int64      `json:"ops"`
	Mallocs    uint64     `json:"mallocs"`
	AllocBytes uint64     `json:"alloc_bytes"`
	GCCycles   uint32     `json:"gc_cycles"`
	GCPauseNs  uint64     `json:"gc_pause_ns"`
	// FS: a front-end block's cache and check counts (fsread.go).
	FS *fsBlockStats `json:"fs,omitempty"`
	// Cold: a cold block's counts (cold.go).
	Cold *coldBlockStats `json:"cold,omitempty"`
	// CPUNs: the process's CPU time (user + system, every thread) over the block, warm-up
	// included: near elapsed + warm-up when the client core was the bottleneck.
	CPUNs int64 `json:"cpu_ns"`
	// Ring: the session's doorbell counts over the block (ring blocks): how often a waiter
	// found nothing to reap and slept (waiting for the engine), and how often the client
	// woke the engine's worker (it had run out of requests and slept).
	Ring *ringBlockStats `json:"ring,omitempty"`
}

type ringBlockStats struct {
	CQSleeps      uint64 `json:"cq_sleeps"`
	EngineWakeups uint64 `json:"engine_wakeups"`
}

// cpuTime is the process's user + system CPU time so far.
func cpuTime() time.Duration {
	var ru unix.Rusage
	if unix.Getrusage(unix.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

type blockError struct {
	Ready *bool  `json:"ready,omitempty"`
	Error string `json:"error"`
}

// blockKinds are the sample kinds of the block command.
var blockKinds = []string{"nop", "batch", "needle-ring", "needle-http", "needle-ring-nocopy", "reader-ring", "reader-http", "fs", "cold-ring", "cold-http"}

// blockCommand is one parsed "block" line.
type blockCommand struct {
	kind    string // one of blockKinds
	warmup  time.Duration
	measure time.Duration
}

// parseCommand parses one stdin line; quit is true for "quit".
func parseCommand(line string) (cmd blockCommand, quit bool, err error) {
	f := strings.Fields(line)
	if len(f) == 1 && f[0] == "quit" {
		return cmd, true, nil
	}
	if len(f) != 4 || f[0] != "block" {
		return cmd, false, fmt.Errorf("bad command %q (want: block %s WARMUP_NS MEASURE_NS, or quit)", line, strings.Join(blockKinds, "|"))
	}
	known := false
	for _, k := range blockKinds {
		known = known || f[1] == k
	}
	if !known {
		return cmd, false, fmt.Errorf("bad command %q: unknown scenario %q (%s)", line, f[1], strings.Join(blockKinds, ", "))
	}
	w, err1 := strconv.ParseInt(f[2], 10, 64)
	m, err2 := strconv.ParseInt(f[3], 10, 64)
	if err1 != nil || err2 != nil || w < 0 || m <= 0 {
		return cmd, false, fmt.Errorf("bad command %q: durations must be integers, warm-up >= 0, measured > 0", line)
	}
	return blockCommand{kind: f[1], warmup: time.Duration(w), measure: time.Duration(m)}, false, nil
}

// runBlock runs sample for cmd's warm-up and measured time into h and returns the number
// of recorded samples, the number of samples run (warm-up included) and the measured time
// (from the end of the warm-up to the last sample's timestamp), as the bench's sample_loop
// does.
func runBlock(cmd blockCommand, h *histogram, sample func() error) (int64, int64, time.Duration, error) {
	// time.Since on a Time with a monotonic reading reads only the monotonic clock: one
	// vDSO clock_gettime(CLOCK_MONOTONIC) per sample, like Rust's Instant::now().
	base := time.Now()
	now := func() time.Duration { return time.Since(base) }
	warmEnd := now() + cmd.warmup
	var prev time.Duration
	var ops int64
	for {
		if err := sample(); err != nil {
			return 0, ops, 0, err
		}
		ops++
		if t := now(); t >= warmEnd {
			prev = t
			break
		}
	}
	start := prev
	end := start + cmd.measure
	var n int64
	for {
		if err := sample(); err != nil {
			return 0, ops, 0, err
		}
		t := now()
		h.record(int64(t - prev))
		prev = t
		n++
		if t >= end {
			break
		}
	}
	return n, ops + n, prev - start, nil
}

// serveConfig is what -serve was started with.
type serveConfig struct {
	batch int
	core  int
	// name is the scenario name of needle blocks' answers.
	name string
	// needle is the needle of needle blocks (nil: no needle mode).
	needle *needleTarget
	// conc > 0: needle-ring and needle-http blocks run this many goroutines (concurrent.go).
	conc   int
	socket string
	// fs is the front end of fs blocks (nil: no front-end mode).
	fs *fsTarget
	// cold is what cold blocks read (nil: no cold mode; cold.go).
	cold *coldTarget
}

// serve runs the block protocol on in/out until "quit" or end of input. c is nil under
// -no-engine (only needle-http and reader-http blocks can run then).
func serve(c *ring.Client, in io.Reader, out io.Writer, cfg serveConfig) error {
	enc := json.NewEncoder(out)
	ctx := context.Background()
	r := ready{Ready: true, Core: cfg.core, GOMAXPROCS: runtime.GOMAXPROCS(0), Go: runtime.Version()}
	if c != nil {
		sid, w := c.SessionID(), c.Worker()
		r.Session, r.Worker = &sid, &w
	}
	var needles *needleOps
	if cfg.needle != nil {
		var err error
		needles, err = newNeedleOps(ctx, c, cfg.socket, cfg.needle, cfg.conc)
		if err != nil {
			no := false
			enc.Encode(blockError{Ready: &no, Error: err.Error()})
			return err
		}
		defer needles.close()
		t := cfg.needle
		r.Needle = &readyNeedle{Fid: t.fid, Bytes: t.size, Volume: t.volume, Peer: t.peer, Verified: true}
	}
	var fs *fsOps
	if cfg.fs != nil {
		var err error
		if fs, err = newFsOps(ctx, cfg.fs); err != nil {
			no := false
			enc.Encode(blockError{Ready: &no, Error: err.Error()})
			return err
		}
		defer fs.close()
		r.FS = &readyFS{Kind: cfg.fs.kind, Path: cfg.fs.path, Weed: cfg.fs.weedBin, Verified: true}
	}
	var cold *coldOps
	if cfg.cold != nil {
		var err error
		if cold, err = newColdOps(ctx, c, cfg.cold); err != nil {
			no := false
			enc.Encode(blockError{Ready: &no, Error: err.Error()})
			return err
		}
		defer cold.close()
	}
	if err := enc.Encode(r); err != nil {
		return err
	}
	noEngine := func() error { return fmt.Errorf("this ringlat runs without an engine session (-no-engine)") }
	nop := ring.Request{Opcode: ring.OpNop}
	doNop := func() error {
		if c == nil {
			return noEngine()
		}
		res, err := c.Do(ctx, &nop)
		if err == nil && res != 0 {
			err = fmt.Errorf("NOP completed with result %d, expected 0", res)
		}
		return err
	}
	reqs := make([]ring.Request, cfg.batch)
	for i := range reqs {
		reqs[i].Opcode = ring.OpNop
	}
	tickets := make([]ring.Ticket, cfg.batch)
	doBatch := func() error {
		if c == nil {
			return noEngine()
		}
		n, err := c.SubmitBatch(ctx, reqs, tickets)
		for _, t := range tickets[:n] {
			res, werr := t.Wait(ctx)
			if werr == nil && res != 0 {
				werr = fmt.Errorf("NOP completed with result %d, expected 0", res)
			}
			if werr != nil && err == nil {
				err = werr
			}
		}
		if err == nil && n != cfg.batch {
			err = fmt.Errorf("SubmitBatch took %d of %d requests", n, cfg.batch)
		}
		return err
	}
	h := newHistogram()
	sc := bufio.NewScanner(in)
	for sc.Scan() {
		cmd, quit, err := parseCommand(sc.Text())
		if quit {
			return nil
		}
		var name string
		var sample func() error
		var concSamples []func() error // a concurrent needle block's, one per goroutine
		unlock := false
		if err == nil {
			switch cmd.kind {
			case "nop":
				name, sample = "ring.nop.go", doNop
			case "batch":
				name, sample = fmt.Sprintf("ring.nop_batch%d.go", cfg.batch), doBatch
			case "fs", "cold-ring", "cold-http":
				// run below
			default:
				if needles == nil {
					err = fmt.Errorf("block %s: ringlat was started without a needle (-fid)", cmd.kind)
					break
				}
				name, unlock = cfg.name, true
				if cmd.kind != "needle-ring" && cmd.kind != "needle-http" {
					name += "+" + cmd.kind
				} else if cfg.conc > 0 {
					concSamples, err = needles.concSamples(ctx, cmd.kind)
					break
				}
				sample, err = needles.sample(ctx, cmd.kind)
			}
		}
		h.reset()
		var n, ops int64
		var elapsed time.Duration
		var before, after runtime.MemStats
		var ringBefore ring.Stats
		if c != nil {
			ringBefore = c.Stats()
		}
		cpuBefore := cpuTime()
		var fsStats *fsBlockStats
		var coldStats *coldBlockStats
		if err == nil && (cmd.kind == "cold-ring" || cmd.kind == "cold-http") {
			if cold == nil {
				err = fmt.Errorf("block %s: ringlat was started without cold needles (-cold-fids)", cmd.kind)
			} else {
				var st coldBlockStats
				runtime.UnlockOSThread() // as for needle blocks: the HTTP client's goroutines
				runtime.ReadMemStats(&before)
				n, ops, elapsed, st, err = cold.runBlock(ctx, cmd, strings.TrimPrefix(cmd.kind, "cold-"), h)
				runtime.ReadMemStats(&after)
				runtime.LockOSThread()
				name, coldStats = cfg.name, &st
			}
		} else if err == nil && cmd.kind == "fs" {
			if fs == nil {
				err = errors.New("block fs: ringlat was started without a front end (-fs)")
			} else {
				var st fsBlockStats
				runtime.UnlockOSThread() // as for needle blocks: the HTTP client's goroutines
				runtime.ReadMemStats(&before)
				n, ops, elapsed, st, err = fs.runBlock(cmd, h)
				runtime.ReadMemStats(&after)
				runtime.LockOSThread()
				name, fsStats = cfg.name, &st
			}
		} else if err == nil {
			if unlock {
				runtime.UnlockOSThread()
			}
			runtime.ReadMemStats(&before)
			if concSamples != nil {
				n, ops, elapsed, err = runConcurrent(cmd, h, needles.hists, concSamples)
			} else {
				n, ops, elapsed, err = runBlock(cmd, h, sample)
			}
			runtime.ReadMemStats(&after)
			if unlock {
				runtime.LockOSThread()
			}
		}
		if err != nil {
			enc.Encode(blockError{Error: err.Error()})
			return err
		}
		res := blockResult{Scenario: name, Samples: n, ElapsedNs: int64(elapsed), Hist: h.buckets(), Ops: ops,
			Mallocs: after.Mallocs - before.Mallocs, AllocBytes: after.TotalAlloc - before.TotalAlloc,
			GCCycles: after.NumGC - before.NumGC, GCPauseNs: after.PauseTotalNs - before.PauseTotalNs, FS: fsStats, Cold: coldStats,
			CPUNs: int64(cpuTime() - cpuBefore)}
		if c != nil {
			st := c.Stats()
			res.Ring = &ringBlockStats{CQSleeps: st.Sleeps - ringBefore.Sleeps, EngineWakeups: st.Wakeups - ringBefore.Wakeups}
		}
		if err := enc.Encode(res); err != nil {
			return err
		}
	}
	return sc.Err()
}
