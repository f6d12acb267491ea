package hmacauth

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

var allModes = []Mode{ModeAuth, ModeIntegrity, ModeSealed}

func recordTestKey() Key {
	return Key{ID: "records", Secret: bytes.Repeat([]byte{0x5a}, MinSecretLen)}
}

// pairOptions shapes the connections connPair makes.
type pairOptions struct {
	mode       Mode
	fs         bool
	chacha     bool                                         // the client acts as if it had no AES hardware
	recordSize int                                          // 0: default
	updateAt   uint64                                       // 0: default
	through    func(t testing.TB, serverAddr string) string // a proxy in between
}

// connPair returns a client and a server Conn over real loopback TCP, with
// their handshakes done. With a proxy, the client dials the proxy.
func connPair(t testing.TB, o pairOptions) (client, server *Conn) {
	t.Helper()
	cc, sc, cerr, serr := connPairErr(t, o)
	if cerr != nil || serr != nil {
		t.Fatalf("handshake: client: %v; server: %v", cerr, serr)
	}
	return cc, sc
}

func connPairErr(t testing.TB, o pairOptions) (client, server *Conn, cerr, serr error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	cfg := &Config{Keys: []Key{recordTestKey()}, Mode: o.mode, ForwardSecrecy: o.fs}
	addr := ln.Addr().String()
	if o.through != nil {
		addr = o.through(t, addr)
	}
	accepted := make(chan net.Conn, 1)
	go func() {
		raw, _ := ln.Accept() // nil after an error
		accepted <- raw
	}()
	raw, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	rs := <-accepted
	if rs == nil {
		raw.Close()
		t.Fatal("accept failed")
	}
	client, server = Client(raw, cfg), Server(rs, &Config{Keys: cfg.Keys})
	client.testingOnlyNoAES = o.chacha
	client.testingOnlyRecordSize, client.testingOnlyKeyUpdateBytes = o.recordSize, o.updateAt
	server.testingOnlyRecordSize, server.testingOnlyKeyUpdateBytes = o.recordSize, o.updateAt
	cerr, serr = handshakeBoth(client, server)
	if serr != nil {
		client.Close()
	}
	return client, server, cerr, serr
}

// TestModeNegotiation checks that both sides report the stronger mode and
// the same forward secrecy and AEAD, whichever side asks, and that data
// flows in the mode they agreed on.
func TestModeNegotiation(t *testing.T) {
	keys := []Key{recordTestKey()}
	for _, cm := range allModes {
		for _, sm := range allModes {
			for _, fs := range []string{"none", "client", "server"} {
				t.Run(fmt.Sprintf("client=%v/server=%v/fs=%s", cm, sm, fs), func(t *testing.T) {
					ccfg := &Config{Keys: keys, Mode: cm, ForwardSecrecy: fs == "client"}
					scfg := &Config{Keys: keys, Mode: sm, ForwardSecrecy: fs == "server"}
					c, s, cerr, serr := handshakePair(t, ccfg, scfg)
					if cerr != nil || serr != nil {
						t.Fatalf("handshake: client %v, server %v", cerr, serr)
					}
					cs, ss := c.ConnectionState(), s.ConnectionState()
					want := max(cm, sm)
					if cs.Mode != want || ss.Mode != want {
						t.Errorf("modes: client %v, server %v, want %v", cs.Mode, ss.Mode, want)
					}
					if wantFS := fs != "none"; cs.ForwardSecrecy != wantFS || ss.ForwardSecrecy != wantFS {
						t.Errorf("forward secrecy: client %v, server %v, want %v", cs.ForwardSecrecy, ss.ForwardSecrecy, wantFS)
					}
					if cf, sf := c.res.flags&flagChaCha20, s.res.flags&flagChaCha20; cf != sf {
						t.Errorf("AEAD: client chacha=%v, server chacha=%v", cf != 0, sf != 0)
					}
					if want > ModeAuth && c.rl.chacha != s.rl.chacha {
						t.Errorf("record layers: client chacha=%v, server chacha=%v", c.rl.chacha, s.rl.chacha)
					}
					ce, err1 := cs.ExportKeyingMaterial("test", nil, 32)
					se, err2 := ss.ExportKeyingMaterial("test", nil, 32)
					if err1 != nil || err2 != nil || !bytes.Equal(ce, se) {
						t.Errorf("exporters differ: %x, %v / %x, %v", ce, err1, se, err2)
					}
					exchange(t, c, s, []byte("hello over "+want.String()))
				})
			}
		}
	}
}

