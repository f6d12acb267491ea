package hmacauth

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
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
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/chacha20poly1305"
)

// TestModeNegotiation checks that both sides report the stronger mode and
// the same forward secrecy and AEAD, whichever side asks, and that data
// flows in the mode they agreed on.
func TestModeNegotiation(t *testing.T) {
	t.Parallel()
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
	t.Parallel()
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
	t.Parallel()
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
	t.Parallel()
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
	t.Parallel()
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
	t.Parallel()
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
	t.Parallel()
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
	t.Parallel()
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
		c.rl.testingOnlyKeyUpdateBytes = 10
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
	t.Parallel()
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
	t.Parallel()
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
	t.Parallel()
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
	t.Parallel()
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
	t.Parallel()
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

// TestReadAfterClose checks that Read after Close fails with net.ErrClosed
// in every mode, even with received plaintext not yet delivered: Close has
// given the receive buffer back for reuse.
func TestReadAfterClose(t *testing.T) {
	t.Parallel()
	for _, mode := range allModes {
		t.Run(mode.String(), func(t *testing.T) {
			c, s := connPair(t, pairOptions{mode: mode})
			defer c.Close()
			if _, err := c.Write([]byte("abc")); err != nil {
				t.Fatal(err)
			}
			var b [1]byte
			if _, err := io.ReadFull(s, b[:]); err != nil {
				t.Fatal(err)
			}
			s.Close()
			for range 2 {
				if n, err := s.Read(b[:]); n != 0 || !errors.Is(err, net.ErrClosed) {
					t.Fatalf("Read after Close = %d, %v; want 0 and net.ErrClosed", n, err)
				}
			}
			if _, err := s.WriteTo(io.Discard); !errors.Is(err, net.ErrClosed) {
				t.Fatalf("WriteTo after Close = %v; want net.ErrClosed", err)
			}
		})
		// Once the peer's close has been read (io.EOF), Close still
		// turns later reads into net.ErrClosed, as on a net.TCPConn.
		t.Run(mode.String()+"/after-EOF", func(t *testing.T) {
			c, s := connPair(t, pairOptions{mode: mode})
			c.Close()
			var b [1]byte
			if n, err := s.Read(b[:]); n != 0 || err != io.EOF {
				t.Fatalf("Read of a closed peer = %d, %v; want 0 and io.EOF", n, err)
			}
			s.Close()
			if n, err := s.Read(b[:]); n != 0 || !errors.Is(err, net.ErrClosed) {
				t.Fatalf("Read after EOF and Close = %d, %v; want 0 and net.ErrClosed", n, err)
			}
		})
	}
}

// TestCloseDuringReads closes connections while other goroutines read from
// them, so that the race detector sees any use of a receive buffer after
// Close gave it back for reuse; the buffers given back go at once to the
// next connections, whose data is checked.
func TestCloseDuringReads(t *testing.T) {
	t.Parallel()
	for _, mode := range []Mode{ModeIntegrity, ModeSealed} {
		t.Run(mode.String(), func(t *testing.T) {
			for i := range 20 {
				c, s := connPair(t, pairOptions{mode: mode})
				msg := []byte{byte(i), 1, 2, 3}
				got := make(chan []byte, 1)
				go func() {
					var all []byte
					buf := make([]byte, 64)
					for {
						n, err := s.Read(buf)
						all = append(all, buf[:n]...)
						if err != nil {
							got <- all
							return
						}
					}
				}()
				if _, err := c.Write(msg); err != nil {
					t.Fatal(err)
				}
				early := i%2 == 0
				if early {
					s.Close() // while the reader may be in Read
				}
				c.Close()
				all := <-got
				s.Close()
				if !bytes.HasPrefix(msg, all) || !early && len(all) != len(msg) {
					t.Fatalf("connection %d: read %x, want %x", i, all, msg)
				}
			}
		})
	}
}

// checkSecretsCleared fails unless Close has overwritten c's session
// secret (whose bytes were session, taken before Close) and both
// directions' traffic secrets and IVs with zeros. Nothing may hold the
// locks any more.
func checkSecretsCleared(t *testing.T, c *Conn, session []byte) {
	t.Helper()
	if !isZero(session) {
		t.Errorf("the session secret was not cleared: %d non-zero bytes left", len(session)-bytes.Count(session, []byte{0}))
	}
	c.secretMu.Lock()
	if c.res.secret != nil {
		t.Error("the Conn still holds a session secret")
	}
	c.secretMu.Unlock()
	if c.rl == nil {
		return
	}
	for _, hc := range []*halfConn{&c.rl.in, &c.rl.out} {
		hc.mu.Lock()
		if !isZero(hc.secret[:]) || !isZero(hc.iv[:]) || hc.aead != nil {
			t.Errorf("a traffic secret, IV or AEAD was not cleared: secret zero %v, IV zero %v, AEAD dropped %v", isZero(hc.secret[:]), isZero(hc.iv[:]), hc.aead == nil)
		}
		hc.mu.Unlock()
	}
}

// TestCloseClearsSecrets checks that Close overwrites the session secret
// and the traffic secrets with zeros, in every mode, on an idle connection
// and on one with a Read and a Write in progress on other goroutines (the
// race detector checks that clearing does not race with them); that a
// ConnectionState taken before Close keeps its exporter, and one taken
// after fails with net.ErrClosed; and that Read and Write fail after it.
func TestCloseClearsSecrets(t *testing.T) {
	t.Parallel()
	for _, mode := range allModes {
		for _, busy := range []bool{false, true} {
			t.Run(fmt.Sprintf("%v/busy=%v", mode, busy), func(t *testing.T) {
				c, s := connPair(t, pairOptions{mode: mode})
				defer c.Close()
				session := s.res.secret // the bytes Close must clear
				before := s.ConnectionState()
				want, err := before.ExportKeyingMaterial("test", nil, 32)
				if err != nil {
					t.Fatal(err)
				}
				var done sync.WaitGroup
				if busy {
					// A Read that waits for data that never comes, and
					// Writes that fill the socket buffers of a peer that
					// does not read: both are blocked when Close runs.
					wrote := make(chan struct{})
					done.Add(2)
					go func() {
						defer done.Done()
						buf := make([]byte, 100)
						for {
							if _, err := s.Read(buf); err != nil {
								return
							}
						}
					}()
					go func() {
						defer done.Done()
						chunk := make([]byte, 64<<10)
						for i := 0; ; i++ {
							if _, err := s.Write(chunk); err != nil {
								if i == 0 {
									close(wrote)
								}
								return
							}
							if i == 0 {
								close(wrote)
							}
						}
					}()
					<-wrote
				}
				s.Close()
				done.Wait()
				checkSecretsCleared(t, s, session)
				got, err := before.ExportKeyingMaterial("test", nil, 32)
				if err != nil || !bytes.Equal(got, want) {
					t.Errorf("a ConnectionState taken before Close exports %x, %v; want %x", got, err, want)
				}
				if _, err := s.ConnectionState().ExportKeyingMaterial("test", nil, 32); !errors.Is(err, net.ErrClosed) || !errors.Is(err, ErrExport) {
					t.Errorf("exporter of a ConnectionState taken after Close: %v, want ErrExport and net.ErrClosed", err)
				}
				if _, err := s.Write([]byte("x")); err == nil {
					t.Error("Write after Close succeeded")
				}
				if _, err := s.Read(make([]byte, 1)); err == nil {
					t.Error("Read after Close succeeded")
				}
			})
		}
	}
}

// afterFinishedConn is a client's connection that calls after right
// after the ClientFinished has gone out: a Close or CloseRead of its Conn
// then runs while the handshake is still in progress, yet the handshake
// succeeds. It keeps the *net.TCPConn's half-close, which CloseRead needs.
type afterFinishedConn struct {
	*net.TCPConn
	after func()
}

func (w *afterFinishedConn) Write(b []byte) (int, error) {
	n, err := w.TCPConn.Write(b)
	if len(b) == clientFinishedLen {
		w.after()
	}
	return n, err
}

// TestCloseDuringHandshakeClearsSecrets checks that a Close that runs while
// the handshake is in progress, which leaves the secrets to the
// handshake, still has them cleared once the handshake completes.
func TestCloseDuringHandshakeClearsSecrets(t *testing.T) {
	t.Parallel()
	for _, mode := range allModes {
		t.Run(mode.String(), func(t *testing.T) {
			rc, rs := pipeTCP(t)
			cfg := &Config{Keys: []Key{recordTestKey()}, Mode: mode}
			scfg := &Config{Keys: []Key{recordTestKey()}, Mode: mode} // one Config refuses its own dial
			w := &afterFinishedConn{TCPConn: rc}
			c, s := Client(w, cfg), Server(rs, scfg)
			w.after = func() { c.Close() }
			defer s.Close()
			cerr, serr := handshakeBoth(c, s)
			if cerr != nil || serr != nil {
				t.Fatalf("handshake: client %v, server %v", cerr, serr)
			}
			if !c.closed.Load() {
				t.Fatal("Close did not run during the handshake")
			}
			checkSecretsCleared(t, c, nil) // the bytes are checked through c.res.secret being dropped
		})
	}
}

// TestCloseReadDuringHandshake checks that a CloseRead that runs before the
// record layer is installed still reaches it: a Read then reports
// net.ErrClosed, not a stream cut by an attacker.
func TestCloseReadDuringHandshake(t *testing.T) {
	t.Parallel()
	for _, mode := range []Mode{ModeIntegrity, ModeSealed} {
		t.Run(mode.String(), func(t *testing.T) {
			rc, rs := pipeTCP(t)
			cfg := &Config{Keys: []Key{recordTestKey()}, Mode: mode}
			scfg := &Config{Keys: []Key{recordTestKey()}, Mode: mode}
			w := &afterFinishedConn{TCPConn: rc}
			c, s := Client(w, cfg), Server(rs, scfg)
			w.after = func() { c.CloseRead() }
			defer c.Close()
			defer s.Close()
			if cerr, serr := handshakeBoth(c, s); cerr != nil || serr != nil {
				t.Fatalf("handshake: client %v, server %v", cerr, serr)
			}
			c.SetReadDeadline(time.Now().Add(waitLimit))
			if _, err := c.Read(make([]byte, 1)); !errors.Is(err, net.ErrClosed) || errors.Is(err, ErrIntegrity) {
				t.Fatalf("Read after CloseRead = %v, want net.ErrClosed", err)
			}
		})
	}
}

// TestCloseHonorsWriteDeadline checks that a write deadline set on the Conn
// bounds the close record Close sends, when it comes before Close's own
// bound: one already past makes Close give up on it at once.
func TestCloseHonorsWriteDeadline(t *testing.T) {
	t.Parallel()
	for _, mode := range []Mode{ModeIntegrity, ModeSealed} {
		t.Run(mode.String(), func(t *testing.T) {
			c, s := connPair(t, pairOptions{mode: mode})
			defer s.Close()
			c.SetWriteDeadline(time.Now().Add(-time.Second))
			if err := c.Close(); !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatalf("Close after the write deadline passed = %v, want os.ErrDeadlineExceeded", err)
			}
		})
	}
}

