// Command hmacauth runs an authenticating tunnel for any TCP service, makes
// keys, and demonstrates the hmacauth library.
//
// Usage:
//
//	hmacauth server -listen ADDR -target ADDR -keys FILE [flags]
//	hmacauth client -listen ADDR -target ADDR -keys FILE [flags]
//	hmacauth keygen [-id ID] [-o FILE [-force]]
//	hmacauth demo
//	hmacauth -version
//
// The server accepts hmacauth connections and forwards them as plain TCP to
// its target; the client accepts plain local connections and forwards them
// through hmacauth to a server. Put a client next to each program that
// connects, and a server in front of the service:
//
//	app -> hmacauth client -> network -> hmacauth server -> service
//
// An ADDR is host:port, or a Unix socket path: "unix:PATH", or any value
// containing a "/" (such as ./sock or /run/app.sock).
//
// Exit status: 0 on success and after a graceful stop (SIGTERM or SIGINT),
// 1 when the command fails (a key file cannot be read, an address cannot be
// listened on), 2 on a usage error.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"runtime/debug"
)

// Exit statuses.
const (
	exitOK    = 0
	exitFail  = 1
	exitUsage = 2
)

// version is the release version; set with -ldflags "-X main.version=v1.2.3".
// When empty, the module version and VCS revision of the build are shown.
var version = ""

const usageText = `Usage:
  hmacauth server -listen ADDR -target ADDR -keys FILE [flags]
        accept hmacauth connections on ADDR, forward them to the plain TCP target
  hmacauth client -listen ADDR -target ADDR -keys FILE [flags]
        accept plain connections on ADDR, forward them through hmacauth to the server
  hmacauth keygen [-id ID] [-o FILE [-force]]
        make a fresh random key in the key-file format
  hmacauth demo
        run an authenticated HTTP server and three clients on loopback
  hmacauth -version
        print the version

Run "hmacauth COMMAND -h" for the flags of a command.
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run runs the command line args and returns the exit status.
func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, "hmacauth: no command given\n\n"+usageText)
		return exitUsage
	}
	switch args[0] {
	case "server":
		return runTunnel(roleServer, args[1:], stdout, stderr)
	case "client":
		return runTunnel(roleClient, args[1:], stdout, stderr)
	case "keygen":
		return runKeygen(args[1:], stdout, stderr)
	case "demo":
		return runDemo(args[1:], stdout, stderr)
	case "-version", "--version", "version":
		fmt.Fprintln(stdout, versionString())
		return exitOK
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, usageText)
		return exitOK
	}
	fmt.Fprintf(stderr, "hmacauth: unknown command %q\n\n%s", args[0], usageText)
	return exitUsage
}

// parseFlags parses args into fs, which must use flag.ContinueOnError. It
// returns -1 to go on, or the exit status: 0 after -h, exitUsage on a bad
// flag or a stray argument (the flag package has printed the usage).
func parseFlags(fs *flag.FlagSet, args []string) int {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	if fs.NArg() > 0 {
		return usageError(fs, "unexpected argument %q", fs.Arg(0))
	}
	return -1
}

// usageError prints a usage error for the command of fs and returns
// exitUsage.
func usageError(fs *flag.FlagSet, format string, args ...any) int {
	fmt.Fprintf(fs.Output(), "hmacauth %s: %s\n", fs.Name(), fmt.Sprintf(format, args...))
	fs.Usage()
	return exitUsage
}

// versionString names the build: the release version or module version,
// the VCS revision when known, and the Go version.
func versionString() string {
	v, rev := version, ""
	if bi, ok := debug.ReadBuildInfo(); ok {
		if v == "" {
			v = bi.Main.Version
		}
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" && len(s.Value) >= 12 {
				rev = " " + s.Value[:12]
			}
		}
	}
	if v == "" {
		v = "(devel)"
	}
	return fmt.Sprintf("hmacauth %s%s %s", v, rev, runtime.Version())
}
