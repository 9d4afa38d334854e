package main

import (
	"errors"
	"math/bits"
	"testing"
	"time"
)

// The bucket layout is HdrHistogram's for 3 significant digits: exact below 2048, then
// 1024 buckets per power of two, each 2^(k-10) wide for values in [2^k, 2^(k+1)).
func TestBucketsMatchHdrHistogramLayout(t *testing.T) {
	for _, v := range []int64{1, 2, 100, 2047, 2048, 2049, 2050, 4095, 4096, 4100, 123456, 999_999_999, highestNs} {
		i := bucketIndex(v)
		lo := bucketFloor(i)
		width := int64(1)
		if v >= 2048 {
			width = int64(1) << (bits.Len64(uint64(v)) - 11)
		}
		if lo > v || v >= lo+width || lo%width != 0 {
			t.Errorf("value %d: bucket %d starts at %d, width %d", v, i, lo, width)
		}
		if bucketIndex(lo) != i || bucketIndex(lo+width-1) != i || bucketIndex(lo+width) != i+1 {
			t.Errorf("value %d: bucket %d [%d, %d) is not contiguous", v, i, lo, lo+width)
		}
	}
	// Every bucket's floor maps back to the bucket, in order.
	prev := int64(-1)
	for i := 0; i <= bucketIndex(highestNs); i++ {
		lo := bucketFloor(i)
		if lo <= prev || bucketIndex(lo) != i {
			t.Fatalf("bucket %d: floor %d (previous %d) maps to %d", i, lo, prev, bucketIndex(lo))
		}
		prev = lo
	}
}

func TestHistogramClampsAndLists(t *testing.T) {
	h := newHistogram()
	h.record(0)
	h.record(1)
	h.record(5000)
	h.record(5001)
	h.record(highestNs * 2)
	got := h.buckets()
	want := [][2]int64{{1, 2}, {5000, 2}, {bucketFloor(bucketIndex(highestNs)), 1}}
	if len(got) != len(want) {
		t.Fatalf("buckets %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("buckets %v, want %v", got, want)
		}
	}
	if h.total != 5 {
		t.Fatalf("total %d", h.total)
	}
	h.reset()
	if len(h.buckets()) != 0 || h.total != 0 {
		t.Fatal("reset left counts")
	}
}

func TestParseCommand(t *testing.T) {
	cmd, quit, err := parseCommand("block nop 15000000 120000000")
	if err != nil || quit || cmd.kind != "nop" || cmd.warmup != 15*time.Millisecond || cmd.measure != 120*time.Millisecond {
		t.Fatalf("%+v %v %v", cmd, quit, err)
	}
	if _, quit, err := parseCommand("quit"); !quit || err != nil {
		t.Fatal("quit not recognized")
	}
	for _, k := range []string{"needle-ring", "needle-http", "reader-ring", "reader-http", "batch"} {
		if cmd, _, err := parseCommand("block " + k + " 0 1"); err != nil || cmd.kind != k {
			t.Errorf("%s: %+v %v", k, cmd, err)
		}
	}
	for _, bad := range []string{"", "block", "block foo 1 1", "block needle 1 1", "block nop x 1", "block nop 1 0", "block nop -1 5", "go nop 1 1"} {
		if _, _, err := parseCommand(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestRunBlockRecordsEverySample(t *testing.T) {
	h := newHistogram()
	calls := 0
	n, ops, elapsed, err := runBlock(blockCommand{kind: "nop", warmup: time.Millisecond, measure: 5 * time.Millisecond}, h, func() error {
		calls++
		return nil
	})
	if err != nil || n != h.total || int64(calls) <= n || int64(calls) != ops || elapsed < 5*time.Millisecond {
		t.Fatalf("n %d total %d calls %d ops %d elapsed %v err %v", n, h.total, calls, ops, elapsed, err)
	}
	boom := errors.New("boom")
	if _, _, _, err := runBlock(blockCommand{measure: time.Millisecond}, h, func() error { return boom }); err != boom {
		t.Fatalf("error not passed on: %v", err)
	}
}

func TestParseSize(t *testing.T) {
	for s, want := range map[string]int{"4k": 4096, "64K": 65536, "1m": 1 << 20, "512": 512, " 2k": 2048} {
		if got, err := parseSize(s); err != nil || got != want {
			t.Errorf("%q: %d %v, want %d", s, got, err, want)
		}
	}
	for _, bad := range []string{"", "k", "-1k", "0", "4g", "2000m", "x4k"} {
		if _, err := parseSize(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// Every goroutine of a concurrent block reads, each into its own histogram, and the block's
// histogram holds exactly the reads that ended in the measured window.
func TestRunConcurrentRunsEveryGoroutine(t *testing.T) {
	const n = 6
	calls := make([]int64, n)
	samples := make([]func() error, n)
	hists := make([]*histogram, n)
	for i := range samples {
		samples[i] = func() error {
			calls[i]++
			time.Sleep(100 * time.Microsecond) // a read in flight, so that the others run
			return nil
		}
		hists[i] = newHistogram()
		hists[i].record(1) // a stale count from an earlier block: reset
	}
	h := newHistogram()
	cmd := blockCommand{kind: "needle-http", warmup: 2 * time.Millisecond, measure: 300 * time.Millisecond}
	recorded, ops, elapsed, err := runConcurrent(cmd, h, hists, samples)
	if err != nil || elapsed != cmd.measure || recorded == 0 || recorded != h.total || ops <= recorded {
		t.Fatalf("recorded %d (histogram %d) ops %d elapsed %v err %v", recorded, h.total, ops, elapsed, err)
	}
	var sum, inHists int64
	for i := range calls {
		if calls[i] == 0 || hists[i].total == 0 {
			t.Errorf("goroutine %d: %d reads, %d recorded", i, calls[i], hists[i].total)
		}
		sum += calls[i]
		inHists += hists[i].total
	}
	if sum != ops || inHists != recorded {
		t.Fatalf("reads %d, ops %d; per-goroutine histograms %d, recorded %d", sum, ops, inHists, recorded)
	}

	// One goroutine's error ends the block, and is the block's.
	boom := errors.New("boom")
	samples[3] = func() error { return boom }
	if _, _, _, err := runConcurrent(cmd, h, hists, samples); err != boom {
		t.Fatalf("error not passed on: %v", err)
	}
}

// A window no read ends in (every read outlasts it) still answers with samples: each
// goroutine's first read after the window, over the time up to the last of them.
func TestRunConcurrentWindowWithoutReads(t *testing.T) {
	const n = 3
	samples := make([]func() error, n)
	hists := make([]*histogram, n)
	for i := range samples {
		samples[i] = func() error { time.Sleep(20 * time.Millisecond); return nil }
		hists[i] = newHistogram()
	}
	h := newHistogram()
	cmd := blockCommand{kind: "needle-http", warmup: 0, measure: time.Millisecond}
	recorded, ops, elapsed, err := runConcurrent(cmd, h, hists, samples)
	if err != nil || recorded != n || h.total != n || ops != n || elapsed < 20*time.Millisecond {
		t.Fatalf("recorded %d (histogram %d) ops %d elapsed %v err %v", recorded, h.total, ops, elapsed, err)
	}
}
