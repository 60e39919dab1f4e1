package relay

import (
	"bytes"
	"context"
	"encoding/json"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hookbatch/hookbatch/config"
	"github.com/rs/zerolog"
	"github.com/valyala/fasthttp"
)

// gateWriter is a log destination that holds the first line containing
// match until release is closed, closing hit when it gets there: the
// goroutine logging it is held at that point.
type gateWriter struct {
	match   []byte
	hit     chan struct{}
	release chan struct{}
	once    sync.Once
}

func (g *gateWriter) Write(p []byte) (int, error) {
	if bytes.Contains(p, g.match) {
		first := false
		g.once.Do(func() { first = true; close(g.hit) })
		if first {
			<-g.release
		}
	}
	return len(p), nil
}

// refusedAgain reports whether a dispatch of batch id was refused while
// it was claimed.
func (r *Relay) refusedAgain(id string) bool {
	r.claimMu.Lock()
	defer r.claimMu.Unlock()
	return r.claims[id]
}

// heldReplay is a relay whose subscriber "a" has dead-lettered its first
// batch (its endpoint refuses the first request, then takes each one,
// counted in ok), with the delivery goroutine held in its log line while
// that dead letter, id, is replayed: the replay's dispatch was refused.
type heldReplay struct {
	r         *Relay
	cfg       config.Config
	id        string
	calls, ok atomic.Int64
	release   func() // lets the goroutine go on
}

func startHeldReplay(t *testing.T) *heldReplay {
	t.Helper()
	h := &heldReplay{}
	srv := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) {
		if h.calls.Add(1) == 1 {
			ctx.SetStatusCode(fasthttp.StatusBadRequest) // permanent: dead letter
			return
		}
		h.ok.Add(1)
	}}
	addr := metricsTestServer(t, srv)
	g := &gateWriter{match: []byte("batch dead-lettered"), hit: make(chan struct{}), release: make(chan struct{})}
	var once sync.Once
	h.release = func() { once.Do(func() { close(g.release) }) }
	h.cfg = testConfig(t, sub("a", "http://"+addr+"/hooks", 10, 5*time.Millisecond))
	h.r = openRelay(t, h.cfg, zerolog.New(g))
	t.Cleanup(func() { h.release(); stopRelay(t, h.r) })
	mustIngest(t, h.r, "/v1/events", `{"type":"t","data":1}`)
	select {
	case <-g.hit:
	case <-time.After(10 * time.Second):
		t.Fatal("no dead letter")
	}
	dls, err := h.r.store.DeadLetters("a", 10)
	if err != nil || len(dls) != 1 {
		t.Fatalf("dead letters: %v, %v", dls, err)
	}
	h.id = dls[0].ID
	if st, body := post(t, "http://"+h.r.AdminAddr()+"/v1/dead-letters/"+h.id+"/replay", ""); st != fasthttp.StatusOK {
		t.Fatalf("replay: %d %s", st, body)
	}
	waitFor(t, 5*time.Second, "the replay's dispatch refused", func() bool { return h.r.refusedAgain(h.id) })
	return h
}

// TestReplayWhileDeadLettering replays a dead letter while the goroutine
// that dead-lettered it has not finished (held in its log line, still
// claiming the batch): the replay's dispatch is refused, and the batch is
// delivered once that goroutine is done, not left stored with nobody to
// carry it.
func TestReplayWhileDeadLettering(t *testing.T) {
	h := startHeldReplay(t)
	r := h.r
	h.release()
	waitFor(t, 10*time.Second, "the replayed batch delivered", func() bool { return h.ok.Load() == 1 })
	waitFor(t, 5*time.Second, "no batch left", func() bool { bs, err := r.store.Batches(); return err == nil && len(bs) == 0 })
	if v := r.subscriber("a").view(); v.DeadLetterBatches != 0 || v.InFlightBatches != 0 {
		t.Fatalf("after delivery: %+v", v)
	}
}

