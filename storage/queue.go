package storage

import (
	"bytes"
	"errors"
	"fmt"
	"sync/atomic"

	"github.com/dgraph-io/badger/v4"
)

// Queue is one subscriber's durable FIFO of events not yet in a batch, plus
// the count of events it holds in stored batches.
type Queue struct {
	s      *Store
	id     string
	prefix []byte
	notify chan struct{}

	// head is the lowest sequence number that may still be queued: the
	// entries below it belong to batches and dead letters, and stay
	// (holding the records of events of one queue) until those are
	// released; reads Seek past them.
	head  atomic.Uint64
	depth atomic.Int64 // events queued plus events in stored batches
}

// Queue returns the queue of subscriber id, opening it on first use: its
// head cursor is loaded and its depth counted.
func (s *Store) Queue(id string) (*Queue, error) {
	s.mu.Lock()
	q, ok := s.queues[id]
	s.mu.Unlock()
	if ok {
		return q, nil
	}
	// Counted between two commits of the writer, each landed commit's
	// change of depth applied (to no queue: the count includes it) and
	// none in flight (its change will find the queue): nothing counted
	// twice or missed.
	err := s.w.do(&op{urgent: true, alone: func() error {
		s.mu.Lock()
		defer s.mu.Unlock()
		if q, ok = s.queues[id]; ok {
			return nil
		}
		q = &Queue{s: s, id: id, prefix: queuePrefix(id), notify: make(chan struct{}, 1)}
		if err := s.view(q.count); err != nil {
			return err
		}
		s.queues[id] = q
		return nil
	}})
	if err != nil {
		return nil, fmt.Errorf("cannot open queue %q: %w", id, err)
	}
	return q, nil
}

// count loads q's head and counts its depth: its queued events and those
// in its stored batches.
func (q *Queue) count(txn *badger.Txn) error {
	head, err := loadHead(txn, q.id)
	if err != nil {
		return err
	}
	q.head.Store(head)
	var n int64
	it := txn.NewIterator(badger.IteratorOptions{Prefix: q.prefix})
	for it.Seek(q.key(head)); it.Valid(); it.Next() {
		n++
	}
	it.Close()
	// Events in stored batches count too; batches are few (bounded by
	// the delivery window), so a scan is cheap.
	bt := txn.NewIterator(badger.IteratorOptions{PrefetchValues: true, Prefix: []byte{'b'}})
	defer bt.Close()
	for bt.Rewind(); bt.Valid(); bt.Next() {
		if err := bt.Item().Value(func(v []byte) error {
			b, err := unmarshalBatch(v)
			if err == nil && b.Subscriber == q.id {
				n += int64(len(b.Seqs))
			}
			return err
		}); err != nil {
			return err
		}
	}
	q.depth.Store(n)
	return nil
}

// loadHead reads the head of queue id: every entry below it is in a batch
// or a dead letter.
func loadHead(txn *badger.Txn, id string) (uint64, error) {
	head, err := getUint64(txn, headKey(id))
	if err != nil {
		return 0, fmt.Errorf("cannot read the head of queue %q: %w", id, err)
	}
	return head, nil
}

// QueueIDs lists the subscribers with events queued (not yet in a batch),
// in order. It seeks from one subscriber's entries to the next, so it costs
// a few steps per subscriber, not one per event.
func (s *Store) QueueIDs() ([]string, error) {
	var ids []string
	err := s.view(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{'q'}})
		defer it.Close()
		for it.Rewind(); it.Valid(); {
			k := it.Item().Key()
			end := bytes.IndexByte(k, 0)
			if end < 1 {
				return fmt.Errorf("corrupt queue key %q", k)
			}
			id := string(k[1:end])
			// Entries below the head are in batches or dead letters.
			head, err := loadHead(txn, id)
			if err != nil {
				return err
			}
			prefix := queuePrefix(id)
			it.Seek(be.AppendUint64(prefix, head))
			if it.Valid() && bytes.HasPrefix(it.Item().Key(), prefix) {
				ids = append(ids, id)
			}
			it.Seek(append(prefix[:end], 1)) // past every entry of id
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("cannot list queues: %w", err)
	}
	return ids, nil
}

// ID is the subscriber id the queue belongs to.
func (q *Queue) ID() string { return q.id }

// Depth is the number of events the queue holds, batched or not.
func (q *Queue) Depth() int64 { return q.depth.Load() }

// Notify is signalled (without blocking, coalesced) after new events are
// committed to the queue.
func (q *Queue) Notify() <-chan struct{} { return q.notify }

