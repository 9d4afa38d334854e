package ring

import (
	"encoding/binary"
	"encoding/json"
	"os"
	"testing"
	"unsafe"

	"github.com/seaweed-ring/seaweed-ring/go-client/internal/wire"
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
	CQE      fieldsBlock `json:"cqe"`
	EntryCtl struct {
		Word  int    `json:"word"`
		Shift uint   `json:"shift"`
		Phase uint64 `json:"phase"`
	} `json:"entry_ctl"`
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
	b, err := os.ReadFile("../../ring-proto/layout.json")
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
	if f.Magic != wire.RegionMagic || f.LayoutVersion != wire.LayoutVersion {
		t.Errorf("magic/version: json %#x/%d, Go %#x/%d", f.Magic, f.LayoutVersion, wire.RegionMagic, wire.LayoutVersion)
	}
	if f.Control.Magic != wire.ControlMagic || f.Control.Version != wire.ControlVersion || f.Control.WelcomeFDs != wire.WelcomeFDs {
		t.Errorf("control constants: json %+v", f.Control)
	}
	checkFields(t, "header", f.Header, map[string]uint64{
		"magic": wire.OffMagic, "version": wire.OffVersion, "header_size": wire.OffHeaderSize, "region_size": wire.OffRegionSize,
		"sq_ctl_offset": wire.OffSqCtlOffset, "sq_entries": wire.OffSqEntries, "sq_array_offset": wire.OffSqArrayOffset,
		"cq_ctl_offset": wire.OffCqCtlOffset, "cq_entries": wire.OffCqEntries, "cq_array_offset": wire.OffCqArrayOffset,
		"buf_offset": wire.OffBufOffset, "buf_size": wire.OffBufSize, "engine_pid": wire.OffEnginePid, "session_id": wire.OffSessionID,
		"engine_epoch": wire.OffEngineEpoch, "lease_ms": wire.OffLeaseMs, "sqe_size": wire.OffSqeSize, "cqe_size": wire.OffCqeSize,
		"state": wire.OffState, "close_reason": wire.OffCloseReason, "engine_heartbeat": wire.OffEngineHeartbeat,
		"client_heartbeat": wire.OffClientHeartbeat,
	}, wire.HeaderSize)
	checkFields(t, "ring_ctl", f.RingCtl.fieldsBlock, map[string]uint64{
		"head": wire.CtlHead, "reserved": wire.CtlReserved, "flags": wire.CtlFlags, "invalid": wire.CtlInvalid,
	}, wire.RingCtlSize)
	if ec := f.EntryCtl; ec.Word != 0 || ec.Phase<<ec.Shift != wire.CtlPhase {
		t.Errorf("entry control byte: json %+v, Go phase %#x", ec, wire.CtlPhase)
	}
	if f.RingCtl.NeedWakeup != wire.NeedWakeup {
		t.Errorf("need_wakeup: json %d, Go %d", f.RingCtl.NeedWakeup, wire.NeedWakeup)
	}
	if f.Alignment.BufAlign != wire.BufAlign || f.Alignment.IndexPad != wire.IndexPad || f.Alignment.MaxRingEntries != wire.MaxRingEntries {
		t.Errorf("alignment: json %+v", f.Alignment)
	}
	// 64-bit atomics need 8-byte alignment.
	for _, off := range []uint64{wire.OffMagic, wire.OffRegionSize, wire.OffBufOffset, wire.OffBufSize, wire.OffEngineEpoch, wire.OffEngineHeartbeat, wire.OffClientHeartbeat} {
		if off%8 != 0 {
			t.Errorf("64-bit header field at %d is not 8-aligned", off)
		}
	}

	l, err := wire.NewLayout(256, 512, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	ex := f.Example
	if l.SQCtlOffset != ex.SQCtlOffset || l.CQCtlOffset != ex.CQCtlOffset || l.SQArrayOffset != ex.SQArrayOffset ||
		l.CQArrayOffset != ex.CQArrayOffset || l.BufOffset != ex.BufOffset || l.MinRegionSize != ex.MinRegionSize {
		t.Errorf("example layout: json %+v, Go %+v", ex, l)
	}

	states := map[string]wire.SessionState{"init": wire.StateInit, "ready": wire.StateReady, "draining": wire.StateDraining, "closed": wire.StateClosed, "broken": wire.StateBroken}
	for name, v := range f.States {
		if g, ok := states[name]; !ok || uint32(g) != v {
			t.Errorf("state %s: json %d, Go %d (known %v)", name, v, g, ok)
		}
	}
	if len(f.States) != len(states) {
		t.Errorf("states: json has %d, Go %d", len(f.States), len(states))
	}
	for name, v := range f.CloseReasons {
		if wire.CloseReason(v).String() != name {
			t.Errorf("close reason %d: json %q, Go %q", v, name, wire.CloseReason(v).String())
		}
	}
	ops := map[string]Opcode{"nop": OpNop, "fill": OpFill, "send": OpSend,
		"export": OpExport, "unexport": OpUnexport, "read": OpRead, "write": OpWrite, "read_needle": OpReadNeedle}
	for name, v := range f.Opcodes {
		if g, ok := ops[name]; !ok || uint8(g) != v {
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
	e := wire.SQE{Opcode: 0x11, Flags: 0x22, Reserved: 0x44, Peer: 0x55667788, UserData: 0x0102030405060708,
		BufOffset: 0x1112131415161718, BufLen: 0x21222324, Aux: 0x31323334, Args: [4]uint64{0x41, 0x42, 0x43, 0x44}}
	var sb [wire.SQESize]byte
	for i, w := range e.Words() {
		binary.LittleEndian.PutUint64(sb[i*8:], w)
	}
	if f.SQE.Size != wire.SQESize || f.CQE.Size != wire.CQESize {
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
		{"ctl (ring-owned, 0 in Words)", uint64(sb[sf["ctl"]]), 0},
		{"reserved", uint64(sb[sf["reserved"]]), 0x44},
		{"peer", uint64(le.Uint32(sb[sf["peer"]:])), 0x55667788},
		{"user_data", le.Uint64(sb[sf["user_data"]:]), 0x0102030405060708},
		{"buf_offset", le.Uint64(sb[sf["buf_offset"]:]), 0x1112131415161718},
		{"buf_len", uint64(le.Uint32(sb[sf["buf_len"]:])), 0x21222324},
		{"aux", uint64(le.Uint32(sb[sf["aux"]:])), 0x31323334},
		{"args", le.Uint64(sb[sf["args"]:]), 0x41},
	}
	c := wire.CQE{UserData: 0x0102030405060708, Result: -3, Flags: 0x0a0b}
	var cb [wire.CQESize]byte
	for i, w := range c.Words() {
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
		}{"cqe.flags", uint64(le.Uint16(cb[cf["flags"]:])), 0x0a0b},
		struct {
			name      string
			got, want uint64
		}{"cqe.ctl (ring-owned, 0 in Words)", uint64(cb[cf["ctl"]]), 0},
	)
	for _, ch := range checks {
		if ch.got != ch.want {
			t.Errorf("entry field %s: read %#x at the json offset, want %#x", ch.name, ch.got, ch.want)
		}
	}
	if len(sf) != 10 || len(cf) != 5 { // the CQE's reserved byte is written as 0 by Words
		t.Errorf("entry fields: json has %d SQE / %d CQE fields", len(sf), len(cf))
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
		if _, err := wire.NewLayout(c.sq, c.cq, c.buf); err == nil {
			t.Errorf("NewLayout(%v) accepted", c)
		}
	}
}

func TestValidateHeader(t *testing.T) {
	l, _ := wire.NewLayout(8, 16, 8192)
	mk := func(mut func(r wire.Region)) error {
		_, r := wire.HeapRegion(l.MinRegionSize)
		wire.WriteHeader(r, l, l.MinRegionSize, 1, 2, 3, 0)
		*r.U32(wire.OffState) = uint32(wire.StateReady)
		if mut != nil {
			mut(r)
		}
		_, err := wire.ValidateHeader(r, l.MinRegionSize)
		return err
	}
	if err := mk(nil); err != nil {
		t.Fatalf("good header rejected: %v", err)
	}
	bad := map[string]struct {
		mut  func(r wire.Region)
		want error
	}{
		"magic":       {func(r wire.Region) { *r.U64(wire.OffMagic) = 1 }, ErrRegionMalformed},
		"version":     {func(r wire.Region) { *r.U32(wire.OffVersion) = 9 }, ErrVersionMismatch},
		"not ready":   {func(r wire.Region) { *r.U32(wire.OffState) = uint32(wire.StateInit) }, ErrRegionMalformed},
		"buf_offset":  {func(r wire.Region) { *r.U64(wire.OffBufOffset) += 8 }, ErrRegionMalformed},
		"cq_array":    {func(r wire.Region) { *r.U32(wire.OffCqArrayOffset) += 128 }, ErrRegionMalformed},
		"sq_entries":  {func(r wire.Region) { *r.U32(wire.OffSqEntries) = 6 }, ErrRegionMalformed},
		"sqe_size":    {func(r wire.Region) { *(*uint16)(unsafe.Pointer(&r.Bytes(wire.OffSqeSize, 1)[0])) = 32 }, ErrRegionMalformed},
		"region_size": {func(r wire.Region) { *r.U64(wire.OffRegionSize) = 4096 }, ErrRegionMalformed},
		"too big":     {func(r wire.Region) { *r.U64(wire.OffRegionSize) = 1 << 30 }, ErrRegionMalformed},
		"header_size": {func(r wire.Region) { *r.U32(wire.OffHeaderSize) = 128 }, ErrRegionMalformed},
	}
	for name, c := range bad {
		err := mk(c.mut)
		if err == nil || !errorsIs(err, c.want) {
			t.Errorf("%s: got %v, want %v", name, err, c.want)
		}
	}
}

// The fake engine speaks the protocol with internal/wire's numbers: they must be this
// package's.
func TestWireCodesMatch(t *testing.T) {
	ops := map[Opcode]uint8{OpNop: wire.OpNop, OpFill: wire.OpFill, OpSend: wire.OpSend, OpReadNeedle: wire.OpReadNeedle}
	for op, w := range ops {
		if uint8(op) != w {
			t.Errorf("opcode %v: wire says %d", op, w)
		}
	}
	if FlagReadNeedleRange != wire.FlagReadNeedleRange || ServiceEcho != wire.ServiceEcho {
		t.Error("flag or service differs from wire's")
	}
	res := map[ResultError]int32{ErrUnknownOpcode: wire.ResUnknownOpcode, ErrInvalidEntry: wire.ResInvalidEntry,
		ErrOutOfBounds: wire.ResOutOfBounds, ErrShuttingDown: wire.ResShuttingDown, ErrNoSuchPeer: wire.ResNoSuchPeer,
		ErrResponseTooLarge: wire.ResResponseTooLarge, ErrUnknownService: wire.ResUnknownService,
		ErrNoSuchVolume: wire.ResNoSuchVolume, ErrNoSuchNeedle: wire.ResNoSuchNeedle, ErrNeedleDeleted: wire.ResNeedleDeleted,
		ErrCookieMismatch: wire.ResCookieMismatch, ErrRangeNotSatisfiable: wire.ResRangeNotSatisfiable}
	for e, w := range res {
		if int32(e) != w {
			t.Errorf("result code %v: wire says %d", e, w)
		}
	}
	ctl := map[ControlErrorCode]uint32{CtlVersionMismatch: wire.CtlErrVersionMismatch, CtlBadRequest: wire.CtlErrBadRequest,
		CtlRegionUnavailable: wire.CtlErrRegionUnavailable, CtlShuttingDown: wire.CtlErrShuttingDown, CtlMalformed: wire.CtlErrMalformed}
	for c, w := range ctl {
		if uint32(c) != w {
			t.Errorf("control error code %v: wire says %d", c, w)
		}
	}
	if MetaLenForTest := wire.NeedleMetaLen; MetaLenForTest != 1024 {
		t.Errorf("wire.NeedleMetaLen %d", MetaLenForTest)
	}
}
