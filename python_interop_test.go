package hmacauth

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hmacauth/hmacauth/internal/pythons"
)

// The Python package in python/ against this one, in real processes and
// both directions. python/tests/interop_peer.py is the Python end.

// findInteropPythons returns the interpreters that can run the Python
// package: Python 3.9 and later.
func findInteropPythons() []pythons.Interpreter {
	return slices.DeleteFunc(slices.Clone(pythons.Find()), func(p pythons.Interpreter) bool { return !p.AtLeast(3, 9) })
}

// interopPeer is a running interop_peer.py.
type interopPeer struct {
	*pythons.Process
	t      *testing.T
	events []string // the EVENT lines, "<class> <key ID>"
}

func startInteropPeer(t *testing.T, py pythons.Interpreter, args ...string) *interopPeer {
	t.Helper()
	script, err := filepath.Abs(filepath.Join("python", "tests", "interop_peer.py"))
	if err != nil {
		t.Fatal(err)
	}
	return &interopPeer{Process: pythons.Start(t, py, 2*time.Minute, script, args...), t: t}
}

// line returns the next line the peer printed, collecting EVENT lines.
func (p *interopPeer) line() string {
	p.t.Helper()
	for {
		l, err := p.Out.ReadString('\n')
		if err != nil {
			p.t.Fatalf("the Python peer ended without a result (%v); stderr:\n%s", err, p.Stderr())
		}
		l = strings.TrimSpace(l)
		if ev, ok := strings.CutPrefix(l, "EVENT "); ok {
			p.events = append(p.events, ev)
			continue
		}
		return l
	}
}

func (p *interopPeer) addr() string {
	p.t.Helper()
	l := p.line()
	a, ok := strings.CutPrefix(l, "ADDR ")
	if !ok {
		p.t.Fatalf("the Python listener printed %q; stderr:\n%s", l, p.Stderr())
	}
	return a
}

// result returns the fields of the peer's OK line, or its ERR line.
func (p *interopPeer) result() (map[string]string, string) {
	p.t.Helper()
	l := p.line()
	if rest, ok := strings.CutPrefix(l, "OK "); ok {
		m := map[string]string{}
		for _, f := range strings.Fields(rest) {
			k, v, _ := strings.Cut(f, "=")
			m[k] = v
		}
		return m, ""
	}
	if !strings.HasPrefix(l, "ERR ") {
		p.t.Fatalf("the Python peer printed %q; stderr:\n%s", l, p.Stderr())
	}
	return nil, l
}

// interopCase is one scenario.
type interopCase struct {
	name      string
	goListens bool
	goMode    Mode
	goFS      bool
	pyMode    Mode
	pyFS      bool
	pyKey     Key // the Python side's key; the Go side has interopKey
	size      int
	pyUpdate  int    // test-only key update threshold of the Python sender
	goUpdate  uint64 // the same for the Go sender
	wantErr   error  // the Go side's error
	wantPyErr string // the class the Python side reports
	probes    bool   // the Go side probes a Python listener first
}

var interopKey = Key{ID: "interop", Secret: seededBytes("interop", 32)}

