// Package seaweedhook lets SeaweedFS's own processes (weed mount, filer, S3 gateway, webdav)
// read chunk data through a seaweed-ring engine, in process.
//
// The patched weed (integrations/seaweedfs in this repository) offers every chunk read from a
// volume server to a hook before its HTTP GET; Hook.ReadChunk is that hook. It answers with
// exactly the bytes the GET would return (decompressed, whole or the requested range) read
// through Reader on the ring only, or declines (ok == false), and SeaweedFS then makes
// its HTTP GET as it always did: one HTTP read, never two, because the reader's own HTTP
// fallback is off. Errors are never reported from the ring: a declined read lets the HTTP GET
// give SeaweedFS its usual answer (404, 416, a replica's retry), so errors stay SeaweedFS's.
package seaweedhook

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/seaweed-ring/seaweed-ring/go-client/needle"
)

// Environment variables FromEnv reads.
const (
	// EnvEngineSocket names the local engine's control socket; set, it turns the ring read
	// path on. Unset or empty: the hook is not installed and weed behaves as stock.
	EnvEngineSocket = "SWRING_ENGINE_SOCKET"
	// EnvEnginePort is the UCX port of the volume servers' engines (default
	// needle.DefaultEnginePort): the engine of volume server host:8080 is host:port.
	EnvEnginePort = "SWRING_ENGINE_PORT"
	// EnvEngineAddrs overrides that convention per volume server:
	// "volumehost:8080=10.0.0.5:13337,volumehost2:8080=10.0.0.6:13337".
	EnvEngineAddrs = "SWRING_ENGINE_ADDRS"
)

// ErrBadEnv: an environment variable FromEnv reads has a value it cannot use.
var ErrBadEnv = errors.New("seaweedhook: bad environment")

// declineLogInterval is how often at most a declined read is logged with its reason.
const declineLogInterval = 10 * time.Second

// Options configure New.
type Options struct {
	// EngineSocket is the local engine's control socket (required).
	EngineSocket string
	// EnginePort and EngineAddrs find the volume servers' engines (see
	// needle.Options).
	EnginePort  int
	EngineAddrs map[string]string
	// Logger receives engine session changes and, at most every 10 s, why a read was
	// declined. nil discards them (inside weed, the patch passes a logger that writes
	// through glog).
	Logger *slog.Logger
}

// Stats are the hook's counters.
type Stats struct {
	Served      uint64 // chunk reads the ring answered
	ServedBytes uint64 // bytes of those answers
	Declined    uint64 // chunk reads left to SeaweedFS's HTTP GET
	Reader      needle.Stats
}

// Hook reads chunks through the ring for SeaweedFS. Safe for concurrent use.
type Hook struct {
	socket string
	r      *needle.Reader
	log    *slog.Logger

	served, servedBytes, declined atomic.Uint64

	logMu     sync.Mutex
	lastLogAt time.Time
}

