package main

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestCheck(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yaml")
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(good, []byte("listen: 127.0.0.1:9000\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bad, []byte("listen: nowhere\nfoo: 1\nsubscribers: [{id: BAD, url: x}]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	f := func(args []string, env string, wantCode int, wantOut ...string) {
		t.Helper()
		t.Setenv("HOOKBATCH_CONFIG", env)
		var out strings.Builder
		if code := check(args, &out); code != wantCode {
			t.Fatalf("check %v (HOOKBATCH_CONFIG=%q) = %d, want %d:\n%s", args, env, code, wantCode, out.String())
		}
		for _, w := range wantOut {
			if !strings.Contains(out.String(), w) {
				t.Fatalf("check %v output lacks %q:\n%s", args, w, out.String())
			}
		}
	}
	f([]string{"-config", good}, "", 0, "ok")
	f(nil, good, 0, "ok")
	f(nil, "", 2, "required")
	f([]string{"-config", bad}, "", 1, "listen:", "foo: unknown key", "subscribers[0].id", "subscribers[0].url")
	f([]string{"-config", filepath.Join(dir, "missing.yaml")}, "", 1, "missing.yaml")
	// Warnings come with the problems, not only once they are fixed.
	warned := filepath.Join(dir, "warned.yaml")
	if err := os.WriteFile(warned, []byte("storage: {max_disk_bytes: 1MiB}\nfoo: 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	f([]string{"-config", warned}, "", 1, "foo: unknown key", "warning: storage.max_disk_bytes", "1 problem(s)")
	// A file that is not YAML at all: its problem, and no warnings about
	// the defaults that stand in for it.
	broken := filepath.Join(dir, "broken.yaml")
	if err := os.WriteFile(broken, []byte("listen: [\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	f([]string{"-config", broken}, "", 1, "(root)", "1 problem(s)")
	var out strings.Builder
	if check([]string{"-config", broken}, &out); strings.Contains(out.String(), "warning") {
		t.Fatalf("warnings for a file that could not be read as YAML:\n%s", out.String())
	}
	f([]string{"-config", good, "extra"}, "", 2, `unexpected argument "extra"`, "usage: hookbatch check")
	f([]string{"-h"}, "", 0, "usage: hookbatch check -config FILE", "-config")
	f([]string{"-nosuch"}, "", 2, "usage: hookbatch check")
}

// TestCommandsHelp: every command answers -h with its usage and exit 0,
// refuses an argument it does not take with exit 2, and serve names a bad
// config file once, with its problems, and exits 1.
func TestCommandsHelp(t *testing.T) {
	run := func(args string) (string, int) {
		t.Helper()
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), "HOOKBATCH_TEST_ARGS="+args)
		out, err := cmd.CombinedOutput()
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			return string(out), exit.ExitCode()
		} else if err != nil {
			t.Fatalf("%s: %v", args, err)
		}
		return string(out), 0
	}
	for _, c := range []string{"serve", "check", "sink", "send", "demo"} {
		if out, code := run(c + " -h"); code != 0 || !strings.HasPrefix(out, "usage: hookbatch "+c) {
			t.Errorf("%s -h: exit %d, output:\n%s", c, code, out)
		}
		if out, code := run(c + " stray"); code != 2 || !strings.Contains(out, `unexpected argument "stray"`) {
			t.Errorf("%s stray: exit %d, output:\n%s", c, code, out)
		}
	}
	if out, code := run("version stray"); code != 2 || !strings.Contains(out, `unexpected argument "stray"`) {
		t.Errorf("version stray: exit %d, output:\n%s", code, out)
	}
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	if err := os.WriteFile(bad, []byte("listen: nowhere\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, code := run("serve -config " + bad)
	if code != 1 || strings.Count(out, "invalid config") != 1 || !strings.Contains(out, bad) || !strings.Contains(out, "listen:") {
		t.Errorf("serve with a bad config: exit %d, output:\n%s", code, out)
	}
}
