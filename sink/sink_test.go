package sink

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

const (
	testSecret  = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	otherSecret = "plain-previous-secret"
)

func mustStartSink(t *testing.T, opts Options) *Sink {
	t.Helper()
	s := New(opts)
	if err := s.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

func newClient() *fasthttp.Client {
	return &fasthttp.Client{
		MaxConnsPerHost:     16,
		MaxConnWaitTimeout:  5 * time.Second,
		ReadTimeout:         5 * time.Second,
		WriteTimeout:        5 * time.Second,
		MaxResponseBodySize: 16 << 20,
	}
}

// delivery is one batch POST as the relay makes it (DESIGN §6).
type delivery struct {
	id, subscriber string
	attempt        int
	data           []string // each event's data, raw JSON
	secret         string   // "" leaves the signature headers out
	ts             time.Time
	body           []byte            // overrides the body made from the fields above
	header         map[string]string // set after everything else; "" deletes
}

func newDelivery(id string, n int) *delivery {
	d := &delivery{id: id, subscriber: "orders", attempt: 1}
	for i := range n {
		d.data = append(d.data, fmt.Sprintf(`{"n": %d, "nested": [1, {"x": "y"}]}`, i))
	}
	return d
}

func (d *delivery) makeBody() []byte {
	if d.body != nil {
		return d.body
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, `{"batch":true,"batch_id":%q,"subscriber":%q,"count":%d,"events":[`, d.id, d.subscriber, len(d.data))
	for i, data := range d.data {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `{"id":"evt_%s_%d","type":"order.created","timestamp":"2026-12-03T10:00:00Z","data":%s}`, d.id, i, data)
	}
	b.WriteString("]}")
	return b.Bytes()
}