// testRecordWriter builds records as PROTOCOL.md section 9 describes them,
// with its own code rather than the record layer's, and sends them on the
// raw connection under a Conn: it can send what the Go sender never does,
// such as empty data records and key updates in a row.
type testRecordWriter struct {
	t      testing.TB
	c      *Conn
	sealed bool
	chacha bool
	secret []byte // the current traffic secret
	aead   cipher.AEAD
	iv     []byte
	seq    uint64
}

// newTestRecordWriter returns a writer for c's sending direction, which must
// not have sent a record yet.
func newTestRecordWriter(t testing.TB, c *Conn) *testRecordWriter {
	label := "s2c traffic"
	if c.isClient {
		label = "c2s traffic"
	}
	w := &testRecordWriter{
		t:      t,
		c:      c,
		sealed: c.res.mode == ModeSealed,
		chacha: c.res.flags&flagChaCha20 != 0,
		secret: expandLabel(c.res.secret, label, 32),
	}
	w.keys()
	return w
}

func (w *testRecordWriter) keys() {
	key := expandLabel(w.secret, "key", 32)
	w.iv = expandLabel(w.secret, "iv", 12)
	w.seq = 0
	var err error
	if w.chacha {
		w.aead, err = chacha20poly1305.New(key)
	} else {
		var b cipher.Block
		if b, err = aes.NewCipher(key); err == nil {
			w.aead, err = cipher.NewGCM(b)
		}
	}
	if err != nil {
		w.t.Fatal(err)
	}
}

