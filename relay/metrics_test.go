package relay

import (
	"net"
	"strings"
	"testing"
	"time"

	"github.com/hookbatch/hookbatch/sink"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/valyala/fasthttp"
)

// TestMetricsContract scrapes /metrics after real traffic, parses it with
// the Prometheus text parser, and checks every contract name and its value.
func TestMetricsContract(t *testing.T) {
	good := startSink(t, sink.Options{})
	bad := fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) { ctx.SetStatusCode(400) }}
	badAddr := metricsTestServer(t, &bad)
	cfg := testConfig(t,
		sub("good", good.URL(), 10, 50*time.Millisecond),
		sub("bad", "http://"+badAddr+"/hooks", 10, 50*time.Millisecond))
	cfg.Subscribers[1].EventTypes = []string{"bad.*"}
	r := startRelay(t, cfg)

	mustIngest(t, r, "/v1/events", `[{"type":"ok","data":1},{"type":"ok","data":2},{"id":"d","type":"ok","data":3}]`)
	mustIngest(t, r, "/v1/events", `{"id":"d","type":"ok","data":3}`) // duplicate
	mustIngest(t, r, "/v1/events", `{"type":"bad.x","data":4}`)       // to both; "bad" dead-letters it
	post(t, "http://"+r.IngestAddr()+"/v1/events", `{"type":`)        // 400
	waitFor(t, 10*time.Second, "deliveries", func() bool {
		return metricValue(t, r, `hookbatch_events_delivered_total{subscriber="good"}`) == 4 &&
			metricValue(t, r, `hookbatch_dead_letter_batches_total{subscriber="bad"}`) == 1
	})

	_, body := do(t, "GET", "http://"+r.AdminAddr()+"/metrics", "")
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("the Prometheus parser rejects /metrics: %v", err)
	}
	value := func(name string, labels map[string]string) float64 {
		t.Helper()
		f, ok := fams[name]
		if !ok {
			t.Fatalf("metric %s missing", name)
		}
	next:
		for _, m := range f.Metric {
			for k, v := range labels {
				if !hasLabel(m, k, v) {
					continue next
				}
			}
			switch f.GetType() {
			case dto.MetricType_COUNTER:
				return m.GetCounter().GetValue()
			case dto.MetricType_GAUGE:
				return m.GetGauge().GetValue()
			case dto.MetricType_HISTOGRAM:
				return float64(m.GetHistogram().GetSampleCount())
			}
			return m.GetUntyped().GetValue()
		}
		t.Fatalf("metric %s%v missing", name, labels)
		return 0
	}
	type L = map[string]string
	f := func(name string, labels L, want float64) {
		t.Helper()
		if got := value(name, labels); got != want {
			t.Errorf("%s%v = %v, want %v", name, labels, got, want)
		}
	}
	f("hookbatch_ingest_requests_total", L{"code": "202"}, 3)
	f("hookbatch_ingest_requests_total", L{"code": "400"}, 1)
	f("hookbatch_ingest_duration_seconds", nil, 4)
	f("hookbatch_events_accepted_total", L{"subscriber": "good"}, 4)
	f("hookbatch_events_accepted_total", L{"subscriber": "bad"}, 1)
	f("hookbatch_events_duplicate_total", nil, 1)
	f("hookbatch_queue_events", L{"subscriber": "good"}, 0)
	f("hookbatch_batches_delivered_total", L{"subscriber": "good"}, value("hookbatch_batch_events", L{"subscriber": "good"}))
	f("hookbatch_events_delivered_total", L{"subscriber": "good"}, 4)
	f("hookbatch_delivery_attempts_total", L{"subscriber": "bad", "outcome": "permanent"}, 1)
	f("hookbatch_delivery_attempts_total", L{"subscriber": "bad", "outcome": "success"}, 0)
	f("hookbatch_delivery_attempts_total", L{"subscriber": "good", "outcome": "circuit_open"}, 0)
	f("hookbatch_delivery_duration_seconds", L{"subscriber": "bad"}, 1)
	f("hookbatch_end_to_end_seconds", L{"subscriber": "good"}, 4)
	f("hookbatch_dead_letter_batches_total", L{"subscriber": "bad"}, 1)
	f("hookbatch_dead_letter_batches_total", L{"subscriber": "good"}, 0)
	f("hookbatch_circuit_open", L{"host": badAddr}, 0)
	f("hookbatch_inflight_requests", L{"host": badAddr}, 0)
	f("hookbatch_oldest_event_age_seconds", L{"subscriber": "good"}, 0)
	if v := value("hookbatch_storage_bytes", nil); v <= 0 {
		t.Errorf("hookbatch_storage_bytes = %v", v)
	}
	if v := value("hookbatch_batches_flushed_total", L{"subscriber": "good", "reason": "wait"}); v < 1 {
		t.Errorf("no batch flushed by wait: %v", v)
	}
	// Every commit is observed once in each. Their operations: the three
	// requests stored (the duplicate's look-up too), a batch formed and
	// acknowledged for "good" (one or two), one formed and dead-lettered
	// for "bad".
	commits := value("hookbatch_storage_commit_seconds", nil)
	if n := value("hookbatch_storage_commit_operations", nil); commits < 1 || n != commits {
		t.Errorf("%v commits timed, %v counted", commits, n)
	}
	for _, m := range fams["hookbatch_storage_commit_operations"].GetMetric() {
		if ops := m.GetHistogram().GetSampleSum(); ops < 7 {
			t.Errorf("commits held %v operations, want at least 7", ops)
		}
	}
	for _, name := range []string{"go_goroutines", "process_resident_memory_bytes"} {
		if _, ok := fams[name]; !ok {
			t.Errorf("runtime metric %s missing", name)
		}
	}
	for _, name := range []string{"hookbatch_batch_events", "hookbatch_end_to_end_seconds", "hookbatch_delivery_duration_seconds", "hookbatch_ingest_duration_seconds",
		"hookbatch_storage_commit_seconds", "hookbatch_storage_commit_operations"} {
		if fams[name].GetType() != dto.MetricType_HISTOGRAM {
			t.Errorf("%s is %v, want a histogram", name, fams[name].GetType())
		}
	}
}

