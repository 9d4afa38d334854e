package needle

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/seaweed-ring/seaweed-ring/go-client/internal/fakeengine"
	"github.com/seaweed-ring/seaweed-ring/go-client/internal/wire"
	"github.com/seaweed-ring/seaweed-ring/go-client/ring"
)

// Reader against the fake engine (ring path) and fakeVolumeServer (HTTP path), both
// serving one needleStore (needlestore_test.go): whatever the path, the same bytes.

type readerEnv struct {
	store *needleStore
	eng   *fakeEngine
	sock  string
	vs    *fakeVolumeServer
}

func newReaderEnv(t *testing.T, mod func(*fakeEngine)) *readerEnv {
	t.Helper()
	env := &readerEnv{store: newNeedleStore()}
	env.eng, env.sock = startFake(t, func(e *fakeEngine) {
		e.Needles = env.store
		if mod != nil {
			mod(e)
		}
	})
	env.vs = newFakeVolumeServer(t, env.store)
	return env
}

func (env *readerEnv) reader(t *testing.T, o Options) *Reader {
	t.Helper()
	if o.EngineSocket == "" {
		o.EngineSocket = env.sock
	}
	if o.DialOptions == nil {
		o.DialOptions = []ring.Option{ring.WithBufferSize(4 << 20)}
	}
	if o.ChunkSize == 0 {
		o.ChunkSize = 64 << 10 // several chunks for the big needles
	}
	r := NewReader(o)
	t.Cleanup(func() { r.Close() })
	return r
}

func pattern(n, seed int) []byte {
	b := make([]byte, n)
	fillPattern(b, seed)
	return b
}

func text(n int) []byte {
	var b bytes.Buffer
	for i := 0; b.Len() < n; i++ {
		fmt.Fprintf(&b, "line %d of a compressible text file\n", i)
	}
	return b.Bytes()[:n]
}

type testNeedle struct {
	fid     FileID
	content []byte
	o       needleOpts
}

// putNeedles stores a needle of every kind the reader treats differently.
func putNeedles(store *needleStore) []testNeedle {
	ns := []testNeedle{
		{FileID{1, 0x10, 0x11111111}, pattern(5000, 1), needleOpts{name: "small.bin", mime: "application/x-small", lastModified: 1700000001}},
		{FileID{1, 0x11, 0x22222222}, nil, needleOpts{name: "empty.txt"}},
		{FileID{1, 0x12, 0x33333333}, pattern(64<<10*3+12345, 2), needleOpts{}}, // 3.2 chunks
		{FileID{1, 0x13, 0x44444444}, text(300000), needleOpts{gzip: true, name: "big.txt", mime: "text/plain", lastModified: 1700000003}},
		{FileID{1, 0x14, 0x55555555}, text(700), needleOpts{gzip: true}},
		{FileID{1, 0x15, 0x66666666}, []byte("not gzip, flagged anyway"), needleOpts{gzipFlagOnly: true}},
		{FileID{2, 0x16, 0x77777777}, []byte(`{"name":"f","chunks":[{"fid":"1,10"}]}`), needleOpts{chunkManifest: true}},
		{FileID{2, 0x17, 0x88888888}, []byte("octet, named .txt"), needleOpts{name: "n.txt", mime: "application/octet-stream"}},
		{FileID{2, 0x18, 0x99999999}, pattern(64<<10, 3), needleOpts{}}, // exactly one chunk
		{FileID{2, 0x19, 0xaaaaaaaa}, text(200), needleOpts{gzip: true, chunkManifest: true}},
	}
	for _, n := range ns {
		store.put(n.fid, n.content, n.o)
	}
	return ns
}

type rangeQ struct{ off, n int64 }

func queriesFor(size int64) []rangeQ {
	return []rangeQ{{0, 1}, {0, 10}, {3, 0}, {size / 2, 100}, {size - 1, 10}, {size, 1}, {size + 7, 0},
		{1, size}, {64<<10 - 5, 10}, {64 << 10, 64 << 10}, {size / 3, size / 2}}
}

func sameNeedle(t *testing.T, what string, got, want *Needle, gotErr, wantErr error) {
	t.Helper()
	sameNeedleType(t, what, got, want, gotErr, wantErr, true)
}

