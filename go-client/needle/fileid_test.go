package needle

import (
	"encoding/json"
	"errors"
	"math"
	"strconv"
	"strings"
	"testing"
)

// seaweedParse is SeaweedFS's parsing written out literally (weed/storage/needle:
// splitVolumeId + NewVolumeId of ParseFileIdFromString, then Needle.ParsePath with
// ParseNeedleIdCookie), the reference ParseFileID is checked against.
func seaweedParse(fid string) (vid uint64, key uint64, cookie uint32, ok bool) {
	commaIndex := strings.Index(fid, ",")
	if commaIndex <= 0 {
		return 0, 0, 0, false
	}
	vid, err := strconv.ParseUint(fid[:commaIndex], 10, 64)
	if err != nil {
		return 0, 0, 0, false
	}
	path := fid[commaIndex+1:]
	if len(path) <= 4*2 {
		return 0, 0, 0, false
	}
	delta := ""
	if deltaIndex := strings.LastIndex(path, "_"); deltaIndex > 0 {
		path, delta = path[0:deltaIndex], path[deltaIndex+1:]
	}
	if len(path) <= 4*2 || len(path) > (8+4)*2 {
		return 0, 0, 0, false
	}
	split := len(path) - 4*2
	key, err = strconv.ParseUint(path[:split], 16, 64)
	if err != nil {
		return 0, 0, 0, false
	}
	c, err := strconv.ParseUint(path[split:], 16, 32)
	if err != nil {
		return 0, 0, 0, false
	}
	if delta != "" {
		d, err := strconv.ParseUint(delta, 10, 64)
		if err != nil || d > math.MaxUint64-key {
			return 0, 0, 0, false
		}
		key += d
	}
	return vid, key, uint32(c), true
}

func TestParseFileID(t *testing.T) {
	for _, c := range []struct {
		in     string
		want   FileID
		ok     bool
		canon  string // String() of the result, when it differs from in
		reason string
	}{
		// weed/storage/needle file_id_test.go and needle_test.go
		{in: "100,12345678", reason: "too short"},
		{in: "100, 12345678", reason: "space"},
		{in: "100,123456789", want: FileID{100, 0x1, 0x23456789}, ok: true, canon: "100,0123456789"},
		{in: "100,123456789012345678901234", want: FileID{100, 0x1234567890123456, 0x78901234}, ok: true},
		{in: "100,abcd0000abcd", want: FileID{100, 0xabcd, 0xabcd}, ok: true},
		{in: "100,1234567890123456789012345", reason: "too long"},
		{in: "3,0100000000", want: FileID{3, 1, 0}, ok: true},
		{in: "3,012300000000", want: FileID{3, 0x123, 0}, ok: true},
		{in: "7,123400000000", want: FileID{7, 0x1234, 0}, ok: true},
		{in: "1,4ed4c8116e41", want: FileID{1, 0x4ed4, 0xc8116e41}, ok: true},
		{in: "1,4ed401116e41", want: FileID{1, 0x4ed4, 0x01116e41}, ok: true},
		{in: "1,ed400116e41", want: FileID{1, 0xed4, 0x00116e41}, ok: true, canon: "1,0ed400116e41"},
		{in: "1,fed4c8114ed4c811f0116e41", want: FileID{1, 0xfed4c8114ed4c811, 0xf0116e41}, ok: true},
		{in: "1,4ed4c811", reason: "too short"},
		{in: "1,4ed4c8114ed4c8114ed4c8111", reason: "too long"},
		{in: "1,helloworld", reason: "not hex"},
		{in: "1,ffffffffffffffff00000000_1", reason: "delta overflow"},
		// the README example
		{in: "3,01637037d6", want: FileID{3, 1, 0x637037d6}, ok: true},
		// delta suffix, as Needle.ParsePath
		{in: "3,01637037d6_1", want: FileID{3, 2, 0x637037d6}, ok: true, canon: "3,02637037d6"},
		{in: "3,01637037d6_255", want: FileID{3, 0x100, 0x637037d6}, ok: true, canon: "3,0100637037d6"},
		{in: "3,01637037d6_", want: FileID{3, 1, 0x637037d6}, ok: true, canon: "3,01637037d6"},
		{in: "3,01637037d6_x", reason: "delta not decimal"},
		{in: "3,01637037d6_-1", reason: "negative delta"},
		{in: "3,_01637037d6", reason: "underscore first: no delta, not hex"},
		{in: "3,0163_7037d6", reason: "delta leaves a short key"},
		{in: "3,ffffffffffffffff637037d6_0", want: FileID{3, math.MaxUint64, 0x637037d6}, ok: true, canon: "3,ffffffffffffffff637037d6"},
		// leading zeros, case
		{in: "003,0000000000000001637037D6", want: FileID{3, 1, 0x637037d6}, ok: true, canon: "3,01637037d6"},
		{in: "3,0000000000000000000000001", reason: "25 digits"},
		{in: "4294967295,01637037d6", want: FileID{math.MaxUint32, 1, 0x637037d6}, ok: true},
		{in: "4294967296,01637037d6", reason: "volume id over 32 bits (SeaweedFS would truncate)"},
		{in: ",01637037d6", reason: "no volume id"},
		{in: "01637037d6", reason: "no comma"},
		{in: "", reason: "empty"},
		{in: "-3,01637037d6", reason: "negative volume"},
		{in: "+3,01637037d6", reason: "signed volume"},
		{in: "3,0x1637037d6", reason: "0x prefix"},
		{in: "3,+1637037d6", reason: "signed key"},
		{in: "3,1_637037d6", reason: "underscore in hex"},
		{in: "3,01637037d6.jpg", reason: "extension"},
		{in: "3,01637037d6,1", reason: "second comma"},
		{in: "3,01637037d6 ", reason: "trailing space"},
	} {
		got, err := ParseFileID(c.in)
		if c.ok != (err == nil) || got != c.want {
			t.Errorf("ParseFileID(%q) = %+v, %v; want %+v ok=%v (%s)", c.in, got, err, c.want, c.ok, c.reason)
			continue
		}
		if err != nil {
			if !errors.Is(err, ErrBadFileID) || !strings.Contains(err.Error(), strconv.Quote(c.in)) {
				t.Errorf("ParseFileID(%q) error %v", c.in, err)
			}
			continue
		}
		canon := c.in
		if c.canon != "" {
			canon = c.canon
		}
		if s := got.String(); s != canon {
			t.Errorf("ParseFileID(%q).String() = %q, want %q", c.in, s, canon)
		}
	}
}

