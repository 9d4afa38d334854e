package ring

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/seaweed-ring/seaweed-ring/go-client/internal/fakeengine"
	"github.com/seaweed-ring/seaweed-ring/go-client/internal/wire"
)

// The fake engine (internal/fakeengine) and its helpers under the names the tests use.
type fakeEngine = fakeengine.Engine

func startFake(t testing.TB, mod func(*fakeEngine)) (*fakeEngine, string) {
	t.Helper()
	return fakeengine.Start(t, mod)
}

func shortTempDir(t testing.TB) string     { return fakeengine.ShortTempDir(t) }
func testCtx(t testing.TB) context.Context { return fakeengine.Ctx(t) }
func processed(e *fakeEngine) uint64       { return e.Processed() }
func fillPattern(b []byte, seed int)       { fakeengine.FillPattern(b, seed) }
func rustEngineBinary() (string, bool)     { return fakeengine.RustEngineBinary() }
func errorsIs(err, target error) bool      { return errors.Is(err, target) }

// TestMain lets the test binary act as a fake engine process (integration tests kill and
// restart it): SWRING_FAKE_ENGINE=<socket path>.
func TestMain(m *testing.M) {
	fakeengine.ChildMain()
	code := m.Run()
	if ExampleSocketPath != "" {
		os.RemoveAll(filepath.Dir(ExampleSocketPath))
	}
	os.Exit(code)
}

func newHeapRings(t testing.TB, sq, cq uint32) *wire.HeapRings {
	h, err := wire.NewHeapRings(sq, cq)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// resultError is the error of a completion result: nil when res >= 0.
func resultError(res int32) error {
	if res >= 0 {
		return nil
	}
	return ResultError(res)
}

// freeSlots counts the free slots on the client's two free stacks, checking that each is
// there once and that the completer holds none of them (a slot lost from the stacks, on
// them twice, or freed while its completion is owed is a bug). It takes cqMu, so it must
// not be called while a completion is owed on a spinning heap client: its reaper leads
// (holding cqMu) until nothing is owed. Use freeOnStacks there.
func freeSlots(t testing.TB, c *Client) int {
	t.Helper()
	c.sqMu.Lock()
	defer c.sqMu.Unlock()
	c.cqMu.Lock()
	defer c.cqMu.Unlock()
	c.consumeLog()
	free := freeOnStacksLocked(t, c)
	for _, idx := range free {
		if c.slots[idx].live {
			t.Fatalf("slot %d on a free stack with its completion owed", idx)
		}
	}
	return len(free)
}

// freeOnStacks counts the free slots on the client's two free stacks, checking that each
// is there once, without cqMu (so also while a leader holds it).
func freeOnStacks(t testing.TB, c *Client) int {
	t.Helper()
	c.sqMu.Lock()
	defer c.sqMu.Unlock()
	return len(freeOnStacksLocked(t, c))
}

// freeOnStacksLocked lists the slots on the free stacks; caller holds sqMu.
func freeOnStacksLocked(t testing.TB, c *Client) []uint32 {
	t.Helper()
	seen := make(map[uint32]bool)
	var free []uint32
	check := func(idx uint32) {
		if seen[idx] {
			t.Fatalf("slot %d on the free stacks twice", idx)
		}
		seen[idx] = true
		free = append(free, idx)
	}
	for h := c.free; h != 0; h = c.slots[h-1].next {
		check(h - 1)
	}
	// Pushes only add above the head we load; nothing below it changes while we hold sqMu.
	for h := c.freeHead.Load(); h != 0; h = c.slots[h-1].next {
		check(h - 1)
	}
	return free
}

// logBatch submits reqs as one batch in the next free slots of c, as push does, into c.sq
// (heap rings in the unit tests), and returns their tickets.
func logBatch(t testing.TB, c *Client, reqs []Request) []Ticket {
	t.Helper()
	c.sqMu.Lock()
	defer c.sqMu.Unlock()
	idxs := make([]uint32, len(reqs))
	for i := range idxs {
		idx, ok := c.takeSlot()
		if !ok {
			t.Fatal("no free slot")
		}
		idxs[i] = idx
	}
	ts := make([]Ticket, len(reqs))
	c.publishBatch(reqs, idxs, ts)
	return ts
}
