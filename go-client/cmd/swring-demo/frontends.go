package main

// The second half of the demo: SeaweedFS's own front ends reading through the rings, in
// process. A stock filer holds the files; two FUSE `weed mount`s and two `weed s3` gateways
// serve them, one of each with the stock `weed` (chunks over HTTP from the volume server)
// and one with the `weed` of scripts/weed --ring and SWRING_ENGINE_SOCKET in its
// environment (chunks by READ_NEEDLE through the engine). Every file is read whole and at
// offsets across chunk boundaries through all four, and compared with what was written;
// then 4 KiB reads at offsets no cache holds are timed side by side, and the engine's own
// counters show which process it served.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/seaweed-ring/seaweed-ring/go-client/internal/enginectl"
	"github.com/seaweed-ring/seaweed-ring/go-client/internal/weedcluster"
	"github.com/seaweed-ring/seaweed-ring/go-client/internal/weedfront"
)

// demoFile is one file of the front-end demo, written through the filer.
type demoFile struct {
	name string
	mime string
	data []byte
}

// frontEnd is one mount and one S3 gateway of a path (stock or ring).
type frontEnd struct {
	path  string // "stock" or "ring"
	mnt   string
	s3    string
	mount *weedcluster.Mount
	gw    *weedcluster.S3
}

func frontEnds(ctx context.Context, engineBin, weedBin, ringBin, dir string, cluster *weedcluster.Cluster, transports string, rounds int) error {
	if ringBin == "" {
		var err error
		if ringBin, err = weedcluster.FindWeedRing(); err != nil {
			return fmt.Errorf("%w (scripts/run builds it with scripts/weed --ring)", err)
		}
	}
	fmt.Println()
	say("SeaweedFS front ends: a filer, and a FUSE weed mount and a weed s3 gateway each with the stock weed and with the ring read path (%s)", ringBin)
	last := runtime.NumCPU() - 1
	// The needle half moved this process off the engine's core (keepOffCore), and the new
	// engine would inherit that: give every thread all CPUs back, start it, move off again.
	var all unix.CPUSet
	for c := 0; c <= last; c++ {
		all.Set(c)
	}
	setAffinity(all)
	eng, err := enginectl.Start(ctx, enginectl.Options{Bin: engineBin, Dir: mkdir(dir, "front-engine"), Listen: true,
		Transports: transports, VolumeDirs: []string{cluster.VolumeDir}, Cores: []int{last}})
	if err != nil {
		return fmt.Errorf("engine for the front ends: %w", err)
	}
	defer eng.Stop()
	keepOffCore(last)
	addrs := "SWRING_ENGINE_ADDRS=" + cluster.Volume + "=" + eng.UCXAddr
	say("engine: serves %s on UCX %s; the ring front ends run with SWRING_ENGINE_SOCKET=%s %s", cluster.VolumeDir, eng.UCXAddr, eng.Socket, addrs)

	filerProc, err := cluster.StartFiler(ctx, weedcluster.FilerOptions{})
	if err != nil {
		return err
	}
	defer filerProc.Stop()
	filer := filerProc.Addr
	const chunk = 4 << 20 // the filer's -maxMB default: files above it have several chunks
	files := []demoFile{
		{"notes.txt", "text/plain", []byte(strings.Repeat("SeaweedFS front ends reading through the rings, in process.\n", 3000))},
		{"4k.bin", "application/octet-stream", generated("4k.bin", 4096)},
		{"1m+3.bin", "application/octet-stream", generated("1m+3.bin", 1<<20+3)},
		{"8m+1.bin", "application/octet-stream", generated("8m+1.bin", 8<<20+1)},
	}
	for _, f := range files {
		if err := weedfront.FilerPutData(ctx, filer, "/buckets/demo/"+f.name, f.mime, bytes.NewReader(f.data), int64(len(f.data))); err != nil {
			return err
		}
	}
	// The file of the timed mount reads, outside the bucket (a bucket is a collection of its
	// own, and its first volume holds 64 MB).
	big := demoFile{"cold-64m.bin", "application/octet-stream", generated("cold-64m.bin", 64<<20)}
	if err := weedfront.FilerPutData(ctx, filer, "/demo/"+big.name, big.mime, bytes.NewReader(big.data), int64(len(big.data))); err != nil {
		return err
	}
	say("filer %s: wrote %d files under /buckets/demo (chunks of 4 MiB; the text file is stored gzipped) and /demo/%s", filer, len(files), big.name)

	var ends []*frontEnd
	defer func() {
		for _, e := range ends {
			if e.gw != nil {
				e.gw.Stop()
			}
			if e.mount != nil {
				e.mount.Stop()
			}
		}
	}()
	for _, p := range []struct {
		path string
		ro   weedcluster.ReaderOptions
	}{
		{"stock", weedcluster.ReaderOptions{Weed: weedBin}},
		{"ring", weedcluster.ReaderOptions{Weed: ringBin, EngineSocket: eng.Socket, Env: []string{addrs}}},
	} {
		e := &frontEnd{path: p.path}
		ends = append(ends, e)
		// The on-disk chunk cache off, so that the timed reads below fetch every chunk.
		if e.mount, err = cluster.StartMount(ctx, weedcluster.MountOptions{ReaderOptions: p.ro, Filer: filer, ChunkCacheMB: -1}); err != nil {
			return err
		}
		e.mnt = e.mount.Dir
		if err := waitForFile(filepath.Join(e.mnt, "demo", big.name), int64(len(big.data))); err != nil {
			return fmt.Errorf("%s mount: %w (log %s)", p.path, err, e.mount.LogPath)
		}
		if e.gw, err = cluster.StartS3(ctx, weedcluster.S3Options{ReaderOptions: p.ro, Filer: filer}); err != nil {
			return err
		}
		e.s3 = e.gw.Addr
		say("%-5s weed mount (FUSE) at %s (pid %d), weed s3 on %s (pid %d)", p.path, e.mnt, e.mount.Pid(), e.s3, e.gw.Pid())
	}

	// Byte-exact: whole files and reads across chunk boundaries, through all four.
	hc := &http.Client{Timeout: time.Minute}
	fmt.Printf("\n%-10s %-10s %-34s %-34s\n", "file", "size", "stock mount / s3 (whole, ranges)", "ring mount / s3 (whole, ranges)")
	for _, f := range files {
		row := fmt.Sprintf("%-10s %-10s", f.name, size(len(f.data)))
		for _, e := range ends {
			verdict, err := checkFile(hc, e, f, chunk)
			if err != nil {
				return fmt.Errorf("%s front ends, %s: %w", e.path, f.name, err)
			}
			row += fmt.Sprintf(" %-34s", verdict)
		}
		fmt.Println(row)
	}

	// What a user sees: 4 KiB reads at offsets no cache holds, stock and ring in turn.
	lat := map[string][]time.Duration{}
	s3lat := map[string][]time.Duration{}
	var handles []*coldReader
	for _, e := range ends {
		r, err := openCold(filepath.Join(e.mnt, "demo", big.name), len(big.data))
		if err != nil {
			return err
		}
		defer r.close()
		handles = append(handles, r)
	}
	buf := make([]byte, 4096)
	for i := range rounds {
		for j, e := range ends {
			d, err := handles[j].read(i, big.data)
			if err != nil {
				return fmt.Errorf("%s mount: %w", e.path, err)
			}
			lat[e.path] = append(lat[e.path], d)
			t := time.Now()
			if err := get(hc, "http://"+e.s3+"/demo/4k.bin", "", buf, files[1].data); err != nil {
				return fmt.Errorf("%s s3: %w", e.path, err)
			}
			s3lat[e.path] = append(s3lat[e.path], time.Since(t))
		}
	}
	fmt.Printf("\n%-44s %12s %12s %9s\n", "median of "+fmt.Sprint(rounds)+" reads", "stock", "ring", "ring gain")
	for _, row := range []struct {
		what string
		m    map[string][]time.Duration
	}{{"weed mount: 4 KiB pread, never read before", lat}, {"weed s3: GET of a 4 KiB object (keep-alive)", s3lat}} {
		st, rg := median(row.m["stock"]), median(row.m["ring"])
		fmt.Printf("%-44s %12v %12v %8.2fx\n", row.what, st, rg, float64(st)/float64(rg))
	}

	// The engine's counters: which processes it served, and the volume reads it made.
	return showEngineCounters(engineBin, eng.Socket, ends)
}

