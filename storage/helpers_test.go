package storage_test

import (
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/hookbatch/hookbatch/event"
	"github.com/hookbatch/hookbatch/storage"
	"github.com/rs/zerolog"
)

// testRecv is the receive time stored in every test record.
const testRecv = 1764756000000000000

// mustOpen opens a store in dir with test defaults (no fsync, no dedup, a
// 1 MiB request limit) changed by opt, and closes it when the test ends.
func mustOpen(tb testing.TB, dir string, opt ...func(*storage.Options)) *storage.Store {
	tb.Helper()
	o := storage.Options{Dir: dir, MaxRequestBytes: 1 << 20, Logger: zerolog.Nop()}
	for _, f := range opt {
		f(&o)
	}
	s, err := storage.Open(o)
	if err != nil {
		tb.Fatalf("cannot open store in %s: %v", dir, err)
	}
	tb.Cleanup(func() {
		if err := s.Close(); err != nil {
			tb.Errorf("cannot close store: %v", err)
		}
	})
	return s
}

func withSync(o *storage.Options) { o.SyncWrites = true }

func withDedup(d time.Duration) func(*storage.Options) {
	return func(o *storage.Options) { o.DedupWindow = d }
}

func mustClose(tb testing.TB, s *storage.Store) {
	tb.Helper()
	if err := s.Close(); err != nil {
		tb.Fatalf("Close: %v", err)
	}
}

func mustQueue(tb testing.TB, s *storage.Store, id string) *storage.Queue {
	tb.Helper()
	q, err := s.Queue(id)
	if err != nil {
		tb.Fatalf("Queue(%q): %v", id, err)
	}
	return q
}

// record is the stored form of an event with the given id and data, as the
// relay writes it.
func record(id, data string) []byte {
	ev := event.Event{ID: []byte(id), Type: []byte("test.event"), Data: []byte(data)}
	return event.AppendRecord(nil, &ev, testRecv)
}

// item is an AppendItem of record(id, data) deduplicated by id, going to qs.
func item(id, data string, qs ...*storage.Queue) storage.AppendItem {
	return storage.AppendItem{Record: record(id, data), ID: []byte(id), Queues: qs}
}

// mustAppend appends items and returns the dup flags.
func mustAppend(tb testing.TB, s *storage.Store, items ...storage.AppendItem) []bool {
	tb.Helper()
	dup := make([]bool, len(items))
	if err := s.Append(items, dup); err != nil {
		tb.Fatalf("Append of %d items: %v", len(items), err)
	}
	return dup
}

// got is one event read back: its sequence number and decoded record.
type got struct {
	Seq  uint64
	ID   string
	Data string
}

func decode(tb testing.TB, seq uint64, rec []byte) got {
	tb.Helper()
	r, err := event.DecodeRecord(rec)
	if err != nil {
		tb.Fatalf("event %d: %v", seq, err)
	}
	if r.Recv != testRecv || string(r.Type) != "test.event" {
		tb.Fatalf("event %d: record %+v has the wrong receive time or type", seq, r)
	}
	return got{Seq: seq, ID: string(r.ID), Data: string(r.Data)}
}

// readQueue returns every queued event of q after seq after.
func readQueue(tb testing.TB, q *storage.Queue, after uint64) []got {
	tb.Helper()
	var out []got
	err := q.Read(after, 1<<30, func(seq uint64, rec []byte) bool {
		out = append(out, decode(tb, seq, rec))
		return true
	})
	if err != nil {
		tb.Fatalf("Read of queue %q: %v", q.ID(), err)
	}
	return out
}

// readBatch returns the events of b, or the error ReadBatch gave.
func readBatch(tb testing.TB, s *storage.Store, b *storage.Batch) ([]got, error) {
	tb.Helper()
	var out []got
	err := s.ReadBatch(b, func(seq uint64, rec []byte) error {
		out = append(out, decode(tb, seq, rec))
		return nil
	})
	return out, err
}

func ids(evs []got) []string {
	out := make([]string, len(evs))
	for i, e := range evs {
		out[i] = e.ID
	}
	return out
}

func seqs(evs []got) []uint64 {
	out := make([]uint64, len(evs))
	for i, e := range evs {
		out[i] = e.Seq
	}
	return out
}

func checkIDs(tb testing.TB, what string, evs []got, want ...string) {
	tb.Helper()
	if g := ids(evs); !slices.Equal(g, want) {
		tb.Fatalf("%s: got ids %q, want %q", what, g, want)
	}
	for _, e := range evs {
		if e.Data != dataOf(e.ID) {
			tb.Fatalf("%s: event %s has data %q, want %q", what, e.ID, e.Data, dataOf(e.ID))
		}
	}
}

// dataOf is the data the tests store with event id.
func dataOf(id string) string { return fmt.Sprintf(`{"id":%q}`, id) }

// ev is item(id, dataOf(id), qs...).
func ev(id string, qs ...*storage.Queue) storage.AppendItem { return item(id, dataOf(id), qs...) }

// mustBatch forms a batch of q's oldest n queued events and stores it.
func mustBatch(tb testing.TB, q *storage.Queue, id string, n int) *storage.Batch {
	tb.Helper()
	evs := readQueue(tb, q, 0)
	if len(evs) < n {
		tb.Fatalf("queue %q holds %d events, want at least %d", q.ID(), len(evs), n)
	}
	b := &storage.Batch{ID: id, Subscriber: q.ID(), Seqs: seqs(evs[:n]), Created: time.Now().UnixNano()}
	if err := q.CreateBatch(b); err != nil {
		tb.Fatalf("CreateBatch %s: %v", id, err)
	}
	return b
}

func checkDepth(tb testing.TB, q *storage.Queue, want int64) {
	tb.Helper()
	if d := q.Depth(); d != want {
		tb.Fatalf("Depth of %q = %d, want %d", q.ID(), d, want)
	}
}

func mustBatches(tb testing.TB, s *storage.Store) map[string]*storage.Batch {
	tb.Helper()
	bs, err := s.Batches()
	if err != nil {
		tb.Fatalf("Batches: %v", err)
	}
	out := make(map[string]*storage.Batch, len(bs))
	for _, b := range bs {
		out[b.ID] = b
	}
	return out
}

func checkNotFound(tb testing.TB, what string, err error) {
	tb.Helper()
	if !errors.Is(err, storage.ErrNotFound) {
		tb.Fatalf("%s: got %v, want ErrNotFound", what, err)
	}
}

// eventually polls cond every 10ms until it holds or the deadline passes.
func eventually(tb testing.TB, d time.Duration, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("%s: still false after %v", what, d)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
