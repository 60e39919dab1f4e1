package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// Measurement is one measured run of one scenario: every figure the harness
// took, as written to the JSON file.
type Measurement struct {
	Key         string `json:"key"` // scenario/shape/...: the same for every run of it
	Run         int    `json:"run"`
	Label       string `json:"label"`
	System      string `json:"system"` // ceiling | hookbatch | storage | badger
	Relay       string `json:"relay,omitempty"`
	Conns       int    `json:"conns,omitempty"`
	PerRequest  int    `json:"events_per_request,omitempty"`
	Sync        string `json:"sync,omitempty"`
	Subscribers int    `json:"subscribers,omitempty"`

	WindowSeconds  float64      `json:"window_s"`
	Requests       int64        `json:"requests"`
	Events         int64        `json:"events"`
	Errors         int64        `json:"errors"`
	FirstError     string       `json:"first_error,omitempty"`
	RequestsPerSec float64      `json:"requests_per_s"`
	EventsPerSec   float64      `json:"events_per_s"` // the scenario's headline rate
	Latency        *Percentiles `json:"latency,omitempty"`

	// Delivery, for runs through hookbatch.
	Acked          int64   `json:"acked_events,omitempty"`
	Delivered      int64   `json:"delivered_events,omitempty"`
	Lost           int64   `json:"lost_events"`
	DupBatches     int64   `json:"duplicate_batches"`
	DupEvents      int64   `json:"duplicate_events"`
	Foreign        int64   `json:"foreign_events,omitempty"`
	DrainSeconds   float64 `json:"drain_s,omitempty"` // after the load stopped, until the sinks had everything
	DrainTimedOut  bool    `json:"drain_timed_out,omitempty"`
	AvgBatchEvents float64 `json:"avg_batch_events,omitempty"`

	// End to end and drains.
	OfferedPerSec   float64      `json:"offered_per_s,omitempty"`
	DeliveredPerSec float64      `json:"delivered_per_s,omitempty"`
	EndToEnd        *Percentiles `json:"receive_to_delivered,omitempty"`
	SendToDelivered *Percentiles `json:"send_to_delivered,omitempty"`
	FirstDelivery   float64      `json:"first_delivery_s,omitempty"`
	LoadPerSec      float64      `json:"load_events_per_s,omitempty"`
	RSS             *RSS         `json:"rss,omitempty"`
	// The relay's storage commits while the load ran (warm-up included),
	// from its /metrics.
	Commits *Commits `json:"commits,omitempty"`
	Note    string   `json:"note,omitempty"`
}

// Commits sums up hookbatch_storage_commit_seconds and
// hookbatch_storage_commit_operations over a stretch of a run.
type Commits struct {
	Count        int64   `json:"count"`
	MeanMS       float64 `json:"mean_ms"`
	OpsPerCommit float64 `json:"operations_per_commit"`
}

// RSS is the relay's memory as /proc/<pid>/status shows it, in KiB.
type RSS struct {
	Method     string `json:"method"` // subprocess | inproc-delta
	PeakKiB    int64  `json:"peak_kib"`
	VmHWM      int64  `json:"vm_hwm_kib"`
	VmRSS      int64  `json:"vm_rss_kib"`
	RssAnon    int64  `json:"rss_anon_kib"`
	RssFile    int64  `json:"rss_file_kib"`
	AfterDrain int64  `json:"vm_hwm_after_drain_kib,omitempty"`
}

// Row is one line of the table: medians over the runs of one scenario.
type Row struct {
	Scenario     string  `json:"scenario"`
	Key          string  `json:"key"`
	Runs         int     `json:"runs"`
	EventsPerSec float64 `json:"events_per_s"`
	P50          float64 `json:"p50_ms,omitempty"`
	P99          float64 `json:"p99_ms,omitempty"`
	Ratio        float64 `json:"ratio,omitempty"`
	RatioOf      string  `json:"ratio_of,omitempty"`
	Target       string  `json:"target,omitempty"`
	Verdict      string  `json:"verdict,omitempty"` // PASS | MISS, informational
	Loss         int64   `json:"loss"`
	Dups         int64   `json:"dups"`
	Delivery     bool    `json:"-"`
	Extra        string  `json:"extra,omitempty"`
}

