package ring

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"unicode/utf8"

	"github.com/seaweed-ring/seaweed-ring/go-client/internal/wire"
)

// Peer is the handle of a peer engine, from ConnectPeer, for SEND requests. Handles are
// engine-wide: the same address gets the same handle in every session of an engine.
type Peer uint32

// ErrBadPeerAddress: ConnectPeer was given an address the engine does not take (not
// ip:port, or not UTF-8 text of at most 496 bytes). The session goes on.
var ErrBadPeerAddress = errors.New("swring: bad peer address")

// ErrTooManyPeers: ConnectPeer refused because the session holds as many peer
// registrations as the engine allows (control.max-peers-per-session). The session goes
// on; registrations end with the session.
var ErrTooManyPeers = errors.New("swring: too many peers registered by this session")

// PeerError is a failed ConnectPeer: the engine answered Error (Code, Message), or the
// client refused the address before sending it (Code CtlBadRequest). CtlBadRequest matches
// ErrBadPeerAddress and CtlShuttingDown ErrEngineUnavailable under errors.Is.
type PeerError struct {
	Addr    string
	Code    ControlErrorCode
	Message string
}

func (e *PeerError) Error() string {
	return fmt.Sprintf("swring: connect peer %q: %v: %s", e.Addr, e.Code, e.Message)
}

// Is maps the error code onto the package sentinels.
func (e *PeerError) Is(target error) bool {
	switch e.Code {
	case CtlBadRequest:
		return target == ErrBadPeerAddress
	case CtlTooManyPeers:
		return target == ErrTooManyPeers
	case CtlShuttingDown:
		return target == ErrEngineUnavailable
	case CtlVersionMismatch:
		return target == ErrVersionMismatch
	}
	return false
}

// peerReply is a reply to the seq-th ConnectPeer of the session.
type peerReply struct {
	seq uint64
	m   wire.Message
}

// peerReplied runs on the watcher for PeerConnected and Error: it hands the reply to the
// ConnectPeer that asked for it. The engine answers ConnectPeers in order, one reply each,
// so replies are numbered as they arrive; the caller skips replies to earlier calls that
// gave up (ctx). An Error when no ConnectPeer is outstanding is the engine ending the
// session; EOF follows and the watcher reports it.
func (c *Client) peerReplied(m wire.Message) {
	c.peerSeqMu.Lock()
	if c.peerRecv == c.peerSent {
		c.peerSeqMu.Unlock()
		return
	}
	c.peerRecv++
	r := peerReply{seq: c.peerRecv, m: m}
	c.peerSeqMu.Unlock()
	// The watcher is the only sender: keep the newest reply (an older one is for a call
	// that no longer waits, since calls are serialized).
	for {
		select {
		case c.peerReply <- r:
			return
		default:
			select {
			case <-c.peerReply:
			default:
			}
		}
	}
}

// ConnectPeer registers the UCX listener address of a peer engine ("ip:port", IPv6 as
// "[ip]:port") with the engine and returns its handle for Send. No connection is made yet:
// the engine connects on the first SEND to the handle (and reconnects after failures), so
// an unreachable peer shows as ErrPeerFailed there.
//
// Registrations are the session's: they end with it, and a session may hold at most the
// engine's control.max-peers-per-session distinct addresses (registering one again is free).
//
// Errors: a *PeerError matching ErrBadPeerAddress when the engine does not take the
// address, or ErrTooManyPeers past the limit (the session stays usable in both cases), ErrEngineUnavailable or ErrClosed when the session
// ends, ctx.Err(). Concurrent calls are serialized.
func (c *Client) ConnectPeer(ctx context.Context, addr string) (Peer, error) {
	// A packet the engine cannot decode would end the session: refuse it here.
	if !utf8.ValidString(addr) {
		return 0, &PeerError{Addr: addr, Code: CtlBadRequest, Message: "address is not UTF-8"}
	}
	if len(addr) > wire.MaxPeerAddr {
		return 0, &PeerError{Addr: addr, Code: CtlBadRequest, Message: fmt.Sprintf("address of %d bytes, at most %d fit a control packet", len(addr), wire.MaxPeerAddr)}
	}
	c.peerMu.Lock()
	defer c.peerMu.Unlock()
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	if c.down.Load() {
		return 0, c.downErr
	}
	if c.closing.Load() {
		return 0, ErrClosed
	}
	pkt := (&wire.Message{Kind: wire.KindConnectPeer, Addr: addr}).Encode(nil)
	// Count the request before sending it, so that the reply always finds it counted.
	c.peerSeqMu.Lock()
	c.peerSent++
	seq := c.peerSent
	c.peerSeqMu.Unlock()
	if _, err := c.conn.Write(pkt); err != nil {
		c.peerSeqMu.Lock()
		c.peerSent-- // no reply will come (a packet is sent whole or not at all)
		c.peerSeqMu.Unlock()
		if c.down.Load() {
			return 0, c.downErr
		}
		return 0, &sessionError{sentinel: ErrEngineUnavailable, detail: "send connect-peer", cause: err}
	}
	for {
		select {
		case r := <-c.peerReply:
			if r.seq < seq {
				continue // the reply to a call that gave up
			}
			switch r.m.Kind {
			case wire.KindPeerConnected:
				if r.m.Peer == 0 {
					return 0, fmt.Errorf("%w: engine answered connect-peer %q with peer handle 0", ErrProtocol, addr)
				}
				return Peer(r.m.Peer), nil
			default: // KindError
				return 0, &PeerError{Addr: addr, Code: ControlErrorCode(r.m.Code), Message: r.m.Text}
			}
		case <-c.downCh:
			return 0, c.downErr
		case <-ctx.Done():
			// The reply still comes; the next call skips it.
			return 0, ctx.Err()
		}
	}
}

