package main

import (
	"cmp"
	"context"
	"fmt"
	"math"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"sync/atomic"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/hookbatch/hookbatch/config"
	"github.com/hookbatch/hookbatch/sink"
	"github.com/hookbatch/hookbatch/storage"
	"github.com/rs/zerolog"
)

// shape is the request pattern of an ingest measurement.
type shape struct {
	name   string // single | array<N>
	conns  int
	perReq int
}

func (s shape) describe() string {
	if s.perReq == 1 {
		return fmt.Sprintf("1 event/req, %d conns", s.conns)
	}
	return fmt.Sprintf("%d events/req, %d conns", s.perReq, s.conns)
}

// scoped runs fn with the pprof label scenario=name, which every goroutine
// started inside (relay, sinks, generator) inherits: -cpuprofile can then be
// read one scenario at a time (go tool pprof -tagfocus scenario=ingest/single).
func (e *env) scoped(name string, fn func()) {
	pprof.Do(e.ctx, pprof.Labels("scenario", name), func(context.Context) { fn() })
}

// plan runs every selected scenario, -runs times, alternating hookbatch
// with its ceiling (the order flips from run to run).
func (e *env) plan() {
	o := e.opts
	var shapes []shape
	for _, c := range o.singleConns() {
		shapes = append(shapes, shape{"single", c, 1})
	}
	shapes = append(shapes, shape{fmt.Sprintf("array%d", o.batch), o.conns, o.batch})
	first := o.syncModes()[0]
	single := shapes[0]

	for run := 1; run <= o.runs && e.ctx.Err() == nil; run++ {
		ceilingFirst := run%2 == 1
		if o.selected("ingest") {
			for _, sh := range shapes {
				if ceilingFirst {
					e.scoped(fmt.Sprintf("ceiling/%s/c%d", sh.name, sh.conns), func() { e.ceilingRun(sh, run) })
				}
				for _, sync := range o.syncModes() {
					e.scoped(fmt.Sprintf("ingest/%s/c%d/sync-%s", sh.name, sh.conns, onOff(sync)), func() { e.ingestRun(sh, sync, 1, run) })
					if sh == single && sync == first && o.selected("fanout") {
						e.scoped("fanout", func() { e.ingestRun(sh, sync, o.subscribers, run) })
					}
				}
				if !ceilingFirst {
					e.scoped(fmt.Sprintf("ceiling/%s/c%d", sh.name, sh.conns), func() { e.ceilingRun(sh, run) })
				}
			}
		} else if o.selected("fanout") {
			e.scoped("ingest/single", func() { e.ingestRun(single, first, 1, run) })
			e.scoped("fanout", func() { e.ingestRun(single, first, o.subscribers, run) })
		}
		if o.selected("storage") {
			for _, sync := range o.syncModes() {
				raw := func() { e.scoped("badger/sync-"+onOff(sync), func() { e.badgerRun(sync, run) }) }
				if ceilingFirst {
					raw()
				}
				e.scoped("storage/sync-"+onOff(sync), func() { e.storageRun(sync, run) })
				if !ceilingFirst {
					raw()
				}
			}
		}
	}

	var rate float64
	if o.selected("e2e") && e.ctx.Err() == nil {
		key := fmt.Sprintf("ingest/single/c%d/sync-%s", o.conns, onOff(first))
		if len(e.res.byKey[key]) == 0 {
			e.progress("end to end needs the single-event ingest rate: measuring it")
			e.scoped("ingest/single", func() { e.ingestRun(single, first, 1, 1) })
		}
		max := median(e.res.values(key, eventsPerSec))
		if math.IsNaN(max) || max <= 0 {
			e.fail("no single-event ingest rate to pace the end-to-end scenario with")
		} else {
			rate = max / 2
			e.progress("end to end: pacing at %.0f events/s, half the median max single-event rate (%.0f)", rate, max)
		}
	}
	for run := 1; run <= o.runs && e.ctx.Err() == nil; run++ {
		if rate > 0 {
			e.scoped("e2e", func() { e.e2eRun(rate, first, run) })
		}
		if o.selected("batching") {
			if run%2 == 1 {
				e.scoped("batching/max1", func() { e.batchingRun(1, o.batchN1, first, run) })
				e.scoped("batching/max100", func() { e.batchingRun(100, o.batchN100, first, run) })
			} else {
				e.scoped("batching/max100", func() { e.batchingRun(100, o.batchN100, first, run) })
				e.scoped("batching/max1", func() { e.batchingRun(1, o.batchN1, first, run) })
			}
		}
		if o.selected("backlog") {
			e.scoped("backlog", func() { e.backlogRun(first, run) })
		}
	}
}

