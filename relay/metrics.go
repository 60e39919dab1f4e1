package relay

import (
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/hookbatch/hookbatch/batcher"
)

func init() { metrics.ExposeMetadata(true) }

// Bucket bounds of the histograms.
var (
	latencyBuckets = []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}
	e2eBuckets     = []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300, 1800, 3600}
	sizeBuckets    = []float64{1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000}
	commitBuckets  = []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, 1}
)

// relayMetrics are the relay-wide metrics of DESIGN §8, in a Set of the
// relay's own so several relays can live in one process.
type relayMetrics struct {
	set            *metrics.Set
	ingestCodes    sync.Map // status code -> *metrics.Counter
	ingestDuration lazyHist
	duplicates     *metrics.Counter
	// Of each storage commit: its time and the operations sharing it.
	commitTime, commitOps lazyHist

	mu       sync.Mutex
	inflight map[string]*atomic.Int64

	// limitWaits counts each time a bound made a delivery wait.
	limitWaits [limitRetryLane + 1]*metrics.Counter
}

// The bounds counted in hookbatch_limit_waits_total{limit}.
const (
	limitGlobal    = iota // delivery.concurrency
	limitHost             // delivery.per_host_concurrency
	limitWindow           // a subscriber's formed batches (2 x per_host_concurrency, 1 when ordered)
	limitRetryLane        // a subscriber's batches waiting for a retry outside the window
)

var limitNames = [...]string{"global_concurrency", "host_concurrency", "subscriber_window", "retry_lane"}

func newRelayMetrics(r *Relay) *relayMetrics {
	m := &relayMetrics{set: metrics.NewSet(), inflight: make(map[string]*atomic.Int64)}
	m.ingestDuration = lazyHist{set: m.set, name: "hookbatch_ingest_duration_seconds", buckets: latencyBuckets}
	m.duplicates = m.set.NewCounter("hookbatch_events_duplicate_total")
	m.commitTime = lazyHist{set: m.set, name: "hookbatch_storage_commit_seconds", buckets: commitBuckets}
	m.commitOps = lazyHist{set: m.set, name: "hookbatch_storage_commit_operations", buckets: sizeBuckets}
	m.set.NewGauge("hookbatch_storage_bytes", func() float64 { return float64(r.store.DiskBytes()) })
	for i, name := range limitNames {
		m.limitWaits[i] = m.set.NewCounter(fmt.Sprintf(`hookbatch_limit_waits_total{limit=%q}`, name))
	}
	for _, code := range []int{202, 400, 401, 403, 404, 405, 413, 415, 422, 429, 503} {
		m.ingestCounter(code)
	}
	return m
}

// committed observes one storage commit (storage.Options.OnCommit).
func (m *relayMetrics) committed(took time.Duration, ops int) {
	m.commitTime.Update(took.Seconds())
	m.commitOps.Update(float64(ops))
}

func (m *relayMetrics) ingestCounter(code int) *metrics.Counter {
	if c, ok := m.ingestCodes.Load(code); ok {
		return c.(*metrics.Counter)
	}
	c := m.set.GetOrCreateCounter(fmt.Sprintf(`hookbatch_ingest_requests_total{code="%d"}`, code))
	m.ingestCodes.Store(code, c)
	return c
}

func (m *relayMetrics) ingestRequest(code int) { m.ingestCounter(code).Inc() }

// registerHost creates the per-host gauges; hosts come from the config, so
// their number is bounded.
func (m *relayMetrics) registerHost(h *host) {
	n := new(atomic.Int64)
	m.mu.Lock()
	m.inflight[h.addr] = n
	m.mu.Unlock()
	m.set.GetOrCreateGauge(fmt.Sprintf(`hookbatch_circuit_open{host=%q}`, h.addr), func() float64 {
		if h.circuit(time.Now()) == circuitOpen { // half-open lets a probe through
			return 1
		}
		return 0
	})
	m.set.GetOrCreateGauge(fmt.Sprintf(`hookbatch_inflight_requests{host=%q}`, h.addr), func() float64 {
		return float64(n.Load())
	})
}

func (m *relayMetrics) hostInflight(addr string, d int64) {
	m.mu.Lock()
	n := m.inflight[addr]
	m.mu.Unlock()
	n.Add(d)
}

