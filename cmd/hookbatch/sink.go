package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/hookbatch/hookbatch/signing"
	hooksink "github.com/hookbatch/hookbatch/sink"
)

// sink runs `hookbatch sink`, a test subscriber, until SIGINT or SIGTERM.
func sink(args []string) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return runSink(ctx, args, os.Stdout, os.Stderr, nil)
}

// runSink parses the flags of `hookbatch sink`, runs the sink until ctx is
// done, prints a summary and returns the exit code: 2 for bad flags, 1 when
// the sink cannot listen. started, when set, is called once the sink
// listens.
func runSink(ctx context.Context, args []string, stdout, stderr io.Writer, started func(*hooksink.Sink)) int {
	fset := flag.NewFlagSet("sink", flag.ContinueOnError)
	listen := fset.String("listen", "127.0.0.1:9090", "`address` to listen on")
	var secrets secretList
	fset.Var(&secrets, "secret", "signing `secret` deliveries must verify with; repeatable, or comma-separated before each whsec_ one (default $HOOKBATCH_SINK_SECRET; none: signatures are not checked)")
	failRate := fset.Float64("fail-rate", 0, "`fraction` (0..1) of deliveries answered with -fail-status, not counted")
	failStatus := fset.Int("fail-status", hooksink.DefaultFailStatus, "HTTP `status` of the answers of -fail-rate")
	delay := fset.Duration("delay", 0, "answer every delivery after this `duration`")
	history := fset.Int("history", hooksink.DefaultHistory, "deliveries kept for GET /history")
	quiet := fset.Bool("quiet", false, "print no line per batch, only the summary")
	if code, done := parseFlags(fset, args, stderr, "sink [flags]",
		"A test subscriber: verifies signatures, counts batches and events, prints one line per batch.\n"+
			"Deliveries: POST to any path (configure http://ADDR/hooks). Also GET /history, GET /stats, POST /clear."); done {
		return code
	}
	if len(secrets) == 0 {
		_ = secrets.Set(os.Getenv("HOOKBATCH_SINK_SECRET"))
	}
	var problems []string
	if fset.NArg() > 0 {
		problems = append(problems, fmt.Sprintf("unexpected argument %q", fset.Arg(0)))
	}
	if !(*failRate >= 0 && *failRate <= 1) {
		problems = append(problems, "-fail-rate must be between 0 and 1")
	}
	if *failStatus < 200 || *failStatus > 599 {
		problems = append(problems, "-fail-status must be an HTTP status from 200 to 599")
	}
	if *delay < 0 {
		problems = append(problems, "-delay must not be negative")
	}
	if *history < 0 {
		problems = append(problems, "-history must not be negative")
	}
	for i, s := range secrets {
		if _, err := signing.DecodeSecret(s); err != nil {
			problems = append(problems, fmt.Sprintf("secret #%d: %v", i+1, err))
		}
	}
	if len(problems) > 0 {
		for _, p := range problems {
			fmt.Fprintln(stderr, "hookbatch sink: "+p)
		}
		return 2
	}

	opts := hooksink.Options{
		Secrets:    secrets,
		FailRate:   *failRate,
		FailStatus: *failStatus,
		Delay:      *delay,
		History:    *history,
	}
	if opts.History == 0 {
		opts.History = -1 // the flag's 0 keeps none; the option's 0 is the default
	}
	if !*quiet {
		opts.Log = stdout
	}
	s := hooksink.New(opts)
	if err := s.Start(*listen); err != nil {
		fmt.Fprintf(stderr, "hookbatch sink: %v\n", err)
		return 1
	}
	checks := "signatures not checked"
	if len(secrets) > 0 {
		checks = fmt.Sprintf("verifying signatures with %d secret(s)", len(secrets))
	}
	fmt.Fprintf(stdout, "hookbatch sink: receiving deliveries at %s (%s); GET /history, GET /stats, POST /clear on the same address\n", s.URL(), checks)
	if started != nil {
		started(s)
	}

	<-ctx.Done()
	err := s.Close()
	st := s.Stats()
	fmt.Fprintf(stdout, "hookbatch sink: %d batches, %d events, %d duplicate batches, %d rejected (signature), %d invalid, %d failed on purpose\n",
		st.Batches, st.Events, st.DuplicateBatches, st.Rejected, st.Invalid, st.Failed)
	if err != nil {
		fmt.Fprintf(stderr, "hookbatch sink: %v\n", err)
		return 1
	}
	return 0
}

// secretList is a repeatable flag whose values may each hold several
// secrets separated by commas before each whsec_ one (a raw secret, which
// may hold commas and spaces, is taken as written). It never prints them.
type secretList []string

func (l *secretList) String() string {
	if l == nil || len(*l) == 0 {
		return ""
	}
	return fmt.Sprintf("%d secret(s)", len(*l))
}

func (l *secretList) Set(v string) error {
	// A comma starts another secret only where a whsec_ one follows: a
	// raw secret is taken as written, commas and spaces included.
	start := 0
	for i := 0; i < len(v); i++ {
		if v[i] == ',' && strings.HasPrefix(strings.TrimLeft(v[i+1:], " "), "whsec_") {
			l.add(v[start:i])
			start = i + 1
		}
	}
	l.add(v[start:])
	return nil
}

func (l *secretList) add(s string) {
	if strings.HasPrefix(strings.TrimSpace(s), "whsec_") {
		s = strings.TrimSpace(s)
	}
	if s != "" {
		*l = append(*l, s)
	}
}
