package main

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"
)

// loadSpec is one run of the load generator: conns goroutines, each doing
// one operation after another (an HTTP request on its own keep-alive
// connection, or a storage append), perReq events per operation.
type loadSpec struct {
	conns    int
	perReq   int // events per operation
	warmup   time.Duration
	duration time.Duration
	// rate, when above 0, paces the operations open-loop at rate per second
	// in total; latency is then counted from each one's scheduled time.
	rate float64
	// total, when above 0, sends that many events and stops: no warm-up,
	// every operation is counted.
	total    int64
	acks     *acks         // records acknowledged events; may be nil
	ingested *atomic.Int64 // acknowledged events, for the time series
	// onWindow is called when the measurement window opens (to is zero)
	// and when it closes.
	onWindow func(from, to time.Time)
	// newOp returns worker w's operation and a function releasing what it
	// holds.
	newOp func(w int) (op opFunc, release func())
}

// opFunc performs one operation carrying events [seq, seq+n) of its worker,
// sent at now; nil means acknowledged.
type opFunc func(seq int64, n int, now time.Time) error

// loadResult is what the generator saw in its measurement window.
type loadResult struct {
	Requests int64 // completed with the expected status in the window
	Events   int64
	Errors   int64 // whole run: transport errors and unexpected statuses
	FirstErr string
	Window   time.Duration
	Lat      hist
}

func (r *loadResult) reqPerSec() float64 {
	if r.Window <= 0 {
		return 0
	}
	return float64(r.Requests) / r.Window.Seconds()
}

func (r *loadResult) eventsPerSec() float64 {
	if r.Window <= 0 {
		return 0
	}
	return float64(r.Events) / r.Window.Seconds()
}

// bodies builds request bodies. Each event is
//
//	{"id":"e<worker>.<seq>","type":"bench.event","data":{"t":<send unix nanos>,"p":"xx..."}}
//
// with data padded to eventSize bytes and no timestamp, so the relay stamps
// the receive time.
type bodies struct {
	pad string
}

func newBodies(eventSize int) bodies {
	// {"t":  19 digits  ,"p":"  pad  "}
	n := max(eventSize-len(`{"t":`)-19-len(`,"p":"`)-len(`"}`), 0)
	return bodies{pad: strings.Repeat("x", n)}
}

func (b bodies) appendEvent(dst []byte, w int, seq int64, now int64) []byte {
	dst = append(dst, `{"id":"`...)
	dst = appendEventID(dst, w, seq)
	dst = append(dst, `","type":"bench.event","data":{"t":`...)
	dst = appendUint(dst, uint64(now))
	dst = append(dst, `,"p":"`...)
	dst = append(dst, b.pad...)
	return append(dst, `"}}`...)
}

// appendBody appends a request of n events, numbered from seq.
func (b bodies) appendBody(dst []byte, array bool, w int, seq int64, n int, now int64) []byte {
	if !array {
		return b.appendEvent(dst, w, seq, now)
	}
	dst = append(dst, '[')
	for i := range n {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = b.appendEvent(dst, w, seq+int64(i), now)
	}
	return append(dst, ']')
}

const (
	phaseWarmup int32 = iota
	phaseMeasure
	phaseStop
)

// httpOps posts events to http://addr/path: one object per request when
// array is false, else an array.
func httpOps(addr, path string, conns, eventSize int, array bool) (newOp func(int) (opFunc, func()), closeAll func()) {
	hc := &fasthttp.HostClient{
		Addr:                     addr,
		MaxConns:                 conns,
		MaxConnWaitTimeout:       30 * time.Second,
		MaxIdleConnDuration:      time.Minute,
		ReadTimeout:              60 * time.Second,
		WriteTimeout:             60 * time.Second,
		MaxResponseBodySize:      4 << 20,
		NoDefaultUserAgentHeader: true,
	}
	uri := "http://" + addr + path
	gen := newBodies(eventSize)
	newOp = func(w int) (opFunc, func()) {
		req := fasthttp.AcquireRequest()
		resp := fasthttp.AcquireResponse()
		req.Header.SetMethod(fasthttp.MethodPost)
		req.SetRequestURI(uri)
		req.Header.SetContentType("application/json")
		var buf []byte
		op := func(seq int64, n int, now time.Time) error {
			buf = gen.appendBody(buf[:0], array, w, seq, n, now.UnixNano())
			req.SetBodyRaw(buf)
			if err := hc.Do(req, resp); err != nil {
				return err
			}
			if resp.StatusCode() != fasthttp.StatusAccepted {
				return fmt.Errorf("status %d: %.200s", resp.StatusCode(), resp.Body())
			}
			return nil
		}
		return op, func() {
			fasthttp.ReleaseRequest(req)
			fasthttp.ReleaseResponse(resp)
		}
	}
	return newOp, hc.CloseIdleConnections
}

// runLoad runs s and returns what it measured. Cancelling ctx stops it.
func runLoad(ctx context.Context, s loadSpec) *loadResult {
	perReq := max(s.perReq, 1)
	var phase atomic.Int32
	var next atomic.Int64 // total mode: events claimed
	if s.total > 0 {
		phase.Store(phaseMeasure)
	}
	results := make([]loadResult, s.conns)
	var wg sync.WaitGroup
	start := time.Now()
	for w := range s.conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res := &results[w]
			op, release := s.newOp(w)
			defer release()
			var seq int64
			var interval time.Duration
			sched := start
			if s.rate > 0 {
				interval = time.Duration(float64(s.conns) / s.rate * float64(time.Second))
				sched = start.Add(time.Duration(float64(w) / s.rate * float64(time.Second)))
			}
			for phase.Load() != phaseStop && ctx.Err() == nil {
				n := perReq
				if s.total > 0 {
					k := next.Add(int64(perReq)) - int64(perReq)
					if k >= s.total {
						return
					}
					n = int(min(int64(perReq), s.total-k))
				}
				if interval > 0 {
					if d := time.Until(sched); d > 0 {
						time.Sleep(d)
					}
				}
				t0 := time.Now()
				err := op(seq, n, t0)
				took := time.Since(t0)
				if interval > 0 {
					took = time.Since(sched) // from the scheduled time: no coordinated omission
					sched = sched.Add(interval)
				}
				if err == nil {
					if s.acks != nil {
						s.acks.ack(w, seq, n)
					}
					if s.ingested != nil {
						s.ingested.Add(int64(n))
					}
					if phase.Load() == phaseMeasure {
						res.Requests++
						res.Events += int64(n)
						res.Lat.add(took)
					}
				} else {
					res.Errors++
					if res.FirstErr == "" {
						res.FirstErr = err.Error()
					}
				}
				seq += int64(n) // an unacknowledged request may still have been stored
			}
		}()
	}
	var from, to time.Time
	if s.total > 0 {
		from = start
		wg.Wait()
		to = time.Now()
	} else {
		sleepCtx(ctx, s.warmup)
		from = time.Now()
		phase.Store(phaseMeasure)
		if s.onWindow != nil {
			s.onWindow(from, time.Time{})
		}
		sleepCtx(ctx, s.duration)
		to = time.Now()
		phase.Store(phaseStop)
		if s.onWindow != nil {
			s.onWindow(from, to)
		}
		wg.Wait()
	}
	total := &loadResult{Window: to.Sub(from)}
	for i := range results {
		r := &results[i]
		total.Requests += r.Requests
		total.Events += r.Events
		total.Errors += r.Errors
		if total.FirstErr == "" {
			total.FirstErr = r.FirstErr
		}
		total.Lat.merge(&r.Lat)
	}
	return total
}

func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}
