package needle

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/seaweed-ring/seaweed-ring/go-client/ring"
)

// ringJob is one needle read on the ring: the first READ_NEEDLE into buf, then finish.
type ringJob struct {
	q    Request
	id   FileID
	idx  int
	c    *ring.Client
	peer ring.Peer
	vs   string      // volume server host:port
	addr string      // its engine's address
	buf  ring.Buffer // the first request's buffer (owned until finish)
	off  uint64      // the first request's range
	len  uint64
	t    ring.Ticket
}

// request is the first READ_NEEDLE: always ranged, so that any needle fits (the metadata
// says the whole size; finish reads the rest).
func (j *ringJob) request() ring.Request {
	return j.withJWT(ReadRangeRequest(j.peer, j.id, j.off, j.len, j.buf))
}

// withJWT stamps the read's JWT on one of its READ_NEEDLEs (every submission: the reply
// overwrites it).
func (j *ringJob) withJWT(r ring.Request) ring.Request {
	if j.q.JWT != "" {
		// Cannot fail: the opcode is READ_NEEDLE, the length was checked by ringCarriesJWT
		// and the buffer holds MetaLen bytes (checkNeedleBuf's minimum).
		_ = SetJWT(&r, j.q.JWT)
	}
	return r
}

// chunkCap is the most data bytes one READ_NEEDLE of c asks for.
func (r *Reader) chunkCap(c *ring.Client) int {
	area := c.Layout().BufSize
	return int(min(uint64(r.opts.ChunkSize), area-MetaLen))
}

// prepare finds the session and peer and reserves the first buffer (waiting for space when
// wait, else failing with ring.ErrNoBufferSpace).
func (r *Reader) prepare(ctx context.Context, q Request, fid FileID, wait bool) (*ringJob, error) {
	c, err := r.session(ctx)
	if err != nil {
		return nil, err
	}
	j := &ringJob{q: q, id: fid, c: c}
	if j.peer, j.vs, j.addr, err = r.peer(ctx, c, q.VolumeServer); err != nil {
		return nil, err
	}
	capacity := r.chunkCap(c)
	if q.Ranged {
		j.off = uint64(q.Offset)
		if q.Length > 0 {
			capacity = int(min(int64(capacity), q.Length))
		}
	}
	j.len = uint64(capacity)
	if wait {
		j.buf, err = c.AllocBuffer(ctx, MetaLen+capacity)
	} else {
		j.buf, err = c.TryAllocBuffer(MetaLen + capacity)
	}
	if err != nil {
		if !errors.Is(err, ring.ErrNoBufferSpace) {
			r.noteRingErr(j, err)
		}
		return nil, err
	}
	return j, nil
}

// errNeedleChanged: the needle's metadata changed between two READ_NEEDLEs of one read (it
// was overwritten meanwhile). Not an answer: the read goes over HTTP.
var errNeedleChanged = fmt.Errorf("%w: needle changed while it was read range by range", ring.ErrProtocol)

// maxNeedleData is the largest data a SeaweedFS needle has (its data size is 32 bits).
const maxNeedleData = math.MaxUint32