// hmacKey is the key rule of DESIGN §6, written out independently of package
// signing.
func hmacKey(t testing.TB, secret string) []byte {
	if tail, ok := strings.CutPrefix(secret, "whsec_"); ok {
		k, err := base64.StdEncoding.DecodeString(tail)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	return []byte(secret)
}

func (d *delivery) request(t testing.TB, url string) *fasthttp.Request {
	body := d.makeBody()
	req := fasthttp.AcquireRequest()
	req.Header.SetMethod(fasthttp.MethodPost)
	req.SetRequestURI(url)
	req.Header.SetContentType("application/json")
	req.Header.Set("X-Webhook-Batch", "true")
	req.Header.Set("X-Webhook-Batch-Id", d.id)
	req.Header.Set("X-Webhook-Batch-Count", strconv.Itoa(len(d.data)))
	req.Header.Set("X-Webhook-Attempt", strconv.Itoa(d.attempt))
	req.Header.Set("webhook-id", d.id)
	if d.secret != "" {
		ts := d.ts
		if ts.IsZero() {
			ts = time.Now()
		}
		key := hmacKey(t, d.secret)
		m := hmac.New(sha256.New, key)
		m.Write(body)
		req.Header.Set("X-Webhook-Signature", "sha256="+hex.EncodeToString(m.Sum(nil)))
		m = hmac.New(sha256.New, key)
		fmt.Fprintf(m, "%s.%d.", d.id, ts.Unix())
		m.Write(body)
		req.Header.Set("webhook-timestamp", strconv.FormatInt(ts.Unix(), 10))
		req.Header.Set("webhook-signature", "v1,"+base64.StdEncoding.EncodeToString(m.Sum(nil)))
	}
	for k, v := range d.header {
		if v == "" {
			req.Header.Del(k)
		} else {
			req.Header.Set(k, v)
		}
	}
	req.SetBody(body)
	return req
}

// do sends req, releases it, and returns the answer's status and body.
func do(t testing.TB, c *fasthttp.Client, req *fasthttp.Request) (int, []byte) {
	t.Helper()
	defer fasthttp.ReleaseRequest(req)
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseResponse(resp)
	if err := c.Do(req, resp); err != nil {
		t.Fatalf("%s %s: %v", req.Header.Method(), req.URI(), err)
	}
	return resp.StatusCode(), bytes.Clone(resp.Body())
}

func (d *delivery) send(t testing.TB, c *fasthttp.Client, url string) (int, []byte) {
	t.Helper()
	return do(t, c, d.request(t, url))
}

func call(t testing.TB, c *fasthttp.Client, method, url string) (int, []byte) {
	t.Helper()
	req := fasthttp.AcquireRequest()
	req.Header.SetMethod(method)
	req.SetRequestURI(url)
	return do(t, c, req)
}

func wantStats(t *testing.T, s *Sink, want Stats) {
	t.Helper()
	if got := s.Stats(); got != want {
		t.Fatalf("Stats() = %+v, want %+v", got, want)
	}
}

func TestSignedBatchesCounted(t *testing.T) {
	var mu sync.Mutex
	var seen []Batch
	s := mustStartSink(t, Options{
		Secrets:    []string{testSecret, otherSecret},
		KeepEvents: true,
		OnBatch: func(b Batch) {
			mu.Lock()
			seen = append(seen, b)
			mu.Unlock()
		},
	})
	c := newClient()

	d1 := newDelivery("b_1", 3)
	d1.secret = testSecret
	d2 := newDelivery("b_2", 2)
	d2.secret = otherSecret // a previous secret still verifies
	d2.attempt = 4
	d2.ts = time.Now().Add(-4 * time.Minute) // within the tolerance
	for _, d := range []*delivery{d1, d2} {
		if status, body := d.send(t, c, s.URL()); status != 200 {
			t.Fatalf("batch %s: status %d %s, want 200", d.id, status, body)
		}
	}
	wantStats(t, s, Stats{Batches: 2, Events: 5})

	events := s.Events()
	if len(events) != 5 {
		t.Fatalf("Events() holds %d events, want 5", len(events))
	}
	e := events[4]
	if e.ID != "evt_b_2_1" || e.Type != "order.created" || e.Timestamp != "2026-12-03T10:00:00Z" || e.BatchID != "b_2" || e.Attempt != 4 {
		t.Fatalf("last event = %+v", e)
	}
	if string(e.Data) != d2.data[1] {
		t.Fatalf("data = %s, want %s byte for byte", e.Data, d2.data[1])
	}

	batches := s.Batches()
	if len(batches) != 2 || batches[0].ID != "b_1" || batches[1].Count != 2 || batches[1].Attempt != 4 ||
		batches[0].Subscriber != "orders" || !bytes.Equal(batches[0].Body, d1.makeBody()) || len(batches[1].Events) != 2 {
		t.Fatalf("Batches() = %+v", batches)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(seen) != 2 || seen[0].ID != "b_1" || len(seen[0].Events) != 3 {
		t.Fatalf("OnBatch saw %+v", seen)
	}
}

func TestOnBatchWithoutKeepEvents(t *testing.T) {
	got := make(chan Batch, 1)
	s := mustStartSink(t, Options{OnBatch: func(b Batch) { got <- b }})
	if status, body := newDelivery("b_1", 2).send(t, newClient(), s.URL()); status != 200 {
		t.Fatalf("status %d %s", status, body)
	}
	b := <-got
	if len(b.Events) != 2 || b.Body != nil {
		t.Fatalf("OnBatch got %d events and body %q; want 2 events, no body", len(b.Events), b.Body)
	}
	if s.Events() != nil || s.Batches() != nil {
		t.Fatal("Events or Batches kept without KeepEvents")
	}
	if h := s.History(); len(h) != 1 || h[0].Events != nil {
		t.Fatalf("History() = %+v, want one entry without events", h)
	}
}

func TestSignatureRejected(t *testing.T) {
	s := mustStartSink(t, Options{Secrets: []string{testSecret}})
	c := newClient()
	f := func(name string, d *delivery) {
		t.Helper()
		status, body := d.send(t, c, s.URL())
		if status != 401 {
			t.Fatalf("%s: status %d %s, want 401", name, status, body)
		}
		var e struct{ Error string }
		if err := json.Unmarshal(body, &e); err != nil || e.Error == "" {
			t.Fatalf("%s: body %q is not {\"error\": ...}", name, body)
		}
		if strings.Contains(string(body), testSecret[6:]) {
			t.Fatalf("%s: answer %q holds the secret", name, body)
		}
	}

	d := newDelivery("b_1", 1)
	f("unsigned", d)

	d = newDelivery("b_1", 1)
	d.secret = "whsec_d3Jvbmcta2V5"
	f("wrong secret", d)

	// Sign one body, send another.
	d = newDelivery("b_1", 2)
	d.secret = testSecret
	req := d.request(t, s.URL())
	req.SetBody(bytes.Replace(d.makeBody(), []byte(`"n": 1`), []byte(`"n": 2`), 1))
	if status, _ := do(t, c, req); status != 401 {
		t.Fatalf("tampered body: status %d, want 401", status)
	}

	d = newDelivery("b_1", 1)
	d.secret = testSecret
	d.ts = time.Now().Add(-6 * time.Minute)
	f("timestamp outside tolerance", d)

	d = newDelivery("b_1", 1)
	d.secret = testSecret
	d.header = map[string]string{"X-Webhook-Signature": ""}
	f("standard signature only", d)

	d = newDelivery("b_1", 1)
	d.secret = testSecret
	d.header = map[string]string{"webhook-signature": ""}
	f("hex signature only", d)

	// A good hex signature does not excuse a bad Standard one.
	d = newDelivery("b_1", 1)
	d.secret = testSecret
	d.header = map[string]string{"webhook-signature": "v1,AAAA" + strings.Repeat("A", 40)}
	f("bad standard signature", d)

	wantStats(t, s, Stats{Rejected: 7})
	if h := s.History(); len(h) != 0 {
		t.Fatalf("History() = %+v, want empty", h)
	}

	// The sink still counts a good one.
	d = newDelivery("b_1", 1)
	d.secret = testSecret
	if status, body := d.send(t, c, s.URL()); status != 200 {
		t.Fatalf("good batch after rejections: status %d %s", status, body)
	}
	wantStats(t, s, Stats{Rejected: 7, Batches: 1, Events: 1})
}

func TestMalformedBatch(t *testing.T) {
	s := mustStartSink(t, Options{})
	c := newClient()
	n := 0
	f := func(name string, wantStatus int, edit func(d *delivery)) {
		t.Helper()
		d := newDelivery("b_1", 2)
		edit(d)
		status, body := d.send(t, c, s.URL())
		if status != wantStatus {
			t.Fatalf("%s: status %d %s, want %d", name, status, body, wantStatus)
		}
		n++
		wantStats(t, s, Stats{Invalid: int64(n)})
	}
	body := func(b string) func(*delivery) { return func(d *delivery) { d.body = []byte(b) } }
	hdr := func(k, v string) func(*delivery) {
		return func(d *delivery) { d.header = map[string]string{k: v} }
	}
	const ev = `{"id":"e1","type":"t","timestamp":"2026-12-03T10:00:00Z","data":{}}`

	f("not JSON", 400, body(`{"batch":true,`))
	f("not a batch", 400, body(`{"batch":false,"batch_id":"b_1","subscriber":"s","count":2,"events":[`+ev+`,`+ev+`]}`))
	f("batch missing", 400, body(`{"batch_id":"b_1","subscriber":"s","count":2,"events":[`+ev+`,`+ev+`]}`))
	f("batch_id missing", 400, body(`{"batch":true,"subscriber":"s","count":2,"events":[`+ev+`,`+ev+`]}`))
	f("subscriber missing", 400, body(`{"batch":true,"batch_id":"b_1","count":2,"events":[`+ev+`,`+ev+`]}`))
	f("count missing", 400, body(`{"batch":true,"batch_id":"b_1","subscriber":"s","events":[`+ev+`,`+ev+`]}`))
	f("count wrong", 400, body(`{"batch":true,"batch_id":"b_1","subscriber":"s","count":2,"events":[`+ev+`]}`))
	f("empty", 400, body(`{"batch":true,"batch_id":"b_1","subscriber":"s","count":0,"events":[]}`))
	f("event id missing", 400, body(`{"batch":true,"batch_id":"b_1","subscriber":"s","count":2,"events":[`+ev+`,{"type":"t","timestamp":"x","data":1}]}`))
	f("event data missing", 400, body(`{"batch":true,"batch_id":"b_1","subscriber":"s","count":2,"events":[`+ev+`,{"id":"e2","type":"t","timestamp":"x"}]}`))
	f("event type missing", 400, body(`{"batch":true,"batch_id":"b_1","subscriber":"s","count":2,"events":[`+ev+`,{"id":"e2","timestamp":"x","data":1}]}`))
	f("X-Webhook-Batch missing", 400, hdr("X-Webhook-Batch", ""))
	f("X-Webhook-Batch false", 400, hdr("X-Webhook-Batch", "false"))
	f("X-Webhook-Batch-Count wrong", 400, hdr("X-Webhook-Batch-Count", "3"))
	f("X-Webhook-Batch-Count missing", 400, hdr("X-Webhook-Batch-Count", ""))
	f("X-Webhook-Batch-Id wrong", 400, hdr("X-Webhook-Batch-Id", "b_2"))
	f("webhook-id wrong", 400, hdr("webhook-id", "b_2"))
	f("webhook-id missing", 400, hdr("webhook-id", ""))
	f("attempt missing", 400, hdr("X-Webhook-Attempt", ""))
	f("attempt zero", 400, hdr("X-Webhook-Attempt", "0"))
	f("not JSON content", 415, hdr("Content-Type", "text/plain"))

	// data null is a value, not a missing field.
	d := newDelivery("b_1", 0)
	d.data = []string{"null"}
	if status, body := d.send(t, c, s.URL()); status != 200 {
		t.Fatalf("data null: status %d %s", status, body)
	}
}

func TestFailRate(t *testing.T) {
	s := mustStartSink(t, Options{FailRate: 1, FailStatus: 503})
	c := newClient()
	d := newDelivery("b_1", 3)
	if status, _ := d.send(t, c, s.URL()); status != 503 {
		t.Fatalf("status %d, want 503", status)
	}
	s.SetFailStatus(429)
	if status, _ := d.send(t, c, s.URL()); status != 429 {
		t.Fatalf("status %d, want 429", status)
	}
	s.SetFailStatus(0)
	if status, _ := d.send(t, c, s.URL()); status != 500 {
		t.Fatalf("status %d, want the default 500", status)
	}
	wantStats(t, s, Stats{Failed: 3})

	// Recovery: the retried batch is counted once, as new.
	s.SetFailRate(0)
	d.attempt = 4
	if status, body := d.send(t, c, s.URL()); status != 200 {
		t.Fatalf("after recovery: status %d %s", status, body)
	}
	wantStats(t, s, Stats{Failed: 3, Batches: 1, Events: 3})

	// A fraction fails some, not all.
	s.SetFailRate(0.5)
	var ok, failed int
	for i := range 200 {
		switch status, _ := newDelivery("r_"+strconv.Itoa(i), 1).send(t, c, s.URL()); status {
		case 200:
			ok++
		case 500:
			failed++
		default:
			t.Fatalf("status %d", status)
		}
	}
	if ok < 40 || failed < 40 {
		t.Fatalf("fail rate 0.5: %d ok, %d failed", ok, failed)
	}
}

func TestDuplicates(t *testing.T) {
	var onBatch atomic.Int64
	s := mustStartSink(t, Options{KeepEvents: true, SeenBatches: 2, OnBatch: func(Batch) { onBatch.Add(1) }})
	c := newClient()
	send := func(id string, attempt int, wantDup bool) {
		t.Helper()
		d := newDelivery(id, 2)
		d.attempt = attempt
		status, body := d.send(t, c, s.URL())
		if status != 200 {
			t.Fatalf("%s: status %d %s", id, status, body)
		}
		var got struct{ Duplicate bool }
		if err := json.Unmarshal(body, &got); err != nil || got.Duplicate != wantDup {
			t.Fatalf("%s attempt %d: answer %s, want duplicate %v", id, attempt, body, wantDup)
		}
	}
	send("b_1", 1, false)
	send("b_1", 2, true)
	send("b_1", 3, true)
	wantStats(t, s, Stats{Batches: 1, Events: 2, DuplicateBatches: 2})
	if n := len(s.Events()); n != 2 {
		t.Fatalf("Events() holds %d events, want 2", n)
	}
	h := s.History()
	if len(h) != 3 || h[0].Duplicate || !h[1].Duplicate || h[2].Attempt != 3 {
		t.Fatalf("History() = %+v", h)
	}

	// Only the last SeenBatches ids are remembered.
	send("b_2", 1, false)
	send("b_3", 1, false)
	send("b_1", 4, false)
	send("b_3", 2, true)
	wantStats(t, s, Stats{Batches: 4, Events: 8, DuplicateBatches: 3})
	if n := onBatch.Load(); n != 4 {
		t.Fatalf("OnBatch called %d times, want 4", n)
	}
}

func TestAdmin(t *testing.T) {
	s := mustStartSink(t, Options{History: 3})
	c := newClient()
	base := "http://" + s.Addr()
	for i := range 5 {
		d := newDelivery("b_"+strconv.Itoa(i), i+1)
		d.subscriber = "sub" + strconv.Itoa(i)
		if status, body := d.send(t, c, base+"/any/path"); status != 200 {
			t.Fatalf("status %d %s", status, body)
		}
	}
	newDelivery("b_4", 5).send(t, c, s.URL())

	status, body := call(t, c, "GET", base+"/history")
	if status != 200 {
		t.Fatalf("GET /history: %d %s", status, body)
	}
	var hist []map[string]any
	if err := json.Unmarshal(body, &hist); err != nil {
		t.Fatalf("GET /history: %v: %s", err, body)
	}
	if len(hist) != 3 {
		t.Fatalf("GET /history holds %d entries, want 3: %s", len(hist), body)
	}
	for i, want := range []map[string]any{
		{"id": "b_3", "subscriber": "sub3", "count": 4.0, "attempt": 1.0},
		{"id": "b_4", "subscriber": "sub4", "count": 5.0, "attempt": 1.0},
		{"id": "b_4", "subscriber": "orders", "count": 5.0, "attempt": 1.0, "duplicate": true},
	} {
		for k, v := range want {
			if hist[i][k] != v {
				t.Fatalf("GET /history entry %d: %s = %v, want %v: %s", i, k, hist[i][k], v, body)
			}
		}
		if _, ok := hist[i]["events"]; ok {
			t.Fatalf("GET /history shows events without KeepEvents: %s", body)
		}
		if _, err := time.Parse(time.RFC3339Nano, hist[i]["received_at"].(string)); err != nil {
			t.Fatalf("received_at: %v", err)
		}
	}

	wantStatsJSON := func(path string, want Stats) {
		t.Helper()
		method := "GET"
		if path == "/clear" {
			method = "POST"
		}
		status, body := call(t, c, method, base+path)
		var got Stats
		if err := json.Unmarshal(body, &got); status != 200 || err != nil || got != want {
			t.Fatalf("%s %s: %d %s, want %+v", method, path, status, body, want)
		}
	}
	before := Stats{Batches: 5, Events: 15, DuplicateBatches: 1}
	wantStatsJSON("/stats", before)
	if !strings.Contains(string(body), `"received_at"`) {
		t.Fatal("no received_at")
	}
	_, body = call(t, c, "GET", base+"/stats")
	for _, k := range []string{"batches", "events", "rejected", "failed", "duplicate_batches", "invalid"} {
		if !strings.Contains(string(body), `"`+k+`":`) {
			t.Fatalf("GET /stats %s lacks %q", body, k)
		}
	}

	wantStatsJSON("/clear", before)
	wantStatsJSON("/stats", Stats{})
	if _, body := call(t, c, "GET", base+"/history"); strings.TrimSpace(string(body)) != "[]" {
		t.Fatalf("GET /history after /clear: %s", body)
	}
	// Batch ids are forgotten too.
	newDelivery("b_4", 5).send(t, c, s.URL())
	wantStats(t, s, Stats{Batches: 1, Events: 5})

	for _, tc := range []struct{ method, path, allow string }{
		{"POST", "/stats", "GET"},
		{"POST", "/history", "GET"},
		{"GET", "/clear", "POST"},
		{"GET", "/hooks", "POST"},
		{"PUT", "/hooks", "POST"},
	} {
		req := fasthttp.AcquireRequest()
		req.Header.SetMethod(tc.method)
		req.SetRequestURI(base + tc.path)
		resp := fasthttp.AcquireResponse()
		if err := c.Do(req, resp); err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode() != 405 || string(resp.Header.Peek("Allow")) != tc.allow {
			t.Fatalf("%s %s: %d Allow %q, want 405 Allow %q", tc.method, tc.path, resp.StatusCode(), resp.Header.Peek("Allow"), tc.allow)
		}
		fasthttp.ReleaseRequest(req)
		fasthttp.ReleaseResponse(resp)
	}
}

func TestHistoryWithEvents(t *testing.T) {
	s := mustStartSink(t, Options{KeepEvents: true})
	c := newClient()
	newDelivery("b_1", 2).send(t, c, s.URL())
	_, body := call(t, c, "GET", "http://"+s.Addr()+"/history")
	var hist []Batch
	if err := json.Unmarshal(body, &hist); err != nil {
		t.Fatal(err)
	}
	if len(hist) != 1 || len(hist[0].Events) != 2 || string(hist[0].Events[1].Data) != `{"n":1,"nested":[1,{"x":"y"}]}` {
		t.Fatalf("GET /history with KeepEvents: %s", body)
	}
}

func TestHistoryOff(t *testing.T) {
	s := mustStartSink(t, Options{History: -1})
	newDelivery("b_1", 1).send(t, newClient(), s.URL())
	if h := s.History(); len(h) != 0 {
		t.Fatalf("History() = %+v with History -1", h)
	}
	wantStats(t, s, Stats{Batches: 1, Events: 1})
}

func TestDelay(t *testing.T) {
	s := mustStartSink(t, Options{Delay: 150 * time.Millisecond})
	c := newClient()
	start := time.Now()
	if status, _ := newDelivery("b_1", 1).send(t, c, s.URL()); status != 200 {
		t.Fatalf("status %d", status)
	}
	if d := time.Since(start); d < 150*time.Millisecond {
		t.Fatalf("answered after %v, want at least 150ms", d)
	}
	s.SetDelay(0)
	start = time.Now()
	newDelivery("b_2", 1).send(t, c, s.URL())
	if d := time.Since(start); d > 100*time.Millisecond {
		t.Fatalf("answered after %v without delay", d)
	}
}

func TestCloseCutsDelay(t *testing.T) {
	s := New(Options{Delay: time.Hour})
	if err := s.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	c := newClient()
	done := make(chan struct{})
	go func() {
		defer close(done)
		req := newDelivery("b_1", 1).request(t, s.URL())
		resp := fasthttp.AcquireResponse()
		_ = c.DoTimeout(req, resp, 10*time.Second)
	}()
	time.Sleep(100 * time.Millisecond) // let the request reach the handler
	start := time.Now()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("Close took %v", d)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	<-done
}

func TestCloseLeavesNoGoroutines(t *testing.T) {
	s := New(Options{Delay: time.Millisecond})
	if err := s.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	c := newClient()
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for i := range 10 {
				newDelivery(fmt.Sprintf("b_%d_%d", w, i), 1).send(t, c, s.URL())
			}
		})
	}
	wg.Wait()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	// fasthttp's worker-pool cleaner notices the stop only after
	// MaxIdleWorkerDuration.
	deadline := time.Now().Add(5 * time.Second)
	for {
		buf := make([]byte, 1<<20)
		stacks := string(buf[:runtime.Stack(buf, true)])
		var left []string
		for _, g := range strings.Split(stacks, "\n\n") {
			if strings.Contains(g, "hookbatch/sink.(*Sink)") || strings.Contains(g, "fasthttp.(*workerPool)") ||
				strings.Contains(g, "fasthttp.(*Server)") {
				left = append(left, g)
			}
		}
		if len(left) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d server goroutines left after Close:\n%s", len(left), strings.Join(left, "\n\n"))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestCloseRightAfterStart(t *testing.T) {
	for range 20 {
		s := New(Options{})
		if err := s.Start("127.0.0.1:0"); err != nil {
			t.Fatal(err)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
	// Close without Start.
	if err := New(Options{}).Close(); err != nil {
		t.Fatal(err)
	}
}

func TestStartErrors(t *testing.T) {
	s := New(Options{Secrets: []string{"whsec_!!!!"}})
	if err := s.Start("127.0.0.1:0"); err == nil || !strings.Contains(err.Error(), "secret") {
		t.Fatalf("Start with an invalid secret: %v", err)
	}
	ctx := requestCtx(newDelivery("b_1", 1).request(t, "http://sink/hooks"))
	s.Handler()(ctx)
	if ctx.Response.StatusCode() != 500 {
		t.Fatalf("delivery to a misconfigured sink: %d", ctx.Response.StatusCode())
	}

	s = mustStartSink(t, Options{})
	if err := s.Start("127.0.0.1:0"); err == nil {
		t.Fatal("second Start: no error")
	}
	if err := New(Options{}).Start(s.Addr()); err == nil {
		t.Fatal("Start on an address in use: no error")
	}
}

func TestConcurrentDeliveries(t *testing.T) {
	var events sync.Map
	s := mustStartSink(t, Options{Log: &lockedBuffer{}, OnBatch: func(b Batch) {
		for _, e := range b.Events {
			if _, dup := events.LoadOrStore(e.ID, true); dup {
				t.Errorf("event %s counted twice", e.ID)
			}
		}
	}})
	c := newClient()
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for i := range 50 {
				// Workers pair up on batch ids, so each id comes twice.
				id := fmt.Sprintf("b_%d_%d", w/2, i)
				if status, body := newDelivery(id, 3).send(t, c, s.URL()); status != 200 {
					t.Errorf("status %d %s", status, body)
				}
				call(t, c, "GET", "http://"+s.Addr()+"/stats")
			}
		})
	}
	wg.Wait()
	wantStats(t, s, Stats{Batches: 200, Events: 600, DuplicateBatches: 200})
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func TestLog(t *testing.T) {
	var log lockedBuffer
	s := mustStartSink(t, Options{Secrets: []string{testSecret}, Log: &log})
	c := newClient()
	d := newDelivery("b_01HXYZ", 100)
	d.secret = testSecret
	d.subscriber = "demo"
	d.send(t, c, s.URL())
	d.attempt = 2
	d.send(t, c, s.URL())
	d = newDelivery("b_2 forged\tline", 1)
	d.send(t, c, s.URL())
	s.SetFailRate(1)
	newDelivery("b_3", 1).send(t, c, s.URL())

	lines := strings.Split(strings.TrimSuffix(log.String(), "\n"), "\n")
	want := []string{
		"batch b_01HXYZ 100 events attempt 1 from demo",
		"duplicate batch b_01HXYZ 100 events attempt 2 from demo",
		`refused batch "b_2 forged\tline": 401 Standard Webhooks signature: signing: no v1 signature`,
		"failed batch b_3 on purpose: 500",
	}
	if len(lines) != len(want) {
		t.Fatalf("log:\n%s\nwant %d lines", log.String(), len(want))
	}
	for i, line := range lines {
		// Each line starts with the time of day.
		if _, err := time.Parse("15:04:05.000", line[:12]); err != nil || line[13:] != want[i] {
			t.Fatalf("log line %d = %q, want time and %q", i, line, want[i])
		}
	}
}

