// Package weedfront runs SeaweedFS front ends, each a child process: a `weed filer`, a
// FUSE `weed mount` and a `weed s3`, with the stock `weed` or the one with the ring read
// path (scripts/weed --ring) and its environment (SWRING_ENGINE_SOCKET, SWRING_ENGINE_ADDRS),
// on a cluster of internal/weedcluster; and the generated test data they serve, a function
// of its name and offset (FillPages), so any read can be checked byte for byte without
// keeping a copy. The bench (cmd/ringlat, fsread.go) and the demo (cmd/swring-demo) use it.
package weedfront

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/seaweed-ring/seaweed-ring/go-client/internal/weedcluster"
)

// Page is the unit of the generated data and of the random reads.
const Page = 4096

// FillPages fills dst with the bytes of the generated file `seed` from offset off (a
// multiple of Page): page i holds the output of PCG(seed, i).
func FillPages(dst []byte, seed uint64, off int64) {
	if off%Page != 0 {
		panic("FillPages: unaligned offset")
	}
	for page := off / Page; len(dst) > 0; page++ {
		r := rand.NewPCG(seed, uint64(page))
		n := min(len(dst), Page)
		for i := 0; i < n; i += 8 {
			v := r.Uint64()
			for j := 0; j < 8 && i+j < n; j++ {
				dst[i+j] = byte(v >> (8 * j))
			}
		}
		dst = dst[n:]
	}
}

// SeedOf names a generated file's content.
func SeedOf(name string) uint64 {
	var h uint64 = 14695981039346656037 // FNV-1a
	for i := 0; i < len(name); i++ {
		h = (h ^ uint64(name[i])) * 1099511628211
	}
	return h
}

// PagesReader streams the generated file `seed` of size bytes (for uploads).
type PagesReader struct {
	Seed uint64
	Size int64
	off  int64
	page [Page]byte
}

func (r *PagesReader) Read(p []byte) (int, error) {
	if r.off >= r.Size {
		return 0, io.EOF
	}
	in := r.off % Page
	if in == 0 {
		FillPages(r.page[:], r.Seed, r.off)
	}
	n := copy(p, r.page[in:min(int64(Page), in+r.Size-r.off)])
	r.off += int64(n)
	return n, nil
}

// Proc is one front-end process.
type Proc struct {
	Name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
	// unmount, for a mount: run before the process is signalled.
	unmount func()
}

// startWeed runs `weed args...` with env added, output into dir/<name>.log, in a process
// group of its own.
func startWeed(bin, dir, name string, env []string, args ...string) (*Proc, error) {
	logPath := filepath.Join(dir, name+".log")
	f, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer f.Close() // the child keeps its own descriptor
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr, cmd.Dir = f, f, dir
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting weed %s: %w", args[0], err)
	}
	p := &Proc{Name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() { cmd.Wait(); close(p.done) }()
	return p, nil
}

// Pid is the process id.
func (p *Proc) Pid() int { return p.cmd.Process.Pid }

// Exited reports whether the process has ended.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// LogTail is the end of the process's output, for error messages.
func (p *Proc) LogTail() string {
	b, _ := os.ReadFile(p.log)
	if len(b) > 1500 {
		b = b[len(b)-1500:]
	}
	return strings.TrimSpace(string(b))
}

// Stop unmounts (a mount), then SIGTERM, SIGKILL after 10 s.
func (p *Proc) Stop() {
	if p.unmount != nil {
		p.unmount()
		p.unmount = nil
	}
	if p.Exited() {
		return
	}
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
	}
}

// waitFor polls ok until it holds, the process exits or the deadline passes.
func (p *Proc) waitFor(ctx context.Context, what string, ok func() error) error {
	deadline := time.Now().Add(90 * time.Second)
	for {
		err := ok()
		if err == nil {
			return nil
		}
		if p.Exited() {
			return fmt.Errorf("weed %s exited before %s (%v); its log:\n%s", p.Name, what, err, p.LogTail())
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("weed %s: no %s after 90 s (%v); its log:\n%s", p.Name, what, err, p.LogTail())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// freeLoopbackPair finds a loopback port p with p+10000 also free (weed's gRPC port).
func freeLoopbackPair() (int, error) {
	for range 200 {
		p := 20000 + rand.IntN(20000)
		a, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
		if err != nil {
			continue
		}
		b, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p+10000)))
		a.Close()
		if err != nil {
			continue
		}
		b.Close()
		return p, nil
	}
	return 0, errors.New("no free loopback port pair found")
}

