package swring

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"mime"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultEnginePort is the UCX port a seaweed-ring engine listens on by convention
// ([ucx] listen = "0.0.0.0:13337"). NeedleReader finds the engine of a volume server at the
// volume server's host on this port unless told otherwise.
const DefaultEnginePort = 13337

// Defaults of NeedleReaderOptions.
const (
	// DefaultNeedleChunkSize is how many data bytes one READ_NEEDLE asks for at most.
	DefaultNeedleChunkSize = 1 << 20
	// DefaultNeedleChunksInFlight is how many READ_NEEDLEs of one large needle are in
	// flight together.
	DefaultNeedleChunksInFlight = 4
	// DefaultNeedleConcurrency is how many needles ReadNeedles reads at once.
	DefaultNeedleConcurrency = 64
	// DefaultNeedleReaderBufferBytes is the session buffer area NeedleReader asks the
	// engine for when NeedleReaderOptions.DialOptions is nil (the engine's default is
	// smaller; if the engine refuses this size, the reader takes the engine's default).
	DefaultNeedleReaderBufferBytes = 64 << 20
	// DefaultRedialInterval is how long NeedleReader waits after a failed Dial before it
	// dials again (meanwhile reads go over HTTP at once).
	DefaultRedialInterval = time.Second
)

// Path says how a needle was read.
type Path uint8

const (
	// PathAuto (only in NeedleReaderOptions.Only): the ring, falling back to HTTP.
	PathAuto Path = iota
	// PathRing: READ_NEEDLE through the local engine from the volume server's engine.
	PathRing
	// PathHTTP: the volume server's HTTP GET.
	PathHTTP
)

func (p Path) String() string {
	switch p {
	case PathAuto:
		return "auto"
	case PathRing:
		return "ring"
	case PathHTTP:
		return "http"
	}
	return fmt.Sprintf("path(%d)", uint8(p))
}

// NeedleReaderOptions configure NewNeedleReader. The zero value reads over the ring from
// the engine at DefaultSocketPath, with HTTP fallback.
type NeedleReaderOptions struct {
	// EngineSocket is the local engine's control socket ("" = DefaultSocketPath()). The
	// reader dials it on first use and again after the session ended (engine restart).
	EngineSocket string
	// DialOptions are passed to Dial. nil: WithBufferSize(DefaultNeedleReaderBufferBytes),
	// or the engine's default size if the engine refuses that.
	DialOptions []Option
	// RedialInterval: after a failed Dial, reads go straight to HTTP for this long before
	// the next Dial (0 = DefaultRedialInterval; negative: dial on every read).
	RedialInterval time.Duration

	// EnginePort is the UCX port of volume servers' engines (0 = DefaultEnginePort): the
	// engine of volume server "host:8080" is host:EnginePort, host resolved to an IP.
	EnginePort int
	// EngineAddrs maps volume servers (host:port, or URLs; compared by host:port) to their
	// engines' UCX addresses ("ip:port"), overriding the convention.
	EngineAddrs map[string]string
	// ResolveEngine, when set, maps a volume server (as passed to ReadNeedle) to its
	// engine's UCX address, replacing EngineAddrs and the convention (ResolveEngineAddr is
	// the convention, for a resolver that only overrides some servers).
	ResolveEngine func(ctx context.Context, volumeServer string) (string, error)

	// HTTPClient makes the HTTP GETs (nil: a client of its own with keep-alive connections,
	// HTTPTimeout, and transparent gzip like http.DefaultClient).
	HTTPClient *http.Client
	// HTTPTimeout bounds each HTTP GET of the reader's own client (0 = only ctx).
	HTTPTimeout time.Duration
	// HTTPHeader is added to every HTTP GET. (A read's JWT goes in NeedleRequest.JWT,
	// which both paths send; it replaces an Authorization header given here.)
	HTTPHeader http.Header

	// Only forces one path: PathRing (errors are returned, never retried over HTTP),
	// PathHTTP (the engine is never used), or PathAuto (default).
	Only Path
	// FallbackOnNotFound also retries over HTTP when the ring answered that the needle is
	// not there (ErrNoSuchNeedle, ErrNeedleDeleted, ErrCookieMismatch). By default these
	// answers are final: the engine read the same volume the HTTP GET would.
	FallbackOnNotFound bool
	// KeepCompressed returns gzip-compressed needles as stored (Needle.Data compressed,
	// offsets and sizes of the compressed bytes). By default they are decompressed, as the
	// volume server's GET returns them to a plain Go http.Get.
	KeepCompressed bool

	// ChunkSize is the most data bytes one READ_NEEDLE asks for (0 =
	// DefaultNeedleChunkSize); larger needles are read range by range. Keep it below the
	// engines' ucx.max-message-bytes.
	ChunkSize int
	// ChunksInFlight is how many READ_NEEDLEs of one large needle are in flight together
	// (0 = DefaultNeedleChunksInFlight).
	ChunksInFlight int
	// Concurrency is how many needles ReadNeedles reads at once (0 =
	// DefaultNeedleConcurrency).
	Concurrency int

	// Logf, when set, receives a line when the engine session is lost, a Dial fails, or a
	// dial succeeds again.
	Logf func(format string, args ...any)
}

