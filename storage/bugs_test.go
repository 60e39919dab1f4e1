package storage_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hookbatch/hookbatch/event"
	"github.com/hookbatch/hookbatch/storage"
)

// TestAppendRequestWithinLimitsFits stores requests that are within the
// ingest limits (config defaults: max_body_bytes 1 MiB, max_events_per_request
// 1000; maxima 64 MiB and 100000), built as relay/ingest.go builds them:
// Options.MaxRequestBytes promises that one such request fits in one
// transaction.
func TestAppendRequestWithinLimitsFits(t *testing.T) {
	f := func(name string, maxRequest, events, subscribers, dataBytes int) {
		t.Helper()
		t.Run(name, func(t *testing.T) {
			t.Helper()
			s := mustOpen(t, t.TempDir(), withDedup(time.Hour), func(o *storage.Options) {
				o.MaxRequestBytes = maxRequest
				o.MaxRequestEntries = events * (3 + subscribers) // as relay.New computes it
			})
			qs := make([]*storage.Queue, subscribers)
			for i := range qs {
				qs[i] = mustQueue(t, s, fmt.Sprintf("subscriber-%02d", i))
			}
			body := ingestBody(events, dataBytes)
			if len(body) > maxRequest {
				t.Fatalf("test body of %d bytes is over the %d-byte limit", len(body), maxRequest)
			}
			items := ingestItems(t, body, qs)
			if err := s.Append(items, make([]bool, len(items))); err != nil {
				t.Fatalf("Append of a %d-byte body of %d events to %d subscribers (MaxRequestBytes %d): %v",
					len(body), len(items), subscribers, maxRequest, err)
			}
			for _, q := range qs {
				checkDepth(t, q, int64(len(items)))
			}
		})
	}
	// Default limits: 1000 small events (a 33 KB body) that every one of 20
	// subscribers takes.
	f("default limits, 20 subscribers", 1<<20, 1000, 20, 1)
	// A 1 MiB body of small events, with max_events_per_request raised.
	f("1 MiB of small events", 1<<20, 40000, 1, 1)
	// The largest body the config allows, as one event.
	f("one 40 MiB event", 64<<20, 1, 1, 40<<20)
}

// ingestBody is a JSON array of n events whose data is a string of
// dataBytes-2 bytes (a number when that is under 1).
func ingestBody(n, dataBytes int) []byte {
	data := "0"
	if dataBytes > 2 {
		data = `"` + strings.Repeat("x", dataBytes-2) + `"`
	}
	var b strings.Builder
	b.WriteByte('[')
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(`{"type":"t","data":` + data + `}`)
	}
	b.WriteByte(']')
	return []byte(b.String())
}

// ingestItems parses body and builds its AppendItems the way
// relay/ingest.go does: a generated id and the receive time are filled in,
// and the id is the dedup key.
func ingestItems(tb testing.TB, body []byte, qs []*storage.Queue) []storage.AppendItem {
	tb.Helper()
	evs, err := event.Parse(nil, body, 100000)
	if err != nil {
		tb.Fatalf("Parse: %v", err)
	}
	now := time.Now()
	ts := now.UTC().AppendFormat(nil, time.RFC3339Nano)
	items := make([]storage.AppendItem, len(evs))
	for i := range evs {
		evs[i].ID = event.AppendID(nil, "evt_", now)
		evs[i].Timestamp = ts
		items[i] = storage.AppendItem{Record: event.AppendRecord(nil, &evs[i], now.UnixNano()), ID: evs[i].ID, Queues: qs}
	}
	return items
}