// send writes one record of type typ; after a key update it moves to the
// next generation.
func (w *testRecordWriter) send(typ byte, payload []byte) {
	n := len(payload)
	header := []byte{typ, byte(n >> 16), byte(n >> 8), byte(n)}
	nonce := append([]byte(nil), w.iv...)
	for i := range 8 {
		nonce[4+i] ^= byte(w.seq >> (56 - 8*i))
	}
	var rec []byte
	if w.sealed {
		rec = w.aead.Seal(append([]byte(nil), header...), nonce, payload, header)
	} else {
		ad := append(append([]byte(nil), header...), payload...)
		rec = w.aead.Seal(append([]byte(nil), ad...), nonce, nil, ad)
	}
	if _, err := w.c.conn.Write(rec); err != nil {
		w.t.Fatal(err)
	}
	w.seq++
	if typ == recordKeyUpdate {
		w.secret = expandLabel(w.secret, "traffic update", 32)
		w.keys()
	}
}

// TestUselessRecordFlood sends records without application data (empty
// data records, key updates) over loopback with the test's own record
// writer: up to 16 in a row are accepted, as crypto/tls accepts 16
// useless records; the 17th is refused with ErrProtocol, since each
// authenticated (only a holder of the key can send them) and the peer,
// not the network, is at fault.
func TestUselessRecordFlood(t *testing.T) {
	type step struct {
		typ byte
		n   int
	}
	cases := []struct {
		name  string
		steps []step
		fail  bool
	}{
		{"16 empty data records", []step{{recordData, 16}}, false},
		{"16 key updates", []step{{recordKeyUpdate, 16}}, false},
		{"16 mixed", []step{{recordData, 8}, {recordKeyUpdate, 8}}, false},
		{"17 empty data records", []step{{recordData, 17}}, true},
		{"17 key updates", []step{{recordKeyUpdate, 17}}, true},
		{"17 mixed", []step{{recordKeyUpdate, 9}, {recordData, 8}}, true},
	}
	for _, mode := range []Mode{ModeIntegrity, ModeSealed} {
		for _, chacha := range []bool{false, true} {
			for _, tc := range cases {
				t.Run(fmt.Sprintf("%v/chacha=%v/%s", mode, chacha, tc.name), func(t *testing.T) {
					c, s := connPair(t, pairOptions{mode: mode, chacha: chacha})
					defer c.Close()
					defer s.Close()
					s.SetReadDeadline(time.Now().Add(time.Minute)) // a bound, not a synchronisation
					w := newTestRecordWriter(t, c)
					// Data resets the count: the flood starts after it.
					w.send(recordData, []byte("a"))
					for _, st := range tc.steps {
						for range st.n {
							w.send(st.typ, nil)
						}
					}
					w.send(recordData, []byte("b"))
					buf := make([]byte, 8)
					got, err := io.ReadAtLeast(s, buf, 2)
					if !tc.fail {
						if err != nil || string(buf[:got]) != "ab" {
							t.Fatalf("Read = %q, %v; want \"ab\"", buf[:got], err)
						}
						return
					}
					if !errors.Is(err, ErrProtocol) || errors.Is(err, ErrIntegrity) {
						t.Fatalf("Read = %q, %v; want ErrProtocol", buf[:got], err)
					}
					if string(buf[:got]) != "a" {
						t.Errorf("delivered %q before the flood, want \"a\"", buf[:got])
					}
					if _, err2 := s.Read(buf); err2 != err {
						t.Errorf("the error is not sticky: then %v, now %v", err, err2)
					}
				})
			}
		}
	}
}

