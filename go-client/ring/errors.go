package ring

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/seaweed-ring/seaweed-ring/go-client/internal/wire"
)

// Sentinel errors. Every error this package returns for these conditions satisfies
// errors.Is with the matching sentinel.
var (
	// ErrEngineUnavailable: the engine is not running, died (control socket EOF), shut the
	// session down (header state Closed/Broken, or Draining for new submissions), or broke
	// the ring protocol. Requests failed with it may or may not have executed. Dial again
	// (or call Reconnect) once the engine is back.
	ErrEngineUnavailable = errors.New("swring: engine unavailable")
	// ErrClosed: the Client was closed by its user.
	ErrClosed = errors.New("swring: client closed")
	// ErrVersionMismatch: the engine speaks another control or layout version.
	ErrVersionMismatch = wire.ErrVersionMismatch
	// ErrRegionMalformed: the shared region the engine sent does not match the layout.
	ErrRegionMalformed = wire.ErrRegionMalformed
	// ErrProtocol: the peer broke the protocol (corrupt ring index, bad control message,
	// completion for an unknown request). Session-ending protocol errors also match
	// ErrEngineUnavailable.
	ErrProtocol = wire.ErrProtocol
	// ErrBufferTooLarge: a buffer request exceeds the buffer area (or free space can never
	// satisfy it).
	ErrBufferTooLarge = errors.New("swring: buffer request larger than the buffer area")
	// ErrNeedleNotFound: the needle cannot be read because it is not there for this file
	// id: no such volume, no such needle, deleted, or a cookie that does not match — the
	// cases in which the volume server's HTTP GET answers 404. ErrNoSuchVolume,
	// ErrNoSuchNeedle, ErrNeedleDeleted and ErrCookieMismatch match it, and so does an
	// HTTP 404 of needle.Reader's HTTP path (which cannot tell the cases apart).
	ErrNeedleNotFound = errors.New("swring: needle not found")
	// ErrUnauthorized: the volume server checks read JWTs ([jwt.signing.read] in its
	// security.toml) and refused the read's: none was sent, it does not verify, it expired,
	// or it is for another file. ErrJWTMissing, ErrJWTInvalid, ErrJWTExpired and
	// ErrJWTWrongFile (the ring's answers) match it, and so does an HTTP 401 of the
	// needle.Reader's HTTP path (which cannot tell the cases apart).
	ErrUnauthorized = errors.New("swring: read JWT refused")
)

// ResultError is the negative result of a completion (ring-proto entry.rs ResultCode).
// Compare with the Err* result sentinels using errors.Is; unknown negative codes are still
// errors, reported with their number.
type ResultError int32

// Result codes (SPEC.md §4).
const (
	ErrUnknownOpcode ResultError = -1 // unknown-opcode
	ErrInvalidEntry  ResultError = -2 // invalid-entry
	ErrOutOfBounds   ResultError = -3 // out-of-bounds
	// ErrShuttingDown: the engine is shutting down and did not execute the request. It
	// also matches ErrEngineUnavailable.
	ErrShuttingDown ResultError = -4 // shutting-down
	ErrInternal     ResultError = -5 // internal
	// ErrNoSuchPeer: a SEND named peer 0 or a handle this engine never gave out
	// (ConnectPeer).
	ErrNoSuchPeer ResultError = -6 // no-such-peer
	// ErrPeerFailed: the peer engine could not be reached, or its connection failed while
	// the request was in flight. The engine reconnects on the next SEND.
	ErrPeerFailed ResultError = -7 // peer-failed
	// ErrTimedOut: no response within the engine's ucx.request-timeout-ms.
	ErrTimedOut ResultError = -8 // timed-out
	// ErrResponseTooLarge: the response does not fit the response buffer of the SEND.
	ErrResponseTooLarge ResultError = -9 // response-too-large
	// ErrUnknownService: the peer engine does not offer the requested service.
	ErrUnknownService ResultError = -10 // unknown-service
	// ErrNotExported: no export with this id and key (never was, wrong key, or ended).
	ErrNotExported ResultError = -11 // not-exported
	// ErrPermissionDenied: the export does not allow this operation.
	ErrPermissionDenied ResultError = -12 // permission-denied
	// ErrNoSuchVolume: READ_NEEDLE: the serving engine has no volume with this id. Matches
	// ErrNeedleNotFound.
	ErrNoSuchVolume ResultError = -13 // no-such-volume
	// ErrNoSuchNeedle: READ_NEEDLE: the volume has no needle with this id (never written).
	// Matches ErrNeedleNotFound.
	ErrNoSuchNeedle ResultError = -14 // no-such-needle
	// ErrNeedleDeleted: READ_NEEDLE: the needle was deleted. Matches ErrNeedleNotFound.
	ErrNeedleDeleted ResultError = -15 // needle-deleted
	// ErrCookieMismatch: READ_NEEDLE: the file id's cookie is not the needle's (no bytes
	// were sent). Matches ErrNeedleNotFound.
	ErrCookieMismatch ResultError = -16 // cookie-mismatch
	// ErrCorrupt: READ_NEEDLE: the stored needle failed its checks (CRC-32C, header): a
	// damaged volume file.
	ErrCorrupt ResultError = -17 // corrupt
	// ErrRangeNotSatisfiable: READ_NEEDLE: the range starts beyond the end of the needle's
	// data (HTTP 416).
	ErrRangeNotSatisfiable ResultError = -18 // range-not-satisfiable
	// ErrThrottled: READ/WRITE: this session named too many exports that do not exist
	// (wrong id or key) lately; refused without asking the peer. Retry later. READ_NEEDLE:
	// the serving engine's volume I/O queue is full (too many reads waiting for its disks);
	// needle.Reader reads over HTTP then.
	ErrThrottled ResultError = -19 // throttled
	// ErrJWTMissing: READ_NEEDLE: the serving engine checks read JWTs and the request
	// carried none. Matches ErrUnauthorized.
	ErrJWTMissing ResultError = -20 // jwt-missing
	// ErrJWTInvalid: READ_NEEDLE: the JWT does not verify with the volume server's read key
	// (signature, algorithm, format, or not valid yet). Matches ErrUnauthorized.
	ErrJWTInvalid ResultError = -21 // jwt-invalid
	// ErrJWTExpired: READ_NEEDLE: the JWT's exp has passed. Matches ErrUnauthorized.
	ErrJWTExpired ResultError = -22 // jwt-expired
	// ErrJWTWrongFile: READ_NEEDLE: the JWT's fid claim names another file. Matches
	// ErrUnauthorized.
	ErrJWTWrongFile ResultError = -23 // jwt-wrong-file
)

