//go:build unix

package hmacauth

import (
	"fmt"
	"net"
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
// echo from benchClients goroutines, like BenchmarkConnect. Both also
// report the CPU time of the whole process per GB or per connection, which
// varies far less than wall-clock figures when other processes load the
// machine. Compare within one run only.

const benchWriteSize = 256 << 10

// modeProto is hmacauth through a Listener and a Dialer in a mode, with or
// without forward secrecy (see benchProto).
func modeProto(mode Mode, fs bool) benchProto {
	return modeProtoWith(mode, fs, 0)
}

// modeProtoWith is modeProto with a KeyShareLifetime.
func modeProtoWith(mode Mode, fs bool, keyShareLifetime time.Duration) benchProto {
	// Each side has its own Config, as two processes would: its own key
	// shares and X25519 results.
	config := func() *Config {
		cfg := benchConfig(fs)
		cfg.Mode = mode
		cfg.KeyShareLifetime = keyShareLifetime
		return cfg
	}
	d := &Dialer{Config: config()}
	server := config()
	return benchProto{
		name: fmt.Sprintf("%v fs=%v", mode, fs),
		wrap: func(inner net.Listener) net.Listener {
			l, err := NewListener(inner, server)
			if err != nil {
				panic(err) // unreachable: benchConfig is valid
			}
			return l
		},
		dial: func(addr string) (net.Conn, error) { return d.Dial("tcp", addr) },
	}
}

// modesProto returns the protocol a throughput or connection benchmark
// names: tcp, tls13 (AES-128-GCM), or an hmacauth mode.
func modesProto(b *testing.B, name string) benchProto {
	switch name {
	case "auth":
		return modeProto(ModeAuth, false)
	case "integrity":
		return modeProto(ModeIntegrity, false)
	case "sealed":
		return modeProto(ModeSealed, false)
	case "sealed+fs":
		return modeProto(ModeSealed, true)
	case "auth+fs":
		return modeProto(ModeAuth, true)
	case "sealed+fs-fresh": // a new X25519 key share for every handshake
		return modeProtoWith(ModeSealed, true, -1)
	}
	return benchProtoFor(b, name)
}

// benchPair returns a connected, handshaken pair of p. A recordSize other
// than 0 sets the size of the records the client sends.
func benchPair(b *testing.B, p benchProto, recordSize int) (client, server net.Conn) {
	b.Helper()
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	ln := p.wrap(inner)
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if hs, ok := c.(interface{ Handshake() error }); ok && err == nil {
			// crypto/tls handshakes lazily, but its client waits.
			if hs.Handshake() != nil {
				c.Close()
				c = nil
			}
		}
		accepted <- c
	}()
	client, err = p.dial(inner.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	server = <-accepted
	if server == nil {
		client.Close()
		b.Fatal("accept failed")
	}
	if c, ok := client.(*Conn); ok && recordSize > 0 {
		c.rp.recordSize = recordSize
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
	cpu0 := cpuTime(b)
	for range b.N {
		if _, err := w.Write(buf); err != nil {
			b.Fatal(err)
		}
	}
	if err := <-done; err != nil {
		b.Fatal(err)
	}
	cpu := cpuTime(b) - cpu0
	b.ReportMetric(cpu.Seconds()/(float64(total)/1e9), "cpu-s/GB")
}

// BenchmarkModesThroughput compares one-way bulk throughput: plain TCP,
// crypto/tls 1.3 (AES-128-GCM with AES hardware) and the three modes.
func BenchmarkModesThroughput(b *testing.B) {
	for _, name := range []string{"tcp", "tls13", "auth", "integrity", "sealed"} {
		b.Run(name, func(b *testing.B) {
			w, r := benchPair(b, modesProto(b, name), 0)
			benchStream(b, w, r)
		})
	}
}

// BenchmarkModesThroughputSideBySide is BenchmarkModesThroughput for
// crypto/tls 1.3, ModeSealed and ModeIntegrity, alternating in batches of
// sideBySideBatch writes of bulkChunk bytes (see bulkSideBySide), on one
// connection per protocol and on four at once (both cores busy, as on a
// loaded server). Each protocol has two entries, made in the order tls13,
// sealed, integrity, integrity, sealed, tls13, as the connections made
// first tend to be the faster ones. A burst of load elsewhere then hits
// all three alike, so the ratios move far less than those of separate
// sub-benchmarks. It reports each throughput, and the ratios to crypto/tls
// 1.3 of throughput and of CPU time per GB.
func BenchmarkModesThroughputSideBySide(b *testing.B) {
	names := []string{"tls13", "sealed", "integrity", "integrity", "sealed", "tls13"}
	for _, streams := range []int{1, 4} {
		b.Run(fmt.Sprintf("streams=%d", streams), func(b *testing.B) {
			spent := bulkSideBySide(b, names, streams, modesProto)
			tlsRate, tlsCPU := bulkFigures(names, spent, "tls13")
			b.ReportMetric(tlsRate, "tls13-MB/s")
			for _, name := range []string{"sealed", "integrity"} {
				rate, cpu := bulkFigures(names, spent, name)
				b.ReportMetric(rate, name+"-MB/s")
				b.ReportMetric(rate/tlsRate, name+"/tls13")
				b.ReportMetric(tlsCPU/cpu, name+"/tls13-cpu")
			}
		})
	}
}

// BenchmarkModesRecordSize measures the record modes at several record
// sizes; it is how defaultRecordSize was chosen.
func BenchmarkModesRecordSize(b *testing.B) {
	for _, name := range []string{"integrity", "sealed"} {
		for _, size := range []int{16 << 10, 64 << 10, 256 << 10} {
			b.Run(fmt.Sprintf("%s/%dKiB", name, size>>10), func(b *testing.B) {
				w, r := benchPair(b, modesProto(b, name), size)
				benchStream(b, w, r)
			})
		}
	}
}

// BenchmarkModesConns compares connections per second, each with a 1-byte
// echo: crypto/tls 1.3 full handshakes (X25519, and the default
// X25519MLKEM768) against hmacauth with forward secrecy (ModeSealed, the
// costliest, and ModeAuth) and without, in every mode: the difference
// between auth and integrity or sealed is the record layer's cost per
// connection.
func BenchmarkModesConns(b *testing.B) {
	for _, name := range []string{"tls13", "tls13-mlkem", "sealed+fs", "sealed+fs-fresh", "auth+fs", "sealed", "integrity", "auth"} {
		b.Run(name, func(b *testing.B) {
			p := modesProto(b, name)
			srv := startBenchServer(b, p, echoOnce)
			addr := srv.addr()
			b.ResetTimer()
			cpu0 := cpuTime(b)
			err := runClients(b.N, benchClients, func() (net.Conn, error) { return p.dial(addr) })
			b.StopTimer()
			cpu := cpuTime(b) - cpu0
			if err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "conns/s")
			b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu-us/conn")
		})
	}
}

// BenchmarkModesConnsSideBySide is BenchmarkModesConns for the three modes
// without forward secrecy, alternating in batches of sideBySideBatch
// connections (order reversed every round) and charging each batch's CPU
// time to its mode. The differences integrity-auth and sealed-auth, the
// record layer's cost per connection, are far steadier than those of
// separate runs when other processes load the machine.
func BenchmarkModesConnsSideBySide(b *testing.B) {
	names := []string{"auth", "integrity", "sealed"}
	cpu := sideBySide(b, names, modesProto, func() time.Duration { return cpuTime(b) })
	us := make([]float64, len(names))
	for i, name := range names {
		us[i] = float64(cpu[i].Microseconds()) / float64(b.N)
		b.ReportMetric(us[i], name+"-cpu-us/conn")
	}
	b.ReportMetric(us[1]-us[0], "integrity-auth-us")
	b.ReportMetric(us[2]-us[0], "sealed-auth-us")
}
