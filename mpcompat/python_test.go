package mpcompat

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hmacauth/hmacauth/internal/pythons"
)

// python is an interpreter found on the machine.
type python = pythons.Interpreter

// pyPeer is a running testdata/peer.py.
type pyPeer struct {
	*pythons.Process
	t *testing.T
}

func startPython(t *testing.T, py python, script string, args ...string) *pyPeer {
	t.Helper()
	return &pyPeer{Process: pythons.Start(t, py, bound, script, args...), t: t}
}

// addr reads the address a listening peer printed.
func (p *pyPeer) addr() string {
	p.t.Helper()
	line, err := p.Out.ReadString('\n')
	addr, ok := strings.CutPrefix(strings.TrimSpace(line), "ADDR ")
	if err != nil || !ok {
		p.t.Fatalf("python listener printed %q (%v); stderr: %s", line, err, p.wait())
	}
	return addr
}

// wait waits for the peer to exit and returns its result line, or its
// stderr if it printed none.
func (p *pyPeer) wait() string {
	out, err := p.Wait()
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if result := lines[len(lines)-1]; result != "" {
		return result
	}
	return fmt.Sprintf("no result (%v); stderr: %s", err, p.Stderr())
}

// pySession drives peer.py's message loop from the Go side.
func pySession(t *testing.T, c net.Conn, py python) {
	t.Helper()
	c.SetDeadline(time.Now().Add(bound))
	defer c.SetDeadline(time.Time{})
	sizes := []int{0, 1, 1000, 16385, 2<<20 + 3}
	for i, n := range sizes {
		m := pattern(n, byte(i))
		if err := WriteMessage(c, m); err != nil {
			t.Fatal(err)
		}
		got, err := ReadMessage(c, sha256.Size+n)
		sum := sha256.Sum256(m)
		if err != nil || !bytes.Equal(got, append(sum[:], m...)) {
			t.Fatalf("message %d (%d bytes): Python echoed %d bytes, %v", i, n, len(got), err)
		}
	}
	if py.AtLeast(3, 8) {
		// The 64-bit length form, which Python 3.8 and later read for
		// messages of any size.
		m := []byte("in the 64-bit form")
		c.Write(append(header64(uint64(len(m))), m...))
		got, err := ReadMessage(c, 100)
		sum := sha256.Sum256(m)
		if err != nil || !bytes.Equal(got, append(sum[:], m...)) {
			t.Fatalf("64-bit form: Python echoed %q, %v", got, err)
		}
	}
	if err := WriteMessage(c, []byte("bye")); err != nil {
		t.Fatal(err)
	}
	const big = 3<<20 + 5
	got, err := ReadMessage(c, big)
	if err != nil || len(got) != big {
		t.Fatalf("Python's large message: %d bytes, %v", len(got), err)
	}
	for i, b := range got {
		if b != byte(i) {
			t.Fatalf("Python's large message differs at byte %d", i)
		}
	}
}

// pyCase is one interop scenario.
type pyCase struct {
	name      string
	goListens bool   // Go Listener <- Python Client, else Python Listener <- Go Dial
	cfg       Config // the Go side's
	pyKey     []byte
	variant   string // of peer.py
	wantErr   error  // the Go side's error, nil for success
	wantPy    string // prefix of Python's result line
	digest    Digest // the digest a Go listener sees, on success
	unix      bool   // over a Unix socket instead of TCP
}

func pyCases(py python) []pyCase {
	modern := py.AtLeast(3, 12)
	legacy := Config{AuthKey: keyA, AllowLegacyMD5: true}
	strict := Config{AuthKey: keyA}
	if modern {
		return []pyCase{
			{name: "go listener unix", goListens: true, unix: true, cfg: strict, pyKey: keyA, variant: "plain", wantPy: "OK", digest: DigestSHA256},
			{name: "py listener unix", unix: true, cfg: strict, pyKey: keyA, variant: "plain", wantPy: "OK"},
			{name: "go listener", goListens: true, cfg: strict, pyKey: keyA, variant: "plain", wantPy: "OK", digest: DigestSHA256},
			{name: "go listener md5 allowed", goListens: true, cfg: legacy, pyKey: keyA, variant: "plain", wantPy: "OK", digest: DigestSHA256},
			{name: "go listener wrong key", goListens: true, cfg: strict, pyKey: keyB, variant: "plain", wantErr: ErrAuthFailed, wantPy: "AUTHERR"},
			{name: "go listener downgrade raw md5", goListens: true, cfg: strict, pyKey: keyA, variant: "answer-md5", wantErr: ErrWeakDigest, wantPy: "AUTHERR"},
			{name: "go listener downgrade {md5}", goListens: true, cfg: strict, pyKey: keyA, variant: "answer-md5-prefixed", wantErr: ErrWeakDigest, wantPy: "AUTHERR"},
			{name: "py listener", cfg: strict, pyKey: keyA, variant: "plain", wantPy: "OK"},
			{name: "py listener md5 allowed", cfg: legacy, pyKey: keyA, variant: "plain", wantPy: "OK"},
			{name: "py listener wrong key", cfg: strict, pyKey: keyB, variant: "plain", wantErr: ErrAuthFailed, wantPy: "AUTHERR"},
			{name: "py listener downgrade {md5} challenge", cfg: strict, pyKey: keyA, variant: "challenge-md5", wantErr: ErrWeakDigest, wantPy: "CONNERR"},
			{name: "py listener stronger go digest", cfg: Config{AuthKey: keyA, Digest: DigestSHA384}, pyKey: keyA, variant: "plain", wantErr: ErrWeakDigest, wantPy: "CONNERR"},
		}
	}
	return []pyCase{
		{name: "go listener unix md5 allowed", goListens: true, unix: true, cfg: legacy, pyKey: keyA, variant: "plain", wantPy: "OK", digest: DigestMD5},
		{name: "py listener unix md5 allowed", unix: true, cfg: legacy, pyKey: keyA, variant: "plain", wantPy: "OK"},
		{name: "go listener md5 allowed", goListens: true, cfg: legacy, pyKey: keyA, variant: "plain", wantPy: "OK", digest: DigestMD5},
		{name: "go listener md5 refused", goListens: true, cfg: strict, pyKey: keyA, variant: "plain", wantErr: ErrWeakDigest, wantPy: "AUTHERR"},
		{name: "go listener wrong key", goListens: true, cfg: legacy, pyKey: keyB, variant: "plain", wantErr: ErrAuthFailed, wantPy: "AUTHERR"},
		{name: "py listener md5 allowed", cfg: legacy, pyKey: keyA, variant: "plain", wantPy: "OK"},
		{name: "py listener md5 refused", cfg: strict, pyKey: keyA, variant: "plain", wantErr: ErrWeakDigest, wantPy: "CONNERR"},
		{name: "py listener wrong key", cfg: legacy, pyKey: keyB, variant: "plain", wantErr: ErrAuthFailed, wantPy: "AUTHERR"},
	}
}

