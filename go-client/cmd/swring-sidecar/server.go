package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"math"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/seaweed-ring/seaweed-ring/go-client/needle"
	"github.com/seaweed-ring/seaweed-ring/go-client/ring"
)

// needleSource is what the server reads through: a *needle.Reader, or in tests a
// table of needles.
type needleSource interface {
	Read(ctx context.Context, volumeServer, fileID string) (*needle.Needle, error)
	ReadRange(ctx context.Context, volumeServer, fileID string, offset, length int64) (*needle.Needle, error)
	CheckEngine(ctx context.Context) error
	Stats() needle.Stats
}

// server answers the sidecar HTTP API weed mount speaks (see main.go).
type server struct {
	src           needleSource
	volumeServer  string        // for /read requests without volume_server
	socket        string        // the engine control socket, reported by /health
	healthTimeout time.Duration // bound of the engine check of /health
	logf          func(format string, args ...any)
	verbose       bool
	now           func() time.Time

	requests, ringReads, httpReads, failures atomic.Uint64
}

func newServer(src needleSource) *server {
	return &server{src: src, healthTimeout: 2 * time.Second, logf: log.Printf, now: time.Now}
}

func (s *server) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/health", s.health)
	mux.HandleFunc("/read", s.read)
	mux.HandleFunc("/stats", s.stats)
	return mux
}

// healthResponse is the JSON of GET /health, as weed mount's RDMAHealthResponse reads it
// (status must be "healthy" and rdma.enabled true, or the mount does not use the sidecar;
// rdma.connected false only makes it log a warning).
type healthResponse struct {
	Status string `json:"status"`
	RDMA   struct {
		Enabled      bool   `json:"enabled"`
		Connected    bool   `json:"connected"`
		Type         string `json:"type"`
		EngineSocket string `json:"engine_socket,omitempty"`
		Error        string `json:"error,omitempty"`
	} `json:"rdma"`
	Timestamp string `json:"timestamp"`
}

// health answers 200 with the sidecar's state. The sidecar itself is healthy whenever it
// answers (reads fall back to HTTP); rdma.connected says whether the local engine is
// reachable right now.
func (s *server) health(w http.ResponseWriter, r *http.Request) {
	if !allowGet(w, r) {
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.healthTimeout)
	defer cancel()
	var h healthResponse
	h.Status = "healthy"
	h.RDMA.Enabled = true
	h.RDMA.Type = "seaweed-ring"
	h.RDMA.EngineSocket = s.socket
	if err := s.src.CheckEngine(ctx); err != nil {
		h.RDMA.Error = err.Error()
	} else {
		h.RDMA.Connected = true
	}
	h.Timestamp = s.now().UTC().Format(time.RFC3339)
	writeJSON(w, h)
}

// stats answers the reader's and the server's counters as JSON.
func (s *server) stats(w http.ResponseWriter, r *http.Request) {
	if !allowGet(w, r) {
		return
	}
	writeJSON(w, map[string]any{
		"requests":   s.requests.Load(),
		"ring_reads": s.ringReads.Load(),
		"http_reads": s.httpReads.Load(),
		"failures":   s.failures.Load(),
		"reader":     s.src.Stats(),
		"timestamp":  s.now().UTC().Format(time.RFC3339),
	})
}

// read serves GET /read?file_id=<fid>&offset=<n>&size=<n>&volume_server=<addr>: the bytes,
// with X-RDMA-Used: true when the ring served them and false when HTTP did.
func (s *server) read(w http.ResponseWriter, r *http.Request) {
	if !allowGet(w, r) {
		return
	}
	s.requests.Add(1)
	start := s.now()
	q := r.URL.Query()
	fid, err := fileIDParam(q)
	if err != nil {
		s.fail(w, http.StatusBadRequest, err)
		return
	}
	offset, err := uintParam(q, "offset")
	if err != nil {
		s.fail(w, http.StatusBadRequest, err)
		return
	}
	size, err := uintParam(q, "size")
	if err != nil {
		s.fail(w, http.StatusBadRequest, err)
		return
	}
	vs := q.Get("volume_server")
	if vs == "" {
		vs = s.volumeServer
	}
	if vs == "" {
		s.fail(w, http.StatusBadRequest, errors.New("volume_server parameter is required"))
		return
	}
	var n *needle.Needle
	if offset == 0 && size == 0 {
		n, err = s.src.Read(r.Context(), vs, fid)
	} else {
		n, err = s.src.ReadRange(r.Context(), vs, fid, offset, size)
	}
	if err != nil {
		code := statusFor(err)
		s.fail(w, code, err)
		return
	}
	if n.ChunkManifest {
		// The bytes are a manifest, not the file's: weed mount must resolve it itself (its
		// regular read path does); sending the manifest would corrupt its read.
		s.fail(w, http.StatusUnprocessableEntity, fmt.Errorf("needle %s is a chunk manifest; read its chunks", fid))
		return
	}
	used := n.Path == needle.PathRing
	if used {
		s.ringReads.Add(1)
	} else {
		s.httpReads.Add(1)
	}
	h := w.Header()
	h.Set("Content-Type", "application/octet-stream")
	h.Set("Content-Length", strconv.Itoa(len(n.Data)))
	h.Set("X-RDMA-Used", strconv.FormatBool(used))
	if used {
		h.Set("X-Source", "rdma")
	} else {
		h.Set("X-Source", "http")
	}
	h.Set("X-Needle-Size", strconv.FormatInt(n.Size, 10))
	w.WriteHeader(http.StatusOK)
	w.Write(n.Data)
	if s.verbose || (!used && n.RingErr != nil) {
		why := ""
		if n.RingErr != nil {
			why = " (ring: " + n.RingErr.Error() + ")"
		}
		s.logf("read %s from %s [%d+%d]: %d bytes over %s in %v%s", fid, vs, offset, size, len(n.Data), n.Path, s.now().Sub(start).Round(time.Microsecond), why)
	}
}