// exchange sends msg each way and checks it arrives.
func exchange(t *testing.T, a, b *Conn, msg []byte) {
	t.Helper()
	for _, p := range [][2]*Conn{{a, b}, {b, a}} {
		errc := make(chan error, 1)
		go func() { _, err := p[0].Write(msg); errc <- err }()
		got := make([]byte, len(msg))
		if _, err := io.ReadFull(p[1], got); err != nil {
			t.Fatalf("read: %v", err)
		}
		if err := <-errc; err != nil {
			t.Fatalf("write: %v", err)
		}
		if !bytes.Equal(got, msg) {
			t.Fatalf("got %q, want %q", got, msg)
		}
	}
}

// TestChaCha20Negotiated checks that a client without AES hardware gets
// ChaCha20-Poly1305 records on both sides, and that they work.
func TestChaCha20Negotiated(t *testing.T) {
	for _, mode := range []Mode{ModeIntegrity, ModeSealed} {
		t.Run(mode.String(), func(t *testing.T) {
			c, s := connPair(t, pairOptions{mode: mode, chacha: true})
			defer c.Close()
			defer s.Close()
			if !c.rl.chacha || !s.rl.chacha {
				t.Fatalf("chacha: client %v, server %v; want both", c.rl.chacha, s.rl.chacha)
			}
			transfer(t, c, s, 1<<20, 3<<19)
		})
	}
}

// transfer sends n1 random bytes from a to b and n2 from b to a at the same
// time, each side half-closing when done, and compares SHA-256 sums. Each
// reader must end with io.EOF (the close record), not an error.
func transfer(t *testing.T, a, b *Conn, n1, n2 int64) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	send := func(c *Conn, n int64, seed uint64, sum *[32]byte) {
		defer wg.Done()
		h := sha256.New()
		r := io.TeeReader(io.LimitReader(rand.NewChaCha8([32]byte{byte(seed)}), n), h)
		// Odd-sized writes so records do not line up with anything.
		buf := make([]byte, 100_003)
		if _, err := io.CopyBuffer(struct{ io.Writer }{c}, struct{ io.Reader }{r}, buf); err != nil {
			errs <- fmt.Errorf("write: %w", err)
			return
		}
		if err := c.CloseWrite(); err != nil {
			errs <- fmt.Errorf("CloseWrite: %w", err)
		}
		h.Sum(sum[:0])
	}
	recv := func(c *Conn, n int64, sum *[32]byte) {
		defer wg.Done()
		h := sha256.New()
		got, err := io.Copy(h, struct{ io.Reader }{c})
		if err != nil {
			errs <- fmt.Errorf("read: %w", err)
			return
		}
		if got != n {
			errs <- fmt.Errorf("read %d bytes, want %d", got, n)
		}
		h.Sum(sum[:0])
	}
	var s1, r1, s2, r2 [32]byte
	wg.Add(4)
	go send(a, n1, 1, &s1)
	go recv(b, n1, &r1)
	go send(b, n2, 2, &s2)
	go recv(a, n2, &r2)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if s1 != r1 || s2 != r2 {
		t.Errorf("checksums differ: a->b %x / %x, b->a %x / %x", s1, r1, s2, r2)
	}
}

// TestLargeTransfer moves several MiB both ways at once in every mode, with
// and without forward secrecy and with both AEADs, and half-closes.
func TestLargeTransfer(t *testing.T) {
	for _, mode := range allModes {
		for _, o := range []pairOptions{{}, {fs: true}, {chacha: true}} {
			o.mode = mode
			t.Run(fmt.Sprintf("%v/fs=%v/chacha=%v", mode, o.fs, o.chacha), func(t *testing.T) {
				c, s := connPair(t, o)
				defer c.Close()
				defer s.Close()
				transfer(t, c, s, 8<<20+123, 5<<20+7)
			})
		}
	}
}

