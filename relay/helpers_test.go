package relay

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hookbatch/hookbatch/config"
	"github.com/hookbatch/hookbatch/sink"
	"github.com/rs/zerolog"
	"github.com/valyala/fasthttp"
)

const testSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

// testConfig is a config for a relay on loopback ports with its data in a
// temporary directory and fast retries.
func testConfig(t testing.TB, subs ...config.Subscriber) config.Config {
	t.Helper()
	cfg := config.Default()
	cfg.Listen = "127.0.0.1:0"
	cfg.AdminListen = "127.0.0.1:0"
	cfg.DataDir = t.TempDir()
	cfg.ShutdownTimeout = 10 * time.Second
	cfg.Delivery.AllowPrivateNetworks = true
	cfg.Delivery.Timeout = 5 * time.Second
	cfg.Delivery.Retry.InitialBackoff = 20 * time.Millisecond
	cfg.Delivery.Retry.MaxBackoff = 200 * time.Millisecond
	cfg.Delivery.CircuitBreaker.OpenDuration = 200 * time.Millisecond
	cfg.Storage.SyncWrites = false
	cfg.Subscribers = subs
	return cfg
}

// sub is a subscriber of the test secret with the given batch limits.
func sub(id, url string, maxEvents int, maxWait time.Duration) config.Subscriber {
	return config.Subscriber{
		ID:     id,
		URL:    url,
		Secret: testSecret,
		Batch:  config.Batch{MaxEvents: maxEvents, MaxBytes: 1 << 20, MaxWait: maxWait},
	}
}

// testLogger writes the relay's log to the test log (shown on failure).
func testLogger(testing.TB) zerolog.Logger {
	if testing.Verbose() {
		return zerolog.New(zerolog.ConsoleWriter{Out: os.Stderr}).Level(zerolog.InfoLevel)
	}
	return zerolog.New(io.Discard)
}

// startRelay starts a relay for cfg and stops it when the test ends.
func startRelay(t *testing.T, cfg config.Config) *Relay {
	t.Helper()
	r := openRelay(t, cfg, testLogger(t))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		if err := r.Close(ctx); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return r
}

// openRelay starts a relay for cfg logging to log; the test stops it
// (stopRelay), for instance to restart on the same data.
func openRelay(t *testing.T, cfg config.Config, log zerolog.Logger) *Relay {
	t.Helper()
	r, err := New(cfg, log, "test")
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if err := r.Start(); err != nil {
		t.Fatalf("Start: %v", err)
	}
	return r
}

// stopRelay closes r within 15 s.
func stopRelay(t *testing.T, r *Relay) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := r.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
}

// startSink starts a signature-checking test subscriber keeping every event.
func startSink(t *testing.T, opts sink.Options) *sink.Sink {
	t.Helper()
	if opts.Secrets == nil {
		opts.Secrets = []string{testSecret}
	}
	opts.KeepEvents = true
	s := sink.New(opts)
	if err := s.Start("127.0.0.1:0"); err != nil {
		t.Fatalf("sink: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

var client = &fasthttp.Client{MaxConnsPerHost: 512, ReadTimeout: 30 * time.Second, WriteTimeout: 30 * time.Second}

// post sends body to url with JSON content type (unless headers override
// it) and returns the status and response body.
func post(t testing.TB, url, body string, headers ...string) (int, string) {
	t.Helper()
	return do(t, "POST", url, body, headers...)
}

func do(t testing.TB, method, url, body string, headers ...string) (int, string) {
	t.Helper()
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.Header.SetMethod(method)
	req.SetRequestURI(url)
	req.Header.SetContentType("application/json")
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	req.SetBodyString(body)
	if err := client.Do(req, resp); err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	return resp.StatusCode(), string(resp.Body())
}

// ingestAnswer is the 202 body of DESIGN §5.
type ingestAnswer struct {
	Accepted   int      `json:"accepted"`
	Duplicates int      `json:"duplicates"`
	Unrouted   int      `json:"unrouted"`
	IDs        []string `json:"ids"`
}

// mustIngest posts body to the relay and fails the test unless it is 202.
func mustIngest(t testing.TB, r *Relay, path, body string, headers ...string) ingestAnswer {
	t.Helper()
	status, resp := post(t, "http://"+r.IngestAddr()+path, body, headers...)
	if status != fasthttp.StatusAccepted {
		t.Fatalf("POST %s: status %d: %s", path, status, resp)
	}
	var a ingestAnswer
	if err := json.Unmarshal([]byte(resp), &a); err != nil {
		t.Fatalf("POST %s: bad answer %q: %v", path, resp, err)
	}
	return a
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// metricValue reads one sample of the relay's /metrics, or -1 when absent.
func metricValue(t testing.TB, r *Relay, series string) float64 {
	t.Helper()
	_, body := do(t, "GET", "http://"+r.AdminAddr()+"/metrics", "")
	for _, line := range strings.Split(body, "\n") {
		if name, val, ok := strings.Cut(line, " "); ok && name == series {
			var v float64
			if _, err := fmt.Sscan(val, &v); err != nil {
				t.Fatalf("metric %s: %v", series, err)
			}
			return v
		}
	}
	return -1
}

// eventsOf counts the deliveries of each event id a sink received.
func eventsOf(s *sink.Sink) map[string]int {
	out := make(map[string]int)
	for _, e := range s.Events() {
		out[e.ID]++
	}
	return out
}

// deadAddr returns a loopback address where nothing listens, for a
// subscriber that is down until the test starts a server there. It is on a
// loopback IP of its own (127.0.0.2 and up) so that no other test's
// 127.0.0.1:0 listener can take the port meanwhile.
func deadAddr(t *testing.T) string {
	t.Helper()
	deadIPs.Lock()
	deadIPs.next++
	ip := fmt.Sprintf("127.0.%d.%d", deadIPs.next/250, 2+deadIPs.next%250)
	deadIPs.Unlock()
	ln, err := net.Listen("tcp", ip+":0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	return addr
}

var deadIPs struct {
	sync.Mutex
	next int
}

// heldForSlot starts a relay (start, or startRelay when nil) whose
// subscriber "s" has one host slot: its first batch is sent and held
// until srv.Release, then answered first; its second batch waits for the
// slot meanwhile.
func heldForSlot(t *testing.T, first reply, tune func(*config.Config), start func(config.Config) *Relay) (*scriptServer, *Relay) {
	t.Helper()
	first.hang = time.Minute
	srv := startScript(t, func(n int, h hit) reply {
		if n == 1 {
			return first
		}
		return reply{status: 200}
	})
	t.Cleanup(srv.Release)
	cfg := testConfig(t, sub("s", srv.URL(), 1, 5*time.Millisecond))
	cfg.Delivery.PerHostConcurrency = 1 // one request at a time
	cfg.Delivery.Retry.MaxBackoff = 10 * time.Second
	if tune != nil {
		tune(&cfg)
	}
	if start == nil {
		start = func(cfg config.Config) *Relay { return startRelay(t, cfg) }
	}
	r := start(cfg)
	mustIngest(t, r, "/v1/events", `{"type":"t","data":1}`)
	waitFor(t, 5*time.Second, "the first batch in flight", func() bool { return len(srv.Hits()) == 1 })
	waits := r.metrics.limitWaits[limitHost].Get()
	mustIngest(t, r, "/v1/events", `{"type":"t","data":2}`)
	waitFor(t, 5*time.Second, "the second batch waiting for the host's slot", func() bool {
		return r.metrics.limitWaits[limitHost].Get() > waits
	})
	return srv, r
}