func sameNeedleType(t *testing.T, what string, got, want *Needle, gotErr, wantErr error, withType bool) {
	t.Helper()
	if (gotErr == nil) != (wantErr == nil) {
		t.Errorf("%s: error %v, HTTP error %v", what, gotErr, wantErr)
		return
	}
	if gotErr != nil {
		for _, s := range []error{ring.ErrNeedleNotFound, ring.ErrRangeNotSatisfiable} {
			if errors.Is(gotErr, s) != errors.Is(wantErr, s) {
				t.Errorf("%s: error %v, HTTP error %v", what, gotErr, wantErr)
			}
		}
		return
	}
	if !bytes.Equal(got.Data, want.Data) || got.Offset != want.Offset || got.Size != want.Size {
		t.Errorf("%s: %d bytes at %d of %d, HTTP %d bytes at %d of %d", what, len(got.Data), got.Offset, got.Size, len(want.Data), want.Offset, want.Size)
	}
	if got.Name != want.Name || !got.LastModified.Equal(want.LastModified) || got.ETag != want.ETag || (withType && got.ContentType != want.ContentType) {
		t.Errorf("%s: name %q lm %v etag %q type %q; HTTP %q %v %q %q", what, got.Name, got.LastModified, got.ETag, got.ContentType,
			want.Name, want.LastModified, want.ETag, want.ContentType)
	}
}

// TestNeedleReaderSameBytesBothPaths compares the ring path with the HTTP path for every
// kind of needle, whole and by range, decompressed and as stored.
func TestNeedleReaderSameBytesBothPaths(t *testing.T) {
	for _, strict := range []bool{false, true} {
		t.Run(fmt.Sprintf("strictRange=%v", strict), func(t *testing.T) {
			env := newReaderEnv(t, func(e *fakeEngine) { e.Needles.(*needleStore).strictRange = strict })
			ns := putNeedles(env.store)
			for _, keep := range []bool{false, true} {
				onRing := env.reader(t, Options{Only: PathRing, KeepCompressed: keep})
				http := env.reader(t, Options{Only: PathHTTP, KeepCompressed: keep})
				ctx := testCtx(t)
				for _, n := range ns {
					fid := n.fid.String()
					g, gerr := onRing.Read(ctx, env.vs.hostPort(), fid)
					w, werr := http.Read(ctx, env.vs.URL, fid)
					what := fmt.Sprintf("keep=%v %s whole", keep, fid)
					sameNeedle(t, what, g, w, gerr, werr)
					if gerr != nil {
						t.Fatalf("%s: %v", what, gerr)
					}
					if g.Path != PathRing || w.Path != PathHTTP || g.RingErr != nil || w.RingErr != nil {
						t.Errorf("%s: paths %v %v", what, g.Path, w.Path)
					}
					wantData := n.content
					if keep && n.o.gzip {
						wantData = gzipBytes(n.content)
					}
					if !bytes.Equal(g.Data, wantData) || g.Size != int64(len(wantData)) {
						t.Errorf("%s: %d bytes, want %d", what, len(g.Data), len(wantData))
					}
					stored := n.o.gzip || n.o.gzipFlagOnly
					if g.Compressed != stored || g.ChunkManifest != n.o.chunkManifest || (g.Flags&FlagGzip != 0) != stored {
						t.Errorf("%s: compressed %v manifest %v flags %#x", what, g.Compressed, g.ChunkManifest, g.Flags)
					}
					if g.Mime != n.o.mime || g.FileID != n.fid {
						t.Errorf("%s: mime %q fid %v", what, g.Mime, g.FileID)
					}
					for _, q := range queriesFor(g.Size) {
						g, gerr := onRing.ReadRange(ctx, env.vs.hostPort(), fid, q.off, q.n)
						w, werr := http.ReadRange(ctx, "http://"+env.vs.hostPort()+"/", fid, q.off, q.n)
						// (ContentType: the ring cannot know that the stored bytes of gzipFlagOnly
						// are not gzip when it reads them from an offset.)
						sameNeedleType(t, fmt.Sprintf("keep=%v %s range %d+%d", keep, fid, q.off, q.n), g, w, gerr, werr, !(keep && n.o.gzipFlagOnly))
					}
				}
			}
			if env.vs.requests.Load() == 0 || env.eng.NeedleReads.Load() == 0 {
				t.Fatal("a path was not exercised")
			}
		})
	}
}

