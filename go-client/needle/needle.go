package needle

//go:generate go run golang.org/x/tools/cmd/stringer@v0.30.0 -type=Path -linecomment -output=path_string.go

import (
	"fmt"
	"mime"
	"net/http"
	"path/filepath"
	"strings"
	"time"
)

// Path says how a needle was read.
type Path uint8

const (
	// PathAuto (only in Options.Only): the ring, falling back to HTTP.
	PathAuto Path = iota // auto
	// PathRing: READ_NEEDLE through the local engine from the volume server's engine.
	PathRing // ring
	// PathHTTP: the volume server's HTTP GET.
	PathHTTP // http
)

// Needle is a needle read by Reader: its data, or the requested range of it, and
// what the volume server's HTTP GET says about it.
type Needle struct {
	// FileID is the needle's file id.
	FileID FileID
	// Data is the needle's data, or the requested range of it: decompressed when the
	// needle is stored gzip-compressed, unless Options.KeepCompressed.
	Data []byte
	// Offset is where Data starts in the whole data (0 unless a range was read).
	Offset int64
	// Size is the size of the whole data, of the bytes Data is part of (decompressed or
	// stored).
	Size int64
	// Name is the needle's file name ("" when none). On the HTTP path it is the
	// Content-Disposition filename.
	Name string
	// Mime is the needle's MIME type: on the ring path as stored (possibly ""), on the
	// HTTP path the Content-Type the volume server sent.
	Mime string
	// ContentType is the Content-Type the volume server's HTTP GET sends for this read: on
	// the ring path worked out the same way (the stored MIME type unless empty or
	// application/octet-stream, else by the name's extension, else what net/http sniffs
	// from the bytes the GET writes first; "" when the response is empty or gzip-encoded),
	// on the HTTP path the header. (The extension's type comes from this host's MIME
	// tables, which may differ from the volume server's.)
	ContentType string
	// LastModified is the needle's last-modified time (second precision; zero when none).
	LastModified time.Time
	// ETag is the volume server's entity tag of the needle (the stored CRC in hex, without
	// quotes).
	ETag string
	// Compressed reports that the needle is stored gzip-compressed. On the HTTP path it is
	// known only when the response was gzip-encoded (whole-needle reads, KeepCompressed),
	// and false otherwise.
	Compressed bool
	// ChunkManifest reports that the needle carries the chunk-manifest flag: a manifest
	// written by `weed upload`/submit (JSON naming the chunks of a large file), returned as
	// is: the volume server's GET would assemble the file instead unless asked with
	// ?cm=false, which the HTTP path of Reader does, so both paths return the manifest. Only
	// the ring path can tell (false on PathHTTP). The filer's own manifests (protobuf) carry
	// no needle flag (only the filer's metadata marks them): for those it is false and the
	// bytes are the manifest, as from the GET.
	ChunkManifest bool
	// Flags are the needle's stored flag bits (FlagGzip, ...); ring path only.
	Flags uint8
	// Path says which way the needle was read.
	Path Path
	// RingErr is why the ring path did not serve the needle when Path is PathHTTP (nil
	// when the HTTP path was forced with Only).
	RingErr error
}

// contentTypeLike is the Content-Type the volume server's GET sends: the stored MIME type
// unless it is empty or application/octet-stream, else the type of the name's extension,
// else what net/http sniffs from the first bytes written — unless the response is
// gzip-encoded (net/http does not sniff those) or empty.
func contentTypeLike(mimeType, name string, written []byte, gzipEncoded bool) string {
	if mimeType != "" && !strings.HasPrefix(mimeType, "application/octet-stream") {
		return mimeType
	}
	if ext := filepath.Ext(name); ext != "" {
		if t := mime.TypeByExtension(ext); t != "" {
			return t
		}
	}
	if len(written) == 0 || gzipEncoded {
		return ""
	}
	return http.DetectContentType(written[:min(len(written), 512)])
}

// Error is a failed Reader read. It unwraps to Err, the answer of the path
// that answered last: errors.Is(err, ring.ErrNeedleNotFound), ring.ErrRangeNotSatisfiable,
// ErrBadFileID, ring.ErrCorrupt, ... hold through it.
type Error struct {
	// FileID and VolumeServer are the read's, as passed.
	FileID       string
	VolumeServer string
	// Path is the path whose answer Err is (PathAuto for errors before either was tried,
	// like a bad file id).
	Path Path
	// Err is the answer: a ring.ResultError, *HTTPError, ErrBadFileID, ctx.Err(), ...
	Err error
	// RingErr is why the ring path did not serve the needle when Path is PathHTTP.
	RingErr error
}

func (e *Error) Error() string {
	s := fmt.Sprintf("swring: read needle %s from %s", e.FileID, e.VolumeServer)
	if e.Path != PathAuto {
		s += " (" + e.Path.String() + ")"
	}
	s += ": " + e.Err.Error()
	if e.RingErr != nil && e.Path == PathHTTP {
		s += " (ring: " + e.RingErr.Error() + ")"
	}
	return s
}

// Unwrap returns Err.
func (e *Error) Unwrap() error { return e.Err }

// Stats are counters of a Reader.
type Stats struct {
	RingReads    uint64 // reads the ring served
	HTTPReads    uint64 // reads HTTP served (fallbacks and Only = PathHTTP)
	Fallbacks    uint64 // reads tried on the ring and then over HTTP
	Failures     uint64 // reads that returned an error
	RingBytes    uint64 // bytes of Needle.Data the ring served
	HTTPBytes    uint64 // bytes of Needle.Data HTTP served
	Dials        uint64 // engine sessions opened
	DialFailures uint64 // failed Dials
	PeerConnects uint64 // ConnectPeer calls that returned a handle
}
