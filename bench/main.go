// Command bench measures hookbatch side by side with its ceilings on one
// machine, in one run (DESIGN §10): a bare fasthttp server answering 202,
// raw Badger, hookbatch's storage package, and hookbatch itself with real
// sink subscribers on loopback. It prints a table of events/s, latency
// percentiles and ratios, checks that every acknowledged event was delivered
// (exit status 1 if not), and writes every figure as JSON and a chart of
// throughput and queue depth over time as SVG.
//
//	go run ./bench                      full run (several minutes)
//	go run ./bench -quick -out DIR      small run for CI (< 30 s); never asserts speed
//
// Figures are medians of -runs alternating runs; ratios are taken run by run
// (hookbatch against the ceiling measured next to it) and their median
// reported. The machines are shared: read the ratios, not the absolutes.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strings"
	"syscall"
	"time"
)

// options are the flags, after -quick has picked its defaults.
type options struct {
	duration    time.Duration
	warmup      time.Duration
	conns       int
	eventSize   int
	batch       int
	subscribers int
	sync        string // on | off | both
	runs        int
	backlog     int64
	quick       bool
	out         string
	relayMode   string
	only        map[string]bool
	cpuprofile  string
	heapprofile string

	maxWait      time.Duration // of every subscriber
	drainTimeout time.Duration // for deliveries after a load stops
	batchN1      int64         // backlog drained with max_events 1
	batchN100    int64         // backlog drained with max_events 100
	loaderConns  int           // connections posting 1000-event arrays
}

// Scenario names for -only.
var scenarioNames = []string{"ingest", "storage", "fanout", "e2e", "batching", "backlog"}

func (o *options) syncModes() []bool {
	switch o.sync {
	case "on":
		return []bool{true}
	case "off":
		return []bool{false}
	}
	return []bool{true, false}
}

func (o *options) syncNames() []string {
	var out []string
	for _, s := range o.syncModes() {
		out = append(out, onOff(s))
	}
	return out
}

// singleConns are the connection counts of the single-event ingest.
func (o *options) singleConns() []int {
	if o.conns == 256 {
		return []int{256}
	}
	return []int{o.conns, 256}
}

func (o *options) selected(name string) bool { return len(o.only) == 0 || o.only[name] }

func onOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}

