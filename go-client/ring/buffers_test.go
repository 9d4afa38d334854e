package ring

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"testing"
	"time"
)

func newTestPool(blocks int) *bufferPool {
	return newBufferPool(make([]byte, blocks*4096), 4096)
}

func TestBufferAllocRelease(t *testing.T) {
	p := newTestPool(8)
	a, err := p.tryAlloc(100)
	if err != nil {
		t.Fatal(err)
	}
	if a.Len() != 100 || cap(a.Bytes()) != 4096 || a.Offset() != 0 {
		t.Fatalf("a: len %d cap %d off %d", a.Len(), cap(a.Bytes()), a.Offset())
	}
	b, _ := p.tryAlloc(3 * 4096)
	if b.Offset() != 4096 || b.Len() != 3*4096 {
		t.Fatalf("b at %d len %d", b.Offset(), b.Len())
	}
	c, _ := p.tryAlloc(4 * 4096)
	if _, err := p.tryAlloc(1); !errors.Is(err, ErrNoBufferSpace) {
		t.Fatalf("full pool: %v", err)
	}
	if _, err := p.tryAlloc(9 * 4096); !errors.Is(err, ErrBufferTooLarge) {
		t.Fatalf("too large: %v", err)
	}
	b.Release()
	// Coalesced with nothing yet; a 3-block request fits exactly where b was.
	d, err := p.tryAlloc(2*4096 + 1)
	if err != nil || d.Offset() != 4096 {
		t.Fatalf("d: %v at %d", err, d.Offset())
	}
	a.Release()
	c.Release()
	d.Release()
	if s := p.stats(); s.InUse != 0 || s.Allocations != 0 || s.FreeRuns != 1 {
		t.Fatalf("after releasing all: %+v", s)
	}
	e, err := p.tryAlloc(8 * 4096)
	if err != nil {
		t.Fatalf("free space did not coalesce: %v", err)
	}
	e.Release()
}

func TestBufferDoubleReleasePanics(t *testing.T) {
	p := newTestPool(2)
	a, _ := p.tryAlloc(1)
	a.Release()
	defer func() {
		if recover() == nil {
			t.Fatal("double release did not panic")
		}
	}()
	a.Release()
}

// A pinned buffer (request in flight) is not reused after Release until the request's
// completion unpins it.
func TestBufferPinnedUntilCompletion(t *testing.T) {
	p := newTestPool(1)
	a, _ := p.tryAlloc(10)
	a.pin()
	a.Release()
	if _, err := p.tryAlloc(1); !errors.Is(err, ErrNoBufferSpace) {
		t.Fatalf("buffer reused while pinned: %v", err)
	}
	a.unpin()
	b, err := p.tryAlloc(1)
	if err != nil {
		t.Fatalf("not reusable after completion: %v", err)
	}
	b.Release()
}

func TestBufferAllocWaits(t *testing.T) {
	p := newTestPool(1)
	a, _ := p.tryAlloc(1)
	ctx, cancel := context.WithTimeout(context.Background(), time.Millisecond)
	defer cancel()
	if _, err := p.alloc(ctx, 1); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("alloc on a full pool: %v", err)
	}
	go func() {
		time.Sleep(time.Millisecond)
		a.Release()
	}()
	b, err := p.alloc(context.Background(), 1)
	if err != nil {
		t.Fatal(err)
	}
	b.Release()
}

func TestBufferCloseUnmapsWhenIdle(t *testing.T) {
	p := newTestPool(2)
	a, _ := p.tryAlloc(1)
	called := 0
	p.close(func() { called++ })
	if called != 0 {
		t.Fatal("onIdle ran with a buffer outstanding")
	}
	if _, err := p.tryAlloc(1); !errors.Is(err, ErrClosed) {
		t.Fatalf("alloc after close: %v", err)
	}
	a.Release()
	if called != 1 {
		t.Fatalf("onIdle ran %d times", called)
	}
}

// Random concurrent allocations never overlap, and everything comes back.
func TestBufferConcurrentNoOverlap(t *testing.T) {
	p := newTestPool(64)
	owner := make([]int32, 64)
	var mu sync.Mutex
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(g), 9))
			for i := 0; i < 2000; i++ {
				b, err := p.alloc(context.Background(), 1+rng.IntN(5*4096))
				if err != nil {
					t.Error(err)
					return
				}
				first := int(b.Offset() / 4096)
				n := (b.Len() + 4095) / 4096
				mu.Lock()
				for k := first; k < first+n; k++ {
					if owner[k] != 0 {
						t.Errorf("block %d handed out twice", k)
					}
					owner[k] = int32(g + 1)
				}
				mu.Unlock()
				b.Bytes()[0] = byte(g)
				mu.Lock()
				for k := first; k < first+n; k++ {
					owner[k] = 0
				}
				mu.Unlock()
				b.Release()
			}
		}(g)
	}
	wg.Wait()
	if s := p.stats(); s.InUse != 0 || s.FreeRuns != 1 {
		t.Fatalf("leak: %+v", s)
	}
}

func BenchmarkBufferAllocRelease(b *testing.B) {
	p := newTestPool(256)
	b.ReportAllocs()
	for b.Loop() {
		x, _ := p.tryAlloc(8192)
		x.Release()
	}
}
