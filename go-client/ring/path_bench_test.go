package ring

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"

	"github.com/seaweed-ring/seaweed-ring/go-client/internal/wire"
)

// The client's own cost per request, without an engine process: the benchmark plays the
// engine inline (pop the SQE, push its CQE) between Submit and Wait, on heap rings. What it
// measures is what one round trip costs the client's thread beyond the engine's work and
// the cross-core transfers.

func newHeapClient(b testing.TB, nslots int) (*Client, *wire.HeapRings) {
	h, err := wire.NewHeapRings(64, 128)
	if err != nil {
		b.Fatal(err)
	}
	atomic.StoreUint32(h.Reg.U32(wire.OffState), uint32(wire.StateReady))
	c := &Client{
		cfg:        defaultConfig(),
		reg:        h.Reg,
		layout:     h.L,
		sq:         h.SQProd,
		cq:         h.CQCons,
		slotFreed:  make(chan struct{}, 1),
		reapTok:    make(chan struct{}, 1),
		downCh:     make(chan struct{}),
		reaperDone: make(chan struct{}),
	}
	c.initSlots(nslots)
	go c.reaper()
	// Down (not just downCh closed): a reaper leading for a request the test never
	// completes sees it and stops.
	b.Cleanup(func() { c.fail(errors.New("test over")); <-c.reaperDone })
	return c, h
}

// engineStep completes every SQE in the SQ (result 0).
func engineStep(h *wire.HeapRings) {
	n := h.SQCons.Refresh()
	for range n {
		e := h.SQCons.PopSQE()
		h.CQProd.PushCQE(wire.CQE{UserData: e.UserData})
	}
	h.SQCons.Release()
	h.CQProd.Publish()
}

func BenchmarkClientPathNop(b *testing.B) {
	c, h := newHeapClient(b, 1024)
	ctx := context.Background()
	req := Request{Opcode: OpNop}
	b.ReportAllocs()
	for b.Loop() {
		t, err := c.Submit(ctx, &req)
		if err != nil {
			b.Fatal(err)
		}
		engineStep(h)
		if _, err := t.Wait(ctx); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkClientPathBatch32(b *testing.B) {
	c, h := newHeapClient(b, 1024)
	ctx := context.Background()
	reqs, ts := nopBatch(32)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.SubmitBatch(ctx, reqs, ts); err != nil {
			b.Fatal(err)
		}
		engineStep(h)
		for _, t := range ts {
			if _, err := t.Wait(ctx); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.ReportMetric(float64(b.N*32)/b.Elapsed().Seconds(), "ops/s")
}

// BenchmarkEngineStep is the inline engine's share of the two above.
func BenchmarkEngineStep(b *testing.B) {
	h, err := wire.NewHeapRings(64, 128)
	if err != nil {
		b.Fatal(err)
	}
	var e wire.SQE
	for b.Loop() {
		h.SQProd.PushSQE(&e)
		h.SQProd.Publish()
		engineStep(h)
		h.CQCons.Refresh()
		h.CQCons.PopCQE()
		h.CQCons.Release()
	}
}
