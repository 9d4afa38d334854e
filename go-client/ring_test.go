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
	reg    region
	l      Layout
	sqProd producer
	sqCons consumer
	cqProd producer
	cqCons consumer
}

func newHeapRings(t testing.TB, sq, cq uint32) *heapRings {
	l, err := NewLayout(sq, cq, 4096)
	if err != nil {
		t.Fatal(err)
	}
	mem, reg := heapRegion(l.MinRegionSize)
	h := &heapRings{mem: mem, reg: reg, l: l}
	h.sqProd = producer{ring: newRing("sq", reg, l.SQCtlOffset, l.SQArrayOffset, sq, sqeWords)}
	h.sqCons = consumer{ring: newRing("sq", reg, l.SQCtlOffset, l.SQArrayOffset, sq, sqeWords)}
	h.cqProd = producer{ring: newRing("cq", reg, l.CQCtlOffset, l.CQArrayOffset, cq, cqeWords)}
	h.cqCons = consumer{ring: newRing("cq", reg, l.CQCtlOffset, l.CQArrayOffset, cq, cqeWords)}
	return h
}

// setIndices moves every index (private and shared) of both rings to start.
func (h *heapRings) setIndices(start uint32) {
	for _, p := range []*producer{&h.sqProd, &h.cqProd} {
		p.tail, p.headCache = start, start
		atomic.StoreUint32(p.ctl.head, start)
		atomic.StoreUint32(p.ctl.tail, start)
	}
	for _, c := range []*consumer{&h.sqCons, &h.cqCons} {
		c.head, c.tailCache = start, start
	}
}

func sqe(n uint64) SQE {
	return SQE{Opcode: uint8(n), Flags: 1, Reserved: 2, Peer: uint32(n * 3), UserData: n, BufOffset: n << 20, BufLen: uint32(n), Aux: ^uint32(n), Args: [4]uint64{n, n + 1, math.MaxUint64, 0}}
}

func TestRingEmptyAndFull(t *testing.T) {
	h := newHeapRings(t, 4, 4)
	if n, err := h.sqCons.refresh(); n != 0 || err != nil {
		t.Fatalf("empty SQ: %d %v", n, err)
	}
	for i := uint64(0); i < 4; i++ {
		if f, _ := h.sqProd.free(); f == 0 {
			t.Fatalf("full after %d", i)
		}
		e := sqe(i)
		h.sqProd.pushSQE(&e)
	}
	if f, err := h.sqProd.free(); f != 0 || err != nil {
		t.Fatalf("SQ of 4 not full after 4 pushes: %d %v", f, err)
	}
	// Unpublished entries are invisible.
	if n, _ := h.sqCons.refresh(); n != 0 {
		t.Fatalf("consumer sees %d unpublished entries", n)
	}
	h.sqProd.publish()
	if n, _ := h.sqCons.refresh(); n != 4 {
		t.Fatalf("ready %d, want 4", n)
	}
	if got := h.sqCons.popSQE(); got != sqe(0) {
		t.Fatalf("popped %+v", got)
	}
	// Popped but not released: still full for the producer.
	if f, _ := h.sqProd.refresh(); f != 0 {
		t.Fatalf("slot reusable before release")
	}
	h.sqCons.release()
	if f, _ := h.sqProd.refresh(); f != 1 {
		t.Fatalf("free %d after release, want 1", f)
	}
}

func TestRingWraparoundAcrossUint32(t *testing.T) {
	h := newHeapRings(t, 4, 8)
	h.setIndices(math.MaxUint32 - 5)
	for i := uint64(0); i < 100; i++ {
		e := sqe(i)
		h.sqProd.pushSQE(&e)
		h.sqProd.publish()
		if n, err := h.sqCons.refresh(); n != 1 || err != nil {
			t.Fatalf("step %d: ready %d %v", i, n, err)
		}
		if got := h.sqCons.popSQE(); got != e {
			t.Fatalf("step %d: %+v != %+v", i, got, e)
		}
		h.sqCons.release()

		h.cqProd.pushCQE(CQE{UserData: i, Result: -int32(i), Flags: uint32(i)})
		h.cqProd.publish()
		if n, err := h.cqCons.refresh(); n != 1 || err != nil {
			t.Fatalf("step %d: cq ready %d %v", i, n, err)
		}
		if got := h.cqCons.popCQE(); got != (CQE{UserData: i, Result: -int32(i), Flags: uint32(i)}) {
			t.Fatalf("step %d: cqe %+v", i, got)
		}
		h.cqCons.release()
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
			h.sqProd.pushSQE(&e)
		}
		h.sqProd.publish()
		n, _ := h.sqCons.refresh()
		if n != 32 {
			t.Fatalf("round %d: %d ready", round, n)
		}
		for i := uint64(0); i < 32; i++ {
			if got := h.sqCons.popSQE(); got.UserData != round*32+i {
				t.Fatalf("out of order: %d", got.UserData)
			}
		}
		h.sqCons.release()
	}
}

