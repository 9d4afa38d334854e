package needle

// Engines across a real network (issue #14): two network namespaces joined by a veth pair
// (scripts/netns), as two hosts joined by one link, so UCX goes over tcp. Namespace -a holds
// a SeaweedFS master and volume server and the engine serving the volume directory
// (listening on the veth address); namespace -b holds the client's engine, and the
// Reader's HTTP fallback dials from there too (internal/netns). The Reader (this process)
// talks to the client engine through its control socket, a file both namespaces see.
//
// 1,000 reads in all, by four goroutines and the faults' probes, every byte compared with
// what was uploaded, with three faults in between: the link taken down under load and
// brought back; the serving engine SIGSTOPped (a hung peer: its requests end timed-out after
// the client engine's ucx.request-timeout-ms of 500 ms, and the reads fall back to HTTP) and
// SIGCONTed; the serving engine SIGKILLed and started again on the same address. Every read
// of the default Reader must return the right bytes, by the ring or by HTTP; a ring-only
// Reader must answer a clear error during each fault, and the ring must serve again after it.
//
// Needs root (namespaces, veth): skipped otherwise, unless SWRING_REQUIRE_ALL=1 (CI), which
// makes that a failure; weed and the engine binary as for TestWeedE2E (SWRING_REQUIRE_WEED=1
// makes a missing one a failure).

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/seaweed-ring/seaweed-ring/go-client/internal/enginectl"
	"github.com/seaweed-ring/seaweed-ring/go-client/internal/netns"
	"github.com/seaweed-ring/seaweed-ring/go-client/internal/weedcluster"
	"github.com/seaweed-ring/seaweed-ring/go-client/ring"
)

const (
	netnsTotalReads   = 1000
	netnsEnginePort   = "13337"
	netnsReqTimeoutMS = 500 // the client engine's ucx.request-timeout-ms
	netnsWorkers      = 4
)

