package relay

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hookbatch/hookbatch/sink"
	"github.com/valyala/fasthttp"
)

// TestLargeBatchesBacklog: a backlog of full batches of 2,000 events is
// stored several batches per commit, but never more than one transaction
// takes (it once retried the same too-large commit forever).
func TestLargeBatchesBacklog(t *testing.T) {
	t.Parallel()
	s := startSink(t, sink.Options{})
	cfg := testConfig(t, sub("big", s.URL(), 2000, time.Hour))
	cfg.Ingest.MaxEventsPerRequest = 1000
	r := startRelay(t, cfg)
	if st, body := post(t, "http://"+r.AdminAddr()+"/v1/subscribers/big/pause", ""); st != 200 {
		t.Fatalf("pause: %d %s", st, body)
	}
	body := "[" + strings.TrimSuffix(strings.Repeat(`{"type":"t","data":1},`, 1000), ",") + "]"
	for range 40 {
		mustIngest(t, r, "/v1/events", body)
	}
	if st, body := post(t, "http://"+r.AdminAddr()+"/v1/subscribers/big/resume", ""); st != 200 {
		t.Fatalf("resume: %d %s", st, body)
	}
	waitFor(t, 60*time.Second, "40,000 events in batches of 2,000", func() bool { return s.Stats().Events == 40000 })
	for _, b := range s.Batches() {
		if b.Count != 2000 {
			t.Fatalf("batch %s of %d events", b.ID, b.Count)
		}
	}
}

// TestRetryAfterHoldsTheSubscriber: a Retry-After on 429 holds back every
// batch of the subscriber, not only the one that got it.
func TestRetryAfterHoldsTheSubscriber(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var times []time.Time
	srv := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) {
		mu.Lock()
		defer mu.Unlock()
		times = append(times, time.Now())
		if len(times) == 1 {
			ctx.Response.Header.Set("Retry-After", "2")
			ctx.SetStatusCode(fasthttp.StatusTooManyRequests)
		}
	}}
	addr := metricsTestServer(t, srv)
	cfg := testConfig(t, sub("limited", "http://"+addr+"/hooks", 1, 5*time.Millisecond))
	cfg.Delivery.Retry.MaxBackoff = 10 * time.Second
	r := startRelay(t, cfg)
	mustIngest(t, r, "/v1/events", `{"type":"t","data":0}`)
	// Once the relay has taken the 429 in (not merely once it was sent).
	waitFor(t, 5*time.Second, "the 429 processed", func() bool {
		return metricValue(t, r, `hookbatch_delivery_attempts_total{subscriber="limited",outcome="retry"}`) == 1
	})
	for i := 1; i <= 20; i++ {
		mustIngest(t, r, "/v1/events", fmt.Sprintf(`{"type":"t","data":%d}`, i))
	}
	waitFor(t, 10*time.Second, "every batch delivered", func() bool { mu.Lock(); defer mu.Unlock(); return len(times) == 22 })
	mu.Lock()
	defer mu.Unlock()
	for _, at := range times[1:] {
		if gap := at.Sub(times[0]); gap < 2*time.Second {
			t.Fatalf("a request came %v after the 429 with Retry-After: 2", gap)
		}
	}
}

// TestLargeSuccessAnswer: a 2xx whose body is longer than the client reads
// is a delivery, not a failure.
func TestLargeSuccessAnswer(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	requests := 0
	big := strings.Repeat("x", 2<<20)
	srv := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) {
		mu.Lock()
		requests++
		mu.Unlock()
		ctx.SetBodyString(big)
	}}
	addr := metricsTestServer(t, srv)
	r := startRelay(t, testConfig(t, sub("echo", "http://"+addr+"/hooks", 10, 5*time.Millisecond)))
	mustIngest(t, r, "/v1/events", `{"type":"t","data":1}`)
	waitFor(t, 5*time.Second, "the delivery counted", func() bool {
		return metricValue(t, r, `hookbatch_batches_delivered_total{subscriber="echo"}`) == 1
	})
	mu.Lock()
	defer mu.Unlock()
	if requests != 1 {
		t.Fatalf("%d requests for one batch", requests)
	}
}

// TestCloseWithinDeadline: Close returns soon after its context ends even
// with deliveries waiting for a slow subscriber's slots.
func TestCloseWithinDeadline(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	srv := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) {
		select {
		case <-release:
		case <-time.After(10 * time.Second):
		}
	}}
	addr := metricsTestServer(t, srv)
	defer close(release)
	cfg := testConfig(t, sub("slow", "http://"+addr+"/hooks", 1, 5*time.Millisecond))
	cfg.Delivery.PerHostConcurrency = 1
	cfg.Delivery.Timeout = 30 * time.Second
	r, err := New(cfg, testLogger(t), "test")
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Start(); err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		mustIngest(t, r, "/v1/events", fmt.Sprintf(`{"type":"t","data":%d}`, i))
	}
	waitFor(t, 5*time.Second, "a request in flight", func() bool { return r.subscriber("slow").inflight.Load() == 1 })
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	if err := r.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if took := time.Since(start); took > 3*time.Second {
		t.Fatalf("Close took %v with a 300ms deadline", took)
	}
}

func TestAdminProbesAreGetOnly(t *testing.T) {
	t.Parallel()
	r := startRelay(t, testConfig(t))
	for _, path := range []string{"/metrics", "/healthz", "/readyz"} {
		if st, _ := do(t, "POST", "http://"+r.AdminAddr()+path, ""); st != fasthttp.StatusMethodNotAllowed {
			t.Fatalf("POST %s: %d, want 405", path, st)
		}
		if st, _ := do(t, "GET", "http://"+r.AdminAddr()+path, ""); st != 200 {
			t.Fatalf("GET %s: %d, want 200", path, st)
		}
	}
}
