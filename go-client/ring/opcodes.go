package ring

// Opcode is the operation of a request (SQE opcode; ring-proto entry.rs `opcode`).
type Opcode uint8

// Opcodes. Values never change once released.
const (
	// OpNop completes at once with result 0: a round trip with no work.
	OpNop Opcode = 1 // nop
	// OpFill writes BufLen bytes at BufOffset with the byte Aux&0xff; result = BufLen.
	OpFill Opcode = 2 // fill
	// OpSend is a request-response with a peer engine (SPEC.md §13): BufLen bytes at
	// BufOffset go to service Aux of the engine Peer (a handle from ConnectPeer); the
	// response lands at buffer offset Args[0], at most Args[1] bytes; result = the response
	// length. See Client.Send.
	OpSend Opcode = 3 // send
	// OpExport exports BufLen bytes at BufOffset to peer engines with permissions Aux (1
	// read, 2 write, 3 both); the engine writes the export's ticket (random 64-bit id and
	// key, see ExportTicket) at buffer offset Args[0] (16 bytes, 8-aligned); result = 0.
	// See ExportRequest.
	OpExport Opcode = 4 // export
	// OpUnexport ends export Args[0] (its id) of this session; result 0.
	OpUnexport Opcode = 5 // unexport
	// OpRead reads BufLen bytes from offset Args[2] of export (Args[0] id, Args[1] key, both
	// 64-bit) at engine Peer into BufOffset; result = BufLen. A session whose READ/WRITEs
	// named too many exports that do not exist is refused for a while with ErrThrottled.
	OpRead Opcode = 6 // read
	// OpWrite writes BufLen bytes from BufOffset to a peer's export, the mirror of OpRead.
	OpWrite Opcode = 7 // write
	// OpReadNeedle reads a SeaweedFS needle from the volume server whose engine is Peer:
	// volume Aux, needle id Args[0], cookie Args[1] (low 32 bits). With FlagReadNeedleRange,
	// only Args[3] bytes from data offset Args[2] (clamped to the end of the data); without
	// it Args[2] and Args[3] must be 0 and the whole data is read. The BufLen bytes at
	// BufOffset (at least needle.MetaLen = 1024) receive the needle's metadata (needle.Meta) in their
	// first needle.MetaLen bytes and the data after them; result = data bytes. See the
	// needle package (ReadRequest, ReadRangeRequest, Decode).
	OpReadNeedle Opcode = 8 // read-needle
)

// SQE flags of OpReadNeedle (ring-proto entry.rs `read_needle_flags`).
const (
	// FlagReadNeedleRange: Args[2] and Args[3] are a byte range (offset, length) of the
	// needle's data; the length must fit the buffer's data capacity (BufLen-needle.MetaLen).
	FlagReadNeedleRange uint8 = 1
)

// Services a peer engine answers SEND requests for (the SQE's aux; ring-proto entry.rs
// `service`).
const (
	// ServiceEcho answers with the request payload itself (tests, latency measurement).
	ServiceEcho uint32 = 1
)
