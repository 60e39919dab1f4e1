package main

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hookbatch/hookbatch/signing"
	hooksink "github.com/hookbatch/hookbatch/sink"
	"github.com/valyala/fasthttp"
)

// cmdOutput is an io.Writer that a command and its test share safely.
type cmdOutput struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (o *cmdOutput) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.b.Write(p)
}

func (o *cmdOutput) String() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.b.String()
}

// startSinkCmd runs `hookbatch sink args...` until the test ends and returns
// its running sink, its output and a function that stops it and returns its
// exit code.
func startSinkCmd(t *testing.T, args ...string) (*hooksink.Sink, *cmdOutput, func() int) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var stdout, stderr cmdOutput
	ready := make(chan *hooksink.Sink, 1)
	code := make(chan int, 1)
	go func() {
		code <- runSink(ctx, append([]string{"-listen", "127.0.0.1:0"}, args...), &stdout, &stderr, func(s *hooksink.Sink) { ready <- s })
	}()
	var s *hooksink.Sink
	select {
	case s = <-ready:
	case c := <-code:
		cancel()
		t.Fatalf("hookbatch sink exited with %d: %s", c, stderr.String())
	}
	stop := sync.OnceValue(func() int {
		cancel()
		return <-code
	})
	t.Cleanup(func() { stop() })
	return s, &stdout, stop
}

