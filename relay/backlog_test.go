package relay

import (
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/hookbatch/hookbatch/sink"
)

// TestBacklogStaysOnDisk queues 200,000 events (about 200 MB of data) for a
// subscriber that is down and checks the heap stays far below the backlog's
// size, then that every event arrives once the subscriber is back.
func TestBacklogStaysOnDisk(t *testing.T) {
	if testing.Short() {
		t.Skip("queues 200 MB; skipped with -short")
	}
	// An address where nothing listens yet; the sink starts there later.
	addr := deadAddr(t)

	cfg := testConfig(t, sub("down", "http://"+addr+"/hooks", 100, 100*time.Millisecond))
	cfg.Ingest.MaxEventsPerRequest = 1000
	cfg.Delivery.Retry.MaxAttempts = 1000
	r := startRelay(t, cfg)

	const total, perRequest = 200_000, 500
	data := `"` + strings.Repeat("x", 1000) + `"`
	var body strings.Builder
	body.WriteString("[")
	for i := range perRequest {
		if i > 0 {
			body.WriteString(",")
		}
		fmt.Fprintf(&body, `{"type":"t","data":%s}`, data)
	}
	body.WriteString("]")
	// The live heap (right after a collection) is what must not grow with
	// the backlog; the heap in use between collections is up to GOGC
	// percent above it.
	var peak, peakInuse uint64
	sample := func() {
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		peakInuse = max(peakInuse, ms.HeapInuse)
		runtime.GC()
		runtime.ReadMemStats(&ms)
		peak = max(peak, ms.HeapAlloc)
	}
	for i := 0; i < total/perRequest; i++ {
		if a := mustIngest(t, r, "/v1/events", body.String()); a.Accepted != perRequest {
			t.Fatalf("accepted %d", a.Accepted)
		}
		if i%40 == 0 {
			sample()
		}
	}
	sample()
	if d := r.subs[0].q.Depth(); d != total {
		t.Fatalf("queue depth %d, want %d", d, total)
	}
	// Badger's memtables (2 x 16 MiB), index cache (16 MiB) and table
	// builders are the fixed cost; the backlog itself (about 200 MB) must
	// stay on disk.
	const limit = 100 << 20
	t.Logf("while %d events (%d MB) queued: peak live heap %d MB, peak heap in use %d MB", total, total*len(data)>>20, peak>>20, peakInuse>>20)
	if peak > limit {
		t.Fatalf("the live heap reached %d MB with the subscriber down; want under %d MB", peak>>20, limit>>20)
	}

	s := sink.New(sink.Options{Secrets: []string{testSecret}})
	if err := s.Start(addr); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	waitFor(t, 120*time.Second, "the backlog delivered", func() bool { return s.Stats().Events >= total })
	if st := s.Stats(); st.Events != total || st.DuplicateBatches != 0 {
		t.Fatalf("sink stats %+v, want %d events and no duplicates", st, total)
	}
	waitFor(t, 10*time.Second, "an empty queue", func() bool { return r.subs[0].q.Depth() == 0 })
}