// recordTypes splits wire into records and returns their types.
func recordTypes(t *testing.T, wire []byte) []byte {
	t.Helper()
	var types []byte
	for len(wire) > 0 {
		if len(wire) < recordOverhead {
			t.Fatalf("%d bytes left, not a record", len(wire))
		}
		n := int(wire[1])<<16 | int(wire[2])<<8 | int(wire[3])
		types = append(types, wire[0])
		wire = wire[recordOverhead+n:]
	}
	return types
}

// TestKeyUpdateBoundaries checks the sender's rule of PROTOCOL.md 9.4
// exactly: before a data or close record, and only then, it sends a key
// update if the current generation has protected updateAt payload bytes or
// more, or 2^48 records or more; so the last data record may take the
// generation past updateAt bytes, and the key update is the generation's
// record 2^48 (sequence number 2^48), after which the next generation
// starts at 0. A receiver in the same state reads it all.
func TestKeyUpdateBoundaries(t *testing.T) {
	t.Parallel()
	t.Run("bytes", func(t *testing.T) {
		mc := &memConn{}
		c := recordConn(mc, ModeSealed, false, true)
		c.rl.testingOnlyKeyUpdateBytes = 10
		for _, p := range []string{"123456789", "abcde", "z"} { // 9 < 10, 14 >= 10
			if _, err := c.Write([]byte(p)); err != nil {
				t.Fatal(err)
			}
		}
		c.CloseWrite()
		want := []byte{recordData, recordData, recordKeyUpdate, recordData, recordClose}
		if got := recordTypes(t, mc.w.Bytes()); string(got) != string(want) {
			t.Fatalf("record types %v, want %v", got, want)
		}
		r := recordConn(&memConn{r: bytes.NewReader(mc.w.Bytes())}, ModeSealed, false, false)
		if got, err := io.ReadAll(r); err != nil || string(got) != "123456789abcdez" {
			t.Fatalf("the receiver read %q, %v", got, err)
		}
	})
	t.Run("records", func(t *testing.T) {
		mc := &memConn{}
		c := recordConn(mc, ModeIntegrity, true, true)
		c.rl.out.seq = keyUpdateRecords - 1
		for _, p := range []string{"last", "first"} {
			if _, err := c.Write([]byte(p)); err != nil {
				t.Fatal(err)
			}
		}
		if c.rl.out.gen != 1 || c.rl.out.seq != 1 {
			t.Errorf("sender at generation %d, seq %d; want 1, 1", c.rl.out.gen, c.rl.out.seq)
		}
		want := []byte{recordData, recordKeyUpdate, recordData}
		if got := recordTypes(t, mc.w.Bytes()); string(got) != string(want) {
			t.Fatalf("record types %v, want %v", got, want)
		}
		r := recordConn(&memConn{r: bytes.NewReader(mc.w.Bytes())}, ModeIntegrity, true, false)
		r.rl.in.seq = keyUpdateRecords - 1 // the receiver does not enforce the limit
		buf := make([]byte, 9)
		if n, err := io.ReadAtLeast(r, buf, 9); err != nil || string(buf[:n]) != "lastfirst" {
			t.Fatalf("the receiver read %q, %v", buf[:n], err)
		}
		if r.rl.in.gen != 1 || r.rl.in.seq != 1 {
			t.Errorf("receiver at generation %d, seq %d; want 1, 1", r.rl.in.gen, r.rl.in.seq)
		}
	})
}

