package needle

import (
	"encoding/binary"
	"encoding/json"
	"os"
	"testing"

	"github.com/seaweed-ring/seaweed-ring/go-client/ring"
)

// readNeedleLayout is the read_needle block of ring-proto/layout.json.
type readNeedleLayout struct {
	Flags       map[string]uint8  `json:"flags"`
	MetaFields  map[string]uint64 `json:"meta_fields"`
	MetaLen     int               `json:"meta_len"`
	MaxJWTLen   int               `json:"max_jwt_len"`
	JWTLenShift uint              `json:"jwt_len_shift"`
	NeedleFlags map[string]uint8  `json:"needle_flags"`
}

func loadReadNeedleLayout(t *testing.T) readNeedleLayout {
	t.Helper()
	b, err := os.ReadFile("../../ring-proto/layout.json")
	if err != nil {
		t.Fatalf("ring-proto/layout.json is the source of truth for this test: %v", err)
	}
	var f struct {
		ReadNeedle readNeedleLayout `json:"read_needle"`
	}
	if err := json.Unmarshal(b, &f); err != nil {
		t.Fatal(err)
	}
	return f.ReadNeedle
}

func checkMap[V comparable](t *testing.T, what string, json, goSide map[string]V) {
	t.Helper()
	for name, v := range json {
		if g, ok := goSide[name]; !ok || g != v {
			t.Errorf("%s %s: json %v, Go %v (known %v)", what, name, v, g, ok)
		}
	}
	for name := range goSide {
		if _, ok := json[name]; !ok {
			t.Errorf("%s %s: known to the Go client, missing from layout.json", what, name)
		}
	}
}

// TestReadNeedleLayoutMatchesRingProto checks the READ_NEEDLE constants and the Meta
// encoding against layout.json's read_needle block.
func TestReadNeedleLayoutMatchesRingProto(t *testing.T) {
	rn := loadReadNeedleLayout(t)
	if rn.MetaLen != MetaLen {
		t.Errorf("meta_len: json %d, Go %d", rn.MetaLen, MetaLen)
	}
	if rn.MaxJWTLen != MaxJWTLen || rn.JWTLenShift != needleJWTLenShift {
		t.Errorf("max_jwt_len/jwt_len_shift: json %d/%d, Go %d/%d", rn.MaxJWTLen, rn.JWTLenShift, MaxJWTLen, needleJWTLenShift)
	}
	checkMap(t, "read_needle flag", rn.Flags, map[string]uint8{"range": ring.FlagReadNeedleRange})
	checkMap(t, "needle flag", rn.NeedleFlags, map[string]uint8{
		"gzip": FlagGzip, "has_name": flagHasName, "has_mime": flagHasMime,
		"has_last_modified": flagHasLastModified, "has_ttl": flagHasTTL, "has_pairs": flagHasPairs,
		"chunk_manifest": FlagChunkManifest,
	})
	checkMap(t, "meta field", rn.MetaFields, map[string]uint64{
		"data_size": metaDataSize, "range_offset": metaRangeOffset, "last_modified": metaLastModified,
		"append_at_ns": metaAppendAtNs, "checksum": metaChecksum, "flags": metaFlags, "name_len": metaNameLen,
		"mime_len": metaMimeLen, "version": metaVersion, "ttl": metaTTL, "name": needleMetaFixed,
	})
	// Encode distinct values and find them at the json offsets; decode them back.
	m := Meta{DataSize: 0x0102030405060708, RangeOffset: 0x1112131415161718, LastModified: 0x2122232425262728,
		AppendAtNs: 0x3132333435363738, Checksum: 0x41424344, Flags: 0x51, Version: 3, TTL: [2]byte{0x61, 0x62},
		Name: []byte("a.txt"), Mime: []byte("text/plain")}
	b := appendMeta(nil, &m)
	f := rn.MetaFields
	le := binary.LittleEndian
	for _, c := range []struct {
		name      string
		got, want uint64
	}{
		{"data_size", le.Uint64(b[f["data_size"]:]), m.DataSize},
		{"range_offset", le.Uint64(b[f["range_offset"]:]), m.RangeOffset},
		{"last_modified", le.Uint64(b[f["last_modified"]:]), m.LastModified},
		{"append_at_ns", le.Uint64(b[f["append_at_ns"]:]), m.AppendAtNs},
		{"checksum", uint64(le.Uint32(b[f["checksum"]:])), uint64(m.Checksum)},
		{"flags", uint64(b[f["flags"]]), uint64(m.Flags)},
		{"name_len", uint64(b[f["name_len"]]), 5},
		{"mime_len", uint64(b[f["mime_len"]]), 10},
		{"version", uint64(b[f["version"]]), 3},
		{"ttl", uint64(le.Uint16(b[f["ttl"]:])), 0x6261},
	} {
		if c.got != c.want {
			t.Errorf("meta field %s: read %#x at the json offset, want %#x", c.name, c.got, c.want)
		}
	}
	if string(b[f["name"]:]) != "a.txttext/plain" || len(b) != needleMetaFixed+15 {
		t.Errorf("name and mime: % x", b[needleMetaFixed:])
	}
	d, err := DecodeMeta(b)
	if err != nil || d.DataSize != m.DataSize || d.RangeOffset != m.RangeOffset || d.LastModified != m.LastModified ||
		d.AppendAtNs != m.AppendAtNs || d.Checksum != m.Checksum || d.Flags != m.Flags || d.Version != m.Version ||
		d.TTL != m.TTL || string(d.Name) != "a.txt" || string(d.Mime) != "text/plain" {
		t.Errorf("round trip: %+v, %v", d, err)
	}
}
