package storage

import (
	"errors"
	"math"
	"sync"

	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/skl"
)

// maxGroup bounds how many operations share one transaction. The writer never
// waits to fill a group: it takes what is already queued (PERF-NOTES: a linger
// timer only made commits slower).
const maxGroup = 256

// valueThreshold is the record size from which Badger keeps a value in the
// value log, leaving a 12-byte pointer in the LSM tree.
const valueThreshold = 256

// entryCost is what one entry adds to a transaction's size as Badger counts
// it (key, value or value pointer, two meta bytes, an 8-byte version) plus
// a margin.
func entryCost(keyLen, valueLen int) int64 {
	if valueLen >= valueThreshold {
		valueLen = 12
	}
	return int64(keyLen+valueLen) + 16
}

// op is one caller's unit of work. It is applied inside a shared transaction
// and answered with that transaction's outcome.
type op struct {
	urgent       bool // batch lifecycle: goes ahead of ingest appends
	bytes, count int64
	apply        func(txn *badger.Txn) error
	after        func() // on success, in the writer goroutine, before errc is answered
	// alone, when set, runs instead of apply between two transactions,
	// with no commit of the writer in flight (for Badger calls that
	// refuse writes while they run).
	alone func() error
	errc  chan error
}

var errcPool = sync.Pool{New: func() any { return make(chan error, 1) }}

// writer is the single goroutine that commits every write (group commit).
// Batch lifecycle operations have a lane of their own and go first in each
// transaction, and a transaction never holds more than Badger takes at
// once: so forming and acknowledging batches never waits behind a flood of
// ingest (each CreateBatch waits for at most the commit in progress).
type writer struct {
	s        *Store
	ingest   chan *op
	urgent   chan *op
	maxBytes int64
	maxCount int64

	mu     sync.RWMutex
	closed bool

	// seq is the last sequence number handed out in the open transaction;
	// committed the last one durably stored. Both are owned by run.
	seq, committed uint64
	// shared is at least the number of reference counts stored (events
	// held by more than one queue): counted up as they are written, down
	// once their deletion is committed, so a failed transaction can only
	// leave it too high. Owned by run. At 0, releasing an event needs no
	// look-up of its count (releaseLocked).
	shared int64
}

func newWriter(s *Store, seq uint64, shared, memtable int64) *writer {
	// Badger refuses a transaction of 15% of a memtable or of that many
	// bytes divided by a skiplist node; stay at 80% of both.
	maxBytes := memtable * 15 / 100
	return &writer{
		s:         s,
		ingest:    make(chan *op, 4*maxGroup),
		urgent:    make(chan *op, 4*maxGroup),
		maxBytes:  maxBytes * 8 / 10,
		maxCount:  maxBytes / int64(skl.MaxNodeSize) * 8 / 10,
		seq:       seq,
		committed: seq,
		shared:    shared,
	}
}

// do submits o and waits for its transaction to commit.
func (w *writer) do(o *op) error {
	o.errc = errcPool.Get().(chan error)
	w.mu.RLock()
	if w.closed {
		w.mu.RUnlock()
		errcPool.Put(o.errc)
		return ErrClosed
	}
	if o.urgent {
		w.urgent <- o
	} else {
		w.ingest <- o
	}
	w.mu.RUnlock()
	err := <-o.errc
	errcPool.Put(o.errc)
	return err
}

// close makes further submissions fail and lets run finish what is queued.
func (w *writer) close() {
	w.mu.Lock()
	if !w.closed {
		w.closed = true
		close(w.ingest)
		close(w.urgent)
	}
	w.mu.Unlock()
}

