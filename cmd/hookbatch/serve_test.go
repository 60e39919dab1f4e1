package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	testsink "github.com/hookbatch/hookbatch/sink"
	"github.com/hookbatch/hookbatch/storage"
	"github.com/rs/zerolog"
	"github.com/valyala/fasthttp"
)

const testSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

// relayProc is a `hookbatch serve` running in a subprocess.
type relayProc struct {
	cmd    *exec.Cmd
	ingest string
	admin  string
	exited chan error
	mu     sync.Mutex
	log    *strings.Builder
}

func (p *relayProc) logText() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.log.String()
}

// startServe runs `hookbatch serve -config cfgPath` in a subprocess and
// waits until it listens.
func startServe(t *testing.T, cfgPath string) *relayProc {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "HOOKBATCH_TEST_ARGS=serve -config "+cfgPath)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &relayProc{cmd: cmd, exited: make(chan error, 1), log: new(strings.Builder)}
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			p.mu.Lock()
			p.log.WriteString(line + "\n")
			p.mu.Unlock()
			var m struct {
				Message     string `json:"message"`
				Listen      string `json:"listen"`
				AdminListen string `json:"admin_listen"`
			}
			if json.Unmarshal([]byte(line), &m) == nil && m.Message == "hookbatch started" {
				p.ingest, p.admin = m.Listen, m.AdminListen
				close(ready)
			}
		}
		p.exited <- cmd.Wait()
	}()
	select {
	case <-ready:
	case err := <-p.exited:
		t.Fatalf("hookbatch serve exited before listening: %v\n%s", err, p.logText())
	case <-time.After(30 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatalf("hookbatch serve did not start\n%s", p.logText())
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			<-p.exited
		}
	})
	return p
}

func (p *relayProc) signal(t *testing.T, sig syscall.Signal) error {
	t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-p.exited:
		return err
	case <-time.After(60 * time.Second):
		t.Fatalf("hookbatch serve did not exit on %v", sig)
		return nil
	}
}

// writeConfig writes a relay config on loopback ports with dir as data_dir
// and one subscriber, s1, at url.
func writeConfig(t *testing.T, dir, url string) string {
	t.Helper()
	return writeConfigSubs(t, dir, fmt.Sprintf(`  - id: s1
    url: %s
    secret: %s
    batch: { max_events: 50, max_wait: 100ms }
`, url, testSecret))
}

// writeConfigSubs writes the config with the given subscribers block.
func writeConfigSubs(t *testing.T, dir, subs string) string {
	t.Helper()
	cfg := fmt.Sprintf(`listen: 127.0.0.1:0
admin_listen: 127.0.0.1:0
data_dir: %s
shutdown_timeout: 20s
storage: { sync_writes: true }
delivery:
  allow_private_networks: true
  timeout: 5s
  retry: { initial_backoff: 50ms, max_backoff: 500ms }
  circuit_breaker: { open_duration: 200ms }
subscribers:
%s`, filepath.Join(dir, "data"), subs)
	path := filepath.Join(dir, "hookbatch.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// load posts arrays of 10 events from 4 producers until stop is closed and
// returns the ids the relay acknowledged with 202.
func load(url string, stop <-chan struct{}) func() []string {
	var mu sync.Mutex
	var acked []string
	var wg sync.WaitGroup
	c := &fasthttp.Client{ReadTimeout: 10 * time.Second, WriteTimeout: 10 * time.Second}
	for p := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				parts := make([]string, 10)
				for k := range parts {
					parts[k] = fmt.Sprintf(`{"type":"t","data":{"p":%d,"i":%d,"k":%d}}`, p, i, k)
				}
				req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
				req.Header.SetMethod("POST")
				req.SetRequestURI(url)
				req.Header.SetContentType("application/json")
				req.SetBodyString("[" + strings.Join(parts, ",") + "]")
				err := c.Do(req, resp)
				if err == nil && resp.StatusCode() == 202 {
					var a struct{ IDs []string }
					if json.Unmarshal(resp.Body(), &a) == nil {
						mu.Lock()
						acked = append(acked, a.IDs...)
						mu.Unlock()
					}
				}
				fasthttp.ReleaseRequest(req)
				fasthttp.ReleaseResponse(resp)
				if err != nil {
					time.Sleep(5 * time.Millisecond) // the relay is down: do not spin
				}
			}
		}()
	}
	return func() []string {
		wg.Wait()
		return acked
	}
}

