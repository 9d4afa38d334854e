package ring

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/seaweed-ring/seaweed-ring/go-client/internal/wire"
)

// Tests of the batch records (client.go, "Batches"): the requests of one publication share
// a record that is completed, collected and freed as a unit.

// heapEngine plays the engine of a heap client (newHeapClient) from one goroutine: it takes
// the published SQEs and completes the ones the test picks, in the order it picks.
type heapEngine struct {
	h    *wire.HeapRings
	held []wire.SQE
}

// take waits until n more SQEs have been published and holds them.
func (e *heapEngine) take(t testing.TB, n int) {
	deadline := time.Now().Add(10 * time.Second)
	for want := len(e.held) + n; len(e.held) < want; {
		k := e.h.SQCons.Refresh()
		for range k {
			e.held = append(e.held, e.h.SQCons.PopSQE())
		}
		e.h.SQCons.Release()
		if k == 0 {
			if time.Now().After(deadline) {
				t.Errorf("engine: %d SQEs, waited for %d", len(e.held), want)
				return
			}
			time.Sleep(10 * time.Microsecond)
		}
	}
}

// complete publishes one CQE for each held SQE for which pick is true (result res(sqe)),
// in the order they are held, as one publication, and drops them.
func (e *heapEngine) complete(pick func(wire.SQE) bool, res func(wire.SQE) int32) {
	kept := e.held[:0]
	for _, q := range e.held {
		if pick(q) {
			e.h.CQProd.PushCQE(wire.CQE{UserData: q.UserData, Result: res(q)})
		} else {
			kept = append(kept, q)
		}
	}
	e.held = kept
	e.h.CQProd.Publish()
}

// auxResult completes a request with its SQE's Aux as the result.
func auxResult(q wire.SQE) int32 { return int32(q.Aux) }

// spinningHeapClient is newHeapClient whose leaders never sleep (heap rings have no CQ
// doorbell to sleep on).
func spinningHeapClient(t testing.TB, nslots int) (*Client, *heapEngine) {
	c, h := newHeapClient(t, nslots)
	c.cfg.spin = time.Hour
	return c, &heapEngine{h: h}
}

// nopsAux returns n NOPs whose Aux is first, first+1, ... (the heap engine's result).
func nopsAux(n, first int) []Request {
	reqs := make([]Request, n)
	for i := range reqs {
		reqs[i] = Request{Opcode: OpNop, Aux: uint32(first + i)}
	}
	return reqs
}

func submitAll(t testing.TB, c *Client, reqs []Request) []Ticket {
	t.Helper()
	ts := make([]Ticket, len(reqs))
	if n, err := c.SubmitBatch(testCtx(t), reqs, ts); err != nil || n != len(reqs) {
		t.Fatalf("SubmitBatch: %d of %d, %v", n, len(reqs), err)
	}
	return ts
}

// Completions in any order, spread over several publications, interleaving the requests of
// three batches (two records of one SubmitBatch of 40, a single Submit, a batch of 20):
// every Wait, in an order of its own, gets its request's result, and every slot comes back.
func TestBatchOutOfOrder(t *testing.T) {
	for seed := uint64(1); seed <= 20; seed++ {
		c, e := spinningHeapClient(t, 128)
		rng := rand.New(rand.NewPCG(seed, 7))
		var ts []Ticket
		ts = append(ts, submitAll(t, c, nopsAux(40, 0))...)
		tk, err := c.Submit(testCtx(t), &Request{Opcode: OpNop, Aux: 40})
		if err != nil {
			t.Fatal(err)
		}
		ts = append(ts, tk)
		ts = append(ts, submitAll(t, c, nopsAux(20, 41))...)
		done := make(chan struct{})
		go func() {
			defer close(done)
			e.take(t, len(ts))
			order := rng.Perm(len(ts))
			for len(order) > 0 {
				k := min(len(order), 1+rng.IntN(12))
				pick := map[uint32]bool{}
				for _, i := range order[:k] {
					pick[uint32(i)] = true
				}
				order = order[k:]
				e.complete(func(q wire.SQE) bool { return pick[q.Aux] }, auxResult)
				time.Sleep(time.Duration(rng.IntN(50)) * time.Microsecond)
			}
		}()
		waitOrder := rand.New(rand.NewPCG(seed, 8)).Perm(len(ts))
		for _, i := range waitOrder {
			res, err := ts[i].Wait(testCtx(t))
			if err != nil || res != int32(i) {
				t.Fatalf("seed %d: ticket %d: %d, %v", seed, i, res, err)
			}
		}
		<-done
		for _, i := range waitOrder[:5] {
			if _, err := ts[i].Wait(testCtx(t)); !errors.Is(err, errWaited) {
				t.Fatalf("second Wait of ticket %d: %v", i, err)
			}
		}
		if n := freeSlots(t, c); n != 128 {
			t.Fatalf("seed %d: %d of 128 slots free", seed, n)
		}
		if stray, done := c.nStray.Load(), c.nCompleted.Load(); stray != 0 || done != uint64(len(ts)) {
			t.Fatalf("%d stray, %d completed", stray, done)
		}
	}
}

