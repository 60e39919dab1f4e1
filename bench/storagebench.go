package main

import (
	"encoding/binary"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/hookbatch/hookbatch/event"
	"github.com/hookbatch/hookbatch/storage"
)

// records builds, for one writer, the records ingest writes for n events:
// same id, type, receive timestamp and data. Its slices are reused from one
// call to the next.
type records struct {
	gen             bodies
	w               int
	ids, recs       []byte
	data, ts        []byte
	idEnds, recEnds []int
}

func (r *records) build(seq int64, n int, now time.Time) {
	r.ts = now.UTC().AppendFormat(r.ts[:0], time.RFC3339Nano)
	r.ids, r.recs, r.idEnds, r.recEnds = r.ids[:0], r.recs[:0], r.idEnds[:0], r.recEnds[:0]
	for i := range n {
		r.ids = appendEventID(r.ids, r.w, seq+int64(i))
		r.idEnds = append(r.idEnds, len(r.ids))
	}
	r.data = append(r.data[:0], `{"t":`...)
	r.data = appendUint(r.data, uint64(now.UnixNano()))
	r.data = append(r.data, `,"p":"`...)
	r.data = append(r.data, r.gen.pad...)
	r.data = append(r.data, `"}`...)
	for i := range n {
		ev := event.Event{ID: r.id(i), Type: []byte("bench.event"), Timestamp: r.ts, Data: r.data}
		r.recs = event.AppendRecord(r.recs, &ev, now.UnixNano())
		r.recEnds = append(r.recEnds, len(r.recs))
	}
}

// id and rec are event i's id and record, capacity clipped.
func (r *records) id(i int) []byte {
	start := 0
	if i > 0 {
		start = r.idEnds[i-1]
	}
	return r.ids[start:r.idEnds[i]:r.idEnds[i]]
}

func (r *records) rec(i int) []byte {
	start := 0
	if i > 0 {
		start = r.recEnds[i-1]
	}
	return r.recs[start:r.recEnds[i]:r.recEnds[i]]
}

// storageOps appends events straight to q, n per Append (one synced
// transaction when the store syncs, shared with whatever else the group
// commit gathers): what ingest stores for a request, without HTTP or parsing.
func storageOps(st *storage.Store, q *storage.Queue, eventSize int) func(int) (opFunc, func()) {
	gen := newBodies(eventSize)
	return func(w int) (opFunc, func()) {
		r := &records{gen: gen, w: w}
		var (
			items []storage.AppendItem
			dup   []bool
		)
		queues := []*storage.Queue{q}
		op := func(seq int64, n int, now time.Time) error {
			r.build(seq, n, now)
			items = items[:0]
			for i := range n {
				items = append(items, storage.AppendItem{Record: r.rec(i), ID: r.id(i), Queues: queues})
			}
			if cap(dup) < n {
				dup = make([]bool, n)
			}
			dup = dup[:n]
			if err := st.Append(items, dup); err != nil {
				return err
			}
			for _, d := range dup {
				if d {
					return fmt.Errorf("event of worker %d near %d reported a duplicate", w, seq)
				}
			}
			return nil
		}
		return op, func() {}
	}
}

// badgerOps commits the same records to a bare Badger, n per transaction,
// one transaction per operation: the raw storage ceiling, with none of
// hookbatch's queue entries, dedup markers or group commit.
// stored counts the events committed, for the queue-depth series.
func badgerOps(db *badger.DB, eventSize int, stored *atomic.Int64) func(int) (opFunc, func()) {
	gen := newBodies(eventSize)
	var next atomic.Uint64
	return func(w int) (opFunc, func()) {
		r := &records{gen: gen, w: w}
		op := func(seq int64, n int, now time.Time) error {
			r.build(seq, n, now)
			first := next.Add(uint64(n)) - uint64(n)
			keys := make([]byte, 0, 9*n) // Badger holds keys until the commit
			err := db.Update(func(txn *badger.Txn) error {
				for i := range n {
					keys = binary.BigEndian.AppendUint64(append(keys, 'e'), first+uint64(i))
					if err := txn.Set(keys[len(keys)-9:], r.rec(i)); err != nil {
						return err
					}
				}
				return nil
			})
			if err == nil {
				stored.Add(int64(n))
			}
			return err
		}
		return op, func() {}
	}
}