func (e *env) measurement(key, label, system string, run int) *Measurement {
	return &Measurement{Key: key, Label: label, System: system, Run: run}
}

func (m *Measurement) fromLoad(lr *loadResult) {
	m.WindowSeconds = lr.Window.Seconds()
	m.Requests, m.Events, m.Errors, m.FirstError = lr.Requests, lr.Events, lr.Errors, lr.FirstErr
	m.RequestsPerSec, m.EventsPerSec = lr.reqPerSec(), lr.eventsPerSec()
	m.Latency = lr.Lat.percentiles()
}

func (m *Measurement) fromDelivery(d delivery, sinks []*sink.Sink) {
	m.Acked, m.Delivered, m.Lost = d.Acked, d.Delivered, d.Lost
	m.DupBatches, m.DupEvents, m.Foreign = d.DupBatches, d.DupEvents, d.Foreign
	m.DrainSeconds, m.DrainTimedOut = d.Drain.Seconds(), d.TimedOut
	var batches, events int64
	for _, s := range sinks {
		st := s.Stats()
		batches += st.Batches
		events += st.Events
	}
	if batches > 0 {
		m.AvgBatchEvents = float64(events) / float64(batches)
	}
}

// record keeps m and reports it on stderr.
func (e *env) record(m *Measurement) {
	e.res.add(m)
	line := fmt.Sprintf("%s (run %d/%d): %s events/s", m.Label, m.Run, e.opts.runs, fmtRate(m.EventsPerSec))
	if p := m.Latency; p != nil {
		line += fmt.Sprintf(", p50 %s p99 %s", fmtMS(p.P50), fmtMS(p.P99))
	}
	if p := m.EndToEnd; p != nil {
		line += fmt.Sprintf(", receive->delivered p50 %s p99 %s max %s", fmtMS(p.P50), fmtMS(p.P99), fmtMS(p.Max))
	}
	if m.System == "hookbatch" {
		line += fmt.Sprintf(", acked %d delivered %d lost %d dups %d/%d", m.Acked, m.Delivered, m.Lost, m.DupBatches, m.DupEvents)
		if m.AvgBatchEvents > 0 {
			line += fmt.Sprintf(", %.1f events/batch", m.AvgBatchEvents)
		}
		if c := m.Commits; c != nil {
			line += fmt.Sprintf(", commits of %.1f operations in %.2fms", c.OpsPerCommit, c.MeanMS)
		}
	}
	if m.Errors > 0 {
		line += fmt.Sprintf(", %d errors (first: %s)", m.Errors, m.FirstError)
	}
	if m.DrainTimedOut {
		line += ", DRAIN TIMED OUT"
	}
	e.progress("%s", line)
	if m.Lost > 0 {
		e.progress("LOSS: %d acknowledged events of %q were not delivered", m.Lost, m.Label)
	}
}

func (e *env) ceilingRun(sh shape, run int) {
	o := e.opts
	key := fmt.Sprintf("ceiling/%s/c%d", sh.name, sh.conns)
	label := "ceiling " + sh.describe()
	c, err := startCeiling()
	if err != nil {
		e.fail("%s: %v", label, err)
		return
	}
	defer c.close()
	newOp, closeConns := httpOps(c.addr(), "/v1/events", sh.conns, o.eventSize, sh.perReq > 1)
	defer closeConns()
	e.smp.begin(label, nil)
	lr := runLoad(e.ctx, loadSpec{conns: sh.conns, perReq: sh.perReq, warmup: o.warmup, duration: o.duration, ingested: &e.smp.ingested, newOp: newOp})
	e.smp.end()
	m := e.measurement(key, label, "ceiling", run)
	m.Conns, m.PerRequest = sh.conns, sh.perReq
	m.fromLoad(lr)
	e.record(m)
}

