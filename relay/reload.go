package relay

import (
	"fmt"
	"reflect"
	"slices"

	"github.com/hookbatch/hookbatch/config"
)

// Reload applies the subscribers of cfg without a restart and without
// losing queued events:
//   - a new subscriber starts receiving events at once;
//   - a changed one is stopped (its in-flight attempts finish) and started
//     again with the new settings, keeping its queue and stored batches;
//   - a removed one takes no new events but drains: it keeps delivering its
//     queued events with its last settings and disappears once empty.
//
// Other keys need a restart; Reload logs which ones changed and keeps the
// running values. On error nothing changes.
func (r *Relay) Reload(cfg config.Config) error {
	r.reload.Lock()
	defer r.reload.Unlock()

	// A request of the most events fanned out to every subscriber writes
	// 3 + subscribers entries per event in one transaction, whose room was
	// sized at start.
	if need := r.cfg.Ingest.MaxEventsPerRequest * (3 + len(cfg.Subscribers)); need > r.store.MaxEntries() {
		return fmt.Errorf("%d subscribers: a request of %d events would write up to %d entries at once, more than the store opened at start has room for (%d); restart to apply",
			len(cfg.Subscribers), r.cfg.Ingest.MaxEventsPerRequest, need, r.store.MaxEntries())
	}
	old, next := r.cfg, cfg
	old.Subscribers, next.Subscribers = nil, nil
	if !reflect.DeepEqual(old, next) {
		r.log.Warn().Msg("reload: only subscribers are reloaded; other changed settings need a restart")
	}

	current := r.subscribers()
	byID := make(map[string]*subscriber, len(current))
	for _, s := range current {
		byID[s.cfg.ID] = s
	}
	var fresh, replaced []*subscriber
	keep := make(map[string]bool)
	for _, sc := range cfg.Subscribers {
		if s := byID[sc.ID]; s != nil && !s.draining.Load() && reflect.DeepEqual(s.cfg, sc) {
			keep[sc.ID] = true
			continue
		}
		s, err := newSubscriber(r, sc)
		if err != nil {
			for _, f := range fresh {
				f.stop() // never started: only its context to release
			}
			return err
		}
		fresh = append(fresh, s)
		if old := byID[sc.ID]; old != nil {
			replaced = append(replaced, old)
		}
	}
	newIDs := make(map[string]bool, len(cfg.Subscribers))
	for _, sc := range cfg.Subscribers {
		newIDs[sc.ID] = true
	}

	// Removed subscribers drain: no new events from here on. Once the
	// ingest requests still routing with the old table are done, nothing
	// more can reach their queues, and they may finish when empty.
	var removed []*subscriber
	r.subsMu.Lock()
	for _, s := range r.subs {
		if !newIDs[s.cfg.ID] && !s.draining.Load() {
			s.draining.Store(true)
			removed = append(removed, s)
		}
	}
	oldRoutes := r.routes.Load()
	r.publishLocked()
	r.subsMu.Unlock()
	// Taking the lock is the wait: for the requests still using the old routes.
	oldRoutes.mu.Lock()
	//lint:ignore SA2001 nothing to do under the lock; acquiring it was the point
	oldRoutes.mu.Unlock()
	for _, s := range removed {
		s.drainable.Store(true)
		s.q.Wake() // its loop may be waiting for events that will not come
		s.unparkAll()
		r.log.Info().Str("subscriber", s.cfg.ID).Int64("queued_events", s.q.Depth()).
			Msg("reload: subscriber removed; delivering its queued events, then it goes")
		go r.retire(s)
	}

	// Changed subscribers stop before their replacements start, so no batch
	// is ever delivered by both.
	for _, s := range replaced {
		s.halt()
		s.stopParked()
		s.active.Wait()
	}
	// The replaced subscribers are stopped: from here on Reload carries
	// through. A read failure only delays stored batches to the restart.
	st, err := r.loadStored()
	if err != nil {
		r.log.Error().Err(err).Msg("reload: cannot read stored state; stored batches are delivered after a restart")
	}
	r.subsMu.Lock()
	for _, s := range fresh {
		if i := slices.IndexFunc(r.subs, func(o *subscriber) bool { return o.cfg.ID == s.cfg.ID }); i >= 0 {
			r.subs[i] = s
		} else {
			r.subs = append(r.subs, s)
		}
		r.byID[s.cfg.ID] = s
		mine := st.batches[s.cfg.ID]
		s.start(mine)
		r.log.Info().Str("subscriber", s.cfg.ID).Int("recovered_batches", len(mine)).Msg("reload: subscriber started")
	}
	r.publishLocked()
	r.cfg.Subscribers = cfg.Subscribers
	r.subsMu.Unlock()
	r.log.Info().Int("subscribers", len(cfg.Subscribers)).Int("started", len(fresh)).Int("unchanged", len(keep)).Msg("reload done")
	return nil
}

// retire waits until a removed subscriber has drained, then forgets it
// (unless a reload brought it back meanwhile), and its metrics once nothing
// of it is left on disk.
func (r *Relay) retire(s *subscriber) {
	s.holdMu.Lock()
	s.retired = true // replays wait for the restart, or for it to be configured again
	s.holdMu.Unlock()
	s.active.Wait()
	s.stop() // nothing of it runs any more: release its context
	// A reload bringing the id back shares its metric series: it is done
	// with them (and has put its subscriber in force) before we look.
	r.reload.Lock()
	defer r.reload.Unlock()
	r.subsMu.Lock()
	defer r.subsMu.Unlock()
	if r.byID[s.cfg.ID] != s {
		return
	}
	r.subs = slices.DeleteFunc(r.subs, func(o *subscriber) bool { return o == s })
	delete(r.byID, s.cfg.ID)
	if n := s.q.Depth(); n > 0 {
		r.log.Warn().Str("subscriber", s.cfg.ID).Int64("queued_events", n).
			Msg("removed subscriber stopped with events left on disk; configure it again to deliver them")
		return
	}
	r.metrics.forget(s.metrics)
	r.log.Info().Str("subscriber", s.cfg.ID).Msg("removed subscriber drained")
}
