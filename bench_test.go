//go:build unix

package hmacauth

// Benchmarks behind BENCHMARKS.md; that file has the commands and explains
// the methods. Everything runs on loopback. BenchmarkServerCPU and
// BenchmarkHandshakeHeap run their clients in a child process (this test
// binary again, see benchHelperEnv), so that only the server's work is
// counted.

import (
	"bufio"
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

const (
	// benchClients is the number of client goroutines that connect at once.
	benchClients = 16
	// bulkChunk is the size of one Write, and of one op, in BenchmarkBulk.
	bulkChunk = 1 << 20
	// stalledHandshakes is how many handshakes BenchmarkHandshakeHeap
	// holds in flight at once.
	stalledHandshakes = 1000
	// benchIOTimeout bounds every server-side connection of a benchmark,
	// so that a broken client cannot hang the run.
	benchIOTimeout = time.Minute
)

// benchKey is the key of every benchmark connection. It is not secret.
var benchKey = Key{ID: "bench", Secret: bytes.Repeat([]byte{0x5a}, MinSecretLen)}

// benchConfig is the Config of both sides of a benchmark connection. The
// per-IP cap is off because every benchmark client comes from 127.0.0.1.
func benchConfig(fs bool) *Config {
	return &Config{Keys: []Key{benchKey}, ForwardSecrecy: fs, MaxHandshakesPerIP: -1}
}

// benchCert is a self-signed ECDSA P-256 certificate for 127.0.0.1.
type benchCert struct {
	der []byte
	key *ecdsa.PrivateKey // nil in the client process
}

var newBenchCert = sync.OnceValues(func() (*benchCert, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "hmacauth benchmark"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	return &benchCert{der: der, key: key}, nil
})

// benchProto is one way to secure (or not) a benchmark connection.
type benchProto struct {
	name string
	// wrap makes the server's listener from a plain TCP listener. Its
	// connections are ready for Read: handshaken, or handshaking on first
	// use like crypto/tls.
	wrap func(inner net.Listener) net.Listener
	// listen, if set, makes the server's listener on 127.0.0.1 itself,
	// instead of wrap over net.Listen.
	listen func() (net.Listener, error)
	// dial connects to the server and completes the client's handshake.
	dial func(addr string) (net.Conn, error)
}

// benchProtoNames are the protocols BenchmarkConnect and BenchmarkServerCPU
// compare. tls13 uses X25519 only, tls13-mlkem crypto/tls's default key
// exchange (X25519MLKEM768 first). hmacauth-lazy runs the server's
// handshake as crypto/tls's listener does, lazily on the first Read of a
// Conn made by Server, without the Listener's goroutine, queue and
// context: the difference to hmacauth is the cost of the accept engine.
var benchProtoNames = []string{"tcp", "tls13", "tls13-mlkem", "hmacauth", "hmacauth-lazy", "hmacauth-fs"}

func newBenchProto(name string, cert *benchCert) (benchProto, error) {
	p := benchProto{name: name}
	switch name {
	case "tcp":
		p.wrap = func(inner net.Listener) net.Listener { return inner }
		p.dial = func(addr string) (net.Conn, error) { return net.Dial("tcp", addr) }
	case "tls13", "tls13-mlkem":
		leaf, err := x509.ParseCertificate(cert.der)
		if err != nil {
			return p, err
		}
		roots := x509.NewCertPool()
		roots.AddCert(leaf)
		var curves []tls.CurveID
		if name == "tls13" {
			curves = []tls.CurveID{tls.X25519}
		}
		client := &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS13, CurvePreferences: curves}
		p.dial = func(addr string) (net.Conn, error) { return tls.Dial("tcp", addr, client) }
		if cert.key != nil {
			server := &tls.Config{
				Certificates:           []tls.Certificate{{Certificate: [][]byte{cert.der}, PrivateKey: cert.key, Leaf: leaf}},
				MinVersion:             tls.VersionTLS13,
				SessionTicketsDisabled: true,
				CurvePreferences:       curves,
			}
			p.wrap = func(inner net.Listener) net.Listener { return tls.NewListener(inner, server) }
		}
	case "hmacauth", "hmacauth-fs":
		fs := name == "hmacauth-fs"
		d := &Dialer{Config: benchConfig(fs)}
		p.dial = func(addr string) (net.Conn, error) { return d.Dial("tcp", addr) }
		server := benchConfig(fs)
		p.listen = func() (net.Listener, error) { return Listen("tcp", "127.0.0.1:0", server) }
	case "hmacauth-lazy":
		d := &Dialer{Config: benchConfig(false)}
		p.dial = func(addr string) (net.Conn, error) { return d.Dial("tcp", addr) }
		server := benchConfig(false)
		p.wrap = func(inner net.Listener) net.Listener { return lazyListener{inner, server} }
	default:
		return p, fmt.Errorf("unknown protocol %q", name)
	}
	return p, nil
}

