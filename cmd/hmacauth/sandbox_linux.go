//go:build linux

package main

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/landlock-lsm/go-landlock/landlock"
	llsys "github.com/landlock-lsm/go-landlock/landlock/syscall"
)

// sandboxConfig is what the sandbox restricts: file system access and TCP
// bind and connect (Landlock ABI 4 and 5), on a kernel that has them. The
// later ABIs are left out on purpose: UDP (ABI 10) would cut DNS, the
// scoping of abstract Unix sockets (ABI 6) the systemd notify socket where
// it is abstract, and the resolution of Unix socket paths (ABI 9) Unix
// socket targets, each for little gain in a process that opens no new
// listening socket after start.
var sandboxConfig = landlock.V5.BestEffort()

// resolverFiles are what Go's DNS resolver reads when a host name is
// dialed.
var resolverFiles = []string{"/etc/resolv.conf", "/etc/hosts", "/etc/nsswitch.conf", "/etc/host.conf"}

// sandbox restricts the running tunnel with Landlock, unless -no-sandbox:
// it runs after the listening sockets (tunnel, status) are open, so that
// the process binds nothing afterwards, and before any connection is
// served. The process may then read only the key file's directory and
// everything below it (Landlock rules cover a whole tree; the reloads on
// SIGHUP and -watch-keys read it again), the resolver's files
// when the target or proxy is a host name, and, with -status, its own
// /proc entries (the process metrics); it may write or create no file, and
// connect over TCP only to the port it forwards to (the target, or the
// -connect-proxy) and, for a host name, DNS's. A kernel without Landlock,
// or with an older ABI, gets what it supports; a failure is logged and the
// tunnel runs unrestricted: the sandbox is defence in depth, not a
// condition of service.
func (t *tunnel) sandbox() {
	if t.opts.noSandbox {
		t.log.Info("sandbox off (-no-sandbox)")
		t.testingOnlySandboxProbe()
		return
	}
	defer t.testingOnlySandboxProbe()
	abi, err := llsys.LandlockGetABIVersion()
	if err != nil || abi < 1 {
		t.log.Warn("sandbox not applied: this kernel has no Landlock (Linux 5.13 or later, with landlock in the lsm= boot parameter); running unrestricted", "err", errString(err))
		return
	}
	read, ports := t.sandboxRules()
	rules := []landlock.Rule{landlock.PathAccess(llsys.AccessFSReadFile|llsys.AccessFSReadDir, read.dirs...)}
	if len(read.files) > 0 {
		rules = append(rules, landlock.PathAccess(llsys.AccessFSReadFile, read.files...).IgnoreIfMissing())
	}
	for _, p := range ports {
		rules = append(rules, landlock.ConnectTCP(p))
	}
	if err := sandboxConfig.Restrict(rules...); err != nil {
		t.log.Warn("sandbox not applied: Landlock refused the rules; running unrestricted", "abi", abi, "err", err.Error())
		return
	}
	t.sandboxDirs = read.dirs
	netDesc := "TCP connect only to ports " + joinPorts(ports) + ", no bind"
	switch {
	case abi < 4:
		netDesc = "not restricted (Landlock ABI 4 needed)"
	case len(ports) == 0:
		netDesc = "no TCP connect, no bind" // a Unix socket target
	}
	t.log.Info("sandbox applied (Landlock)", "abi", abi, "read_dirs", read.dirs, "read_files", read.files,
		"write", "none", "network", netDesc)
	for _, dir := range read.dirs {
		if broadSandboxDir(dir) {
			t.log.Warn("the sandbox lets the process read the key file's directory and everything below it, here "+dir+
				"; keep the key file in a directory of its own, such as /etc/hmacauth/", "dir", dir)
		}
	}
}

// broadSandboxDir reports whether dir, a directory the sandbox lets the
// process read with all below it, is one that holds much more than the
// key file: the root, /etc or the user's home directory.
func broadSandboxDir(dir string) bool {
	if dir == "/" || dir == "/etc" {
		return true
	}
	home, err := os.UserHomeDir()
	return err == nil && filepath.Clean(home) == dir
}

// keyLoadError returns err, an error loading the key file, with what to
// do when the sandbox denied the read: the file has moved outside the
// directories allowed at start (a symlink changed to a new directory,
// say), which only a restart allows.
func (t *tunnel) keyLoadError(err error) error {
	if err == nil || t.sandboxDirs == nil || !errors.Is(err, fs.ErrPermission) {
		return err
	}
	return fmt.Errorf("%w; the sandbox (Landlock) allows reading only %s and below, as the key file's path resolved at start: restart the tunnel, or give -no-sandbox",
		err, strings.Join(t.sandboxDirs, ", "))
}

// The variables that name what the sandbox probe of the tests' binary
// tries (sandbox_probe_linux.go, -tags testingonly): create a file, read
// one, connect to a TCP address. Other builds do not read them.
const (
	testingOnlySandboxProbeFileEnv = "HMACAUTH_TESTING_ONLY_SANDBOX_PROBE_FILE"
	testingOnlySandboxProbeReadEnv = "HMACAUTH_TESTING_ONLY_SANDBOX_PROBE_READ"
	testingOnlySandboxProbeDialEnv = "HMACAUTH_TESTING_ONLY_SANDBOX_PROBE_DIAL"
)

// sandboxPaths are the paths the sandbox lets the process read.
type sandboxPaths struct{ dirs, files []string }

// sandboxRules returns what the running tunnel needs to read, and the TCP
// ports it connects to.
func (t *tunnel) sandboxRules() (read sandboxPaths, ports []uint16) {
	// The key file's directory, and that of the file it links to (a
	// Kubernetes secret volume links keys to ..data/keys): a reload may
	// find a new file there, replaced by rename.
	if abs, err := filepath.Abs(t.opts.keyFile); err == nil {
		read.dirs = append(read.dirs, filepath.Dir(abs))
		if target, err := filepath.EvalSymlinks(abs); err == nil && filepath.Dir(target) != filepath.Dir(abs) {
			read.dirs = append(read.dirs, filepath.Dir(target))
		}
	}
	if t.status != nil {
		// The process collector of /metrics reads /proc/self (stat, fd,
		// limits, net/dev) and /proc/stat (boot time).
		if self, err := filepath.EvalSymlinks("/proc/self"); err == nil {
			read.dirs = append(read.dirs, self)
		}
		read.files = append(read.files, "/proc/stat")
	}
	dialed := t.opts.target
	if t.opts.connectProxy != nil {
		dialed = t.opts.connectProxy.addr
	}
	if network, address := parseAddr(dialed); network == "tcp" {
		host, port, err := net.SplitHostPort(address)
		if err == nil {
			if p, err := net.LookupPort("tcp", port); err == nil {
				ports = append(ports, uint16(p))
			}
			if net.ParseIP(host) == nil {
				read.files = append(read.files, resolverFiles...)
				ports = append(ports, 53) // DNS over TCP, for long answers
			}
		}
	}
	slices.Sort(ports)
	return read, slices.Compact(ports)
}

// joinPorts returns ports as a comma-separated list for the log, "none"
// for none.
func joinPorts(ports []uint16) string {
	if len(ports) == 0 {
		return "none"
	}
	s := ""
	for i, p := range ports {
		if i > 0 {
			s += ", "
		}
		s += strconv.Itoa(int(p))
	}
	return s
}

// errString returns err's message, "" for nil, for a log attribute.
func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
