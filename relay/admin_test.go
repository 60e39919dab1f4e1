package relay

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hookbatch/hookbatch/sink"
	"github.com/valyala/fasthttp"
)

// downURL is a delivery URL where nothing listens.
func downURL(t *testing.T) string {
	t.Helper()
	addr := deadAddr(t)
	return "http://" + addr + "/hooks"
}

// TestAdminSubscriberFields: GET /v1/subscribers and /v1/subscribers/{id}
// answer exactly the fields of DESIGN §7, with their JSON types.
func TestAdminSubscriberFields(t *testing.T) {
	t.Parallel()
	s := startSink(t, sink.Options{})
	down := downURL(t)
	r := startRelay(t, testConfig(t, sub("a", s.URL(), 10, 10*time.Millisecond), sub("b", down, 10, 10*time.Millisecond)))
	want := []string{"circuit", "dead_letter_batches", "id", "in_flight_batches", "oldest_event_age_seconds", "paused", "queued_events", "url"}
	check := func(where string, m map[string]any, id, url string) {
		t.Helper()
		keys := make([]string, 0, len(m))
		for k := range m {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		if !slices.Equal(keys, want) {
			t.Errorf("%s: fields %v, want exactly %v", where, keys, want)
		}
		if m["id"] != id || m["url"] != url {
			t.Errorf("%s: id %v url %v, want %s %s", where, m["id"], m["url"], id, url)
		}
		for _, k := range []string{"queued_events", "in_flight_batches", "oldest_event_age_seconds", "dead_letter_batches"} {
			if v, ok := m[k].(float64); !ok || v < 0 {
				t.Errorf("%s: %s is %#v, want a number >= 0", where, k, m[k])
			}
		}
		if c, ok := m["circuit"].(string); !ok || (c != "closed" && c != "open" && c != "half_open") {
			t.Errorf("%s: circuit %#v, want closed, open or half_open", where, m["circuit"])
		}
		if _, ok := m["paused"].(bool); !ok {
			t.Errorf("%s: paused %#v, want a boolean", where, m["paused"])
		}
	}

	status, body := do(t, "GET", "http://"+r.AdminAddr()+"/v1/subscribers", "")
	if status != 200 {
		t.Fatalf("GET /v1/subscribers: %d %s", status, body)
	}
	var list []map[string]any
	if err := json.Unmarshal([]byte(body), &list); err != nil {
		t.Fatalf("GET /v1/subscribers: %q: %v", body, err)
	}
	if len(list) != 2 {
		t.Fatalf("GET /v1/subscribers: %d entries, want 2: %s", len(list), body)
	}
	check("list[0]", list[0], "a", s.URL())
	check("list[1]", list[1], "b", down)

	var one map[string]any
	adminJSON(t, r, "GET", "/v1/subscribers/b", 200, &one)
	check("GET /v1/subscribers/b", one, "b", down)
	if one["circuit"] != "closed" || one["paused"] != false || one["queued_events"] != 0.0 {
		t.Errorf("idle subscriber b: %v", one)
	}

	// Values follow the state: events queued for the subscriber that is
	// down are counted and age.
	mustIngest(t, r, "/v1/subscribers/b/events", `[{"type":"t","data":1},{"type":"t","data":2}]`)
	waitFor(t, 10*time.Second, "b's events counted", func() bool {
		v := subscriberState(t, r, "b")
		return v.QueuedEvents == 2 && v.OldestEventAge > 0
	})
}

// TestAdminNotFound: unknown subscribers, dead letters and paths are 404,
// with a JSON error.
func TestAdminNotFound(t *testing.T) {
	t.Parallel()
	r := startRelay(t, testConfig(t, sub("a", downURL(t), 10, time.Second)))
	f := func(method, path string) {
		t.Helper()
		status, body := do(t, method, "http://"+r.AdminAddr()+path, "")
		if status != 404 {
			t.Errorf("%s %s: status %d, want 404 (%s)", method, path, status, body)
			return
		}
		var e struct{ Error string }
		if err := json.Unmarshal([]byte(body), &e); err != nil || e.Error == "" {
			t.Errorf("%s %s: body %q, want a JSON error", method, path, body)
		}
	}
	f("GET", "/v1/subscribers/nope")
	f("POST", "/v1/subscribers/nope/pause")
	f("POST", "/v1/subscribers/nope/resume")
	f("POST", "/v1/subscribers/nope/dead-letters/replay")
	f("GET", "/v1/dead-letters?subscriber=nope")
	f("POST", "/v1/dead-letters/b_nope/replay")
	f("DELETE", "/v1/dead-letters/b_nope")
	f("GET", "/v1/subscribers/a/nope")
	f("GET", "/v1/subscribers/a/pause/now")
	f("GET", "/v1/nope")
	f("GET", "/v2/subscribers")
	f("GET", "/nope")
	f("GET", "/")
}

// adminMethodCases are admin endpoints with a method they do not allow and
// the one they do.
var adminMethodCases = []struct{ method, path, allow string }{
	{"POST", "/v1/subscribers", "GET"},
	{"DELETE", "/v1/subscribers", "GET"},
	{"POST", "/v1/subscribers/a", "GET"},
	{"DELETE", "/v1/subscribers/a", "GET"},
	{"GET", "/v1/subscribers/a/pause", "POST"},
	{"PUT", "/v1/subscribers/a/resume", "POST"},
	{"GET", "/v1/subscribers/a/dead-letters/replay", "POST"},
	{"POST", "/v1/dead-letters", "GET"},
	{"GET", "/v1/dead-letters/b_x/replay", "POST"},
	{"GET", "/v1/dead-letters/b_x", "DELETE"},
	{"POST", "/v1/dead-letters/b_x", "DELETE"},
}

// TestAdminMethodNotAllowed: a wrong method on a known endpoint is 405 with
// a JSON error, and changes nothing.
func TestAdminMethodNotAllowed(t *testing.T) {
	t.Parallel()
	r := startRelay(t, testConfig(t, sub("a", downURL(t), 10, time.Second)))
	for _, c := range adminMethodCases {
		status, body := do(t, c.method, "http://"+r.AdminAddr()+c.path, "")
		if status != 405 {
			t.Errorf("%s %s: status %d, want 405 (%s)", c.method, c.path, status, body)
			continue
		}
		var e struct{ Error string }
		if err := json.Unmarshal([]byte(body), &e); err != nil || e.Error == "" {
			t.Errorf("%s %s: body %q, want a JSON error", c.method, c.path, body)
		}
	}
	if v := subscriberState(t, r, "a"); v.Paused {
		t.Errorf("GET .../pause paused the subscriber")
	}
}

// TestAdminMethodNotAllowedNamesAllowedMethod: a 405 carries an Allow
// header naming the method the endpoint does take (RFC 9110 §15.5.6).
func TestAdminMethodNotAllowedNamesAllowedMethod(t *testing.T) {
	t.Parallel()
	r := startRelay(t, testConfig(t, sub("a", downURL(t), 10, time.Second)))
	for _, c := range adminMethodCases {
		req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
		req.Header.SetMethod(c.method)
		req.SetRequestURI("http://" + r.AdminAddr() + c.path)
		if err := client.Do(req, resp); err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode() == 405 {
			if allow := string(resp.Header.Peek("Allow")); allow != c.allow {
				t.Errorf("%s %s: Allow %q, want %q", c.method, c.path, allow, c.allow)
			}
		}
		fasthttp.ReleaseRequest(req)
		fasthttp.ReleaseResponse(resp)
	}
}

// TestAdminDeadLetterLimit: limit is validated (1..10000) and honoured;
// subscriber filters; an empty list is [].
func TestAdminDeadLetterLimit(t *testing.T) {
	t.Parallel()
	s := startSink(t, sink.Options{FailRate: 1, FailStatus: 422})
	r := startRelay(t, testConfig(t, sub("a", s.URL(), 1, 10*time.Millisecond), sub("other", downURL(t), 10, time.Hour)))
	mustIngest(t, r, "/v1/subscribers/a/events", `[{"type":"t","data":1},{"type":"t","data":2},{"type":"t","data":3}]`)
	waitFor(t, 10*time.Second, "3 dead letters", func() bool { return len(deadLettersOf(t, r, "a")) == 3 })

	count := func(query string) int {
		t.Helper()
		var v []deadLetterView
		adminJSON(t, r, "GET", "/v1/dead-letters"+query, 200, &v)
		return len(v)
	}
	for query, want := range map[string]int{
		"":                          3,
		"?limit=1":                  1,
		"?limit=2":                  2,
		"?limit=3":                  3,
		"?limit=10000":              3,
		"?subscriber=a":             3,
		"?subscriber=a&limit=2":     2,
		"?subscriber=other":         0,
		"?subscriber=other&limit=1": 0,
	} {
		if got := count(query); got != want {
			t.Errorf("GET /v1/dead-letters%s: %d entries, want %d", query, got, want)
		}
	}
	all := deadLettersOf(t, r, "")
	var first []deadLetterView
	adminJSON(t, r, "GET", "/v1/dead-letters?limit=2", 200, &first)
	if len(first) == 2 && (first[0].BatchID != all[0].BatchID || first[1].BatchID != all[1].BatchID) {
		t.Errorf("limit=2 gave %s, %s, not the first two of the list", first[0].BatchID, first[1].BatchID)
	}
	_, body := do(t, "GET", "http://"+r.AdminAddr()+"/v1/dead-letters?subscriber=other", "")
	if strings.TrimSpace(body) != "[]" {
		t.Errorf("no dead letters: body %q, want []", body)
	}

	for _, bad := range []string{"0", "-1", "10001", "abc", "1.5", "1e3", "99999999999999999999"} {
		status, body := do(t, "GET", "http://"+r.AdminAddr()+"/v1/dead-letters?limit="+bad, "")
		var e struct{ Error string }
		if status != 400 || json.Unmarshal([]byte(body), &e) != nil || !strings.Contains(e.Error, "limit") {
			t.Errorf("limit=%s: %d %s, want 400 with a JSON error about limit", bad, status, body)
		}
	}
}

// TestAdminToken: with admin.token set, the admin API needs the bearer
// token; metrics and health stay open.
func TestAdminToken(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t, sub("a", downURL(t), 10, time.Second))
	cfg.Admin.Token = "adm-tok-123"
	r := startRelay(t, cfg)
	base := "http://" + r.AdminAddr()
	for _, c := range []struct{ method, path string }{
		{"GET", "/v1/subscribers"},
		{"GET", "/v1/subscribers/a"},
		{"POST", "/v1/subscribers/a/pause"},
		{"GET", "/v1/dead-letters"},
		{"DELETE", "/v1/dead-letters/b_x"},
		{"POST", "/v1/subscribers/a/dead-letters/replay"},
		{"GET", "/v1/nope"},
		{"GET", "/debug/pprof/"},
	} {
		for _, h := range [][]string{
			nil,
			{"Authorization", "Bearer wrong"},
			{"Authorization", "Bearer adm-tok-1234"},
			{"Authorization", "Bearer adm-tok-12"},
			{"Authorization", "adm-tok-123"},
			{"Authorization", "Basic adm-tok-123"},
			{"Authorization", "Bearer "},
			{"X-Admin-Token", "adm-tok-123"},
		} {
			status, body := do(t, c.method, base+c.path, "", h...)
			var e struct{ Error string }
			if status != 401 || json.Unmarshal([]byte(body), &e) != nil || e.Error == "" {
				t.Errorf("%s %s with %q: %d %s, want 401 with a JSON error", c.method, c.path, h, status, body)
			}
		}
	}
	var v subscriberView
	adminJSON(t, r, "GET", "/v1/subscribers/a", 200, &v, "Authorization", "Bearer adm-tok-123")
	if v.Paused {
		t.Errorf("an unauthorized pause paused the subscriber")
	}
	for _, path := range []string{"/v1/subscribers", "/v1/subscribers/a", "/v1/dead-letters"} {
		if status, body := do(t, "GET", base+path, "", "Authorization", "Bearer adm-tok-123"); status != 200 {
			t.Errorf("GET %s with the token: %d %s", path, status, body)
		}
	}
	for _, path := range []string{"/metrics", "/healthz", "/readyz"} {
		if status, body := do(t, "GET", base+path, ""); status != 200 {
			t.Errorf("GET %s without a token: %d %s, want 200", path, status, body)
		}
	}
	status, body := do(t, "GET", base+"/metrics", "")
	if status != 200 || !strings.Contains(body, `hookbatch_queue_events{subscriber="a"}`) {
		t.Errorf("GET /metrics without a token: %d, metrics missing", status)
	}
}