// TestDiskQuotaCountsStoredData opens an empty store with a 32 MiB quota:
// it must accept events until about that much is stored, then refuse.
func TestDiskQuotaCountsStoredData(t *testing.T) {
	const quota = 32 << 20
	s := mustOpen(t, t.TempDir(), func(o *storage.Options) { o.MaxDiskBytes = quota })
	q := mustQueue(t, s, "q")
	if s.Full() {
		t.Fatalf("an empty store is full with a %d-byte quota: DiskBytes = %d", quota, s.DiskBytes())
	}
	if err := s.Append([]storage.AppendItem{ev("first", q)}, make([]bool, 1)); err != nil {
		t.Fatalf("first Append into an empty store with a %d-byte quota: %v (DiskBytes %d)", quota, err, s.DiskBytes())
	}
	data := `"` + strings.Repeat("x", 512<<10) + `"`
	stored := 0
	eventually(t, 20*time.Second, "ErrFull after writing past the quota", func() bool {
		err := s.Append([]storage.AppendItem{item(fmt.Sprint(stored), data, q)}, make([]bool, 1))
		if errors.Is(err, storage.ErrFull) {
			return true
		}
		if err != nil {
			t.Fatalf("Append: %v", err)
		}
		stored += len(data)
		return false
	})
	if stored < quota/4 {
		t.Fatalf("ErrFull after only %d bytes of events under a %d-byte quota (DiskBytes %d)", stored, quota, s.DiskBytes())
	}
}

// TestClosedReads checks that reads after Close fail with ErrClosed, as its
// doc says of every operation (relay/admin.go answers 503 on it).
func TestClosedReads(t *testing.T) {
	s := mustOpen(t, t.TempDir())
	q := mustQueue(t, s, "q")
	mustAppend(t, s, ev("a", q), ev("b", q))
	b := mustBatch(t, q, "b1", 1)
	mustClose(t, s)
	f := func(name string, err error) {
		t.Helper()
		if !errors.Is(err, storage.ErrClosed) {
			t.Errorf("%s after Close: got %v, want ErrClosed", name, err)
		}
	}
	f("Read", q.Read(0, 10, func(uint64, []byte) bool { return true }))
	f("ReadBatch", s.ReadBatch(b, func(uint64, []byte) error { return nil }))
	_, err := s.Batches()
	f("Batches", err)
	_, err = s.DeadLetters("", 0)
	f("DeadLetters", err)
	_, err = s.DeadLetterCounts()
	f("DeadLetterCounts", err)
	_, err = s.GetDeadLetter("b1")
	f("GetDeadLetter", err)
	_, err = s.Replay("b1")
	f("Replay", err)
	f("DropDeadLetter", s.DropDeadLetter("b1"))
	_, err = s.Paused()
	f("Paused", err)
	_, err = s.Queue("new")
	f("Queue of a new subscriber", err)
}

// TestQuotaSpaceComesBack fills a store to its quota, delivers every event
// (batch and ack) and checks the space comes back, so ingest is not
// refused for good once the backlog is gone.
func TestQuotaSpaceComesBack(t *testing.T) {
	const quota = 160 << 20
	s := mustOpen(t, t.TempDir(), func(o *storage.Options) { o.MaxDiskBytes = quota })
	defer mustClose(t, s)
	q := mustQueue(t, s, "q")
	data := `"` + strings.Repeat("x", 256<<10) + `"`
	n := 0
	eventually(t, 60*time.Second, "ErrFull after writing past the quota", func() bool {
		err := s.Append([]storage.AppendItem{item(fmt.Sprint(n), data, q)}, make([]bool, 1))
		if errors.Is(err, storage.ErrFull) {
			return true
		}
		if err != nil {
			t.Fatalf("Append: %v", err)
		}
		n++
		return false
	})
	t.Logf("%d events stored, DiskBytes %d", n, s.DiskBytes())
	for i := 0; ; i++ {
		evs := readQueue(t, q, 0)
		if len(evs) == 0 {
			break
		}
		b := mustBatch(t, q, fmt.Sprint("b", i), min(len(evs), 50))
		if err := s.Ack(b); err != nil {
			t.Fatal(err)
		}
	}
	s.UpdateDiskUsage()
	t.Logf("drained: DiskBytes %d, Full %v", s.DiskBytes(), s.Full())
	s.ReclaimIfFull() // unless the one running every 10 s already has
	eventually(t, 30*time.Second, "the space back", func() bool { s.UpdateDiskUsage(); return !s.Full() })
	t.Logf("after reclaim: DiskBytes %d", s.DiskBytes())
	if err := s.Append([]storage.AppendItem{ev("after", q)}, make([]bool, 1)); err != nil {
		t.Errorf("Append after the space came back: %v", err)
	}
}

