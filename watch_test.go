package hmacauth

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// replaceKeyFile writes keys to a temporary file beside path and renames it
// over path, as secret agents and editors that save atomically do.
func replaceKeyFile(t testing.TB, path string, perm os.FileMode, keys ...Key) {
	t.Helper()
	tmp := path + ".tmp"
	writeKeyFile(t, tmp, perm, keys...)
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// runWatcher runs w until the test ends and collects the errors it reports.
func runWatcher(t *testing.T, w *KeyFileWatcher) (errs func() []error) {
	t.Helper()
	var mu sync.Mutex
	var got []error
	w.OnError = func(err error) {
		mu.Lock()
		got = append(got, err)
		mu.Unlock()
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("Run returned %v, want context.Canceled", err)
		}
	})
	return func() []error {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(got)
	}
}

func idsAre(r *Keyring, want ...string) func() bool {
	return func() bool { return slices.Equal(r.IDs(), want) }
}

func TestKeyFileWatcherRename(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "keys")
	a, b, c := testKey("a"), testKey("b"), testKey("c")
	writeKeyFile(t, path, 0o600, a)
	ring := new(Keyring)
	var logs syncBuffer
	w := &KeyFileWatcher{Path: path, Keyring: ring, Interval: 5 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(&logs, nil))}
	errs := runWatcher(t, w)
	waitFor(t, "the first load", idsAre(ring, "a"))

	replaceKeyFile(t, path, 0o600, b, a)
	waitFor(t, "keys b, a", idsAre(ring, "b", "a"))

	// A bad file keeps the keys and is reported once.
	if err := os.WriteFile(path+".tmp", []byte("b "+b64(b)+"\nweak c2hvcnQ=\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(path+".tmp", path); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the error of the bad file", func() bool { return len(errs()) > 0 })
	if err := errs()[0]; !errors.Is(err, ErrWeakKey) || !strings.Contains(err.Error(), "line 2") {
		t.Errorf("reported %v, want ErrWeakKey on line 2", err)
	}
	if !idsAre(ring, "b", "a")() {
		t.Errorf("after a bad file the Keyring holds %q, want [b a]", ring.IDs())
	}

	// A file others can read is refused too.
	replaceKeyFile(t, path, 0o644, c)
	waitFor(t, "the error of the open file", func() bool { return len(errs()) > 1 })
	if err := errs()[1]; !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), "chmod") {
		t.Errorf("reported %v, want ErrConfig saying chmod", err)
	}

	replaceKeyFile(t, path, 0o600, c)
	waitFor(t, "key c", idsAre(ring, "c"))
	if n := len(errs()); n != 2 {
		t.Errorf("%d errors reported, want 2 (each bad file once): %v", n, errs())
	}
	out := logs.String()
	if !strings.Contains(out, "loaded key file") || !strings.Contains(out, "not reloaded") {
		t.Errorf("log lacks the reload and the refusal:\n%s", out)
	}
	checkNoSecret(t, out, a.Secret, b.Secret, c.Secret)
}

// TestKeyFileWatcherOnReload checks that OnReload hears of every load that
// set the Keyring, the first included, with its key IDs, and of no failed
// one.
func TestKeyFileWatcherOnReload(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "keys")
	a, b, c := testKey("a"), testKey("b"), testKey("c")
	writeKeyFile(t, path, 0o600, a)
	var mu sync.Mutex
	var reloads [][]string
	got := func() [][]string {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(reloads)
	}
	w := &KeyFileWatcher{Path: path, Keyring: new(Keyring), Interval: 5 * time.Millisecond,
		OnReload: func(ids []string) {
			mu.Lock()
			reloads = append(reloads, ids)
			mu.Unlock()
		}}
	errs := runWatcher(t, w)
	waitFor(t, "the first load reported", func() bool { return len(got()) == 1 })
	replaceKeyFile(t, path, 0o600, b, a)
	waitFor(t, "the reload reported", func() bool { return len(got()) == 2 })
	replaceKeyFile(t, path, 0o644, c) // refused: readable by others
	waitFor(t, "the error of the open file", func() bool { return len(errs()) == 1 })
	replaceKeyFile(t, path, 0o600, c)
	waitFor(t, "the last reload reported", func() bool { return len(got()) == 3 })
	want := [][]string{{"a"}, {"b", "a"}, {"c"}}
	if !slices.EqualFunc(got(), want, slices.Equal) {
		t.Errorf("OnReload heard %q, want %q", got(), want)
	}
}

