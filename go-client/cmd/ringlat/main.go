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
//	        [-scenario nop|batch|all] [-spin DUR]
//	ringlat -serve [-socket PATH] [-core N] [-batch N] [-spin DUR]
//
// -serve is the block mode the Rust bench drives (bench/README.md): ringlat dials once,
// prints {"ready":true,...}, then runs one timed block per stdin line and answers each with
// one JSON line (see serve.go). Blocks are timed like the Rust bench's: a warm-up by time,
// then samples for the measured time, one clock read per sample, values in an
// HdrHistogram-compatible bucket layout, so that the bench merges them with its own.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"slices"
	"time"

	"golang.org/x/sys/unix"

	swring "github.com/seaweed-ring/seaweed-ring/go-client"
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
	socket := flag.String("socket", "", "engine control socket (default: swring.DefaultSocketPath())")
	core := flag.Int("core", -1, "pin the measuring thread to this CPU (-1: no pinning)")
	iters := flag.Int("iters", 100000, "samples per block")
	warmup := flag.Int("warmup", 10000, "unmeasured samples before each block")
	batch := flag.Int("batch", 32, "requests per sample in the batch scenario")
	blocks := flag.Int("blocks", 1, "measured blocks per scenario (one JSON line each, then a merged line when > 1)")
	scenario := flag.String("scenario", "all", "nop, batch or all")
	spin := flag.Duration("spin", 50*time.Microsecond, "client spin before sleeping on the session eventfd")
	timeout := flag.Duration("timeout", 10*time.Minute, "overall time limit (not in -serve mode)")
	serveMode := flag.Bool("serve", false, "block mode for the bench: read block commands on stdin, answer JSON lines")
	flag.Parse()
	if *iters <= 0 || *batch <= 0 || *blocks <= 0 || *warmup < 0 {
		fail(fmt.Errorf("-iters, -batch and -blocks must be positive"))
	}

	runtime.LockOSThread()
	if *core >= 0 {
		var set unix.CPUSet
		set.Set(*core)
		if err := unix.SchedSetaffinity(0, &set); err != nil { // 0: this (locked) thread
			fail(fmt.Errorf("pin to core %d: %w", *core, err))
		}
	}
	if *serveMode {
		// No overall timeout: the bench ends the process (stdin EOF, or SIGKILL).
		c, err := swring.Dial(context.Background(), *socket, swring.WithSpin(*spin))
		if err != nil {
			fail(err)
		}
		debug.SetGCPercent(-1)
		err = serve(c, os.Stdin, os.Stdout, *batch, *core)
		c.Close()
		if err != nil {
			fail(err)
		}
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	c, err := swring.Dial(ctx, *socket, swring.WithSpin(*spin))
	if err != nil {
		fail(err)
	}
	defer c.Close()
	// The hot path allocates nothing; keep the collector out of the measurement anyway.
	debug.SetGCPercent(-1)

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
		req := swring.Request{Opcode: swring.OpNop}
		run("ring.nop.go", 1, func() error {
			_, err := c.Do(ctx, &req)
			return err
		})
	}
	if *scenario == "batch" || *scenario == "all" {
		reqs := make([]swring.Request, *batch)
		for i := range reqs {
			reqs[i].Opcode = swring.OpNop
		}
		tickets := make([]swring.Ticket, *batch)
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

func fail(err error) {
	fmt.Fprintln(os.Stderr, "ringlat:", err)
	os.Exit(1)
}
