package main

// Concurrent needle blocks (-conc N, the bench's needle.read.<size>.<path>.cN scenarios):
// N goroutines of this one process read the needle at once, as a SeaweedFS mount's readers
// or an S3 gateway's GETs do, sharing what such a process shares: the ring paths one
// ring.Client (one session), the HTTP path one http.Client (N idle connections kept to the
// volume server). Each goroutine has its own reader (its own session Buffer and request, or
// its own body buffer) and its own histogram, so that recording takes no lock; the
// histograms are merged after the block.

import (
	"sync"
	"sync/atomic"
	"time"
)

// add adds o's counts to h.
func (h *histogram) add(o *histogram) {
	for i, n := range o.counts {
		h.counts[i] += n
	}
	h.total += o.total
}

// runConcurrent runs samples[i] in a loop on goroutine i (samples[0] on the calling
// goroutine, so that one goroutine runs exactly where runBlock's loop runs), all together:
// unrecorded until cmd.warmup has passed since the start, then recorded into hists[i] (reset
// here) until cmd.measure more has passed, and merges hists into h.
//
// A goroutine's sample is, as in runBlock, the time from its previous read's end to this
// one's (one clock read per read). Every read that ends inside the measured window is
// recorded, whenever it began, and no other: the block's reads per second are its recorded
// samples over the window's length, which it returns as the measured time. (Each goroutine
// stops at its first read ending after the window; with N reads in flight, timing each
// goroutine's span instead would charge the block with up to a read's latency at each end.)
// Only when no read at all ended inside the window (every goroutine stalled through it) does
// the block record each goroutine's first read after it instead, over the time up to the
// last of those, so that no block is empty.
// It returns the recorded samples, the samples run (warm-up and the reads past the window
// included) and the measured time. The first error ends every goroutine after its current
// read.
func runConcurrent(cmd blockCommand, h *histogram, hists []*histogram, samples []func() error) (int64, int64, time.Duration, error) {
	base := time.Now()
	now := func() time.Duration { return time.Since(base) }
	start := cmd.warmup
	end := start + cmd.measure
	var stop atomic.Bool
	recorded := make([]int64, len(samples))
	ran := make([]int64, len(samples))
	errs := make([]error, len(samples))
	// Each goroutine's first read ending after the window: its sample and its end.
	over, overEnd := make([]int64, len(samples)), make([]time.Duration, len(samples))
	loop := func(i int) {
		hi, sample := hists[i], samples[i]
		hi.reset()
		prev := now()
		for !stop.Load() {
			if err := sample(); err != nil {
				errs[i] = err
				stop.Store(true)
				return
			}
			ran[i]++
			t := now()
			if t > end {
				over[i], overEnd[i] = int64(t-prev), t
				return
			}
			if t > start {
				hi.record(int64(t - prev))
				recorded[i]++
			}
			prev = t
		}
	}
	var wg sync.WaitGroup
	for i := 1; i < len(samples); i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			loop(i)
		}()
	}
	loop(0)
	wg.Wait()
	h.reset()
	var n, ops int64
	for i := range samples {
		if errs[i] != nil {
			return 0, 0, 0, errs[i]
		}
		h.add(hists[i])
		n += recorded[i]
		ops += ran[i]
	}
	if n > 0 {
		return n, ops, cmd.measure, nil
	}
	last := end
	for i := range samples {
		h.record(over[i])
		last = max(last, overEnd[i])
	}
	return int64(len(samples)), ops, last - start, nil
}
