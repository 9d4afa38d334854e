package needle

import (
	"context"
	"strings"
	"sync"
	"testing"

	"github.com/seaweed-ring/seaweed-ring/go-client/internal/fakeengine"
	"github.com/seaweed-ring/seaweed-ring/go-client/ring"
)

// The fake engine (internal/fakeengine) and its helpers under the names the tests use.
type fakeEngine = fakeengine.Engine

func startFake(t testing.TB, mod func(*fakeEngine)) (*fakeEngine, string) {
	t.Helper()
	return fakeengine.Start(t, mod)
}

func shortTempDir(t testing.TB) string     { return fakeengine.ShortTempDir(t) }
func testCtx(t testing.TB) context.Context { return fakeengine.Ctx(t) }
func fillPattern(b []byte, seed int)       { fakeengine.FillPattern(b, seed) }
func rustEngineBinary() (string, bool)     { return fakeengine.RustEngineBinary() }

func dialT(t testing.TB, path string, opts ...ring.Option) *ring.Client {
	t.Helper()
	c, err := ring.Dial(testCtx(t), path, opts...)
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func connectPeer(t *testing.T, c *ring.Client, addr string) ring.Peer {
	t.Helper()
	p, err := c.ConnectPeer(testCtx(t), addr)
	if err != nil {
		t.Fatalf("ConnectPeer(%q): %v", addr, err)
	}
	if p == 0 {
		t.Fatal("peer handle 0")
	}
	return p
}

// logLines collects the lines of a slog text handler.
type logLines struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *logLines) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logLines) lines() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Split(strings.TrimSuffix(l.b.String(), "\n"), "\n")
}