func TestFileIDStringLikeSeaweedFS(t *testing.T) {
	for _, c := range []struct {
		f    FileID
		want string
	}{
		{FileID{3, 1, 0x637037d6}, "3,01637037d6"},
		{FileID{0, 0x1234567890123456, 0x78901234}, "0,123456789012345678901234"},
		{FileID{7, 0, 0xabcd}, "7,0000abcd"}, // needle id 0: the cookie alone, as SeaweedFS
		{FileID{math.MaxUint32, math.MaxUint64, math.MaxUint32}, "4294967295,ffffffffffffffffffffffff"},
	} {
		if s := c.f.String(); s != c.want {
			t.Errorf("%+v.String() = %q, want %q", c.f, s, c.want)
		}
	}
	var f struct{ Fid FileID }
	if err := json.Unmarshal([]byte(`{"Fid":"3,01637037d6"}`), &f); err != nil || f.Fid != (FileID{3, 1, 0x637037d6}) {
		t.Errorf("json: %+v %v", f, err)
	}
	if b, _ := json.Marshal(f); string(b) != `{"Fid":"3,01637037d6"}` {
		t.Errorf("json: %s", b)
	}
	if err := json.Unmarshal([]byte(`{"Fid":"3,x"}`), &f); !errors.Is(err, ErrBadFileID) {
		t.Errorf("json bad: %v", err)
	}
}

func TestParseFileIDDoesNotAllocate(t *testing.T) {
	f := FileID{3, 1, 0x637037d6}
	buf := make([]byte, 0, 64)
	if n := testing.AllocsPerRun(100, func() {
		if _, err := ParseFileID("3,01637037d6_2"); err != nil {
			t.Fatal(err)
		}
		buf = f.Append(buf[:0])
	}); n != 0 {
		t.Errorf("%v allocations per ParseFileID + Append", n)
	}
}

// FuzzParseFileID checks ParseFileID against SeaweedFS's parsing (seaweedParse): the same
// strings are accepted with the same values (except volume ids over 32 bits, which
// SeaweedFS truncates and ParseFileID refuses), and String round-trips.
func FuzzParseFileID(f *testing.F) {
	for _, s := range []string{"3,01637037d6", "3,01637037d6_1", "100,123456789012345678901234", "1,4ed4c811",
		"4294967296,01637037d6", "3,01637037d6_", "3,ffffffffffffffff00000000_1", ",", "1,_0000000000", "1,0x00000000"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, err := ParseFileID(s)
		vid, key, cookie, ok := seaweedParse(s)
		if ok && vid > math.MaxUint32 {
			if err == nil {
				t.Fatalf("ParseFileID(%q) accepted volume id %d", s, vid)
			}
			return
		}
		if ok != (err == nil) {
			t.Fatalf("ParseFileID(%q): err %v, SeaweedFS ok=%v", s, err, ok)
		}
		if !ok {
			if !errors.Is(err, ErrBadFileID) {
				t.Fatalf("ParseFileID(%q): %v does not match ErrBadFileID", s, err)
			}
			return
		}
		if want := (FileID{uint32(vid), key, cookie}); got != want {
			t.Fatalf("ParseFileID(%q) = %+v, SeaweedFS %+v", s, got, want)
		}
		if got.NeedleID != 0 {
			if back, err := ParseFileID(got.String()); err != nil || back != got {
				t.Fatalf("round trip of %q via %q: %+v, %v", s, got.String(), back, err)
			}
		}
	})
}
