package main

import (
	"os"
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
}
