package needle

import (
	"context"
	"fmt"
	"math"

	"github.com/seaweed-ring/seaweed-ring/go-client/ring"
)

// ReadRequest returns the READ_NEEDLE of the whole data of fid from the volume server
// whose engine is peer, into buf (metadata, then up to buf.Len()-MetaLen data bytes),
// for Submit or SubmitBatch. Decode the completion with Decode. The engine
// refuses a needle whose data does not fit; ReadRangeRequest reads any part.
func ReadRequest(peer ring.Peer, fid FileID, buf ring.Buffer) ring.Request {
	return ring.Request{
		Opcode: ring.OpReadNeedle,
		Peer:   uint32(peer),
		Aux:    fid.VolumeID,
		Buf:    buf,
		BufLen: uint32(min(uint64(buf.Len()), math.MaxUint32)),
		Args:   [4]uint64{fid.NeedleID, uint64(fid.Cookie), 0, 0},
	}
}

// ReadRangeRequest is ReadRequest for length bytes of the data from offset
// (ring.FlagReadNeedleRange): the engine returns fewer when the data ends first, and
// ring.ErrRangeNotSatisfiable when offset is beyond its end. length must not exceed
// buf.Len()-MetaLen.
func ReadRangeRequest(peer ring.Peer, fid FileID, offset, length uint64, buf ring.Buffer) ring.Request {
	r := ReadRequest(peer, fid, buf)
	r.Flags = ring.FlagReadNeedleRange
	r.Args[2], r.Args[3] = offset, length
	return r
}

// MaxJWTLen is the longest read JWT a READ_NEEDLE carries (SeaweedFS's are about
// 150 bytes); SetJWT refuses longer ones.
const MaxJWTLen = 1024

// needleJWTLenShift: args[1] of READ_NEEDLE is the cookie | the JWT's length << 32.
const needleJWTLenShift = 32

// SetJWT makes READ_NEEDLE r carry jwt, the read token SeaweedFS's master handed out
// for the file id (what the volume server's GET takes as "Authorization: Bearer"): it
// writes jwt at the start of r.Buf (the metadata area, which the reply overwrites) and its
// length into the entry, for the serving engine to verify (SPEC.md §15). Call it after
// building r and before every submission of it. An empty jwt clears it.
func SetJWT(r *ring.Request, jwt string) error {
	if r.Opcode != ring.OpReadNeedle {
		return fmt.Errorf("%w: a JWT on opcode %d (only READ_NEEDLE carries one)", ring.ErrInvalidEntry, r.Opcode)
	}
	if len(jwt) > MaxJWTLen {
		return fmt.Errorf("%w: read JWT of %d bytes, at most MaxJWTLen = %d", ring.ErrInvalidEntry, len(jwt), MaxJWTLen)
	}
	b := r.Buf.Bytes()
	if len(b) < MetaLen {
		return fmt.Errorf("%w: READ_NEEDLE buffer of %d bytes (at least MetaLen = %d)", ring.ErrInvalidEntry, len(b), MetaLen)
	}
	copy(b, jwt)
	r.Args[1] = r.Args[1]&math.MaxUint32 | uint64(len(jwt))<<needleJWTLenShift
	return nil
}

// checkNeedleBuf checks what the engine would refuse with invalid-entry or out-of-bounds,
// so that a bad call does not count as an invalid entry of the session.
func checkNeedleBuf(buf ring.Buffer, ranged bool, length uint64) error {
	n := buf.Len()
	if !buf.Valid() || n < MetaLen || uint64(n) > math.MaxInt32 {
		return fmt.Errorf("%w: READ_NEEDLE buffer of %d bytes (at least MetaLen = %d, at most 2^31-1)", ring.ErrInvalidEntry, n, MetaLen)
	}
	if ranged && length > uint64(n-MetaLen) {
		return fmt.Errorf("%w: READ_NEEDLE range of %d bytes, the buffer holds %d data bytes", ring.ErrOutOfBounds, length, n-MetaLen)
	}
	return nil
}