// finish waits for the first READ_NEEDLE of j, reads the rest of what the request needs,
// and builds the Needle. It releases j.buf.
func (r *Reader) finish(ctx context.Context, j *ringJob) (*Needle, error) {
	defer j.buf.Release()
	res, err := j.t.Wait(ctx)
	retried := false
	if errors.Is(err, ring.ErrRangeNotSatisfiable) && (!j.q.Ranged || (j.off > 0 && !r.opts.KeepCompressed)) {
		// Not necessarily the answer: (a) an engine may refuse offset 0 of an empty needle:
		// ask without a range (an empty needle fits any buffer); (b) the range is of the
		// decompressed data if the needle is compressed, which can be longer than the
		// stored data: read from 0 to see the metadata.
		retried, j.off = true, 0
		var t ring.Ticket
		again := ReadRangeRequest(j.peer, j.id, 0, j.len, j.buf)
		if !j.q.Ranged {
			again = ReadRequest(j.peer, j.id, j.buf)
		}
		again = j.withJWT(again)
		t, err = j.c.Submit(ctx, &again)
		if err == nil {
			res, err = t.Wait(ctx)
		}
	}
	if err != nil {
		r.noteRingErr(j, err)
		return nil, err
	}
	m, data, err := Decode(j.buf, res)
	if err == nil && (m.RangeOffset != j.off || m.DataSize > maxNeedleData) {
		err = fmt.Errorf("%w: READ_NEEDLE of offset %d answered offset %d of %d bytes", ring.ErrProtocol, j.off, m.RangeOffset, m.DataSize)
	}
	total := m.DataSize
	if err == nil && j.off < total && uint64(len(data)) != min(j.len, total-j.off) {
		err = fmt.Errorf("%w: READ_NEEDLE of %d bytes at %d of %d returned %d", ring.ErrProtocol, j.len, j.off, total, len(data))
	}
	if err != nil {
		r.noteRingErr(j, err)
		return nil, err
	}
	n := &Needle{
		FileID:        j.id,
		Name:          string(m.Name),
		Mime:          string(m.Mime),
		ETag:          fmt.Sprintf("%08x", m.Checksum),
		Compressed:    m.Flags&FlagGzip != 0,
		ChunkManifest: m.Flags&FlagChunkManifest != 0,
		Flags:         m.Flags,
		Path:          PathRing,
	}
	if m.LastModified != 0 {
		n.LastModified = time.Unix(int64(m.LastModified), 0)
	}
	if n.Compressed && !r.opts.KeepCompressed {
		// As the volume server: the whole stored data, decompressed, then the range.
		stored := make([]byte, total)
		have := 0
		if j.off == 0 {
			have = copy(stored, data)
		}
		if err := r.readSpan(ctx, j, &m, stored[have:], uint64(have)); err != nil {
			return nil, err
		}
		content := stored
		if isGzip(stored) {
			if content, err = gunzip(stored); err != nil {
				return nil, fmt.Errorf("%w: stored gzip data does not decompress: %v", ring.ErrCorrupt, err)
			}
		} // else: flagged but not gzip, served as stored (util.DecompressData)
		n.Size = int64(len(content))
		if !j.q.Ranged {
			n.Data = content
			// A plain Go GET accepts gzip: the volume server sends the stored bytes gzip-encoded.
			n.ContentType = contentTypeLike(n.Mime, n.Name, content, isGzip(stored))
			return n, nil
		}
		if j.q.Offset >= n.Size {
			return nil, ring.ErrRangeNotSatisfiable
		}
		end := n.Size
		if j.q.Length > 0 && j.q.Length < end-j.q.Offset {
			end = j.q.Offset + j.q.Length
		}
		n.Data, n.Offset = content[j.q.Offset:end:end], j.q.Offset
		n.ContentType = contentTypeLike(n.Mime, n.Name, n.Data, false)
		return n, nil
	}
	n.Size, n.Offset = int64(total), int64(j.off)
	if j.q.Ranged && (j.off >= total || retried) {
		return nil, ring.ErrRangeNotSatisfiable
	}
	want := total - j.off
	if j.q.Ranged && j.q.Length > 0 {
		want = min(want, uint64(j.q.Length))
	}
	n.Data = dataBuf(&j.q, want)
	have := copy(n.Data, data)
	if err := r.readSpan(ctx, j, &m, n.Data[have:], j.off+uint64(have)); err != nil {
		return nil, err
	}
	// Stored bytes of a compressed needle: a GET that accepts gzip (KeepCompressed, or a
	// whole needle) gets them gzip-encoded if they are gzip; when the read does not show
	// the first stored bytes, assume so (SeaweedFS only flags gzip data).
	encoded := n.Compressed && (r.opts.KeepCompressed || !j.q.Ranged) && (j.off > 0 || len(n.Data) < 2 || isGzip(n.Data))
	n.ContentType = contentTypeLike(n.Mime, n.Name, n.Data, encoded)
	return n, nil
}

