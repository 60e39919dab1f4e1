package relay

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hookbatch/hookbatch/config"
	"github.com/hookbatch/hookbatch/storage"
	"github.com/valyala/fasthttp"
)

// TestDecide covers every class of attempt result DESIGN §6 names.
func TestDecide(t *testing.T) {
	p := config.Retry{
		InitialBackoff: 100 * time.Millisecond,
		MaxBackoff:     10 * time.Second,
		Multiplier:     2,
		Jitter:         0,
		MaxAttempts:    5,
		MaxAge:         time.Hour,
	}
	now := time.Unix(1_800_000_000, 0)
	half := func() float64 { return 0.5 }
	type batch struct {
		events   int
		attempts int           // counting this attempt
		age      time.Duration // since the batch was formed
	}
	fresh := batch{events: 3, attempts: 1, age: time.Second}
	f := func(name string, b batch, res result, want verdict, wantOutcome string, wantWait time.Duration) {
		t.Helper()
		sb := &storage.Batch{ID: "b_1", Subscriber: "s", Attempts: b.attempts, Created: now.Add(-b.age).UnixNano()}
		for i := range b.events {
			sb.Seqs = append(sb.Seqs, uint64(i+1))
		}
		d := decide(&p, sb, res, now, half)
		if d.verdict != want {
			t.Errorf("%s: verdict %v, want %v (%+v)", name, d.verdict, want, d)
		}
		if wantOutcome != "" && d.outcome != wantOutcome {
			t.Errorf("%s: outcome %q, want %q", name, d.outcome, wantOutcome)
		}
		if !slices.Contains(attemptOutcomes, d.outcome) || d.outcome == "circuit_open" {
			t.Errorf("%s: outcome %q is not an attempt outcome label", name, d.outcome)
		}
		if want == retryLater && d.wait != wantWait {
			t.Errorf("%s: wait %v, want %v", name, d.wait, wantWait)
		}
		if want != delivered && want != retryLater && d.reason == "" {
			t.Errorf("%s: no reason given for %v", name, want)
		}
		if sb.Attempts != b.attempts || len(sb.Seqs) != b.events {
			t.Errorf("%s: decide changed the batch: %+v", name, sb)
		}
	}
	status := func(s int) result { return result{status: s} }

	for _, s := range []int{200, 201, 202, 204, 299} {
		f("status "+strconv.Itoa(s), fresh, status(s), delivered, "success", 0)
	}
	// Delivered is delivered, however old and however many attempts.
	f("200 at max_attempts past max_age", batch{events: 3, attempts: 5, age: 2 * time.Hour}, status(200), delivered, "success", 0)

	for _, s := range []int{300, 301, 302, 303, 304, 307, 308} {
		f("redirect "+strconv.Itoa(s), fresh, status(s), deadLetter, "permanent", 0)
	}
	for _, s := range []int{400, 401, 403, 404, 405, 409, 415, 422, 451} {
		f("client error "+strconv.Itoa(s), fresh, status(s), deadLetter, "permanent", 0)
	}

	f("408", fresh, status(408), retryLater, "retry", 100*time.Millisecond)
	f("410", fresh, status(410), pauseSubscriber, "", 0)
	f("410 at max_attempts", batch{events: 3, attempts: 5, age: time.Second}, status(410), pauseSubscriber, "", 0)

	f("413 many events", fresh, status(413), splitBatch, "", 0)
	f("413 two events", batch{events: 2, attempts: 1, age: time.Second}, status(413), splitBatch, "", 0)
	f("413 one event", batch{events: 1, attempts: 1, age: time.Second}, status(413), deadLetter, "permanent", 0)

	f("429 without Retry-After", fresh, status(429), retryLater, "retry", 100*time.Millisecond)
	f("429 with Retry-After", fresh, result{status: 429, retryAfter: 3 * time.Second}, retryLater, "retry", 3*time.Second)
	f("429 with Retry-After shorter than the backoff", batch{events: 3, attempts: 4, age: time.Second},
		result{status: 429, retryAfter: 200 * time.Millisecond}, retryLater, "retry", 200*time.Millisecond)
	f("429 with Retry-After over max_backoff", fresh, result{status: 429, retryAfter: time.Hour}, retryLater, "retry", 10*time.Second)
	f("503 with Retry-After", fresh, result{status: 503, retryAfter: 2 * time.Second}, retryLater, "retry", 2*time.Second)

	for _, s := range []int{500, 501, 502, 503, 504, 599} {
		f("server error "+strconv.Itoa(s), fresh, status(s), retryLater, "retry", 100*time.Millisecond)
	}
	f("500 at attempt 3", batch{events: 3, attempts: 3, age: time.Second}, status(500), retryLater, "retry", 400*time.Millisecond)

	timeouts := []error{
		fasthttp.ErrTimeout,
		fasthttp.ErrDialTimeout,
		fmt.Errorf("wrapped: %w", fasthttp.ErrTimeout),
		&net.OpError{Op: "read", Net: "tcp", Err: os.ErrDeadlineExceeded},
	}
	for _, err := range timeouts {
		f("timeout "+err.Error(), fresh, result{err: err}, retryLater, "timeout", 100*time.Millisecond)
	}
	connErrors := []error{
		&net.OpError{Op: "dial", Net: "tcp", Err: &os.SyscallError{Syscall: "connect", Err: syscall.ECONNREFUSED}},
		&net.OpError{Op: "read", Net: "tcp", Err: &os.SyscallError{Syscall: "read", Err: syscall.ECONNRESET}},
		fasthttp.ErrConnectionClosed,
		io.ErrUnexpectedEOF,
	}
	for _, err := range connErrors {
		f("connection error "+err.Error(), fresh, result{err: err}, retryLater, "conn_error", 100*time.Millisecond)
	}

	refused := []error{
		fmt.Errorf("%w: 10.0.0.1 is private", errRefusedDestination),
		&net.OpError{Op: "dial", Net: "tcp", Err: fmt.Errorf("%w: 127.0.0.1 is loopback", errRefusedDestination)},
	}
	for _, err := range refused {
		f("refused "+err.Error(), fresh, result{err: err}, deadLetter, "permanent", 0)
		d := decide(&p, &storage.Batch{Seqs: []uint64{1}, Attempts: 1, Created: now.UnixNano()}, result{err: err}, now, half)
		if !strings.Contains(d.reason, "127.0.0.1") && !strings.Contains(d.reason, "10.0.0.1") {
			t.Errorf("refused: reason %q does not say why", d.reason)
		}
	}

	// Exhaustion: the attempt that reaches max_attempts, or that fails past
	// max_age, dead-letters with a reason naming the limit.
	for _, res := range []result{status(500), status(408), status(429), {status: 503, retryAfter: time.Second}, {err: fasthttp.ErrTimeout}, {err: io.ErrUnexpectedEOF}} {
		name := describe(res)
		wait := 800 * time.Millisecond
		if res.retryAfter > 0 {
			wait = res.retryAfter
		}
		f(name+" at attempt 4 of 5", batch{events: 3, attempts: 4, age: time.Second}, res, retryLater, "", wait)
		if res.retryAfter > 0 {
			continue
		}
		f(name+" at attempt 5 of 5", batch{events: 3, attempts: 5, age: time.Second}, res, deadLetter, "", 0)
		f(name+" at max_age", batch{events: 3, attempts: 1, age: time.Hour}, res, deadLetter, "", 0)
		f(name+" just before max_age", batch{events: 3, attempts: 1, age: time.Hour - time.Millisecond}, res, retryLater, "", time.Millisecond) // the wait ends at max_age
	}
	for name, c := range map[string]struct {
		attempts int
		age      time.Duration
		word     string
	}{
		"max_attempts": {5, time.Second, "max_attempts"},
		"max_age":      {1, 2 * time.Hour, "max_age"},
	} {
		d := decide(&p, &storage.Batch{Seqs: []uint64{1}, Attempts: c.attempts, Created: now.Add(-c.age).UnixNano()}, status(500), now, half)
		if d.verdict != deadLetter || !strings.Contains(d.reason, c.word) || !strings.Contains(d.reason, "500") {
			t.Errorf("%s: %+v, want a dead letter whose reason names %s and the status", name, d, c.word)
		}
	}
}

