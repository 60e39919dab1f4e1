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

// NodeTestsEnv must be 1 for TestNodeReceiver to run: it needs `npm ci`,
// which downloads the locked packages from the npm registry.
const NodeTestsEnv = "HOOKBATCH_NODE_TESTS"

// TestNodeReceiver installs the Node receiver's locked dependencies into a
// copy of it and runs its node:test suite, including its replay of
// deliveries signed here by hookbatch's signing package.
func TestNodeReceiver(t *testing.T) {
	node, errNode := exec.LookPath("node")
	npm, errNpm := exec.LookPath("npm")
	switch {
	case errNode != nil || errNpm != nil:
		t.Skip("node and npm not both installed: Node receiver not tested")
	case os.Getenv(NodeTestsEnv) != "1":
		t.Skip(NodeTestsEnv + "=1 not set: the Node receiver test needs `npm ci` from the npm registry, so it runs only when asked")
	}

	// Work on a copy, so that the test neither needs nor touches a
	// node_modules in the source tree.
	dir := t.TempDir()
	for _, name := range []string{"package.json", "package-lock.json", "receiver.js", "receiver.test.js"} {
		data, err := os.ReadFile(filepath.Join("..", "node", name))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	run := func(env []string, name string, args ...string) []byte {
		t.Helper()
		cmd := exec.CommandContext(ctx, name, args...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), env...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%s %v: %v\n%s", filepath.Base(name), args, err, out)
		}
		return out
	}
	run(nil, npm, "ci", "--no-audit", "--no-fund")
	out := run([]string{"HOOKBATCH_SIGNED_FIXTURE=" + writeSignedFixture(t)}, node, "--test", "--test-reporter=tap")
	t.Logf("node --test:\n%s", out)
	if !regexp.MustCompile(`(?m)^ok \d+ - deliveries signed by hookbatch's Go signing package$`).Match(out) {
		t.Fatalf("the replay of hookbatch-signed deliveries did not run and pass:\n%s", out)
	}
}
