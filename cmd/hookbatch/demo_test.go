package main

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestDemoRunsToCompletion runs the demo end to end, small.
func TestDemoRunsToCompletion(t *testing.T) {
	var out strings.Builder
	if code := runDemo(&out, 2000, 4000, 20); code != 0 {
		t.Fatalf("demo exited %d:\n%s", code, out.String())
	}
	s := out.String()
	for _, want := range []string{"summary: 2000 events accepted, 2000 delivered", "0 duplicate batches, 0 failed requests", "latency p50"} {
		if !strings.Contains(s, want) {
			t.Fatalf("demo output lacks %q:\n%s", want, s)
		}
	}
}

// TestDemoInterrupted: SIGTERM ends a long demo early, exit 1, and its
// data directory is removed.
func TestDemoInterrupted(t *testing.T) {
	tmp := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "HOOKBATCH_TEST_ARGS=demo -events 1000000 -rate 1000", "TMPDIR="+tmp)
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for dirs, _ := filepath.Glob(filepath.Join(tmp, "hookbatch-demo-*")); len(dirs) == 0; dirs, _ = filepath.Glob(filepath.Join(tmp, "hookbatch-demo-*")) {
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			t.Fatalf("no data directory within 30s:\n%s", out.String())
		}
		time.Sleep(10 * time.Millisecond) // polling for the directory, with a deadline
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	err := cmd.Wait()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 1 || !strings.Contains(out.String(), "interrupted") {
		t.Fatalf("interrupted demo: %v\n%s", err, out.String())
	}
	if dirs, _ := filepath.Glob(filepath.Join(tmp, "hookbatch-demo-*")); len(dirs) != 0 {
		t.Fatalf("the demo left %v behind", dirs)
	}
}