// refusingRelay has 200 dead letters of subscriber "a", whose endpoint
// answers 400 to everything.
func refusingRelay(t *testing.T) (*Relay, config.Config) {
	srv := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) { ctx.SetStatusCode(fasthttp.StatusBadRequest) }}
	addr := metricsTestServer(t, srv)
	cfg := testConfig(t, sub("a", "http://"+addr+"/hooks", 1, time.Millisecond))
	r := startRelay(t, cfg)
	mustIngest(t, r, "/v1/events", "["+strings.Repeat(`{"type":"t","data":1},`, 199)+`{"type":"t","data":1}]`)
	waitFor(t, 20*time.Second, "200 dead letters, counted", func() bool {
		n, err := r.store.DeadLetterCounts()
		return err == nil && n["a"] == 200 && r.subscriber("a").view().DeadLetterBatches == 200
	})
	return r, cfg
}

// settled waits until no replay runs and every batch of r is a dead
// letter again, and checks the admin API counts them all.
func settled(t *testing.T, r *Relay) {
	t.Helper()
	waitFor(t, 20*time.Second, "every batch dead-lettered again", func() bool {
		r.replayMu.Lock()
		replaying := len(r.replays) > 0
		r.replayMu.Unlock()
		if replaying {
			return false
		}
		bs, err := r.store.Batches()
		n, err2 := r.store.DeadLetterCounts()
		return err == nil && err2 == nil && len(bs) == 0 && n["a"] == 200
	})
	if v := r.subscriber("a").view(); v.DeadLetterBatches != 200 {
		t.Fatalf("admin API counts %d dead letters, 200 stored", v.DeadLetterBatches)
	}
}

// TestReplayAllConcurrently runs three replays of every dead letter at
// once, over and over, while they fail again: a dead letter the other
// request took first is not counted twice, and every replayed batch is
// carried to its dead letter, none left stored without a goroutine.
func TestReplayAllConcurrently(t *testing.T) {
	r, _ := refusingRelay(t)
	for end := time.Now().Add(2 * time.Second); time.Now().Before(end); {
		var wg sync.WaitGroup
		for range 3 {
			wg.Go(func() { post(t, "http://"+r.AdminAddr()+"/v1/subscribers/a/dead-letters/replay", "") })
		}
		wg.Wait()
	}
	settled(t, r)
}

