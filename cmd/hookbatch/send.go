package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/hookbatch/hookbatch/config"
	"github.com/hookbatch/hookbatch/event"
	"github.com/valyala/fasthttp"
)

// send runs `hookbatch send`: post events to a relay, for trying it by hand.
func send(args []string) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return runSend(ctx, args, os.Stdout, os.Stderr)
}

// sendPlaceholder in -data is replaced by the event number, 1 to -n.
const sendPlaceholder = "{{i}}"

// runSend parses the flags of `hookbatch send`, posts the events, prints
// what the relay answered and returns the exit code: 2 for bad flags, 1 when
// any request failed or ctx ended first, else 0.
func runSend(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fset := flag.NewFlagSet("send", flag.ContinueOnError)
	url := fset.String("url", "http://127.0.0.1:8080/v1/events", "ingest `URL`")
	typ := fset.String("type", "", "event `type` (required)")
	data := fset.String("data", "{}", "event data, a `JSON` value; "+sendPlaceholder+" in it is replaced by the event number (1 to -n)")
	n := fset.Int("n", 1, "number of events")
	batch := fset.Int("batch", 1, "events per request (1: a single object, more: an array)")
	conc := fset.Int("c", 1, "requests in flight")
	token := fset.String("token", "", "bearer `token` for the Authorization header")
	timeout := fset.Duration("timeout", 10*time.Second, "timeout of each request")
	if code, done := parseFlags(fset, args, stderr, "send -type T [flags]", "Post events to a relay's ingest API and report what it answered."); done {
		return code
	}

	var problems []string
	if fset.NArg() > 0 {
		problems = append(problems, fmt.Sprintf("unexpected argument %q", fset.Arg(0)))
	}
	if *typ == "" {
		problems = append(problems, "-type is required")
	} else if c := utf8.RuneCountInString(*typ); c > event.MaxTypeChars {
		problems = append(problems, fmt.Sprintf("-type is %d characters long; at most %d are allowed", c, event.MaxTypeChars))
	}
	if err := json.Unmarshal([]byte(strings.ReplaceAll(*data, sendPlaceholder, "1")), new(json.RawMessage)); err != nil {
		problems = append(problems, fmt.Sprintf("-data is not valid JSON (with %s as 1): %v", sendPlaceholder, err))
	}
	if !strings.HasPrefix(*url, "http://") && !strings.HasPrefix(*url, "https://") {
		problems = append(problems, fmt.Sprintf("-url %q is not an http:// or https:// URL", config.RedactURL(*url)))
	}
	if *n < 1 {
		problems = append(problems, "-n must be at least 1")
	}
	if *batch < 1 {
		problems = append(problems, "-batch must be at least 1")
	}
	if *conc < 1 {
		problems = append(problems, "-c must be at least 1")
	}
	if *timeout <= 0 {
		problems = append(problems, "-timeout must be positive")
	}
	if len(problems) > 0 {
		for _, p := range problems {
			fmt.Fprintln(stderr, "hookbatch send: "+p)
		}
		return 2
	}

	s := &sender{
		url:   *url,
		token: *token,
		n:     *n,
		batch: *batch,
		head:  append(event.AppendString([]byte(`{"type":`), []byte(*typ)), `,"data":`...),
		data:  strings.Split(*data, sendPlaceholder),
		client: &fasthttp.Client{
			Name:                "hookbatch-send/" + version,
			MaxConnsPerHost:     *conc,
			MaxConnWaitTimeout:  *timeout,
			ReadTimeout:         *timeout,
			WriteTimeout:        *timeout,
			MaxIdleConnDuration: 10 * time.Second,
			MaxResponseBodySize: 16 << 20,
		},
		failures: make(map[string]*sendFailure),
	}
	requests := (*n + *batch - 1) / *batch
	start := time.Now()
	var wg sync.WaitGroup
	for range min(*conc, requests) {
		wg.Go(func() { s.work(ctx, requests) })
	}
	wg.Wait()
	elapsed := time.Since(start)
	s.client.CloseIdleConnections()
	return s.report(stdout, elapsed, ctx.Err() != nil)
}

// sender posts events and tallies the answers.
type sender struct {
	url, token string
	n, batch   int
	head       []byte   // {"type":"...","data":
	data       []string // -data split at the placeholder
	client     *fasthttp.Client
	next       atomic.Int64 // the next request to make

	mu                             sync.Mutex
	requests, events               int // made, with an answer or not
	okEvents                       int // in requests answered 2xx
	accepted, duplicates, unrouted int
	failures                       map[string]*sendFailure // by "HTTP <status>" or "connection error"
}

