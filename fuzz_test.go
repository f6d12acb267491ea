package hmacauth

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// The fuzz targets below cover every function that reads peer bytes. Their
// seed corpora live in testdata/fuzz/FuzzXxx; TestFuzzSeeds checks that the
// valid messages there still match the code, and rewrites the whole
// corpus with -update-fuzz-seeds.
var updateFuzzSeeds = flag.Bool("update-fuzz-seeds", false, "rewrite the seed corpora in testdata/fuzz")

var (
	fuzzKey   = testKey("fuzz-key")
	fuzzKey2  = testKey("fuzz-key-2")
	fuzzKeys  = newKeySet([]Key{fuzzKey, fuzzKey2})
	fuzzPlain = fuzzHandshake(false)
	fuzzFS    = fuzzHandshake(true)
)

// fuzzFixture is one complete handshake with fixed nonces and ephemeral
// keys: the state of each side just after it wrote its last message.
type fuzzFixture struct {
	client, server handshake
	chosen         serverHello // what the server chose
}

func (x *fuzzFixture) ch() []byte { return x.client.ch() }

func (x *fuzzFixture) sh() []byte { return x.client.sh() }

func (x *fuzzFixture) cf() []byte { return x.client.cf() }

func fixture(fs bool) *fuzzFixture {
	if fs {
		return fuzzFS
	}
	return fuzzPlain
}

func fuzzHandshake(fs bool) *fuzzFixture {
	p := hsParams{fs: fs}
	sched := fuzzKeys.byID[fuzzKey.ID]
	x := &fuzzFixture{
		client: handshake{rand: rand.NewChaCha8(seedOf("client"))},
		server: handshake{rand: rand.NewChaCha8(seedOf("server"))},
	}
	c, s := &x.client, &x.server
	must := func(err error) {
		if err != nil {
			panic(err)
		}
	}
	must(c.writeClientHello(sched, p))
	copy(s.ch(), c.ch())
	ch, sks, err := s.readClientHello(fuzzKeys)
	must(err)
	x.chosen, err = s.writeServerHello(sks, ch, hsParams{})
	must(err)
	copy(c.sh(), s.sh())
	csh, err := c.readServerHello(sched, p)
	must(err)
	_, err = c.writeClientFinished(sched, csh)
	must(err)
	copy(s.cf(), c.cf())
	_, err = s.readClientFinished(sks, x.chosen)
	must(err)
	c.rand, s.rand = nil, nil
	return x
}

// checkRefusal fails unless err is one of the refusals a peer can cause.
func checkRefusal(t *testing.T, err error, allowed ...error) {
	t.Helper()
	for _, s := range allowed {
		if errors.Is(err, s) {
			return
		}
	}
	t.Fatalf("error %v wraps none of %v", err, allowed)
}

func FuzzParseClientHello(f *testing.F) {
	f.Add(fuzzPlain.ch())
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := parseClientHello(data)
		if err != nil {
			checkRefusal(t, err, ErrProtocol)
		} else {
			if len(data) != clientHelloLen || m.mode > modeMax || checkKeyID(m.keyID) != nil {
				t.Fatalf("accepted a ClientHello of %d bytes with mode %d and key ID %q", len(data), m.mode, m.keyID)
			}
			if !bytes.Equal(data[headerLen+3:headerLen+3+len(m.keyID)], []byte(m.keyID)) {
				t.Fatal("parsed key ID differs from the bytes")
			}
		}
		if len(data) != clientHelloLen {
			return
		}
		var h handshake
		copy(h.ch(), data)
		m, sched, err := h.readClientHello(fuzzKeys)
		if err != nil {
			checkRefusal(t, err, ErrProtocol, ErrAuthFailed)
			if sched != nil {
				t.Fatal("key schedule returned with an error")
			}
			return
		}
		// Only the holder of a key can make a ClientHello that passes:
		// the corpus's valid ones.
		if !bytes.Equal(data, fuzzPlain.ch()) && !bytes.Equal(data, fuzzFS.ch()) && !bytes.Equal(data, seedHello2()) {
			t.Fatalf("accepted a ClientHello no key holder made: %x", data)
		}
		if sched.id != m.keyID {
			t.Fatalf("key %q found for key ID %q", sched.id, m.keyID)
		}
	})
}

// seedHello2 is a valid ClientHello for the second fuzz key.
func seedHello2() []byte { return validClientHello(fuzzKey2, "second") }