// TestReplayAllAcrossReload: a reload replacing the subscriber while its
// dead letters are being replayed does not end the replay: each of them is
// replayed once (and fails again), and the admin API's count stays that of
// the store.
func TestReplayAllAcrossReload(t *testing.T) {
	r, cfg := refusingRelay(t)
	start := time.Now().UnixNano()
	if n, err := r.replayAll("a"); err != nil || n != 200 {
		t.Fatalf("replayAll: %d, %v", n, err)
	}
	old := r.subscriber("a")
	s := cfg.Subscribers[0]
	s.Headers = map[string]string{"X-Changed": "1"}
	cfg.Subscribers = []config.Subscriber{s}
	if err := r.Reload(cfg); err != nil {
		t.Fatal(err)
	}
	if r.subscriber("a") == old {
		t.Fatal("the reload did not replace the subscriber")
	}
	settled(t, r)
	dls, err := r.store.DeadLetters("a", 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, dl := range dls {
		if dl.FailedAt < start || dl.Attempts != 1 {
			t.Fatalf("dead letter %s not replayed once: failed at %d (replay at %d), %d attempts", dl.ID, dl.FailedAt, start, dl.Attempts)
		}
	}
}

// TestReplayAllWithinWindow: replaying many dead letters makes no more
// batches pending at once than the subscriber's window holds, so neither
// memory nor a restart's recovery grows with them.
func TestReplayAllWithinWindow(t *testing.T) {
	addr, refuse, delivered := refusingSink(t)
	cfg := testConfig(t, sub("a", "http://"+addr+"/hooks", 1, time.Millisecond))
	cfg.Delivery.PerHostConcurrency = 2 // a window of 4
	r := startRelay(t, cfg)
	mustIngest(t, r, "/v1/events", "["+strings.Repeat(`{"type":"t","data":1},`, 199)+`{"type":"t","data":1}]`)
	waitFor(t, 20*time.Second, "200 dead letters, counted", func() bool {
		n, err := r.store.DeadLetterCounts()
		return err == nil && n["a"] == 200 && r.subscriber("a").view().DeadLetterBatches == 200
	})
	refuse.Store(false)
	if st, body := post(t, "http://"+r.AdminAddr()+"/v1/subscribers/a/dead-letters/replay", ""); st != fasthttp.StatusOK || !strings.Contains(body, `"replayed":200`) {
		t.Fatalf("replay: %d %s", st, body)
	}
	most := 0
	waitFor(t, 20*time.Second, "every replayed batch delivered", func() bool {
		bs, err := r.store.Batches()
		if err != nil {
			t.Fatal(err)
		}
		most = max(most, len(bs))
		if len(bs) > 4 {
			t.Fatalf("%d batches pending at once, more than the window of 4", len(bs))
		}
		return delivered.Load() == 200
	})
	if v := r.subscriber("a").view(); v.DeadLetterBatches != 0 || v.QueuedEvents != 0 {
		t.Fatalf("after the replay: %+v", v)
	}
}

// TestProbeGivenUpOnReload: the request a half-open circuit lets through
// as its probe waits for the only global slot when a reload replaces its
// subscriber. The probe is given back, so the replacing subscriber probes
// the host and delivers, instead of the host staying half-open for good.
func TestProbeGivenUpOnReload(t *testing.T) {
	var hCalls atomic.Int64
	h := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) {
		if hCalls.Add(1) == 1 {
			ctx.SetStatusCode(fasthttp.StatusInternalServerError)
		}
	}}
	hAddr := metricsTestServer(t, h)
	held := make(chan struct{})
	slowIn := make(chan struct{}, 1)
	slow := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) {
		slowIn <- struct{}{}
		<-held // holds the only global slot until the reload is done
	}}
	slowAddr := metricsTestServer(t, slow)

	x := sub("x", "http://"+hAddr+"/hooks", 10, 5*time.Millisecond)
	sl := sub("slow", "http://"+slowAddr+"/hooks", 10, 5*time.Millisecond)
	cfg := testConfig(t, x, sl)
	cfg.Delivery.Concurrency = 1
	cfg.Delivery.PerHostConcurrency = 1
	cfg.Delivery.CircuitBreaker.FailureThreshold = 1
	cfg.Delivery.CircuitBreaker.OpenDuration = 100 * time.Millisecond
	r := startRelay(t, cfg)
	defer func() {
		select {
		case <-held:
		default:
			close(held)
		}
	}()

	mustIngest(t, r, "/v1/subscribers/x/events", `{"type":"t","data":"x"}`)
	waitFor(t, 5*time.Second, "x's failing attempt", func() bool { return hCalls.Load() == 1 })
	mustIngest(t, r, "/v1/subscribers/slow/events", `{"type":"t","data":"s"}`)
	<-slowIn
	waitFor(t, 10*time.Second, "x's probe waiting for the global slot", func() bool {
		return r.subscriber("x").host.circuit(time.Now()) == circuitHalfOpen &&
			metricValue(t, r, `hookbatch_limit_waits_total{limit="global_concurrency"}`) >= 1
	})
	x.Headers = map[string]string{"X-Env": "test"}
	cfg.Subscribers = []config.Subscriber{x, sl}
	if err := r.Reload(cfg); err != nil {
		t.Fatal(err)
	}
	close(held)
	waitFor(t, 10*time.Second, "x's batch delivered to the healed host", func() bool { return hCalls.Load() >= 2 })
	waitFor(t, 5*time.Second, "the circuit closed", func() bool { return r.subscriber("x").host.circuit(time.Now()) == circuitClosed })
}

