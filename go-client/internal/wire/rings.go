package wire

import (
	"fmt"
	"sync/atomic"
	"unsafe"
)

// Single-producer single-consumer ring (ring-proto/src/ring.rs, SPEC.md §5-6).
//
// The client is the producer of the SQ and the consumer of the CQ; the in-repo fake engine
// used by the tests plays the other two roles with the same types. Each side keeps its own
// index privately and only ever stores it to shared memory; the other side's index is
// loaded and checked (tail-head <= entries, and it never moves backwards by more than the
// ring) before it is trusted.
//
// Memory ordering. Go's sync/atomic operations are sequentially consistent, which is at
// least the acquire/release the protocol asks for, and also supplies the full fences of the
// sleep/wake handshake:
//
//   - producer: store entry words → atomic.StoreUint32(tail).
//     SYNC POINT: pairs with the consumer's acquire load of tail.
//   - consumer: atomic.LoadUint32(tail) → copy words → atomic.StoreUint32(head).
//     SYNC POINT: pairs with the producer's acquire load of head before it reuses a slot.
//   - wake check (producer.publish): StoreUint32(tail) then LoadUint32(flags); the SC order
//     of Go atomics keeps the load after the store, like the fence(SeqCst) in ring.rs
//     Producer::publish. Pairs with the consumer's PrepareSleep.
//   - sleep (consumer.PrepareSleep): StoreUint32(flags, NEED_WAKEUP) then LoadUint32(tail):
//     pairs with the engine's Producer::publish (tail.store(Release); fence(SeqCst);
//     flags.load) — the store-buffering pattern, so no wakeup is lost.

// ringCorrupt reports a peer index that no correct peer can produce.
type ringCorrupt struct {
	ring   string
	ours   uint32
	theirs uint32
}

func (e *ringCorrupt) Error() string {
	return fmt.Sprintf("swring: %s peer index %d is inconsistent with ours (%d)", e.ring, e.theirs, e.ours)
}

func (e *ringCorrupt) Unwrap() error { return ErrProtocol }

// Ctl points at one RingCtl block.
type Ctl struct {
	Head, Tail, Flags, Invalid *uint32
}

func ctlAt(r Region, off uint64) Ctl {
	return Ctl{
		Head:    r.U32(off + CtlHead),
		Tail:    r.U32(off + CtlTail),
		Flags:   r.U32(off + CtlFlags),
		Invalid: r.U32(off + CtlInvalid),
	}
}

// Ring is one Ring's control block plus its entry array.
type Ring struct {
	name    string
	Ctl     Ctl
	slots   unsafe.Pointer // first word of the entry array
	words   uint32         // 64-bit words per entry
	entries uint32         // power of two
}

func NewRing(name string, r Region, ctlOff, arrayOff uint64, entries, words uint32) Ring {
	if entries < 2 || entries&(entries-1) != 0 {
		panic("swring: ring size is not a power of two")
	}
	// Bounds-check the whole array once; slot() then needs no checks.
	_ = r.Bytes(arrayOff, uint64(entries)*uint64(words)*8)
	if arrayOff%8 != 0 {
		panic("swring: ring array not 8-byte aligned")
	}
	return Ring{name: name, Ctl: ctlAt(r, ctlOff), slots: unsafe.Add(r.Base, arrayOff), words: words, entries: entries}
}

// slot returns a pointer to the first word of the entry with this index.
func (r *Ring) slot(index uint32) *[SQEWords]uint64 {
	i := uintptr(index & (r.entries - 1))
	return (*[SQEWords]uint64)(unsafe.Add(r.slots, i*uintptr(r.words)*8))
}

// Producer is the writing side of a ring.
type Producer struct {
	Ring
	tail      uint32 // next index to write; published by publish
	headCache uint32 // last consumer head loaded and checked
}

// refresh loads the consumer's head and returns the number of free slots.
func (p *Producer) Refresh() (uint32, error) {
	// SYNC POINT: pairs with the consumer's release store of head.
	head := atomic.LoadUint32(p.Ctl.Head)
	used := p.tail - head
	if used > p.entries || head-p.headCache > p.entries {
		return 0, &ringCorrupt{ring: p.name, ours: p.tail, theirs: head}
	}
	p.headCache = head
	return p.entries - used, nil
}