// TestBackoff checks growth by the multiplier, the max_backoff cap, and
// that jitter stays within ±jitter.
func TestBackoff(t *testing.T) {
	p := config.Retry{InitialBackoff: 100 * time.Millisecond, MaxBackoff: 5 * time.Second, Multiplier: 2}
	f := func(attempt int, rnd float64, want time.Duration) {
		t.Helper()
		if got := backoff(&p, attempt, func() float64 { return rnd }); got != want {
			t.Errorf("backoff(%+v, attempt %d, rnd %v) = %v, want %v", p, attempt, rnd, got, want)
		}
	}
	f(1, 0.5, 100*time.Millisecond)
	f(2, 0.5, 200*time.Millisecond)
	f(3, 0.5, 400*time.Millisecond)
	f(4, 0.5, 800*time.Millisecond)
	f(5, 0.5, 1600*time.Millisecond)
	f(6, 0.5, 3200*time.Millisecond)
	f(7, 0.5, 5*time.Second)
	f(100, 0.5, 5*time.Second)
	f(1_000_000, 0.5, 5*time.Second) // multiplier^n overflows to +Inf

	p.Multiplier = 1.5
	f(1, 0.5, 100*time.Millisecond)
	f(2, 0.5, 150*time.Millisecond)
	f(3, 0.5, 225*time.Millisecond)

	p.Multiplier = 1
	f(50, 0.5, 100*time.Millisecond)

	// Jitter 0.2: the extremes of rnd give ±20%, never past max_backoff.
	p.Multiplier, p.Jitter = 2, 0.2
	f(1, 0, 80*time.Millisecond)
	f(1, 0.5, 100*time.Millisecond)
	f(3, 0, 320*time.Millisecond)
	f(3, 0.75, 440*time.Millisecond)
	f(10, 0, 4*time.Second)
	f(10, 0.999, 5*time.Second)

	// The real source of randomness: every wait within bounds, and spread.
	for _, jitter := range []float64{0.2, 0.5, 1} {
		p.Jitter = jitter
		for attempt := 1; attempt <= 8; attempt++ {
			base := min(float64(p.InitialBackoff)*float64(int(1)<<(attempt-1)), float64(p.MaxBackoff))
			lo, hi := time.Duration(base*(1-jitter)), time.Duration(min(base*(1+jitter), float64(p.MaxBackoff)))
			seen := map[time.Duration]bool{}
			for range 200 {
				d := backoff(&p, attempt, jitterRand)
				if d < lo || d > hi || d < 0 {
					t.Fatalf("jitter %v attempt %d: wait %v outside [%v, %v]", jitter, attempt, d, lo, hi)
				}
				seen[d] = true
			}
			if len(seen) < 10 {
				t.Errorf("jitter %v attempt %d: only %d distinct waits in 200", jitter, attempt, len(seen))
			}
		}
	}
}