// TestReadFromWriteTo checks the copy paths (io.Copy between a Conn and
// a plain connection) in every mode.
func TestReadFromWriteTo(t *testing.T) {
	for _, mode := range allModes {
		t.Run(mode.String(), func(t *testing.T) {
			c, s := connPair(t, pairOptions{mode: mode})
			defer c.Close()
			defer s.Close()
			want := make([]byte, 3<<20+5)
			rand.NewChaCha8([32]byte{7}).Read(want)
			errc := make(chan error, 1)
			go func() {
				_, err := c.ReadFrom(bytes.NewReader(want))
				if err == nil {
					err = c.CloseWrite()
				}
				errc <- err
			}()
			var got bytes.Buffer
			if _, err := s.WriteTo(&got); err != nil {
				t.Fatalf("WriteTo: %v", err)
			}
			if err := <-errc; err != nil {
				t.Fatalf("ReadFrom: %v", err)
			}
			if !bytes.Equal(got.Bytes(), want) {
				t.Fatalf("got %d bytes, want %d, or different bytes", got.Len(), len(want))
			}
		})
	}
}

// TestReadFromBufferSize checks that ReadFrom sizes its buffer by what the
// source delivers: a short copy never allocates a whole record, a bulk copy
// still sends full-size records (the receiver's buffer grows to one).
func TestReadFromBufferSize(t *testing.T) {
	for _, mode := range []Mode{ModeIntegrity, ModeSealed} {
		t.Run(mode.String(), func(t *testing.T) {
			c, s := connPair(t, pairOptions{mode: mode})
			defer c.Close()
			defer s.Close()
			copyOnce := func(want []byte) {
				t.Helper()
				errc := make(chan error, 1)
				go func() {
					_, err := c.ReadFrom(bytes.NewReader(want))
					errc <- err
				}()
				got := make([]byte, len(want))
				if _, err := io.ReadFull(s, got); err != nil {
					t.Fatalf("reading %d bytes: %v", len(want), err)
				}
				if err := <-errc; err != nil {
					t.Fatalf("ReadFrom: %v", err)
				}
				if !bytes.Equal(got, want) {
					t.Fatalf("%d bytes arrived altered", len(want))
				}
			}
			copyOnce([]byte{'x'})
			if n := len(c.rl.out.buf); n > recordOverhead+initialCopyBuffer {
				t.Fatalf("a 1-byte ReadFrom left a %d-byte send buffer, want at most %d", n, recordOverhead+initialCopyBuffer)
			}
			bulk := make([]byte, 4*maxRecordPayload)
			rand.NewChaCha8([32]byte{3}).Read(bulk)
			copyOnce(bulk)
			if n, want := len(c.rl.out.buf), recordOverhead+maxRecordPayload; n != want {
				t.Fatalf("after a bulk ReadFrom the send buffer is %d bytes, want a full record's %d", n, want)
			}
			if n, want := len(s.rl.in.buf), recordOverhead+maxRecordPayload; n < want {
				t.Fatalf("after a bulk ReadFrom the receiver's buffer is %d bytes: no full-size record arrived (want %d)", n, want)
			}
		})
	}
}

// TestKeyUpdate lowers the key update limit so that a transfer runs through
// many keys in each direction, with records of several sizes.
func TestKeyUpdate(t *testing.T) {
	for _, mode := range []Mode{ModeIntegrity, ModeSealed} {
		for _, chacha := range []bool{false, true} {
			t.Run(fmt.Sprintf("%v/chacha=%v", mode, chacha), func(t *testing.T) {
				c, s := connPair(t, pairOptions{mode: mode, chacha: chacha, recordSize: 4096, updateAt: 10_000})
				defer c.Close()
				defer s.Close()
				transfer(t, c, s, 1<<20, 1<<19)
				// 1 MiB in records of at most 4 KiB, a key update
				// every 10,000 bytes (at most 3 records).
				if min(c.rl.out.gen, s.rl.in.gen) < 1<<20/(10_000+4096) {
					t.Errorf("client sent %d key updates, server saw %d; want about %d", c.rl.out.gen, s.rl.in.gen, 1<<20/10_000)
				}
				if c.rl.out.gen != s.rl.in.gen || s.rl.out.gen != c.rl.in.gen {
					t.Errorf("key generations differ: c->s %d/%d, s->c %d/%d", c.rl.out.gen, s.rl.in.gen, s.rl.out.gen, c.rl.in.gen)
				}
			})
		}
	}
}

