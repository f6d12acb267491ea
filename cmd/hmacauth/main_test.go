package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// raceEnabled is set when the tests run with -race; the binary under test
// is then built with -race too.
var raceEnabled bool

// binPath is the hmacauth binary built once for all tests.
var binPath string

func TestMain(m *testing.M) {
	if spec := os.Getenv(forwardEnv); spec != "" {
		runForwarder(spec) // for the benchmarks; never returns
	}
	if slices.ContainsFunc(os.Args[1:], func(a string) bool { return strings.HasPrefix(a, "-test.fuzzworker") }) {
		// A fuzzing worker runs only a fuzz function, no binary.
		goleak.VerifyTestMain(m)
	}
	dir, err := os.MkdirTemp("", "hmacauth-cmd-test")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binPath = filepath.Join(dir, "hmacauth")
	// testingonly builds in the test hooks (the sandbox probe).
	args := []string{"build", "-tags", "testingonly", "-o", binPath}
	if raceEnabled {
		args = append(args, "-race")
	}
	build := exec.Command("go", append(args, ".")...)
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building the hmacauth binary:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	goleak.VerifyTestMain(m, goleak.Cleanup(func(code int) {
		os.RemoveAll(dir)
		os.Exit(code)
	}))
}

// result is how a finished run of the binary ended.
type result struct {
	code           int
	stdout, stderr string
}

// runBin runs the binary with args to completion, bounded by a minute.
func runBin(t *testing.T, args ...string) result {
	t.Helper()
	cmd := command(args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.WaitDelay = time.Second
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var err error
	select {
	case err = <-done:
	case <-time.After(time.Minute):
		cmd.Process.Kill()
		<-done
		t.Fatalf("hmacauth %s did not finish within a minute; stderr:\n%s", strings.Join(args, " "), stderr.String())
	}
	r := result{stdout: stdout.String(), stderr: stderr.String()}
	checkNoRace(t, r.stderr)
	if err != nil {
		ee, ok := err.(*exec.ExitError)
		if !ok {
			t.Fatalf("hmacauth %s: %v", strings.Join(args, " "), err)
		}
		r.code = ee.ExitCode()
	}
	return r
}

// command returns an exec.Cmd running the binary under test. A binary built
// with -race exits at once (not after the race detector's default second)
// and with status 66 on the first race.
func command(args ...string) *exec.Cmd {
	cmd := exec.Command(binPath, args...)
	cmd.Env = append(os.Environ(), "GORACE=atexit_sleep_ms=0 halt_on_error=1")
	return cmd
}

// checkNoRace fails the test if a child's stderr has a race report.
func checkNoRace(t testing.TB, stderr string) {
	t.Helper()
	if strings.Contains(stderr, "WARNING: DATA RACE") {
		t.Errorf("the race detector found a race in the binary:\n%s", stderr)
	}
}
