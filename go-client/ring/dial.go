package ring

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"sync/atomic"
	"time"

	"github.com/seaweed-ring/seaweed-ring/go-client/internal/wire"
	"golang.org/x/sys/unix"
)

var wakeValue = [1]byte{1}

// Dial connects to the engine's control socket (DefaultSocketPath when path is empty),
// opens a session, maps its region and validates the header. Errors: ErrEngineUnavailable
// when nothing listens on path, ErrVersionMismatch, ErrRegionMalformed, a *ControlError when
// the engine refuses the session, or ctx.Err().
func Dial(ctx context.Context, path string, opts ...Option) (*Client, error) {
	if path == "" {
		path = DefaultSocketPath()
	}
	cfg := defaultConfig()
	for _, o := range opts {
		o(&cfg)
	}
	var d net.Dialer
	nc, err := d.DialContext(ctx, "unixpacket", path)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, &sessionError{sentinel: ErrEngineUnavailable, detail: "connect " + path, cause: err}
	}
	conn := nc.(*net.UnixConn)
	c, err := handshake(ctx, conn, cfg)
	if err != nil {
		conn.Close()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, err
	}
	c.path, c.opts = path, opts
	return c, nil
}

func handshake(ctx context.Context, conn *net.UnixConn, cfg config) (*Client, error) {
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	hello := wire.Message{Kind: wire.KindHello, LayoutVersion: wire.LayoutVersion, SQEntries: cfg.sqEntries, CQEntries: cfg.cqEntries, BufSize: cfg.bufSize}
	if _, err := conn.Write(hello.Encode(nil)); err != nil {
		return nil, &sessionError{sentinel: ErrEngineUnavailable, detail: "send hello", cause: err}
	}
	buf := make([]byte, wire.MaxMessage)
	oob := make([]byte, unix.CmsgSpace(wire.WelcomeFDs*4))
	n, oobn, flags, _, err := conn.ReadMsgUnix(buf, oob)
	fds, ferr := parseRights(oob[:oobn])
	closeFDs := func() {
		for _, fd := range fds {
			unix.Close(fd)
		}
	}
	if err != nil || n == 0 {
		closeFDs()
		if err == nil {
			err = errors.New("connection closed before welcome")
		}
		return nil, &sessionError{sentinel: ErrEngineUnavailable, detail: "read welcome", cause: err}
	}
	m, err := wire.DecodeMessage(buf[:n])
	if err != nil {
		closeFDs()
		return nil, err
	}
	switch {
	case m.Kind == wire.KindError:
		closeFDs()
		return nil, &ControlError{Code: ControlErrorCode(m.Code), Message: m.Text}
	case m.Kind != wire.KindWelcome:
		closeFDs()
		return nil, fmt.Errorf("%w: expected welcome, got control message kind %d", ErrProtocol, m.Kind)
	case flags&(unix.MSG_TRUNC|unix.MSG_CTRUNC) != 0 || ferr != nil || len(fds) != wire.WelcomeFDs:
		closeFDs()
		return nil, fmt.Errorf("%w: welcome carried %d file descriptors (flags %#x, %v), want %d", ErrProtocol, len(fds), flags, ferr, wire.WelcomeFDs)
	}
	conn.SetDeadline(time.Time{})
	c, err := newClient(conn, cfg, m, fds[0], fds[1], fds[2])
	if err != nil {
		unix.Close(fds[1])
		unix.Close(fds[2])
		return nil, err
	}
	return c, nil
}

// parseRights extracts the file descriptors of every SCM_RIGHTS message in oob.
func parseRights(oob []byte) ([]int, error) {
	if len(oob) == 0 {
		return nil, nil
	}
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil, err
	}
	var fds []int
	for i := range msgs {
		f, err := unix.ParseUnixRights(&msgs[i])
		if err != nil {
			continue
		}
		fds = append(fds, f...)
	}
	return fds, nil
}

// newClient maps the region (closing regionFD) and sets up the session's goroutines.
func newClient(conn *net.UnixConn, cfg config, w wire.Message, regionFD, workerFD, sessFD int) (*Client, error) {
	size := w.RegionSize
	var st unix.Stat_t
	err := unix.Fstat(regionFD, &st)
	if err == nil && (size < wire.HeaderSize || uint64(st.Size) < size || size > 1<<41) {
		err = fmt.Errorf("%w: welcome region_size %d, region fd holds %d bytes", ErrRegionMalformed, size, st.Size)
	}
	var mem []byte
	if err == nil {
		mem, err = unix.Mmap(regionFD, 0, int(size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	}
	unix.Close(regionFD)
	if err != nil {
		if !errors.Is(err, ErrRegionMalformed) {
			err = fmt.Errorf("%w: map region: %w", ErrRegionMalformed, err)
		}
		return nil, err
	}
	reg := wire.NewRegion(mem)
	layout, err := wire.ValidateHeader(reg, size)
	if err == nil {
		if sid := atomic.LoadUint32(reg.U32(wire.OffSessionID)); sid != w.SessionID {
			err = fmt.Errorf("%w: header session_id %d, welcome said %d", ErrRegionMalformed, sid, w.SessionID)
		}
	}
	if err != nil {
		unix.Munmap(mem)
		return nil, err
	}

	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err == nil {
		err = unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, sessFD, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(sessFD)})
		if err == nil {
			// Our own epoll fd; non-blocking makes it pollable by the Go netpoller.
			err = unix.SetNonblock(epfd, true)
		}
		if err != nil {
			unix.Close(epfd)
		}
	}
	if err != nil {
		unix.Munmap(mem)
		return nil, fmt.Errorf("swring: epoll setup: %w", err)
	}
	epFile := os.NewFile(uintptr(epfd), "swring-session-epoll")
	raw, err := epFile.SyscallConn()
	if err != nil {
		epFile.Close()
		unix.Munmap(mem)
		return nil, fmt.Errorf("swring: epoll setup: %w", err)
	}

	nslots := cfg.maxInFlight
	if nslots <= 0 {
		nslots = max(1024, 2*int(layout.SQEntries+layout.CQEntries))
	}
	nslots = min(nslots, 1<<24)
	c := &Client{
		cfg:         cfg,
		conn:        conn,
		mem:         mem,
		reg:         reg,
		layout:      layout,
		sessionID:   w.SessionID,
		worker:      w.Worker,
		leaseMs:     atomic.LoadUint32(reg.U32(wire.OffLeaseMs)),
		workerFD:    workerFD,
		sessFD:      sessFD,
		epFile:      epFile,
		epRaw:       raw,
		sq:          wire.Producer{Ring: wire.NewRing("sq", reg, layout.SQCtlOffset, layout.SQArrayOffset, layout.SQEntries, wire.SQEWords)},
		cq:          wire.Consumer{Ring: wire.NewRing("cq", reg, layout.CQCtlOffset, layout.CQArrayOffset, layout.CQEntries, wire.CQEWords)},
		slotFreed:   make(chan struct{}, 1),
		reapTok:     make(chan struct{}, 1),
		downCh:      make(chan struct{}),
		closedMsg:   make(chan struct{}),
		pong:        make(chan struct{}, 1),
		peerReply:   make(chan peerReply, 1),
		watcherDone: make(chan struct{}),
		hbDone:      make(chan struct{}),
		reaperDone:  make(chan struct{}),
	}
	c.epollFn = c.epollReady
	c.bufs = newBufferPool(reg.Bytes(layout.BufOffset, layout.BufSize), cfg.blockSize)
	c.initSlots(nslots)
	go c.watch()
	go c.heartbeat()
	go c.reaper()
	return c, nil
}
