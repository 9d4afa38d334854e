package needle

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/netip"
	"net/url"
	"strings"
	"time"

	"github.com/seaweed-ring/seaweed-ring/go-client/ring"
)

// session returns the engine session, dialing it when there is none or it ended.
func (r *Reader) session(ctx context.Context) (*ring.Client, error) {
	r.mu.Lock()
	c, dialErr, dialAt, closed := r.c, r.dialErr, r.dialAt, r.closed
	r.mu.Unlock()
	switch {
	case closed:
		return nil, ring.ErrClosed
	case c != nil && c.Err() == nil:
		return c, nil
	case c != nil:
		r.dropSession(c, c.Err())
	case dialErr != nil && r.opts.RedialInterval > 0 && time.Since(dialAt) < r.opts.RedialInterval:
		return nil, dialErr
	}
	r.dialMu.Lock()
	defer r.dialMu.Unlock()
	r.mu.Lock()
	if c := r.c; c != nil && c.Err() == nil { // another caller dialed meanwhile
		r.mu.Unlock()
		return c, nil
	}
	r.mu.Unlock()
	c, err := r.dial(ctx)
	if err != nil && ctx.Err() != nil {
		return nil, err // not the engine's fault: no back-off
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		if c != nil {
			go c.Close()
		}
		return nil, ring.ErrClosed
	}
	r.c, r.dialErr, r.dialAt = c, err, time.Now()
	r.peers = map[string]ring.Peer{} // handles of the old engine mean nothing to a new one
	if err != nil {
		r.nDialFail.Add(1)
		r.logLocked(slog.LevelWarn, "swring: needle reader: engine unavailable, reading over HTTP", "socket", r.socketPath(), "err", err)
		return nil, err
	}
	r.nDials.Add(1)
	r.logLocked(slog.LevelInfo, "swring: needle reader: engine session open", "session", c.SessionID(), "socket", r.socketPath())
	return c, nil
}

func (r *Reader) socketPath() string {
	if r.opts.EngineSocket != "" {
		return r.opts.EngineSocket
	}
	return ring.DefaultSocketPath()
}

// logLocked logs a record unless it repeats the previous one. Caller holds mu.
func (r *Reader) logLocked(level slog.Level, msg string, args ...any) {
	if key := fmt.Sprint(level, msg, args); key != r.lastLogged {
		r.lastLogged = key
		r.log.Log(context.Background(), level, msg, args...)
	}
}

func (r *Reader) dial(ctx context.Context) (*ring.Client, error) {
	path := r.socketPath()
	if r.opts.DialOptions != nil {
		return ring.Dial(ctx, path, r.opts.DialOptions...)
	}
	c, err := ring.Dial(ctx, path, ring.WithBufferSize(DefaultBufferBytes))
	var ce *ring.ControlError
	if errors.As(err, &ce) && (ce.Code == ring.CtlBadRequest || ce.Code == ring.CtlRegionUnavailable) {
		return ring.Dial(ctx, path) // the engine's maximum is smaller: take its default
	}
	return c, err
}

// dropSession forgets c (if it is still the current session) and closes it: the next read
// dials again. Requests still in flight on c fail and take the HTTP path.
func (r *Reader) dropSession(c *ring.Client, why error) {
	r.mu.Lock()
	if r.c != c || c == nil {
		r.mu.Unlock()
		return
	}
	r.c, r.dialErr = nil, nil
	r.peers = map[string]ring.Peer{}
	r.logLocked(slog.LevelWarn, "swring: needle reader: engine session lost", "session", c.SessionID(), "err", why)
	r.mu.Unlock()
	go c.Close()
}

