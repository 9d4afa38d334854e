package swring

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
//     Producer::publish. Pairs with the consumer's prepareSleep.
//   - sleep (consumer.prepareSleep): StoreUint32(flags, NEED_WAKEUP) then LoadUint32(tail):
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

// ringCtl points at one RingCtl block.
type ringCtl struct {
	head, tail, flags, invalid *uint32
}

func ctlAt(r region, off uint64) ringCtl {
	return ringCtl{
		head:    r.u32(off + ctlHead),
		tail:    r.u32(off + ctlTail),
		flags:   r.u32(off + ctlFlags),
		invalid: r.u32(off + ctlInvalid),
	}
}

// ring is one ring's control block plus its entry array.
type ring struct {
	name    string
	ctl     ringCtl
	slots   unsafe.Pointer // first word of the entry array
	words   uint32         // 64-bit words per entry
	entries uint32         // power of two
}

func newRing(name string, r region, ctlOff, arrayOff uint64, entries, words uint32) ring {
	if entries < 2 || entries&(entries-1) != 0 {
		panic("swring: ring size is not a power of two")
	}
	// Bounds-check the whole array once; slot() then needs no checks.
	_ = r.bytes(arrayOff, uint64(entries)*uint64(words)*8)
	if arrayOff%8 != 0 {
		panic("swring: ring array not 8-byte aligned")
	}
	return ring{name: name, ctl: ctlAt(r, ctlOff), slots: unsafe.Add(r.base, arrayOff), words: words, entries: entries}
}

// slot returns a pointer to the first word of the entry with this index.
func (r *ring) slot(index uint32) *[sqeWords]uint64 {
	i := uintptr(index & (r.entries - 1))
	return (*[sqeWords]uint64)(unsafe.Add(r.slots, i*uintptr(r.words)*8))
}

// producer is the writing side of a ring.
type producer struct {
	ring
	tail      uint32 // next index to write; published by publish
	headCache uint32 // last consumer head loaded and checked
}

// refresh loads the consumer's head and returns the number of free slots.
func (p *producer) refresh() (uint32, error) {
	// SYNC POINT: pairs with the consumer's release store of head.
	head := atomic.LoadUint32(p.ctl.head)
	used := p.tail - head
	if used > p.entries || head-p.headCache > p.entries {
		return 0, &ringCorrupt{ring: p.name, ours: p.tail, theirs: head}
	}
	p.headCache = head
	return p.entries - used, nil
}

func (p *producer) cachedFree() uint32 { return p.entries - (p.tail - p.headCache) }

// free returns the free slots, loading the consumer's head only when the cached value says
// the ring is full.
func (p *producer) free() (uint32, error) {
	if n := p.cachedFree(); n > 0 {
		return n, nil
	}
	return p.refresh()
}

// pushSQE writes e into the next slot; the caller checked free() > 0. Not visible to the
// consumer until publish. Each word is one aligned 64-bit atomic store (SPEC.md §4).
func (p *producer) pushSQE(e *SQE) {
	w := e.words()
	s := p.slot(p.tail)
	for i := range w {
		atomic.StoreUint64(&s[i], w[i])
	}
	p.tail++
}

// pushCQE is pushSQE for the engine side of the CQ (tests and the fake engine).
func (p *producer) pushCQE(c CQE) {
	w := c.words()
	s := p.slot(p.tail)
	atomic.StoreUint64(&s[0], w[0])
	atomic.StoreUint64(&s[1], w[1])
	p.tail++
}

// publish stores the tail and reports whether the consumer asked to be woken, in which case
// the caller must signal the consumer's doorbell.
func (p *producer) publish() bool {
	// SYNC POINT: release of the entry words; pairs with the consumer's load of tail.
	atomic.StoreUint32(p.ctl.tail, p.tail)
	// Sequentially consistent store→load: this load cannot be satisfied before the tail
	// store is visible (Go's SC atomics = the fence(SeqCst) of ring.rs Producer::publish).
	// Pairs with the consumer's flags store + tail load in prepareSleep.
	return atomic.LoadUint32(p.ctl.flags)&ringNeedWakeup != 0
}

// consumer is the reading side of a ring.
type consumer struct {
	ring
	head      uint32 // next index to read; published by release
	tailCache uint32 // last producer tail loaded and checked
}

// refresh loads the producer's tail and returns the number of entries ready.
func (c *consumer) refresh() (uint32, error) {
	// SYNC POINT: pairs with the producer's release store of tail; entry words before it
	// are visible after this load.
	tail := atomic.LoadUint32(c.ctl.tail)
	ready := tail - c.head
	if ready > c.entries || tail-c.tailCache > c.entries {
		return 0, &ringCorrupt{ring: c.name, ours: c.head, theirs: tail}
	}
	c.tailCache = tail
	return ready, nil
}

func (c *consumer) cachedReady() uint32 { return c.tailCache - c.head }

// popCQE copies out the next CQE (each word read exactly once). The caller checked
// cachedReady() > 0.
func (c *consumer) popCQE() CQE {
	s := c.slot(c.head)
	w0 := atomic.LoadUint64(&s[0])
	w1 := atomic.LoadUint64(&s[1])
	c.head++
	return cqeFromWords(w0, w1)
}

// popSQE is popCQE for the engine side of the SQ.
func (c *consumer) popSQE() SQE {
	s := c.slot(c.head)
	var w [sqeWords]uint64
	for i := range w {
		w[i] = atomic.LoadUint64(&s[i])
	}
	c.head++
	return sqeFromWords(&w)
}

// release hands every popped slot back to the producer.
func (c *consumer) release() {
	// SYNC POINT: pairs with the producer's acquire load of head in refresh: our copies of
	// the popped slots happen before it may overwrite them.
	atomic.StoreUint32(c.ctl.head, c.head)
}

// prepareSleep announces that the consumer is about to sleep and checks once more. It
// returns true if the ring is still empty: the caller may block on its doorbell and will be
// signalled for anything published after this point. False: entries arrived (the flag is
// cleared again).
func (c *consumer) prepareSleep() (bool, error) {
	atomic.StoreUint32(c.ctl.flags, ringNeedWakeup)
	// SC store→load (Go atomics): pairs with the producer's tail store + flags load.
	n, err := c.refresh()
	if err != nil {
		return false, err
	}
	if n == 0 {
		return true, nil
	}
	c.finishSleep()
	return false, nil
}

// finishSleep clears NEED_WAKEUP; a producer still seeing the old flag sends one spurious
// signal, which consumers tolerate.
func (c *consumer) finishSleep() { atomic.StoreUint32(c.ctl.flags, 0) }
