package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

// sendTarget is an ingest-like fasthttp server on loopback that records the
// events it is sent and answers as DESIGN §5 says.
type sendTarget struct {
	url string

	mu       sync.Mutex
	events   []map[string]any
	bodies   [][]byte
	auth     []string
	answer   func(events int) (status int, body string) // called under mu; nil: 202 with the counts
	requests int
}

func startSendTarget(t *testing.T) *sendTarget {
	t.Helper()
	st := &sendTarget{}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	st.url = "http://" + ln.Addr().String() + "/v1/events"
	srv := &fasthttp.Server{
		Handler:            st.handle,
		ReadTimeout:        5 * time.Second,
		WriteTimeout:       5 * time.Second,
		IdleTimeout:        5 * time.Second,
		MaxRequestBodySize: 1 << 20,
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(ln)
	}()
	t.Cleanup(func() {
		_ = srv.Shutdown()
		_ = ln.Close() // in case Serve had not registered it yet
		<-done
	})
	return st
}

func (st *sendTarget) handle(ctx *fasthttp.RequestCtx) {
	if !ctx.IsPost() || string(ctx.Path()) != "/v1/events" || string(ctx.Request.Header.ContentType()) != "application/json" {
		ctx.Error(`{"error":"wrong request"}`, 400)
		return
	}
	body := bytes.Clone(ctx.PostBody())
	var events []map[string]any
	if bytes.HasPrefix(body, []byte("[")) {
		if err := json.Unmarshal(body, &events); err != nil {
			ctx.Error(`{"error":"bad json"}`, 400)
			return
		}
	} else {
		var e map[string]any
		if err := json.Unmarshal(body, &e); err != nil {
			ctx.Error(`{"error":"bad json"}`, 400)
			return
		}
		events = append(events, e)
	}
	st.mu.Lock()
	st.requests++
	st.bodies = append(st.bodies, body)
	st.auth = append(st.auth, string(ctx.Request.Header.Peek("Authorization")))
	if st.answer != nil {
		status, b := st.answer(len(events))
		st.mu.Unlock()
		ctx.SetContentType("application/json")
		ctx.SetStatusCode(status)
		ctx.SetBodyString(b)
		return
	}
	st.events = append(st.events, events...)
	st.mu.Unlock()
	ctx.SetContentType("application/json")
	ctx.SetStatusCode(fasthttp.StatusAccepted)
	fmt.Fprintf(ctx, `{"accepted":%d,"duplicates":0,"unrouted":0,"ids":[]}`, len(events))
}

