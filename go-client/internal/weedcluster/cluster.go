// Package weedcluster runs a real SeaweedFS master and volume server (the `weed` binary) on
// loopback, for the end-to-end tests, the demo and the benchmark: they write needles through
// SeaweedFS's own HTTP API, then read the volume files the engine serves.
package weedcluster

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"mime/multipart"
	"net"
	"net/http"
	"net/textproto"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// ErrNoWeed: no `weed` binary was found (see FindWeed).
var ErrNoWeed = errors.New("weedcluster: no weed binary")

// FindWeed returns the `weed` binary to use: $SWRING_WEED, else the newest one scripts/weed
// built into its cache (${SWRING_CACHE:-${XDG_CACHE_HOME:-~/.cache}/seaweed-ring}/weed-*/weed).
func FindWeed() (string, error) { return findWeed("SWRING_WEED", "weed", "run scripts/weed") }

// findWeed is $env, else the newest cached weed-*/name.
func findWeed(env, name, how string) (string, error) {
	if p := os.Getenv(env); p != "" {
		if st, err := os.Stat(p); err != nil || st.IsDir() {
			return "", fmt.Errorf("weedcluster: %s=%s is not a file: %w", env, p, ErrNoWeed)
		}
		return p, nil
	}
	cache := os.Getenv("SWRING_CACHE")
	if cache == "" {
		base := os.Getenv("XDG_CACHE_HOME")
		if base == "" {
			home, err := os.UserHomeDir()
			if err != nil {
				return "", ErrNoWeed
			}
			base = filepath.Join(home, ".cache")
		}
		cache = filepath.Join(base, "seaweed-ring")
	}
	found, _ := filepath.Glob(filepath.Join(cache, "weed-*", name))
	if len(found) == 0 {
		return "", fmt.Errorf("weedcluster: no %s in %s (set %s or %s): %w", name, cache, env, how, ErrNoWeed)
	}
	return found[len(found)-1], nil
}

// Cluster is one master and its volume servers, each a child process, with their data under
// Dir; filers, mounts and S3 gateways started on it (roles.go) stop with it.
type Cluster struct {
	Master    string // host:port of the master's HTTP API
	Volume    string // host:port of the first volume server's HTTP API
	VolumeDir string // the first volume server's -dir: the engine serves this directory
	// Volumes are all volume servers (Volumes[0] is Volume).
	Volumes []*VolumeServer
	Dir     string
	// Weed is the binary Start ran; roles started without a binary of their own run it too.
	Weed  string
	http  *http.Client
	procs []*Proc
}

// VolumeServer is one `weed volume` of a Cluster.
type VolumeServer struct {
	Addr        string // host:port of its HTTP API
	Dir         string // its -dir
	MetricsAddr string // host:port of its Prometheus metrics (-metricsPort)
	*Proc
}

// Options tune Start. The zero value is a small single-node cluster.
type Options struct {
	// VolumeSizeLimitMB is the master's -volumeSizeLimitMB (default 64).
	VolumeSizeLimitMB int
	// VolumeServers is how many volume servers to run (default 1), each with a
	// directory of its own (Dir/volume, Dir/volume2, ...).
	VolumeServers int
	// VolumeEnv is added to the volume servers' environment.
	VolumeEnv []string
	// Log receives every process's output (default: files weed-master.log,
	// weed-volume.log, ... under Dir).
	Log io.Writer
	// ConfigDir is weed's -config_dir for both processes: where they look first for
	// security.toml (e.g. a [jwt.signing.read] key). "": weed's default search path.
	ConfigDir string
}

