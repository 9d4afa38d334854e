package wire

import (
	"sync/atomic"
	"unsafe"
)

// HeapRegion returns an 8-aligned zeroed region of n bytes on the Go heap (for tests of the
// rings and the header, which need no engine). words keeps the memory alive.
func HeapRegion(n uint64) (words []uint64, r Region) {
	words = make([]uint64, (n+7)/8)
	b := unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(words))), len(words)*8)
	return words, NewRegion(b[:n])
}

// HeapRings is an SQ and a CQ on heap memory with both sides of each: the client's
// (SQProd, CQCons) and the engine's (SQCons, CQProd). For tests.
type HeapRings struct {
	Mem    []uint64
	Reg    Region
	L      Layout
	SQProd Producer
	SQCons Consumer
	CQProd Producer
	CQCons Consumer
}

// NewHeapRings lays out rings of sq and cq entries (and a 4096-byte buffer area) on the heap.
func NewHeapRings(sq, cq uint32) (*HeapRings, error) {
	l, err := NewLayout(sq, cq, 4096)
	if err != nil {
		return nil, err
	}
	mem, reg := HeapRegion(l.MinRegionSize)
	h := &HeapRings{Mem: mem, Reg: reg, L: l}
	h.SQProd = Producer{Ring: NewRing("sq", reg, l.SQCtlOffset, l.SQArrayOffset, sq, SQEWords)}
	h.SQCons = Consumer{Ring: NewRing("sq", reg, l.SQCtlOffset, l.SQArrayOffset, sq, SQEWords)}
	h.CQProd = Producer{Ring: NewRing("cq", reg, l.CQCtlOffset, l.CQArrayOffset, cq, CQEWords)}
	h.CQCons = Consumer{Ring: NewRing("cq", reg, l.CQCtlOffset, l.CQArrayOffset, cq, CQEWords)}
	return h, nil
}

// SetIndices moves every index (private and shared) of both rings to start, with every slot
// holding an entry of the lap before (so none looks ready).
func (h *HeapRings) SetIndices(start uint32) {
	for _, p := range []*Producer{&h.SQProd, &h.CQProd} {
		p.tail, p.published, p.headCache = start, start, start
		atomic.StoreUint32(p.Ctl.Head, start)
		for i := uint32(0); i < p.entries; i++ {
			index := start - p.entries + i
			atomic.StoreUint64(&p.slot(index)[0], p.phase(index))
		}
	}
	for _, c := range []*Consumer{&h.SQCons, &h.CQCons} {
		c.head, c.ready = start, 0
	}
}