// httpUp is nil once GET url answers at all.
func httpUp(url string) func() error {
	c := &http.Client{Timeout: 2 * time.Second}
	return func() error {
		resp, err := c.Get(url)
		if err != nil {
			return err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return nil
	}
}

// StartFiler runs `weed filer` on the master with its store under dir/name; returns it and
// its host:port once it answers.
func StartFiler(ctx context.Context, bin, dir, name, master string, env []string) (*Proc, string, error) {
	store := filepath.Join(dir, name)
	if err := os.MkdirAll(store, 0o755); err != nil {
		return nil, "", err
	}
	port, err := freeLoopbackPair()
	if err != nil {
		return nil, "", err
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	p, err := startWeed(bin, dir, name, env, "filer", "-master="+master, "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
		"-port="+strconv.Itoa(port), "-defaultStoreDir="+store)
	if err != nil {
		return nil, "", err
	}
	if err := p.waitFor(ctx, "answer on "+addr, httpUp("http://"+addr+"/")); err != nil {
		p.Stop()
		return nil, "", err
	}
	return p, addr, nil
}

// StartS3 runs `weed s3` on filer (no identities configured: anonymous access).
func StartS3(ctx context.Context, bin, dir, name, filer string, env []string) (*Proc, string, error) {
	port, err := freeLoopbackPair()
	if err != nil {
		return nil, "", err
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	p, err := startWeed(bin, dir, name, env, "s3", "-filer="+filer, "-ip.bind=127.0.0.1", "-port="+strconv.Itoa(port))
	if err != nil {
		return nil, "", err
	}
	if err := p.waitFor(ctx, "answer on "+addr, httpUp("http://"+addr+"/")); err != nil {
		p.Stop()
		return nil, "", err
	}
	return p, addr, nil
}

// StartMount runs a FUSE `weed mount` of filer at dir/name and returns it once want (a
// file of the filer, e.g. "/bench/data.bin") shows with its size there. Its disk chunk
// cache is off (-cacheCapacityMB=0): the scenarios read data no cache holds.
func StartMount(ctx context.Context, bin, dir, name, filer, want string, wantSize int64, env []string) (*Proc, string, error) {
	mnt := filepath.Join(dir, name)
	if err := os.MkdirAll(mnt, 0o755); err != nil {
		return nil, "", err
	}
	p, err := startWeed(bin, dir, name, env, "mount", "-filer="+filer, "-dir="+mnt, "-cacheCapacityMB=0",
		"-cacheDir="+filepath.Join(dir, name+"-cache"), "-allowOthers=false")
	if err != nil {
		return nil, "", err
	}
	p.unmount = func() {
		// weed mount unmounts on SIGTERM; a lazy unmount first makes sure nothing is left
		// mounted if it cannot.
		_ = exec.Command("umount", "-l", mnt).Run()
	}
	path := filepath.Join(mnt, want)
	err = p.waitFor(ctx, "mount showing "+want, func() error {
		st, err := os.Stat(path)
		if err == nil && st.Size() != wantSize {
			err = fmt.Errorf("%s has %d bytes, expected %d", path, st.Size(), wantSize)
		}
		return err
	})
	if err != nil {
		p.Stop()
		return nil, "", err
	}
	return p, mnt, nil
}

// FilerPut writes the generated file `seed` of size bytes to the filer at path (the filer
// splits it into chunks of its -maxMB).
func FilerPut(ctx context.Context, filer, path string, seed uint64, size int64) error {
	return FilerPutData(ctx, filer, path, "application/octet-stream", &PagesReader{Seed: seed, Size: size}, size)
}

// FilerPutData writes size bytes of body to the filer at path with Content-Type mime (a
// text type lets the filer store the chunks gzipped).
func FilerPutData(ctx context.Context, filer, path, mime string, body io.Reader, size int64) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, "http://"+filer+path, body)
	if err != nil {
		return err
	}
	req.ContentLength = size
	req.Header.Set("Content-Type", mime)
	resp, err := (&http.Client{Timeout: 10 * time.Minute}).Do(req)
	if err != nil {
		return fmt.Errorf("writing %s through the filer: %w", path, err)
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusCreated && resp.StatusCode != http.StatusOK {
		return fmt.Errorf("writing %s through the filer: %s: %s", path, resp.Status, strings.TrimSpace(string(msg)))
	}
	return nil
}

// RingWeed finds the `weed` with the ring read path: $SWRING_WEED_RING, else weed-ring next
// to the stock binary (where scripts/weed --ring builds it).
func RingWeed(stock string) (string, error) {
	if p := os.Getenv("SWRING_WEED_RING"); p != "" {
		if st, err := os.Stat(p); err != nil || st.IsDir() {
			return "", fmt.Errorf("SWRING_WEED_RING=%s is not a file: %w", p, weedcluster.ErrNoWeed)
		}
		return p, nil
	}
	p := filepath.Join(filepath.Dir(stock), "weed-ring")
	if st, err := os.Stat(p); err != nil || st.IsDir() {
		return "", fmt.Errorf("no weed with the ring read path (%s): run scripts/weed --ring or set SWRING_WEED_RING: %w",
			p, weedcluster.ErrNoWeed)
	}
	return p, nil
}
