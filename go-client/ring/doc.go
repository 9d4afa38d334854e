// Package ring is the Go client of the seaweed-ring engine: a shared-memory data path in
// which a Go process and the engine exchange requests through io_uring-style submission
// and completion rings, with no cgo and no system call on the hot path.
//
// # Model
//
// A Client is one session. Dial connects to the engine's control socket (a Unix
// SOCK_SEQPACKET socket, DefaultSocketPath by default), receives the session's memory
// region and two doorbell pipe ends, maps the region and checks its header against the layout this
// package was built for. From then on:
//
//   - Submit / SubmitBatch write requests (SQEs) into the submission queue and publish them
//     with one atomic store; the engine worker is woken with a doorbell-pipe write only when it
//     advertises that it sleeps (NEED_WAKEUP).
//   - Wait / Do wait for the completion (CQE) carrying the request's user data. A waiting
//     goroutine reaps the completion queue itself, spinning for WithSpin before it sleeps
//     on the CQ doorbell through the Go netpoller; completions of other goroutines'
//     requests are handed to them. A background goroutine reaps when nobody waits.
//   - Buffers (AllocBuffer) are pieces of the shared buffer area. Requests point into them
//     by offset; results are read in place through Buffer.Bytes (zero copy).
//
// Every blocking call takes a context.Context. When it ends, the call returns ctx.Err()
// at once; the request may still execute, its completion is reaped later and discarded,
// and a Buffer it used is not reused until then.
//
// # Remote requests
//
// ConnectPeer registers another engine's UCX listener address with this session's engine
// and returns a Peer handle; Send (SubmitSend, SendRequest for batches) sends the bytes of
// a request buffer to a service of that engine (ServiceEcho) and receives the response
// into a response buffer, both in the shared buffer area and touched by the engine in
// place. Failed remote requests return ErrNoSuchPeer, ErrPeerFailed, ErrTimedOut,
// ErrResponseTooLarge or ErrUnknownService; an address the engine does not take returns an
// error matching ErrBadPeerAddress without ending the session.
//
// # SeaweedFS needles
//
// OpReadNeedle reads a SeaweedFS needle from the volume server whose engine is a Peer. The
// needle package (github.com/seaweed-ring/seaweed-ring/go-client/needle) builds the
// requests, decodes the metadata, and reads needles by file id with HTTP fallback. Its
// answers are result codes of this package: ErrNoSuchVolume, ErrNoSuchNeedle,
// ErrNeedleDeleted, ErrCookieMismatch (all matching ErrNeedleNotFound), ErrCorrupt,
// ErrRangeNotSatisfiable, and the read-JWT refusals (matching ErrUnauthorized).
//
// # Errors
//
// Failed operations return a ResultError (compare with errors.Is against ErrOutOfBounds,
// ErrUnknownOpcode, ...). When the engine dies (control socket EOF), shuts down or ends the
// session, every outstanding and future call fails with an error matching
// ErrEngineUnavailable; Dial again (or Reconnect) once it is back. Close is idempotent,
// lets the engine finish accepted requests, and releases every waiter with ErrClosed.
//
// # Limits
//
// The engine accepts at most SQ+CQ size requests at a time (a full SQ is backpressure:
// Submit waits). The client tracks up to MaxInFlight requests from Submit to Wait; the
// requests of one SubmitBatch publication are tracked together, so that a batch costs a
// few atomic operations rather than a few per request, and give their slots back together. Nothing
// of Go's heap is ever stored in shared memory; all shared 64-bit words are 8-byte aligned.
//
// The wire protocol is specified in ring-proto/SPEC.md of the seaweed-ring repository; the
// region layout, the rings and the control messages are implemented in internal/wire.
package ring

//go:generate go run golang.org/x/tools/cmd/stringer@v0.30.0 -type=ResultError,ControlErrorCode,Opcode -linecomment -output=codes_string.go
