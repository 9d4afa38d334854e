package swring

// Opcodes (ring-proto entry.rs `opcode`). Values never change once released.
const (
	// OpNop completes at once with result 0: a round trip with no work.
	OpNop uint8 = 1
	// OpFill writes BufLen bytes at BufOffset with the byte Aux&0xff; result = BufLen.
	OpFill uint8 = 2
	// OpSend is a request-response with a peer engine (SPEC.md §13): BufLen bytes at
	// BufOffset go to service Aux of the engine Peer (a handle from ConnectPeer); the
	// response lands at buffer offset Args[0], at most Args[1] bytes; result = the response
	// length. See Client.Send.
	OpSend uint8 = 3
	// OpExport exports BufLen bytes at BufOffset to peer engines with permissions Aux (1
	// read, 2 write, 3 both); the engine writes the export's ticket (random 64-bit id and
	// key, see ExportTicket) at buffer offset Args[0] (16 bytes, 8-aligned); result = 0.
	// See ExportRequest.
	OpExport uint8 = 4
	// OpUnexport ends export Args[0] (its id) of this session; result 0.
	OpUnexport uint8 = 5
	// OpRead reads BufLen bytes from offset Args[2] of export (Args[0] id, Args[1] key, both
	// 64-bit) at engine Peer into BufOffset; result = BufLen. A session whose READ/WRITEs
	// named too many exports that do not exist is refused for a while with ErrThrottled.
	OpRead uint8 = 6
	// OpWrite writes BufLen bytes from BufOffset to a peer's export, the mirror of OpRead.
	OpWrite uint8 = 7
	// OpReadNeedle reads a SeaweedFS needle from the volume server whose engine is Peer:
	// volume Aux, needle id Args[0], cookie Args[1] (low 32 bits). With FlagReadNeedleRange,
	// only Args[3] bytes from data offset Args[2] (clamped to the end of the data); without
	// it Args[2] and Args[3] must be 0 and the whole data is read. The BufLen bytes at
	// BufOffset (at least NeedleMetaLen) receive the needle's metadata (NeedleMeta) in their
	// first NeedleMetaLen bytes and the data after them; result = data bytes. See
	// Client.ReadNeedle.
	OpReadNeedle uint8 = 8
)

// SQE flags of OpReadNeedle (ring-proto entry.rs `read_needle_flags`).
const (
	// FlagReadNeedleRange: Args[2] and Args[3] are a byte range (offset, length) of the
	// needle's data; the length must fit the buffer's data capacity (BufLen-NeedleMetaLen).
	FlagReadNeedleRange uint8 = 1
)

// Services a peer engine answers SEND requests for (the SQE's aux; ring-proto entry.rs
// `service`).
const (
	// ServiceEcho answers with the request payload itself (tests, latency measurement).
	ServiceEcho uint32 = 1
)

// SQE is one submission entry as it travels through the SQ (64 bytes, 8 words):
//
//	 0 opcode u8 | 1 flags u8 | 2 reserved u16 | 4 peer u32
//	 8 user_data u64
//	16 buf_offset u64 (relative to the buffer area)
//	24 buf_len u32 | 28 aux u32
//	32 args [4]u64
//
// Client methods fill UserData themselves; callers set the other fields.
type SQE struct {
	Opcode    uint8
	Flags     uint8
	Reserved  uint16
	Peer      uint32
	UserData  uint64
	BufOffset uint64
	BufLen    uint32
	Aux       uint32
	Args      [4]uint64
}

// CQE is one completion entry (16 bytes, 2 words):
//
//	0 user_data u64 | 8 result i32 | 12 flags u32
type CQE struct {
	UserData uint64
	// Result is operation-specific when >= 0 and a result code when < 0 (see ResultError).
	Result int32
	Flags  uint32
}

// words encodes e as entry.rs Sqe::to_words does.
func (e *SQE) words() [SQEWords]uint64 {
	return [SQEWords]uint64{
		uint64(e.Opcode) | uint64(e.Flags)<<8 | uint64(e.Reserved)<<16 | uint64(e.Peer)<<32,
		e.UserData,
		e.BufOffset,
		uint64(e.BufLen) | uint64(e.Aux)<<32,
		e.Args[0], e.Args[1], e.Args[2], e.Args[3],
	}
}

func sqeFromWords(w *[SQEWords]uint64) SQE {
	return SQE{
		Opcode:    uint8(w[0]),
		Flags:     uint8(w[0] >> 8),
		Reserved:  uint16(w[0] >> 16),
		Peer:      uint32(w[0] >> 32),
		UserData:  w[1],
		BufOffset: w[2],
		BufLen:    uint32(w[3]),
		Aux:       uint32(w[3] >> 32),
		Args:      [4]uint64{w[4], w[5], w[6], w[7]},
	}
}

func (c CQE) words() [CQEWords]uint64 {
	return [CQEWords]uint64{c.UserData, uint64(uint32(c.Result)) | uint64(c.Flags)<<32}
}

func cqeFromWords(w0, w1 uint64) CQE {
	return CQE{UserData: w0, Result: int32(uint32(w1)), Flags: uint32(w1 >> 32)}
}

// Err returns nil for a successful completion and the ResultError for a failed one.
func (c CQE) Err() error {
	if c.Result >= 0 {
		return nil
	}
	return ResultError(c.Result)
}
