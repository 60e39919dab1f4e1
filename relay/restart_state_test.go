package relay

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hookbatch/hookbatch/config"
	"github.com/hookbatch/hookbatch/sink"
	"github.com/rs/zerolog"
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

// TestUnconfiguredSubscriberReported: a relay restarted without a
// subscriber that still holds events (removed before it drained) keeps
// them, says so at startup with their count, and delivers them once the
// subscriber is configured again.
func TestUnconfiguredSubscriberReported(t *testing.T) {
	a := startSink(t, sink.Options{})
	down := sub("b", "http://"+deadAddr(t)+"/hook", 10, 20*time.Millisecond)
	cfg := testConfig(t, sub("a", a.URL(), 10, 20*time.Millisecond), down)
	r, err := New(cfg, testLogger(t), "test")
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Start(); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		mustIngest(t, r, "/v1/events", fmt.Sprintf(`{"id":"e%d","type":"order.created","data":%d}`, i, i))
	}
	waitFor(t, 5*time.Second, "a's deliveries", func() bool { return len(eventsOf(a)) == 3 })
	stop := func(r *Relay) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		if err := r.Close(ctx); err != nil {
			t.Fatal(err)
		}
	}
	stop(r)

	onlyA := cfg
	onlyA.Subscribers = cfg.Subscribers[:1]
	var log syncBuffer
	r, err = New(onlyA, zerolog.New(&log), "test")
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Start(); err != nil {
		t.Fatal(err)
	}
	stop(r)
	var warned bool
	for _, line := range strings.Split(log.String(), "\n") {
		if strings.Contains(line, `"subscriber":"b"`) && strings.Contains(line, `"events":3`) &&
			strings.Contains(line, "no longer configured") {
			warned = true
		}
	}
	if !warned {
		t.Fatalf("no startup warning for b's 3 events in:\n%s", log.String())
	}

	b := startSink(t, sink.Options{})
	back := cfg
	back.Subscribers = []config.Subscriber{cfg.Subscribers[0], sub("b", b.URL(), 10, 20*time.Millisecond)}
	startRelay(t, back)
	waitFor(t, 10*time.Second, "b's events once it is back", func() bool { return len(eventsOf(b)) == 3 })
}
