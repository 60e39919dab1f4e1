package relay

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hookbatch/hookbatch/config"
	"github.com/hookbatch/hookbatch/sink"
	"github.com/rs/zerolog"
	"github.com/valyala/fasthttp"
)

// hit is one request a scriptServer received.
type hit struct {
	at      time.Time // arrival, taken before anything else
	uri     string
	batchID string // X-Webhook-Batch-Id
	attempt int    // X-Webhook-Attempt
	count   int    // "count" of the body
	events  []hitEvent
}

// hitEvent is one event of a hit's body.
type hitEvent struct {
	ID   string          `json:"id"`
	Data json.RawMessage `json:"data"`
}

// reply is what a scriptServer answers to one request.
type reply struct {
	status int
	header []string      // name, value pairs
	hang   time.Duration // hold the answer back this long (cut short by release)
}

// scriptServer is a subscriber whose every answer a test scripts: it
// records each request (arrival time, batch id, attempt, events) and counts
// requests open at once. Unlike the sink it can answer anything, hang and
// redirect.
type scriptServer struct {
	addr    string
	srv     *fasthttp.Server
	answer  func(n int, h hit) reply // n counts requests from 1
	release chan struct{}
	relOnce sync.Once

	mu   sync.Mutex
	hits []hit

	open, maxOpen, finished atomic.Int64
}

// startScript starts a scriptServer on loopback; answer nil answers 200.
func startScript(t *testing.T, answer func(n int, h hit) reply) *scriptServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &scriptServer{addr: ln.Addr().String(), answer: answer, release: make(chan struct{})}
	s.srv = &fasthttp.Server{
		Handler:            s.handle,
		ReadTimeout:        30 * time.Second,
		WriteTimeout:       30 * time.Second,
		IdleTimeout:        30 * time.Second,
		MaxRequestBodySize: 16 << 20,
		CloseOnShutdown:    true,
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = s.srv.Serve(ln)
	}()
	t.Cleanup(func() {
		s.Release()
		_ = s.srv.Shutdown()
		<-done
	})
	return s
}

// URL is a delivery URL of the server with the given path ("/hooks" if empty).
func (s *scriptServer) URL(path ...string) string {
	p := "/hooks"
	if len(path) > 0 {
		p = path[0]
	}
	return "http://" + s.addr + p
}

// Release ends every hang, now and later.
func (s *scriptServer) Release() { s.relOnce.Do(func() { close(s.release) }) }

// Hits returns the requests received so far, in arrival order.
func (s *scriptServer) Hits() []hit {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]hit(nil), s.hits...)
}

func (s *scriptServer) handle(ctx *fasthttp.RequestCtx) {
	h := hit{at: time.Now(), uri: string(ctx.RequestURI()), batchID: string(ctx.Request.Header.Peek("X-Webhook-Batch-Id"))}
	open := s.open.Add(1)
	defer s.open.Add(-1)
	for {
		m := s.maxOpen.Load()
		if open <= m || s.maxOpen.CompareAndSwap(m, open) {
			break
		}
	}
	h.attempt, _ = strconv.Atoi(string(ctx.Request.Header.Peek("X-Webhook-Attempt")))
	var body struct {
		Count  int        `json:"count"`
		Events []hitEvent `json:"events"`
	}
	_ = json.Unmarshal(ctx.PostBody(), &body) // copies what it keeps
	h.count, h.events = body.Count, body.Events
	s.mu.Lock()
	s.hits = append(s.hits, h)
	n := len(s.hits)
	s.mu.Unlock()

	rep := reply{status: fasthttp.StatusOK}
	if s.answer != nil {
		rep = s.answer(n, h)
	}
	if rep.hang > 0 {
		t := time.NewTimer(rep.hang)
		select {
		case <-t.C:
		case <-s.release:
			t.Stop()
		}
	}
	ctx.SetStatusCode(rep.status)
	for i := 0; i+1 < len(rep.header); i += 2 {
		ctx.Response.Header.Set(rep.header[i], rep.header[i+1])
	}
	ctx.SetContentType("application/json")
	ctx.SetBodyString("{}")
	s.finished.Add(1)
}

// ids returns the event ids of hits, in order.
func (h hit) ids() []string {
	out := make([]string, len(h.events))
	for i, e := range h.events {
		out[i] = e.ID
	}
	return out
}

// adminJSON sends method path to r's admin API, fails the test unless the
// status is want, and decodes the answer into v when v is not nil.
func adminJSON(t testing.TB, r *Relay, method, path string, want int, v any, headers ...string) {
	t.Helper()
	status, body := do(t, method, "http://"+r.AdminAddr()+path, "", headers...)
	if status != want {
		t.Fatalf("%s %s: status %d, want %d: %s", method, path, status, want, body)
	}
	if v != nil {
		if err := json.Unmarshal([]byte(body), v); err != nil {
			t.Fatalf("%s %s: cannot decode %q: %v", method, path, body, err)
		}
	}
}

// subscriberState is GET /v1/subscribers/{id}.
func subscriberState(t testing.TB, r *Relay, id string) subscriberView {
	t.Helper()
	var v subscriberView
	adminJSON(t, r, "GET", "/v1/subscribers/"+id, 200, &v)
	return v
}

// deadLettersOf is GET /v1/dead-letters?subscriber=id.
func deadLettersOf(t testing.TB, r *Relay, id string) []deadLetterView {
	t.Helper()
	var v []deadLetterView
	adminJSON(t, r, "GET", "/v1/dead-letters?subscriber="+id, 200, &v)
	return v
}

// seqEvents is a JSON array of n events of type typ whose data carries
// sequence numbers from first.
func seqEvents(typ string, first, n int) string {
	parts := make([]string, n)
	for i := range parts {
		parts[i] = fmt.Sprintf(`{"type":%q,"data":{"seq":%d}}`, typ, first+i)
	}
	return "[" + strings.Join(parts, ",") + "]"
}

// seqOf reads the sequence number of an event made by seqEvents.
func seqOf(t testing.TB, data []byte) int {
	t.Helper()
	var d struct{ Seq *int }
	if err := json.Unmarshal(data, &d); err != nil || d.Seq == nil {
		t.Fatalf("event data %s carries no sequence number", data)
	}
	return *d.Seq
}

// failedAttempts sums a subscriber's delivery attempts that reached (or
// tried to reach) the destination and did not succeed.
func failedAttempts(t testing.TB, r *Relay, id string) float64 {
	t.Helper()
	var n float64
	for _, o := range []string{"retry", "permanent", "timeout", "conn_error"} {
		n += metricValue(t, r, fmt.Sprintf(`hookbatch_delivery_attempts_total{subscriber=%q,outcome=%q}`, id, o))
	}
	return n
}