// ingestRun measures hookbatch ingest with subs sink subscribers taking
// every event, then waits for every acknowledged event to reach every sink.
func (e *env) ingestRun(sh shape, sync bool, subs, run int) {
	o := e.opts
	key := fmt.Sprintf("ingest/%s/c%d/sync-%s", sh.name, sh.conns, onOff(sync))
	label := fmt.Sprintf("hookbatch ingest %s, sync %s", sh.describe(), onOff(sync))
	if subs > 1 {
		key = fmt.Sprintf("fanout/%d/c%d/sync-%s", subs, sh.conns, onOff(sync))
		label = fmt.Sprintf("hookbatch fan-out to %d subscribers, %s, sync %s", subs, sh.describe(), onOff(sync))
	}
	sinks, trs, err := startSinks(subs, &e.smp.delivered)
	if err != nil {
		e.fail("%s: %v", label, err)
		return
	}
	defer closeSinks(sinks)
	var scfg []config.Subscriber
	for i, s := range sinks {
		scfg = append(scfg, subscriberConfig(fmt.Sprintf("s%d", i), s.URL(), 100, o.maxWait))
	}
	h, err := e.startRelay(relayConfig("", sync, scfg...), o.relayMode)
	if err != nil {
		e.fail("%s: %v", label, err)
		return
	}
	a := newAcks(sh.conns)
	newOp, closeConns := httpOps(h.ingest, "/v1/events", sh.conns, o.eventSize, sh.perReq > 1)
	e.smp.begin(label, h.queueDepth)
	c0, cerr := h.commits()
	lr := runLoad(e.ctx, loadSpec{conns: sh.conns, perReq: sh.perReq, warmup: o.warmup, duration: o.duration, acks: a, ingested: &e.smp.ingested, newOp: newOp})
	c1, cerr1 := h.commits()
	closeConns()
	d := awaitDelivery(e.ctx, a, trs, sinks, o.drainTimeout)
	e.smp.end()
	m := e.measurement(key, label, "hookbatch", run)
	m.Relay, m.Conns, m.PerRequest, m.Sync, m.Subscribers = h.mode, sh.conns, sh.perReq, onOff(sync), subs
	m.fromLoad(lr)
	m.fromDelivery(d, sinks)
	if err := cmp.Or(cerr, cerr1); err != nil {
		e.progress("%s: cannot read the relay's commits: %v", label, err)
	} else {
		m.Commits = c1.since(c0)
	}
	if err := h.close(); err != nil {
		m.Note = "relay close: " + err.Error()
	}
	e.record(m)
}

// direct is a store the load generator writes to without HTTP.
type direct struct {
	newOp func(int) (opFunc, func())
	depth func() (int64, error) // events stored, for the queue-depth series
	close func() error
}

// directRun opens a store in a fresh directory and writes the array
// ingest's events to it, -batch per operation, from -conns goroutines.
func (e *env) directRun(system, key, label string, sync bool, run int, open func(dir string) (*direct, error)) {
	o := e.opts
	dir, err := os.MkdirTemp(e.tmp, system+"-*")
	if err != nil {
		e.fail("%s: %v", label, err)
		return
	}
	defer os.RemoveAll(dir)
	d, err := open(dir)
	if err != nil {
		e.fail("%s: %v", label, err)
		return
	}
	e.smp.begin(label, d.depth)
	lr := runLoad(e.ctx, loadSpec{conns: o.conns, perReq: o.batch, warmup: o.warmup, duration: o.duration, ingested: &e.smp.ingested, newOp: d.newOp})
	e.smp.end()
	m := e.measurement(key, label, system, run)
	m.Conns, m.PerRequest, m.Sync = o.conns, o.batch, onOff(sync)
	m.fromLoad(lr)
	if err := d.close(); err != nil {
		m.Note = system + " close: " + err.Error()
	}
	e.record(m)
}