func TestNetnsFaults(t *testing.T) {
	requireAll := os.Getenv("SWRING_REQUIRE_ALL") == "1"
	skip := func(why string) {
		t.Helper()
		if requireAll {
			t.Fatalf("SWRING_REQUIRE_ALL=1 but %s", why)
		}
		t.Skipf("netns end-to-end test skipped: %s (SWRING_REQUIRE_ALL=1 makes this a failure)", why)
	}
	if os.Geteuid() != 0 {
		skip("it needs root (network namespaces and a veth pair)")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		skip("no `ip` command (iproute2)")
	}
	weed, engineBin := e2eBinaries(t)
	script, err := filepath.Abs(filepath.Join("..", "..", "scripts", "netns"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(script); err != nil {
		t.Fatalf("scripts/netns: %v", err)
	}
	start := time.Now()
	limit := 3 * time.Minute
	if d, ok := t.Deadline(); ok {
		limit = min(limit, time.Until(d)-20*time.Second)
	}
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	t.Cleanup(cancel)

	// The pair, removed at the end whatever happened (registered first: it runs last, after
	// the processes in it were stopped; `down` kills any left).
	name := fmt.Sprintf("swr%d", os.Getpid())
	t.Cleanup(func() {
		if out, err := exec.Command(script, "down", name).CombinedOutput(); err != nil {
			t.Errorf("scripts/netns down %s: %v\n%s", name, err, out)
		}
	})
	out, err := exec.CommandContext(ctx, script, "up", name).CombinedOutput()
	if err != nil {
		t.Fatalf("scripts/netns up %s: %v\n%s", name, err, out)
	}
	env := map[string]string{}
	for _, kv := range strings.Fields(string(out)) {
		if k, v, ok := strings.Cut(kv, "="); ok {
			env[k] = v
		}
	}
	nsA, nsB, devA, addrA := env["NETNS_A"], env["NETNS_B"], env["DEV_A"], env["ADDR_A"]
	if nsA == "" || nsB == "" || devA == "" || addrA == "" {
		t.Fatalf("scripts/netns up printed %q", out)
	}
	t.Logf("namespaces %s (%s) and %s (%s)", nsA, addrA, nsB, env["ADDR_B"])

	dir := shortTempDir(t)
	cluster, err := weedcluster.StartNetns(ctx, weed, filepath.Join(dir, "weed"), weedcluster.NetnsOptions{Netns: nsA, IP: addrA})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		t0 := time.Now()
		cluster.Stop()
		t.Logf("weed stopped in %v", time.Since(t0).Round(time.Millisecond))
	})
	t.Cleanup(func() {
		if t.Failed() {
			dumpTail(t, filepath.Join(cluster.Dir, "weed-volume.log"))
		}
	})
	files := netnsCorpus(ctx, t, cluster)
	t.Logf("weed up in %s, %d files written (%v so far)", nsA, len(files), time.Since(start).Round(time.Millisecond))

	last := runtime.NumCPU() - 1
	serverOpts := enginectl.Options{Bin: engineBin, Dir: shortTempDir(t), Netns: nsA, ListenAddr: addrA + ":" + netnsEnginePort,
		Transports: "tcp", VolumeDirs: []string{cluster.VolumeDir}, Cores: []int{last}}
	server, err := enginectl.Start(ctx, serverOpts)
	if err != nil {
		t.Fatalf("serving engine: %v", err)
	}
	var serverMu sync.Mutex // server changes at the restart; cleanups read it
	var serverStopped atomic.Bool
	t.Cleanup(func() {
		serverMu.Lock()
		defer serverMu.Unlock()
		if serverStopped.Load() {
			syscall.Kill(server.Pid(), syscall.SIGCONT)
		}
		t0 := time.Now()
		server.Stop()
		t.Logf("serving engine stopped in %v", time.Since(t0).Round(time.Millisecond))
	})
	serverLogs := []string{filepath.Join(serverOpts.Dir, "engine.log")}
	client, err := enginectl.Start(ctx, enginectl.Options{Bin: engineBin, Dir: shortTempDir(t), Netns: nsB,
		Transports: "tcp", RequestTimeoutMS: netnsReqTimeoutMS, Cores: []int{max(last-1, 0)}})
	if err != nil {
		t.Fatalf("client engine: %v", err)
	}
	t.Cleanup(func() {
		t0 := time.Now()
		client.Stop()
		t.Logf("client engine stopped in %v", time.Since(t0).Round(time.Millisecond))
	})
	clientLog := filepath.Join(filepath.Dir(client.Socket), "engine.log")
	t.Cleanup(func() {
		if t.Failed() {
			for _, l := range serverLogs {
				dumpTail(t, l)
			}
			dumpTail(t, clientLog)
		}
	})
	if server.UCXAddr != serverOpts.ListenAddr {
		t.Fatalf("serving engine listens on %s, want %s", server.UCXAddr, serverOpts.ListenAddr)
	}
	// `ip netns exec` execs the engine in place: the pid signalled below is the engine's.
	if exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", server.Pid())); err != nil || filepath.Base(exe) != filepath.Base(engineBin) {
		t.Fatalf("serving engine pid %d is %q (%v), not the engine", server.Pid(), exe, err)
	}

	// HTTP fallback from namespace b, across the veth, like the client host's.
	httpStarts := &countingTransport{rt: &http.Transport{DialContext: netns.Dialer(nsB), MaxIdleConnsPerHost: 16, IdleConnTimeout: time.Minute}}
	opts := Options{EngineSocket: client.Socket, EngineAddrs: map[string]string{cluster.Volume: server.UCXAddr},
		HTTPClient: &http.Client{Transport: httpStarts, Timeout: 45 * time.Second}}
	auto := NewReader(opts)
	t.Cleanup(func() { auto.Close() })
	opts.Only = PathRing
	onRing := NewReader(opts)
	t.Cleanup(func() { onRing.Close() })

	l := &netnsLoad{t: t, ctx: ctx, auto: auto, volume: cluster.Volume, files: files}
	l.cond = sync.NewCond(&l.mu)
	l.stats = map[string]*netnsPhaseStats{}
	l.phase = "warm-up"
	var wg sync.WaitGroup
	for g := range netnsWorkers {
		wg.Add(1)
		go func() { defer wg.Done(); l.worker(g) }()
	}
	t.Cleanup(func() { l.finish(); wg.Wait() })

	// Warm-up: everything over the ring, across the veth on tcp.
	l.run(100)
	checkLanes(t, clientLog, "tcp/")
	if t.Failed() {
		t.FailNow()
	}

	// fault runs one: 60 worker reads, the fault once 10 of them have begun and a read is
	// in flight, until a read has fallen back to HTTP and a ring-only read got a clear error
	// (wantRing), then heal; then recovery.
	fault := func(phase, healed string, inject, heal func(), wantRing func(error) bool) {
		t.Helper()
		t0 := time.Now()
		l.setPhase("before " + phase)
		l.allowMore(60)
		l.waitFor(func() bool { return l.started.Load() >= l.allowed()-50 && l.inflight.Load() > 0 }, "reads in flight before "+phase)
		inflight := l.inflight.Load()
		mark, timedOut := httpStarts.n.Load(), l.timedOut.Load()
		inject()
		l.setPhase(phase)
		t.Logf("%s with %d reads in flight", phase, inflight)
		// A ring-only read gets a clear error, and does not hang.
		f := l.files[3]
		_, rerr := l.ringOnly(onRing, f)
		var ne *Error
		if !wantRing(rerr) || !errors.As(rerr, &ne) || ne.Path != PathRing {
			t.Errorf("%s: ring-only read %s: %v; want the ring's error", phase, f, rerr)
		} else {
			t.Logf("%s: ring-only read: %v", phase, rerr)
		}
		// Wait until a default read has gone to HTTP (the ring gave up on the peer).
		l.waitFor(func() bool { return httpStarts.n.Load() > mark }, "a read falling back to HTTP during "+phase)
		heal()
		l.setPhase(healed)
		l.waitFor(func() bool { return l.done.Load() == l.allowed() }, "the reads of "+phase)
		l.recover(onRing, healed)
		t.Logf("%s and %s: %v; %d reads fell back after timed-out", phase, healed, time.Since(t0).Round(time.Millisecond), l.timedOut.Load()-timedOut)
		if phase == "SIGSTOP" && l.timedOut.Load() == timedOut {
			t.Errorf("SIGSTOP: no read fell back to HTTP after timed-out")
		}
	}
	peerDown := func(err error) bool {
		return errors.Is(err, ring.ErrTimedOut) || errors.Is(err, ring.ErrPeerFailed) || errors.Is(err, ring.ErrNoSuchPeer)
	}

	// 1. The link: the serving side's end of the veth goes down (the client's end loses its
	// carrier: packets are lost, as on a pulled cable), then up again.
	link := func(state string) func() {
		return func() {
			if out, err := exec.Command("ip", "-n", nsA, "link", "set", devA, state).CombinedOutput(); err != nil {
				t.Fatalf("ip link set %s %s: %v %s", devA, state, err, out)
			}
		}
	}
	fault("link down", "link up", link("down"), link("up"), peerDown)

	// 2. A hung peer: requests to it end timed-out after the client engine's request
	// timeout; the reads go over HTTP; then it resumes (and answers requests long given up).
	fault("SIGSTOP", "SIGCONT", func() {
		serverStopped.Store(true)
		if err := syscall.Kill(server.Pid(), syscall.SIGSTOP); err != nil {
			t.Fatal(err)
		}
		// kill returns before every thread has stopped: wait until they all have.
		l.waitFor(func() bool { return allThreadsStopped(server.Pid()) }, "stop of every engine thread")
	}, func() {
		if err := syscall.Kill(server.Pid(), syscall.SIGCONT); err != nil {
			t.Fatal(err)
		}
		serverStopped.Store(false)
	}, func(err error) bool { return errors.Is(err, ring.ErrTimedOut) })

	// 3. The serving engine crashes and comes back on the same address.
	fault("engine killed", "engine restarted", func() { server.Kill() }, func() {
		opts := serverOpts
		opts.Dir = shortTempDir(t)
		again, err := enginectl.Start(ctx, opts)
		if err != nil {
			t.Fatalf("serving engine restart on %s: %v", opts.ListenAddr, err)
		}
		serverMu.Lock()
		server = again
		serverMu.Unlock()
		serverLogs = append(serverLogs, filepath.Join(opts.Dir, "engine.log"))
	}, peerDown)

	// The rest of the 1,000 reads, all over the ring again.
	l.setPhase("final")
	rest := netnsTotalReads - l.total.Load()
	if rest < 100 {
		t.Fatalf("only %d of the %d reads left for the last phase: the faults took too many", rest, netnsTotalReads)
	}
	l.run(rest)
	l.finish()
	wg.Wait()

	// Each read completed exactly once, and every one was counted.
	if got := l.total.Load(); got != netnsTotalReads {
		t.Errorf("%d reads made, want %d", got, netnsTotalReads)
	}
	st := auto.Stats()
	if n := int64(st.RingReads + st.HTTPReads + st.Failures); n != l.autoReads.Load() || st.Failures != 0 {
		t.Errorf("reader counted %d ring + %d HTTP + %d failed reads, for %d reads made", st.RingReads, st.HTTPReads, st.Failures, l.autoReads.Load())
	}
	for _, p := range []string{"warm-up", "final"} {
		if s := l.phaseStats(p); s.http != 0 || s.ring == 0 {
			t.Errorf("%s: %d reads over the ring, %d over HTTP; want all on the ring", p, s.ring, s.http)
		}
	}
	// And in the client engine: its sessions (the two readers', redialed ones included)
	// completed every request they submitted, once.
	auto.Close()
	onRing.Close()
	checkSessionsComplete(t, clientLog)
	l.report()
	t.Logf("%d reads (default reader: %d ring, %d HTTP, %d fallbacks) in %v", l.total.Load(), st.RingReads, st.HTTPReads, st.Fallbacks,
		time.Since(start).Round(time.Millisecond))
}

