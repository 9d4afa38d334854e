package swring

import (
	"errors"
	"math"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
)

// heapRings builds an SQ and a CQ on heap memory, with both sides of each.
type heapRings struct {
	mem    []uint64
	reg    Region
	l      Layout
	sqProd Producer
	sqCons Consumer
	cqProd Producer
	cqCons Consumer
}

func newHeapRings(t testing.TB, sq, cq uint32) *heapRings {
	l, err := NewLayout(sq, cq, 4096)
	if err != nil {
		t.Fatal(err)
	}
	mem, reg := heapRegion(l.MinRegionSize)
	h := &heapRings{mem: mem, reg: reg, l: l}
	h.sqProd = Producer{Ring: NewRing("sq", reg, l.SQCtlOffset, l.SQArrayOffset, sq, SQEWords)}
	h.sqCons = Consumer{Ring: NewRing("sq", reg, l.SQCtlOffset, l.SQArrayOffset, sq, SQEWords)}
	h.cqProd = Producer{Ring: NewRing("cq", reg, l.CQCtlOffset, l.CQArrayOffset, cq, CQEWords)}
	h.cqCons = Consumer{Ring: NewRing("cq", reg, l.CQCtlOffset, l.CQArrayOffset, cq, CQEWords)}
	return h
}

// setIndices moves every index (private and shared) of both rings to start.
func (h *heapRings) setIndices(start uint32) {
	for _, p := range []*Producer{&h.sqProd, &h.cqProd} {
		p.tail, p.headCache = start, start
		atomic.StoreUint32(p.Ctl.Head, start)
		atomic.StoreUint32(p.Ctl.Tail, start)
	}
	for _, c := range []*Consumer{&h.sqCons, &h.cqCons} {
		c.head, c.tailCache = start, start
	}
}

func sqe(n uint64) SQE {
	return SQE{Opcode: uint8(n), Flags: 1, Reserved: 2, Peer: uint32(n * 3), UserData: n, BufOffset: n << 20, BufLen: uint32(n), Aux: ^uint32(n), Args: [4]uint64{n, n + 1, math.MaxUint64, 0}}
}

func TestRingEmptyAndFull(t *testing.T) {
	h := newHeapRings(t, 4, 4)
	if n, err := h.sqCons.Refresh(); n != 0 || err != nil {
		t.Fatalf("empty SQ: %d %v", n, err)
	}
	for i := uint64(0); i < 4; i++ {
		if f, _ := h.sqProd.Free(); f == 0 {
			t.Fatalf("full after %d", i)
		}
		e := sqe(i)
		h.sqProd.PushSQE(&e)
	}
	if f, err := h.sqProd.Free(); f != 0 || err != nil {
		t.Fatalf("SQ of 4 not full after 4 pushes: %d %v", f, err)
	}
	// Unpublished entries are invisible.
	if n, _ := h.sqCons.Refresh(); n != 0 {
		t.Fatalf("consumer sees %d unpublished entries", n)
	}
	h.sqProd.Publish()
	if n, _ := h.sqCons.Refresh(); n != 4 {
		t.Fatalf("ready %d, want 4", n)
	}
	if got := h.sqCons.PopSQE(); got != sqe(0) {
		t.Fatalf("popped %+v", got)
	}
	// Popped but not released: still full for the producer.
	if f, _ := h.sqProd.Refresh(); f != 0 {
		t.Fatalf("slot reusable before release")
	}
	h.sqCons.Release()
	if f, _ := h.sqProd.Refresh(); f != 1 {
		t.Fatalf("free %d after release, want 1", f)
	}
}

func TestRingWraparoundAcrossUint32(t *testing.T) {
	h := newHeapRings(t, 4, 8)
	h.setIndices(math.MaxUint32 - 5)
	for i := uint64(0); i < 100; i++ {
		e := sqe(i)
		h.sqProd.PushSQE(&e)
		h.sqProd.Publish()
		if n, err := h.sqCons.Refresh(); n != 1 || err != nil {
			t.Fatalf("step %d: ready %d %v", i, n, err)
		}
		if got := h.sqCons.PopSQE(); got != e {
			t.Fatalf("step %d: %+v != %+v", i, got, e)
		}
		h.sqCons.Release()

		h.cqProd.PushCQE(CQE{UserData: i, Result: -int32(i), Flags: uint32(i)})
		h.cqProd.Publish()
		if n, err := h.cqCons.Refresh(); n != 1 || err != nil {
			t.Fatalf("step %d: cq ready %d %v", i, n, err)
		}
		if got := h.cqCons.PopCQE(); got != (CQE{UserData: i, Result: -int32(i), Flags: uint32(i)}) {
			t.Fatalf("step %d: cqe %+v", i, got)
		}
		h.cqCons.Release()
	}
	if h.sqProd.tail != 94 { // (2^32-1-5+100) mod 2^32
		t.Fatal("tail did not wrap")
	}
}

func TestRingBatching(t *testing.T) {
	h := newHeapRings(t, 32, 32)
	for round := uint64(0); round < 10; round++ {
		for i := uint64(0); i < 32; i++ {
			e := sqe(round*32 + i)
			h.sqProd.PushSQE(&e)
		}
		h.sqProd.Publish()
		n, _ := h.sqCons.Refresh()
		if n != 32 {
			t.Fatalf("round %d: %d ready", round, n)
		}
		for i := uint64(0); i < 32; i++ {
			if got := h.sqCons.PopSQE(); got.UserData != round*32+i {
				t.Fatalf("out of order: %d", got.UserData)
			}
		}
		h.sqCons.Release()
	}
}