// TestCleanCloseIsEOF checks that Close sends the close record: the peer
// reads everything, then io.EOF, in every mode.
func TestCleanCloseIsEOF(t *testing.T) {
	for _, mode := range allModes {
		t.Run(mode.String(), func(t *testing.T) {
			c, s := connPair(t, pairOptions{mode: mode})
			defer s.Close()
			if _, err := c.Write([]byte("last words")); err != nil {
				t.Fatal(err)
			}
			if err := c.Close(); err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(s)
			if err != nil || string(got) != "last words" {
				t.Fatalf("ReadAll = %q, %v; want %q, nil", got, err, "last words")
			}
		})
	}
}

// TestWriteAfterCloseWrite checks that CloseWrite ends this side's stream
// only: writing fails, reading still works.
func TestWriteAfterCloseWrite(t *testing.T) {
	for _, mode := range []Mode{ModeIntegrity, ModeSealed} {
		t.Run(mode.String(), func(t *testing.T) {
			c, s := connPair(t, pairOptions{mode: mode})
			defer c.Close()
			defer s.Close()
			if err := c.CloseWrite(); err != nil {
				t.Fatal(err)
			}
			if _, err := c.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
				t.Errorf("Write after CloseWrite: %v, want net.ErrClosed", err)
			}
			if n, err := s.Read(make([]byte, 1)); n != 0 || err != io.EOF {
				t.Errorf("server Read = %d, %v; want 0, EOF", n, err)
			}
			go s.Write([]byte("reply"))
			buf := make([]byte, 5)
			if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "reply" {
				t.Errorf("client read %q, %v after CloseWrite", buf, err)
			}
		})
	}
}

// recordVector is one entry of testdata/vectors/records.json: the traffic
// keys of both directions for a session secret, and the exact bytes of a
// client's records.
type recordVector struct {
	Name          string             `json:"name"`
	Handshake     string             `json:"handshake,omitempty"` // the hmacauth1.json vector whose S this is
	Mode          int                `json:"mode"`
	Flags         int                `json:"flags"`
	SessionSecret string             `json:"session_secret"`
	C2S           []recordGeneration `json:"c2s"`
	S2C           []recordGeneration `json:"s2c"`
	Records       []vectorRecord     `json:"client_records"`
}

type recordGeneration struct {
	TrafficSecret string `json:"traffic_secret"`
	Key           string `json:"key"`
	IV            string `json:"iv"`
}

type vectorRecord struct {
	Generation int    `json:"generation"`
	Seq        int    `json:"seq"`
	Type       int    `json:"type"`
	Payload    string `json:"payload"`
	Nonce      string `json:"nonce"`
	Wire       string `json:"wire"`
}

// vectorPayloads are what the client of every record vector writes, one
// Write each; a key update falls due after the second.
var vectorPayloads = []string{"hello", "world", "again"}

// recordsAfterHandshakes are the handshake vectors (hmacauth1.json) whose
// session secret the last record vectors start from: ChaCha20-Poly1305
// negotiated by each side.
var recordsAfterHandshakes = []string{"chacha-client", "chacha-server-fs"}