// TestRetry5xxThenSuccess: a batch answered 500, 502, 503 and then 200 is
// delivered; every attempt carries the same batch id and contents,
// X-Webhook-Attempt counts 1, 2, 3, 4, and the waits grow as configured.
func TestRetry5xxThenSuccess(t *testing.T) {
	t.Parallel()
	fails := []int{500, 502, 503}
	srv := startScript(t, func(n int, _ hit) reply {
		if n <= len(fails) {
			return reply{status: fails[n-1]}
		}
		return reply{status: 200}
	})
	cfg := testConfig(t, sub("s", srv.URL(), 3, 20*time.Millisecond))
	cfg.Delivery.Retry.InitialBackoff = 100 * time.Millisecond
	cfg.Delivery.Retry.Multiplier = 2
	cfg.Delivery.Retry.Jitter = 0
	cfg.Delivery.Retry.MaxBackoff = 5 * time.Second
	cfg.Delivery.Retry.MaxAttempts = 10
	r := startRelay(t, cfg)

	a := mustIngest(t, r, "/v1/events", seqEvents("t", 0, 3))
	waitFor(t, 10*time.Second, "the batch delivered", func() bool {
		return metricValue(t, r, `hookbatch_batches_delivered_total{subscriber="s"}`) == 1
	})
	hits := srv.Hits()
	if len(hits) != 4 {
		t.Fatalf("server saw %d requests, want 4 (3 failures, 1 success)", len(hits))
	}
	want := strings.Join(a.IDs, ",")
	for i, h := range hits {
		if h.batchID == "" || h.batchID != hits[0].batchID {
			t.Errorf("attempt %d has batch id %q, want %q like the first", i+1, h.batchID, hits[0].batchID)
		}
		if h.attempt != i+1 {
			t.Errorf("request %d has X-Webhook-Attempt %d, want %d", i+1, h.attempt, i+1)
		}
		if got := strings.Join(h.ids(), ","); got != want || h.count != 3 {
			t.Errorf("attempt %d carries %d events %s, want 3: %s", i+1, h.count, got, want)
		}
	}
	// initial_backoff 100ms, multiplier 2, no jitter: 100ms, 200ms, 400ms
	// after each failure's answer, so at least that between arrivals.
	var gaps []time.Duration
	for i := 1; i < len(hits); i++ {
		gaps = append(gaps, hits[i].at.Sub(hits[i-1].at))
	}
	t.Logf("gaps between attempts: %v", gaps)
	for i, least := range []time.Duration{90 * time.Millisecond, 180 * time.Millisecond, 360 * time.Millisecond} {
		if gaps[i] < least {
			t.Errorf("gap before attempt %d is %v, want at least %v", i+2, gaps[i], least)
		}
		if i > 0 && gaps[i] <= gaps[i-1] {
			t.Errorf("gap before attempt %d (%v) is not larger than the one before attempt %d (%v)", i+2, gaps[i], i+1, gaps[i-1])
		}
	}
	for outcome, want := range map[string]float64{"retry": 3, "success": 1, "permanent": 0} {
		if got := metricValue(t, r, fmt.Sprintf(`hookbatch_delivery_attempts_total{subscriber="s",outcome=%q}`, outcome)); got != want {
			t.Errorf("attempts with outcome %s: %v, want %v", outcome, got, want)
		}
	}
	if dl := deadLettersOf(t, r, "s"); len(dl) != 0 {
		t.Errorf("dead letters %+v, want none", dl)
	}
}

// TestRetryAfter: a Retry-After on 429 or 503, in seconds or as an HTTP
// date, holds the next attempt back at least that long, capped at
// max_backoff.
func TestRetryAfter(t *testing.T) {
	t.Parallel()
	f := func(t *testing.T, status int, header func() (value string, due time.Time), maxBackoff, minGap time.Duration) {
		t.Helper()
		var mu sync.Mutex
		var due time.Time
		srv := startScript(t, func(n int, h hit) reply {
			if n > 1 {
				return reply{status: 200}
			}
			v, d := header()
			mu.Lock()
			due = d
			mu.Unlock()
			return reply{status: status, header: []string{"Retry-After", v}}
		})
		cfg := testConfig(t, sub("s", srv.URL(), 1, 10*time.Millisecond))
		cfg.Delivery.Retry.InitialBackoff = 20 * time.Millisecond
		cfg.Delivery.Retry.Jitter = 0
		cfg.Delivery.Retry.MaxBackoff = maxBackoff
		r := startRelay(t, cfg)
		mustIngest(t, r, "/v1/events", `{"type":"t","data":1}`)
		waitFor(t, 15*time.Second, "the second attempt delivered", func() bool {
			return metricValue(t, r, `hookbatch_batches_delivered_total{subscriber="s"}`) == 1
		})
		hits := srv.Hits()
		if len(hits) != 2 {
			t.Fatalf("server saw %d requests, want 2", len(hits))
		}
		if hits[1].batchID != hits[0].batchID || hits[1].attempt != 2 {
			t.Errorf("second request: batch %s attempt %d, want batch %s attempt 2", hits[1].batchID, hits[1].attempt, hits[0].batchID)
		}
		gap := hits[1].at.Sub(hits[0].at)
		t.Logf("gap between attempts: %v", gap)
		if gap < minGap {
			t.Errorf("second attempt came %v after the first, want at least %v", gap, minGap)
		}
		mu.Lock()
		d := due
		mu.Unlock()
		if !d.IsZero() && hits[1].at.Before(d.Add(-5*time.Millisecond)) {
			t.Errorf("second attempt came at %v, before the Retry-After date %v", hits[1].at, d)
		}
	}
	seconds := func(v string) func() (string, time.Time) {
		return func() (string, time.Time) { return v, time.Time{} }
	}
	t.Run("429 seconds", func(t *testing.T) {
		t.Parallel()
		f(t, 429, seconds("2"), 10*time.Second, 2*time.Second)
	})
	t.Run("503 seconds", func(t *testing.T) {
		t.Parallel()
		f(t, 503, seconds("1"), 10*time.Second, time.Second)
	})
	t.Run("429 HTTP date", func(t *testing.T) {
		t.Parallel()
		f(t, 429, func() (string, time.Time) {
			// Whole seconds: the date is 2 to 3 s ahead.
			due := time.Now().Add(2 * time.Second).Truncate(time.Second).Add(time.Second)
			return due.UTC().Format(http.TimeFormat), due
		}, 10*time.Second, time.Second)
	})
	t.Run("capped at max_backoff", func(t *testing.T) {
		t.Parallel()
		// An hour asked for; max_backoff 300ms: the attempt comes anyway.
		f(t, 429, seconds("3600"), 300*time.Millisecond, 300*time.Millisecond)
	})
	t.Run("huge seconds capped at max_backoff", func(t *testing.T) {
		t.Parallel()
		// 18446744074 s overflows time.Duration; it still asks for more
		// than max_backoff, so the wait is max_backoff (1s).
		f(t, 429, seconds("18446744074"), time.Second, time.Second)
	})
}

