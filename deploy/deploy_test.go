// Package deploy holds deployment files: the systemd unit and the Grafana
// dashboard. Its tests keep them in step with the relay: the dashboard may
// query only the metrics hookbatch exports (DESIGN §8), and the unit must
// run, reload and stop hookbatch the way its command line expects.
package deploy

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// metricKinds are the metrics the dashboard may query: hookbatch's (DESIGN
// §8 and the relay's extras) and the process metrics it exports. A renamed
// or removed metric must be changed here and in the dashboard.
var metricKinds = map[string]string{
	"hookbatch_ingest_requests_total":     "counter",
	"hookbatch_ingest_duration_seconds":   "histogram",
	"hookbatch_events_accepted_total":     "counter",
	"hookbatch_events_duplicate_total":    "counter",
	"hookbatch_queue_events":              "gauge",
	"hookbatch_oldest_event_age_seconds":  "gauge",
	"hookbatch_batches_delivered_total":   "counter",
	"hookbatch_events_delivered_total":    "counter",
	"hookbatch_delivery_attempts_total":   "counter",
	"hookbatch_delivery_duration_seconds": "histogram",
	"hookbatch_batch_events":              "histogram",
	"hookbatch_end_to_end_seconds":        "histogram",
	"hookbatch_dead_letter_batches_total": "counter",
	"hookbatch_circuit_open":              "gauge",
	"hookbatch_inflight_requests":         "gauge",
	"hookbatch_batches_flushed_total":     "counter",
	"hookbatch_storage_bytes":             "gauge",
	"process_resident_memory_bytes":       "gauge",
}

// seriesNames returns the series names a metric is queried by: a
// histogram's _bucket, _sum and _count (it has no series of its own name),
// any other metric's own name.
func seriesNames() map[string]string {
	names := make(map[string]string)
	for m, kind := range metricKinds {
		if kind == "histogram" {
			for _, suffix := range []string{"_bucket", "_sum", "_count"} {
				names[m+suffix] = m
			}
			continue
		}
		names[m] = m
	}
	return names
}

var (
	reString   = regexp.MustCompile(`"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|` + "`[^`]*`")
	reVariable = regexp.MustCompile(`\$\{[^}]*\}|\$[A-Za-z_][A-Za-z0-9_]*|\[\[[^\]]*\]\]`)
	reMatchers = regexp.MustCompile(`\{[^{}]*\}`)
	reRange    = regexp.MustCompile(`\[[^\[\]]*\]`)
	reGrouping = regexp.MustCompile(`\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)`)
	reToken    = regexp.MustCompile(`[0-9][0-9A-Za-z_.]*|[A-Za-z_:][A-Za-z0-9_:]*`)
	reCall     = regexp.MustCompile(`^\s*\(`)
	// Keywords and literals that look like identifiers.
	promKeywords = []string{"by", "without", "on", "ignoring", "group_left", "group_right", "bool",
		"and", "or", "unless", "offset", "inf", "nan", "Inf", "NaN", "atan2"}
)

// metricNames returns the metric (series) names an expression selects:
// every identifier that is not a function, keyword, label name or literal.
// Grafana variables ($x, ${x}, $__rate_interval) are ignored. Selecting by
// {__name__=...} is an error: this check could not see the name.
func metricNames(expr string) ([]string, error) {
	if strings.Contains(expr, "__name__") {
		return nil, errors.New("selects by __name__, which this check cannot follow")
	}
	s := reString.ReplaceAllString(expr, `""`)
	s = reVariable.ReplaceAllString(s, " ")
	s = reMatchers.ReplaceAllString(s, " ")
	s = reRange.ReplaceAllString(s, " ")
	s = reGrouping.ReplaceAllString(s, " ")
	var names []string
	for _, loc := range reToken.FindAllStringIndex(s, -1) {
		tok := s[loc[0]:loc[1]]
		switch {
		case tok[0] >= '0' && tok[0] <= '9': // number or duration
		case reCall.MatchString(s[loc[1]:]): // function or aggregation
		case slices.Contains(promKeywords, tok):
		default:
			names = append(names, tok)
		}
	}
	return names, nil
}

