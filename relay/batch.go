package relay

import (
	"errors"
	"slices"
	"sync"
	"time"

	"github.com/hookbatch/hookbatch/batcher"
	"github.com/hookbatch/hookbatch/event"
	"github.com/hookbatch/hookbatch/storage"
)

// heldBody is a batch's encoded body and its events' receive times, kept
// while the batch is being attempted.
type heldBody struct {
	body []byte
	recv []int64
}

// deliver attempts b until it is delivered, dead-lettered, or shutdown
// interrupts it (it then stays stored and is delivered after a restart).
// held may be nil; the body is then read from storage.
func (s *subscriber) deliver(b *storage.Batch, held *heldBody) {
	if held == nil {
		// Read it now, not when it is due: a recovered batch waiting for
		// a resume or its retry time counts as in flight, with its age.
		// Failures are handled where it is read again below.
		held, _ = s.load(b)
	}
	if held != nil {
		s.track(b.ID, held.recv)
	}
	defer s.untrack(b.ID)
	for {
		// Not before the batch's next attempt, nor before the time the
		// subscriber asked for with Retry-After.
		next := max(b.NextAttempt, s.notBefore.Load())
		if wait := time.Until(time.Unix(0, next)); next != 0 && wait > 0 {
			// The retry lane: the batch gives its window slot to fresh
			// batches while it waits, and takes one again when due.
			if wait >= parkAfter && !s.cfg.Ordered && s.park(b.ID, wait) {
				return
			}
			if !s.pauseFor(wait) {
				return
			}
		}
		if s.life.Err() != nil {
			return // shutting down: no new attempt; the batch stays stored
		}
		if !s.waitActive() {
			return
		}
		if held == nil {
			h, err := s.load(b)
			var bad *storage.EventError
			if errors.As(err, &bad) {
				// Reading again will not help: the batch goes to the dead
				// letters, where an operator sees why (a replay tries again).
				s.deadLetter(b, "cannot read the batch's events: "+err.Error(), time.Now())
				return
			}
			if err != nil {
				s.logFailure(s.log.Error().Err(err).Str("batch_id", b.ID), "cannot read batch")
				if !s.pauseFor(5 * time.Second) {
					return
				}
				continue
			}
			held = h
			s.track(b.ID, held.recv)
		}
		res, ok, wait := s.r.out.attempt(s, b, held.body)
		if !ok {
			if s.life.Err() != nil {
				return
			}
			if errors.Is(res.err, errPausedMeanwhile) || errors.Is(res.err, errHeldMeanwhile) {
				continue // waitActive, or the wait for notBefore, holds it
			}
			s.metrics.attempt("circuit_open")
			if !s.pauseFor(wait) {
				return
			}
			continue
		}
		now := time.Now()
		b.LastAttempt = now.UnixNano()
		if b.FirstAttempt == 0 {
			b.FirstAttempt = b.LastAttempt
		}
		b.LastStatus = res.status
		b.LastError = ""
		if res.err != nil {
			b.LastError = res.err.Error()
		}
		d := decide(&s.r.cfg.Delivery.Retry, b, res, now, jitterRand)
		s.metrics.attempt(d.outcome)
		switch d.verdict {
		case delivered:
			s.delivered(b, held, now)
			return
		case deadLetter:
			s.deadLetter(b, d.reason, now)
			return
		case splitBatch:
			s.split(b)
			return
		case pauseSubscriber:
			s.log.Warn().Str("batch_id", b.ID).Int("attempt", b.Attempts).Int("status", res.status).
				Str("error", d.reason).Str("next_attempt_in", "after resume").Msg("delivery failed")
			if err := s.pause(d.reason); err != nil {
				s.log.Error().Err(err).Msg("cannot store pause")
			}
			b.NextAttempt = 0
		case retryLater:
			b.NextAttempt = now.Add(d.wait).UnixNano()
			s.logFailure(s.log.Warn().Str("batch_id", b.ID).Int("attempt", b.Attempts).
				Int("status", res.status).Str("error", d.reason).Str("next_attempt_in", d.wait.String()), "delivery failed")
		}
		if !s.persist(b.ID, "cannot store delivery state", func() error { return s.r.store.UpdateBatch(b) }) {
			return
		}
		if s.life.Err() != nil {
			return // shutting down: the batch is stored; it is retried after a restart
		}
	}
}

