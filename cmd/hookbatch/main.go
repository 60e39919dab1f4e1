// Command hookbatch is the webhook batching relay: serve runs it, check
// validates a config, sink and send help try it by hand.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/rs/zerolog"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "0.1.0-dev"

const usage = `usage: hookbatch <command> [flags]

commands:
  serve   [-config FILE]     run the relay (default FILE: $HOOKBATCH_CONFIG, else ./hookbatch.yaml if present, else built-in defaults)
  check   -config FILE       validate a config; print every problem with its YAML path; exit 1 if any
  sink    [flags]            a test subscriber that verifies signatures and counts batches
  send    [flags]            post events to a relay, for trying it by hand
  demo    [-events N] [-rate R] [-batch K]
                             relay + sink + producer in one process, shown live, then a summary
  version                    print the version
`

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	args := os.Args[2:]
	var code int
	switch os.Args[1] {
	case "serve":
		code = serve(args)
	case "check":
		code = check(args, os.Stdout)
	case "sink":
		code = sink(args)
	case "send":
		code = send(args)
	case "demo":
		code = demo(args)
	case "version", "-version", "--version":
		if len(args) > 0 {
			fmt.Fprintf(os.Stderr, "hookbatch version: unexpected argument %q\n", args[0])
			code = 2
			break
		}
		fmt.Println("hookbatch", version)
	case "help", "-h", "-help", "--help":
		fmt.Print(usage)
	default:
		fmt.Fprintf(os.Stderr, "hookbatch: unknown command %q\n\n%s", os.Args[1], usage)
		code = 2
	}
	os.Exit(code)
}

// parseFlags parses a command's flags, writing to out a usage that starts
// with synopsis and about. done says the command must not run, with the
// exit code: 0 after -h, 2 after bad flags.
func parseFlags(fset *flag.FlagSet, args []string, out io.Writer, synopsis, about string) (code int, done bool) {
	fset.SetOutput(out)
	fset.Usage = func() {
		fmt.Fprintf(out, "usage: hookbatch %s\n\n%s\n\n", synopsis, about)
		fset.PrintDefaults()
	}
	if err := fset.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0, true
		}
		return 2, true
	}
	if fset.NArg() > 0 {
		fmt.Fprintf(out, "hookbatch %s: unexpected argument %q\n", fset.Name(), fset.Arg(0))
		fset.Usage()
		return 2, true
	}
	return 0, false
}

// newLogger returns the process logger for level (debug|info|warn|error)
// and format (json|console).
func newLogger(w io.Writer, level, format string) zerolog.Logger {
	if format == "console" {
		w = zerolog.ConsoleWriter{Out: w, TimeFormat: time.RFC3339}
	}
	lvl, err := zerolog.ParseLevel(level)
	if err != nil || level == "" {
		lvl = zerolog.InfoLevel
	}
	return zerolog.New(w).Level(lvl).With().Timestamp().Logger()
}
