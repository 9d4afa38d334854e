package swring

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// DefaultSocketPath is the engine's default control socket:
// $XDG_RUNTIME_DIR/seaweed-ring/engine.sock, or /tmp/seaweed-ring-<uid>/engine.sock when
// XDG_RUNTIME_DIR is not set.
func DefaultSocketPath() string {
	if d := os.Getenv("XDG_RUNTIME_DIR"); d != "" {
		return filepath.Join(d, "seaweed-ring", "engine.sock")
	}
	return filepath.Join(os.TempDir(), "seaweed-ring-"+strconv.Itoa(os.Getuid()), "engine.sock")
}

// Option configures Dial.
type Option func(*config)

type config struct {
	sqEntries, cqEntries uint32
	bufSize              uint64
	spin                 time.Duration
	blockSize            uint64
	closeTimeout         time.Duration
	maxInFlight          int
}

func defaultConfig() config {
	return config{spin: 50 * time.Microsecond, blockSize: BufAlign, closeTimeout: 5 * time.Second}
}

// WithRingSizes asks for SQ and CQ sizes (powers of two, 2..32768; 0 = engine default).
func WithRingSizes(sq, cq uint32) Option {
	return func(c *config) { c.sqEntries, c.cqEntries = sq, cq }
}

// WithBufferSize asks for a buffer area of n bytes (a multiple of 4096; 0 = engine default).
func WithBufferSize(n uint64) Option { return func(c *config) { c.bufSize = n } }

// WithSpin sets how long a waiting goroutine polls the completion queue before it sleeps on
// the CQ doorbell (default 50µs). Zero sleeps at once; longer spins trade CPU for
// latency.
func WithSpin(d time.Duration) Option { return func(c *config) { c.spin = d } }

// WithBufferBlockSize sets the buffer allocator's granularity (a power of two; default
// 4096). Buffers are aligned to it.
func WithBufferBlockSize(n uint64) Option { return func(c *config) { c.blockSize = n } }

// WithMaxInFlight sets how many requests may be outstanding at once, counting from Submit
// until Wait returns (default: the larger of 1024 and twice the SQ+CQ size). Submit blocks
// while that many are outstanding. The engine itself holds at most SQ+CQ of them; the rest
// are completed requests whose tickets have not been waited for yet.
func WithMaxInFlight(n int) Option { return func(c *config) { c.maxInFlight = n } }

// WithCloseTimeout bounds how long Close waits for the engine to finish accepted requests
// (default 5s).
func WithCloseTimeout(d time.Duration) Option { return func(c *config) { c.closeTimeout = d } }

// Request describes one operation. The Client fills in the SQE user_data itself.
type Request struct {
	Opcode uint8
	Flags  uint8
	Peer   uint32
	// Buf, when valid, is the buffer the operation reads or writes: BufOffset is then
	// relative to Buf (and BufOffset+BufLen must fit in Buf.Len()), and Buf stays reserved
	// until the completion has been reaped, even if the caller stops waiting. Without
	// Buf, BufOffset is relative to the buffer area and nothing is reserved.
	Buf       Buffer
	BufOffset uint64
	BufLen    uint32
	Aux       uint32
	Args      [4]uint64
	// Resp, when valid, is the buffer a SEND writes its response into (or an EXPORT its
	// ticket): Args[0] (the response offset) is then relative to Resp, Args[0]+Args[1]
	// (offset + capacity; ExportTicketLen for EXPORT) must fit in Resp.Len(), and Resp stays
	// reserved like Buf. Without Resp, Args go to the engine as they are.
	Resp Buffer
}

// Ticket identifies a submitted request; Wait for it exactly once.
type Ticket struct {
	c   *Client
	idx uint32
	gen uint32
}

// UserData is the SQE user_data the request was submitted with.
func (t Ticket) UserData() uint64 { return uint64(t.gen)<<32 | uint64(t.idx) }

// slot states
const (
	slotFree       uint32 = iota
	slotPending           // submitted; its waiter is not parked
	slotParked            // its waiter sleeps on done
	slotDone              // result stored; waiting to be collected
	slotAbandoned         // the waiter gave up; the completer frees the slot
	slotCompleting        // claimed by a completer; becomes done or free shortly
)

// slot tracks one request from submission to collection. Go memory only: nothing here is
// ever stored into the shared region.
type slot struct {
	state  atomic.Uint32
	gen    atomic.Uint32
	result int32
	flags  uint32
	err    error
	buf    Buffer        // pinned buffer, released at completion
	resp   Buffer        // pinned response buffer (SEND), released at completion
	done   chan struct{} // capacity 1: signalled when a parked waiter's request completes
	_      [56]byte
}