// waitForFile waits until a new mount shows path with its size.
func waitForFile(path string, size int64) error {
	deadline := time.Now().Add(60 * time.Second)
	for {
		st, err := os.Stat(path)
		if err == nil && st.Size() == size {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s does not show with %d bytes: %v", path, size, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func generated(name string, n int) []byte {
	b := make([]byte, (n+weedfront.Page-1)/weedfront.Page*weedfront.Page)
	weedfront.FillPages(b, weedfront.SeedOf(name), 0)
	return b[:n]
}

// checkFile reads f whole and around each chunk boundary through e's mount and S3 gateway.
func checkFile(hc *http.Client, e *frontEnd, f demoFile, chunk int) (string, error) {
	got, err := os.ReadFile(filepath.Join(e.mnt, "buckets/demo", f.name))
	if err != nil {
		return "", err
	}
	if !bytes.Equal(got, f.data) {
		return "", fmt.Errorf("the mount returned %d bytes, not the %d written", len(got), len(f.data))
	}
	buf := make([]byte, len(f.data)+1)
	if err := get(hc, "http://"+e.s3+"/demo/"+f.name, "", buf, f.data); err != nil {
		return "", err
	}
	fh, err := os.Open(filepath.Join(e.mnt, "buckets/demo", f.name))
	if err != nil {
		return "", err
	}
	defer fh.Close()
	ranges := 0
	for b := chunk; b < len(f.data); b += chunk {
		lo, hi := b-100, min(b+100, len(f.data)) // across the boundary
		p := make([]byte, hi-lo)
		if n, err := fh.ReadAt(p, int64(lo)); n != len(p) || !bytes.Equal(p, f.data[lo:hi]) {
			return "", fmt.Errorf("pread [%d,%d) through the mount: %d bytes, %v, equal %v", lo, hi, n, err, bytes.Equal(p[:n], f.data[lo:lo+n]))
		}
		if err := get(hc, "http://"+e.s3+"/demo/"+f.name, fmt.Sprintf("bytes=%d-%d", lo, hi-1), buf, f.data[lo:hi]); err != nil {
			return "", err
		}
		ranges++
	}
	return fmt.Sprintf("equal, equal (%d across chunks)", ranges), nil
}

// get GETs url (with a Range header when rng is set) into buf and compares with want.
func get(hc *http.Client, url, rng string, buf, want []byte) error {
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	if rng != "" {
		req.Header.Set("Range", rng)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	n, err := io.ReadFull(resp.Body, buf[:min(len(buf), len(want)+1)])
	resp.Body.Close()
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		return fmt.Errorf("GET %s %s: %w", url, rng, err)
	}
	if resp.StatusCode/100 != 2 || !bytes.Equal(buf[:n], want) {
		return fmt.Errorf("GET %s %s: %s, %d bytes, equal %v", url, rng, resp.Status, n, bytes.Equal(buf[:n], want))
	}
	return nil
}

// coldReader does 4 KiB preads at offsets never read before: a shuffled order of pages
// more than 8 MiB below the end (SeaweedFS's reader then stays in random mode and fetches
// each range, caching nothing), readahead off.
type coldReader struct {
	f     *os.File
	order []int
	buf   []byte
}

func openCold(path string, size int) (*coldReader, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_RANDOM)
	r := &coldReader{f: f, buf: make([]byte, 4096)}
	pages := size / 4096
	if _, err := f.ReadAt(r.buf, int64(pages-1)*4096); err != nil && !errors.Is(err, io.EOF) {
		return nil, err // the last page first: the read frontier is the end from now on
	}
	r.order = rand.Perm(pages - (8<<20)/4096 - 1)
	return r, nil
}

func (r *coldReader) read(i int, data []byte) (time.Duration, error) {
	off := int64(r.order[i%len(r.order)]) * 4096
	t := time.Now()
	n, err := r.f.ReadAt(r.buf, off)
	d := time.Since(t)
	if n != len(r.buf) || !bytes.Equal(r.buf, data[off:off+4096]) {
		return 0, fmt.Errorf("pread at %d: %d bytes, %v", off, n, err)
	}
	return d, nil
}

func (r *coldReader) close() { r.f.Close() }

func median(d []time.Duration) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2].Round(time.Microsecond)
}

