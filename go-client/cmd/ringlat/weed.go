package main

// Weed host mode (-weed), for the bench's needle.read.* scenarios (bench/README.md).
//
// ringlat -weed starts a real SeaweedFS master and volume server on loopback
// (internal/weedcluster, the `weed` binary of -weed-bin, else $SWRING_WEED, else the one
// scripts/weed built), uploads one needle per size of -sizes (random bytes, so the volume
// server stores them uncompressed) through SeaweedFS's HTTP API, checks that a GET returns
// them, and prints one line:
//
//	{"ready":true,"weed":"/path/weed","volume":"127.0.0.1:PORT","volume_dir":"/tmp/...",
//	 "needles":[{"size":"4k","bytes":4096,"fid":"3,01637037d6","sha256":"..."},...]}
//
// With -fs-mb N it also starts a stock `weed filer` and writes a file of N MiB through it
// for the mount.*, s3.* and filer.* scenarios (fsread.go), and the line adds "master",
// "volume_metrics" (the volume server's Prometheus address), "filer", "fs_file", "fs_bytes"
// and "weed_ring" (the weed with the ring read path, or
// "weed_ring_error" saying why there is none).
//
// The engine the bench starts serves volume_dir (--seaweedfs-dir); the measuring ringlat
// processes read the needles by fid over the rings and over HTTP from volume. The cluster
// runs until stdin reaches its end (the bench closes it) or SIGTERM/SIGINT, then both
// servers are stopped and the directory is removed. On failure the line is {"ready":false,"error":"...",
// "no_weed":true|false} and ringlat exits with status 1. -check only looks for the binaries:
// {"ready":true,"weed":"/path/weed","weed_ring":"/path/weed-ring"} (or "weed_ring_error").
//
// With -cold N it also uploads N needles of 1 MiB for the needle.read.cold.* scenarios and
// ring.nop.beside_cold_reads (cold.go), each followed in its volume by a filler never read,
// and the line adds "cold":["fid",...] and "cold_bytes". Their bytes follow from their fid
// (coldData), so that a reader can check every read without a list of hashes. The master's
// volume size limit is raised then (1 GiB): 8 volumes of 64 MiB hold only ~400 of them.
//
// With -netns NS -ip IP (the bench's needle.read.<size>.netns scenarios; needs root) the
// master and the volume server run in network namespace NS (`ip netns exec`, scripts/netns
// made it) listening on IP (weedcluster.StartNetns: volume IP:8080, master IP:9333), and
// the uploads and checks are made from inside NS; "volume" is then IP:8080, which the other
// namespace of the pair reaches across the veth.
//
// The whole process (and so the weed servers, which inherit its CPU mask) runs where it
// was started: the bench starts it pinned to the engine core, so that the volume server
// answers HTTP on the core the engine uses for the ring path.

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/seaweed-ring/seaweed-ring/go-client/internal/weedcluster"
	"github.com/seaweed-ring/seaweed-ring/go-client/internal/weedfront"
)

type weedNeedle struct {
	Size   string `json:"size"`
	Bytes  int    `json:"bytes"`
	Fid    string `json:"fid"`
	SHA256 string `json:"sha256"`
}

type weedReady struct {
	Ready     bool         `json:"ready"`
	Weed      string       `json:"weed,omitempty"`
	Volume    string       `json:"volume,omitempty"`
	VolumeDir string       `json:"volume_dir,omitempty"`
	Needles   []weedNeedle `json:"needles,omitempty"`
	// With -fs-mb (fsread.go): the master, the stock filer, the file written through it
	// (seeded by its path, see weedfront.FillPages), and the weed with the ring read path ("" with
	// the reason in weed_ring_error when there is none).
	Master        string `json:"master,omitempty"`
	VolumeMetrics string `json:"volume_metrics,omitempty"`
	Filer         string `json:"filer,omitempty"`
	FsFile        string `json:"fs_file,omitempty"`
	FsBytes       int64  `json:"fs_bytes,omitempty"`
	WeedRing      string `json:"weed_ring,omitempty"`
	WeedRingError string `json:"weed_ring_error,omitempty"`
	// With -cold: the cold needles' file ids and their length (cold.go).
	Cold      []string `json:"cold,omitempty"`
	ColdBytes int      `json:"cold_bytes,omitempty"`
	Error     string   `json:"error,omitempty"`
	NoWeed    bool     `json:"no_weed,omitempty"`
}

// fsFile is the file the weed host writes through its filer for the mount scenarios.
const fsFile = "/bench/data.bin"

// parseSize parses "4k", "64k", "1m", "512" (bytes; k = KiB, m = MiB).
func parseSize(s string) (int, error) {
	t := strings.ToLower(strings.TrimSpace(s))
	mul := 1
	switch {
	case strings.HasSuffix(t, "k"):
		mul, t = 1<<10, strings.TrimSuffix(t, "k")
	case strings.HasSuffix(t, "m"):
		mul, t = 1<<20, strings.TrimSuffix(t, "m")
	}
	n, err := strconv.Atoi(t)
	if err != nil || n <= 0 || n > (1<<30)/mul {
		return 0, fmt.Errorf("bad size %q (want e.g. 4k, 64k, 1m or a byte count up to 1 GiB)", s)
	}
	return n * mul, nil
}

