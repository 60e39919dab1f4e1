package storage

import (
	"bytes"
	"errors"
	"fmt"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// CreateBatches stores bs, formed in order from the oldest events of q
// (their Seqs, ascending, all at or above the queue's head), and takes their
// events out of the queue, in one transaction: the queue's head moves past
// them, and their entries stay (holding the records of events of one queue)
// until the batches are released. From here on each batch keeps its id and
// contents across restarts. Calls for one queue must not overlap (the relay
// forms a queue's batches in one goroutine): each checks its events against
// the head the last one left.
func (q *Queue) CreateBatches(bs []*Batch) error {
	if len(bs) == 0 {
		return nil
	}
	recs := make([][]byte, len(bs))
	o := &op{urgent: true, bytes: entryCost(len(q.id)+1, 8), count: 1}
	// The entries below the head belong to stored batches: a head moved
	// back would queue them again, and a batch under another subscriber
	// would release entries not its own. Its release, later, must fit one
	// transaction.
	prev := q.head.Load()
	for i, b := range bs {
		if len(b.Seqs) == 0 {
			return errors.New("cannot store an empty batch")
		}
		if r := releaseOp(b); r.count > q.s.w.maxCount || r.bytes > q.s.w.maxBytes {
			return fmt.Errorf("batch %s: %d events are more than one transaction can release", b.ID, len(b.Seqs))
		}
		if b.Subscriber != q.id {
			return fmt.Errorf("batch %s of %q stored in queue %q", b.ID, b.Subscriber, q.id)
		}
		for _, seq := range b.Seqs {
			if seq < prev {
				return fmt.Errorf("batch %s: event %d is not queued in order above %d", b.ID, seq, prev)
			}
			prev = seq + 1
		}
		recs[i] = b.marshal(nil)
		o.bytes += entryCost(len(b.ID)+1, len(recs[i]))
		o.count++
	}
	last := bs[len(bs)-1].Seqs
	head := last[len(last)-1] + 1
	o.apply = func(t *tx) error {
		for i, b := range bs {
			if err := t.set(batchKey(b.ID), recs[i]); err != nil {
				return err
			}
		}
		return t.set(headKey(q.id), be.AppendUint64(nil, head))
	}
	o.after = func() { q.head.Store(head) }
	if err := q.s.w.do(o); err != nil {
		// Badger may have applied a commit it reports failed: the head
		// is read back, so that the events are not batched twice.
		var stored uint64
		if q.s.view(func(txn *badger.Txn) (rerr error) { stored, rerr = loadHead(txn, q.id); return rerr }) == nil {
			q.head.Store(stored)
		}
		return fmt.Errorf("cannot store %d batches from %s: %w", len(bs), bs[0].ID, err)
	}
	return nil
}

// CreateBatch stores one batch; see CreateBatches.
func (q *Queue) CreateBatch(b *Batch) error { return q.CreateBatches([]*Batch{b}) }

// UpdateBatch stores b's delivery state (attempts, times, last outcome).
func (s *Store) UpdateBatch(b *Batch) error {
	rec := b.marshal(nil)
	o := &op{urgent: true, bytes: entryCost(len(b.ID)+1, len(rec)), count: 1}
	o.apply = func(t *tx) error {
		if _, err := t.get(batchKey(b.ID), false); err != nil {
			return notFound(err) // finished meanwhile: never bring it back
		}
		return t.set(batchKey(b.ID), rec)
	}
	if err := s.w.do(o); err != nil {
		return fmt.Errorf("cannot update batch %s: %w", b.ID, err)
	}
	return nil
}

// Ack removes a delivered batch and releases its events.
func (s *Store) Ack(b *Batch) error {
	o := releaseOp(b)
	var freed freed // for the writer's counts once committed
	o.apply = func(t *tx) error {
		if _, err := t.get(batchKey(b.ID), false); err != nil {
			return notFound(err) // acknowledged twice: release nothing twice
		}
		if err := t.del(batchKey(b.ID)); err != nil {
			return err
		}
		var err error
		freed, err = s.w.releaseLocked(t, b)
		return err
	}
	o.after = func() {
		s.w.deleted(freed)
		s.addDepth(b.Subscriber, -int64(len(b.Seqs)))
		s.released.Add(int64(len(b.Seqs)))
	}
	if err := s.w.do(o); err != nil {
		return fmt.Errorf("cannot acknowledge batch %s: %w", b.ID, err)
	}
	return nil
}

// DeadLetter moves b (with its final state) from the pending batches to the
// dead-letter store. Its events stay stored until it is replayed or dropped.
func (s *Store) DeadLetter(b *Batch) error {
	rec := b.marshal(nil)
	o := &op{urgent: true, bytes: entryCost(len(b.ID)+1, 0) + entryCost(len(b.ID)+1, len(rec)), count: 2}
	o.apply = func(t *tx) error {
		if _, err := t.get(batchKey(b.ID), false); err != nil {
			return notFound(err)
		}
		if err := t.del(batchKey(b.ID)); err != nil {
			return err
		}
		return t.set(deadKey(b.ID), rec)
	}
	o.after = func() { s.addDepth(b.Subscriber, -int64(len(b.Seqs))) }
	if err := s.w.do(o); err != nil {
		return fmt.Errorf("cannot dead-letter batch %s: %w", b.ID, err)
	}
	return nil
}

// Replay moves dead letter id back to the pending batches with a fresh
// attempt count, its age (Created) counted from now, and the same id and
// contents, and returns it.
func (s *Store) Replay(id string) (*Batch, error) {
	b, err := s.GetDeadLetter(id)
	if err != nil {
		return nil, err
	}
	b.Attempts, b.FirstAttempt, b.LastAttempt, b.NextAttempt, b.FailedAt = 0, 0, 0, 0, 0
	b.LastStatus, b.LastError = 0, ""
	b.Created = time.Now().UnixNano() // a max_age counts from the replay
	rec := b.marshal(nil)
	o := &op{urgent: true, bytes: entryCost(len(id)+1, 0) + entryCost(len(id)+1, len(rec)), count: 2}
	o.apply = func(t *tx) error {
		if _, err := t.get(deadKey(id), false); err != nil {
			return notFound(err)
		}
		if err := t.del(deadKey(id)); err != nil {
			return err
		}
		return t.set(batchKey(id), rec)
	}
	o.after = func() { s.addDepth(b.Subscriber, int64(len(b.Seqs))) }
	if err := s.w.do(o); err != nil {
		return nil, fmt.Errorf("cannot replay dead letter %s: %w", id, err)
	}
	return b, nil
}

// DropDeadLetter deletes dead letter id and releases its events.
func (s *Store) DropDeadLetter(id string) error {
	b, err := s.GetDeadLetter(id)
	if err != nil {
		return err
	}
	o := releaseOp(b)
	var freed freed
	o.apply = func(t *tx) error {
		if _, err := t.get(deadKey(id), false); err != nil {
			return notFound(err)
		}
		if err := t.del(deadKey(id)); err != nil {
			return err
		}
		var err error
		freed, err = s.w.releaseLocked(t, b)
		return err
	}
	o.after = func() {
		s.w.deleted(freed)
		s.released.Add(int64(len(b.Seqs)))
	}
	if err := s.w.do(o); err != nil {
		return fmt.Errorf("cannot drop dead letter %s: %w", id, err)
	}
	return nil
}

// Batches returns every stored batch awaiting delivery, for recovery.
func (s *Store) Batches() ([]*Batch, error) {
	var out []*Batch
	err := s.scan('b', "", func(b *Batch) bool { out = append(out, b); return true })
	return out, err
}

// DeadLetters returns up to limit dead letters, of subscriber sub when it is
// not empty, in batch id order.
func (s *Store) DeadLetters(sub string, limit int) ([]*Batch, error) {
	return s.DeadLettersAfter(sub, "", limit)
}

// DeadLettersAfter is DeadLetters from the first id after after, in id
// order: a long list read a page at a time.
func (s *Store) DeadLettersAfter(sub, after string, limit int) ([]*Batch, error) {
	var out []*Batch
	err := s.scan('x', after, func(b *Batch) bool {
		if sub == "" || b.Subscriber == sub {
			out = append(out, b)
		}
		return limit <= 0 || len(out) < limit
	})
	return out, err
}

// GetBatch returns stored batch id, or ErrNotFound.
func (s *Store) GetBatch(id string) (*Batch, error) {
	var b *Batch
	err := s.view(func(txn *badger.Txn) error {
		var err error
		b, err = getBatch(txn, batchKey(id))
		return err
	})
	return b, err
}

// GetDeadLetter returns dead letter id, or ErrNotFound.
func (s *Store) GetDeadLetter(id string) (*Batch, error) {
	var b *Batch
	err := s.view(func(txn *badger.Txn) error {
		var err error
		b, err = getBatch(txn, deadKey(id))
		return err
	})
	return b, err
}

// ReadBatch calls fn with the stored record of each of b's events, in order.
// rec is valid only during the call. An event without a record stops the
// read with an *EventError.
func (s *Store) ReadBatch(b *Batch, fn func(seq uint64, rec []byte) error) error {
	return s.view(func(txn *badger.Txn) error {
		qc := newRecordCursor(txn, queuePrefix(b.Subscriber))
		defer qc.close()
		rc := newRecordCursor(txn, kindEvent)
		defer rc.close()
		for _, seq := range b.Seqs {
			qe, err := qc.find(seq)
			if err != nil {
				return fmt.Errorf("cannot read event %d of batch %s: %w", seq, b.ID, err)
			}
			if err := withRecord(qe, rc, seq, func(v []byte) error { return fn(seq, v) }); err != nil {
				return err
			}
		}
		return nil
	})
}

// scan calls fn for the stored batches of kind ('b' pending, 'x' dead
// letters) in id order, from the first id after after ("": all), until fn
// returns false.
func (s *Store) scan(kind byte, after string, fn func(*Batch) bool) error {
	return s.view(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{PrefetchValues: true, PrefetchSize: 64, Prefix: []byte{kind}})
		defer it.Close()
		from := append([]byte{kind}, after...)
		for it.Seek(from); it.Valid(); it.Next() {
			if after != "" && bytes.Equal(it.Item().Key(), from) {
				continue
			}
			var b *Batch
			err := it.Item().Value(func(v []byte) error {
				var err error
				b, err = unmarshalBatch(v)
				return err
			})
			if err != nil {
				return fmt.Errorf("cannot read batch %q: %w", it.Item().Key()[1:], err)
			}
			if !fn(b) {
				return nil
			}
		}
		return nil
	})
}

