package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hookbatch/hookbatch/config"
	"github.com/hookbatch/hookbatch/relay"
	"github.com/hookbatch/hookbatch/sink"
	"github.com/rs/zerolog"
	"github.com/valyala/fasthttp"
)

// benchSecret signs deliveries; the sinks verify both signature schemes with
// it, as a real subscriber would.
var benchSecret = "whsec_" + base64.StdEncoding.EncodeToString([]byte("hookbatch-bench-signing-key-0001"))

// Relay modes of -relay.
const (
	modeInproc     = "inproc"
	modeSubprocess = "subprocess"
)

// relayConfig is the configuration every benchmarked relay runs with: the
// defaults, listeners on free loopback ports, delivery to loopback allowed.
func relayConfig(dataDir string, sync bool, subs ...config.Subscriber) config.Config {
	cfg := config.Default()
	cfg.Listen = "127.0.0.1:0"
	cfg.AdminListen = "127.0.0.1:0"
	cfg.DataDir = dataDir
	cfg.LogLevel = "info"
	cfg.ShutdownTimeout = 15 * time.Second
	cfg.Storage.SyncWrites = sync
	cfg.Delivery.AllowPrivateNetworks = true // the sinks are on loopback
	cfg.Subscribers = subs
	return cfg
}

// subscriberConfig is a subscriber taking every event, batched by maxEvents
// or maxWait.
func subscriberConfig(id, url string, maxEvents int, maxWait time.Duration) config.Subscriber {
	return config.Subscriber{
		ID:     id,
		URL:    url,
		Secret: benchSecret,
		Batch:  config.Batch{MaxEvents: maxEvents, MaxBytes: config.DefaultBatch.MaxBytes, MaxWait: maxWait},
	}
}

// relayHandle is one running relay, in this process or a child.
type relayHandle struct {
	mode   string
	ingest string // host:port
	admin  string
	pid    int
	dir    string // data dir, removed by close

	r    *relay.Relay
	cmd  *exec.Cmd
	exit chan error
}

// startRelay starts a relay for cfg in mode (its data dir is created here
// and removed by close).
func (e *env) startRelay(cfg config.Config, mode string) (*relayHandle, error) {
	dir, err := os.MkdirTemp(e.tmp, "relay-*")
	if err != nil {
		return nil, err
	}
	cfg.DataDir = dir
	h := &relayHandle{mode: mode, dir: dir}
	if ps := cfg.Validate(); len(ps) > 0 {
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("bench relay config: %w", &config.Error{Problems: ps})
	}
	switch mode {
	case modeInproc:
		log := zerolog.New(os.Stderr).Level(zerolog.ErrorLevel).With().Timestamp().Str("in", "relay").Logger()
		r, err := relay.New(cfg, log, "bench")
		if err != nil {
			_ = os.RemoveAll(dir)
			return nil, err
		}
		if err := r.Start(); err != nil {
			_ = r.Close(context.Background())
			_ = os.RemoveAll(dir)
			return nil, err
		}
		h.r, h.ingest, h.admin, h.pid = r, r.IngestAddr(), r.AdminAddr(), os.Getpid()
	case modeSubprocess:
		if err := h.spawn(e, cfg); err != nil {
			_ = os.RemoveAll(dir)
			return nil, err
		}
	default:
		return nil, fmt.Errorf("unknown relay mode %q", mode)
	}
	return h, nil
}

// spawn runs `hookbatch serve` with cfg written as YAML, and learns its
// addresses from its "hookbatch started" log line.
func (h *relayHandle) spawn(e *env, cfg config.Config) error {
	if e.binary == "" {
		return errors.New("no hookbatch binary was built")
	}
	path := filepath.Join(h.dir, "hookbatch.yaml")
	if err := os.WriteFile(path, []byte(configYAML(cfg)), 0o600); err != nil {
		return err
	}
	cmd := exec.Command(e.binary, "serve", "-config", path)
	cmd.Env = append(os.Environ(), "HOOKBATCH_CONFIG=")
	dieWithParent(cmd)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("cannot start %s: %w", e.binary, err)
	}
	h.cmd, h.pid, h.exit = cmd, cmd.Process.Pid, make(chan error, 1)
	type addrs struct{ ingest, admin string }
	found := make(chan addrs, 1)
	var tail []string
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		sent := false
		for sc.Scan() {
			line := sc.Text()
			if sent {
				if strings.Contains(line, `"level":"error"`) {
					fmt.Fprintf(os.Stderr, "relay[%d]: %s\n", h.pid, line)
				}
				continue
			}
			tail = append(tail, line)
			var m struct {
				Message string `json:"message"`
				Listen  string `json:"listen"`
				Admin   string `json:"admin_listen"`
			}
			if json.Unmarshal([]byte(line), &m) == nil && m.Message == "hookbatch started" {
				found <- addrs{m.Listen, m.Admin}
				sent = true
			}
		}
		_, _ = io.Copy(io.Discard, stderr)
		h.exit <- cmd.Wait()
		close(found)
	}()
	select {
	case a, ok := <-found:
		if !ok {
			return fmt.Errorf("hookbatch serve exited before starting: %s", strings.Join(lastN(tail, 5), " | "))
		}
		h.ingest, h.admin = a.ingest, a.admin
		return nil
	case <-time.After(30 * time.Second):
		_ = cmd.Process.Kill()
		<-h.exit
		return errors.New("hookbatch serve did not start within 30s")
	}
}

