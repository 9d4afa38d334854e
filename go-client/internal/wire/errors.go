// Package wire is the seaweed-ring protocol as bytes in shared memory and on the control
// socket (ring-proto's layout.rs, ring.rs, entry.rs and control.rs; SPEC.md): the region
// layout and header, the single-producer single-consumer rings, submission and completion
// entries, and control messages. Both sides use it: the ring package (the client) and the
// fake engine of the tests.
package wire

import "errors"

// Sentinel errors of the protocol. The ring package exports the same values
// (ring.ErrVersionMismatch, ...), so errors.Is holds with either name.
var (
	// ErrVersionMismatch: the engine speaks another control or layout version.
	ErrVersionMismatch = errors.New("swring: protocol version mismatch")
	// ErrRegionMalformed: the shared region the engine sent does not match the layout.
	ErrRegionMalformed = errors.New("swring: shared region malformed")
	// ErrProtocol: the peer broke the protocol (corrupt ring index, bad control message,
	// completion for an unknown request). Session-ending protocol errors also match
	// ErrEngineUnavailable.
	ErrProtocol = errors.New("swring: protocol violation")
)
