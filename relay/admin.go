package relay

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"time"

	"github.com/hookbatch/hookbatch/config"
	"github.com/hookbatch/hookbatch/event"
	"github.com/hookbatch/hookbatch/storage"
	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/pprofhandler"
)

func (r *Relay) newAdminServer() *fasthttp.Server {
	return &fasthttp.Server{
		Handler:               r.handleAdmin,
		Name:                  "hookbatch",
		ReadTimeout:           10 * time.Second,
		WriteTimeout:          60 * time.Second, // pprof profiles take a while
		IdleTimeout:           60 * time.Second,
		MaxRequestBodySize:    64 << 10,
		NoDefaultServerHeader: true,
		CloseOnShutdown:       true,
		Logger:                fasthttpLogger{r.log},
	}
}

// subscriberView is one entry of GET /v1/subscribers (DESIGN §7).
type subscriberView struct {
	ID                string  `json:"id"`
	URL               string  `json:"url"`
	QueuedEvents      int64   `json:"queued_events"`
	InFlightBatches   int     `json:"in_flight_batches"`
	OldestEventAge    float64 `json:"oldest_event_age_seconds"`
	Circuit           string  `json:"circuit"`
	Paused            bool    `json:"paused"`
	PauseReason       string  `json:"pause_reason,omitempty"`
	Draining          bool    `json:"draining,omitempty"`
	DeadLetterBatches int64   `json:"dead_letter_batches"`
}

// deadLetterView is one entry of GET /v1/dead-letters (DESIGN §7).
type deadLetterView struct {
	BatchID        string `json:"batch_id"`
	Subscriber     string `json:"subscriber"`
	Count          int    `json:"count"`
	Attempts       int    `json:"attempts"`
	LastStatus     int    `json:"last_status"`
	LastError      string `json:"last_error"`
	FailedAt       string `json:"failed_at"`
	FirstAttemptAt string `json:"first_attempt_at,omitempty"`
	LastAttemptAt  string `json:"last_attempt_at,omitempty"`
}

func (r *Relay) handleAdmin(ctx *fasthttp.RequestCtx) {
	path := string(ctx.Path())
	switch path {
	case "/metrics", "/healthz", "/readyz":
		if !ctx.IsGet() && !ctx.IsHead() {
			writeError(ctx, notAllowed(fasthttp.MethodGet))
			return
		}
	}
	switch path {
	case "/metrics":
		ctx.SetContentType("text/plain; version=0.0.4; charset=utf-8")
		r.metrics.write(ctx)
		return
	case "/healthz":
		ctx.SetContentType("application/json")
		ctx.SetBodyString(`{"status":"ok"}` + "\n")
		return
	case "/readyz":
		ctx.SetContentType("application/json")
		if r.closing.Load() {
			writeError(ctx, errorf(fasthttp.StatusServiceUnavailable, "shutting down"))
			return
		}
		ctx.SetBodyString(`{"status":"ready"}` + "\n")
		return
	}
	if !r.adminAuthorized(ctx) {
		writeError(ctx, errorf(fasthttp.StatusUnauthorized, "admin API needs Authorization: Bearer <admin.token>"))
		return
	}
	if strings.HasPrefix(path, "/debug/pprof/") {
		pprofhandler.PprofHandler(ctx)
		return
	}
	v, err := r.admin(ctx, strings.Split(strings.Trim(path, "/"), "/"))
	if err != nil {
		writeError(ctx, err)
		return
	}
	b, jerr := json.Marshal(v)
	if jerr != nil {
		writeError(ctx, errorf(fasthttp.StatusInternalServerError, "cannot encode answer"))
		return
	}
	ctx.SetContentType("application/json")
	ctx.SetBody(append(b, '\n'))
}

func (r *Relay) adminAuthorized(ctx *fasthttp.RequestCtx) bool {
	if r.cfg.Admin.Token == "" {
		return true
	}
	got, ok := bearer(ctx.Request.Header.Peek("Authorization"))
	want := sha256.Sum256([]byte(r.cfg.Admin.Token))
	have := sha256.Sum256(got)
	return ok && subtle.ConstantTimeCompare(have[:], want[:]) == 1
}