func (q *Queue) key(seq uint64) []byte {
	k := make([]byte, 0, len(q.prefix)+8)
	k = append(k, q.prefix...)
	return be.AppendUint64(k, seq)
}

// Read calls fn for up to max queued events with a sequence number above
// after, in order, until fn returns false. rec is the stored event record and
// is valid only during the call. An event without a record stops the read
// with an *EventError.
func (q *Queue) Read(after uint64, max int, fn func(seq uint64, rec []byte) bool) error {
	start := after + 1
	if h := q.head.Load(); h > start {
		start = h
	}
	err := q.s.view(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: q.prefix})
		defer it.Close()
		rc := newRecordCursor(txn, kindEvent)
		defer rc.close()
		n := 0
		for it.Seek(q.key(start)); it.Valid() && n < max; it.Next() {
			k := it.Item().Key()
			seq := be.Uint64(k[len(q.prefix):])
			more := true
			if err := withRecord(it.Item(), rc, seq, func(v []byte) error { more = fn(seq, v); return nil }); err != nil {
				return err
			}
			n++
			if !more {
				break
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("cannot read queue %q: %w", q.id, err)
	}
	return nil
}

// AppendItem is one event of an Append: its record goes to every queue.
type AppendItem struct {
	Record []byte   // event.AppendRecord output
	ID     []byte   // dedup key; nil disables dedup for this event
	Queues []*Queue // at least one
	// Fresh says ID was just generated, so it cannot have been seen: its
	// dedup marker is written without first being looked up.
	Fresh bool
}

// Append stores items in one transaction and returns once it is committed
// (and fsynced with SyncWrites). dup[i] is set for items whose ID was seen
// within the dedup window (never for Fresh items); those are not stored
// again. On error nothing of the call was stored.
//
// The record of an event of one queue is its queue entry's value; that of
// an event of several queues is stored once, with a reference count, and
// their entries are empty.
func (s *Store) Append(items []AppendItem, dup []bool) error {
	if s.full.Load() {
		return ErrFull
	}
	var bytes, count int64
	keyBytes := 0
	for i := range items {
		it := &items[i]
		if len(it.Record) == 0 || len(it.Queues) == 0 {
			// An empty queue entry says the record is stored apart.
			return errors.New("cannot store an event without a record or a queue")
		}
		bytes += entryCost(len(it.ID)+1, 0) // dedup marker
		count++
		keyBytes += len(it.ID) + 1
		if len(it.Queues) == 1 {
			bytes += entryCost(len(it.Queues[0].prefix)+8, len(it.Record))
			count++
			keyBytes += len(it.Queues[0].prefix) + 8
			continue
		}
		// The record, its count (and the count's value), empty entries.
		bytes += entryCost(9, len(it.Record)) + entryCost(9, 8)
		count += 2 + int64(len(it.Queues))
		keyBytes += 9 + 9 + 8
		for _, q := range it.Queues {
			bytes += entryCost(len(q.prefix)+8, 0)
			keyBytes += len(q.prefix) + 8
		}
	}
	window := s.opts.DedupWindow
	o := &op{bytes: bytes, count: count}
	o.apply = func(t *tx) error {
		// Every key of the call in one buffer, allocated once: Badger holds
		// on to keys until the commit, and appends within the capacity
		// never move earlier ones.
		kb := keyBuf{b: make([]byte, 0, keyBytes)}
		for i := range items {
			it := &items[i]
			dup[i] = false
			if window > 0 && it.ID != nil {
				k := kb.add(kindDedup, it.ID)
				if !it.Fresh {
					_, err := t.get(k, false)
					if err == nil {
						dup[i] = true
						continue
					}
					if !errors.Is(err, badger.ErrKeyNotFound) {
						return err
					}
				}
				if err := t.setEntry(badger.NewEntry(k, nil).WithTTL(window)); err != nil {
					return err
				}
			}
			var seq [8]byte
			be.PutUint64(seq[:], s.w.nextSeq())
			if len(it.Queues) == 1 {
				if err := t.set(kb.add(it.Queues[0].prefix, seq[:]), it.Record); err != nil {
					return err
				}
				continue
			}
			if err := t.set(kb.add(kindEvent, seq[:]), it.Record); err != nil {
				return err
			}
			// Before the commit: upper bounds, never below.
			s.w.shared++
			s.w.records++
			var count [8]byte
			be.PutUint64(count[:], uint64(len(it.Queues)))
			if err := t.set(kb.add(kindRef, seq[:]), kb.add(count[:])); err != nil {
				return err
			}
			for _, q := range it.Queues {
				if err := t.set(kb.add(q.prefix, seq[:]), nil); err != nil {
					return err
				}
			}
		}
		return nil
	}
	o.after = func() {
		for i := range items {
			if dup[i] {
				continue
			}
			for _, q := range items[i].Queues {
				q.depth.Add(1)
				q.signal()
			}
		}
	}
	return s.w.do(o)
}

