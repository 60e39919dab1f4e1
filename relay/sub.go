package relay

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hookbatch/hookbatch/batcher"
	"github.com/hookbatch/hookbatch/config"
	"github.com/hookbatch/hookbatch/event"
	"github.com/hookbatch/hookbatch/signing"
	"github.com/hookbatch/hookbatch/storage"
	"github.com/rs/zerolog"
)

// subscriber is one destination: its queue, its batching loop and the
// deliveries of its batches.
type subscriber struct {
	r      *Relay
	cfg    config.Subscriber
	q      *storage.Queue
	b      *batcher.Batcher
	signer *signing.Signer
	host   *host
	log    zerolog.Logger

	// window holds one token per stored batch not yet finished (delivered
	// or dead-lettered): it bounds the batches, and so the memory, of one
	// subscriber. ordered subscribers have a window of one.
	window chan struct{}

	// life ends when the subscriber stops: at shutdown, or when a reload
	// replaces it. active counts its loop and deliveries.
	life   context.Context
	stop   context.CancelFunc
	active sync.WaitGroup
	// holdMu orders hold with the ends of the subscriber's life (halt,
	// retire), after which active is waited for and must not grow from 0.
	holdMu    sync.Mutex
	retired   bool
	draining  atomic.Bool // removed by a reload: delivers its backlog, takes no new events
	drainable atomic.Bool // draining, and no ingest request can reach its queue any more

	inflight atomic.Int64  // requests in flight
	dead     *atomic.Int64 // dead letters stored: the relay's count for this id (deadCounter)
	// notBefore holds every attempt back until then (unix nanos): set by a
	// Retry-After on 429 or 503.
	notBefore atomic.Int64

	paused *pauseState // the relay's for this id (pauseOf)

	mu          sync.Mutex
	pending     map[string]int64 // batch id -> oldest receive time, of batches being delivered
	parked      map[string]parked
	parkStopped bool

	logMu      sync.Mutex
	lastLog    time.Time // start of the current second of logging
	logged     int       // lines logged in it
	suppressed int

	metrics *subMetrics
	ev      []byte // scratch: one event's JSON
	// unreadable is the oldest queued event when its record cannot be
	// read, for run to take out of the queue alone; 0 otherwise.
	unreadable uint64
	// opened is when the open batch took its first event (monotonic).
	opened time.Time
}

func newSubscriber(r *Relay, cfg config.Subscriber) (*subscriber, error) {
	q, err := r.store.Queue(cfg.ID)
	if err != nil {
		return nil, err
	}
	signer, err := signing.NewSigner(cfg.Secret, cfg.PreviousSecrets)
	if err != nil {
		return nil, fmt.Errorf("subscriber %q: %w", cfg.ID, err)
	}
	addr, err := hostOf(cfg.URL)
	if err != nil {
		return nil, fmt.Errorf("subscriber %q: bad url: %w", cfg.ID, err)
	}
	window := 1
	if !cfg.Ordered {
		window = 2 * r.cfg.Delivery.PerHostConcurrency
	}
	s := &subscriber{
		r:       r,
		cfg:     cfg,
		q:       q,
		b:       batcher.New(batcher.Limits{MaxEvents: cfg.Batch.MaxEvents, MaxBytes: int(cfg.Batch.MaxBytes), MaxWait: cfg.Batch.MaxWait}, cfg.ID),
		signer:  signer,
		host:    r.out.host(addr),
		log:     r.log.With().Str("subscriber", cfg.ID).Logger(),
		window:  make(chan struct{}, window),
		pending: make(map[string]int64),
		parked:  make(map[string]parked),
	}
	s.dead = r.deadCounter(cfg.ID)
	s.paused = r.pauseOf(cfg.ID)
	s.life, s.stop = context.WithCancel(r.life)
	s.metrics = newSubMetrics(r.metrics, s)
	return s, nil
}

// start runs the subscriber's loop; recovered are its stored batches.
func (s *subscriber) start(recovered []*storage.Batch) {
	s.r.loops.Add(1)
	s.active.Add(1)
	go s.run(recovered)
}

