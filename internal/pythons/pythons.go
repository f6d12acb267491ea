// Package pythons finds the Python 3 interpreters of this machine, for the
// tests that run real Python processes (mpcompat's interop with
// multiprocessing.connection, the Python package's interop with hmacauth).
package pythons

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Interpreter is one Python 3 found on the machine.
type Interpreter struct {
	Path         string
	Version      string // e.g. "3.12.1"
	Major, Minor int
	// Crypto reports whether it can import the 'cryptography' package.
	Crypto bool
}

// AtLeast reports whether the interpreter's version is major.minor or later.
func (p Interpreter) AtLeast(major, minor int) bool {
	return p.Major > major || p.Major == major && p.Minor >= minor
}

var name = regexp.MustCompile(`^python3(\.[0-9]+)?$`)

// probe prints what Find needs to know of an interpreter.
const probe = `import os, sys
print("%d.%d.%d" % sys.version_info[:3], os.path.realpath(sys.executable))
try:
    import cryptography
    print("crypto")
except ImportError:
    print("nocrypto")`

// Find returns every distinct Python 3 interpreter in PATH and in the
// pyenv versions folder, oldest first: shims and links that lead to the
// same interpreter count once. It asks the machine once per process.
var Find = sync.OnceValue(func() []Interpreter {
	var candidates []string
	roots := []string{os.Getenv("PYENV_ROOT")}
	if home, err := os.UserHomeDir(); err == nil {
		roots = append(roots, filepath.Join(home, ".pyenv"))
	}
	for _, root := range roots {
		if root != "" {
			m, _ := filepath.Glob(filepath.Join(root, "versions", "*", "bin", "python3*"))
			candidates = append(candidates, m...)
		}
	}
	for _, dir := range filepath.SplitList(os.Getenv("PATH")) {
		if dir != "" {
			m, _ := filepath.Glob(filepath.Join(dir, "python3*"))
			candidates = append(candidates, m...)
		}
	}
	candidates = slices.DeleteFunc(candidates, func(p string) bool { return !name.MatchString(filepath.Base(p)) })
	slices.Sort(candidates)
	candidates = slices.Compact(candidates)

	found := make([]*Interpreter, len(candidates))
	real := make([]string, len(candidates))
	var wg sync.WaitGroup
	for i, path := range candidates {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			out, err := exec.CommandContext(ctx, path, "-I", "-c", probe).Output()
			f := strings.Fields(string(out))
			if err != nil || len(f) != 3 {
				return
			}
			v := strings.Split(f[0], ".")
			major, _ := strconv.Atoi(v[0])
			minor, _ := strconv.Atoi(v[1])
			if major != 3 {
				return
			}
			found[i] = &Interpreter{Path: path, Version: f[0], Major: major, Minor: minor, Crypto: f[2] == "crypto"}
			real[i] = f[1]
		})
	}
	wg.Wait()
	var ps []Interpreter
	seen := map[string]bool{}
	for i, p := range found {
		if p != nil && !seen[real[i]] {
			seen[real[i]] = true
			ps = append(ps, *p)
		}
	}
	slices.SortFunc(ps, func(a, b Interpreter) int {
		if c := a.Major*1000 + a.Minor - b.Major*1000 - b.Minor; c != 0 {
			return c
		}
		return strings.Compare(a.Version+a.Path, b.Version+b.Path)
	})
	return ps
})

// Process is a Python script run by a test, whose standard output the test
// reads line by line.
type Process struct {
	Out *bufio.Reader // standard output

	cmd    *exec.Cmd
	stderr lockedBuffer
	once   sync.Once
	rest   string
	err    error
}

// Start runs script with args under py in isolated mode (-I). The process
// is killed when timeout has passed or when the test ends.
func Start(t testing.TB, py Interpreter, timeout time.Duration, script string, args ...string) *Process {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	p := &Process{cmd: exec.CommandContext(ctx, py.Path, append([]string{"-I", script}, args...)...)}
	p.cmd.WaitDelay = 2 * time.Second
	p.cmd.Stderr = &p.stderr
	stdout, err := p.cmd.StdoutPipe()
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	p.Out = bufio.NewReader(stdout)
	if err := p.cmd.Start(); err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel() // kills the process if it still runs
		p.Wait()
	})
	return p
}

// Stderr returns what the process has written to its standard error so far.
func (p *Process) Stderr() string { return p.stderr.String() }

// Wait reads the rest of the process's standard output, waits for it to
// exit, and returns that output and the exit error. Later calls return the
// same.
func (p *Process) Wait() (rest string, err error) {
	p.once.Do(func() {
		b, _ := io.ReadAll(p.Out)
		p.rest, p.err = string(b), p.cmd.Wait()
	})
	return p.rest, p.err
}

// lockedBuffer is a bytes.Buffer that the process's stderr copier writes
// while a test reads it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}
