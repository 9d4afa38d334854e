package fakeengine

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// Timeout bounds the contexts of Ctx.
var Timeout = 60 * time.Second

// ShortTempDir is a temporary directory removed at the end of the test, with a path short
// enough for Unix socket paths (108 bytes).
func ShortTempDir(t testing.TB) string {
	d, err := os.MkdirTemp("", "swr")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

// Start starts an in-process engine on a new socket, after mod (if not nil) configured it,
// and shuts it down at the end of the test. It returns the engine and its socket path.
func Start(t testing.TB, mod func(*Engine)) (*Engine, string) {
	t.Helper()
	path := filepath.Join(ShortTempDir(t), "engine.sock")
	e := New(path)
	if mod != nil {
		mod(e)
	}
	if err := e.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Shutdown)
	return e, path
}

// Ctx is a context that ends after Timeout or with the test.
func Ctx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), Timeout)
	t.Cleanup(cancel)
	return ctx
}

// Processed is the number of requests the engine's sessions executed so far.
func (e *Engine) Processed() uint64 {
	e.mu.Lock()
	defer e.mu.Unlock()
	var n uint64
	for s := range e.sessions {
		n += s.processed.Load()
	}
	return n
}

// RustEngineBinary is the real engine for the tests: $SWRING_ENGINE, else
// target/debug/engine of the repository (cargo build -p engine), found from the working
// directory of the test (a package directory of go-client). ok is false when neither exists.
func RustEngineBinary() (path string, ok bool) {
	if p := os.Getenv("SWRING_ENGINE"); p != "" {
		return p, true
	}
	dir, err := os.Getwd()
	if err != nil {
		return "", false
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "ring-proto")); err == nil {
			p := filepath.Join(dir, "target", "debug", "engine")
			if st, err := os.Stat(p); err == nil && !st.IsDir() {
				return p, true
			}
			return "", false
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", false
		}
		dir = parent
	}
}

// FillPattern fills b with a pattern that differs for every seed and offset.
func FillPattern(b []byte, seed int) {
	for i := range b {
		b[i] = byte(i*7 + i>>8 + seed)
	}
}

// DropSessions closes the control connection of every session, as if the engine dropped
// them.
func (e *Engine) DropSessions() {
	e.mu.Lock()
	defer e.mu.Unlock()
	for s := range e.sessions {
		s.conn.Close()
	}
}
