// Command swring-sidecar is the read sidecar of `weed mount -rdma.enabled -rdma.sidecar=HOST:PORT`
// for the released SeaweedFS versions that still have those flags: 3.97 (August 2025, where
// SeaweedFS pull request #7140 added them) up to and including 4.44 (August 2026). Upstream
// pull request #11119 (September 2026) removed the flags and the mount's sidecar client, so
// later weed versions, including the one scripts/weed builds, never call it: they read
// through the rings in process instead (SWRING_ENGINE_SOCKET, see the top-level README).
//
// It is an HTTP server on the client host that reads needles for the mount through the
// seaweed-ring engine (READ_NEEDLE from the engine beside each volume server, zero copy into
// shared memory). Those mounts re-read a chunk over HTTP themselves whenever the answer's
// X-RDMA-Used is not true (weed/mount/filehandle_read.go, tryRDMARead), so the sidecar's own
// HTTP fallback is off by default (-http-fallback=false): with it on, a read the ring cannot
// serve is fetched twice over HTTP, once by the sidecar and once more by the mount.
//
// The API, as weed mount's RDMAMountClient (weed/mount/rdma_client.go) uses it:
//
//	GET /health
//	    200 {"status":"healthy","rdma":{"enabled":true,"connected":<engine reachable>,...},"timestamp":"..."}
//	GET /read?file_id=3,01637037d6&offset=0&size=4096&volume_server=http://10.0.0.5:8080
//	    200 the bytes (application/octet-stream), with
//	        X-RDMA-Used: true  (X-Source: rdma)  the engine served them
//	        X-RDMA-Used: false (X-Source: http)  the HTTP fallback served them (-http-fallback)
//	        X-Needle-Size: size of the needle's whole (decompressed) data
//	    400 bad file id or parameter, 404 not found / deleted / wrong cookie,
//	    416 offset at or past the end, 422 the needle is a chunk manifest,
//	    502 the volume server failed (corrupt needle, 5xx), 503 engine or peer unreachable
//	    (without -http-fallback: the mount then reads over HTTP itself), 504 timed out —
//	    each with a plain-text reason.
//	GET /stats
//	    200 counters (JSON)
//
// offset and size are of the needle's data as the volume server's GET returns it
// (decompressed); size 0 (or absent) reads to the end, offset 0 and size 0 the whole
// needle. volume_server is the volume server's HTTP address (host:port or URL); its engine
// is found at the same host on -engine-port, unless -engine-map names it. The older
// client's volume=, needle= (decimal) and cookie= parameters are accepted too.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/seaweed-ring/seaweed-ring/go-client/needle"
	"github.com/seaweed-ring/seaweed-ring/go-client/ring"
)

const usage = `Usage: swring-sidecar [flags]

Serves weed mount's RDMA sidecar API (-rdma.enabled -rdma.sidecar=HOST:PORT) over the
seaweed-ring engine running on this host.

Only for SeaweedFS releases 3.97 to 4.44, the ones whose weed mount has -rdma.sidecar
(upstream pull request #11119 removed it in September 2026). Later weed versions, and the
one scripts/weed builds, read through the rings in process: set SWRING_ENGINE_SOCKET in the
environment of weed mount / filer / s3 instead (README.md).

Those mounts read a chunk over HTTP themselves whenever X-RDMA-Used is not true, so the
sidecar's own HTTP fallback is off by default: a read the ring cannot serve answers 503 and
the mount falls back once. -http-fallback=true makes the sidecar read over HTTP too (each
such read then happens twice).

  GET /health    {"status":"healthy","rdma":{"enabled":true,"connected":<engine up>}}
  GET /read      ?file_id=<fid>&offset=<n>&size=<n>&volume_server=<host:port|URL>
                 raw bytes; X-RDMA-Used: true (ring), false (HTTP, with -http-fallback);
                 503 when the ring cannot serve (without -http-fallback)
  GET /stats     counters

The engine of a volume server is looked up at <volume server host>:<-engine-port>
(the engine's [ucx] listen port) unless -engine-map names it.

Example:
  swring-sidecar -listen 127.0.0.1:8081 -engine-socket /run/seaweed-ring/engine.sock
  weed mount -filer=localhost:8888 -dir=/mnt/sw -rdma.enabled -rdma.sidecar=127.0.0.1:8081

Flags:
`

// config is the sidecar's command line.
type config struct {
	listen, socket, engineMap, volumeServer string
	port, chunk, bufMB                      int
	httpTimeout                             time.Duration
	fallback, verbose                       bool
}

