package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hookbatch/hookbatch/config"
	"github.com/hookbatch/hookbatch/relay"
	hooksink "github.com/hookbatch/hookbatch/sink"
	"github.com/rs/zerolog"
	"github.com/valyala/fasthttp"
)

// demo runs a relay on a temporary data dir, a sink and a producer in one
// process, shows the flow live, then a summary. Exit 1 if an acknowledged
// event did not arrive.
func demo(args []string) int {
	fset := flag.NewFlagSet("demo", flag.ContinueOnError)
	total := fset.Int("events", 20000, "events to send")
	rate := fset.Int("rate", 5000, "events per second offered")
	perReq := fset.Int("batch", 10, "events per ingest request")
	if code, done := parseFlags(fset, args, os.Stderr, "demo [flags]",
		"A relay, a sink and a producer in one process, shown live, then a summary."); done {
		return code
	}
	if *total < 1 || *rate < 1 || *perReq < 1 {
		fmt.Fprintln(os.Stderr, "hookbatch demo: -events, -rate and -batch must be at least 1")
		return 2
	}
	return runDemo(os.Stdout, *total, *rate, *perReq)
}

const demoSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

func runDemo(out io.Writer, total, rate, perReq int) int {
	// Ctrl-C or SIGTERM end the demo early, still through the deferred
	// clean-up (its data directory).
	interrupt, stopSignals := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stopSignals()
	dir, err := os.MkdirTemp("", "hookbatch-demo-")
	if err != nil {
		fmt.Fprintln(out, "hookbatch demo:", err)
		return 1
	}
	defer os.RemoveAll(dir)

	var lat latencies
	sink := hooksink.New(hooksink.Options{
		Secrets: []string{demoSecret},
		OnBatch: func(b hooksink.Batch) {
			now := time.Now()
			for _, e := range b.Events {
				if t, err := time.Parse(time.RFC3339Nano, e.Timestamp); err == nil {
					lat.add(now.Sub(t))
				}
			}
		},
	})
	if err := sink.Start("127.0.0.1:0"); err != nil {
		fmt.Fprintln(out, "hookbatch demo: sink:", err)
		return 1
	}
	defer sink.Close()

	cfg := config.Default()
	cfg.Listen, cfg.AdminListen, cfg.DataDir = "127.0.0.1:0", "127.0.0.1:0", dir
	cfg.Delivery.AllowPrivateNetworks = true
	cfg.Subscribers = []config.Subscriber{{
		ID: "demo", URL: sink.URL(), Secret: demoSecret,
		Batch: config.Batch{MaxEvents: 100, MaxBytes: 1 << 20, MaxWait: 200 * time.Millisecond},
	}}
	r, err := relay.New(cfg, zerolog.Nop(), version)
	if err == nil {
		err = r.Start()
	}
	if err != nil {
		fmt.Fprintln(out, "hookbatch demo: relay:", err)
		return 1
	}
	fmt.Fprintf(out, "hookbatch demo: relay on %s (admin %s), sink on %s, data in %s\n", r.IngestAddr(), r.AdminAddr(), sink.Addr(), dir)
	fmt.Fprintf(out, "sending %d events at %d/s in requests of %d; batches of up to 100 events or 200ms\n\n", total, rate, perReq)

	var accepted atomic.Int64
	var failed atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		produce(r.IngestAddr(), total, rate, perReq, &accepted, &failed)
	}()

	start := time.Now()
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	producing, interrupted := true, false
	deadline := time.Time{}
