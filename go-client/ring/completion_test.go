package ring

import (
	"testing"

	"github.com/seaweed-ring/seaweed-ring/go-client/internal/wire"
)

// FuzzCompletionParsing feeds arbitrary CQ contents to the client's CQ consumer at any
// index: only slots carrying their index's phase count as ready, in order, never more than
// the ring; parsed completions must round trip; dispatch must count unknown user_data as
// stray and never panic.
func FuzzCompletionParsing(f *testing.F) {
	f.Add(uint32(0), []byte{0, 0, 1, 0, 0xfd, 0xff, 0xff, 0xff, 1, 0, 0, 0, 0, 0, 0, 0})
	f.Add(uint32(0xfffffffe), make([]byte, 64))
	f.Add(uint32(5), []byte{})
	f.Fuzz(func(t *testing.T, start uint32, data []byte) {
		const entries = 4
		h := newHeapRings(t, 2, entries)
		h.SetIndices(start)
		cq := h.Reg.Bytes(h.L.CQArrayOffset, entries*wire.CQESize)
		copy(cq, data)
		want := uint32(0)
		for ; want < entries; want++ {
			index := start + want
			b := cq[(index%entries)*wire.CQESize:]
			phase := byte(0)
			if index&entries == 0 {
				phase = 1
			}
			if b[2]&1 != phase {
				break
			}
		}
		n := h.CQCons.Refresh()
		if n != want {
			t.Fatalf("ready %d, want %d", n, want)
		}
		c := &Client{slotFreed: make(chan struct{}, 1), sq: h.SQProd}
		c.initSlots(4)
		// One request in flight, in slot 1: user_data 1<<32 | 1.
		c.free = 2
		tk := logBatch(t, c, []Request{{Opcode: OpNop}})[0]
		c.consumeLog()
		for i := uint32(0); i < n; i++ {
			e := h.CQCons.PopCQE()
			w := e.Words()
			if back := wire.CQEFromWords(w[0], w[1]); back != e {
				t.Fatalf("round trip %+v -> %+v", e, back)
			}
			if (e.Result < 0) != (resultError(e.Result) != nil) {
				t.Fatalf("Err() of %d", e.Result)
			}
			if lead, bit, ok := c.completeSlot(uint32(e.UserData), uint32(e.UserData>>32), e.Result, nil); ok {
				var slotOf [maxBatch]uint32
				slotOf[0] = uint32(e.UserData)
				c.publishRecord(lead, bit, &slotOf)
			}
		}
		h.CQCons.Release()
		if *h.CQCons.Ctl.Head != start+n {
			t.Fatal("head not released past the ready entries")
		}
		// Completed at most once: a second completion of it is stray.
		d := c.slots[1].done.Load()
		if d != 0 && d != uint64(tk.bgen)<<32|1 {
			t.Fatalf("record done word %#x", d)
		}
		if c.slots[1].live == (d != 0) {
			t.Fatalf("live %v with done word %#x", c.slots[1].live, d)
		}
	})
}
