//go:build linux

package main

import (
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"

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
// served. The process may then read only the key file's directory (the
// reloads on SIGHUP and -watch-keys read it again), the resolver's files
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
	abi, err := llsys.LandlockGetABIVersion()
	if err != nil || abi < 1 {
		t.log.Warn("sandbox not applied: this kernel has no Landlock (Linux 5.13 or later, with landlock in the lsm= boot parameter); running unrestricted", "err", errString(err))
		t.testingOnlySandboxProbe()
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
		t.testingOnlySandboxProbe()
		return
	}
	netDesc := "TCP connect only to ports " + joinPorts(ports) + ", no bind"
	if abi < 4 {
		netDesc = "not restricted (Landlock ABI 4 needed)"
	}
	t.log.Info("sandbox applied (Landlock)", "abi", abi, "read_dirs", read.dirs, "read_files", read.files,
		"write", "none", "network", netDesc)
	t.testingOnlySandboxProbe()
}

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
	if t.opts.proxy != nil {
		dialed = t.opts.proxy.addr
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

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// The tests' way to see from inside the process what the sandbox allows:
// once it is in place (or not), the process tries to create the file
// testingOnlySandboxProbeFileEnv names and to connect to the TCP address
// testingOnlySandboxProbeDialEnv names, and logs the outcomes.
const (
	testingOnlySandboxProbeFileEnv = "HMACAUTH_TESTING_ONLY_SANDBOX_PROBE_FILE"
	testingOnlySandboxProbeDialEnv = "HMACAUTH_TESTING_ONLY_SANDBOX_PROBE_DIAL"
)

func (t *tunnel) testingOnlySandboxProbe() {
	if path := os.Getenv(testingOnlySandboxProbeFileEnv); path != "" {
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err == nil {
			f.Close()
		}
		t.log.Info("testing only: sandbox probe", "create", path, "err", errString(err))
	}
	if addr := os.Getenv(testingOnlySandboxProbeDialEnv); addr != "" {
		c, err := net.DialTimeout("tcp", addr, t.opts.connectTimeout)
		if err == nil {
			c.Close()
		}
		t.log.Info("testing only: sandbox probe", "dial", addr, "err", errString(err))
	}
}
