package needle

import (
	"encoding/binary"
	"fmt"

	"github.com/seaweed-ring/seaweed-ring/go-client/ring"
)

// What a READ_NEEDLE leaves in its buffer (ring-proto needle.rs): the needle's metadata in
// the first MetaLen bytes, the data after them.
//
//	buf + 0              Meta (encoded, at most 64+255+255 bytes)
//	buf + MetaLen  data bytes (the CQE result says how many)
//
//	Meta, little-endian:
//	 0 data_size u64      size of the needle's whole data as stored (compressed if gzip)
//	 8 range_offset u64   data offset of the first byte returned
//	16 last_modified u64  Unix seconds, 0 when the needle has none
//	24 append_at_ns u64   when the volume server appended it (volume version 3), else 0
//	32 checksum u32       the stored CRC-32C (Castagnoli) of the whole data
//	36 flags u8           the needle's flag bits as stored (Flag*)
//	37 name_len u8        bytes of name at 64
//	38 mime_len u8        bytes of mime type at 64 + name_len
//	39 version u8         the volume's needle version (2 or 3)
//	40 ttl [2]u8          count, unit as stored; zero when none
//	42 reserved           zero up to 64
//	64 name, mime
const (
	// MetaLen is how many bytes at the start of a READ_NEEDLE buffer hold the
	// needle's metadata; the data follows. A READ_NEEDLE buffer is at least this long.
	MetaLen = 1024

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

// Needle flag bits (SeaweedFS weed/storage/needle), as Meta.Flags carries them.
const (
	// FlagGzip: the data is gzip-compressed as stored; the volume server's HTTP GET
	// decompresses it for clients that do not accept gzip.
	FlagGzip uint8 = 0x01
	// flagHasName: the needle has a file name.
	flagHasName uint8 = 0x02
	// flagHasMime: the needle has a MIME type.
	flagHasMime uint8 = 0x04
	// flagHasLastModified: the needle has a last-modified time.
	flagHasLastModified uint8 = 0x08
	// flagHasTTL: the needle has a time to live.
	flagHasTTL uint8 = 0x10
	// flagHasPairs: the needle has name/value pairs (which the HTTP GET sends as
	// headers; READ_NEEDLE does not carry them).
	flagHasPairs uint8 = 0x20
	// FlagChunkManifest: the data is a chunk manifest (a JSON list of other file
	// ids), not file content.
	FlagChunkManifest uint8 = 0x80
)

// Meta is the metadata a READ_NEEDLE leaves before the data (ring-proto Meta).
// Name and Mime alias the buffer they were decoded from: copy them before the buffer is
// released or reused.
type Meta struct {
	// DataSize is the size of the needle's whole data as stored (compressed when Flags has
	// FlagGzip).
	DataSize uint64
	// RangeOffset is the data offset of the first byte returned.
	RangeOffset uint64
	// LastModified is in Unix seconds, 0 when the needle has none.
	LastModified uint64
	// AppendAtNs is when the volume server appended the needle (volume version 3), else 0.
	AppendAtNs uint64
	// Checksum is the stored CRC-32C (Castagnoli) of the whole data.
	Checksum uint32
	// Flags are the needle's flag bits as stored (FlagGzip, ...).
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

// DecodeMeta decodes and checks the metadata at the start of b exactly as ring-proto's
// Meta::decode does: at least the 64-byte fixed part, name and mime inside b, reserved
// bytes zero; bytes after the name and mime are ignored. Name and Mime alias b. Errors wrap
// ring.ErrProtocol (the engine wrote what the protocol does not allow).
func DecodeMeta(b []byte) (Meta, error) {
	if len(b) < needleMetaFixed {
		return Meta{}, fmt.Errorf("%w: needle metadata is %d bytes, shorter than its %d-byte fixed part", ring.ErrProtocol, len(b), needleMetaFixed)
	}
	nameLen, mimeLen := int(b[metaNameLen]), int(b[metaMimeLen])
	want := needleMetaFixed + nameLen + mimeLen
	if want > len(b) {
		return Meta{}, fmt.Errorf("%w: needle metadata names %d bytes of name and mime but carries %d", ring.ErrProtocol, want, len(b))
	}
	for _, x := range b[metaReserved:needleMetaFixed] {
		if x != 0 {
			return Meta{}, fmt.Errorf("%w: needle metadata reserved bytes are not zero", ring.ErrProtocol)
		}
	}
	le := binary.LittleEndian
	return Meta{
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

// appendMeta appends the encoding of m (name and mime cut to 255 bytes), as
// ring-proto's Meta::encode_into does. The engine writes it; tests and fake engines
// use this.
func appendMeta(dst []byte, m *Meta) []byte {
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
