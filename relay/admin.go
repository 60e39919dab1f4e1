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
		SecureErrorLogMessage: true, // its error lines would quote request headers: the admin token
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
			if s.draining.Load() {
				return nil, r.adminStoreError(errNotConfigured)
			}
			n, err := r.replayAll(s.cfg.ID)
			if err != nil {
				return nil, r.adminStoreError(err)
			}
			return map[string]any{"replayed": n}, nil
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
		if sub != "" && r.subscriber(sub) == nil && !r.hasDeadLetters(sub) {
			// A removed subscriber's dead letters can still be listed.
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

// replay puts dead letter id back into delivery with the same id. The
// subscriber is held from before the dead letter is requeued until the
// batch is dispatched, so that a reload or a removal waits for it.
func (r *Relay) replay(id string) error {
	dl, err := r.store.GetDeadLetter(id)
	if err != nil {
		return err
	}
	s := r.heldSubscriber(dl.Subscriber)
	if s == nil {
		if r.closing.Load() {
			return storage.ErrClosed // 503: shutting down
		}
		return errNotConfigured
	}
	if _, err := r.store.Replay(id); err != nil {
		s.active.Done()
		return err
	}
	s.dead.Add(-1)
	if !r.background() {
		s.active.Done()
		return nil // closing: it is stored, delivered after the restart
	}
	go func() {
		defer r.deliver.Done()
		defer s.active.Done()
		s.deliverStored(id, "cannot read a replayed batch")
	}()
	return nil
}

// replayAll puts every dead letter of subscriber sub stored by now back
// into delivery, and returns how many there are. They are requeued in the
// background, each once the subscriber has a window slot for it: so the
// batches pending, and the memory they take, stay within the window
// however many dead letters there are. One goroutine replays a subscriber's
// dead letters; a request while it runs has it start another pass.
func (r *Relay) replayAll(sub string) (int64, error) {
	if r.closing.Load() {
		return 0, storage.ErrClosed
	}
	n := r.deadCounter(sub).Load()
	r.replayMu.Lock()
	defer r.replayMu.Unlock()
	if j := r.replays[sub]; j != nil {
		j.cutoff, j.again = time.Now().UnixNano(), true
		return n, nil
	}
	if !r.background() {
		return 0, storage.ErrClosed
	}
	j := &replayJob{cutoff: time.Now().UnixNano()}
	r.replays[sub] = j
	go func() {
		defer r.deliver.Done()
		for {
			r.replayMu.Lock()
			cutoff := j.cutoff
			j.again = false
			r.replayMu.Unlock()
			r.replayPass(sub, cutoff) // stopped early or not, a request since asks for another
			r.replayMu.Lock()
			if !j.again {
				delete(r.replays, sub)
				r.replayMu.Unlock()
				return
			}
			r.replayMu.Unlock()
		}
	}()
	return n, nil
}

// replayJob is a subscriber's replay of its dead letters: those failed by
// cutoff (unix nanos), so that batches failing again are not replayed
// again and again; again asks for one more pass.
type replayJob struct {
	cutoff int64
	again  bool
}

// replayPass requeues and delivers sub's dead letters failed by cutoff, a
// page at a time in id order. Stopped early (shutdown, the subscriber
// removed, storage failing), it leaves the rest dead letters, to replay
// again.
func (r *Relay) replayPass(sub string, cutoff int64) {
	after := ""
	for {
		page, err := r.store.DeadLettersAfter(sub, after, 100)
		if err != nil {
			if !errors.Is(err, storage.ErrClosed) {
				r.log.Error().Err(err).Str("subscriber", sub).Msg("replay stopped: cannot read dead letters")
			}
			return
		}
		if len(page) == 0 {
			return
		}
		for _, dl := range page {
			after = dl.ID
			if dl.FailedAt > cutoff {
				continue // failed again since: not replayed twice by one request
			}
			if !r.replayOne(sub, dl.ID) {
				return
			}
		}
	}
}

// replayOne requeues dead letter id of sub once the subscriber in force
// has a window slot, and delivers it. It reports false when the replay
// must stop.
func (r *Relay) replayOne(sub, id string) bool {
	for {
		s := r.heldSubscriber(sub)
		if s == nil {
			return false
		}
		if !s.acquire() {
			s.active.Done()
			continue // stopped while waiting: its successor, if a reload started one
		}
		b, err := r.store.Replay(id)
		if err == nil {
			s.dead.Add(-1)
			s.dispatch(b, nil)
		} else {
			<-s.window
		}
		s.active.Done()
		switch {
		case err == nil || errors.Is(err, storage.ErrNotFound): // replayed or dropped meanwhile
			return true
		case !errors.Is(err, storage.ErrClosed):
			r.log.Error().Err(err).Str("subscriber", sub).Msg("replay stopped")
		}
		return false
	}
}

// heldSubscriber returns the subscriber sub in force, held (hold), waiting
// for a reload that replaces it; nil if there is none or it is stopping
// for good (shutdown, removed).
func (r *Relay) heldSubscriber(sub string) *subscriber {
	for {
		s := r.subscriber(sub)
		if s == nil || s.draining.Load() {
			return nil
		}
		if s.hold() {
			return s
		}
		if r.closing.Load() {
			return nil
		}
		r.reload.Lock() // a reload stopped s: wait until it has started the next one
		r.reload.Unlock()
		if r.subscriber(sub) == s {
			return nil
		}
	}
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
	paused, reason, _ := s.paused.get()
	s.mu.Lock()
	inflight := len(s.pending) + len(s.parked)
	s.mu.Unlock()
	return subscriberView{
		ID:                s.cfg.ID,
		URL:               config.RedactURL(s.cfg.URL), // as the log shows it: no credentials
		QueuedEvents:      s.q.Depth(),
		InFlightBatches:   inflight,
		OldestEventAge:    s.oldestAge(time.Now()).Seconds(),
		Circuit:           s.host.circuit(time.Now()).String(),
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