// submitRead submits the READ_NEEDLE of ReadRequest and returns at once; Wait on
// the ticket for the data length, then decode the buffer with Decode.
func submitRead(ctx context.Context, c *ring.Client, peer ring.Peer, fid FileID, buf ring.Buffer) (ring.Ticket, error) {
	if err := checkNeedleBuf(buf, false, 0); err != nil {
		return ring.Ticket{}, err
	}
	r := ReadRequest(peer, fid, buf)
	return c.Submit(ctx, &r)
}

// submitReadRange submits the ranged READ_NEEDLE of ReadRangeRequest.
func submitReadRange(ctx context.Context, c *ring.Client, peer ring.Peer, fid FileID, offset, length uint64, buf ring.Buffer) (ring.Ticket, error) {
	if err := checkNeedleBuf(buf, true, length); err != nil {
		return ring.Ticket{}, err
	}
	r := ReadRangeRequest(peer, fid, offset, length, buf)
	return c.Submit(ctx, &r)
}

// Decode decodes what a completed READ_NEEDLE with result n (the data length)
// left in buf: the metadata (DecodeMeta; Name and Mime alias buf) and the data,
// buf.Bytes()[MetaLen:][:n], both read in place. Errors wrap ring.ErrProtocol.
func Decode(buf ring.Buffer, n int32) (Meta, []byte, error) {
	b := buf.Bytes()
	if len(b) < MetaLen || n < 0 || int(n) > len(b)-MetaLen {
		return Meta{}, nil, fmt.Errorf("%w: READ_NEEDLE result %d for a %d-byte buffer", ring.ErrProtocol, n, len(b))
	}
	m, err := DecodeMeta(b[:MetaLen])
	if err != nil {
		return Meta{}, nil, err
	}
	return m, b[MetaLen : MetaLen+int(n) : MetaLen+int(n)], nil
}

// readNeedle reads the whole data of needle fid from the volume server whose engine is peer
// (a handle from ConnectPeer for that engine's UCX address) into buf, zero copy: the engine
// writes the needle's metadata and data straight into the shared buffer. It returns the
// metadata and the data length n; the data is buf.Bytes()[MetaLen:][:n] and
// meta.Name/Mime alias buf. The data is returned as stored: gzip-compressed when
// meta.Flags has FlagGzip. buf must hold MetaLen bytes plus the whole data
// (ReadRange reads larger needles in parts; Reader does it for you).
//
// Result errors: ring.ErrNoSuchVolume, ring.ErrNoSuchNeedle, ring.ErrNeedleDeleted, ring.ErrCookieMismatch (all
// matching ring.ErrNeedleNotFound), ring.ErrCorrupt; ring.ErrNoSuchPeer, ring.ErrPeerFailed, ring.ErrTimedOut (the
// peer engine); ring.ErrInvalidEntry, ring.ErrOutOfBounds (the buffer); and the session errors of Do.
// As with Send, after a ctx error leave buf alone and Release it: it is reused only once
// the engine completed the request.
func readNeedle(ctx context.Context, c *ring.Client, peer ring.Peer, fid FileID, buf ring.Buffer) (Meta, int, error) {
	t, err := submitRead(ctx, c, peer, fid, buf)
	if err != nil {
		return Meta{}, 0, err
	}
	return waitReadNeedle(ctx, t, buf)
}

// readNeedleRange is readNeedle for at most length bytes of the data from offset, clamped
// to the end of the data (length <= buf.Len()-MetaLen): meta.DataSize tells the size
// of the whole data, meta.RangeOffset where the returned bytes start. Offsets are of the
// data as stored (compressed when meta.Flags has FlagGzip). An offset beyond the end
// of the data fails with ring.ErrRangeNotSatisfiable.
func readNeedleRange(ctx context.Context, c *ring.Client, peer ring.Peer, fid FileID, offset, length uint64, buf ring.Buffer) (Meta, int, error) {
	t, err := submitReadRange(ctx, c, peer, fid, offset, length, buf)
	if err != nil {
		return Meta{}, 0, err
	}
	return waitReadNeedle(ctx, t, buf)
}

func waitReadNeedle(ctx context.Context, t ring.Ticket, buf ring.Buffer) (Meta, int, error) {
	res, err := t.Wait(ctx)
	if err != nil {
		return Meta{}, 0, err
	}
	m, data, err := Decode(buf, res)
	if err != nil {
		return Meta{}, 0, err
	}
	return m, len(data), nil
}