// postSignedBatch delivers a batch of n events as the relay does (DESIGN §6),
// signed with secret, and returns the status.
func postSignedBatch(t *testing.T, url, secret, id, subscriber string, n, attempt int) int {
	t.Helper()
	var body bytes.Buffer
	fmt.Fprintf(&body, `{"batch":true,"batch_id":%q,"subscriber":%q,"count":%d,"events":[`, id, subscriber, n)
	for i := range n {
		if i > 0 {
			body.WriteByte(',')
		}
		fmt.Fprintf(&body, `{"id":"evt_%d","type":"order.created","timestamp":"2026-12-03T10:00:00Z","data":{"i":%d}}`, i, i)
	}
	body.WriteString("]}")
	req := fasthttp.AcquireRequest()
	defer fasthttp.ReleaseRequest(req)
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseResponse(resp)
	req.Header.SetMethod("POST")
	req.SetRequestURI(url)
	req.Header.SetContentType("application/json")
	req.Header.Set("X-Webhook-Batch", "true")
	req.Header.Set("X-Webhook-Batch-Id", id)
	req.Header.Set("X-Webhook-Batch-Count", strconv.Itoa(n))
	req.Header.Set("X-Webhook-Attempt", strconv.Itoa(attempt))
	req.Header.Set("webhook-id", id)
	if secret != "" {
		signer, err := signing.NewSigner(secret, nil)
		if err != nil {
			t.Fatal(err)
		}
		ts := time.Now().Unix()
		req.Header.SetBytesV("X-Webhook-Signature", signer.AppendHex(nil, body.Bytes()))
		req.Header.Set("webhook-timestamp", strconv.FormatInt(ts, 10))
		req.Header.SetBytesV("webhook-signature", signer.AppendStandard(nil, []byte(id), ts, body.Bytes()))
	}
	req.SetBody(body.Bytes())
	if err := fasthttp.DoTimeout(req, resp, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode()
}

func TestSinkCommand(t *testing.T) {
	const secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	s, out, stop := startSinkCmd(t, "-secret", "other-secret,"+secret)
	if status := postSignedBatch(t, s.URL(), secret, "b_01HX", "demo", 100, 1); status != 200 {
		t.Fatalf("signed batch: status %d", status)
	}
	if status := postSignedBatch(t, s.URL(), secret, "b_01HX", "demo", 100, 2); status != 200 {
		t.Fatalf("duplicate batch: status %d", status)
	}
	if status := postSignedBatch(t, s.URL(), "whsec_d3Jvbmcta2V5", "b_2", "demo", 1, 1); status != 401 {
		t.Fatalf("batch signed with another secret: status %d, want 401", status)
	}
	if code := stop(); code != 0 {
		t.Fatalf("exit code %d", code)
	}
	got := out.String()
	for _, want := range []string{
		"receiving deliveries at " + s.URL() + " (verifying signatures with 2 secret(s))",
		" batch b_01HX 100 events attempt 1 from demo\n",
		" duplicate batch b_01HX 100 events attempt 2 from demo\n",
		" refused batch b_2: 401 ",
		"hookbatch sink: 1 batches, 100 events, 1 duplicate batches, 1 rejected (signature), 0 invalid, 0 failed on purpose\n",
	} {
		if !strings.Contains(got, want) {
			t.Fatalf("output lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, secret[6:]) {
		t.Fatalf("output shows the secret:\n%s", got)
	}
}

func TestSinkCommandSecretFromEnv(t *testing.T) {
	t.Setenv("HOOKBATCH_SINK_SECRET", "env-secret")
	s, _, _ := startSinkCmd(t, "-quiet")
	if status := postSignedBatch(t, s.URL(), "", "b_1", "demo", 1, 1); status != 401 {
		t.Fatalf("unsigned batch: status %d, want 401", status)
	}
	if status := postSignedBatch(t, s.URL(), "env-secret", "b_1", "demo", 1, 1); status != 200 {
		t.Fatalf("signed batch: status %d, want 200", status)
	}
}

func TestSinkCommandFailing(t *testing.T) {
	t.Setenv("HOOKBATCH_SINK_SECRET", "")
	s, out, stop := startSinkCmd(t, "-fail-rate", "1", "-fail-status", "503", "-quiet", "-history", "0")
	if status := postSignedBatch(t, s.URL(), "", "b_1", "demo", 3, 1); status != 503 {
		t.Fatalf("status %d, want 503", status)
	}
	s.SetFailRate(0)
	if status := postSignedBatch(t, s.URL(), "", "b_1", "demo", 3, 2); status != 200 {
		t.Fatalf("status %d, want 200", status)
	}
	if h := s.History(); len(h) != 0 {
		t.Fatalf("history kept with -history 0: %+v", h)
	}
	stop()
	got := out.String()
	if strings.Contains(got, "batch b_1") || !strings.Contains(got, "1 batches, 3 events, 0 duplicate batches, 0 rejected (signature), 0 invalid, 1 failed on purpose") {
		t.Fatalf("output with -quiet:\n%s", got)
	}
}

func TestSinkCommandBadFlags(t *testing.T) {
	f := func(want string, args ...string) {
		t.Helper()
		var stdout, stderr cmdOutput
		if code := runSink(context.Background(), args, &stdout, &stderr, nil); code != 2 {
			t.Fatalf("%q: exit code %d, want 2", args, code)
		}
		if !strings.Contains(stderr.String(), want) {
			t.Fatalf("%q: stderr %q lacks %q", args, stderr.String(), want)
		}
	}
	f("-fail-rate", "-fail-rate", "1.5")
	f("-fail-rate", "-fail-rate", "NaN")
	f("-fail-status", "-fail-status", "42")
	f("-delay", "-delay", "-1s")
	f("-history", "-history", "-3")
	f("secret #2", "-secret", "ok", "-secret", "whsec_!!!!")
	f("unexpected argument", "extra")
	f("flag provided but not defined", "-nope")

	var stdout, stderr cmdOutput
	if code := runSink(context.Background(), []string{"-listen", "256.0.0.1:1"}, &stdout, &stderr, nil); code != 1 {
		t.Fatalf("unusable address: exit code %d, want 1", code)
	}
}

// TestSecretList: comma-separated whsec_ secrets are split; a raw secret
// is taken as written, commas and spaces included.
func TestSecretList(t *testing.T) {
	f := func(v string, want ...string) {
		t.Helper()
		var l secretList
		if err := l.Set(v); err != nil {
			t.Fatal(err)
		}
		if !slices.Equal([]string(l), want) {
			t.Errorf("Set(%q) = %q, want %q", v, []string(l), want)
		}
	}
	f("whsec_A, whsec_B", "whsec_A", "whsec_B")
	f("other-secret,whsec_B", "other-secret", "whsec_B")
	f("correct,horse battery staple ", "correct,horse battery staple ")
	f("")
}