// Needle is a needle read by NeedleReader: its data, or the requested range of it, and
// what the volume server's HTTP GET says about it.
type Needle struct {
	// FileID is the needle's file id.
	FileID FileID
	// Data is the needle's data, or the requested range of it: decompressed when the
	// needle is stored gzip-compressed, unless NeedleReaderOptions.KeepCompressed.
	Data []byte
	// Offset is where Data starts in the whole data (0 unless a range was read).
	Offset int64
	// Size is the size of the whole data, of the bytes Data is part of (decompressed or
	// stored).
	Size int64
	// Name is the needle's file name ("" when none). On the HTTP path it is the
	// Content-Disposition filename.
	Name string
	// Mime is the needle's MIME type: on the ring path as stored (possibly ""), on the
	// HTTP path the Content-Type the volume server sent.
	Mime string
	// ContentType is the Content-Type the volume server's HTTP GET sends for this read: on
	// the ring path worked out the same way (the stored MIME type unless empty or
	// application/octet-stream, else by the name's extension, else what net/http sniffs
	// from the bytes the GET writes first; "" when the response is empty or gzip-encoded),
	// on the HTTP path the header. (The extension's type comes from this host's MIME
	// tables, which may differ from the volume server's.)
	ContentType string
	// LastModified is the needle's last-modified time (second precision; zero when none).
	LastModified time.Time
	// ETag is the volume server's entity tag of the needle (the stored CRC in hex, without
	// quotes).
	ETag string
	// Compressed reports that the needle is stored gzip-compressed. On the HTTP path it is
	// known only when the response was gzip-encoded (whole-needle reads, KeepCompressed),
	// and false otherwise.
	Compressed bool
	// ChunkManifest reports that the data is a SeaweedFS chunk manifest (JSON naming the
	// chunks of a large file), returned as is: the volume server's GET would assemble the
	// file instead unless asked with ?cm=false, which the HTTP path of NeedleReader does,
	// so both paths return the manifest. Only the ring path can tell (false on PathHTTP).
	ChunkManifest bool
	// Flags are the needle's stored flag bits (NeedleFlagGzip, ...); ring path only.
	Flags uint8
	// Path says which way the needle was read.
	Path Path
	// RingErr is why the ring path did not serve the needle when Path is PathHTTP (nil
	// when the HTTP path was forced with Only).
	RingErr error
}

// contentTypeLike is the Content-Type the volume server's GET sends: the stored MIME type
// unless it is empty or application/octet-stream, else the type of the name's extension,
// else what net/http sniffs from the first bytes written — unless the response is
// gzip-encoded (net/http does not sniff those) or empty.
func contentTypeLike(mimeType, name string, written []byte, gzipEncoded bool) string {
	if mimeType != "" && !strings.HasPrefix(mimeType, "application/octet-stream") {
		return mimeType
	}
	if ext := filepath.Ext(name); ext != "" {
		if t := mime.TypeByExtension(ext); t != "" {
			return t
		}
	}
	if len(written) == 0 || gzipEncoded {
		return ""
	}
	return http.DetectContentType(written[:min(len(written), 512)])
}

// NeedleError is a failed NeedleReader read. It unwraps to Err, the answer of the path
// that answered last: errors.Is(err, ErrNeedleNotFound), ErrRangeNotSatisfiable,
// ErrBadFileID, ErrCorrupt, ... hold through it.
type NeedleError struct {
	// FileID and VolumeServer are the read's, as passed.
	FileID       string
	VolumeServer string
	// Path is the path whose answer Err is (PathAuto for errors before either was tried,
	// like a bad file id).
	Path Path
	// Err is the answer: a ResultError, *HTTPError, ErrBadFileID, ctx.Err(), ...
	Err error
	// RingErr is why the ring path did not serve the needle when Path is PathHTTP.
	RingErr error
}

func (e *NeedleError) Error() string {
	s := fmt.Sprintf("swring: read needle %s from %s", e.FileID, e.VolumeServer)
	if e.Path != PathAuto {
		s += " (" + e.Path.String() + ")"
	}
	s += ": " + e.Err.Error()
	if e.RingErr != nil && e.Path == PathHTTP {
		s += " (ring: " + e.RingErr.Error() + ")"
	}
	return s
}

// Unwrap returns Err.
func (e *NeedleError) Unwrap() error { return e.Err }

// HTTPError is a volume server's answer other than 200 or 206 on the HTTP path. 404
// matches ErrNeedleNotFound, 416 ErrRangeNotSatisfiable and 401 ErrUnauthorized under
// errors.Is.
type HTTPError struct {
	StatusCode int    // e.g. 404
	Status     string // e.g. "404 Not Found"
	URL        string // the GET's URL
	// Body is the start of the response body (the volume server's reason, if any).
	Body string
}

func (e *HTTPError) Error() string {
	s := "swring: GET " + e.URL + ": " + e.Status
	if e.Body != "" {
		s += ": " + e.Body
	}
	return s
}

// Is maps status codes onto the package sentinels.
func (e *HTTPError) Is(target error) bool {
	switch e.StatusCode {
	case http.StatusNotFound:
		return target == ErrNeedleNotFound
	case http.StatusRequestedRangeNotSatisfiable:
		return target == ErrRangeNotSatisfiable
	case http.StatusUnauthorized:
		return target == ErrUnauthorized
	}
	return false
}

// NeedleReaderStats are counters of a NeedleReader.
type NeedleReaderStats struct {
	RingReads    uint64 // reads the ring served
	HTTPReads    uint64 // reads HTTP served (fallbacks and Only = PathHTTP)
	Fallbacks    uint64 // reads tried on the ring and then over HTTP
	Failures     uint64 // reads that returned an error
	RingBytes    uint64 // bytes of Needle.Data the ring served
	HTTPBytes    uint64 // bytes of Needle.Data HTTP served
	Dials        uint64 // engine sessions opened
	DialFailures uint64 // failed Dials
	PeerConnects uint64 // ConnectPeer calls that returned a handle
}

// NeedleReader reads SeaweedFS needles by file id the fast way: READ_NEEDLE through the
// local engine from the engine beside the volume server, zero copy into shared memory,
// falling back to the volume server's HTTP GET when the ring is not available. Both paths
// return the same bytes (see ReadNeedle). It is safe for concurrent use; Close it when
// done.
type NeedleReader struct {
	opts        NeedleReaderOptions
	httpc       *http.Client
	ownHTTP     *http.Transport
	engineAddrs map[string]string // EngineAddrs by host:port

	dialMu     sync.Mutex // serializes dials
	mu         sync.Mutex
	c          *Client           // the engine session; nil before the first dial or after a loss
	dialErr    error             // the last Dial's error, while RedialInterval runs
	dialAt     time.Time         // when it failed
	peers      map[string]Peer   // engine address -> handle, for c
	addrs      map[string]string // volume server -> engine address (resolution cache)
	closed     bool
	lastLogged string

	nRing, nHTTP, nFallback, nFail, ringBytes, httpBytes, nDials, nDialFail, nPeers atomic.Uint64
}