// readSpan reads stored data bytes [from, from+len(dst)) of j's needle into dst with
// ranged READ_NEEDLEs, up to ChunksInFlight at a time, each checked against the first
// answer's metadata. It uses j.buf and whatever more buffers are free (it never waits for
// buffer space while holding one, so readers cannot deadlock on the buffer area).
func (r *Reader) readSpan(ctx context.Context, j *ringJob, first *Meta, dst []byte, from uint64) error {
	if len(dst) == 0 {
		return nil
	}
	chunk := r.chunkCap(j.c)
	bufs := []ring.Buffer{j.buf}
	own0 := false // bufs[0] is not j.buf
	if j.buf.Len()-MetaLen < min(chunk, len(dst)) {
		// The first buffer was sized for a short range: take a full one if there is room.
		if b, err := j.c.TryAllocBuffer(MetaLen + min(chunk, len(dst))); err == nil {
			bufs[0], own0 = b, true
		}
	}
	per := bufs[0].Len() - MetaLen
	for len(bufs) < r.opts.ChunksInFlight && len(bufs)*per < len(dst) {
		b, err := j.c.TryAllocBuffer(MetaLen + per)
		if err != nil {
			break
		}
		bufs = append(bufs, b)
	}
	defer func() {
		for x, b := range bufs {
			if x > 0 || own0 {
				b.Release()
			}
		}
	}()
	reqs := make([]ring.Request, len(bufs))
	tickets := make([]ring.Ticket, len(bufs))
	lens := make([]int, len(bufs))
	for pos := 0; pos < len(dst); {
		k := 0
		for p := pos; k < len(bufs) && p < len(dst); k++ {
			lens[k] = min(bufs[k].Len()-MetaLen, len(dst)-p)
			reqs[k] = j.withJWT(ReadRangeRequest(j.peer, j.id, from+uint64(p), uint64(lens[k]), bufs[k]))
			p += lens[k]
		}
		n, err := j.c.SubmitBatch(ctx, reqs[:k], tickets)
		for x := 0; x < n; x++ {
			res, werr := tickets[x].Wait(ctx)
			if werr == nil {
				var m Meta
				var data []byte
				m, data, werr = Decode(bufs[x], res)
				switch {
				case werr != nil:
				case m.DataSize != first.DataSize || m.Checksum != first.Checksum || m.AppendAtNs != first.AppendAtNs ||
					m.Flags != first.Flags || m.RangeOffset != from+uint64(pos):
					werr = errNeedleChanged
				case len(data) != lens[x]:
					werr = fmt.Errorf("%w: READ_NEEDLE of %d bytes at %d returned %d", ring.ErrProtocol, lens[x], from+uint64(pos), len(data))
				default:
					pos += copy(dst[pos:], data)
				}
			}
			if werr != nil && err == nil {
				err = werr
			}
		}
		if err != nil {
			r.noteRingErr(j, err)
			return err
		}
	}
	return nil
}

// noteRingErr forgets what a ring error shows to be stale: the session (engine gone) or
// the peer handle and its resolved address (peer failures).
func (r *Reader) noteRingErr(j *ringJob, err error) {
	switch {
	case errors.Is(err, ring.ErrEngineUnavailable), errors.Is(err, ring.ErrClosed):
		r.dropSession(j.c, err)
	case errors.Is(err, ring.ErrPeerFailed), errors.Is(err, ring.ErrTimedOut), errors.Is(err, ring.ErrNoSuchPeer):
		r.mu.Lock()
		if r.c == j.c && r.peers[j.addr] != 0 {
			delete(r.peers, j.addr)
		}
		delete(r.addrs, j.vs)
		r.mu.Unlock()
	}
}
