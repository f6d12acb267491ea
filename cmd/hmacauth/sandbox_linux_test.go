//go:build linux

package main

import (
	"errors"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	llsys "github.com/landlock-lsm/go-landlock/landlock/syscall"
)

// landlockABI returns the kernel's Landlock ABI version, or skips the test
// on a kernel without Landlock.
func landlockABI(t *testing.T) int {
	t.Helper()
	v, err := llsys.LandlockGetABIVersion()
	if err != nil || v < 1 {
		t.Skipf("this kernel has no Landlock (ABI %d, %v): the sandbox cannot be tested here", v, err)
	}
	return v
}

// sandboxProbe has the next tunnel processes of t try, once started, to
// create a file, to read a file outside the key file's directory, and to
// connect to a listening TCP port other than their target's; it returns
// the file's path and the address.
func sandboxProbe(t *testing.T) (file, addr string) {
	file = filepath.Join(t.TempDir(), "probe") // a directory the test may write
	addr = startTarget(t, "tcp", "127.0.0.1:0", func(net.Conn) {})
	readable := writeKeysRawPath(t, filepath.Join(t.TempDir(), "elsewhere"), "not the key file\n")
	t.Setenv(testingOnlySandboxProbeFileEnv, file)
	t.Setenv(testingOnlySandboxProbeReadEnv, readable)
	t.Setenv(testingOnlySandboxProbeDialEnv, addr)
	return file, addr
}

// probeResults returns the errors the probe logged: of the create, of the
// read and of the dial.
func probeResults(p *proc) (create, read, dial string) {
	create = errField(p.waitLog("testing only: sandbox probe", func(r logRecord) bool { return r.str("create") != "" }))
	read = errField(p.waitLog("testing only: sandbox probe", func(r logRecord) bool { return r.str("read") != "" }))
	dial = errField(p.waitLog("testing only: sandbox probe", func(r logRecord) bool { return r.str("dial") != "" }))
	return create, read, dial
}

// TestSandbox runs a server under the sandbox (the default): it serves,
// reloads a replaced key file on SIGHUP, serves /metrics with the process
// metrics, and may neither create a file nor connect to a port other than
// its target's; with -no-sandbox it may.
func TestSandbox(t *testing.T) {
	abi := landlockABI(t)
	probeFile, _ := sandboxProbe(t)
	keyDir := t.TempDir()
	keysPath := filepath.Join(keyDir, "server.keys")
	kOld, kNew := newKey(t, "old"), newKey(t, "new")
	writeKeys(t, keysPath, kOld)
	server := startTunnel(t, "server", "server", "-listen", "127.0.0.1:0", "-target", startEcho(t), "-keys", keysPath, "-status", "127.0.0.1:0")

	rec := server.waitLog("sandbox applied (Landlock)", nil)
	if got, _ := rec["abi"].(float64); int(got) != abi {
		t.Errorf("logged ABI %v, want %d", rec["abi"], abi)
	}
	if dirs, _ := rec["read_dirs"].([]any); !slices.Contains(dirs, any(keyDir)) {
		t.Errorf("read_dirs %v does not hold the key file's directory %s", rec["read_dirs"], keyDir)
	}
	create, readErr, dialErr := probeResults(server)
	if !strings.Contains(readErr, syscall.EACCES.Error()) {
		t.Errorf("reading a file outside the key file's directory under the sandbox: %q, want %q", readErr, syscall.EACCES.Error())
	}
	if !strings.Contains(create, syscall.EACCES.Error()) {
		t.Errorf("creating %s under the sandbox: %q, want %q", probeFile, create, syscall.EACCES.Error())
	}
	if _, err := os.Stat(probeFile); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the sandboxed server created %s (%v)", probeFile, err)
	}
	if abi >= 4 && !strings.Contains(dialErr, syscall.EACCES.Error()) {
		t.Errorf("connecting to a port other than the target's under the sandbox: %q, want %q", dialErr, syscall.EACCES.Error())
	}

	// It serves.
	oldKeys := writeKeys(t, filepath.Join(t.TempDir(), "old.keys"), kOld)
	newKeys := writeKeys(t, filepath.Join(t.TempDir(), "new.keys"), kNew)
	oldClient := startTunnel(t, "old client", "client", "-listen", "127.0.0.1:0", "-target", server.addr, "-keys", oldKeys)
	newClient := startTunnel(t, "new client", "client", "-listen", "127.0.0.1:0", "-target", server.addr, "-keys", newKeys)
	checkEcho(t, dial(t, oldClient.addr), "sandboxed")
	checkRefused(t, dial(t, newClient.addr))

	// A key file replaced by rename is read again on SIGHUP.
	writeKeys(t, keysPath, kNew)
	server.signal(syscall.SIGHUP)
	server.waitLog("keys reloaded", func(r logRecord) bool { return slices.Equal(r["keys"].([]any), []any{"new"}) })
	if rs := server.find("key reload failed; keeping the current keys", nil); len(rs) > 0 {
		t.Fatalf("reload under the sandbox failed: %v", errField(rs[0]))
	}
	checkEcho(t, dial(t, newClient.addr), "reloaded")
	checkRefused(t, dial(t, oldClient.addr))

	// The process collector reads /proc/self.
	m := scrape(t, server.statusAddr())
	for _, name := range []string{"process_open_fds", "process_start_time_seconds", "process_resident_memory_bytes"} {
		if _, ok := m.fams[name]; !ok {
			t.Errorf("/metrics under the sandbox lacks %s", name)
		}
	}

	t.Run("-no-sandbox", func(t *testing.T) {
		probeFile, _ := sandboxProbe(t)
		p := startTunnel(t, "unsandboxed server", "server", "-listen", "127.0.0.1:0", "-target", startEcho(t), "-keys", keysPath, "-no-sandbox")
		p.waitLog("sandbox off (-no-sandbox)", nil)
		if create, read, dial := probeResults(p); create != "" || read != "" || dial != "" {
			t.Errorf("without the sandbox the probe failed: create %q, read %q, dial %q", create, read, dial)
		}
		if _, err := os.Stat(probeFile); err != nil {
			t.Errorf("without the sandbox, %s was not created: %v", probeFile, err)
		}
		if rs := p.find("sandbox applied (Landlock)", nil); len(rs) > 0 {
			t.Errorf("-no-sandbox applied the sandbox: %v", rs[0])
		}
	})
}