// NewNeedleReader returns a reader with the given options. It connects to nothing yet: the
// engine is dialed on first use.
func NewNeedleReader(opts NeedleReaderOptions) *NeedleReader {
	if opts.ChunkSize <= 0 {
		opts.ChunkSize = DefaultNeedleChunkSize
	}
	opts.ChunkSize = min(opts.ChunkSize, math.MaxInt32-NeedleMetaLen)
	if opts.ChunksInFlight <= 0 {
		opts.ChunksInFlight = DefaultNeedleChunksInFlight
	}
	if opts.Concurrency <= 0 {
		opts.Concurrency = DefaultNeedleConcurrency
	}
	if opts.RedialInterval == 0 {
		opts.RedialInterval = DefaultRedialInterval
	}
	r := &NeedleReader{opts: opts, httpc: opts.HTTPClient, engineAddrs: map[string]string{}, peers: map[string]Peer{}, addrs: map[string]string{}}
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
// client. Reads after Close fail with ErrClosed.
func (r *NeedleReader) Close() error {
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
func (r *NeedleReader) Stats() NeedleReaderStats {
	return NeedleReaderStats{
		RingReads: r.nRing.Load(), HTTPReads: r.nHTTP.Load(), Fallbacks: r.nFallback.Load(), Failures: r.nFail.Load(),
		RingBytes: r.ringBytes.Load(), HTTPBytes: r.httpBytes.Load(),
		Dials: r.nDials.Load(), DialFailures: r.nDialFail.Load(), PeerConnects: r.nPeers.Load(),
	}
}

// CheckEngine reports whether the local engine is reachable: it dials it if there is no
// session (subject to RedialInterval) and pings it. nil means reads can take the ring
// (the volume servers' engines are only contacted by reads).
func (r *NeedleReader) CheckEngine(ctx context.Context) error {
	c, err := r.session(ctx)
	if err != nil {
		return err
	}
	if err := c.Ping(ctx); err != nil {
		if errors.Is(err, ErrEngineUnavailable) || errors.Is(err, ErrClosed) {
			r.dropSession(c, err)
		}
		return err
	}
	return nil
}

// ReadNeedle reads the whole needle fileID ("3,01637037d6", see ParseFileID) stored on
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
// (ErrPeerFailed, ErrTimedOut, ErrNoSuchPeer), the engine does not know the volume
// (ErrNoSuchVolume: the volume server may still proxy or redirect the GET to a replica),
// the stored needle failed its checks (ErrCorrupt: the volume server answers for itself;
// an error there is returned), or any other failure of the engine or the protocol. Answers
// about the needle are final and returned as they are: ErrNoSuchNeedle, ErrNeedleDeleted,
// ErrCookieMismatch (unless FallbackOnNotFound; all three match ErrNeedleNotFound) and
// ErrRangeNotSatisfiable. Errors are *NeedleError; over HTTP a 404 matches
// ErrNeedleNotFound (the volume server answers 404 for all of these cases).
func (r *NeedleReader) ReadNeedle(ctx context.Context, volumeServer, fileID string) (*Needle, error) {
	return r.read(ctx, NeedleRequest{VolumeServer: volumeServer, FileID: fileID})
}

// ReadNeedleRange reads at most length bytes of needle fileID's data from offset (length
// <= 0: to the end), like ReadNeedle; the HTTP path sends "Range: bytes=offset-end". The
// range is of the data ReadNeedle returns: of the decompressed data for a compressed
// needle (the whole needle is read and decompressed first, as the volume server does for a
// Range request without Accept-Encoding: gzip), of the stored data with KeepCompressed. A
// range that ends past the data is cut at its end; one that starts at or past the end
// fails with ErrRangeNotSatisfiable (HTTP 416). Needle.Offset and Needle.Size tell where
// the bytes lie in the whole data.
func (r *NeedleReader) ReadNeedleRange(ctx context.Context, volumeServer, fileID string, offset, length int64) (*Needle, error) {
	return r.read(ctx, NeedleRequest{VolumeServer: volumeServer, FileID: fileID, Ranged: true, Offset: offset, Length: length})
}

// ReadNeedleWith is ReadNeedle, ReadNeedleRange or ReadNeedleInto with every option of a
// NeedleRequest, e.g. its JWT.
func (r *NeedleReader) ReadNeedleWith(ctx context.Context, q NeedleRequest) (*Needle, error) {
	return r.read(ctx, q)
}

// ReadNeedleInto is ReadNeedle with the data written into dst when it fits (see
// NeedleRequest.Dst): Needle.Data is then dst[:len], with no allocation for the data.
func (r *NeedleReader) ReadNeedleInto(ctx context.Context, volumeServer, fileID string, dst []byte) (*Needle, error) {
	return r.read(ctx, NeedleRequest{VolumeServer: volumeServer, FileID: fileID, Dst: dst})
}

// dataBuf returns a slice of n bytes for a needle's data: the request's Dst when it holds
// them, else a new one.
func dataBuf(q *NeedleRequest, n uint64) []byte {
	if uint64(cap(q.Dst)) >= n {
		return q.Dst[:n]
	}
	return make([]byte, n)
}

// NeedleRequest is one read of ReadNeedles.
type NeedleRequest struct {
	// VolumeServer and FileID are as for ReadNeedle.
	VolumeServer string
	FileID       string
	// Ranged reads Length bytes from Offset (see ReadNeedleRange); otherwise the whole
	// needle is read and Offset and Length are ignored.
	Ranged bool
	Offset int64
	Length int64
	// Dst, when its capacity holds the data, receives it: Needle.Data is then Dst[:n], and
	// a caller that reads many needles into one buffer allocates nothing per read for the
	// data (at 1 MiB per read, allocation and garbage collection otherwise cost more than
	// the transfer). The caller must not use Dst for anything else until done with the
	// Needle. Not used for gzip needles that are decompressed.
	Dst []byte
	// JWT is the read token for FileID that SeaweedFS hands out when its volume servers
	// check reads ([jwt.signing.read] in security.toml): the master's lookup answers it in
	// its Authorization header, filer chunks carry it. The HTTP path sends it as
	// "Authorization: Bearer JWT" (overriding HTTPHeader's); the ring path carries it in
	// every READ_NEEDLE (SetNeedleJWT) to the volume server's engine, which verifies it as
	// the volume server does when given the same security.toml. "" sends none. A refusal
	// matches ErrUnauthorized on either path and is final (not retried over HTTP). A JWT
	// longer than MaxNeedleJWTLen is sent over HTTP only.
	JWT string
}

// NeedleResult is the outcome of one NeedleRequest: a Needle or an error (*NeedleError).
type NeedleResult struct {
	Needle *Needle // nil on error
	Err    error
}

// ReadNeedles reads many needles at once and returns one result per request, in order.
// Up to Concurrency needles are in progress together: their first READ_NEEDLEs are
// submitted with SubmitBatch (one ring publication per group), their continuations, HTTP
// fallbacks and decompression run concurrently. Each result is what ReadNeedle or
// ReadNeedleRange would have returned.
func (r *NeedleReader) ReadNeedles(ctx context.Context, reqs []NeedleRequest) []NeedleResult {
	out := make([]NeedleResult, len(reqs))
	slots := make(chan struct{}, r.opts.Concurrency)
	var wg sync.WaitGroup
	// run completes request i in a goroutine of its own: j is its submitted first
	// READ_NEEDLE, or nil with ringErr why the ring was not used (nil: not tried).
	run := func(i int, fid FileID, j *ringJob, ringErr error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-slots }()
			var n *Needle
			if j != nil {
				n, ringErr = r.finish(ctx, j)
			}
			out[i].Needle, out[i].Err = r.complete(ctx, reqs[i], fid, n, ringErr)
		}()
	}
	for i := 0; i < len(reqs); {
		// One group: a slot for each request, at least one (waiting for it), as many more
		// as are free.
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			for ; i < len(reqs); i++ {
				out[i].Err = &NeedleError{FileID: reqs[i].FileID, VolumeServer: reqs[i].VolumeServer, Err: ctx.Err()}
			}
			continue
		}
		k := 1
	more:
		for i+k < len(reqs) && k < submitChunk {
			select {
			case slots <- struct{}{}:
				k++
			default:
				break more
			}
		}
		group := reqs[i : i+k]
		var jobs []*ringJob
		used := 0
		for g := range group {
			q := &group[g]
			fid, err := ParseFileID(q.FileID)
			if err != nil || r.opts.Only == PathHTTP || r.isClosed() || (q.Ranged && q.Offset < 0) {
				run(i+g, fid, nil, nil) // HTTP, or complete reports what is wrong
				used++
				continue
			}
			if err := ringCarriesJWT(q.JWT); err != nil {
				run(i+g, fid, nil, r.ringOnly(err))
				used++
				continue
			}
			j, err := r.prepare(ctx, *q, fid, len(jobs) == 0)
			if errors.Is(err, ErrNoBufferSpace) {
				break // the rest waits for the next group
			}
			used++
			if err != nil {
				run(i+g, fid, nil, err)
				continue
			}
			j.idx = i + g
			jobs = append(jobs, j)
		}
		for ; k > used; k-- {
			<-slots
		}
		// One SubmitBatch per session (a redial during the group splits it).
		for len(jobs) > 0 {
			c := jobs[0].c
			same := 0
			for same < len(jobs) && jobs[same].c == c {
				same++
			}
			batch := jobs[:same]
			jobs = jobs[same:]
			reqsRing := make([]Request, len(batch))
			for x, j := range batch {
				reqsRing[x] = j.request()
			}
			tickets := make([]Ticket, len(batch))
			n, err := c.SubmitBatch(ctx, reqsRing, tickets)
			for x, j := range batch {
				if x < n {
					j.t = tickets[x]
					run(j.idx, j.id, j, nil)
					continue
				}
				j.buf.Release()
				r.noteRingErr(j, err)
				run(j.idx, j.id, nil, err)
			}
		}
		i += used
	}
	wg.Wait()
	return out
}