// write writes every metric, with Go runtime and process metrics.
func (m *relayMetrics) write(w io.Writer) {
	m.set.WritePrometheus(w)
	metrics.WriteProcessMetrics(w)
}

func (m *relayMetrics) unregister() { m.set.UnregisterAllMetrics() }

// subMetrics are one subscriber's metrics, created at start at zero.
type subMetrics struct {
	accepted         *metrics.Counter
	batchesDelivered *metrics.Counter
	eventsDelivered  *metrics.Counter
	deadLetters      *metrics.Counter
	attempts         map[string]*metrics.Counter
	flushes          [batcher.Shutdown + 1]*metrics.Counter
	deliveryDuration lazyHist
	batchEvents      lazyHist
	endToEnd         lazyHist
	names            []string // every series of the subscriber, histograms too
}

// forget unregisters a removed subscriber's series.
func (m *relayMetrics) forget(sm *subMetrics) {
	for _, n := range sm.names {
		m.set.UnregisterMetric(n)
	}
}

var attemptOutcomes = []string{"success", "retry", "permanent", "timeout", "conn_error", "circuit_open"}

func newSubMetrics(m *relayMetrics, s *subscriber) *subMetrics {
	id := s.cfg.ID
	var names []string
	series := func(format string, args ...any) string { // kept for forget
		n := fmt.Sprintf(format, args...)
		names = append(names, n)
		return n
	}
	name := func(n string) string { return series(`%s{subscriber=%q}`, n, id) }
	sm := &subMetrics{
		accepted:         m.set.GetOrCreateCounter(name("hookbatch_events_accepted_total")),
		batchesDelivered: m.set.GetOrCreateCounter(name("hookbatch_batches_delivered_total")),
		eventsDelivered:  m.set.GetOrCreateCounter(name("hookbatch_events_delivered_total")),
		deadLetters:      m.set.GetOrCreateCounter(name("hookbatch_dead_letter_batches_total")),
		attempts:         make(map[string]*metrics.Counter, len(attemptOutcomes)),
		deliveryDuration: lazyHist{set: m.set, name: name("hookbatch_delivery_duration_seconds"), buckets: latencyBuckets},
		batchEvents:      lazyHist{set: m.set, name: name("hookbatch_batch_events"), buckets: sizeBuckets},
		endToEnd:         lazyHist{set: m.set, name: name("hookbatch_end_to_end_seconds"), buckets: e2eBuckets},
	}
	for _, o := range attemptOutcomes {
		sm.attempts[o] = m.set.GetOrCreateCounter(series(`hookbatch_delivery_attempts_total{subscriber=%q,outcome=%q}`, id, o))
	}
	for r := batcher.Events; r <= batcher.Shutdown; r++ {
		sm.flushes[r] = m.set.GetOrCreateCounter(series(`hookbatch_batches_flushed_total{subscriber=%q,reason=%q}`, id, r))
	}
	// Gauges read the subscriber in force: a reload may replace s.
	r := s.r
	m.set.GetOrCreateGauge(name("hookbatch_queue_events"), func() float64 { return float64(s.q.Depth()) })
	m.set.GetOrCreateGauge(name("hookbatch_oldest_event_age_seconds"), func() float64 {
		if cur := r.subscriber(id); cur != nil {
			return cur.oldestAge(time.Now()).Seconds()
		}
		return 0
	})
	sm.names = names
	return sm
}

func (sm *subMetrics) attempt(outcome string) { sm.attempts[outcome].Inc() }

// flushed counts a batch formed by r; None (an unreadable event taken out
// of the queue) is not a flush.
func (sm *subMetrics) flushed(r batcher.Reason) {
	if c := sm.flushes[r]; c != nil {
		c.Inc()
	}
}

// lazyHist is a histogram that appears from its first observation.
type lazyHist struct {
	set     *metrics.Set
	name    string
	buckets []float64
	h       atomic.Pointer[metrics.PrometheusHistogram]
}

func (l *lazyHist) Update(v float64) {
	h := l.h.Load()
	if h == nil {
		h = l.set.GetOrCreatePrometheusHistogramExt(l.name, l.buckets)
		l.h.Store(h)
	}
	h.Update(v)
}

func (l *lazyHist) UpdateDuration(start time.Time) { l.Update(time.Since(start).Seconds()) }
