package ring

import (
	"context"
	mbits "math/bits"
	"sync/atomic"
	"time"

	"github.com/seaweed-ring/seaweed-ring/go-client/internal/wire"
	"golang.org/x/sys/unix"
)

// fail marks the session as down (first error wins) and wakes every sleeper. The caller
// then runs failAll (or failAllLocked) so that every outstanding request is failed.
//
// Done is closed before down is set: whoever sees down (and so returns downErr) also sees
// Done closed. Goroutines woken by Done that still see down unset go on as if the session
// were up for a moment; their requests fail once down is set. The leader is kicked after
// down is set, so that it sees down when it wakes.
func (c *Client) fail(err error) {
	c.downOnce.Do(func() {
		c.downErr = err
		close(c.downCh)
		c.down.Store(true)
		c.kickLeader()
	})
}

// failAllLocked reaps the completions the engine published and fails every other
// outstanding request with the session error. Caller holds cqMu and c.down is set.
func (c *Client) failAllLocked() {
	if !c.unmapped {
		_ = c.reapLocked()
	}
	// Every request the log handed over and no completion settled. Requests published
	// after this load are failed by their own Wait (it sees down and calls us again).
	submitted := c.consumeLog()
	var slotOf [maxBatch]uint32
	for i := range c.slots {
		if !c.slots[i].live {
			continue
		}
		idx := uint32(i)
		lead, bit, _ := c.completeSlot(idx, c.slots[i].cgen, 0, c.downErr)
		slotOf[mbits.TrailingZeros32(bit)] = idx
		c.publishRecord(lead, bit, &slotOf)
	}
	c.settled = submitted
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
	buf := make([]byte, wire.MaxMessage)
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
		m, err := wire.DecodeMessage(buf[:n])
		if err != nil {
			continue // a packet we do not understand changes nothing we rely on
		}
		switch m.Kind {
		case wire.KindPong:
			select {
			case c.pong <- struct{}{}:
			default:
			}
		case wire.KindClosed:
			c.closedOnce.Do(func() { close(c.closedMsg) })
		case wire.KindPeerConnected, wire.KindError:
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
				atomic.StoreUint64(c.reg.U64(wire.OffClientHeartbeat), beat)
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
	if _, err := c.conn.Write((&wire.Message{Kind: wire.KindPing}).Encode(nil)); err != nil {
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
		if _, err := c.conn.Write((&wire.Message{Kind: wire.KindClose}).Encode(nil)); err == nil {
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
	c.life.Lock() // every cold-path operation touching the region has left
	// Submitters and leaders do not take life. The session is down (fail above), so a
	// submitter that takes sqMu after us returns at usable(), and a leader that takes cqMu
	// after us sees unmapped; the ones holding them now finish first.
	c.sqMu.Lock()
	c.cqMu.Lock()
	c.unmapped = true
	c.cqMu.Unlock()
	c.sqMu.Unlock()
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