func FuzzParseServerHello(f *testing.F) {
	f.Add(false, fuzzPlain.sh())
	f.Add(true, fuzzFS.sh())
	f.Fuzz(func(t *testing.T, fs bool, data []byte) {
		m, err := parseServerHello(data)
		if err != nil {
			checkRefusal(t, err, ErrProtocol)
		} else if len(data) != serverHelloLen || len(m.nonce) != nonceLen || len(m.share) != shareLen || len(m.mac) != macLen {
			t.Fatalf("accepted a ServerHello of %d bytes as %+v", len(data), m)
		}
		if len(data) != serverHelloLen {
			return
		}
		x := fixture(fs)
		h := x.client // the client just after its ClientHello
		copy(h.sh(), data)
		if _, err := h.readServerHello(fuzzKeys.byID[fuzzKey.ID], hsParams{fs: fs}); err != nil {
			checkRefusal(t, err, ErrProtocol, ErrAuthFailed)
			return
		}
		if !bytes.Equal(data, x.sh()) {
			t.Fatalf("accepted a ServerHello the server did not make: %x", data)
		}
	})
}

func FuzzParseClientFinished(f *testing.F) {
	f.Add(false, fuzzPlain.cf())
	f.Add(true, fuzzFS.cf())
	f.Fuzz(func(t *testing.T, fs bool, data []byte) {
		m, err := parseClientFinished(data)
		if err != nil {
			checkRefusal(t, err, ErrProtocol)
		} else if len(data) != clientFinishedLen || data[0] != msgClientFinished || len(m.share) != shareLen || len(m.mac) != macLen {
			t.Fatalf("accepted a ClientFinished of %d bytes as %+v", len(data), m)
		}
		if len(data) != clientFinishedLen {
			return
		}
		x := fixture(fs)
		h := x.server // the server just after its ServerHello
		copy(h.cf(), data)
		dh, err := h.readClientFinished(fuzzKeys.byID[fuzzKey.ID], x.chosen)
		if err != nil {
			checkRefusal(t, err, ErrProtocol, ErrAuthFailed)
			return
		}
		if !bytes.Equal(data, x.cf()) {
			t.Fatalf("accepted a ClientFinished the client did not make: %x", data)
		}
		if fs != (dh != nil) {
			t.Fatalf("forward secrecy %v but DH secret %x", fs, dh)
		}
	})
}

// FuzzServerHandshake feeds arbitrary bytes, as a client, to a real
// Listener over loopback TCP, then half-closes. Loopback rather than
// net.Pipe: it runs the production path (accept engine, deadlines, TCP
// half-close and resets), and at a few thousand connections a second it is
// fast enough for fuzzing.
func FuzzServerHandshake(f *testing.F) {
	var mu sync.Mutex
	waiting := map[string]chan HandshakeEvent{}
	cfg := &Config{
		Keys:               []Key{fuzzKey, fuzzKey2},
		HandshakeTimeout:   waitLimit,
		MaxHandshakesPerIP: -1,
		OnHandshake: func(ev HandshakeEvent) {
			mu.Lock()
			defer mu.Unlock()
			if ch := waiting[ev.RemoteAddr.String()]; ch != nil {
				ch <- ev
			}
		},
	}
	l, err := Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		f.Fatal(err)
	}
	acceptDone := make(chan struct{})
	go func() {
		defer close(acceptDone)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close() // unreachable unless a handshake succeeded, which fails below
		}
	}()
	f.Cleanup(func() { l.Close(); <-acceptDone })

	f.Add(fuzzPlain.ch())
	f.Add(append(bytes.Clone(fuzzPlain.ch()), fuzzPlain.cf()...))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := net.Dial("tcp", l.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		events := make(chan HandshakeEvent, 1)
		mu.Lock()
		waiting[c.LocalAddr().String()] = events
		mu.Unlock()
		defer func() {
			mu.Lock()
			delete(waiting, c.LocalAddr().String())
			mu.Unlock()
		}()

		c.Write(data) // fails if the server refused early; that is fine
		c.(*net.TCPConn).CloseWrite()
		c.SetReadDeadline(time.Now().Add(waitLimit))
		reply, _ := io.ReadAll(c) // a reset after a refusal is fine too

		var ev HandshakeEvent
		select {
		case ev = <-events:
		case <-time.After(waitLimit):
			t.Fatal("no handshake event")
		}
		if ev.Err == nil {
			t.Fatalf("authenticated a client that sent %x", data)
		}
		checkRefusal(t, ev.Err, ErrProtocol, ErrAuthFailed)
		// The server says nothing to a client without a key; to a valid
		// ClientHello it answers with its ServerHello only.
		var h handshake
		copy(h.ch(), data)
		_, _, helloErr := h.readClientHello(fuzzKeys)
		switch {
		case len(data) >= clientHelloLen && helloErr == nil:
			if len(reply) != serverHelloLen {
				t.Fatalf("the server answered a valid ClientHello with %d bytes", len(reply))
			}
		case len(reply) != 0:
			t.Fatalf("the server sent %q to a client without a key", reply)
		}
	})
}

