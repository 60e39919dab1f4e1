package relay

import (
	"encoding/json"
	"fmt"
	"github.com/hookbatch/hookbatch/event"
	"github.com/hookbatch/hookbatch/storage"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hookbatch/hookbatch/sink"
)

// TestPipelineEveryEventOnceInOrder drives concurrent producers (single
// events and arrays) through a relay to an ordered and an unordered
// subscriber, and checks that every event arrives exactly once, byte for
// byte, in ingest order.
func TestPipelineEveryEventOnceInOrder(t *testing.T) {
	ordered := startSink(t, sink.Options{})
	unordered := startSink(t, sink.Options{})
	so := sub("ordered", ordered.URL(), 50, 50*time.Millisecond)
	so.Ordered = true
	su := sub("unordered", unordered.URL(), 100, 50*time.Millisecond)
	r := startRelay(t, testConfig(t, so, su))

	const producers, requests = 8, 60
	type sent struct {
		id   string
		data string
	}
	perProducer := make([][]sent, producers)
	var wg sync.WaitGroup
	for p := range producers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range requests {
				n := 1 + (i*7+p)%15 // 1..15 events; 1 is sent as a bare object
				datas := make([]string, n)
				parts := make([]string, n)
				for k := range n {
					// Odd spacing and escapes: data must arrive byte for byte.
					datas[k] = fmt.Sprintf(`{"p": %d,  "i":%d ,"k" :%d, "s":"caf\u00e9 \"q\""}`, p, i, k)
					parts[k] = fmt.Sprintf(`{"type":"order.created","data":%s}`, datas[k])
				}
				body := parts[0]
				if n > 1 || i%2 == 0 {
					body = "[" + strings.Join(parts, ",") + "]"
				}
				a := mustIngest(t, r, "/v1/events", body)
				if a.Accepted != n || len(a.IDs) != n {
					t.Errorf("accepted %d of %d: %+v", a.Accepted, n, a)
					return
				}
				for k, id := range a.IDs {
					perProducer[p] = append(perProducer[p], sent{id, datas[k]})
				}
			}
		}()
	}
	wg.Wait()
	want := map[string]string{}
	for _, evs := range perProducer {
		for _, e := range evs {
			want[e.id] = e.data
		}
	}
	for _, s := range []*sink.Sink{ordered, unordered} {
		waitFor(t, 30*time.Second, "every event at the sink", func() bool { return int(s.Stats().Events) >= len(want) })
	}

	for name, s := range map[string]*sink.Sink{"ordered": ordered, "unordered": unordered} {
		got := eventsOf(s)
		if len(got) != len(want) {
			t.Errorf("%s: %d distinct events, want %d", name, len(got), len(want))
		}
		for id, n := range got {
			if n != 1 {
				t.Errorf("%s: event %s delivered %d times", name, id, n)
			}
		}
		for _, e := range s.Events() {
			if want[e.ID] != string(e.Data) {
				t.Fatalf("%s: event %s data %s, want %s", name, e.ID, e.Data, want[e.ID])
			}
		}
		for _, b := range s.Batches() {
			if b.Count > 100 || b.Count != len(b.Events) {
				t.Errorf("%s: batch %s has count %d and %d events", name, b.ID, b.Count, len(b.Events))
			}
		}
	}

	// Ordered: across batches, each producer's events arrive in the order
	// they were accepted. Unordered: within each batch.
	pos := map[string]int{}
	for _, evs := range perProducer {
		for i, e := range evs {
			pos[e.id] = i
		}
	}
	checkOrder := func(name string, events []sink.Event) {
		last := map[string]int{}
		for _, e := range events {
			var d struct{ P int }
			if err := json.Unmarshal(e.Data, &d); err != nil {
				t.Fatal(err)
			}
			key := fmt.Sprint(d.P)
			if prev, ok := last[key]; ok && pos[e.ID] <= prev {
				t.Fatalf("%s: producer %d's event %s arrived out of order", name, d.P, e.ID)
			}
			last[key] = pos[e.ID]
		}
	}
	checkOrder("ordered", ordered.Events())
	for _, b := range unordered.Batches() {
		checkOrder("unordered batch "+b.ID, b.Events)
	}
	if d := metricValue(t, r, `hookbatch_queue_events{subscriber="ordered"}`); d != 0 {
		waitFor(t, 5*time.Second, "queue gauge back to 0", func() bool {
			return metricValue(t, r, `hookbatch_queue_events{subscriber="ordered"}`) == 0
		})
	}
}