// TestMetricsRegisteredAtZero checks counters and gauges exist before any
// traffic and histograms do not.
func TestMetricsRegisteredAtZero(t *testing.T) {
	r := startRelay(t, testConfig(t, sub("a", "http://127.0.0.1:1/hooks", 10, time.Second)))
	for _, series := range []string{
		`hookbatch_events_accepted_total{subscriber="a"}`,
		`hookbatch_queue_events{subscriber="a"}`,
		`hookbatch_batches_delivered_total{subscriber="a"}`,
		`hookbatch_events_delivered_total{subscriber="a"}`,
		`hookbatch_delivery_attempts_total{subscriber="a",outcome="retry"}`,
		`hookbatch_dead_letter_batches_total{subscriber="a"}`,
		`hookbatch_events_duplicate_total`,
		`hookbatch_circuit_open{host="127.0.0.1:1"}`,
		`hookbatch_limit_waits_total{limit="global_concurrency"}`,
		`hookbatch_limit_waits_total{limit="host_concurrency"}`,
		`hookbatch_limit_waits_total{limit="subscriber_window"}`,
		`hookbatch_limit_waits_total{limit="retry_lane"}`,
	} {
		if v := metricValue(t, r, series); v != 0 {
			t.Errorf("%s = %v at start, want 0", series, v)
		}
	}
	_, body := do(t, "GET", "http://"+r.AdminAddr()+"/metrics", "")
	if strings.Contains(body, "hookbatch_end_to_end_seconds") {
		t.Error("a histogram appeared before its first observation")
	}
}

func hasLabel(m *dto.Metric, k, v string) bool {
	for _, l := range m.GetLabel() {
		if l.GetName() == k && l.GetValue() == v {
			return true
		}
	}
	return false
}

// metricsTestServer serves srv on a loopback port until the test ends.
func metricsTestServer(t *testing.T, srv *fasthttp.Server) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln) //nolint:errcheck // ends with Shutdown
	t.Cleanup(func() { _ = srv.Shutdown() })
	return ln.Addr().String()
}
