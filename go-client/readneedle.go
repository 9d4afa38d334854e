package swring

import (
	"context"
	"encoding/binary"
	"fmt"
	"math"
)

// What a READ_NEEDLE leaves in its buffer (ring-proto needle.rs): the needle's metadata in
// the first NeedleMetaLen bytes, the data after them.
//
//	buf + 0              NeedleMeta (encoded, at most 64+255+255 bytes)
//	buf + NeedleMetaLen  data bytes (the CQE result says how many)
//
//	NeedleMeta, little-endian:
//	 0 data_size u64      size of the needle's whole data as stored (compressed if gzip)
//	 8 range_offset u64   data offset of the first byte returned
//	16 last_modified u64  Unix seconds, 0 when the needle has none
//	24 append_at_ns u64   when the volume server appended it (volume version 3), else 0
//	32 checksum u32       the stored CRC-32C (Castagnoli) of the whole data
//	36 flags u8           the needle's flag bits as stored (NeedleFlag*)
//	37 name_len u8        bytes of name at 64
//	38 mime_len u8        bytes of mime type at 64 + name_len
//	39 version u8         the volume's needle version (2 or 3)
//	40 ttl [2]u8          count, unit as stored; zero when none
//	42 reserved           zero up to 64
//	64 name, mime
const (
	// NeedleMetaLen is how many bytes at the start of a READ_NEEDLE buffer hold the
	// needle's metadata; the data follows. A READ_NEEDLE buffer is at least this long.
	NeedleMetaLen = 1024

	needleMetaFixed = 64

	metaDataSize     = 0
	metaRangeOffset  = 8
	metaLastModified = 16
	metaAppendAtNs   = 24
	metaChecksum     = 32
	metaFlags        = 36
	metaNameLen      = 37
	metaMimeLen      = 38
	metaVersion      = 39
	metaTTL          = 40
	metaReserved     = 42
)

// Needle flag bits (SeaweedFS weed/storage/needle), as NeedleMeta.Flags carries them.
const (
	// NeedleFlagGzip: the data is gzip-compressed as stored; the volume server's HTTP GET
	// decompresses it for clients that do not accept gzip.
	NeedleFlagGzip uint8 = 0x01
	// NeedleFlagHasName: the needle has a file name.
	NeedleFlagHasName uint8 = 0x02
	// NeedleFlagHasMime: the needle has a MIME type.
	NeedleFlagHasMime uint8 = 0x04
	// NeedleFlagHasLastModified: the needle has a last-modified time.
	NeedleFlagHasLastModified uint8 = 0x08
	// NeedleFlagHasTTL: the needle has a time to live.
	NeedleFlagHasTTL uint8 = 0x10
	// NeedleFlagHasPairs: the needle has name/value pairs (which the HTTP GET sends as
	// headers; READ_NEEDLE does not carry them).
	NeedleFlagHasPairs uint8 = 0x20
	// NeedleFlagChunkManifest: the data is a chunk manifest (a JSON list of other file
	// ids), not file content.
	NeedleFlagChunkManifest uint8 = 0x80
)

// NeedleMeta is the metadata a READ_NEEDLE leaves before the data (ring-proto NeedleMeta).
// Name and Mime alias the buffer they were decoded from: copy them before the buffer is
// released or reused.
type NeedleMeta struct {
	// DataSize is the size of the needle's whole data as stored (compressed when Flags has
	// NeedleFlagGzip).
	DataSize uint64
	// RangeOffset is the data offset of the first byte returned.
	RangeOffset uint64
	// LastModified is in Unix seconds, 0 when the needle has none.
	LastModified uint64
	// AppendAtNs is when the volume server appended the needle (volume version 3), else 0.
	AppendAtNs uint64
	// Checksum is the stored CRC-32C (Castagnoli) of the whole data.
	Checksum uint32
	// Flags are the needle's flag bits as stored (NeedleFlagGzip, ...).
	Flags uint8
	// Version is the volume's needle version (2 or 3).
	Version uint8
	// TTL is the needle's time to live as stored (count, unit); zero when none.
	TTL [2]byte
	// Name is the file name (at most 255 bytes).
	Name []byte
	// Mime is the MIME type (at most 255 bytes).
	Mime []byte
}

