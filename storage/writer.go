package storage

import (
	"errors"
	"math"
	"sync"
	"time"

	"github.com/dgraph-io/badger/v4/skl"
)

// maxGroup bounds how many operations share one transaction.
const maxGroup = 256

// pipelineEntries is the size of a commit (in entries) from which the
// writer sends it in the background and builds the next transaction
// meanwhile; smaller ones it commits itself. With single-event requests
// and one-event batches, the extra wake-up per commit of the background
// commit cost more than it saved: the drain of one request per event ran
// at ~0.65x (go run ./bench -only batching, 4 alternating runs).
const pipelineEntries = 1024

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
	apply        func(t *tx) error
	after        func() // on success, in the writer goroutine, before errc is answered
	// alone, when set, runs instead of apply between two transactions,
	// with no commit of the writer in flight (for Badger calls that
	// refuse writes while they run).
	alone func() error
	// missing is what apply found missing (ErrNotFound): answered once
	// the transaction lands, since what it found may rest on a commit
	// not yet landed.
	missing error
	errc    chan error
}

var errcPool = sync.Pool{New: func() any { return make(chan error, 1) }}

// writer is the single goroutine that commits every write (group commit).
// Batch lifecycle operations have a lane of their own, which goes first
// when the writer takes what is queued, and room of their own in each
// transaction, which never holds more than Badger takes at once: so forming
// and acknowledging batches never waits behind a flood of ingest (a
// CreateBatch waits for the commit in flight, then its own).
type writer struct {
	s        *Store
	ingest   chan *op
	urgent   chan *op
	maxBytes int64
	maxCount int64

	mu     sync.RWMutex
	closed bool

	// seq is the last sequence number handed out in the open transaction,
	// sent the last one in a commit sent, committed the last one durably
	// stored. All owned by run, as are tx and flight.
	seq, sent, committed uint64
	// shared is at least the number of reference counts stored (events
	// held by more than one queue): counted up as they are written, down
	// once their deletion is committed, so a failed transaction can only
	// leave it too high. Owned by run. At 0, releasing an event needs no
	// look-up of its count (releaseLocked).
	shared int64
	// records is, in the same way, at least the number of event records
	// stored apart from their queue entries (e keys): those of events held
	// by several queues, and any written before records moved into queue
	// entries. Counted at Open, up as they are written. At 0, releasing an
	// event looks no record up.
	records int64

	tx           tx      // the open transaction (tx.txn nil when none)
	pending      []*op   // applied to tx, answered once it is committed
	bytes, count int64   // pending's size
	flight       *flight // the commit sent and not yet landed, nil when none
	background   int     // commits sent in the background (for tests)

	// hold, when set (by tests), runs before a commit's outcome reaches
	// the writer, which sees what it returns: the commit stays in flight
	// for as long as it takes.
	hold func(error) error
}

// flight is a commit being written in the background.
type flight struct {
	ops  []*op
	seq  uint64 // the writer's seq when it was sent
	done chan error
}