// TestParseRetryAfter: delay seconds and HTTP dates (all three formats
// RFC 9110 makes recipients accept); anything else, negative or past, is 0.
func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 12, 3, 10, 0, 0, 0, time.UTC)
	f := func(v string, want time.Duration) {
		t.Helper()
		if got := parseRetryAfter([]byte(v), now); got != want {
			t.Errorf("parseRetryAfter(%q) = %v, want %v", v, got, want)
		}
	}
	f("", 0)
	f("0", 0)
	f("1", time.Second)
	f("2", 2*time.Second)
	f("120", 2*time.Minute)
	f("86400", 24*time.Hour)
	f("-1", 0)
	f("-120", 0)
	f("abc", 0)
	f("1.5", 0)
	f("2s", 0)
	f("0x10", 0)
	f("soon", 0)

	later := now.Add(90 * time.Second)
	f(later.Format(http.TimeFormat), 90*time.Second)                       // IMF-fixdate
	f(later.Format("Monday, 02-Jan-06 15:04:05 GMT"), 90*time.Second)      // RFC 850
	f(later.Format("Mon Jan _2 15:04:05 2006"), 90*time.Second)            // asctime
	f(now.Add(-time.Minute).Format(http.TimeFormat), 0)                    // past
	f(now.Format(http.TimeFormat), 0)                                      // now
	f("Thu, 32 Dec 2026 10:00:00 GMT", 0)                                  // no such day
	f("Thu, 03 Dec 2026 10:00:00", 0)                                      // no zone
	f(strings.Replace(later.Format(http.TimeFormat), "GMT", "XYZ", 1), 0)  // wrong zone
	f(later.Format(http.TimeFormat)+" trailing", 0)                        // trailing garbage
	f(later.Format(time.RFC3339), 0)                                       // not an HTTP date
	f(now.Add(100*24*time.Hour).Format(http.TimeFormat), 100*24*time.Hour) // far, still exact

	// More seconds than a time.Duration holds: a very long wait (decide
	// caps it at max_backoff), never a short or negative one.
	const long = 100 * 365 * 24 * time.Hour
	for _, v := range []string{"9223372037", "18446744074", "99999999999"} {
		if got := parseRetryAfter([]byte(v), now); got < long {
			t.Errorf("parseRetryAfter(%q) = %v, want at least %v (saturated)", v, got, long)
		}
	}
	p := config.Retry{InitialBackoff: time.Second, MaxBackoff: time.Minute, Multiplier: 2, MaxAttempts: 10, MaxAge: time.Hour}
	res := result{status: 429, retryAfter: parseRetryAfter([]byte("18446744074"), now)}
	if d := decide(&p, &storage.Batch{Seqs: []uint64{1}, Attempts: 1, Created: now.UnixNano()}, res, now, jitterRand); d.wait != time.Minute {
		t.Errorf("Retry-After: 18446744074 on a 429 waits %v, want max_backoff (1m)", d.wait)
	}
}

