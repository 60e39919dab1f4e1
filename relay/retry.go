package relay

import (
	"errors"
	"math"
	"math/rand/v2"
	"strconv"
	"time"

	"github.com/hookbatch/hookbatch/config"
	"github.com/hookbatch/hookbatch/storage"
	"github.com/valyala/fasthttp"
)

// result is what one delivery attempt came back with.
type result struct {
	status     int           // HTTP status; 0 when no answer came
	err        error         // transport error, nil when an answer came
	retryAfter time.Duration // from a Retry-After header on 429/503; 0 if none
}

// verdict is what happens to a batch after an attempt.
type verdict uint8

const (
	delivered verdict = iota
	retryLater
	deadLetter
	pauseSubscriber // 410 Gone
	splitBatch      // 413 Content Too Large
)

// decision is the one place that turns an attempt's result into what
// happens next (DESIGN §6).
type decision struct {
	verdict verdict
	wait    time.Duration // before the next attempt, with retryLater
	outcome string        // delivery_attempts_total label
	reason  string        // for logs and dead letters
}

// goneReason is why a subscriber that answered 410 is paused.
const goneReason = "subscriber answered 410 Gone"

// decide applies the retry policy to b (whose Attempts already counts this
// attempt) after res.
func decide(p *config.Retry, b *storage.Batch, res result, now time.Time, rnd func() float64) decision {
	s := res.status
	switch {
	case res.err == nil && s >= 200 && s < 300:
		return decision{verdict: delivered, outcome: "success"}
	case errors.Is(res.err, errRefusedDestination):
		return decision{verdict: deadLetter, outcome: "permanent", reason: res.err.Error()}
	case res.err == nil && s >= 300 && s < 400:
		return decision{verdict: deadLetter, outcome: "permanent", reason: "redirect (" + strconv.Itoa(s) + ") not followed"}
	case s == fasthttp.StatusGone:
		return decision{verdict: pauseSubscriber, outcome: "permanent", reason: goneReason}
	case s == fasthttp.StatusRequestEntityTooLarge:
		if len(b.Seqs) > 1 {
			return decision{verdict: splitBatch, outcome: "permanent", reason: "subscriber answered 413: splitting the batch"}
		}
		return decision{verdict: deadLetter, outcome: "permanent", reason: "subscriber answered 413 to a single event"}
	case res.err == nil && s >= 400 && s < 500 && s != fasthttp.StatusRequestTimeout && s != fasthttp.StatusTooManyRequests:
		return decision{verdict: deadLetter, outcome: "permanent", reason: "subscriber answered " + strconv.Itoa(s)}
	}
	d := decision{verdict: retryLater, outcome: "retry", reason: describe(res)}
	switch {
	case isTimeout(res.err):
		d.outcome = "timeout"
	case res.err != nil:
		d.outcome = "conn_error"
	}
	if b.Attempts >= p.MaxAttempts {
		d.verdict, d.reason = deadLetter, "max_attempts reached: "+d.reason
		return d
	}
	if now.Sub(time.Unix(0, b.Created)) >= p.MaxAge {
		d.verdict, d.reason = deadLetter, "max_age reached: "+d.reason
		return d
	}
	d.wait = backoff(p, b.Attempts, rnd)
	if res.retryAfter > 0 {
		d.wait = min(res.retryAfter, p.MaxBackoff)
	}
	// No wait past the batch's max_age: its last attempt comes at that age,
	// and a failure then dead-letters it, not max_backoff later.
	if left := time.Unix(0, b.Created).Add(p.MaxAge).Sub(now); d.wait > left {
		d.wait = max(left, 0)
	}
	return d
}

// backoff is the wait after the attempt-th failed attempt: initial_backoff
// times multiplier^(attempt-1), capped at max_backoff, spread by ±jitter.
func backoff(p *config.Retry, attempt int, rnd func() float64) time.Duration {
	d := float64(p.InitialBackoff) * math.Pow(p.Multiplier, float64(max(attempt-1, 0)))
	d = min(d, float64(p.MaxBackoff))
	if p.Jitter > 0 {
		d *= 1 + p.Jitter*(2*rnd()-1)
	}
	return time.Duration(min(d, float64(p.MaxBackoff)))
}

func jitterRand() float64 { return rand.Float64() }

// parseRetryAfter reads a Retry-After value: delay seconds or an HTTP date.
func parseRetryAfter(v []byte, now time.Time) time.Duration {
	if len(v) == 0 {
		return 0
	}
	if n, err := strconv.ParseUint(string(v), 10, 64); err == nil {
		const most = uint64(math.MaxInt64 / int64(time.Second))
		return time.Duration(min(n, most)) * time.Second // saturate: decide caps it at max_backoff
	}
	if t, err := fasthttp.ParseHTTPDate(v); err == nil {
		if d := t.Sub(now); d > 0 {
			return d
		}
	}
	return 0
}

func describe(res result) string {
	if res.err != nil {
		return res.err.Error()
	}
	return "subscriber answered " + strconv.Itoa(res.status)
}

func isTimeout(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, fasthttp.ErrTimeout) || errors.Is(err, fasthttp.ErrDialTimeout) {
		return true
	}
	var te interface{ Timeout() bool }
	return errors.As(err, &te) && te.Timeout()
}
