package wire

import (
	"errors"
	"math"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
)

func newHeapRings(t testing.TB, sq, cq uint32) *HeapRings {
	h, err := NewHeapRings(sq, cq)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func sqe(n uint64) SQE {
	return SQE{Opcode: uint8(n), Flags: 1, Reserved: 2, Peer: uint32(n * 3), UserData: n, BufOffset: n << 20, BufLen: uint32(n), Aux: ^uint32(n), Args: [4]uint64{n, n + 1, math.MaxUint64, 0}}
}

func TestRingEmptyAndFull(t *testing.T) {
	h := newHeapRings(t, 4, 4)
	if n := h.SQCons.Refresh(); n != 0 {
		t.Fatalf("empty SQ: %d", n)
	}
	for i := uint64(0); i < 4; i++ {
		if f, _ := h.SQProd.Free(); f == 0 {
			t.Fatalf("full after %d", i)
		}
		e := sqe(i)
		h.SQProd.PushSQE(&e)
	}
	if f, err := h.SQProd.Free(); f != 0 || err != nil {
		t.Fatalf("SQ of 4 not full after 4 pushes: %d %v", f, err)
	}
	// Unpublished entries are invisible.
	if n := h.SQCons.Refresh(); n != 0 {
		t.Fatalf("consumer sees %d unpublished entries", n)
	}
	h.SQProd.Publish()
	if n := h.SQCons.Refresh(); n != 4 {
		t.Fatalf("ready %d, want 4", n)
	}
	if got := h.SQCons.PopSQE(); got != sqe(0) {
		t.Fatalf("popped %+v", got)
	}
	// Popped but not released: still full for the producer.
	if f, _ := h.SQProd.Refresh(); f != 0 {
		t.Fatalf("slot reusable before release")
	}
	h.SQCons.Release()
	if f, _ := h.SQProd.Refresh(); f != 1 {
		t.Fatalf("free %d after release, want 1", f)
	}
}

func TestRingWraparoundAcrossUint32(t *testing.T) {
	h := newHeapRings(t, 4, 8)
	h.SetIndices(math.MaxUint32 - 5)
	for i := uint64(0); i < 100; i++ {
		e := sqe(i)
		h.SQProd.PushSQE(&e)
		h.SQProd.Publish()
		if n := h.SQCons.Refresh(); n != 1 {
			t.Fatalf("step %d: ready %d", i, n)
		}
		if got := h.SQCons.PopSQE(); got != e {
			t.Fatalf("step %d: %+v != %+v", i, got, e)
		}
		h.SQCons.Release()

		h.CQProd.PushCQE(CQE{UserData: i, Result: -int32(i), Flags: uint16(i)})
		h.CQProd.Publish()
		if n := h.CQCons.Refresh(); n != 1 {
			t.Fatalf("step %d: cq ready %d", i, n)
		}
		if got := h.CQCons.PopCQE(); got != (CQE{UserData: i, Result: -int32(i), Flags: uint16(i)}) {
			t.Fatalf("step %d: cqe %+v", i, got)
		}
		h.CQCons.Release()
	}
	if h.SQProd.tail != 94 { // (2^32-1-5+100) mod 2^32
		t.Fatal("tail did not wrap")
	}
}

func TestRingBatching(t *testing.T) {
	h := newHeapRings(t, 32, 32)
	for round := uint64(0); round < 10; round++ {
		for i := uint64(0); i < 32; i++ {
			e := sqe(round*32 + i)
			h.SQProd.PushSQE(&e)
		}
		h.SQProd.Publish()
		n := h.SQCons.Refresh()
		if n != 32 {
			t.Fatalf("round %d: %d ready", round, n)
		}
		for i := uint64(0); i < 32; i++ {
			if got := h.SQCons.PopSQE(); got.UserData != round*32+i {
				t.Fatalf("out of order: %d", got.UserData)
			}
		}
		h.SQCons.Release()
	}
}

func TestRingCorruptHead(t *testing.T) {
	h := newHeapRings(t, 4, 4)
	// Producer: head ahead of our tail.
	atomic.StoreUint32(h.SQProd.Ctl.Head, 1)
	if _, err := h.SQProd.Refresh(); !errors.Is(err, ErrProtocol) {
		t.Fatalf("head past tail accepted: %v", err)
	}
	atomic.StoreUint32(h.SQProd.Ctl.Head, math.MaxUint32-10)
	if _, err := h.SQProd.Refresh(); err == nil {
		t.Fatal("head far behind accepted")
	}
}

// A slot holding the previous lap's entry, or garbage with the wrong phase, is not ready.
func TestRingPhase(t *testing.T) {
	h := newHeapRings(t, 2, 2)
	for i := uint64(0); i < 2; i++ {
		h.CQProd.PushCQE(CQE{UserData: i})
		h.CQProd.Publish()
	}
	if n := h.CQCons.Refresh(); n != 2 {
		t.Fatalf("ready %d, want 2", n)
	}
	h.CQCons.PopCQE()
	h.CQCons.PopCQE()
	h.CQCons.Release()
	if n := h.CQCons.Refresh(); n != 0 {
		t.Fatalf("previous lap seen as ready: %d", n)
	}
	for i := uint32(2); i < 4; i++ {
		wrong := h.CQCons.phase(i) ^ CtlPhase
		atomic.StoreUint64(&h.CQCons.slot(i)[0], ^uint64(0)&^CtlPhase|wrong)
	}
	if n := h.CQCons.Refresh(); n != 0 {
		t.Fatalf("garbage seen as ready: %d", n)
	}
	if !h.CQCons.PrepareSleep() {
		t.Fatal("refused to sleep on garbage")
	}
}

func TestSleepHandshakeSingleThread(t *testing.T) {
	h := newHeapRings(t, 4, 4)
	if !h.CQCons.PrepareSleep() {
		t.Fatal("PrepareSleep on an empty ring refused")
	}
	h.CQProd.PushCQE(CQE{UserData: 1})
	if !h.CQProd.Publish() {
		t.Fatal("producer did not see NEED_WAKEUP")
	}
	h.CQCons.FinishSleep()
	h.CQProd.PushCQE(CQE{UserData: 2})
	if h.CQProd.Publish() {
		t.Fatal("producer saw NEED_WAKEUP after FinishSleep")
	}
	if h.CQCons.PrepareSleep() {
		t.Fatal("PrepareSleep with entries ready said sleep")
	}
	if atomic.LoadUint32(h.CQCons.Ctl.Flags) != 0 {
		t.Fatal("flag not cleared")
	}
	// A batch signals once, at its publication.
	h.CQCons.Refresh()
	h.CQCons.PopCQE()
	h.CQCons.PopCQE()
	h.CQCons.Release()
	if !h.CQCons.PrepareSleep() {
		t.Fatal("PrepareSleep on an empty ring refused")
	}
	h.CQProd.PushCQE(CQE{UserData: 3})
	h.CQProd.PushCQE(CQE{UserData: 4})
	if !h.CQProd.Publish() {
		t.Fatal("batch publication missed NEED_WAKEUP")
	}
	if n := h.CQCons.Refresh(); n != 2 {
		t.Fatalf("ready %d, want 2", n)
	}
}

// TestRingModel compares random push/publish/pop/release sequences with a queue model.
func TestRingModel(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for iter := 0; iter < 200; iter++ {
		entries := uint32(1) << (1 + rng.IntN(4))
		h := newHeapRings(t, 2, entries)
		if iter%2 == 1 {
			h.SetIndices(math.MaxUint32 - uint32(rng.IntN(40)))
		}
		var next, expect uint64
		var pushed []uint64
		published, unreleased := 0, 0
		for op := 0; op < 400; op++ {
			switch rng.IntN(4) {
			case 0:
				f, err := h.CQProd.Free()
				if err != nil {
					t.Fatal(err)
				}
				occupied := len(pushed) + unreleased
				if (f > 0) != (occupied < int(entries)) {
					t.Fatalf("free %d with %d occupied of %d", f, occupied, entries)
				}
				if f > 0 {
					h.CQProd.PushCQE(CQE{UserData: next})
					pushed = append(pushed, next)
					next++
				}
			case 1:
				h.CQProd.Publish()
				published = len(pushed)
			case 2:
				n := h.CQCons.Refresh()
				if int(n) != published {
					t.Fatalf("ready %d, model %d", n, published)
				}
				if n > 0 {
					if got := h.CQCons.PopCQE(); got.UserData != expect {
						t.Fatalf("got %d, want %d", got.UserData, expect)
					}
					pushed = pushed[1:]
					expect++
					published--
					unreleased++
				}
			case 3:
				h.CQCons.Release()
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
			f, err := h.SQProd.Free()
			if err != nil {
				t.Error(err)
				return
			}
			for ; f > 0 && i < total; f-- {
				e := sqe(i)
				h.SQProd.PushSQE(&e)
				i++
			}
			if h.SQProd.Publish() {
				select {
				case wake <- struct{}{}:
				default:
				}
			}
		}
	}()
	var got uint64
	for got < total {
		n := h.SQCons.Refresh()
		if n == 0 {
			if h.SQCons.PrepareSleep() {
				<-wake
				h.SQCons.FinishSleep()
			}
			continue
		}
		for ; n > 0; n-- {
			if e := h.SQCons.PopSQE(); e != sqe(got) {
				t.Fatalf("entry %d: %+v", got, e)
			}
			got++
		}
		h.SQCons.Release()
	}
	wg.Wait()
}

// The ring hot path on heap memory: push+publish, pop+release.
func BenchmarkRingRoundTrip(b *testing.B) {
	h := newHeapRings(b, 64, 64)
	e := SQE{Opcode: OpNop}
	b.ReportAllocs()
	for b.Loop() {
		h.SQProd.Free()
		h.SQProd.PushSQE(&e)
		h.SQProd.Publish()
		h.SQCons.Refresh()
		h.SQCons.PopSQE()
		h.SQCons.Release()
		h.CQProd.Free()
		h.CQProd.PushCQE(CQE{UserData: 1})
		h.CQProd.Publish()
		h.CQCons.Refresh()
		h.CQCons.PopCQE()
		h.CQCons.Release()
	}
}
