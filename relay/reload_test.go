package relay

import (
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hookbatch/hookbatch/config"
	"github.com/hookbatch/hookbatch/sink"
	"github.com/valyala/fasthttp"
)

// TestReloadAddsChangesAndDrainsSubscribers reloads subscribers while
// events flow and checks none is lost: an added subscriber gets new
// events, a changed one keeps its queue, a removed one delivers what it
// had queued (its subscriber was down at the removal) and then disappears.
func TestReloadAddsChangesAndDrainsSubscribers(t *testing.T) {
	sinkB := startSink(t, sink.Options{})
	// a's subscriber is down until later: reserve its address.
	addrA := deadAddr(t)

	subA := sub("a", "http://"+addrA+"/hooks", 10, 20*time.Millisecond)
	cfg := testConfig(t, subA)
	r := startRelay(t, cfg)
	send := func(n int, tag string) []string {
		var ids []string
		for i := range n {
			a := mustIngest(t, r, "/v1/events", fmt.Sprintf(`{"type":"t","data":"%s-%d"}`, tag, i))
			ids = append(ids, a.IDs...)
		}
		return ids
	}
	forA := send(30, "one")

	// Add b.
	subB := sub("b", sinkB.URL(), 10, 20*time.Millisecond)
	cfg.Subscribers = []config.Subscriber{subA, subB}
	if err := r.Reload(cfg); err != nil {
		t.Fatal(err)
	}
	both := send(30, "two")
	forA = append(forA, both...)
	waitFor(t, 10*time.Second, "b gets the events sent after it was added", func() bool { return sinkB.Stats().Events == 30 })

	// Change b (smaller batches) and remove a, whose subscriber is still down.
	subB.Batch.MaxEvents = 3
	cfg.Subscribers = []config.Subscriber{subB}
	if err := r.Reload(cfg); err != nil {
		t.Fatal(err)
	}
	onlyB := send(30, "three")
	if st, _ := post(t, "http://"+r.IngestAddr()+"/v1/subscribers/a/events", `{"type":"t","data":1}`); st != 404 {
		t.Fatalf("targeted ingest to a removed subscriber: %d, want 404", st)
	}
	if s := r.subscriber("a"); s == nil || !s.view().Draining {
		t.Fatal("a removed subscriber with queued events should be draining")
	}
	waitFor(t, 10*time.Second, "b gets every event after the change", func() bool { return sinkB.Stats().Events == 60 })

	// a's subscriber comes back: a drains, then disappears.
	sinkA := sink.New(sink.Options{Secrets: []string{testSecret}, KeepEvents: true})
	if err := sinkA.Start(addrA); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sinkA.Close() })
	waitFor(t, 30*time.Second, "a drains its queue", func() bool { return sinkA.Stats().Events >= int64(len(forA)) })
	waitFor(t, 10*time.Second, "a to disappear", func() bool { return r.subscriber("a") == nil })
	got := eventsOf(sinkA)
	for _, id := range forA {
		if got[id] != 1 {
			t.Fatalf("event %s reached a %d times", id, got[id])
		}
	}
	for _, id := range onlyB {
		if got[id] != 0 {
			t.Fatalf("event %s sent after a's removal reached a", id)
		}
	}
	for _, b := range sinkB.Batches() {
		if b.Count > 10 {
			t.Fatalf("b batch of %d events", b.Count)
		}
	}
}

// TestReloadRejectsBadSubscriber keeps the running set when a new
// subscriber cannot be built.
func TestReloadRejectsBadSubscriber(t *testing.T) {
	s := startSink(t, sink.Options{})
	cfg := testConfig(t, sub("a", s.URL(), 10, 20*time.Millisecond))
	r := startRelay(t, cfg)
	bad := sub("b", s.URL(), 10, time.Second)
	bad.Secret = "whsec_!!!not-base64"
	cfg.Subscribers = append(cfg.Subscribers, bad)
	if err := r.Reload(cfg); err == nil {
		t.Fatal("a subscriber with a bad secret was accepted")
	}
	if r.subscriber("b") != nil || len(r.routes.Load().list) != 1 {
		t.Fatal("a rejected reload changed the subscribers")
	}
	mustIngest(t, r, "/v1/events", `{"type":"t","data":1}`)
	waitFor(t, 10*time.Second, "delivery after a rejected reload", func() bool { return s.Stats().Events == 1 })
}

// TestReloadKeepsPause: a paused subscriber changed by a reload stays
// paused, with its reason, until it is resumed; then its events go out.
func TestReloadKeepsPause(t *testing.T) {
	snk := startSink(t, sink.Options{})
	a := sub("a", snk.URL(), 10, 5*time.Millisecond)
	cfg := testConfig(t, a)
	r := startRelay(t, cfg)
	admin := "http://" + r.AdminAddr() + "/v1/subscribers/a/"
	if st, body := post(t, admin+"pause", ""); st != 200 {
		t.Fatalf("pause: %d %s", st, body)
	}
	before := r.subscriber("a")
	want := before.view().PauseReason

	a.Batch.MaxEvents = 5
	cfg.Subscribers = []config.Subscriber{a}
	if err := r.Reload(cfg); err != nil {
		t.Fatal(err)
	}
	after := r.subscriber("a")
	if after == before {
		t.Fatal("the reload did not replace the changed subscriber")
	}
	if v := after.view(); !v.Paused || v.PauseReason != want {
		t.Fatalf("after the reload: paused %v (%q), want paused (%q)", v.Paused, v.PauseReason, want)
	}
	mustIngest(t, r, "/v1/events", `{"type":"t","data":1}`)
	if st, body := post(t, admin+"resume", ""); st != 200 {
		t.Fatalf("resume: %d %s", st, body)
	}
	waitFor(t, 10*time.Second, "the event delivered after the resume", func() bool { return snk.Stats().Events == 1 })
}