func notFound(err error) error {
	if errors.Is(err, badger.ErrKeyNotFound) {
		return ErrNotFound
	}
	return err
}

func getBatch(txn *badger.Txn, key []byte) (*Batch, error) {
	item, err := txn.Get(key)
	if err != nil {
		return nil, notFound(err)
	}
	var b *Batch
	err = item.Value(func(v []byte) error {
		b, err = unmarshalBatch(v)
		return err
	})
	return b, err
}

// releaseOp is the op releasing b's events, sized for releaseLocked.
func releaseOp(b *Batch) *op {
	n := int64(len(b.Seqs))
	return &op{urgent: true,
		bytes: entryCost(len(b.ID)+1, 0) + n*(entryCost(len(b.Subscriber)+10, 0)+entryCost(9, 8)),
		count: 1 + 2*n,
	}
}

// freed counts what a release deleted: reference counts and records stored
// apart from their queue entries.
type freed struct{ refs, records int64 }

// releaseLocked deletes b's queue entries and drops one reference to each
// of its events held by several queues, deleting the records nobody holds
// any more. It runs inside the writer's transaction, and deletes at most
// two entries per event. While no reference count (w.shared) or record
// stored apart (w.records) may exist, it looks none up.
func (w *writer) releaseLocked(t *tx, b *Batch) (freed, error) {
	var f freed
	prefix := queuePrefix(b.Subscriber)
	kb := keyBuf{b: make([]byte, 0, len(b.Seqs)*(len(prefix)+8))}
	for _, seq := range b.Seqs {
		var s [8]byte
		be.PutUint64(s[:], seq)
		if err := t.del(kb.add(prefix, s[:])); err != nil {
			return f, err
		}
		if w.shared > 0 {
			rk := refKey(seq)
			v, err := t.get(rk, true)
			switch {
			case errors.Is(err, badger.ErrKeyNotFound):
			case err != nil:
				return f, err
			case len(v) != 8:
				return f, fmt.Errorf("corrupt reference count of event %d", seq)
			case be.Uint64(v) <= 2:
				if err := t.del(rk); err != nil {
					return f, err
				}
				f.refs++
				continue
			default:
				if err := t.set(rk, be.AppendUint64(nil, be.Uint64(v)-1)); err != nil {
					return f, err
				}
				continue
			}
		}
		if w.records == 0 {
			continue // the record was the queue entry's value
		}
		// Held by this queue alone: a record stored apart goes with it.
		// (Looked up: the entry just deleted may have held it instead.)
		ek := eventKey(seq)
		if _, err := t.get(ek, false); err != nil {
			if errors.Is(err, badger.ErrKeyNotFound) {
				continue
			}
			return f, err
		}
		if err := t.del(ek); err != nil {
			return f, err
		}
		f.records++
	}
	return f, nil
}