// TestAdminHidesURLCredentials: the admin API shows a subscriber's URL as
// the log does, without a credential in its query or userinfo.
func TestAdminHidesURLCredentials(t *testing.T) {
	r := startRelay(t, testConfig(t, sub("a", "http://user:pw-s3cr3t@127.0.0.1:1/hooks?api_key=k-s3cr3t&x=1", 10, time.Second)))
	for _, path := range []string{"/v1/subscribers", "/v1/subscribers/a"} {
		_, body := do(t, "GET", "http://"+r.AdminAddr()+path, "")
		if strings.Contains(body, "s3cr3t") || !strings.Contains(body, "127.0.0.1:1/hooks") {
			t.Fatalf("GET %s shows %s", path, body)
		}
	}
}

// TestRetryLaneBounded: a subscriber fails everything, its batches due
// for retry every 0.6 s. The batches it has stored stay within its window
// and its retry lane (2 + 2 here) however long that lasts, and the admin
// API counts each as in flight: a batch whose retry is due waits for a
// window slot inside the lane, not beside it.
func TestRetryLaneBounded(t *testing.T) {
	srv := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) { ctx.SetStatusCode(fasthttp.StatusInternalServerError) }}
	addr := metricsTestServer(t, srv)
	cfg := testConfig(t, sub("d", "http://"+addr+"/hooks", 1, 5*time.Millisecond))
	cfg.Delivery.PerHostConcurrency = 1 // a window of 2, a lane of 2
	retry := &cfg.Delivery.Retry
	retry.InitialBackoff, retry.MaxBackoff, retry.Multiplier, retry.Jitter = parkAfter+100*time.Millisecond, parkAfter+100*time.Millisecond, 1, 0
	retry.MaxAttempts = 1_000_000
	cfg.Delivery.CircuitBreaker.FailureThreshold = 1_000_000
	r := startRelay(t, cfg)
	mustIngest(t, r, "/v1/events", "["+strings.Repeat(`{"type":"t","data":1},`, 99)+`{"type":"t","data":1}]`)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	most := 0
	for end := time.Now().Add(4 * time.Second); time.Now().Before(end); <-tick.C {
		bs, err := r.store.Batches()
		if err != nil {
			t.Fatal(err)
		}
		most = max(most, len(bs))
		if len(bs) > 4 {
			t.Fatalf("%d batches stored, more than the window and the lane hold (admin API: %d in flight)", len(bs), r.subscriber("d").view().InFlightBatches)
		}
	}
	if most < 4 {
		t.Fatalf("at most %d batches stored: the window and the lane were never full", most)
	}
	if v := r.subscriber("d").view(); v.InFlightBatches != 4 {
		t.Fatalf("admin API: %d batches in flight, want the 4 stored", v.InFlightBatches)
	}
}

