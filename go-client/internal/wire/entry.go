package wire

// SQE is one submission entry as it travels through the SQ (64 bytes, 8 words):
//
//	 0 opcode u8 | 1 flags u8 | 2 ctl u8 | 3 reserved u8 | 4 peer u32
//	 8 user_data u64
//	16 buf_offset u64 (relative to the buffer area)
//	24 buf_len u32 | 28 aux u32
//	32 args [4]u64
//
// Byte 2 (ctl) is the ring's control byte (CtlPhase): the ring code sets it,
// so SQE has no field for it. Client methods fill UserData themselves; callers set the
// other fields.
type SQE struct {
	Opcode    uint8
	Flags     uint8
	Reserved  uint8
	Peer      uint32
	UserData  uint64
	BufOffset uint64
	BufLen    uint32
	Aux       uint32
	Args      [4]uint64
}

// CQE is one completion entry (16 bytes, 2 words):
//
//	0 flags u16 | 2 ctl u8 | 3 reserved u8 | 4 result i32 | 8 user_data u64
//
// Byte 2 (ctl) is the ring's control byte (CtlPhase), set by the ring code.
type CQE struct {
	UserData uint64
	// Result is operation-specific when >= 0 and a result code when < 0 (see ResultError).
	Result int32
	Flags  uint16
}

// Ring control byte (bits 16..23 of word 0 of every entry, SPEC.md §5-6).
const (
	ctlShift = 16
	// CtlPhase is the lap parity of the index an entry was published at: set on the first
	// lap of the ring, clear on the second, and so on.
	CtlPhase uint64 = 1 << ctlShift
	// CtlMask is the whole control byte.
	CtlMask uint64 = 0xff << ctlShift
)

// Words encodes e as entry.rs Sqe::to_words does.
func (e *SQE) Words() [SQEWords]uint64 {
	return [SQEWords]uint64{
		uint64(e.Opcode) | uint64(e.Flags)<<8 | uint64(e.Reserved)<<24 | uint64(e.Peer)<<32,
		e.UserData,
		e.BufOffset,
		uint64(e.BufLen) | uint64(e.Aux)<<32,
		e.Args[0], e.Args[1], e.Args[2], e.Args[3],
	}
}

// SQEFromWords decodes the words of an SQE (entry.rs Sqe::from_words).
func SQEFromWords(w *[SQEWords]uint64) SQE {
	return SQE{
		Opcode:    uint8(w[0]),
		Flags:     uint8(w[0] >> 8),
		Reserved:  uint8(w[0] >> 24),
		Peer:      uint32(w[0] >> 32),
		UserData:  w[1],
		BufOffset: w[2],
		BufLen:    uint32(w[3]),
		Aux:       uint32(w[3] >> 32),
		Args:      [4]uint64{w[4], w[5], w[6], w[7]},
	}
}

// Words encodes c as entry.rs Cqe::to_words does (control byte 0).
func (c CQE) Words() [CQEWords]uint64 {
	return [CQEWords]uint64{uint64(c.Flags) | uint64(uint32(c.Result))<<32, c.UserData}
}

// CQEFromWords decodes the words of a CQE.
func CQEFromWords(w0, w1 uint64) CQE {
	return CQE{UserData: w1, Result: int32(uint32(w0 >> 32)), Flags: uint16(w0)}
}
