// Package sink is a test subscriber for hookbatch: a real fasthttp server
// that receives batched webhook deliveries (DESIGN §6), verifies their
// signatures, checks their shape, counts batches and events, remembers batch
// ids to count duplicates, and keeps a bounded history. It can be told to
// fail or to answer slowly, and changed at run time, so that tests, the bench
// harness and `hookbatch sink` can watch retries and recovery.
//
// HTTP API of a running Sink:
//
//	POST <any other path>  a delivery: 200 when accepted (or a duplicate),
//	                       400 malformed batch, 401 bad signature,
//	                       415 not JSON, FailStatus when failing on purpose
//	GET  /history          the last Options.History deliveries, oldest first
//	GET  /stats            Stats
//	POST /clear            reset counters, history and remembered batch ids;
//	                       answers the Stats as they were just before
package sink

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hookbatch/hookbatch/signing"
	"github.com/valyala/fasthttp"
)

// Defaults of Options.
const (
	DefaultFailStatus   = fasthttp.StatusInternalServerError
	DefaultHistory      = 100
	DefaultSeenBatches  = 1_000_000
	SignatureTolerance  = 5 * time.Minute // of webhook-timestamp, either way
	maxRequestBodyBytes = 64 << 20
)

// Options configure a Sink. The zero value is a sink that accepts every
// well-formed batch without checking signatures.
type Options struct {
	// Secrets, when non-empty, make signatures mandatory: both
	// X-Webhook-Signature and the Standard Webhooks headers must verify with
	// one of them (keys as in signing.DecodeSecret), else the delivery is
	// answered 401 and not counted.
	Secrets []string
	// FailRate is the fraction (0..1) of deliveries answered with FailStatus
	// without being looked at or counted (Stats.Failed counts them).
	FailRate float64
	// FailStatus is the status of failed-on-purpose answers; 0 means 500.
	FailStatus int
	// Delay holds every answer back this long (cut short by Close).
	Delay time.Duration
	// History is how many deliveries GET /history keeps; 0 means 100,
	// negative keeps none.
	History int
	// SeenBatches is how many batch ids are remembered to recognise
	// duplicates, oldest forgotten first; 0 means 1,000,000.
	SeenBatches int
	// KeepEvents keeps every accepted batch with its events and body, for
	// Events and Batches, and events in the history. Memory then grows
	// with every batch: for tests only.
	KeepEvents bool
	// OnBatch, when set, is called once per accepted batch, after it is
	// counted and before it is answered, with Events always filled in (Body
	// only with KeepEvents). It is not called for duplicates, and may be
	// called from several goroutines at once.
	OnBatch func(Batch)
	// Log, when set, gets one human-readable line per delivery.
	Log io.Writer
}

// Batch is one delivery received.
type Batch struct {
	ID         string    `json:"id"`
	Subscriber string    `json:"subscriber"`
	Count      int       `json:"count"`
	Attempt    int       `json:"attempt"` // X-Webhook-Attempt
	ReceivedAt time.Time `json:"received_at"`
	// Duplicate is set on a delivery of a batch id seen before (history
	// only: Batches and OnBatch see first deliveries only).
	Duplicate bool    `json:"duplicate,omitempty"`
	Events    []Event `json:"events,omitempty"`
	Body      []byte  `json:"-"` // the raw body, only with KeepEvents
}

// Event is one event of a delivered batch. Data is the event's data byte for
// byte as delivered; it shares one copy of the batch's body with the other
// events (clone it to keep one event without the rest). BatchID and Attempt
// say which delivery brought it.
type Event struct {
	ID        string          `json:"id"`
	Type      string          `json:"type"`
	Timestamp string          `json:"timestamp"`
	Data      json.RawMessage `json:"data"`
	BatchID   string          `json:"batch_id,omitempty"`
	Attempt   int             `json:"attempt,omitempty"`
}

// Stats counts deliveries since start or the last Clear.
type Stats struct {
	Batches          int64 `json:"batches"`           // accepted, first delivery of their id
	Events           int64 `json:"events"`            // in accepted batches
	DuplicateBatches int64 `json:"duplicate_batches"` // answered 200, not counted again
	Rejected         int64 `json:"rejected"`          // answered 401: signature missing or wrong
	Invalid          int64 `json:"invalid"`           // answered 400 or 415: not a well-formed batch
	Failed           int64 `json:"failed"`            // answered FailStatus on purpose
}

// Sink is a test subscriber. Its methods are safe for concurrent use.
type Sink struct {
	opts     Options
	verifier *signing.Verifier // nil: signatures not checked
	initErr  error             // an invalid secret; Start returns it
	srv      *fasthttp.Server
	done     chan struct{} // closed by Close: cuts delays short

	failRate   atomic.Uint64 // math.Float64bits
	failStatus atomic.Int64
	delay      atomic.Int64 // time.Duration

	mu      sync.Mutex
	stats   Stats
	history ring
	seen    seenSet
	kept    []Batch // with KeepEvents: every accepted batch
	events  []Event // with KeepEvents: every event of kept
	ln      net.Listener
	started bool

	logMu     sync.Mutex // keeps log lines whole
	closeOnce sync.Once
	closeErr  error
	wg        sync.WaitGroup
}

