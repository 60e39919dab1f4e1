package sink

import (
	"bytes"
	"encoding/json"
	"math"
	"math/rand/v2"
	"strconv"
	"time"

	"github.com/hookbatch/hookbatch/event"
	"github.com/valyala/fasthttp"
)

// Handler returns the sink's request handler, for serving it from a server
// of the caller's (Start is the usual way).
func (s *Sink) Handler() fasthttp.RequestHandler { return s.handle }

func (s *Sink) handle(ctx *fasthttp.RequestCtx) {
	switch string(ctx.Path()) {
	case "/history":
		if !ctx.IsGet() {
			writeError(ctx, methodNotAllowed("GET"))
			return
		}
		writeJSON(ctx, s.History())
	case "/stats":
		if !ctx.IsGet() {
			writeError(ctx, methodNotAllowed("GET"))
			return
		}
		writeJSON(ctx, s.Stats())
	case "/clear":
		if !ctx.IsPost() {
			writeError(ctx, methodNotAllowed("POST"))
			return
		}
		writeJSON(ctx, s.Clear())
	default:
		if !ctx.IsPost() {
			writeError(ctx, methodNotAllowed("POST"))
			return
		}
		s.deliver(ctx)
	}
}

// deliver answers one delivery: after the delay, fail on purpose, refuse
// it, or count it.
func (s *Sink) deliver(ctx *fasthttp.RequestCtx) {
	if d := time.Duration(s.delay.Load()); d > 0 {
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-s.done:
			t.Stop()
		}
	}
	if s.initErr != nil {
		writeError(ctx, errorf(fasthttp.StatusInternalServerError, "sink misconfigured: "+s.initErr.Error()))
		return
	}
	if f := math.Float64frombits(s.failRate.Load()); f > 0 && (f >= 1 || rand.Float64() < f) {
		status := int(s.failStatus.Load())
		s.failed()
		s.logf("failed batch %s on purpose: %d", printable(string(ctx.Request.Header.Peek("X-Webhook-Batch-Id"))), status)
		writeError(ctx, errorf(status, "failing on purpose"))
		return
	}
	b, herr := s.parse(ctx)
	if herr != nil {
		s.refused(herr.status)
		s.logf("refused batch %s: %d %s", printable(string(ctx.Request.Header.Peek("X-Webhook-Batch-Id"))), herr.status, herr.msg)
		writeError(ctx, herr)
		return
	}
	dup := s.count(&b)
	if dup {
		s.logf("duplicate batch %s %d events attempt %d from %s", printable(b.ID), b.Count, b.Attempt, printable(b.Subscriber))
	} else {
		if s.opts.OnBatch != nil {
			s.opts.OnBatch(b)
		}
		s.logf("batch %s %d events attempt %d from %s", printable(b.ID), b.Count, b.Attempt, printable(b.Subscriber))
	}
	ctx.SetStatusCode(fasthttp.StatusOK)
	ctx.SetContentType("application/json")
	out := make([]byte, 0, 64)
	out = append(out, `{"received":`...)
	out = strconv.AppendInt(out, int64(b.Count), 10)
	out = append(out, `,"duplicate":`...)
	out = strconv.AppendBool(out, dup)
	ctx.SetBody(append(out, "}\n"...))
}