// Requests of a batch that fail: each Wait gets its ResultError, WaitAll the first error
// while still collecting every ticket, and the batch's slots come back.
func TestBatchFailures(t *testing.T) {
	c, e := spinningHeapClient(t, 64)
	ctx := testCtx(t)
	// The engine fails the requests whose Aux is odd (result -3: ErrOutOfBounds), and every
	// request of the second batch.
	res := func(q wire.SQE) int32 {
		if q.Aux%2 == 1 || q.Aux >= 100 {
			return int32(ErrOutOfBounds)
		}
		return int32(q.Aux)
	}
	a := submitAll(t, c, nopsAux(16, 0))
	b := submitAll(t, c, nopsAux(8, 100))
	e.take(t, 24)
	e.complete(func(wire.SQE) bool { return true }, res)
	for i, tk := range a {
		r, err := tk.Wait(ctx)
		if i%2 == 1 {
			if !errors.Is(err, ErrOutOfBounds) || r != int32(ErrOutOfBounds) {
				t.Fatalf("ticket %d: %d, %v; want ErrOutOfBounds", i, r, err)
			}
		} else if err != nil || r != int32(i) {
			t.Fatalf("ticket %d: %d, %v", i, r, err)
		}
	}
	if err := WaitAll(ctx, b); !errors.Is(err, ErrOutOfBounds) {
		t.Fatalf("WaitAll of a failed batch: %v", err)
	}
	for i, tk := range b {
		if _, err := tk.Wait(ctx); !errors.Is(err, errWaited) {
			t.Fatalf("ticket %d after WaitAll: %v, want it collected", i, err)
		}
	}
	// A batch with one failure in the middle: WaitAll reports it, collects all.
	d := submitAll(t, c, nopsAux(8, 200))
	e.take(t, 8)
	e.complete(func(wire.SQE) bool { return true }, func(q wire.SQE) int32 {
		if q.Aux == 203 {
			return int32(ErrInternal)
		}
		return 0
	})
	if err := WaitAll(ctx, d); !errors.Is(err, ErrInternal) {
		t.Fatalf("WaitAll: %v, want ErrInternal", err)
	}
	if n := freeSlots(t, c); n != 64 {
		t.Fatalf("%d of 64 slots free", n)
	}
}

// The slots of a batch stay taken until every request of it has completed and been
// collected or abandoned: collecting the others, or giving up on the pending one, frees
// nothing, and no new request gets a slot of the batch meanwhile.
func TestBatchSlotsNotReusedWhilePending(t *testing.T) {
	c, e := spinningHeapClient(t, 40)
	ctx := testCtx(t)
	a := submitAll(t, c, nopsAux(32, 0))
	e.take(t, 32)
	e.complete(func(q wire.SQE) bool { return q.Aux != 5 }, auxResult)
	for i, tk := range a {
		if i == 5 {
			continue
		}
		if r, err := tk.Wait(ctx); err != nil || r != int32(i) {
			t.Fatalf("ticket %d: %d, %v", i, r, err)
		}
	}
	// Request 5 is owed: the reaper may be leading until its completion, holding cqMu (a
	// waiter's hand-off kicks it), so count without cqMu.
	if n := freeOnStacks(t, c); n != 8 {
		t.Fatalf("%d slots free with a batch of 32 of 40 pending, want 8", n)
	}
	// Request 5 is given up on: its slot (and the batch's) stay taken until its completion.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := a[5].Wait(cctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("abandoned wait: %v", err)
	}
	batch := map[uint32]bool{}
	for _, tk := range a {
		batch[tk.idx] = true
	}
	var singles []Ticket
	for i := 0; i < 8; i++ {
		tk, err := c.Submit(ctx, &Request{Opcode: OpNop, Aux: uint32(100 + i)})
		if err != nil {
			t.Fatal(err)
		}
		if batch[tk.idx] {
			t.Fatalf("slot %d of the pending batch reused", tk.idx)
		}
		singles = append(singles, tk)
	}
	sctx, scancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer scancel()
	if tk, err := c.Submit(sctx, &Request{Opcode: OpNop}); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("a 41st request got slot %d (%v)", tk.idx, err)
	}
	e.take(t, 8)
	e.complete(func(q wire.SQE) bool { return true }, auxResult) // the singles and request 5
	for i, tk := range singles {
		if r, err := tk.Wait(ctx); err != nil || r != int32(100+i) {
			t.Fatalf("single %d: %d, %v", i, r, err)
		}
	}
	// The batch comes back whole once the leader (or reaper) reaped request 5's completion.
	deadline := time.Now().Add(10 * time.Second)
	for freeSlots(t, c) != 40 {
		if time.Now().After(deadline) {
			t.Fatalf("%d of 40 slots free after the last completion", freeSlots(t, c))
		}
		c.kickReaper()
		time.Sleep(time.Millisecond)
	}
}

