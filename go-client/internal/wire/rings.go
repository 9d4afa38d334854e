package wire

import (
	"fmt"
	"sync/atomic"
	"unsafe"
)

// Single-producer single-consumer ring (ring-proto/src/ring.rs, SPEC.md §5-6).
//
// The client is the producer of the SQ and the consumer of the CQ; the in-repo fake engine
// used by the tests plays the other two roles with the same types. An entry is published by
// its own control word (word 0, with the control byte at bits 16..23): the consumer polls the
// slot it reads next, so a round trip moves one cache line each way. Each side keeps its own
// index privately and only ever stores it; the consumer's head is loaded by the producer only
// when its cached view shows too little room, and checked before it is trusted.
//
// Memory ordering. Go's sync/atomic operations are sequentially consistent, which is at
// least the acquire/release the protocol asks for:
//
//   - producer: plain stores of words 1.. → store of word 0 with this index's phase (atomic
//     for the first entry of a publication, stored last by Publish).
//     SYNC POINT: pairs with the consumer's atomic load of word 0. The plain stores cannot
//     move after the atomic one (the compiler keeps memory operations in order around
//     sync/atomic; the hardware store is a release or a locked exchange), and the
//     consumer reads the slot only after the word 0 it waits for.
//   - consumer: atomic load of word 0 shows the phase → copy words → StoreUint32(head).
//     SYNC POINT: pairs with the producer's load of head before it reuses a slot.
//   - wake check (Producer.Publish): StoreUint64(word 0) then LoadUint32(flags); the SC order
//     of Go atomics keeps the load after the store, like the fence(SeqCst) in ring.rs
//     Producer::publish. Pairs with the consumer's PrepareSleep.
//   - sleep (Consumer.PrepareSleep): StoreUint32(flags, NEED_WAKEUP) then the load of the
//     slot's word 0: pairs with the engine's Producer::publish (word 0 store; fence(SeqCst);
//     flags load) — the store-buffering pattern, so no wakeup is lost.

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
	Head, Flags, Invalid *uint32
}

