package wire

//go:generate go run golang.org/x/tools/cmd/stringer@v0.30.0 -type=SessionState,CloseReason -linecomment -output=state_string.go

// SessionState is the lifecycle state the engine stores in the region header.
type SessionState uint32

// Session states (SPEC.md §8).
const (
	StateInit     SessionState = 0 // init
	StateReady    SessionState = 1 // ready
	StateDraining SessionState = 2 // draining
	StateClosed   SessionState = 3 // closed
	StateBroken   SessionState = 4 // broken
)

// Terminal reports whether the engine will never complete another entry of the session.
func (s SessionState) Terminal() bool { return s == StateClosed || s == StateBroken }

// CloseReason says why the engine ended a session (header close_reason).
type CloseReason uint32

// Close reasons (SPEC.md §8).
const (
	CloseNone           CloseReason = 0 // none
	CloseClientClosed   CloseReason = 1 // client-closed
	CloseEngineShutdown CloseReason = 2 // engine-shutdown
	CloseBadSqTail      CloseReason = 3 // bad-sq-tail
	CloseBadCqHead      CloseReason = 4 // bad-cq-head
	CloseLeaseExpired   CloseReason = 5 // lease-expired
	CloseDrainTimeout   CloseReason = 6 // drain-timeout
)
