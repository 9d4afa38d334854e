// Command ringlat measures the Go client's round trip against a running engine and prints
// one JSON line per scenario (and per block), in the shape of the Rust bench's lines:
//
//	{"scenario":"ring.nop.go","p50_ns":..,"p99_ns":..,"p999_ns":..,"ops_per_sec":..,...}
//	{"scenario":"ring.nop_batch32.go",...}
//
// The measuring goroutine is locked to its OS thread, and the thread is pinned to -core.
// ring.nop.go times one synchronous NOP (Client.Do) per sample; ring.nop_batchN.go times
// one SubmitBatch of N NOPs plus the waits for all N per sample (ops_per_sec counts NOPs).
//
// Usage:
//
//	ringlat [-socket PATH] [-core N] [-iters N] [-warmup N] [-batch N] [-blocks N]
//	        [-scenario nop|batch|all] [-spin DUR] [-cpuprofile FILE]
//	ringlat -serve [-socket PATH] [-core N] [-batch N] [-spin DUR]
//	ringlat -serve [-socket PATH | -no-engine] [-core N] -name NAME -volume HOST:PORT
//	        -fid FID -bytes N -sha256 HEX [-peer IP:PORT] [-conc N] [-gc-off]
//	ringlat -serve [-socket PATH | -no-engine] [-core N] -name NAME -volume HOST:PORT
//	        -cold-fids "F1 F2 ..." -cold-dir DIR [-cold-per-block K] [-peer IP:PORT]
//	ringlat -weed [-weed-bin PATH] [-sizes 4k,64k,1m] [-cold N] [-fs-mb N | -netns NS -ip IP] [-check]
//	ringlat -serve -no-engine -name NAME -fs mount-rand|mount-seq|s3|filer -fs-path ring|http
//	        -weed-bin PATH -master HOST:PORT -filer HOST:PORT -fs-file PATH -fs-bytes N
//	        [-fs-object-bytes N] [-engine-socket PATH -engine-addrs VOLUME=UCX]
//
// -serve is the block mode the Rust bench drives (bench/README.md): ringlat dials once,
// prints {"ready":true,...}, then runs one timed block per stdin line and answers each with
// one JSON line (see serve.go). Blocks are timed like the Rust bench's: a warm-up by time,
// then samples for the measured time, one clock read per sample, values in an
// HdrHistogram-compatible bucket layout, so that the bench merges them with its own.
// With -fid it is in needle mode: it reads that needle of a real volume server over the
// rings (READ_NEEDLE to the engine at -peer) or over HTTP (needle.go); with -conc N, from
// N goroutines at once (concurrent.go).
//
// With -cold-fids it is in cold mode: it reads needles whose pages it dropped from the page
// cache just before (cold.go).
//
// With -fs it is in front-end mode: it starts the SeaweedFS front end it measures (a FUSE
// weed mount, weed s3, or a filer of its own) and reads through it (fsread.go).
//
// -weed runs a SeaweedFS master and volume server for the bench's needle scenarios and
// uploads their needles (weed.go); it serves until stdin ends.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/seaweed-ring/seaweed-ring/go-client/internal/weedcluster"
	"github.com/seaweed-ring/seaweed-ring/go-client/needle"
	"github.com/seaweed-ring/seaweed-ring/go-client/ring"
)

type result struct {
	Scenario  string  `json:"scenario"`
	Block     *int    `json:"block,omitempty"`
	P50       int64   `json:"p50_ns"`
	P90       int64   `json:"p90_ns"`
	P99       int64   `json:"p99_ns"`
	P999      int64   `json:"p999_ns"`
	P9999     int64   `json:"p9999_ns"`
	Max       int64   `json:"max_ns"`
	Mean      float64 `json:"mean_ns"`
	Count     int     `json:"count"`
	OpsPerSec float64 `json:"ops_per_sec"`
	Batch     int     `json:"batch"`
	Core      int     `json:"core"`
}