func interopCases(full, crypto bool) []interopCase {
	other := Key{ID: "interop", Secret: seededBytes("other", 32)}
	unknown := Key{ID: "unknown-id", Secret: seededBytes("interop", 32)}
	cs := []interopCase{
		{name: "auth", pyMode: ModeAuth, size: 1 << 20},
		{name: "wrong secret", wantErr: ErrAuthFailed, wantPyErr: "AuthFailed", pyKey: other},
		{name: "unknown key ID", wantErr: ErrAuthFailed, wantPyErr: "AuthFailed", pyKey: unknown},
	}
	if crypto && !full {
		cs = append(cs, interopCase{name: "sealed fs=true", goMode: ModeSealed, goFS: true, pyMode: ModeSealed, pyFS: true, size: 1 << 20})
	}
	if full {
		cs = cs[1:]
		for _, m := range []Mode{ModeAuth, ModeIntegrity, ModeSealed} {
			for _, fs := range []bool{false, true} {
				cs = append(cs, interopCase{name: fmt.Sprintf("%v fs=%v 16MiB", m, fs), goMode: m, goFS: fs, pyMode: m, pyFS: fs, size: 16 << 20})
			}
		}
		cs = append(cs,
			interopCase{name: "stronger go mode wins", goMode: ModeSealed, pyMode: ModeAuth, size: 1000},
			interopCase{name: "stronger python mode wins", goMode: ModeAuth, pyMode: ModeIntegrity, pyFS: true, size: 1000},
			interopCase{name: "key updates integrity", goMode: ModeIntegrity, pyMode: ModeIntegrity, size: 1 << 20, pyUpdate: 10000, goUpdate: 10000},
			interopCase{name: "key updates sealed", goMode: ModeSealed, pyMode: ModeSealed, size: 1 << 20, pyUpdate: 10000, goUpdate: 10000},
			interopCase{name: "python listener probed", goMode: ModeSealed, pyMode: ModeSealed, size: 1000, probes: true},
		)
	}
	var all []interopCase
	for _, c := range cs {
		if c.pyKey.ID == "" {
			c.pyKey = interopKey
		}
		if c.probes {
			all = append(all, c)
			continue
		}
		for _, goListens := range []bool{true, false} {
			c := c
			c.goListens = goListens
			if goListens {
				c.name = "go listens, " + c.name
			} else {
				c.name = "python listens, " + c.name
			}
			all = append(all, c)
		}
	}
	return all
}

// TestPythonInterop runs the Python package against this one: on the first
// interpreter with the 'cryptography' package every case, on the other ones
// with it a ModeSealed one too, on those without it (which run ModeAuth
// without forward secrecy only) the ModeAuth ones.
func TestPythonInterop(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("starts Python processes")
	}
	pys := findInteropPythons()
	if len(pys) == 0 {
		t.Skip("no Python 3.9 or later found in PATH or in the pyenv versions folder; the Python interop tests did not run")
	}
	fullDone := false
	slots := make(chan struct{}, 4)
	var wg sync.WaitGroup
	for _, py := range pys {
		full := py.Crypto && !fullDone
		fullDone = fullDone || full
		t.Run(py.Version, func(t *testing.T) {
			t.Logf("%s (cryptography: %v, full matrix: %v)", py.Path, py.Crypto, full)
			for _, c := range interopCases(full, py.Crypto) {
				wg.Add(1)
				slots <- struct{}{}
				go func() {
					defer wg.Done()
					defer func() { <-slots }()
					t.Run(c.name, func(t *testing.T) { runInteropCase(t, py, c) })
				}()
			}
			wg.Wait()
		})
	}
	if !fullDone {
		t.Log("no Python interpreter with the 'cryptography' package: only ModeAuth interop ran")
	}
}

