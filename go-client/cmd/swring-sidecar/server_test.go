package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/seaweed-ring/seaweed-ring/go-client/needle"
	"github.com/seaweed-ring/seaweed-ring/go-client/ring"
)

// stubSource stands in for the Reader: needles by file id, served over path.
type stubSource struct {
	mu        sync.Mutex
	needles   map[string][]byte
	path      needle.Path
	ringErr   error
	err       error // returned by every read when set
	manifest  bool
	engineErr error
	calls     []string
}

func (s *stubSource) read(vs, fid string, ranged bool, off, n int64) (*needle.Needle, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls = append(s.calls, fmt.Sprintf("%s %s %v %d %d", vs, fid, ranged, off, n))
	if s.err != nil {
		return nil, s.err
	}
	data, ok := s.needles[fid]
	if !ok {
		return nil, &needle.Error{FileID: fid, VolumeServer: vs, Path: needle.PathRing, Err: ring.ErrNoSuchNeedle}
	}
	size := int64(len(data))
	if ranged {
		if off >= size {
			return nil, &needle.Error{FileID: fid, Err: ring.ErrRangeNotSatisfiable}
		}
		end := size
		if n > 0 && off+n < end {
			end = off + n
		}
		data = data[off:end]
	}
	return &needle.Needle{Data: data, Size: size, Offset: off, Path: s.path, RingErr: s.ringErr, ChunkManifest: s.manifest}, nil
}

func (s *stubSource) Read(ctx context.Context, vs, fid string) (*needle.Needle, error) {
	return s.read(vs, fid, false, 0, 0)
}

func (s *stubSource) ReadRange(ctx context.Context, vs, fid string, off, n int64) (*needle.Needle, error) {
	return s.read(vs, fid, true, off, n)
}

func (s *stubSource) CheckEngine(context.Context) error { return s.engineErr }

func (s *stubSource) Stats() needle.Stats { return needle.Stats{RingReads: 7} }

func (s *stubSource) lastCall() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.calls) == 0 {
		return ""
	}
	return s.calls[len(s.calls)-1]
}

func startSidecar(t *testing.T, src needleSource) (*server, *httptest.Server) {
	t.Helper()
	s := newServer(src)
	s.logf = t.Logf
	ts := httptest.NewServer(s.handler())
	t.Cleanup(ts.Close)
	return s, ts
}

// mountRead is weed mount's RDMAMountClient.Read request, byte for byte: the URL is
// formatted without escaping, and "RDMA used" is X-Source containing "rdma" or
// X-RDMA-Used: true.
func mountRead(t *testing.T, sidecar, fileID string, offset, size uint64, volumeServer string) (int, []byte, bool, http.Header) {
	t.Helper()
	u := fmt.Sprintf("%s/read?file_id=%s&offset=%d&size=%d&volume_server=%s", sidecar, fileID, offset, size, volumeServer)
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	isRDMA := strings.Contains(resp.Header.Get("X-Source"), "rdma") || resp.Header.Get("X-RDMA-Used") == "true"
	return resp.StatusCode, body, isRDMA, resp.Header
}

