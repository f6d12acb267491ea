package hmacauth

import (
	"bytes"
	"encoding/base64"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// b64 encodes a test key's secret as a key file holds it.
func b64(k Key) string { return base64.StdEncoding.EncodeToString(k.Secret) }

func TestParseKeys(t *testing.T) {
	t.Parallel()
	a, b, c := testKey("2026-06"), testKey("2026-01"), testKey("x")
	file := "\ufeff# hmacauth keys\r\n" +
		"\n" +
		"   \t\n" +
		"2026-06 " + b64(a) + "\r\n" +
		"\t2026-01\t\t" + base64.RawStdEncoding.EncodeToString(b.Secret) + "   # old, drop soon\n" +
		"  # indented comment\n" +
		"x " + b64(c) // no final newline
	keys, err := ParseKeys(strings.NewReader(file))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]Key{a, b, c}, keys, cmpKeys); diff != "" {
		t.Errorf("ParseKeys mismatch (-want +got):\n%s", diff)
	}
}

func TestParseKeysErrors(t *testing.T) {
	t.Parallel()
	a := testKey("good")
	secret := b64(a)
	short := base64.StdEncoding.EncodeToString([]byte("only-sixteen-byt"))
	for _, tc := range []struct {
		name, file string
		want       error
		line       string
	}{
		{"empty", "", ErrConfig, "holds no keys"},
		{"comments only", "# nothing\n\n", ErrConfig, "holds no keys"},
		{"secret without ID", "good " + secret + "\n" + secret + "\n", ErrConfig, "line 2:"},
		{"three fields", "good " + secret + " extra\n", ErrConfig, "line 1:"},
		{"hash inside a field", "good " + secret + "#x\n", ErrConfig, "line 1:"},
		{"bad base64", "# c\ngood " + strings.ReplaceAll(secret, "A", "*") + "*\n", ErrConfig, "line 2:"},
		{"url alphabet", "good " + strings.Repeat("-_", 22) + "\n", ErrConfig, "line 1:"},
		{"weak", "\n\nweak " + short + "\n", ErrWeakKey, "line 3:"},
		{"long ID", strings.Repeat("i", MaxKeyIDLen+1) + " " + secret + "\n", ErrConfig, "line 1:"},
		{"non-ASCII ID", "clé " + secret + "\n", ErrConfig, "line 1:"},
		{"duplicate", "good " + secret + "\nother " + secret + "\ngood " + secret + "\n", ErrConfig, "line 3: the key ID is the same as on line 1"},
		{"swapped columns", secret + " good\n", ErrWeakKey, "line 1:"},
	} {
		_, err := ParseKeys(strings.NewReader(tc.file))
		if !errors.Is(err, tc.want) {
			t.Errorf("%s: err = %v, want %v", tc.name, err, tc.want)
			continue
		}
		if !strings.Contains(err.Error(), tc.line) {
			t.Errorf("%s: error %q does not say %q", tc.name, err, tc.line)
		}
		for _, enc := range append(secretEncodings(a.Secret), short, "only-sixteen") {
			if strings.Contains(err.Error(), enc) {
				t.Errorf("%s: error %q shows a secret", tc.name, err)
			}
		}
	}
}

func TestParseKeysTooLarge(t *testing.T) {
	t.Parallel()
	big := "# " + strings.Repeat("x", MaxKeyFileSize) + "\n"
	if _, err := ParseKeys(strings.NewReader(big)); !errors.Is(err, ErrConfig) {
		t.Fatalf("err = %v, want ErrConfig", err)
	}
}

// writeKeyFile writes keys in the key file format to path, with mode perm.
func writeKeyFile(t testing.TB, path string, perm os.FileMode, keys ...Key) {
	t.Helper()
	var b strings.Builder
	b.WriteString("# test keys\n")
	for _, k := range keys {
		b.WriteString(k.ID + " " + b64(k) + "\n")
	}
	if err := os.WriteFile(path, []byte(b.String()), perm); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, perm); err != nil { // WriteFile's perm is masked by umask
		t.Fatal(err)
	}
}