// fuzzSeeds returns the committed seed corpus of each fuzz target: valid
// messages, truncations, other protocols, and single-field corruptions.
func fuzzSeeds(t *testing.T) map[string]map[string][]any {
	http := []byte("GET / HTTP/1.1\r\nHost: example.com\r\nUser-Agent: curl/8.5.0\r\nAccept: */*\r\n\r\n")
	http400 := []byte("HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n400 Bad Request")
	ssh := []byte("SSH-2.0-OpenSSH_9.6p1 Ubuntu-3ubuntu13\r\n")
	tlsHello := tlsClientHello(t)
	with := func(b []byte, off int, v byte) []byte {
		b = bytes.Clone(b)
		b[off] = v
		return b
	}
	ch := fuzzPlain.ch()
	chSeeds := map[string][]any{
		"valid":               {ch},
		"valid_fs":            {fuzzFS.ch()},
		"valid_key2":          {seedHello2()},
		"valid_extra_byte":    {append(bytes.Clone(ch), 0)},
		"stranger_key":        {validClientHello(testKey("stranger"), "seed")},
		"http_request":        {http},
		randomSeed:            {tlsHello},
		"ssh_banner":          {ssh},
		"version_2":           {with(ch, len(magic), 2)},
		"server_hello_type":   {with(ch, len(magic)+1, msgServerHello)},
		"mode_3":              {with(ch, headerLen, 3)},
		"mode_255":            {with(ch, headerLen, 255)},
		"unknown_flags":       {with(ch, headerLen+1, 0x80)},
		"key_id_len_0":        {with(ch, headerLen+2, 0)},
		"key_id_len_65":       {with(ch, headerLen+2, MaxKeyIDLen+1)},
		"key_id_len_255":      {with(ch, headerLen+2, 255)},
		"key_id_len_64":       {with(ch, headerLen+2, MaxKeyIDLen)},
		"key_id_space":        {with(ch, headerLen+3, ' ')},
		"key_id_padding":      {with(ch, headerLen+3+MaxKeyIDLen-1, 1)},
		"flipped_mac":         {with(ch, clientHelloLen-1, ch[clientHelloLen-1]^1)},
		"all_zero":            {make([]byte, clientHelloLen)},
		"magic_only_at_len":   {append([]byte(magic), make([]byte, clientHelloLen-len(magic))...)},
		"server_hello_as_ch":  {fuzzPlain.sh()},
		"client_finished":     {fuzzPlain.cf()},
		"pad_141_http":        {append(bytes.Clone(http), make([]byte, clientHelloLen-len(http))...)},
		"truncated_header":    {ch[:headerLen]},
		"truncated_last_byte": {ch[:clientHelloLen-1]},
	}
	for _, n := range []int{0, 1, 9, 12, 76} {
		chSeeds[fmt.Sprintf("truncated_%d", n)] = []any{ch[:n]}
	}

	shSeeds := map[string][]any{}
	cfSeeds := map[string][]any{}
	for _, fs := range []bool{false, true} {
		x := fixture(fs)
		sfx := map[bool]string{false: "", true: "_fs"}[fs]
		sh, cf := x.sh(), x.cf()
		shSeeds["valid"+sfx] = []any{fs, sh}
		shSeeds["other_fs_setting"+sfx] = []any{!fs, sh}
		shSeeds["flipped_mac"+sfx] = []any{fs, with(sh, serverHelloLen-1, sh[serverHelloLen-1]^1)}
		shSeeds["flipped_share"+sfx] = []any{fs, with(sh, headerLen+2+nonceLen, sh[headerLen+2+nonceLen]^1)}
		shSeeds["mode_1"+sfx] = []any{fs, with(sh, headerLen, 1)}
		shSeeds["flags_0x80"+sfx] = []any{fs, with(sh, headerLen+1, 0x80)}
		shSeeds["truncated"+sfx] = []any{fs, sh[:serverHelloLen-1]}
		cfSeeds["valid"+sfx] = []any{fs, cf}
		cfSeeds["other_fs_setting"+sfx] = []any{!fs, cf}
		cfSeeds["flipped_mac"+sfx] = []any{fs, with(cf, clientFinishedLen-1, cf[clientFinishedLen-1]^1)}
		cfSeeds["flipped_share"+sfx] = []any{fs, with(cf, 1, cf[1]^1)}
		cfSeeds["type_0"+sfx] = []any{fs, with(cf, 0, 0)}
		cfSeeds["truncated"+sfx] = []any{fs, cf[:clientFinishedLen-1]}
	}
	shSeeds["version_2"] = []any{false, with(fuzzPlain.sh(), len(magic), 2)}
	shSeeds["client_hello_echoed"] = []any{false, ch}
	shSeeds["http_400"] = []any{false, http400}
	shSeeds["http_400_at_len"] = []any{false, append(bytes.Clone(http400), bytes.Repeat([]byte("!"), serverHelloLen-len(http400))...)}
	shSeeds["ssh_banner"] = []any{false, ssh}
	shSeeds["all_zero"] = []any{true, make([]byte, serverHelloLen)}
	shSeeds["empty"] = []any{false, []byte{}}
	cfSeeds["all_zero"] = []any{false, make([]byte, clientFinishedLen)}
	cfSeeds["zero_share_fs"] = []any{true, append([]byte{msgClientFinished}, make([]byte, clientFinishedLen-1)...)}
	cfSeeds["http"] = []any{false, http[:clientFinishedLen]}
	cfSeeds["empty"] = []any{false, []byte{}}

	full := append(bytes.Clone(ch), fuzzPlain.cf()...)
	hsSeeds := map[string][]any{
		"valid_hello":             {ch},
		"valid_hello_fs":          {fuzzFS.ch()},
		"recorded_handshake":      {full},
		"recorded_handshake_data": {append(bytes.Clone(full), "GET / HTTP/1.1\r\n\r\n"...)},
		"hello_then_garbage":      {append(bytes.Clone(ch), bytes.Repeat([]byte{0xff}, clientFinishedLen)...)},
		"stranger_key":            {validClientHello(testKey("stranger"), "seed")},
		"http_request":            {http},
		randomSeed:                {tlsHello},
		"ssh_banner":              {ssh},
		"version_2":               {with(ch, len(magic), 2)},
		"key_id_len_255":          {with(ch, headerLen+2, 255)},
		"mode_3":                  {with(ch, headerLen, 3)},
		"empty":                   {[]byte{}},
		"one_byte":                {ch[:1]},
		"header_only":             {ch[:headerLen]},
		"truncated_hello":         {ch[:clientHelloLen-1]},
	}
	return map[string]map[string][]any{
		"FuzzParseClientHello":    chSeeds,
		"FuzzParseServerHello":    shSeeds,
		"FuzzParseClientFinished": cfSeeds,
		"FuzzServerHandshake":     hsSeeds,
	}
}