func TestRingCorruptIndices(t *testing.T) {
	h := newHeapRings(t, 4, 4)
	// Consumer: tail far ahead, tail backwards.
	atomic.StoreUint32(h.cqCons.ctl.tail, 5)
	if _, err := h.cqCons.refresh(); !errors.Is(err, ErrProtocol) {
		t.Fatalf("tail 5 on a ring of 4 accepted: %v", err)
	}
	atomic.StoreUint32(h.cqCons.ctl.tail, math.MaxUint32)
	if _, err := h.cqCons.refresh(); err == nil {
		t.Fatal("tail moved backwards accepted")
	}
	// A tail that jumps by more than the ring since the last load, even if tail-head looks fine.
	h2 := newHeapRings(t, 4, 4)
	h2.cqCons.head = 10
	h2.cqCons.tailCache = 0
	atomic.StoreUint32(h2.cqCons.ctl.tail, 11)
	if _, err := h2.cqCons.refresh(); err == nil {
		t.Fatal("tail jump accepted")
	}
	// Producer: head ahead of our tail.
	atomic.StoreUint32(h.sqProd.ctl.head, 1)
	if _, err := h.sqProd.refresh(); err == nil {
		t.Fatal("head past tail accepted")
	}
	atomic.StoreUint32(h.sqProd.ctl.head, math.MaxUint32-10)
	if _, err := h.sqProd.refresh(); err == nil {
		t.Fatal("head far behind accepted")
	}
}

func TestSleepHandshakeSingleThread(t *testing.T) {
	h := newHeapRings(t, 4, 4)
	if ok, err := h.cqCons.prepareSleep(); !ok || err != nil {
		t.Fatalf("prepareSleep on empty ring: %v %v", ok, err)
	}
	h.cqProd.pushCQE(CQE{UserData: 1})
	if !h.cqProd.publish() {
		t.Fatal("producer did not see NEED_WAKEUP")
	}
	h.cqCons.finishSleep()
	h.cqProd.pushCQE(CQE{UserData: 2})
	if h.cqProd.publish() {
		t.Fatal("producer saw NEED_WAKEUP after finishSleep")
	}
	if ok, _ := h.cqCons.prepareSleep(); ok {
		t.Fatal("prepareSleep with entries ready said sleep")
	}
	if atomic.LoadUint32(h.cqCons.ctl.flags) != 0 {
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
				f, err := h.cqProd.free()
				if err != nil {
					t.Fatal(err)
				}
				occupied := len(pushed) + unreleased
				if (f > 0) != (occupied < int(entries)) {
					t.Fatalf("free %d with %d occupied of %d", f, occupied, entries)
				}
				if f > 0 {
					h.cqProd.pushCQE(CQE{UserData: next})
					pushed = append(pushed, next)
					next++
				}
			case 1:
				h.cqProd.publish()
				published = len(pushed)
			case 2:
				n, err := h.cqCons.refresh()
				if err != nil || int(n) != published {
					t.Fatalf("ready %d (%v), model %d", n, err, published)
				}
				if n > 0 {
					if got := h.cqCons.popCQE(); got.UserData != expect {
						t.Fatalf("got %d, want %d", got.UserData, expect)
					}
					pushed = pushed[1:]
					expect++
					published--
					unreleased++
				}
			case 3:
				h.cqCons.release()
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
			f, err := h.sqProd.free()
			if err != nil {
				t.Error(err)
				return
			}
			for ; f > 0 && i < total; f-- {
				e := sqe(i)
				h.sqProd.pushSQE(&e)
				i++
			}
			if h.sqProd.publish() {
				select {
				case wake <- struct{}{}:
				default:
				}
			}
		}
	}()
	var got uint64
	for got < total {
		n, err := h.sqCons.refresh()
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			if ok, _ := h.sqCons.prepareSleep(); ok {
				<-wake
				h.sqCons.finishSleep()
			}
			continue
		}
		for ; n > 0; n-- {
			if e := h.sqCons.popSQE(); e != sqe(got) {
				t.Fatalf("entry %d: %+v", got, e)
			}
			got++
		}
		h.sqCons.release()
	}
	wg.Wait()
}
