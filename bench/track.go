package main

import (
	"context"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hookbatch/hookbatch/sink"
)

// Every event the generator sends carries the id "e<worker>.<seq>": worker
// is the load goroutine, seq counts that worker's events from 0. Acks are
// kept per worker (a worker only writes its own slice), deliveries per
// subscriber, so that loss and duplicates are counted event by event.

// appendEventID appends the id of event seq of worker w.
func appendEventID(dst []byte, w int, seq int64) []byte {
	dst = append(dst, 'e')
	dst = appendUint(dst, uint64(w))
	dst = append(dst, '.')
	return appendUint(dst, uint64(seq))
}

func appendUint(dst []byte, v uint64) []byte {
	var tmp [20]byte
	i := len(tmp)
	for {
		i--
		tmp[i] = byte('0' + v%10)
		v /= 10
		if v == 0 {
			break
		}
	}
	return append(dst, tmp[i:]...)
}

// parseEventID is the inverse of appendEventID.
func parseEventID(id string) (w int, seq int64, ok bool) {
	if len(id) < 4 || id[0] != 'e' {
		return 0, 0, false
	}
	var v uint64
	digits := 0
	part := 0
	for i := 1; i < len(id); i++ {
		c := id[i]
		switch {
		case c >= '0' && c <= '9':
			v = v*10 + uint64(c-'0')
			digits++
			if digits > 18 {
				return 0, 0, false
			}
		case c == '.' && part == 0 && digits > 0:
			w, v, digits, part = int(v), 0, 0, 1
		default:
			return 0, 0, false
		}
	}
	if part != 1 || digits == 0 || w > 1<<20 {
		return 0, 0, false
	}
	return w, int64(v), true
}

// acks records which events were acknowledged (202) by the relay.
type acks struct {
	workers [][]bool // [worker][seq]; each worker writes only its own
	total   atomic.Int64
}

func newAcks(workers int) *acks { return &acks{workers: make([][]bool, workers)} }

// ack marks events [from, from+n) of worker w acknowledged. Only worker w
// calls it.
func (a *acks) ack(w int, from int64, n int) {
	s := a.workers[w]
	for int64(len(s)) < from+int64(n) {
		s = append(s, false)
	}
	for i := from; i < from+int64(n); i++ {
		s[i] = true
	}
	a.workers[w] = s
	a.total.Add(int64(n))
}

// tracker counts the events one subscriber (one sink) received, event by
// event, and the latency of those received in its latency window.
type tracker struct {
	sub       string
	delivered *atomic.Int64 // all trackers of a run: for the time series

	distinct  atomic.Int64
	dupEvents atomic.Int64
	foreign   atomic.Int64 // ids the generator did not send
	batches   atomic.Int64

	// Latency is recorded for events whose relay receive time lies in
	// [winFrom, winTo] (Unix nanoseconds); winTo 0: not recording.
	winFrom, winTo atomic.Int64

	mu         sync.Mutex
	counts     [][]uint8 // [worker][seq] deliveries, saturating
	e2e        hist      // relay receive (event timestamp) -> sink received
	sendToSink hist      // producer send (data.t) -> sink received
	firstAt    int64     // Unix nanos of the first delivery counted
	lastAt     int64     // Unix nanos of the last delivery counted
	inWindow   int64     // events received by the sink inside [winFrom, winTo]
}

func newTracker(sub string, delivered *atomic.Int64) *tracker {
	return &tracker{sub: sub, delivered: delivered}
}

// window starts latency recording for events received from from on; a
// zero to leaves the window open until a second call closes it.
func (t *tracker) window(from, to time.Time) {
	t.winFrom.Store(from.UnixNano())
	if to.IsZero() {
		t.winTo.Store(math.MaxInt64)
		return
	}
	t.winTo.Store(to.UnixNano())
}

