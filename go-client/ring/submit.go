package ring

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"time"
	"unsafe"

	"github.com/seaweed-ring/seaweed-ring/go-client/internal/wire"
	"golang.org/x/sys/unix"
)

// usable reports why no new request may be submitted, or nil. Called under sqMu.
func (c *Client) usable() error {
	if c.down.Load() {
		return c.downErr
	}
	if c.closing.Load() {
		return ErrClosed
	}
	// SYNC POINT: acquire load of state (pairs with the engine's release store).
	if st := c.reg.State(); st != wire.StateReady {
		if st == wire.StateDraining {
			c.draining.Store(true)
		}
		return &sessionError{sentinel: ErrEngineUnavailable, detail: "session is " + st.String()}
	}
	return nil
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
			e := wire.SQE{
				Opcode:    uint8(r.Opcode),
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