// Wake signals Notify without new events, to make a reader look again.
func (q *Queue) Wake() { q.signal() }

func (q *Queue) signal() {
	select {
	case q.notify <- struct{}{}:
	default:
	}
}

// keyBuf hands out keys (and small values) from one buffer, each the
// concatenation of its parts, with its capacity clipped.
type keyBuf struct{ b []byte }

func (kb *keyBuf) add(parts ...[]byte) []byte {
	start := len(kb.b)
	for _, p := range parts {
		kb.b = append(kb.b, p...)
	}
	return kb.b[start:len(kb.b):len(kb.b)]
}

var (
	kindDedup = []byte{'d'}
	kindEvent = []byte{'e'}
	kindRef   = []byte{'r'}
)

// withRecord calls fn with the record of event seq: the value of its queue
// entry qe when that is not empty (nil qe: no entry found), else the record
// stored under the event's own key, found with rc (kindEvent). A record
// found nowhere is an *EventError.
func withRecord(qe *badger.Item, rc *recordCursor, seq uint64, fn func(rec []byte) error) error {
	if qe != nil {
		inline := false
		err := qe.Value(func(v []byte) error {
			if len(v) == 0 {
				return nil
			}
			inline = true
			return fn(v)
		})
		if err != nil || inline {
			return err
		}
	}
	item, err := rc.find(seq)
	if err != nil {
		return fmt.Errorf("cannot read event %d: %w", seq, err)
	}
	if item == nil {
		return &EventError{Seq: seq, Err: errors.New("record missing")}
	}
	return item.Value(fn)
}

// recordCursor finds the keys <prefix><seq> of one kind (event records, a
// queue's entries) for reads that want them in ascending order (a queue, a
// batch). Within a block of 256 sequence numbers, the first key is a Get
// (bloom filters keep that cheap where a read wants one record of a block:
// a subscriber of rare events); from the second on, one iterator steps from
// key to key, where a Get for each would search every level of the tree
// again (BenchmarkQueueRead).
//
// The iterator's prefix is its block: Badger's iterator reads one live key
// ahead of the one it lands on, passing over every deleted key on the way,
// and after the last record of an old batch that would be the deletions of
// everything delivered since (BenchmarkReadOldBatch: 50 ms, not 65 us).
type recordCursor struct {
	txn    *badger.Txn
	prefix []byte
	it     *badger.Iterator // of block, from its second find; else nil
	block  uint64           // seq>>8 of the keys asked for last
	key    []byte
	last   uint64 // the seq asked for last, in block; 0: none yet
}

// recordSteps is the furthest find steps forward; it seeks further.
const recordSteps = 8

func newRecordCursor(txn *badger.Txn, prefix []byte) *recordCursor {
	return &recordCursor{txn: txn, prefix: prefix, key: make([]byte, 0, len(prefix)+8)}
}

// find returns the item of key <prefix><seq>, nil if there is none. The item
// is valid until the next call.
func (c *recordCursor) find(seq uint64) (*badger.Item, error) {
	c.key = be.AppendUint64(append(c.key[:0], c.prefix...), seq)
	if c.last == 0 || seq>>8 != c.block {
		c.close()
		c.block, c.last = seq>>8, seq
		item, err := c.txn.Get(c.key)
		if errors.Is(err, badger.ErrKeyNotFound) {
			return nil, nil
		}
		return item, err
	}
	if c.it == nil {
		// The prefix is the key without its last byte: a slice of its
		// own, since the iterator keeps it.
		c.it = c.txn.NewIterator(badger.IteratorOptions{Prefix: bytes.Clone(c.key[:len(c.key)-1])})
		c.last = 0 // seek
	}
	it := c.it
	// Every seq has at most one key, so at most seq-last keys lie between
	// the last one asked for and this one. Stepping forward is
	// exact: every key passed was below seq, so landing beyond it means seq
	// has no key.
	if c.last != 0 && seq > c.last && seq-c.last <= recordSteps && it.Valid() {
		for it.Valid() && bytes.Compare(it.Item().Key(), c.key) < 0 {
			it.Next()
		}
	} else {
		it.Seek(c.key)
	}
	c.last = seq
	if it.Valid() && bytes.Equal(it.Item().Key(), c.key) {
		return it.Item(), nil
	}
	return nil, nil
}

func (c *recordCursor) close() {
	if c.it != nil {
		c.it.Close()
		c.it = nil
	}
}