func main() {
	socket := flag.String("socket", "", "engine control socket (default: ring.DefaultSocketPath())")
	core := flag.Int("core", -1, "pin the measuring thread to this CPU (-1: no pinning)")
	iters := flag.Int("iters", 100000, "samples per block")
	warmup := flag.Int("warmup", 10000, "unmeasured samples before each block")
	batch := flag.Int("batch", 32, "requests per sample in the batch scenario")
	blocks := flag.Int("blocks", 1, "measured blocks per scenario (one JSON line each, then a merged line when > 1)")
	scenario := flag.String("scenario", "all", "nop, batch or all")
	spin := flag.Duration("spin", 50*time.Microsecond, "client spin before sleeping on the session eventfd")
	timeout := flag.Duration("timeout", 10*time.Minute, "overall time limit (not in -serve mode)")
	serveMode := flag.Bool("serve", false, "block mode for the bench: read block commands on stdin, answer JSON lines")
	noEngine := flag.Bool("no-engine", false, "-serve without an engine session (needle-http blocks only)")
	name := flag.String("name", "needle.read", "-serve needle mode: the scenario name of the block answers")
	volume := flag.String("volume", "", "-serve needle mode: the volume server (host:port)")
	fid := flag.String("fid", "", "-serve needle mode: the needle's file id (needle mode when set)")
	size := flag.Int("bytes", 0, "-serve needle mode: the needle's data length")
	sum := flag.String("sha256", "", "-serve needle mode: SHA-256 (hex) of the needle's data, checked before the first block")
	peer := flag.String("peer", "", "-serve needle mode: UCX address of the engine serving the volume directory (ring blocks)")
	conc := flag.Int("conc", 0, "-serve needle mode: needle-ring and needle-http blocks read from this many goroutines at once, sharing the session / HTTP client (0: one measuring goroutine)")
	gcOff := flag.Bool("gc-off", false, "-serve needle mode: turn the garbage collector off (it stays on by default there)")
	coldFids := flag.String("cold-fids", "", "-serve cold mode: the cold needles to read, separated by spaces (fids hold commas), in order (cold.go)")
	coldDir := flag.String("cold-dir", "", "-serve cold mode: the volume directory whose .dat pages are dropped before each read")
	coldPerBlock := flag.Int("cold-per-block", 64, "-serve cold mode: most reads per cold block, its warm-up read included")
	weedMode := flag.Bool("weed", false, "run a SeaweedFS master and volume server, upload the needles of -sizes, print them, serve until stdin ends")
	weedBin := flag.String("weed-bin", "", "-weed: the weed binary (default: $SWRING_WEED, else the one scripts/weed built)")
	sizes := flag.String("sizes", "4k,64k,1m", "-weed: needle sizes to upload, comma-separated (k = KiB, m = MiB)")
	check := flag.Bool("check", false, "-weed: only find the weed binary and print it")
	fsMB := flag.Int("fs-mb", 0, "-weed: also start a filer and write a file of this many MiB through it (mount/s3/filer scenarios)")
	weedCold := flag.Int("cold", 0, "-weed: also upload this many 1 MiB cold needles, each followed by a filler (cold.go)")
	weedNetns := flag.String("netns", "", "-weed: run master and volume server in this network namespace (with -ip; needs root)")
	weedIP := flag.String("ip", "", "-weed -netns: their address in that namespace")
	cpuProfile := flag.String("cpuprofile", "", "write a CPU profile of the measured scenarios (with -serve: of everything from the ready line to the end of input) to this file")
	var fs fsTarget
	fs.flags()
	flag.Parse()
	if *weedMode {
		if err := weedHost(*weedBin, *sizes, *fsMB, *weedCold, *check, weedcluster.NetnsOptions{Netns: *weedNetns, IP: *weedIP}, os.Stdin, os.Stdout); err != nil {
			fail(err)
		}
		return
	}
	if *iters <= 0 || *batch <= 0 || *blocks <= 0 || *warmup < 0 {
		fail(fmt.Errorf("-iters, -batch and -blocks must be positive"))
	}
	if *conc < 0 || (*conc > 0 && *fid == "") {
		fail(fmt.Errorf("-conc must be >= 0, and needs needle mode (-fid)"))
	}

	runtime.LockOSThread()
	if *core >= 0 {
		var set unix.CPUSet
		set.Set(*core)
		if err := unix.SchedSetaffinity(0, &set); err != nil { // 0: this (locked) thread
			fail(fmt.Errorf("pin to core %d: %w", *core, err))
		}
		if *serveMode {
			// Every thread, not only this one: needle blocks run unlocked, and the HTTP
			// client's goroutines run on other threads. Threads made later inherit it.
			pinAllThreads(set)
		}
	}
	if *serveMode {
		cfg := serveConfig{batch: *batch, core: *core, name: *name, socket: *socket}
		if fs.kind != "" {
			fs.name = *name
			cfg.fs = &fs
		}
		if *fid != "" {
			if *volume == "" || *size <= 0 || *sum == "" {
				fail(fmt.Errorf("needle mode (-fid) needs -volume, -bytes and -sha256"))
			}
			cfg.needle = &needleTarget{volume: *volume, fid: *fid, size: *size, sha256: *sum, peer: *peer}
			cfg.conc = *conc
		}
		if *coldFids != "" {
			if *coldDir == "" || *volume == "" {
				fail(fmt.Errorf("cold mode (-cold-fids) needs -cold-dir and -volume"))
			}
			cfg.cold = &coldTarget{fids: strings.Fields(*coldFids), dir: *coldDir, perBlock: *coldPerBlock,
				volume: *volume, peer: *peer}
		}
		// No overall timeout: the bench ends the process (stdin EOF, or SIGKILL).
		var c *ring.Client
		if !*noEngine {
			var err error
			c, err = ring.Dial(context.Background(), *socket, serveOptions(*spin, cfg)...)
			if err != nil {
				no := false
				json.NewEncoder(os.Stdout).Encode(blockError{Ready: &no, Error: err.Error()})
				fail(err)
			}
		}
		if (cfg.needle == nil && cfg.fs == nil && cfg.cold == nil) || *gcOff {
			debug.SetGCPercent(-1)
		}
		stopProfile := startCPUProfile(*cpuProfile)
		err := serve(c, os.Stdin, os.Stdout, cfg)
		stopProfile()
		if c != nil {
			c.Close()
		}
		if err != nil {
			fail(err)
		}
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	c, err := ring.Dial(ctx, *socket, ring.WithSpin(*spin))
	if err != nil {
		fail(err)
	}
	defer c.Close()
	// The hot path allocates nothing; keep the collector out of the measurement anyway.
	debug.SetGCPercent(-1)
	defer startCPUProfile(*cpuProfile)()

	lat := make([]int64, *iters)
	all := make([]int64, 0, *iters**blocks)
	enc := json.NewEncoder(os.Stdout)
	run := func(name string, perSample int, sample func() error) {
		all = all[:0]
		var total time.Duration
		for b := 0; b < *blocks; b++ {
			for i := 0; i < *warmup; i++ {
				if err := sample(); err != nil {
					fail(err)
				}
			}
			start := time.Now()
			for i := range lat {
				t0 := time.Now()
				if err := sample(); err != nil {
					fail(err)
				}
				lat[i] = int64(time.Since(t0))
			}
			elapsed := time.Since(start)
			total += elapsed
			all = append(all, lat...)
			if *blocks > 1 {
				bi := b
				r := summarize(name, lat, perSample, elapsed, *core)
				r.Block = &bi
				enc.Encode(r)
			}
		}
		enc.Encode(summarize(name, all, perSample, total, *core))
	}

	if *scenario == "nop" || *scenario == "all" {
		req := ring.Request{Opcode: ring.OpNop}
		run("ring.nop.go", 1, func() error {
			_, err := c.Do(ctx, &req)
			return err
		})
	}
	if *scenario == "batch" || *scenario == "all" {
		reqs := make([]ring.Request, *batch)
		for i := range reqs {
			reqs[i].Opcode = ring.OpNop
		}
		tickets := make([]ring.Ticket, *batch)
		run(fmt.Sprintf("ring.nop_batch%d.go", *batch), *batch, func() error {
			n, err := c.SubmitBatch(ctx, reqs, tickets)
			for _, t := range tickets[:n] {
				if _, werr := t.Wait(ctx); werr != nil && err == nil {
					err = werr
				}
			}
			return err
		})
	}
}

func summarize(name string, lat []int64, perSample int, elapsed time.Duration, core int) result {
	s := slices.Clone(lat)
	slices.Sort(s)
	q := func(p float64) int64 {
		i := int(p * float64(len(s)))
		if i >= len(s) {
			i = len(s) - 1
		}
		return s[i]
	}
	var sum float64
	for _, v := range s {
		sum += float64(v)
	}
	return result{
		Scenario:  name,
		P50:       q(0.5),
		P90:       q(0.9),
		P99:       q(0.99),
		P999:      q(0.999),
		P9999:     q(0.9999),
		Max:       s[len(s)-1],
		Mean:      float64(int64(sum/float64(len(s))*100)) / 100,
		Count:     len(s),
		OpsPerSec: float64(len(s)*perSample) / elapsed.Seconds(),
		Batch:     perSample,
		Core:      core,
	}
}

// startCPUProfile starts a CPU profile into path (none when path is empty) and returns what
// stops it.
func startCPUProfile(path string) (stop func()) {
	if path == "" {
		return func() {}
	}
	f, err := os.Create(path)
	if err == nil {
		err = pprof.StartCPUProfile(f)
	}
	if err != nil {
		fail(fmt.Errorf("cpu profile: %w", err))
	}
	return func() { pprof.StopCPUProfile(); f.Close() }
}

// pinAllThreads moves every thread of the process to set.
func pinAllThreads(set unix.CPUSet) {
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return
	}
	for _, t := range tasks {
		if tid, err := strconv.Atoi(t.Name()); err == nil {
			unix.SchedSetaffinity(tid, &set)
		}
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "ringlat:", err)
	os.Exit(1)
}

// serveOptions are the session's options in -serve mode: the engine's default buffer area
// (4 MiB) unless a needle-mode ringlat needs room for more (an 8 MiB needle, or many
// goroutines each with a buffer of its own), then twice what the readers take.
func serveOptions(spin time.Duration, cfg serveConfig) []ring.Option {
	opts := []ring.Option{ring.WithSpin(spin)}
	if cfg.needle != nil {
		readers := uint64(max(cfg.conc, 1))
		need := readers * uint64(needle.MetaLen+cfg.needle.size)
		if need > 2<<20 {
			opts = append(opts, ring.WithBufferSize((2*need+(1<<20)-1)&^((1<<20)-1)))
		}
	}
	return opts
}