func TestFlushTriggers(t *testing.T) {
	s := startSink(t, sink.Options{})
	byEvents := sub("events", s.URL()+"?sub=events", 10, time.Hour)
	byEvents.EventTypes = []string{"ev.*"}
	byBytes := sub("bytes", s.URL()+"?sub=bytes", 1000, time.Hour)
	byBytes.Batch.MaxBytes = 2048
	byBytes.EventTypes = []string{"by.*"}
	byWait := sub("wait", s.URL()+"?sub=wait", 100, 100*time.Millisecond)
	byWait.EventTypes = []string{"wa.*"}
	r := startRelay(t, testConfig(t, byEvents, byBytes, byWait))

	events := func(typ string, n, dataLen int) string {
		parts := make([]string, n)
		for i := range parts {
			parts[i] = fmt.Sprintf(`{"type":%q,"data":"%s"}`, typ, strings.Repeat("x", dataLen))
		}
		return "[" + strings.Join(parts, ",") + "]"
	}
	mustIngest(t, r, "/v1/events", events("ev.x", 30, 10))
	mustIngest(t, r, "/v1/events", events("by.x", 40, 200))
	mustIngest(t, r, "/v1/events", events("wa.x", 3, 10))

	count := func(subID string) (batches, events int, maxBody int) {
		for _, b := range s.Batches() {
			if b.Subscriber == subID {
				batches++
				events += b.Count
				maxBody = max(maxBody, len(b.Body))
			}
		}
		return
	}
	waitFor(t, 10*time.Second, "30 events in 3 batches of 10", func() bool { b, e, _ := count("events"); return b == 3 && e == 30 })
	waitFor(t, 10*time.Second, "3 events after max_wait", func() bool { b, e, _ := count("wait"); return b == 1 && e == 3 })
	// 40 events of ~300 bytes do not fit in 2 KiB batches: several full
	// batches flush by bytes; the rest stays until max_wait (an hour).
	waitFor(t, 10*time.Second, "batches flushed by bytes", func() bool {
		return metricValue(t, r, `hookbatch_batches_flushed_total{subscriber="bytes",reason="bytes"}`) >= 5
	})
	waitFor(t, 10*time.Second, "byte-flushed batches delivered", func() bool {
		b, _, _ := count("bytes")
		return float64(b) == metricValue(t, r, `hookbatch_batches_delivered_total{subscriber="bytes"}`) && b >= 5
	})
	_, e, maxBody := count("bytes")
	if maxBody > 2048 || maxBody == 0 {
		t.Errorf("largest body of the bytes subscriber is %d bytes, want 1..2048", maxBody)
	}
	if e >= 40 {
		t.Errorf("bytes subscriber got %d events; the last partial batch should wait", e)
	}
	for series, want := range map[string]float64{
		`hookbatch_batches_flushed_total{subscriber="events",reason="events"}`: 3,
		`hookbatch_batches_flushed_total{subscriber="wait",reason="wait"}`:     1,
		`hookbatch_batches_flushed_total{subscriber="events",reason="wait"}`:   0,
	} {
		if got := metricValue(t, r, series); got != want {
			t.Errorf("%s = %v, want %v", series, got, want)
		}
	}
}

