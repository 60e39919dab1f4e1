package storage

import (
	"bufio"
	"io"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// killChild runs the tests matching run in a child copy of this test binary,
// with env added to its environment, hands each line it prints to line until
// line returns false, then kills it with SIGKILL and checks it died of it.
// A child silent for 30 s is killed too.
func killChild(t *testing.T, run string, env []string, line func(string) bool) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run="+run, "-test.count=1", "-test.v=false")
	cmd.Env = append(os.Environ(), env...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	killed := false
	defer func() {
		if !killed {
			_ = syscall.Kill(cmd.Process.Pid, syscall.SIGKILL)
			_ = cmd.Wait()
		}
	}()
	timer := time.AfterFunc(30*time.Second, func() { _ = syscall.Kill(cmd.Process.Pid, syscall.SIGKILL) })
	defer timer.Stop()
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		if !line(sc.Text()) {
			break
		}
	}
	if err := syscall.Kill(cmd.Process.Pid, syscall.SIGKILL); err != nil {
		t.Fatalf("cannot kill the child: %v", err)
	}
	_, _ = io.Copy(io.Discard, out)
	err = cmd.Wait()
	killed = true
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("child did not die of SIGKILL (%v); stderr:\n%s", err, stderr.String())
	}
	if sc.Err() != nil {
		t.Fatalf("reading the child's output: %v", sc.Err())
	}
}