// New returns a hook reading through the engine at opts.EngineSocket (dialed on first use and
// again after the engine restarted).
func New(opts Options) (*Hook, error) {
	if opts.EngineSocket == "" {
		return nil, fmt.Errorf("%w: no engine socket: set %s to the local engine's control socket", ErrBadEnv, EnvEngineSocket)
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Hook{
		socket: opts.EngineSocket,
		log:    log,
		r: needle.NewReader(needle.Options{
			EngineSocket: opts.EngineSocket,
			EnginePort:   opts.EnginePort,
			EngineAddrs:  opts.EngineAddrs,
			// Ring only: when it cannot serve, SeaweedFS's own GET is the one HTTP read.
			Only:   needle.PathRing,
			Logger: log,
		}),
	}, nil
}

// FromEnv builds the hook from EnvEngineSocket, EnvEnginePort and EnvEngineAddrs (getenv is
// os.Getenv outside tests), logging to logger (nil: no logging). It returns nil, nil when
// EnvEngineSocket is unset or empty.
func FromEnv(getenv func(string) string, logger *slog.Logger) (*Hook, error) {
	opts := Options{EngineSocket: getenv(EnvEngineSocket), Logger: logger}
	if opts.EngineSocket == "" {
		return nil, nil
	}
	if v := getenv(EnvEnginePort); v != "" {
		p, err := strconv.Atoi(v)
		if err != nil || p <= 0 || p > 65535 {
			return nil, fmt.Errorf("%w: %s=%q is not a port: give the volume servers' engine UCX port, e.g. %d", ErrBadEnv, EnvEnginePort, v, needle.DefaultEnginePort)
		}
		opts.EnginePort = p
	}
	if v := getenv(EnvEngineAddrs); v != "" {
		opts.EngineAddrs = map[string]string{}
		for _, pair := range strings.Split(v, ",") {
			vs, eng, ok := strings.Cut(strings.TrimSpace(pair), "=")
			if !ok || vs == "" || eng == "" {
				return nil, fmt.Errorf("%w: %s: %q is not volumeserver=engine (e.g. host:8080=10.0.0.5:13337)", ErrBadEnv, EnvEngineAddrs, pair)
			}
			opts.EngineAddrs[vs] = eng
		}
	}
	return New(opts)
}

// Socket is the engine socket the hook reads through.
func (h *Hook) Socket() string { return h.socket }

// Stats returns the hook's counters.
func (h *Hook) Stats() Stats {
	return Stats{Served: h.served.Load(), ServedBytes: h.servedBytes.Load(), Declined: h.declined.Load(), Reader: h.r.Stats()}
}

// Close ends the engine session.
func (h *Hook) Close() error { return h.r.Close() }

// ReadChunk is SeaweedFS's util/http.ChunkReadHook: it returns what SeaweedFS's HTTP GET of
// fileUrl would return once decompressed — the whole needle when isFullChunk, else the
// bytes of "Range: bytes=offset-(offset+size-1)" — read into dst when it is large enough,
// with ok == true; or ok == false when the ring cannot answer exactly that (a URL that is not
// a plain needle GET, the engine or its peer unavailable, a needle the ring does not find,
// a chunk manifest the volume server would expand, ...), and SeaweedFS's GET runs instead.
// jwt is the token SeaweedFS would send with its GET.
func (h *Hook) ReadChunk(ctx context.Context, fileUrl, jwt string, isFullChunk bool, offset int64, size int, dst []byte) ([]byte, bool) {
	vs, fid, err := needleURL(fileUrl)
	if err == nil && !isFullChunk && (offset < 0 || size <= 0) {
		err = fmt.Errorf("range %d+%d is not one a GET sends", offset, size)
	}
	if err != nil {
		return h.decline(fileUrl, err)
	}
	q := needle.Request{VolumeServer: vs, FileID: fid, JWT: jwt, Dst: dst}
	if !isFullChunk {
		q.Ranged, q.Offset, q.Length = true, offset, int64(size)
	}
	res := h.r.ReadMany(ctx, []needle.Request{q})[0]
	if res.Err != nil {
		return h.decline(fileUrl, res.Err)
	}
	if res.Needle.ChunkManifest {
		// The volume server's GET (without ?cm=false) assembles the file it names.
		return h.decline(fileUrl, errors.New("needle is a chunk manifest"))
	}
	h.served.Add(1)
	h.servedBytes.Add(uint64(len(res.Needle.Data)))
	return res.Needle.Data, true
}

func (h *Hook) decline(fileUrl string, why error) ([]byte, bool) {
	h.declined.Add(1)
	h.logMu.Lock()
	now := time.Now()
	due := now.Sub(h.lastLogAt) >= declineLogInterval
	if due {
		h.lastLogAt = now
	}
	h.logMu.Unlock()
	if due {
		h.log.Info("seaweed-ring: chunk read over HTTP (logged at most every "+declineLogInterval.String()+")",
			"url", fileUrl, "reason", why, "declined", h.declined.Load())
	}
	return nil, false
}

// needleURL splits a SeaweedFS needle GET URL, http(s)://host:port/<fid>[?readDeleted=true],
// into the volume server and the file id. Other forms (filer proxy URLs, /vid/fid/name paths,
// other query parameters that change the answer) are not plain needle reads.
func needleURL(fileUrl string) (volumeServer, fileID string, err error) {
	u, err := url.Parse(fileUrl)
	if err != nil {
		return "", "", err
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil || u.Fragment != "" {
		return "", "", errors.New("not an http(s)://host/fid URL")
	}
	for k := range u.Query() {
		// readDeleted=true also serves deleted needles: the ring answers ring.ErrNeedleDeleted
		// for those, the read is declined, and the GET serves it.
		if k != "readDeleted" {
			return "", "", fmt.Errorf("query parameter %q is not one the ring path serves", k)
		}
	}
	fid := strings.TrimPrefix(u.Path, "/")
	if strings.Contains(fid, "/") {
		return "", "", errors.New("not a /<fid> path")
	}
	if _, err := needle.ParseFileID(fid); err != nil {
		return "", "", err
	}
	return u.Host, fid, nil
}