// storageRun appends the same events as the array ingest straight to a
// store, -batch per Append: hookbatch's storage layer without HTTP.
func (e *env) storageRun(sync bool, run int) {
	o := e.opts
	key := fmt.Sprintf("storage/array%d/c%d/sync-%s", o.batch, o.conns, onOff(sync))
	label := fmt.Sprintf("storage Append of %d events, %d writers, sync %s", o.batch, o.conns, onOff(sync))
	e.directRun("storage", key, label, sync, run, func(dir string) (*direct, error) {
		def := config.Default()
		st, err := storage.Open(storage.Options{
			Dir:             dir,
			SyncWrites:      sync,
			DedupWindow:     def.Ingest.DedupWindow,
			MaxRequestBytes: int(def.Ingest.MaxBodyBytes),
			Logger:          zerolog.New(os.Stderr).Level(zerolog.ErrorLevel),
		})
		if err != nil {
			return nil, err
		}
		q, err := st.Queue("s0")
		if err != nil {
			_ = st.Close()
			return nil, err
		}
		depth := func() (int64, error) { return q.Depth(), nil }
		return &direct{newOp: storageOps(st, q, o.eventSize), depth: depth, close: st.Close}, nil
	})
}

// badgerRun commits the same records to a bare Badger with its default
// options, one transaction of -batch events per operation: the raw storage
// ceiling.
func (e *env) badgerRun(sync bool, run int) {
	o := e.opts
	key := fmt.Sprintf("badger/array%d/c%d/sync-%s", o.batch, o.conns, onOff(sync))
	label := fmt.Sprintf("raw Badger, transactions of %d events, %d writers, sync %s", o.batch, o.conns, onOff(sync))
	e.directRun("badger", key, label, sync, run, func(dir string) (*direct, error) {
		db, err := badger.Open(badger.DefaultOptions(dir).WithSyncWrites(sync).WithLogger(nil))
		if err != nil {
			return nil, err
		}
		stored := new(atomic.Int64)
		depth := func() (int64, error) { return stored.Load(), nil }
		return &direct{newOp: badgerOps(db, o.eventSize, stored), depth: depth, close: db.Close}, nil
	})
}

// e2eRun offers single events open-loop at rate per second and measures
// what is delivered and how long each event took from the relay's receive
// time (the timestamp it stamps on events sent without one) to the sink.
func (e *env) e2eRun(rate float64, sync bool, run int) {
	o := e.opts
	key := fmt.Sprintf("e2e/c%d/sync-%s", o.conns, onOff(sync))
	label := fmt.Sprintf("hookbatch end to end at %.0f events/s, %d conns, max_wait %s, sync %s", rate, o.conns, o.maxWait, onOff(sync))
	sinks, trs, err := startSinks(1, &e.smp.delivered)
	if err != nil {
		e.fail("%s: %v", label, err)
		return
	}
	defer closeSinks(sinks)
	h, err := e.startRelay(relayConfig("", sync, subscriberConfig("s0", sinks[0].URL(), 100, o.maxWait)), o.relayMode)
	if err != nil {
		e.fail("%s: %v", label, err)
		return
	}
	a := newAcks(o.conns)
	tr := trs[0]
	newOp, closeConns := httpOps(h.ingest, "/v1/events", o.conns, o.eventSize, false)
	e.smp.begin(label, h.queueDepth)
	lr := runLoad(e.ctx, loadSpec{conns: o.conns, perReq: 1, warmup: o.warmup, duration: o.duration, rate: rate,
		acks: a, ingested: &e.smp.ingested, onWindow: tr.window, newOp: newOp})
	closeConns()
	d := awaitDelivery(e.ctx, a, trs, sinks, o.drainTimeout)
	e.smp.end()
	m := e.measurement(key, label, "hookbatch", run)
	m.Relay, m.Conns, m.PerRequest, m.Sync, m.Subscribers = h.mode, o.conns, 1, onOff(sync), 1
	m.fromLoad(lr)
	m.fromDelivery(d, sinks)
	tr.mu.Lock()
	m.EndToEnd, m.SendToDelivered = tr.e2e.percentiles(), tr.sendToSink.percentiles()
	inWindow := tr.inWindow
	tr.mu.Unlock()
	m.OfferedPerSec = rate
	if lr.Window > 0 {
		m.DeliveredPerSec = float64(inWindow) / lr.Window.Seconds()
	}
	m.EventsPerSec = m.DeliveredPerSec
	if err := h.close(); err != nil {
		m.Note = "relay close: " + err.Error()
	}
	e.record(m)
}