// Several goroutines wait for the requests of one batch at once: one leads, the others park
// on their slots; the completions come out of order, some waiters give up. Each gets its
// own result (or its ctx error), and the batch is freed once the last completion is reaped.
func TestBatchWaitersParked(t *testing.T) {
	for round := 0; round < 20; round++ {
		c, e := spinningHeapClient(t, 64)
		ctx := testCtx(t)
		ts := submitAll(t, c, nopsAux(16, 0))
		var wg sync.WaitGroup
		errs := make(chan error, len(ts))
		for i, tk := range ts {
			wg.Add(1)
			go func() {
				defer wg.Done()
				wctx := ctx
				if i%5 == 4 {
					var cancel context.CancelFunc
					wctx, cancel = context.WithTimeout(ctx, time.Duration(i)*50*time.Microsecond)
					defer cancel()
				}
				r, err := tk.Wait(wctx)
				switch {
				case i%5 == 4 && errors.Is(err, context.DeadlineExceeded):
				case err != nil || r != int32(i):
					errs <- err
					if err == nil {
						errs <- errors.New("wrong result")
					}
				}
			}()
		}
		e.take(t, 16)
		for i := 15; i >= 0; i -= 3 { // reverse order, a few per publication
			lo := max(i-2, 0)
			e.complete(func(q wire.SQE) bool { return int(q.Aux) >= lo && int(q.Aux) <= i }, auxResult)
			time.Sleep(100 * time.Microsecond)
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatalf("round %d: %v", round, err)
		}
		deadline := time.Now().Add(10 * time.Second)
		for freeSlots(t, c) != 64 {
			if time.Now().After(deadline) {
				t.Fatalf("round %d: %d of 64 slots free", round, freeSlots(t, c))
			}
			c.kickReaper()
			time.Sleep(time.Millisecond)
		}
	}
}

// Many goroutines collect requests of one batch at the same moment (all its completions in
// one publication): their CASes of the record's gone word collide, and each retry must
// keep the others' bits, or the batch is never freed.
func TestBatchCollectContended(t *testing.T) {
	c, e := spinningHeapClient(t, 64)
	ctx := testCtx(t)
	const waiters = 8
	for round := 0; round < 300; round++ {
		ts := submitAll(t, c, nopsAux(32, 0))
		var wg sync.WaitGroup
		var started sync.WaitGroup
		started.Add(waiters)
		errs := make(chan error, 32)
		for g := 0; g < waiters; g++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				started.Done()
				for i := g; i < 32; i += waiters {
					if r, err := ts[i].Wait(ctx); err != nil || r != int32(i) {
						errs <- fmt.Errorf("ticket %d: %d, %v", i, r, err)
					}
				}
			}()
		}
		started.Wait()
		e.take(t, 32)
		e.complete(func(wire.SQE) bool { return true }, auxResult)
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatalf("round %d: %v", round, err)
		}
		if n := freeSlots(t, c); n != 64 {
			t.Fatalf("round %d: %d of 64 slots free", round, n)
		}
	}
}

