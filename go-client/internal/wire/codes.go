package wire

// Protocol numbers for the engine side of the protocol (the fake engine of the tests). The
// ring package gives the same numbers their types (ring.Opcode, ring.ResultError,
// ring.ControlErrorCode) and names; its tests check that both agree.

// Opcodes, SQE flags and services (ring-proto entry.rs).
const (
	OpNop        uint8 = 1
	OpFill       uint8 = 2
	OpSend       uint8 = 3
	OpReadNeedle uint8 = 8

	// FlagReadNeedleRange: Args[2] and Args[3] of a READ_NEEDLE are a byte range.
	FlagReadNeedleRange uint8 = 1

	// ServiceEcho answers a SEND with its own payload.
	ServiceEcho uint32 = 1
)

// Result codes (SPEC.md §4) as a CQE carries them.
const (
	ResUnknownOpcode       int32 = -1
	ResInvalidEntry        int32 = -2
	ResOutOfBounds         int32 = -3
	ResShuttingDown        int32 = -4
	ResNoSuchPeer          int32 = -6
	ResResponseTooLarge    int32 = -9
	ResUnknownService      int32 = -10
	ResNoSuchVolume        int32 = -13
	ResNoSuchNeedle        int32 = -14
	ResNeedleDeleted       int32 = -15
	ResCookieMismatch      int32 = -16
	ResRangeNotSatisfiable int32 = -18
)

// Control error codes (SPEC.md §2) of an Error message.
const (
	CtlErrVersionMismatch   uint32 = 1
	CtlErrBadRequest        uint32 = 2
	CtlErrRegionUnavailable uint32 = 3
	CtlErrShuttingDown      uint32 = 5
	CtlErrMalformed         uint32 = 7
)

// NeedleMetaLen is how many bytes at the start of a READ_NEEDLE buffer hold the needle's
// metadata; the data follows (ring-proto needle.rs).
const NeedleMetaLen = 1024