// makeRecordVectors runs the record layer with a fixed session secret, and
// with the session secrets of the handshakes of recordsAfterHandshakes,
// and lists every derived value and record.
func makeRecordVectors(t *testing.T) []recordVector {
	type start struct {
		handshake string
		secret    []byte
		mode      Mode
		flags     int
	}
	fixed := bytes.Repeat([]byte{0x0b}, 32)
	var starts []start
	for _, mode := range []Mode{ModeIntegrity, ModeSealed} {
		for _, chacha := range []bool{false, true} {
			flags := 0
			if chacha {
				flags = flagChaCha20
			}
			starts = append(starts, start{"", fixed, mode, flags})
		}
	}
	for _, name := range recordsAfterHandshakes {
		hv := runVectorCase(t, findVectorCase(t, name))
		starts = append(starts, start{name, hv.Result.SessionSecret, Mode(hv.Result.Mode), hv.Result.Flags})
	}
	gens := func(ts []byte, n int) []recordGeneration {
		var out []recordGeneration
		for range n {
			out = append(out, recordGeneration{
				TrafficSecret: hex.EncodeToString(ts),
				Key:           hex.EncodeToString(expandLabel(ts, "key", 32)),
				IV:            hex.EncodeToString(expandLabel(ts, "iv", 12)),
			})
			ts = expandLabel(ts, "traffic update", 32)
		}
		return out
	}
	var vs []recordVector
	for _, st := range starts {
		secret, mode, chacha := st.secret, st.mode, st.flags&flagChaCha20 != 0
		aead := "AES-256-GCM"
		v := recordVector{
			Handshake:     st.handshake,
			Mode:          int(mode),
			Flags:         st.flags,
			SessionSecret: hex.EncodeToString(secret),
			C2S:           gens(expandLabel(secret, "c2s traffic", 32), 2),
			S2C:           gens(expandLabel(secret, "s2c traffic", 32), 1),
		}
		if chacha {
			aead = "ChaCha20-Poly1305"
		}
		v.Name = fmt.Sprintf("%v, %s", mode, aead)
		if st.handshake != "" {
			v.Name += ", after handshake " + st.handshake
		}
		mc := &memConn{}
		c := recordConnSecret(mc, mode, chacha, true, secret)
		c.rl.updateAt = 10
		for _, p := range vectorPayloads {
			c.Write([]byte(p))
		}
		c.CloseWrite() // the close record; memConn cannot half-close
		wire := mc.w.Bytes()
		gen, seq, data := 0, 0, 0
		for len(wire) > 0 {
			n := int(wire[1])<<16 | int(wire[2])<<8 | int(wire[3])
			rec := wire[:recordOverhead+n]
			wire = wire[len(rec):]
			nonce, _ := hex.DecodeString(v.C2S[gen].IV)
			nonce[11] ^= byte(seq)
			vr := vectorRecord{Generation: gen, Seq: seq, Type: int(rec[0]), Nonce: hex.EncodeToString(nonce), Wire: hex.EncodeToString(rec)}
			if rec[0] == recordData {
				vr.Payload = hex.EncodeToString([]byte(vectorPayloads[data]))
				data++
			}
			v.Records = append(v.Records, vr)
			seq++
			if rec[0] == recordKeyUpdate {
				gen, seq = gen+1, 0
			}
		}
		vs = append(vs, v)
	}
	return vs
}