func runInteropCase(t *testing.T, py pythons.Interpreter, c interopCase) {
	args := []string{
		"--key-id", c.pyKey.ID, "--secret", hex.EncodeToString(c.pyKey.Secret),
		"--mode", strconv.Itoa(int(c.pyMode)), "--fs", strconv.Itoa(btoi(c.pyFS)),
		"--size", strconv.Itoa(c.size), "--update-bytes", strconv.Itoa(c.pyUpdate),
	}
	// A Config for each end: the Go side here is only a listener or only a dialer.
	cfg := &Config{Keys: []Key{interopKey}, Mode: c.goMode, ForwardSecrecy: c.goFS}
	var conn *Conn
	var goErr error
	var peer *interopPeer
	if c.goListens {
		events := make(chan HandshakeEvent, 16)
		cfg.OnHandshake = func(ev HandshakeEvent) { events <- ev }
		ln, err := Listen("tcp", "127.0.0.1:0", cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		peer = startInteropPeer(t, py, append([]string{"dial", "--addr", ln.Addr().String()}, args...)...)
		select {
		case ev := <-events:
			goErr = ev.Err
		case <-time.After(waitLimit):
			t.Fatal("no handshake on the Go listener")
		}
		if goErr == nil {
			nc, err := ln.Accept()
			if err != nil {
				t.Fatal(err)
			}
			conn = nc.(*Conn)
		}
	} else {
		if c.wantErr != nil {
			args = append(args, "--expect-refusal")
		}
		peer = startInteropPeer(t, py, append([]string{"listen"}, args...)...)
		addr := peer.addr()
		if c.probes {
			probeInteropListener(t, addr)
		}
		d := &Dialer{NetDialer: &net.Dialer{Timeout: waitLimit}, Config: cfg}
		nc, err := d.Dial("tcp", addr)
		goErr = err
		if err == nil {
			conn = nc.(*Conn)
		}
	}
	if c.wantErr != nil {
		if !errors.Is(goErr, c.wantErr) {
			t.Fatalf("Go side: got %v, want %v", goErr, c.wantErr)
		}
		_, perr := peer.result()
		if !strings.HasPrefix(perr, "ERR "+c.wantPyErr+" ") {
			t.Fatalf("Python side: got %q, want ERR %s", perr, c.wantPyErr)
		}
		return
	}
	if goErr != nil {
		res, perr := peer.result()
		t.Fatalf("Go side: %v (Python: %v %s)", goErr, res, perr)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(waitLimit))
	if c.goUpdate > 0 {
		conn.rl.testingOnlyKeyUpdateBytes = c.goUpdate
	}
	sent, got := interopExchange(t, conn, !c.goListens, c.size)
	res, perr := peer.result()
	if perr != "" {
		t.Fatalf("Python side: %s", perr)
	}
	if res["got"] != sent || res["sent"] != got {
		t.Fatalf("checksums: Go sent %s and got %s; Python got %s and sent %s", sent, got, res["got"], res["sent"])
	}
	st := conn.ConnectionState()
	wantMode := max(c.goMode, c.pyMode)
	if st.Mode != wantMode || res["mode"] != strconv.Itoa(int(wantMode)) {
		t.Fatalf("mode: Go %v, Python %s, want %v", st.Mode, res["mode"], wantMode)
	}
	if wantFS := c.goFS || c.pyFS; st.ForwardSecrecy != wantFS || res["fs"] != strconv.Itoa(btoi(wantFS)) {
		t.Fatalf("forward secrecy: Go %v, Python %s, want %v", st.ForwardSecrecy, res["fs"], wantFS)
	}
	exp, err := st.ExportKeyingMaterial("EXPORTER-interop", []byte("context"), 32)
	if err != nil || hex.EncodeToString(exp) != res["export"] {
		t.Fatalf("exporter: Go %x (%v), Python %s", exp, err, res["export"])
	}
	if res["key_id"] != interopKey.ID || conn.KeyID() != interopKey.ID {
		t.Fatalf("key ID: Go %q, Python %q", conn.KeyID(), res["key_id"])
	}
	if c.pyUpdate > 0 {
		if conn.rl.in.gen == 0 || res["recv_generations"] == "0" {
			t.Fatalf("no key update arrived: Go received %d, Python %s", conn.rl.in.gen, res["recv_generations"])
		}
		if want := strconv.Itoa(conn.rl.out.gen); res["recv_generations"] != want {
			t.Fatalf("Python received %s key updates, Go sent %s", res["recv_generations"], want)
		}
		if res["send_generations"] != strconv.Itoa(conn.rl.in.gen) {
			t.Fatalf("Go received %d key updates, Python sent %s", conn.rl.in.gen, res["send_generations"])
		}
	}
	if c.probes && !slices.Contains(peer.events, "ProtocolError -") {
		t.Fatalf("the Python listener reported %q, want ProtocolError refusals", peer.events)
	}
}

// interopExchange is the Go end of interop_peer.py's exchange; it returns
// the SHA-256 of what it sent and of what it got, in hex.
func interopExchange(t *testing.T, c *Conn, first bool, size int) (sent, got string) {
	t.Helper()
	data := make([]byte, size)
	rand.Read(data)
	sum := sha256.Sum256(data)
	sent = hex.EncodeToString(sum[:])
	readAll := func() string {
		h := sha256.New()
		if _, err := io.Copy(h, c); err != nil {
			t.Fatalf("reading to the end: %v", err)
		}
		return hex.EncodeToString(h.Sum(nil))
	}
	if first {
		if _, err := c.Write(data); err != nil {
			t.Fatal(err)
		}
		if err := c.CloseWrite(); err != nil {
			t.Fatal(err)
		}
		var digest [32]byte
		if _, err := io.ReadFull(c, digest[:]); err != nil {
			t.Fatal(err)
		}
		if digest != sum {
			t.Fatalf("Python got data with SHA-256 %x, Go sent %x", digest, sum)
		}
		return sent, readAll()
	}
	got = readAll()
	b, _ := hex.DecodeString(got)
	if _, err := c.Write(append(b, data...)); err != nil {
		t.Fatal(err)
	}
	if err := c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	return sent, got
}

// probeInteropListener sends a Python listener what strangers send: each
// must see the end of the stream without a byte and without a reset.
func probeInteropListener(t *testing.T, addr string) {
	t.Helper()
	bad := bytes.Repeat([]byte{0}, clientHelloLen)
	copy(bad, "hmacauth\x01\x01\x00\x00\x05")
	bad[13+5] = 1 // key ID padding that is not zero
	probes := [][]byte{
		[]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
		{0x16, 0x03, 0x01, 0x00, 0xa5, 0x01},             // a TLS ClientHello
		{0x00, 0x00, 0x00, 0x08, 0x04, 0xd2, 0x16, 0x2f}, // PostgreSQL's SSLRequest
		[]byte("hmacauth\x02\x01"),                       // a future version
		bad,
	}
	for i, p := range probes {
		c, err := net.DialTimeout("tcp", addr, waitLimit)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(waitLimit))
		if _, err := c.Write(p); err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(c)
		c.Close()
		if len(b) != 0 || err != nil {
			t.Fatalf("probe %d: the Python listener answered %q, %v; want the end of stream and nothing else", i, b, err)
		}
	}
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// TestPythonHTTPClient runs python/examples/go_http_client.py, a Python
// client, against a Go http.Server behind Listen.
func TestPythonHTTPClient(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("starts a Python process")
	}
	pys := findInteropPythons()
	i := slices.IndexFunc(pys, func(p pythons.Interpreter) bool { return p.Crypto })
	if i < 0 {
		t.Skip("no Python 3.9 or later with the 'cryptography' package; the example needs ModeSealed")
	}
	py := pys[i]
	keyFile := filepath.Join(t.TempDir(), "keys")
	line := fmt.Sprintf("%s %s\n", interopKey.ID, base64.StdEncoding.EncodeToString(interopKey.Secret))
	if err := os.WriteFile(keyFile, []byte(line), 0o600); err != nil {
		t.Fatal(err)
	}
	ln, err := Listen("tcp", "127.0.0.1:0", &Config{Keys: []Key{interopKey}, Mode: ModeSealed})
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello %s from Go", r.URL.Path)
	})}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	defer func() {
		srv.Close()
		<-served
	}()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	example := filepath.Join("python", "examples", "go_http_client.py")
	// Not -I, which would ignore PYTHONPATH: the example imports the
	// package from python/src, as it would after pip install.
	cmd := exec.CommandContext(ctx, py.Path, "-s", example, keyFile, ln.Addr().String(), "/py")
	cmd.Env = append(os.Environ(), "PYTHONPATH="+filepath.Join("python", "src"), "PYTHONDONTWRITEBYTECODE=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if want := "200 hello /py from Go\n200 hello /py from Go\n"; string(out) != want {
		t.Fatalf("the Python client printed %q, want %q", out, want)
	}
}
