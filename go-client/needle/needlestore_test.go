package needle

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"hash/crc32"
	"io"
	"mime"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/seaweed-ring/seaweed-ring/go-client/internal/wire"
	"github.com/seaweed-ring/seaweed-ring/go-client/ring"
)

// TEST ONLY: an in-memory needle table served two ways, so that tests can compare the ring
// path with the HTTP path byte for byte:
//   - by the fake engine's READ_NEEDLE (fakeengine_test.go), and
//   - by fakeVolumeServer, an httptest server that answers GET /<fid> the way SeaweedFS's
//     volume server does (weed/server/volume_server_handlers_read.go, the parts a plain GET
//     reaches: 400/404/500, cookie mismatch as 404, gzip, chunk manifests unless cm=false,
//     Last-Modified, ETag, Content-Disposition, Range with 206/416).

type storedNeedle struct {
	cookie  uint32
	data    []byte // as stored: gzip-compressed when meta.Flags has FlagGzip
	meta    Meta   // flags, name, mime, last modified, append time, checksum, version
	deleted bool
	corrupt bool
}

type needleStore struct {
	mu   sync.RWMutex
	vols map[uint32]map[uint64]*storedNeedle
	// strictRange: a ranged read starting at the end of the data is range-not-satisfiable
	// (also offset 0 of an empty needle); otherwise only a start beyond the end is. Set
	// before the engine serves.
	strictRange bool
	// hook, when set, may answer a READ_NEEDLE itself: a result code (< 0) to return, or 0
	// to serve it normally. It runs on the session worker. Guarded by mu (setHook).
	hook func(peer netip.AddrPort, fid FileID, e *wire.SQE) int32
}

func newNeedleStore() *needleStore {
	return &needleStore{vols: map[uint32]map[uint64]*storedNeedle{}}
}

