package needle

import (
	"context"
	"log/slog"
	"net/http"
	"time"

	"github.com/seaweed-ring/seaweed-ring/go-client/ring"
)

// DefaultEnginePort is the UCX port a seaweed-ring engine listens on by convention
// ([ucx] listen = "0.0.0.0:13337"). Reader finds the engine of a volume server at the
// volume server's host on this port unless told otherwise.
const DefaultEnginePort = 13337

// Defaults of Options.
const (
	// DefaultChunkSize is how many data bytes one READ_NEEDLE asks for at most.
	DefaultChunkSize = 1 << 20
	// defaultChunksInFlight is how many READ_NEEDLEs of one large needle are in
	// flight together.
	defaultChunksInFlight = 4
	// defaultConcurrency is how many needles ReadMany reads at once.
	defaultConcurrency = 64
	// DefaultBufferBytes is the session buffer area Reader asks the
	// engine for when Options.DialOptions is nil (the engine's default is
	// smaller; if the engine refuses this size, the reader takes the engine's default).
	DefaultBufferBytes = 64 << 20
	// defaultRedialInterval is how long Reader waits after a failed ring.Dial before it
	// dials again (meanwhile reads go over HTTP at once).
	defaultRedialInterval = time.Second
)

// Options configure NewReader. The zero value reads over the ring from
// the engine at ring.DefaultSocketPath, with HTTP fallback.
type Options struct {
	// EngineSocket is the local engine's control socket ("" = ring.DefaultSocketPath()). The
	// reader dials it on first use and again after the session ended (engine restart).
	EngineSocket string
	// DialOptions are passed to ring.Dial. nil: ring.WithBufferSize(DefaultBufferBytes),
	// or the engine's default size if the engine refuses that.
	DialOptions []ring.Option
	// RedialInterval: after a failed ring.Dial, reads go straight to HTTP for this long before
	// the next ring.Dial (0 = 1s; negative: dial on every read).
	RedialInterval time.Duration

	// EnginePort is the UCX port of volume servers' engines (0 = DefaultEnginePort): the
	// engine of volume server "host:8080" is host:EnginePort, host resolved to an IP.
	EnginePort int
	// EngineAddrs maps volume servers (host:port, or URLs; compared by host:port) to their
	// engines' UCX addresses ("ip:port"), overriding the convention.
	EngineAddrs map[string]string
	// ResolveEngine, when set, maps a volume server (as passed to Read) to its
	// engine's UCX address, replacing EngineAddrs and the convention (ResolveEngineAddr is
	// the convention, for a resolver that only overrides some servers).
	ResolveEngine func(ctx context.Context, volumeServer string) (string, error)

	// HTTPClient makes the HTTP GETs (nil: a client of its own with keep-alive connections,
	// HTTPTimeout, and transparent gzip like http.DefaultClient).
	HTTPClient *http.Client
	// HTTPTimeout bounds each HTTP GET of the reader's own client (0 = only ctx).
	HTTPTimeout time.Duration
	// HTTPHeader is added to every HTTP GET. (A read's JWT goes in Request.JWT,
	// which both paths send; it replaces an Authorization header given here.)
	HTTPHeader http.Header

	// Only forces one path: PathRing (errors are returned, never retried over HTTP),
	// PathHTTP (the engine is never used), or PathAuto (default).
	Only Path
	// FallbackOnNotFound also retries over HTTP when the ring answered that the needle is
	// not there (ring.ErrNoSuchNeedle, ring.ErrNeedleDeleted, ring.ErrCookieMismatch). By default these
	// answers are final: the engine read the same volume the HTTP GET would.
	FallbackOnNotFound bool
	// KeepCompressed returns gzip-compressed needles as stored (Needle.Data compressed,
	// offsets and sizes of the compressed bytes). By default they are decompressed, as the
	// volume server's GET returns them to a plain Go http.Get.
	KeepCompressed bool

	// ChunkSize is the most data bytes one READ_NEEDLE asks for (0 =
	// DefaultChunkSize); larger needles are read range by range. Keep it below the
	// engines' ucx.max-message-bytes.
	ChunkSize int
	// ChunksInFlight is how many READ_NEEDLEs of one large needle are in flight together
	// (0 = 4).
	ChunksInFlight int
	// Concurrency is how many needles ReadMany reads at once (0 = 64).
	Concurrency int

	// Logger receives a record when the engine session is lost or a ring.Dial fails (Warn), and
	// when a dial succeeds (Info); a record that repeats the previous one is dropped. nil
	// discards them: a library stays quiet unless its user asks, and reads keep working
	// over HTTP meanwhile (Needle.RingErr, Stats tell why).
	Logger *slog.Logger
}