// batchingRun queues n events for a paused subscriber, resumes it and times
// the drain: delivered events/s with batches of up to maxEvents.
func (e *env) batchingRun(maxEvents int, n int64, sync bool, run int) {
	o := e.opts
	key := fmt.Sprintf("batching/max%d", maxEvents)
	label := fmt.Sprintf("hookbatch drain of %d queued, max_events %d, sync %s", n, maxEvents, onOff(sync))
	sinks, trs, err := startSinks(1, &e.smp.delivered)
	if err != nil {
		e.fail("%s: %v", label, err)
		return
	}
	defer closeSinks(sinks)
	h, err := e.startRelay(relayConfig("", sync, subscriberConfig("s0", sinks[0].URL(), maxEvents, o.maxWait)), o.relayMode)
	if err != nil {
		e.fail("%s: %v", label, err)
		return
	}
	if err := h.setPaused("s0", true); err != nil {
		_ = h.close()
		e.fail("%s: cannot pause: %v", label, err)
		return
	}
	a := newAcks(o.loaderConns)
	newOp, closeConns := httpOps(h.ingest, "/v1/events", o.loaderConns, o.eventSize, true)
	e.smp.begin(label, h.queueDepth)
	lr := runLoad(e.ctx, loadSpec{conns: o.loaderConns, perReq: int(min(n, 1000)), total: n, acks: a, ingested: &e.smp.ingested, newOp: newOp})
	closeConns()
	t0 := time.Now()
	if err := h.setPaused("s0", false); err != nil {
		e.fail("%s: cannot resume: %v", label, err)
	}
	d := awaitDelivery(e.ctx, a, trs, sinks, o.drainTimeout)
	e.smp.end()
	m := e.measurement(key, label, "hookbatch", run)
	m.Relay, m.Conns, m.PerRequest, m.Sync, m.Subscribers = h.mode, o.loaderConns, int(min(n, 1000)), onOff(sync), 1
	m.fromLoad(lr)
	m.LoadPerSec = m.EventsPerSec
	m.fromDelivery(d, sinks)
	first, last := trs[0].span()
	if last > 0 {
		m.DrainSeconds = time.Duration(last - t0.UnixNano()).Seconds()
		m.FirstDelivery = time.Duration(first - t0.UnixNano()).Seconds()
	}
	m.EventsPerSec = 0
	if m.DrainSeconds > 0 {
		m.EventsPerSec = float64(m.Acked) / m.DrainSeconds
	}
	m.Latency = nil // of the loading, not of the drain; kept out of the table
	if err := h.close(); err != nil {
		m.Note = "relay close: " + err.Error()
	}
	e.record(m)
}