// TestReplayWhileRemoved: a dead letter replayed while the goroutine that
// dead-lettered it still holds it; then a reload removes the subscriber.
// The removed subscriber, draining, delivers the batch once that
// goroutine is done, before it goes. Once it is removed, its dead letters
// cannot be replayed (409) until it is configured again.
func TestReplayWhileRemoved(t *testing.T) {
	h := startHeldReplay(t)
	r, cfg := h.r, h.cfg
	a := cfg.Subscribers[0]
	cfg.Subscribers = nil
	if err := r.Reload(cfg); err != nil {
		t.Fatal(err)
	}
	h.release()
	waitFor(t, 10*time.Second, "the batch delivered and the subscriber gone", func() bool {
		bs, err := r.store.Batches()
		return h.ok.Load() == 1 && err == nil && len(bs) == 0 && r.subscriber("a") == nil
	})

	// A dead letter of the removed subscriber: no replay, and dropping it
	// counts once it is configured again.
	h.calls.Store(0)
	cfg.Subscribers = []config.Subscriber{a}
	if err := r.Reload(cfg); err != nil {
		t.Fatal(err)
	}
	mustIngest(t, r, "/v1/events", `{"type":"t","data":2}`)
	waitFor(t, 10*time.Second, "a second dead letter", func() bool { n, err := r.store.DeadLetterCounts(); return err == nil && n["a"] == 1 })
	dls, err := r.store.DeadLetters("a", 10)
	if err != nil || len(dls) != 1 {
		t.Fatalf("dead letters: %v, %v", dls, err)
	}
	cfg.Subscribers = nil
	if err := r.Reload(cfg); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the subscriber gone", func() bool { return r.subscriber("a") == nil })
	var listed []deadLetterView
	if st, body := do(t, "GET", "http://"+r.AdminAddr()+"/v1/dead-letters?subscriber=a", ""); st != fasthttp.StatusOK || json.Unmarshal([]byte(body), &listed) != nil || len(listed) != 1 || listed[0].BatchID != dls[0].ID {
		t.Fatalf("a removed subscriber's dead letters: %d %s, want its one dead letter", st, body)
	}
	if st, body := post(t, "http://"+r.AdminAddr()+"/v1/dead-letters/"+dls[0].ID+"/replay", ""); st != fasthttp.StatusConflict {
		t.Fatalf("replay for a removed subscriber: %d %s, want 409", st, body)
	}
	if st, body := do(t, "DELETE", "http://"+r.AdminAddr()+"/v1/dead-letters/"+dls[0].ID, ""); st != fasthttp.StatusOK {
		t.Fatalf("delete: %d %s", st, body)
	}
	cfg.Subscribers = []config.Subscriber{a}
	if err := r.Reload(cfg); err != nil {
		t.Fatal(err)
	}
	if v := r.subscriber("a").view(); v.DeadLetterBatches != 0 {
		t.Fatalf("admin API counts %d dead letters, none stored", v.DeadLetterBatches)
	}
}

// TestProbeNumbers: a probe given back ends only its own turn, not that
// of a later probe (the circuit having opened and half-opened again
// meanwhile), so there is never more than one probe at a time.
func TestProbeNumbers(t *testing.T) {
	const openFor = time.Second
	h := &host{openFor: openFor}
	now := time.Now()
	h.report(true, now, 1) // open
	ok, first, _ := h.allow(now.Add(openFor))
	if !ok || first == 0 {
		t.Fatalf("no probe after open_duration: %v %d", ok, first)
	}
	if ok, p, _ := h.allow(now.Add(openFor)); ok || p != 0 {
		t.Fatal("a second request let through while probing")
	}
	h.report(true, now.Add(openFor), 1) // another request failed: open again
	ok, second, _ := h.allow(now.Add(3 * openFor))
	if !ok || second == 0 || second == first {
		t.Fatalf("no new probe: %v %d (first %d)", ok, second, first)
	}
	h.abandon(first)
	if ok, _, _ := h.allow(now.Add(3 * openFor)); ok {
		t.Fatal("the first probe, given back late, ended the second one's turn")
	}
	h.abandon(second)
	if ok, p, _ := h.allow(now.Add(3 * openFor)); !ok || p == 0 {
		t.Fatal("no probe after the second was given back")
	}
}