// requestCtx returns a RequestCtx holding req, for calling the handler
// without a network.
func requestCtx(req *fasthttp.Request) *fasthttp.RequestCtx {
	var ctx fasthttp.RequestCtx
	ctx.Init(req, nil, nil)
	return &ctx
}

// FuzzDeliver checks that no body or batch header makes the handler panic,
// and that what it accepts is a consistent batch.
func FuzzDeliver(f *testing.F) {
	f.Add([]byte(newDelivery("b_1", 2).makeBody()), "b_1", "2", "1")
	f.Add([]byte(`{"batch":true,"batch_id":"b","subscriber":"s","count":1,"events":[{"id":"e","type":"t","timestamp":"x","data":null}]}`), "b", "1", "1")
	f.Add([]byte(`{"batch":true,"batch_id":"b","subscriber":"s","count":1,"events":[{"id":"e","type":"t","timestamp":"x","data":[[[{}]]]}]}`), "b", "1", "7")
	f.Add([]byte(`{"batch":true,"count":-1,"events":null}`), "", "-1", "-1")
	f.Add([]byte(`[]`), "b", "0", "x")
	f.Add([]byte{}, "", "", "")
	s := New(Options{History: 4, SeenBatches: 4})
	f.Fuzz(func(t *testing.T, body []byte, id, count, attempt string) {
		req := fasthttp.AcquireRequest()
		defer fasthttp.ReleaseRequest(req)
		req.Header.SetMethod("POST")
		req.SetRequestURI("http://sink/hooks")
		req.Header.SetContentType("application/json")
		req.Header.Set("X-Webhook-Batch", "true")
		req.Header.Set("X-Webhook-Batch-Id", id)
		req.Header.Set("webhook-id", id)
		req.Header.Set("X-Webhook-Batch-Count", count)
		req.Header.Set("X-Webhook-Attempt", attempt)
		req.SetBody(body)
		ctx := requestCtx(req)
		before := s.Stats()
		s.Handler()(ctx)
		after := s.Stats()
		switch ctx.Response.StatusCode() {
		case 200:
			var b batchBody
			if err := json.Unmarshal(body, &b); err != nil || b.BatchID != id || b.Count == nil || *b.Count != len(b.Events) || strconv.Itoa(*b.Count) != count {
				t.Fatalf("accepted %q (id %q, count %q)", body, id, count)
			}
			if after.Batches+after.DuplicateBatches != before.Batches+before.DuplicateBatches+1 {
				t.Fatalf("accepted but not counted: %+v -> %+v", before, after)
			}
		case 400:
			if after.Invalid != before.Invalid+1 {
				t.Fatalf("400 not counted: %+v -> %+v", before, after)
			}
		default:
			t.Fatalf("status %d: %s", ctx.Response.StatusCode(), ctx.Response.Body())
		}
	})
}