// randomSeed names the seed whose bytes differ on every run.
const randomSeed = "tls_client_hello"

// marshalSeed encodes values in the "go test fuzz v1" corpus format.
func marshalSeed(vals []any) []byte {
	var b strings.Builder
	b.WriteString("go test fuzz v1\n")
	for _, v := range vals {
		switch v := v.(type) {
		case []byte:
			fmt.Fprintf(&b, "[]byte(%q)\n", v)
		case bool:
			fmt.Fprintf(&b, "bool(%v)\n", v)
		default:
			panic(fmt.Sprintf("unsupported seed value %T", v))
		}
	}
	return []byte(b.String())
}

// TestFuzzSeeds checks that the committed corpora hold every seed, byte
// for byte: a protocol change that makes the valid messages stale fails
// here. Run with -update-fuzz-seeds to rewrite them.
func TestFuzzSeeds(t *testing.T) {
	t.Parallel()
	for target, seeds := range fuzzSeeds(t) {
		dir := filepath.Join("testdata", "fuzz", target)
		if *updateFuzzSeeds {
			os.RemoveAll(dir)
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		for name, vals := range seeds {
			path := filepath.Join(dir, name)
			want := marshalSeed(vals)
			if *updateFuzzSeeds {
				if err := os.WriteFile(path, want, 0o644); err != nil {
					t.Fatal(err)
				}
				continue
			}
			got, err := os.ReadFile(path)
			if name == randomSeed && err == nil {
				// crypto/tls randomizes every ClientHello: check the kind.
				if !bytes.HasPrefix(got, []byte("go test fuzz v1\n[]byte(\"\\x16\\x03")) {
					t.Errorf("%s does not hold a TLS ClientHello", path)
				}
				continue
			}
			if err != nil || !bytes.Equal(got, want) {
				t.Errorf("%s is missing or stale (%v); run go test -run TestFuzzSeeds -update-fuzz-seeds", path, err)
			}
		}
	}
}

// FuzzRecordRead feeds arbitrary bytes to the server's record reader. It
// must never panic, never buffer more than one maximum record, and end in
// io.EOF (a close record), ErrIntegrity or ErrProtocol.
func FuzzRecordRead(f *testing.F) {
	for _, mode := range []byte{0, 1, 2, 3, 1 | 4<<2, 16 << 2} {
		m, chacha, _ := fuzzModeByte(mode)
		f.Add(append([]byte{mode}, sealRecords(m, chacha, 0, true, []byte("hello"), []byte("world"))...))
		f.Add(append([]byte{mode}, sealRecords(m, chacha, 5, true, []byte("key"), []byte("update"), []byte("!"))...))
		f.Add(append([]byte{mode}, sealRecords(m, chacha, 0, false, bytes.Repeat([]byte("x"), 3000))...))
	}
	f.Add([]byte{1, recordData, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) == 0 {
			return
		}
		mode, chacha, chunk := fuzzModeByte(in[0])
		mc := &memConn{r: bytes.NewReader(in[1:]), chunk: chunk}
		c := recordConn(mc, mode, chacha, false)
		buf := make([]byte, 1000)
		total := 0
		var err error
		for i := 0; i <= len(in); i++ { // each Read consumes at least a byte
			var n int
			n, err = c.Read(buf)
			total += n
			if err != nil {
				break
			}
		}
		if err != io.EOF && !errors.Is(err, ErrIntegrity) && !errors.Is(err, ErrProtocol) {
			t.Fatalf("Read ended with %v", err)
		}
		if total > len(in) {
			t.Fatalf("delivered %d bytes from %d", total, len(in))
		}
		if len(c.rl.in.buf) > recordOverhead+maxRecordPayload {
			t.Fatalf("read buffer grew to %d bytes", len(c.rl.in.buf))
		}
	})
}

