package main

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The tunnel benchmarks compare, on the same loopback target and load, an
// hmacauth client -> server chain with a spiped -e -> spiped -d chain
// (Debian's spiped; bench/tunnel.sh installs it) and with a chain of two
// plain TCP forwarders (this test binary, re-run as a forwarder process
// with the tunnel's copy path, so that every chain is two processes).
// hmacauth-auth-status is the auth chain with its status endpoints scraped
// every second.
//
//	go test -run '^$' -bench BenchmarkTunnel -benchtime 3s ./cmd/hmacauth
//
// conns: each op connects through the chain, sends 1 byte, reads it back
// from the target and closes; 8 connections at a time. Reported as conns/s.
// throughput: one connection carries b.N MiB to a target that discards
// them; reported as MB/s.
//
// Both also report the CPU time per connection or per MiB of the chain's two
// processes (chain-cpu) and of this process, which runs the clients and the
// target (load-cpu): with the two cores saturated, the rate follows their
// sum. conns also reports listen-drops, the connection requests the kernel
// dropped during the run because a listen queue was full (spiped's holds
// 10): each stalls its client for a 1 s SYN retransmission, so a short run
// with drops mostly measures that second.

// forwardEnv, when set to "LISTEN TARGET", makes the test binary a plain TCP
// forwarder (see TestMain).
const forwardEnv = "HMACAUTH_BENCH_FORWARD"

// runForwarder forwards every connection on listen to target until killed.
// It prints the listening address on stdout.
func runForwarder(spec string) {
	listenAddr, target, _ := strings.Cut(spec, " ")
	ln, err := net.Listen("tcp", listenAddr)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Println(ln.Addr())
	for {
		c, err := ln.Accept()
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		go func() {
			defer c.Close()
			up, err := net.Dial("tcp", target)
			if err != nil {
				return
			}
			defer up.Close()
			pipe(context.Background(), c, up)
		}()
	}
}

// chainPids are the processes of the chain being measured, for cpuTime.
var chainPids []int

// cpuTime returns the CPU time the chain's processes have used so far.
func cpuTime(b *testing.B) time.Duration {
	var total time.Duration
	for _, pid := range chainPids {
		total += procCPU(b, pid)
	}
	return total
}

// selfCPU returns the CPU time this process, which runs the clients and the
// target, has used so far.
func selfCPU(b *testing.B) time.Duration { return procCPU(b, os.Getpid()) }

// procCPU returns the user + system CPU time process pid has used so far.
func procCPU(b *testing.B, pid int) time.Duration {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatal(err)
	}
	// Fields after the command name: utime and stime are the 12th and
	// 13th, in clock ticks (100 per second on Linux).
	f := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+2:]))
	var total time.Duration
	for _, v := range f[11:13] {
		var ticks int64
		fmt.Sscan(v, &ticks)
		total += time.Duration(ticks) * 10 * time.Millisecond
	}
	return total
}

// listenDrops returns the kernel's count of connection requests dropped
// because a listen queue was full (TcpExt ListenDrops, all sockets of the
// machine). Each costs its client a SYN retransmission, 1 s later: a chain
// whose listener falls behind a burst of connects shows it here, and its
// conns/s then mostly measures that second.
func listenDrops(b *testing.B) int64 {
	data, err := os.ReadFile("/proc/net/netstat")
	if err != nil {
		b.Fatal(err)
	}
	var names []string
	for line := range strings.Lines(string(data)) {
		f := strings.Fields(line)
		if len(f) == 0 || f[0] != "TcpExt:" {
			continue
		}
		if names == nil {
			names = f
			continue
		}
		for i, name := range names {
			if name == "ListenDrops" && i < len(f) {
				var n int64
				fmt.Sscan(f[i], &n)
				return n
			}
		}
	}
	b.Fatal("no TcpExt ListenDrops in /proc/net/netstat")
	return 0
}

// benchProc starts a chain element and kills it at the end of the benchmark.
func benchProc(b *testing.B, cmd *exec.Cmd) *exec.Cmd {
	b.Helper()
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	chainPids = append(chainPids, cmd.Process.Pid)
	b.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	return cmd
}

// startForwarder starts a plain forwarder process to target.
func startForwarder(b *testing.B, target string) string {
	b.Helper()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), forwardEnv+"=127.0.0.1:0 "+target)
	out, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	benchProc(b, cmd)
	line := make([]byte, 64)
	n, err := out.Read(line)
	if err != nil {
		b.Fatal(err)
	}
	return strings.TrimSpace(string(line[:n]))
}