// TestKeyFileWatcherKubernetes swaps a secret volume the way the kubelet
// does (keys -> ..data/keys, ..data -> ..<timestamp>, swapped by renaming
// a new ..data symlink over the old one) under a Listener in use.
func TestKeyFileWatcherKubernetes(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	a, b := testKey("a"), testKey("b")
	generation := func(name string, keys ...Key) {
		if err := os.Mkdir(filepath.Join(dir, name), 0o755); err != nil {
			t.Fatal(err)
		}
		writeKeyFile(t, filepath.Join(dir, name, "keys"), 0o400, keys...)
		if err := os.Symlink(name, filepath.Join(dir, "..data_tmp")); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(filepath.Join(dir, "..data_tmp"), filepath.Join(dir, "..data")); err != nil {
			t.Fatal(err)
		}
	}
	generation("..2026_01_01_00_00_00.1", a)
	path := filepath.Join(dir, "keys")
	if err := os.Symlink(filepath.Join("..data", "keys"), path); err != nil {
		t.Fatal(err)
	}

	keys, err := LoadKeys(path)
	if err != nil {
		t.Fatal(err)
	}
	ring := mustKeyring(t, keys...)
	l, err := Listen("tcp", "127.0.0.1:0", &Config{Keyring: ring})
	if err != nil {
		t.Fatal(err)
	}
	stop := serveEcho(l)
	defer stop()
	errs := runWatcher(t, &KeyFileWatcher{Path: path, Keyring: ring, Interval: 5 * time.Millisecond})

	old, err := Dial("tcp", l.Addr().String(), &Config{Keys: []Key{a}})
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()

	generation("..2026_01_02_00_00_00.2", b)
	if err := os.RemoveAll(filepath.Join(dir, "..2026_01_01_00_00_00.1")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "key b", idsAre(ring, "b"))
	c, err := Dial("tcp", l.Addr().String(), &Config{Keys: []Key{b}})
	if err != nil {
		t.Fatalf("dial with the new key: %v", err)
	}
	defer c.Close()
	roundTrip(t, c, "new")
	roundTrip(t, old, "old connection lives on")
	if c, err := Dial("tcp", l.Addr().String(), &Config{Keys: []Key{a}}); !errors.Is(err, ErrAuthFailed) {
		if c != nil {
			c.Close()
		}
		t.Fatalf("dial with the removed key: err = %v, want ErrAuthFailed", err)
	}
	if e := errs(); len(e) != 0 {
		t.Errorf("errors reported: %v", e)
	}
}

func TestKeyFileWatcherFirstLoadFails(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "keys")
	ring := mustKeyring(t, testKey("kept"))
	w := &KeyFileWatcher{Path: path, Keyring: ring, Interval: time.Millisecond}
	if err := w.Run(context.Background()); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("Run with a missing file = %v, want os.ErrNotExist", err)
	}
	if err := os.WriteFile(path, []byte("no keys here\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := w.Run(context.Background()); !errors.Is(err, ErrConfig) {
		t.Fatalf("Run with a bad file = %v, want ErrConfig", err)
	}
	if !idsAre(ring, "kept")() {
		t.Fatalf("Keyring holds %q after failed loads, want [kept]", ring.IDs())
	}
	if err := (&KeyFileWatcher{Path: path}).Run(context.Background()); !errors.Is(err, ErrConfig) {
		t.Fatalf("Run without a Keyring = %v, want ErrConfig", err)
	}
}
