package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hookbatch/hookbatch/signing"
)

// testSecret is the Standard Webhooks test vector secret, as a hookbatch
// subscriber would have it in its config.
const testSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

// batchBody returns a delivered body of DESIGN §6 holding n events.
func batchBody(id string, n int) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, `{"batch":true,"batch_id":%q,"subscriber":"orders","count":%d,"events":[`, id, n)
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `{"id":"evt_%d","type":"order.created","timestamp":"2026-12-03T10:00:00Z","data":{"n": %d, "s":"caf\u00e9"}}`, i, i)
	}
	b.WriteString("]}")
	return b.Bytes()
}

// signedRequest returns a delivery of body as hookbatch makes it (relay
// delivery headers, both signature schemes) for attempt, signed with
// secret and previous secrets at time ts.
func signedRequest(t *testing.T, url, id string, attempt int, body []byte, ts time.Time, secret string, previous ...string) *http.Request {
	t.Helper()
	s, err := signing.NewSigner(secret, previous)
	if err != nil {
		t.Fatal(err)
	}
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	var count int
	var parsed struct {
		Count int `json:"count"`
	}
	if json.Unmarshal(body, &parsed) == nil {
		count = parsed.Count
	}
	h := req.Header
	h.Set("Content-Type", "application/json")
	h.Set("User-Agent", "hookbatch/test")
	h.Set("X-Webhook-Batch", "true")
	h.Set("X-Webhook-Batch-Id", id)
	h.Set("X-Webhook-Batch-Count", strconv.Itoa(count))
	h.Set("X-Webhook-Attempt", strconv.Itoa(attempt))
	h.Set("X-Webhook-Signature", string(s.AppendHex(nil, body)))
	h.Set("webhook-id", id)
	h.Set("webhook-timestamp", strconv.FormatInt(ts.Unix(), 10))
	h.Set("webhook-signature", string(s.AppendStandard(nil, []byte(id), ts.Unix(), body)))
	return req
}

// recorder is a ProcessFunc counting what it processed.
type recorder struct {
	mu      sync.Mutex
	batches []*Batch
	calls   atomic.Int64
	fail    atomic.Int64 // fail this many more calls
	block   chan struct{}
}