// admin routes the API of DESIGN §7; p is the path split on "/".
func (r *Relay) admin(ctx *fasthttp.RequestCtx, p []string) (any, *httpError) {
	method := string(ctx.Method())
	want := func(m string) *httpError {
		if method != m {
			return notAllowed(m)
		}
		return nil
	}
	if len(p) < 2 || p[0] != "v1" {
		return nil, errorf(fasthttp.StatusNotFound, "not found")
	}
	switch {
	case p[1] == "subscribers" && len(p) == 2:
		if e := want("GET"); e != nil {
			return nil, e
		}
		subs := r.subscribers()
		out := make([]subscriberView, 0, len(subs))
		for _, s := range subs {
			out = append(out, s.view())
		}
		return out, nil
	case p[1] == "subscribers" && len(p) >= 3:
		s := r.subscriber(p[2])
		if s == nil {
			return nil, errorf(fasthttp.StatusNotFound, "unknown subscriber")
		}
		switch {
		case len(p) == 3:
			if e := want("GET"); e != nil {
				return nil, e
			}
			return s.view(), nil
		case len(p) == 4 && (p[3] == "pause" || p[3] == "resume"):
			if e := want("POST"); e != nil {
				return nil, e
			}
			var err error
			if p[3] == "pause" {
				err = s.pause("paused by the admin API")
			} else {
				err = s.resume()
			}
			if err != nil {
				return nil, r.adminStoreError(err)
			}
			return s.view(), nil
		case len(p) == 5 && p[3] == "dead-letters" && p[4] == "replay":
			if e := want("POST"); e != nil {
				return nil, e
			}
			ids, err := r.replayAll(s)
			if err != nil {
				return nil, r.adminStoreError(err)
			}
			return map[string]any{"replayed": len(ids), "batch_ids": ids}, nil
		}
	case p[1] == "dead-letters" && len(p) == 2:
		if e := want("GET"); e != nil {
			return nil, e
		}
		args := ctx.QueryArgs()
		limit := 100
		if l := args.Peek("limit"); len(l) > 0 {
			n, err := strconv.Atoi(string(l))
			if err != nil || n < 1 || n > 10000 {
				return nil, errorf(fasthttp.StatusBadRequest, "limit must be an integer from 1 to 10000")
			}
			limit = n
		}
		sub := string(args.Peek("subscriber"))
		if sub != "" && r.subscriber(sub) == nil {
			return nil, errorf(fasthttp.StatusNotFound, "unknown subscriber")
		}
		dls, err := r.store.DeadLetters(sub, limit)
		if err != nil {
			return nil, r.adminStoreError(err)
		}
		out := make([]deadLetterView, 0, len(dls))
		for _, b := range dls {
			out = append(out, deadLetterView{
				BatchID: b.ID, Subscriber: b.Subscriber, Count: len(b.Seqs), Attempts: b.Attempts,
				LastStatus: b.LastStatus, LastError: b.LastError, FailedAt: rfc3339(b.FailedAt),
				FirstAttemptAt: rfc3339(b.FirstAttempt), LastAttemptAt: rfc3339(b.LastAttempt),
			})
		}
		return out, nil
	case p[1] == "dead-letters" && len(p) == 4 && p[3] == "replay":
		if e := want("POST"); e != nil {
			return nil, e
		}
		if err := r.replay(p[2]); err != nil {
			return nil, r.adminStoreError(err)
		}
		return map[string]any{"replayed": 1, "batch_ids": []string{p[2]}}, nil
	case p[1] == "dead-letters" && len(p) == 3:
		if e := want("DELETE"); e != nil {
			return nil, e
		}
		b, err := r.store.GetDeadLetter(p[2])
		if err == nil {
			err = r.store.DropDeadLetter(p[2])
		}
		if err != nil {
			return nil, r.adminStoreError(err)
		}
		r.deadCounter(b.Subscriber).Add(-1) // configured or not
		return map[string]any{"deleted": p[2]}, nil
	}
	return nil, errorf(fasthttp.StatusNotFound, "not found")
}

// replay puts dead letter id back into delivery with the same id.
func (r *Relay) replay(id string) error {
	dl, err := r.store.GetDeadLetter(id)
	if err != nil {
		return err
	}
	s := r.subscriber(dl.Subscriber)
	if s == nil || s.draining.Load() {
		return errNotConfigured
	}
	if _, err := r.store.Replay(id); err != nil {
		return err
	}
	s.dead.Add(-1)
	return r.deliverStored(s.cfg.ID, []string{id})
}

