package ring

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
)

// ErrNoBufferSpace is returned by TryAllocBuffer when the buffer area has no free run of the
// requested size right now.
var ErrNoBufferSpace = errors.New("swring: no free buffer space")

// Buffer is a piece of the shared buffer area: Bytes is a view straight into the mapping
// (zero copy), and Offset is what requests carry in SQE.BufOffset. A Buffer is a small
// value; copies refer to the same memory. Release it exactly once when done.
//
// A Buffer is never handed out again while the engine may still write it: every request
// submitted with it (Request.Buf) holds a reference until its completion has been reaped,
// even if the caller gave up waiting (context cancelled), so Release during or before a
// late completion only defers the reuse.
type Buffer struct {
	p     *bufferPool
	data  []byte
	block uint32 // first block of the allocation
	gen   uint32
	off   uint64 // offset of data in the allocation (Slice)
}

// Bytes returns the buffer's memory. Do not use it after Release.
func (b Buffer) Bytes() []byte { return b.data }

// Len is the usable length (the size asked for, not the rounded-up block size).
func (b Buffer) Len() int { return len(b.data) }

// Offset is the buffer's offset in the buffer area: the value for SQE.BufOffset.
func (b Buffer) Offset() uint64 { return uint64(b.block)*b.p.blockSize + b.off }

// Slice returns the n bytes of b from off as a Buffer of their own, usable wherever b is
// (a request's Buf or Resp, Send). It shares b's allocation: requests using it keep the
// allocation reserved, and releasing either releases the allocation (Release exactly one
// of them, once). n may be 0. It panics if off+n is outside b.
func (b Buffer) Slice(off, n int) Buffer {
	if b.p == nil || off < 0 || n < 0 || off > len(b.data) || n > len(b.data)-off {
		panic(fmt.Sprintf("swring: Slice(%d, %d) of a %d-byte Buffer", off, n, len(b.data)))
	}
	b.data = b.data[off : off+n : off+n]
	b.off += uint64(off)
	return b
}

// Valid reports whether b came from an allocation (the zero Buffer is not valid).
func (b Buffer) Valid() bool { return b.p != nil }

// Release gives the buffer back. The memory is reused only after every request using it
// has completed. Releasing twice panics.
func (b Buffer) Release() {
	if b.p == nil {
		return
	}
	b.p.unref(b.block, b.gen, true)
}

// pin adds a reference for an in-flight request.
func (b Buffer) pin() {
	m := &b.p.meta[b.block]
	if m.gen.Load() != b.gen || m.refs.Add(1) <= 1 {
		panic("swring: Buffer used after Release")
	}
}

// unpin drops a request's reference.
func (b Buffer) unpin() { b.p.unref(b.block, b.gen, false) }

type extent struct{ start, n uint32 }

type blockMeta struct {
	gen  atomic.Uint32 // bumped on every allocation and free of this start block
	refs atomic.Int32  // owner (1 until Release) + in-flight requests
	n    uint32        // blocks in the allocation starting here (under mu)
}

// bufferPool is a first-fit allocator of block-aligned runs over one byte area, with
// coalescing on free. It allocates no Go memory after construction.
type bufferPool struct {
	area      []byte
	blockSize uint64
	nblocks   uint32
	meta      []blockMeta

	mu          sync.Mutex
	free        []extent      // sorted by start, never adjacent
	outstanding int           // live allocations
	inUse       uint32        // blocks allocated
	closed      bool          // the owner is gone: unmap when outstanding reaches 0
	onIdle      func()        // called once, outside mu, when closed && outstanding == 0
	space       chan struct{} // closed at the next free; nil while nobody waits
}

func newBufferPool(area []byte, blockSize uint64) *bufferPool {
	if blockSize == 0 || blockSize&(blockSize-1) != 0 {
		panic("swring: buffer block size must be a power of two")
	}
	n := uint32(uint64(len(area)) / blockSize)
	p := &bufferPool{
		area:      area,
		blockSize: blockSize,
		nblocks:   n,
		meta:      make([]blockMeta, n),
		free:      make([]extent, 0, n/2+2),
	}
	if n > 0 {
		p.free = append(p.free, extent{0, n})
	}
	return p
}

func (p *bufferPool) blocksFor(size int) (uint32, error) {
	if size <= 0 {
		return 0, fmt.Errorf("swring: buffer size %d must be positive", size)
	}
	nb := (uint64(size) + p.blockSize - 1) / p.blockSize
	if nb > uint64(p.nblocks) {
		return 0, fmt.Errorf("%w: %d bytes asked, area is %d bytes", ErrBufferTooLarge, size, uint64(p.nblocks)*p.blockSize)
	}
	return uint32(nb), nil
}

