package weedcluster

import (
	"bytes"
	"context"
	"fmt"
	"net/url"
	"os/exec"
	"strings"
	"syscall"
)

// Shell runs `weed shell -master=<master>` with commands on its standard input (one a line;
// weed runs them in order and exits at the end of the input) and returns what it printed.
// Commands that change the cluster (volume.vacuum, ...) need "lock" before them.
func (c *Cluster) Shell(ctx context.Context, commands ...string) (string, error) {
	cmd := exec.CommandContext(ctx, c.Weed, "shell", "-master="+c.Master)
	cmd.Dir = c.Dir
	cmd.Stdin = strings.NewReader(strings.Join(commands, "\n") + "\n")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("weedcluster: weed shell %q: %w: %s", commands, err, out.String())
	}
	return out.String(), nil
}

// AssignTTL asks the master for a new file id in a volume with the time to live ttl (e.g.
// "1h"; the master grows a volume of that TTL when it has none).
func (c *Cluster) AssignTTL(ctx context.Context, ttl string) (fid, url string, err error) {
	return c.assignQuery(ctx, "ttl="+urlQueryEscape(ttl))
}

// PutQuery is Put with a query string on the upload (e.g. "ttl=1h").
func (c *Cluster) PutQuery(ctx context.Context, addr, fid, query, name, mime string, data []byte) error {
	return c.Put(ctx, addr, fid+"?"+query, name, mime, data)
}

// GetQuery is Get of /<fid>?<query> from the first volume server, the body undecoded
// except for net/http's transparent gzip.
func (c *Cluster) GetQuery(ctx context.Context, fid, query string) ([]byte, int, error) {
	return c.Get(ctx, fid+"?"+query)
}

func urlQueryEscape(s string) string { return url.QueryEscape(s) }

// FindWeed5Bytes returns the weed built with -tags 5BytesOffset (17-byte .idx entries):
// $SWRING_WEED_5BYTES, else the newest one `scripts/weed --5bytes` built into its cache
// (.../weed-*/weed-5bytes).
func FindWeed5Bytes() (string, error) {
	return findWeed("SWRING_WEED_5BYTES", "weed-5bytes", "run scripts/weed --5bytes")
}
