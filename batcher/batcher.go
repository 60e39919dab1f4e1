// Package batcher decides what goes into a subscriber's next batch and when
// it is flushed, and encodes batch bodies. It is pure logic: no I/O, no
// clocks (callers pass times in), no goroutines.
package batcher

import (
	"strconv"
	"time"
)

// Limits are a subscriber's flush triggers.
type Limits struct {
	MaxEvents int           // flush when the batch holds this many events
	MaxBytes  int           // the encoded body never exceeds this, except for a single event that alone is larger
	MaxWait   time.Duration // how long the oldest event in a batch may wait
}

// Reason says why a batch was flushed.
type Reason uint8

// Flush reasons; the strings are metric label values.
const (
	None Reason = iota
	Events
	Bytes
	Wait
	Shutdown
)

// String returns the reason's metric label value.
func (r Reason) String() string {
	switch r {
	case Events:
		return "events"
	case Bytes:
		return "bytes"
	case Wait:
		return "wait"
	case Shutdown:
		return "shutdown"
	}
	return "none"
}

// idRoom is the room reserved for a batch id in size accounting: "b_" and a
// 26-character sortable id, plus the ".1.2..." suffixes of split batches.
const idRoom = 40

// Batcher accumulates one subscriber's next batch. It is not safe for
// concurrent use.
type Batcher struct {
	lim      Limits
	sub      string
	overhead int // body bytes besides the events themselves

	events []byte // encoded events, comma separated
	seqs   []uint64
	recv   []int64 // receive times (unix nanos), by event
	full   Reason
}

// New returns an empty Batcher for subscriber sub.
func New(lim Limits, sub string) *Batcher {
	b := &Batcher{lim: lim, sub: sub}
	b.overhead = len(AppendHead(nil, "", sub, lim.MaxEvents)) + idRoom + len(tail)
	return b
}

// Add appends an event, given as its delivered JSON, received at recv (unix
// nanos). It returns false, leaving the batch as it was, when the event does
// not fit: the batch is then full (Full reports Bytes) and must be flushed
// first. An empty batch always takes the event.
func (b *Batcher) Add(seq uint64, ev []byte, recv int64) bool {
	if b.full != None {
		return false
	}
	if len(b.seqs) > 0 && b.Size()+1+len(ev) > b.lim.MaxBytes {
		b.full = Bytes
		return false
	}
	if len(b.seqs) > 0 {
		b.events = append(b.events, ',')
	}
	b.events = append(b.events, ev...)
	b.seqs = append(b.seqs, seq)
	b.recv = append(b.recv, recv)
	if len(b.seqs) >= b.lim.MaxEvents {
		b.full = Events
	} else if b.Size() >= b.lim.MaxBytes {
		b.full = Bytes
	}
	return true
}

// Full reports why the batch can take no more events, or None.
func (b *Batcher) Full() Reason { return b.full }

// Len is the number of events in the batch.
func (b *Batcher) Len() int { return len(b.seqs) }

// Size is an upper bound of the encoded body size.
func (b *Batcher) Size() int { return b.overhead + len(b.events) }

// Deadline is when the batch must be flushed by max_wait (unix nanos); only
// meaningful when Len() > 0.
func (b *Batcher) Deadline() int64 { return b.recv[0] + int64(b.lim.MaxWait) }

// Seqs are the events' sequence numbers in order. The slice is reused after
// Reset.
func (b *Batcher) Seqs() []uint64 { return b.seqs }

// Recvs are the events' receive times (unix nanos) in order. The slice is
// reused after Reset.
func (b *Batcher) Recvs() []int64 { return b.recv }

// AppendBody appends the batch body with id to dst.
func (b *Batcher) AppendBody(dst []byte, id string) []byte {
	dst = AppendHead(dst, id, b.sub, len(b.seqs))
	dst = append(dst, b.events...)
	return append(dst, tail...)
}

// Reset empties the batch for reuse.
func (b *Batcher) Reset() {
	b.events = b.events[:0]
	b.seqs = b.seqs[:0]
	b.recv = b.recv[:0]
	b.full = None
}

const tail = "]}"

// AppendHead appends the body of a batch up to the opening of its events
// array. Batch ids and subscriber ids are plain ASCII by construction.
func AppendHead(dst []byte, id, sub string, count int) []byte {
	dst = append(dst, `{"batch":true,"batch_id":"`...)
	dst = append(dst, id...)
	dst = append(dst, `","subscriber":"`...)
	dst = append(dst, sub...)
	dst = append(dst, `","count":`...)
	dst = strconv.AppendInt(dst, int64(count), 10)
	return append(dst, `,"events":[`...)
}

// AppendTail closes a body started with AppendHead.
func AppendTail(dst []byte) []byte { return append(dst, tail...) }