// DecodeNeedleMeta decodes and checks the metadata at the start of b exactly as ring-proto's
// NeedleMeta::decode does: at least the 64-byte fixed part, name and mime inside b, reserved
// bytes zero; bytes after the name and mime are ignored. Name and Mime alias b. Errors wrap
// ErrProtocol (the engine wrote what the protocol does not allow).
func DecodeNeedleMeta(b []byte) (NeedleMeta, error) {
	if len(b) < needleMetaFixed {
		return NeedleMeta{}, fmt.Errorf("%w: needle metadata is %d bytes, shorter than its %d-byte fixed part", ErrProtocol, len(b), needleMetaFixed)
	}
	nameLen, mimeLen := int(b[metaNameLen]), int(b[metaMimeLen])
	want := needleMetaFixed + nameLen + mimeLen
	if want > len(b) {
		return NeedleMeta{}, fmt.Errorf("%w: needle metadata names %d bytes of name and mime but carries %d", ErrProtocol, want, len(b))
	}
	for _, x := range b[metaReserved:needleMetaFixed] {
		if x != 0 {
			return NeedleMeta{}, fmt.Errorf("%w: needle metadata reserved bytes are not zero", ErrProtocol)
		}
	}
	le := binary.LittleEndian
	return NeedleMeta{
		DataSize:     le.Uint64(b[metaDataSize:]),
		RangeOffset:  le.Uint64(b[metaRangeOffset:]),
		LastModified: le.Uint64(b[metaLastModified:]),
		AppendAtNs:   le.Uint64(b[metaAppendAtNs:]),
		Checksum:     le.Uint32(b[metaChecksum:]),
		Flags:        b[metaFlags],
		Version:      b[metaVersion],
		TTL:          [2]byte{b[metaTTL], b[metaTTL+1]},
		Name:         b[needleMetaFixed : needleMetaFixed+nameLen : needleMetaFixed+nameLen],
		Mime:         b[needleMetaFixed+nameLen : want : want],
	}, nil
}

// appendNeedleMeta appends the encoding of m (name and mime cut to 255 bytes), as
// ring-proto's NeedleMeta::encode_into does. The engine writes it; tests and fake engines
// use this.
func appendNeedleMeta(dst []byte, m *NeedleMeta) []byte {
	name, mime := m.Name[:min(len(m.Name), 255)], m.Mime[:min(len(m.Mime), 255)]
	le := binary.LittleEndian
	dst = le.AppendUint64(dst, m.DataSize)
	dst = le.AppendUint64(dst, m.RangeOffset)
	dst = le.AppendUint64(dst, m.LastModified)
	dst = le.AppendUint64(dst, m.AppendAtNs)
	dst = le.AppendUint32(dst, m.Checksum)
	dst = append(dst, m.Flags, byte(len(name)), byte(len(mime)), m.Version, m.TTL[0], m.TTL[1])
	var zero [needleMetaFixed - metaReserved]byte
	dst = append(dst, zero[:]...)
	dst = append(dst, name...)
	return append(dst, mime...)
}

// ReadNeedleRequest returns the READ_NEEDLE of the whole data of fid from the volume server
// whose engine is peer, into buf (metadata, then up to buf.Len()-NeedleMetaLen data bytes),
// for Submit or SubmitBatch. Decode the completion with DecodeReadNeedle. The engine
// refuses a needle whose data does not fit; ReadNeedleRangeRequest reads any part.
func ReadNeedleRequest(peer Peer, fid FileID, buf Buffer) Request {
	return Request{
		Opcode: OpReadNeedle,
		Peer:   uint32(peer),
		Aux:    fid.VolumeID,
		Buf:    buf,
		BufLen: uint32(min(uint64(buf.Len()), math.MaxUint32)),
		Args:   [4]uint64{fid.NeedleID, uint64(fid.Cookie), 0, 0},
	}
}