func TestNeedleReaderHTTPRequests(t *testing.T) {
	env := newReaderEnv(t, nil)
	putNeedles(env.store)
	ctx := testCtx(t)
	r := env.reader(t, Options{Only: PathHTTP, HTTPHeader: http.Header{"Authorization": {"Bearer x"}}})
	if _, err := r.ReadRange(ctx, env.vs.hostPort(), "1,1011111111", 5, 10); err != nil {
		t.Fatal(err)
	}
	req := env.vs.lastRequest()
	if req.URL.Path != "/1,1011111111" || req.URL.RawQuery != "cm=false" || req.Header.Get("Range") != "bytes=5-14" ||
		req.Header.Get("Authorization") != "Bearer x" {
		t.Errorf("request %s %v", req.URL, req.Header)
	}
	// A manifest comes back as its bytes because of cm=false; without it the volume server
	// would resolve it.
	n, err := r.Read(ctx, env.vs.hostPort(), "2,1677777777")
	if err != nil || !strings.HasPrefix(string(n.Data), `{"name"`) {
		t.Fatalf("manifest: %v %q", err, n.Data)
	}
	r.ReadRange(ctx, env.vs.hostPort(), "1,1011111111", 7, 0)
	if h := env.vs.lastRequest().Header.Get("Range"); h != "bytes=7-" {
		t.Errorf("open range header %q", h)
	}
	keep := env.reader(t, Options{Only: PathHTTP, KeepCompressed: true})
	n, err = keep.Read(ctx, env.vs.hostPort(), "1,1344444444")
	if err != nil || !n.Compressed || !isGzip(n.Data) || env.vs.lastRequest().Header.Get("Accept-Encoding") != "gzip" {
		t.Errorf("keep compressed: %v %v", err, n)
	}
	// A plain GET of a gzip needle: decompressed by the transport, and seen as compressed.
	n, err = r.Read(ctx, env.vs.hostPort(), "1,1344444444")
	if err != nil || !n.Compressed || isGzip(n.Data) {
		t.Errorf("decompressed: %v %v", err, n)
	}
}

func TestNeedleReaderAnswersAreFinal(t *testing.T) {
	env := newReaderEnv(t, nil)
	env.store.put(FileID{1, 1, 1}, []byte("gone"), needleOpts{})
	env.store.update(FileID{1, 1, 1}, func(n *storedNeedle) { n.deleted = true })
	env.store.put(FileID{1, 2, 2}, []byte("cookie"), needleOpts{})
	env.store.put(FileID{1, 3, 3}, []byte("small"), needleOpts{})
	ctx := testCtx(t)
	r := env.reader(t, Options{})
	for _, c := range []struct {
		fid  string
		want error
	}{
		{FileID{1, 9, 9}.String(), ring.ErrNoSuchNeedle},
		{FileID{1, 1, 1}.String(), ring.ErrNeedleDeleted},
		{FileID{1, 2, 3}.String(), ring.ErrCookieMismatch},
	} {
		_, err := r.Read(ctx, env.vs.hostPort(), c.fid)
		var ne *Error
		if !errors.Is(err, c.want) || !errors.Is(err, ring.ErrNeedleNotFound) || !errors.As(err, &ne) || ne.Path != PathRing {
			t.Errorf("%s: %v", c.fid, err)
		}
	}
	_, err := r.ReadRange(ctx, env.vs.hostPort(), FileID{1, 3, 3}.String(), 50, 1)
	if !errors.Is(err, ring.ErrRangeNotSatisfiable) {
		t.Errorf("range: %v", err)
	}
	if env.vs.requests.Load() != 0 {
		t.Errorf("answers went to HTTP (%d requests)", env.vs.requests.Load())
	}
	// Over HTTP the same cases are 404s.
	h := env.reader(t, Options{Only: PathHTTP})
	for _, fid := range []FileID{{1, 9, 9}, {1, 1, 1}, {1, 2, 3}, {5, 1, 1}} {
		_, err := h.Read(ctx, env.vs.hostPort(), fid.String())
		var he *HTTPError
		if !errors.Is(err, ring.ErrNeedleNotFound) || !errors.As(err, &he) || he.StatusCode != 404 {
			t.Errorf("HTTP %v: %v", fid, err)
		}
	}
	if _, err := h.ReadRange(ctx, env.vs.hostPort(), FileID{1, 3, 3}.String(), 50, 1); !errors.Is(err, ring.ErrRangeNotSatisfiable) {
		t.Errorf("HTTP range: %v", err)
	}
	// FallbackOnNotFound: the HTTP answer.
	f := env.reader(t, Options{FallbackOnNotFound: true})
	before := env.vs.requests.Load()
	_, err = f.Read(ctx, env.vs.hostPort(), FileID{1, 2, 3}.String())
	var ne *Error
	if !errors.As(err, &ne) || ne.Path != PathHTTP || !errors.Is(ne.RingErr, ring.ErrCookieMismatch) || env.vs.requests.Load() != before+1 {
		t.Errorf("fallback on not found: %v", err)
	}
	// Bad file ids are refused before either path.
	if _, err := r.Read(ctx, env.vs.hostPort(), "1,xyz"); !errors.Is(err, ErrBadFileID) {
		t.Errorf("bad fid: %v", err)
	}
	if _, err := r.ReadRange(ctx, env.vs.hostPort(), "1,0300000003", -1, 1); err == nil {
		t.Error("negative offset accepted")
	}
	if s := r.Stats(); s.RingReads != 0 || s.Failures != 6 || s.HTTPReads != 0 {
		t.Errorf("stats %+v", s)
	}
}