// TestPermanentFailureDeadLetters: a 400 dead-letters a batch after one
// attempt; the admin API lists it, replays it with the same batch id, drops
// one, and replays all of a subscriber's.
func TestPermanentFailureDeadLetters(t *testing.T) {
	t.Parallel()
	s := startSink(t, sink.Options{FailRate: 1, FailStatus: 400})
	r := startRelay(t, testConfig(t, sub("s", s.URL(), 1, 10*time.Millisecond)))

	a := mustIngest(t, r, "/v1/events", `[{"id":"e1","type":"t","data":1},{"id":"e2","type":"t","data":2},{"id":"e3","type":"t","data":3}]`)
	if a.Accepted != 3 {
		t.Fatalf("accepted %+v", a)
	}
	waitFor(t, 10*time.Second, "3 dead letters", func() bool { return len(deadLettersOf(t, r, "s")) == 3 })
	dls := deadLettersOf(t, r, "s")
	for _, dl := range dls {
		if dl.Subscriber != "s" || dl.Count != 1 || dl.Attempts != 1 || dl.LastStatus != 400 || dl.LastError == "" {
			t.Errorf("dead letter %+v: want subscriber s, count 1, attempts 1, last_status 400 and a last_error", dl)
		}
		if _, err := time.Parse(time.RFC3339Nano, dl.FailedAt); err != nil {
			t.Errorf("dead letter %s: failed_at %q: %v", dl.BatchID, dl.FailedAt, err)
		}
	}
	if st := s.Stats(); st.Failed != 3 || st.Batches != 0 {
		t.Errorf("sink stats %+v, want exactly 3 attempts (one per batch), none accepted", st)
	}
	if v := subscriberState(t, r, "s"); v.DeadLetterBatches != 3 {
		t.Errorf("dead_letter_batches %d, want 3", v.DeadLetterBatches)
	}
	for series, want := range map[string]float64{
		`hookbatch_dead_letter_batches_total{subscriber="s"}`:                   3,
		`hookbatch_delivery_attempts_total{subscriber="s",outcome="permanent"}`: 3,
		`hookbatch_delivery_attempts_total{subscriber="s",outcome="retry"}`:     0,
	} {
		if got := metricValue(t, r, series); got != want {
			t.Errorf("%s = %v, want %v", series, got, want)
		}
	}

	s.SetFailRate(0)
	adminJSON(t, r, "POST", "/v1/dead-letters/"+dls[0].BatchID+"/replay", 200, nil)
	waitFor(t, 10*time.Second, "the replayed batch", func() bool { return s.Stats().Batches == 1 })
	if b := s.Batches()[0]; b.ID != dls[0].BatchID || b.Attempt != 1 {
		t.Errorf("replay delivered batch %s attempt %d, want batch %s attempt 1", b.ID, b.Attempt, dls[0].BatchID)
	}
	adminJSON(t, r, "POST", "/v1/dead-letters/"+dls[0].BatchID+"/replay", 404, nil)
	if left := deadLettersOf(t, r, "s"); len(left) != 2 || left[0].BatchID == dls[0].BatchID || left[1].BatchID == dls[0].BatchID {
		t.Errorf("after replaying %s the dead letters are %+v", dls[0].BatchID, left)
	}

	adminJSON(t, r, "DELETE", "/v1/dead-letters/"+dls[1].BatchID, 200, nil)
	adminJSON(t, r, "DELETE", "/v1/dead-letters/"+dls[1].BatchID, 404, nil)
	if left := deadLettersOf(t, r, "s"); len(left) != 1 || left[0].BatchID != dls[2].BatchID {
		t.Errorf("after dropping %s the dead letters are %+v, want only %s", dls[1].BatchID, left, dls[2].BatchID)
	}
	if v := subscriberState(t, r, "s"); v.DeadLetterBatches != 1 {
		t.Errorf("dead_letter_batches %d after a replay and a drop, want 1", v.DeadLetterBatches)
	}

	var rep struct {
		Replayed int `json:"replayed"`
	}
	adminJSON(t, r, "POST", "/v1/subscribers/s/dead-letters/replay", 200, &rep)
	if rep.Replayed != 1 {
		t.Errorf("replay all answered %+v, want 1 replayed", rep)
	}
	waitFor(t, 10*time.Second, "the second replayed batch", func() bool { return s.Stats().Batches == 2 })
	if b := s.Batches()[1]; b.ID != dls[2].BatchID {
		t.Errorf("replay all delivered batch %s, want %s", b.ID, dls[2].BatchID)
	}
	waitFor(t, 5*time.Second, "an empty queue and no dead letters", func() bool {
		v := subscriberState(t, r, "s")
		return v.QueuedEvents == 0 && v.DeadLetterBatches == 0 && v.InFlightBatches == 0
	})
	if left := deadLettersOf(t, r, "s"); len(left) != 0 {
		t.Errorf("dead letters left: %+v", left)
	}
	if got := eventsOf(s); len(got) != 2 || got["e1"]+got["e2"]+got["e3"] != 2 {
		t.Errorf("delivered events %v, want 2 of e1, e2, e3 once each (one was dropped)", got)
	}
	if st := s.Stats(); st.DuplicateBatches != 0 || st.Batches != 2 {
		t.Errorf("sink stats %+v, want 2 batches and no duplicates", st)
	}
}

