package main

import (
	"fmt"
	"time"

	"github.com/hookbatch/hookbatch/event"
	"github.com/hookbatch/hookbatch/storage"
)

// storageOps appends events straight to q, n per Append (one synced
// transaction when the store syncs, shared with whatever else the group
// commit gathers): what ingest stores for a request, without HTTP or parsing.
// The records are those ingest writes: same id, type, receive timestamp and
// data.
func storageOps(st *storage.Store, q *storage.Queue, eventSize int) func(int) (opFunc, func()) {
	gen := newBodies(eventSize)
	return func(w int) (opFunc, func()) {
		var (
			ids, recs, data, ts []byte
			idEnds, recEnds     []int
			items               []storage.AppendItem
			dup                 []bool
		)
		queues := []*storage.Queue{q}
		op := func(seq int64, n int, now time.Time) error {
			ts = now.UTC().AppendFormat(ts[:0], time.RFC3339Nano)
			data = data[:0]
			ids, recs, idEnds, recEnds = ids[:0], recs[:0], idEnds[:0], recEnds[:0]
			for i := range n {
				ids = appendEventID(ids, w, seq+int64(i))
				idEnds = append(idEnds, len(ids))
			}
			data = append(data, `{"t":`...)
			data = appendUint(data, uint64(now.UnixNano()))
			data = append(data, `,"p":"`...)
			data = append(data, gen.pad...)
			data = append(data, `"}`...)
			idStart := 0
			for i := range n {
				ev := event.Event{ID: ids[idStart:idEnds[i]], Type: []byte("bench.event"), Timestamp: ts, Data: data}
				recs = event.AppendRecord(recs, &ev, now.UnixNano())
				recEnds = append(recEnds, len(recs))
				idStart = idEnds[i]
			}
			items = items[:0]
			idStart, recStart := 0, 0
			for i := range n {
				items = append(items, storage.AppendItem{
					Record: recs[recStart:recEnds[i]:recEnds[i]],
					ID:     ids[idStart:idEnds[i]:idEnds[i]],
					Queues: queues,
				})
				idStart, recStart = idEnds[i], recEnds[i]
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