var (
	sessionOpenedRE = regexp.MustCompile(`session opened session=(\d+)`)
	sessionClosedRE = regexp.MustCompile(`session closed session=(\d+) .*submitted=(\d+) completed=(\d+)`)
)

// checkSessionsComplete waits until the engine logged the end of every session it opened
// and checks that each completed all it was submitted.
func checkSessionsComplete(t *testing.T, logPath string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		b, _ := os.ReadFile(logPath)
		log := ansiEscapeRE.ReplaceAllString(string(b), "")
		opened := sessionOpenedRE.FindAllStringSubmatch(log, -1)
		closed := sessionClosedRE.FindAllStringSubmatch(log, -1)
		if len(opened) > 0 && len(closed) == len(opened) {
			for _, m := range closed {
				if m[2] != m[3] {
					t.Errorf("client engine session %s: submitted %s, completed %s", m[1], m[2], m[3])
				} else {
					t.Logf("client engine session %s: %s requests submitted and completed", m[1], m[2])
				}
			}
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("client engine: %d sessions opened, %d closed 30 s after the readers closed", len(opened), len(closed))
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// allThreadsStopped says whether every thread of pid is in state T (stopped).
func allThreadsStopped(pid int) bool {
	tasks, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/stat", pid))
	if err != nil || len(tasks) == 0 {
		return false
	}
	for _, p := range tasks {
		b, err := os.ReadFile(p)
		if err != nil {
			return false
		}
		// pid (comm) state ...: comm may hold spaces and parentheses; the state follows the last ')'.
		i := bytes.LastIndexByte(b, ')')
		if i < 0 || i+2 >= len(b) || b[i+2] != 'T' {
			return false
		}
	}
	return true
}

// netnsCorpus writes the files the reads check: sizes from 0 to 3 MiB (several 1 MiB
// chunks, so a fault can come mid-needle) and a compressible text.
func netnsCorpus(ctx context.Context, t *testing.T, c *weedcluster.Cluster) []*e2eFile {
	t.Helper()
	rng := rand.New(rand.NewPCG(14, 14))
	var files []*e2eFile
	for _, n := range []int{0, 1, 100, 4 << 10, 64<<10 - 1, 300 << 10, 1<<20 - 1, 1<<20 + 1, 2<<20 + 3, 3 << 20} {
		files = append(files, &e2eFile{name: fmt.Sprintf("random-%d.bin", n), mime: "application/octet-stream", data: randomBytes(rng, n)})
	}
	files = append(files, &e2eFile{name: "words.txt", mime: "text/plain", data: randomWords(rng, 400<<10), gzipLikely: true})
	for _, f := range files {
		fid, err := c.Upload(ctx, f.name, f.mime, f.data)
		if err != nil {
			t.Fatalf("upload %s: %v", f.name, err)
		}
		f.fid = fid
		checkHTTP(ctx, t, c, f)
	}
	return files
}

// countingTransport counts the HTTP requests the reader starts (its fallbacks).
type countingTransport struct {
	rt http.RoundTripper
	n  atomic.Int64
}

func (c *countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	c.n.Add(1)
	return c.rt.RoundTrip(r)
}

// netnsLoad is the readers' work: workers read while started < allowance, each read
// checked and counted under the phase it started in.
type netnsLoad struct {
	t      *testing.T
	ctx    context.Context
	auto   *Reader
	volume string
	files  []*e2eFile

	total     atomic.Int64 // every read: workers', probes, ring-only
	autoReads atomic.Int64 // reads of the default reader
	started   atomic.Int64 // worker reads begun
	done      atomic.Int64 // worker reads ended
	inflight  atomic.Int64
	timedOut  atomic.Int64 // reads of the default reader over HTTP after the ring's timed-out

	mu       sync.Mutex
	cond     *sync.Cond
	allow    int64
	stopped  bool
	phase    string
	phases   []string
	stats    map[string]*netnsPhaseStats
	slowest  time.Duration
	slowRead string
}

type netnsPhaseStats struct {
	reads, ring, http int
	ringErrs          map[string]int // why reads fell back
}

func (l *netnsLoad) allowed() int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.allow
}

func (l *netnsLoad) allowMore(n int64) {
	l.mu.Lock()
	l.allow += n
	l.mu.Unlock()
	l.cond.Broadcast()
}

func (l *netnsLoad) setPhase(p string) {
	l.mu.Lock()
	l.phase = p
	l.mu.Unlock()
}

func (l *netnsLoad) phaseStats(p string) netnsPhaseStats {
	l.mu.Lock()
	defer l.mu.Unlock()
	if s := l.stats[p]; s != nil {
		return *s
	}
	return netnsPhaseStats{}
}

func (l *netnsLoad) finish() {
	l.mu.Lock()
	l.stopped = true
	l.mu.Unlock()
	l.cond.Broadcast()
}

// run lets the workers make n more reads and waits for them.
func (l *netnsLoad) run(n int64) {
	l.t.Helper()
	l.allowMore(n)
	l.waitFor(func() bool { return l.done.Load() == l.allowed() }, fmt.Sprintf("%d reads", n))
}

// waitFor polls cond; the test fails if it does not hold within a minute (or if a read
// failed meanwhile: waiting on is pointless).
func (l *netnsLoad) waitFor(cond func() bool, what string) {
	l.t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !cond() {
		if l.t.Failed() {
			l.t.FailNow()
		}
		if time.Now().After(deadline) || l.ctx.Err() != nil {
			l.t.Fatalf("no %s within a minute (%d reads made)", what, l.total.Load())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (l *netnsLoad) worker(g int) {
	rng := rand.New(rand.NewPCG(uint64(g), 14))
	for {
		l.mu.Lock()
		for !l.stopped && l.started.Load() >= l.allow {
			l.cond.Wait()
		}
		if l.stopped {
			l.mu.Unlock()
			return
		}
		l.started.Add(1)
		phase := l.phase
		l.mu.Unlock()
		// Mostly the multi-chunk needles, so that faults come mid-needle.
		f := l.files[len(l.files)-1-rng.IntN(5)]
		if rng.IntN(3) == 0 {
			f = l.files[rng.IntN(len(l.files))]
		}
		var off, length int64
		if len(f.data) > 0 && rng.IntN(4) == 0 {
			off = rng.Int64N(int64(len(f.data)))
			length = rng.Int64N(int64(len(f.data)) - off + 1) // 0: to the end
		}
		l.inflight.Add(1)
		l.readAuto(phase, f, off, length)
		l.inflight.Add(-1)
		l.done.Add(1)
	}
}

// readAuto is one read of the default reader, checked and counted under phase.
func (l *netnsLoad) readAuto(phase string, f *e2eFile, off, length int64) *Needle {
	l.total.Add(1)
	l.autoReads.Add(1)
	// No hang: a read has a minute (the HTTP client gives up after 45 s).
	ctx, cancel := context.WithTimeout(l.ctx, time.Minute)
	defer cancel()
	t0 := time.Now()
	var n *Needle
	var err error
	if off == 0 && length == 0 {
		n, err = l.auto.Read(ctx, l.volume, f.fid)
	} else {
		n, err = l.auto.ReadRange(ctx, l.volume, f.fid, off, length)
	}
	took := time.Since(t0)
	what := fmt.Sprintf("read %s [%d+%d] started during %q", f, off, length, phase)
	if err != nil {
		l.t.Errorf("%s after %v: %v", what, took.Round(time.Millisecond), err)
		return nil
	}
	want, _ := sliceRange(f.data, off, length)
	if !bytes.Equal(n.Data, want) || n.Offset != off || n.Size != int64(len(f.data)) {
		l.t.Errorf("%s: over %v, %d bytes at %d of %d; want %d bytes at %d of %d", what, n.Path, len(n.Data), n.Offset, n.Size, len(want), off, len(f.data))
		return nil
	}
	if n.Path == PathHTTP && n.RingErr == nil {
		l.t.Errorf("%s: over HTTP without a ring error", what)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	s := l.stats[phase]
	if s == nil {
		s = &netnsPhaseStats{ringErrs: map[string]int{}}
		l.stats[phase] = s
		l.phases = append(l.phases, phase)
	}
	s.reads++
	if n.Path == PathRing {
		s.ring++
	} else {
		s.http++
		s.ringErrs[ringErrName(n.RingErr)]++
		if errors.Is(n.RingErr, ring.ErrTimedOut) {
			l.timedOut.Add(1)
		}
	}
	if took > l.slowest {
		l.slowest, l.slowRead = took, what
	}
	return n
}

// ringOnly is one read of the ring-only reader (counted in the total).
func (l *netnsLoad) ringOnly(r *Reader, f *e2eFile) (*Needle, error) {
	l.total.Add(1)
	ctx, cancel := context.WithTimeout(l.ctx, time.Minute)
	defer cancel()
	n, err := r.Read(ctx, l.volume, f.fid)
	if err == nil && !bytes.Equal(n.Data, f.data) {
		l.t.Errorf("ring-only read %s: %d bytes, not the uploaded ones", f, len(n.Data))
	}
	return n, err
}

// recover waits (probing one read at a time, each counted) until the default reader reads
// over the ring again, then until the ring-only reader does.
func (l *netnsLoad) recover(onRing *Reader, phase string) {
	l.t.Helper()
	f := l.files[len(l.files)-3] // two chunks
	deadline := time.Now().Add(30 * time.Second)
	probes := 0
	for {
		probes++
		if n := l.readAuto(phase, f, 0, 0); n != nil && n.Path == PathRing {
			break
		}
		if l.t.Failed() || time.Now().After(deadline) {
			l.t.Fatalf("%s: the reader does not read over the ring again after %d probes", phase, probes)
		}
		time.Sleep(50 * time.Millisecond)
	}
	for {
		probes++
		_, err := l.ringOnly(onRing, f)
		if err == nil {
			break
		}
		// The ring-only reader's peer handle may still be the failed one: one more
		// error of that kind, then a new handle.
		if !errors.Is(err, ring.ErrPeerFailed) && !errors.Is(err, ring.ErrNoSuchPeer) && !errors.Is(err, ring.ErrTimedOut) || time.Now().After(deadline) {
			l.t.Fatalf("%s: ring-only read: %v", phase, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	l.t.Logf("%s: the ring serves again after %d probe reads", phase, probes)
}

func (l *netnsLoad) report() {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, p := range l.phases {
		s := l.stats[p]
		var why []string
		for k, v := range s.ringErrs {
			why = append(why, fmt.Sprintf("%s:%d", k, v))
		}
		sort.Strings(why)
		l.t.Logf("%-16s %4d reads: %4d ring, %4d HTTP %v", p, s.reads, s.ring, s.http, why)
	}
	l.t.Logf("slowest read %v: %s", l.slowest.Round(time.Millisecond), l.slowRead)
}

// ringErrName names why a read fell back (the ring's result code when there is one).
func ringErrName(err error) string {
	var re ring.ResultError
	if errors.As(err, &re) {
		return re.Error()
	}
	switch {
	case errors.Is(err, ring.ErrEngineUnavailable):
		return "engine-unavailable"
	case err == nil:
		return "none"
	}
	return err.Error()
}
