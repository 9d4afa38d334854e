package needle

import (
	"bytes"
	"errors"
	"math"
	"testing"

	"github.com/seaweed-ring/seaweed-ring/go-client/ring"
)

func TestDecodeNeedleMetaChecks(t *testing.T) {
	good := appendMeta(nil, &Meta{Name: []byte("n"), Mime: []byte("mm")})
	if _, err := DecodeMeta(good); err != nil {
		t.Fatal(err)
	}
	// As ring-proto's lengths_are_checked.
	b := appendMeta(nil, &Meta{})
	b[metaNameLen] = 1
	if _, err := DecodeMeta(b); !errors.Is(err, ring.ErrProtocol) {
		t.Errorf("name past the end: %v", err)
	}
	if _, err := DecodeMeta(b[:63]); !errors.Is(err, ring.ErrProtocol) {
		t.Errorf("short: %v", err)
	}
	b = appendMeta(nil, &Meta{})
	b[50] = 1
	if _, err := DecodeMeta(b); !errors.Is(err, ring.ErrProtocol) {
		t.Errorf("reserved: %v", err)
	}
	// Bytes after name and mime are ignored; name and mime are cut to 255 on encoding.
	long := bytes.Repeat([]byte("x"), 300)
	b = appendMeta(nil, &Meta{Name: long, Mime: long})
	b = append(b, 0xff, 0xff)
	m, err := DecodeMeta(b)
	if err != nil || len(m.Name) != 255 || len(m.Mime) != 255 {
		t.Errorf("long name: %d %d %v", len(m.Name), len(m.Mime), err)
	}
}

// FuzzDecodeNeedleMeta: DecodeMeta never panics, accepts exactly what ring-proto's
// decode accepts, and what it accepts re-encodes to the bytes it read.
func FuzzDecodeNeedleMeta(f *testing.F) {
	f.Add(appendMeta(nil, &Meta{DataSize: 5, Name: []byte("a.txt"), Mime: []byte("text/plain"), Flags: 6}))
	f.Add(make([]byte, 64))
	f.Add(make([]byte, 63))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := DecodeMeta(b)
		ok := len(b) >= 64 && 64+int(b[37])+int(b[38]) <= len(b) && bytes.Count(b[42:64], []byte{0}) == 22
		if ok != (err == nil) {
			t.Fatalf("decode(% x): %v, want ok=%v", b, err, ok)
		}
		if err != nil {
			if !errors.Is(err, ring.ErrProtocol) {
				t.Fatalf("error %v does not match ErrProtocol", err)
			}
			return
		}
		enc := appendMeta(nil, &m)
		if !bytes.Equal(enc, b[:len(enc)]) {
			t.Fatalf("re-encoding % x differs from % x", enc, b[:len(enc)])
		}
	})
}

// readNeedleSetup: an in-process fake engine serving store, a session and a peer handle.
func readNeedleSetup(t *testing.T, mod func(*fakeEngine)) (*fakeEngine, *needleStore, *ring.Client, ring.Peer) {
	t.Helper()
	store := newNeedleStore()
	e, path := startFake(t, func(e *fakeEngine) {
		e.Needles = store
		if mod != nil {
			mod(e)
		}
	})
	c := dialT(t, path, ring.WithBufferSize(4<<20))
	return e, store, c, connectPeer(t, c, "127.0.0.1:13337")
}

