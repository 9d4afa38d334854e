package swring

import (
	"encoding/binary"
	"encoding/json"
	"os"
	"testing"
)

type layoutFile struct {
	Alignment struct {
		BufAlign       uint64 `json:"buf_align"`
		IndexPad       uint64 `json:"index_pad"`
		MaxRingEntries uint32 `json:"max_ring_entries"`
	} `json:"alignment"`
	CloseReasons map[string]uint32 `json:"close_reasons"`
	Control      struct {
		Magic      uint32 `json:"magic"`
		Version    uint16 `json:"version"`
		WelcomeFDs int    `json:"welcome_fds"`
	} `json:"control"`
	CQE     fieldsBlock `json:"cqe"`
	Example struct {
		BufOffset     uint64 `json:"buf_offset"`
		CQArrayOffset uint64 `json:"cq_array_offset"`
		CQCtlOffset   uint64 `json:"cq_ctl_offset"`
		MinRegionSize uint64 `json:"min_region_size"`
		SQArrayOffset uint64 `json:"sq_array_offset"`
		SQCtlOffset   uint64 `json:"sq_ctl_offset"`
	} `json:"example_layout_256_512_1MiB"`
	Header        fieldsBlock `json:"header"`
	LayoutVersion uint32      `json:"layout_version"`
	Magic         uint64      `json:"magic"`
	Opcodes       map[string]uint8
	ReadNeedle    struct {
		Flags       map[string]uint8  `json:"flags"`
		MetaFields  map[string]uint64 `json:"meta_fields"`
		MetaLen     int               `json:"meta_len"`
		MaxJWTLen   int               `json:"max_jwt_len"`
		JWTLenShift uint              `json:"jwt_len_shift"`
		NeedleFlags map[string]uint8  `json:"needle_flags"`
	} `json:"read_needle"`
	ResultCodes       map[string]int32  `json:"result_codes"`
	ControlErrorCodes map[string]uint32 `json:"control_error_codes"`
	ExportTicket      struct {
		Size   int            `json:"size"`
		Align  int            `json:"align"`
		Fields map[string]int `json:"fields"`
	} `json:"export_ticket"`
	Services map[string]uint32 `json:"services"`
	RingCtl  struct {
		fieldsBlock
		NeedWakeup uint32 `json:"need_wakeup"`
	} `json:"ring_ctl"`
	SQE    fieldsBlock       `json:"sqe"`
	States map[string]uint32 `json:"states"`
}

type fieldsBlock struct {
	Size   uint64            `json:"size"`
	Fields map[string]uint64 `json:"fields"`
}

func loadLayoutFile(t *testing.T) layoutFile {
	t.Helper()
	b, err := os.ReadFile("../ring-proto/layout.json")
	if err != nil {
		t.Fatalf("ring-proto/layout.json is the source of truth for this test: %v", err)
	}
	var f layoutFile
	if err := json.Unmarshal(b, &f); err != nil {
		t.Fatal(err)
	}
	return f
}

func checkFields(t *testing.T, what string, got fieldsBlock, want map[string]uint64, size uint64) {
	t.Helper()
	if got.Size != size {
		t.Errorf("%s size: layout.json %d, Go %d", what, got.Size, size)
	}
	for name, off := range want {
		j, ok := got.Fields[name]
		if !ok {
			t.Errorf("%s field %s: missing from layout.json", what, name)
		} else if j != off {
			t.Errorf("%s field %s: layout.json %d, Go %d", what, name, j, off)
		}
	}
	for name := range got.Fields {
		if _, ok := want[name]; !ok {
			t.Errorf("%s field %s: in layout.json but unknown to the Go client", what, name)
		}
	}
}