// FuzzParseRetryAfter: whatever the header holds, the wait is never
// negative, and plain delay seconds are taken exactly.
func FuzzParseRetryAfter(f *testing.F) {
	for _, s := range []string{"", "0", "2", "-1", "120", "abc", "1.5", "Sun, 06 Nov 1994 08:49:37 GMT", "Thu, 03 Dec 2026 10:01:30 GMT"} {
		f.Add(s)
	}
	now := time.Date(2026, 12, 3, 10, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, v string) {
		got := parseRetryAfter([]byte(v), now)
		if got < 0 {
			t.Fatalf("parseRetryAfter(%q) = %v, negative", v, got)
		}
		if n, err := strconv.ParseUint(v, 10, 32); err == nil {
			if got != time.Duration(n)*time.Second {
				t.Fatalf("parseRetryAfter(%q) = %v, want %d s", v, got, n)
			}
		}
		if got > 0 && !strings.ContainsAny(v, "0123456789") {
			t.Fatalf("parseRetryAfter(%q) = %v from no digits", v, got)
		}
	})
}

// TestRetryAfterHoldsBatchWaitingForSlot: a 429 with Retry-After holds
// back the subscriber's batch that was waiting for the slot the 429's
// request held: the hold is set before the slot is given back.
func TestRetryAfterHoldsBatchWaitingForSlot(t *testing.T) {
	t.Parallel()
	srv, r := heldForSlot(t, reply{status: 429, header: []string{"Retry-After", "1"}}, nil, nil)
	answered := time.Now()
	srv.Release()
	waitFor(t, 10*time.Second, "both batches delivered", func() bool {
		return metricValue(t, r, `hookbatch_batches_delivered_total{subscriber="s"}`) == 2
	})
	if gap := srv.Hits()[1].at.Sub(answered); gap < 900*time.Millisecond {
		t.Fatalf("the next request came %v after a 429 with Retry-After: 1", gap)
	}
}

// TestOpenCircuitHoldsBatchWaitingForSlot: a batch that passed the breaker
// and then waited for the host's slot is not sent when the failure that
// frees the slot opens the circuit: it waits for open_duration.
func TestOpenCircuitHoldsBatchWaitingForSlot(t *testing.T) {
	t.Parallel()
	srv, r := heldForSlot(t, reply{status: 503}, func(cfg *config.Config) {
		cfg.Delivery.Retry.InitialBackoff = 5 * time.Second // the failed batch itself stays away
		cfg.Delivery.CircuitBreaker.FailureThreshold = 1
		cfg.Delivery.CircuitBreaker.OpenDuration = time.Second
	}, nil)
	answered := time.Now()
	srv.Release() // 503: the circuit opens for a second
	waitFor(t, 10*time.Second, "a second request", func() bool { return len(srv.Hits()) >= 2 })
	if gap := srv.Hits()[1].at.Sub(answered); gap < 900*time.Millisecond {
		t.Fatalf("the next request came %v after the failure that opened the circuit (open_duration 1s)", gap)
	}
	if v := metricValue(t, r, `hookbatch_delivery_attempts_total{subscriber="s",outcome="circuit_open"}`); v < 1 {
		t.Fatalf("circuit_open counted %v times, want the held batch counted", v)
	}
}