// variableExpr returns the PromQL inside a Grafana Prometheus variable
// query: label_values(expr, label), query_result(expr), or none.
func variableExpr(q string) (string, error) {
	q = strings.TrimSpace(q)
	inner := func(prefix string) (string, bool) {
		if !strings.HasPrefix(q, prefix+"(") || !strings.HasSuffix(q, ")") {
			return "", false
		}
		return q[len(prefix)+1 : len(q)-1], true
	}
	if args, ok := inner("label_values"); ok {
		// The label is the last argument; with one argument there is no
		// metric.
		depth, last := 0, -1
		for i, c := range args {
			switch c {
			case '(', '{', '[':
				depth++
			case ')', '}', ']':
				depth--
			case ',':
				if depth == 0 {
					last = i
				}
			}
		}
		if last < 0 {
			return "", nil
		}
		return args[:last], nil
	}
	if e, ok := inner("query_result"); ok {
		return e, nil
	}
	if _, ok := inner("label_names"); ok || q == "" {
		return "", nil
	}
	return "", fmt.Errorf("variable query %q is not label_values(...), query_result(...) or label_names()", q)
}

func TestMetricNames(t *testing.T) {
	for expr, want := range map[string][]string{
		`histogram_quantile(0.99, sum by (subscriber, le) (rate(x_bucket{job=~"$job", a="b,c)"}[$__rate_interval])))`: {"x_bucket"},
		`sum(rate(a_total[5m] offset 1h)) by (code) / on(instance) group_left(foo) b > bool 0`:                        {"a_total", "b"},
		`max without (host) (c) or vector(0) unless d * 1e3 + 2m`:                                                     {"c", "d"},
		`sum by (subscriber) (rate(s_sum{x="1"}[${__rate_interval}])) / sum by (subscriber) (rate(s_count[1m]))`:      {"s_sum", "s_count"},
	} {
		got, err := metricNames(expr)
		if err != nil || !slices.Equal(got, want) {
			t.Errorf("metricNames(%s) = %q, %v; want %q", expr, got, err, want)
		}
	}
	if _, err := metricNames(`{__name__=~"hookbatch_.*"}`); err == nil {
		t.Error("a __name__ selector was accepted")
	}
	for q, want := range map[string]string{
		`label_values(hookbatch_queue_events{job=~"$job", a="x,y"}, subscriber)`: `hookbatch_queue_events{job=~"$job", a="x,y"}`,
		`label_values(job)`:            "",
		`query_result(sum(up) by (a))`: "sum(up) by (a)",
	} {
		if got, err := variableExpr(q); err != nil || got != want {
			t.Errorf("variableExpr(%s) = %q, %v; want %q", q, got, err, want)
		}
	}
}

// dashboard is the part of the Grafana JSON model the tests look at.
type dashboard struct {
	SchemaVersion int     `json:"schemaVersion"`
	UID           string  `json:"uid"`
	Title         string  `json:"title"`
	Panels        []panel `json:"panels"`
	Templating    struct {
		List []struct {
			Name       string          `json:"name"`
			Type       string          `json:"type"`
			Query      json.RawMessage `json:"query"`
			Definition string          `json:"definition"`
			Datasource *datasourceRef  `json:"datasource"`
		} `json:"list"`
	} `json:"templating"`
}

type panel struct {
	ID         int            `json:"id"`
	Type       string         `json:"type"`
	Title      string         `json:"title"`
	Datasource *datasourceRef `json:"datasource"`
	GridPos    struct{ H, W, X, Y int }
	Targets    []struct {
		Expr       string         `json:"expr"`
		RefID      string         `json:"refId"`
		Datasource *datasourceRef `json:"datasource"`
	} `json:"targets"`
	Panels []panel `json:"panels"` // of a collapsed row
}

type datasourceRef struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

func loadDashboard(t *testing.T) (dashboard, []panel) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("grafana", "hookbatch.json"))
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(data, &d); err != nil {
		t.Fatalf("grafana/hookbatch.json: %v", err)
	}
	var all []panel
	for _, p := range d.Panels {
		all = append(all, p)
		all = append(all, p.Panels...)
	}
	return d, all
}