// Start runs `weed master` and `weed volume` on free loopback ports with their data under
// dir, and returns once the master assigns file ids to the volume server.
func Start(ctx context.Context, weed, dir string, opt Options) (*Cluster, error) {
	if opt.VolumeSizeLimitMB == 0 {
		opt.VolumeSizeLimitMB = 64
	}
	if opt.VolumeServers <= 0 {
		opt.VolumeServers = 1
	}
	c := &Cluster{Dir: dir, Weed: weed, http: &http.Client{Timeout: 30 * time.Second}}
	mdir := filepath.Join(dir, "master")
	if err := os.MkdirAll(mdir, 0o755); err != nil {
		return nil, err
	}
	mport, err := freePortPair()
	if err != nil {
		return nil, err
	}
	c.Master = net.JoinHostPort("127.0.0.1", strconv.Itoa(mport))
	var global []string // weed's own flags, before the command
	if opt.ConfigDir != "" {
		global = append(global, "-config_dir="+opt.ConfigDir)
	}
	if _, err := c.spawn(weed, spawnOpts{log: opt.Log, logName: "weed-master.log", global: global}, "master", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
		"-port="+strconv.Itoa(mport), "-mdir="+mdir, "-peers=none", "-telemetry=false",
		"-volumeSizeLimitMB="+strconv.Itoa(opt.VolumeSizeLimitMB)); err != nil {
		return nil, err
	}
	for i := range opt.VolumeServers {
		name := "volume"
		if i > 0 {
			name += strconv.Itoa(i + 1)
		}
		vs := &VolumeServer{Dir: filepath.Join(dir, name)}
		if err := os.MkdirAll(vs.Dir, 0o755); err != nil {
			c.Stop()
			return nil, err
		}
		vport, err := freePortPair()
		if err == nil {
			var mp int
			if mp, err = freePort(); err == nil {
				vs.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(vport))
				vs.MetricsAddr = net.JoinHostPort("127.0.0.1", strconv.Itoa(mp))
				vs.Proc, err = c.spawn(weed, spawnOpts{log: opt.Log, logName: "weed-" + name + ".log", env: opt.VolumeEnv, global: global}, "volume",
					"-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-port="+strconv.Itoa(vport), "-dir="+vs.Dir, "-max=8",
					"-master="+c.Master, "-preStopSeconds=0", "-metricsPort="+strconv.Itoa(mp))
			}
		}
		if err != nil {
			c.Stop()
			return nil, err
		}
		c.Volumes = append(c.Volumes, vs)
	}
	c.Volume, c.VolumeDir = c.Volumes[0].Addr, c.Volumes[0].Dir
	// Ready when an assignment succeeds: the master is up and knows a volume server.
	deadline := time.Now().Add(90 * time.Second)
	for {
		if _, _, err := c.Assign(ctx); err == nil {
			return c, nil
		} else if time.Now().After(deadline) || ctx.Err() != nil {
			c.Stop()
			return nil, fmt.Errorf("weedcluster: not ready after 90s (logs in %s): %w", dir, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// spawnOpts say how a child runs: where its output goes, its extra environment and its
// working directory ("" = Dir).
type spawnOpts struct {
	log     io.Writer
	logName string
	env     []string
	workDir string
	global  []string // weed's own flags, before the command (e.g. -config_dir)
}

func (c *Cluster) spawn(weed string, o spawnOpts, args ...string) (*Proc, error) {
	cmd := exec.Command(weed, append(append([]string(nil), o.global...), args...)...)
	log := o.log
	if log == nil {
		f, err := os.Create(filepath.Join(c.Dir, o.logName))
		if err != nil {
			return nil, err
		}
		defer f.Close() // the child keeps its own descriptor
		log = f
	}
	cmd.Stdout, cmd.Stderr = log, log
	cmd.Dir = o.workDir
	if cmd.Dir == "" {
		cmd.Dir = c.Dir
	}
	if len(o.env) > 0 {
		cmd.Env = append(os.Environ(), o.env...)
	}
	// Own process group: Stop kills the server and anything it started.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("weedcluster: start weed %s: %w", args[0], err)
	}
	p := &Proc{Name: args[0], LogPath: filepath.Join(c.Dir, o.logName), cmd: cmd, done: make(chan struct{})}
	go func() { p.err = cmd.Wait(); close(p.done) }()
	c.procs = append(c.procs, p)
	return p, nil
}

// Stop ends every process (SIGTERM, then SIGKILL after 10 s; the last started first) and
// waits for them.
func (c *Cluster) Stop() {
	for i := len(c.procs) - 1; i >= 0; i-- {
		c.procs[i].Stop()
	}
	c.procs = nil
}

// Proc is one weed child process.
type Proc struct {
	Name    string // the weed command: master, volume, filer, mount, s3
	LogPath string // its output (when Options.Log was not set)
	cmd     *exec.Cmd
	done    chan struct{}
	err     error
	stop    func() // run before the process is signalled (a mount unmounts)
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

// Stop ends the process (SIGTERM, then SIGKILL after 10 s) and waits for it. Calling it
// again does nothing.
func (p *Proc) Stop() {
	if p.stop != nil {
		p.stop()
		p.stop = nil
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

// freePort finds a free loopback port.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// freePortPair finds a loopback port p with p+10000 also free (weed's gRPC port).
func freePortPair() (int, error) {
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
	return 0, errors.New("weedcluster: no free port pair found")
}

// Assign asks the master for a new file id; returns it and the volume server's address.
func (c *Cluster) Assign(ctx context.Context) (fid, url string, err error) {
	return c.assignQuery(ctx, "")
}

// AssignCount asks the master for n consecutive file ids in one volume: fid itself and
// fid_1 .. fid_(n-1) (SeaweedFS's count parameter); writes to them land one after the other
// in that volume's .dat when made in that order.
func (c *Cluster) AssignCount(ctx context.Context, n int) (fid, url string, err error) {
	return c.assignQuery(ctx, "count="+strconv.Itoa(n))
}

// assignQuery is /dir/assign with query parameters (ttl=..., collection=...).
func (c *Cluster) assignQuery(ctx context.Context, query string) (fid, addr string, err error) {
	url := "http://" + c.Master + "/dir/assign"
	if query != "" {
		url += "?" + query
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := c.http.Do(req)
	if err != nil {
		return "", "", err
	}
	defer resp.Body.Close()
	var a struct {
		Fid   string `json:"fid"`
		URL   string `json:"url"`
		Error string `json:"error"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&a); err != nil {
		return "", "", fmt.Errorf("weedcluster: %s: %w", url, err)
	}
	if a.Error != "" || a.Fid == "" {
		return "", "", fmt.Errorf("weedcluster: %s: %q", url, a.Error)
	}
	return a.Fid, a.URL, nil
}

// ReadJWT asks the master for a read token for fid, as SeaweedFS clients do before a GET
// when the cluster has a [jwt.signing.read] key (GET /dir/lookup?fileId=&read=yes answers
// it in the Authorization header). "" when the master signs no read tokens.
func (c *Cluster) ReadJWT(ctx context.Context, fid string) (string, error) {
	u := "http://" + c.Master + "/dir/lookup?read=yes&fileId=" + url.QueryEscape(fid)
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	resp, err := c.http.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("weedcluster: lookup %s: %s", fid, resp.Status)
	}
	auth := resp.Header.Get("Authorization")
	if len(auth) > 7 && strings.EqualFold(auth[:7], "Bearer ") {
		return auth[7:], nil
	}
	return "", nil
}

// Upload stores data as a new file (multipart form, as `weed upload` and filers do) and
// returns its file id. The volume server may gzip compressible content (text mime types).
func (c *Cluster) Upload(ctx context.Context, name, mime string, data []byte) (string, error) {
	fid, url, err := c.Assign(ctx)
	if err != nil {
		return "", err
	}
	return fid, c.Put(ctx, url, fid, name, mime, data)
}

// Put writes data under an existing file id (a new upload or an overwrite).
func (c *Cluster) Put(ctx context.Context, url, fid, name, mime string, data []byte) error {
	var body bytes.Buffer
	w := multipart.NewWriter(&body)
	h := textproto.MIMEHeader{}
	h.Set("Content-Disposition", fmt.Sprintf(`form-data; name="file"; filename=%q`, name))
	if mime != "" {
		h.Set("Content-Type", mime)
	}
	part, _ := w.CreatePart(h)
	part.Write(data)
	w.Close()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+url+"/"+fid, &body)
	req.Header.Set("Content-Type", w.FormDataContentType())
	resp, err := c.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusCreated {
		return fmt.Errorf("weedcluster: upload %s: %s: %s", fid, resp.Status, strings.TrimSpace(string(msg)))
	}
	return nil
}

// Delete deletes a file.
func (c *Cluster) Delete(ctx context.Context, fid string) error {
	req, _ := http.NewRequestWithContext(ctx, http.MethodDelete, "http://"+c.Volume+"/"+fid, nil)
	resp, err := c.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != http.StatusAccepted {
		return fmt.Errorf("weedcluster: delete %s: %s", fid, resp.Status)
	}
	return nil
}

// Get reads a file (fid, or fid?query) with a plain Go HTTP GET (which asks for gzip and decompresses), as a
// SeaweedFS client would: the bytes every other path must match.
func (c *Cluster) Get(ctx context.Context, fid string) ([]byte, int, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+c.Volume+"/"+fid, nil)
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return b, resp.StatusCode, err
}