// TestRetryAfterOnLastAttemptHolds: a Retry-After holds the subscriber
// back even when it ends its batch (dead-lettered at max_attempts).
func TestRetryAfterOnLastAttemptHolds(t *testing.T) {
	t.Parallel()
	srv := startScript(t, func(n int, h hit) reply {
		if n == 1 {
			return reply{status: 429, header: []string{"Retry-After", "1"}}
		}
		return reply{status: 200}
	})
	cfg := testConfig(t, sub("s", srv.URL(), 1, 5*time.Millisecond))
	cfg.Delivery.Retry.MaxBackoff = 10 * time.Second
	cfg.Delivery.Retry.MaxAttempts = 1
	r := startRelay(t, cfg)
	mustIngest(t, r, "/v1/events", `{"type":"t","data":1}`)
	waitFor(t, 5*time.Second, "the 429 dead-lettered its batch", func() bool { return len(deadLettersOf(t, r, "s")) == 1 })
	answered := srv.Hits()[0].at
	for i := 2; i <= 4; i++ {
		mustIngest(t, r, "/v1/events", fmt.Sprintf(`{"type":"t","data":%d}`, i))
	}
	waitFor(t, 10*time.Second, "the others delivered", func() bool {
		return metricValue(t, r, `hookbatch_batches_delivered_total{subscriber="s"}`) == 3
	})
	for _, h := range srv.Hits()[1:] {
		if gap := h.at.Sub(answered); gap < 900*time.Millisecond {
			t.Fatalf("a request came %v after a 429 with Retry-After: 1", gap)
		}
	}
}

// TestReplayAfterMaxAgeGetsRetries: a dead letter replayed after its
// batch's max_age is retried again, its age counted from the replay, not
// dead-lettered by its first failure.
func TestReplayAfterMaxAgeGetsRetries(t *testing.T) {
	t.Parallel()
	var failing atomic.Int64
	failing.Store(1 << 30)
	srv := startScript(t, func(int, hit) reply {
		if failing.Add(-1) >= 0 {
			return reply{status: 503}
		}
		return reply{status: 200}
	})
	cfg := testConfig(t, sub("s", srv.URL(), 10, 10*time.Millisecond))
	cfg.Delivery.Retry.InitialBackoff = 50 * time.Millisecond
	cfg.Delivery.Retry.Multiplier = 1
	cfg.Delivery.Retry.Jitter = 0
	cfg.Delivery.Retry.MaxBackoff = 50 * time.Millisecond
	cfg.Delivery.Retry.MaxAttempts = 1000
	cfg.Delivery.Retry.MaxAge = time.Second // long enough, from the replay, for a retry on a loaded machine
	cfg.Delivery.CircuitBreaker.FailureThreshold = 1000
	r := startRelay(t, cfg)
	mustIngest(t, r, "/v1/events", `{"type":"t","data":1}`)
	waitFor(t, 10*time.Second, "a dead letter (max_age)", func() bool { return len(deadLettersOf(t, r, "s")) == 1 })
	id := deadLettersOf(t, r, "s")[0].BatchID

	failing.Store(1) // the subscriber is back, but fails once more
	adminJSON(t, r, "POST", "/v1/dead-letters/"+id+"/replay", 200, nil)
	waitFor(t, 10*time.Second, "the replayed batch delivered or dead-lettered again", func() bool {
		return metricValue(t, r, `hookbatch_batches_delivered_total{subscriber="s"}`) == 1 || len(deadLettersOf(t, r, "s")) == 1
	})
	if dl := deadLettersOf(t, r, "s"); len(dl) != 0 {
		t.Fatalf("the replayed batch was dead-lettered again after %d attempt(s): %q", dl[0].Attempts, dl[0].LastError)
	}
}