// Stats are counters of one Client.
type Stats struct {
	Submitted uint64 // SQEs published
	Completed uint64 // CQEs reaped
	Stray     uint64 // CQEs whose user_data matched no request (engine bug)
	Sleeps    uint64 // times a waiter slept on the CQ doorbell
	Wakeups   uint64 // times the client signalled the SQ doorbell
	// SQInvalid is the engine's count of rejected entries (SQ invalid counter).
	SQInvalid uint32
	Buffers   BufferStats
}

// Client is one session with the engine. It is safe for concurrent use by many goroutines.
type Client struct {
	path string
	opts []Option
	cfg  config

	conn      *net.UnixConn
	mem       []byte
	reg       Region
	layout    Layout
	sessionID uint32
	worker    uint32
	leaseMs   uint32

	workerFD int
	sessFD   int
	epFile   *os.File
	epRaw    syscall.RawConn
	epollFn  func(fd uintptr) bool
	epEvents [4]unix.EpollEvent
	efdBuf   [64]byte

	sqMu sync.Mutex
	sq   Producer
	cqMu sync.Mutex // held by the goroutine reaping the CQ (the "leader")
	cq   Consumer

	slots     []slot
	freeSlots chan uint32
	unreaped  atomic.Int64  // SQEs published whose CQE has not been reaped
	reapTok   chan struct{} // capacity 1: asks the background reaper to lead

	bufs *bufferPool

	life     sync.RWMutex // read-held by operations touching the region; Close write-locks it
	down     atomic.Bool
	downOnce sync.Once
	downErr  error
	downCh   chan struct{}
	draining atomic.Bool
	closing  atomic.Bool

	closeOnce   sync.Once
	closeErr    error
	closedMsg   chan struct{} // engine sent Closed
	closedOnce  sync.Once
	pong        chan struct{}
	pingMu      sync.Mutex
	peerMu      sync.Mutex     // serializes ConnectPeer
	peerSeqMu   sync.Mutex     // guards peerSent, peerRecv
	peerSent    uint64         // ConnectPeer packets sent
	peerRecv    uint64         // their replies received (PeerConnected or Error)
	peerReply   chan peerReply // capacity 1: the newest reply, for the ConnectPeer caller
	watcherDone chan struct{}
	hbDone      chan struct{}
	reaperDone  chan struct{}

	nSubmitted, nCompleted, nStray, nSleeps, nWakeups atomic.Uint64
}

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
	hello := Message{Kind: KindHello, LayoutVersion: LayoutVersion, SQEntries: cfg.sqEntries, CQEntries: cfg.cqEntries, BufSize: cfg.bufSize}
	if _, err := conn.Write(hello.Encode(nil)); err != nil {
		return nil, &sessionError{sentinel: ErrEngineUnavailable, detail: "send hello", cause: err}
	}
	buf := make([]byte, MaxMessage)
	oob := make([]byte, unix.CmsgSpace(WelcomeFDs*4))
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
	m, err := DecodeMessage(buf[:n])
	if err != nil {
		closeFDs()
		return nil, err
	}
	switch {
	case m.Kind == KindError:
		closeFDs()
		return nil, &ControlError{Code: ControlErrorCode(m.Code), Message: m.Text}
	case m.Kind != KindWelcome:
		closeFDs()
		return nil, fmt.Errorf("%w: expected welcome, got control message kind %d", ErrProtocol, m.Kind)
	case flags&(unix.MSG_TRUNC|unix.MSG_CTRUNC) != 0 || ferr != nil || len(fds) != WelcomeFDs:
		closeFDs()
		return nil, fmt.Errorf("%w: welcome carried %d file descriptors (flags %#x, %v), want %d", ErrProtocol, len(fds), flags, ferr, WelcomeFDs)
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
func newClient(conn *net.UnixConn, cfg config, w Message, regionFD, workerFD, sessFD int) (*Client, error) {
	size := w.RegionSize
	var st unix.Stat_t
	err := unix.Fstat(regionFD, &st)
	if err == nil && (size < HeaderSize || uint64(st.Size) < size || size > 1<<41) {
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
	reg := NewRegion(mem)
	layout, err := ValidateHeader(reg, size)
	if err == nil {
		if sid := atomic.LoadUint32(reg.U32(OffSessionID)); sid != w.SessionID {
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
		leaseMs:     atomic.LoadUint32(reg.U32(OffLeaseMs)),
		workerFD:    workerFD,
		sessFD:      sessFD,
		epFile:      epFile,
		epRaw:       raw,
		sq:          Producer{Ring: NewRing("sq", reg, layout.SQCtlOffset, layout.SQArrayOffset, layout.SQEntries, SQEWords)},
		cq:          Consumer{Ring: NewRing("cq", reg, layout.CQCtlOffset, layout.CQArrayOffset, layout.CQEntries, CQEWords)},
		slots:       make([]slot, nslots),
		freeSlots:   make(chan uint32, nslots),
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
	for i := range c.slots {
		c.slots[i].done = make(chan struct{}, 1)
		c.freeSlots <- uint32(i)
	}
	go c.watch()
	go c.heartbeat()
	go c.reaper()
	return c, nil
}

// SessionID is the engine's id of this session.
func (c *Client) SessionID() uint32 { return c.sessionID }

// Worker is the engine worker serving this session.
func (c *Client) Worker() uint32 { return c.worker }

// Layout is the region layout of this session.
func (c *Client) Layout() Layout { return c.layout }

// MaxInFlight is how many requests may be outstanding (submitted and not yet waited for);
// see WithMaxInFlight.
func (c *Client) MaxInFlight() int { return len(c.slots) }

// Stats returns the client's counters.
func (c *Client) Stats() Stats {
	s := Stats{
		Submitted: c.nSubmitted.Load(),
		Completed: c.nCompleted.Load(),
		Stray:     c.nStray.Load(),
		Sleeps:    c.nSleeps.Load(),
		Wakeups:   c.nWakeups.Load(),
		Buffers:   c.bufs.stats(),
	}
	c.life.RLock()
	if !c.down.Load() {
		s.SQInvalid = atomic.LoadUint32(c.sq.Ctl.Invalid)
	}
	c.life.RUnlock()
	return s
}

// AllocBuffer reserves size bytes of the shared buffer area, waiting (bounded by ctx) for
// space if needed. Errors: ErrBufferTooLarge, ErrClosed, ctx.Err().
func (c *Client) AllocBuffer(ctx context.Context, size int) (Buffer, error) {
	return c.bufs.alloc(ctx, size)
}

// TryAllocBuffer is AllocBuffer without waiting: ErrNoBufferSpace when no run is free.
func (c *Client) TryAllocBuffer(size int) (Buffer, error) { return c.bufs.tryAlloc(size) }

// usable reports why no new request may be submitted, or nil. Called under sqMu.
func (c *Client) usable() error {
	if c.down.Load() {
		return c.downErr
	}
	if c.closing.Load() {
		return ErrClosed
	}
	// SYNC POINT: acquire load of state (pairs with the engine's release store).
	if st := c.reg.State(); st != StateReady {
		if st == StateDraining {
			c.draining.Store(true)
		}
		return &sessionError{sentinel: ErrEngineUnavailable, detail: "session is " + st.String()}
	}
	return nil
}

// Do submits one request and waits for its completion. It returns the non-negative result,
// or an error: a ResultError for a negative result, ErrEngineUnavailable, ErrClosed, or
// ctx.Err() (the request may still execute; its completion is reaped and discarded, and its
// buffer stays reserved until then).
func (c *Client) Do(ctx context.Context, r *Request) (int32, error) {
	t, err := c.Submit(ctx, r)
	if err != nil {
		return 0, err
	}
	return t.Wait(ctx)
}

// Nop runs one NOP round trip.
func (c *Client) Nop(ctx context.Context) error {
	_, err := c.Do(ctx, &Request{Opcode: OpNop})
	return err
}

// Fill asks the engine to write n bytes of value v into buf at off; it returns the number
// of bytes written.
func (c *Client) Fill(ctx context.Context, buf Buffer, off, n int, v byte) (int, error) {
	if off < 0 || n < 0 || uint64(n) > 1<<32-1 {
		return 0, fmt.Errorf("swring: fill range %d+%d invalid", off, n)
	}
	res, err := c.Do(ctx, &Request{Opcode: OpFill, Buf: buf, BufOffset: uint64(off), BufLen: uint32(n), Aux: uint32(v)})
	return int(res), err
}

// Submit publishes one request and returns at once; Wait on the ticket for the result.
// It blocks (bounded by ctx) only when the SQ is full or MaxInFlight requests are
// outstanding.
func (c *Client) Submit(ctx context.Context, r *Request) (Ticket, error) {
	var t [1]Ticket
	_, err := c.submit(ctx, oneRequest(r), t[:])
	return t[0], err
}

// SubmitBatch publishes reqs with as few ring publications and worker wakeups as the SQ
// space allows, storing one ticket per request in tickets (len(tickets) >= len(reqs)). It
// returns how many were submitted; on error the first n tickets are still valid and must be
// waited for.
func (c *Client) SubmitBatch(ctx context.Context, reqs []Request, tickets []Ticket) (int, error) {
	if len(tickets) < len(reqs) {
		return 0, errors.New("swring: SubmitBatch needs one ticket per request")
	}
	return c.submit(ctx, reqs, tickets)
}

func oneRequest(r *Request) []Request { return unsafe.Slice(r, 1) }

const submitChunk = 32

func (c *Client) submit(ctx context.Context, reqs []Request, out []Ticket) (int, error) {
	c.life.RLock()
	defer c.life.RUnlock()
	done := 0
	for done < len(reqs) {
		if c.down.Load() {
			return done, c.downErr
		}
		// Reserve up to submitChunk slots; block only for the first one.
		var idxs [submitChunk]uint32
		k := 0
		for done+k < len(reqs) && k < submitChunk {
			r := &reqs[done+k]
			if err := c.checkRequest(r); err != nil {
				if k == 0 {
					return done, err
				}
				break
			}
			var idx uint32
			select {
			case idx = <-c.freeSlots:
			default:
				if k > 0 {
					goto push
				}
				var err error
				if idx, err = c.waitSlot(ctx); err != nil {
					return done, err
				}
			}
			c.prepare(idx, r)
			idxs[k] = idx
			k++
		}
	push:
		n, err := c.push(ctx, reqs[done:done+k], idxs[:k])
		for i := 0; i < n; i++ {
			s := &c.slots[idxs[i]]
			out[done+i] = Ticket{c: c, idx: idxs[i], gen: s.gen.Load()}
		}
		for i := n; i < k; i++ {
			c.unprepare(idxs[i])
		}
		done += n
		if err != nil {
			return done, err
		}
	}
	return done, nil
}

// waitSlot blocks for a free request slot. Abandoned requests free their slots when their
// completions are reaped, so make sure someone reaps.
func (c *Client) waitSlot(ctx context.Context) (uint32, error) {
	c.kickReaper()
	select {
	case idx := <-c.freeSlots:
		return idx, nil
	case <-ctx.Done():
		return 0, ctx.Err()
	case <-c.downCh:
		return 0, c.downErr
	}
}

// checkRequest checks the buffers a request names: ranges inside them, and buffers of this
// session.
func (c *Client) checkRequest(r *Request) error {
	if r.Buf.Valid() {
		if r.Buf.p != c.bufs {
			return errForeignBuffer
		}
		if r.BufOffset > uint64(r.Buf.Len()) || uint64(r.BufLen) > uint64(r.Buf.Len())-r.BufOffset {
			return fmt.Errorf("%w: request range %d+%d outside its %d-byte buffer", ErrOutOfBounds, r.BufOffset, r.BufLen, r.Buf.Len())
		}
	}
	if r.Resp.Valid() {
		if r.Resp.p != c.bufs {
			return errForeignBuffer
		}
		// EXPORT's Args[1] must be 0; the engine writes ExportTicketLen bytes at Args[0].
		respLen := r.Args[1]
		if r.Opcode == OpExport {
			respLen = ExportTicketLen
		}
		if r.Args[0] > uint64(r.Resp.Len()) || respLen > uint64(r.Resp.Len())-r.Args[0] {
			return fmt.Errorf("%w: response range %d+%d outside its %d-byte buffer", ErrOutOfBounds, r.Args[0], respLen, r.Resp.Len())
		}
	}
	return nil
}

var errForeignBuffer = errors.New("swring: the request's Buffer belongs to another session")

func (c *Client) prepare(idx uint32, r *Request) {
	s := &c.slots[idx]
	s.gen.Add(1)
	s.err = nil
	s.result, s.flags = 0, 0
	if r.Buf.Valid() {
		r.Buf.pin()
		s.buf = r.Buf
	}
	if r.Resp.Valid() {
		r.Resp.pin()
		s.resp = r.Resp
	}
	// Publishes the fields above to completers (they load state first).
	s.state.Store(slotPending)
}

// unprepare gives back a slot that was prepared but never published.
func (c *Client) unprepare(idx uint32) {
	s := &c.slots[idx]
	c.completeSlot(idx, s.gen.Load(), 0, 0, nil)
	for s.state.Load() != slotDone {
		runtime.Gosched()
	}
	c.collect(idx)
}

// push publishes the prepared requests, waiting for SQ space (backpressure) as needed.
func (c *Client) push(ctx context.Context, reqs []Request, idxs []uint32) (int, error) {
	pushed := 0
	for pushed < len(idxs) {
		c.sqMu.Lock()
		if err := c.usable(); err != nil {
			c.sqMu.Unlock()
			return pushed, err
		}
		free, err := c.sq.Free()
		if err != nil {
			c.sqMu.Unlock()
			c.fail(&sessionError{sentinel: ErrEngineUnavailable, detail: "SQ head corrupt", cause: err})
			c.failAll()
			return pushed, c.downErr
		}
		n := min(int(free), len(idxs)-pushed)
		for i := 0; i < n; i++ {
			r := &reqs[pushed+i]
			idx := idxs[pushed+i]
			e := SQE{
				Opcode:    r.Opcode,
				Flags:     r.Flags,
				Peer:      r.Peer,
				UserData:  uint64(c.slots[idx].gen.Load())<<32 | uint64(idx),
				BufOffset: r.BufOffset,
				BufLen:    r.BufLen,
				Aux:       r.Aux,
				Args:      r.Args,
			}
			if r.Buf.Valid() {
				e.BufOffset += r.Buf.Offset()
			}
			if r.Resp.Valid() {
				e.Args[0] += r.Resp.Offset()
			}
			c.sq.PushSQE(&e)
		}
		if n == 0 {
			c.sqMu.Unlock()
			if err := c.waitSQSpace(ctx); err != nil {
				return pushed, err
			}
			continue
		}
		// Count before publishing, so a completion is never reaped before it is counted.
		c.unreaped.Add(int64(n))
		wake := c.sq.Publish()
		c.sqMu.Unlock()
		c.nSubmitted.Add(uint64(n))
		if wake {
			c.wakeWorker()
		}
		pushed += n
	}
	return pushed, nil
}

// wakeWorker rings the session's SQ doorbell, one byte into the pipe's write end (SPEC.md
// §6): the worker advertised NEED_WAKEUP on the SQ. EAGAIN (a full pipe) means a wake-up is
// already pending.
func (c *Client) wakeWorker() {
	c.nWakeups.Add(1)
	for {
		_, err := unix.Write(c.workerFD, wakeValue[:])
		if err != unix.EINTR {
			return
		}
	}
}

// waitSQSpace waits for the engine to consume SQ entries. The engine only admits an SQE
// when it can reserve a CQ slot, so keep the CQ reaped meanwhile.
func (c *Client) waitSQSpace(ctx context.Context) error {
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for i := 0; ; i++ {
		c.kickReaper()
		if i < 50 {
			runtime.Gosched()
		} else {
			d := time.Duration(min(i-49, 100)) * 10 * time.Microsecond
			if timer == nil {
				timer = time.NewTimer(d)
			} else {
				timer.Reset(d)
			}
			select {
			case <-timer.C:
			case <-ctx.Done():
			case <-c.downCh:
			}
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		c.sqMu.Lock()
		err := c.usable()
		var free uint32
		if err == nil {
			free, err = c.sq.Refresh()
			if err != nil {
				c.sqMu.Unlock()
				c.fail(&sessionError{sentinel: ErrEngineUnavailable, detail: "SQ head corrupt", cause: err})
				c.failAll()
				return c.downErr
			}
		}
		c.sqMu.Unlock()
		if err != nil {
			return err
		}
		if free > 0 {
			return nil
		}
	}
}

// Wait blocks until the request completes and returns its result (see Do for the errors).
// On ctx cancellation it returns ctx.Err() promptly; the late completion is reaped and
// discarded, and a buffer the request used is released only then.
func (t Ticket) Wait(ctx context.Context) (int32, error) {
	c := t.c
	if c == nil || int(t.idx) >= len(c.slots) {
		return 0, errors.New("swring: invalid ticket")
	}
	s := &c.slots[t.idx]
	if s.gen.Load() != t.gen {
		return 0, errors.New("swring: ticket already waited for")
	}
	c.life.RLock()
	defer c.life.RUnlock()
	for {
		switch s.state.Load() {
		case slotDone:
			return c.collect(t.idx)
		case slotCompleting:
			runtime.Gosched()
		case slotPending:
			if !c.down.Load() && c.cqMu.TryLock() {
				err := c.lead(ctx, s)
				c.cqMu.Unlock()
				c.handOff()
				if err != nil && s.state.Load() != slotDone {
					if s.state.CompareAndSwap(slotPending, slotAbandoned) {
						c.kickReaper()
						return 0, err
					}
				}
				continue
			}
			if !s.state.CompareAndSwap(slotPending, slotParked) {
				continue
			}
			select {
			case <-s.done:
				return c.collect(t.idx)
			case <-ctx.Done():
				if s.state.CompareAndSwap(slotParked, slotAbandoned) {
					c.kickReaper()
					return 0, ctx.Err()
				}
				<-s.done // completing: the signal is on its way
				return c.collect(t.idx)
			}
		default:
			return 0, errors.New("swring: ticket already waited for")
		}
	}
}

// WaitAll waits for every ticket and returns the first error (all tickets are waited for
// even after an error, unless ctx ends).
func WaitAll(ctx context.Context, tickets []Ticket) error {
	var first error
	for _, t := range tickets {
		if _, err := t.Wait(ctx); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// collect returns a done slot's outcome and frees it.
func (c *Client) collect(idx uint32) (int32, error) {
	s := &c.slots[idx]
	res, err := s.result, s.err
	s.err = nil
	s.state.Store(slotFree)
	c.freeSlots <- idx
	if err != nil {
		return 0, err
	}
	if res < 0 {
		return res, ResultError(res)
	}
	return res, nil
}

// completeSlot stores an outcome for the request (idx, gen) and hands it to its waiter, or
// frees the slot if the waiter gave up. A completion for no live request counts as stray.
func (c *Client) completeSlot(idx, gen uint32, res int32, flags uint32, err error) {
	if int(idx) >= len(c.slots) {
		c.nStray.Add(1)
		return
	}
	s := &c.slots[idx]
	if s.gen.Load() != gen {
		c.nStray.Add(1)
		return
	}
	var prev uint32
	for {
		prev = s.state.Load()
		if prev != slotPending && prev != slotParked && prev != slotAbandoned {
			if prev != slotCompleting {
				c.nStray.Add(1)
				return
			}
			runtime.Gosched()
			continue
		}
		if s.state.CompareAndSwap(prev, slotCompleting) {
			break
		}
	}
	buf, resp := s.buf, s.resp
	s.buf, s.resp = Buffer{}, Buffer{}
	// The engine is done with the buffers: they may be reused once their owners released
	// them.
	if buf.Valid() {
		buf.unpin()
	}
	if resp.Valid() {
		resp.unpin()
	}
	if prev == slotAbandoned {
		s.state.Store(slotFree)
		c.freeSlots <- idx
		return
	}
	s.result, s.flags, s.err = res, flags, err
	s.state.Store(slotDone)
	if prev == slotParked {
		s.done <- struct{}{}
	}
}

// reapLocked dispatches every ready completion. Caller holds cqMu and c.life (read).
func (c *Client) reapLocked() error {
	n, err := c.cq.Refresh()
	if err != nil {
		return err
	}
	if n == 0 {
		return nil
	}
	for i := uint32(0); i < n; i++ {
		e := c.cq.PopCQE()
		c.completeSlot(uint32(e.UserData), uint32(e.UserData>>32), e.Result, e.Flags, nil)
	}
	// Hand the slots back before the waiters run, so the engine can admit more.
	c.cq.Release()
	// SPEC.md §6 "The engine also sleeps on a full CQ": with more requests in flight than
	// the CQ holds, the worker may sleep on SQ entries it could not admit; our new CQ head
	// gives it room, so look at its NEED_WAKEUP. The SC store (head, in release) → load
	// (flags) order of Go atomics is the full fence that pairs with the worker's
	// announce_sleep (flags store; fence(SeqCst); check "SQ ready and CQ room").
	// unreaped still counts the n just reaped: it is the in-flight count before this reap.
	if c.unreaped.Load() > int64(c.layout.CQEntries) && atomic.LoadUint32(c.sq.Ctl.Flags)&NeedWakeup != 0 {
		c.wakeWorker()
	}
	c.unreaped.Add(-int64(n))
	c.nCompleted.Add(uint64(n))
	return nil
}

func (c *Client) targetDone(target *slot) bool {
	if target == nil {
		return c.unreaped.Load() <= 0
	}
	st := target.state.Load()
	return st == slotDone || st == slotCompleting
}

// lead reaps the CQ until target completed (or, with no target, until nothing is
// outstanding): spin for cfg.spin, then sleep on the CQ doorbell. Caller holds cqMu.
func (c *Client) lead(ctx context.Context, target *slot) error {
	start := time.Now()
	for i := 1; ; i++ {
		if c.down.Load() {
			c.failAllLocked()
			return c.downErr
		}
		if err := c.reapLocked(); err != nil {
			c.fail(&sessionError{sentinel: ErrEngineUnavailable, detail: "CQ tail corrupt", cause: err})
			c.failAllLocked()
			return c.downErr
		}
		if c.targetDone(target) {
			return nil
		}
		if i%64 == 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
			if c.checkStateLocked() {
				return c.downErr
			}
			if time.Since(start) >= c.cfg.spin {
				if err := c.sleep(ctx); err != nil {
					return err
				}
				start = time.Now()
			} else if i%1024 == 0 {
				runtime.Gosched()
			}
		}
	}
}

// checkStateLocked applies the terminal rule (SPEC.md §8) when the engine ended the
// session. Caller holds cqMu.
func (c *Client) checkStateLocked() bool {
	// SYNC POINT: acquire load of state; pairs with the engine's release store, which
	// follows its final CQ tail and SQ head stores.
	st := c.reg.State()
	switch {
	case st == StateDraining:
		c.draining.Store(true)
	case st.Terminal():
		reason := CloseReason(atomic.LoadUint32(c.reg.U32(OffCloseReason)))
		sentinel := ErrEngineUnavailable
		if reason == CloseClientClosed && c.closing.Load() {
			sentinel = ErrClosed
		}
		c.fail(&sessionError{sentinel: sentinel, detail: fmt.Sprintf("engine ended the session (state %v, reason %v)", st, reason)})
		c.failAllLocked()
		return true
	}
	return false
}

// sleep does the consumer side of the sleep/wake handshake on the CQ and blocks until the
// CQ doorbell fires, ctx ends, or the client is shut down (kickLeader).
func (c *Client) sleep(ctx context.Context) error {
	empty, err := c.cq.PrepareSleep()
	if err != nil || !empty {
		return nil // reapLocked reports corruption on the next pass
	}
	defer c.cq.FinishSleep()
	// The engine rings the CQ doorbell on every state change, but check once more now that
	// NEED_WAKEUP is set, to not sleep through a change that happened just before.
	if c.checkStateLocked() {
		return c.downErr
	}
	// Reset an earlier kick, then re-check the conditions a kick stands for: a kick that
	// lands after this reset interrupts the read below.
	c.epFile.SetReadDeadline(time.Time{})
	if c.down.Load() {
		return nil
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	var stop func() bool
	if ctx.Done() != nil {
		stop = context.AfterFunc(ctx, c.kickLeader)
	}
	c.nSleeps.Add(1)
	rerr := c.epRaw.Read(c.epollFn)
	if stop != nil {
		stop()
	}
	if rerr != nil && !errors.Is(rerr, os.ErrDeadlineExceeded) && !c.down.Load() {
		c.fail(&sessionError{sentinel: ErrEngineUnavailable, detail: "wait on CQ doorbell", cause: rerr})
	}
	return nil
}

// epollReady is the RawConn.Read callback: true once the CQ doorbell fired (its counter
// is then read back to zero); false makes the netpoller wait for the epoll fd.
func (c *Client) epollReady(fd uintptr) bool {
	n, err := unix.EpollWait(int(fd), c.epEvents[:], 0)
	if err != nil || n <= 0 {
		return false
	}
	// Readable, and only this client holds the read end: the read returns at once. Bytes
	// beyond the buffer make the next sleep return at once (a spurious wake-up, rechecked).
	unix.Read(c.sessFD, c.efdBuf[:])
	return true
}

// kickLeader interrupts a leader sleeping on the CQ doorbell.
func (c *Client) kickLeader() { c.epFile.SetReadDeadline(time.Unix(1, 0)) }

// kickReaper asks the background reaper to reap outstanding completions.
func (c *Client) kickReaper() {
	select {
	case c.reapTok <- struct{}{}:
	default:
	}
}

// handOff runs after a leader released cqMu: if completions are still owed, someone must
// keep reaping. (The leader's Unlock precedes this load, and a submitter's increment of
// unreaped precedes its TryLock, so either the submitter leads or we see its request.)
func (c *Client) handOff() {
	if c.unreaped.Load() > 0 {
		c.kickReaper()
	}
}

// reaper leads whenever asked and nobody else does: it reaps completions of requests whose
// waiters gave up or are parked, so every completion is reaped without a dedicated thread
// spinning while the client is idle.
func (c *Client) reaper() {
	defer close(c.reaperDone)
	ctx := context.Background()
	for {
		select {
		case <-c.reapTok:
		case <-c.downCh:
			return
		}
		c.life.RLock()
		for c.unreaped.Load() > 0 && !c.down.Load() && c.cqMu.TryLock() {
			c.lead(ctx, nil)
			c.cqMu.Unlock()
		}
		c.life.RUnlock()
	}
}

// fail marks the session as down (first error wins) and wakes every sleeper. The caller
// then runs failAll (or failAllLocked) so that every outstanding request is failed.
func (c *Client) fail(err error) {
	c.downOnce.Do(func() {
		c.downErr = err
		c.down.Store(true)
		close(c.downCh)
		c.kickLeader()
	})
}

// failAllLocked reaps the completions the engine published and fails every other
// outstanding request with the session error. Caller holds cqMu and c.down is set.
func (c *Client) failAllLocked() {
	_ = c.reapLocked()
	for i := range c.slots {
		s := &c.slots[i]
		switch s.state.Load() {
		case slotPending, slotParked, slotAbandoned:
			c.completeSlot(uint32(i), s.gen.Load(), 0, 0, c.downErr)
		}
	}
	c.unreaped.Store(0)
}

// failAll is failAllLocked for goroutines that do not lead.
func (c *Client) failAll() {
	c.kickLeader()
	c.cqMu.Lock()
	c.failAllLocked()
	c.cqMu.Unlock()
}

// watch reads the control socket: Pong, Closed, the replies to ConnectPeer
// (PeerConnected, Error), and EOF, which is the definitive sign that the engine died or
// dropped the session.
func (c *Client) watch() {
	defer close(c.watcherDone)
	buf := make([]byte, MaxMessage)
	for {
		n, err := c.conn.Read(buf)
		if err != nil || n == 0 {
			c.closedOnce.Do(func() { close(c.closedMsg) })
			if !c.closing.Load() { // (Close fails the rest itself)
				c.fail(&sessionError{sentinel: ErrEngineUnavailable, detail: "control socket closed (engine exited or ended the session)"})
				c.life.RLock()
				c.failAll()
				c.life.RUnlock()
			}
			return
		}
		m, err := DecodeMessage(buf[:n])
		if err != nil {
			continue // a packet we do not understand changes nothing we rely on
		}
		switch m.Kind {
		case KindPong:
			select {
			case c.pong <- struct{}{}:
			default:
			}
		case KindClosed:
			c.closedOnce.Do(func() { close(c.closedMsg) })
		case KindPeerConnected, KindError:
			c.peerReplied(m)
		}
	}
}

// heartbeat keeps the engine's lease alive: a relaxed store of a new client_heartbeat value
// every lease_ms/4 (no syscall).
func (c *Client) heartbeat() {
	defer close(c.hbDone)
	if c.leaseMs == 0 {
		<-c.downCh
		return
	}
	period := time.Duration(c.leaseMs) * time.Millisecond / 4
	if period < time.Millisecond {
		period = time.Millisecond
	}
	t := time.NewTicker(period)
	defer t.Stop()
	var beat uint64
	for {
		select {
		case <-t.C:
			beat++
			c.life.RLock()
			if !c.down.Load() {
				// Only the client writes this field; the engine loads it relaxed.
				atomic.StoreUint64(c.reg.U64(OffClientHeartbeat), beat)
			}
			c.life.RUnlock()
		case <-c.downCh:
			return
		}
	}
}

// Ping sends Ping on the control socket and waits for Pong: a health check.
func (c *Client) Ping(ctx context.Context) error {
	c.pingMu.Lock()
	defer c.pingMu.Unlock()
	if c.down.Load() {
		return c.downErr
	}
	select {
	case <-c.pong:
	default:
	}
	if _, err := c.conn.Write((&Message{Kind: KindPing}).Encode(nil)); err != nil {
		return &sessionError{sentinel: ErrEngineUnavailable, detail: "send ping", cause: err}
	}
	select {
	case <-c.pong:
		return nil
	case <-c.downCh:
		return c.downErr
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Err returns nil while the session is usable, and otherwise why it is not (an error
// matching ErrEngineUnavailable or ErrClosed).
func (c *Client) Err() error {
	if c.down.Load() {
		return c.downErr
	}
	return nil
}

// Done is closed when the session ends (engine gone, session closed by either side).
func (c *Client) Done() <-chan struct{} { return c.downCh }

// Close ends the session: new submissions fail with ErrClosed, the engine is asked to
// complete what it accepted (bounded by WithCloseTimeout), every remaining waiter is
// released with ErrClosed, and the region is unmapped once every Buffer has been
// released. Close is idempotent and safe to call concurrently.
func (c *Client) Close() error {
	c.closeOnce.Do(func() { c.closeErr = c.close() })
	return c.closeErr
}

func (c *Client) close() error {
	c.closing.Store(true)
	// No submitter is between its usable() check and its publish after this.
	c.sqMu.Lock()
	c.sqMu.Unlock() //nolint:staticcheck // barrier
	if !c.down.Load() {
		if _, err := c.conn.Write((&Message{Kind: KindClose}).Encode(nil)); err == nil {
			t := time.NewTimer(c.cfg.closeTimeout)
			select {
			case <-c.closedMsg:
			case <-c.downCh:
			case <-t.C:
			}
			t.Stop()
		}
	}
	c.fail(&sessionError{sentinel: ErrClosed})
	c.life.RLock()
	c.failAll()
	c.life.RUnlock()
	c.conn.Close()
	<-c.watcherDone
	<-c.hbDone
	<-c.reaperDone
	c.life.Lock() // every operation touching the region has left
	c.epFile.Close()
	unix.Close(c.workerFD)
	unix.Close(c.sessFD)
	mem := c.mem
	c.bufs.close(func() { unix.Munmap(mem) })
	c.life.Unlock()
	return nil
}

// Reconnect closes c and dials the same socket with the same options: the way back after
// the engine restarted. Buffers of the old session stay readable until released but cannot
// be used in requests of the new one.
func (c *Client) Reconnect(ctx context.Context) (*Client, error) {
	c.Close()
	return Dial(ctx, c.path, c.opts...)
}