func parseFlags(args []string) (*options, error) {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	o := &options{}
	fs.DurationVar(&o.duration, "duration", 10*time.Second, "length of each measurement")
	fs.IntVar(&o.conns, "conns", 64, "producer connections (single-event ingest also runs at 256)")
	fs.IntVar(&o.eventSize, "event-size", 300, "bytes of each event's data")
	fs.IntVar(&o.batch, "batch", 100, "events per request in the array scenario (and per storage Append)")
	fs.IntVar(&o.subscribers, "subscribers", 4, "subscribers of the fan-out scenario")
	fs.StringVar(&o.sync, "sync", "both", "storage.sync_writes: on, off or both")
	fs.IntVar(&o.runs, "runs", 3, "alternating repetitions; medians are reported")
	fs.Int64Var(&o.backlog, "backlog", 1_000_000, "events queued in the backlog scenario")
	fs.BoolVar(&o.quick, "quick", false, "everything small (under 30 s): for CI, never asserts speed")
	fs.StringVar(&o.out, "out", filepath.Join("bench", "results"), "directory for <timestamp>.json, latest.json and latest.svg")
	fs.StringVar(&o.relayMode, "relay", modeInproc, "where the relay runs: inproc (relay.New in this process) or subprocess (hookbatch serve built from ./cmd/hookbatch)")
	only := fs.String("only", "", "comma-separated scenarios to run: "+strings.Join(scenarioNames, ","))
	fs.StringVar(&o.cpuprofile, "cpuprofile", "", "write a CPU profile of this process (generator, sinks and an inproc relay) to this file")
	fs.StringVar(&o.heapprofile, "heapprofile", "", "write the relay's heap profile (admin /debug/pprof/heap) to this file when the backlog is queued")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if o.quick {
		if !set["duration"] {
			o.duration = 400 * time.Millisecond
		}
		if !set["runs"] {
			o.runs = 1
		}
		if !set["backlog"] {
			o.backlog = 20_000
		}
	}
	switch {
	case o.duration <= 0:
		return nil, fmt.Errorf("-duration must be positive")
	case o.conns < 1 || o.conns > 4096:
		return nil, fmt.Errorf("-conns must be 1..4096")
	case o.eventSize < 1 || o.eventSize > 512<<10:
		return nil, fmt.Errorf("-event-size must be 1..524288")
	case o.batch < 2 || o.batch > 1000:
		return nil, fmt.Errorf("-batch must be 2..1000 (ingest.max_events_per_request is 1000)")
	case o.subscribers < 1 || o.subscribers > 64:
		return nil, fmt.Errorf("-subscribers must be 1..64")
	case o.sync != "on" && o.sync != "off" && o.sync != "both":
		return nil, fmt.Errorf("-sync must be on, off or both")
	case o.runs < 1:
		return nil, fmt.Errorf("-runs must be at least 1")
	case o.backlog < 1000:
		return nil, fmt.Errorf("-backlog must be at least 1000")
	case o.relayMode != modeInproc && o.relayMode != modeSubprocess:
		return nil, fmt.Errorf("-relay must be inproc or subprocess")
	}
	if *only != "" {
		o.only = map[string]bool{}
		for _, n := range strings.Split(*only, ",") {
			n = strings.TrimSpace(n)
			if !slices.Contains(scenarioNames, n) {
				return nil, fmt.Errorf("-only: unknown scenario %q (have %s)", n, strings.Join(scenarioNames, ","))
			}
			o.only[n] = true
		}
	}
	o.warmup = min(max(o.duration/5, 100*time.Millisecond), 2*time.Second)
	o.maxWait = 100 * time.Millisecond
	o.loaderConns = min(o.conns, 16)
	if o.quick {
		o.drainTimeout = 10 * time.Second
		o.batchN100, o.batchN1 = 10_000, 500
	} else {
		o.drainTimeout = 120 * time.Second
		o.batchN100 = min(200_000, o.backlog)
		o.batchN1 = max(o.batchN100/20, 1000)
	}
	return o, nil
}

// env is what every scenario shares.
type env struct {
	ctx    context.Context
	opts   *options
	tmp    string // removed at the end
	binary string // hookbatch built from ./cmd/hookbatch, "" if not
	smp    *sampler
	res    *Results
	start  time.Time
	failed bool
}

func (e *env) progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "[%6.1fs] %s\n", time.Since(e.start).Seconds(), fmt.Sprintf(format, args...))
}

func (e *env) fail(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	e.failed = true
	e.res.Failures = append(e.res.Failures, msg)
	e.progress("FAILED: %s", msg)
}

func main() { os.Exit(run(os.Args[1:])) }

