package main

// Needle reads for the bench's needle.read.<size>.<path> scenarios (bench/README.md): one
// needle of a real volume server, read over the rings (READ_NEEDLE to the engine serving
// the volume directory) or over HTTP (the volume server's GET), one read per sample.
//
// Both paths end with the needle's bytes in ordinary Go memory, a []byte allocated once and
// reused, so that they do the same work for the caller:
//
//   - ring (block needle-ring): the low-level client API, no Reader:
//     Submit of needle.ReadRangeRequest(peer, fid, 0, size) into a session Buffer allocated once (the
//     engine writes the metadata and the data there, zero copy from the ring's point of
//     view), Ticket.Wait, Decode (metadata checked: whole needle, not gzip), then
//     copy the data out of the shared buffer into the reused []byte. The copy is in the
//     sample: a caller that hands the bytes on (a FUSE read, an S3 response) copies them
//     out of the shared buffer too, or holds the Buffer, which Reader does not.
//   - http (block needle-http): a keep-alive http.Client (one idle connection kept to the
//     volume server) does GET http://<volume>/<fid> (Client.Get, a new request each time,
//     as a SeaweedFS client does), and the body is read into a reused []byte until EOF
//     (so the connection goes back to the pool), status and length checked.
//
// With -conc N (the needle.read.<size>.<path>.cN scenarios, concurrent.go) each of N
// goroutines does the same with a reader of its own: its own session Buffer, Request and
// []byte on the one session (ring.Client) of the process, or its own body buffer on one
// http.Client that keeps N idle connections. Each reader reads the needle once, all at
// once, before the first such block, its bytes compared with the verified ones.
//
// Manual comparisons (not bench scenarios): block reader-ring and reader-http read the same
// needle through needle.Reader (Only: PathRing / PathHTTP), which allocates the
// returned Needle and its Data on every read; the block answers' mallocs and alloc_bytes
// show what that costs. Block needle-ring-nocopy is needle-ring without the copy out of the
// shared buffer (the data stays there), to show what the copy costs.
//
// Before the first block (and before ringlat prints its ready line) the needle is read once
// over HTTP and, for the ring path, once over the ring: the HTTP bytes must match the
// -sha256 the weed host printed at upload, and the ring bytes the HTTP bytes.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/seaweed-ring/seaweed-ring/go-client/needle"
	"github.com/seaweed-ring/seaweed-ring/go-client/ring"
)

// needleTarget is the needle a needle-mode ringlat reads.
type needleTarget struct {
	volume string // volume server host:port
	fid    string
	size   int    // its data length
	sha256 string // hex, of the uploaded bytes
	peer   string // UCX address of the engine serving the volume directory ("" = HTTP only)
}

// needleHTTP reads the needle with a keep-alive HTTP GET into a reused buffer.
type needleHTTP struct {
	client *http.Client
	url    string
	buf    []byte // size+1: a longer body is noticed
	size   int
}

// newNeedleHTTPClient is a keep-alive client that keeps conns idle connections to the
// volume server (one per goroutine that reads through it: with fewer, concurrent GETs
// would close and reopen connections).
func newNeedleHTTPClient(conns int) *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = conns
	tr.MaxIdleConns = max(tr.MaxIdleConns, conns)
	tr.IdleConnTimeout = 0 // keep the connections for the whole run
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}
}

func newNeedleHTTP(t *needleTarget, client *http.Client) *needleHTTP {
	return &needleHTTP{
		client: client,
		url:    "http://" + t.volume + "/" + t.fid,
		buf:    make([]byte, t.size+1),
		size:   t.size,
	}
}

func (h *needleHTTP) read() error {
	resp, err := h.client.Get(h.url)
	if err != nil {
		return err
	}
	n := 0
	for err == nil && n < len(h.buf) {
		var m int
		m, err = resp.Body.Read(h.buf[n:])
		n += m
	}
	resp.Body.Close()
	switch {
	case resp.StatusCode != http.StatusOK:
		return fmt.Errorf("GET %s: %s", h.url, resp.Status)
	case err != nil && err != io.EOF:
		return fmt.Errorf("GET %s: reading the body: %w", h.url, err)
	case n != h.size:
		return fmt.Errorf("GET %s: %d bytes, expected %d", h.url, n, h.size)
	}
	return nil
}

func (h *needleHTTP) data() []byte { return h.buf[:h.size] }

func (h *needleHTTP) close() { h.client.CloseIdleConnections() }

// needleRing reads the needle with READ_NEEDLE into a reused session buffer and copies the
// data out into a reused []byte.
type needleRing struct {
	c    *ring.Client
	peer ring.Peer
	fid  needle.FileID
	buf  ring.Buffer
	req  ring.Request // the READ_NEEDLE of the whole needle into buf, submitted every read
	out  []byte
}