func ctlAt(r Region, off uint64) Ctl {
	return Ctl{
		Head:    r.U32(off + CtlHead),
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

// slot returns a pointer to the first word of the entry with this index (only the ring's
// words per entry of it may be touched).
func (r *Ring) slot(index uint32) *[SQEWords]uint64 {
	i := uintptr(index & (r.entries - 1))
	return (*[SQEWords]uint64)(unsafe.Add(r.slots, i*uintptr(r.words)*8))
}

// phase is the CtlPhase bit an entry published at index carries: set on even laps.
func (r *Ring) phase(index uint32) uint64 {
	if index&r.entries == 0 {
		return CtlPhase
	}
	return 0
}

// Producer is the writing side of a ring.
type Producer struct {
	Ring
	tail      uint32 // next index to write
	published uint32 // first index not published; its word 0 waits in held
	held      uint64
	headCache uint32 // last consumer head loaded and checked
}

// Refresh loads the consumer's head and returns the number of free slots.
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

// Free returns the free slots, loading the consumer's head only when the cached value says
// the ring is full.
func (p *Producer) Free() (uint32, error) {
	if n := p.cachedFree(); n > 0 {
		return n, nil
	}
	return p.Refresh()
}

// push writes the words of the entry at tail: words 1.. with plain stores, word 0 (with the
// phase) held back for Publish if this is the publication's first entry, else stored too
// (the consumer reaches it only after the held one). The caller checked Free() > 0.
func (p *Producer) push(w []uint64) {
	s := p.slot(p.tail)
	for i := 1; i < len(w); i++ {
		// Plain stores: nobody reads this slot until word 0 is published (below, or by
		// Publish), and that atomic store orders them before it.
		s[i] = w[i]
	}
	w0 := w[0]&^CtlMask | p.phase(p.tail)
	if p.tail == p.published {
		p.held = w0
	} else {
		// A plain store too: the consumer reads this word only after it saw the held entry
		// before it published, and Publish's atomic store (an xchg on amd64, a release
		// everywhere) orders this store before that. An atomic store here would be one more
		// locked exchange per entry of a batch.
		s[0] = w0
	}
	p.tail++
}

// PushSQE writes e into the next slot; the caller checked Free() > 0. Not visible to the
// consumer until Publish.
func (p *Producer) PushSQE(e *SQE) {
	w := e.Words()
	p.push(w[:])
}

// PushSQEWords writes an SQE given as its words (SQE.Words: w0 without the control byte)
// into the next slot; the caller checked Free() > 0. Not visible to the consumer until
// Publish. The words come in registers and are stored straight into the slot: building an
// SQE or a word array on the stack first costs a stalled copy (narrow stores read back by
// wide loads) per entry.
func (p *Producer) PushSQEWords(w0, w1, w2, w3, w4, w5, w6, w7 uint64) {
	s := p.slot(p.tail)
	// Plain stores, as in push: published by word 0.
	s[1], s[2], s[3], s[4], s[5], s[6], s[7] = w1, w2, w3, w4, w5, w6, w7
	w0 = w0&^CtlMask | p.phase(p.tail)
	if p.tail == p.published {
		p.held = w0
	} else {
		s[0] = w0
	}
	p.tail++
}

// PushCQE is PushSQE for the engine side of the CQ (tests and the fake engine).
func (p *Producer) PushCQE(c CQE) {
	w := c.Words()
	p.push(w[:])
}

// Publish makes every pushed entry visible and reports whether the consumer asked to be
// woken, in which case the caller must signal the consumer's doorbell.
func (p *Producer) Publish() bool {
	if p.published == p.tail {
		return false
	}
	// SYNC POINT: release of this entry's words and of every entry pushed after it; pairs
	// with the consumer's load of word 0.
	atomic.StoreUint64(&p.slot(p.published)[0], p.held)
	p.published = p.tail
	// Sequentially consistent store→load: this load cannot be satisfied before the store
	// above is visible (Go's SC atomics = the fence(SeqCst) of ring.rs Producer::publish).
	// Pairs with the consumer's flags store + slot load in PrepareSleep.
	return atomic.LoadUint32(p.Ctl.Flags)&NeedWakeup != 0
}

// Consumer is the reading side of a ring.
type Consumer struct {
	Ring
	head  uint32 // next index to read; published by Release
	ready uint32 // entries from head on seen published
}

// refreshUpTo counts the entries ready from head on, at most max (and the ring's size): a
// slot whose word 0 does not carry its index's phase ends the count.
func (c *Consumer) refreshUpTo(max uint32) uint32 {
	if max > c.entries {
		max = c.entries
	}
	for c.ready < max {
		index := c.head + c.ready
		// SYNC POINT: pairs with the producer's store of word 0.
		if atomic.LoadUint64(&c.slot(index)[0])&CtlPhase != c.phase(index) {
			break
		}
		c.ready++
	}
	return c.ready
}

// Refresh returns the number of entries ready.
func (c *Consumer) Refresh() uint32 { return c.refreshUpTo(c.entries) }

// PopCQE copies out the next CQE (each word read exactly once). The caller saw Refresh() > 0.
func (c *Consumer) PopCQE() CQE {
	s := c.slot(c.head)
	w0 := atomic.LoadUint64(&s[0])
	w1 := atomic.LoadUint64(&s[1])
	c.head++
	c.ready--
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
	c.ready--
	return SQEFromWords(&w)
}

// Release hands every popped slot back to the producer.
func (c *Consumer) Release() {
	// SYNC POINT: pairs with the producer's load of head in Refresh: our copies of the
	// popped slots happen before it may overwrite them.
	atomic.StoreUint32(c.Ctl.Head, c.head)
}

// PrepareSleep announces that the consumer is about to sleep and checks once more. It
// returns true if the ring is still empty: the caller may block on its doorbell and will be
// signalled for anything published after this point (then FinishSleep). False: an entry is
// ready (the flag is cleared again).
func (c *Consumer) PrepareSleep() bool {
	atomic.StoreUint32(c.Ctl.Flags, NeedWakeup)
	// SC store→load (Go atomics): pairs with the producer's word 0 store + flags load.
	if c.refreshUpTo(1) == 0 {
		return true
	}
	c.FinishSleep()
	return false
}

// FinishSleep clears NEED_WAKEUP; a producer still seeing the old flag sends one spurious
// signal, which consumers tolerate.
func (c *Consumer) FinishSleep() { atomic.StoreUint32(c.Ctl.Flags, 0) }