// freePort returns a loopback port that was free a moment ago, for spiped,
// which cannot listen on port 0 and report it.
func freePort(b *testing.B) int {
	b.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// waitListening polls addr until it accepts a connection.
func waitListening(b *testing.B, addr string) {
	b.Helper()
	for range 200 {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return
		}
		time.Sleep(25 * time.Millisecond)
	}
	b.Fatalf("nothing listens on %s", addr)
}

// startSpiped starts spiped -d to target and spiped -e to it, and returns
// the address of the -e end.
func startSpiped(b *testing.B, target string, fast bool) string {
	b.Helper()
	bin, err := exec.LookPath("spiped")
	if err != nil {
		b.Skip("spiped is not installed; bench/tunnel.sh installs Debian's package")
	}
	key := filepath.Join(b.TempDir(), "spiped.key")
	if err := os.WriteFile(key, []byte(formatKey(newKey(b, "spiped"))), 0o600); err != nil {
		b.Fatal(err)
	}
	th, tp, _ := net.SplitHostPort(target)
	dAddr := fmt.Sprintf("127.0.0.1:%d", freePort(b))
	eAddr := fmt.Sprintf("127.0.0.1:%d", freePort(b))
	brackets := func(a string) string { h, p, _ := net.SplitHostPort(a); return "[" + h + "]:" + p }
	args := func(dir, src, dst string) []string {
		a := []string{dir, "-F", "-s", brackets(src), "-t", dst, "-k", key}
		if fast {
			a = append(a, "-f")
		}
		return a
	}
	benchProc(b, exec.Command(bin, args("-d", dAddr, "["+th+"]:"+tp)...))
	waitListening(b, dAddr)
	benchProc(b, exec.Command(bin, args("-e", eAddr, brackets(dAddr))...))
	waitListening(b, eAddr)
	return eAddr
}

// startHmacauth starts an hmacauth server to target and a client to it with
// flags, and returns the client's address.
func startHmacauth(b *testing.B, target string, flags ...string) string {
	b.Helper()
	if raceEnabled {
		b.Skip("benchmarks need a binary built without -race")
	}
	flags = append(flags, "-log-level", "info")
	p := startPair(b, target, flags, flags)
	chainPids = append(chainPids, p.server.cmd.Process.Pid, p.client.cmd.Process.Pid)
	return p.client.addr
}

// startHmacauthScraped starts an auth-mode pair as startHmacauth does, with
// -status on both ends, and fetches /metrics and /_status of both every
// second until the benchmark ends, as a Prometheus server and a health
// probe would: the figures then include what serving them costs.
func startHmacauthScraped(b *testing.B, target string) string {
	b.Helper()
	if raceEnabled {
		b.Skip("benchmarks need a binary built without -race")
	}
	st := []string{fmt.Sprintf("127.0.0.1:%d", freePort(b)), fmt.Sprintf("127.0.0.1:%d", freePort(b))}
	p := startPair(b, target, []string{"-log-level", "info", "-status", st[0]}, []string{"-log-level", "info", "-status", st[1]})
	chainPids = append(chainPids, p.server.cmd.Process.Pid, p.client.cmd.Process.Pid)
	client := &http.Client{Timeout: bound, Transport: &http.Transport{DisableKeepAlives: true}}
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			for _, addr := range st {
				for _, path := range []string{"/metrics", "/_status"} {
					if resp, err := client.Get("http://" + addr + path); err == nil {
						io.Copy(io.Discard, resp.Body)
						resp.Body.Close()
					}
				}
			}
			select {
			case <-stop:
				return
			case <-tick.C:
			}
		}
	}()
	b.Cleanup(func() { close(stop); <-done })
	return p.client.addr
}

// oneByteEcho answers the first byte and closes, so that the TIME_WAIT
// state stays on the target's side.
func oneByteEcho(c net.Conn) {
	b := make([]byte, 1)
	if _, err := io.ReadFull(c, b); err == nil {
		c.Write(b)
	}
}

// sink reads to the end of stream and answers with the byte count. It
// reads 1 MiB at a time (io.Discard would read 8 KiB at a time), so that
// the target is not what limits the throughput measured.
func sink(c net.Conn) {
	buf := make([]byte, 1<<20)
	var total int64
	for {
		n, err := c.Read(buf)
		total += int64(n)
		if err == io.EOF {
			binary.Write(c, binary.BigEndian, total)
			return
		}
		if err != nil {
			return
		}
	}
}