// lazyListener returns Server connections that handshake on first use.
type lazyListener struct {
	net.Listener
	config *Config
}

func (l lazyListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return Server(c, l.config), nil
}

func benchProtoFor(b *testing.B, name string) benchProto {
	b.Helper()
	cert, err := newBenchCert()
	if err != nil {
		b.Fatal(err)
	}
	p, err := newBenchProto(name, cert)
	if err != nil {
		b.Fatal(err)
	}
	return p
}

// benchServer accepts connections and runs handle on each in a goroutine
// of its own, as a typical server does.
type benchServer struct {
	ln      net.Listener
	handled atomic.Int64 // connections handled and closed
}

func startBenchServer(b *testing.B, p benchProto, handle func(net.Conn)) *benchServer {
	b.Helper()
	var ln net.Listener
	var err error
	if p.listen != nil {
		ln, err = p.listen()
	} else if ln, err = net.Listen("tcp", "127.0.0.1:0"); err == nil {
		ln = p.wrap(ln)
	}
	if err != nil {
		b.Fatal(err)
	}
	s := &benchServer{ln: ln}
	b.Cleanup(serveConns(ln, func(c net.Conn) {
		c.SetDeadline(time.Now().Add(benchIOTimeout))
		handle(c)
		c.Close()
		s.handled.Add(1)
	}))
	return s
}

func (s *benchServer) addr() string { return s.ln.Addr().String() }

// waitHandled waits until the server has handled n connections.
func (s *benchServer) waitHandled(n int) error {
	for deadline := time.Now().Add(benchIOTimeout); s.handled.Load() < int64(n); {
		if time.Now().After(deadline) {
			return fmt.Errorf("server handled %d connections of %d", s.handled.Load(), n)
		}
		time.Sleep(time.Millisecond)
	}
	return nil
}

// echoOnce echoes one byte.
func echoOnce(c net.Conn) {
	var b [1]byte
	if _, err := io.ReadFull(c, b[:]); err == nil {
		c.Write(b[:])
	}
}

// connectEcho makes one connection: connect, handshake, 1-byte echo, close.
func connectEcho(dial func() (net.Conn, error)) error {
	c, err := dial()
	if err != nil {
		return err
	}
	defer c.Close()
	b := [1]byte{'x'}
	if _, err := c.Write(b[:]); err != nil {
		return err
	}
	if _, err := io.ReadFull(c, b[:]); err != nil {
		return fmt.Errorf("reading the echo: %w", err)
	}
	return nil
}

// runClients makes n connections with connectEcho from workers goroutines.
func runClients(n, workers int, dial func() (net.Conn, error)) error {
	var (
		next  atomic.Int64
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error
	)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(n) {
				if err := connectEcho(dial); err != nil {
					mu.Lock()
					first = cmpOr(first, err)
					mu.Unlock()
					next.Store(int64(n)) // stop the others
					return
				}
			}
		}()
	}
	wg.Wait()
	return first
}

func cmpOr(a, b error) error {
	if a != nil {
		return a
	}
	return b
}

// BenchmarkConnect measures whole connections per second: connect,
// handshake, 1-byte echo, close, from benchClients goroutines at once.
func BenchmarkConnect(b *testing.B) {
	for _, name := range benchProtoNames {
		b.Run("proto="+name, func(b *testing.B) {
			p := benchProtoFor(b, name)
			srv := startBenchServer(b, p, echoOnce)
			addr := srv.addr()
			b.ResetTimer()
			err := runClients(b.N, benchClients, func() (net.Conn, error) { return p.dial(addr) })
			b.StopTimer()
			if err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "conns/s")
		})
	}
}