func TestNeedleReaderFallsBack(t *testing.T) {
	env := newReaderEnv(t, nil)
	ns := putNeedles(env.store)
	small := ns[0]
	ctx := testCtx(t)
	var failNext atomic.Int32 // a result code for the next READ_NEEDLE
	env.store.setHook(func(peer netip.AddrPort, fid FileID, e *wire.SQE) int32 { return failNext.Swap(0) })
	r := env.reader(t, Options{})
	read := func(what string, wantPath Path, wantRingErr error) *Needle {
		t.Helper()
		n, err := r.Read(ctx, env.vs.hostPort(), small.fid.String())
		if err != nil || n.Path != wantPath || !bytes.Equal(n.Data, small.content) || n.Name != "small.bin" {
			t.Fatalf("%s: %v %+v", what, err, n)
		}
		if (wantRingErr == nil) != (n.RingErr == nil) || (wantRingErr != nil && !errors.Is(n.RingErr, wantRingErr)) {
			t.Fatalf("%s: ring error %v, want %v", what, n.RingErr, wantRingErr)
		}
		return n
	}
	read("ring", PathRing, nil)
	for _, code := range []ring.ResultError{ring.ErrNoSuchVolume, ring.ErrCorrupt, ring.ErrPeerFailed, ring.ErrTimedOut, ring.ErrNoSuchPeer, ring.ErrInternal, ring.ErrUnknownOpcode, ring.ErrShuttingDown} {
		failNext.Store(int32(code))
		read(code.Error(), PathHTTP, code)
		read("after "+code.Error(), PathRing, nil)
	}
	if s := r.Stats(); s.PeerConnects != 5 || s.Fallbacks != 8 || s.HTTPReads != 8 || s.Dials != 2 {
		// peer failures reconnect the peer (3x), shutting-down the session (and the peer)
		t.Errorf("stats %+v", s)
	}
	// A corrupt needle the volume server cannot read either: its error, the ring's reason.
	env.store.update(small.fid, func(n *storedNeedle) { n.corrupt = true })
	_, err := r.Read(ctx, env.vs.hostPort(), small.fid.String())
	var ne *Error
	var he *HTTPError
	if !errors.As(err, &ne) || ne.Path != PathHTTP || !errors.Is(ne.RingErr, ring.ErrCorrupt) || !errors.As(err, &he) || he.StatusCode != 500 {
		t.Errorf("corrupt: %v", err)
	}
	env.store.update(small.fid, func(n *storedNeedle) { n.corrupt = false })

	// Only = PathRing: no HTTP.
	ro := env.reader(t, Options{Only: PathRing})
	failNext.Store(int32(ring.ErrPeerFailed))
	if _, err := ro.Read(ctx, env.vs.hostPort(), small.fid.String()); !errors.As(err, &ne) || ne.Path != PathRing || !errors.Is(err, ring.ErrPeerFailed) {
		t.Errorf("ring only: %v", err)
	}

	// The needle changes between two ranged reads of one needle: HTTP serves the new one.
	big := ns[2]
	var reads atomic.Int32
	newContent := pattern(len(big.content), 9)
	env.store.setHook(func(peer netip.AddrPort, fid FileID, e *wire.SQE) int32 {
		if fid == big.fid && reads.Add(1) == 2 { // between the first and the second chunk
			env.store.put(big.fid, newContent, needleOpts{})
		}
		return 0
	})
	n, err := r.Read(ctx, env.vs.hostPort(), big.fid.String())
	if err != nil || !bytes.Equal(n.Data, newContent) || n.Path != PathHTTP || !errors.Is(n.RingErr, ring.ErrProtocol) {
		t.Errorf("changed needle: %v, ring error %v", err, n.RingErr)
	}
	env.store.setHook(nil)

	// Canceled: no fallback.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	before := env.vs.requests.Load()
	if _, err := r.Read(cctx, env.vs.hostPort(), small.fid.String()); !errors.Is(err, context.Canceled) || env.vs.requests.Load() != before {
		t.Errorf("canceled: %v", err)
	}
}

