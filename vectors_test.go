package hmacauth

import (
	"bytes"
	"crypto/hkdf"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

var updateVectors = flag.Bool("update", false, "rewrite testdata/vectors/hmacauth1.json from the implementation")

var vectorsFile = filepath.Join("testdata", "vectors", "hmacauth1.json")

// hexBytes is a byte string that is a lowercase hex string in JSON.
type hexBytes []byte

func (b hexBytes) MarshalText() ([]byte, error) { return []byte(hex.EncodeToString(b)), nil }

func (b *hexBytes) UnmarshalText(s []byte) error {
	d, err := hex.DecodeString(string(s))
	*b = d
	return err
}

// The file format; testdata/vectors/README.md describes every field.
type vectorFile struct {
	Protocol string   `json:"protocol"`
	About    string   `json:"about"`
	Vectors  []vector `json:"vectors"`
}

type vector struct {
	Name     string         `json:"name"`
	Comment  string         `json:"comment"`
	Key      vectorKey      `json:"key"`
	Client   vectorSide     `json:"client"`
	Server   vectorSide     `json:"server"`
	Derived  vectorDerived  `json:"derived"`
	Messages vectorMessages `json:"messages"`
	MACs     vectorMessages `json:"macs"`
	Result   vectorResult   `json:"result"`
	Exporter []vectorExport `json:"exporter"`
}

type vectorKey struct {
	ID     string   `json:"id"`
	Secret hexBytes `json:"secret"`
}

// vectorSide is one side's inputs (mode, forward_secrecy, aes_hardware and
// the random bytes it draws), the client's flags byte and the side's X25519
// public key.
type vectorSide struct {
	Mode           int      `json:"mode"`
	ForwardSecrecy bool     `json:"forward_secrecy"`
	AESHardware    bool     `json:"aes_hardware"`
	Flags          *int     `json:"flags,omitempty"` // the ClientHello's flags byte; client only
	Nonce          hexBytes `json:"nonce"`
	X25519Private  hexBytes `json:"x25519_private"`
	X25519Public   hexBytes `json:"x25519_public"`
}

type vectorDerived struct {
	PRK               hexBytes `json:"prk"`
	ClientHelloKey    hexBytes `json:"k_ch"`
	ServerHelloKey    hexBytes `json:"k_sf"` // K_sh; the field is named after its label, "server finished"
	ClientFinishedKey hexBytes `json:"k_cf"`
	SessionKey        hexBytes `json:"k_ses"`
}

type vectorMessages struct {
	ClientHello    hexBytes `json:"client_hello"`
	ServerHello    hexBytes `json:"server_hello"`
	ClientFinished hexBytes `json:"client_finished"`
}

type vectorResult struct {
	Mode           int      `json:"mode"`
	Flags          int      `json:"flags"`
	ForwardSecrecy bool     `json:"forward_secrecy"`
	DH             hexBytes `json:"dh"`
	TranscriptHash hexBytes `json:"transcript_hash"`
	SessionSecret  hexBytes `json:"session_secret"`
}

type vectorExport struct {
	Label          string   `json:"label"`
	Context        hexBytes `json:"context"`
	Length         int      `json:"length"`
	ExporterSecret hexBytes `json:"exporter_secret"`
	Output         hexBytes `json:"output"`
}

// vectorCase is the input of one vector: everything a handshake depends on.
type vectorCase struct {
	name, comment    string
	key              Key
	client, server   hsParams
	cNonce, cPrivate []byte // what the client draws from its random source
	sNonce, sPrivate []byte // what the server draws
}

// seq returns n bytes counting up from start, wrapping at 256.
func seq(start, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(start + i)
	}
	return b
}