// TestSandboxClientProxy checks that a sandboxed client may connect to its
// -connect-proxy's port: the one it dials instead of the target's.
func TestSandboxClientProxy(t *testing.T) {
	landlockABI(t)
	clearProxyEnv(t)
	pair := startPair(t, startEcho(t), nil, nil)
	tp := startTinyproxy(t, portOf(pair.server.addr), "", "")
	keys := pair.client.cmd.Args[slices.Index(pair.client.cmd.Args, "-keys")+1]
	c := startTunnel(t, "client", "client", "-listen", "127.0.0.1:0", "-target", pair.server.addr, "-keys", keys, "-connect-proxy", "http://"+tp.addr)
	rec := c.waitLog("sandbox applied (Landlock)", nil)
	if want := "ports " + portOf(tp.addr) + ","; !strings.Contains(rec.str("network"), want) {
		t.Errorf("sandbox network %q, want the proxy's port only", rec.str("network"))
	}
	checkEcho(t, dial(t, c.addr), "sandboxed, through the proxy")
}

// TestSandboxKeyFileMoved checks that a reload the sandbox denies, the key
// file's symlink now leading to a directory outside those allowed at
// start, is logged with what the sandbox allows and what to do.
func TestSandboxKeyFileMoved(t *testing.T) {
	landlockABI(t)
	linkDir, dataA, dataB := t.TempDir(), t.TempDir(), t.TempDir()
	k := newKey(t, "moved")
	writeKeys(t, filepath.Join(dataA, "keys"), k)
	writeKeys(t, filepath.Join(dataB, "keys"), k)
	link := filepath.Join(linkDir, "server.keys")
	if err := os.Symlink(filepath.Join(dataA, "keys"), link); err != nil {
		t.Fatal(err)
	}
	server := startTunnel(t, "server", "server", "-listen", "127.0.0.1:0", "-target", startEcho(t), "-keys", link)
	server.waitLog("sandbox applied (Landlock)", nil)
	// The link is replaced by rename, as a deployment tool does.
	tmp := filepath.Join(linkDir, "tmp.keys")
	if err := os.Symlink(filepath.Join(dataB, "keys"), tmp); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, link); err != nil {
		t.Fatal(err)
	}
	server.signal(syscall.SIGHUP)
	rec := server.waitLog("key reload failed; keeping the current keys", nil)
	for _, want := range []string{syscall.EACCES.Error(), "the sandbox (Landlock) allows reading only " + linkDir + ", " + dataA, "restart the tunnel, or give -no-sandbox"} {
		if !strings.Contains(errField(rec), want) {
			t.Errorf("reload error %q does not say %q", errField(rec), want)
		}
	}
}

// TestSandboxLogs checks the sandbox's log: a warning when the key file's
// directory, all of which it may read, is the user's home; no TCP
// connect at all for a Unix socket target.
func TestSandboxLogs(t *testing.T) {
	abi := landlockABI(t)
	home := t.TempDir()
	t.Setenv("HOME", home)
	keys := writeKeys(t, filepath.Join(home, "server.keys"), newKey(t, "home"))
	sock := filepath.Join(shortDir(t), "target.sock")
	startTarget(t, "unix", sock, echo)
	server := startTunnel(t, "server", "server", "-listen", "127.0.0.1:0", "-target", sock, "-keys", keys)
	rec := server.waitLog("sandbox applied (Landlock)", nil)
	if want := "no TCP connect, no bind"; abi >= 4 && rec.str("network") != want {
		t.Errorf("sandbox network %q for a Unix socket target, want %q", rec.str("network"), want)
	}
	warn := server.waitLog("the sandbox lets the process read the key file's directory and everything below it, here "+home+
		"; keep the key file in a directory of its own, such as /etc/hmacauth/", nil)
	if warn.str("level") != "WARN" {
		t.Errorf("the warning is logged at %s", warn.str("level"))
	}
}
