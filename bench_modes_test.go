//go:build unix

package hmacauth

import (
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The benchmarks of the protected modes; BENCHMARKS.md has the commands
// and the figures. BenchmarkModesThroughputSideBySide and
// BenchmarkModesRecordSize alternate the protocols they compare in
// batches, so that load elsewhere hits all alike; BenchmarkModesThroughput
// runs them one after another. Every throughput and connection benchmark
// also reports the CPU time of the whole process (both ends) per GB or per
// connection, which varies far less than wall-clock figures when other
// processes load the machine. Compare within one run only.

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

// benchPair returns a connected, handshaken pair of p.
func benchPair(b *testing.B, p benchProto) (client, server net.Conn) {
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
			w, r := benchPair(b, modesProto(b, name))
			benchStream(b, w, r)
		})
	}
}

// BenchmarkModesThroughputSideBySide compares bulk throughput side by side
// (see bulkSideBySide): plain TCP, crypto/tls 1.3 and the three modes take
// turns in batches of sideBySideBatch writes of bulkChunk bytes, on
// one connection per protocol (streams=1) and on four at once (streams=4:
// both cores busy, as on a loaded server). Each protocol has two entries,
// made in mirrored order, as the connections made first tend to be the
// faster ones. It reports each protocol's MB/s and CPU time per GB (both
// ends), and the ratios the targets name: the modes' throughput over plain
// TCP's (auth) or crypto/tls 1.3's (integrity, sealed), and the
// baseline's CPU per GB over the mode's (how many times less CPU the mode
// needs).
func BenchmarkModesThroughputSideBySide(b *testing.B) {
	names := []string{"tls13", "tcp", "auth", "integrity", "sealed", "sealed", "integrity", "auth", "tcp", "tls13"}
	for _, streams := range []int{1, 4} {
		b.Run(fmt.Sprintf("streams=%d", streams), func(b *testing.B) {
			spent := bulkSideBySide(b, names, streams, modesProto)
			reportBulk(b, names, spent, []string{"tcp", "tls13", "auth", "integrity", "sealed"})
			ratio := func(mode, base string) {
				rate, cpu := bulkFigures(names, spent, mode)
				baseRate, baseCPU := bulkFigures(names, spent, base)
				b.ReportMetric(rate/baseRate, mode+"/"+base)
				b.ReportMetric(baseCPU/cpu, base+"/"+mode+"-cpu")
			}
			ratio("auth", "tcp")
			ratio("integrity", "tls13")
			ratio("sealed", "tls13")
		})
	}
}

// reportBulk reports MB/s and CPU s/GB of each of protos.
func reportBulk(b *testing.B, names []string, spent []bulkSpent, protos []string) {
	for _, name := range protos {
		rate, cpu := bulkFigures(names, spent, name)
		b.ReportMetric(rate, name+"-MB/s")
		b.ReportMetric(cpu, name+"-cpu-s/GB")
	}
}

// BenchmarkModesRecordSize compares the record modes at record sizes of 16,
// 64 and 256 KiB (the protocol maximum), side by side as
// BenchmarkModesThroughputSideBySide; it is how defaultRecordSize was
// chosen. The size is that of the records the writing side (the client)
// sends.
func BenchmarkModesRecordSize(b *testing.B) {
	sizes := []int{16, 64, 256}
	var names, protos []string
	for _, mode := range []string{"integrity", "sealed"} {
		for _, kib := range sizes {
			protos = append(protos, fmt.Sprintf("%s-%dKiB", mode, kib))
		}
	}
	names = append(names, protos...)
	for i := len(protos) - 1; i >= 0; i-- {
		names = append(names, protos[i])
	}
	proto := func(b *testing.B, name string) benchProto {
		mode, size, _ := strings.Cut(name, "-")
		kib, err := strconv.Atoi(strings.TrimSuffix(size, "KiB"))
		if err != nil {
			b.Fatal(err)
		}
		p := modesProto(b, mode)
		dial := p.dial
		p.dial = func(addr string) (net.Conn, error) {
			c, err := dial(addr)
			if err == nil {
				c.(*Conn).rl.testingOnlyRecordSize = kib << 10
			}
			return c, err
		}
		return p
	}
	for _, streams := range []int{1, 4} {
		b.Run(fmt.Sprintf("streams=%d", streams), func(b *testing.B) {
			reportBulk(b, names, bulkSideBySide(b, names, streams, proto), protos)
		})
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

// BenchmarkModesRoundTrip measures request/response traffic on one
// established connection: the client writes a 64-byte request, the server
// reads it and writes it back, the client reads the answer. Per round
// trip each side makes a read and a write (and a read that finds nothing
// before it waits), so this is what the system calls, the runtime's
// scheduling and, in the record modes, one record each way cost. It
// reports round trips per second and the process's CPU time (both ends)
// per round trip.
func BenchmarkModesRoundTrip(b *testing.B) {
	for _, name := range []string{"tcp", "tls13", "auth", "integrity", "sealed"} {
		b.Run(name, func(b *testing.B) {
			client, server := benchPair(b, modesProto(b, name))
			defer client.Close()
			done := make(chan error, 1)
			go func() {
				defer server.Close()
				buf := make([]byte, 64)
				for {
					if _, err := io.ReadFull(server, buf); err != nil {
						done <- nil // the client closed
						return
					}
					if _, err := server.Write(buf); err != nil {
						done <- err
						return
					}
				}
			}()
			req, resp := make([]byte, 64), make([]byte, 64)
			b.ReportAllocs()
			b.ResetTimer()
			cpu0 := cpuTime(b)
			for range b.N {
				if _, err := client.Write(req); err != nil {
					b.Fatal(err)
				}
				if _, err := io.ReadFull(client, resp); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			cpu := cpuTime(b) - cpu0
			client.Close()
			if err := <-done; err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "round-trips/s")
			b.ReportMetric(float64(cpu.Nanoseconds())/1e3/float64(b.N), "cpu-us/round-trip")
		})
	}
}