// load reads b's events from storage and encodes its body.
func (s *subscriber) load(b *storage.Batch) (*heldBody, error) {
	h := &heldBody{recv: make([]int64, 0, len(b.Seqs))}
	h.body = batcher.AppendHead(nil, b.ID, s.cfg.ID, len(b.Seqs))
	err := s.r.store.ReadBatch(b, func(seq uint64, v []byte) error {
		rec, err := event.DecodeRecord(v)
		if err != nil {
			return &storage.EventError{Seq: seq, Err: err}
		}
		if len(h.recv) > 0 {
			h.body = append(h.body, ',')
		}
		h.body = event.AppendJSON(h.body, &rec)
		h.recv = append(h.recv, rec.Recv)
		return nil
	})
	if err != nil {
		return nil, err
	}
	h.body = batcher.AppendTail(h.body)
	return h, nil
}

func (s *subscriber) delivered(b *storage.Batch, h *heldBody, now time.Time) {
	if !s.persist(b.ID, "cannot remove delivered batch", func() error { return s.r.store.Ack(b) }) {
		return // shutting down: delivered again after the restart, same id
	}
	s.metrics.batchesDelivered.Inc()
	s.metrics.eventsDelivered.Add(len(b.Seqs))
	for _, t := range h.recv {
		s.metrics.endToEnd.Update(now.Sub(time.Unix(0, t)).Seconds())
	}
}

func (s *subscriber) deadLetter(b *storage.Batch, reason string, now time.Time) {
	b.FailedAt = now.UnixNano()
	b.LastError = reason
	if !s.persist(b.ID, "cannot dead-letter batch", func() error { return s.r.store.DeadLetter(b) }) {
		return
	}
	s.metrics.deadLetters.Inc()
	s.dead.Add(1)
	s.log.Warn().Str("batch_id", b.ID).Int("attempt", b.Attempts).Int("status", b.LastStatus).
		Str("error", reason).Str("next_attempt_in", "never").Int("events", len(b.Seqs)).Msg("batch dead-lettered")
}

// split replaces b by its two halves, delivered one after the other.
func (s *subscriber) split(b *storage.Batch) {
	var halves [2]*storage.Batch
	if !s.persist(b.ID, "cannot split batch", func() (err error) { halves, err = s.r.store.Split(b); return err }) || halves[0] == nil {
		return
	}
	s.log.Warn().Str("batch_id", b.ID).Int("attempt", b.Attempts).Int("status", b.LastStatus).
		Str("error", "subscriber answered 413: batch split in two").Str("next_attempt_in", "0s (as its halves)").
		Int("events", len(b.Seqs)).Msg("delivery failed")
	s.untrack(b.ID) // its halves are in flight now, each in its turn
	for _, h := range halves {
		if s.life.Err() != nil {
			return
		}
		s.deliver(h, nil)
	}
}

// pauseState is whether the subscribers of one id are paused. Every
// subscriber of that id a reload starts shares it, so a pause or a resume
// that reaches one being replaced holds for its replacement too; it is
// what storage holds (pause, resume).
type pauseState struct {
	mu      sync.Mutex
	paused  bool
	reason  string
	resumed chan struct{} // closed on resume
}

// get returns the state: paused, why, and what closes at the resume.
func (p *pauseState) get() (paused bool, reason string, resumed <-chan struct{}) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.paused, p.reason, p.resumed
}

// setLocked records a pause, stored already.
func (p *pauseState) setLocked(reason string) {
	p.paused, p.reason, p.resumed = true, reason, make(chan struct{})
}

// waitActive waits while the subscriber is paused; false at shutdown.
func (s *subscriber) waitActive() bool {
	for {
		paused, _, ch := s.paused.get()
		if !paused {
			return true
		}
		select {
		case <-ch: // paused again since, perhaps: look again
		case <-s.life.Done():
			return false
		}
	}
}

// pause stops deliveries of s until resume; ingest keeps accepting. The
// pause is stored, so it outlives a restart.
func (s *subscriber) pause(reason string) error {
	p := s.paused
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.paused {
		return nil
	}
	if err := s.r.store.SetPaused(s.cfg.ID, reason); err != nil {
		return err
	}
	p.setLocked(reason)
	s.log.Warn().Str("reason", reason).Msg("subscriber paused")
	return nil
}

func (s *subscriber) resume() error {
	p := s.paused
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.paused {
		return nil
	}
	if err := s.r.store.SetPaused(s.cfg.ID, ""); err != nil {
		return err
	}
	p.paused, p.reason = false, ""
	close(p.resumed)
	s.log.Info().Msg("subscriber resumed")
	return nil
}

// track records that batch id, holding events received at recv, is being
// delivered, for the oldest event age.
func (s *subscriber) track(id string, recv []int64) {
	if len(recv) == 0 {
		return
	}
	s.mu.Lock()
	s.pending[id] = slices.Min(recv)
	s.mu.Unlock()
}