// weedHost runs -weed: see the comment at the top of this file. fsMB > 0 also starts a
// filer and writes fsFile (fsMB MiB) through it (fsread.go).
func weedHost(weedBin, sizes string, fsMB, cold int, check bool, ns weedcluster.NetnsOptions, in io.Reader, out io.Writer) error {
	enc := json.NewEncoder(out)
	failed := func(err error) error {
		enc.Encode(weedReady{Error: err.Error(), NoWeed: errors.Is(err, weedcluster.ErrNoWeed)})
		return err
	}
	type want struct {
		name string
		n    int
	}
	var wants []want
	for _, s := range strings.Split(sizes, ",") {
		n, err := parseSize(s)
		if err != nil {
			return failed(err)
		}
		wants = append(wants, want{strings.TrimSpace(s), n})
	}
	if weedBin == "" {
		w, err := weedcluster.FindWeed()
		if err != nil {
			return failed(err)
		}
		weedBin = w
	} else if st, err := os.Stat(weedBin); err != nil || st.IsDir() {
		return failed(fmt.Errorf("-weed-bin %s is not a file: %w", weedBin, weedcluster.ErrNoWeed))
	}
	if check {
		r := weedReady{Ready: true, Weed: weedBin}
		var err error
		if r.WeedRing, err = weedcluster.FindWeedRing(); err != nil {
			r.WeedRingError = err.Error()
		}
		return enc.Encode(r)
	}
	// SIGTERM or SIGINT (the bench interrupted while the cluster starts) ends the start or
	// the wait below, and the deferred calls still stop the servers and remove the directory.
	sig, stopSig := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stopSig()
	dir, err := os.MkdirTemp("", "swring-bench-weed-")
	if err != nil {
		return failed(err)
	}
	defer os.RemoveAll(dir)
	if cold > 0 && ns.Netns != "" {
		return failed(errors.New("-netns does not go with -cold"))
	}
	ctx, cancel := context.WithTimeout(sig, 3*time.Minute)
	defer cancel()
	var cluster *weedcluster.Cluster
	switch {
	case ns.Netns != "" && fsMB > 0:
		return failed(errors.New("-netns does not go with -fs-mb"))
	case ns.Netns != "":
		cluster, err = weedcluster.StartNetns(ctx, weedBin, dir, ns)
	default:
		opt := weedcluster.Options{}
		if cold > 0 {
			opt.VolumeSizeLimitMB = 1024
		}
		cluster, err = weedcluster.Start(ctx, weedBin, dir, opt)
	}
	if err != nil {
		return failed(err)
	}
	defer cluster.Stop()
	r := weedReady{Ready: true, Weed: weedBin, Volume: cluster.Volume, VolumeDir: cluster.VolumeDir}
	for _, w := range wants {
		data := make([]byte, w.n)
		rand.Read(data)
		fid, err := cluster.Upload(ctx, w.name+".bin", "application/octet-stream", data)
		if err != nil {
			return failed(fmt.Errorf("uploading the %s needle: %w", w.name, err))
		}
		got, status, err := cluster.Get(ctx, fid)
		if err != nil || status != 200 || string(got) != string(data) {
			return failed(fmt.Errorf("reading back %s (%s): status %d, %d of %d bytes, equal %v, error %v",
				fid, w.name, status, len(got), len(data), string(got) == string(data), err))
		}
		sum := sha256.Sum256(data)
		r.Needles = append(r.Needles, weedNeedle{Size: w.name, Bytes: w.n, Fid: fid, SHA256: hex.EncodeToString(sum[:])})
	}
	if cold > 0 {
		if r.Cold, err = uploadCold(ctx, cluster, cold); err != nil {
			return failed(err)
		}
		r.ColdBytes = coldNeedleBytes
	}
	if fsMB > 0 {
		r.Master = cluster.Master
		if len(cluster.Volumes) > 0 {
			r.VolumeMetrics = cluster.Volumes[0].MetricsAddr
		}
		if r.WeedRing, err = weedcluster.FindWeedRing(); err != nil {
			r.WeedRingError = err.Error()
		}
		filer, err := cluster.StartFiler(ctx, weedcluster.FilerOptions{})
		if err != nil {
			return failed(err)
		}
		r.Filer, r.FsFile, r.FsBytes = filer.Addr, fsFile, int64(fsMB)<<20
		if err := weedfront.FilerPut(ctx, filer.Addr, fsFile, weedfront.SeedOf(fsFile), r.FsBytes); err != nil {
			return failed(err)
		}
	}
	if err := enc.Encode(r); err != nil {
		return err
	}
	// Serve until the bench closes our input (or a signal).
	eof := make(chan struct{})
	go func() { io.Copy(io.Discard, in); close(eof) }()
	select {
	case <-eof:
	case <-sig.Done():
	}
	return nil
}

// uploadCold uploads n cold needles (coldData of their fid), each followed by a filler of
// coldFillerBytes in the same volume (the second fid of one assignment), and returns their
// fids. The first one is read back and checked.
func uploadCold(ctx context.Context, cluster *weedcluster.Cluster, n int) ([]string, error) {
	filler := make([]byte, coldFillerBytes)
	rand.Read(filler)
	fids := make([]string, 0, n)
	for i := range n {
		fid, url, err := cluster.AssignCount(ctx, 2)
		if err != nil {
			return nil, fmt.Errorf("cold needle %d: %w", i, err)
		}
		data := coldData(fid, coldNeedleBytes)
		if err := cluster.Put(ctx, url, fid, "cold.bin", "application/octet-stream", data); err != nil {
			return nil, fmt.Errorf("cold needle %d: %w", i, err)
		}
		if err := cluster.Put(ctx, url, fid+"_1", "filler.bin", "application/octet-stream", filler); err != nil {
			return nil, fmt.Errorf("the filler after cold needle %d: %w", i, err)
		}
		if i == 0 {
			got, status, err := cluster.Get(ctx, fid)
			if err != nil || status != 200 || !bytes.Equal(got, data) {
				return nil, fmt.Errorf("reading back cold needle %s: status %d, %d bytes, error %v", fid, status, len(got), err)
			}
		}
		fids = append(fids, fid)
	}
	return fids, nil
}