// TargetResult is one speed target next to what was measured. Targets are
// informational: they never change the exit status.
type TargetResult struct {
	Name     string  `json:"name"`
	Want     string  `json:"want"`
	Measured float64 `json:"measured"`
	Unit     string  `json:"unit"`
	Verdict  string  `json:"verdict"`
}

// Machine describes where the figures were taken.
type Machine struct {
	CPU        string    `json:"cpu"`
	Cores      int       `json:"cores"`
	GOMAXPROCS int       `json:"gomaxprocs"`
	MemTotalMB int64     `json:"mem_total_mb,omitempty"`
	GoVersion  string    `json:"go_version"`
	OS         string    `json:"os"`
	Arch       string    `json:"arch"`
	Kernel     string    `json:"kernel,omitempty"`
	LoadStart  string    `json:"loadavg_start,omitempty"`
	LoadEnd    string    `json:"loadavg_end,omitempty"`
	Date       time.Time `json:"date"`
}

// Results is the JSON file.
type Results struct {
	Machine      Machine        `json:"machine"`
	Relay        string         `json:"relay"`
	RelayNote    string         `json:"relay_note,omitempty"`
	Settings     map[string]any `json:"settings"`
	WallSeconds  float64        `json:"wall_s"`
	Rows         []Row          `json:"rows"`
	Targets      []TargetResult `json:"targets"`
	Measurements []*Measurement `json:"measurements"`
	Samples      []Sample       `json:"samples"`
	Segments     []Segment      `json:"segments"`
	Failures     []string       `json:"failures,omitempty"`
	Notes        []string       `json:"notes,omitempty"`
	byKey        map[string][]*Measurement
}

func (r *Results) add(m *Measurement) {
	r.Measurements = append(r.Measurements, m)
	if r.byKey == nil {
		r.byKey = make(map[string][]*Measurement)
	}
	r.byKey[m.Key] = append(r.byKey[m.Key], m)
}

func machineInfo() Machine {
	m := Machine{
		CPU:        cpuModel(),
		Cores:      runtime.NumCPU(),
		GOMAXPROCS: runtime.GOMAXPROCS(0),
		GoVersion:  runtime.Version(),
		OS:         runtime.GOOS,
		Arch:       runtime.GOARCH,
		Date:       time.Now().UTC().Truncate(time.Second),
		LoadStart:  loadAvg(),
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	if kb := procField("/proc/meminfo", "MemTotal"); kb > 0 {
		m.MemTotalMB = kb / 1024
	}
	return m
}

func cpuModel() string {
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return runtime.GOARCH
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return runtime.GOARCH
}

func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return ""
	}
	return strings.Join(f[:3], " ")
}

// procField reads a "Name:   123 kB" line of a /proc file, in KiB (0 if
// absent).
func procField(path, name string) int64 {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok || k != name {
			continue
		}
		f := strings.Fields(v)
		if len(f) == 0 {
			return 0
		}
		n, _ := strconv.ParseInt(f[0], 10, 64)
		return n
	}
	return 0
}