// sendFailure counts the failed requests of one kind.
type sendFailure struct {
	requests, events int
	first            string // what the first of them answered or why it failed
}

// work makes requests until all are made or ctx is done.
func (s *sender) work(ctx context.Context, requests int) {
	req := fasthttp.AcquireRequest()
	defer fasthttp.ReleaseRequest(req)
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseResponse(resp)
	req.Header.SetMethod(fasthttp.MethodPost)
	req.SetRequestURI(s.url)
	req.Header.SetContentType("application/json")
	if s.token != "" {
		req.Header.Set("Authorization", "Bearer "+s.token)
	}
	var body []byte
	for ctx.Err() == nil {
		i := int(s.next.Add(1) - 1)
		if i >= requests {
			return
		}
		first, last := i*s.batch+1, min((i+1)*s.batch, s.n)
		body = s.appendBody(body[:0], first, last)
		req.SetBody(body)
		err := s.client.Do(req, resp)
		s.record(last-first+1, resp, err)
	}
}

// appendBody appends the request body for events first to last (numbered
// from 1): one object for one event, else an array.
func (s *sender) appendBody(dst []byte, first, last int) []byte {
	if s.batch > 1 {
		dst = append(dst, '[')
	}
	for i := first; i <= last; i++ {
		if i > first {
			dst = append(dst, ',')
		}
		dst = append(dst, s.head...)
		for j, part := range s.data {
			if j > 0 {
				dst = strconv.AppendInt(dst, int64(i), 10)
			}
			dst = append(dst, part...)
		}
		dst = append(dst, '}')
	}
	if s.batch > 1 {
		dst = append(dst, ']')
	}
	return dst
}

// record tallies the answer to one request of count events.
func (s *sender) record(count int, resp *fasthttp.Response, err error) {
	var kind, why string
	var ack struct{ Accepted, Duplicates, Unrouted int }
	switch {
	case err != nil:
		kind, why = "connection error", err.Error()
	case resp.StatusCode() < 200 || resp.StatusCode() > 299:
		kind = "HTTP " + strconv.Itoa(resp.StatusCode())
		var e struct{ Error string }
		if json.Unmarshal(resp.Body(), &e) == nil && e.Error != "" {
			why = e.Error
		} else {
			why = strings.TrimSpace(string(resp.Body()))
		}
	default:
		_ = json.Unmarshal(resp.Body(), &ack) // without counts, the events show as acknowledged only
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	s.requests++
	s.events += count
	if kind == "" {
		s.okEvents += count
		s.accepted += ack.Accepted
		s.duplicates += ack.Duplicates
		s.unrouted += ack.Unrouted
		return
	}
	f := s.failures[kind]
	if f == nil {
		f = &sendFailure{first: why}
		s.failures[kind] = f
	}
	f.requests++
	f.events += count
}

// report prints the tally and returns the exit code.
func (s *sender) report(w io.Writer, elapsed time.Duration, interrupted bool) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	rate := float64(s.okEvents) / max(elapsed.Seconds(), 1e-9)
	fmt.Fprintf(w, "sent %d events in %d requests to %s in %v: %.0f events/s acknowledged\n",
		s.events, s.requests, config.RedactURL(s.url), elapsed.Round(time.Millisecond), rate)
	fmt.Fprintf(w, "accepted %d, duplicates %d, unrouted %d\n", s.accepted, s.duplicates, s.unrouted)
	if other := s.okEvents - s.accepted - s.duplicates - s.unrouted; other != 0 {
		fmt.Fprintf(w, "(%d events acknowledged without matching counts in the answers)\n", other)
	}
	code := 0
	if interrupted && s.events < s.n {
		fmt.Fprintf(w, "interrupted: %d of %d events not sent\n", s.n-s.events, s.n)
		code = 1
	}
	if len(s.failures) == 0 {
		return code
	}
	var failed, failedEvents int
	for _, f := range s.failures {
		failed += f.requests
		failedEvents += f.events
	}
	fmt.Fprintf(w, "failed %d requests (%d events):\n", failed, failedEvents)
	kinds := make([]string, 0, len(s.failures))
	for k := range s.failures {
		kinds = append(kinds, k)
	}
	slices.Sort(kinds)
	for _, k := range kinds {
		f := s.failures[k]
		fmt.Fprintf(w, "  %s: %d requests (%d events)", k, f.requests, f.events)
		if f.first != "" {
			fmt.Fprintf(w, ", first: %s", truncate(f.first, 200))
		}
		fmt.Fprintln(w)
	}
	return 1
}

// truncate shortens s to at most n bytes, on a rune boundary.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "..."
}