func (s *subscriber) untrack(id string) {
	s.mu.Lock()
	delete(s.pending, id)
	s.mu.Unlock()
}

// parkAfter is the shortest wait for which a batch leaves the window and
// waits in the retry lane.
const parkAfter = 500 * time.Millisecond

// parked is a batch waiting in the retry lane: only its id and the receive
// time of its oldest event stay in memory; the batch itself is in storage.
type parked struct {
	oldest int64
	timer  *time.Timer
	// due: its retry is due and a goroutine waits for a window slot to
	// deliver it. It keeps its place in the lane until then, so the lane
	// and the window bound the subscriber's batches together.
	due bool
}

// park schedules batch id to be delivered again after wait, outside the
// window. At shutdown nothing is parked: the batch stays stored and is
// delivered after the restart.
//
// park reports false, parking nothing, when the lane is full (as many
// batches as the window holds: formed batches stay bounded), stopped, or
// the subscriber is draining.
func (s *subscriber) park(id string, wait time.Duration) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.parkStopped || s.draining.Load() {
		return false
	}
	if _, ok := s.parked[id]; ok {
		return true // already there (it was handed over twice): its timer or its waiting goroutine delivers it
	}
	if len(s.parked) >= cap(s.window) {
		s.r.metrics.limitWaits[limitRetryLane].Inc()
		return false
	}
	s.parked[id] = parked{oldest: s.pending[id], timer: time.AfterFunc(wait, func() { s.unpark(id) })}
	return true
}

// holdUntil keeps every attempt to the subscriber back until t (unix nanos).
func (s *subscriber) holdUntil(t int64) {
	for {
		cur := s.notBefore.Load()
		if cur >= t || s.notBefore.CompareAndSwap(cur, t) {
			return
		}
	}
}

// unpark delivers a parked batch that is due.
func (s *subscriber) unpark(id string) {
	s.mu.Lock()
	p, ok := s.parked[id]
	ok = ok && !p.due && !s.parkStopped
	if ok {
		s.claimParkedLocked(id, p)
	}
	s.mu.Unlock()
	if ok {
		s.redeliver(id)
	}
}

// unparkAll delivers every parked batch now: a draining subscriber's
// batches must not wait outside its goroutines.
func (s *subscriber) unparkAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for id, p := range s.parked {
		if !p.due { // a timer that fired meanwhile finds it due: unpark skips it
			p.timer.Stop()
			s.claimParkedLocked(id, p)
			go s.redeliver(id)
		}
	}
}

// claimParkedLocked marks parked batch id due and counts its delivery as
// running, so Close and Reload wait for it.
func (s *subscriber) claimParkedLocked(id string, p parked) {
	p.due = true
	s.parked[id] = p
	s.r.deliver.Add(1)
	s.active.Add(1)
}

// redeliver takes a window slot for a batch claimed from the retry lane,
// which it leaves then, and delivers it.
func (s *subscriber) redeliver(id string) {
	defer s.r.deliver.Done()
	defer s.active.Done()
	ok := s.acquire()
	s.mu.Lock()
	delete(s.parked, id)
	s.mu.Unlock()
	if !ok {
		return
	}
	if b, _ := s.readStored(id, "cannot read a batch due for retry"); b != nil {
		s.dispatch(b, nil)
	} else {
		<-s.window
	}
}

// readStored reads pending batch id, retrying while storage fails (see
// persist): nil when it is no longer pending (delivered or dead-lettered
// meanwhile), and stopped at shutdown.
func (s *subscriber) readStored(id, what string) (b *storage.Batch, stopped bool) {
	if !s.persist(id, what, func() (err error) { b, err = s.r.store.GetBatch(id); return err }) {
		return nil, true
	}
	return b, false
}

// stopParked cancels every parked batch's timer (they stay stored). After
// it, nothing is parked or unparked: Close and Reload call it before they
// wait for deliveries.
func (s *subscriber) stopParked() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.parkStopped = true
	for id, p := range s.parked {
		p.timer.Stop()
		delete(s.parked, id)
	}
}

// persist runs a storage step of a batch's life until it succeeds, retrying
// every second: a batch is never left without a goroutine to carry it. It
// reports false at shutdown (the batch stays stored as it was) and true
// when the step succeeded or the batch is already gone.
func (s *subscriber) persist(id, what string, step func() error) bool {
	for {
		err := step()
		switch {
		case err == nil || errors.Is(err, storage.ErrNotFound):
			return true
		case errors.Is(err, storage.ErrClosed):
			return false
		}
		s.logFailure(s.log.Error().Err(err).Str("batch_id", id), what)
		if !s.pauseFor(time.Second) {
			return false
		}
	}
}