type chain struct {
	name  string
	start func(b *testing.B, target string) string
}

var chains = []chain{
	{"plain", func(b *testing.B, target string) string { return startForwarder(b, startForwarder(b, target)) }},
	{"spiped", func(b *testing.B, target string) string { return startSpiped(b, target, false) }},
	{"spiped-f", func(b *testing.B, target string) string { return startSpiped(b, target, true) }},
	{"hmacauth-auth", func(b *testing.B, target string) string { return startHmacauth(b, target) }},
	{"hmacauth-auth-status", startHmacauthScraped},
	{"hmacauth-auth-fs", func(b *testing.B, target string) string { return startHmacauth(b, target, "-fs") }},
	{"hmacauth-integrity", func(b *testing.B, target string) string {
		return startHmacauth(b, target, "-mode", "integrity")
	}},
	{"hmacauth-sealed", func(b *testing.B, target string) string { return startHmacauth(b, target, "-mode", "sealed") }},
	{"hmacauth-sealed-fs", func(b *testing.B, target string) string {
		return startHmacauth(b, target, "-mode", "sealed", "-fs")
	}},
}

func BenchmarkTunnel(b *testing.B) {
	b.Run("conns", func(b *testing.B) {
		for _, ch := range chains {
			b.Run(ch.name, func(b *testing.B) {
				chainPids = nil
				entry := ch.start(b, startTarget(b, "tcp", "127.0.0.1:0", oneByteEcho))
				checkChain(b, entry)
				// 8 clients on 2 cores: spiped listens with a queue
				// of 10, which 16 clients overflow (see listen-drops).
				b.SetParallelism(4)
				cpu0, self0, drops0 := cpuTime(b), selfCPU(b), listenDrops(b)
				b.ResetTimer()
				b.RunParallel(func(pb *testing.PB) {
					buf := make([]byte, 1)
					for pb.Next() {
						c, err := net.Dial("tcp", entry)
						if err != nil {
							b.Error(err)
							return
						}
						c.SetDeadline(time.Now().Add(bound))
						if _, err = c.Write(buf); err == nil {
							_, err = io.ReadFull(c, buf)
						}
						c.Close()
						if err != nil {
							b.Error(err)
							return
						}
					}
				})
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "conns/s")
				b.ReportMetric(float64((cpuTime(b)-cpu0).Microseconds())/float64(b.N), "chain-cpu-us/conn")
				b.ReportMetric(float64((selfCPU(b)-self0).Microseconds())/float64(b.N), "load-cpu-us/conn")
				b.ReportMetric(float64(listenDrops(b)-drops0), "listen-drops")
			})
		}
	})
	b.Run("throughput", func(b *testing.B) {
		const chunk = 1 << 20
		for _, ch := range chains {
			b.Run(ch.name, func(b *testing.B) {
				chainPids = nil
				entry := ch.start(b, startTarget(b, "tcp", "127.0.0.1:0", sink))
				checkChain(b, entry)
				cpu0, self0 := cpuTime(b), selfCPU(b)
				buf := make([]byte, chunk)
				c, err := net.Dial("tcp", entry)
				if err != nil {
					b.Fatal(err)
				}
				defer c.Close()
				b.SetBytes(chunk)
				b.ResetTimer()
				for range b.N {
					if _, err := c.Write(buf); err != nil {
						b.Fatal(err)
					}
				}
				c.(*net.TCPConn).CloseWrite()
				var n int64
				if err := binary.Read(c, binary.BigEndian, &n); err != nil || n != int64(b.N)*chunk {
					b.Fatalf("the target received %d bytes (%v), want %d", n, err, b.N*chunk)
				}
				b.ReportMetric(float64((cpuTime(b)-cpu0).Microseconds())/float64(b.N), "chain-cpu-us/MiB")
				b.ReportMetric(float64((selfCPU(b)-self0).Microseconds())/float64(b.N), "load-cpu-us/MiB")
			})
		}
	})
}

// checkChain makes one connection through entry, so that a chain that
// does not work fails the benchmark instead of measuring refusals.
func checkChain(b *testing.B, entry string) {
	b.Helper()
	c, err := net.Dial("tcp", entry)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(bound))
	io.WriteString(c, "x")
	c.(*net.TCPConn).CloseWrite()
	if _, err := c.Read(make([]byte, 8)); err != nil {
		b.Fatalf("no answer through the chain: %v", err)
	}
}