var vectorCases = []vectorCase{
	{
		name:    "auth",
		comment: "ModeAuth without forward secrecy on both sides: the default configuration",
		key:     Key{ID: "vector-key-1", Secret: seq(0x00, 32)},
		client:  hsParams{mode: ModeAuth},
		server:  hsParams{mode: ModeAuth},
		cNonce:  seq(0x40, 32),
		sNonce:  seq(0x80, 32),
	},
	{
		name:    "auth-long-id",
		comment: "a 64-byte key ID (no padding) and a 100-byte secret; the server's least mode is sealed, so the connection runs at mode 2 (handshake only: records are in PROTOCOL.md section 9)",
		key:     Key{ID: strings.Repeat("0123456789abcdef", 4), Secret: seq(0x20, 100)},
		client:  hsParams{mode: ModeAuth},
		server:  hsParams{mode: ModeSealed},
		cNonce:  seq(0xa0, 32),
		sNonce:  seq(0xc0, 32),
	},
	{
		name:     "fs-client",
		comment:  "the client asks for forward secrecy, the server does not: the connection uses it",
		key:      Key{ID: "vector-key-2", Secret: seq(0x11, 32)},
		client:   hsParams{mode: ModeAuth, fs: true},
		server:   hsParams{mode: ModeAuth},
		cNonce:   seq(0x50, 32),
		cPrivate: seq(0x70, 32),
		sNonce:   seq(0x90, 32),
		sPrivate: seq(0xb0, 32),
	},
	{
		name:     "fs-server",
		comment:  "the server asks for forward secrecy, the client does not; the client's least mode is integrity, the server's auth: the connection runs at mode 1 with forward secrecy",
		key:      Key{ID: "k", Secret: seq(0xe0, 33)},
		client:   hsParams{mode: ModeIntegrity},
		server:   hsParams{mode: ModeAuth, fs: true},
		cNonce:   seq(0x01, 32),
		cPrivate: seq(0x21, 32),
		sNonce:   seq(0x41, 32),
		sPrivate: seq(0x61, 32),
	},
	{
		name:    "chacha-client",
		comment: "the client has no AES hardware and asks for ChaCha20-Poly1305 (ClientHello flags 0x02), the server has it: the connection runs at mode 2 with ChaCha20-Poly1305 records",
		key:     Key{ID: "vector-key-3", Secret: seq(0x33, 32)},
		client:  hsParams{mode: ModeSealed, chacha: true},
		server:  hsParams{mode: ModeAuth},
		cNonce:  seq(0x13, 32),
		sNonce:  seq(0x53, 32),
	},
	{
		name:     "chacha-server-fs",
		comment:  "the client has AES hardware and asks for forward secrecy (ClientHello flags 0x01), the server has no AES hardware: the connection runs at mode 1 with forward secrecy and ChaCha20-Poly1305 records (ServerHello flags 0x03)",
		key:      Key{ID: "vector-key-4", Secret: seq(0x44, 32)},
		client:   hsParams{mode: ModeIntegrity, fs: true},
		server:   hsParams{mode: ModeIntegrity, chacha: true},
		cNonce:   seq(0x24, 32),
		cPrivate: seq(0x64, 32),
		sNonce:   seq(0x84, 32),
		sPrivate: seq(0xa4, 32),
	},
}

// vectorCase returns the vector case with the given name.
func findVectorCase(t testing.TB, name string) vectorCase {
	for _, vc := range vectorCases {
		if vc.name == name {
			return vc
		}
	}
	t.Fatalf("no vector case %q", name)
	return vectorCase{}
}

var vectorExports = []struct {
	label   string
	context []byte
	length  int
}{
	{"EXPORTER-example", []byte{0x00, 0x01, 0x02, 0x03}, 32},
	{"EXPORTER-example", nil, 80},
}