func TestLayoutMatchesRingProto(t *testing.T) {
	f := loadLayoutFile(t)
	if f.Magic != RegionMagic || f.LayoutVersion != LayoutVersion {
		t.Errorf("magic/version: json %#x/%d, Go %#x/%d", f.Magic, f.LayoutVersion, RegionMagic, LayoutVersion)
	}
	if f.Control.Magic != controlMagic || f.Control.Version != controlVersion || f.Control.WelcomeFDs != WelcomeFDs {
		t.Errorf("control constants: json %+v", f.Control)
	}
	checkFields(t, "header", f.Header, map[string]uint64{
		"magic": OffMagic, "version": OffVersion, "header_size": OffHeaderSize, "region_size": OffRegionSize,
		"sq_ctl_offset": OffSqCtlOffset, "sq_entries": OffSqEntries, "sq_array_offset": OffSqArrayOffset,
		"cq_ctl_offset": OffCqCtlOffset, "cq_entries": OffCqEntries, "cq_array_offset": OffCqArrayOffset,
		"buf_offset": OffBufOffset, "buf_size": OffBufSize, "engine_pid": OffEnginePid, "session_id": OffSessionID,
		"engine_epoch": OffEngineEpoch, "lease_ms": OffLeaseMs, "sqe_size": OffSqeSize, "cqe_size": OffCqeSize,
		"state": OffState, "close_reason": OffCloseReason, "engine_heartbeat": OffEngineHeartbeat,
		"client_heartbeat": OffClientHeartbeat,
	}, HeaderSize)
	checkFields(t, "ring_ctl", f.RingCtl.fieldsBlock, map[string]uint64{
		"head": CtlHead, "tail": CtlTail, "flags": CtlFlags, "invalid": CtlInvalid,
	}, RingCtlSize)
	if f.RingCtl.NeedWakeup != NeedWakeup {
		t.Errorf("need_wakeup: json %d, Go %d", f.RingCtl.NeedWakeup, NeedWakeup)
	}
	if f.Alignment.BufAlign != BufAlign || f.Alignment.IndexPad != indexPad || f.Alignment.MaxRingEntries != MaxRingEntries {
		t.Errorf("alignment: json %+v", f.Alignment)
	}
	// 64-bit atomics need 8-byte alignment.
	for _, off := range []uint64{OffMagic, OffRegionSize, OffBufOffset, OffBufSize, OffEngineEpoch, OffEngineHeartbeat, OffClientHeartbeat} {
		if off%8 != 0 {
			t.Errorf("64-bit header field at %d is not 8-aligned", off)
		}
	}

	l, err := NewLayout(256, 512, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	ex := f.Example
	if l.SQCtlOffset != ex.SQCtlOffset || l.CQCtlOffset != ex.CQCtlOffset || l.SQArrayOffset != ex.SQArrayOffset ||
		l.CQArrayOffset != ex.CQArrayOffset || l.BufOffset != ex.BufOffset || l.MinRegionSize != ex.MinRegionSize {
		t.Errorf("example layout: json %+v, Go %+v", ex, l)
	}

	states := map[string]SessionState{"init": StateInit, "ready": StateReady, "draining": StateDraining, "closed": StateClosed, "broken": StateBroken}
	for name, v := range f.States {
		if g, ok := states[name]; !ok || uint32(g) != v {
			t.Errorf("state %s: json %d, Go %d (known %v)", name, v, g, ok)
		}
	}
	if len(f.States) != len(states) {
		t.Errorf("states: json has %d, Go %d", len(f.States), len(states))
	}
	for name, v := range f.CloseReasons {
		if CloseReason(v).String() != name {
			t.Errorf("close reason %d: json %q, Go %q", v, name, CloseReason(v).String())
		}
	}
	ops := map[string]uint8{"nop": OpNop, "fill": OpFill, "send": OpSend,
		"export": OpExport, "unexport": OpUnexport, "read": OpRead, "write": OpWrite, "read_needle": OpReadNeedle}
	for name, v := range f.Opcodes {
		if g, ok := ops[name]; !ok || g != v {
			t.Errorf("opcode %s: json %d, Go %d (known %v)", name, v, g, ok)
		}
	}
	if len(f.Opcodes) != len(ops) {
		t.Errorf("opcodes: json has %d, Go %d", len(f.Opcodes), len(ops))
	}
	services := map[string]uint32{"echo": ServiceEcho}
	for name, v := range f.Services {
		if g, ok := services[name]; !ok || g != v {
			t.Errorf("service %s: json %d, Go %d (known %v)", name, v, g, ok)
		}
	}
	if len(f.Services) != len(services) {
		t.Errorf("services: json has %d, Go %d", len(f.Services), len(services))
	}
	names := map[int32]string{-1: "unknown-opcode", -2: "invalid-entry", -3: "out-of-bounds", -4: "shutting-down", -5: "internal",
		-6: "no-such-peer", -7: "peer-failed", -8: "timed-out", -9: "response-too-large", -10: "unknown-service",
		-11: "not-exported", -12: "permission-denied", -13: "no-such-volume", -14: "no-such-needle", -15: "needle-deleted",
		-16: "cookie-mismatch", -17: "corrupt", -18: "range-not-satisfiable", -19: "throttled", -20: "jwt-missing", -21: "jwt-invalid",
		-22: "jwt-expired", -23: "jwt-wrong-file"}
	for name, v := range f.ResultCodes {
		if names[v] != name {
			t.Errorf("result code %s = %d unknown to the Go client", name, v)
		}
		if ResultError(v).Error() != "swring: "+name+" ("+itoa(v)+")" {
			t.Errorf("result code %d message %q", v, ResultError(v).Error())
		}
	}
	ctl := map[string]ControlErrorCode{"VersionMismatch": CtlVersionMismatch, "BadRequest": CtlBadRequest,
		"RegionUnavailable": CtlRegionUnavailable, "TooManySessions": CtlTooManySessions, "ShuttingDown": CtlShuttingDown,
		"PermissionDenied": CtlPermissionDenied, "Malformed": CtlMalformed, "TooManyPeers": CtlTooManyPeers}
	for name, v := range f.ControlErrorCodes {
		if g, ok := ctl[name]; !ok || uint32(g) != v {
			t.Errorf("control error code %s: json %d, Go %d (known %v)", name, v, g, ok)
		}
	}
	if len(f.ControlErrorCodes) != len(ctl) {
		t.Errorf("control error codes: json has %d, Go %d", len(f.ControlErrorCodes), len(ctl))
	}
	tk := ExportTicket{ID: 0x0102030405060708, Key: 0x1112131415161718}
	var tb [ExportTicketLen]byte
	binary.LittleEndian.PutUint64(tb[f.ExportTicket.Fields["id"]:], tk.ID)
	binary.LittleEndian.PutUint64(tb[f.ExportTicket.Fields["key"]:], tk.Key)
	if got, err := DecodeExportTicket(tb[:]); f.ExportTicket.Size != ExportTicketLen || err != nil || got != tk {
		t.Errorf("export ticket: json %+v, Go decodes %+v, %v", f.ExportTicket, got, err)
	}
	if len(f.ResultCodes) != len(names) {
		t.Errorf("result codes: json has %d, Go %d", len(f.ResultCodes), len(names))
	}

	// Entry fields: encode distinct values and find them at the json offsets.
	e := SQE{Opcode: 0x11, Flags: 0x22, Reserved: 0x3344, Peer: 0x55667788, UserData: 0x0102030405060708,
		BufOffset: 0x1112131415161718, BufLen: 0x21222324, Aux: 0x31323334, Args: [4]uint64{0x41, 0x42, 0x43, 0x44}}
	var sb [SQESize]byte
	for i, w := range e.words() {
		binary.LittleEndian.PutUint64(sb[i*8:], w)
	}
	if f.SQE.Size != SQESize || f.CQE.Size != CQESize {
		t.Errorf("entry sizes: json %d/%d", f.SQE.Size, f.CQE.Size)
	}
	le := binary.LittleEndian
	sf := f.SQE.Fields
	checks := []struct {
		name      string
		got, want uint64
	}{
		{"opcode", uint64(sb[sf["opcode"]]), 0x11},
		{"flags", uint64(sb[sf["flags"]]), 0x22},
		{"reserved", uint64(le.Uint16(sb[sf["reserved"]:])), 0x3344},
		{"peer", uint64(le.Uint32(sb[sf["peer"]:])), 0x55667788},
		{"user_data", le.Uint64(sb[sf["user_data"]:]), 0x0102030405060708},
		{"buf_offset", le.Uint64(sb[sf["buf_offset"]:]), 0x1112131415161718},
		{"buf_len", uint64(le.Uint32(sb[sf["buf_len"]:])), 0x21222324},
		{"aux", uint64(le.Uint32(sb[sf["aux"]:])), 0x31323334},
		{"args", le.Uint64(sb[sf["args"]:]), 0x41},
	}
	c := CQE{UserData: 0x0102030405060708, Result: -3, Flags: 0x0a0b0c0d}
	var cb [CQESize]byte
	for i, w := range c.words() {
		binary.LittleEndian.PutUint64(cb[i*8:], w)
	}
	cf := f.CQE.Fields
	checks = append(checks,
		struct {
			name      string
			got, want uint64
		}{"cqe.user_data", le.Uint64(cb[cf["user_data"]:]), 0x0102030405060708},
		struct {
			name      string
			got, want uint64
		}{"cqe.result", uint64(int32(le.Uint32(cb[cf["result"]:])) + 100), 97},
		struct {
			name      string
			got, want uint64
		}{"cqe.flags", uint64(le.Uint32(cb[cf["flags"]:])), 0x0a0b0c0d},
	)
	for _, ch := range checks {
		if ch.got != ch.want {
			t.Errorf("entry field %s: read %#x at the json offset, want %#x", ch.name, ch.got, ch.want)
		}
	}
	if len(sf) != 9 || len(cf) != 3 {
		t.Errorf("entry fields: json has %d SQE / %d CQE fields", len(sf), len(cf))
	}
}

// TestReadNeedleLayoutMatchesRingProto checks the READ_NEEDLE constants and the NeedleMeta
// encoding against layout.json's read_needle block.
func TestReadNeedleLayoutMatchesRingProto(t *testing.T) {
	rn := loadLayoutFile(t).ReadNeedle
	if rn.MetaLen != NeedleMetaLen {
		t.Errorf("meta_len: json %d, Go %d", rn.MetaLen, NeedleMetaLen)
	}
	if rn.MaxJWTLen != MaxNeedleJWTLen || rn.JWTLenShift != needleJWTLenShift {
		t.Errorf("max_jwt_len/jwt_len_shift: json %d/%d, Go %d/%d", rn.MaxJWTLen, rn.JWTLenShift, MaxNeedleJWTLen, needleJWTLenShift)
	}
	checkMap(t, "read_needle flag", rn.Flags, map[string]uint8{"range": FlagReadNeedleRange})
	checkMap(t, "needle flag", rn.NeedleFlags, map[string]uint8{
		"gzip": NeedleFlagGzip, "has_name": NeedleFlagHasName, "has_mime": NeedleFlagHasMime,
		"has_last_modified": NeedleFlagHasLastModified, "has_ttl": NeedleFlagHasTTL, "has_pairs": NeedleFlagHasPairs,
		"chunk_manifest": NeedleFlagChunkManifest,
	})
	checkMap(t, "meta field", rn.MetaFields, map[string]uint64{
		"data_size": metaDataSize, "range_offset": metaRangeOffset, "last_modified": metaLastModified,
		"append_at_ns": metaAppendAtNs, "checksum": metaChecksum, "flags": metaFlags, "name_len": metaNameLen,
		"mime_len": metaMimeLen, "version": metaVersion, "ttl": metaTTL, "name": needleMetaFixed,
	})
	// Encode distinct values and find them at the json offsets; decode them back.
	m := NeedleMeta{DataSize: 0x0102030405060708, RangeOffset: 0x1112131415161718, LastModified: 0x2122232425262728,
		AppendAtNs: 0x3132333435363738, Checksum: 0x41424344, Flags: 0x51, Version: 3, TTL: [2]byte{0x61, 0x62},
		Name: []byte("a.txt"), Mime: []byte("text/plain")}
	b := appendNeedleMeta(nil, &m)
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
	d, err := DecodeNeedleMeta(b)
	if err != nil || d.DataSize != m.DataSize || d.RangeOffset != m.RangeOffset || d.LastModified != m.LastModified ||
		d.AppendAtNs != m.AppendAtNs || d.Checksum != m.Checksum || d.Flags != m.Flags || d.Version != m.Version ||
		d.TTL != m.TTL || string(d.Name) != "a.txt" || string(d.Mime) != "text/plain" {
		t.Errorf("round trip: %+v, %v", d, err)
	}
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

func itoa(v int32) string {
	b, _ := json.Marshal(v)
	return string(b)
}

func TestNewLayoutRejectsBadSizes(t *testing.T) {
	for _, c := range []struct {
		sq, cq uint32
		buf    uint64
	}{{3, 4, 4096}, {0, 4, 4096}, {4, 1 << 16, 4096}, {4, 4, 100}, {4, 4, 1<<40 + 4096}} {
		if _, err := NewLayout(c.sq, c.cq, c.buf); err == nil {
			t.Errorf("NewLayout(%v) accepted", c)
		}
	}
}

// heapRegion returns an 8-aligned zeroed region on the Go heap.
func heapRegion(n uint64) ([]uint64, Region) {
	words := make([]uint64, (n+7)/8)
	b := unsafeBytes(words)
	return words, NewRegion(b[:n])
}

func TestValidateHeader(t *testing.T) {
	l, _ := NewLayout(8, 16, 8192)
	mk := func(mut func(r Region)) error {
		_, r := heapRegion(l.MinRegionSize)
		WriteHeader(r, l, l.MinRegionSize, 1, 2, 3, 0)
		*r.U32(OffState) = uint32(StateReady)
		if mut != nil {
			mut(r)
		}
		_, err := ValidateHeader(r, l.MinRegionSize)
		return err
	}
	if err := mk(nil); err != nil {
		t.Fatalf("good header rejected: %v", err)
	}
	bad := map[string]struct {
		mut  func(r Region)
		want error
	}{
		"magic":       {func(r Region) { *r.U64(OffMagic) = 1 }, ErrRegionMalformed},
		"version":     {func(r Region) { *r.U32(OffVersion) = 9 }, ErrVersionMismatch},
		"not ready":   {func(r Region) { *r.U32(OffState) = uint32(StateInit) }, ErrRegionMalformed},
		"buf_offset":  {func(r Region) { *r.U64(OffBufOffset) += 8 }, ErrRegionMalformed},
		"cq_array":    {func(r Region) { *r.U32(OffCqArrayOffset) += 128 }, ErrRegionMalformed},
		"sq_entries":  {func(r Region) { *r.U32(OffSqEntries) = 6 }, ErrRegionMalformed},
		"sqe_size":    {func(r Region) { *(*uint16)(r.bytesPtr(OffSqeSize)) = 32 }, ErrRegionMalformed},
		"region_size": {func(r Region) { *r.U64(OffRegionSize) = 4096 }, ErrRegionMalformed},
		"too big":     {func(r Region) { *r.U64(OffRegionSize) = 1 << 30 }, ErrRegionMalformed},
		"header_size": {func(r Region) { *r.U32(OffHeaderSize) = 128 }, ErrRegionMalformed},
	}
	for name, c := range bad {
		err := mk(c.mut)
		if err == nil || !errorsIs(err, c.want) {
			t.Errorf("%s: got %v, want %v", name, err, c.want)
		}
	}
}