// read is one ReadNeedle/ReadNeedleRange.
func (r *NeedleReader) read(ctx context.Context, q NeedleRequest) (*Needle, error) {
	if err := ctx.Err(); err != nil {
		return nil, &NeedleError{FileID: q.FileID, VolumeServer: q.VolumeServer, Err: err}
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
	if len(jwt) > MaxNeedleJWTLen {
		return fmt.Errorf("%w: read JWT of %d bytes, a READ_NEEDLE carries at most MaxNeedleJWTLen = %d", ErrInvalidEntry, len(jwt), MaxNeedleJWTLen)
	}
	return nil
}

// ringOnly is the ring error for a read the ring cannot make: returned as the answer with
// Only == PathRing, nil (read over HTTP, not counted as a fallback) otherwise.
func (r *NeedleReader) ringOnly(err error) error {
	if r.opts.Only == PathRing {
		return err
	}
	return nil
}

func (r *NeedleReader) isClosed() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.closed
}

// complete turns the ring's outcome into the read's: the needle, the ring's answer, or the
// HTTP path's. n == nil && ringErr == nil means the ring was not tried.
func (r *NeedleReader) complete(ctx context.Context, q NeedleRequest, fid FileID, n *Needle, ringErr error) (*Needle, error) {
	fail := func(p Path, err error) (*Needle, error) {
		r.nFail.Add(1)
		return nil, &NeedleError{FileID: q.FileID, VolumeServer: q.VolumeServer, Path: p, Err: err, RingErr: ringErr}
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
		return fail(PathAuto, ErrClosed)
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

// fallsBack decides whether a ring error goes to HTTP (see ReadNeedle).
func (r *NeedleReader) fallsBack(ctx context.Context, err error) bool {
	switch {
	case r.opts.Only == PathRing, ctx.Err() != nil, errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return false
	case errors.Is(err, ErrRangeNotSatisfiable), errors.Is(err, ErrUnauthorized):
		// The volume's answer (a JWT the volume server would refuse just the same).
		return false
	case errors.Is(err, ErrNoSuchNeedle), errors.Is(err, ErrNeedleDeleted), errors.Is(err, ErrCookieMismatch):
		return r.opts.FallbackOnNotFound
	}
	return true
}

// ringJob is one needle read on the ring: the first READ_NEEDLE into buf, then finish.
type ringJob struct {
	q    NeedleRequest
	id   FileID
	idx  int
	c    *Client
	peer Peer
	vs   string // volume server host:port
	addr string // its engine's address
	buf  Buffer // the first request's buffer (owned until finish)
	off  uint64 // the first request's range
	len  uint64
	t    Ticket
}

// request is the first READ_NEEDLE: always ranged, so that any needle fits (the metadata
// says the whole size; finish reads the rest).
func (j *ringJob) request() Request {
	return j.withJWT(ReadNeedleRangeRequest(j.peer, j.id, j.off, j.len, j.buf))
}

// withJWT stamps the read's JWT on one of its READ_NEEDLEs (every submission: the reply
// overwrites it).
func (j *ringJob) withJWT(r Request) Request {
	if j.q.JWT != "" {
		// Cannot fail: the opcode is READ_NEEDLE, the length was checked by ringCarriesJWT
		// and the buffer holds NeedleMetaLen bytes (checkNeedleBuf's minimum).
		_ = SetNeedleJWT(&r, j.q.JWT)
	}
	return r
}

// chunkCap is the most data bytes one READ_NEEDLE of c asks for.
func (r *NeedleReader) chunkCap(c *Client) int {
	area := c.Layout().BufSize
	return int(min(uint64(r.opts.ChunkSize), area-NeedleMetaLen))
}

// prepare finds the session and peer and reserves the first buffer (waiting for space when
// wait, else failing with ErrNoBufferSpace).
func (r *NeedleReader) prepare(ctx context.Context, q NeedleRequest, fid FileID, wait bool) (*ringJob, error) {
	c, err := r.session(ctx)
	if err != nil {
		return nil, err
	}
	j := &ringJob{q: q, id: fid, c: c}
	if j.peer, j.vs, j.addr, err = r.peer(ctx, c, q.VolumeServer); err != nil {
		return nil, err
	}
	capacity := r.chunkCap(c)
	if q.Ranged {
		j.off = uint64(q.Offset)
		if q.Length > 0 {
			capacity = int(min(int64(capacity), q.Length))
		}
	}
	j.len = uint64(capacity)
	if wait {
		j.buf, err = c.AllocBuffer(ctx, NeedleMetaLen+capacity)
	} else {
		j.buf, err = c.TryAllocBuffer(NeedleMetaLen + capacity)
	}
	if err != nil {
		if !errors.Is(err, ErrNoBufferSpace) {
			r.noteRingErr(j, err)
		}
		return nil, err
	}
	return j, nil
}

// errNeedleChanged: the needle's metadata changed between two READ_NEEDLEs of one read (it
// was overwritten meanwhile). Not an answer: the read goes over HTTP.
var errNeedleChanged = fmt.Errorf("%w: needle changed while it was read range by range", ErrProtocol)

// maxNeedleData is the largest data a SeaweedFS needle has (its data size is 32 bits).
const maxNeedleData = math.MaxUint32

// finish waits for the first READ_NEEDLE of j, reads the rest of what the request needs,
// and builds the Needle. It releases j.buf.
func (r *NeedleReader) finish(ctx context.Context, j *ringJob) (*Needle, error) {
	defer j.buf.Release()
	res, err := j.t.Wait(ctx)
	retried := false
	if errors.Is(err, ErrRangeNotSatisfiable) && (!j.q.Ranged || (j.off > 0 && !r.opts.KeepCompressed)) {
		// Not necessarily the answer: (a) an engine may refuse offset 0 of an empty needle:
		// ask without a range (an empty needle fits any buffer); (b) the range is of the
		// decompressed data if the needle is compressed, which can be longer than the
		// stored data: read from 0 to see the metadata.
		retried, j.off = true, 0
		var t Ticket
		again := ReadNeedleRangeRequest(j.peer, j.id, 0, j.len, j.buf)
		if !j.q.Ranged {
			again = ReadNeedleRequest(j.peer, j.id, j.buf)
		}
		again = j.withJWT(again)
		t, err = j.c.Submit(ctx, &again)
		if err == nil {
			res, err = t.Wait(ctx)
		}
	}
	if err != nil {
		r.noteRingErr(j, err)
		return nil, err
	}
	m, data, err := DecodeReadNeedle(j.buf, res)
	if err == nil && (m.RangeOffset != j.off || m.DataSize > maxNeedleData) {
		err = fmt.Errorf("%w: READ_NEEDLE of offset %d answered offset %d of %d bytes", ErrProtocol, j.off, m.RangeOffset, m.DataSize)
	}
	total := m.DataSize
	if err == nil && j.off < total && uint64(len(data)) != min(j.len, total-j.off) {
		err = fmt.Errorf("%w: READ_NEEDLE of %d bytes at %d of %d returned %d", ErrProtocol, j.len, j.off, total, len(data))
	}
	if err != nil {
		r.noteRingErr(j, err)
		return nil, err
	}
	n := &Needle{
		FileID:        j.id,
		Name:          string(m.Name),
		Mime:          string(m.Mime),
		ETag:          fmt.Sprintf("%08x", m.Checksum),
		Compressed:    m.Flags&NeedleFlagGzip != 0,
		ChunkManifest: m.Flags&NeedleFlagChunkManifest != 0,
		Flags:         m.Flags,
		Path:          PathRing,
	}
	if m.LastModified != 0 {
		n.LastModified = time.Unix(int64(m.LastModified), 0)
	}
	if n.Compressed && !r.opts.KeepCompressed {
		// As the volume server: the whole stored data, decompressed, then the range.
		stored := make([]byte, total)
		have := 0
		if j.off == 0 {
			have = copy(stored, data)
		}
		if err := r.readSpan(ctx, j, &m, stored[have:], uint64(have)); err != nil {
			return nil, err
		}
		content := stored
		if isGzip(stored) {
			if content, err = gunzip(stored); err != nil {
				return nil, fmt.Errorf("%w: stored gzip data does not decompress: %v", ErrCorrupt, err)
			}
		} // else: flagged but not gzip, served as stored (util.DecompressData)
		n.Size = int64(len(content))
		if !j.q.Ranged {
			n.Data = content
			// A plain Go GET accepts gzip: the volume server sends the stored bytes gzip-encoded.
			n.ContentType = contentTypeLike(n.Mime, n.Name, content, isGzip(stored))
			return n, nil
		}
		if j.q.Offset >= n.Size {
			return nil, ErrRangeNotSatisfiable
		}
		end := n.Size
		if j.q.Length > 0 && j.q.Length < end-j.q.Offset {
			end = j.q.Offset + j.q.Length
		}
		n.Data, n.Offset = content[j.q.Offset:end:end], j.q.Offset
		n.ContentType = contentTypeLike(n.Mime, n.Name, n.Data, false)
		return n, nil
	}
	n.Size, n.Offset = int64(total), int64(j.off)
	if j.q.Ranged && (j.off >= total || retried) {
		return nil, ErrRangeNotSatisfiable
	}
	want := total - j.off
	if j.q.Ranged && j.q.Length > 0 {
		want = min(want, uint64(j.q.Length))
	}
	n.Data = dataBuf(&j.q, want)
	have := copy(n.Data, data)
	if err := r.readSpan(ctx, j, &m, n.Data[have:], j.off+uint64(have)); err != nil {
		return nil, err
	}
	// Stored bytes of a compressed needle: a GET that accepts gzip (KeepCompressed, or a
	// whole needle) gets them gzip-encoded if they are gzip; when the read does not show
	// the first stored bytes, assume so (SeaweedFS only flags gzip data).
	encoded := n.Compressed && (r.opts.KeepCompressed || !j.q.Ranged) && (j.off > 0 || len(n.Data) < 2 || isGzip(n.Data))
	n.ContentType = contentTypeLike(n.Mime, n.Name, n.Data, encoded)
	return n, nil
}

// readSpan reads stored data bytes [from, from+len(dst)) of j's needle into dst with
// ranged READ_NEEDLEs, up to ChunksInFlight at a time, each checked against the first
// answer's metadata. It uses j.buf and whatever more buffers are free (it never waits for
// buffer space while holding one, so readers cannot deadlock on the buffer area).
func (r *NeedleReader) readSpan(ctx context.Context, j *ringJob, first *NeedleMeta, dst []byte, from uint64) error {
	if len(dst) == 0 {
		return nil
	}
	chunk := r.chunkCap(j.c)
	bufs := []Buffer{j.buf}
	own0 := false // bufs[0] is not j.buf
	if j.buf.Len()-NeedleMetaLen < min(chunk, len(dst)) {
		// The first buffer was sized for a short range: take a full one if there is room.
		if b, err := j.c.TryAllocBuffer(NeedleMetaLen + min(chunk, len(dst))); err == nil {
			bufs[0], own0 = b, true
		}
	}
	per := bufs[0].Len() - NeedleMetaLen
	for len(bufs) < r.opts.ChunksInFlight && len(bufs)*per < len(dst) {
		b, err := j.c.TryAllocBuffer(NeedleMetaLen + per)
		if err != nil {
			break
		}
		bufs = append(bufs, b)
	}
	defer func() {
		for x, b := range bufs {
			if x > 0 || own0 {
				b.Release()
			}
		}
	}()
	reqs := make([]Request, len(bufs))
	tickets := make([]Ticket, len(bufs))
	lens := make([]int, len(bufs))
	for pos := 0; pos < len(dst); {
		k := 0
		for p := pos; k < len(bufs) && p < len(dst); k++ {
			lens[k] = min(bufs[k].Len()-NeedleMetaLen, len(dst)-p)
			reqs[k] = j.withJWT(ReadNeedleRangeRequest(j.peer, j.id, from+uint64(p), uint64(lens[k]), bufs[k]))
			p += lens[k]
		}
		n, err := j.c.SubmitBatch(ctx, reqs[:k], tickets)
		for x := 0; x < n; x++ {
			res, werr := tickets[x].Wait(ctx)
			if werr == nil {
				var m NeedleMeta
				var data []byte
				m, data, werr = DecodeReadNeedle(bufs[x], res)
				switch {
				case werr != nil:
				case m.DataSize != first.DataSize || m.Checksum != first.Checksum || m.AppendAtNs != first.AppendAtNs ||
					m.Flags != first.Flags || m.RangeOffset != from+uint64(pos):
					werr = errNeedleChanged
				case len(data) != lens[x]:
					werr = fmt.Errorf("%w: READ_NEEDLE of %d bytes at %d returned %d", ErrProtocol, lens[x], from+uint64(pos), len(data))
				default:
					pos += copy(dst[pos:], data)
				}
			}
			if werr != nil && err == nil {
				err = werr
			}
		}
		if err != nil {
			r.noteRingErr(j, err)
			return err
		}
	}
	return nil
}

// noteRingErr forgets what a ring error shows to be stale: the session (engine gone) or
// the peer handle and its resolved address (peer failures).
func (r *NeedleReader) noteRingErr(j *ringJob, err error) {
	switch {
	case errors.Is(err, ErrEngineUnavailable), errors.Is(err, ErrClosed):
		r.dropSession(j.c, err)
	case errors.Is(err, ErrPeerFailed), errors.Is(err, ErrTimedOut), errors.Is(err, ErrNoSuchPeer):
		r.mu.Lock()
		if r.c == j.c && r.peers[j.addr] != 0 {
			delete(r.peers, j.addr)
		}
		delete(r.addrs, j.vs)
		r.mu.Unlock()
	}
}

// session returns the engine session, dialing it when there is none or it ended.
func (r *NeedleReader) session(ctx context.Context) (*Client, error) {
	r.mu.Lock()
	c, dialErr, dialAt, closed := r.c, r.dialErr, r.dialAt, r.closed
	r.mu.Unlock()
	switch {
	case closed:
		return nil, ErrClosed
	case c != nil && c.Err() == nil:
		return c, nil
	case c != nil:
		r.dropSession(c, c.Err())
	case dialErr != nil && r.opts.RedialInterval > 0 && time.Since(dialAt) < r.opts.RedialInterval:
		return nil, dialErr
	}
	r.dialMu.Lock()
	defer r.dialMu.Unlock()
	r.mu.Lock()
	if c := r.c; c != nil && c.Err() == nil { // another caller dialed meanwhile
		r.mu.Unlock()
		return c, nil
	}
	r.mu.Unlock()
	c, err := r.dial(ctx)
	if err != nil && ctx.Err() != nil {
		return nil, err // not the engine's fault: no back-off
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		if c != nil {
			go c.Close()
		}
		return nil, ErrClosed
	}
	r.c, r.dialErr, r.dialAt = c, err, time.Now()
	r.peers = map[string]Peer{} // handles of the old engine mean nothing to a new one
	if err != nil {
		r.nDialFail.Add(1)
		r.logLocked("swring: needle reader: engine unavailable, reading over HTTP: %v", err)
		return nil, err
	}
	r.nDials.Add(1)
	r.logLocked("swring: needle reader: engine session %d open (%s)", c.SessionID(), r.socketPath())
	return c, nil
}

func (r *NeedleReader) socketPath() string {
	if r.opts.EngineSocket != "" {
		return r.opts.EngineSocket
	}
	return DefaultSocketPath()
}

// logLocked logs a line unless it repeats the previous one. Caller holds mu.
func (r *NeedleReader) logLocked(format string, args ...any) {
	if r.opts.Logf == nil {
		return
	}
	line := fmt.Sprintf(format, args...)
	if line != r.lastLogged {
		r.lastLogged = line
		r.opts.Logf("%s", line)
	}
}

func (r *NeedleReader) dial(ctx context.Context) (*Client, error) {
	path := r.socketPath()
	if r.opts.DialOptions != nil {
		return Dial(ctx, path, r.opts.DialOptions...)
	}
	c, err := Dial(ctx, path, WithBufferSize(DefaultNeedleReaderBufferBytes))
	var ce *ControlError
	if errors.As(err, &ce) && (ce.Code == CtlBadRequest || ce.Code == CtlRegionUnavailable) {
		return Dial(ctx, path) // the engine's maximum is smaller: take its default
	}
	return c, err
}

// dropSession forgets c (if it is still the current session) and closes it: the next read
// dials again. Requests still in flight on c fail and take the HTTP path.
func (r *NeedleReader) dropSession(c *Client, why error) {
	r.mu.Lock()
	if r.c != c || c == nil {
		r.mu.Unlock()
		return
	}
	r.c, r.dialErr = nil, nil
	r.peers = map[string]Peer{}
	r.logLocked("swring: needle reader: engine session %d lost: %v", c.SessionID(), why)
	r.mu.Unlock()
	go c.Close()
}

// peer returns the handle of volumeServer's engine in session c, connecting it once.
func (r *NeedleReader) peer(ctx context.Context, c *Client, volumeServer string) (p Peer, vs, addr string, err error) {
	vs, err = volumeServerHostPort(volumeServer)
	if err != nil {
		return 0, "", "", err
	}
	if addr, err = r.engineAddr(ctx, volumeServer, vs); err != nil {
		return 0, vs, "", err
	}
	r.mu.Lock()
	p, ok := r.peers[addr]
	r.mu.Unlock()
	if ok {
		return p, vs, addr, nil
	}
	if p, err = c.ConnectPeer(ctx, addr); err != nil {
		if errors.Is(err, ErrEngineUnavailable) || errors.Is(err, ErrClosed) {
			r.dropSession(c, err)
		} else {
			r.mu.Lock()
			delete(r.addrs, vs)
			r.mu.Unlock()
		}
		return 0, vs, addr, err
	}
	r.nPeers.Add(1)
	r.mu.Lock()
	if r.c == c {
		r.peers[addr] = p
	}
	r.mu.Unlock()
	return p, vs, addr, nil
}

// engineAddr maps a volume server to its engine's UCX address: ResolveEngine, else
// EngineAddrs, else the convention (cached until a peer failure).
func (r *NeedleReader) engineAddr(ctx context.Context, volumeServer, hostPort string) (string, error) {
	if r.opts.ResolveEngine != nil {
		return r.opts.ResolveEngine(ctx, volumeServer)
	}
	if a, ok := r.engineAddrs[hostPort]; ok {
		return a, nil
	}
	r.mu.Lock()
	a, ok := r.addrs[hostPort]
	r.mu.Unlock()
	if ok {
		return a, nil
	}
	a, err := ResolveEngineAddr(ctx, hostPort, r.opts.EnginePort)
	if err != nil {
		return "", err
	}
	r.mu.Lock()
	r.addrs[hostPort] = a
	r.mu.Unlock()
	return a, nil
}

// ResolveEngineAddr is the convention for finding a volume server's engine: the UCX
// address port (0 = DefaultEnginePort) on the volume server's host, the host resolved to an
// IP address (IPv4 preferred) since engines take ip:port. volumeServer is "host:port",
// "host" or a URL.
func ResolveEngineAddr(ctx context.Context, volumeServer string, port int) (string, error) {
	hp, err := volumeServerHostPort(volumeServer)
	if err != nil {
		return "", err
	}
	host := hp
	if h, _, err := net.SplitHostPort(hp); err == nil {
		host = h
	}
	if port == 0 {
		port = DefaultEnginePort
	}
	if port < 0 || port > math.MaxUint16 {
		return "", fmt.Errorf("swring: engine port %d out of range", port)
	}
	ip, err := netip.ParseAddr(strings.Trim(host, "[]"))
	if err != nil {
		ips, lerr := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
		if lerr != nil {
			return "", fmt.Errorf("swring: resolve the engine of volume server %q: %w", volumeServer, lerr)
		}
		if len(ips) == 0 {
			return "", fmt.Errorf("swring: resolve the engine of volume server %q: no address", volumeServer)
		}
		ip = ips[0]
		for _, a := range ips {
			if a.Unmap().Is4() {
				ip = a
				break
			}
		}
	}
	return netip.AddrPortFrom(ip.Unmap().WithZone(ip.Zone()), uint16(port)).String(), nil
}

// volumeServerHostPort reduces a volume server location ("host:port", "host", a URL) to
// its host[:port].
func volumeServerHostPort(s string) (string, error) {
	if strings.Contains(s, "://") {
		u, err := url.Parse(s)
		if err != nil || u.Host == "" {
			return "", fmt.Errorf("swring: volume server %q is not host:port or a URL", s)
		}
		return u.Host, nil
	}
	if i := strings.IndexByte(s, '/'); i >= 0 {
		s = s[:i]
	}
	if s == "" {
		return "", errors.New("swring: empty volume server address")
	}
	return s, nil
}

// volumeServerURL is the base URL of a volume server location (http:// unless it names a
// scheme).
func volumeServerURL(s string) (string, error) {
	if strings.Contains(s, "://") {
		u, err := url.Parse(s)
		if err != nil || u.Host == "" {
			return "", fmt.Errorf("swring: volume server %q is not host:port or a URL", s)
		}
		return u.Scheme + "://" + u.Host, nil
	}
	hp, err := volumeServerHostPort(s)
	if err != nil {
		return "", err
	}
	return "http://" + hp, nil
}

// httpRead is the HTTP path: GET <volume server>/<fid>?cm=false, with a Range header for
// ranges and Accept-Encoding: gzip with KeepCompressed.
func (r *NeedleReader) httpRead(ctx context.Context, q NeedleRequest, fid FileID) (*Needle, error) {
	base, err := volumeServerURL(q.VolumeServer)
	if err != nil {
		return nil, err
	}
	u := base + "/" + fid.String() + "?cm=false"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	for k, v := range r.opts.HTTPHeader {
		req.Header[k] = v
	}
	if q.JWT != "" {
		// As SeaweedFS's own readers send it (util/http: "BEARER " + jwt; the volume
		// server's GetJwt takes the scheme in any case).
		req.Header.Set("Authorization", "Bearer "+q.JWT)
	}
	if q.Ranged {
		rg := "bytes=" + strconv.FormatInt(q.Offset, 10) + "-"
		if q.Length > 0 && q.Length <= math.MaxInt64-q.Offset {
			rg += strconv.FormatInt(q.Offset+q.Length-1, 10)
		}
		req.Header.Set("Range", rg)
	}
	if r.opts.KeepCompressed {
		// The stored bytes of a gzip needle (Content-Encoding: gzip); set by hand, so the
		// transport does not decompress them.
		req.Header.Set("Accept-Encoding", "gzip")
	}
	resp, err := r.httpc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusPartialContent {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return nil, &HTTPError{StatusCode: resp.StatusCode, Status: resp.Status, URL: u, Body: strings.TrimSpace(string(body))}
	}
	var body []byte
	if cl := resp.ContentLength; cl >= 0 && cl <= int64(cap(q.Dst)) {
		// Known length that fits the caller's buffer: read straight into it.
		body = q.Dst[:cl]
		if _, err := io.ReadFull(resp.Body, body); err != nil {
			return nil, fmt.Errorf("swring: GET %s: read body: %w", u, err)
		}
	} else {
		if cl >= 0 && cl <= maxNeedleData {
			body = make([]byte, 0, cl+1) // +1: ReadFrom sees EOF without growing
		}
		buf := bytes.NewBuffer(body)
		if _, err := buf.ReadFrom(resp.Body); err != nil {
			return nil, fmt.Errorf("swring: GET %s: read body: %w", u, err)
		}
		body = buf.Bytes()
	}
	n := &Needle{
		FileID:      fid,
		Mime:        resp.Header.Get("Content-Type"),
		ContentType: resp.Header.Get("Content-Type"),
		ETag:        strings.Trim(resp.Header.Get("Etag"), `"`),
		Compressed:  resp.Uncompressed || strings.EqualFold(resp.Header.Get("Content-Encoding"), "gzip"),
		Path:        PathHTTP,
	}
	if _, params, err := mime.ParseMediaType(resp.Header.Get("Content-Disposition")); err == nil {
		n.Name = params["filename"]
	}
	if lm := resp.Header.Get("Last-Modified"); lm != "" {
		if t, err := http.ParseTime(lm); err == nil {
			n.LastModified = t
		}
	}
	if resp.StatusCode == http.StatusPartialContent {
		start, total, ok := parseContentRange(resp.Header.Get("Content-Range"))
		if !ok || start != q.Offset || !q.Ranged {
			return nil, fmt.Errorf("swring: GET %s: unexpected Content-Range %q for range at %d", u, resp.Header.Get("Content-Range"), q.Offset)
		}
		if total < 0 {
			total = start + int64(len(body))
		}
		n.Data, n.Offset, n.Size = body, start, total
		return n, nil
	}
	// 200: the whole data (also when the server ignored a Range): cut the range here.
	n.Size = int64(len(body))
	if !q.Ranged {
		n.Data = body
		return n, nil
	}
	if q.Offset >= n.Size {
		return nil, ErrRangeNotSatisfiable
	}
	end := n.Size
	if q.Length > 0 && q.Length < end-q.Offset {
		end = q.Offset + q.Length
	}
	n.Data, n.Offset = body[q.Offset:end:end], q.Offset
	return n, nil
}

// parseContentRange parses "bytes start-end/total" (total "*": -1).
func parseContentRange(s string) (start, total int64, ok bool) {
	s, ok = strings.CutPrefix(s, "bytes ")
	if !ok {
		return 0, 0, false
	}
	rng, tot, ok := strings.Cut(s, "/")
	if !ok {
		return 0, 0, false
	}
	a, _, ok := strings.Cut(rng, "-")
	if !ok {
		return 0, 0, false
	}
	start, err := strconv.ParseInt(a, 10, 64)
	if err != nil || start < 0 {
		return 0, 0, false
	}
	if tot == "*" {
		return start, -1, true
	}
	total, err = strconv.ParseInt(tot, 10, 64)
	return start, total, err == nil
}

// isGzip reports gzip's magic number at the start of b (SeaweedFS util.IsGzippedContent).
func isGzip(b []byte) bool { return len(b) >= 2 && b[0] == 0x1f && b[1] == 0x8b }

func gunzip(b []byte) ([]byte, error) {
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		return nil, err
	}
	out := bytes.NewBuffer(make([]byte, 0, 2*len(b)))
	if _, err := out.ReadFrom(zr); err != nil {
		return nil, err
	}
	return out.Bytes(), nil
}