// TestMaxAttemptsDeadLetters: a subscriber always answering 503 gets
// max_attempts attempts, then the batch is dead-lettered.
func TestMaxAttemptsDeadLetters(t *testing.T) {
	t.Parallel()
	s := startSink(t, sink.Options{FailRate: 1, FailStatus: 503})
	cfg := testConfig(t, sub("s", s.URL(), 10, 10*time.Millisecond))
	cfg.Delivery.Retry.MaxAttempts = 3
	r := startRelay(t, cfg)
	mustIngest(t, r, "/v1/events", `[{"type":"t","data":1},{"type":"t","data":2}]`)
	waitFor(t, 10*time.Second, "a dead letter", func() bool { return len(deadLettersOf(t, r, "s")) == 1 })
	dl := deadLettersOf(t, r, "s")[0]
	if dl.Attempts != 3 || dl.LastStatus != 503 || dl.Count != 2 || !strings.Contains(dl.LastError, "max_attempts") {
		t.Errorf("dead letter %+v: want attempts 3, last_status 503, count 2, last_error naming max_attempts", dl)
	}
	if st := s.Stats(); st.Failed != 3 {
		t.Errorf("subscriber got %d attempts, want 3", st.Failed)
	}
	if v := subscriberState(t, r, "s"); v.DeadLetterBatches != 1 || v.QueuedEvents != 0 {
		t.Errorf("subscriber %+v: want 1 dead letter and nothing queued", v)
	}
}

// TestMaxAgeDeadLetters: a batch still failing when max_age has passed is
// dead-lettered, with the number of attempts the subscriber saw.
func TestMaxAgeDeadLetters(t *testing.T) {
	t.Parallel()
	srv := startScript(t, func(int, hit) reply { return reply{status: 503} })
	cfg := testConfig(t, sub("s", srv.URL(), 10, 10*time.Millisecond))
	cfg.Delivery.Retry.InitialBackoff = 100 * time.Millisecond
	cfg.Delivery.Retry.Multiplier = 1
	cfg.Delivery.Retry.Jitter = 0
	cfg.Delivery.Retry.MaxBackoff = time.Second
	cfg.Delivery.Retry.MaxAttempts = 1000
	cfg.Delivery.Retry.MaxAge = 300 * time.Millisecond
	cfg.Delivery.CircuitBreaker.FailureThreshold = 1000
	r := startRelay(t, cfg)
	mustIngest(t, r, "/v1/events", `{"type":"t","data":1}`)
	waitFor(t, 10*time.Second, "a dead letter", func() bool { return len(deadLettersOf(t, r, "s")) == 1 })
	dl := deadLettersOf(t, r, "s")[0]
	hits := srv.Hits()
	if dl.Attempts != len(hits) || dl.Attempts < 2 || dl.LastStatus != 503 || !strings.Contains(dl.LastError, "max_age") {
		t.Errorf("dead letter %+v after %d requests: want attempts = requests (>= 2), last_status 503, last_error naming max_age", dl, len(hits))
	}
	for i, h := range hits {
		if h.attempt != i+1 || h.batchID != hits[0].batchID {
			t.Errorf("request %d: batch %s attempt %d", i+1, h.batchID, h.attempt)
		}
	}
}

// TestTimeoutRetriesThenDeadLetters: an answer slower than delivery.timeout
// is a timeout: retried (outcome timeout), and when attempts run out the
// dead letter has last_status 0 and says why.
func TestTimeoutRetriesThenDeadLetters(t *testing.T) {
	t.Parallel()
	srv := startScript(t, func(n int, h hit) reply {
		if strings.HasPrefix(h.uri, "/recovers") && n > 1 {
			return reply{status: 200}
		}
		return reply{status: 200, hang: 2 * time.Second}
	})
	recovers := sub("recovers", srv.URL("/recovers"), 10, 10*time.Millisecond)
	recovers.EventTypes = []string{"r"}
	stuck := sub("stuck", srv.URL("/stuck"), 10, 10*time.Millisecond)
	stuck.EventTypes = []string{"s"}
	cfg := testConfig(t, recovers, stuck)
	cfg.Delivery.Timeout = 200 * time.Millisecond
	cfg.Delivery.Retry.MaxAttempts = 2
	cfg.Delivery.CircuitBreaker.FailureThreshold = 100
	r := startRelay(t, cfg)
	t.Cleanup(srv.Release) // before the relay closes

	mustIngest(t, r, "/v1/events", `{"type":"r","data":1}`)
	waitFor(t, 10*time.Second, "the recovering subscriber's batch", func() bool {
		return metricValue(t, r, `hookbatch_batches_delivered_total{subscriber="recovers"}`) == 1
	})
	if n := metricValue(t, r, `hookbatch_delivery_attempts_total{subscriber="recovers",outcome="timeout"}`); n != 1 {
		t.Errorf("timeout attempts %v, want 1", n)
	}

	mustIngest(t, r, "/v1/events", `{"type":"s","data":1}`)
	waitFor(t, 10*time.Second, "a dead letter", func() bool { return len(deadLettersOf(t, r, "stuck")) == 1 })
	dl := deadLettersOf(t, r, "stuck")[0]
	if dl.Attempts != 2 || dl.LastStatus != 0 || !strings.Contains(strings.ToLower(dl.LastError), "timeout") {
		t.Errorf("dead letter %+v: want attempts 2, last_status 0 and a last_error saying timeout", dl)
	}
}

// TestRedirectNotFollowed: 3xx answers are permanent failures; the Location
// is never visited.
func TestRedirectNotFollowed(t *testing.T) {
	t.Parallel()
	target := startScript(t, nil)
	srv := startScript(t, func(_ int, h hit) reply {
		code, _ := strconv.Atoi(strings.TrimPrefix(h.uri, "/r"))
		return reply{status: code, header: []string{"Location", target.URL()}}
	})
	codes := []int{301, 302, 303, 307, 308}
	var subs []config.Subscriber
	for _, c := range codes {
		subs = append(subs, sub(fmt.Sprintf("r%d", c), srv.URL(fmt.Sprintf("/r%d", c)), 10, 10*time.Millisecond))
	}
	r := startRelay(t, testConfig(t, subs...))
	mustIngest(t, r, "/v1/events", `{"type":"t","data":1}`)
	for _, c := range codes {
		id := fmt.Sprintf("r%d", c)
		waitFor(t, 10*time.Second, "dead letter of "+id, func() bool { return len(deadLettersOf(t, r, id)) == 1 })
		dl := deadLettersOf(t, r, id)[0]
		if dl.Attempts != 1 || dl.LastStatus != c || dl.LastError == "" {
			t.Errorf("%s: dead letter %+v, want attempts 1, last_status %d and a last_error", id, dl, c)
		}
	}
	if n := len(srv.Hits()); n != len(codes) {
		t.Errorf("redirecting server saw %d requests, want %d (one per subscriber)", n, len(codes))
	}
	if n := len(target.Hits()); n != 0 {
		t.Errorf("redirect target saw %d requests, want none", n)
	}
}