// replayAll puts every dead letter of s back into delivery, a page at a
// time, and returns their ids.
func (r *Relay) replayAll(s *subscriber) ([]string, error) {
	var ids []string
	for {
		page, err := r.store.DeadLetters(s.cfg.ID, 100)
		if err != nil || len(page) == 0 {
			if len(ids) > 0 {
				err = errors.Join(err, r.deliverStored(s.cfg.ID, ids))
			}
			return ids, err
		}
		for _, dl := range page {
			if _, err := r.store.Replay(dl.ID); errors.Is(err, storage.ErrNotFound) {
				continue // replayed or dropped by another request meanwhile
			} else if err != nil {
				return ids, errors.Join(err, r.deliverStored(s.cfg.ID, ids))
			}
			s.dead.Add(-1)
			ids = append(ids, dl.ID)
		}
	}
}

// deliverStored hands stored batches (replayed dead letters, or a batch
// whose dispatch was refused while another goroutine held it) to their
// subscriber one at a time as its window allows, from one goroutine, so a
// replay of many holds no more than the window in memory. A batch no
// longer pending (delivered or dead-lettered meanwhile) is skipped. If
// shutdown comes first they stay stored and are delivered after the
// restart.
func (r *Relay) deliverStored(sub string, ids []string) error {
	if !r.background() {
		return storage.ErrClosed
	}
	go func() {
		defer r.deliver.Done()
		for _, id := range ids {
			// The one in force, should a reload have replaced it; one
			// stopped or retired meanwhile leaves the rest stored, for
			// its successor's recovery or the restart.
			s := r.subscriber(sub)
			if s == nil || !s.hold() {
				return
			}
			more := s.deliverStored(id, "cannot read a replayed batch")
			s.active.Done()
			if !more {
				return
			}
		}
	}()
	return nil
}

// background counts a delivery goroutine about to start outside any
// subscriber's loop, or reports false once the relay is closing.
func (r *Relay) background() bool {
	r.bgMu.Lock()
	defer r.bgMu.Unlock()
	if r.closing.Load() {
		return false
	}
	r.deliver.Add(1)
	return true
}

// errNotConfigured refuses to replay a dead letter of a subscriber that is
// not configured (or removed, draining).
var errNotConfigured = errors.New("its subscriber is not configured: add it again to replay its dead letters")

func (r *Relay) adminStoreError(err error) *httpError {
	switch {
	case errors.Is(err, errNotConfigured):
		return errorf(fasthttp.StatusConflict, err.Error())
	case errors.Is(err, storage.ErrNotFound):
		return errorf(fasthttp.StatusNotFound, "no such dead letter")
	case errors.Is(err, storage.ErrClosed):
		return &httpError{status: fasthttp.StatusServiceUnavailable, msg: "shutting down", retryAfter: 5}
	}
	r.log.Error().Err(err).Msg("admin request failed")
	return errorf(fasthttp.StatusInternalServerError, err.Error())
}

func rfc3339(nanos int64) string {
	if nanos == 0 {
		return ""
	}
	return time.Unix(0, nanos).UTC().Format(time.RFC3339Nano)
}

// view is the subscriber's entry in the admin API.
func (s *subscriber) view() subscriberView {
	s.mu.Lock()
	paused, reason, inflight := s.paused, s.pauseReason, len(s.pending)+len(s.parked)
	s.mu.Unlock()
	return subscriberView{
		ID:                s.cfg.ID,
		URL:               config.RedactURL(s.cfg.URL), // as the log shows it: no credentials
		QueuedEvents:      s.q.Depth(),
		InFlightBatches:   inflight,
		OldestEventAge:    s.oldestAge(time.Now()).Seconds(),
		Circuit:           s.host.circuit().String(),
		Paused:            paused,
		PauseReason:       reason,
		Draining:          s.draining.Load(),
		DeadLetterBatches: s.dead.Load(),
	}
}

// oldestAge is how long the oldest event the subscriber holds has waited.
func (s *subscriber) oldestAge(now time.Time) time.Duration {
	oldest := int64(0)
	s.mu.Lock()
	for _, t := range s.pending {
		if oldest == 0 || t < oldest {
			oldest = t
		}
	}
	for _, p := range s.parked {
		if p.oldest != 0 && (oldest == 0 || p.oldest < oldest) {
			oldest = p.oldest
		}
	}
	s.mu.Unlock()
	_ = s.q.Read(0, 1, func(_ uint64, v []byte) bool {
		if rec, err := event.DecodeRecord(v); err == nil && (oldest == 0 || rec.Recv < oldest) {
			oldest = rec.Recv
		}
		return false
	})
	if oldest == 0 {
		return 0
	}
	return max(now.Sub(time.Unix(0, oldest)), 0)
}
