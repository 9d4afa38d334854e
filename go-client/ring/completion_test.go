package ring

import (
	"testing"

	"github.com/seaweed-ring/seaweed-ring/go-client/internal/wire"
)

// FuzzCompletionParsing feeds arbitrary CQ contents and tail values to the client's CQ
// consumer: corrupt tails must be reported, never trusted; parsed completions must round
// trip; dispatch must count unknown user_data as stray and never panic.
func FuzzCompletionParsing(f *testing.F) {
	f.Add(uint32(0), uint32(1), []byte{1, 0, 0, 0, 0, 0, 0, 0, 0xfd, 0xff, 0xff, 0xff, 0, 0, 0, 0})
	f.Add(uint32(0xfffffffe), uint32(3), make([]byte, 64))
	f.Add(uint32(5), uint32(100), []byte{})
	f.Fuzz(func(t *testing.T, start, advance uint32, data []byte) {
		h := newHeapRings(t, 2, 4)
		h.SetIndices(start)
		cq := h.Reg.Bytes(h.L.CQArrayOffset, 4*wire.CQESize)
		copy(cq, data)
		tail := start + advance
		*h.CQCons.Ctl.Tail = tail
		n, err := h.CQCons.Refresh()
		if advance > 4 {
			if err == nil {
				t.Fatalf("tail %d ahead of head %d by %d accepted", tail, start, advance)
			}
			return
		}
		if err != nil || n != advance {
			t.Fatalf("ready %d, %v; want %d", n, err, advance)
		}
		c := &Client{slots: make([]slot, 4), slotFreed: make(chan struct{}, 1)}
		for i := range c.slots {
			c.slots[i].done = make(chan struct{}, 1)
		}
		c.slots[1].word.Store(slotWord(1, slotPending))
		for i := uint32(0); i < n; i++ {
			e := h.CQCons.PopCQE()
			w := e.Words()
			if back := wire.CQEFromWords(w[0], w[1]); back != e {
				t.Fatalf("round trip %+v -> %+v", e, back)
			}
			if (e.Result < 0) != (resultError(e.Result) != nil) {
				t.Fatalf("Err() of %d", e.Result)
			}
			c.completeSlot(uint32(e.UserData), uint32(e.UserData>>32), e.Result, e.Flags, nil)
		}
		h.CQCons.Release()
		if *h.CQCons.Ctl.Head != tail {
			t.Fatal("head not released to tail")
		}
		st := slotState(c.slots[1].word.Load())
		if st != slotPending && st != slotDone {
			t.Fatalf("slot state %d", st)
		}
	})
}