// parse checks a delivery (signatures, headers, body) and returns it as a
// Batch that owns all its memory. A 401 means the signatures do not verify,
// any other status that the delivery is not a well-formed batch.
func (s *Sink) parse(ctx *fasthttp.RequestCtx) (Batch, *httpError) {
	h := &ctx.Request.Header
	raw := ctx.PostBody()
	if s.verifier != nil {
		sigs := h.Peek("webhook-signature")
		err := s.verifier.VerifyStandard(h.Peek("webhook-id"), h.Peek("webhook-timestamp"), sigs, raw, time.Now(), SignatureTolerance)
		if err != nil {
			return Batch{}, errorf(fasthttp.StatusUnauthorized, "Standard Webhooks signature: "+err.Error())
		}
		// X-Webhook-Signature carries the sender's current key only. While
		// the sender rotates keys (several v1 entries), a receiver holding
		// just the previous key can verify only the Standard Webhooks
		// header; otherwise both must verify.
		rotating := bytes.Count(sigs, []byte("v1,")) > 1
		if !s.verifier.VerifyHex(h.Peek("X-Webhook-Signature"), raw) && !rotating {
			return Batch{}, errorf(fasthttp.StatusUnauthorized, "X-Webhook-Signature missing or does not verify")
		}
	}
	if ct := h.ContentType(); !bytes.HasPrefix(ct, []byte("application/json")) {
		return Batch{}, errorf(fasthttp.StatusUnsupportedMediaType, "Content-Type "+strconv.Quote(string(ct))+" is not application/json")
	}
	if v := h.Peek("X-Webhook-Batch"); string(v) != "true" {
		return Batch{}, errorf(fasthttp.StatusBadRequest, "X-Webhook-Batch is "+strconv.Quote(string(v))+", want \"true\"")
	}
	attempt, err := strconv.Atoi(string(h.Peek("X-Webhook-Attempt")))
	if err != nil || attempt < 1 {
		return Batch{}, errorf(fasthttp.StatusBadRequest, "X-Webhook-Attempt is "+strconv.Quote(string(h.Peek("X-Webhook-Attempt")))+", want a number from 1")
	}

	// The batch owns one copy of the body: event data aliases it.
	own := bytes.Clone(raw)
	body, err := event.ParseDelivery(own, nil)
	if err != nil {
		return Batch{}, errorf(fasthttp.StatusBadRequest, err.Error())
	}
	switch {
	case !body.Batch:
		return Batch{}, errorf(fasthttp.StatusBadRequest, `body: "batch" must be true`)
	case len(body.BatchID) == 0:
		return Batch{}, errorf(fasthttp.StatusBadRequest, `body: "batch_id" missing`)
	case len(body.Subscriber) == 0:
		return Batch{}, errorf(fasthttp.StatusBadRequest, `body: "subscriber" missing`)
	case body.Count < 0:
		return Batch{}, errorf(fasthttp.StatusBadRequest, `body: "count" missing`)
	case body.Count != len(body.Events):
		return Batch{}, errorf(fasthttp.StatusBadRequest, "body: \"count\" is "+strconv.Itoa(body.Count)+" but \"events\" holds "+strconv.Itoa(len(body.Events)))
	case len(body.Events) == 0:
		return Batch{}, errorf(fasthttp.StatusBadRequest, `body: empty batch`)
	}
	batchID := string(body.BatchID)
	if v := string(h.Peek("X-Webhook-Batch-Count")); v != strconv.Itoa(body.Count) {
		return Batch{}, errorf(fasthttp.StatusBadRequest, "X-Webhook-Batch-Count is "+strconv.Quote(v)+" but \"count\" is "+strconv.Itoa(body.Count))
	}
	for _, name := range []string{"X-Webhook-Batch-Id", "webhook-id"} {
		if v := string(h.Peek(name)); v != batchID {
			return Batch{}, errorf(fasthttp.StatusBadRequest, name+" is "+strconv.Quote(v)+" but \"batch_id\" is "+strconv.Quote(batchID))
		}
	}
	events := make([]Event, len(body.Events))
	for i := range body.Events {
		e := &body.Events[i]
		var field string
		switch {
		case e.ID == nil:
			field = "id"
		case e.Timestamp == nil:
			field = "timestamp"
		}
		if field != "" {
			return Batch{}, errorf(fasthttp.StatusBadRequest, "body: events["+strconv.Itoa(i)+"]."+field+" missing")
		}
		events[i] = Event{
			ID:        string(e.ID),
			Type:      string(e.Type),
			Timestamp: string(e.Timestamp),
			Data:      e.Data,
			BatchID:   batchID,
			Attempt:   attempt,
		}
	}
	b := Batch{
		ID:         batchID,
		Subscriber: string(body.Subscriber),
		Count:      body.Count,
		Attempt:    attempt,
		ReceivedAt: time.Now(),
		Events:     events,
	}
	if s.opts.KeepEvents {
		b.Body = own
	}
	return b, nil
}

// httpError is an error answered with its status.
type httpError struct {
	status int
	msg    string
	allow  string // Allow header of a 405
}

func (e *httpError) Error() string { return e.msg }

func errorf(status int, msg string) *httpError { return &httpError{status: status, msg: msg} }

func methodNotAllowed(allow string) *httpError {
	return &httpError{status: fasthttp.StatusMethodNotAllowed, msg: "method not allowed", allow: allow}
}

// writeError writes every error response: JSON {"error": "..."}.
func writeError(ctx *fasthttp.RequestCtx, e *httpError) {
	ctx.Response.Reset()
	ctx.SetStatusCode(e.status)
	ctx.SetContentType("application/json")
	if e.allow != "" {
		ctx.Response.Header.Set("Allow", e.allow)
	}
	b := make([]byte, 0, len(e.msg)+16)
	b = append(b, `{"error":`...)
	b = event.AppendString(b, []byte(e.msg))
	ctx.SetBody(append(b, "}\n"...))
}

// writeJSON answers 200 with v as JSON.
func writeJSON(ctx *fasthttp.RequestCtx, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		writeError(ctx, errorf(fasthttp.StatusInternalServerError, "cannot encode answer: "+err.Error()))
		return
	}
	ctx.SetStatusCode(fasthttp.StatusOK)
	ctx.SetContentType("application/json")
	ctx.SetBody(append(b, '\n'))
}