// TestRefusedDestinationDeadLetters: with allow_private_networks false a
// loopback subscriber is refused when dialling: dead-lettered at once with
// last_status 0 and the reason, nothing connects, the circuit stays closed.
func TestRefusedDestinationDeadLetters(t *testing.T) {
	t.Parallel()
	srv := startScript(t, nil)
	cfg := testConfig(t, sub("s", srv.URL(), 10, 10*time.Millisecond))
	cfg.Delivery.AllowPrivateNetworks = false
	r := startRelay(t, cfg)
	mustIngest(t, r, "/v1/events", `{"type":"t","data":1}`)
	waitFor(t, 10*time.Second, "a dead letter", func() bool { return len(deadLettersOf(t, r, "s")) == 1 })
	dl := deadLettersOf(t, r, "s")[0]
	if dl.Attempts != 1 || dl.LastStatus != 0 || !strings.Contains(dl.LastError, "127.0.0.1") {
		t.Errorf("dead letter %+v: want attempts 1, last_status 0 and a last_error naming the refused address", dl)
	}
	if n := len(srv.Hits()); n != 0 {
		t.Errorf("refused destination saw %d requests", n)
	}
	if v := subscriberState(t, r, "s"); v.Circuit != "closed" {
		t.Errorf("circuit %s after a refusal, want closed", v.Circuit)
	}
}

// TestGonePausesSubscriber: 410 pauses the subscriber (the admin API says
// why); ingest keeps accepting; nothing is attempted until it is resumed,
// then the batch that got 410 arrives with its id, and the rest after it.
func TestGonePausesSubscriber(t *testing.T) {
	t.Parallel()
	var gone atomic.Bool
	gone.Store(true)
	srv := startScript(t, func(int, hit) reply {
		if gone.Load() {
			return reply{status: 410}
		}
		return reply{status: 200}
	})
	r := startRelay(t, testConfig(t, sub("g", srv.URL(), 10, 10*time.Millisecond)))
	mustIngest(t, r, "/v1/events", seqEvents("t", 0, 1))
	waitFor(t, 10*time.Second, "the subscriber paused", func() bool { return subscriberState(t, r, "g").Paused })
	v := subscriberState(t, r, "g")
	if !strings.Contains(v.PauseReason, "410") {
		t.Errorf("pause reason %q, want one naming the 410", v.PauseReason)
	}
	if n := len(srv.Hits()); n != 1 {
		t.Fatalf("server saw %d requests before the pause, want 1", n)
	}
	first := srv.Hits()[0]

	// Ingest still accepts for a paused subscriber, and forms its batches,
	// but attempts nothing.
	mustIngest(t, r, "/v1/subscribers/g/events", seqEvents("t", 1, 2))
	waitFor(t, 10*time.Second, "a second batch formed", func() bool {
		return metricValue(t, r, `hookbatch_batches_flushed_total{subscriber="g",reason="wait"}`)+
			metricValue(t, r, `hookbatch_batches_flushed_total{subscriber="g",reason="events"}`) >= 2
	})
	if v := subscriberState(t, r, "g"); !v.Paused || v.QueuedEvents != 3 {
		t.Errorf("subscriber %+v: want paused with 3 events queued", v)
	}
	if n := len(srv.Hits()); n != 1 {
		t.Errorf("server saw %d requests while paused, want 1", n)
	}

	gone.Store(false)
	var rv subscriberView
	adminJSON(t, r, "POST", "/v1/subscribers/g/resume", 200, &rv)
	if rv.Paused || rv.PauseReason != "" {
		t.Errorf("resume answered %+v, want paused false and no reason", rv)
	}
	waitFor(t, 10*time.Second, "3 events delivered", func() bool {
		return metricValue(t, r, `hookbatch_events_delivered_total{subscriber="g"}`) == 3
	})
	hits := srv.Hits()
	again := 0
	for _, h := range hits[1:] {
		if h.batchID == first.batchID {
			again++
			if h.attempt != 2 {
				t.Errorf("batch %s after resume: attempt %d, want 2", h.batchID, h.attempt)
			}
		}
	}
	if again != 1 {
		t.Errorf("the batch answered 410 (%s) came %d times after resume, want once", first.batchID, again)
	}
	seen := map[string]int{}
	for _, h := range hits[1:] {
		for _, e := range h.events {
			seen[e.ID]++
		}
	}
	if len(seen) != 3 {
		t.Errorf("events delivered after resume: %v, want 3 distinct", seen)
	}
	if v := subscriberState(t, r, "g"); v.Paused {
		t.Errorf("subscriber paused again: %+v", v)
	}
}

// TestTooLargeSplits: a subscriber answering 413 to batches of more than 3
// events makes the relay split batches in halves (ids <id>.1, <id>.2, and
// deeper) until they fit; every event arrives once.
func TestTooLargeSplits(t *testing.T) {
	t.Parallel()
	srv := startScript(t, func(_ int, h hit) reply {
		if h.count > 3 {
			return reply{status: 413}
		}
		return reply{status: 200}
	})
	r := startRelay(t, testConfig(t, sub("s", srv.URL(), 20, 10*time.Millisecond)))
	a := mustIngest(t, r, "/v1/events", seqEvents("t", 0, 20))
	waitFor(t, 10*time.Second, "20 events delivered", func() bool {
		return metricValue(t, r, `hookbatch_events_delivered_total{subscriber="s"}`) == 20
	})
	hits := srv.Hits()
	root := hits[0].batchID
	if hits[0].count != 20 {
		t.Fatalf("first request carries %d events, want the whole batch of 20", hits[0].count)
	}
	got := map[string]int{}
	deepest := 0
	for _, h := range hits {
		suffix, ok := strings.CutPrefix(h.batchID, root)
		if h.batchID != root && (!ok || !isSplitSuffix(suffix)) {
			t.Errorf("batch id %q is not %s followed by .1/.2 parts", h.batchID, root)
		}
		if h.count > 3 {
			continue // answered 413
		}
		deepest = max(deepest, strings.Count(suffix, "."))
		for _, e := range h.events {
			got[e.ID]++
		}
		if h.attempt != 1 {
			t.Errorf("half %s delivered at attempt %d, want 1", h.batchID, h.attempt)
		}
	}
	for _, id := range a.IDs {
		if got[id] != 1 {
			t.Errorf("event %s delivered %d times", id, got[id])
		}
	}
	if deepest < 3 {
		t.Errorf("deepest split delivered has %d parts, want 3 (20 -> 10 -> 5 -> 2/3)", deepest)
	}
	if dl := deadLettersOf(t, r, "s"); len(dl) != 0 {
		t.Errorf("dead letters %+v, want none", dl)
	}
}