// run is the subscriber's batching loop: it delivers the batches recovered
// from storage first, then forms new ones from the queue until shutdown.
func (s *subscriber) run(recovered []*storage.Batch) {
	defer s.r.loops.Done()
	defer s.active.Done()
	slices.SortFunc(recovered, func(a, b *storage.Batch) int {
		switch {
		case a.Seqs[0] < b.Seqs[0]:
			return -1
		case a.Seqs[0] > b.Seqs[0]:
			return 1
		}
		return 0
	})
	for _, b := range recovered {
		if wait := time.Until(time.Unix(0, b.NextAttempt)); !s.cfg.Ordered && wait >= parkAfter && s.park(b.ID, wait) {
			continue
		}
		if !s.acquire() {
			return
		}
		s.dispatch(b, nil)
	}
	var cursor uint64 // last sequence number in the open batch; 0: read from the head
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	for {
		// The window slot is taken once there is something to form: an
		// idle subscriber holds none, so a replay or a retry due can have
		// it (an ordered subscriber's window has one).
		reason := s.fill(&cursor, timer)
		if reason == batcher.None {
			return
		}
		if reason == batcher.Shutdown || s.life.Err() != nil {
			// Stopping (shutdown, or a reload replacing s): the open batch
			// is stored if the window has room, once, and delivered after
			// the restart or by the replacement; the rest stays queued.
			// Taking the slots the ending deliveries free would turn the
			// whole backlog into batches.
			if s.unreadable == 0 && s.tryAcquire() {
				s.store([]formedBatch{s.form(reason)})
			}
			return
		}
		if !s.tryAcquire() {
			if !s.acquire() {
				return
			}
			if s.life.Err() != nil {
				<-s.window // a slot and the end came together: stop as above
				continue
			}
			if reason == batcher.Wait {
				// Events queued while it waited for its slot go with it
				// (an unreadable one is found by the next fill).
				_ = s.readMore(&cursor)
				if r := s.b.Full(); r != batcher.None {
					reason = r
				}
			}
		}
		if seq := s.unreadable; seq != 0 {
			s.unreadable = 0
			if s.store([]formedBatch{s.formAlone(seq)}) {
				cursor = seq
			} else if !s.pauseFor(time.Second) {
				return
			}
			continue
		}
		formed := []formedBatch{s.form(reason)}
		events := len(formed[0].b.Seqs)
		// Under a backlog the next batches are full at once: form them
		// too, as far as the window and one transaction allow, and store
		// them all in one commit instead of one commit each.
		budget := s.r.store.MaxBatchEvents()
		for (reason == batcher.Events || reason == batcher.Bytes) && len(formed) < maxFormed &&
			events+s.cfg.Batch.MaxEvents <= budget && s.life.Err() == nil && s.tryAcquire() {
			if err := s.readMore(&cursor); err != nil {
				<-s.window
				break
			}
			if reason = s.b.Full(); reason == batcher.None {
				<-s.window // not full: it waits for more events, or its max_wait
				break
			}
			formed = append(formed, s.form(reason))
			events += len(formed[len(formed)-1].b.Seqs)
		}
		if !s.store(formed) {
			s.b.Reset()
			cursor = 0 // the events are still queued: read them again
			if !s.pauseFor(time.Second) {
				return
			}
		}
	}
}

// maxFormed bounds the batches stored in one commit.
const maxFormed = 16

// tryAcquire takes a window token if one is free now.
func (s *subscriber) tryAcquire() bool {
	select {
	case s.window <- struct{}{}:
		return true
	default:
		return false
	}
}

// drained reports whether a removed subscriber may stop once its open
// batch and queue are empty.
func (s *subscriber) drained() bool {
	return s.drainable.Load()
}

// acquire takes a window token, or reports false at shutdown.
func (s *subscriber) acquire() bool {
	if s.life.Err() != nil {
		return false
	}
	return take(s.window, s.life, s.r.metrics.limitWaits[limitWindow])
}