func TestClientReadNeedle(t *testing.T) {
	e, store, c, p := readNeedleSetup(t, nil)
	ctx := testCtx(t)
	content := make([]byte, 10000)
	fillPattern(content, 1)
	fid := FileID{VolumeID: 7, NeedleID: 0x1234, Cookie: 0xdeadbeef}
	sn := store.put(fid, content, needleOpts{name: "a.bin", mime: "application/x-test", lastModified: 1700000000})
	buf, err := c.AllocBuffer(ctx, MetaLen+16384)
	if err != nil {
		t.Fatal(err)
	}
	defer buf.Release()

	m, n, err := readNeedle(ctx, c, p, fid, buf)
	if err != nil || n != len(content) || !bytes.Equal(buf.Bytes()[MetaLen:MetaLen+n], content) {
		t.Fatalf("Read: %d, %v", n, err)
	}
	if m.DataSize != uint64(len(content)) || m.RangeOffset != 0 || string(m.Name) != "a.bin" || string(m.Mime) != "application/x-test" ||
		m.LastModified != 1700000000 || m.Checksum != sn.meta.Checksum || m.Version != 3 ||
		m.Flags != flagHasName|flagHasMime|flagHasLastModified {
		t.Errorf("meta %+v", m)
	}

	for _, r := range []struct{ off, n, want uint64 }{{0, 100, 100}, {9990, 100, 10}, {5000, 0, 0}, {10000, 10, 0}, {1, 16384, 9999}} {
		m, n, err := readNeedleRange(ctx, c, p, fid, r.off, r.n, buf)
		if err != nil || uint64(n) != r.want || m.RangeOffset != r.off || m.DataSize != 10000 ||
			!bytes.Equal(buf.Bytes()[MetaLen:MetaLen+n], content[r.off:r.off+r.want]) {
			t.Errorf("range %+v: %d, %+v, %v", r, n, m, err)
		}
	}
	if _, _, err := readNeedleRange(ctx, c, p, fid, 10001, 1, buf); !errors.Is(err, ring.ErrRangeNotSatisfiable) {
		t.Errorf("range past the end: %v", err)
	}

	// Answers about the needle.
	store.put(FileID{7, 1, 1}, []byte("x"), needleOpts{})
	store.update(FileID{7, 1, 1}, func(n *storedNeedle) { n.deleted = true })
	store.put(FileID{7, 2, 1}, []byte("x"), needleOpts{})
	store.update(FileID{7, 2, 1}, func(n *storedNeedle) { n.corrupt = true })
	for _, x := range []struct {
		fid      FileID
		want     error
		notFound bool
	}{
		{FileID{8, 1, 1}, ring.ErrNoSuchVolume, true},
		{FileID{7, 99, 1}, ring.ErrNoSuchNeedle, true},
		{FileID{7, 1, 1}, ring.ErrNeedleDeleted, true},
		{FileID{7, 0x1234, 1}, ring.ErrCookieMismatch, true},
		{FileID{7, 2, 1}, ring.ErrCorrupt, false},
	} {
		_, _, err := readNeedle(ctx, c, p, x.fid, buf)
		if !errors.Is(err, x.want) || errors.Is(err, ring.ErrNeedleNotFound) != x.notFound || errors.Is(err, ring.ErrEngineUnavailable) {
			t.Errorf("%+v: %v", x.fid, err)
		}
	}
	if _, _, err := readNeedle(ctx, c, 0, fid, buf); !errors.Is(err, ring.ErrNoSuchPeer) {
		t.Errorf("peer 0: %v", err)
	}
	if _, _, err := readNeedle(ctx, c, 99, fid, buf); !errors.Is(err, ring.ErrNoSuchPeer) {
		t.Errorf("unknown peer: %v", err)
	}
	small := buf.Slice(0, MetaLen+100)
	if _, _, err := readNeedle(ctx, c, p, fid, small); !errors.Is(err, ring.ErrResponseTooLarge) {
		t.Errorf("whole needle into a small buffer: %v (the fake engine's answer)", err)
	}

	// Client-side checks: nothing reaches the engine.
	before := c.Stats().SQInvalid
	if _, _, err := readNeedle(ctx, c, p, fid, buf.Slice(0, MetaLen-1)); !errors.Is(err, ring.ErrInvalidEntry) {
		t.Errorf("buffer below MetaLen: %v", err)
	}
	if _, _, err := readNeedle(ctx, c, p, fid, ring.Buffer{}); !errors.Is(err, ring.ErrInvalidEntry) {
		t.Errorf("zero buffer: %v", err)
	}
	if _, _, err := readNeedleRange(ctx, c, p, fid, 0, 101, small); !errors.Is(err, ring.ErrOutOfBounds) {
		t.Errorf("range longer than the buffer: %v", err)
	}
	if c.Stats().SQInvalid != before {
		t.Errorf("client-side refusals reached the engine")
	}

	// The engine's validation (validate.rs), through raw requests.
	for _, r := range []ring.Request{
		{Opcode: ring.OpReadNeedle, Flags: 2, Peer: uint32(p), Buf: buf, BufLen: uint32(buf.Len())},
		{Opcode: ring.OpReadNeedle, Peer: uint32(p), Buf: buf, BufLen: uint32(buf.Len()), Args: [4]uint64{1, 1 << 32, 0, 0}},
		{Opcode: ring.OpReadNeedle, Peer: uint32(p), Buf: buf, BufLen: uint32(buf.Len()), Args: [4]uint64{1, 1, 5, 0}},
		{Opcode: ring.OpReadNeedle, Peer: uint32(p), Buf: buf, BufLen: MetaLen - 1},
	} {
		if _, err := c.Do(ctx, &r); !errors.Is(err, ring.ErrInvalidEntry) {
			t.Errorf("%+v: %v", r, err)
		}
	}
	if r := ReadRangeRequest(p, fid, 0, uint64(buf.Len()), buf); true {
		if _, err := c.Do(ctx, &r); !errors.Is(err, ring.ErrOutOfBounds) {
			t.Errorf("range past the buffer: %v", err)
		}
	}
	if c.Stats().SQInvalid != before+5 {
		t.Errorf("SQ invalid %d, want %d", c.Stats().SQInvalid, before+5)
	}

	// Many in flight: one SubmitBatch of ranged reads into parts of one buffer.
	big, err := c.AllocBuffer(ctx, 32*(MetaLen+512))
	if err != nil {
		t.Fatal(err)
	}
	defer big.Release()
	reqs := make([]ring.Request, 32)
	for i := range reqs {
		reqs[i] = ReadRangeRequest(p, fid, uint64(i*300), 512, big.Slice(i*(MetaLen+512), MetaLen+512))
	}
	ts := make([]ring.Ticket, len(reqs))
	k, err := c.SubmitBatch(ctx, reqs, ts)
	if err != nil || k != len(reqs) {
		t.Fatalf("batch: %d, %v", k, err)
	}
	for i, tk := range ts {
		res, err := tk.Wait(ctx)
		if err != nil {
			t.Fatal(err)
		}
		part := big.Slice(i*(MetaLen+512), MetaLen+512)
		m, data, err := Decode(part, res)
		if err != nil || m.RangeOffset != uint64(i*300) || !bytes.Equal(data, content[i*300:i*300+512]) {
			t.Fatalf("batch read %d: %+v %v", i, m, err)
		}
	}
	if e.MaxNeedlePass.Load() < 2 {
		t.Errorf("the engine never saw two READ_NEEDLEs at once (max %d)", e.MaxNeedlePass.Load())
	}
	if _, _, err := Decode(buf, int32(buf.Len())); !errors.Is(err, ring.ErrProtocol) {
		t.Errorf("result larger than the buffer: %v", err)
	}
	if _, _, err := Decode(buf, -1); !errors.Is(err, ring.ErrProtocol) {
		t.Errorf("negative result: %v", err)
	}
}

