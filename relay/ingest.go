package relay

import (
	"bytes"
	"errors"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hookbatch/hookbatch/event"
	"github.com/hookbatch/hookbatch/storage"
	"github.com/rs/zerolog"
	"github.com/valyala/fasthttp"
)

// ingestScratch is the per-request working memory of ingest, pooled so the
// hot path allocates nothing per event once warm.
type ingestScratch struct {
	events []event.Event
	ids    []byte // assigned ids, back to back
	fresh  []bool // fresh[i]: events[i]'s id is one of ids
	recs   []byte // stored records, back to back
	ends   []int  // end offset in recs of each routed event's record
	queues []*storage.Queue
	dests  []*subscriber // the subscriber of each entry of queues
	qends  []int         // end offset in queues of each routed event's destinations
	items  []storage.AppendItem
	dup    []bool
	routed []int // index into events of each item
	ts     []byte
	out    []byte
}

var scratchPool = sync.Pool{New: func() any { return new(ingestScratch) }}

// Limits of the ingest server against slow and abusive clients.
var (
	// ingestReadTimeout bounds the reading of a whole request, headers and
	// body, from its first byte: a client trickling its request (slow
	// loris) is cut off when it passes. A variable so tests can shorten it.
	ingestReadTimeout = 10 * time.Second
	// ingestMaxConnsPerIP bounds the connections one client address holds
	// (perIPListener).
	ingestMaxConnsPerIP = 1024
	// ingestMaxHeaderBytes bounds the request line and headers: larger ones
	// are answered 431.
	ingestMaxHeaderBytes = 16 << 10
)

func (r *Relay) newIngestServer() *fasthttp.Server {
	return &fasthttp.Server{
		Handler:               r.handleIngest,
		ErrorHandler:          r.handleServerError,
		Name:                  "hookbatch",
		ReadTimeout:           ingestReadTimeout,
		WriteTimeout:          30 * time.Second,
		IdleTimeout:           90 * time.Second,
		MaxRequestBodySize:    int(r.cfg.Ingest.MaxBodyBytes),
		ReadBufferSize:        ingestMaxHeaderBytes,
		NoDefaultServerHeader: true,
		NoDefaultDate:         true,
		CloseOnShutdown:       true,
		Logger:                fasthttpLogger{r.log},
		SecureErrorLogMessage: true, // its error lines would quote request headers: tokens, signatures
	}
}

// handleServerError answers requests fasthttp rejected before the handler.
func (r *Relay) handleServerError(ctx *fasthttp.RequestCtx, err error) {
	var e *httpError
	var small *fasthttp.ErrSmallBuffer
	switch {
	case errors.Is(err, fasthttp.ErrBodyTooLarge):
		e = errorf(fasthttp.StatusRequestEntityTooLarge, "body is larger than ingest.max_body_bytes ("+strconv.Itoa(int(r.cfg.Ingest.MaxBodyBytes))+" bytes)")
	case errors.As(err, &small):
		e = errorf(fasthttp.StatusRequestHeaderFieldsTooLarge, "request headers are too large")
	default:
		var te interface{ Timeout() bool }
		if errors.As(err, &te) && te.Timeout() {
			e = errorf(fasthttp.StatusRequestTimeout, "request not received in time")
		} else {
			e = errorf(fasthttp.StatusBadRequest, "cannot parse request: malformed HTTP")
		}
	}
	writeError(ctx, e)
	r.metrics.ingestRequest(e.status)
}

func (r *Relay) handleIngest(ctx *fasthttp.RequestCtx) {
	start := time.Now()
	status := fasthttp.StatusAccepted
	if e := r.ingest(ctx, start); e != nil {
		writeError(ctx, e)
		status = e.status
	}
	r.metrics.ingestRequest(status)
	r.metrics.ingestDuration.UpdateDuration(start)
}

var (
	pathEvents     = []byte("/v1/events")
	pathSubsPrefix = []byte("/v1/subscribers/")
	pathSubsSuffix = []byte("/events")
)