// FuzzRecordRoundTrip checks that whatever is written, in any split and
// record size, is read back intact, with key updates on the way.
func FuzzRecordRoundTrip(f *testing.F) {
	f.Add(byte(0), uint16(1), uint16(7), []byte("hello, world"))
	f.Add(byte(1), uint16(100), uint16(0), bytes.Repeat([]byte{0}, 5000))
	f.Add(byte(3), uint16(1), uint16(1), []byte("ab"))
	f.Fuzz(func(t *testing.T, mb byte, recordSize, updateAt uint16, data []byte) {
		mode, chacha, chunk := fuzzModeByte(mb)
		wc := &memConn{}
		w := recordConn(wc, mode, chacha, true)
		w.rl.testingOnlyRecordSize = max(int(recordSize), 1)
		if updateAt > 0 {
			w.rl.testingOnlyKeyUpdateBytes = uint64(updateAt)
		}
		if n, err := w.Write(data); n != len(data) || err != nil {
			t.Fatalf("Write = %d, %v", n, err)
		}
		if err := w.rl.shutdown(time.Time{}); err != nil {
			t.Fatal(err)
		}
		rc := &memConn{r: bytes.NewReader(wc.w.Bytes()), chunk: chunk}
		r := recordConn(rc, mode, chacha, false)
		got, err := io.ReadAll(r)
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("read back %d bytes, %v; want %d bytes", len(got), err, len(data))
		}
		if r.rl.in.gen != w.rl.out.gen {
			t.Fatalf("reader at key generation %d, writer at %d", r.rl.in.gen, w.rl.out.gen)
		}
	})
}

// fuzzModeByte decodes the first input byte: mode, AEAD, read chunk size.
func fuzzModeByte(b byte) (mode Mode, chacha bool, chunk int) {
	mode = ModeIntegrity
	if b&1 != 0 {
		mode = ModeSealed
	}
	return mode, b&2 != 0, int(b >> 2) // chunk 0: as much as fits
}
