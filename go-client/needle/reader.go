package needle

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/seaweed-ring/seaweed-ring/go-client/ring"
)

// Reader reads SeaweedFS needles by file id the fast way: READ_NEEDLE through the
// local engine from the engine beside the volume server, zero copy into shared memory,
// falling back to the volume server's HTTP GET when the ring is not available. Both paths
// return the same bytes (see Read). It is safe for concurrent use; Close it when
// done.
type Reader struct {
	opts        Options
	httpc       *http.Client
	ownHTTP     *http.Transport
	engineAddrs map[string]string // EngineAddrs by host:port

	dialMu     sync.Mutex // serializes dials
	mu         sync.Mutex
	c          *ring.Client         // the engine session; nil before the first dial or after a loss
	dialErr    error                // the last Dial's error, while RedialInterval runs
	dialAt     time.Time            // when it failed
	peers      map[string]ring.Peer // engine address -> handle, for c
	addrs      map[string]string    // volume server -> engine address (resolution cache)
	closed     bool
	lastLogged string
	log        *slog.Logger

	nRing, nHTTP, nFallback, nFail, ringBytes, httpBytes, nDials, nDialFail, nPeers atomic.Uint64
}

// NewReader returns a reader with the given options. It connects to nothing yet: the
// engine is dialed on first use.
func NewReader(opts Options) *Reader {
	if opts.ChunkSize <= 0 {
		opts.ChunkSize = DefaultChunkSize
	}
	opts.ChunkSize = min(opts.ChunkSize, math.MaxInt32-MetaLen)
	if opts.ChunksInFlight <= 0 {
		opts.ChunksInFlight = defaultChunksInFlight
	}
	if opts.Concurrency <= 0 {
		opts.Concurrency = defaultConcurrency
	}
	if opts.RedialInterval == 0 {
		opts.RedialInterval = defaultRedialInterval
	}
	r := &Reader{opts: opts, log: opts.Logger, httpc: opts.HTTPClient, engineAddrs: map[string]string{}, peers: map[string]ring.Peer{}, addrs: map[string]string{}}
	if r.log == nil {
		r.log = slog.New(slog.DiscardHandler)
	}
	if r.httpc == nil {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.MaxIdleConns = max(tr.MaxIdleConns, 4*opts.Concurrency)
		tr.MaxIdleConnsPerHost = max(tr.MaxIdleConnsPerHost, opts.Concurrency)
		r.httpc, r.ownHTTP = &http.Client{Transport: tr, Timeout: opts.HTTPTimeout}, tr
	}
	for k, v := range opts.EngineAddrs {
		if hp, err := volumeServerHostPort(k); err == nil {
			r.engineAddrs[hp] = v
		}
	}
	return r
}

// Close ends the engine session and closes idle HTTP connections of the reader's own
// client. Reads after Close fail with ring.ErrClosed.
func (r *Reader) Close() error {
	r.mu.Lock()
	r.closed = true
	c := r.c
	r.c = nil
	r.mu.Unlock()
	if c != nil {
		c.Close()
	}
	if r.ownHTTP != nil {
		r.ownHTTP.CloseIdleConnections()
	}
	return nil
}

// Stats returns the reader's counters.
func (r *Reader) Stats() Stats {
	return Stats{
		RingReads: r.nRing.Load(), HTTPReads: r.nHTTP.Load(), Fallbacks: r.nFallback.Load(), Failures: r.nFail.Load(),
		RingBytes: r.ringBytes.Load(), HTTPBytes: r.httpBytes.Load(),
		Dials: r.nDials.Load(), DialFailures: r.nDialFail.Load(), PeerConnects: r.nPeers.Load(),
	}
}

// CheckEngine reports whether the local engine is reachable: it dials it if there is no
// session (subject to RedialInterval) and pings it. nil means reads can take the ring
// (the volume servers' engines are only contacted by reads).
func (r *Reader) CheckEngine(ctx context.Context) error {
	c, err := r.session(ctx)
	if err != nil {
		return err
	}
	if err := c.Ping(ctx); err != nil {
		if errors.Is(err, ring.ErrEngineUnavailable) || errors.Is(err, ring.ErrClosed) {
			r.dropSession(c, err)
		}
		return err
	}
	return nil
}