func newNeedleRing(ctx context.Context, c *ring.Client, t *needleTarget) (*needleRing, error) {
	fid, err := needle.ParseFileID(t.fid)
	if err != nil {
		return nil, err
	}
	peer, err := c.ConnectPeer(ctx, t.peer)
	if err != nil {
		return nil, fmt.Errorf("connecting to the engine at %s: %w", t.peer, err)
	}
	buf, err := c.AllocBuffer(ctx, needle.MetaLen+t.size)
	if err != nil {
		return nil, fmt.Errorf("a %d-byte session buffer: %w", needle.MetaLen+t.size, err)
	}
	return newNeedleRingOn(c, peer, fid, buf, t.size), nil
}

// another is a reader of the same needle on the same session and peer, with a buffer of its
// own (for another goroutine). It does not wait for buffer space: a session whose buffer
// area cannot hold one buffer per goroutine is an error, not a hang.
func (r *needleRing) another() (*needleRing, error) {
	buf, err := r.c.TryAllocBuffer(r.buf.Len())
	if err != nil {
		return nil, fmt.Errorf("another %d-byte session buffer: %w", r.buf.Len(), err)
	}
	return newNeedleRingOn(r.c, r.peer, r.fid, buf, len(r.out)), nil
}

func newNeedleRingOn(c *ring.Client, peer ring.Peer, fid needle.FileID, buf ring.Buffer, size int) *needleRing {
	req := needle.ReadRangeRequest(peer, fid, 0, uint64(size), buf)
	return &needleRing{c: c, peer: peer, fid: fid, buf: buf, req: req, out: make([]byte, size)}
}

func (r *needleRing) read(ctx context.Context) error { return r.readInto(ctx, true) }

// readInto is read, copying the data out only when copyOut (the manual needle-ring-nocopy
// block leaves it in the shared buffer, to show what the copy costs).
func (r *needleRing) readInto(ctx context.Context, copyOut bool) error {
	size := uint64(len(r.out))
	t, err := r.c.Submit(ctx, &r.req)
	if err != nil {
		return err
	}
	res, err := t.Wait(ctx)
	if err != nil {
		return err
	}
	m, data, err := needle.Decode(r.buf, res)
	if err != nil {
		return err
	}
	if uint64(len(data)) != size || m.DataSize != size || m.RangeOffset != 0 || m.Flags&needle.FlagGzip != 0 {
		return fmt.Errorf("READ_NEEDLE %s: %d bytes from %d of %d (flags %#x), expected the whole %d uncompressed",
			r.fid, len(data), m.RangeOffset, m.DataSize, m.Flags, size)
	}
	if copyOut {
		copy(r.out, data)
	}
	return nil
}

// needleReaderOp reads the needle through needle.Reader (manual comparison).
type needleReaderOp struct {
	r      *needle.Reader
	volume string
	fid    string
	size   int
}

func (o *needleReaderOp) read(ctx context.Context) error {
	n, err := o.r.Read(ctx, o.volume, o.fid)
	if err != nil {
		return err
	}
	if len(n.Data) != o.size {
		return fmt.Errorf("Reader %s: %d bytes over %v, expected %d", o.fid, len(n.Data), n.Path, o.size)
	}
	return nil
}

// verifyNeedle reads the needle once over HTTP (and once over the ring, when ring is set)
// and checks the bytes against the upload's hash and each other.
func verifyNeedle(ctx context.Context, t *needleTarget, h *needleHTTP, ring *needleRing) error {
	if err := h.read(); err != nil {
		return fmt.Errorf("verifying %s over HTTP: %w", t.fid, err)
	}
	sum := sha256.Sum256(h.data())
	if got := hex.EncodeToString(sum[:]); got != t.sha256 {
		return fmt.Errorf("verifying %s: the HTTP GET returned bytes with SHA-256 %s, the upload had %s", t.fid, got, t.sha256)
	}
	if ring == nil {
		return nil
	}
	if err := ring.read(ctx); err != nil {
		return fmt.Errorf("verifying %s over the ring: %w", t.fid, err)
	}
	return sameBytes(t.fid, "the ring", ring.out, h.data())
}

// sameBytes says where got, read by path, first differs from the verified HTTP bytes want.
func sameBytes(fid, path string, got, want []byte) error {
	if bytes.Equal(got, want) {
		return nil
	}
	i := 0
	for i < len(got) && i < len(want) && got[i] == want[i] {
		i++
	}
	return fmt.Errorf("verifying %s: %s returned other bytes than the HTTP GET (first difference at byte %d)", fid, path, i)
}

// needleOps are the needle samples of one needle-mode ringlat.
type needleOps struct {
	target *needleTarget
	http   *needleHTTP
	ring   *needleRing // nil without an engine session
	socket string
	// needle.Readers for the manual reader-* blocks, made on first use.
	readerRing, readerHTTP *needleReaderOp
	// conc > 0 (-conc): needle-ring and needle-http blocks run conc goroutines, each with
	// a reader of its own (concurrent.go), made and checked on the first such block.
	conc     int
	concRing []*needleRing
	concHTTP []*needleHTTP
	hists    []*histogram // one per goroutine, reused block after block
}

