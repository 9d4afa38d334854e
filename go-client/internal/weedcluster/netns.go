package weedcluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/seaweed-ring/seaweed-ring/go-client/internal/netns"
)

// NetnsOptions place a cluster in a network namespace (StartNetns).
type NetnsOptions struct {
	// Netns is the namespace (`ip netns` name, e.g. scripts/netns's NAME-a) the master and
	// the volume server run in.
	Netns string
	// IP is their address there (-ip, -ip.bind), the one other namespaces reach: the
	// volume server is IP:8080 (Cluster.Volume), the master IP:9333. The namespace is the
	// cluster's own, so the ports are fixed.
	IP string
	// VolumeSizeLimitMB is the master's -volumeSizeLimitMB (default 64).
	VolumeSizeLimitMB int
	// Log receives both processes' output (default: weed-master.log, weed-volume.log in dir).
	Log io.Writer
}

// Ports of a cluster in its own namespace (gRPC: each +10000).
const (
	NetnsMasterPort  = 9333
	NetnsVolumePort  = 8080
	NetnsMetricsPort = 9327
)

// StartNetns is Start with one master and one volume server in namespace o.Netns (run as
// `ip netns exec`; needs root). The Cluster's own HTTP requests (Assign, Upload, Put, Get,
// Delete) are made from inside that namespace, so they reach it however the namespace is
// (dis)connected from this process's.
func StartNetns(ctx context.Context, weed, dir string, o NetnsOptions) (*Cluster, error) {
	if o.Netns == "" || net.ParseIP(o.IP) == nil {
		return nil, fmt.Errorf("weedcluster: StartNetns needs a namespace and an IP (got %q, %q)", o.Netns, o.IP)
	}
	if o.VolumeSizeLimitMB == 0 {
		o.VolumeSizeLimitMB = 64
	}
	if _, err := os.Stat(netns.Path(o.Netns)); err != nil {
		return nil, fmt.Errorf("weedcluster: network namespace %s: %w", o.Netns, err)
	}
	tr := &http.Transport{DialContext: netns.Dialer(o.Netns), MaxIdleConnsPerHost: 16, IdleConnTimeout: 30 * time.Second}
	c := &Cluster{Dir: dir, Weed: weed, http: &http.Client{Timeout: 30 * time.Second, Transport: tr}}
	mdir := filepath.Join(dir, "master")
	vs := &VolumeServer{Dir: filepath.Join(dir, "volume")}
	for _, d := range []string{mdir, vs.Dir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
	}
	// spawn runs its first argument: ip, with netns exec NS weed as the "global" flags.
	wrap := netns.Command(o.Netns, weed)
	c.Master = net.JoinHostPort(o.IP, strconv.Itoa(NetnsMasterPort))
	if _, err := c.spawn(wrap[0], spawnOpts{log: o.Log, logName: "weed-master.log", global: wrap[1:]}, "master",
		"-ip="+o.IP, "-ip.bind="+o.IP, "-port="+strconv.Itoa(NetnsMasterPort), "-mdir="+mdir, "-peers=none",
		"-telemetry=false", "-volumeSizeLimitMB="+strconv.Itoa(o.VolumeSizeLimitMB)); err != nil {
		return nil, err
	}
	vs.Addr = net.JoinHostPort(o.IP, strconv.Itoa(NetnsVolumePort))
	vs.MetricsAddr = net.JoinHostPort(o.IP, strconv.Itoa(NetnsMetricsPort))
	var err error
	vs.Proc, err = c.spawn(wrap[0], spawnOpts{log: o.Log, logName: "weed-volume.log", global: wrap[1:]}, "volume",
		"-ip="+o.IP, "-ip.bind="+o.IP, "-port="+strconv.Itoa(NetnsVolumePort), "-dir="+vs.Dir, "-max=8",
		"-master="+c.Master, "-preStopSeconds=0", "-metricsPort="+strconv.Itoa(NetnsMetricsPort))
	if err != nil {
		c.Stop()
		return nil, err
	}
	c.Volumes = []*VolumeServer{vs}
	c.Volume, c.VolumeDir = vs.Addr, vs.Dir
	deadline := time.Now().Add(90 * time.Second)
	for {
		_, _, err := c.Assign(ctx)
		if err == nil {
			return c, nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			c.Stop()
			return nil, fmt.Errorf("weedcluster: not ready in %s after 90s (logs in %s): %w", o.Netns, dir, errors.Join(err, ctx.Err()))
		}
		time.Sleep(200 * time.Millisecond)
	}
}