// TestReplayAllThenRemoved: a reload removes the subscriber while its dead
// letters are being replayed. Those requeued by then are delivered by the
// subscriber as it drains; the others stay dead letters; none is left
// pending with nobody to deliver it. Once it is removed, a replay of all
// its dead letters is refused (409).
func TestReplayAllThenRemoved(t *testing.T) {
	var calls, delivered atomic.Int64
	srv := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) {
		if calls.Add(1) <= 5 {
			ctx.SetStatusCode(fasthttp.StatusBadRequest)
			return
		}
		time.Sleep(20 * time.Millisecond) // a slow subscriber: the replay is under way when the reload comes
		delivered.Add(1)
	}}
	addr := metricsTestServer(t, srv)
	a := sub("a", "http://"+addr+"/hooks", 1, time.Millisecond)
	cfg := testConfig(t, a)
	cfg.Delivery.PerHostConcurrency = 1 // a window of 2
	r := startRelay(t, cfg)
	mustIngest(t, r, "/v1/events", "["+strings.Repeat(`{"type":"t","data":1},`, 4)+`{"type":"t","data":1}]`)
	waitFor(t, 10*time.Second, "5 dead letters, counted", func() bool {
		n, err := r.store.DeadLetterCounts()
		return err == nil && n["a"] == 5 && r.subscriber("a").view().DeadLetterBatches == 5
	})
	if st, body := post(t, "http://"+r.AdminAddr()+"/v1/subscribers/a/dead-letters/replay", ""); st != fasthttp.StatusOK {
		t.Fatalf("replay: %d %s", st, body)
	}
	waitFor(t, 10*time.Second, "a replayed batch sent", func() bool { return calls.Load() > 5 })
	cfg.Subscribers = nil
	if err := r.Reload(cfg); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the subscriber gone", func() bool { return r.subscriber("a") == nil })
	bs, err := r.store.Batches()
	n, err2 := r.store.DeadLetterCounts()
	if err != nil || err2 != nil || len(bs) != 0 || int(delivered.Load())+n["a"] != 5 || delivered.Load() == 0 {
		t.Fatalf("after the removal: %d pending, %d delivered, %d dead letters (%v, %v); want none pending, 5 in all", len(bs), delivered.Load(), n["a"], err, err2)
	}

	// Removed (draining, or gone): its dead letters are not replayed.
	if st, body := post(t, "http://"+r.AdminAddr()+"/v1/subscribers/a/dead-letters/replay", ""); st != fasthttp.StatusConflict && st != fasthttp.StatusNotFound {
		t.Fatalf("replay of a removed subscriber's dead letters: %d %s, want 409 or 404", st, body)
	}
	if bs, err := r.store.Batches(); err != nil || len(bs) != 0 {
		t.Fatalf("after a refused replay: %d pending (%v)", len(bs), err)
	}
}

// TestReplayOrderedIdle: an ordered subscriber (a window of one) with no
// new events: its replayed dead letters are delivered, the idle loop not
// holding the window's slot.
func TestReplayOrderedIdle(t *testing.T) {
	addr, refuse, delivered := refusingSink(t)
	a := sub("a", "http://"+addr+"/hooks", 1, time.Millisecond)
	a.Ordered = true
	r := startRelay(t, testConfig(t, a))
	mustIngest(t, r, "/v1/events", "["+strings.Repeat(`{"type":"t","data":1},`, 3)+`{"type":"t","data":1}]`)
	waitFor(t, 10*time.Second, "4 dead letters, counted", func() bool {
		n, err := r.store.DeadLetterCounts()
		return err == nil && n["a"] == 4 && r.subscriber("a").view().DeadLetterBatches == 4
	})
	refuse.Store(false)
	dls, err := r.store.DeadLetters("a", 1)
	if err != nil || len(dls) != 1 {
		t.Fatalf("dead letters: %v, %v", dls, err)
	}
	if st, body := post(t, "http://"+r.AdminAddr()+"/v1/dead-letters/"+dls[0].ID+"/replay", ""); st != fasthttp.StatusOK {
		t.Fatalf("replay: %d %s", st, body)
	}
	waitFor(t, 10*time.Second, "the replayed batch delivered", func() bool { return delivered.Load() == 1 })
	if st, body := post(t, "http://"+r.AdminAddr()+"/v1/subscribers/a/dead-letters/replay", ""); st != fasthttp.StatusOK || !strings.Contains(body, `"replayed":3`) {
		t.Fatalf("replay all: %d %s", st, body)
	}
	waitFor(t, 10*time.Second, "the other 3 delivered", func() bool { return delivered.Load() == 4 })
}

