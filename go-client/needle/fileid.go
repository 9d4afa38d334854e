package needle

import (
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
)

// ErrBadFileID: a file id that is not SeaweedFS's "<volume id>,<needle id><cookie>"
// (ParseFileID).
var ErrBadFileID = errors.New("swring: bad file id")

// FileID names a SeaweedFS needle: "<volume id>,<needle id><cookie>", e.g. "3,01637037d6"
// (volume 3, needle id 0x01, cookie 0x637037d6).
type FileID struct {
	VolumeID uint32 // the volume (SeaweedFS VolumeId)
	NeedleID uint64 // the needle's key in the volume (NeedleId)
	Cookie   uint32 // the random number a read must present (Cookie)
}

// ParseFileID parses a file id the way the volume server's HTTP GET does
// (weed/storage/needle: ParseFileIdFromString for the volume id, Needle.ParsePath and
// ParseNeedleIdCookie for the rest):
//
//   - the volume id is the decimal number before the first comma (leading zeros allowed);
//   - after the comma come the needle id and the cookie in hexadecimal (either case), the
//     cookie being the last 8 digits: 9 to 24 digits in all (the needle id has 1 to 16,
//     leading zeros allowed);
//   - an optional "_<delta>" suffix (after the last underscore, decimal) is added to the
//     needle id, as SeaweedFS does for the extra needles of a batch assignment
//     ("3,01637037d6_2" is needle 0x03); an empty delta ("..._") is accepted and adds
//     nothing, like SeaweedFS; a delta that overflows the needle id is refused.
//
// The one deliberate difference: SeaweedFS parses the volume id as a 64-bit number and
// truncates it to its 32-bit VolumeId; ParseFileID refuses a volume id above 2^32-1 rather
// than read another volume. Errors match ErrBadFileID.
func ParseFileID(s string) (FileID, error) {
	comma := strings.IndexByte(s, ',')
	if comma <= 0 {
		return FileID{}, badFileID(s, "not <volume id>,<needle id><cookie>")
	}
	vid, err := strconv.ParseUint(s[:comma], 10, 32)
	if err != nil {
		return FileID{}, badFileID(s, "volume id is not a decimal number below 2^32")
	}
	rest := s[comma+1:]
	if len(rest) <= 2*cookieSize {
		return FileID{}, badFileID(s, "needle id and cookie are too short")
	}
	delta := ""
	if i := strings.LastIndexByte(rest, '_'); i > 0 {
		rest, delta = rest[:i], rest[i+1:]
	}
	switch {
	case len(rest) <= 2*cookieSize:
		return FileID{}, badFileID(s, "needle id and cookie are too short")
	case len(rest) > 2*(needleIDSize+cookieSize):
		return FileID{}, badFileID(s, "needle id and cookie are too long")
	}
	split := len(rest) - 2*cookieSize
	key, err := strconv.ParseUint(rest[:split], 16, 64)
	if err != nil {
		return FileID{}, badFileID(s, "needle id is not hexadecimal")
	}
	cookie, err := strconv.ParseUint(rest[split:], 16, 32)
	if err != nil {
		return FileID{}, badFileID(s, "cookie is not hexadecimal")
	}
	if delta != "" {
		d, err := strconv.ParseUint(delta, 10, 64)
		if err != nil {
			return FileID{}, badFileID(s, "delta after '_' is not a decimal number")
		}
		if d > math.MaxUint64-key {
			return FileID{}, badFileID(s, "delta overflows the needle id")
		}
		key += d
	}
	return FileID{VolumeID: uint32(vid), NeedleID: key, Cookie: uint32(cookie)}, nil
}

const (
	needleIDSize = 8 // bytes of a needle id
	cookieSize   = 4 // bytes of a cookie
)

func badFileID(s, why string) error {
	return fmt.Errorf("%w %q: %s", ErrBadFileID, s, why)
}

// String formats f as SeaweedFS does (FileId.String): the decimal volume id, a comma, and
// the needle id's big-endian bytes without leading zero bytes followed by the 4 cookie
// bytes, in lower-case hexadecimal. (Like SeaweedFS's, the text of needle id 0 is the
// cookie alone, which ParseFileID refuses as too short.)
func (f FileID) String() string {
	var b [10 + 1 + 2*(needleIDSize+cookieSize)]byte
	return string(f.Append(b[:0]))
}

// Append appends the String form of f to dst and returns the extended slice.
func (f FileID) Append(dst []byte) []byte {
	var b [needleIDSize + cookieSize]byte
	binary.BigEndian.PutUint64(b[:needleIDSize], f.NeedleID)
	binary.BigEndian.PutUint32(b[needleIDSize:], f.Cookie)
	i := 0
	for i < needleIDSize && b[i] == 0 {
		i++
	}
	dst = strconv.AppendUint(dst, uint64(f.VolumeID), 10)
	dst = append(dst, ',')
	return hex.AppendEncode(dst, b[i:])
}

// MarshalText implements encoding.TextMarshaler (the String form).
func (f FileID) MarshalText() ([]byte, error) { return f.Append(nil), nil }

// UnmarshalText implements encoding.TextUnmarshaler (ParseFileID).
func (f *FileID) UnmarshalText(b []byte) error {
	v, err := ParseFileID(string(b))
	if err != nil {
		return err
	}
	*f = v
	return nil
}
