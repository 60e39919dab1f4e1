package storage_test

import (
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hookbatch/hookbatch/event"
	"github.com/hookbatch/hookbatch/storage"
)

// benchRecord is the stored record of a ~300-byte event, the size
// PERF-NOTES measured with.
func benchRecord() []byte {
	ev := event.Event{
		ID:        []byte("evt_01KBJ5Z5QW4B8P3VXG2N7H6D9C"),
		Type:      []byte("order.created"),
		Timestamp: []byte("2026-12-03T10:00:00.123456789Z"),
		Data:      []byte(`{"order_id":"ord_8812734","customer":"cus_1982","total":{"amount":12999,"currency":"EUR"},"items":[{"sku":"SKU-1","qty":2},{"sku":"SKU-7","qty":1}],"note":"` + strings.Repeat("n", 60) + `"}`),
	}
	return event.AppendRecord(nil, &ev, testRecv)
}

func benchOpen(b *testing.B, sync bool) (*storage.Store, *storage.Queue) {
	b.Helper()
	s := mustOpen(b, b.TempDir(), withDedup(24*time.Hour), func(o *storage.Options) { o.SyncWrites = sync })
	return s, mustQueue(b, s, "q")
}

func syncName(sync bool) string {
	if sync {
		return "sync"
	}
	return "nosync"
}

// BenchmarkAppend appends requests of 1 and 100 events one at a time, each
// event with its own dedup id, as the relay does with dedup on (the default):
// ids the producer gave (looked up, then marked) or ids the relay generated
// (fresh: only marked).
func BenchmarkAppend(b *testing.B) {
	rec := benchRecord()
	for _, sync := range []bool{false, true} {
		for _, n := range []int{1, 100} {
			for _, fresh := range []bool{false, true} {
				b.Run(fmt.Sprintf("%s/events=%d/fresh=%t", syncName(sync), n, fresh), func(b *testing.B) {
					s, q := benchOpen(b, sync)
					qs := []*storage.Queue{q}
					items := make([]storage.AppendItem, n)
					idBufs := make([][]byte, n)
					dup := make([]bool, n)
					var next uint64
					b.ReportAllocs()
					b.SetBytes(int64(n * len(rec)))
					for b.Loop() {
						for i := range items {
							next++
							idBufs[i] = strconv.AppendUint(idBufs[i][:0], next, 10)
							items[i] = storage.AppendItem{Record: rec, ID: idBufs[i], Queues: qs, Fresh: fresh}
						}
						if err := s.Append(items, dup); err != nil {
							b.Fatal(err)
						}
					}
					b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/event")
				})
			}
		}
	}
}