type needleOpts struct {
	name, mime    string
	lastModified  uint64
	gzip          bool // store data gzip-compressed (the flag and compressed bytes)
	gzipFlagOnly  bool // set the gzip flag on data that is not gzip (SeaweedFS serves it as is)
	chunkManifest bool
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func gzipBytes(b []byte) []byte {
	var out bytes.Buffer
	w := gzip.NewWriter(&out)
	w.Write(b)
	w.Close()
	return out.Bytes()
}

// put stores a needle with content (compressed first when o.gzip).
func (s *needleStore) put(fid FileID, content []byte, o needleOpts) *storedNeedle {
	n := &storedNeedle{cookie: fid.Cookie, data: content}
	m := &n.meta
	m.Version = 3
	m.AppendAtNs = uint64(time.Now().UnixNano())
	if o.gzip {
		n.data = gzipBytes(content)
	}
	if o.gzip || o.gzipFlagOnly {
		m.Flags |= FlagGzip
	}
	if o.name != "" {
		m.Name, m.Flags = []byte(o.name), m.Flags|flagHasName
	}
	if o.mime != "" {
		m.Mime, m.Flags = []byte(o.mime), m.Flags|flagHasMime
	}
	if o.lastModified != 0 {
		m.LastModified, m.Flags = o.lastModified, m.Flags|flagHasLastModified
	}
	if o.chunkManifest {
		m.Flags |= FlagChunkManifest
	}
	m.Checksum = crc32.Checksum(n.data, castagnoli)
	s.mu.Lock()
	v := s.vols[fid.VolumeID]
	if v == nil {
		v = map[uint64]*storedNeedle{}
		s.vols[fid.VolumeID] = v
	}
	v[fid.NeedleID] = n
	s.mu.Unlock()
	return n
}

func (s *needleStore) update(fid FileID, f func(n *storedNeedle)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := *s.vols[fid.VolumeID][fid.NeedleID]
	f(&c)
	s.vols[fid.VolumeID][fid.NeedleID] = &c
}

func (s *needleStore) setHook(h func(peer netip.AddrPort, fid FileID, e *wire.SQE) int32) {
	s.mu.Lock()
	s.hook = h
	s.mu.Unlock()
}

// ServeNeedle is the fake engine's READ_NEEDLE (fakeengine.NeedleServer): the engine
// validated e; serve it from the store like the engine's needle path: metadata at the
// buffer's start, data at MetaLen, result = data bytes.
func (s *needleStore) ServeNeedle(peer netip.AddrPort, e *wire.SQE, buf []byte) int32 {
	fid := FileID{VolumeID: e.Aux, NeedleID: e.Args[0], Cookie: uint32(e.Args[1])}
	s.mu.RLock()
	hook := s.hook
	s.mu.RUnlock()
	if hook != nil {
		if r := hook(peer, fid, e); r != 0 {
			return r
		}
	}
	n, res := s.lookup(fid)
	if res != 0 {
		return res
	}
	ranged := e.Flags&wire.FlagReadNeedleRange != 0
	dataCap := uint64(e.BufLen) - MetaLen
	size := uint64(len(n.data))
	off, want := uint64(0), dataCap
	if ranged {
		off, want = e.Args[2], e.Args[3]
		if off > size || (s.strictRange && off >= size) {
			return int32(ring.ErrRangeNotSatisfiable)
		}
	} else if size > dataCap {
		return int32(ring.ErrResponseTooLarge)
	}
	k := min(want, size-off)
	m := n.meta
	m.DataSize, m.RangeOffset = size, off
	appendMeta(buf[:0:MetaLen], &m)
	copy(buf[MetaLen:], n.data[off:off+k])
	return int32(k)
}

// lookup returns a copy of the needle, or the READ_NEEDLE result code why there is none.
func (s *needleStore) lookup(fid FileID) (storedNeedle, int32) {
	if s == nil {
		return storedNeedle{}, int32(ring.ErrNoSuchVolume)
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	v, ok := s.vols[fid.VolumeID]
	if !ok {
		return storedNeedle{}, int32(ring.ErrNoSuchVolume)
	}
	n, ok := v[fid.NeedleID]
	switch {
	case !ok:
		return storedNeedle{}, int32(ring.ErrNoSuchNeedle)
	case n.deleted:
		return storedNeedle{}, int32(ring.ErrNeedleDeleted)
	case n.cookie != fid.Cookie:
		return storedNeedle{}, int32(ring.ErrCookieMismatch)
	case n.corrupt:
		return storedNeedle{}, int32(ring.ErrCorrupt)
	}
	return *n, 0
}

// fakeVolumeServer is the HTTP side of the store. Requests counts GETs; lastQuery and
// lastHeader are those of the latest request.
type fakeVolumeServer struct {
	*httptest.Server
	store    *needleStore
	requests atomic.Int64
	mu       sync.Mutex
	last     *http.Request
}

func newFakeVolumeServer(t testing.TB, store *needleStore) *fakeVolumeServer {
	vs := &fakeVolumeServer{store: store}
	vs.Server = httptest.NewServer(http.HandlerFunc(vs.serve))
	t.Cleanup(vs.Close)
	return vs
}

// hostPort is the server's address as a volume server location ("127.0.0.1:port").
func (vs *fakeVolumeServer) hostPort() string { return strings.TrimPrefix(vs.URL, "http://") }

func (vs *fakeVolumeServer) lastRequest() *http.Request {
	vs.mu.Lock()
	defer vs.mu.Unlock()
	return vs.last
}

func (vs *fakeVolumeServer) serve(w http.ResponseWriter, r *http.Request) {
	vs.requests.Add(1)
	vs.mu.Lock()
	vs.last = r.Clone(r.Context())
	vs.mu.Unlock()
	fid, err := ParseFileID(strings.TrimPrefix(r.URL.Path, "/"))
	if err != nil {
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	n, res := vs.store.lookup(fid)
	switch ring.ResultError(res) {
	case 0:
	case ring.ErrNoSuchVolume, ring.ErrNoSuchNeedle, ring.ErrNeedleDeleted, ring.ErrCookieMismatch:
		w.WriteHeader(http.StatusNotFound)
		return
	default:
		http.Error(w, `{"error":"read needle: CRC error"}`, http.StatusInternalServerError)
		return
	}
	m := n.meta
	if m.LastModified != 0 {
		w.Header().Set("Last-Modified", time.Unix(int64(m.LastModified), 0).UTC().Format(http.TimeFormat))
	}
	w.Header().Set("ETag", fmt.Sprintf(`"%08x"`, m.Checksum))
	if m.Flags&FlagChunkManifest != 0 && r.URL.Query().Get("cm") != "false" {
		w.Header().Set("X-File-Store", "chunked")
		io.WriteString(w, "resolved chunk manifest content")
		return
	}
	filename := string(m.Name)
	mtype := ""
	if len(m.Mime) > 0 && !strings.HasPrefix(string(m.Mime), "application/octet-stream") {
		mtype = string(m.Mime)
	}
	data := n.data
	if m.Flags&FlagGzip != 0 {
		if strings.Contains(r.Header.Get("Accept-Encoding"), "gzip") && isGzip(data) {
			w.Header().Set("Content-Encoding", "gzip")
		} else if isGzip(data) {
			zr, err := gzip.NewReader(bytes.NewReader(data))
			if err == nil {
				data, err = io.ReadAll(zr)
			}
			if err != nil {
				data = nil
			}
		}
	}
	if mtype == "" {
		if ext := filepath.Ext(filename); ext != "" {
			mtype = mime.TypeByExtension(ext)
		}
	}
	if mtype != "" {
		w.Header().Set("Content-Type", mtype)
	}
	w.Header().Set("Accept-Ranges", "bytes")
	if filename != "" {
		w.Header().Set("Content-Disposition", mime.FormatMediaType("inline", map[string]string{"filename": filename}))
	}
	processRange(w, r, data)
}

// processRange answers like SeaweedFS's ProcessRangeRequest for one range: 200 with the
// whole data, 206 with Content-Range, 416 when the range starts at or past the end. The
// bytes go out through Write, so that net/http sniffs a missing Content-Type from the
// first bytes written, as on the volume server.
func processRange(w http.ResponseWriter, r *http.Request, data []byte) {
	size := int64(len(data))
	rg := r.Header.Get("Range")
	if rg == "" {
		w.Header().Set("Content-Length", strconv.FormatInt(size, 10))
		w.Write(data)
		return
	}
	spec, ok := strings.CutPrefix(rg, "bytes=")
	a, b, ok2 := strings.Cut(spec, "-")
	start, err := strconv.ParseInt(a, 10, 64)
	if !ok || !ok2 || err != nil || start < 0 {
		http.Error(w, "invalid range", http.StatusRequestedRangeNotSatisfiable)
		return
	}
	if start >= size {
		w.Header().Set("Content-Range", fmt.Sprintf("bytes */%d", size))
		http.Error(w, "invalid range: failed to overlap", http.StatusRequestedRangeNotSatisfiable)
		return
	}
	end := size - 1
	if b != "" {
		if e, err := strconv.ParseInt(b, 10, 64); err == nil && e < end {
			end = e
		}
	}
	w.Header().Set("Content-Length", strconv.FormatInt(end-start+1, 10))
	w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", start, end, size))
	w.WriteHeader(http.StatusPartialContent)
	w.Write(data[start : end+1])
}