func TestLoadKeysMode(t *testing.T) {
	t.Parallel()
	if runtime.GOOS == "windows" {
		t.Skip("file modes are not checked on Windows")
	}
	dir := t.TempDir()
	a := testKey("a")
	for _, tc := range []struct {
		perm os.FileMode
		ok   bool
	}{
		{0o600, true}, {0o400, true}, {0o640, true}, {0o440, true},
		{0o644, false}, {0o660, false}, {0o604, false}, {0o666, false}, {0o602, false},
	} {
		path := filepath.Join(dir, "keys-"+tc.perm.String())
		writeKeyFile(t, path, tc.perm, a)
		keys, err := LoadKeys(path)
		if tc.ok {
			if err != nil {
				t.Errorf("mode %v: LoadKeys: %v", tc.perm, err)
			} else if diff := cmp.Diff([]Key{a}, keys, cmpKeys); diff != "" {
				t.Errorf("mode %v: LoadKeys mismatch (-want +got):\n%s", tc.perm, diff)
			}
			continue
		}
		if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), "chmod") || !strings.Contains(err.Error(), path) {
			t.Errorf("mode %v: err = %v, want ErrConfig naming the file and saying chmod", tc.perm, err)
		}
	}
}

func TestLoadKeysErrorsNameTheFile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "keys")
	if err := os.WriteFile(path, []byte("# one bad line\nid c2hvcnQ=\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := LoadKeys(path)
	if !errors.Is(err, ErrWeakKey) || !strings.Contains(err.Error(), "key file "+path+", line 2:") {
		t.Fatalf("err = %v, want ErrWeakKey naming %s, line 2", err, path)
	}
	if _, err := LoadKeys(filepath.Join(dir, "missing")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("missing file: err = %v, want os.ErrNotExist", err)
	}
	if _, err := LoadKeys(dir); !errors.Is(err, ErrConfig) {
		t.Fatalf("directory: err = %v, want ErrConfig", err)
	}
}

// FuzzParseKeys checks that the parser never panics, that what it accepts
// is a valid key list, and that its errors never quote the input.
func FuzzParseKeys(f *testing.F) {
	a := testKey("seed")
	f.Add([]byte("seed " + b64(a) + "\n"))
	f.Add([]byte("# c\r\n\r\nseed\t" + base64.RawStdEncoding.EncodeToString(a.Secret) + " # t\r\n"))
	f.Add([]byte("seed " + b64(a) + "\nseed " + b64(a) + "\n"))
	f.Add([]byte(b64(a) + "\n"))
	f.Add([]byte("seed c2hvcnQ=\n"))
	f.Add([]byte("a b c\n#\n\x00 \xff\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		keys, err := ParseKeys(bytes.NewReader(data))
		if err != nil {
			if !errors.Is(err, ErrConfig) && !errors.Is(err, ErrWeakKey) {
				t.Fatalf("error %v wraps neither ErrConfig nor ErrWeakKey", err)
			}
			for _, field := range strings.Fields(string(data)) {
				if len(field) >= 8 && strings.ContainsAny(field, "0123456789+/=") && strings.Contains(err.Error(), field) {
					t.Fatalf("error %q quotes the input %q", err, field)
				}
			}
			return
		}
		if _, err := NewKeyring(keys...); err != nil {
			t.Fatalf("ParseKeys accepted keys that NewKeyring refuses: %v", err)
		}
	})
}

// TestLoadKeysOwner checks that a key file owned by another user than the
// effective user or root is refused, also when reached through a symbolic
// link of this user.
func TestLoadKeysOwner(t *testing.T) {
	t.Parallel()
	if runtime.GOOS == "windows" {
		t.Skip("file owners are not checked on Windows")
	}
	if os.Geteuid() != 0 {
		t.Skip("giving a file to another user needs root (chown); run the tests as root to cover the owner check")
	}
	const nobody = 65534
	dir := t.TempDir()
	path := filepath.Join(dir, "keys")
	writeKeyFile(t, path, 0o600, testKey("a"))
	link := filepath.Join(dir, "link")
	if err := os.Symlink(path, link); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(path, nobody, nobody); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{path, link} {
		_, err := LoadKeys(p)
		if !errors.Is(err, ErrConfig) {
			t.Fatalf("LoadKeys(%s) of a file owned by uid %d = %v, want ErrConfig", p, nobody, err)
		}
		for _, want := range []string{p, "uid 65534", "uid 0", "chown"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error %q does not say %q", err, want)
			}
		}
	}
	// Root's file is accepted, whatever its group.
	if err := os.Chown(path, 0, nobody); err != nil {
		t.Fatal(err)
	}
	if keys, err := LoadKeys(link); err != nil || len(keys) != 1 {
		t.Fatalf("LoadKeys of root's file = %v, %v; want key a", keys, err)
	}
}