// peer returns the handle of volumeServer's engine in session c, connecting it once.
func (r *Reader) peer(ctx context.Context, c *ring.Client, volumeServer string) (p ring.Peer, vs, addr string, err error) {
	vs, err = volumeServerHostPort(volumeServer)
	if err != nil {
		return 0, "", "", err
	}
	if addr, err = r.engineAddr(ctx, volumeServer, vs); err != nil {
		return 0, vs, "", err
	}
	r.mu.Lock()
	p, ok := r.peers[addr]
	r.mu.Unlock()
	if ok {
		return p, vs, addr, nil
	}
	if p, err = c.ConnectPeer(ctx, addr); err != nil {
		if errors.Is(err, ring.ErrEngineUnavailable) || errors.Is(err, ring.ErrClosed) {
			r.dropSession(c, err)
		} else {
			r.mu.Lock()
			delete(r.addrs, vs)
			r.mu.Unlock()
		}
		return 0, vs, addr, err
	}
	r.nPeers.Add(1)
	r.mu.Lock()
	if r.c == c {
		r.peers[addr] = p
	}
	r.mu.Unlock()
	return p, vs, addr, nil
}

// engineAddr maps a volume server to its engine's UCX address: ResolveEngine, else
// EngineAddrs, else the convention (cached until a peer failure).
func (r *Reader) engineAddr(ctx context.Context, volumeServer, hostPort string) (string, error) {
	if r.opts.ResolveEngine != nil {
		return r.opts.ResolveEngine(ctx, volumeServer)
	}
	if a, ok := r.engineAddrs[hostPort]; ok {
		return a, nil
	}
	r.mu.Lock()
	a, ok := r.addrs[hostPort]
	r.mu.Unlock()
	if ok {
		return a, nil
	}
	a, err := ResolveEngineAddr(ctx, hostPort, r.opts.EnginePort)
	if err != nil {
		return "", err
	}
	r.mu.Lock()
	r.addrs[hostPort] = a
	r.mu.Unlock()
	return a, nil
}

// ResolveEngineAddr is the convention for finding a volume server's engine: the UCX
// address port (0 = DefaultEnginePort) on the volume server's host, the host resolved to an
// IP address (IPv4 preferred) since engines take ip:port. volumeServer is "host:port",
// "host" or a URL.
func ResolveEngineAddr(ctx context.Context, volumeServer string, port int) (string, error) {
	hp, err := volumeServerHostPort(volumeServer)
	if err != nil {
		return "", err
	}
	host := hp
	if h, _, err := net.SplitHostPort(hp); err == nil {
		host = h
	}
	if port == 0 {
		port = DefaultEnginePort
	}
	if port < 0 || port > math.MaxUint16 {
		return "", fmt.Errorf("swring: engine port %d out of range", port)
	}
	ip, err := netip.ParseAddr(strings.Trim(host, "[]"))
	if err != nil {
		ips, lerr := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
		if lerr != nil {
			return "", fmt.Errorf("swring: resolve the engine of volume server %q: %w", volumeServer, lerr)
		}
		if len(ips) == 0 {
			return "", fmt.Errorf("swring: resolve the engine of volume server %q: no address", volumeServer)
		}
		ip = ips[0]
		for _, a := range ips {
			if a.Unmap().Is4() {
				ip = a
				break
			}
		}
	}
	return netip.AddrPortFrom(ip.Unmap().WithZone(ip.Zone()), uint16(port)).String(), nil
}

// volumeServerHostPort reduces a volume server location ("host:port", "host", a URL) to
// its host[:port].
func volumeServerHostPort(s string) (string, error) {
	if strings.Contains(s, "://") {
		u, err := url.Parse(s)
		if err != nil || u.Host == "" {
			return "", fmt.Errorf("swring: volume server %q is not host:port or a URL", s)
		}
		return u.Host, nil
	}
	if i := strings.IndexByte(s, '/'); i >= 0 {
		s = s[:i]
	}
	if s == "" {
		return "", errors.New("swring: empty volume server address")
	}
	return s, nil
}

// volumeServerURL is the base URL of a volume server location (http:// unless it names a
// scheme).
func volumeServerURL(s string) (string, error) {
	if strings.Contains(s, "://") {
		u, err := url.Parse(s)
		if err != nil || u.Host == "" {
			return "", fmt.Errorf("swring: volume server %q is not host:port or a URL", s)
		}
		return u.Scheme + "://" + u.Host, nil
	}
	hp, err := volumeServerHostPort(s)
	if err != nil {
		return "", err
	}
	return "http://" + hp, nil
}
