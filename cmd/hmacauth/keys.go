package main

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"fmt"
	"os"
	"strings"

	"github.com/hmacauth/hmacauth"
)

// loadKeys reads a key file: one key per line, "ID BASE64SECRET", with blank
// lines and lines starting with "#" ignored.
//
// TODO: replace with hmacauth.LoadKeys once it exists; this is the only
// parser of key files in the command.
func loadKeys(path string) ([]hmacauth.Key, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading key file: %w", err)
	}
	var keys []hmacauth.Key
	sc := bufio.NewScanner(bytes.NewReader(b))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Fields(line)
		if len(f) != 2 {
			return nil, fmt.Errorf("key file %s line %d: want \"ID BASE64SECRET\", got %d fields", path, n, len(f))
		}
		secret, err := base64.StdEncoding.DecodeString(f[1])
		if err != nil {
			return nil, fmt.Errorf("key file %s line %d: key %q: the secret is not valid base64", path, n, f[0])
		}
		k := hmacauth.Key{ID: f[0], Secret: secret}
		if err := k.Validate(); err != nil {
			return nil, fmt.Errorf("key file %s line %d: %w", path, n, err)
		}
		keys = append(keys, k)
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("key file %s holds no key; make one with `hmacauth keygen -o %s`", path, path)
	}
	return keys, nil
}