// fileIDParam is the needle of a /read request: file_id ("3,01637037d6"), or the older
// client's volume, needle (decimal) and cookie (decimal, or hexadecimal with 0x).
func fileIDParam(q map[string][]string) (string, error) {
	get := func(k string) string {
		if v := q[k]; len(v) > 0 {
			return v[0]
		}
		return ""
	}
	if s := get("file_id"); s != "" {
		if _, err := needle.ParseFileID(s); err != nil {
			return "", err
		}
		return s, nil
	}
	if get("volume") == "" && get("needle") == "" {
		return "", errors.New("file_id parameter is required")
	}
	vol, err := strconv.ParseUint(get("volume"), 10, 32)
	if err != nil {
		return "", fmt.Errorf("invalid 'volume' parameter %q", get("volume"))
	}
	key, err := strconv.ParseUint(get("needle"), 10, 64)
	if err != nil {
		return "", fmt.Errorf("invalid 'needle' parameter %q", get("needle"))
	}
	c := get("cookie")
	var cookie uint64
	if h, ok := strings.CutPrefix(strings.ToLower(c), "0x"); ok {
		cookie, err = strconv.ParseUint(h, 16, 32)
	} else {
		cookie, err = strconv.ParseUint(c, 10, 32)
	}
	if err != nil {
		return "", fmt.Errorf("invalid 'cookie' parameter %q (decimal, or hexadecimal with 0x)", c)
	}
	return needle.FileID{VolumeID: uint32(vol), NeedleID: key, Cookie: uint32(cookie)}.String(), nil
}

// uintParam parses an optional non-negative decimal parameter (absent = 0).
func uintParam(q map[string][]string, k string) (int64, error) {
	v := q[k]
	if len(v) == 0 || v[0] == "" {
		return 0, nil
	}
	n, err := strconv.ParseUint(v[0], 10, 63)
	if err != nil || n > math.MaxInt64 {
		return 0, fmt.Errorf("invalid '%s' parameter %q", k, v[0])
	}
	return int64(n), nil
}

// statusFor maps a read error onto the status /read answers with.
func statusFor(err error) int {
	var he *needle.HTTPError
	switch {
	case errors.Is(err, needle.ErrBadFileID):
		return http.StatusBadRequest
	case errors.Is(err, ring.ErrNeedleNotFound):
		// Also a cookie mismatch, as on the volume server (the cookie is no oracle).
		return http.StatusNotFound
	case errors.Is(err, ring.ErrRangeNotSatisfiable):
		return http.StatusRequestedRangeNotSatisfiable
	case errors.Is(err, context.DeadlineExceeded):
		return http.StatusGatewayTimeout
	case errors.Is(err, ring.ErrEngineUnavailable), errors.Is(err, ring.ErrClosed), errors.Is(err, context.Canceled),
		errors.Is(err, ring.ErrPeerFailed), errors.Is(err, ring.ErrNoSuchPeer), errors.Is(err, ring.ErrBadPeerAddress):
		return http.StatusServiceUnavailable
	case errors.Is(err, ring.ErrTimedOut):
		return http.StatusGatewayTimeout
	case errors.As(err, &he), errors.Is(err, ring.ErrCorrupt):
		return http.StatusBadGateway
	}
	return http.StatusBadGateway
}

// fail answers a failed /read with code and a plain-text reason; 5xx are logged always,
// answers about the needle (4xx) with -v.
func (s *server) fail(w http.ResponseWriter, code int, err error) {
	s.failures.Add(1)
	if s.verbose || code >= 500 {
		s.logf("read failed (%d): %v", code, err)
	}
	http.Error(w, err.Error(), code)
}

func allowGet(w http.ResponseWriter, r *http.Request) bool {
	if r.Method == http.MethodGet {
		return true
	}
	w.Header().Set("Allow", http.MethodGet)
	http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
	return false
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(v)
}