// TestReplayDuringClose: a replay asked for while the relay shuts down
// (a delivery in flight holding it up) is answered 503, not 409.
func TestReplayDuringClose(t *testing.T) {
	var calls atomic.Int64
	block := make(chan struct{})
	srv := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) {
		if calls.Add(1) == 1 {
			ctx.SetStatusCode(fasthttp.StatusBadRequest)
			return
		}
		<-block
	}}
	addr := metricsTestServer(t, srv)
	r := openRelay(t, testConfig(t, sub("a", "http://"+addr+"/hooks", 1, time.Millisecond)), testLogger(t))
	mustIngest(t, r, "/v1/events", `{"type":"t","data":1}`)
	waitFor(t, 10*time.Second, "a dead letter", func() bool { n, err := r.store.DeadLetterCounts(); return err == nil && n["a"] == 1 })
	mustIngest(t, r, "/v1/events", `{"type":"t","data":2}`)
	waitFor(t, 10*time.Second, "a delivery in flight", func() bool { return calls.Load() == 2 })
	dls, err := r.store.DeadLetters("a", 1)
	if err != nil || len(dls) != 1 {
		t.Fatalf("dead letters: %v, %v", dls, err)
	}
	closed := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		closed <- r.Close(ctx)
	}()
	waitFor(t, 5*time.Second, "closing", func() bool { return r.closing.Load() })
	st, body := post(t, "http://"+r.AdminAddr()+"/v1/dead-letters/"+dls[0].ID+"/replay", "")
	close(block)
	if err := <-closed; err != nil {
		t.Errorf("Close: %v", err)
	}
	if st != fasthttp.StatusServiceUnavailable {
		t.Fatalf("replay while shutting down: %d %s, want 503", st, body)
	}
}

// TestBatchTakesEventsQueuedWhileItWaited: an ordered subscriber's batch
// waits for the window's one slot, held by the delivery before it. Events
// queued meanwhile go with it when it gets the slot, not a delivery later.
func TestBatchTakesEventsQueuedWhileItWaited(t *testing.T) {
	release := make(chan struct{})
	var mu sync.Mutex
	var counts []string
	srv := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) {
		mu.Lock()
		counts = append(counts, string(ctx.Request.Header.Peek("X-Webhook-Batch-Count")))
		first := len(counts) == 1
		mu.Unlock()
		if first {
			<-release
		}
	}}
	addr := metricsTestServer(t, srv)
	a := sub("a", "http://"+addr+"/hooks", 10, 5*time.Millisecond)
	a.Ordered = true
	r := startRelay(t, testConfig(t, a))
	defer func() {
		select {
		case <-release:
		default:
			close(release)
		}
	}()
	mustIngest(t, r, "/v1/events", `{"type":"t","data":1}`)
	waitFor(t, 5*time.Second, "the first delivery held", func() bool { mu.Lock(); defer mu.Unlock(); return len(counts) == 1 })
	mustIngest(t, r, "/v1/events", `{"type":"t","data":2}`)
	waitFor(t, 5*time.Second, "the second batch waiting for the slot", func() bool {
		return metricValue(t, r, `hookbatch_limit_waits_total{limit="subscriber_window"}`) >= 1
	})
	mustIngest(t, r, "/v1/events", `{"type":"t","data":3}`)
	close(release)
	waitFor(t, 10*time.Second, "two batches delivered", func() bool { mu.Lock(); defer mu.Unlock(); return len(counts) >= 2 })
	waitFor(t, 5*time.Second, "nothing left queued", func() bool { return r.subscriber("a").view().QueuedEvents == 0 })
	mu.Lock()
	defer mu.Unlock()
	if !slices.Equal(counts, []string{"1", "2"}) {
		t.Fatalf("batches of %v events, want [1 2]", counts)
	}
}

// refusingSink is a subscriber that answers 400 (dead-lettering every
// batch at once) while refuse is set, and counts the batches it takes.
func refusingSink(t *testing.T) (addr string, refuse *atomic.Bool, delivered *atomic.Int64) {
	t.Helper()
	refuse, delivered = new(atomic.Bool), new(atomic.Int64)
	refuse.Store(true)
	return metricsTestServer(t, &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) {
		if refuse.Load() {
			ctx.SetStatusCode(fasthttp.StatusBadRequest)
			return
		}
		delivered.Add(1)
	}}), refuse, delivered
}