func (w *writer) run(wg *sync.WaitGroup) {
	defer wg.Done()
	g := group{w: w, ops: make([]*op, 0, maxGroup)}
	urgent, ingest := w.urgent, w.ingest
	var carry *op // taken but did not fit: first of the next group
	for {
		g.reset()
		if carry != nil {
			g.add(carry)
			carry = nil
		} else {
			if urgent == nil && ingest == nil {
				return
			}
			select { // wait for the first operation, of either lane
			case o, ok := <-urgent:
				if !ok {
					urgent = nil
					continue
				}
				g.add(o)
			case o, ok := <-ingest:
				if !ok {
					ingest = nil
					continue
				}
				g.add(o)
			}
		}
		// Then whatever is already queued, urgent first, without waiting.
		for _, lane := range []*chan *op{&urgent, &ingest} {
		drain:
			for carry == nil && len(g.ops) < maxGroup {
				select {
				case o, ok := <-*lane:
					if !ok {
						*lane = nil
						break drain
					}
					if !g.add(o) {
						carry = o
					}
				default:
					break drain
				}
			}
		}
		w.commitGroup(g.ops)
		clear(g.ops)
	}
}

// group collects operations up to one transaction's worth.
type group struct {
	w            *writer
	ops          []*op
	bytes, count int64
}

func (g *group) reset() { g.ops, g.bytes, g.count = g.ops[:0], 0, 0 }

// add takes o unless it would make the transaction too big; an operation
// too big alone is taken (commitGroup answers it ErrTooLarge).
func (g *group) add(o *op) bool {
	if len(g.ops) > 0 && (g.bytes+o.bytes > g.w.maxBytes || g.count+o.count > g.w.maxCount) {
		return false
	}
	g.ops = append(g.ops, o)
	g.bytes += o.bytes
	g.count += o.count
	return true
}

func (w *writer) commitGroup(group []*op) {
	txn := w.s.db.NewTransaction(true)
	pending := make([]*op, 0, len(group))
	var bytes, count int64
	for _, o := range group {
		if o.alone != nil {
			w.commit(txn, pending)
			pending, bytes, count = pending[:0], 0, 0
			o.errc <- o.alone()
			txn = w.s.db.NewTransaction(true)
			continue
		}
		if o.bytes > w.maxBytes || o.count > w.maxCount {
			o.errc <- ErrTooLarge
			continue
		}
		if bytes+o.bytes > w.maxBytes || count+o.count > w.maxCount {
			w.commit(txn, pending)
			txn = w.s.db.NewTransaction(true)
			pending, bytes, count = pending[:0], 0, 0
		}
		if err := o.apply(txn); err != nil {
			if errors.Is(err, ErrNotFound) {
				// Operations check what they need before they write
				// anything: o left the transaction untouched.
				o.errc <- err
				continue
			}
			// The transaction may hold part of o: drop it whole and fail
			// everything in it. Nothing of theirs was stored.
			txn.Discard()
			w.seq = w.committed
			for _, p := range pending {
				p.errc <- err
			}
			o.errc <- err
			txn = w.s.db.NewTransaction(true)
			pending, bytes, count = pending[:0], 0, 0
			continue
		}
		pending = append(pending, o)
		bytes += o.bytes
		count += o.count
	}
	w.commit(txn, pending)
}

func (w *writer) commit(txn *badger.Txn, pending []*op) {
	defer txn.Discard()
	if len(pending) == 0 {
		return
	}
	var err error
	if w.seq != w.committed {
		err = txn.Set(seqKey, be.AppendUint64(nil, w.seq))
	}
	if err == nil {
		err = txn.Commit()
	}
	if err != nil {
		w.seq = w.committed
		w.s.log.Error().Err(err).Int("ops", len(pending)).Msg("storage commit failed")
	} else {
		w.committed = w.seq
	}
	for _, p := range pending {
		if err == nil && p.after != nil {
			p.after()
		}
		p.errc <- err
	}
}

// refsDeleted lowers shared by the n reference counts a committed
// transaction deleted. Below zero the bound is lost (a count deleted that
// was never counted): counts are looked up again until Open counts them.
func (w *writer) refsDeleted(n int64) {
	if w.shared -= n; w.shared < 0 {
		w.s.log.Error().Int64("shared", w.shared).Msg("storage: reference counts miscounted; looking each up until restart")
		w.shared = math.MaxInt64 / 2
	}
}

// nextSeq hands out a sequence number inside the open transaction.
func (w *writer) nextSeq() uint64 {
	w.seq++
	return w.seq
}