// BenchmarkBulk measures one-way throughput over one connection, in
// bulkChunk writes; the server reads into a buffer of 256 KiB.
func BenchmarkBulk(b *testing.B) {
	for _, name := range []string{"tcp", "tls13", "hmacauth"} {
		b.Run("proto="+name, func(b *testing.B) {
			p := benchProtoFor(b, name)
			got := make(chan int64, 1)
			srv := startBenchServer(b, p, func(c net.Conn) {
				c.SetDeadline(time.Time{}) // a long run must not hit benchIOTimeout
				n, _ := io.CopyBuffer(io.Discard, struct{ io.Reader }{c}, make([]byte, 256<<10))
				got <- n
			})
			c, err := p.dial(srv.addr())
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			if tc, ok := c.(*tls.Conn); ok && tc.ConnectionState().CipherSuite != tls.TLS_AES_128_GCM_SHA256 {
				b.Skipf("crypto/tls chose %s, not AES-128-GCM (no AES hardware?)", tls.CipherSuiteName(tc.ConnectionState().CipherSuite))
			}
			buf := make([]byte, bulkChunk)
			b.SetBytes(bulkChunk)
			b.ResetTimer()
			for range b.N {
				if _, err := c.Write(buf); err != nil {
					b.Fatal(err)
				}
			}
			if err := c.(interface{ CloseWrite() error }).CloseWrite(); err != nil {
				b.Fatal(err)
			}
			n := <-got
			b.StopTimer()
			if want := int64(b.N) * bulkChunk; n != want {
				b.Fatalf("server read %d bytes, want %d", n, want)
			}
		})
	}
}

// BenchmarkServerCPU measures the CPU time (user + system, getrusage
// RUSAGE_SELF) this process spends per connection as the server of
// BenchmarkConnect's workload, while a child process runs the clients.
// The handshake's own cost is the difference to proto=tcp.
func BenchmarkServerCPU(b *testing.B) {
	for _, name := range benchProtoNames {
		b.Run("proto="+name, func(b *testing.B) {
			p := benchProtoFor(b, name)
			srv := startBenchServer(b, p, echoOnce)
			child := startBenchHelper(b, "connect", map[string]string{
				"PROTO": name, "ADDR": srv.addr(), "N": strconv.Itoa(b.N),
			})
			runtime.GC()
			before := cpuTime(b)
			b.ResetTimer()
			child.start()
			err := child.wait()
			if err == nil {
				err = srv.waitHandled(b.N)
			}
			after := cpuTime(b)
			b.StopTimer()
			if err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64((after-before).Nanoseconds())/1e3/float64(b.N), "server-us/conn")
		})
	}
}

// cpuTime returns the user and system CPU time of this process so far.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkHandshakeHeap measures the server's memory per handshake in
// flight: a child process opens stalledHandshakes connections to a
// Listener and stalls them, either before sending anything (stage=silent)
// or after reading the ServerHello (stage=serverhello: the server holds its
// transcript and waits for the ClientFinished). Heap is the growth of the
// live heap (HeapAlloc after a GC); stack is the growth of goroutine stack
// memory, which understates when the runtime reuses the stacks of ended
// goroutines.
func BenchmarkHandshakeHeap(b *testing.B) {
	for _, stage := range []string{"silent", "serverhello"} {
		b.Run("stage="+stage, func(b *testing.B) {
			cfg := benchConfig(false)
			cfg.MaxHandshakes = stalledHandshakes + 64
			cfg.HandshakeTimeout = benchIOTimeout
			inner, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			l, err := NewListener(inner, cfg)
			if err != nil {
				b.Fatal(err)
			}
			defer l.Close()
			// One op is one stalled handshake, held in batches.
			var heap, stack int64
			for done := 0; done < b.N; done += stalledHandshakes {
				h, s := stallHandshakes(b, l, stage, min(stalledHandshakes, b.N-done))
				heap += h
				stack += s
			}
			b.ReportMetric(float64(heap)/float64(b.N), "heap-B/handshake")
			b.ReportMetric(float64(stack)/float64(b.N), "stack-B/handshake")
		})
	}
}