func isSplitSuffix(s string) bool {
	if s == "" {
		return false
	}
	for len(s) > 0 {
		var ok bool
		if s, ok = strings.CutPrefix(s, ".1"); ok {
			continue
		}
		if s, ok = strings.CutPrefix(s, ".2"); !ok {
			return false
		}
	}
	return true
}

// TestTooLargeSingleEventDeadLetters: an event the subscriber refuses with
// 413 even alone ends in the dead-letter store; the others arrive.
func TestTooLargeSingleEventDeadLetters(t *testing.T) {
	t.Parallel()
	srv := startScript(t, func(_ int, h hit) reply {
		for _, e := range h.events {
			if string(e.Data) == `"big"` {
				return reply{status: 413}
			}
		}
		return reply{status: 200}
	})
	r := startRelay(t, testConfig(t, sub("s", srv.URL(), 8, 10*time.Millisecond)))
	a := mustIngest(t, r, "/v1/events", `[{"type":"t","data":0},{"type":"t","data":1},{"type":"t","data":2},{"type":"t","data":"big"},
		{"type":"t","data":4},{"type":"t","data":5},{"type":"t","data":6},{"type":"t","data":7}]`)
	waitFor(t, 10*time.Second, "a dead letter", func() bool { return len(deadLettersOf(t, r, "s")) == 1 })
	waitFor(t, 10*time.Second, "7 events delivered", func() bool {
		return metricValue(t, r, `hookbatch_events_delivered_total{subscriber="s"}`) == 7
	})
	dl := deadLettersOf(t, r, "s")[0]
	root := srv.Hits()[0].batchID
	if dl.Count != 1 || dl.LastStatus != 413 || dl.Attempts != 1 || !strings.HasPrefix(dl.BatchID, root+".") {
		t.Errorf("dead letter %+v: want a split of %s with 1 event, last_status 413, attempts 1", dl, root)
	}
	got := map[string]int{}
	for _, h := range srv.Hits() {
		refused := false
		for _, e := range h.events {
			refused = refused || string(e.Data) == `"big"`
		}
		if refused {
			continue // answered 413
		}
		for _, e := range h.events {
			got[e.ID]++
		}
	}
	for i, id := range a.IDs {
		if i != 3 && got[id] != 1 {
			t.Errorf("event %d (%s) delivered %d times in accepted batches", i, id, got[id])
		}
	}
}

// TestSlowHostIsolation: a subscriber whose server holds every request for
// seconds does not delay another subscriber on another host:port, and never
// has more than per_host_concurrency requests open.
func TestSlowHostIsolation(t *testing.T) {
	t.Parallel()
	f := func(t *testing.T, concurrency, perHost int) {
		slow := startScript(t, func(int, hit) reply { return reply{status: 200, hang: 3 * time.Second} })
		fast := startSink(t, sink.Options{})
		ss := sub("slow", slow.URL(), 1, 5*time.Millisecond)
		ss.EventTypes = []string{"slow.*"}
		fs := sub("fast", fast.URL(), 10, 5*time.Millisecond)
		fs.EventTypes = []string{"fast.*"}
		cfg := testConfig(t, ss, fs)
		cfg.Delivery.Timeout = 10 * time.Second
		cfg.Delivery.Concurrency = concurrency
		cfg.Delivery.PerHostConcurrency = perHost
		if p := cfg.Validate(); len(p) != 0 {
			t.Fatalf("config problems: %v", p)
		}
		r := startRelay(t, cfg)
		t.Cleanup(slow.Release) // before the relay closes

		mustIngest(t, r, "/v1/events", seqEvents("slow.x", 0, 10)) // 10 batches of 1
		waitFor(t, 10*time.Second, "the slow host saturated", func() bool { return slow.open.Load() == int64(perHost) })
		a := mustIngest(t, r, "/v1/events", seqEvents("fast.x", 0, 30))
		waitFor(t, 15*time.Second, "every event at the fast subscriber", func() bool {
			return fast.Stats().Events == int64(len(a.IDs))
		})
		if n := slow.finished.Load(); n != 0 {
			t.Errorf("the fast subscriber got its events only after %d slow requests finished (global slots held by the slow host?)", n)
		}
		if m := slow.maxOpen.Load(); m > int64(perHost) {
			t.Errorf("slow server had %d requests open at once, per_host_concurrency is %d", m, perHost)
		}
		if v := metricValue(t, r, `hookbatch_limit_waits_total{limit="host_concurrency"}`); v < 1 {
			t.Errorf("batches waited on the slow host's limit, but the count is %v", v)
		}
		slow.Release()
		waitFor(t, 15*time.Second, "the slow subscriber's events", func() bool {
			return metricValue(t, r, `hookbatch_events_delivered_total{subscriber="slow"}`) == 10
		})
		if m := slow.maxOpen.Load(); m > int64(perHost) {
			t.Errorf("slow server had %d requests open at once, per_host_concurrency is %d", m, perHost)
		}
	}
	t.Run("roomy global limit", func(t *testing.T) {
		t.Parallel()
		f(t, 64, 2)
	})
	t.Run("global limit twice the per-host limit", func(t *testing.T) {
		t.Parallel()
		// The slow host may use 2 of the 4 global slots; the other 2 are
		// for everyone else.
		f(t, 4, 2)
	})
}