// TestPauseRacingReload: pauses and resumes through the admin API while
// reloads replace the subscriber. However they interleave (one may reach
// the subscriber being replaced), the one in force ends paused exactly
// when storage says so.
func TestPauseRacingReload(t *testing.T) {
	a := sub("a", downURL(t), 10, 5*time.Millisecond)
	cfg := testConfig(t, a)
	r := startRelay(t, cfg)
	admin := "http://" + r.AdminAddr() + "/v1/subscribers/a/"
	for i := range 100 {
		var stop atomic.Bool
		var wg sync.WaitGroup
		for g := range 4 {
			wg.Go(func() {
				for k := 0; !stop.Load(); k++ {
					op := "pause"
					if (k+g)%2 == 1 {
						op = "resume"
					}
					code, body, err := fasthttp.Post(nil, admin+op, nil)
					if err != nil || code != fasthttp.StatusOK {
						t.Errorf("%s: %d %s %v", op, code, body, err)
						return
					}
				}
			})
		}
		a.Headers = map[string]string{"X-N": fmt.Sprint(i)} // a change: the subscriber is replaced
		cfg.Subscribers = []config.Subscriber{a}
		err := r.Reload(cfg)
		stop.Store(true)
		wg.Wait()
		if err != nil {
			t.Fatal(err)
		}
		inForce, _, _ := r.subscriber("a").paused.get()
		stored, err := r.store.Paused()
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := stored["a"]; inForce != ok {
			t.Fatalf("reload %d: the subscriber in force paused %v, storage paused %v", i, inForce, ok)
		}
	}
}

// TestReloadRefusesFanOutBeyondStore: a reload adding so many subscribers
// that a request of the most events, fanned out to all, would no longer
// fit the store's transactions (sized at start) is refused, saying a
// restart applies it, and the running subscribers stay; a smaller one is
// applied.
func TestReloadRefusesFanOutBeyondStore(t *testing.T) {
	snk := startSink(t, sink.Options{})
	cfg := testConfig(t, sub("a", snk.URL(), 10, 5*time.Millisecond))
	r := startRelay(t, cfg)
	// An event of n subscribers writes 3 + n entries.
	most := r.store.MaxEntries()/cfg.Ingest.MaxEventsPerRequest - 3
	many := cfg
	many.Subscribers = nil
	for i := range most + 1 {
		many.Subscribers = append(many.Subscribers, sub(fmt.Sprint("s", i), snk.URL(), 10, 5*time.Millisecond))
	}
	err := r.Reload(many)
	if err == nil || !strings.Contains(err.Error(), "restart to apply") {
		t.Fatalf("reload to %d subscribers: %v, want refused", len(many.Subscribers), err)
	}
	if r.subscriber("s0") != nil || r.subscriber("a") == nil {
		t.Fatal("the refused reload changed the subscribers")
	}
	fewer := cfg
	fewer.Subscribers = many.Subscribers[:most]
	if err := r.Reload(fewer); err != nil {
		t.Fatalf("reload to %d subscribers: %v", len(fewer.Subscribers), err)
	}
	body := "[" + strings.Repeat(`{"type":"t","data":1},`, cfg.Ingest.MaxEventsPerRequest-1) + `{"type":"t","data":1}]`
	if a := mustIngest(t, r, "/v1/events", body); a.Accepted != cfg.Ingest.MaxEventsPerRequest {
		t.Fatalf("a request of the most events to %d subscribers: %+v", len(fewer.Subscribers), a)
	}
}

// TestRemovedSubscriberMetricsGo: once a removed subscriber has drained
// and is forgotten, its metric series go too; the others stay.
func TestRemovedSubscriberMetricsGo(t *testing.T) {
	snk := startSink(t, sink.Options{})
	cfg := testConfig(t, sub("a", snk.URL(), 1, 5*time.Millisecond), sub("gone", snk.URL(), 1, 5*time.Millisecond))
	r := startRelay(t, cfg)
	series := func(id string) int {
		_, body := do(t, "GET", "http://"+r.AdminAddr()+"/metrics", "")
		n := 0
		for l := range strings.Lines(body) {
			if strings.Contains(l, `subscriber="`+id+`"`) && !strings.HasPrefix(l, "#") {
				n++
			}
		}
		return n
	}
	mustIngest(t, r, "/v1/events", `{"type":"t","data":1}`) // histograms appear too
	waitFor(t, 10*time.Second, "both delivered", func() bool { return snk.Stats().Events == 2 })
	if series("gone") == 0 {
		t.Fatal("no series of gone before its removal")
	}
	cfg.Subscribers = cfg.Subscribers[:1]
	if err := r.Reload(cfg); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "gone's series gone", func() bool { return r.subscriber("gone") == nil && series("gone") == 0 })
	if series("a") == 0 {
		t.Fatal("a's series went too")
	}
}
