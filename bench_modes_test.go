//go:build unix

package hmacauth

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"io"
	"math/big"
	"net"
	"sync"
	"syscall"
	"testing"
	"time"
)

// The benchmarks of the protected modes, side by side in one run:
//
//	go test -c -o modes.test . &&
//	for i in 1 2 3 4 5; do ./modes.test -test.run '^$' -test.bench 'ModesThroughput|ModesConns' -test.benchtime 1s; done
//
// (five interleaved rounds; take the median of each ratio).
// BenchmarkModesThroughput moves data one way over one loopback connection
// in 256 KiB writes; BenchmarkModesConns makes connections with a 1-byte
// echo from 16 goroutines. Both also report the
// CPU time of the whole process per GB or per connection, which varies
// far less than wall-clock figures when other processes load the machine.
// Compare within one run only.

const benchWriteSize = 256 << 10

// benchTLSConfigs returns a TLS 1.3 server and client configuration with a
// fresh ECDSA P-256 certificate, AES-128-GCM (the suite Go picks with AES
// hardware) and session tickets off, so each connection is a full handshake.
func benchTLSConfigs(b *testing.B) (server, client *tls.Config) {
	b.Helper()
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "bench"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &priv.PublicKey, priv)
	if err != nil {
		b.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		b.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	cert := tls.Certificate{Certificate: [][]byte{der}, PrivateKey: priv, Leaf: leaf}
	server = &tls.Config{
		Certificates:           []tls.Certificate{cert},
		MinVersion:             tls.VersionTLS13,
		SessionTicketsDisabled: true,
	}
	client = &tls.Config{
		RootCAs:                pool,
		ServerName:             "127.0.0.1",
		MinVersion:             tls.VersionTLS13,
		SessionTicketsDisabled: true,
	}
	return server, client
}

// benchPair returns a connected pair for one kind of transport.
func benchPair(b *testing.B, kind string, recordSize int) (w, r net.Conn) {
	b.Helper()
	raw, sraw := pipeTCP(b)
	var client, server net.Conn
	switch kind {
	case "tcp":
		return raw, sraw
	case "tls13":
		scfg, ccfg := benchTLSConfigs(b)
		client, server = tls.Client(raw, ccfg), tls.Server(sraw, scfg)
	default:
		mode := map[string]Mode{"auth": ModeAuth, "integrity": ModeIntegrity, "sealed": ModeSealed}[kind]
		cfg := &Config{Keys: []Key{recordTestKey()}, Mode: mode}
		cc, sc := Client(raw, cfg), Server(sraw, cfg)
		cc.rp.recordSize, sc.rp.recordSize = recordSize, recordSize
		client, server = cc, sc
	}
	errc := make(chan error, 1)
	go func() { errc <- server.(interface{ Handshake() error }).Handshake() }()
	if err := client.(interface{ Handshake() error }).Handshake(); err != nil {
		b.Fatal(err)
	}
	if err := <-errc; err != nil {
		b.Fatal(err)
	}
	return client, server
}

