package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/hookbatch/hookbatch/config"
)

// check validates a config file, printing every problem with its YAML path
// (and warnings), and returns 1 if there is any problem.
func check(args []string, out io.Writer) int {
	fset := flag.NewFlagSet("check", flag.ContinueOnError)
	path := fset.String("config", "", "config `file` (default $HOOKBATCH_CONFIG)")
	if code, done := parseFlags(fset, args, out, "check -config FILE",
		"Validate a config file: print every problem with its YAML path, and warnings; exit 1 if there is a problem."); done {
		return code
	}
	if *path == "" {
		*path = os.Getenv("HOOKBATCH_CONFIG")
	}
	if *path == "" {
		fmt.Fprintln(out, "hookbatch check: -config FILE (or $HOOKBATCH_CONFIG) is required")
		return 2
	}
	cfg, err := config.Load(*path)
	var cerr *config.Error
	switch {
	case errors.As(err, &cerr):
		for _, p := range cerr.Problems {
			fmt.Fprintln(out, p.String())
		}
		if !cerr.Unparsed {
			printWarnings(out, cfg) // of what could be decoded
		}
		fmt.Fprintf(out, "%s: %d problem(s)\n", *path, len(cerr.Problems))
		return 1
	case err != nil:
		fmt.Fprintln(out, err)
		return 1
	}
	printWarnings(out, cfg)
	fmt.Fprintf(out, "%s: ok (%d subscriber(s))\n", *path, len(cfg.Subscribers))
	return 0
}

func printWarnings(out io.Writer, cfg config.Config) {
	for _, w := range cfg.Warnings() {
		fmt.Fprintln(out, "warning: "+w.String())
	}
}