// parseFlags parses the command line (without the program name).
func parseFlags(args []string, output io.Writer) (config, error) {
	var c config
	fs := flag.NewFlagSet("swring-sidecar", flag.ContinueOnError)
	fs.SetOutput(output)
	fs.StringVar(&c.listen, "listen", "127.0.0.1:8081", "HTTP address to serve the sidecar API on (weed mount's -rdma.sidecar)")
	fs.StringVar(&c.socket, "engine-socket", ring.DefaultSocketPath(), "control socket of the local seaweed-ring engine")
	fs.IntVar(&c.port, "engine-port", needle.DefaultEnginePort, "UCX port of the volume servers' engines (their [ucx] listen port)")
	fs.StringVar(&c.engineMap, "engine-map", "", "engines of volume servers that do not follow -engine-port: VOLUME_SERVER=IP:PORT,... (e.g. 10.0.0.5:8080=10.1.0.5:13337)")
	fs.StringVar(&c.volumeServer, "volume-server", "", "volume server for /read requests without volume_server (host:port or URL)")
	fs.DurationVar(&c.httpTimeout, "http-timeout", 30*time.Second, "time limit of one HTTP GET of the fallback (0: none)")
	fs.BoolVar(&c.fallback, "http-fallback", false, "read over HTTP when the ring cannot (default false: answer 503, and weed mount reads over HTTP itself, once)")
	fs.IntVar(&c.chunk, "chunk-size", needle.DefaultChunkSize, "most bytes one ring request reads; larger needles are read range by range")
	fs.IntVar(&c.bufMB, "buffer-mb", needle.DefaultBufferBytes>>20, "shared buffer area to ask the engine for, in MiB (reads in flight need chunk-size each)")
	fs.BoolVar(&c.verbose, "v", false, "log every request")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), usage)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		fs.Usage()
		return c, fmt.Errorf("unexpected argument %q (the sidecar takes flags only)", fs.Arg(0))
	}
	if c.bufMB <= 0 {
		return c, errors.New("-buffer-mb must be positive")
	}
	return c, nil
}

// readerOptions are the Reader's options for c.
func (c config) readerOptions() (needle.Options, error) {
	addrs, err := parseEngineMap(c.engineMap)
	if err != nil {
		return needle.Options{}, err
	}
	opts := needle.Options{
		EngineSocket: c.socket,
		DialOptions:  []ring.Option{ring.WithBufferSize(uint64(c.bufMB) << 20)},
		EnginePort:   c.port,
		EngineAddrs:  addrs,
		HTTPTimeout:  c.httpTimeout,
		ChunkSize:    c.chunk,
		Logger:       slog.Default(), // through the log package: the same prefix and format as the sidecar's own lines
	}
	if !c.fallback {
		opts.Only = needle.PathRing
	}
	return opts, nil
}

func main() {
	cfg, err := parseFlags(os.Args[1:], os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	} else if err != nil {
		fmt.Fprintln(os.Stderr, "swring-sidecar:", err)
		os.Exit(2)
	}
	log.SetPrefix("swring-sidecar: ")
	opts, err := cfg.readerOptions()
	if err != nil {
		log.Fatal(err)
	}
	addrs := opts.EngineAddrs
	reader := needle.NewReader(opts)
	defer reader.Close()

	s := newServer(reader)
	s.volumeServer, s.socket, s.verbose = cfg.volumeServer, cfg.socket, cfg.verbose
	srv := &http.Server{Addr: cfg.listen, Handler: s.handler(), ReadHeaderTimeout: 10 * time.Second}

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	engine := "connected"
	if err := reader.CheckEngine(ctx); err != nil {
		engine = "not reachable yet (" + err.Error() + "); reads fall back to HTTP until it is"
		if !cfg.fallback {
			engine = "not reachable yet (" + err.Error() + "); reads answer 503 (the mount reads over HTTP itself) until it is"
		}
	}
	cancel()
	log.Printf("listening on %s; engine %s: %s; volume servers' engines on port %d%s; HTTP fallback %v",
		cfg.listen, cfg.socket, engine, cfg.port, mapNote(addrs), cfg.fallback)

	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGINT, syscall.SIGTERM)
	errc := make(chan error, 1)
	go func() { errc <- srv.ListenAndServe() }()
	select {
	case err := <-errc:
		log.Fatal(err)
	case sig := <-stop:
		log.Printf("%v: shutting down", sig)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Printf("shutdown: %v", err)
		}
	}
}

// parseEngineMap parses VOLUME_SERVER=ENGINE,... .
func parseEngineMap(s string) (map[string]string, error) {
	m := map[string]string{}
	for _, kv := range strings.Split(s, ",") {
		kv = strings.TrimSpace(kv)
		if kv == "" {
			continue
		}
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" || v == "" {
			return nil, fmt.Errorf("-engine-map entry %q is not VOLUME_SERVER=IP:PORT", kv)
		}
		m[k] = v
	}
	return m, nil
}

func mapNote(m map[string]string) string {
	if len(m) == 0 {
		return ""
	}
	return fmt.Sprintf(" (%d mapped by -engine-map)", len(m))
}