// TestPython runs every Python 3 interpreter found on the machine against
// this package, in both directions.
func TestPython(t *testing.T) {
	pys := pythons.Find()
	if len(pys) == 0 {
		t.Skip("no python3 interpreter found in PATH or in the pyenv versions folder; the interop tests need one")
	}
	script, err := filepath.Abs(filepath.Join("testdata", "peer.py"))
	if err != nil {
		t.Fatal(err)
	}
	// The cases mostly wait on Python processes, so they run more at once
	// than t.Parallel would allow on a small machine (-parallel defaults
	// to GOMAXPROCS); t.Run may be called from several goroutines.
	slots := make(chan struct{}, 8)
	var wg sync.WaitGroup
	names := map[string]int{}
	for _, py := range pys {
		name := py.Version
		if names[name]++; names[name] > 1 {
			name += "#" + strconv.Itoa(names[name])
		}
		wg.Go(func() {
			t.Run(name, func(t *testing.T) {
				t.Logf("%s (%s)", py.Path, py.Version)
				var cases sync.WaitGroup
				for _, c := range pyCases(py) {
					cases.Go(func() {
						slots <- struct{}{}
						defer func() { <-slots }()
						t.Run(c.name, func(t *testing.T) { runPyCase(t, py, script, c) })
					})
				}
				cases.Wait()
			})
		})
	}
	wg.Wait()
}

func runPyCase(t *testing.T, py python, script string, c pyCase) {
	key := hex.EncodeToString(c.pyKey)
	var p *pyPeer
	var goErr error
	var conn net.Conn
	network, address, sock := "tcp", "127.0.0.1:0", ""
	if c.unix {
		// Not t.TempDir: a socket path must stay under about 100 bytes.
		dir, err := os.MkdirTemp("", "mpcompat")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(dir) })
		network, address, sock = "unix", filepath.Join(dir, "s"), filepath.Join(dir, "s")
	}
	if c.goListens {
		l, ev := listenOn(t, network, address, c.cfg)
		accepted := acceptOne(t, l)
		p = startPython(t, py, script, "client", c.variant, key, l.Addr().String())
		e := ev.next(t)
		goErr = e.Err
		if goErr == nil {
			if e.Digest != c.digest {
				t.Errorf("the listener saw digest %q, want %q", e.Digest, c.digest)
			}
			conn = <-accepted
		}
	} else {
		args := []string{"listen", c.variant, key}
		if sock != "" {
			args = append(args, sock)
		}
		p = startPython(t, py, script, args...)
		var addr net.Addr = &net.UnixAddr{Net: "unix", Name: p.addr()}
		if !c.unix {
			addr = tcpAddr(t, addr.String())
		}
		conn, goErr = dial(addr, c.cfg)
	}
	switch {
	case c.wantErr == nil && goErr != nil:
		t.Fatalf("Go side: %v; Python: %s", goErr, p.wait())
	case c.wantErr != nil && !errors.Is(goErr, c.wantErr):
		t.Fatalf("Go side: %v, want %v; Python: %s", goErr, c.wantErr, p.wait())
	case goErr != nil:
		t.Logf("Go side: %v", goErr)
	default:
		pySession(t, conn, py)
		conn.Close()
	}
	res := p.wait()
	if !strings.HasPrefix(res, c.wantPy) {
		t.Fatalf("Python: %s; want %s", res, c.wantPy)
	}
	t.Logf("Python: %s", res)
}

func tcpAddr(t *testing.T, s string) net.Addr {
	a, err := net.ResolveTCPAddr("tcp", s)
	if err != nil {
		t.Fatal(err)
	}
	return a
}