func readRSS(pid int) RSS {
	p := fmt.Sprintf("/proc/%d/status", pid)
	return RSS{
		VmHWM:   procField(p, "VmHWM"),
		VmRSS:   procField(p, "VmRSS"),
		RssAnon: procField(p, "RssAnon"),
		RssFile: procField(p, "RssFile"),
	}
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// values is f of every run of key.
func (r *Results) values(key string, f func(*Measurement) float64) []float64 {
	var out []float64
	for _, m := range r.byKey[key] {
		if v := f(m); !math.IsNaN(v) {
			out = append(out, v)
		}
	}
	return out
}

// pairRatio is the median over runs of f(a)/f(b), pair by pair: run i of a
// against run i of b.
func (r *Results) pairRatio(a, b string, f func(*Measurement) float64) (float64, int) {
	byRun := make(map[int]*Measurement)
	for _, m := range r.byKey[b] {
		byRun[m.Run] = m
	}
	var ratios []float64
	for _, m := range r.byKey[a] {
		if o, ok := byRun[m.Run]; ok && f(o) > 0 {
			ratios = append(ratios, f(m)/f(o))
		}
	}
	return median(ratios), len(ratios)
}

func eventsPerSec(m *Measurement) float64 { return m.EventsPerSec }

func latP(q func(*Percentiles) float64, pick func(*Measurement) *Percentiles) func(*Measurement) float64 {
	return func(m *Measurement) float64 {
		if p := pick(m); p != nil {
			return q(p)
		}
		return math.NaN()
	}
}

func reqLatency(m *Measurement) *Percentiles { return m.Latency }
func e2eLatency(m *Measurement) *Percentiles { return m.EndToEnd }
func p50(p *Percentiles) float64             { return p.P50 }
func p99(p *Percentiles) float64             { return p.P99 }

// row summarises key; lat picks the latency shown (nil: none).
func (r *Results) row(label, key string, lat func(*Measurement) *Percentiles) (Row, bool) {
	ms := r.byKey[key]
	if len(ms) == 0 {
		return Row{}, false
	}
	row := Row{Scenario: label, Key: key, Runs: len(ms), EventsPerSec: median(r.values(key, eventsPerSec))}
	if lat != nil {
		row.P50 = median(r.values(key, latP(p50, lat)))
		row.P99 = median(r.values(key, latP(p99, lat)))
	}
	for _, m := range ms {
		if m.System == "hookbatch" {
			row.Delivery = true
			row.Loss += m.Lost
			row.Dups += m.DupBatches + m.DupEvents
		}
	}
	return row, true
}

func verdict(ok bool) string {
	if ok {
		return "PASS"
	}
	return "MISS"
}

// summarise builds the table rows and the targets from the measurements.
func (r *Results) summarise(o *options) {
	r.Rows, r.Targets = nil, nil
	c := o.conns
	syncs := o.syncNames()
	addRow := func(row Row, ok bool) *Row {
		if !ok {
			return nil
		}
		r.Rows = append(r.Rows, row)
		return &r.Rows[len(r.Rows)-1]
	}
	ratioTo := func(row *Row, of, ofLabel string) float64 {
		if row == nil {
			return math.NaN()
		}
		v, n := r.pairRatio(row.Key, of, eventsPerSec)
		if n > 0 {
			row.Ratio, row.RatioOf = v, ofLabel
		}
		return v
	}
	target := func(row *Row, name, want string, measured float64, unit string, ok bool) {
		if row == nil || math.IsNaN(measured) {
			return
		}
		v := verdict(ok)
		row.Target, row.Verdict = want, v
		r.Targets = append(r.Targets, TargetResult{Name: name, Want: want, Measured: measured, Unit: unit, Verdict: v})
	}

	for _, conns := range o.singleConns() {
		ck := fmt.Sprintf("ceiling/single/c%d", conns)
		addRow(r.row(fmt.Sprintf("ceiling: bare fasthttp 202, 1 event/req, %d conns", conns), ck, reqLatency))
		for _, s := range syncs {
			key := fmt.Sprintf("ingest/single/c%d/sync-%s", conns, s)
			row := addRow(r.row(fmt.Sprintf("ingest: 1 event/req, %d conns, sync %s", conns, s), key, reqLatency))
			v := ratioTo(row, ck, "ceiling")
			switch {
			case s == "on" && conns == 256:
				target(row, "single-event sync on, 256 conns / ceiling", ">= 0.70x", v, "x", v >= 0.70)
			case s == "on" && conns == c:
				target(row, fmt.Sprintf("single-event sync on, %d conns / ceiling", conns), ">= 0.40x", v, "x", v >= 0.40)
			case s == "off" && conns == c:
				target(row, fmt.Sprintf("single-event sync off, %d conns / ceiling", conns), ">= 0.60x", v, "x", v >= 0.60)
			}
			if conns == c && s == syncs[0] {
				fk := fmt.Sprintf("fanout/%d/c%d/sync-%s", o.subscribers, conns, s)
				frow := addRow(r.row(fmt.Sprintf("fan-out: %d subscribers, 1 event/req, %d conns, sync %s", o.subscribers, conns, s), fk, reqLatency))
				fv := ratioTo(frow, key, "1 subscriber")
				target(frow, fmt.Sprintf("fan-out %d subscribers / 1 subscriber", o.subscribers), ">= 0.80x", fv, "x", fv >= 0.80)
			}
		}
	}
	ak := fmt.Sprintf("ceiling/array%d/c%d", o.batch, c)
	addRow(r.row(fmt.Sprintf("ceiling: bare fasthttp 202, %d events/req, %d conns", o.batch, c), ak, reqLatency))
	for _, s := range syncs {
		bk := fmt.Sprintf("badger/array%d/c%d/sync-%s", o.batch, c, s)
		addRow(r.row(fmt.Sprintf("raw Badger: transactions of %d events, %d writers, sync %s", o.batch, c, s), bk, reqLatency))
		sk := fmt.Sprintf("storage/array%d/c%d/sync-%s", o.batch, c, s)
		ratioTo(addRow(r.row(fmt.Sprintf("storage: hookbatch Append of %d, %d writers, sync %s", o.batch, c, s), sk, reqLatency)), bk, "raw Badger")
		key := fmt.Sprintf("ingest/array%d/c%d/sync-%s", o.batch, c, s)
		row := addRow(r.row(fmt.Sprintf("ingest: %d events/req, %d conns, sync %s", o.batch, c, s), key, reqLatency))
		if row != nil {
			var extra []string
			for _, of := range []struct{ key, name string }{{sk, "hookbatch storage"}, {ak, "the HTTP ceiling"}} {
				if v, n := r.pairRatio(key, of.key, eventsPerSec); n > 0 {
					extra = append(extra, fmt.Sprintf("%.2fx of %s", v, of.name))
				}
			}
			row.Extra = strings.Join(extra, ", ")
		}
		v := ratioTo(row, bk, "raw Badger")
		if s == syncs[0] {
			target(row, fmt.Sprintf("%d-event array ingest / raw Badger, sync %s", o.batch, s), ">= 0.80x", v, "x", v >= 0.80)
		}
	}

	ek := fmt.Sprintf("e2e/c%d/sync-%s", c, syncs[0])
	if row := addRow(r.row(fmt.Sprintf("end to end: paced at half the max, max_wait %s, sync %s", o.maxWait, syncs[0]), ek, e2eLatency)); row != nil {
		v := median(r.values(ek, func(m *Measurement) float64 {
			if m.OfferedPerSec > 0 {
				return m.DeliveredPerSec / m.OfferedPerSec
			}
			return math.NaN()
		}))
		if !math.IsNaN(v) {
			row.Ratio, row.RatioOf = v, "offered"
		}
		limit := float64(o.maxWait+50*time.Millisecond) / 1e6
		target(row, "end-to-end p99 receive -> delivered", fmt.Sprintf("p99 <= %.0fms", limit), row.P99, "ms", row.P99 <= limit)
		row.Extra = fmt.Sprintf("max %.0fms", median(r.values(ek, latP(func(p *Percentiles) float64 { return p.Max }, e2eLatency))))
	}

	b1, b100 := "batching/max1", "batching/max100"
	addRow(r.row("delivery: drain, max_events 1 (one request per event)", b1, nil))
	if row := addRow(r.row("delivery: drain, max_events 100", b100, nil)); row != nil {
		v := ratioTo(row, b1, "max_events 1")
		target(row, "batched / one request per event", ">= 20x", v, "x", v >= 20)
	}

	bk := fmt.Sprintf("backlog/%d", o.backlog)
	if row := addRow(r.row(fmt.Sprintf("backlog: drain of %d queued, subscriber back", o.backlog), bk, nil)); row != nil {
		live := median(r.values(ek, func(m *Measurement) float64 { return m.DeliveredPerSec }))
		if !math.IsNaN(live) && live > 0 {
			v := row.EventsPerSec / live
			row.Ratio, row.RatioOf = v, "live e2e"
			target(row, "backlog drain rate / live end-to-end rate", ">= 0.50x", v, "x", v >= 0.5)
		}
		peak := median(r.values(bk, func(m *Measurement) float64 {
			if m.RSS == nil {
				return math.NaN()
			}
			return float64(m.RSS.PeakKiB) / 1024
		}))
		if !math.IsNaN(peak) {
			method := r.byKey[bk][0].RSS.Method
			rr := Row{Scenario: fmt.Sprintf("backlog: peak RSS with %d queued (%s)", o.backlog, method), Key: bk + "/rss", Runs: row.Runs,
				EventsPerSec: median(r.values(bk, func(m *Measurement) float64 { return m.LoadPerSec }))}
			rr.Extra = fmt.Sprintf("peak RSS %.0f MB", peak)
			const want = 150.0 // MB, set for 1M queued; informational at other sizes
			r.Rows = append(r.Rows, rr)
			wantText := fmt.Sprintf("<= %.0f MB", want)
			if o.backlog != 1_000_000 {
				wantText += " (set for 1M)"
			}
			target(&r.Rows[len(r.Rows)-1], fmt.Sprintf("peak RSS with %d queued", o.backlog), wantText, peak, "MB", peak <= want)
		}
	}
	r.sanitise()
}

// finite is v, or 0 when v is NaN or infinite (a scenario without a
// figure): JSON has no NaN.
func finite(v float64) float64 {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return 0
	}
	return v
}

