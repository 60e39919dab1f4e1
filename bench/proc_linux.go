package main

import (
	"os/exec"
	"syscall"
)

// dieWithParent makes a child relay get SIGKILL if the bench dies first, so
// that an interrupted run leaves no relay behind.
func dieWithParent(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
