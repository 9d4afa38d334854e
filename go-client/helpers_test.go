package swring

import (
	"errors"
	"time"
	"unsafe"
)

func unsafeBytes(w []uint64) []byte {
	return unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(w))), len(w)*8)
}

func (r Region) bytesPtr(off uint64) unsafe.Pointer { return unsafe.Pointer(&r.Bytes(off, 1)[0]) }

func errorsIs(err, target error) bool { return errors.Is(err, target) }

var testTimeout time.Duration = 60 * time.Second