func TestSidecarRead(t *testing.T) {
	src := &stubSource{needles: map[string][]byte{"3,01637037d6": []byte("0123456789")}, path: needle.PathRing}
	s, ts := startSidecar(t, src)
	code, body, rdma, h := mountRead(t, ts.URL, "3,01637037d6", 2, 5, "http://10.0.0.5:8080")
	if code != 200 || string(body) != "23456" || !rdma || h.Get("X-RDMA-Used") != "true" || h.Get("X-Source") != "rdma" ||
		h.Get("Content-Type") != "application/octet-stream" || h.Get("X-Needle-Size") != "10" || h.Get("Content-Length") != "5" {
		t.Errorf("ring read: %d %q %v %v", code, body, rdma, h)
	}
	if c := src.lastCall(); c != "http://10.0.0.5:8080 3,01637037d6 true 2 5" {
		t.Errorf("call %q", c)
	}
	// size 0: to the end; offset 0 and size 0: the whole needle.
	code, body, _, _ = mountRead(t, ts.URL, "3,01637037d6", 4, 0, "10.0.0.5:8080")
	if code != 200 || string(body) != "456789" || src.lastCall() != "10.0.0.5:8080 3,01637037d6 true 4 0" {
		t.Errorf("to the end: %d %q %s", code, body, src.lastCall())
	}
	code, body, _, _ = mountRead(t, ts.URL, "3,01637037d6", 0, 0, "10.0.0.5:8080")
	if code != 200 || string(body) != "0123456789" || src.lastCall() != "10.0.0.5:8080 3,01637037d6 false 0 0" {
		t.Errorf("whole: %d %q %s", code, body, src.lastCall())
	}
	// The fallback served it: X-RDMA-Used: false, so weed mount knows.
	src.path, src.ringErr = needle.PathHTTP, ring.ErrEngineUnavailable
	code, body, rdma, h = mountRead(t, ts.URL, "3,01637037d6", 0, 3, "10.0.0.5:8080")
	if code != 200 || string(body) != "012" || rdma || h.Get("X-RDMA-Used") != "false" || h.Get("X-Source") != "http" {
		t.Errorf("fallback read: %d %q %v %v", code, body, rdma, h)
	}
	// The older client's parameters.
	resp, err := http.Get(ts.URL + "/read?volume=3&needle=1&cookie=0x637037d6&offset=1&size=2&volume_server=10.0.0.5:8080")
	if err == nil {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(b) != "12" || !strings.Contains(src.lastCall(), " 3,01637037d6 ") {
			t.Errorf("legacy parameters: %d %q %s", resp.StatusCode, b, src.lastCall())
		}
	}
	resp, err = http.Get(ts.URL + "/read?volume=3&needle=1&cookie=1668298710&volume_server=10.0.0.5:8080")
	if err != nil || resp.StatusCode != 200 || !strings.Contains(src.lastCall(), " 3,01637037d6 ") {
		t.Errorf("legacy decimal cookie: %v %s", err, src.lastCall())
	}
	resp.Body.Close()
	// The -volume-server default.
	s.volumeServer = "vs:1"
	resp, err = http.Get(ts.URL + "/read?file_id=3,01637037d6")
	if err != nil || resp.StatusCode != 200 || !strings.HasPrefix(src.lastCall(), "vs:1 ") {
		t.Errorf("default volume server: %v %s", err, src.lastCall())
	}
	resp.Body.Close()
	if n := s.requests.Load(); n != 7 || s.ringReads.Load() != 3 || s.httpReads.Load() != 4 {
		t.Errorf("counters: %d requests, %d ring, %d http", n, s.ringReads.Load(), s.httpReads.Load())
	}
}

func TestSidecarReadErrors(t *testing.T) {
	src := &stubSource{needles: map[string][]byte{"3,01637037d6": []byte("0123456789")}, path: needle.PathRing}
	s, ts := startSidecar(t, src)
	get := func(query string) (int, string) {
		t.Helper()
		resp, err := http.Get(ts.URL + "/read?" + query)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 && !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") {
			t.Errorf("%s: error with Content-Type %q", query, resp.Header.Get("Content-Type"))
		}
		return resp.StatusCode, strings.TrimSpace(string(b))
	}
	vs := "&volume_server=10.0.0.5:8080"
	for _, c := range []struct {
		query string
		code  int
		text  string
	}{
		{"file_id=3,xyz" + vs, 400, "bad file id"},
		{"file_id=3,01637037d6&offset=-1" + vs, 400, "offset"},
		{"file_id=3,01637037d6&size=x" + vs, 400, "size"},
		{"file_id=3,01637037d6", 400, "volume_server"},
		{"offset=1" + vs, 400, "file_id"},
		{"volume=x&needle=1&cookie=1" + vs, 400, "volume"},
		{"volume=1&needle=1&cookie=0xzz" + vs, 400, "cookie"},
		{"file_id=3,02637037d6" + vs, 404, "no-such-needle"},
		{"file_id=3,01637037d6&offset=10&size=1" + vs, 416, "range-not-satisfiable"},
	} {
		if code, text := get(c.query); code != c.code || !strings.Contains(text, c.text) {
			t.Errorf("%s: %d %q, want %d %q", c.query, code, text, c.code, c.text)
		}
	}
	for _, c := range []struct {
		err  error
		code int
	}{
		{ring.ErrCookieMismatch, 404},
		{ring.ErrNeedleDeleted, 404},
		{&needle.HTTPError{StatusCode: 404, Status: "404 Not Found"}, 404},
		{ring.ErrCorrupt, 502},
		{&needle.HTTPError{StatusCode: 500, Status: "500 Internal Server Error"}, 502},
		{errors.New("dial tcp: connection refused"), 502},
		{ring.ErrEngineUnavailable, 503},
		{ring.ErrPeerFailed, 503},
		{ring.ErrTimedOut, 504},
		{context.DeadlineExceeded, 504},
	} {
		src.err = &needle.Error{FileID: "3,01637037d6", Err: c.err}
		if code, text := get("file_id=3,01637037d6" + vs); code != c.code || !strings.Contains(text, c.err.Error()) {
			t.Errorf("%v: %d %q, want %d", c.err, code, text, c.code)
		}
	}
	src.err = nil
	src.manifest = true
	if code, text := get("file_id=3,01637037d6" + vs); code != 422 || !strings.Contains(text, "chunk manifest") {
		t.Errorf("manifest: %d %q", code, text)
	}
	resp, err := http.Post(ts.URL+"/read?file_id=3,01637037d6"+vs, "text/plain", nil)
	if err != nil || resp.StatusCode != 405 || resp.Header.Get("Allow") != "GET" {
		t.Errorf("POST: %v %v", err, resp)
	}
	resp.Body.Close()
	if s.failures.Load() != 20 {
		t.Errorf("failures %d", s.failures.Load())
	}
}