// TestResetCountsAsClose checks that a TCP reset during the handshake is
// classified as a close (PROTOCOL.md 7.1 and 7.2) by both sides.
func TestResetCountsAsClose(t *testing.T) {
	t.Parallel()
	cfg := &Config{Keys: []Key{protoKey()}}
	t.Run("server resets before a byte", func(t *testing.T) {
		err := rawPeer(t, true, cfg, func(raw *net.TCPConn) {
			io.ReadFull(raw, make([]byte, clientHelloLen))
			reset(raw)
		})
		mustBe(t, err, ErrAuthFailed)
	})
	t.Run("server resets after the header", func(t *testing.T) {
		err := rawPeer(t, true, cfg, func(raw *net.TCPConn) {
			io.ReadFull(raw, make([]byte, clientHelloLen))
			raw.Write(rawServerHello(deriveKeySchedule(protoKey()), nil, msgServerHello, 0, 0, false)[:headerLen+5])
			reset(raw)
		})
		mustBe(t, err, ErrProtocol)
	})
	t.Run("client resets inside the ClientHello", func(t *testing.T) {
		err := rawPeer(t, false, cfg, func(raw *net.TCPConn) {
			raw.Write(validClientHello(protoKey(), "reset")[:50])
			reset(raw)
		})
		mustBe(t, err, ErrProtocol)
	})
	t.Run("client resets instead of its ClientFinished", func(t *testing.T) {
		err := rawPeer(t, false, cfg, func(raw *net.TCPConn) {
			raw.Write(validClientHello(protoKey(), "reset"))
			io.ReadFull(raw, make([]byte, serverHelloLen))
			reset(raw)
		})
		mustBe(t, err, ErrAuthFailed)
	})
}