func lastN(s []string, n int) []string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// close stops the relay and removes its data dir.
func (h *relayHandle) close() error {
	defer os.RemoveAll(h.dir)
	if h.r != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		return h.r.Close(ctx)
	}
	if h.cmd == nil {
		return nil
	}
	_ = h.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-h.exit:
		return err
	case <-time.After(20 * time.Second):
		_ = h.cmd.Process.Kill()
		<-h.exit
		return errors.New("hookbatch serve did not stop within 20s of SIGTERM: killed")
	}
}

// configYAML writes the keys the bench sets; the rest keep their defaults.
func configYAML(c config.Config) string {
	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	p("listen: %q", c.Listen)
	p("admin_listen: %q", c.AdminListen)
	p("data_dir: %q", c.DataDir)
	p("log_level: %s", c.LogLevel)
	p("log_format: json")
	p("shutdown_timeout: %s", c.ShutdownTimeout)
	p("ingest:")
	p("  max_body_bytes: %d", c.Ingest.MaxBodyBytes)
	p("  max_events_per_request: %d", c.Ingest.MaxEventsPerRequest)
	p("  dedup_window: %s", c.Ingest.DedupWindow)
	p("storage:")
	p("  sync_writes: %t", c.Storage.SyncWrites)
	p("delivery:")
	d := c.Delivery
	p("  concurrency: %d", d.Concurrency)
	p("  per_host_concurrency: %d", d.PerHostConcurrency)
	p("  timeout: %s", d.Timeout)
	p("  allow_private_networks: %t", d.AllowPrivateNetworks)
	p("  retry: {initial_backoff: %s, max_backoff: %s, multiplier: %g, jitter: %g, max_attempts: %d, max_age: %s}",
		d.Retry.InitialBackoff, d.Retry.MaxBackoff, d.Retry.Multiplier, d.Retry.Jitter, d.Retry.MaxAttempts, d.Retry.MaxAge)
	p("  circuit_breaker: {failure_threshold: %d, open_duration: %s}", d.CircuitBreaker.FailureThreshold, d.CircuitBreaker.OpenDuration)
	p("subscribers:")
	for _, s := range c.Subscribers {
		p("  - id: %q", s.ID)
		p("    url: %q", s.URL)
		p("    secret: %q", s.Secret)
		p("    batch: {max_events: %d, max_bytes: %d, max_wait: %s}", s.Batch.MaxEvents, s.Batch.MaxBytes, s.Batch.MaxWait)
	}
	return b.String()
}

// startSinks starts n sinks on loopback, each with its tracker.
func startSinks(n int, delivered *atomic.Int64) ([]*sink.Sink, []*tracker, error) {
	var sinks []*sink.Sink
	var trs []*tracker
	for i := range n {
		tr := newTracker(fmt.Sprintf("s%d", i), delivered)
		s := newSink(tr)
		if err := s.Start("127.0.0.1:0"); err != nil {
			closeSinks(sinks)
			return nil, nil, err
		}
		sinks = append(sinks, s)
		trs = append(trs, tr)
	}
	return sinks, trs, nil
}

func newSink(tr *tracker) *sink.Sink {
	return sink.New(sink.Options{Secrets: []string{benchSecret}, History: -1, OnBatch: tr.onBatch})
}

func closeSinks(sinks []*sink.Sink) {
	for _, s := range sinks {
		_ = s.Close()
	}
}

