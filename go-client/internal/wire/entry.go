package wire

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

// Words encodes e as entry.rs Sqe::to_words does.
func (e *SQE) Words() [SQEWords]uint64 {
	return [SQEWords]uint64{
		uint64(e.Opcode) | uint64(e.Flags)<<8 | uint64(e.Reserved)<<16 | uint64(e.Peer)<<32,
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
		Reserved:  uint16(w[0] >> 16),
		Peer:      uint32(w[0] >> 32),
		UserData:  w[1],
		BufOffset: w[2],
		BufLen:    uint32(w[3]),
		Aux:       uint32(w[3] >> 32),
		Args:      [4]uint64{w[4], w[5], w[6], w[7]},
	}
}

// Words encodes c as entry.rs Cqe::to_words does.
func (c CQE) Words() [CQEWords]uint64 {
	return [CQEWords]uint64{c.UserData, uint64(uint32(c.Result)) | uint64(c.Flags)<<32}
}

// CQEFromWords decodes the words of a CQE.
func CQEFromWords(w0, w1 uint64) CQE {
	return CQE{UserData: w0, Result: int32(uint32(w1)), Flags: uint32(w1 >> 32)}
}