loop:
	for {
		select {
		case <-done:
			done = nil
			producing = false
			deadline = time.Now().Add(30 * time.Second)
		case <-tick.C:
		case <-interrupt.Done():
			interrupted = true
			break loop
		}
		st := sink.Stats()
		reasons := flushReasons(r.AdminAddr())
		p50, p99 := lat.percentiles()
		fmt.Fprintf(out, "%5.1fs  accepted %7d  delivered %7d in %5d batches  flushed by events %d, bytes %d, wait %d  latency p50 %v p99 %v\n",
			time.Since(start).Seconds(), accepted.Load(), st.Events, st.Batches,
			reasons["events"], reasons["bytes"], reasons["wait"], p50, p99)
		if !producing && (st.Events >= accepted.Load() || time.Now().After(deadline)) {
			break
		}
	}
	elapsed := time.Since(start)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = r.Close(ctx)
	if interrupted {
		fmt.Fprintln(out, "\ninterrupted")
		return 1
	}
	st := sink.Stats()
	p50, p99 := lat.percentiles()
	fmt.Fprintf(out, "\nsummary: %d events accepted, %d delivered in %d batches (%.1f events per batch), %d duplicate batches, %d failed requests\n",
		accepted.Load(), st.Events, st.Batches, float64(st.Events)/float64(max(st.Batches, 1)), st.DuplicateBatches, failed.Load())
	fmt.Fprintf(out, "         %.0f events/s end to end over %v; receive -> delivered latency p50 %v, p99 %v\n",
		float64(st.Events)/elapsed.Seconds(), elapsed.Round(time.Millisecond), p50, p99)
	if st.Events < accepted.Load() {
		fmt.Fprintln(out, "LOSS: not every accepted event was delivered")
		return 1
	}
	return 0
}

// produce offers total events at rate events/s, perReq per request.
func produce(addr string, total, rate, perReq int, accepted, failed *atomic.Int64) {
	c := &fasthttp.HostClient{Addr: addr, MaxConns: 16, ReadTimeout: 10 * time.Second, WriteTimeout: 10 * time.Second}
	interval := time.Duration(float64(time.Second) * float64(perReq) / float64(rate))
	sem := make(chan struct{}, 16)
	var wg sync.WaitGroup
	next := time.Now()
	types := []string{"order.created", "order.paid", "user.signup"}
	for sent := 0; sent < total; sent += perReq {
		n := min(perReq, total-sent)
		var body strings.Builder
		body.WriteString("[")
		for i := range n {
			if i > 0 {
				body.WriteString(",")
			}
			fmt.Fprintf(&body, `{"type":%q,"data":{"n":%d}}`, types[(sent+i)%len(types)], sent+i)
		}
		body.WriteString("]")
		time.Sleep(time.Until(next)) // pacing the producer, not waiting for a condition
		next = next.Add(interval)
		sem <- struct{}{}
		wg.Add(1)
		go func(b string) {
			defer wg.Done()
			defer func() { <-sem }()
			req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
			defer fasthttp.ReleaseRequest(req)
			defer fasthttp.ReleaseResponse(resp)
			req.Header.SetMethod("POST")
			req.SetRequestURI("http://" + addr + "/v1/events")
			req.Header.SetContentType("application/json")
			req.SetBodyString(b)
			if err := c.Do(req, resp); err != nil || resp.StatusCode() != 202 {
				failed.Add(1)
				return
			}
			var a struct{ Accepted int64 }
			if json.Unmarshal(resp.Body(), &a) == nil {
				accepted.Add(a.Accepted)
			}
		}(body.String())
	}
	wg.Wait()
}

// flushReasons reads hookbatch_batches_flushed_total by reason from /metrics.
func flushReasons(admin string) map[string]int64 {
	out := map[string]int64{}
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.SetRequestURI("http://" + admin + "/metrics")
	if err := fasthttp.DoTimeout(req, resp, 2*time.Second); err != nil {
		return out
	}
	sc := bufio.NewScanner(strings.NewReader(string(resp.Body())))
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "hookbatch_batches_flushed_total{") {
			continue
		}
		_, rest, _ := strings.Cut(line, `reason="`)
		reason, val, _ := strings.Cut(rest, `"} `)
		var v int64
		fmt.Sscan(val, &v)
		out[reason] += v
	}
	return out
}

// latencies keeps a bounded sample of receive -> delivered latencies.
type latencies struct {
	mu   sync.Mutex
	d    []time.Duration
	seen int
}

const latencySample = 100_000

func (l *latencies) add(d time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.seen++
	if len(l.d) < latencySample {
		l.d = append(l.d, d)
	} else {
		l.d[l.seen%latencySample] = d // keep a rolling window of recent values
	}
}

func (l *latencies) percentiles() (p50, p99 time.Duration) {
	l.mu.Lock()
	s := slices.Clone(l.d)
	l.mu.Unlock()
	if len(s) == 0 {
		return 0, 0
	}
	slices.Sort(s)
	at := func(q float64) time.Duration { return s[int(q*float64(len(s)-1))].Round(time.Millisecond) }
	return at(0.50), at(0.99)
}
