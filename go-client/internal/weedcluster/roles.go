package weedcluster

// The readers of a cluster: `weed filer`, `weed mount` (FUSE) and `weed s3`, each with the
// stock or the ring binary (scripts/weed, scripts/weed --ring) and optionally with
// SWRING_ENGINE_SOCKET, which turns the ring read path of the ring binary on.

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// EnvEngineSocket is the environment variable of the patched weed that names the local
// engine's control socket (see go-client/seaweedhook).
const EnvEngineSocket = "SWRING_ENGINE_SOCKET"

// FindWeedRing returns the weed with the ring read path: $SWRING_WEED_RING, else the newest
// one `scripts/weed --ring` built into its cache (.../weed-*/weed-ring).
func FindWeedRing() (string, error) {
	return findWeed("SWRING_WEED_RING", "weed-ring", "run scripts/weed --ring")
}

// ReaderOptions are what every reader role takes.
type ReaderOptions struct {
	// Weed is the binary to run ("" = the cluster's).
	Weed string
	// EngineSocket, when set, is passed as SWRING_ENGINE_SOCKET: the ring binary then reads
	// chunks through that engine (the stock binary ignores it).
	EngineSocket string
	// Env is added to the environment (e.g. SWRING_ENGINE_PORT=...).
	Env []string
	// Args are more flags for the weed command.
	Args []string
}

func (o ReaderOptions) weed(c *Cluster) string {
	if o.Weed != "" {
		return o.Weed
	}
	return c.Weed
}

func (o ReaderOptions) env() []string {
	env := append([]string(nil), o.Env...)
	if o.EngineSocket != "" {
		env = append(env, EnvEngineSocket+"="+o.EngineSocket)
	}
	return env
}

// FilerOptions tune StartFiler.
type FilerOptions struct {
	ReaderOptions
	// EncryptVolumeData is -encryptVolumeData: chunks are stored AES-GCM encrypted, the
	// key in the filer's metadata (FileChunk.CipherKey).
	EncryptVolumeData bool
	// MaxMB is -maxMB, the chunk size of files uploaded through the filer's HTTP API
	// (0 = weed's default, 4).
	MaxMB int
}

// Filer is a running `weed filer`.
type Filer struct {
	Addr string // host:port of its HTTP API
	Dir  string // its store
	*Proc
}

// StartFiler runs `weed filer` against the cluster's master and returns once it answers.
func (c *Cluster) StartFiler(ctx context.Context, opt FilerOptions) (*Filer, error) {
	port, err := freePortPair()
	if err != nil {
		return nil, err
	}
	name := "filer" + strconv.Itoa(port)
	f := &Filer{Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), Dir: filepath.Join(c.Dir, name)}
	if err := os.MkdirAll(f.Dir, 0o755); err != nil {
		return nil, err
	}
	args := append([]string{"filer", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-port=" + strconv.Itoa(port),
		"-master=" + c.Master, "-defaultStoreDir=" + f.Dir}, opt.Args...)
	if opt.EncryptVolumeData {
		args = append(args, "-encryptVolumeData")
	}
	if opt.MaxMB > 0 {
		args = append(args, "-maxMB="+strconv.Itoa(opt.MaxMB))
	}
	// Its working directory is its own: no filer.toml of the caller's is picked up.
	if f.Proc, err = c.spawn(opt.weed(c), spawnOpts{logName: "weed-" + name + ".log", env: opt.env(), workDir: f.Dir}, args...); err != nil {
		return nil, err
	}
	if err := c.waitHTTP(ctx, f.Proc, "http://"+f.Addr+"/"); err != nil {
		f.Stop()
		return nil, err
	}
	return f, nil
}

// MountOptions tune StartMount.
type MountOptions struct {
	ReaderOptions
	// Filer is the filer's host:port (required).
	Filer string
	// Dir is the mount point ("" = a new directory under the cluster's Dir).
	Dir string
	// ChunkSizeLimitMB is -chunkSizeLimitMB, the chunk size of files written through the
	// mount (0 = weed's default, 2).
	ChunkSizeLimitMB int
	// ChunkCacheMB is -cacheCapacityMB, the on-disk chunk cache (0 = weed's default, 128;
	// negative = no chunk cache).
	ChunkCacheMB int64
	// CacheDir is -cacheDir ("" = a new directory under the cluster's Dir: each mount
	// starts with an empty cache).
	CacheDir string
}

// Mount is a running `weed mount`.
type Mount struct {
	Dir string // the mount point
	*Proc
}