// TestHexSignatureDuringRotation: X-Webhook-Signature (current key only)
// must verify, except while the sender rotates keys (several v1 entries),
// when a receiver holding the previous key relies on Standard Webhooks.
func TestHexSignatureDuringRotation(t *testing.T) {
	const current, previous = "whsec_Y3VycmVudC1rZXktMDEyMzQ1Njc4OQ==", "whsec_cHJldmlvdXMta2V5LTAxMjM0NTY3ODk="
	s := mustStartSink(t, Options{Secrets: []string{previous}})
	c := newClient()
	f := func(rotating bool, want int) {
		t.Helper()
		d := newDelivery(fmt.Sprintf("b_rot_%v", rotating), 2)
		d.secret = previous
		req := d.request(t, s.URL())
		// The hex header signed with the current key, which this sink lacks.
		m := hmac.New(sha256.New, hmacKey(t, current))
		m.Write(d.makeBody())
		req.Header.Set("X-Webhook-Signature", "sha256="+hex.EncodeToString(m.Sum(nil)))
		if rotating {
			sig := string(req.Header.Peek("webhook-signature"))
			req.Header.Set("webhook-signature", "v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA= "+sig)
		}
		if st, body := do(t, c, req); st != want {
			t.Fatalf("rotating=%v: status %d (%s), want %d", rotating, st, body, want)
		}
	}
	f(false, fasthttp.StatusUnauthorized)
	f(true, fasthttp.StatusOK)
}

// batchBody is the delivered body of DESIGN §6 as encoding/json reads it,
// the fuzz test's independent oracle; pointers tell a missing field from a
// zero one.
type batchBody struct {
	Batch      *bool   `json:"batch"`
	BatchID    string  `json:"batch_id"`
	Subscriber string  `json:"subscriber"`
	Count      *int    `json:"count"`
	Events     []Event `json:"events"`
}