func (e ResultError) Error() string {
	name := e.String() // codes_string.go (stringer -linecomment): "out-of-bounds", ...
	if strings.HasPrefix(name, "ResultError(") {
		return "swring: result code " + strconv.Itoa(int(e))
	}
	return "swring: " + name + " (" + strconv.Itoa(int(e)) + ")"
}

// Is lets errors.Is(ErrShuttingDown, ErrEngineUnavailable) hold, makes the needle
// codes that mean "not there" (ErrNoSuchVolume, ErrNoSuchNeedle, ErrNeedleDeleted,
// ErrCookieMismatch) match ErrNeedleNotFound, and the JWT codes match ErrUnauthorized.
func (e ResultError) Is(target error) bool {
	switch target {
	case ErrEngineUnavailable:
		return e == ErrShuttingDown
	case ErrNeedleNotFound:
		return e == ErrNoSuchVolume || e == ErrNoSuchNeedle || e == ErrNeedleDeleted || e == ErrCookieMismatch
	case ErrUnauthorized:
		return e == ErrJWTMissing || e == ErrJWTInvalid || e == ErrJWTExpired || e == ErrJWTWrongFile
	}
	return false
}

// ControlErrorCode is the code of an Error message on the control socket.
type ControlErrorCode uint32

// Control error codes (SPEC.md §2).
const (
	CtlVersionMismatch   ControlErrorCode = 1 // version-mismatch
	CtlBadRequest        ControlErrorCode = 2 // bad-request
	CtlRegionUnavailable ControlErrorCode = 3 // region-unavailable
	CtlTooManySessions   ControlErrorCode = 4 // too-many-sessions
	CtlShuttingDown      ControlErrorCode = 5 // shutting-down
	CtlPermissionDenied  ControlErrorCode = 6 // permission-denied
	CtlMalformed         ControlErrorCode = 7 // malformed
	// CtlTooManyPeers: ConnectPeer refused, the session holds the engine's
	// control.max-peers-per-session registrations (the session goes on).
	CtlTooManyPeers ControlErrorCode = 8 // too-many-peers
)

// ControlError is the engine refusing a session (an Error message in answer to Hello).
// CtlVersionMismatch matches ErrVersionMismatch and CtlShuttingDown matches
// ErrEngineUnavailable under errors.Is.
type ControlError struct {
	Code    ControlErrorCode
	Message string
}

func (e *ControlError) Error() string {
	return fmt.Sprintf("swring: engine refused the session: %v: %s", e.Code, e.Message)
}

// Is maps control error codes onto the package sentinels.
func (e *ControlError) Is(target error) bool {
	switch e.Code {
	case CtlVersionMismatch:
		return target == ErrVersionMismatch
	case CtlShuttingDown:
		return target == ErrEngineUnavailable
	}
	return false
}

// sessionError is how waiters learn that the session ended: it matches both its cause and
// ErrEngineUnavailable (or ErrClosed).
type sessionError struct {
	sentinel error // ErrEngineUnavailable or ErrClosed
	detail   string
	cause    error // optional extra (ErrProtocol, a *ControlError ...)
}

func (e *sessionError) Error() string {
	s := e.sentinel.Error()
	if e.detail != "" {
		s += ": " + e.detail
	}
	if e.cause != nil {
		s += ": " + e.cause.Error()
	}
	return s
}

func (e *sessionError) Unwrap() []error {
	if e.cause != nil {
		return []error{e.sentinel, e.cause}
	}
	return []error{e.sentinel}
}