func run(args []string) int {
	o, err := parseFlags(args)
	if err != nil {
		if err == flag.ErrHelp {
			return 0
		}
		fmt.Fprintln(os.Stderr, "bench:", err)
		return 2
	}
	if o.cpuprofile != "" {
		f, err := os.Create(o.cpuprofile)
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			return 2
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			return 2
		}
		defer func() {
			pprof.StopCPUProfile()
			_ = f.Close()
		}()
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	tmp, err := os.MkdirTemp("", "hookbatch-bench-*")
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		return 2
	}
	defer os.RemoveAll(tmp)

	e := &env{ctx: ctx, opts: o, tmp: tmp, start: time.Now()}
	e.res = &Results{
		Machine: machineInfo(),
		Relay:   o.relayMode,
		Settings: map[string]any{
			"duration": o.duration.String(), "warmup": o.warmup.String(), "conns": o.conns,
			"event_size": o.eventSize, "batch": o.batch, "subscribers": o.subscribers, "sync": o.sync,
			"runs": o.runs, "backlog": o.backlog, "quick": o.quick, "max_wait": o.maxWait.String(),
			"batching_backlog_max1": o.batchN1, "batching_backlog_max100": o.batchN100,
			"backlog_loader_conns": o.loaderConns, "only": keys(o.only),
		},
	}
	e.res.RelayNote = relayNote(o.relayMode)
	e.progress("hookbatch bench: relay %s, %s, %d cores (%s), duration %s, runs %d, conns %d, event-size %d, sync %s",
		o.relayMode, runtime.Version(), runtime.NumCPU(), e.res.Machine.CPU, o.duration, o.runs, o.conns, o.eventSize, o.sync)
	if o.relayMode == modeSubprocess || o.selected("backlog") {
		e.build()
	}
	if o.relayMode == modeSubprocess && e.binary == "" {
		e.fail("-relay subprocess needs the hookbatch binary, which did not build")
		return 2
	}
	e.smp = newSampler()
	e.plan()
	e.res.Samples, e.res.Segments = e.smp.close()
	e.res.WallSeconds = time.Since(e.start).Seconds()
	e.res.Machine.LoadEnd = loadAvg()
	e.res.summarise(o)

	fmt.Printf("hookbatch bench: relay %s; %s; %d cores; %s; load average %s -> %s\n",
		e.res.Relay, e.res.Machine.CPU, e.res.Machine.Cores, e.res.Machine.GoVersion, e.res.Machine.LoadStart, e.res.Machine.LoadEnd)
	fmt.Printf("medians of %d run(s) of %s; ratios run by run, then the median; targets are informational\n\n", o.runs, o.duration)
	e.res.printTable(os.Stdout)
	for _, n := range e.res.Notes {
		fmt.Println("note:", n)
	}
	files, err := e.res.write(o.out)
	if err != nil {
		e.fail("cannot write results: %v", err)
	}
	fmt.Printf("\nwritten: %s\n", strings.Join(files, ", "))

	var lost int64
	for _, m := range e.res.Measurements {
		lost += m.Lost
	}
	switch {
	case lost > 0:
		fmt.Printf("LOSS: %d acknowledged events were not delivered\n", lost)
		return 1
	case e.failed:
		fmt.Printf("FAILED: %s\n", strings.Join(e.res.Failures, "; "))
		return 1
	case ctx.Err() != nil:
		return 1
	}
	return 0
}

func keys(m map[string]bool) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

func relayNote(mode string) string {
	if mode == modeInproc {
		return "relay.New in the bench process: generator, sinks and relay share one Go runtime and its cores (so does the ceiling); the backlog scenario runs hookbatch serve as a child process to read its RSS"
	}
	return "hookbatch serve as a child process, built from ./cmd/hookbatch; generator and sinks in the bench process"
}

// build compiles ./cmd/hookbatch into the temp dir, for subprocess relays.
func (e *env) build() {
	root, err := moduleRoot()
	if err != nil {
		e.progress("cannot find the module root (%v): the backlog scenario will run in-process", err)
		return
	}
	bin := filepath.Join(e.tmp, "hookbatch")
	start := time.Now()
	cmd := exec.CommandContext(e.ctx, "go", "build", "-o", bin, "./cmd/hookbatch")
	cmd.Dir = root
	out, err := cmd.CombinedOutput()
	if err != nil {
		e.progress("go build ./cmd/hookbatch failed (%v): %s", err, strings.TrimSpace(string(out)))
		return
	}
	e.binary = bin
	e.progress("built hookbatch in %.1fs", time.Since(start).Seconds())
}

func moduleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", err
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", fmt.Errorf("not inside a module")
	}
	return filepath.Dir(gomod), nil
}
