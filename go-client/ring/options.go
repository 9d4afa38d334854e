package ring

import (
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/seaweed-ring/seaweed-ring/go-client/internal/wire"
)

// DefaultSocketPath is the engine's default control socket:
// $XDG_RUNTIME_DIR/seaweed-ring/engine.sock, or /tmp/seaweed-ring-<uid>/engine.sock when
// XDG_RUNTIME_DIR is not set.
func DefaultSocketPath() string {
	if d := os.Getenv("XDG_RUNTIME_DIR"); d != "" {
		return filepath.Join(d, "seaweed-ring", "engine.sock")
	}
	return filepath.Join(os.TempDir(), "seaweed-ring-"+strconv.Itoa(os.Getuid()), "engine.sock")
}

// Option configures Dial.
type Option func(*config)

type config struct {
	sqEntries, cqEntries uint32
	bufSize              uint64
	spin                 time.Duration
	blockSize            uint64
	closeTimeout         time.Duration
	maxInFlight          int
}

func defaultConfig() config {
	return config{spin: 50 * time.Microsecond, blockSize: wire.BufAlign, closeTimeout: 5 * time.Second}
}

// WithRingSizes asks for SQ and CQ sizes (powers of two, 2..32768; 0 = engine default).
func WithRingSizes(sq, cq uint32) Option {
	return func(c *config) { c.sqEntries, c.cqEntries = sq, cq }
}

// WithBufferSize asks for a buffer area of n bytes (a multiple of 4096; 0 = engine default).
func WithBufferSize(n uint64) Option { return func(c *config) { c.bufSize = n } }

// WithSpin sets how long a waiting goroutine polls the completion queue before it sleeps on
// the CQ doorbell (default 50µs). Zero sleeps at once; longer spins trade CPU for
// latency.
func WithSpin(d time.Duration) Option { return func(c *config) { c.spin = d } }

// withBufferBlockSize sets the buffer allocator's granularity (a power of two; default
// 4096). Buffers are aligned to it.
func withBufferBlockSize(n uint64) Option { return func(c *config) { c.blockSize = n } }

// WithMaxInFlight sets how many request slots the client has (default: the larger of 1024
// and twice the SQ+CQ size): a request holds one from Submit until Wait returns, and
// Submit blocks while all are held. The requests of one SubmitBatch publication (up to 32
// at a time) give their slots back together, once every one of them has been waited for
// (or given up): a ticket of a batch left unwaited keeps the batch's other slots too. The
// engine itself holds at most SQ+CQ requests; the rest are completed requests whose tickets
// have not been waited for yet.
func WithMaxInFlight(n int) Option { return func(c *config) { c.maxInFlight = n } }

// WithCloseTimeout bounds how long Close waits for the engine to finish accepted requests
// (default 5s).
func WithCloseTimeout(d time.Duration) Option { return func(c *config) { c.closeTimeout = d } }
