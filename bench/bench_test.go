package main

import (
	"encoding/json"
	"encoding/xml"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hookbatch/hookbatch/config"
	"github.com/hookbatch/hookbatch/sink"
	"github.com/valyala/fasthttp"
)

func TestHistQuantiles(t *testing.T) {
	var h hist
	for i := 1; i <= 1000; i++ {
		h.add(time.Duration(i) * time.Microsecond)
	}
	f := func(q float64, want time.Duration) {
		t.Helper()
		got := h.quantile(q)
		if math.Abs(float64(got-want)) > 0.04*float64(want) {
			t.Errorf("quantile(%v) = %v, want %v within 4%%", q, got, want)
		}
	}
	f(0.5, 500*time.Microsecond)
	f(0.99, 990*time.Microsecond)
	f(1, 1000*time.Microsecond)
	if got := h.quantile(1); got > time.Millisecond {
		t.Errorf("quantile(1) = %v, above the max", got)
	}
	var o hist
	o.add(time.Second)
	h.merge(&o)
	if h.n != 1001 || h.max != int64(time.Second) {
		t.Errorf("after merge: n %d max %d", h.n, h.max)
	}
	for _, v := range []uint64{0, 1, 31, 32, 33, 63, 64, 1000, 1 << 40, math.MaxInt64} {
		i := histIndex(v)
		if i < 0 || i >= histBuckets {
			t.Fatalf("histIndex(%d) = %d out of range", v, i)
		}
		if mid := histValue(i); v >= histSub && math.Abs(float64(mid)-float64(v)) > float64(v)/histSub {
			t.Errorf("bucket of %d has middle %d: more than 1/%d off", v, mid, histSub)
		}
	}
}

func TestEventIDs(t *testing.T) {
	f := func(w int, seq int64) {
		t.Helper()
		id := string(appendEventID(nil, w, seq))
		gw, gs, ok := parseEventID(id)
		if !ok || gw != w || gs != seq {
			t.Errorf("parseEventID(%q) = %d, %d, %v", id, gw, gs, ok)
		}
	}
	f(0, 0)
	f(7, 123456)
	f(255, 1<<33)
	for _, bad := range []string{"", "e", "e1", "e1.", "e.1", "x1.2", "e1.2.3", "e1.-2", "evt_01J"} {
		if _, _, ok := parseEventID(bad); ok {
			t.Errorf("parseEventID(%q) accepted", bad)
		}
	}
}