func TestReadNeedleRequestFields(t *testing.T) {
	fid := FileID{VolumeID: 9, NeedleID: 0x1122334455667788, Cookie: math.MaxUint32}
	r := ReadRangeRequest(3, fid, 10, 20, ring.Buffer{})
	if r.Opcode != ring.OpReadNeedle || r.Flags != ring.FlagReadNeedleRange || r.Peer != 3 || r.Aux != 9 ||
		r.Args != [4]uint64{0x1122334455667788, math.MaxUint32, 10, 20} {
		t.Errorf("%+v", r)
	}
	if r := ReadRequest(3, fid, ring.Buffer{}); r.Flags != 0 || r.Args[2] != 0 || r.Args[3] != 0 {
		t.Errorf("%+v", r)
	}
}

func TestSetNeedleJWT(t *testing.T) {
	fid := FileID{VolumeID: 9, NeedleID: 1, Cookie: 0xdeadbeef}
	_, path := startFake(t, nil)
	b, err := dialT(t, path).TryAllocBuffer(MetaLen + 16)
	if err != nil {
		t.Fatal(err)
	}
	r := ReadRangeRequest(3, fid, 10, 16, b)
	jwt := "eyJhbGciOiJIUzI1NiJ9.eyJmaWQiOiI5LDAxZGVhZGJlZWYifQ.sig"
	if err := SetJWT(&r, jwt); err != nil {
		t.Fatal(err)
	}
	// The cookie stays in the low 32 bits, the length goes above it, the token at the start
	// of the buffer.
	if r.Args[1] != 0xdeadbeef|uint64(len(jwt))<<32 || string(b.Bytes()[:len(jwt)]) != jwt {
		t.Errorf("args[1] %#x, buffer %q", r.Args[1], b.Bytes()[:len(jwt)])
	}
	if err := SetJWT(&r, ""); err != nil || r.Args[1] != 0xdeadbeef {
		t.Errorf("clearing: %v, args[1] %#x", err, r.Args[1])
	}
	long := string(make([]byte, MaxJWTLen+1))
	if err := SetJWT(&r, long); !errors.Is(err, ring.ErrInvalidEntry) || r.Args[1] != 0xdeadbeef {
		t.Errorf("over-long token: %v, args[1] %#x", err, r.Args[1])
	}
	nop := ring.Request{Opcode: ring.OpNop}
	if err := SetJWT(&nop, jwt); !errors.Is(err, ring.ErrInvalidEntry) {
		t.Errorf("NOP with a token: %v", err)
	}
	// Both paths' refusals match ErrUnauthorized; nothing else does.
	for _, e := range []error{ring.ErrJWTMissing, ring.ErrJWTInvalid, ring.ErrJWTExpired, ring.ErrJWTWrongFile, &HTTPError{StatusCode: 401}} {
		if !errors.Is(e, ring.ErrUnauthorized) || errors.Is(e, ring.ErrNeedleNotFound) {
			t.Errorf("%v: ErrUnauthorized %v, ErrNeedleNotFound %v", e, errors.Is(e, ring.ErrUnauthorized), errors.Is(e, ring.ErrNeedleNotFound))
		}
	}
	for _, e := range []error{ring.ErrCookieMismatch, ring.ErrPermissionDenied, &HTTPError{StatusCode: 403}} {
		if errors.Is(e, ring.ErrUnauthorized) {
			t.Errorf("%v matches ErrUnauthorized", e)
		}
	}
}

// BenchmarkReadNeedle4K is one synchronous 4 KiB READ_NEEDLE round trip against the fake
// engine (allocations reported: the client side allocates nothing).
func BenchmarkReadNeedle4K(b *testing.B) {
	store := newNeedleStore()
	_, path := startFake(b, func(e *fakeEngine) { e.Spin = 1e9; e.Needles = store })
	c := dialT(b, path)
	ctx := testCtx(b)
	p, err := c.ConnectPeer(ctx, "127.0.0.1:13337")
	if err != nil {
		b.Fatal(err)
	}
	fid := FileID{1, 1, 1}
	store.put(fid, make([]byte, 4096), needleOpts{name: "x"})
	buf, _ := c.AllocBuffer(ctx, MetaLen+4096)
	b.ReportAllocs()
	for b.Loop() {
		if _, n, err := readNeedle(ctx, c, p, fid, buf); err != nil || n != 4096 {
			b.Fatal(n, err)
		}
	}
}