// TestDashboardMetrics checks that every PromQL expression of the dashboard
// (panel targets and variable queries) selects only exported metrics, and
// that every metric has a panel.
func TestDashboardMetrics(t *testing.T) {
	d, panels := loadDashboard(t)
	allowed := seriesNames()
	used := make(map[string]bool)
	check := func(where, expr string) {
		t.Helper()
		names, err := metricNames(expr)
		if err != nil {
			t.Errorf("%s: %v: %s", where, err, expr)
			return
		}
		if len(names) == 0 {
			t.Errorf("%s: selects no metric: %s", where, expr)
		}
		for _, n := range names {
			m, ok := allowed[n]
			switch {
			case ok:
				used[m] = true
			case metricKinds[n] == "histogram":
				t.Errorf("%s: histogram %s has only _bucket, _sum and _count series: %s", where, n, expr)
			default:
				t.Errorf("%s: unknown metric %q (not in DESIGN §8 / the relay's metrics): %s", where, n, expr)
			}
		}
	}

	exprs := 0
	for _, p := range panels {
		for i, tg := range p.Targets {
			if strings.TrimSpace(tg.Expr) == "" {
				t.Errorf("panel %q target %d: empty expr", p.Title, i)
				continue
			}
			exprs++
			check(fmt.Sprintf("panel %q target %s", p.Title, tg.RefID), tg.Expr)
		}
	}
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		var q string
		if err := json.Unmarshal(v.Query, &q); err != nil {
			var obj struct {
				Query string `json:"query"`
			}
			if err := json.Unmarshal(v.Query, &obj); err != nil {
				t.Errorf("variable %s: query is neither a string nor {\"query\": ...}: %s", v.Name, v.Query)
				continue
			}
			q = obj.Query
		}
		texts := []string{q}
		if v.Definition != q {
			texts = append(texts, v.Definition)
		}
		for _, text := range texts {
			e, err := variableExpr(text)
			if err != nil {
				t.Errorf("variable %s: %v", v.Name, err)
			} else if e != "" {
				check("variable "+v.Name, e)
			}
		}
	}
	if exprs == 0 {
		t.Fatal("no PromQL expressions found in the dashboard")
	}
	for m := range metricKinds {
		if !used[m] {
			t.Errorf("no panel shows %s", m)
		}
	}
}

// TestDashboardStructure checks what Grafana needs to import the dashboard
// into any installation: a Prometheus data source variable that every query
// uses, unique ids and a grid without overlaps.
func TestDashboardStructure(t *testing.T) {
	d, panels := loadDashboard(t)
	if d.SchemaVersion < 36 || d.SchemaVersion > 41 {
		t.Errorf("schemaVersion %d, want about 39", d.SchemaVersion)
	}
	if d.UID == "" || d.Title == "" {
		t.Errorf("uid %q, title %q: both required", d.UID, d.Title)
	}
	dsVar := ""
	for _, v := range d.Templating.List {
		if v.Type == "datasource" && string(v.Query) == `"prometheus"` {
			dsVar = "${" + v.Name + "}"
		}
	}
	if dsVar == "" {
		t.Fatal("no data source variable of type prometheus")
	}
	for _, v := range d.Templating.List {
		if v.Type == "query" && (v.Datasource == nil || v.Datasource.UID != dsVar) {
			t.Errorf("variable %s: data source %+v, want uid %s", v.Name, v.Datasource, dsVar)
		}
	}

	ids := make(map[int]string)
	var boxes []panel
	for _, p := range panels {
		if prev, dup := ids[p.ID]; dup || p.ID == 0 {
			t.Errorf("panel %q: id %d (also %q)", p.Title, p.ID, prev)
		}
		ids[p.ID] = p.Title
		g := p.GridPos
		if g.W <= 0 || g.H <= 0 || g.X < 0 || g.X+g.W > 24 || g.Y < 0 {
			t.Errorf("panel %q: gridPos %+v outside the 24-column grid", p.Title, g)
		}
		for _, b := range boxes {
			o := b.GridPos
			if g.X < o.X+o.W && o.X < g.X+g.W && g.Y < o.Y+o.H && o.Y < g.Y+g.H {
				t.Errorf("panels %q %+v and %q %+v overlap", p.Title, g, b.Title, o)
			}
		}
		boxes = append(boxes, p)
		if p.Type == "row" {
			continue
		}
		if p.Datasource == nil || p.Datasource.UID != dsVar {
			t.Errorf("panel %q: data source %+v, want uid %s", p.Title, p.Datasource, dsVar)
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q: no queries", p.Title)
		}
		refs := make(map[string]bool)
		for _, tg := range p.Targets {
			if tg.RefID == "" || refs[tg.RefID] {
				t.Errorf("panel %q: refId %q empty or repeated", p.Title, tg.RefID)
			}
			refs[tg.RefID] = true
			if tg.Datasource != nil && tg.Datasource.UID != dsVar {
				t.Errorf("panel %q target %s: data source %+v", p.Title, tg.RefID, tg.Datasource)
			}
		}
	}
}