// Read reads the whole needle fileID ("3,01637037d6", see ParseFileID) stored on
// volumeServer (its HTTP address, "host:port" or a URL).
//
// The result is what the volume server's HTTP GET of /<fileID>?cm=false returns to a plain
// Go http.Get: gzip-compressed needles are decompressed (unless KeepCompressed: then the
// stored bytes, as a GET with Accept-Encoding: gzip returns them), a chunk manifest is
// returned as its manifest bytes (Needle.ChunkManifest tells, on the ring path), and the
// name, MIME type and last-modified time come along.
//
// The ring path: the local engine (dialed lazily, redialed after it restarted), a peer
// handle for the volume server's engine (ConnectPeer once per engine, again after a peer
// failure), and READ_NEEDLE range by range for needles larger than ChunkSize. The HTTP
// path is taken (Needle.Path = PathHTTP, Needle.RingErr = why) when the ring cannot answer:
// the local engine is unavailable, the peer engine cannot be resolved or reached
// (ring.ErrPeerFailed, ring.ErrTimedOut, ring.ErrNoSuchPeer), the engine does not know the volume
// (ring.ErrNoSuchVolume: the volume server may still proxy or redirect the GET to a replica),
// the stored needle failed its checks (ring.ErrCorrupt: the volume server answers for itself;
// an error there is returned), or any other failure of the engine or the protocol. Answers
// about the needle are final and returned as they are: ring.ErrNoSuchNeedle, ring.ErrNeedleDeleted,
// ring.ErrCookieMismatch (unless FallbackOnNotFound; all three match ring.ErrNeedleNotFound) and
// ring.ErrRangeNotSatisfiable. Errors are *Error; over HTTP a 404 matches
// ring.ErrNeedleNotFound (the volume server answers 404 for all of these cases).
func (r *Reader) Read(ctx context.Context, volumeServer, fileID string) (*Needle, error) {
	return r.read(ctx, Request{VolumeServer: volumeServer, FileID: fileID})
}

// ReadRange reads at most length bytes of needle fileID's data from offset (length
// <= 0: to the end), like Read; the HTTP path sends "Range: bytes=offset-end". The
// range is of the data Read returns: of the decompressed data for a compressed
// needle (the whole needle is read and decompressed first, as the volume server does for a
// Range request without Accept-Encoding: gzip), of the stored data with KeepCompressed. A
// range that ends past the data is cut at its end; one that starts at or past the end
// fails with ring.ErrRangeNotSatisfiable (HTTP 416). Needle.Offset and Needle.Size tell where
// the bytes lie in the whole data.
func (r *Reader) ReadRange(ctx context.Context, volumeServer, fileID string, offset, length int64) (*Needle, error) {
	return r.read(ctx, Request{VolumeServer: volumeServer, FileID: fileID, Ranged: true, Offset: offset, Length: length})
}

// ReadWith is Read, ReadRange or ReadInto with every option of a
// Request, e.g. its JWT.
func (r *Reader) ReadWith(ctx context.Context, q Request) (*Needle, error) {
	return r.read(ctx, q)
}

// ReadInto is Read with the data written into dst when it fits (see
// Request.Dst): Needle.Data is then dst[:len], with no allocation for the data.
func (r *Reader) ReadInto(ctx context.Context, volumeServer, fileID string, dst []byte) (*Needle, error) {
	return r.read(ctx, Request{VolumeServer: volumeServer, FileID: fileID, Dst: dst})
}

// dataBuf returns a slice of n bytes for a needle's data: the request's Dst when it holds
// them, else a new one.
func dataBuf(q *Request, n uint64) []byte {
	if uint64(cap(q.Dst)) >= n {
		return q.Dst[:n]
	}
	return make([]byte, n)
}