// onBatch is the sink's Options.OnBatch: called once per accepted batch,
// possibly from several goroutines.
func (t *tracker) onBatch(b sink.Batch) {
	at := b.ReceivedAt.UnixNano()
	from, to := t.winFrom.Load(), t.winTo.Load()
	t.batches.Add(1)
	var fresh, dups, foreign int64
	t.mu.Lock()
	for i := range b.Events {
		e := &b.Events[i]
		w, seq, ok := parseEventID(e.ID)
		if !ok || seq > 1<<34 {
			foreign++
			continue
		}
		for len(t.counts) <= w {
			t.counts = append(t.counts, nil)
		}
		c := t.counts[w]
		if int64(len(c)) <= seq {
			n := max(int64(len(c))*2, seq+1, 1024)
			grown := make([]uint8, n)
			copy(grown, c)
			c = grown
			t.counts[w] = c
		}
		switch c[seq] {
		case 0:
			fresh++
		case 255:
		default:
			dups++
		}
		if c[seq] < 255 {
			c[seq]++
		}
		if to != 0 && at >= from && at <= to {
			t.inWindow++
		}
		if to != 0 {
			if recv, err := time.Parse(time.RFC3339Nano, e.Timestamp); err == nil {
				if r := recv.UnixNano(); r >= from && r <= to {
					t.e2e.add(time.Duration(at - r))
					if sent, ok := sendTime(e.Data); ok {
						t.sendToSink.add(time.Duration(at - sent))
					}
				}
			}
		}
	}
	if fresh > 0 {
		if t.firstAt == 0 || at < t.firstAt {
			t.firstAt = at
		}
		t.lastAt = max(t.lastAt, at)
	}
	t.mu.Unlock()
	t.distinct.Add(fresh)
	t.dupEvents.Add(dups)
	t.foreign.Add(foreign)
	t.delivered.Add(fresh)
}

// sendTime reads the producer's send time from data written by the
// generator: {"t":<unix nanos>,...}.
func sendTime(data []byte) (int64, bool) {
	const prefix = `{"t":`
	if len(data) < len(prefix)+1 || string(data[:len(prefix)]) != prefix {
		return 0, false
	}
	var v int64
	for _, c := range data[len(prefix):] {
		if c < '0' || c > '9' {
			return v, true
		}
		v = v*10 + int64(c-'0')
	}
	return 0, false
}

// span returns when the first and the last new events arrived (Unix nanos;
// 0 before any).
func (t *tracker) span() (first, last int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.firstAt, t.lastAt
}

// missing counts the acknowledged events this subscriber has not received.
func (t *tracker) missing(a *acks) int64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	var n int64
	for w, s := range a.workers {
		var c []uint8
		if w < len(t.counts) {
			c = t.counts[w]
		}
		for seq, ok := range s {
			if ok && (seq >= len(c) || c[seq] == 0) {
				n++
			}
		}
	}
	return n
}

// delivery is the outcome of waiting for every acknowledged event.
type delivery struct {
	Acked, Delivered, Lost, DupEvents, DupBatches, Foreign int64
	Drain                                                  time.Duration
	TimedOut                                               bool
}

// awaitDelivery waits until every subscriber has every acknowledged event,
// or timeout, and counts what is missing and what came twice.
func awaitDelivery(ctx context.Context, a *acks, trs []*tracker, sinks []*sink.Sink, timeout time.Duration) delivery {
	start := time.Now()
	deadline := start.Add(timeout)
	want := a.total.Load()
	d := delivery{Acked: want * int64(len(trs))}
	for {
		complete := true
		for _, t := range trs {
			if t.distinct.Load() < want || t.missing(a) > 0 {
				complete = false
				break
			}
		}
		if complete || time.Now().After(deadline) || ctx.Err() != nil {
			d.TimedOut = !complete
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	d.Drain = time.Since(start)
	for i, t := range trs {
		d.Lost += t.missing(a)
		d.Delivered += t.distinct.Load()
		d.DupEvents += t.dupEvents.Load()
		d.Foreign += t.foreign.Load()
		if i < len(sinks) {
			d.DupBatches += sinks[i].Stats().DuplicateBatches
		}
	}
	return d
}

func (d delivery) String() string {
	s := fmt.Sprintf("acked %d delivered %d lost %d dups %d/%d", d.Acked, d.Delivered, d.Lost, d.DupBatches, d.DupEvents)
	if d.TimedOut {
		s += " (timed out waiting)"
	}
	return s
}