func (p *bufferPool) tryAlloc(size int) (Buffer, error) {
	b, _, err := p.allocOrWait(size, false)
	return b, err
}

// allocOrWait allocates, or returns ErrNoBufferSpace and (if wait) a channel closed at the
// next free.
func (p *bufferPool) allocOrWait(size int, wait bool) (Buffer, <-chan struct{}, error) {
	nb, err := p.blocksFor(size)
	if err != nil {
		return Buffer{}, nil, err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return Buffer{}, nil, ErrClosed
	}
	for i := range p.free {
		e := &p.free[i]
		if e.n < nb {
			continue
		}
		start := e.start
		if e.n == nb {
			p.free = append(p.free[:i], p.free[i+1:]...)
		} else {
			e.start += nb
			e.n -= nb
		}
		m := &p.meta[start]
		m.n = nb
		m.refs.Store(1)
		gen := m.gen.Add(1)
		p.outstanding++
		p.inUse += nb
		off := uint64(start) * p.blockSize
		return Buffer{p: p, data: p.area[off : off+uint64(size) : off+uint64(nb)*p.blockSize], block: start, gen: gen}, nil, nil
	}
	if !wait {
		return Buffer{}, nil, ErrNoBufferSpace
	}
	if p.space == nil {
		p.space = make(chan struct{})
	}
	return Buffer{}, p.space, ErrNoBufferSpace
}

// alloc waits (bounded by ctx) until a run of the size is free.
func (p *bufferPool) alloc(ctx context.Context, size int) (Buffer, error) {
	for {
		b, ch, err := p.allocOrWait(size, true)
		if err != ErrNoBufferSpace {
			return b, err
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return Buffer{}, ctx.Err()
		}
	}
}

func (p *bufferPool) unref(block, gen uint32, owner bool) {
	if block >= p.nblocks {
		panic("swring: Buffer does not belong to this pool")
	}
	m := &p.meta[block]
	if m.gen.Load() != gen {
		if owner {
			panic("swring: Buffer released twice")
		}
		panic("swring: internal error: stale buffer reference")
	}
	r := m.refs.Add(-1)
	if r < 0 {
		panic("swring: Buffer released twice")
	}
	if r > 0 {
		return
	}
	p.freeRun(block)
}

func (p *bufferPool) freeRun(start uint32) {
	p.mu.Lock()
	m := &p.meta[start]
	n := m.n
	m.n = 0
	m.gen.Add(1) // stale handles now fail the generation check
	// Insert keeping the list sorted, then coalesce with the neighbours.
	i := 0
	for i < len(p.free) && p.free[i].start < start {
		i++
	}
	p.free = append(p.free, extent{})
	copy(p.free[i+1:], p.free[i:])
	p.free[i] = extent{start, n}
	if i+1 < len(p.free) && p.free[i].start+p.free[i].n == p.free[i+1].start {
		p.free[i].n += p.free[i+1].n
		p.free = append(p.free[:i+1], p.free[i+2:]...)
	}
	if i > 0 && p.free[i-1].start+p.free[i-1].n == p.free[i].start {
		p.free[i-1].n += p.free[i].n
		p.free = append(p.free[:i], p.free[i+1:]...)
	}
	p.outstanding--
	p.inUse -= n
	var idle func()
	if p.closed && p.outstanding == 0 {
		idle, p.onIdle = p.onIdle, nil
	}
	if p.space != nil { // wake every waiting allocator
		close(p.space)
		p.space = nil
	}
	p.mu.Unlock()
	if idle != nil {
		idle()
	}
}

// close refuses further allocations and calls onIdle (now, or when the last outstanding
// buffer is freed).
func (p *bufferPool) close(onIdle func()) {
	p.mu.Lock()
	p.closed = true
	if p.outstanding > 0 {
		p.onIdle = onIdle
		onIdle = nil
	}
	if p.space != nil { // wake waiting allocators so they see closed
		close(p.space)
		p.space = nil
	}
	p.mu.Unlock()
	if onIdle != nil {
		onIdle()
	}
}

// BufferStats describes the buffer area.
type BufferStats struct {
	Size        uint64 // bytes in the buffer area
	BlockSize   uint64 // allocation granularity
	InUse       uint64 // bytes allocated (rounded to blocks)
	Allocations int    // live Buffers (including released ones still pinned by requests)
	FreeRuns    int    // fragments of free space
}

func (p *bufferPool) stats() BufferStats {
	p.mu.Lock()
	defer p.mu.Unlock()
	return BufferStats{
		Size:        uint64(p.nblocks) * p.blockSize,
		BlockSize:   p.blockSize,
		InUse:       uint64(p.inUse) * p.blockSize,
		Allocations: p.outstanding,
		FreeRuns:    len(p.free),
	}
}