// TestQuotaSpaceUnderHalfGarbage: a subscriber that never takes its
// events holds 55% of every value-log file, the delivered events of
// another the rest. Reclaim rewrites those files though under half of
// each is garbage, and ingest is taken again. (The store is reopened
// before the reclaim, as a restart does: Badger never collects the file
// it is writing, and here that file may hold the most garbage, which
// stops its collection altogether; see the README's Guarantees.)
func TestQuotaSpaceUnderHalfGarbage(t *testing.T) {
	const quota = 178 << 20
	dir := t.TempDir()
	opts := func(o *storage.Options) { o.MaxDiskBytes = quota }
	s := mustOpen(t, dir, opts)
	stuck, taken := mustQueue(t, s, "stuck"), mustQueue(t, s, "taken")
	data := `"` + strings.Repeat("x", 256<<10) + `"`
	n, held := 0, 0
	eventually(t, 60*time.Second, "ErrFull after writing past the quota", func() bool {
		q := taken
		if n%20 < 11 {
			q = stuck
		}
		err := s.Append([]storage.AppendItem{item(fmt.Sprint(n), data, q)}, make([]bool, 1))
		if errors.Is(err, storage.ErrFull) {
			return true
		}
		if err != nil {
			t.Fatalf("Append: %v", err)
		}
		if q == stuck {
			held++
		}
		n++
		return false
	})
	for i := 0; ; i++ {
		evs := readQueue(t, taken, 0)
		if len(evs) == 0 {
			break
		}
		if err := s.Ack(mustBatch(t, taken, fmt.Sprint("b", i), min(len(evs), 50))); err != nil {
			t.Fatal(err)
		}
	}
	mustClose(t, s)
	s = mustOpen(t, dir, opts)
	stuck, taken = mustQueue(t, s, "stuck"), mustQueue(t, s, "taken")
	s.UpdateDiskUsage()
	t.Logf("%d events stored, the taken ones delivered: DiskBytes %d, Full %v", n, s.DiskBytes(), s.Full())
	if !s.Full() {
		t.Fatal("the store is under its quota before any reclaim")
	}
	s.Reclaim()
	s.UpdateDiskUsage()
	if s.Full() {
		t.Fatalf("still over the quota after reclaim: DiskBytes %d", s.DiskBytes())
	}
	if err := s.Append([]storage.AppendItem{ev("after", taken)}, make([]bool, 1)); err != nil {
		t.Errorf("Append after the space came back: %v", err)
	}
	if got := len(readQueue(t, stuck, 0)); got != held {
		t.Errorf("the stuck subscriber's events: %d left, want %d", got, held)
	}
}

// TestReclaimDoesNotFailWrites reclaims space while writers append: the
// memtable flush Badger does by dropping a prefix refuses writes while it
// runs, so it must not overlap a commit.
func TestReclaimDoesNotFailWrites(t *testing.T) {
	s := mustOpen(t, t.TempDir())
	defer mustClose(t, s)
	q := mustQueue(t, s, "q")
	done := make(chan error)
	for w := range 4 {
		go func() {
			for i := range 300 {
				if err := s.Append([]storage.AppendItem{ev(fmt.Sprint(w, ".", i), q)}, make([]bool, 1)); err != nil {
					done <- err
					return
				}
			}
			done <- nil
		}()
	}
	for range 5 {
		s.Reclaim()
	}
	for range 4 {
		if err := <-done; err != nil {
			t.Fatalf("Append while reclaiming: %v", err)
		}
	}
	checkDepth(t, q, 1200)
}