// backlogRun queues -backlog events for a subscriber that is down, reads
// the relay's peak RSS, then starts the subscriber and measures the drain.
func (e *env) backlogRun(sync bool, run int) {
	o := e.opts
	key := fmt.Sprintf("backlog/%d", o.backlog)
	label := fmt.Sprintf("hookbatch backlog of %d for a subscriber that is down, sync %s", o.backlog, onOff(sync))
	addr, err := freeAddr()
	if err != nil {
		e.fail("%s: %v", label, err)
		return
	}
	tr := newTracker("s0", &e.smp.delivered)
	sk := newSink(tr)
	defer sk.Close()
	cfg := relayConfig("", sync, subscriberConfig("s0", "http://"+addr+"/hooks", 100, o.maxWait))
	// Retries come back within a second once the subscriber is up, and
	// nothing is dead-lettered while it is down.
	cfg.Delivery.Retry.InitialBackoff = 100 * time.Millisecond
	cfg.Delivery.Retry.MaxBackoff = time.Second
	cfg.Delivery.Retry.MaxAttempts = 1_000_000
	cfg.Delivery.CircuitBreaker.OpenDuration = time.Second

	mode, method := modeSubprocess, "subprocess VmHWM"
	var before RSS
	if e.binary == "" {
		mode, method = modeInproc, "inproc VmHWM delta"
		runtime.GC()
		debug.FreeOSMemory()
		_ = os.WriteFile("/proc/self/clear_refs", []byte("5"), 0) // resets VmHWM to the current RSS
		before = readRSS(os.Getpid())
	}
	h, err := e.startRelay(cfg, mode)
	if err != nil {
		e.fail("%s: %v", label, err)
		return
	}
	a := newAcks(o.loaderConns)
	newOp, closeConns := httpOps(h.ingest, "/v1/events", o.loaderConns, o.eventSize, true)
	e.smp.begin(label, h.queueDepth)
	lr := runLoad(e.ctx, loadSpec{conns: o.loaderConns, perReq: 1000, total: o.backlog, acks: a, ingested: &e.smp.ingested, newOp: newOp})
	closeConns()
	loaded := readRSS(h.pid)
	depth, _ := h.queueDepth()
	if o.heapprofile != "" && run == 1 {
		if prof, err := adminDo("GET", "http://"+h.admin+"/debug/pprof/heap"); err != nil {
			e.progress("backlog: cannot take the relay's heap profile: %v", err)
		} else if err := os.WriteFile(o.heapprofile, prof, 0o644); err != nil {
			e.progress("backlog: cannot write the heap profile: %v", err)
		} else {
			e.progress("backlog: relay heap profile written to %s", o.heapprofile)
		}
	}
	e.progress("backlog: %d events queued (queue depth %d) at %s events/s; relay VmHWM %d MiB (anon %d MiB, file %d MiB); starting the subscriber",
		a.total.Load(), depth, fmtRate(lr.eventsPerSec()), loaded.VmHWM>>10, loaded.RssAnon>>10, loaded.RssFile>>10)
	t0 := time.Now()
	if err := sk.Start(addr); err != nil {
		e.fail("%s: cannot start the sink at %s: %v", label, addr, err)
	}
	timeout := o.drainTimeout + time.Duration(o.backlog/5000)*time.Second
	d := awaitDelivery(e.ctx, a, []*tracker{tr}, []*sink.Sink{sk}, timeout)
	e.smp.end()
	drained := readRSS(h.pid)

	m := e.measurement(key, label, "hookbatch", run)
	m.Relay, m.Conns, m.PerRequest, m.Sync, m.Subscribers = h.mode, o.loaderConns, 1000, onOff(sync), 1
	m.fromLoad(lr)
	m.LoadPerSec = m.EventsPerSec
	m.Latency = nil
	m.fromDelivery(d, []*sink.Sink{sk})
	rss := loaded
	rss.Method, rss.PeakKiB, rss.AfterDrain = method, loaded.VmHWM, drained.VmHWM
	if mode == modeInproc {
		rss.PeakKiB = loaded.VmHWM - before.VmRSS
	}
	m.RSS = &rss
	first, last := tr.span()
	m.EventsPerSec = 0
	if last > first {
		// From the first delivery on: the wait before it is the retry
		// backoff and circuit breaker of a subscriber that was down.
		m.EventsPerSec = float64(m.Acked) / time.Duration(last-first).Seconds()
		m.FirstDelivery = time.Duration(first - t0.UnixNano()).Seconds()
		m.DrainSeconds = time.Duration(last - t0.UnixNano()).Seconds()
	}
	m.Note = fmt.Sprintf("queue depth %d when the subscriber came back; drain rate counted from the first delivery (%.2fs after it came back)", depth, m.FirstDelivery)
	if err := h.close(); err != nil {
		m.Note += "; relay close: " + err.Error()
	}
	e.record(m)
	e.progress("backlog: peak RSS %d MiB (%s; anon %d MiB, file-backed %d MiB), %d MiB after the drain",
		rss.PeakKiB>>10, method, rss.RssAnon>>10, rss.RssFile>>10, rss.AfterDrain>>10)
}
