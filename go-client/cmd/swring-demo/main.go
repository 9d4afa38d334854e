// Command swring-demo shows seaweed-ring doing its job, end to end, on this machine: a real
// SeaweedFS master and volume server (the `weed` binary), an engine serving that volume
// server's volume directory over UCX, a second engine beside the client, and the Go client
// reading needles through the rings — every byte compared with the volume server's own HTTP
// GET, with the latency of both paths side by side. Then it kills the client's engine and
// shows reads going on over HTTP. Then SeaweedFS's own front ends, a FUSE weed mount and
// weed s3, read through the rings in process next to the stock ones (frontends.go). It is
// what `scripts/run` runs.
package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/seaweed-ring/seaweed-ring/go-client/internal/enginectl"
	"github.com/seaweed-ring/seaweed-ring/go-client/internal/weedcluster"
	"github.com/seaweed-ring/seaweed-ring/go-client/needle"
	"github.com/seaweed-ring/seaweed-ring/go-client/ring"
)

func main() {
	engineBin := flag.String("engine", "target/release/engine", "the engine binary")
	weedBin := flag.String("weed", "", "the SeaweedFS weed binary (default: $SWRING_WEED, else the one scripts/weed built)")
	dir := flag.String("dir", "", "work directory for volumes, configs and logs (default: a new temporary directory, removed at the end)")
	transports := flag.String("transports", "sm,tcp", "UCX transports between the engines (UCX_TLS syntax; tcp is needed for the connection set-up)")
	rounds := flag.Int("rounds", 300, "timed reads per file and path")
	ringBin := flag.String("weed-ring", "", "the weed with the ring read path (default: $SWRING_WEED_RING, else weed-ring beside -weed, where scripts/weed --ring builds it)")
	fronts := flag.Bool("front-ends", true, "after the needle reads, show weed mount (FUSE) and weed s3 reading through the rings next to the stock ones")
	oneEngine := flag.Bool("one-engine", runtime.NumCPU() < 4, "one engine both serves the volume and reads through its own listener (default on machines with fewer than 4 CPUs, where two busy-polling engines and the client would share cores)")
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), "Usage: swring-demo [flags]\n\nRuns a SeaweedFS volume server, a serving engine, a client engine and the Go client on\nloopback, reads needles through the rings and over HTTP, and prints what it read and how fast;\nthen a filer, FUSE weed mounts and weed s3 gateways, stock and with the ring read path, side by side.\n\nFlags:\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	if err := run(*engineBin, *weedBin, *ringBin, *dir, *transports, *rounds, *oneEngine, *fronts); err != nil {
		fmt.Fprintln(os.Stderr, "swring-demo:", err)
		os.Exit(1)
	}
}

type sample struct {
	name, mime string
	data       []byte
	fid        string
}

