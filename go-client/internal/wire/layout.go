package wire

import (
	"fmt"
	"sync/atomic"
	"unsafe"
)

// Byte layout of a session region (ring-proto/src/layout.rs is authoritative; SPEC.md §3
// draws the same picture; layout_test.go checks these numbers against ring-proto/layout.json).
//
//	offset 0       +-------------------------+
//	               | RegionHeader      256 B |  engine-written; the client writes only client_heartbeat
//	256            +-------------------------+
//	               | RingCtl (SQ)      384 B |  head | reserved | flags+invalid, one 128-B line each
//	640            +-------------------------+
//	               | RingCtl (CQ)      384 B |
//	1024           +-------------------------+
//	               | SQ array  sq_entries*64 |
//	cq_array_off   +-------------------------+  128-aligned
//	               | CQ array  cq_entries*16 |
//	buf_offset     +-------------------------+  4096-aligned
//	               | buffer area   buf_size  |  SQE buf_offset is relative to HERE
//	buf_off+size   +-------------------------+
//	               | (slack up to region_size)|
//	region_size    +-------------------------+
//
// All integers are little-endian; every 64-bit field is 8-byte aligned, so sync/atomic
// 64-bit operations on pointers into the mapping are valid.
const (
	// RegionMagic is b"SWRING\x00\x01" read as a little-endian uint64.
	RegionMagic uint64 = 0x0100474E49525753
	// LayoutVersion is the region/entry layout version this package speaks.
	LayoutVersion uint32 = 3

	HeaderSize  = 256
	RingCtlSize = 384
	SQESize     = 64
	CQESize     = 16
	IndexPad    = 128
	BufAlign    = 4096

	// MaxRingEntries is the largest SQ or CQ size the protocol allows.
	MaxRingEntries uint32 = 1 << 15
	MaxBufSize     uint64 = 1 << 40

	SQEWords = SQESize / 8
	CQEWords = CQESize / 8
)

// Header field offsets (RegionHeader).
const (
	OffMagic           = 0
	OffVersion         = 8
	OffHeaderSize      = 12
	OffRegionSize      = 16
	OffSqCtlOffset     = 24
	OffSqEntries       = 28
	OffSqArrayOffset   = 32
	OffCqCtlOffset     = 36
	OffCqEntries       = 40
	OffCqArrayOffset   = 44
	OffBufOffset       = 48
	OffBufSize         = 56
	OffEnginePid       = 64
	OffSessionID       = 68
	OffEngineEpoch     = 72
	OffLeaseMs         = 80
	OffSqeSize         = 84
	OffCqeSize         = 86
	OffState           = 88
	OffCloseReason     = 92
	OffEngineHeartbeat = 96
	OffClientHeartbeat = 104
)

// RingCtl field offsets, relative to the start of one ring's control block.
const (
	CtlHead     = 0
	CtlReserved = 128 // zero; the producer's tail until layout 2
	CtlFlags    = 256
	CtlInvalid  = 260

	// NeedWakeup in a ring's flags: its consumer sleeps; the producer must signal.
	NeedWakeup uint32 = 1
)

// Layout is where everything sits in one region, computed from the ring and buffer sizes
// exactly as ring-proto's RegionLayout::new does.
type Layout struct {
	SQEntries     uint32
	CQEntries     uint32
	SQCtlOffset   uint64
	CQCtlOffset   uint64
	SQArrayOffset uint64
	CQArrayOffset uint64
	BufOffset     uint64
	BufSize       uint64
	// MinRegionSize is the number of bytes the layout needs; a mapping may be larger.
	MinRegionSize uint64
}

func alignUp(v, a uint64) uint64 { return (v + a - 1) &^ (a - 1) }

func checkRing(name string, n uint32) error {
	if n < 2 || n > MaxRingEntries || n&(n-1) != 0 {
		return fmt.Errorf("%w: %s %d is not a power of two between 2 and %d", ErrRegionMalformed, name, n, MaxRingEntries)
	}
	return nil
}

// NewLayout computes the layout of a region with the given sizes, or reports why the sizes
// are not allowed. The returned error wraps ErrRegionMalformed.
func NewLayout(sqEntries, cqEntries uint32, bufSize uint64) (Layout, error) {
	if err := checkRing("sq-entries", sqEntries); err != nil {
		return Layout{}, err
	}
	if err := checkRing("cq-entries", cqEntries); err != nil {
		return Layout{}, err
	}
	if bufSize%BufAlign != 0 || bufSize > MaxBufSize {
		return Layout{}, fmt.Errorf("%w: buffer size %d is not a multiple of %d (or over 1 TiB)", ErrRegionMalformed, bufSize, BufAlign)
	}
	l := Layout{SQEntries: sqEntries, CQEntries: cqEntries, BufSize: bufSize}
	l.SQCtlOffset = HeaderSize
	l.CQCtlOffset = l.SQCtlOffset + RingCtlSize
	l.SQArrayOffset = l.CQCtlOffset + RingCtlSize
	l.CQArrayOffset = alignUp(l.SQArrayOffset+uint64(sqEntries)*SQESize, IndexPad)
	l.BufOffset = alignUp(l.CQArrayOffset+uint64(cqEntries)*CQESize, BufAlign)
	l.MinRegionSize = l.BufOffset + bufSize
	return l, nil
}

// Region is a view of a mapped (or, in tests, heap-allocated) Region. base is 8-aligned.
// It never holds Go pointers inside the shared bytes; it only points at them.
type Region struct {
	Base unsafe.Pointer
	size uint64
}

func NewRegion(b []byte) Region {
	if len(b) == 0 {
		panic("swring: empty region")
	}
	p := unsafe.Pointer(unsafe.SliceData(b))
	if uintptr(p)%8 != 0 {
		panic("swring: region is not 8-byte aligned")
	}
	return Region{Base: p, size: uint64(len(b))}
}