// stallHandshakes holds n handshakes in flight on l and returns the growth
// of the heap and of the goroutine stacks.
func stallHandshakes(b *testing.B, l *Listener, stage string, n int) (heap, stack int64) {
	child := startBenchHelper(b, "stall", map[string]string{
		"STAGE": stage, "ADDR": l.Addr().String(), "N": strconv.Itoa(n),
	})
	var m0, m1 runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&m0)
	child.start()
	err := child.waitReady()
	if err == nil {
		err = waitInFlight(l, int64(n))
	}
	if err != nil {
		child.wait()
		b.Fatal(err)
	}
	runtime.GC()
	runtime.ReadMemStats(&m1)
	if err := child.wait(); err != nil {
		b.Fatal(err)
	}
	if err := waitInFlight(l, 0); err != nil {
		b.Fatal(err)
	}
	return int64(m1.HeapAlloc) - int64(m0.HeapAlloc), int64(m1.StackInuse) - int64(m0.StackInuse)
}

// waitInFlight waits until l has n handshakes in flight.
func waitInFlight(l *Listener, n int64) error {
	for deadline := time.Now().Add(benchIOTimeout); l.al.Stats().InFlight != n; {
		if time.Now().After(deadline) {
			return fmt.Errorf("%d handshakes in flight, want %d", l.al.Stats().InFlight, n)
		}
		time.Sleep(time.Millisecond)
	}
	return nil
}

// The child process: this test binary, started with benchHelperEnv set to
// a job name and its parameters in benchHelperEnv+"_"+NAME variables. It
// waits for a line on stdin before it starts, so that the parent can take
// its measurements with the child already running.
const benchHelperEnv = "HMACAUTH_BENCH_HELPER"

