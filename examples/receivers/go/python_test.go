package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"testing"
	"time"
)

// TestPythonReceiver runs the Python receiver's unittest suite, including
// its replay of deliveries signed here by hookbatch's signing package.
func TestPythonReceiver(t *testing.T) {
	py, err := exec.LookPath("python3")
	if err != nil {
		t.Skip("python3 not installed: Python receiver not tested")
	}
	fixture := writeSignedFixture(t)
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, py, "-m", "unittest", "-v")
	cmd.Dir = filepath.Join("..", "python")
	cmd.Env = append(os.Environ(),
		"HOOKBATCH_SIGNED_FIXTURE="+fixture,
		"PYTHONDONTWRITEBYTECODE=1", // leave no __pycache__ in the source tree
	)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("python3 -m unittest: %v\n%s", err, out)
	}
	t.Logf("python3 -m unittest:\n%s", out)
	if !regexp.MustCompile(`(?m)^test_fixture \(.*\) \.\.\. ok$`).Match(out) {
		t.Fatalf("the replay of hookbatch-signed deliveries did not run and pass:\n%s", out)
	}
}
