package relay

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hookbatch/hookbatch/config"
	"github.com/hookbatch/hookbatch/sink"
	"github.com/hookbatch/hookbatch/storage"
	"github.com/rs/zerolog"
	"github.com/valyala/fasthttp"
)

// TestPausedBatchCountsAfterRestart: a batch formed for a paused subscriber
// still counts as in flight, with its events' age, after a restart, before
// anything resumes it; then it is delivered with its id.
func TestPausedBatchCountsAfterRestart(t *testing.T) {
	s := startSink(t, sink.Options{})
	cfg := testConfig(t, sub("s", s.URL(), 10, 20*time.Millisecond))
	r := openRelay(t, cfg, testLogger(t))
	adminJSON(t, r, "POST", "/v1/subscribers/s/pause", 200, nil)
	mustIngest(t, r, "/v1/events", `[{"id":"a","type":"order.created","data":1},{"id":"b","type":"order.created","data":2}]`)
	waitFor(t, 5*time.Second, "a batch formed", func() bool { return subscriberState(t, r, "s").InFlightBatches == 1 })
	stopRelay(t, r)
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
	r := openRelay(t, cfg, testLogger(t))
	for i := range 3 {
		mustIngest(t, r, "/v1/events", fmt.Sprintf(`{"id":"e%d","type":"order.created","data":%d}`, i, i))
	}
	waitFor(t, 5*time.Second, "a's deliveries", func() bool { return len(eventsOf(a)) == 3 })
	stopRelay(t, r)

	onlyA := cfg
	onlyA.Subscribers = cfg.Subscribers[:1]
	var log syncBuffer
	stopRelay(t, openRelay(t, onlyA, zerolog.New(&log)))
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

// TestShutdownLeavesBacklogQueued: a subscriber catching up on a backlog
// when the relay shuts down stores at most its open batch: the backlog
// stays queued rather than turned into stored batches (which a restart
// would hold in memory all at once), and nothing is lost.
func TestShutdownLeavesBacklogQueued(t *testing.T) {
	srv := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) {}}
	addr := metricsTestServer(t, srv)
	body := "[" + strings.Repeat(`{"type":"t","data":1},`, 999) + `{"type":"t","data":1}]`
	for trial := range 3 {
		cfg := testConfig(t, sub("a", "http://"+addr+"/hooks", 1, time.Millisecond))
		cfg.Delivery.PerHostConcurrency = 8 // a window of 16
		r := openRelay(t, cfg, zerolog.Nop())
		for range 10 {
			mustIngest(t, r, "/v1/events", body)
		}
		stopRelay(t, r)
		delivered := r.subscriber("a").metrics.eventsDelivered.Get()

		st, err := storage.Open(storage.Options{Dir: cfg.DataDir, Logger: zerolog.Nop()})
		if err != nil {
			t.Fatal(err)
		}
		bs, err := st.Batches()
		if err != nil {
			t.Fatal(err)
		}
		q, err := st.Queue("a")
		if err != nil {
			t.Fatal(err)
		}
		left := q.Depth()
		if err := st.Close(); err != nil {
			t.Fatal(err)
		}
		if window := 2 * cfg.Delivery.PerHostConcurrency; len(bs) > 2*window {
			t.Fatalf("trial %d: %d batches stored after the shutdown, more than the window and the retry lane (%d)", trial, len(bs), 2*window)
		}
		if int64(delivered)+left != 10_000 {
			t.Fatalf("trial %d: %d delivered + %d left stored, want 10000", trial, delivered, left)
		}
	}
}