func TestRingCorruptIndices(t *testing.T) {
	h := newHeapRings(t, 4, 4)
	// Consumer: tail far ahead, tail backwards.
	atomic.StoreUint32(h.cqCons.Ctl.Tail, 5)
	if _, err := h.cqCons.Refresh(); !errors.Is(err, ErrProtocol) {
		t.Fatalf("tail 5 on a ring of 4 accepted: %v", err)
	}
	atomic.StoreUint32(h.cqCons.Ctl.Tail, math.MaxUint32)
	if _, err := h.cqCons.Refresh(); err == nil {
		t.Fatal("tail moved backwards accepted")
	}
	// A tail that jumps by more than the ring since the last load, even if tail-head looks fine.
	h2 := newHeapRings(t, 4, 4)
	h2.cqCons.head = 10
	h2.cqCons.tailCache = 0
	atomic.StoreUint32(h2.cqCons.Ctl.Tail, 11)
	if _, err := h2.cqCons.Refresh(); err == nil {
		t.Fatal("tail jump accepted")
	}
	// Producer: head ahead of our tail.
	atomic.StoreUint32(h.sqProd.Ctl.Head, 1)
	if _, err := h.sqProd.Refresh(); err == nil {
		t.Fatal("head past tail accepted")
	}
	atomic.StoreUint32(h.sqProd.Ctl.Head, math.MaxUint32-10)
	if _, err := h.sqProd.Refresh(); err == nil {
		t.Fatal("head far behind accepted")
	}
}

func TestSleepHandshakeSingleThread(t *testing.T) {
	h := newHeapRings(t, 4, 4)
	if ok, err := h.cqCons.PrepareSleep(); !ok || err != nil {
		t.Fatalf("PrepareSleep on empty ring: %v %v", ok, err)
	}
	h.cqProd.PushCQE(CQE{UserData: 1})
	if !h.cqProd.Publish() {
		t.Fatal("producer did not see NEED_WAKEUP")
	}
	h.cqCons.FinishSleep()
	h.cqProd.PushCQE(CQE{UserData: 2})
	if h.cqProd.Publish() {
		t.Fatal("producer saw NEED_WAKEUP after FinishSleep")
	}
	if ok, _ := h.cqCons.PrepareSleep(); ok {
		t.Fatal("PrepareSleep with entries ready said sleep")
	}
	if atomic.LoadUint32(h.cqCons.Ctl.Flags) != 0 {
		t.Fatal("flag not cleared")
	}
}

// TestRingModel compares random push/publish/pop/release sequences with a queue model.
func TestRingModel(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for iter := 0; iter < 200; iter++ {
		entries := uint32(1) << (1 + rng.IntN(4))
		h := newHeapRings(t, 2, entries)
		if iter%2 == 1 {
			h.setIndices(math.MaxUint32 - uint32(rng.IntN(40)))
		}
		var next, expect uint64
		var pushed []uint64
		published, unreleased := 0, 0
		for op := 0; op < 400; op++ {
			switch rng.IntN(4) {
			case 0:
				f, err := h.cqProd.Free()
				if err != nil {
					t.Fatal(err)
				}
				occupied := len(pushed) + unreleased
				if (f > 0) != (occupied < int(entries)) {
					t.Fatalf("free %d with %d occupied of %d", f, occupied, entries)
				}
				if f > 0 {
					h.cqProd.PushCQE(CQE{UserData: next})
					pushed = append(pushed, next)
					next++
				}
			case 1:
				h.cqProd.Publish()
				published = len(pushed)
			case 2:
				n, err := h.cqCons.Refresh()
				if err != nil || int(n) != published {
					t.Fatalf("ready %d (%v), model %d", n, err, published)
				}
				if n > 0 {
					if got := h.cqCons.PopCQE(); got.UserData != expect {
						t.Fatalf("got %d, want %d", got.UserData, expect)
					}
					pushed = pushed[1:]
					expect++
					published--
					unreleased++
				}
			case 3:
				h.cqCons.Release()
				unreleased = 0
			}
		}
	}
}

// TestRingConcurrent runs a producer and a consumer goroutine over a small heap ring,
// including the sleep/wake handshake (a channel stands in for the eventfd).
func TestRingConcurrent(t *testing.T) {
	h := newHeapRings(t, 8, 8)
	const total = 20000
	wake := make(chan struct{}, 1)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := uint64(0); i < total; {
			f, err := h.sqProd.Free()
			if err != nil {
				t.Error(err)
				return
			}
			for ; f > 0 && i < total; f-- {
				e := sqe(i)
				h.sqProd.PushSQE(&e)
				i++
			}
			if h.sqProd.Publish() {
				select {
				case wake <- struct{}{}:
				default:
				}
			}
		}
	}()
	var got uint64
	for got < total {
		n, err := h.sqCons.Refresh()
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			if ok, _ := h.sqCons.PrepareSleep(); ok {
				<-wake
				h.sqCons.FinishSleep()
			}
			continue
		}
		for ; n > 0; n-- {
			if e := h.sqCons.PopSQE(); e != sqe(got) {
				t.Fatalf("entry %d: %+v", got, e)
			}
			got++
		}
		h.sqCons.Release()
	}
	wg.Wait()
}