func newWriter(s *Store, seq uint64, shared, records, memtable int64) *writer {
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
		sent:      seq,
		committed: seq,
		tx:        tx{building: view{}, unseen: view{}},
		shared:    shared,
		records:   records,
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

// run is the writer goroutine. While a commit is in flight (being written
// and synced by Badger), it applies what arrives to the next transaction;
// once that commit has landed, it adds what is queued already (urgent
// first) and sends the next. So a large transaction is built while the one
// before it is written (send), and each holds everything that queued
// meanwhile. The writer never waits to fill a transaction (PERF-NOTES: a
// linger timer only made commits slower).
func (w *writer) run(wg *sync.WaitGroup) {
	defer wg.Done()
	urgent, ingest := w.urgent, w.ingest
	for urgent != nil || ingest != nil || w.flight != nil || len(w.pending) > 0 {
		if w.flight == nil && len(w.pending) > 0 {
			for _, lane := range []*chan *op{&urgent, &ingest} {
			drain:
				for w.flight == nil {
					select {
					case o, ok := <-*lane:
						if !ok {
							*lane = nil
							break drain
						}
						w.take(o)
					default:
						break drain
					}
				}
			}
			if w.flight == nil { // none of it sent for want of room
				w.send()
			}
			continue
		}
		var landing chan error
		if w.flight != nil {
			landing = w.flight.done
		}
		select {
		case err := <-landing:
			w.landed(err)
			if len(w.pending) == 0 {
				w.drop() // idle: hold no snapshot
			}
		case o, ok := <-urgent:
			if !ok {
				urgent = nil
				continue
			}
			w.take(o)
		case o, ok := <-ingest:
			if !ok {
				ingest = nil
				continue
			}
			w.take(o)
		}
	}
	w.drop()
}

// take applies o to the open transaction (sending that first if o does
// not fit in it), or answers o when it cannot be applied.
func (w *writer) take(o *op) {
	if o.alone != nil {
		w.send()
		w.land()
		w.drop()
		o.errc <- o.alone()
		return
	}
	if o.bytes > w.maxBytes || o.count > w.maxCount {
		o.errc <- ErrTooLarge
		return
	}
	// Ingest leaves a quarter of each transaction to the batch lifecycle,
	// so forming and acknowledging batches never waits behind a flood of
	// ingest for more than the commit in flight and its own.
	maxBytes, maxCount := w.maxBytes, w.maxCount
	if !o.urgent {
		maxBytes, maxCount = maxBytes*3/4, maxCount*3/4
	}
	if len(w.pending) >= maxGroup || w.bytes+o.bytes > maxBytes || w.count+o.count > maxCount {
		w.send()
	}
	if err := o.apply(w.open()); err != nil {
		if errors.Is(err, ErrNotFound) {
			// Operations check what they need before they write
			// anything: o left the transaction untouched. What it
			// found gone may have been deleted by this transaction or
			// by the commit in flight: if either fails, o is answered
			// with that failure, since the key is still there.
			o.missing = err
			w.pending = append(w.pending, o)
			return
		}
		// The transaction may hold part of o: drop it whole and fail
		// everything in it. Nothing of theirs was stored.
		w.pending = append(w.pending, o)
		w.fail(err)
		return
	}
	w.pending = append(w.pending, o)
	w.bytes += o.bytes
	w.count += o.count
}

// open returns the open transaction, beginning one if there is none.
func (w *writer) open() *tx {
	if w.tx.txn == nil {
		w.land() // a failure is answered to its own operations; none are open
		w.tx.txn = w.s.db.NewTransaction(true)
		clear(w.tx.building)
		clear(w.tx.unseen)
	}
	return &w.tx
}

// send commits the open transaction, holding the pending operations: in
// the background from pipelineEntries on, else in place. Badger makes a
// transaction begun after a commit was sent wait until that commit is
// applied; so send first lands the commit in flight (if any), then begins
// the next transaction, and only then sends. The next transaction's
// snapshot misses this commit: tx.unseen holds its writes of looked-up
// keys. Either way the commit lands (is answered) through w.flight.
func (w *writer) send() {
	if len(w.pending) == 0 {
		return
	}
	if w.land() != nil {
		return // landed failed the pending operations
	}
	t := &w.tx
	if w.seq != w.sent {
		if err := t.txn.Set(seqKey, be.AppendUint64(nil, w.seq)); err != nil {
			w.fail(err)
			return
		}
	}
	f := &flight{ops: w.pending, seq: w.seq, done: make(chan error, 1)}
	entries := w.count
	w.sent, w.flight = w.seq, f
	w.pending, w.bytes, w.count = make([]*op, 0, len(f.ops)), 0, 0
	hold, onCommit := w.hold, w.s.opts.OnCommit
	start := time.Now()
	report := func(err error) {
		if onCommit != nil {
			onCommit(time.Since(start), len(f.ops))
		}
		if hold != nil {
			err = hold(err)
		}
		f.done <- err
	}
	if hold == nil && entries < pipelineEntries {
		// Too small a commit for the next transaction to gain much
		// from being built meanwhile: commit in this goroutine, which
		// saves waking another one for every commit. The commit lands
		// when the writer next looks.
		report(t.txn.Commit())
		t.txn = nil
		return
	}
	next := w.s.db.NewTransaction(true) // nothing in flight: does not wait
	w.background++
	t.txn.CommitWith(report)
	t.txn.Discard() // CommitWith leaves a transaction it refused undiscarded
	t.txn = next
	t.building, t.unseen = t.unseen, t.building
	clear(t.building)
}

// land waits for the commit in flight, if any, and answers its operations
// (see landed).
func (w *writer) land() error {
	if w.flight == nil {
		return nil
	}
	return w.landed(<-w.flight.done)
}

// landed answers the operations of the commit in flight with err, its
// outcome. On error it also fails the pending operations: they were built
// on what that commit would have stored (dedup markers, batches, reference
// counts).
func (w *writer) landed(err error) error {
	f := w.flight
	w.flight = nil
	if err != nil {
		// Badger may have applied a commit it reports failed (v4.9.6
		// syncs its log after the memtable took the writes): its
		// sequence numbers are never handed out again, and the next
		// commit stores the sequence anew. Gaps are harmless.
		w.sent = w.committed
		w.s.log.Error().Err(err).Int("ops", len(f.ops)).Msg("storage commit failed")
	} else {
		w.committed = f.seq
	}
	for _, p := range f.ops {
		switch {
		case err != nil:
			p.errc <- err
		case p.missing != nil:
			p.errc <- p.missing
		default:
			if p.after != nil {
				p.after()
			}
			p.errc <- nil
		}
	}
	if err != nil {
		w.fail(err)
	}
	return err
}

// fail drops the open transaction and answers the pending operations with
// err: nothing of theirs was stored. The sequence numbers it handed out
// are not handed out again (see landed).
func (w *writer) fail(err error) {
	w.drop()
	for _, p := range w.pending {
		p.errc <- err
	}
	clear(w.pending)
	w.pending, w.bytes, w.count = w.pending[:0], 0, 0
}

func (w *writer) drop() {
	if w.tx.txn != nil {
		w.tx.txn.Discard()
		w.tx.txn = nil
	}
}

// deleted lowers shared and records by what a committed transaction
// deleted. Below zero a bound is lost (something deleted that was never
// counted): every release looks up again until Open counts anew.
func (w *writer) deleted(f freed) {
	if w.shared -= f.refs; w.shared < 0 {
		w.s.log.Error().Int64("shared", w.shared).Msg("storage: reference counts miscounted; looking each up until restart")
		w.shared = math.MaxInt64 / 2
	}
	if w.records -= f.records; w.records < 0 {
		w.s.log.Error().Int64("records", w.records).Msg("storage: event records miscounted; looking each up until restart")
		w.records = math.MaxInt64 / 2
	}
}

// nextSeq hands out a sequence number inside the open transaction.
func (w *writer) nextSeq() uint64 {
	w.seq++
	return w.seq
}