// fill reads queued events into the open batch until a flush trigger fires.
// It returns None only at shutdown with an empty batch.
func (s *subscriber) fill(cursor *uint64, timer *time.Timer) batcher.Reason {
	for {
		if err := s.readMore(cursor); err != nil {
			var bad *storage.EventError
			if errors.As(err, &bad) {
				if s.b.Len() > 0 {
					return batcher.Wait // the events before it go first
				}
				// The oldest queued event cannot be read: it leaves the
				// queue as a batch of its own, which delivery
				// dead-letters, and the events after it go on.
				s.unreadable = bad.Seq
				return batcher.Wait
			}
			s.logFailure(s.log.Error().Err(err), "cannot read queue")
			if !s.pauseFor(time.Second) {
				return s.shutdownReason()
			}
			continue
		}
		if r := s.b.Full(); r != batcher.None {
			return r
		}
		if s.b.Len() > 0 {
			// The oldest event's receive time is wall-clock: a clock
			// stepped back would hold the batch that much longer. It
			// waits max_wait at most from when it was first read.
			d := min(time.Until(time.Unix(0, s.b.Deadline())), time.Until(s.opened.Add(s.cfg.Batch.MaxWait)))
			if d <= 0 {
				return batcher.Wait
			}
			timer.Reset(d)
		}
		if s.b.Len() == 0 && s.drained() {
			return batcher.None
		}
		select {
		case <-s.q.Notify():
			timer.Stop()
		case <-timer.C:
			if s.b.Len() == 0 {
				continue
			}
			return batcher.Wait
		case <-s.life.Done():
			timer.Stop()
			return s.shutdownReason()
		}
	}
}

func (s *subscriber) shutdownReason() batcher.Reason {
	if s.b.Len() > 0 {
		return batcher.Shutdown
	}
	return batcher.None
}

// readMore adds queued events after *cursor to the open batch while they fit.
func (s *subscriber) readMore(cursor *uint64) error {
	room := s.cfg.Batch.MaxEvents - s.b.Len()
	if room <= 0 || s.b.Full() != batcher.None {
		return nil
	}
	var derr error
	err := s.q.Read(*cursor, room, func(seq uint64, v []byte) bool {
		rec, err := event.DecodeRecord(v)
		if err != nil {
			derr = &storage.EventError{Seq: seq, Err: err}
			return false
		}
		s.ev = event.AppendJSON(s.ev[:0], &rec)
		empty := s.b.Len() == 0
		if !s.b.Add(seq, s.ev, rec.Recv) {
			return false
		}
		if empty {
			s.opened = time.Now() // monotonic: bounds the wait whatever the wall clock does
		}
		*cursor = seq
		return s.b.Full() == batcher.None
	})
	if err != nil {
		return err
	}
	return derr
}

// formAlone forms a batch of the one queued event seq, whose record cannot
// be read (so it has no body to hold).
func (s *subscriber) formAlone(seq uint64) formedBatch {
	now := time.Now()
	return formedBatch{
		b: &storage.Batch{
			ID:         string(event.AppendID(make([]byte, 0, 28), "b_", now)),
			Subscriber: s.cfg.ID,
			Seqs:       []uint64{seq},
			Created:    now.UnixNano(),
		},
		reason: batcher.None,
	}
}

// formedBatch is a batch taken from the batcher, not stored yet.
type formedBatch struct {
	b      *storage.Batch
	held   *heldBody
	reason batcher.Reason
}

// form takes the open batch out of the batcher with a new id.
func (s *subscriber) form(reason batcher.Reason) formedBatch {
	now := time.Now()
	id := string(event.AppendID(make([]byte, 0, 28), "b_", now))
	f := formedBatch{
		b: &storage.Batch{
			ID:         id,
			Subscriber: s.cfg.ID,
			Seqs:       slices.Clone(s.b.Seqs()),
			Created:    now.UnixNano(),
		},
		held:   &heldBody{body: s.b.AppendBody(make([]byte, 0, s.b.Size()), id), recv: slices.Clone(s.b.Recvs())},
		reason: reason,
	}
	s.b.Reset()
	return f
}