// BenchmarkAppendParallel appends single-event requests from 16 goroutines
// per CPU: with fsync, group commit makes one fsync cover many of them.
func BenchmarkAppendParallel(b *testing.B) {
	rec := benchRecord()
	for _, sync := range []bool{false, true} {
		b.Run(syncName(sync), func(b *testing.B) {
			s, q := benchOpen(b, sync)
			qs := []*storage.Queue{q}
			var next atomic.Uint64
			b.ReportAllocs()
			b.SetBytes(int64(len(rec)))
			b.SetParallelism(16)
			b.RunParallel(func(pb *testing.PB) {
				items := make([]storage.AppendItem, 1)
				var id []byte
				dup := make([]bool, 1)
				for pb.Next() {
					id = strconv.AppendUint(id[:0], next.Add(1), 10)
					items[0] = storage.AppendItem{Record: rec, ID: id, Queues: qs}
					if err := s.Append(items, dup); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}

// BenchmarkQueueRead reads queued events 100 at a time, from the start of
// the queue to its end and again: with 100 queued, all in the memtable; with
// 200,000, mostly in tables on disk, as a subscriber behind a backlog reads;
// sparse, a queue that takes one event in 16 of the 800,000 stored; rare,
// one in 300. The sparse and rare queue's events also go to the other
// queue, so their records are stored apart and found with the record
// cursor: sixteen per block of it, or one or none.
func BenchmarkQueueRead(b *testing.B) {
	rec := benchRecord()
	for _, c := range []struct {
		name          string
		queued, every int
	}{{"queued=100", 100, 1}, {"queued=200000", 200_000, 1}, {"sparse", 50_000, 16}, {"rare", 1000, 300}} {
		b.Run(c.name, func(b *testing.B) {
			s, q := benchOpen(b, false)
			other := mustQueue(b, s, "other")
			items := make([]storage.AppendItem, 100)
			mine := []*storage.Queue{q}
			if c.every > 1 {
				mine = []*storage.Queue{q, other}
			}
			for i := 0; i < c.queued*c.every; i += len(items) {
				for j := range items {
					items[j] = storage.AppendItem{Record: rec, Queues: []*storage.Queue{other}}
					if (i+j)%c.every == 0 {
						items[j].Queues = mine
					}
				}
				if err := s.Append(items, make([]bool, len(items))); err != nil {
					b.Fatal(err)
				}
			}
			var (
				n, size int
				cursor  uint64
			)
			fn := func(seq uint64, rec []byte) bool { n++; size += len(rec); cursor = seq; return true }
			b.ReportAllocs()
			b.SetBytes(int64(100 * len(rec)))
			for b.Loop() {
				n, size = 0, 0
				if err := q.Read(cursor, 100, fn); err != nil {
					b.Fatal(err)
				}
				if n == 0 { // read to the end: again from the start
					if err := q.Read(0, 100, fn); err != nil {
						b.Fatal(err)
					}
				}
				if n != 100 || size != 100*len(rec) {
					b.Fatalf("read %d events, %d bytes", n, size)
				}
			}
		})
	}
}

// BenchmarkBatchCycle stores a batch of 100 queued events and acks it, the
// storage work of one delivered batch.
func BenchmarkBatchCycle(b *testing.B) {
	rec := benchRecord()
	for _, sync := range []bool{false, true} {
		b.Run(syncName(sync), func(b *testing.B) {
			s, q := benchOpen(b, sync)
			items := make([]storage.AppendItem, 100)
			for i := range items {
				items[i] = storage.AppendItem{Record: rec, Queues: []*storage.Queue{q}}
			}
			dup := make([]bool, len(items))
			var (
				queued []uint64
				cursor uint64
				n      int
			)
			// refill queues 10000 events outside the timer and lists their
			// sequence numbers.
			refill := func() {
				b.StopTimer()
				for range 100 {
					if err := s.Append(items, dup); err != nil {
						b.Fatal(err)
					}
				}
				queued = nil
				if err := q.Read(cursor, 1<<30, func(seq uint64, _ []byte) bool {
					queued = append(queued, seq)
					return true
				}); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
			}
			b.ReportAllocs()
			b.SetBytes(int64(100 * len(rec)))
			for b.Loop() {
				if len(queued) < 100 {
					refill()
				}
				batch := &storage.Batch{ID: "b" + strconv.Itoa(n), Subscriber: "q", Seqs: queued[:100:100], Created: 1}
				queued = queued[100:]
				cursor = batch.Seqs[99]
				n++
				if err := q.CreateBatch(batch); err != nil {
					b.Fatal(err)
				}
				if err := s.Ack(batch); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkReadOldBatch reads a batch of 100 events formed before 200,000
// later events of the same queue were delivered (their entries, which held
// their records, deleted): what a retry of an old batch or a dead-letter
// replay costs.
func BenchmarkReadOldBatch(b *testing.B) {
	rec := benchRecord()
	s, q := benchOpen(b, false)
	batch := func(q *storage.Queue, id string, n int) *storage.Batch {
		items := make([]storage.AppendItem, n)
		for i := range items {
			items[i] = storage.AppendItem{Record: rec, Queues: []*storage.Queue{q}}
		}
		if err := s.Append(items, make([]bool, n)); err != nil {
			b.Fatal(err)
		}
		bt := &storage.Batch{ID: id, Subscriber: q.ID(), Created: 1}
		if err := q.Read(0, n, func(seq uint64, _ []byte) bool { bt.Seqs = append(bt.Seqs, seq); return true }); err != nil {
			b.Fatal(err)
		}
		if err := q.CreateBatch(bt); err != nil {
			b.Fatal(err)
		}
		return bt
	}
	old := batch(q, "old", 100)
	for i := range 200 {
		if err := s.Ack(batch(q, "l"+strconv.Itoa(i), 1000)); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	b.SetBytes(int64(100 * len(rec)))
	for b.Loop() {
		n := 0
		if err := s.ReadBatch(old, func(uint64, []byte) error { n++; return nil }); err != nil {
			b.Fatal(err)
		}
		if n != 100 {
			b.Fatalf("read %d events, want 100", n)
		}
	}
}