func run(engineBin, weedBin, ringBin, dir, transports string, rounds int, oneEngine, fronts bool) error {
	ctx := context.Background()
	if weedBin == "" {
		w, err := weedcluster.FindWeed()
		if err != nil {
			return fmt.Errorf("%w (scripts/run builds it with scripts/weed)", err)
		}
		weedBin = w
	}
	if dir == "" {
		d, err := os.MkdirTemp("", "swring-demo-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(d)
		dir = d
	}
	say("SeaweedFS: starting a master and a volume server on loopback (%s)", weedBin)
	cluster, err := weedcluster.Start(ctx, weedBin, filepath.Join(dir, "weed"), weedcluster.Options{})
	if err != nil {
		return err
	}
	defer cluster.Stop()
	say("SeaweedFS: volume server %s, volume directory %s", cluster.Volume, cluster.VolumeDir)

	samples := []*sample{
		{name: "readme.txt", mime: "text/plain", data: []byte(strings.Repeat("SeaweedFS needles over shared-memory rings and UCX.\n", 80))},
		{name: "4k.bin", mime: "application/octet-stream", data: random(4 << 10)},
		{name: "64k.bin", mime: "application/octet-stream", data: random(64 << 10)},
		{name: "1m.bin", mime: "application/octet-stream", data: random(1 << 20)},
		{name: "8m.bin", mime: "application/octet-stream", data: random(8 << 20)},
	}
	for _, s := range samples {
		if s.fid, err = cluster.Upload(ctx, s.name, s.mime, s.data); err != nil {
			return err
		}
	}
	gone, err := cluster.Upload(ctx, "deleted.bin", "", random(1000))
	if err != nil {
		return err
	}
	if err := cluster.Delete(ctx, gone); err != nil {
		return err
	}
	say("SeaweedFS: uploaded %d files through its HTTP API, and deleted %s", len(samples), gone)

	// The engine beside the volume server serves its directory over UCX; the engine beside
	// the client reads from it. With few cores one engine plays both parts, reading through
	// its own listener (the same UCX path): busy-polling engines and the client need a core
	// each.
	last := runtime.NumCPU() - 1
	server, err := enginectl.Start(ctx, enginectl.Options{Bin: engineBin, Dir: mkdir(dir, "server-engine"), Listen: true,
		Transports: transports, VolumeDirs: []string{cluster.VolumeDir}, Cores: []int{last}})
	if err != nil {
		return fmt.Errorf("serving engine: %w", err)
	}
	defer server.Stop()
	keepOffCore(last)
	client := server
	if oneEngine {
		say("engine: core %d serves the volume directory on UCX %s [%s] and reads through that listener for the client", last, server.UCXAddr, transports)
	} else {
		client, err = enginectl.Start(ctx, enginectl.Options{Bin: engineBin, Dir: mkdir(dir, "client-engine"),
			Transports: transports, Cores: []int{last - 1}})
		if err != nil {
			return fmt.Errorf("client engine: %w", err)
		}
		defer client.Stop()
		say("engines: serving engine (core %d) listens on UCX %s [%s]; client engine (core %d) at %s", last, server.UCXAddr, transports, last-1, client.Socket)
	}

	reader := needle.NewReader(needle.Options{
		EngineSocket: client.Socket,
		EngineAddrs:  map[string]string{cluster.Volume: server.UCXAddr},
	})
	defer reader.Close()
	httpOnly := needle.NewReader(needle.Options{Only: needle.PathHTTP})
	defer httpOnly.Close()

	dst := make([]byte, 0, 9<<20)
	fmt.Printf("\n%-14s %-10s %-11s %-6s %-6s %12s %12s %9s\n", "file id", "name", "size", "path", "equal", "ring p50", "http p50", "ring gain")
	for _, s := range samples {
		n, err := reader.Read(ctx, cluster.Volume, s.fid)
		if err != nil {
			return fmt.Errorf("read %s: %w", s.fid, err)
		}
		want, status, err := cluster.Get(ctx, s.fid)
		if err != nil || status != 200 {
			return fmt.Errorf("http get %s: status %d: %v", s.fid, status, err)
		}
		equal := bytes.Equal(n.Data, want) && bytes.Equal(n.Data, s.data)
		// Both paths read into one reused buffer (ReadInto), so neither pays for
		// allocating and collecting the data per read.
		ring := p50(rounds, func() error { _, err := reader.ReadInto(ctx, cluster.Volume, s.fid, dst); return err })
		web := p50(rounds, func() error { _, err := httpOnly.ReadInto(ctx, cluster.Volume, s.fid, dst); return err })
		gain := "-"
		if ring > 0 {
			gain = fmt.Sprintf("%.1fx", float64(web)/float64(ring))
		}
		extra := ""
		if n.Compressed {
			extra = " (stored gzip)"
		}
		fmt.Printf("%-14s %-10s %-11s %-6s %-6v %12v %12v %9s%s\n", s.fid, s.name, size(len(s.data)), n.Path, equal, ring, web, gain, extra)
		if !equal {
			return fmt.Errorf("%s: the ring returned other bytes than the volume server", s.fid)
		}
	}
	st := reader.Stats()
	fmt.Printf("\nring reads %d (%s), http reads %d\n", st.RingReads, size(int(st.RingBytes)), st.HTTPReads)

	// Answers are precise and final.
	fid, _ := needle.ParseFileID(samples[1].fid)
	fid.Cookie ^= 1
	_, err = reader.Read(ctx, cluster.Volume, fid.String())
	fmt.Printf("wrong cookie %-14s -> %v (cookie-mismatch: %v; no bytes left the volume server)\n", fid.String(), err, errors.Is(err, ring.ErrCookieMismatch))
	_, err = reader.Read(ctx, cluster.Volume, gone)
	fmt.Printf("deleted      %-14s -> %v (needle-deleted: %v)\n", gone, err, errors.Is(err, ring.ErrNeedleDeleted))

	// The local engine dies: reads go on over HTTP.
	client.Kill()
	if oneEngine {
		say("the engine killed (SIGKILL): the client's engine is gone")
	} else {
		say("client engine killed (SIGKILL)")
	}
	n, err := reader.Read(ctx, cluster.Volume, samples[2].fid)
	if err != nil {
		return fmt.Errorf("read after the engine died: %w", err)
	}
	fmt.Printf("%s read over %s (ring error: %v), bytes equal: %v\n", samples[2].fid, n.Path, n.RingErr, bytes.Equal(n.Data, samples[2].data))
	if n.Path != needle.PathHTTP || !bytes.Equal(n.Data, samples[2].data) {
		return errors.New("fallback did not serve the needle over HTTP")
	}
	if !fronts {
		return nil
	}
	server.Stop() // the front ends get an engine of their own
	return frontEnds(ctx, engineBin, weedBin, ringBin, dir, cluster, transports, rounds)
}

// keepOffCore moves every thread of this process off the engine's core (threads created
// later inherit it): a busy-polling engine and a client thread on one core take turns by
// the scheduler's time slices, which costs the client tens of microseconds per read.
func keepOffCore(core int) {
	var set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &set); err != nil || set.Count() < 2 {
		return
	}
	set.Clear(core)
	tasks, _ := os.ReadDir("/proc/self/task")
	for _, t := range tasks {
		if tid, err := strconv.Atoi(t.Name()); err == nil {
			unix.SchedSetaffinity(tid, &set)
		}
	}
}

// p50 times rounds calls of f and returns the median.
func p50(rounds int, f func() error) time.Duration {
	d := make([]time.Duration, 0, rounds)
	for range rounds {
		t := time.Now()
		if err := f(); err != nil {
			return -1
		}
		d = append(d, time.Since(t))
	}
	slices.Sort(d)
	return d[len(d)/2].Round(100 * time.Nanosecond)
}

func random(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

func size(n int) string {
	switch {
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

func mkdir(parent, name string) string {
	p := filepath.Join(parent, name)
	os.MkdirAll(p, 0o700)
	return p
}

func say(format string, args ...any) {
	fmt.Printf("• "+format+"\n", args...)
}