// TestRecordResetIsNotEOF checks PROTOCOL.md 9.3 on a reset in a record
// mode: Read reports the reset itself, then, as the stream has ended
// without a close record, an integrity failure; never io.EOF.
func TestRecordResetIsNotEOF(t *testing.T) {
	t.Parallel()
	for _, mode := range []Mode{ModeIntegrity, ModeSealed} {
		t.Run(mode.String(), func(t *testing.T) {
			c, s := connPair(t, pairOptions{mode: mode})
			defer s.Close()
			reset(c.conn.(*net.TCPConn))
			b := make([]byte, 10)
			if _, err := s.Read(b); !errors.Is(err, syscall.ECONNRESET) {
				t.Fatalf("Read after a reset: %v, want ECONNRESET", err)
			}
			_, err := s.Read(b)
			mustBe(t, err, ErrIntegrity)
			mustBe(t, err, io.ErrUnexpectedEOF)
		})
	}
}

// TestRecordHeaderAcrossBufferEnd is a regression test: a record header
// that starts two bytes before the end of the read buffer once made the
// reader spin on zero-length reads.
func TestRecordHeaderAcrossBufferEnd(t *testing.T) {
	t.Parallel()
	first := bytes.Repeat([]byte{'a'}, initialReadBuffer-2-2*recordOverhead-1)
	wire := sealRecords(ModeSealed, false, 0, true, first, []byte("b"), []byte("tail"))
	mc := &memConn{r: bytes.NewReader(wire)}
	c := recordConn(mc, ModeSealed, false, false)
	got, err := io.ReadAll(c)
	if want := string(first) + "btail"; err != nil || string(got) != want {
		t.Fatalf("ReadAll = %d bytes, %v; want %d bytes", len(got), err, len(want))
	}
}

// TestMITMRecordAttacks checks that every manipulation of the record stream
// by an on-path attacker ends the receiver's Read in ErrIntegrity, and that
// exactly the records before the manipulated one were delivered: never a
// byte of wrong data.
func TestMITMRecordAttacks(t *testing.T) {
	t.Parallel()
	const k = 3 // the record attacked
	garbage := []byte("GET / HTTP/1.1\r\nHost: attacker\r\n\r\n")
	forged := append([]byte{recordData, 0, 0, 5}, []byte("evil!0123456789abcdef")...)
	attacks := []struct {
		name string
		f    func([]byte) ([][]byte, bool)
		want int // messages delivered before the error
	}{
		{"flip type", flipBit(0), k},
		{"flip length", flipBit(3), k},
		{"flip payload", flipBit(recordHeaderLen + 2), k},
		{"flip tag", flipBit(-1), k},
		{"drop", func([]byte) ([][]byte, bool) { return nil, false }, k},
		{"duplicate", func(r []byte) ([][]byte, bool) { return [][]byte{r, r}, false }, k + 1},
		{"inject garbage", func(r []byte) ([][]byte, bool) { return [][]byte{garbage, r}, false }, k},
		{"inject forged record", func(r []byte) ([][]byte, bool) { return [][]byte{forged, r}, false }, k},
		{"inject a record prefix", func(r []byte) ([][]byte, bool) { return [][]byte{r[:recordOverhead], r}, false }, k},
		{"truncate at record boundary", func([]byte) ([][]byte, bool) { return nil, true }, k},
		{"truncate mid-record", func(r []byte) ([][]byte, bool) { return [][]byte{r[:len(r)/2]}, true }, k},
	}
	// Reordering needs two records at once.
	var held []byte
	reorder := func(_ *mitm, dir, i int, rec []byte) ([][]byte, bool) {
		switch {
		case dir == c2s && i == k:
			held = rec
			return nil, false
		case dir == c2s && i == k+1:
			return [][]byte{rec, held}, false
		}
		return [][]byte{rec}, false
	}
	for _, mode := range []Mode{ModeIntegrity, ModeSealed} {
		for _, a := range attacks {
			t.Run(mode.String()+"/"+a.name, func(t *testing.T) {
				got, err := runAttack(t, mode, &mitm{rec: onRecord(c2s, k, a.f)}, pairOptions{})
				checkAttack(t, got, err, a.want)
			})
		}
		t.Run(mode.String()+"/reorder", func(t *testing.T) {
			got, err := runAttack(t, mode, &mitm{rec: reorder}, pairOptions{})
			checkAttack(t, got, err, k)
		})
	}
}