// mountHealth is weed mount's RDMAHealthResponse.
type mountHealth struct {
	Status string `json:"status"`
	RDMA   struct {
		Enabled   bool `json:"enabled"`
		Connected bool `json:"connected"`
	} `json:"rdma"`
	Timestamp string `json:"timestamp"`
}

func TestSidecarHealthAndStats(t *testing.T) {
	src := &stubSource{}
	s, ts := startSidecar(t, src)
	s.socket = "/run/engine.sock"
	s.now = func() time.Time { return time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC) }
	for _, engineErr := range []error{nil, ring.ErrEngineUnavailable} {
		src.engineErr = engineErr
		resp, err := http.Get(ts.URL + "/health")
		if err != nil {
			t.Fatal(err)
		}
		var h mountHealth
		var raw map[string]any
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err := json.Unmarshal(b, &h); err != nil || json.Unmarshal(b, &raw) != nil {
			t.Fatalf("health JSON %s: %v", b, err)
		}
		// The mount refuses a sidecar unless status is "healthy" and rdma.enabled is true.
		if resp.StatusCode != 200 || h.Status != "healthy" || !h.RDMA.Enabled || h.RDMA.Connected != (engineErr == nil) ||
			h.Timestamp != "2026-01-02T03:04:05Z" || resp.Header.Get("Content-Type") != "application/json" {
			t.Errorf("health (engine error %v): %d %s", engineErr, resp.StatusCode, b)
		}
		rd := raw["rdma"].(map[string]any)
		if rd["engine_socket"] != "/run/engine.sock" || (engineErr != nil) != (rd["error"] != nil) {
			t.Errorf("health details: %s", b)
		}
	}
	resp, err := http.Get(ts.URL + "/stats")
	if err != nil {
		t.Fatal(err)
	}
	var st struct {
		Requests uint64       `json:"requests"`
		Reader   needle.Stats `json:"reader"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil || st.Reader.RingReads != 7 {
		t.Errorf("stats: %+v %v", st, err)
	}
	resp.Body.Close()
}

// TestSidecarWithNeedleReader runs the real Reader behind the sidecar with no engine:
// every read falls back to a (test-only) volume server's HTTP GET and says so.
func TestSidecarWithNeedleReader(t *testing.T) {
	var mu sync.Mutex
	var got []*http.Request
	vs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		got = append(got, r.Clone(context.Background()))
		mu.Unlock()
		if r.URL.Path != "/3,01637037d6" {
			w.WriteHeader(http.StatusNotFound)
			return
		}
		http.ServeContent(w, r, "", time.Time{}, strings.NewReader("hello, needle"))
	}))
	defer vs.Close()
	reader := needle.NewReader(needle.Options{EngineSocket: filepath.Join(t.TempDir(), "none.sock")})
	defer reader.Close()
	_, ts := startSidecar(t, reader)
	code, body, rdma, _ := mountRead(t, ts.URL, "3,01637037d6", 7, 6, vs.URL)
	if code != 200 || string(body) != "needle" || rdma {
		t.Errorf("fallback read: %d %q %v", code, body, rdma)
	}
	mu.Lock()
	if len(got) != 1 || got[0].Header.Get("Range") != "bytes=7-12" || got[0].URL.RawQuery != "cm=false" {
		t.Errorf("volume server saw %v", got)
	}
	mu.Unlock()
	if code, _, _, _ := mountRead(t, ts.URL, "3,02637037d6", 0, 6, vs.URL); code != 404 {
		t.Errorf("missing needle over HTTP: %d", code)
	}
	// Without fallback the engine's absence is a 503.
	ringOnly := needle.NewReader(needle.Options{EngineSocket: filepath.Join(t.TempDir(), "none.sock"), Only: needle.PathRing})
	defer ringOnly.Close()
	_, ts2 := startSidecar(t, ringOnly)
	if code, _, _, _ := mountRead(t, ts2.URL, "3,01637037d6", 0, 6, vs.URL); code != 503 {
		t.Errorf("ring only without engine: %d", code)
	}
}

func TestParseEngineMap(t *testing.T) {
	m, err := parseEngineMap(" 10.0.0.5:8080=10.1.0.5:13337, http://vs:80=10.1.0.6:1 ,")
	if err != nil || len(m) != 2 || m["10.0.0.5:8080"] != "10.1.0.5:13337" || m["http://vs:80"] != "10.1.0.6:1" {
		t.Errorf("%v %v", m, err)
	}
	for _, bad := range []string{"x", "=y", "x="} {
		if _, err := parseEngineMap(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// TestHelpText builds nothing new: it runs this test binary's main with -h through the
// flag package's usage and checks the text names every flag and the API.
func TestHelpText(t *testing.T) {
	if os.Getenv("SWRING_SIDECAR_HELP") == "1" {
		os.Args = []string{"swring-sidecar", "-h"}
		main()
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelpText$")
	cmd.Env = append(os.Environ(), "SWRING_SIDECAR_HELP=1")
	out, _ := cmd.CombinedOutput()
	for _, want := range []string{"GET /health", "GET /read", "X-RDMA-Used", "-listen", "-engine-socket", "-engine-port",
		"-engine-map", "-http-timeout", "-http-fallback", "-volume-server", "-chunk-size", "-buffer-mb", "-v",
		"3.97 to 4.44", "#11119", "SWRING_ENGINE_SOCKET", "off by default"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("help text lacks %q:\n%s", want, out)
		}
	}
}

// TestFallbackIsOffByDefault: weed mount (3.97-4.44) re-reads a chunk over HTTP itself
// whenever X-RDMA-Used is not true, so with the command line's defaults a read the ring
// cannot serve (no engine here) must answer 503 without touching the volume server; with
// -http-fallback=true the sidecar reads over HTTP (once) and says so.
func TestFallbackIsOffByDefault(t *testing.T) {
	var mu sync.Mutex
	gets := 0
	vs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		gets++
		mu.Unlock()
		http.ServeContent(w, r, "", time.Time{}, strings.NewReader("hello, needle"))
	}))
	defer vs.Close()
	volumeGets := func() int {
		mu.Lock()
		defer mu.Unlock()
		return gets
	}
	none := filepath.Join(t.TempDir(), "none.sock")
	for _, tc := range []struct {
		args     []string
		code     int
		getsSeen int
	}{
		{[]string{"-engine-socket", none}, 503, 0},
		{[]string{"-engine-socket", none, "-http-fallback=true"}, 200, 1},
	} {
		cfg, err := parseFlags(tc.args, io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		opts, err := cfg.readerOptions()
		if err != nil {
			t.Fatal(err)
		}
		reader := needle.NewReader(opts)
		_, ts := startSidecar(t, reader)
		before := volumeGets()
		code, body, rdma, _ := mountRead(t, ts.URL, "3,01637037d6", 7, 6, vs.URL)
		reader.Close()
		if code != tc.code || rdma {
			t.Errorf("%v: read answered %d %q (X-RDMA-Used %v), want %d", tc.args, code, body, rdma, tc.code)
		}
		if n := volumeGets() - before; n != tc.getsSeen {
			t.Errorf("%v: the sidecar sent %d GETs to the volume server, want %d", tc.args, n, tc.getsSeen)
		}
	}
	if _, err := parseFlags([]string{"extra"}, io.Discard); err == nil {
		t.Error("a stray argument was accepted")
	}
	if _, err := parseFlags([]string{"-buffer-mb", "0"}, io.Discard); err == nil {
		t.Error("-buffer-mb 0 was accepted")
	}
}