func init() {
	if job := os.Getenv(benchHelperEnv); job != "" {
		if err := runBenchHelper(job); err != nil {
			fmt.Fprintf(os.Stderr, "benchmark client process: %v\n", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
}

// benchHelper is a running child process.
type benchHelper struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	stdout *bufio.Reader
	stderr bytes.Buffer
}

func startBenchHelper(b *testing.B, job string, params map[string]string) *benchHelper {
	b.Helper()
	exe, err := os.Executable()
	if err != nil {
		b.Fatal(err)
	}
	h := &benchHelper{cmd: exec.Command(exe)}
	h.cmd.Env = append(os.Environ(), benchHelperEnv+"="+job)
	for k, v := range params {
		h.cmd.Env = append(h.cmd.Env, benchHelperEnv+"_"+k+"="+v)
	}
	if cert, err := newBenchCert(); err == nil {
		h.cmd.Env = append(h.cmd.Env, benchHelperEnv+"_CERT="+hex.EncodeToString(cert.der))
	}
	h.cmd.Stderr = &h.stderr
	if h.stdin, err = h.cmd.StdinPipe(); err != nil {
		b.Fatal(err)
	}
	stdout, err := h.cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	h.stdout = bufio.NewReader(stdout)
	if err := h.cmd.Start(); err != nil {
		b.Fatal(err)
	}
	return h
}

// start tells the child to begin.
func (h *benchHelper) start() { io.WriteString(h.stdin, "go\n") }

// waitReady waits for the child to say it has done its part.
func (h *benchHelper) waitReady() error {
	line, err := h.stdout.ReadString('\n')
	if line != "ready\n" {
		return fmt.Errorf("child process said %q (%v): %s", line, err, h.stderr.Bytes())
	}
	return nil
}

// wait tells the child to finish and waits for it to exit.
func (h *benchHelper) wait() error {
	h.stdin.Close()
	if err := h.cmd.Wait(); err != nil {
		return fmt.Errorf("child process: %v: %s", err, h.stderr.Bytes())
	}
	return nil
}

func runBenchHelper(job string) error {
	param := func(k string) string { return os.Getenv(benchHelperEnv + "_" + k) }
	n, err := strconv.Atoi(param("N"))
	if err != nil {
		return err
	}
	stdin := bufio.NewReader(os.Stdin)
	if _, err := stdin.ReadString('\n'); err != nil {
		return fmt.Errorf("waiting for the start: %w", err)
	}
	addr := param("ADDR")
	switch job {
	case "connect":
		der, err := hex.DecodeString(param("CERT"))
		if err != nil {
			return err
		}
		p, err := newBenchProto(param("PROTO"), &benchCert{der: der})
		if err != nil {
			return err
		}
		return runClients(n, benchClients, func() (net.Conn, error) { return p.dial(addr) })
	case "stall":
		conns := make([]net.Conn, 0, n)
		defer func() {
			for _, c := range conns {
				c.Close()
			}
		}()
		sched := deriveKeySchedule(benchKey)
		for range n {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				return err
			}
			conns = append(conns, c)
			if param("STAGE") == "serverhello" {
				h := &handshake{}
				if err := h.writeClientHello(sched, hsParams{}); err != nil {
					return err
				}
				if _, err := c.Write(h.ch()); err != nil {
					return err
				}
				if _, err := io.ReadFull(c, h.sh()); err != nil {
					return fmt.Errorf("reading the ServerHello: %w", err)
				}
			}
		}
		os.Stdout.WriteString("ready\n")
		_, err := io.Copy(io.Discard, stdin) // until the parent closes stdin
		return err
	}
	return errors.New("unknown job " + job)
}

// BenchmarkServerHandshakeCompute measures the server's handshake work
// without the kernel: runServer reads a valid ClientHello and
// ClientFinished from memory and writes its ServerHello to io.Discard.
// The server's nonce comes from a fixed reader so that the recorded
// ClientFinished stays valid; each op also reads 32 bytes from crypto/rand
// to count what a real nonce costs.
func BenchmarkServerHandshakeCompute(b *testing.B) {
	for _, fs := range []bool{false, true} {
		b.Run("fs="+strconv.FormatBool(fs), func(b *testing.B) {
			keys, err := benchConfig(fs).keySet()
			if err != nil {
				b.Fatal(err)
			}
			p := hsParams{fs: fs}
			// Record one client's messages against a server with the fixed
			// reader.
			cl, sv := &handshake{rand: fixedReader{}}, &handshake{rand: fixedReader{}}
			if err := cl.writeClientHello(keys.first, p); err != nil {
				b.Fatal(err)
			}
			copy(sv.ch(), cl.ch())
			ch, sched, err := sv.readClientHello(keys)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := sv.writeServerHello(sched, ch, p); err != nil {
				b.Fatal(err)
			}
			copy(cl.sh(), sv.sh())
			sh, err := cl.readServerHello(keys.first, p)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := cl.writeClientFinished(keys.first, sh); err != nil {
				b.Fatal(err)
			}
			in := append(cl.ch()[:len(cl.ch()):len(cl.ch())], cl.cf()...)
			r := bytes.NewReader(in)
			rw := struct {
				io.Reader
				io.Writer
			}{r, io.Discard}
			var nonce [nonceLen]byte
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				r.Reset(in)
				rand.Read(nonce[:])
				h := &handshake{rand: fixedReader{}}
				if _, err := h.runServer(rw, keys, p); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// fixedReader returns 0x01 bytes: a deterministic stand-in for crypto/rand.
type fixedReader struct{}

func (fixedReader) Read(b []byte) (int, error) {
	for i := range b {
		b[i] = 1
	}
	return len(b), nil
}

// The SideBySide benchmarks alternate between protocols in short batches
// within one op loop, so that every protocol meets the same load from the
// rest of the machine, and report each protocol's rate and the ratios the
// targets are stated in.

// sideBySideBatch is how many connections (or MiB) one protocol gets
// before the next protocol's turn; the order of turns reverses every
// round, so that no protocol always follows the same one.
const sideBySideBatch = 32

// turns returns the order of the protocols' turns in a round.
func turns(round, n int) []int {
	t := make([]int, n)
	for i := range t {
		t[i] = i
		if round%2 == 1 {
			t[i] = n - 1 - i
		}
	}
	return t
}

// BenchmarkConnectSideBySide is BenchmarkConnect for tcp, tls13 and
// hmacauth, alternating. One op is one connection of each protocol.
func BenchmarkConnectSideBySide(b *testing.B) {
	names := []string{"tcp", "tls13", "hmacauth"}
	start := time.Now()
	elapsed := sideBySide(b, names, benchProtoFor, func() time.Duration { return time.Since(start) })
	rate := make([]float64, len(names))
	for i, name := range names {
		rate[i] = float64(b.N) / elapsed[i].Seconds()
		b.ReportMetric(rate[i], name+"-conns/s")
	}
	b.ReportMetric(rate[2]/rate[0], "hmacauth/tcp")
	b.ReportMetric(rate[2]/rate[1], "hmacauth/tls13")
}

// sideBySide runs b.N echo connections of each named protocol, alternating
// in batches of sideBySideBatch (order reversed every round), and returns
// for each protocol the sum of clock's advance over its batches.
func sideBySide(b *testing.B, names []string, proto func(*testing.B, string) benchProto, clock func() time.Duration) []time.Duration {
	dials := make([]func() (net.Conn, error), len(names))
	for i, name := range names {
		p := proto(b, name)
		addr := startBenchServer(b, p, echoOnce).addr()
		dials[i] = func() (net.Conn, error) { return p.dial(addr) }
	}
	spent := make([]time.Duration, len(names))
	b.ResetTimer()
	for done, round := 0, 0; done < b.N; done, round = done+sideBySideBatch, round+1 {
		n := min(sideBySideBatch, b.N-done)
		for _, i := range turns(round, len(names)) {
			t0 := clock()
			err := runClients(n, benchClients, dials[i])
			spent[i] += clock() - t0
			if err != nil {
				b.Fatal(err)
			}
		}
	}
	b.StopTimer()
	return spent
}

// BenchmarkBulkSideBySide is BenchmarkBulk for tcp and hmacauth,
// alternating over two connections each, made in the order tcp, hmacauth,
// hmacauth, tcp because the connection made first tends to be the faster
// one (crypto/tls, much slower, would only stretch the rounds). One op is
// bulkChunk bytes on each connection.
func BenchmarkBulkSideBySide(b *testing.B) {
	names := []string{"tcp", "hmacauth", "hmacauth", "tcp"}
	spent := bulkSideBySide(b, names, 1, benchProtoFor)
	tcp, _ := bulkFigures(names, spent, "tcp")
	auth, _ := bulkFigures(names, spent, "hmacauth")
	b.ReportMetric(tcp, "tcp-MB/s")
	b.ReportMetric(auth, "hmacauth-MB/s")
	b.ReportMetric(auth/tcp, "hmacauth/tcp")
}

// bulkSpent is what the batches of one entry of bulkSideBySide cost.
type bulkSpent struct {
	wall, cpu time.Duration
	chunks    int // bulkChunk bytes each, on all its connections
}

// bulkSideBySide writes bulkChunk bytes b.N times (rounded up to whole
// batches) on the connections of each named protocol, alternating in
// batches of sideBySideBatch chunks (order reversed every round); after
// each batch the server acknowledges with one byte that it has read them
// all. Each name has streams connections, written at once from one
// goroutine each. It returns, per entry of names (a name may appear more
// than once), the wall-clock and process CPU time of its batches: the
// servers read only during their own batches.
func bulkSideBySide(b *testing.B, names []string, streams int, proto func(*testing.B, string) benchProto) []bulkSpent {
	conns := make([][]net.Conn, len(names))
	for i, name := range names {
		p := proto(b, name)
		srv := startBenchServer(b, p, func(c net.Conn) {
			c.SetDeadline(time.Time{}) // a long run must not hit benchIOTimeout
			buf := make([]byte, 256<<10)
			for {
				var n int64
				want := int64(sideBySideBatch) * bulkChunk
				for n < want {
					m, err := c.Read(buf[:min(int64(len(buf)), want-n)])
					n += int64(m)
					if err != nil {
						return
					}
				}
				if _, err := c.Write([]byte{1}); err != nil {
					return
				}
			}
		})
		for range streams {
			c, err := p.dial(srv.addr())
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { c.Close() }) // before the server's Cleanup, which waits for it
			conns[i] = append(conns[i], c)
		}
	}
	bufs := make([][]byte, streams)
	for j := range bufs {
		bufs[j] = make([]byte, bulkChunk)
	}
	batch := func(c net.Conn, buf []byte) {
		for range sideBySideBatch {
			if _, err := c.Write(buf); err != nil {
				b.Error(err)
				return
			}
		}
		if _, err := io.ReadFull(c, buf[:1]); err != nil {
			b.Error(err)
		}
	}
	spent := make([]bulkSpent, len(names))
	b.ResetTimer()
	// Whole batches only: the server acknowledges whole batches.
	for round, ops := 0, 0; ops < b.N; ops, round = ops+sideBySideBatch, round+1 {
		for _, i := range turns(round, len(conns)) {
			start, cpu0 := time.Now(), cpuTime(b)
			var wg sync.WaitGroup
			for j, c := range conns[i] {
				wg.Go(func() { batch(c, bufs[j]) })
			}
			wg.Wait()
			if b.Failed() {
				b.FailNow()
			}
			spent[i].wall += time.Since(start)
			spent[i].cpu += cpuTime(b) - cpu0
			spent[i].chunks += sideBySideBatch * streams
		}
	}
	b.StopTimer()
	return spent
}

// bulkFigures sums the named protocol's connections of spent: its
// throughput in MB/s and its process CPU time per GB, in seconds.
func bulkFigures(names []string, spent []bulkSpent, name string) (mbps, cpuPerGB float64) {
	var t bulkSpent
	for i := range names {
		if names[i] == name {
			t.wall += spent[i].wall
			t.cpu += spent[i].cpu
			t.chunks += spent[i].chunks
		}
	}
	gb := float64(t.chunks) * bulkChunk / 1e9
	return gb * 1e3 / t.wall.Seconds(), t.cpu.Seconds() / gb
}

// BenchmarkDialUnderSlotAttack measures a key holder's dial (connect,
// handshake, 1-byte echo, close) against a Listener with the default
// Config, without an attack (attack=none) and while 64 source addresses
// each hold 16 one-byte connections open, reopening them as they close
// (attack=64x16, as TestKeyHolderGetsInDuringSlotAttack): four times the
// default 256 handshake slots. benchHonestDialers key holders, from
// 127.0.2.1 on, each dial one dial after the other; an op is one dial.
// Reported: the dial latency's median, 99th percentile and maximum, and
// the handshakes evicted per second.
func BenchmarkDialUnderSlotAttack(b *testing.B) {
	const benchHonestDialers = 8
	for _, attackers := range []int{0, 64} {
		name := "attack=none"
		if attackers > 0 {
			name = "attack=64x16"
		}
		b.Run(name, func(b *testing.B) {
			cfg := &Config{Keys: []Key{benchKey}}
			p := benchProto{listen: func() (net.Listener, error) { return Listen("tcp", "127.0.0.1:0", cfg) }}
			srv := startBenchServer(b, p, echoOnce)
			l := srv.ln.(*Listener)
			if attackers > 0 {
				attack := startSlotAttack(b, srv.ln.Addr(), attackers, DefaultMaxHandshakesPerIP, []byte{magic[0]})
				defer attack.stop()
				if err := waitInFlight(l, DefaultMaxHandshakes); err != nil {
					b.Fatal(err)
				}
			}
			var (
				next atomic.Int64
				mu   sync.Mutex
				lat  = make([]time.Duration, 0, b.N)
				errs = make(chan error, benchHonestDialers)
				wg   sync.WaitGroup
			)
			evicted := l.Stats().Evicted
			b.ResetTimer()
			for i := range benchHonestDialers {
				d := &Dialer{NetDialer: &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 2, byte(1+i))}}, Config: &Config{Keys: []Key{benchKey}}}
				wg.Go(func() {
					for next.Add(1) <= int64(b.N) {
						start := time.Now()
						if err := connectEcho(func() (net.Conn, error) { return d.Dial("tcp", srv.addr()) }); err != nil {
							errs <- err
							next.Store(int64(b.N)) // stop the others
							return
						}
						mu.Lock()
						lat = append(lat, time.Since(start))
						mu.Unlock()
					}
				})
			}
			wg.Wait()
			b.StopTimer()
			close(errs)
			if err := <-errs; err != nil {
				b.Fatalf("a key holder's dial failed: %v", err)
			}
			slices.Sort(lat)
			ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
			b.ReportMetric(ms(lat[len(lat)/2]), "p50-ms")
			b.ReportMetric(ms(lat[len(lat)*99/100]), "p99-ms")
			b.ReportMetric(ms(lat[len(lat)-1]), "max-ms")
			b.ReportMetric(float64(l.Stats().Evicted-evicted)/b.Elapsed().Seconds(), "evicted/s")
		})
	}
}