// TestRecordVectors checks the record layer against
// testdata/vectors/records.json (rewritten with -update), and that a
// receiver opens the listed bytes to the listed payloads.
func TestRecordVectors(t *testing.T) {
	const path = "testdata/vectors/records.json"
	got, err := json.MarshalIndent(struct {
		About   string         `json:"about"`
		Vectors []recordVector `json:"vectors"`
	}{
		About:   "hmacauth/1 record layer (PROTOCOL.md, section 9): traffic secrets, keys and IVs per generation, and a client's records: three data records, a key update after 10 payload bytes, the close record. Byte strings are hex.",
		Vectors: makeRecordVectors(t),
	}, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	got = append(got, '\n')
	if *updateVectors {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -run TestRecordVectors -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("the record layer no longer matches %s; if the record format or key schedule changed on purpose, update PROTOCOL.md and run go test -run TestRecordVectors -update", path)
	}
	var file struct{ Vectors []recordVector }
	if err := json.Unmarshal(want, &file); err != nil {
		t.Fatal(err)
	}
	for _, v := range file.Vectors {
		var wire []byte
		for _, r := range v.Records {
			b, _ := hex.DecodeString(r.Wire)
			wire = append(wire, b...)
		}
		secret, _ := hex.DecodeString(v.SessionSecret)
		r := recordConnSecret(&memConn{r: bytes.NewReader(wire)}, Mode(v.Mode), v.Flags&flagChaCha20 != 0, false, secret)
		data, err := io.ReadAll(r)
		if want := strings.Join(vectorPayloads, ""); err != nil || string(data) != want {
			t.Errorf("%s: the receiver read %q, %v; want %q", v.Name, data, err, want)
		}
	}
}

// TestRecordVectorsPython runs check_records.py, an implementation of the
// record layer written from PROTOCOL.md, over the record vectors.
func TestRecordVectorsPython(t *testing.T) {
	py, err := exec.LookPath("python3")
	if err != nil {
		t.Skip("python3 not found: the independent check of the record vectors did not run")
	}
	cmd := exec.CommandContext(t.Context(), py, "check_records.py", "records.json")
	cmd.Dir = filepath.Join("testdata", "vectors")
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if errors.As(err, &exit) && exit.ExitCode() == 2 {
		t.Skipf("check_records.py needs the Python 'cryptography' package: %s", out)
	}
	if err != nil {
		t.Fatalf("check_records.py: %v\n%s", err, out)
	}
	t.Logf("%s", out)
}

// TestReadDeadlineMidRecord stops the reader's deadline while only half a
// record has arrived: Read times out, and once the rest arrives the next
// Read returns the whole record, not a byte lost or repeated.
func TestReadDeadlineMidRecord(t *testing.T) {
	for _, mode := range []Mode{ModeIntegrity, ModeSealed} {
		t.Run(mode.String(), func(t *testing.T) {
			halfSent, release := make(chan struct{}), make(chan struct{})
			releaseOnce := sync.OnceFunc(func() { close(release) })
			defer releaseOnce() // the proxy must not wait forever if the test fails
			m := &mitm{rec: func(m *mitm, dir, i int, rec []byte) ([][]byte, bool) {
				if dir == c2s && i == 0 {
					m.send(c2s, rec[:len(rec)/2])
					close(halfSent)
					<-release
					return [][]byte{rec[len(rec)/2:]}, false
				}
				return [][]byte{rec}, false
			}}
			c, s := connPair(t, pairOptions{mode: mode, through: func(t testing.TB, a string) string { return startMITM(t, a, m) }})
			defer c.Close()
			defer s.Close()
			msg := bytes.Repeat([]byte("resume me "), 100)
			if _, err := c.Write(msg); err != nil {
				t.Fatal(err)
			}
			<-halfSent
			buf := make([]byte, 2*len(msg))
			// Until the half record is in the Conn's buffer (at once,
			// unless the machine is very busy), each Read times out.
			for i := 0; i < 100 && s.rl.in.end == s.rl.in.start; i++ {
				s.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
				n, err := s.Read(buf)
				if n != 0 || !errors.Is(err, os.ErrDeadlineExceeded) {
					t.Fatalf("Read = %d, %v; want 0, os.ErrDeadlineExceeded", n, err)
				}
			}
			releaseOnce()
			if s.rl.in.end == s.rl.in.start {
				t.Fatal("the first half of the record never arrived: the test did not exercise a cut record")
			}
			s.SetReadDeadline(time.Time{})
			if _, err := io.ReadFull(s, buf[:len(msg)]); err != nil || !bytes.Equal(buf[:len(msg)], msg) {
				t.Fatalf("after the deadline: %v, data intact = %v", err, bytes.Equal(buf[:len(msg)], msg))
			}
		})
	}
}

// TestWriteDeadlineMidStream lets a write deadline fire while the peer does
// not read, typically in the middle of a record. Write reports how much it
// took; writing the rest afterwards must deliver the exact stream.
func TestWriteDeadlineMidStream(t *testing.T) {
	for _, mode := range []Mode{ModeIntegrity, ModeSealed} {
		t.Run(mode.String(), func(t *testing.T) {
			c, s := connPair(t, pairOptions{mode: mode})
			defer c.Close()
			defer s.Close()
			// Small socket buffers, so the deadline fires early.
			s.NetConn().(*net.TCPConn).SetReadBuffer(16 << 10)
			c.NetConn().(*net.TCPConn).SetWriteBuffer(16 << 10)
			want := make([]byte, 8<<20)
			rand.NewChaCha8([32]byte{9}).Read(want)
			c.SetWriteDeadline(time.Now().Add(20 * time.Millisecond))
			n, err := c.Write(want)
			if !errors.Is(err, os.ErrDeadlineExceeded) || n == len(want) {
				t.Fatalf("Write = %d of %d, %v; want a timeout", n, len(want), err)
			}
			t.Logf("the deadline fired after %d bytes, %d bytes of a record pending", n, c.rl.out.end-c.rl.out.start)
			got := make(chan []byte, 1)
			go func() {
				b, err := io.ReadAll(s)
				if err != nil {
					t.Errorf("server: %v", err)
				}
				got <- b
			}()
			c.SetWriteDeadline(time.Time{})
			if _, err := c.Write(want[n:]); err != nil {
				t.Fatal(err)
			}
			if err := c.CloseWrite(); err != nil {
				t.Fatal(err)
			}
			if b := <-got; !bytes.Equal(b, want) {
				t.Fatalf("server read %d bytes, want %d, or different bytes", len(b), len(want))
			}
		})
	}
}

// TestHTTPInRecordModes runs net/http through a Listener and a Dialer in
// each record mode, with a request body and a response large enough to
// span many records (net/http uses ReadFrom for the response), over
// keep-alive connections.
func TestHTTPInRecordModes(t *testing.T) {
	payload := make([]byte, 1<<20+17)
	rand.NewChaCha8([32]byte{3}).Read(payload)
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil || !bytes.Equal(body, payload[:len(body)]) {
			http.Error(w, "bad request body", http.StatusBadRequest)
			return
		}
		w.Write(payload)
	})
	for _, mode := range []Mode{ModeIntegrity, ModeSealed} {
		t.Run(mode.String(), func(t *testing.T) {
			k := testKey("web")
			scfg := configWith(k)
			scfg.Mode = mode
			l := startHTTP(t, scfg, handler)
			client := httpClient(t, configWith(k)) // the server's mode wins
			for i := range 3 {
				resp, err := client.Post("http://"+l.Addr().String()+"/", "application/octet-stream", bytes.NewReader(payload[:300_000]))
				if err != nil {
					t.Fatalf("request %d: %v", i, err)
				}
				got, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				if err != nil || resp.StatusCode != http.StatusOK || !bytes.Equal(got, payload) {
					t.Fatalf("request %d: status %d, %d bytes, %v", i, resp.StatusCode, len(got), err)
				}
			}
		})
	}
}