// showEngineCounters prints, from `engine status --json`, the sessions of the ring front
// ends (by process id) and the engine's volume reads.
func showEngineCounters(engineBin, socket string, ends []*frontEnd) error {
	out, err := exec.Command(engineBin, "status", "--socket", socket, "--json").Output()
	if err != nil {
		return fmt.Errorf("engine status: %w", err)
	}
	var st struct {
		Sessions []struct {
			ID        uint64 `json:"id"`
			ClientPid int    `json:"client_pid"`
			Completed uint64 `json:"completed"`
		} `json:"sessions"`
		Volumes []struct {
			ReadsServed uint64 `json:"reads_served"`
			BytesServed uint64 `json:"bytes_served"`
		} `json:"volumes"`
	}
	if err := json.Unmarshal(out, &st); err != nil {
		return fmt.Errorf("engine status --json: %w", err)
	}
	who := map[int]string{}
	for _, e := range ends {
		who[e.mount.Pid()] = e.path + " weed mount"
		who[e.gw.Pid()] = e.path + " weed s3"
	}
	fmt.Println()
	served := map[string]uint64{}
	for _, s := range st.Sessions {
		name := who[s.ClientPid]
		if name == "" {
			name = fmt.Sprintf("pid %d", s.ClientPid)
		}
		served[name] += s.Completed
		fmt.Printf("engine session %d: %s, %d requests completed\n", s.ID, name, s.Completed)
	}
	var reads, bytesServed uint64
	for _, v := range st.Volumes {
		reads, bytesServed = reads+v.ReadsServed, bytesServed+v.BytesServed
	}
	fmt.Printf("engine volume reads: %d needles, %s served\n", reads, size(int(bytesServed)))
	if served["stock weed mount"]+served["stock weed s3"] != 0 {
		return errors.New("the stock front ends have sessions with the engine")
	}
	if served["ring weed mount"] == 0 || served["ring weed s3"] == 0 || reads == 0 {
		return errors.New("the engine served no reads for the ring front ends: the ring read path is not on")
	}
	return nil
}

// setAffinity moves every thread of this process to set (threads created later inherit it).
func setAffinity(set unix.CPUSet) {
	tasks, _ := os.ReadDir("/proc/self/task")
	for _, t := range tasks {
		if tid, err := strconv.Atoi(t.Name()); err == nil {
			unix.SchedSetaffinity(tid, &set)
		}
	}
}