func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func startSink(t *testing.T) *testsink.Sink {
	t.Helper()
	s := testsink.New(testsink.Options{Secrets: []string{testSecret}, KeepEvents: true, Delay: 20 * time.Millisecond})
	if err := s.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// checkDelivered waits until every acknowledged id reached the sink.
func checkDelivered(t *testing.T, s *testsink.Sink, acked []string) {
	t.Helper()
	got := func() map[string]int {
		m := map[string]int{}
		for _, e := range s.Events() {
			m[e.ID]++
		}
		return m
	}
	waitFor(t, 60*time.Second, fmt.Sprintf("%d acknowledged events at the sink", len(acked)), func() bool {
		m := got()
		for _, id := range acked {
			if m[id] == 0 {
				return false
			}
		}
		return true
	})
	dups := 0
	for _, n := range got() {
		dups += n - 1
	}
	t.Logf("%d acknowledged events delivered; %d delivered twice; %d duplicate batches", len(acked), dups, s.Stats().DuplicateBatches)
}

// TestKill9LosesNothing kills the relay with SIGKILL in the middle of a
// load and checks that after a restart every acknowledged event arrives,
// and that batches formed before the kill keep their ids and contents.
func TestKill9LosesNothing(t *testing.T) {
	run := stopUnderLoad(t, 2000, syscall.SIGKILL)
	if run.exit == nil {
		t.Fatal("a killed process exited cleanly")
	}
	s, dir, cfgPath, acked := run.sink, run.dir, run.cfgPath, run.acked

	// The batches formed before the kill, as stored.
	st, err := storage.Open(storage.Options{Dir: filepath.Join(dir, "data"), Logger: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	formed, err := st.Batches()
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}

	startServe(t, cfgPath)
	checkDelivered(t, s, acked)
	byID := map[string]testsink.Batch{}
	for _, b := range s.Batches() {
		byID[b.ID] = b
	}
	for _, b := range formed {
		got, ok := byID[b.ID]
		if !ok {
			t.Fatalf("batch %s formed before the kill was not delivered under its id", b.ID)
		}
		if got.Count != len(b.Seqs) {
			t.Fatalf("batch %s had %d events, arrived with %d", b.ID, len(b.Seqs), got.Count)
		}
	}
	t.Logf("%d batches were stored at the kill; all arrived with their ids", len(formed))
}

// TestSIGTERMExitsCleanly stops the relay with SIGTERM under load: it exits
// 0 and, after a restart, every acknowledged event arrives.
func TestSIGTERMExitsCleanly(t *testing.T) {
	run := stopUnderLoad(t, 1000, syscall.SIGTERM)
	if run.exit != nil {
		t.Fatalf("SIGTERM: exit %v, want 0\n%s", run.exit, run.log)
	}
	if !strings.Contains(run.log, `"shutdown_timeout":"20s"`) { // a duration, as everywhere in the log
		t.Errorf("no shutdown line with its timeout as a duration:\n%s", run.log)
	}
	startServe(t, run.cfgPath)
	checkDelivered(t, run.sink, run.acked)
}

// loadedRun is a relay stopped by a signal under load.
type loadedRun struct {
	sink         *testsink.Sink
	dir, cfgPath string
	acked        []string // ids the relay acknowledged before it stopped
	exit         error    // the process's exit
	log          string
}

// stopUnderLoad starts a relay delivering to a sink, loads it until the
// sink has delivered events, sends sig and waits for the process to end.
func stopUnderLoad(t *testing.T, delivered int64, sig syscall.Signal) loadedRun {
	t.Helper()
	run := loadedRun{sink: startSink(t), dir: t.TempDir()}
	run.cfgPath = writeConfig(t, run.dir, run.sink.URL())
	p := startServe(t, run.cfgPath)
	stop := make(chan struct{})
	wait := load("http://"+p.ingest+"/v1/events", stop)
	waitFor(t, 30*time.Second, "some events delivered", func() bool { return run.sink.Stats().Events >= delivered })
	run.exit = p.signal(t, sig)
	close(stop)
	run.acked = wait()
	run.log = p.logText()
	return run
}

// TestSIGHUPAddsAndRemovesSubscriber reloads the config file on SIGHUP:
// a subscriber is added, then the first one removed, then a bad file is
// rejected, and no event is lost or misrouted.
func TestSIGHUPAddsAndRemovesSubscriber(t *testing.T) {
	s1, s2 := startSink(t), startSink(t)
	dir := t.TempDir()
	block := func(id, url string) string {
		return fmt.Sprintf("  - id: %s\n    url: %s\n    secret: %s\n    batch: { max_events: 20, max_wait: 50ms }\n", id, url, testSecret)
	}
	cfgPath := writeConfigSubs(t, dir, block("s1", s1.URL()))
	p := startServe(t, cfgPath)
	c := &fasthttp.Client{}
	send := func(n int) []string {
		var ids []string
		for i := range n {
			req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
			req.Header.SetMethod("POST")
			req.SetRequestURI("http://" + p.ingest + "/v1/events")
			req.Header.SetContentType("application/json")
			req.SetBodyString(fmt.Sprintf(`{"type":"t","data":%d}`, i))
			if err := c.Do(req, resp); err != nil || resp.StatusCode() != 202 {
				t.Fatalf("ingest: %v %d %s", err, resp.StatusCode(), resp.Body())
			}
			var a struct{ IDs []string }
			if err := json.Unmarshal(resp.Body(), &a); err != nil {
				t.Fatal(err)
			}
			ids = append(ids, a.IDs...)
			fasthttp.ReleaseRequest(req)
			fasthttp.ReleaseResponse(resp)
		}
		return ids
	}
	hup := func(want string, n int) {
		t.Helper()
		if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 20*time.Second, want, func() bool { return strings.Count(p.logText(), want) >= n })
	}

	first := send(50)
	writeConfigSubs(t, dir, block("s1", s1.URL())+block("s2", s2.URL()))
	hup("reload done", 1)
	second := send(50)
	writeConfigSubs(t, dir, block("s2", s2.URL()))
	hup("reload done", 2)
	third := send(50)
	if err := os.WriteFile(cfgPath, []byte("subscribers: [{id: BAD}]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	hup("config rejected", 1)
	fourth := send(50)

	has := func(s *testsink.Sink, ids []string) bool {
		got := map[string]bool{}
		for _, e := range s.Events() {
			got[e.ID] = true
		}
		for _, id := range ids {
			if !got[id] {
				return false
			}
		}
		return true
	}
	waitFor(t, 20*time.Second, "s1 gets the events sent while it was configured", func() bool { return has(s1, append(first, second...)) })
	waitFor(t, 20*time.Second, "s2 gets the events sent after it was added", func() bool {
		return has(s2, append(append(second, third...), fourth...))
	})
	for _, e := range s1.Events() {
		if slices.Contains(third, e.ID) || slices.Contains(fourth, e.ID) {
			t.Fatalf("event %s sent after s1's removal reached s1", e.ID)
		}
	}
	for _, e := range s2.Events() {
		if slices.Contains(first, e.ID) {
			t.Fatalf("event %s sent before s2 was added reached s2", e.ID)
		}
	}
}

// scriptedSubscriber is a real fasthttp server that answers every delivery
// with the status set by the test and records what it saw.
type scriptedSubscriber struct {
	status   atomic.Int64
	mu       sync.Mutex
	attempts map[string][]int // batch id -> X-Webhook-Attempt of each request
	order    []int            // data of each event of each 2xx-answered first delivery
	done     map[string]bool
	addr     string
}

func startScripted(t *testing.T, status int) *scriptedSubscriber {
	t.Helper()
	s := &scriptedSubscriber{attempts: map[string][]int{}, done: map[string]bool{}}
	s.status.Store(int64(status))
	srv := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) {
		id := string(ctx.Request.Header.Peek("X-Webhook-Batch-Id"))
		attempt, _ := strconv.Atoi(string(ctx.Request.Header.Peek("X-Webhook-Attempt")))
		st := int(s.status.Load())
		s.mu.Lock()
		defer s.mu.Unlock()
		s.attempts[id] = append(s.attempts[id], attempt)
		if st == 200 && !s.done[id] {
			s.done[id] = true
			var body struct{ Events []struct{ Data int } }
			if err := json.Unmarshal(ctx.PostBody(), &body); err != nil {
				t.Errorf("bad body: %v", err)
			}
			for _, e := range body.Events {
				s.order = append(s.order, e.Data)
			}
		}
		ctx.SetStatusCode(st)
	}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln) //nolint:errcheck // ends with Shutdown
	t.Cleanup(func() { _ = srv.Shutdown() })
	s.addr = ln.Addr().String()
	return s
}

func (s *scriptedSubscriber) maxAttempt() (id string, n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for b, as := range s.attempts {
		if a := slices.Max(as); a > n {
			id, n = b, a
		}
	}
	return id, n
}

// TestKill9KeepsAttemptsOrderAndDeadLetters kills the relay while an
// ordered subscriber's first batch is being retried and another
// subscriber's batches are dead letters: after the restart the attempt
// count goes on (no reset to 1), the dead letters are still there, and the
// ordered subscriber gets every event in order.
func TestKill9KeepsAttemptsOrderAndDeadLetters(t *testing.T) {
	ord := startScripted(t, 503)
	dl := startScripted(t, 400)
	dir := t.TempDir()
	subs := fmt.Sprintf(`  - id: ord
    url: http://%s/hooks
    secret: %s
    ordered: true
    event_types: ["ord"]
    batch: { max_events: 10, max_wait: 50ms }
  - id: dl
    url: http://%s/hooks
    secret: %s
    event_types: ["dl"]
    batch: { max_events: 5, max_wait: 50ms }
`, ord.addr, testSecret, dl.addr, testSecret)
	cfgPath := writeConfigSubs(t, dir, subs)
	cfg, _ := os.ReadFile(cfgPath)
	cfg = []byte(strings.Replace(string(cfg), "max_backoff: 500ms }", "max_backoff: 100ms, max_attempts: 1000 }", 1))
	if err := os.WriteFile(cfgPath, cfg, 0o600); err != nil {
		t.Fatal(err)
	}
	p := startServe(t, cfgPath)
	c := &fasthttp.Client{}
	post := func(ingest, typ string, data int) {
		t.Helper()
		req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
		defer fasthttp.ReleaseRequest(req)
		defer fasthttp.ReleaseResponse(resp)
		req.Header.SetMethod("POST")
		req.SetRequestURI("http://" + ingest + "/v1/events")
		req.Header.SetContentType("application/json")
		req.SetBodyString(fmt.Sprintf(`{"type":%q,"data":%d}`, typ, data))
		if err := c.Do(req, resp); err != nil || resp.StatusCode() != 202 {
			t.Fatalf("ingest: %v %d", err, resp.StatusCode())
		}
	}
	for i := range 60 {
		post(p.ingest, "ord", i)
	}
	for i := range 10 {
		post(p.ingest, "dl", i)
	}
	deadLetters := func(admin string) []string {
		req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
		defer fasthttp.ReleaseRequest(req)
		defer fasthttp.ReleaseResponse(resp)
		req.SetRequestURI("http://" + admin + "/v1/dead-letters?subscriber=dl")
		if err := c.Do(req, resp); err != nil {
			t.Fatal(err)
		}
		var out []struct {
			BatchID string `json:"batch_id"`
		}
		if err := json.Unmarshal(resp.Body(), &out); err != nil {
			t.Fatalf("dead letters: %v: %s", err, resp.Body())
		}
		var ids []string
		for _, d := range out {
			ids = append(ids, d.BatchID)
		}
		slices.Sort(ids)
		return ids
	}
	var before []string
	waitFor(t, 20*time.Second, "retries and dead letters", func() bool {
		_, n := ord.maxAttempt()
		before = deadLetters(p.admin)
		return n >= 3 && len(before) == 2
	})
	if err := p.signal(t, syscall.SIGKILL); err == nil {
		t.Fatal("a killed process exited cleanly")
	}
	batch, last := ord.maxAttempt()

	ord.status.Store(200)
	p = startServe(t, cfgPath)
	waitFor(t, 20*time.Second, "all 60 ordered events", func() bool {
		ord.mu.Lock()
		defer ord.mu.Unlock()
		return len(ord.order) == 60
	})
	ord.mu.Lock()
	attempts := slices.Clone(ord.attempts[batch])
	order := slices.Clone(ord.order)
	ord.mu.Unlock()
	// The attempt in flight at the kill may be made again under its number
	// (its outcome was not stored), never under a smaller one.
	if got := attempts[len(attempts)-1]; got < last || got < 3 {
		t.Fatalf("batch %s: attempt %d after the restart, want %d or more (attempts %v)", batch, got, last, attempts)
	}
	for i, d := range order {
		if d != i {
			t.Fatalf("ordered subscriber got %v, want 0..59 in order", order)
		}
	}
	if after := deadLetters(p.admin); !slices.Equal(after, before) {
		t.Fatalf("dead letters %v after the restart, want %v", after, before)
	}
}