func TestNeedleReaderEngineUnavailableAndBack(t *testing.T) {
	store := newNeedleStore()
	ns := putNeedles(store)
	vs := newFakeVolumeServer(t, store)
	sock := filepath.Join(shortTempDir(t), "engine.sock")
	var logs logLines
	r := NewReader(Options{EngineSocket: sock, RedialInterval: time.Hour, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	defer r.Close()
	ctx := testCtx(t)
	for i := 0; i < 3; i++ {
		n, err := r.Read(ctx, vs.hostPort(), ns[0].fid.String())
		if err != nil || n.Path != PathHTTP || !errors.Is(n.RingErr, ring.ErrEngineUnavailable) || !bytes.Equal(n.Data, ns[0].content) {
			t.Fatalf("no engine: %v %+v", err, n)
		}
	}
	if s := r.Stats(); s.DialFailures != 1 || s.HTTPReads != 3 {
		t.Errorf("redial interval not honoured: %+v", s)
	}
	if err := r.CheckEngine(ctx); !errors.Is(err, ring.ErrEngineUnavailable) {
		t.Errorf("CheckEngine: %v", err)
	}
	// Only = PathRing returns the engine error.
	ro := NewReader(Options{EngineSocket: sock, Only: PathRing})
	defer ro.Close()
	if _, err := ro.Read(ctx, vs.hostPort(), ns[0].fid.String()); !errors.Is(err, ring.ErrEngineUnavailable) {
		t.Errorf("ring only without engine: %v", err)
	}

	// The engine starts; a reader that redials soon uses it, and again after a restart.
	r2 := NewReader(Options{EngineSocket: sock, RedialInterval: -1, DialOptions: []ring.Option{ring.WithBufferSize(1 << 20)}})
	defer r2.Close()
	e := fakeengine.New(sock)
	e.Needles = store
	if err := e.Start(); err != nil {
		t.Fatal(err)
	}
	if err := r2.CheckEngine(ctx); err != nil {
		t.Fatalf("CheckEngine: %v", err)
	}
	if n, err := r2.Read(ctx, vs.hostPort(), ns[2].fid.String()); err != nil || n.Path != PathRing || !bytes.Equal(n.Data, ns[2].content) {
		t.Fatalf("engine up: %v", err)
	}
	e.Shutdown()
	n, err := r2.Read(ctx, vs.hostPort(), ns[0].fid.String())
	if err != nil || n.Path != PathHTTP {
		t.Fatalf("engine down: %v %v", err, n)
	}
	e = fakeengine.New(sock)
	e.Needles = store
	if err := e.Start(); err != nil {
		t.Fatal(err)
	}
	defer e.Shutdown()
	deadline := time.Now().Add(10 * time.Second)
	for {
		n, err = r2.Read(ctx, vs.hostPort(), ns[0].fid.String())
		if err != nil {
			t.Fatal(err)
		}
		if n.Path == PathRing || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if n.Path != PathRing || r2.Stats().Dials != 2 {
		t.Errorf("after the restart: %v, stats %+v", n.Path, r2.Stats())
	}
	r2.Close()
	if _, err := r2.Read(ctx, vs.hostPort(), ns[0].fid.String()); !errors.Is(err, ring.ErrClosed) {
		t.Errorf("after Close: %v", err)
	}
	if lines := logs.lines(); len(lines) != 1 || !strings.Contains(lines[0], "engine unavailable") {
		t.Errorf("log lines %q", lines)
	}
}

func TestNeedleReaderEngineAddresses(t *testing.T) {
	env := newReaderEnv(t, nil)
	ns := putNeedles(env.store)
	ctx := testCtx(t)
	var seen sync.Map
	env.store.setHook(func(peer netip.AddrPort, fid FileID, e *wire.SQE) int32 {
		seen.Store(peer.String(), true)
		return 0
	})
	vsPort := env.vs.hostPort()[strings.LastIndexByte(env.vs.hostPort(), ':')+1:]
	check := func(o Options, vs, wantAddr string, wantPath Path) {
		t.Helper()
		seen.Clear()
		r := env.reader(t, o)
		n, err := r.Read(ctx, vs, ns[0].fid.String())
		if err != nil || n.Path != wantPath {
			t.Fatalf("%s: %v %+v", vs, err, n)
		}
		if _, ok := seen.Load(wantAddr); wantPath == PathRing && !ok {
			t.Errorf("%s: engine address not %s", vs, wantAddr)
		}
	}
	check(Options{}, env.vs.hostPort(), "127.0.0.1:13337", PathRing)
	check(Options{}, "localhost:"+vsPort, "127.0.0.1:13337", PathRing)
	check(Options{EnginePort: 4000}, env.vs.URL+"/", "127.0.0.1:4000", PathRing)
	check(Options{EngineAddrs: map[string]string{"http://" + env.vs.hostPort(): "10.1.2.3:9"}}, env.vs.hostPort(), "10.1.2.3:9", PathRing)
	check(Options{ResolveEngine: func(ctx context.Context, vs string) (string, error) {
		return ResolveEngineAddr(ctx, vs, 5000)
	}}, env.vs.hostPort(), "127.0.0.1:5000", PathRing)
	// An address the engine refuses, a resolver that fails: HTTP.
	check(Options{EngineAddrs: map[string]string{env.vs.hostPort(): "not-an-address"}}, env.vs.hostPort(), "", PathHTTP)
	check(Options{ResolveEngine: func(context.Context, string) (string, error) { return "", errors.New("no") }}, env.vs.hostPort(), "", PathHTTP)

	for _, c := range []struct{ vs, want string }{
		{"10.0.0.5:8080", "10.0.0.5:13337"}, {"http://10.0.0.5:8080", "10.0.0.5:13337"}, {"https://[fe80::1]:8443/x", "[fe80::1]:13337"},
		{"[::ffff:10.0.0.5]:80", "10.0.0.5:13337"}, {"10.0.0.5", "10.0.0.5:13337"},
	} {
		if got, err := ResolveEngineAddr(ctx, c.vs, 0); err != nil || got != c.want {
			t.Errorf("ResolveEngineAddr(%q) = %q, %v; want %q", c.vs, got, err, c.want)
		}
	}
	for _, bad := range []string{"", "http://", "no-such-host.invalid:80"} {
		if got, err := ResolveEngineAddr(ctx, bad, 0); err == nil {
			t.Errorf("ResolveEngineAddr(%q) = %q", bad, got)
		}
	}
}

// TestNeedleReaderBatch reads many needles at once, more than the buffer area holds at once,
// and compares each result with a single read.
func TestNeedleReaderBatch(t *testing.T) {
	env := newReaderEnv(t, func(e *fakeEngine) { e.OpDelay = 20 * time.Microsecond })
	ns := putNeedles(env.store)
	var reqs []Request
	for i := 0; i < 300; i++ {
		n := ns[i%len(ns)]
		q := Request{VolumeServer: env.vs.hostPort(), FileID: n.fid.String()}
		switch i % 4 {
		case 1:
			q.Ranged, q.Offset, q.Length = true, int64(i), 1000
		case 2:
			q.FileID = FileID{3, uint64(i), 1}.String() // not there
		}
		if i == 150 {
			q.FileID = "bad"
		}
		reqs = append(reqs, q)
	}
	ctx := testCtx(t)
	// A 1 MiB area with 64 KiB chunks: groups are cut when the area is full.
	r := env.reader(t, Options{DialOptions: []ring.Option{ring.WithBufferSize(1 << 20)}, Concurrency: 40})
	single := env.reader(t, Options{})
	res := r.ReadMany(ctx, reqs)
	if len(res) != len(reqs) {
		t.Fatal(len(res))
	}
	for i, q := range reqs {
		var w *Needle
		var werr error
		if q.Ranged {
			w, werr = single.ReadRange(ctx, q.VolumeServer, q.FileID, q.Offset, q.Length)
		} else {
			w, werr = single.Read(ctx, q.VolumeServer, q.FileID)
		}
		sameNeedle(t, fmt.Sprintf("batch %d", i), res[i].Needle, w, res[i].Err, werr)
		if res[i].Err == nil && res[i].Needle.Path != PathRing {
			t.Errorf("batch %d: path %v", i, res[i].Needle.Path)
		}
		if i == 150 && !errors.Is(res[i].Err, ErrBadFileID) {
			t.Errorf("batch bad fid: %v", res[i].Err)
		}
	}
	if m := env.eng.MaxNeedlePass.Load(); m < 8 {
		t.Errorf("at most %d READ_NEEDLEs in flight together", m)
	}
	if s := r.Stats(); s.RingReads == 0 || s.HTTPReads != 0 {
		t.Errorf("stats %+v", s)
	}
	// Over HTTP only, and with the engine gone.
	h := env.reader(t, Options{Only: PathHTTP})
	for i, x := range h.ReadMany(ctx, reqs[:40]) {
		if (x.Err == nil) != (res[i].Err == nil) || (x.Err == nil && !bytes.Equal(x.Needle.Data, res[i].Needle.Data)) {
			t.Errorf("http batch %d: %v", i, x.Err)
		}
	}
	env.eng.Shutdown()
	for i, x := range r.ReadMany(ctx, reqs[:40]) {
		if (x.Err == nil) != (res[i].Err == nil) || (x.Err == nil && x.Needle.Path != PathHTTP) {
			t.Errorf("batch without engine %d: %v", i, x.Err)
		}
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	for i, x := range r.ReadMany(cctx, reqs[:5]) {
		if x.Err == nil {
			t.Errorf("canceled batch %d: no error", i)
		}
	}
}

// TestNeedleReaderConcurrent: many goroutines on one reader (run with -race).
func TestNeedleReaderConcurrent(t *testing.T) {
	env := newReaderEnv(t, nil)
	ns := putNeedles(env.store)
	r := env.reader(t, Options{DialOptions: []ring.Option{ring.WithBufferSize(1 << 20)}})
	ctx := testCtx(t)
	var wg sync.WaitGroup
	for g := 0; g < 16; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 30; i++ {
				n := ns[(g+i)%len(ns)]
				got, err := r.Read(ctx, env.vs.hostPort(), n.fid.String())
				if err != nil || !bytes.Equal(got.Data, n.content) || got.Path != PathRing {
					t.Errorf("goroutine %d read %d: %v", g, i, err)
					return
				}
			}
		}()
	}
	wg.Wait()
}

// ReadInto puts the data into the caller's buffer on both paths when it fits, and
// allocates when it does not.
func TestReadNeedleIntoUsesTheCallersBuffer(t *testing.T) {
	for _, only := range []Path{PathRing, PathHTTP} {
		t.Run(only.String(), func(t *testing.T) {
			env := newReaderEnv(t, nil)
			data := pattern(64<<10, 5)
			fid := FileID{VolumeID: 3, NeedleID: 0x1234, Cookie: 0xcafe}
			env.store.put(fid, data, needleOpts{name: "a.bin"})
			r := env.reader(t, Options{Only: only, EngineAddrs: map[string]string{env.vs.hostPort(): "127.0.0.1:1"}})
			ctx := testCtx(t)
			dst := make([]byte, 0, 128<<10)
			n, err := r.ReadInto(ctx, env.vs.hostPort(), fid.String(), dst)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(n.Data, data) || &n.Data[0] != &dst[:1][0] {
				t.Fatalf("data equal %v, in dst %v", bytes.Equal(n.Data, data), &n.Data[0] == &dst[:1][0])
			}
			small := make([]byte, 0, 100)
			n, err = r.ReadInto(ctx, env.vs.hostPort(), fid.String(), small)
			if err != nil || !bytes.Equal(n.Data, data) {
				t.Fatalf("small dst: %v", err)
			}
		})
	}
}