// StartMount runs `weed mount` (FUSE; needs /dev/fuse and fusermount, or root) and returns
// once Dir is a FUSE mount. Stop unmounts it.
func (c *Cluster) StartMount(ctx context.Context, opt MountOptions) (*Mount, error) {
	if opt.Filer == "" {
		return nil, errors.New("weedcluster: MountOptions.Filer is empty: give the filer's host:port")
	}
	stamp := strconv.FormatInt(time.Now().UnixNano(), 36)
	m := &Mount{Dir: opt.Dir}
	if m.Dir == "" {
		m.Dir = filepath.Join(c.Dir, "mnt-"+stamp)
	}
	if opt.CacheDir == "" {
		opt.CacheDir = filepath.Join(c.Dir, "mountcache-"+stamp)
	}
	for _, d := range []string{m.Dir, opt.CacheDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
	}
	args := []string{"mount", "-filer=" + opt.Filer, "-dir=" + m.Dir, "-cacheDir=" + opt.CacheDir,
		"-localSocket=" + filepath.Join(opt.CacheDir, "mount.sock")}
	if opt.ChunkSizeLimitMB > 0 {
		args = append(args, "-chunkSizeLimitMB="+strconv.Itoa(opt.ChunkSizeLimitMB))
	}
	switch {
	case opt.ChunkCacheMB < 0:
		args = append(args, "-cacheCapacityMB=0")
	case opt.ChunkCacheMB > 0:
		args = append(args, "-cacheCapacityMB="+strconv.FormatInt(opt.ChunkCacheMB, 10))
	}
	args = append(args, opt.Args...)
	var err error
	if m.Proc, err = c.spawn(opt.weed(c), spawnOpts{logName: "weed-mount-" + stamp + ".log", env: opt.env()}, args...); err != nil {
		return nil, err
	}
	m.Proc.stop = func() { unmount(m.Dir) }
	deadline := time.Now().Add(60 * time.Second)
	for !isFuseMount(m.Dir) {
		if m.Exited() || time.Now().After(deadline) || ctx.Err() != nil {
			m.Stop()
			return nil, fmt.Errorf("weedcluster: %s did not become a FUSE mount (log %s)", m.Dir, m.LogPath)
		}
		time.Sleep(100 * time.Millisecond)
	}
	return m, nil
}

// isFuseMount reports whether dir is a FUSE mount point (from /proc/self/mountinfo).
func isFuseMount(dir string) bool {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return false
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		// ID parent major:minor root mountpoint options ... - fstype source superopts
		fields := strings.Fields(s.Text())
		if len(fields) < 5 || fields[4] != dir {
			continue
		}
		for i, x := range fields {
			if x == "-" && i+1 < len(fields) && strings.HasPrefix(fields[i+1], "fuse") {
				return true
			}
		}
	}
	return false
}

// unmount detaches a FUSE mount (lazily: a reader still inside does not keep it).
func unmount(dir string) {
	if !isFuseMount(dir) {
		return
	}
	for _, cmd := range [][]string{{"fusermount3", "-u", "-z", dir}, {"fusermount", "-u", "-z", dir}, {"umount", "-l", dir}} {
		if exec.Command(cmd[0], cmd[1:]...).Run() == nil {
			return
		}
	}
}

// S3Options tune StartS3.
type S3Options struct {
	ReaderOptions
	// Filer is the filer's host:port (required).
	Filer string
}

// S3 is a running `weed s3` gateway (no identities configured: anonymous requests may do
// anything).
type S3 struct {
	Addr string // host:port of its HTTP API
	*Proc
}

// StartS3 runs `weed s3` against a filer and returns once it answers.
func (c *Cluster) StartS3(ctx context.Context, opt S3Options) (*S3, error) {
	if opt.Filer == "" {
		return nil, errors.New("weedcluster: S3Options.Filer is empty: give the filer's host:port")
	}
	port, err := freePortPair()
	if err != nil {
		return nil, err
	}
	s := &S3{Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port))}
	args := append([]string{"s3", "-ip.bind=127.0.0.1", "-port=" + strconv.Itoa(port), "-filer=" + opt.Filer}, opt.Args...)
	if s.Proc, err = c.spawn(opt.weed(c), spawnOpts{logName: "weed-s3-" + strconv.Itoa(port) + ".log", env: opt.env()}, args...); err != nil {
		return nil, err
	}
	if err := c.waitHTTP(ctx, s.Proc, "http://"+s.Addr+"/"); err != nil {
		s.Stop()
		return nil, err
	}
	return s, nil
}

// waitHTTP waits until url answers at all (any status) while p runs.
func (c *Cluster) waitHTTP(ctx context.Context, p *Proc, url string) error {
	deadline := time.Now().Add(90 * time.Second)
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := c.http.Do(req)
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			return nil
		}
		if p.Exited() || time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("weedcluster: weed %s does not answer at %s (log %s): %w", p.Name, url, p.LogPath, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// GETs returns how many GET requests the volume server has answered (its
// SeaweedFS_volumeServer_request_total{type="GET"} metric, all status codes).
func (v *VolumeServer) GETs(ctx context.Context) (uint64, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+v.MetricsAddr+"/metrics", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var n uint64
	s := bufio.NewScanner(resp.Body)
	s.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for s.Scan() {
		line := s.Text()
		if !strings.HasPrefix(line, "SeaweedFS_volumeServer_request_total{") || !strings.Contains(line, `type="GET"`) {
			continue
		}
		f := strings.Fields(line)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err != nil {
			return 0, fmt.Errorf("weedcluster: metrics line %q: %w", line, err)
		}
		n += uint64(v)
	}
	return n, s.Err()
}