func TestDedup(t *testing.T) {
	s := startSink(t, sink.Options{})
	r := startRelay(t, testConfig(t, sub("a", s.URL(), 100, 50*time.Millisecond)))

	a := mustIngest(t, r, "/v1/events", `[{"id":"e1","type":"t","data":1},{"id":"e1","type":"t","data":2},{"id":"e2","type":"t","data":3}]`)
	if a.Accepted != 2 || a.Duplicates != 1 || strings.Join(a.IDs, ",") != "e1,e1,e2" {
		t.Fatalf("answer %+v", a)
	}
	a = mustIngest(t, r, "/v1/events", `{"id":"e2","type":"t","data":4}`)
	if a.Accepted != 0 || a.Duplicates != 1 {
		t.Fatalf("resent e2: %+v", a)
	}
	a = mustIngest(t, r, "/v1/events", `{"type":"t","data":5}`, "Idempotency-Key", "k1")
	if a.Accepted != 1 || a.IDs[0] != "k1" {
		t.Fatalf("idempotency key: %+v", a)
	}
	a = mustIngest(t, r, "/v1/subscribers/a/events", `{"type":"t","data":6}`, "Idempotency-Key", "k1")
	if a.Duplicates != 1 {
		t.Fatalf("idempotency key again: %+v", a)
	}
	// An id the relay assigned to a routed event is marked too: sent back,
	// it is a duplicate.
	a = mustIngest(t, r, "/v1/events", `{"type":"t","data":7}`)
	if a.Accepted != 1 || len(a.IDs) != 1 || !strings.HasPrefix(a.IDs[0], "evt_") {
		t.Fatalf("event without id: %+v", a)
	}
	assigned := a.IDs[0]
	a = mustIngest(t, r, "/v1/events", `{"id":"`+assigned+`","type":"t","data":7}`)
	if a.Accepted != 0 || a.Duplicates != 1 {
		t.Fatalf("assigned id %s sent back: %+v", assigned, a)
	}
	waitFor(t, 10*time.Second, "4 events", func() bool { return s.Stats().Events >= 4 })
	got := eventsOf(s)
	if len(got) != 4 || got["e1"] != 1 || got["e2"] != 1 || got["k1"] != 1 || got[assigned] != 1 {
		t.Fatalf("delivered %v", got)
	}
	for _, e := range s.Events() {
		if e.ID == "e1" && string(e.Data) != "1" {
			t.Fatalf("e1 carries %s: the first copy must win", e.Data)
		}
	}
	if v := metricValue(t, r, "hookbatch_events_duplicate_total"); v != 4 {
		t.Errorf("duplicates metric %v, want 4", v)
	}
}

// A producer's id is looked up even behind an unrouted event whose id the
// relay assigned (fresh ids are told apart by event, not by routed item).
func TestDedupBehindUnrouted(t *testing.T) {
	cfg := testConfig(t, sub("a", "http://127.0.0.1:1/hooks", 100, time.Hour))
	cfg.Subscribers[0].EventTypes = []string{"order.*"}
	r := startRelay(t, cfg)
	body := `[{"type":"user.created","data":1},{"id":"o-1","type":"order.created","data":2}]`
	if a := mustIngest(t, r, "/v1/events", body); a.Accepted != 1 || a.Unrouted != 1 {
		t.Fatalf("first: %+v", a)
	}
	if a := mustIngest(t, r, "/v1/events", body); a.Accepted != 0 || a.Duplicates != 1 || a.Unrouted != 1 {
		t.Fatalf("sent again: %+v, want o-1 a duplicate", a)
	}
}

