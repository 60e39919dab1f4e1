package main

import (
	"strings"
	"testing"
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