func (r Region) U32(off uint64) *uint32 {
	if off%4 != 0 || off+4 > r.size {
		panic("swring: bad u32 offset")
	}
	return (*uint32)(unsafe.Add(r.Base, off))
}

func (r Region) U64(off uint64) *uint64 {
	if off%8 != 0 || off+8 > r.size {
		panic("swring: bad u64 offset")
	}
	return (*uint64)(unsafe.Add(r.Base, off))
}

func (r Region) U16(off uint64) uint16 {
	if off%2 != 0 || off+2 > r.size {
		panic("swring: bad u16 offset")
	}
	return *(*uint16)(unsafe.Add(r.Base, off))
}

func (r Region) Bytes(off, n uint64) []byte {
	if off+n > r.size || off+n < off {
		panic("swring: bad byte range")
	}
	return unsafe.Slice((*byte)(unsafe.Add(r.Base, off)), n)
}

// state loads the header state. SYNC POINT: Go atomics are sequentially consistent, so this
// is at least the acquire load that pairs with the engine's Release store of `state`.
func (r Region) State() SessionState { return SessionState(atomic.LoadUint32(r.U32(OffState))) }

// ValidateHeader checks a header written by the engine (SPEC.md §3 "Validation"): state
// Ready first (acquire), then every field against the layout recomputed from its sizes.
// mapped is the length of the mapping. Errors wrap ErrRegionMalformed or ErrVersionMismatch.
func ValidateHeader(r Region, mapped uint64) (Layout, error) {
	if r.size < HeaderSize || mapped < HeaderSize {
		return Layout{}, fmt.Errorf("%w: mapping of %d bytes is smaller than the header", ErrRegionMalformed, mapped)
	}
	if st := r.State(); st != StateReady {
		return Layout{}, fmt.Errorf("%w: session state is %v, not ready", ErrRegionMalformed, st)
	}
	// Plain fields never change after Ready; atomic loads keep the race detector and the
	// compiler honest about memory another process writes.
	if m := atomic.LoadUint64(r.U64(OffMagic)); m != RegionMagic {
		return Layout{}, fmt.Errorf("%w: region magic %#x is not %#x", ErrRegionMalformed, m, RegionMagic)
	}
	if v := atomic.LoadUint32(r.U32(OffVersion)); v != LayoutVersion {
		return Layout{}, fmt.Errorf("%w: region layout version %d, this client speaks %d", ErrVersionMismatch, v, LayoutVersion)
	}
	ld32 := func(off uint64) uint32 { return atomic.LoadUint32(r.U32(off)) }
	ld64 := func(off uint64) uint64 { return atomic.LoadUint64(r.U64(off)) }
	l, err := NewLayout(ld32(OffSqEntries), ld32(OffCqEntries), ld64(OffBufSize))
	if err != nil {
		return Layout{}, err
	}
	checks := [...]struct {
		name          string
		found, expect uint64
	}{
		{"header_size", uint64(ld32(OffHeaderSize)), HeaderSize},
		{"sq_ctl_offset", uint64(ld32(OffSqCtlOffset)), l.SQCtlOffset},
		{"cq_ctl_offset", uint64(ld32(OffCqCtlOffset)), l.CQCtlOffset},
		{"sq_array_offset", uint64(ld32(OffSqArrayOffset)), l.SQArrayOffset},
		{"cq_array_offset", uint64(ld32(OffCqArrayOffset)), l.CQArrayOffset},
		{"buf_offset", ld64(OffBufOffset), l.BufOffset},
		{"sqe_size", uint64(r.U16(OffSqeSize)), SQESize},
		{"cqe_size", uint64(r.U16(OffCqeSize)), CQESize},
	}
	for _, c := range checks {
		if c.found != c.expect {
			return Layout{}, fmt.Errorf("%w: header field %s is %d, the layout needs %d", ErrRegionMalformed, c.name, c.found, c.expect)
		}
	}
	rs := ld64(OffRegionSize)
	if rs < l.MinRegionSize || mapped < rs || r.size < rs {
		return Layout{}, fmt.Errorf("%w: region of %d bytes (mapped %d) is smaller than its layout (%d bytes)", ErrRegionMalformed, rs, mapped, l.MinRegionSize)
	}
	return l, nil
}

// WriteHeader fills a zeroed header for l and leaves state at Init (engine side).
func WriteHeader(r Region, l Layout, regionSize uint64, pid, session uint32, epoch uint64, leaseMs uint32) {
	*r.U64(OffMagic) = RegionMagic
	*r.U32(OffVersion) = LayoutVersion
	*r.U32(OffHeaderSize) = HeaderSize
	*r.U64(OffRegionSize) = regionSize
	*r.U32(OffSqCtlOffset) = uint32(l.SQCtlOffset)
	*r.U32(OffSqEntries) = l.SQEntries
	*r.U32(OffSqArrayOffset) = uint32(l.SQArrayOffset)
	*r.U32(OffCqCtlOffset) = uint32(l.CQCtlOffset)
	*r.U32(OffCqEntries) = l.CQEntries
	*r.U32(OffCqArrayOffset) = uint32(l.CQArrayOffset)
	*r.U64(OffBufOffset) = l.BufOffset
	*r.U64(OffBufSize) = l.BufSize
	*r.U32(OffEnginePid) = pid
	*r.U32(OffSessionID) = session
	*r.U64(OffEngineEpoch) = epoch
	*r.U32(OffLeaseMs) = leaseMs
	*(*uint16)(unsafe.Add(r.Base, OffSqeSize)) = SQESize
	*(*uint16)(unsafe.Add(r.Base, OffCqeSize)) = CQESize
}