// TestAdminPauseResume: POST .../pause stops delivery to one subscriber
// while ingest keeps accepting and others keep receiving; POST .../resume
// delivers what waited. Both are idempotent.
func TestAdminPauseResume(t *testing.T) {
	t.Parallel()
	s := startSink(t, sink.Options{})
	r := startRelay(t, testConfig(t, sub("held", s.URL(), 10, 10*time.Millisecond), sub("witness", s.URL(), 10, 10*time.Millisecond)))
	bySub := func(id string) int {
		n := 0
		for _, b := range s.Batches() {
			if b.Subscriber == id {
				n += b.Count
			}
		}
		return n
	}

	var v subscriberView
	adminJSON(t, r, "POST", "/v1/subscribers/held/pause", 200, &v)
	if !v.Paused || v.PauseReason == "" || v.ID != "held" {
		t.Errorf("pause answered %+v, want held paused with a reason", v)
	}
	var v2 subscriberView
	adminJSON(t, r, "POST", "/v1/subscribers/held/pause", 200, &v2)
	if !v2.Paused {
		t.Errorf("second pause answered %+v", v2)
	}
	if v := subscriberState(t, r, "held"); !v.Paused || v.PauseReason == "" {
		t.Errorf("GET after pause: %+v", v)
	}
	if v := subscriberState(t, r, "witness"); v.Paused {
		t.Errorf("pausing held paused witness: %+v", v)
	}

	a := mustIngest(t, r, "/v1/events", seqEvents("t", 0, 5))
	if a.Accepted != 5 {
		t.Fatalf("ingest while paused: %+v", a)
	}
	waitFor(t, 10*time.Second, "the witness's events", func() bool { return bySub("witness") == 5 })
	waitFor(t, 10*time.Second, "held's batch formed", func() bool {
		return metricValue(t, r, `hookbatch_batches_flushed_total{subscriber="held",reason="wait"}`) >= 1
	})
	if n := bySub("held"); n != 0 {
		t.Errorf("paused subscriber got %d events", n)
	}
	if v := subscriberState(t, r, "held"); v.QueuedEvents != 5 {
		t.Errorf("paused subscriber: %+v, want 5 events queued", v)
	}

	var rv subscriberView // fresh: an omitted pause_reason must read as empty
	adminJSON(t, r, "POST", "/v1/subscribers/held/resume", 200, &rv)
	if rv.Paused || rv.PauseReason != "" {
		t.Errorf("resume answered %+v", rv)
	}
	adminJSON(t, r, "POST", "/v1/subscribers/held/resume", 200, nil)
	waitFor(t, 10*time.Second, "held's events after resume", func() bool { return bySub("held") == 5 })
	waitFor(t, 5*time.Second, "held's queue empty", func() bool { return subscriberState(t, r, "held").QueuedEvents == 0 })
	if st := s.Stats(); st.Events != 10 || st.DuplicateBatches != 0 {
		t.Errorf("sink stats %+v, want 10 events, no duplicates", st)
	}
}