func (rec *recorder) process(ctx context.Context, b *Batch) error {
	rec.calls.Add(1)
	if rec.block != nil {
		select {
		case <-rec.block:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if rec.fail.Add(-1) >= 0 {
		return errors.New("database unavailable")
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	rec.batches = append(rec.batches, b)
	return nil
}

func (rec *recorder) processed() []*Batch {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	return append([]*Batch(nil), rec.batches...)
}

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// newServer runs a Receiver for secret over real HTTP.
func newServer(t *testing.T, secret string, rec *recorder) string {
	t.Helper()
	rc, err := NewReceiver(Options{Secret: secret, Process: rec.process, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(rc)
	t.Cleanup(srv.Close)
	return srv.URL + "/hooks"
}

type answer struct {
	status int
	body   string
}

func send(t *testing.T, req *http.Request) answer {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return answer{resp.StatusCode, string(b)}
}

func wantStatus(t *testing.T, a answer, status int, what string) {
	t.Helper()
	if a.status != status {
		t.Fatalf("%s: status %d (%s), want %d", what, a.status, a.body, status)
	}
}

func TestValidBatchProcessedOnce(t *testing.T) {
	rec := &recorder{}
	url := newServer(t, testSecret, rec)
	body := batchBody("b_01JVALID", 3)
	a := send(t, signedRequest(t, url, "b_01JVALID", 1, body, time.Now(), testSecret))
	wantStatus(t, a, http.StatusOK, "valid batch")
	if a.body != `{"received":3,"duplicate":false}`+"\n" {
		t.Fatalf("answer %q", a.body)
	}
	got := rec.processed()
	if len(got) != 1 {
		t.Fatalf("processed %d batches, want 1", len(got))
	}
	b := got[0]
	if b.BatchID != "b_01JVALID" || b.Subscriber != "orders" || b.Count != 3 || len(b.Events) != 3 || b.Attempt != 1 {
		t.Fatalf("processed %+v", b)
	}
	// data is the producer's JSON byte for byte.
	if d := string(b.Events[2].Data); d != `{"n": 2, "s":"caf\u00e9"}` {
		t.Fatalf("events[2].data = %s", d)
	}
	if b.Events[0].Timestamp != time.Date(2026, 12, 3, 10, 0, 0, 0, time.UTC) {
		t.Fatalf("events[0].timestamp = %v", b.Events[0].Timestamp)
	}
}

func TestDuplicateBatchNotProcessedAgain(t *testing.T) {
	rec := &recorder{}
	url := newServer(t, testSecret, rec)
	body := batchBody("b_01JDUP", 2)
	wantStatus(t, send(t, signedRequest(t, url, "b_01JDUP", 1, body, time.Now(), testSecret)), http.StatusOK, "first delivery")
	// A retry: same batch id and body, later attempt, new timestamp and
	// signature.
	for attempt := 2; attempt <= 3; attempt++ {
		a := send(t, signedRequest(t, url, "b_01JDUP", attempt, body, time.Now().Add(time.Second), testSecret))
		wantStatus(t, a, http.StatusOK, "duplicate delivery")
		if a.body != `{"received":2,"duplicate":true}`+"\n" {
			t.Fatalf("duplicate answer %q", a.body)
		}
	}
	if n := len(rec.processed()); n != 1 {
		t.Fatalf("processed %d times, want 1", n)
	}
	// The halves of a split batch (413) have ids of their own.
	wantStatus(t, send(t, signedRequest(t, url, "b_01JDUP.1", 1, batchBody("b_01JDUP.1", 1), time.Now(), testSecret)), http.StatusOK, "split half")
	if n := len(rec.processed()); n != 2 {
		t.Fatalf("processed %d batches after a split half, want 2", n)
	}
}

func TestTamperedBodyRefused(t *testing.T) {
	rec := &recorder{}
	url := newServer(t, testSecret, rec)
	body := batchBody("b_01JTAMPER", 2)
	req := signedRequest(t, url, "b_01JTAMPER", 1, body, time.Now(), testSecret)
	tampered := bytes.Replace(body, []byte(`"n": 1`), []byte(`"n": 9`), 1)
	if bytes.Equal(tampered, body) {
		t.Fatal("test body not tampered")
	}
	req.Body = io.NopCloser(bytes.NewReader(tampered))
	a := send(t, req)
	if a.status != http.StatusUnauthorized && a.status != http.StatusBadRequest {
		t.Fatalf("tampered body: status %d (%s), want 401 or 400", a.status, a.body)
	}
	// A changed webhook-id (the signed message id) is refused too.
	req = signedRequest(t, url, "b_01JTAMPER", 1, body, time.Now(), testSecret)
	req.Header.Set("webhook-id", "b_01JOTHER")
	wantStatus(t, send(t, req), http.StatusUnauthorized, "changed webhook-id")
	if rec.calls.Load() != 0 {
		t.Fatalf("processed a tampered batch")
	}
}

func TestWrongSecretRefused(t *testing.T) {
	rec := &recorder{}
	url := newServer(t, testSecret, rec)
	body := batchBody("b_01JWRONG", 1)
	wantStatus(t, send(t, signedRequest(t, url, "b_01JWRONG", 1, body, time.Now(), "whsec_c29tZW9uZSBlbHNlJ3Mga2V5")), http.StatusUnauthorized, "other whsec_ secret")
	wantStatus(t, send(t, signedRequest(t, url, "b_01JWRONG", 1, body, time.Now(), "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")), http.StatusUnauthorized, "base64 part used as a raw secret")
	if rec.calls.Load() != 0 {
		t.Fatalf("processed a batch signed with another secret")
	}
	// The same batch with the right secret is then processed: refusals are
	// not remembered as processed.
	wantStatus(t, send(t, signedRequest(t, url, "b_01JWRONG", 1, body, time.Now(), testSecret)), http.StatusOK, "right secret")
	if rec.calls.Load() != 1 {
		t.Fatalf("processed %d times, want 1", rec.calls.Load())
	}
}

func TestStaleOrMissingSignatureRefused(t *testing.T) {
	rec := &recorder{}
	url := newServer(t, testSecret, rec)
	body := batchBody("b_01JSTALE", 1)
	wantStatus(t, send(t, signedRequest(t, url, "b_01JSTALE", 1, body, time.Now().Add(-10*time.Minute), testSecret)), http.StatusUnauthorized, "10-minute-old timestamp")
	wantStatus(t, send(t, signedRequest(t, url, "b_01JSTALE", 1, body, time.Now().Add(10*time.Minute), testSecret)), http.StatusUnauthorized, "timestamp 10 minutes ahead")
	req := signedRequest(t, url, "b_01JSTALE", 1, body, time.Now(), testSecret)
	req.Header.Del("webhook-signature")
	wantStatus(t, send(t, req), http.StatusUnauthorized, "no webhook-signature")
	if rec.calls.Load() != 0 {
		t.Fatalf("processed a refused batch")
	}
}

// A secret without the whsec_ prefix is the key's own bytes in hookbatch;
// NewWebhook picks standardwebhooks.NewWebhookRaw for it.
func TestRawSecret(t *testing.T) {
	const raw = "plain-secret-not-base64!"
	rec := &recorder{}
	url := newServer(t, raw, rec)
	wantStatus(t, send(t, signedRequest(t, url, "b_01JRAW", 1, batchBody("b_01JRAW", 1), time.Now(), raw)), http.StatusOK, "raw secret")
	if len(rec.processed()) != 1 {
		t.Fatal("not processed")
	}
}

// During a key rotation hookbatch signs with the new and the previous
// secrets; a receiver still on the previous one accepts the batch.
func TestKeyRotation(t *testing.T) {
	const next = "whsec_bmV4dC1rZXktZm9yLXJvdGF0aW9u"
	rec := &recorder{}
	url := newServer(t, testSecret, rec)
	wantStatus(t, send(t, signedRequest(t, url, "b_01JROT", 1, batchBody("b_01JROT", 1), time.Now(), next, testSecret)), http.StatusOK, "rotated signature")
}

func TestProcessFailureRetried(t *testing.T) {
	rec := &recorder{}
	rec.fail.Store(1)
	url := newServer(t, testSecret, rec)
	body := batchBody("b_01JFAIL", 2)
	wantStatus(t, send(t, signedRequest(t, url, "b_01JFAIL", 1, body, time.Now(), testSecret)), http.StatusInternalServerError, "failed processing")
	wantStatus(t, send(t, signedRequest(t, url, "b_01JFAIL", 2, body, time.Now(), testSecret)), http.StatusOK, "retry")
	if n := len(rec.processed()); n != 1 || rec.calls.Load() != 2 {
		t.Fatalf("processed %d (calls %d), want 1 (calls 2)", n, rec.calls.Load())
	}
	wantStatus(t, send(t, signedRequest(t, url, "b_01JFAIL", 3, body, time.Now(), testSecret)), http.StatusOK, "duplicate")
	if rec.calls.Load() != 2 {
		t.Fatalf("duplicate processed again")
	}
}

func TestProcessPanicRetried(t *testing.T) {
	var calls atomic.Int64
	rc, err := NewReceiver(Options{Secret: testSecret, Logger: quietLogger(), Process: func(context.Context, *Batch) error {
		if calls.Add(1) == 1 {
			panic("bug")
		}
		return nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(rc)
	defer srv.Close()
	body := batchBody("b_01JPANIC", 1)
	wantStatus(t, send(t, signedRequest(t, srv.URL, "b_01JPANIC", 1, body, time.Now(), testSecret)), http.StatusInternalServerError, "panicking processing")
	wantStatus(t, send(t, signedRequest(t, srv.URL, "b_01JPANIC", 2, body, time.Now(), testSecret)), http.StatusOK, "retry")
	if calls.Load() != 2 {
		t.Fatalf("process called %d times, want 2", calls.Load())
	}
}

// Deliveries of one batch that overlap (hookbatch retries after a timeout
// while the first is still being processed) process it once.
func TestConcurrentDuplicatesProcessedOnce(t *testing.T) {
	rec := &recorder{block: make(chan struct{})}
	url := newServer(t, testSecret, rec)
	body := batchBody("b_01JCONC", 2)
	const n = 8
	answers := make(chan answer, n)
	for i := range n {
		req := signedRequest(t, url, "b_01JCONC", i+1, body, time.Now(), testSecret)
		go func() {
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				answers <- answer{0, err.Error()}
				return
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			answers <- answer{resp.StatusCode, string(b)}
		}()
	}
	deadline := time.Now().Add(5 * time.Second)
	for rec.calls.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond) // let the others reach the receiver
	close(rec.block)
	dups := 0
	for range n {
		a := <-answers
		wantStatus(t, a, http.StatusOK, "concurrent delivery")
		if a.body == `{"received":2,"duplicate":true}`+"\n" {
			dups++
		}
	}
	if rec.calls.Load() != 1 || dups != n-1 {
		t.Fatalf("process called %d times, %d duplicates; want 1 and %d", rec.calls.Load(), dups, n-1)
	}
}

func TestMalformedDeliveries(t *testing.T) {
	rec := &recorder{}
	rc, err := NewReceiver(Options{Secret: testSecret, Process: rec.process, Logger: quietLogger(), MaxBodyBytes: 4096})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(rc)
	defer srv.Close()
	url := srv.URL + "/hooks"

	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("Allow") != "POST" {
		t.Fatalf("GET: %d Allow %q", resp.StatusCode, resp.Header.Get("Allow"))
	}
	// Over the body limit: 413, so that hookbatch splits the batch.
	wantStatus(t, send(t, signedRequest(t, url, "b_01JBIG", 1, batchBody("b_01JBIG", 100), time.Now(), testSecret)), http.StatusRequestEntityTooLarge, "large batch")
	// Signed, but body and headers disagree.
	body := batchBody("b_01JBODY", 1)
	req := signedRequest(t, url, "b_01JOTHER", 1, body, time.Now(), testSecret)
	wantStatus(t, send(t, req), http.StatusBadRequest, "webhook-id differs from batch_id")
	bad := []byte(`{"batch":true,"batch_id":"b_1","count":2,"events":[]}`)
	wantStatus(t, send(t, signedRequest(t, url, "b_1", 1, bad, time.Now(), testSecret)), http.StatusBadRequest, "count mismatch")
	wantStatus(t, send(t, signedRequest(t, url, "b_1", 1, []byte(`not json`), time.Now(), testSecret)), http.StatusBadRequest, "not JSON")
	if rec.calls.Load() != 0 {
		t.Fatal("processed a malformed delivery")
	}
}

func TestNewReceiverErrors(t *testing.T) {
	p := func(context.Context, *Batch) error { return nil }
	for _, o := range []Options{
		{Secret: "", Process: p},
		{Secret: "whsec_!!!not-base64", Process: p},
		{Secret: "whsec_", Process: p},
		{Secret: testSecret},
	} {
		_, err := NewReceiver(o)
		if err == nil {
			t.Errorf("NewReceiver(secret %q, process %v): no error", o.Secret, o.Process != nil)
		} else if strings.Contains(err.Error(), "not-base64") {
			t.Errorf("error %q holds the secret", err)
		}
	}
}

func TestDedupWindowAndCap(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	d := newDedup(time.Hour, 2, func() time.Time { return now })
	ctx := context.Background()
	mark := func(id string) {
		t.Helper()
		first, err := d.begin(ctx, id)
		if err != nil || !first {
			t.Fatalf("begin(%s) = %v, %v; want first", id, first, err)
		}
		d.end(id, true)
	}
	seen := func(id string) bool {
		t.Helper()
		first, err := d.begin(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if first {
			d.end(id, false)
		}
		return !first
	}
	mark("a")
	now = now.Add(30 * time.Minute)
	mark("b")
	if !seen("a") || !seen("b") {
		t.Fatal("forgot an id within the window")
	}
	now = now.Add(31 * time.Minute)
	if seen("a") || !seen("b") {
		t.Fatal("a should have expired, b not")
	}
	mark("c")
	mark("d") // cap 2: b goes
	if seen("b") || !seen("c") || !seen("d") {
		t.Fatal("cap not applied oldest first")
	}
	// A waiter gives up when its context ends.
	first, _ := d.begin(ctx, "e")
	if !first {
		t.Fatal("e seen")
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := d.begin(cctx, "e"); !errors.Is(err, context.Canceled) {
		t.Fatalf("begin while in progress with a cancelled context: %v", err)
	}
	d.end("e", true)
	if !seen("e") {
		t.Fatal("e not remembered")
	}
}