func checkAttack(t *testing.T, got []byte, err error, want int) {
	t.Helper()
	if !errors.Is(err, ErrIntegrity) {
		t.Errorf("Read ended with %v, want ErrIntegrity", err)
	}
	if w := firstMessages(want); !bytes.Equal(got, w) {
		t.Errorf("server read %d bytes, want the %d bytes of the first %d records", len(got), len(w), want)
	}
}

// TestMITMTruncationIsNotEOF checks that a cut stream wraps
// io.ErrUnexpectedEOF as well as ErrIntegrity, so it is never mistaken for
// the peer's clean end.
func TestMITMTruncationIsNotEOF(t *testing.T) {
	t.Parallel()
	cut := onRecord(c2s, 2, func([]byte) ([][]byte, bool) { return nil, true })
	_, err := runAttack(t, ModeSealed, &mitm{rec: cut}, pairOptions{})
	if !errors.Is(err, ErrIntegrity) || !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("Read ended with %v, want ErrIntegrity and io.ErrUnexpectedEOF", err)
	}
}

// TestMITMErrorIsSticky checks that after a failed record, later Reads fail
// too, even though valid records follow on the wire.
func TestMITMErrorIsSticky(t *testing.T) {
	t.Parallel()
	m := &mitm{rec: onRecord(c2s, 0, flipBit(recordHeaderLen))}
	c, s := connPair(t, pairOptions{mode: ModeIntegrity, through: func(t testing.TB, a string) string { return startMITM(t, a, m) }})
	defer c.Close()
	defer s.Close()
	wrote := make(chan struct{})
	go func() {
		defer close(wrote)
		c.Write([]byte("tampered"))
		c.Write([]byte("valid on its own"))
	}()
	defer func() { <-wrote }()
	buf := make([]byte, 64)
	for i := range 3 {
		n, err := s.Read(buf)
		if n != 0 || !errors.Is(err, ErrIntegrity) {
			t.Fatalf("Read %d = %d, %v; want 0, ErrIntegrity", i, n, err)
		}
	}
}

// TestMITMDropKeyUpdate drops the first key update record: the records
// after it are under a key the receiver does not have yet.
func TestMITMDropKeyUpdate(t *testing.T) {
	t.Parallel()
	var dropped atomic.Bool
	m := &mitm{rec: func(_ *mitm, dir, i int, rec []byte) ([][]byte, bool) {
		if dir == c2s && rec[0] == recordKeyUpdate && !dropped.Load() {
			dropped.Store(true)
			return nil, false
		}
		return [][]byte{rec}, false
	}}
	got, err := runAttack(t, ModeSealed, m, pairOptions{updateAt: 300})
	if !dropped.Load() {
		t.Fatal("no key update record went through the proxy")
	}
	if !errors.Is(err, ErrIntegrity) {
		t.Fatalf("Read ended with %v, want ErrIntegrity", err)
	}
	if !bytes.HasPrefix(firstMessages(attackMessages), got) || len(got) == 0 {
		t.Fatalf("server read %d bytes, want a non-empty prefix of what was sent", len(got))
	}
}