// cutWriteConn lets its next Write send only the first cut bytes and then
// report a timeout, as a write deadline firing mid-record would.
type cutWriteConn struct {
	net.Conn
	cut atomic.Int32 // bytes the next Write sends; -1: no cut
}

func (c *cutWriteConn) Write(b []byte) (int, error) {
	if n := int(c.cut.Swap(-1)); n >= 0 {
		k, err := c.Conn.Write(b[:min(n, len(b))])
		if err != nil {
			return k, err
		}
		return k, os.ErrDeadlineExceeded
	}
	return c.Conn.Write(b)
}

// A close record cut short by a deadline still ends the stream: a later
// Write fails with net.ErrClosed instead of sending data the peer would
// never read.
func TestWriteAfterCutCloseWrite(t *testing.T) {
	for _, cut := range []int32{0, 5} {
		t.Run(fmt.Sprintf("cut=%d", cut), func(t *testing.T) {
			k := testKey("k")
			cfg := &Config{Keys: []Key{k}, Mode: ModeSealed}
			craw, sraw := pipeTCP(t)
			cw := &cutWriteConn{Conn: craw}
			cw.cut.Store(-1)
			cc, sc := Client(cw, cfg), Server(sraw, &Config{Keys: []Key{k}, Mode: ModeSealed})
			errc := make(chan error, 1)
			go func() { errc <- sc.Handshake() }()
			if err := cc.Handshake(); err != nil {
				t.Fatal(err)
			}
			if err := <-errc; err != nil {
				t.Fatal(err)
			}
			if _, err := cc.Write([]byte("before;")); err != nil {
				t.Fatal(err)
			}
			cw.cut.Store(cut)
			if err := cc.CloseWrite(); !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatalf("CloseWrite = %v, want the cut's timeout", err)
			}
			if n, err := cc.Write([]byte("after")); !errors.Is(err, net.ErrClosed) {
				t.Fatalf("Write after a cut CloseWrite = %d, %v; want net.ErrClosed", n, err)
			}
			sc.SetReadDeadline(time.Now().Add(waitLimit))
			got, err := io.ReadAll(sc)
			if err != nil || string(got) != "before;" {
				t.Fatalf("server read %q, %v; want \"before;\" and a clean end", got, err)
			}
		})
	}
}

// After CloseRead, a Read in a record mode reports net.ErrClosed, not a
// stream cut by an attacker.
func TestReadAfterCloseRead(t *testing.T) {
	for _, mode := range []Mode{ModeIntegrity, ModeSealed} {
		t.Run(mode.String(), func(t *testing.T) {
			cfg := &Config{Keys: []Key{testKey("k")}, Mode: mode}
			_, sc, cerr, serr := handshakePair(t, cfg, &Config{Keys: cfg.Keys, Mode: mode})
			if cerr != nil || serr != nil {
				t.Fatalf("handshake: client %v, server %v", cerr, serr)
			}
			if err := sc.CloseRead(); err != nil {
				t.Fatal(err)
			}
			sc.SetReadDeadline(time.Now().Add(waitLimit))
			_, err := sc.Read(make([]byte, 1))
			if !errors.Is(err, net.ErrClosed) || errors.Is(err, ErrIntegrity) {
				t.Fatalf("Read after CloseRead = %v, want net.ErrClosed", err)
			}
		})
	}
}