// TestCircuitBreaker: a subscriber refusing connections opens its host's
// circuit after failure_threshold failures; while open nothing is attempted
// for open_duration; once a server listens there every event arrives and
// the circuit closes.
func TestCircuitBreaker(t *testing.T) {
	t.Parallel()
	addr := deadAddr(t)

	s := sub("down", "http://"+addr+"/hooks", 5, 10*time.Millisecond)
	s.Ordered = true // one attempt at a time: counts are exact
	cfg := testConfig(t, s)
	cfg.Delivery.Retry.InitialBackoff = 20 * time.Millisecond
	cfg.Delivery.Retry.MaxBackoff = 50 * time.Millisecond
	cfg.Delivery.Retry.MaxAttempts = 1000
	cfg.Delivery.CircuitBreaker.FailureThreshold = 3
	const openFor = time.Second
	cfg.Delivery.CircuitBreaker.OpenDuration = openFor
	r := startRelay(t, cfg)
	gauge := fmt.Sprintf(`hookbatch_circuit_open{host=%q}`, addr)
	if v := metricValue(t, r, gauge); v != 0 {
		t.Fatalf("%s = %v at start, want 0", gauge, v)
	}

	a := mustIngest(t, r, "/v1/events", seqEvents("t", 0, 20))
	waitFor(t, 10*time.Second, "the circuit open", func() bool { return subscriberState(t, r, "down").Circuit == "open" })
	opened := time.Now()
	waitFor(t, 5*time.Second, "the opening failure counted", func() bool { return failedAttempts(t, r, "down") >= 3 })
	if n := failedAttempts(t, r, "down"); n != 3 {
		t.Errorf("%v failed attempts when the circuit opened, want failure_threshold (3)", n)
	}
	if v := metricValue(t, r, gauge); v != 1 {
		t.Errorf("%s = %v while open, want 1", gauge, v)
	}
	waitFor(t, 5*time.Second, "the probe after open_duration", func() bool { return failedAttempts(t, r, "down") > 3 })
	quiet := time.Since(opened)
	t.Logf("no attempt for %v after the circuit opened", quiet)
	if quiet < openFor-200*time.Millisecond {
		t.Errorf("an attempt came %v after the circuit opened, want none for open_duration (%v)", quiet, openFor)
	}
	if n := metricValue(t, r, `hookbatch_delivery_attempts_total{subscriber="down",outcome="circuit_open"}`); n < 1 {
		t.Errorf("circuit_open outcome counted %v times, want at least 1", n)
	}

	sk := sink.New(sink.Options{Secrets: []string{testSecret}, KeepEvents: true})
	if err := sk.Start(addr); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sk.Close() })
	waitFor(t, 15*time.Second, "every event", func() bool { return sk.Stats().Events >= int64(len(a.IDs)) })
	for i, e := range sk.Events() {
		if e.ID != a.IDs[i] {
			t.Fatalf("event %d is %s, want %s (ordered)", i, e.ID, a.IDs[i])
		}
	}
	waitFor(t, 5*time.Second, "the circuit closed", func() bool {
		return subscriberState(t, r, "down").Circuit == "closed" && metricValue(t, r, gauge) == 0
	})
	if dl := deadLettersOf(t, r, "down"); len(dl) != 0 {
		t.Errorf("dead letters %+v, want none", dl)
	}
}

// TestOrderedThroughFailures: an ordered subscriber failing about 30% of
// deliveries with 500 still gets every event once, in ingest order, across
// many batches.
func TestOrderedThroughFailures(t *testing.T) {
	t.Parallel()
	s := startSink(t, sink.Options{FailRate: 0.3, FailStatus: 500})
	so := sub("o", s.URL(), 7, 10*time.Millisecond)
	so.Ordered = true
	cfg := testConfig(t, so)
	cfg.Delivery.Retry.MaxAttempts = 1000
	r := startRelay(t, cfg)

	const requests, per = 20, 10
	for i := range requests {
		mustIngest(t, r, "/v1/events", seqEvents("t", i*per, per))
	}
	waitFor(t, 30*time.Second, "every event", func() bool { return s.Stats().Events >= requests*per })
	evs := s.Events()
	if len(evs) != requests*per {
		t.Fatalf("%d events delivered, want %d", len(evs), requests*per)
	}
	for i, e := range evs {
		if got := seqOf(t, e.Data); got != i {
			t.Fatalf("event %d of the arrival order carries seq %d: order broken", i, got)
		}
	}
	st := s.Stats()
	t.Logf("sink stats: %+v", st)
	if st.Failed == 0 {
		t.Errorf("no delivery failed; the test proves nothing")
	}
	if st.Batches < requests*per/7 || st.DuplicateBatches != 0 {
		t.Errorf("stats %+v: want at least %d batches and no duplicates", st, requests*per/7)
	}
}

// TestSplitInFlight: while the second half of a split batch is delivered,
// the admin API counts one batch in flight, not the split one as well.
func TestSplitInFlight(t *testing.T) {
	t.Parallel()
	srv := startScript(t, func(_ int, h hit) reply {
		switch {
		case h.count > 2:
			return reply{status: 413}
		case strings.HasSuffix(h.batchID, ".2"):
			return reply{status: 200, hang: time.Minute}
		}
		return reply{status: 200}
	})
	r := startRelay(t, testConfig(t, sub("s", srv.URL(), 4, 10*time.Millisecond)))
	t.Cleanup(srv.Release)
	mustIngest(t, r, "/v1/events", seqEvents("t", 0, 4))
	waitFor(t, 10*time.Second, "the second half sent", func() bool {
		hits := srv.Hits()
		return len(hits) == 3 && strings.HasSuffix(hits[2].batchID, ".2")
	})
	if v := subscriberState(t, r, "s"); v.InFlightBatches != 1 {
		t.Errorf("in flight while the second half is sent: %d, want 1", v.InFlightBatches)
	}
	srv.Release()
	waitFor(t, 10*time.Second, "4 events delivered", func() bool {
		return metricValue(t, r, `hookbatch_events_delivered_total{subscriber="s"}`) == 4
	})
}

// waitingForResume counts the deliveries blocked until their subscriber
// is resumed (in waitActive's select), from the goroutines' stacks.
func waitingForResume() int {
	buf := make([]byte, 1<<20)
	n := 0
	for _, g := range strings.Split(string(buf[:runtime.Stack(buf, true)]), "\n\n") {
		header, _, _ := strings.Cut(g, "\n")
		if strings.Contains(header, "[select") && strings.Contains(g, "relay.(*subscriber).waitActive") {
			n++
		}
	}
	return n
}

// TestPauseHoldsBatchWaitingForSlot: a batch waiting for its host's slot
// when the subscriber is paused is not sent once the slot frees: it waits
// for the resume.
func TestPauseHoldsBatchWaitingForSlot(t *testing.T) {
	srv, r := heldForSlot(t, reply{status: 200}, nil, nil)
	admin := "http://" + r.AdminAddr() + "/v1/subscribers/s/"
	if st, body := post(t, admin+"pause", ""); st != 200 {
		t.Fatalf("pause: %d %s", st, body)
	}
	srv.Release() // the first batch is answered: the slot frees
	waitFor(t, 10*time.Second, "the second batch waiting for the resume", func() bool { return waitingForResume() == 1 })
	if n := len(srv.Hits()); n != 1 {
		t.Fatalf("%d requests while paused, want the first one only", n)
	}
	if st, body := post(t, admin+"resume", ""); st != 200 {
		t.Fatalf("resume: %d %s", st, body)
	}
	waitFor(t, 10*time.Second, "the second batch sent after the resume", func() bool { return len(srv.Hits()) == 2 })
}