func TestIngestErrors(t *testing.T) {
	cfg := testConfig(t, sub("a", "http://127.0.0.1:1/hooks", 100, time.Second))
	cfg.Subscribers[0].EventTypes = []string{"order.*"}
	cfg.Ingest.MaxBodyBytes = 4096
	cfg.Ingest.MaxEventsPerRequest = 5
	r := startRelay(t, cfg)
	base := "http://" + r.IngestAddr()
	deep := strings.Repeat("[", 129) + strings.Repeat("]", 129)
	f := func(method, path, body string, want int, wantErr string, headers ...string) {
		t.Helper()
		status, resp := do(t, method, base+path, body, headers...)
		if status != want {
			t.Fatalf("%s %s %q: status %d, want %d (%s)", method, path, body, status, want, resp)
		}
		var e struct{ Error string }
		if err := json.Unmarshal([]byte(resp), &e); err != nil || !strings.Contains(e.Error, wantErr) {
			t.Fatalf("%s %s %q: body %q, want a JSON error containing %q", method, path, body, resp, wantErr)
		}
	}
	ok := `{"type":"order.created","data":{}}`
	f("POST", "/v1/events", `{"type":"order.created"`, 400, "invalid JSON")
	f("POST", "/v1/events", `{"data":1}`, 400, `"type"`)
	f("POST", "/v1/events", `[`+ok+`,{"type":"order.x"}]`, 400, "event 1")
	f("POST", "/v1/events", `[]`, 400, "empty")
	f("POST", "/v1/events", `{"type":"order.x","data":`+deep+`}`, 400, "deep")
	f("POST", "/v1/events", `{"type":"order.x","data":1,"extra":2}`, 400, "extra")
	f("POST", "/v1/nope", ok, 404, "not found")
	f("POST", "/v1/subscribers/zzz/events", ok, 404, "unknown subscriber")
	f("GET", "/v1/events", "", 405, "POST")
	f("PUT", "/v1/subscribers/a/events", ok, 405, "POST")
	f("POST", "/v1/events", `{"type":"order.x","data":"`+strings.Repeat("x", 5000)+`"}`, 413, "max_body_bytes")
	f("POST", "/v1/events", "["+strings.Repeat(ok+",", 5)+ok+"]", 413, "max_events_per_request")
	f("POST", "/v1/events", ok, 415, "Content-Type", "Content-Type", "text/plain")
	f("POST", "/v1/events", `{"type":"invoice.paid","data":{}}`, 422, "no event matches")
	f("POST", "/v1/events", `[`+ok+`,`+ok+`]`, 400, "Idempotency-Key", "Idempotency-Key", "k")
	// A key is an event id: the rules of "id" hold for it too.
	f("POST", "/v1/events", ok, 400, "Idempotency-Key must not contain control characters", "Idempotency-Key", "a\tb")
	f("POST", "/v1/events", ok, 400, "Idempotency-Key must be valid UTF-8", "Idempotency-Key", "a\xffb")
	f("POST", "/v1/events", ok, 400, "Idempotency-Key must be 1-256 bytes", "Idempotency-Key", strings.Repeat("k", 257))

	// The targeted path ignores event_types; unrouted events are counted.
	a := mustIngest(t, r, "/v1/subscribers/a/events", `{"type":"invoice.paid","data":{}}`)
	if a.Accepted != 1 {
		t.Fatalf("targeted: %+v", a)
	}
	a = mustIngest(t, r, "/v1/events", `[`+ok+`,{"type":"invoice.paid","data":{}}]`, "Content-Type", "application/json; charset=utf-8")
	if a.Accepted != 1 || a.Unrouted != 1 || len(a.IDs) != 2 {
		t.Fatalf("partly routed: %+v", a)
	}

	// Nothing of a rejected request was stored: only the 2 accepted events.
	if d := r.subs[0].q.Depth(); d != 2 {
		t.Fatalf("queue holds %d events, want 2", d)
	}
	if v := metricValue(t, r, `hookbatch_ingest_requests_total{code="400"}`); v != 10 {
		t.Errorf("400 counter %v, want 10", v)
	}

	r.closing.Store(true)
	status, _ := post(t, base+"/v1/events", ok)
	if status != 503 {
		t.Fatalf("while shutting down: %d, want 503", status)
	}
	r.closing.Store(false)
}

func TestMatchType(t *testing.T) {
	f := func(p, typ string, want bool) {
		t.Helper()
		if got := matchType(p, []byte(typ)); got != want {
			t.Fatalf("matchType(%q, %q) = %v", p, typ, got)
		}
	}
	f("order.*", "order.created", true)
	f("order.*", "order.a.b", true)
	// A literal '*' in the type: the pattern's '*' still matches any run.
	f("*", "*x", true)
	f("*.created", "*a.created", true)
	f("a*c", "a*bc", true)
	f("order.*", "orders.created", false)
	f("*", "", true)
	f("*.created", "order.created", true)
	f("a?c", "abc", true)
	f("a?c", "ac", false)
	f("order.created", "order.created", true)
	f("order.created", "order.create", false)
	f("*a*b*c", "xxaxxbxxc", true)
	f("*a*b*c", "xxaxxbxx", false)
}

// TestMaxWaitAfterClockStepBack: a batch waits max_wait at most from when
// its first event was read, on the monotonic clock, whatever its events'
// receive times say: here an event received "an hour ahead", as after the
// wall clock stepped back an hour.
func TestMaxWaitAfterClockStepBack(t *testing.T) {
	s := startSink(t, sink.Options{})
	r := startRelay(t, testConfig(t, sub("s", s.URL(), 100, 200*time.Millisecond)))
	q, err := r.store.Queue("s")
	if err != nil {
		t.Fatal(err)
	}
	ev := &event.Event{ID: []byte("e1"), Type: []byte("t"), Timestamp: []byte("2026-01-01T00:00:00Z"), Data: []byte("1")}
	rec := event.AppendRecord(nil, ev, time.Now().Add(time.Hour).UnixNano())
	if err := r.store.Append([]storage.AppendItem{{Record: rec, Queues: []*storage.Queue{q}}}, make([]bool, 1)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "the lone event delivered after max_wait, not an hour", func() bool { return len(s.Events()) == 1 })
}
