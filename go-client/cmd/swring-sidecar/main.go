// Command swring-sidecar is the read sidecar of `weed mount -rdma.enabled -rdma.sidecar=HOST:PORT`:
// an HTTP server on the client host that reads needles for the mount through the
// seaweed-ring engine (READ_NEEDLE from the engine beside each volume server, zero copy into
// shared memory), falling back to the volume server's HTTP GET when the ring is not
// available.
//
// The API, as weed mount's RDMAMountClient (weed/mount/rdma_client.go) uses it:
//
//	GET /health
//	    200 {"status":"healthy","rdma":{"enabled":true,"connected":<engine reachable>,...},"timestamp":"..."}
//	GET /read?file_id=3,01637037d6&offset=0&size=4096&volume_server=http://10.0.0.5:8080
//	    200 the bytes (application/octet-stream), with
//	        X-RDMA-Used: true  (X-Source: rdma)  the engine served them
//	        X-RDMA-Used: false (X-Source: http)  the HTTP fallback served them
//	        X-Needle-Size: size of the needle's whole (decompressed) data
//	    400 bad file id or parameter, 404 not found / deleted / wrong cookie,
//	    416 offset at or past the end, 422 the needle is a chunk manifest,
//	    502 the volume server failed (corrupt needle, 5xx), 503 engine or peer unreachable
//	    without fallback, 504 timed out — each with a plain-text reason.
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
	"log"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	swring "github.com/seaweed-ring/seaweed-ring/go-client"
)

const usage = `Usage: swring-sidecar [flags]

Serves weed mount's RDMA sidecar API (-rdma.enabled -rdma.sidecar=HOST:PORT) over the
seaweed-ring engine running on this host, with HTTP fallback to the volume servers.

  GET /health    {"status":"healthy","rdma":{"enabled":true,"connected":<engine up>}}
  GET /read      ?file_id=<fid>&offset=<n>&size=<n>&volume_server=<host:port|URL>
                 raw bytes; X-RDMA-Used: true (ring) or false (HTTP fallback)
  GET /stats     counters

The engine of a volume server is looked up at <volume server host>:<-engine-port>
(the engine's [ucx] listen port) unless -engine-map names it.

Example:
  swring-sidecar -listen 127.0.0.1:8081 -engine-socket /run/seaweed-ring/engine.sock
  weed mount -filer=localhost:8888 -dir=/mnt/sw -rdma.enabled -rdma.sidecar=127.0.0.1:8081

Flags:
`

func main() {
	listen := flag.String("listen", "127.0.0.1:8081", "HTTP address to serve the sidecar API on (weed mount's -rdma.sidecar)")
	socket := flag.String("engine-socket", swring.DefaultSocketPath(), "control socket of the local seaweed-ring engine")
	port := flag.Int("engine-port", swring.DefaultEnginePort, "UCX port of the volume servers' engines (their [ucx] listen port)")
	engineMap := flag.String("engine-map", "", "engines of volume servers that do not follow -engine-port: VOLUME_SERVER=IP:PORT,... (e.g. 10.0.0.5:8080=10.1.0.5:13337)")
	volumeServer := flag.String("volume-server", "", "volume server for /read requests without volume_server (host:port or URL)")
	httpTimeout := flag.Duration("http-timeout", 30*time.Second, "time limit of one HTTP GET of the fallback (0: none)")
	fallback := flag.Bool("http-fallback", true, "read over HTTP when the ring cannot (false: answer 503 instead, and weed mount falls back itself)")
	chunk := flag.Int("chunk-size", swring.DefaultNeedleChunkSize, "most bytes one ring request reads; larger needles are read range by range")
	bufMB := flag.Int("buffer-mb", swring.DefaultNeedleReaderBufferBytes>>20, "shared buffer area to ask the engine for, in MiB (reads in flight need chunk-size each)")
	verbose := flag.Bool("v", false, "log every request")
	flag.Usage = func() {
		fmt.Fprint(flag.CommandLine.Output(), usage)
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() > 0 {
		flag.Usage()
		os.Exit(2)
	}
	log.SetPrefix("swring-sidecar: ")
	addrs, err := parseEngineMap(*engineMap)
	if err != nil {
		log.Fatal(err)
	}
	if *bufMB <= 0 {
		log.Fatal("-buffer-mb must be positive")
	}
	opts := swring.NeedleReaderOptions{
		EngineSocket: *socket,
		DialOptions:  []swring.Option{swring.WithBufferSize(uint64(*bufMB) << 20)},
		EnginePort:   *port,
		EngineAddrs:  addrs,
		HTTPTimeout:  *httpTimeout,
		ChunkSize:    *chunk,
		Logf:         log.Printf,
	}
	if !*fallback {
		opts.Only = swring.PathRing
	}
	reader := swring.NewNeedleReader(opts)
	defer reader.Close()

	s := newServer(reader)
	s.volumeServer, s.socket, s.verbose = *volumeServer, *socket, *verbose
	srv := &http.Server{Addr: *listen, Handler: s.handler(), ReadHeaderTimeout: 10 * time.Second}

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	engine := "connected"
	if err := reader.CheckEngine(ctx); err != nil {
		engine = "not reachable yet (" + err.Error() + "); reads fall back to HTTP until it is"
		if !*fallback {
			engine = "not reachable yet (" + err.Error() + "); reads fail until it is"
		}
	}
	cancel()
	log.Printf("listening on %s; engine %s: %s; volume servers' engines on port %d%s; HTTP fallback %v",
		*listen, *socket, engine, *port, mapNote(addrs), *fallback)

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
