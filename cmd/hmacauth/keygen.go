package main

import (
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/hmacauth/hmacauth"
)

const keygenUsage = `Usage: hmacauth keygen [-id ID] [-o FILE [-force]]

Makes a key with a fresh %d-byte random secret and prints it, or writes it
to FILE (mode 0600), in the key-file format: one line "ID BASE64SECRET".
Both ends of a tunnel need the same key; copy the file over a safe channel.

Flags:
`

func runKeygen(args []string, stdout, stderr io.Writer) int {
	fset := flag.NewFlagSet("keygen", flag.ContinueOnError)
	fset.SetOutput(stderr)
	id := fset.String("id", "default", "key `ID`: 1 to 64 printable ASCII bytes, no spaces")
	out := fset.String("o", "", "write the key to `FILE` (mode 0600) instead of standard output")
	force := fset.Bool("force", false, "replace FILE if it exists")
	fset.Usage = func() {
		fmt.Fprintf(fset.Output(), keygenUsage, hmacauth.MinSecretLen)
		fset.PrintDefaults()
	}
	if code := parseFlags(fset, args); code >= 0 {
		return code
	}
	if *force && *out == "" {
		return usageError(fset, "-force needs -o FILE")
	}
	k, err := hmacauth.NewKey(*id)
	if err != nil {
		return usageError(fset, "-id: %v", err)
	}
	line := formatKey(k)
	if *out == "" {
		fmt.Fprint(stdout, line)
		return exitOK
	}
	if err := writeKeyFile(*out, []byte(line), *force); err != nil {
		fmt.Fprintf(stderr, "hmacauth keygen: %v\n", err)
		return exitFail
	}
	fmt.Fprintf(stderr, "hmacauth keygen: wrote key %q to %s\n", k.ID, *out)
	return exitOK
}

// formatKey renders k as one line of a key file.
func formatKey(k hmacauth.Key) string {
	return k.ID + " " + base64.StdEncoding.EncodeToString(k.Secret) + "\n"
}

// writeKeyFile writes b to path with mode 0600. It refuses to replace an
// existing file unless force is set, and then replaces it atomically, so a
// running tunnel reloading on SIGHUP never reads half a file.
func writeKeyFile(path string, b []byte, force bool) error {
	if !force {
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("%s exists; not overwriting it (use -force to replace it)", path)
		}
		if err != nil {
			return err
		}
		if _, err := f.Write(b); err != nil {
			f.Close()
			os.Remove(path)
			return err
		}
		return f.Close()
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // after a successful rename, a no-op
	// CreateTemp makes the file with mode 0600; keep it so whatever the umask.
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
