// Package pythons finds the Python 3 interpreters of this machine, for the
// tests that run real Python processes (mpcompat's interop with
// multiprocessing.connection, the Python package's interop with hmacauth).
package pythons

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
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