// store stores formed batches, so their ids and contents are fixed, and
// starts their deliveries; each holds a window token. On failure the
// tokens are returned and the events stay queued.
func (s *subscriber) store(formed []formedBatch) bool {
	bs := make([]*storage.Batch, len(formed))
	for i := range formed {
		bs[i] = formed[i].b
	}
	if err := s.q.CreateBatches(bs); err != nil {
		s.logFailure(s.log.Error().Err(err), "cannot store batch")
		for range formed {
			<-s.window
		}
		return false
	}
	for _, f := range formed {
		s.metrics.flushed(f.reason)
		s.metrics.batchEvents.Update(float64(len(f.b.Seqs)))
		s.dispatch(f.b, f.held)
	}
	return true
}

// dispatch delivers b in its own goroutine, which returns the window token
// when b is finished. held may be nil: the body is then read from storage.
// A batch another goroutine is already delivering is not delivered twice
// at once: that goroutine looks at it again when it is done (unclaim).
func (s *subscriber) dispatch(b *storage.Batch, held *heldBody) {
	if !s.r.claim(b.ID) {
		<-s.window
		return
	}
	s.r.deliver.Add(1)
	s.active.Add(1)
	go func() {
		defer s.r.deliver.Done()
		defer s.active.Done()
		defer s.unclaim(b.ID)
		defer func() { <-s.window }()
		s.deliver(b, held)
	}()
}

// claim marks batch id as being delivered, or reports false when it
// already is. The goroutine holding it may be finishing with it just as
// the batch was given back (a dead letter replayed, a parked batch
// unparked): so the refusal is noted for unclaim.
func (r *Relay) claim(id string) bool {
	r.claimMu.Lock()
	defer r.claimMu.Unlock()
	if _, busy := r.claims[id]; busy {
		r.claims[id] = true
		return false
	}
	r.claims[id] = false
	return true
}

// unclaim ends s's delivery of batch id, from that delivery's goroutine,
// which still counts in s.active. If a dispatch of the batch was refused
// meanwhile, s reads it again and, if it is still pending, delivers it.
// If s was stopped, Reload reads it again once s is done; at shutdown it
// stays stored for the restart.
func (s *subscriber) unclaim(id string) {
	r := s.r
	r.claimMu.Lock()
	again := r.claims[id]
	delete(r.claims, id)
	r.claimMu.Unlock()
	if !again || s.life.Err() != nil || !r.background() {
		return
	}
	s.active.Add(1) // not from 0: the caller counts
	go func() {
		defer r.deliver.Done()
		defer s.active.Done()
		s.deliverStored(id, "cannot read a batch given back")
	}()
}

// deliverStored takes a window slot and delivers stored batch id if it is
// still pending. It reports false when s is stopping.
func (s *subscriber) deliverStored(id, what string) bool {
	if !s.acquire() {
		return false
	}
	b, stopped := s.readStored(id, what)
	if b == nil {
		<-s.window
		return !stopped
	}
	s.dispatch(b, nil)
	return true
}

// hold counts one more goroutine working for s, which is not counted
// already, unless s is stopped or retired: then false.
func (s *subscriber) hold() bool {
	s.holdMu.Lock()
	defer s.holdMu.Unlock()
	if s.retired || s.life.Err() != nil {
		return false
	}
	s.active.Add(1)
	return true
}

// halt stops s: nothing new starts for it, and its goroutines end.
func (s *subscriber) halt() {
	s.holdMu.Lock()
	defer s.holdMu.Unlock()
	s.stop()
}

// pauseFor waits d, or reports false at shutdown.
func (s *subscriber) pauseFor(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-s.life.Done():
		return false
	}
}

// logFailure logs failures of one subscriber: every one while they are
// few, then at most logBurst a second, each saying how many were held back.
func (s *subscriber) logFailure(e *zerolog.Event, msg string) {
	s.logMu.Lock()
	now := time.Now()
	if now.Sub(s.lastLog) >= time.Second {
		s.lastLog, s.logged = now, 0
	}
	if s.logged >= logBurst {
		s.suppressed++
		s.logMu.Unlock()
		e.Discard()
		return
	}
	s.logged++
	n := s.suppressed
	s.suppressed = 0
	s.logMu.Unlock()
	if n > 0 {
		e = e.Int("suppressed", n)
	}
	e.Msg(msg)
}

// logBurst is how many failure lines a subscriber logs a second.
const logBurst = 20