// ingest handles one producer request: the request is accepted whole or not
// at all.
func (r *Relay) ingest(ctx *fasthttp.RequestCtx, now time.Time) *httpError {
	var target *subscriber
	targeted := false
	rt := r.currentRoutes()
	defer rt.mu.RUnlock()
	path := ctx.Path()
	switch {
	case bytes.Equal(path, pathEvents):
	case bytes.HasPrefix(path, pathSubsPrefix) && bytes.HasSuffix(path, pathSubsSuffix) &&
		len(path) > len(pathSubsPrefix)+len(pathSubsSuffix):
		id := path[len(pathSubsPrefix) : len(path)-len(pathSubsSuffix)]
		target, targeted = rt.byID[string(id)], true
	default:
		return errorf(fasthttp.StatusNotFound, "not found")
	}
	if !ctx.IsPost() {
		return notAllowed(fasthttp.MethodPost)
	}
	if e := r.guard.admit(ctx); e != nil {
		return e
	}
	if r.closing.Load() {
		return &httpError{status: fasthttp.StatusServiceUnavailable, msg: "shutting down", retryAfter: 5}
	}
	body := ctx.PostBody()
	if e := r.guard.authenticate(ctx, body); e != nil {
		return e
	}
	if targeted && target == nil {
		// Only once admitted and authenticated: no one else learns
		// which subscriber ids exist.
		return errorf(fasthttp.StatusNotFound, "unknown subscriber")
	}
	if !isJSON(ctx.Request.Header.ContentType()) {
		return errorf(fasthttp.StatusUnsupportedMediaType, "Content-Type must be application/json")
	}

	sc := scratchPool.Get().(*ingestScratch)
	defer scratchPool.Put(sc)
	var err error
	sc.events, err = event.Parse(sc.events[:0], body, r.cfg.Ingest.MaxEventsPerRequest)
	if err != nil {
		if errors.Is(err, event.ErrTooManyEvents) {
			return errorf(fasthttp.StatusRequestEntityTooLarge, "more than ingest.max_events_per_request ("+strconv.Itoa(r.cfg.Ingest.MaxEventsPerRequest)+") events")
		}
		return errorf(fasthttp.StatusBadRequest, err.Error())
	}
	events := sc.events
	if key := ctx.Request.Header.Peek("Idempotency-Key"); len(key) > 0 {
		if len(events) != 1 {
			return errorf(fasthttp.StatusBadRequest, "Idempotency-Key applies to a request of one event")
		}
		if msg := event.CheckID(key); msg != "" {
			return errorf(fasthttp.StatusBadRequest, "Idempotency-Key "+msg)
		}
		if events[0].ID != nil && !bytes.Equal(events[0].ID, key) {
			return errorf(fasthttp.StatusBadRequest, `event 0: "id" differs from the Idempotency-Key header`)
		}
		events[0].ID = key
	}

	// Assign ids and timestamps, then route and encode each event.
	recvNanos := now.UnixNano()
	sc.ts = now.UTC().AppendFormat(sc.ts[:0], time.RFC3339Nano)
	sc.ids = sc.ids[:0]
	sc.fresh = slices.Grow(sc.fresh[:0], len(events))[:len(events)]
	for i := range events {
		if sc.fresh[i] = events[i].ID == nil; sc.fresh[i] {
			sc.ids = event.AppendID(sc.ids, "evt_", now)
		}
	}
	off := 0
	for i := range events {
		ev := &events[i]
		if sc.fresh[i] {
			n := len("evt_") + 26
			ev.ID = sc.ids[off : off+n : off+n]
			off += n
		}
		if ev.Timestamp == nil {
			ev.Timestamp = sc.ts
		}
	}
	sc.recs, sc.ends = sc.recs[:0], sc.ends[:0]
	sc.queues, sc.dests, sc.qends = sc.queues[:0], sc.dests[:0], sc.qends[:0]
	sc.routed = sc.routed[:0]
	for i := range events {
		ev := &events[i]
		if target != nil {
			sc.queues = append(sc.queues, target.q)
			sc.dests = append(sc.dests, target)
		} else {
			n := len(sc.queues)
			for _, s := range rt.list {
				if s.matches(ev.Type) {
					sc.queues = append(sc.queues, s.q)
					sc.dests = append(sc.dests, s)
				}
			}
			if len(sc.queues) == n {
				continue // unrouted: acknowledged, not stored
			}
		}
		sc.qends = append(sc.qends, len(sc.queues))
		sc.recs = event.AppendRecord(sc.recs, ev, recvNanos)
		sc.ends = append(sc.ends, len(sc.recs))
		sc.routed = append(sc.routed, i)
	}
	if len(sc.routed) == 0 {
		return errorf(fasthttp.StatusUnprocessableEntity, "no event matches any subscriber")
	}
	sc.items = sc.items[:0]
	recStart, qStart := 0, 0
	for j, i := range sc.routed {
		var id []byte
		if r.cfg.Ingest.DedupWindow > 0 {
			id = events[i].ID
		}
		sc.items = append(sc.items, storage.AppendItem{
			Record: sc.recs[recStart:sc.ends[j]:sc.ends[j]],
			ID:     id,
			Queues: sc.queues[qStart:sc.qends[j]:sc.qends[j]],
			// An id we generated is new, but a producer may send it back
			// later: it is marked, not looked up.
			Fresh: sc.fresh[i],
		})
		recStart, qStart = sc.ends[j], sc.qends[j]
	}
	sc.dup = slices.Grow(sc.dup[:0], len(sc.items))[:len(sc.items)]
	if err := r.store.Append(sc.items, sc.dup); err != nil {
		return r.storeError(err)
	}

	accepted, dups := 0, 0
	qStart = 0
	for j, d := range sc.dup {
		if !d {
			accepted++
			for _, s := range sc.dests[qStart:sc.qends[j]] {
				s.metrics.accepted.Inc()
			}
		} else {
			dups++
		}
		qStart = sc.qends[j]
	}
	r.metrics.duplicates.Add(dups)
	sc.out = appendAccepted(sc.out[:0], events, accepted, dups, len(events)-len(sc.routed))
	ctx.SetStatusCode(fasthttp.StatusAccepted)
	ctx.SetContentType("application/json")
	ctx.SetBody(sc.out)
	clear(sc.items) // drop references to this request's memory
	clear(sc.events)
	clear(sc.dests)
	return nil
}