// ReadNeedleRangeRequest is ReadNeedleRequest for length bytes of the data from offset
// (FlagReadNeedleRange): the engine returns fewer when the data ends first, and
// ErrRangeNotSatisfiable when offset is beyond its end. length must not exceed
// buf.Len()-NeedleMetaLen.
func ReadNeedleRangeRequest(peer Peer, fid FileID, offset, length uint64, buf Buffer) Request {
	r := ReadNeedleRequest(peer, fid, buf)
	r.Flags = FlagReadNeedleRange
	r.Args[2], r.Args[3] = offset, length
	return r
}

// MaxNeedleJWTLen is the longest read JWT a READ_NEEDLE carries (SeaweedFS's are about
// 150 bytes); SetNeedleJWT refuses longer ones.
const MaxNeedleJWTLen = 1024

// needleJWTLenShift: args[1] of READ_NEEDLE is the cookie | the JWT's length << 32.
const needleJWTLenShift = 32

// SetNeedleJWT makes READ_NEEDLE r carry jwt, the read token SeaweedFS's master handed out
// for the file id (what the volume server's GET takes as "Authorization: Bearer"): it
// writes jwt at the start of r.Buf (the metadata area, which the reply overwrites) and its
// length into the entry, for the serving engine to verify (SPEC.md §15). Call it after
// building r and before every submission of it. An empty jwt clears it.
func SetNeedleJWT(r *Request, jwt string) error {
	if r.Opcode != OpReadNeedle {
		return fmt.Errorf("%w: a JWT on opcode %d (only READ_NEEDLE carries one)", ErrInvalidEntry, r.Opcode)
	}
	if len(jwt) > MaxNeedleJWTLen {
		return fmt.Errorf("%w: read JWT of %d bytes, at most MaxNeedleJWTLen = %d", ErrInvalidEntry, len(jwt), MaxNeedleJWTLen)
	}
	b := r.Buf.Bytes()
	if len(b) < NeedleMetaLen {
		return fmt.Errorf("%w: READ_NEEDLE buffer of %d bytes (at least NeedleMetaLen = %d)", ErrInvalidEntry, len(b), NeedleMetaLen)
	}
	copy(b, jwt)
	r.Args[1] = r.Args[1]&math.MaxUint32 | uint64(len(jwt))<<needleJWTLenShift
	return nil
}

// checkNeedleBuf checks what the engine would refuse with invalid-entry or out-of-bounds,
// so that a bad call does not count as an invalid entry of the session.
func checkNeedleBuf(buf Buffer, ranged bool, length uint64) error {
	n := buf.Len()
	if !buf.Valid() || n < NeedleMetaLen || uint64(n) > math.MaxInt32 {
		return fmt.Errorf("%w: READ_NEEDLE buffer of %d bytes (at least NeedleMetaLen = %d, at most 2^31-1)", ErrInvalidEntry, n, NeedleMetaLen)
	}
	if ranged && length > uint64(n-NeedleMetaLen) {
		return fmt.Errorf("%w: READ_NEEDLE range of %d bytes, the buffer holds %d data bytes", ErrOutOfBounds, length, n-NeedleMetaLen)
	}
	return nil
}

// SubmitReadNeedle submits the READ_NEEDLE of ReadNeedleRequest and returns at once; Wait on
// the ticket for the data length, then decode the buffer with DecodeReadNeedle.
func (c *Client) SubmitReadNeedle(ctx context.Context, peer Peer, fid FileID, buf Buffer) (Ticket, error) {
	if err := checkNeedleBuf(buf, false, 0); err != nil {
		return Ticket{}, err
	}
	r := ReadNeedleRequest(peer, fid, buf)
	return c.Submit(ctx, &r)
}