func newNeedleOps(ctx context.Context, c *ring.Client, socket string, t *needleTarget, conc int) (*needleOps, error) {
	o := &needleOps{target: t, http: newNeedleHTTP(t, newNeedleHTTPClient(1)), socket: socket, conc: conc}
	if c != nil && t.peer != "" {
		r, err := newNeedleRing(ctx, c, t)
		if err != nil {
			return nil, err
		}
		o.ring = r
	}
	if err := verifyNeedle(ctx, t, o.http, o.ring); err != nil {
		return nil, err
	}
	return o, nil
}

// sample returns the sample function of a needle block kind.
func (o *needleOps) sample(ctx context.Context, kind string) (func() error, error) {
	switch kind {
	case "needle-http":
		return o.http.read, nil
	case "needle-ring":
		if o.ring == nil {
			return nil, errors.New("needle-ring: this ringlat has no engine session and peer (-no-engine or no -peer)")
		}
		return func() error { return o.ring.read(ctx) }, nil
	case "needle-ring-nocopy":
		if o.ring == nil {
			return nil, errors.New("needle-ring-nocopy: this ringlat has no engine session and peer (-no-engine or no -peer)")
		}
		return func() error { return o.ring.readInto(ctx, false) }, nil
	case "reader-ring":
		if o.ring == nil {
			return nil, errors.New("reader-ring: this ringlat has no engine and peer (-no-engine or no -peer)")
		}
		if o.readerRing == nil {
			o.readerRing = &needleReaderOp{r: needle.NewReader(needle.Options{
				EngineSocket: o.socket,
				EngineAddrs:  map[string]string{o.target.volume: o.target.peer},
				Only:         needle.PathRing,
			}), volume: o.target.volume, fid: o.target.fid, size: o.target.size}
		}
		return func() error { return o.readerRing.read(ctx) }, nil
	case "reader-http":
		if o.readerHTTP == nil {
			o.readerHTTP = &needleReaderOp{r: needle.NewReader(needle.Options{Only: needle.PathHTTP}),
				volume: o.target.volume, fid: o.target.fid, size: o.target.size}
		}
		return func() error { return o.readerHTTP.read(ctx) }, nil
	}
	return nil, fmt.Errorf("unknown needle block %q", kind)
}

// concSamples returns the o.conc sample functions of a concurrent needle block, one per
// goroutine. The first call for a kind makes the readers and reads the needle once with
// each, all at once (which also opens the HTTP path's connections), checking the bytes
// against the verified ones.
func (o *needleOps) concSamples(ctx context.Context, kind string) ([]func() error, error) {
	var samples []func() error
	var data []func() []byte
	fresh := false
	switch kind {
	case "needle-http":
		if o.concHTTP == nil {
			client := newNeedleHTTPClient(o.conc)
			for range o.conc {
				o.concHTTP = append(o.concHTTP, newNeedleHTTP(o.target, client))
			}
			fresh = true
		}
		for _, h := range o.concHTTP {
			samples, data = append(samples, h.read), append(data, h.data)
		}
	case "needle-ring":
		if o.ring == nil {
			return nil, errors.New("needle-ring: this ringlat has no engine session and peer (-no-engine or no -peer)")
		}
		if o.concRing == nil {
			o.concRing = []*needleRing{o.ring}
			for len(o.concRing) < o.conc {
				r, err := o.ring.another()
				if err != nil {
					return nil, fmt.Errorf("-conc %d: %w", o.conc, err)
				}
				o.concRing = append(o.concRing, r)
			}
			fresh = true
		}
		for _, r := range o.concRing {
			samples = append(samples, func() error { return r.read(ctx) })
			data = append(data, func() []byte { return r.out })
		}
	default:
		return nil, fmt.Errorf("block %s does not run concurrently: only needle-ring and needle-http do", kind)
	}
	if o.hists == nil {
		for range o.conc {
			o.hists = append(o.hists, newHistogram())
		}
	}
	if !fresh {
		return samples, nil
	}
	errs := make([]error, len(samples))
	var wg sync.WaitGroup
	for i := range samples {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if errs[i] = samples[i](); errs[i] == nil {
				errs[i] = sameBytes(o.target.fid, fmt.Sprintf("%s reader %d", kind, i), data[i](), o.http.data())
			}
		}()
	}
	wg.Wait()
	return samples, errors.Join(errs...)
}

func (o *needleOps) close() {
	o.http.close()
	for _, r := range []*needleReaderOp{o.readerRing, o.readerHTTP} {
		if r != nil {
			r.r.Close()
		}
	}
	for _, r := range o.concHTTP {
		r.close()
	}
	for _, r := range o.concRing[min(1, len(o.concRing)):] { // [0] is o.ring
		r.buf.Release()
	}
	if o.ring != nil {
		o.ring.buf.Release()
	}
}