func TestBodiesAreValidJSON(t *testing.T) {
	b := newBodies(300)
	one := b.appendBody(nil, false, 3, 41, 1, time.Now().UnixNano())
	var ev struct {
		ID   string          `json:"id"`
		Type string          `json:"type"`
		Data json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(one, &ev); err != nil {
		t.Fatalf("%s: %v", one, err)
	}
	if ev.ID != "e3.41" || len(ev.Data) != 300 {
		t.Errorf("id %q, data %d bytes; want e3.41 and 300", ev.ID, len(ev.Data))
	}
	if _, ok := sendTime(ev.Data); !ok {
		t.Errorf("no send time in %s", ev.Data)
	}
	var arr []json.RawMessage
	if err := json.Unmarshal(b.appendBody(nil, true, 0, 0, 5, 1), &arr); err != nil || len(arr) != 5 {
		t.Errorf("array of 5: %d events, %v", len(arr), err)
	}
}

// TestTracker counts loss and duplicates event by event.
func TestTracker(t *testing.T) {
	var delivered atomic.Int64
	tr := newTracker("s0", &delivered)
	a := newAcks(2)
	a.ack(0, 0, 3)
	a.ack(1, 0, 2)
	batch := func(ids ...string) sink.Batch {
		b := sink.Batch{ReceivedAt: time.Now()}
		for _, id := range ids {
			b.Events = append(b.Events, sink.Event{ID: id, Timestamp: time.Now().Format(time.RFC3339Nano), Data: []byte(`{"t":1}`)})
		}
		return b
	}
	tr.onBatch(batch("e0.0", "e0.1", "e1.0"))
	if got := tr.missing(a); got != 2 {
		t.Errorf("missing = %d, want 2", got)
	}
	tr.onBatch(batch("e0.2", "e1.1", "e1.1", "e9.9", "evt_x"))
	if got := tr.missing(a); got != 0 {
		t.Errorf("missing = %d, want 0", got)
	}
	if d, f, n := tr.dupEvents.Load(), tr.foreign.Load(), delivered.Load(); d != 1 || f != 1 || n != 6 {
		t.Errorf("dups %d foreign %d delivered %d; want 1, 1, 6", d, f, n)
	}
}

// TestConfigYAML checks that the file written for `hookbatch serve` loads
// into the configuration it was written from.
func TestConfigYAML(t *testing.T) {
	dir := t.TempDir()
	want := relayConfig(filepath.Join(dir, "data"), false,
		subscriberConfig("s0", "http://127.0.0.1:9/hooks", 100, 100*time.Millisecond),
		subscriberConfig("s1", "http://127.0.0.1:10/hooks", 1, time.Second))
	want.Delivery.Retry.MaxAttempts = 1_000_000
	path := filepath.Join(dir, "hookbatch.yaml")
	if err := os.WriteFile(path, []byte(configYAML(want)), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := config.Load(path)
	if err != nil {
		t.Fatalf("config.Load: %v\n%s", err, configYAML(want))
	}
	if got.Storage.SyncWrites || !got.Delivery.AllowPrivateNetworks || got.Delivery.Retry.MaxAttempts != 1_000_000 ||
		len(got.Subscribers) != 2 || got.Subscribers[1].Batch.MaxEvents != 1 || got.Subscribers[0].Batch.MaxWait != 100*time.Millisecond ||
		got.Listen != "127.0.0.1:0" || got.DataDir != want.DataDir {
		t.Errorf("loaded %+v\nfrom\n%s", got, configYAML(want))
	}
}

func TestChartIsWellFormed(t *testing.T) {
	r := &Results{Relay: modeInproc, Machine: machineInfo()}
	r.Segments = []Segment{{Scenario: "ceiling <&> 1", From: 0, To: 1}, {Scenario: "hookbatch ingest", From: 1.2, To: 3}}
	for i := range 12 {
		r.Samples = append(r.Samples, Sample{T: float64(i) / 4, IngestedPerSec: float64(i * 1000), DeliveredPerSec: float64(i * 900), QueueDepth: int64(i*10 - 20)})
	}
	dec := xml.NewDecoder(strings.NewReader(string(chartSVG(r))))
	for {
		_, err := dec.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("chart is not well-formed XML: %v", err)
		}
	}
}

func TestPairRatio(t *testing.T) {
	r := &Results{}
	for run, v := range []float64{100, 200, 300} {
		r.add(&Measurement{Key: "a", Run: run + 1, EventsPerSec: v / 2})
		r.add(&Measurement{Key: "b", Run: run + 1, EventsPerSec: v})
	}
	if got, n := r.pairRatio("a", "b", eventsPerSec); got != 0.5 || n != 3 {
		t.Errorf("pairRatio = %v over %d, want 0.5 over 3", got, n)
	}
	if got := median([]float64{3, 1, 2, 10}); got != 2.5 {
		t.Errorf("median = %v, want 2.5", got)
	}
}

// TestCommits reads a real relay's commits from its /metrics: each
// single-event request, one after the other, is a commit of its own.
func TestCommits(t *testing.T) {
	e := &env{tmp: t.TempDir()}
	h, err := e.startRelay(relayConfig("", true, subscriberConfig("s0", "http://127.0.0.1:9/hooks", 100, time.Hour)), modeInproc)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := h.close(); err != nil {
			t.Error(err)
		}
	}()
	before, err := h.commits()
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
		req.Header.SetMethod(fasthttp.MethodPost)
		req.Header.SetContentType("application/json")
		req.SetRequestURI("http://" + h.ingest + "/v1/events")
		req.SetBodyString(fmt.Sprintf(`{"type":"t","data":%d}`, i))
		if err := fasthttp.Do(req, resp); err != nil || resp.StatusCode() != fasthttp.StatusAccepted {
			t.Fatalf("POST %d: %v, status %d %s", i, err, resp.StatusCode(), resp.Body())
		}
		fasthttp.ReleaseRequest(req)
		fasthttp.ReleaseResponse(resp)
	}
	after, err := h.commits()
	if err != nil {
		t.Fatal(err)
	}
	c := after.since(before)
	if c == nil || c.Count != 3 || c.OpsPerCommit != 1 || c.MeanMS <= 0 {
		t.Fatalf("commits %+v, want 3 of one operation each, timed", c)
	}
}