// SubmitReadNeedleRange submits the ranged READ_NEEDLE of ReadNeedleRangeRequest.
func (c *Client) SubmitReadNeedleRange(ctx context.Context, peer Peer, fid FileID, offset, length uint64, buf Buffer) (Ticket, error) {
	if err := checkNeedleBuf(buf, true, length); err != nil {
		return Ticket{}, err
	}
	r := ReadNeedleRangeRequest(peer, fid, offset, length, buf)
	return c.Submit(ctx, &r)
}

// DecodeReadNeedle decodes what a completed READ_NEEDLE with result n (the data length)
// left in buf: the metadata (DecodeNeedleMeta; Name and Mime alias buf) and the data,
// buf.Bytes()[NeedleMetaLen:][:n], both read in place. Errors wrap ErrProtocol.
func DecodeReadNeedle(buf Buffer, n int32) (NeedleMeta, []byte, error) {
	b := buf.Bytes()
	if len(b) < NeedleMetaLen || n < 0 || int(n) > len(b)-NeedleMetaLen {
		return NeedleMeta{}, nil, fmt.Errorf("%w: READ_NEEDLE result %d for a %d-byte buffer", ErrProtocol, n, len(b))
	}
	m, err := DecodeNeedleMeta(b[:NeedleMetaLen])
	if err != nil {
		return NeedleMeta{}, nil, err
	}
	return m, b[NeedleMetaLen : NeedleMetaLen+int(n) : NeedleMetaLen+int(n)], nil
}

// ReadNeedle reads the whole data of needle fid from the volume server whose engine is peer
// (a handle from ConnectPeer for that engine's UCX address) into buf, zero copy: the engine
// writes the needle's metadata and data straight into the shared buffer. It returns the
// metadata and the data length n; the data is buf.Bytes()[NeedleMetaLen:][:n] and
// meta.Name/Mime alias buf. The data is returned as stored: gzip-compressed when
// meta.Flags has NeedleFlagGzip. buf must hold NeedleMetaLen bytes plus the whole data
// (ReadNeedleRange reads larger needles in parts; NeedleReader does it for you).
//
// Result errors: ErrNoSuchVolume, ErrNoSuchNeedle, ErrNeedleDeleted, ErrCookieMismatch (all
// matching ErrNeedleNotFound), ErrCorrupt; ErrNoSuchPeer, ErrPeerFailed, ErrTimedOut (the
// peer engine); ErrInvalidEntry, ErrOutOfBounds (the buffer); and the session errors of Do.
// As with Send, after a ctx error leave buf alone and Release it: it is reused only once
// the engine completed the request.
func (c *Client) ReadNeedle(ctx context.Context, peer Peer, fid FileID, buf Buffer) (NeedleMeta, int, error) {
	t, err := c.SubmitReadNeedle(ctx, peer, fid, buf)
	if err != nil {
		return NeedleMeta{}, 0, err
	}
	return waitReadNeedle(ctx, t, buf)
}

// ReadNeedleRange is ReadNeedle for at most length bytes of the data from offset, clamped
// to the end of the data (length <= buf.Len()-NeedleMetaLen): meta.DataSize tells the size
// of the whole data, meta.RangeOffset where the returned bytes start. Offsets are of the
// data as stored (compressed when meta.Flags has NeedleFlagGzip). An offset beyond the end
// of the data fails with ErrRangeNotSatisfiable.
func (c *Client) ReadNeedleRange(ctx context.Context, peer Peer, fid FileID, offset, length uint64, buf Buffer) (NeedleMeta, int, error) {
	t, err := c.SubmitReadNeedleRange(ctx, peer, fid, offset, length, buf)
	if err != nil {
		return NeedleMeta{}, 0, err
	}
	return waitReadNeedle(ctx, t, buf)
}

func waitReadNeedle(ctx context.Context, t Ticket, buf Buffer) (NeedleMeta, int, error) {
	res, err := t.Wait(ctx)
	if err != nil {
		return NeedleMeta{}, 0, err
	}
	m, data, err := DecodeReadNeedle(buf, res)
	if err != nil {
		return NeedleMeta{}, 0, err
	}
	return m, len(data), nil
}