func (s *Store) addDepth(sub string, n int64) {
	s.mu.Lock()
	q := s.queues[sub]
	s.mu.Unlock()
	if q != nil {
		q.depth.Add(n)
	}
}

// Split replaces b by two batches holding its first and second halves, with
// ids "<id>.1" and "<id>.2", as stable as any other. Their age counts from b's.
func (s *Store) Split(b *Batch) ([2]*Batch, error) {
	var out [2]*Batch
	if len(b.Seqs) < 2 {
		return out, errors.New("cannot split a batch of one event")
	}
	half := len(b.Seqs) / 2
	for i, seqs := range [][]uint64{b.Seqs[:half], b.Seqs[half:]} {
		out[i] = &Batch{
			ID:         fmt.Sprintf("%s.%d", b.ID, i+1),
			Subscriber: b.Subscriber,
			Seqs:       seqs,
			Created:    b.Created,
		}
	}
	r0, r1 := out[0].marshal(nil), out[1].marshal(nil)
	o := &op{urgent: true, bytes: entryCost(len(b.ID)+1, 0) + entryCost(len(b.ID)+3, len(r0)) + entryCost(len(b.ID)+3, len(r1)), count: 3}
	o.apply = func(t *tx) error {
		if _, err := t.get(batchKey(b.ID), false); err != nil {
			return notFound(err)
		}
		if err := t.del(batchKey(b.ID)); err != nil {
			return err
		}
		if err := t.set(batchKey(out[0].ID), r0); err != nil {
			return err
		}
		return t.set(batchKey(out[1].ID), r1)
	}
	if err := s.w.do(o); err != nil {
		return out, fmt.Errorf("cannot split batch %s: %w", b.ID, err)
	}
	return out, nil
}

// DeadLetterCounts returns the number of dead letters of each subscriber.
func (s *Store) DeadLetterCounts() (map[string]int, error) {
	counts := make(map[string]int)
	err := s.scan('x', "", func(b *Batch) bool { counts[b.Subscriber]++; return true })
	return counts, err
}

// SetPaused stores that subscriber sub is paused, and why; an empty reason
// clears it.
func (s *Store) SetPaused(sub, reason string) error {
	o := &op{urgent: true, bytes: entryCost(len(sub)+1, len(reason)), count: 1}
	o.apply = func(t *tx) error {
		if reason == "" {
			return t.del(pauseKey(sub))
		}
		return t.set(pauseKey(sub), []byte(reason))
	}
	return s.w.do(o)
}

// Paused returns the stored pause reason of every paused subscriber.
func (s *Store) Paused() (map[string]string, error) {
	out := make(map[string]string)
	err := s.view(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{PrefetchValues: true, Prefix: []byte{'p'}})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			v, err := it.Item().ValueCopy(nil)
			if err != nil {
				return err
			}
			out[string(it.Item().Key()[1:])] = string(v)
		}
		return nil
	})
	return out, err
}