func (r *Relay) storeError(err error) *httpError {
	switch {
	case errors.Is(err, storage.ErrFull):
		return &httpError{status: fasthttp.StatusServiceUnavailable, msg: "storage quota reached (storage.max_disk_bytes)", retryAfter: 5}
	case errors.Is(err, storage.ErrClosed):
		return &httpError{status: fasthttp.StatusServiceUnavailable, msg: "shutting down", retryAfter: 5}
	case errors.Is(err, storage.ErrTooLarge):
		return errorf(fasthttp.StatusRequestEntityTooLarge, "request too large to store in one transaction")
	}
	r.log.Error().Err(err).Msg("cannot store events")
	return &httpError{status: fasthttp.StatusServiceUnavailable, msg: "storage failing", retryAfter: 1}
}

func appendAccepted(b []byte, events []event.Event, accepted, dups, unrouted int) []byte {
	b = append(b, `{"accepted":`...)
	b = strconv.AppendInt(b, int64(accepted), 10)
	b = append(b, `,"duplicates":`...)
	b = strconv.AppendInt(b, int64(dups), 10)
	b = append(b, `,"unrouted":`...)
	b = strconv.AppendInt(b, int64(unrouted), 10)
	b = append(b, `,"ids":[`...)
	for i := range events {
		if i > 0 {
			b = append(b, ',')
		}
		b = event.AppendString(b, events[i].ID)
	}
	return append(b, "]}\n"...)
}

// isJSON accepts application/json and application/*+json, with parameters.
func isJSON(ct []byte) bool {
	if i := bytes.IndexByte(ct, ';'); i >= 0 {
		ct = ct[:i]
	}
	ct = bytes.TrimSpace(ct)
	if len(ct) < len("application/json") || !bytes.EqualFold(ct[:len("application/")], []byte("application/")) {
		return false
	}
	sub := ct[len("application/"):]
	return bytes.EqualFold(sub, []byte("json")) || (len(sub) > 5 && bytes.EqualFold(sub[len(sub)-5:], []byte("+json")))
}

// fasthttpLogger sends fasthttp's own messages to the relay's log.
type fasthttpLogger struct{ l zerolog.Logger }

func (f fasthttpLogger) Printf(format string, args ...any) {
	// A connection's error (a body over the limit, malformed HTTP) is its
	// client's doing, already answered and counted: a warning each would
	// let clients flood the log.
	level := zerolog.WarnLevel
	if strings.HasPrefix(format, "error when serving connection") {
		level = zerolog.DebugLevel
	}
	f.l.WithLevel(level).Str("component", "fasthttp").Msgf(format, args...)
}
