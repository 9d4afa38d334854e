package ring

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"
)

// Backpressure: with rings of two entries and room for 8 requests in flight, 32 goroutines
// submitting FILLs block in Submit instead of losing anything: every accepted request
// completes exactly once with its bytes in place. A caller whose context ends while the
// rings are full gets ctx.Err() from Submit (the request was never accepted), and the
// requests already accepted still complete.
func TestEngineBackpressure(t *testing.T) {
	forEachEngine(t, func(t *testing.T, e *engineProc) {
		c := e.dial(t, WithRingSizes(2, 2), WithMaxInFlight(8), WithSpin(5*time.Microsecond))
		ctx := testCtx(t)

		// Exhaust the in-flight slots with accepted requests nobody waits for yet.
		held := make([]Ticket, 8)
		for i := range held {
			tk, err := c.Submit(ctx, &Request{Opcode: OpNop})
			if err != nil {
				t.Fatalf("submit %d: %v", i, err)
			}
			held[i] = tk
		}
		short, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
		_, err := c.Submit(short, &Request{Opcode: OpNop})
		cancel()
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("submit with every slot taken: %v, want context.DeadlineExceeded", err)
		}
		for i, tk := range held {
			if res, err := tk.Wait(ctx); err != nil || res != 0 {
				t.Fatalf("held request %d: %d %v", i, res, err)
			}
		}

		var wg sync.WaitGroup
		for g := 0; g < 32; g++ {
			wg.Add(1)
			go func(g int) {
				defer wg.Done()
				buf, err := c.AllocBuffer(ctx, 4096)
				if err != nil {
					t.Errorf("alloc: %v", err)
					return
				}
				defer buf.Release()
				for i := 0; i < 100; i++ {
					v := byte(g*7 + i)
					n, err := c.Fill(ctx, buf, 0, 4096, v)
					if err != nil || n != 4096 {
						t.Errorf("fill %d/%d: %d %v", g, i, n, err)
						return
					}
					for k, b := range buf.Bytes()[:4096] {
						if b != v {
							t.Errorf("goroutine %d fill %d: byte %d = %#x, want %#x", g, i, k, b, v)
							return
						}
					}
				}
			}(g)
		}
		wg.Wait()
		want := uint64(8 + 32*100)
		if s := c.Stats(); s.Submitted != want || s.Completed != want || s.Stray != 0 {
			t.Fatalf("stats %+v, want %d submitted and completed, no strays", s, want)
		}
	})
}