// TestMITMAuthModeIsOpen shows what ModeAuth does not protect: bytes an
// on-path attacker injects after the handshake reach the application
// unnoticed. (It also shows that the proxy really can inject.)
func TestMITMAuthModeIsOpen(t *testing.T) {
	t.Parallel()
	m := &mitm{}
	c, s := connPair(t, pairOptions{mode: ModeAuth, through: func(t testing.TB, a string) string { return startMITM(t, a, m) }})
	defer c.Close()
	defer s.Close()
	if err := m.send(c2s, []byte("injected")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 8)
	if _, err := io.ReadFull(s, buf); err != nil || string(buf) != "injected" {
		t.Fatalf("ModeAuth server read %q, %v; want the injected bytes", buf, err)
	}
}

// TestSealedHidesPlaintext sends a known pattern both ways and checks it
// never appears on the wire in ModeSealed, while it does in ModeIntegrity.
func TestSealedHidesPlaintext(t *testing.T) {
	t.Parallel()
	pattern := []byte("KNOWN-PLAINTEXT-PATTERN-0123456789")
	payload := bytes.Repeat(pattern, 3000)
	for _, mode := range []Mode{ModeIntegrity, ModeSealed} {
		for _, chacha := range []bool{false, true} {
			t.Run(fmt.Sprintf("%v/chacha=%v", mode, chacha), func(t *testing.T) {
				m := &mitm{}
				c, s := connPair(t, pairOptions{mode: mode, chacha: chacha, through: func(t testing.TB, a string) string { return startMITM(t, a, m) }})
				defer c.Close()
				defer s.Close()
				for _, p := range [][2]*Conn{{c, s}, {s, c}} {
					errc := make(chan error, 1)
					go func() {
						_, err := p[0].Write(payload)
						if err == nil {
							err = p[0].CloseWrite()
						}
						errc <- err
					}()
					got, err := io.ReadAll(p[1])
					if err != nil || !bytes.Equal(got, payload) {
						t.Fatalf("read %d bytes, %v", len(got), err)
					}
					if err := <-errc; err != nil {
						t.Fatal(err)
					}
				}
				for dir, name := range []string{"client to server", "server to client"} {
					wire := m.wireBytes(dir)
					if len(wire) < len(payload) {
						t.Fatalf("%s: the proxy saw %d bytes, fewer than were sent", name, len(wire))
					}
					seen := bytes.Contains(wire, pattern)
					if seen != (mode == ModeIntegrity) {
						t.Errorf("%s in %v: pattern on the wire = %v", name, mode, seen)
					}
				}
			})
		}
	}
}

// onRecord returns a rec function that applies f to record i of
// direction dir and passes every other record on.
func onRecord(dir, i int, f func(rec []byte) ([][]byte, bool)) func(*mitm, int, int, []byte) ([][]byte, bool) {
	return func(_ *mitm, d, j int, rec []byte) ([][]byte, bool) {
		if d == dir && j == i {
			return f(rec)
		}
		return [][]byte{rec}, false
	}
}

func flipBit(off int) func([]byte) ([][]byte, bool) {
	return func(rec []byte) ([][]byte, bool) {
		if off < 0 {
			off += len(rec)
		}
		rec[off] ^= 0x10
		return [][]byte{rec}, false
	}
}

const attackMessages = 8

func attackMessage(k int) []byte {
	return fmt.Appendf(nil, "message %d: %s", k, bytes.Repeat([]byte{'a' + byte(k)}, 100+k))
}

// runAttack sends attackMessages records from the client, one per Write,
// through m, and returns what the server's Read delivered and the error
// it ended with.
func runAttack(t *testing.T, mode Mode, m *mitm, o pairOptions) ([]byte, error) {
	t.Helper()
	o.mode = mode
	o.through = func(t testing.TB, addr string) string { return startMITM(t, addr, m) }
	c, s := connPair(t, o)
	defer s.Close()
	defer c.Close()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for k := range attackMessages {
			if _, err := c.Write(attackMessage(k)); err != nil {
				return
			}
		}
	}()
	// A guard against a hang, not a timed assertion: every attack ends
	// the server's Read long before.
	s.SetReadDeadline(time.Now().Add(20 * time.Second))
	got, err := io.ReadAll(s)
	s.Close()
	<-done
	return got, err
}

// firstMessages is what the server may have read before record k failed.
func firstMessages(k int) []byte {
	var b []byte
	for i := range k {
		b = append(b, attackMessage(i)...)
	}
	return b
}