// TestDashboardMetricsInSource checks that the relay still exports every
// hookbatch metric the dashboard relies on, by looking for its name in the
// module's non-test Go source: renaming a metric there breaks this test until
// metricKinds and the dashboard follow.
func TestDashboardMetricsInSource(t *testing.T) {
	root := ".."
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Skip("module root not found beside deploy/")
	}
	found := make(map[string]bool)
	reName := regexp.MustCompile(`\bhookbatch_[a-z0-9_]+`)
	err := filepath.WalkDir(root, func(path string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if e.IsDir() {
			switch e.Name() {
			case "examples", "deploy", "node_modules", "testdata", "vendor", ".git":
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, n := range reName.FindAllString(string(data), -1) {
			found[n] = true
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for m := range metricKinds {
		if strings.HasPrefix(m, "hookbatch_") && !found[m] {
			t.Errorf("%s is used by the dashboard but appears nowhere in the module's Go source", m)
		}
	}
}

// unit is a parsed systemd unit file: section -> key -> values in order.
type unit map[string]map[string][]string

func parseUnit(t *testing.T, path string) unit {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	u := make(unit)
	section := ""
	lines := strings.Split(string(data), "\n")
	for i := 0; i < len(lines); i++ {
		line := strings.TrimSpace(lines[i])
		for strings.HasSuffix(line, `\`) && i+1 < len(lines) { // continuation
			i++
			line = strings.TrimSuffix(line, `\`) + " " + strings.TrimSpace(lines[i])
		}
		switch {
		case line == "" || line[0] == '#' || line[0] == ';':
		case line[0] == '[' && line[len(line)-1] == ']':
			section = line[1 : len(line)-1]
			if u[section] == nil {
				u[section] = make(map[string][]string)
			}
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok || section == "" {
				t.Fatalf("%s:%d: not key=value in a section: %q", path, i+1, line)
			}
			k = strings.TrimSpace(k)
			u[section][k] = append(u[section][k], strings.TrimSpace(v))
		}
	}
	return u
}

// one returns the single value of key, failing if it is missing or repeated.
func (u unit) one(t *testing.T, section, key string) string {
	t.Helper()
	vs := u[section][key]
	if len(vs) != 1 {
		t.Errorf("[%s] %s: %d values %q, want one", section, key, len(vs), vs)
		return ""
	}
	return vs[0]
}

// parseTimespan parses a systemd time span: "45s", "1min 30s", "90" (s).
func parseTimespan(s string) (time.Duration, error) {
	units := map[string]time.Duration{
		"": time.Second, "s": time.Second, "sec": time.Second, "second": time.Second, "seconds": time.Second,
		"ms": time.Millisecond, "msec": time.Millisecond, "us": time.Microsecond, "usec": time.Microsecond,
		"m": time.Minute, "min": time.Minute, "minute": time.Minute, "minutes": time.Minute,
		"h": time.Hour, "hr": time.Hour, "hour": time.Hour, "hours": time.Hour,
	}
	re := regexp.MustCompile(`^\s*([0-9]+(?:\.[0-9]+)?)\s*([a-z]*)`)
	rest := strings.TrimSpace(s)
	if rest == "" || rest == "infinity" {
		return 0, fmt.Errorf("time span %q: not a finite time", s)
	}
	var total time.Duration
	for rest != "" {
		m := re.FindStringSubmatch(rest)
		if m == nil {
			return 0, fmt.Errorf("time span %q: cannot parse %q", s, rest)
		}
		unit, ok := units[m[2]]
		if !ok {
			return 0, fmt.Errorf("time span %q: unknown unit %q", s, m[2])
		}
		n, _ := strconv.ParseFloat(m[1], 64)
		total += time.Duration(n * float64(unit))
		rest = strings.TrimSpace(rest[len(m[0]):])
	}
	return total, nil
}

func TestParseTimespan(t *testing.T) {
	for s, want := range map[string]time.Duration{
		"45s": 45 * time.Second, "90": 90 * time.Second, "1min 30s": 90 * time.Second,
		"2m": 2 * time.Minute, "1h": time.Hour, "500ms": 500 * time.Millisecond, "1.5min": 90 * time.Second,
	} {
		if got, err := parseTimespan(s); err != nil || got != want {
			t.Errorf("parseTimespan(%q) = %v, %v; want %v", s, got, err, want)
		}
	}
	for _, s := range []string{"", "infinity", "5 fortnights", "s"} {
		if _, err := parseTimespan(s); err == nil {
			t.Errorf("parseTimespan(%q): no error", s)
		}
	}
}

// shutdownTimeout is the longest shutdown_timeout the unit must wait for:
// the default, or config.example.yaml's if longer.
func shutdownTimeout(t *testing.T) time.Duration {
	d := 30 * time.Second // DESIGN §3 default
	data, err := os.ReadFile(filepath.Join("..", "config.example.yaml"))
	if err != nil {
		return d
	}
	m := regexp.MustCompile(`(?m)^shutdown_timeout:\s*"?([0-9][0-9a-z.]*)`).FindSubmatch(data)
	if m == nil {
		return d
	}
	ex, err := time.ParseDuration(string(m[1]))
	if err != nil {
		t.Errorf("config.example.yaml: shutdown_timeout %q: %v", m[1], err)
		return d
	}
	return max(d, ex)
}

const unitPath = "systemd/hookbatch.service"

func TestSystemdUnit(t *testing.T) {
	u := parseUnit(t, unitPath)
	if u["Service"] == nil || u["Install"] == nil || u["Unit"] == nil {
		t.Fatalf("sections %v, want Unit, Service and Install", slices.Sorted(func(yield func(string) bool) {
			for k := range u {
				if !yield(k) {
					return
				}
			}
		}))
	}
	want := func(key, value string) {
		t.Helper()
		if got := u.one(t, "Service", key); got != value {
			t.Errorf("%s=%s, want %s", key, got, value)
		}
	}
	want("ExecStart", "/usr/local/bin/hookbatch serve -config /etc/hookbatch/hookbatch.yaml")
	if got := u.one(t, "Service", "ExecReload"); !regexp.MustCompile(`^/(usr/)?bin/kill -(s )?HUP \$MAINPID$`).MatchString(got) {
		t.Errorf("ExecReload=%s, want /bin/kill -HUP $MAINPID (hookbatch reloads its config on SIGHUP)", got)
	}
	want("KillSignal", "SIGTERM")
	want("Restart", "on-failure")
	want("StateDirectory", "hookbatch")
	want("NoNewPrivileges", "yes")
	want("ProtectSystem", "strict")
	want("ProtectHome", "yes")
	want("PrivateTmp", "yes")
	if u.one(t, "Service", "DynamicUser") != "yes" && len(u["Service"]["User"]) == 0 {
		t.Error("neither DynamicUser=yes nor User=: would run as root")
	}
	if n, err := strconv.Atoi(u.one(t, "Service", "LimitNOFILE")); err != nil || n < 4096 {
		t.Errorf("LimitNOFILE=%s, want a number >= 4096", u["Service"]["LimitNOFILE"])
	}
	stop, err := parseTimespan(u.one(t, "Service", "TimeoutStopSec"))
	if err != nil {
		t.Errorf("TimeoutStopSec: %v", err)
	} else if st := shutdownTimeout(t); stop <= st {
		t.Errorf("TimeoutStopSec=%v, want longer than shutdown_timeout %v so that hookbatch can finish and close Badger before SIGKILL", stop, st)
	}
	if len(u["Install"]["WantedBy"]) == 0 {
		t.Error("[Install] has no WantedBy: systemctl enable would do nothing")
	}
}

// TestSystemdUnitVerifies runs systemd-analyze verify on the unit, with its
// binary replaced by a stand-in, where systemd-analyze exists.
func TestSystemdUnitVerifies(t *testing.T) {
	sa, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze not installed: unit not verified by systemd")
	}
	data, err := os.ReadFile(unitPath)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "hookbatch")
	if err := os.WriteFile(bin, []byte("#!/bin/sh\nexit 0\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	unitFile := filepath.Join(dir, "hookbatch.service")
	text := strings.ReplaceAll(string(data), "/usr/local/bin/hookbatch", bin)
	if err := os.WriteFile(unitFile, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.CommandContext(t.Context(), sa, "verify", "--man=no", unitFile).CombinedOutput()
	// Diagnostics about the unit name its file; other output is about the
	// machine (no running systemd, missing dependencies of other units).
	var ours []string
	for line := range strings.Lines(string(out)) {
		if strings.Contains(line, "hookbatch.service") {
			ours = append(ours, strings.TrimSpace(line))
		}
	}
	if len(ours) > 0 {
		t.Errorf("systemd-analyze verify:\n%s", strings.Join(ours, "\n"))
	}
	if err != nil && len(ours) == 0 {
		t.Logf("systemd-analyze verify failed without naming the unit (environment?): %v\n%s", err, out)
	}
}