// New returns a Sink for opts; Start makes it listen, Handler serves it from
// elsewhere. An invalid secret makes Start fail and every delivery 500.
func New(opts Options) *Sink {
	s := &Sink{opts: opts, done: make(chan struct{})}
	if len(opts.Secrets) > 0 {
		s.verifier, s.initErr = signing.NewVerifier(opts.Secrets...)
		if s.initErr != nil {
			s.initErr = fmt.Errorf("sink: %w", s.initErr)
		}
	}
	s.SetFailRate(opts.FailRate)
	s.SetFailStatus(opts.FailStatus)
	s.SetDelay(opts.Delay)
	n := opts.History
	if n == 0 {
		n = DefaultHistory
	}
	s.history = newRing(max(n, 0))
	n = opts.SeenBatches
	if n <= 0 {
		n = DefaultSeenBatches
	}
	s.seen = newSeenSet(n)
	s.srv = &fasthttp.Server{
		Handler:            s.handle,
		Name:               "hookbatch-sink",
		ReadTimeout:        30 * time.Second,
		WriteTimeout:       30 * time.Second,
		IdleTimeout:        60 * time.Second,
		MaxRequestBodySize: maxRequestBodyBytes,
		CloseOnShutdown:    true,
		// Also how long fasthttp's worker-pool cleaner may outlive Close.
		MaxIdleWorkerDuration: time.Second,
	}
	return s
}

// Start listens on addr ("127.0.0.1:0" picks a free port) and serves in the
// background until Close. The listener is ready when Start returns.
func (s *Sink) Start(addr string) error {
	if s.initErr != nil {
		return s.initErr
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.started {
		return errors.New("sink: already started")
	}
	select {
	case <-s.done:
		return errors.New("sink: closed")
	default:
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("sink: cannot listen on %s: %w", addr, err)
	}
	s.ln, s.started = ln, true
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		_ = s.srv.Serve(ln) // returns once Close shuts the server down
	}()
	return nil
}

// Addr is the address the sink listens on ("" before Start).
func (s *Sink) Addr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ln == nil {
		return ""
	}
	return s.ln.Addr().String()
}

// URL is the delivery URL to configure as a subscriber: http://<addr>/hooks.
func (s *Sink) URL() string { return "http://" + s.Addr() + "/hooks" }

// Close stops the server: pending delays end at once, requests in progress
// are answered, connections are closed, and every goroutine of the sink has
// returned when Close does. It is safe to call more than once.
func (s *Sink) Close() error {
	s.closeOnce.Do(func() {
		close(s.done)
		s.mu.Lock()
		started := s.started
		s.mu.Unlock()
		if started {
			s.closeErr = s.srv.Shutdown()
			// Shutdown closes only the listeners Serve has registered; the
			// Serve goroutine may not have got that far yet.
			if err := s.ln.Close(); err != nil && !errors.Is(err, net.ErrClosed) && s.closeErr == nil {
				s.closeErr = fmt.Errorf("sink: cannot close listener: %w", err)
			}
		}
		s.wg.Wait()
	})
	return s.closeErr
}

// SetFailRate sets the fraction of deliveries failed on purpose (clamped to
// 0..1).
func (s *Sink) SetFailRate(f float64) {
	if math.IsNaN(f) || f < 0 {
		f = 0
	}
	s.failRate.Store(math.Float64bits(min(f, 1)))
}

// SetFailStatus sets the status of failed-on-purpose answers; 0 means 500.
func (s *Sink) SetFailStatus(status int) {
	if status == 0 {
		status = DefaultFailStatus
	}
	s.failStatus.Store(int64(status))
}

// SetDelay sets how long every answer is held back.
func (s *Sink) SetDelay(d time.Duration) { s.delay.Store(int64(max(d, 0))) }

// Stats returns the counters.
func (s *Sink) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stats
}

// Clear resets counters, history, remembered batch ids and kept batches,
// and returns the Stats as they were just before.
func (s *Sink) Clear() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.stats
	s.stats = Stats{}
	s.history.reset()
	s.seen.reset()
	s.kept, s.events = nil, nil
	return st
}

// History returns the last Options.History deliveries (accepted and
// duplicate), oldest first; their events only with KeepEvents.
func (s *Sink) History() []Batch {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.history.appendTo(make([]Batch, 0, s.history.len()))
}

// Batches returns every accepted batch (first deliveries) in the order they
// were counted; nil without KeepEvents. The slice is a copy; the batches'
// Events and Body are shared and must not be modified.
func (s *Sink) Batches() []Batch {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.kept == nil {
		return nil
	}
	return append([]Batch(nil), s.kept...)
}

// Events returns every event of every accepted batch, in the order the
// batches were counted; nil without KeepEvents. The slice is a copy; Data is
// shared and must not be modified.
func (s *Sink) Events() []Event {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.events == nil {
		return nil
	}
	return append([]Event(nil), s.events...)
}