// TestVectors runs the real handshake for every vector case over loopback
// TCP, with fixed random bytes, and compares every message and derived value
// with testdata/vectors/hmacauth1.json. With -update it rewrites the file.
func TestVectors(t *testing.T) {
	t.Parallel()
	f := vectorFile{
		Protocol: protocolLabel,
		About:    "hmacauth/1 test vectors; see PROTOCOL.md and testdata/vectors/README.md. All byte strings are lowercase hex.",
	}
	for _, vc := range vectorCases {
		f.Vectors = append(f.Vectors, runVectorCase(t, vc))
	}
	got, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	got = append(got, '\n')
	if *updateVectors {
		if err := os.WriteFile(vectorsFile, got, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("wrote %s", vectorsFile)
		return
	}
	want, err := os.ReadFile(vectorsFile)
	if err != nil {
		t.Fatalf("%v (run go test -run TestVectors -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("the implementation no longer matches %s (-file +code):\n%s\nIf the wire format or key schedule changed on purpose, that is a new protocol version: update PROTOCOL.md, then run go test -run TestVectors -update.",
			vectorsFile, vectorsDiff(want, f))
	}
}

// vectorsDiff describes how the vectors got differ from the file's, field
// by field, or line by line if only the file's layout differs.
func vectorsDiff(file []byte, got vectorFile) string {
	var want vectorFile
	if err := json.Unmarshal(file, &want); err != nil {
		return fmt.Sprintf("the file does not parse: %v", err)
	}
	if diff := cmp.Diff(want, got, cmpopts.EquateEmpty()); diff != "" {
		return diff
	}
	b, _ := json.MarshalIndent(got, "", "  ")
	return cmp.Diff(string(file), string(b)+"\n")
}

// afterHandshake is application data the client sends right behind its
// ClientFinished.
const afterHandshake = "application data"

// runVectorCase runs one handshake between runClient and runServer over a
// loopback TCP connection and records what it produced.
func runVectorCase(t *testing.T, vc vectorCase) vector {
	t.Helper()
	keys := newKeySet([]Key{vc.key})
	if keys.err != nil {
		t.Fatalf("%s: %v", vc.name, keys.err)
	}
	cRand := bytes.NewReader(append(append([]byte(nil), vc.cNonce...), vc.cPrivate...))
	sRand := bytes.NewReader(append(append([]byte(nil), vc.sNonce...), vc.sPrivate...))
	ch, sh := &handshake{rand: cRand}, &handshake{rand: sRand}

	c, sc := pipeTCP(t)
	type outcome struct {
		res   hsResult
		after []byte // what the server read behind the handshake
		err   error
	}
	done := make(chan outcome, 1)
	go func() {
		// A bound so that a broken handshake fails instead of hanging.
		sc.SetDeadline(time.Now().Add(time.Minute))
		res, err := sh.runServer(sc, keys, vc.server)
		after := make([]byte, len(afterHandshake))
		if err == nil {
			_, err = io.ReadFull(sc, after)
		}
		done <- outcome{res, after, err}
	}()
	c.SetDeadline(time.Now().Add(time.Minute))
	cres, cerr := ch.runClient(c, keys.first, vc.client)
	if cerr == nil {
		// The handshake must leave the bytes behind it for the
		// application: the server reads exactly the three messages.
		_, cerr = c.Write([]byte(afterHandshake))
	}
	srv := <-done
	if cerr != nil || srv.err != nil {
		t.Fatalf("%s: handshake failed: client: %v; server: %v", vc.name, cerr, srv.err)
	}
	sres := srv.res
	if string(srv.after) != afterHandshake {
		t.Errorf("%s: the server read %q behind the handshake, want %q", vc.name, srv.after, afterHandshake)
	}

	if cRand.Len() != 0 || sRand.Len() != 0 {
		t.Errorf("%s: random bytes left unread: client %d, server %d", vc.name, cRand.Len(), sRand.Len())
	}
	if ch.transcript != sh.transcript {
		t.Errorf("%s: client and server transcripts differ", vc.name)
	}
	if cres.keyID != sres.keyID || cres.mode != sres.mode || cres.flags != sres.flags || !bytes.Equal(cres.secret, sres.secret) {
		t.Errorf("%s: client and server disagree: client %+v, server %+v", vc.name, cres, sres)
	}

	sched := deriveKeySchedule(vc.key)
	prk, err := hkdf.Extract(sha256.New, vc.key.Secret, []byte(protocolLabel))
	if err != nil {
		t.Fatal(err)
	}
	th := sha256.Sum256(ch.transcript[:])
	fs := cres.flags&flagForwardSecrecy != 0
	clientFlags := int(ch.ch()[headerLen+1])
	v := vector{
		Name:    vc.name,
		Comment: vc.comment,
		Key:     vectorKey{ID: vc.key.ID, Secret: vc.key.Secret},
		Client:  vectorSide{Mode: int(vc.client.mode), ForwardSecrecy: vc.client.fs, AESHardware: !vc.client.chacha, Flags: &clientFlags, Nonce: vc.cNonce},
		Server:  vectorSide{Mode: int(vc.server.mode), ForwardSecrecy: vc.server.fs, AESHardware: !vc.server.chacha, Nonce: vc.sNonce},
		Derived: vectorDerived{
			PRK:               prk,
			ClientHelloKey:    expandLabel(prk, "client hello", macLen),
			ServerHelloKey:    expandLabel(prk, "server finished", macLen),
			ClientFinishedKey: expandLabel(prk, "client finished", macLen),
			SessionKey:        sched.session,
		},
		Messages: vectorMessages{
			ClientHello:    ch.ch(),
			ServerHello:    ch.sh(),
			ClientFinished: ch.cf(),
		},
		MACs: vectorMessages{
			ClientHello:    ch.ch()[clientHelloLen-macLen:],
			ServerHello:    ch.sh()[serverHelloLen-macLen:],
			ClientFinished: ch.cf()[clientFinishedLen-macLen:],
		},
		Result: vectorResult{
			Mode:           int(cres.mode),
			Flags:          int(cres.flags),
			ForwardSecrecy: fs,
			TranscriptHash: th[:],
			SessionSecret:  cres.secret,
		},
	}
	if fs {
		if ch.priv == nil || sh.priv == nil {
			t.Fatalf("%s: forward secrecy negotiated but no X25519 keys", vc.name)
		}
		v.Client.X25519Private, v.Client.X25519Public = ch.priv.Bytes(), ch.priv.PublicKey().Bytes()
		v.Server.X25519Private, v.Server.X25519Public = sh.priv.Bytes(), sh.priv.PublicKey().Bytes()
		dh, err := ch.priv.ECDH(sh.priv.PublicKey())
		if err != nil {
			t.Fatal(err)
		}
		v.Result.DH = dh
	}
	cs := ConnectionState{HandshakeComplete: true, secret: cres.secret}
	ss := ConnectionState{HandshakeComplete: true, secret: sres.secret}
	for _, e := range vectorExports {
		out, err := cs.ExportKeyingMaterial(e.label, e.context, e.length)
		if err != nil {
			t.Fatal(err)
		}
		sout, err := ss.ExportKeyingMaterial(e.label, e.context, e.length)
		if err != nil || !bytes.Equal(out, sout) {
			t.Errorf("%s: exporter outputs differ between client and server (%v)", vc.name, err)
		}
		v.Exporter = append(v.Exporter, vectorExport{
			Label:          e.label,
			Context:        e.context,
			Length:         e.length,
			ExporterSecret: expandLabel(cres.secret, "exporter", sha256.Size),
			Output:         out,
		})
	}
	return v
}

// TestVectorsPython checks the vectors with testdata/vectors/check.py, an
// implementation of the handshake and key schedule written from PROTOCOL.md
// with the Python standard library only.
func TestVectorsPython(t *testing.T) {
	t.Parallel()
	py, err := exec.LookPath("python3")
	if err != nil {
		t.Skip("python3 not found: the independent check of the test vectors did not run")
	}
	dir := filepath.Join("testdata", "vectors")
	cmd := exec.CommandContext(t.Context(), py, "check.py", "hmacauth1.json")
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		t.Fatalf("check.py found a mismatch (%v):\n%s", err, out)
	}
	if err != nil {
		t.Fatalf("running check.py: %v\n%s", err, out)
	}
	t.Logf("%s", out)
}