// TestPausedAgainBeforeWaking: deliveries waiting for a resume that a new
// pause follows before they run keep waiting, for the second resume.
func TestPausedAgainBeforeWaking(t *testing.T) {
	srv := startScript(t, nil)
	r := startRelay(t, testConfig(t, sub("a", srv.URL(), 1, time.Millisecond)))
	admin := "http://" + r.AdminAddr() + "/v1/subscribers/a/"
	if st, body := post(t, admin+"pause", ""); st != 200 {
		t.Fatalf("pause: %d %s", st, body)
	}
	mustIngest(t, r, "/v1/events", seqEvents("t", 0, 3))
	waitFor(t, 10*time.Second, "3 deliveries waiting for the resume", func() bool { return waitingForResume() == 3 })
	// What resume and then pause do, under the lock they hold, so that
	// both happen before the waiting deliveries run.
	p := r.subscriber("a").paused
	p.mu.Lock()
	if err := r.store.SetPaused("a", ""); err != nil {
		t.Fatal(err)
	}
	p.paused, p.reason = false, ""
	close(p.resumed)
	if err := r.store.SetPaused("a", "paused again"); err != nil {
		t.Fatal(err)
	}
	p.setLocked("paused again")
	p.mu.Unlock()
	waitFor(t, 10*time.Second, "3 deliveries waiting for the second resume", func() bool { return waitingForResume() == 3 })
	if n := len(srv.Hits()); n != 0 {
		t.Fatalf("%d requests while paused again", n)
	}
	if st, body := post(t, admin+"resume", ""); st != 200 {
		t.Fatalf("resume: %d %s", st, body)
	}
	waitFor(t, 10*time.Second, "3 batches sent after the second resume", func() bool { return len(srv.Hits()) == 3 })
}

// slowLog is a log that holds back its "delivery failed" lines until
// release reports true (or a second passes): it widens the window between
// an attempt's answer and what deliver does with it, as a slow log would.
type slowLog struct{ release func() bool }

func (g slowLog) Write(p []byte) (int, error) {
	if strings.Contains(string(p), "delivery failed") {
		deadline := time.Now().Add(time.Second)
		for !g.release() && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
	}
	return len(p), nil
}

// TestGoneHoldsBatchWaitingForSlot: a 410 pauses the subscriber before
// its request's slots are given back, so the batch waiting for them is
// not sent (here the log of the 410 is slow, which widened the gap).
func TestGoneHoldsBatchWaitingForSlot(t *testing.T) {
	var started atomic.Pointer[scriptServer]
	sent := func() bool { s := started.Load(); return s != nil && len(s.Hits()) > 1 }
	srv, r := heldForSlot(t, reply{status: 410}, nil, func(cfg config.Config) *Relay {
		r := openRelay(t, cfg, zerolog.New(slowLog{release: sent}))
		t.Cleanup(func() { stopRelay(t, r) })
		return r
	})
	started.Store(srv)
	srv.Release() // the first batch is answered 410
	waitFor(t, 10*time.Second, "both batches held by the pause, or the second sent", func() bool {
		return waitingForResume() == 2 || len(srv.Hits()) > 1
	})
	if n := len(srv.Hits()); n != 1 {
		t.Fatalf("%d requests, want 1: a batch was sent after the 410 that paused the subscriber", n)
	}
	if v := metricValue(t, r, `hookbatch_delivery_attempts_total{subscriber="s",outcome="permanent"}`); v != 1 {
		t.Fatalf("permanent attempts %v, want 1", v)
	}
}

// TestClosePausedWaitingForSlot: a shutdown while a paused subscriber's
// batch waits for the host's slot stores everything; after a restart and
// a resume every event arrives, and the pause counted no attempt.
func TestClosePausedWaitingForSlot(t *testing.T) {
	var cfg config.Config
	srv, r := heldForSlot(t, reply{status: 200}, nil, func(c config.Config) *Relay {
		cfg = c
		return openRelay(t, c, testLogger(t))
	})
	if st, body := post(t, "http://"+r.AdminAddr()+"/v1/subscribers/s/pause", ""); st != 200 {
		t.Fatalf("pause: %d %s", st, body)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := r.Close(ctx); err != nil { // cuts the held request at the deadline
		t.Fatal(err)
	}
	if v := r.subscriber("s").metrics.attempts["circuit_open"].Get(); v != 0 {
		t.Fatalf("the pause counted %d circuit_open attempts", v)
	}
	srv.Release()
	r = startRelay(t, cfg)
	if st, body := post(t, "http://"+r.AdminAddr()+"/v1/subscribers/s/resume", ""); st != 200 {
		t.Fatalf("resume: %d %s", st, body)
	}
	waitFor(t, 10*time.Second, "every event delivered", func() bool {
		return metricValue(t, r, `hookbatch_events_delivered_total{subscriber="s"}`) == 2
	})
}

// TestHostOf: the key of per-host limits and breakers is host:port, the
// default port filled in and the host name's case folded.
func TestHostOf(t *testing.T) {
	f := func(raw, want string) {
		t.Helper()
		if got, err := hostOf(raw); err != nil || got != want {
			t.Errorf("hostOf(%q) = %q, %v; want %q", raw, got, err, want)
		}
	}
	f("http://sink:9000/hooks", "sink:9000")
	f("http://Sink.Example:9000/hooks", "sink.example:9000")
	f("https://API.example/x", "api.example:443")
	f("http://example.com", "example.com:80")
	f("http://[::1]:8080/h", "[::1]:8080")
	f("https://[2001:DB8::1]/h", "[2001:db8::1]:443")
}

// TestCircuitGaugeOfAbandonedHost: a host whose circuit opened reads half
// open, not open, once open_duration has passed, even with no request to
// move it: one no subscriber uses any more does not read open for good.
func TestCircuitGaugeOfAbandonedHost(t *testing.T) {
	s := startSink(t, sink.Options{})
	addr := deadAddr(t)
	cfg := testConfig(t, sub("x", "http://"+addr+"/hooks", 1, 5*time.Millisecond))
	cfg.Delivery.CircuitBreaker.FailureThreshold = 1
	cfg.Delivery.CircuitBreaker.OpenDuration = 200 * time.Millisecond
	r := startRelay(t, cfg)
	series := `hookbatch_circuit_open{host="` + addr + `"}`
	mustIngest(t, r, "/v1/events", `{"type":"t","data":1}`)
	waitFor(t, 10*time.Second, "the circuit open", func() bool { return metricValue(t, r, series) == 1 })
	cfg.Subscribers = []config.Subscriber{sub("x", s.URL(), 1, 5*time.Millisecond)}
	if err := r.Reload(cfg); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the event delivered to the new URL", func() bool { return len(s.Events()) == 1 })
	waitFor(t, 10*time.Second, "the old host's gauge back to 0", func() bool { return metricValue(t, r, series) == 0 })
}