func (p *Producer) cachedFree() uint32 { return p.entries - (p.tail - p.headCache) }

// free returns the free slots, loading the consumer's head only when the cached value says
// the ring is full.
func (p *Producer) Free() (uint32, error) {
	if n := p.cachedFree(); n > 0 {
		return n, nil
	}
	return p.Refresh()
}

// PushSQE writes e into the next slot; the caller checked free() > 0. Not visible to the
// consumer until publish. Each word is one aligned 64-bit atomic store (SPEC.md §4).
func (p *Producer) PushSQE(e *SQE) {
	w := e.Words()
	s := p.slot(p.tail)
	for i := range w {
		atomic.StoreUint64(&s[i], w[i])
	}
	p.tail++
}

// PushCQE is PushSQE for the engine side of the CQ (tests and the fake engine).
func (p *Producer) PushCQE(c CQE) {
	w := c.Words()
	s := p.slot(p.tail)
	atomic.StoreUint64(&s[0], w[0])
	atomic.StoreUint64(&s[1], w[1])
	p.tail++
}

// publish stores the tail and reports whether the consumer asked to be woken, in which case
// the caller must signal the consumer's doorbell.
func (p *Producer) Publish() bool {
	// SYNC POINT: release of the entry words; pairs with the consumer's load of tail.
	atomic.StoreUint32(p.Ctl.Tail, p.tail)
	// Sequentially consistent store→load: this load cannot be satisfied before the tail
	// store is visible (Go's SC atomics = the fence(SeqCst) of ring.rs Producer::publish).
	// Pairs with the consumer's flags store + tail load in PrepareSleep.
	return atomic.LoadUint32(p.Ctl.Flags)&NeedWakeup != 0
}

// Consumer is the reading side of a ring.
type Consumer struct {
	Ring
	head      uint32 // next index to read; published by release
	tailCache uint32 // last producer tail loaded and checked
}

// refresh loads the producer's tail and returns the number of entries ready.
func (c *Consumer) Refresh() (uint32, error) {
	// SYNC POINT: pairs with the producer's release store of tail; entry words before it
	// are visible after this load.
	tail := atomic.LoadUint32(c.Ctl.Tail)
	ready := tail - c.head
	if ready > c.entries || tail-c.tailCache > c.entries {
		return 0, &ringCorrupt{ring: c.name, ours: c.head, theirs: tail}
	}
	c.tailCache = tail
	return ready, nil
}

func (c *Consumer) cachedReady() uint32 { return c.tailCache - c.head }

// PopCQE copies out the next CQE (each word read exactly once). The caller checked
// cachedReady() > 0.
func (c *Consumer) PopCQE() CQE {
	s := c.slot(c.head)
	w0 := atomic.LoadUint64(&s[0])
	w1 := atomic.LoadUint64(&s[1])
	c.head++
	return CQEFromWords(w0, w1)
}

// PopSQE is PopCQE for the engine side of the SQ.
func (c *Consumer) PopSQE() SQE {
	s := c.slot(c.head)
	var w [SQEWords]uint64
	for i := range w {
		w[i] = atomic.LoadUint64(&s[i])
	}
	c.head++
	return SQEFromWords(&w)
}

// release hands every popped slot back to the producer.
func (c *Consumer) Release() {
	// SYNC POINT: pairs with the producer's acquire load of head in refresh: our copies of
	// the popped slots happen before it may overwrite them.
	atomic.StoreUint32(c.Ctl.Head, c.head)
}

// PrepareSleep announces that the consumer is about to sleep and checks once more. It
// returns true if the ring is still empty: the caller may block on its doorbell and will be
// signalled for anything published after this point. False: entries arrived (the flag is
// cleared again).
func (c *Consumer) PrepareSleep() (bool, error) {
	atomic.StoreUint32(c.Ctl.Flags, NeedWakeup)
	// SC store→load (Go atomics): pairs with the producer's tail store + flags load.
	n, err := c.Refresh()
	if err != nil {
		return false, err
	}
	if n == 0 {
		return true, nil
	}
	c.FinishSleep()
	return false, nil
}

// FinishSleep clears NEED_WAKEUP; a producer still seeing the old flag sends one spurious
// signal, which consumers tolerate.
func (c *Consumer) FinishSleep() { atomic.StoreUint32(c.Ctl.Flags, 0) }