// SendRequest returns the SEND of req's bytes to service of the engine peer, with resp as
// the response buffer (capacity resp.Len()), for Submit or SubmitBatch. A zero Buffer is
// an empty request or a response capacity of 0. req.Len() must be below 2^32 (SubmitSend
// checks it).
func SendRequest(peer Peer, service uint32, req, resp Buffer) Request {
	return Request{
		Opcode: OpSend,
		Peer:   uint32(peer),
		Aux:    service,
		Buf:    req,
		BufLen: uint32(req.Len()),
		Resp:   resp,
		Args:   [4]uint64{0, uint64(resp.Len()), 0, 0},
	}
}

// SubmitSend submits a SEND (see Send) and returns at once; Wait on the ticket for the
// response length.
func (c *Client) SubmitSend(ctx context.Context, peer Peer, service uint32, req, resp Buffer) (Ticket, error) {
	if uint64(req.Len()) > math.MaxUint32 || uint64(resp.Len()) > math.MaxInt32 {
		return Ticket{}, fmt.Errorf("%w: SEND of %d bytes with a %d-byte response buffer (at most 2^32-1 and 2^31-1)", ErrInvalidEntry, req.Len(), resp.Len())
	}
	r := SendRequest(peer, service, req, resp)
	return c.Submit(ctx, &r)
}

// Send sends the bytes of req to service (ServiceEcho, ...) of the peer engine and waits
// for the response, which the engine writes into resp, zero copy on this side; it returns
// the response length (the response is resp.Bytes()[:n]), or 0 and an error. Use
// Buffer.Slice for parts of a buffer; a zero Buffer is an empty request or an empty
// response buffer.
//
// Neither buffer may be touched until Send returns. When ctx ends first, Send returns
// ctx.Err() while the engine may still read req and write resp: leave their bytes alone
// and Release them; the memory is handed out again only after the engine completed the
// request (it always does: with the response, an error, or ErrTimedOut after its request
// timeout).
//
// Result errors: ErrNoSuchPeer (not a handle from ConnectPeer), ErrPeerFailed,
// ErrTimedOut, ErrResponseTooLarge (resp too small), ErrUnknownService, ErrInvalidEntry
// (request larger than the engine's ucx.max-message-bytes), ErrOutOfBounds; and the
// session errors of Do.
func (c *Client) Send(ctx context.Context, peer Peer, service uint32, req, resp Buffer) (int, error) {
	t, err := c.SubmitSend(ctx, peer, service, req, resp)
	if err != nil {
		return 0, err
	}
	n, err := t.Wait(ctx)
	if err != nil {
		return 0, err
	}
	return int(n), nil
}

// ExportTicketLen is the size of the ticket EXPORT writes (SPEC.md §14).
const ExportTicketLen = 16

// ExportTicket names an export for peers: a random 64-bit id and a random 64-bit key, both
// drawn by the engine for every export (unique across engine restarts, not guessable). Hand
// both to the reading client; it puts them in Args[0] and Args[1] of OpRead/OpWrite.
type ExportTicket struct {
	ID, Key uint64
}

// ExportRequest returns the EXPORT of data (BufLen = data.Len()) with permissions perms
// (1 read, 2 write, 3 both), the engine writing the ticket into the first ExportTicketLen
// bytes of ticket (a separate buffer of at least that size, 8-aligned, as Alloc gives).
// After a successful completion, DecodeExportTicket(ticket.Bytes()) reads it.
func ExportRequest(data Buffer, perms uint32, ticket Buffer) Request {
	return Request{
		Opcode: OpExport,
		Aux:    perms,
		Buf:    data,
		BufLen: uint32(data.Len()),
		Resp:   ticket,
		Args:   [4]uint64{0, 0, 0, 0},
	}
}

// DecodeExportTicket reads the ticket EXPORT wrote (little-endian id, then key); b must
// hold at least ExportTicketLen bytes.
func DecodeExportTicket(b []byte) (ExportTicket, error) {
	if len(b) < ExportTicketLen {
		return ExportTicket{}, fmt.Errorf("%w: export ticket of %d bytes, want %d", ErrOutOfBounds, len(b), ExportTicketLen)
	}
	return ExportTicket{ID: binary.LittleEndian.Uint64(b), Key: binary.LittleEndian.Uint64(b[8:])}, nil
}