// Batches from several goroutines at once against the fake engine, with just enough slots
// for every goroutine's largest batch (so that slots are reused all the time), waited for
// every way: each ticket in its own order, WaitAll, half handed to another goroutine, some
// given up. FILL results are the byte counts, distinct within a batch, so a result handed
// to the wrong ticket shows. (Fewer slots could deadlock: a SubmitBatch waiting for slots
// holds uncollected tickets of its own, as it would with any slot bookkeeping.)
func TestBatchConcurrentGoroutines(t *testing.T) {
	_, path := startFake(t, nil)
	const goroutines, rounds, most = 6, 150, 40
	c := dialT(t, path, WithMaxInFlight(goroutines*most), WithSpin(10*time.Microsecond))
	ctx := testCtx(t)
	var wg sync.WaitGroup
	var abandoned atomic.Int64
	for g := 0; g < goroutines; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(g), 1))
			buf, err := c.AllocBuffer(ctx, 4096)
			if err != nil {
				t.Error(err)
				return
			}
			defer buf.Release()
			for r := 0; r < rounds; r++ {
				n := 1 + rng.IntN(most) // above 32: two records
				reqs := make([]Request, n)
				for i := range reqs {
					reqs[i] = Request{Opcode: OpFill, Buf: buf, BufOffset: uint64(i * 64), BufLen: uint32(1 + i), Aux: uint32(g)}
				}
				ts := make([]Ticket, n)
				if k, err := c.SubmitBatch(ctx, reqs, ts); err != nil || k != n {
					t.Errorf("goroutine %d: SubmitBatch %d of %d: %v", g, k, n, err)
					return
				}
				check := func(i int, res int32, err error) {
					if err != nil || res != int32(1+i) {
						t.Errorf("goroutine %d round %d ticket %d: %d, %v", g, r, i, res, err)
					}
				}
				switch r % 4 {
				case 0: // each ticket, in a shuffled order
					for _, i := range rng.Perm(n) {
						res, err := ts[i].Wait(ctx)
						check(i, res, err)
					}
				case 1:
					if err := WaitAll(ctx, ts); err != nil {
						t.Errorf("goroutine %d: WaitAll: %v", g, err)
					}
				case 2: // the odd ones waited for by another goroutine, at the same time
					var hw sync.WaitGroup
					start := make(chan struct{})
					hw.Add(1)
					go func() {
						defer hw.Done()
						<-start
						for i := 1; i < n; i += 2 {
							res, err := ts[i].Wait(ctx)
							check(i, res, err)
						}
					}()
					close(start)
					for i := 0; i < n; i += 2 {
						res, err := ts[i].Wait(ctx)
						check(i, res, err)
					}
					hw.Wait()
				case 3: // every other one given up at once
					cctx, cancel := context.WithCancel(ctx)
					cancel()
					for i := range ts {
						if i%2 == 1 {
							if _, err := ts[i].Wait(cctx); err == nil {
								continue // completed already: collected
							} else if !errors.Is(err, context.Canceled) {
								t.Errorf("abandoned wait: %v", err)
							}
							abandoned.Add(1)
							continue
						}
						res, err := ts[i].Wait(ctx)
						check(i, res, err)
					}
				}
				if t.Failed() {
					return
				}
			}
		}(g)
	}
	wg.Wait()
	deadline := time.Now().Add(10 * time.Second)
	for {
		s := c.Stats()
		if freeSlots(t, c) == c.MaxInFlight() && s.Completed == s.Submitted && s.Buffers.Allocations == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d/%d slots free, stats %+v", freeSlots(t, c), c.MaxInFlight(), s)
		}
		time.Sleep(time.Millisecond)
	}
	if s := c.Stats(); s.Stray != 0 {
		t.Fatalf("stray completions: %+v", s)
	}
	t.Logf("%d requests, %d abandoned", c.Stats().Submitted, abandoned.Load())
}

// Close with batches in flight that the engine never completes: every waiter (leading,
// parked, in WaitAll, or arriving after Close) gets ErrClosed, and a waiter's slot is not
// handed out again before its request was failed.
func TestBatchCloseInFlight(t *testing.T) {
	gate := make(chan struct{})
	defer close(gate)
	_, path := startFake(t, func(e *fakeEngine) { e.SendGate = gate })
	c := dialT(t, path, WithCloseTimeout(20*time.Millisecond), WithBufferSize(1<<20))
	ctx := testCtx(t)
	p := connectPeer(t, c, "10.0.0.1:1")
	req, err := c.AllocBuffer(ctx, 64)
	if err != nil {
		t.Fatal(err)
	}
	defer req.Release()
	resp, err := c.AllocBuffer(ctx, 64)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Release()
	send := SendRequest(p, ServiceEcho, req, resp)
	var batches [][]Ticket
	for range 3 {
		batches = append(batches, submitAll(t, c, slices.Repeat([]Request{send}, 12)))
	}
	errs := make(chan error, 64)
	var wg sync.WaitGroup
	for _, tk := range batches[0] { // one goroutine per ticket: one leads, the others park
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := tk.Wait(ctx)
			errs <- err
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		errs <- WaitAll(ctx, batches[1])
	}()
	time.Sleep(20 * time.Millisecond) // let them lead and park
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	close(errs)
	n := 0
	for err := range errs {
		if !errors.Is(err, ErrClosed) {
			t.Errorf("waiter: %v, want ErrClosed", err)
		}
		n++
	}
	if n != 13 {
		t.Fatalf("%d waiters returned", n)
	}
	for i, tk := range batches[2] { // waited for after Close
		if _, err := tk.Wait(ctx); !errors.Is(err, ErrClosed) {
			t.Fatalf("ticket %d after Close: %v", i, err)
		}
	}
	if n := freeSlots(t, c); n != c.MaxInFlight() {
		t.Fatalf("%d of %d slots free after Close", n, c.MaxInFlight())
	}
}
