package relay

import (
	"bytes"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

// TestRetryLaneKeepsFreshBatchesMoving: batches that keep failing wait for
// their next attempt outside the subscriber's window, so they never block
// its fresh batches (a window of 2 here; the poison batches are 2).
func TestRetryLaneKeepsFreshBatchesMoving(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	attempts := map[string]int{} // batch id -> requests
	poisoned := map[string]bool{}
	delivered := 0
	srv := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) {
		id := string(ctx.Request.Header.Peek("X-Webhook-Batch-Id"))
		mu.Lock()
		defer mu.Unlock()
		attempts[id]++
		if bytes.Contains(ctx.PostBody(), []byte("poison")) {
			poisoned[id] = true
			ctx.SetStatusCode(fasthttp.StatusInternalServerError)
			return
		}
		delivered++
	}}
	addr := metricsTestServer(t, srv)

	s := sub("lane", "http://"+addr+"/hooks", 1, 5*time.Millisecond)
	cfg := testConfig(t, s)
	cfg.Delivery.PerHostConcurrency = 1 // a window of 2 batches
	cfg.Delivery.Retry.InitialBackoff = parkAfter * 2
	cfg.Delivery.Retry.MaxBackoff = parkAfter * 2
	cfg.Delivery.Retry.Multiplier = 1
	cfg.Delivery.Retry.Jitter = 0
	cfg.Delivery.Retry.MaxAttempts = 1000
	cfg.Delivery.CircuitBreaker.FailureThreshold = 1000
	r := startRelay(t, cfg)

	mustIngest(t, r, "/v1/events", `{"type":"t","data":"poison 1"}`)
	mustIngest(t, r, "/v1/events", `{"type":"t","data":"poison 2"}`)
	waitFor(t, 10*time.Second, "both poison batches failing", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(poisoned) == 2
	})
	for i := range 20 {
		mustIngest(t, r, "/v1/events", fmt.Sprintf(`{"type":"t","data":%d}`, i))
	}
	waitFor(t, 10*time.Second, "20 fresh batches delivered past the failing ones", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return delivered == 20
	})
	waitFor(t, 10*time.Second, "the failing batches still being retried", func() bool {
		mu.Lock()
		defer mu.Unlock()
		for id := range poisoned {
			if attempts[id] < 3 {
				return false
			}
		}
		return true
	})
	if v := r.subscriber("lane").view(); v.InFlightBatches != 2 || v.QueuedEvents != 2 {
		t.Fatalf("admin view %+v: want the 2 failing batches in flight and 2 events queued", v)
	}
}