// freeAddr returns a loopback address nothing listens on (a subscriber that
// is down until a sink is started there).
func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	addr := ln.Addr().String()
	return addr, ln.Close()
}

// ceiling is a bare fasthttp server answering 202 to every request, set up
// like the relay's ingest server.
type ceiling struct {
	srv *fasthttp.Server
	ln  net.Listener
}

var ceilingAnswer = []byte(`{"accepted":1,"duplicates":0,"unrouted":0}`)

func startCeiling() (*ceiling, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	c := &ceiling{ln: ln, srv: &fasthttp.Server{
		Handler: func(ctx *fasthttp.RequestCtx) {
			ctx.SetStatusCode(fasthttp.StatusAccepted)
			ctx.SetContentType("application/json")
			ctx.SetBody(ceilingAnswer)
		},
		Name:                  "ceiling",
		ReadTimeout:           30 * time.Second,
		WriteTimeout:          30 * time.Second,
		IdleTimeout:           90 * time.Second,
		MaxRequestBodySize:    1 << 20,
		ReadBufferSize:        16 << 10,
		NoDefaultServerHeader: true,
		NoDefaultDate:         true,
		CloseOnShutdown:       true,
	}}
	go func() { _ = c.srv.Serve(ln) }()
	return c, nil
}

func (c *ceiling) addr() string { return c.ln.Addr().String() }
func (c *ceiling) close()       { _ = c.srv.Shutdown() }

// adminClient talks to a relay's admin API.
var adminClient = &fasthttp.Client{
	ReadTimeout:         10 * time.Second,
	WriteTimeout:        10 * time.Second,
	MaxConnWaitTimeout:  10 * time.Second,
	MaxResponseBodySize: 16 << 20,
	MaxConnsPerHost:     4,
}

func adminDo(method, url string) ([]byte, error) {
	req := fasthttp.AcquireRequest()
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.Header.SetMethod(method)
	req.SetRequestURI(url)
	if err := adminClient.DoTimeout(req, resp, 10*time.Second); err != nil {
		return nil, err
	}
	if resp.StatusCode() != fasthttp.StatusOK {
		return nil, fmt.Errorf("%s %s: status %d: %.200s", method, url, resp.StatusCode(), resp.Body())
	}
	return append([]byte(nil), resp.Body()...), nil
}

// queueDepth sums queued_events over the relay's subscribers.
// commitTotals are the relay's storage commits so far, as its /metrics
// counts them: how many, their seconds and their operations.
type commitTotals struct{ n, seconds, ops float64 }

func (h *relayHandle) commits() (commitTotals, error) {
	var c commitTotals
	body, err := adminDo(fasthttp.MethodGet, "http://"+h.admin+"/metrics")
	if err != nil {
		return c, err
	}
	for line := range bytes.Lines(body) {
		name, v, _ := bytes.Cut(bytes.TrimSpace(line), []byte(" "))
		var dst *float64
		switch string(name) {
		case "hookbatch_storage_commit_seconds_count":
			dst = &c.n
		case "hookbatch_storage_commit_seconds_sum":
			dst = &c.seconds
		case "hookbatch_storage_commit_operations_sum":
			dst = &c.ops
		default:
			continue
		}
		if *dst, err = strconv.ParseFloat(string(v), 64); err != nil {
			return c, fmt.Errorf("%s: %w", name, err)
		}
	}
	return c, nil
}

// since sums up the commits between an earlier reading and c.
func (c commitTotals) since(before commitTotals) *Commits {
	n := c.n - before.n
	if n <= 0 {
		return nil
	}
	return &Commits{Count: int64(n), MeanMS: (c.seconds - before.seconds) / n * 1000, OpsPerCommit: (c.ops - before.ops) / n}
}

func (h *relayHandle) queueDepth() (int64, error) {
	body, err := adminDo(fasthttp.MethodGet, "http://"+h.admin+"/v1/subscribers")
	if err != nil {
		return 0, err
	}
	var subs []struct {
		Queued int64 `json:"queued_events"`
	}
	if err := json.Unmarshal(body, &subs); err != nil {
		return 0, err
	}
	var n int64
	for _, s := range subs {
		n += s.Queued
	}
	return n, nil
}

// setPaused pauses or resumes delivery to subscriber id.
func (h *relayHandle) setPaused(id string, paused bool) error {
	action := "resume"
	if paused {
		action = "pause"
	}
	_, err := adminDo(fasthttp.MethodPost, "http://"+h.admin+"/v1/subscribers/"+id+"/"+action)
	return err
}