// read is one Read/ReadRange.
func (r *Reader) read(ctx context.Context, q Request) (*Needle, error) {
	if err := ctx.Err(); err != nil {
		return nil, &Error{FileID: q.FileID, VolumeServer: q.VolumeServer, Err: err}
	}
	fid, err := ParseFileID(q.FileID)
	if err != nil || r.opts.Only == PathHTTP || r.isClosed() || (q.Ranged && q.Offset < 0) {
		return r.complete(ctx, q, fid, nil, nil)
	}
	if err := ringCarriesJWT(q.JWT); err != nil {
		return r.complete(ctx, q, fid, nil, r.ringOnly(err))
	}
	j, err := r.prepare(ctx, q, fid, true)
	if err == nil {
		r1 := j.request()
		if j.t, err = j.c.Submit(ctx, &r1); err != nil {
			j.buf.Release()
			r.noteRingErr(j, err)
		}
	}
	var n *Needle
	if err == nil {
		n, err = r.finish(ctx, j)
	}
	return r.complete(ctx, q, fid, n, err)
}

// ringCarriesJWT says why a READ_NEEDLE cannot carry jwt (nil: it can).
func ringCarriesJWT(jwt string) error {
	if len(jwt) > MaxJWTLen {
		return fmt.Errorf("%w: read JWT of %d bytes, a READ_NEEDLE carries at most MaxJWTLen = %d", ring.ErrInvalidEntry, len(jwt), MaxJWTLen)
	}
	return nil
}

// ringOnly is the ring error for a read the ring cannot make: returned as the answer with
// Only == PathRing, nil (read over HTTP, not counted as a fallback) otherwise.
func (r *Reader) ringOnly(err error) error {
	if r.opts.Only == PathRing {
		return err
	}
	return nil
}

func (r *Reader) isClosed() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.closed
}

// complete turns the ring's outcome into the read's: the needle, the ring's answer, or the
// HTTP path's. n == nil && ringErr == nil means the ring was not tried.
func (r *Reader) complete(ctx context.Context, q Request, fid FileID, n *Needle, ringErr error) (*Needle, error) {
	fail := func(p Path, err error) (*Needle, error) {
		r.nFail.Add(1)
		return nil, &Error{FileID: q.FileID, VolumeServer: q.VolumeServer, Path: p, Err: err, RingErr: ringErr}
	}
	if n != nil {
		r.nRing.Add(1)
		r.ringBytes.Add(uint64(len(n.Data)))
		return n, nil
	}
	if _, err := ParseFileID(q.FileID); err != nil {
		return fail(PathAuto, err)
	}
	if q.Ranged && q.Offset < 0 {
		return fail(PathAuto, fmt.Errorf("swring: negative needle offset %d", q.Offset))
	}
	if r.isClosed() {
		return fail(PathAuto, ring.ErrClosed)
	}
	if ringErr != nil && !r.fallsBack(ctx, ringErr) {
		return fail(PathRing, ringErr)
	}
	if ringErr != nil {
		r.nFallback.Add(1)
	}
	n, err := r.httpRead(ctx, q, fid)
	if err != nil {
		return fail(PathHTTP, err)
	}
	n.RingErr = ringErr
	r.nHTTP.Add(1)
	r.httpBytes.Add(uint64(len(n.Data)))
	return n, nil
}

// fallsBack decides whether a ring error goes to HTTP (see Read).
func (r *Reader) fallsBack(ctx context.Context, err error) bool {
	switch {
	case r.opts.Only == PathRing, ctx.Err() != nil, errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return false
	case errors.Is(err, ring.ErrRangeNotSatisfiable), errors.Is(err, ring.ErrUnauthorized):
		// The volume's answer (a JWT the volume server would refuse just the same).
		return false
	case errors.Is(err, ring.ErrNoSuchNeedle), errors.Is(err, ring.ErrNeedleDeleted), errors.Is(err, ring.ErrCookieMismatch):
		return r.opts.FallbackOnNotFound
	}
	return true
}
