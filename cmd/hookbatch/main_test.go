package main

import (
	"os"
	"strings"
	"testing"
)

// TestMain lets tests run the real hookbatch command in a subprocess: the
// test binary re-executes itself with HOOKBATCH_TEST_ARGS set and then
// behaves exactly like the hookbatch binary.
func TestMain(m *testing.M) {
	if args := os.Getenv("HOOKBATCH_TEST_ARGS"); args != "" {
		os.Args = append([]string{"hookbatch"}, strings.Fields(args)...)
		main()
		return
	}
	os.Exit(m.Run())
}