func (r *Results) sanitise() {
	for i := range r.Rows {
		row := &r.Rows[i]
		row.EventsPerSec, row.P50, row.P99, row.Ratio = finite(row.EventsPerSec), finite(row.P50), finite(row.P99), finite(row.Ratio)
	}
	for i := range r.Targets {
		r.Targets[i].Measured = finite(r.Targets[i].Measured)
	}
}

func fmtRate(v float64) string {
	switch {
	case math.IsNaN(v) || v == 0:
		return "-"
	case v >= 1e6:
		return fmt.Sprintf("%.2fM", v/1e6)
	case v >= 1e4:
		return fmt.Sprintf("%.1fk", v/1e3)
	default:
		return fmt.Sprintf("%.0f", v)
	}
}

func fmtMS(v float64) string {
	switch {
	case v == 0 || math.IsNaN(v):
		return "-"
	case v < 10:
		return fmt.Sprintf("%.2fms", v)
	default:
		return fmt.Sprintf("%.0fms", v)
	}
}

// printTable writes the table of rows.
func (r *Results) printTable(w io.Writer) {
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "scenario\tevents/s\tp50\tp99\tratio\ttarget\tloss\tdups\t")
	for _, row := range r.Rows {
		ratio := "-"
		if row.RatioOf != "" {
			ratio = fmt.Sprintf("%.2fx %s", row.Ratio, row.RatioOf)
		}
		tgt := "-"
		if row.Target != "" {
			tgt = row.Target + " " + row.Verdict
		}
		loss, dups := "-", "-"
		if row.Delivery {
			loss, dups = strconv.FormatInt(row.Loss, 10), strconv.FormatInt(row.Dups, 10)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t", row.Scenario, fmtRate(row.EventsPerSec), fmtMS(row.P50), fmtMS(row.P99), ratio, tgt, loss, dups)
		if row.Extra != "" {
			fmt.Fprintf(tw, "  (%s)", row.Extra)
		}
		fmt.Fprintln(tw)
	}
	_ = tw.Flush()
}

// write stores the JSON as <out>/<timestamp>.json and <out>/latest.json,
// and the chart as <out>/latest.svg.
func (r *Results) write(out string) ([]string, error) {
	if err := os.MkdirAll(out, 0o755); err != nil {
		return nil, err
	}
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return nil, err
	}
	b = append(b, '\n')
	stamp := r.Machine.Date.Format("20060102T150405Z")
	var written []string
	for _, name := range []string{stamp + ".json", "latest.json"} {
		p := filepath.Join(out, name)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			return written, err
		}
		written = append(written, p)
	}
	p := filepath.Join(out, "latest.svg")
	if err := os.WriteFile(p, chartSVG(r), 0o644); err != nil {
		return written, err
	}
	return append(written, p), nil
}