// benchStream writes b.N chunks of benchWriteSize bytes on w and reads them
// on r.
func benchStream(b *testing.B, w, r net.Conn) {
	b.Helper()
	defer w.Close()
	defer r.Close()
	b.SetBytes(benchWriteSize)
	b.ReportAllocs()
	total := int64(b.N) * benchWriteSize
	done := make(chan error, 1)
	go func() {
		buf := make([]byte, benchWriteSize)
		var got int64
		for got < total {
			n, err := r.Read(buf)
			got += int64(n)
			if err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	buf := make([]byte, benchWriteSize)
	b.ResetTimer()
	cpu0 := processCPU()
	for range b.N {
		if _, err := w.Write(buf); err != nil {
			b.Fatal(err)
		}
	}
	if err := <-done; err != nil {
		b.Fatal(err)
	}
	cpu := processCPU() - cpu0
	// CPU time of both ends per GB moved: a figure that barely moves when
	// other processes load the machine.
	b.ReportMetric(cpu.Seconds()/(float64(total)/1e9), "cpu-s/GB")
}

// processCPU returns the user and system CPU time this process has used.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkModesThroughput compares one-way bulk throughput: plain TCP,
// crypto/tls 1.3 (AES-128-GCM) and the three modes.
func BenchmarkModesThroughput(b *testing.B) {
	for _, kind := range []string{"tcp", "tls13", "auth", "integrity", "sealed"} {
		b.Run(kind, func(b *testing.B) {
			w, r := benchPair(b, kind, 0)
			benchStream(b, w, r)
		})
	}
}

// BenchmarkModesRecordSize measures the record modes at several record
// sizes; it is how defaultRecordSize was chosen.
func BenchmarkModesRecordSize(b *testing.B) {
	for _, kind := range []string{"integrity", "sealed"} {
		for _, size := range []int{16 << 10, 64 << 10, 256 << 10} {
			b.Run(fmt.Sprintf("%s/%dKiB", kind, size>>10), func(b *testing.B) {
				w, r := benchPair(b, kind, size)
				benchStream(b, w, r)
			})
		}
	}
}

// BenchmarkModesConns compares connections per second, each with a 1-byte
// echo, from 16 goroutines: crypto/tls 1.3 full handshakes against
// hmacauth with forward secrecy (sealed, the costliest) and without.
func BenchmarkModesConns(b *testing.B) {
	type side struct {
		listen func(net.Listener) net.Listener
		dial   func(addr string) (net.Conn, error)
	}
	scfg, ccfg := benchTLSConfigs(b)
	hm := func(mode Mode, fs bool) side {
		cfg := &Config{Keys: []Key{recordTestKey()}, Mode: mode, ForwardSecrecy: fs, MaxHandshakesPerIP: -1}
		return side{
			listen: func(ln net.Listener) net.Listener {
				l, err := NewListener(ln, cfg)
				if err != nil {
					b.Fatal(err)
				}
				return l
			},
			dial: func(addr string) (net.Conn, error) { return Dial("tcp", addr, cfg) },
		}
	}
	kinds := []struct {
		name string
		side side
	}{
		{"tls13", side{
			listen: func(ln net.Listener) net.Listener { return tls.NewListener(ln, scfg) },
			dial:   func(addr string) (net.Conn, error) { return tls.Dial("tcp", addr, ccfg) },
		}},
		{"sealed+fs", hm(ModeSealed, true)},
		{"sealed", hm(ModeSealed, false)},
		{"auth+fs", hm(ModeAuth, true)},
	}
	for _, k := range kinds {
		b.Run(k.name, func(b *testing.B) {
			inner, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			ln := k.side.listen(inner)
			var wg sync.WaitGroup
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					c, err := ln.Accept()
					if err != nil {
						return
					}
					wg.Add(1)
					go func() {
						defer wg.Done()
						defer c.Close()
						var one [1]byte
						if _, err := io.ReadFull(c, one[:]); err == nil {
							c.Write(one[:])
						}
					}()
				}
			}()
			addr := inner.Addr().String()
			b.SetParallelism(8) // 16 goroutines on 2 cores
			b.ResetTimer()
			cpu0 := processCPU()
			b.RunParallel(func(pb *testing.PB) {
				var one [1]byte
				for pb.Next() {
					c, err := k.side.dial(addr)
					if err != nil {
						b.Error(err)
						return
					}
					if _, err := c.Write([]byte{1}); err != nil {
						b.Error(err)
					}
					if _, err := io.ReadFull(c, one[:]); err != nil {
						b.Error(err)
					}
					c.Close()
				}
			})
			b.StopTimer()
			cpu := processCPU() - cpu0
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "conns/s")
			// CPU time of both ends: unlike conns/s, it barely moves
			// when other processes load the machine.
			b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu-us/conn")
			ln.Close()
			wg.Wait()
		})
	}
}