func TestSendDelivers(t *testing.T) {
	st := startSendTarget(t)
	var stdout, stderr cmdOutput
	code := runSend(context.Background(), []string{
		"-url", st.url, "-type", "order.created", "-data", `{"n": {{i}}, "name": "order-{{i}}"}`,
		"-n", "25", "-batch", "4", "-c", "3", "-token", "tok",
	}, &stdout, &stderr)
	if code != 0 {
		t.Fatalf("exit code %d\nstdout:\n%s\nstderr:\n%s", code, stdout.String(), stderr.String())
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	if len(st.events) != 25 || st.requests != 7 {
		t.Fatalf("target got %d events in %d requests, want 25 in 7", len(st.events), st.requests)
	}
	seen := map[int]bool{}
	for _, e := range st.events {
		data := e["data"].(map[string]any)
		n := int(data["n"].(float64))
		if e["type"] != "order.created" || data["name"] != fmt.Sprintf("order-%d", n) || seen[n] || n < 1 || n > 25 {
			t.Fatalf("event %v", e)
		}
		seen[n] = true
	}
	for _, a := range st.auth {
		if a != "Bearer tok" {
			t.Fatalf("Authorization %q", a)
		}
	}
	out := stdout.String()
	for _, want := range []string{"sent 25 events in 7 requests to " + st.url, "events/s", "accepted 25, duplicates 0, unrouted 0\n"} {
		if !strings.Contains(out, want) {
			t.Fatalf("output lacks %q:\n%s", want, out)
		}
	}
}

func TestSendSingleObjects(t *testing.T) {
	st := startSendTarget(t)
	var stdout, stderr cmdOutput
	if code := runSend(context.Background(), []string{"-url", st.url, "-type", `a"b`, "-n", "3"}, &stdout, &stderr); code != 0 {
		t.Fatalf("exit code %d: %s%s", code, stdout.String(), stderr.String())
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	for _, b := range st.bodies {
		if string(b) != `{"type":"a\"b","data":{}}` {
			t.Fatalf("body %s", b)
		}
	}
	if len(st.bodies) != 3 || st.auth[0] != "" {
		t.Fatalf("%d requests, Authorization %q", len(st.bodies), st.auth[0])
	}
}

func TestSendReportsFailures(t *testing.T) {
	st := startSendTarget(t)
	calls := 0
	st.answer = func(n int) (int, string) {
		calls++ // under st.mu
		switch calls % 3 {
		case 0:
			return 422, `{"error":"no subscriber matches event 0"}`
		case 1:
			return 202, fmt.Sprintf(`{"accepted":%d,"duplicates":1,"unrouted":0,"ids":[]}`, n-1)
		}
		return 503, `{"error":"disk quota reached"}`
	}
	var stdout, stderr cmdOutput
	code := runSend(context.Background(), []string{"-url", st.url, "-type", "t", "-n", "12", "-batch", "2"}, &stdout, &stderr)
	if code != 1 {
		t.Fatalf("exit code %d, want 1:\n%s", code, stdout.String())
	}
	out := stdout.String()
	for _, want := range []string{
		"accepted 2, duplicates 2, unrouted 0\n",
		"failed 4 requests (8 events):\n",
		"  HTTP 422: 2 requests (4 events), first: no subscriber matches event 0\n",
		"  HTTP 503: 2 requests (4 events), first: disk quota reached\n",
	} {
		if !strings.Contains(out, want) {
			t.Fatalf("output lacks %q:\n%s", want, out)
		}
	}
}

func TestSendConnectionError(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	var stdout, stderr cmdOutput
	code := runSend(context.Background(), []string{"-url", "http://" + addr + "/v1/events", "-type", "t", "-n", "2", "-timeout", "2s"}, &stdout, &stderr)
	if code != 1 || !strings.Contains(stdout.String(), "connection error: 2 requests (2 events)") {
		t.Fatalf("exit code %d:\n%s", code, stdout.String())
	}
}

func TestSendInterrupted(t *testing.T) {
	st := startSendTarget(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	var stdout, stderr cmdOutput
	code := runSend(ctx, []string{"-url", st.url, "-type", "t", "-n", "5"}, &stdout, &stderr)
	if code != 1 || !strings.Contains(stdout.String(), "interrupted: 5 of 5 events not sent") {
		t.Fatalf("exit code %d:\n%s", code, stdout.String())
	}
}

func TestSendBadFlags(t *testing.T) {
	st := startSendTarget(t)
	f := func(want string, args ...string) {
		t.Helper()
		var stdout, stderr cmdOutput
		if code := runSend(context.Background(), append([]string{"-url", st.url}, args...), &stdout, &stderr); code != 2 {
			t.Fatalf("%q: exit code %d, want 2", args, code)
		}
		if !strings.Contains(stderr.String(), want) {
			t.Fatalf("%q: stderr %q lacks %q", args, stderr.String(), want)
		}
	}
	f("-type is required")
	f("-type is required", "-type", "")
	f("-type is 129 characters long", "-type", strings.Repeat("x", 129))
	f("-data is not valid JSON", "-type", "t", "-data", `{"a":`)
	f("-data is not valid JSON", "-type", "t", "-data", `{"a":1} x`)
	f("-data is not valid JSON", "-type", "t", "-data", ``)
	f("-n must be at least 1", "-type", "t", "-n", "0")
	f("-batch must be at least 1", "-type", "t", "-batch", "0")
	f("-c must be at least 1", "-type", "t", "-c", "-1")
	f("is not an http:// or https:// URL", "-type", "t", "-url", "localhost:8080")
	f("unexpected argument", "-type", "t", "extra")
	// The URL is shown without its credentials.
	var stdout, stderr cmdOutput
	runSend(context.Background(), []string{"-type", "t", "-url", "ftp://user:PaSsW0rd@h/x?token=T0k3n"}, &stdout, &stderr)
	if out := stderr.String(); !strings.Contains(out, "REDACTED") || strings.Contains(out, "PaSsW0rd") || strings.Contains(out, "T0k3n") {
		t.Fatalf("bad -url with credentials: stderr %q", out)
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.requests != 0 {
		t.Fatalf("%d requests sent despite bad flags", st.requests)
	}
}
