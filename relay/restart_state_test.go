package relay

import (
	"context"
	"testing"
	"time"

	"github.com/hookbatch/hookbatch/sink"
)

// TestPausedBatchCountsAfterRestart: a batch formed for a paused subscriber
// still counts as in flight, with its events' age, after a restart, before
// anything resumes it; then it is delivered with its id.
func TestPausedBatchCountsAfterRestart(t *testing.T) {
	s := startSink(t, sink.Options{})
	cfg := testConfig(t, sub("s", s.URL(), 10, 20*time.Millisecond))
	r, err := New(cfg, testLogger(t), "test")
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Start(); err != nil {
		t.Fatal(err)
	}
	adminJSON(t, r, "POST", "/v1/subscribers/s/pause", 200, nil)
	mustIngest(t, r, "/v1/events", `[{"id":"a","type":"order.created","data":1},{"id":"b","type":"order.created","data":2}]`)
	waitFor(t, 5*time.Second, "a batch formed", func() bool { return subscriberState(t, r, "s").InFlightBatches == 1 })
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := r.Close(ctx); err != nil {
		t.Fatal(err)
	}
	r = startRelay(t, cfg)
	waitFor(t, 5*time.Second, "the recovered batch counted", func() bool { return subscriberState(t, r, "s").InFlightBatches == 1 })
	v := subscriberState(t, r, "s")
	// The ages come from the receive times stored with the events.
	if !v.Paused || v.QueuedEvents != 2 || v.OldestEventAge <= 0 {
		t.Fatalf("after the restart: %+v, want paused, 2 queued, an age", v)
	}
	if age := metricValue(t, r, `hookbatch_oldest_event_age_seconds{subscriber="s"}`); age <= 0 {
		t.Errorf("hookbatch_oldest_event_age_seconds %v, want an age", age)
	}
	adminJSON(t, r, "POST", "/v1/subscribers/s/resume", 200, nil)
	waitFor(t, 5*time.Second, "delivery after the resume", func() bool { return len(eventsOf(s)) == 2 })
}
